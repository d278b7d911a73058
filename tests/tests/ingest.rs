//! Ingest that holds for years, against a real Mosquitto and the real binary: oversized
//! messages, a store that fails, subscriptions that follow the configuration, and
//! clock-less reports that keep their own time.

use std::path::{Path, PathBuf};
use std::time::Duration;

use parklight_tests::broker::{Mosquitto, Settings, shipped_message_size_limit};
use parklight_tests::gateway::Gateway;
use parklight_tests::process::Parklight;
use parklight_tests::{one_at_a_time, wait_until};

const TELEMETRY: &str = "parklight/v1/remiseparken/pole-017/telemetry";

/// A report of pole-017, as its node would send it.
fn report(boot: u32, seq: u32) -> (String, Vec<u8>) {
    at(TELEMETRY, boot, seq)
}

/// A report on `topic`.
fn at(topic: &str, boot: u32, seq: u32) -> (String, Vec<u8>) {
    let payload = format!(
        r#"{{"v":1,"boot":{boot},"seq":{seq},"ts":1764093600000,"period_s":60,"lux":{{"avg":4.5,"min":3,"max":6}},"motion":2,"lamp":{{"on":true,"level":70}}}}"#
    );
    (topic.to_owned(), payload.into_bytes())
}

/// A telemetry message of exactly `bytes` bytes (valid JSON, far too long).
fn oversized(bytes: usize) -> (String, Vec<u8>) {
    let head = r#"{"v":1,"boot":1,"seq":99,"pad":""#;
    let tail = r#""}"#;
    let pad = "x".repeat(bytes - head.len() - tail.len());
    (
        TELEMETRY.to_owned(),
        format!("{head}{pad}{tail}").into_bytes(),
    )
}

/// Publishes at QoS 1 and waits until the broker has every one.
fn publish(broker: &Mosquitto, messages: &[(String, Vec<u8>)]) {
    parklight_tests::publish(&broker.url(), messages);
}

fn stored(gateway: &Gateway) -> f64 {
    gateway.metric("parklight_reports_stored_total", "")
}

fn too_long(gateway: &Gateway) -> f64 {
    gateway.metric("parklight_reports_rejected_total", "reason=\"too_long\"")
}

/// Watches the gateway's broker connections long enough for a reconnect loop to show
/// (its first retry comes after 200 ms), failing as soon as their count moves from
/// `connects`.
fn assert_connections_stay(gateway: &Gateway, connects: f64) {
    let count = || gateway.metric("parklight_mqtt_connects_total", "");
    let moved = wait_until(Duration::from_secs(3), || count() != connects);
    assert!(!moved, "{} connections, not {connects}", count());
}

#[test]
fn messages_at_the_shipped_broker_limit_are_rejected_without_breaking_the_session() {
    let _serial = one_at_a_time();
    let broker = Mosquitto::start();
    let mut gateway = Gateway::new(&broker.url(), "");
    gateway.start();
    assert!(wait_until(Duration::from_secs(10), || gateway
        .metric("parklight_mqtt_connects_total", "")
        == 1.0));
    publish(
        &broker,
        &[
            report(1, 0),
            oversized(shipped_message_size_limit()),
            oversized(shipped_message_size_limit() - 1),
            report(1, 1),
        ],
    );
    assert!(
        wait_until(Duration::from_secs(20), || stored(&gateway) >= 2.0
            && too_long(&gateway) >= 2.0),
        "{}",
        gateway.metrics()
    );
    // The connection held.
    assert_connections_stay(&gateway, 1.0);
    assert_eq!(too_long(&gateway), 2.0);
    gateway.stop();
    let store = gateway.store();
    assert_eq!(store.report_count().unwrap(), 2);
    let letters = store.dead_letters(10).unwrap();
    assert_eq!(letters.len(), 2);
    assert!(
        letters.iter().all(|l| l.reason == "too_long"),
        "{letters:?}"
    );
}

