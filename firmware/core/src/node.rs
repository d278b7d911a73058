//! The node: one pure state machine that runs a light controller.
//!
//! Inputs go in with the time ([`Node::handle`]); actions come out through an
//! [`Outbox`] — set the lamp, publish, subscribe, persist. The node does no I/O, so the
//! same code runs on a board and in the simulator.

use core::fmt::Write;

use parklight_protocol::event::{Detail, FaultState};
use parklight_protocol::status::{Birth, Offline, OfflineReason};
use parklight_protocol::telemetry::Fault;
use parklight_protocol::topic::{node_topic, parse_node_topic};
use parklight_protocol::{
    Ack, Command, CommandId, Config, Event, EventKind, Faults, Id, Lamp, Lux, MAX_PAYLOAD, Message,
    NodeTopic, PayloadBuf, ReportId, Status, Telemetry, TopicBuf, salvage_command_id,
};

use crate::buffer::ReportBuffer;
use crate::control::{Clock, Controller};
use crate::motion::MotionDetector;
use crate::nv::{Persist, Restored};
use crate::sensor::{Sample, SensorFailed};
use crate::window::Window;

/// The firmware version a node reports in its birth.
pub const FIRMWARE_VERSION: &str = env!("CARGO_PKG_VERSION");
/// Reports a node holds by default while unacknowledged.
pub const DEFAULT_BUFFER: usize = 64;
/// Below this level a lamp draws too little to judge whether it works.
const LAMP_CHECK_MIN_LEVEL: u8 = 10;
/// A lamp at or above [`LAMP_CHECK_MIN_LEVEL`] drawing less than this is dark.
const LAMP_MIN_WATTS: f64 = 0.5;
/// Time after a level change before power readings are judged.
const LAMP_SETTLE_MS: u64 = 3_000;
/// A live ack's `now` is the gateway's clock when it sent the ack, and an ack can be
/// delivered late: the gateway sends acks on reconnecting that it could not send while
/// the broker was away, and a broker holding a persistent session delivers acks queued
/// while the node was away, neither of them retained. So `now` is a lower bound on the
/// time, and a clock behind it by more than this is certainly slow and is put forward
/// to it. 5 s tolerates the gateway's own error without moving windows back and forth,
/// and catches a crystal's drift (about 2 s a day at 20 ppm) within days.
const CLOCK_BEHIND_MS: i64 = 5_000;
/// A clock ahead of an ack's `now` may only be reading a late ack: it is put back to
/// `now` only when ahead by more than this, the gateway's default clock skew and the
/// least it accepts (`clock_skew_s`). Beyond it the gateway takes the `ts` of a report
/// that arrives promptly for no clock, so the node must not stay there; within it an ack
/// late by up to 5 minutes never moves a right clock. The costs: a clock fast by less
/// stays fast (a crystal 20 ppm fast takes about half a year to get there), and an ack
/// held up longer puts a right clock back by its delay until the next prompt ack puts it
/// forward (no report repeats a `ts` on the way: [`Node::set_clock`]).
pub const CLOCK_AHEAD_MS: i64 = 300_000;
/// The lamp's learned contribution is written again when it has moved by more than this
/// fraction from what was last written, so the noise of learning writes nothing...
const LAMP_LUX_WRITE_CHANGE: f64 = 0.25;
/// ... and at most this often (ms of uptime).
const LAMP_LUX_WRITE_EVERY_MS: u64 = 3_600_000;
/// The longest window a report can describe: `period_s` is at most 3600 (PROTOCOL.md).
const MAX_WINDOW_MS: u64 = 3_600_000;
/// The Unix ms a valid clock can read: from 2020-01-01 (PROTOCOL.md clock rules) to
/// before the year 10000, which keeps every sum of a time and an uptime far from
/// overflowing. An RTC or an ack outside it (a flat battery reads 2000) is no clock.
const VALID_CLOCK_MS: core::ops::Range<i64> =
    parklight_protocol::EARLIEST_VALID_TS..253_402_300_800_000;

