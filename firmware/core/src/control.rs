//! Lamp control: the night profile, motion boost, override and the photocell fallback.
//!
//! [`Controller`] is pure: samples, detections and the time go in, a lamp level comes out.

use parklight_protocol::Config;
use parklight_protocol::config::{At, MotionBoost, Profile, Step};

use crate::solar::{self, Night};
use crate::tz::{DAY_MS, TimeZone, TzError};

/// Photocell: ambient light below this for [`PHOTOCELL_ON_MS`] switches the lamp on.
pub const PHOTOCELL_ON_LUX: f64 = 20.0;
/// Photocell: ambient light above this for [`PHOTOCELL_OFF_MS`] switches the lamp off.
pub const PHOTOCELL_OFF_LUX: f64 = 40.0;
/// How long it must stay dark before the photocell switches on.
pub const PHOTOCELL_ON_MS: u64 = 60_000;
/// How long it must stay light before the photocell switches off.
pub const PHOTOCELL_OFF_MS: u64 = 600_000;
/// Time after a level change before the sensor reading includes the new lamp output.
const SETTLE_MS: u64 = 3_000;
/// Only level changes this large teach the lamp's contribution.
const LEARN_MIN_STEP: i32 = 20;
/// Only readings this dark teach it: in daylight the lamp is lost in the noise.
const LEARN_MAX_LUX: f64 = 200.0;
/// The most lux per percent of level that learning can find (the darkest readings over
/// the smallest step): a larger value restored from memory is corrupt.
const LEARN_MAX_LUX_PER_LEVEL: f64 = LEARN_MAX_LUX / LEARN_MIN_STEP as f64;

/// The time as the controller sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    /// Milliseconds since boot.
    pub up_ms: u64,
    /// Unix time in ms, when the node has a valid clock.
    pub unix_ms: Option<i64>,
}

/// A config the controller cannot run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigError {
    /// The location's TZ string is invalid.
    TimeZone(TzError),
}

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ConfigError::TimeZone(e) => e.fmt(f),
        }
    }
}

/// Why an override was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverrideError {
    /// The node has no valid clock to tell when `until` is.
    NoClock,
    /// `until` is not in the future.
    InThePast,
}

impl OverrideError {
    /// The reason as the answer's `detail` gives it.
    pub fn as_str(self) -> &'static str {
        match self {
            OverrideError::NoClock => "no valid clock to time the override",
            OverrideError::InThePast => "override until a time in the past",
        }
    }
}

/// Where the node is: sun position and local time.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Place {
    lat: f64,
    lon: f64,
    tz: TimeZone,
}

/// The photocell fallback: a switch with hysteresis in light and in time, reading the
/// ambient light with the node's own lamp subtracted.
#[derive(Debug, Clone, PartialEq)]
struct Photocell {
    on: bool,
    condition_since: Option<u64>,
    /// Lux the node's own lamp adds to its reading per percent of level, once learned.
    lamp_lux_per_level: Option<f64>,
}

