use super::*;
use parklight_protocol::Message;

/// A site file around `features`, with `site` members added to the frame.
fn site_file(site: &str, features: &[&str]) -> String {
    format!(
        "{{\"type\":\"FeatureCollection\",\n\"site\":{{\"id\":\"p\",\"name\":\"P\",\"timezone\":\"Europe/Copenhagen\"{site}}},\n\"features\":[\n{}\n]}}",
        features.join(",\n")
    )
}

fn zone(id: &str, props: &str, ring: &str) -> String {
    format!(
        "{{\"type\":\"Feature\",\"properties\":{{\"zone\":\"{id}\",\"class\":\"P4\"{props}}},\"geometry\":{{\"type\":\"Polygon\",\"coordinates\":[{ring}]}}}}"
    )
}

fn node(id: &str, props: &str, at: [f64; 2]) -> String {
    format!(
        "{{\"type\":\"Feature\",\"properties\":{{\"node\":\"{id}\"{props}}},\"geometry\":{{\"type\":\"Point\",\"coordinates\":[{}, {}]}}}}",
        at[0], at[1]
    )
}

const UNIT: &str = "[[0,0],[1,0],[1,1],[0,1],[0,0]]";
const RIGHT: &str = "[[0.5,0],[2,0],[2,1],[0.5,1],[0.5,0]]";

fn messages(result: &Result<Checked, SiteError>) -> Vec<String> {
    match result {
        Ok(checked) => checked.warnings.iter().map(|w| w.to_string()).collect(),
        Err(e) => e.to_string().lines().map(str::to_owned).collect(),
    }
}

fn assert_finds(result: &Result<Checked, SiteError>, expected: &str) {
    let found = messages(result);
    assert!(
        found.iter().any(|m| m.contains(expected)),
        "missing {expected:?} in {found:#?}"
    );
}

#[test]
fn the_built_in_site_is_remiseparken() {
    let checked = Site::check(REMISEPARKEN_GEOJSON, "built in").unwrap();
    let site = checked.site;
    assert_eq!(site.id, "remiseparken");
    assert_eq!(site.nodes.len(), 40);
    assert!(
        site.nodes.iter().all(|n| n.zone.is_some()),
        "every pole is in a zone"
    );
    assert_eq!(site.zone("skatepark").unwrap().requirement.avg_lux, 10.0);
    let lawn_poles = site
        .nodes
        .iter()
        .filter(|n| n.zone.as_deref() == Some("lawn"))
        .count();
    assert_eq!(lawn_poles, 2, "placed by containment");
    assert!(
        checked
            .warnings
            .iter()
            .all(|w| w.message.contains("overlaps")),
        "overlapping zones are its only warnings: {:#?}",
        checked.warnings
    );
    assert!(!checked.warnings.is_empty(), "its zones overlap");
}

#[test]
fn remiseparken_dims_after_midnight_to_a_declared_class_with_a_boost() {
    let site = Site::remiseparken();
    let pole = site.node("pole-001").unwrap();
    assert_eq!(pole.zone.as_deref(), Some("main-path"));
    let desired = site.desired(pole);
    let lower = desired
        .profile
        .iter()
        .find(|s| s.class.is_some())
        .expect("a step declares a class");
    assert_eq!(lower.at, At::Local { hour: 0, minute: 0 });
    let zone = site.zone("main-path").unwrap();
    let in_force = zone.requirement.in_force(lower.class.as_deref());
    assert!(in_force.avg_lux < zone.requirement.avg_lux, "a lower class");
    assert!(desired.motion_boost.unwrap().level > lower.level);
    assert_eq!(desired.interval_s, 60);
    assert_eq!(desired.location.tz.as_str(), "CET-1CEST,M3.5.0,M10.5.0/3");
    assert_eq!(
        (desired.location.lat, desired.location.lon),
        (55.66, 12.594)
    );
    let lawn = site.zone("lawn").unwrap();
    let lawn_pole = site
        .nodes
        .iter()
        .find(|n| n.zone.as_deref() == Some("lawn"))
        .unwrap();
    assert_ne!(
        site.desired(lawn_pole).profile,
        desired.profile,
        "a zone's own profile wins over the site's"
    );
    assert_eq!(lawn.requirement.class.as_deref(), Some("P5"));
}

