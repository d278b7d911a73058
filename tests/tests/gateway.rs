//! The gateway (`parklight run`) against a real Mosquitto and the real simulator: every
//! report stored exactly once through crashes, and bad input refused and counted.

use std::collections::BTreeMap;
use std::time::Duration;

use parklight_protocol::Reject;
use parklight_tests::broker::Mosquitto;
use parklight_tests::gateway::Gateway;
use parklight_tests::process::{Finished, Parklight};
use parklight_tests::recorder::Recorder;
use parklight_tests::{assert_consecutive, one_at_a_time, summary_number, wait_until};
use rand::RngExt;

fn sim(broker: &Mosquitto, nodes: &str, duration_s: &str, state: &tempfile::TempDir) -> Parklight {
    Parklight::sim_streaming(&broker.url(), state.path(), duration_s, &["--nodes", nodes])
}

/// The sim ended with every report acknowledged, and the store holds each exactly once.
fn assert_stored_exactly_once(finished: &Finished, gateway: &Gateway, nodes: usize) {
    assert!(finished.status.success(), "{}", finished.stderr);
    assert_eq!(
        summary_number(&finished.stdout, "unacknowledged"),
        0,
        "{}",
        finished.stdout
    );
    let ids = gateway.store().report_ids().unwrap();
    assert_eq!(
        ids.len() as u64,
        summary_number(&finished.stdout, "reports"),
        "stored once each"
    );
    assert_eq!(
        ids.iter()
            .map(|(n, _, _)| n)
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        nodes
    );
    assert_consecutive(ids.iter().map(|(n, b, s)| (n.as_str(), *b, *s)));
}

#[test]
fn every_report_is_stored_once_while_the_gateway_is_killed_again_and_again() {
    let _serial = one_at_a_time();
    let broker = Mosquitto::start();
    let mut gateway = Gateway::new(&broker.url(), "");
    gateway.start();
    let state = tempfile::tempdir().unwrap();
    let run = sim(&broker, "20", "45", &state);
    let mut rng = rand::rng();
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(rng.random_range(3_000..7_000)));
        gateway.kill();
        std::thread::sleep(Duration::from_millis(rng.random_range(200..2_000)));
        gateway.start();
    }
    let finished = run.wait(Duration::from_secs(180));
    gateway.stop();
    assert_stored_exactly_once(&finished, &gateway, 20);
}

#[test]
fn every_report_is_stored_once_when_the_broker_loses_everything() {
    let _serial = one_at_a_time();
    let mut broker = Mosquitto::start();
    let mut gateway = Gateway::new(&broker.url(), "");
    gateway.start();
    let state = tempfile::tempdir().unwrap();
    let run = sim(&broker, "20", "40", &state);
    assert!(wait_until(Duration::from_secs(30), || gateway
        .metric("parklight_reports_stored_total", "")
        >= 200.0));
    broker.kill();
    std::thread::sleep(Duration::from_secs(2));
    broker.restart();
    let finished = run.wait(Duration::from_secs(180));
    assert!(
        gateway.metric("parklight_mqtt_connects_total", "") >= 2.0,
        "the gateway reconnected"
    );
    gateway.stop();
    assert_stored_exactly_once(&finished, &gateway, 20);
}

struct Vector {
    topic: String,
    payload: Vec<u8>,
    reason: Reject,
}

/// The reject vectors of the protocol crate whose topic the gateway subscribes to.
fn reject_vectors() -> Vec<Vector> {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../firmware/protocol/tests/vectors");
    let mut vectors = Vec::new();
    for file in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(file.unwrap().path()).unwrap();
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        for case in doc["cases"].as_array().unwrap() {
            let topic = case["topic"].as_str().unwrap();
            let levels: Vec<&str> = topic.split('/').collect();
            let subscribed = levels.len() == 5
                && levels[..2] == ["parklight", "v1"]
                && ["telemetry", "status", "event"].contains(&levels[4]);
            if case["expect"] != "reject" || !subscribed {
                continue;
            }
            let payload = match case.get("payload_b64") {
                Some(b64) => base64_decode(b64.as_str().unwrap()),
                None => case["payload"].as_str().unwrap().as_bytes().to_vec(),
            };
            vectors.push(Vector {
                topic: topic.to_owned(),
                payload,
                reason: Reject::from_code(case["reason"].as_str().unwrap()).unwrap(),
            });
        }
    }
    vectors
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("base64 payload")
}

fn publish(broker: &Mosquitto, messages: &[(String, Vec<u8>)]) {
    parklight_tests::publish(&broker.url(), messages);
}

