//! Every vector in `tests/vectors/` is a test: the verdict and the reject code must match.

use std::path::{Path, PathBuf};

use parklight_protocol::topic::parse_node_topic;
use parklight_protocol::{
    DEFAULT_PREFIX, Downlink, Message, Reject, Uplink, decode_downlink, decode_uplink,
};
use serde_json::Value;

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

struct Case {
    file: String,
    name: String,
    topic: String,
    payload: Vec<u8>,
    expect: Result<(), Reject>,
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("base64 payload")
}

fn load(file: &Path) -> Vec<Case> {
    let text = std::fs::read_to_string(file).unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    let file_name = file.file_name().unwrap().to_string_lossy().into_owned();
    doc["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|case| {
            let payload = match (case.get("payload"), case.get("payload_b64")) {
                (Some(Value::String(p)), _) => p.clone().into_bytes(),
                (_, Some(Value::String(b))) => base64_decode(b),
                _ => panic!("case without payload: {case}"),
            };
            let expect = match case["expect"].as_str().unwrap() {
                "accept" => Ok(()),
                "reject" => Err(Reject::from_code(case["reason"].as_str().unwrap())
                    .unwrap_or_else(|| panic!("unknown reason in {case}"))),
                other => panic!("unknown expectation {other}"),
            };
            Case {
                file: file_name.clone(),
                name: case["name"].as_str().unwrap().to_owned(),
                topic: case["topic"].as_str().unwrap().to_owned(),
                payload,
                expect,
            }
        })
        .collect()
}

fn all_cases() -> Vec<Case> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(vectors_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files.iter().flat_map(|f| load(f)).collect()
}

/// Decodes like the side that receives the topic would, and re-encodes what it accepts.
fn decode_and_reencode(topic: &str, payload: &[u8]) -> Result<Vec<u8>, Reject> {
    let kind = parse_node_topic(DEFAULT_PREFIX, topic)?.kind;
    let encoded = if kind.is_uplink() {
        match decode_uplink(DEFAULT_PREFIX, topic, payload)
            .map_err(|e| e.reason)?
            .message
        {
            Uplink::Telemetry(m) => m.to_payload(),
            Uplink::Status(m) => m.to_payload(),
            Uplink::Event(m) => m.to_payload(),
        }
    } else {
        match decode_downlink(kind, payload).map_err(|e| e.reason)? {
            Downlink::Config(m) => m.to_payload(),
            Downlink::Command(m) => m.to_payload(),
            Downlink::Ack(m) => m.to_payload(),
        }
    };
    Ok(encoded.expect("an accepted message encodes").to_vec())
}

#[test]
fn every_vector_gets_its_verdict_and_code() {
    let cases = all_cases();
    let mut failures = Vec::new();
    for case in &cases {
        let got = decode_and_reencode(&case.topic, &case.payload);
        if got.as_ref().map(|_| ()).map_err(|e| *e) != case.expect {
            failures.push(format!(
                "{}:{}: expected {:?}, got {:?}",
                case.file,
                case.name,
                case.expect,
                got.map(|_| ())
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} vectors failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    let telemetry = cases.iter().filter(|c| c.file == "telemetry.json").count();
    assert_eq!(telemetry, 42, "the shared telemetry vectors have 42 cases");
}

#[test]
fn accepted_vectors_survive_a_round_trip() {
    for case in all_cases().iter().filter(|c| c.expect.is_ok()) {
        let once = decode_and_reencode(&case.topic, &case.payload).unwrap();
        let twice = decode_and_reencode(&case.topic, &once).unwrap();
        assert_eq!(once, twice, "{}:{}", case.file, case.name);
    }
}

#[test]
fn telemetry_vectors_equal_the_shared_copy() {
    let shared = std::env::var_os("PARKLIGHT_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"))
        .join("vectors/telemetry.json");
    if !shared.exists() {
        eprintln!("{} not found: nothing to compare", shared.display());
        return;
    }
    let ours = std::fs::read(vectors_dir().join("telemetry.json")).unwrap();
    assert!(
        std::fs::read(&shared).unwrap() == ours,
        "tests/vectors/telemetry.json differs from {}: copy it again",
        shared.display()
    );
}
