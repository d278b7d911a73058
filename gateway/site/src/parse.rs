//! Reading a site file: every problem found, each with its line and feature index.

use std::collections::{HashMap, HashSet};

use parklight_protocol::config::MotionBoost;
use parklight_protocol::topic::is_identifier;
use parklight_protocol::{Config, Message};
use serde_json::{Map, Value};

use crate::geometry::{contains, overlap, ring_problem};
use crate::{
    Circuit, DEFAULT_CIRCUIT, DEFAULT_INTERVAL_S, DEFAULT_WINDOW_S, Lighting, NodePlacement,
    Powered, Problem, Requirement, Severity, Site, Zone, default_profile, p_class, posix_tz,
};

/// The site (when its frame could be read) and every problem found.
pub(crate) fn parse(text: &str) -> (Option<Site>, Vec<Problem>) {
    let mut checker = Checker {
        text,
        feature: None,
        problems: Vec::new(),
    };
    let site = match serde_json::from_str::<Value>(text) {
        Ok(doc) => checker.site(&doc),
        Err(e) => {
            checker.problems.push(Problem {
                severity: Severity::Error,
                line: Some(e.line()),
                feature: None,
                message: format!("not valid JSON: {e}"),
            });
            None
        }
    };
    (site, checker.problems)
}

