//! Where the sun is: altitude, sunset and sunrise from latitude and longitude.
//!
//! The sunrise equation and the low-precision solar coordinates of the Astronomical
//! Almanac (NOAA's simplification): good to about a minute for sunset and sunrise and a
//! fraction of a degree for altitude, which is all a lamp needs.

use libm::{asin, atan2, cos, sin};

use crate::tz::DAY_MS;

/// Sun altitude at sunset and sunrise: its upper edge at the horizon, with refraction.
pub const SUNSET_ALTITUDE_DEG: f64 = -0.833;
/// Sun altitude at the end of civil twilight: dark outside below this.
pub const CIVIL_TWILIGHT_DEG: f64 = -6.0;

const J2000_UNIX_MS: i64 = 946_728_000_000; // 2000-01-01 12:00 UTC

fn rad(deg: f64) -> f64 {
    deg.to_radians()
}

/// The sun's altitude above the horizon in degrees at `unix_ms`.
pub fn altitude_deg(unix_ms: i64, lat_deg: f64, lon_deg: f64) -> f64 {
    let d = (unix_ms - J2000_UNIX_MS) as f64 / DAY_MS as f64;
    let g = rad(357.529 + 0.985_600_28 * d);
    let q = 280.459 + 0.985_647_36 * d;
    let ecliptic_lon = rad(q + 1.915 * sin(g) + 0.020 * sin(2.0 * g));
    let obliquity = rad(23.439 - 0.000_000_36 * d);
    let right_ascension = atan2(cos(obliquity) * sin(ecliptic_lon), cos(ecliptic_lon));
    let declination = asin(sin(obliquity) * sin(ecliptic_lon));
    let sidereal_deg = 280.460_618_37 + 360.985_647_366_29 * d;
    let hour_angle = rad(sidereal_deg + lon_deg) - right_ascension;
    let lat = rad(lat_deg);
    asin(sin(lat) * sin(declination) + cos(lat) * cos(declination) * cos(hour_angle)).to_degrees()
}

/// Sunrise and sunset of one solar day, or why there are none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SolarDay {
    /// The sun rises and sets (Unix ms).
    RiseAndSet {
        /// Sunrise.
        rise: i64,
        /// Sunset.
        set: i64,
    },
    /// The sun stays below the horizon all day; `noon` is the solar noon (Unix ms).
    PolarNight {
        /// Solar noon.
        noon: i64,
    },
    /// The sun stays above the horizon all day; `noon` is the solar noon (Unix ms).
    MidnightSun {
        /// Solar noon.
        noon: i64,
    },
}

/// The solar day numbered `n` (days since 2000-01-01 at the given longitude).
pub fn solar_day(n: i64, lat_deg: f64, lon_deg: f64) -> SolarDay {
    let mean_solar = n as f64 - lon_deg / 360.0;
    let anomaly = rad(357.5291 + 0.985_600_28 * mean_solar);
    let center = 1.9148 * sin(anomaly) + 0.02 * sin(2.0 * anomaly) + 0.0003 * sin(3.0 * anomaly);
    let ecliptic_lon = rad(anomaly.to_degrees() + center + 180.0 + 102.9372);
    let transit = mean_solar + 0.0053 * sin(anomaly) - 0.0069 * sin(2.0 * ecliptic_lon);
    let sin_decl = sin(ecliptic_lon) * sin(rad(23.4397));
    let cos_decl = cos(asin(sin_decl));
    let lat = rad(lat_deg);
    let cos_hour_angle =
        (sin(rad(SUNSET_ALTITUDE_DEG)) - sin(lat) * sin_decl) / (cos(lat) * cos_decl);
    let to_unix = |days: f64| J2000_UNIX_MS + (days * DAY_MS as f64) as i64;
    let noon = to_unix(transit);
    if cos_hour_angle > 1.0 {
        SolarDay::PolarNight { noon }
    } else if cos_hour_angle < -1.0 {
        SolarDay::MidnightSun { noon }
    } else {
        let half_day = libm::acos(cos_hour_angle).to_degrees() / 360.0;
        SolarDay::RiseAndSet {
            rise: to_unix(transit - half_day),
            set: to_unix(transit + half_day),
        }
    }
}

/// The number of the solar day whose noon is nearest to `unix_ms`.
fn day_number(unix_ms: i64, lon_deg: f64) -> i64 {
    let days = (unix_ms - J2000_UNIX_MS) as f64 / DAY_MS as f64 + lon_deg / 360.0;
    libm::round(days) as i64
}

/// A night: from sunset to the next sunrise (Unix ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Night {
    /// When the night began.
    pub sunset: i64,
    /// When it ends.
    pub sunrise: i64,
}

/// When a solar day's night begins: sunset, or noon of a polar night.
fn night_start(day: SolarDay) -> Option<i64> {
    match day {
        SolarDay::RiseAndSet { set, .. } => Some(set),
        SolarDay::PolarNight { noon } => Some(noon),
        SolarDay::MidnightSun { .. } => None,
    }
}

/// The night `unix_ms` falls in, if it is night there.
pub fn night_at(unix_ms: i64, lat_deg: f64, lon_deg: f64) -> Option<Night> {
    let today = day_number(unix_ms, lon_deg);
    let sunset = [today, today - 1]
        .into_iter()
        .filter_map(|n| night_start(solar_day(n, lat_deg, lon_deg)))
        .find(|&start| start <= unix_ms)?;
    let sunrise = next_sunrise(sunset, lat_deg, lon_deg);
    (unix_ms < sunrise).then_some(Night { sunset, sunrise })
}

