//! The real `parklight` binary as a child process.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::{parklight_binary, wait_until};

/// A running `parklight`; killed when dropped.
pub struct Parklight {
    child: Child,
    stdout: Option<JoinHandle<String>>,
    stderr: Option<JoinHandle<String>>,
    printed: Arc<Mutex<String>>,
}

/// What a finished run printed.
#[derive(Debug)]
pub struct Finished {
    /// Exit status.
    pub status: ExitStatus,
    /// Standard output.
    pub stdout: String,
    /// Standard error (logs).
    pub stderr: String,
}

/// Reads `pipe` to its end, keeping what came so far in `so_far` as it comes.
fn collect(mut pipe: impl Read + Send + 'static, so_far: Arc<Mutex<String>>) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        let mut bytes = Vec::new();
        while let Ok(n) = pipe.read(&mut buffer) {
            if n == 0 {
                break;
            }
            bytes.extend_from_slice(&buffer[..n]);
            *so_far.lock().unwrap_or_else(|p| p.into_inner()) =
                String::from_utf8_lossy(&bytes).into_owned();
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

impl Parklight {
    /// Starts `parklight` with `args`.
    pub fn spawn(args: &[&str]) -> Parklight {
        Parklight::spawn_with(args, &[])
    }

    /// Starts `parklight` with `args` and environment variables `env`.
    pub fn spawn_with(args: &[&str], env: &[(&str, &str)]) -> Parklight {
        let mut child = Command::new(parklight_binary())
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info,parklight_sim=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting parklight");
        let printed = Arc::new(Mutex::new(String::new()));
        let stdout = (child.stdout.take()).map(|pipe| collect(pipe, printed.clone()));
        let stderr = (child.stderr.take()).map(|pipe| collect(pipe, Arc::default()));
        Parklight {
            child,
            stdout,
            stderr,
            printed,
        }
    }

    /// `parklight sim` against `broker` at 60x with fresh state in `state`, plus `extra`
    /// arguments.
    pub fn sim(broker: &str, state: &std::path::Path, extra: &[&str]) -> Parklight {
        let state = state.to_string_lossy();
        let mut args = vec![
            "sim", "--broker", broker, "--speed", "60", "--state", &state, "--fresh",
        ];
        args.extend_from_slice(extra);
        Parklight::spawn(&args)
    }

    /// [`Parklight::sim`] streaming to a gateway for `duration_s` wall-clock seconds:
    /// reports not acknowledged within 3 s are resent, and the nodes wait up to 60 s at
    /// the end until every report is acknowledged.
    pub fn sim_streaming(
        broker: &str,
        state: &std::path::Path,
        duration_s: &str,
        extra: &[&str],
    ) -> Parklight {
        let mut args = vec![
            "--ack-timeout-s",
            "3",
            "--duration-s",
            duration_s,
            "--drain-s",
            "60",
        ];
        args.extend_from_slice(extra);
        Parklight::sim(broker, state, &args)
    }

    /// Sends SIGINT, as Ctrl-C would.
    pub fn interrupt(&self) {
        let _ = Command::new("kill")
            .arg("-INT")
            .arg(self.child.id().to_string())
            .status();
    }

    /// `parklight demo` with its broker on `broker_port`, its HTTP listener on
    /// `http_port` and its data in `dir`.
    pub fn demo(broker_port: u16, http_port: u16, dir: &std::path::Path) -> Parklight {
        Parklight::spawn(&[
            "demo",
            "--port",
            &broker_port.to_string(),
            "--http",
            &format!("127.0.0.1:{http_port}"),
            "--dir",
            &dir.to_string_lossy(),
        ])
    }

    /// What it printed on standard output so far.
    pub fn printed(&self) -> String {
        self.printed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
    }

    /// Waits up to `timeout` for it to exit; fails the test if it does not.
    pub fn wait(mut self, timeout: Duration) -> Finished {
        let mut status = None;
        let exited = wait_until(timeout, || {
            status = self.child.try_wait().ok().flatten();
            status.is_some()
        });
        if !exited {
            let _ = self.child.kill();
        }
        let stdout = self
            .stdout
            .take()
            .map(|t| t.join().unwrap_or_default())
            .unwrap_or_default();
        let stderr = self
            .stderr
            .take()
            .map(|t| t.join().unwrap_or_default())
            .unwrap_or_default();
        assert!(
            exited,
            "parklight did not exit within {timeout:?}; stderr:\n{stderr}"
        );
        Finished {
            status: status.expect("exited"),
            stdout,
            stderr,
        }
    }
}

impl Drop for Parklight {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
