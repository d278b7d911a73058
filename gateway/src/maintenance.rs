//! Housekeeping of the store: fold closed hours into compressed blocks, then drop raw
//! rows past the retention. Runs at start and every ten minutes, on its own connection,
//! one block per transaction, so ingest is never held up for long.

use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::sinks::influxdb;
use crate::store::{Forwarded, StorageError, Store};

/// How often housekeeping runs.
pub const EVERY: Duration = Duration::from_secs(600);
/// An hour counts as closed this long after it ends (reports of it may still arrive).
pub const GRACE_MS: i64 = 15 * 60_000;

/// What housekeeping needs.
#[derive(Debug, Clone)]
pub struct Housekeeping {
    /// The store's folder.
    pub store: PathBuf,
    /// Raw reports are kept this many days.
    pub retention_days: u32,
    /// Whether a forwarder runs (rows it has not sent are kept).
    pub forwarding: bool,
    /// Dead letters kept (the store enforces it on every write).
    pub dead_letters_max: usize,
}

/// One round: compact, then retain.
pub fn tidy(settings: &Housekeeping, now_ms: i64) -> Result<(), StorageError> {
    let mut store = Store::open(&settings.store, settings.dead_letters_max)?;
    let compaction = store.compact(now_ms - GRACE_MS)?;
    let forwarded = if settings.forwarding {
        Some(Forwarded {
            reports: store.cursor(influxdb::CURSOR)?,
            statuses: store.cursor(influxdb::STATUS_CURSOR)?,
        })
    } else {
        None
    };
    let horizon = now_ms - i64::from(settings.retention_days) * 86_400_000;
    let removed = store.retain(horizon, forwarded)?;
    if compaction.blocks > 0 || removed > 0 {
        tracing::info!(
            blocks = compaction.blocks,
            folded = compaction.reports,
            removed,
            "store compacted"
        );
    }
    Ok(())
}

/// Runs [`tidy`] at start and every [`EVERY`] until `stop`.
pub async fn run(settings: Housekeeping, stop: CancellationToken) {
    loop {
        let round = settings.clone();
        let now = jiff::Timestamp::now().as_millisecond();
        match tokio::task::spawn_blocking(move || tidy(&round, now)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::error!(%error, "store housekeeping failed; retrying later"),
            Err(error) => tracing::error!(%error, "store housekeeping panicked"),
        }
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = stop.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::history::FOLDED;
    use crate::store::{HOUR_MS, Selector};

    const HOUR: i64 = 1_764_093_600_000;

    /// A store in `dir` with two hours of one node's reports, each received as it was made.
    fn two_hours(dir: &std::path::Path) -> Store {
        let mut store = Store::open(dir, 10).unwrap();
        let mut writer = store.write().unwrap();
        let node = writer.node("pole-017").unwrap();
        for seq in 0..120 {
            let mut row = crate::store::tests::report(1, seq);
            row.ts = HOUR + i64::from(seq) * 60_000;
            row.received = row.ts;
            writer.report(node, &row).unwrap();
        }
        writer.commit().unwrap();
        store
    }

    fn settings(dir: &std::path::Path, forwarding: bool) -> Housekeeping {
        Housekeeping {
            store: dir.to_owned(),
            retention_days: 1,
            forwarding,
            dead_letters_max: 10,
        }
    }

    #[test]
    fn a_round_folds_closed_hours_and_keeps_what_the_forwarder_has_not_sent() {
        let dir = tempfile::tempdir().unwrap();
        let store = two_hours(dir.path());
        store.set_cursor(influxdb::CURSOR, 30).unwrap();
        // Two days on: both hours are closed and past the retention.
        tidy(&settings(dir.path(), true), HOUR + 2 * 86_400_000).unwrap();
        let series = store
            .series(
                Selector::Node("pole-017"),
                HOUR,
                HOUR + 2 * HOUR_MS,
                HOUR_MS,
            )
            .unwrap();
        assert_eq!(
            series.iter().map(|b| b.reports).collect::<Vec<_>>(),
            [60, 60]
        );
        assert_eq!(store.report_count().unwrap(), 90, "30 sent, so 30 gone");
    }

    #[test]
    fn an_hour_stays_open_for_the_grace_after_it_ends() {
        let dir = tempfile::tempdir().unwrap();
        let store = two_hours(dir.path());
        tidy(
            &settings(dir.path(), false),
            HOUR + 2 * HOUR_MS + GRACE_MS - 1,
        )
        .unwrap();
        assert_eq!(
            store.cursor(FOLDED).unwrap(),
            60,
            "only the first hour folded"
        );
        tidy(&settings(dir.path(), false), HOUR + 2 * HOUR_MS + GRACE_MS).unwrap();
        assert_eq!(store.cursor(FOLDED).unwrap(), 120);
        assert_eq!(store.report_count().unwrap(), 120, "within the retention");
    }
}
