//! Alerts end to end: the detection issue's scenarios through a real Mosquitto and the
//! real `parklight` binary, the alerts topic recorded, and a webhook receiver run by
//! the test that verifies every signature.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use parklight_protocol::alert::{Alert, AlertKind, AlertState, Severity};
use parklight_sim::Scenario;
use parklight_site::Site;
use parklight_tests::broker::Mosquitto;
use parklight_tests::gateway::{Gateway, remiseparken_file};
use parklight_tests::process::Parklight;
use parklight_tests::recorder::Recorder;
use parklight_tests::tsdb::VictoriaMetrics;
use parklight_tests::webhook::{Mode, WebhookReceiver, verify};
use parklight_tests::{one_at_a_time, wait_until};

const SEED: u64 = 7;
const SECRET: &str = "test-webhook-secret";
/// The gateway's keepalive, short enough for a 15 s roll-up (1.5 times it at least).
const KEEP_ALIVE: (&str, &str) = ("PARKLIGHT_MQTT__KEEP_ALIVE_S", "10");

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// Remiseparken with every node reporting every 5 s: liveness decides in 15 s.
fn fast_remiseparken(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(remiseparken_file()).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["site"]["interval_s"] = 5.into();
    let path = dir.join("remiseparken-fast.geojson");
    std::fs::write(&path, serde_json::to_string_pretty(&json).unwrap()).unwrap();
    path
}

/// The broker, a recorder of the alerts topic, a webhook receiver, the gateway on
/// `site_file` with a 15 s roll-up (keepalive 10 s) and `alerts` settings (where
/// `{secret}` is the webhooks' secret file), and the simulator's state.
struct Park {
    broker: Mosquitto,
    recorder: Recorder,
    hook: WebhookReceiver,
    gateway: Gateway,
    state: tempfile::TempDir,
    site_file: PathBuf,
    site: Site,
}

impl Park {
    fn open(site_file: &Path, alerts: &str, hook_mode: Mode) -> Park {
        let broker = Mosquitto::start();
        let recorder = Recorder::start(&broker.url(), false);
        let hook = WebhookReceiver::start();
        hook.set(hook_mode);
        let state = tempfile::tempdir().unwrap();
        let secret = state.path().join("webhook-secret");
        std::fs::write(&secret, SECRET).unwrap();
        std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let alerts = alerts.replace("{secret}", &secret.display().to_string());
        let extra = format!(
            "[alerts]\nrollup_s = 15\n{alerts}\n\n[[webhooks]]\nname = \"crew\"\nurl = \"{}\"\nsecret_file = \"{}\"\ntimeout_s = 2\n",
            hook.url(),
            secret.display()
        );
        let mut gateway = Gateway::new(&broker.url(), &extra).env(KEEP_ALIVE.0, KEEP_ALIVE.1);
        gateway.set_sites(&[site_file.to_path_buf()]);
        gateway.start();
        Park {
            broker,
            recorder,
            hook,
            gateway,
            state,
            site_file: site_file.to_path_buf(),
            site: Site::load(site_file).unwrap(),
        }
    }

    /// `parklight sim --scenario` with a built-in scenario's name or a scenario file.
    fn scenario(&self, scenario: &str, extra: &[&str]) -> Parklight {
        let url = self.broker.url();
        let state = self.state.path().to_string_lossy().into_owned();
        let site = self.site_file.to_string_lossy().into_owned();
        let seed = SEED.to_string();
        let mut args = vec![
            "sim",
            "--broker",
            &url,
            "--site",
            &site,
            "--state",
            &state,
            "--fresh",
            "--scenario",
            scenario,
            "--drain-s",
            "30",
            "--seed",
            &seed,
        ];
        args.extend_from_slice(extra);
        Parklight::spawn(&args)
    }

    /// Every alert change published on the alerts topic, in arrival order, with when.
    fn published(&self) -> Vec<(Alert, i64)> {
        let (now, now_ms) = (std::time::Instant::now(), now_ms());
        (self.recorder.messages().into_iter())
            .filter(|m| m.topic.ends_with("/alerts"))
            .map(|m| {
                let at = now_ms - now.duration_since(m.at).as_millis() as i64;
                (
                    Alert::from_json(&m.payload).expect("a PROTOCOL.md alert"),
                    at,
                )
            })
            .collect()
    }

