//! Detection end to end: a real Mosquitto, the real gateway and the real simulator playing
//! whole nights fast; what the detectors stored, read back from the gateway's store.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use parklight_core::solar::{next_sunrise, previous_sunset};
use parklight_gateway::detect::{Kind, Output, Settings, Status, Transition};
use parklight_gateway::store::Store;
use parklight_protocol::alert::Severity;
use parklight_site::Site;
use parklight_tests::broker::Mosquitto;
use parklight_tests::gateway::{Gateway, remiseparken_file};
use parklight_tests::process::Parklight;
use parklight_tests::{one_at_a_time, wait_until};
use rand::RngExt;

const HOUR: i64 = 3_600_000;

/// Each condition's changes (active, since), by kind, zone and node.
type Changes = BTreeMap<(Kind, Option<String>, Option<String>), Vec<(bool, i64)>>;
const SPEED: f64 = 1440.0;

/// Last night at the site, from an hour before sunset to an hour after sunrise, ending
/// well before now (PROTOCOL.md's clock rule).
struct Night {
    start: i64,
    end: i64,
}

impl Night {
    fn last(site: &Site) -> Night {
        let now = jiff::Timestamp::now().as_millisecond();
        let sunset = previous_sunset(now - 20 * HOUR, site.lat, site.lon).unwrap();
        let sunrise = next_sunrise(sunset, site.lat, site.lon);
        Night {
            start: sunset - HOUR,
            end: sunrise + HOUR,
        }
    }

    fn start_text(&self) -> String {
        jiff::Timestamp::from_millisecond(self.start)
            .unwrap()
            .to_string()
    }

    fn wall_seconds(&self) -> String {
        format!("{:.0}", (self.end - self.start) as f64 / 1000.0 / SPEED)
    }
}

/// The broker, the gateway (on `site_file`) and the simulator's state, for one night.
struct Park {
    broker: Mosquitto,
    gateway: Gateway,
    state: tempfile::TempDir,
    site_file: PathBuf,
    site: Site,
}

impl Park {
    fn open(site_file: &Path) -> Park {
        let broker = Mosquitto::start();
        let mut gateway = Gateway::new(&broker.url(), "");
        gateway.set_sites(&[site_file.to_path_buf()]);
        gateway.start();
        Park {
            broker,
            gateway,
            state: tempfile::tempdir().unwrap(),
            site_file: site_file.to_path_buf(),
            site: Site::load(site_file).unwrap(),
        }
    }

    /// Starts the simulator over `night` with `faults`.
    fn simulate(&self, night: &Night, faults: &str) -> Parklight {
        let url = self.broker.url();
        let state = self.state.path().to_string_lossy().into_owned();
        let site = self.site_file.to_string_lossy().into_owned();
        let (start, wall) = (night.start_text(), night.wall_seconds());
        Parklight::spawn(&[
            "sim",
            "--broker",
            &url,
            "--site",
            &site,
            "--state",
            &state,
            "--fresh",
            "--start",
            &start,
            "--speed",
            "1440",
            "--duration-s",
            &wall,
            "--drain-s",
            "30",
            "--seed",
            "11",
            "--faults",
            faults,
        ])
    }

    /// Waits until the detectors have judged everything stored, then stops the gateway.
    fn settle(&mut self) {
        let path = self.gateway.store_path();
        let caught_up = wait_until(Duration::from_secs(60), || {
            let store = Store::open(&path, 10_000).unwrap();
            store.detected().unwrap().report >= store.last_report_id().unwrap()
        });
        assert!(caught_up, "detection fell behind: {}", self.gateway.log());
        self.gateway.stop();
    }

    fn night(&mut self, night: &Night, faults: &str) {
        let finished = self.simulate(night, faults).wait(Duration::from_secs(240));
        assert!(finished.status.success(), "{}", finished.stderr);
        self.settle();
    }
}

fn conditions(store: &Store) -> Vec<Transition> {
    store
        .conditions_since(i64::MIN)
        .unwrap()
        .into_iter()
        .map(|c| c.transition)
        .collect()
}

/// A copy of Remiseparken whose site-wide dimming step is at `level` (it declares P4).
fn remiseparken_dimmed_to(level: u8, dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(remiseparken_file()).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let step = &mut json["site"]["profile"][1];
    assert_eq!(step["class"], "P4", "the step after midnight declares P4");
    step["level"] = level.into();
    let path = dir.join("remiseparken-dim.geojson");
    std::fs::write(&path, serde_json::to_string_pretty(&json).unwrap()).unwrap();
    path
}

