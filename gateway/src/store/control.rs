//! Lamp control from the API: lighting set for a zone or a node (it wins over the site
//! file's until reset) and the audit log of every control action, with what each node
//! answered.

use rusqlite::{OptionalExtension, params};

use super::{StorageError, Store};

/// What a control acts on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// Every node of a zone (a node's own lighting still wins).
    Zone(String),
    /// One node.
    Node(String),
}

impl Target {
    /// As stored: `zone:ID` or `node:ID`.
    pub fn key(&self) -> String {
        match self {
            Target::Zone(zone) => format!("zone:{zone}"),
            Target::Node(node) => format!("node:{node}"),
        }
    }

    fn parse(key: &str) -> Option<Target> {
        match key.split_once(':')? {
            ("zone", zone) => Some(Target::Zone(zone.to_owned())),
            ("node", node) => Some(Target::Node(node.to_owned())),
            _ => None,
        }
    }
}

/// Lighting set through the API.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlLighting {
    /// The site.
    pub site: String,
    /// Zone or node.
    pub target: Target,
    /// `{"profile": [...], "motion_boost": {...}}` as in a config (PROTOCOL.md "Config").
    pub lighting: String,
    /// The token's name that set it.
    pub set_by: String,
    /// When, Unix ms.
    pub set_at: i64,
}

/// One control action.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    /// Its number.
    pub id: i64,
    /// When, Unix ms.
    pub at: i64,
    /// The token's name.
    pub by: String,
    /// `set_lighting`, `reset_lighting` or `override`.
    pub action: String,
    /// The site.
    pub site: String,
    /// Zone or node.
    pub target: Target,
    /// What was asked, JSON.
    pub detail: String,
    /// Each node sent a message, with the answer it gave.
    pub nodes: Vec<NodeAnswer>,
}

/// What a node answered to a control message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAnswer {
    /// The node.
    pub node: String,
    /// The message's id (`c-VERSION` for a config, `o-ENTRY` for an override).
    pub id: String,
    /// `applied`, `rejected`, `pending` (no answer yet) or `superseded` (a later config
    /// was sent before it answered).
    pub result: &'static str,
    /// A rejection's reason.
    pub reason: Option<String>,
}

