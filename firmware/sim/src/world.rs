//! The simulated park: virtual nodes stepped through simulated time in lock-step, so a
//! seed gives the same sun, people and faults every run; only the network is real.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use parklight_core::sensor::{Sample, SensorFailed};
use parklight_core::{Action, Identity, Input, Node, NonVolatile, Now, Persist, Settings};
use parklight_protocol::{Ack, Id, Message, NodeTopic};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rumqttc::{LastWill, MqttOptions, QoS};
use tokio::sync::mpsc;

use crate::faults::{FaultKind, FaultPlan, Scripted, Timing};
use crate::link::{Link, LinkEvent, Tagged};
use crate::physics::{self, Clouds};
use crate::store::NodeFile;
use crate::{SIM_BUFFER, people};
use parklight_site::{Site, distance_m};

/// Simulated time between two samples of a node's sensors.
pub const STEP_MS: i64 = 5_000;

/// How a light sensor behaves.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Sensor {
    Working,
    /// Keeps returning one reading: the one before it stuck, or the first it makes.
    Stuck(Option<f64>),
    Dead,
}

/// When something ends: at a simulated time, or after wall-clock time (outages that
/// liveness must see at any speed).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Until {
    Simulated(i64),
    Wall(Instant),
}

impl Until {
    /// `lasting` after `sim_ms` on the `timing` clock; beyond what a clock holds, never.
    fn after(timing: Timing, sim_ms: i64, lasting: Duration) -> Until {
        let never = Until::Simulated(i64::MAX);
        match timing {
            Timing::Simulated => i64::try_from(lasting.as_millis())
                .map_or(never, |ms| Until::Simulated(sim_ms.saturating_add(ms))),
            Timing::Wall => Instant::now()
                .checked_add(lasting)
                .map_or(never, Until::Wall),
        }
    }

    fn passed(self, sim_ms: i64) -> bool {
        match self {
            Until::Simulated(at) => sim_ms >= at,
            Until::Wall(at) => Instant::now() >= at,
        }
    }
}

/// Why and until when a node is without power (also while its site or circuit is).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Down {
    until: Option<Until>,
    power_loss: bool,
    keeps_clock: bool,
}

/// Totals of a node over all its boots.
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    reports: u64,
    acknowledged: u64,
    dropped: u64,
}

struct VirtualNode {
    site: usize,
    identity: Identity,
    position: [f64; 2],
    /// Its zone as people see it (its `light` set each step).
    zone: people::Zone,
    /// The nodes of its zone, itself included.
    zone_mates: Vec<usize>,
    /// The average its zone's class asks, lux.
    required_lux: f64,
    node: Option<Box<Node<SIM_BUFFER>>>,
    store: NodeFile,
    dirty: bool,
    link: Option<Link>,
    rng: ChaCha8Rng,
    booted_at_ms: i64,
    level: u8,
    lamp_full_lux: f64,
    lamp_works: bool,
    relay_stuck: bool,
    metered: bool,
    rated_w: f64,
    night_circuit: bool,
    sensor: Sensor,
    last_reading: Option<f64>,
    neighbours: Vec<(usize, f64)>,
    offline_until: Option<Until>,
    down: Option<Down>,
    earlier_boots: Counts,
}

impl VirtualNode {
    fn now(&self, sim_ms: i64, net_ms: u64) -> Now {
        Now {
            up_ms: u64::try_from(sim_ms - self.booted_at_ms).unwrap_or(0),
            net_ms,
        }
    }

    fn counts(&self) -> Counts {
        let stats = self.node.as_ref().map(|n| n.stats()).unwrap_or_default();
        Counts {
            reports: self.earlier_boots.reports + u64::from(stats.reports),
            acknowledged: self.earlier_boots.acknowledged + u64::from(stats.acknowledged),
            dropped: self.earlier_boots.dropped + u64::from(stats.dropped),
        }
    }

    fn buffered(&self) -> u32 {
        self.node.as_ref().map_or(0, |n| n.stats().buffered)
    }