/// Zones of the site whose nodes follow the site-wide profile (no profile of their own).
fn zones_on_site_profile(site: &Site) -> Vec<String> {
    site.zones
        .iter()
        .filter(|z| z.lighting.profile.is_none())
        .map(|z| z.id.clone())
        .collect()
}

#[test]
fn a_healthy_night_on_remiseparken_is_lit_in_every_window_and_raises_nothing() {
    let _serial = one_at_a_time();
    let mut park = Park::open(&remiseparken_file());
    let night = Night::last(&park.site);
    park.night(&night, "");
    let store = park.gateway.store();
    let raised = conditions(&store);
    assert!(raised.is_empty(), "{raised:#?}");
    for zone in &park.site.zones {
        let windows = store
            .zone_windows(&park.site.id, &zone.id, night.start, night.end)
            .unwrap();
        let count = |status| windows.iter().filter(|w| w.status == status).count();
        assert_eq!(count(Status::Dark), 0, "{}: {windows:#?}", zone.id);
        assert_eq!(count(Status::Unobserved), 0, "{}", zone.id);
        assert!(count(Status::Lit) > 100, "{}: judged all night", zone.id);
        assert!(count(Status::NotJudged) > 10, "{}: not by day", zone.id);
        let occupied: u32 = windows.iter().map(|w| w.occupied_dark_minutes).sum();
        assert_eq!(occupied, 0, "{}", zone.id);
        // After midnight the zone is held to the lower class its step declares.
        let lowest = windows
            .iter()
            .map(|w| w.required_avg)
            .fold(f64::MAX, f64::min);
        if zones_on_site_profile(&park.site).contains(&zone.id) && zone.requirement.avg_lux > 5.0 {
            assert_eq!(lowest, 5.0, "{}: P4 after midnight", zone.id);
        }
    }
}

#[test]
fn a_dimming_step_too_low_for_its_class_raises_dark_zones_and_replays_the_same() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let site_file = remiseparken_dimmed_to(20, dir.path());
    let mut park = Park::open(&site_file);
    let night = Night::last(&park.site);
    park.night(&night, "");
    let store = park.gateway.store();
    let raised = conditions(&store);
    let dark: Vec<&Transition> = raised
        .iter()
        .filter(|t| t.kind == Kind::DarkZone && t.active)
        .collect();
    let dimmed = zones_on_site_profile(&park.site);
    let dark_zones: std::collections::BTreeSet<&str> =
        dark.iter().filter_map(|t| t.zone.as_deref()).collect();
    assert!(!dark_zones.is_empty(), "{raised:#?}");
    assert!(
        dark_zones.iter().all(|z| dimmed.iter().any(|d| d == z)),
        "only zones on the dimmed profile: {dark_zones:?}"
    );
    for t in &dark {
        // Severity by the rule: low without detections in the dark run, higher with.
        let windows = store
            .zone_windows(&t.site, t.zone.as_deref().unwrap(), t.since, t.ts)
            .unwrap();
        let detections = windows.iter().map(|w| w.detections).max().unwrap_or(0);
        let expected = match detections {
            0 => Severity::Low,
            d if d < Settings::default().critical_detections => Severity::High,
            _ => Severity::Critical,
        };
        assert!(
            t.severity <= expected,
            "{t:#?} with {detections} detections"
        );
        if t.severity == Severity::Low {
            assert_eq!(detections, 0, "{t:#?}");
        }
    }
    let occupied: u32 = dimmed
        .iter()
        .flat_map(|z| {
            store
                .zone_windows(&park.site.id, z, night.start, night.end)
                .unwrap()
        })
        .map(|w| w.occupied_dark_minutes)
        .sum();
    assert!(occupied > 0, "people passed the dark zones");

    // The stored facts replayed from an empty state give exactly the same conditions.
    let replayed: Vec<Transition> =
        parklight_gateway::detection::replay(&store, &[park.site.clone()], &Settings::default())
            .unwrap()
            .into_iter()
            .filter_map(|o| match o {
                Output::Transition(t) => Some(t),
                Output::Window(_) => None,
            })
            .collect();
    assert_eq!(replayed, raised);
}

