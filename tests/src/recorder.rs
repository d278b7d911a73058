//! A subscriber that records everything under the prefix and, when asked, plays the
//! gateway's part of the stored-acknowledgement protocol: it acknowledges, per node and
//! boot, the highest seq up to which it has every report.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use parklight_protocol::status::Status;
use parklight_protocol::topic::{NodeTopic, node_topic, parse_node_topic};
use parklight_protocol::{Ack, DEFAULT_PREFIX, Message, ReportId, Telemetry};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::watch;

/// One message as it arrived.
#[derive(Debug, Clone)]
pub struct Received {
    /// Topic.
    pub topic: String,
    /// Payload.
    pub payload: Vec<u8>,
    /// Delivered from the retained store.
    pub retained: bool,
    /// When it arrived.
    pub at: Instant,
}

impl Received {
    /// The node id in its topic, if it is a node topic.
    pub fn node(&self) -> Option<String> {
        parse_node_topic(DEFAULT_PREFIX, &self.topic)
            .ok()
            .map(|t| t.node.to_owned())
    }

    /// True on the node topic of this kind.
    pub fn is(&self, kind: NodeTopic) -> bool {
        parse_node_topic(DEFAULT_PREFIX, &self.topic).is_ok_and(|t| t.kind == kind)
    }
}

/// Per node and boot: which seqs arrived, counting from where.
#[derive(Debug, Default)]
struct Progress {
    from: u32,
    seen: BTreeSet<u32>,
}

impl Progress {
    /// The highest seq up to which every report arrived.
    fn contiguous(&self) -> Option<u32> {
        let mut next = self.from;
        while self.seen.contains(&next) {
            next += 1;
        }
        next.checked_sub(1).filter(|_| next > self.from)
    }
}

#[derive(Default)]
struct State {
    messages: Vec<Received>,
    progress: HashMap<(String, u32), Progress>,
}

