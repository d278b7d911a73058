//! One virtual node's MQTT connection: a task that only polls rumqttc's event loop and
//! forwards what arrives; the world publishes through the client without ever blocking.

use std::time::Duration;

use rand::RngExt;
use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long a lost connection's socket is held open unread: past the broker's keep-alive
/// timeout (1.5 times the node's 30 s), so the broker, not a FIN, ends it.
const HALF_OPEN: Duration = Duration::from_secs(120);

/// What a connection reports to the world.
#[derive(Debug)]
pub enum LinkEvent {
    /// Connected (CONNACK received).
    Connected,
    /// The connection broke; the link keeps retrying.
    Disconnected,
    /// A message on a subscribed topic.
    Message {
        /// Topic.
        topic: String,
        /// Payload.
        payload: Vec<u8>,
        /// Delivered from the broker's retained store.
        retained: bool,
    },
}

/// A link event tagged with the node and the link generation it came from.
pub type Tagged = (usize, u64, LinkEvent);

/// A live connection.
pub struct Link {
    client: AsyncClient,
    task: JoinHandle<()>,
    will: watch::Sender<LastWill>,
    lost: CancellationToken,
    /// Distinguishes this link's events from those of a link that was cut.
    pub generation: u64,
}

impl Link {
    /// Connects `options` with `will`, reporting events for node `index` to `events`.
    pub fn open(
        mut options: MqttOptions,
        will: LastWill,
        index: usize,
        generation: u64,
        events: mpsc::UnboundedSender<Tagged>,
    ) -> Link {
        options.set_last_will(will.clone());
        let (client, eventloop) = AsyncClient::new(options, 64);
        let (will_tx, will_rx) = watch::channel(will);
        let lost = CancellationToken::new();
        let task = tokio::spawn(drive(eventloop, will_rx, lost.clone(), move |event| {
            // The world may be gone at shutdown: nothing to tell then.
            let _ = events.send((index, generation, event));
        }));
        Link {
            client,
            task,
            will: will_tx,
            lost,
            generation,
        }
    }

    /// Publishes without waiting; a full queue drops the message (the node's report
    /// buffer resends what is not acknowledged).
    pub fn publish(&self, topic: &str, payload: &[u8], retain: bool) {
        if let Err(e) = self
            .client
            .try_publish(topic, QoS::AtLeastOnce, retain, payload.to_vec())
        {
            tracing::debug!(topic, error = %e, "publish not queued");
        }
    }

    /// Subscribes (QoS 1) without waiting.
    pub fn subscribe(&self, topic: &str) {
        if let Err(e) = self.client.try_subscribe(topic, QoS::AtLeastOnce) {
            tracing::debug!(topic, error = %e, "subscribe not queued");
        }
    }

    /// The last will to set on the next reconnect.
    pub fn set_will(&self, will: LastWill) {
        self.will.send_replace(will);
    }

    /// Loses the connection as a power cut or a broken network does: no DISCONNECT and
    /// no FIN; the socket stays half-open until the broker's keep-alive runs out and it
    /// publishes the last will.
    pub fn lose(self) {
        self.lost.cancel();
    }

    /// Disconnects cleanly after what is queued, waiting up to `timeout`.
    pub async fn close(self, timeout: Duration) {
        let _ = self.client.try_disconnect();
        if tokio::time::timeout(timeout, self.task).await.is_err() {
            tracing::debug!("connection did not close in time");
        }
    }
}

/// Polls the event loop until a clean disconnect. Reconnects with exponential backoff and
/// jitter, setting the will that is current for the next connection first.
async fn drive(
    mut eventloop: EventLoop,
    will: watch::Receiver<LastWill>,
    lost: CancellationToken,
    tell: impl Fn(LinkEvent),
) {
    let mut connected = false;
    let mut closing = false;
    let mut backoff = Duration::from_millis(250);
    loop {
        let polled = tokio::select! {
            biased;
            _ = lost.cancelled() => {
                // Neither read nor closed: the broker sees silence, as from a dead node.
                tokio::time::sleep(HALF_OPEN).await;
                drop(eventloop);
                return;
            }
            polled = eventloop.poll() => polled,
        };
        match polled {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                connected = true;
                backoff = Duration::from_millis(250);
                tell(LinkEvent::Connected);
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => tell(LinkEvent::Message {
                topic: publish.topic.clone(),
                payload: publish.payload.to_vec(),
                retained: publish.retain,
            }),
            // Keep reading until the broker closes: closing a socket with unread data sends
            // a reset, which can overtake the DISCONNECT and fire the will.
            Ok(Event::Outgoing(Outgoing::Disconnect)) => closing = true,
            Ok(_) => {}
            Err(_) if closing => return,
            Err(error) => {
                if std::mem::take(&mut connected) {
                    tell(LinkEvent::Disconnected);
                }
                tracing::debug!(%error, "connection failed; retrying");
                let jitter = rand::rng().random_range(0.5..1.5);
                tokio::select! {
                    _ = lost.cancelled() => return,
                    _ = tokio::time::sleep(backoff.mul_f64(jitter)) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
                eventloop.mqtt_options.set_last_will(will.borrow().clone());
            }
        }
    }
}
