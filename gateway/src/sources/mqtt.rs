//! The MQTT source: a persistent session with manual acknowledgements.
//!
//! One task owns rumqttc's event loop ([`poll`]). It forwards each publish over a
//! channel that never blocks it (DESIGN.md "rumqttc needs care"); the writer stores a
//! group, then hands back its [`Acks`], which the task writes to the connection, all in
//! one flush, before it reads anything more.
//!
//! Acknowledgements bypass rumqttc's request queue: its event loop sends one request per
//! poll and chooses at random between that and reading ten more messages, so under load
//! acknowledgements fell ever further behind what was read. And the broker's in-flight
//! window does not bound what it sends: Mosquitto 2.0.11 (Debian 12) kept sending a
//! subscriber that acknowledges in batches far past `max_inflight_messages`. So the
//! [`Backlog`] bounds what waits to be stored: when it is full the task stops reading
//! (the rest waits in the broker) and only writes acknowledgements.
//!
//! Every connection subscribes to what the configuration asks for and unsubscribes what
//! an earlier configuration asked for ([`Subscriptions`]): the broker keeps a persistent
//! session's subscriptions, so they must follow the configuration on every connect, and
//! a refused subscription is an error, not silence.
//!
//! A message larger than `[mqtt] max_packet_bytes` makes rumqttc drop the connection,
//! and a persistent session delivers it again on every reconnect. So after such a drop
//! the next connection accepts packets up to MQTT's own limit, reads the message once
//! (the poller keeps only its first bytes) and the writer rejects it as `too_long`; the
//! connection after that has the configured limit again. The broker's own limit
//! (Mosquitto's `message_size_limit`) should keep such messages from ever arriving.
//!
//! Writing to the connection, the limit of the next connection and the events rumqttc
//! read before a connection broke use rumqttc 0.25's public `EventLoop::network`,
//! `mqtt_options` and `state.events`; check them again when upgrading rumqttc.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parklight_protocol::Message;
use parklight_protocol::gateway::GatewayStatus;
use parklight_protocol::status::OfflineReason;
use parklight_site::Site;
use rand::RngExt;
use rumqttc::mqttbytes::Error as PacketError;
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet,
    PubAck, Publish, QoS, StateError, SubscribeFilter, SubscribeReasonCode, Transport,
};
use tokio_util::sync::CancellationToken;

use crate::config::{MqttConfig, secret};
use crate::metrics as m;
use crate::store::{StorageError, Store};

/// A publish as it arrived, waiting to be stored and acknowledged.
#[derive(Debug)]
pub struct Arrived {
    /// The publish (its packet id is what the writer acknowledges).
    pub publish: Publish,
    /// Arrival, Unix ms.
    pub received_ms: i64,
    /// The connection that delivered it: an acknowledgement goes to that one only.
    pub connection: u64,
}

/// Packet ids to acknowledge, in arrival order, on the connection that delivered them.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Acks {
    /// The connection (see [`Arrived::connection`]).
    pub connection: u64,
    /// QoS 1 packet ids.
    pub packet_ids: Vec<u16>,
}

impl Acks {
    /// The acknowledgements `messages` need, one [`Acks`] per connection, in order.
    pub fn of(messages: &[Arrived]) -> Vec<Acks> {
        let mut all: Vec<Acks> = Vec::new();
        for message in messages
            .iter()
            .filter(|m| m.publish.qos == QoS::AtLeastOnce)
        {
            match all.last_mut() {
                Some(acks) if acks.connection == message.connection => {
                    acks.packet_ids.push(message.publish.pkid);
                }
                _ => all.push(Acks {
                    connection: message.connection,
                    packet_ids: vec![message.publish.pkid],
                }),
            }
        }
        all
    }
}

/// Messages received but not yet committed, bounded: the poller reads only while there
/// is room, the writer makes room.
#[derive(Debug)]
pub struct Backlog {
    depth: AtomicUsize,
    limit: usize,
    drained: tokio::sync::Notify,
}

