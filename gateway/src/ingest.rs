//! From an MQTT message to stored rows: decode and validate (firmware/protocol), enrich
//! from the site model, dedupe by `(node, boot, seq)`, repair clocks, and keep the
//! stored-acknowledgement watermark of every node's boot.
//!
//! [`Ingest::handle`] runs inside a store transaction; nothing it does is durable (or
//! acknowledged) until the caller commits the group.

use std::collections::{BTreeSet, HashMap};

use parklight_protocol::status::Status;
use parklight_protocol::topic::parse_node_topic;
use parklight_protocol::{
    DecodeError, ReportId, Telemetry, Uplink, decode_uplink, salvage_report_id,
};
use parklight_sim::Site;

use crate::store::{AckState, DeadLetter, ReportRow, StorageError, Writer};

/// 2020-01-01 in Unix ms: an earlier `ts` is no valid clock.
pub const EARLIEST_VALID_TS: i64 = 1_577_836_800_000;

/// A message as it came from the broker.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Incoming<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Payload.
    pub payload: &'a [u8],
    /// Arrival, Unix ms.
    pub received_ms: i64,
}

/// What became of a message.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A new report was stored.
    Stored {
        /// The node is in no site file.
        unknown_node: bool,
        /// Its `ts` was no valid clock and the gateway stamped it.
        stamped: bool,
    },
    /// A report that was stored before.
    Duplicate,
    /// Rejected and kept as a dead letter.
    Rejected(DecodeError),
    /// A status (birth, will, shutdown) was recorded.
    Status {
        /// The node.
        node: String,
        /// What it said.
        status: Status,
    },
    /// An event was stored (or was a duplicate).
    Event,
}

/// A node's boot whose acknowledgement should go out.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AckNews {
    /// Site id (from the topic).
    pub site: String,
    /// Node id.
    pub node: String,
    /// Boot.
    pub boot: u32,
    /// Highest seq up to which every report of the boot is handled.
    pub seq: u32,
}

/// The reference points that place reports of a node's boot sent without a valid clock.
#[derive(Debug, Clone, Copy, Default)]
struct ClockReference {
    /// `(up_ms, arrival)` of the report with the highest `up_ms` so far.
    by_uptime: Option<(u64, i64)>,
    /// `(seq, arrival)` of the report with the highest seq so far.
    by_seq: Option<(u32, i64)>,
}

/// Stamps reports without a valid clock (PROTOCOL.md "Clock rules at the gateway").
#[derive(Debug, Default)]
pub struct ClockRepair {
    references: HashMap<(String, u32), ClockReference>,
}

impl ClockRepair {
    /// The report's time and whether it is the node's own valid clock.
    pub fn stamp(
        &mut self,
        node: &str,
        report: &Telemetry,
        received_ms: i64,
        skew_ms: i64,
    ) -> (i64, bool) {
        let reference = self
            .references
            .entry((node.to_owned(), report.boot))
            .or_default();
        if let Some(up) = report.up_ms
            && reference.by_uptime.is_none_or(|(u, _)| up > u)
        {
            reference.by_uptime = Some((up, received_ms));
        }
        if reference.by_seq.is_none_or(|(s, _)| report.seq > s) {
            reference.by_seq = Some((report.seq, received_ms));
        }
        let ts = i64::try_from(report.ts).unwrap_or(i64::MAX);
        if (EARLIEST_VALID_TS..=received_ms.saturating_add(skew_ms)).contains(&ts) {
            return (ts, true);
        }
        let stamped = match (report.up_ms, reference.by_uptime, reference.by_seq) {
            (Some(up), Some((u, a)), _) => a.saturating_add(up as i64 - u as i64),
            (_, _, Some((s, a))) => {
                a.saturating_sub(i64::from(s - report.seq) * i64::from(report.period_s) * 1000)
            }
            _ => received_ms,
        };
        (stamped, false)
    }
}

/// Decodes, enriches, dedupes and stores messages; tracks acknowledgement watermarks.
pub struct Ingest {
    prefix: String,
    /// node → (site, zone) from the site files.
    directory: HashMap<String, (String, Option<String>)>,
    clocks: ClockRepair,
    acks: HashMap<(String, u32), Progress>,
    skew_ms: i64,
}

