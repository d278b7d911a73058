//! Zone windows: filled by reports in event time, judged once each of the zone's nodes
//! has reported past the window's end or is known not to report, then dark, lit,
//! unobserved or not judged; `dark_zone` and `zone_unobserved` raised and cleared after
//! K windows.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use parklight_protocol::alert::Severity;
use parklight_protocol::config::Profile;
use serde::{Deserialize, Serialize};

use super::model::{ClassesInForce, Place, ZoneModel, required_over};
use super::node::{Active, NodeState};
use super::{Kind, Output, Settings, Status, Transition, ZoneWindow, dark_severity};
use crate::store::ReportRow;

/// What one node's reports gave a zone window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeShare {
    /// Reports.
    pub reports: u32,
    /// Seconds of readings, and their time-weighted calibrated average times seconds.
    pub weight: f64,
    /// Time-weighted sum of calibrated averages.
    pub lux_sum: f64,
    /// Lowest and highest calibrated reading.
    pub lux_range: Option<(f64, f64)>,
    /// Time-weighted sum of the average the class in force asks, and its weight.
    pub required_sum: f64,
    /// Seconds of reports.
    pub required_weight: f64,
    /// Lowest minimum the class in force asks.
    pub required_min: Option<f64>,
    /// Detections.
    pub motion: u32,
    /// Minutes of the window (from its start) with detections.
    pub motion_minutes: BTreeSet<u32>,
}

/// A window being filled, per node.
pub type Shares = BTreeMap<String, NodeShare>;

/// What the detectors remember of one zone.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ZoneState {
    /// End of the next window to judge.
    pub next_end: Option<i64>,
    /// Windows being filled, by end.
    pub open: BTreeMap<i64, Shares>,
    /// Judged windows kept for revision, by end.
    pub judged: BTreeMap<i64, (Shares, ZoneWindow)>,
    /// Consecutive dark, clearly lit, unobserved and observed windows.
    pub runs: Runs,
    /// Nodes that counted detections in the last window without reaching the full class
    /// minimum: they must reach it in the next.
    pub owed: BTreeSet<String>,
    /// Highest detections of the dark run.
    pub run_detections: u32,
    /// Active conditions.
    pub active: BTreeMap<Kind, Active>,
    /// The classes in force now (derived, not kept).
    #[serde(skip)]
    pub classes: ClassesInForce,
}

/// Consecutive windows of each judgement.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Runs {
    /// Dark windows, and the start of the first.
    pub dark: (u32, i64),
    /// Windows lit by the clearing margin.
    pub clear: u32,
    /// Unobserved windows, and the start of the first.
    pub unobserved: (u32, i64),
    /// Observed windows.
    pub observed: u32,
}

/// Adds a report of `place`, which runs `profile`, to its zone's window, or revises a judged window with it.
pub fn add(
    zone_state: &mut ZoneState,
    zone: &ZoneModel,
    place: &Place,
    profile: &Profile,
    nodes: &HashMap<String, NodeState>,
    report: &ReportRow,
    out: &mut Vec<Output>,
) {
    let end = zone
        .sky
        .window_end_near(report.ts, zone.window_ms, zone_state.next_end);
    let next = *zone_state.next_end.get_or_insert(end);
    let shares = if end >= next {
        zone_state.open.entry(end).or_default()
    } else if let Some((shares, _)) = zone_state.judged.get_mut(&end) {
        shares
    } else {
        return; // older than what is kept for revision
    };
    if !shares.contains_key(&place.id) {
        shares.insert(place.id.clone(), NodeShare::default());
    }
    let Some(share) = shares.get_mut(&place.id) else {
        return;
    };
    let to = report.ts;
    let from = to - i64::from(report.period_s.max(1)) * 1000;
    let seconds = (to - from) as f64 / 1000.0;
    share.reports += 1;
    share.motion += report.motion;
    if report.motion > 0 {
        let start = end - zone.window_ms;
        let minute = |t: i64| ((t - start).clamp(0, zone.window_ms - 1) / 60_000) as u32;
        share.motion_minutes.extend(minute(from)..=minute(to - 1));
    }
    let (required, required_min) = required_over(
        &mut zone_state.classes,
        &zone.requirement,
        place,
        profile,
        from,
        to,
    );
    share.required_sum += required * seconds;
    share.required_weight += seconds;
    share.required_min = Some(
        share
            .required_min
            .map_or(required_min, |m| m.min(required_min)),
    );
    if let Some(lux) = report.lux {
        let c = place.calibration;
        share.lux_sum += lux.avg * c * seconds;
        share.weight += seconds;
        let (low, high) = share.lux_range.unwrap_or((f64::MAX, f64::MIN));
        share.lux_range = Some((low.min(lux.min * c), high.max(lux.max * c)));
    }
    if end < next
        && let Some((shares, window)) = zone_state.judged.get_mut(&end)
    {
        let failed = |node: &str| nodes.get(node).is_some_and(NodeState::sensor_failed);
        let revised = figures(zone, shares, window.status, failed);
        *window = ZoneWindow {
            revised: true,
            start: window.start,
            end: window.end,
            cause: window.cause.clone(),
            ..revised
        };
        out.push(Output::Window(window.clone()));
    }
}