/// Who the node is and where it publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Topic prefix, `parklight/v1` by default.
    pub prefix: heapless::String<64>,
    /// Site id.
    pub site: Id,
    /// Node id (also the MQTT client id).
    pub node: Id,
}

/// Tunables of PROTOCOL.md and of fault detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Resend a report not acknowledged this long after its last send.
    pub ack_timeout_ms: u64,
    /// Replays and resends per second, besides live reports.
    pub resend_rate: u16,
    /// Give a report up after this many resends.
    pub max_resends: u8,
    /// Report interval until a config sets one.
    pub default_interval_s: u16,
    /// Consecutive failed lux readings that raise `sensor_fault`.
    pub sensor_fault_after: u8,
    /// Lux reads in a row still ranging (no reading, no failure) that raise
    /// `sensor_fault`: a sensor that never settles gives no light reading, as a failed
    /// one does. The auto-ranging VEML6030/VEML7700 ([`crate::sensor::AutoRangingVeml`])
    /// settles from any range in steady light within 6 reads (configure, four range
    /// steps, one skipped sample), and light that moves across a range, as at dusk or
    /// when its lamp comes on, costs 2 to 3 more (a step, maybe a second one taken on
    /// the stale sample read right after it, and a skip); 20 leaves room for
    /// several such moves in a row and still catches a stuck sensor in 20 s at the
    /// usual read a second. A count, not a time, since the settling takes reads.
    pub sensor_ranging_fault_after: u8,
    /// Consecutive dark power readings that raise `lamp_fault`.
    pub lamp_fault_after: u8,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            ack_timeout_ms: 60_000,
            resend_rate: 10,
            max_resends: 10,
            default_interval_s: 60,
            sensor_fault_after: 3,
            sensor_ranging_fault_after: 20,
            lamp_fault_after: 3,
        }
    }
}

/// The time, twice: `up_ms` runs the node's own timeline (windows, profiles, `up_ms` in
/// reports); `net_ms` times the network (ack timeout, resend pacing). On a board both
/// come from one monotonic timer; a simulator running faster than real time keeps
/// `net_ms` on the real clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Milliseconds since boot.
    pub up_ms: u64,
    /// Milliseconds of network time.
    pub net_ms: u64,
}

/// Something that happened to the node.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Input<'a> {
    /// Time passed; call at least once a second.
    Tick,
    /// A light sensor read: a sample, or `Err` when the sensor failed. Three failed reads
    /// in a row raise `sensor_fault` ([`Settings::sensor_fault_after`]);
    /// [`Sample::Ranging`] is neither a reading nor a failure, unless it goes on for
    /// [`Settings::sensor_ranging_fault_after`] reads. A reading clears the fault.
    Lux(Result<Sample, SensorFailed>),
    /// A power reading of the lamp circuit in watts.
    Power(f64),
    /// The PIR output changed to high (`true`) or low.
    Pir(bool),
    /// The real-time clock says it is this Unix ms; a time before 2020 (a flat battery)
    /// or after 9999 is ignored.
    Clock(i64),
    /// The MQTT connection is up (after CONNACK).
    Connected,
    /// The MQTT connection is gone.
    Disconnected,
    /// A message arrived on a subscribed topic.
    Message {
        /// Its topic.
        topic: &'a str,
        /// Its payload.
        payload: &'a [u8],
        /// Whether the broker delivered it from its retained store.
        retained: bool,
    },
    /// The node is about to stop on purpose.
    Shutdown,
}

/// Something the node wants done.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Action<'a> {
    /// Drive the lamp towards this level (percent).
    SetLamp(u8),
    /// Subscribe (QoS 1) to a topic.
    Subscribe(&'a str),
    /// Publish (QoS 1).
    Publish {
        /// Topic.
        topic: &'a str,
        /// Payload.
        payload: &'a [u8],
        /// Retain flag.
        retain: bool,
    },
    /// Write this part of the state to non-volatile memory.
    Persist(Persist),
}

