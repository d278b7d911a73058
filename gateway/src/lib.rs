//! The parklight gateway: every report from the broker stored once, durably,
//! acknowledged, and (later in the pipeline) forwarded and watched.
//!
//! - [`config`]: the typed configuration and `parklight check`.
//! - [`sources::mqtt`]: the broker connection; one task only polls it.
//! - [`ingest`]: decode, enrich, dedupe, acknowledgement watermarks, presence;
//!   [`clock`]: where reports without a valid clock go in time.
//! - [`store`]: the embedded SQLite store; [`maintenance`]: compaction and retention.
//! - [`writer`]: group commits, MQTT acks after commit, stored-acknowledgements to nodes.
//! - [`desired`]: each node's config from its site file, published when it changes.
//! - [`detect`]: the detectors, pure state machines from facts to conditions;
//!   [`detection`]: the task that feeds them the journal and decides liveness.
//! - [`http`]: the listener; [`api`]: the HTTP API and its access control; [`web`]: the
//!   dashboard;
//!   [`metrics`]: every metric name.
//! - [`demo`]: `parklight demo`, everything embedded.
//! - [`supervise`]: a part that fails stops the gateway, which exits non-zero.
//! - [`logging`], [`signals`]: process plumbing.
//!
//! [`run`] starts it all and stops it cleanly: `main` and the tests call the same `run`.

pub mod alert;
pub mod alerting;
pub mod api;
pub mod backfill;
pub mod clock;
pub mod config;
pub mod crew;
pub mod demo;
pub mod desired;
pub mod detect;
pub mod detection;
pub mod http;
pub mod ingest;
pub mod logging;
pub mod maintenance;
pub mod metrics;
pub mod signals;
pub mod sinks;
pub mod sources;
pub mod store;
pub mod supervise;
pub mod web;
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
    /// A webhook cannot be set up.
    #[error("[[webhooks]] {0}")]
    Webhook(String),
    /// The InfluxDB token cannot be read.
    #[error("[influxdb] token: {0}")]
    Token(#[from] config::SecretError),
    /// The writer thread cannot be started.
    #[error("the writer thread cannot be started: {0}")]
    Thread(std::io::Error),
    /// A part of the gateway failed while it ran.
    #[error("stopped because {0}")]
    Failed(String),
}

