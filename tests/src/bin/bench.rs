//! `cargo run --release -p parklight-tests --bin bench`: offered QoS 1 load from many
//! node connections through a real Mosquitto into the real gateway. `bench store
//! [REPORTS]` measures only the store's own ceiling (for `valgrind --tool=callgrind`);
//! `bench detect [NODES]` the detectors' CPU per report, alone and reading the journal;
//! `bench latency [REPORTS_PER_S]` the time from the report that closes a zone window to
//! the condition it changes, stored, at a fixed load.
//!
//! Measures, in one run on this machine: the broker's own ceiling (a subscriber that only
//! counts and acknowledges), the gateway's sustained reports/s with zero loss as a share
//! of it, catching up a backlog, its CPU time per report and peak memory, bytes per
//! report on disk raw and after compaction and what a year of one pole costs, the same
//! load with housekeeping every second, and the store's own ceiling (decoding and group
//! commits with no broker). Every loop is bounded in count and time; everything listens
//! on loopback.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use parklight_protocol::alert::{Alert, AlertState};
use parklight_tests::broker::Mosquitto;
use parklight_tests::gateway::Gateway;
use parklight_tests::recorder::Recorder;
use parklight_tests::wait_until;
use rumqttc::QoS;

/// Node connections offering load.
const CONNECTIONS: usize = 8;
/// Nodes per connection (each report names its node in the topic).
const NODES_PER_CONNECTION: usize = 125;
/// How long load is offered in each phase.
const OFFER_FOR: Duration = Duration::from_secs(20);

/// Night light with noise under a lamp at full: 12 to 20 lx.
fn night_lux(node: usize, seq: u32) -> f64 {
    let wobble = f64::from((seq.wrapping_mul(2_654_435_761) >> 20) % 1000) / 1000.0;
    ((12.0 + node as f64 % 7.0 + wobble) * 1000.0).round() / 1000.0
}

/// A realistic report: `avg` lux, a few detections, a lamp at full.
fn report(boot: u32, seq: u32, base_ms: i64, avg: f64) -> Vec<u8> {
    format!(
        r#"{{"v":1,"boot":{boot},"seq":{seq},"ts":{ts},"up_ms":{up},"period_s":60,"lux":{{"avg":{avg},"min":{min},"max":{max}}},"motion":{motion},"lamp":{{"on":true,"level":100,"power_w":40.2}},"cfg":3}}"#,
        ts = base_ms + i64::from(seq) * 60_000,
        up = u64::from(seq + 1) * 60_000,
        min = ((avg - 0.4) * 1000.0_f64).round() / 1000.0,
        max = ((avg + 0.5) * 1000.0_f64).round() / 1000.0,
        motion = seq % 5 / 3,
    )
    .into_bytes()
}

/// Publishes a connection may have unacknowledged: four rounds of its nodes' reports.
const PUBLISH_WINDOW: u64 = 4 * NODES_PER_CONNECTION as u64;

/// When each connection's round of reports was written: (connection, seq) to wall ms.
type Written = HashMap<(usize, u32), i64>;

/// Which reports a phase offers, and how fast.
#[derive(Clone)]
struct Load {
    /// The nodes' boot (each phase a boot of its own, so no phase leaves a gap in
    /// another's seqs); seqs from 0, one a minute of node time from `base_ms`.
    boot: u32,
    base_ms: i64,
    /// Offered until then.
    deadline: Instant,
    /// A round of every node's reports at most this often; as fast as QoS 1 allows when
    /// `None`.
    pace: Option<Duration>,
    /// The lux a node reads in a report.
    lux: fn(usize, u32) -> f64,
    /// When each connection's round (connection, seq) was written, wall ms.
    sent: Option<Arc<Mutex<Written>>>,
}

/// Publishes reports of `CONNECTIONS × NODES_PER_CONNECTION` nodes as fast as QoS 1 allows,
/// for `OFFER_FOR`, of boot `boot`, one a minute of node time from `days_ago`. Returns
/// reports the broker acknowledged.
async fn offer(port: u16, boot: u32, days_ago: i64) -> u64 {
    offer_load(
        port,
        Load {
            boot,
            base_ms: jiff::Timestamp::now().as_millisecond() - days_ago * 86_400_000,
            deadline: Instant::now() + OFFER_FOR,
            pace: None,
            lux: night_lux,
            sent: None,
        },
    )
    .await
}

/// Publishes `load` from every connection; returns reports the broker acknowledged.
async fn offer_load(port: u16, load: Load) -> u64 {
    let acked = Arc::new(AtomicU64::new(0));
    let publishers: Vec<_> = (0..CONNECTIONS)
        .map(|connection| {
            let (acked, load) = (acked.clone(), load.clone());
            tokio::spawn(async move { publish_rounds(port, connection, &load, &acked).await })
        })
        .collect();
    for publisher in publishers {
        let _ = publisher.await;
    }
    acked.load(Ordering::Relaxed)
}