    /// Gives the node one input and carries out what it asks for.
    fn feed(&mut self, now: Now, input: Input<'_>) {
        let VirtualNode {
            node: Some(node),
            link,
            level,
            dirty,
            ..
        } = self
        else {
            return;
        };
        node.handle(now, input, &mut |action: Action<'_>| match action {
            Action::SetLamp(l) => *level = l,
            Action::Subscribe(topic) => {
                if let Some(link) = link {
                    link.subscribe(topic);
                }
            }
            Action::Publish {
                topic,
                payload,
                retain,
            } => {
                if let Some(link) = link {
                    link.publish(topic, payload, retain);
                }
            }
            Action::Persist(_) => *dirty = true,
        });
    }

    fn save(&mut self) {
        if let Some(node) = &self.node {
            if let Err(error) = self.store.save(Persist::Reports, node) {
                tracing::warn!(node = %self.identity.node, path = %self.store.path().display(), %error, "cannot save node state");
            }
            self.dirty = false;
        }
    }

    /// The level the lamp burns at: what the node commands, full with a stuck relay,
    /// nothing without power.
    fn lit_level(&self) -> u8 {
        match (&self.node, self.relay_stuck) {
            (None, _) => 0,
            (Some(_), true) => 100,
            (Some(_), false) => self.level,
        }
    }

    /// What its lamp delivers at full power over what its zone's class asks, up to 1
    /// (lit to class); 0 while it is broken or without power.
    fn light(&self) -> f64 {
        if self.lamp_works && self.node.is_some() {
            (self.lamp_full_lux / self.required_lux.max(1e-6)).min(1.0)
        } else {
            0.0
        }
    }

    /// Light the lamp puts on its own sensor.
    fn own_lux(&self) -> f64 {
        if self.lamp_works {
            physics::lamp_lux(self.lamp_full_lux, self.lit_level())
        } else {
            0.0
        }
    }

    fn will(&self) -> Option<LastWill> {
        let (topic, payload) = self.node.as_ref()?.will();
        Some(LastWill::new(
            topic.as_str(),
            payload.to_vec(),
            QoS::AtLeastOnce,
            true,
        ))
    }
}

struct SiteState {
    site: Site,
    tz: jiff::tz::TimeZone,
    clouds: Clouds,
    rng: ChaCha8Rng,
    power_back: Option<Until>,
}

/// What the world needs to know to run.
pub struct WorldConfig {
    /// Broker URL.
    pub broker: String,
    /// Topic prefix.
    pub prefix: String,
    /// Report interval of nodes without a config.
    pub interval_s: u16,
    /// Resend timeout of the stored-acknowledgement protocol.
    pub ack_timeout: Duration,
    /// Seed of every random choice.
    pub seed: u64,
    /// Where nodes keep their state.
    pub state_dir: PathBuf,
    /// Faults to inject.
    pub faults: FaultPlan,
    /// Nodes the site file says are metered report their lamp's power.
    pub meters: bool,
}

/// Counters for the display and the summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Virtual nodes.
    pub nodes: usize,
    /// Nodes connected now.
    pub connected: usize,
    /// Reports made.
    pub reports: u64,
    /// Reports acknowledged by a gateway.
    pub acknowledged: u64,
    /// Reports held unacknowledged now.
    pub buffered: u64,
    /// Reports given up unacknowledged (full buffer, too many resends).
    pub dropped: u64,
}

/// All virtual nodes of all sites.
pub struct World {
    config: WorldConfig,
    sites: Vec<SiteState>,
    nodes: Vec<VirtualNode>,
    connected: Vec<bool>,
    events: mpsc::UnboundedSender<Tagged>,
    next_generation: u64,
    start_ms: i64,
    stepped_to_ms: i64,
    started: Instant,
    acks_seen: bool,
    /// Scripted faults on the wall clock not yet applied.
    wall_faults: Vec<Scripted>,
    /// Failed parts and when they are repaired.
    repairs: Vec<(usize, FaultKind, Until)>,
}

/// A stable hash of `text` (FNV-1a), to give each site and node its own seed.
pub fn fnv64(text: &str) -> u64 {
    let mut hasher = fnv::FnvHasher::default();
    std::hash::Hasher::write(&mut hasher, text.as_bytes());
    std::hash::Hasher::finish(&hasher)
}

