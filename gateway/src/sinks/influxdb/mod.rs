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
use crate::detect::ZoneWindow;
use crate::metrics as m;
use crate::store::alerts::Outgoing;
use crate::store::{DeadLetter, ForwardRow, StatusRow, StorageError, Store};

/// The forwarder's cursor over reports in the store.
pub const CURSOR: &str = "influxdb";
/// The forwarder's cursor over node status changes.
pub const STATUS_CURSOR: &str = "influxdb_status";
/// The forwarder's cursor over alert changes (the alert outbox).
pub const ALERT_CURSOR: &str = "influxdb_alerts";
/// The forwarder's cursor over zone windows (the window log).
pub const WINDOW_CURSOR: &str = "influxdb_windows";

/// Why a write failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// Worth trying again: a timeout, no connection, 5xx, 429, and a 4xx about the
    /// database rather than the lines (401, 403, 404: a token or bucket to put right).
    #[error("retry: {0}")]
    Retry(String),
    /// The server refuses lines of this batch for good (400, 413, 422).
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
                // 400 (and 413, 422) is about the lines sent: only those are refused.
                // Anything else (401, 403, 404: a token or bucket that is wrong now) is
                // about the database, and every line must wait until it is put right.
                if matches!(code, 400 | 413 | 422) {
                    Err(WriteError::Permanent(message))
                } else {
                    Err(WriteError::Retry(message))
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
    /// Time between batches when there is less than a batch to send.
    pub flush_interval: Duration,
}

use super::backoff;

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

impl Line {
    fn report(row: &ForwardRow) -> Line {
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
    }

    fn alert(change: &Outgoing) -> Line {
        let mut text = String::with_capacity(120);
        line_protocol::write_alert(&change.alert, &mut text);
        Line {
            what: format!("alert {} rev {}", change.alert.id, change.alert.rev),
            report: false,
            text,
        }
    }

    fn window(w: &ZoneWindow) -> Line {
        let mut text = String::with_capacity(200);
        line_protocol::write_window(w, &mut text);
        Line {
            what: format!("zone window {}/{} ending {}", w.site, w.zone, w.end),
            report: false,
            text,
        }
    }

    fn status(row: &StatusRow) -> Line {
        let mut text = String::with_capacity(100);
        line_protocol::write_status(row, &mut text);
        Line {
            what: format!("status {} ({})", row.id, row.node),
            report: false,
            text,
        }
    }
}

/// What a batch came to: the lines refused for good, and the reports written.
#[derive(Debug, Default)]
struct Written {
    refused: Vec<(Line, String)>,
    reports: u64,
}

/// Writes `lines`. Where the sink refuses a batch for good (a 400), the batch is split in
/// halves and each written again, until the refused lines stand alone: one bad line never
/// costs the good ones. Fails with the first error worth retrying (what was written
/// already is written again then, which the database takes as the same points).
async fn write_isolating(sink: &impl LineSink, lines: Vec<Line>) -> Result<Written, WriteError> {
    let mut written = Written::default();
    let mut batches = vec![lines];
    while let Some(mut batch) = batches.pop() {
        let body: String = batch.iter().map(|line| line.text.as_str()).collect();
        match sink.write(body).await {
            Ok(()) => written.reports += batch.iter().filter(|line| line.report).count() as u64,
            Err(WriteError::Permanent(reason)) if batch.len() == 1 => {
                written
                    .refused
                    .extend(batch.pop().map(|line| (line, reason)));
            }
            Err(WriteError::Permanent(_)) => {
                let second = batch.split_off(batch.len() / 2);
                batches.push(second);
                batches.push(batch);
            }
            Err(retry) => return Err(retry),
        }
    }
    Ok(written)
}

/// Why a forwarding round did not finish.
enum Stalled {
    /// The database: try again after a while.
    Database(WriteError),
    /// The store.
    Store(StorageError),
}

impl From<StorageError> for Stalled {
    fn from(error: StorageError) -> Stalled {
        Stalled::Store(error)
    }
}

/// Where the forwarder stands.
struct Cursors {
    reports: i64,
    statuses: i64,
    alerts: i64,
    windows: i64,
}

