//! Scenarios: whole stories played on any site file, deterministic by seed. Each brings
//! its own start (in the past, so the run ends by the present), speed and length, so
//! that `parklight sim --site FILE --scenario NAME` alone tells it in under three
//! minutes of wall time. The story is told at the first site; what liveness depends on
//! (lost connections, power cuts) is timed on the wall clock, so it holds at any speed.
//! Scenarios never publish a config or a command: what nodes run comes from the gateway.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use parklight_core::solar::{CIVIL_TWILIGHT_DEG, altitude_deg, next_sunrise, previous_sunset};
use parklight_site::{Powered, Site, Zone};
use rand::SeedableRng;
use rand::seq::IndexedRandom;
use rand_chacha::ChaCha8Rng;

use crate::SimError;
use crate::faults::{FaultKind, FaultPlan, Scripted, Timing};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;

/// A named story.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Sunset to sunrise with people passing, on whatever the site file says.
    HealthyNight,
    /// The busiest zone's lamps fail for an hour in the evening, then are repaired.
    LampFailureInBusyZone,
    /// One node loses its network for 60 s (wall clock), then comes back.
    NodeOffline,
    /// The busiest zone's light sensors stick before dusk.
    SensorStuck,
    /// The busiest zone's light sensors fail after dusk.
    SensorDead,
    /// One metered lamp's relay sticks closed before dawn: it burns by day.
    DayBurner,
    /// One lamp of the busiest zone fails and recovers every few minutes.
    FlappingLamp,
    /// Every node of the site loses power at once for 60 s (wall clock) at night.
    PowerCut,
    /// Through dusk and dawn, the site's `night` circuits switched on and off.
    NightCircuit,
}

impl Scenario {
    /// Every scenario with its name.
    pub const ALL: [(Scenario, &'static str); 9] = [
        (Scenario::HealthyNight, "healthy-night"),
        (Scenario::LampFailureInBusyZone, "lamp-failure-in-busy-zone"),
        (Scenario::NodeOffline, "node-offline"),
        (Scenario::SensorStuck, "sensor-stuck"),
        (Scenario::SensorDead, "sensor-dead"),
        (Scenario::DayBurner, "day-burner"),
        (Scenario::FlappingLamp, "flapping-lamp"),
        (Scenario::PowerCut, "power-cut"),
        (Scenario::NightCircuit, "night-circuit"),
    ];

    /// The scenario's name.
    pub fn name(self) -> &'static str {
        Scenario::ALL
            .iter()
            .find(|(s, _)| *s == self)
            .map_or("?", |(_, n)| n)
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scenario {
    type Err = String;

    fn from_str(name: &str) -> Result<Scenario, String> {
        Scenario::ALL
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(s, _)| *s)
            .ok_or_else(|| {
                let names: Vec<&str> = Scenario::ALL.iter().map(|(_, n)| *n).collect();
                format!("unknown scenario {name:?}: one of {}", names.join(", "))
            })
    }
}

/// How long a story runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Length {
    /// This much simulated time (its wall time follows the speed).
    Simulated(i64),
    /// This much wall-clock time.
    Wall(Duration),
}

/// A scenario told on a site: when, how fast, what breaks.
#[derive(Debug, Clone, PartialEq)]
pub struct Story {
    /// Simulated start (Unix ms); `None` to end at the present.
    pub start_ms: Option<i64>,
    /// Simulated seconds per real second.
    pub speed: f64,
    /// How long it runs.
    pub length: Length,
    /// What breaks, and when.
    pub faults: FaultPlan,
    /// The nodes the story breaks (empty for stories where nothing breaks).
    pub targets: Vec<String>,
    /// What happens, in a sentence, for the log.
    pub plot: String,
}

impl Story {
    fn at_night(speed: f64, start_ms: i64, end_ms: i64, plot: String) -> Story {
        Story {
            start_ms: Some(start_ms),
            speed,
            length: Length::Simulated(end_ms - start_ms),
            faults: FaultPlan::default(),
            targets: Vec::new(),
            plot,
        }
    }

