//! Energy for operators: each zone's lamps per night, from metered power where a node
//! meters it, else estimated from its rated power and reported levels through the
//! firmware's luminance curve (marked so); the cost at the configured tariff; and the
//! share burnt in daylight (day-burners).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Query, State, rejection::QueryRejection};
use axum::response::{IntoResponse, Response};
use parklight_core::lamp::luminance;
use parklight_core::solar::altitude_deg;
use parklight_core::tz::{TimeZone, civil_from_days};
use parklight_site::{NodePlacement, Site};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::access::{Caller, Permission};
use super::{ApiError, DAY_MS, ErrorBody, HOUR_MS, Shared, csv_response, period, wants_csv};
use crate::store::{ReportRow, Selector, StorageError, Store};

/// The sun above this altitude (degrees) is day, as the day-burner rule has it.
const DAY_ABOVE_DEG: f64 = 3.0;

/// Which energy figures.
#[derive(Debug, Deserialize, IntoParams)]
pub struct EnergyQuery {
    /// The site.
    pub site: String,
    /// Only this zone.
    pub zone: Option<String>,
    /// From, Unix ms.
    pub from: i64,
    /// To, Unix ms; at most 400 days after from.
    pub to: i64,
    /// `json` (the default) or `csv`.
    pub format: Option<String>,
}

/// Energy over a night or a period.
#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Energy {
    /// All of it, kWh: metered plus estimated.
    pub kwh: f64,
    /// Metered by the nodes, kWh.
    pub metered_kwh: f64,
    /// Estimated from rated power and levels where a node meters nothing, kWh.
    pub estimated_kwh: f64,
    /// Lamp hours of nodes that neither meter nor have a rated power: not counted.
    pub unknown_lamp_hours: f64,
    /// Burnt while the sun stood more than 3° up (day-burners), kWh.
    pub daylight_kwh: f64,
    /// The cost at the tariff (`null` without one).
    pub cost: Option<f64>,
}

impl Energy {
    fn add(&mut self, other: &Energy) {
        self.kwh += other.kwh;
        self.metered_kwh += other.metered_kwh;
        self.estimated_kwh += other.estimated_kwh;
        self.unknown_lamp_hours += other.unknown_lamp_hours;
        self.daylight_kwh += other.daylight_kwh;
    }

    fn priced(mut self, tariff: Option<f64>) -> Energy {
        self.cost = tariff.map(|t| self.kwh * t);
        self
    }
}

/// A zone's night: from local noon to the next, named by the evening's date.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NightEnergy {
    /// The evening's local date, `YYYY-MM-DD`.
    pub night: String,
    /// Its energy.
    #[serde(flatten)]
    pub energy: Energy,
}

/// A zone's energy.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ZoneEnergy {
    /// The zone.
    pub zone: String,
    /// Over the period.
    pub total: Energy,
    /// Share burnt in daylight, 0–1 (`null` when nothing was burnt).
    pub daylight_share: Option<f64>,
    /// Whether any of it is estimated rather than metered.
    pub estimated: bool,
    /// Each night with lamps on.
    pub nights: Vec<NightEnergy>,
}

/// A site's lamps' energy over a period.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EnergyReport {
    /// The site.
    pub site: String,
    /// Its IANA time zone: nights are local.
    pub timezone: String,
    /// From, Unix ms.
    pub from: i64,
    /// To, Unix ms.
    pub to: i64,
    /// Price per kWh (`[energy] tariff_per_kwh`), if set.
    pub tariff_per_kwh: Option<f64>,
    /// Its currency.
    pub currency: String,
    /// The whole site over the period.
    pub total: Energy,
    /// Each zone.
    pub zones: Vec<ZoneEnergy>,
}

