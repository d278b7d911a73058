//! The detectors' side of the store: reports and facts read back in commit order (the
//! journal), condition transitions, zone windows, and the detectors' snapshot.
//!
//! Reports are ordered by id. A fact row carries `after_report`, the highest report id
//! when it was written in the same transaction, so it goes after that report and before
//! the next: commit order without a journal row per report on the ingest path.

use rusqlite::{OptionalExtension, params};

use super::{REPORT_COLUMNS, StorageError, Store, report_from};
use crate::detect::{Fact, Kind, Output, Status, Transition, ZoneWindow};
use parklight_protocol::telemetry::Fault;

/// Cursor of the detectors' output: reports and facts up to here are judged and stored.
const OUTPUT_REPORT: &str = "detector.report";
const OUTPUT_FACT: &str = "detector.fact";

/// The columns [`window_of`] reads.
const WINDOW_COLUMNS: &str = "site, zone, start_ms, end_ms, status, lux_avg, lux_min, required_avg,
    required_min, detections, occupied_dark_minutes, detections_dark, valid_nodes, nodes, cause,
    revised";

/// A place in the journal: every report up to `report` and fact up to `fact` is behind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    /// Highest report id read.
    pub report: i64,
    /// Highest fact id read.
    pub fact: i64,
}

/// One journal entry, and the position after it.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The position once this entry is read.
    pub position: Position,
    /// What happened.
    pub fact: Fact,
}

/// A stored condition transition.
#[derive(Debug, Clone, PartialEq)]
pub struct ConditionRow {
    /// Row id: the order transitions were recorded in.
    pub id: i64,
    /// The transition.
    pub transition: Transition,
    /// When it was recorded, Unix ms (wall clock).
    pub recorded: i64,
}

struct FactRow {
    id: i64,
    after_report: i64,
    node: String,
    kind: String,
    boot: Option<u32>,
    conn: Option<u32>,
    raised: Option<bool>,
    received: i64,
    cfg: Option<u32>,
    payload: Option<String>,
    interval_s: Option<u16>,
}

/// A fault event's fact kind.
pub fn fault_of(kind: &str) -> Option<Fault> {
    Fault::ALL.into_iter().find(|f| f.as_str() == kind)
}

impl FactRow {
    /// The facts the detectors see (a release: the reports it let go).
    fn facts(self, store: &Store, out: &mut Vec<Fact>) -> Result<(), StorageError> {
        let (node, received) = (self.node, self.received);
        let (boot, conn) = (self.boot.unwrap_or(0), self.conn.unwrap_or(0));
        match self.kind.as_str() {
            "online" => out.push(Fact::Online {
                node,
                boot,
                conn,
                cfg: self.cfg,
                interval_s: self.interval_s,
                received,
            }),
            "lost" | "shutdown" => out.push(Fact::Offline {
                lost: self.kind == "lost",
                node,
                boot,
                conn,
                received,
            }),
            "silent" => out.push(Fact::Silent { node, received }),
            "power_loss" => out.push(Fact::PowerLoss { node, boot }),
            "replaced" => out.push(Fact::Replaced { node }),
            "command_applied" | "command_rejected" => {
                if let Some(cfg) = self.cfg {
                    out.push(Fact::ConfigAnswer {
                        applied: self.kind == "command_applied",
                        node,
                        cfg,
                        detail: self.payload.unwrap_or_default(),
                        received,
                    });
                }
            }
            "config_late" => {
                if let Some(cfg) = self.cfg {
                    out.push(Fact::ConfigLate {
                        node,
                        cfg,
                        received,
                    });
                }
            }
            "config" => {
                if let (Some(cfg), Some(payload)) = (self.cfg, self.payload) {
                    out.push(Fact::Config {
                        node,
                        cfg,
                        payload,
                        received,
                    });
                }
            }
            "released" => {
                let mut statement = store.connection.prepare_cached(&format!(
                    "SELECT {REPORT_COLUMNS} FROM reports r WHERE r.released = ?1 ORDER BY r.id"
                ))?;
                let rows = statement.query_map([self.id], |row| report_from(row, 0))?;
                for report in rows {
                    out.push(Fact::Report {
                        node: node.clone(),
                        report: report?,
                    });
                }
            }
            kind => {
                if let Some(fault) = fault_of(kind) {
                    out.push(Fact::Fault {
                        node,
                        fault,
                        raised: self.raised.unwrap_or(false),
                        received,
                    });
                }
            }
        }
        Ok(())
    }
}