/// Forwards stored reports and node status changes to `sink` until `stop`: batches by
/// size or time, retries what is worth retrying (the database down or refusing access,
/// the store busy or full), dead-letters the lines the database refuses for good (and
/// only those), passes reports held for their boot's clock and sends them once let go,
/// and moves the cursors only past what is done. Fails only when the store fails in a way
/// waiting will not mend.
pub async fn forward(
    sink: impl LineSink,
    settings: ForwarderSettings,
    stop: CancellationToken,
) -> Result<(), StorageError> {
    let mut store = Store::open(&settings.store, settings.dead_letters_max)?;
    let mut at = Cursors {
        reports: store.cursor(CURSOR)?,
        statuses: store.cursor(STATUS_CURSOR)?,
        alerts: store.cursor(ALERT_CURSOR)?,
        windows: store.cursor(WINDOW_CURSOR)?,
    };
    let mut attempt = 0;
    while !stop.is_cancelled() {
        let wait = match round(&sink, &mut store, &settings, &mut at).await {
            Ok(full) => {
                attempt = 0;
                if full {
                    continue;
                }
                settings.flush_interval
            }
            Err(Stalled::Database(reason)) => {
                counter!(m::FORWARDER_ERRORS, "kind" => "retry").increment(1);
                tracing::warn!(%reason, attempt, "InfluxDB write failed; retrying");
                attempt += 1;
                backoff(attempt - 1)
            }
            Err(Stalled::Store(error)) if error.is_transient() => {
                tracing::warn!(%error, "the forwarder cannot use the store; retrying");
                attempt += 1;
                backoff(attempt - 1)
            }
            Err(Stalled::Store(error)) => return Err(error),
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => {}
        }
    }
    Ok(())
}

