//! Sites, zones as GeoJSON with their live status, and nodes.

use std::collections::{BTreeMap, BTreeSet};

use axum::Json;
use axum::extract::{Query, State, rejection::QueryRejection};
use parklight_protocol::alert::Severity;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::access::{Caller, Permission, Role};
use super::{ApiError, ErrorBody, Shared, last_full_hour};
use crate::detect::{Kind, Status, ZoneWindow};
use crate::store::Store;

/// A site.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SiteView {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// IANA time zone: days, nights and hours are counted in it.
    pub timezone: String,
    /// Latitude, degrees.
    pub lat: f64,
    /// Longitude, degrees.
    pub lon: f64,
    /// Its zones.
    pub zones: usize,
}

/// Which site.
#[derive(Debug, Deserialize, IntoParams)]
pub struct SiteFilter {
    /// Only this site.
    pub site: Option<String>,
}

/// Every site.
#[utoipa::path(get, path = "/api/v1/sites", responses(
    (status = 200, body = Vec<SiteView>), (status = 401, body = ErrorBody)))]
pub async fn sites(
    State(api): State<Shared>,
    caller: Caller,
) -> Result<Json<Vec<SiteView>>, ApiError> {
    caller.require(Permission::ZoneStatus)?;
    Ok(Json(
        (api.sites.iter())
            .map(|s| SiteView {
                id: s.id.clone(),
                name: s.name.clone(),
                timezone: s.timezone.clone(),
                lat: s.lat,
                lon: s.lon,
                zones: s.zones.len(),
            })
            .collect(),
    ))
}

/// Zones as a GeoJSON FeatureCollection.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ZoneCollection {
    /// `FeatureCollection`.
    #[serde(rename = "type")]
    pub kind: String,
    /// One feature per zone.
    pub features: Vec<ZoneFeature>,
}

/// A zone as a GeoJSON Feature.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ZoneFeature {
    /// `Feature`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `{site}/{zone}`.
    pub id: String,
    /// Its polygon.
    pub geometry: Polygon,
    /// What it is and how it is lit now.
    pub properties: ZoneStatus,
}

/// A GeoJSON Polygon (one ring, longitude then latitude).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Polygon {
    /// `Polygon`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The outer ring.
    pub coordinates: Vec<Vec<[f64; 2]>>,
}

/// A zone and its live status.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ZoneStatus {
    /// The site.
    pub site: String,
    /// The zone.
    pub zone: String,
    /// Its name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its lighting class (EN 13201-2 P-class), when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    /// `lit`, `dark`, `unobserved` or `not_judged`, from its latest judged window.
    pub status: String,
    /// End of the window the status is from, Unix ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub judged_at: Option<i64>,
    /// For a dark zone, how bad (operators and crews only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    /// Figures of the latest window (operators and crews only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latest: Option<ZoneFigures>,
}

/// A zone's figures over one window.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ZoneFigures {
    /// Average lux.
    pub lux_avg: Option<f64>,
    /// Lowest lux.
    pub lux_min: Option<f64>,
    /// Average the class in force requires.
    pub required_avg: f64,
    /// Minimum the class in force requires.
    pub required_min: f64,
    /// Motion detections.
    pub detections: u32,
    /// Why it is unobserved, when it is.
    pub cause: Option<String>,
}

/// Zones with their live status, as GeoJSON. Severity and figures only for roles that
/// see operations.
#[utoipa::path(get, path = "/api/v1/zones", params(SiteFilter), responses(
    (status = 200, body = ZoneCollection), (status = 401, body = ErrorBody),
    (status = 404, body = ErrorBody)))]
pub async fn zones(
    State(api): State<Shared>,
    caller: Caller,
    filter: Result<Query<SiteFilter>, QueryRejection>,
) -> Result<Json<ZoneCollection>, ApiError> {
    caller.require(Permission::ZoneStatus)?;
    let Query(filter) = filter?;
    if let Some(site) = &filter.site {
        api.site(site)?;
    }
    let site = filter.site.clone();
    // Partners see zones as of the last full hour: a zone dark because a pole that
    // counted someone failed its boost would tell of people within minutes.
    let until = if caller.role == Role::Partnership {
        last_full_hour()
    } else {
        i64::MAX
    };
    let (windows, dark) = api
        .read(move |store| zones_now(store, site.as_deref(), until))
        .await?;
    let operations = caller.may(Permission::Operations);
    let mut features = Vec::new();
    for site in (api.sites.iter()).filter(|s| filter.site.as_ref().is_none_or(|f| *f == s.id)) {
        for zone in &site.zones {
            let key = (site.id.clone(), zone.id.clone());
            let window = windows.get(&key);
            let status = window.map_or(Status::NotJudged, |w| w.status);
            let latest = window.filter(|_| operations).map(|w| ZoneFigures {
                lux_avg: w.lux_avg,
                lux_min: w.lux_min,
                required_avg: w.required_avg,
                required_min: w.required_min,
                detections: w.detections,
                cause: w.cause.clone(),
            });
            features.push(ZoneFeature {
                kind: "Feature".into(),
                id: format!("{}/{}", site.id, zone.id),
                geometry: Polygon {
                    kind: "Polygon".into(),
                    coordinates: vec![zone.ring.clone()],
                },
                properties: ZoneStatus {
                    site: site.id.clone(),
                    zone: zone.id.clone(),
                    name: zone.name.clone(),
                    class: zone.requirement.class.clone(),
                    status: status.as_str().into(),
                    judged_at: window.map(|w| w.end),
                    severity: dark
                        .get(&key)
                        .filter(|_| operations)
                        .map(|s| s.as_str().into()),
                    latest,
                },
            });
        }
    }
    Ok(Json(ZoneCollection {
        kind: "FeatureCollection".into(),
        features,
    }))
}

