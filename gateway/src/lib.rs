//! The parklight gateway: every report from the broker stored once, durably,
//! acknowledged, and (later in the pipeline) forwarded and watched.
//!
//! - [`config`]: the typed configuration and `parklight check`.
//! - [`sources::mqtt`]: the broker connection; one task only polls it.
//! - [`ingest`]: decode, enrich, dedupe, clock repair, acknowledgement watermarks.
//! - [`store`]: the embedded SQLite store; [`maintenance`]: compaction and retention.
//! - [`writer`]: group commits, MQTT acks after commit, stored-acknowledgements to nodes.
//! - [`http`]: `/metrics`; [`metrics`]: every metric name.
//! - [`demo`]: `parklight demo`, everything embedded.
//! - [`logging`], [`signals`]: process plumbing.
//!
//! [`run`] starts it all and stops it cleanly: `main` and the tests call the same `run`.

pub mod config;
pub mod demo;
pub mod http;
pub mod ingest;
pub mod logging;
pub mod maintenance;
pub mod metrics;
pub mod signals;
pub mod sinks;
pub mod sources;
pub mod store;
pub mod writer;

use std::sync::Arc;
use std::time::Duration;

use parklight_protocol::gateway::GatewayStatus;
use parklight_protocol::status::OfflineReason;
use rumqttc::{AsyncClient, QoS};
use tokio_util::sync::CancellationToken;

use crate::config::Loaded;

/// How long a clean stop may take before the gateway gives up waiting.
pub const STOP_DEADLINE: Duration = Duration::from_secs(10);

/// Why the gateway could not run.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The store failed.
    #[error(transparent)]
    Storage(#[from] store::StorageError),
    /// The MQTT source cannot be set up.
    #[error(transparent)]
    Source(#[from] sources::mqtt::SourceError),
    /// The HTTP listener cannot bind.
    #[error("HTTP listener {address}: {source}")]
    Http {
        /// The address.
        address: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The InfluxDB token cannot be read.
    #[error("[influxdb] token: {0}")]
    Token(#[from] config::SecretError),
    /// The writer thread died.
    #[error("the writer stopped unexpectedly")]
    WriterDied,
}

/// Runs the gateway until `stop` is cancelled, then stops taking messages, stores and
/// acknowledges what it has, says goodbye on its status topic and disconnects.
pub async fn run(loaded: Loaded, stop: CancellationToken) -> Result<(), GatewayError> {
    let Loaded { config, sites } = loaded;
    http::metrics_handle();
    let mut store = store::Store::open(&config.storage.path, config.storage.dead_letters_max)?;
    store.register_sites(&sites)?;
    let ingest = ingest::Ingest::new(
        &config.mqtt.topic_prefix,
        &sites,
        config.ingest.clock_skew_s as i64 * 1000,
    );
    let options = sources::mqtt::options(&config.mqtt)?;
    let capacity = options.request_channel_capacity();
    let (client, eventloop) = AsyncClient::new(options, capacity);
    let status_topic = sources::mqtt::status_topic(&config.mqtt);
    let birth = GatewayStatus::Online {
        started: jiff::Timestamp::now().as_millisecond() as u64,
        sites: sites.iter().map(|s| s.id.clone()).collect(),
    };
    let http = http::serve(config.http.listen, stop.clone())
        .await
        .map_err(|source| GatewayError::Http {
            address: config.http.listen,
            source,
        })?;
    let (arrived_tx, arrived_rx) = std::sync::mpsc::channel();
    let (acks_tx, acks_rx) = tokio::sync::mpsc::unbounded_channel();
    let backlog = Arc::new(sources::mqtt::Backlog::new(
        config.ingest.queue_max_messages,
    ));
    let poller = tokio::spawn(sources::mqtt::poll(
        eventloop,
        client.clone(),
        sources::mqtt::topics(&config.mqtt, &sites),
        (status_topic.clone(), sources::mqtt::status_payload(&birth)),
        sources::mqtt::Intake {
            arrived: arrived_tx,
            acks: acks_rx,
            backlog: backlog.clone(),
        },
        stop.clone(),
    ));
    let settings = writer::WriterSettings {
        max_messages: config.storage.commit_max_reports,
        max_wait: Duration::from_millis(config.storage.commit_max_wait_ms),
        ack_interval: Duration::from_secs(config.ingest.ack_interval_s),
        prefix: config.mqtt.topic_prefix.clone(),
    };
    let writer = {
        let (client, stop) = (client.clone(), stop.clone());
        std::thread::Builder::new()
            .name("parklight-writer".into())
            .spawn(move || {
                let outlets = writer::Outlets {
                    client,
                    acks: acks_tx,
                    backlog,
                };
                let result =
                    writer::run(store, ingest, arrived_rx, outlets, settings, stop.clone());
                // Whatever ended the writer ends the gateway.
                stop.cancel();
                result
            })
            .map_err(|_| GatewayError::WriterDied)?
    };
    let forwarder = match &config.influxdb {
        Some(influx) => {
            let sink = sinks::influxdb::InfluxSink::new(influx)?;
            let settings = sinks::influxdb::ForwarderSettings {
                store: config.storage.path.clone(),
                dead_letters_max: config.storage.dead_letters_max,
                batch: influx.batch_reports,
                flush_interval: Duration::from_millis(influx.flush_interval_ms),
            };
            let stop = stop.clone();
            Some(tokio::spawn(async move {
                if let Err(error) = sinks::influxdb::forward(sink, settings, stop.clone()).await {
                    tracing::error!(%error, "the InfluxDB forwarder stopped");
                    stop.cancel();
                }
            }))
        }
        None => None,
    };
    let housekeeping = tokio::spawn(maintenance::run(
        maintenance::Housekeeping {
            store: config.storage.path.clone(),
            retention_days: config.storage.retention_days,
            forwarding: config.influxdb.is_some(),
            dead_letters_max: config.storage.dead_letters_max,
        },
        stop.clone(),
    ));
    tracing::info!(broker = %config.mqtt.url, store = %config.storage.path.display(), sites = sites.len(), "gateway running");
    stop.cancelled().await;
    tracing::info!("stopping: storing and acknowledging what arrived");
    let written = tokio::task::spawn_blocking(move || writer.join())
        .await
        .map_err(|_| GatewayError::WriterDied)?
        .map_err(|_| GatewayError::WriterDied)?;
    let shutdown = sources::mqtt::status_payload(&GatewayStatus::Offline {
        reason: OfflineReason::Shutdown,
    });
    let _ = client.try_publish(status_topic, QoS::AtLeastOnce, true, shutdown);
    let _ = client.try_disconnect();
    if tokio::time::timeout(STOP_DEADLINE, poller).await.is_err() {
        tracing::warn!("the broker did not take the disconnect in time");
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), http).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), housekeeping).await;
    if let Some(forwarder) = forwarder {
        let _ = tokio::time::timeout(Duration::from_secs(1), forwarder).await;
    }
    written?;
    tracing::info!("stopped");
    Ok(())
}