/// What one report of `node` says its lamp used: metered when the node meters and the
/// report has power, else estimated from the rated power through the luminance curve.
fn report_energy(node: &NodePlacement, report: &ReportRow, daylight: bool) -> Energy {
    let hours = f64::from(report.period_s) / 3600.0;
    let mut energy = Energy::default();
    // A meter counts what is drawn whatever the lamp says (a stuck relay burns with the
    // lamp "off"); an estimate only what a lit lamp would draw.
    let metered = report
        .power_w
        .filter(|w| node.metered && w.is_finite() && *w >= 0.0);
    if metered.is_none() && !report.lamp_on {
        return energy;
    }
    let estimated = node
        .rated_w
        .map(|rated| rated * f64::from(luminance(f32::from(report.lamp_level.min(100)))));
    match (metered, estimated) {
        (Some(watts), _) => energy.metered_kwh = watts * hours / 1000.0,
        (None, Some(watts)) => energy.estimated_kwh = watts * hours / 1000.0,
        (None, None) => energy.unknown_lamp_hours = hours,
    }
    energy.kwh = energy.metered_kwh + energy.estimated_kwh;
    if daylight {
        energy.daylight_kwh = energy.kwh;
    }
    energy
}

/// The local date, `YYYY-MM-DD`, of the evening of the night `ms` falls in.
fn night_of(tz: &TimeZone, ms: i64) -> String {
    let evening = tz.to_local(ms) - 12 * HOUR_MS;
    let (year, month, day) = civil_from_days(evening.div_euclid(DAY_MS));
    format!("{year:04}-{month:02}-{day:02}")
}

/// Per zone and night, what the lamps of `site` used in `[from, to)`.
fn energy_by_zone(
    store: &Store,
    site: &Site,
    zone: Option<&str>,
    (from, to): (i64, i64),
) -> Result<BTreeMap<String, BTreeMap<String, Energy>>, StorageError> {
    let tz = TimeZone::parse(&site.posix_tz).unwrap_or(TimeZone::UTC);
    let mut zones: BTreeMap<String, BTreeMap<String, Energy>> = (site.zones.iter())
        .filter(|z| zone.is_none_or(|id| id == z.id))
        .map(|z| (z.id.clone(), BTreeMap::new()))
        .collect();
    for node in &site.nodes {
        let Some(nights) = node.zone.as_ref().and_then(|z| zones.get_mut(z)) else {
            continue;
        };
        for report in store.reports_between(Selector::Node(&node.id), from, to)? {
            let daylight = altitude_deg(report.ts, site.lat, site.lon) > DAY_ABOVE_DEG;
            let energy = report_energy(node, &report, daylight);
            nights
                .entry(night_of(&tz, report.ts))
                .or_default()
                .add(&energy);
        }
    }
    Ok(zones)
}

