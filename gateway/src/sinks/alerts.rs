//! Alert receivers: the MQTT alerts topic and webhooks. Each reads the alert outbox
//! through its own persisted cursor, so one that is down gets every change later, in
//! order, and a slow one never slows ingest or the others. Delivery is at least once:
//! a receiver may see a change twice after a crash, identified by `(id, rev)`.

use std::path::PathBuf;
use std::time::Duration;

use metrics::{counter, gauge};
use parklight_protocol::alert::{Alert, AlertKind, Severity};
use parklight_protocol::topic::is_identifier;
use rumqttc::{AsyncClient, Event, EventLoop, Outgoing as MqttOutgoing, Packet, QoS};
use tokio::sync::{mpsc, watch};
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
/// and counts one delivered once the broker acknowledged it.
pub struct MqttReceiver {
    client: AsyncClient,
    prefix: String,
    events: mpsc::UnboundedReceiver<Sent>,
}

/// What the MQTT connection saw of a publish.
enum Sent {
    Out(u16),
    Acked(u16),
    Broken(String),
}

impl MqttReceiver {
    /// Connects (in the background) with the gateway's settings and its own client id.
    pub fn start(
        config: &MqttConfig,
        stop: CancellationToken,
    ) -> Result<MqttReceiver, crate::sources::mqtt::SourceError> {
        let mut options = crate::sources::mqtt::connection_options(
            config,
            &format!("{}-alerts", config.client_id),
        )?;
        options.set_clean_session(true);
        let (client, eventloop) = AsyncClient::new(options, 16);
        let (events, received) = mpsc::unbounded_channel();
        tokio::spawn(drive(eventloop, events, stop));
        Ok(MqttReceiver {
            client,
            prefix: config.topic_prefix.clone(),
            events: received,
        })
    }

    async fn deliver(&mut self, alert: &Alert, body: &[u8]) -> Delivery {
        if !is_identifier(&alert.site) {
            return Delivery::Refused(format!("site {:?} is no topic level", alert.site));
        }
        while self.events.try_recv().is_ok() {} // what an earlier attempt left
        let topic = format!("{}/{}/alerts", self.prefix, alert.site);
        if let Err(error) = self
            .client
            .publish(topic, QoS::AtLeastOnce, false, body.to_vec())
            .await
        {
            return Delivery::Retry(error.to_string());
        }
        let mut pkid = None;
        let waited = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(event) = self.events.recv().await {
                match event {
                    Sent::Out(id) if pkid.is_none() => pkid = Some(id),
                    Sent::Acked(id) if pkid == Some(id) => return Delivery::Done,
                    Sent::Broken(reason) => return Delivery::Retry(reason),
                    _ => {}
                }
            }
            Delivery::Retry("the MQTT connection ended".into())
        })
        .await;
        waited.unwrap_or_else(|_| Delivery::Retry("no PUBACK within 10 s".into()))
    }
}

