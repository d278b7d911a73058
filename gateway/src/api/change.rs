//! Before and after a date: did a zone's (or a site's) evening use change, e.g. after new
//! lighting? Each night after the date is paired with the night of the same weekday
//! `weeks` earlier, and only the local times dark outside in both nights of a pair are
//! compared (comparable darkness hours: longer autumn nights add no detections). For a
//! zone, control zones whose lighting did not change take out what changed everywhere
//! (season, weather, events): the estimate is the ratio of the zone's after/before ratio
//! to the controls' (a difference-in-differences on the log scale, as in evaluations of
//! street lighting), its interval from the spread across pairs of nights, so nights that
//! vary more than chance widen it. The naive comparison (every dark window of each
//! period, no pairing, no controls) is given beside it. Partners get it all from each
//! zone's hours as told ([`super::rounding`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use axum::Json;
use axum::extract::{Query, State, rejection::QueryRejection};
use axum::response::{IntoResponse, Response};
use parklight_core::tz::{TimeZone, civil_from_days, days_from_civil};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::access::{Caller, Permission, Role};
use super::rounding::{People, Telling, local_hour};
use super::usage::{WEEKDAYS, weekday};
use super::{
    ApiError, DAY_MS, ErrorBody, HOUR_MS, Shared, csv_response, last_full_hour, wants_csv,
};
use crate::detect::{Status, ZoneWindow};

/// Confidence of every interval.
const CONFIDENCE: f64 = 0.95;
/// Weeks each side at most.
const MAX_WEEKS: u32 = 13;

/// Which comparison.
#[derive(Debug, Deserialize, IntoParams)]
pub struct ChangeQuery {
    /// The site.
    pub site: String,
    /// The zone (default: the whole site, without controls).
    pub zone: Option<String>,
    /// The first night after the change, a local date (YYYY-MM-DD); nights run from
    /// local noon to noon.
    pub date: String,
    /// Weeks compared on each side, 1 to 13 (default 4).
    pub weeks: Option<u32>,
    /// Control zones, comma-separated: zones whose lighting did not change (default:
    /// every other zone of the site; empty for none). Only with a zone.
    pub controls: Option<String>,
    /// `json` (the default) or `csv`.
    pub format: Option<String>,
}

/// One side of the comparison.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Period {
    /// Its first night (local date of the evening).
    pub first_night: String,
    /// Its last night.
    pub last_night: String,
    /// From, Unix ms (local noon).
    pub from: i64,
    /// To, Unix ms (local noon).
    pub to: i64,
    /// Nights in it that are over and were judged.
    pub nights: u32,
}

/// A night after the date and the night of the same weekday before it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Pair {
    /// The night before (local date of the evening).
    pub before_night: String,
    /// The night after.
    pub after_night: String,
    /// Their weekday (Mon–Sun).
    pub weekday: String,
    /// Minutes dark outside in both nights: the minutes compared.
    pub dark_minutes: u64,
    /// Detections in those minutes, the night before (`null`: suppressed).
    pub before: Option<u64>,
    /// And the night after (`null`: suppressed).
    pub after: Option<u64>,
    /// The control zones' detections in those minutes, the night before (`null`:
    /// suppressed or no controls).
    pub controls_before: Option<u64>,
    /// And the night after.
    pub controls_after: Option<u64>,
    /// Occupied dark minutes in those minutes, the night before (`null`: suppressed with
    /// the detections in the dark).
    pub occupied_dark_minutes_before: Option<u64>,
    /// And the night after.
    pub occupied_dark_minutes_after: Option<u64>,
}

/// A figure before and after, its change and the interval of the change.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct Comparison {
    /// Before (detections: a total; minutes: per night).
    pub before: Option<f64>,
    /// After.
    pub after: Option<f64>,
    /// The change (detections: relative, 0.25 is a quarter more; minutes: per night),
    /// `null` when the figures do not allow one.
    pub change: Option<f64>,
    /// Low end of its interval.
    pub low: Option<f64>,
    /// High end of its interval.
    pub high: Option<f64>,
}

