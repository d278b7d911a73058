//! Each node's faults: offline, lamp fault, sensor fault, tamper, day-burner.
//!
//! A node's own windows follow its zone's grid and close when it reports past their end;
//! the light and power rules learn each node's own lamp at each level from its history.

use std::collections::{BTreeMap, VecDeque};

use parklight_protocol::alert::Severity;
use parklight_protocol::telemetry::Fault;
use serde::{Deserialize, Serialize};

use super::model::Place;
use super::{Fact, Kind, Output, Settings, Transition};
use crate::store::ReportRow;

/// An active condition: since when, how bad.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Active {
    /// Event time it became active, Unix ms.
    pub since: i64,
    /// Its severity.
    pub severity: Severity,
}

/// A running mean that forgets slowly: what a node usually reads or draws at a level.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Learned {
    /// Windows seen (capped).
    pub windows: u32,
    /// The mean.
    pub mean: f64,
}

impl Learned {
    const MEMORY: u32 = 20;

    fn add(&mut self, value: f64) {
        self.windows = (self.windows + 1).min(Self::MEMORY);
        self.mean += (value - self.mean) / f64::from(self.windows);
    }
}

/// What one of a node's windows held.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeWindow {
    /// Its end, Unix ms.
    pub end: i64,
    /// Reports in it.
    pub reports: u32,
    /// Reports with a reading.
    pub readings: u32,
    /// Time-weighted sum of calibrated averages, and the weight.
    pub lux_sum: f64,
    /// Seconds of readings.
    pub weight: f64,
    /// The first reading (avg, min, max), and whether every reading equalled it.
    pub first: Option<(f64, f64, f64)>,
    /// Every reading was the first.
    pub constant: bool,
    /// Detections.
    pub motion: u32,
    /// Lowest and highest lamp level reported.
    pub levels: Option<(u8, u8)>,
    /// Sum and count of metered power.
    pub power: (f64, u32),
    /// Every report said it runs a config (`cfg` 0 is none; a config carries the
    /// location the sun needs).
    pub configured: bool,
}

/// A reading that has not moved: since when, and whether the lamp or the sun changed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Unmoved {
    /// The reading (avg, min, max).
    pub value: (f64, f64, f64),
    /// Windows it lasted.
    pub windows: u32,
    /// The lamp level changed meanwhile.
    pub level: u8,
    /// The level changed.
    pub level_changed: bool,
    /// Lowest and highest sun altitude seen (below civil dusk counted as dusk), degrees.
    pub sun: (f64, f64),
}

/// What the detectors remember of one node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeState {
    /// Its newest report's `ts` and arrival.
    pub last: Option<(i64, i64)>,
    /// Its latest birth (boot, conn).
    pub birth: Option<(u32, u32)>,
    /// When the gateway last heard from it (a report or a birth), wall clock, Unix ms.
    pub heard: Option<i64>,
    /// The report interval it says it runs (its birth, its reports' period), ms.
    pub interval_ms: Option<i64>,
    /// Not reporting, and known so (will, shutdown, silence, circuit off).
    pub away: bool,
    /// When it went away on its own clock, once it has reported (a will or a silence
    /// before any report has no event time).
    pub away_at: Option<i64>,
    /// Away with its circuit expected off: when (event time) it should be back.
    pub expected_back: Option<i64>,
    /// The boot of its newest report and when that boot began (estimated).
    pub boot: Option<(u32, i64)>,
    /// Faults the node itself reports (report flags, events).
    pub reported: BTreeMap<Kind, bool>,
    /// Faults the rules found.
    pub found: BTreeMap<Kind, bool>,
    /// The window being filled.
    pub window: Option<NodeWindow>,
    /// The previous window's lamp level, when it held one level.
    pub previous_level: Option<u8>,
    /// Consecutive windows per rule that saw the fault, and that saw none.
    pub runs: BTreeMap<String, (u32, u32)>,
    /// Its lamp's light and power per level.
    pub light: BTreeMap<u8, Learned>,
    /// Metered power per level.
    pub power: BTreeMap<u8, Learned>,
    /// A reading that has not moved.
    pub unmoved: Option<Unmoved>,
    /// The latest boot that followed a power loss.
    #[serde(default)]
    pub power_loss_boot: Option<u32>,
    /// The config version it runs, by its birth, its newest report or its answer.
    #[serde(default)]
    pub running_cfg: Option<u32>,
    /// The config version last published for it, and when (wall clock, Unix ms).
    #[serde(default)]
    pub desired_cfg: Option<(u32, i64)>,
    /// When its current connection's birth arrived (wall clock, Unix ms).
    #[serde(default)]
    pub online_since: Option<i64>,
    /// The version the liveness monitor found it late to apply.
    #[serde(default)]
    pub config_late: Option<u32>,
    /// What its lamp gave at full, once a day (day number, lux), newest last.
    #[serde(default)]
    pub nightly_light: VecDeque<(i64, f64)>,
    /// Active conditions.
    pub active: BTreeMap<Kind, Active>,
}

