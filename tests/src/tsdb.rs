//! A VictoriaMetrics of the test's own: it serves the InfluxDB v2 write API, and its
//! export API reads back what was written.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::gateway::http_get;
use crate::{free_port, require, wait_until};

/// One series as exported: its labels and samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Labels, `__name__` included.
    pub labels: std::collections::BTreeMap<String, String>,
    /// `(timestamp ms, value)` pairs.
    pub samples: Vec<(i64, f64)>,
}

/// A running VictoriaMetrics; killed when dropped.
pub struct VictoriaMetrics {
    binary: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    process: Option<Child>,
    /// Its `-promscrape.config` file, once it scrapes.
    scrape: Option<PathBuf>,
}

impl VictoriaMetrics {
    /// Starts it on a free port with the flags DESIGN.md names: keep old points, drop
    /// resent duplicates, show the latest points to queries at once.
    pub fn start() -> VictoriaMetrics {
        let mut tsdb = VictoriaMetrics {
            binary: require("victoria-metrics", "victoria-metrics"),
            dir: tempfile::tempdir().expect("temporary folder"),
            port: free_port(),
            process: None,
            scrape: None,
        };
        tsdb.launch();
        tsdb
    }

    fn launch(&mut self) {
        let child = Command::new(&self.binary)
            .arg(format!(
                "-storageDataPath={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("-httpListenAddr=127.0.0.1:{}", self.port))
            .args([
                "-retentionPeriod=100y",
                "-dedup.minScrapeInterval=1ms",
                "-search.latencyOffset=0s",
            ])
            .args((self.scrape.iter()).map(|file| format!("-promscrape.config={}", file.display())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting victoria-metrics");
        self.process = Some(child);
        let port = self.port;
        assert!(
            wait_until(Duration::from_secs(20), || TcpStream::connect((
                "127.0.0.1",
                port
            ))
            .is_ok()
                && http_get(port, "/health").is_some()),
            "victoria-metrics did not come up on port {port}"
        );
    }

    /// Its base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stops it (SIGTERM, so it flushes what it acknowledged: it buffers the last second
    /// in memory, which a SIGKILL would lose); its data stays for
    /// [`VictoriaMetrics::resume`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.process.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            if !wait_until(Duration::from_secs(20), || {
                child.try_wait().ok().flatten().is_some()
            }) {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and data.
    pub fn resume(&mut self) {
        self.stop();
        self.launch();
    }

    /// Restarts it (same port and data) scraping `/metrics` on loopback `port` every
    /// second, as job `parklight`.
    pub fn scrape(&mut self, port: u16) {
        let file = self.dir.path().join("scrape.yaml");
        std::fs::write(
            &file,
            format!(
                "scrape_configs:\n  - job_name: parklight\n    scrape_interval: 1s\n    static_configs:\n      - targets: [\"127.0.0.1:{port}\"]\n"
            ),
        )
        .expect("writing the scrape config");
        self.scrape = Some(file);
        self.resume();
    }

    /// A PromQL range query from `start` to `end` (Unix ms) at `step_s`: each series'
    /// labels and `(Unix ms, value)` samples; panics naming the query when it fails.
    pub fn query_range(&self, query: &str, start: i64, end: i64, step_s: u32) -> Vec<Series> {
        let range = format!(
            "/api/v1/query_range?start={}&end={}&step={step_s}s",
            start as f64 / 1000.0,
            end as f64 / 1000.0
        );
        self.query(&range, query)
    }

    /// A PromQL instant query at `at` (Unix ms), as [`VictoriaMetrics::query_range`]
    /// answers.
    pub fn query_at(&self, query: &str, at: i64) -> Vec<Series> {
        self.query(&format!("/api/v1/query?time={}", at as f64 / 1000.0), query)
    }

    fn query(&self, endpoint: &str, query: &str) -> Vec<Series> {
        let _ = http_get(self.port, "/internal/force_flush");
        let encoded =
            percent_encoding::utf8_percent_encode(query, percent_encoding::NON_ALPHANUMERIC);
        let path = format!("{endpoint}&query={encoded}");
        let body = http_get(self.port, &path).unwrap_or_default();
        let answer: serde_json::Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{query}: not JSON ({e}): {body}"));
        assert_eq!(answer["status"], "success", "{query}: {answer}");
        (answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
        .iter()
        .map(|series| Series {
            labels: (series["metric"].as_object().into_iter().flatten())
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect(),
            samples: (series["values"].as_array().into_iter().flatten())
                .chain(series.get("value"))
                .filter_map(|pair| {
                    let at = pair[0].as_f64()?;
                    let value = pair[1].as_str()?.parse::<f64>().ok()?;
                    Some(((at * 1000.0) as i64, value))
                })
                .collect(),
        })
        .collect()
    }

    /// Every series whose name matches the regular expression.
    pub fn export(&self, name_regex: &str) -> Vec<Series> {
        let _ = http_get(self.port, "/internal/force_flush");
        let selector = format!("{{__name__=~\"{name_regex}\"}}");
        let query =
            percent_encoding::utf8_percent_encode(&selector, percent_encoding::NON_ALPHANUMERIC);
        let body =
            http_get(self.port, &format!("/api/v1/export?match[]={query}")).unwrap_or_default();
        body.lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .map(|series| {
                let labels = series["metric"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                            .collect()
                    })
                    .unwrap_or_default();
                let timestamps = series["timestamps"].as_array().cloned().unwrap_or_default();
                let values = series["values"].as_array().cloned().unwrap_or_default();
                let samples = timestamps
                    .iter()
                    .zip(&values)
                    .filter_map(|(t, v)| Some((t.as_i64()?, v.as_f64()?)))
                    .collect();
                Series { labels, samples }
            })
            .collect()
    }
}

impl Drop for VictoriaMetrics {
    fn drop(&mut self) {
        self.stop();
    }
}
