//! Counts about people as partners are told them. Each figure of a zone's local hour
//! (detections, after dark, in the dark, occupied dark minutes) is rounded to a multiple
//! of k, up or down at random but the same way every time: its hour's offset comes from
//! the site, the zone and the hour, so asking again, over another period or another
//! route, gives the same. A figure is the sum of its hours as told, so every sum or
//! difference of what partners get, within one answer or across answers, is a multiple
//! of k and never a count from 1 to k - 1, while sums stay right on average (a count of
//! 2 with k = 5 is told 5 two times in five, else 0). Suppression is on top: a figure
//! whose own count is from 1 to k - 1 is not told at all.

use std::hash::Hasher;

use fnv::FnvHasher;
use parklight_core::tz::TimeZone;

use super::HOUR_MS;

/// A count: what it is, and what the caller is told.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Count {
    /// The count itself.
    pub value: u64,
    /// As told: the value, or for partners a sum of hours rounded to multiples of k.
    pub told: u64,
}

impl Count {
    /// A count told as it is.
    pub fn exact(value: u64) -> Count {
        Count { value, told: value }
    }

    /// Adds `other` to it.
    pub fn add(&mut self, other: Count) {
        self.value += other.value;
        self.told += other.told;
    }

    /// As shown: `None` when the count is from 1 to `below - 1`, else as told.
    pub fn shown(self, below: u32) -> Option<u64> {
        (self.value == 0 || self.value >= u64::from(below)).then_some(self.told)
    }
}

/// How a site's counts are told: as they are (operators), or each zone's local hour
/// rounded to a multiple of `base` (partners).
#[derive(Debug, Clone)]
pub(super) struct Telling {
    site: String,
    base: u64,
}

impl Telling {
    /// Counts of `site` told to a caller with suppression below `below` (0: exact).
    pub fn new(site: &str, below: u32) -> Telling {
        Telling {
            site: site.to_owned(),
            base: u64::from(below.max(1)),
        }
    }

    /// The figures of one local hour of `zone`, the hour starting at `hour` (Unix ms),
    /// as told: each rounded with the hour's one offset.
    pub fn hour<const N: usize>(&self, zone: &str, hour: i64, values: [u64; N]) -> [Count; N] {
        if self.base == 1 {
            return values.map(Count::exact);
        }
        let mut hasher = FnvHasher::default();
        for part in [self.site.as_bytes(), &[0xff], zone.as_bytes(), &[0xff]] {
            hasher.write(part);
        }
        hasher.write_i64(hour);
        // The high bits of the product: FNV's low bits mix poorly.
        let offset = ((u128::from(hasher.finish()) * u128::from(self.base)) >> 64) as u64;
        values.map(|value| Count {
            value,
            told: rounded(value, offset, self.base),
        })
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

    #[test]
    fn an_hour_is_told_the_same_every_time_and_hours_are_rounded_apart() {
        let partners = Telling::new("remiseparken", 5);
        let hour = 1_796_662_800_000;
        let [a, b] = partners.hour("lawn", hour, [7, 3]);
        assert_eq!(partners.hour("lawn", hour, [7, 3]), [a, b]);
        assert_eq!((a.value, b.value), (7, 3));
        assert!(a.told % 5 == 0 && b.told % 5 == 0 && a.told >= b.told);
        // A count of 2 in each of 1 000 hours: told 5 about two times in five.
        let fives = (0..1000)
            .filter(|i| partners.hour("lawn", hour + i * HOUR_MS, [2])[0].told == 5)
            .count();
        assert!((330..470).contains(&fives), "{fives}");
        // Operators: as it is.
        let [exact] = Telling::new("remiseparken", 0).hour("lawn", hour, [7]);
        assert_eq!(exact, Count::exact(7));
    }

    #[test]
    fn suppressed_from_1_to_k_minus_1_and_zero_is_not() {
        let count = |value, told| Count { value, told };
        assert_eq!(count(0, 0).shown(5), Some(0));
        assert_eq!(count(1, 5).shown(5), None);
        assert_eq!(count(4, 0).shown(5), None);
        assert_eq!(count(6, 10).shown(5), Some(10));
        assert_eq!(Count::exact(3).shown(0), Some(3));
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