impl NodeState {
    /// Whether it is known not to be reporting.
    pub fn is_away(&self) -> bool {
        self.away
    }

    /// Event time of its newest report.
    pub fn last_ts(&self) -> Option<i64> {
        self.last.map(|(ts, _)| ts)
    }

    /// Whether it was without power at `unix_ms` (event time), as far as it told: its
    /// newest boot followed a power loss and began after then, or it has not reported
    /// since that boot.
    pub fn without_power_at(&self, unix_ms: i64) -> bool {
        self.power_loss_boot.is_some_and(|lost| match self.boot {
            Some((boot, began)) => boot < lost || (boot == lost && began >= unix_ms),
            None => true,
        })
    }

    /// Whether its light sensor is known to have failed.
    pub fn sensor_failed(&self) -> bool {
        self.active.contains_key(&Kind::SensorFault)
    }

    /// The node's clock at wall time `received`: its newest report's `ts` plus the wall
    /// time since that report arrived (a simulator running in the past is judged as a real
    /// park would be).
    pub fn event_time(&self, received: i64) -> i64 {
        self.last
            .map_or(received, |(ts, arrived)| ts + (received - arrived).max(0))
    }

    fn run(&mut self, rule: &str, seen: bool) -> (u32, u32) {
        let run = self.runs.entry(rule.to_owned()).or_default();
        *run = if seen { (run.0 + 1, 0) } else { (0, run.1 + 1) };
        *run
    }
}

/// A reading that does not move counts as stuck only above this: the night without a
/// lamp reads less.
const STUCK_ABOVE_LUX: f64 = 1.0;

/// The most power a pole's lamp can draw, watts.
const MAX_LAMP_W: f64 = 10_000.0;

/// The severity of each node condition: an outage or a lamp out leaves a path dark (high);
/// an open enclosure is a safety risk (high); a failed sensor leaves it unwatched
/// (medium); a day-burner wastes energy (low).
fn severity(kind: Kind) -> Severity {
    match kind {
        Kind::NodeOffline | Kind::LampFault | Kind::Tamper => Severity::High,
        Kind::SensorFault | Kind::ConfigNotApplied => Severity::Medium,
        _ => Severity::Low,
    }
}

/// Raises or clears `kind` on `node` at event time `ts`.
fn set(
    node: &mut NodeState,
    place: &Place,
    kind: Kind,
    on: bool,
    ts: i64,
    detail: impl FnOnce() -> String,
    out: &mut Vec<Output>,
) {
    let severity = severity(kind);
    let change = match (on, node.active.get(&kind).copied()) {
        (true, None) => {
            node.active.insert(
                kind,
                Active {
                    since: ts,
                    severity,
                },
            );
            Some((true, ts))
        }
        (false, Some(was)) => {
            node.active.remove(&kind);
            Some((false, was.since))
        }
        _ => None,
    };
    if let Some((active, since)) = change {
        out.push(Output::Transition(Transition {
            kind,
            site: place.site.clone(),
            zone: None,
            node: Some(place.id.clone()),
            active,
            severity,
            since,
            ts,
            detail: detail(),
        }));
    }
}

