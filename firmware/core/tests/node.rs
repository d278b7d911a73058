//! The node state machine, driven by hand: inputs and time in, actions checked.

use parklight_core::control::{PHOTOCELL_OFF_LUX, PHOTOCELL_OFF_MS, PHOTOCELL_ON_MS};
use parklight_core::sensor::{Sample, SensorFailed};
use parklight_core::tz::days_from_civil;
use parklight_core::{Action, Identity, Input, Node, Now, Persist, Restored, Settings};
use parklight_protocol::{
    Ack, Config, DEFAULT_PREFIX, Event, EventKind, Id, Message, Status, Telemetry,
};

const LAT: f64 = 55.6605;
const LON: f64 = 12.5935;
const TZ: &str = "CET-1CEST,M3.5.0,M10.5.0/3";
const PREFIX: &str = "parklight/v1/remiseparken/pole-017";

fn utc(y: i32, mo: u32, d: u32, h: i64, mi: i64) -> i64 {
    (days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60) * 1000
}

#[derive(Debug, Clone, PartialEq)]
enum Done {
    Lamp(u8),
    Subscribe(String),
    Publish {
        topic: String,
        payload: String,
        retain: bool,
    },
    Persist(Persist),
}

struct Harness<const N: usize> {
    node: Node<N>,
    up_ms: u64,
    /// Unix ms at up_ms 0 (the clock the test gives the node).
    epoch: i64,
    done: Vec<Done>,
}

