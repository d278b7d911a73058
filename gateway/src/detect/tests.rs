//! The detectors as state machines: facts in, transitions and windows out.

use parklight_protocol::alert::Severity;
use parklight_protocol::telemetry::Lux;
use parklight_site::Site;

use super::model::Model;
use super::*;
use crate::store::ReportRow;

const MINUTE: i64 = 60_000;
const DAY: i64 = 86_400_000;

/// Copenhagen in winter: the path (P4, two poles), a gate on a night circuit, and a
/// fence lit only in June. Site profile: full at sunset, 50 % declaring P5 at midnight,
/// a boost to 100 %.
const SITE: &str = r#"{"type":"FeatureCollection",
"site":{"id":"p","name":"P","timezone":"Europe/Copenhagen","lat":55.66,"lon":12.59,"interval_s":60,
 "profile":[{"at":"sunset","level":100},{"at":"00:00","level":50,"class":"P5"}],
 "motion_boost":{"level":100,"hold_s":120}},
"features":[
{"type":"Feature","properties":{"zone":"path","class":"P4"},"geometry":{"type":"Polygon","coordinates":[[[12.5,55.6],[12.7,55.6],[12.7,55.7],[12.5,55.7],[12.5,55.6]]]}},
{"type":"Feature","properties":{"zone":"gate","class":"P4"},"geometry":{"type":"Polygon","coordinates":[[[12.8,55.6],[12.9,55.6],[12.9,55.7],[12.8,55.7],[12.8,55.6]]]}},
{"type":"Feature","properties":{"zone":"fence","class":"P4","valid_from":"2026-06-01T00:00:00Z","valid_to":"2026-07-01T00:00:00Z"},"geometry":{"type":"Polygon","coordinates":[[[13.0,55.6],[13.1,55.6],[13.1,55.7],[13.0,55.7],[13.0,55.6]]]}},
{"type":"Feature","properties":{"node":"a","calibration":0.5},"geometry":{"type":"Point","coordinates":[12.6,55.65]}},
{"type":"Feature","properties":{"node":"b","metered":true,"rated_w":40},"geometry":{"type":"Point","coordinates":[12.61,55.65]}},
{"type":"Feature","properties":{"node":"g","circuit":{"id":"feeder","powered":"night"}},"geometry":{"type":"Point","coordinates":[12.85,55.65]}},
{"type":"Feature","properties":{"node":"f"},"geometry":{"type":"Point","coordinates":[13.05,55.65]}}
]}"#;

/// 2026-01-15 22:00 UTC (23:00 in Copenhagen): dark, before the midnight step.
const NIGHT: i64 = 1_768_514_400_000;
/// 2026-01-15 11:00 UTC: the sun about 11° up.
const NOON: i64 = NIGHT - 11 * 3_600_000;

fn detector() -> Detector {
    let site = Site::parse(SITE, "test").unwrap();
    Detector::new(Model::of(&[site]), Settings::default(), State::default())
}

fn report(ts: i64, lux: Option<f64>, motion: u32, level: u8) -> ReportRow {
    ReportRow {
        boot: 1,
        seq: 0,
        ts,
        clock_ok: true,
        received: ts,
        period_s: 60,
        lux: lux.map(|v| Lux {
            avg: v,
            min: v * 0.8,
            max: v * 1.2,
        }),
        motion,
        lamp_on: level > 0,
        lamp_level: level,
        power_w: Some(f64::from(level) * 0.4),
        cfg: Some(1),
        faults: 0,
        temp_c: None,
        zone: None,
    }
}

/// Feeds `minutes` of reports from `nodes` starting after `from`, each minute's reading
/// from `reading(node, ts)` as (lux, motion, level).
fn feed(
    detector: &mut Detector,
    nodes: &[&str],
    from: i64,
    minutes: i64,
    reading: impl Fn(&str, i64) -> (Option<f64>, u32, u8),
) -> Vec<Output> {
    let mut out = Vec::new();
    for minute in 1..=minutes {
        let ts = from + minute * MINUTE;
        for node in nodes {
            let (lux, motion, level) = reading(node, ts);
            let fact = Fact::Report {
                node: (*node).into(),
                report: report(ts, lux, motion, level),
            };
            detector.apply(&fact, &mut out);
        }
    }
    out
}

fn transitions(out: &[Output]) -> Vec<&Transition> {
    out.iter()
        .filter_map(|o| match o {
            Output::Transition(t) => Some(t),
            Output::Window(_) => None,
        })
        .collect()
}

fn windows<'o>(out: &'o [Output], zone: &str) -> Vec<&'o ZoneWindow> {
    out.iter()
        .filter_map(|o| match o {
            Output::Window(w) if w.zone == zone => Some(w),
            _ => None,
        })
        .collect()
}

/// Readings of a healthy path at night: a reads 12 (6 lx on the path), b 7.
fn healthy(node: &str, _ts: i64) -> (Option<f64>, u32, u8) {
    (Some(if node == "a" { 12.0 } else { 7.0 }), 0, 100)
}