/// One node connection on a plain socket, doing what a publisher must and no more: a
/// round of its nodes' reports in one write while at most [`PUBLISH_WINDOW`] are
/// unacknowledged, acknowledgements counted as they come. A client library's
/// per-message work would take the cores from the broker it is meant to measure.
async fn publish_rounds(port: u16, connection: usize, load: &Load, acked: &AtomicU64) {
    use rumqttc::mqttbytes::v4::{Connect, Disconnect, Publish};
    use tokio::io::AsyncWriteExt;
    let socket = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connecting a publisher");
    socket.set_nodelay(true).expect("nodelay");
    let (reader, mut writer) = socket.into_split();
    let mut out = bytes::BytesMut::new();
    let mut connect = Connect::new(format!("bench-{connection}"));
    connect.keep_alive = 0;
    connect.write(&mut out).expect("connect packet");
    let confirmed = Arc::new(AtomicU64::new(0));
    let room = Arc::new(tokio::sync::Notify::new());
    let acknowledgements = tokio::spawn(count_acknowledgements(
        reader,
        confirmed.clone(),
        room.clone(),
    ));
    let (mut sent, mut pkid, mut seq) = (0_u64, 0_u16, 0);
    let mut pace = load.pace.map(|period| {
        let mut pace = tokio::time::interval(period);
        pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        pace
    });
    while Instant::now() < load.deadline {
        if let Some(pace) = &mut pace {
            pace.tick().await;
        }
        if sent + NODES_PER_CONNECTION as u64 > confirmed.load(Ordering::Acquire) + PUBLISH_WINDOW {
            let _ = tokio::time::timeout(Duration::from_millis(100), room.notified()).await;
            continue;
        }
        for n in 0..NODES_PER_CONNECTION {
            let node = connection * NODES_PER_CONNECTION + n;
            let mut publish = Publish::new(
                format!("parklight/v1/bench/node-{node:05}/telemetry"),
                QoS::AtLeastOnce,
                report(load.boot, seq, load.base_ms, (load.lux)(node, seq)),
            );
            pkid = pkid % u16::MAX + 1;
            publish.pkid = pkid;
            publish.write(&mut out).expect("publish packet");
        }
        if writer.write_all(&out).await.is_err() {
            break;
        }
        if let Some(sent) = &load.sent {
            let now = jiff::Timestamp::now().as_millisecond();
            sent.lock()
                .expect("not poisoned")
                .insert((connection, seq), now);
        }
        out.clear();
        sent += NODES_PER_CONNECTION as u64;
        seq += 1;
    }
    // The last publishes acknowledged before closing.
    let settled = Instant::now() + Duration::from_secs(5);
    while confirmed.load(Ordering::Acquire) < sent && Instant::now() < settled {
        let _ = tokio::time::timeout(Duration::from_millis(100), room.notified()).await;
    }
    Disconnect.write(&mut out).expect("disconnect packet");
    let _ = writer.write_all(&out).await;
    drop(writer);
    let _ = tokio::time::timeout(Duration::from_secs(5), acknowledgements).await;
    acked.fetch_add(confirmed.load(Ordering::Acquire), Ordering::Relaxed);
}

/// Hands `reader` every whole packet in `incoming`, leaving a partial one for the next
/// read; a packet that does not parse stops the benchmark.
fn each_packet(
    incoming: &mut bytes::BytesMut,
    reader: &str,
    mut packet: impl FnMut(rumqttc::mqttbytes::v4::Packet),
) {
    loop {
        match rumqttc::mqttbytes::v4::Packet::read(incoming, 1 << 20) {
            Ok(read) => packet(read),
            Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => return,
            Err(error) => panic!("{reader} read garbage: {error}"),
        }
    }
}

/// Counts a publisher's acknowledgements until the broker closes the connection, waking
/// the publisher at each read that brought some.
async fn count_acknowledgements(
    mut reader: tokio::net::tcp::OwnedReadHalf,
    confirmed: Arc<AtomicU64>,
    room: Arc<tokio::sync::Notify>,
) {
    use rumqttc::mqttbytes::v4::Packet as Wire;
    use tokio::io::AsyncReadExt;
    let mut incoming = bytes::BytesMut::with_capacity(1 << 16);
    loop {
        incoming.reserve(1 << 14);
        match reader.read_buf(&mut incoming).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut count = 0;
        each_packet(&mut incoming, "a publisher", |packet| {
            if let Wire::PubAck(_) = packet {
                count += 1;
            }
        });
        if count > 0 {
            confirmed.fetch_add(count, Ordering::Release);
            room.notify_one();
        }
    }
}

