//! The alert manager's side of the store: alerts and their history, the outbox every
//! receiver reads through its own cursor, crews' requests, silences, and the manager's
//! state with the condition it has read up to.
//!
//! The manager is the only writer of alerts. Tools (the CLI, later the API) write
//! requests and silences; the manager applies requests and answers them in the same
//! transaction as the changes they make.

use parklight_protocol::alert::Alert;
use rusqlite::{OptionalExtension, params};

use super::journal::ConditionRow;
use super::{StorageError, Store};
use crate::alert::{Action, Change, Request, Scope, Silence};

/// One change a receiver gets, in outbox order.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    /// Its place in the outbox.
    pub seq: i64,
    /// The alert's revision.
    pub alert: Alert,
    /// Whether escalation receivers get it.
    pub escalated: bool,
}

/// One revision in an alert's history.
#[derive(Debug, Clone, PartialEq)]
pub struct Revision {
    /// The alert as of this revision.
    pub alert: Alert,
    /// What happened (`raised`, `acknowledged`, `reminded`, …).
    pub what: String,
    /// Whether receivers were sent it when it happened.
    pub paged: bool,
}

/// What the manager stores after a round.
pub struct Round<'a> {
    /// The changes it made, in order.
    pub changes: &'a [Change],
    /// Answers to requests: the request's id and, when refused, why.
    pub answers: &'a [(i64, Option<String>)],
    /// The last condition id it has read.
    pub read: i64,
    /// Its state, as JSON.
    pub state: &'a str,
    /// Wall time, Unix ms.
    pub now: i64,
}

fn corrupt(what: &str, error: impl std::fmt::Display) -> StorageError {
    StorageError::Corrupt(format!("{what}: {error}"))
}

fn alert_of(text: &str) -> Result<Alert, StorageError> {
    Alert::from_json(text.as_bytes()).map_err(|e| corrupt("stored alert", e))
}

fn action_text(action: &Action) -> &'static str {
    match action {
        Action::Acknowledge => "acknowledge",
        Action::Resolve => "resolve",
    }
}

