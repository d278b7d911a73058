//! The lamp: a PWM driver that ramps smoothly between levels.

use embedded_hal::pwm::SetDutyCycle;

/// How long a full 0 → 100 % change takes, in milliseconds.
pub const FULL_RAMP_MS: u32 = 1_500;

/// Relative luminance (0–1) for a perceived lightness in percent (CIE 1976 L*), so equal
/// level steps look like equal brightness steps.
pub fn luminance(level_percent: f32) -> f32 {
    let l = level_percent.clamp(0.0, 100.0);
    if l > 8.0 {
        let f = (l + 16.0) / 116.0;
        f * f * f
    } else {
        l / 903.3
    }
}

/// A lamp behind a PWM channel. Levels are perceived brightness in percent; the duty
/// cycle follows [`luminance`] and moves at most [`FULL_RAMP_MS`] per full scale, so no
/// change is a visible step.
pub struct Lamp<P> {
    pwm: P,
    current: f32,
    target: u8,
    last_update_ms: u64,
}

impl<P: SetDutyCycle> Lamp<P> {
    /// A lamp at `initial` percent (set at once: the safe level at boot).
    pub fn new(mut pwm: P, initial: u8, now_ms: u64) -> Result<Self, P::Error> {
        let level = initial.min(100);
        Self::apply(&mut pwm, f32::from(level))?;
        Ok(Lamp {
            pwm,
            current: f32::from(level),
            target: level,
            last_update_ms: now_ms,
        })
    }

    /// Starts ramping towards `level` percent.
    pub fn set_target(&mut self, level: u8) {
        self.target = level.min(100);
    }

    /// The level the lamp is heading to.
    pub fn target(&self) -> u8 {
        self.target
    }

    /// The level the lamp shows now (between levels while ramping).
    pub fn current(&self) -> f32 {
        self.current
    }

    /// Advances the ramp to `now_ms`; call it often (every 10–20 ms) while ramping.
    pub fn update(&mut self, now_ms: u64) -> Result<(), P::Error> {
        let elapsed = now_ms.saturating_sub(self.last_update_ms) as f32;
        self.last_update_ms = now_ms;
        let target = f32::from(self.target);
        if self.current == target {
            return Ok(());
        }
        let max_step = elapsed * 100.0 / FULL_RAMP_MS as f32;
        let delta = (target - self.current).clamp(-max_step, max_step);
        self.current += delta;
        Self::apply(&mut self.pwm, self.current)
    }

    fn apply(pwm: &mut P, level: f32) -> Result<(), P::Error> {
        let max = pwm.max_duty_cycle();
        let duty = libm::roundf(luminance(level) * f32::from(max)) as u16;
        pwm.set_duty_cycle(duty.min(max))
    }

    /// Gives the PWM channel back.
    pub fn destroy(self) -> P {
        self.pwm
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_hal_mock::eh1::pwm::{Mock, Transaction};

    #[test]
    fn luminance_is_monotonic_and_spans_zero_to_one() {
        assert_eq!(luminance(0.0), 0.0);
        assert!((luminance(100.0) - 1.0).abs() < 1e-6);
        let mut last = -1.0;
        for step in 0..=1000 {
            let y = luminance(step as f32 / 10.0);
            assert!(y > last || step == 0);
            last = y;
        }
    }

    #[test]
    fn ramps_without_jumping() {
        let max = 10_000u16;
        let expected = |level: f32| libm::roundf(luminance(level) * f32::from(max)) as u16;
        let mut transactions = std::vec![
            Transaction::max_duty_cycle(max),
            Transaction::set_duty_cycle(0)
        ];
        // 0 → 100 % in steps of 150 ms: 10 % of the scale each.
        for step in 1..=10 {
            transactions.push(Transaction::max_duty_cycle(max));
            transactions.push(Transaction::set_duty_cycle(expected(step as f32 * 10.0)));
        }
        let mut lamp = Lamp::new(Mock::new(&transactions), 0, 0).unwrap();
        lamp.set_target(100);
        for step in 1..=10 {
            lamp.update(step * 150).unwrap();
        }
        lamp.update(2_000).unwrap(); // at target: no further writes
        assert_eq!(lamp.current(), 100.0);
        lamp.destroy().done();
    }
}
