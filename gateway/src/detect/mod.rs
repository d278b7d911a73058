//! Detectors (DESIGN.md "Detection and alerts"): pure state machines from stored facts,
//! in commit order, to condition transitions and per-zone window figures.
//!
//! No I/O and no wall clock in here: every time is event time (a report's `ts`, or for a
//! status, an event or a liveness decision the node's clock estimated from its newest
//! report), so the same facts replayed from an empty state give the same output.
//! [`Detector::apply`] takes one fact; [`model`] holds what the site files say;
//! [`zone`] judges zone windows (dark, unobserved, not judged); [`node`] judges each
//! node's faults.

pub mod model;
pub mod node;
pub mod zone;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};

use parklight_protocol::alert::Severity;
use parklight_protocol::config::Profile;
use parklight_protocol::telemetry::Fault;
use serde::{Deserialize, Serialize};

use crate::store::ReportRow;
use model::Model;

/// What a condition is about (DESIGN.md "Detection and alerts").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A zone below the class in force while it is dark outside.
    DarkZone,
    /// Too few of a zone's nodes have a valid reading to judge it.
    ZoneUnobserved,
    /// A node's connection is lost, or it went silent.
    NodeOffline,
    /// A lamp does not light.
    LampFault,
    /// A light sensor reads nothing, or one value whatever happens.
    SensorFault,
    /// The enclosure is open.
    Tamper,
    /// A lamp on in daylight.
    DayBurner,
    /// A node does not run the config published for it.
    ConfigNotApplied,
    /// A lamp whose light falls steadily over weeks.
    LampDegraded,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 9] = [
        Kind::DarkZone,
        Kind::ZoneUnobserved,
        Kind::NodeOffline,
        Kind::LampFault,
        Kind::SensorFault,
        Kind::Tamper,
        Kind::DayBurner,
        Kind::ConfigNotApplied,
        Kind::LampDegraded,
    ];

    /// The kind as stored and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::DarkZone => "dark_zone",
            Kind::ZoneUnobserved => "zone_unobserved",
            Kind::NodeOffline => "node_offline",
            Kind::LampFault => "lamp_fault",
            Kind::SensorFault => "sensor_fault",
            Kind::Tamper => "tamper",
            Kind::DayBurner => "day_burner",
            Kind::ConfigNotApplied => "config_not_applied",
            Kind::LampDegraded => "lamp_degraded",
        }
    }

    /// The kind spelled `text`.
    pub fn parse(text: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// One change of a condition: raised, more severe, or cleared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    /// What it is about.
    pub kind: Kind,
    /// The site.
    pub site: String,
    /// The zone, for zone conditions.
    pub zone: Option<String>,
    /// The node, for node conditions.
    pub node: Option<String>,
    /// Active after this change.
    pub active: bool,
    /// How bad (of the condition while active; its last severity when cleared).
    pub severity: Severity,
    /// Event time the condition became active, Unix ms.
    pub since: i64,
    /// Event time of this change, Unix ms.
    pub ts: i64,
    /// What was seen, for people.
    pub detail: String,
}

/// How a zone window was judged; the number is the one time-series databases get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// By day, or outside the zone's dates.
    NotJudged = 0,
    /// Lit to the class in force.
    Lit = 1,
    /// Too few valid readings.
    Unobserved = 2,
    /// Below the class in force, or a boost that did not deliver.
    Dark = 3,
}

impl Status {
    /// The status as stored and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::NotJudged => "not_judged",
            Status::Lit => "lit",
            Status::Unobserved => "unobserved",
            Status::Dark => "dark",
        }
    }
}