#[test]
fn a_gateway_killed_at_random_moments_ends_with_the_conditions_of_an_undisturbed_run() {
    let _serial = one_at_a_time();
    let site = Site::remiseparken();
    let playground: Vec<String> = site
        .nodes
        .iter()
        .filter(|n| n.zone.as_deref() == Some("playground"))
        .map(|n| n.id.clone())
        .collect();
    let night = Night::last(&site);
    // Every pole of the playground loses its lamp six hours into the night.
    let faults: Vec<String> = playground.iter().map(|n| format!("lamp@{n}=+6h")).collect();
    let faults = faults.join(",");

    let mut calm = Park::open(&remiseparken_file());
    calm.night(&night, &faults);
    let undisturbed = conditions(&calm.gateway.store());
    let lamp_faults: Vec<&str> = undisturbed
        .iter()
        .filter(|t| t.kind == Kind::LampFault && t.active)
        .filter_map(|t| t.node.as_deref())
        .collect();
    assert_eq!(lamp_faults.len(), playground.len(), "{undisturbed:#?}");
    assert!(
        undisturbed
            .iter()
            .any(|t| t.kind == Kind::DarkZone && t.zone.as_deref() == Some("playground")),
        "{undisturbed:#?}"
    );

    let mut rough = Park::open(&remiseparken_file());
    let sim = rough.simulate(&night, &faults);
    let mut rng = rand::rng();
    for _ in 0..3 {
        let pause = rng.random_range(3_000..12_000);
        eprintln!("killing the gateway after {pause} ms");
        std::thread::sleep(Duration::from_millis(pause));
        rough.gateway.kill();
        rough.gateway.start();
    }
    let finished = sim.wait(Duration::from_secs(240));
    assert!(finished.status.success(), "{}", finished.stderr);
    rough.settle();
    let disturbed = conditions(&rough.gateway.store());

    let keyed = |list: &[Transition]| -> Changes {
        let mut map: BTreeMap<_, Vec<(bool, i64)>> = BTreeMap::new();
        for t in list {
            map.entry((t.kind, t.zone.clone(), t.node.clone()))
                .or_default()
                .push((t.active, t.since));
        }
        map
    };
    let active = |park: &Park| -> Vec<(Kind, Option<String>, Option<String>)> {
        let store = park.gateway.store();
        let rows = store.active_conditions().unwrap();
        rows.into_iter()
            .map(|c| (c.transition.kind, c.transition.zone, c.transition.node))
            .collect()
    };
    assert_eq!(
        active(&calm),
        active(&rough),
        "the same conditions active at the end"
    );
    let (calm_keys, rough_keys) = (keyed(&undisturbed), keyed(&disturbed));
    assert_eq!(
        calm_keys.keys().collect::<Vec<_>>(),
        rough_keys.keys().collect::<Vec<_>>(),
        "same conditions: {undisturbed:#?}\n{disturbed:#?}"
    );
    let window = i64::from(parklight_site::DEFAULT_WINDOW_S) * 1000;
    for (key, calm_changes) in &calm_keys {
        let first = |changes: &[(bool, i64)]| changes.iter().find(|c| c.0).map(|c| c.1);
        let (a, b) = (first(calm_changes), first(&rough_keys[key]));
        assert!(
            a.zip(b).is_some_and(|(a, b)| (a - b).abs() <= window),
            "{key:?}: since {a:?} and {b:?}"
        );
    }
}

/// A copy of Remiseparken whose nodes report every `interval_s` seconds.
fn remiseparken_every(interval_s: u16, dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(remiseparken_file()).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["site"]["interval_s"] = interval_s.into();
    let path = dir.join("remiseparken-fast.geojson");
    std::fs::write(&path, serde_json::to_string_pretty(&json).unwrap()).unwrap();
    path
}

