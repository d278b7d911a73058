//! Compliance for operators and partnerships: per zone and local month, the share of the
//! hours dark outside that the zone was lit to its class, the hours it was dark with
//! people in it, and the time from each fault to its repair. From the detectors' zone
//! windows and conditions (in the time things happened, not when they were judged);
//! partners get no node, no hour that ended less than an hour ago, and the hours dark
//! with people from each local hour's occupied minutes as told ([`super::rounding`]).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Query, State, rejection::QueryRejection};
use axum::response::{IntoResponse, Response};
use parklight_core::tz::{TimeZone, civil_from_days};
use parklight_site::Site;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::access::{Caller, Permission, Role};
use super::rounding::{People, Telling, local_hour};
use super::{ApiError, DAY_MS, ErrorBody, HOUR_MS, Shared, csv_response, period, wants_csv};
use crate::detect::{Kind, Status, Transition, ZoneWindow};
use crate::store::ConditionRow;

/// Repairs a month needs before partners see their median.
const MIN_REPAIRS_FOR_PARTNERS: usize = 3;

/// Which compliance figures.
#[derive(Debug, Deserialize, IntoParams)]
pub struct ComplianceQuery {
    /// The site.
    pub site: String,
    /// Only this zone.
    pub zone: Option<String>,
    /// From, Unix ms.
    pub from: i64,
    /// To, Unix ms; at most 400 days after from (for partners, whole local hours, at
    /// most the start of the hour before the current one).
    pub to: i64,
    /// `json` (the default) or `csv`.
    pub format: Option<String>,
}

/// A fault in a zone and its repair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FaultRepair {
    /// What it was (a condition, as alerts name it).
    pub kind: String,
    /// The node (not for partners).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// When it began, Unix ms.
    pub since: i64,
    /// When it was repaired (its condition cleared), Unix ms; `null` while it lasts.
    pub repaired: Option<i64>,
    /// Hours from fault to repair.
    pub hours_to_repair: Option<f64>,
}

/// A zone's month.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MonthCompliance {
    /// The local month, `YYYY-MM`.
    pub month: String,
    /// Hours it was dark outside while the zone was judged.
    pub dark_hours: f64,
    /// Of those, hours lit to its class.
    pub lit_hours: f64,
    /// Hours below its class.
    pub below_class_hours: f64,
    /// Hours no valid sensor could tell.
    pub unobserved_hours: f64,
    /// `lit_hours / dark_hours`, 0–1 (`null` without dark hours); unobserved hours count
    /// as not shown lit.
    pub lit_share: Option<f64>,
    /// Hours the zone was below its class with people in it (detections); for partners
    /// from each local hour's minutes as told ([`super::rounding`]: 0 below
    /// `[usage] suppress_below`, else rounded to a multiple of it), and `null` when the
    /// detections in the dark, told so, come to 0.
    pub dark_with_people_hours: Option<f64>,
    /// Faults that began this month.
    pub fault_count: u32,
    /// Of those, repaired by the end of the period.
    pub repaired_count: u32,
    /// Each fault (not for partners: a fault of a node is that node's history).
    pub faults: Vec<FaultRepair>,
    /// Median hours from fault to repair of those repaired (`null`: none).
    pub median_hours_to_repair: Option<f64>,
}

/// A zone's compliance, month by month.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ZoneCompliance {
    /// The zone.
    pub zone: String,
    /// Its lighting class.
    pub class: String,
    /// Each month of the period.
    pub months: Vec<MonthCompliance>,
}

/// A site's compliance over a period.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ComplianceReport {
    /// The site.
    pub site: String,
    /// Its IANA time zone: months are local.
    pub timezone: String,
    /// From, Unix ms (as counted).
    pub from: i64,
    /// To, Unix ms (as counted).
    pub to: i64,
    /// Each zone.
    pub zones: Vec<ZoneCompliance>,
}

/// Conditions that are faults of a zone's lighting, to be repaired.
const FAULTS: [Kind; 7] = [
    Kind::DarkZone,
    Kind::LampFault,
    Kind::LampDegraded,
    Kind::SensorFault,
    Kind::NodeOffline,
    Kind::Tamper,
    Kind::DayBurner,
];

/// Each fault begun in `[from, to)`: the transition that began it, and when it cleared
/// (before `to`; one clearing later is still open at `to`).
fn episodes(
    conditions: &[ConditionRow],
    (from, to): (i64, i64),
) -> Vec<(&Transition, Option<i64>)> {
    let mut open: BTreeMap<(Kind, Option<&str>, Option<&str>), usize> = BTreeMap::new();
    let mut found: Vec<(&Transition, Option<i64>)> = Vec::new();
    for row in conditions {
        let t = &row.transition;
        if !FAULTS.contains(&t.kind) {
            continue;
        }
        let key = (t.kind, t.zone.as_deref(), t.node.as_deref());
        match (t.active, open.get(&key)) {
            (true, None) if (from..to).contains(&t.since) => {
                open.insert(key, found.len());
                found.push((t, None));
            }
            (false, Some(&i)) if t.ts < to => {
                found[i].1 = Some(t.ts);
                open.remove(&key);
            }
            _ => {}
        }
    }
    found
}