/// A zone's figures over one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZoneWindow {
    /// The site.
    pub site: String,
    /// The zone.
    pub zone: String,
    /// Window start (exclusive), Unix ms.
    pub start: i64,
    /// Window end (inclusive), Unix ms.
    pub end: i64,
    /// The judgement.
    pub status: Status,
    /// Mean of the valid nodes' calibrated average, lux.
    pub lux_avg: Option<f64>,
    /// Lowest calibrated minimum of the valid nodes, lux.
    pub lux_min: Option<f64>,
    /// Average required by the class in force, lux.
    pub required_avg: f64,
    /// Minimum required by the class in force, lux.
    pub required_min: f64,
    /// Motion detections of all its nodes.
    pub detections: u32,
    /// Minutes of the window dark with detections.
    pub occupied_dark_minutes: u32,
    /// Detections while dark.
    pub detections_dark: u32,
    /// Nodes with a valid reading, and nodes in the zone.
    pub valid_nodes: u32,
    /// Nodes placed in the zone.
    pub nodes: u32,
    /// Why it is unobserved (or why nodes were left out): offline nodes, failed sensors.
    pub cause: Option<String>,
    /// Reports that arrived after the judgement changed these figures.
    pub revised: bool,
}

/// What the detectors give for one fact.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// A condition changed.
    Transition(Transition),
    /// A window was judged, or its figures revised by a late report.
    Window(ZoneWindow),
}

/// One stored fact, as the detectors see it.
#[derive(Debug, Clone, PartialEq)]
pub enum Fact {
    /// A report (a held one at its release).
    Report {
        /// Node id.
        node: String,
        /// The report.
        report: ReportRow,
    },
    /// A birth.
    Online {
        /// Node id.
        node: String,
        /// Boot and connection.
        boot: u32,
        /// Connection within the boot.
        conn: u32,
        /// The report interval it runs, seconds.
        interval_s: Option<u16>,
        /// The config version it runs (`None` before any).
        cfg: Option<u32>,
        /// Arrival, Unix ms (wall clock).
        received: i64,
    },
    /// A will (`lost`) or a clean shutdown.
    Offline {
        /// Node id.
        node: String,
        /// Boot of the connection.
        boot: u32,
        /// Connection within the boot.
        conn: u32,
        /// `lost` (a will) rather than `shutdown`.
        lost: bool,
        /// Arrival, Unix ms (wall clock).
        received: i64,
    },
    /// A fault event of a node: raised or cleared.
    Fault {
        /// Node id.
        node: String,
        /// Which.
        fault: Fault,
        /// Raised (true) or cleared.
        raised: bool,
        /// Arrival, Unix ms (wall clock).
        received: i64,
    },
    /// The gateway published config version `cfg` to the node.
    Config {
        /// Node id.
        node: String,
        /// Its version.
        cfg: u32,
        /// The config message.
        payload: String,
        /// When it was published, Unix ms (wall clock).
        received: i64,
    },
    /// A node's answer to a config: applied, or refused with a reason.
    ConfigAnswer {
        /// Node id.
        node: String,
        /// The config's version.
        cfg: u32,
        /// Applied (true) or refused.
        applied: bool,
        /// Why it was refused, as the node says.
        detail: String,
        /// Arrival, Unix ms (wall clock).
        received: i64,
    },
    /// The liveness monitor found the node online for 3 intervals after `cfg` was
    /// published without running it.
    ConfigLate {
        /// Node id.
        node: String,
        /// The config version it does not run.
        cfg: u32,
        /// When it decided, Unix ms (wall clock).
        received: i64,
    },
    /// The node booted after losing power (its `power_loss` event).
    PowerLoss {
        /// Node id.
        node: String,
        /// The boot that followed the loss.
        boot: u32,
    },
    /// The node's lamp or controller was swapped (`parklight node replaced`).
    Replaced {
        /// Node id.
        node: String,
    },
    /// The liveness monitor found the node silent for 3 intervals.
    Silent {
        /// Node id.
        node: String,
        /// When it decided, Unix ms (wall clock).
        received: i64,
    },
}

impl Fact {
    /// The node the fact is about.
    pub fn node(&self) -> &str {
        match self {
            Fact::Report { node, .. }
            | Fact::Online { node, .. }
            | Fact::Offline { node, .. }
            | Fact::Fault { node, .. }
            | Fact::Config { node, .. }
            | Fact::PowerLoss { node, .. }
            | Fact::Replaced { node }
            | Fact::ConfigAnswer { node, .. }
            | Fact::ConfigLate { node, .. }
            | Fact::Silent { node, .. } => node,
        }
    }
}

