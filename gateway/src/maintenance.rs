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