impl World {
    /// Builds the world at simulated time `start_ms`; nodes boot at the first step.
    pub fn new(
        config: WorldConfig,
        sites: Vec<Site>,
        start_ms: i64,
        events: mpsc::UnboundedSender<Tagged>,
    ) -> Result<World, crate::SimError> {
        let mut site_states = Vec::new();
        let mut nodes = Vec::new();
        let mut zone_of = Vec::new();
        for (site_index, site) in sites.into_iter().enumerate() {
            let tz = jiff::tz::TimeZone::get(&site.timezone)
                .map_err(|e| crate::SimError::Options(format!("site {}: {e}", site.id)))?;
            let mut rng = ChaCha8Rng::seed_from_u64(config.seed ^ fnv64(&site.id));
            let clouds = Clouds::new(&mut rng);
            for placement in &site.nodes {
                let zone = placement.zone.as_deref().and_then(|z| site.zone(z));
                let required = zone.map_or(5.0, |z| z.requirement.avg_lux);
                zone_of.push(zone.map(|z| (site_index, z.id.clone())));
                let mut rng = ChaCha8Rng::seed_from_u64(config.seed ^ fnv64(&placement.id));
                let identity = Identity {
                    prefix: heapless::String::try_from(config.prefix.as_str()).map_err(|_| {
                        crate::SimError::Options("topic prefix is longer than 64 bytes".into())
                    })?,
                    site: Id::new(&site.id).map_err(|_| {
                        crate::SimError::Options(format!("bad site id {}", site.id))
                    })?,
                    node: Id::new(&placement.id).map_err(|_| {
                        crate::SimError::Options(format!("bad node id {}", placement.id))
                    })?,
                };
                nodes.push(VirtualNode {
                    site: site_index,
                    store: NodeFile::new(&config.state_dir, &site.id, &placement.id),
                    identity,
                    position: placement.position,
                    zone: people::Zone {
                        popularity: zone.map_or(1.0, |z| z.popularity),
                        poles: site
                            .nodes
                            .iter()
                            .filter(|n| n.zone == placement.zone)
                            .count(),
                        light: 1.0,
                    },
                    zone_mates: Vec::new(),
                    required_lux: required,
                    node: None,
                    dirty: false,
                    link: None,
                    booted_at_ms: start_ms,
                    level: 0,
                    // Each lamp lights its zone to 1.4 to 2.4 times the class average.
                    lamp_full_lux: required * rng.random_range(1.4..2.4),
                    lamp_works: true,
                    relay_stuck: false,
                    metered: placement.metered && config.meters,
                    rated_w: placement.rated_w.unwrap_or(physics::LAMP_WATTS),
                    night_circuit: placement.circuit.powered == parklight_site::Powered::Night,
                    sensor: Sensor::Working,
                    last_reading: None,
                    neighbours: Vec::new(),
                    offline_until: None,
                    down: Some(Down {
                        until: None,
                        power_loss: false,
                        keeps_clock: true,
                    }),
                    earlier_boots: Counts::default(),
                    rng,
                });
            }
            site_states.push(SiteState {
                site,
                tz,
                clouds,
                rng,
                power_back: None,
            });
        }
        for i in 0..nodes.len() {
            nodes[i].neighbours = (0..nodes.len())
                .filter(|&j| j != i && nodes[j].site == nodes[i].site)
                .filter_map(|j| {
                    let d = distance_m(nodes[i].position, nodes[j].position);
                    (d < physics::SPILL_RANGE_M)
                        .then(|| (j, physics::SPILL_SHARE * (1.0 - d / physics::SPILL_RANGE_M)))
                })
                .collect();
            nodes[i].zone_mates = match &zone_of[i] {
                Some(zone) => (0..nodes.len())
                    .filter(|&j| zone_of[j].as_ref() == Some(zone))
                    .collect(),
                None => vec![i],
            };
        }
        let connected = vec![false; nodes.len()];
        let wall_faults = (config.faults.scripted.iter())
            .filter(|s| s.timing == Timing::Wall)
            .cloned()
            .collect();
        Ok(World {
            config,
            sites: site_states,
            nodes,
            connected,
            events,
            next_generation: 0,
            start_ms,
            stepped_to_ms: start_ms - STEP_MS,
            started: Instant::now(),
            acks_seen: false,
            wall_faults,
            repairs: Vec::new(),
        })
    }

    fn net_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Whether any node has received an acknowledgement.
    pub fn acks_seen(&self) -> bool {
        self.acks_seen
    }

    /// Counters over all nodes.
    pub fn totals(&self) -> Totals {
        let mut totals = Totals {
            nodes: self.nodes.len(),
            connected: self.connected.iter().filter(|c| **c).count(),
            ..Totals::default()
        };
        for node in &self.nodes {
            let counts = node.counts();
            totals.reports += counts.reports;
            totals.acknowledged += counts.acknowledged;
            totals.dropped += counts.dropped;
            totals.buffered += u64::from(node.buffered());
        }
        totals
    }