#[test]
fn a_lit_zone_raises_nothing_and_is_lit_by_night_and_not_judged_by_day() {
    let mut d = detector();
    let night = feed(&mut d, &["a", "b"], NIGHT, 30, healthy);
    assert!(transitions(&night).is_empty(), "{night:#?}");
    let judged = windows(&night, "path");
    assert_eq!(
        judged.len(),
        6,
        "every window a report reached the end of: {judged:#?}"
    );
    assert!(judged.iter().all(|w| w.status == Status::Lit));
    // Calibrated: a's 12 lx reading is 6 lx on the path.
    assert!(
        (judged[0].lux_avg.unwrap() - 6.5).abs() < 1e-9,
        "{:?}",
        judged[0]
    );
    assert_eq!((judged[0].required_avg, judged[0].required_min), (5.0, 1.0));

    let mut d = detector();
    let day = feed(&mut d, &["a", "b"], NOON, 30, |_, _| (Some(5000.0), 0, 0));
    let judged = windows(&day, "path");
    assert!(
        judged.iter().all(|w| w.status == Status::NotJudged),
        "{judged:#?}"
    );
    assert!(transitions(&day).is_empty());
}

#[test]
fn a_window_waits_for_every_node_of_its_zone_or_for_word_that_one_is_gone() {
    let mut d = detector();
    let only_a = feed(&mut d, &["a"], NIGHT, 12, healthy);
    assert!(
        windows(&only_a, "path").is_empty(),
        "b has not reported past the end"
    );
    let mut out = Vec::new();
    d.apply(
        &Fact::Offline {
            node: "b".into(),
            boot: 1,
            conn: 1,
            lost: false,
            received: NIGHT,
        },
        &mut out,
    );
    let judged = windows(&out, "path");
    assert_eq!(
        judged.len(),
        2,
        "b shut down: a's windows are judged: {out:#?}"
    );
    // One of two nodes valid is half: observed.
    assert_eq!(judged[0].valid_nodes, 1);
    assert_eq!(judged[0].cause.as_deref(), Some("offline: b"));
    assert!(
        transitions(&out).is_empty(),
        "a clean shutdown raises nothing"
    );
}

#[test]
fn a_dark_zone_is_raised_after_two_windows_and_its_severity_follows_the_detections() {
    let mut d = detector();
    // 3 lx and 2 lx on the path against P4's 5: dark, nobody there.
    let out = feed(&mut d, &["a", "b"], NIGHT, 5, |_, _| (Some(3.0), 0, 100));
    assert!(
        transitions(&out).is_empty(),
        "one dark window raises nothing"
    );
    assert_eq!(windows(&out, "path")[0].status, Status::Dark);
    let out = feed(&mut d, &["a", "b"], NIGHT + 5 * MINUTE, 5, |_, _| {
        (Some(3.0), 0, 100)
    });
    let raised = transitions(&out);
    assert_eq!(raised.len(), 1, "{out:#?}");
    assert_eq!(
        (raised[0].kind, raised[0].severity),
        (Kind::DarkZone, Severity::Low)
    );
    assert!(raised[0].active);
    assert_eq!(
        raised[0].since, NIGHT,
        "since the start of the first dark window"
    );

    // People arrive: high, then critical past the configured count: each a transition.
    let out = feed(&mut d, &["a", "b"], NIGHT + 10 * MINUTE, 5, |_, _| {
        (Some(3.0), 1, 100)
    });
    let rise = transitions(&out);
    assert_eq!(rise.len(), 1);
    assert_eq!((rise[0].severity, rise[0].since), (Severity::High, NIGHT));
    assert_eq!(windows(&out, "path")[0].occupied_dark_minutes, 5);
    assert_eq!(windows(&out, "path")[0].detections_dark, 10);
    let out = feed(&mut d, &["a", "b"], NIGHT + 15 * MINUTE, 5, |_, _| {
        (Some(3.0), 3, 100)
    });
    assert_eq!(transitions(&out)[0].severity, Severity::Critical);
    let out = feed(&mut d, &["a", "b"], NIGHT + 20 * MINUTE, 5, |_, _| {
        (Some(3.0), 0, 100)
    });
    assert!(
        transitions(&out).is_empty(),
        "a fall in severity is no transition"
    );
}

