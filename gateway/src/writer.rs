//! The writer: takes what the MQTT source received, stores it in group commits,
//! acknowledges each publish after its commit in arrival order, and sends nodes their
//! stored-acknowledgements.
//!
//! It runs on its own thread: SQLite and fsync block, and the poller must never wait.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use metrics::{counter, histogram};
use parklight_protocol::topic::{NodeTopic, node_topic};
use parklight_protocol::{Ack, Message};
use rumqttc::{AsyncClient, QoS};
use tokio_util::sync::CancellationToken;

use crate::ingest::{AckNews, Incoming, Ingest, Notice, Outcome};
use crate::metrics as m;
use crate::sources::mqtt::{Acks, Arrived, Backlog};
use crate::store::{StorageError, Store};

/// How the writer groups and acknowledges.
#[derive(Debug, Clone)]
pub struct WriterSettings {
    /// Most messages per commit.
    pub max_messages: usize,
    /// Longest wait to fill a commit.
    pub max_wait: Duration,
    /// Least time between two stored-acknowledgements of a node's boot.
    pub ack_interval: Duration,
    /// Topic prefix.
    pub prefix: String,
}

/// Sends stored-acknowledgements, at most one per node's boot per interval.
struct AckPublisher {
    interval: Duration,
    prefix: String,
    client: AsyncClient,
    /// When the last few boots of each node were acknowledged.
    last_sent: HashMap<String, Vec<(u32, Instant)>>,
    pending: HashMap<(String, u32), AckNews>,
}

impl AckPublisher {
    fn offer(&mut self, news: AckNews) {
        self.pending.insert((news.node.clone(), news.boot), news);
    }

    fn sent_at(&self, (node, boot): &(String, u32)) -> Option<Instant> {
        let boots = self.last_sent.get(node)?;
        boots.iter().find(|(b, _)| b == boot).map(|(_, at)| *at)
    }

    /// Remembers an ack of a node's boot, forgetting all but the node's latest boots.
    fn sent(&mut self, (node, boot): (String, u32), at: Instant) {
        let boots = self.last_sent.entry(node).or_default();
        boots.retain(|(b, _)| *b != boot);
        boots.push((boot, at));
        let excess = boots.len().saturating_sub(crate::ingest::KEEP_BOOTS);
        boots.drain(..excess);
    }

    /// Publishes what is due; returns how long until the next one is.
    fn flush_due(&mut self) -> Option<Duration> {
        let now = Instant::now();
        let mut next: Option<Duration> = None;
        let due: Vec<(String, u32)> = self
            .pending
            .keys()
            .filter(|key| match self.sent_at(key) {
                Some(sent) if now.duration_since(sent) < self.interval => {
                    let wait = self.interval - now.duration_since(sent);
                    next = Some(next.map_or(wait, |n| n.min(wait)));
                    false
                }
                _ => true,
            })
            .cloned()
            .collect();
        for key in due {
            let Some(news) = self.pending.remove(&key) else {
                continue;
            };
            let ack = Ack {
                boot: news.boot,
                seq: news.seq,
                now: jiff::Timestamp::now().as_millisecond() as u64,
            };
            let (Ok(topic), Ok(payload)) = (
                node_topic(&self.prefix, &news.site, &news.node, NodeTopic::Ack),
                ack.to_payload(),
            ) else {
                continue;
            };
            match self
                .client
                .try_publish(topic.as_str(), QoS::AtLeastOnce, true, payload.to_vec())
            {
                Ok(()) => {
                    counter!(m::STORED_ACKS).increment(1);
                    self.sent(key, now);
                }
                Err(error) => {
                    tracing::debug!(%error, "stored-acknowledgement not queued; retrying");
                    self.pending.insert(key, news);
                    next = Some(Duration::from_millis(100));
                }
            }
        }
        next
    }
}

