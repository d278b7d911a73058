//! Every metric the gateway exposes, named in one place. Dashboards query only these.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use parklight_protocol::Reject;

/// Reports received (every telemetry message, before decoding).
pub const REPORTS_RECEIVED: &str = "parklight_reports_received_total";
/// API requests refused or failed, by error code (`unauthorized`, `forbidden`, …).
pub const API_ERRORS: &str = "parklight_api_errors_total";
/// New reports stored.
pub const REPORTS_STORED: &str = "parklight_reports_stored_total";
/// Reports that were stored before.
pub const REPORTS_DUPLICATE: &str = "parklight_reports_duplicate_total";
/// Rejected messages, by `reason` (the codes of PROTOCOL.md).
pub const REPORTS_REJECTED: &str = "parklight_reports_rejected_total";
/// Reports the nodes declared gone that never arrived, all nodes and all time (from the
/// store; per node: `parklight nodes`). A gauge: a report declared gone may arrive late.
pub const REPORTS_LOST_ON_NODES: &str = "parklight_reports_lost_on_nodes";
/// Reports from nodes in no site file.
pub const REPORTS_UNKNOWN_NODE: &str = "parklight_reports_unknown_node_total";
/// Reports whose time the gateway stamped (no valid clock on the node).
pub const REPORTS_CLOCK_STAMPED: &str = "parklight_reports_clock_stamped_total";
/// Stamped reports placed again once their boot's clock was known.
pub const REPORTS_RESTAMPED: &str = "parklight_reports_restamped_total";
/// Stamped reports whose boot's clock did not come within their hold: they keep their
/// stamp.
pub const REPORTS_CLOCK_UNRESOLVED: &str = "parklight_reports_clock_unresolved_total";
/// Group commits that failed (each is tried again while the failure may pass).
pub const COMMIT_FAILURES: &str = "parklight_commit_failures_total";
/// Housekeeping steps that failed, by `step` (`compaction`, `retention`).
pub const HOUSEKEEPING_FAILURES: &str = "parklight_housekeeping_failures_total";
/// Housekeeping rounds run.
pub const HOUSEKEEPING_ROUNDS: &str = "parklight_housekeeping_rounds_total";
/// Subscriptions the broker refused (a SUBACK failure code).
pub const SUBSCRIPTIONS_REFUSED: &str = "parklight_mqtt_subscriptions_refused_total";
/// Messages larger than `[mqtt] max_packet_bytes` that broke a connection (then read
/// once on a connection with a larger limit, and rejected).
pub const MQTT_OVERSIZED: &str = "parklight_mqtt_oversized_total";
/// Seconds one group commit took.
pub const COMMIT_SECONDS: &str = "parklight_commit_duration_seconds";
/// Messages per group commit.
pub const COMMIT_MESSAGES: &str = "parklight_commit_messages";
/// Seconds from a report's arrival to its MQTT acknowledgement.
pub const ACK_LAG_SECONDS: &str = "parklight_ack_lag_seconds";
/// Stored-acknowledgements published to nodes.
pub const STORED_ACKS: &str = "parklight_stored_acks_published_total";
/// Messages received but not yet committed (the poller-to-writer queue).
pub const QUEUE_DEPTH: &str = "parklight_ingest_queue_depth";
/// Times the gateway stopped reading from the broker because the queue was full.
pub const QUEUE_FULL: &str = "parklight_ingest_queue_full_total";
/// Acknowledgements not sent because the connection that delivered the message ended.
pub const ACKS_STALE: &str = "parklight_mqtt_acks_stale_total";
/// Nodes whose latest status is online.
pub const NODES_ONLINE: &str = "parklight_nodes_online";
/// Reports stored but not yet forwarded to InfluxDB.
pub const FORWARDER_LAG: &str = "parklight_forwarder_lag_reports";
/// Reports forwarded to InfluxDB.
pub const FORWARDED: &str = "parklight_forwarded_reports_total";
/// Failed InfluxDB writes, by `kind` (`retry`, `permanent`).
pub const FORWARDER_ERRORS: &str = "parklight_forwarder_errors_total";
/// Times the MQTT connection was (re)established.
pub const MQTT_CONNECTS: &str = "parklight_mqtt_connects_total";
/// Reports and facts the detectors judged.
pub const DETECTOR_FACTS: &str = "parklight_detector_facts_total";
/// Condition transitions, by `kind` and `active` (`true` raised, `false` cleared).
pub const CONDITION_TRANSITIONS: &str = "parklight_condition_transitions_total";
/// Silences the liveness monitor decided (no report for 3 intervals).
pub const NODES_SILENT: &str = "parklight_nodes_silent_total";
/// Alert changes made, by `kind` and `what` (`raised`, `acknowledged`, `reminded`, …).
pub const ALERT_CHANGES: &str = "parklight_alert_changes_total";
/// Alert changes delivered, by `receiver`.
pub const ALERTS_DELIVERED: &str = "parklight_alerts_delivered_total";
/// Failed alert deliveries, by `receiver` and `kind` (`retry`, `permanent`).
pub const ALERT_DELIVERY_FAILURES: &str = "parklight_alert_delivery_failures_total";
/// Alert changes waiting for a receiver, by `receiver`.
pub const ALERT_QUEUE_DEPTH: &str = "parklight_alert_queue_depth";
/// Age of the oldest change a receiver has not taken, seconds, by `receiver`.
pub const ALERT_QUEUE_AGE: &str = "parklight_alert_queue_oldest_seconds";

