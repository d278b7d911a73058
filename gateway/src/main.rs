//! `parklight`: parses the command line, sets up logging and runs the command.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use parklight_gateway::alert::{Action, Silence};
use parklight_gateway::config::{Config, Secrets, environment_overrides};
use parklight_gateway::crew;
use parklight_gateway::logging::{self, LogFormat};
use parklight_sim::{FaultPlan, SimOptions, SiteChoice};

/// Keeps park paths lit and says when they are not.
#[derive(Debug, Parser)]
#[command(name = "parklight", version, about)]
struct Cli {
    /// Log format.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "human",
        env = "PARKLIGHT_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Everything at once on its embedded defaults: broker, simulated park, gateway.
    Demo(DemoArgs),
    /// Run the gateway: store every report, acknowledge it, serve /metrics.
    Run(ConfigArg),
    /// Print the newest rejected messages kept in the store.
    DeadLetters(DeadLetterArgs),
    /// Print every node the store knows: site, zone, last report, online, boot, lost,
    /// running and desired config version.
    Nodes(NodesArgs),
    /// Tell the gateway about work on one node.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Print each zone's status now (with the figures of its last window) and every
    /// active condition.
    Status(StatusArgs),
    /// Print condition transitions: raised, more severe, cleared.
    Conditions(ConditionsArgs),
    /// Print alerts, newest first, and what waits for each receiver.
    Alerts(AlertsArgs),
    /// Acknowledge an alert: someone is on it (reminders stop).
    Ack(ActArgs),
    /// Resolve an alert by hand (refused while its condition is still active).
    Resolve(ActArgs),
    /// Maintenance windows: nobody is paged for what they cover.
    #[command(subcommand)]
    Silence(SilenceCommand),
    /// Create, revoke and list API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Check a configuration file and every site file it names; exit 1 on any problem.
    Check(ConfigArg),
    /// Print the default configuration (the same file as deploy/parklight.toml).
    Config,
    /// Run virtual light controllers against an MQTT broker.
    Sim(SimArgs),
}

#[derive(Debug, Args)]
struct ConfigArg {
    /// The configuration file.
    #[arg(long, short)]
    config: PathBuf,
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// Port of the embedded broker (another free one when taken).
    #[arg(long, default_value_t = 1883)]
    port: u16,
    /// Address of /metrics (another free port when taken).
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: std::net::SocketAddr,
    /// Keep the store and node state in this folder (default: a temporary one).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Simulated seconds per real second until simulated time reaches the present.
    #[arg(long, default_value_t = 60.0)]
    speed: f64,
    /// Faults to inject, as for `parklight sim`.
    #[arg(long, default_value = "")]
    faults: String,
}

#[derive(Debug, Args)]
struct DeadLetterArgs {
    /// The configuration file (for the store's path).
    #[arg(long, short)]
    config: PathBuf,
    /// How many to print, newest first.
    #[arg(long, default_value_t = 20)]
    limit: usize,
}

#[derive(Debug, Subcommand)]
enum NodeCommand {
    /// The node's lamp or controller was swapped: forget what its lamp taught the
    /// detectors (its light and power per level); they learn the new one afresh.
    Replaced {
        /// The node id.
        node: String,
        /// The configuration file (for the store's path and the sites).
        #[arg(long, short)]
        config: PathBuf,
    },
}

