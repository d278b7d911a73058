//! Alert receivers: the MQTT alerts topic and webhooks. Each reads the alert outbox
//! through its own persisted cursor, so one that is down gets every change later, in
//! order, and a slow one never slows ingest or the others. Delivery is at least once:
//! a receiver may see a change twice after a crash, identified by `(id, rev)`.

use std::path::PathBuf;
use std::time::Duration;

use metrics::{counter, gauge};
use parklight_protocol::alert::{AlertKind, Severity};
use parklight_protocol::topic::is_identifier;
use rumqttc::{AsyncClient, Event, EventLoop, Outgoing as MqttOutgoing, Packet, QoS};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{MqttConfig, WebhookConfig, secret};
use crate::metrics as m;
use crate::store::alerts::Outgoing;
use crate::store::{StorageError, Store};

/// How a delivery went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The receiver has it.
    Done,
    /// Not now: try again after a while.
    Retry(String),
    /// Never: the receiver refused it for good.
    Refused(String),
}

/// The cursor name of a receiver.
pub fn cursor_name(receiver: &str) -> String {
    format!("alerts.{receiver}")
}

/// Which changes a receiver wants.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only these kinds (all when empty).
    pub kinds: Vec<AlertKind>,
    /// Only at least this severe.
    pub min_severity: Option<Severity>,
    /// Only these sites (all when empty).
    pub sites: Vec<String>,
    /// Only escalated changes.
    pub escalation: bool,
}

impl Filter {
    fn wants(&self, change: &Outgoing) -> bool {
        let a = &change.alert;
        (self.kinds.is_empty() || self.kinds.contains(&a.kind))
            && self.min_severity.is_none_or(|min| a.severity >= min)
            && (self.sites.is_empty() || self.sites.contains(&a.site))
            && (!self.escalation || change.escalated)
    }
}

/// Publishes alerts QoS 1 on `{prefix}/{site}/alerts` over a connection of its own,
/// and counts them delivered once the broker acknowledged each. A connection that fails
/// is dropped whole and the changes are published again on a new one: nothing left over
/// from a failed attempt is ever taken for an acknowledgement of a later one.
pub struct MqttReceiver {
    options: rumqttc::MqttOptions,
    prefix: String,
    connection: Option<(AsyncClient, EventLoop)>,
}

/// Most changes published before waiting for their acknowledgements.
const MQTT_BATCH: usize = 100;

impl MqttReceiver {
    /// A receiver with the gateway's broker settings and its own client id.
    pub fn new(config: &MqttConfig) -> Result<MqttReceiver, crate::sources::mqtt::SourceError> {
        let mut options = crate::sources::mqtt::connection_options(
            config,
            &format!("{}-alerts", config.client_id),
        )?;
        options.set_clean_session(true);
        Ok(MqttReceiver {
            options,
            prefix: config.topic_prefix.clone(),
            connection: None,
        })
    }

    /// Publishes `changes` and waits for the broker to acknowledge every one.
    async fn deliver(&mut self, changes: &[&Outgoing]) -> (usize, Delivery) {
        let (client, eventloop) = self
            .connection
            .get_or_insert_with(|| AsyncClient::new(self.options.clone(), MQTT_BATCH + 8));
        let mut sent = 0;
        for change in changes.iter().take(MQTT_BATCH) {
            let alert = &change.alert;
            let (true, Ok(body)) = (is_identifier(&alert.site), alert.to_json()) else {
                break; // refused below, on its own
            };
            let topic = format!("{}/{}/alerts", self.prefix, alert.site);
            if let Err(error) = client.try_publish(topic, QoS::AtLeastOnce, false, body) {
                self.connection = None;
                return (0, Delivery::Retry(error.to_string()));
            }
            sent += 1;
        }
        if sent == 0 {
            let site = &changes[0].alert.site;
            return (
                0,
                Delivery::Refused(format!("site {site:?} is no topic level")),
            );
        }
        let mut ours = std::collections::HashSet::new();
        let mut acked = 0;
        let waited = tokio::time::timeout(Duration::from_secs(10), async {
            while acked < sent {
                match eventloop.poll().await {
                    Ok(Event::Outgoing(MqttOutgoing::Publish(pkid))) => {
                        ours.insert(pkid);
                    }
                    Ok(Event::Incoming(Packet::PubAck(ack))) if ours.remove(&ack.pkid) => {
                        acked += 1;
                    }
                    Ok(_) => {}
                    Err(error) => return Err(error.to_string()),
                }
            }
            Ok(())
        })
        .await;
        match waited {
            Ok(Ok(())) => (sent, Delivery::Done),
            Ok(Err(reason)) => {
                self.connection = None;
                (0, Delivery::Retry(reason))
            }
            Err(_) => {
                self.connection = None;
                (0, Delivery::Retry("no PUBACK within 10 s".into()))
            }
        }
    }

    /// Keeps the connection alive (pings) while there is nothing to send.
    async fn idle(&mut self) {
        match self.connection.as_mut() {
            Some((_, eventloop)) => {
                if eventloop.poll().await.is_err() {
                    self.connection = None;
                }
            }
            None => std::future::pending().await,
        }
    }
}

