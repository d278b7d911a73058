//! Detection end to end: a real Mosquitto, the real gateway and the real simulator playing
//! whole nights fast; what the detectors stored, read back from the gateway's store.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use parklight_gateway::detect::{Fact, Kind, Output, Settings, Status, Transition};
use parklight_gateway::store::{Position, Store};
use parklight_protocol::alert::Severity;
use parklight_sim::scenario::{Length, Story};
use parklight_sim::{Scenario, Site};
use parklight_tests::api::{Credential, create_token, request};
use parklight_tests::broker::Mosquitto;
use parklight_tests::gateway::{Gateway, remiseparken_file};
use parklight_tests::process::Parklight;
use parklight_tests::{one_at_a_time, wait_until};
use rand::RngExt;

const HOUR: i64 = 3_600_000;
const SEED: u64 = 11;

/// Each condition's changes (active, since), by kind, zone and node.
type Changes = BTreeMap<(Kind, Option<String>, Option<String>), Vec<(bool, i64)>>;

/// What `scenario` does on `site` with the tests' seed, and the simulated time it spans.
fn story(scenario: Scenario, site: &Site, meters: bool) -> (Story, (i64, i64)) {
    let now = jiff::Timestamp::now().as_millisecond();
    let story = scenario
        .story(std::slice::from_ref(site), now, SEED, meters)
        .unwrap();
    let start = story.start_ms.unwrap_or(now);
    let end = match story.length {
        Length::Simulated(ms) => start + ms,
        Length::Wall(wall) => start + (wall.as_secs_f64() * story.speed * 1000.0) as i64,
    };
    (story, (start, end.min(now)))
}

/// The broker, the gateway (on `site_file`) and the simulator's state.
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

    /// Starts `parklight sim --scenario` with the tests' seed and `extra` options.
    fn scenario(&self, scenario: Scenario, extra: &[&str]) -> Parklight {
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
            scenario.name(),
            "--drain-s",
            "30",
            "--seed",
            &seed,
        ];
        args.extend_from_slice(extra);
        Parklight::spawn(&args)
    }

    /// The operators' energy of the site from `from` to now, the gateway started again.
    fn energy(&mut self, from: i64) -> serde_json::Value {
        self.gateway.start();
        let token = create_token(&self.gateway.config_path().to_string_lossy(), "operator");
        let path = format!(
            "/api/v1/energy?site={}&from={from}&to={}",
            self.site.id,
            jiff::Timestamp::now().as_millisecond()
        );
        let port = self.gateway.http_port();
        let answer = request(port, "GET", &path, Credential::Bearer(&token), None);
        assert_eq!(answer.status, 200, "{}", answer.body);
        answer.json()
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

    /// Plays `scenario` to its end and lets the detectors catch up.
    fn play(&mut self, scenario: Scenario, extra: &[&str]) {
        let finished = self
            .scenario(scenario, extra)
            .wait(Duration::from_secs(300));
        assert!(finished.status.success(), "{}", finished.stderr);
        // Wills of nodes whose sockets were still half-open arrive as the simulator exits.
        std::thread::sleep(Duration::from_secs(1));
        self.settle();
    }
}

/// The stored facts replayed from an empty state give exactly the stored conditions.
fn assert_replays(store: &Store, site: &Site) {
    let replayed: Vec<Transition> = parklight_gateway::detection::replay(
        store,
        std::slice::from_ref(site),
        &Settings::default(),
    )
    .unwrap()
    .into_iter()
    .filter_map(|o| match o {
        Output::Transition(t) => Some(t),
        Output::Window(_) => None,
    })
    .collect();
    assert_eq!(replayed, conditions(store));
}

fn conditions(store: &Store) -> Vec<Transition> {
    store
        .conditions_since(i64::MIN)
        .unwrap()
        .into_iter()
        .map(|c| c.transition)
        .collect()
}

/// A copy of Remiseparken in `dir`, changed by `edit`.
fn remiseparken_with(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let text = std::fs::read_to_string(remiseparken_file()).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    edit(&mut json);
    let path = dir.join("remiseparken-copy.geojson");
    std::fs::write(&path, serde_json::to_string_pretty(&json).unwrap()).unwrap();
    path
}