fn report(boot: u32, seq: u32, lux_avg: f64) -> (String, Vec<u8>) {
    let payload = format!(
        r#"{{"v":1,"boot":{boot},"seq":{seq},"ts":1764093600000,"period_s":60,"lux":{{"avg":{lux_avg},"min":0,"max":9}},"motion":0,"lamp":{{"on":true,"level":80}}}}"#
    );
    (
        "parklight/v1/remiseparken/pole-017/telemetry".into(),
        payload.into_bytes(),
    )
}

#[test]
fn bad_input_is_refused_counted_kept_and_acknowledged_past() {
    let _serial = one_at_a_time();
    let broker = Mosquitto::start();
    let mut gateway = Gateway::new(&broker.url(), "");
    gateway.start();
    let watcher = Recorder::start(&broker.url(), false);
    let vectors = reject_vectors();
    assert!(
        vectors.len() >= 40,
        "{} reject vectors on subscribed topics",
        vectors.len()
    );
    let mut expected: BTreeMap<Reject, usize> = BTreeMap::new();
    for vector in &vectors {
        *expected.entry(vector.reason).or_default() += 1;
    }
    publish(
        &broker,
        &vectors
            .iter()
            .map(|v| (v.topic.clone(), v.payload.clone()))
            .collect::<Vec<_>>(),
    );
    // A node's report 1 is unreadable past its identity; 0 and 2 are fine.
    publish(
        &broker,
        &[report(50, 0, 5.0), report(50, 1, -5.0), report(50, 2, 5.0)],
    );

    let total = vectors.len() as f64 + 1.0;
    assert!(
        wait_until(Duration::from_secs(20), || gateway
            .metric("parklight_reports_rejected_total", "")
            >= total),
        "rejects counted: {}",
        gateway.metrics()
    );
    for (reason, count) in &expected {
        let extra = usize::from(*reason == Reject::OutOfRange);
        let counted = gateway.metric(
            "parklight_reports_rejected_total",
            &format!("reason=\"{}\"", reason.code()),
        );
        assert_eq!(counted as usize, count + extra, "{reason}");
    }
    // The node is acknowledged past its rejected report.
    assert!(wait_until(Duration::from_secs(10), || watcher
        .messages()
        .iter()
        .any(|m| m.topic.ends_with("pole-017/ack")
            && parklight_protocol::Message::decode(&m.payload)
                .is_ok_and(
                    |a: parklight_protocol::Ack| a.boot == 50 && a.seq == 2
                ))));
    // Still running and storing.
    publish(&broker, &[report(50, 3, 5.0)]);
    assert!(wait_until(Duration::from_secs(10), || gateway
        .metric("parklight_reports_stored_total", "")
        >= 3.0));
    gateway.stop();

    let listing = Parklight::spawn(&[
        "dead-letters",
        "--config",
        gateway.config_path().to_str().unwrap(),
        "--limit",
        "1000",
    ])
    .wait(Duration::from_secs(30));
    assert!(listing.status.success(), "{}", listing.stderr);
    for reason in expected.keys() {
        assert!(
            listing.stdout.contains(reason.code()),
            "{reason} not among the dead letters:\n{}",
            listing.stdout
        );
    }
    assert!(
        listing
            .stdout
            .contains("out_of_range (avg) pole-017 boot 50 seq 1"),
        "{}",
        listing.stdout
    );
    assert_eq!(gateway.store().report_count().unwrap(), 3);
}

#[test]
fn the_gateway_logs_in_over_tls_and_checks_the_broker_certificate() {
    let _serial = one_at_a_time();
    let broker = Mosquitto::secured("parklight-gateway", "s3cret park");
    let secured = |ca: Option<&std::path::Path>, password: &str| {
        let mut gateway = Gateway::new(&broker.secured_url(), "")
            .env("PARKLIGHT_MQTT__USERNAME", "parklight-gateway")
            .env("PARKLIGHT_MQTT__PASSWORD_ENV", "TEST_MQTT_PASSWORD")
            .env("TEST_MQTT_PASSWORD", password);
        if let Some(ca) = ca {
            gateway = gateway.env("PARKLIGHT_MQTT__CA_FILE", ca.to_str().unwrap());
        }
        gateway.start();
        gateway
    };
    let mut gateway = secured(Some(&broker.ca_path()), "s3cret park");
    assert!(
        wait_until(Duration::from_secs(20), || gateway
            .metric("parklight_mqtt_connects_total", "")
            >= 1.0),
        "no connection; log:\n{}",
        gateway.log()
    );
    // Nodes publish on the open listener; the gateway reads on the secured one.
    publish(&broker, &[report(1, 0, 3.5), report(1, 1, 3.5)]);
    assert!(wait_until(Duration::from_secs(20), || gateway
        .metric("parklight_reports_stored_total", "")
        >= 2.0));
    gateway.stop();
    assert_eq!(gateway.store().report_count().unwrap(), 2);
    assert!(!gateway.log().contains("s3cret"), "the password is logged");

    // A broker it cannot verify (system roots only), or a wrong password: no session.
    for (ca, password, said) in [
        (None, "s3cret park", "certificate"),
        (Some(broker.ca_path()), "wrong", "NotAuthorized"),
    ] {
        let mut refused = secured(ca.as_deref(), password);
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(refused.metric("parklight_mqtt_connects_total", ""), 0.0);
        assert!(refused.log().contains(said), "{said}: {}", refused.log());
        refused.stop();
    }
}