/// Where the writer's work goes: MQTT acknowledgements to the poller, stored-
/// acknowledgements through the client.
pub struct Outlets {
    /// The client, for stored-acknowledgements.
    pub client: AsyncClient,
    /// Acknowledgements of committed messages, for the poller to write.
    pub acks: tokio::sync::mpsc::UnboundedSender<Acks>,
    /// What waits to be stored.
    pub backlog: Arc<Backlog>,
    /// Told after each commit, for the detectors (full: they have yet to look).
    pub committed: std::sync::mpsc::SyncSender<()>,
}

/// Runs until `stop` is cancelled and what arrived before is stored and acknowledged.
/// Fails when the store fails in a way that waiting will not mend.
pub fn run(
    mut store: Store,
    mut ingest: Ingest,
    arrived: Receiver<Arrived>,
    outlets: Outlets,
    settings: WriterSettings,
    stop: CancellationToken,
) -> Result<(), StorageError> {
    let Outlets {
        client,
        acks: ack_sender,
        backlog,
        committed,
    } = outlets;
    let mut acks = AckPublisher {
        interval: settings.ack_interval,
        prefix: settings.prefix.clone(),
        client: client.clone(),
        last_sent: HashMap::new(),
        pending: HashMap::new(),
    };
    m::totals(ingest.committed());
    let mut released_at = Instant::now();
    loop {
        if released_at.elapsed() >= RELEASE_EVERY {
            released_at = Instant::now();
            release_held(&mut store)?;
            let _ = committed.try_send(());
        }
        let wait = acks
            .flush_due()
            .unwrap_or(Duration::from_millis(100))
            .min(Duration::from_millis(100));
        let first = match arrived.recv_timeout(wait) {
            Ok(first) => first,
            Err(RecvTimeoutError::Timeout) if !stop.is_cancelled() => continue,
            // Stopping, and nothing more arrived: done.
            Err(_) => break,
        };
        let mut group = vec![first];
        let deadline = Instant::now() + settings.max_wait;
        while group.len() < settings.max_messages {
            let left = deadline.saturating_duration_since(Instant::now());
            match arrived.recv_timeout(left) {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        let mut news = Vec::new();
        let outcomes = commit(&mut store, &mut ingest, &group, &mut news, &stop)?;
        for ready in Acks::of(&group) {
            // Only fails once the poller has ended; the broker then delivers them again.
            let _ = ack_sender.send(ready);
        }
        backlog.handled(group.len());
        let _ = committed.try_send(());
        let totals = ingest.committed();
        totals.notices.iter().for_each(Notice::log);
        m::totals(totals);
        let now = jiff::Timestamp::now().as_millisecond();
        for (message, outcome) in group.iter().zip(&outcomes) {
            histogram!(m::ACK_LAG_SECONDS)
                .record((now - message.received_ms).max(0) as f64 / 1000.0);
            record(message, outcome);
        }
        news.into_iter().for_each(|n| acks.offer(n));
    }
    acks.interval = Duration::ZERO;
    acks.flush_due();
    Ok(())
}

/// How often held reports whose boot's clock never came are let go.
const RELEASE_EVERY: Duration = Duration::from_secs(1);

/// Lets go of held reports whose hold is over; a failure that may pass is tried again
/// next time.
fn release_held(store: &mut Store) -> Result<(), StorageError> {
    match store.release_held(jiff::Timestamp::now().as_millisecond()) {
        Ok(released) => {
            counter!(m::REPORTS_CLOCK_UNRESOLVED).increment(released as u64);
            Ok(())
        }
        Err(error) if error.is_transient() => {
            tracing::warn!(%error, "held reports not let go; retrying");
            Ok(())
        }
        Err(error) => Err(error),
    }
}

/// Stores a group, trying again every second while the store's trouble may pass (a
/// full disk, a lock held elsewhere): nothing is acknowledged before it commits. Gives up
/// on any other failure, and when stopping.
fn commit(
    store: &mut Store,
    ingest: &mut Ingest,
    group: &[Arrived],
    news: &mut Vec<AckNews>,
    stop: &CancellationToken,
) -> Result<Vec<Outcome>, StorageError> {
    for attempt in 0u64.. {
        let started = Instant::now();
        match store_group(store, ingest, group, news) {
            Ok(outcomes) => {
                m::committed(group.len(), started.elapsed());
                return Ok(outcomes);
            }
            Err(error) => {
                ingest.forget();
                news.clear();
                counter!(m::COMMIT_FAILURES).increment(1);
                if !error.is_transient() || stop.is_cancelled() {
                    return Err(error);
                }
                if attempt % 60 == 0 {
                    tracing::error!(%error, messages = group.len(), attempt, "commit failed; retrying every second (nothing is acknowledged)");
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
    unreachable!("attempts never run out")
}

/// Stores a group in one transaction. On failure the caller must [`Ingest::forget`].
fn store_group(
    store: &mut Store,
    ingest: &mut Ingest,
    group: &[Arrived],
    news: &mut Vec<AckNews>,
) -> Result<Vec<Outcome>, StorageError> {
    let mut writer = store.write()?;
    let mut outcomes = Vec::with_capacity(group.len());
    for message in group {
        let incoming = Incoming {
            topic: &message.publish.topic,
            payload: &message.publish.payload,
            received_ms: message.received_ms,
            retained: message.publish.retain,
        };
        outcomes.push(ingest.handle(&mut writer, &incoming, news)?);
    }
    ingest.save(&mut writer)?;
    writer.commit()?;
    Ok(outcomes)
}

fn record(message: &Arrived, outcome: &Outcome) {
    let topic = &message.publish.topic;
    if topic.ends_with("/telemetry") {
        counter!(m::REPORTS_RECEIVED).increment(1);
    }
    match outcome {
        Outcome::Stored {
            unknown_node,
            stamped,
        } => {
            counter!(m::REPORTS_STORED).increment(1);
            if *unknown_node {
                counter!(m::REPORTS_UNKNOWN_NODE).increment(1);
            }
            if *stamped {
                counter!(m::REPORTS_CLOCK_STAMPED).increment(1);
            }
        }
        Outcome::Duplicate => counter!(m::REPORTS_DUPLICATE).increment(1),
        Outcome::Rejected(error) => m::rejected(error.reason, error.field, topic),
        Outcome::Status { .. } | Outcome::Event => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use rumqttc::Publish;

    fn arrived(topic: &str, payload: String) -> Arrived {
        Arrived {
            publish: Publish::new(topic, QoS::AtLeastOnce, payload),
            received_ms: 1_764_093_601_000,
            connection: 1,
        }
    }

    /// Reports 0..count of a node's boot, each with a lot to store.
    fn reports(node: &str, boot: u32, seqs: std::ops::Range<u32>) -> Vec<Arrived> {
        seqs.map(|seq| {
            arrived(
                &format!("parklight/v1/remiseparken/{node}/telemetry"),
                format!(
                    r#"{{"v":1,"boot":{boot},"seq":{seq},"ts":1764093600000,"period_s":60,"lux":{{"avg":6,"min":5,"max":7}},"motion":1,"lamp":{{"on":true,"level":80}}}}"#
                ),
            )
        })
        .collect()
    }

    #[test]
    fn acknowledgements_are_remembered_for_the_last_few_boots_of_a_node() {
        let options = rumqttc::MqttOptions::new("test", "127.0.0.1", 1);
        let (client, _eventloop) = AsyncClient::new(options, 10);
        let mut acks = AckPublisher {
            interval: Duration::from_secs(10),
            prefix: "parklight/v1".into(),
            client,
            last_sent: HashMap::new(),
            pending: HashMap::new(),
        };
        let now = Instant::now();
        // A node that reboots every day, or sends a new boot in every message.
        for boot in 0..1000 {
            acks.sent(("pole-017".into(), boot), now);
        }
        let kept: Vec<u32> = acks.last_sent["pole-017"].iter().map(|(b, _)| *b).collect();
        assert_eq!(kept, [996, 997, 998, 999]);
        assert!(acks.sent_at(&("pole-017".into(), 999)).is_some());
        assert!(acks.sent_at(&("pole-017".into(), 3)).is_none());
    }

    #[test]
    fn ingest_resumes_once_a_full_disk_has_room_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), 100).unwrap();
        let mut ingest = Ingest::new("parklight/v1", &[], 300_000, &store).unwrap();
        let mut news = Vec::new();
        store_group(
            &mut store,
            &mut ingest,
            &reports("pole-017", 1, 0..10),
            &mut news,
        )
        .unwrap();
        ingest.committed();
        // The disk fills up: a group holding a never-seen node cannot commit.
        store.limit_pages(Some(0));
        let mut group = reports("pole-new", 1, 0..2000);
        group.push(arrived(
            "parklight/v1/remiseparken/pole-new/status",
            r#"{"v":1,"state":"online","boot":1,"conn":1,"oldest":{"boot":1,"seq":0}}"#.into(),
        ));
        group.extend(reports("pole-017", 1, 10..20));
        // Reconnecting, pole-017 says 20 and 21 are gone: said once, not at every try.
        group.push(arrived(
            "parklight/v1/remiseparken/pole-017/status",
            r#"{"v":1,"state":"online","boot":1,"conn":2,"oldest":{"boot":1,"seq":22}}"#.into(),
        ));
        for _ in 0..3 {
            let error = store_group(&mut store, &mut ingest, &group, &mut news).unwrap_err();
            assert!(error.is_transient(), "{error}");
            ingest.forget();
            news.clear();
        }
        // Room again: the same group commits, and nothing is counted twice.
        store.limit_pages(None);
        let outcomes = store_group(&mut store, &mut ingest, &group, &mut news).unwrap();
        let totals = ingest.committed();
        assert_eq!(
            outcomes
                .iter()
                .filter(|o| matches!(o, Outcome::Stored { .. }))
                .count(),
            2010
        );
        assert_eq!((totals.online, totals.lost), (2, 2));
        assert_eq!(
            totals.notices,
            [Notice::Lost {
                node: "pole-017".into(),
                boot: 1,
                lost: 2
            }]
        );
        assert_eq!(store.report_count().unwrap(), 2020);
        let acked: Vec<(String, u32)> = news.iter().map(|n| (n.node.clone(), n.seq)).collect();
        assert!(acked.contains(&("pole-new".into(), 1999)), "{acked:?}");
        assert!(acked.contains(&("pole-017".into(), 19)), "{acked:?}");
        // And the next group goes as usual.
        news.clear();
        store_group(
            &mut store,
            &mut ingest,
            &reports("pole-new", 1, 2000..2001),
            &mut news,
        )
        .unwrap();
        assert_eq!(news.last().map(|n| n.seq), Some(2000));
    }

    #[test]
    fn a_store_that_is_not_ours_any_more_is_no_transient_failure() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), 100).unwrap();
        let mut ingest = Ingest::new("parklight/v1", &[], 300_000, &store).unwrap();
        let other = rusqlite::Connection::open(dir.path().join(crate::store::DB_FILE)).unwrap();
        other
            .execute_batch(
                "CREATE TRIGGER sabotage BEFORE INSERT ON reports
                 BEGIN SELECT RAISE(ABORT, 'reports are not taken here'); END;",
            )
            .unwrap();
        let error = commit(
            &mut store,
            &mut ingest,
            &reports("pole-017", 1, 0..1),
            &mut Vec::new(),
            &CancellationToken::new(),
        )
        .unwrap_err();
        assert!(!error.is_transient());
        assert!(
            error.to_string().contains("reports are not taken here"),
            "{error}"
        );
    }
}