fn record(done: &mut Vec<Done>) -> impl FnMut(Action<'_>) + '_ {
    move |action| {
        done.push(match action {
            Action::SetLamp(level) => Done::Lamp(level),
            Action::Subscribe(topic) => Done::Subscribe(topic.to_owned()),
            Action::Publish {
                topic,
                payload,
                retain,
            } => Done::Publish {
                topic: topic.to_owned(),
                payload: String::from_utf8(payload.to_vec()).unwrap(),
                retain,
            },
            Action::Persist(what) => Done::Persist(what),
        })
    }
}

fn identity() -> Identity {
    Identity {
        prefix: heapless::String::try_from(DEFAULT_PREFIX).unwrap(),
        site: Id::new("remiseparken").unwrap(),
        node: Id::new("pole-017").unwrap(),
    }
}

fn config_json(cfg: u32, profile: &str, extra: &str) -> String {
    format!(
        r#"{{"v":1,"id":"c-{cfg}","cfg":{cfg},"interval_s":60,"location":{{"lat":{LAT},"lon":{LON},"tz":"{TZ}"}},"profile":{profile}{extra}}}"#
    )
}

impl<const N: usize> Harness<N> {
    fn start(epoch: i64, restored: Restored<N>, settings: Settings) -> Self {
        let mut done = Vec::new();
        let node = Node::start(
            identity(),
            settings,
            restored,
            false,
            Now {
                up_ms: 0,
                net_ms: 0,
            },
            &mut record(&mut done),
        );
        Harness {
            node,
            up_ms: 0,
            epoch,
            done,
        }
    }

    /// A node that knows the time, connected, with `config` applied.
    fn configured(epoch: i64, config: &str) -> Self {
        let mut h = Self::start(epoch, Restored::default(), Settings::default());
        h.input(Input::Clock(epoch));
        h.input(Input::Connected);
        h.message("config", config, true);
        h
    }

    fn now(&self) -> Now {
        Now {
            up_ms: self.up_ms,
            net_ms: self.up_ms,
        }
    }

    fn unix(&self) -> i64 {
        self.epoch + self.up_ms as i64
    }

    fn input(&mut self, input: Input<'_>) {
        let now = self.now();
        self.node.handle(now, input, &mut record(&mut self.done));
    }

    fn message(&mut self, kind: &str, payload: &str, retained: bool) {
        let topic = format!("{PREFIX}/{kind}");
        self.input(Input::Message {
            topic: &topic,
            payload: payload.as_bytes(),
            retained,
        });
    }

    /// Advances to `unix` in one-second ticks, feeding `lux(unix, lamp level)` every 5 s.
    fn run_until(&mut self, unix: i64, mut lux: impl FnMut(i64, u8) -> f64) {
        while self.unix() < unix {
            self.up_ms += 1000;
            if self.up_ms.is_multiple_of(5000) {
                let reading = lux(self.unix(), self.node.lamp_level());
                self.input(Input::Lux(Ok(Sample::Lux(reading))));
            } else {
                self.input(Input::Tick);
            }
        }
    }

    fn take(&mut self) -> Vec<Done> {
        std::mem::take(&mut self.done)
    }

    fn published(&mut self, kind: &str) -> Vec<String> {
        let topic = format!("{PREFIX}/{kind}");
        self.take()
            .into_iter()
            .filter_map(|d| match d {
                Done::Publish {
                    topic: t, payload, ..
                } if t == topic => Some(payload),
                _ => None,
            })
            .collect()
    }

    fn reports(&mut self) -> Vec<Telemetry> {
        self.published("telemetry")
            .iter()
            .map(|p| Telemetry::decode(p.as_bytes()).unwrap())
            .collect()
    }

    fn events(&mut self) -> Vec<Event> {
        self.published("event")
            .iter()
            .map(|p| Event::decode(p.as_bytes()).unwrap())
            .collect()
    }
}

/// What the photocell tests' lamp adds to its own sensor per percent: 60 lx at full
/// level, above [`PHOTOCELL_OFF_LUX`].
const OWN_LUX_PER_LEVEL: f64 = 0.6;

fn dark(_: i64, _: u8) -> f64 {
    0.5
}

#[test]
fn boot_counter_is_persisted_before_anything_is_published() {
    let restored = Restored::<8> {
        boot: 41,
        ..Restored::default()
    };
    let mut h = Harness::start(0, restored, Settings::default());
    assert_eq!(h.node.boot(), 42);
    h.input(Input::Connected);
    let done = h.take();
    assert_eq!(done[0], Done::Persist(Persist::Boot));
    let first_publish = done
        .iter()
        .position(|d| matches!(d, Done::Publish { .. }))
        .unwrap();
    assert!(first_publish > 0);
    let Done::Publish {
        payload,
        retain: true,
        ..
    } = &done[first_publish]
    else {
        panic!("{done:?}")
    };
    let Status::Online(birth) = Status::decode(payload.as_bytes()).unwrap() else {
        panic!()
    };
    assert_eq!(
        (birth.boot, birth.conn, birth.oldest.boot, birth.oldest.seq),
        (42, 1, 42, 0)
    );
    let started: Vec<Event> = done
        .iter()
        .filter_map(|d| match d {
            Done::Publish { topic, payload, .. } if topic.ends_with("/event") => {
                Event::decode(payload.as_bytes()).ok()
            }
            _ => None,
        })
        .collect();
    assert!(
        matches!(
            &started[..],
            [Event {
                kind: EventKind::Reboot,
                boot: 42,
                ..
            }]
        ),
        "a restart is announced: {started:?}"
    );
}

#[test]
fn lamp_follows_sunset_and_sunrise() {
    let profile = r#"[{"at":"sunset","level":100}]"#;
    let mut h = Harness::<8>::configured(utc(2026, 11, 25, 12, 0), &config_json(3, profile, ""));
    h.run_until(utc(2026, 11, 25, 14, 45), dark);
    assert_eq!(h.node.lamp_level(), 0, "off by day");
    h.run_until(utc(2026, 11, 25, 14, 55), dark);
    assert_eq!(h.node.lamp_level(), 100, "on after sunset (14:50 UTC)");
    h.run_until(utc(2026, 11, 26, 7, 0), dark);
    assert_eq!(h.node.lamp_level(), 100, "on through the night");
    h.run_until(utc(2026, 11, 26, 7, 10), dark);
    assert_eq!(h.node.lamp_level(), 0, "off after sunrise (07:05 UTC)");
}

#[test]
fn a_summer_night_shorter_than_the_profile_skips_late_steps() {
    // Midsummer: sunset 21:57, sunrise 04:25 local. The 05:00 step never happens,
    // and a 03:00 step does.
    let profile = r#"[{"at":"sunset","level":100},{"at":"23:00","level":40},{"at":"03:00","level":60},{"at":"05:00","level":90}]"#;
    let mut h = Harness::<8>::configured(utc(2026, 6, 21, 18, 0), &config_json(3, profile, ""));
    h.run_until(utc(2026, 6, 21, 20, 30), dark); // 22:30 local
    assert_eq!(h.node.lamp_level(), 100);
    h.run_until(utc(2026, 6, 21, 21, 30), dark); // 23:30 local
    assert_eq!(h.node.lamp_level(), 40);
    h.run_until(utc(2026, 6, 22, 1, 30), dark); // 03:30 local
    assert_eq!(h.node.lamp_level(), 60);
    h.run_until(utc(2026, 6, 22, 2, 20), dark); // 04:20 local, just before sunrise
    assert_eq!(
        h.node.lamp_level(),
        60,
        "the 05:00 step is after sunrise: skipped"
    );
    h.run_until(utc(2026, 6, 22, 3, 5), dark); // 05:05 local
    assert_eq!(h.node.lamp_level(), 0, "day");
}

#[test]
fn a_step_outside_a_short_night_is_skipped_alone() {
    // A profile written for winter evenings: at midsummer 21:00 falls before sunset
    // (21:57 local). That step is skipped; the 23:00 step after it still applies.
    let profile =
        r#"[{"at":"sunset","level":100},{"at":"21:00","level":70},{"at":"23:00","level":40}]"#;
    let mut h = Harness::<8>::configured(utc(2026, 6, 21, 18, 0), &config_json(3, profile, ""));
    h.run_until(utc(2026, 6, 21, 20, 30), dark); // 22:30 local
    assert_eq!(h.node.lamp_level(), 100, "21:00 is not in this night");
    h.run_until(utc(2026, 6, 21, 21, 30), dark); // 23:30 local
    assert_eq!(h.node.lamp_level(), 40, "23:00 still applies");
    // In winter the same profile runs every step.
    let mut h = Harness::<8>::configured(utc(2026, 12, 21, 12, 0), &config_json(3, profile, ""));
    h.run_until(utc(2026, 12, 21, 19, 30), dark); // 20:30 local
    assert_eq!(h.node.lamp_level(), 100);
    h.run_until(utc(2026, 12, 21, 21, 30), dark); // 22:30 local
    assert_eq!(h.node.lamp_level(), 70);
    h.run_until(utc(2026, 12, 21, 22, 30), dark); // 23:30 local
    assert_eq!(h.node.lamp_level(), 40);
}

#[test]
fn a_23_00_step_keeps_local_time_across_the_change_to_winter_time() {
    let profile =
        r#"[{"at":"sunset","level":100},{"at":"23:00","level":30},{"at":"05:00","level":80}]"#;
    // The night of 24/25 October 2026: clocks go back at 03:00 CEST.
    let mut h = Harness::<8>::configured(utc(2026, 10, 24, 15, 0), &config_json(3, profile, ""));
    h.run_until(utc(2026, 10, 24, 20, 59), dark); // 22:59 CEST
    assert_eq!(h.node.lamp_level(), 100);
    h.run_until(utc(2026, 10, 24, 21, 1), dark); // 23:01 CEST
    assert_eq!(h.node.lamp_level(), 30);
    h.run_until(utc(2026, 10, 25, 3, 59), dark); // 04:59 CET
    assert_eq!(h.node.lamp_level(), 30);
    h.run_until(utc(2026, 10, 25, 4, 1), dark); // 05:01 CET
    assert_eq!(h.node.lamp_level(), 80);
    // The next evening, in winter time, 23:00 is 22:00 UTC.
    h.run_until(utc(2026, 10, 25, 21, 59), dark);
    assert_eq!(h.node.lamp_level(), 100);
    h.run_until(utc(2026, 10, 25, 22, 1), dark);
    assert_eq!(h.node.lamp_level(), 30);
}

#[test]
fn motion_boost_holds_then_returns_to_the_profile() {
    let profile = r#"[{"at":"sunset","level":30}]"#;
    let boost = r#","motion_boost":{"level":100,"hold_s":120}"#;
    let mut h = Harness::<8>::configured(utc(2026, 11, 25, 18, 0), &config_json(3, profile, boost));
    h.run_until(utc(2026, 11, 25, 18, 1), dark);
    assert_eq!(h.node.lamp_level(), 30);
    h.input(Input::Pir(true));
    h.up_ms += 500;
    h.input(Input::Pir(false));
    assert_eq!(h.node.lamp_level(), 100, "boosted at once");
    h.run_until(utc(2026, 11, 25, 18, 1) + 110_000, dark);
    assert_eq!(
        h.node.lamp_level(),
        100,
        "held for 120 s after the detection"
    );
    h.run_until(utc(2026, 11, 25, 18, 4), dark);
    assert_eq!(h.node.lamp_level(), 30, "back to the profile");
    // By day, motion does not light the lamp.
    h.run_until(utc(2026, 11, 26, 11, 0), dark);
    h.input(Input::Pir(true));
    h.up_ms += 500;
    h.input(Input::Pir(false));
    assert_eq!(h.node.lamp_level(), 0);
}

#[test]
fn override_holds_until_its_time_then_expires() {
    let profile = r#"[{"at":"sunset","level":100}]"#;
    let mut h = Harness::<8>::configured(utc(2026, 11, 25, 11, 0), &config_json(3, profile, ""));
    h.run_until(utc(2026, 11, 25, 11, 1), dark);
    assert_eq!(h.node.lamp_level(), 0);
    h.take();
    let until = utc(2026, 11, 25, 11, 31);
    h.message(
        "cmd",
        &format!(r#"{{"v":1,"id":"o-1","cmd":"override","level":70,"until":{until}}}"#),
        false,
    );
    assert_eq!(h.node.lamp_level(), 70, "a crew tests the lamp by day");
    let events = h.events();
    assert!(
        matches!(&events[..], [Event { kind: EventKind::CommandApplied { id: Some(id) }, .. }] if id == "o-1"),
        "{events:?}"
    );
    h.run_until(until - 1000, dark);
    assert_eq!(h.node.lamp_level(), 70);
    h.run_until(until + 2000, dark);
    assert_eq!(h.node.lamp_level(), 0, "expired");
}

#[test]
fn photocell_switches_without_oscillating_on_its_own_light() {
    // No config: a photocell. The lamp adds 60 lx to its own sensor at full level,
    // more than the 40 lx switch-off threshold: without subtracting it the node would
    // switch itself off and on all night.
    const { assert!(OWN_LUX_PER_LEVEL * 100.0 > PHOTOCELL_OFF_LUX) };
    let mut h = Harness::<8>::start(0, Restored::default(), Settings::default());
    let dusk_ms = 30 * 60_000i64;
    let dawn_ms = 12 * 3_600_000i64;
    let ambient = |t: i64| {
        if t < dusk_ms || t > dawn_ms {
            5_000.0
        } else {
            2.0
        }
    };
    let mut switches = Vec::new();
    let mut last = h.node.lamp_level();
    while h.unix() < 14 * 3_600_000 {
        h.run_until(h.unix() + 5_000, |t, level| {
            ambient(t) + OWN_LUX_PER_LEVEL * f64::from(level)
        });
        if h.node.lamp_level() != last {
            last = h.node.lamp_level();
            switches.push((h.unix(), last));
        }
    }
    // Boot: on (safe). Daylight for 10 min: off. Dusk: on after a minute. Dawn: off after 10 min.
    assert_eq!(switches.len(), 3, "{switches:?}");
    assert_eq!(switches[0].1, 0);
    assert!((PHOTOCELL_OFF_MS as i64..PHOTOCELL_OFF_MS as i64 + 10_000).contains(&switches[0].0));
    assert_eq!(switches[1].1, 100);
    assert!(
        (dusk_ms + PHOTOCELL_ON_MS as i64..dusk_ms + PHOTOCELL_ON_MS as i64 + 10_000)
            .contains(&switches[1].0)
    );
    assert_eq!(switches[2].1, 0);
    assert!(
        (dawn_ms + PHOTOCELL_OFF_MS as i64..dawn_ms + PHOTOCELL_OFF_MS as i64 + 10_000)
            .contains(&switches[2].0)
    );
}

/// Night outside (2 lx), plus the lamp's own light on its sensor.
fn night_and_own_light(_: i64, level: u8) -> f64 {
    2.0 + OWN_LUX_PER_LEVEL * f64::from(level)
}

#[test]
fn a_reboot_at_night_keeps_the_learned_lamp_contribution() {
    // A new photocell started at night does not know its own light: it reads 62 lx,
    // switches off after 10 min, sees the dark and comes back on after a minute,
    // learning what its lamp adds, and asks to keep that.
    let mut h = Harness::<8>::start(0, Restored::default(), Settings::default());
    h.run_until(20 * 60_000, night_and_own_light);
    assert_eq!(h.node.lamp_level(), 100);
    let learned = h.node.lamp_lux_per_level().expect("learned");
    assert!((learned - OWN_LUX_PER_LEVEL).abs() < 0.01, "{learned}");
    let done = h.take();
    assert!(
        done.contains(&Done::Lamp(0)),
        "relearning costs a minute of dark"
    );
    assert!(done.contains(&Done::Persist(Persist::LampLux)));

    // Restarted at night with what it kept, it stays on.
    let restored = Restored::<8> {
        boot: 1,
        lamp_lux_per_level: Some(learned),
        ..Restored::default()
    };
    let mut h = Harness::<8>::start(0, restored, Settings::default());
    h.run_until(60 * 60_000, night_and_own_light);
    assert!(!h.take().contains(&Done::Lamp(0)), "never switched off");

    // A value no learning produces (corrupt memory) is not taken.
    for corrupt in [f64::NAN, -1.0, 1e9] {
        let restored = Restored::<8> {
            lamp_lux_per_level: Some(corrupt),
            ..Restored::default()
        };
        let h = Harness::<8>::start(0, restored, Settings::default());
        assert_eq!(h.node.lamp_lux_per_level(), None, "{corrupt}");
    }
}

fn seqs(reports: &[Telemetry]) -> Vec<u32> {
    reports.iter().map(|r| r.seq).collect()
}

#[test]
fn buffered_reports_are_replayed_oldest_first_after_reconnecting() {
    let mut h = Harness::<64>::start(
        utc(2026, 11, 25, 12, 0),
        Restored::default(),
        Settings::default(),
    );
    h.input(Input::Clock(h.epoch));
    h.run_until(h.epoch + 5 * 60_000, dark); // offline: 5 reports buffered
    assert_eq!(h.node.stats().buffered, 5);
    assert!(h.reports().is_empty());
    h.input(Input::Connected);
    let replayed = h.reports();
    // Paced: at most resend_rate (10) at once, oldest first.
    assert_eq!(seqs(&replayed), [0, 1, 2, 3, 4]);
    assert!(
        replayed.windows(2).all(|w| w[1].ts - w[0].ts == 60_000),
        "aligned 60 s windows"
    );
    h.message("ack", r#"{"v":1,"boot":1,"seq":4,"now":1}"#, false);
    assert_eq!(h.node.stats().buffered, 0);
    h.run_until(h.unix() + 60_000, dark);
    assert_eq!(seqs(&h.reports()), [5], "live after the replay");
}

#[test]
fn replays_are_paced_to_the_resend_rate() {
    let mut h = Harness::<64>::start(0, Restored::default(), Settings::default());
    h.run_until(30 * 60_000, dark); // 30 reports
    h.input(Input::Connected);
    assert_eq!(h.reports().len(), 10, "a burst of one second's worth");
    h.up_ms += 1000;
    h.input(Input::Tick);
    assert_eq!(seqs(&h.reports()), (10..20).collect::<Vec<_>>());
}

#[test]
fn unacknowledged_reports_are_resent_after_the_ack_timeout_until_given_up() {
    let settings = Settings {
        max_resends: 2,
        ..Settings::default()
    };
    let mut h = Harness::<64>::start(0, Restored::default(), settings);
    h.input(Input::Connected);
    h.run_until(60_000, dark);
    assert_eq!(seqs(&h.reports()), [0]);
    h.run_until(119_000, dark);
    assert!(h.reports().is_empty(), "not before the ack timeout");
    h.run_until(120_000, dark);
    assert_eq!(
        seqs(&h.reports()),
        [1, 0],
        "live report 1, then report 0 again"
    );
    h.run_until(180_000, dark);
    assert_eq!(
        seqs(&h.reports()),
        [2, 0, 1],
        "live first, then due resends oldest first"
    );
    // Report 0 has been resent twice: the third time it is given up and counted.
    h.run_until(240_000, dark);
    assert_eq!(seqs(&h.reports()), [3, 1, 2]);
    assert_eq!(h.node.stats().dropped, 1);
    h.run_until(300_000, dark);
    let reports = h.reports();
    let live = reports.iter().find(|r| r.seq == 4).unwrap();
    assert_eq!(
        live.oldest.map(|o| o.seq),
        Some(1),
        "the report after a drop names the oldest held"
    );
    h.message("ack", r#"{"v":1,"boot":1,"seq":4,"now":1}"#, false);
    h.run_until(419_000, dark);
    assert_eq!(seqs(&h.reports()), [5], "nothing resent once acknowledged");
}

#[test]
fn acks_of_an_earlier_boot_clear_reports_restored_from_it() {
    let mut restored = Restored::<16> {
        boot: 6,
        ..Restored::default()
    };
    for seq in 1200..1203 {
        let report = Telemetry::decode(format!(r#"{{"v":1,"boot":6,"seq":{seq},"ts":0,"period_s":60,"lux":null,"motion":0,"lamp":{{"on":false,"level":0}}}}"#).as_bytes()).unwrap();
        restored.reports.push(report).unwrap();
    }
    let mut h = Harness::start(0, restored, Settings::default());
    assert_eq!(h.node.boot(), 7);
    h.input(Input::Connected);
    let sent = h.take();
    let birth = sent.iter().find_map(|d| match d {
        Done::Publish { topic, payload, .. } if topic.ends_with("/status") => Some(payload.clone()),
        _ => None,
    });
    let Status::Online(birth) = Status::decode(birth.unwrap().as_bytes()).unwrap() else {
        panic!()
    };
    assert_eq!(
        (birth.oldest.boot, birth.oldest.seq, birth.buffered),
        (6, 1200, Some(3))
    );
    // An ack for boot 7 does not cover boot 6's reports; one for boot 6 does.
    h.message("ack", r#"{"v":1,"boot":7,"seq":1300,"now":1}"#, true);
    assert_eq!(h.node.stats().buffered, 3);
    h.message("ack", r#"{"v":1,"boot":6,"seq":1201,"now":1}"#, true);
    assert_eq!(
        h.node.buffered_reports().map(|r| r.seq).collect::<Vec<_>>(),
        [1202]
    );
    assert!(
        !h.take().contains(&Done::Persist(Persist::Reports)),
        "memory learns of acks with the next window's write"
    );
    h.run_until(60_000, dark);
    assert!(h.take().contains(&Done::Persist(Persist::Reports)));
}

#[test]
fn a_full_buffer_drops_the_oldest_counts_it_and_says_so() {
    let mut h = Harness::<4>::start(0, Restored::default(), Settings::default());
    h.run_until(6 * 60_000, dark); // 6 reports into a buffer of 4
    assert_eq!(h.node.stats().dropped, 2);
    assert_eq!(
        h.node.buffered_reports().map(|r| r.seq).collect::<Vec<_>>(),
        [2, 3, 4, 5]
    );
    let announced: Vec<_> = h
        .node
        .buffered_reports()
        .filter_map(|r| r.oldest.map(|o| (r.seq, o.seq)))
        .collect();
    assert_eq!(
        announced,
        [(4, 1), (5, 2)],
        "each report made after a drop names the oldest still held"
    );
    h.input(Input::Connected);
    let birth = h.published("status").pop().unwrap();
    let Status::Online(birth) = Status::decode(birth.as_bytes()).unwrap() else {
        panic!()
    };
    assert_eq!((birth.oldest.seq, birth.dropped), (2, Some(2)));
}

#[test]
fn a_clockless_node_sends_ts_0_and_sets_its_clock_from_a_live_ack() {
    let mut h = Harness::<8>::start(0, Restored::default(), Settings::default());
    h.input(Input::Connected);
    h.run_until(60_000, dark);
    let first = h.reports();
    assert_eq!((first[0].ts, first[0].up_ms), (0, Some(60_000)));
    let now = utc(2026, 11, 25, 20, 0);
    // A retained ack may be old: it does not set the clock.
    h.message(
        "ack",
        &format!(r#"{{"v":1,"boot":1,"seq":0,"now":{now}}}"#),
        true,
    );
    assert!(!h.node.has_clock());
    h.message(
        "ack",
        &format!(r#"{{"v":1,"boot":1,"seq":0,"now":{now}}}"#),
        false,
    );
    assert!(h.node.has_clock());
    h.run_until(180_000, dark);
    let later = h.reports();
    let last = later.last().unwrap();
    assert!(
        last.ts as i64 > now && last.ts as i64 <= now + 120_000,
        "{later:?}"
    );
    assert_eq!(
        last.ts % 60_000,
        0,
        "windows align to the clock once it is known"
    );
}

/// The node's clock as its newest report shows it: Unix ms at up_ms 0.
fn clock_epoch(h: &mut Harness<8>) -> i64 {
    let report = h
        .reports()
        .into_iter()
        .max_by_key(|r| r.seq)
        .expect("a report");
    assert_eq!(report.ts % 60_000, 0, "windows stay aligned to the clock");
    report.ts as i64 - report.up_ms.unwrap() as i64
}

#[test]
fn a_live_ack_resyncs_a_clock_that_drifted() {
    let epoch = utc(2026, 11, 25, 20, 0);
    let mut h = Harness::<8>::start(epoch, Restored::default(), Settings::default());
    h.input(Input::Connected);
    h.input(Input::Clock(epoch - 30_000)); // the real-time clock runs 30 s slow
    h.run_until(epoch + 60_000, dark);
    assert_eq!(clock_epoch(&mut h), epoch - 30_000);
    let ack = |now: i64| format!(r#"{{"v":1,"boot":1,"seq":0,"now":{now}}}"#);
    // A retained ack may be old: it never sets the clock.
    h.message("ack", &ack(h.unix()), true);
    // A gateway without a valid clock (before 2020) does not either.
    h.message("ack", &ack(1), false);
    h.run_until(epoch + 120_000, dark);
    assert_eq!(clock_epoch(&mut h), epoch - 30_000);
    // A live ack sent 1 s ago: the node is 29 s behind it and takes its time.
    h.message("ack", &ack(h.unix() - 1000), false);
    h.run_until(epoch + 180_000, dark);
    assert_eq!(clock_epoch(&mut h), epoch - 1000);
    // Within the tolerance (an ack delayed 3 s, or sent just now) the clock stays.
    h.message("ack", &ack(h.unix() - 3000), false);
    h.message("ack", &ack(h.unix()), false);
    h.run_until(epoch + 240_000, dark);
    assert_eq!(clock_epoch(&mut h), epoch - 1000);
}

#[test]
fn a_late_ack_never_puts_a_right_clock_back() {
    // An ack's `now` is when the gateway queued it; under load it is delivered late, so
    // it only says the time is at least `now`.
    let epoch = utc(2026, 11, 25, 20, 0);
    let ack = |now: i64| format!(r#"{{"v":1,"boot":1,"seq":0,"now":{now}}}"#);
    let mut h = Harness::<8>::start(epoch, Restored::default(), Settings::default());
    h.input(Input::Connected);
    h.input(Input::Clock(epoch));
    h.run_until(epoch + 60_000, dark);
    for late_ms in [10_000, 60_000, 299_000] {
        h.message("ack", &ack(h.unix() - late_ms), false);
        h.run_until(h.unix() + 3 * 60_000, dark);
        assert_eq!(clock_epoch(&mut h), epoch, "an ack {late_ms} ms late");
    }
    // A clock slow by more than 5 s is put forward to an ack's `now`, even a late one.
    h.input(Input::Clock(h.unix() - 20_000));
    h.message("ack", &ack(h.unix() - 2_000), false);
    h.run_until(h.unix() + 3 * 60_000, dark);
    assert_eq!(clock_epoch(&mut h), epoch - 2_000, "put forward");
    // A clock fast by far more than any delivery delay is put back to `now`.
    h.input(Input::Clock(h.unix() + 10 * 60_000));
    h.run_until(h.unix() + 3 * 60_000, dark);
    assert_eq!(clock_epoch(&mut h), epoch + 10 * 60_000);
    h.message("ack", &ack(h.unix() - 1_000), false);
    h.run_until(h.unix() + 15 * 60_000, dark);
    assert_eq!(clock_epoch(&mut h), epoch - 1_000, "put back");
}

/// How a node's clock is put right in [`a_clock_put_back_never_repeats_a_timestamp`].
#[derive(Debug, Clone, Copy)]
enum PutBack {
    /// The real-time clock is set to the true time.
    Rtc,
    /// A live ack sent just now tells the true time.
    Ack,
}

#[test]
fn a_clock_put_back_never_repeats_a_timestamp() {
    // InfluxDB keys a point on its series and timestamp: a report with the ts of an
    // earlier one overwrites it. A node whose clock ran fast and is put back must not
    // end a window at or before the last report's ts. 40 s back brought the running
    // window to the same end as the last report; 10 min back, before older ones.
    let epoch = utc(2026, 11, 25, 20, 0);
    for (fast_ms, how) in [(40_000, PutBack::Rtc), (10 * 60_000, PutBack::Ack)] {
        let mut h = Harness::<64>::start(epoch, Restored::default(), Settings::default());
        h.input(Input::Clock(epoch + fast_ms));
        // 20:02:40: the running window began at 20:02:20 by the true time.
        h.run_until(epoch + 160_000, dark);
        match how {
            PutBack::Rtc => h.input(Input::Clock(h.unix())),
            PutBack::Ack => h.message(
                "ack",
                &format!(r#"{{"v":1,"boot":1,"seq":0,"now":{}}}"#, h.unix()),
                false,
            ),
        }
        h.run_until(epoch + 30 * 60_000, dark);
        let reports: Vec<Telemetry> = h.node.buffered_reports().cloned().collect();
        for pair in reports.windows(2) {
            let [before, after] = pair else {
                unreachable!()
            };
            assert!(
                after.ts > before.ts,
                "{how:?} {fast_ms} ms back: seq {} at {} after seq {} at {}",
                after.seq,
                after.ts,
                before.seq,
                before.ts
            );
            let length_ms = after.up_ms.unwrap() - before.up_ms.unwrap();
            assert!(
                length_ms.abs_diff(u64::from(after.period_s) * 1000) <= 500,
                "{how:?}: windows stay contiguous, each as long as it says: {after:?}"
            );
        }
        let last = reports.last().unwrap();
        assert_eq!(
            (
                last.ts as i64 - last.up_ms.unwrap() as i64,
                last.ts % 60_000
            ),
            (epoch, 0),
            "{how:?}: the true time, windows aligned to it"
        );
    }
}

#[test]
fn a_clock_put_back_by_hours_reports_within_the_hour() {
    // An RTC set to local summer time runs 2 h fast. Waiting for the clock to pass the
    // last report's ts would silence the node for 2 h and need a window longer than
    // period_s can say; the gateway took those reports' ts for no clock anyway.
    let epoch = utc(2026, 7, 1, 20, 0);
    let mut h = Harness::<64>::start(epoch, Restored::default(), Settings::default());
    h.input(Input::Clock(epoch + 2 * 3_600_000));
    h.run_until(epoch + 160_000, dark);
    h.input(Input::Clock(h.unix()));
    h.run_until(epoch + 2 * 3_600_000, dark);
    let reports: Vec<Telemetry> = h.node.buffered_reports().cloned().collect();
    for pair in reports.windows(2) {
        let [before, after] = pair else {
            unreachable!()
        };
        let length_ms = after.up_ms.unwrap() - before.up_ms.unwrap();
        assert!(
            length_ms <= 3_600_000 && length_ms.abs_diff(u64::from(after.period_s) * 1000) <= 500,
            "each window as long as it says: {after:?}"
        );
    }
    let last = reports.last().unwrap();
    assert_eq!(last.ts as i64 - last.up_ms.unwrap() as i64, epoch);
}

#[test]
fn an_impossible_clock_is_no_clock() {
    // An RTC that lost its battery reads 2000 or garbage; an ack's `now` can be any u64.
    // Neither sets the clock, and neither overflows the node's time arithmetic.
    let ack = |now: u64| format!(r#"{{"v":1,"boot":1,"seq":0,"now":{now}}}"#);
    for clock in [i64::MIN, -1, 0, utc(2019, 12, 31, 23, 59), i64::MAX] {
        let mut h = Harness::<8>::start(0, Restored::default(), Settings::default());
        h.input(Input::Connected);
        h.up_ms = 5_000;
        h.input(Input::Clock(clock));
        h.message("ack", &ack(clock as u64), false);
        h.message("ack", &ack(u64::MAX), false);
        h.run_until(180_000, dark);
        assert!(!h.node.has_clock(), "{clock}");
        assert!(h.reports().iter().all(|r| r.ts == 0), "{clock}");
    }
}

fn rejection(h: &mut Harness<8>) -> (Option<String>, String) {
    let events = h.events();
    match &events[..] {
        [
            Event {
                kind: EventKind::CommandRejected { id },
                detail: Some(detail),
                ..
            },
        ] => (id.as_ref().map(|i| i.to_string()), detail.to_string()),
        other => panic!("expected one command_rejected, got {other:?}"),
    }
}

#[test]
fn bad_input_is_refused_without_changing_state() {
    let profile = r#"[{"at":"sunset","level":100},{"at":"23:00","level":40}]"#;
    let mut h = Harness::<8>::configured(utc(2026, 11, 25, 18, 0), &config_json(3, profile, ""));
    h.run_until(utc(2026, 11, 25, 18, 1), dark);
    let config_before = h.node.config().cloned();
    let level_before = h.node.lamp_level();
    h.take();

    h.message(
        "cmd",
        r#"{"v":1,"id":"x-1","cmd":"self_destruct","level":0,"until":1}"#,
        false,
    );
    assert_eq!(
        rejection(&mut h),
        (Some("x-1".into()), "out_of_range (cmd)".into())
    );

    let past = utc(2026, 11, 25, 17, 0);
    h.message(
        "cmd",
        &format!(r#"{{"v":1,"id":"o-2","cmd":"override","level":5,"until":{past}}}"#),
        false,
    );
    assert_eq!(
        rejection(&mut h),
        (
            Some("o-2".into()),
            "override until a time in the past".into()
        )
    );

    h.message(
        "config",
        &config_json(
            4,
            r#"[{"at":"23:00","level":40},{"at":"sunset","level":100}]"#,
            "",
        ),
        true,
    );
    assert_eq!(
        rejection(&mut h),
        (Some("c-4".into()), "inconsistent (profile)".into())
    );

    h.message(
        "config",
        &config_json(5, r#"[{"at":"25:61","level":40}]"#, ""),
        true,
    );
    assert_eq!(
        rejection(&mut h),
        (Some("c-5".into()), "out_of_range (at)".into())
    );

    h.message("config", r#"{"v":1,"id":"c-6","cfg":6,"location":{"lat":55,"lon":12,"tz":"Mars/Olympus"},"profile":[{"at":"sunset","level":1}]}"#, true);
    assert_eq!(
        rejection(&mut h),
        (Some("c-6".into()), "tz: bad offset or time".into())
    );

    h.message("config", r#"{"v":1,"id":"c-7","cfg":7,"prof"#, true);
    assert_eq!(rejection(&mut h), (None, "not_json".into()));

    // The same broken retained config again (a reconnect) is not answered twice.
    h.message("config", r#"{"v":1,"id":"c-7","cfg":7,"prof"#, true);
    assert!(h.events().is_empty());

    h.run_until(utc(2026, 11, 25, 18, 2), dark);
    assert_eq!(h.node.config().cloned(), config_before);
    assert_eq!(h.node.lamp_level(), level_before);
    assert!(!h.take().contains(&Done::Persist(Persist::Config)));
}

#[test]
fn a_config_is_applied_once_and_reported() {
    let mut h = Harness::<8>::configured(
        utc(2026, 11, 25, 18, 0),
        &config_json(3, r#"[{"at":"sunset","level":55}]"#, ""),
    );
    let done = h.take();
    assert!(done.contains(&Done::Persist(Persist::Config)));
    assert_eq!(
        Config::decode(config_json(3, r#"[{"at":"sunset","level":55}]"#, "").as_bytes())
            .unwrap()
            .cfg,
        3
    );
    // Redelivered on reconnect: ignored silently, no answer.
    h.message(
        "config",
        &config_json(3, r#"[{"at":"sunset","level":55}]"#, ""),
        true,
    );
    assert!(h.events().is_empty());
    h.run_until(utc(2026, 11, 25, 18, 2), dark);
    assert_eq!(h.node.lamp_level(), 55);
    assert!(h.reports().iter().all(|r| r.cfg == Some(3)));
}

#[test]
fn faults_are_raised_and_cleared_by_events_and_restated_in_reports() {
    let mut h = Harness::<8>::start(0, Restored::default(), Settings::default());
    h.input(Input::Connected);
    h.take();
    for _ in 0..3 {
        h.up_ms += 1000;
        h.input(Input::Lux(Err(SensorFailed)));
    }
    let raised = h.events();
    assert!(
        matches!(
            &raised[..],
            [Event {
                kind: EventKind::SensorFault { .. },
                ..
            }]
        ),
        "{raised:?}"
    );
    h.up_ms += 5000;
    h.input(Input::Power(0.0)); // lamp at 100 % drawing nothing
    h.up_ms += 1000;
    h.input(Input::Power(0.0));
    h.up_ms += 1000;
    h.input(Input::Power(0.0));
    assert!(matches!(
        &h.events()[..],
        [Event {
            kind: EventKind::LampFault { .. },
            ..
        }]
    ));
    h.run_until(60_000, |_, _| 1.0);
    let report = h.reports().pop().unwrap();
    assert!(
        report
            .faults
            .contains(parklight_protocol::telemetry::Fault::Lamp)
    );
    assert!(
        !report
            .faults
            .contains(parklight_protocol::telemetry::Fault::Sensor),
        "cleared by valid readings"
    );
    assert_eq!(report.lamp.power_w, Some(0.0));
}

#[test]
fn a_sensor_changing_range_is_not_a_failed_sensor() {
    let mut h = Harness::<8>::start(0, Restored::default(), Settings::default());
    h.input(Input::Connected);
    h.take();
    // Booting in the dark, an auto-ranging sensor configures itself, steps up four
    // ranges and skips a sample: six reads without a reading, and nothing failed.
    for _ in 0..6 {
        h.up_ms += 1000;
        h.input(Input::Lux(Ok(Sample::Ranging)));
    }
    h.up_ms += 1000;
    h.input(Input::Lux(Ok(Sample::Lux(0.02))));
    assert!(h.events().is_empty(), "no sensor_fault for ranging");
    // Three failed reads in a row are a fault, ranging in between or not.
    for read in [
        Err(SensorFailed),
        Ok(Sample::Ranging),
        Err(SensorFailed),
        Err(SensorFailed),
    ] {
        h.up_ms += 1000;
        h.input(Input::Lux(read));
    }
    let raised = h.events();
    assert!(
        matches!(
            &raised[..],
            [Event {
                kind: EventKind::SensorFault { .. },
                ..
            }]
        ),
        "{raised:?}"
    );
}

#[test]
fn a_sensor_that_never_stops_ranging_is_a_failed_sensor() {
    let mut h = Harness::<8>::start(0, Restored::default(), Settings::default());
    h.input(Input::Connected);
    h.take();
    let read = |h: &mut Harness<8>, sample: Sample| {
        h.up_ms += 1000;
        h.input(Input::Lux(Ok(sample)));
    };
    // Dusk, read once a second: the light falls through the ranges and the lamp comes
    // on, so every minute the sensor steps a few ranges (a step and a skipped sample
    // each) between readings.
    for minute in 0..30 {
        for _ in 0..8 {
            read(&mut h, Sample::Ranging);
        }
        for _ in 0..50 {
            read(&mut h, Sample::Lux(100.0 / f64::from(minute + 1)));
        }
    }
    // Runs just short of the bound, a reading between them, are no fault either.
    let after = Settings::default().sensor_ranging_fault_after;
    for _ in 0..2 {
        for _ in 1..after {
            read(&mut h, Sample::Ranging);
        }
        read(&mut h, Sample::Lux(3.0));
    }
    let dusk = h.events();
    assert!(
        dusk.is_empty(),
        "no sensor_fault for ranging at dusk: {dusk:?}"
    );
    // A sensor that ranges for ever has failed: the fault is raised once, and reports
    // say it beside their missing lux.
    for _ in 0..after {
        read(&mut h, Sample::Ranging);
    }
    let raised = h.events();
    assert!(
        matches!(
            &raised[..],
            [Event {
                kind: EventKind::SensorFault {
                    state: parklight_protocol::event::FaultState::Raised
                },
                ..
            }]
        ),
        "{raised:?}"
    );
    for _ in 0..120 {
        read(&mut h, Sample::Ranging);
    }
    let report = h.reports().pop().unwrap();
    assert!(report.lux.is_none());
    assert!(
        report
            .faults
            .contains(parklight_protocol::telemetry::Fault::Sensor)
    );
    // A reading clears it.
    read(&mut h, Sample::Lux(3.0));
    assert!(
        matches!(
            &h.events()[..],
            [Event {
                kind: EventKind::SensorFault {
                    state: parklight_protocol::event::FaultState::Cleared
                },
                ..
            }]
        ),
        "cleared"
    );
}

#[test]
fn flash_writes_stay_as_few_as_the_crate_docs_say() {
    // A busy night on a connected node: a dimmed profile boosted by someone every five
    // minutes (each boost teaches the lamp's contribution: steady give or take noise
    // for two hours, then changing with the weather), and the gateway acknowledging
    // every report twice.
    let start = utc(2026, 11, 25, 18, 0);
    let boost = r#","motion_boost":{"level":100,"hold_s":60}"#;
    let profile = r#"[{"at":"sunset","level":30}]"#;
    let mut h = Harness::<8>::configured(start, &config_json(3, profile, boost));
    let mut writes = Vec::new();
    let mut reports = 0;
    for minute in 1..=6 * 60 {
        let own = match (minute, minute / 5 % 2) {
            (..=120, 0) => 0.55,
            (..=120, _) => 0.65,
            (_, 0) => 0.3,
            _ => 0.9,
        };
        match minute % 5 {
            0 => h.input(Input::Pir(true)),
            1 => h.input(Input::Pir(false)),
            _ => {}
        }
        h.run_until(start + minute * 60_000, |_, level| {
            1.0 + own * f64::from(level)
        });
        let done = h.take();
        writes.extend(done.iter().filter_map(|d| match d {
            Done::Persist(what) => Some((minute, *what)),
            _ => None,
        }));
        for report in done.iter().filter_map(|d| match d {
            Done::Publish { topic, payload, .. } if topic.ends_with("/telemetry") => {
                Telemetry::decode(payload.as_bytes()).ok()
            }
            _ => None,
        }) {
            reports += 1;
            let ack = format!(
                r#"{{"v":1,"boot":1,"seq":{},"now":{}}}"#,
                report.seq,
                h.unix()
            );
            h.message("ack", &ack, false);
            h.message("ack", &ack, false);
        }
    }
    let count = |what: Persist, minutes: std::ops::RangeInclusive<i64>| {
        writes
            .iter()
            .filter(|(minute, w)| *w == what && minutes.contains(minute))
            .count()
    };
    assert_eq!(reports, 360, "one report a minute, none resent");
    assert_eq!(
        count(Persist::Reports, 0..=360),
        360,
        "the buffer once a window, never for an ack"
    );
    assert_eq!(
        (
            count(Persist::Boot, 0..=360),
            count(Persist::Config, 0..=360)
        ),
        (1, 1),
        "the boot counter and the config once each"
    );
    assert_eq!(
        count(Persist::LampLux, 0..=120),
        1,
        "a steady contribution is written once"
    );
    let changing = count(Persist::LampLux, 121..=360);
    assert!(
        (1..=4).contains(&changing),
        "a changing one at most once an hour: {changing} in 4 h"
    );
}

#[test]
fn node_ram_stays_within_budget() {
    let size = core::mem::size_of::<Node>();
    assert!(
        size <= parklight_core::NODE_RAM_BUDGET,
        "Node is {size} bytes, budget {}",
        parklight_core::NODE_RAM_BUDGET
    );
}

#[test]
fn ack_payload_from_protocol_clears_exactly_what_it_covers() {
    let ack = Ack {
        boot: 1,
        seq: 2,
        now: 0,
    };
    assert!(ack.covers(parklight_protocol::ReportId { boot: 1, seq: 2 }));
    assert!(!ack.covers(parklight_protocol::ReportId { boot: 1, seq: 3 }));
    assert!(!ack.covers(parklight_protocol::ReportId { boot: 0, seq: 0 }));
}
