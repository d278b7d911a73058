//! The park simulator: N virtual nodes, each the real `parklight-core` [`Node`] fed by
//! simulated sensors, each with its own MQTT connection to a real broker.
//!
//! - [`physics`]: sun, twilight, moon and clouds; lamps and their spill; sensor noise.
//! - [`people`]: foot traffic as a Poisson process following the hour of day.
//! - [`faults`]: faults at rates or scripted; [`scenario`]: whole stories with their
//!   faults, start and speed.
//! - [`store`]: each node's non-volatile memory as a file.
//! - [`link`]: one node's MQTT connection; [`mqtt`]: broker options and TLS.
//! - [`world`]: all nodes stepped in lock-step through simulated time.
//!
//! [`run`] ties them together for `parklight sim` and `parklight demo`.
//!
//! [`Node`]: parklight_core::Node

pub mod faults;
pub mod link;
pub mod mqtt;
pub mod people;
pub mod physics;
pub mod scenario;
pub mod store;
pub mod world;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use faults::FaultPlan;
pub use parklight_site::Site;
pub use scenario::Scenario;
pub use world::Totals;

/// Reports a virtual node holds unacknowledged: over four hours at one a minute.
pub const SIM_BUFFER: usize = 256;

/// Which sites to simulate.
#[derive(Debug, Clone, PartialEq)]
pub enum SiteChoice {
    /// The built-in Remiseparken.
    Builtin,
    /// Site files.
    Files(Vec<PathBuf>),
    /// A generated site with this many nodes.
    Synthetic(usize),
}

/// How to run the simulator.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Broker URL, `mqtt://127.0.0.1:1883`.
    pub broker: String,
    /// The sites.
    pub sites: SiteChoice,
    /// Topic prefix.
    pub prefix: String,
    /// Report interval until a config sets one, seconds.
    pub interval_s: u16,
    /// Resend a report not acknowledged this long after its last send (network time).
    pub ack_timeout: Duration,
    /// Simulated seconds per real second until simulated time reaches the present; the
    /// scenario's, or 1, when `None`.
    pub speed: Option<f64>,
    /// Simulated start; by default the scenario's, or `duration × speed` before now, so
    /// a run ends at the present, or now.
    pub start: Option<jiff::Timestamp>,
    /// Wall-clock time to produce reports; the scenario's, or until stopped, when `None`.
    pub duration: Option<Duration>,
    /// After producing, how long to wait for acknowledgements.
    pub drain: Duration,
    /// Seed for every random choice.
    pub seed: u64,
    /// Where nodes keep their state.
    pub state_dir: PathBuf,
    /// Forget earlier state first.
    pub fresh: bool,
    /// Faults to inject (besides the scenario's).
    pub faults: FaultPlan,
    /// A story to play.
    pub scenario: Option<Scenario>,
    /// Nodes the site file says are metered report power (false: no node has a meter).
    pub meters: bool,
    /// Show progress (a live line on a terminal, log lines otherwise).
    pub progress: bool,
}

/// What a run did.
pub type Summary = Totals;