#[test]
fn clearing_needs_two_windows_above_the_class_by_the_margin() {
    let mut d = detector();
    feed(&mut d, &["a", "b"], NIGHT, 10, |_, _| (Some(3.0), 0, 100));
    assert!(
        d.state().zones["p"]["path"]
            .active
            .contains_key(&Kind::DarkZone)
    );
    // 5.2 lx on the path: lit, but within 10 % of 5: never clears.
    let just = |node: &str, _| (Some(if node == "a" { 10.4 } else { 5.2 }), 0, 100);
    let out = feed(&mut d, &["a", "b"], NIGHT + 10 * MINUTE, 20, just);
    assert!(
        windows(&out, "path")
            .iter()
            .all(|w| w.status == Status::Lit)
    );
    assert!(transitions(&out).is_empty(), "{out:#?}");
    let out = feed(&mut d, &["a", "b"], NIGHT + 30 * MINUTE, 5, healthy);
    assert!(
        transitions(&out).is_empty(),
        "one clearly lit window is not enough"
    );
    let out = feed(&mut d, &["a", "b"], NIGHT + 35 * MINUTE, 5, healthy);
    let cleared = transitions(&out);
    assert_eq!(cleared.len(), 1);
    assert!(!cleared[0].active);
    assert_eq!(cleared[0].since, NIGHT);
}

#[test]
fn after_midnight_the_zone_is_held_to_the_class_its_step_declares() {
    // 3.5 lx: below P4 (5) before midnight local, above P5 (3) after.
    let dim = |_: &str, _| (Some(if true { 3.5 } else { 0.0 }), 0, 50);
    let calibrated = |node: &str, ts| {
        let (lux, m, l) = dim(node, ts);
        (lux.map(|v| if node == "a" { v * 2.0 } else { v }), m, l)
    };
    let mut d = detector();
    let before = feed(&mut d, &["a", "b"], NIGHT, 10, calibrated);
    assert!(
        windows(&before, "path")
            .iter()
            .all(|w| w.status == Status::Dark)
    );
    let mut d = detector();
    let midnight = NIGHT + 60 * MINUTE;
    let after = feed(&mut d, &["a", "b"], midnight, 10, calibrated);
    let judged = windows(&after, "path");
    assert!(
        judged.iter().all(|w| w.status == Status::Lit),
        "{judged:#?}"
    );
    assert_eq!((judged[0].required_avg, judged[0].required_min), (3.0, 0.6));
    // A report straddling the step is held to each class for its share of its span.
    let mut d = detector();
    let out = feed(&mut d, &["a", "b"], midnight - 30_000, 6, calibrated);
    let first = windows(&out, "path")[0];
    assert!((first.required_avg - 3.2).abs() < 0.01, "{first:?}");
}

#[test]
fn a_pole_with_detections_must_reach_the_full_class_minimum_then_or_in_the_next_window() {
    // After midnight P5 is in force: 3.4 lx avg and 0.64 lx min are lit, but b's
    // readings (max 0.96 lx) stay below P4's minimum of 1 lx while people pass it.
    let faint = |node: &str, ts: i64| {
        let motion = u32::from(node == "b" && ts <= NIGHT + 65 * MINUTE);
        (Some(if node == "a" { 12.0 } else { 0.8 }), motion, 50)
    };
    let mut d = detector();
    let out = feed(&mut d, &["a", "b"], NIGHT + 60 * MINUTE, 10, faint);
    let judged = windows(&out, "path");
    // Window 1: b owes a boost; window 2: it did not come.
    assert_eq!(judged[0].status, Status::Lit, "{judged:#?}");
    assert_eq!(judged[1].status, Status::Dark, "{judged:#?}");
    // The same with b brightening in the next window: lit.
    let boosted = |node: &str, ts: i64| {
        let (lux, motion, _) = faint(node, ts);
        let late = ts > NIGHT + 65 * MINUTE;
        (
            if node == "b" && late { Some(2.0) } else { lux },
            motion,
            50,
        )
    };
    let mut d = detector();
    let out = feed(&mut d, &["a", "b"], NIGHT + 60 * MINUTE, 10, boosted);
    let judged = windows(&out, "path");
    assert!(
        judged.iter().all(|w| w.status != Status::Dark),
        "{judged:#?}"
    );
}

#[test]
fn too_few_valid_readings_make_a_zone_unobserved_with_its_cause_never_dark_or_lit() {
    let mut d = detector();
    let out = feed(&mut d, &["a", "b"], NIGHT, 15, |_, _| (None, 0, 100));
    let judged = windows(&out, "path");
    assert!(judged.iter().all(|w| w.status == Status::Unobserved));
    assert_eq!(judged[2].cause.as_deref(), Some("failed sensors: a, b"));
    let kinds: Vec<(Kind, bool)> = transitions(&out)
        .iter()
        .map(|t| (t.kind, t.active))
        .collect();
    assert!(kinds.contains(&(Kind::ZoneUnobserved, true)), "{kinds:?}");
    assert!(kinds.contains(&(Kind::SensorFault, true)), "{kinds:?}");
    assert!(!kinds.iter().any(|(k, _)| *k == Kind::DarkZone));
}

