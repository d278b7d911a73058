//! The alert manager's task: reads condition transitions after its cursor, crews'
//! requests and the silences, runs the [`crate::alert`] state machine on the wall
//! clock, and stores its changes, answers, cursor and state in one transaction, so a
//! restart changes nothing. Receivers ([`crate::sinks::alerts`]) take it from there.

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use metrics::counter;
use parklight_site::Site;
use tokio_util::sync::CancellationToken;

use crate::alert::{Manager, Settings, State, Topology};
use crate::detect::Transition;
use crate::metrics as m;
use crate::store::alerts::Round;
use crate::store::{StorageError, Store};

/// How often the manager looks at the clock (reminders, roll-ups, silences, requests)
/// when nothing wakes it.
const TICK: Duration = Duration::from_millis(250);

/// What the alert manager's task needs.
#[derive(Debug, Clone)]
pub struct AlertingSettings {
    /// The store's folder.
    pub store: PathBuf,
    /// Dead letters kept (for opening the store).
    pub dead_letters_max: usize,
    /// The manager's timings.
    pub manager: Settings,
}

fn wall_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// The manager as kept, and the condition it has read up to; on a new store (or one
/// from before alerts) a fresh one with the conditions active now to take first (not
/// the whole history, paged now), and what comes after them.
fn resume(
    store: &Store,
    sites: &[Site],
    settings: &Settings,
) -> Result<(Manager, i64, Vec<Transition>), StorageError> {
    let topology = Topology::of(sites);
    if let Some((read, text)) = store.alert_manager_state()? {
        let state = serde_json::from_str::<State>(&text)
            .map_err(|e| StorageError::Corrupt(format!("alert manager state: {e}")))?;
        return Ok((
            Manager::new(topology, settings.clone(), state),
            read,
            Vec::new(),
        ));
    }
    let origin = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
    let state = State::with_origin(&origin);
    let active = store
        .active_conditions()?
        .into_iter()
        .map(|c| c.transition)
        .collect();
    let read = store.last_condition_id()?;
    Ok((
        Manager::new(topology, settings.clone(), state),
        read,
        active,
    ))
}

/// One round: what was recorded since, what crews asked, and the clock.
fn round(
    store: &mut Store,
    manager: &mut Manager,
    read: &mut i64,
    seed: &[Transition],
) -> Result<usize, StorageError> {
    let now = wall_ms();
    let silences = store.silences(now)?;
    let conditions = store.conditions_after(*read, 1000)?;
    let requests = store.pending_requests()?;
    let mut changes = Vec::new();
    for transition in seed {
        manager.condition(transition, now, &silences, &mut changes);
    }
    let mut last = *read;
    for row in &conditions {
        manager.condition(&row.transition, now, &silences, &mut changes);
        last = row.id;
    }
    let mut answers = Vec::new();
    for (id, request) in &requests {
        let answer = manager.act(request, now, &silences, &mut changes).err();
        if let Some(refusal) = &answer {
            tracing::info!(alert = %request.alert, by = %request.by, %refusal, "request refused");
        }
        answers.push((*id, answer));
    }
    manager.tick(now, &silences, &mut changes);
    if changes.is_empty() && answers.is_empty() && last == *read && seed.is_empty() {
        return Ok(0);
    }
    let state = serde_json::to_string(manager.state())
        .map_err(|e| StorageError::Corrupt(format!("alert manager state: {e}")))?;
    store.record_alert_round(&Round {
        changes: &changes,
        answers: &answers,
        read: last,
        state: &state,
        now,
    })?;
    *read = last;
    for change in &changes {
        let a = &change.alert;
        counter!(m::ALERT_CHANGES, "kind" => a.kind.as_str(), "what" => change.what.as_str())
            .increment(1);
        tracing::info!(id = %a.id, rev = a.rev, kind = a.kind.as_str(), site = %a.site, zone = ?a.zone, node = ?a.node, state = a.state.as_str(), severity = a.severity.as_str(), what = change.what.as_str(), paged = change.page, "alert");
    }
    Ok(conditions.len())
}

/// Runs until `stop`: a round whenever `wake` says conditions were recorded, and every
/// [`TICK`]; `changed` is told after each stored round.
pub fn run(
    settings: AlertingSettings,
    sites: &[Site],
    wake: Receiver<()>,
    changed: &tokio::sync::watch::Sender<i64>,
    stop: CancellationToken,
) -> Result<(), StorageError> {
    let mut store = Store::open(&settings.store, settings.dead_letters_max)?;
    let (mut manager, mut read, mut seed) = resume(&store, sites, &settings.manager)?;
    loop {
        let step = (|| -> Result<(), StorageError> {
            while round(
                &mut store,
                &mut manager,
                &mut read,
                &std::mem::take(&mut seed),
            )? >= 1000
            {}
            let end = store.outbox_end()?;
            changed.send_if_modified(|known| std::mem::replace(known, end) != end);
            Ok(())
        })();
        match step {
            Ok(()) => {}
            Err(error) if error.is_transient() => {
                tracing::warn!(%error, "alert round failed; retrying from what is stored");
                (manager, read, seed) = resume(&store, sites, &settings.manager)?;
            }
            Err(error) => return Err(error),
        }
        if stop.is_cancelled() {
            return Ok(());
        }
        match wake.recv_timeout(TICK) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                round(&mut store, &mut manager, &mut read, &seed)?;
                return Ok(());
            }
        }
    }
}