#[test]
fn a_backlog_waits_in_the_broker_not_in_the_gateway() {
    let _serial = one_at_a_time();
    let broker = Mosquitto::start();
    let mut gateway =
        Gateway::new(&broker.url(), "").env("PARKLIGHT_INGEST__QUEUE_MAX_MESSAGES", "100");
    // A first start makes the broker keep the gateway's session while it is down.
    gateway.start();
    gateway.stop();
    let backlog: Vec<_> = (0..20_000).map(|seq| report(1, seq, 3.5)).collect();
    publish(&broker, &backlog);
    gateway.start();
    assert!(
        wait_until(Duration::from_secs(120), || gateway
            .metric("parklight_reports_stored_total", "")
            >= 20_000.0),
        "stored {}",
        gateway.metric("parklight_reports_stored_total", "")
    );
    assert!(gateway.metric("parklight_ingest_queue_full_total", "") > 0.0);
    let commits = gateway.metric("parklight_commit_messages_count", "");
    assert_eq!(
        gateway.metric("parklight_commit_messages_bucket", "le=\"100\""),
        commits,
        "no commit held more than the queue may"
    );
    gateway.stop();
    let ids = gateway.store().report_ids().unwrap();
    assert_eq!(ids.len(), 20_000);
    assert_consecutive(ids.iter().map(|(n, b, s)| (n.as_str(), *b, *s)));
}

#[test]
fn a_configuration_with_errors_is_refused_with_every_problem() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[mqtt]\nurl = \"ftp://broker\"\n\n[storage]\ncommit_max_wait_ms = 5000\nsize = 1\n\n[[sites]]\nfile = \"nowhere.geojson\"\n",
    )
    .unwrap();
    for command in ["check", "run"] {
        let finished = Parklight::spawn(&[command, "--config", path.to_str().unwrap()])
            .wait(Duration::from_secs(30));
        assert_eq!(finished.status.code(), Some(1), "{command}");
        for expected in [
            "bad.toml:2: [mqtt] url",
            "bad.toml:6: [storage]: unknown field `size`",
            "nowhere.geojson: cannot read",
        ] {
            assert!(
                finished.stderr.contains(expected),
                "{command}: {expected:?} missing in:\n{}",
                finished.stderr
            );
        }
    }
    // Credentials in the URL would be logged: refused, and not repeated in the refusal.
    std::fs::write(
        &path,
        "[mqtt]\nurl = \"mqtt://gateway:s3cret-pw@127.0.0.1:1883\"\n\n[[sites]]\nfile = \"nowhere.geojson\"\n",
    )
    .unwrap();
    for command in ["check", "run"] {
        let finished = Parklight::spawn(&[command, "--config", path.to_str().unwrap()])
            .wait(Duration::from_secs(30));
        assert_eq!(finished.status.code(), Some(1), "{command}");
        assert!(
            finished
                .stderr
                .contains("bad.toml:2: [mqtt] url: no credentials in the URL"),
            "{command}: {}",
            finished.stderr
        );
        assert!(
            !finished.stderr.contains("s3cret-pw"),
            "{}",
            finished.stderr
        );
    }
    // No site file: it runs (storing every report), and says what that means.
    std::fs::write(&path, "[storage]\npath = \"data\"\n").unwrap();
    let warned = Parklight::spawn(&["check", "--config", path.to_str().unwrap()])
        .wait(Duration::from_secs(30));
    assert!(warned.status.success(), "{}", warned.stderr);
    assert!(
        warned.stderr.contains(
            "warning: no [[sites]]: every report is stored, but no node belongs to a zone"
        ),
        "{}",
        warned.stderr
    );
    let good = Parklight::spawn(&[
        "check",
        "--config",
        Gateway::new("mqtt://127.0.0.1:1", "")
            .config_path()
            .to_str()
            .unwrap(),
    ])
    .wait(Duration::from_secs(30));
    assert!(good.status.success(), "{}", good.stderr);
}
