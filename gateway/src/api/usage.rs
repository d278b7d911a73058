//! Usage for safety partnerships: foot traffic per zone by local hour and weekday, the
//! share after dark, occupied dark minutes and detections in the dark, from the
//! detectors' zone windows. Zones only, never a node; for partners, periods are whole
//! hours, nothing newer than the last full hour is counted, and counts from 1 to
//! `[usage] suppress_below - 1` are suppressed.

use axum::Json;
use axum::extract::{Query, State, rejection::QueryRejection};
use axum::response::{IntoResponse, Response};
use parklight_core::tz::TimeZone;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::access::{Caller, Permission, Role};
use super::{ApiError, ErrorBody, Shared, csv_response, period, wants_csv};
use crate::store::UsageQuarter;

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
    /// To, Unix ms (for partners, whole hours: both ends go back to the start of
    /// their hour, and to is at most the start of the current one).
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
    /// To, Unix ms (as counted: for partners, the start of its hour, at most the
    /// current one).
    pub to: i64,
    /// Counts from 1 below this are suppressed (`null`); 0 when nothing is.
    pub suppressed_below: u32,
    /// Each zone.
    pub zones: Vec<ZoneUsage>,
}

/// Local weekdays, Monday first.
pub(super) const WEEKDAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// Sums of a zone.
#[derive(Debug, Default, Clone, Copy)]
struct Sums {
    detections: u64,
    after_dark: u64,
    occupied_dark_minutes: u64,
    in_dark_zone: u64,
}

impl Sums {
    fn add(&mut self, q: &UsageQuarter) {
        self.detections += q.detections;
        self.after_dark += q.after_dark;
        self.occupied_dark_minutes += q.occupied_dark_minutes;
        self.in_dark_zone += q.detections_dark;
    }
}

/// A count as shown: `None` when it is from 1 to `below - 1`.
pub(super) fn shown(count: u64, below: u32) -> Option<u64> {
    (count == 0 || count >= u64::from(below)).then_some(count)
}

/// The heat map as shown: counts from 1 to `below - 1` hidden, and while the hidden
/// ones add up to less than `below` (the zone's total less the cells shown would give
/// their sum away), the smallest shown ones hidden too.
fn heat_shown(cells: &[[u64; 24]; 7], below: u32) -> Vec<Vec<Option<u64>>> {
    let mut heat: Vec<Vec<Option<u64>>> = (cells.iter())
        .map(|hours| hours.iter().map(|c| shown(*c, below)).collect())
        .collect();
    let hidden = |heat: &[Vec<Option<u64>>]| -> u64 {
        (cells.iter().flatten().zip(heat.iter().flatten()))
            .filter(|(_, shown)| shown.is_none())
            .map(|(count, _)| count)
            .sum()
    };
    let mut smallest: Vec<(u64, usize, usize)> = (cells.iter().enumerate())
        .flat_map(|(day, hours)| hours.iter().enumerate().map(move |(h, c)| (*c, day, h)))
        .filter(|(count, _, _)| *count > 0 && shown(*count, below).is_some())
        .collect();
    smallest.sort_unstable();
    let mut next = smallest.into_iter();
    while shown(hidden(&heat), below).is_none() {
        let Some((_, day, hour)) = next.next() else {
            break;
        };
        heat[day][hour] = None;
    }
    heat
}

/// Weekday (Monday 0) of `day`, days since 1970-01-01.
pub(super) fn weekday(day: i64) -> usize {
    // 1970-01-01 was a Thursday.
    (day + 3).rem_euclid(7) as usize
}

/// Local weekday (Monday 0) and hour of the window (or quarter) ending at `end`.
fn weekday_hour(tz: &TimeZone, end: i64) -> (usize, usize) {
    let local = tz.to_local(end - 1);
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
    let below = if partner { api.suppress_below } else { 0 };
    let (from, to) = period(q.from, q.to, partner, 400)?;
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
    let tz = TimeZone::parse(&site.posix_tz).unwrap_or(TimeZone::UTC);
    let mut zones = Vec::new();
    for (zone, quarters) in chosen.iter().zip(&quarters) {
        let mut total = Sums::default();
        let mut cells = [[0u64; 24]; 7];
        for quarter in quarters {
            total.add(quarter);
            let (weekday, hour) = weekday_hour(&tz, quarter.end);
            cells[weekday][hour] += quarter.detections;
        }
        let (detections, mut after_dark, mut in_dark_zone) = (
            shown(total.detections, below),
            shown(total.after_dark, below),
            shown(total.in_dark_zone, below),
        );
        // The difference of two counts shown is a count too: by day, after dark but lit.
        let gives_away = |all: Option<u64>, part: Option<u64>| {
            all.zip(part)
                .is_some_and(|(all, part)| shown(all.saturating_sub(part), below).is_none())
        };
        if gives_away(detections, after_dark) {
            after_dark = None;
        }
        if gives_away(after_dark, in_dark_zone) || gives_away(detections, in_dark_zone) {
            in_dark_zone = None;
        }
        zones.push(ZoneUsage {
            zone: zone.id.clone(),
            name: zone.name.clone(),
            after_dark_share: detections
                .zip(after_dark)
                .filter(|(all, _)| *all > 0)
                .map(|(all, dark)| dark as f64 / all as f64),
            detections,
            after_dark_detections: after_dark,
            occupied_dark_minutes: in_dark_zone.map(|_| total.occupied_dark_minutes),
            detections_in_dark_zone: in_dark_zone,
            heat: heat_shown(&cells, below),
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
    fn small_counts_are_suppressed_and_zero_is_not() {
        assert_eq!(shown(0, 5), Some(0));
        assert_eq!(shown(1, 5), None);
        assert_eq!(shown(4, 5), None);
        assert_eq!(shown(5, 5), Some(5));
        assert_eq!(shown(3, 0), Some(3));
    }

    #[test]
    fn no_total_less_the_cells_shown_gives_a_small_count_away() {
        let mut cells = [[0u64; 24]; 7];
        cells[0][18] = 3; // hidden, and alone it would be the total less the rest
        cells[1][18] = 9;
        cells[2][18] = 7;
        cells[3][18] = 20;
        let heat = heat_shown(&cells, 5);
        assert_eq!(heat[0][18], None);
        assert_eq!(heat[2][18], None, "the smallest shown one hidden with it");
        assert_eq!(heat[1][18], Some(9));
        assert_eq!(heat[3][18], Some(20));
        assert_eq!(heat[4][18], Some(0));
        // Nothing hidden, nothing more to hide.
        assert_eq!(heat_shown(&cells, 0)[0][18], Some(3));
    }

    #[test]
    fn windows_fall_in_their_local_hour_and_weekday_across_a_dst_change() {
        let copenhagen = TimeZone::parse("CET-1CEST,M3.5.0,M10.5.0/3").unwrap();
        // Sunday 2026-10-25: 00:55 UTC is 02:55 summer time; 01:05 UTC is 02:05 winter time.
        let summer = jiff::Timestamp::from_second(1_792_889_700)
            .unwrap()
            .as_millisecond();
        assert_eq!(weekday_hour(&copenhagen, summer), (6, 2));
        let winter = summer + 10 * 60_000;
        assert_eq!(weekday_hour(&copenhagen, winter), (6, 2));
        // Monday 2026-12-07 18:00 local (17:00 UTC), the window ending then is 17:55–18:00.
        let monday = jiff::Timestamp::from_second(1_796_662_800)
            .unwrap()
            .as_millisecond();
        assert_eq!(weekday_hour(&copenhagen, monday), (0, 17));
    }
}
