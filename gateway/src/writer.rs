//! The writer: takes what the MQTT source received, stores it in group commits,
//! acknowledges each publish after its commit in arrival order, and sends nodes their
//! stored-acknowledgements.
//!
//! It runs on its own thread: SQLite and fsync block, and the poller must never wait.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use metrics::{counter, gauge, histogram};
use parklight_protocol::status::Status;
use parklight_protocol::topic::{NodeTopic, node_topic};
use parklight_protocol::{Ack, Message};
use rumqttc::{AsyncClient, QoS};
use tokio_util::sync::CancellationToken;

use crate::ingest::{AckNews, Incoming, Ingest, Outcome};
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
    last_sent: HashMap<(String, u32), Instant>,
    pending: HashMap<(String, u32), AckNews>,
}

impl AckPublisher {
    fn offer(&mut self, news: AckNews) {
        self.pending.insert((news.node.clone(), news.boot), news);
    }

    /// Publishes what is due; returns how long until the next one is.
    fn flush_due(&mut self) -> Option<Duration> {
        let now = Instant::now();
        let mut next: Option<Duration> = None;
        let due: Vec<(String, u32)> = self
            .pending
            .keys()
            .filter(|key| match self.last_sent.get(*key) {
                Some(sent) if now.duration_since(*sent) < self.interval => {
                    let wait = self.interval - now.duration_since(*sent);
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
                    self.last_sent.insert(key, now);
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

/// Which nodes are online: the latest birth or will, a late will of an older
/// connection ignored.
#[derive(Default)]
struct Presence {
    latest: HashMap<String, ((u32, u32), bool)>,
}

impl Presence {
    fn update(&mut self, node: String, status: &Status) {
        let (connection, online) = match status {
            Status::Online(b) => ((b.boot, b.conn), true),
            Status::Offline(o) => ((o.boot, o.conn), false),
        };
        let entry = self.latest.entry(node).or_insert((connection, online));
        if connection >= entry.0 {
            *entry = (connection, online);
        }
        gauge!(m::NODES_ONLINE).set(self.latest.values().filter(|(_, on)| *on).count() as f64);
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
}

/// Runs until `stop` is cancelled and what arrived before is stored and acknowledged.
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
    } = outlets;
    let mut acks = AckPublisher {
        interval: settings.ack_interval,
        prefix: settings.prefix.clone(),
        client: client.clone(),
        last_sent: HashMap::new(),
        pending: HashMap::new(),
    };
    let mut presence = Presence::default();
    loop {
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
        let now = jiff::Timestamp::now().as_millisecond();
        for (message, outcome) in group.iter().zip(&outcomes) {
            histogram!(m::ACK_LAG_SECONDS)
                .record((now - message.received_ms).max(0) as f64 / 1000.0);
            record(message, outcome, &mut presence);
        }
        news.into_iter().for_each(|n| acks.offer(n));
    }
    acks.interval = Duration::ZERO;
    acks.flush_due();
    Ok(())
}

/// Stores a group in one transaction, retrying until it commits: nothing is acknowledged
/// before. Gives up only when stopping.
fn commit(
    store: &mut Store,
    ingest: &mut Ingest,
    group: &[Arrived],
    news: &mut Vec<AckNews>,
    stop: &CancellationToken,
) -> Result<Vec<Outcome>, StorageError> {
    loop {
        let started = Instant::now();
        let attempt = (|| {
            let mut writer = store.write()?;
            let mut outcomes = Vec::with_capacity(group.len());
            for message in group {
                let incoming = Incoming {
                    topic: &message.publish.topic,
                    payload: &message.publish.payload,
                    received_ms: message.received_ms,
                };
                outcomes.push(ingest.handle(&mut writer, &incoming, news)?);
            }
            ingest.save(&mut writer)?;
            writer.commit()?;
            Ok::<_, StorageError>(outcomes)
        })();
        match attempt {
            Ok(outcomes) => {
                m::committed(group.len(), started.elapsed());
                return Ok(outcomes);
            }
            Err(error) => {
                ingest.forget();
                news.clear();
                if stop.is_cancelled() {
                    return Err(error);
                }
                tracing::error!(%error, messages = group.len(), "commit failed; retrying in a second (nothing is acknowledged)");
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

fn record(message: &Arrived, outcome: &Outcome, presence: &mut Presence) {
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
        Outcome::Status { node, status } => presence.update(node.clone(), status),
        Outcome::Event => {}
    }
}
