//! Sites are GeoJSON (DESIGN.md "Sites are GeoJSON"): zones are polygons with a lighting
//! class, nodes are points. This module reads, checks and generates them.

use std::fmt;
use std::path::Path;

use parklight_protocol::topic::is_identifier;
use serde_json::{Map, Value};

/// The Remiseparken demo site, built in so the simulator works from any folder.
pub const REMISEPARKEN_GEOJSON: &str = include_str!("../../../deploy/sites/remiseparken.geojson");

/// Average and minimum maintained horizontal illuminance of an EN 13201-2 P-class, in lux.
pub fn p_class(class: &str) -> Option<(f64, f64)> {
    Some(match class {
        "P1" => (15.0, 3.0),
        "P2" => (10.0, 2.0),
        "P3" => (7.5, 1.5),
        "P4" => (5.0, 1.0),
        "P5" => (3.0, 0.6),
        "P6" => (2.0, 0.4),
        _ => return None,
    })
}

/// A park or area: its zones and nodes.
#[derive(Debug, Clone, PartialEq)]
pub struct Site {
    /// Site id (a topic level).
    pub id: String,
    /// Display name.
    pub name: String,
    /// IANA time zone, e.g. `Europe/Copenhagen`.
    pub timezone: String,
    /// Latitude of the site, degrees.
    pub lat: f64,
    /// Longitude of the site, degrees.
    pub lon: f64,
    /// Zones, in file order.
    pub zones: Vec<Zone>,
    /// Nodes, in file order.
    pub nodes: Vec<NodePlacement>,
}

/// The light a zone requires.
#[derive(Debug, Clone, PartialEq)]
pub struct Requirement {
    /// The class it comes from (`P4`), if it was given as one.
    pub class: Option<String>,
    /// Average maintained illuminance, lux.
    pub avg_lux: f64,
    /// Minimum maintained illuminance, lux.
    pub min_lux: f64,
}

/// An area with one lighting requirement.
#[derive(Debug, Clone, PartialEq)]
pub struct Zone {
    /// Zone id, unique within the site.
    pub id: String,
    /// Display name.
    pub name: Option<String>,
    /// Required light.
    pub requirement: Requirement,
    /// Outer ring of the polygon, `[lon, lat]` pairs.
    pub ring: Vec<[f64; 2]>,
    /// Relative foot traffic for the simulator (1.0 when not given).
    pub popularity: f64,
    /// Start of a temporary installation (RFC 3339), if any.
    pub valid_from: Option<String>,
    /// End of a temporary installation (RFC 3339), if any.
    pub valid_to: Option<String>,
}

/// A light controller on a pole.
#[derive(Debug, Clone, PartialEq)]
pub struct NodePlacement {
    /// Node id, unique across all sites.
    pub id: String,
    /// The zone it lights: given, or the zone whose polygon contains it.
    pub zone: Option<String>,
    /// `[lon, lat]`.
    pub position: [f64; 2],
    /// Factor from sensor reading to ground illuminance, if calibrated.
    pub calibration: Option<f64>,
}

/// One problem in a site file.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// Line in the file, when it can be placed.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

/// Every problem found in a site file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct SiteError {
    /// The file (or description of the source).
    pub origin: String,
    /// The problems, in file order where known.
    pub problems: Vec<Problem>,
}

impl fmt::Display for SiteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match problem.line {
                Some(line) => write!(f, "{}:{line}: {}", self.origin, problem.message)?,
                None => write!(f, "{}: {}", self.origin, problem.message)?,
            }
        }
        Ok(())
    }
}