    /// Every alert change the webhook took, in arrival order; each signature verified.
    fn hooked(&self) -> Vec<Alert> {
        (self.hook.taken().into_iter())
            .map(|r| {
                verify(SECRET, &r.headers, &r.body, 300).expect("a valid signature");
                Alert::from_json(&r.body).expect("a PROTOCOL.md alert")
            })
            .collect()
    }

    /// `parklight alerts --json`: each alert's latest revision with its history.
    fn alerts(&self) -> Vec<serde_json::Value> {
        let config = self.gateway.config_path().to_string_lossy().into_owned();
        let done = Parklight::spawn_with(&["alerts", "--config", &config, "--json"], &[KEEP_ALIVE])
            .wait(Duration::from_secs(30));
        assert!(done.status.success(), "{}", done.stderr);
        done.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn act(&self, verb: &str, id: &str) -> parklight_tests::process::Finished {
        let config = self.gateway.config_path().to_string_lossy().into_owned();
        let args = [
            verb,
            id,
            "--config",
            &config,
            "--by",
            "crew-east",
            "--note",
            "on our way",
        ];
        Parklight::spawn_with(&args, &[KEEP_ALIVE]).wait(Duration::from_secs(30))
    }
}

/// Changes seen twice (delivery is at least once) dropped, by alert: each alert's
/// revisions in order, and with `contiguous` none missing (1, 2, 3…: every change paged).
fn by_alert(changes: &[Alert], contiguous: bool) -> BTreeMap<String, Vec<Alert>> {
    let mut seen = BTreeSet::new();
    let mut by_id: BTreeMap<String, Vec<Alert>> = BTreeMap::new();
    for change in changes {
        if seen.insert((change.id.clone(), change.rev)) {
            by_id
                .entry(change.id.clone())
                .or_default()
                .push(change.clone());
        }
    }
    for (id, revs) in &by_id {
        let numbers: Vec<u32> = revs.iter().map(|a| a.rev).collect();
        assert!(
            numbers.windows(2).all(|w| w[0] < w[1]),
            "{id}: in order: {numbers:?}"
        );
        if contiguous {
            let expected: Vec<u32> = (1..=revs.len() as u32).collect();
            assert_eq!(numbers, expected, "{id}: none missing");
        }
    }
    by_id
}

#[test]
fn a_node_cut_off_pages_mqtt_and_the_webhook_signed_and_an_acknowledgement_survives_a_kill() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let site_file = fast_remiseparken(dir.path());
    let mut park = Park::open(&site_file, "remind_s = 5", Mode::Up);
    let started = now_ms();
    let sim = park.scenario(
        Scenario::NodeOffline.name(),
        &[
            "--duration-s",
            "105",
            "--ack-timeout-s",
            "5",
            "--interval-s",
            "5",
        ],
    );
    let cut = started + 30_000;
    // Offline 3 intervals after its last report, then the roll-up delay: paged by then.
    let due = cut + 3 * 5_000 + 15_000 + 10_000;
    let paged = wait_until(Duration::from_secs(90), || {
        park.published()
            .iter()
            .any(|(a, _)| a.kind == AlertKind::NodeOffline)
            && !park.hooked().is_empty()
    });
    assert!(paged, "no alert: {}", park.gateway.log());
    let (raised, on_mqtt) = park.published()[0].clone();
    assert_eq!(
        (raised.kind, raised.rev, raised.state),
        (AlertKind::NodeOffline, 1, AlertState::Raised)
    );
    assert!(on_mqtt <= due, "on MQTT {} ms after the cut", on_mqtt - cut);
    let request = park.hook.taken()[0].clone();
    assert!(
        request.at <= due,
        "at the webhook {} ms after the cut",
        request.at - cut
    );
    assert_eq!(Alert::from_json(&request.body).unwrap(), raised);
    // The receiver's checks hold: one byte changed, or an old timestamp, fail.
    verify(SECRET, &request.headers, &request.body, 300).unwrap();
    let mut tampered = request.body.clone();
    tampered[10] ^= 1;
    assert!(verify(SECRET, &request.headers, &tampered, 300).is_err());
    let mut replayed = request.headers.clone();
    let old = jiff::Timestamp::now().as_second() - 600;
    replayed.insert("x-parklight-timestamp".into(), old.to_string());
    assert!(verify(SECRET, &replayed, &request.body, 300).is_err());
    let delivery = request
        .headers
        .get("x-parklight-delivery")
        .expect("a delivery id");
    assert!(!delivery.is_empty());