#[test]
fn a_site_without_lighting_gets_the_gateways_default() {
    let text = site_file("", &[&zone("a", "", UNIT), &node("n1", "", [0.5, 0.5])]);
    let site = Site::parse(&text, "x").unwrap();
    let desired = site.desired(&site.nodes[0]);
    assert_eq!(desired.profile, default_profile());
    assert_eq!(desired.profile[0].level, 100);
    assert_eq!(desired.motion_boost, None);
    assert_eq!(desired.interval_s, DEFAULT_INTERVAL_S);
    let config = desired.config(7);
    assert_eq!((config.cfg, config.id.as_str()), (7, "c-7"));
    let payload = config.to_payload().unwrap();
    assert_eq!(Config::decode(&payload).unwrap(), config, "a node reads it");
}

#[test]
fn posix_time_zones_come_from_the_tzif_footer() {
    assert_eq!(
        posix_tz("Europe/Copenhagen").unwrap().as_str(),
        "CET-1CEST,M3.5.0,M10.5.0/3"
    );
    assert_eq!(
        posix_tz("America/New_York").unwrap().as_str(),
        "EST5EDT,M3.2.0,M11.1.0"
    );
    assert_eq!(posix_tz("Asia/Tokyo").unwrap().as_str(), "JST-9");
    assert_eq!(posix_tz("Mars/Olympus"), None);
}

#[test]
fn every_problem_is_reported_with_its_line_and_feature() {
    let text = r#"{"type":"FeatureCollection",
"site":{"id":"Bad Park","name":"x","timezone":"Mars/Olympus"},
"features":[
 {"type":"Feature","properties":{"zone":"a","class":"P9"},"geometry":{"type":"Polygon","coordinates":[[[0,0],[1,0],[1,1],[0,0]]]}},
 {"type":"Feature","properties":{"node":"n1","zone":"nowhere"},"geometry":{"type":"Point","coordinates":[0.5,0.5]}},
 {"type":"Feature","properties":{"node":"n1"},"geometry":{"type":"Point","coordinates":[0.5,0.5]}}
]}"#;
    let err = Site::parse(text, "bad.geojson").unwrap_err();
    let report = err.to_string();
    for expected in [
        "bad.geojson:2: site id \"Bad Park\"",
        "bad.geojson:2: unknown time zone \"Mars/Olympus\"",
        "bad.geojson:4: feature 0: zone a: unknown class \"P9\"",
        "bad.geojson:5: feature 1: node n1: zone \"nowhere\" is not defined",
        "feature 2: node n1 is defined twice",
    ] {
        assert!(
            report.contains(expected),
            "missing {expected:?} in:\n{report}"
        );
    }
    let syntax = Site::parse("{\n\"type\": \n}", "x.geojson").unwrap_err();
    assert_eq!(syntax.problems[0].line, Some(3));
}

#[test]
fn where_nodes_lie_decides_between_warning_and_error() {
    let overlapping = site_file(
        "",
        &[
            &zone("a", "", UNIT),
            &zone("b", "", RIGHT),
            &node("outside", "", [5.0, 5.0]),
            &node("given", ",\"zone\":\"a\"", [0.7, 0.5]),
        ],
    );
    let checked = Site::check(&overlapping, "x");
    assert!(checked.is_ok(), "{:#?}", messages(&checked));
    assert_finds(
        &checked,
        "warning: feature 1: zone b overlaps zone a (feature 0)",
    );
    assert_finds(
        &checked,
        "warning: feature 2: node outside is outside every zone",
    );
    let ambiguous = site_file(
        "",
        &[
            &zone("a", "", UNIT),
            &zone("b", "", RIGHT),
            &node("both", "", [0.7, 0.5]),
        ],
    );
    let refused = Site::check(&ambiguous, "x");
    assert!(refused.is_err());
    assert_finds(&refused, "feature 2: node both lies inside zones a and b");
}

