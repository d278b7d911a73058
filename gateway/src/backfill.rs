//! Simulated history, fast (`parklight sim --backfill 365d`), for benchmarks and for
//! trying the dashboard on a year of data: the simulator's physics (sun, clouds, moon,
//! each lamp through the firmware's luminance curve, its power) and foot traffic make
//! each node's reports, lamps following the site's profile and motion boost, and the
//! gateway's own decode, validation and writer store them, without a broker, and closed
//! hours are folded into blocks as housekeeping would have. The detectors judge the
//! history when the gateway next starts; its housekeeping then drops the raw rows past
//! the retention that they have judged.

use std::path::PathBuf;

use parklight_core::control::profile_level;
use parklight_core::solar::{CIVIL_TWILIGHT_DEG, altitude_deg, night_at};
use parklight_core::tz::TimeZone;
use parklight_protocol::topic::{NodeTopic, node_topic};
use parklight_protocol::{Faults, Lamp, Lux, Message, Telemetry};
use parklight_sim::world::fnv64;
use parklight_sim::{people, physics};
use parklight_site::{Desired, NodePlacement, Site};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::ingest::{Incoming, Ingest};
use crate::store::{StorageError, Store};

/// Reports per transaction.
const GROUP: usize = 5000;

/// What to make.
#[derive(Debug, Clone)]
pub struct Backfill {
    /// The store's folder.
    pub store: PathBuf,
    /// Dead letters kept.
    pub dead_letters_max: usize,
    /// The sites.
    pub sites: Vec<Site>,
    /// Topic prefix.
    pub prefix: String,
    /// The span that ends at `end_ms`.
    pub span_ms: i64,
    /// Its end, Unix ms.
    pub end_ms: i64,
    /// Seed of every random choice.
    pub seed: u64,
    /// A zone whose lamps are replaced, and when.
    pub upgrade: Option<Upgrade>,
}

/// What the lamps of a zone deliver at full power until they are replaced, over what
/// its class asks: half. After dark, [`people::appeal`] of this many people walk there
/// than once it is lit to class, so the new lamps raise its after-dark detections by
/// `1 / people::appeal(OLD_LAMPS_LIGHT)`.
pub const OLD_LAMPS_LIGHT: f64 = 0.5;

/// New lamps for a zone, its old ones delivering [`OLD_LAMPS_LIGHT`] until then: a
/// lighting change with a known effect on foot traffic.
#[derive(Debug, Clone, PartialEq)]
pub struct Upgrade {
    /// The zone's site.
    pub site: String,
    /// The zone.
    pub zone: String,
    /// When the new lamps burn, Unix ms.
    pub at_ms: i64,
}

/// One simulated pole.
struct Pole<'s> {
    site: &'s Site,
    placement: &'s NodePlacement,
    desired: Desired,
    topic: String,
    rng: ChaCha8Rng,
    seq: u32,
    cfg: Option<u32>,
    full_lux: f64,
    required_lux: f64,
    zone: people::Zone,
    /// When its zone's old lamps are replaced by these.
    upgraded_at: Option<i64>,
    boost_until: i64,
}

