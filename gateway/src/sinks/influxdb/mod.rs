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

/// One line of a batch and what it came from.
#[derive(Debug, Clone)]
struct Line {
    /// What the line holds, for a dead letter: `report 12 (pole-017 boot 7 seq 42)`.
    what: String,
    /// Whether it is a report (counted as forwarded once written).
    report: bool,
    /// The line protocol, with its newline.
    text: String,
}

/// Writes `lines`. Where the sink refuses a batch for good (a 4xx), the batch is split in
/// halves and each written again, until the refused lines stand alone: one bad line never
/// costs the good ones. Returns the refused lines with the reason; fails with the first
/// error worth retrying (what was written already is written again then, which the
/// database takes as the same points).
async fn write_isolating(
    sink: &impl LineSink,
    lines: Vec<Line>,
) -> Result<Vec<(Line, String)>, WriteError> {
    let mut refused = Vec::new();
    let mut batches = vec![lines];
    while let Some(mut batch) = batches.pop() {
        let body: String = batch.iter().map(|line| line.text.as_str()).collect();
        match sink.write(body).await {
            Ok(()) => {
                let reports = batch.iter().filter(|line| line.report).count();
                counter!(m::FORWARDED).increment(reports as u64);
            }
            Err(WriteError::Permanent(reason)) if batch.len() == 1 => {
                refused.extend(batch.pop().map(|line| (line, reason)));
            }
            Err(WriteError::Permanent(_)) => {
                let second = batch.split_off(batch.len() / 2);
                batches.push(second);
                batches.push(batch);
            }
            Err(retry) => return Err(retry),
        }
    }
    Ok(refused)
}