/// Where a node's actions go.
pub trait Outbox {
    /// Carries out one action.
    fn act(&mut self, action: Action<'_>);
}

impl<F: FnMut(Action<'_>)> Outbox for F {
    fn act(&mut self, action: Action<'_>) {
        self(action)
    }
}

/// Counters for a display.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Reports made since this boot.
    pub reports: u32,
    /// Reports acknowledged since this boot.
    pub acknowledged: u32,
    /// Reports held now.
    pub buffered: u32,
    /// Reports given up unacknowledged since this boot.
    pub dropped: u32,
}

/// A light controller. `N` is the report buffer's capacity.
pub struct Node<const N: usize = DEFAULT_BUFFER> {
    identity: Identity,
    settings: Settings,
    boot: u32,
    next_seq: u32,
    next_eseq: u32,
    conn: u32,
    connected: bool,
    clock_offset_ms: Option<i64>,
    config: Option<Config>,
    /// Hash of the last config refused, so its retained copy is not answered again.
    rejected_config: Option<u32>,
    controller: Controller,
    level: u8,
    level_since_ms: u64,
    pir: MotionDetector,
    window: Window,
    /// The `ts` of the last report made (0 while the node had no clock): the next one
    /// ends later, whatever the clock did.
    last_ts: u64,
    buffer: ReportBuffer<N>,
    announce_oldest: bool,
    acknowledged: u32,
    dropped: u32,
    faults: Faults,
    failed_lux_readings: u8,
    /// Reads still ranging since the last reading (failed reads leave it as it is).
    ranging_lux_readings: u8,
    dark_power_readings: u8,
    resend_tokens: f32,
    tokens_at_ms: u64,
    start_event: Option<EventKind>,
    /// The lamp's contribution last asked to be written, and when (uptime ms).
    lamp_lux_written: Option<(f64, u64)>,
}

impl<const N: usize> Node<N> {
    /// Starts a node from what non-volatile memory held. The first action is persisting
    /// the increased boot counter, before anything is published; the second sets the
    /// lamp to its safe boot level.
    pub fn start(
        identity: Identity,
        settings: Settings,
        restored: Restored<N>,
        after_power_loss: bool,
        now: Now,
        out: &mut impl Outbox,
    ) -> Self {
        let boot = restored.boot.saturating_add(1);
        out.act(Action::Persist(Persist::Boot));
        let mut controller = Controller::new();
        if let Some(lux_per_level) = restored.lamp_lux_per_level {
            controller.restore_lamp_lux_per_level(lux_per_level);
        }
        // What was restored is what memory holds.
        let lamp_lux_written = controller.lamp_lux_per_level().map(|v| (v, now.up_ms));
        let config = restored
            .config
            .filter(|config| controller.configure(config).is_ok());
        let mut buffer = ReportBuffer::default();
        for report in restored.reports {
            buffer.push(report);
        }
        let start_event = match (boot, after_power_loss) {
            (1, _) => None,
            (_, true) => Some(EventKind::PowerLoss),
            (_, false) => Some(EventKind::Reboot),
        };
        let mut node = Node {
            identity,
            settings,
            boot,
            next_seq: 0,
            next_eseq: 0,
            conn: 0,
            connected: false,
            clock_offset_ms: None,
            config,
            rejected_config: None,
            controller,
            level: 100,
            level_since_ms: now.up_ms,
            pir: MotionDetector::default(),
            window: Window::new(now.up_ms, now.up_ms),
            last_ts: 0,
            buffer,
            announce_oldest: false,
            acknowledged: 0,
            dropped: 0,
            faults: Faults::NONE,
            failed_lux_readings: 0,
            ranging_lux_readings: 0,
            dark_power_readings: 0,
            resend_tokens: 0.0,
            tokens_at_ms: now.net_ms,
            start_event,
            lamp_lux_written,
        };
        node.window = Window::new(now.up_ms, node.window_end(now.up_ms));
        out.act(Action::SetLamp(node.level));
        node
    }

