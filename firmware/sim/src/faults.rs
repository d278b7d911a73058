//! Faults to inject, at rates or scripted: `lamp=0.01,offline=0.005,offline@pole-007=+30m/10m`.
//! A scripted fault is timed in simulated time (`+30m/10m`) or, for what liveness depends
//! on, in wall-clock time from the start (`wall+40s/90s`), which works at any speed.

use std::fmt;
use std::time::Duration;

/// A fault the simulator can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// The lamp stops giving light (its driver still draws standby power).
    Lamp,
    /// The node's connection drops without a clean disconnect, for a while.
    Offline,
    /// The light sensor keeps returning its last reading.
    Stuck,
    /// The light sensor fails: reads error, reports carry `lux: null`.
    Dead,
    /// The node restarts without a valid clock.
    Clock,
    /// The node restarts.
    Reboot,
    /// The whole site loses power for a while (rates are per site).
    Power,
    /// The lamp's relay sticks closed: it burns at full whatever the node commands.
    Relay,
}

impl FaultKind {
    /// Every kind, with its name in fault specs.
    pub const ALL: [(FaultKind, &'static str); 8] = [
        (FaultKind::Lamp, "lamp"),
        (FaultKind::Offline, "offline"),
        (FaultKind::Stuck, "stuck"),
        (FaultKind::Dead, "dead"),
        (FaultKind::Clock, "clock"),
        (FaultKind::Reboot, "reboot"),
        (FaultKind::Power, "power"),
        (FaultKind::Relay, "relay"),
    ];

    /// The name in fault specs.
    pub fn name(self) -> &'static str {
        FaultKind::ALL
            .iter()
            .find(|(k, _)| *k == self)
            .map_or("?", |(_, n)| n)
    }

    fn parse(name: &str) -> Option<FaultKind> {
        FaultKind::ALL
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(k, _)| *k)
    }
}

/// Which clock times a scripted fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timing {
    /// Simulated time, which runs `--speed` times faster.
    Simulated,
    /// Wall-clock time, as a gateway's liveness checks see it.
    Wall,
}

/// A fault at a set time after the start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scripted {
    /// What happens.
    pub kind: FaultKind,
    /// The node id (the site id for `power`).
    pub target: String,
    /// The clock of `after` and `lasting`.
    pub timing: Timing,
    /// Time after the start.
    pub after: Duration,
    /// How long it lasts: an outage (offline, power; a default when not given) or a
    /// failed part until its repair (lamp, stuck, dead, relay; for good when not given).
    pub lasting: Option<Duration>,
}

/// The faults of a run.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FaultPlan {
    /// Expected occurrences per node (per site for `power`) per simulated hour.
    pub rates: Vec<(FaultKind, f64)>,
    /// Faults at set times.
    pub scripted: Vec<Scripted>,
}

/// A fault spec that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "fault spec {item:?}: {reason} (expected KIND=RATE or KIND@TARGET=[wall]+OFFSET[/DURATION], KIND one of {kinds})"
)]
pub struct FaultSpecError {
    item: String,
    reason: &'static str,
    kinds: KindList,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct KindList;

impl fmt::Display for KindList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = FaultKind::ALL.iter().map(|(_, n)| *n).collect();
        f.write_str(&names.join(", "))
    }
}

impl FaultPlan {
    /// Parses a comma-separated spec.
    pub fn parse(spec: &str) -> Result<FaultPlan, FaultSpecError> {
        let mut plan = FaultPlan::default();
        for item in spec.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let fail = |reason| FaultSpecError {
                item: item.to_owned(),
                reason,
                kinds: KindList,
            };
            let (head, value) = item.split_once('=').ok_or_else(|| fail("missing '='"))?;
            match head.split_once('@') {
                None => {
                    let kind = FaultKind::parse(head).ok_or_else(|| fail("unknown fault kind"))?;
                    let rate: f64 = value.parse().map_err(|_| fail("rate is not a number"))?;
                    if !(rate.is_finite() && rate >= 0.0) {
                        return Err(fail("rate must be zero or more"));
                    }
                    plan.rates.push((kind, rate));
                }
                Some((kind, target)) => {
                    let kind = FaultKind::parse(kind).ok_or_else(|| fail("unknown fault kind"))?;
                    if target.is_empty() {
                        return Err(fail("missing target"));
                    }
                    let (timing, offset) = match value.strip_prefix("wall") {
                        Some(wall) => (Timing::Wall, wall),
                        None => (Timing::Simulated, value),
                    };
                    let offset = offset
                        .strip_prefix('+')
                        .ok_or_else(|| fail("the time is +OFFSET or wall+OFFSET"))?;
                    let (after, lasting) = match offset.split_once('/') {
                        Some((after, lasting)) => (after, Some(lasting)),
                        None => (offset, None),
                    };
                    let duration = |text: &str| {
                        humantime::parse_duration(text)
                            .map_err(|_| fail("bad duration (e.g. 30m, 1h30m)"))
                    };
                    plan.scripted.push(Scripted {
                        kind,
                        target: target.to_owned(),
                        timing,
                        after: duration(after)?,
                        lasting: lasting.map(duration).transpose()?,
                    });
                }
            }
        }
        Ok(plan)
    }

    /// The rate of `kind` per simulated hour (0 when not given).
    pub fn rate(&self, kind: FaultKind) -> f64 {
        self.rates
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, r)| r)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_scripts() {
        let plan = FaultPlan::parse(
            "lamp=0.01, offline=0.005,offline@pole-007=+30m/10m,power@remiseparken=+2h,relay@p=wall+40s",
        )
        .unwrap();
        assert_eq!(plan.rate(FaultKind::Lamp), 0.01);
        assert_eq!(plan.rate(FaultKind::Dead), 0.0);
        assert_eq!(
            plan.scripted[0],
            Scripted {
                kind: FaultKind::Offline,
                target: "pole-007".into(),
                timing: Timing::Simulated,
                after: Duration::from_secs(1800),
                lasting: Some(Duration::from_secs(600)),
            }
        );
        assert_eq!(plan.scripted[1].lasting, None);
        let relay = &plan.scripted[2];
        assert_eq!(relay.kind, FaultKind::Relay);
        assert_eq!(
            (relay.timing, relay.after),
            (Timing::Wall, Duration::from_secs(40))
        );
    }

    #[test]
    fn errors_name_the_item() {
        for bad in [
            "lamp",
            "laser=1",
            "lamp=-1",
            "lamp=x",
            "offline@=+1m",
            "offline@n=30m",
            "offline@n=+soon",
            "offline@n=wall30s",
        ] {
            let err = FaultPlan::parse(bad).unwrap_err().to_string();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }
}
