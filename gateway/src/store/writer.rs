//! One transaction of writes ([`Writer`]): reports, statuses, events, dead letters, and
//! what the gateway keeps per node's boot. Nothing is durable until [`Writer::commit`],
//! and nothing the transaction learns (a new node's row id) outlives a rollback.

use std::collections::HashMap;

use rusqlite::{OptionalExtension, params};

use super::{
    BootState, DEAD_LETTER_BYTES, DEAD_LETTER_TOPIC_BYTES, DeadLetter, ReportRow, StorageError,
};
use crate::clock::{BootClock, ClockFix};

/// Where the gateway put a report sent without a valid clock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Placement {
    /// The node's `up_ms`, to place it again once its boot's clock is known.
    pub up_ms: Option<u64>,
    /// Stamped from its arrival: it waits for its boot's clock.
    pub held: bool,
}

/// What some facts carry besides their kind: a config's version and message, a birth's
/// running version and interval.
#[derive(Debug, Clone, Copy, Default)]
struct FactExtra<'a> {
    cfg: Option<u32>,
    payload: Option<&'a str>,
    interval_s: Option<u16>,
}

/// One transaction of writes; nothing is durable until [`Writer::commit`].
pub struct Writer<'s> {
    pub(super) tx: rusqlite::Transaction<'s>,
    /// Held until the transaction ends (declared after it, so dropped after it).
    pub(super) _turn: super::turns::Turn,
    /// The store's node ids, as committed.
    pub(super) nodes: &'s mut HashMap<String, i64>,
    /// Nodes this transaction added: cached only once it commits.
    pub(super) added: HashMap<String, i64>,
    pub(super) dead_letters_max: usize,
}

