//! History: closed hours folded into compressed column blocks, raw rows dropped after
//! the retention, and series and latest-state queries that read blocks and raw rows
//! alike.
//!
//! Raw reports carry no time index: it cost more than half of ingest (measured). Raw
//! rows are read in arrival order instead, from the [`FOLDED`] cursor on: every report
//! with an id up to it is in its block, so the raw rows a query or a compaction needs
//! are the recent tail (about the last hour), whatever the retention.

use std::collections::{BTreeMap, HashMap, HashSet};

use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::{Forwarded, REPORT_COLUMNS, ReportRow, StorageError, Store, blocks, report_from};

/// Milliseconds in an hour: the span of one block.
pub const HOUR_MS: i64 = 3_600_000;

/// The compaction cursor: every report with an id up to it is in its block.
pub const FOLDED: &str = "folded";

/// Raw rows a compaction reads per round, to bound its memory.
const ROUND_ROWS: i64 = 500_000;

/// Raw rows removed per transaction, so the writer never waits long.
const DELETE_ROWS: i64 = 10_000;

/// What to read a series of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selector<'a> {
    /// One node.
    Node(&'a str),
    /// Every node's reports made in a zone of a site.
    Zone {
        /// The site.
        site: &'a str,
        /// The zone.
        zone: &'a str,
    },
}

/// One step of a series.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    /// Start of the step, Unix ms.
    pub start: i64,
    /// Reports in the step.
    pub reports: u32,
    /// Lowest lux.
    pub lux_min: Option<f64>,
    /// Mean of the reports' average lux.
    pub lux_avg: Option<f64>,
    /// Highest lux.
    pub lux_max: Option<f64>,
    /// Motion detections, summed.
    pub motion: u64,
    /// Mean lamp level.
    pub lamp_level: Option<f64>,
}

/// What a compaction did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Compaction {
    /// Blocks written.
    pub blocks: u64,
    /// Reports folded in.
    pub reports: u64,
}

/// A node's latest report, with the node's names.
#[derive(Debug, Clone, PartialEq)]
pub struct LatestReport {
    /// Node id.
    pub node: String,
    /// Site, for known nodes.
    pub site: Option<String>,
    /// The report with the latest time.
    pub report: ReportRow,
}

/// SQL: the raw rows `r` no block holds yet (`?1` is [`HOUR_MS`]).
const UNFOLDED: &str = "LEFT JOIN hour_blocks b ON b.node = r.node AND b.hour = (r.ts / ?1) * ?1
    AND b.zone = coalesce(r.zone, '') WHERE r.id > coalesce(b.max_id, 0)";

/// A block's zone as its reports carry it: `''` (no zone) is none.
fn block_zone(zone: &str) -> Option<&str> {
    (!zone.is_empty()).then_some(zone)
}

/// The block (hour) a report time falls in, as SQLite's integer division computes it.
fn hour_of(ts: i64) -> i64 {
    ts / HOUR_MS * HOUR_MS
}

impl Store {
    /// Folds every hour that ends before `closed_before` (Unix ms) into its node's block,
    /// one short transaction per block, so ingest is never held up for long. Reports that
    /// arrive late for a folded hour are folded in next time. A report held for its boot's
    /// clock waits, and so does every later report of its node: a block takes its reports
    /// in arrival order (its `max_id` says which it holds), and a held report may yet
    /// move into any hour. `stop` ends it early, between blocks.
    pub fn compact(
        &mut self,
        closed_before: i64,
        stop: &dyn Fn() -> bool,
    ) -> Result<Compaction, StorageError> {
        self.compact_in_rounds(closed_before, stop, ROUND_ROWS)
    }