/// Registers every metric at zero (every reject code too), so dashboards see them from
/// the start.
pub fn register() {
    describe_counter!(REPORTS_RECEIVED, "Telemetry messages received");
    describe_counter!(API_ERRORS, "API requests refused or failed, by error code");
    describe_counter!(REPORTS_STORED, "New reports stored");
    describe_counter!(
        REPORTS_DUPLICATE,
        "Reports received again after they were stored"
    );
    describe_counter!(REPORTS_REJECTED, "Rejected messages by reject code");
    describe_gauge!(
        REPORTS_LOST_ON_NODES,
        "Reports the nodes dropped that never reached the gateway, all time"
    );
    describe_counter!(REPORTS_UNKNOWN_NODE, "Reports from nodes in no site file");
    describe_counter!(
        REPORTS_CLOCK_STAMPED,
        "Reports stamped by the gateway for want of a valid node clock"
    );
    describe_counter!(
        REPORTS_RESTAMPED,
        "Stamped reports placed again once their boot's clock was known"
    );
    describe_counter!(
        REPORTS_CLOCK_UNRESOLVED,
        "Stamped reports whose boot's clock never came: they keep their stamp"
    );
    describe_counter!(COMMIT_FAILURES, "Group commits that failed");
    describe_counter!(HOUSEKEEPING_FAILURES, "Housekeeping steps that failed");
    describe_counter!(HOUSEKEEPING_ROUNDS, "Housekeeping rounds run");
    describe_counter!(SUBSCRIPTIONS_REFUSED, "Subscriptions the broker refused");
    describe_counter!(
        MQTT_OVERSIZED,
        "Messages over max_packet_bytes that broke a connection"
    );
    describe_histogram!(COMMIT_SECONDS, "Duration of one group commit");
    describe_histogram!(COMMIT_MESSAGES, "Messages per group commit");
    describe_histogram!(ACK_LAG_SECONDS, "Arrival to MQTT acknowledgement");
    describe_counter!(STORED_ACKS, "Stored-acknowledgements published to nodes");
    describe_gauge!(QUEUE_DEPTH, "Messages received but not yet committed");
    describe_counter!(
        QUEUE_FULL,
        "Times reading from the broker paused for a full queue"
    );
    describe_counter!(
        ACKS_STALE,
        "Acknowledgements dropped because their connection ended (the broker resends)"
    );
    describe_gauge!(NODES_ONLINE, "Nodes whose latest status is online");
    describe_counter!(
        ALERT_CHANGES,
        "Alert changes made, by kind and what happened"
    );
    describe_counter!(ALERTS_DELIVERED, "Alert changes delivered, by receiver");
    describe_counter!(
        ALERT_DELIVERY_FAILURES,
        "Failed alert deliveries, by receiver and kind (retry, permanent)"
    );
    describe_gauge!(
        ALERT_QUEUE_DEPTH,
        "Alert changes a receiver has yet to take"
    );
    describe_gauge!(
        ALERT_QUEUE_AGE,
        "Age of the oldest alert change a receiver has yet to take, seconds"
    );
    describe_gauge!(FORWARDER_LAG, "Reports stored but not yet in InfluxDB");
    describe_counter!(FORWARDED, "Reports written to InfluxDB");
    describe_counter!(FORWARDER_ERRORS, "Failed InfluxDB writes");
    describe_counter!(MQTT_CONNECTS, "MQTT connections established");
    describe_counter!(DETECTOR_FACTS, "Reports and facts judged by the detectors");
    describe_counter!(CONDITION_TRANSITIONS, "Conditions raised and cleared");
    describe_counter!(NODES_SILENT, "Nodes found silent for 3 intervals");
    for name in [
        REPORTS_RECEIVED,
        REPORTS_STORED,
        REPORTS_DUPLICATE,
        REPORTS_UNKNOWN_NODE,
        REPORTS_CLOCK_STAMPED,
        REPORTS_RESTAMPED,
        REPORTS_CLOCK_UNRESOLVED,
        COMMIT_FAILURES,
        HOUSEKEEPING_ROUNDS,
        SUBSCRIPTIONS_REFUSED,
        MQTT_OVERSIZED,
        STORED_ACKS,
        DETECTOR_FACTS,
        NODES_SILENT,
        FORWARDED,
        MQTT_CONNECTS,
        QUEUE_FULL,
        ACKS_STALE,
    ] {
        counter!(name).absolute(0);
    }
    for reject in Reject::ALL {
        counter!(REPORTS_REJECTED, "reason" => reject.code()).absolute(0);
    }
    for kind in ["retry", "permanent"] {
        counter!(FORWARDER_ERRORS, "kind" => kind).absolute(0);
    }
    for step in ["compaction", "retention"] {
        counter!(HOUSEKEEPING_FAILURES, "step" => step).absolute(0);
    }
    for name in [
        QUEUE_DEPTH,
        NODES_ONLINE,
        FORWARDER_LAG,
        REPORTS_LOST_ON_NODES,
    ] {
        gauge!(name).set(0.0);
    }
}