/// The figures of a window whose judgement is `status`; `failed` says which nodes'
/// readings are not to be trusted.
fn figures(
    zone: &ZoneModel,
    shares: &Shares,
    status: Status,
    failed: impl Fn(&str) -> bool,
) -> ZoneWindow {
    let valid: Vec<&NodeShare> = shares
        .iter()
        .filter(|(node, share)| share.weight > 0.0 && !failed(node))
        .map(|(_, share)| share)
        .collect();
    let lux_avg = (!valid.is_empty())
        .then(|| valid.iter().map(|s| s.lux_sum / s.weight).sum::<f64>() / valid.len() as f64);
    let lux_min = valid
        .iter()
        .filter_map(|s| s.lux_range.map(|(low, _)| low))
        .reduce(f64::min);
    let weight: f64 = shares.values().map(|s| s.required_weight).sum();
    let required_avg = if weight > 0.0 {
        shares.values().map(|s| s.required_sum).sum::<f64>() / weight
    } else {
        zone.requirement.avg_lux
    };
    let required_min = shares
        .values()
        .filter_map(|s| s.required_min)
        .reduce(f64::min)
        .unwrap_or(zone.requirement.min_lux);
    let detections = shares.values().map(|s| s.motion).sum();
    let dark = status == Status::Dark;
    let minutes: BTreeSet<u32> = shares
        .values()
        .flat_map(|s| s.motion_minutes.iter().copied())
        .collect();
    ZoneWindow {
        site: zone.site.clone(),
        zone: zone.id.clone(),
        start: 0,
        end: 0,
        status,
        lux_avg,
        lux_min,
        required_avg,
        required_min,
        detections,
        occupied_dark_minutes: if dark { minutes.len() as u32 } else { 0 },
        detections_dark: if dark { detections } else { 0 },
        valid_nodes: valid.len() as u32,
        nodes: zone.members.len() as u32,
        cause: None,
        revised: false,
    }
}

/// Judges every window of the zone that can be judged now: each node has reported past
/// its end or is known not to report (or it has waited longer than any window may).
pub fn close(
    zone_state: &mut ZoneState,
    zone: &ZoneModel,
    nodes: &HashMap<String, NodeState>,
    settings: &Settings,
    out: &mut Vec<Output>,
) {
    let known = |member: &String| nodes.get(member);
    let horizon = zone
        .members
        .iter()
        .filter_map(known)
        .filter_map(|n| n.last_ts().max(n.away_at))
        .max();
    let Some(horizon) = horizon else { return };
    while let Some(end) = zone_state.next_end {
        let waited_enough = horizon - end > settings.open_window_max_ms;
        let ready = zone.members.iter().all(|member| {
            known(member).is_some_and(|n| n.is_away() || n.last_ts().is_some_and(|t| t >= end))
        });
        if end > horizon || !(ready || waited_enough) {
            return;
        }
        let shares = zone_state.open.remove(&end).unwrap_or_default();
        judge(zone_state, zone, nodes, settings, end, shares, out);
        zone_state.next_end = Some(zone.sky.window_end(end + 1, zone.window_ms));
    }
}

