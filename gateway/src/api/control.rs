//! Lamp control for operators: a zone's or a node's lighting (stored, published as the
//! nodes' desired config, winning over the site file's until reset), a zone's override
//! until a time (a `cmd`), what each node made of it, and the audit log.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use parklight_core::lamp::luminance;
use parklight_core::solar::altitude_deg;
use parklight_protocol::config::{At, MAX_PROFILE_STEPS, MotionBoost, Profile};
use parklight_protocol::topic::{NodeTopic, node_topic};
use parklight_site::{Site, Zone, default_profile, p_class};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use super::access::{Caller, Permission};
use super::{ApiError, ErrorBody, Shared};
use crate::desired::{self, Change, Publication, Request};
use crate::store::control::{AuditEntry, ControlLighting, Target};
use crate::store::{Selector, StorageError, Store};

/// How far back a zone's lamps are learned from for the warnings.
const LEARN_MS: i64 = 14 * 86_400_000;
/// Reports a node needs in the dark, lamp lit, before its lamp counts as learned.
const LEARN_REPORTS: usize = 10;
/// The sun below this altitude (degrees) leaves a lamp's own light on its sensor.
const NIGHT_ALTITUDE: f64 = -12.0;
/// Lamp levels learned from: high enough that ambient light counts for little.
const LEARN_LEVEL: u8 = 50;
/// The longest override.
pub const MAX_OVERRIDE_MS: i64 = 7 * 86_400_000;
/// How long the API waits for the config publisher.
const PUBLISHER_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// A step of a night's profile (PROTOCOL.md "Config").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StepView {
    /// `sunset` (first step only) or a local time `HH:MM`.
    pub at: String,
    /// Lamp level, percent (0 to 100).
    #[schema(maximum = 100)]
    pub level: u8,
    /// The lighting class the step is designed to deliver (P1 to P6); a class below the
    /// zone's needs a motion boost above the step's level.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
}

/// Brighten on motion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BoostView {
    /// Level while boosted, percent (0 to 100).
    #[schema(maximum = 100)]
    pub level: u8,
    /// Seconds after the last detection, up to a day.
    #[schema(maximum = 86400)]
    pub hold_s: u32,
}

/// A night's lighting: what `PUT .../lighting` takes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LightingView {
    /// 1 to 8 steps from sunset to sunrise.
    pub profile: Vec<StepView>,
    /// Brighten on motion; none when absent.
    pub motion_boost: Option<BoostView>,
}

impl LightingView {
    fn of(profile: &Profile, boost: Option<MotionBoost>) -> LightingView {
        LightingView {
            profile: profile
                .iter()
                .map(|step| StepView {
                    at: match step.at {
                        At::Sunset => "sunset".into(),
                        At::Local { hour, minute } => format!("{hour:02}:{minute:02}"),
                    },
                    level: step.level,
                    class: step.class.as_ref().map(|c| c.as_str().to_owned()),
                })
                .collect(),
            motion_boost: boost.map(|b| BoostView {
                level: b.level,
                hold_s: b.hold_s,
            }),
        }
    }
}

/// Where lighting comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The site file.
    SiteFile,
    /// Set through the API for the zone.
    Zone,
    /// Set through the API for the node.
    Node,
}

/// A zone's lighting.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ZoneControl {
    /// The zone.
    pub zone: String,
    /// Its lighting class.
    pub class: String,
    /// Its lighting.
    pub lighting: LightingView,
    /// `site_file`, or `zone` when set through the API.
    pub source: Source,
    /// Who set it through the API.
    pub set_by: Option<String>,
    /// When, Unix ms.
    pub set_at: Option<i64>,
}

/// A node's lighting and whether it runs it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NodeControl {
    /// The node.
    pub node: String,
    /// Its zone.
    pub zone: Option<String>,
    /// `site_file`, `zone` or `node`: where its lighting comes from.
    pub source: Source,
    /// Its lighting.
    pub lighting: LightingView,
    /// The latest config version published to it.
    pub desired_cfg: Option<u32>,
    /// The version it last reported running.
    pub running_cfg: Option<u32>,
    /// Whether it runs the latest version.
    pub applied: bool,
}

/// A site's lighting, per zone and per node.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ControlState {
    /// The site.
    pub site: String,
    /// Each zone.
    pub zones: Vec<ZoneControl>,
    /// Each node.
    pub nodes: Vec<NodeControl>,
}