/// Histogram buckets: commit and ack times from 100 µs to 10 s, group sizes 1 to 100 000
/// (the largest commit the configuration allows).
pub fn buckets() -> [(&'static str, &'static [f64]); 3] {
    const SECONDS: &[f64] = &[
        0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
    ];
    const SIZES: &[f64] = &[
        1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0,
        20000.0, 50000.0, 100000.0,
    ];
    [
        (COMMIT_SECONDS, SECONDS),
        (ACK_LAG_SECONDS, SECONDS),
        (COMMIT_MESSAGES, SIZES),
    ]
}

/// What the store holds after a commit.
pub fn totals(totals: crate::ingest::Totals) {
    gauge!(NODES_ONLINE).set(totals.online as f64);
    gauge!(REPORTS_LOST_ON_NODES).set(totals.lost as f64);
    counter!(REPORTS_RESTAMPED).increment(totals.restamped);
}

/// Logs a reject at most once per reason per minute (the counter counts every one).
pub fn rejected(reason: Reject, field: Option<&str>, topic: &str) {
    counter!(REPORTS_REJECTED, "reason" => reason.code()).increment(1);
    static LAST: Mutex<Option<HashMap<Reject, Instant>>> = Mutex::new(None);
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    let seen = last.get_or_insert_with(HashMap::new);
    let due = seen
        .get(&reason)
        .is_none_or(|at| at.elapsed() >= Duration::from_secs(60));
    if due {
        seen.insert(reason, Instant::now());
        tracing::warn!(
            reason = reason.code(),
            field,
            topic,
            "message rejected (logged once a minute per reason; see `parklight dead-letters`)"
        );
    }
}

/// One group commit.
pub fn committed(messages: usize, took: Duration) {
    histogram!(COMMIT_SECONDS).record(took.as_secs_f64());
    histogram!(COMMIT_MESSAGES).record(messages as f64);
}