    /// The MQTT client id: the node id.
    pub fn client_id(&self) -> &str {
        self.identity.node.as_str()
    }

    /// The node's identity.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The current boot counter.
    pub fn boot(&self) -> u32 {
        self.boot
    }

    /// The running config.
    pub fn config(&self) -> Option<&Config> {
        self.config.as_ref()
    }

    /// The reports held, oldest first (what non-volatile memory keeps).
    pub fn buffered_reports(&self) -> impl Iterator<Item = &Telemetry> {
        self.buffer.reports()
    }

    /// The commanded lamp level.
    pub fn lamp_level(&self) -> u8 {
        self.level
    }

    /// The lux the lamp adds to its own light sensor per percent of level, once learned
    /// (what non-volatile memory keeps for [`Persist::LampLux`]).
    pub fn lamp_lux_per_level(&self) -> Option<f64> {
        self.controller.lamp_lux_per_level()
    }

    /// Whether the node has a valid clock.
    pub fn has_clock(&self) -> bool {
        self.clock_offset_ms.is_some()
    }

    /// Counters since boot.
    pub fn stats(&self) -> Stats {
        Stats {
            reports: self.next_seq,
            acknowledged: self.acknowledged,
            buffered: self.buffer.len() as u32,
            dropped: self.dropped,
        }
    }

    /// The topic and payload of the last will for the next connection.
    pub fn will(&self) -> (TopicBuf, PayloadBuf) {
        let will = Status::Offline(Offline {
            reason: OfflineReason::Lost,
            boot: self.boot,
            conn: self.conn + 1,
        });
        (
            self.topic(NodeTopic::Status),
            will.to_payload().unwrap_or_default(),
        )
    }

    /// The topic of one of this node's topics.
    pub fn topic(&self, kind: NodeTopic) -> TopicBuf {
        let id = &self.identity;
        node_topic(&id.prefix, id.site.as_str(), id.node.as_str(), kind).unwrap_or_default()
    }

    /// Handles one input at `now`, then does what the time calls for (lamp, report,
    /// resends).
    pub fn handle(&mut self, now: Now, input: Input<'_>, out: &mut impl Outbox) {
        match input {
            Input::Tick => {}
            Input::Lux(read) => self.on_lux(read, now, out),
            Input::Power(watts) => self.on_power(watts, now, out),
            Input::Pir(high) => {
                if self.pir.edge(high, now.up_ms) {
                    self.on_motion(now);
                }
            }
            Input::Clock(unix_ms) => {
                if VALID_CLOCK_MS.contains(&unix_ms) {
                    self.set_clock(unix_ms, now);
                }
            }
            Input::Connected => self.on_connected(now, out),
            Input::Disconnected => {
                self.connected = false;
                self.buffer.connection_lost();
            }
            Input::Message {
                topic,
                payload,
                retained,
            } => self.on_message(topic, payload, retained, now, out),
            Input::Shutdown => {
                if self.connected {
                    let status = Status::Offline(Offline {
                        reason: OfflineReason::Shutdown,
                        boot: self.boot,
                        conn: self.conn,
                    });
                    self.publish(NodeTopic::Status, &status, true, out);
                }
            }
        }
        if self.pir.poll(now.up_ms) {
            self.on_motion(now);
        }
        self.update_lamp(now, out);
        if now.up_ms >= self.window.end_ms {
            self.close_window(now, out);
        }
        self.pump(now, out);
    }

    fn clock(&self, up_ms: u64) -> Clock {
        Clock {
            up_ms,
            unix_ms: self.unix_at(up_ms),
        }
    }