impl Ingest {
    /// An ingest for topics under `prefix`, nodes of `sites`, and an allowed clock skew.
    pub fn new(prefix: &str, sites: &[Site], skew_ms: i64) -> Ingest {
        let directory = sites
            .iter()
            .flat_map(|site| {
                site.nodes
                    .iter()
                    .map(|n| (n.id.clone(), (site.id.clone(), n.zone.clone())))
            })
            .collect();
        Ingest {
            prefix: prefix.to_owned(),
            directory,
            clocks: ClockRepair::default(),
            acks: HashMap::new(),
            skew_ms,
        }
    }

    /// Handles one message inside `writer`'s transaction. Acknowledgement news goes to
    /// `news`, to be published once the group is committed.
    pub fn handle(
        &mut self,
        writer: &mut Writer<'_>,
        message: &Incoming<'_>,
        news: &mut Vec<AckNews>,
    ) -> Result<Outcome, StorageError> {
        let uplink = match decode_uplink(&self.prefix, message.topic, message.payload) {
            Ok(uplink) => uplink,
            Err(error) => return self.reject(writer, message, error, news),
        };
        let (site, node) = (uplink.site, uplink.node);
        let node_id = writer.node(node)?;
        match uplink.message {
            Uplink::Telemetry(report) => {
                let (ts, clock_ok) =
                    self.clocks
                        .stamp(node, &report, message.received_ms, self.skew_ms);
                let known = self.directory.get(node).filter(|(s, _)| s == site);
                let (unknown_node, zone) =
                    (known.is_none(), known.and_then(|(_, zone)| zone.clone()));
                let row = ReportRow {
                    boot: report.boot,
                    seq: report.seq,
                    ts,
                    clock_ok,
                    received: message.received_ms,
                    period_s: report.period_s,
                    lux: report.lux,
                    motion: report.motion,
                    lamp_on: report.lamp.on,
                    lamp_level: report.lamp.level,
                    power_w: report.lamp.power_w,
                    cfg: report.cfg,
                    faults: report
                        .faults
                        .iter()
                        .fold(0, |bits, f| bits | (1 << f as u8)),
                    temp_c: report.temp_c,
                    zone,
                };
                let stored = writer.report(node_id, &row)?;
                let before = self.watermark(writer, node_id, node, report.boot)?;
                if let Some(oldest) = report.oldest {
                    self.oldest(writer, node_id, node, oldest)?;
                }
                self.handled(
                    writer,
                    node_id,
                    (site, node),
                    report.id(),
                    (before, !stored),
                    news,
                )?;
                Ok(if stored {
                    Outcome::Stored {
                        unknown_node,
                        stamped: !clock_ok,
                    }
                } else {
                    Outcome::Duplicate
                })
            }
            Uplink::Status(status) => {
                writer.status(node_id, message.received_ms, &status, message.payload)?;
                if let Status::Online(birth) = &status {
                    self.oldest(writer, node_id, node, birth.oldest)?;
                    if let Some(seq) = self
                        .acks
                        .get(&(node.to_owned(), birth.oldest.boot))
                        .and_then(|p| p.state.acked)
                    {
                        news.push(AckNews {
                            site: site.to_owned(),
                            node: node.to_owned(),
                            boot: birth.oldest.boot,
                            seq,
                        });
                    }
                }
                Ok(Outcome::Status {
                    node: node.to_owned(),
                    status,
                })
            }
            Uplink::Event(event) => {
                writer.event(node_id, message.received_ms, &event, message.payload)?;
                Ok(Outcome::Event)
            }
        }
    }

    fn reject(
        &mut self,
        writer: &mut Writer<'_>,
        message: &Incoming<'_>,
        error: DecodeError,
        news: &mut Vec<AckNews>,
    ) -> Result<Outcome, StorageError> {
        // A rejected report whose node, boot and seq can still be read counts as handled.
        let topic = parse_node_topic(&self.prefix, message.topic).ok();
        let identity = topic
            .filter(|t| t.kind == parklight_protocol::NodeTopic::Telemetry)
            .zip(salvage_report_id(message.payload));
        writer.dead_letter(&DeadLetter {
            received: message.received_ms,
            topic: message.topic.to_owned(),
            payload: message.payload.to_vec(),
            reason: error.reason.code().to_owned(),
            field: error.field.map(str::to_owned),
            report: identity.map(|(t, id)| (t.node.to_owned(), id.boot, id.seq)),
        })?;
        if let Some((topic, id)) = identity {
            let node_id = writer.node(topic.node)?;
            let before = self.watermark(writer, node_id, topic.node, id.boot)?;
            self.handled(
                writer,
                node_id,
                (topic.site, topic.node),
                id,
                (before, false),
                news,
            )?;
        }
        Ok(Outcome::Rejected(error))
    }