impl Backlog {
    /// An empty backlog that holds up to `limit` messages.
    pub fn new(limit: usize) -> Backlog {
        Backlog {
            depth: AtomicUsize::new(0),
            limit,
            drained: tokio::sync::Notify::new(),
        }
    }

    /// Messages waiting.
    pub fn depth(&self) -> usize {
        self.depth.load(Ordering::Relaxed)
    }

    fn is_full(&self) -> bool {
        self.depth() >= self.limit
    }

    fn arrived(&self) {
        self.depth.fetch_add(1, Ordering::Relaxed);
    }

    /// The writer is done with `count` messages.
    pub fn handled(&self, count: usize) {
        self.depth.fetch_sub(count, Ordering::Relaxed);
        metrics::gauge!(crate::metrics::QUEUE_DEPTH).set(self.depth() as f64);
        self.drained.notify_one();
    }
}

/// Why the source cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The broker URL cannot be used.
    #[error(transparent)]
    Url(#[from] parklight_sim::mqtt::BrokerUrlError),
    /// The password cannot be read.
    #[error("MQTT password: {0}")]
    Password(#[from] crate::config::SecretError),
    /// The CA file cannot be read.
    #[error("MQTT ca_file {0}: {1}")]
    Ca(std::path::PathBuf, std::io::Error),
}

/// Requests the client may queue for the event loop: stored-acknowledgements, the
/// gateway's status, subscriptions.
const REQUEST_CAPACITY: usize = 65_536;
/// The gateway's own QoS 1 publishes (stored-acknowledgements) awaiting the broker's ack.
/// rumqttc holds back every request while this window is full, so it is far larger than
/// the stored-acknowledgements a second can bring.
const OUTGOING_INFLIGHT: u16 = 10_000;
/// Longest wait for the broker to take a batch of acknowledgements.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// MQTT's largest packet (the most a remaining length can say): the limit of the one
/// connection that reads a message over `[mqtt] max_packet_bytes`.
const MQTT_MAX_PACKET: usize = 268_435_455;
/// Payloads longer than this keep only their start on their way to the writer: enough to
/// reject them as `too_long` and keep a dead letter, without holding megabytes.
const KEPT_PAYLOAD: usize = 4 * parklight_protocol::MAX_PAYLOAD;

/// The gateway's own status topic.
pub fn status_topic(config: &MqttConfig) -> String {
    parklight_protocol::topic::gateway_topic(&config.topic_prefix, &config.client_id)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// The gateway's status payload.
pub fn status_payload(status: &GatewayStatus) -> Vec<u8> {
    status.to_payload().map(|p| p.to_vec()).unwrap_or_default()
}

/// Connection options: fixed client id, persistent session, manual acks, large packets,
/// the gateway's last will, credentials and TLS as configured.
pub fn options(config: &MqttConfig) -> Result<MqttOptions, SourceError> {
    let mut options = connection_options(config, &config.client_id)?;
    options
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_request_channel_capacity(REQUEST_CAPACITY)
        .set_inflight(OUTGOING_INFLIGHT)
        .set_last_will(LastWill::new(
            status_topic(config),
            status_payload(&GatewayStatus::Offline {
                reason: OfflineReason::Lost,
            }),
            QoS::AtLeastOnce,
            true,
        ));
    Ok(options)
}

/// A connection to the configured broker as `client_id`: address, keepalive, packet
/// limit, credentials and TLS.
pub fn connection_options(
    config: &MqttConfig,
    client_id: &str,
) -> Result<MqttOptions, SourceError> {
    let mut options = parklight_sim::mqtt::broker_options(&config.url, client_id)?;
    options
        .set_keep_alive(Duration::from_secs(config.keep_alive_s))
        .set_max_packet_size(config.max_packet_bytes, config.max_packet_bytes);
    if let Some(username) = &config.username {
        let password = if config.password_env.is_some() || config.password_file.is_some() {
            secret(
                config.password_env.as_deref(),
                config.password_file.as_deref(),
            )?
        } else {
            String::new()
        };
        options.set_credentials(username, password);
    }
    if let Some(ca) = &config.ca_file {
        let pem = std::fs::read(ca).map_err(|e| SourceError::Ca(ca.clone(), e))?;
        options.set_transport(Transport::tls(pem, None, None));
    }
    Ok(options)
}

/// The subscriptions: telemetry, status and event of every site, or of the configured
/// sites only.
pub fn topics(config: &MqttConfig, sites: &[Site]) -> Vec<String> {
    let prefix = &config.topic_prefix;
    let site_levels: Vec<&str> = if config.only_configured_sites {
        sites.iter().map(|s| s.id.as_str()).collect()
    } else {
        vec!["+"]
    };
    site_levels
        .iter()
        .flat_map(|site| {
            ["telemetry", "status", "event"].map(|kind| format!("{prefix}/{site}/+/{kind}"))
        })
        .collect()
}

/// What every connection subscribes to, and what it must no longer hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscriptions {
    /// The filters the configuration asks for.
    pub filters: Vec<String>,
    /// Filters the broker may still hold for the session from an earlier configuration.
    pub stale: Vec<String>,
    /// The store's folder, to forget the stale filters once the broker dropped them.
    pub store: std::path::PathBuf,
}

impl Subscriptions {
    /// The subscriptions `config` and `sites` ask for, against those `store` (in
    /// `folder`) remembers the broker may hold. The new ones are remembered before they
    /// are made, so a crash never leaves one the gateway does not know of.
    pub fn plan(
        config: &MqttConfig,
        sites: &[Site],
        store: &mut Store,
        folder: &std::path::Path,
    ) -> Result<Subscriptions, StorageError> {
        let filters = topics(config, sites);
        let mut held = store.subscriptions()?;
        if held.is_empty() {
            // A store that never recorded them (new, or from before it did): the broker
            // may hold what a gateway subscribes to by default.
            held = topics(
                &MqttConfig {
                    only_configured_sites: false,
                    ..config.clone()
                },
                &[],
            );
        }
        let stale: Vec<String> = held
            .iter()
            .filter(|f| !filters.contains(f))
            .cloned()
            .collect();
        let mut remembered = filters.clone();
        remembered.extend(stale.iter().cloned());
        store.set_subscriptions(&remembered)?;
        Ok(Subscriptions {
            filters,
            stale,
            store: folder.to_owned(),
        })
    }

    /// Asks for them on a new connection: the stale ones go first.
    fn request(&self, client: &AsyncClient) {
        for filter in &self.stale {
            if let Err(error) = client.try_unsubscribe(filter) {
                tracing::error!(filter, %error, "cannot unsubscribe");
            }
        }
        let wanted = self
            .filters
            .iter()
            .map(|f| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
        if let Err(error) = client.try_subscribe_many(wanted) {
            tracing::error!(%error, "cannot subscribe");
        }
    }

    /// The broker answered the subscription: a refused filter is an error.
    fn check(&self, codes: &[SubscribeReasonCode]) {
        for (filter, code) in self.filters.iter().zip(codes) {
            match code {
                SubscribeReasonCode::Failure => {
                    metrics::counter!(m::SUBSCRIPTIONS_REFUSED).increment(1);
                    tracing::error!(
                        filter,
                        "the broker refused the subscription: nothing on it reaches the gateway (check the broker's ACL for the gateway's user)"
                    );
                }
                SubscribeReasonCode::Success(_) => {
                    tracing::debug!(filter, "subscribed");
                }
            }
        }
    }

    /// The broker dropped the stale filters: forget them.
    async fn forget_stale(&mut self) {
        let (folder, filters) = (self.store.clone(), self.filters.clone());
        let saved = tokio::task::spawn_blocking(move || {
            Store::open(&folder, 0)?.set_subscriptions(&filters)
        })
        .await;
        match saved {
            Ok(Ok(())) => {
                tracing::info!(filters = ?self.stale, "unsubscribed what the configuration no longer asks for");
                self.stale.clear();
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, "cannot record the subscriptions; unsubscribing again next time")
            }
            Err(error) => {
                tracing::warn!(%error, "cannot record the subscriptions; unsubscribing again next time")
            }
        }
    }
}

/// The poller's side of the writer: publishes go out, acknowledgements come back.
pub struct Intake {
    /// Publishes as they arrive.
    pub arrived: std::sync::mpsc::Sender<Arrived>,
    /// Acknowledgements of what the writer committed.
    pub acks: tokio::sync::mpsc::UnboundedReceiver<Acks>,
    /// What waits to be stored.
    pub backlog: Arc<Backlog>,
    /// Told when the connection is made and when it breaks.
    pub link: Arc<crate::detection::BrokerLink>,
}

/// Writes `acks` to the current connection in one flush; acknowledgements of an earlier
/// connection are dropped (the broker delivers those messages again).
async fn acknowledge(eventloop: &mut EventLoop, connection: u64, acks: Acks) {
    if acks.connection != connection {
        metrics::counter!(m::ACKS_STALE).increment(acks.packet_ids.len() as u64);
        return;
    }
    let Some(network) = eventloop.network.as_mut() else {
        metrics::counter!(m::ACKS_STALE).increment(acks.packet_ids.len() as u64);
        return;
    };
    let written = async {
        for packet_id in acks.packet_ids {
            network
                .write(Packet::PubAck(PubAck::new(packet_id)))
                .await?;
        }
        network.flush().await
    };
    match tokio::time::timeout(WRITE_TIMEOUT, written).await {
        Ok(Ok(())) => {}
        // The next poll finds the connection broken and reconnects.
        Ok(Err(error)) => tracing::warn!(%error, "acknowledgements not written"),
        Err(_) => tracing::warn!("the broker took no acknowledgements for {WRITE_TIMEOUT:?}"),
    }
}

/// Polls the event loop until a clean disconnect (or, once `stop` is cancelled, until
/// the broker is out of reach), forwarding publishes to `arrived` until `stop` is
/// cancelled: what arrives after stays unacknowledged, and the broker delivers it again
/// next time. Writes the writer's `acks` before reading more, and reads only while the
/// `backlog` has room. On every connection it makes the `subscriptions` and publishes
/// the gateway's birth; reconnects with exponential backoff and jitter.
pub async fn poll(
    mut eventloop: EventLoop,
    client: AsyncClient,
    mut subscriptions: Subscriptions,
    birth: (String, Vec<u8>),
    intake: Intake,
    stop: CancellationToken,
) {
    let Intake {
        arrived,
        mut acks,
        backlog,
        link,
    } = intake;
    let packet_limit = eventloop.mqtt_options.max_packet_size();
    let mut backoff = Duration::from_millis(200);
    let mut disconnecting = false;
    let mut connection = 0;
    let mut unsubscribed = 0;
    let mut subscribed = false;
    let mut paused = false;
    loop {
        let full = backlog.is_full() && !stop.is_cancelled();
        if full && !paused {
            metrics::counter!(m::QUEUE_FULL).increment(1);
        }
        paused = full;
        // While connecting, acknowledgements wait: cancelling a connect half-way would
        // drop the new connection and make the broker publish the gateway's will.
        let connected = eventloop.network.is_some();
        let event = tokio::select! {
            biased;
            Some(ready) = acks.recv(), if connected => {
                acknowledge(&mut eventloop, connection, ready).await;
                continue;
            }
            _ = backlog.drained.notified(), if full => continue,
            _ = stop.cancelled(), if full => continue,
            event = eventloop.poll(), if !full => event,
        };
        if event.is_err() {
            link.lost();
        }
        match event {
            Ok(Event::Incoming(Packet::ConnAck(connack))) => {
                link.connected(jiff::Timestamp::now().as_millisecond());
                backoff = Duration::from_millis(200);
                connection += 1;
                unsubscribed = 0;
                subscribed = false;
                // What rumqttc read before the last connection broke is not ours to
                // acknowledge on this one: the broker delivers it again.
                eventloop.state.events.clear();
                // A limit raised to read one oversized message holds for one connection.
                eventloop
                    .mqtt_options
                    .set_max_packet_size(packet_limit, packet_limit);
                metrics::counter!(m::MQTT_CONNECTS).increment(1);
                tracing::info!(
                    session_present = connack.session_present,
                    "connected to the broker"
                );
                subscriptions.request(&client);
                let _ = client.try_publish(&birth.0, QoS::AtLeastOnce, true, birth.1.clone());
            }
            Ok(Event::Incoming(Packet::SubAck(suback))) if !subscribed => {
                // The first answer of this connection (a subscription left over from the
                // last one gets the same answer again).
                subscribed = true;
                subscriptions.check(&suback.return_codes);
            }
            Ok(Event::Incoming(Packet::UnsubAck(_))) => {
                unsubscribed += 1;
                if unsubscribed == subscriptions.stale.len() {
                    subscriptions.forget_stale().await;
                }
            }
            Ok(Event::Incoming(Packet::Publish(mut publish))) if !stop.is_cancelled() => {
                backlog.arrived();
                if publish.payload.len() > KEPT_PAYLOAD {
                    publish.payload = publish.payload[..KEPT_PAYLOAD].to_vec().into();
                }
                let received_ms = jiff::Timestamp::now().as_millisecond();
                if arrived
                    .send(Arrived {
                        publish,
                        received_ms,
                        connection,
                    })
                    .is_err()
                {
                    backlog.handled(1);
                }
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => disconnecting = true,
            Ok(_) => {}
            Err(_) if disconnecting => return,
            Err(_) if stop.is_cancelled() => return,
            Err(ConnectionError::MqttState(StateError::Deserialization(
                PacketError::PayloadSizeLimitExceeded(size),
            ))) => {
                metrics::counter!(m::MQTT_OVERSIZED).increment(1);
                tracing::warn!(
                    size,
                    limit = packet_limit,
                    "a message larger than [mqtt] max_packet_bytes broke the connection; the next connection reads it once to reject it (lower the broker's message_size_limit)"
                );
                eventloop
                    .mqtt_options
                    .set_max_packet_size(MQTT_MAX_PACKET, packet_limit);
            }
            Err(error) => {
                tracing::warn!(%error, retry_in = ?backoff, "broker connection failed");
                let jitter = rand::rng().random_range(0.5..1.5);
                tokio::select! {
                    _ = tokio::time::sleep(backoff.mul_f64(jitter)) => {}
                    _ = stop.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_follow_arrival_and_stay_with_their_connection() {
        let message = |connection, pkid, qos| {
            let mut publish = Publish::new("t", qos, "x");
            publish.pkid = pkid;
            Arrived {
                publish,
                received_ms: 0,
                connection,
            }
        };
        let group = [
            message(1, 7, QoS::AtLeastOnce),
            message(1, 0, QoS::AtMostOnce),
            message(1, 3, QoS::AtLeastOnce),
            message(2, 1, QoS::AtLeastOnce),
        ];
        assert_eq!(
            Acks::of(&group),
            [
                Acks {
                    connection: 1,
                    packet_ids: vec![7, 3]
                },
                Acks {
                    connection: 2,
                    packet_ids: vec![1]
                }
            ]
        );
    }

    #[test]
    fn topics_cover_every_site_or_the_configured_ones() {
        let mut config = MqttConfig::default();
        assert_eq!(
            topics(&config, &[]),
            [
                "parklight/v1/+/+/telemetry",
                "parklight/v1/+/+/status",
                "parklight/v1/+/+/event"
            ]
        );
        config.only_configured_sites = true;
        assert_eq!(
            topics(&config, &[Site::remiseparken()])[0],
            "parklight/v1/remiseparken/+/telemetry"
        );
        assert_eq!(
            status_topic(&config),
            "parklight/v1/_gateways/parklight-gateway"
        );
    }
}