/// A figure compared both ways.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Methods {
    /// Paired nights, matched dark minutes, relative to the controls.
    pub matched: Comparison,
    /// Every dark window of each period, per night, no controls.
    pub naive: Comparison,
}

/// Before and after a date.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Change {
    /// The site.
    pub site: String,
    /// The zone (`null`: the whole site).
    pub zone: Option<String>,
    /// The site's IANA time zone: nights are local.
    pub timezone: String,
    /// The first night after the change.
    pub date: String,
    /// Weeks on each side.
    pub weeks: u32,
    /// The control zones.
    pub controls: Vec<String>,
    /// Confidence of the intervals.
    pub confidence: f64,
    /// Every count (and figure) is from hours each told 0 below this and rounded to a
    /// multiple of it from this on; a count that comes to 0 is `null` (suppressed: each
    /// of its hours had fewer); 0 when counts are exact.
    pub suppressed_below: u32,
    /// The nights before.
    pub before: Period,
    /// The nights after (up to the last that is over).
    pub after: Period,
    /// The pairs compared.
    pub pairs: Vec<Pair>,
    /// Detections while dark outside.
    pub after_dark_detections: Methods,
    /// Minutes dark (below class) with detections.
    pub occupied_dark_minutes: Methods,
}

/// One local hour of a night: its judged windows' figures.
#[derive(Debug, Default, Clone, Copy)]
struct Cell {
    /// The hour's start, Unix ms.
    hour: i64,
    judged_ms: i64,
    detections: u64,
    occupied_dark_minutes: u64,
    detections_dark: u64,
}

impl Cell {
    /// Judged (dark outside) all through.
    fn is_full(&self) -> bool {
        self.judged_ms >= HOUR_MS
    }
}

/// A zone's judged windows per night, by local hour since noon.
type Nights = HashMap<(String, i64), BTreeMap<i64, Cell>>;

/// A pair of nights over the local hours dark in both: the zones' figures summed, and
/// the controls'.
#[derive(Debug, Clone)]
struct Matched {
    hours: u64,
    before: People,
    after: People,
    controls_before: People,
    controls_after: People,
}