/// Clears `config_not_applied` once the node runs the version published for it.
fn config_applied(node: &mut NodeState, place: &Place, ts: i64, out: &mut Vec<Output>) {
    let desired = node.desired_cfg.map(|(cfg, _)| cfg);
    if desired.is_some() && node.running_cfg == desired {
        let detail = || format!("runs config {}", desired.unwrap_or_default());
        set(node, place, Kind::ConfigNotApplied, false, ts, detail, out);
    }
}

/// The fault each node-reported condition is.
const REPORTED: [(Fault, Kind); 3] = [
    (Fault::Lamp, Kind::LampFault),
    (Fault::Sensor, Kind::SensorFault),
    (Fault::Tamper, Kind::Tamper),
];

/// Raises or clears `kind` as the node reports it or a rule found it.
fn settle(
    node: &mut NodeState,
    place: &Place,
    kind: Kind,
    ts: i64,
    detail: impl FnOnce() -> String,
    out: &mut Vec<Output>,
) {
    let flag = |map: &BTreeMap<Kind, bool>| map.get(&kind).copied().unwrap_or(false);
    let on = flag(&node.reported) || flag(&node.found);
    set(node, place, kind, on, ts, detail, out);
}

/// Until when (event time) a node on a `night` circuit is expected off, if it is at
/// `now`: its newest report came within a margin of sunrise, and the next sunset (plus the
/// margin) is still to come. A node never heard from is expected off while the sun is up.
pub fn expected_off_until(
    place: &Place,
    last_ts: Option<i64>,
    now: i64,
    settings: &Settings,
) -> Option<i64> {
    use parklight_core::solar::{SUNSET_ALTITUDE_DEG, next_sunrise, next_sunset};
    if !place.night_circuit {
        return None;
    }
    let margin = settings.circuit_margin_ms;
    let (lat, lon) = (place.sky.lat, place.sky.lon);
    let Some(last) = last_ts else {
        let day = place.sky.altitude(now) > SUNSET_ALTITUDE_DEG;
        return day.then(|| next_sunset(now, lat, lon) + margin);
    };
    let sunrise = next_sunrise(last - margin, lat, lon);
    let back = next_sunset(sunrise, lat, lon) + margin;
    (sunrise <= last + margin && now < back).then_some(back)
}