/// The energy each zone's lamps used per night: metered, or estimated where a node
/// meters nothing (marked so); its cost at `[energy] tariff_per_kwh`; and the share
/// burnt while the sun was up. JSON, or CSV (one row per zone and night) with
/// `format=csv`.
#[utoipa::path(get, path = "/api/v1/energy", params(EnergyQuery), responses(
    (status = 200, body = EnergyReport), (status = 200, content_type = "text/csv", body = String),
    (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn energy(
    State(api): State<Shared>,
    caller: Caller,
    query: Result<Query<EnergyQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    caller.require(Permission::Energy)?;
    let Query(q) = query?;
    let site = api.site_with(&q.site, q.zone.as_deref())?;
    let csv = wants_csv(q.format.as_deref())?;
    let (from, to) = period(q.from, q.to, None, 400)?;
    let (shared, site_id, zone) = (api.clone(), site.id.clone(), q.zone.clone());
    let zones = api
        .read(move |store| {
            let site = shared.site(&site_id)?;
            Ok(energy_by_zone(store, site, zone.as_deref(), (from, to))?)
        })
        .await?;
    let tariff = api.energy.tariff_per_kwh;
    let mut total = Energy::default();
    let zones: Vec<ZoneEnergy> = zones
        .into_iter()
        .map(|(zone, nights)| {
            let mut sum = Energy::default();
            for energy in nights.values() {
                sum.add(energy);
            }
            total.add(&sum);
            ZoneEnergy {
                zone,
                daylight_share: (sum.kwh > 0.0).then(|| sum.daylight_kwh / sum.kwh),
                estimated: sum.estimated_kwh > 0.0 || sum.unknown_lamp_hours > 0.0,
                total: sum.priced(tariff),
                nights: nights
                    .into_iter()
                    .map(|(night, energy)| NightEnergy {
                        night,
                        energy: energy.priced(tariff),
                    })
                    .collect(),
            }
        })
        .collect();
    let report = EnergyReport {
        site: site.id.clone(),
        timezone: site.timezone.clone(),
        from,
        to,
        tariff_per_kwh: tariff,
        currency: api.energy.currency.clone(),
        total: total.priced(tariff),
        zones,
    };
    if !csv {
        return Ok(Json(report).into_response());
    }
    Ok(csv_response(energy_csv(&report)))
}

/// One row per zone and night.
fn energy_csv(report: &EnergyReport) -> String {
    let mut out = String::from(
        "zone,night,kwh,metered_kwh,estimated_kwh,unknown_lamp_hours,daylight_kwh,cost\n",
    );
    for zone in &report.zones {
        for night in &zone.nights {
            let e = &night.energy;
            let cost = e.cost.map_or(String::new(), |c| format!("{c:.2}"));
            out.push_str(&format!(
                "{},{},{:.3},{:.3},{:.3},{:.2},{:.3},{cost}\n",
                zone.zone,
                night.night,
                e.kwh,
                e.metered_kwh,
                e.estimated_kwh,
                e.unknown_lamp_hours,
                e.daylight_kwh
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(level: u8, power_w: Option<f64>) -> ReportRow {
        ReportRow {
            boot: 1,
            seq: 1,
            ts: 0,
            clock_ok: true,
            received: 0,
            period_s: 3600,
            lux: None,
            motion: 0,
            lamp_on: true,
            lamp_level: level,
            power_w,
            cfg: None,
            faults: 0,
            temp_c: None,
            zone: None,
        }
    }

    #[test]
    fn metered_where_metered_else_estimated_through_the_luminance_curve() {
        let mut node = Site::remiseparken().nodes[0].clone();
        node.metered = true;
        node.rated_w = Some(40.0);
        let metered = report_energy(&node, &report(100, Some(36.0)), false);
        assert_eq!((metered.metered_kwh, metered.estimated_kwh), (0.036, 0.0));
        // A metered node's report without power is estimated.
        let full = report_energy(&node, &report(100, None), false);
        assert_eq!((full.metered_kwh, full.estimated_kwh), (0.0, 0.04));
        node.metered = false;
        let half = report_energy(&node, &report(50, Some(99.0)), true);
        let expected = 0.04 * f64::from(luminance(50.0));
        assert!((half.estimated_kwh - expected).abs() < 1e-12, "{half:?}");
        assert!(
            half.estimated_kwh < 0.01,
            "half lightness is far less than half power"
        );
        assert_eq!(half.daylight_kwh, half.kwh);
        node.rated_w = None;
        let unknown = report_energy(&node, &report(50, None), false);
        assert_eq!((unknown.kwh, unknown.unknown_lamp_hours), (0.0, 1.0));
    }

    #[test]
    fn a_night_runs_from_local_noon_and_is_named_by_its_evening() {
        let copenhagen = TimeZone::parse("CET-1CEST,M3.5.0,M10.5.0/3").unwrap();
        // 2026-12-03 22:00 local (21:00 UTC) and 2026-12-04 06:00 local: the night of the 3rd.
        let evening = jiff::Timestamp::from_second(1_796_331_600)
            .unwrap()
            .as_millisecond();
        assert_eq!(night_of(&copenhagen, evening), "2026-12-03");
        assert_eq!(night_of(&copenhagen, evening + 8 * HOUR_MS), "2026-12-03");
        assert_eq!(night_of(&copenhagen, evening + 15 * HOUR_MS), "2026-12-04");
    }
}