#[test]
fn a_message_over_the_gateway_limit_on_a_broker_without_one_is_rejected_once() {
    let _serial = one_at_a_time();
    let broker = Mosquitto::with(Settings {
        message_size_limit: 0,
        ..Settings::default()
    });
    let mut gateway = Gateway::new(&broker.url(), "");
    gateway.start();
    // A first start makes the broker keep the gateway's session while it is down.
    gateway.stop();
    publish(
        &broker,
        &[report(1, 0), oversized(300 * 1024), report(1, 1)],
    );
    gateway.start();
    assert!(
        wait_until(Duration::from_secs(30), || stored(&gateway) >= 2.0
            && too_long(&gateway) >= 1.0),
        "log:\n{}",
        gateway.log()
    );
    // One reconnect to read it, and no loop.
    assert_connections_stay(&gateway, 2.0);
    assert_eq!(gateway.metric("parklight_mqtt_oversized_total", ""), 1.0);
    publish(&broker, &[report(1, 2)]);
    assert!(wait_until(Duration::from_secs(10), || stored(&gateway) >= 3.0));
    gateway.stop();
    assert_eq!(gateway.store().report_count().unwrap(), 3);
}

#[test]
fn a_store_that_fails_for_good_stops_the_gateway_with_an_error_and_loses_nothing() {
    let _serial = one_at_a_time();
    let broker = Mosquitto::start();
    let mut gateway = Gateway::new(&broker.url(), "");
    gateway.start();
    publish(&broker, &[report(1, 0)]);
    assert!(wait_until(Duration::from_secs(10), || stored(&gateway) >= 1.0));
    // Someone changes the store under the running gateway (a wrong migration, a script):
    // the writer can no longer store a report, and waiting will not mend it.
    let database = gateway.store_path().join(parklight_gateway::store::DB_FILE);
    let sabotage = rusqlite::Connection::open(&database).unwrap();
    sabotage
        .execute_batch(
            "CREATE TRIGGER sabotage BEFORE INSERT ON reports
             BEGIN SELECT RAISE(ABORT, 'reports are not taken here'); END;",
        )
        .unwrap();
    publish(&broker, &[report(1, 1)]);
    let status = gateway.wait_exit(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| !s.success()),
        "still running or a clean exit ({status:?}); log:\n{}",
        gateway.log()
    );
    let log = gateway.log();
    assert!(
        log.contains("the writer") && log.contains("reports are not taken here"),
        "{log}"
    );
    // Repaired and restarted, the gateway stores what it never acknowledged.
    sabotage.execute_batch("DROP TRIGGER sabotage").unwrap();
    gateway.start();
    assert!(wait_until(Duration::from_secs(10), || stored(&gateway) >= 1.0));
    gateway.stop();
    assert_eq!(gateway.store().report_count().unwrap(), 2);
}

/// A site file with one zone and one node, `{site}-pole`, in `dir`.
fn site_file(dir: &Path, site: &str) -> PathBuf {
    let path = dir.join(format!("{site}.geojson"));
    let text = format!(
        r#"{{"type":"FeatureCollection","site":{{"id":"{site}","name":"{site}","timezone":"Europe/Copenhagen"}},
        "features":[
          {{"type":"Feature","properties":{{"zone":"path","class":"P4"}},"geometry":{{"type":"Polygon","coordinates":[[[12.0,55.0],[12.001,55.0],[12.001,55.001],[12.0,55.001],[12.0,55.0]]]}}}},
          {{"type":"Feature","properties":{{"node":"{site}-pole"}},"geometry":{{"type":"Point","coordinates":[12.0005,55.0005]}}}}
        ]}}"#
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn report_of(site: &str, seq: u32) -> (String, Vec<u8>) {
    at(
        &format!("parklight/v1/{site}/{site}-pole/telemetry"),
        1,
        seq,
    )
}

fn nodes_stored(gateway: &Gateway) -> Vec<String> {
    let mut nodes: Vec<String> = gateway
        .store()
        .report_ids()
        .unwrap()
        .into_iter()
        .map(|(node, _, _)| node)
        .collect();
    nodes.dedup();
    nodes
}

