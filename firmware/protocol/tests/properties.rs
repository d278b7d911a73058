//! Property tests: every message survives encode → decode, and no input panics a decoder.

use parklight_protocol::alert::{Alert, AlertKind, AlertState, Severity};
use parklight_protocol::config::{At, Location, MotionBoost, Step};
use parklight_protocol::event::{Detail, FaultState};
use parklight_protocol::gateway::GatewayStatus;
use parklight_protocol::status::{Birth, Offline, OfflineReason};
use parklight_protocol::telemetry::Fault;
use parklight_protocol::topic::NodeTopic;
use parklight_protocol::{
    Ack, Command, CommandId, Config, DEFAULT_PREFIX, Event, EventKind, Faults, Lamp, Lux, Message,
    ReportId, Status, Telemetry, decode_downlink, decode_uplink, salvage_command_id,
    salvage_report_id,
};
use proptest::prelude::*;

fn heapless_string<const N: usize>(s: &str) -> heapless::String<N> {
    heapless::String::try_from(s).unwrap()
}

fn report_id() -> impl Strategy<Value = ReportId> {
    (any::<u32>(), any::<u32>()).prop_map(|(boot, seq)| ReportId { boot, seq })
}

fn lux() -> impl Strategy<Value = Lux> {
    [0.0..=200_000.0f64, 0.0..=200_000.0f64, 0.0..=200_000.0f64].prop_map(|mut v| {
        v.sort_by(f64::total_cmp);
        Lux {
            min: v[0],
            avg: v[1],
            max: v[2],
        }
    })
}

fn faults() -> impl Strategy<Value = Faults> {
    proptest::collection::vec(prop::sample::select(Fault::ALL.to_vec()), 0..3).prop_map(|list| {
        let mut faults = Faults::NONE;
        list.into_iter().for_each(|f| faults.set(f, true));
        faults
    })
}

fn telemetry() -> impl Strategy<Value = Telemetry> {
    (
        (report_id(), any::<u64>(), any::<Option<u64>>(), 1..=3600u16),
        (
            proptest::option::of(lux()),
            any::<u32>(),
            any::<bool>(),
            0..=100u8,
            proptest::option::of(0.0..1e6f64),
        ),
        (
            any::<Option<u32>>(),
            faults(),
            proptest::option::of(report_id()),
            proptest::option::of(-1e3..1e3f64),
        ),
    )
        .prop_map(
            |(
                (id, ts, up_ms, period_s),
                (lux, motion, on, level, power_w),
                (cfg, faults, oldest, temp_c),
            )| Telemetry {
                boot: id.boot,
                seq: id.seq,
                ts,
                up_ms,
                period_s,
                lux,
                motion,
                lamp: Lamp { on, level, power_w },
                cfg,
                faults,
                oldest,
                temp_c,
            },
        )
}

fn status() -> impl Strategy<Value = Status> {
    let birth = (
        any::<u32>(),
        any::<u32>(),
        proptest::option::of("[0-9a-z.+-]{1,32}"),
        proptest::option::of(1..=3600u16),
        any::<Option<u32>>(),
        report_id(),
        any::<Option<u32>>(),
        any::<Option<u32>>(),
    )
        .prop_map(
            |(boot, conn, fw, interval_s, cfg, oldest, buffered, dropped)| {
                Status::Online(Birth {
                    boot,
                    conn,
                    fw: fw.map(|f| heapless_string(&f)),
                    interval_s,
                    cfg,
                    oldest,
                    buffered,
                    dropped,
                })
            },
        );
    let offline = (any::<bool>(), any::<u32>(), any::<u32>()).prop_map(|(lost, boot, conn)| {
        let reason = if lost {
            OfflineReason::Lost
        } else {
            OfflineReason::Shutdown
        };
        Status::Offline(Offline { reason, boot, conn })
    });
    prop_oneof![birth, offline]
}

fn command_id() -> impl Strategy<Value = CommandId> {
    "[ -~]{1,64}".prop_map(|s| heapless_string(&s))
}

fn event() -> impl Strategy<Value = Event> {
    let state = prop_oneof![Just(FaultState::Raised), Just(FaultState::Cleared)];
    let kind = prop_oneof![
        (prop::sample::select(Fault::ALL.to_vec()), state)
            .prop_map(|(f, s)| EventKind::fault(f, s)),
        Just(EventKind::Reboot),
        Just(EventKind::PowerLoss),
        proptest::option::of(command_id()).prop_map(|id| EventKind::CommandApplied { id }),
        proptest::option::of(command_id()).prop_map(|id| EventKind::CommandRejected { id }),
    ];
    (
        any::<u32>(),
        any::<u32>(),
        any::<u64>(),
        kind,
        proptest::option::of("\\PC{0,200}"),
    )
        .prop_map(|(boot, eseq, ts, kind, detail)| Event {
            boot,
            eseq,
            ts,
            kind,
            detail: detail.map(|d| Detail::try_from(d.as_str()).unwrap()),
        })
}

