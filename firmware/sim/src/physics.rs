//! Light in the park: sun, twilight, moon and clouds, the lamps themselves, the sensor.

use rand::{Rng, RngExt};
use rand_distr::{Distribution, StandardNormal};

/// Illuminance on the ground from the sky, in lux, for a sun at `altitude_deg`,
/// `cloud` cover 0 (clear) to 1 (overcast) and `moon` the moonlight at night in lux.
///
/// Daylight is tens of thousands of lux; civil twilight falls from about 400 lx at sunset
/// to 3 lx at -6°; nautical twilight to 0.01 lx at -12°; then moonlight.
pub fn sky_lux(altitude_deg: f64, cloud: f64, moon: f64) -> f64 {
    let daylight = if altitude_deg >= 0.0 {
        400.0 + 100_000.0 * altitude_deg.to_radians().sin()
    } else if altitude_deg >= -6.0 {
        400.0 * (3.0f64 / 400.0).powf(-altitude_deg / 6.0)
    } else if altitude_deg >= -12.0 {
        3.0 * (0.01f64 / 3.0).powf((-altitude_deg - 6.0) / 6.0)
    } else {
        0.0
    };
    let night = 0.003 + moon;
    (daylight * (1.0 - 0.75 * cloud)).max(night * (1.0 - 0.6 * cloud))
}

/// Moonlight in lux at `unix_ms`: up to 0.25 lx at full moon, following the synodic month
/// and rising and setting about 50 minutes later each day.
pub fn moon_lux(unix_ms: i64) -> f64 {
    const SYNODIC_DAYS: f64 = 29.530_588;
    const NEW_MOON_2000_MS: f64 = 947_182_440_000.0; // 2000-01-06 18:14 UTC
    let days = (unix_ms as f64 - NEW_MOON_2000_MS) / 86_400_000.0;
    let phase = (days / SYNODIC_DAYS).rem_euclid(1.0) * std::f64::consts::TAU;
    let brightness = (1.0 - phase.cos()) / 2.0;
    let lunar_day_hours = 24.84;
    let up = ((days * 24.0 / lunar_day_hours) * std::f64::consts::TAU)
        .sin()
        .max(0.0);
    0.25 * brightness * up
}

/// Cloud cover as a bounded random walk, one step per simulation step.
#[derive(Debug, Clone)]
pub struct Clouds {
    cover: f64,
}

impl Clouds {
    /// Starts at a random cover.
    pub fn new(rng: &mut impl Rng) -> Self {
        Clouds {
            cover: rng.random_range(0.0..1.0),
        }
    }

    /// Moves a little and returns the cover, 0 to 1.
    pub fn step(&mut self, rng: &mut impl Rng) -> f64 {
        let drift: f64 = StandardNormal.sample(rng);
        self.cover = (self.cover + 0.02 * drift).clamp(0.0, 1.0);
        self.cover
    }
}

/// A lux sensor's reading of `true_lux`: 2 % gain noise and a small offset noise.
pub fn sensor_reading(true_lux: f64, rng: &mut impl Rng) -> f64 {
    let gain: f64 = StandardNormal.sample(rng);
    let offset: f64 = StandardNormal.sample(rng);
    (true_lux * (1.0 + 0.02 * gain) + 0.002 * offset).max(0.0)
}

/// Light a lamp at `level` percent puts on its own sensor, given what it gives at full.
pub fn lamp_lux(full_lux: f64, level: u8) -> f64 {
    full_lux * f64::from(parklight_core::lamp::luminance(f32::from(level)))
}

/// Neighbours spill light on each other: this share of a neighbour's own-sensor light at
/// zero distance, falling to nothing at [`SPILL_RANGE_M`].
pub const SPILL_SHARE: f64 = 0.15;
/// Beyond this distance a neighbour's lamp adds nothing.
pub const SPILL_RANGE_M: f64 = 35.0;

/// Rated power of a simulated lamp at full level, in watts, where the site file gives none.
pub const LAMP_WATTS: f64 = 40.0;

/// What the power meter of a lamp rated `rated_w` reads: its driver's standby draw, plus
/// the LEDs if it works.
pub fn lamp_power(level: u8, working: bool, rated_w: f64) -> f64 {
    let standby = 0.2;
    if working {
        standby + rated_w * f64::from(parklight_core::lamp::luminance(f32::from(level)))
    } else {
        standby
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sky_light_spans_day_to_night_continuously() {
        assert!(sky_lux(40.0, 0.0, 0.0) > 50_000.0);
        assert!((sky_lux(0.0, 0.0, 0.0) - 400.0).abs() < 1.0);
        assert!((sky_lux(-6.0, 0.0, 0.0) - 3.0).abs() < 0.01);
        assert!(sky_lux(-18.0, 0.0, 0.0) < 0.01);
        assert!(sky_lux(-18.0, 0.0, 0.25) > 0.2);
        let mut last = f64::INFINITY;
        for tenth in 0..=900 {
            let lux = sky_lux(30.0 - f64::from(tenth) / 10.0, 0.0, 0.0);
            assert!(lux <= last * 1.0001, "falls as the sun sets");
            last = lux;
        }
    }

    #[test]
    fn moonlight_follows_the_month() {
        let full_moon_2026_11_24 = 1_795_531_980_000i64; // 24 Nov 2026 14:53 UTC
        let max_near_full = (0..48)
            .map(|h| moon_lux(full_moon_2026_11_24 + h * 3_600_000))
            .fold(0.0, f64::max);
        let max_near_new = (0..48)
            .map(|h| moon_lux(full_moon_2026_11_24 + 15 * 86_400_000 + h * 3_600_000))
            .fold(0.0, f64::max);
        assert!(
            max_near_full > 0.2 && max_near_new < 0.05,
            "{max_near_full} {max_near_new}"
        );
    }
}