/// POSTs alert changes, signed, to a URL.
pub struct Webhook {
    http: reqwest::Client,
    url: String,
    secret: String,
}

impl Webhook {
    /// The webhook `config` describes.
    pub fn new(config: &WebhookConfig) -> Result<Webhook, String> {
        let secret = secret(config.secret_env.as_deref(), config.secret_file.as_deref())
            .map_err(|e| format!("{}: secret: {e}", config.name))?;
        // No redirects: one would turn the POST into a GET, and send the signature
        // where the configuration never said.
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.timeout_s))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("{}: {e}", config.name))?;
        Ok(Webhook {
            http,
            url: config.url.clone(),
            secret,
        })
    }

    /// POSTs `changes` one by one, up to the first that is not taken.
    async fn deliver(&self, receiver: &str, changes: &[&Outgoing]) -> (usize, Delivery) {
        for (done, change) in changes.iter().enumerate() {
            let alert = &change.alert;
            let outcome = match alert.to_json() {
                Ok(body) => {
                    let delivery = format!("{}.{}.{receiver}", alert.id, alert.rev);
                    self.post(&delivery, &body).await
                }
                Err(error) => Delivery::Refused(error.to_string()),
            };
            if outcome != Delivery::Done {
                return (done, outcome);
            }
        }
        (changes.len(), Delivery::Done)
    }

    async fn post(&self, delivery: &str, body: &[u8]) -> Delivery {
        let timestamp = jiff::Timestamp::now().as_second();
        let response = self
            .http
            .post(&self.url)
            .header("Content-Type", "application/json")
            .header("X-Parklight-Delivery", delivery)
            .header("X-Parklight-Timestamp", timestamp.to_string())
            .header(
                "X-Parklight-Signature",
                signature(&self.secret, timestamp, body),
            )
            .body(body.to_vec())
            .send()
            .await;
        match response {
            Ok(r) if r.status().is_success() => Delivery::Done,
            Ok(r) => {
                let status = r.status().as_u16();
                let reason = format!("HTTP {status}");
                if (300..400).contains(&status) {
                    Delivery::Refused(format!("{reason}: redirected; configure the final URL"))
                } else if (400..500).contains(&status) && status != 408 && status != 429 {
                    Delivery::Refused(reason)
                } else {
                    Delivery::Retry(reason)
                }
            }
            // Without the URL: it may hold a token.
            Err(error) => Delivery::Retry(error.without_url().to_string()),
        }
    }
}

/// `sha256=<hex>`: the HMAC-SHA256 with `secret` over `"{timestamp}.{body}"`.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mut context = ring::hmac::Context::with_key(&key);
    context.update(format!("{timestamp}.").as_bytes());
    context.update(body);
    let tag = context.sign();
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// Where a receiver delivers.
pub enum Target {
    /// The alerts topic.
    Mqtt(Box<MqttReceiver>),
    /// A webhook.
    Webhook(Webhook),
}

/// A receiver: a name, what it wants, and where it delivers.
pub struct Receiver {
    /// Its name (`mqtt`, or the webhook's).
    pub name: String,
    /// What it wants.
    pub filter: Filter,
    /// Where it delivers.
    pub target: Target,
}

impl Receiver {
    /// Delivers the first of `changes` (the MQTT receiver several at once): how many
    /// were taken, and what stopped it (`Done` when none did).
    async fn deliver(&mut self, changes: &[&Outgoing]) -> (usize, Delivery) {
        match &mut self.target {
            Target::Mqtt(mqtt) => mqtt.deliver(changes).await,
            Target::Webhook(hook) => hook.deliver(&self.name, changes).await,
        }
    }

    async fn idle(&mut self) {
        match &mut self.target {
            Target::Mqtt(mqtt) => mqtt.idle().await,
            Target::Webhook(_) => std::future::pending().await,
        }
    }
}

/// Sets the cursor of each receiver that has none to the outbox's end: a receiver
/// added later starts with what happens from then on, not the whole history.
pub fn start_cursors(store: &mut Store, names: &[String]) -> Result<(), StorageError> {
    let end = store.outbox_end()?;
    for name in names {
        if store.cursor_opt(&cursor_name(name))?.is_none() {
            store.set_cursor(&cursor_name(name), end)?;
        }
    }
    Ok(())
}