impl Photocell {
    fn sample(&mut self, ambient: f64, up_ms: u64) {
        let wants_change = if self.on {
            ambient > PHOTOCELL_OFF_LUX
        } else {
            ambient < PHOTOCELL_ON_LUX
        };
        if !wants_change {
            self.condition_since = None;
            return;
        }
        let since = *self.condition_since.get_or_insert(up_ms);
        let needed = if self.on {
            PHOTOCELL_OFF_MS
        } else {
            PHOTOCELL_ON_MS
        };
        if up_ms.saturating_sub(since) >= needed {
            self.on = !self.on;
            self.condition_since = None;
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct LevelChange {
    from: u8,
    to: u8,
    at_ms: u64,
    lux_before: f64,
}

/// Decides the lamp level.
#[derive(Debug, Clone, PartialEq)]
pub struct Controller {
    place: Option<Place>,
    profile: Option<Profile>,
    boost: Option<MotionBoost>,
    boost_until_ms: Option<u64>,
    override_level: Option<(u8, u64)>,
    photocell: Photocell,
    level: u8,
    last_lux: Option<f64>,
    pending_change: Option<LevelChange>,
}

impl Default for Controller {
    fn default() -> Self {
        Controller::new()
    }
}

impl Controller {
    /// A controller at the safe boot level: lamp on until the photocell or the profile
    /// says otherwise.
    pub fn new() -> Self {
        Controller {
            place: None,
            profile: None,
            boost: None,
            boost_until_ms: None,
            override_level: None,
            photocell: Photocell {
                on: true,
                condition_since: None,
                lamp_lux_per_level: None,
            },
            level: 100,
            last_lux: None,
            pending_change: None,
        }
    }

    /// Checks that a config can run, without applying it.
    pub fn check(config: &Config) -> Result<(), ConfigError> {
        if let Some(location) = &config.location {
            TimeZone::parse(&location.tz).map_err(ConfigError::TimeZone)?;
        }
        Ok(())
    }

    /// Applies a config whole, or nothing when it cannot run.
    pub fn configure(&mut self, config: &Config) -> Result<(), ConfigError> {
        let place = match &config.location {
            Some(location) => Some(Place {
                lat: location.lat,
                lon: location.lon,
                tz: TimeZone::parse(&location.tz).map_err(ConfigError::TimeZone)?,
            }),
            None => None,
        };
        self.place = place;
        self.profile = config.profile.clone();
        self.boost = config.motion_boost;
        if self.boost.is_none() {
            self.boost_until_ms = None;
        }
        Ok(())
    }

    /// Holds the lamp at `level` until Unix ms `until`.
    pub fn override_until(
        &mut self,
        level: u8,
        until: u64,
        now: Clock,
    ) -> Result<(), OverrideError> {
        let unix = now.unix_ms.ok_or(OverrideError::NoClock)?;
        let remaining = i64::try_from(until)
            .unwrap_or(i64::MAX)
            .saturating_sub(unix);
        if remaining <= 0 {
            return Err(OverrideError::InThePast);
        }
        // Timed on the uptime clock, so a clock change cannot stretch or cut it.
        self.override_level = Some((level.min(100), now.up_ms.saturating_add(remaining as u64)));
        Ok(())
    }

    /// A motion detection.
    pub fn motion(&mut self, now: Clock) {
        if let Some(boost) = self.boost {
            self.boost_until_ms = Some(now.up_ms + u64::from(boost.hold_s) * 1000);
        }
    }

    /// A valid lux reading: feeds the photocell and learns the lamp's own contribution.
    pub fn lux(&mut self, lux: f64, now: Clock) {
        if let Some(change) = self.pending_change
            && now.up_ms.saturating_sub(change.at_ms) >= SETTLE_MS
        {
            self.pending_change = None;
            self.learn(change, lux);
        }
        let own = self.photocell.lamp_lux_per_level.unwrap_or(0.0) * f64::from(self.level);
        let ambient = lux - own;
        self.photocell.sample(ambient, now.up_ms);
        self.last_lux = Some(lux);
    }

    fn learn(&mut self, change: LevelChange, lux_after: f64) {
        let step = i32::from(change.to) - i32::from(change.from);
        if step.abs() < LEARN_MIN_STEP || change.lux_before.max(lux_after) > LEARN_MAX_LUX {
            return;
        }
        let observed = ((lux_after - change.lux_before) / f64::from(step)).max(0.0);
        let learned = &mut self.photocell.lamp_lux_per_level;
        *learned = Some(learned.map_or(observed, |before| (before + observed) / 2.0));
    }

    /// The lux the node's own lamp adds per percent of level, once learned or restored.
    pub fn lamp_lux_per_level(&self) -> Option<f64> {
        self.photocell.lamp_lux_per_level
    }

    /// Takes what an earlier run learned ([`Controller::lamp_lux_per_level`]), so a
    /// restart at night subtracts the lamp's light at once instead of relearning it
    /// (which switches the lamp off for a minute). A value learning cannot produce
    /// (corrupt memory) is ignored.
    pub fn restore_lamp_lux_per_level(&mut self, lux_per_level: f64) {
        if (0.0..=LEARN_MAX_LUX_PER_LEVEL).contains(&lux_per_level) {
            self.photocell.lamp_lux_per_level = Some(lux_per_level);
        }
    }

    /// Whether it is night for the lamp: by the sun where the node knows its place and the
    /// time, otherwise by the photocell.
    pub fn is_night(&self, now: Clock) -> bool {
        self.night(now).is_some() || (!self.knows_sun(now) && self.photocell.on)
    }

    fn knows_sun(&self, now: Clock) -> bool {
        self.place.is_some() && now.unix_ms.is_some()
    }

    fn night(&self, now: Clock) -> Option<Night> {
        let place = self.place?;
        solar::night_at(now.unix_ms?, place.lat, place.lon)
    }

    /// The level the lamp should have now; expires overrides and boosts.
    pub fn level(&mut self, now: Clock) -> u8 {
        if self
            .override_level
            .is_some_and(|(_, until)| now.up_ms >= until)
        {
            self.override_level = None;
        }
        if self.boost_until_ms.is_some_and(|until| now.up_ms >= until) {
            self.boost_until_ms = None;
        }
        let level = match self.override_level {
            Some((level, _)) => level,
            None => self.scheduled_level(now),
        };
        if level != self.level {
            self.pending_change = self.last_lux.map(|lux_before| LevelChange {
                from: self.level,
                to: level,
                at_ms: now.up_ms,
                lux_before,
            });
            self.level = level;
        }
        level
    }

    fn scheduled_level(&self, now: Clock) -> u8 {
        let base = match (self.night(now), self.place, now.unix_ms) {
            (Some(night), Some(place), Some(unix)) => match &self.profile {
                Some(profile) => profile_level(profile, &place.tz, night, unix),
                None => 100,
            },
            _ if self.knows_sun(now) => 0,
            _ if self.photocell.on => 100,
            _ => 0,
        };
        match (self.boost, self.boost_until_ms) {
            (Some(boost), Some(_)) if base > 0 || self.is_night(now) => base.max(boost.level),
            _ => base,
        }
    }
}

/// The first instant at or after `after` (Unix ms) when local time is `hour:minute`.
fn next_local_time(tz: &TimeZone, after: i64, hour: u8, minute: u8) -> i64 {
    let local_day = tz.to_local(after).div_euclid(DAY_MS);
    let time_of_day = (i64::from(hour) * 60 + i64::from(minute)) * 60_000;
    let today = tz.from_local(local_day * DAY_MS + time_of_day);
    if today >= after {
        today
    } else {
        tz.from_local((local_day + 1) * DAY_MS + time_of_day)
    }
}

/// The steps of `profile` that apply in `night`, each with the instant it starts, in
/// order. Steps apply in order, each at the first occurrence of its time after the last
/// step that falls in the night; a step whose time falls outside the night (before sunset
/// or after sunrise of a short summer night) is skipped alone, and the steps after it
/// still apply (PROTOCOL.md "Config").
pub fn night_steps<'p>(
    profile: &'p Profile,
    tz: &TimeZone,
    night: Night,
) -> impl Iterator<Item = (i64, &'p Step)> {
    let tz = *tz;
    let mut previous = night.sunset;
    profile.iter().filter_map(move |step| {
        let at = match step.at {
            At::Sunset => night.sunset,
            At::Local { hour, minute } => next_local_time(&tz, previous, hour, minute),
        };
        (at < night.sunrise).then(|| {
            previous = at;
            (at, step)
        })
    })
}

/// The profile's step in force at `unix_ms` within `night`; `None` before the first one
/// (the lamp at full, the zone's own class).
pub fn profile_step<'p>(
    profile: &'p Profile,
    tz: &TimeZone,
    night: Night,
    unix_ms: i64,
) -> Option<&'p Step> {
    night_steps(profile, tz, night)
        .take_while(|(at, _)| *at <= unix_ms)
        .last()
        .map(|(_, step)| step)
}