    fn unix_at(&self, up_ms: u64) -> Option<i64> {
        self.clock_offset_ms.map(|offset| up_ms as i64 + offset)
    }

    /// Sets the clock and lines the running window up with it. A clock put back could end
    /// that window at or before the last report's `ts`, and a report with the `ts` of an
    /// earlier one overwrites it where points are keyed by time (InfluxDB): so the window
    /// then runs on to the first boundary at least half a window after the last `ts`
    /// ([`Node::window_end`]). Only as far as a report can describe ([`MAX_WINDOW_MS`]):
    /// needing more takes a clock put back by an hour less one interval, beyond the 5
    /// minutes of skew the gateway allows at any interval under 55 minutes, so the
    /// gateway took no `ts` of that clock from reports that arrived promptly.
    fn set_clock(&mut self, unix_ms: i64, now: Now) {
        let offset = unix_ms - now.up_ms as i64;
        self.clock_offset_ms = Some(offset);
        let start = self.window.start_ms;
        let mut end = self.window_end(start).max(now.up_ms + 1);
        // The uptime at which the new clock reads the last report's `ts`.
        let last_up = self.last_ts as i64 - offset;
        if last_up >= end as i64 {
            let after_last = self.window_end(last_up as u64);
            if after_last - start <= MAX_WINDOW_MS {
                end = after_last;
            }
        }
        self.window.end_ms = end;
    }

    fn interval_s(&self) -> u16 {
        self.config
            .as_ref()
            .and_then(|c| c.interval_s)
            .unwrap_or(self.settings.default_interval_s)
    }

    fn running_cfg(&self) -> u32 {
        self.config.as_ref().map_or(0, |c| c.cfg)
    }

    /// Where a window starting at `start_ms` ends: on a multiple of the interval in Unix
    /// time when the clock is valid (so every node's windows line up), and never less
    /// than half an interval long.
    fn window_end(&self, start_ms: u64) -> u64 {
        let interval = u64::from(self.interval_s()) * 1000;
        let Some(offset) = self.clock_offset_ms else {
            return start_ms + interval;
        };
        let unix_start = start_ms as i64 + offset;
        let boundary = (unix_start.div_euclid(interval as i64) + 1) * interval as i64;
        let end = (boundary - offset) as u64;
        if end - start_ms < interval / 2 {
            end + interval
        } else {
            end
        }
    }

    fn on_lux(&mut self, read: Result<Sample, SensorFailed>, now: Now, out: &mut impl Outbox) {
        match read {
            Ok(Sample::Lux(lux)) => {
                self.failed_lux_readings = 0;
                self.ranging_lux_readings = 0;
                self.window.lux(lux);
                self.controller.lux(lux, self.clock(now.up_ms));
                self.keep_lamp_lux(now, out);
                self.set_fault(Fault::Sensor, false, now, out);
            }
            Ok(Sample::Ranging) => {
                self.ranging_lux_readings = self.ranging_lux_readings.saturating_add(1);
                if self.ranging_lux_readings >= self.settings.sensor_ranging_fault_after {
                    self.set_fault(Fault::Sensor, true, now, out);
                }
            }
            Err(SensorFailed) => {
                self.failed_lux_readings = self.failed_lux_readings.saturating_add(1);
                if self.failed_lux_readings >= self.settings.sensor_fault_after {
                    self.set_fault(Fault::Sensor, true, now, out);
                }
            }
        }
    }

