//! Live updates for `/api/v1/events`: one task follows the store (zone windows, alert
//! changes, conditions, node statuses) through cursors of its own and broadcasts what
//! changed; each Server-Sent Events stream passes on what its caller's role may see.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use serde::Serialize;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use super::access::{Caller, Permission, Role};
use super::crew::AlertView;
use super::places::{offline_nodes, zones_now};
use super::{ApiError, ErrorBody, HOUR_MS, Shared, last_full_hour};
use crate::detect::{Kind, Status};

/// How often the store is looked at.
pub const POLL: Duration = Duration::from_millis(500);
/// Events a slow stream may fall behind before it is told to fetch everything again.
pub const BACKLOG: usize = 1024;
/// How often an open stream checks that its token and session are still valid.
pub const RECHECK: Duration = Duration::from_secs(5);

/// A change, as `/api/v1/events` sends it (the SSE event name is its `type`).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LiveEvent {
    /// A zone's status (or a dark zone's severity) changed.
    Zone {
        /// Whether the status itself changed (not only the severity): partners and
        /// viewers hear only of these, since severity follows detections.
        #[serde(skip)]
        status_changed: bool,
        /// The site.
        site: String,
        /// The zone.
        zone: String,
        /// `lit`, `dark`, `unobserved` or `not_judged`.
        status: String,
        /// For a dark zone, how bad (operators and crews only).
        #[serde(skip_serializing_if = "Option::is_none")]
        severity: Option<String>,
        /// End of the window it is from, Unix ms.
        judged_at: Option<i64>,
    },
    /// An alert changed (operators and crews only).
    Alert(Box<AlertView>),
    /// A node came online or went offline (operators and crews only).
    Node {
        /// The node.
        node: String,
        /// Its site.
        site: Option<String>,
        /// Whether it is online now.
        online: bool,
    },
    /// Events were missed: fetch the zones, nodes and alerts again.
    Resync,
}

impl LiveEvent {
    /// What a caller may see of it: partners and viewers get zone statuses only, and
    /// partners none newer than the last full hour (`last_hour`).
    fn for_caller(&self, caller: &Caller, last_hour: i64) -> Option<LiveEvent> {
        if caller.may(Permission::Operations) {
            return Some(self.clone());
        }
        let partner = caller.role == Role::Partnership;
        match self {
            LiveEvent::Zone {
                status_changed: true,
                site,
                zone,
                status,
                judged_at,
                ..
            } if !partner || judged_at.is_some_and(|end| end <= last_hour) => {
                Some(LiveEvent::Zone {
                    status_changed: true,
                    site: site.clone(),
                    zone: zone.clone(),
                    status: status.clone(),
                    severity: None,
                    judged_at: *judged_at,
                })
            }
            LiveEvent::Resync => Some(LiveEvent::Resync),
            LiveEvent::Zone { .. } | LiveEvent::Alert(_) | LiveEvent::Node { .. } => None,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            LiveEvent::Zone { .. } => "zone",
            LiveEvent::Alert(_) => "alert",
            LiveEvent::Node { .. } => "node",
            LiveEvent::Resync => "resync",
        }
    }
}

/// Live updates as Server-Sent Events: `zone`, `alert`, `node`, and `resync` when the
/// stream fell behind. Subscribe first, then fetch the zones: nothing falls between.
/// The stream ends when its token is revoked or its session ends.
#[utoipa::path(get, path = "/api/v1/events", responses(
    (status = 200, content_type = "text/event-stream", body = LiveEvent),
    (status = 401, body = ErrorBody)))]
pub async fn events(
    State(api): State<Shared>,
    caller: Caller,
) -> Result<Sse<impl tokio_stream::Stream<Item = Result<Event, Infallible>>>, ApiError> {
    caller.require(Permission::ZoneStatus)?;
    let (sender, stream) = tokio::sync::mpsc::channel(64);
    tokio::spawn(relay(api.clone(), caller, sender));
    Ok(Sse::new(ReceiverStream::new(stream).map(Ok)).keep_alive(KeepAlive::default()))
}