    // Unacknowledged and high: reminded after 5 s.
    let reminded = wait_until(Duration::from_secs(20), || {
        park.published().iter().any(|(a, _)| a.rev == 2)
    });
    assert!(reminded, "{}", park.gateway.log());
    let ack = park.act("ack", &raised.id);
    assert!(ack.status.success(), "{}", ack.stderr);
    assert!(ack.stdout.contains("acknowledged"), "{}", ack.stdout);
    let refused = park.act("resolve", &raised.id);
    assert!(!refused.status.success());
    assert!(
        refused.stderr.contains("condition is active"),
        "{}",
        refused.stderr
    );

    // Killed and started again: still acknowledged, not reminded, nothing raised again.
    park.gateway.kill();
    park.gateway.start();
    let finished = sim.wait(Duration::from_secs(240));
    assert!(finished.status.success(), "{}", finished.stderr);
    // Time for a clean stop to be taken for an outage, were it one: 3 intervals of
    // silence and the roll-up delay.
    std::thread::sleep(Duration::from_secs(3 * 5 + 15 + 3));
    let alerts = park.alerts();
    assert_eq!(
        alerts.len(),
        1,
        "one alert, no other (a clean stop raises nothing): {alerts:#?}"
    );
    let history: Vec<&str> = (alerts[0]["history"].as_array().unwrap().iter())
        .map(|h| h["what"].as_str().unwrap())
        .collect();
    assert_eq!(
        history,
        ["raised", "reminded", "acknowledged", "resolved"],
        "{alerts:#?}"
    );
    assert_eq!(alerts[0]["state"], "resolved");
    park.gateway.stop();
    let mqtt: Vec<Alert> = park.published().into_iter().map(|(a, _)| a).collect();
    for changes in [mqtt, park.hooked()] {
        let by_id = by_alert(&changes, true);
        assert_eq!(by_id.len(), 1);
        let last = by_id.values().next().unwrap().last().unwrap().clone();
        assert_eq!((last.rev, last.state), (4, AlertState::Resolved));
    }
}

#[test]
fn a_power_cut_is_one_site_power_loss_with_every_node_and_no_node_alerts() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let site_file = fast_remiseparken(dir.path());
    // A supervisor hears of what stays unacknowledged for 10 s.
    let supervisor = WebhookReceiver::start();
    let escalation = format!(
        "escalate_s = 10\n\n[[webhooks]]\nname = \"supervisor\"\nurl = \"{}\"\nsecret_file = \"{{secret}}\"\nescalation = true\n",
        supervisor.url()
    );
    let mut park = Park::open(&site_file, &escalation, Mode::Up);
    let sim = park.scenario(
        Scenario::PowerCut.name(),
        &[
            "--speed",
            "1",
            "--interval-s",
            "5",
            "--ack-timeout-s",
            "5",
            "--duration-s",
            "95",
        ],
    );
    let finished = sim.wait(Duration::from_secs(300));
    assert!(finished.status.success(), "{}", finished.stderr);
    // Back and caught up: its power loss is resolved.
    let resolved = wait_until(Duration::from_secs(60), || {
        park.published()
            .iter()
            .any(|(a, _)| a.state == AlertState::Resolved)
    });
    assert!(resolved, "{:#?}\n{}", park.published(), park.gateway.log());
    std::thread::sleep(Duration::from_secs(3));
    let alerts = park.alerts();
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    let every: BTreeSet<String> = park.site.nodes.iter().map(|n| n.id.clone()).collect();
    let alert = &alerts[0];
    assert_eq!(alert["kind"], "site_power_loss", "{alert:#}");
    assert_eq!(alert["state"], "resolved");
    assert_eq!(alert["children_count"], every.len(), "{alert:#}");
    let children: BTreeSet<String> = (alert["children"].as_array().unwrap().iter())
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(children, every);
    park.gateway.stop();
    // Critical and unacknowledged: escalated, and the supervisor heard from then on.
    let escalated: Vec<Alert> = (supervisor.taken().iter())
        .map(|r| {
            verify(SECRET, &r.headers, &r.body, 300).expect("a valid signature");
            Alert::from_json(&r.body).unwrap()
        })
        .collect();
    assert!(!escalated.is_empty(), "{}", park.gateway.log());
    assert!(
        escalated
            .iter()
            .all(|a| a.kind == AlertKind::SitePowerLoss && a.rev >= 2),
        "{escalated:#?}"
    );
    assert_eq!(escalated.last().unwrap().state, AlertState::Resolved);
    let mqtt: Vec<Alert> = park.published().into_iter().map(|(a, _)| a).collect();
    assert!(
        mqtt.iter().all(|a| a.kind == AlertKind::SitePowerLoss),
        "{mqtt:#?}"
    );
    by_alert(&mqtt, true);
}

