//! Who may do what: tokens, roles, browser sessions, and a limit on failed attempts.
//!
//! A script sends its token as `Authorization: Bearer …`; a browser exchanges it once
//! (`POST /api/v1/login`) for an HttpOnly, `SameSite=Strict` session cookie, because an
//! `EventSource` cannot send a header and a token in a URL leaks into logs. Only the
//! SHA-256 of a token is stored; a revoked token ends its sessions too.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use rand::RngExt;
use serde::{Deserialize, Serialize};

use super::{ApiError, Shared};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "parklight_session";
/// How long a browser session lasts.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Failed attempts a client address may make per [`FAILURE_WINDOW`] before it is refused.
pub const FAILURES_ALLOWED: u32 = 10;
/// The window failed attempts are counted over.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// What a token holder is.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything: status, nodes, alerts, silences, usage, energy, control.
    Operator,
    /// Status, nodes, alerts and silences: read, acknowledge, resolve, silence.
    Maintenance,
    /// Zone status without severity or detections, and usage aggregated to zones.
    Partnership,
    /// Zone status only.
    Viewer,
}

/// Something a role may or may not do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Sites and zones with their status (lit, dark, unobserved, not judged).
    ZoneStatus,
    /// A zone's severity, lux and detections; nodes; alerts and silences, read.
    Operations,
    /// Acknowledge and resolve alerts; add and end silences.
    Crew,
}

impl Role {
    /// Every role, with its name.
    pub const ALL: [(Role, &'static str); 4] = [
        (Role::Operator, "operator"),
        (Role::Maintenance, "maintenance"),
        (Role::Partnership, "partnership"),
        (Role::Viewer, "viewer"),
    ];

    /// Its name.
    pub fn as_str(self) -> &'static str {
        Role::ALL
            .iter()
            .find(|(r, _)| *r == self)
            .map_or("?", |(_, n)| n)
    }

    /// The role named `name`.
    pub fn parse(name: &str) -> Option<Role> {
        Role::ALL.iter().find(|(_, n)| *n == name).map(|(r, _)| *r)
    }

    /// Whether this role may do `what`.
    pub fn may(self, what: Permission) -> bool {
        match what {
            Permission::ZoneStatus => true,
            Permission::Operations | Permission::Crew => {
                matches!(self, Role::Operator | Role::Maintenance)
            }
        }
    }
}

/// A new token's secret: 32 random bytes, hex, with a prefix that says what it is.
pub fn new_secret() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    format!("plk_{}", hex(&bytes))
}

/// The hash a token is stored and looked up by.
pub fn hash(secret: &str) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, secret.as_bytes()).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The holder of a valid token, as a request carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name (recorded as `by` on what they do).
    pub name: String,
    /// Its role.
    pub role: Role,
}

impl Caller {
    /// `Ok` when the caller may do `what`, else 403.
    pub fn require(&self, what: Permission) -> Result<(), ApiError> {
        if self.role.may(what) {
            Ok(())
        } else {
            Err(ApiError::Forbidden)
        }
    }

    /// Whether the caller may do `what`.
    pub fn may(&self, what: Permission) -> bool {
        self.role.may(what)
    }
}

/// Browser sessions, in memory: a restart asks people to log in again.
#[derive(Debug, Default)]
pub struct Sessions {
    live: Mutex<HashMap<String, Session>>,
}

#[derive(Debug, Clone)]
struct Session {
    token_hash: String,
    expires: Instant,
}

impl Sessions {
    /// Opens a session for the token whose hash is `token_hash`; returns its id.
    pub fn open(&self, token_hash: String) -> String {
        let id = new_secret();
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        live.retain(|_, s| s.expires > now);
        live.insert(
            hash(&id),
            Session {
                token_hash,
                expires: now + SESSION_LIFETIME,
            },
        );
        id
    }

    /// The token hash behind session `id`, while it lasts.
    fn token_hash(&self, id: &str) -> Option<String> {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        (live.get(&hash(id)))
            .filter(|s| s.expires > Instant::now())
            .map(|s| s.token_hash.clone())
    }

    /// Ends session `id`.
    pub fn close(&self, id: &str) {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.remove(&hash(id));
    }
}

/// Failed attempts per client address: after [`FAILURES_ALLOWED`] in a window, every
/// further attempt from it is refused (429) until the window ends.
#[derive(Debug, Default)]
pub struct Limiter {
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl Limiter {
    /// Whether `client` is refused for now.
    pub fn refused(&self, client: IpAddr) -> bool {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.get(&client).is_some_and(|(since, count)| {
            since.elapsed() < FAILURE_WINDOW && *count >= FAILURES_ALLOWED
        })
    }

    /// Counts a failed attempt from `client`.
    pub fn failed(&self, client: IpAddr) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        failures.retain(|_, (since, _)| now.duration_since(*since) < FAILURE_WINDOW);
        failures.entry(client).or_insert((now, 0)).1 += 1;
    }
}

/// The session id in a request's cookies.
pub fn session_cookie(parts: &Parts) -> Option<&str> {
    (parts.headers.get_all(axum::http::header::COOKIE).iter())
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value)
}

/// The client's address (loopback when the server was not told it).
pub fn client(parts: &Parts) -> IpAddr {
    (parts.extensions.get::<ConnectInfo<std::net::SocketAddr>>())
        .map_or(IpAddr::from([127, 0, 0, 1]), |c| c.0.ip())
}

impl FromRequestParts<Shared> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, api: &Shared) -> Result<Caller, ApiError> {
        let client = client(parts);
        if api.limiter.refused(client) {
            return Err(ApiError::TooManyAttempts);
        }
        let bearer = (parts.headers.get(axum::http::header::AUTHORIZATION))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|secret| hash(secret.trim()));
        let presented = match bearer {
            Some(hash) => Some(hash),
            None => session_cookie(parts).map(|id| api.sessions.token_hash(id).unwrap_or_default()),
        };
        let Some(token_hash) = presented else {
            return Err(ApiError::Unauthorized);
        };
        let holder = api
            .read(move |store| Ok(store.token_by_hash(&token_hash)?))
            .await?;
        match holder.and_then(|(name, role)| Some((name, Role::parse(&role)?))) {
            Some((name, role)) => Ok(Caller { name, role }),
            None => {
                api.limiter.failed(client);
                Err(ApiError::Unauthorized)
            }
        }
    }
}

/// The client's address, as an extractor.
pub struct ClientAddr(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<ClientAddr, Self::Rejection> {
        Ok(ClientAddr(client(parts)))
    }
}