    /// Steps simulated time up to `target_ms`, then lets nodes with unacknowledged
    /// reports resend on the network clock.
    pub fn advance(&mut self, target_ms: i64) {
        self.wall_clock_faults();
        while self.stepped_to_ms + STEP_MS <= target_ms {
            self.step(self.stepped_to_ms + STEP_MS);
        }
        self.pump();
    }

    /// Lets nodes resend what is due, without simulated time passing.
    pub fn pump(&mut self) {
        let (sim_ms, net_ms) = (self.stepped_to_ms, self.net_ms());
        for node in &mut self.nodes {
            if node.link.is_some() && node.buffered() > 0 {
                let now = node.now(sim_ms, net_ms);
                node.feed(now, Input::Tick);
            }
        }
    }

    /// Writes the state of nodes that changed.
    pub fn flush(&mut self) {
        for node in self.nodes.iter_mut().filter(|n| n.dirty) {
            node.save();
        }
    }

    fn step(&mut self, t: i64) {
        self.stepped_to_ms = t;
        self.scripted_faults(t - STEP_MS, t);
        let moon = physics::moon_lux(t);
        let mut sky = Vec::with_capacity(self.sites.len());
        for state in &mut self.sites {
            let cloud = state.clouds.step(&mut state.rng);
            let altitude = parklight_core::solar::altitude_deg(t, state.site.lat, state.site.lon);
            let (local, local_ms) = jiff::Timestamp::from_millisecond(t)
                .map(|ts| {
                    let offset_ms = i64::from(state.tz.to_offset(ts).seconds()) * 1000;
                    (people::Moment::of(state.tz.to_datetime(ts)), t + offset_ms)
                })
                .unwrap_or((
                    people::Moment {
                        weekday: 0,
                        hour: 12,
                        minute: 0,
                        day_of_year: 1,
                    },
                    t,
                ));
            let night = altitude < parklight_core::solar::SUNSET_ALTITUDE_DEG;
            let outside = people::Outside {
                dark: altitude < parklight_core::solar::CIVIL_TWILIGHT_DEG,
                weather: people::weather(
                    self.config.seed ^ fnv64(&state.site.id),
                    local_ms.div_euclid(86_400_000),
                ),
            };
            sky.push((
                physics::sky_lux(altitude, cloud, moon),
                local,
                night,
                outside,
            ));
        }
        self.site_power(t);
        self.repair(t);
        let lamps: Vec<f64> = self.nodes.iter().map(VirtualNode::own_lux).collect();
        let lights: Vec<f64> = self.nodes.iter().map(VirtualNode::light).collect();
        for i in 0..self.nodes.len() {
            let spill: f64 = self.nodes[i]
                .neighbours
                .iter()
                .map(|(j, share)| lamps[*j] * share)
                .sum();
            let (sky_lux, local, night, outside) = sky[self.nodes[i].site];
            let mates = &self.nodes[i].zone_mates;
            self.nodes[i].zone.light =
                mates.iter().map(|j| lights[*j]).sum::<f64>() / mates.len().max(1) as f64;
            let powered = self.sites[self.nodes[i].site].power_back.is_none()
                && (night || !self.nodes[i].night_circuit);
            if self.nodes[i].node.is_some() && !powered {
                let down = Down {
                    until: None,
                    power_loss: true,
                    keeps_clock: true,
                };
                self.power_off(i, down);
            }
            if let Some(down) = &mut self.nodes[i].down {
                if !powered {
                    // It boots as after any loss of power, however it went down.
                    down.power_loss = true;
                    continue;
                }
                if down.until.is_some_and(|until| !until.passed(t)) {
                    continue;
                }
                let down = *down;
                self.boot(i, t, down);
            }
            self.step_node(i, t, sky_lux + spill, local, outside);
        }
    }