#[test]
fn a_will_of_the_current_connection_raises_node_offline_a_stale_one_does_not() {
    let mut d = detector();
    feed(&mut d, &["a", "b"], NIGHT, 3, healthy);
    let mut out = Vec::new();
    let online = Fact::Online {
        node: "b".into(),
        boot: 1,
        conn: 2,
        interval_s: Some(60),
        cfg: Some(1),
        received: NIGHT,
    };
    d.apply(&online, &mut out);
    let will = |conn| Fact::Offline {
        node: "b".into(),
        boot: 1,
        conn,
        lost: true,
        received: NIGHT + 3 * MINUTE + 30_000,
    };
    d.apply(&will(1), &mut out);
    assert!(
        transitions(&out).is_empty(),
        "a will of an older connection"
    );
    d.apply(&will(2), &mut out);
    let raised = transitions(&out);
    assert_eq!(
        (raised[0].kind, raised[0].active),
        (Kind::NodeOffline, true)
    );
    assert_eq!(
        raised[0].since,
        NIGHT + 3 * MINUTE + 30_000,
        "on the node's clock"
    );
    let back = feed(&mut d, &["a", "b"], NIGHT + 3 * MINUTE, 1, healthy);
    assert_eq!(transitions(&back).len(), 1);
    assert!(!transitions(&back)[0].active);
}

#[test]
fn a_node_on_a_night_circuit_that_went_at_dawn_is_expected_off_until_dusk() {
    // 2026-01-16 sunrise in Copenhagen is about 07:30 UTC.
    let dawn = NIGHT + 9 * 3_600_000 + 30 * MINUTE;
    for (last, offline) in [(dawn, false), (NIGHT, true)] {
        let mut d = detector();
        feed(&mut d, &["g"], last - MINUTE, 1, healthy);
        let mut out = Vec::new();
        let silent = Fact::Silent {
            node: "g".into(),
            received: last + 3 * MINUTE,
        };
        d.apply(&silent, &mut out);
        assert_eq!(
            !transitions(&out).is_empty(),
            offline,
            "last report at {last}: {out:#?}"
        );
    }
}

#[test]
fn a_late_report_revises_its_window_but_raises_nothing() {
    let mut d = detector();
    let out = feed(&mut d, &["a", "b"], NIGHT, 10, healthy);
    let first = windows(&out, "path")[0].clone();
    let mut out = Vec::new();
    let mut late = report(NIGHT + 2 * MINUTE + 1000, Some(0.0), 4, 100);
    late.seq = 99;
    d.apply(
        &Fact::Report {
            node: "a".into(),
            report: late,
        },
        &mut out,
    );
    let revised = windows(&out, "path");
    assert_eq!(revised.len(), 1);
    assert!(revised[0].revised);
    assert_eq!((revised[0].start, revised[0].end), (first.start, first.end));
    assert_eq!(revised[0].status, first.status);
    assert_eq!(revised[0].detections, first.detections + 4);
    assert!(revised[0].lux_avg < first.lux_avg);
    assert!(transitions(&out).is_empty());
}

#[test]
fn a_lamp_that_stops_giving_its_learned_light_is_a_lamp_fault_until_it_does_again() {
    let mut d = detector();
    let out = feed(&mut d, &["a", "b"], NIGHT, 30, healthy);
    assert!(transitions(&out).is_empty());
    // b's lamp goes out: it reads the night, 0.1 lx, and draws nothing.
    let out_lamp = |node: &str, ts| {
        if node == "b" {
            (Some(0.1), 0, 100)
        } else {
            healthy(node, ts)
        }
    };
    let out = feed(&mut d, &["a", "b"], NIGHT + 30 * MINUTE, 15, out_lamp);
    let raised: Vec<_> = transitions(&out)
        .into_iter()
        .filter(|t| t.kind == Kind::LampFault)
        .collect();
    assert_eq!(raised.len(), 1, "{out:#?}");
    assert_eq!(raised[0].node.as_deref(), Some("b"));
    let out = feed(&mut d, &["a", "b"], NIGHT + 45 * MINUTE, 20, healthy);
    let cleared: Vec<_> = transitions(&out)
        .into_iter()
        .filter(|t| t.kind == Kind::LampFault)
        .collect();
    assert_eq!(cleared.len(), 1, "{out:#?}");
    assert!(!cleared[0].active);
}

#[test]
fn a_reading_that_does_not_move_while_the_lamp_does_is_a_sensor_fault() {
    let mut d = detector();
    let stuck = |_: &str, ts: i64| {
        (
            Some(9.0),
            0,
            if ((ts - 1) / (5 * MINUTE)) % 2 == 0 {
                100
            } else {
                60
            },
        )
    };
    let out = feed(&mut d, &["a"], NIGHT, 30, stuck);
    assert!(
        transitions(&out)
            .iter()
            .any(|t| t.kind == Kind::SensorFault && t.active)
    );
    // A steady reading at a steady level all night is healthy.
    let mut d = detector();
    let out = feed(&mut d, &["a"], NIGHT, 60, |_, _| (Some(9.0), 0, 100));
    assert!(transitions(&out).is_empty(), "{out:#?}");
}

