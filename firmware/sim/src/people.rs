//! Foot traffic: detections per zone from a Poisson process whose rate follows the hour,
//! the weekday, the season and the day's weather, and falls after dark, less on a path
//! lit to its class.

use rand::{Rng, RngExt, SeedableRng};
use rand_distr::{Distribution, Poisson};

/// Detections per hour in a zone of popularity 1, by local hour: quiet after midnight,
/// a morning commute, steady day use, an evening peak.
const HOURLY: [f64; 24] = [
    4.0, 2.0, 1.0, 1.0, 1.0, 3.0, 8.0, 20.0, 25.0, 20.0, 20.0, 25.0, //
    30.0, 30.0, 35.0, 45.0, 60.0, 70.0, 80.0, 75.0, 55.0, 35.0, 20.0, 10.0,
];

/// Use by local weekday, Monday first: busier on Friday and at the weekend.
const WEEKDAY: [f64; 7] = [0.95, 0.95, 0.95, 1.0, 1.1, 1.3, 1.2];

/// How much busier midsummer is than the year's mean (and midwinter quieter).
const SEASON_SWING: f64 = 0.2;

/// Share of people still out once it is dark outside, on a path lit to its class.
pub const AFTER_DARK: f64 = 0.6;

/// Share of those an unlit path keeps after dark, of those it would keep lit to class.
const UNLIT_APPEAL: f64 = 0.4;

/// A moment as people live it: the local weekday (Monday 0), hour and minute, and the
/// day of the year (1–366).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moment {
    /// Local weekday, Monday 0.
    pub weekday: u8,
    /// Local hour.
    pub hour: u8,
    /// Local minute.
    pub minute: u8,
    /// Day of the year, 1–366.
    pub day_of_year: u16,
}

impl Moment {
    /// The moment of a local date and time.
    pub fn of(local: jiff::civil::DateTime) -> Moment {
        Moment {
            weekday: local.weekday().to_monday_zero_offset() as u8,
            hour: local.hour() as u8,
            minute: local.minute() as u8,
            day_of_year: local.day_of_year() as u16,
        }
    }
}

/// Outside: whether it is dark (the sun below civil twilight), and the day's weather.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outside {
    /// The sun is below civil twilight.
    pub dark: bool,
    /// How many go out today, as [`weather`] gives it.
    pub weather: f64,
}

/// How many go out on local `day` (days since 1970-01-01), rain or shine: from 0.6 (a wet,
/// cold day) to 1.2, the same in every zone of the site `site_seed` is drawn for.
pub fn weather(site_seed: u64, day: i64) -> f64 {
    let key = (day as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    rand_chacha::ChaCha8Rng::seed_from_u64(site_seed ^ key).random_range(0.6..1.2)
}

/// A zone as the people passing see it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Zone {
    /// How popular, 1 for an average path.
    pub popularity: f64,
    /// Poles in the zone.
    pub poles: usize,
    /// What its working lamps deliver at full power, over what its class asks: 1 (or
    /// more) is lit to class, 0 unlit.
    pub light: f64,
}

/// How many of the people who would walk a path lit to class after dark walk it with
/// this `light` (see [`Zone::light`]): from [`UNLIT_APPEAL`] unlit to 1 lit to class.
pub fn appeal(light: f64) -> f64 {
    UNLIT_APPEAL + (1.0 - UNLIT_APPEAL) * light.clamp(0.0, 1.0)
}

/// Expected detections per hour at one node of `zone` at `at` (interpolated between
/// hours), as it is `outside`.
pub fn rate_per_hour(at: Moment, outside: Outside, zone: &Zone) -> f64 {
    let h = usize::from(at.hour % 24);
    let share = f64::from(at.minute.min(59)) / 60.0;
    let hourly = HOURLY[h] * (1.0 - share) + HOURLY[(h + 1) % 24] * share;
    let season = 1.0
        + SEASON_SWING
            * (std::f64::consts::TAU * (f64::from(at.day_of_year) - 196.0) / 365.25).cos();
    let darkness = if outside.dark {
        AFTER_DARK * appeal(zone.light)
    } else {
        1.0
    };
    // Every pole of a small zone sees most passers-by; a long path splits them.
    hourly
        * WEEKDAY[usize::from(at.weekday % 7)]
        * season
        * outside.weather
        * darkness
        * zone.popularity
        / (zone.poles.max(1) as f64).sqrt()
}