impl Pole<'_> {
    /// Its report at `ts` under `sky` lux, people going out as the day's `weather` says.
    fn report(&mut self, ts: i64, sky: f64, tz: &TimeZone, weather: f64) -> Telemetry {
        let interval = self.desired.interval_s;
        let full_lux = match self.upgraded_at {
            Some(at) if ts < at => self.required_lux * OLD_LAMPS_LIGHT,
            _ => self.full_lux,
        };
        let local = jiff::Timestamp::from_millisecond(tz.to_local(ts))
            .map(|t| jiff::tz::Offset::UTC.to_datetime(t))
            .unwrap_or_default();
        let outside = people::Outside {
            dark: altitude_deg(ts, self.site.lat, self.site.lon) < CIVIL_TWILIGHT_DEG,
            weather,
        };
        // Every lamp of a zone is alike here: its own light is its zone's.
        let zone = people::Zone {
            light: full_lux / self.required_lux.max(1e-6),
            ..self.zone
        };
        let rate = people::rate_per_hour(people::Moment::of(local), outside, &zone);
        let motion = people::detections(rate, f64::from(interval), &mut self.rng);
        let night = night_at(ts, self.site.lat, self.site.lon);
        let mut level = night.map_or(0, |night| {
            profile_level(&self.desired.profile, tz, night, ts)
        });
        if let (Some(boost), Some(_)) = (self.desired.motion_boost, night) {
            if motion > 0 {
                self.boost_until = ts + i64::from(boost.hold_s) * 1000;
            }
            if ts < self.boost_until {
                level = level.max(boost.level);
            }
        }
        let lux = physics::sensor_reading(sky + physics::lamp_lux(full_lux, level), &mut self.rng)
            / self.placement.calibration.max(1e-6);
        self.seq += 1;
        Telemetry {
            boot: 1,
            seq: self.seq,
            ts: ts as u64,
            up_ms: None,
            period_s: interval,
            lux: Some(Lux {
                avg: lux,
                min: lux * 0.95,
                max: lux * 1.05,
            }),
            motion,
            lamp: Lamp {
                on: level > 0,
                level,
                power_w: self.placement.metered.then(|| {
                    physics::lamp_power(
                        level,
                        true,
                        self.placement.rated_w.unwrap_or(physics::LAMP_WATTS),
                    )
                }),
            },
            cfg: self.cfg,
            faults: Faults::default(),
            oldest: None,
            temp_c: None,
        }
    }
}

