//! The HTTP API under `/api/v1`: JSON, described by the OpenAPI 3.1 document it serves at
//! `/api/v1/openapi.json` (generated from these handlers, so it lists every route the
//! router serves), errors as `{"code", "message"}` with a stable code and never an
//! internal detail. `/metrics`, `/healthz` and `/readyz` need no token; everything else
//! needs a token or a session, and a role that may (see [`access`]).
//!
//! - [`access`]: tokens, roles, sessions, the limit on failed attempts.
//! - `places`: sites, zones (GeoJSON with live status), nodes.
//! - `crew`: alerts, their history, acknowledge and resolve; silences.
//! - `series`: a zone's or a node's series at a step.
//! - `usage`: foot traffic by zone, hour and weekday for partnerships; `change`: before
//!   and after a date.
//! - [`live`]: `/api/v1/events`, live updates as Server-Sent Events.

pub mod access;
mod change;
mod compliance;
mod control;
mod crew;
mod energy;
pub mod live;
mod places;
mod rounding;
mod series;
mod usage;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use parklight_site::Site;
use serde::{Deserialize, Serialize};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::detection::BrokerLink;
use crate::store::{StorageError, Store};
use access::{Caller, Limiter, Role, SESSION_LIFETIME, Sessions};

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// The start of the current hour, Unix ms: partners see nothing newer.
fn last_full_hour() -> i64 {
    let now = jiff::Timestamp::now().as_millisecond();
    now - now.rem_euclid(HOUR_MS)
}

/// Whether `format` asks for CSV: `json` (the default) or `csv`.
fn wants_csv(format: Option<&str>) -> Result<bool, ApiError> {
    match format {
        None | Some("json") => Ok(false),
        Some("csv") => Ok(true),
        Some(_) => Err(ApiError::invalid("format", "json or csv")),
    }
}

/// A CSV answer.
fn csv_response(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response()
}

/// The period `[from, to)` asked (Unix ms), checked: at most `max_days` long; for
/// partners (with their site's time zone), whole local hours that ended an hour ago or
/// more, so that the detectors have judged them (an hour is told to partners once, from
/// what the store holds then).
fn period(
    from: i64,
    to: i64,
    partner: Option<&parklight_core::tz::TimeZone>,
    max_days: i64,
) -> Result<(i64, i64), ApiError> {
    // Up to the end of the year 9999.
    const LAST: i64 = 253_402_300_799_999;
    if !(0..=LAST).contains(&from) || !(0..=LAST).contains(&to) {
        let field = if (0..=LAST).contains(&from) {
            "to"
        } else {
            "from"
        };
        return Err(ApiError::invalid(
            field,
            "a time from 1970 to 9999 (Unix ms)",
        ));
    }
    let now = jiff::Timestamp::now().as_millisecond();
    let (from, to) = match partner {
        Some(tz) => (
            rounding::local_hour(tz, from),
            rounding::local_hour(tz, to.min(now - HOUR_MS)),
        ),
        None => (from, to),
    };
    if from < 0 {
        return Err(ApiError::invalid("from", "a time since 1970 (Unix ms)"));
    }
    let span = to.checked_sub(from).unwrap_or(i64::MAX);
    if span <= 0 || span > max_days * DAY_MS {
        return Err(ApiError::invalid(
            "to",
            format!(
                "after from (for partners: by a whole hour, ending an hour ago or more), by at most {max_days} days"
            ),
        ));
    }
    Ok((from, to))
}

/// The name of the store's secret that keys partners' rounding ([`rounding`]).
pub const ROUNDING_SECRET: &str = "partner-rounding";

/// Reads of the store at once, each on a connection of its own (SQLite's readers do not
/// wait for each other): a month of energy (a second) holds up none of the short reads.
const READERS: usize = 4;

/// Reports the detectors may lag behind the store while the gateway still counts as ready.
pub const READY_DETECTION_LAG: i64 = 10_000;