    fn step_node(
        &mut self,
        i: usize,
        t: i64,
        ambient_lux: f64,
        at: people::Moment,
        outside: people::Outside,
    ) {
        self.rate_faults(i, t);
        if self.nodes[i].node.is_none() {
            return;
        }
        let net_ms = self.net_ms();
        if self.nodes[i].link.is_none()
            && self.nodes[i]
                .offline_until
                .is_none_or(|until| until.passed(t))
        {
            self.connect(i);
        }
        let node = &mut self.nodes[i];
        // People: Poisson detections spread over the step, each a short PIR pulse.
        let rate = people::rate_per_hour(at, outside, &node.zone);
        let count = people::detections(rate, STEP_MS as f64 / 1000.0, &mut node.rng);
        let mut times: Vec<i64> = (0..count)
            .map(|_| t - node.rng.random_range(0..STEP_MS))
            .collect();
        times.sort_unstable();
        for (k, &at) in times.iter().enumerate() {
            let next = times.get(k + 1).map_or(t, |n| n - 1);
            node.feed(node.now(at, net_ms), Input::Pir(true));
            node.feed(
                node.now((at + 500).min(next).max(at), net_ms),
                Input::Pir(false),
            );
        }
        // Light: the sky and the neighbours, plus this lamp, through the sensor.
        let own = node.own_lux();
        let reading = match node.sensor {
            Sensor::Working | Sensor::Stuck(None) => {
                let lux = physics::sensor_reading(ambient_lux + own, &mut node.rng);
                node.last_reading = Some(lux);
                if node.sensor == Sensor::Stuck(None) {
                    node.sensor = Sensor::Stuck(Some(lux));
                }
                Ok(Sample::Lux(lux))
            }
            Sensor::Stuck(Some(lux)) => Ok(Sample::Lux(lux)),
            Sensor::Dead => Err(SensorFailed),
        };
        let now = node.now(t, net_ms);
        node.feed(now, Input::Lux(reading));
        if node.metered {
            let watts = physics::lamp_power(node.lit_level(), node.lamp_works, node.rated_w);
            node.feed(now, Input::Power(watts));
        }
    }

