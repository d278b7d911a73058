//! One report window: lux min/avg/max, motion count and metered power.

use parklight_protocol::Lux;

/// What a node measures between two reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// Start, ms since boot.
    pub start_ms: u64,
    /// End, ms since boot.
    pub end_ms: u64,
    lux_min: f64,
    lux_max: f64,
    lux_sum: f64,
    lux_samples: u32,
    motion: u32,
    power_sum: f64,
    power_samples: u32,
}

impl Window {
    /// An empty window from `start_ms` to `end_ms`.
    pub fn new(start_ms: u64, end_ms: u64) -> Self {
        Window {
            start_ms,
            end_ms,
            lux_min: f64::INFINITY,
            lux_max: f64::NEG_INFINITY,
            lux_sum: 0.0,
            lux_samples: 0,
            motion: 0,
            power_sum: 0.0,
            power_samples: 0,
        }
    }

    /// A valid lux sample.
    pub fn lux(&mut self, lux: f64) {
        let lux = lux.clamp(0.0, parklight_protocol::telemetry::MAX_LUX);
        self.lux_min = self.lux_min.min(lux);
        self.lux_max = self.lux_max.max(lux);
        self.lux_sum += lux;
        self.lux_samples += 1;
    }

    /// A motion detection.
    pub fn motion(&mut self) {
        self.motion = self.motion.saturating_add(1);
    }

    /// A power reading in watts.
    pub fn power(&mut self, watts: f64) {
        self.power_sum += watts.max(0.0);
        self.power_samples += 1;
    }

    /// Lux over the window; `None` when no sample was valid (the sensor failed).
    pub fn lux_summary(&self) -> Option<Lux> {
        (self.lux_samples > 0).then(|| Lux {
            min: self.lux_min,
            // Rounding can put the mean a hair outside [min, max].
            avg: (self.lux_sum / f64::from(self.lux_samples)).clamp(self.lux_min, self.lux_max),
            max: self.lux_max,
        })
    }

    /// Detections in the window.
    pub fn motion_count(&self) -> u32 {
        self.motion
    }

    /// Mean metered power, where the node meters it.
    pub fn power_w(&self) -> Option<f64> {
        (self.power_samples > 0).then(|| self.power_sum / f64::from(self.power_samples))
    }

    /// Length in whole seconds, 1 to 3600.
    pub fn period_s(&self) -> u16 {
        let seconds = (self.end_ms.saturating_sub(self.start_ms) + 500) / 1000;
        seconds.clamp(1, 3600) as u16
    }
}
