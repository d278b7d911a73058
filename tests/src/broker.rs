//! A Mosquitto of the test's own, on a free loopback port.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, require, wait_until};

/// The `message_size_limit` of `deploy/mosquitto.conf`, the broker settings shipped.
pub fn shipped_message_size_limit() -> usize {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/mosquitto.conf");
    std::fs::read_to_string(&path)
        .expect("reading deploy/mosquitto.conf")
        .lines()
        .find_map(|line| line.strip_prefix("message_size_limit "))
        .and_then(|limit| limit.trim().parse().ok())
        .expect("message_size_limit in deploy/mosquitto.conf")
}

/// How a test's Mosquitto differs from the shipped settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Messages queued per offline or slow client (0: no limit).
    pub max_queued: usize,
    /// `message_size_limit` (0: none).
    pub message_size_limit: usize,
    /// A dynamic-security configuration (JSON) to load the plugin with.
    pub dynamic_security: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_queued: 100_000,
            message_size_limit: shipped_message_size_limit(),
            dynamic_security: None,
        }
    }
}

/// A running Mosquitto; killed when dropped.
pub struct Mosquitto {
    process: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    binary: PathBuf,
    settings: Settings,
    tls_port: Option<u16>,
}

impl Mosquitto {
    /// Starts Mosquitto without persistence on a free port: the settings DESIGN.md asks
    /// of a production broker (high in-flight window, bounded message size).
    pub fn start() -> Mosquitto {
        Mosquitto::with(Settings::default())
    }

    /// As [`Mosquitto::start`], queueing up to `max_queued` messages per offline or slow
    /// client (0: no limit).
    pub fn with_queue(max_queued: usize) -> Mosquitto {
        Mosquitto::with(Settings {
            max_queued,
            ..Settings::default()
        })
    }

    /// As [`Mosquitto::start`], with `settings`.
    pub fn with(settings: Settings) -> Mosquitto {
        let binary = require("mosquitto", "mosquitto");
        let dir = tempfile::tempdir().expect("temporary folder");
        let mut broker = Mosquitto {
            process: None,
            port: free_port(),
            dir,
            binary,
            settings,
            tls_port: None,
        };
        broker.launch();
        broker
    }

    /// As [`Mosquitto::start`], with a second listener secured as a production broker's
    /// would be: TLS with a server certificate for 127.0.0.1 from a certificate authority
    /// of the test's own ([`Mosquitto::ca_path`], made with the `openssl` command), and
    /// only `user` with `password` admitted. The first listener stays open to anyone.
    pub fn secured(user: &str, password: &str) -> Mosquitto {
        let mut broker = Mosquitto::start();
        broker.kill();
        let dir = broker.dir.path();
        crate::tls::certificates(dir);
        let passwd = Command::new(require("mosquitto_passwd", "mosquitto"))
            .args(["-b", "-c", "passwd", user, password])
            .current_dir(dir)
            .output()
            .expect("running mosquitto_passwd");
        assert!(passwd.status.success(), "mosquitto_passwd: {passwd:?}");
        // Mosquitto started as root reads these as the `mosquitto` user; test secrets.
        use std::os::unix::fs::PermissionsExt;
        for (path, mode) in [
            (dir.to_owned(), 0o755),
            (dir.join("server.key"), 0o644),
            (dir.join("passwd"), 0o644),
        ] {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .expect("permissions");
        }
        broker.tls_port = Some(free_port());
        broker.launch();
        broker
    }

    /// The secured listener's URL (only with [`Mosquitto::secured`]).
    pub fn secured_url(&self) -> String {
        format!(
            "mqtts://127.0.0.1:{}",
            self.tls_port.expect("a TLS listener")
        )
    }

    /// The certificate authority (PEM) that signed the TLS listener's certificate.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("mosquitto.conf")
    }

    fn launch(&mut self) {
        let dir = self.dir.path();
        let secured = self.tls_port.map_or(String::new(), |port| {
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\n\
                 cafile {}\ncertfile {}\nkeyfile {}\n",
                dir.join("passwd").display(),
                dir.join("ca.pem").display(),
                dir.join("server.pem").display(),
                dir.join("server.key").display()
            )
        });
        let plugin = match &self.settings.dynamic_security {
            Some(json) => {
                let path = dir.join("dynamic-security.json");
                std::fs::write(&path, json).expect("writing dynamic-security.json");
                // Mosquitto started as root runs as the `mosquitto` user and writes it.
                use std::os::unix::fs::PermissionsExt;
                for (path, mode) in [(dir.to_owned(), 0o777), (path.clone(), 0o666)] {
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                        .expect("permissions");
                }
                format!(
                    "plugin {}\nplugin_opt_config_file {}\n",
                    dynamic_security_plugin().display(),
                    path.display()
                )
            }
            None => String::new(),
        };
        std::fs::write(
            self.config_path(),
            format!(
                "per_listener_settings {per_listener}\npersistence false\n\
                 max_inflight_messages 1000\nmax_queued_messages {queued}\nmessage_size_limit {limit}\n\
                 log_dest file {log}\nlistener {port} 127.0.0.1\nallow_anonymous true\n{plugin}{secured}",
                per_listener = self.tls_port.is_some(),
                port = self.port,
                queued = self.settings.max_queued,
                limit = self.settings.message_size_limit,
                log = dir.join("mosquitto.log").display()
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

    /// The broker's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Child::id)
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

/// Mosquitto's dynamic-security plugin, as Debian's package installs it.
fn dynamic_security_plugin() -> PathBuf {
    std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("mosquitto_dynamic_security.so"))
        .chain([PathBuf::from("/usr/lib/mosquitto_dynamic_security.so")])
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!("mosquitto_dynamic_security.so is not installed: run `sudo apt-get install -y mosquitto` (or .ci/run)")
        })
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}
