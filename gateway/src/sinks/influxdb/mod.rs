//! Forwarding to InfluxDB 2: the forwarder reads the store through a persisted cursor,
//! so an outage of any length is caught up afterwards, oldest first, without touching
//! ingest. The `influxdb2` crate sits behind our own small [`LineSink`] trait.

pub mod line_protocol;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use influxdb2::api::write::TimestampPrecision;
use metrics::{counter, gauge};
use tokio_util::sync::CancellationToken;

use crate::config::{InfluxConfig, SecretError, secret};
use crate::metrics as m;
use crate::store::{DeadLetter, Store};

/// The forwarder's cursor over reports in the store.
pub const CURSOR: &str = "influxdb";
/// The forwarder's cursor over node status changes.
pub const STATUS_CURSOR: &str = "influxdb_status";

/// Why a write failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// Worth trying again: a timeout, no connection, 5xx, 429.
    #[error("retry: {0}")]
    Retry(String),
    /// The server refuses this batch (other 4xx): it will never take it.
    #[error("refused: {0}")]
    Permanent(String),
}

/// Somewhere line protocol can be written.
pub trait LineSink: Send + Sync {
    /// Writes one batch of lines (millisecond timestamps).
    fn write(&self, body: String) -> impl Future<Output = Result<(), WriteError>> + Send;
}

/// InfluxDB 2 through the `influxdb2` crate, with a timeout per request.
pub struct InfluxSink {
    client: influxdb2::Client,
    org: String,
    bucket: String,
    timeout: Duration,
}

impl InfluxSink {
    /// A sink for `config`; reads the token from its environment variable or file.
    pub fn new(config: &InfluxConfig) -> Result<InfluxSink, SecretError> {
        let token = secret(config.token_env.as_deref(), config.token_file.as_deref())?;
        Ok(InfluxSink {
            client: influxdb2::Client::new(config.url.trim_end_matches('/'), &config.org, token),
            org: config.org.clone(),
            bucket: config.bucket.clone(),
            timeout: Duration::from_secs(config.timeout_s),
        })
    }
}

impl LineSink for InfluxSink {
    async fn write(&self, body: String) -> Result<(), WriteError> {
        let request = self.client.write_line_protocol_with_precision(
            &self.org,
            &self.bucket,
            body,
            TimestampPrecision::Milliseconds,
        );
        match tokio::time::timeout(self.timeout, request).await {
            Err(_) => Err(WriteError::Retry(format!(
                "no answer within {:?}",
                self.timeout
            ))),
            Ok(Ok(())) => Ok(()),
            Ok(Err(influxdb2::RequestError::Http { status, text })) => {
                let code = status.as_u16();
                let message = format!(
                    "HTTP {code}: {}",
                    text.chars().take(200).collect::<String>()
                );
                if code >= 500 || code == 429 {
                    Err(WriteError::Retry(message))
                } else {
                    Err(WriteError::Permanent(message))
                }
            }
            Ok(Err(other)) => Err(WriteError::Retry(other.to_string())),
        }
    }
}

/// How the forwarder batches.
#[derive(Debug, Clone)]
pub struct ForwarderSettings {
    /// The store's folder (the forwarder opens its own connection).
    pub store: PathBuf,
    /// Dead letters kept in the store.
    pub dead_letters_max: usize,
    /// Reports per write.
    pub batch: usize,
    /// Longest wait before a partial batch goes.
    pub flush_interval: Duration,
}

/// Capped exponential backoff between retries.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1 << attempt.min(6))).min(Duration::from_secs(30))
}