/// The longest prefix of `text` of at most `bytes` bytes that ends on a character.
fn truncated(text: &str, bytes: usize) -> &str {
    let mut end = text.len().min(bytes);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl Writer<'_> {
    /// The row id of a node, added the first time it is seen, in the site its topic
    /// names (the site files set it for the nodes they list).
    pub fn node(&mut self, name: &str, site: &str) -> Result<i64, StorageError> {
        if let Some(id) = self.nodes.get(name).or_else(|| self.added.get(name)) {
            return Ok(*id);
        }
        self.tx
            .prepare_cached(
                "INSERT INTO nodes (name, site) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET site = coalesce(site, excluded.site)",
            )?
            .execute([name, site])?;
        let id: i64 = self
            .tx
            .prepare_cached("SELECT id FROM nodes WHERE name = ?1")?
            .query_row([name], |row| row.get(0))?;
        self.added.insert(name.to_owned(), id);
        Ok(id)
    }

    /// Stores a report (placed as `placement` says when the gateway stamped it); false
    /// when it was stored before.
    pub fn report(
        &mut self,
        node: i64,
        r: &ReportRow,
        placement: Placement,
    ) -> Result<bool, StorageError> {
        let inserted = self
            .tx
            .prepare_cached(
                "INSERT INTO reports (node, boot, seq, ts, clock_ok, received, period_s,
                    lux_avg, lux_min, lux_max, motion, lamp_on, lamp_level, power_w, cfg, faults,
                    temp_c, zone, up_ms, held)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
                    ?18, ?19, ?20)
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
                placement.up_ms.map(|u| u as i64),
                placement.held,
            ])?;
        Ok(inserted == 1)
    }

    /// Records a node status change (birth, will, shutdown), and whether the broker
    /// delivered it from its retained store.
    pub fn status(
        &mut self,
        node: i64,
        received: i64,
        status: &parklight_protocol::Status,
        payload: &[u8],
        retained: bool,
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
                "INSERT INTO statuses (node, received, online, reason, boot, conn, payload, retained)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                node,
                received,
                online,
                reason,
                boot,
                conn,
                String::from_utf8_lossy(payload),
                retained
            ])?;
        let kind = reason.unwrap_or("online");
        let birth = match status {
            Status::Online(b) => FactExtra {
                cfg: b.cfg,
                interval_s: b.interval_s,
                payload: None,
            },
            Status::Offline(_) => FactExtra::default(),
        };
        self.fact_with(node, kind, Some((boot, conn)), None, received, birth)?;
        Ok(())
    }

    /// Records a fact for the detectors, placed after every report stored so far.
    pub fn fact(
        &mut self,
        node: i64,
        kind: &str,
        connection: Option<(u32, u32)>,
        raised: Option<bool>,
        received: i64,
    ) -> Result<i64, StorageError> {
        self.fact_with(
            node,
            kind,
            connection,
            raised,
            received,
            FactExtra::default(),
        )
    }

    /// Records the liveness monitor's finding that `node` is late to apply config `cfg`.
    pub fn config_late(&mut self, node: i64, cfg: u32, received: i64) -> Result<i64, StorageError> {
        let extra = FactExtra {
            cfg: Some(cfg),
            ..FactExtra::default()
        };
        self.fact_with(node, "config_late", None, None, received, extra)
    }

    /// A fact, with a config version and message for a `config` fact.
    fn fact_with(
        &mut self,
        node: i64,
        kind: &str,
        connection: Option<(u32, u32)>,
        raised: Option<bool>,
        received: i64,
        extra: FactExtra<'_>,
    ) -> Result<i64, StorageError> {
        self.tx
            .prepare_cached(
                "INSERT INTO facts (after_report, node, kind, boot, conn, raised, received, cfg,
                    payload, interval_s)
                 VALUES ((SELECT coalesce(max(id), 0) FROM reports), ?1, ?2, ?3, ?4, ?5, ?6, ?7,
                    ?8, ?9)",
            )?
            .execute(params![
                node,
                kind,
                connection.map(|c| c.0),
                connection.map(|c| c.1),
                raised,
                received,
                extra.cfg,
                extra.payload,
                extra.interval_s
            ])?;
        Ok(self.tx.last_insert_rowid())
    }

    /// Keeps a config version published to a node (`content`: what it says, to compare
    /// with the next; `payload`: the message), and tells the detectors.
    pub fn config(
        &mut self,
        node: i64,
        cfg: u32,
        content: &str,
        payload: &str,
        published: i64,
    ) -> Result<(), StorageError> {
        self.tx
            .prepare_cached(
                "INSERT INTO configs (node, cfg, content, payload, published)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![node, cfg, content, payload, published])?;
        let extra = FactExtra {
            cfg: Some(cfg),
            payload: Some(payload),
            interval_s: None,
        };
        self.fact_with(node, "config", None, None, published, extra)?;
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
                // Beyond what an i64 holds is no clock either way: never a negative time.
                i64::try_from(event.ts).unwrap_or(i64::MAX),
                received,
                event.kind.as_str(),
                String::from_utf8_lossy(payload)
            ])?;
        use parklight_protocol::event::{EventKind, FaultState};
        if let (
            1,
            EventKind::LampFault { state }
            | EventKind::SensorFault { state }
            | EventKind::Tamper { state },
        ) = (inserted, &event.kind)
        {
            let raised = *state == FaultState::Raised;
            self.fact(node, event.kind.as_str(), None, Some(raised), received)?;
        }
        if (inserted, &event.kind) == (1, &EventKind::PowerLoss) {
            self.fact(node, "power_loss", Some((event.boot, 0)), None, received)?;
        }
        // The answer to a config the gateway published (its id is `c-{cfg}`).
        if let (1, EventKind::CommandApplied { id } | EventKind::CommandRejected { id }) =
            (inserted, &event.kind)
            && let Some(cfg) = (id.as_deref())
                .and_then(|id| id.strip_prefix("c-"))
                .and_then(|n| n.parse().ok())
        {
            let extra = FactExtra {
                cfg: Some(cfg),
                payload: event.detail.as_deref(),
                interval_s: None,
            };
            self.fact_with(node, event.kind.as_str(), None, None, received, extra)?;
        }
        Ok(inserted == 1)
    }

    /// Keeps a rejected message (its topic and payload truncated), dropping the oldest
    /// beyond the limit.
    pub fn dead_letter(&mut self, letter: &DeadLetter) -> Result<(), StorageError> {
        let kept = &letter.payload[..letter.payload.len().min(DEAD_LETTER_BYTES)];
        let topic = truncated(&letter.topic, DEAD_LETTER_TOPIC_BYTES);
        let (node, boot, seq) = match &letter.report {
            Some((node, boot, seq)) => (Some(node.as_str()), Some(*boot), Some(*seq)),
            None => (None, None, None),
        };
        self.tx
            .prepare_cached(
                "INSERT INTO dead_letters (received, topic, payload, reason, field, node, boot, seq)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![letter.received, topic, kept, letter.reason, letter.field, node, boot, seq])?;
        self.tx
            .prepare_cached(
                "DELETE FROM dead_letters WHERE id <= (SELECT max(id) FROM dead_letters) - ?1",
            )?
            .execute([self.dead_letters_max as i64])?;
        Ok(())
    }

    /// What is known of a node's boot.
    pub fn boot_state(&mut self, node: i64, boot: u32) -> Result<Option<BootState>, StorageError> {
        Ok(self
            .tx
            .prepare_cached(
                "SELECT from_seq, acked, top, fix_seq, fix_ts, fix_up_ms, ref_up_ms,
                    ref_up_received, ref_seq, ref_seq_received
                 FROM boots WHERE node = ?1 AND boot = ?2",
            )?
            .query_row(params![node, boot], |row| {
                let fix = match (row.get(3)?, row.get(4)?) {
                    (Some(seq), Some(ts)) => Some(ClockFix {
                        seq,
                        ts,
                        up_ms: row.get::<_, Option<i64>>(5)?.map(|u| u as u64),
                    }),
                    _ => None,
                };
                let by_uptime = match (row.get::<_, Option<i64>>(6)?, row.get(7)?) {
                    (Some(up), Some(at)) => Some((up as u64, at)),
                    _ => None,
                };
                let by_seq = match (row.get(8)?, row.get(9)?) {
                    (Some(seq), Some(at)) => Some((seq, at)),
                    _ => None,
                };
                Ok(BootState {
                    from_seq: row.get(0)?,
                    acked: row.get(1)?,
                    top: row.get(2)?,
                    clock: BootClock {
                        fix,
                        by_uptime,
                        by_seq,
                    },
                })
            })
            .optional()?)
    }

    /// Saves what is known of a node's boot, adding `lost` to the reports it declared
    /// lost (less when declared ones arrived after all).
    pub fn set_boot_state(
        &mut self,
        node: i64,
        boot: u32,
        state: &BootState,
        lost: i64,
    ) -> Result<(), StorageError> {
        let clock = &state.clock;
        self.tx
            .prepare_cached(
                "INSERT INTO boots (node, boot, from_seq, acked, lost, top, fix_seq, fix_ts,
                    fix_up_ms, ref_up_ms, ref_up_received, ref_seq, ref_seq_received)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
                 ON CONFLICT (node, boot) DO UPDATE SET from_seq = excluded.from_seq,
                    acked = excluded.acked, lost = lost + excluded.lost, top = excluded.top,
                    fix_seq = excluded.fix_seq, fix_ts = excluded.fix_ts,
                    fix_up_ms = excluded.fix_up_ms, ref_up_ms = excluded.ref_up_ms,
                    ref_up_received = excluded.ref_up_received, ref_seq = excluded.ref_seq,
                    ref_seq_received = excluded.ref_seq_received",
            )?
            .execute(params![
                node,
                boot,
                state.from_seq,
                state.acked,
                lost,
                state.top,
                clock.fix.map(|f| f.seq),
                clock.fix.map(|f| f.ts),
                clock.fix.and_then(|f| f.up_ms).map(|u| u as i64),
                clock.by_uptime.map(|(up, _)| up as i64),
                clock.by_uptime.map(|(_, at)| at),
                clock.by_seq.map(|(seq, _)| seq),
                clock.by_seq.map(|(_, at)| at),
            ])?;
        Ok(())
    }

    /// The node's boots before `before` with reports handled above their watermark: gaps
    /// that the node's `oldest` may declare lost.
    pub fn boots_with_gaps(&mut self, node: i64, before: u32) -> Result<Vec<u32>, StorageError> {
        let mut statement = self.tx.prepare_cached(
            "SELECT boot FROM boots WHERE node = ?1 AND boot < ?2
                AND top >= coalesce(acked + 1, from_seq)",
        )?;
        let boots = statement.query_map(params![node, before], |row| row.get(0))?;
        Ok(boots.collect::<Result<_, _>>()?)
    }

    /// Records that the reports `first..=last` of a node's boot were declared lost.
    pub fn add_lost(
        &mut self,
        node: i64,
        boot: u32,
        (first, last): (u32, u32),
    ) -> Result<(), StorageError> {
        self.tx
            .prepare_cached(
                "INSERT INTO lost_reports (node, boot, first_seq, last_seq) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (node, boot, first_seq) DO UPDATE SET last_seq = excluded.last_seq",
            )?
            .execute(params![node, boot, first, last])?;
        Ok(())
    }

    /// A report declared lost arrived after all: true (and no longer lost) when `seq` of
    /// the node's boot was declared lost.
    pub fn recover_lost(&mut self, node: i64, boot: u32, seq: u32) -> Result<bool, StorageError> {
        let run: Option<(u32, u32)> = self
            .tx
            .prepare_cached(
                "SELECT first_seq, last_seq FROM lost_reports
                 WHERE node = ?1 AND boot = ?2 AND first_seq <= ?3 AND last_seq >= ?3",
            )?
            .query_row(params![node, boot, seq], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .optional()?;
        let Some((first, last)) = run else {
            return Ok(false);
        };
        self.tx
            .prepare_cached(
                "DELETE FROM lost_reports WHERE node = ?1 AND boot = ?2 AND first_seq = ?3",
            )?
            .execute(params![node, boot, first])?;
        if first < seq {
            self.add_lost(node, boot, (first, seq - 1))?;
        }
        if seq < last {
            self.add_lost(node, boot, (seq + 1, last))?;
        }
        Ok(true)
    }

    /// Places the held reports of a node's boot again from its clock `fix`, and lets them
    /// go. Returns how many moved.
    pub fn restamp(&mut self, node: i64, boot: u32, fix: ClockFix) -> Result<usize, StorageError> {
        let Some(release) = self.release(node, boot, fix.ts)? else {
            return Ok(0);
        };
        let moved = self
            .tx
            .prepare_cached(
                "UPDATE reports SET held = 0, released = ?6, ts = CASE
                    WHEN up_ms IS NOT NULL AND ?5 IS NOT NULL THEN ?3 + (up_ms - ?5)
                    ELSE ?3 - (?4 - seq) * period_s * 1000 END
                 WHERE node = ?1 AND boot = ?2 AND held = 1",
            )?
            .execute(params![
                node,
                boot,
                fix.ts,
                fix.seq,
                fix.up_ms.map(|u| u as i64),
                release
            ])?;
        Ok(moved)
    }

    /// The fact that lets a boot's held reports go, when it has some.
    fn release(
        &mut self,
        node: i64,
        boot: u32,
        received: i64,
    ) -> Result<Option<i64>, StorageError> {
        let held: bool = self
            .tx
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM reports WHERE node = ?1 AND boot = ?2 AND held = 1)",
            )?
            .query_row(params![node, boot], |row| row.get(0))?;
        if !held {
            return Ok(None);
        }
        self.fact(node, "released", Some((boot, 0)), None, received)
            .map(Some)
    }

    /// Lets go of the held reports whose boot's clock did not come within their hold
    /// ([`crate::clock::HOLD_MS`]) at `now`: they keep the time they were stamped with.
    /// Returns how many.
    pub fn release_expired(&mut self, now: i64) -> Result<usize, StorageError> {
        let due: Vec<(i64, u32)> = self
            .tx
            .prepare_cached(
                "SELECT DISTINCT node, boot FROM reports
                 WHERE held = 1 AND received + 2 * period_s * 1000 + ?1 <= ?2",
            )?
            .query_map(params![crate::clock::HOLD_MS, now], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })?
            .collect::<Result<_, _>>()?;
        let mut released = 0;
        for (node, boot) in due {
            let Some(release) = self.release(node, boot, now)? else {
                continue;
            };
            released += self
                .tx
                .prepare_cached(
                    "UPDATE reports SET held = 0, released = ?4
                     WHERE node = ?1 AND boot = ?2 AND held = 1
                        AND received + 2 * period_s * 1000 + ?3 <= ?5",
                )?
                .execute(params![node, boot, crate::clock::HOLD_MS, release, now])?;
        }
        Ok(released)
    }

    /// Moves a cursor with the rest of the transaction.
    pub fn set_cursor(&mut self, name: &str, position: i64) -> Result<(), StorageError> {
        self.tx
            .prepare_cached(
                "INSERT INTO cursors (name, position) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET position = excluded.position",
            )?
            .execute(params![name, position])?;
        Ok(())
    }

    /// The forwarder passed report `id` while it was held: it sends it once let go.
    pub fn forward_later(&mut self, id: i64) -> Result<(), StorageError> {
        self.tx
            .prepare_cached("INSERT INTO forward_later (id) VALUES (?1) ON CONFLICT DO NOTHING")?
            .execute([id])?;
        Ok(())
    }

    /// The forwarder sent report `id`, which it had passed while held.
    pub fn forwarded_later(&mut self, id: i64) -> Result<(), StorageError> {
        self.tx
            .prepare_cached("DELETE FROM forward_later WHERE id = ?1")?
            .execute([id])?;
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
        let Writer {
            tx,
            _turn,
            nodes,
            added,
            ..
        } = self;
        tx.commit()?;
        nodes.extend(added);
        drop(_turn);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Placement;
    use crate::store::Store;
    use crate::store::tests::report;

    #[test]
    fn a_node_added_in_a_transaction_that_rolls_back_is_added_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), 10).unwrap();
        {
            let mut writer = store.write().unwrap();
            writer.node("pole-099", "remiseparken").unwrap();
        }
        // Rolled back: the next transaction must not take the node for granted.
        let mut writer = store.write().unwrap();
        let node = writer.node("pole-099", "remiseparken").unwrap();
        assert!(
            writer
                .report(node, &report(1, 0), Placement::default())
                .unwrap()
        );
        writer.commit().unwrap();
        assert_eq!(store.report_count().unwrap(), 1);
    }

    #[test]
    fn an_event_time_beyond_an_i64_is_kept_far_ahead_not_negative() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), 10).unwrap();
        let payload = br#"{"v":1,"boot":1,"eseq":0,"ts":18446744073709551615,"kind":"reboot"}"#;
        let event =
            <parklight_protocol::Event as parklight_protocol::Message>::decode(payload).unwrap();
        let mut writer = store.write().unwrap();
        let node = writer.node("pole-017", "remiseparken").unwrap();
        assert!(writer.event(node, 1, &event, payload).unwrap());
        writer.commit().unwrap();
        let ts: i64 = store
            .connection
            .query_row("SELECT ts FROM events", [], |row| row.get(0))
            .unwrap();
        assert_eq!(ts, i64::MAX);
    }

    #[test]
    fn a_lost_report_that_arrives_is_no_longer_lost() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), 10).unwrap();
        let mut writer = store.write().unwrap();
        let node = writer.node("pole-017", "remiseparken").unwrap();
        writer.add_lost(node, 7, (3, 6)).unwrap();
        assert!(!writer.recover_lost(node, 7, 2).unwrap());
        assert!(writer.recover_lost(node, 7, 4).unwrap());
        assert!(!writer.recover_lost(node, 7, 4).unwrap(), "once");
        assert!(writer.recover_lost(node, 7, 3).unwrap());
        assert!(writer.recover_lost(node, 7, 6).unwrap());
        assert!(writer.recover_lost(node, 7, 5).unwrap());
        assert!(!writer.recover_lost(node, 8, 5).unwrap(), "another boot");
    }

    #[test]
    fn long_topics_are_cut_on_a_character() {
        assert_eq!(super::truncated("påske", 2), "p");
        assert_eq!(super::truncated("påske", 3), "på");
        assert_eq!(super::truncated("park", 10), "park");
    }
}