/// Before and after a date for a zone or a site: after-dark detections and occupied dark
/// minutes in paired nights and matched dark minutes, against control zones, with a 95 %
/// interval; and the naive comparison. JSON, or CSV (one row per figure and method)
/// with `format=csv`.
#[utoipa::path(get, path = "/api/v1/usage/change", params(ChangeQuery), responses(
    (status = 200, body = Change), (status = 200, content_type = "text/csv", body = String),
    (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn change(
    State(api): State<Shared>,
    caller: Caller,
    query: Result<Query<ChangeQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    caller.require(Permission::Usage)?;
    let Query(q) = query?;
    let site = api.site_with(&q.site, q.zone.as_deref())?.clone();
    let csv = wants_csv(q.format.as_deref())?;
    let weeks = q.weeks.unwrap_or(4);
    if !(1..=MAX_WEEKS).contains(&weeks) {
        return Err(ApiError::invalid("weeks", format!("1 to {MAX_WEEKS}")));
    }
    let date: jiff::civil::Date =
        (q.date.parse()).map_err(|_| ApiError::invalid("date", "a local date, YYYY-MM-DD"))?;
    let change_night = days_from_civil(
        i32::from(date.year()),
        date.month() as u32,
        date.day() as u32,
    );
    let targets: Vec<String> = match &q.zone {
        Some(zone) => vec![zone.clone()],
        None => site.zones.iter().map(|z| z.id.clone()).collect(),
    };
    let mut controls: Vec<String> = match (&q.zone, q.controls.as_deref()) {
        (None, None | Some("")) => Vec::new(),
        (None, Some(_)) => return Err(ApiError::invalid("controls", "only with a zone")),
        (Some(zone), None) => (site.zones.iter())
            .map(|z| z.id.clone())
            .filter(|z| z != zone)
            .collect(),
        (Some(zone), Some(list)) => {
            let list: BTreeSet<&str> = list.split(',').filter(|c| !c.is_empty()).collect();
            if let Some(bad) = list.iter().find(|c| site.zone(c).is_none() || *c == zone) {
                return Err(ApiError::invalid(
                    "controls",
                    format!("{bad} is not another zone of {}", site.id),
                ));
            }
            list.into_iter().map(str::to_owned).collect()
        }
    };
    let partner = caller.role == Role::Partnership;
    let telling = api.telling(&site.id, &caller);
    let below = telling.base();
    let tz = TimeZone::parse(&site.posix_tz).unwrap_or(TimeZone::UTC);
    let span = i64::from(weeks) * 7;
    let noon = |night: i64| tz.from_local(night * DAY_MS + 12 * HOUR_MS);
    let (from, to) = (noon(change_night - span), noon(change_night + span));
    // Partners: nights that ended an hour ago or more, as usage's hours.
    let until = if partner {
        last_full_hour() - HOUR_MS
    } else {
        jiff::Timestamp::now().as_millisecond()
    };
    let (id, wanted) = (site.id.clone(), [&targets[..], &controls[..]].concat());
    let windows = api
        .read(move |store| {
            let of = |zone: &String| store.zone_windows(&id, zone, from, to.min(until));
            Ok(wanted.iter().map(of).collect::<Result<Vec<_>, _>>()?)
        })
        .await?;
    let nights = by_night(&tz, windows.iter().flatten());
    // How far each zone's windows are judged (daylight ones included).
    let judged_until: HashMap<&str, i64> = (windows.iter())
        .filter_map(|w| Some((w.first()?.zone.as_str(), w.last()?.end)))
        .collect();
    if q.zone.is_some() && q.controls.is_none() {
        // By default, the other zones that have windows then (not a zone without poles,
        // nor one out of its dates).
        controls.retain(|z| judged_until.contains_key(z.as_str()));
    }
    let controlled = !controls.is_empty();
    let compared: Vec<String> = [&targets[..], &controls[..]].concat();
    // A night counts once it is over and judged to its end in every zone compared.
    let usable = |night: i64| {
        let end = noon(night + 1);
        end <= until
            && compared.iter().all(|z| {
                nights.contains_key(&(z.clone(), night))
                    && judged_until.get(z.as_str()).is_some_and(|t| *t >= end)
            })
    };
    let detections = |s: &People| s.detections;
    // As told; for partners, a figure told 0 is suppressed (`null`).
    let show = |sums: &People| telling.shown(sums.detections);
    let minutes = |sums: &People| telling.shown_minutes(sums);
    let mut pairs = Vec::new();
    let mut matched = Vec::new();
    for k in 0..span {
        let (before, after) = (change_night - span + k, change_night + k);
        if !(usable(before) && usable(after)) {
            continue;
        }
        let m = matched_nights(&nights, &telling, &targets, &controls, (before, after));
        pairs.push(Pair {
            before_night: night_name(before),
            after_night: night_name(after),
            weekday: WEEKDAYS[weekday(before)].into(),
            dark_minutes: m.hours * 60,
            before: show(&m.before),
            after: show(&m.after),
            controls_before: controlled.then(|| show(&m.controls_before)).flatten(),
            controls_after: controlled.then(|| show(&m.controls_after)).flatten(),
            occupied_dark_minutes_before: minutes(&m.before),
            occupied_dark_minutes_after: minutes(&m.after),
        });
        matched.push(m);
    }
    let whole = |first: i64| -> Vec<People> {
        (first..first + span)
            .filter(|n| usable(*n))
            .map(|n| {
                (targets.iter())
                    .map(|z| night_sums(&nights, &telling, z, n, None))
                    .sum()
            })
            .collect()
    };
    let (all_before, all_after) = (whole(change_night - span), whole(change_night));
    let totals = |nights: &[People], count: fn(&People) -> u64| -> Vec<f64> {
        nights.iter().map(|s| count(s) as f64).collect()
    };
    let occupied = |s: &People| s.occupied_dark_minutes;
    let per_control = controls.len().max(1) as f64;
    let detections_change = Methods {
        matched: ratio_in_differences(
            &(matched.iter())
                .map(|m| {
                    [&m.before, &m.after, &m.controls_before, &m.controls_after]
                        .map(|s| s.detections as f64)
                })
                .collect::<Vec<_>>(),
            controlled,
        ),
        naive: ratio_of_means(
            &totals(&all_before, detections),
            &totals(&all_after, detections),
        ),
    };
    let minutes_change = Methods {
        matched: mean_difference(
            &(matched.iter())
                .map(|m| {
                    let minutes = |s: &People| s.occupied_dark_minutes as f64;
                    let controls =
                        (minutes(&m.controls_after) - minutes(&m.controls_before)) / per_control;
                    (minutes(&m.before), minutes(&m.after), controls)
                })
                .collect::<Vec<_>>(),
        ),
        naive: difference_of_means(
            &totals(&all_before, occupied),
            &totals(&all_after, occupied),
        ),
    };
    let period = |first: i64, counted: usize| Period {
        first_night: night_name(first),
        last_night: night_name(first + span - 1),
        from: noon(first),
        to: noon(first + span),
        nights: counted as u32,
    };
    let change = Change {
        site: site.id.clone(),
        zone: q.zone.clone(),
        timezone: site.timezone.clone(),
        date: night_name(change_night),
        weeks,
        controls,
        confidence: CONFIDENCE,
        suppressed_below: below,
        before: period(change_night - span, all_before.len()),
        after: period(change_night, all_after.len()),
        pairs,
        after_dark_detections: detections_change,
        occupied_dark_minutes: minutes_change,
    };
    if csv {
        return Ok(csv_response(change_csv(&change)));
    }
    Ok(Json(change).into_response())
}

/// The local date of night `day` (days since 1970-01-01).
fn night_name(day: i64) -> String {
    let (y, m, d) = civil_from_days(day);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Judged windows by zone, night (local noon to noon) and local hour since noon. The
/// hour a night holds twice (clocks going back) counts once, its first pass, so that the
/// same local hours are compared.
fn by_night<'w>(tz: &TimeZone, windows: impl Iterator<Item = &'w ZoneWindow>) -> Nights {
    let mut nights = Nights::new();
    for w in windows.filter(|w| w.status != Status::NotJudged) {
        let since_noon = tz.to_local(w.end - 1) - 12 * HOUR_MS;
        let night = since_noon.div_euclid(DAY_MS);
        let hour = since_noon.rem_euclid(DAY_MS) / HOUR_MS;
        let cell = (nights.entry((w.zone.clone(), night)).or_default())
            .entry(hour)
            .or_insert_with(|| Cell {
                hour: local_hour(tz, w.end - 1),
                ..Cell::default()
            });
        if cell.is_full() || cell.hour != local_hour(tz, w.end - 1) {
            continue; // the repeated hour's second pass
        }
        cell.judged_ms += w.end - w.start;
        cell.detections += u64::from(w.detections);
        cell.occupied_dark_minutes += u64::from(w.occupied_dark_minutes);
        cell.detections_dark += u64::from(w.detections_dark);
    }
    nights
}

/// A zone's figures in `night`, over the hours in `only` (every judged window when
/// `None`), each hour as told.
fn night_sums(
    nights: &Nights,
    telling: &Telling,
    zone: &str,
    night: i64,
    only: Option<&[i64]>,
) -> People {
    let mut sums = People::default();
    let Some(cells) = nights.get(&(zone.to_owned(), night)) else {
        return sums;
    };
    // Every window of a cell is dark outside: its detections are after dark.
    let mut add = |cell: &Cell| {
        sums.add(telling.hour(
            zone,
            cell.hour,
            People {
                detections: cell.detections,
                after_dark: cell.detections,
                occupied_dark_minutes: cell.occupied_dark_minutes,
                detections_dark: cell.detections_dark,
            },
        ))
    };
    match only {
        Some(hours) => hours.iter().filter_map(|h| cells.get(h)).for_each(&mut add),
        None => cells.values().for_each(&mut add),
    }
    sums
}

/// A pair of nights over the local hours dark outside all through in both, in every zone
/// compared.
fn matched_nights(
    nights: &Nights,
    telling: &Telling,
    targets: &[String],
    controls: &[String],
    (before, after): (i64, i64),
) -> Matched {
    let full_hours = |night: i64| -> BTreeSet<i64> {
        (targets.iter().chain(controls))
            .map(|z| {
                nights
                    .get(&(z.clone(), night))
                    .map_or_else(BTreeSet::new, |cells| {
                        (cells.iter())
                            .filter(|(_, c)| c.is_full())
                            .map(|(h, _)| *h)
                            .collect()
                    })
            })
            .reduce(|a, b| &a & &b)
            .unwrap_or_default()
    };
    let hours: Vec<i64> = (&full_hours(before) & &full_hours(after))
        .into_iter()
        .collect();
    let zones = |zones: &[String], night: i64| {
        (zones.iter())
            .map(|z| night_sums(nights, telling, z, night, Some(&hours)))
            .sum()
    };
    Matched {
        hours: hours.len() as u64,
        before: zones(targets, before),
        after: zones(targets, after),
        controls_before: zones(controls, before),
        controls_after: zones(controls, after),
    }
}

/// The 97.5 % quantile of Student's t with `df` degrees of freedom, for two-sided 95 %
/// intervals: from the table below 5 degrees (rounded down, so wider), else the
/// Cornish–Fisher expansion about the normal (within 0.1 %).
fn t_quantile(df: f64) -> f64 {
    const TABLE: [f64; 4] = [12.706, 4.303, 3.182, 2.776];
    if df < 5.0 {
        return TABLE[(df.floor().max(1.0) as usize) - 1];
    }
    let z: f64 = 1.959_963_985;
    let (z3, z5, z7, z9) = (z.powi(3), z.powi(5), z.powi(7), z.powi(9));
    z + (z3 + z) / (4.0 * df)
        + (5.0 * z5 + 16.0 * z3 + 3.0 * z) / (96.0 * df.powi(2))
        + (3.0 * z7 + 19.0 * z5 + 17.0 * z3 - 15.0 * z) / (384.0 * df.powi(3))
        + (79.0 * z9 + 776.0 * z7 + 1482.0 * z5 - 1920.0 * z3 - 945.0 * z) / (92_160.0 * df.powi(4))
}

/// Welch–Satterthwaite degrees of freedom of a sum of two variances of means, each with
/// its `n - 1` degrees.
fn welch_df((variance_a, n_a): (f64, f64), (variance_b, n_b): (f64, f64)) -> f64 {
    (variance_a + variance_b).powi(2)
        / (variance_a.powi(2) / (n_a - 1.0) + variance_b.powi(2) / (n_b - 1.0))
}

/// A comparison of `before` and `after` whose change, estimated as `estimate` with
/// standard error `se` on some scale, is `shown` on the figure's own: a t interval.
fn compared(
    (before, after): (f64, f64),
    estimate: f64,
    se: f64,
    df: f64,
    shown: fn(f64) -> f64,
) -> Comparison {
    let half = (se.is_finite() && df >= 1.0).then(|| t_quantile(df) * se);
    Comparison {
        before: Some(before),
        after: Some(after),
        change: Some(shown(estimate)),
        low: half.map(|h| shown(estimate - h)),
        high: half.map(|h| shown(estimate + h)),
    }
}

/// A relative change from its log.
fn relative(log_change: f64) -> f64 {
    log_change.exp() - 1.0
}

/// A change shown as estimated.
fn difference(change: f64) -> f64 {
    change
}

/// The ratio of after to before totals over paired nights, divided by the controls'
/// (when `controlled`); its variance by linearisation over pairs (the nights' spread, not
/// a Poisson assumption).
fn ratio_in_differences(pairs: &[[f64; 4]], controlled: bool) -> Comparison {
    let total = |i: usize| pairs.iter().map(|p| p[i]).sum::<f64>();
    let (zb, za) = (total(0), total(1));
    let (cb, ca) = if controlled {
        (total(2), total(3))
    } else {
        (1.0, 1.0)
    };
    if [zb, za, cb, ca].iter().any(|t| *t <= 0.0) || pairs.len() < 2 {
        return Comparison {
            before: Some(zb),
            after: Some(za),
            ..Comparison::default()
        };
    }
    let n = pairs.len() as f64;
    let log_change = (za / zb).ln() - (ca / cb).ln();
    let variance = n / (n - 1.0)
        * (pairs.iter())
            .map(|[b, a, c_b, c_a]| {
                let controls = if controlled { c_a / ca - c_b / cb } else { 0.0 };
                (a / za - b / zb - controls).powi(2)
            })
            .sum::<f64>();
    compared((zb, za), log_change, variance.sqrt(), n - 1.0, relative)
}

/// The ratio of after-dark detections per night after to before, every night of each
/// period; its variance by linearisation over each period's nights, Welch's degrees of
/// freedom.
fn ratio_of_means(before: &[f64], after: &[f64]) -> Comparison {
    let part = |nights: &[f64]| {
        let n = nights.len() as f64;
        let total = nights.iter().sum::<f64>();
        let variance = n / (n - 1.0)
            * (nights.iter())
                .map(|d| (d / total - 1.0 / n).powi(2))
                .sum::<f64>();
        (total, n, variance)
    };
    let ((zb, nb, vb), (za, na, va)) = (part(before), part(after));
    if zb <= 0.0 || za <= 0.0 || nb < 2.0 || na < 2.0 {
        return Comparison {
            before: Some(zb),
            after: Some(za),
            ..Comparison::default()
        };
    }
    let log_change = (za / na).ln() - (zb / nb).ln();
    let df = welch_df((vb, nb), (va, na));
    compared((zb, za), log_change, (vb + va).sqrt(), df, relative)
}

/// Mean and sample variance.
fn mean_variance(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, variance)
}