/// Runs the gateway until `stop` is cancelled, then stops taking messages, stores and
/// acknowledges what it has, says goodbye on its status topic and disconnects. When a
/// part of it fails instead, it stops the same way but says nothing (the broker
/// publishes its will) and returns [`GatewayError::Failed`].
pub async fn run(loaded: Loaded, stop: CancellationToken) -> Result<(), GatewayError> {
    let Loaded { config, sites, .. } = loaded;
    http::metrics_handle();
    let supervisor = supervise::Supervisor::new(stop.clone());
    let mut store = store::Store::open(&config.storage.path, config.storage.dead_letters_max)?;
    store.register_sites(&sites)?;
    let ingest = ingest::Ingest::new(
        &config.mqtt.topic_prefix,
        &sites,
        config.ingest.clock_skew_s as i64 * 1000,
        &store,
    )?;
    let subscriptions =
        sources::mqtt::Subscriptions::plan(&config.mqtt, &sites, &mut store, &config.storage.path)?;
    let options = sources::mqtt::options(&config.mqtt)?;
    let capacity = options.request_channel_capacity();
    let (client, eventloop) = AsyncClient::new(options, capacity);
    let status_topic = sources::mqtt::status_topic(&config.mqtt);
    let birth = GatewayStatus::Online {
        started: jiff::Timestamp::now().as_millisecond() as u64,
        sites: sites.iter().map(|s| s.id.clone()).collect(),
    };
    let broker_link = Arc::new(detection::BrokerLink::default());
    let (control_tx, control_rx) = tokio::sync::mpsc::channel(16);
    let api = api::ApiState::new(&config, sites.clone(), broker_link.clone(), control_tx)?;
    let http = http::serve(&config.http, Arc::new(api), stop.clone())
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
    let poller = tokio::spawn({
        let guard = supervisor.guard("the MQTT source");
        let polled = sources::mqtt::poll(
            eventloop,
            client.clone(),
            subscriptions,
            (status_topic.clone(), sources::mqtt::status_payload(&birth)),
            sources::mqtt::Intake {
                arrived: arrived_tx,
                acks: acks_rx,
                backlog: backlog.clone(),
                link: broker_link.clone(),
            },
            stop.clone(),
        );
        async move {
            let _guard = guard;
            polled.await;
        }
    });
    let settings = writer::WriterSettings {
        max_messages: config.storage.commit_max_reports,
        max_wait: Duration::from_millis(config.storage.commit_max_wait_ms),
        ack_interval: Duration::from_secs(config.ingest.ack_interval_s),
        prefix: config.mqtt.topic_prefix.clone(),
    };
    let (committed, wake) = std::sync::mpsc::sync_channel(1);
    let writer = {
        let (client, stop, supervisor) = (client.clone(), stop.clone(), supervisor.clone());
        std::thread::Builder::new()
            .name("parklight-writer".into())
            .spawn(move || {
                let _guard = supervisor.guard("the writer");
                let outlets = writer::Outlets {
                    client,
                    acks: acks_tx,
                    backlog,
                    committed,
                };
                if let Err(error) =
                    writer::run(store, ingest, arrived_rx, outlets, settings, stop.clone())
                {
                    supervisor.fail("the writer", error);
                }
                // Whatever ended the writer ends the gateway.
                stop.cancel();
            })
            .map_err(GatewayError::Thread)?
    };
    let (conditions_recorded, conditions_wake) = std::sync::mpsc::sync_channel(1);
    let detection = {
        let settings = detection::DetectionSettings {
            detectors: config.detection.settings(),
            ..detection::DetectionSettings::new(
                config.storage.path.clone(),
                config.storage.dead_letters_max,
            )
        };
        let (stop, supervisor, sites) = (stop.clone(), supervisor.clone(), sites.clone());
        let broker_link = broker_link.clone();
        // A thread of its own, like the writer: SQLite blocks.
        std::thread::Builder::new()
            .name("parklight-detection".into())
            .spawn(move || {
                let _guard = supervisor.guard("detection");
                if let Err(error) = detection::run(
                    settings,
                    &sites,
                    (wake, conditions_recorded),
                    &broker_link,
                    stop.clone(),
                ) {
                    supervisor.fail("detection", error);
                }
            })
            .map_err(GatewayError::Thread)?
    };
    let (alerting, delivery) = alerts(&config, &sites, conditions_wake, &supervisor, &stop)?;
    let forwarder = match &config.influxdb {
        Some(influx) => {
            let sink = sinks::influxdb::InfluxSink::new(influx)?;
            let settings = sinks::influxdb::ForwarderSettings {
                store: config.storage.path.clone(),
                dead_letters_max: config.storage.dead_letters_max,
                batch: influx.batch_reports,
                flush_interval: Duration::from_millis(influx.flush_interval_ms),
            };
            let (stop, supervisor) = (stop.clone(), supervisor.clone());
            // A thread of its own: its store calls block (on SQLite, and on the writer's
            // turn), which the runtime's two workers must never do.
            let forwarding = std::thread::Builder::new()
                .name("parklight-influxdb".into())
                .spawn(move || {
                    let _guard = supervisor.guard("the InfluxDB forwarder");
                    let forwarded = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| e.to_string())
                        .and_then(|runtime| {
                            runtime
                                .block_on(sinks::influxdb::forward(sink, settings, stop))
                                .map_err(|e| e.to_string())
                        });
                    if let Err(error) = forwarded {
                        supervisor.fail("the InfluxDB forwarder", error);
                    }
                })
                .map_err(GatewayError::Thread)?;
            Some(forwarding)
        }
        None => None,
    };
    let publisher = tokio::spawn({
        let guard = supervisor.guard("the config publisher");
        let settings = desired::DesiredSettings {
            store: config.storage.path.clone(),
            dead_letters_max: config.storage.dead_letters_max,
            prefix: config.mqtt.topic_prefix.clone(),
            files: config.sites.iter().map(|s| s.file.clone()).collect(),
            check_every: Duration::from_secs(5),
        };
        let published = desired::run(
            settings,
            sites.clone(),
            client.clone(),
            control_rx,
            stop.clone(),
        );
        let supervisor = supervisor.clone();
        async move {
            let _guard = guard;
            if let Err(error) = published.await {
                supervisor.fail("the config publisher", error);
            }
        }
    });
    let housekeeping = tokio::spawn({
        let guard = supervisor.guard("housekeeping");
        let round = maintenance::run(
            maintenance::Housekeeping {
                store: config.storage.path.clone(),
                retention_days: config.storage.retention_days,
                forwarding: config.influxdb.is_some(),
                detecting: true,
                dead_letters_max: config.storage.dead_letters_max,
                every: Duration::from_secs(config.storage.housekeeping_interval_s),
            },
            supervisor.clone(),
            stop.clone(),
        );
        async move {
            let _guard = guard;
            round.await;
        }
    });
    tracing::info!(broker = %config.mqtt.url, store = %config.storage.path.display(), sites = sites.len(), "gateway running");
    stop.cancelled().await;
    let failure = supervisor.failure();
    if failure.is_none() {
        tracing::info!("stopping: storing and acknowledging what arrived");
    }
    if tokio::task::spawn_blocking(move || writer.join())
        .await
        .map_or(true, |joined| joined.is_err())
    {
        supervisor.fail("the writer", "panicked");
    }
    if supervisor.failure().is_none() {
        let shutdown = sources::mqtt::status_payload(&GatewayStatus::Offline {
            reason: OfflineReason::Shutdown,
        });
        let _ = client.try_publish(status_topic, QoS::AtLeastOnce, true, shutdown);
        let _ = client.try_disconnect();
        if tokio::time::timeout(STOP_DEADLINE, poller).await.is_err() {
            tracing::warn!("the broker did not take the disconnect in time");
        }
    } else {
        // No goodbye: the connection just ends, and the broker publishes the will.
        poller.abort();
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), http).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), housekeeping).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), publisher).await;
    let joined = tokio::task::spawn_blocking(move || detection.join());
    let _ = tokio::time::timeout(Duration::from_secs(5), joined).await;
    for thread in [alerting, delivery] {
        let joined = tokio::task::spawn_blocking(move || thread.join());
        let _ = tokio::time::timeout(Duration::from_secs(5), joined).await;
    }
    if let Some(forwarder) = forwarder {
        let joined = tokio::task::spawn_blocking(move || forwarder.join());
        let _ = tokio::time::timeout(Duration::from_secs(5), joined).await;
    }
    match supervisor.failure() {
        Some(reason) => Err(GatewayError::Failed(reason)),
        None => {
            tracing::info!("stopped");
            Ok(())
        }
    }
}