impl Store {
    /// The journal after `from`, up to `until` when given: at most about `limit` reports
    /// and the facts among them, in commit order, read from one snapshot of the file.
    /// Returns the entries and the position after them. A held report is left out here:
    /// it comes with the fact that lets it go.
    pub fn journal_after(
        &self,
        from: Position,
        limit: usize,
        until: Option<Position>,
    ) -> Result<(Vec<Entry>, Position), StorageError> {
        let until = until.unwrap_or(Position {
            report: i64::MAX,
            fact: i64::MAX,
        });
        let tx = self.connection.unchecked_transaction()?;
        let mut reports = Vec::new();
        {
            // Node names from one read of the nodes, not a lookup per report.
            let names: std::collections::HashMap<i64, String> = tx
                .prepare_cached("SELECT id, name FROM nodes")?
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<Result<_, _>>()?;
            let mut statement = tx.prepare_cached(&format!(
                "SELECT r.id, r.node, r.held OR r.released IS NOT NULL, {REPORT_COLUMNS}
                 FROM reports r WHERE r.id > ?1 AND r.id <= ?2 ORDER BY r.id LIMIT ?3"
            ))?;
            let rows =
                statement.query_map(params![from.report, until.report, limit as i64], |row| {
                    let node: i64 = row.get(1)?;
                    Ok((
                        row.get::<_, i64>(0)?,
                        names.get(&node).cloned().unwrap_or_default(),
                        row.get::<_, bool>(2)?,
                        report_from(row, 3)?,
                    ))
                })?;
            for row in rows {
                reports.push(row?);
            }
        }
        let newest: i64 = tx.query_row("SELECT coalesce(max(id), 0) FROM reports", [], |row| {
            row.get(0)
        })?;
        let report_bound = if reports.len() == limit {
            reports.last().map_or(from.report, |r| r.0)
        } else {
            newest.min(until.report).max(from.report)
        };
        let mut facts = Vec::new();
        {
            let mut statement = tx.prepare_cached(
                "SELECT f.id, f.after_report, n.name, f.kind, f.boot, f.conn, f.raised, f.received,
                    f.cfg, f.payload, f.interval_s
                 FROM facts f JOIN nodes n ON n.id = f.node
                 WHERE f.id > ?1 AND f.id <= ?2 AND f.after_report <= ?3 ORDER BY f.id",
            )?;
            let rows =
                statement.query_map(params![from.fact, until.fact, report_bound], |row| {
                    Ok(FactRow {
                        id: row.get(0)?,
                        after_report: row.get(1)?,
                        node: row.get(2)?,
                        kind: row.get(3)?,
                        boot: row.get(4)?,
                        conn: row.get(5)?,
                        raised: row.get(6)?,
                        received: row.get(7)?,
                        cfg: row.get(8)?,
                        payload: row.get(9)?,
                        interval_s: row.get(10)?,
                    })
                })?;
            for row in rows {
                facts.push(row?);
            }
        }
        let mut entries = Vec::new();
        let mut position = from;
        let mut facts = facts.into_iter().peekable();
        let mut expanded = Vec::new();
        for (id, node, held, report) in reports {
            while let Some(fact) = facts.next_if(|f| f.after_report < id) {
                position.fact = fact.id;
                fact.facts(self, &mut expanded)?;
                entries.extend(expanded.drain(..).map(|fact| Entry { position, fact }));
            }
            position.report = id;
            if !held {
                entries.push(Entry {
                    position,
                    fact: Fact::Report { node, report },
                });
            }
        }
        position.report = report_bound;
        for fact in facts {
            position.fact = fact.id;
            fact.facts(self, &mut expanded)?;
            entries.extend(expanded.drain(..).map(|fact| Entry { position, fact }));
        }
        tx.finish()?;
        Ok((entries, position))
    }

