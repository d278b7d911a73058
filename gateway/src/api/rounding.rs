//! Counts about people as partners are told them. Each figure of a zone's local hour
//! (detections, after dark, in the dark, occupied dark minutes) is rounded to a multiple
//! of k, up or down with the chance that keeps it right on average (a count of 2 with
//! k = 5 is told 5 two times in five, else 0), by an offset keyed with the store's secret
//! from the site, the zone and the hour: asking again, over another period or through
//! another route, tells the hour the same, and no one without the secret can tell which
//! way it went. Every figure partners get is computed from the hours as told, and one
//! told 0 is shown as fewer than k: so nothing they are told, alone or with other
//! answers, is a count from 1 to k - 1, or more than what the told hours say.

use ring::hmac;

use parklight_core::tz::TimeZone;

use super::HOUR_MS;

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

    /// The figures of one local hour of `zone`, the hour starting at `hour` (Unix ms),
    /// as told: each rounded with the hour's one offset.
    pub fn hour<const N: usize>(&self, zone: &str, hour: i64, values: [u64; N]) -> [u64; N] {
        let Some(r) = &self.rounding else {
            return values;
        };
        let message = [r.site.as_bytes(), &[0xff], zone.as_bytes(), &[0xff]].concat();
        let tag = hmac::sign(&r.key, &[&message[..], &hour.to_le_bytes()].concat());
        let mut first = [0u8; 8];
        first.copy_from_slice(&tag.as_ref()[..8]);
        let offset = ((u128::from(u64::from_le_bytes(first)) * u128::from(r.base)) >> 64) as u64;
        values.map(|value| rounded(value, offset, r.base))
    }

    /// A figure as shown from its told value: for partners, one told 0 is `None`, fewer
    /// than k.
    pub fn shown(&self, told: u64) -> Option<u64> {
        (self.rounding.is_none() || told > 0).then_some(told)
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

    #[test]
    fn an_hour_is_told_the_same_every_time_and_the_secret_decides_how() {
        let partners = Telling::rounded(&key(b"one"), "remiseparken", 5);
        let hour = 1_796_662_800_000;
        let [a, b] = partners.hour("lawn", hour, [7, 3]);
        assert_eq!(partners.hour("lawn", hour, [7, 3]), [a, b]);
        assert!(a % 5 == 0 && b % 5 == 0 && a >= b);
        // A count of 2 in each of 1 000 hours: told 5 about two times in five.
        let told = |telling: &Telling| -> Vec<u64> {
            (0..1000)
                .map(|i| telling.hour("lawn", hour + i * HOUR_MS, [2])[0])
                .collect()
        };
        let fives = told(&partners).iter().filter(|t| **t == 5).count();
        assert!((330..470).contains(&fives), "{fives}");
        // Another secret rounds other hours up: the way is not the hour's alone.
        let other = told(&Telling::rounded(&key(b"two"), "remiseparken", 5));
        let same = told(&partners)
            .iter()
            .zip(&other)
            .filter(|(a, b)| a == b)
            .count();
        assert!(same < 800, "{same}");
        // Operators: as it is.
        assert_eq!(Telling::exact().hour("lawn", hour, [7]), [7]);
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
        assert_eq!((one.hour("lawn", 0, [3]), one.shown(0)), ([3], Some(0)));
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
