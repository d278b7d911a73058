//! A Mosquitto of the test's own, on a free loopback port.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, require, wait_until};

/// A running Mosquitto; killed when dropped.
pub struct Mosquitto {
    process: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    binary: PathBuf,
    max_queued: usize,
}

impl Mosquitto {
    /// Starts Mosquitto without persistence on a free port: the settings DESIGN.md asks
    /// of a production broker (high in-flight window, bounded message size).
    pub fn start() -> Mosquitto {
        Mosquitto::with_queue(100_000)
    }

    /// As [`Mosquitto::start`], queueing up to `max_queued` messages per offline or slow
    /// client (0: no limit).
    pub fn with_queue(max_queued: usize) -> Mosquitto {
        let binary = require("mosquitto", "mosquitto");
        let dir = tempfile::tempdir().expect("temporary folder");
        let mut broker = Mosquitto {
            process: None,
            port: free_port(),
            dir,
            binary,
            max_queued,
        };
        broker.launch();
        broker
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("mosquitto.conf")
    }

    fn launch(&mut self) {
        std::fs::write(
            self.config_path(),
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
                 max_inflight_messages 1000\nmax_queued_messages {queued}\nmessage_size_limit 65536\n\
                 log_dest file {log}\n",
                port = self.port,
                queued = self.max_queued,
                log = self.dir.path().join("mosquitto.log").display()
            ),
        )
        .expect("writing mosquitto.conf");
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting mosquitto");
        self.process = Some(child);
        let port = self.port;
        assert!(
            wait_until(Duration::from_secs(10), || TcpStream::connect((
                "127.0.0.1",
                port
            ))
            .is_ok()),
            "mosquitto did not listen on port {port}; its log: {}",
            std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
        );
    }

    /// The broker's URL.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills it with SIGKILL: everything it held in memory is lost.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    /// Its own log file.
    pub fn log_path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}