    /// [`Store::compact`], reading at most `round_rows` raw rows at a time.
    fn compact_in_rounds(
        &mut self,
        closed_before: i64,
        stop: &dyn Fn() -> bool,
        round_rows: i64,
    ) -> Result<Compaction, StorageError> {
        let boundary = hour_of(closed_before);
        let mut scanned = self.cursor(FOLDED)?;
        // The first raw row that must stay raw: the cursor stops before it.
        let mut first_open: Option<i64> = None;
        let mut waiting_nodes: HashSet<i64> = HashSet::new();
        let mut done = Compaction::default();
        loop {
            let mut closed: BTreeMap<(i64, i64, String), Vec<i64>> = BTreeMap::new();
            let mut read = 0;
            {
                let mut statement = self.connection.prepare_cached(
                    "SELECT id, node, ts, coalesce(zone, ''), held FROM reports NOT INDEXED
                     WHERE id > ?1 ORDER BY id LIMIT ?2",
                )?;
                let mut rows = statement.query(params![scanned, round_rows])?;
                while let Some(row) = rows.next()? {
                    let (id, node, ts): (i64, i64, i64) = (row.get(0)?, row.get(1)?, row.get(2)?);
                    read += 1;
                    scanned = id;
                    if row.get::<_, bool>(4)? {
                        waiting_nodes.insert(node);
                    }
                    if ts < boundary && !waiting_nodes.contains(&node) {
                        closed
                            .entry((node, hour_of(ts), row.get(3)?))
                            .or_default()
                            .push(id);
                    } else {
                        first_open.get_or_insert(id);
                    }
                }
            }
            for ((node, hour, zone), ids) in closed {
                if stop() {
                    break;
                }
                let folded = self.fold(node, hour, &zone, &ids)?;
                if folded > 0 {
                    done.blocks += 1;
                    done.reports += folded;
                }
            }
            if stop() {
                // Not saved: the blocks folded so far are skipped next time (by max_id).
                return Ok(done);
            }
            // Saved every round, so a long catch-up (a store from before the cursor) is
            // not done again after a restart, and queries read less raw as it goes.
            self.set_cursor(FOLDED, first_open.map_or(scanned, |id| id - 1))?;
            if read < round_rows {
                break;
            }
        }
        Ok(done)
    }

