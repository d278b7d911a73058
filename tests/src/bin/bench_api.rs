//! `cargo run --release -p parklight-tests --bin bench-api [-- DAYS]`: the API on a long
//! history. Stores DAYS (default 365) of simulated Remiseparken history with `parklight
//! sim --backfill` (the gateway's own decode, validation and writer, no broker), starts
//! the real gateway on it and measures: the backfill's rate, the start-up time (to
//! `/metrics` answering), the detectors' catch-up over the whole history, then p50/p99 of a zone's
//! series for 24 h at a 1-minute step, of the usage heat map over 30 days and a year, of
//! a zone's before/after over 4 weeks each side, and of 30 days of energy and of
//! compliance; then the zone series again while another client keeps asking for 30 days
//! of energy (how long a short read waits behind a long one). Every loop is bounded;
//! everything listens on loopback.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parklight_tests::api::{Credential, create_token, request};
use parklight_tests::broker::Mosquitto;
use parklight_tests::gateway::Gateway;
use parklight_tests::process::Parklight;
use parklight_tests::wait_until;

/// Requests per measured route (fewer for those that read a month or more of reports).
const REQUESTS: usize = 200;
const HEAVY_REQUESTS: usize = 20;

/// p50 and p99 of `samples`, in ms.
fn percentiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i].as_secs_f64() * 1000.0
    };
    (at(0.50), at(0.99))
}

/// Times `count` GETs of `path(i)`, each required to answer 200, and prints p50 and p99.
fn time_requests(port: u16, token: &str, what: &str, count: usize, path: impl Fn(usize) -> String) {
    let samples = (0..count)
        .map(|i| {
            let path = path(i);
            let started = Instant::now();
            let answer = request(port, "GET", &path, Credential::Bearer(token), None);
            let took = started.elapsed();
            assert_eq!(answer.status, 200, "{path}: {}", answer.body);
            took
        })
        .collect();
    let (p50, p99) = percentiles(samples);
    println!("{what} ({count} requests): p50 {p50:.1} ms, p99 {p99:.1} ms");
}

/// Runs `measure` while another client asks for `busy` again and again (at most 1 000
/// times), and prints how many of those it answered meanwhile.
fn while_busy(port: u16, token: &str, busy: &str, measure: impl FnOnce()) {
    let done = AtomicBool::new(false);
    let answered = std::thread::scope(|scope| {
        let other = scope.spawn(|| {
            let mut answered = 0;
            while !done.load(Ordering::Relaxed) && answered < 1000 {
                let answer = request(port, "GET", busy, Credential::Bearer(token), None);
                assert_eq!(answer.status, 200, "{busy}: {}", answer.body);
                answered += 1;
            }
            answered
        });
        measure();
        done.store(true, Ordering::Relaxed);
        other.join().unwrap()
    });
    println!("  (meanwhile {answered} answers to {busy})");
}

fn main() {
    let days: u32 = std::env::args()
        .nth(1)
        .and_then(|d| d.parse().ok())
        .unwrap_or(365);
    parklight_tests::use_release_binary();
    println!("building the release binary ...");
    parklight_tests::parklight_binary();
    let broker = Mosquitto::start();
    // Raw rows stay until the detectors have judged them: a retention shorter than the
    // history would let the first housekeeping round drop rows they have not read yet.
    let mut gateway = Gateway::new(&broker.url(), "");
    gateway.set_retention_days(days + 30);
    let config = gateway.config_path().to_string_lossy().into_owned();

    let started = Instant::now();
    let backfill = Parklight::spawn(&[
        "sim",
        "--backfill",
        &format!("{days}d"),
        "--config",
        &config,
    ])
    .wait(Duration::from_secs(3600));
    assert!(backfill.status.success(), "{}", backfill.stderr);
    println!(
        "backfill: {} in {:.0} s",
        backfill.stdout.trim(),
        started.elapsed().as_secs_f64()
    );
    let bytes: u64 = std::fs::read_dir(gateway.store_path())
        .unwrap()
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    println!("store: {:.0} MB", bytes as f64 / 1e6);

    let started = Instant::now();
    gateway.start();
    println!(
        "start-up to /metrics answering: {:.2} s",
        started.elapsed().as_secs_f64()
    );
    let caught_up = wait_until(Duration::from_secs(7200), || {
        let store = gateway.store();
        store.detected().unwrap().report >= store.last_report_id().unwrap()
    });
    assert!(caught_up, "{}", gateway.log());
    println!(
        "detectors caught up with the whole history: {:.0} s after the start",
        started.elapsed().as_secs_f64()
    );

    let port = gateway.http_port();
    let token = create_token(&config, "operator");
    let zones: Vec<String> = (parklight_site::Site::remiseparken().zones.iter())
        .map(|z| z.id.clone())
        .collect();
    let now = jiff::Timestamp::now().as_millisecond();
    let day = 86_400_000;
    let series = |i: usize| {
        format!(
            "/api/v1/series?site=remiseparken&zone={}&from={}&to={now}&step_s=60",
            zones[i % zones.len()],
            now - day
        )
    };
    time_requests(port, &token, "zone series, 24 h at 1 min", REQUESTS, series);
    let last = |days: i64| format!("site=remiseparken&from={}&to={now}", now - days * day);
    time_requests(port, &token, "usage heat map, 30 days", REQUESTS, |_| {
        format!("/api/v1/usage?{}", last(30))
    });
    time_requests(
        port,
        &token,
        "usage heat map, 365 days",
        HEAVY_REQUESTS,
        |_| format!("/api/v1/usage?{}", last(365)),
    );
    let date = jiff::Timestamp::from_millisecond(now - 28 * day)
        .unwrap()
        .to_string();
    time_requests(
        port,
        &token,
        "before/after, 4 weeks each side",
        HEAVY_REQUESTS,
        |i| {
            format!(
                "/api/v1/usage/change?site=remiseparken&zone={}&date={}",
                zones[i % zones.len()],
                &date[..10]
            )
        },
    );
    time_requests(port, &token, "energy, 30 days", HEAVY_REQUESTS, |_| {
        format!("/api/v1/energy?{}", last(30))
    });
    time_requests(port, &token, "compliance, 30 days", HEAVY_REQUESTS, |_| {
        format!("/api/v1/compliance?{}", last(30))
    });
    while_busy(
        port,
        &token,
        &format!("/api/v1/energy?{}", last(30)),
        || {
            time_requests(
                port,
                &token,
                "zone series, 24 h at 1 min, while energy is asked for",
                5 * REQUESTS,
                series,
            );
        },
    );
    gateway.stop();
}