/// The nodes of `zone`.
fn members(site: &Site, zone: &str) -> Vec<String> {
    (site.nodes.iter())
        .filter(|n| n.zone.as_deref() == Some(zone))
        .map(|n| n.id.clone())
        .collect()
}

/// The zone of the first node a story breaks.
fn zone_of(site: &Site, story: &Story) -> String {
    site.node(&story.targets[0]).unwrap().zone.clone().unwrap()
}

/// Nodes with a condition of `kind` raised.
fn raised_on(list: &[Transition], kind: Kind) -> BTreeSet<String> {
    list.iter()
        .filter(|t| t.kind == kind && t.active)
        .filter_map(|t| t.node.clone())
        .collect()
}

/// Zones with a condition of `kind` raised.
fn zones_raised(list: &[Transition], kind: Kind) -> BTreeSet<String> {
    list.iter()
        .filter(|t| t.kind == kind && t.active)
        .filter_map(|t| t.zone.clone())
        .collect()
}

/// Whether every condition raised in `list` was cleared again.
fn all_cleared(list: &[Transition]) -> bool {
    let mut active = BTreeSet::new();
    for t in list {
        let key = (t.kind, t.zone.clone(), t.node.clone());
        if t.active {
            active.insert(key);
        } else {
            active.remove(&key);
        }
    }
    active.is_empty()
}

/// Windows of `span` whose middle has the sun below civil dusk at `site`.
fn dark_windows(site: &Site, span: (i64, i64)) -> usize {
    let window = i64::from(parklight_site::DEFAULT_WINDOW_S) * 1000;
    (span.0 / window + 1..span.1 / window)
        .map(|w| w * window - window / 2)
        .filter(|&middle| {
            parklight_core::solar::altitude_deg(middle, site.lat, site.lon)
                < parklight_core::solar::CIVIL_TWILIGHT_DEG
        })
        .count()
}

/// Zones whose nodes follow the site-wide profile (no profile of their own).
fn zones_on_site_profile(site: &Site) -> Vec<String> {
    site.zones
        .iter()
        .filter(|z| z.lighting.profile.is_none())
        .map(|z| z.id.clone())
        .collect()
}