#[test]
fn a_lamp_on_by_day_is_a_day_burner_but_not_just_after_a_boot() {
    let mut d = detector();
    let out = feed(&mut d, &["a"], NOON, 30, |_, _| (Some(5000.0), 0, 100));
    let burning: Vec<_> = transitions(&out)
        .into_iter()
        .filter(|t| t.kind == Kind::DayBurner)
        .collect();
    assert_eq!(burning.len(), 1, "{out:#?}");
    assert!(
        burning[0].ts >= NOON + 15 * MINUTE,
        "not within the boot's grace"
    );
    let mut d = detector();
    let out = feed(&mut d, &["a"], NOON, 14, |_, _| (Some(5000.0), 0, 100));
    assert!(transitions(&out).is_empty());
}

#[test]
fn a_temporary_zone_outside_its_dates_is_not_judged_and_its_node_faults_still_count() {
    let mut d = detector();
    let out = feed(&mut d, &["f"], NIGHT, 20, |_, _| (None, 0, 100));
    let judged = windows(&out, "fence");
    assert!(!judged.is_empty());
    assert!(judged.iter().all(|w| w.status == Status::NotJudged));
    let kinds: Vec<Kind> = transitions(&out).iter().map(|t| t.kind).collect();
    assert_eq!(kinds, vec![Kind::SensorFault]);
}

#[test]
fn a_snapshot_of_the_state_carries_on_exactly_as_the_run_it_was_taken_from() {
    let dark_then_lit = |node: &str, ts: i64| {
        if ts < NIGHT + 20 * MINUTE {
            (Some(3.0), 1, 100)
        } else {
            healthy(node, ts)
        }
    };
    let mut straight = detector();
    let all = feed(&mut straight, &["a", "b"], NIGHT, 40, dark_then_lit);
    let mut first = detector();
    let mut out = feed(&mut first, &["a", "b"], NIGHT, 13, dark_then_lit);
    let snapshot = serde_json::to_string(first.state()).unwrap();
    let state: State = serde_json::from_str(&snapshot).unwrap();
    let site = Site::parse(SITE, "test").unwrap();
    let mut resumed = Detector::new(Model::of(&[site]), Settings::default(), state);
    let shifted = |node: &str, ts: i64| dark_then_lit(node, ts);
    out.extend(feed(
        &mut resumed,
        &["a", "b"],
        NIGHT + 13 * MINUTE,
        27,
        shifted,
    ));
    assert_eq!(out, all);
    assert_eq!(transitions(&all).len(), 2, "raised and cleared: {all:#?}");
}

#[test]
fn a_will_left_from_before_any_report_does_not_move_the_zone_to_the_wall_clock() {
    let mut d = detector();
    let mut out = Vec::new();
    // A retained shutdown of an earlier run, read at start: the wall clock is a year on.
    let stale = Fact::Offline {
        node: "b".into(),
        boot: 1,
        conn: 1,
        lost: false,
        received: NIGHT + 365 * 24 * 60 * MINUTE,
    };
    d.apply(&stale, &mut out);
    out.extend(feed(&mut d, &["a", "b"], NIGHT, 10, healthy));
    let judged = windows(&out, "path");
    assert_eq!(judged.len(), 2, "{judged:#?}");
    assert!(
        judged
            .iter()
            .all(|w| w.valid_nodes == 2 && w.status == Status::Lit)
    );
}

#[test]
fn the_class_in_force_is_the_one_of_the_config_version_the_nodes_report_running() {
    use parklight_protocol::Message;
    let midnight = NIGHT + 60 * MINUTE;
    let config = |cfg| {
        let text = format!(
            r#"{{"v":1,"id":"c-{cfg}","cfg":{cfg},"profile":[{{"at":"sunset","level":100}},{{"at":"00:00","level":30,"class":"P6"}}]}}"#
        );
        parklight_protocol::Config::decode(text.as_bytes()).expect("a valid config");
        text
    };
    // 2.5 lx on the path after midnight: lit for P6 (2 lx), dark for P5 and P4.
    let dim = |node: &str, _| (Some(if node == "a" { 5.0 } else { 2.5 }), 0, 30);
    let run = |cfg: Option<u32>| {
        let mut d = detector();
        let mut out = Vec::new();
        for node in ["a", "b"] {
            let fact = Fact::Config {
                node: node.into(),
                cfg: 7,
                payload: config(7),
                received: midnight,
            };
            d.apply(&fact, &mut out);
        }
        let mut out = Vec::new();
        for minute in 1..=10 {
            for node in ["a", "b"] {
                let ts = midnight + minute * MINUTE;
                let (lux, motion, level) = dim(node, ts);
                let mut row = report(ts, lux, motion, level);
                row.cfg = cfg;
                d.apply(
                    &Fact::Report {
                        node: node.into(),
                        report: row,
                    },
                    &mut out,
                );
            }
        }
        windows(&out, "path")
            .iter()
            .map(|w| (w.status, w.required_avg))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        run(Some(7)),
        [(Status::Lit, 2.0); 2],
        "running version 7: P6"
    );
    assert_eq!(
        run(Some(1)),
        [(Status::Dark, 3.0); 2],
        "an unknown version: the site file's"
    );
    assert_eq!(
        run(None),
        [(Status::Dark, 5.0); 2],
        "no config: full, the zone's own class"
    );
}