#[test]
fn a_node_cut_off_is_offline_within_three_intervals_and_nothing_else_is_raised() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let site_file = remiseparken_every(10, dir.path());
    let mut park = Park::open(&site_file);
    let url = park.broker.url();
    let state = park.state.path().to_string_lossy().into_owned();
    let site = site_file.to_string_lossy().into_owned();
    let started = jiff::Timestamp::now().as_millisecond();
    // Real time: pole-007 loses its network 30 s in, for 40 s.
    let sim = Parklight::spawn(&[
        "sim",
        "--broker",
        &url,
        "--site",
        &site,
        "--state",
        &state,
        "--fresh",
        "--speed",
        "1",
        "--duration-s",
        "100",
        "--drain-s",
        "20",
        "--faults",
        "offline@pole-007=+30s/40s",
    ]);
    // Meanwhile the gateway restarts: the healthy nodes must not look silent to it.
    std::thread::sleep(Duration::from_secs(12));
    park.gateway.stop();
    park.gateway.start();
    let finished = sim.wait(Duration::from_secs(180));
    assert!(finished.status.success(), "{}", finished.stderr);
    park.settle();
    let store = park.gateway.store();
    let rows = store.conditions_since(i64::MIN).unwrap();
    let raised: Vec<_> = rows.iter().filter(|r| r.transition.active).collect();
    assert_eq!(raised.len(), 1, "{rows:#?}\n{}", park.gateway.log());
    let offline = &raised[0];
    assert_eq!(offline.transition.kind, Kind::NodeOffline);
    assert_eq!(offline.transition.node.as_deref(), Some("pole-007"));
    let cut = started + 30_000;
    assert!(
        offline.recorded <= cut + 3 * 10_000 + 10_000,
        "recorded {} ms after the cut",
        offline.recorded - cut
    );
    assert!(
        rows.iter()
            .any(|r| !r.transition.active && r.transition.kind == Kind::NodeOffline),
        "cleared once it reported again: {rows:#?}"
    );
}

#[test]
fn failed_sensors_leave_a_zone_unobserved_and_a_temporary_zone_outside_its_dates_is_not_judged() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    // The lawn becomes a temporary installation whose dates begin next year.
    let text = std::fs::read_to_string(remiseparken_file()).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let features = json["features"].as_array_mut().unwrap();
    let lawn = features
        .iter_mut()
        .find(|f| f["properties"]["zone"] == "lawn")
        .unwrap();
    let next_year = jiff::Timestamp::now().as_millisecond() + 365 * 24 * HOUR;
    lawn["properties"]["valid_from"] = jiff::Timestamp::from_millisecond(next_year)
        .unwrap()
        .to_string()
        .into();
    let site_file = dir.path().join("remiseparken-temporary-lawn.geojson");
    std::fs::write(&site_file, serde_json::to_string_pretty(&json).unwrap()).unwrap();

    let mut park = Park::open(&site_file);
    let site = park.site.clone();
    let members = |zone: &str| -> Vec<String> {
        site.nodes
            .iter()
            .filter(|n| n.zone.as_deref() == Some(zone))
            .map(|n| n.id.clone())
            .collect()
    };
    let (water, lawn, playground) = (
        members("water-play"),
        members("lawn"),
        members("playground"),
    );
    assert_eq!(water.len(), 2);
    let faults = format!(
        "dead@{}=+5h,dead@{}=+5h,stuck@{}=+5h,lamp@{}=+5h",
        water[0], water[1], playground[0], lawn[0]
    );
    let night = Night::last(&site);
    park.night(&night, &faults);
    let store = park.gateway.store();
    let raised: Vec<Transition> = conditions(&store)
        .into_iter()
        .filter(|t| t.active)
        .collect();
    let on = |kind: Kind, node: &str| {
        raised
            .iter()
            .any(|t| t.kind == kind && t.node.as_deref() == Some(node))
    };
    for node in [&water[0], &water[1], &playground[0]] {
        assert!(on(Kind::SensorFault, node), "{node}: {raised:#?}");
    }
    assert!(on(Kind::LampFault, &lawn[0]), "{raised:#?}");
    let zone_kinds = |zone: &str| -> Vec<Kind> {
        raised
            .iter()
            .filter(|t| t.zone.as_deref() == Some(zone))
            .map(|t| t.kind)
            .collect()
    };
    assert_eq!(
        zone_kinds("water-play"),
        [Kind::ZoneUnobserved],
        "{raised:#?}"
    );
    assert!(zone_kinds("lawn").is_empty(), "{raised:#?}");
    assert!(
        zone_kinds("playground").is_empty(),
        "two of three sensors: {raised:#?}"
    );
    let windows = store
        .zone_windows(&site.id, "water-play", night.start, night.end)
        .unwrap();
    let unobserved: Vec<_> = windows
        .iter()
        .filter(|w| w.status == Status::Unobserved)
        .collect();
    assert!(unobserved.len() > 10, "{windows:#?}");
    assert!(
        unobserved.iter().all(|w| w
            .cause
            .as_deref()
            .is_some_and(|c| c.contains("failed sensors"))),
        "{unobserved:#?}"
    );
    assert!(!windows.iter().any(|w| w.status == Status::Dark));
    let lawn_windows = store
        .zone_windows(&site.id, "lawn", night.start, night.end)
        .unwrap();
    assert!(!lawn_windows.is_empty());
    assert!(lawn_windows.iter().all(|w| w.status == Status::NotJudged));
}
