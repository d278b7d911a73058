//! The real gateway (`parklight run`) with a configuration of the test's own.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use parklight_gateway::store::Store;

use crate::{free_port, parklight_binary, wait_until};

/// The repository's Remiseparken site file.
pub fn remiseparken_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/sites/remiseparken.geojson")
}

/// A gateway process; killed when dropped.
pub struct Gateway {
    dir: tempfile::TempDir,
    http_port: u16,
    process: Option<Child>,
    broker_url: String,
    /// Extra configuration appended to the file (e.g. an `[influxdb]` section).
    extra: String,
    sites: Vec<PathBuf>,
    env: Vec<(String, String)>,
    /// HTTPS certificate chain and key files.
    tls: Option<(PathBuf, PathBuf)>,
    /// `[storage] retention_days`, where not the default.
    retention_days: Option<u32>,
}

impl Gateway {
    /// A gateway for `broker_url` and Remiseparken, storing in its own folder,
    /// acknowledging every second.
    pub fn new(broker_url: &str, extra: &str) -> Gateway {
        let dir = tempfile::tempdir().expect("temporary folder");
        let gateway = Gateway {
            http_port: free_port(),
            dir,
            process: None,
            broker_url: broker_url.to_owned(),
            extra: extra.to_owned(),
            sites: vec![remiseparken_file()],
            env: Vec::new(),
            tls: None,
            retention_days: None,
        };
        gateway.write_config();
        gateway
    }

    /// Sets an environment variable for the process (e.g. a token).
    pub fn env(mut self, name: &str, value: &str) -> Gateway {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Serves HTTPS with this certificate chain and key (from the next start on).
    pub fn set_tls(&mut self, cert: &Path, key: &Path) {
        self.tls = Some((cert.to_owned(), key.to_owned()));
        self.write_config();
    }

    /// Keeps raw reports this many days (from the next start on): longer than a
    /// backfilled history, so the detectors judge it all before housekeeping drops any.
    pub fn set_retention_days(&mut self, days: u32) {
        self.retention_days = Some(days);
        self.write_config();
    }

    /// Gives the store the secret `name`, so that what it keys (partners' rounding) is
    /// the same on every run, as a seed makes the simulator's history.
    pub fn set_store_secret(&self, name: &str, value: &[u8]) {
        drop(self.store()); // the store and its tables
        let file = self.store_path().join(parklight_gateway::store::DB_FILE);
        let connection = rusqlite::Connection::open(file).unwrap();
        connection
            .execute(
                "INSERT OR REPLACE INTO secrets (name, value) VALUES (?1, ?2)",
                rusqlite::params![name, value],
            )
            .unwrap();
    }

    /// Lists these site files in the configuration instead (from the next start on).
    pub fn set_sites(&mut self, sites: &[PathBuf]) {
        self.sites = sites.to_vec();
        self.write_config();
    }

    fn write_config(&self) {
        let sites: String = self
            .sites
            .iter()
            .map(|site| format!("[[sites]]\nfile = \"{}\"\n\n", site.display()))
            .collect();
        let tls = self.tls.as_ref().map_or(String::new(), |(cert, key)| {
            format!(
                "tls_cert = \"{}\"\ntls_key = \"{}\"\n",
                cert.display(),
                key.display()
            )
        });
        std::fs::write(
            self.config_path(),
            format!(
                "[mqtt]\nurl = \"{broker}\"\nclient_id = \"gateway-under-test\"\n\n\
                 [storage]\npath = \"data\"\n{retention}\n[ingest]\nack_interval_s = 1\n\n\
                 [http]\nlisten = \"127.0.0.1:{port}\"\n{tls}\n{sites}{extra}\n",
                broker = self.broker_url,
                port = self.http_port,
                extra = self.extra,
                retention = (self.retention_days)
                    .map_or(String::new(), |days| format!("retention_days = {days}\n")),
            ),
        )
        .expect("writing the configuration");
    }

    /// Waits up to `timeout` for the process to end on its own; its exit status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let child = self.process.as_mut()?;
        let mut status = None;
        wait_until(timeout, || {
            status = child.try_wait().ok().flatten();
            status.is_some()
        });
        if status.is_some() {
            self.process = None;
        }
        status
    }

    /// The port of its HTTP listener (API and `/metrics`).
    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    /// The store's folder.
    pub fn store_path(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The configuration file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("parklight.toml")
    }

    /// Starts `parklight run` and waits until `/metrics` answers (over HTTPS: until its
    /// port takes connections).
    pub fn start(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("gateway.log")).expect("log file");
        let child = Command::new(parklight_binary())
            .arg("run")
            .arg("--config")
            .arg(self.config_path())
            .envs(self.env.iter().cloned())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting parklight run");
        self.process = Some(child);
        let (port, tls) = (self.http_port, self.tls.is_some());
        assert!(
            wait_until(Duration::from_secs(20), || if tls {
                TcpStream::connect(("127.0.0.1", port)).is_ok()
            } else {
                http_get(port, "/metrics").is_some()
            }),
            "the gateway did not serve /metrics; its log:\n{}",
            self.log()
        );
    }

    /// Kills it with SIGKILL: no clean stop.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops it with SIGTERM and asserts a clean exit within the deadline.
    pub fn stop(&mut self) {
        let Some(mut child) = self.process.take() else {
            return;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let mut status = None;
        let exited = wait_until(Duration::from_secs(15), || {
            status = child.try_wait().ok().flatten();
            status.is_some()
        });
        if !exited {
            let _ = child.kill();
        }
        assert!(
            exited && status.is_some_and(|s| s.success()),
            "no clean stop ({status:?}); log:\n{}",
            self.log()
        );
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Child::id)
    }

    /// Its `/metrics` text.
    pub fn metrics(&self) -> String {
        http_get(self.http_port, "/metrics").unwrap_or_default()
    }

    /// A metric's value (the sum over its label sets matching `labels`).
    pub fn metric(&self, name: &str, labels: &str) -> f64 {
        self.metrics()
            .lines()
            .filter(|line| line.starts_with(name) && line.contains(labels))
            .filter(|line| line[name.len()..].starts_with([' ', '{']))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// What it logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap_or_default()
    }

    /// Its store (open it once the gateway is stopped).
    pub fn store(&self) -> Store {
        Store::open(&self.store_path(), 10_000).expect("opening the gateway's store")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A plain HTTP/1.0 GET on loopback; the body, when the answer is 200.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let code = head.lines().next()?.split(' ').nth(1)?;
    (code == "200").then(|| body.to_owned())
}
