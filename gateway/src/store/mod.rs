//! The embedded store: SQLite (bundled), WAL, `synchronous=FULL`, written in group
//! commits. A report is keyed by `(node, boot, seq)`, so storing it twice does nothing.
//!
//! - [`schema`]: numbered migrations; a file newer than the binary is refused.
//! - [`Store::write`] opens one transaction ([`Writer`]) for a group of messages.
//! - Reading: dead letters, reports after a cursor (the forwarder), cursors.
//! - [`history`]: [`Store::compact`] folds closed hours into compressed column blocks
//!   ([`blocks`]); [`Store::retain`] then drops raw rows past the retention;
//!   [`Store::series`] and [`Store::latest_per_node`] read blocks and raw rows alike.

mod blocks;
pub mod history;
mod schema;

pub use history::{Bucket, Compaction, HOUR_MS, LatestReport, Selector};

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use parklight_sim::Site;
use rusqlite::{Connection, OptionalExtension, params};

/// File name of the database inside the storage folder.
pub const DB_FILE: &str = "parklight.sqlite3";

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// SQLite failed.
    #[error("store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The folder cannot be used.
    #[error("store folder {path}: {source}")]
    Folder {
        /// The folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A compressed block cannot be read.
    #[error("store: damaged block: {0}")]
    Corrupt(String),
    /// The file was written by a newer parklight.
    #[error(
        "store {path} has schema version {found}, this parklight knows up to {known}: use a newer parklight"
    )]
    TooNew {
        /// The file.
        path: PathBuf,
        /// Its version.
        found: usize,
        /// The newest this binary knows.
        known: usize,
    },
}

/// One report as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportRow {
    /// Boot counter.
    pub boot: u32,
    /// Report counter.
    pub seq: u32,
    /// End of the window, Unix ms: the node's, or stamped by the gateway.
    pub ts: i64,
    /// Whether `ts` is the node's own valid clock.
    pub clock_ok: bool,
    /// Arrival, Unix ms.
    pub received: i64,
    /// Window length, seconds.
    pub period_s: u16,
    /// Lux over the window.
    pub lux: Option<parklight_protocol::Lux>,
    /// Motion detections.
    pub motion: u32,
    /// Lamp on.
    pub lamp_on: bool,
    /// Lamp level, percent.
    pub lamp_level: u8,
    /// Metered power, watts.
    pub power_w: Option<f64>,
    /// Config version running.
    pub cfg: Option<u32>,
    /// Active faults as a bit set.
    pub faults: u8,
    /// Controller temperature.
    pub temp_c: Option<f64>,
    /// The node's zone when the report arrived.
    pub zone: Option<String>,
}

/// A rejected message.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// Arrival, Unix ms.
    pub received: i64,
    /// Topic.
    pub topic: String,
    /// The first 1 KiB of the payload.
    pub payload: Vec<u8>,
    /// Reject code.
    pub reason: String,
    /// The field it concerns, if any.
    pub field: Option<String>,
    /// Node, boot and seq when they could still be read.
    pub report: Option<(String, u32, u32)>,
}

/// How much of a rejected payload is kept.
pub const DEAD_LETTER_BYTES: usize = 1024;

/// A report to forward, with the names it is tagged with.
#[derive(Debug, Clone, PartialEq)]
pub struct ForwardRow {
    /// Arrival order.
    pub id: i64,
    /// Node id.
    pub node: String,
    /// Site, for known nodes.
    pub site: Option<String>,
    /// The report.
    pub report: ReportRow,
}

/// A node status change to forward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusRow {
    /// Arrival order.
    pub id: i64,
    /// Node id.
    pub node: String,
    /// Site, for known nodes.
    pub site: Option<String>,
    /// Arrival, Unix ms.
    pub received: i64,
    /// Online (birth) or offline (will or shutdown).
    pub online: bool,
    /// `lost` or `shutdown` for offline statuses.
    pub reason: Option<String>,
    /// Boot of the connection.
    pub boot: u32,
    /// Connection within the boot.
    pub conn: u32,
}