#[derive(Debug, Args)]
struct NodesArgs {
    /// The configuration file (for the store's path).
    #[arg(long, short)]
    config: PathBuf,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct StatusArgs {
    /// The configuration file (for the store's path and the sites).
    #[arg(long, short)]
    config: PathBuf,
    /// Only this site.
    #[arg(long)]
    site: Option<String>,
    /// One JSON object instead of tables.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct ConditionsArgs {
    /// The configuration file (for the store's path).
    #[arg(long, short)]
    config: PathBuf,
    /// Transitions from this time on (event time): RFC 3339, or a duration ago (`2h`).
    #[arg(long)]
    since: Option<String>,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct AlertsArgs {
    /// The configuration file (for the store's path and the receivers).
    #[arg(long, short)]
    config: PathBuf,
    /// Only alerts not resolved.
    #[arg(long)]
    open: bool,
    /// One PROTOCOL.md alert message per line (its latest revision) with its history.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct ActArgs {
    /// The alert's id (`a-17`).
    id: String,
    /// The configuration file (for the store's path).
    #[arg(long, short)]
    config: PathBuf,
    /// Who.
    #[arg(long)]
    by: String,
    /// Why, or what was done.
    #[arg(long)]
    note: String,
}

#[derive(Debug, Subcommand)]
enum SilenceCommand {
    /// Silence a site, or one zone, node or circuit of it, until a time.
    Add {
        /// The configuration file (for the store's path and the sites).
        #[arg(long, short)]
        config: PathBuf,
        /// The site.
        #[arg(long)]
        site: String,
        /// Only this zone (and its nodes).
        #[arg(long)]
        zone: Option<String>,
        /// Only this node.
        #[arg(long)]
        node: Option<String>,
        /// Only this circuit (and its nodes).
        #[arg(long)]
        circuit: Option<String>,
        /// The end: RFC 3339 (`2026-12-04T06:00:00Z`) or a duration from now (`4h`).
        #[arg(long)]
        until: String,
        /// Who.
        #[arg(long)]
        by: String,
        /// Why.
        #[arg(long)]
        note: String,
    },
    /// Print the silences running now or later.
    List {
        /// The configuration file (for the store's path).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// End a silence now.
    End {
        /// Its number, as `silence list` prints it.
        id: i64,
        /// The configuration file (for the store's path).
        #[arg(long, short)]
        config: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a token and print it once, alone on one line (only its hash is kept).
    Create {
        /// The configuration file (for the store's path).
        #[arg(long, short)]
        config: PathBuf,
        /// operator, maintenance, partnership or viewer.
        #[arg(long)]
        role: String,
        /// Who or what holds it (1 to 64 of A-Z a-z 0-9 . _ @ -); unique, never reused.
        #[arg(long)]
        name: String,
    },
    /// Revoke a token: it and the browser sessions opened with it stop working at once.
    Revoke {
        /// Its name.
        name: String,
        /// The configuration file (for the store's path).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print every token's name, role and state (never the token).
    List {
        /// The configuration file (for the store's path).
        #[arg(long, short)]
        config: PathBuf,
    },
}

#[derive(Debug, Clone, Args)]
struct SimArgs {
    /// Broker URL: mqtt://host:port, or mqtts:// for TLS; user:password@ for credentials.
    #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
    broker: String,
    /// Site GeoJSON file (repeatable); the built-in Remiseparken when none and no --nodes.
    #[arg(long = "site", conflicts_with = "nodes")]
    sites: Vec<PathBuf>,
    /// Simulate a generated site with this many nodes.
    #[arg(long)]
    nodes: Option<usize>,
    /// Report interval of nodes without a config, seconds.
    #[arg(long, default_value_t = 60)]
    interval_s: u16,
    /// Seconds (network time) before a node resends a report nobody acknowledged.
    #[arg(long, default_value_t = 60.0)]
    ack_timeout_s: f64,
    /// Play a story: healthy-night, lamp-failure-in-busy-zone, node-offline, sensor-stuck,
    /// sensor-dead, day-burner, flapping-lamp, power-cut, night-circuit, or a scenario
    /// file (TOML: base, speed, start, duration_s, faults, no_meters). It brings its own
    /// start, speed and length (the options below override them) and ends by now.
    #[arg(long, value_name = "NAME|FILE")]
    scenario: Option<String>,
    /// No node has a power meter (otherwise those the site file marks `metered` do).
    #[arg(long)]
    no_meters: bool,
    /// Simulated seconds per real second, until simulated time reaches the present
    /// [default: the scenario's, or 1].
    #[arg(long)]
    speed: Option<f64>,
    /// Simulated start (RFC 3339) [default: the scenario's, or so that a run with
    /// --duration-s ends now].
    #[arg(long)]
    start: Option<jiff::Timestamp>,
    /// Seconds (wall clock) to produce reports [default: the scenario's, or until Ctrl-C].
    #[arg(long)]
    duration_s: Option<f64>,
    /// Seconds to wait afterwards until every report is acknowledged.
    #[arg(long, default_value_t = 30.0)]
    drain_s: f64,
    /// Seed for the sun's clouds, people and faults.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Folder for the nodes' non-volatile state.
    #[arg(long)]
    state: Option<PathBuf>,
    /// Forget the nodes' earlier state (boot counters, buffered reports, configs).
    #[arg(long)]
    fresh: bool,
    /// Faults: KIND=RATE per node per simulated hour, or KIND@NODE=+OFFSET[/DURATION]
    /// (simulated time; wall+OFFSET[/DURATION] for wall-clock time); kinds lamp,
    /// offline, stuck, dead, clock, reboot, power (power@SITE, per site), relay.
    #[arg(long, default_value = "")]
    faults: String,
    /// Topic prefix.
    #[arg(long, default_value = "parklight/v1")]
    prefix: String,
    /// Instead of running nodes: store this much simulated history up to now (e.g.
    /// `365d`, `12h`) straight into the store of the gateway `--config` names, through
    /// its own decode, validation and writer; no broker.
    #[arg(long, value_name = "SPAN", requires = "config")]
    backfill: Option<String>,
    /// The gateway's configuration, for --backfill.
    #[arg(long)]
    config: Option<PathBuf>,
    /// With --backfill: the history ends here (RFC 3339, not in the future) [default: now].
    #[arg(long, requires = "backfill")]
    until: Option<jiff::Timestamp>,
    /// With --backfill: ZONE@DATE, the zone's lamps (at the first site that has it) deliver half its class at full power
    /// until local noon of DATE (YYYY-MM-DD), when new ones light it to class; after
    /// dark, its foot traffic rises by a known factor from that night on.
    #[arg(long, value_name = "ZONE@DATE", requires = "backfill")]
    upgrade: Option<String>,
}

/// A span such as `365d` or `12h`, in ms.
fn span_ms(text: &str) -> anyhow::Result<i64> {
    let (number, ms) = match (text.strip_suffix('d'), text.strip_suffix('h')) {
        (Some(days), _) => (days, 86_400_000),
        (_, Some(hours)) => (hours, 3_600_000),
        _ => anyhow::bail!("--backfill {text:?}: a number of days (365d) or hours (12h)"),
    };
    let number: i64 = (number.parse().ok())
        .filter(|n| (1..=3660).contains(n))
        .ok_or_else(|| anyhow::anyhow!("--backfill {text:?}: 1 to 3660 days or hours"))?;
    Ok(number * ms)
}

/// `--upgrade ZONE@DATE` of a zone of `sites`: its lamps replaced at local noon of DATE.
fn upgrade(
    text: &str,
    sites: &[parklight_site::Site],
) -> anyhow::Result<parklight_gateway::backfill::Upgrade> {
    let bad = || anyhow::anyhow!("--upgrade {text:?}: ZONE@YYYY-MM-DD, a zone of the sites");
    let (zone, date) = text.rsplit_once('@').ok_or_else(bad)?;
    let date: jiff::civil::Date = date.parse().map_err(|_| bad())?;
    let site = (sites.iter())
        .find(|s| s.zone(zone).is_some())
        .ok_or_else(bad)?;
    let tz = parklight_core::tz::TimeZone::parse(&site.posix_tz).map_err(|_| bad())?;
    let day = parklight_core::tz::days_from_civil(
        i32::from(date.year()),
        date.month() as u32,
        date.day() as u32,
    );
    Ok(parklight_gateway::backfill::Upgrade {
        site: site.id.clone(),
        zone: zone.to_owned(),
        at_ms: tz.from_local(day * 86_400_000 + 12 * 3_600_000),
    })
}

/// `parklight sim --backfill`: history into a gateway's store, with progress.
fn backfill(args: &SimArgs, span: &str, config: &std::path::Path) -> anyhow::Result<()> {
    let loaded = Config::load_with(config, &environment_overrides(), Secrets::Skip)?;
    let now = jiff::Timestamp::now();
    let end = args.until.unwrap_or(now);
    if end > now {
        anyhow::bail!("--until {end}: not in the future (nodes cannot report ahead of the clock)");
    }
    let backfill = parklight_gateway::backfill::Backfill {
        store: loaded.config.storage.path.clone(),
        dead_letters_max: loaded.config.storage.dead_letters_max,
        span_ms: span_ms(span)?,
        end_ms: end.as_millisecond(),
        seed: args.seed,
        upgrade: (args.upgrade.as_deref())
            .map(|text| upgrade(text, &loaded.sites))
            .transpose()?,
        sites: loaded.sites.clone(),
        prefix: loaded.config.mqtt.topic_prefix.clone(),
    };
    let started = std::time::Instant::now();
    let stored = parklight_gateway::backfill::run(&backfill, |at, stored| {
        if stored % 500_000 < 5_000 {
            let day = jiff::Timestamp::from_millisecond(at)
                .map(|t| t.to_string())
                .unwrap_or_default();
            eprintln!("{day}: {stored} reports stored");
        }
    })?;
    println!(
        "{stored} reports stored and folded in {:.0} s ({:.0}/s); the detectors judge them when the gateway starts",
        started.elapsed().as_secs_f64(),
        stored as f64 / started.elapsed().as_secs_f64().max(1e-9)
    );
    Ok(())
}

fn seconds(value: f64, flag: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| anyhow::anyhow!("{flag} {value} is not a number of seconds"))
}

async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let options = parklight_gateway::demo::DemoOptions {
        broker_port: args.port,
        http: args.http,
        dir: args.dir,
        speed: args.speed,
        faults: FaultPlan::parse(&args.faults)?,
    };
    parklight_gateway::demo::run(options, parklight_gateway::signals::shutdown_token()).await?;
    Ok(())
}

async fn run(path: &std::path::Path) -> anyhow::Result<()> {
    let loaded = Config::load(path, &environment_overrides())?;
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    parklight_gateway::run(loaded, parklight_gateway::signals::shutdown_token()).await?;
    Ok(())
}

/// A Unix ms time as RFC 3339, or `-`.
fn time(ms: Option<i64>) -> String {
    ms.and_then(|t| jiff::Timestamp::from_millisecond(t).ok())
        .map_or("-".into(), |t| t.to_string())
}

/// The store a configuration file names.
fn open_store(path: &std::path::Path) -> anyhow::Result<parklight_gateway::store::Store> {
    let loaded = Config::load_with(path, &environment_overrides(), Secrets::Skip)?;
    Ok(parklight_gateway::store::Store::open(
        &loaded.config.storage.path,
        loaded.config.storage.dead_letters_max,
    )?)
}

/// Records that `node` was replaced, for the detectors to forget its lamp.
fn replaced(node: &str, path: &std::path::Path) -> anyhow::Result<()> {
    let loaded = Config::load_with(path, &environment_overrides(), Secrets::Skip)?;
    let site = (loaded.sites.iter())
        .find(|s| s.node(node).is_some())
        .ok_or_else(|| anyhow::anyhow!("node {node} is in none of the site files"))?;
    let mut store = parklight_gateway::store::Store::open(
        &loaded.config.storage.path,
        loaded.config.storage.dead_letters_max,
    )?;
    let mut writer = store.write()?;
    let id = writer.node(node, &site.id)?;
    let now = jiff::Timestamp::now().as_millisecond();
    writer.fact(id, "replaced", None, None, now)?;
    writer.commit()?;
    println!(
        "{node}: what its lamp gave and drew is forgotten; it is learned again from its next dark windows"
    );
    Ok(())
}

fn nodes(path: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let store = open_store(path)?;
    let summaries = store.node_summaries()?;
    let desired = store.latest_configs()?;
    if !json {
        println!(
            "{:<20} {:<16} {:<16} {:<24} {:<7} {:>6} {:>8} {:>4} {:>7}",
            "node", "site", "zone", "last report", "online", "boot", "lost", "cfg", "desired"
        );
    }
    for node in summaries {
        let online = node.presence.map(|p| !p.offline);
        let wanted = desired.get(&node.node).map(|(cfg, _, _)| *cfg);
        if json {
            let line = serde_json::json!({
                "node": node.node,
                "site": node.site,
                "zone": node.zone,
                "last_report": node.last_report.map(|t| time(Some(t))),
                "online": online,
                "boot": node.presence.map(|p| p.boot),
                "lost": node.lost,
                "cfg": node.cfg,
                "desired_cfg": wanted,
            });
            println!("{line}");
        } else {
            let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
            println!(
                "{:<20} {:<16} {:<16} {:<24} {:<7} {:>6} {:>8} {:>4} {:>7}",
                node.node,
                or_dash(node.site),
                or_dash(node.zone),
                time(node.last_report),
                or_dash(online.map(|o| if o { "yes" } else { "no" }.to_owned())),
                or_dash(node.presence.map(|p| p.boot.to_string())),
                node.lost,
                or_dash(node.cfg.map(|c| c.to_string())),
                or_dash(wanted.map(|c| c.to_string())),
            );
        }
    }
    Ok(())
}

/// A condition transition as `parklight conditions --json` and `status --json` print it.
fn condition_json(t: &parklight_gateway::detect::Transition) -> serde_json::Value {
    serde_json::json!({
        "kind": t.kind.as_str(),
        "site": t.site,
        "zone": t.zone,
        "node": t.node,
        "active": t.active,
        "severity": t.severity.as_str(),
        "since": time(Some(t.since)),
        "ts": time(Some(t.ts)),
        "detail": t.detail,
    })
}

fn condition_line(t: &parklight_gateway::detect::Transition) -> String {
    let what = t.zone.as_deref().or(t.node.as_deref()).unwrap_or("-");
    let state = if t.active {
        t.severity.as_str()
    } else {
        "cleared"
    };
    format!(
        "{:<24} {:<16} {:<14} {:<20} {:<9} since {}  {}",
        time(Some(t.ts)),
        t.kind.as_str(),
        t.site,
        what,
        state,
        time(Some(t.since)),
        t.detail
    )
}

fn status(args: StatusArgs) -> anyhow::Result<()> {
    use parklight_gateway::detect::Status;
    let loaded = Config::load_with(&args.config, &environment_overrides(), Secrets::Skip)?;
    let store = parklight_gateway::store::Store::open(
        &loaded.config.storage.path,
        loaded.config.storage.dead_letters_max,
    )?;
    if let Some(site) = &args.site
        && !loaded.sites.iter().any(|s| &s.id == site)
    {
        anyhow::bail!("no site {site} in {}", args.config.display());
    }
    let windows = store.latest_windows(args.site.as_deref())?;
    let active: Vec<_> = store
        .active_conditions()?
        .into_iter()
        .map(|c| c.transition)
        .filter(|t| args.site.as_ref().is_none_or(|s| &t.site == s))
        .collect();
    let zones = loaded
        .sites
        .iter()
        .filter(|s| args.site.as_ref().is_none_or(|id| &s.id == id))
        .flat_map(|s| s.zones.iter().map(move |z| (s, z)));
    let mut zone_lines = Vec::new();
    for (site, zone) in zones {
        let window = windows
            .iter()
            .find(|w| w.site == site.id && w.zone == zone.id);
        let dark = active.iter().find(|t| {
            t.kind == parklight_gateway::detect::Kind::DarkZone
                && t.site == site.id
                && t.zone.as_deref() == Some(&zone.id)
        });
        zone_lines.push((site, zone, window, dark));
    }
    let figure = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1}"));
    if args.json {
        let zones: Vec<_> = zone_lines
            .iter()
            .map(|(site, zone, window, dark)| {
                serde_json::json!({
                    "site": site.id,
                    "zone": zone.id,
                    "class": zone.requirement.label(),
                    "status": window.map_or("not_judged", |w| w.status.as_str()),
                    "status_number": window.map_or(0, |w| w.status as i64),
                    "dark_severity": dark.map(|t| t.severity.as_str()),
                    "window_end": window.map(|w| time(Some(w.end))),
                    "lux_avg": window.and_then(|w| w.lux_avg),
                    "lux_min": window.and_then(|w| w.lux_min),
                    "required_avg": window.map(|w| w.required_avg),
                    "required_min": window.map(|w| w.required_min),
                    "detections": window.map(|w| w.detections),
                    "valid_nodes": window.map(|w| w.valid_nodes),
                    "nodes": window.map(|w| w.nodes),
                    "cause": window.and_then(|w| w.cause.clone()),
                })
            })
            .collect();
        let conditions: Vec<_> = active.iter().map(condition_json).collect();
        println!(
            "{}",
            serde_json::json!({"zones": zones, "conditions": conditions})
        );
        return Ok(());
    }
    println!(
        "{:<14} {:<20} {:<6} {:<10} {:<24} {:>13} {:>13} {:>5}",
        "site", "zone", "class", "status", "window end", "lux avg/min", "required", "det"
    );
    for (site, zone, window, dark) in &zone_lines {
        let status = match (window, dark) {
            (_, Some(t)) => format!("dark:{}", t.severity.as_str()),
            (Some(w), None) => w.status.as_str().to_owned(),
            (None, None) => Status::NotJudged.as_str().to_owned(),
        };
        println!(
            "{:<14} {:<20} {:<6} {:<10} {:<24} {:>13} {:>13} {:>5}",
            site.id,
            zone.id,
            zone.requirement.label(),
            status,
            time(window.map(|w| w.end)),
            window.map_or("-".into(), |w| format!(
                "{}/{}",
                figure(w.lux_avg),
                figure(w.lux_min)
            )),
            window.map_or("-".into(), |w| format!(
                "{:.1}/{:.1}",
                w.required_avg, w.required_min
            )),
            window.map_or("-".into(), |w| w.detections.to_string()),
        );
    }
    println!("\nactive conditions: {}", active.len());
    for t in &active {
        println!("{}", condition_line(t));
    }
    Ok(())
}

/// `--since`: RFC 3339, or a duration before now.
fn since(text: Option<&str>) -> anyhow::Result<i64> {
    let Some(text) = text else {
        return Ok(i64::MIN);
    };
    if let Ok(at) = text.parse::<jiff::Timestamp>() {
        return Ok(at.as_millisecond());
    }
    let ago = humantime::parse_duration(text).map_err(|_| {
        anyhow::anyhow!("--since {text:?}: give a time (2026-01-15T22:00:00Z) or a duration (2h)")
    })?;
    Ok(jiff::Timestamp::now().as_millisecond() - ago.as_millis() as i64)
}

fn conditions(args: ConditionsArgs) -> anyhow::Result<()> {
    let from = since(args.since.as_deref())?;
    for row in open_store(&args.config)?.conditions_since(from)? {
        if args.json {
            println!("{}", condition_json(&row.transition));
        } else {
            println!("{}", condition_line(&row.transition));
        }
    }
    Ok(())
}

fn alerts(args: &AlertsArgs) -> anyhow::Result<()> {
    let loaded = Config::load_with(&args.config, &environment_overrides(), Secrets::Skip)?;
    let store = parklight_gateway::store::Store::open(
        &loaded.config.storage.path,
        loaded.config.storage.dead_letters_max,
    )?;
    for alert in store.alerts(args.open)? {
        if args.json {
            println!("{}", crew::alert_json(&store, &alert)?);
        } else {
            println!("{}", crew::alert_line(&alert));
        }
    }
    if !args.json {
        let mut receivers: Vec<String> = loaded
            .config
            .webhooks
            .iter()
            .map(|w| w.name.clone())
            .collect();
        if loaded.config.alerts.mqtt {
            receivers.insert(0, "mqtt".into());
        }
        for line in crew::receiver_lines(&store, &receivers)? {
            println!("{line}");
        }
    }
    Ok(())
}

fn act(args: &ActArgs, action: Action) -> anyhow::Result<()> {
    let mut store = open_store(&args.config)?;
    crew::act(
        &mut store,
        &crew::request(&args.id, action, &args.by, &args.note),
    )?;
    println!(
        "{}",
        crew::alert_line(
            &store
                .alerts(false)?
                .into_iter()
                .find(|a| a.id == args.id)
                .ok_or_else(|| anyhow::anyhow!("{} vanished", args.id))?
        )
    );
    Ok(())
}

/// A time given as RFC 3339 or as a duration from now, Unix ms.
fn until(text: &str) -> anyhow::Result<i64> {
    if let Ok(at) = text.parse::<jiff::Timestamp>() {
        return Ok(at.as_millisecond());
    }
    let ahead = humantime::parse_duration(text).map_err(|_| {
        anyhow::anyhow!("--until {text:?}: give a time (2026-12-04T06:00:00Z) or a duration (4h)")
    })?;
    Ok(jiff::Timestamp::now()
        .as_millisecond()
        .saturating_add(ahead.as_millis().min(i64::MAX as u128) as i64))
}

fn silence(command: SilenceCommand) -> anyhow::Result<()> {
    let now = jiff::Timestamp::now().as_millisecond();
    match command {
        SilenceCommand::Add {
            config,
            site,
            zone,
            node,
            circuit,
            until: end,
            by,
            note,
        } => {
            let loaded = Config::load_with(&config, &environment_overrides(), Secrets::Skip)?;
            let target = crew::SilenceTarget {
                site: &site,
                zone: zone.as_deref(),
                node: node.as_deref(),
                circuit: circuit.as_deref(),
            };
            let scope = target.scope(&loaded.sites)?;
            let until = until(&end)?;
            anyhow::ensure!(until > now, "--until {end:?} is not in the future");
            let mut store = parklight_gateway::store::Store::open(
                &loaded.config.storage.path,
                loaded.config.storage.dead_letters_max,
            )?;
            let mut silence = Silence {
                id: 0,
                site,
                scope,
                from: now,
                until,
                by,
                note,
            };
            silence.id = store.add_silence(&silence)?;
            println!("{}", crew::silence_line(&silence));
        }
        SilenceCommand::List { config } => {
            for silence in open_store(&config)?.silences(now)? {
                println!("{}", crew::silence_line(&silence));
            }
        }
        SilenceCommand::End { id, config } => {
            anyhow::ensure!(
                open_store(&config)?.end_silence(id, now)?,
                "no silence {id} is running"
            );
            println!("silence {id} ended");
        }
    }
    Ok(())
}

fn token(command: TokenCommand) -> anyhow::Result<()> {
    use parklight_gateway::api::access::{self, Role};
    let now = jiff::Timestamp::now().as_millisecond();
    match command {
        TokenCommand::Create { config, role, name } => {
            let names: Vec<&str> = Role::ALL.iter().map(|(_, n)| *n).collect();
            let role = Role::parse(&role)
                .ok_or_else(|| anyhow::anyhow!("--role {role:?}: one of {}", names.join(", ")))?;
            anyhow::ensure!(
                access::valid_name(&name),
                "--name {name:?}: 1 to 64 of A-Z a-z 0-9 . _ @ - (it is shown as who acted)"
            );
            let secret = access::new_secret();
            anyhow::ensure!(
                open_store(&config)?.add_token(
                    &name,
                    role.as_str(),
                    &access::hash(&secret),
                    now
                )?,
                "a token named {name:?} exists or existed: names are never reused"
            );
            println!("{secret}");
        }
        TokenCommand::Revoke { name, config } => {
            anyhow::ensure!(
                open_store(&config)?.revoke_token(&name, now)?,
                "no token {name:?} is in use"
            );
            println!("token {name} revoked");
        }
        TokenCommand::List { config } => {
            for token in open_store(&config)?.tokens()? {
                let state = match token.revoked {
                    Some(at) => format!("revoked {}", time(Some(at))),
                    None => "in use".into(),
                };
                println!(
                    "{:<24} {:<12} created {} {state}",
                    token.name,
                    token.role,
                    time(Some(token.created))
                );
            }
        }
    }
    Ok(())
}

fn dead_letters(path: &std::path::Path, limit: usize) -> anyhow::Result<()> {
    for letter in open_store(path)?.dead_letters(limit)? {
        let when = time(Some(letter.received));
        let field = letter.field.map(|f| format!(" ({f})")).unwrap_or_default();
        let report = letter
            .report
            .map(|(node, boot, seq)| format!(" {node} boot {boot} seq {seq}"))
            .unwrap_or_default();
        println!(
            "{when} {}{field}{report} on {}\n  {}",
            letter.reason,
            letter.topic,
            String::from_utf8_lossy(&letter.payload).escape_debug()
        );
    }
    Ok(())
}

fn check(path: &std::path::Path) -> anyhow::Result<()> {
    let loaded = Config::load(path, &environment_overrides())?;
    for warning in &loaded.warnings {
        eprintln!("{warning}");
    }
    let nodes: usize = loaded.sites.iter().map(|s| s.nodes.len()).sum();
    println!(
        "{}: ok ({} sites, {nodes} nodes, {} warnings)",
        path.display(),
        loaded.sites.len(),
        loaded.warnings.len()
    );
    Ok(())
}

/// A scenario file: a built-in story to start from, if any, and what to change.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioFile {
    /// The built-in scenario it starts from.
    base: Option<String>,
    /// Simulated seconds per real second.
    speed: Option<f64>,
    /// Simulated start, RFC 3339.
    start: Option<String>,
    /// Wall-clock seconds to play.
    duration_s: Option<f64>,
    /// Faults, as for `--faults` (added to the base scenario's).
    faults: Option<String>,
    /// No node has a power meter.
    no_meters: Option<bool>,
}

/// The built-in scenario `--scenario` names, and the file it reads when it names one.
fn scenario(
    named: Option<&str>,
) -> anyhow::Result<(Option<parklight_sim::Scenario>, ScenarioFile)> {
    let Some(named) = named else {
        return Ok((None, ScenarioFile::default()));
    };
    let unknown = match named.parse() {
        Ok(builtin) => return Ok((Some(builtin), ScenarioFile::default())),
        Err(unknown) => unknown,
    };
    if !std::path::Path::new(named).is_file() {
        anyhow::bail!("{unknown}, nor a scenario file");
    }
    let text = std::fs::read_to_string(named)
        .map_err(|e| anyhow::anyhow!("scenario file {named}: {e}"))?;
    let file: ScenarioFile =
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("scenario file {named}: {e}"))?;
    let base = (file.base.as_deref())
        .map(|base| {
            base.parse()
                .map_err(|e| anyhow::anyhow!("scenario file {named}: {e}"))
        })
        .transpose()?;
    Ok((base, file))
}