impl Store {
    /// Every lighting set through the API.
    pub fn control_lighting(&self) -> Result<Vec<ControlLighting>, StorageError> {
        let mut statement = self.connection.prepare_cached(
            "SELECT site, target, lighting, set_by, set_at FROM control_lighting ORDER BY site, target",
        )?;
        let rows = statement.query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, String>(3)?,
                row.get::<_, i64>(4)?,
            ))
        })?;
        let mut lighting = Vec::new();
        for row in rows {
            let (site, target, text, set_by, set_at) = row?;
            let Some(target) = Target::parse(&target) else {
                return Err(StorageError::Corrupt(format!(
                    "control_lighting: target {target:?}"
                )));
            };
            lighting.push(ControlLighting {
                site,
                target,
                lighting: text,
                set_by,
                set_at,
            });
        }
        Ok(lighting)
    }

    /// Sets (`Some`) or resets (`None`) a target's lighting and logs it as `action` with
    /// `detail`; the audit entry's number (`None`: a reset of nothing set, not logged).
    pub fn set_control_lighting(
        &mut self,
        site: &str,
        target: &Target,
        lighting: Option<&str>,
        by: &str,
        at: i64,
        detail: &str,
    ) -> Result<Option<i64>, StorageError> {
        let writer = self.write()?;
        let changed = match lighting {
            Some(lighting) => writer.tx.prepare_cached(
                "INSERT OR REPLACE INTO control_lighting (site, target, lighting, set_by, set_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?.execute(params![site, target.key(), lighting, by, at])?,
            None => writer
                .tx
                .prepare_cached("DELETE FROM control_lighting WHERE site = ?1 AND target = ?2")?
                .execute(params![site, target.key()])?,
        };
        if changed == 0 {
            return Ok(None); // the transaction rolls back as the writer drops
        }
        let action = if lighting.is_some() {
            "set_lighting"
        } else {
            "reset_lighting"
        };
        let id = audit(&writer.tx, site, target, action, by, at, detail)?;
        writer.commit()?;
        Ok(Some(id))
    }

    /// Logs an action with no stored state (an override); its number.
    pub fn log_control(
        &mut self,
        site: &str,
        target: &Target,
        action: &str,
        by: &str,
        at: i64,
        detail: &str,
    ) -> Result<i64, StorageError> {
        let writer = self.write()?;
        let id = audit(&writer.tx, site, target, action, by, at, detail)?;
        writer.commit()?;
        Ok(id)
    }

    /// Records the messages an audit entry sent: `(node, message id)`.
    pub fn control_sent(
        &mut self,
        entry: i64,
        sent: &[(String, String)],
    ) -> Result<(), StorageError> {
        let sent = serde_json::to_string(sent).unwrap_or_else(|_| "[]".into());
        let writer = self.write()?;
        writer
            .tx
            .prepare_cached("UPDATE control_audit SET sent = ?2 WHERE id = ?1")?
            .execute(params![entry, sent])?;
        writer.commit()
    }

    /// A site's latest `limit` control actions, newest first, with each node's answer.
    pub fn control_audit(&self, site: &str, limit: usize) -> Result<Vec<AuditEntry>, StorageError> {
        self.audit_entries(
            "WHERE site = ?1 ORDER BY id DESC LIMIT ?2",
            params![site, limit as i64],
        )
    }

    /// The control action numbered `id`, with each node's answer.
    pub fn control_entry(&self, id: i64) -> Result<Option<AuditEntry>, StorageError> {
        Ok(self.audit_entries("WHERE id = ?1", params![id])?.pop())
    }

    fn audit_entries(
        &self,
        filter: &str,
        values: impl rusqlite::Params,
    ) -> Result<Vec<AuditEntry>, StorageError> {
        let mut statement = self.connection.prepare_cached(&format!(
            "SELECT id, at, by, action, site, target, detail, sent FROM control_audit {filter}"
        ))?;
        let rows = statement.query_map(values, |row| {
            Ok((
                (row.get::<_, i64>(0)?, row.get::<_, i64>(1)?),
                (row.get::<_, String>(2)?, row.get::<_, String>(3)?),
                (row.get::<_, String>(4)?, row.get::<_, String>(5)?),
                (row.get::<_, String>(6)?, row.get::<_, String>(7)?),
            ))
        })?;
        let mut entries = Vec::new();
        for row in rows {
            let ((id, at), (by, action), (site, target), (detail, sent)) = row?;
            let target = Target::parse(&target).ok_or_else(|| {
                StorageError::Corrupt(format!("control_audit: target {target:?}"))
            })?;
            let sent: Vec<(String, String)> = serde_json::from_str(&sent)
                .map_err(|e| StorageError::Corrupt(format!("control_audit {id}: {e}")))?;
            let nodes = sent
                .into_iter()
                .map(|(node, message)| self.answer(node, message))
                .collect::<Result<_, _>>()?;
            entries.push(AuditEntry {
                id,
                at,
                by,
                action,
                site,
                target,
                detail,
                nodes,
            });
        }
        Ok(entries)
    }

    /// What `node` answered to the message `id`.
    fn answer(&self, node: String, id: String) -> Result<NodeAnswer, StorageError> {
        let answer: Option<(String, Option<String>)> = self
            .connection
            .prepare_cached(
                "SELECT e.kind, json_extract(e.payload, '$.detail') FROM events e
                 JOIN nodes n ON n.id = e.node
                 WHERE n.name = ?1 AND e.kind IN ('command_applied', 'command_rejected')
                   AND json_valid(e.payload) AND json_extract(e.payload, '$.id') = ?2
                 ORDER BY e.id DESC LIMIT 1",
            )?
            .query_row(params![node, id], |row| Ok((row.get(0)?, row.get(1)?)))
            .optional()?;
        // A config's answer may be lost: the version the node reports running tells too.
        let version = id.strip_prefix("c-").and_then(|v| v.parse::<u32>().ok());
        let running = || -> Result<Option<u32>, StorageError> {
            Ok(self
                .connection
                .prepare_cached(
                    "SELECT r.cfg FROM reports r JOIN nodes n ON n.id = r.node
                     WHERE n.name = ?1 AND r.cfg IS NOT NULL ORDER BY r.id DESC LIMIT 1",
                )?
                .query_row([&node], |row| row.get(0))
                .optional()?)
        };
        let latest = || -> Result<Option<u32>, StorageError> {
            Ok(self
                .connection
                .prepare_cached(
                    "SELECT max(c.cfg) FROM configs c JOIN nodes n ON n.id = c.node WHERE n.name = ?1",
                )?
                .query_row([&node], |row| row.get(0))?)
        };
        let (result, reason) = match (answer, version) {
            (Some((kind, reason)), _) if kind == "command_rejected" => ("rejected", reason),
            (Some(_), _) => ("applied", None),
            (None, Some(version)) if running()? == Some(version) => ("applied", None),
            (None, Some(version)) if latest()?.is_some_and(|latest| latest > version) => {
                ("superseded", None)
            }
            (None, _) => ("pending", None),
        };
        Ok(NodeAnswer {
            node,
            id,
            result,
            reason,
        })
    }
}

fn audit(
    tx: &rusqlite::Transaction<'_>,
    site: &str,
    target: &Target,
    action: &str,
    by: &str,
    at: i64,
    detail: &str,
) -> Result<i64, StorageError> {
    tx.prepare_cached(
        "INSERT INTO control_audit (at, by, action, site, target, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![at, by, action, site, target.key(), detail])?;
    Ok(tx.last_insert_rowid())
}