    /// Folds the raw rows `ids` (of one node, hour and zone) into their block, in one
    /// transaction; rows the block already holds are skipped. Returns how many it added.
    fn fold(&mut self, node: i64, hour: i64, zone: &str, ids: &[i64]) -> Result<u64, StorageError> {
        // Immediate, in its turn: it reads, then writes; a deferred transaction would fail
        // to write (SQLITE_BUSY_SNAPSHOT, which no busy timeout retries) whenever the
        // writer committed in between.
        let _turn = self.turns.take();
        let tx = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let existing: Option<(i64, Vec<u8>)> = tx
            .query_row(
                "SELECT max_id, columns FROM hour_blocks WHERE node = ?1 AND hour = ?2 AND zone = ?3",
                params![node, hour, zone],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        let (mut max_id, mut rows) = match existing {
            Some((max_id, columns)) => (max_id, blocks::decode(&columns, block_zone(zone))?),
            None => (0, Vec::new()),
        };
        let fresh: Vec<i64> = ids.iter().copied().filter(|id| *id > max_id).collect();
        if fresh.is_empty() {
            return Ok(0);
        }
        let mut held: HashSet<(u32, u32)> = rows.iter().map(|r| (r.boot, r.seq)).collect();
        {
            let mut statement = tx.prepare_cached(&format!(
                "SELECT {REPORT_COLUMNS} FROM reports r WHERE r.id = ?1"
            ))?;
            for id in &fresh {
                let row = statement.query_row([id], |row| report_from(row, 0))?;
                // A report stored again after its raw row was retained is in the block once.
                if held.insert((row.boot, row.seq)) {
                    rows.push(row);
                }
                max_id = max_id.max(*id);
            }
        }
        rows.sort_by_key(|r| (r.ts, r.boot, r.seq));
        tx.execute(
            "INSERT INTO hour_blocks (node, hour, zone, count, max_id, columns) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (node, hour, zone) DO UPDATE SET count = excluded.count, max_id = excluded.max_id,
                columns = excluded.columns",
            params![node, hour, zone, rows.len() as i64, max_id, blocks::encode(&rows)?],
        )?;
        tx.commit()?;
        Ok(fresh.len() as u64)
    }

    /// Drops raw reports that arrived before `before` (Unix ms), oldest first, once a
    /// block holds them, the forwarder (when one runs) has sent them and the detectors'
    /// kept state is past them; statuses it has sent, events and the detectors' facts
    /// received before it too, and the zone windows it has sent (all of them when none
    /// runs) from the window log; alert changes every receiver has taken, answered crew
    /// requests and silences that ended before it (alerts and their history stay). The newest report always stays, so ids
    /// keep growing, and so does each node's latest status, so its presence is known
    /// after a restart. A report resent after its raw row went is still known as a
    /// duplicate: its boot's acknowledgement watermark covers it; a report past a gap
    /// of its boot, which the watermark does not cover, stays until the gap closes.
    pub fn retain(
        &mut self,
        before: i64,
        forwarded: Option<Forwarded>,
        stop: &dyn Fn() -> bool,
    ) -> Result<u64, StorageError> {
        let forwarded = forwarded.unwrap_or(Forwarded {
            reports: i64::MAX,
            statuses: i64::MAX,
            windows: i64::MAX,
        });
        let sent_later: Option<i64> =
            self.connection
                .query_row("SELECT min(id) FROM forward_later", [], |row| row.get(0))?;
        // Once detection has run, rows after its kept state stay: a restart replays them.
        let detected = self.detector_state()?.map(|(position, _)| position);
        let limit = self
            .cursor(FOLDED)?
            .min(forwarded.reports)
            .min(detected.map_or(i64::MAX, |p| p.report))
            .min(sent_later.map_or(i64::MAX, |id| id - 1))
            .min(self.last_report_id()? - 1);
        // Rows go in arrival order, up to the first one that arrived after `before`.
        let stop_at: i64 = self
            .connection
            .query_row(
                "SELECT id FROM reports NOT INDEXED WHERE id <= ?1 AND received >= ?2 ORDER BY id LIMIT 1",
                params![limit, before],
                |row| row.get(0),
            )
            .optional()?
            .unwrap_or(limit.saturating_add(1));
        let mut removed = 0;
        let mut lowest: i64 =
            self.connection
                .query_row("SELECT coalesce(min(id), 0) FROM reports", [], |row| {
                    row.get(0)
                })?;
        while lowest < stop_at && !stop() {
            let below = lowest.saturating_add(DELETE_ROWS).min(stop_at);
            let _turn = self.turns.take();
            // Not a report past a gap of its boot: until the gap closes, its row is how
            // a resent copy is known for a duplicate (the watermark stops below it).
            removed += self.connection.execute(
                "DELETE FROM reports WHERE id < ?1 AND NOT EXISTS (
                    SELECT 1 FROM boots b WHERE b.node = reports.node AND b.boot = reports.boot
                        AND reports.seq > coalesce(b.acked, b.from_seq - 1))",
                [below],
            )? as u64;
            lowest = below;
        }
        let _turn = self.turns.take();
        let tx = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Each node's latest status stays: the newest connection's last word.
        tx.execute(
            "DELETE FROM statuses WHERE received < ?1 AND id <= ?2 AND id NOT IN (
                SELECT s.id FROM statuses s WHERE NOT EXISTS (
                    SELECT 1 FROM statuses t WHERE t.node = s.node
                        AND (t.boot, t.conn, NOT t.online, t.id) > (s.boot, s.conn, NOT s.online, s.id)))",
            params![before, forwarded.statuses],
        )?;
        tx.execute("DELETE FROM events WHERE received < ?1", [before])?;
        tx.execute(
            "DELETE FROM window_log WHERE seq <= ?1",
            [forwarded.windows],
        )?;
        // Alert changes every reader has taken (the alerts and their history stay);
        // answered requests and silences that ended before the horizon.
        tx.execute(
            "DELETE FROM alert_outbox WHERE seq <= (SELECT coalesce(min(position), 0)
                FROM cursors WHERE name LIKE 'alerts.%' OR name = 'influxdb_alerts')",
            [],
        )?;
        tx.execute(
            "DELETE FROM alert_requests WHERE answered IS NOT NULL AND answered < ?1",
            [before],
        )?;
        tx.execute("DELETE FROM silences WHERE until_ms < ?1", [before])?;
        tx.execute(
            "DELETE FROM facts WHERE received < ?1 AND id <= ?2",
            params![before, detected.map_or(i64::MAX, |p| p.fact)],
        )?;
        tx.commit()?;
        Ok(removed)
    }

    /// Reports of `selector` made in `[from, to)`, from blocks and raw rows alike.
    pub fn reports_between(
        &self,
        selector: Selector<'_>,
        from: i64,
        to: i64,
    ) -> Result<Vec<ReportRow>, StorageError> {
        let (block_column, raw_column, name, site) = match selector {
            Selector::Node(node) => ("n.name", "n.name", node, None),
            Selector::Zone { site, zone } => ("b.zone", "r.zone", zone, Some(site)),
        };
        let mut rows = Vec::new();
        let mut statement = self.connection.prepare_cached(&format!(
            "SELECT b.zone, b.columns FROM hour_blocks b JOIN nodes n ON n.id = b.node
             WHERE {block_column} = ?1 AND b.hour >= (?2 / ?4) * ?4 AND b.hour < ?3
               AND (?5 IS NULL OR n.site = ?5)"
        ))?;
        let blocks: Vec<(String, Vec<u8>)> = statement
            .query_map(params![name, from, to, HOUR_MS, site], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })?
            .collect::<Result<_, _>>()?;
        for (zone, columns) in blocks {
            rows.extend(
                blocks::decode(&columns, block_zone(&zone))?
                    .into_iter()
                    .filter(|r| (from..to).contains(&r.ts)),
            );
        }
        // The raw tail, by arrival: rows a block already holds are counted there.
        let mut statement = self.connection.prepare_cached(&format!(
            "SELECT {REPORT_COLUMNS} FROM reports r NOT INDEXED JOIN nodes n ON n.id = r.node
             LEFT JOIN hour_blocks b ON b.node = r.node AND b.hour = (r.ts / ?4) * ?4 AND b.zone = coalesce(r.zone, '')
             WHERE r.id > ?5 AND {raw_column} = ?1 AND r.ts >= ?2 AND r.ts < ?3 AND r.id > coalesce(b.max_id, 0)
               AND (?6 IS NULL OR n.site = ?6)"
        ))?;
        let raw = statement.query_map(
            params![name, from, to, HOUR_MS, self.cursor(FOLDED)?, site],
            |row| report_from(row, 0),
        )?;
        for row in raw {
            rows.push(row?);
        }
        Ok(rows)
    }

    /// A series of `selector` in `[from, to)` at `step_ms`: min/avg/max lux, summed
    /// motion, mean lamp level. Steps without reports are left out.
    pub fn series(
        &self,
        selector: Selector<'_>,
        from: i64,
        to: i64,
        step_ms: i64,
    ) -> Result<Vec<Bucket>, StorageError> {
        let step = step_ms.max(1);
        let mut buckets: BTreeMap<i64, (Bucket, f64, u32, f64)> = BTreeMap::new();
        for r in self.reports_between(selector, from, to)? {
            let start = from + (r.ts - from) / step * step;
            let (bucket, lux_sum, lux_count, level_sum) =
                buckets.entry(start).or_insert_with(|| {
                    (
                        Bucket {
                            start,
                            reports: 0,
                            lux_min: None,
                            lux_avg: None,
                            lux_max: None,
                            motion: 0,
                            lamp_level: None,
                        },
                        0.0,
                        0,
                        0.0,
                    )
                });
            bucket.reports += 1;
            bucket.motion += u64::from(r.motion);
            *level_sum += f64::from(r.lamp_level);
            if let Some(lux) = r.lux {
                bucket.lux_min = Some(bucket.lux_min.map_or(lux.min, |m| m.min(lux.min)));
                bucket.lux_max = Some(bucket.lux_max.map_or(lux.max, |m| m.max(lux.max)));
                *lux_sum += lux.avg;
                *lux_count += 1;
            }
        }
        Ok(buckets
            .into_values()
            .map(|(mut bucket, lux_sum, lux_count, level_sum)| {
                bucket.lux_avg = (lux_count > 0).then(|| lux_sum / f64::from(lux_count));
                bucket.lamp_level = Some(level_sum / f64::from(bucket.reports));
                bucket
            })
            .collect())
    }

    /// Each node's latest report (by its time), ordered by node: from the raw tail, and
    /// from the node's latest block where that could hold a later one.
    pub fn latest_per_node(&self) -> Result<Vec<LatestReport>, StorageError> {
        let mut latest: HashMap<i64, ReportRow> = HashMap::new();
        let mut statement = self.connection.prepare_cached(&format!(
            "SELECT r.node, {REPORT_COLUMNS} FROM reports r NOT INDEXED WHERE r.id > ?1"
        ))?;
        let mut rows = statement.query([self.cursor(FOLDED)?])?;
        while let Some(row) = rows.next()? {
            let (node, report): (i64, ReportRow) = (row.get(0)?, report_from(row, 1)?);
            if latest.get(&node).is_none_or(|seen| report.ts >= seen.ts) {
                latest.insert(node, report);
            }
        }
        let nodes: Vec<(i64, String, Option<String>)> = {
            let mut statement = self
                .connection
                .prepare_cached("SELECT id, name, site FROM nodes ORDER BY name")?;
            statement
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
                .collect::<Result<_, _>>()?
        };
        let mut last_hour = self
            .connection
            .prepare_cached("SELECT max(hour) FROM hour_blocks WHERE node = ?1")?;
        let mut blocks_of_hour = self.connection.prepare_cached(
            "SELECT zone, columns FROM hour_blocks WHERE node = ?1 AND hour = ?2",
        )?;
        let mut all = Vec::new();
        for (id, node, site) in nodes {
            let mut best = latest.remove(&id);
            let hour: Option<i64> = last_hour.query_row([id], |row| row.get(0))?;
            if let Some(hour) = hour.filter(|h| best.as_ref().is_none_or(|b| b.ts < h + HOUR_MS)) {
                let blocks: Vec<(String, Vec<u8>)> = blocks_of_hour
                    .query_map(params![id, hour], |row| Ok((row.get(0)?, row.get(1)?)))?
                    .collect::<Result<_, _>>()?;
                for (zone, columns) in blocks {
                    for report in blocks::decode(&columns, block_zone(&zone))? {
                        if best.as_ref().is_none_or(|b| report.ts > b.ts) {
                            best = Some(report);
                        }
                    }
                }
            }
            if let Some(report) = best {
                all.push(LatestReport { node, site, report });
            }
        }
        Ok(all)
    }

    /// The identity of every report, `(node, boot, seq)`, in that order: from blocks and
    /// raw rows alike.
    pub fn report_ids(&self) -> Result<Vec<(String, u32, u32)>, StorageError> {
        let mut ids = Vec::new();
        let mut statement = self.connection.prepare(
            "SELECT n.name, b.zone, b.columns FROM hour_blocks b JOIN nodes n ON n.id = b.node",
        )?;
        let mut blocks = statement.query([])?;
        while let Some(block) = blocks.next()? {
            let (node, zone, columns): (String, String, Vec<u8>) =
                (block.get(0)?, block.get(1)?, block.get(2)?);
            for report in blocks::decode(&columns, block_zone(&zone))? {
                ids.push((node.clone(), report.boot, report.seq));
            }
        }
        let mut statement = self.connection.prepare(&format!(
            "SELECT n.name, r.boot, r.seq FROM reports r JOIN nodes n ON n.id = r.node {UNFOLDED}"
        ))?;
        let raw =
            statement.query_map([HOUR_MS], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
        for id in raw {
            ids.push(id?);
        }
        ids.sort_unstable();
        Ok(ids)
    }

    /// Reports stored, in blocks and raw rows alike.
    pub fn report_count(&self) -> Result<u64, StorageError> {
        let count: i64 = self.connection.query_row(
            &format!(
                "SELECT (SELECT coalesce(sum(count), 0) FROM hour_blocks)
                    + (SELECT count(*) FROM reports r {UNFOLDED})"
            ),
            [HOUR_MS],
            |row| row.get(0),
        )?;
        Ok(count as u64)
    }

    /// Raw report rows (folded into blocks or not).
    pub fn raw_report_count(&self) -> Result<u64, StorageError> {
        let count: i64 = self
            .connection
            .query_row("SELECT count(*) FROM reports", [], |row| row.get(0))?;
        Ok(count as u64)
    }

    /// Bytes of compressed columns in all blocks.
    pub fn block_bytes(&self) -> Result<u64, StorageError> {
        let bytes: i64 = self.connection.query_row(
            "SELECT coalesce(sum(length(columns)), 0) FROM hour_blocks",
            [],
            |row| row.get(0),
        )?;
        Ok(bytes as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::report;

    fn store_hours(store: &mut Store, node: &str, hours: i64, from_seq: u32) {
        let mut writer = store.write().unwrap();
        let id = writer.node(node, "remiseparken").unwrap();
        for i in 0..(hours * 60) as u32 {
            let mut row = report(1, from_seq + i);
            row.ts = 1_764_093_600_000 + i64::from(from_seq + i) * 60_000;
            row.motion = 1;
            writer.report(id, &row, Default::default()).unwrap();
        }
        writer.commit().unwrap();
    }

    #[test]
    fn compaction_keeps_every_report_and_series_read_blocks_and_rows_alike() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), 10).unwrap();
        store_hours(&mut store, "pole-017", 3, 0);
        let (from, to) = (1_764_093_600_000, 1_764_093_600_000 + 3 * HOUR_MS);
        let before = store
            .series(Selector::Node("pole-017"), from, to, HOUR_MS)
            .unwrap();
        let sorted = |mut rows: Vec<ReportRow>| {
            rows.sort_by_key(|r| (r.boot, r.seq));
            rows
        };
        let raw = sorted(
            store
                .reports_between(Selector::Node("pole-017"), from, to)
                .unwrap(),
        );
        assert_eq!(raw.len(), 180);
        assert_eq!(
            before.iter().map(|b| b.reports).collect::<Vec<_>>(),
            [60, 60, 60]
        );
        // Close the first two hours.
        let done = store.compact(from + 2 * HOUR_MS, &|| false).unwrap();
        assert_eq!(
            done,
            Compaction {
                blocks: 2,
                reports: 120
            }
        );
        assert_eq!(
            store.compact(from + 2 * HOUR_MS, &|| false).unwrap(),
            Compaction::default(),
            "nothing new"
        );
        assert_eq!(
            store
                .series(Selector::Node("pole-017"), from, to, HOUR_MS)
                .unwrap(),
            before
        );
        assert_eq!(
            store
                .series(
                    Selector::Zone {
                        site: "remiseparken",
                        zone: "skatepark"
                    },
                    from,
                    to,
                    HOUR_MS
                )
                .unwrap(),
            before
        );
        // Every field of every report, as the blocks give it back.
        for selector in [
            Selector::Node("pole-017"),
            Selector::Zone {
                site: "remiseparken",
                zone: "skatepark",
            },
        ] {
            let read = sorted(store.reports_between(selector, from, to).unwrap());
            assert_eq!(read, raw, "{selector:?}");
        }
        // Raw rows past the retention go; the blocks keep the history.
        assert_eq!(
            store.retain(from + 2 * HOUR_MS, None, &|| false).unwrap(),
            120
        );
        assert_eq!(store.raw_report_count().unwrap(), 60);
        assert_eq!(
            store
                .series(Selector::Node("pole-017"), from, to, HOUR_MS)
                .unwrap(),
            before
        );
        // A late report for a folded hour counts at once, and is folded in next time.
        let mut writer = store.write().unwrap();
        let id = writer.node("pole-017", "remiseparken").unwrap();
        let mut late = report(2, 0);
        late.ts = from + 10 * 60_000;
        late.motion = 5;
        writer.report(id, &late, Default::default()).unwrap();
        writer.commit().unwrap();
        let with_late = store
            .series(Selector::Node("pole-017"), from, to, HOUR_MS)
            .unwrap();
        assert_eq!((with_late[0].reports, with_late[0].motion), (61, 65));
        assert_eq!(
            store
                .compact(from + 2 * HOUR_MS, &|| false)
                .unwrap()
                .reports,
            1
        );
        assert_eq!(
            store
                .series(Selector::Node("pole-017"), from, to, HOUR_MS)
                .unwrap(),
            with_late
        );
        // The late report arrived last but is not the latest.
        let latest = store.latest_per_node().unwrap();
        assert_eq!((latest.len(), latest[0].report.seq), (1, 179));
    }

    #[test]
    fn retention_keeps_what_the_forwarder_has_not_sent() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), 10).unwrap();
        store_hours(&mut store, "pole-017", 2, 0);
        let from = 1_764_093_600_000;
        let mut writer = store.write().unwrap();
        let id = writer.node("pole-017", "remiseparken").unwrap();
        let lost = parklight_protocol::Status::Offline(parklight_protocol::status::Offline {
            reason: parklight_protocol::status::OfflineReason::Lost,
            boot: 1,
            conn: 2,
        });
        writer.status(id, from, &lost, b"{}", false).unwrap();
        writer.commit().unwrap();
        let statuses = store.statuses_after(0, 10).unwrap();
        assert_eq!(statuses.len(), 1);
        assert_eq!(
            (
                statuses[0].online,
                statuses[0].reason.as_deref(),
                statuses[0].conn
            ),
            (false, Some("lost"), 2)
        );
        store.compact(from + 2 * HOUR_MS, &|| false).unwrap();
        let unsent = Forwarded {
            reports: 30,
            statuses: 0,
            windows: 0,
        };
        assert_eq!(
            store
                .retain(from + 2 * HOUR_MS, Some(unsent), &|| false)
                .unwrap(),
            30
        );
        assert_eq!(store.statuses_after(0, 10).unwrap().len(), 1);
        let sent = Forwarded {
            reports: i64::MAX,
            statuses: statuses[0].id,
            windows: 0,
        };
        // All but the newest: ids must keep growing for the cursors.
        assert_eq!(
            store
                .retain(from + 2 * HOUR_MS, Some(sent), &|| false)
                .unwrap(),
            89
        );
        // The node's latest status stays too: its presence after a restart.
        assert_eq!(store.statuses_after(0, 10).unwrap().len(), 1);
        let mut writer = store.write().unwrap();
        let online = parklight_protocol::Status::Online(parklight_protocol::status::Birth {
            boot: 2,
            conn: 1,
            fw: None,
            interval_s: None,
            cfg: None,
            oldest: parklight_protocol::ReportId { boot: 2, seq: 0 },
            buffered: None,
            dropped: None,
        });
        writer.status(id, from, &online, b"{}", false).unwrap();
        // The will of an older connection, late: a higher row id, but not the latest word.
        writer.status(id, from, &lost, b"{}", false).unwrap();
        writer.commit().unwrap();
        let everything = Forwarded {
            reports: i64::MAX,
            statuses: i64::MAX,
            windows: i64::MAX,
        };
        store
            .retain(from + 2 * HOUR_MS, Some(everything), &|| false)
            .unwrap();
        let kept = store.statuses_after(0, 10).unwrap();
        assert_eq!((kept.len(), kept[0].online), (1, true));
    }

    #[test]
    fn compaction_moves_its_cursor_to_the_first_open_hour_and_rounds_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), 10).unwrap();
        let other_dir = tempfile::tempdir().unwrap();
        let mut other = Store::open(other_dir.path(), 10).unwrap();
        for store in [&mut store, &mut other] {
            store_hours(store, "pole-017", 3, 0);
            store_hours(store, "pole-018", 3, 0);
        }
        let (from, to) = (1_764_093_600_000, 1_764_093_600_000 + 3 * HOUR_MS);
        let whole = store.compact(from + 2 * HOUR_MS, &|| false).unwrap();
        let in_rounds = other
            .compact_in_rounds(from + 2 * HOUR_MS, &|| false, 7)
            .unwrap();
        assert_eq!(whole.reports, 240);
        assert_eq!(in_rounds.reports, whole.reports);
        // pole-017's rows are ids 1-180, its third hour starts at 121.
        assert_eq!(store.cursor(FOLDED).unwrap(), 120);
        assert_eq!(other.cursor(FOLDED).unwrap(), 120);
        for selector in [
            Selector::Node("pole-018"),
            Selector::Zone {
                site: "remiseparken",
                zone: "skatepark",
            },
        ] {
            let series = store.series(selector, from, to, HOUR_MS).unwrap();
            assert_eq!(other.series(selector, from, to, HOUR_MS).unwrap(), series);
            let expected = if matches!(selector, Selector::Zone { .. }) {
                120
            } else {
                60
            };
            assert_eq!(
                series.iter().map(|b| b.reports).collect::<Vec<_>>(),
                [expected; 3]
            );
        }
    }

    #[test]
    fn ids_keep_growing_when_retention_empties_the_raw_table() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), 10).unwrap();
        store_hours(&mut store, "pole-017", 200, 0);
        let far = i64::MAX / 4;
        store.compact(far, &|| false).unwrap();
        // More rows than one delete takes.
        assert_eq!(store.retain(far, None, &|| false).unwrap(), 11_999);
        let last = store.last_report_id().unwrap();
        assert_eq!(last, 12_000);
        store_hours(&mut store, "pole-017", 1, 20_000);
        let after = store.reports_after(last, 100).unwrap();
        assert_eq!(after.len(), 60, "the forwarder sees every new report");
        assert!(after.iter().all(|r| r.id > last));
        let from = 1_764_093_600_000;
        let series = store
            .series(
                Selector::Node("pole-017"),
                from,
                from + 200 * HOUR_MS,
                200 * HOUR_MS,
            )
            .unwrap();
        assert_eq!(series[0].reports, 12_000, "the blocks hold the history");
    }

    #[test]
    fn retention_goes_by_arrival() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), 10).unwrap();
        let mut writer = store.write().unwrap();
        let id = writer.node("pole-017", "remiseparken").unwrap();
        for seq in 0..10 {
            let mut row = report(1, seq);
            // Made long ago, the last five arrived only now.
            row.received = if seq < 5 { 1_000 } else { 9_000 };
            writer.report(id, &row, Default::default()).unwrap();
        }
        writer.commit().unwrap();
        store.compact(i64::MAX / 4, &|| false).unwrap();
        assert_eq!(store.retain(5_000, None, &|| false).unwrap(), 5);
        assert_eq!(store.raw_report_count().unwrap(), 5);
    }

    /// A store file in `dir` as parklight left it at schema `version`.
    fn store_of_version(dir: &std::path::Path, version: usize) -> rusqlite::Connection {
        let connection = rusqlite::Connection::open(dir.join(super::super::DB_FILE)).unwrap();
        for migration in &super::super::schema::MIGRATIONS[..version] {
            connection.execute_batch(migration).unwrap();
        }
        connection
            .pragma_update(None, "user_version", version as i64)
            .unwrap();
        connection
    }

    #[test]
    fn a_store_of_version_2_is_upgraded_and_keeps_its_reports() {
        let dir = tempfile::tempdir().unwrap();
        {
            let connection = store_of_version(dir.path(), 2);
            connection
                .execute_batch(
                    "INSERT INTO nodes (name) VALUES ('pole-017');
                     WITH RECURSIVE s(seq) AS (SELECT 0 UNION ALL SELECT seq + 1 FROM s WHERE seq < 59)
                     INSERT INTO reports (node, boot, seq, ts, clock_ok, received, period_s, motion,
                         lamp_on, lamp_level, faults)
                     SELECT 1, 1, seq, 1764093600000 + seq * 60000, 1, 1764093600500, 60, 1, 1, 80, 0 FROM s;",
                )
                .unwrap();
        }
        let mut store = Store::open(dir.path(), 10).unwrap();
        let indexes: Vec<String> = store
            .connection
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND name NOT LIKE 'sqlite_%' ORDER BY name")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            indexes,
            [
                "alert_requests_open",
                "alerts_by_state",
                "conditions_by_time",
                "control_audit_by_site",
                "dead_letters_by_report",
                "hour_blocks_by_zone",
                "reports_held",
                "reports_released",
                "statuses_by_node"
            ]
        );
        assert_eq!(store.raw_report_count().unwrap(), 60);
        let from = 1_764_093_600_000;
        assert_eq!(
            store.compact(from + HOUR_MS, &|| false).unwrap().reports,
            60
        );
        let series = store
            .series(Selector::Node("pole-017"), from, from + HOUR_MS, HOUR_MS)
            .unwrap();
        assert_eq!((series[0].reports, series[0].motion), (60, 60));
    }

    #[test]
    fn a_store_of_version_3_knows_the_highest_seq_of_each_boot() {
        let dir = tempfile::tempdir().unwrap();
        {
            let connection = store_of_version(dir.path(), 3);
            // Boot 6: reports 0, 1, 4 and 5 stored, acknowledged up to 1; boot 7: none.
            connection
                .execute_batch(
                    "INSERT INTO nodes (name) VALUES ('pole-017');
                     INSERT INTO reports (node, boot, seq, ts, clock_ok, received, period_s, motion,
                         lamp_on, lamp_level, faults)
                     SELECT 1, 6, seq, 1764093600000 + seq * 60000, 1, 1764093600500, 60, 1, 1, 80, 0
                     FROM (SELECT 0 AS seq UNION ALL SELECT 1 UNION ALL SELECT 4 UNION ALL SELECT 5);
                     INSERT INTO ack_state (node, boot, from_seq, acked, lost) VALUES (1, 6, 0, 1, 0),
                         (1, 7, 0, NULL, 0);",
                )
                .unwrap();
        }
        let store = Store::open(dir.path(), 10).unwrap();
        let tops: Vec<(u32, Option<u32>)> = store
            .connection
            .prepare("SELECT boot, top FROM boots ORDER BY boot")
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(tops, [(6, Some(5)), (7, None)]);
    }
}
