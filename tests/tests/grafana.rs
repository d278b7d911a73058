//! The Grafana dashboards in `dashboards/` against what the gateway really writes: a
//! lamp failure played into the gateway with a real VictoriaMetrics as its InfluxDB
//! target and as the scraper of its `/metrics`. Every PromQL panel query, with Grafana's
//! variables replaced as the README's table says, must find data, and the right values:
//! the failed zone's status is 3 (dark) while a healthy zone's is 1 (lit). Every
//! measurement, field and tag a Flux panel names must exist in what the gateway wrote.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use parklight_sim::Scenario;
use parklight_site::Site;
use parklight_tests::broker::Mosquitto;
use parklight_tests::gateway::{Gateway, remiseparken_file};
use parklight_tests::process::Parklight;
use parklight_tests::tsdb::{Series, VictoriaMetrics};
use parklight_tests::{one_at_a_time, wait_until};

const SEED: u64 = 3;

/// Each panel query of one flavour: (dashboard file, panel title, query).
fn panel_queries(flavour: &str, key: &str) -> Vec<(String, String, String)> {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../dashboards")
        .join(flavour);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&folder)
        .unwrap_or_else(|e| panic!("{}: {e}", folder.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(
        files.len(),
        4,
        "site overview, zone detail, alerts, gateway health"
    );
    let mut queries = Vec::new();
    for file in files {
        let dashboard: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                let query = target[key]
                    .as_str()
                    .unwrap_or_else(|| panic!("{name}: {panel}"));
                let title = panel["title"].as_str().unwrap().to_owned();
                queries.push((name.clone(), title, query.to_owned()));
            }
        }
    }
    queries
}

/// A PromQL panel query with Grafana's variables replaced (the README's table).
fn substituted(query: &str, zone: &str) -> String {
    [
        ("$__rate_interval", "1m"),
        ("$__interval", "5m"),
        ("$__range", "2d"),
        ("$site", "remiseparken"),
        ("$zone", zone),
    ]
    .iter()
    .fold(query.to_owned(), |q, (variable, value)| {
        q.replace(variable, value)
    })
}

