//! The MQTT source: a persistent session with manual acknowledgements.
//!
//! One task owns rumqttc's event loop and only polls it ([`poll`]). It forwards each
//! publish over an unbounded channel, so it never blocks; the broker's in-flight window
//! bounds that queue (DESIGN.md "rumqttc needs care"). The writer acknowledges each
//! publish only after the store committed it, in arrival order.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parklight_protocol::Message;
use parklight_protocol::gateway::GatewayStatus;
use parklight_protocol::status::OfflineReason;
use parklight_sim::Site;
use rand::RngExt;
use rumqttc::{
    AsyncClient, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, Publish, QoS, Transport,
};
use tokio_util::sync::CancellationToken;

use crate::config::{MqttConfig, secret};

/// A publish as it arrived, waiting to be stored and acknowledged.
#[derive(Debug)]
pub struct Arrived {
    /// The publish (its packet id is what the writer acknowledges).
    pub publish: Publish,
    /// Arrival, Unix ms.
    pub received_ms: i64,
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

/// Requests the client may queue for the event loop: acknowledgements for the whole
/// in-flight window, plus stored-acknowledgements.
const REQUEST_CAPACITY: usize = 65_536;
/// The gateway's own QoS 1 publishes (stored-acknowledgements) awaiting the broker's ack.
/// rumqttc holds back every request, acknowledgements of incoming reports included, while
/// this window is full, so it is far larger than the acks a second can bring.
const OUTGOING_INFLIGHT: u16 = 10_000;

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
    let mut options = parklight_sim::mqtt::broker_options(&config.url, &config.client_id)?;
    options
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_keep_alive(Duration::from_secs(config.keep_alive_s))
        .set_max_packet_size(config.max_packet_bytes, config.max_packet_bytes)
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

/// Polls the event loop until a clean disconnect (or, once `stop` is cancelled, until
/// the broker is out of reach), forwarding publishes to `arrived` until `stop` is
/// cancelled: what arrives after stays unacknowledged, and the broker delivers it again
/// next time. Subscribes and publishes the gateway's birth whenever the broker reports a
/// new session; reconnects with exponential backoff and jitter.
pub async fn poll(
    mut eventloop: EventLoop,
    client: AsyncClient,
    topics: Vec<String>,
    birth: (String, Vec<u8>),
    arrived: std::sync::mpsc::Sender<Arrived>,
    depth: Arc<AtomicUsize>,
    stop: CancellationToken,
) {
    let mut backoff = Duration::from_millis(200);
    let mut disconnecting = false;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(connack))) => {
                backoff = Duration::from_millis(200);
                metrics::counter!(crate::metrics::MQTT_CONNECTS).increment(1);
                tracing::info!(
                    session_present = connack.session_present,
                    "connected to the broker"
                );
                if !connack.session_present {
                    for topic in &topics {
                        if let Err(e) = client.try_subscribe(topic, QoS::AtLeastOnce) {
                            tracing::error!(topic, error = %e, "cannot subscribe");
                        }
                    }
                }
                let _ = client.try_publish(&birth.0, QoS::AtLeastOnce, true, birth.1.clone());
            }
            Ok(Event::Incoming(Packet::Publish(publish))) if !stop.is_cancelled() => {
                depth.fetch_add(1, Ordering::Relaxed);
                let received_ms = jiff::Timestamp::now().as_millisecond();
                if arrived
                    .send(Arrived {
                        publish,
                        received_ms,
                    })
                    .is_err()
                {
                    depth.fetch_sub(1, Ordering::Relaxed);
                }
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => disconnecting = true,
            Ok(_) => {}
            Err(_) if disconnecting => return,
            Err(_) if stop.is_cancelled() => return,
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
