//! The detection task: reads the journal (reports and facts in commit order) after its
//! cursor, runs the [`crate::detect`] state machines, and stores their output with the
//! cursor in one transaction, so a crash between commit and detection loses and repeats
//! nothing. It keeps a snapshot of the detectors' state now and then; a restart replays
//! the journal from the snapshot, storing only what was not stored before.
//!
//! Liveness is decided here too, on the wall clock: a node placed in a site that has not
//! reported for 3 intervals (after a start-up grace of 3 intervals) gets a `silent`
//! fact, and one online for 3 intervals after a config was published for it without
//! running it a `config_late` fact, stored in commit order like any other, so a replay
//! sees the same decisions.

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant};

use metrics::counter;
use parklight_site::Site;
use tokio_util::sync::CancellationToken;

use crate::detect::model::{Model, Place};
use crate::detect::node::NodeState;
use crate::detect::{Detector, Output, Settings, State};
use crate::metrics as m;
use crate::store::{Position, StorageError, Store};

/// Intervals of silence that make a node offline, and of grace after a start.
pub const SILENT_INTERVALS: i64 = 3;

/// Whether the gateway hears the broker, and since when. Silence means nothing while it
/// does not, and after it does again nodes get a grace of [`SILENT_INTERVALS`]
/// intervals, as after a start.
#[derive(Debug, Default)]
pub struct BrokerLink {
    /// Wall-clock Unix ms of the current connection; 0 while there is none.
    connected_at: AtomicI64,
}

impl BrokerLink {
    /// Connected (again) at wall time `now`.
    pub fn connected(&self, now: i64) {
        self.connected_at.store(now.max(1), Ordering::Relaxed);
    }

    /// The connection broke.
    pub fn lost(&self) {
        self.connected_at.store(0, Ordering::Relaxed);
    }