    /// Asks to write the lamp's learned contribution the first time it is learned, then
    /// when it has moved by more than [`LAMP_LUX_WRITE_CHANGE`] from what was written, at
    /// most once per [`LAMP_LUX_WRITE_EVERY_MS`].
    fn keep_lamp_lux(&mut self, now: Now, out: &mut impl Outbox) {
        let Some(learned) = self.controller.lamp_lux_per_level() else {
            return;
        };
        let due = self.lamp_lux_written.is_none_or(|(written, at_ms)| {
            now.up_ms.saturating_sub(at_ms) >= LAMP_LUX_WRITE_EVERY_MS
                && (learned - written).abs() > written * LAMP_LUX_WRITE_CHANGE
        });
        if due {
            self.lamp_lux_written = Some((learned, now.up_ms));
            out.act(Action::Persist(Persist::LampLux));
        }
    }

    fn on_power(&mut self, watts: f64, now: Now, out: &mut impl Outbox) {
        self.window.power(watts);
        let settled = now.up_ms.saturating_sub(self.level_since_ms) >= LAMP_SETTLE_MS;
        if self.level < LAMP_CHECK_MIN_LEVEL || !settled {
            self.dark_power_readings = 0;
            return;
        }
        if watts < LAMP_MIN_WATTS {
            self.dark_power_readings = self.dark_power_readings.saturating_add(1);
            if self.dark_power_readings >= self.settings.lamp_fault_after {
                self.set_fault(Fault::Lamp, true, now, out);
            }
        } else {
            self.dark_power_readings = 0;
            self.set_fault(Fault::Lamp, false, now, out);
        }
    }

    fn on_motion(&mut self, now: Now) {
        self.window.motion();
        self.controller.motion(self.clock(now.up_ms));
    }

    fn set_fault(&mut self, fault: Fault, active: bool, now: Now, out: &mut impl Outbox) {
        if self.faults.contains(fault) == active {
            return;
        }
        self.faults.set(fault, active);
        let state = if active {
            FaultState::Raised
        } else {
            FaultState::Cleared
        };
        self.event(EventKind::fault(fault, state), None, now, out);
    }

    fn update_lamp(&mut self, now: Now, out: &mut impl Outbox) {
        let level = self.controller.level(self.clock(now.up_ms));
        if level != self.level {
            self.level = level;
            self.level_since_ms = now.up_ms;
            self.dark_power_readings = 0;
            out.act(Action::SetLamp(level));
        }
    }

    fn close_window(&mut self, now: Now, out: &mut impl Outbox) {
        let interval = u64::from(self.interval_s()) * 1000;
        let ended = self.window.end_ms;
        // Contiguous windows, unless time jumped (the node was stalled) by more than one.
        let start = if now.up_ms - ended < interval {
            ended
        } else {
            now.up_ms
        };
        let next = Window::new(start, self.window_end(start));
        let window = core::mem::replace(&mut self.window, next);
        if self.buffer.make_room().is_some() {
            self.report_dropped();
        }
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        let id = ReportId {
            boot: self.boot,
            seq,
        };
        let oldest =
            core::mem::take(&mut self.announce_oldest).then(|| self.buffer.oldest().unwrap_or(id));
        self.last_ts = self.unix_at(window.end_ms).map_or(0, |t| t.max(0) as u64);
        let report = Telemetry {
            boot: self.boot,
            seq,
            ts: self.last_ts,
            up_ms: Some(window.end_ms),
            period_s: window.period_s(),
            lux: window.lux_summary().map(|lux| Lux {
                avg: round_to(lux.avg, 1000.0),
                min: round_to(lux.min, 1000.0),
                max: round_to(lux.max, 1000.0),
            }),
            motion: window.motion_count(),
            lamp: Lamp {
                on: self.level > 0,
                level: self.level,
                power_w: window.power_w().map(|w| round_to(w, 100.0)),
            },
            cfg: Some(self.running_cfg()),
            faults: self.faults,
            oldest,
            temp_c: None,
        };
        self.buffer.push(report);
        // The one write of the buffer per window: it also carries the acks and drops
        // since the last one.
        out.act(Action::Persist(Persist::Reports));
        if self.connected
            && let Some(index) = self.buffer.last_index()
        {
            self.send_buffered(index, now, out);
        }
    }