#[test]
fn a_flapping_lamp_is_one_alert_and_a_receiver_down_for_a_while_gets_every_change_in_order() {
    let _serial = one_at_a_time();
    let tsdb = VictoriaMetrics::start();
    let token = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token.path(), "test-token").unwrap();
    let influx = format!(
        "\n[influxdb]\nurl = \"{}\"\norg = \"parks\"\nbucket = \"parklight\"\ntoken_file = \"{}\"\nflush_interval_ms = 200\n",
        tsdb.url(),
        token.path().display()
    );
    let mut park = Park::open(&remiseparken_file(), &influx, Mode::Down);
    let mut sim = park.scenario(Scenario::FlappingLamp.name(), &[]);
    // While the receiver refuses connections, ingest keeps pace with what the broker
    // delivers (about 1000 reports a second here).
    let mut most_behind = 0.0f64;
    while sim.running() {
        let received = park.recorder.count(|m| m.topic.ends_with("/telemetry")) as f64;
        let stored = park.gateway.metric("parklight_reports_stored_total", "");
        most_behind = most_behind.max(received - stored);
        std::thread::sleep(Duration::from_millis(500));
    }
    let finished = sim.wait(Duration::from_secs(10));
    assert!(finished.status.success(), "{}", finished.stderr);
    assert!(
        most_behind < 3000.0,
        "ingest fell {most_behind} reports behind"
    );
    assert!(park.hook.requests().is_empty());
    park.hook.set(Mode::Failing);
    let failed = wait_until(Duration::from_secs(30), || !park.hook.requests().is_empty());
    assert!(failed, "{}", park.gateway.log());
    std::thread::sleep(Duration::from_secs(3));
    park.hook.set(Mode::Up);
    // Every change the store says was paged, in order: what each receiver must hold.
    let alerts = park.alerts();
    let mut paged: Vec<(String, u32)> = (alerts.iter())
        .flat_map(|a| {
            let id = a["id"].as_str().unwrap().to_owned();
            (a["history"].as_array().unwrap().iter())
                .filter(|h| h["paged"] == true)
                .map(move |h| (id.clone(), h["rev"].as_u64().unwrap() as u32))
        })
        .collect();
    paged.sort();
    let held = |changes: Vec<Alert>| -> Vec<(String, u32)> {
        let by_id = by_alert(&changes, false);
        (by_id.into_iter())
            .flat_map(|(id, revs)| revs.into_iter().map(move |a| (id.clone(), a.rev)))
            .collect()
    };
    let caught_up = wait_until(Duration::from_secs(60), || held(park.hooked()) == paged);
    assert!(
        caught_up,
        "{:?} of {paged:?}: {}",
        held(park.hooked()),
        park.gateway.log()
    );
    assert_eq!(alerts.len(), 1, "one alert, not a stream: {alerts:#?}");
    assert_eq!(alerts[0]["kind"], "lamp_fault");
    let history = alerts[0]["history"].as_array().unwrap();
    assert!(
        history.iter().any(|h| h["what"] == "flapping"),
        "{alerts:#?}"
    );
    assert!(
        history.iter().filter(|h| h["what"] == "reopened").count() >= 2,
        "{alerts:#?}"
    );
    let paged_while_flapping = history
        .iter()
        .skip_while(|h| h["what"] != "flapping")
        .skip(1)
        .filter(|h| h["paged"] == true)
        .count();
    assert_eq!(
        paged_while_flapping, 0,
        "it paged once until it settled: {alerts:#?}"
    );
    // The alert's changes and the zone windows reached the time-series database as
    // numbers: the lamp fault raised (0) and resolved (2), zones lit (1) and not judged (0).
    let forwarded = wait_until(Duration::from_secs(30), || {
        let states: Vec<f64> = (tsdb.export("park_alert_state_code").iter())
            .filter(|s| s.labels.get("kind").map(String::as_str) == Some("lamp_fault"))
            .flat_map(|s| s.samples.iter().map(|(_, v)| *v))
            .collect();
        states.contains(&0.0) && states.contains(&2.0)
    });
    assert!(forwarded, "{:#?}", tsdb.export("park_alert.*"));
    let zones = tsdb.export("park_zone_status_code");
    let statuses: BTreeSet<i64> = (zones.iter())
        .flat_map(|s| s.samples.iter().map(|(_, v)| *v as i64))
        .collect();
    assert!(
        statuses.contains(&0) && statuses.contains(&1),
        "{statuses:?}"
    );
    let zone_names: BTreeSet<&str> = zones
        .iter()
        .filter_map(|s| s.labels.get("zone").map(String::as_str))
        .collect();
    assert_eq!(zone_names.len(), park.site.zones.len(), "{zone_names:?}");
    assert!(!tsdb.export("park_zone_occupied_dark_minutes").is_empty());
    park.gateway.stop();
    let mqtt: Vec<Alert> = park.published().into_iter().map(|(a, _)| a).collect();
    assert_eq!(held(mqtt), paged, "MQTT holds the same changes");
}