    /// Since when it is connected, if it is.
    pub fn since(&self) -> Option<i64> {
        Some(self.connected_at.load(Ordering::Relaxed)).filter(|at| *at > 0)
    }
}

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
        let (read, mut state) = match store.detector_state()? {
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
        // A state kept before config checks holds no published version: the latest one.
        for (name, (cfg, _, _)) in store.latest_configs()? {
            let node = state.nodes.entry(name).or_default();
            node.desired_cfg = node.desired_cfg.or(Some((cfg, wall_ms())));
        }
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
    /// `recorded` is told when condition transitions were stored.
    fn round(
        &mut self,
        store: &mut Store,
        batch: usize,
        recorded: &SyncSender<()>,
    ) -> Result<bool, StorageError> {
        let (entries, position) = store.journal_after(self.read, batch, None)?;
        if position == self.read {
            return Ok(false);
        }
        let mut out = Vec::new();
        for entry in &entries {
            self.detector.apply(&entry.fact, &mut out);
        }
        store.record_detection(&out, position, wall_ms())?;
        if out.iter().any(|o| matches!(o, Output::Transition(_))) {
            let _ = recorded.try_send(());
        }
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

    /// Stores a `silent` fact for each placed node not heard from (a report or a birth)
    /// for [`SILENT_INTERVALS`] intervals, and a `config_late` fact for each late to run
    /// its config; both counted from the start at the earliest (the start-up grace).
    fn liveness(&self, store: &mut Store, model: &Model, started: i64) -> Result<(), StorageError> {
        let now = wall_ms();
        let state = self.detector.state();
        let silent: Vec<_> = model
            .places()
            .filter(|place| is_silent(place, state.nodes.get(&place.id), now, started))
            .collect();
        let late: Vec<_> = model
            .places()
            .filter_map(|place| {
                let cfg = config_late(place, state.nodes.get(&place.id), now, started)?;
                Some((place, cfg))
            })
            .collect();
        if silent.is_empty() && late.is_empty() {
            return Ok(());
        }
        let mut writer = store.write()?;
        for place in &silent {
            let node = writer.node(&place.id, &place.site)?;
            writer.fact(node, "silent", None, None, now)?;
        }
        for (place, cfg) in &late {
            let node = writer.node(&place.id, &place.site)?;
            writer.config_late(node, *cfg, now)?;
        }
        writer.commit()?;
        counter!(m::NODES_SILENT).increment(silent.len() as u64);
        Ok(())
    }
}

/// Whether the liveness monitor calls `node` silent at wall time `now`: not heard from (a
/// report or a birth) for [`SILENT_INTERVALS`] of the longer of the interval it should run
/// and the one it says it runs (a node waits out its current window before it takes a new
/// interval), counted from `started` at the earliest (the start-up grace). A node known to
/// be away is silent again only when its circuit was expected off and it is not back 3
/// intervals after it should have been.
pub fn is_silent(place: &Place, node: Option<&NodeState>, now: i64, started: i64) -> bool {
    let interval = node
        .and_then(|n| n.interval_ms)
        .map_or(place.interval_ms, |own| own.max(place.interval_ms));
    let limit = SILENT_INTERVALS * interval;
    if let Some(node) = node.filter(|n| n.is_away()) {
        // Off with its circuit: silent once it is not back in time.
        return node
            .expected_back
            .is_some_and(|back| node.event_time(now) >= back + limit);
    }
    let heard = node
        .and_then(|n| n.heard)
        .map_or(started, |h| h.max(started));
    now - heard >= limit
}

/// The config version `node` is late to run at wall time `now`, if it is: online (a
/// birth, not away) for [`SILENT_INTERVALS`] intervals since the version was published
/// (or since its birth, or the start, whichever came last) and not running it, as its
/// birth, newest report or answer says. Decided once per version.
pub fn config_late(place: &Place, node: Option<&NodeState>, now: i64, started: i64) -> Option<u32> {
    let node = node.filter(|n| n.birth.is_some() && !n.is_away())?;
    let (cfg, published) = node.desired_cfg?;
    if node.running_cfg == Some(cfg) || node.config_late == Some(cfg) {
        return None;
    }
    let interval = node
        .interval_ms
        .map_or(place.interval_ms, |own| own.max(place.interval_ms));
    let from = published
        .max(node.online_since.unwrap_or(published))
        .max(started);
    (now - from >= SILENT_INTERVALS * interval).then_some(cfg)
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
/// second for liveness; `recorded` is told when condition transitions were stored.
pub fn run(
    settings: DetectionSettings,
    sites: &[Site],
    (wake, recorded): (Receiver<()>, SyncSender<()>),
    link: &BrokerLink,
    stop: CancellationToken,
) -> Result<(), StorageError> {
    let mut store = Store::open(&settings.store, settings.dead_letters_max)?;
    let model = Model::of(sites);
    let started = wall_ms();
    let mut running = Running::resume(&mut store, model.clone(), &settings.detectors)?;
    // After a failed round the detectors' state may be ahead of what is stored: they
    // start again from what is stored.
    let mut stale = false;
    loop {
        let step = (|| -> Result<(), StorageError> {
            if stale {
                running = Running::resume(&mut store, model.clone(), &settings.detectors)?;
                stale = false;
            }
            while running.round(&mut store, settings.batch, &recorded)? {}
            // Only while the broker is heard, and from the start or the reconnection.
            if let Some(connected) = link.since() {
                running.liveness(&mut store, &model, started.max(connected))?;
            }
            if running.snapshot_at.elapsed() >= settings.snapshot_every {
                running.snapshot(&mut store)?;
            }
            Ok(())
        })();
        match step {
            Ok(()) => {}
            Err(error) if error.is_transient() => {
                tracing::warn!(%error, "detection round failed; retrying from what is stored");
                stale = true;
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
                while running.round(&mut store, settings.batch, &recorded)? {}
                break;
            }
        }
    }
    if stale {
        return Ok(()); // the kept state stays the last one that matches what is stored
    }
    running.snapshot(&mut store)
}

#[cfg(test)]
mod tests {
    use super::*;
    use parklight_site::Site;

    #[test]
    fn silence_is_three_of_the_longer_interval_after_the_last_word_and_never_in_the_grace() {
        let site = Site::remiseparken();
        let model = Model::of(std::slice::from_ref(&site));
        let place = model.node("pole-001").expect("placed");
        assert_eq!(place.interval_ms, 60_000);
        let started = 1_000_000;
        // Never heard of: silent 3 intervals after the start, not before.
        assert!(!is_silent(place, None, started + 179_999, started));
        assert!(is_silent(place, None, started + 180_000, started));
        // Heard before the start: the grace still counts from the start.
        let mut node = NodeState {
            heard: Some(started - 500_000),
            ..NodeState::default()
        };
        assert!(!is_silent(place, Some(&node), started + 179_999, started));
        // A birth saying it runs 5 minutes (its config not yet in force): 15 minutes.
        node.heard = Some(started + 10_000);
        node.interval_ms = Some(300_000);
        assert!(!is_silent(
            place,
            Some(&node),
            started + 10_000 + 899_999,
            started
        ));
        assert!(is_silent(
            place,
            Some(&node),
            started + 10_000 + 900_000,
            started
        ));
        // Known to be away (a will, a shutdown, a silence already): not again.
        node.away = true;
        assert!(!is_silent(
            place,
            Some(&node),
            started + 10_000_000,
            started
        ));
    }

    #[test]
    fn a_config_is_late_three_intervals_after_publishing_or_birth_once_per_version() {
        let site = Site::remiseparken();
        let model = Model::of(std::slice::from_ref(&site));
        let place = model.node("pole-001").expect("placed");
        let started = 1_000_000;
        let published = started + 60_000;
        let mut node = NodeState {
            birth: Some((1, 1)),
            online_since: Some(started - 10_000),
            running_cfg: Some(4),
            desired_cfg: Some((5, published)),
            ..NodeState::default()
        };
        assert_eq!(
            config_late(place, Some(&node), published + 179_999, started),
            None
        );
        assert_eq!(
            config_late(place, Some(&node), published + 180_000, started),
            Some(5)
        );
        // Born after the publishing: counted from the birth.
        node.online_since = Some(published + 100_000);
        assert_eq!(
            config_late(place, Some(&node), published + 200_000, started),
            None
        );
        // Running it, away, or decided already: nothing.
        for change in [
            |n: &mut NodeState| n.running_cfg = Some(5),
            |n: &mut NodeState| n.away = true,
            |n: &mut NodeState| n.config_late = Some(5),
        ] {
            let mut other = node.clone();
            change(&mut other);
            assert_eq!(
                config_late(place, Some(&other), published + 10_000_000, started),
                None
            );
        }
        assert_eq!(
            config_late(place, Some(&node), published + 10_000_000, started),
            Some(5)
        );
    }
}
