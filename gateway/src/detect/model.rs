//! What the site files say, in the form the detectors ask it: per node its place, circuit
//! and profile; per zone its members, class, dates and window grid.

use std::collections::HashMap;

use parklight_core::control::profile_step;
use parklight_core::solar;
use parklight_core::tz::TimeZone;
use parklight_protocol::config::Profile;
use parklight_site::{Powered, Requirement, Site};

/// Where the sun is judged, and the clock windows are aligned to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sky {
    /// Latitude, degrees.
    pub lat: f64,
    /// Longitude, degrees.
    pub lon: f64,
    /// The site's local time.
    pub tz: TimeZone,
}

impl Sky {
    /// The sun's altitude at `unix_ms`, degrees.
    pub fn altitude(&self, unix_ms: i64) -> f64 {
        solar::altitude_deg(unix_ms, self.lat, self.lon)
    }

    /// The end of the window of `window_ms` (aligned to local midnight) that holds
    /// `unix_ms`: a window holds what is after its start, up to and including its end.
    pub fn window_end(&self, unix_ms: i64, window_ms: i64) -> i64 {
        let local = self.tz.to_local(unix_ms);
        let end_local = (local + window_ms - 1).div_euclid(window_ms) * window_ms;
        unix_ms + (end_local - local)
    }
}

/// A node as the site files place it.
#[derive(Debug, Clone, PartialEq)]
pub struct Place {
    /// Node id.
    pub id: String,
    /// Its site.
    pub site: String,
    /// Its zone, if it is in one.
    pub zone: Option<String>,
    /// Reading to path illuminance.
    pub calibration: f64,
    /// On a circuit powered only at night.
    pub night_circuit: bool,
    /// Report interval it should run, ms.
    pub interval_ms: i64,
    /// The profile it should run.
    pub profile: Profile,
    /// The grid its own windows follow (its zone's), ms.
    pub window_ms: i64,
    /// The site's sky.
    pub sky: Sky,
}

/// A zone as the detectors judge it.
#[derive(Debug, Clone, PartialEq)]
pub struct ZoneModel {
    /// Its site.
    pub site: String,
    /// Zone id.
    pub id: String,
    /// Its full class.
    pub requirement: Requirement,
    /// Window length, ms.
    pub window_ms: i64,
    /// Judged from (temporary zones), Unix ms.
    pub valid_from: Option<i64>,
    /// Judged until (exclusive), Unix ms.
    pub valid_to: Option<i64>,
    /// Its nodes, in file order.
    pub members: Vec<String>,
    /// The site's sky.
    pub sky: Sky,
}

impl ZoneModel {
    /// Whether the zone exists over the whole window ending at `end`.
    pub fn is_valid(&self, start: i64, end: i64) -> bool {
        self.valid_from.is_none_or(|from| start >= from) && self.valid_to.is_none_or(|to| end <= to)
    }
}

/// Every site's nodes and zones.
#[derive(Debug, Clone, Default)]
pub struct Model {
    nodes: HashMap<String, Place>,
    zones: HashMap<(String, String), ZoneModel>,
}

impl Model {
    /// The model of `sites`.
    pub fn of(sites: &[Site]) -> Model {
        let mut model = Model::default();
        for site in sites {
            let sky = Sky {
                lat: site.lat,
                lon: site.lon,
                tz: TimeZone::parse(&site.posix_tz).unwrap_or(TimeZone::UTC),
            };
            for zone in &site.zones {
                let members = site
                    .nodes
                    .iter()
                    .filter(|n| n.zone.as_deref() == Some(zone.id.as_str()))
                    .map(|n| n.id.clone())
                    .collect();
                model.zones.insert(
                    (site.id.clone(), zone.id.clone()),
                    ZoneModel {
                        site: site.id.clone(),
                        id: zone.id.clone(),
                        requirement: zone.requirement.clone(),
                        window_ms: i64::from(zone.window_s) * 1000,
                        valid_from: zone.valid_from,
                        valid_to: zone.valid_to,
                        members,
                        sky,
                    },
                );
            }
            for node in &site.nodes {
                let desired = site.desired(node);
                let zone = node.zone.as_deref().and_then(|z| site.zone(z));
                model.nodes.insert(
                    node.id.clone(),
                    Place {
                        id: node.id.clone(),
                        site: site.id.clone(),
                        zone: zone.map(|z| z.id.clone()),
                        calibration: node.calibration,
                        night_circuit: node.circuit.powered == Powered::Night,
                        interval_ms: i64::from(desired.interval_s) * 1000,
                        profile: desired.profile,
                        window_ms: i64::from(
                            zone.map_or(parklight_site::DEFAULT_WINDOW_S, |z| z.window_s),
                        ) * 1000,
                        sky,
                    },
                );
            }
        }
        model
    }

    /// The node with id `node`, if a site places it.
    pub fn node(&self, node: &str) -> Option<&Place> {
        self.nodes.get(node)
    }

    /// Every placed node.
    pub fn places(&self) -> impl Iterator<Item = &Place> {
        self.nodes.values()
    }

    /// A zone of a site.
    pub fn zone(&self, site: &str, zone: &str) -> Option<&ZoneModel> {
        self.zones.get(&(site.to_owned(), zone.to_owned()))
    }
}

/// What a zone requires of a node's report covering `from` to `to` (Unix ms) while the
/// node runs `profile`: the
/// average the class in force asks, weighted by time over the span (a span that holds a
/// profile step is held to each class for its share of the span), and the lowest minimum
/// asked within the span. Outside the night the zone's own class is in force.
pub fn required_over(
    zone: &Requirement,
    place: &Place,
    profile: &Profile,
    from: i64,
    to: i64,
) -> (f64, f64) {
    let sky = &place.sky;
    let at = |t: i64| -> Requirement {
        match solar::night_at(t, sky.lat, sky.lon) {
            Some(night) => zone.in_force(
                profile_step(profile, &sky.tz, night, t).and_then(|step| step.class.as_deref()),
            ),
            None => zone.clone(),
        }
    };
    let (first, last) = (at(from), at(to));
    if first == last || to <= from {
        return (last.avg_lux, last.min_lux);
    }
    // The step changes once within a report's span at most: find it by halving.
    let (mut low, mut high) = (from, to);
    while high - low > 1000 {
        let mid = low + (high - low) / 2;
        if at(mid) == first {
            low = mid;
        } else {
            high = mid;
        }
    }
    let share = (high - from) as f64 / (to - from) as f64;
    (
        first.avg_lux * share + last.avg_lux * (1.0 - share),
        first.min_lux.min(last.min_lux),
    )
}