/// The detectors' thresholds.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Consecutive windows to raise, and to clear, a window-based condition.
    pub windows_to_change: u32,
    /// How far above the threshold a zone must be to count towards clearing (0.1 = 10 %).
    pub clear_margin: f64,
    /// Zones are judged while the sun is below this altitude, degrees.
    pub dark_below_deg: f64,
    /// Detections in a dark window from which a dark zone is `critical`.
    pub critical_detections: u32,
    /// Share of a zone's nodes that must have a valid reading.
    pub observed_share: f64,
    /// A lamp on while the sun is this high is a day-burner, degrees.
    pub day_above_deg: f64,
    /// No day-burner this soon after a boot (a node boots lit until its config arrives), ms.
    pub boot_grace_ms: i64,
    /// A node on a `night` circuit whose newest report came this near sunrise is expected
    /// off until the next sunset plus this, ms.
    pub circuit_margin_ms: i64,
    /// Share of a lamp's learned contribution below which it counts as not lit.
    pub lamp_light_share: f64,
    /// Share of a lamp's usual power below which it counts as not lit.
    pub lamp_power_share: f64,
    /// Share of a lamp's rated power (or the most it usually draws) above which it counts
    /// as on, whatever level it reports (a relay stuck closed burns by day).
    pub lamp_on_power_share: f64,
    /// Share by which a lamp's light at full must fall, fitted over the nights kept,
    /// to be `lamp_degraded` (cleared below half of it).
    pub lamp_degraded_share: f64,
    /// Nights of a lamp's light at full needed before it is judged degraded.
    pub degraded_after_nights: usize,
    /// Windows a node's light or power must be seen at a level before it is judged there.
    pub learn_windows: u32,
    /// Judged windows kept for revision by late reports, ms.
    pub revise_horizon_ms: i64,
    /// A window left open longer than this (event time) is judged with what it has, ms.
    pub open_window_max_ms: i64,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            windows_to_change: 2,
            clear_margin: 0.1,
            dark_below_deg: parklight_core::solar::CIVIL_TWILIGHT_DEG,
            critical_detections: 20,
            observed_share: 0.5,
            day_above_deg: 3.0,
            boot_grace_ms: 15 * 60_000,
            circuit_margin_ms: 30 * 60_000,
            lamp_light_share: 0.25,
            lamp_power_share: 0.5,
            lamp_on_power_share: 0.1,
            learn_windows: 3,
            lamp_degraded_share: 0.2,
            degraded_after_nights: 14,
            revise_horizon_ms: 6 * 3_600_000,
            open_window_max_ms: 24 * 3_600_000,
        }
    }
}

/// Everything the detectors remember, serialisable so a snapshot can be stored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Per node.
    pub nodes: HashMap<String, node::NodeState>,
    /// Per site, per zone.
    pub zones: BTreeMap<String, BTreeMap<String, zone::ZoneState>>,
    /// The config messages published to each node, by version (the newest few).
    pub configs: BTreeMap<String, BTreeMap<u32, String>>,
    /// Reports left out for a time no clock can have (see [`is_plausible`]).
    pub implausible: u64,
}

/// The earliest time a report can have: 2020-01-01 (PROTOCOL.md's clock rule).
const EARLIEST_TS: i64 = 1_577_836_800_000;
/// The furthest ahead of its arrival a report's time can be.
const LATEST_AHEAD_MS: i64 = 3_600_000;

/// Whether a stored report's time is one a clock can have: from 2020 on, and at most an
/// hour ahead of its arrival. Others (a stamp placed from a hostile uptime, say) are left
/// out of detection rather than moving a zone's windows years ahead.
pub fn is_plausible(report: &ReportRow) -> bool {
    (EARLIEST_TS..=report.received.saturating_add(LATEST_AHEAD_MS)).contains(&report.ts)
}

/// Config versions remembered per node: enough for replays of its buffered reports.
const CONFIGS_KEPT: usize = 8;

/// The detectors: the site model, the thresholds and the state.
pub struct Detector {
    model: Model,
    settings: Settings,
    state: State,
    /// Profiles of the configs in the state, decoded once, per node and version.
    profiles: HashMap<String, BTreeMap<u32, Profile>>,
}

