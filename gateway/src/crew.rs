//! What crews do from the command line until the web page exists: list alerts,
//! acknowledge and resolve them, and set maintenance windows (silences). Each acts on
//! the store safely while the gateway runs: actions are requests the alert manager
//! answers, and silences are rows it reads every round.

use std::time::{Duration, Instant};

use parklight_protocol::alert::Alert;
use parklight_site::Site;

use crate::alert::{Action, Request, Scope, Silence};
use crate::sinks::alerts::cursor_name;
use crate::store::{StorageError, Store};

/// How long `ack` and `resolve` wait for the gateway's answer.
pub const ANSWER_WAIT: Duration = Duration::from_secs(10);

/// Why a crew's command failed.
#[derive(Debug, thiserror::Error)]
pub enum CrewError {
    /// The store failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The alert manager refused.
    #[error("refused: {0}")]
    Refused(String),
    /// Nobody answered.
    #[error(
        "the gateway did not answer within {} s: is it running? The request stays queued and is applied when it runs",
        ANSWER_WAIT.as_secs()
    )]
    NoAnswer,
    /// The command names something that does not exist.
    #[error("{0}")]
    Unknown(String),
}

/// Asks the running gateway to acknowledge or resolve an alert and waits for its answer.
pub fn act(store: &mut Store, request: &Request) -> Result<(), CrewError> {
    let now = jiff::Timestamp::now().as_millisecond();
    let id = store.request_alert_action(request, now)?;
    let started = Instant::now();
    while started.elapsed() < ANSWER_WAIT {
        match store.request_answer(id)? {
            Some(Ok(())) => return Ok(()),
            Some(Err(refusal)) => return Err(CrewError::Refused(refusal)),
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    Err(CrewError::NoAnswer)
}

/// `alert` as one JSON line: the PROTOCOL.md message of its latest revision, with its
/// history and the receivers that refused it.
pub fn alert_json(store: &Store, alert: &Alert) -> Result<String, StorageError> {
    let message = alert
        .to_json()
        .map_err(|e| StorageError::Corrupt(format!("alert: {e}")))?;
    let mut value: serde_json::Value = serde_json::from_slice(&message)
        .map_err(|e| StorageError::Corrupt(format!("alert: {e}")))?;
    let history: Vec<serde_json::Value> = store
        .alert_history(&alert.id)?
        .into_iter()
        .map(|r| {
            serde_json::json!({
                "rev": r.alert.rev, "what": r.what, "state": r.alert.state.as_str(),
                "severity": r.alert.severity.as_str(), "ts": r.alert.ts, "by": r.alert.by,
                "note": r.alert.note, "paged": r.paged, "children_count": r.alert.children_count,
            })
        })
        .collect();
    let refusals: Vec<serde_json::Value> = store
        .refusals(&alert.id)?
        .into_iter()
        .map(|(receiver, rev, reason)| serde_json::json!({"receiver": receiver, "rev": rev, "reason": reason}))
        .collect();
    value["history"] = history.into();
    value["refusals"] = refusals.into();
    Ok(value.to_string())
}

/// `alert` as one line for people.
pub fn alert_line(alert: &Alert) -> String {
    let place = match (&alert.zone, &alert.node, &alert.circuit) {
        (Some(zone), _, _) => format!("{}/{zone}", alert.site),
        (_, Some(node), _) => format!("{}/{node}", alert.site),
        (_, _, Some(circuit)) => format!("{} circuit {circuit}", alert.site),
        _ => alert.site.clone(),
    };
    let since =
        jiff::Timestamp::from_millisecond(alert.since as i64).map_or("-".into(), |t| t.to_string());
    let mut line = format!(
        "{:<8} {:<12} {:<8} {:<18} {:<28} since {since} rev {}",
        alert.id,
        alert.state.as_str(),
        alert.severity.as_str(),
        alert.kind.as_str(),
        place,
        alert.rev
    );
    if let Some(by) = &alert.by {
        line.push_str(&format!(" by {by}"));
    }
    if alert.flapping {
        line.push_str(" FLAPPING");
    }
    if alert.children_count > 0 {
        line.push_str(&format!(" ({} nodes)", alert.children_count));
    }
    line.push_str(&format!("\n         {}", alert.detail));
    if let Some(note) = &alert.note {
        line.push_str(&format!("\n         note: {note}"));
    }
    line
}

/// One line per receiver: what waits for it and since when.
pub fn receiver_lines(store: &Store, receivers: &[String]) -> Result<Vec<String>, StorageError> {
    let now = jiff::Timestamp::now().as_millisecond();
    receivers
        .iter()
        .map(|name| {
            let cursor = store.cursor(&cursor_name(name))?;
            let (waiting, oldest) = store.outbox_waiting(cursor)?;
            Ok(match oldest {
                Some(at) if waiting > 0 => format!(
                    "receiver {name}: {waiting} changes waiting, the oldest for {}",
                    humantime::format_duration(Duration::from_secs(
                        ((now - at).max(0) / 1000) as u64
                    ))
                ),
                _ => format!("receiver {name}: up to date"),
            })
        })
        .collect()
}

/// What a new silence covers, checked against the site files.
pub struct SilenceTarget<'a> {
    /// The site.
    pub site: &'a str,
    /// A zone of it.
    pub zone: Option<&'a str>,
    /// A node of it.
    pub node: Option<&'a str>,
    /// A circuit of it.
    pub circuit: Option<&'a str>,
}

impl SilenceTarget<'_> {
    /// The scope, when everything named exists (at most one of zone, node and circuit).
    pub fn scope(&self, sites: &[Site]) -> Result<Scope, CrewError> {
        let site = sites
            .iter()
            .find(|s| s.id == self.site)
            .ok_or_else(|| CrewError::Unknown(format!("site {} is in no site file", self.site)))?;
        let unknown = |what: &str, id: &str| {
            CrewError::Unknown(format!("{what} {id} is not in site {}", site.id))
        };
        match (self.zone, self.node, self.circuit) {
            (None, None, None) => Ok(Scope::Site),
            (Some(zone), None, None) => {
                site.zone(zone).ok_or_else(|| unknown("zone", zone))?;
                Ok(Scope::Zone(zone.into()))
            }
            (None, Some(node), None) => {
                site.node(node).ok_or_else(|| unknown("node", node))?;
                Ok(Scope::Node(node.into()))
            }
            (None, None, Some(circuit)) => {
                site.nodes
                    .iter()
                    .find(|n| n.circuit.id == circuit)
                    .ok_or_else(|| unknown("circuit", circuit))?;
                Ok(Scope::Circuit(circuit.into()))
            }
            _ => Err(CrewError::Unknown(
                "one of --zone, --node and --circuit at most".into(),
            )),
        }
    }
}

/// A silence as one line for people.
pub fn silence_line(silence: &Silence) -> String {
    let at = |ms: i64| jiff::Timestamp::from_millisecond(ms).map_or("-".into(), |t| t.to_string());
    let what = match &silence.scope {
        Scope::Site => format!("site {}", silence.site),
        Scope::Zone(zone) => format!("zone {}/{zone}", silence.site),
        Scope::Node(node) => format!("node {}/{node}", silence.site),
        Scope::Circuit(circuit) => format!("circuit {}/{circuit}", silence.site),
    };
    format!(
        "{:<4} {what} from {} until {} by {}: {}",
        silence.id,
        at(silence.from),
        at(silence.until),
        silence.by,
        silence.note
    )
}

/// The request to `action` alert `id`.
pub fn request(id: &str, action: Action, by: &str, note: &str) -> Request {
    Request {
        alert: id.into(),
        action,
        by: by.into(),
        note: note.into(),
    }
}
