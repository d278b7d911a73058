//! Harness for the end-to-end tests: real services on free loopback ports, the real
//! `parklight` binary, and a recorder that can play the gateway's acknowledging part.
//!
//! Every service is started by the test that needs it and stopped when it is dropped.
//! A missing service is a failure naming the command that installs it, never a skip.

pub mod api;
pub mod broker;
pub mod browser;
pub mod gateway;
pub mod process;
pub mod recorder;
pub mod tls;
pub mod tsdb;
pub mod webhook;

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// End-to-end tests share two cores: under `cargo test` (one process per test file) each
/// holds this while it runs; nextest runs each test in a process of its own, as many at
/// once as `.config/nextest.toml` says.
pub fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

static RELEASE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes [`parklight_binary`] build the release profile (the benchmark calls this first).
pub fn use_release_binary() {
    RELEASE.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// The `parklight` binary, built once per process: the debug profile, like the tests, or
/// the release profile after [`use_release_binary`].
pub fn parklight_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            // Cargo gives a test process its package's CARGO_* variables. Build scripts
            // that watch them (ring's does) would rebuild when they differ from a plain
            // `cargo build`, so the nested build runs without them.
            let per_package = |name: &str| {
                [
                    "CARGO_PKG_",
                    "CARGO_MANIFEST_",
                    "CARGO_CRATE_",
                    "CARGO_BIN_",
                    "CARGO_PRIMARY_",
                    "CARGO_TARGET_TMPDIR",
                ]
                .iter()
                .any(|prefix| name.starts_with(prefix))
                    || name == "OUT_DIR"
            };
            let build = std::env::vars_os()
                .filter_map(|(name, _)| name.into_string().ok())
                .filter(|name| per_package(name))
                .fold(escargot::CargoBuild::new(), |build, name| {
                    build.env_remove(name)
                });
            let build = if RELEASE.load(std::sync::atomic::Ordering::SeqCst) {
                build.release()
            } else {
                build
            };
            build
                .package("parklight-gateway")
                .bin("parklight")
                .run()
                .expect("building the parklight binary")
                .path()
                .to_owned()
        })
        .clone()
}

/// Finds `program` on the PATH or in the sbin folders, or fails saying how to install it.
pub fn require(program: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!("{program} is not installed: run `sudo apt-get install -y {package}` (or .ci/run, which installs it)")
        })
}

/// A number from `parklight sim`'s summary line, e.g. `"unacknowledged"`.
pub fn summary_number(stdout: &str, label: &str) -> u64 {
    stdout
        .split(',')
        .find_map(|part| {
            part.trim()
                .strip_suffix(label)
                .map(|n| n.trim().parse::<u64>())
        })
        .and_then(Result::ok)
        .unwrap_or_else(|| panic!("no \"{label}\" in the summary: {stdout}"))
}

/// Asserts that each node's reports of each boot are 0, 1, 2, ... without a gap.
pub fn assert_consecutive<'a>(ids: impl IntoIterator<Item = (&'a str, u32, u32)>) {
    let mut by_boot: std::collections::BTreeMap<(&str, u32), Vec<u32>> = Default::default();
    for (node, boot, seq) in ids {
        by_boot.entry((node, boot)).or_default().push(seq);
    }
    for ((node, boot), mut seqs) in by_boot {
        seqs.sort_unstable();
        if let Some((expected, found)) = (0u32..).zip(&seqs).find(|(e, s)| e != *s) {
            panic!(
                "{node} boot {boot}: reports missing or repeated: seq {expected} expected, \
                 {found} found ({} reports)",
                seqs.len()
            );
        }
    }
}

/// Polls `condition` every 50 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Publishes `messages` (topic, payload) to the broker at `url` at QoS 1 and waits until
/// the broker has acknowledged every one. Payloads may be large (up to 1 MiB).
pub fn publish(url: &str, messages: &[(String, Vec<u8>)]) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut options =
            parklight_sim::mqtt::broker_options(url, "test-publisher").expect("broker URL");
        options
            .set_inflight(1000)
            .set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 1000);
        let expected = messages.len();
        let acks = tokio::spawn(async move {
            let mut acked = 0;
            while acked < expected {
                match eventloop.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => acked += 1,
                    Ok(_) => {}
                    Err(error) => panic!("publishing: {error}"),
                }
            }
            eventloop
        });
        for (topic, payload) in messages {
            client
                .publish(topic, rumqttc::QoS::AtLeastOnce, false, payload.clone())
                .await
                .expect("queued");
        }
        let mut eventloop = acks.await.expect("publisher");
        client.disconnect().await.expect("disconnect");
        while eventloop.poll().await.is_ok() {}
    });
}
