//! Counts about people as partners are told them. Each figure of a zone's local hour
//! (detections, after dark, in the dark, occupied dark minutes) below k is told 0
//! (suppressed); one of k or more is rounded to a multiple of k, up or down with the
//! chance that keeps it right on average (a count of 7 with k = 5 is told 10 two times
//! in five, else 5), by an offset keyed with the store's secret from the site, the zone
//! and the hour: asking again, over another period or through another route, tells the
//! hour the same, and no one without the secret can tell which way it went. An hour's
//! occupied dark minutes are told 0 when its detections in the dark are (a minute says
//! someone was there). Every figure partners get is computed from the hours as told, and
//! one told 0 is shown as suppressed (each of its hours had fewer than k): so nothing
//! they are told, alone or with other answers, is a count from 1 to k - 1, or more than
//! what the told hours say.

use ring::hmac;

use parklight_core::tz::TimeZone;

use super::HOUR_MS;

/// A zone's figures about people in one local hour (or summed over hours).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct People {
    /// Motion detections.
    pub detections: u64,
    /// Of those, while dark outside.
    pub after_dark: u64,
    /// Minutes the zone was dark (below its class) with detections.
    pub occupied_dark_minutes: u64,
    /// Detections while the zone was dark.
    pub detections_dark: u64,
}

impl People {
    /// Adds `other`.
    pub fn add(&mut self, other: People) {
        self.detections += other.detections;
        self.after_dark += other.after_dark;
        self.occupied_dark_minutes += other.occupied_dark_minutes;
        self.detections_dark += other.detections_dark;
    }
}

impl std::iter::Sum for People {
    fn sum<I: Iterator<Item = People>>(each: I) -> People {
        let mut total = People::default();
        each.for_each(|p| total.add(p));
        total
    }
}

/// How a site's counts are told: as they are (operators and crews), or each zone's local
/// hour rounded to a multiple of k (partners).
#[derive(Debug, Clone)]
pub(super) struct Telling {
    rounding: Option<Rounding>,
}

#[derive(Debug, Clone)]
struct Rounding {
    key: hmac::Key,
    site: String,
    base: u64,
}

impl Telling {
    /// Counts as they are.
    pub fn exact() -> Telling {
        Telling { rounding: None }
    }

    /// Counts of `site` rounded to multiples of `k` (at least 2) by offsets under `key`.
    pub fn rounded(key: &hmac::Key, site: &str, k: u32) -> Telling {
        Telling {
            rounding: (k > 1).then(|| Rounding {
                key: key.clone(),
                site: site.to_owned(),
                base: u64::from(k),
            }),
        }
    }

    /// k, or 0 when counts are told as they are.
    pub fn base(&self) -> u32 {
        self.rounding.as_ref().map_or(0, |r| r.base as u32)
    }

    /// The figures of one local hour of `zone`, the hour starting at `hour` (Unix ms),
    /// as told: each rounded with the hour's one offset, and its occupied dark minutes
    /// 0 when its detections in the dark are told 0.
    pub fn hour(&self, zone: &str, hour: i64, people: People) -> People {
        let Some(r) = &self.rounding else {
            return people;
        };
        let message = [r.site.as_bytes(), &[0xff], zone.as_bytes(), &[0xff]].concat();
        let tag = hmac::sign(&r.key, &[&message[..], &hour.to_le_bytes()].concat());
        let mut first = [0u8; 8];
        first.copy_from_slice(&tag.as_ref()[..8]);
        let offset = ((u128::from(u64::from_le_bytes(first)) * u128::from(r.base)) >> 64) as u64;
        let told = |value: u64| match value {
            small if small < r.base => 0,
            value => rounded(value, offset, r.base),
        };
        let detections_dark = told(people.detections_dark);
        People {
            detections: told(people.detections),
            after_dark: told(people.after_dark),
            occupied_dark_minutes: if detections_dark == 0 {
                0
            } else {
                told(people.occupied_dark_minutes)
            },
            detections_dark,
        }
    }

    /// A figure as shown from its told value: for partners, one told 0 is `None`
    /// (suppressed: each of its hours had fewer than k).
    pub fn shown(&self, told: u64) -> Option<u64> {
        (self.rounding.is_none() || told > 0).then_some(told)
    }

    /// Occupied dark minutes as shown from `told` figures: with the detections in the
    /// dark, or not at all.
    pub fn shown_minutes(&self, told: &People) -> Option<u64> {
        (self.shown(told.detections_dark)).map(|_| told.occupied_dark_minutes)
    }
}

/// `value` rounded to a multiple of `base` with `offset` (0 to `base - 1`): up for the
/// `value % base` offsets of `base` at the top, so on average over the offsets it is
/// `value`; 0 stays 0, and a larger value is never told less.
fn rounded(value: u64, offset: u64, base: u64) -> u64 {
    (value + offset) / base * base
}