    /// Stores what the detectors gave up to `position` in one transaction with the
    /// position itself, so nothing is lost or stored twice.
    pub fn record_detection(
        &mut self,
        outputs: &[Output],
        position: Position,
        recorded: i64,
    ) -> Result<(), StorageError> {
        let mut writer = self.write()?;
        for output in outputs {
            match output {
                Output::Transition(t) => {
                    writer
                        .tx
                        .prepare_cached(
                            "INSERT INTO conditions (kind, site, zone, node, active, severity,
                                since, ts, detail, recorded)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                        )?
                        .execute(params![
                            t.kind.as_str(),
                            t.site,
                            t.zone,
                            t.node,
                            t.active,
                            t.severity.as_str(),
                            t.since,
                            t.ts,
                            t.detail,
                            recorded
                        ])?;
                }
                Output::Window(w) => {
                    writer
                        .tx
                        .prepare_cached(
                            "INSERT OR REPLACE INTO zone_windows (site, zone, end_ms, start_ms,
                                status, lux_avg, lux_min, required_avg, required_min, detections,
                                occupied_dark_minutes, detections_dark, valid_nodes, nodes, cause,
                                revised)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14,
                                ?15, ?16)",
                        )?
                        .execute(params![
                            w.site,
                            w.zone,
                            w.end,
                            w.start,
                            w.status as i64,
                            w.lux_avg,
                            w.lux_min,
                            w.required_avg,
                            w.required_min,
                            w.detections,
                            w.occupied_dark_minutes,
                            w.detections_dark,
                            w.valid_nodes,
                            w.nodes,
                            w.cause,
                            w.revised
                        ])?;
                    writer
                        .tx
                        .prepare_cached(
                            "INSERT INTO window_log (site, zone, end_ms) VALUES (?1, ?2, ?3)",
                        )?
                        .execute(params![w.site, w.zone, w.end])?;
                }
            }
        }
        writer.set_cursor(OUTPUT_REPORT, position.report)?;
        writer.set_cursor(OUTPUT_FACT, position.fact)?;
        writer.commit()
    }

    /// How far the detectors' output is stored.
    pub fn detected(&self) -> Result<Position, StorageError> {
        Ok(Position {
            report: self.cursor(OUTPUT_REPORT)?,
            fact: self.cursor(OUTPUT_FACT)?,
        })
    }

    /// Keeps the detectors' state as of `position`.
    pub fn save_detector_state(
        &mut self,
        position: Position,
        state: &str,
    ) -> Result<(), StorageError> {
        let writer = self.write()?;
        writer
            .tx
            .prepare_cached(
                "INSERT OR REPLACE INTO detector_snapshots (id, report, fact, state)
                 VALUES (1, ?1, ?2, ?3)",
            )?
            .execute(params![position.report, position.fact, state])?;
        writer.commit()
    }

    /// The detectors' last kept state and its position.
    pub fn detector_state(&self) -> Result<Option<(Position, String)>, StorageError> {
        Ok(self
            .connection
            .query_row(
                "SELECT report, fact, state FROM detector_snapshots WHERE id = 1",
                [],
                |row| {
                    Ok((
                        Position {
                            report: row.get(0)?,
                            fact: row.get(1)?,
                        },
                        row.get(2)?,
                    ))
                },
            )
            .optional()?)
    }

    /// Each node's latest published config: version, content and message.
    pub fn latest_configs(
        &self,
    ) -> Result<std::collections::HashMap<String, (u32, String, String)>, StorageError> {
        let mut statement = self.connection.prepare_cached(
            "SELECT n.name, c.cfg, c.content, c.payload FROM configs c JOIN nodes n ON n.id = c.node
             WHERE c.cfg = (SELECT max(cfg) FROM configs d WHERE d.node = c.node)",
        )?;
        let rows = statement.query_map([], |row| {
            Ok((row.get(0)?, (row.get(1)?, row.get(2)?, row.get(3)?)))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Condition transitions recorded from `since` (event time, Unix ms) on, in order.
    pub fn conditions_since(&self, since: i64) -> Result<Vec<ConditionRow>, StorageError> {
        self.condition_rows("WHERE ts >= ?1 ORDER BY id", since)
    }

    /// The conditions active now: each key's latest transition, when it left it active.
    pub fn active_conditions(&self) -> Result<Vec<ConditionRow>, StorageError> {
        self.condition_rows(
            "WHERE id IN (SELECT max(id) FROM conditions
                GROUP BY kind, site, coalesce(zone, ''), coalesce(node, ''))
             AND active = 1 AND ?1 = ?1 ORDER BY site, kind, zone, node",
            0,
        )
    }

    pub(super) fn condition_rows(
        &self,
        filter: &str,
        value: i64,
    ) -> Result<Vec<ConditionRow>, StorageError> {
        let mut statement = self.connection.prepare_cached(&format!(
            "SELECT id, kind, site, zone, node, active, severity, since, ts, detail, recorded
             FROM conditions {filter}"
        ))?;
        let rows = statement.query_map([value], |row| {
            let kind: String = row.get(1)?;
            let severity: String = row.get(6)?;
            Ok((
                row.get(0)?,
                kind,
                severity,
                Transition {
                    kind: Kind::DarkZone,
                    site: row.get(2)?,
                    zone: row.get(3)?,
                    node: row.get(4)?,
                    active: row.get(5)?,
                    severity: parklight_protocol::alert::Severity::Low,
                    since: row.get(7)?,
                    ts: row.get(8)?,
                    detail: row.get(9)?,
                },
                row.get(10)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, kind, severity, mut transition, recorded) = row?;
            let (Some(kind), Some(severity)) = (Kind::parse(&kind), severity_of(&severity)) else {
                continue; // written by a newer version
            };
            transition.kind = kind;
            transition.severity = severity;
            out.push(ConditionRow {
                id,
                transition,
                recorded,
            });
        }
        Ok(out)
    }

    /// The last place in the window log (0 when empty).
    pub fn window_log_end(&self) -> Result<i64, StorageError> {
        Ok(self
            .connection
            .prepare_cached("SELECT coalesce(max(seq), 0) FROM window_log")?
            .query_row([], |row| row.get(0))?)
    }

    /// Zone windows stored after `seq` in the window log (again when revised), at most
    /// `limit`, each with its place in the log.
    pub fn windows_after(
        &self,
        seq: i64,
        limit: usize,
    ) -> Result<Vec<(i64, ZoneWindow)>, StorageError> {
        let mut statement = self.connection.prepare_cached(&format!(
            "SELECT {WINDOW_COLUMNS}, seq FROM (SELECT w.*, l.seq AS seq FROM window_log l
                JOIN zone_windows w ON w.site = l.site AND w.zone = l.zone AND w.end_ms = l.end_ms
                WHERE l.seq > ?1 ORDER BY l.seq LIMIT ?2) ORDER BY seq"
        ))?;
        let rows = statement.query_map(params![seq, limit as i64], |row| {
            Ok((row.get(16)?, window_of(row)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Each zone's latest judged window, of one site or all.
    pub fn latest_windows(&self, site: Option<&str>) -> Result<Vec<ZoneWindow>, StorageError> {
        self.latest_windows_until(site, i64::MAX)
    }

    /// Each zone's latest window ending by `until` (of `site`, or of every site).
    pub fn latest_windows_until(
        &self,
        site: Option<&str>,
        until: i64,
    ) -> Result<Vec<ZoneWindow>, StorageError> {
        let mut statement = self.connection.prepare_cached(&format!(
            "SELECT {WINDOW_COLUMNS} FROM zone_windows
             WHERE (site, zone, end_ms) IN (SELECT site, zone, max(end_ms) FROM zone_windows
                WHERE end_ms <= ?2 GROUP BY site, zone) AND (?1 IS NULL OR site = ?1)
             ORDER BY site, zone"
        ))?;
        let rows = statement.query_map(params![site, until], window_of)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A zone's windows ending in `(from, to]`, in time order.
    pub fn zone_windows(
        &self,
        site: &str,
        zone: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<ZoneWindow>, StorageError> {
        self.window_rows(
            "WHERE site = ?1 AND zone = ?2 AND end_ms > ?3 AND end_ms <= ?4 ORDER BY end_ms",
            Some(site),
            Some((zone, from, to)),
        )
    }

    /// Every zone window of `site` ending in `(from, to]`, by zone, then in time order.
    pub fn site_windows(
        &self,
        site: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<ZoneWindow>, StorageError> {
        let mut statement = self.connection.prepare_cached(&format!(
            "SELECT {WINDOW_COLUMNS} FROM zone_windows
             WHERE site = ?1 AND end_ms > ?2 AND end_ms <= ?3 ORDER BY zone, end_ms"
        ))?;
        let rows = statement.query_map(params![site, from, to], window_of)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A zone's foot traffic from its windows ending in `(from, to]`, summed per quarter
    /// hour (every time zone's hours are whole quarters), in time order: what the usage
    /// heat map needs. Whole quarters come from the sums the store keeps as windows are
    /// written (`zone_quarters`), the parts of a quarter at either end from the windows,
    /// all from one snapshot of the file.
    pub fn zone_usage(
        &self,
        site: &str,
        zone: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<UsageQuarter>, StorageError> {
        let (first, last) = (
            from.saturating_add(QUARTER_MS - 1).div_euclid(QUARTER_MS),
            to.div_euclid(QUARTER_MS),
        );
        if first >= last {
            return self.zone_usage_of_windows(site, zone, from, to);
        }
        let snapshot = self.connection.unchecked_transaction()?;
        let mut quarters = self.zone_usage_of_windows(site, zone, from, first * QUARTER_MS)?;
        let mut statement = snapshot.prepare_cached(
            "SELECT quarter, detections, after_dark, occupied_dark_minutes, detections_dark
             FROM zone_quarters WHERE site = ?1 AND zone = ?2 AND quarter >= ?3 AND quarter < ?4
             ORDER BY quarter",
        )?;
        let rows = statement.query_map(params![site, zone, first, last], usage_quarter)?;
        for row in rows {
            quarters.push(row?);
        }
        quarters.extend(self.zone_usage_of_windows(site, zone, last * QUARTER_MS, to)?);
        drop(statement);
        snapshot.finish()?;
        Ok(quarters)
    }

    /// [`Store::zone_usage`] summed from the windows themselves.
    fn zone_usage_of_windows(
        &self,
        site: &str,
        zone: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<UsageQuarter>, StorageError> {
        let mut statement = self.connection.prepare_cached(&format!(
            "SELECT (end_ms - 1) / {QUARTER_MS}, SUM(detections),
                    SUM(CASE WHEN status != {not_judged} THEN detections ELSE 0 END),
                    SUM(occupied_dark_minutes), SUM(detections_dark)
             FROM zone_windows WHERE site = ?1 AND zone = ?2 AND end_ms > ?3 AND end_ms <= ?4
             GROUP BY 1 ORDER BY 1",
            not_judged = Status::NotJudged as i64
        ))?;
        let rows = statement.query_map(params![site, zone, from, to], usage_quarter)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn window_rows(
        &self,
        filter: &str,
        site: Option<&str>,
        span: Option<(&str, i64, i64)>,
    ) -> Result<Vec<ZoneWindow>, StorageError> {
        let mut statement = self.connection.prepare_cached(&format!(
            "SELECT {WINDOW_COLUMNS} FROM zone_windows {filter}"
        ))?;
        let rows = match span {
            Some((zone, from, to)) => {
                statement.query_map(params![site, zone, from, to], window_of)?
            }
            None => statement.query_map(params![site], window_of)?,
        };
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

const QUARTER_MS: i64 = 15 * 60_000;

/// A zone's foot traffic in one quarter hour, from its windows ending in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageQuarter {
    /// The quarter's end, Unix ms.
    pub end: i64,
    /// Motion detections.
    pub detections: u64,
    /// Detections in windows judged (dark outside).
    pub after_dark: u64,
    /// Minutes dark (below class) with detections.
    pub occupied_dark_minutes: u64,
    /// Detections while the zone was dark.
    pub detections_dark: u64,
}

/// A quarter's sums from the columns quarter, detections, after dark, occupied dark
/// minutes, detections in the dark.
fn usage_quarter(row: &rusqlite::Row<'_>) -> rusqlite::Result<UsageQuarter> {
    // Sums of counts stored as u32: never negative.
    let count = |i: usize| row.get::<_, i64>(i).map(|n| n.max(0) as u64);
    Ok(UsageQuarter {
        end: (row.get::<_, i64>(0)? + 1) * QUARTER_MS,
        detections: count(1)?,
        after_dark: count(2)?,
        occupied_dark_minutes: count(3)?,
        detections_dark: count(4)?,
    })
}

/// A zone window from the columns `WINDOW_COLUMNS` names, in order.
fn window_of(row: &rusqlite::Row<'_>) -> rusqlite::Result<ZoneWindow> {
    let status: i64 = row.get(4)?;
    Ok(ZoneWindow {
        site: row.get(0)?,
        zone: row.get(1)?,
        start: row.get(2)?,
        end: row.get(3)?,
        status: [
            Status::NotJudged,
            Status::Lit,
            Status::Unobserved,
            Status::Dark,
        ]
        .into_iter()
        .find(|s| *s as i64 == status)
        .unwrap_or(Status::NotJudged),
        lux_avg: row.get(5)?,
        lux_min: row.get(6)?,
        required_avg: row.get(7)?,
        required_min: row.get(8)?,
        detections: row.get(9)?,
        occupied_dark_minutes: row.get(10)?,
        detections_dark: row.get(11)?,
        valid_nodes: row.get(12)?,
        nodes: row.get(13)?,
        cause: row.get(14)?,
        revised: row.get(15)?,
    })
}

/// The severity spelled `text`.
fn severity_of(text: &str) -> Option<parklight_protocol::alert::Severity> {
    parklight_protocol::alert::Severity::ALL
        .iter()
        .copied()
        .find(|s| s.as_str() == text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ClockFix;
    use crate::store::Placement;
    use crate::store::tests::report;

    fn names(entries: &[Entry]) -> Vec<String> {
        entries
            .iter()
            .map(|e| match &e.fact {
                Fact::Report { report, .. } => format!("r{}", report.seq),
                Fact::Online { .. } => "online".into(),
                Fact::Offline { lost, .. } => if *lost { "lost" } else { "shutdown" }.into(),
                Fact::Fault { fault, raised, .. } => format!("{}:{raised}", fault.as_str()),
                Fact::Silent { .. } => "silent".into(),
                Fact::PowerLoss { .. } => "power_loss".into(),
                Fact::Replaced { .. } => "replaced".into(),
                Fact::ConfigAnswer { applied, .. } => format!("applied:{applied}"),
                Fact::ConfigLate { cfg, .. } => format!("late {cfg}"),
                Fact::Config { cfg, .. } => format!("config {cfg}"),
            })
            .collect()
    }

    #[test]
    fn the_journal_gives_reports_and_facts_in_commit_order_and_held_reports_at_their_release() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), 10).unwrap();
        let mut writer = store.write().unwrap();
        let node = writer.node("a", "p").unwrap();
        writer
            .report(node, &report(1, 1), Placement::default())
            .unwrap();
        writer.fact(node, "silent", None, None, 5).unwrap();
        let held = Placement {
            up_ms: Some(1000),
            held: true,
        };
        writer.report(node, &report(1, 2), held).unwrap();
        writer
            .report(node, &report(1, 3), Placement::default())
            .unwrap();
        writer.commit().unwrap();
        let mut writer = store.write().unwrap();
        writer
            .fact(node, "lamp_fault", None, Some(true), 6)
            .unwrap();
        let fix = ClockFix {
            seq: 4,
            ts: 1_764_093_900_000,
            up_ms: Some(4000),
        };
        assert_eq!(writer.restamp(node, 1, fix).unwrap(), 1);
        writer
            .report(node, &report(1, 4), Placement::default())
            .unwrap();
        writer.commit().unwrap();

        let (entries, end) = store.journal_after(Position::default(), 100, None).unwrap();
        assert_eq!(
            names(&entries),
            ["r1", "silent", "r3", "lamp_fault:true", "r2", "r4"],
            "r2 was held: it is judged where it was let go"
        );
        assert_eq!(end, Position { report: 4, fact: 3 });
        // Read in small steps, the same order; positions only grow.
        let mut position = Position::default();
        let mut stepped = Vec::new();
        loop {
            let (some, next) = store.journal_after(position, 1, None).unwrap();
            if next == position {
                break;
            }
            assert!(
                some.iter()
                    .all(|e| e.position >= position && e.position <= next)
            );
            stepped.extend(some);
            position = next;
        }
        assert_eq!(names(&stepped), names(&entries));
        // Up to a bound: nothing past it.
        let bound = entries[2].position;
        let (upto, at) = store
            .journal_after(Position::default(), 100, Some(bound))
            .unwrap();
        assert_eq!(names(&upto), ["r1", "silent", "r3"]);
        assert_eq!(at, bound);
    }

    #[test]
    fn transitions_and_windows_are_stored_with_the_cursor_and_read_back() {
        use crate::detect::{Kind, Output, Status, Transition, ZoneWindow};
        use parklight_protocol::alert::Severity;
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), 10).unwrap();
        let transition = |active, ts| Transition {
            kind: Kind::DarkZone,
            site: "p".into(),
            zone: Some("path".into()),
            node: None,
            active,
            severity: Severity::High,
            since: 1000,
            ts,
            detail: "dark".into(),
        };
        let window = ZoneWindow {
            site: "p".into(),
            zone: "path".into(),
            start: 0,
            end: 300_000,
            status: Status::Dark,
            lux_avg: Some(2.5),
            lux_min: None,
            required_avg: 5.0,
            required_min: 1.0,
            detections: 3,
            occupied_dark_minutes: 2,
            detections_dark: 3,
            valid_nodes: 1,
            nodes: 2,
            cause: Some("offline: b".into()),
            revised: false,
        };
        let at = Position { report: 7, fact: 2 };
        let outputs = [
            Output::Transition(transition(true, 2000)),
            Output::Window(window.clone()),
        ];
        store.record_detection(&outputs, at, 99).unwrap();
        assert_eq!(store.detected().unwrap(), at);
        assert_eq!(
            store.active_conditions().unwrap()[0].transition,
            transition(true, 2000)
        );
        assert_eq!(
            store.latest_windows(Some("p")).unwrap(),
            std::slice::from_ref(&window)
        );
        assert_eq!(
            store.zone_windows("p", "path", 0, 300_000).unwrap(),
            [window]
        );
        store
            .record_detection(&[Output::Transition(transition(false, 3000))], at, 100)
            .unwrap();
        assert!(store.active_conditions().unwrap().is_empty());
        assert_eq!(store.conditions_since(2500).unwrap().len(), 1);
        assert_eq!(store.conditions_since(0).unwrap().len(), 2);
    }

    #[test]
    fn the_quarters_kept_with_the_windows_sum_as_the_windows_do_through_revisions() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), 10).unwrap();
        let window = |minute: i64, detections: u32, status: Status| {
            Output::Window(ZoneWindow {
                site: "p".into(),
                zone: "path".into(),
                start: (minute - 1) * 60_000,
                end: minute * 60_000,
                status,
                lux_avg: Some(2.5),
                lux_min: None,
                required_avg: 5.0,
                required_min: 1.0,
                detections,
                occupied_dark_minutes: detections.min(1),
                detections_dark: if status == Status::Dark {
                    detections
                } else {
                    0
                },
                valid_nodes: 1,
                nodes: 1,
                cause: None,
                revised: false,
            })
        };
        // Two hours of minute windows, judged after the first quarter, some dark.
        let status = |minute: i64| match minute {
            ..=15 => Status::NotJudged,
            m if m % 5 == 0 => Status::Dark,
            _ => Status::Lit,
        };
        let outputs: Vec<Output> = (1..=120)
            .map(|m| window(m, (m % 7) as u32, status(m)))
            .collect();
        store
            .record_detection(&outputs, Position { report: 1, fact: 0 }, 1)
            .unwrap();
        // Revised: written again with other figures.
        let revised: Vec<Output> = (10..=50).map(|m| window(m, 9, Status::Dark)).collect();
        store
            .record_detection(&revised, Position { report: 2, fact: 0 }, 2)
            .unwrap();
        let ends = [
            0, 1, 59_999, 900_000, 1_000_000, 1_800_000, 3_600_000, 7_200_000,
        ];
        for from in ends {
            for to in ends
                .iter()
                .chain(&[7_300_000, 1_799_999])
                .filter(|to| **to > from)
            {
                assert_eq!(
                    store.zone_usage("p", "path", from, *to).unwrap(),
                    store.zone_usage_of_windows("p", "path", from, *to).unwrap(),
                    "{from} {to}"
                );
            }
        }
        let hours = store.zone_usage("p", "path", 0, 7_200_000).unwrap();
        assert_eq!(hours.len(), 8);
        assert_eq!(
            hours[1].detections_dark,
            9 * 15,
            "minutes 16 to 30, revised dark"
        );
        // A store from before the sums were kept gets them from its windows.
        drop(store);
        let connection = rusqlite::Connection::open(dir.path().join(super::super::DB_FILE));
        let version = super::super::schema::MIGRATIONS.len() - 1;
        connection
            .unwrap()
            .execute_batch(&format!(
                "DROP TABLE zone_quarters; DROP TRIGGER zone_quarters_take_out;
                 DROP TRIGGER zone_quarters_put_in; PRAGMA user_version = {version};"
            ))
            .unwrap();
        let store = Store::open(dir.path(), 10).unwrap();
        assert_eq!(store.zone_usage("p", "path", 0, 7_200_000).unwrap(), hours);
    }

    #[test]
    fn retention_keeps_the_rows_after_the_detectors_kept_state() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), 10).unwrap();
        let mut writer = store.write().unwrap();
        let node = writer.node("a", "p").unwrap();
        for seq in 1..=20 {
            writer
                .report(node, &report(1, seq), Placement::default())
                .unwrap();
        }
        writer.commit().unwrap();
        store
            .save_detector_state(Position { report: 5, fact: 0 }, "{}")
            .unwrap();
        store.compact(i64::MAX, &|| false).unwrap();
        store.retain(i64::MAX, None, &|| false).unwrap();
        let (entries, _) = store
            .journal_after(Position { report: 5, fact: 0 }, 100, None)
            .unwrap();
        assert_eq!(
            entries.len(),
            15,
            "every report after the kept state is still there"
        );
    }
}