/// What the handlers share.
pub struct ApiState {
    /// Idle read connections.
    readers: Mutex<Vec<Store>>,
    /// A turn for each read at once: at most [`READERS`].
    read_turns: Arc<tokio::sync::Semaphore>,
    folder: PathBuf,
    dead_letters_max: usize,
    sites: Vec<Site>,
    broker: Arc<BrokerLink>,
    /// Asks the config publisher to plan again or to publish commands.
    control: tokio::sync::mpsc::Sender<crate::desired::Request>,
    /// The MQTT topic prefix, for commands.
    topic_prefix: String,
    /// Pricing the lamps' energy.
    energy: crate::config::EnergyConfig,
    sessions: Sessions,
    limiter: Limiter,
    /// The session cookie's name; `Secure` (and `__Host-`) when browsers reach the
    /// gateway over HTTPS.
    cookie: &'static str,
    secure_cookies: bool,
    suppress_below: u32,
    /// Keys the rounding of partners' counts ([`rounding`]).
    rounding_key: ring::hmac::Key,
    events: tokio::sync::broadcast::Sender<live::LiveEvent>,
}

/// The handlers' state.
pub type Shared = Arc<ApiState>;

impl ApiState {
    /// The API's state, as `config` says, for `sites`; `control` reaches the config
    /// publisher. Session cookies are `Secure` when browsers come over HTTPS (TLS, or
    /// plain HTTP beyond loopback behind a proxy); partners' counts are told by the
    /// hour with `[usage] suppress_below` and the store's secret ([`rounding`]).
    pub fn new(
        config: &crate::config::Config,
        sites: Vec<Site>,
        broker: Arc<BrokerLink>,
        control: tokio::sync::mpsc::Sender<crate::desired::Request>,
    ) -> Result<ApiState, StorageError> {
        let (folder, dead_letters_max) = (&config.storage.path, config.storage.dead_letters_max);
        let secure_cookies = config.http.tls().is_some() || config.http.plain_http_beyond_loopback;
        let mut store = Store::open(folder, dead_letters_max)?;
        let rounding_key =
            ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &store.secret(ROUNDING_SECRET)?);
        Ok(ApiState {
            readers: Mutex::new(vec![store]),
            read_turns: Arc::new(tokio::sync::Semaphore::new(READERS)),
            folder: folder.clone(),
            dead_letters_max,
            sites,
            broker,
            control,
            topic_prefix: config.mqtt.topic_prefix.clone(),
            energy: config.energy.clone(),
            sessions: Sessions::default(),
            limiter: Limiter::default(),
            cookie: access::cookie_name(secure_cookies),
            secure_cookies,
            suppress_below: config.usage.suppress_below,
            rounding_key,
            events: tokio::sync::broadcast::channel(live::BACKLOG).0,
        })
    }

    /// How counts of `site` are told to `caller`: rounded for partners, else exact.
    fn telling(&self, site: &str, caller: &Caller) -> rounding::Telling {
        match caller.role {
            Role::Partnership => {
                rounding::Telling::rounded(&self.rounding_key, site, self.suppress_below)
            }
            _ => rounding::Telling::exact(),
        }
    }

    /// Runs `read` on a read connection of its own, off the runtime's workers, once one
    /// of the [`READERS`] turns is free: a long read holds up no other.
    async fn read<T: Send + 'static>(
        self: &Arc<Self>,
        read: impl FnOnce(&mut Store) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        // The turn goes with the read: a request given up still holds it until the read ends.
        let turn = (self.read_turns.clone().acquire_owned().await)
            .map_err(|e| ApiError::internal("a turn to read", e))?;
        let api = self.clone();
        tokio::task::spawn_blocking(move || {
            let _turn = turn;
            let idle = api.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let mut store = match idle {
                Some(store) => store,
                None => Store::open(&api.folder, api.dead_letters_max)?,
            };
            let answer = read(&mut store);
            api.readers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(store);
            answer
        })
        .await
        .map_err(|e| ApiError::internal("a store read", e))?
    }

    /// Runs `write` on a connection of its own (it may wait for the alert manager),
    /// off the runtime's workers.
    async fn write<T: Send + 'static>(
        self: &Arc<Self>,
        write: impl FnOnce(&mut Store, &ApiState) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let api = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut store = Store::open(&api.folder, api.dead_letters_max)?;
            write(&mut store, &api)
        })
        .await
        .map_err(|e| ApiError::internal("a store write", e))?
    }

    fn site(&self, id: &str) -> Result<&Site, ApiError> {
        (self.sites.iter().find(|s| s.id == id))
            .ok_or_else(|| ApiError::NotFound(format!("no site {id}")))
    }

    /// The site `id`, checking that it has `zone` when one is named.
    fn site_with(&self, id: &str, zone: Option<&str>) -> Result<&Site, ApiError> {
        let site = self.site(id)?;
        match zone {
            Some(zone) if site.zone(zone).is_none() => Err(ApiError::NotFound(format!(
                "no zone {zone} in site {}",
                site.id
            ))),
            _ => Ok(site),
        }
    }
}

