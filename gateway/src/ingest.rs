//! From an MQTT message to stored rows: decode and validate (firmware/protocol), enrich
//! from the site model, dedupe by `(node, boot, seq)`, place reports in time
//! ([`crate::clock`]), keep the acknowledgement watermark of every node's boot, count
//! the reports nodes declare lost, and follow each node's presence.
//!
//! [`Ingest::handle`] runs inside a store transaction; nothing it does is durable (or
//! acknowledged) until the caller commits the group. What it keeps in memory is a cache
//! of the store: [`Ingest::committed`] makes a group's changes count once it committed,
//! [`Ingest::forget`] drops them after a failed commit, so the next attempt reads the
//! store again.

use std::collections::{BTreeSet, HashMap};

use parklight_protocol::status::Status;
use parklight_protocol::topic::parse_node_topic;
use parklight_protocol::{DecodeError, ReportId, Uplink, decode_uplink, salvage_report_id};
use parklight_site::Site;

use crate::clock::Timing;
use crate::store::{
    BootState, DeadLetter, Placement, Presence, ReportRow, StorageError, Store, Writer,
};

/// Boots per node whose progress stays in memory; older ones are read from the store
/// again when a report of theirs arrives (lamps on switched circuits boot every day).
pub const KEEP_BOOTS: usize = 4;

/// Reports of a boot handled above its watermark, at most: past it, the lowest gap is
/// taken as lost (a node keeps at most its buffer unacknowledged, far fewer; only a
/// broken or hostile node sends thousands past a gap it never closes).
pub const MAX_AHEAD: usize = 4096;

/// The largest `up_ms` the gateway places reports by: 2^53 ms.
const MAX_UP_MS: u64 = 1 << 53;

/// A message as it came from the broker.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Incoming<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Payload.
    pub payload: &'a [u8],
    /// Arrival, Unix ms.
    pub received_ms: i64,
    /// Delivered from the broker's retained store (on subscribing), not as it happened.
    pub retained: bool,
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
    /// A report that was handled before.
    Duplicate,
    /// Rejected and kept as a dead letter.
    Rejected(DecodeError),
    /// A status (birth, will, shutdown).
    Status {
        /// It changed the node's presence (and was recorded); false for one that was
        /// retained or repeated, or the late will of an older connection.
        transition: bool,
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

/// What a committed group changed, for the gauges and the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    /// Nodes whose latest status is online.
    pub online: usize,
    /// Reports nodes declared lost that never arrived.
    pub lost: u64,
    /// Reports placed again once their boot's clock was known, in this group.
    pub restamped: u64,
    /// What the group found worth saying, to be said now that it is kept.
    pub notices: Vec<Notice>,
}

/// Something a group found that the log should say once, when the group is committed
/// (not again at every retry of a group that failed to commit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A node declared reports gone that never arrived.
    Lost {
        /// The node.
        node: String,
        /// Its boot.
        boot: u32,
        /// How many.
        lost: u64,
    },
    /// A node sent more than [`MAX_AHEAD`] reports past a gap: the gap is taken as lost.
    PastGap {
        /// The node.
        node: String,
        /// Its boot.
        boot: u32,
    },
}

impl Notice {
    /// Says it.
    pub fn log(&self) {
        match self {
            Notice::Lost { node, boot, lost } => {
                tracing::info!(node, boot, lost, "reports lost on the node");
            }
            Notice::PastGap { node, boot } => tracing::warn!(
                node,
                boot,
                "more than {MAX_AHEAD} reports past a gap: its reports are taken as lost"
            ),
        }
    }
}

/// Decodes, enriches, dedupes and stores messages; tracks acknowledgement watermarks,
/// clocks and presence.
pub struct Ingest {
    prefix: String,
    /// node → (site, zone) from the site files.
    directory: HashMap<String, (String, Option<String>)>,
    boots: Boots,
    skew_ms: i64,
    /// Each node's latest status, as committed.
    presence: HashMap<String, Presence>,
    /// Status changes of the group being stored.
    staged_presence: HashMap<String, Presence>,
    /// Lost reports, as committed, and the change the group being stored makes.
    lost: (u64, i64),
    /// Reports the group being stored placed again.
    restamped: u64,
    notices: Vec<Notice>,
}