/// How far the forwarder has sent: the last report id and the last status id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forwarded {
    /// Reports up to this id are sent.
    pub reports: i64,
    /// Status changes up to this id are sent.
    pub statuses: i64,
}

/// Acknowledgement state of one node's boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckState {
    /// Counting starts here (the node's `oldest`).
    pub from_seq: u32,
    /// Every report from `from_seq` up to this one is handled.
    pub acked: Option<u32>,
}

/// The embedded store.
pub struct Store {
    connection: Connection,
    nodes: HashMap<String, i64>,
    dead_letters_max: usize,
}

impl Store {
    /// Opens (creating if needed) the store in `folder` and brings its schema up to date.
    pub fn open(folder: &Path, dead_letters_max: usize) -> Result<Store, StorageError> {
        std::fs::create_dir_all(folder).map_err(|source| StorageError::Folder {
            path: folder.to_owned(),
            source,
        })?;
        let path = folder.join(DB_FILE);
        let mut connection = Connection::open(&path)?;
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", "FULL")?;
        connection.pragma_update(None, "foreign_keys", "ON")?;
        // Index pages stay in memory instead of being read again with a syscall each: the
        // page cache was the largest cost of ingest under load (measured with perf).
        connection.pragma_update(None, "cache_size", -65_536)?;
        connection.pragma_update(None, "mmap_size", 1_i64 << 30)?;
        connection.busy_timeout(std::time::Duration::from_secs(5))?;
        let version: i64 = connection.pragma_query_value(None, "user_version", |row| row.get(0))?;
        let version = usize::try_from(version).unwrap_or(usize::MAX);
        if version > schema::MIGRATIONS.len() {
            return Err(StorageError::TooNew {
                path,
                found: version,
                known: schema::MIGRATIONS.len(),
            });
        }
        for (index, migration) in schema::MIGRATIONS.iter().enumerate().skip(version) {
            let tx = connection.transaction()?;
            tx.execute_batch(migration)?;
            tx.pragma_update(None, "user_version", index as i64 + 1)?;
            tx.commit()?;
        }
        let nodes = {
            let mut statement = connection.prepare("SELECT name, id FROM nodes")?;
            statement
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<Result<_, _>>()?
        };
        Ok(Store {
            connection,
            nodes,
            dead_letters_max,
        })
    }

    /// Records which site and zone each node of `sites` belongs to now.
    pub fn register_sites(&mut self, sites: &[Site]) -> Result<(), StorageError> {
        let mut writer = self.write()?;
        for site in sites {
            for node in &site.nodes {
                let id = writer.node(&node.id)?;
                writer
                    .tx
                    .prepare_cached("UPDATE nodes SET site = ?2, zone = ?3 WHERE id = ?1")?
                    .execute(params![id, site.id, node.zone])?;
            }
        }
        writer.commit()
    }