/// The start (Unix ms) of the local hour that `at` falls in: two hours that read the
/// same on the clock (the night the clocks go back) are two hours.
pub(super) fn local_hour(tz: &TimeZone, at: i64) -> i64 {
    at - tz.to_local(at).rem_euclid(HOUR_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(secret: &[u8]) -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, secret)
    }

    #[test]
    fn rounding_is_to_multiples_of_k_right_on_average_and_keeps_order() {
        for value in 0..40 {
            let told: Vec<u64> = (0..5).map(|offset| rounded(value, offset, 5)).collect();
            assert!(told.iter().all(|t| t % 5 == 0 && t.abs_diff(value) < 5));
            assert_eq!(told.iter().sum::<u64>(), value * 5, "unbiased over offsets");
            for offset in 0..5 {
                assert!(rounded(value + 1, offset, 5) >= rounded(value, offset, 5));
            }
        }
        assert!((0..5).all(|offset| rounded(0, offset, 5) == 0));
    }

    fn detections(detections: u64) -> People {
        People {
            detections,
            ..People::default()
        }
    }

    #[test]
    fn an_hour_is_told_the_same_every_time_and_the_secret_decides_how() {
        let partners = Telling::rounded(&key(b"one"), "remiseparken", 5);
        let hour = 1_796_662_800_000;
        let people = People {
            detections: 7,
            after_dark: 3,
            ..People::default()
        };
        let told = partners.hour("lawn", hour, people);
        assert_eq!(partners.hour("lawn", hour, people), told);
        assert!(told.detections.is_multiple_of(5) && told.after_dark.is_multiple_of(5));
        assert!(told.detections >= told.after_dark);
        // A count of 7 in each of 1 000 hours: told 10 about two times in five, else 5.
        let told = |telling: &Telling, count: u64| -> Vec<u64> {
            (0..1000)
                .map(|i| (telling.hour("lawn", hour + i * HOUR_MS, detections(count))).detections)
                .collect()
        };
        let sevens = told(&partners, 7);
        assert!(sevens.iter().all(|t| [5, 10].contains(t)));
        let tens = sevens.iter().filter(|t| **t == 10).count();
        assert!((330..470).contains(&tens), "{tens}");
        // Below k: suppressed, every time.
        assert!(told(&partners, 4).iter().all(|t| *t == 0));
        // Another secret rounds other hours up: the way is not the hour's alone.
        let other = told(&Telling::rounded(&key(b"two"), "remiseparken", 5), 7);
        let same = sevens.iter().zip(&other).filter(|(a, b)| a == b).count();
        assert!(same < 800, "{same}");
        // Operators: as it is.
        assert_eq!(Telling::exact().hour("lawn", hour, people), people);
    }

    #[test]
    fn no_occupied_minute_is_told_of_an_hour_whose_detections_in_the_dark_are_told_0() {
        // Four detections in the dark, each straddling a minute boundary: eight occupied
        // minutes, which alone would be told.
        let partners = Telling::rounded(&key(b"one"), "remiseparken", 5);
        let told = |dark: u64| -> Vec<People> {
            let people = People {
                occupied_dark_minutes: 8,
                detections_dark: dark,
                ..People::default()
            };
            (0..1000)
                .map(|i| partners.hour("lawn", i * HOUR_MS, people))
                .collect()
        };
        assert!(told(4).iter().all(|t| t.occupied_dark_minutes == 0));
        assert!(told(6).iter().all(|t| t.occupied_dark_minutes > 0));
    }

    #[test]
    fn partners_see_a_figure_told_0_as_fewer_than_k() {
        let partners = Telling::rounded(&key(b"one"), "remiseparken", 5);
        assert_eq!(partners.shown(0), None);
        assert_eq!(partners.shown(10), Some(10));
        assert_eq!(Telling::exact().shown(0), Some(0));
        assert_eq!(Telling::exact().shown(3), Some(3));
        // k = 1 suppresses nothing: exact.
        let one = Telling::rounded(&key(b"one"), "remiseparken", 1);
        assert_eq!(one.hour("lawn", 0, detections(3)), detections(3));
        assert_eq!((one.shown(0), one.base()), (Some(0), 0));
    }

    #[test]
    fn the_repeated_hour_of_autumn_is_an_hour_of_its_own() {
        let copenhagen = TimeZone::parse("CET-1CEST,M3.5.0,M10.5.0/3").unwrap();
        // Sunday 2026-10-25: 00:30 UTC is 02:30 summer time, 01:30 UTC 02:30 winter time.
        let summer = 1_792_888_200_000;
        let winter = summer + HOUR_MS;
        assert_eq!(local_hour(&copenhagen, summer), summer - 30 * 60_000);
        assert_eq!(local_hour(&copenhagen, winter), winter - 30 * 60_000);
    }
}
