//! Usage for safety partnerships: foot traffic per zone by local hour and weekday, the
//! share after dark, occupied dark minutes and detections in the dark, from the
//! detectors' zone windows. Zones only, never a node; for partners, periods are whole
//! local hours that ended an hour ago or more, and counts are sums of hours each told 0
//! below k (`[usage] suppress_below`) and rounded to a multiple of k from k on, one told
//! 0 shown as suppressed ([`super::rounding`]).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Query, State, rejection::QueryRejection};
use axum::response::{IntoResponse, Response};
use parklight_core::tz::TimeZone;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::access::{Caller, Permission, Role};
use super::rounding::{People, local_hour};
use super::{ApiError, ErrorBody, Shared, csv_response, period, wants_csv};

use super::{DAY_MS, HOUR_MS};

/// Which usage.
#[derive(Debug, Deserialize, IntoParams)]
pub struct UsageQuery {
    /// The site.
    pub site: String,
    /// Only this zone.
    pub zone: Option<String>,
    /// From, Unix ms.
    pub from: i64,
    /// To, Unix ms (for partners, whole local hours: both ends go back to the start of
    /// their hour, and to is at most the start of the hour before the current one).
    pub to: i64,
    /// `json` (the default) or `csv`.
    pub format: Option<String>,
}

/// A zone's use over the period.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ZoneUsage {
    /// The zone.
    pub zone: String,
    /// Its name.
    pub name: Option<String>,
    /// Motion detections (`null`: suppressed).
    pub detections: Option<u64>,
    /// Detections while it was dark outside, in the windows the detectors judged
    /// (`null`: suppressed).
    pub after_dark_detections: Option<u64>,
    /// Share of detections after dark, 0–1 (`null`: suppressed or none).
    pub after_dark_share: Option<f64>,
    /// Minutes the zone was dark (below its class) with detections (`null`: suppressed
    /// with the detections in the dark).
    pub occupied_dark_minutes: Option<u64>,
    /// Detections while the zone was dark, below its class: people in the dark
    /// (`null`: suppressed).
    pub detections_in_dark_zone: Option<u64>,
    /// Detections by local weekday (Monday first) and hour: 7 rows of 24 (`null`:
    /// suppressed).
    pub heat: Vec<Vec<Option<u64>>>,
}

/// Usage of a site's zones over a period, in the site's local time.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Usage {
    /// The site.
    pub site: String,
    /// Its IANA time zone: hours and weekdays are local.
    pub timezone: String,
    /// From, Unix ms (as counted: for partners, the start of its hour).
    pub from: i64,
    /// To, Unix ms (as counted: for partners, the start of its local hour, at most the
    /// hour before the current one).
    pub to: i64,
    /// Every count is a sum of hours each told 0 below this and rounded to a multiple of
    /// it from this on; one that comes to 0 is `null` (suppressed: each of its hours had
    /// fewer); 0 when counts are exact.
    pub suppressed_below: u32,
    /// Each zone.
    pub zones: Vec<ZoneUsage>,
}

/// Local weekdays, Monday first.
pub(super) const WEEKDAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// Weekday (Monday 0) of `day`, days since 1970-01-01.
pub(super) fn weekday(day: i64) -> usize {
    // 1970-01-01 was a Thursday.
    (day + 3).rem_euclid(7) as usize
}

/// Local weekday (Monday 0) and hour of the instant `at`.
fn weekday_hour(tz: &TimeZone, at: i64) -> (usize, usize) {
    let local = tz.to_local(at);
    let weekday = weekday(local.div_euclid(DAY_MS));
    let hour = (local.rem_euclid(DAY_MS) / HOUR_MS) as usize;
    (weekday, hour)
}