#[test]
fn bad_polygons_classes_and_dates_are_errors() {
    let text = site_file(
        "",
        &[
            &zone("open", "", "[[0,0],[1,0],[1,1],[0,1]]"),
            &zone("twisted", "", "[[0,0],[1,1],[1,0],[0,1],[0,0]]"),
            &zone(
                "fence",
                ",\"valid_from\":\"2026-11-01T00:00:00+01:00\",\"valid_to\":\"soon\"",
                UNIT,
            ),
            &zone(
                "backwards",
                ",\"valid_from\":\"2026-12-01T00:00:00Z\",\"valid_to\":\"2026-11-01T00:00:00Z\"",
                "[[3,3],[4,3],[4,4],[3,3]]",
            ),
        ],
    );
    let refused = Site::check(&text, "x");
    for expected in [
        "feature 0: zone open: bad polygon: the ring is not closed",
        "feature 1: zone twisted: bad polygon: the ring crosses itself",
        "feature 2: zone fence: valid_to \"soon\" is not an RFC 3339 time",
        "feature 3: zone backwards: valid_to is not after valid_from",
    ] {
        assert_finds(&refused, expected);
    }
}

#[test]
fn temporary_zones_exist_only_within_their_dates() {
    let text = site_file(
        "",
        &[&zone(
            "fence",
            ",\"valid_from\":\"2026-11-01T00:00:00+01:00\",\"valid_to\":\"2027-03-01T00:00:00+01:00\"",
            UNIT,
        )],
    );
    let site = Site::parse(&text, "x").unwrap();
    let fence = site.zone("fence").unwrap();
    let from = 1_793_487_600_000; // 2026-10-31T23:00:00Z
    assert_eq!(fence.valid_from, Some(from));
    assert!(!fence.is_valid_at(from - 1));
    assert!(fence.is_valid_at(from));
    assert!(!fence.is_valid_at(fence.valid_to.unwrap()));
}

#[test]
fn lighting_a_node_would_reject_is_an_error() {
    for (lighting, code) in [
        (
            ",\"profile\":[{\"at\":\"25:00\",\"level\":50}]",
            "out_of_range (at)",
        ),
        (",\"profile\":[{\"at\":\"sunset\",\"level\":101}]", "level"),
        (",\"profile\":[]", "profile"),
        (",\"interval_s\":0", "interval_s"),
        (
            ",\"motion_boost\":{\"level\":100}",
            "missing_field (hold_s)",
        ),
    ] {
        let text = site_file(lighting, &[&zone("a", "", UNIT)]);
        let refused = Site::check(&text, "x");
        assert!(refused.is_err(), "{lighting}");
        assert_finds(&refused, "site: a node would reject this lighting");
        assert_finds(&refused, code);
        let in_zone = site_file("", &[&zone("a", lighting, UNIT)]);
        assert_finds(
            &Site::check(&in_zone, "x"),
            "feature 0: zone a: a node would reject this lighting",
        );
    }
}

#[test]
fn a_lower_class_needs_a_motion_boost_and_a_known_class() {
    let dimmed = ",\"profile\":[{\"at\":\"sunset\",\"level\":100},{\"at\":\"00:00\",\"level\":40,\"class\":\"P6\"}]";
    let without = site_file(dimmed, &[&zone("a", "", UNIT)]);
    assert_finds(
        &Site::check(&without, "x"),
        "feature 0: zone a: the step at level 40 declares P6, lower than the zone's P4, without a motion boost",
    );
    let weak_boost = format!("{dimmed},\"motion_boost\":{{\"level\":40,\"hold_s\":60}}");
    assert!(Site::check(&site_file(&weak_boost, &[&zone("a", "", UNIT)]), "x").is_err());
    let boosted = format!("{dimmed},\"motion_boost\":{{\"level\":100,\"hold_s\":60}}");
    assert!(Site::check(&site_file(&boosted, &[&zone("a", "", UNIT)]), "x").is_ok());
    let higher = ",\"profile\":[{\"at\":\"sunset\",\"level\":100,\"class\":\"P1\"}]";
    assert!(
        Site::check(&site_file(higher, &[&zone("a", "", UNIT)]), "x").is_ok(),
        "a higher class asks nothing of the boost"
    );
    let unknown = ",\"profile\":[{\"at\":\"sunset\",\"level\":100,\"class\":\"M3\"}]";
    assert_finds(
        &Site::check(&site_file(unknown, &[&zone("a", "", UNIT)]), "x"),
        "zone a: a profile step declares unknown class \"M3\"",
    );
}