/// An API error: an HTTP status, a stable code and a message for people.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No valid token or session (401 `unauthorized`).
    #[error("a valid token or session is needed")]
    Unauthorized,
    /// The role may not (403 `forbidden`).
    #[error("this role may not do that")]
    Forbidden,
    /// Too many failed attempts from this address (429 `too_many_attempts`).
    #[error("too many failed attempts from this address: try again in a minute")]
    TooManyAttempts,
    /// Nothing there (404 `not_found`).
    #[error("{0}")]
    NotFound(String),
    /// The request cannot be read (400 `bad_request`).
    #[error("{0}")]
    BadRequest(String),
    /// The body is not JSON (415 `unsupported_media_type`).
    #[error("send the body as JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    /// The body is too large (413 `too_large`).
    #[error("the body is too large")]
    TooLarge,
    /// A field's value is not acceptable (422 `invalid`), naming the field.
    #[error("{field}: {message}")]
    Invalid {
        /// The field.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// Refused in the state things are in (409 `conflict`), with the reason.
    #[error("{0}")]
    Conflict(String),
    /// The gateway cannot answer now (503 `unavailable`).
    #[error("{0}")]
    Unavailable(String),
    /// Something failed inside (500 `internal`); the detail is in the gateway's log only.
    #[error("internal error: see the gateway's log")]
    Internal,
}

impl ApiError {
    fn internal(what: &str, error: impl std::fmt::Display) -> ApiError {
        tracing::error!(%error, "API: {what} failed");
        ApiError::Internal
    }

    fn invalid(field: &str, message: impl Into<String>) -> ApiError {
        ApiError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Its status and stable code.
    pub fn status(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::TooManyAttempts => (StatusCode::TOO_MANY_REQUESTS, "too_many_attempts"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            ApiError::Invalid { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl From<StorageError> for ApiError {
    fn from(error: StorageError) -> ApiError {
        ApiError::internal("the store", error)
    }
}

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::QueryRejection) -> ApiError {
        ApiError::BadRequest(rejection.body_text())
    }
}

impl From<axum::extract::rejection::PathRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::PathRejection) -> ApiError {
        ApiError::BadRequest(rejection.body_text())
    }
}

impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::JsonRejection) -> ApiError {
        use axum::extract::rejection::JsonRejection;
        match rejection {
            JsonRejection::JsonDataError(e) => ApiError::invalid("body", e.body_text()),
            JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType,
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge,
            other => ApiError::BadRequest(other.body_text()),
        }
    }
}

/// An error as the API answers it.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Stable, for programs: `unauthorized`, `forbidden`, `too_many_attempts`,
    /// `not_found`, `bad_request`, `unsupported_media_type`, `too_large`, `invalid`,
    /// `conflict`, `unavailable`, `internal`.
    pub code: String,
    /// For people.
    pub message: String,
    /// The field at fault, for `invalid`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status();
        metrics::counter!(crate::metrics::API_ERRORS, "code" => code).increment(1);
        let field = match &self {
            ApiError::Invalid { field, .. } => Some(field.clone()),
            _ => None,
        };
        let body = ErrorBody {
            code: code.into(),
            message: self.to_string(),
            field,
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            (response.headers_mut()).insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"parklight\""),
            );
        }
        response
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "parklight",
        description = "Park paths kept lit: zones, nodes, alerts and silences of a parklight gateway."
    ),
    modifiers(&BearerAuth),
    security(("bearer" = []), ("session" = [])),
    components(schemas(ErrorBody))
)]
struct ApiDoc;

