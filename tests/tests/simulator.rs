//! The simulator against a real Mosquitto: the real `parklight sim` binary, observed by a
//! subscriber that can play the gateway's acknowledging part.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use parklight_core::solar::previous_sunset;
use parklight_protocol::ReportId;
use parklight_protocol::status::{OfflineReason, Status};
use parklight_protocol::topic::NodeTopic;
use parklight_site::Site;
use parklight_tests::broker::Mosquitto;
use parklight_tests::process::{Finished, Parklight};
use parklight_tests::recorder::Recorder;
use parklight_tests::{assert_consecutive, one_at_a_time, summary_number, wait_until};

const MINUTE: i64 = 60_000;

fn rfc3339(unix_ms: i64) -> String {
    jiff::Timestamp::from_millisecond(unix_ms)
        .unwrap()
        .to_string()
}

/// Waits for a `parklight sim` run to end well, with every report acknowledged.
fn ends_all_acknowledged(sim: Parklight, timeout: Duration) -> Finished {
    let finished = sim.wait(timeout);
    assert!(finished.status.success(), "{}", finished.stderr);
    assert_eq!(
        summary_number(&finished.stdout, "unacknowledged"),
        0,
        "{}",
        finished.stdout
    );
    finished
}

/// Asserts that the gateway got every report of every node exactly as the simulator made
/// them: `nodes` nodes, consecutive seqs, as many distinct reports as the summary says.
fn assert_every_report_arrived(
    gateway: &Recorder,
    finished: &Finished,
    nodes: usize,
) -> HashMap<String, BTreeSet<ReportId>> {
    let distinct = gateway.distinct_reports();
    assert_eq!(distinct.len(), nodes, "every node reported");
    assert_consecutive(
        distinct
            .iter()
            .flat_map(|(node, ids)| ids.iter().map(move |id| (node.as_str(), id.boot, id.seq))),
    );
    let total: u64 = distinct.values().map(|ids| ids.len() as u64).sum();
    assert_eq!(
        total,
        summary_number(&finished.stdout, "reports"),
        "every report reached the gateway"
    );
    distinct
}