#[test]
fn a_zone_window_holds_whole_report_intervals() {
    let text = site_file(
        ",\"interval_s\":70",
        &[&zone("a", "", UNIT), &node("n1", "", [0.5, 0.5])],
    );
    assert_finds(
        &Site::check(&text, "x"),
        "zone a: its window of 300 s is not a multiple of its nodes' report interval of 70 s",
    );
    let fits = site_file(
        ",\"interval_s\":70",
        &[
            &zone("a", ",\"interval_s\":30,\"window_s\":600", UNIT),
            &node("n1", "", [0.5, 0.5]),
        ],
    );
    assert!(Site::check(&fits, "x").is_ok());
    let odd = site_file("", &[&zone("a", ",\"window_s\":420", UNIT)]);
    assert_finds(
        &Site::check(&odd, "x"),
        "window_s 420 must be whole seconds that divide a day",
    );
}

#[test]
fn nodes_carry_calibration_meters_and_circuits() {
    let text = site_file(
        "",
        &[
            &zone("a", "", UNIT),
            &node(
                "n1",
                ",\"calibration\":0.8,\"metered\":true,\"rated_w\":40,\"circuit\":{\"id\":\"feeder-2\",\"powered\":\"night\"}",
                [0.5, 0.5],
            ),
            &node("n2", "", [0.6, 0.5]),
        ],
    );
    let site = Site::parse(&text, "x").unwrap();
    let (n1, n2) = (site.node("n1").unwrap(), site.node("n2").unwrap());
    assert_eq!(
        (n1.calibration, n1.metered, n1.rated_w),
        (0.8, true, Some(40.0))
    );
    assert_eq!(
        n1.circuit,
        Circuit {
            id: "feeder-2".into(),
            powered: Powered::Night
        }
    );
    assert_eq!((n2.calibration, n2.metered, n2.rated_w), (1.0, false, None));
    assert_eq!(n2.circuit.id, DEFAULT_CIRCUIT);
    assert_eq!(n2.circuit.powered, Powered::Always);

    let clash = site_file(
        "",
        &[
            &zone("a", "", UNIT),
            &node(
                "n1",
                ",\"circuit\":{\"id\":\"f\",\"powered\":\"night\"}",
                [0.5, 0.5],
            ),
            &node("n2", ",\"circuit\":{\"id\":\"f\"}", [0.6, 0.5]),
            &node(
                "n3",
                ",\"circuit\":{\"id\":\"g\",\"powered\":\"sometimes\"}",
                [0.6, 0.6],
            ),
            &node("n4", ",\"calibration\":-1,\"metered\":\"yes\"", [0.6, 0.7]),
        ],
    );
    let refused = Site::check(&clash, "x");
    for expected in [
        "feature 2: node n2: circuit f is powered Night on another pole",
        "feature 3: node n3: circuit must be",
        "feature 4: node n4: \"calibration\" must be a number",
        "feature 4: node n4: metered must be true or false",
    ] {
        assert_finds(&refused, expected);
    }
}

#[test]
fn the_class_in_force_is_never_above_the_zones() {
    let p3 = Requirement::of_class("P3").unwrap();
    assert_eq!(p3.in_force(None), p3);
    assert_eq!(p3.in_force(Some("P5")).class.as_deref(), Some("P5"));
    assert_eq!(p3.in_force(Some("P1")), p3);
    assert_eq!(p3.in_force(Some("bogus")), p3);
    let explicit = Requirement {
        class: None,
        avg_lux: 4.0,
        min_lux: 0.5,
    };
    assert_eq!(explicit.in_force(Some("P4")), explicit);
    assert_eq!(explicit.in_force(Some("P5")).avg_lux, 3.0);
    assert_eq!(explicit.label(), "4/0.5 lx");
}

#[test]
fn synthetic_sites_have_the_asked_size() {
    let site = Site::synthetic(100);
    assert_eq!(site.nodes.len(), 100);
    assert_eq!(site.zones.len(), 13);
    assert!(
        site.nodes
            .iter()
            .all(|n| site.zone(n.zone.as_deref().unwrap()).is_some())
    );
}