/// A recording subscriber; stops when dropped.
pub struct Recorder {
    state: Arc<Mutex<State>>,
    acking: Arc<AtomicBool>,
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Recorder {
    /// Subscribes to everything under the default prefix of `broker` (a `mqtt://` URL).
    /// With `acking`, it acknowledges reports like a gateway would.
    pub fn start(broker: &str, acking: bool) -> Recorder {
        Recorder::start_on(broker, &format!("{DEFAULT_PREFIX}/#"), acking)
    }

    /// Subscribes to `filter` only (e.g. every site's alerts).
    pub fn start_on(broker: &str, filter: &str, acking: bool) -> Recorder {
        let filter = filter.to_owned();
        let state = Arc::new(Mutex::new(State::default()));
        let acking = Arc::new(AtomicBool::new(acking));
        let (stop, stopped) = watch::channel(false);
        let options = parklight_sim::mqtt::broker_options(
            broker,
            &format!("test-recorder-{}", crate::free_port()),
        )
        .expect("broker URL");
        let thread = {
            let (state, acking) = (state.clone(), acking.clone());
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                runtime.block_on(record(options, &filter, state, acking, stopped));
            })
        };
        let recorder = Recorder {
            state,
            acking,
            stop,
            thread: Some(thread),
        };
        assert!(
            crate::wait_until(Duration::from_secs(10), || recorder
                .count(|m| m.topic == "$ready")
                > 0),
            "the recorder did not connect"
        );
        recorder
    }

    /// Starts or stops acknowledging.
    pub fn set_acking(&self, on: bool) {
        self.acking.store(on, Ordering::SeqCst);
    }

    /// Everything received so far.
    pub fn messages(&self) -> Vec<Received> {
        self.state.lock().unwrap().messages.clone()
    }

    /// How many received messages satisfy `filter`.
    pub fn count(&self, filter: impl Fn(&Received) -> bool) -> usize {
        self.state
            .lock()
            .unwrap()
            .messages
            .iter()
            .filter(|m| filter(m))
            .count()
    }

    /// Every telemetry message decoded, with its node and arrival.
    pub fn reports(&self) -> Vec<(String, Telemetry, Instant)> {
        self.messages()
            .into_iter()
            .filter(|m| m.is(NodeTopic::Telemetry))
            .map(|m| {
                let report = Telemetry::decode(&m.payload).unwrap_or_else(|e| {
                    panic!(
                        "invalid telemetry on {}: {e}: {}",
                        m.topic,
                        String::from_utf8_lossy(&m.payload)
                    )
                });
                (m.node().unwrap_or_default(), report, m.at)
            })
            .collect()
    }

    /// Every status message of `node`, decoded, in order.
    pub fn statuses(&self, node: &str) -> Vec<Status> {
        self.messages()
            .into_iter()
            .filter(|m| m.is(NodeTopic::Status) && m.node().as_deref() == Some(node))
            .map(|m| Status::decode(&m.payload).expect("valid status"))
            .collect()
    }

    /// The distinct reports received, per node.
    pub fn distinct_reports(&self) -> HashMap<String, BTreeSet<ReportId>> {
        let mut by_node: HashMap<String, BTreeSet<ReportId>> = HashMap::new();
        for (node, report, _) in self.reports() {
            by_node.entry(node).or_default().insert(report.id());
        }
        by_node
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn record(
    mut options: MqttOptions,
    filter: &str,
    state: Arc<Mutex<State>>,
    acking: Arc<AtomicBool>,
    mut stop: watch::Receiver<bool>,
) {
    options
        .set_keep_alive(Duration::from_secs(5))
        .set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(options, 1000);
    loop {
        let event = tokio::select! {
            _ = stop.changed() => return,
            event = eventloop.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                let _ = client.subscribe(filter, QoS::AtLeastOnce).await;
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                state.lock().unwrap().messages.push(Received {
                    topic: "$ready".into(),
                    payload: Vec::new(),
                    retained: false,
                    at: Instant::now(),
                });
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let received = Received {
                    topic: publish.topic.clone(),
                    payload: publish.payload.to_vec(),
                    retained: publish.retain,
                    at: Instant::now(),
                };
                let ack = track(&mut state.lock().unwrap(), &received);
                state.lock().unwrap().messages.push(received);
                if let Some((topic, ack)) = ack.filter(|_| acking.load(Ordering::SeqCst)) {
                    let payload = ack.to_payload().expect("ack encodes").to_vec();
                    let _ = client.publish(topic, QoS::AtLeastOnce, true, payload).await;
                }
            }
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Updates what arrived and returns the ack to send, if any: for news, and for a
/// duplicate of something already covered (the node evidently missed the ack).
fn track(state: &mut State, received: &Received) -> Option<(String, Ack)> {
    let topic = parse_node_topic(DEFAULT_PREFIX, &received.topic).ok()?;
    let (oldest, report) = match topic.kind {
        NodeTopic::Telemetry => {
            let report = Telemetry::decode(&received.payload).ok()?;
            (report.oldest, Some(report))
        }
        NodeTopic::Status => match Status::decode(&received.payload).ok()? {
            Status::Online(birth) => (Some(birth.oldest), None),
            Status::Offline(_) => (None, None),
        },
        _ => return None,
    };
    if let Some(oldest) = oldest {
        let progress = state
            .progress
            .entry((topic.node.to_owned(), oldest.boot))
            .or_default();
        progress.from = progress.from.max(oldest.seq);
    }
    let report = report?;
    let progress = state
        .progress
        .entry((topic.node.to_owned(), report.boot))
        .or_default();
    let before = progress.contiguous();
    let duplicate = !progress.seen.insert(report.seq);
    let after = progress.contiguous()?;
    if before == Some(after) && !duplicate {
        return None;
    }
    let ack_topic = node_topic(DEFAULT_PREFIX, topic.site, topic.node, NodeTopic::Ack).ok()?;
    let now = jiff::Timestamp::now().as_millisecond() as u64;
    Some((
        ack_topic.to_string(),
        Ack {
            boot: report.boot,
            seq: after,
            now,
        },
    ))
}