/// Reports the store's ceiling is measured with: many more than one commit holds.
const STORE_ALONE_REPORTS: usize = 1_000_000;

/// Decodes and stores reports of `CONNECTIONS × NODES_PER_CONNECTION` nodes in group
/// commits of the default size, in this process with no broker: what the gateway's
/// writer can do when nothing else wants the cores. Returns reports/s.
fn store_alone(reports: usize) -> f64 {
    use parklight_gateway::ingest::{Incoming, Ingest};
    let nodes = CONNECTIONS * NODES_PER_CONNECTION;
    let dir = tempfile::tempdir().expect("temporary folder");
    let mut store = parklight_gateway::store::Store::open(dir.path(), 1000).expect("store");
    let mut ingest = Ingest::new("parklight/v1", &[], 300_000, &store).expect("ingest");
    let now = jiff::Timestamp::now().as_millisecond();
    let messages: Vec<(String, Vec<u8>)> = (0..reports)
        .map(|i| {
            let node = i % nodes;
            (
                format!("parklight/v1/bench/node-{node:05}/telemetry"),
                report(
                    1,
                    (i / nodes) as u32,
                    now - 30 * 86_400_000,
                    night_lux(node, (i / nodes) as u32),
                ),
            )
        })
        .collect();
    let group = parklight_gateway::config::StorageConfig::default().commit_max_reports;
    let started = Instant::now();
    let mut news = Vec::new();
    for commit in messages.chunks(group) {
        let mut writer = store.write().expect("transaction");
        for (topic, payload) in commit {
            let message = Incoming {
                topic,
                payload,
                received_ms: now,
                retained: false,
            };
            ingest
                .handle(&mut writer, &message, &mut news)
                .expect("stored");
        }
        ingest.save(&mut writer).expect("acknowledgement state");
        writer.commit().expect("commit");
        news.clear();
    }
    let rate = reports as f64 / started.elapsed().as_secs_f64();
    assert_eq!(store.report_count().expect("count"), reports as u64);
    rate
}

/// The broker's ceiling: a subscriber on a plain socket that does nothing but count what
/// it gets and acknowledge it (QoS 1), all that one read brings in one write, with a
/// persistent session. Ends when `done` says so or the broker closes the connection.
async fn count_and_acknowledge(
    port: u16,
    received: Arc<AtomicU64>,
    done: Arc<std::sync::atomic::AtomicBool>,
) {
    use rumqttc::mqttbytes::v4::{Connect, Packet as Wire, PubAck, Subscribe};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connecting the counting subscriber");
    socket.set_nodelay(true).expect("nodelay");
    let mut out = bytes::BytesMut::new();
    let mut connect = Connect::new("bench-counter");
    connect.keep_alive = 0;
    // A persistent session: what is published while it is away waits for it.
    connect.clean_session = false;
    connect.write(&mut out).expect("connect packet");
    let mut subscribe = Subscribe::new("parklight/v1/+/+/telemetry", QoS::AtLeastOnce);
    subscribe.pkid = 1;
    subscribe.write(&mut out).expect("subscribe packet");
    socket.write_all(&out).await.expect("connecting");
    out.clear();
    let mut incoming = bytes::BytesMut::with_capacity(1 << 20);
    while !done.load(Ordering::Relaxed) {
        // Room for a large read (a BytesMut without spare room reads 64 bytes at a time).
        incoming.reserve(1 << 16);
        let read =
            tokio::time::timeout(Duration::from_millis(200), socket.read_buf(&mut incoming)).await;
        match read {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => {}
            Err(_) => continue,
        }
        let mut count = 0;
        each_packet(&mut incoming, "the counting subscriber", |packet| {
            if let Wire::Publish(publish) = packet {
                count += 1;
                PubAck::new(publish.pkid)
                    .write(&mut out)
                    .expect("ack packet");
            }
        });
        received.fetch_add(count, Ordering::Relaxed);
        if !out.is_empty() {
            socket.write_all(&out).await.expect("acknowledging");
            out.clear();
        }
    }
}

/// [`count_and_acknowledge`] on a thread and runtime of its own, as the gateway has a
/// process of its own.
fn counting(
    port: u16,
    received: &Arc<AtomicU64>,
    done: &Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let (received, done) = (received.clone(), done.clone());
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(count_and_acknowledge(port, received, done));
    })
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<f64>().ok())
        .sum();
    ticks / 100.0
}

/// A process's anonymous resident memory (heap, stacks; not mapped files), in MiB.
fn anonymous_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Samples a process's anonymous memory every 100 ms until dropped; keeps the peak.
struct PeakMemory {
    peak_kib: Arc<AtomicU64>,
    running: Arc<std::sync::atomic::AtomicBool>,
}

