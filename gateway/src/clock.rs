//! Clock repair (PROTOCOL.md "Clock rules at the gateway"): where a report was sent
//! without a valid clock, and how that is put right.
//!
//! A report without a valid clock is kept, marked (`clock_ok = false`) and stamped from
//! the arrival of the boot's report with the highest `up_ms` (or seq) so far. That keeps
//! the spacing of a burst, but not its place: a node replays its buffer oldest first, so
//! each replayed report is the newest so far and lands at its own arrival. So the first
//! report of the boot that carries a valid clock (the node set it from a live ack) fixes
//! the boot's offset: from then on its clock-less reports are placed from that report,
//! and the ones stamped before are placed again ([`crate::store::Writer::restamp`]).
//!
//! Until its boot's offset is known, a stamped report is *held*: compaction and the
//! forwarder leave it (compaction also every later report of its node, so each hour's
//! block is folded in arrival order) for up to [`hold_ms`] after it arrived, so they see
//! its real time, not the stamp. After that it keeps its stamp.

/// How long a stamped report waits for its boot's clock beyond two of its windows
/// (the node sets its clock from the next live ack, and its next report then shows it).
pub const HOLD_MS: i64 = 5 * 60_000;

/// How long a stamped report of a window of `period_s` seconds waits for its boot's
/// clock after it arrived; after that it stays where it was stamped.
pub fn hold_ms(period_s: u16) -> i64 {
    HOLD_MS + 2 * i64::from(period_s) * 1000
}

/// `later − earlier` in ms, whatever the two uptimes.
fn span(later: u64, earlier: u64) -> i64 {
    (i128::from(later) - i128::from(earlier)).clamp(i128::from(i64::MIN), i128::from(i64::MAX))
        as i64
}

/// The boot's first report with a valid clock: it places every report of the boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockFix {
    /// Its seq.
    pub seq: u32,
    /// Its time, Unix ms.
    pub ts: i64,
    /// Its uptime, ms, when it said.
    pub up_ms: Option<u64>,
}

impl ClockFix {
    /// The time of the boot's report `seq` with uptime `up_ms` and window `period_s`:
    /// by uptime where both reports carry it, otherwise by seq.
    pub fn place(&self, seq: u32, up_ms: Option<u64>, period_s: u16) -> i64 {
        match (up_ms, self.up_ms) {
            (Some(up), Some(fix_up)) => self.ts.saturating_add(span(up, fix_up)),
            _ => self.ts.saturating_sub(
                (i64::from(self.seq) - i64::from(seq)) * i64::from(period_s) * 1000,
            ),
        }
    }
}

/// The clock of one node's boot as the gateway knows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BootClock {
    /// The boot's first report with a valid clock, once one arrived.
    pub fix: Option<ClockFix>,
    /// `(up_ms, arrival)` of the clock-less report with the highest `up_ms` so far.
    pub by_uptime: Option<(u64, i64)>,
    /// `(seq, arrival)` of the clock-less report with the highest seq so far.
    pub by_seq: Option<(u32, i64)>,
}

/// Where a report goes in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Its time, Unix ms.
    pub ts: i64,
    /// Whether that is the node's own valid clock.
    pub clock_ok: bool,
    /// This report fixed the boot's clock after reports were stamped without it: those
    /// can now be placed again.
    pub fixes_stamped: bool,
}

/// What the clock needs of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Report counter.
    pub seq: u32,
    /// The node's `ts`.
    pub ts: u64,
    /// The node's `up_ms`.
    pub up_ms: Option<u64>,
    /// Window length, seconds.
    pub period_s: u16,
}