/// The security schemes.
struct BearerAuth;

/// Adds the answers every route may give: 400 (a request that cannot be read), 429 (an
/// address refused after failed attempts) and 500.
fn every_route_may_fail(openapi: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{Content, Ref, ResponseBuilder};
    for item in openapi.paths.paths.values_mut() {
        for operation in [
            &mut item.get,
            &mut item.post,
            &mut item.delete,
            &mut item.put,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            for (status, what) in [
                ("400", "The request cannot be read"),
                ("429", "Too many failed attempts from this address"),
                ("500", "Internal error (the detail is in the gateway's log)"),
            ] {
                let response = ResponseBuilder::new()
                    .description(what)
                    .content(
                        "application/json",
                        Content::new(Some(Ref::from_schema_name("ErrorBody"))),
                    )
                    .build();
                (operation.responses.responses)
                    .entry(status.into())
                    .or_insert(response.into());
            }
        }
    }
}

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            utoipa::openapi::security::SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build(),
            ),
        );
        components.add_security_scheme(
            "session",
            utoipa::openapi::security::SecurityScheme::ApiKey(ApiKey::Cookie(
                ApiKeyValue::with_description(
                    access::SESSION_COOKIE,
                    "From POST /api/v1/login; named __Host-parklight_session over HTTPS",
                ),
            )),
        );
    }
}

/// The API's router and its OpenAPI document.
pub fn router(api: Shared) -> (axum::Router, utoipa::openapi::OpenApi) {
    let (router, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(login))
        .routes(routes!(logout))
        .routes(routes!(whoami))
        .routes(routes!(places::sites))
        .routes(routes!(places::zones))
        .routes(routes!(places::nodes))
        .routes(routes!(crew::alerts))
        .routes(routes!(crew::alert))
        .routes(routes!(crew::acknowledge))
        .routes(routes!(crew::resolve))
        .routes(routes!(crew::silences, crew::add_silence))
        .routes(routes!(crew::end_silence))
        .routes(routes!(series::series))
        .routes(routes!(usage::usage))
        .routes(routes!(change::change))
        .routes(routes!(live::events))
        .routes(routes!(control::state))
        .routes(routes!(control::set_lighting, control::reset_lighting))
        .routes(routes!(control::override_zone))
        .routes(routes!(control::audit))
        .routes(routes!(energy::energy))
        .routes(routes!(compliance::compliance_report))
        .with_state(api)
        .split_for_parts();
    let mut openapi = openapi;
    every_route_may_fail(&mut openapi);
    let document = openapi.clone();
    let router = router
        .route(
            "/api/v1/openapi.json",
            axum::routing::get(move || std::future::ready(Json(document.clone()))),
        )
        .layer(axum::middleware::map_response(no_store))
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async {
            let mut response =
                ApiError::BadRequest("method not allowed here".into()).into_response();
            *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
            response
        });
    (router, openapi)
}

/// API answers are not to be cached: they change, and some are for one role only.
async fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", security(()), responses((status = 200, body = String)))]
async fn healthz() -> &'static str {
    "ok\n"
}

/// Whether the gateway can do its job.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Readiness {
    /// All of the below.
    pub ready: bool,
    /// Connected to the broker.
    pub broker: bool,
    /// The store takes a write.
    pub store: bool,
    /// Reports stored that the detectors have not judged yet.
    pub detection_lag: i64,
}

/// Ready: broker connected, store writable, detectors caught up (at most
/// [`READY_DETECTION_LAG`] reports behind). 503 otherwise.
#[utoipa::path(get, path = "/readyz", security(()), responses(
    (status = 200, body = Readiness), (status = 503, body = Readiness)))]
async fn readyz(State(api): State<Shared>) -> Response {
    let broker = api.broker.since().is_some();
    // On a connection of its own: a write may wait its turn behind the writer.
    let checked = api
        .write(|store, _| {
            let lag = store.last_report_id()? - store.detected()?.report;
            let writable = store.probe_write().is_ok();
            Ok((writable, lag))
        })
        .await;
    let (store, detection_lag) = checked.unwrap_or((false, i64::MAX));
    let ready = broker && store && detection_lag <= READY_DETECTION_LAG;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Readiness {
        ready,
        broker,
        store,
        detection_lag,
    };
    (status, Json(body)).into_response()
}