/// Delivers to `receiver` until `stop`: every change after its cursor that it wants,
/// in order, retrying with a capped backoff until each is taken or refused for good.
/// The store failing for a while (busy, full) is waited out too.
pub async fn deliver(
    mut receiver: Receiver,
    store: PathBuf,
    dead_letters_max: usize,
    mut changed: watch::Receiver<i64>,
    stop: CancellationToken,
) -> Result<(), StorageError> {
    let mut store = Store::open(&store, dead_letters_max)?;
    // Counted from zero from the start, so that a rate over them reads 0, not nothing.
    let name = receiver.name.clone();
    counter!(m::ALERTS_DELIVERED, "receiver" => name.clone()).increment(0);
    for kind in ["permanent", "retry"] {
        counter!(m::ALERT_DELIVERY_FAILURES, "receiver" => name.clone(), "kind" => kind)
            .increment(0);
    }
    let mut attempt = 0;
    while !stop.is_cancelled() {
        match round(&mut receiver, &mut store, &mut changed, &stop).await {
            Ok(()) => attempt = 0,
            Err(error) if error.is_transient() => {
                tracing::warn!(receiver = %receiver.name, %error, "alert delivery cannot use the store; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(super::backoff(attempt)) => {}
                    _ = stop.cancelled() => {}
                }
                attempt += 1;
            }
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// What waits for `receiver` after `cursor`, and since when, as gauges.
fn measure(store: &Store, receiver: &Receiver, cursor: i64) -> Result<(), StorageError> {
    let labels = [("receiver", receiver.name.clone())];
    let (depth, oldest) = store.outbox_waiting(cursor)?;
    gauge!(m::ALERT_QUEUE_DEPTH, &labels).set(depth as f64);
    let age = oldest.map_or(0, |at| {
        (jiff::Timestamp::now().as_millisecond() - at).max(0)
    });
    gauge!(m::ALERT_QUEUE_AGE, &labels).set(age as f64 / 1000.0);
    Ok(())
}

/// One batch after the receiver's cursor (or a wait for one); the cursor is stored once
/// per batch: after a crash its changes may be delivered again, never skipped.
async fn round(
    receiver: &mut Receiver,
    store: &mut Store,
    changed: &mut watch::Receiver<i64>,
    stop: &CancellationToken,
) -> Result<(), StorageError> {
    let cursor_key = cursor_name(&receiver.name);
    let cursor = store.cursor(&cursor_key)?;
    let batch = store.outbox_after(cursor, MQTT_BATCH, true)?;
    measure(store, receiver, cursor)?;
    if batch.is_empty() {
        tokio::select! {
            _ = changed.changed() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = receiver.idle() => {}
            _ = stop.cancelled() => {}
        }
        return Ok(());
    }
    let wanted: Vec<&Outgoing> = batch.iter().filter(|c| receiver.filter.wants(c)).collect();
    let name = receiver.name.clone();
    let (mut next, mut attempt) = (0, 0);
    while next < wanted.len() {
        let (taken, outcome) = tokio::select! {
            result = receiver.deliver(&wanted[next..]) => result,
            _ = stop.cancelled() => break,
        };
        counter!(m::ALERTS_DELIVERED, "receiver" => name.clone()).increment(taken as u64);
        next += taken;
        match outcome {
            Delivery::Done => attempt = 0,
            Delivery::Refused(reason) => {
                let alert = &wanted[next].alert;
                counter!(m::ALERT_DELIVERY_FAILURES, "receiver" => name.clone(), "kind" => "permanent").increment(1);
                tracing::warn!(receiver = %name, id = %alert.id, rev = alert.rev, %reason, "alert change refused for good");
                let now = jiff::Timestamp::now().as_millisecond();
                store.record_refusal(&name, alert, &reason, now)?;
                next += 1;
            }
            Delivery::Retry(reason) => {
                let alert = &wanted[next].alert;
                counter!(m::ALERT_DELIVERY_FAILURES, "receiver" => name.clone(), "kind" => "retry")
                    .increment(1);
                tracing::warn!(receiver = %name, id = %alert.id, rev = alert.rev, %reason, attempt, "alert delivery failed; retrying");
                measure(store, receiver, cursor)?;
                tokio::select! {
                    _ = tokio::time::sleep(super::backoff(attempt)) => {}
                    _ = stop.cancelled() => break,
                }
                attempt += 1;
            }
        }
    }
    // Past every change before the first one not yet taken.
    let done = match wanted.get(next) {
        Some(waiting) => waiting.seq - 1,
        None => batch.last().map_or(cursor, |c| c.seq),
    };
    if done > cursor {
        store.set_cursor(&cursor_key, done)?;
    }
    Ok(())
}

/// The receivers the configuration names.
pub fn receivers(config: &crate::config::Config) -> Result<Vec<Receiver>, crate::GatewayError> {
    let mut out = Vec::new();
    if config.alerts.mqtt {
        out.push(Receiver {
            name: "mqtt".into(),
            filter: Filter::default(),
            target: Target::Mqtt(Box::new(MqttReceiver::new(&config.mqtt)?)),
        });
    }
    for hook in &config.webhooks {
        out.push(Receiver {
            name: hook.name.clone(),
            filter: Filter {
                kinds: hook
                    .kinds
                    .iter()
                    .filter_map(|k| AlertKind::parse(k))
                    .collect(),
                min_severity: hook.min_severity.as_deref().and_then(Severity::parse),
                sites: hook.sites.clone(),
                escalation: hook.escalation,
            },
            target: Target::Webhook(Webhook::new(hook).map_err(crate::GatewayError::Webhook)?),
        });
    }
    Ok(out)
}
