//! Housekeeping of the store: fold closed hours into compressed blocks, then drop raw
//! rows past the retention. Runs at start and every `[storage] housekeeping_interval_s`,
//! on its own connection, one block per transaction, so ingest is never held up for
//! long. Every step that writes after reading holds the write lock from its start, so a
//! commit of the writer in between cannot make it fail.

use std::path::PathBuf;
use std::time::Duration;

use metrics::counter;
use tokio_util::sync::CancellationToken;

use crate::metrics as m;
use crate::sinks::influxdb;
use crate::store::{Forwarded, StorageError, Store};
use crate::supervise::Supervisor;

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
    /// Whether the detectors run: rows they have not judged are kept, and no raw row
    /// goes before they have kept a state at all (a store they never ran on, such as a
    /// backfill or one from before them, would otherwise lose what they have not read).
    pub detecting: bool,
    /// Dead letters kept (the store enforces it on every write).
    pub dead_letters_max: usize,
    /// Time between rounds.
    pub every: Duration,
}

/// What one round did.
#[derive(Debug, Default)]
pub struct Round {
    /// The compaction, or why it failed.
    pub compaction: Option<Result<crate::store::Compaction, StorageError>>,
    /// Raw rows removed, or why retention failed.
    pub retention: Option<Result<u64, StorageError>>,
}

/// One round: compact, then retain; retention runs even when compaction failed (it
/// drops only what blocks already hold). Failures are counted and logged. `stop` ends
/// the round early (a first round after a long time, or with a shorter retention, can
/// take minutes).
pub fn tidy(settings: &Housekeeping, now_ms: i64, stop: &dyn Fn() -> bool) -> Round {
    counter!(m::HOUSEKEEPING_ROUNDS).increment(1);
    let mut store = match Store::open(&settings.store, settings.dead_letters_max) {
        Ok(store) => store,
        Err(error) => {
            counter!(m::HOUSEKEEPING_FAILURES, "step" => "compaction").increment(1);
            tracing::error!(%error, "housekeeping cannot open the store; retrying next round");
            return Round {
                compaction: Some(Err(error)),
                retention: None,
            };
        }
    };
    let compaction = store.compact(now_ms - GRACE_MS, stop);
    let horizon = now_ms - i64::from(settings.retention_days) * 86_400_000;
    let retention = match store.detector_state() {
        Ok(None) if settings.detecting => Ok(0),
        Err(error) => Err(error),
        _ => forwarded(&store, settings.forwarding)
            .and_then(|forwarded| store.retain(horizon, forwarded, stop)),
    };
    for (step, error) in [
        ("compaction", compaction.as_ref().err()),
        ("retention", retention.as_ref().err()),
    ] {
        if let Some(error) = error {
            counter!(m::HOUSEKEEPING_FAILURES, "step" => step).increment(1);
            tracing::error!(step, %error, "housekeeping step failed; retrying next round");
        }
    }
    if let (Ok(done), Ok(removed)) = (&compaction, &retention)
        && (done.blocks > 0 || *removed > 0)
    {
        tracing::info!(
            blocks = done.blocks,
            folded = done.reports,
            removed,
            "store compacted"
        );
    }
    Round {
        compaction: Some(compaction),
        retention: Some(retention),
    }
}

/// How far the forwarder has sent, when one runs.
fn forwarded(store: &Store, forwarding: bool) -> Result<Option<Forwarded>, StorageError> {
    if !forwarding {
        return Ok(None);
    }
    Ok(Some(Forwarded {
        reports: store.cursor(influxdb::CURSOR)?,
        statuses: store.cursor(influxdb::STATUS_CURSOR)?,
        windows: store.cursor(influxdb::WINDOW_CURSOR)?,
    }))
}

