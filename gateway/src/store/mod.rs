//! The embedded store: SQLite (bundled), WAL, `synchronous=FULL`, written in group
//! commits. A report is keyed by `(node, boot, seq)`, so storing it twice does nothing.
//!
//! - [`schema`]: numbered migrations; a file newer than the binary is refused.
//! - [`Store::write`] opens one transaction ([`Writer`]) for a group of messages.
//! - Reading: dead letters, reports after a cursor (the forwarder), cursors.
//! - [`history`]: [`Store::compact`] folds closed hours into compressed column blocks
//!   ([`blocks`]); [`Store::retain`] then drops raw rows past the retention;
//!   [`Store::series`] and [`Store::latest_per_node`] read blocks and raw rows alike.

pub mod access;
pub mod alerts;
mod blocks;
pub mod control;
pub mod history;
pub mod journal;
mod schema;
mod turns;
mod writer;

pub use writer::{Placement, Writer};

use turns::Turns;

pub use history::{Bucket, Compaction, HOUR_MS, LatestReport, Selector};
pub use journal::{ConditionRow, Entry, Position, UsageQuarter};

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use parklight_site::Site;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::clock::BootClock;

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

impl StorageError {
    /// Whether trying again may succeed: the disk is full or failing, or another
    /// connection holds a lock. Anything else (a damaged file, a schema that is not
    /// ours, a broken constraint) will fail again: the gateway stops and says why.
    pub fn is_transient(&self) -> bool {
        use rusqlite::ErrorCode::{
            DatabaseBusy, DatabaseLocked, DiskFull, FileLockingProtocolFailed, OutOfMemory,
            SystemIoFailure,
        };
        matches!(
            self,
            StorageError::Sqlite(rusqlite::Error::SqliteFailure(failure, _))
                if matches!(failure.code, DatabaseBusy | DatabaseLocked | DiskFull
                    | SystemIoFailure | FileLockingProtocolFailed | OutOfMemory)
        )
    }
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
/// How much of a rejected message's topic is kept.
pub const DEAD_LETTER_TOPIC_BYTES: usize = 256;

/// A report to forward, with the names it is tagged with.
#[derive(Debug, Clone, PartialEq)]
pub struct ForwardRow {
    /// Arrival order.
    pub id: i64,
    /// Node id.
    pub node: String,
    /// Site (from the site files, or the topic of an unknown node).
    pub site: Option<String>,
    /// The report.
    pub report: ReportRow,
    /// Stamped, and waiting for its boot's clock: not to be sent yet.
    pub held: bool,
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
    /// Zone windows up to this place in the window log are sent.
    pub windows: i64,
}

/// What the gateway knows of one node's boot: how far its reports are handled, and its
/// clock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BootState {
    /// Counting starts here (the node's `oldest`).
    pub from_seq: u32,
    /// Every report from `from_seq` up to this one is handled or declared lost.
    pub acked: Option<u32>,
    /// The highest seq handled.
    pub top: Option<u32>,
    /// The clock that places the boot's reports.
    pub clock: BootClock,
}

/// The latest status of a node: which connection, and whether it is online.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Presence {
    /// Boot of the connection.
    pub boot: u32,
    /// Connection within the boot.
    pub conn: u32,
    /// Offline after online: a will or shutdown of a connection comes after its birth.
    pub offline: bool,
}

impl Presence {
    /// What `status` says.
    pub fn of(status: &parklight_protocol::Status) -> Presence {
        use parklight_protocol::status::Status;
        match status {
            Status::Online(b) => Presence {
                boot: b.boot,
                conn: b.conn,
                offline: false,
            },
            Status::Offline(o) => Presence {
                boot: o.boot,
                conn: o.conn,
                offline: true,
            },
        }
    }
}

/// One line of `parklight nodes`.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSummary {
    /// Node id.
    pub node: String,
    /// Site (from the site files, or the topic of an unknown node).
    pub site: Option<String>,
    /// Zone from the site files.
    pub zone: Option<String>,
    /// Time of its latest report, Unix ms.
    pub last_report: Option<i64>,
    /// Config version its latest report says it runs.
    pub cfg: Option<u32>,
    /// Lamp level (0–100) of its latest report.
    pub lamp_level: Option<u8>,
    /// Its latest status.
    pub presence: Option<Presence>,
    /// Reports it declared lost that never arrived, over all its boots.
    pub lost: u64,
}