/// Takes one fact about `node`; returns whether what its zone waits for moved (a report,
/// or the node became known not to report).
pub fn apply(
    node: &mut NodeState,
    place: &Place,
    settings: &Settings,
    fact: &Fact,
    out: &mut Vec<Output>,
) -> bool {
    match fact {
        Fact::Report { report, .. } => {
            report_in(node, place, settings, report, out);
            true
        }
        Fact::Online {
            boot,
            conn,
            interval_s,
            cfg,
            received,
            ..
        } => {
            node.birth = Some((*boot, *conn));
            node.heard = node.heard.max(Some(*received));
            node.online_since = Some(*received);
            node.running_cfg = *cfg;
            config_applied(node, place, node.event_time(*received), out);
            // Connected again: its reports are to be waited for (and missed, if none come).
            node.away = false;
            node.away_at = None;
            node.expected_back = None;
            if let Some(interval) = interval_s {
                node.interval_ms = Some(i64::from(*interval) * 1000);
            }
            false
        }
        Fact::Config { cfg, received, .. } => {
            node.desired_cfg = Some((*cfg, *received));
            node.config_late = None;
            false
        }
        Fact::ConfigAnswer {
            cfg,
            applied,
            detail,
            received,
            ..
        } => {
            let now = node.event_time(*received);
            if node.desired_cfg.map(|(desired, _)| desired) == Some(*cfg) {
                if *applied {
                    node.running_cfg = Some(*cfg);
                    config_applied(node, place, now, out);
                } else {
                    let detail = || format!("config {cfg} refused: {detail}");
                    set(node, place, Kind::ConfigNotApplied, true, now, detail, out);
                }
            }
            false
        }
        Fact::ConfigLate { cfg, received, .. } => {
            node.config_late = Some(*cfg);
            let now = node.event_time(*received);
            let desired = node.desired_cfg.map(|(desired, _)| desired);
            if desired == Some(*cfg) && node.running_cfg != Some(*cfg) {
                let running = node.running_cfg.map_or("none".into(), |r| r.to_string());
                let detail = || format!("runs config {running}, not {cfg} published for it");
                set(node, place, Kind::ConfigNotApplied, true, now, detail, out);
            }
            false
        }
        Fact::Replaced { .. } => {
            // A new lamp: what the old one gave and drew says nothing about it.
            node.light.clear();
            node.power.clear();
            node.nightly_light.clear();
            node.runs
                .retain(|rule, _| rule != "light" && rule != "power");
            false
        }
        Fact::PowerLoss { boot, .. } => {
            node.power_loss_boot = Some(*boot);
            false
        }
        Fact::Offline {
            boot,
            conn,
            lost,
            received,
            ..
        } => {
            if node.birth.is_some_and(|birth| birth != (*boot, *conn)) {
                return false; // a stale will of an older connection
            }
            let now = node.event_time(*received);
            let reason = if *lost {
                "connection lost (will)"
            } else {
                "shut down cleanly"
            };
            went_away(node, place, settings, now, *lost, reason, out)
        }
        Fact::Silent { received, .. } => {
            let now = node.event_time(*received);
            went_away(
                node,
                place,
                settings,
                now,
                true,
                "silent for 3 intervals",
                out,
            )
        }
        Fact::Fault {
            fault,
            raised,
            received,
            ..
        } => {
            let now = node.event_time(*received);
            let kind = REPORTED.iter().find(|(f, _)| f == fault).map(|(_, k)| *k);
            if let Some(kind) = kind {
                node.reported.insert(kind, *raised);
                let what = if *raised { "raised" } else { "cleared" };
                settle(
                    node,
                    place,
                    kind,
                    now,
                    || format!("{} {what} by the node", fault.as_str()),
                    out,
                );
            }
            false
        }
    }
}

fn went_away(
    node: &mut NodeState,
    place: &Place,
    settings: &Settings,
    now: i64,
    outage: bool,
    reason: &str,
    out: &mut Vec<Output>,
) -> bool {
    if node.is_away() {
        // Away with its circuit expected off: past the time it should be back, it is out.
        if outage && node.expected_back.is_some_and(|back| now >= back) {
            node.expected_back = None;
            let reason = || "not back after its circuit's night began".to_owned();
            set(node, place, Kind::NodeOffline, true, now, reason, out);
        }
        return false;
    }
    node.away = true;
    node.away_at = node.last.map(|_| now);
    node.expected_back = expected_off_until(place, node.last_ts(), now, settings);
    if outage && node.expected_back.is_none() {
        set(
            node,
            place,
            Kind::NodeOffline,
            true,
            now,
            || reason.to_owned(),
            out,
        );
    }
    true
}