#[test]
fn remiseparken_at_dusk_lights_every_zone_and_reports_a_lost_connection() {
    let _serial = one_at_a_time();
    let broker = Mosquitto::start();
    let gateway = Recorder::start(&broker.url(), true);
    let site = Site::remiseparken();
    let now = jiff::Timestamp::now().as_millisecond();
    // An hour before a sunset at least an hour and a half past, so two simulated hours
    // at 60x stay behind the real clock.
    let mut sunset = previous_sunset(now, site.lat, site.lon).unwrap();
    if now - sunset < 90 * MINUTE {
        sunset = previous_sunset(sunset - 12 * 60 * MINUTE, site.lat, site.lon).unwrap();
    }
    let start = sunset - 60 * MINUTE;
    let state = tempfile::tempdir().unwrap();
    let url = broker.url();
    let start_text = rfc3339(start);
    let sim = Parklight::sim(
        &url,
        state.path(),
        &[
            "--start",
            &start_text,
            "--duration-s",
            "120",
            "--drain-s",
            "20",
            "--seed",
            "7",
            "--faults",
            "offline@pole-007=+80m/5m",
        ],
    );

    // A client that connects mid-run gets every node's birth from the retained store.
    assert!(wait_until(Duration::from_secs(30), || gateway
        .count(|m| m.is(NodeTopic::Telemetry))
        >= 40 * 10));
    let late = Recorder::start(&url, false);
    assert!(wait_until(Duration::from_secs(10), || late
        .count(|m| m.retained && m.is(NodeTopic::Status))
        >= 40));
    let retained_online: BTreeSet<String> = late
        .messages()
        .iter()
        .filter(|m| m.retained && m.is(NodeTopic::Status))
        .filter(|m| {
            matches!(
                parklight_protocol::Message::decode(&m.payload),
                Ok(Status::Online(_))
            )
        })
        .filter_map(|m| m.node())
        .collect();
    assert_eq!(
        retained_online.len(),
        40,
        "retained births: {retained_online:?}"
    );
    drop(late);

    let finished = ends_all_acknowledged(sim, Duration::from_secs(200));
    let distinct = assert_every_report_arrived(&gateway, &finished, 40);
    let reports = gateway.reports();
    for (node, ids) in &distinct {
        assert!(
            ids.len() >= 110,
            "{node}: {} reports in two simulated hours",
            ids.len()
        );
    }

    // After dusk every lamp is on and every zone reads above its class.
    let dark = (sunset + 40 * MINUTE) as u64;
    let mut zone_lux: HashMap<&str, Vec<f64>> = HashMap::new();
    for (node, report, _) in reports.iter().filter(|(_, r, _)| r.ts >= dark) {
        assert!(
            report.lamp.on && report.lamp.level == 100,
            "{node} at {}: lamp {:?}",
            rfc3339(report.ts as i64),
            report.lamp
        );
        let placement = site.nodes.iter().find(|n| &n.id == node).unwrap();
        zone_lux
            .entry(placement.zone.as_deref().unwrap())
            .or_default()
            .push(report.lux.unwrap().avg);
    }
    assert_eq!(
        zone_lux.len(),
        site.zones.len(),
        "every zone has reports after dusk"
    );
    for (zone, lux) in &zone_lux {
        let average = lux.iter().sum::<f64>() / lux.len() as f64;
        let required = site.zone(zone).unwrap().requirement.avg_lux;
        assert!(
            average >= required,
            "{zone}: {average:.1} lx < {required} lx"
        );
    }
    // Before sunset, the lamps were off by day.
    assert!(
        reports
            .iter()
            .any(|(_, r, _)| (r.ts as i64) < sunset - 20 * MINUTE && !r.lamp.on)
    );

    // The cut connection: the broker published the will of boot 1, connection 1; the node
    // came back as connection 2; at the end every node said it was shutting down.
    let statuses = gateway.statuses("pole-007");
    let will = statuses
        .iter()
        .position(|s| matches!(s, Status::Offline(o) if o.reason == OfflineReason::Lost));
    let will = will.unwrap_or_else(|| panic!("no will from pole-007: {statuses:?}"));
    assert!(
        matches!(&statuses[will], Status::Offline(o) if o.boot == 1 && o.conn == 1),
        "{statuses:?}"
    );
    assert!(
        statuses[will..]
            .iter()
            .any(|s| matches!(s, Status::Online(b) if b.boot == 1 && b.conn == 2)),
        "{statuses:?}"
    );
    for placement in &site.nodes {
        let statuses = gateway.statuses(&placement.id);
        let log: Vec<&str> = finished
            .stderr
            .lines()
            .filter(|l| l.contains(&placement.id))
            .collect();
        assert!(
            matches!(statuses.last(), Some(Status::Offline(o)) if o.reason == OfflineReason::Shutdown),
            "{}: {statuses:?}\n{log:#?}",
            placement.id
        );
    }
}