/// Detections in a step of `step_s` seconds at `rate` per hour.
pub fn detections(rate_per_hour: f64, step_s: f64, rng: &mut impl Rng) -> u32 {
    let mean = rate_per_hour * step_s / 3600.0;
    match Poisson::new(mean) {
        Ok(poisson) => poisson.sample(rng) as u32,
        Err(_) => 0, // a mean of zero
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn at(weekday: u8, hour: u8, day_of_year: u16) -> Moment {
        Moment {
            weekday,
            hour,
            minute: 0,
            day_of_year,
        }
    }

    const DAY: Outside = Outside {
        dark: false,
        weather: 1.0,
    };
    const NIGHT: Outside = Outside {
        dark: true,
        weather: 1.0,
    };

    const PATH: Zone = Zone {
        popularity: 1.0,
        poles: 1,
        light: 1.5,
    };

    #[test]
    fn evenings_are_busier_than_nights_and_popular_short_paths_busiest() {
        let rate = |zone: &Zone| rate_per_hour(at(2, 18, 100), DAY, zone);
        assert!(rate(&PATH) > 10.0 * rate_per_hour(at(2, 3, 100), DAY, &PATH));
        assert!(
            rate(&Zone {
                popularity: 2.0,
                ..PATH
            }) > rate(&PATH)
        );
        assert!(rate(&Zone { poles: 16, ..PATH }) < rate(&PATH));
    }

    #[test]
    fn fewer_people_after_dark_fewest_on_unlit_paths_more_in_summer_and_at_weekends() {
        let lit = rate_per_hour(at(2, 18, 100), NIGHT, &PATH);
        let day = rate_per_hour(at(2, 18, 100), DAY, &PATH);
        assert!((lit / day - AFTER_DARK).abs() < 1e-9);
        let half = rate_per_hour(at(2, 18, 100), NIGHT, &Zone { light: 0.5, ..PATH });
        assert!((lit / half - 1.0 / 0.7).abs() < 1e-9, "{}", lit / half);
        let unlit = rate_per_hour(at(2, 18, 100), NIGHT, &Zone { light: 0.0, ..PATH });
        assert!((unlit / lit - UNLIT_APPEAL).abs() < 1e-9);
        let july = rate_per_hour(at(2, 18, 196), DAY, &PATH);
        let january = rate_per_hour(at(2, 18, 14), DAY, &PATH);
        assert!(july > 1.4 * january, "{july} {january}");
        assert!(rate_per_hour(at(5, 18, 100), DAY, &PATH) > day);
    }

    #[test]
    fn the_weather_is_the_same_all_day_and_varies_between_days() {
        assert_eq!(weather(7, 20_000), weather(7, 20_000));
        let days: Vec<f64> = (20_000..20_060).map(|day| weather(7, day)).collect();
        assert!(days.iter().all(|w| (0.6..1.2).contains(w)));
        let spread = days.iter().cloned().fold(f64::MIN, f64::max)
            - days.iter().cloned().fold(f64::MAX, f64::min);
        assert!(spread > 0.4, "{days:?}");
        let rainy = Outside {
            weather: 0.6,
            ..DAY
        };
        let ratio =
            rate_per_hour(at(2, 18, 100), rainy, &PATH) / rate_per_hour(at(2, 18, 100), DAY, &PATH);
        assert!((ratio - 0.6).abs() < 1e-9);
    }

    #[test]
    fn moments_are_local_weekday_hour_and_day_of_the_year() {
        // Friday 2026-12-04 19:30.
        let moment = Moment::of(jiff::civil::date(2026, 12, 4).at(19, 30, 0, 0));
        assert_eq!(
            moment,
            Moment {
                minute: 30,
                ..at(4, 19, 338)
            }
        );
    }

    #[test]
    fn counts_average_to_the_rate() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let total: u32 = (0..3600).map(|_| detections(60.0, 60.0, &mut rng)).sum();
        let mean = f64::from(total) / 3600.0;
        assert!((mean - 1.0).abs() < 0.1, "{mean}");
    }
}