    fn report_dropped(&mut self) {
        self.dropped = self.dropped.saturating_add(1);
        self.announce_oldest = true;
    }

    fn send_buffered(&mut self, index: usize, now: Now, out: &mut impl Outbox) {
        let topic = self.topic(NodeTopic::Telemetry);
        if let Some(report) = self.buffer.mark_sent(index, now.net_ms) {
            publish_message(&topic, report, false, out);
        }
    }

    /// Replays and resends, oldest first, at most `resend_rate` a second.
    fn pump(&mut self, now: Now, out: &mut impl Outbox) {
        let rate = f32::from(self.settings.resend_rate);
        let elapsed = now.net_ms.saturating_sub(self.tokens_at_ms) as f32;
        self.tokens_at_ms = now.net_ms;
        self.resend_tokens = (self.resend_tokens + elapsed * rate / 1000.0).min(rate.max(1.0));
        if !self.connected {
            return;
        }
        while self.resend_tokens >= 1.0 {
            let Some(index) = self
                .buffer
                .next_due(now.net_ms, self.settings.ack_timeout_ms)
            else {
                break;
            };
            if self.buffer.exhausted(index, self.settings.max_resends) {
                self.buffer.remove(index);
                self.report_dropped();
                continue;
            }
            self.resend_tokens -= 1.0;
            self.send_buffered(index, now, out);
        }
    }

    fn on_connected(&mut self, now: Now, out: &mut impl Outbox) {
        self.connected = true;
        self.conn = self.conn.saturating_add(1);
        for kind in [NodeTopic::Config, NodeTopic::Cmd, NodeTopic::Ack] {
            out.act(Action::Subscribe(&self.topic(kind)));
        }
        let birth = Status::Online(Birth {
            boot: self.boot,
            conn: self.conn,
            fw: heapless::String::try_from(FIRMWARE_VERSION).ok(),
            interval_s: Some(self.interval_s()),
            cfg: Some(self.running_cfg()),
            oldest: self.buffer.oldest().unwrap_or(ReportId {
                boot: self.boot,
                seq: self.next_seq,
            }),
            buffered: Some(self.buffer.len() as u32),
            dropped: Some(self.dropped),
        });
        self.publish(NodeTopic::Status, &birth, true, out);
        if let Some(kind) = self.start_event.take() {
            self.event(kind, None, now, out);
        }
    }

    fn on_message(
        &mut self,
        topic: &str,
        payload: &[u8],
        retained: bool,
        now: Now,
        out: &mut impl Outbox,
    ) {
        let Ok(parsed) = parse_node_topic(&self.identity.prefix, topic) else {
            return;
        };
        if parsed.site != self.identity.site.as_str() || parsed.node != self.identity.node.as_str()
        {
            return;
        }
        match parsed.kind {
            NodeTopic::Config => self.on_config(payload, now, out),
            NodeTopic::Cmd => self.on_command(payload, now, out),
            NodeTopic::Ack => self.on_ack(payload, retained, now),
            NodeTopic::Telemetry | NodeTopic::Status | NodeTopic::Event => {}
        }
    }

    fn on_config(&mut self, payload: &[u8], now: Now, out: &mut impl Outbox) {
        // A retained config is delivered again on every connect: answer a refusal once.
        let fingerprint = fnv1a(payload);
        if self.rejected_config == Some(fingerprint) {
            return;
        }
        let config = match Config::decode(payload) {
            Ok(config) => config,
            Err(error) => {
                self.rejected_config = Some(fingerprint);
                let id = salvage_command_id(payload);
                return self.answer(id, Some(format_args!("{error}")), now, out);
            }
        };
        if config.cfg == self.running_cfg() {
            return;
        }
        if let Err(error) = self.controller.configure(&config) {
            self.rejected_config = Some(fingerprint);
            return self.answer(Some(config.id), Some(format_args!("{error}")), now, out);
        }
        let id = config.id.clone();
        self.config = Some(config);
        self.rejected_config = None;
        out.act(Action::Persist(Persist::Config));
        self.answer(Some(id), None, now, out);
    }