/// Per pair `(before, after, the controls' change per zone)`: the mean change per night
/// less the controls', with a t interval over pairs.
fn mean_difference(pairs: &[(f64, f64, f64)]) -> Comparison {
    let n = pairs.len() as f64;
    if pairs.len() < 2 {
        return Comparison::default();
    }
    let mean = |values: &mut dyn Iterator<Item = f64>| values.sum::<f64>() / n;
    let (before, after) = (
        mean(&mut pairs.iter().map(|p| p.0)),
        mean(&mut pairs.iter().map(|p| p.1)),
    );
    let differences: Vec<f64> = pairs.iter().map(|(b, a, c)| a - b - c).collect();
    let (change, variance) = mean_variance(&differences);
    compared(
        (before, after),
        change,
        (variance / n).sqrt(),
        n - 1.0,
        difference,
    )
}

/// After's mean less before's, with a Welch interval.
fn difference_of_means(before: &[f64], after: &[f64]) -> Comparison {
    if before.len() < 2 || after.len() < 2 {
        return Comparison::default();
    }
    let ((mb, vb), (ma, va)) = (mean_variance(before), mean_variance(after));
    let (nb, na) = (before.len() as f64, after.len() as f64);
    let (sb, sa) = (vb / nb, va / na);
    let df = welch_df((sb, nb), (sa, na));
    compared((mb, ma), ma - mb, (sb + sa).sqrt(), df, difference)
}