/// The local month, `YYYY-MM`, of `ms`.
fn month_of(tz: &TimeZone, ms: i64) -> String {
    let (year, month, _) = civil_from_days(tz.to_local(ms).div_euclid(DAY_MS));
    format!("{year:04}-{month:02}")
}

/// The month `ms` falls in, added empty if new.
fn month<'m>(
    months: &'m mut BTreeMap<String, MonthCompliance>,
    tz: &TimeZone,
    ms: i64,
) -> &'m mut MonthCompliance {
    let key = month_of(tz, ms);
    months
        .entry(key.clone())
        .or_insert_with(|| empty_month(key))
}

fn empty_month(month: String) -> MonthCompliance {
    MonthCompliance {
        month,
        dark_hours: 0.0,
        lit_hours: 0.0,
        below_class_hours: 0.0,
        unobserved_hours: 0.0,
        lit_share: None,
        dark_with_people_hours: Some(0.0),
        fault_count: 0,
        repaired_count: 0,
        faults: Vec::new(),
        median_hours_to_repair: None,
    }
}

/// Each zone's months from its windows and the faults begun in the period.
fn compliance(
    site: &Site,
    zone: Option<&str>,
    windows: &[ZoneWindow],
    conditions: &[ConditionRow],
    period: (i64, i64),
    (telling, partner): (&Telling, bool),
) -> Vec<ZoneCompliance> {
    let tz = TimeZone::parse(&site.posix_tz).unwrap_or(TimeZone::UTC);
    let here: Vec<ConditionRow> = (conditions.iter())
        .filter(|row| row.transition.site == site.id)
        .cloned()
        .collect();
    let faults = episodes(&here, period);
    let zone_of = |t: &Transition| {
        t.zone.clone().or_else(|| {
            let node = site.node(t.node.as_deref()?)?;
            node.zone.clone()
        })
    };
    (site.zones.iter())
        .filter(|z| zone.is_none_or(|id| id == z.id))
        .map(|z| {
            let mut months: BTreeMap<String, MonthCompliance> = BTreeMap::new();
            // Occupied dark minutes and detections in the dark by month and local hour.
            let mut in_dark: BTreeMap<(String, i64), People> = BTreeMap::new();
            for w in windows.iter().filter(|w| w.zone == z.id) {
                let hours = (w.end - w.start) as f64 / HOUR_MS as f64;
                let m = month(&mut months, &tz, w.end - 1);
                match w.status {
                    Status::NotJudged => continue,
                    Status::Lit => m.lit_hours += hours,
                    Status::Dark => m.below_class_hours += hours,
                    Status::Unobserved => m.unobserved_hours += hours,
                }
                m.dark_hours += hours;
                m.dark_with_people_hours.get_or_insert(0.0);
                let hour = local_hour(&tz, w.end - 1);
                in_dark
                    .entry((m.month.clone(), hour))
                    .or_default()
                    .add(People {
                        occupied_dark_minutes: u64::from(w.occupied_dark_minutes),
                        detections_dark: u64::from(w.detections_dark),
                        ..People::default()
                    });
            }
            let mut people: BTreeMap<String, People> = BTreeMap::new();
            for ((month, hour), values) in in_dark {
                let told = telling.hour(&z.id, hour, values);
                people.entry(month).or_default().add(told);
            }
            for (t, repaired) in faults
                .iter()
                .filter(|(t, _)| zone_of(t).as_deref() == Some(z.id.as_str()))
            {
                month(&mut months, &tz, t.since).faults.push(FaultRepair {
                    kind: t.kind.as_str().to_owned(),
                    node: t.node.clone(),
                    since: t.since,
                    repaired: *repaired,
                    hours_to_repair: repaired.map(|r| (r - t.since) as f64 / HOUR_MS as f64),
                });
            }
            let months = months
                .into_values()
                .map(|mut m| {
                    m.lit_share = (m.dark_hours > 0.0).then(|| m.lit_hours / m.dark_hours);
                    let told = people.get(&m.month).copied().unwrap_or_default();
                    if m.dark_with_people_hours.is_some() {
                        m.dark_with_people_hours =
                            telling.shown_minutes(&told).map(|m| m as f64 / 60.0);
                    }
                    m.faults.sort_by_key(|f| f.since);
                    let mut repairs: Vec<f64> =
                        m.faults.iter().filter_map(|f| f.hours_to_repair).collect();
                    repairs.sort_by(f64::total_cmp);
                    m.median_hours_to_repair = median(&repairs);
                    m.fault_count = m.faults.len() as u32;
                    m.repaired_count = repairs.len() as u32;
                    if partner {
                        // Partners: counts and the median, no node's history.
                        m.faults.clear();
                        m.median_hours_to_repair = median_for_partners(&repairs);
                    }
                    m
                })
                .collect();
            ZoneCompliance {
                zone: z.id.clone(),
                class: z.requirement.label(),
                months,
            }
        })
        .collect()
}

