//! The alert manager (DESIGN.md "Detection and alerts"): what Alertmanager is to
//! Prometheus rules, for parklight's conditions. A pure state machine: condition
//! transitions, crews' actions, silences and wall time in, alert changes out; no I/O.
//!
//! - One alert per key (kind, site, zone or node, circuit) at a time: `raised` →
//!   `acknowledged` → `resolved`, every change a new `rev`.
//! - A condition that returns within the hold time reopens its alert; one that returns
//!   more than `flap_returns` times in the flap window is `flapping` and pages once
//!   until it settles.
//! - `node_offline` waits a roll-up delay; offline nodes arriving within one delay of
//!   each other that cover most of a site (or of one circuit) become one
//!   `site_power_loss` with them as children, and none of them gets its own alert.
//! - A `zone_unobserved` with a member node offline is inhibited; a silence pages
//!   nobody; both deliver what is still wrong when they end.
//! - Unacknowledged `high` and `critical` alerts are reminded and escalated.
//!
//! "Page" means: the change goes to the receivers. Every change is kept as history.

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet};

use parklight_protocol::alert::{Alert, AlertKind, AlertState, MAX_CHILDREN, Severity};
use parklight_site::Site;
use serde::{Deserialize, Serialize};

use crate::detect::{Kind, Transition};

/// The alert manager's timings and thresholds.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// A condition back within this time of clearing reopens its alert, ms.
    pub hold_ms: i64,
    /// Returns within `flap_window_ms` above which an alert is flapping.
    pub flap_returns: usize,
    /// The window flapping is counted in, ms.
    pub flap_window_ms: i64,
    /// How long a `node_offline` waits to be rolled up before it is an alert, ms.
    pub rollup_ms: i64,
    /// Share of a site's (or circuit's) nodes offline together that is a power loss.
    pub rollup_share: f64,
    /// Unacknowledged `high` and `critical` alerts are paged again after this, ms.
    pub remind_ms: i64,
    /// Unacknowledged `high` and `critical` alerts go to escalation receivers after
    /// this, ms.
    pub escalate_ms: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            hold_ms: 10 * 60_000,
            flap_returns: 2,
            flap_window_ms: 60 * 60_000,
            rollup_ms: 60_000,
            rollup_share: 0.6,
            remind_ms: 30 * 60_000,
            escalate_ms: 60 * 60_000,
        }
    }
}

/// Where each node is, as the roll-up and inhibition need it.
#[derive(Debug, Clone, Default)]
pub struct Topology {
    /// Node → (site, zone, circuit).
    nodes: HashMap<String, (String, Option<String>, String)>,
    /// Site → node count.
    sites: HashMap<String, usize>,
    /// (Site, circuit) → node count.
    circuits: HashMap<(String, String), usize>,
    /// (Site, zone) of every zone.
    zones: HashSet<(String, String)>,
}

impl Topology {
    /// The topology of `sites`.
    pub fn of(sites: &[Site]) -> Topology {
        let mut topology = Topology::default();
        for site in sites {
            for zone in &site.zones {
                topology.zones.insert((site.id.clone(), zone.id.clone()));
            }
            for node in &site.nodes {
                let place = (site.id.clone(), node.zone.clone(), node.circuit.id.clone());
                topology.nodes.insert(node.id.clone(), place);
                *topology.sites.entry(site.id.clone()).or_default() += 1;
                *topology
                    .circuits
                    .entry((site.id.clone(), node.circuit.id.clone()))
                    .or_default() += 1;
            }
        }
        topology
    }

    /// Whether the place an alert is about is still in the site files.
    fn holds(&self, alert: &StoredAlert) -> bool {
        match (&alert.node, &alert.zone) {
            (Some(node), _) => self.nodes.contains_key(node),
            (None, Some(zone)) => self.zones.contains(&(alert.site.clone(), zone.clone())),
            (None, None) => self.sites.contains_key(&alert.site),
        }
    }

    fn zone_of(&self, node: &str) -> Option<&str> {
        self.nodes.get(node)?.1.as_deref()
    }

    fn circuit_of(&self, node: &str) -> Option<&str> {
        self.nodes.get(node).map(|(_, _, circuit)| circuit.as_str())
    }
}

