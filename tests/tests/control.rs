//! Lamp control end to end: lighting set through the API reaches the simulated nodes and
//! their lamps follow it (seen in their telemetry), survives a gateway restart, is
//! refused with the field named when it is malformed, warns when the zone's lamps cannot
//! light it to class, and is in the audit log with each node's answer.

use std::collections::BTreeSet;
use std::time::Duration;

use parklight_gateway::store::{ReportRow, Selector};
use parklight_protocol::topic::NodeTopic;
use parklight_protocol::{Command, Message};
use parklight_site::Site;
use parklight_tests::api::{Credential, create_token, request};
use parklight_tests::broker::Mosquitto;
use parklight_tests::gateway::{Gateway, remiseparken_file};
use parklight_tests::process::Parklight;
use parklight_tests::recorder::Recorder;
use parklight_tests::{one_at_a_time, wait_until};
use serde_json::{Value, json};

const ZONE: &str = "/api/v1/control/remiseparken/zones/lawn/lighting";

/// Starts playing last night on Remiseparken, `speed` times faster, with the simulator's
/// state in `state` (afresh or as the nodes left it).
fn play_night(broker: &Mosquitto, state: &std::path::Path, fresh: bool, speed: u32) -> Parklight {
    let (url, state, speed) = (broker.url(), state.to_string_lossy(), speed.to_string());
    let mut args = vec![
        "sim",
        "--broker",
        &url,
        "--state",
        &state,
        "--scenario",
        "healthy-night",
        "--speed",
        &speed,
        "--drain-s",
        "20",
        "--seed",
        "5",
    ];
    if fresh {
        args.push("--fresh");
    }
    Parklight::spawn(&args)
}

/// Plays last night on Remiseparken to its end.
fn night(broker: &Mosquitto, state: &std::path::Path, fresh: bool) {
    let finished = play_night(broker, state, fresh, 2880).wait(Duration::from_secs(300));
    assert!(finished.status.success(), "{}", finished.stderr);
}

/// `node`'s reports of boot `boot` with its lamp lit, in time order.
fn lit(gateway: &Gateway, node: &str, boot: u32) -> Vec<ReportRow> {
    let store = gateway.store();
    let mut reports: Vec<ReportRow> = store
        .reports_between(Selector::Node(node), 0, i64::MAX)
        .unwrap()
        .into_iter()
        .filter(|r| r.boot == boot && r.lamp_on)
        .collect();
    reports.sort_by_key(|r| r.ts);
    reports
}

/// The levels `node`'s lit reports of `boot` show, in order, with repeats folded.
fn levels(gateway: &Gateway, node: &str, boot: u32) -> Vec<u8> {
    let mut levels: Vec<u8> = lit(gateway, node, boot)
        .iter()
        .map(|r| r.lamp_level)
        .collect();
    levels.dedup();
    levels
}