/// A message sent to a node and what it answered.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NodeAnswerView {
    /// The node.
    pub node: String,
    /// The message's id: `c-VERSION` (a config) or `o-ENTRY` (an override).
    pub id: String,
    /// `applied`, `rejected`, `pending` (no answer yet) or `superseded` (a later config
    /// was sent before it answered).
    pub result: String,
    /// A rejection's reason.
    pub reason: Option<String>,
}

/// What a control action did.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ControlAnswer {
    /// Its audit entry.
    pub entry: i64,
    /// The messages sent, one per node.
    pub nodes: Vec<NodeAnswerView>,
    /// Steps the zone's lamps, as learned from its last 14 nights, cannot light to the
    /// class they must deliver.
    pub warnings: Vec<String>,
}

/// A control action as logged.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditView {
    /// Its number.
    pub id: i64,
    /// When, Unix ms.
    pub at: i64,
    /// The token's name.
    pub by: String,
    /// `set_lighting`, `reset_lighting` or `override`.
    pub action: String,
    /// `zone` or `node`.
    pub target_kind: String,
    /// The zone's or node's id.
    pub target: String,
    /// What was asked.
    pub detail: Value,
    /// Each node's answer.
    pub nodes: Vec<NodeAnswerView>,
}

impl From<AuditEntry> for AuditView {
    fn from(entry: AuditEntry) -> AuditView {
        let (target_kind, target) = match entry.target {
            Target::Zone(zone) => ("zone", zone),
            Target::Node(node) => ("node", node),
        };
        AuditView {
            id: entry.id,
            at: entry.at,
            by: entry.by,
            action: entry.action,
            target_kind: target_kind.into(),
            target,
            detail: serde_json::from_str(&entry.detail).unwrap_or(Value::Null),
            nodes: entry
                .nodes
                .into_iter()
                .map(|n| NodeAnswerView {
                    node: n.node,
                    id: n.id,
                    result: n.result.into(),
                    reason: n.reason,
                })
                .collect(),
        }
    }
}

/// An override of a zone's lamps.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OverrideBody {
    /// Level, percent (0 to 100).
    #[schema(maximum = 100)]
    pub level: u64,
    /// Until when, Unix ms: in the future, within 7 days.
    pub until: i64,
}

/// How many audit entries.
#[derive(Debug, Deserialize, IntoParams)]
pub struct AuditQuery {
    /// Newest first, at most 1000 (default 100).
    pub limit: Option<usize>,
}

/// The zone or node a path names (`zones` or `nodes`), and its zone.
fn target<'s>(
    site: &'s Site,
    kind: &str,
    id: &str,
) -> Result<(Target, Option<&'s Zone>), ApiError> {
    match kind {
        "zones" => site
            .zone(id)
            .map(|zone| (Target::Zone(id.to_owned()), Some(zone))),
        "nodes" => site.node(id).map(|node| {
            let zone = node.zone.as_deref().and_then(|z| site.zone(z));
            (Target::Node(id.to_owned()), zone)
        }),
        _ => None,
    }
    .ok_or_else(|| ApiError::NotFound(format!("no {kind} {id} in site {}", site.id)))
}

/// The source of a node's lighting, given what was set through the API.
fn source_of(site: &Site, node: &str, zone: Option<&str>, set: &[ControlLighting]) -> Source {
    let has = |target: Target| set.iter().any(|c| c.site == site.id && c.target == target);
    if has(Target::Node(node.to_owned())) {
        Source::Node
    } else if zone.is_some_and(|zone| has(Target::Zone(zone.to_owned()))) {
        Source::Zone
    } else {
        Source::SiteFile
    }
}