    /// The progress of a node's boot: from memory, or loaded once from the store.
    fn progress(
        &mut self,
        writer: &mut Writer<'_>,
        node_id: i64,
        node: &str,
        boot: u32,
    ) -> Result<&mut Progress, StorageError> {
        let key = (node.to_owned(), boot);
        if !self.acks.contains_key(&key) {
            let state = writer.ack_state(node_id, boot)?.unwrap_or(AckState {
                from_seq: 0,
                acked: None,
            });
            let next = state.acked.map_or(state.from_seq, |a| a.saturating_add(1));
            let above = writer
                .handled_from(node_id, node, boot, next)?
                .into_iter()
                .collect();
            self.acks.insert(
                key.clone(),
                Progress {
                    node_id,
                    state,
                    above,
                    lost: 0,
                    dirty: false,
                },
            );
        }
        Ok(self.acks.get_mut(&key).expect("inserted above"))
    }

    fn watermark(
        &mut self,
        writer: &mut Writer<'_>,
        node_id: i64,
        node: &str,
        boot: u32,
    ) -> Result<Option<u32>, StorageError> {
        Ok(self.progress(writer, node_id, node, boot)?.state.acked)
    }

    /// The node says every report before `oldest` is acknowledged or gone: count the gone
    /// ones as lost on the node and never wait for them.
    fn oldest(
        &mut self,
        writer: &mut Writer<'_>,
        node_id: i64,
        node: &str,
        oldest: ReportId,
    ) -> Result<(), StorageError> {
        let progress = self.progress(writer, node_id, node, oldest.boot)?;
        let next = progress.next();
        if oldest.seq <= next {
            return Ok(());
        }
        let handled = progress.above.range(next..oldest.seq).count() as u64;
        let lost = u64::from(oldest.seq - next) - handled;
        progress.above = progress.above.split_off(&oldest.seq);
        progress.state.from_seq = oldest.seq;
        progress.state.acked = Some(oldest.seq - 1);
        progress.lost += lost;
        progress.dirty = true;
        progress.advance();
        if lost > 0 {
            crate::metrics::lost_on_node(node, lost);
        }
        Ok(())
    }

    /// Report `id` is handled: move the watermark (which stood at `before`), and say
    /// whether an ack is due: for news, or for a duplicate the watermark covers.
    fn handled(
        &mut self,
        writer: &mut Writer<'_>,
        node_id: i64,
        (site, node): (&str, &str),
        id: ReportId,
        (before, duplicate): (Option<u32>, bool),
        news: &mut Vec<AckNews>,
    ) -> Result<(), StorageError> {
        let progress = self.progress(writer, node_id, node, id.boot)?;
        if id.seq >= progress.next() {
            progress.above.insert(id.seq);
        }
        let after = progress.advance();
        let repeat = duplicate && after.is_some_and(|a| id.seq <= a);
        if let Some(seq) = after.filter(|_| after != before || repeat) {
            news.push(AckNews {
                site: site.to_owned(),
                node: node.to_owned(),
                boot: id.boot,
                seq,
            });
        }
        Ok(())
    }

    /// Writes the progress that changed into the group, before it commits.
    pub fn save(&mut self, writer: &mut Writer<'_>) -> Result<(), StorageError> {
        for ((_, boot), progress) in self.acks.iter_mut().filter(|(_, p)| p.dirty) {
            writer.set_ack_state(progress.node_id, *boot, progress.state, progress.lost)?;
            progress.dirty = false;
            progress.lost = 0;
        }
        Ok(())
    }

    /// Forgets progress, so it is read again from the store (after a failed commit).
    pub fn forget(&mut self) {
        self.acks.clear();
    }
}

/// Acknowledgement progress of one node's boot in this process.
struct Progress {
    node_id: i64,
    state: AckState,
    /// Handled reports above the watermark (arrived out of order).
    above: BTreeSet<u32>,
    /// Reports declared gone since the last save.
    lost: u64,
    /// Changed since the last save.
    dirty: bool,
}

impl Progress {
    /// The first seq not yet known handled.
    fn next(&self) -> u32 {
        self.state
            .acked
            .map_or(self.state.from_seq, |a| a.saturating_add(1))
    }