impl BootClock {
    /// Places a report that arrived at `received` (Unix ms), `skew_ms` being how far a
    /// valid clock may run ahead of the gateway's.
    pub fn stamp(&mut self, report: Timing, received: i64, skew_ms: i64) -> Stamp {
        let ts = i64::try_from(report.ts).unwrap_or(i64::MAX);
        if (parklight_protocol::EARLIEST_VALID_TS..=received.saturating_add(skew_ms)).contains(&ts)
        {
            let first = self.fix.is_none();
            if first {
                self.fix = Some(ClockFix {
                    seq: report.seq,
                    ts,
                    up_ms: report.up_ms,
                });
            }
            return Stamp {
                ts,
                clock_ok: true,
                fixes_stamped: first && (self.by_uptime.is_some() || self.by_seq.is_some()),
            };
        }
        let placed = match self.fix {
            Some(fix) => fix.place(report.seq, report.up_ms, report.period_s),
            None => self.by_arrival(report, received),
        };
        // An uptime no boot can have places a report where no clock can be: it keeps its
        // arrival instead.
        let plausible = parklight_protocol::EARLIEST_VALID_TS..=received.saturating_add(skew_ms);
        let stamped = if plausible.contains(&placed) {
            placed
        } else {
            received
        };
        Stamp {
            ts: stamped,
            clock_ok: false,
            fixes_stamped: false,
        }
    }

    /// Whether the boot's reports can be placed by a valid clock.
    pub fn is_fixed(&self) -> bool {
        self.fix.is_some()
    }