/// Foot traffic by zone, local hour and weekday; after-dark share; occupied dark
/// minutes and detections in the dark. JSON, or CSV with `format=csv`.
#[utoipa::path(get, path = "/api/v1/usage", params(UsageQuery), responses(
    (status = 200, body = Usage), (status = 200, content_type = "text/csv", body = String),
    (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn usage(
    State(api): State<Shared>,
    caller: Caller,
    query: Result<Query<UsageQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    caller.require(Permission::Usage)?;
    let Query(q) = query?;
    let site = api.site_with(&q.site, q.zone.as_deref())?.clone();
    let csv = wants_csv(q.format.as_deref())?;
    let partner = caller.role == Role::Partnership;
    let tz = TimeZone::parse(&site.posix_tz).unwrap_or(TimeZone::UTC);
    let (from, to) = period(q.from, q.to, partner.then_some(&tz), 400)?;
    let chosen: Vec<_> = (site.zones.iter())
        .filter(|z| q.zone.as_ref().is_none_or(|id| *id == z.id))
        .cloned()
        .collect();
    let (id, ids) = (
        site.id.clone(),
        chosen.iter().map(|z| z.id.clone()).collect::<Vec<_>>(),
    );
    let quarters = api
        .read(move |store| {
            let usage = |zone: &String| store.zone_usage(&id, zone, from, to);
            Ok(ids.iter().map(usage).collect::<Result<Vec<_>, _>>()?)
        })
        .await?;
    let telling = api.telling(&site.id, &caller);
    let below = telling.base();
    let mut zones = Vec::new();
    for (zone, quarters) in chosen.iter().zip(&quarters) {
        // Each local hour's quarters summed, then told.
        let mut hours: BTreeMap<i64, People> = BTreeMap::new();
        for q in quarters {
            hours
                .entry(local_hour(&tz, q.end - 1))
                .or_default()
                .add(People {
                    detections: q.detections,
                    after_dark: q.after_dark,
                    occupied_dark_minutes: q.occupied_dark_minutes,
                    detections_dark: q.detections_dark,
                });
        }
        let mut total = People::default();
        let mut cells = [[0u64; 24]; 7];
        for (hour, people) in hours {
            let told = telling.hour(&zone.id, hour, people);
            total.add(told);
            let (weekday, hour) = weekday_hour(&tz, hour);
            cells[weekday][hour] += told.detections;
        }
        let (detections, after_dark, in_dark_zone) = (
            telling.shown(total.detections),
            telling.shown(total.after_dark),
            telling.shown(total.detections_dark),
        );
        zones.push(ZoneUsage {
            zone: zone.id.clone(),
            name: zone.name.clone(),
            after_dark_share: (detections.filter(|all| *all > 0))
                .map(|all| total.after_dark as f64 / all as f64),
            detections,
            after_dark_detections: after_dark,
            occupied_dark_minutes: telling.shown_minutes(&total),
            detections_in_dark_zone: in_dark_zone,
            heat: (cells.iter())
                .map(|hours| hours.iter().map(|c| telling.shown(*c)).collect())
                .collect(),
        });
    }
    let usage = Usage {
        site: site.id.clone(),
        timezone: site.timezone.clone(),
        from,
        to,
        suppressed_below: below,
        zones,
    };
    if !csv {
        return Ok(Json(usage).into_response());
    }
    Ok(csv_response(heat_csv(&usage)))
}

/// One row per zone, weekday and hour: `zone,weekday,hour,detections`, a suppressed
/// count written `suppressed`.
fn heat_csv(usage: &Usage) -> String {
    let mut out = String::from("zone,weekday,hour,detections\n");
    for zone in &usage.zones {
        for (weekday, hours) in zone.heat.iter().enumerate() {
            for (hour, count) in hours.iter().enumerate() {
                let count = count.map_or("suppressed".into(), |c| c.to_string());
                out.push_str(&format!(
                    "{},{},{hour},{count}\n",
                    zone.zone, WEEKDAYS[weekday]
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_fall_in_their_local_hour_and_weekday_across_a_dst_change() {
        let copenhagen = TimeZone::parse("CET-1CEST,M3.5.0,M10.5.0/3").unwrap();
        // Sunday 2026-10-25: 00:55 UTC is 02:55 summer time; 01:05 UTC is 02:05 winter time.
        let summer = jiff::Timestamp::from_second(1_792_889_700)
            .unwrap()
            .as_millisecond();
        assert_eq!(weekday_hour(&copenhagen, summer - 1), (6, 2));
        let winter = summer + 10 * 60_000;
        assert_eq!(weekday_hour(&copenhagen, winter - 1), (6, 2));
        // Monday 2026-12-07 18:00 local (17:00 UTC), the window ending then is 17:55–18:00.
        let monday = jiff::Timestamp::from_second(1_796_662_800)
            .unwrap()
            .as_millisecond();
        assert_eq!(weekday_hour(&copenhagen, monday - 1), (0, 17));
    }
}
