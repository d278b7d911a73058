//! Forwarding to InfluxDB 2's write API, served by a real VictoriaMetrics: every stored
//! report arrives with the right tags and values, also after the database was down.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use parklight_tests::broker::Mosquitto;
use parklight_tests::gateway::Gateway;
use parklight_tests::process::Parklight;
use parklight_tests::tsdb::{Series, VictoriaMetrics};
use parklight_tests::{one_at_a_time, summary_number, wait_until};

fn gateway_for(broker: &Mosquitto, tsdb: &VictoriaMetrics) -> Gateway {
    let influx = format!(
        "[influxdb]\nurl = \"{}\"\norg = \"parks\"\nbucket = \"parklight\"\nbatch_reports = 300\nflush_interval_ms = 200\ntimeout_s = 2\n",
        tsdb.url()
    );
    Gateway::new(&broker.url(), &influx).env("PARKLIGHT_INFLUXDB_TOKEN", "test-token")
}

fn simulate(broker: &Mosquitto, duration_s: &str, state: &tempfile::TempDir) -> Parklight {
    Parklight::sim_streaming(&broker.url(), state.path(), duration_s, &[])
}

/// Waits until the forwarder has sent everything the gateway stored.
fn forwarded_everything(gateway: &Gateway, reports: u64) {
    assert!(
        wait_until(Duration::from_secs(60), || gateway
            .metric("parklight_forwarded_reports_total", "")
            >= reports as f64
            && gateway.metric("parklight_forwarder_lag_reports", "") == 0.0),
        "forwarder behind: {}",
        gateway.metrics()
    );
}

/// Waits until node status changes are in their own measurement: for every node a birth
/// (online 1) and its shutdown at the end of the run (online 0).
fn statuses_forwarded(tsdb: &VictoriaMetrics) {
    let complete = |series: &[Series]| {
        series.len() == 40
            && series.iter().all(|s| {
                s.samples.iter().any(|(_, v)| *v == 1.0) && s.samples.iter().any(|(_, v)| *v == 0.0)
            })
    };
    assert!(
        wait_until(Duration::from_secs(30), || complete(
            &tsdb.export("park_light_status_online")
        )),
        "status changes not forwarded: {:?}",
        tsdb.export("park_light_status_online")
    );
}

/// Asserts that VictoriaMetrics holds every stored report of `site`, with its tags and
/// every field's value.
fn assert_every_report_in_the_database(gateway: &Gateway, tsdb: &VictoriaMetrics, site: &str) {
    let store = gateway.store();
    let rows = store.reports_after(0, usize::MAX).unwrap();
    // (field, node, zone tag) → samples.
    type Key = (String, String, Option<String>);
    let mut by_series: HashMap<Key, BTreeMap<i64, f64>> = HashMap::new();
    for series in tsdb.export("park_light_(lux_.*|motion|lamp_.*|power_w|clock_ok)") {
        let node = series.labels.get("node").cloned().unwrap_or_default();
        let name = series.labels["__name__"].clone();
        assert_eq!(
            series.labels.get("site").map(String::as_str),
            Some(site),
            "{series:?}"
        );
        by_series
            .entry((name, node, series.labels.get("zone").cloned()))
            .or_default()
            .extend(series.samples);
    }
    let bit = |on: bool| if on { 1.0 } else { 0.0 };
    for row in &rows {
        let (node, r) = (row.node.as_str(), &row.report);
        let value = |field: &str| {
            by_series
                .get(&(
                    format!("park_light_{field}"),
                    node.to_owned(),
                    r.zone.clone(),
                ))
                .and_then(|s| s.get(&r.ts))
                .copied()
        };
        let expected = [
            ("lux_avg", r.lux.map(|l| l.avg)),
            ("lux_min", r.lux.map(|l| l.min)),
            ("lux_max", r.lux.map(|l| l.max)),
            ("motion", Some(f64::from(r.motion))),
            ("lamp_level", Some(f64::from(r.lamp_level))),
            ("lamp_on", Some(bit(r.lamp_on))),
            ("power_w", r.power_w),
            ("clock_ok", Some(bit(r.clock_ok))),
        ];
        for (field, expected) in expected {
            assert_eq!(
                value(field),
                expected,
                "{field} of {node} at {} (zone {:?})",
                r.ts,
                r.zone
            );
        }
    }
    let motion_samples: usize = by_series
        .iter()
        .filter(|((name, _, _), _)| name == "park_light_motion")
        .map(|(_, s)| s.len())
        .sum();
    assert_eq!(motion_samples, rows.len(), "one point per report");
}

