//! The report buffer of PROTOCOL.md "Stored acknowledgement".
//!
//! Every report stays here until an ack covers it. The buffer decides what to (re)send
//! and when; the node does the publishing.

use parklight_protocol::{Ack, ReportId, Telemetry};

/// A buffered report and its sending history on the current connection.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The report.
    pub report: Telemetry,
    /// When it was last sent (network ms), `None` when not yet on this connection.
    sent_at_ms: Option<u64>,
    /// How often it was sent again after its first send.
    resends: u8,
    /// Whether it was ever sent.
    sent: bool,
}

/// Reports held until acknowledged, oldest first, at most `N`.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportBuffer<const N: usize> {
    entries: heapless::Vec<Entry, N>,
}

impl<const N: usize> Default for ReportBuffer<N> {
    fn default() -> Self {
        ReportBuffer {
            entries: heapless::Vec::new(),
        }
    }
}

impl<const N: usize> ReportBuffer<N> {
    /// When full, drops the oldest report and returns it, so one more fits.
    pub fn make_room(&mut self) -> Option<Telemetry> {
        self.entries
            .is_full()
            .then(|| self.entries.remove(0).report)
    }

    /// Adds a report, dropping the oldest when full; returns the one dropped.
    pub fn push(&mut self, report: Telemetry) -> Option<Telemetry> {
        let dropped = self.make_room();
        let entry = Entry {
            report,
            sent_at_ms: None,
            resends: 0,
            sent: false,
        };
        // Cannot fail: there is room now.
        let _ = self.entries.push(entry);
        dropped
    }

    /// Drops what `ack` covers; returns how many.
    pub fn ack(&mut self, ack: &Ack) -> usize {
        let before = self.entries.len();
        self.entries.retain(|e| !ack.covers(e.report.id()));
        before - self.entries.len()
    }

    /// The oldest report held.
    pub fn oldest(&self) -> Option<ReportId> {
        self.entries.first().map(|e| e.report.id())
    }

    /// Reports held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The reports held, oldest first.
    pub fn reports(&self) -> impl Iterator<Item = &Telemetry> {
        self.entries.iter().map(|e| &e.report)
    }

    /// The connection dropped: everything must go out again after the next connect.
    pub fn connection_lost(&mut self) {
        self.entries.iter_mut().for_each(|e| e.sent_at_ms = None);
    }

    /// The oldest report that should go out now: never sent on this connection, or
    /// unacknowledged `ack_timeout_ms` after its last send.
    pub fn next_due(&self, now_ms: u64, ack_timeout_ms: u64) -> Option<usize> {
        self.entries.iter().position(|e| match e.sent_at_ms {
            None => true,
            Some(at) => now_ms.saturating_sub(at) >= ack_timeout_ms,
        })
    }

    /// Whether the report at `index` has been sent `max_resends` times again already.
    pub fn exhausted(&self, index: usize, max_resends: u8) -> bool {
        self.entries
            .get(index)
            .is_some_and(|e| e.sent && e.resends >= max_resends)
    }

    /// Removes the report at `index` (given up on).
    pub fn remove(&mut self, index: usize) -> Option<Telemetry> {
        (index < self.entries.len()).then(|| self.entries.remove(index).report)
    }

    /// Records a send of the report at `index` and returns it.
    pub fn mark_sent(&mut self, index: usize, now_ms: u64) -> Option<&Telemetry> {
        let entry = self.entries.get_mut(index)?;
        if entry.sent {
            entry.resends = entry.resends.saturating_add(1);
        }
        entry.sent = true;
        entry.sent_at_ms = Some(now_ms);
        Some(&entry.report)
    }

    /// Index of the newest report.
    pub fn last_index(&self) -> Option<usize> {
        self.entries.len().checked_sub(1)
    }
}