/// Makes and stores the reports of every node of `backfill.sites` over the span; how
/// many were stored.
pub fn run(backfill: &Backfill, progress: impl Fn(i64, u64)) -> Result<u64, StorageError> {
    let mut store = Store::open(&backfill.store, backfill.dead_letters_max)?;
    if store.last_report_id()? > 0 {
        // Its nodes would report boot 1 from seq 1 again: duplicates, nothing stored.
        return Err(StorageError::Corrupt(format!(
            "{} already holds reports: backfill into an empty store",
            backfill.store.display()
        )));
    }
    store.register_sites(&backfill.sites)?;
    let mut ingest = Ingest::new(&backfill.prefix, &backfill.sites, 60_000, &store)?;
    // Each node runs its desired config from the start, and says so in its reports: the
    // detectors then hold each step to the class it declares.
    let start_ms = backfill.end_ms - backfill.span_ms;
    crate::desired::plan(
        &mut store,
        &backfill.sites,
        &backfill.prefix,
        start_ms,
        false,
    )?;
    let versions = store.latest_configs()?;
    let mut poles = Vec::new();
    for site in &backfill.sites {
        for placement in &site.nodes {
            let zone = placement.zone.as_deref().and_then(|z| site.zone(z));
            let required_lux = zone.map_or(5.0, |z| z.requirement.avg_lux);
            let mut rng = ChaCha8Rng::seed_from_u64(backfill.seed ^ fnv64(&placement.id));
            let Ok(topic) = node_topic(
                &backfill.prefix,
                &site.id,
                &placement.id,
                NodeTopic::Telemetry,
            ) else {
                continue; // ids are checked with the site file: a topic always fits
            };
            poles.push(Pole {
                site,
                placement,
                desired: site.desired(placement),
                topic: topic.as_str().to_owned(),
                full_lux: required_lux * rng.random_range(1.4..2.4),
                required_lux,
                rng,
                seq: 0,
                cfg: versions.get(&placement.id).map(|(cfg, _, _)| *cfg),
                zone: people::Zone {
                    popularity: zone.map_or(1.0, |z| z.popularity),
                    poles: (site.nodes.iter())
                        .filter(|n| n.zone == placement.zone)
                        .count(),
                    light: 1.0,
                },
                upgraded_at: (backfill.upgrade.as_ref())
                    .filter(|u| u.site == site.id && zone.is_some_and(|z| z.id == u.zone))
                    .map(|u| u.at_ms),
                boost_until: 0,
            });
        }
    }
    let zones: Vec<TimeZone> = (backfill.sites.iter())
        .map(|s| TimeZone::parse(&s.posix_tz).unwrap_or(TimeZone::UTC))
        .collect();
    let mut clouds: Vec<(ChaCha8Rng, physics::Clouds)> = (backfill.sites.iter())
        .map(|s| {
            let mut rng = ChaCha8Rng::seed_from_u64(backfill.seed ^ fnv64(&s.id));
            let clouds = physics::Clouds::new(&mut rng);
            (rng, clouds)
        })
        .collect();
    // Every pole reports on its own interval: step by their greatest common divisor.
    let gcd = |a: u16, b: u16| -> u16 {
        let (mut a, mut b) = (a, b);
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    };
    let step = i64::from(
        poles
            .iter()
            .map(|p| p.desired.interval_s)
            .fold(0, gcd)
            .max(1),
    ) * 1000;
    let start = start_ms / step * step;
    let (mut stored, mut pending, mut news) = (0u64, Vec::with_capacity(GROUP), Vec::new());
    let mut buf = [0u8; 1024];
    let mut t = start;
    while t < backfill.end_ms {
        let skies: Vec<(f64, f64)> = (backfill.sites.iter().zip(&mut clouds).zip(&zones))
            .map(|((site, (rng, clouds)), tz)| {
                let cover = clouds.step(rng);
                let sky = physics::sky_lux(
                    altitude_deg(t, site.lat, site.lon),
                    cover,
                    physics::moon_lux(t),
                );
                let day = tz.to_local(t).div_euclid(86_400_000);
                (sky, people::weather(backfill.seed ^ fnv64(&site.id), day))
            })
            .collect();
        for pole in &mut poles {
            if t % (i64::from(pole.desired.interval_s) * 1000) != 0 {
                continue;
            }
            let index = (backfill.sites.iter())
                .position(|s| s.id == pole.site.id)
                .unwrap_or(0);
            let (sky, weather) = skies[index];
            let report = pole.report(t, sky, &zones[index], weather);
            let len = report.encode(&mut buf).unwrap_or(0);
            pending.push((pole.topic.clone(), buf[..len].to_vec(), t));
        }
        if pending.len() >= GROUP {
            stored += store_group(&mut store, &mut ingest, &pending, &mut news)?;
            pending.clear();
            news.clear();
            progress(t, stored);
        }
        t += step;
    }
    stored += store_group(&mut store, &mut ingest, &pending, &mut news)?;
    progress(t, stored);
    // Closed hours folded into blocks, as housekeeping would have; raw rows stay for the
    // detectors, and the gateway's housekeeping drops them once judged.
    store.compact(backfill.end_ms - crate::store::HOUR_MS, &|| false)?;
    Ok(stored)
}

/// Stores a group of `(topic, payload, made at)` in one transaction, as the writer does.
fn store_group(
    store: &mut Store,
    ingest: &mut Ingest,
    group: &[(String, Vec<u8>, i64)],
    news: &mut Vec<crate::ingest::AckNews>,
) -> Result<u64, StorageError> {
    let mut writer = store.write()?;
    let mut stored = 0;
    for (topic, payload, at) in group {
        let incoming = Incoming {
            topic,
            payload,
            received_ms: at + 500,
            retained: false,
        };
        if matches!(
            ingest.handle(&mut writer, &incoming, news)?,
            crate::ingest::Outcome::Stored { .. }
        ) {
            stored += 1;
        }
    }
    ingest.save(&mut writer)?;
    writer.commit()?;
    ingest.committed();
    Ok(stored)
}