impl Store {
    /// The alert manager's kept state and the last condition it read.
    pub fn alert_manager_state(&self) -> Result<Option<(i64, String)>, StorageError> {
        Ok(self
            .connection
            .query_row(
                "SELECT conditions, state FROM alert_manager WHERE id = 1",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?)
    }

    /// The id of the latest condition transition (0 when there is none).
    pub fn last_condition_id(&self) -> Result<i64, StorageError> {
        Ok(self
            .connection
            .query_row("SELECT coalesce(max(id), 0) FROM conditions", [], |row| {
                row.get(0)
            })?)
    }

    /// Condition transitions recorded after `after` (a row id), at most `limit`.
    pub fn conditions_after(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<ConditionRow>, StorageError> {
        self.condition_rows(&format!("WHERE id > ?1 ORDER BY id LIMIT {limit}"), after)
    }

    /// Stores a round of the manager in one transaction: its changes (history, latest
    /// revision, and the outbox), its answers, what it read and its
    /// state. A crash before it loses nothing; after it repeats nothing.
    pub fn record_alert_round(&mut self, round: &Round<'_>) -> Result<(), StorageError> {
        let writer = self.write()?;
        for change in round.changes {
            let alert = &change.alert;
            let message = String::from_utf8(alert.to_json().map_err(|e| corrupt("alert", e))?)
                .map_err(|e| corrupt("alert", e))?;
            writer
                .tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO alert_history (id, rev, what, paged, message, recorded)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![
                    alert.id,
                    alert.rev,
                    change.what.as_str(),
                    change.page,
                    message,
                    round.now
                ])?;
            writer
                .tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO alerts (id, rev, kind, site, state, severity, since, ts)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?
                .execute(params![
                    alert.id,
                    alert.rev,
                    alert.kind.as_str(),
                    alert.site,
                    alert.state.as_str(),
                    alert.severity.as_str(),
                    alert.since as i64,
                    alert.ts as i64
                ])?;
            writer
                .tx
                .prepare_cached(
                    "INSERT INTO alert_outbox (id, rev, paged, escalated) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![alert.id, alert.rev, change.page, change.escalated])?;
        }
        for (request, refusal) in round.answers {
            writer
                .tx
                .prepare_cached(
                    "UPDATE alert_requests SET answered = ?2, refusal = ?3 WHERE id = ?1",
                )?
                .execute(params![request, round.now, refusal])?;
        }
        writer
            .tx
            .prepare_cached(
                "INSERT OR REPLACE INTO alert_manager (id, conditions, state) VALUES (1, ?1, ?2)",
            )?
            .execute(params![round.read, round.state])?;
        writer.commit()
    }

    /// The changes after `seq` in the outbox, at most `limit`, in order: only those paged
    /// with `paged`, else all.
    pub fn outbox_after(
        &self,
        seq: i64,
        limit: usize,
        paged: bool,
    ) -> Result<Vec<Outgoing>, StorageError> {
        let mut statement = self.connection.prepare_cached(
            "SELECT o.seq, o.escalated, h.message FROM alert_outbox o
             JOIN alert_history h ON h.id = o.id AND h.rev = o.rev
             WHERE o.seq > ?1 AND o.paged >= ?3 ORDER BY o.seq LIMIT ?2",
        )?;
        let rows = statement.query_map(params![seq, limit as i64, paged], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, bool>(1)?,
                row.get::<_, String>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, escalated, message) = row?;
            out.push(Outgoing {
                seq,
                alert: alert_of(&message)?,
                escalated,
            });
        }
        Ok(out)
    }

    /// The newest outbox entry's place (0 when empty).
    pub fn outbox_end(&self) -> Result<i64, StorageError> {
        Ok(self.connection.query_row(
            "SELECT coalesce(max(seq), 0) FROM alert_outbox",
            [],
            |row| row.get(0),
        )?)
    }

    /// How many paged changes wait after `seq`, and when the oldest of them was made.
    pub fn outbox_waiting(&self, seq: i64) -> Result<(i64, Option<i64>), StorageError> {
        Ok(self.connection.query_row(
            "SELECT count(*), min(h.recorded) FROM alert_outbox o
             JOIN alert_history h ON h.id = o.id AND h.rev = o.rev
             WHERE o.seq > ?1 AND o.paged = 1",
            [seq],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?)
    }

    /// Every alert's latest revision, newest first; only open ones with `open`.
    pub fn alerts(&self, open: bool) -> Result<Vec<Alert>, StorageError> {
        let filter = if open {
            "WHERE a.state != 'resolved'"
        } else {
            ""
        };
        let mut statement = self.connection.prepare_cached(&format!(
            "SELECT h.message FROM alerts a JOIN alert_history h ON h.id = a.id AND h.rev = a.rev
             {filter} ORDER BY a.ts DESC, a.id"
        ))?;
        let rows = statement.query_map([], |row| row.get::<_, String>(0))?;
        rows.map(|row| alert_of(&row?)).collect()
    }

    /// An alert's history, oldest first.
    pub fn alert_history(&self, id: &str) -> Result<Vec<Revision>, StorageError> {
        let mut statement = self.connection.prepare_cached(
            "SELECT message, what, paged FROM alert_history WHERE id = ?1 ORDER BY rev",
        )?;
        let rows = statement.query_map([id], |row| {
            Ok((row.get::<_, String>(0)?, row.get(1)?, row.get(2)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (message, what, paged) = row?;
            out.push(Revision {
                alert: alert_of(&message)?,
                what,
                paged,
            });
        }
        Ok(out)
    }

    /// Asks the manager to act on an alert; returns the request's id.
    pub fn request_alert_action(
        &mut self,
        request: &Request,
        now: i64,
    ) -> Result<i64, StorageError> {
        let writer = self.write()?;
        writer
            .tx
            .prepare_cached(
                "INSERT INTO alert_requests (alert, action, by, note, requested) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![request.alert, action_text(&request.action), request.by, request.note, now])?;
        let id = writer.tx.last_insert_rowid();
        writer.commit()?;
        Ok(id)
    }

    /// The answer to a request: none while unanswered, then `Ok` or the refusal.
    pub fn request_answer(&self, id: i64) -> Result<Option<Result<(), String>>, StorageError> {
        let answer: Option<(Option<i64>, Option<String>)> = self
            .connection
            .query_row(
                "SELECT answered, refusal FROM alert_requests WHERE id = ?1",
                [id],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        Ok(match answer {
            Some((Some(_), None)) => Some(Ok(())),
            Some((Some(_), Some(refusal))) => Some(Err(refusal)),
            _ => None,
        })
    }

    /// Requests not answered yet, oldest first.
    pub fn pending_requests(&self) -> Result<Vec<(i64, Request)>, StorageError> {
        let mut statement = self.connection.prepare_cached(
            "SELECT id, alert, action, by, note FROM alert_requests WHERE answered IS NULL ORDER BY id",
        )?;
        let rows = statement.query_map([], |row| {
            let action: String = row.get(2)?;
            Ok((
                row.get(0)?,
                Request {
                    alert: row.get(1)?,
                    action: if action == "resolve" {
                        Action::Resolve
                    } else {
                        Action::Acknowledge
                    },
                    by: row.get(3)?,
                    note: row.get(4)?,
                },
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Adds a silence; returns its id.
    pub fn add_silence(&mut self, silence: &Silence) -> Result<i64, StorageError> {
        let scope = serde_json::to_string(&silence.scope).map_err(|e| corrupt("scope", e))?;
        let writer = self.write()?;
        writer
            .tx
            .prepare_cached(
                "INSERT INTO silences (site, scope, from_ms, until_ms, by, note) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![silence.site, scope, silence.from, silence.until, silence.by, silence.note])?;
        let id = writer.tx.last_insert_rowid();
        writer.commit()?;
        Ok(id)
    }

    /// Ends a silence at `now`; false when there is no such silence still running.
    pub fn end_silence(&mut self, id: i64, now: i64) -> Result<bool, StorageError> {
        let writer = self.write()?;
        let changed = writer
            .tx
            .prepare_cached("UPDATE silences SET until_ms = ?2 WHERE id = ?1 AND until_ms > ?2")?
            .execute(params![id, now])?;
        writer.commit()?;
        Ok(changed == 1)
    }

    /// Silences that end after `after`, by id.
    pub fn silences(&self, after: i64) -> Result<Vec<Silence>, StorageError> {
        let mut statement = self.connection.prepare_cached(
            "SELECT id, site, scope, from_ms, until_ms, by, note FROM silences WHERE until_ms > ?1 ORDER BY id",
        )?;
        let rows = statement.query_map([after], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get(3)?,
                row.get(4)?,
                row.get(5)?,
                row.get(6)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, site, scope, from, until, by, note) = row?;
            let scope: Scope =
                serde_json::from_str(&scope).map_err(|e| corrupt("silence scope", e))?;
            out.push(Silence {
                id,
                site,
                scope,
                from,
                until,
                by,
                note,
            });
        }
        Ok(out)
    }

    /// Records that `receiver` refused an alert change for good.
    pub fn record_refusal(
        &mut self,
        receiver: &str,
        alert: &Alert,
        reason: &str,
        now: i64,
    ) -> Result<(), StorageError> {
        let writer = self.write()?;
        writer
            .tx
            .prepare_cached(
                "INSERT OR REPLACE INTO alert_refusals (receiver, id, rev, reason, at) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![receiver, alert.id, alert.rev, reason, now])?;
        writer.commit()
    }

    /// Permanent refusals of an alert's changes: (receiver, rev, reason).
    pub fn refusals(&self, id: &str) -> Result<Vec<(String, u32, String)>, StorageError> {
        let mut statement = self.connection.prepare_cached(
            "SELECT receiver, rev, reason FROM alert_refusals WHERE id = ?1 ORDER BY rev",
        )?;
        let rows = statement.query_map([id], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use parklight_protocol::alert::{AlertKind, AlertState, Severity};

    use super::*;
    use crate::alert::What;

    fn change(rev: u32) -> Change {
        Change {
            alert: Alert {
                id: "a-test-1".into(),
                rev,
                kind: AlertKind::LampFault,
                site: "remiseparken".into(),
                zone: None,
                node: Some("pole-001".into()),
                circuit: None,
                state: AlertState::Raised,
                severity: Severity::High,
                since: 1,
                ts: 2,
                detail: "dark".into(),
                by: None,
                note: None,
                flapping: false,
                children: Vec::new(),
                children_count: 0,
            },
            what: What::Raised,
            page: true,
            escalated: false,
        }
    }

    #[test]
    fn the_outbox_keeps_what_a_reader_has_not_taken_and_the_history_stays() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), 10).unwrap();
        let changes = [change(1), change(2), change(3)];
        let round = Round {
            changes: &changes,
            answers: &[],
            read: 0,
            state: "{}",
            now: 5,
        };
        store.record_alert_round(&round).unwrap();
        store.set_cursor("alerts.mqtt", 3).unwrap();
        store.set_cursor("alerts.crew", 1).unwrap();
        store.retain(i64::MAX, None, &|| false).unwrap();
        let left: Vec<i64> = (store.outbox_after(0, 10, false).unwrap().iter())
            .map(|c| c.seq)
            .collect();
        assert_eq!(left, [2, 3], "the slowest reader has taken only the first");
        assert_eq!(store.alert_history("a-test-1").unwrap().len(), 3);
        assert_eq!(store.alerts(true).unwrap()[0].rev, 3);
    }
}