/// Runs [`tidy`] at start and every [`Housekeeping::every`] until `stop`; a round that
/// panics fails the gateway.
pub async fn run(settings: Housekeeping, supervisor: Supervisor, stop: CancellationToken) {
    loop {
        let (round, stopping) = (settings.clone(), stop.clone());
        let now = jiff::Timestamp::now().as_millisecond();
        let tidied =
            tokio::task::spawn_blocking(move || tidy(&round, now, &|| stopping.is_cancelled()));
        if let Err(error) = tidied.await {
            supervisor.fail("housekeeping", error);
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(settings.every) => {}
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

    /// A round that runs to its end.
    fn never() -> bool {
        false
    }

    /// A store in `dir` with two hours of one node's reports, each received as it was made.
    fn two_hours(dir: &std::path::Path) -> Store {
        let mut store = Store::open(dir, 10).unwrap();
        let mut writer = store.write().unwrap();
        let node = writer.node("pole-017", "remiseparken").unwrap();
        for seq in 0..120 {
            let mut row = crate::store::tests::report(1, seq);
            row.ts = HOUR + i64::from(seq) * 60_000;
            row.received = row.ts;
            writer.report(node, &row, Default::default()).unwrap();
        }
        writer.commit().unwrap();
        store
    }

    fn settings(dir: &std::path::Path, forwarding: bool) -> Housekeeping {
        Housekeeping {
            store: dir.to_owned(),
            retention_days: 1,
            forwarding,
            detecting: false,
            dead_letters_max: 10,
            every: Duration::from_secs(600),
        }
    }

    #[test]
    fn a_round_folds_closed_hours_and_keeps_what_the_forwarder_has_not_sent() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = two_hours(dir.path());
        store.set_cursor(influxdb::CURSOR, 30).unwrap();
        // Two days on: both hours are closed and past the retention.
        tidy(&settings(dir.path(), true), HOUR + 2 * 86_400_000, &never);
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
        assert_eq!(store.raw_report_count().unwrap(), 90, "30 sent, so 30 gone");
    }

    #[test]
    fn no_raw_row_goes_before_the_detectors_have_kept_a_state() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = two_hours(dir.path());
        let detecting = Housekeeping {
            detecting: true,
            ..settings(dir.path(), false)
        };
        let later = HOUR + 2 * 86_400_000;
        let round = tidy(&detecting, later, &never);
        assert_eq!(round.retention.unwrap().unwrap(), 0);
        assert_eq!(store.raw_report_count().unwrap(), 120, "none judged yet");
        // They have read the first hour.
        let read = crate::store::Position {
            report: 60,
            fact: 0,
        };
        store.save_detector_state(read, "{}").unwrap();
        tidy(&detecting, later, &never);
        assert_eq!(
            store.raw_report_count().unwrap(),
            60,
            "the hour judged is gone"
        );
    }

    #[test]
    fn an_hour_stays_open_for_the_grace_after_it_ends() {
        let dir = tempfile::tempdir().unwrap();
        let store = two_hours(dir.path());
        tidy(
            &settings(dir.path(), false),
            HOUR + 2 * HOUR_MS + GRACE_MS - 1,
            &never,
        );
        assert_eq!(
            store.cursor(FOLDED).unwrap(),
            60,
            "only the first hour folded"
        );
        tidy(
            &settings(dir.path(), false),
            HOUR + 2 * HOUR_MS + GRACE_MS,
            &never,
        );
        assert_eq!(store.cursor(FOLDED).unwrap(), 120);
        assert_eq!(
            store.raw_report_count().unwrap(),
            120,
            "within the retention"
        );
    }

    #[test]
    fn rounds_never_fail_while_the_writer_commits_at_full_rate() {
        let dir = tempfile::tempdir().unwrap();
        let now = HOUR + 10 * 86_400_000;
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
        // The gateway makes its store before anything else opens it.
        drop(Store::open(dir.path(), 10).unwrap());
        let (writing, rounds) = (AtomicBool::new(true), AtomicUsize::new(0));
        let (written, failed) = std::thread::scope(|scope| {
            let writer = scope.spawn(|| {
                // The writer's own connection: small commits, one after the other, of
                // reports spread over closed hours; the first thousand arrived long ago.
                // It goes on until ten rounds ran beside it (at most 20 000 commits).
                let mut store = Store::open(dir.path(), 10).unwrap();
                let mut seq = 0;
                for commit in 0..20_000 {
                    if !writing.load(Relaxed) || commit >= 100 && rounds.load(Relaxed) >= 10 {
                        break;
                    }
                    let mut writer = store.write().unwrap();
                    let node = writer.node("pole-017", "remiseparken").unwrap();
                    for _ in 0..10 {
                        let mut row = crate::store::tests::report(1, seq);
                        row.ts = HOUR + i64::from(seq % 200) * HOUR_MS / 2;
                        row.received = if seq < 1000 { HOUR } else { now };
                        writer.report(node, &row, Default::default()).unwrap();
                        seq += 1;
                    }
                    writer.commit().unwrap();
                }
                writing.store(false, Relaxed);
                seq
            });
            let mut failed = None;
            while writing.load(Relaxed) {
                let round = tidy(&settings(dir.path(), false), now, &never);
                if !matches!(
                    (&round.compaction, &round.retention),
                    (Some(Ok(_)), Some(Ok(_)))
                ) {
                    failed = Some(format!("{round:?}"));
                    writing.store(false, Relaxed);
                }
                rounds.fetch_add(1, Relaxed);
            }
            (writer.join().unwrap(), failed)
        });
        assert_eq!(failed, None, "a round failed");
        let rounds = rounds.into_inner();
        assert!(rounds >= 10, "{rounds} rounds while the writer wrote");
        let round = tidy(&settings(dir.path(), false), now, &never);
        assert!(matches!(round.compaction, Some(Ok(_))));
        let store = Store::open(dir.path(), 10).unwrap();
        assert_eq!(store.report_count().unwrap(), u64::from(written));
        assert_eq!(
            store.cursor(FOLDED).unwrap(),
            i64::from(written),
            "every closed hour folded"
        );
        // Raw rows past the retention went; the rest stay.
        assert_eq!(store.raw_report_count().unwrap(), u64::from(written) - 1000);
    }
}