#[test]
fn subscriptions_follow_the_configuration_across_restarts_of_one_session() {
    let _serial = one_at_a_time();
    let broker = Mosquitto::start();
    let sites = tempfile::tempdir().unwrap();
    let [north, south, east] = ["north", "south", "east"].map(|s| site_file(sites.path(), s));
    let mut gateway =
        Gateway::new(&broker.url(), "").env("PARKLIGHT_MQTT__ONLY_CONFIGURED_SITES", "true");
    gateway.set_sites(&[north.clone(), south]);
    gateway.start();
    publish(&broker, &[report_of("north", 0), report_of("south", 0)]);
    assert!(wait_until(Duration::from_secs(10), || stored(&gateway) >= 2.0));
    gateway.stop();
    // South leaves this gateway, east joins; the broker kept the session.
    gateway.set_sites(&[north, east]);
    gateway.start();
    assert!(
        wait_until(Duration::from_secs(10), || gateway
            .log()
            .contains("unsubscribed what the configuration no longer asks for")),
        "{}",
        gateway.log()
    );
    publish(
        &broker,
        &[
            report_of("south", 1),
            report_of("east", 0),
            report_of("north", 1),
        ],
    );
    assert!(wait_until(Duration::from_secs(10), || stored(&gateway) >= 2.0));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(stored(&gateway), 2.0, "south's report does not arrive");
    gateway.stop();
    assert_eq!(
        nodes_stored(&gateway),
        ["east-pole", "north-pole", "south-pole"]
    );
    let south: Vec<_> = gateway
        .store()
        .report_ids()
        .unwrap()
        .into_iter()
        .filter(|(node, _, _)| node == "south-pole")
        .collect();
    assert_eq!(
        south,
        [("south-pole".to_owned(), 1, 0)],
        "only the first one"
    );
}

#[test]
fn a_subscription_the_broker_refuses_is_reported() {
    let _serial = one_at_a_time();
    // Mosquitto's dynamic security: anonymous clients may subscribe anywhere but under
    // the `south` site.
    let acl = r##"{
      "clients": [],
      "groups": [{"groupname": "anonymous", "roles": [{"rolename": "everyone"}]}],
      "anonymousGroup": "anonymous",
      "roles": [{"rolename": "everyone", "acls": [
        {"acltype": "subscribePattern", "topic": "parklight/v1/south/#", "allow": false},
        {"acltype": "subscribePattern", "topic": "#", "allow": true},
        {"acltype": "unsubscribePattern", "topic": "#", "allow": true},
        {"acltype": "publishClientSend", "topic": "#", "allow": true},
        {"acltype": "publishClientReceive", "topic": "#", "allow": true}
      ]}],
      "defaultACLAccess": {"publishClientSend": false, "publishClientReceive": true,
                           "subscribe": false, "unsubscribe": true}
    }"##;
    let broker = Mosquitto::with(Settings {
        dynamic_security: Some(acl.into()),
        ..Settings::default()
    });
    let sites = tempfile::tempdir().unwrap();
    let mut gateway =
        Gateway::new(&broker.url(), "").env("PARKLIGHT_MQTT__ONLY_CONFIGURED_SITES", "true");
    gateway.set_sites(&["north", "south"].map(|s| site_file(sites.path(), s)));
    gateway.start();
    assert!(
        wait_until(Duration::from_secs(10), || gateway
            .metric("parklight_mqtt_subscriptions_refused_total", "")
            == 3.0),
        "{}",
        gateway.metrics()
    );
    let log = gateway.log();
    assert!(
        log.contains("the broker refused the subscription")
            && log.contains("parklight/v1/south/+/telemetry"),
        "{log}"
    );
    publish(&broker, &[report_of("north", 0)]);
    assert!(wait_until(Duration::from_secs(10), || stored(&gateway) >= 1.0));
    gateway.stop();
}

