//! `parklight demo`: broker, simulated park and gateway from one command, nothing installed.

use std::time::Duration;

use parklight_protocol::topic::NodeTopic;
use parklight_tests::gateway::http_get;
use parklight_tests::process::Parklight;
use parklight_tests::recorder::Recorder;
use parklight_tests::{free_port, one_at_a_time, wait_until};

#[test]
fn the_demo_runs_the_whole_system_and_stops_cleanly() {
    let _serial = one_at_a_time();
    let (broker_port, http_port) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let demo = Parklight::demo(broker_port, http_port, dir.path());
    assert!(
        wait_until(Duration::from_secs(30), || http_get(http_port, "/metrics")
            .is_some()),
        "no /metrics"
    );
    let watcher = Recorder::start(&format!("mqtt://127.0.0.1:{broker_port}"), false);
    // Reports flow, the gateway stores them and acknowledges them to the nodes.
    assert!(
        wait_until(Duration::from_secs(40), || watcher
            .count(|m| m.is(NodeTopic::Ack))
            >= 40),
        "no acks"
    );
    assert!(watcher.reports().len() >= 40);
    let stored = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("parklight_reports_stored_total "))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    assert!(stored(&http_get(http_port, "/metrics").unwrap()) >= 40.0);
    drop(watcher);
    demo.interrupt();
    let finished = demo.wait(Duration::from_secs(60));
    assert!(
        finished.status.success(),
        "{}\n{}",
        finished.stdout,
        finished.stderr
    );
    assert!(
        finished.stdout.contains("in memory only"),
        "{}",
        finished.stdout
    );
    // The nodes wait for their last acknowledgements before the gateway stops.
    let ending = finished
        .stdout
        .lines()
        .find_map(|line| {
            let (made, acknowledged) = line.split_once(" reports made, ")?;
            let acknowledged = acknowledged.strip_suffix(" acknowledged")?;
            Some((
                made.trim().parse::<u64>().ok()?,
                acknowledged.parse::<u64>().ok()?,
            ))
        })
        .unwrap_or_else(|| panic!("no summary line:\n{}", finished.stdout));
    assert!(ending.0 >= 40, "{ending:?}");
    assert_eq!(ending.0, ending.1, "every report made is acknowledged");
    // (The embedded broker's own errors on every disconnect are off by default.)
    let errors: Vec<&str> = finished
        .stderr
        .lines()
        .filter(|line| line.contains("ERROR") && !line.contains("rumqttd"))
        .collect();
    assert!(
        errors.is_empty(),
        "a clean stop logs no errors: {errors:#?}"
    );
    assert!(dir.path().join("store/parklight.sqlite3").exists());
}