#[test]
fn every_report_reaches_the_database_with_its_tags_and_values() {
    let _serial = one_at_a_time();
    let broker = Mosquitto::start();
    let tsdb = VictoriaMetrics::start();
    let mut gateway = gateway_for(&broker, &tsdb);
    gateway.start();
    let state = tempfile::tempdir().unwrap();
    let finished = simulate(&broker, "15", &state).wait(Duration::from_secs(120));
    assert!(finished.status.success(), "{}", finished.stderr);
    let reports = summary_number(&finished.stdout, "reports");
    assert_eq!(summary_number(&finished.stdout, "unacknowledged"), 0);
    forwarded_everything(&gateway, reports);
    statuses_forwarded(&tsdb);
    gateway.stop();
    assert_eq!(
        gateway.store().report_count().unwrap(),
        reports,
        "stored exactly once"
    );
    assert_every_report_in_the_database(&gateway, &tsdb, "remiseparken");
    assert!(!gateway.log().contains("test-token"), "the token is logged");
}

#[test]
fn a_database_outage_stops_nothing_and_is_caught_up() {
    let _serial = one_at_a_time();
    let broker = Mosquitto::start();
    let mut tsdb = VictoriaMetrics::start();
    let mut gateway = gateway_for(&broker, &tsdb);
    gateway.start();
    let state = tempfile::tempdir().unwrap();
    let run = simulate(&broker, "30", &state);
    assert!(wait_until(Duration::from_secs(30), || gateway
        .metric("parklight_forwarded_reports_total", "")
        >= 100.0));
    tsdb.stop();
    let stored_at_outage = gateway.metric("parklight_reports_stored_total", "");
    std::thread::sleep(Duration::from_secs(8));
    assert!(
        gateway.metric("parklight_reports_stored_total", "") >= stored_at_outage + 100.0,
        "ingest went on during the outage"
    );
    assert!(gateway.metric("parklight_forwarder_errors_total", "kind=\"retry\"") >= 1.0);
    tsdb.resume();
    let finished = run.wait(Duration::from_secs(120));
    assert!(finished.status.success(), "{}", finished.stderr);
    let reports = summary_number(&finished.stdout, "reports");
    forwarded_everything(&gateway, reports);
    statuses_forwarded(&tsdb);
    gateway.stop();
    assert_every_report_in_the_database(&gateway, &tsdb, "remiseparken");
}

#[test]
fn a_node_in_no_site_file_is_tagged_with_the_site_its_topic_names() {
    let _serial = one_at_a_time();
    let broker = Mosquitto::start();
    let tsdb = VictoriaMetrics::start();
    let mut gateway = gateway_for(&broker, &tsdb);
    gateway.start();
    // A pole installed in another park before anyone drew it in a site file.
    let reports: Vec<(String, Vec<u8>)> = (0..5)
        .map(|seq| {
            (
                "parklight/v1/norrebroparken/pole-new/telemetry".to_owned(),
                format!(
                    r#"{{"v":1,"boot":1,"seq":{seq},"ts":{},"period_s":60,"lux":{{"avg":2.5,"min":1.5,"max":3.5}},"motion":{seq},"lamp":{{"on":true,"level":60,"power_w":20.5}}}}"#,
                    1_764_093_600_000 + i64::from(seq) * 60_000
                )
                .into_bytes(),
            )
        })
        .collect();
    parklight_tests::publish(&broker.url(), &reports);
    forwarded_everything(&gateway, 5);
    gateway.stop();
    let series = tsdb.export("park_light_motion");
    assert_eq!(series.len(), 1, "{series:?}");
    assert_eq!(
        series[0].labels.get("site").map(String::as_str),
        Some("norrebroparken")
    );
    assert!(!series[0].labels.contains_key("zone"), "{series:?}");
    assert_every_report_in_the_database(&gateway, &tsdb, "norrebroparken");
}
