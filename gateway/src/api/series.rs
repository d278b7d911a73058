//! Series of a zone or a node between two times at a step, from raw rows and compacted
//! blocks alike; a zone's points carry the levels its class required and its status.

use axum::Json;
use axum::extract::{Query, State, rejection::QueryRejection};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::access::{Caller, Permission};
use super::{ApiError, ErrorBody, Shared};
use crate::store::Selector;

/// Most points one answer may hold.
pub const MAX_POINTS: i64 = 10_000;
/// The longest span one request may ask for.
pub const MAX_SPAN_MS: i64 = 31 * 86_400_000;

/// Which series.
#[derive(Debug, Deserialize, IntoParams)]
pub struct SeriesQuery {
    /// The site.
    pub site: String,
    /// A zone of it (or `node`).
    pub zone: Option<String>,
    /// A node of it (or `zone`).
    pub node: Option<String>,
    /// From, Unix ms (inclusive).
    pub from: i64,
    /// To, Unix ms (exclusive).
    pub to: i64,
    /// Step, seconds (at least 1; at most 10 000 points in all; at most 31 days between
    /// from and to).
    pub step_s: i64,
}

/// One step.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Point {
    /// Start of the step, Unix ms.
    pub start: i64,
    /// Reports in it.
    pub reports: u32,
    /// Lowest lux reported.
    pub lux_min: Option<f64>,
    /// Mean of the reports' average lux.
    pub lux_avg: Option<f64>,
    /// Highest lux reported.
    pub lux_max: Option<f64>,
    /// Motion detections.
    pub detections: u64,
    /// Mean lamp level, 0–100.
    pub lamp_level: Option<f64>,
    /// For a zone: the average its class in force required, lux.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub required_avg: Option<f64>,
    /// For a zone: the minimum its class in force required, lux.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub required_min: Option<f64>,
    /// For a zone: the status of the window the step starts in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// A series.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Series {
    /// The site.
    pub site: String,
    /// The zone, for a zone's series.
    pub zone: Option<String>,
    /// The node, for a node's series.
    pub node: Option<String>,
    /// Step, seconds.
    pub step_s: i64,
    /// Steps with reports, in time order.
    pub points: Vec<Point>,
}

/// A zone's or a node's series between two times at a step.
#[utoipa::path(get, path = "/api/v1/series", params(SeriesQuery), responses(
    (status = 200, body = Series), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn series(
    State(api): State<Shared>,
    caller: Caller,
    query: Result<Query<SeriesQuery>, QueryRejection>,
) -> Result<Json<Series>, ApiError> {
    caller.require(Permission::Operations)?;
    let Query(q) = query?;
    let site = api.site(&q.site)?;
    let (place, is_zone) = match (&q.zone, &q.node) {
        (Some(zone), None) if site.zone(zone).is_none() => {
            return Err(ApiError::NotFound(format!(
                "no zone {zone} in site {}",
                site.id
            )));
        }
        (None, Some(node)) if site.node(node).is_none() => {
            return Err(ApiError::NotFound(format!(
                "no node {node} in site {}",
                site.id
            )));
        }
        (Some(zone), None) => (zone.clone(), true),
        (None, Some(node)) => (node.clone(), false),
        _ => return Err(ApiError::invalid("zone", "give a zone or a node")),
    };
    if !(1..=MAX_SPAN_MS / 1000).contains(&q.step_s) {
        return Err(ApiError::invalid("step_s", "1 s to 31 days"));
    }
    if q.from < 0 {
        return Err(ApiError::invalid("from", "a time since 1970 (Unix ms)"));
    }
    let span = q.to.checked_sub(q.from).unwrap_or(i64::MAX);
    if span <= 0 || span > MAX_SPAN_MS {
        return Err(ApiError::invalid("to", "after from, by at most 31 days"));
    }
    let step_ms = q.step_s * 1000;
    if span / step_ms > MAX_POINTS {
        return Err(ApiError::invalid(
            "step_s",
            format!("at most {MAX_POINTS} points: a longer step"),
        ));
    }
    let SeriesQuery {
        site,
        zone,
        node,
        from,
        to,
        step_s,
    } = q;
    let (buckets, windows) = {
        let site = site.clone();
        api.read(move |store| {
            if !is_zone {
                return Ok((
                    store.series(Selector::Node(&place), from, to, step_ms)?,
                    Vec::new(),
                ));
            }
            let selector = Selector::Zone {
                site: &site,
                zone: &place,
            };
            let buckets = store.series(selector, from, to, step_ms)?;
            // The windows the steps start in: up to a day past the last.
            let windows = store.zone_windows(&site, &place, from, to.saturating_add(86_400_000))?;
            Ok((buckets, windows))
        })
        .await?
    };
    let points = (buckets.into_iter())
        .map(|b| {
            let first_after = windows.partition_point(|w| w.end < b.start);
            let window = windows.get(first_after).filter(|w| w.start < b.start);
            Point {
                start: b.start,
                reports: b.reports,
                lux_min: b.lux_min,
                lux_avg: b.lux_avg,
                lux_max: b.lux_max,
                detections: b.motion,
                lamp_level: b.lamp_level,
                required_avg: window.map(|w| w.required_avg),
                required_min: window.map(|w| w.required_min),
                status: window.map(|w| w.status.as_str().into()),
            }
        })
        .collect();
    Ok(Json(Series {
        site,
        zone,
        node,
        step_s,
        points,
    }))
}