    /// PROTOCOL.md: from the arrival of the report with the highest `up_ms` (or seq).
    fn by_arrival(&mut self, report: Timing, received: i64) -> i64 {
        if let Some(up) = report.up_ms
            && self.by_uptime.is_none_or(|(u, _)| up > u)
        {
            self.by_uptime = Some((up, received));
        }
        if self.by_seq.is_none_or(|(s, _)| report.seq > s) {
            self.by_seq = Some((report.seq, received));
        }
        match (report.up_ms, self.by_uptime, self.by_seq) {
            (Some(up), Some((u, a)), _) => a.saturating_add(span(up, u)),
            (_, _, Some((s, a))) => a.saturating_sub(
                (i64::from(s) - i64::from(report.seq)) * i64::from(report.period_s) * 1000,
            ),
            _ => received,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARRIVAL: i64 = 1_800_000_000_000;

    fn clockless(seq: u32, up_ms: Option<u64>) -> Timing {
        Timing {
            seq,
            ts: 0,
            up_ms,
            period_s: 60,
        }
    }

    fn stamped(ts: i64) -> Stamp {
        Stamp {
            ts,
            clock_ok: false,
            fixes_stamped: false,
        }
    }

    #[test]
    fn valid_clocks_are_kept() {
        let mut clock = BootClock::default();
        let report = Timing {
            seq: 0,
            ts: 1_764_093_600_000,
            up_ms: None,
            period_s: 60,
        };
        let stamp = clock.stamp(report, 1_764_093_601_000, 300_000);
        assert_eq!((stamp.ts, stamp.clock_ok), (1_764_093_600_000, true));
        // An hour ahead of its arrival: no valid clock; placed by the boot's fix.
        let ahead = Timing {
            seq: 1,
            ts: 1_764_097_200_000,
            ..report
        };
        assert_eq!(
            clock.stamp(ahead, 1_764_093_660_500, 300_000),
            stamped(1_764_093_660_000)
        );
    }

    #[test]
    fn clockless_reports_keep_their_spacing_by_uptime() {
        let mut clock = BootClock::default();
        // A burst of resent reports arrives at once: spaced by their up_ms.
        let stamps = [
            clock.stamp(clockless(5, Some(360_000)), ARRIVAL, 0),
            clock.stamp(clockless(3, Some(240_000)), ARRIVAL + 5, 0),
            clock.stamp(clockless(6, Some(420_000)), ARRIVAL + 10, 0),
        ];
        assert_eq!(
            stamps,
            [
                stamped(ARRIVAL),
                stamped(ARRIVAL - 120_000),
                stamped(ARRIVAL + 10)
            ]
        );
    }

    #[test]
    fn uptimes_far_apart_do_not_overflow() {
        let fix = ClockFix {
            seq: 0,
            ts: ARRIVAL,
            up_ms: Some(u64::MAX),
        };
        assert_eq!(fix.place(1, Some(0), 60), ARRIVAL + i64::MIN);
        // Placed that far back, a report keeps its arrival.
        let mut clock = BootClock::default();
        clock.stamp(clockless(1, Some(u64::MAX)), ARRIVAL, 0);
        assert_eq!(clock.stamp(clockless(0, Some(0)), ARRIVAL, 0).ts, ARRIVAL);
    }

    #[test]
    fn clockless_reports_without_uptime_are_spaced_by_seq() {
        let mut clock = BootClock::default();
        assert_eq!(
            clock.stamp(clockless(10, None), ARRIVAL, 0),
            stamped(ARRIVAL)
        );
        assert_eq!(
            clock.stamp(clockless(7, None), ARRIVAL + 3, 0),
            stamped(ARRIVAL - 180_000)
        );
    }

    #[test]
    fn the_first_valid_clock_fixes_the_boot_and_places_its_replayed_reports() {
        // Thirty windows buffered offline without a clock, replayed oldest first within
        // seconds: by arrival, each is the newest so far and lands at its own arrival.
        let mut clock = BootClock::default();
        let boot_at = ARRIVAL - 40 * 60_000;
        for seq in 0..30 {
            let stamp = clock.stamp(
                clockless(seq, Some(u64::from(seq + 1) * 60_000)),
                ARRIVAL + i64::from(seq) * 100,
                0,
            );
            assert_eq!(stamp.ts, ARRIVAL + i64::from(seq) * 100);
        }
        // The node sets its clock from the ack; its next report carries it.
        let live = Timing {
            seq: 30,
            ts: (boot_at + 31 * 60_000) as u64,
            up_ms: Some(31 * 60_000),
            period_s: 60,
        };
        let stamp = clock.stamp(live, ARRIVAL + 60_000, 300_000);
        assert!(stamp.clock_ok && stamp.fixes_stamped);
        let fix = clock.fix.unwrap();
        for seq in 0..30u32 {
            let up = u64::from(seq + 1) * 60_000;
            assert_eq!(fix.place(seq, Some(up), 60), boot_at + up as i64);
            assert_eq!(fix.place(seq, None, 60), boot_at + up as i64, "by seq");
        }
        // A late clock-less report of the boot is placed by the fix at once.
        assert_eq!(
            clock.stamp(clockless(2, Some(180_000)), ARRIVAL + 99_000, 0),
            stamped(boot_at + 180_000)
        );
        // A boot that always had a clock has nothing to place again.
        let mut always = BootClock::default();
        assert!(!always.stamp(live, ARRIVAL, 300_000).fixes_stamped);
    }

    #[test]
    fn an_uptime_no_boot_can_have_keeps_the_arrival() {
        let mut clock = BootClock::default();
        let fix = Timing {
            seq: 1,
            ts: ARRIVAL as u64,
            up_ms: Some(1000),
            period_s: 60,
        };
        assert!(clock.stamp(fix, ARRIVAL, 300_000).clock_ok);
        let later = ARRIVAL + 60_000;
        for up_ms in [u64::MAX, 1000 + 400 * 86_400_000] {
            let hostile = clock.stamp(clockless(2, Some(up_ms)), later, 300_000);
            assert_eq!(hostile, stamped(later), "up_ms {up_ms}");
        }
        // Without a fix, an uptime far below the boot's highest goes back before 2020.
        let mut clock = BootClock::default();
        clock.stamp(clockless(1, Some(u64::MAX / 2)), ARRIVAL, 300_000);
        assert_eq!(
            clock.stamp(clockless(2, Some(0)), ARRIVAL, 300_000),
            stamped(ARRIVAL)
        );
    }
}