/// Starts the alert manager and the receivers, each on a thread of its own (their store
/// calls block).
fn alerts(
    config: &config::Config,
    sites: &[parklight_site::Site],
    conditions: std::sync::mpsc::Receiver<()>,
    supervisor: &supervise::Supervisor,
    stop: &CancellationToken,
) -> Result<(std::thread::JoinHandle<()>, std::thread::JoinHandle<()>), GatewayError> {
    let receivers = sinks::alerts::receivers(config)?;
    let names: Vec<String> = receivers.iter().map(|r| r.name.clone()).collect();
    let (path, dead_letters_max) = (config.storage.path.clone(), config.storage.dead_letters_max);
    sinks::alerts::start_cursors(&mut store::Store::open(&path, dead_letters_max)?, &names)?;
    let (changed, watched) = tokio::sync::watch::channel(0);
    let settings = alerting::AlertingSettings {
        store: path.clone(),
        dead_letters_max,
        manager: config.alerts.settings(),
    };
    let manager = {
        let (stop, supervisor, sites) = (stop.clone(), supervisor.clone(), sites.to_vec());
        std::thread::Builder::new()
            .name("parklight-alerts".into())
            .spawn(move || {
                let _guard = supervisor.guard("the alert manager");
                if let Err(error) = alerting::run(settings, &sites, conditions, &changed, stop) {
                    supervisor.fail("the alert manager", error);
                }
            })
            .map_err(GatewayError::Thread)?
    };
    let delivery = {
        let (stop, supervisor) = (stop.clone(), supervisor.clone());
        std::thread::Builder::new()
            .name("parklight-alert-delivery".into())
            .spawn(move || {
                let _guard = supervisor.guard("alert delivery");
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => return supervisor.fail("alert delivery", error),
                };
                runtime.block_on(async {
                    let mut tasks = tokio::task::JoinSet::new();
                    for receiver in receivers {
                        let (path, watched, stop) = (path.clone(), watched.clone(), stop.clone());
                        tasks.spawn(sinks::alerts::deliver(
                            receiver,
                            path,
                            dead_letters_max,
                            watched,
                            stop,
                        ));
                    }
                    while let Some(done) = tasks.join_next().await {
                        match done {
                            Ok(Ok(())) => {}
                            Ok(Err(error)) => supervisor.fail("alert delivery", error),
                            Err(error) => supervisor.fail("alert delivery", error),
                        }
                    }
                });
            })
            .map_err(GatewayError::Thread)?
    };
    Ok((manager, delivery))
}