struct Checker<'a> {
    text: &'a str,
    /// The feature being read, named by every problem found meanwhile.
    feature: Option<usize>,
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

    fn report(&mut self, severity: Severity, line: Option<usize>, message: String) {
        self.problems.push(Problem {
            severity,
            line,
            feature: self.feature,
            message,
        });
    }

    fn error(&mut self, line: Option<usize>, message: String) {
        self.report(Severity::Error, line, message);
    }

    fn warning(&mut self, line: Option<usize>, message: String) {
        self.report(Severity::Warning, line, message);
    }

    /// An error unless `id` can be a topic level.
    fn identifier(&mut self, what: &str, id: &str, line: Option<usize>) {
        if !is_identifier(id) {
            self.error(
                line,
                format!("{what} id {id:?} must match ^[a-z0-9][a-z0-9_-]{{0,62}}$"),
            );
        }
    }

    fn site(&mut self, doc: &Value) -> Option<Site> {
        if doc.get("type").and_then(Value::as_str) != Some("FeatureCollection") {
            self.error(Some(1), "a site file is a GeoJSON FeatureCollection".into());
            return None;
        }
        let Some(meta) = doc.get("site").and_then(Value::as_object) else {
            self.error(
                Some(1),
                "missing \"site\": {\"id\", \"name\", \"timezone\"}".into(),
            );
            return None;
        };
        let id = self.string(meta, "id", "site").unwrap_or_default();
        if !id.is_empty() {
            let line = self.line_of("id", &id);
            self.identifier("site", &id, line);
        }
        let name = self
            .string(meta, "name", "site")
            .unwrap_or_else(|| id.clone());
        let timezone = self.string(meta, "timezone", "site").unwrap_or_default();
        let posix = posix_tz(&timezone);
        if !timezone.is_empty() && (jiff::tz::TimeZone::get(&timezone).is_err() || posix.is_none())
        {
            let line = self.line_of("timezone", &timezone);
            self.error(
                line,
                format!("unknown time zone {timezone:?} (an IANA name such as Europe/Copenhagen)"),
            );
        }
        let lighting = self.lighting(meta, "site");
        let features = doc
            .get("features")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut zones = Vec::new();
        let mut nodes = Vec::new();
        for (index, feature) in features.iter().enumerate() {
            self.feature = Some(index);
            let props = feature.get("properties").and_then(Value::as_object);
            let geometry = feature.get("geometry").unwrap_or(&Value::Null);
            match (props, geometry.get("type").and_then(Value::as_str)) {
                (Some(p), Some("Polygon")) if p.contains_key("zone") => {
                    zones.extend(self.zone(p, geometry, index));
                }
                (Some(p), Some("Point")) if p.contains_key("node") => {
                    nodes.extend(self.node(p, geometry, index));
                }
                _ => self.error(
                    None,
                    "neither a zone (Polygon with \"zone\") nor a node (Point with \"node\")"
                        .into(),
                ),
            }
        }
        self.feature = None;
        self.unique(&zones, &nodes);
        self.place(&mut nodes, &zones);
        self.overlaps(&zones);
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
            self.error(
                None,
                format!("site position {lat}, {lon} is not a latitude and longitude"),
            );
        }
        let site = Site {
            id,
            name,
            timezone,
            posix_tz: posix.unwrap_or_default(),
            lat,
            lon,
            lighting,
            zones,
            nodes,
        };
        self.lighting_fits(&site);
        Some(site)
    }

    fn string(&mut self, object: &Map<String, Value>, key: &str, what: &str) -> Option<String> {
        match object.get(key) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                self.error(None, format!("{what}: \"{key}\" must be a string"));
                None
            }
            None => {
                self.error(None, format!("{what}: missing \"{key}\""));
                None
            }
        }
    }

    /// A number property, when present; an error when it is not a number in `range`.
    fn number(
        &mut self,
        object: &Map<String, Value>,
        key: &str,
        what: &str,
        range: std::ops::RangeInclusive<f64>,
    ) -> Option<f64> {
        let value = object.get(key)?;
        match value.as_f64() {
            Some(n) if range.contains(&n) => Some(n),
            _ => {
                self.error(
                    None,
                    format!(
                        "{what}: \"{key}\" must be a number from {} to {}, not {value}",
                        range.start(),
                        range.end()
                    ),
                );
                None
            }
        }
    }

    /// `profile`, `interval_s` and `motion_boost` of a site or zone, checked as a node
    /// would check them in a config (PROTOCOL.md "Config").
    fn lighting(&mut self, object: &Map<String, Value>, what: &str) -> Lighting {
        let mut message = Map::new();
        for key in ["profile", "interval_s", "motion_boost"] {
            if let Some(value) = object.get(key) {
                message.insert(key.to_owned(), value.clone());
            }
        }
        if message.is_empty() {
            return Lighting::default();
        }
        message.insert("v".into(), 1.into());
        message.insert("id".into(), "check".into());
        message.insert("cfg".into(), 1.into());
        let payload = Value::Object(message).to_string();
        match Config::decode(payload.as_bytes()) {
            Ok(config) => Lighting {
                profile: config.profile,
                interval_s: config.interval_s,
                motion_boost: config.motion_boost,
            },
            Err(e) => {
                self.error(
                    None,
                    format!(
                        "{what}: a node would reject this lighting: {e} (PROTOCOL.md \"Config\")"
                    ),
                );
                Lighting::default()
            }
        }
    }

    fn zone(&mut self, props: &Map<String, Value>, geometry: &Value, index: usize) -> Option<Zone> {
        let id = self.string(props, "zone", "zone")?;
        let line = self.line_of("zone", &id);
        let what = format!("zone {id}");
        self.identifier("zone", &id, line);
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
                Some(Requirement {
                    class,
                    avg_lux,
                    min_lux,
                })
            }
            (Some(c), (None, None)) => {
                let found = Requirement::of_class(c);
                if found.is_none() {
                    self.error(
                        line,
                        format!(
                            "{what}: unknown class {c:?} (P1 to P6, or give avg_lux and min_lux)"
                        ),
                    );
                }
                found
            }
            _ => {
                self.error(
                    line,
                    format!("{what}: give a class (P1 to P6) or avg_lux >= min_lux >= 0"),
                );
                None
            }
        };
        let ring: Option<Vec<[f64; 2]>> = geometry
            .get("coordinates")
            .and_then(|c| c.get(0))
            .and_then(Value::as_array)
            .map(|points| points.iter().map(position).collect::<Option<_>>())
            .unwrap_or_default();
        let ring = match ring {
            Some(ring) => match ring_problem(&ring) {
                None => Some(ring),
                Some(problem) => {
                    self.error(line, format!("{what}: bad polygon: {problem}"));
                    None
                }
            },
            None => {
                self.error(
                    line,
                    format!("{what}: bad polygon: its outer ring must be [lon, lat] positions"),
                );
                None
            }
        };
        let mut time = |key: &str| {
            let text = props.get(key)?;
            match text.as_str().map(str::parse::<jiff::Timestamp>) {
                Some(Ok(t)) => Some(t.as_millisecond()),
                _ => {
                    self.error(
                        line,
                        format!("{what}: {key} {text} is not an RFC 3339 time such as 2026-11-01T00:00:00+01:00"),
                    );
                    None
                }
            }
        };
        let (valid_from, valid_to) = (time("valid_from"), time("valid_to"));
        if let (Some(from), Some(to)) = (valid_from, valid_to)
            && to <= from
        {
            self.error(line, format!("{what}: valid_to is not after valid_from"));
        }
        let window_s = match self.number(props, "window_s", &what, 60.0..=3600.0) {
            Some(w) if w.fract() == 0.0 && 86_400 % (w as u32) == 0 => w as u32,
            Some(w) => {
                self.error(
                    line,
                    format!("{what}: window_s {w} must be whole seconds that divide a day (300, 600, 900, ...)"),
                );
                DEFAULT_WINDOW_S
            }
            None => DEFAULT_WINDOW_S,
        };
        let popularity = self
            .number(props, "popularity", &what, 0.0..=f64::MAX)
            .unwrap_or(1.0);
        let lighting = self.lighting(props, &what);
        Some(Zone {
            id,
            name: props.get("name").and_then(Value::as_str).map(str::to_owned),
            requirement: requirement?,
            ring: ring?,
            popularity,
            valid_from,
            valid_to,
            lighting,
            window_s,
            feature: index,
        })
    }

    fn node(
        &mut self,
        props: &Map<String, Value>,
        geometry: &Value,
        index: usize,
    ) -> Option<NodePlacement> {
        let id = self.string(props, "node", "node")?;
        let line = self.line_of("node", &id);
        let what = format!("node {id}");
        self.identifier("node", &id, line);
        let position = geometry.get("coordinates").and_then(position);
        let position = match position {
            Some(p @ [lon, lat])
                if (-180.0..=180.0).contains(&lon) && (-90.0..=90.0).contains(&lat) =>
            {
                p
            }
            _ => {
                self.error(line, format!("{what}: point needs [lon, lat] coordinates"));
                return None;
            }
        };
        let calibration = self
            .number(props, "calibration", &what, f64::MIN_POSITIVE..=1000.0)
            .unwrap_or(1.0);
        let rated_w = self.number(props, "rated_w", &what, f64::MIN_POSITIVE..=100_000.0);
        let metered = match props.get("metered") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                self.error(
                    line,
                    format!("{what}: metered must be true or false, not {other}"),
                );
                false
            }
        };
        let circuit = match props.get("circuit") {
            None => Circuit {
                id: DEFAULT_CIRCUIT.to_owned(),
                powered: Powered::Always,
            },
            Some(value) => self.circuit(value, line, &what)?,
        };
        Some(NodePlacement {
            id,
            zone: props.get("zone").and_then(Value::as_str).map(str::to_owned),
            position,
            calibration,
            metered,
            rated_w,
            circuit,
            feature: index,
        })
    }

    fn circuit(&mut self, value: &Value, line: Option<usize>, what: &str) -> Option<Circuit> {
        let id = value.get("id").and_then(Value::as_str);
        let powered = match value.get("powered").and_then(Value::as_str) {
            None | Some("always") => Some(Powered::Always),
            Some("night") => Some(Powered::Night),
            Some(_) => None,
        };
        match (id, powered) {
            (Some(id), Some(powered)) if is_identifier(id) => Some(Circuit {
                id: id.to_owned(),
                powered,
            }),
            _ => {
                self.error(
                    line,
                    format!("{what}: circuit must be {{\"id\": \"...\", \"powered\": \"always\" | \"night\"}}, not {value}"),
                );
                None
            }
        }
    }

    /// Zone ids, node ids and circuits are each defined once.
    fn unique(&mut self, zones: &[Zone], nodes: &[NodePlacement]) {
        let mut zone_ids = HashSet::new();
        for zone in zones {
            if !zone_ids.insert(&zone.id) {
                self.feature = Some(zone.feature);
                let line = self.line_of("zone", &zone.id);
                self.error(line, format!("zone {} is defined twice", zone.id));
            }
        }
        let mut node_ids = HashSet::new();
        let mut circuits: HashMap<&str, Powered> = HashMap::new();
        for node in nodes {
            self.feature = Some(node.feature);
            let line = self.line_of("node", &node.id);
            if !node_ids.insert(&node.id) {
                self.error(line, format!("node {} is defined twice", node.id));
            }
            let powered = *circuits
                .entry(&node.circuit.id)
                .or_insert(node.circuit.powered);
            if powered != node.circuit.powered {
                self.error(
                    line,
                    format!(
                        "node {}: circuit {} is powered {:?} on another pole",
                        node.id, node.circuit.id, powered
                    ),
                );
            }
        }
        self.feature = None;
    }

    /// Places nodes without a zone by containment, and checks that given zones exist.
    fn place(&mut self, nodes: &mut [NodePlacement], zones: &[Zone]) {
        for node in nodes.iter_mut() {
            self.feature = Some(node.feature);
            let line = self.line_of("node", &node.id);
            match &node.zone {
                Some(zone) if !zones.iter().any(|z| &z.id == zone) => {
                    self.error(
                        line,
                        format!(
                            "node {}: zone {zone:?} is not defined in this file",
                            node.id
                        ),
                    );
                }
                Some(_) => {}
                None => {
                    let around: Vec<&str> = zones
                        .iter()
                        .filter(|z| contains(&z.ring, node.position))
                        .map(|z| z.id.as_str())
                        .collect();
                    match around[..] {
                        [] => self.warning(
                            line,
                            format!("node {} is outside every zone: no zone is judged by its readings (give it a \"zone\")", node.id),
                        ),
                        [zone] => node.zone = Some(zone.to_owned()),
                        _ => self.error(
                            line,
                            format!(
                                "node {} lies inside zones {}: say which it lights with \"zone\"",
                                node.id,
                                around.join(" and ")
                            ),
                        ),
                    }
                }
            }
        }
        self.feature = None;
    }

    fn overlaps(&mut self, zones: &[Zone]) {
        for (i, a) in zones.iter().enumerate() {
            for b in &zones[i + 1..] {
                if overlap(&a.ring, &b.ring) {
                    self.feature = Some(b.feature);
                    let line = self.line_of("zone", &b.id);
                    self.warning(
                        line,
                        format!(
                            "zone {} overlaps zone {} (feature {}): a pole inside both needs a \"zone\"",
                            b.id, a.id, a.feature
                        ),
                    );
                }
            }
        }
        self.feature = None;
    }

    /// Each zone's lighting: declared classes exist, a lower class comes with a motion
    /// boost, and the zone's window holds whole report intervals.
    fn lighting_fits(&mut self, site: &Site) {
        for zone in &site.zones {
            self.feature = Some(zone.feature);
            let line = self.line_of("zone", &zone.id);
            let lighting = zone.lighting.or(&site.lighting);
            let profile = lighting.profile.unwrap_or_else(default_profile);
            for step in &profile {
                let Some(class) = step.class.as_deref() else {
                    continue;
                };
                let Some((avg, _)) = p_class(class) else {
                    self.error(
                        line,
                        format!(
                            "zone {}: a profile step declares unknown class {class:?} (P1 to P6)",
                            zone.id
                        ),
                    );
                    continue;
                };
                let boosts = |b: &MotionBoost| b.level > step.level && b.hold_s > 0;
                if avg < zone.requirement.avg_lux
                    && !lighting.motion_boost.as_ref().is_some_and(boosts)
                {
                    self.error(
                        line,
                        format!(
                            "zone {}: the step at level {} declares {class}, lower than the zone's {}, without a motion boost above that level (adaptive lighting must brighten for people)",
                            zone.id,
                            step.level,
                            zone.requirement.label()
                        ),
                    );
                }
            }
            let poles = site
                .nodes
                .iter()
                .filter(|n| n.zone.as_deref() == Some(zone.id.as_str()));
            let interval = u32::from(lighting.interval_s.unwrap_or(DEFAULT_INTERVAL_S));
            if poles.count() > 0 && zone.window_s % interval != 0 {
                self.error(
                    line,
                    format!(
                        "zone {}: its window of {} s is not a multiple of its nodes' report interval of {interval} s",
                        zone.id, zone.window_s
                    ),
                );
            }
        }
        self.feature = None;
    }
}

fn position(value: &Value) -> Option<[f64; 2]> {
    let pair = value.as_array()?;
    let [lon, lat] = [pair.first()?.as_f64()?, pair.get(1)?.as_f64()?];
    (lon.is_finite() && lat.is_finite()).then_some([lon, lat])
}