/// What a silence covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// The whole site.
    Site,
    /// One zone and its nodes.
    Zone(String),
    /// One node.
    Node(String),
    /// One circuit and its nodes.
    Circuit(String),
}

/// A maintenance window: during it nobody is paged for what it covers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Silence {
    /// Its number.
    pub id: i64,
    /// The site.
    pub site: String,
    /// What in the site.
    pub scope: Scope,
    /// Wall time it began, Unix ms.
    pub from: i64,
    /// Wall time it ends, Unix ms (earlier when ended by hand).
    pub until: i64,
    /// Who set it.
    pub by: String,
    /// Why.
    pub note: String,
}

impl Silence {
    fn covers(&self, alert: &Alert, topology: &Topology, now: i64) -> bool {
        if alert.site != self.site || now < self.from || now >= self.until {
            return false;
        }
        let node_in = |test: &dyn Fn(&str) -> bool| {
            alert.node.as_deref().is_some_and(test)
                || (!alert.children.is_empty() && alert.children.iter().all(|c| test(c)))
        };
        match &self.scope {
            Scope::Site => true,
            Scope::Zone(zone) => {
                alert.zone.as_ref() == Some(zone)
                    || node_in(&|n| topology.zone_of(n) == Some(zone.as_str()))
            }
            Scope::Node(node) => node_in(&|n| n == node),
            Scope::Circuit(circuit) => {
                alert.circuit.as_ref() == Some(circuit)
                    || node_in(&|n| topology.circuit_of(n) == Some(circuit.as_str()))
            }
        }
    }
}

/// What happened to an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum What {
    /// A new alert.
    Raised,
    /// Its condition came back within the hold time.
    Reopened,
    /// It became more severe.
    SeverityRose,
    /// A crew acknowledged it.
    Acknowledged,
    /// Its condition cleared, or a crew resolved it.
    Resolved,
    /// More nodes joined a roll-up.
    ChildrenJoined,
    /// Still unacknowledged: paged again.
    Reminded,
    /// Unacknowledged too long: sent to escalation receivers too.
    Escalated,
    /// Its condition comes and goes: paged once until it settles.
    Flapping,
    /// Its condition stopped coming and going.
    Settled,
    /// A silence or an inhibition ended: what is still wrong, delivered now.
    Released,
}

impl What {
    /// As stored and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            What::Raised => "raised",
            What::Reopened => "reopened",
            What::SeverityRose => "severity_rose",
            What::Acknowledged => "acknowledged",
            What::Resolved => "resolved",
            What::ChildrenJoined => "children_joined",
            What::Reminded => "reminded",
            What::Escalated => "escalated",
            What::Flapping => "flapping",
            What::Settled => "settled",
            What::Released => "released",
        }
    }
}

/// One change of an alert: its new revision, kept as history and, when paged, sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The alert after the change.
    pub alert: Alert,
    /// What happened.
    pub what: What,
    /// Whether receivers get it now (not silenced, inhibited, or flapping).
    pub page: bool,
    /// Whether escalation receivers get it too.
    pub escalated: bool,
}

/// A crew's action on an alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Someone is on it.
    Acknowledge,
    /// Done, by hand (refused while its condition is active).
    Resolve,
}

/// A crew's action on one alert, by whom and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The alert's id.
    pub alert: String,
    /// What to do.
    pub action: Action,
    /// Who.
    pub by: String,
    /// Their note.
    pub note: String,
}

/// An alert the manager still tracks: open, or resolved within the hold time (or not
/// yet told to receivers that saw it open).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Tracked {
    alert: StoredAlert,
    /// Whether its condition (for a roll-up: the power loss) is active.
    active: bool,
    resolved_at: Option<i64>,
    last_change: i64,
    /// When it was last paged; when it became unacknowledged.
    paged_at: i64,
    unacked_since: i64,
    escalated: bool,
    /// Receivers saw some revision of it.
    paged_ever: bool,
    /// Its latest revision was not paged.
    unpaged: bool,
    /// For a roll-up: each child and whether it is back online.
    children: BTreeMap<String, bool>,
}