    /// Moves the watermark over every handled report; returns it.
    fn advance(&mut self) -> Option<u32> {
        while self.next() != u32::MAX && self.above.remove(&self.next()) {
            self.state.acked = Some(self.next());
            self.dirty = true;
        }
        self.state.acked
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parklight_protocol::Message;

    fn telemetry(json: &str) -> Telemetry {
        Telemetry::decode(json.as_bytes()).unwrap()
    }

    fn clockless(seq: u32, up_ms: Option<u64>) -> Telemetry {
        let up = up_ms.map(|u| format!(",\"up_ms\":{u}")).unwrap_or_default();
        telemetry(&format!(
            r#"{{"v":1,"boot":3,"seq":{seq},"ts":0{up},"period_s":60,"lux":null,"motion":0,"lamp":{{"on":false,"level":0}}}}"#
        ))
    }

    #[test]
    fn valid_clocks_are_kept() {
        let mut repair = ClockRepair::default();
        let report = telemetry(
            r#"{"v":1,"boot":3,"seq":0,"ts":1764093600000,"period_s":60,"lux":null,"motion":0,"lamp":{"on":false,"level":0}}"#,
        );
        assert_eq!(
            repair.stamp("n", &report, 1_764_093_601_000, 300_000),
            (1_764_093_600_000, true)
        );
        // Too far ahead of its arrival: no valid clock, stamped at arrival.
        let ahead = telemetry(
            r#"{"v":1,"boot":3,"seq":1,"ts":1764093600000,"period_s":60,"lux":null,"motion":0,"lamp":{"on":false,"level":0}}"#,
        );
        assert_eq!(
            repair.stamp("n", &ahead, 1_764_000_000_000, 300_000),
            (1_764_000_000_000, false)
        );
    }

    #[test]
    fn clockless_reports_keep_their_spacing_by_uptime() {
        let mut repair = ClockRepair::default();
        let arrival = 1_800_000_000_000;
        // A burst of resent reports arrives at once: spaced by their up_ms.
        assert_eq!(
            repair.stamp("n", &clockless(5, Some(360_000)), arrival, 0),
            (arrival, false)
        );
        assert_eq!(
            repair.stamp("n", &clockless(3, Some(240_000)), arrival + 5, 0),
            (arrival - 120_000, false)
        );
        assert_eq!(
            repair.stamp("n", &clockless(6, Some(420_000)), arrival + 10, 0),
            (arrival + 10, false)
        );
    }

    #[test]
    fn clockless_reports_without_uptime_are_spaced_by_seq() {
        let mut repair = ClockRepair::default();
        let arrival = 1_800_000_000_000;
        assert_eq!(
            repair.stamp("n", &clockless(10, None), arrival, 0),
            (arrival, false)
        );
        assert_eq!(
            repair.stamp("n", &clockless(7, None), arrival + 3, 0),
            (arrival - 180_000, false)
        );
        // Another node's boot has its own reference.
        assert_eq!(
            repair.stamp("m", &clockless(1, None), arrival + 9, 0),
            (arrival + 9, false)
        );
    }

    mod with_a_store {
        use super::super::*;
        use crate::store::Store;

        const TOPIC: &str = "parklight/v1/remiseparken/pole-017/telemetry";

        /// A message as the broker delivers it.
        struct Owned {
            topic: String,
            payload: Vec<u8>,
            received_ms: i64,
        }

        fn report(boot: u32, seq: u32, extra: &str) -> Owned {
            Owned {
                topic: TOPIC.into(),
                payload: format!(r#"{{"v":1,"boot":{boot},"seq":{seq},"ts":1764093600000,"period_s":60,"lux":{{"avg":6,"min":5,"max":7}},"motion":1,"lamp":{{"on":true,"level":80}}{extra}}}"#).into_bytes(),
                received_ms: 1_764_093_601_000,
            }
        }

        struct Fixture {
            _dir: tempfile::TempDir,
            store: Store,
            ingest: Ingest,
        }

        impl Fixture {
            fn new() -> Fixture {
                let dir = tempfile::tempdir().unwrap();
                let store = Store::open(dir.path(), 100).unwrap();
                let ingest = Ingest::new("parklight/v1", &[Site::remiseparken()], 300_000);
                Fixture {
                    _dir: dir,
                    store,
                    ingest,
                }
            }

            /// Handles messages in one group; returns outcomes and the acks due.
            fn group(&mut self, messages: &[Owned]) -> (Vec<Outcome>, Vec<(u32, u32)>) {
                let mut writer = self.store.write().unwrap();
                let mut news = Vec::new();
                let outcomes = messages
                    .iter()
                    .map(|m| {
                        let incoming = Incoming {
                            topic: &m.topic,
                            payload: &m.payload,
                            received_ms: m.received_ms,
                        };
                        self.ingest
                            .handle(&mut writer, &incoming, &mut news)
                            .unwrap()
                    })
                    .collect();
                self.ingest.save(&mut writer).unwrap();
                writer.commit().unwrap();
                (outcomes, news.iter().map(|n| (n.boot, n.seq)).collect())
            }
        }

        #[test]
        fn reports_are_stored_once_and_acknowledged_in_order() {
            let mut f = Fixture::new();
            let (outcomes, acks) = f.group(&[report(7, 0, ""), report(7, 1, "")]);
            assert!(matches!(
                outcomes[0],
                Outcome::Stored {
                    unknown_node: false,
                    stamped: false
                }
            ));
            assert_eq!(acks, [(7, 0), (7, 1)]);
            // Out of order: 3 before 2 holds the watermark at 1 until 2 arrives.
            let (_, acks) = f.group(&[report(7, 3, "")]);
            assert!(acks.is_empty(), "{acks:?}");
            let (_, acks) = f.group(&[report(7, 2, "")]);
            assert_eq!(acks, [(7, 3)]);
            // A duplicate is a no-op, but the node evidently missed the ack: ack again.
            let (outcomes, acks) = f.group(&[report(7, 1, "")]);
            assert_eq!(outcomes, [Outcome::Duplicate]);
            assert_eq!(acks, [(7, 3)]);
            assert_eq!(f.store.report_count().unwrap(), 4);
        }

        #[test]
        fn the_watermark_survives_a_restart() {
            let mut f = Fixture::new();
            f.group(&[report(7, 0, ""), report(7, 2, "")]);
            f.ingest = Ingest::new("parklight/v1", &[], 300_000); // a restarted gateway
            let (outcomes, acks) = f.group(&[report(7, 1, "")]);
            assert!(
                matches!(
                    outcomes[0],
                    Outcome::Stored {
                        unknown_node: true,
                        ..
                    }
                ),
                "no sites known now"
            );
            assert_eq!(acks, [(7, 2)]);
        }

        #[test]
        fn reports_the_node_declared_gone_are_counted_and_not_waited_for() {
            let mut f = Fixture::new();
            f.group(&[report(7, 0, "")]);
            // Reports 1 to 4 were dropped on the node; report 5 says so.
            let (_, acks) = f.group(&[report(7, 5, r#","oldest":{"boot":7,"seq":5}"#)]);
            assert_eq!(acks, [(7, 5)]);
            assert_eq!(f.store.lost_on_node("pole-017").unwrap(), 4);
            // Said again in a birth, nothing more is lost.
            f.group(&[report(7, 6, r#","oldest":{"boot":7,"seq":5}"#)]);
            assert_eq!(f.store.lost_on_node("pole-017").unwrap(), 4);
        }

        #[test]
        fn a_rejected_report_with_a_readable_identity_counts_as_handled() {
            let mut f = Fixture::new();
            let mut bad = report(7, 0, "");
            bad.payload = br#"{"v":1,"boot":7,"seq":0,"ts":1,"period_s":60,"lux":{"avg":-1,"min":-1,"max":0},"motion":0,"lamp":{"on":true,"level":1}}"#.to_vec();
            let (outcomes, acks) = f.group(&[bad, report(7, 1, "")]);
            assert!(
                matches!(&outcomes[0], Outcome::Rejected(e) if e.reason == parklight_protocol::Reject::OutOfRange)
            );
            assert_eq!(acks, [(7, 0), (7, 1)]);
            let letters = f.store.dead_letters(10).unwrap();
            assert_eq!(letters[0].report, Some(("pole-017".into(), 7, 0)));
            assert_eq!(letters[0].field.as_deref(), Some("avg"));
        }

        #[test]
        fn a_birth_re_announces_the_watermark() {
            let mut f = Fixture::new();
            f.group(&[report(7, 0, "")]);
            let birth = Owned {
                topic: "parklight/v1/remiseparken/pole-017/status".into(),
                payload:
                    br#"{"v":1,"state":"online","boot":7,"conn":2,"oldest":{"boot":7,"seq":1}}"#
                        .to_vec(),
                received_ms: 1,
            };
            let (outcomes, acks) = f.group(&[birth]);
            assert!(
                matches!(&outcomes[..], [Outcome::Status { node, status: Status::Online(_) }] if node == "pole-017")
            );
            assert_eq!(acks, [(7, 0)]);
        }
    }
}