    fn on_command(&mut self, payload: &[u8], now: Now, out: &mut impl Outbox) {
        match Command::decode(payload) {
            Err(error) => {
                let id = salvage_command_id(payload);
                self.answer(id, Some(format_args!("{error}")), now, out);
            }
            Ok(Command::Override { id, level, until }) => {
                match self
                    .controller
                    .override_until(level, until, self.clock(now.up_ms))
                {
                    Ok(()) => self.answer(Some(id), None, now, out),
                    Err(e) => self.answer(Some(id), Some(format_args!("{}", e.as_str())), now, out),
                }
            }
        }
    }

    /// Answers a config or command: applied when `rejection` is `None`, else rejected
    /// with it as the detail.
    fn answer(
        &mut self,
        id: Option<CommandId>,
        rejection: Option<core::fmt::Arguments<'_>>,
        now: Now,
        out: &mut impl Outbox,
    ) {
        match rejection {
            None => self.event(EventKind::CommandApplied { id }, None, now, out),
            Some(reason) => {
                let mut detail = Detail::new();
                let _ = detail.write_fmt(reason);
                self.event(EventKind::CommandRejected { id }, Some(detail), now, out);
            }
        }
    }

    fn on_ack(&mut self, payload: &[u8], retained: bool, now: Now) {
        let Ok(ack) = Ack::decode(payload) else {
            return;
        };
        // Memory learns of this with the next window's write (see the crate docs).
        let removed = self.buffer.ack(&ack);
        self.acknowledged = self.acknowledged.saturating_add(removed as u32);
        // Only a live ack tells the time: a retained one may be old. A clock-less node
        // takes it; a clock is put forward readily, back reluctantly ([`CLOCK_AHEAD_MS`]).
        if !retained
            && let Ok(unix_ms) = i64::try_from(ack.now)
            && VALID_CLOCK_MS.contains(&unix_ms)
            && self.unix_at(now.up_ms).is_none_or(|clock| {
                let ahead = clock - unix_ms;
                !(-CLOCK_BEHIND_MS..=CLOCK_AHEAD_MS).contains(&ahead)
            })
        {
            self.set_clock(unix_ms, now);
        }
    }

    fn event(&mut self, kind: EventKind, detail: Option<Detail>, now: Now, out: &mut impl Outbox) {
        let event = Event {
            boot: self.boot,
            eseq: self.next_eseq,
            ts: self.unix_at(now.up_ms).map_or(0, |t| t.max(0) as u64),
            kind,
            detail,
        };
        self.next_eseq = self.next_eseq.wrapping_add(1);
        // Events are the fast path: while offline, the next report restates the faults.
        if self.connected {
            self.publish(NodeTopic::Event, &event, false, out);
        }
    }

    fn publish<M: Message>(
        &self,
        kind: NodeTopic,
        message: &M,
        retain: bool,
        out: &mut impl Outbox,
    ) {
        publish_message(&self.topic(kind), message, retain, out);
    }
}

/// Rounds to `1 / per_unit` (dividing last gives the shortest decimal), so reports carry
/// the precision the sensors have, not the noise digits of a float.
fn round_to(value: f64, per_unit: f64) -> f64 {
    libm::round(value * per_unit) / per_unit
}

/// FNV-1a: a small, good-enough fingerprint of a payload.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |hash, &b| {
        (hash ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

fn publish_message<M: Message>(topic: &str, message: &M, retain: bool, out: &mut impl Outbox) {
    let mut payload = [0u8; MAX_PAYLOAD];
    if let Ok(len) = message.encode(&mut payload) {
        out.act(Action::Publish {
            topic,
            payload: &payload[..len],
            retain,
        });
    }
}