fn report_in(
    node: &mut NodeState,
    place: &Place,
    settings: &Settings,
    report: &ReportRow,
    out: &mut Vec<Output>,
) {
    let ts = report.ts;
    if node.last_ts().is_none_or(|last| ts >= last) {
        node.last = Some((ts, report.received));
        node.interval_ms = Some(i64::from(report.period_s) * 1000);
        // Only the newest report tells what it runs: replayed ones carry old versions.
        node.running_cfg = report.cfg;
        config_applied(node, place, ts, out);
    }
    node.heard = node.heard.max(Some(report.received));
    node.away = false;
    node.away_at = None;
    set(
        node,
        place,
        Kind::NodeOffline,
        false,
        ts,
        || "reporting again".into(),
        out,
    );
    // Boots only count up: a replayed report of an older boot says nothing of the newest.
    if node.boot.is_none_or(|(boot, _)| report.boot > boot) {
        node.boot = Some((report.boot, ts - i64::from(report.period_s) * 1000));
    }
    for (fault, kind) in REPORTED {
        let flagged = report.faults & (1 << fault as u8) != 0;
        if node.reported.get(&kind) != Some(&flagged) {
            node.reported.insert(kind, flagged);
            settle(
                node,
                place,
                kind,
                ts,
                || format!("{} flagged in its reports", fault.as_str()),
                out,
            );
        }
    }

    let known = node.window.as_ref().map(|w| w.end);
    let end = place.sky.window_end_near(ts, place.window_ms, known);
    match &node.window {
        Some(window) if end < window.end => return, // too late for the node's rules
        Some(window) if end > window.end => {
            let closed = node.window.take().unwrap_or_default();
            judge_window(node, place, settings, &closed, out);
        }
        _ => {}
    }
    let window = node.window.get_or_insert_with(|| NodeWindow {
        end,
        constant: true,
        configured: true,
        ..NodeWindow::default()
    });
    window.reports += 1;
    window.configured &= report.cfg.is_some_and(|cfg| cfg > 0);
    window.motion += report.motion;
    let level = report.lamp_level;
    window.levels = Some(
        window
            .levels
            .map_or((level, level), |(lo, hi)| (lo.min(level), hi.max(level))),
    );
    // A meter reading beyond any lamp (or not a number) is left out.
    if let Some(power) = report.power_w.filter(|w| (0.0..=MAX_LAMP_W).contains(w)) {
        window.power.0 += power;
        window.power.1 += 1;
    }
    if let Some(lux) = report.lux {
        let reading = (lux.avg, lux.min, lux.max);
        window.readings += 1;
        let seconds = f64::from(report.period_s.max(1));
        window.lux_sum += lux.avg * place.calibration * seconds;
        window.weight += seconds;
        match window.first {
            None => window.first = Some(reading),
            Some(first) => window.constant &= first == reading,
        }
    }
}