    fn breaking(
        mut self,
        kind: FaultKind,
        timing: Timing,
        after: i64,
        lasting: Option<i64>,
    ) -> Story {
        let ms = |ms: i64| Duration::from_millis(ms.max(0) as u64);
        for target in &self.targets {
            self.faults.scripted.push(Scripted {
                kind,
                target: target.clone(),
                timing,
                after: ms(after),
                lasting: lasting.map(ms),
            });
        }
        self
    }
}

/// The most recent night at `site` whose `end(sunset, sunrise)` is at or before `now_ms`.
fn last_night(
    site: &Site,
    now_ms: i64,
    end: impl Fn(i64, i64) -> i64,
) -> Result<(i64, i64), SimError> {
    let mut before = now_ms;
    for _ in 0..400 {
        let sunset = previous_sunset(before, site.lat, site.lon).ok_or_else(|| {
            SimError::Options(format!(
                "the sun does not set at site {} around now: no night to play",
                site.id
            ))
        })?;
        let sunrise = next_sunrise(sunset, site.lat, site.lon);
        if sunrise - sunset > 20 * HOUR {
            return Err(SimError::Options(format!(
                "nights at site {} are longer than 20 hours now: give --start and --duration-s",
                site.id
            )));
        }
        if end(sunset, sunrise) <= now_ms {
            return Ok((sunset, sunrise));
        }
        before = sunset - 1;
    }
    Err(SimError::Options(format!(
        "no night at site {} in the past year",
        site.id
    )))
}

/// The first minute within 8 hours after `from` when the sun is `above` (or below, when
/// false) `altitude` at `site`.
fn sun_crosses(site: &Site, from: i64, altitude: f64, above: bool) -> Option<i64> {
    (0..8 * 60)
        .map(|minute| from + minute * MINUTE)
        .find(|&t| (altitude_deg(t, site.lat, site.lon) > altitude) == above)
}

/// The zone with the most foot traffic that has nodes, and its nodes.
fn busiest_zone(site: &Site) -> Result<(&Zone, Vec<String>), SimError> {
    let nodes_of = |zone: &Zone| -> Vec<String> {
        (site.nodes.iter())
            .filter(|n| n.zone.as_deref() == Some(zone.id.as_str()))
            .map(|n| n.id.clone())
            .collect()
    };
    site.zones
        .iter()
        .filter(|z| !nodes_of(z).is_empty())
        .fold(None::<&Zone>, |best, z| match best {
            Some(b) if b.popularity >= z.popularity => Some(b),
            _ => Some(z),
        })
        .map(|zone| (zone, nodes_of(zone)))
        .ok_or_else(|| SimError::Options(format!("site {} has no zone with nodes", site.id)))
}

/// One of `candidates`, chosen by `seed`.
fn pick(candidates: &[String], seed: u64, what: &str) -> Result<String, SimError> {
    candidates
        .choose(&mut ChaCha8Rng::seed_from_u64(seed))
        .cloned()
        .ok_or_else(|| SimError::Options(format!("no node {what}")))
}

