//! Alerts (filtered, with their history), acknowledge and resolve; silences.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use parklight_protocol::alert::{Alert, AlertKind, AlertState, Severity};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::access::{Caller, Permission};
use super::{ApiError, ErrorBody, Shared};
use crate::alert::{Action, Scope, Silence};
use crate::crew::{CrewError, SilenceTarget};

/// An alert as of its latest change (the PROTOCOL.md alert message).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AlertView {
    /// Unique, stable over its lifecycle.
    pub id: String,
    /// Its change number.
    pub rev: u32,
    /// What it is about.
    pub kind: String,
    /// The site.
    pub site: String,
    /// The zone, if it concerns one.
    pub zone: Option<String>,
    /// The node, if it concerns one.
    pub node: Option<String>,
    /// The circuit of a circuit's power loss.
    pub circuit: Option<String>,
    /// `raised`, `acknowledged` or `resolved`.
    pub state: String,
    /// `low`, `medium`, `high` or `critical`.
    pub severity: String,
    /// When its condition began, Unix ms.
    pub since: u64,
    /// When it last changed, Unix ms.
    pub ts: u64,
    /// What is wrong, for people.
    pub detail: String,
    /// Who acknowledged or resolved it.
    pub by: Option<String>,
    /// Their note.
    pub note: Option<String>,
    /// Its condition comes and goes.
    pub flapping: bool,
    /// Nodes a roll-up covers (at most 500 listed).
    pub children: Vec<String>,
    /// How many nodes a roll-up covers.
    pub children_count: u32,
}

impl From<Alert> for AlertView {
    fn from(a: Alert) -> AlertView {
        AlertView {
            kind: a.kind.as_str().into(),
            state: a.state.as_str().into(),
            severity: a.severity.as_str().into(),
            id: a.id,
            rev: a.rev,
            site: a.site,
            zone: a.zone,
            node: a.node,
            circuit: a.circuit,
            since: a.since,
            ts: a.ts,
            detail: a.detail,
            by: a.by,
            note: a.note,
            flapping: a.flapping,
            children: a.children,
            children_count: a.children_count,
        }
    }
}

/// One change of an alert.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RevisionView {
    /// Its change number.
    pub rev: u32,
    /// What happened: `raised`, `acknowledged`, `reminded`, `severity_rose`, …
    pub what: String,
    /// State after it.
    pub state: String,
    /// Severity after it.
    pub severity: String,
    /// When, Unix ms.
    pub ts: u64,
    /// Who, for a crew's action.
    pub by: Option<String>,
    /// Their note.
    pub note: Option<String>,
    /// Whether receivers were sent it.
    pub paged: bool,
}

/// An alert with its history and the receivers that refused it for good.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AlertDetail {
    /// The alert now.
    #[serde(flatten)]
    pub alert: AlertView,
    /// Every change, oldest first.
    pub history: Vec<RevisionView>,
    /// Permanent refusals: receiver, change number, reason.
    pub refusals: Vec<Refusal>,
}

/// A receiver's permanent refusal of a change.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Refusal {
    /// The receiver.
    pub receiver: String,
    /// The change refused.
    pub rev: u32,
    /// Why.
    pub reason: String,
}

/// Which alerts.
#[derive(Debug, Default, Deserialize, IntoParams)]
pub struct AlertFilter {
    /// `raised`, `acknowledged`, `resolved`, or `open` (raised or acknowledged).
    pub state: Option<String>,
    /// An alert kind, e.g. `dark_zone`.
    pub kind: Option<String>,
    /// A site.
    pub site: Option<String>,
    /// A zone.
    pub zone: Option<String>,
    /// At least this severity.
    pub severity: Option<String>,
    /// Changed at or after this time, Unix ms.
    pub from: Option<i64>,
    /// Changed before this time, Unix ms.
    pub to: Option<i64>,
    /// At most this many, the latest changed first: 1 to 5 000, 500 when not given.
    pub limit: Option<usize>,
}

/// Alerts in one answer at most.
const MOST_ALERTS: usize = 5_000;

impl AlertFilter {
    /// A test for alerts, or the field at fault.
    fn test(&self) -> Result<impl Fn(&Alert) -> bool + '_, ApiError> {
        let state = match self.state.as_deref() {
            None => None,
            Some("open") => Some(None),
            Some(s) => Some(Some(AlertState::parse(s).ok_or_else(|| {
                ApiError::invalid("state", "one of raised, acknowledged, resolved, open")
            })?)),
        };
        let kind = (self.kind.as_deref())
            .map(|k| AlertKind::parse(k).ok_or_else(|| ApiError::invalid("kind", "no such kind")))
            .transpose()?;
        let severity = (self.severity.as_deref())
            .map(|s| {
                Severity::parse(s).ok_or_else(|| {
                    ApiError::invalid("severity", "one of low, medium, high, critical")
                })
            })
            .transpose()?;
        Ok(move |a: &Alert| {
            let state_ok = match state {
                None => true,
                Some(None) => a.state != AlertState::Resolved,
                Some(Some(s)) => a.state == s,
            };
            state_ok
                && kind.is_none_or(|k| a.kind == k)
                && severity.is_none_or(|s| a.severity >= s)
                && self.site.as_ref().is_none_or(|s| *s == a.site)
                && self
                    .zone
                    .as_ref()
                    .is_none_or(|z| a.zone.as_ref() == Some(z))
                && self.from.is_none_or(|t| a.ts as i64 >= t)
                && self.to.is_none_or(|t| (a.ts as i64) < t)
        })
    }
}