impl Site {
    /// Reads and checks a site file.
    pub fn load(path: &Path) -> Result<Site, SiteError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| SiteError {
            origin: origin.clone(),
            problems: vec![Problem {
                line: None,
                message: format!("cannot read: {e}"),
            }],
        })?;
        Site::parse(&text, &origin)
    }

    /// The built-in Remiseparken site.
    pub fn remiseparken() -> Site {
        Site::parse(REMISEPARKEN_GEOJSON, "remiseparken.geojson (built in)")
            .expect("the built-in site is checked by tests")
    }

    /// Parses and checks site GeoJSON, collecting every problem.
    pub fn parse(text: &str, origin: &str) -> Result<Site, SiteError> {
        let mut checker = Checker {
            text,
            problems: Vec::new(),
        };
        let site = match serde_json::from_str::<Value>(text) {
            Ok(doc) => checker.site(&doc),
            Err(e) => {
                checker.problems.push(Problem {
                    line: Some(e.line()),
                    message: format!("not valid JSON: {e}"),
                });
                None
            }
        };
        match site {
            Some(site) if checker.problems.is_empty() => Ok(site),
            _ => Err(SiteError {
                origin: origin.to_owned(),
                problems: checker.problems,
            }),
        }
    }

    /// The zone with this id.
    pub fn zone(&self, id: &str) -> Option<&Zone> {
        self.zones.iter().find(|z| z.id == id)
    }

    /// A generated site of `nodes` poles along paths in a grid of zones, for load and scale
    /// tests. Zones of eight poles, cycling through classes P2 to P5.
    pub fn synthetic(nodes: usize) -> Site {
        const POLES_PER_ZONE: usize = 8;
        const CLASSES: [&str; 4] = ["P2", "P3", "P4", "P5"];
        let (lat, lon) = (55.0, 12.0);
        let zone_count = nodes.div_ceil(POLES_PER_ZONE).max(1);
        let per_row = (zone_count as f64).sqrt().ceil() as usize;
        let cell = 0.002; // about 200 m north-south
        let zones = (0..zone_count)
            .map(|i| {
                let (x, y) = ((i % per_row) as f64 * cell, (i / per_row) as f64 * cell);
                let class = CLASSES[i % CLASSES.len()];
                let (avg_lux, min_lux) = p_class(class).unwrap_or((5.0, 1.0));
                Zone {
                    id: format!("zone-{i:04}"),
                    name: None,
                    requirement: Requirement {
                        class: Some(class.to_owned()),
                        avg_lux,
                        min_lux,
                    },
                    ring: vec![
                        [lon + x, lat + y],
                        [lon + x + cell, lat + y],
                        [lon + x + cell, lat + y + cell],
                        [lon + x, lat + y + cell],
                        [lon + x, lat + y],
                    ],
                    popularity: 0.5 + (i % 3) as f64 * 0.5,
                    valid_from: None,
                    valid_to: None,
                }
            })
            .collect::<Vec<_>>();
        let nodes = (0..nodes)
            .map(|i| {
                let zone = &zones[i / POLES_PER_ZONE];
                let along = (i % POLES_PER_ZONE) as f64 / POLES_PER_ZONE as f64;
                NodePlacement {
                    id: format!("node-{i:05}"),
                    zone: Some(zone.id.clone()),
                    position: [zone.ring[0][0] + cell / 2.0, zone.ring[0][1] + cell * along],
                    calibration: None,
                }
            })
            .collect();
        Site {
            id: "synthetic".to_owned(),
            name: "Synthetic park".to_owned(),
            timezone: "Europe/Copenhagen".to_owned(),
            lat,
            lon,
            zones,
            nodes,
        }
    }
}

/// Ray casting: true when `point` lies inside `ring`.
pub fn contains(ring: &[[f64; 2]], point: [f64; 2]) -> bool {
    let [x, y] = point;
    let mut inside = false;
    for pair in ring.windows(2) {
        let ([x1, y1], [x2, y2]) = (pair[0], pair[1]);
        if (y1 > y) != (y2 > y) && x < (x2 - x1) * (y - y1) / (y2 - y1) + x1 {
            inside = !inside;
        }
    }
    inside
}

