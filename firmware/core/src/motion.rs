//! Motion: turns a PIR output pin into detections.

/// Debounces a PIR output and counts one detection per trigger.
///
/// A rising edge becomes a detection once the pin has stayed high for `debounce_ms`
/// (shorter pulses are noise). After a detection, edges within `hold_off_ms` of it are
/// re-triggers of the same presence and do not count again.
#[derive(Debug, Clone)]
pub struct MotionDetector {
    debounce_ms: u64,
    hold_off_ms: u64,
    high_since: Option<u64>,
    last_detection: Option<u64>,
}

impl MotionDetector {
    /// A detector with the given debounce and hold-off times.
    pub const fn new(debounce_ms: u64, hold_off_ms: u64) -> Self {
        MotionDetector {
            debounce_ms,
            hold_off_ms,
            high_since: None,
            last_detection: None,
        }
    }

    /// The pin changed to `high` at `now_ms`. Returns true when this completes a detection.
    pub fn edge(&mut self, high: bool, now_ms: u64) -> bool {
        if high {
            if self.high_since.is_none() {
                self.high_since = Some(now_ms);
            }
            false
        } else {
            let detected = self.check(now_ms);
            self.high_since = None;
            detected
        }
    }

    /// Time passes with the pin unchanged. Returns true when a long pulse completes a detection.
    pub fn poll(&mut self, now_ms: u64) -> bool {
        self.check(now_ms)
    }

    fn check(&mut self, now_ms: u64) -> bool {
        let Some(since) = self.high_since else {
            return false;
        };
        let long_enough = now_ms.saturating_sub(since) >= self.debounce_ms;
        let held_off = self
            .last_detection
            .is_some_and(|last| since.saturating_sub(last) < self.hold_off_ms);
        if long_enough && !held_off {
            self.last_detection = Some(since);
            // Count the pulse once, even if it stays high.
            self.high_since = None;
            return true;
        }
        false
    }
}

impl Default for MotionDetector {
    /// 50 ms debounce, 2 s hold-off: typical for a PIR module that holds its output 1–2 s.
    fn default() -> Self {
        MotionDetector::new(50, 2_000)
    }
}

#[cfg(test)]
mod tests {
    use super::MotionDetector;

    #[test]
    fn one_count_per_pulse_and_glitches_ignored() {
        let mut pir = MotionDetector::default();
        assert!(!pir.edge(true, 1_000));
        assert!(pir.edge(false, 2_000));
        // a 10 ms glitch is not a detection
        assert!(!pir.edge(true, 5_000));
        assert!(!pir.edge(false, 5_010));
        // a long pulse counts once, on poll
        assert!(!pir.edge(true, 9_000));
        assert!(pir.poll(9_100));
        assert!(!pir.poll(12_000));
        assert!(!pir.edge(false, 15_000));
    }

    #[test]
    fn retriggers_within_hold_off_do_not_count() {
        let mut pir = MotionDetector::default();
        pir.edge(true, 0);
        assert!(pir.edge(false, 500));
        pir.edge(true, 1_500);
        assert!(!pir.edge(false, 1_900));
        pir.edge(true, 2_100);
        assert!(pir.edge(false, 2_600));
    }
}