/// One batch: what is new after the cursors, and held reports let go since. Returns
/// whether the batch was full (more waits).
async fn round(
    sink: &impl LineSink,
    store: &mut Store,
    settings: &ForwarderSettings,
    at: &mut Cursors,
) -> Result<bool, Stalled> {
    let rows = store.reports_after(at.reports, settings.batch)?;
    let later = store.released_later(settings.batch)?;
    let statuses = store.statuses_after(at.statuses, settings.batch)?;
    let alerts = store.outbox_after(at.alerts, settings.batch, false)?;
    let windows = store.windows_after(at.windows, settings.batch)?;
    gauge!(m::FORWARDER_LAG).set((store.last_report_id()? - at.reports) as f64);
    if rows.is_empty()
        && later.is_empty()
        && statuses.is_empty()
        && alerts.is_empty()
        && windows.is_empty()
    {
        return Ok(false);
    }
    let lines = rows
        .iter()
        .chain(&later)
        .filter(|row| !row.held)
        .map(Line::report)
        .chain(statuses.iter().map(Line::status))
        .chain(alerts.iter().map(Line::alert))
        .chain(windows.iter().map(|(_, w)| Line::window(w)))
        .collect();
    let written = write_isolating(sink, lines)
        .await
        .map_err(Stalled::Database)?;
    let mut writer = store.write()?;
    if let Some((_, reason)) = written.refused.first() {
        counter!(m::FORWARDER_ERRORS, "kind" => "permanent")
            .increment(written.refused.len() as u64);
        tracing::error!(%reason, lines = written.refused.len(), "InfluxDB refused lines; kept as dead letters, the rest is written");
    }
    for (line, reason) in written.refused {
        writer.dead_letter(&DeadLetter {
            received: jiff::Timestamp::now().as_millisecond(),
            topic: format!("influxdb: {}", line.what),
            payload: line.text.into_bytes(),
            reason: "influxdb_refused".into(),
            field: Some(reason),
            report: None,
        })?;
    }
    for row in &rows {
        if row.held {
            writer.forward_later(row.id)?;
        }
    }
    for row in &later {
        writer.forwarded_later(row.id)?;
    }
    if let Some(last) = rows.last() {
        writer.set_cursor(CURSOR, last.id)?;
    }
    if let Some(last) = statuses.last() {
        writer.set_cursor(STATUS_CURSOR, last.id)?;
    }
    if let Some(last) = alerts.last() {
        writer.set_cursor(ALERT_CURSOR, last.seq)?;
    }
    if let Some((last, _)) = windows.last() {
        writer.set_cursor(WINDOW_CURSOR, *last)?;
    }
    writer.commit()?;
    counter!(m::FORWARDED).increment(written.reports);
    if let Some(last) = rows.last() {
        at.reports = last.id;
    }
    if let Some(last) = statuses.last() {
        at.statuses = last.id;
    }
    if let Some(last) = alerts.last() {
        at.alerts = last.seq;
    }
    if let Some((last, _)) = windows.last() {
        at.windows = *last;
    }
    let lengths = [
        rows.len(),
        later.len(),
        statuses.len(),
        alerts.len(),
        windows.len(),
    ];
    Ok(lengths.contains(&settings.batch))
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
            assert!(
                writer
                    .report(node, &report(1, seq), Default::default())
                    .unwrap()
            );
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

    /// Takes every batch, keeping its lines.
    #[derive(Default)]
    struct Collects {
        lines: Mutex<Vec<String>>,
    }

    impl LineSink for &Collects {
        async fn write(&self, body: String) -> Result<(), WriteError> {
            self.lines
                .lock()
                .unwrap()
                .extend(body.lines().map(str::to_owned));
            Ok(())
        }
    }

    /// Runs the forwarder until its cursor reaches `last` and nothing waits to be sent
    /// later, or two seconds pass.
    async fn forward_until(dir: &std::path::Path, sink: &Collects, last: i64) {
        let settings = ForwarderSettings {
            store: dir.to_owned(),
            dead_letters_max: 10,
            batch: 100,
            flush_interval: Duration::from_millis(10),
        };
        let stop = CancellationToken::new();
        let store = Store::open(dir, 10).unwrap();
        let watcher = async {
            for _ in 0..200 {
                if store.cursor(CURSOR).unwrap() >= last
                    && store.released_later(10).unwrap().is_empty()
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            stop.cancel();
        };
        let (forwarded, ()) = tokio::join!(forward(sink, settings, stop.clone()), watcher);
        forwarded.unwrap();
    }

    #[tokio::test]
    async fn a_held_report_is_sent_once_placed_and_holds_up_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), 10).unwrap();
        let mut writer = store.write().unwrap();
        let node = writer.node("pole-017", "remiseparken").unwrap();
        let held = crate::store::Placement {
            up_ms: Some(60_000),
            held: true,
        };
        let mut stamped = report(7, 0);
        stamped.clock_ok = false;
        writer.report(node, &stamped, held).unwrap();
        for seq in 1..4 {
            writer
                .report(node, &report(8, seq), Default::default())
                .unwrap();
        }
        writer.commit().unwrap();
        let sink = Collects::default();
        forward_until(dir.path(), &sink, 4).await;
        let sent = sink.lines.lock().unwrap().clone();
        assert_eq!(sent.len(), 3, "the rest goes, the held one waits: {sent:?}");
        assert_eq!(store.cursor(CURSOR).unwrap(), 4);
        // Its boot's clock comes: placed at its real time, and sent then.
        let mut writer = store.write().unwrap();
        let fix = crate::clock::ClockFix {
            seq: 5,
            ts: 1_800_000_000_000,
            up_ms: Some(360_000),
        };
        assert_eq!(writer.restamp(node, 7, fix).unwrap(), 1);
        writer.commit().unwrap();
        forward_until(dir.path(), &sink, 4).await;
        let sent = sink.lines.lock().unwrap().clone();
        assert_eq!(sent.len(), 4, "{sent:?}");
        assert!(
            sent[3].ends_with(" 1799999700000"),
            "at its real time: {}",
            sent[3]
        );
        // Nothing is sent twice, and nothing waits any more.
        forward_until(dir.path(), &sink, 4).await;
        assert_eq!(sink.lines.lock().unwrap().len(), 4);
        assert!(store.released_later(10).unwrap().is_empty());
    }
}