/// Checks lighting as a body gives it, naming the first field at fault: what a node
/// would refuse, and a step that declares a class below `zone`'s without a motion boost
/// above its level. The lighting as it is stored.
pub fn check_lighting(body: &Value, zone: Option<&Zone>) -> Result<String, ApiError> {
    let object = body
        .as_object()
        .ok_or_else(|| ApiError::invalid("body", "an object with profile and motion_boost"))?;
    if let Some(key) = (object.keys()).find(|k| !matches!(k.as_str(), "profile" | "motion_boost")) {
        return Err(ApiError::invalid(
            key,
            "not a field of lighting (profile, motion_boost)",
        ));
    }
    let boost = match object.get("motion_boost") {
        None | Some(Value::Null) => None,
        Some(boost) => {
            let number = |key: &str, max: u64| {
                let found = boost.get(key).and_then(Value::as_u64).filter(|n| *n <= max);
                found.ok_or_else(|| {
                    ApiError::invalid(
                        &format!("motion_boost.{key}"),
                        format!("a whole number, 0 to {max}"),
                    )
                })
            };
            if let Some(key) = boost.as_object().and_then(|b| {
                b.keys()
                    .find(|k| !matches!(k.as_str(), "level" | "hold_s"))
                    .cloned()
            }) {
                return Err(ApiError::invalid(
                    &format!("motion_boost.{key}"),
                    "not a field of a motion boost (level, hold_s)",
                ));
            }
            Some((number("level", 100)?, number("hold_s", 86_400)?))
        }
    };
    let steps = (object.get("profile").and_then(Value::as_array))
        .filter(|steps| (1..=MAX_PROFILE_STEPS).contains(&steps.len()))
        .ok_or_else(|| {
            ApiError::invalid(
                "profile",
                format!("a list of 1 to {MAX_PROFILE_STEPS} steps"),
            )
        })?;
    for (i, step) in steps.iter().enumerate() {
        let field = |key: &str| format!("profile[{i}].{key}");
        let step = step.as_object().ok_or_else(|| {
            ApiError::invalid(&format!("profile[{i}]"), "a step: at, level, class")
        })?;
        if let Some(key) = step
            .keys()
            .find(|k| !matches!(k.as_str(), "at" | "level" | "class"))
        {
            return Err(ApiError::invalid(
                &field(key),
                "not a field of a step (at, level, class)",
            ));
        }
        match step.get("at").and_then(Value::as_str).and_then(At::parse) {
            Some(At::Sunset) if i > 0 => {
                return Err(ApiError::invalid(
                    &field("at"),
                    "sunset only as the first step",
                ));
            }
            Some(_) => {}
            None => {
                return Err(ApiError::invalid(
                    &field("at"),
                    "\"sunset\" or a local time HH:MM",
                ));
            }
        }
        let level = (step.get("level").and_then(Value::as_u64))
            .filter(|level| *level <= 100)
            .ok_or_else(|| ApiError::invalid(&field("level"), "a whole percent, 0 to 100"))?;
        let Some(class) = step.get("class") else {
            continue;
        };
        let (avg, _) = (class.as_str().and_then(p_class))
            .ok_or_else(|| ApiError::invalid(&field("class"), "a lighting class, P1 to P6"))?;
        if let Some(zone) = zone
            && avg < zone.requirement.avg_lux
            && !boost.is_some_and(|(boost, hold)| boost > level && hold > 0)
        {
            return Err(ApiError::invalid(
                &field("class"),
                format!(
                    "{} is below zone {}'s {}: a step that dims below the zone's class needs a motion boost above its level",
                    class.as_str().unwrap_or_default(),
                    zone.id,
                    zone.requirement.label()
                ),
            ));
        }
    }
    // Stored as a node reads it: no boost is no `motion_boost` at all.
    let mut stored = serde_json::Map::new();
    stored.insert("profile".into(), Value::Array(steps.clone()));
    if let Some(boost) = object.get("motion_boost").filter(|b| !b.is_null()) {
        stored.insert("motion_boost".into(), boost.clone());
    }
    let text = Value::Object(stored).to_string();
    desired::decode_lighting(&text).map_err(|e| {
        ApiError::invalid(
            e.field.unwrap_or("profile"),
            format!("a node would refuse it: {e}"),
        )
    })?;
    Ok(text)
}