impl Ingest {
    /// An ingest for topics under `prefix`, nodes of `sites` and an allowed clock skew,
    /// that knows what `store` knows (each node's presence, the reports lost).
    pub fn new(
        prefix: &str,
        sites: &[Site],
        skew_ms: i64,
        store: &Store,
    ) -> Result<Ingest, StorageError> {
        let directory = sites
            .iter()
            .flat_map(|site| {
                site.nodes
                    .iter()
                    .map(|n| (n.id.clone(), (site.id.clone(), n.zone.clone())))
            })
            .collect();
        Ok(Ingest {
            prefix: prefix.to_owned(),
            directory,
            boots: Boots::default(),
            skew_ms,
            presence: store.presence()?,
            staged_presence: HashMap::new(),
            lost: (store.lost_on_nodes()?, 0),
            restamped: 0,
            notices: Vec::new(),
        })
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
        let node_id = writer.node(node, site)?;
        match uplink.message {
            Uplink::Telemetry(report) => {
                let id = report.id();
                let boot = self.boots.get(writer, node_id, node, id.boot)?;
                let before = boot.state.acked;
                let recovered = if id.seq < boot.next() {
                    // Handled before, or declared lost and here after all.
                    writer.recover_lost(node_id, id.boot, id.seq)?
                } else {
                    false
                };
                let seen = !recovered && (id.seq < boot.next() || boot.above.contains(&id.seq));
                if seen {
                    self.handled(writer, node_id, (site, node), id, (before, true), news)?;
                    return Ok(Outcome::Duplicate);
                }
                // An uptime past 2^53 ms (285 000 years) says nothing: left out, it cannot
                // overflow the arithmetic that places reports.
                let up_ms = report.up_ms.filter(|up| *up <= MAX_UP_MS);
                let timing = Timing {
                    seq: id.seq,
                    ts: report.ts,
                    up_ms,
                    period_s: report.period_s,
                };
                let stamp = boot
                    .state
                    .clock
                    .stamp(timing, message.received_ms, self.skew_ms);
                boot.dirty = true;
                if recovered {
                    boot.lost -= 1;
                    self.lost.1 -= 1;
                }
                let fix = boot.state.clock.fix;
                if let (true, Some(fix)) = (stamp.fixes_stamped, fix) {
                    self.restamped += writer.restamp(node_id, id.boot, fix)? as u64;
                }
                let known = self.directory.get(node).filter(|(s, _)| s == site);
                let (unknown_node, zone) =
                    (known.is_none(), known.and_then(|(_, zone)| zone.clone()));
                let row = ReportRow {
                    boot: id.boot,
                    seq: id.seq,
                    ts: stamp.ts,
                    clock_ok: stamp.clock_ok,
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
                let placement = Placement {
                    up_ms: up_ms.filter(|_| !stamp.clock_ok),
                    held: !stamp.clock_ok && fix.is_none(),
                };
                let stored = writer.report(node_id, &row, placement)?;
                if let Some(oldest) = report.oldest {
                    self.oldest(writer, node_id, node, oldest)?;
                }
                self.handled(writer, node_id, (site, node), id, (before, !stored), news)?;
                Ok(if stored {
                    Outcome::Stored {
                        unknown_node,
                        stamped: !stamp.clock_ok,
                    }
                } else {
                    Outcome::Duplicate
                })
            }
            Uplink::Status(status) => {
                let presence = Presence::of(&status);
                let latest = self
                    .staged_presence
                    .get(node)
                    .or_else(|| self.presence.get(node));
                let transition = latest.is_none_or(|latest| presence > *latest);
                if !transition {
                    return Ok(Outcome::Status { transition });
                }
                writer.status(
                    node_id,
                    message.received_ms,
                    &status,
                    message.payload,
                    message.retained,
                )?;
                self.staged_presence.insert(node.to_owned(), presence);
                if let Status::Online(birth) = &status {
                    // A new connection: say again what is handled, the node may have
                    // missed it.
                    self.oldest(writer, node_id, node, birth.oldest)?;
                    let boot = self.boots.get(writer, node_id, node, birth.oldest.boot)?;
                    if let Some(seq) = boot.state.acked {
                        news.push(AckNews {
                            site: site.to_owned(),
                            node: node.to_owned(),
                            boot: birth.oldest.boot,
                            seq,
                        });
                    }
                }
                Ok(Outcome::Status { transition })
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
            let node_id = writer.node(topic.node, topic.site)?;
            let before = self
                .boots
                .get(writer, node_id, topic.node, id.boot)?
                .state
                .acked;
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

    /// The node says every report before `oldest` is acknowledged or gone: in that boot
    /// and in every earlier one. Count the gone ones as lost on the node and never wait
    /// for them.
    fn oldest(
        &mut self,
        writer: &mut Writer<'_>,
        node_id: i64,
        node: &str,
        oldest: ReportId,
    ) -> Result<(), StorageError> {
        // The store must see this group's progress to find the earlier boots' gaps.
        self.boots.save(writer)?;
        for boot in writer.boots_with_gaps(node_id, oldest.boot)? {
            let top = self.boots.get(writer, node_id, node, boot)?.state.top;
            if let Some(top) = top {
                let seq = top.saturating_add(1);
                self.declare_gone(writer, node_id, node, ReportId { boot, seq })?;
            }
        }
        self.declare_gone(writer, node_id, node, oldest)
    }

    /// Every report of `until`'s boot before it is handled or gone: record the gone ones.
    fn declare_gone(
        &mut self,
        writer: &mut Writer<'_>,
        node_id: i64,
        node: &str,
        until: ReportId,
    ) -> Result<(), StorageError> {
        let boot = self.boots.get(writer, node_id, node, until.boot)?;
        let next = boot.next();
        if until.seq <= next {
            return Ok(());
        }
        // The gaps between the handled reports, as runs of seqs (never seq by seq: a
        // node may declare billions).
        let mut runs = Vec::new();
        let mut start = next;
        for &seq in boot.above.range(next..until.seq) {
            if seq > start {
                runs.push((start, seq - 1));
            }
            start = seq + 1;
        }
        if start < until.seq {
            runs.push((start, until.seq - 1));
        }
        let lost: u64 = runs.iter().map(|(a, b)| u64::from(b - a) + 1).sum();
        boot.above = boot.above.split_off(&until.seq);
        boot.state.from_seq = until.seq;
        boot.state.acked = Some(until.seq - 1);
        boot.lost += lost as i64;
        boot.dirty = true;
        boot.advance();
        for run in runs {
            writer.add_lost(node_id, until.boot, run)?;
        }
        self.lost.1 += lost as i64;
        if lost > 0 {
            self.notices.push(Notice::Lost {
                node: node.to_owned(),
                boot: until.boot,
                lost,
            });
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
        let boot = self.boots.get(writer, node_id, node, id.boot)?;
        if id.seq >= boot.next() {
            boot.above.insert(id.seq);
            boot.dirty = true;
        }
        if boot.state.top.is_none_or(|top| id.seq > top) {
            boot.state.top = Some(id.seq);
            boot.dirty = true;
        }
        let mut after = boot.advance();
        if boot.above.len() > MAX_AHEAD {
            let lowest = boot.above.first().copied().unwrap_or_default();
            self.notices.push(Notice::PastGap {
                node: node.to_owned(),
                boot: id.boot,
            });
            let seq = ReportId {
                boot: id.boot,
                seq: lowest,
            };
            self.declare_gone(writer, node_id, node, seq)?;
            after = self.boots.get(writer, node_id, node, id.boot)?.advance();
        }
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

    /// Writes what changed into the group, before it commits.
    pub fn save(&mut self, writer: &mut Writer<'_>) -> Result<(), StorageError> {
        self.boots.save(writer)
    }

    /// The group committed: its changes count now. Returns the totals to show.
    pub fn committed(&mut self) -> Totals {
        self.presence.extend(self.staged_presence.drain());
        self.lost.0 = self.lost.0.saturating_add_signed(self.lost.1);
        self.lost.1 = 0;
        self.boots.trim();
        Totals {
            online: self.presence.values().filter(|p| !p.offline).count(),
            lost: self.lost.0,
            restamped: std::mem::take(&mut self.restamped),
            notices: std::mem::take(&mut self.notices),
        }
    }

    /// The group failed to commit: forget what it changed, so it is read from the store
    /// again.
    pub fn forget(&mut self) {
        self.boots = Boots::default();
        self.staged_presence.clear();
        self.lost.1 = 0;
        self.restamped = 0;
        self.notices.clear();
    }
}

/// Progress and clock of one node's boot in this process.
struct Boot {
    node_id: i64,
    state: BootState,
    /// Handled reports above the watermark (arrived out of order).
    above: BTreeSet<u32>,
    /// Change of the reports declared lost since the last save.
    lost: i64,
    /// Changed since the last save.
    dirty: bool,
}

impl Boot {
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

/// The boots in memory: the last [`KEEP_BOOTS`] used of each node.
#[derive(Default)]
struct Boots {
    /// Per node, least recently used first.
    nodes: HashMap<String, Vec<(u32, Boot)>>,
}

impl Boots {
    /// A node's boot: from memory, or read from the store.
    fn get(
        &mut self,
        writer: &mut Writer<'_>,
        node_id: i64,
        node: &str,
        boot: u32,
    ) -> Result<&mut Boot, StorageError> {
        if !self.nodes.contains_key(node) {
            self.nodes.insert(node.to_owned(), Vec::new());
        }
        let boots = self.nodes.get_mut(node).expect("inserted above");
        match boots.iter().position(|(b, _)| *b == boot) {
            Some(at) => {
                // Least recently used first: the one in use goes last (it mostly is).
                if at + 1 < boots.len() {
                    let used = boots.remove(at);
                    boots.push(used);
                }
            }
            None => {
                let state = writer.boot_state(node_id, boot)?.unwrap_or_default();
                let mut loaded = Boot {
                    node_id,
                    state,
                    above: BTreeSet::new(),
                    lost: 0,
                    dirty: false,
                };
                loaded.above = writer
                    .handled_from(node_id, node, boot, loaded.next())?
                    .into_iter()
                    .collect();
                boots.push((boot, loaded));
            }
        }
        Ok(&mut boots.last_mut().expect("pushed above").1)
    }

    /// Writes every changed boot into the group.
    fn save(&mut self, writer: &mut Writer<'_>) -> Result<(), StorageError> {
        for (number, boot) in self.nodes.values_mut().flatten() {
            if boot.dirty {
                writer.set_boot_state(boot.node_id, *number, &boot.state, boot.lost)?;
                boot.dirty = false;
                boot.lost = 0;
            }
        }
        Ok(())
    }

    /// Keeps the last [`KEEP_BOOTS`] of each node (all are saved by now).
    fn trim(&mut self) {
        for boots in self.nodes.values_mut() {
            let excess = boots.len().saturating_sub(KEEP_BOOTS);
            boots.drain(..excess);
        }
    }

    /// Boots in memory.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.nodes.values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOPIC: &str = "parklight/v1/remiseparken/pole-017/telemetry";
    const STATUS: &str = "parklight/v1/remiseparken/pole-017/status";
    const AT: i64 = 1_764_093_601_000;

    /// A message as the broker delivers it.
    struct Owned {
        topic: String,
        payload: Vec<u8>,
        received_ms: i64,
        retained: bool,
    }

    fn message(topic: &str, payload: String) -> Owned {
        Owned {
            topic: topic.into(),
            payload: payload.into_bytes(),
            received_ms: AT,
            retained: false,
        }
    }

    fn report(boot: u32, seq: u32, extra: &str) -> Owned {
        message(
            TOPIC,
            format!(
                r#"{{"v":1,"boot":{boot},"seq":{seq},"ts":1764093600000,"period_s":60,"lux":{{"avg":6,"min":5,"max":7}},"motion":1,"lamp":{{"on":true,"level":80}}{extra}}}"#
            ),
        )
    }

    fn birth(boot: u32, conn: u32, oldest: (u32, u32)) -> Owned {
        message(
            STATUS,
            format!(
                r#"{{"v":1,"state":"online","boot":{boot},"conn":{conn},"oldest":{{"boot":{},"seq":{}}}}}"#,
                oldest.0, oldest.1
            ),
        )
    }

    fn will(boot: u32, conn: u32) -> Owned {
        message(
            STATUS,
            format!(r#"{{"v":1,"state":"offline","reason":"lost","boot":{boot},"conn":{conn}}}"#),
        )
    }

    fn retained(mut message: Owned) -> Owned {
        message.retained = true;
        message
    }

    struct Fixture {
        dir: tempfile::TempDir,
        store: Store,
        ingest: Ingest,
        totals: Totals,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path(), 100).unwrap();
            let ingest =
                Ingest::new("parklight/v1", &[Site::remiseparken()], 300_000, &store).unwrap();
            Fixture {
                dir,
                store,
                ingest,
                totals: Totals::default(),
            }
        }

        /// A restarted gateway on the same store (knowing `sites`).
        fn restart(&mut self, sites: &[Site]) {
            self.store = Store::open(self.dir.path(), 100).unwrap();
            self.ingest = Ingest::new("parklight/v1", sites, 300_000, &self.store).unwrap();
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
                        retained: m.retained,
                    };
                    self.ingest
                        .handle(&mut writer, &incoming, &mut news)
                        .unwrap()
                })
                .collect();
            self.ingest.save(&mut writer).unwrap();
            writer.commit().unwrap();
            self.totals = self.ingest.committed();
            (outcomes, news.iter().map(|n| (n.boot, n.seq)).collect())
        }

        fn lost(&self) -> u64 {
            self.store.lost_on_node("pole-017").unwrap()
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
        f.restart(&[]);
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
    fn a_report_resent_after_its_raw_row_went_is_a_duplicate() {
        let mut f = Fixture::new();
        f.group(&[report(7, 0, ""), report(7, 1, "")]);
        f.store.compact(i64::MAX / 4, &|| false).unwrap();
        f.store.retain(i64::MAX / 4, None, &|| false).unwrap();
        assert_eq!(f.store.raw_report_count().unwrap(), 1, "the newest stays");
        f.restart(&[Site::remiseparken()]);
        let (outcomes, acks) = f.group(&[report(7, 0, "")]);
        assert_eq!(outcomes, [Outcome::Duplicate]);
        assert_eq!(acks, [(7, 1)]);
        f.store.compact(i64::MAX / 4, &|| false).unwrap();
        assert_eq!(f.store.report_count().unwrap(), 2, "not a second point");
    }

    #[test]
    fn a_report_past_a_gap_is_a_duplicate_when_resent_after_retention() {
        let mut f = Fixture::new();
        // 1 never arrived; 2 and 3 did, past the gap, and wait there for days.
        f.group(&[report(7, 0, ""), report(7, 2, ""), report(7, 3, "")]);
        f.store.compact(i64::MAX / 4, &|| false).unwrap();
        f.store.retain(i64::MAX / 4, None, &|| false).unwrap();
        f.restart(&[Site::remiseparken()]);
        // The node, back after a week, still holds 1 to 3 unacknowledged.
        let (outcomes, acks) = f.group(&[report(7, 1, ""), report(7, 2, ""), report(7, 3, "")]);
        assert!(
            matches!(
                outcomes[..],
                [
                    Outcome::Stored { .. },
                    Outcome::Duplicate,
                    Outcome::Duplicate
                ]
            ),
            "{outcomes:?}"
        );
        assert_eq!(acks.last(), Some(&(7, 3)));
        f.store.compact(i64::MAX / 4, &|| false).unwrap();
        assert_eq!(f.store.report_count().unwrap(), 4, "no second point");
        // Once the gap is closed, retention takes them as any other.
        f.store.retain(i64::MAX / 4, None, &|| false).unwrap();
        assert_eq!(f.store.raw_report_count().unwrap(), 1, "the newest stays");
    }

    #[test]
    fn reports_the_node_declared_gone_are_counted_and_not_waited_for() {
        let mut f = Fixture::new();
        f.group(&[report(7, 0, "")]);
        // Reports 1 to 4 were dropped on the node; report 5 says so.
        let (_, acks) = f.group(&[report(7, 5, r#","oldest":{"boot":7,"seq":5}"#)]);
        assert_eq!(acks, [(7, 5)]);
        assert_eq!((f.lost(), f.totals.lost), (4, 4));
        // Said again, nothing more is lost.
        f.group(&[report(7, 6, r#","oldest":{"boot":7,"seq":5}"#)]);
        assert_eq!((f.lost(), f.totals.lost), (4, 4));
        // Report 3 was only late: stored, and no longer lost.
        let (outcomes, _) = f.group(&[report(7, 3, "")]);
        assert!(
            matches!(outcomes[0], Outcome::Stored { .. }),
            "{outcomes:?}"
        );
        assert_eq!((f.lost(), f.totals.lost), (3, 3));
        assert_eq!(f.group(&[report(7, 3, "")]).0, [Outcome::Duplicate]);
        assert_eq!(f.lost(), 3);
        f.restart(&[]);
        assert_eq!(f.group(&[report(7, 3, "")]).0, [Outcome::Duplicate]);
        assert_eq!(f.group(&[]).1, []);
        assert_eq!(f.totals.lost, 3, "known again after a restart");
    }

    #[test]
    fn gaps_of_earlier_boots_are_lost_when_a_later_boot_says_so() {
        let mut f = Fixture::new();
        // Boot 6: 0, 1, then 4 and 5 arrived; 2 and 3 never will.
        f.group(&[
            report(6, 0, ""),
            report(6, 1, ""),
            report(6, 4, ""),
            report(6, 5, ""),
        ]);
        assert_eq!(f.lost(), 0);
        // Boot 7's birth: everything before (7, 0) is acknowledged or gone.
        let (_, acks) = f.group(&[birth(7, 1, (7, 0))]);
        assert_eq!(f.lost(), 2);
        assert!(acks.is_empty(), "boot 7 has nothing handled yet: {acks:?}");
        // And boot 6 is done: its reports are acknowledged to the end.
        let (outcomes, acks) = f.group(&[report(6, 5, "")]);
        assert_eq!((outcomes, acks), (vec![Outcome::Duplicate], vec![(6, 5)]));
        // A billion declared gone is counted without counting one by one.
        f.group(&[report(
            7,
            1_000_000_000,
            r#","oldest":{"boot":7,"seq":1000000000}"#,
        )]);
        assert_eq!(f.lost(), 1_000_000_002);
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
    fn a_dead_letter_keeps_only_the_start_of_a_long_topic() {
        let mut f = Fixture::new();
        let long = format!("parklight/v1/{}/x/telemetry", "a".repeat(60_000));
        f.group(&[message(&long, "{}".into())]);
        let letter = &f.store.dead_letters(1).unwrap()[0];
        assert_eq!(letter.reason, "bad_topic");
        assert_eq!(letter.topic.len(), crate::store::DEAD_LETTER_TOPIC_BYTES);
    }

    #[test]
    fn a_birth_re_announces_the_watermark() {
        let mut f = Fixture::new();
        f.group(&[report(7, 0, "")]);
        let (outcomes, acks) = f.group(&[birth(7, 2, (7, 1))]);
        assert_eq!(outcomes, [Outcome::Status { transition: true }]);
        assert_eq!(acks, [(7, 0)]);
    }

    #[test]
    fn only_new_statuses_change_presence_and_are_recorded() {
        let mut f = Fixture::new();
        let (outcomes, _) = f.group(&[birth(7, 1, (7, 0)), will(7, 1), birth(7, 2, (7, 0))]);
        assert_eq!(outcomes, vec![Outcome::Status { transition: true }; 3]);
        assert_eq!(f.totals.online, 1);
        // The will of connection 1 again, late; the current birth again, retained (as on
        // every new subscription) and repeated (QoS 1): none is a change.
        let (outcomes, _) = f.group(&[
            will(7, 1),
            retained(birth(7, 2, (7, 0))),
            birth(7, 2, (7, 0)),
        ]);
        assert_eq!(outcomes, vec![Outcome::Status { transition: false }; 3]);
        assert_eq!(f.store.statuses_after(0, 100).unwrap().len(), 3);
        // A restarted gateway knows who is online before anyone says so again.
        f.restart(&[]);
        assert_eq!(f.group(&[]).0, []);
        assert_eq!(f.totals.online, 1);
        let (outcomes, _) = f.group(&[retained(birth(7, 2, (7, 0))), will(7, 2)]);
        assert_eq!(
            outcomes,
            [
                Outcome::Status { transition: false },
                Outcome::Status { transition: true }
            ]
        );
        assert_eq!(f.totals.online, 0);
    }

    #[test]
    fn a_node_in_no_site_file_is_kept_in_the_site_its_topic_names() {
        let mut f = Fixture::new();
        let mut stray = report(1, 0, "");
        stray.topic = "parklight/v1/norrebroparken/pole-new/telemetry".into();
        let (outcomes, _) = f.group(&[stray]);
        assert!(matches!(
            outcomes[0],
            Outcome::Stored {
                unknown_node: true,
                ..
            }
        ));
        let rows = f.store.reports_after(0, 10).unwrap();
        assert_eq!(
            (rows[0].site.as_deref(), rows[0].report.zone.as_deref()),
            (Some("norrebroparken"), None)
        );
    }

    #[test]
    fn memory_holds_a_few_boots_per_node_whatever_the_boots_sent() {
        let mut f = Fixture::new();
        for boot in 0..50 {
            f.group(&[report(boot, 0, "")]);
        }
        assert_eq!(f.ingest.boots.len(), KEEP_BOOTS);
        // An evicted boot is read back from the store when it reports again.
        let (outcomes, acks) = f.group(&[report(3, 0, ""), report(3, 1, "")]);
        assert_eq!(outcomes[0], Outcome::Duplicate);
        assert_eq!(acks, [(3, 0), (3, 1)]);
    }

    #[test]
    fn a_failed_group_changes_nothing_that_the_next_attempt_relies_on() {
        let mut f = Fixture::new();
        f.group(&[report(7, 0, "")]);
        // A group that fails: a never-seen node, a loss and a birth, rolled back.
        let mut fresh = report(1, 5, r#","oldest":{"boot":1,"seq":5}"#);
        fresh.topic = "parklight/v1/remiseparken/pole-new/telemetry".into();
        {
            let mut writer = f.store.write().unwrap();
            let mut news = Vec::new();
            for m in [&fresh, &birth(7, 1, (7, 1))] {
                let incoming = Incoming {
                    topic: &m.topic,
                    payload: &m.payload,
                    received_ms: m.received_ms,
                    retained: m.retained,
                };
                f.ingest.handle(&mut writer, &incoming, &mut news).unwrap();
            }
            f.ingest.save(&mut writer).unwrap();
            // dropped: rolled back
        }
        f.ingest.forget();
        // The same group again commits, with every count exact.
        let (outcomes, acks) = f.group(&[fresh, birth(7, 1, (7, 1))]);
        assert!(
            matches!(outcomes[0], Outcome::Stored { .. }),
            "{outcomes:?}"
        );
        assert_eq!(outcomes[1], Outcome::Status { transition: true });
        assert_eq!(acks, [(1, 5), (7, 0)]);
        assert_eq!(f.store.lost_on_node("pole-new").unwrap(), 5);
        assert_eq!((f.totals.lost, f.totals.online), (5, 1));
        assert_eq!(f.store.report_count().unwrap(), 2);
    }

    #[test]
    fn held_reports_reach_the_blocks_at_their_real_time_and_none_is_lost() {
        use crate::store::{HOUR_MS, Selector};
        const SIX_PM: i64 = 1_764_093_600_000;
        let clockless = |seq: u32| {
            message(
                TOPIC,
                format!(
                    r#"{{"v":1,"boot":7,"seq":{seq},"ts":0,"up_ms":{},"period_s":60,"lux":null,"motion":1,"lamp":{{"on":true,"level":80}}}}"#,
                    (seq + 1) * 60_000
                ),
            )
        };
        let mut f = Fixture::new();
        // Boot 7 starts without a clock: four windows, stamped from their arrival, held.
        f.group(&[clockless(0), clockless(1), clockless(2), clockless(3)]);
        // A report of the boot before, resent, for 18:00, and every hour long closed:
        // compaction leaves the held reports, and every later report of their node.
        f.group(&[report(6, 0, "")]);
        f.store.compact(i64::MAX / 4, &|| false).unwrap();
        assert_eq!(f.store.cursor(crate::store::history::FOLDED).unwrap(), 0);
        // The node has its clock: its window ending 18:30 is the boot's fourth minute.
        let mut fixed = message(
            TOPIC,
            format!(
                r#"{{"v":1,"boot":7,"seq":4,"ts":{},"up_ms":300000,"period_s":60,"lux":null,"motion":1,"lamp":{{"on":true,"level":80}}}}"#,
                SIX_PM + 30 * 60_000
            ),
        );
        fixed.received_ms = SIX_PM + 30 * 60_000 + 500;
        f.group(&[fixed]);
        assert_eq!(f.totals.restamped, 4);
        f.store.compact(i64::MAX / 4, &|| false).unwrap();
        assert_eq!(f.store.cursor(crate::store::history::FOLDED).unwrap(), 6);
        assert_eq!(f.store.report_count().unwrap(), 6, "none lost");
        let minutes: Vec<(i64, u32)> = f
            .store
            .series(
                Selector::Node("pole-017"),
                SIX_PM - HOUR_MS,
                SIX_PM + HOUR_MS,
                60_000,
            )
            .unwrap()
            .iter()
            .map(|b| ((b.start - SIX_PM) / 60_000, b.reports))
            .collect();
        assert_eq!(
            minutes,
            [(0, 1), (26, 1), (27, 1), (28, 1), (29, 1), (30, 1)]
        );
    }

    #[test]
    fn a_report_held_too_long_keeps_its_stamp() {
        let mut f = Fixture::new();
        let mut clockless = report(7, 0, r#","up_ms":60000"#);
        clockless.payload = String::from_utf8(clockless.payload)
            .unwrap()
            .replace("1764093600000", "0")
            .into_bytes();
        f.group(&[clockless]);
        let stamped = f.store.reports_after(0, 10).unwrap();
        assert!(stamped[0].held);
        let over = AT + crate::clock::hold_ms(60);
        assert_eq!(f.store.release_held(over - 1).unwrap(), 0);
        assert_eq!(f.store.release_held(over).unwrap(), 1);
        let released = f.store.reports_after(0, 10).unwrap();
        assert!(!released[0].held);
        assert_eq!(released[0].report.ts, stamped[0].report.ts);
    }

    #[test]
    fn reports_far_past_a_gap_that_never_closes_are_bounded() {
        let mut f = Fixture::new();
        let reports: Vec<Owned> = (1..=MAX_AHEAD as u32 + 10)
            .map(|seq| report(7, seq, ""))
            .collect();
        let (_, acks) = f.group(&reports);
        assert_eq!(f.lost(), 1, "report 0 is taken as lost");
        assert_eq!(acks.last(), Some(&(7, MAX_AHEAD as u32 + 10)));
        assert!(f.ingest.boots.nodes["pole-017"][0].1.above.is_empty());
    }
}