#[test]
fn a_silenced_zone_pages_nobody_and_what_is_still_wrong_at_its_end_is_paged_then() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let mut park = Park::open(&remiseparken_file(), "", Mode::Up);
    let story = Scenario::LampFailureInBusyZone
        .story(std::slice::from_ref(&park.site), now_ms(), SEED, true)
        .unwrap();
    let zone = park
        .site
        .node(&story.targets[0])
        .unwrap()
        .zone
        .clone()
        .unwrap();
    // The whole zone loses its lamps for an hour; a sensor of it fails for good.
    let scenario = dir.path().join("silenced.toml");
    let last = story.targets.last().unwrap();
    std::fs::write(
        &scenario,
        format!("base = \"lamp-failure-in-busy-zone\"\nfaults = \"dead@{last}=+2h\"\n"),
    )
    .unwrap();
    let config = park.gateway.config_path().to_string_lossy().into_owned();
    let silence = Parklight::spawn_with(
        &[
            "silence",
            "add",
            "--config",
            &config,
            "--site",
            &park.site.id,
            "--zone",
            &zone,
            "--until",
            "45s",
            "--by",
            "crew-east",
            "--note",
            "relamping",
        ],
        &[KEEP_ALIVE],
    )
    .wait(Duration::from_secs(30));
    assert!(silence.status.success(), "{}", silence.stderr);
    let silenced_until = now_ms() + 45_000;
    let listed = Parklight::spawn_with(&["silence", "list", "--config", &config], &[KEEP_ALIVE])
        .wait(Duration::from_secs(30));
    assert!(
        listed
            .stdout
            .contains(&format!("zone {}/{zone}", park.site.id)),
        "{}",
        listed.stdout
    );
    let scenario_arg = scenario.to_string_lossy().into_owned();
    let finished = park
        .scenario(&scenario_arg, &[])
        .wait(Duration::from_secs(300));
    assert!(finished.status.success(), "{}", finished.stderr);
    assert!(now_ms() < silenced_until, "the story outlasted the silence");
    std::thread::sleep(Duration::from_secs(3));
    // Recorded, not paged.
    let recorded = park.alerts();
    let in_zone = |a: &serde_json::Value| {
        a["zone"] == zone.as_str()
            || a["node"]
                .as_str()
                .is_some_and(|n| story.targets.iter().any(|t| t == n))
    };
    assert!(
        recorded
            .iter()
            .any(|a| a["kind"] == "lamp_fault" && in_zone(a)),
        "{recorded:#?}"
    );
    assert!(
        park.published().is_empty(),
        "paged while silenced: {:#?}",
        park.published()
    );
    assert!(park.hook.requests().is_empty());
    // At its end, the sensor still failed is paged; the lamps mended meanwhile are not.
    let paged = wait_until(Duration::from_secs(60), || {
        !park.published().is_empty() && !park.hooked().is_empty()
    });
    assert!(paged, "{}", park.gateway.log());
    std::thread::sleep(Duration::from_secs(2));
    let after: Vec<Alert> = park.published().into_iter().map(|(a, _)| a).collect();
    assert!(
        after.iter().all(|a| a.state != AlertState::Resolved),
        "{after:#?}"
    );
    assert!(
        after
            .iter()
            .any(|a| a.kind == AlertKind::SensorFault && a.node.as_deref() == Some(last.as_str())),
        "{after:#?}"
    );
    assert!(
        after
            .iter()
            .all(|a| now_ms() >= silenced_until && a.ts as i64 >= silenced_until - 1_000),
        "{after:#?}"
    );
    park.gateway.stop();
}