#[test]
fn unacknowledged_reports_are_replayed_and_resent_until_acknowledged() {
    let _serial = one_at_a_time();
    let broker = Mosquitto::start();
    let gateway = Recorder::start(&broker.url(), false);
    let state = tempfile::tempdir().unwrap();
    let url = broker.url();
    let sim = Parklight::sim(
        &url,
        state.path(),
        &[
            "--nodes",
            "1",
            "--ack-timeout-s",
            "4",
            "--duration-s",
            "40",
            "--drain-s",
            "15",
            "--faults",
            "offline@node-00000=+3m/2m",
        ],
    );
    let sent = |seq: u32| {
        gateway.count(|m| {
            m.is(NodeTopic::Telemetry)
                && parklight_protocol::salvage_report_id(&m.payload).is_some_and(|id| id.seq == seq)
        })
    };

    // Reconnected as connection 2, the node republishes what it sent before the cut.
    assert!(wait_until(Duration::from_secs(20), || gateway
        .statuses("node-00000")
        .iter()
        .any(|s| matches!(s, Status::Online(b) if b.conn == 2))));
    assert!(
        wait_until(Duration::from_secs(5), || sent(0) >= 2),
        "seq 0 replayed after reconnecting"
    );
    let replay: Vec<u32> = {
        let messages = gateway.messages();
        let birth = messages
            .iter()
            .rposition(|m| m.is(NodeTopic::Status))
            .unwrap();
        messages[birth..]
            .iter()
            .filter(|m| m.is(NodeTopic::Telemetry))
            .filter_map(|m| parklight_protocol::salvage_report_id(&m.payload))
            .map(|id| id.seq)
            .take(3)
            .collect()
    };
    assert_eq!(replay, [0, 1, 2], "oldest first");

    // Still unacknowledged after the ack timeout: sent yet again.
    assert!(
        wait_until(Duration::from_secs(10), || sent(0) >= 3),
        "seq 0 resent after the ack timeout"
    );

    // Acknowledged, it stops.
    gateway.set_acking(true);
    assert!(wait_until(Duration::from_secs(10), || {
        let messages = gateway.messages();
        messages.iter().any(|m| m.is(NodeTopic::Ack))
    }));
    std::thread::sleep(Duration::from_secs(2));
    let after_ack = sent(0);
    std::thread::sleep(Duration::from_secs(10)); // 2.5 ack timeouts
    assert_eq!(sent(0), after_ack, "no resends once acknowledged");

    let finished = ends_all_acknowledged(sim, Duration::from_secs(90));
    assert_every_report_arrived(&gateway, &finished, 1);
}

#[test]
fn reports_survive_a_broker_that_loses_everything() {
    let _serial = one_at_a_time();
    let mut broker = Mosquitto::start();
    let gateway = Recorder::start(&broker.url(), true);
    let state = tempfile::tempdir().unwrap();
    let url = broker.url();
    let sim = Parklight::sim(
        &url,
        state.path(),
        &[
            "--nodes",
            "10",
            "--ack-timeout-s",
            "3",
            "--duration-s",
            "30",
            "--drain-s",
            "40",
        ],
    );
    assert!(wait_until(Duration::from_secs(20), || gateway
        .count(|m| m.is(NodeTopic::Ack))
        >= 50));
    // SIGKILL, persistence off: in-flight reports and retained acks are gone.
    broker.kill();
    std::thread::sleep(Duration::from_secs(2));
    broker.restart();

    let finished = ends_all_acknowledged(sim, Duration::from_secs(120));
    assert_every_report_arrived(&gateway, &finished, 10);
}

#[test]
fn a_scenario_file_starts_from_a_built_in_story_and_a_bad_one_is_refused_with_its_reason() {
    let _serial = one_at_a_time();
    let broker = Mosquitto::start();
    let gateway = Recorder::start(&broker.url(), true);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("evening.toml");
    std::fs::write(
        &file,
        "base = \"lamp-failure-in-busy-zone\"\nduration_s = 4\nno_meters = true\nfaults = \"dead@pole-001=+1m\"\n",
    )
    .unwrap();
    let (url, state) = (broker.url(), dir.path().to_string_lossy().into_owned());
    let play = |scenario: &std::path::Path| {
        let scenario = scenario.to_string_lossy().into_owned();
        Parklight::spawn(&[
            "sim",
            "--broker",
            &url,
            "--state",
            &state,
            "--fresh",
            "--drain-s",
            "5",
            "--scenario",
            &scenario,
        ])
        .wait(Duration::from_secs(60))
    };
    let finished = play(&file);
    assert!(finished.status.success(), "{}", finished.stderr);
    assert!(
        finished.stderr.contains("lose their lamps"),
        "the base story: {}",
        finished.stderr
    );
    let reports: Vec<_> = (gateway.messages().into_iter())
        .filter(|m| m.is(NodeTopic::Telemetry))
        .collect();
    assert!(reports.len() > 40, "{} reports", reports.len());
    let text =
        |m: &parklight_tests::recorder::Received| String::from_utf8_lossy(&m.payload).into_owned();
    assert!(
        reports.iter().all(|m| !text(m).contains("power_w")),
        "no meters"
    );
    assert!(
        (reports.iter())
            .any(|m| m.node().as_deref() == Some("pole-001") && text(m).contains("\"lux\":null")),
        "its own fault added: pole-001's sensor is dead"
    );

    std::fs::write(&file, "base = \"healthy-night\"\nspeeed = 3\n").unwrap();
    let refused = play(&file);
    assert!(!refused.status.success());
    assert!(
        refused.stderr.contains("unknown field `speeed`"),
        "{}",
        refused.stderr
    );
}

