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

/// The session cookie's name over plain HTTP (see [`cookie_name`]).
pub const SESSION_COOKIE: &str = "parklight_session";
/// Sessions one token may have open; the oldest ends when another opens.
pub const SESSIONS_PER_TOKEN: usize = 20;
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
    /// Usage figures, aggregated to zones and hours.
    Usage,
    /// Lamp control: lighting profiles, overrides, the control audit log.
    Control,
    /// The lamps' energy and its cost.
    Energy,
    /// Compliance: lit to class, dark with people, time to repair.
    Compliance,
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
            Permission::Usage => matches!(self, Role::Operator | Role::Partnership),
            Permission::Control | Permission::Energy => self == Role::Operator,
            Permission::Compliance => matches!(self, Role::Operator | Role::Partnership),
        }
    }
}

/// A new token's secret: 32 random bytes, hex, with a prefix that says what it is.
pub fn new_secret() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    format!("plk_{}", hex(&bytes))
}

/// Whether `name` may name a token: 1 to 64 of `A-Z a-z 0-9 . _ @ -` (it is shown as
/// who acted, in lists, alerts and webhooks).
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@-".contains(&b))
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
    /// The token's hash, to check it again later (a long-lived event stream).
    token_hash: String,
    /// The browser session it came with, if any.
    session: Option<String>,
}

#[cfg(test)]
impl Caller {
    /// A caller of `role` without a token, for tests.
    pub(crate) fn of_role(role: Role) -> Caller {
        Caller {
            name: format!("{role:?}"),
            role,
            token_hash: String::new(),
            session: None,
        }
    }
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

    /// Whether its session (if any) still lasts and its token is still in use.
    pub async fn still_valid(&self, api: &Shared) -> bool {
        if (self.session.as_deref()).is_some_and(|id| api.sessions.token_hash(id).is_none()) {
            return false;
        }
        let hash = self.token_hash.clone();
        api.read(move |store| Ok(store.token_by_hash(&hash)?.is_some()))
            .await
            .unwrap_or(true)
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
        let mut same: Vec<(Instant, String)> = (live.iter())
            .filter(|(_, s)| s.token_hash == token_hash)
            .map(|(id, s)| (s.expires, id.clone()))
            .collect();
        same.sort();
        for (_, oldest) in same
            .iter()
            .take((same.len() + 1).saturating_sub(SESSIONS_PER_TOKEN))
        {
            live.remove(oldest);
        }
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
    pub fn token_hash(&self, id: &str) -> Option<String> {
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

/// Failed attempts per client address (an IPv6 client by its /64): after
/// [`FAILURES_ALLOWED`] in a window, every further attempt from it is refused (429)
/// until the window ends.
#[derive(Debug, Default)]
pub struct Limiter {
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl Limiter {
    /// Whether `client` is refused for now.
    pub fn refused(&self, client: IpAddr) -> bool {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures
            .get(&network(client))
            .is_some_and(|(since, count)| {
                since.elapsed() < FAILURE_WINDOW && *count >= FAILURES_ALLOWED
            })
    }

    /// Counts a failed attempt from `client`.
    pub fn failed(&self, client: IpAddr) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        failures.retain(|_, (since, _)| now.duration_since(*since) < FAILURE_WINDOW);
        let count = &mut failures.entry(network(client)).or_insert((now, 0)).1;
        *count += 1;
        if *count == FAILURES_ALLOWED {
            tracing::warn!(%client, "API: too many failed attempts; refusing this address for a minute");
        }
    }
}

/// The address a client is limited by: itself, or for IPv6 its /64 (one host's share).
fn network(client: IpAddr) -> IpAddr {
    match client {
        IpAddr::V4(_) => client,
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
    }
}

/// The session cookie's name: with the `__Host-` prefix when it is `Secure`, so no
/// other host (a sibling subdomain) can set one for this gateway.
pub fn cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Host-parklight_session"
    } else {
        SESSION_COOKIE
    }
}

/// The session id in a request's cookie called `name`.
pub fn session_cookie<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    (parts.headers.get_all(axum::http::header::COOKIE).iter())
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value)
}

/// The client's address (loopback when the server was not told it).
pub fn client(parts: &Parts) -> IpAddr {
    (parts.extensions.get::<ConnectInfo<std::net::SocketAddr>>())
        .map_or(IpAddr::from([127, 0, 0, 1]), |c| c.0.ip())
}

impl FromRequestParts<Shared> for Caller {
    type Rejection = ApiError;

    /// A bearer token, else a session cookie. A wrong token counts as a failed attempt
    /// from the client's address; a session cookie never does (its id cannot be guessed,
    /// and a browser left open over a restart is no attacker).
    async fn from_request_parts(parts: &mut Parts, api: &Shared) -> Result<Caller, ApiError> {
        let client = client(parts);
        if api.limiter.refused(client) {
            return Err(ApiError::TooManyAttempts);
        }
        let bearer = (parts.headers.get(axum::http::header::AUTHORIZATION))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, secret)| hash(secret.trim()));
        let (token_hash, session) = match bearer {
            Some(hash) => (hash, None),
            None => {
                let id = session_cookie(parts, api.cookie).ok_or(ApiError::Unauthorized)?;
                let hash = api.sessions.token_hash(id).ok_or(ApiError::Unauthorized)?;
                (hash, Some(id.to_owned()))
            }
        };
        let lookup = token_hash.clone();
        let holder = api
            .read(move |store| Ok(store.token_by_hash(&lookup)?))
            .await?;
        match holder.and_then(|(name, role)| Some((name, Role::parse(&role)?))) {
            Some((name, role)) => Ok(Caller {
                name,
                role,
                token_hash,
                session,
            }),
            None => {
                if session.is_none() {
                    api.limiter.failed(client);
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_client_is_limited_by_its_64_and_an_ipv4_client_by_itself() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(network(a), network(b));
        assert_ne!(network(a), network(other));
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(network(v4), v4);
        let limiter = Limiter::default();
        for _ in 0..FAILURES_ALLOWED {
            assert!(!limiter.refused(a));
            limiter.failed(a);
        }
        assert!(limiter.refused(b), "the same /64");
        assert!(!limiter.refused(other) && !limiter.refused(v4));
    }

    #[test]
    fn a_token_keeps_its_newest_sessions_and_a_closed_one_is_gone() {
        let sessions = Sessions::default();
        let ids: Vec<String> = (0..SESSIONS_PER_TOKEN + 2)
            .map(|_| sessions.open("token".into()))
            .collect();
        let live = ids
            .iter()
            .filter(|id| sessions.token_hash(id).is_some())
            .count();
        assert_eq!(live, SESSIONS_PER_TOKEN);
        assert!(sessions.token_hash(ids.last().unwrap()).is_some());
        sessions.close(ids.last().unwrap());
        assert!(sessions.token_hash(ids.last().unwrap()).is_none());
        let other = sessions.open("another".into());
        assert_eq!(sessions.token_hash(&other).as_deref(), Some("another"));
    }

    #[test]
    fn names_are_short_and_plain() {
        assert!(valid_name("crew-east") && valid_name("ops@city.example"));
        for bad in [
            "",
            "a b",
            "line\nbreak",
            "tab\t",
            "ünïcode",
            &"x".repeat(65),
        ] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }
}