fn one(d: &mut Detector, node: &str, report: ReportRow) -> Vec<Output> {
    let mut out = Vec::new();
    d.apply(
        &Fact::Report {
            node: node.into(),
            report,
        },
        &mut out,
    );
    out
}

#[test]
fn a_report_at_a_time_no_clock_can_have_is_left_out_and_the_night_goes_on() {
    let mut d = detector();
    feed(&mut d, &["a", "b"], NIGHT, 10, healthy);
    for ts in [i64::MAX, i64::MIN + 1, -1, NIGHT + 400 * 24 * 60 * MINUTE] {
        let mut hostile = report(ts, Some(7.0), 0, 100);
        hostile.received = NIGHT + 10 * MINUTE;
        assert!(one(&mut d, "b", hostile).is_empty(), "ts {ts}");
    }
    assert_eq!(d.state().implausible, 4);
    let out = feed(&mut d, &["a", "b"], NIGHT + 10 * MINUTE, 10, healthy);
    assert_eq!(windows(&out, "path").len(), 2, "the night is judged on");
}

#[test]
fn a_node_on_a_night_circuit_not_back_after_dusk_is_offline_and_one_never_heard_of_is_not_by_day() {
    let dawn = NIGHT + 9 * 3_600_000 + 30 * MINUTE;
    let mut d = detector();
    feed(&mut d, &["g"], dawn - MINUTE, 1, healthy);
    let silent = |received| Fact::Silent {
        node: "g".into(),
        received,
    };
    let mut out = Vec::new();
    d.apply(&silent(dawn + 3 * MINUTE), &mut out);
    assert!(transitions(&out).is_empty(), "expected off by day");
    let back = d.state().nodes["g"]
        .expected_back
        .expect("expected back at dusk");
    d.apply(&silent(dawn + 4 * 3_600_000), &mut out);
    assert!(transitions(&out).is_empty(), "still day");
    d.apply(&silent(back - dawn + dawn + 10 * MINUTE), &mut out);
    let raised = transitions(&out);
    assert_eq!(raised.len(), 1, "not back after dusk: {out:#?}");
    assert_eq!(
        (raised[0].kind, raised[0].active),
        (Kind::NodeOffline, true)
    );

    let mut d = detector();
    let mut out = Vec::new();
    d.apply(&silent(NOON), &mut out);
    assert!(
        transitions(&out).is_empty(),
        "never heard of, by day: {out:#?}"
    );
}

#[test]
fn one_detection_in_a_dark_window_is_one_occupied_minute() {
    let mut d = detector();
    let out = feed(&mut d, &["a", "b"], NIGHT, 10, |node, ts| {
        (
            Some(3.0),
            u32::from(node == "a" && ts == NIGHT + 3 * MINUTE),
            100,
        )
    });
    let first = windows(&out, "path")[0];
    assert_eq!(
        (first.status, first.occupied_dark_minutes),
        (Status::Dark, 1)
    );
}

#[test]
fn a_sensor_that_reads_now_and_then_does_not_flap() {
    let mut d = detector();
    let now_and_then = |_: &str, ts: i64| {
        let window = (ts - NIGHT - 1) / (5 * MINUTE);
        (if window % 3 == 2 { Some(9.0) } else { None }, 0, 100)
    };
    let out = feed(&mut d, &["a"], NIGHT, 90, now_and_then);
    let changes: Vec<bool> = transitions(&out)
        .iter()
        .filter(|t| t.kind == Kind::SensorFault)
        .map(|t| t.active)
        .collect();
    assert_eq!(
        changes,
        [true],
        "raised once, never cleared by single readings"
    );
}

#[test]
fn a_dead_lamp_through_the_dimming_step_is_a_lamp_fault_not_a_stuck_sensor() {
    let mut d = detector();
    let reading = |node: &str, ts: i64| {
        let level = if ts > NIGHT + 60 * MINUTE { 50 } else { 100 };
        if node == "b" && ts > NIGHT + 40 * MINUTE {
            (Some(0.0), 0, level)
        } else {
            let full = if node == "a" { 12.0 } else { 7.0 };
            (Some(full * f64::from(level) / 100.0 + 3.0), 0, level)
        }
    };
    let out = feed(&mut d, &["a", "b"], NIGHT, 120, reading);
    let kinds: Vec<(Kind, bool)> = transitions(&out)
        .iter()
        .filter(|t| t.node.as_deref() == Some("b"))
        .map(|t| (t.kind, t.active))
        .collect();
    assert_eq!(kinds, [(Kind::LampFault, true)], "{out:#?}");
}