/// The profile's level at `unix_ms` within `night`: its step's, or full before the first.
pub fn profile_level(profile: &Profile, tz: &TimeZone, night: Night, unix_ms: i64) -> u8 {
    profile_step(profile, tz, night, unix_ms).map_or(100, |step| step.level)
}

#[cfg(test)]
mod tests {
    use super::*;
    use parklight_protocol::config::LightingClass;

    fn step(at: At, level: u8, class: Option<&str>) -> Step {
        Step {
            at,
            level,
            class: class.map(|c| LightingClass::try_from(c).unwrap()),
        }
    }

    #[test]
    fn the_step_in_force_carries_its_class_and_skipped_steps_never_apply() {
        let tz = TimeZone::parse("UTC0").unwrap();
        let hour = 3_600_000;
        // A night from 18:00 to 06:00 UTC on day 1000.
        let day = 1000 * DAY_MS;
        let night = Night {
            sunset: day + 18 * hour,
            sunrise: day + 30 * hour,
        };
        let local = |hour, minute| At::Local { hour, minute };
        let profile: Profile = [
            step(At::Sunset, 100, None),
            step(local(17, 0), 10, Some("P1")), // before sunset tonight: next at 17:00 is after sunrise
            step(local(0, 0), 60, Some("P5")),
            step(local(5, 0), 100, None),
        ]
        .into_iter()
        .collect();
        let steps: heapless::Vec<(i64, u8), 4> = night_steps(&profile, &tz, night)
            .map(|(at, s)| (at, s.level))
            .collect();
        assert_eq!(
            steps.as_slice(),
            [
                (night.sunset, 100),
                (day + 24 * hour, 60),
                (day + 29 * hour, 100)
            ]
        );
        let class_at = |t: i64| profile_step(&profile, &tz, night, t).and_then(|s| s.class.clone());
        assert_eq!(class_at(day + 24 * hour - 1), None);
        assert_eq!(class_at(day + 24 * hour).as_deref(), Some("P5"));
        assert_eq!(class_at(day + 29 * hour), None);
        assert_eq!(profile_step(&profile, &tz, night, night.sunset - 1), None);
        assert_eq!(profile_level(&profile, &tz, night, night.sunset - 1), 100);
    }
}