/// Each zone's latest judged window, and the severity of each dark zone.
type ZonesNow = (
    BTreeMap<(String, String), ZoneWindow>,
    BTreeMap<(String, String), Severity>,
);

/// What [`ZonesNow`] says, from the store (of `site`, or of every site).
pub(super) fn zones_now(
    store: &Store,
    site: Option<&str>,
    until: i64,
) -> Result<ZonesNow, ApiError> {
    let windows = (store.latest_windows_until(site, until)?.into_iter())
        .map(|w| ((w.site.clone(), w.zone.clone()), w))
        .collect();
    let dark = (store.active_conditions()?.into_iter())
        .map(|c| c.transition)
        .filter(|t| t.kind == Kind::DarkZone)
        .filter_map(|t| Some(((t.site, t.zone?), t.severity)))
        .collect();
    Ok((windows, dark))
}

/// Nodes with an active `node_offline` condition.
pub(super) fn offline_nodes(store: &Store) -> Result<BTreeSet<String>, ApiError> {
    Ok((store.active_conditions()?.into_iter())
        .filter(|c| c.transition.kind == Kind::NodeOffline)
        .filter_map(|c| c.transition.node)
        .collect())
}

/// A node: where it is, whether it is online, what it runs and what is wrong with it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NodeView {
    /// Its id.
    pub node: String,
    /// Its site.
    pub site: Option<String>,
    /// Its zone.
    pub zone: Option<String>,
    /// Longitude and latitude, from the site file.
    pub position: Option<[f64; 2]>,
    /// Its power circuit.
    pub circuit: Option<String>,
    /// Online: its latest status says so and no `node_offline` condition is active.
    pub online: bool,
    /// Time of its latest report, Unix ms.
    pub last_report: Option<i64>,
    /// Lamp level (0–100) in its latest report.
    pub lamp_level: Option<u8>,
    /// Config version its latest report says it runs.
    pub running_cfg: Option<u32>,
    /// Config version the gateway last published for it.
    pub desired_cfg: Option<u32>,
    /// Ids of its open alerts.
    pub open_alerts: Vec<String>,
}

/// Nodes, with their latest state and open alerts.
#[utoipa::path(get, path = "/api/v1/nodes", params(SiteFilter), responses(
    (status = 200, body = Vec<NodeView>), (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn nodes(
    State(api): State<Shared>,
    caller: Caller,
    filter: Result<Query<SiteFilter>, QueryRejection>,
) -> Result<Json<Vec<NodeView>>, ApiError> {
    caller.require(Permission::Operations)?;
    let Query(filter) = filter?;
    if let Some(site) = &filter.site {
        api.site(site)?;
    }
    let (summaries, desired, offline, alerts) = api
        .read(|store| {
            Ok((
                store.node_summaries()?,
                store.latest_configs()?,
                offline_nodes(store)?,
                store.alerts(true)?,
            ))
        })
        .await?;
    let nodes = (summaries.into_iter())
        .filter(|n| filter.site.is_none() || n.site == filter.site)
        .map(|n| {
            let placement = (api.sites.iter()).find_map(|s| s.node(&n.node));
            NodeView {
                online: n.presence.is_some_and(|p| !p.offline) && !offline.contains(&n.node),
                position: placement.map(|p| p.position),
                circuit: placement.map(|p| p.circuit.id.clone()),
                last_report: n.last_report,
                lamp_level: n.lamp_level,
                running_cfg: n.cfg,
                desired_cfg: desired.get(&n.node).map(|(cfg, _, _)| *cfg),
                open_alerts: (alerts.iter())
                    .filter(|a| {
                        a.node.as_deref() == Some(n.node.as_str()) || a.children.contains(&n.node)
                    })
                    .map(|a| a.id.clone())
                    .collect(),
                node: n.node,
                site: n.site,
                zone: n.zone,
            }
        })
        .collect();
    Ok(Json(nodes))
}