/// Passes on what `caller` may see of the broadcast until the stream is closed or the
/// caller's token or session is no longer valid (checked every [`RECHECK`]).
async fn relay(api: Shared, caller: Caller, sender: tokio::sync::mpsc::Sender<Event>) {
    use tokio::sync::broadcast::error::RecvError;
    let mut broadcast = api.events.subscribe();
    let mut recheck = tokio::time::interval(RECHECK);
    recheck.tick().await;
    let partner = caller.role == Role::Partnership;
    loop {
        // Partners hear of newer zone statuses at the full hour: fetch the zones again.
        let now = jiff::Timestamp::now().as_millisecond();
        let to_the_hour = Duration::from_millis((HOUR_MS - now.rem_euclid(HOUR_MS)) as u64);
        let event = tokio::select! {
            () = tokio::time::sleep(to_the_hour), if partner => LiveEvent::Resync,
            received = broadcast.recv() => match received {
                Ok(event) => event,
                Err(RecvError::Lagged(_)) => LiveEvent::Resync,
                Err(RecvError::Closed) => return,
            },
            _ = recheck.tick() => {
                if caller.still_valid(&api).await {
                    continue;
                }
                return;
            }
            () = sender.closed() => return,
        };
        let Some(event) = event.for_caller(&caller, last_full_hour()) else {
            continue;
        };
        let Ok(data) = serde_json::to_string(&event) else {
            continue;
        };
        if sender
            .send(Event::default().event(event.name()).data(data))
            .await
            .is_err()
        {
            return;
        }
    }
}

/// A zone's status, dark severity and the end of the window it is from.
type ZoneSeen = (Status, Option<String>, Option<i64>);

/// What the live task last told.
#[derive(Debug, Default)]
struct Seen {
    windows: i64,
    conditions: i64,
    statuses: i64,
    outbox: i64,
    zones: BTreeMap<(String, String), ZoneSeen>,
    connected: BTreeMap<String, (Option<String>, bool)>,
    offline: BTreeSet<String>,
}

impl Seen {
    fn online(&self, node: &str) -> bool {
        self.connected.get(node).is_some_and(|(_, c)| *c) && !self.offline.contains(node)
    }
}

/// Follows the store and broadcasts every change until `stop`.
pub async fn run(api: Shared, stop: CancellationToken) {
    let mut seen = loop {
        match api.read(start).await {
            Ok(seen) => break seen,
            Err(_) => tokio::select! {
                () = tokio::time::sleep(POLL * 10) => continue,
                () = stop.cancelled() => return,
            },
        }
    };
    loop {
        tokio::select! {
            () = tokio::time::sleep(POLL) => {}
            () = stop.cancelled() => return,
        }
        let cursors = (seen.windows, seen.conditions, seen.statuses, seen.outbox);
        let Ok(news) = api.read(move |store| news(store, cursors)).await else {
            continue;
        };
        for event in follow(&mut seen, news) {
            // No stream open is no one to tell.
            let _ = api.events.send(event);
        }
    }
}

/// Where the task starts: the cursors first, then the state, so that nothing committed
/// in between is missed (it may be told twice, which changes nothing).
fn start(store: &mut crate::store::Store) -> Result<Seen, ApiError> {
    let mut seen = Seen {
        windows: store.window_log_end()?,
        conditions: store.last_condition_id()?,
        statuses: store.last_status_id()?,
        outbox: store.outbox_end()?,
        ..Seen::default()
    };
    let (windows, dark) = zones_now(store, None, i64::MAX)?;
    for (key, window) in windows {
        let severity = dark.get(&key).map(|s| s.as_str().to_owned());
        seen.zones
            .insert(key, (window.status, severity, Some(window.end)));
    }
    seen.offline = offline_nodes(store)?;
    for summary in store.node_summaries()? {
        let connected = summary.presence.is_some_and(|p| !p.offline);
        seen.connected
            .insert(summary.node, (summary.site, connected));
    }
    Ok(seen)
}

/// What happened after the cursors.
struct News {
    windows: Vec<(i64, crate::detect::ZoneWindow)>,
    conditions: Vec<crate::store::journal::ConditionRow>,
    statuses: Vec<crate::store::StatusRow>,
    alerts: Vec<crate::store::alerts::Outgoing>,
}