/// The metric names a PromQL query reads.
fn metric_names(query: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (i, _) in query.match_indices("park") {
        let before = query[..i].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let name: String = query[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if name.starts_with("park_") || name.starts_with("parklight_") {
            names.insert(name);
        }
    }
    names
}

/// Every `"value"` after `prefix` in a Flux query.
fn quoted_after(query: &str, prefix: &str) -> Vec<String> {
    query
        .match_indices(prefix)
        .filter_map(|(i, _)| {
            let rest = &query[i + prefix.len()..];
            Some(rest[..rest.find('"')?].to_owned())
        })
        .collect()
}

/// The value of `series` at `at` (Unix ms), if it has one.
fn at(series: &[Series], label: &str, value: &str, when: i64) -> Option<f64> {
    let series = series
        .iter()
        .find(|s| s.labels.get(label).map(String::as_str) == Some(value))?;
    series
        .samples
        .iter()
        .find(|(t, _)| *t == when)
        .map(|(_, v)| *v)
}

#[test]
fn every_panel_query_finds_the_right_values_in_what_the_gateway_wrote() {
    let _serial = one_at_a_time();
    let broker = Mosquitto::start();
    let mut tsdb = VictoriaMetrics::start();
    let influx = format!(
        "[influxdb]\nurl = \"{}\"\norg = \"parks\"\nbucket = \"parklight\"\nbatch_reports = 300\nflush_interval_ms = 200\ntimeout_s = 2\n",
        tsdb.url()
    );
    let mut gateway =
        Gateway::new(&broker.url(), &influx).env("PARKLIGHT_INFLUXDB_TOKEN", "test-token");
    tsdb.scrape(gateway.http_port());
    gateway.start();

    let site = Site::load(&remiseparken_file()).unwrap();
    let now = jiff::Timestamp::now().as_millisecond();
    let story = Scenario::LampFailureInBusyZone
        .story(std::slice::from_ref(&site), now, SEED, true)
        .unwrap();
    let failed = site.node(&story.targets[0]).unwrap().zone.clone().unwrap();
    let state = tempfile::tempdir().unwrap();
    let finished = Parklight::spawn(&[
        "sim",
        "--broker",
        &broker.url(),
        "--state",
        &state.path().to_string_lossy(),
        "--fresh",
        "--scenario",
        "lamp-failure-in-busy-zone",
        "--drain-s",
        "10",
        "--seed",
        &SEED.to_string(),
    ])
    .wait(Duration::from_secs(300));
    assert!(finished.status.success(), "{}", finished.stderr);

    // Everything forwarded, the failed zone's dark windows and its alerts among it, and
    // the alerts' changes counted on /metrics.
    let (start, zone_status) = (story.start_ms.unwrap(), "park_zone_status_code");
    let status_query = format!("{zone_status}{{site=\"remiseparken\"}}");
    let mut status = Vec::new();
    let arrived = wait_until(Duration::from_secs(60), || {
        status = tsdb.query_range(&status_query, start, now, 300);
        gateway.metric("parklight_forwarder_lag_reports", "") == 0.0
            && status.len() == site.zones.len()
            && status
                .iter()
                .any(|s| s.samples.iter().any(|(_, v)| *v == 3.0))
            && !tsdb.export("park_alert_state_code").is_empty()
            && !tsdb.export("parklight_alert_changes_total").is_empty()
    });
    assert!(arrived, "not forwarded: {status:?}\n{}", gateway.log());

    // Every Prometheus panel query finds data over the night or now (the gateway's own
    // metrics are all from the last minute), and every metric it names exists.
    let end = jiff::Timestamp::now().as_millisecond();
    let prometheus = panel_queries("prometheus", "expr");
    assert!(prometheus.len() >= 20, "{prometheus:?}");
    let mut failures = Vec::new();
    for (file, title, query) in &prometheus {
        // A panel's fallback to 0 must not stand in for its data.
        let query = substituted(query.trim_end_matches(" or vector(0)"), &failed);
        let mut found = tsdb.query_range(&query, start, end, 300);
        found.extend(tsdb.query_at(&query, end));
        if !found
            .iter()
            .any(|s| s.samples.iter().any(|(_, v)| v.is_finite()))
        {
            failures.push(format!("{file} {title:?}: nothing for {query}"));
        }
        for name in metric_names(&query) {
            if tsdb.export(&name).is_empty() {
                failures.push(format!("{file} {title:?}: no metric {name}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // The right values: while the failed zone is dark (3), a healthy zone is lit (1), the
    // site counts a dark zone, and the failed zone's lux is below what its class needs.
    // Each target of a panel, queried.
    let query = |file: &str, title: &str, zone: &str| -> Vec<Vec<Series>> {
        let targets: Vec<Vec<Series>> = (prometheus.iter())
            .filter(|(f, t, _)| f == file && t == title)
            .map(|(_, _, query)| tsdb.query_range(&substituted(query, zone), start, end, 300))
            .collect();
        assert!(!targets.is_empty(), "no panel {title:?} in {file}");
        targets
    };
    let site_status = query("site-overview.json", "Zone status", &failed).remove(0);
    let dark_at: Vec<i64> = (site_status.iter())
        .find(|s| s.labels["zone"] == failed)
        .unwrap()
        .samples
        .iter()
        .filter(|(_, v)| *v == 3.0)
        .map(|(t, _)| *t)
        .collect();
    assert!(!dark_at.is_empty(), "{failed} never dark: {site_status:?}");
    let healthy = (site.zones.iter())
        .map(|z| z.id.clone())
        .find(|z| *z != failed && site.nodes.iter().any(|n| n.zone.as_ref() == Some(z)))
        .unwrap();
    let lit_then = (dark_at.iter())
        .filter(|t| at(&site_status, "zone", &healthy, **t) == Some(1.0))
        .count();
    assert!(
        lit_then + 1 >= dark_at.len(),
        "{healthy} lit while {failed} was dark (unobserved at one step at most): {site_status:?}"
    );
    // People passed the failed zone in the dark; none were in the dark in the healthy one.
    let occupied = query("site-overview.json", "Occupied dark minutes", &failed).remove(0);
    let minutes = |zone: &str| {
        (occupied.iter())
            .find(|s| s.labels["zone"] == zone)
            .and_then(|s| s.samples.last())
            .map(|(_, v)| *v)
    };
    assert!(minutes(&failed) > Some(0.0), "{occupied:?}");
    assert_eq!(minutes(&healthy).unwrap_or(0.0), 0.0, "{occupied:?}");
    let dark_zones = query("site-overview.json", "Dark zones", &failed).remove(0);
    assert!(
        dark_at.iter().all(|t| dark_zones[0]
            .samples
            .iter()
            .any(|(s, v)| s == t && *v >= 1.0)),
        "{dark_zones:?}"
    );
    let lux = query("zone-detail.json", "Lux against required", &failed);
    let (average, required) = (&lux[0][0], &lux[1][0]);
    assert_eq!(average.labels["__name__"], "park_zone_lux_avg");
    assert_eq!(required.labels["__name__"], "park_zone_required_avg");
    let t = dark_at[0];
    let below = |s: &Series| s.samples.iter().find(|(at, _)| *at == t).map(|(_, v)| *v);
    assert!(
        below(average).unwrap() < below(required).unwrap(),
        "{lux:?}"
    );
    let (_, _, broker_connects) = (prometheus.iter())
        .find(|(_, title, _)| title == "Broker connects")
        .unwrap();
    let connects = tsdb.query_at(broker_connects, end);
    assert!(connects[0].samples.last().unwrap().1 >= 1.0, "{connects:?}");

    // Every measurement, field and tag a Flux panel names is in what the gateway wrote.
    let flux = panel_queries("influxdb", "query");
    assert!(flux.len() >= 15, "{flux:?}");
    for (file, title, query) in &flux {
        let measurements = quoted_after(query, "r._measurement == \"");
        assert_eq!(measurements.len(), 1, "{file} {title:?}: {query}");
        let fields = quoted_after(query, "r._field == \"");
        assert!(!fields.is_empty(), "{file} {title:?}: {query}");
        let tags: Vec<String> = (query.match_indices("r."))
            .map(|(i, _)| {
                query[i + 2..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect()
            })
            .filter(|tag: &String| !tag.starts_with('_') && !tag.is_empty())
            .filter(|tag| !fields.contains(tag))
            .collect();
        for field in &fields {
            let name = format!("{}_{field}", measurements[0]);
            let series = tsdb.export(&name);
            assert!(!series.is_empty(), "{file} {title:?}: no {name}");
            for tag in &tags {
                assert!(
                    series.iter().any(|s| s.labels.contains_key(tag)),
                    "{file} {title:?}: {name} has no tag {tag}"
                );
            }
        }
    }
    gateway.stop();
}