/// Steps of `lighting` that `zone`'s lamps (or only `node`'s), as learned from the last
/// 14 nights, would light below the class the step must deliver. Each node's lamp is
/// learned as its lux per unit of luminance (the firmware's curve) from its reports lit
/// at 50 % or more with the sun 12° or more below the horizon, so that what the sky and
/// its neighbours add counts for little.
fn lamp_warnings(
    store: &Store,
    site: &Site,
    zone: &Zone,
    node: Option<&str>,
    lighting: &str,
    now: i64,
) -> Result<Vec<String>, StorageError> {
    let Ok((profile, _)) = desired::decode_lighting(lighting) else {
        return Ok(Vec::new());
    };
    let mut full = Vec::new();
    let lamps = (site.nodes.iter())
        .filter(|n| n.zone.as_deref() == Some(zone.id.as_str()))
        .filter(|n| node.is_none_or(|id| id == n.id));
    for node in lamps {
        let mut per_luminance: Vec<f64> = store
            .reports_between(Selector::Node(&node.id), now - LEARN_MS, now)?
            .into_iter()
            .filter(|r| r.lamp_on && r.lamp_level >= LEARN_LEVEL)
            .filter(|r| altitude_deg(r.ts, site.lat, site.lon) < NIGHT_ALTITUDE)
            .filter_map(|r| {
                let lux = r.lux?.avg * node.calibration;
                Some(lux / f64::from(luminance(f32::from(r.lamp_level))))
            })
            .collect();
        if per_luminance.len() >= LEARN_REPORTS {
            per_luminance.sort_by(f64::total_cmp);
            full.push(per_luminance[per_luminance.len() / 2]);
        }
    }
    if full.is_empty() {
        return Ok(Vec::new());
    }
    let full = full.iter().sum::<f64>() / full.len() as f64;
    Ok(profile
        .iter()
        .enumerate()
        .filter_map(|(i, step)| {
            let class = step.class.as_deref().and_then(p_class);
            let required = class.map_or(zone.requirement.avg_lux, |(avg, _)| avg);
            let expected = full * f64::from(luminance(f32::from(step.level)));
            (expected < required).then(|| {
                let lamps = node.map_or(format!("zone {}'s lamps give", zone.id), |n| format!("{n}'s lamp gives"));
                format!(
                    "profile[{i}]: at level {} {lamps} about {expected:.1} lx on average (learned from the last 14 nights), below the {required:.1} lx the step must deliver",
                    step.level
                )
            })
        })
        .collect())
}

/// Hands `request` to the config publisher and waits for its answer, at most 10 s in all.
async fn ask_publisher<T>(
    api: &Shared,
    request: Request,
    answered: tokio::sync::oneshot::Receiver<T>,
    unanswered: &str,
) -> Result<T, ApiError> {
    let asked = async {
        api.control.send(request).await.ok()?;
        answered.await.ok()
    };
    match tokio::time::timeout(PUBLISHER_WAIT, asked).await {
        Ok(Some(answer)) => Ok(answer),
        _ => Err(ApiError::Unavailable(format!(
            "the config publisher did not answer within 10 s: {unanswered}"
        ))),
    }
}

/// Has the config publisher plan and publish what change `entry` of `target`'s lighting
/// means (it records in the entry the config sent to each node the change governs), and
/// answers with those messages.
async fn publish_lighting(
    api: &Shared,
    site: String,
    target: Target,
    entry: i64,
    warnings: Vec<String>,
) -> Result<Json<ControlAnswer>, ApiError> {
    let (reply, answered) = tokio::sync::oneshot::channel();
    let change = Change {
        entry,
        site,
        target,
    };
    let unanswered = format!(
        "the lighting is stored and logged as entry {entry}; it is published, and the entry lists what was sent, when the publisher can"
    );
    ask_publisher(api, Request::Replan(change, reply), answered, &unanswered).await?;
    let nodes = api
        .read(move |store| {
            let logged = store.control_entry(entry)?;
            Ok(logged.map(|e| AuditView::from(e).nodes).unwrap_or_default())
        })
        .await?;
    Ok(Json(ControlAnswer {
        entry,
        nodes,
        warnings,
    }))
}

