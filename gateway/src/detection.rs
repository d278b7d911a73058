//! The detection task: reads the journal (reports and facts in commit order) after its
//! cursor, runs the [`crate::detect`] state machines, and stores their output with the
//! cursor in one transaction, so a crash between commit and detection loses and repeats
//! nothing. It keeps a snapshot of the detectors' state now and then; a restart replays
//! the journal from the snapshot, storing only what was not stored before.
//!
//! Liveness is decided here too, on the wall clock: a node placed in a site that has not
//! reported for 3 intervals (after a start-up grace of 3 intervals) gets a `silent`
//! fact, stored in commit order like any other, so a replay sees the same decision.

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use metrics::counter;
use parklight_site::Site;
use tokio_util::sync::CancellationToken;

use crate::detect::model::Model;
use crate::detect::{Detector, Output, Settings, State};
use crate::metrics as m;
use crate::store::{Position, StorageError, Store};

/// Intervals of silence that make a node offline, and of grace after a start.
pub const SILENT_INTERVALS: i64 = 3;

/// What the detection task needs.
#[derive(Debug, Clone)]
pub struct DetectionSettings {
    /// The store's folder.
    pub store: PathBuf,
    /// Dead letters kept (for opening the store).
    pub dead_letters_max: usize,
    /// Time between snapshots of the detectors' state.
    pub snapshot_every: Duration,
    /// Most reports judged per transaction.
    pub batch: usize,
    /// The detectors' thresholds.
    pub detectors: Settings,
}

impl DetectionSettings {
    /// The settings for the store in `store`.
    pub fn new(store: PathBuf, dead_letters_max: usize) -> DetectionSettings {
        DetectionSettings {
            store,
            dead_letters_max,
            snapshot_every: Duration::from_secs(60),
            batch: 5000,
            detectors: Settings::default(),
        }
    }
}

/// The detectors with what they have read, resumed from the store's snapshot.
struct Running {
    detector: Detector,
    read: Position,
    snapshot_at: Instant,
}

fn wall_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

impl Running {
    /// Resumes from the kept state and replays, without storing, what was judged after it.
    fn resume(
        store: &mut Store,
        model: Model,
        settings: &Settings,
    ) -> Result<Running, StorageError> {
        let (read, state) = match store.detector_state()? {
            Some((position, text)) => match serde_json::from_str::<State>(&text) {
                Ok(state) => (position, state),
                Err(error) => {
                    tracing::warn!(%error, "the detectors' kept state cannot be read; starting afresh");
                    (Position::default(), State::default())
                }
            },
            None => {
                store.save_detector_state(Position::default(), "{}")?;
                (Position::default(), State::default())
            }
        };
        let mut running = Running {
            detector: Detector::new(model, settings.clone(), state),
            read,
            snapshot_at: Instant::now(),
        };
        let stored = store.detected()?;
        let mut ignored = Vec::new();
        while running.read.report < stored.report || running.read.fact < stored.fact {
            let (entries, position) = store.journal_after(running.read, 5000, Some(stored))?;
            if position == running.read {
                break;
            }
            for entry in &entries {
                running.detector.apply(&entry.fact, &mut ignored);
            }
            ignored.clear();
            running.read = position;
        }
        Ok(running)
    }

    /// Judges what the journal holds after the cursor; true when there may be more.
    fn round(&mut self, store: &mut Store, batch: usize) -> Result<bool, StorageError> {
        let (entries, position) = store.journal_after(self.read, batch, None)?;
        if position == self.read {
            return Ok(false);
        }
        let mut out = Vec::new();
        for entry in &entries {
            self.detector.apply(&entry.fact, &mut out);
        }
        store.record_detection(&out, position, wall_ms())?;
        counter!(m::DETECTOR_FACTS).increment(entries.len() as u64);
        for output in &out {
            if let Output::Transition(t) = output {
                let active = if t.active { "true" } else { "false" };
                counter!(m::CONDITION_TRANSITIONS, "kind" => t.kind.as_str(), "active" => active)
                    .increment(1);
                tracing::info!(kind = t.kind.as_str(), site = %t.site, zone = ?t.zone, node = ?t.node, active = t.active, severity = t.severity.as_str(), detail = %t.detail, "condition");
            }
        }
        self.read = position;
        Ok(entries.len() >= batch)
    }

    fn snapshot(&mut self, store: &mut Store) -> Result<(), StorageError> {
        let state = serde_json::to_string(self.detector.state())
            .map_err(|e| StorageError::Corrupt(format!("detector state: {e}")))?;
        store.save_detector_state(self.read, &state)?;
        self.snapshot_at = Instant::now();
        Ok(())
    }

    /// Stores a `silent` fact for each placed node that has not reported for
    /// [`SILENT_INTERVALS`] intervals, once the start-up grace is over.
    fn liveness(&self, store: &mut Store, model: &Model, started: i64) -> Result<(), StorageError> {
        let now = wall_ms();
        let state = self.detector.state();
        let silent: Vec<_> = model
            .places()
            .filter(|place| {
                let limit = SILENT_INTERVALS * place.interval_ms;
                let node = state.nodes.get(&place.id);
                let heard = node
                    .and_then(|n| n.last)
                    .map_or(started, |(_, received)| received);
                now - started >= limit && now - heard >= limit && !node.is_some_and(|n| n.is_away())
            })
            .collect();
        if silent.is_empty() {
            return Ok(());
        }
        let mut writer = store.write()?;
        for place in &silent {
            let node = writer.node(&place.id, &place.site)?;
            writer.fact(node, "silent", None, None, now)?;
        }
        writer.commit()?;
        counter!(m::NODES_SILENT).increment(silent.len() as u64);
        Ok(())
    }
}

/// What the detectors give for the whole journal of `store`, judged from an empty state:
/// the same facts give the same output, live or replayed.
pub fn replay(
    store: &Store,
    sites: &[Site],
    settings: &Settings,
) -> Result<Vec<Output>, StorageError> {
    let mut detector = Detector::new(Model::of(sites), settings.clone(), State::default());
    let mut read = Position::default();
    let mut out = Vec::new();
    loop {
        let (entries, position) = store.journal_after(read, 5000, None)?;
        if position == read {
            return Ok(out);
        }
        for entry in &entries {
            detector.apply(&entry.fact, &mut out);
        }
        read = position;
    }
}

/// Runs until `stop`: a round whenever `wake` says the writer committed, and every
/// second for liveness.
pub fn run(
    settings: DetectionSettings,
    sites: &[Site],
    wake: Receiver<()>,
    stop: CancellationToken,
) -> Result<(), StorageError> {
    let mut store = Store::open(&settings.store, settings.dead_letters_max)?;
    let model = Model::of(sites);
    let started = wall_ms();
    let mut running = Running::resume(&mut store, model.clone(), &settings.detectors)?;
    loop {
        let step = (|| -> Result<(), StorageError> {
            while running.round(&mut store, settings.batch)? {}
            running.liveness(&mut store, &model, started)?;
            if running.snapshot_at.elapsed() >= settings.snapshot_every {
                running.snapshot(&mut store)?;
            }
            Ok(())
        })();
        match step {
            Ok(()) => {}
            Err(error) if error.is_transient() => {
                tracing::warn!(%error, "detection round failed; retrying");
            }
            Err(error) => return Err(error),
        }
        if stop.is_cancelled() {
            break;
        }
        match wake.recv_timeout(Duration::from_secs(1)) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                // The writer is gone: judge what it stored, then stop.
                while running.round(&mut store, settings.batch)? {}
                break;
            }
        }
    }
    running.snapshot(&mut store)
}