/// Distance in metres between two `[lon, lat]` points (equirectangular; fine within a park).
pub fn distance_m(a: [f64; 2], b: [f64; 2]) -> f64 {
    let mean_lat = ((a[1] + b[1]) / 2.0).to_radians();
    let dx = (a[0] - b[0]).to_radians() * mean_lat.cos();
    let dy = (a[1] - b[1]).to_radians();
    6_371_000.0 * (dx * dx + dy * dy).sqrt()
}

struct Checker<'a> {
    text: &'a str,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    /// The line where `"key": "value"` first appears, to place a problem.
    fn line_of(&self, key: &str, value: &str) -> Option<usize> {
        let mut offset = 0;
        while let Some(found) = self.text[offset..].find(&format!("\"{value}\"")) {
            let at = offset + found;
            let before = self.text[..at].trim_end();
            if before.ends_with(':')
                && before[..before.len() - 1]
                    .trim_end()
                    .ends_with(&format!("\"{key}\""))
            {
                return Some(self.text[..at].lines().count().max(1));
            }
            offset = at + 1;
        }
        None
    }

    fn problem(&mut self, line: Option<usize>, message: String) {
        self.problems.push(Problem { line, message });
    }

    fn site(&mut self, doc: &Value) -> Option<Site> {
        if doc.get("type").and_then(Value::as_str) != Some("FeatureCollection") {
            self.problem(Some(1), "a site file is a GeoJSON FeatureCollection".into());
            return None;
        }
        let Some(meta) = doc.get("site").and_then(Value::as_object) else {
            self.problem(
                Some(1),
                "missing \"site\": {\"id\", \"name\", \"timezone\"}".into(),
            );
            return None;
        };
        let id = self.string(meta, "id", "site").unwrap_or_default();
        if !id.is_empty() && !is_identifier(&id) {
            let line = self.line_of("id", &id);
            self.problem(
                line,
                format!("site id {id:?} must match ^[a-z0-9][a-z0-9_-]{{0,62}}$"),
            );
        }
        let name = self
            .string(meta, "name", "site")
            .unwrap_or_else(|| id.clone());
        let timezone = self.string(meta, "timezone", "site").unwrap_or_default();
        if !timezone.is_empty() && jiff::tz::TimeZone::get(&timezone).is_err() {
            let line = self.line_of("timezone", &timezone);
            self.problem(
                line,
                format!("unknown time zone {timezone:?} (an IANA name such as Europe/Copenhagen)"),
            );
        }
        let features = doc
            .get("features")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut zones = Vec::new();
        let mut nodes = Vec::new();
        for (index, feature) in features.iter().enumerate() {
            let props = feature.get("properties").and_then(Value::as_object);
            let geometry = feature.get("geometry");
            match (props, geometry.and_then(|g| g.get("type")).and_then(Value::as_str)) {
                (Some(p), Some("Polygon")) if p.contains_key("zone") => {
                    if let Some(zone) = self.zone(p, geometry.unwrap_or(&Value::Null)) {
                        zones.push(zone);
                    }
                }
                (Some(p), Some("Point")) if p.contains_key("node") => {
                    if let Some(node) = self.node(p, geometry.unwrap_or(&Value::Null)) {
                        nodes.push(node);
                    }
                }
                _ => self.problem(None, format!("feature {index}: neither a zone (Polygon with \"zone\") nor a node (Point with \"node\")")),
            }
        }
        self.resolve(&mut nodes, &zones);
        let all_points: Vec<[f64; 2]> = zones
            .iter()
            .flat_map(|z| z.ring.iter().copied())
            .chain(nodes.iter().map(|n| n.position))
            .collect();
        let centroid = |axis: usize| {
            all_points.iter().map(|p| p[axis]).sum::<f64>() / all_points.len().max(1) as f64
        };
        let lat = meta
            .get("lat")
            .and_then(Value::as_f64)
            .unwrap_or_else(|| centroid(1));
        let lon = meta
            .get("lon")
            .and_then(Value::as_f64)
            .unwrap_or_else(|| centroid(0));
        if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
            self.problem(
                None,
                format!("site position {lat}, {lon} is not a latitude and longitude"),
            );
        }
        Some(Site {
            id,
            name,
            timezone,
            lat,
            lon,
            zones,
            nodes,
        })
    }

    fn string(&mut self, object: &Map<String, Value>, key: &str, what: &str) -> Option<String> {
        match object.get(key) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                self.problem(None, format!("{what}: \"{key}\" must be a string"));
                None
            }
            None => {
                self.problem(None, format!("{what}: missing \"{key}\""));
                None
            }
        }
    }

    fn zone(&mut self, props: &Map<String, Value>, geometry: &Value) -> Option<Zone> {
        let id = self.string(props, "zone", "zone")?;
        let line = self.line_of("zone", &id);
        if !is_identifier(&id) {
            self.problem(
                line,
                format!("zone id {id:?} must match ^[a-z0-9][a-z0-9_-]{{0,62}}$"),
            );
        }
        let class = props
            .get("class")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let explicit = (
            props.get("avg_lux").and_then(Value::as_f64),
            props.get("min_lux").and_then(Value::as_f64),
        );
        let requirement = match (&class, explicit) {
            (_, (Some(avg_lux), Some(min_lux))) if avg_lux >= min_lux && min_lux >= 0.0 => {
                Requirement {
                    class,
                    avg_lux,
                    min_lux,
                }
            }
            (Some(c), (None, None)) => {
                match p_class(c) {
                    Some((avg_lux, min_lux)) => Requirement {
                        class,
                        avg_lux,
                        min_lux,
                    },
                    None => {
                        self.problem(line, format!("zone {id}: unknown class {c:?} (P1 to P6, or give avg_lux and min_lux)"));
                        return None;
                    }
                }
            }
            _ => {
                self.problem(
                    line,
                    format!("zone {id}: give a class (P1 to P6) or avg_lux >= min_lux >= 0"),
                );
                return None;
            }
        };
        let ring: Option<Vec<[f64; 2]>> = geometry
            .get("coordinates")
            .and_then(|c| c.get(0))
            .and_then(Value::as_array)
            .map(|points| points.iter().filter_map(position).collect());
        let ring = match ring {
            Some(ring) if ring.len() >= 4 => ring,
            _ => {
                self.problem(
                    line,
                    format!("zone {id}: polygon needs a ring of at least 4 [lon, lat] positions"),
                );
                return None;
            }
        };
        let time = |key: &str| props.get(key).and_then(Value::as_str).map(str::to_owned);
        let (valid_from, valid_to) = (time("valid_from"), time("valid_to"));
        for t in [&valid_from, &valid_to].into_iter().flatten() {
            if t.parse::<jiff::Timestamp>().is_err() {
                self.problem(line, format!("zone {id}: {t:?} is not an RFC 3339 time"));
            }
        }
        Some(Zone {
            id,
            name: props.get("name").and_then(Value::as_str).map(str::to_owned),
            requirement,
            ring,
            popularity: props
                .get("popularity")
                .and_then(Value::as_f64)
                .unwrap_or(1.0)
                .max(0.0),
            valid_from,
            valid_to,
        })
    }

    fn node(&mut self, props: &Map<String, Value>, geometry: &Value) -> Option<NodePlacement> {
        let id = self.string(props, "node", "node")?;
        let line = self.line_of("node", &id);
        if !is_identifier(&id) {
            self.problem(
                line,
                format!("node id {id:?} must match ^[a-z0-9][a-z0-9_-]{{0,62}}$"),
            );
        }
        let Some(position) = geometry.get("coordinates").and_then(position) else {
            self.problem(
                line,
                format!("node {id}: point needs [lon, lat] coordinates"),
            );
            return None;
        };
        Some(NodePlacement {
            id,
            zone: props.get("zone").and_then(Value::as_str).map(str::to_owned),
            position,
            calibration: props.get("calibration").and_then(Value::as_f64),
        })
    }

    /// Places nodes without a zone by containment, and checks ids are unique and zones exist.
    fn resolve(&mut self, nodes: &mut [NodePlacement], zones: &[Zone]) {
        let mut seen = std::collections::HashSet::new();
        for zone in zones {
            if !seen.insert(format!("zone {}", zone.id)) {
                let line = self.line_of("zone", &zone.id);
                self.problem(line, format!("zone {} is defined twice", zone.id));
            }
        }
        for node in nodes.iter_mut() {
            let line = self.line_of("node", &node.id);
            if !seen.insert(format!("node {}", node.id)) {
                self.problem(line, format!("node {} is defined twice", node.id));
            }
            match &node.zone {
                Some(zone) if !zones.iter().any(|z| &z.id == zone) => {
                    self.problem(
                        line,
                        format!(
                            "node {}: zone {zone:?} is not defined in this file",
                            node.id
                        ),
                    );
                }
                Some(_) => {}
                None => {
                    node.zone = zones
                        .iter()
                        .find(|z| contains(&z.ring, node.position))
                        .map(|z| z.id.clone())
                }
            }
        }
    }
}

