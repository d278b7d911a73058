//! Failing loudly. Every part of the gateway runs under one [`Supervisor`]: when a part
//! stops on its own (a panic, a store it cannot write, a broken invariant), the
//! supervisor records why and stops the rest, and `parklight run` exits non-zero, so
//! the service manager (systemd, a container runtime) restarts it instead of leaving a
//! process that serves `/metrics` while storing nothing. Only a stop asked for by a
//! signal ends cleanly. An InfluxDB that refuses or is down is no failure: the
//! forwarder rides it out.

use std::fmt::Display;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

/// Watches the parts of the gateway; see the module docs.
#[derive(Debug, Clone)]
pub struct Supervisor {
    stop: CancellationToken,
    failure: Arc<Mutex<Option<String>>>,
}

impl Supervisor {
    /// A supervisor that cancels `stop` when a part fails.
    pub fn new(stop: CancellationToken) -> Supervisor {
        Supervisor {
            stop,
            failure: Arc::new(Mutex::new(None)),
        }
    }

    /// `part` failed: records why (the first failure is the one reported) and stops
    /// everything.
    pub fn fail(&self, part: &str, why: impl Display) {
        let reason = format!("{part}: {why}");
        tracing::error!(%reason, "the gateway stops: a part of it failed");
        let mut failure = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        failure.get_or_insert(reason);
        self.stop.cancel();
    }

    /// A guard for `part`: dropped while its thread panics, or before a stop was asked
    /// for, it fails the gateway.
    pub fn guard(&self, part: &'static str) -> Guard {
        Guard {
            supervisor: self.clone(),
            part,
        }
    }

    /// Why the gateway stopped on its own, if it did.
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Fails the gateway when its part ends unexpectedly; see [`Supervisor::guard`].
#[derive(Debug)]
pub struct Guard {
    supervisor: Supervisor,
    part: &'static str,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.supervisor.fail(self.part, "panicked");
        } else if !self.supervisor.stop.is_cancelled() {
            self.supervisor.fail(self.part, "stopped unexpectedly");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_part_stops_everything_and_says_so() {
        let stop = CancellationToken::new();
        let supervisor = Supervisor::new(stop.clone());
        let guard = supervisor.guard("writer");
        let result = std::thread::spawn(move || {
            let _guard = guard;
            panic!("broken invariant");
        })
        .join();
        assert!(result.is_err());
        assert!(stop.is_cancelled());
        assert_eq!(supervisor.failure().as_deref(), Some("writer: panicked"));
    }

    #[test]
    fn a_part_that_ends_before_a_stop_fails_and_one_after_does_not() {
        let stop = CancellationToken::new();
        let supervisor = Supervisor::new(stop.clone());
        drop(supervisor.guard("mqtt"));
        assert_eq!(
            supervisor.failure().as_deref(),
            Some("mqtt: stopped unexpectedly")
        );
        supervisor.fail("writer", "later");
        assert_eq!(
            supervisor.failure().as_deref(),
            Some("mqtt: stopped unexpectedly"),
            "the first failure is the one reported"
        );
        let calm = Supervisor::new(CancellationToken::new());
        calm.stop.cancel();
        drop(calm.guard("mqtt"));
        assert_eq!(calm.failure(), None);
    }
}