#[test]
fn replayed_clockless_reports_keep_the_times_of_their_windows() {
    let _serial = one_at_a_time();
    let broker = Mosquitto::start();
    let mut gateway = Gateway::new(&broker.url(), "");
    gateway.start();
    // One node, 5 s windows (the simulator's step), simulated time = real time from
    // `start`. It loses its network at +3 s for 182 s, and restarts without a clock at
    // +4 s: it boots again at about +25 s, offline and clock-less, buffers some 30 windows
    // until it reconnects at about +185 s (the simulator moves in 5 s steps, so up to
    // +190 s), replays them oldest first within seconds, and sets its clock from the
    // gateway's next live acknowledgement (in simulated time, which lags real time by up
    // to a step): its next windows, until +215 s, carry that clock and place the rest.
    let start = jiff::Timestamp::now();
    let state = tempfile::tempdir().unwrap();
    let run = Parklight::spawn(&[
        "sim",
        "--broker",
        &broker.url(),
        "--nodes",
        "1",
        "--interval-s",
        "5",
        "--speed",
        "1",
        "--start",
        &start.to_string(),
        "--duration-s",
        "215",
        "--drain-s",
        "30",
        "--ack-timeout-s",
        "5",
        "--faults",
        "offline@node-00000=+3s/182s,clock@node-00000=+4s",
        "--state",
        &state.path().to_string_lossy(),
        "--fresh",
    ]);
    let finished = run.wait(Duration::from_secs(300));
    assert!(finished.status.success(), "{}", finished.stderr);
    gateway.stop();
    let start = start.as_millisecond();
    let rows = gateway.store().reports_after(0, 100_000).unwrap();
    let boot = rows.last().expect("reports").report.boot;
    let mut clockless: Vec<_> = rows
        .iter()
        .map(|r| &r.report)
        .filter(|r| r.boot == boot && !r.clock_ok)
        .collect();
    clockless.sort_by_key(|r| r.seq);
    assert!(
        clockless.len() >= 30,
        "{} clock-less windows; sim:\n{}",
        clockless.len(),
        finished.stderr
    );
    let replayed = clockless
        .iter()
        .filter(|r| r.received >= start + 180_000)
        .count();
    assert!(replayed >= 30, "{replayed} replayed after the outage");
    let listing: String = rows
        .iter()
        .map(|r| &r.report)
        .map(|r| {
            format!(
                "boot {} seq {} ts +{} ms received +{} ms clock {}\n",
                r.boot,
                r.seq,
                r.ts - start,
                r.received - start,
                r.clock_ok
            )
        })
        .collect();
    assert!(
        rows.iter()
            .any(|r| r.report.boot == boot && r.report.clock_ok),
        "no report of boot {boot} carried the clock set from an ack; stored:\n{listing}"
    );
    // Made while offline, one window apart, where the node was then: not when they
    // arrived, seconds apart, after the outage.
    for pair in clockless.windows(2) {
        let spacing = pair[1].ts - pair[0].ts;
        assert!(
            (4_500..=5_500).contains(&spacing),
            "seq {} to {}: {spacing} ms apart; stored:\n{listing}sim:\n{}",
            pair[0].seq,
            pair[1].seq,
            finished.stderr
        );
    }
    let first = clockless[0];
    assert!(
        (start + 25_000..=start + 36_000).contains(&first.ts),
        "the first window after the restart ends {} ms after the start",
        first.ts - start
    );
    // None ends after it arrived.
    for r in &clockless {
        assert!(r.ts <= r.received, "seq {} ends after it arrived", r.seq);
    }
}