async fn sim(args: SimArgs) -> anyhow::Result<()> {
    if let (Some(span), Some(config)) = (&args.backfill, &args.config) {
        let (span, config, args) = (span.clone(), config.clone(), args.clone());
        return tokio::task::spawn_blocking(move || backfill(&args, &span, &config)).await?;
    }
    let (builtin, file) = scenario(args.scenario.as_deref())?;
    let start = match (args.start, &file.start) {
        (Some(start), _) => Some(start),
        (None, Some(text)) => Some(
            text.parse()
                .map_err(|e| anyhow::anyhow!("scenario file: start {text:?}: {e}"))?,
        ),
        (None, None) => None,
    };
    let faults = [file.faults.as_deref().unwrap_or(""), args.faults.as_str()].join(",");
    let sites = match (args.nodes, args.sites.is_empty()) {
        (Some(n), _) => SiteChoice::Synthetic(n),
        (None, true) => SiteChoice::Builtin,
        (None, false) => SiteChoice::Files(args.sites),
    };
    let options = SimOptions {
        broker: args.broker,
        sites,
        prefix: args.prefix,
        interval_s: args.interval_s,
        ack_timeout: seconds(args.ack_timeout_s, "--ack-timeout-s")?,
        speed: args.speed.or(file.speed),
        start,
        duration: (args.duration_s.or(file.duration_s))
            .map(|d| seconds(d, "--duration-s"))
            .transpose()?,
        drain: seconds(args.drain_s, "--drain-s")?,
        seed: args.seed,
        state_dir: args
            .state
            .unwrap_or_else(parklight_sim::store::default_state_dir),
        fresh: args.fresh,
        faults: FaultPlan::parse(&faults)?,
        scenario: builtin,
        meters: !(args.no_meters || file.no_meters.unwrap_or(false)),
        progress: true,
    };
    let summary = parklight_sim::run(options, parklight_gateway::signals::shutdown_token()).await?;
    println!(
        "{} nodes, {} reports, {} acknowledged, {} unacknowledged, {} dropped",
        summary.nodes, summary.reports, summary.acknowledged, summary.buffered, summary.dropped
    );
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = if matches!(cli.command, Command::Demo(_)) {
        // The embedded broker logs every client's disconnect as an error.
        "warn,rumqttd=off"
    } else {
        "info"
    };
    logging::init(cli.log_format, level);
    parklight_sim::mqtt::install_crypto_provider();
    let result = match cli.command {
        Command::Run(args) => run(&args.config).await,
        Command::Demo(args) => demo(args).await,
        Command::DeadLetters(args) => dead_letters(&args.config, args.limit),
        Command::Nodes(args) => nodes(&args.config, args.json),
        Command::Node(NodeCommand::Replaced { node, config }) => replaced(&node, &config),
        Command::Alerts(args) => alerts(&args),
        Command::Ack(args) => act(&args, Action::Acknowledge),
        Command::Resolve(args) => act(&args, Action::Resolve),
        Command::Silence(command) => silence(command),
        Command::Token(command) => token(command),
        Command::Check(args) => check(&args.config),
        Command::Status(args) => status(args),
        Command::Conditions(args) => conditions(args),
        Command::Config => {
            print!("{}", parklight_gateway::config::DEFAULT_CONFIG);
            Ok(())
        }
        Command::Sim(args) => sim(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            match error.downcast_ref::<parklight_gateway::config::ConfigError>() {
                Some(problems) => eprintln!("{problems}"),
                None => eprintln!("parklight: {error:#}"),
            }
            ExitCode::FAILURE
        }
    }
}