/// Alerts, newest change first, at most `limit`; `X-Total-Count` says how many matched.
#[utoipa::path(get, path = "/api/v1/alerts", params(AlertFilter), responses(
    (status = 200, body = Vec<AlertView>, headers(
        ("X-Total-Count" = usize, description = "Alerts that matched, before the limit"))),
    (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn alerts(
    State(api): State<Shared>,
    caller: Caller,
    filter: Result<Query<AlertFilter>, QueryRejection>,
) -> Result<([(&'static str, String); 1], Json<Vec<AlertView>>), ApiError> {
    caller.require(Permission::Operations)?;
    let Query(filter) = filter?;
    let test = filter.test()?;
    let limit = filter.limit.unwrap_or(500);
    if !(1..=MOST_ALERTS).contains(&limit) {
        return Err(ApiError::invalid("limit", format!("1 to {MOST_ALERTS}")));
    }
    let open_only = filter.state.as_deref() == Some("open");
    let mut alerts = api.read(move |store| Ok(store.alerts(open_only)?)).await?;
    alerts.retain(|a| test(a));
    alerts.sort_by(|a, b| b.ts.cmp(&a.ts).then_with(|| a.id.cmp(&b.id)));
    let matched = alerts.len();
    alerts.truncate(limit);
    Ok((
        [("x-total-count", matched.to_string())],
        Json(alerts.into_iter().map(AlertView::from).collect()),
    ))
}

/// An alert with its history.
#[utoipa::path(get, path = "/api/v1/alerts/{id}", params(("id" = String, Path, description = "The alert's id")),
    responses((status = 200, body = AlertDetail), (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn alert(
    State(api): State<Shared>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<AlertDetail>, ApiError> {
    caller.require(Permission::Operations)?;
    let Path(id) = id?;
    let detail = api
        .read(move |store| {
            let Some(alert) = store.alerts(false)?.into_iter().find(|a| a.id == id) else {
                return Err(ApiError::NotFound(format!("no alert {id}")));
            };
            let history = (store.alert_history(&id)?.into_iter())
                .map(|r| RevisionView {
                    rev: r.alert.rev,
                    what: r.what,
                    state: r.alert.state.as_str().into(),
                    severity: r.alert.severity.as_str().into(),
                    ts: r.alert.ts,
                    by: r.alert.by,
                    note: r.alert.note,
                    paged: r.paged,
                })
                .collect();
            let refusals = (store.refusals(&id)?.into_iter())
                .map(|(receiver, rev, reason)| Refusal {
                    receiver,
                    rev,
                    reason,
                })
                .collect();
            Ok(AlertDetail {
                alert: alert.into(),
                history,
                refusals,
            })
        })
        .await?;
    Ok(Json(detail))
}

/// A crew's note on what they do.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Note {
    /// The note (at most 1000 characters).
    pub note: String,
}

async fn act(
    api: Shared,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
    note: Result<Json<Note>, JsonRejection>,
    action: Action,
) -> Result<StatusCode, ApiError> {
    caller.require(Permission::Crew)?;
    let Path(id) = id?;
    let Json(Note { note }) = note?;
    if note.chars().count() > 1000 {
        return Err(ApiError::invalid("note", "at most 1000 characters"));
    }
    api.write(move |store, _| {
        if !store.alerts(false)?.iter().any(|a| a.id == id) {
            return Err(ApiError::NotFound(format!("no alert {id}")));
        }
        let request = crate::crew::request(&id, action, &caller.name, &note);
        crate::crew::act(store, &request).map_err(crew_error)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

fn crew_error(error: CrewError) -> ApiError {
    match error {
        CrewError::Storage(e) => e.into(),
        CrewError::Refused(reason) => ApiError::Conflict(reason),
        CrewError::NoAnswer => ApiError::Unavailable(error.to_string()),
        CrewError::Unknown(what) => ApiError::NotFound(what),
    }
}

/// Acknowledges an alert (as the token's name, with a note).
#[utoipa::path(post, path = "/api/v1/alerts/{id}/ack", params(("id" = String, Path, description = "The alert's id")),
    request_body = Note, responses((status = 204), (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
    (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn acknowledge(
    State(api): State<Shared>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
    note: Result<Json<Note>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    act(api, caller, id, note, Action::Acknowledge).await
}

/// Resolves an alert by hand; refused (409, with the reason) while its condition is active.
#[utoipa::path(post, path = "/api/v1/alerts/{id}/resolve", params(("id" = String, Path, description = "The alert's id")),
    request_body = Note, responses((status = 204), (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
    (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn resolve(
    State(api): State<Shared>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
    note: Result<Json<Note>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    act(api, caller, id, note, Action::Resolve).await
}

/// The longest silence.
pub const MAX_SILENCE_MS: i64 = 366 * 86_400_000;

/// A maintenance window.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SilenceView {
    /// Its number.
    pub id: i64,
    /// The site.
    pub site: String,
    /// The zone it covers, if one.
    pub zone: Option<String>,
    /// The node it covers, if one.
    pub node: Option<String>,
    /// The circuit it covers, if one.
    pub circuit: Option<String>,
    /// From, Unix ms.
    pub from: i64,
    /// Until, Unix ms.
    pub until: i64,
    /// Who set it.
    pub by: String,
    /// Why.
    pub note: String,
}

impl From<Silence> for SilenceView {
    fn from(s: Silence) -> SilenceView {
        let (zone, node, circuit) = match s.scope {
            Scope::Site => (None, None, None),
            Scope::Zone(z) => (Some(z), None, None),
            Scope::Node(n) => (None, Some(n), None),
            Scope::Circuit(c) => (None, None, Some(c)),
        };
        SilenceView {
            id: s.id,
            site: s.site,
            zone,
            node,
            circuit,
            from: s.from,
            until: s.until,
            by: s.by,
            note: s.note,
        }
    }
}

/// A new maintenance window: a site, or one zone, node or circuit of it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NewSilence {
    /// The site.
    pub site: String,
    /// One zone of it.
    pub zone: Option<String>,
    /// One node of it.
    pub node: Option<String>,
    /// One circuit of it.
    pub circuit: Option<String>,
    /// When it ends, Unix ms (in the future, within a year).
    pub until: i64,
    /// Why (at most 1000 characters).
    pub note: String,
}

/// Silences still running.
#[utoipa::path(get, path = "/api/v1/silences", responses(
    (status = 200, body = Vec<SilenceView>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn silences(
    State(api): State<Shared>,
    caller: Caller,
) -> Result<Json<Vec<SilenceView>>, ApiError> {
    caller.require(Permission::Operations)?;
    let now = jiff::Timestamp::now().as_millisecond();
    let silences = api.read(move |store| Ok(store.silences(now)?)).await?;
    Ok(Json(silences.into_iter().map(SilenceView::from).collect()))
}

/// Adds a silence (set by the token's name).
#[utoipa::path(post, path = "/api/v1/silences", request_body = NewSilence, responses(
    (status = 201, body = SilenceView), (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn add_silence(
    State(api): State<Shared>,
    caller: Caller,
    body: Result<Json<NewSilence>, JsonRejection>,
) -> Result<(StatusCode, Json<SilenceView>), ApiError> {
    caller.require(Permission::Crew)?;
    let Json(new) = body?;
    let now = jiff::Timestamp::now().as_millisecond();
    if new.until <= now || new.until - now > MAX_SILENCE_MS {
        return Err(ApiError::invalid("until", "in the future, within a year"));
    }
    if new.note.chars().count() > 1000 {
        return Err(ApiError::invalid("note", "at most 1000 characters"));
    }
    let target = SilenceTarget {
        site: &new.site,
        zone: new.zone.as_deref(),
        node: new.node.as_deref(),
        circuit: new.circuit.as_deref(),
    };
    let field = match (&new.zone, &new.node, &new.circuit) {
        (Some(_), None, None) => "zone",
        (None, Some(_), None) => "node",
        (None, None, Some(_)) => "circuit",
        (None, None, None) => "site",
        _ => "zone",
    };
    let scope = target.scope(&api.sites).map_err(|e| match e {
        CrewError::Unknown(message) if message.starts_with("one of") => {
            ApiError::invalid(field, "one of zone, node and circuit at most")
        }
        other => ApiError::invalid(field, other.to_string()),
    })?;
    let mut silence = Silence {
        id: 0,
        site: new.site,
        scope,
        from: now,
        until: new.until,
        by: caller.name,
        note: new.note,
    };
    let silence = api
        .write(move |store, _| {
            silence.id = store.add_silence(&silence)?;
            Ok(silence)
        })
        .await?;
    Ok((StatusCode::CREATED, Json(silence.into())))
}

/// Ends a silence now.
#[utoipa::path(delete, path = "/api/v1/silences/{id}", params(("id" = i64, Path, description = "The silence's number")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    (status = 404, body = ErrorBody)))]
pub async fn end_silence(
    State(api): State<Shared>,
    caller: Caller,
    id: Result<Path<i64>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    caller.require(Permission::Crew)?;
    let Path(id) = id?;
    let now = jiff::Timestamp::now().as_millisecond();
    let ended = api
        .write(move |store, _| Ok(store.end_silence(id, now)?))
        .await?;
    if ended {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("no silence {id} is running")))
    }
}
