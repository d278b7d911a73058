//! Foot traffic: detections per zone from a Poisson process whose rate follows the hour.

use rand::Rng;
use rand_distr::{Distribution, Poisson};

/// Detections per hour in a zone of popularity 1, by local hour: quiet after midnight,
/// a morning commute, steady day use, an evening peak.
const HOURLY: [f64; 24] = [
    4.0, 2.0, 1.0, 1.0, 1.0, 3.0, 8.0, 20.0, 25.0, 20.0, 20.0, 25.0, //
    30.0, 30.0, 35.0, 45.0, 60.0, 70.0, 80.0, 75.0, 55.0, 35.0, 20.0, 10.0,
];

/// Expected detections per hour at one node, at a local `hour` and `minute`, in a zone of
/// `popularity` lit by `poles_in_zone` poles (interpolated between hours).
pub fn rate_per_hour(hour: u8, minute: u8, popularity: f64, poles_in_zone: usize) -> f64 {
    let h = usize::from(hour % 24);
    let share = f64::from(minute.min(59)) / 60.0;
    let rate = HOURLY[h] * (1.0 - share) + HOURLY[(h + 1) % 24] * share;
    // Every pole of a small zone sees most passers-by; a long path splits them.
    rate * popularity / (poles_in_zone.max(1) as f64).sqrt()
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

    #[test]
    fn evenings_are_busier_than_nights() {
        assert!(rate_per_hour(18, 0, 1.0, 1) > 10.0 * rate_per_hour(3, 0, 1.0, 1));
        assert!(rate_per_hour(18, 0, 2.0, 1) > rate_per_hour(18, 0, 1.0, 1));
        assert!(rate_per_hour(18, 0, 1.0, 16) < rate_per_hour(18, 0, 1.0, 1));
    }

    #[test]
    fn counts_average_to_the_rate() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let total: u32 = (0..3600).map(|_| detections(60.0, 60.0, &mut rng)).sum();
        let mean = f64::from(total) / 3600.0;
        assert!((mean - 1.0).abs() < 0.1, "{mean}");
    }
}
