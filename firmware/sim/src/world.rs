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

use crate::faults::{FaultKind, FaultPlan};
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
    Stuck(f64),
    Dead,
}

/// Why and until when a node is without power.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Down {
    until_ms: i64,
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
    zone_popularity: f64,
    zone_poles: usize,
    node: Option<Box<Node<SIM_BUFFER>>>,
    store: NodeFile,
    dirty: bool,
    link: Option<Link>,
    rng: ChaCha8Rng,
    booted_at_ms: i64,
    level: u8,
    lamp_full_lux: f64,
    lamp_works: bool,
    sensor: Sensor,
    last_reading: f64,
    neighbours: Vec<(usize, f64)>,
    offline_until_ms: Option<i64>,
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
    power_back_ms: Option<i64>,
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
}

fn fnv64(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
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
        for (site_index, site) in sites.into_iter().enumerate() {
            let tz = jiff::tz::TimeZone::get(&site.timezone)
                .map_err(|e| crate::SimError::Options(format!("site {}: {e}", site.id)))?;
            let mut rng = ChaCha8Rng::seed_from_u64(config.seed ^ fnv64(&site.id));
            let clouds = Clouds::new(&mut rng);
            for placement in &site.nodes {
                let zone = placement.zone.as_deref().and_then(|z| site.zone(z));
                let required = zone.map_or(5.0, |z| z.requirement.avg_lux);
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
                    zone_popularity: zone.map_or(1.0, |z| z.popularity),
                    zone_poles: site
                        .nodes
                        .iter()
                        .filter(|n| n.zone == placement.zone)
                        .count(),
                    node: None,
                    dirty: false,
                    link: None,
                    booted_at_ms: start_ms,
                    level: 0,
                    // Each lamp lights its zone to 1.4 to 2.4 times the class average.
                    lamp_full_lux: required * rng.random_range(1.4..2.4),
                    lamp_works: true,
                    sensor: Sensor::Working,
                    last_reading: 0.0,
                    neighbours: Vec::new(),
                    offline_until_ms: None,
                    down: Some(Down {
                        until_ms: start_ms,
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
                power_back_ms: None,
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
        }
        let connected = vec![false; nodes.len()];
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
            let local = jiff::Timestamp::from_millisecond(t)
                .map(|ts| state.tz.to_datetime(ts))
                .map(|dt| (dt.hour() as u8, dt.minute() as u8))
                .unwrap_or((12, 0));
            sky.push((physics::sky_lux(altitude, cloud, moon), local));
        }
        self.site_power(t);
        let lamps: Vec<f64> = self
            .nodes
            .iter()
            .map(|n| {
                if n.lamp_works {
                    physics::lamp_lux(n.lamp_full_lux, n.level)
                } else {
                    0.0
                }
            })
            .collect();
        for i in 0..self.nodes.len() {
            let spill: f64 = self.nodes[i]
                .neighbours
                .iter()
                .map(|(j, share)| lamps[*j] * share)
                .sum();
            let (sky_lux, local) = sky[self.nodes[i].site];
            self.step_node(i, t, sky_lux + spill, local);
        }
    }

    fn step_node(&mut self, i: usize, t: i64, ambient_lux: f64, (hour, minute): (u8, u8)) {
        if let Some(down) = self.nodes[i].down {
            let site_powered = self.sites[self.nodes[i].site].power_back_ms.is_none();
            if t < down.until_ms || !site_powered {
                return;
            }
            self.boot(i, t, down);
        }
        self.rate_faults(i, t);
        if self.nodes[i].node.is_none() {
            return;
        }
        let net_ms = self.net_ms();
        if self.nodes[i].link.is_none()
            && self.nodes[i]
                .offline_until_ms
                .is_none_or(|until| t >= until)
        {
            self.connect(i);
        }
        let node = &mut self.nodes[i];
        // People: Poisson detections spread over the step, each a short PIR pulse.
        let rate = people::rate_per_hour(hour, minute, node.zone_popularity, node.zone_poles);
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
        let own = if node.lamp_works {
            physics::lamp_lux(node.lamp_full_lux, node.level)
        } else {
            0.0
        };
        let reading = match node.sensor {
            Sensor::Working => {
                let lux = physics::sensor_reading(ambient_lux + own, &mut node.rng);
                node.last_reading = lux;
                Ok(Sample::Lux(lux))
            }
            Sensor::Stuck(lux) => Ok(Sample::Lux(lux)),
            Sensor::Dead => Err(SensorFailed),
        };
        let now = node.now(t, net_ms);
        node.feed(now, Input::Lux(reading));
        let watts = physics::lamp_power(node.level, node.lamp_works);
        node.feed(now, Input::Power(watts));
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
        self.nodes[i].offline_until_ms = None;
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

    /// Cuts a node's connection without a clean disconnect.
    fn cut(&mut self, i: usize) {
        if let Some(link) = self.nodes[i].link.take() {
            link.cut();
        }
        if std::mem::take(&mut self.connected[i]) {
            let now = self.nodes[i].now(self.stepped_to_ms, self.net_ms());
            self.nodes[i].feed(now, Input::Disconnected);
        }
    }

    /// Switches a node off until `down.until_ms`, keeping what its flash holds.
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

    fn apply_fault(&mut self, i: usize, kind: FaultKind, t: i64, lasting: Option<Duration>) {
        let lasting_ms = |rng: &mut ChaCha8Rng, default_min: std::ops::Range<i64>| {
            lasting.map_or_else(
                || rng.random_range(default_min) * 60_000,
                |d| d.as_millis() as i64,
            )
        };
        tracing::info!(node = %self.nodes[i].identity.node, fault = kind.name(), "fault");
        match kind {
            FaultKind::Lamp => self.nodes[i].lamp_works = false,
            FaultKind::Stuck => self.nodes[i].sensor = Sensor::Stuck(self.nodes[i].last_reading),
            FaultKind::Dead => self.nodes[i].sensor = Sensor::Dead,
            FaultKind::Offline => {
                let until = t + lasting_ms(&mut self.nodes[i].rng, 2..10);
                self.cut(i);
                self.nodes[i].offline_until_ms = Some(until);
            }
            FaultKind::Reboot | FaultKind::Clock => {
                let down = Down {
                    until_ms: t + 20_000,
                    power_loss: false,
                    keeps_clock: kind == FaultKind::Reboot,
                };
                self.power_off(i, down);
            }
            FaultKind::Power => {
                let site = self.nodes[i].site;
                let until = t + lasting_ms(&mut self.sites[site].rng, 5..20);
                self.cut_site_power(site, until);
            }
        }
    }

    fn cut_site_power(&mut self, site: usize, until_ms: i64) {
        tracing::info!(site = %self.sites[site].site.id, "power cut");
        self.sites[site].power_back_ms = Some(until_ms);
        for i in 0..self.nodes.len() {
            if self.nodes[i].site == site && self.nodes[i].node.is_some() {
                let down = Down {
                    until_ms,
                    power_loss: true,
                    keeps_clock: true,
                };
                self.power_off(i, down);
            }
        }
    }

    fn site_power(&mut self, t: i64) {
        let probability = self.config.faults.rate(FaultKind::Power) * STEP_MS as f64 / 3_600_000.0;
        for site in 0..self.sites.len() {
            if self.sites[site].power_back_ms.is_some_and(|back| t >= back) {
                self.sites[site].power_back_ms = None;
            }
            if probability > 0.0
                && self.sites[site].power_back_ms.is_none()
                && self.sites[site].rng.random_bool(probability.min(1.0))
            {
                let until = t + self.sites[site].rng.random_range(5..20) * 60_000;
                self.cut_site_power(site, until);
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

    fn scripted_faults(&mut self, after_ms: i64, until_ms: i64) {
        let due: Vec<_> = self
            .config
            .faults
            .scripted
            .iter()
            .filter(|s| {
                let at = self.start_ms + s.after.as_millis() as i64;
                after_ms < at && at <= until_ms
            })
            .cloned()
            .collect();
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
                Some(i) => self.apply_fault(i, fault.kind, until_ms, fault.lasting),
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