#[test]
fn lighting_set_through_the_api_reaches_the_lamps_survives_a_restart_and_is_audited() {
    let _serial = one_at_a_time();
    let broker = Mosquitto::start();
    let mut gateway = Gateway::new(&broker.url(), "");
    gateway.start();
    let port = gateway.http_port();
    let config = gateway.config_path().to_string_lossy().into_owned();
    let operator = create_token(&config, "operator");
    let maintenance = create_token(&config, "maintenance");
    let site = Site::load(&remiseparken_file()).unwrap();
    let lawn: Vec<String> = (site.nodes.iter())
        .filter(|n| n.zone.as_deref() == Some("lawn"))
        .map(|n| n.id.clone())
        .collect();
    assert!(lawn.len() >= 2, "{lawn:?}");
    let own = lawn[0].clone();
    let node_path = format!("/api/v1/control/remiseparken/nodes/{own}/lighting");
    let call = |method: &str, path: &str, body: Option<Value>| {
        request(
            port,
            method,
            path,
            Credential::Bearer(&operator),
            body.as_ref(),
        )
    };

    // Refused, reaching no node: the lawn (P5) dimmed to P6 without a motion boost, a
    // level out of range, and a crew's token.
    let published = gateway.store().latest_configs().unwrap();
    let lower = json!({"profile": [{"at": "sunset", "level": 100}, {"at": "22:00", "level": 20, "class": "P6"}]});
    let refused = call("PUT", ZONE, Some(lower.clone()));
    assert_eq!(
        (refused.status, &refused.json()["field"]),
        (422, &json!("profile[1].class")),
        "{}",
        refused.body
    );
    let refused = call(
        "PUT",
        ZONE,
        Some(json!({"profile": [{"at": "sunset", "level": 140}]})),
    );
    assert_eq!(
        (refused.status, &refused.json()["field"]),
        (422, &json!("profile[0].level")),
        "{}",
        refused.body
    );
    let crew = request(
        port,
        "PUT",
        ZONE,
        Credential::Bearer(&maintenance),
        Some(&lower),
    );
    assert_eq!(crew.status, 403);
    assert_eq!(
        gateway.store().latest_configs().unwrap(),
        published,
        "nothing was published"
    );

    // The lawn at full until 22:00, then 60 %; one of its poles at 80 % all night (a node's
    // own lighting wins over its zone's).
    let zone_set = call(
        "PUT",
        ZONE,
        Some(json!({"profile": [{"at": "sunset", "level": 100}, {"at": "22:00", "level": 60}]})),
    );
    assert_eq!(zone_set.status, 200, "{}", zone_set.body);
    let answered: BTreeSet<String> = (zone_set.json()["nodes"].as_array().unwrap().iter())
        .map(|n| n["node"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        answered,
        lawn.iter().cloned().collect(),
        "one config per lawn node"
    );
    assert_eq!(
        zone_set.json()["warnings"],
        json!([]),
        "nothing learned yet"
    );
    let node_set = call(
        "PUT",
        &node_path,
        Some(json!({"profile": [{"at": "sunset", "level": 80}]})),
    );
    assert_eq!(node_set.status, 200, "{}", node_set.body);
    assert_eq!(node_set.json()["nodes"].as_array().unwrap().len(), 1);

    // A night: the lamps follow, as their own telemetry says.
    let state = tempfile::tempdir().unwrap();
    night(&broker, state.path(), true);
    for node in &lawn[1..] {
        assert_eq!(
            levels(&gateway, node, 1),
            [100, 60],
            "{node}: full, then 60 % from 22:00"
        );
    }
    assert_eq!(levels(&gateway, &own, 1), [80], "{own}: its own lighting");
    let main_path = site
        .nodes
        .iter()
        .find(|n| n.zone.as_deref() == Some("main-path"))
        .unwrap();
    assert!(
        !levels(&gateway, &main_path.id, 1).contains(&60),
        "other zones keep theirs"
    );

    // Each node answered the config it got; the lawn's first config to the pole with a
    // lighting of its own was superseded before it connected.
    let audit = call("GET", "/api/v1/control/remiseparken/audit", None).json();
    let entries = audit.as_array().unwrap();
    assert_eq!(entries.len(), 2, "{audit:#}");
    assert_eq!(
        (entries[0]["action"].as_str(), entries[0]["target"].as_str()),
        (Some("set_lighting"), Some(own.as_str()))
    );
    assert_eq!(
        (entries[1]["by"].as_str(), entries[1]["target"].as_str()),
        (Some("operator"), Some("lawn"))
    );
    assert_eq!(entries[0]["nodes"][0]["result"], "applied", "{audit:#}");
    assert_eq!(
        entries[1]["nodes"].as_array().unwrap().len(),
        lawn.len(),
        "{audit:#}"
    );
    for answer in entries[1]["nodes"].as_array().unwrap() {
        let expected = if answer["node"] == own.as_str() {
            "superseded"
        } else {
            "applied"
        };
        assert_eq!(answer["result"], expected, "{audit:#}");
    }

    // What the lamps have shown is learned: at 60 % they gave less than P5 asks (the
    // detectors judged the lawn dark after 22:00), which is now a warning; full light is not.
    let dim = call(
        "PUT",
        ZONE,
        Some(json!({"profile": [{"at": "sunset", "level": 100}, {"at": "22:00", "level": 60}]})),
    );
    assert_eq!(dim.status, 200, "{}", dim.body);
    let warnings = dim.json()["warnings"].clone();
    assert_eq!(warnings.as_array().unwrap().len(), 1, "{warnings:#}");
    assert!(
        warnings[0]
            .as_str()
            .unwrap()
            .starts_with("profile[1]: at level 60"),
        "{warnings:#}"
    );
    let full = call(
        "PUT",
        ZONE,
        Some(json!({"profile": [{"at": "sunset", "level": 100}]})),
    );
    assert_eq!(full.json()["warnings"], json!([]), "{}", full.body);

    // A restart: the lighting is still in force and nothing is published anew.
    let before = gateway.store().latest_configs().unwrap();
    gateway.stop();
    gateway.start();
    let after_restart = call("GET", "/api/v1/control/remiseparken", None).json();
    let lawn_zone = (after_restart["zones"].as_array().unwrap().iter())
        .find(|z| z["zone"] == "lawn")
        .unwrap();
    assert_eq!(
        (lawn_zone["source"].as_str(), lawn_zone["set_by"].as_str()),
        (Some("zone"), Some("operator"))
    );
    assert_eq!(
        lawn_zone["lighting"]["profile"],
        json!([{"at": "sunset", "level": 100}])
    );
    let own_node = (after_restart["nodes"].as_array().unwrap().iter())
        .find(|n| n["node"] == own.as_str())
        .unwrap();
    assert_eq!(
        (
            own_node["source"].as_str(),
            &own_node["lighting"]["profile"][0]["level"]
        ),
        (Some("node"), &json!(80))
    );
    assert_eq!(
        gateway.store().latest_configs().unwrap(),
        before,
        "the same versions"
    );

    // A night after the restart: the lawn follows what was set (full all night, no boost).
    night(&broker, state.path(), false);
    for node in &lawn[1..] {
        assert_eq!(
            levels(&gateway, node, 2),
            [100],
            "{node}: what was set, after the restart"
        );
    }
    assert_eq!(
        levels(&gateway, &own, 2),
        [80],
        "{own}: its own, after the restart"
    );

    // The lawn reset to its site file (full, 80 % from midnight); its pole keeps its own.
    let reset = call("DELETE", ZONE, None);
    assert_eq!(reset.status, 200, "{}", reset.body);
    assert_eq!(
        reset.json()["nodes"].as_array().unwrap().len(),
        lawn.len() - 1,
        "{}",
        reset.body
    );
    let again = call("DELETE", ZONE, None);
    assert_eq!(again.status, 404, "nothing left to reset: {}", again.body);
    night(&broker, state.path(), false);
    for node in &lawn[1..] {
        // 80 % (P6) from midnight, boosted to full on motion.
        let levels = levels(&gateway, node, 3);
        assert!(
            levels.len() >= 3 && levels.iter().all(|l| [100, 80].contains(l)),
            "{node}: the site file's profile: {levels:?}"
        );
    }
    assert_eq!(levels(&gateway, &own, 3), [80], "{own}: still its own");
    let audit = call("GET", "/api/v1/control/remiseparken/audit?limit=1", None).json();
    assert_eq!(audit[0]["action"], "reset_lighting", "{audit:#}");
    let answers = audit[0]["nodes"].as_array().unwrap();
    assert_eq!(answers.len(), lawn.len() - 1, "{audit:#}");
    assert!(
        answers.iter().all(|n| n["result"] == "applied"),
        "{audit:#}"
    );

    // An override while the nodes run: a `cmd` to each lawn node, logged, applied by each
    // (its answer in the audit log) and followed by its lamp; one in the past is refused.
    let commands = Recorder::start_on(&broker.url(), "parklight/v1/remiseparken/+/cmd", false);
    // At 720 times a summer night lasts 40 s: time to light, command and answer.
    let playing = play_night(&broker, state.path(), false, 720);
    let running = wait_until(Duration::from_secs(60), || {
        lawn.iter().all(|node| !lit(&gateway, node, 4).is_empty())
    });
    assert!(running, "the lawn's lamps lit: {}", gateway.log());
    let path = "/api/v1/control/remiseparken/zones/lawn/override";
    let until = jiff::Timestamp::now().as_millisecond() + 3_600_000;
    let past = call(
        "POST",
        path,
        Some(json!({"level": 40, "until": until - 7_200_000})),
    );
    assert_eq!(
        (past.status, &past.json()["field"]),
        (422, &json!("until")),
        "{}",
        past.body
    );
    let held = call("POST", path, Some(json!({"level": 40, "until": until})));
    assert_eq!(held.status, 200, "{}", held.body);
    let entry = held.json()["entry"].as_i64().unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || commands
            .count(|m| m.is(NodeTopic::Cmd))
            >= lawn.len()),
        "a command per lawn node"
    );
    let mut commanded = BTreeSet::new();
    for message in commands.messages().iter().filter(|m| m.is(NodeTopic::Cmd)) {
        let Command::Override {
            id,
            level,
            until: to,
        } = Command::decode(&message.payload).unwrap();
        assert_eq!(
            (id.as_str(), level, to),
            (format!("o-{entry}").as_str(), 40, until as u64)
        );
        assert!(!message.retained);
        commanded.insert(message.node().unwrap());
    }
    assert_eq!(commanded, lawn.iter().cloned().collect());
    let mut audit = Value::Null;
    let applied = wait_until(Duration::from_secs(30), || {
        audit = call("GET", "/api/v1/control/remiseparken/audit?limit=1", None).json();
        let answers = audit[0]["nodes"].as_array().cloned().unwrap_or_default();
        answers.len() == lawn.len() && answers.iter().all(|n| n["result"] == "applied")
    });
    assert!(applied, "each lawn node applied the override: {audit:#}");
    assert_eq!(
        (audit[0]["action"].as_str(), audit[0]["id"].as_i64()),
        (Some("override"), Some(entry))
    );
    assert_eq!(audit[0]["detail"], json!({"level": 40, "until": until}));
    let finished = playing.wait(Duration::from_secs(300));
    assert!(finished.status.success(), "{}", finished.stderr);
    for node in &lawn {
        // Held at 40 % from the command to the night's end (until, an hour from now, is
        // after the simulated night).
        let levels = levels(&gateway, node, 4);
        let held: Vec<&u8> = levels.iter().skip_while(|l| **l != 40).collect();
        assert!(
            !held.is_empty() && held.iter().all(|l| **l == 40),
            "{node}: the override: {levels:?}"
        );
    }
}