fn config() -> impl Strategy<Value = Config> {
    let location = (-90.0..=90.0f64, -180.0..=180.0f64, "[A-Z]{3}[-+]?[0-9]{1,2}([A-Z]{3,4},M[0-9]{1,2}\\.[1-5]\\.[0-6](/[0-9])?,M[0-9]{1,2}\\.[1-5]\\.[0-6](/[0-9])?)?")
        .prop_map(|(lat, lon, tz)| Location { lat, lon, tz: heapless_string(&tz) });
    let clock_step = (0..24u8, 0..60u8, 0..=100u8, proptest::option::of("P[1-6]")).prop_map(
        |(hour, minute, level, class)| Step {
            at: At::Local { hour, minute },
            level,
            class: class.map(|c| heapless_string(&c)),
        },
    );
    let profile = (
        any::<bool>(),
        0..=100u8,
        proptest::collection::vec(clock_step, 0..7),
    )
        .prop_map(|(sunset, level, steps)| {
            let mut profile = heapless::Vec::new();
            if sunset || steps.is_empty() {
                profile
                    .push(Step {
                        at: At::Sunset,
                        level,
                        class: None,
                    })
                    .unwrap();
            }
            for step in steps {
                profile.push(step).unwrap();
            }
            profile
        });
    let boost =
        (0..=100u8, 0..=86_400u32).prop_map(|(level, hold_s)| MotionBoost { level, hold_s });
    (
        command_id(),
        1..=u32::MAX,
        proptest::option::of(1..=3600u16),
        proptest::option::of(location),
        proptest::option::of(profile),
        proptest::option::of(boost),
    )
        .prop_map(
            |(id, cfg, interval_s, location, profile, motion_boost)| Config {
                id,
                cfg,
                interval_s,
                location,
                profile,
                motion_boost,
            },
        )
}

fn alert() -> impl Strategy<Value = Alert> {
    let ident = "[a-z0-9][a-z0-9_-]{0,20}";
    let text = proptest::option::of("\\PC{0,100}");
    (
        (
            "[a-z0-9_~.-]{1,40}",
            1..u32::MAX,
            prop::sample::select(AlertKind::ALL.to_vec()),
            ident,
            proptest::option::of(ident),
            proptest::option::of(ident),
            proptest::option::of(ident),
        ),
        (
            prop::sample::select(AlertState::ALL.to_vec()),
            prop::sample::select(Severity::ALL.to_vec()),
            any::<u64>(),
            any::<u64>(),
            "\\PC{0,100}",
            (text.clone(), text),
            any::<bool>(),
            proptest::collection::vec(ident, 0..5),
            0..1000u32,
        ),
    )
        .prop_map(
            |(
                (id, rev, kind, site, zone, node, circuit),
                (state, severity, since, ts, detail, (by, note), flapping, children, more),
            )| {
                let children_count = children.len() as u32 + more;
                Alert {
                    id,
                    rev,
                    kind,
                    site,
                    zone,
                    node,
                    circuit,
                    state,
                    severity,
                    since,
                    ts,
                    detail,
                    by,
                    note,
                    flapping,
                    children,
                    children_count,
                }
            },
        )
}

fn round_trips<M: Message + PartialEq + std::fmt::Debug>(message: &M) -> Result<(), TestCaseError> {
    let payload = message
        .to_payload()
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let decoded = M::decode(&payload)
        .map_err(|e| TestCaseError::fail(format!("{e}: {}", String::from_utf8_lossy(&payload))))?;
    prop_assert_eq!(&decoded, message);
    Ok(())
}

proptest! {
    #[test]
    fn telemetry_round_trips(m in telemetry()) {
        round_trips(&m)?;
        let payload = m.to_payload().unwrap();
        prop_assert_eq!(salvage_report_id(&payload), Some(m.id()));
    }

    #[test]
    fn status_round_trips(m in status()) { round_trips(&m)?; }

    #[test]
    fn event_round_trips(m in event()) { round_trips(&m)?; }

    #[test]
    fn config_round_trips(m in config()) {
        round_trips(&m)?;
        prop_assert_eq!(salvage_command_id(&m.to_payload().unwrap()), Some(m.id.clone()));
    }

    #[test]
    fn command_round_trips(id in command_id(), level in 0..=100u8, until in any::<u64>()) {
        round_trips(&Command::Override { id, level, until })?;
    }

    #[test]
    fn ack_round_trips(boot in any::<u32>(), seq in any::<u32>(), now in any::<u64>()) {
        round_trips(&Ack { boot, seq, now })?;
    }

    #[test]
    fn alert_round_trips(m in alert()) {
        let json = m.to_json().map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(Alert::from_json(&json).map_err(|e| TestCaseError::fail(e.to_string()))?, m);
    }

    #[test]
    fn gateway_status_round_trips(started in any::<u64>(), sites in proptest::collection::vec("[a-z0-9][a-z0-9_-]{0,20}", 0..5), online in any::<bool>()) {
        let status = if online { GatewayStatus::Online { started, sites } } else { GatewayStatus::Offline { reason: OfflineReason::Shutdown } };
        round_trips(&status)?;
    }

    #[test]
    fn arbitrary_bytes_never_panic(topic in "\\PC{0,80}", payload in proptest::collection::vec(any::<u8>(), 0..1100)) {
        let _ = decode_uplink(DEFAULT_PREFIX, &topic, &payload);
        for kind in NodeTopic::ALL {
            let _ = decode_downlink(kind, &payload);
        }
        let _ = salvage_report_id(&payload);
        let _ = salvage_command_id(&payload);
    }

    #[test]
    fn mutated_messages_never_panic(m in telemetry(), cuts in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let mut payload = m.to_payload().unwrap().to_vec();
        for (at, byte) in cuts {
            let i = at.index(payload.len() + 1);
            if byte % 2 == 0 { payload.insert(i, b"{}[]\",:\\0-e.nt"[usize::from(byte) % 14]); } else if i < payload.len() { payload.remove(i); }
        }
        let _ = decode_uplink(DEFAULT_PREFIX, "parklight/v1/s/n/telemetry", &payload);
    }
}
