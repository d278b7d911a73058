//! Illuminance: the [`LightSensor`] trait and an auto-ranging VEML6030/VEML7700.

use embedded_hal::i2c::I2c;
use veml6030::{Gain, IntegrationTime, Veml6030};

/// What a light sensor read gave when the sensor worked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sample {
    /// Horizontal illuminance in lux.
    Lux(f64),
    /// No reading yet, and nothing wrong: the sensor is starting or changing range (for
    /// a few reads; a sensor that never stops is a failed one).
    Ranging,
}

/// A light sensor read failed (bus or device error): what the node needs to know of it.
/// The board logs the cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SensorFailed;

/// Anything that measures horizontal illuminance.
pub trait LightSensor {
    /// Bus or device error.
    type Error;

    /// One read: a [`Sample`], or `Err` when the sensor failed. A board hands it to the
    /// node as [`Input::Lux`](crate::Input::Lux) with `.map_err(|_| SensorFailed)`, so
    /// ranging counts towards `sensor_fault` only when it never ends
    /// ([`Settings::sensor_ranging_fault_after`](crate::Settings::sensor_ranging_fault_after)).
    fn read_lux(&mut self) -> Result<Sample, Self::Error>;
}

/// The settings the sensor steps through, most sensitive last: each step is at most
/// 8 times as sensitive as the one before, so a reading never jumps past both thresholds.
const RANGES: [(Gain, IntegrationTime); 5] = [
    (Gain::OneEighth, IntegrationTime::Ms25), // 1.8432 lx/count: up to ~120 000 lx
    (Gain::OneEighth, IntegrationTime::Ms100), // 0.4608
    (Gain::OneQuarter, IntegrationTime::Ms200), // 0.1152
    (Gain::One, IntegrationTime::Ms400),      // 0.0144
    (Gain::Two, IntegrationTime::Ms800),      // 0.0036: down to ~0.01 lx
];

/// The most these sensors are rated for, in lux; readings are clamped to it (the
/// datasheet's high-lux correction polynomial diverges beyond).
pub const MAX_RATED_LUX: f64 = 120_000.0;

/// A raw count above this risks saturation: use a less sensitive range.
pub const RAW_HIGH: u16 = 50_000;
/// A raw count below this has poor resolution: use a more sensitive range.
pub const RAW_LOW: u16 = 1_000;

/// A VEML6030 or VEML7700 that picks gain and integration time by itself, so readings
/// stay valid from about 0.01 lx at night to over 100 000 lx in sun.
///
/// Sample it no faster than once a second (the longest integration time is 800 ms).
/// The sample after a range change is skipped, since it was integrated with the old
/// settings.
pub struct AutoRangingVeml<I2C> {
    device: Veml6030<I2C>,
    range: usize,
    configured: bool,
    skip_next: bool,
}

impl<I2C: I2c> AutoRangingVeml<I2C> {
    /// Wraps a driver; the sensor is configured and enabled on the first read.
    pub fn new(device: Veml6030<I2C>) -> Self {
        AutoRangingVeml {
            device,
            range: 0,
            configured: false,
            skip_next: true,
        }
    }

    /// Gives the driver back.
    pub fn destroy(self) -> Veml6030<I2C> {
        self.device
    }

    fn apply_range(&mut self) -> Result<(), veml6030::Error<I2C::Error>> {
        let (gain, it) = RANGES[self.range];
        self.device.set_gain(gain)?;
        self.device.set_integration_time(it)?;
        self.skip_next = true;
        Ok(())
    }
}

impl<I2C: I2c> LightSensor for AutoRangingVeml<I2C> {
    type Error = veml6030::Error<I2C::Error>;

    fn read_lux(&mut self) -> Result<Sample, Self::Error> {
        if !self.configured {
            self.apply_range()?;
            self.device.enable()?;
            self.configured = true;
            return Ok(Sample::Ranging);
        }
        let raw = self.device.read_raw()?;
        let valid = !core::mem::take(&mut self.skip_next);
        let lux = f64::from(self.device.convert_raw_als_to_lux(raw)).min(MAX_RATED_LUX);
        if raw > RAW_HIGH && self.range > 0 {
            self.range -= 1;
            self.apply_range()?;
            return Ok(Sample::Ranging);
        }
        if raw < RAW_LOW && self.range + 1 < RANGES.len() {
            self.range += 1;
            self.apply_range()?;
            return Ok(Sample::Ranging);
        }
        Ok(if valid {
            Sample::Lux(lux)
        } else {
            Sample::Ranging
        })
    }
}