fn position(value: &Value) -> Option<[f64; 2]> {
    let pair = value.as_array()?;
    Some([pair.first()?.as_f64()?, pair.get(1)?.as_f64()?])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_site_is_remiseparken() {
        let site = Site::parse(REMISEPARKEN_GEOJSON, "built in").unwrap();
        assert_eq!(site.id, "remiseparken");
        assert_eq!(site.nodes.len(), 40);
        assert!(
            site.nodes.iter().all(|n| n.zone.is_some()),
            "every pole is in a zone"
        );
        assert_eq!(site.zone("skatepark").unwrap().requirement.avg_lux, 10.0);
        let lawn_poles = site
            .nodes
            .iter()
            .filter(|n| n.zone.as_deref() == Some("lawn"))
            .count();
        assert_eq!(lawn_poles, 2, "placed by containment");
    }

    #[test]
    fn every_problem_is_reported_with_its_line() {
        let text = r#"{"type":"FeatureCollection",
"site":{"id":"Bad Park","name":"x","timezone":"Mars/Olympus"},
"features":[
 {"type":"Feature","properties":{"zone":"a","class":"P9"},"geometry":{"type":"Polygon","coordinates":[[[0,0],[1,0],[1,1],[0,0]]]}},
 {"type":"Feature","properties":{"node":"n1","zone":"nowhere"},"geometry":{"type":"Point","coordinates":[0.5,0.5]}},
 {"type":"Feature","properties":{"node":"n1"},"geometry":{"type":"Point","coordinates":[0.5,0.5]}}
]}"#;
        let err = Site::parse(text, "bad.geojson").unwrap_err();
        let report = err.to_string();
        for expected in [
            "bad.geojson:2: site id \"Bad Park\"",
            "bad.geojson:2: unknown time zone \"Mars/Olympus\"",
            "bad.geojson:4: zone a: unknown class \"P9\"",
            "bad.geojson:5: node n1: zone \"nowhere\" is not defined",
            "node n1 is defined twice",
        ] {
            assert!(
                report.contains(expected),
                "missing {expected:?} in:\n{report}"
            );
        }
        let syntax = Site::parse("{\n\"type\": \n}", "x.geojson").unwrap_err();
        assert_eq!(syntax.problems[0].line, Some(3));
    }

    #[test]
    fn containment_and_distance() {
        let square = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.0, 0.0]];
        assert!(contains(&square, [0.5, 0.5]));
        assert!(!contains(&square, [1.5, 0.5]));
        let d = distance_m([12.594, 55.660], [12.594, 55.661]);
        assert!((d - 111.2).abs() < 0.5, "{d}");
    }

    #[test]
    fn synthetic_sites_have_the_asked_size() {
        let site = Site::synthetic(100);
        assert_eq!(site.nodes.len(), 100);
        assert_eq!(site.zones.len(), 13);
        assert!(
            site.nodes
                .iter()
                .all(|n| site.zone(n.zone.as_deref().unwrap()).is_some())
        );
    }
}