/// Forwards stored reports and node status changes to `sink` until `stop`: batches by
/// size or time, retries what is worth retrying, dead-letters what is refused, and moves
/// the cursors only past what the sink took.
pub async fn forward(
    sink: impl LineSink,
    settings: ForwarderSettings,
    stop: CancellationToken,
) -> Result<(), crate::store::StorageError> {
    let mut store = Store::open(&settings.store, settings.dead_letters_max)?;
    let (mut cursor, mut status_cursor) = (store.cursor(CURSOR)?, store.cursor(STATUS_CURSOR)?);
    let mut attempt = 0;
    loop {
        let rows = store.reports_after(cursor, settings.batch)?;
        let statuses = store.statuses_after(status_cursor, settings.batch)?;
        gauge!(m::FORWARDER_LAG).set((store.last_report_id()? - cursor) as f64);
        if rows.len() < settings.batch && attempt == 0 {
            // Let a partial batch fill for a while (or go at once when stopping).
            tokio::select! {
                _ = tokio::time::sleep(settings.flush_interval) => {}
                _ = stop.cancelled() => return Ok(()),
            }
            if rows.is_empty() && statuses.is_empty() {
                continue;
            }
        }
        let mut body = String::with_capacity(rows.len() * 200 + statuses.len() * 100);
        rows.iter()
            .for_each(|row| line_protocol::write_report(row, &mut body));
        statuses
            .iter()
            .for_each(|row| line_protocol::write_status(row, &mut body));
        match sink.write(body.clone()).await {
            Ok(()) => {
                attempt = 0;
                counter!(m::FORWARDED).increment(rows.len() as u64);
            }
            Err(WriteError::Retry(reason)) => {
                counter!(m::FORWARDER_ERRORS, "kind" => "retry").increment(1);
                let wait = backoff(attempt);
                attempt += 1;
                tracing::warn!(%reason, retry_in = ?wait, reports = rows.len(), "InfluxDB write failed");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => continue,
                    _ = stop.cancelled() => return Ok(()),
                }
            }
            Err(WriteError::Permanent(reason)) => {
                attempt = 0;
                counter!(m::FORWARDER_ERRORS, "kind" => "permanent").increment(1);
                tracing::error!(%reason, reports = rows.len(), "InfluxDB refused a batch; kept as a dead letter");
                let ids = |first: Option<i64>, last: Option<i64>| match (first, last) {
                    (Some(first), Some(last)) => format!("{first}-{last}"),
                    _ => "none".into(),
                };
                let mut writer = store.write()?;
                writer.dead_letter(&DeadLetter {
                    received: jiff::Timestamp::now().as_millisecond(),
                    topic: format!(
                        "influxdb: reports {}, statuses {}",
                        ids(rows.first().map(|r| r.id), rows.last().map(|r| r.id)),
                        ids(
                            statuses.first().map(|r| r.id),
                            statuses.last().map(|r| r.id)
                        )
                    ),
                    payload: body.into_bytes(),
                    reason: "influxdb_refused".into(),
                    field: Some(reason),
                    report: None,
                })?;
                writer.commit()?;
            }
        }
        if let Some(last) = rows.last() {
            cursor = last.id;
            store.set_cursor(CURSOR, cursor)?;
        }
        if let Some(last) = statuses.last() {
            status_cursor = last.id;
            store.set_cursor(STATUS_CURSOR, status_cursor)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::store::tests::report;

    /// Refuses its first write (as InfluxDB does with a 400), takes the rest.
    #[derive(Default)]
    struct RefusesFirst {
        bodies: Mutex<Vec<String>>,
    }

    impl LineSink for &RefusesFirst {
        async fn write(&self, body: String) -> Result<(), WriteError> {
            let mut bodies = self.bodies.lock().unwrap();
            bodies.push(body);
            if bodies.len() == 1 {
                Err(WriteError::Permanent("HTTP 400: bad tag".into()))
            } else {
                Ok(())
            }
        }
    }

    #[tokio::test]
    async fn a_refused_batch_becomes_a_dead_letter_and_forwarding_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), 10).unwrap();
        let store_rows = |store: &mut Store, seqs: std::ops::Range<u32>| {
            let mut writer = store.write().unwrap();
            let node = writer.node("pole-017").unwrap();
            seqs.for_each(|seq| assert!(writer.report(node, &report(1, seq)).unwrap()));
            writer.commit().unwrap();
        };
        store_rows(&mut store, 0..3);
        let sink = RefusesFirst::default();
        let settings = ForwarderSettings {
            store: dir.path().to_owned(),
            dead_letters_max: 10,
            batch: 3,
            flush_interval: Duration::from_millis(10),
        };
        let stop = CancellationToken::new();
        let forwarder = forward(&sink, settings, stop.clone());
        let watcher = async {
            for round in 0..500 {
                if round == 50 {
                    store_rows(&mut store, 3..5);
                }
                if store.cursor(CURSOR).unwrap() == 5 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            stop.cancel();
        };
        let (forwarded, ()) = tokio::join!(forwarder, watcher);
        forwarded.unwrap();
        assert_eq!(store.cursor(CURSOR).unwrap(), 5, "forwarding went on");
        let bodies = sink.bodies.lock().unwrap();
        assert_eq!(bodies.len(), 2, "the refused batch is not retried");
        assert_eq!(bodies[1].lines().count(), 2);
        let letters = store.dead_letters(10).unwrap();
        assert_eq!(letters.len(), 1);
        assert_eq!(letters[0].reason, "influxdb_refused");
        assert_eq!(letters[0].topic, "influxdb: reports 1-3, statuses none");
        assert_eq!(letters[0].field.as_deref(), Some("HTTP 400: bad tag"));
        assert!(letters[0].payload.starts_with(b"park_light,node=pole-017"));
    }
}