/// Forwards stored reports and node status changes to `sink` until `stop`: batches by
/// size or time, retries what is worth retrying, dead-letters the lines the database
/// refuses (and only those), and moves the cursors only past what is done.
pub async fn forward(
    sink: impl LineSink,
    settings: ForwarderSettings,
    stop: CancellationToken,
) -> Result<(), crate::store::StorageError> {
    let mut store = Store::open(&settings.store, settings.dead_letters_max)?;
    let (mut cursor, mut status_cursor) = (store.cursor(CURSOR)?, store.cursor(STATUS_CURSOR)?);
    let mut attempt = 0;
    loop {
        let now = jiff::Timestamp::now().as_millisecond();
        let rows = store.reports_after(cursor, settings.batch, now)?;
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
        let reports = rows.iter().map(|row| {
            let mut text = String::with_capacity(200);
            line_protocol::write_report(row, &mut text);
            Line {
                what: format!(
                    "report {} ({} boot {} seq {})",
                    row.id, row.node, row.report.boot, row.report.seq
                ),
                report: true,
                text,
            }
        });
        let changes = statuses.iter().map(|row| {
            let mut text = String::with_capacity(100);
            line_protocol::write_status(row, &mut text);
            Line {
                what: format!("status {} ({})", row.id, row.node),
                report: false,
                text,
            }
        });
        match write_isolating(&sink, reports.chain(changes).collect()).await {
            Ok(refused) => {
                attempt = 0;
                if let Some((_, reason)) = refused.first() {
                    counter!(m::FORWARDER_ERRORS, "kind" => "permanent")
                        .increment(refused.len() as u64);
                    tracing::error!(%reason, lines = refused.len(), "InfluxDB refused lines; kept as dead letters, the rest is written");
                    let mut writer = store.write()?;
                    for (line, reason) in refused {
                        writer.dead_letter(&DeadLetter {
                            received: jiff::Timestamp::now().as_millisecond(),
                            topic: format!("influxdb: {}", line.what),
                            payload: line.text.into_bytes(),
                            reason: "influxdb_refused".into(),
                            field: Some(reason),
                            report: None,
                        })?;
                    }
                    writer.commit()?;
                }
            }
            Err(reason) => {
                counter!(m::FORWARDER_ERRORS, "kind" => "retry").increment(1);
                let wait = backoff(attempt);
                attempt += 1;
                tracing::warn!(%reason, retry_in = ?wait, reports = rows.len(), "InfluxDB write failed");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => continue,
                    _ = stop.cancelled() => return Ok(()),
                }
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
    use std::sync::{Arc, Mutex};

    use axum::http::StatusCode;

    use super::*;
    use crate::store::tests::report;

    /// What an InfluxDB stand-in took: the lines written, and how many requests came.
    #[derive(Default)]
    struct Taken {
        lines: Vec<String>,
        requests: usize,
    }

    /// An InfluxDB write API on a free loopback port that answers 400, as InfluxDB does
    /// to a line it cannot take, to any batch holding a line with `poison` in it, and
    /// takes every other batch (VictoriaMetrics takes everything, so it cannot do this).
    async fn refusing_stub(poison: &'static str) -> (String, Arc<Mutex<Taken>>) {
        let taken = Arc::new(Mutex::new(Taken::default()));
        let app = axum::Router::new().route(
            "/api/v2/write",
            axum::routing::post({
                let taken = taken.clone();
                move |body: String| async move {
                    let mut taken = taken.lock().unwrap();
                    taken.requests += 1;
                    if body.contains(poison) {
                        (
                            StatusCode::BAD_REQUEST,
                            r#"{"code":"invalid","message":"unable to parse the line"}"#,
                        )
                    } else {
                        taken.lines.extend(body.lines().map(str::to_owned));
                        (StatusCode::NO_CONTENT, "")
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, taken)
    }

    #[tokio::test]
    async fn a_line_the_database_refuses_costs_only_itself() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), 10).unwrap();
        // 5000 reports of pole-017, two of them lines the database refuses.
        let mut writer = store.write().unwrap();
        let good = writer.node("pole-017", "remiseparken").unwrap();
        let poisoned = writer.node("pole-poison", "remiseparken").unwrap();
        for seq in 0..5000 {
            let node = if seq == 1234 || seq == 4321 {
                poisoned
            } else {
                good
            };
            assert!(writer.report(node, &report(1, seq), None).unwrap());
        }
        writer.commit().unwrap();
        let (url, taken) = refusing_stub("pole-poison").await;
        let token = dir.path().join("token");
        std::fs::write(&token, "test-token").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let sink = InfluxSink::new(&crate::config::InfluxConfig {
            url,
            org: "parks".into(),
            bucket: "parklight".into(),
            token_env: None,
            token_file: Some(token),
            batch_reports: 5000,
            flush_interval_ms: 10,
            timeout_s: 5,
        })
        .unwrap();
        let settings = ForwarderSettings {
            store: dir.path().to_owned(),
            dead_letters_max: 10,
            batch: 5000,
            flush_interval: Duration::from_millis(10),
        };
        let stop = CancellationToken::new();
        let forwarder = forward(sink, settings, stop.clone());
        let watcher = async {
            for _ in 0..500 {
                if store.cursor(CURSOR).unwrap() == 5000 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            stop.cancel();
        };
        let (forwarded, ()) = tokio::join!(forwarder, watcher);
        forwarded.unwrap();
        assert_eq!(store.cursor(CURSOR).unwrap(), 5000, "forwarding went on");
        let taken = taken.lock().unwrap();
        assert_eq!(taken.lines.len(), 4998, "every good line written once");
        assert!(
            taken
                .lines
                .iter()
                .all(|l| l.starts_with("park_light,node=pole-017"))
        );
        // Halving: a few requests per refused line, not one per line.
        assert!(taken.requests <= 60, "{} requests", taken.requests);
        let mut letters = store.dead_letters(10).unwrap();
        letters.sort_by(|a, b| a.topic.cmp(&b.topic));
        assert_eq!(
            letters.iter().map(|l| l.topic.as_str()).collect::<Vec<_>>(),
            [
                "influxdb: report 1235 (pole-poison boot 1 seq 1234)",
                "influxdb: report 4322 (pole-poison boot 1 seq 4321)"
            ]
        );
        assert!(letters.iter().all(|l| {
            l.reason == "influxdb_refused"
                && l.field
                    .as_deref()
                    .is_some_and(|f| f.starts_with("HTTP 400"))
                && l.payload.starts_with(b"park_light,node=pole-poison")
        }));
    }
}