    fn boot(&mut self, i: usize, t: i64, down: Down) {
        let net_ms = self.net_ms();
        let node = &mut self.nodes[i];
        node.down = None;
        let restored = node.store.load().unwrap_or_else(|error| {
            tracing::warn!(node = %node.identity.node, path = %node.store.path().display(), %error, "unreadable state: starting afresh");
            Default::default()
        });
        node.booted_at_ms = t;
        let level = &mut node.level;
        let started = Node::start(
            node.identity.clone(),
            Settings {
                default_interval_s: self.config.interval_s,
                ack_timeout_ms: self.config.ack_timeout.as_millis() as u64,
                ..Settings::default()
            },
            restored,
            down.power_loss,
            Now { up_ms: 0, net_ms },
            &mut |action: Action<'_>| {
                if let Action::SetLamp(l) = action {
                    *level = l;
                }
            },
        );
        node.node = Some(Box::new(started));
        // The boot counter reaches "flash" before anything is published.
        node.save();
        if down.keeps_clock {
            node.feed(node.now(t, net_ms), Input::Clock(t));
        }
    }

    fn connect(&mut self, i: usize) {
        let Some(will) = self.nodes[i].will() else {
            return;
        };
        let options = match self.options(&self.nodes[i].identity.node) {
            Ok(options) => options,
            Err(error) => {
                tracing::error!(%error, "cannot connect");
                return;
            }
        };
        self.next_generation += 1;
        let link = Link::open(options, will, i, self.next_generation, self.events.clone());
        self.nodes[i].offline_until = None;
        self.nodes[i].link = Some(link);
    }

    fn options(&self, node: &Id) -> Result<MqttOptions, crate::mqtt::BrokerUrlError> {
        let mut options = crate::mqtt::broker_options(&self.config.broker, node.as_str())?;
        options
            .set_keep_alive(Duration::from_secs(30))
            .set_clean_session(true)
            .set_max_packet_size(64 * 1024, 64 * 1024);
        Ok(options)
    }

    /// Loses a node's connection without a clean disconnect: the socket is left half-open.
    fn cut(&mut self, i: usize) {
        if let Some(link) = self.nodes[i].link.take() {
            link.lose();
        }
        if std::mem::take(&mut self.connected[i]) {
            let now = self.nodes[i].now(self.stepped_to_ms, self.net_ms());
            self.nodes[i].feed(now, Input::Disconnected);
        }
    }

    /// Switches a node off until `down.until`, keeping what its flash holds.
    fn power_off(&mut self, i: usize, down: Down) {
        self.cut(i);
        let node = &mut self.nodes[i];
        node.save();
        let before = node.counts();
        node.earlier_boots = before;
        node.node = None;
        node.level = 0;
        node.down = Some(down);
    }

    /// Breaks what `kind` says at simulated time `t`; `lasting` ends an outage (a random
    /// few minutes when not given) or repairs a failed part (never when not given).
    fn apply_fault(&mut self, i: usize, kind: FaultKind, t: i64, lasting: Option<Until>) {
        let outage = |rng: &mut ChaCha8Rng, default_min: std::ops::Range<i64>| {
            lasting.unwrap_or_else(|| Until::Simulated(t + rng.random_range(default_min) * 60_000))
        };
        tracing::info!(node = %self.nodes[i].identity.node, fault = kind.name(), "fault");
        let node = &mut self.nodes[i];
        match kind {
            FaultKind::Lamp => node.lamp_works = false,
            FaultKind::Relay => node.relay_stuck = true,
            FaultKind::Stuck => node.sensor = Sensor::Stuck(node.last_reading),
            FaultKind::Dead => node.sensor = Sensor::Dead,
            FaultKind::Offline => {
                let until = outage(&mut node.rng, 2..10);
                self.cut(i);
                self.nodes[i].offline_until = Some(until);
            }
            FaultKind::Reboot | FaultKind::Clock => {
                let down = Down {
                    until: Some(Until::Simulated(t + 20_000)),
                    power_loss: false,
                    keeps_clock: kind == FaultKind::Reboot,
                };
                self.power_off(i, down);
            }
            FaultKind::Power => {
                let site = node.site;
                let until = outage(&mut self.sites[site].rng, 5..20);
                self.cut_site_power(site, until);
            }
        }
        if let (
            Some(until),
            FaultKind::Lamp | FaultKind::Relay | FaultKind::Stuck | FaultKind::Dead,
        ) = (lasting, kind)
        {
            self.repairs.push((i, kind, until));
        }
    }

    /// Repairs the failed parts that are due.
    fn repair(&mut self, t: i64) {
        let nodes = &mut self.nodes;
        self.repairs.retain(|&(i, kind, until)| {
            if !until.passed(t) {
                return true;
            }
            tracing::info!(node = %nodes[i].identity.node, fault = kind.name(), "repaired");
            match kind {
                FaultKind::Lamp => nodes[i].lamp_works = true,
                FaultKind::Relay => nodes[i].relay_stuck = false,
                _ => nodes[i].sensor = Sensor::Working,
            }
            false
        });
    }

    /// Cuts a site's power; its nodes go down at the next step and boot once it is back.
    fn cut_site_power(&mut self, site: usize, until: Until) {
        tracing::info!(site = %self.sites[site].site.id, "power cut");
        self.sites[site].power_back = Some(until);
    }

    fn site_power(&mut self, t: i64) {
        let probability = self.config.faults.rate(FaultKind::Power) * STEP_MS as f64 / 3_600_000.0;
        for site in 0..self.sites.len() {
            if self.sites[site]
                .power_back
                .is_some_and(|back| back.passed(t))
            {
                tracing::info!(site = %self.sites[site].site.id, "power back");
                self.sites[site].power_back = None;
            }
            if probability > 0.0
                && self.sites[site].power_back.is_none()
                && self.sites[site].rng.random_bool(probability.min(1.0))
            {
                let minutes = self.sites[site].rng.random_range(5..20);
                self.cut_site_power(site, Until::Simulated(t + minutes * 60_000));
            }
        }
    }

    fn rate_faults(&mut self, i: usize, t: i64) {
        for (kind, _) in FaultKind::ALL {
            let rate = self.config.faults.rate(kind);
            if kind == FaultKind::Power || rate <= 0.0 || self.nodes[i].node.is_none() {
                continue;
            }
            let probability = (rate * STEP_MS as f64 / 3_600_000.0).min(1.0);
            if self.nodes[i].rng.random_bool(probability) {
                self.apply_fault(i, kind, t, None);
            }
        }
    }

    /// Applies the scripted faults on the simulated clock that fall in the step.
    fn scripted_faults(&mut self, after_ms: i64, until_ms: i64) {
        let due: Vec<_> = self
            .config
            .faults
            .scripted
            .iter()
            .filter(|s| s.timing == Timing::Simulated)
            .filter(|s| {
                let at = self.start_ms + s.after.as_millis() as i64;
                after_ms < at && at <= until_ms
            })
            .cloned()
            .collect();
        self.apply_scripted(due, until_ms);
    }

    /// Applies the scripted faults on the wall clock that are due.
    fn wall_clock_faults(&mut self) {
        let elapsed = self.started.elapsed();
        let (due, later) = std::mem::take(&mut self.wall_faults)
            .into_iter()
            .partition(|s| s.after <= elapsed);
        self.wall_faults = later;
        self.apply_scripted(due, self.stepped_to_ms);
    }

    fn apply_scripted(&mut self, due: Vec<Scripted>, t: i64) {
        for fault in due {
            let target = if fault.kind == FaultKind::Power {
                self.nodes
                    .iter()
                    .position(|n| self.sites[n.site].site.id == fault.target)
            } else {
                self.nodes
                    .iter()
                    .position(|n| n.identity.node.as_str() == fault.target)
            };
            match target {
                Some(i) => {
                    let lasting = fault.lasting.map(|d| Until::after(fault.timing, t, d));
                    self.apply_fault(i, fault.kind, t, lasting);
                }
                None => {
                    tracing::warn!(target = %fault.target, fault = fault.kind.name(), "scripted fault for an unknown node or site")
                }
            }
        }
    }

    /// Handles what a connection reports.
    pub fn link_event(&mut self, (i, generation, event): Tagged) {
        let Some(node) = self.nodes.get(i) else {
            return;
        };
        if node.link.as_ref().map(|l| l.generation) != Some(generation) {
            return; // from a connection that was cut
        }
        let now = node.now(self.stepped_to_ms, self.net_ms());
        let node = &mut self.nodes[i];
        match event {
            LinkEvent::Connected => {
                self.connected[i] = true;
                node.feed(now, Input::Connected);
                if let (Some(will), Some(link)) = (node.will(), &node.link) {
                    link.set_will(will);
                }
            }
            LinkEvent::Disconnected => {
                self.connected[i] = false;
                node.feed(now, Input::Disconnected);
            }
            LinkEvent::Message {
                topic,
                mut payload,
                retained,
            } => {
                if topic.ends_with(NodeTopic::Ack.as_str()) {
                    self.acks_seen = true;
                    payload = in_simulated_time(&payload, self.stepped_to_ms);
                }
                node.feed(
                    now,
                    Input::Message {
                        topic: &topic,
                        payload: &payload,
                        retained,
                    },
                );
            }
        }
    }

    /// Stops every node cleanly: shutdown status, state saved, clean disconnect.
    pub async fn shut_down(&mut self) {
        let (sim_ms, net_ms) = (self.stepped_to_ms, self.net_ms());
        let mut closing = tokio::task::JoinSet::new();
        for (i, node) in self.nodes.iter_mut().enumerate() {
            if self.connected[i] {
                node.feed(node.now(sim_ms, net_ms), Input::Shutdown);
            }
            node.save();
            if let Some(link) = node.link.take() {
                closing.spawn(link.close(Duration::from_secs(5)));
            }
        }
        while closing.join_next().await.is_some() {}
    }
}