fn news(
    store: &mut crate::store::Store,
    (w, c, s, o): (i64, i64, i64, i64),
) -> Result<News, ApiError> {
    Ok(News {
        windows: store.windows_after(w, 1000)?,
        conditions: store.conditions_after(c, 1000)?,
        statuses: store.statuses_after(s, 1000)?,
        alerts: store.outbox_after(o, 1000, false)?,
    })
}

/// Moves `seen` past `news`; the events that changed something.
fn follow(seen: &mut Seen, news: News) -> Vec<LiveEvent> {
    let mut events = Vec::new();
    let mut touched_zones = BTreeMap::new();
    let mut touched_nodes = BTreeMap::new();
    for (seq, window) in news.windows {
        seen.windows = seq;
        let key = (window.site.clone(), window.zone.clone());
        let entry = seen
            .zones
            .entry(key.clone())
            .or_insert((Status::NotJudged, None, None));
        if entry.2.is_none_or(|end| window.end >= end) {
            touched_zones
                .entry(key)
                .or_insert((entry.0, entry.1.clone()));
            (entry.0, entry.2) = (window.status, Some(window.end));
        }
    }
    for row in news.conditions {
        seen.conditions = row.id;
        let t = row.transition;
        match (t.kind, t.zone, t.node) {
            (Kind::DarkZone, Some(zone), _) => {
                let key = (t.site, zone);
                let entry =
                    seen.zones
                        .entry(key.clone())
                        .or_insert((Status::NotJudged, None, None));
                touched_zones
                    .entry(key)
                    .or_insert((entry.0, entry.1.clone()));
                entry.1 = t.active.then(|| t.severity.as_str().to_owned());
            }
            (Kind::NodeOffline, _, Some(node)) => {
                let before = seen.online(&node);
                if t.active {
                    seen.offline.insert(node.clone());
                } else {
                    seen.offline.remove(&node);
                }
                touched_nodes.entry(node).or_insert(before);
            }
            _ => {}
        }
    }
    for status in news.statuses {
        seen.statuses = status.id;
        let before = seen.online(&status.node);
        seen.connected
            .insert(status.node.clone(), (status.site, status.online));
        touched_nodes.entry(status.node).or_insert(before);
    }
    for (key, before) in touched_zones {
        if let Some((status, severity, judged_at)) = seen.zones.get(&key)
            && (*status, severity.clone()) != before
        {
            events.push(LiveEvent::Zone {
                status_changed: *status != before.0,
                site: key.0,
                zone: key.1,
                status: status.as_str().into(),
                severity: severity.clone(),
                judged_at: *judged_at,
            });
        }
    }
    for (node, before) in touched_nodes {
        let online = seen.online(&node);
        if online != before {
            let site = seen.connected.get(&node).and_then(|(s, _)| s.clone());
            events.push(LiveEvent::Node { node, site, online });
        }
    }
    for change in news.alerts {
        seen.outbox = change.seq;
        events.push(LiveEvent::Alert(Box::new(change.alert.into())));
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partners_hear_of_no_zone_status_newer_than_the_last_full_hour() {
        let dark = |judged_at: i64| LiveEvent::Zone {
            status_changed: true,
            site: "s".into(),
            zone: "z".into(),
            status: "dark".into(),
            severity: Some("high".into()),
            judged_at: Some(judged_at),
        };
        let hour = 10 * HOUR_MS;
        let partner = Caller::of_role(Role::Partnership);
        assert_eq!(dark(hour + 5 * 60_000).for_caller(&partner, hour), None);
        let told = dark(hour).for_caller(&partner, hour).unwrap();
        assert!(
            matches!(told, LiveEvent::Zone { severity: None, .. }),
            "{told:?}"
        );
        let operator = Caller::of_role(Role::Operator);
        assert_eq!(
            dark(hour + 1).for_caller(&operator, hour),
            Some(dark(hour + 1))
        );
        let viewer = Caller::of_role(Role::Viewer);
        assert!(dark(hour + 1).for_caller(&viewer, hour).is_some());
    }
}
