//! `parklight demo`: the whole system on its embedded defaults, with nothing installed.
//!
//! An embedded broker (rumqttd, in memory only), the simulator on the built-in
//! Remiseparken from an hour before the last sunset at 60x until it reaches the present
//! (then real time), and the gateway with a store in a temporary folder; a live summary
//! on the terminal.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use parklight_sim::{FaultPlan, SimOptions, SiteChoice};
use parklight_site::Site;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, HttpConfig, Loaded, MqttConfig, StorageConfig};

/// How to run the demo.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Preferred broker port (a free one when taken).
    pub broker_port: u16,
    /// Preferred `/metrics` address (a free port when taken).
    pub http: SocketAddr,
    /// Folder for the store and the nodes' state; a temporary one when `None`.
    pub dir: Option<PathBuf>,
    /// Simulated speed until the present.
    pub speed: f64,
    /// Faults to inject.
    pub faults: FaultPlan,
}

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// No folder for its data.
    #[error("demo folder: {0}")]
    Folder(std::io::Error),
    /// The gateway failed.
    #[error(transparent)]
    Gateway(#[from] crate::GatewayError),
    /// The simulator failed.
    #[error(transparent)]
    Sim(#[from] parklight_sim::SimError),
    /// The store cannot be opened for the demo's token.
    #[error(transparent)]
    Storage(#[from] crate::store::StorageError),
}

/// `preferred` on 127.0.0.1 if it is free, else any free port.
fn port_or_free(preferred: u16) -> u16 {
    TcpListener::bind(("127.0.0.1", preferred))
        .or_else(|_| TcpListener::bind(("127.0.0.1", 0)))
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .unwrap_or(preferred)
}

/// Starts rumqttd on 127.0.0.1:`port` in its own threads (it lives as long as the process).
fn start_broker(port: u16) {
    let connections = rumqttd::ConnectionSettings {
        connection_timeout_ms: 60_000,
        max_payload_size: 64 * 1024,
        max_inflight_count: 1000,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let server = rumqttd::ServerSettings {
        name: "parklight-demo".into(),
        listen: SocketAddr::from(([127, 0, 0, 1], port)),
        tls: None,
        next_connection_delay_ms: 1,
        connections,
    };
    let config = rumqttd::Config {
        router: rumqttd::RouterConfig {
            max_connections: 10_000,
            max_outgoing_packet_count: 1000,
            max_segment_size: 100 * 1024 * 1024,
            max_segment_count: 10,
            ..Default::default()
        },
        v4: Some(HashMap::from([("1".to_owned(), server)])),
        ..Default::default()
    };
    std::thread::spawn(move || {
        if let Err(error) = rumqttd::Broker::new(config).start() {
            tracing::error!(%error, "embedded broker stopped");
        }
    });
}

/// Runs the demo until `stop`.
pub async fn run(options: DemoOptions, stop: CancellationToken) -> Result<(), DemoError> {
    let temporary = match &options.dir {
        Some(_) => None,
        None => Some(tempfile_dir().map_err(DemoError::Folder)?),
    };
    let dir = options
        .dir
        .clone()
        .or_else(|| temporary.clone())
        .unwrap_or_default();
    std::fs::create_dir_all(&dir).map_err(DemoError::Folder)?;
    let broker_port = port_or_free(options.broker_port);
    let http = SocketAddr::from(([127, 0, 0, 1], port_or_free(options.http.port())));
    start_broker(broker_port);
    let broker = format!("mqtt://127.0.0.1:{broker_port}");
    // A token for the dashboard, made before the gateway starts.
    let token = crate::api::access::new_secret();
    let mut store = crate::store::Store::open(
        &dir.join("store"),
        StorageConfig::default().dead_letters_max,
    )?;
    let now = jiff::Timestamp::now().as_millisecond();
    let name = format!("demo-operator-{now}");
    store.add_token(&name, "operator", &crate::api::access::hash(&token), now)?;
    println!("parklight demo");
    println!(
        "  broker   {broker}  (embedded rumqttd: keeps messages in memory only; run Mosquitto with persistence in production)"
    );
    println!("  dashboard http://{http}/  (log in with the token below)");
    println!("  token    {token}");
    println!("  metrics  http://{http}/metrics");
    println!("  store    {}", dir.join("store").display());
    println!("  watch    mosquitto_sub -p {broker_port} -t 'parklight/v1/#' -v");
    println!("  stop     Ctrl-C\n");

    let site = Site::remiseparken();
    let now = jiff::Timestamp::now().as_millisecond();
    let start =
        parklight_core::solar::previous_sunset(now, site.lat, site.lon).unwrap_or(now) - 3_600_000;
    let loaded = Loaded {
        config: Config {
            mqtt: MqttConfig {
                url: broker.clone(),
                client_id: "parklight-demo-gateway".into(),
                ..MqttConfig::default()
            },
            storage: StorageConfig {
                path: dir.join("store"),
                ..StorageConfig::default()
            },
            http: HttpConfig {
                listen: http,
                ..HttpConfig::default()
            },
            ..Config::default()
        },
        sites: vec![site],
        warnings: Vec::new(),
    };
    // The nodes stop first (drained, shutdown statuses sent), then the gateway.
    let gateway_stop = CancellationToken::new();
    let gateway = tokio::spawn(crate::run(loaded, gateway_stop.clone()));
    let sim_options = SimOptions {
        broker,
        sites: SiteChoice::Builtin,
        prefix: parklight_protocol::DEFAULT_PREFIX.into(),
        interval_s: 60,
        ack_timeout: Duration::from_secs(60),
        speed: Some(options.speed),
        start: jiff::Timestamp::from_millisecond(start).ok(),
        duration: None,
        drain: Duration::from_secs(15),
        seed: jiff::Timestamp::now().as_second() as u64,
        state_dir: dir.join("nodes"),
        fresh: true,
        faults: options.faults.clone(),
        scenario: None,
        meters: true,
        progress: false,
    };
    let sim = tokio::spawn(parklight_sim::run(sim_options, stop.clone()));
    summary(&dir, &store, &stop).await;
    let sim = sim
        .await
        .map_err(|_| parklight_sim::SimError::Options("simulator task failed".into()));
    gateway_stop.cancel();
    let gateway = gateway.await;
    let sim = sim??;
    if let Ok(result) = gateway {
        result?;
    }
    println!(
        "\n{} reports made, {} acknowledged",
        sim.reports, sim.acknowledged
    );
    if let Some(temporary) = temporary {
        let _ = std::fs::remove_dir_all(temporary);
    }
    Ok(())
}

fn tempfile_dir() -> std::io::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("parklight-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A metric's value from the Prometheus text, summed over its label sets.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| line.starts_with(name) && line[name.len()..].starts_with([' ', '{']))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// One live line a second: reports/s, nodes online, dark zones, open alerts, rejects,
/// store size.
async fn summary(dir: &std::path::Path, store: &crate::store::Store, stop: &CancellationToken) {
    use std::io::{IsTerminal, Write};
    let terminal = std::io::stdout().is_terminal();
    let mut last = (Instant::now(), 0.0);
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    for second in 0u64.. {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let text = crate::http::metrics_handle().render();
        let stored = metric(&text, crate::metrics::REPORTS_STORED);
        let rate = (stored - last.1) / last.0.elapsed().as_secs_f64().max(0.001);
        last = (Instant::now(), stored);
        let size: u64 = std::fs::read_dir(dir.join("store"))
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok()?.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        // SQLite blocks: off the runtime's worker while it reads.
        let counted = tokio::task::block_in_place(|| {
            let dark = (store.active_conditions()?.iter())
                .filter(|c| c.transition.kind == crate::detect::Kind::DarkZone)
                .count();
            Ok::<_, crate::store::StorageError>((dark, store.alerts(true)?.len()))
        });
        let (dark, open) = match counted {
            Ok((dark, open)) => (dark.to_string(), open.to_string()),
            Err(_) => ("?".into(), "?".into()),
        };
        let line = format!(
            "{rate:6.1} reports/s  {stored:8} stored  {:2} nodes online  {dark} dark zones  {open} open alerts  {:3} rejected  store {:.1} MB",
            metric(&text, crate::metrics::NODES_ONLINE),
            metric(&text, crate::metrics::REPORTS_REJECTED),
            size as f64 / 1e6
        );
        if terminal {
            print!("\r{line}");
            let _ = std::io::stdout().flush();
        } else if second.is_multiple_of(10) {
            println!("{line}");
        }
    }
}