/// The median of sorted `values`.
fn median(values: &[f64]) -> Option<f64> {
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

/// Per zone and local month: the share of dark hours lit to class, hours dark with
/// people, and each fault's time to repair. JSON, or CSV (one row per zone and month)
/// with `format=csv`. Partners get fault counts and medians but no single fault, hours
/// dark with people from each local hour as told ([`super::rounding`]), and no hour that
/// ended less than an hour ago.
#[utoipa::path(get, path = "/api/v1/compliance", params(ComplianceQuery), responses(
    (status = 200, body = ComplianceReport), (status = 200, content_type = "text/csv", body = String),
    (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn compliance_report(
    State(api): State<Shared>,
    caller: Caller,
    query: Result<Query<ComplianceQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    caller.require(Permission::Compliance)?;
    let Query(q) = query?;
    let site = api.site_with(&q.site, q.zone.as_deref())?;
    let csv = wants_csv(q.format.as_deref())?;
    let partner = caller.role == Role::Partnership;
    let tz = TimeZone::parse(&site.posix_tz).unwrap_or(TimeZone::UTC);
    let (from, to) = period(q.from, q.to, partner.then_some(&tz), 400)?;
    let id = site.id.clone();
    let (windows, conditions) = api
        .read(move |store| {
            Ok((
                store.site_windows(&id, from, to)?,
                store.conditions_since(from)?,
            ))
        })
        .await?;
    let report = ComplianceReport {
        site: site.id.clone(),
        timezone: site.timezone.clone(),
        from,
        to,
        zones: compliance(
            site,
            q.zone.as_deref(),
            &windows,
            &conditions,
            (from, to),
            (&api.telling(&site.id, &caller), partner),
        ),
    };
    if !csv {
        return Ok(Json(report).into_response());
    }
    Ok(csv_response(compliance_csv(&report)))
}

/// One row per zone and month.
fn compliance_csv(report: &ComplianceReport) -> String {
    let mut out = String::from(
        "zone,month,dark_hours,lit_hours,below_class_hours,unobserved_hours,lit_share,dark_with_people_hours,faults,repaired,median_hours_to_repair\n",
    );
    let optional =
        |v: Option<f64>, digits: usize| v.map_or(String::new(), |v| format!("{v:.digits$}"));
    for zone in &report.zones {
        for m in &zone.months {
            let people = m
                .dark_with_people_hours
                .map_or("suppressed".into(), |h| format!("{h:.2}"));
            out.push_str(&format!(
                "{},{},{:.2},{:.2},{:.2},{:.2},{},{people},{},{},{}\n",
                zone.zone,
                m.month,
                m.dark_hours,
                m.lit_hours,
                m.below_class_hours,
                m.unobserved_hours,
                optional(m.lit_share, 4),
                m.fault_count,
                m.repaired_count,
                optional(m.median_hours_to_repair, 2),
            ));
        }
    }
    out
}

/// The median of sorted `repairs` as partners see it: none of fewer than
/// [`MIN_REPAIRS_FOR_PARTNERS`] (one fault's own time, or the mean of two).
fn median_for_partners(repairs: &[f64]) -> Option<f64> {
    (repairs.len() >= MIN_REPAIRS_FOR_PARTNERS)
        .then(|| median(repairs))
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partners_get_no_median_of_one_or_two_repairs() {
        assert_eq!(median_for_partners(&[1.5]), None);
        assert_eq!(median_for_partners(&[1.0, 2.0]), None);
        assert_eq!(median_for_partners(&[1.0, 2.0, 9.0]), Some(2.0));
    }

    #[test]
    fn months_are_local_and_the_median_is_the_middle() {
        let copenhagen = TimeZone::parse("CET-1CEST,M3.5.0,M10.5.0/3").unwrap();
        // 2026-11-30 23:30 UTC is already December in Copenhagen.
        let ms = jiff::Timestamp::from_second(1_796_081_400)
            .unwrap()
            .as_millisecond();
        assert_eq!(month_of(&copenhagen, ms), "2026-12");
        assert_eq!(month_of(&TimeZone::UTC, ms), "2026-11");
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[1.0, 2.0, 9.0]), Some(2.0));
        assert_eq!(median(&[1.0, 2.0, 4.0, 9.0]), Some(3.0));
    }
}