/// The rules judged over a node's closed window.
fn judge_window(
    node: &mut NodeState,
    place: &Place,
    settings: &Settings,
    window: &NodeWindow,
    out: &mut Vec<Output>,
) {
    let k = settings.windows_to_change;
    let start = window.end - place.window_ms;
    let sun = place.sky.altitude(start + place.window_ms / 2);
    let dark = sun < settings.dark_below_deg;
    let stable = window
        .levels
        .filter(|(lo, hi)| lo == hi)
        .map(|(level, _)| level);
    // A detection may boost the lamp between reports, mixing levels, except at full.
    let judged_level = stable
        .filter(|level| *level >= 50 && dark && node.previous_level == Some(*level))
        .filter(|level| window.motion == 0 || *level == 100);
    node.previous_level = stable;
    let lamp_reported = node.reported.get(&Kind::LampFault) == Some(&true);

    // Lamp: light against what this node's lamp gives at this level, power against what
    // it usually draws.
    // Only a lamp believed to work teaches what it gives; a level not yet learned is not
    // judged (a lamp that failed before the dimming step must not teach the step).
    let lamp_out = lamp_reported || node.active.contains_key(&Kind::LampFault);
    let mut lamp_findings = Vec::new();
    if let Some(level) = judged_level {
        if window.readings > 0 && !node.sensor_failed() {
            let lux = window.lux_sum / window.weight;
            let learned = node.light.entry(level).or_default();
            let share = settings.lamp_light_share;
            if let Some((low, usual)) = against_learned(learned, lux, share, settings, lamp_out) {
                if low {
                    lamp_findings.push(format!(
                        "{lux:.1} lx at {level} %, where its lamp gives {usual:.1} lx"
                    ));
                }
                node.run("light", low);
            }
        }
        if window.power.1 > 0 {
            let watts = window.power.0 / f64::from(window.power.1);
            let learned = node.power.entry(level).or_default();
            let share = settings.lamp_power_share;
            if let Some((low, usual)) = against_learned(learned, watts, share, settings, lamp_out) {
                if low {
                    lamp_findings.push(format!(
                        "{watts:.1} W at {level} %, where it usually draws {usual:.1} W"
                    ));
                }
                node.run("power", low);
            }
        }
    }
    let run = |node: &NodeState, rule: &str| node.runs.get(rule).copied().unwrap_or_default();
    let failing = ["light", "power"].iter().any(|r| run(node, r).0 >= k);
    let healthy = ["light", "power"]
        .iter()
        .all(|r| run(node, r).0 == 0 && (run(node, r).1 >= k || !node.runs.contains_key(*r)));
    if failing || healthy {
        node.found.insert(Kind::LampFault, failing);
        let detail = || {
            if failing {
                lamp_findings.join("; ")
            } else {
                "lit again".into()
            }
        };
        settle(node, place, Kind::LampFault, window.end, detail, out);
    }
    if judged_level == Some(100) && !lamp_out {
        degradation(node, place, settings, window.end, out);
    }

    // Sensor: no reading at all, or one that does not move while the lamp or the sun does.
    let silent_sensor = window.reports > 0 && window.readings == 0;
    let (nulls, readings) = node.run("null", silent_sensor);
    let stuck = stuck(node, window, sun, settings);
    let failed = nulls >= k || stuck.is_some();
    if failed || readings >= k {
        node.found.insert(Kind::SensorFault, failed);
        let detail = || match stuck {
            Some(stuck) => stuck,
            None if failed => format!("no reading for {nulls} windows"),
            None => "reading again".into(),
        };
        settle(node, place, Kind::SensorFault, window.end, detail, out);
    }

    // Day-burner: lit while the sun is up (by the level it reports, or by the power it
    // draws), once it runs a config with a location and its boot's grace has passed.
    let booted = node.boot.map_or(i64::MAX, |(_, at)| at);
    let full_power = place.rated_w.or_else(|| {
        let usual = node
            .power
            .values()
            .filter(|l| l.windows >= settings.learn_windows);
        usual.map(|l| l.mean).reduce(f64::max)
    });
    let drawn = (window.power.1 > 0).then(|| window.power.0 / f64::from(window.power.1));
    let drawing = drawn
        .zip(full_power)
        .filter(|(watts, full)| *watts > settings.lamp_on_power_share * full)
        .map(|(watts, _)| watts);
    let burning = sun > settings.day_above_deg
        && window.configured
        && (window.levels.is_some_and(|(_, hi)| hi > 0) || drawing.is_some())
        && start >= booted.saturating_add(settings.boot_grace_ms);
    let (burns, calm) = node.run("day", burning);
    if burns >= k {
        let detail = || match drawing {
            Some(watts) => format!("lamp drawing {watts:.1} W with the sun {sun:.0}° up"),
            None => format!("lamp on with the sun {sun:.0}° up"),
        };
        set(node, place, Kind::DayBurner, true, window.end, detail, out);
    } else if calm >= k {
        set(
            node,
            place,
            Kind::DayBurner,
            false,
            window.end,
            || "off by day".into(),
            out,
        );
    }
}

/// Days of a lamp's light at full kept to judge its degradation.
const NIGHTS_KEPT: usize = 42;