#[test]
fn a_dark_zone_acknowledged_pages_again_when_people_make_it_critical() {
    /// Detections in a dark window that make a dark zone critical: more than the rush
    /// brings in its first dark windows (2, 4, 5 with this seed and evening; people avoid
    /// the unlit path), fewer than it brings later (8, 9).
    const CRITICAL: u32 = 7;
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    // The busiest zone loses its lamps through the evening rush, played at 60 times real
    // time from five minutes before: a 5-minute window closes every 5 s. Always the same
    // evening (2026-12-03), so that the seeded rush brings the same detections: "last
    // night" moves with the clock, and on some evenings the first dark window is
    // already critical.
    let evening_after = jiff::Timestamp::from_second(1_796_371_200).unwrap();
    let story = Scenario::LampFailureInBusyZone
        .story(
            &[Site::load(&remiseparken_file()).unwrap()],
            evening_after.as_millisecond(),
            SEED,
            true,
        )
        .unwrap();
    let broken = story.start_ms.unwrap() + story.faults.scripted[0].after.as_millis() as i64;
    let start = jiff::Timestamp::from_millisecond(broken - 5 * 60_000).unwrap();
    let faults: Vec<String> = (story.targets.iter())
        .map(|node| format!("lamp@{node}=+5m/60m"))
        .collect();
    let scenario = dir.path().join("rush.toml");
    std::fs::write(
        &scenario,
        format!(
            "start = \"{start}\"\nspeed = 60\nduration_s = 45\nfaults = \"{}\"\n",
            faults.join(",")
        ),
    )
    .unwrap();
    let mut park = Park::open(
        &remiseparken_file(),
        &format!("\n[detection]\ncritical_detections = {CRITICAL}\n"),
        Mode::Up,
    );
    let sim = park.scenario(&scenario.to_string_lossy(), &[]);
    let dark_zone = |a: &Alert| a.kind == AlertKind::DarkZone;
    let raised = wait_until(Duration::from_secs(60), || {
        park.published().iter().any(|(a, _)| dark_zone(a))
    });
    assert!(raised, "{:#?}\n{}", park.published(), park.gateway.log());
    let first = (park.published().into_iter())
        .map(|(a, _)| a)
        .find(dark_zone)
        .unwrap();
    assert_eq!(first.severity, Severity::High, "{first:#?}");
    let acked = park.act("ack", &first.id);
    assert!(acked.status.success(), "{}", acked.stderr);
    let critical = |a: &Alert| a.id == first.id && a.severity == Severity::Critical;
    let rose = wait_until(Duration::from_secs(60), || {
        park.published().iter().any(|(a, _)| critical(a)) && park.hooked().iter().any(critical)
    });
    let finished = sim.wait(Duration::from_secs(120));
    assert!(finished.status.success(), "{}", finished.stderr);
    let store = park.gateway.store();
    let windows = store
        .zone_windows(
            &park.site.id,
            first.zone.as_deref().unwrap(),
            broken,
            now_ms(),
        )
        .unwrap();
    let detections: Vec<u32> = windows.iter().map(|w| w.detections).collect();
    assert!(
        rose,
        "windows' detections {detections:?}\n{:#?}",
        park.published()
    );
    // Paged again on MQTT and the webhook, after the acknowledgement, as raised.
    for changes in [
        park.published().into_iter().map(|(a, _)| a).collect(),
        park.hooked(),
    ] {
        let revs = &by_alert(&changes, true)[&first.id];
        let states: Vec<(AlertState, Severity)> =
            revs.iter().map(|a| (a.state, a.severity)).collect();
        assert_eq!(
            &states[..3],
            [
                (AlertState::Raised, Severity::High),
                (AlertState::Acknowledged, Severity::High),
                (AlertState::Raised, Severity::Critical),
            ],
            "{revs:#?}"
        );
    }
    park.gateway.stop();
}