#[test]
fn parklight_nodes_shows_each_node_as_the_store_knows_it() {
    let _serial = one_at_a_time();
    let broker = Mosquitto::start();
    let mut gateway = Gateway::new(&broker.url(), "");
    gateway.start();
    let birth = (
        "parklight/v1/remiseparken/pole-017/status".to_owned(),
        br#"{"v":1,"state":"online","boot":7,"conn":1,"oldest":{"boot":7,"seq":0}}"#.to_vec(),
    );
    // Reports 0 and 5 of boot 7, and 5 says 1 to 4 are gone; a node nobody drew yet.
    let mut gone = report(7, 5);
    gone.1 = String::from_utf8(gone.1)
        .unwrap()
        .replace(
            r#""motion":2"#,
            r#""motion":2,"cfg":4,"oldest":{"boot":7,"seq":5}"#,
        )
        .into_bytes();
    let stray = at("parklight/v1/norrebroparken/pole-new/telemetry", 1, 0);
    publish(&broker, &[birth, report(7, 0), gone, stray]);
    assert!(wait_until(Duration::from_secs(10), || stored(&gateway) >= 3.0));
    gateway.stop();
    let config = gateway.config_path();
    let json = Parklight::spawn(&["nodes", "--config", config.to_str().unwrap(), "--json"])
        .wait(Duration::from_secs(30));
    assert!(json.status.success(), "{}", json.stderr);
    let nodes: Vec<serde_json::Value> = json
        .stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(
        nodes.len(),
        41,
        "40 poles of Remiseparken and the stray one"
    );
    let desired = nodes
        .iter()
        .find(|n| n["node"] == "pole-017")
        .and_then(|n| n["desired_cfg"].as_u64())
        .expect("a desired config for a placed node");
    assert!(desired > 4, "numbered past what a node may run: {desired}");
    let node = |id: &str| nodes.iter().find(|n| n["node"] == id).unwrap().clone();
    let zone = parklight_site::Site::remiseparken()
        .nodes
        .iter()
        .find(|n| n.id == "pole-017")
        .and_then(|n| n.zone.clone());
    assert_eq!(
        node("pole-017"),
        serde_json::json!({
            "node": "pole-017", "site": "remiseparken", "zone": zone, "online": true,
            "boot": 7, "lost": 4, "cfg": 4, "last_report": "2025-11-25T18:00:00Z",
            "desired_cfg": desired
        })
    );
    assert_eq!(
        node("pole-new"),
        serde_json::json!({
            "node": "pole-new", "site": "norrebroparken", "zone": null, "online": null,
            "boot": null, "lost": 0, "cfg": null, "last_report": "2025-11-25T18:00:00Z",
            "desired_cfg": null
        })
    );
    assert_eq!(node("pole-001")["last_report"], serde_json::Value::Null);
    let table = Parklight::spawn(&["nodes", "--config", config.to_str().unwrap()])
        .wait(Duration::from_secs(30));
    assert!(table.status.success(), "{}", table.stderr);
    let line = table
        .stdout
        .lines()
        .find(|l| l.starts_with("pole-017 "))
        .unwrap();
    let columns: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        columns,
        [
            "pole-017",
            "remiseparken",
            zone.as_deref().unwrap(),
            "2025-11-25T18:00:00Z",
            "yes",
            "7",
            "4",
            "4",
            desired.to_string().as_str()
        ]
    );

    // A swapped lamp: the detectors are told to learn it afresh; a node no site file
    // places is refused.
    let config = config.to_str().unwrap();
    let replaced = Parklight::spawn(&["node", "replaced", "pole-017", "--config", config])
        .wait(Duration::from_secs(30));
    assert!(replaced.status.success(), "{}", replaced.stderr);
    let store = gateway.store();
    let (journal, _) = store
        .journal_after(parklight_gateway::store::Position::default(), 10_000, None)
        .unwrap();
    assert!(
        journal.iter().any(|entry| matches!(
            &entry.fact,
            parklight_gateway::detect::Fact::Replaced { node } if node == "pole-017"
        )),
        "the replacement is a fact in the journal"
    );
    let stray = Parklight::spawn(&["node", "replaced", "pole-new", "--config", config])
        .wait(Duration::from_secs(30));
    assert!(!stray.status.success());
    assert!(
        stray
            .stderr
            .contains("pole-new is in none of the site files"),
        "{}",
        stray.stderr
    );
}