/// `parklight sim --backfill`: two days of every Remiseparken node stored through the
/// gateway's own code, no broker; lamps lit at night only, people counted, and the
/// detectors judge the nights lit when the gateway starts.
#[test]
fn a_backfill_stores_days_of_history_that_the_detectors_judge() {
    let _serial = one_at_a_time();
    let broker = Mosquitto::start();
    let mut gateway = parklight_tests::gateway::Gateway::new(&broker.url(), "");
    let config = gateway.config_path().to_string_lossy().into_owned();
    let refused = Parklight::spawn(&["sim", "--backfill", "2w", "--config", &config])
        .wait(Duration::from_secs(30));
    assert!(
        !refused.status.success() && refused.stderr.contains("--backfill"),
        "{}",
        refused.stderr
    );
    let done = Parklight::spawn(&["sim", "--backfill", "2d", "--config", &config])
        .wait(Duration::from_secs(120));
    assert!(done.status.success(), "{}", done.stderr);
    let again = Parklight::spawn(&["sim", "--backfill", "1d", "--config", &config])
        .wait(Duration::from_secs(30));
    assert!(
        !again.status.success() && again.stderr.contains("already holds reports"),
        "{}",
        again.stderr
    );
    let site = Site::remiseparken();
    let per_node = 2 * 24 * 60;
    let stored: u64 = done
        .stdout
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (stored as i64 - (site.nodes.len() * per_node) as i64).abs() <= site.nodes.len() as i64,
        "{}",
        done.stdout
    );
    let store = gateway.store();
    let now = jiff::Timestamp::now().as_millisecond();
    for node in &site.nodes {
        let reports = store
            .reports_between(parklight_gateway::store::Selector::Node(&node.id), 0, now)
            .unwrap();
        let night = |r: &&parklight_gateway::store::ReportRow| {
            parklight_core::solar::altitude_deg(r.ts, site.lat, site.lon) < -1.0
        };
        assert!(
            reports
                .iter()
                .filter(night)
                .all(|r| r.lamp_on && r.lamp_level >= 80),
            "{}",
            node.id
        );
        assert!(
            reports
                .iter()
                .filter(|r| !night(r))
                .filter(|r| parklight_core::solar::altitude_deg(r.ts, site.lat, site.lon) > 1.0)
                .all(|r| !r.lamp_on),
            "{}",
            node.id
        );
        assert!(
            reports.iter().map(|r| u64::from(r.motion)).sum::<u64>() > 0,
            "{}",
            node.id
        );
    }
    drop(store);
    gateway.start();
    let caught_up = wait_until(Duration::from_secs(120), || {
        let store = gateway.store();
        store.detected().unwrap().report >= store.last_report_id().unwrap()
    });
    assert!(caught_up, "{}", gateway.log());
    let store = gateway.store();
    let windows = store
        .site_windows(&site.id, now - 2 * 86_400_000, now)
        .unwrap();
    let count = |status| windows.iter().filter(|w| w.status == status).count();
    use parklight_gateway::detect::Status;
    assert!(count(Status::Lit) > 100, "lit windows at night");
    assert_eq!(count(Status::Dark), 0, "{windows:#?}");
    gateway.stop();
}