/// Why the simulator could not run.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A site file has problems.
    #[error("{0}")]
    Site(#[from] parklight_site::SiteError),
    /// The broker URL cannot be used.
    #[error("{0}")]
    Broker(#[from] mqtt::BrokerUrlError),
    /// An option is out of range.
    #[error("{0}")]
    Options(String),
    /// The state folder cannot be used.
    #[error("state folder {path}: {source}")]
    State {
        /// The folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The simulated clock: `speed` times real time from `start`, but never past the real
/// clock: once it reaches the present it runs in real time.
#[derive(Debug, Clone, Copy)]
pub struct SimClock {
    start_ms: i64,
    real_start_ms: i64,
    started: std::time::Instant,
    speed: f64,
}

impl SimClock {
    /// A clock at `start_ms` (Unix ms), running `speed` times real time.
    pub fn new(start_ms: i64, speed: f64) -> SimClock {
        SimClock {
            start_ms,
            real_start_ms: jiff::Timestamp::now().as_millisecond(),
            started: std::time::Instant::now(),
            speed,
        }
    }

    /// Simulated Unix ms now.
    pub fn now_ms(&self) -> i64 {
        let elapsed = self.started.elapsed().as_secs_f64() * 1000.0;
        let accelerated = self.start_ms + (elapsed * self.speed) as i64;
        accelerated.min(self.real_start_ms + elapsed as i64)
    }
}

fn load_sites(choice: &SiteChoice) -> Result<Vec<Site>, SimError> {
    let sites = match choice {
        SiteChoice::Builtin => vec![Site::remiseparken()],
        SiteChoice::Synthetic(n) => vec![Site::synthetic(*n)],
        SiteChoice::Files(paths) => paths
            .iter()
            .map(|p| Site::load(p))
            .collect::<Result<_, _>>()?,
    };
    let mut seen = std::collections::HashSet::new();
    for node in sites.iter().flat_map(|s| &s.nodes) {
        if !seen.insert(node.id.as_str()) {
            return Err(SimError::Options(format!(
                "node id {} is used by two sites",
                node.id
            )));
        }
    }
    Ok(sites)
}

/// When and how fast a run goes, and what breaks: the options over the scenario's.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Simulated start, Unix ms.
    pub start_ms: i64,
    /// Simulated seconds per real second.
    pub speed: f64,
    /// Wall-clock time to produce reports; until stopped when `None`.
    pub duration: Option<Duration>,
    /// Every fault: the scenario's, then the options'.
    pub faults: FaultPlan,
}

impl Plan {
    /// The plan of `options` on `sites` at `now_ms`: given times win over the scenario's;
    /// without either, the run ends at the present (`duration × speed` after its start).
    pub fn of(options: &SimOptions, sites: &[Site], now_ms: i64) -> Result<Plan, SimError> {
        let story = options
            .scenario
            .map(|s| s.story(sites, now_ms, options.seed, options.meters))
            .transpose()?;
        let speed = (options.speed)
            .or(story.as_ref().map(|s| s.speed))
            .unwrap_or(1.0);
        if !(speed.is_finite() && speed > 0.0) {
            return Err(SimError::Options(format!(
                "--speed {speed} must be above 0"
            )));
        }
        let duration = match (options.duration, &story) {
            (Some(duration), _) => Some(duration),
            (None, Some(story)) => Some(match story.length {
                scenario::Length::Wall(wall) => wall,
                scenario::Length::Simulated(ms) => {
                    Duration::try_from_secs_f64(ms as f64 / 1000.0 / speed).map_err(|_| {
                        SimError::Options(format!("--speed {speed} is too slow for the story"))
                    })?
                }
            }),
            (None, None) => None,
        };
        let start_ms = match (
            options.start,
            story.as_ref().and_then(|s| s.start_ms),
            duration,
        ) {
            (Some(start), _, _) => start.as_millisecond(),
            (None, Some(start), _) => start,
            (None, None, Some(duration)) => {
                now_ms.saturating_sub((duration.as_secs_f64() * speed * 1000.0) as i64)
            }
            (None, None, None) => now_ms,
        };
        if start_ms > now_ms {
            return Err(SimError::Options(
                "--start is in the future: simulated time never runs ahead of the clock".into(),
            ));
        }
        let mut faults = story.map(|s| {
            tracing::info!(scenario = %options.scenario.map_or("", Scenario::name), "{}", s.plot);
            s.faults
        }).unwrap_or_default();
        faults.rates.extend(options.faults.rates.iter().copied());
        faults
            .scripted
            .extend(options.faults.scripted.iter().cloned());
        Ok(Plan {
            start_ms,
            speed,
            duration,
            faults,
        })
    }
}

fn check(options: &SimOptions) -> Result<(), SimError> {
    if !(1..=3600).contains(&options.interval_s) {
        return Err(SimError::Options(format!(
            "--interval-s {} must be 1 to 3600",
            options.interval_s
        )));
    }
    mqtt::broker_options(&options.broker, "check")?;
    Ok(())
}

/// Shows progress: one live line on a terminal, a log line every ten seconds otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    logs: bool,
    last_log: std::time::Instant,
}

impl Progress {
    fn new(shown: bool) -> Progress {
        let bar = (shown && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Progress {
            logs: shown && bar.is_none(),
            bar,
            last_log: std::time::Instant::now(),
        }
    }

    fn show(&mut self, totals: &Totals, sim_ms: i64) {
        let time = jiff::Timestamp::from_millisecond(sim_ms)
            .map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string())
            .unwrap_or_default();
        let line = format!(
            "{time}  nodes {}/{} connected  reports {}  acknowledged {}  buffered {}",
            totals.connected, totals.nodes, totals.reports, totals.acknowledged, totals.buffered
        );
        match &self.bar {
            Some(bar) => bar.set_message(line),
            None if self.logs && self.last_log.elapsed() >= Duration::from_secs(10) => {
                self.last_log = std::time::Instant::now();
                tracing::info!("{line}");
            }
            None => {}
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Runs the simulator until `options.duration` passes or `stop` is cancelled, then
/// drains and stops every node cleanly.
pub async fn run(options: SimOptions, stop: CancellationToken) -> Result<Summary, SimError> {
    check(&options)?;
    let sites = load_sites(&options.sites)?;
    let plan = Plan::of(&options, &sites, jiff::Timestamp::now().as_millisecond())?;
    let start_ms = plan.start_ms;
    if options.fresh {
        for site in &sites {
            let dir = options.state_dir.join(&site.id);
            match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(SimError::State {
                        path: dir,
                        source: e,
                    });
                }
                _ => {}
            }
        }
    }
    std::fs::create_dir_all(&options.state_dir).map_err(|source| SimError::State {
        path: options.state_dir.clone(),
        source,
    })?;
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let config = world::WorldConfig {
        broker: options.broker.clone(),
        prefix: options.prefix.clone(),
        interval_s: options.interval_s,
        ack_timeout: options.ack_timeout,
        seed: options.seed,
        state_dir: options.state_dir.clone(),
        faults: plan.faults.clone(),
        meters: options.meters,
    };
    let mut world = world::World::new(config, sites, start_ms, events_tx)?;
    let clock = SimClock::new(start_ms, plan.speed);
    let mut progress = Progress::new(options.progress);
    let mut ticker = tokio::time::interval(Duration::from_millis(50));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut flushed = std::time::Instant::now();
    let produce_until = plan
        .duration
        .and_then(|d| tokio::time::Instant::now().checked_add(d));
    let never = tokio::time::Instant::now() + Duration::from_secs(100 * 365 * 86_400);
    tracing::info!(start = %jiff::Timestamp::from_millisecond(start_ms).unwrap_or_default(), speed = plan.speed, "simulation started");
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep_until(produce_until.unwrap_or(never)) => break,
            Some(event) = events.recv() => world.link_event(event),
            _ = ticker.tick() => {
                world.advance(clock.now_ms());
                if flushed.elapsed() >= Duration::from_secs(1) {
                    world.flush();
                    flushed = std::time::Instant::now();
                }
                progress.show(&world.totals(), clock.now_ms());
            }
        }
    }
    // Stopped by time or by `stop`, the nodes still wait for their acknowledgements.
    if world.acks_seen() {
        let drain_until = (tokio::time::Instant::now().checked_add(options.drain)).unwrap_or(never);
        while world.totals().buffered > 0 && tokio::time::Instant::now() < drain_until {
            tokio::select! {
                Some(event) = events.recv() => world.link_event(event),
                _ = ticker.tick() => {
                    world.pump();
                    progress.show(&world.totals(), clock.now_ms());
                }
            }
        }
    }
    progress.finish();
    world.shut_down().await;
    Ok(world.totals())
}