#[test]
fn a_node_back_online_after_a_shutdown_is_waited_for_again() {
    let mut d = detector();
    feed(&mut d, &["a", "b"], NIGHT, 3, healthy);
    let mut out = Vec::new();
    let shutdown = Fact::Offline {
        node: "b".into(),
        boot: 1,
        conn: 1,
        lost: false,
        received: NIGHT + 4 * MINUTE,
    };
    d.apply(&shutdown, &mut out);
    assert!(d.state().nodes["b"].is_away());
    let birth = Fact::Online {
        node: "b".into(),
        boot: 2,
        conn: 1,
        interval_s: Some(60),
        cfg: Some(1),
        received: NIGHT + 5 * MINUTE,
    };
    d.apply(&birth, &mut out);
    assert!(!d.state().nodes["b"].is_away(), "its silence counts again");
    assert!(transitions(&out).is_empty());
}

#[test]
fn a_lamp_out_at_full_level_is_found_while_people_pass_but_not_where_a_boost_mixes_levels() {
    // b's lamp goes out while people pass: at full level a boost changes nothing.
    let busy_and_out = |level: u8| {
        move |node: &str, ts: i64| {
            let out = ts > NIGHT + 30 * MINUTE && node == "b";
            let lux = if out {
                0.1
            } else {
                healthy(node, ts).0.unwrap()
            };
            (Some(lux), 2, level)
        }
    };
    let lamp_faults = |out: &[Output]| {
        transitions(out)
            .into_iter()
            .filter(|t| t.kind == Kind::LampFault && t.active)
            .count()
    };
    let mut d = detector();
    let out = feed(&mut d, &["a", "b"], NIGHT, 50, busy_and_out(100));
    assert_eq!(lamp_faults(&out), 1, "{out:#?}");
    // Dimmed to 80 %, a detection may have boosted the lamp between two reports.
    let mut d = detector();
    let out = feed(&mut d, &["a", "b"], NIGHT, 50, busy_and_out(80));
    assert_eq!(lamp_faults(&out), 0, "{out:#?}");
}

#[test]
fn a_lamp_drawing_power_by_day_is_a_day_burner_whatever_level_it_reports() {
    let day = |watts: f64| {
        let mut d = detector();
        let mut out = Vec::new();
        for minute in 1..=30 {
            let mut r = report(NOON + minute * MINUTE, Some(5000.0), 0, 0);
            r.power_w = Some(watts);
            out.extend(one(&mut d, "b", r));
        }
        transitions(&out)
            .into_iter()
            .filter(|t| t.kind == Kind::DayBurner && t.active)
            .map(|t| t.detail.clone())
            .collect::<Vec<_>>()
    };
    // A relay stuck closed: the node commands 0 %, its 40 W lamp draws 40 W.
    let stuck = day(40.0);
    assert_eq!(stuck.len(), 1, "{stuck:?}");
    assert!(stuck[0].contains("40.0 W"), "{stuck:?}");
    assert!(day(0.2).is_empty(), "a driver's standby draw is off");
}

#[test]
fn windows_a_power_cut_left_unobserved_say_so() {
    let mut d = detector();
    feed(&mut d, &["a", "b"], NIGHT, 10, healthy);
    let mut out = Vec::new();
    for node in ["a", "b"] {
        let will = Fact::Offline {
            node: node.into(),
            boot: 1,
            conn: 1,
            lost: true,
            received: NIGHT + 10 * MINUTE + 30_000,
        };
        d.apply(&will, &mut out);
    }
    // Power returns 30 minutes later: each node boots, tells, and reports again.
    for node in ["a", "b"] {
        let lost = Fact::PowerLoss {
            node: node.into(),
            boot: 2,
        };
        d.apply(&lost, &mut out);
    }
    for minute in 41..=50 {
        for node in ["a", "b"] {
            let mut r = report(NIGHT + minute * MINUTE, healthy(node, 0).0, 0, 100);
            r.boot = 2;
            out.extend(one(&mut d, node, r));
        }
    }
    let cut: Vec<_> = windows(&out, "path")
        .into_iter()
        .filter(|w| w.start >= NIGHT + 15 * MINUTE && w.end <= NIGHT + 40 * MINUTE)
        .collect();
    assert_eq!(cut.len(), 5, "{out:#?}");
    for window in cut {
        assert_eq!(window.status, Status::Unobserved);
        assert_eq!(window.cause.as_deref(), Some("power loss: a, b"));
    }
}