/// The embedded store.
pub struct Store {
    connection: Connection,
    nodes: HashMap<String, i64>,
    dead_letters_max: usize,
    /// Every write waits its turn among this process's connections to the file.
    turns: std::sync::Arc<Turns>,
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
        // First: every statement below may meet another connection's write lock.
        connection.busy_timeout(std::time::Duration::from_secs(5))?;
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", "FULL")?;
        connection.pragma_update(None, "foreign_keys", "ON")?;
        // Index pages stay in memory instead of being read again with a syscall each: the
        // page cache was the largest cost of ingest under load (measured with perf).
        connection.pragma_update(None, "cache_size", -65_536)?;
        connection.pragma_update(None, "mmap_size", 1_i64 << 30)?;
        // One transaction that holds the write lock from its start: two processes opening
        // a new store at once never both migrate it.
        let turns = Turns::of(&path);
        let turn = turns.take();
        let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version: i64 = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
        let version = usize::try_from(version).unwrap_or(usize::MAX);
        if version > schema::MIGRATIONS.len() {
            return Err(StorageError::TooNew {
                path,
                found: version,
                known: schema::MIGRATIONS.len(),
            });
        }
        for migration in &schema::MIGRATIONS[version..] {
            tx.execute_batch(migration)?;
        }
        tx.pragma_update(None, "user_version", schema::MIGRATIONS.len() as i64)?;
        tx.commit()?;
        drop(turn);
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
            turns,
        })
    }

    /// Records which site and zone each node of `sites` belongs to now; a node no site
    /// file lists keeps its site (the one its topic named) but has no zone.
    pub fn register_sites(&mut self, sites: &[Site]) -> Result<(), StorageError> {
        let mut writer = self.write()?;
        writer.tx.execute("UPDATE nodes SET zone = NULL", [])?;
        for site in sites {
            for node in &site.nodes {
                let id = writer.node(&node.id, &site.id)?;
                writer
                    .tx
                    .prepare_cached("UPDATE nodes SET site = ?2, zone = ?3 WHERE id = ?1")?
                    .execute(params![id, site.id, node.zone])?;
            }
        }
        writer.commit()
    }

    /// Starts a group of writes that commit together (an immediate transaction: it
    /// holds the write lock from the start, so reading then writing never fails on a
    /// snapshot another connection has moved past).
    pub fn write(&mut self) -> Result<Writer<'_>, StorageError> {
        let turn = self.turns.take();
        Ok(Writer {
            _turn: turn,
            tx: self
                .connection
                .transaction_with_behavior(TransactionBehavior::Immediate)?,
            nodes: &mut self.nodes,
            added: HashMap::new(),
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

    /// Reports stored after `cursor` in arrival order, at most `limit`, held ones too.
    pub fn reports_after(
        &self,
        cursor: i64,
        limit: usize,
    ) -> Result<Vec<ForwardRow>, StorageError> {
        let mut statement = self.connection.prepare_cached(&format!(
            "SELECT r.id, n.name, n.site, {REPORT_COLUMNS}, r.held
             FROM reports r JOIN nodes n ON n.id = r.node
             WHERE r.id > ?1 ORDER BY r.id LIMIT ?2"
        ))?;
        let rows = statement.query_map(params![cursor, limit as i64], forward_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Reports the forwarder passed while they were held and that are let go now, at
    /// most `limit`.
    pub fn released_later(&self, limit: usize) -> Result<Vec<ForwardRow>, StorageError> {
        let mut statement = self.connection.prepare_cached(&format!(
            "SELECT r.id, n.name, n.site, {REPORT_COLUMNS}, r.held
             FROM forward_later f JOIN reports r ON r.id = f.id JOIN nodes n ON n.id = r.node
             WHERE r.held = 0 ORDER BY r.id LIMIT ?1"
        ))?;
        let rows = statement.query_map([limit as i64], forward_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Lets go of the stamped reports whose boot's clock did not come within their hold
    /// ([`crate::clock::hold_ms`]) at `now`: they keep the time they were stamped with.
    /// Returns how many.
    pub fn release_held(&mut self, now: i64) -> Result<usize, StorageError> {
        let mut writer = self.write()?;
        let released = writer.release_expired(now)?;
        writer.commit()?;
        Ok(released)
    }

    /// The id of the last status stored (0 when none).
    pub fn last_status_id(&self) -> Result<i64, StorageError> {
        Ok(self
            .connection
            .prepare_cached("SELECT coalesce(max(id), 0) FROM statuses")?
            .query_row([], |row| row.get(0))?)
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
        Ok(self.cursor_opt(name)?.unwrap_or(0))
    }

    /// A cursor's position, if it was ever set.
    pub fn cursor_opt(&self, name: &str) -> Result<Option<i64>, StorageError> {
        Ok(self
            .connection
            .query_row(
                "SELECT position FROM cursors WHERE name = ?1",
                [name],
                |row| row.get(0),
            )
            .optional()?)
    }

    /// Moves a cursor.
    pub fn set_cursor(&mut self, name: &str, position: i64) -> Result<(), StorageError> {
        let mut writer = self.write()?;
        writer.set_cursor(name, position)?;
        writer.commit()
    }

    /// Reports a node declared gone that never arrived, over all its boots.
    pub fn lost_on_node(&self, node: &str) -> Result<u64, StorageError> {
        let lost: i64 = self.connection.query_row(
            "SELECT coalesce(sum(b.lost), 0) FROM boots b JOIN nodes n ON n.id = b.node WHERE n.name = ?1",
            [node],
            |row| row.get(0),
        )?;
        Ok(lost.max(0) as u64)
    }

    /// Reports every node declared gone that never arrived.
    pub fn lost_on_nodes(&self) -> Result<u64, StorageError> {
        let lost: i64 =
            self.connection
                .query_row("SELECT coalesce(sum(lost), 0) FROM boots", [], |row| {
                    row.get(0)
                })?;
        Ok(lost.max(0) as u64)
    }

    /// Each node's latest status: the newest connection's, and of that its last word.
    pub fn presence(&self) -> Result<HashMap<String, Presence>, StorageError> {
        let mut statement = self.connection.prepare(
            "SELECT n.name, s.boot, s.conn, s.online FROM statuses s JOIN nodes n ON n.id = s.node",
        )?;
        let mut rows = statement.query([])?;
        let mut latest: HashMap<String, Presence> = HashMap::new();
        while let Some(row) = rows.next()? {
            let presence = Presence {
                boot: row.get(1)?,
                conn: row.get(2)?,
                offline: !row.get::<_, bool>(3)?,
            };
            let entry = latest.entry(row.get(0)?).or_insert(presence);
            *entry = (*entry).max(presence);
        }
        Ok(latest)
    }

    /// One summary per node, ordered by node.
    pub fn node_summaries(&self) -> Result<Vec<NodeSummary>, StorageError> {
        let mut latest: HashMap<String, ReportRow> = self
            .latest_per_node()?
            .into_iter()
            .map(|l| (l.node, l.report))
            .collect();
        let presence = self.presence()?;
        let mut statement = self.connection.prepare(
            "SELECT n.name, n.site, n.zone, (SELECT coalesce(sum(b.lost), 0) FROM boots b WHERE b.node = n.id)
             FROM nodes n ORDER BY n.name",
        )?;
        let rows = statement.query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get::<_, i64>(3)?,
            ))
        })?;
        let mut summaries = Vec::new();
        for row in rows {
            let (node, site, zone, lost) = row?;
            let report = latest.remove(&node);
            summaries.push(NodeSummary {
                presence: presence.get(&node).copied(),
                last_report: report.as_ref().map(|r| r.ts),
                lamp_level: report.as_ref().map(|r| r.lamp_level),
                cfg: report.and_then(|r| r.cfg),
                node,
                site,
                zone,
                lost: lost.max(0) as u64,
            });
        }
        Ok(summaries)
    }

    /// The subscriptions the broker may hold for the gateway's session.
    pub fn subscriptions(&self) -> Result<Vec<String>, StorageError> {
        let mut statement = self
            .connection
            .prepare("SELECT filter FROM subscriptions ORDER BY filter")?;
        let filters = statement.query_map([], |row| row.get(0))?;
        Ok(filters.collect::<Result<_, _>>()?)
    }

    /// Remembers the subscriptions the broker may hold for the gateway's session.
    pub fn set_subscriptions(&mut self, filters: &[String]) -> Result<(), StorageError> {
        let _turn = self.turns.take();
        let tx = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute("DELETE FROM subscriptions", [])?;
        for filter in filters {
            tx.execute(
                "INSERT INTO subscriptions (filter) VALUES (?1) ON CONFLICT DO NOTHING",
                [filter],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Lets the file grow to at most `pages` pages (none: as large as SQLite allows), as
    /// a full disk would.
    #[cfg(test)]
    pub(crate) fn limit_pages(&self, pages: Option<i64>) {
        let current: i64 = self
            .connection
            .pragma_query_value(None, "page_count", |row| row.get(0))
            .unwrap();
        let limit = pages.map_or(0xFFFF_FFFE, |p| current + p);
        self.connection
            .pragma_update(None, "max_page_count", limit)
            .unwrap();
    }

    /// Takes a write transaction and commits it empty: whether the store takes writes.
    pub fn probe_write(&mut self) -> Result<(), StorageError> {
        self.write()?.commit()
    }

    /// Moves the write-ahead log into the database file and gives free pages back, so
    /// the file size is what the data takes.
    pub fn checkpoint(&self) -> Result<(), StorageError> {
        let _turn = self.turns.take();
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

/// Columns in [`REPORT_COLUMNS`].
const REPORT_COLUMN_COUNT: usize = 17;

/// Reads `r.id, n.name, n.site`, then [`REPORT_COLUMNS`], then `r.held`.
fn forward_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ForwardRow> {
    Ok(ForwardRow {
        id: row.get(0)?,
        node: row.get(1)?,
        site: row.get(2)?,
        report: report_from(row, 3)?,
        held: row.get(3 + REPORT_COLUMN_COUNT)?,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A report of the skatepark zone at night, one a minute by `seq`, every field
    /// varying with `seq` (and some absent now and then).
    pub(crate) fn report(boot: u32, seq: u32) -> ReportRow {
        let wobble = f64::from(seq % 97) / 8.0;
        ReportRow {
            boot,
            seq,
            ts: 1_764_093_600_000 + i64::from(seq) * 60_000,
            clock_ok: true,
            received: 1_764_093_600_500 + i64::from(seq % 13) * 1000,
            period_s: 60,
            lux: (seq % 11 != 5).then_some(parklight_protocol::Lux {
                avg: 6.4 + wobble,
                min: 5.9 + wobble / 2.0,
                max: 7.1 + wobble * 2.0,
            }),
            motion: seq % 7,
            lamp_on: !seq.is_multiple_of(9),
            lamp_level: (seq % 101) as u8,
            power_w: (seq % 7 != 3).then_some(31.5 + f64::from(seq % 17) / 4.0),
            cfg: (!seq.is_multiple_of(5)).then_some(seq / 50),
            faults: (seq % 4) as u8,
            temp_c: seq.is_multiple_of(3).then_some(-4.5 + f64::from(seq % 19)),
            zone: Some("skatepark".into()),
        }
    }

    #[test]
    fn a_report_is_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), 10).unwrap();
        let mut writer = store.write().unwrap();
        let node = writer.node("pole-017", "remiseparken").unwrap();
        assert!(
            writer
                .report(node, &report(7, 1), Default::default())
                .unwrap()
        );
        assert!(
            !writer
                .report(node, &report(7, 1), Default::default())
                .unwrap()
        );
        assert!(
            writer
                .report(node, &report(8, 1), Default::default())
                .unwrap()
        );
        writer.commit().unwrap();
        drop(store);
        let store = Store::open(dir.path(), 10).unwrap();
        assert_eq!(store.report_count().unwrap(), 2);
        let rows = store.reports_after(0, 10).unwrap();
        assert_eq!(rows[0].report, report(7, 1));
        assert_eq!(
            (rows[0].node.as_str(), rows[0].site.as_deref()),
            ("pole-017", Some("remiseparken")),
            "the site its topic named"
        );
        assert_eq!(store.reports_after(rows[0].id, 10).unwrap().len(), 1);
    }

    #[test]
    fn nothing_is_stored_without_a_commit() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), 10).unwrap();
        {
            let mut writer = store.write().unwrap();
            let node = writer.node("pole-017", "remiseparken").unwrap();
            writer
                .report(node, &report(7, 1), Default::default())
                .unwrap();
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
        let node = writer.node("pole-017", "remiseparken").unwrap();
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
        let mut store = Store::open(dir.path(), 3).unwrap();
        assert_eq!(store.cursor("influxdb").unwrap(), 0);
        store.set_cursor("influxdb", 42).unwrap();
        store.set_cursor("influxdb", 43).unwrap();
        assert_eq!(store.cursor("influxdb").unwrap(), 43);
    }
}