/// One row per figure and method:
/// `figure,method,before,after,change,low,high,before_first_night,after_last_night,weeks,pairs`.
fn change_csv(change: &Change) -> String {
    let mut out = String::from(
        "figure,method,before,after,change,low,high,before_first_night,after_last_night,weeks,pairs\n",
    );
    for (figure, methods) in [
        ("after_dark_detections", &change.after_dark_detections),
        ("occupied_dark_minutes", &change.occupied_dark_minutes),
    ] {
        for (method, c) in [("matched", &methods.matched), ("naive", &methods.naive)] {
            let number = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.4}"));
            out.push_str(&format!(
                "{figure},{method},{},{},{},{},{},{},{},{},{}\n",
                number(c.before),
                number(c.after),
                number(c.change),
                number(c.low),
                number(c.high),
                change.before.first_night,
                change.after.last_night,
                change.weeks,
                change.pairs.len()
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t_quantiles_match_the_tables() {
        for (df, table) in [
            (1.0, 12.706),
            (2.5, 4.303),
            (4.0, 2.776),
            (5.0, 2.571),
            (10.0, 2.228),
            (27.0, 2.052),
            (100.0, 1.984),
        ] {
            assert!(
                (t_quantile(df) - table).abs() < 0.002,
                "{df}: {}",
                t_quantile(df)
            );
        }
    }

    fn pair(before: u64, after: u64, controls_before: u64, controls_after: u64) -> [f64; 4] {
        [before, after, controls_before, controls_after].map(|n| n as f64)
    }

    #[test]
    fn the_controls_take_out_what_changed_everywhere() {
        // Everything halved after, the zone too: no change of its own.
        let pairs: Vec<_> = (0..10)
            .map(|i| {
                let noise = |a: u64, b: u64| i * a % b;
                pair(
                    100 + noise(37, 11),
                    50 + noise(53, 9),
                    400 + noise(17, 23),
                    200 + noise(29, 13),
                )
            })
            .collect();
        let c = ratio_in_differences(&pairs, true);
        assert!(c.change.unwrap().abs() < 0.05, "{c:?}");
        assert!(c.low.unwrap() < 0.0 && c.high.unwrap() > 0.0, "{c:?}");
        let naive = ratio_in_differences(&pairs, false);
        assert!((naive.change.unwrap() + 0.5).abs() < 0.02, "{naive:?}");
        assert!(naive.high.unwrap() < 0.0, "{naive:?}");
        // The zone doubles while the controls stay.
        let pairs: Vec<_> = (0..10)
            .map(|i| pair(100 + i, 200 + 2 * i, 400, 400))
            .collect();
        let c = ratio_in_differences(&pairs, true);
        assert!((c.change.unwrap() - 1.0).abs() < 1e-9, "{c:?}");
    }

    #[test]
    fn too_few_nights_or_none_counted_give_no_change() {
        assert_eq!(ratio_in_differences(&[pair(5, 6, 5, 6)], true).change, None);
        let zero: Vec<_> = (0..5).map(|_| pair(0, 3, 5, 5)).collect();
        assert_eq!(ratio_in_differences(&zero, true).change, None);
        assert_eq!(ratio_of_means(&[], &[]).change, None);
        assert_eq!(mean_difference(&[(1.0, 2.0, 0.0)]).change, None);
    }

    #[test]
    fn minutes_change_by_their_mean_difference() {
        let pairs: Vec<(f64, f64, f64)> = (0..8).map(|i| (30.0 + f64::from(i), 5.0, 0.0)).collect();
        let c = mean_difference(&pairs);
        assert!((c.change.unwrap() + 28.5).abs() < 1e-9, "{c:?}");
        assert!(c.low.unwrap() < -28.5 && c.high.unwrap() > -28.5);
    }

    #[test]
    fn a_dst_night_is_one_night_and_its_repeated_hour_counts_once() {
        let tz = TimeZone::parse("CET-1CEST,M3.5.0,M10.5.0/3").unwrap();
        // 2026-10-25 00:00–01:00 UTC is 02:00–03:00 summer time, 01:00–02:00 UTC the
        // same hour in winter time.
        let first = 1_792_886_400_000;
        let window = |end: i64, detections: u32| ZoneWindow {
            site: "s".into(),
            zone: "z".into(),
            start: end - 300_000,
            end,
            status: Status::Lit,
            lux_avg: None,
            lux_min: None,
            required_avg: 7.5,
            required_min: 1.5,
            detections,
            occupied_dark_minutes: 0,
            detections_dark: 0,
            valid_nodes: 1,
            nodes: 1,
            cause: None,
            revised: false,
        };
        let windows: Vec<ZoneWindow> = (1..=24)
            .map(|i| window(first + i * 300_000, if i <= 12 { 2 } else { 5 }))
            .collect();
        let nights = by_night(&tz, windows.iter());
        assert_eq!(nights.len(), 1);
        let cells = nights.values().next().unwrap();
        assert_eq!(cells.len(), 1);
        let hour = cells.values().next().unwrap();
        assert!(hour.is_full());
        assert_eq!(hour.detections, 24, "the first pass, 12 windows of 2");
        let (_, night) = nights.keys().next().unwrap();
        assert_eq!(night_name(*night), "2026-10-24");
    }
}