/// Polls the alert connection for as long as the gateway runs, passing on what
/// becomes of publishes.
async fn drive(
    mut eventloop: EventLoop,
    events: mpsc::UnboundedSender<Sent>,
    stop: CancellationToken,
) {
    let mut backoff = 0;
    loop {
        let event = tokio::select! {
            event = eventloop.poll() => event,
            _ = stop.cancelled() => return,
        };
        let sent = match event {
            Ok(Event::Outgoing(MqttOutgoing::Publish(pkid))) => Sent::Out(pkid),
            Ok(Event::Incoming(Packet::PubAck(ack))) => Sent::Acked(ack.pkid),
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff = 0;
                continue;
            }
            Ok(_) => continue,
            Err(error) => {
                let _ = events.send(Sent::Broken(error.to_string()));
                tracing::debug!(%error, "alert connection to the broker lost");
                tokio::time::sleep(super::backoff(backoff)).await;
                backoff += 1;
                continue;
            }
        };
        let _ = events.send(sent);
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
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.timeout_s))
            .build()
            .map_err(|e| format!("{}: {e}", config.name))?;
        Ok(Webhook {
            http,
            url: config.url.clone(),
            secret,
        })
    }

    async fn deliver(&self, delivery: &str, body: &[u8]) -> Delivery {
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
                if (400..500).contains(&status) && status != 408 && status != 429 {
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
    Mqtt(MqttReceiver),
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
    async fn deliver(&mut self, change: &Outgoing) -> Delivery {
        let body = match change.alert.to_json() {
            Ok(body) => body,
            Err(error) => return Delivery::Refused(error.to_string()),
        };
        match &mut self.target {
            Target::Mqtt(mqtt) => mqtt.deliver(&change.alert, &body).await,
            Target::Webhook(hook) => {
                let delivery = format!("{}.{}.{}", change.alert.id, change.alert.rev, self.name);
                hook.deliver(&delivery, &body).await
            }
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

/// Delivers to `receiver` until `stop`: every change after its cursor, in order,
/// retrying with a capped backoff until it is taken or refused for good.
pub async fn deliver(
    mut receiver: Receiver,
    store: PathBuf,
    dead_letters_max: usize,
    mut changed: watch::Receiver<i64>,
    stop: CancellationToken,
) -> Result<(), StorageError> {
    let mut store = Store::open(&store, dead_letters_max)?;
    let name = receiver.name.clone();
    let cursor_key = cursor_name(&name);
    let mut cursor = store.cursor(&cursor_key)?;
    let labels = [("receiver", name.clone())];
    while !stop.is_cancelled() {
        let batch = store.outbox_after(cursor, 100, true)?;
        let (depth, oldest) = store.outbox_waiting(cursor)?;
        gauge!(m::ALERT_QUEUE_DEPTH, &labels).set(depth as f64);
        let age = oldest.map_or(0, |at| {
            (jiff::Timestamp::now().as_millisecond() - at).max(0)
        });
        gauge!(m::ALERT_QUEUE_AGE, &labels).set(age as f64 / 1000.0);
        if batch.is_empty() {
            tokio::select! {
                _ = changed.changed() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.cancelled() => {}
            }
            continue;
        }
        for change in batch {
            if receiver.filter.wants(&change)
                && !deliver_one(&mut receiver, &mut store, &change, &stop).await?
            {
                return Ok(()); // stopping: this change waits for the next start
            }
            cursor = change.seq;
            store.set_cursor(&cursor_key, cursor)?;
        }
    }
    Ok(())
}

/// Delivers one change, retrying; false when stopped before it was taken or refused.
async fn deliver_one(
    receiver: &mut Receiver,
    store: &mut Store,
    change: &Outgoing,
    stop: &CancellationToken,
) -> Result<bool, StorageError> {
    let name = receiver.name.clone();
    let mut attempt = 0;
    loop {
        let outcome = tokio::select! {
            outcome = receiver.deliver(change) => outcome,
            _ = stop.cancelled() => return Ok(false),
        };
        let (id, rev) = (&change.alert.id, change.alert.rev);
        match outcome {
            Delivery::Done => {
                counter!(m::ALERTS_DELIVERED, "receiver" => name).increment(1);
                return Ok(true);
            }
            Delivery::Refused(reason) => {
                counter!(m::ALERT_DELIVERY_FAILURES, "receiver" => name.clone(), "kind" => "permanent").increment(1);
                tracing::warn!(receiver = %name, %id, rev, %reason, "alert change refused for good");
                let now = jiff::Timestamp::now().as_millisecond();
                store.record_refusal(&name, &change.alert, &reason, now)?;
                return Ok(true);
            }
            Delivery::Retry(reason) => {
                counter!(m::ALERT_DELIVERY_FAILURES, "receiver" => name.clone(), "kind" => "retry")
                    .increment(1);
                tracing::warn!(receiver = %name, %id, rev, %reason, attempt, "alert delivery failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(super::backoff(attempt)) => {}
                    _ = stop.cancelled() => return Ok(false),
                }
                attempt += 1;
            }
        }
    }
}

/// The receivers the configuration names.
pub fn receivers(
    config: &crate::config::Config,
    stop: &CancellationToken,
) -> Result<Vec<Receiver>, crate::GatewayError> {
    let mut out = Vec::new();
    if config.alerts.mqtt {
        out.push(Receiver {
            name: "mqtt".into(),
            filter: Filter::default(),
            target: Target::Mqtt(MqttReceiver::start(&config.mqtt, stop.clone())?),
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