/// An acknowledgement as a node of the simulated world gets it: the gateway's clock
/// (`now`, from which nodes set and correct theirs) moved from real time to simulated
/// time, which starts in the past and runs `--speed` times faster (otherwise nodes would
/// take the real time and leave the simulated night).
fn in_simulated_time(payload: &[u8], sim_ms: i64) -> Vec<u8> {
    let Ok(mut ack) = Ack::decode(payload) else {
        return payload.to_vec();
    };
    let sent_ago = jiff::Timestamp::now().as_millisecond() - ack.now as i64;
    ack.now = u64::try_from(sim_ms - sent_ago.max(0)).unwrap_or(0);
    ack.to_payload()
        .map(|p| p.to_vec())
        .unwrap_or_else(|_| payload.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ack_tells_simulated_time() {
        let sent = jiff::Timestamp::now().as_millisecond() - 300;
        let ack = Ack {
            boot: 7,
            seq: 3,
            now: sent as u64,
        };
        let simulated = 1_764_093_600_000;
        let moved = Ack::decode(&in_simulated_time(&ack.to_payload().unwrap(), simulated)).unwrap();
        assert_eq!((moved.boot, moved.seq), (7, 3));
        let behind = simulated - moved.now as i64;
        assert!((300..1_000).contains(&behind), "{behind} ms");
        assert_eq!(in_simulated_time(b"not an ack", simulated), b"not an ack");
    }
}