/// Why nodes of a zone gave no valid reading.
fn cause(
    zone: &ZoneModel,
    shares: &Shares,
    nodes: &HashMap<String, NodeState>,
    start: i64,
) -> Option<String> {
    let mut offline = Vec::new();
    let mut unpowered = Vec::new();
    let mut sensors = Vec::new();
    for member in &zone.members {
        let state = nodes.get(member);
        let share = shares.get(member);
        if state.is_some_and(NodeState::sensor_failed) || share.is_some_and(|s| s.reports > 0) {
            if state.is_some_and(NodeState::sensor_failed) || share.is_some_and(|s| s.weight == 0.0)
            {
                sensors.push(member.as_str());
            }
        } else if state.is_some_and(|s| s.without_power_at(start)) {
            unpowered.push(member.as_str());
        } else {
            offline.push(member.as_str());
        }
    }
    let mut parts = Vec::new();
    if !unpowered.is_empty() {
        parts.push(format!("power loss: {}", unpowered.join(", ")));
    }
    if !offline.is_empty() {
        parts.push(format!("offline: {}", offline.join(", ")));
    }
    if !sensors.is_empty() {
        parts.push(format!("failed sensors: {}", sensors.join(", ")));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

fn judge(
    zone_state: &mut ZoneState,
    zone: &ZoneModel,
    nodes: &HashMap<String, NodeState>,
    settings: &Settings,
    end: i64,
    shares: Shares,
    out: &mut Vec<Output>,
) {
    let start = end - zone.window_ms;
    let failed = |node: &str| nodes.get(node).is_some_and(NodeState::sensor_failed);
    let sun = zone.sky.altitude(start + zone.window_ms / 2);
    let judged = zone.is_valid(start, end) && sun < settings.dark_below_deg;
    let mut window = figures(zone, &shares, Status::NotJudged, failed);
    let needed = settings.observed_share * zone.members.len() as f64;
    // The boost must deliver: a pole that counted detections reaches the full class
    // minimum in that window or the next.
    let mut boost_failed = Vec::new();
    let mut owed = BTreeSet::new();
    for (node, share) in &shares {
        if failed(node) || !judged {
            continue;
        }
        let Some((_, high)) = share.lux_range else {
            continue;
        };
        let reached = high >= zone.requirement.min_lux;
        if !reached && zone_state.owed.contains(node) {
            boost_failed.push(node.as_str());
        }
        if !reached && share.motion > 0 {
            owed.insert(node.clone());
        }
    }
    zone_state.owed = owed;
    let status = if !judged {
        Status::NotJudged
    } else if f64::from(window.valid_nodes) < needed || window.valid_nodes == 0 {
        Status::Unobserved
    } else if window.lux_avg.is_some_and(|avg| avg < window.required_avg)
        || window.lux_min.is_some_and(|min| min < window.required_min)
        || !boost_failed.is_empty()
    {
        Status::Dark
    } else {
        Status::Lit
    };
    let recomputed = figures(zone, &shares, status, failed);
    window = ZoneWindow {
        start,
        end,
        cause: if status == Status::NotJudged {
            None
        } else {
            cause(zone, &shares, nodes, start)
        },
        ..recomputed
    };
    let clearly_lit = status == Status::Lit
        && window
            .lux_avg
            .is_some_and(|a| a >= window.required_avg * (1.0 + settings.clear_margin))
        && window
            .lux_min
            .is_some_and(|m| m >= window.required_min * (1.0 + settings.clear_margin));
    conditions(
        zone_state,
        zone,
        settings,
        &window,
        clearly_lit,
        &boost_failed,
        out,
    );
    out.push(Output::Window(window.clone()));
    zone_state.judged.insert(end, (shares, window));
    let keep_from = end - settings.revise_horizon_ms;
    zone_state.judged = zone_state.judged.split_off(&keep_from);
}

/// Raises or clears `kind` on the zone.
fn set(
    zone_state: &mut ZoneState,
    zone: &ZoneModel,
    kind: Kind,
    change: Option<(Severity, i64)>,
    ts: i64,
    detail: impl FnOnce() -> String,
    out: &mut Vec<Output>,
) {
    let was = zone_state.active.get(&kind).copied();
    let transition = match (change, was) {
        (Some((severity, since)), None) => Some((true, severity, since)),
        (Some((severity, _)), Some(was)) if severity > was.severity => {
            Some((true, severity, was.since))
        }
        (None, Some(was)) => Some((false, was.severity, was.since)),
        _ => None,
    };
    let Some((active, severity, since)) = transition else {
        return;
    };
    if active {
        zone_state.active.insert(kind, Active { since, severity });
    } else {
        zone_state.active.remove(&kind);
    }
    out.push(Output::Transition(Transition {
        kind,
        site: zone.site.clone(),
        zone: Some(zone.id.clone()),
        node: None,
        active,
        severity,
        since,
        ts,
        detail: detail(),
    }));
}

fn conditions(
    zone_state: &mut ZoneState,
    zone: &ZoneModel,
    settings: &Settings,
    window: &ZoneWindow,
    clearly_lit: bool,
    boost_failed: &[&str],
    out: &mut Vec<Output>,
) {
    let k = settings.windows_to_change;
    let runs = &mut zone_state.runs;
    let (end, start) = (window.end, window.start);
    match window.status {
        Status::NotJudged => {
            *runs = Runs::default();
            let why = || {
                if zone.is_valid(start, end) {
                    "not judged: daylight".to_owned()
                } else {
                    "not judged: outside the zone's dates".to_owned()
                }
            };
            set(zone_state, zone, Kind::DarkZone, None, end, why, out);
            set(zone_state, zone, Kind::ZoneUnobserved, None, end, why, out);
            return;
        }
        Status::Unobserved => {
            runs.unobserved = match runs.unobserved {
                (0, _) => (1, start),
                (n, first) => (n + 1, first),
            };
            runs.observed = 0;
            runs.dark = (0, 0);
            runs.clear = 0;
            if runs.unobserved.0 >= k {
                let since = runs.unobserved.1;
                let detail = || {
                    format!(
                        "{} of {} nodes with a valid reading ({})",
                        window.valid_nodes,
                        window.nodes,
                        window.cause.as_deref().unwrap_or("no reports")
                    )
                };
                let change = Some((Severity::Medium, since));
                set(
                    zone_state,
                    zone,
                    Kind::ZoneUnobserved,
                    change,
                    end,
                    detail,
                    out,
                );
            }
            return;
        }
        Status::Lit | Status::Dark => {
            runs.unobserved = (0, 0);
            runs.observed += 1;
            if runs.observed >= k {
                let detail = || "observed again".to_owned();
                set(
                    zone_state,
                    zone,
                    Kind::ZoneUnobserved,
                    None,
                    end,
                    detail,
                    out,
                );
            }
        }
    }
    let runs = &mut zone_state.runs;
    if window.status == Status::Dark {
        runs.dark = match runs.dark {
            (0, _) => (1, start),
            (n, first) => (n + 1, first),
        };
        runs.clear = 0;
        zone_state.run_detections = if runs.dark.0 == 1 {
            window.detections
        } else {
            zone_state.run_detections.max(window.detections)
        };
        if runs.dark.0 >= k {
            let severity = dark_severity(zone_state.run_detections, settings);
            let since = runs.dark.1;
            let detail = || {
                let mut text = format!(
                    "{:.1} lx avg / {:.1} lx min against {:.1} / {:.1} required, {} detections",
                    window.lux_avg.unwrap_or(0.0),
                    window.lux_min.unwrap_or(0.0),
                    window.required_avg,
                    window.required_min,
                    window.detections
                );
                if !boost_failed.is_empty() {
                    text.push_str(&format!(
                        "; no boost to the class minimum at {}",
                        boost_failed.join(", ")
                    ));
                }
                text
            };
            set(
                zone_state,
                zone,
                Kind::DarkZone,
                Some((severity, since)),
                end,
                detail,
                out,
            );
        }
    } else {
        runs.dark = (0, 0);
        runs.clear = if clearly_lit { runs.clear + 1 } else { 0 };
        if runs.clear >= k {
            let detail = || {
                format!(
                    "lit again: {:.1} lx avg / {:.1} lx min",
                    window.lux_avg.unwrap_or(0.0),
                    window.lux_min.unwrap_or(0.0)
                )
            };
            set(zone_state, zone, Kind::DarkZone, None, end, detail, out);
        }
    }
}