impl Scenario {
    /// The story on `sites` (told at the first), ending by `now_ms`; `metered` says
    /// whether nodes the site file meters report power.
    pub fn story(
        self,
        sites: &[Site],
        now_ms: i64,
        seed: u64,
        metered: bool,
    ) -> Result<Story, SimError> {
        let site = sites
            .first()
            .ok_or_else(|| SimError::Options("a scenario needs a site".into()))?;
        let whole_night = |sunset: i64, sunrise: i64| (sunset - HOUR, sunrise + HOUR);
        let story = match self {
            Scenario::HealthyNight | Scenario::NightCircuit => {
                let night_circuits = (site.nodes.iter())
                    .filter(|n| n.circuit.powered == Powered::Night)
                    .count();
                if self == Scenario::NightCircuit && night_circuits == 0 {
                    return Err(SimError::Options(format!(
                        "night-circuit needs a node on a circuit powered at night \
                         (\"circuit\": {{\"id\": \"...\", \"powered\": \"night\"}}); site {} has none",
                        site.id
                    )));
                }
                let (sunset, sunrise) = last_night(site, now_ms, |_, r| r + HOUR)?;
                let (start, end) = whole_night(sunset, sunrise);
                let plot = format!(
                    "last night at {} from an hour before sunset to an hour after sunrise; \
                     {night_circuits} nodes on night circuits",
                    site.id
                );
                Story::at_night(1440.0, start, end, plot)
            }
            Scenario::LampFailureInBusyZone => {
                // In the evening, a quarter of an hour after civil dusk, whatever the season.
                let (zone, nodes) = busiest_zone(site)?;
                let broken_at = |sunset| {
                    sun_crosses(site, sunset, CIVIL_TWILIGHT_DEG, false).map(|d| d + 15 * MINUTE)
                };
                let (sunset, _) = last_night(site, now_ms, |s, _| {
                    broken_at(s).map_or(i64::MAX, |b| b + 2 * HOUR)
                })?;
                let broken = broken_at(sunset).unwrap_or(sunset);
                let start = sunset - HOUR;
                let plot = format!(
                    "the {} nodes of zone {} (the busiest) lose their lamps a quarter of an \
                     hour after civil dusk, repaired an hour later",
                    nodes.len(),
                    zone.id
                );
                let mut story = Story::at_night(1440.0, start, broken + 2 * HOUR, plot);
                story.targets = nodes;
                story.breaking(
                    FaultKind::Lamp,
                    Timing::Simulated,
                    broken - start,
                    Some(HOUR),
                )
            }
            Scenario::SensorStuck | Scenario::SensorDead => {
                let (zone, nodes) = busiest_zone(site)?;
                let (sunset, _) = last_night(site, now_ms, |s, _| s + 4 * HOUR)?;
                let start = sunset - HOUR;
                let (kind, after, lasting, what) = match self {
                    Scenario::SensorStuck => (
                        FaultKind::Stuck,
                        30 * MINUTE,
                        None,
                        "have their light sensors stuck half an hour before sunset",
                    ),
                    _ => (
                        FaultKind::Dead,
                        2 * HOUR,
                        None,
                        "have their light sensors fail an hour after sunset",
                    ),
                };
                let plot = format!(
                    "the {} nodes of zone {} (the busiest) {what}",
                    nodes.len(),
                    zone.id
                );
                let mut story = Story::at_night(1440.0, start, sunset + 4 * HOUR, plot);
                story.targets = nodes;
                story.breaking(kind, Timing::Simulated, after, lasting)
            }
            Scenario::FlappingLamp => {
                let (zone, nodes) = busiest_zone(site)?;
                let node = pick(&nodes, seed, "to flap")?;
                let (sunset, _) = last_night(site, now_ms, |s, _| s + 4 * HOUR)?;
                let start = sunset - HOUR;
                let plot = format!(
                    "the lamp of {node} in zone {} fails for 6 minutes every 12 from an \
                     hour to three hours after sunset",
                    zone.id
                );
                let mut story = Story::at_night(1440.0, start, sunset + 4 * HOUR, plot);
                story.targets = vec![node];
                (0..10).fold(story, |story, cycle| {
                    let after = 2 * HOUR + cycle * 12 * MINUTE;
                    story.breaking(FaultKind::Lamp, Timing::Simulated, after, Some(6 * MINUTE))
                })
            }
            Scenario::DayBurner => {
                let metered_nodes: Vec<String> = (site.nodes.iter())
                    .filter(|n| n.metered && metered)
                    .map(|n| n.id.clone())
                    .collect();
                let node = pick(
                    &metered_nodes,
                    seed,
                    "with a power meter: a lamp stuck on by day shows only in its power",
                )?;
                // Until an hour after the sun stands 5° up: a day-burner is judged above 3°.
                let high = |sunrise| sun_crosses(site, sunrise, 5.0, true);
                let (_, sunrise) =
                    last_night(site, now_ms, |_, r| high(r).map_or(i64::MAX, |h| h + HOUR))?;
                let end = high(sunrise).unwrap_or(sunrise) + HOUR;
                let start = sunrise - 2 * HOUR;
                let plot = format!(
                    "the relay of {node} sticks closed an hour and a half before sunrise: \
                     its lamp burns by day"
                );
                let mut story = Story::at_night(1440.0, start, end, plot);
                story.targets = vec![node];
                story.breaking(FaultKind::Relay, Timing::Simulated, 30 * MINUTE, None)
            }
            Scenario::NodeOffline => {
                let nodes: Vec<String> = site.nodes.iter().map(|n| n.id.clone()).collect();
                let node = pick(&nodes, seed, "to cut off")?;
                let story = Story {
                    start_ms: None,
                    speed: 1.0,
                    length: Length::Wall(Duration::from_secs(120)),
                    faults: FaultPlan::default(),
                    targets: vec![node.clone()],
                    plot: format!(
                        "{node} loses its network 30 s into the run for 60 s (wall clock), \
                         its socket left half-open"
                    ),
                };
                story.breaking(FaultKind::Offline, Timing::Wall, 30_000, Some(60_000))
            }
            Scenario::PowerCut => {
                let (sunset, _) = last_night(site, now_ms, |s, _| s + 4 * HOUR)?;
                let story = Story {
                    start_ms: Some(sunset + 2 * HOUR),
                    speed: 60.0,
                    length: Length::Wall(Duration::from_secs(120)),
                    faults: FaultPlan::default(),
                    targets: vec![site.id.clone()],
                    plot: format!(
                        "every node of {} loses power 20 s into the run for 60 s (wall clock), \
                         sockets left half-open",
                        site.id
                    ),
                };
                story.breaking(FaultKind::Power, Timing::Wall, 20_000, Some(60_000))
            }
        };
        Ok(story)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_796_355_780_000; // 2026-12-04 03:23 UTC
    const MIDSUMMER: i64 = 1_782_036_000_000; // 2026-06-21 10:00 UTC

    #[test]
    fn every_story_ends_by_now_within_three_minutes_in_winter_and_in_summer() {
        let site = Site::remiseparken();
        for (scenario, name, now) in Scenario::ALL
            .into_iter()
            .flat_map(|(s, n)| [(s, n, NOW), (s, n, MIDSUMMER)])
        {
            assert_eq!(name.parse::<Scenario>(), Ok(scenario));
            if scenario == Scenario::NightCircuit {
                continue; // Remiseparken has no night circuit
            }
            let story = scenario
                .story(std::slice::from_ref(&site), now, 5, true)
                .unwrap();
            let wall_s = match story.length {
                Length::Simulated(ms) => ms as f64 / 1000.0 / story.speed,
                Length::Wall(d) => d.as_secs_f64(),
            };
            assert!(wall_s <= 180.0, "{name}: {wall_s} s");
            let end = story.start_ms.unwrap_or(now) as f64 + wall_s * story.speed * 1000.0;
            assert!(end <= now as f64 || story.start_ms.is_none(), "{name}");
        }
        assert!(
            "storm"
                .parse::<Scenario>()
                .unwrap_err()
                .contains("healthy-night")
        );
    }

    #[test]
    fn stories_break_what_they_say_and_depend_only_on_the_seed() {
        let site = Site::remiseparken();
        let sites = std::slice::from_ref(&site);
        let lamps = Scenario::LampFailureInBusyZone
            .story(sites, NOW, 1, true)
            .unwrap();
        let skatepark: Vec<&str> = (site.nodes.iter())
            .filter(|n| n.zone.as_deref() == Some("skatepark"))
            .map(|n| n.id.as_str())
            .collect();
        assert_eq!(lamps.targets, skatepark);
        assert!(
            lamps
                .faults
                .scripted
                .iter()
                .all(|s| s.kind == FaultKind::Lamp && s.lasting == Some(Duration::from_secs(3600)))
        );

        let offline = |seed| Scenario::NodeOffline.story(sites, NOW, seed, true).unwrap();
        assert_eq!(offline(3), offline(3));
        assert_eq!(offline(3).faults.scripted[0].timing, Timing::Wall);
        let chosen: std::collections::BTreeSet<_> = (0..20)
            .map(|seed| offline(seed).targets[0].clone())
            .collect();
        assert!(chosen.len() > 3, "the seed chooses: {chosen:?}");

        assert!(Scenario::NightCircuit.story(sites, NOW, 1, true).is_err());
        assert!(
            Scenario::DayBurner.story(sites, NOW, 1, false).is_err(),
            "no meters"
        );
        let flapping = Scenario::FlappingLamp.story(sites, NOW, 1, true).unwrap();
        assert_eq!(flapping.faults.scripted.len(), 10);
    }
}
