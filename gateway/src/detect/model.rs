//! What the site files say, in the form the detectors ask it: per node its place, circuit
//! and profile; per zone its members, class, dates and window grid.

use std::collections::HashMap;

use parklight_core::control::night_steps;
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
        self.window_end_near(unix_ms, window_ms, None)
    }

    /// [`Sky::window_end`], taking `known` (the end of a window) when `unix_ms` falls in
    /// it, as most reports do: no time zone rules to work out.
    pub fn window_end_near(&self, unix_ms: i64, window_ms: i64, known: Option<i64>) -> i64 {
        if let Some(end) = known.filter(|end| (end - window_ms + 1..=*end).contains(&unix_ms)) {
            return end;
        }
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
    /// Its lamp's rated power, watts, where the site file says.
    pub rated_w: Option<f64>,
    /// Report interval it should run, ms.
    pub interval_ms: i64,
    /// The profile it should run.
    pub profile: Profile,
    /// Its zone's index in the model.
    zone_index: Option<usize>,
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
    zones: Vec<ZoneModel>,
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
                model.zones.push(ZoneModel {
                    site: site.id.clone(),
                    id: zone.id.clone(),
                    requirement: zone.requirement.clone(),
                    window_ms: i64::from(zone.window_s) * 1000,
                    valid_from: zone.valid_from,
                    valid_to: zone.valid_to,
                    members,
                    sky,
                });
            }
            for node in &site.nodes {
                let desired = site.desired(node);
                let zone = node.zone.as_deref().and_then(|z| site.zone(z));
                let zone_index = zone.and_then(|z| {
                    model
                        .zones
                        .iter()
                        .position(|m| m.site == site.id && m.id == z.id)
                });
                model.nodes.insert(
                    node.id.clone(),
                    Place {
                        id: node.id.clone(),
                        site: site.id.clone(),
                        zone: zone.map(|z| z.id.clone()),
                        zone_index,
                        calibration: node.calibration,
                        night_circuit: node.circuit.powered == Powered::Night,
                        rated_w: node.rated_w,
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
        self.zones.iter().find(|z| z.site == site && z.id == zone)
    }

    /// The zone a node is in.
    pub fn zone_of(&self, place: &Place) -> Option<&ZoneModel> {
        place.zone_index.and_then(|i| self.zones.get(i))
    }
}

/// The class in force over one stretch of time (a night, or a day), for one profile:
/// what a zone asks from each step's start on. Derived data, rebuilt when a report falls
/// outside the stretch or runs another profile.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClassesInForce {
    profile: Profile,
    /// The stretch, Unix ms: from (inclusive) to (exclusive).
    span: (i64, i64),
    /// From each instant on: the average and minimum asked, lux.
    steps: Vec<(i64, f64, f64)>,
}

impl ClassesInForce {
    /// The classes of the stretch holding `t` for `profile`.
    fn of(zone: &Requirement, sky: &Sky, profile: &Profile, t: i64) -> ClassesInForce {
        let full = (zone.avg_lux, zone.min_lux);
        let Some(night) = solar::night_at(t, sky.lat, sky.lon) else {
            let sunset = solar::next_sunset(t, sky.lat, sky.lon);
            return ClassesInForce {
                profile: profile.clone(),
                span: (t, sunset),
                steps: vec![(t, full.0, full.1)],
            };
        };
        let mut steps = vec![(night.sunset, full.0, full.1)];
        for (at, step) in night_steps(profile, &sky.tz, night) {
            let asked = zone.in_force(step.class.as_deref());
            steps.push((at, asked.avg_lux, asked.min_lux));
        }
        ClassesInForce {
            profile: profile.clone(),
            span: (night.sunset, night.sunrise),
            steps,
        }
    }

    /// What is asked over `from` to `to` (within or just before the stretch; before it,
    /// by day, the zone's own class): the time-weighted average and the lowest minimum.
    fn over(&self, zone: &Requirement, from: i64, to: i64) -> (f64, f64) {
        let mut weighted = 0.0;
        let mut lowest = f64::MAX;
        let mut add = |start: i64, end: i64, avg: f64, min: f64| {
            if end > start {
                weighted += avg * (end - start) as f64;
                lowest = lowest.min(min);
            }
        };
        add(from, to.min(self.span.0), zone.avg_lux, zone.min_lux);
        for (i, &(start, avg, min)) in self.steps.iter().enumerate() {
            let end = self.steps.get(i + 1).map_or(i64::MAX, |next| next.0);
            add(from.max(start), to.min(end), avg, min);
        }
        if to <= from || lowest == f64::MAX {
            let last = self.steps.iter().rev().find(|s| s.0 <= to);
            return last.map_or((zone.avg_lux, zone.min_lux), |s| (s.1, s.2));
        }
        (weighted / (to - from) as f64, lowest)
    }
}

/// What a zone requires of a node's report covering `from` to `to` (Unix ms) while the
/// node runs `profile`: the average the class in force asks, weighted by time over the
/// span (a span that holds a profile step is held to each class for its share of the
/// span), and the lowest minimum asked within the span. Outside the night the zone's own
/// class is in force. `classes` keeps the stretch's classes between reports.
pub fn required_over(
    classes: &mut ClassesInForce,
    zone: &Requirement,
    place: &Place,
    profile: &Profile,
    from: i64,
    to: i64,
) -> (f64, f64) {
    let (start, end) = classes.span;
    if !(start..end).contains(&to) || classes.profile != *profile {
        *classes = ClassesInForce::of(zone, &place.sky, profile, to);
    }
    classes.over(zone, from, to)
}