/// [`Alert`] as kept in the manager's state (serde both ways).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct StoredAlert {
    id: String,
    rev: u32,
    kind: AlertKind,
    site: String,
    zone: Option<String>,
    node: Option<String>,
    circuit: Option<String>,
    state: AlertState,
    severity: Severity,
    since: i64,
    ts: i64,
    detail: String,
    by: Option<String>,
    note: Option<String>,
    flapping: bool,
}

/// The key an alert is unique by.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Key {
    kind: AlertKind,
    site: String,
    zone: Option<String>,
    node: Option<String>,
    circuit: Option<String>,
}

/// The manager's whole memory, kept in the store with what it has read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Makes this store's alert ids unlike any other's (another gateway's, a store
    /// started afresh): random, chosen at the first start.
    origin: String,
    next_id: u64,
    #[serde(with = "keyed")]
    tracked: BTreeMap<Key, Tracked>,
    /// Active `node_offline` conditions, by node.
    offline: BTreeMap<String, Transition>,
    /// Offline nodes waiting for the roll-up decision: their arrival (wall ms), and
    /// whether they may still be rolled up (not those left down after a power loss).
    pending: BTreeMap<String, (i64, bool)>,
    /// When each key's condition came back lately (wall ms), within the flap window.
    #[serde(with = "keyed")]
    returns: BTreeMap<Key, Vec<i64>>,
}

/// A map with struct keys as a list of pairs (JSON keys must be strings).
mod keyed {
    use super::{BTreeMap, Key};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer, V: Serialize>(
        map: &BTreeMap<Key, V>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        map.iter().collect::<Vec<_>>().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>, V: Deserialize<'de>>(
        d: D,
    ) -> Result<BTreeMap<Key, V>, D::Error> {
        Ok(Vec::<(Key, V)>::deserialize(d)?.into_iter().collect())
    }
}

impl State {
    /// A new memory whose alert ids start `a-{origin}-`: pick `origin` at random, so no
    /// other store (another gateway's, one started afresh) makes the same ids.
    pub fn with_origin(origin: &str) -> State {
        State {
            origin: origin.to_owned(),
            ..State::default()
        }
    }
}

fn alert_kind(kind: Kind) -> AlertKind {
    match kind {
        Kind::DarkZone => AlertKind::DarkZone,
        Kind::ZoneUnobserved => AlertKind::ZoneUnobserved,
        Kind::NodeOffline => AlertKind::NodeOffline,
        Kind::LampFault => AlertKind::LampFault,
        Kind::SensorFault => AlertKind::SensorFault,
        Kind::Tamper => AlertKind::Tamper,
        Kind::DayBurner => AlertKind::DayBurner,
        Kind::ConfigNotApplied => AlertKind::ConfigNotApplied,
        Kind::LampDegraded => AlertKind::LampDegraded,
    }
}

fn key_of(t: &Transition) -> Key {
    Key {
        kind: alert_kind(t.kind),
        site: t.site.clone(),
        zone: t.zone.clone(),
        node: t.node.clone(),
        circuit: None,
    }
}

impl Tracked {
    /// The wire message of its latest revision.
    fn message(&self) -> Alert {
        let a = &self.alert;
        let children: Vec<String> = self.children.keys().cloned().collect();
        Alert {
            id: a.id.clone(),
            rev: a.rev,
            kind: a.kind,
            site: a.site.clone(),
            zone: a.zone.clone(),
            node: a.node.clone(),
            circuit: a.circuit.clone(),
            state: a.state,
            severity: a.severity,
            since: a.since.max(0) as u64,
            ts: a.ts.max(0) as u64,
            detail: a.detail.clone(),
            by: a.by.clone(),
            note: a.note.clone(),
            flapping: a.flapping,
            children_count: children.len() as u32,
            children: children.into_iter().take(MAX_CHILDREN).collect(),
        }
    }

    fn is_open(&self) -> bool {
        self.alert.state != AlertState::Resolved
    }
}

/// The alert manager.
#[derive(Debug, Clone)]
pub struct Manager {
    topology: Topology,
    settings: Settings,
    state: State,
}

impl Manager {
    /// A manager over `topology` resuming `state`.
    pub fn new(topology: Topology, settings: Settings, state: State) -> Manager {
        Manager {
            topology,
            settings,
            state,
        }
    }