/// A token to log in with.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Login {
    /// The token, as `parklight token create` printed it.
    pub token: String,
}

/// Who is logged in.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Identity {
    /// The token's name.
    pub name: String,
    /// Its role.
    pub role: Role,
}

/// Exchanges a token for a session cookie (HttpOnly, `SameSite=Strict`, `Secure` over
/// HTTPS) for the browser.
#[utoipa::path(post, path = "/api/v1/login", security(()), request_body = Login, responses(
    (status = 200, body = Identity), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn login(
    State(api): State<Shared>,
    access::ClientAddr(client): access::ClientAddr,
    body: Result<Json<Login>, axum::extract::rejection::JsonRejection>,
) -> Result<(HeaderMap, Json<Identity>), ApiError> {
    if api.limiter.refused(client) {
        return Err(ApiError::TooManyAttempts);
    }
    let Json(login) = body?;
    let token_hash = access::hash(login.token.trim());
    let lookup = token_hash.clone();
    let holder = api
        .read(move |store| Ok(store.token_by_hash(&lookup)?))
        .await?;
    let Some((name, role)) = holder.and_then(|(n, r)| Some((n, Role::parse(&r)?))) else {
        api.limiter.failed(client);
        return Err(ApiError::Unauthorized);
    };
    let session = api.sessions.open(token_hash);
    let secure = if api.secure_cookies { "; Secure" } else { "" };
    let cookie = format!(
        "{}={session}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        api.cookie,
        SESSION_LIFETIME.as_secs()
    );
    let mut headers = HeaderMap::new();
    let value = HeaderValue::from_str(&cookie).map_err(|e| ApiError::internal("a cookie", e))?;
    headers.insert(header::SET_COOKIE, value);
    Ok((headers, Json(Identity { name, role })))
}

/// Ends the browser's session.
#[utoipa::path(post, path = "/api/v1/logout", security(()), responses((status = 204)))]
async fn logout(
    State(api): State<Shared>,
    request: axum::http::Request<axum::body::Body>,
) -> Response {
    let (parts, _) = request.into_parts();
    if let Some(id) = access::session_cookie(&parts, api.cookie) {
        api.sessions.close(id);
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    let secure = if api.secure_cookies { "; Secure" } else { "" };
    let expired = format!(
        "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}",
        api.cookie
    );
    if let Ok(value) = HeaderValue::from_str(&expired) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// The caller's name and role.
#[utoipa::path(get, path = "/api/v1/whoami", responses(
    (status = 200, body = Identity), (status = 401, body = ErrorBody)))]
async fn whoami(caller: Caller) -> Json<Identity> {
    Json(Identity {
        name: caller.name,
        role: caller.role,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use parklight_core::tz::TimeZone;

    #[test]
    fn partners_periods_are_whole_local_hours_that_ended_an_hour_ago_or_more() {
        // India is half an hour off UTC: its hours start at half past in UTC.
        let kolkata = TimeZone::parse("IST-5:30").unwrap();
        let now = jiff::Timestamp::now().as_millisecond();
        let (from, to) = period(now - 5 * HOUR_MS - 1234, now, Some(&kolkata), 400).unwrap();
        for end in [from, to] {
            assert_eq!((end + 30 * 60_000).rem_euclid(HOUR_MS), 0, "{end}");
        }
        assert!(to <= now - HOUR_MS && to > now - 2 * HOUR_MS);
        assert!(from <= now - 5 * HOUR_MS - 1234 && from > now - 6 * HOUR_MS - 1234);
        // Less than a whole hour ended an hour ago: nothing to tell.
        assert!(period(now - HOUR_MS / 2, now, Some(&kolkata), 400).is_err());
        // Operators get what they ask for, within the years 1970 to 9999.
        assert_eq!(
            period(now - 1234, now, None, 400).unwrap(),
            (now - 1234, now)
        );
        assert!(period(i64::MAX - 1, i64::MAX, None, 400).is_err());
        assert!(period(-1, now, None, 400).is_err());
    }
}