impl PeakMemory {
    fn watch(pid: u32) -> PeakMemory {
        let peak_kib = Arc::new(AtomicU64::new(0));
        let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (peak, on) = (peak_kib.clone(), running.clone());
        std::thread::spawn(move || {
            while on.load(Ordering::Relaxed) {
                peak.fetch_max((anonymous_rss_mib(pid) * 1024.0) as u64, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        PeakMemory { peak_kib, running }
    }

    fn peak_mib(&self) -> f64 {
        self.peak_kib.load(Ordering::Relaxed) as f64 / 1024.0
    }
}

impl Drop for PeakMemory {
    fn drop(&mut self) {
        self.running.store(false, Ordering::Relaxed);
    }
}

fn file_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// The gateway with its default configuration (and `env`) under the benchmark's load:
/// everything offered must be stored, nothing lost.
struct Sustained {
    offered: u64,
    stored: u64,
    rate: f64,
    all_stored: bool,
    cpu_per_report: f64,
    peak_mib: f64,
    commits: f64,
}

fn sustained(
    runtime: &tokio::runtime::Runtime,
    gateway: &mut Gateway,
    broker: &Mosquitto,
) -> Sustained {
    gateway.start();
    let pid = gateway.pid().expect("gateway running");
    let memory = PeakMemory::watch(pid);
    let cpu_before = cpu_seconds(pid);
    let started = Instant::now();
    let offered = runtime.block_on(offer(broker.port(), 1, 30));
    let all_stored = wait_until(Duration::from_secs(300), || {
        gateway.metric("parklight_reports_stored_total", "") >= offered as f64
    });
    let elapsed = started.elapsed().as_secs_f64();
    let stored = gateway.metric("parklight_reports_stored_total", "") as u64;
    Sustained {
        offered,
        stored,
        rate: stored as f64 / elapsed,
        all_stored: all_stored && stored == offered,
        cpu_per_report: (cpu_seconds(pid) - cpu_before) / stored.max(1) as f64,
        peak_mib: memory.peak_mib(),
        commits: gateway.metric("parklight_commit_messages_count", ""),
    }
}

/// One night (sunset to sunrise at the synthetic site, 55° N) of one report a minute from
/// each of `nodes` nodes of [`parklight_site::Site::synthetic`], through the detectors:
/// CPU per report of the detectors alone, and of reading the journal from a store and
/// judging it (what the detection task does). Prints both.
fn detect_alone(nodes: usize) {
    use parklight_gateway::detect::model::Model;
    use parklight_gateway::detect::{Detector, Fact, Output, Settings, State};
    use parklight_gateway::store::{Placement, Position, ReportRow, Store};
    let site = parklight_site::Site::synthetic(nodes);
    let night_start = parklight_core::solar::previous_sunset(
        jiff::Timestamp::now().as_millisecond() - 86_400_000,
        site.lat,
        site.lon,
    )
    .expect("a sunset");
    let minutes = 14 * 60;
    let facts: Vec<Fact> = (0..minutes)
        .flat_map(|minute| {
            site.nodes
                .iter()
                .enumerate()
                .map(move |(i, node)| Fact::Report {
                    node: node.id.clone(),
                    report: ReportRow {
                        boot: 1,
                        seq: minute as u32,
                        ts: night_start + (minute + 1) * 60_000,
                        clock_ok: true,
                        received: night_start + (minute + 1) * 60_000 + 300,
                        period_s: 60,
                        lux: Some(parklight_protocol::Lux {
                            avg: 24.0 + (i % 7) as f64,
                            min: 20.0,
                            max: 30.0 + (minute % 3) as f64,
                        }),
                        motion: ((i as i64 + minute) % 5 == 0) as u32,
                        lamp_on: true,
                        lamp_level: 100,
                        power_w: Some(40.0),
                        cfg: Some(1),
                        faults: 0,
                        temp_c: None,
                        zone: node.zone.clone(),
                    },
                })
        })
        .collect();
    let model = Model::of(std::slice::from_ref(&site));
    let mut detector = Detector::new(model, Settings::default(), State::default());
    let mut out: Vec<Output> = Vec::new();
    let started = Instant::now();
    for fact in &facts {
        detector.apply(fact, &mut out);
    }
    let alone = started.elapsed().as_secs_f64() / facts.len() as f64 * 1e9;
    let windows = out
        .iter()
        .filter(|o| matches!(o, Output::Window(_)))
        .count();
    println!(
        "detectors alone:                  {alone:>9.0} ns/report  ({} reports of {nodes} nodes over a night, {windows} zone windows judged)",
        facts.len()
    );
    let dir = tempfile::tempdir().expect("temporary folder");
    let mut store = Store::open(dir.path(), 1000).expect("store");
    let mut writer = store.write().expect("transaction");
    let ids: Vec<i64> = site
        .nodes
        .iter()
        .map(|n| writer.node(&n.id, &site.id).expect("node"))
        .collect();
    for (i, fact) in facts.iter().enumerate() {
        if let Fact::Report { report, .. } = fact {
            writer
                .report(ids[i % nodes], report, Placement::default())
                .expect("report");
        }
    }
    writer.commit().expect("commit");
    let model = Model::of(std::slice::from_ref(&site));
    let mut detector = Detector::new(model, Settings::default(), State::default());
    let mut read = Position::default();
    out.clear();
    let started = Instant::now();
    loop {
        let (entries, position) = store.journal_after(read, 5000, None).expect("journal");
        if position == read {
            break;
        }
        for entry in &entries {
            detector.apply(&entry.fact, &mut out);
        }
        read = position;
    }
    let with_store = started.elapsed().as_secs_f64() / facts.len() as f64 * 1e9;
    println!(
        "journal read and judged:          {with_store:>9.0} ns/report  (from the store, batches of 5000, in one thread)"
    );
}

/// Poles per zone, as in a park: a window closes when the last of them reports.
const POLES_PER_ZONE: usize = 8;
/// Every tenth zone reads dark for two windows, then lit for two, so its `dark_zone` is
/// raised or cleared at every second window.
const FLAPPING_EVERY: usize = 10;
/// Reports a node makes in a zone window (5 minutes, a report a minute).
const REPORTS_PER_WINDOW: u32 = 5;

fn alternating_lux(node: usize, seq: u32) -> f64 {
    // Report `seq` ends `seq` minutes after the base, in the window that ends next.
    let window = seq.div_ceil(REPORTS_PER_WINDOW);
    let flapping = (node / POLES_PER_ZONE).is_multiple_of(FLAPPING_EVERY);
    if flapping && (window / 2).is_multiple_of(2) {
        1.0
    } else {
        night_lux(node, seq)
    }
}

/// A site of the benchmark's nodes, [`POLES_PER_ZONE`] to a P3 zone, in a park whose
/// nights are long now (55.66° N), on UTC.
fn latency_site(nodes: usize) -> String {
    let zones = nodes.div_ceil(POLES_PER_ZONE);
    let corner = |z: usize| {
        (
            12.0 + (z % 100) as f64 * 0.001,
            55.0 + (z / 100) as f64 * 0.001,
        )
    };
    let zone_features = (0..zones).map(|z| {
        let (x, y) = corner(z);
        format!(
            r#"{{"type":"Feature","properties":{{"zone":"zone-{z:04}","class":"P3"}},"geometry":{{"type":"Polygon","coordinates":[[[{x},{y}],[{x1},{y}],[{x1},{y1}],[{x},{y1}],[{x},{y}]]]}}}}"#,
            x1 = x + 0.001,
            y1 = y + 0.001
        )
    });
    let node_features = (0..nodes).map(|i| {
        let (x, y) = corner(i / POLES_PER_ZONE);
        let along = (i % POLES_PER_ZONE) as f64 * 0.0001;
        format!(
            r#"{{"type":"Feature","properties":{{"node":"node-{i:05}","zone":"zone-{z:04}"}},"geometry":{{"type":"Point","coordinates":[{},{}]}}}}"#,
            x + 0.0005,
            y + 0.0001 + along,
            z = i / POLES_PER_ZONE
        )
    });
    let features: Vec<String> = zone_features.chain(node_features).collect();
    format!(
        r#"{{"type":"FeatureCollection","site":{{"id":"bench","name":"Benchmark","timezone":"UTC","lat":55.66,"lon":12.59,"interval_s":60}},"features":[{}]}}"#,
        features.join(",")
    )
}

/// `bench latency [REPORTS_PER_S]`: the gateway under a fixed load (by default half of
/// the sustained throughput measured on this machine); for each `dark_zone` raised or
/// cleared, the time from writing the report that closed its window (the last of its
/// poles' reports that reach the window's end) to the stored transition. Prints p50,
/// p99 and the maximum.
fn latency(runtime: &tokio::runtime::Runtime, rate: f64) {
    let nodes = CONNECTIONS * NODES_PER_CONNECTION;
    let dir = tempfile::tempdir().expect("temporary folder");
    let site_file = dir.path().join("bench.geojson");
    std::fs::write(&site_file, latency_site(nodes)).expect("site file");
    let broker = Mosquitto::with_queue(0);
    // Every transition pages (no flap suppression): each is measured to its alert.
    let mut gateway = Gateway::new(&broker.url(), "[alerts]\nflap_returns = 1000000\n");
    gateway.set_sites(&[site_file]);
    gateway.start();
    let alerts = Recorder::start_on(&broker.url(), "parklight/v1/+/alerts", false);
    // Last night, from two hours after sunset: dark for longer than the load runs.
    let now = jiff::Timestamp::now().as_millisecond();
    let sunset =
        parklight_core::solar::previous_sunset(now - 86_400_000, 55.66, 12.59).expect("a sunset");
    let window = i64::from(REPORTS_PER_WINDOW) * 60_000;
    let base_ms = (sunset + 2 * 3_600_000).div_euclid(window) * window;
    let sent = Arc::new(Mutex::new(HashMap::new()));
    let offered = runtime.block_on(offer_load(
        broker.port(),
        Load {
            boot: 1,
            base_ms,
            deadline: Instant::now() + OFFER_FOR,
            pace: Some(Duration::from_secs_f64(nodes as f64 / rate)),
            lux: alternating_lux,
            sent: Some(sent.clone()),
        },
    ));
    let caught_up = wait_until(Duration::from_secs(120), || {
        let store = gateway.store();
        let last = store.last_report_id().expect("last report");
        last >= offered as i64 && store.detected().expect("cursor").report >= last
    });
    std::thread::sleep(Duration::from_secs(2)); // the last alerts on their way
    gateway.stop();
    // Each alert change on MQTT: its zone, whether it says raised, and when it came.
    let (now, now_ms) = (Instant::now(), jiff::Timestamp::now().as_millisecond());
    let mut paged: Vec<(String, bool, i64)> = alerts
        .messages()
        .into_iter()
        .filter_map(|m| {
            let alert = Alert::from_json(&m.payload).ok()?;
            let raised = alert.state != AlertState::Resolved;
            Some((
                alert.zone?,
                raised,
                now_ms - now.duration_since(m.at).as_millis() as i64,
            ))
        })
        .collect();
    paged.sort_by_key(|(_, _, at)| *at);
    let sent = sent.lock().expect("not poisoned");
    // When the gateway received each report of the closing rounds.
    let store = gateway.store();
    let arrived: HashMap<(String, u32), i64> = store
        .reports_after(0, usize::MAX >> 1)
        .expect("reports")
        .into_iter()
        .map(|row| ((row.node, row.report.seq), row.report.received))
        .collect();
    // Per transition: from writing the closing report to its arrival, and to the stored
    // transition.
    let mut to_mqtt = Vec::new();
    let (mut arrival, mut total): (Vec<i64>, Vec<i64>) = store
        .conditions_since(i64::MIN)
        .expect("conditions")
        .into_iter()
        .filter_map(|row| {
            // Its alert change: the first on MQTT for its zone and state after it.
            let page = paged.iter().find(|(zone, raised, at)| {
                row.transition.zone.as_ref() == Some(zone)
                    && *raised == row.transition.active
                    && *at >= row.recorded
            });
            let zone: usize = row.transition.zone?.strip_prefix("zone-")?.parse().ok()?;
            // A report is stamped at the end of its minute: the one stamped at the
            // window's end completes it.
            let closing = u32::try_from((row.transition.ts - base_ms) / 60_000).ok()?;
            let poles = zone * POLES_PER_ZONE..(zone + 1) * POLES_PER_ZONE;
            let (written, received) = poles
                .map(|node| {
                    let written = sent.get(&(node / NODES_PER_CONNECTION, closing))?;
                    let received = arrived.get(&(format!("node-{node:05}"), closing))?;
                    Some((*written, *received))
                })
                .collect::<Option<Vec<_>>>()?
                .into_iter()
                .max()?;
            if let Some((_, _, at)) = page {
                to_mqtt.push(at - written);
            }
            Some((received - written, row.recorded - written))
        })
        .unzip();
    if total.is_empty() {
        println!("no transitions stored: nothing measured");
        return;
    }
    arrival.sort_unstable();
    total.sort_unstable();
    let at = |list: &[i64], share: f64| list[((list.len() - 1) as f64 * share) as usize];
    println!(
        "closing report to stored condition: p50 {} ms, p99 {} ms, max {} ms  ({} transitions; {offered} reports at {rate:.0}/s offered{})",
        at(&total, 0.5),
        at(&total, 0.99),
        at(&total, 1.0),
        total.len(),
        if caught_up {
            ""
        } else {
            "; detection NOT caught up"
        }
    );
    println!(
        "  of which to its arrival:         p50 {} ms, p99 {} ms (broker and the gateway's intake)",
        at(&arrival, 0.5),
        at(&arrival, 0.99),
    );
    to_mqtt.sort_unstable();
    if !to_mqtt.is_empty() {
        println!(
            "closing report to the alert on MQTT: p50 {} ms, p99 {} ms, max {} ms  ({} alert changes)",
            at(&to_mqtt, 0.5),
            at(&to_mqtt, 0.99),
            at(&to_mqtt, 1.0),
            to_mqtt.len()
        );
    }
}

fn main() {
    // `bench store [REPORTS]`: only the store's own ceiling, e.g. under
    // `valgrind --tool=callgrind`, whose instruction counts do not depend on the noise.
    let mut args = std::env::args().skip(1);
    let mode = args.next();
    if mode.as_deref() == Some("detect") {
        detect_alone(args.next().and_then(|n| n.parse().ok()).unwrap_or(1000));
        return;
    }
    if mode.as_deref() == Some("store") {
        let reports = args
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(STORE_ALONE_REPORTS);
        println!(
            "store alone, no broker:           {:>9.0} reports/s  ({reports} reports)",
            store_alone(reports)
        );
        return;
    }
    parklight_tests::use_release_binary();
    println!("building the release binary ...");
    parklight_tests::parklight_binary();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    if mode.as_deref() == Some("latency") {
        // Half the gateway's sustained throughput measured on this machine (54 100/s).
        let rate = args.next().and_then(|n| n.parse().ok()).unwrap_or(27_000.0);
        latency(&runtime, rate);
        return;
    }
    let machine = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    println!(
        "machine: {} cores, {machine}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "load: {CONNECTIONS} connections x {NODES_PER_CONNECTION} nodes, QoS 1, {}s per phase\n",
        OFFER_FOR.as_secs()
    );

    // 1. The broker's own ceiling: publishers and a subscriber that only counts and
    // acknowledges, on the same cores.
    let broker = Mosquitto::with_queue(0);
    let received = Arc::new(AtomicU64::new(0));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let counter = counting(broker.port(), &received, &done);
    std::thread::sleep(Duration::from_secs(1));
    let cpu_of = |pid: Option<u32>| cpu_seconds(pid.expect("running"));
    let (broker_cpu, own_cpu) = (cpu_of(broker.pid()), cpu_of(Some(std::process::id())));
    let started = Instant::now();
    let offered = runtime.block_on(offer(broker.port(), 1, 30));
    let intake = offered as f64 / started.elapsed().as_secs_f64();
    let delivered = wait_until(Duration::from_secs(300), || {
        received.load(Ordering::Relaxed) >= offered
    });
    let ceiling = received.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    let per_message = |cpu: f64| cpu / offered.max(1) as f64 * 1e6;
    let broker_cpu = per_message(cpu_of(broker.pid()) - broker_cpu);
    let own_cpu = per_message(cpu_of(Some(std::process::id())) - own_cpu);
    done.store(true, Ordering::Relaxed);
    counter.join().expect("the counting subscriber");
    println!(
        "broker intake (QoS 1 publishers):  {intake:>9.0} msg/s  ({offered} acknowledged to publishers)"
    );
    println!(
        "CPU per message:                  {broker_cpu:>9.1} µs the broker, {own_cpu:.1} µs the publishers and the counter"
    );
    println!(
        "broker to a subscriber that only counts and acknowledges:\n                                   {ceiling:>9.0} msg/s  (all {} delivered{})",
        received.load(Ordering::Relaxed),
        if delivered {
            ""
        } else {
            ": NOT all within 300 s"
        }
    );
    // 1b. The broker delivering a backlog (queued while the subscriber was away) to it.
    let queued = runtime.block_on(offer(broker.port(), 2, 60));
    received.store(0, Ordering::Relaxed);
    done.store(false, Ordering::Relaxed);
    let started = Instant::now();
    let counter = counting(broker.port(), &received, &done);
    let drained = wait_until(Duration::from_secs(300), || {
        received.load(Ordering::Relaxed) >= queued
    });
    let backlog_ceiling = received.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    counter.join().expect("the counting subscriber");
    println!(
        "broker delivering a backlog to it:{backlog_ceiling:>9.0} msg/s  ({queued} queued{})",
        if drained {
            ", all delivered"
        } else {
            ": NOT all within 300 s"
        }
    );
    drop(broker);
    let of_ceiling = |rate: f64| rate / ceiling * 100.0;

    // 2. The gateway: everything offered must be stored, nothing lost.
    let broker = Mosquitto::with_queue(0);
    let mut gateway = Gateway::new(&broker.url(), "");
    let run = sustained(&runtime, &mut gateway, &broker);
    gateway.stop();
    let stored = run.stored;

    // 2b. Catching up: reports queue in the broker while the gateway is down; then the
    // gateway drains them with the cores to itself and the broker.
    let queued = runtime.block_on(offer(broker.port(), 2, 60));
    gateway.start();
    let pid = gateway.pid().expect("gateway running");
    let drain_memory = PeakMemory::watch(pid);
    let cpu_before = cpu_seconds(pid);
    let started = Instant::now();
    let target = stored + queued;
    let drained = wait_until(Duration::from_secs(300), || {
        gateway.metric("parklight_reports_stored_total", "") + stored as f64 >= target as f64
    });
    let drain_rate = queued as f64 / started.elapsed().as_secs_f64();
    let drain_cpu = (cpu_seconds(pid) - cpu_before) / queued.max(1) as f64;
    gateway.stop();
    println!(
        "gateway sustained:                {:>9.0} reports/s  ({:.0} % of the ceiling; {stored} stored, {} acknowledged to publishers, {:.0} msg/s{})",
        run.rate,
        of_ceiling(run.rate),
        run.offered,
        run.offered as f64 / OFFER_FOR.as_secs_f64(),
        if run.all_stored {
            ", zero loss"
        } else {
            ", LOSS"
        }
    );
    println!(
        "gateway CPU per report:           {:>9.1} µs",
        run.cpu_per_report * 1e6
    );
    println!(
        "gateway catching up a backlog:    {drain_rate:>9.0} reports/s  ({:.0} % of the broker's backlog ceiling; {queued} queued while it was down{}; {:.1} µs CPU each)",
        drain_rate / backlog_ceiling * 100.0,
        if drained {
            ", all stored"
        } else {
            ", NOT all stored within 300 s"
        },
        drain_cpu * 1e6
    );
    println!(
        "gateway peak memory:              {:>9.1} MiB sustained, {:.1} MiB catching up (anonymous RSS: heap with SQLite's page cache, stacks; not the mapped store)",
        run.peak_mib,
        drain_memory.peak_mib()
    );
    println!(
        "reports per group commit:         {:>9.0}",
        stored as f64 / run.commits.max(1.0)
    );

    // 3. Bytes per report on disk, raw and after compaction; a year of one pole.
    let mut store = gateway.store();
    let data = gateway.store_path();
    store.checkpoint().expect("checkpoint");
    let stored = store.report_count().expect("count");
    let raw = file_bytes(&data) as f64 / stored.max(1) as f64;
    let far_future = i64::MAX / 4;
    let compaction = store.compact(far_future, &|| false).expect("compaction");
    store
        .retain(far_future, None, &|| false)
        .expect("retention");
    store.checkpoint().expect("checkpoint");
    let compacted = file_bytes(&data) as f64 / stored.max(1) as f64;
    let block_bytes = store.block_bytes().expect("block size") as f64 / stored.max(1) as f64;
    println!(
        "disk per report, raw:             {raw:>9.1} bytes (database file, indexes included)"
    );
    println!(
        "disk per report, compacted:       {compacted:>9.1} bytes (file after compaction; {} blocks)",
        compaction.blocks
    );
    println!(
        "compressed block per report:      {block_bytes:>9.1} bytes ({:.2} per value, 14 values a report)",
        block_bytes / 14.0
    );
    let retention = parklight_gateway::config::StorageConfig::default().retention_days;
    let a_year = 365.0 * 1440.0 * compacted + f64::from(retention) * 1440.0 * raw;
    println!(
        "a year of one pole:               {:>9.1} MB (a report a minute, compacted, plus {retention} days of raw rows: the default retention)",
        a_year / 1e6
    );

    // 4. Housekeeping every second while the load runs: every round succeeds, every
    // closed hour is folded, raw rows stay as configured.
    let broker = Mosquitto::with_queue(0);
    let mut gateway =
        Gateway::new(&broker.url(), "").env("PARKLIGHT_STORAGE__HOUSEKEEPING_INTERVAL_S", "1");
    let run = sustained(&runtime, &mut gateway, &broker);
    // One more round once the load is over.
    let rounds_by_end = gateway.metric("parklight_housekeeping_rounds_total", "");
    wait_until(Duration::from_secs(30), || {
        gateway.metric("parklight_housekeeping_rounds_total", "") >= rounds_by_end + 2.0
    });
    let rounds = gateway.metric("parklight_housekeeping_rounds_total", "");
    let failed = gateway.metric("parklight_housekeeping_failures_total", "");
    gateway.stop();
    let store = gateway.store();
    let folded = store
        .cursor(parklight_gateway::store::history::FOLDED)
        .expect("cursor");
    let every_hour_folded = folded == store.last_report_id().expect("last id");
    let raw_kept = store.raw_report_count().expect("count") == run.stored;
    println!(
        "with housekeeping every second:   {:>9.0} reports/s  ({:.0} % of the ceiling{}); {rounds:.0} rounds, {failed:.0} failed; {}; {}",
        run.rate,
        of_ceiling(run.rate),
        if run.all_stored {
            ", zero loss"
        } else {
            ", LOSS"
        },
        if every_hour_folded {
            "every closed hour folded"
        } else {
            "NOT every closed hour folded"
        },
        if raw_kept {
            "every raw row kept (within the retention)"
        } else {
            "raw rows MISSING"
        }
    );

    // 5. The store's own ceiling: the writer's work with the cores to itself.
    println!(
        "store alone, no broker:           {:>9.0} reports/s  ({STORE_ALONE_REPORTS} decoded and stored in one thread, default commit size)",
        store_alone(STORE_ALONE_REPORTS)
    );
}