#[test]
fn a_config_refused_or_not_run_in_time_is_not_applied_until_the_node_runs_it() {
    let mut d = detector();
    let mut out = Vec::new();
    let published = Fact::Config {
        node: "a".into(),
        cfg: 9,
        payload: String::new(),
        received: NIGHT,
    };
    d.apply(&published, &mut out);
    // Replayed reports of an older version, and the liveness monitor's finding.
    feed(&mut d, &["a"], NIGHT, 3, healthy);
    let late = Fact::ConfigLate {
        node: "a".into(),
        cfg: 9,
        received: NIGHT + 4 * MINUTE,
    };
    d.apply(&late, &mut out);
    let raised = transitions(&out);
    assert_eq!(raised.len(), 1, "{out:#?}");
    assert_eq!(
        (raised[0].kind, raised[0].active),
        (Kind::ConfigNotApplied, true)
    );
    assert_eq!(raised[0].detail, "runs config 1, not 9 published for it");
    // Its newest report runs it: cleared.
    let mut out = Vec::new();
    let mut row = report(NIGHT + 5 * MINUTE, Some(12.0), 0, 100);
    row.cfg = Some(9);
    out.extend(one(&mut d, "a", row));
    let cleared = transitions(&out);
    assert_eq!(
        (cleared[0].kind, cleared[0].active),
        (Kind::ConfigNotApplied, false)
    );
    // A refusal of the next version raises at once; one of an older version does not.
    let mut out = Vec::new();
    let answer = |cfg: u32| Fact::ConfigAnswer {
        node: "a".into(),
        cfg,
        applied: false,
        detail: "profile has 9 steps".into(),
        received: NIGHT + 6 * MINUTE,
    };
    d.apply(
        &Fact::Config {
            node: "a".into(),
            cfg: 10,
            payload: String::new(),
            received: NIGHT + 6 * MINUTE,
        },
        &mut out,
    );
    d.apply(&answer(8), &mut out);
    assert!(transitions(&out).is_empty());
    d.apply(&answer(10), &mut out);
    let refused = transitions(&out);
    assert_eq!(refused[0].detail, "config 10 refused: profile has 9 steps");
    // A birth running it clears it.
    let mut out = Vec::new();
    let birth = Fact::Online {
        node: "a".into(),
        boot: 2,
        conn: 1,
        interval_s: Some(60),
        cfg: Some(10),
        received: NIGHT + 7 * MINUTE,
    };
    d.apply(&birth, &mut out);
    assert!(!transitions(&out)[0].active);
}

#[test]
fn a_replaced_lamp_is_learned_afresh_not_judged_against_the_old_one() {
    let run = |replaced: bool| {
        let mut d = detector();
        let bright = |node: &str, ts| match node {
            "b" => (Some(40.0), 0, 100),
            _ => healthy(node, ts),
        };
        feed(&mut d, &["a", "b"], NIGHT, 30, bright);
        let mut out = Vec::new();
        if replaced {
            d.apply(&Fact::Replaced { node: "b".into() }, &mut out);
        }
        // The new lamp gives a fifth of the old one's light: plenty for the path.
        let dimmer = |node: &str, ts| match node {
            "b" => (Some(8.0), 0, 100),
            _ => healthy(node, ts),
        };
        out.extend(feed(&mut d, &["a", "b"], NIGHT + 30 * MINUTE, 30, dimmer));
        transitions(&out)
            .iter()
            .filter(|t| t.kind == Kind::LampFault && t.active)
            .count()
    };
    assert_eq!(run(false), 1, "against the old lamp it looks out");
    assert_eq!(run(true), 0);
}

#[test]
fn a_lamp_whose_light_falls_steadily_over_weeks_is_degraded_and_a_steady_one_is_not() {
    let nights = |fall_per_night: f64| {
        let mut d = detector();
        let mut out = Vec::new();
        for night in 0..30 {
            let light = 40.0 * (1.0 - fall_per_night * night as f64);
            let reading = move |node: &str, ts| match node {
                "b" => (Some(light), 0, 100),
                _ => healthy(node, ts),
            };
            out.extend(feed(&mut d, &["a", "b"], NIGHT + night * DAY, 20, reading));
        }
        transitions(&out)
            .into_iter()
            .filter(|t| t.kind == Kind::LampDegraded)
            .cloned()
            .collect::<Vec<_>>()
    };
    let degraded = nights(0.01);
    assert_eq!(degraded.len(), 1, "{degraded:#?}");
    assert!(degraded[0].active);
    assert_eq!(degraded[0].node.as_deref(), Some("b"));
    assert_eq!(degraded[0].severity, Severity::Low);
    assert!(degraded[0].detail.contains("% less than"), "{degraded:#?}");
    assert!(nights(0.0).is_empty(), "a steady lamp");
}

#[test]
fn without_a_rated_power_a_lamp_on_by_day_is_judged_against_what_it_drew_at_night() {
    let mut d = detector();
    // Node a has no `rated_w`: at night it learns 40 W at full (the test reports draw
    // 0.4 W a percent).
    feed(&mut d, &["a", "b"], NIGHT, 30, healthy);
    let mut out = Vec::new();
    for minute in 1..=30 {
        let mut r = report(NOON + DAY + minute * MINUTE, Some(5000.0), 0, 0);
        r.power_w = Some(38.0);
        out.extend(one(&mut d, "a", r));
    }
    let burning: Vec<_> = transitions(&out)
        .into_iter()
        .filter(|t| t.kind == Kind::DayBurner && t.active)
        .collect();
    assert_eq!(burning.len(), 1, "{out:#?}");
    assert_eq!(burning[0].node.as_deref(), Some("a"));
}