/// The first instant after `unix_ms` that `pick` finds in a solar day (a year ahead at
/// most).
fn first_after(unix_ms: i64, lon_deg: f64, pick: impl Fn(i64) -> Option<i64>) -> i64 {
    let first = day_number(unix_ms, lon_deg);
    (first..first + 366)
        .find_map(|n| pick(n).filter(|&t| t > unix_ms))
        .unwrap_or(unix_ms + 366 * DAY_MS)
}

/// The first sunrise after `unix_ms` (or the solar noon of the first day with sun, for
/// polar nights that end without a sunrise; a year ahead at most).
pub fn next_sunrise(unix_ms: i64, lat_deg: f64, lon_deg: f64) -> i64 {
    first_after(unix_ms, lon_deg, |n| match solar_day(n, lat_deg, lon_deg) {
        SolarDay::RiseAndSet { rise, .. } => Some(rise),
        SolarDay::MidnightSun { noon } => Some(noon),
        SolarDay::PolarNight { .. } => None,
    })
}

/// The first sunset after `unix_ms` (or the solar noon of the first day without sun, for
/// a midnight sun that ends without a sunset; a year ahead at most).
pub fn next_sunset(unix_ms: i64, lat_deg: f64, lon_deg: f64) -> i64 {
    first_after(unix_ms, lon_deg, |n| {
        night_start(solar_day(n, lat_deg, lon_deg))
    })
}

/// The last sunset at or before `unix_ms`, if there was one in the past year.
pub fn previous_sunset(unix_ms: i64, lat_deg: f64, lon_deg: f64) -> Option<i64> {
    let today = day_number(unix_ms, lon_deg);
    (0..366).find_map(|back| match solar_day(today - back, lat_deg, lon_deg) {
        SolarDay::RiseAndSet { set, .. } if set <= unix_ms => Some(set),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tz::days_from_civil;

    const LAT: f64 = 55.6605;
    const LON: f64 = 12.5935;

    fn utc(y: i32, mo: u32, d: u32, h: i64, mi: i64) -> i64 {
        (days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60) * 1000
    }

    fn minutes_apart(a: i64, b: i64) -> i64 {
        (a - b).abs() / 60_000
    }

    #[test]
    fn copenhagen_solstices_match_the_almanac() {
        // Copenhagen: 21 June 2026 sunset 21:57 CEST, 22 June sunrise 04:25 CEST;
        // 21 December sunset 15:38 CET, 22 December sunrise 08:37 CET.
        let summer = night_at(utc(2026, 6, 21, 23, 0), LAT, LON).unwrap();
        assert!(
            minutes_apart(summer.sunset, utc(2026, 6, 21, 19, 57)) <= 3,
            "{summer:?}"
        );
        assert!(
            minutes_apart(summer.sunrise, utc(2026, 6, 22, 2, 25)) <= 3,
            "{summer:?}"
        );
        let winter = night_at(utc(2026, 12, 21, 20, 0), LAT, LON).unwrap();
        assert!(
            minutes_apart(winter.sunset, utc(2026, 12, 21, 14, 38)) <= 3,
            "{winter:?}"
        );
        assert!(
            minutes_apart(winter.sunrise, utc(2026, 12, 22, 7, 37)) <= 3,
            "{winter:?}"
        );
        assert_eq!(night_at(utc(2026, 6, 21, 12, 0), LAT, LON), None);
        assert_eq!(
            previous_sunset(utc(2026, 12, 22, 3, 0), LAT, LON),
            Some(winter.sunset)
        );
    }

    #[test]
    fn sunset_and_sunrise_agree_with_the_altitude_formula() {
        // Two independent formulas: at the computed times the sun is within 0.4° (about
        // 3 minutes) of -0.833°.
        for month in 1..=12 {
            let night = night_at(utc(2026, month, 10, 23, 0), LAT, LON).unwrap();
            for t in [night.sunset, night.sunrise] {
                let altitude = altitude_deg(t, LAT, LON);
                assert!(
                    (altitude - SUNSET_ALTITUDE_DEG).abs() < 0.4,
                    "month {month}: {altitude}"
                );
            }
        }
    }

    #[test]
    fn night_after_midnight_belongs_to_the_evening_before() {
        let evening = night_at(utc(2026, 11, 25, 22, 0), LAT, LON).unwrap();
        let morning = night_at(utc(2026, 11, 26, 4, 0), LAT, LON).unwrap();
        assert_eq!(evening, morning);
    }

    #[test]
    fn altitude_at_noon_and_midnight() {
        assert!(altitude_deg(utc(2026, 6, 21, 11, 10), LAT, LON) > 57.0);
        assert!(altitude_deg(utc(2026, 12, 21, 23, 10), LAT, LON) < -50.0);
    }

    #[test]
    fn polar_day_and_night() {
        // Tromsø, 69.6 N: no night at midsummer, night all day at midwinter.
        assert_eq!(night_at(utc(2026, 6, 21, 23, 0), 69.65, 18.96), None);
        let winter = night_at(utc(2026, 12, 21, 12, 0), 69.65, 18.96).unwrap();
        assert!(winter.sunrise > utc(2027, 1, 10, 0, 0), "{winter:?}");
    }
}