    /// Starts a group of writes that commit together.
    pub fn write(&mut self) -> Result<Writer<'_>, StorageError> {
        Ok(Writer {
            tx: self.connection.transaction()?,
            nodes: &mut self.nodes,
            dead_letters_max: self.dead_letters_max,
        })
    }

    /// The most recent dead letters, newest first.
    pub fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StorageError> {
        let mut statement = self.connection.prepare(
            "SELECT received, topic, payload, reason, field, node, boot, seq
             FROM dead_letters ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = statement.query_map([limit as i64], |row| {
            let report = match (row.get::<_, Option<String>>(5)?, row.get(6)?, row.get(7)?) {
                (Some(node), Some(boot), Some(seq)) => Some((node, boot, seq)),
                _ => None,
            };
            Ok(DeadLetter {
                received: row.get(0)?,
                topic: row.get(1)?,
                payload: row.get(2)?,
                reason: row.get(3)?,
                field: row.get(4)?,
                report,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Reports stored after `cursor` in arrival order, at most `limit`.
    pub fn reports_after(
        &self,
        cursor: i64,
        limit: usize,
    ) -> Result<Vec<ForwardRow>, StorageError> {
        let mut statement = self.connection.prepare_cached(&format!(
            "SELECT r.id, n.name, n.site, {REPORT_COLUMNS}
             FROM reports r JOIN nodes n ON n.id = r.node
             WHERE r.id > ?1 ORDER BY r.id LIMIT ?2"
        ))?;
        let rows = statement.query_map(params![cursor, limit as i64], forward_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Status changes recorded after `cursor`, in arrival order, at most `limit`.
    pub fn statuses_after(
        &self,
        cursor: i64,
        limit: usize,
    ) -> Result<Vec<StatusRow>, StorageError> {
        let mut statement = self.connection.prepare_cached(
            "SELECT s.id, n.name, n.site, s.received, s.online, s.reason, s.boot, s.conn
             FROM statuses s JOIN nodes n ON n.id = s.node
             WHERE s.id > ?1 ORDER BY s.id LIMIT ?2",
        )?;
        let rows = statement.query_map(params![cursor, limit as i64], |row| {
            Ok(StatusRow {
                id: row.get(0)?,
                node: row.get(1)?,
                site: row.get(2)?,
                received: row.get(3)?,
                online: row.get(4)?,
                reason: row.get(5)?,
                boot: row.get(6)?,
                conn: row.get(7)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A cursor's position (0 when new).
    pub fn cursor(&self, name: &str) -> Result<i64, StorageError> {
        Ok(self
            .connection
            .query_row(
                "SELECT position FROM cursors WHERE name = ?1",
                [name],
                |row| row.get(0),
            )
            .optional()?
            .unwrap_or(0))
    }

    /// Moves a cursor.
    pub fn set_cursor(&self, name: &str, position: i64) -> Result<(), StorageError> {
        self.connection.execute(
            "INSERT INTO cursors (name, position) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE SET position = excluded.position",
            params![name, position],
        )?;
        Ok(())
    }

    /// Reports a node declared gone before the gateway got them, over all its boots.
    pub fn lost_on_node(&self, node: &str) -> Result<u64, StorageError> {
        let lost: i64 = self.connection.query_row(
            "SELECT coalesce(sum(a.lost), 0) FROM ack_state a JOIN nodes n ON n.id = a.node WHERE n.name = ?1",
            [node],
            |row| row.get(0),
        )?;
        Ok(lost as u64)
    }

    /// The identity of every stored report, `(node, boot, seq)`, in that order.
    pub fn report_ids(&self) -> Result<Vec<(String, u32, u32)>, StorageError> {
        let mut statement = self.connection.prepare(
            "SELECT n.name, r.boot, r.seq FROM reports r JOIN nodes n ON n.id = r.node
             ORDER BY n.name, r.boot, r.seq",
        )?;
        let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Reports stored.
    pub fn report_count(&self) -> Result<u64, StorageError> {
        let count: i64 = self
            .connection
            .query_row("SELECT count(*) FROM reports", [], |row| row.get(0))?;
        Ok(count as u64)
    }

    /// Moves the write-ahead log into the database file and gives free pages back, so
    /// the file size is what the data takes.
    pub fn checkpoint(&self) -> Result<(), StorageError> {
        self.connection.execute_batch(
            "PRAGMA wal_checkpoint(TRUNCATE); VACUUM; PRAGMA wal_checkpoint(TRUNCATE);",
        )?;
        Ok(())
    }

    /// The highest report id (the end of the forwarder's work).
    pub fn last_report_id(&self) -> Result<i64, StorageError> {
        Ok(self
            .connection
            .query_row("SELECT coalesce(max(id), 0) FROM reports", [], |row| {
                row.get(0)
            })?)
    }
}

const REPORT_COLUMNS: &str =
    "r.boot, r.seq, r.ts, r.clock_ok, r.received, r.period_s, r.lux_avg, r.lux_min,
    r.lux_max, r.motion, r.lamp_on, r.lamp_level, r.power_w, r.cfg, r.faults, r.temp_c, r.zone";

/// Reads [`REPORT_COLUMNS`] starting at column `at`.
fn report_from(row: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<ReportRow> {
    let lux = match (row.get(at + 6)?, row.get(at + 7)?, row.get(at + 8)?) {
        (Some(avg), Some(min), Some(max)) => Some(parklight_protocol::Lux { avg, min, max }),
        _ => None,
    };
    Ok(ReportRow {
        boot: row.get(at)?,
        seq: row.get(at + 1)?,
        ts: row.get(at + 2)?,
        clock_ok: row.get(at + 3)?,
        received: row.get(at + 4)?,
        period_s: row.get(at + 5)?,
        lux,
        motion: row.get(at + 9)?,
        lamp_on: row.get(at + 10)?,
        lamp_level: row.get(at + 11)?,
        power_w: row.get(at + 12)?,
        cfg: row.get(at + 13)?,
        faults: row.get(at + 14)?,
        temp_c: row.get(at + 15)?,
        zone: row.get(at + 16)?,
    })
}

/// Reads `r.id, n.name, n.site` and then [`REPORT_COLUMNS`].
fn forward_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ForwardRow> {
    Ok(ForwardRow {
        id: row.get(0)?,
        node: row.get(1)?,
        site: row.get(2)?,
        report: report_from(row, 3)?,
    })
}

/// One transaction of writes; nothing is durable until [`Writer::commit`].
pub struct Writer<'s> {
    tx: rusqlite::Transaction<'s>,
    nodes: &'s mut HashMap<String, i64>,
    dead_letters_max: usize,
}

impl Writer<'_> {
    /// The row id of a node, added (with no site) the first time it is seen.
    pub fn node(&mut self, name: &str) -> Result<i64, StorageError> {
        if let Some(id) = self.nodes.get(name) {
            return Ok(*id);
        }
        self.tx
            .prepare_cached("INSERT INTO nodes (name) VALUES (?1) ON CONFLICT (name) DO NOTHING")?
            .execute([name])?;
        let id: i64 = self
            .tx
            .prepare_cached("SELECT id FROM nodes WHERE name = ?1")?
            .query_row([name], |row| row.get(0))?;
        self.nodes.insert(name.to_owned(), id);
        Ok(id)
    }

    /// Stores a report; false when it was stored before.
    pub fn report(&mut self, node: i64, r: &ReportRow) -> Result<bool, StorageError> {
        let inserted = self
            .tx
            .prepare_cached(
                "INSERT INTO reports (node, boot, seq, ts, clock_ok, received, period_s,
                    lux_avg, lux_min, lux_max, motion, lamp_on, lamp_level, power_w, cfg, faults,
                    temp_c, zone)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)
                 ON CONFLICT (node, boot, seq) DO NOTHING",
            )?
            .execute(params![
                node,
                r.boot,
                r.seq,
                r.ts,
                r.clock_ok,
                r.received,
                r.period_s,
                r.lux.map(|l| l.avg),
                r.lux.map(|l| l.min),
                r.lux.map(|l| l.max),
                r.motion,
                r.lamp_on,
                r.lamp_level,
                r.power_w,
                r.cfg,
                r.faults,
                r.temp_c,
                r.zone,
            ])?;
        Ok(inserted == 1)
    }

    /// Records a node status (birth, will, shutdown).
    pub fn status(
        &mut self,
        node: i64,
        received: i64,
        status: &parklight_protocol::Status,
        payload: &[u8],
    ) -> Result<(), StorageError> {
        use parklight_protocol::status::{OfflineReason, Status};
        let (online, reason, boot, conn) = match status {
            Status::Online(b) => (true, None, b.boot, b.conn),
            Status::Offline(o) => (
                false,
                Some(match o.reason {
                    OfflineReason::Lost => "lost",
                    OfflineReason::Shutdown => "shutdown",
                }),
                o.boot,
                o.conn,
            ),
        };
        self.tx
            .prepare_cached(
                "INSERT INTO statuses (node, received, online, reason, boot, conn, payload)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                node,
                received,
                online,
                reason,
                boot,
                conn,
                String::from_utf8_lossy(payload)
            ])?;
        Ok(())
    }

    /// Stores an event; false when it was stored before.
    pub fn event(
        &mut self,
        node: i64,
        received: i64,
        event: &parklight_protocol::Event,
        payload: &[u8],
    ) -> Result<bool, StorageError> {
        let inserted = self
            .tx
            .prepare_cached(
                "INSERT INTO events (node, boot, eseq, ts, received, kind, payload)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (node, boot, eseq) DO NOTHING",
            )?
            .execute(params![
                node,
                event.boot,
                event.eseq,
                event.ts as i64,
                received,
                event.kind.as_str(),
                String::from_utf8_lossy(payload)
            ])?;
        Ok(inserted == 1)
    }

    /// Keeps a rejected message, dropping the oldest beyond the limit.
    pub fn dead_letter(&mut self, letter: &DeadLetter) -> Result<(), StorageError> {
        let kept = &letter.payload[..letter.payload.len().min(DEAD_LETTER_BYTES)];
        let (node, boot, seq) = match &letter.report {
            Some((node, boot, seq)) => (Some(node.as_str()), Some(*boot), Some(*seq)),
            None => (None, None, None),
        };
        self.tx
            .prepare_cached(
                "INSERT INTO dead_letters (received, topic, payload, reason, field, node, boot, seq)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![letter.received, letter.topic, kept, letter.reason, letter.field, node, boot, seq])?;
        self.tx
            .prepare_cached(
                "DELETE FROM dead_letters WHERE id <= (SELECT max(id) FROM dead_letters) - ?1",
            )?
            .execute([self.dead_letters_max as i64])?;
        Ok(())
    }

    /// The acknowledgement state of a node's boot.
    pub fn ack_state(&mut self, node: i64, boot: u32) -> Result<Option<AckState>, StorageError> {
        Ok(self
            .tx
            .prepare_cached("SELECT from_seq, acked FROM ack_state WHERE node = ?1 AND boot = ?2")?
            .query_row(params![node, boot], |row| {
                Ok(AckState {
                    from_seq: row.get(0)?,
                    acked: row.get(1)?,
                })
            })
            .optional()?)
    }

    /// Saves the acknowledgement state of a node's boot, adding `lost` reports the node
    /// declared gone.
    pub fn set_ack_state(
        &mut self,
        node: i64,
        boot: u32,
        state: AckState,
        lost: u64,
    ) -> Result<(), StorageError> {
        self.tx
            .prepare_cached(
                "INSERT INTO ack_state (node, boot, from_seq, acked, lost) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (node, boot) DO UPDATE SET from_seq = excluded.from_seq,
                    acked = excluded.acked, lost = lost + excluded.lost",
            )?
            .execute(params![node, boot, state.from_seq, state.acked, lost as i64])?;
        Ok(())
    }

    /// The seqs of a node's boot from `from` on that are handled: stored, or dead letters
    /// with a readable identity.
    pub fn handled_from(
        &mut self,
        node: i64,
        name: &str,
        boot: u32,
        from: u32,
    ) -> Result<Vec<u32>, StorageError> {
        let mut statement = self.tx.prepare_cached(
            "SELECT seq FROM reports WHERE node = ?1 AND boot = ?3 AND seq >= ?4
             UNION SELECT seq FROM dead_letters WHERE node = ?2 AND boot = ?3 AND seq >= ?4",
        )?;
        let seqs = statement.query_map(params![node, name, boot, from], |row| row.get(0))?;
        Ok(seqs.collect::<Result<_, _>>()?)
    }

    /// Makes everything in this group durable.
    pub fn commit(self) -> Result<(), StorageError> {
        Ok(self.tx.commit()?)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A report of the skatepark zone at night, one a minute by `seq`.
    pub(crate) fn report(boot: u32, seq: u32) -> ReportRow {
        ReportRow {
            boot,
            seq,
            ts: 1_764_093_600_000 + i64::from(seq) * 60_000,
            clock_ok: true,
            received: 1_764_093_600_500,
            period_s: 60,
            lux: Some(parklight_protocol::Lux {
                avg: 6.4,
                min: 5.9,
                max: 7.1,
            }),
            motion: 3,
            lamp_on: true,
            lamp_level: 80,
            power_w: Some(31.5),
            cfg: Some(3),
            faults: 0,
            temp_c: None,
            zone: Some("skatepark".into()),
        }
    }

    #[test]
    fn a_report_is_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), 10).unwrap();
        let mut writer = store.write().unwrap();
        let node = writer.node("pole-017").unwrap();
        assert!(writer.report(node, &report(7, 1)).unwrap());
        assert!(!writer.report(node, &report(7, 1)).unwrap());
        assert!(writer.report(node, &report(8, 1)).unwrap());
        writer.commit().unwrap();
        drop(store);
        let store = Store::open(dir.path(), 10).unwrap();
        assert_eq!(store.report_count().unwrap(), 2);
        let rows = store.reports_after(0, 10).unwrap();
        assert_eq!(rows[0].report, report(7, 1));
        assert_eq!(
            (rows[0].node.as_str(), rows[0].site.as_deref()),
            ("pole-017", None)
        );
        assert_eq!(store.reports_after(rows[0].id, 10).unwrap().len(), 1);
    }

    #[test]
    fn nothing_is_stored_without_a_commit() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), 10).unwrap();
        {
            let mut writer = store.write().unwrap();
            let node = writer.node("pole-017").unwrap();
            writer.report(node, &report(7, 1)).unwrap();
        }
        assert_eq!(store.report_count().unwrap(), 0);
    }

    #[test]
    fn a_newer_store_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path(), 10).unwrap());
        let connection = Connection::open(dir.path().join(DB_FILE)).unwrap();
        connection.pragma_update(None, "user_version", 99).unwrap();
        drop(connection);
        let error = Store::open(dir.path(), 10).err().unwrap().to_string();
        assert!(
            error.contains("schema version 99") && error.contains("newer parklight"),
            "{error}"
        );
    }

    #[test]
    fn dead_letters_are_bounded_and_count_as_handled() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), 3).unwrap();
        let mut writer = store.write().unwrap();
        let node = writer.node("pole-017").unwrap();
        for seq in 0..5 {
            writer
                .dead_letter(&DeadLetter {
                    received: 1,
                    topic: "t".into(),
                    payload: vec![b'x'; 2000],
                    reason: "out_of_range".into(),
                    field: Some("lux".into()),
                    report: Some(("pole-017".into(), 7, seq)),
                })
                .unwrap();
        }
        assert_eq!(
            writer.handled_from(node, "pole-017", 7, 0).unwrap(),
            [2, 3, 4]
        );
        assert!(
            writer.handled_from(node, "pole-017", 7, 0).unwrap()[0] != 0,
            "dropped as the oldest"
        );
        writer.commit().unwrap();
        let letters = store.dead_letters(10).unwrap();
        assert_eq!(letters.len(), 3);
        assert_eq!(letters[0].payload.len(), DEAD_LETTER_BYTES);
        assert_eq!(letters[0].report, Some(("pole-017".into(), 7, 4)));
    }

    #[test]
    fn cursors_persist() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 3).unwrap();
        assert_eq!(store.cursor("influxdb").unwrap(), 0);
        store.set_cursor("influxdb", 42).unwrap();
        store.set_cursor("influxdb", 43).unwrap();
        assert_eq!(store.cursor("influxdb").unwrap(), 43);
    }
}