/// Keeps what the lamp gives at full once a day; raises `lamp_degraded` when the line
/// fitted through the days kept falls by [`Settings::lamp_degraded_share`] or more.
fn degradation(
    node: &mut NodeState,
    place: &Place,
    settings: &Settings,
    end: i64,
    out: &mut Vec<Output>,
) {
    let Some(learned) = node
        .light
        .get(&100)
        .filter(|l| l.windows >= settings.learn_windows)
    else {
        return;
    };
    let day = end.div_euclid(86_400_000);
    if node
        .nightly_light
        .back()
        .is_some_and(|(last, _)| *last == day)
    {
        return;
    }
    node.nightly_light.push_back((day, learned.mean));
    while node.nightly_light.len() > NIGHTS_KEPT {
        node.nightly_light.pop_front();
    }
    if node.nightly_light.len() < settings.degraded_after_nights {
        return;
    }
    let Some((start, now, days)) = fitted(&node.nightly_light) else {
        return;
    };
    let fall = 1.0 - now / start;
    let degraded = node.active.contains_key(&Kind::LampDegraded);
    let threshold = if degraded {
        settings.lamp_degraded_share / 2.0
    } else {
        settings.lamp_degraded_share
    };
    let detail = || {
        format!(
            "its lamp gives {now:.1} lx at full, {:.0} % less than {days} days before",
            fall * 100.0
        )
    };
    set(
        node,
        place,
        Kind::LampDegraded,
        fall >= threshold,
        end,
        detail,
        out,
    );
}

/// The least-squares line through (day, lux): its value at the first and the last day,
/// and the days between; `None` when it starts at nothing.
fn fitted(samples: &VecDeque<(i64, f64)>) -> Option<(f64, f64, i64)> {
    let first = samples.front()?.0;
    let n = samples.len() as f64;
    let (sx, sy) = samples.iter().fold((0.0, 0.0), |(sx, sy), (d, y)| {
        (sx + (d - first) as f64, sy + y)
    });
    let (mx, my) = (sx / n, sy / n);
    let (sxy, sxx) = samples.iter().fold((0.0, 0.0), |(sxy, sxx), (d, y)| {
        let dx = (d - first) as f64 - mx;
        (sxy + dx * (y - my), sxx + dx * dx)
    });
    let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    let days = samples.back()?.0 - first;
    let start = my - slope * mx;
    (start > 0.0).then_some((start, start + slope * days as f64, days))
}

/// Judges `value` against what `learned` says this lamp usually gives at a level: once
/// learned, whether it is below `share` of it (and the usual value); `None` while still
/// learning. Only a lamp believed to work (`lamp_out` false) teaches.
fn against_learned(
    learned: &mut Learned,
    value: f64,
    share: f64,
    settings: &Settings,
    lamp_out: bool,
) -> Option<(bool, f64)> {
    let judged = (learned.windows >= settings.learn_windows).then(|| {
        let usual = learned.mean;
        (value < share * usual, usual)
    });
    if !lamp_out && judged.is_none_or(|(low, _)| !low) {
        learned.add(value);
    }
    judged
}

/// Follows a reading that does not move; says why it is stuck once the lamp level or
/// the sun changed under it for K windows.
fn stuck(
    node: &mut NodeState,
    window: &NodeWindow,
    sun: f64,
    settings: &Settings,
) -> Option<String> {
    // A reading near nothing while the lamp changes is a lamp that does not light (the
    // light rule's to judge), not a stuck sensor.
    let value = window
        .first
        .filter(|first| window.constant && window.readings > 0 && first.0 >= STUCK_ABOVE_LUX);
    let level = window.levels.map_or(0, |(lo, _)| lo);
    let sun = sun.max(settings.dark_below_deg);
    let Some(value) = value else {
        node.unmoved = None;
        return None;
    };
    let unmoved = match node.unmoved {
        Some(mut run) if run.value == value => {
            run.windows += 1;
            run.level_changed |= run.level != level;
            run.sun = (run.sun.0.min(sun), run.sun.1.max(sun));
            run
        }
        _ => Unmoved {
            value,
            windows: 1,
            level,
            level_changed: false,
            sun: (sun, sun),
        },
    };
    node.unmoved = Some(unmoved);
    let changed = unmoved.level_changed || unmoved.sun.1 - unmoved.sun.0 >= 1.0;
    (changed && unmoved.windows > settings.windows_to_change).then(|| {
        format!(
            "reads {:.1} lx for {} windows while the {} changed",
            value.0,
            unmoved.windows,
            if unmoved.level_changed { "lamp" } else { "sun" }
        )
    })
}