#[test]
fn healthy_night_on_remiseparken_is_lit_in_every_window_and_raises_nothing() {
    let _serial = one_at_a_time();
    let mut park = Park::open(&remiseparken_file());
    let (_, night) = story(Scenario::HealthyNight, &park.site, true);
    park.play(Scenario::HealthyNight, &["--speed", "2880"]);
    let store = park.gateway.store();
    let raised = conditions(&store);
    assert!(raised.is_empty(), "{raised:#?}");
    for zone in &park.site.zones {
        let windows = store
            .zone_windows(&park.site.id, &zone.id, night.0, night.1)
            .unwrap();
        let count = |status| windows.iter().filter(|w| w.status == status).count();
        assert_eq!(count(Status::Dark), 0, "{}: {windows:#?}", zone.id);
        assert_eq!(count(Status::Unobserved), 0, "{}", zone.id);
        assert!(
            count(Status::Lit) + 2 >= dark_windows(&park.site, night),
            "{}: judged all night",
            zone.id
        );
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
    let site_file = remiseparken_with(dir.path(), |json| {
        let step = &mut json["site"]["profile"][1];
        assert_eq!(step["class"], "P4", "the step after midnight declares P4");
        step["level"] = 20.into();
    });
    let mut park = Park::open(&site_file);
    let (_, night) = story(Scenario::HealthyNight, &park.site, true);
    park.play(Scenario::HealthyNight, &["--speed", "2880"]);
    let store = park.gateway.store();
    let raised = conditions(&store);
    let dark: Vec<&Transition> = raised
        .iter()
        .filter(|t| t.kind == Kind::DarkZone && t.active)
        .collect();
    let dimmed = zones_on_site_profile(&park.site);
    let dark_zones = zones_raised(&raised, Kind::DarkZone);
    assert!(!dark_zones.is_empty(), "{raised:#?}");
    assert!(
        dark_zones.iter().all(|z| dimmed.contains(z)),
        "only zones on the dimmed profile: {dark_zones:?}"
    );
    for t in &dark {
        // Severity by the rule: the most detections in a window of the dark run so far.
        let windows = store
            .zone_windows(&t.site, t.zone.as_deref().unwrap(), t.since, t.ts)
            .unwrap();
        assert!(
            windows.iter().all(|w| w.status == Status::Dark),
            "{t:#?}: {windows:#?}"
        );
        if windows.iter().any(|w| w.revised) {
            continue; // later reports changed the figures, not the decision
        }
        let detections = windows.iter().map(|w| w.detections).max().unwrap_or(0);
        let expected = match detections {
            0 => Severity::Low,
            d if d < Settings::default().critical_detections => Severity::High,
            _ => Severity::Critical,
        };
        assert_eq!(t.severity, expected, "{t:#?} with {detections} detections");
    }
    let occupied: u32 = dimmed
        .iter()
        .flat_map(|z| {
            store
                .zone_windows(&park.site.id, z, night.0, night.1)
                .unwrap()
        })
        .map(|w| w.occupied_dark_minutes)
        .sum();
    assert!(occupied > 0, "people passed the dark zones");

    assert_replays(&store, &park.site);
}

#[test]
fn a_lamp_failure_in_the_busiest_zone_is_found_cleared_by_the_repair_with_or_without_meters_and_through_gateway_kills()
 {
    let _serial = one_at_a_time();
    let site = Site::remiseparken();
    let (lamps, span) = story(Scenario::LampFailureInBusyZone, &site, true);
    let failed: BTreeSet<String> = lamps.targets.iter().cloned().collect();
    let busy = zone_of(&site, &lamps);
    let window = i64::from(parklight_site::DEFAULT_WINDOW_S) * 1000;
    let broken = span.0 + lamps.faults.scripted[0].after.as_millis() as i64;
    let repaired = broken + HOUR;
    // Slow enough to kill the gateway a few times while it plays.
    let speed = ["--speed", "720"];

    let mut calm = Park::open(&remiseparken_file());
    calm.play(Scenario::LampFailureInBusyZone, &speed);
    let store = calm.gateway.store();
    let undisturbed = conditions(&store);
    assert_eq!(
        raised_on(&undisturbed, Kind::LampFault),
        failed,
        "{undisturbed:#?}"
    );
    let dark: Vec<&Transition> = (undisturbed.iter())
        .filter(|t| t.kind == Kind::DarkZone)
        .collect();
    assert!(
        dark.iter()
            .all(|t| t.zone.as_deref() == Some(busy.as_str())),
        "{dark:#?}"
    );
    let first = dark.iter().find(|t| t.active).expect("a dark zone");
    assert!(
        first.severity >= Severity::High,
        "people are there: {first:#?}"
    );
    assert!(
        (broken - window..=broken + 3 * window).contains(&first.since),
        "dark from the failure at {broken}: {first:#?}"
    );
    assert!(
        undisturbed
            .iter()
            .all(|t| t.kind == Kind::DarkZone || t.kind == Kind::LampFault),
        "{undisturbed:#?}"
    );
    assert!(all_cleared(&undisturbed), "repaired: {undisturbed:#?}");
    // The occupied-dark-minutes series covers the dark interval, within a window at each
    // end, and nothing else.
    let windows = store.zone_windows(&site.id, &busy, span.0, span.1).unwrap();
    let occupied: Vec<_> = (windows.iter())
        .filter(|w| w.occupied_dark_minutes > 0)
        .collect();
    assert!(!occupied.is_empty(), "{windows:#?}");
    assert!(
        occupied
            .iter()
            .all(|w| w.start >= broken - window && w.end <= repaired + window),
        "{occupied:#?}"
    );
    assert!(
        (windows.iter())
            .filter(|w| w.start >= broken + window && w.end <= repaired - window)
            .all(|w| w.status == Status::Dark && w.occupied_dark_minutes > 0),
        "{windows:#?}"
    );

    // The same story with the gateway killed (SIGKILL) at random moments.
    let mut rough = Park::open(&remiseparken_file());
    let sim = rough.scenario(Scenario::LampFailureInBusyZone, &speed);
    let mut rng = rand::rng();
    for _ in 0..3 {
        let pause = rng.random_range(2_000..7_000);
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
    assert_eq!(active(&calm), active(&rough), "the same active at the end");
    let (calm_keys, rough_keys) = (keyed(&undisturbed), keyed(&disturbed));
    assert_eq!(
        calm_keys.keys().collect::<Vec<_>>(),
        rough_keys.keys().collect::<Vec<_>>(),
        "same conditions: {undisturbed:#?}\n{disturbed:#?}"
    );
    for (key, calm_changes) in &calm_keys {
        let first = |changes: &[(bool, i64)]| changes.iter().find(|c| c.0).map(|c| c.1);
        let (a, b) = (first(calm_changes), first(&rough_keys[key]));
        assert!(
            a.zip(b).is_some_and(|(a, b)| (a - b).abs() <= window),
            "{key:?}: since {a:?} and {b:?}"
        );
    }

    // Without meters the nodes cannot tell: the lamps' light alone gives them away.
    let mut bare = Park::open(&remiseparken_file());
    bare.play(Scenario::LampFailureInBusyZone, &["--no-meters"]);
    let unmetered = conditions(&bare.gateway.store());
    assert_eq!(
        raised_on(&unmetered, Kind::LampFault),
        failed,
        "{unmetered:#?}"
    );
    assert!(
        (unmetered.iter())
            .filter(|t| t.kind == Kind::LampFault && t.active)
            .all(|t| t.detail.contains(" lx at ")),
        "from light: {unmetered:#?}"
    );
    assert!(all_cleared(&unmetered), "{unmetered:#?}");

    // Energy: metered in the first park; estimated without meters from each lamp's rated
    // power and reported levels through the luminance curve, near what was metered.
    let metered = calm.energy(span.0 - HOUR);
    let estimated = bare.energy(span.0 - HOUR);
    let kwh = |energy: &serde_json::Value, key: &str| energy["total"][key].as_f64().unwrap();
    assert!(kwh(&metered, "kwh") > 0.0, "{metered:#}");
    assert_eq!(
        kwh(&metered, "metered_kwh"),
        kwh(&metered, "kwh"),
        "{metered:#}"
    );
    assert_eq!(kwh(&estimated, "metered_kwh"), 0.0, "{estimated:#}");
    assert_eq!(
        kwh(&estimated, "estimated_kwh"),
        kwh(&estimated, "kwh"),
        "{estimated:#}"
    );
    assert!(
        (kwh(&estimated, "kwh") / kwh(&metered, "kwh") - 1.0).abs() < 0.25,
        "{estimated:#}\n{metered:#}"
    );
    let zones = |energy: &serde_json::Value| energy["zones"].as_array().unwrap().clone();
    for zone in zones(&estimated)
        .iter()
        .filter(|z| z["total"]["kwh"].as_f64() > Some(0.0))
    {
        assert_eq!(zone["estimated"], true, "{zone:#}");
    }
    assert!(
        zones(&metered).iter().all(|z| z["estimated"] == false),
        "{metered:#}"
    );
}

#[test]
fn a_node_cut_off_is_offline_within_three_intervals_and_restarts_and_broker_outages_raise_nothing()
{
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let site_file = remiseparken_with(dir.path(), |json| json["site"]["interval_s"] = 5.into());
    let mut park = Park::open(&site_file);
    let (offline, _) = story(Scenario::NodeOffline, &park.site, true);
    let node = offline.targets[0].clone();
    let started = jiff::Timestamp::now().as_millisecond();
    // At real speed, the node loses its network 30 s in, for 60 s, its socket half-open.
    let sim = park.scenario(
        Scenario::NodeOffline,
        &[
            "--duration-s",
            "170",
            "--ack-timeout-s",
            "5",
            "--interval-s",
            "5",
        ],
    );
    let sleep_until = |ms: i64| {
        let left = ms + started - jiff::Timestamp::now().as_millisecond();
        std::thread::sleep(Duration::from_millis(left.max(0) as u64));
    };
    // Meanwhile the gateway restarts: the healthy nodes must not look silent to it.
    sleep_until(32_000);
    park.gateway.stop();
    park.gateway.start();
    // Once it is back, the broker is gone for longer than 3 intervals: nobody is heard,
    // and nobody is silent for that, nor in the 3 intervals after the gateway is back.
    sleep_until(95_000);
    park.broker.kill();
    std::thread::sleep(Duration::from_secs(20));
    park.broker.restart();
    let finished = sim.wait(Duration::from_secs(240));
    assert!(finished.status.success(), "{}", finished.stderr);
    park.settle();
    let store = park.gateway.store();
    let rows = store.conditions_since(i64::MIN).unwrap();
    let raised: Vec<_> = rows.iter().filter(|r| r.transition.active).collect();
    // The clean stop at the end (`reason: shutdown`) raised nothing either.
    assert_eq!(raised.len(), 1, "{rows:#?}\n{}", park.gateway.log());
    let found = &raised[0];
    assert_eq!(found.transition.kind, Kind::NodeOffline);
    assert_eq!(found.transition.node.as_deref(), Some(node.as_str()));
    let cut = started + 30_000;
    assert!(
        found.recorded <= cut + 3 * 5_000 + 10_000,
        "recorded {} ms after the cut",
        found.recorded - cut
    );
    assert!(
        rows.iter()
            .any(|r| !r.transition.active && r.transition.kind == Kind::NodeOffline),
        "cleared once it reported again: {rows:#?}"
    );
    // Its socket was left half-open: the broker published its will only once its
    // keepalive (30 s, times 1.5) ran out.
    let (journal, _) = store
        .journal_after(Position::default(), 1_000_000, None)
        .unwrap();
    let will = journal.iter().find_map(|entry| match &entry.fact {
        Fact::Offline {
            node: n,
            lost: true,
            received,
            ..
        } if *n == node => Some(*received),
        _ => None,
    });
    let will = will.expect("a will");
    assert!(will >= cut + 40_000, "will {} ms after the cut", will - cut);
    assert_replays(&store, &park.site);
}

/// Plays a sensor scenario; returns the park, the broken zone and the conditions.
fn failed_sensors(
    scenario: Scenario,
    site_file: &Path,
    extra: &[&str],
) -> (Park, String, Vec<Transition>) {
    let mut park = Park::open(site_file);
    let (sensors, span) = story(scenario, &park.site, true);
    let zone = zone_of(&park.site, &sensors);
    assert_eq!(members(&park.site, &zone), sensors.targets);
    park.play(scenario, extra);
    let store = park.gateway.store();
    let list = conditions(&store);
    let failed: BTreeSet<String> = sensors.targets.iter().cloned().collect();
    assert_eq!(raised_on(&list, Kind::SensorFault), failed, "{list:#?}");
    assert!(
        zones_raised(&list, Kind::ZoneUnobserved).contains(&zone),
        "{list:#?}"
    );
    assert!(zones_raised(&list, Kind::DarkZone).is_empty(), "{list:#?}");
    let windows = store
        .zone_windows(&park.site.id, &zone, span.0, span.1)
        .unwrap();
    let unobserved: Vec<_> = (windows.iter())
        .filter(|w| w.status == Status::Unobserved)
        .collect();
    assert!(unobserved.len() > 10, "{windows:#?}");
    assert!(
        (unobserved.iter()).all(|w| w
            .cause
            .as_deref()
            .is_some_and(|c| c.contains("failed sensors"))),
        "{unobserved:#?}"
    );
    assert!(!windows.iter().any(|w| w.status == Status::Dark));
    (park, zone, list)
}

#[test]
fn stuck_sensors_are_sensor_faults_and_leave_their_zone_unobserved_with_the_cause() {
    let _serial = one_at_a_time();
    failed_sensors(Scenario::SensorStuck, &remiseparken_file(), &[]);
}

#[test]
fn dead_sensors_leave_their_zone_unobserved_and_a_temporary_zone_outside_its_dates_is_not_judged() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    // The lawn becomes a temporary installation whose dates begin next year.
    let next_year = jiff::Timestamp::now().as_millisecond() + 365 * 24 * HOUR;
    let site_file = remiseparken_with(dir.path(), |json| {
        let features = json["features"].as_array_mut().unwrap();
        let lawn = (features.iter_mut())
            .find(|f| f["properties"]["zone"] == "lawn")
            .unwrap();
        lawn["properties"]["valid_from"] = jiff::Timestamp::from_millisecond(next_year)
            .unwrap()
            .to_string()
            .into();
    });
    let lawn = members(&Site::load(&site_file).unwrap(), "lawn");
    let lamp = format!("lamp@{}=+2h", lawn[0]);
    let (park, _, list) = failed_sensors(Scenario::SensorDead, &site_file, &["--faults", &lamp]);
    assert!(
        raised_on(&list, Kind::LampFault).contains(&lawn[0]),
        "{list:#?}"
    );
    assert!(
        !list
            .iter()
            .any(|t| t.zone.as_deref() == Some("lawn") && t.node.is_none()),
        "node conditions only: {list:#?}"
    );
    let windows = (park.gateway.store())
        .zone_windows(&park.site.id, "lawn", i64::MIN, i64::MAX)
        .unwrap();
    assert!(!windows.is_empty());
    assert!(windows.iter().all(|w| w.status == Status::NotJudged));
}

#[test]
fn a_lamp_whose_relay_sticks_is_a_day_burner_by_its_power() {
    let _serial = one_at_a_time();
    let mut park = Park::open(&remiseparken_file());
    let (burner, _) = story(Scenario::DayBurner, &park.site, true);
    park.play(Scenario::DayBurner, &[]);
    let list = conditions(&park.gateway.store());
    let raised: Vec<_> = list.iter().filter(|t| t.active).collect();
    assert_eq!(raised.len(), 1, "{list:#?}");
    assert_eq!(raised[0].kind, Kind::DayBurner);
    assert_eq!(raised[0].node.as_ref(), Some(&burner.targets[0]));
    assert!(raised[0].detail.contains(" W with the sun"), "{raised:#?}");
    // The operators' energy: the burner's zone burnt some in daylight, every other zone
    // next to none.
    let energy = park.energy(burner.start_ms.unwrap() - HOUR);
    let zone = park
        .site
        .node(&burner.targets[0])
        .unwrap()
        .zone
        .clone()
        .unwrap();
    let daylight = |z: &serde_json::Value| z["total"]["daylight_kwh"].as_f64().unwrap();
    let zones = energy["zones"].as_array().unwrap();
    let (burning, others): (Vec<_>, Vec<_>) =
        zones.iter().partition(|z| z["zone"] == zone.as_str());
    let burnt = daylight(burning[0]);
    assert!(
        burnt > 0.02 && burning[0]["daylight_share"].as_f64() > Some(0.0),
        "{energy:#}"
    );
    assert!(
        others.iter().all(|z| daylight(z) < burnt / 10.0),
        "{energy:#}"
    );
}

#[test]
fn a_flapping_lamp_raises_and_clears_its_lamp_fault_on_that_node_alone() {
    let _serial = one_at_a_time();
    let mut park = Park::open(&remiseparken_file());
    let (flapping, _) = story(Scenario::FlappingLamp, &park.site, true);
    park.play(Scenario::FlappingLamp, &[]);
    let list = conditions(&park.gateway.store());
    let on_nodes: BTreeSet<_> = list.iter().filter_map(|t| t.node.clone()).collect();
    assert_eq!(
        on_nodes,
        BTreeSet::from([flapping.targets[0].clone()]),
        "{list:#?}"
    );
    let lamp: Vec<_> = (list.iter())
        .filter(|t| t.kind == Kind::LampFault)
        .collect();
    let raised = lamp.iter().filter(|t| t.active).count();
    assert!(raised >= 3, "it came and went: {lamp:#?}");
    assert_eq!(lamp.len(), 2 * raised, "each cleared: {lamp:#?}");
}

#[test]
fn a_power_cut_takes_every_node_offline_and_its_windows_say_power_loss() {
    let _serial = one_at_a_time();
    let mut park = Park::open(&remiseparken_file());
    let (_, span) = story(Scenario::PowerCut, &park.site, true);
    park.play(Scenario::PowerCut, &[]);
    let store = park.gateway.store();
    let list = conditions(&store);
    let every: BTreeSet<String> = park.site.nodes.iter().map(|n| n.id.clone()).collect();
    assert_eq!(raised_on(&list, Kind::NodeOffline), every, "{list:#?}");
    assert!(all_cleared(&list), "power came back: {list:#?}");
    assert!(
        (list.iter()).all(|t| matches!(t.kind, Kind::NodeOffline | Kind::ZoneUnobserved)),
        "{list:#?}"
    );
    // 20 s to 80 s of wall time at 60 times: the cut's simulated hour.
    let (cut, back) = (span.0 + 20 * 60_000, span.0 + 80 * 60_000);
    let window = i64::from(parklight_site::DEFAULT_WINDOW_S) * 1000;
    for zone in &park.site.zones {
        let windows = store
            .zone_windows(&park.site.id, &zone.id, cut, back)
            .unwrap();
        let during: Vec<_> = (windows.iter())
            .filter(|w| w.start >= cut + 2 * window && w.end <= back - 2 * window)
            .collect();
        assert!(during.len() >= 6, "{}: {windows:#?}", zone.id);
        assert!(
            during.iter().all(|w| w.status == Status::Unobserved
                && w.cause
                    .as_deref()
                    .is_some_and(|c| c.starts_with("power loss"))),
            "{}: {during:#?}",
            zone.id
        );
    }
    assert_replays(&store, &park.site);
}

#[test]
fn a_night_circuit_switched_off_at_dawn_raises_nothing() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    // The entrances hang on a feeder switched on at dusk and off at dawn.
    let site_file = remiseparken_with(dir.path(), |json| {
        for feature in json["features"].as_array_mut().unwrap() {
            let zone = feature["properties"]["zone"].as_str().unwrap_or_default();
            if feature["properties"]["node"].is_string() && zone.starts_with("entrance") {
                feature["properties"]["circuit"] =
                    serde_json::json!({"id": "entrance-feeder", "powered": "night"});
            }
        }
    });
    let mut park = Park::open(&site_file);
    let (_, night) = story(Scenario::NightCircuit, &park.site, true);
    park.play(Scenario::NightCircuit, &["--speed", "2880"]);
    let store = park.gateway.store();
    let list = conditions(&store);
    assert!(list.is_empty(), "{list:#?}");
    let alerts = store.alerts(false).unwrap();
    assert!(
        alerts.is_empty(),
        "no alert through dawn either: {alerts:#?}"
    );
    // The feeder did switch: the entrances reported only between sunset and sunrise.
    let sunrise = parklight_core::solar::next_sunrise(night.0 + HOUR, park.site.lat, park.site.lon);
    let sunset = night.0 + HOUR;
    let reports = store.reports_after(0, 1_000_000).unwrap();
    for node in ["pole-038", "pole-039", "pole-040"] {
        let times: Vec<i64> = (reports.iter())
            .filter(|r| r.node == node)
            .map(|r| r.report.ts)
            .collect();
        let (first, last) = (*times.iter().min().unwrap(), *times.iter().max().unwrap());
        assert!(
            first >= sunset && last <= sunrise + 5 * 60_000,
            "{node}: {first} {last}"
        );
        assert!(last >= sunrise - 30 * 60_000, "{node} lit until dawn");
    }
}