/// A site's lighting: each zone's and each node's, where it comes from, and whether each
/// node runs its latest config.
#[utoipa::path(get, path = "/api/v1/control/{site}", params(("site" = String, Path, description = "The site")),
    responses((status = 200, body = ControlState), (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn state(
    State(api): State<Shared>,
    caller: Caller,
    site: Result<Path<String>, PathRejection>,
) -> Result<Json<ControlState>, ApiError> {
    caller.require(Permission::Control)?;
    let Path(site) = site?;
    api.site(&site)?;
    let state = api
        .read(move |store| {
            let set = store.control_lighting()?;
            let latest = store.latest_configs()?;
            let running: std::collections::HashMap<String, u32> = (store.node_summaries()?)
                .into_iter()
                .filter_map(|n| Some((n.node, n.cfg?)))
                .collect();
            Ok((set, latest, running))
        })
        .await?;
    let (set, latest, running) = state;
    let site = api.site(&site)?;
    let zones = site
        .zones
        .iter()
        .map(|zone| {
            let own = (set.iter())
                .find(|c| c.site == site.id && c.target == Target::Zone(zone.id.clone()));
            let decoded = own.and_then(|c| desired::decode_lighting(&c.lighting).ok());
            let lighting = match decoded {
                Some((profile, boost)) => LightingView::of(&profile, boost),
                None => {
                    let lighting = zone.lighting.or(&site.lighting);
                    let profile = lighting.profile.unwrap_or_else(default_profile);
                    LightingView::of(&profile, lighting.motion_boost)
                }
            };
            ZoneControl {
                zone: zone.id.clone(),
                class: zone.requirement.label(),
                lighting,
                source: if own.is_some() {
                    Source::Zone
                } else {
                    Source::SiteFile
                },
                set_by: own.map(|c| c.set_by.clone()),
                set_at: own.map(|c| c.set_at),
            }
        })
        .collect();
    let nodes = site
        .nodes
        .iter()
        .map(|node| {
            let desired = desired::desired(site, node, &set);
            let desired_cfg = latest.get(&node.id).map(|(cfg, _, _)| *cfg);
            let running_cfg = running.get(&node.id).copied();
            NodeControl {
                node: node.id.clone(),
                zone: node.zone.clone(),
                source: source_of(site, &node.id, node.zone.as_deref(), &set),
                lighting: LightingView::of(&desired.profile, desired.motion_boost),
                desired_cfg,
                running_cfg,
                applied: desired_cfg.is_some() && desired_cfg == running_cfg,
            }
        })
        .collect();
    Ok(Json(ControlState {
        site: site.id.clone(),
        zones,
        nodes,
    }))
}

/// Sets a zone's or a node's lighting (`kind`: `zones` or `nodes`): stored, it wins over
/// the site file's until reset and is published as each node's desired config; a node's
/// own lighting wins over its zone's. A malformed profile, or a step declaring a class
/// below the zone's without a motion boost, is a 422 naming the field and reaches no
/// node; steps the zone's lamps cannot light to class come back as warnings.
#[utoipa::path(put, path = "/api/v1/control/{site}/{kind}/{id}/lighting",
    params(("site" = String, Path, description = "The site"),
        ("kind" = String, Path, description = "`zones` or `nodes`"),
        ("id" = String, Path, description = "The zone's or node's id")),
    request_body = LightingView,
    responses((status = 200, body = ControlAnswer), (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
    (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn set_lighting(
    State(api): State<Shared>,
    caller: Caller,
    path: Result<Path<(String, String, String)>, PathRejection>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<ControlAnswer>, ApiError> {
    caller.require(Permission::Control)?;
    let Path((site_id, kind, id)) = path?;
    let Json(body) = body?;
    let site = api.site(&site_id)?;
    let (target, zone) = target(site, &kind, &id)?;
    let lighting = check_lighting(&body, zone)?;
    let zone = zone.map(|z| z.id.clone());
    let now = jiff::Timestamp::now().as_millisecond();
    let (site, stored, by) = (site_id.clone(), target.clone(), caller.name);
    let (entry, warnings) = api
        .write(move |store, api| {
            let site = api.site(&site)?;
            let node = match &stored {
                Target::Node(node) => Some(node.as_str()),
                Target::Zone(_) => None,
            };
            let warnings = match zone.as_deref().and_then(|z| site.zone(z)) {
                Some(zone) => lamp_warnings(store, site, zone, node, &lighting, now)?,
                None => Vec::new(),
            };
            let detail = json!({ "lighting": body, "warnings": warnings }).to_string();
            let entry = store.set_control_lighting(
                &site.id,
                &stored,
                Some(&lighting),
                &by,
                now,
                &detail,
            )?;
            let entry = entry.ok_or_else(|| ApiError::internal("logging lighting", "no entry"))?;
            Ok((entry, warnings))
        })
        .await?;
    publish_lighting(&api, site_id, target, entry, warnings).await
}

/// Resets a zone's or a node's lighting to what it would be without it (the node's
/// zone's, or the site file's), and publishes that.
#[utoipa::path(delete, path = "/api/v1/control/{site}/{kind}/{id}/lighting",
    params(("site" = String, Path, description = "The site"),
        ("kind" = String, Path, description = "`zones` or `nodes`"),
        ("id" = String, Path, description = "The zone's or node's id")),
    responses((status = 200, body = ControlAnswer), (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn reset_lighting(
    State(api): State<Shared>,
    caller: Caller,
    path: Result<Path<(String, String, String)>, PathRejection>,
) -> Result<Json<ControlAnswer>, ApiError> {
    caller.require(Permission::Control)?;
    let Path((site_id, kind, id)) = path?;
    let (target, _) = target(api.site(&site_id)?, &kind, &id)?;
    let now = jiff::Timestamp::now().as_millisecond();
    let (site, stored, by) = (site_id.clone(), target.clone(), caller.name);
    let entry = api
        .write(
            move |store, _| Ok(store.set_control_lighting(&site, &stored, None, &by, now, "{}")?),
        )
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no lighting is set for {kind} {id}")))?;
    publish_lighting(&api, site_id, target, entry, Vec::new()).await
}

/// Holds every lamp of a zone at a level until a time (a `cmd` to each node; it then
/// returns to its profile).
#[utoipa::path(post, path = "/api/v1/control/{site}/zones/{zone}/override",
    params(("site" = String, Path, description = "The site"), ("zone" = String, Path, description = "The zone")),
    request_body = OverrideBody,
    responses((status = 200, body = ControlAnswer), (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
    (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn override_zone(
    State(api): State<Shared>,
    caller: Caller,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Result<Json<OverrideBody>, JsonRejection>,
) -> Result<Json<ControlAnswer>, ApiError> {
    caller.require(Permission::Control)?;
    let Path((site_id, zone)) = path?;
    let Json(asked) = body?;
    let site = api.site(&site_id)?;
    let (target, _) = target(site, "zones", &zone)?;
    let now = jiff::Timestamp::now().as_millisecond();
    if asked.level > 100 {
        return Err(ApiError::invalid("level", "a whole percent, 0 to 100"));
    }
    if asked.until <= now || asked.until - now > MAX_OVERRIDE_MS {
        return Err(ApiError::invalid("until", "in the future, within 7 days"));
    }
    let nodes: Vec<String> = (site.nodes.iter())
        .filter(|n| n.zone.as_deref() == Some(zone.as_str()))
        .map(|n| n.id.clone())
        .collect();
    if nodes.is_empty() {
        return Err(ApiError::Conflict(format!(
            "zone {zone} has no nodes to hold"
        )));
    }
    let prefix = api.topic_prefix.clone();
    let detail = json!({ "level": asked.level, "until": asked.until }).to_string();
    let (site, stored, by) = (site_id.clone(), target.clone(), caller.name);
    let entry = api
        .write(
            move |store, _| Ok(store.log_control(&site, &stored, "override", &by, now, &detail)?),
        )
        .await?;
    let id = format!("o-{entry}");
    let mut commands = Vec::new();
    let mut sent = Vec::new();
    for node in nodes {
        let Ok(topic) = node_topic(&prefix, &site_id, &node, NodeTopic::Cmd) else {
            continue; // ids are checked with the site file: a topic always fits
        };
        let payload = json!({"v": 1, "id": id, "cmd": "override", "level": asked.level, "until": asked.until});
        commands.push(Publication {
            topic: topic.as_str().to_owned(),
            payload: payload.to_string(),
        });
        sent.push((node, id.clone()));
    }
    let (reply, answered) = tokio::sync::oneshot::channel();
    let unanswered = format!("the override (entry {entry}) was not sent");
    ask_publisher(
        &api,
        Request::Commands(commands, reply),
        answered,
        &unanswered,
    )
    .await?;
    let recorded = sent.clone();
    api.write(move |store, _| Ok(store.control_sent(entry, &recorded)?))
        .await?;
    Ok(Json(ControlAnswer {
        entry,
        nodes: sent
            .into_iter()
            .map(|(node, id)| NodeAnswerView {
                node,
                id,
                result: "pending".into(),
                reason: None,
            })
            .collect(),
        warnings: Vec::new(),
    }))
}

/// A site's control actions, newest first: who, what, when, and each node's answer.
#[utoipa::path(get, path = "/api/v1/control/{site}/audit",
    params(("site" = String, Path, description = "The site"), AuditQuery),
    responses((status = 200, body = Vec<AuditView>), (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn audit(
    State(api): State<Shared>,
    caller: Caller,
    site: Result<Path<String>, PathRejection>,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<Vec<AuditView>>, ApiError> {
    caller.require(Permission::Control)?;
    let Path(site) = site?;
    let Query(query) = query?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit", "1 to 1000"));
    }
    api.site(&site)?;
    let entries = api
        .read(move |store| Ok(store.control_audit(&site, limit)?))
        .await?;
    Ok(Json(entries.into_iter().map(AuditView::from).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The field a refused body names.
    fn refused(body: Value) -> String {
        let site = Site::remiseparken();
        match check_lighting(&body, site.zone("main-path")) {
            Err(ApiError::Invalid { field, .. }) => field,
            other => panic!("{body} was not refused with a field: {other:?}"),
        }
    }

    #[test]
    fn good_lighting_is_stored_as_a_node_reads_it() {
        let site = Site::remiseparken();
        let body = json!({"profile": [{"at": "sunset", "level": 100}, {"at": "23:30", "level": 30, "class": "P5"}],
            "motion_boost": {"level": 100, "hold_s": 120}});
        let text = check_lighting(&body, site.zone("main-path")).unwrap();
        let (profile, boost) = desired::decode_lighting(&text).unwrap();
        let view = LightingView::of(&profile, boost);
        assert_eq!(serde_json::to_value(view).unwrap(), body);
    }

    #[test]
    fn no_motion_boost_is_stored_as_none_as_the_state_gives_it() {
        let site = Site::remiseparken();
        let body = json!({"profile": [{"at": "sunset", "level": 100}], "motion_boost": null});
        let text = check_lighting(&body, site.zone("lawn")).unwrap();
        assert_eq!(text, r#"{"profile":[{"at":"sunset","level":100}]}"#);
        let (profile, boost) = desired::decode_lighting(&text).unwrap();
        assert_eq!(
            serde_json::to_value(LightingView::of(&profile, boost)).unwrap(),
            body
        );
    }

    #[test]
    fn a_malformed_profile_names_its_field() {
        let step = |at: &str, level: u64| json!({"at": at, "level": level});
        assert_eq!(refused(json!([])), "body");
        assert_eq!(refused(json!({"profile": []})), "profile");
        assert_eq!(
            refused(json!({"profile": vec![step("sunset", 50); 9]})),
            "profile"
        );
        assert_eq!(
            refused(json!({"profile": [step("sunset", 100)], "colour": "red"})),
            "colour"
        );
        assert_eq!(
            refused(json!({"profile": [step("25:00", 100)]})),
            "profile[0].at"
        );
        assert_eq!(
            refused(json!({"profile": [step("sunset", 100), step("sunset", 50)]})),
            "profile[1].at"
        );
        assert_eq!(
            refused(json!({"profile": [step("sunset", 100), step("23:00", 101)]})),
            "profile[1].level"
        );
        assert_eq!(
            refused(
                json!({"profile": [step("sunset", 100), {"at": "23:00", "level": 40, "class": "P9"}]})
            ),
            "profile[1].class"
        );
        assert_eq!(
            refused(json!({"profile": [{"at": "sunset", "level": 100, "lux": 3}]})),
            "profile[0].lux"
        );
        assert_eq!(
            refused(
                json!({"profile": [step("sunset", 100)], "motion_boost": {"level": 300, "hold_s": 60}})
            ),
            "motion_boost.level"
        );
        assert_eq!(
            refused(json!({"profile": [step("sunset", 100)], "motion_boost": {"level": 100}})),
            "motion_boost.hold_s"
        );
    }

    #[test]
    fn a_lower_class_needs_a_motion_boost_above_its_level() {
        let dim = json!({"at": "23:00", "level": 40, "class": "P5"});
        let first = json!({"at": "sunset", "level": 100});
        // main-path is P3.
        assert_eq!(
            refused(json!({"profile": [first, dim]})),
            "profile[1].class"
        );
        assert_eq!(
            refused(json!({"profile": [first, dim], "motion_boost": {"level": 40, "hold_s": 60}})),
            "profile[1].class",
            "a boost to the step's own level brightens nothing"
        );
        let site = Site::remiseparken();
        let boosted =
            json!({"profile": [first, dim], "motion_boost": {"level": 100, "hold_s": 60}});
        assert!(check_lighting(&boosted, site.zone("main-path")).is_ok());
        // The zone's own class, or a higher one, needs no boost.
        let same = json!({"profile": [first, {"at": "23:00", "level": 40, "class": "P2"}]});
        assert!(check_lighting(&same, site.zone("main-path")).is_ok());
    }
}