    /// Its state, to keep.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The latest revision of every alert it tracks (open, or resolved lately).
    pub fn alerts(&self) -> impl Iterator<Item = Alert> + '_ {
        self.state.tracked.values().map(Tracked::message)
    }

    /// Takes a condition transition at wall time `now`.
    pub fn condition(
        &mut self,
        t: &Transition,
        now: i64,
        silences: &[Silence],
        out: &mut Vec<Change>,
    ) {
        if t.kind == Kind::NodeOffline {
            return self.offline(t, now, silences, out);
        }
        let key = key_of(t);
        if t.active {
            self.raise(key, t, None, now, silences, out);
        } else if let Some(tracked) = self.state.tracked.get_mut(&key) {
            tracked.active = false;
            if tracked.is_open() {
                self.resolve(&key, &t.detail, None, now, silences, out);
            }
        }
    }

    /// Raises (or reopens, or makes more severe) the alert at `key` for condition `t`;
    /// `children` replace a roll-up's.
    fn raise(
        &mut self,
        key: Key,
        t: &Transition,
        children: Option<BTreeMap<String, bool>>,
        now: i64,
        silences: &[Silence],
        out: &mut Vec<Change>,
    ) {
        // Resolved longer than the hold time ago: forgotten, and this is a new alert.
        let hold = self.settings.hold_ms;
        if (self.state.tracked.get(&key))
            .and_then(|tracked| tracked.resolved_at)
            .is_some_and(|at| now - at >= hold)
        {
            self.state.tracked.remove(&key);
        }
        let flapping = self.returned(&key, now);
        let what = match self.state.tracked.get_mut(&key) {
            Some(tracked) if !tracked.is_open() => {
                if let Some(children) = children {
                    tracked.children = children;
                }
                tracked.active = true;
                tracked.resolved_at = None;
                (tracked.unacked_since, tracked.escalated) = (now, false);
                let a = &mut tracked.alert;
                (a.state, a.severity, a.detail) =
                    (AlertState::Raised, t.severity, t.detail.clone());
                (a.by, a.note) = (None, None);
                if flapping && !a.flapping {
                    a.flapping = true;
                    What::Flapping
                } else {
                    What::Reopened
                }
            }
            Some(tracked) => {
                tracked.active = true;
                if t.severity <= tracked.alert.severity {
                    return;
                }
                (tracked.unacked_since, tracked.escalated) = (now, false);
                let a = &mut tracked.alert;
                (a.state, a.severity, a.detail) =
                    (AlertState::Raised, t.severity, t.detail.clone());
                (a.by, a.note) = (None, None);
                What::SeverityRose
            }
            None => {
                self.state.next_id += 1;
                let alert = StoredAlert {
                    id: format!("a-{}-{}", self.state.origin, self.state.next_id),
                    rev: 0,
                    kind: key.kind,
                    site: key.site.clone(),
                    zone: key.zone.clone(),
                    node: key.node.clone(),
                    circuit: key.circuit.clone(),
                    state: AlertState::Raised,
                    severity: t.severity,
                    since: t.since,
                    ts: now,
                    detail: t.detail.clone(),
                    by: None,
                    note: None,
                    flapping,
                };
                self.state.tracked.insert(
                    key.clone(),
                    Tracked {
                        alert,
                        active: true,
                        resolved_at: None,
                        last_change: now,
                        paged_at: now,
                        unacked_since: now,
                        escalated: false,
                        paged_ever: false,
                        unpaged: false,
                        children: children.unwrap_or_default(),
                    },
                );
                if flapping {
                    What::Flapping
                } else {
                    What::Raised
                }
            }
        };
        self.emit(&key, what, now, silences, out);
    }

    /// Counts a raise of `key`'s condition (not a rise of an open alert's severity) at
    /// `now`; true when it came back more than `flap_returns` times in the flap window.
    fn returned(&mut self, key: &Key, now: i64) -> bool {
        if self.state.tracked.get(key).is_some_and(Tracked::is_open) {
            return false;
        }
        let window = self.settings.flap_window_ms;
        let raised = self.state.returns.entry(key.clone()).or_default();
        raised.retain(|at| now - at < window);
        raised.push(now);
        raised.len() - 1 > self.settings.flap_returns
    }

    /// Resolves the open alert at `key`: automatically (`by` none) or by a crew.
    fn resolve(
        &mut self,
        key: &Key,
        detail: &str,
        by: Option<(String, String)>,
        now: i64,
        silences: &[Silence],
        out: &mut Vec<Change>,
    ) {
        let Some(tracked) = self.state.tracked.get_mut(key) else {
            return;
        };
        tracked.resolved_at = Some(now);
        let a = &mut tracked.alert;
        a.state = AlertState::Resolved;
        a.detail = detail.to_owned();
        (a.by, a.note) = by.map_or((None, None), |(by, note)| (Some(by), Some(note)));
        self.emit(key, What::Resolved, now, silences, out);
    }

    /// Makes a new revision of the alert at `key` and says whether it pages.
    fn emit(
        &mut self,
        key: &Key,
        what: What,
        now: i64,
        silences: &[Silence],
        out: &mut Vec<Change>,
    ) {
        let held = self.held(key, now, silences);
        let Some(tracked) = self.state.tracked.get_mut(key) else {
            return;
        };
        tracked.alert.rev += 1;
        tracked.alert.ts = now;
        tracked.last_change = now;
        // A flapping alert pages once until it settles; a crew's action and a rise in
        // severity still page.
        let quiet = tracked.alert.flapping
            && !matches!(
                what,
                What::Flapping | What::Settled | What::SeverityRose | What::Acknowledged
            );
        let page = !held && !quiet;
        if page {
            tracked.paged_at = now;
            tracked.paged_ever = true;
        }
        tracked.unpaged = !page;
        out.push(Change {
            alert: tracked.message(),
            what,
            page,
            escalated: tracked.escalated,
        });
    }

    /// Whether the alert at `key` may not page now: silenced, or an unobserved zone
    /// with a member node offline.
    fn held(&self, key: &Key, now: i64, silences: &[Silence]) -> bool {
        let Some(tracked) = self.state.tracked.get(key) else {
            return false;
        };
        let message = tracked.message();
        if silences
            .iter()
            .any(|s| s.covers(&message, &self.topology, now))
        {
            return true;
        }
        key.kind == AlertKind::ZoneUnobserved
            && self.state.offline.keys().any(|node| {
                self.topology
                    .nodes
                    .get(node)
                    .is_some_and(|(site, zone, _)| {
                        *site == key.site && zone.is_some() && *zone == key.zone
                    })
            })
    }

    fn offline(&mut self, t: &Transition, now: i64, silences: &[Silence], out: &mut Vec<Change>) {
        let Some(node) = t.node.clone() else {
            return;
        };
        if t.active {
            self.state.offline.insert(node.clone(), t.clone());
            if !self.joins_roll_up(&node, now, silences, out) {
                self.state.pending.entry(node).or_insert((now, true));
            }
            return;
        }
        self.state.offline.remove(&node);
        if self.state.pending.remove(&node).is_some() {
            return; // back before the roll-up delay: never an alert
        }
        let roll_ups: Vec<Key> = self
            .state
            .tracked
            .iter()
            .filter(|(_, tr)| tr.is_open() && tr.children.get(&node) == Some(&false))
            .map(|(key, _)| key.clone())
            .collect();
        for key in roll_ups {
            let tracked = self.state.tracked.get_mut(&key).expect("tracked");
            tracked.children.insert(node.clone(), true);
            let back = tracked.children.values().filter(|b| **b).count();
            if back as f64 >= self.settings.rollup_share * tracked.children.len() as f64 {
                tracked.active = false;
                let still_down: Vec<String> = tracked
                    .children
                    .iter()
                    .filter(|(_, back)| !**back)
                    .map(|(n, _)| n.clone())
                    .collect();
                let detail = format!(
                    "power back: {back} of {} nodes online again",
                    tracked.children.len()
                );
                self.resolve(&key, &detail, None, now, silences, out);
                // Still down a roll-up delay from now: their own alerts.
                for node in still_down {
                    self.state.pending.insert(node, (now, false));
                }
            }
        }
        let key = key_of(t);
        if self.state.tracked.get(&key).is_some_and(Tracked::is_open) {
            self.state.tracked.get_mut(&key).expect("tracked").active = false;
            self.resolve(&key, &t.detail, None, now, silences, out);
        }
    }

    /// Adds `node` to an open power loss of its site or circuit; true if it joined.
    fn joins_roll_up(
        &mut self,
        node: &str,
        now: i64,
        silences: &[Silence],
        out: &mut Vec<Change>,
    ) -> bool {
        let Some((site, _, circuit)) = self.topology.nodes.get(node).cloned() else {
            return false;
        };
        let key = self.state.tracked.iter().find_map(|(key, tracked)| {
            let covers = key.kind == AlertKind::SitePowerLoss
                && tracked.is_open()
                && key.site == site
                && key.circuit.as_ref().is_none_or(|c| *c == circuit);
            covers.then(|| key.clone())
        });
        let Some(key) = key else {
            return false;
        };
        let tracked = self.state.tracked.get_mut(&key).expect("tracked");
        tracked.children.insert(node.to_owned(), false);
        let count = tracked.children.len();
        tracked.alert.detail = power_loss_detail(count, tracked.alert.circuit.as_deref());
        self.emit(&key, What::ChildrenJoined, now, silences, out);
        true
    }

    /// A crew's action; refused with the reason when it cannot be done.
    pub fn act(
        &mut self,
        request: &Request,
        now: i64,
        silences: &[Silence],
        out: &mut Vec<Change>,
    ) -> Result<(), String> {
        let Request {
            alert: id,
            action,
            by,
            note,
        } = request;
        let (key, tracked) = self
            .state
            .tracked
            .iter()
            .find(|(_, tr)| tr.alert.id == *id)
            .map(|(k, tr)| (k.clone(), tr.clone()))
            .ok_or_else(|| format!("{id} is not an open alert"))?;
        if !tracked.is_open() {
            return Err(format!("{id} is resolved"));
        }
        match action {
            Action::Acknowledge => {
                if tracked.alert.state == AlertState::Acknowledged {
                    let who = tracked.alert.by.unwrap_or_default();
                    return Err(format!("{id} is already acknowledged by {who}"));
                }
                let tracked = self.state.tracked.get_mut(&key).expect("tracked");
                let a = &mut tracked.alert;
                (a.state, a.by, a.note) = (
                    AlertState::Acknowledged,
                    Some(by.clone()),
                    Some(note.clone()),
                );
                self.emit(&key, What::Acknowledged, now, silences, out);
            }
            Action::Resolve => {
                // Active, unless its node or zone left the site files: nothing will
                // ever clear it then.
                if tracked.active && self.topology.holds(&tracked.alert) {
                    return Err(format!(
                        "{id} cannot be resolved while its condition is active: {}",
                        tracked.alert.detail
                    ));
                }
                let detail = tracked.alert.detail.clone();
                self.resolve(
                    &key,
                    &detail,
                    Some((by.clone(), note.clone())),
                    now,
                    silences,
                    out,
                );
            }
        }
        Ok(())
    }

    /// Does what wall time `now` asks: roll-up decisions, reminders, escalations,
    /// flapping that settled, silences and inhibitions that ended, and forgetting
    /// alerts resolved longer than the hold time ago.
    pub fn tick(&mut self, now: i64, silences: &[Silence], out: &mut Vec<Change>) {
        self.roll_up(now, silences, out);
        let window = self.settings.flap_window_ms;
        self.state.returns.retain(|_, raised| {
            raised.retain(|at| now - at < window);
            !raised.is_empty()
        });
        let s = self.settings.clone();
        let keys: Vec<Key> = self.state.tracked.keys().cloned().collect();
        for key in keys {
            let held = self.held(&key, now, silences);
            let tracked = self.state.tracked.get_mut(&key).expect("tracked");
            if tracked.alert.flapping && now - tracked.last_change >= s.hold_ms {
                tracked.alert.flapping = false;
                self.state.returns.remove(&key);
                self.emit(&key, What::Settled, now, silences, out);
                continue;
            }
            let urgent = tracked.alert.severity >= Severity::High
                && tracked.alert.state == AlertState::Raised
                && !tracked.alert.flapping;
            if tracked.unpaged
                && !held
                && !tracked.alert.flapping
                && (tracked.is_open() || tracked.paged_ever)
            {
                // Unacknowledged from now: the silence or inhibition gave nobody a chance.
                tracked.unacked_since = now;
                self.emit(&key, What::Released, now, silences, out);
            } else if urgent
                && !held
                && !tracked.escalated
                && now - tracked.unacked_since >= s.escalate_ms
            {
                tracked.escalated = true;
                self.emit(&key, What::Escalated, now, silences, out);
            } else if urgent && !held && now - tracked.paged_at >= s.remind_ms {
                self.emit(&key, What::Reminded, now, silences, out);
            } else if tracked.resolved_at.is_some_and(|at| now - at >= s.hold_ms)
                && !(tracked.unpaged && tracked.paged_ever)
            {
                self.state.tracked.remove(&key);
            }
        }
    }

    /// Decides the offline nodes that waited: a power loss of a site or circuit for
    /// most of its nodes at once, each other one its own alert after the delay.
    fn roll_up(&mut self, now: i64, silences: &[Silence], out: &mut Vec<Change>) {
        let share = self.settings.rollup_share;
        let mut by_site: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (node, _) in self
            .state
            .pending
            .iter()
            .filter(|(_, (_, eligible))| *eligible)
        {
            if let Some((site, _, _)) = self.topology.nodes.get(node) {
                by_site.entry(site.clone()).or_default().push(node.clone());
            }
        }
        for (site, nodes) in by_site {
            // Decided when the first of them has waited the delay: all arrived within
            // one delay of each other, and as many as can be are in.
            let due = |node: &String| now - self.state.pending[node].0 >= self.settings.rollup_ms;
            if !nodes.iter().any(due) {
                continue;
            }
            let site_nodes = self.topology.sites.get(&site).copied().unwrap_or(0);
            if nodes.len() >= 2 && nodes.len() as f64 >= share * site_nodes as f64 {
                self.power_loss(&site, None, nodes, now, silences, out);
                continue;
            }
            let mut by_circuit: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for node in nodes {
                let circuit = self
                    .topology
                    .circuit_of(&node)
                    .unwrap_or_default()
                    .to_owned();
                by_circuit.entry(circuit).or_default().push(node);
            }
            for (circuit, nodes) in by_circuit {
                let total = self.topology.circuits.get(&(site.clone(), circuit.clone()));
                let total = total.copied().unwrap_or(0);
                if nodes.len() >= 2 && nodes.len() as f64 >= share * total as f64 {
                    self.power_loss(&site, Some(circuit), nodes, now, silences, out);
                }
            }
        }
        let due: Vec<String> = self
            .state
            .pending
            .iter()
            .filter(|(_, (arrived, _))| now - arrived >= self.settings.rollup_ms)
            .map(|(node, _)| node.clone())
            .collect();
        for node in due {
            self.state.pending.remove(&node);
            if let Some(t) = self.state.offline.get(&node).cloned() {
                self.raise(key_of(&t), &t, None, now, silences, out);
            }
        }
    }

    fn power_loss(
        &mut self,
        site: &str,
        circuit: Option<String>,
        nodes: Vec<String>,
        now: i64,
        silences: &[Silence],
        out: &mut Vec<Change>,
    ) {
        let since = nodes
            .iter()
            .filter_map(|n| self.state.offline.get(n).map(|t| t.since))
            .min()
            .unwrap_or(now);
        for node in &nodes {
            self.state.pending.remove(node);
        }
        let condition = Transition {
            kind: Kind::NodeOffline,
            site: site.to_owned(),
            zone: None,
            node: None,
            active: true,
            severity: Severity::Critical,
            since,
            ts: now,
            detail: power_loss_detail(nodes.len(), circuit.as_deref()),
        };
        let key = Key {
            kind: AlertKind::SitePowerLoss,
            site: site.to_owned(),
            zone: None,
            node: None,
            circuit,
        };
        let children = nodes.into_iter().map(|n| (n, false)).collect();
        self.raise(key, &condition, Some(children), now, silences, out);
    }
}

fn power_loss_detail(count: usize, circuit: Option<&str>) -> String {
    match circuit {
        Some(circuit) => format!("power loss on circuit {circuit}: {count} nodes offline together"),
        None => format!("power loss: {count} nodes offline together"),
    }
}