impl Detector {
    /// Detectors for `model` starting from `state` (empty, or a stored snapshot).
    pub fn new(model: Model, settings: Settings, state: State) -> Detector {
        Detector {
            model,
            settings,
            state,
            profiles: HashMap::new(),
        }
    }

    /// What the detectors remember now.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Takes one fact and appends what it changed to `out`. Facts of nodes the site
    /// files do not place are left alone (ingest flags them).
    pub fn apply(&mut self, fact: &Fact, out: &mut Vec<Output>) {
        let Some(place) = self.model.node(fact.node()) else {
            return;
        };
        if let Fact::Report { report, .. } = fact
            && !is_plausible(report)
        {
            self.state.implausible += 1;
            return;
        }
        if let Fact::Config { cfg, payload, .. } = fact {
            let configs = entry(&mut self.state.configs, &place.id);
            configs.insert(*cfg, payload.clone());
            while configs.len() > CONFIGS_KEPT {
                configs.pop_first();
            }
        }
        let node = entry(&mut self.state.nodes, &place.id);
        let moved = node::apply(node, place, &self.settings, fact, out);
        let Some(zone) = self.model.zone_of(place) else {
            return;
        };
        let zone_state = entry(entry(&mut self.state.zones, &zone.site), &zone.id);
        let nodes = &self.state.nodes;
        let mut could_close = moved;
        if let Fact::Report { report, .. } = fact {
            let profile =
                running_profile(&mut self.profiles, &self.state.configs, place, report.cfg);
            zone::add(zone_state, zone, place, profile, nodes, report, out);
            // Only a report past the next window's end can let it be judged.
            could_close = zone_state.next_end.is_some_and(|end| report.ts >= end);
        }
        if could_close {
            zone::close(zone_state, zone, nodes, &self.settings, out);
        }
    }
}

/// The value of `key` in `map`, made when missing (without copying the key to look).
fn entry<'m, M: MapOf<V>, V: Default>(map: &'m mut M, key: &str) -> &'m mut V {
    map.entry_of(key)
}

/// Maps keyed by a `String`, looked up by `&str`.
trait MapOf<V> {
    fn entry_of(&mut self, key: &str) -> &mut V;
}

impl<V: Default> MapOf<V> for HashMap<String, V> {
    fn entry_of(&mut self, key: &str) -> &mut V {
        if !self.contains_key(key) {
            self.insert(key.to_owned(), V::default());
        }
        self.get_mut(key).expect("inserted above")
    }
}

impl<V: Default> MapOf<V> for BTreeMap<String, V> {
    fn entry_of(&mut self, key: &str) -> &mut V {
        if !self.contains_key(key) {
            self.insert(key.to_owned(), V::default());
        }
        self.get_mut(key).expect("inserted above")
    }
}

/// No steps: a node without a config lights at full all night (its zone's own class).
static NO_PROFILE: Profile = Profile::new();

/// The profile a node runs with config version `cfg`: none without a config, the one
/// published as that version, or (a version published before this store) the one the
/// site file gives.
fn running_profile<'p>(
    cache: &'p mut HashMap<String, BTreeMap<u32, Profile>>,
    configs: &BTreeMap<String, BTreeMap<u32, String>>,
    place: &'p model::Place,
    cfg: Option<u32>,
) -> &'p Profile {
    use parklight_protocol::Message;
    let Some(cfg) = cfg.filter(|c| *c > 0) else {
        return &NO_PROFILE;
    };
    let published = || {
        let payload = configs.get(&place.id)?.get(&cfg)?;
        parklight_protocol::Config::decode(payload.as_bytes()).ok()
    };
    match entry(cache, &place.id).entry(cfg) {
        std::collections::btree_map::Entry::Occupied(known) => known.into_mut(),
        std::collections::btree_map::Entry::Vacant(slot) => match published() {
            Some(config) => slot.insert(config.profile.unwrap_or_default()),
            None => &place.profile,
        },
    }
}

/// A dark zone's severity from the detections of its dark windows.
pub fn dark_severity(detections: u32, settings: &Settings) -> Severity {
    match detections {
        0 => Severity::Low,
        d if d < settings.critical_detections => Severity::High,
        _ => Severity::Critical,
    }
}
