//! The gateway's configuration: one typed struct from TOML, environment overrides,
//! secrets from the environment or files, and a check that lists every problem with its
//! file and line (`parklight check`).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use parklight_site::Site;
use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

/// What an MQTT PUBLISH packet holds besides its payload, at most: the topic (up to
/// 65 535 bytes and its length) and the packet id.
pub const MQTT_PACKET_OVERHEAD: usize = 65_539;

/// The least `clock_skew_s`: how far ahead of the gateway a node lets its clock run
/// ([`parklight_core::CLOCK_AHEAD_MS`]).
const CLOCK_SKEW_MIN_S: u64 = (parklight_core::CLOCK_AHEAD_MS / 1000) as u64;

/// The default configuration file, as `parklight config` prints it.
pub const DEFAULT_CONFIG: &str = include_str!("../../deploy/parklight.toml");

/// The MQTT source.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    /// `mqtt://host:port` or `mqtts://host:port`.
    pub url: String,
    /// Fixed client id (the broker keeps the session under it).
    pub client_id: String,
    /// Topic prefix.
    pub topic_prefix: String,
    /// Subscribe only to the configured sites.
    pub only_configured_sites: bool,
    /// Keepalive, seconds.
    pub keep_alive_s: u64,
    /// Largest packet accepted, bytes (topic, packet id and payload).
    pub max_packet_bytes: usize,
    /// The broker's limit on payloads (Mosquitto's `message_size_limit`), when known:
    /// checked to leave room below `max_packet_bytes`; 0 means the broker has none.
    pub broker_message_size_limit: Option<usize>,
    /// Username.
    pub username: Option<String>,
    /// Environment variable holding the password.
    pub password_env: Option<String>,
    /// File holding the password.
    pub password_file: Option<PathBuf>,
    /// CA certificate (PEM) for TLS.
    pub ca_file: Option<PathBuf>,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            url: "mqtt://127.0.0.1:1883".into(),
            client_id: "parklight-gateway".into(),
            topic_prefix: parklight_protocol::DEFAULT_PREFIX.into(),
            only_configured_sites: false,
            keep_alive_s: 30,
            max_packet_bytes: 262_144,
            broker_message_size_limit: None,
            username: None,
            password_env: None,
            password_file: None,
            ca_file: None,
        }
    }
}

/// The embedded store.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Folder of the store.
    pub path: PathBuf,
    /// Days raw reports are kept after they arrive.
    pub retention_days: u32,
    /// Most reports per commit.
    pub commit_max_reports: usize,
    /// Longest wait to fill a commit, milliseconds.
    pub commit_max_wait_ms: u64,
    /// Dead letters kept.
    pub dead_letters_max: usize,
    /// Seconds between two housekeeping rounds (compaction and retention).
    pub housekeeping_interval_s: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            path: "parklight-data".into(),
            retention_days: 7,
            commit_max_reports: 10_000,
            commit_max_wait_ms: 5,
            dead_letters_max: 10_000,
            housekeeping_interval_s: 600,
        }
    }
}

/// Decoding and acknowledging.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// Allowed clock skew of a report's `ts` past its arrival, seconds.
    pub clock_skew_s: u64,
    /// Least time between two stored-acknowledgements of a node's boot, seconds.
    pub ack_interval_s: u64,
    /// Messages received but not yet stored, at most: above it the gateway stops reading
    /// from the broker until the store catches up.
    pub queue_max_messages: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            clock_skew_s: 300,
            ack_interval_s: 10,
            queue_max_messages: 20_000,
        }
    }
}

/// The HTTP listener.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Certificate chain (PEM) for HTTPS.
    pub tls_cert: Option<PathBuf>,
    /// Its private key (PEM), in a file only its owner may read.
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP on an address other than loopback (behind a proxy that adds TLS).
    pub plain_http_beyond_loopback: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            tls_cert: None,
            tls_key: None,
            plain_http_beyond_loopback: false,
        }
    }
}

impl HttpConfig {
    /// The certificate chain and key files, when HTTPS is configured.
    pub fn tls(&self) -> Option<(&Path, &Path)> {
        Some((self.tls_cert.as_deref()?, self.tls_key.as_deref()?))
    }
}

/// Usage figures for safety partnerships.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UsageConfig {
    /// k: partners get each hour's counts below this as 0 and the rest rounded to a
    /// multiple of it, and a figure that comes to 0 as suppressed; 1 tells them exact
    /// counts.
    pub suppress_below: u32,
}

impl Default for UsageConfig {
    fn default() -> Self {
        UsageConfig { suppress_below: 5 }
    }
}

/// Pricing the lamps' energy.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EnergyConfig {
    /// Price of a kWh, in `currency`; no cost is given without it.
    pub tariff_per_kwh: Option<f64>,
    /// ISO 4217 code of the tariff's currency.
    pub currency: String,
}

impl Default for EnergyConfig {
    fn default() -> Self {
        EnergyConfig {
            tariff_per_kwh: None,
            currency: "EUR".into(),
        }
    }
}

/// Forwarding to InfluxDB 2.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InfluxConfig {
    /// Base URL, `http://127.0.0.1:8086`.
    pub url: String,
    /// Organisation.
    pub org: String,
    /// Bucket.
    pub bucket: String,
    /// Environment variable holding the token.
    #[serde(default = "default_token_env")]
    pub token_env: Option<String>,
    /// File holding the token.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Reports per write.
    #[serde(default = "default_batch_reports")]
    pub batch_reports: usize,
    /// Longest wait before sending a partial batch, milliseconds.
    #[serde(default = "default_flush_interval_ms")]
    pub flush_interval_ms: u64,
    /// Timeout of one request, seconds.
    #[serde(default = "default_timeout_s")]
    pub timeout_s: u64,
}

fn default_token_env() -> Option<String> {
    Some("PARKLIGHT_INFLUXDB_TOKEN".into())
}
fn default_batch_reports() -> usize {
    5000
}
fn default_flush_interval_ms() -> u64 {
    1000
}
fn default_timeout_s() -> u64 {
    10
}

/// The detectors' thresholds people may want to change.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectionConfig {
    /// Consecutive windows that raise, and clear, a window-based condition.
    pub windows_to_change: u32,
    /// How far above the thresholds a zone must be to count towards clearing (0.1 = 10 %).
    pub clear_margin: f64,
    /// Zones are judged while the sun is below this altitude, degrees (civil dusk: −6).
    pub dark_below_deg: f64,
    /// Detections in a dark window from which a dark zone is `critical`.
    pub critical_detections: u32,
}

impl Default for DetectionConfig {
    fn default() -> Self {
        let s = crate::detect::Settings::default();
        DetectionConfig {
            windows_to_change: s.windows_to_change,
            clear_margin: s.clear_margin,
            dark_below_deg: s.dark_below_deg,
            critical_detections: s.critical_detections,
        }
    }
}

impl DetectionConfig {
    /// The detectors' settings.
    pub fn settings(&self) -> crate::detect::Settings {
        crate::detect::Settings {
            windows_to_change: self.windows_to_change,
            clear_margin: self.clear_margin,
            dark_below_deg: self.dark_below_deg,
            critical_detections: self.critical_detections,
            ..crate::detect::Settings::default()
        }
    }
}

/// The alert manager (seconds here; the manager works in milliseconds).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsConfig {
    /// A condition back within this time of clearing reopens its alert.
    pub hold_s: u64,
    /// Returns within `flap_window_s` above which an alert is flapping.
    pub flap_returns: usize,
    /// The window flapping is counted in.
    pub flap_window_s: u64,
    /// How long a `node_offline` waits to be rolled up into a power loss (at least 1.5x
    /// the MQTT keepalive).
    pub rollup_s: u64,
    /// Share of a site's or circuit's nodes offline together that is a power loss.
    pub rollup_share: f64,
    /// Unacknowledged `high` and `critical` alerts are paged again this often.
    pub remind_s: u64,
    /// Unacknowledged `high` and `critical` alerts go to escalation webhooks after this.
    pub escalate_s: u64,
    /// Publish alerts on `{prefix}/{site}/alerts`.
    pub mqtt: bool,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        let s = crate::alert::Settings::default();
        AlertsConfig {
            hold_s: (s.hold_ms / 1000) as u64,
            flap_returns: s.flap_returns,
            flap_window_s: (s.flap_window_ms / 1000) as u64,
            rollup_s: (s.rollup_ms / 1000) as u64,
            rollup_share: s.rollup_share,
            remind_s: (s.remind_ms / 1000) as u64,
            escalate_s: (s.escalate_ms / 1000) as u64,
            mqtt: true,
        }
    }
}

impl AlertsConfig {
    /// The manager's settings.
    pub fn settings(&self) -> crate::alert::Settings {
        let ms = |s: u64| (s.min(i64::MAX as u64 / 1000) * 1000) as i64;
        crate::alert::Settings {
            hold_ms: ms(self.hold_s),
            flap_returns: self.flap_returns,
            flap_window_ms: ms(self.flap_window_s),
            rollup_ms: ms(self.rollup_s),
            rollup_share: self.rollup_share,
            remind_ms: ms(self.remind_s),
            escalate_ms: ms(self.escalate_s),
        }
    }
}

/// A webhook that receives alert changes.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// A name for logs, metrics and its cursor (unique).
    pub name: String,
    /// `https://…` (or `http://` to a loopback address).
    pub url: String,
    /// Environment variable holding the signing secret.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// File holding the signing secret.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Only these kinds (all when empty).
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Only alerts at least this severe.
    #[serde(default)]
    pub min_severity: Option<String>,
    /// Only these sites (all when empty).
    #[serde(default)]
    pub sites: Vec<String>,
    /// An escalation receiver: gets only alerts left unacknowledged too long.
    #[serde(default)]
    pub escalation: bool,
    /// Timeout of one attempt, seconds.
    #[serde(default = "default_timeout_s")]
    pub timeout_s: u64,
}

/// One site file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteFile {
    /// Path, relative to the config file.
    pub file: PathBuf,
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Config {
    /// MQTT source.
    pub mqtt: MqttConfig,
    /// Embedded store.
    pub storage: StorageConfig,
    /// Decoding and acknowledging.
    pub ingest: IngestConfig,
    /// HTTP listener.
    pub http: HttpConfig,
    /// Usage figures for partnerships.
    pub usage: UsageConfig,
    /// Pricing the lamps' energy.
    pub energy: EnergyConfig,
    /// Forwarding to InfluxDB, when configured.
    pub influxdb: Option<InfluxConfig>,
    /// Site files, with paths resolved.
    pub sites: Vec<SiteFile>,
    /// The detectors.
    pub detection: DetectionConfig,
    /// The alert manager.
    pub alerts: AlertsConfig,
    /// Webhooks.
    pub webhooks: Vec<WebhookConfig>,
}

/// How bad a problem is: an error refuses the configuration, a warning does not.
pub use parklight_site::Severity;

/// One problem in a configuration or a file it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file.
    pub file: PathBuf,
    /// The line, when it can be placed.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
    /// Error or warning.
    pub severity: Severity,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, "{line}:")?;
        }
        if self.severity == Severity::Warning {
            write!(f, " warning:")?;
        }
        write!(f, " {}", self.message)
    }
}

/// Every problem found; the configuration is refused as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The problems, by file and line.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.problems.iter().map(Problem::to_string).collect();
        f.write_str(&lines.join("\n"))
    }
}

/// A configuration with everything it names loaded and checked.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The configuration.
    pub config: Config,
    /// The sites of its site files.
    pub sites: Vec<Site>,
    /// What works, but probably not as meant.
    pub warnings: Vec<Problem>,
}

/// Collects problems while reading one file.
struct Report<'a> {
    file: &'a Path,
    text: &'a str,
    problems: Vec<Problem>,
}

impl Report<'_> {
    fn line_of(&self, span: std::ops::Range<usize>) -> Option<usize> {
        (span.end > 0).then(|| {
            self.text[..span.start.min(self.text.len())]
                .matches('\n')
                .count()
                + 1
        })
    }

    fn at(&mut self, span: std::ops::Range<usize>, message: impl Into<String>) {
        self.with(span, message, Severity::Error);
    }

    fn with(
        &mut self,
        span: std::ops::Range<usize>,
        message: impl Into<String>,
        severity: Severity,
    ) {
        self.problems.push(Problem {
            file: self.file.to_owned(),
            line: self.line_of(span),
            message: message.into(),
            severity,
        });
    }

    /// Deserializes one section, recording the error with its line.
    fn section<T: for<'de> Deserialize<'de>>(
        &mut self,
        name: &str,
        value: Spanned<DeValue<'_>>,
    ) -> Option<T> {
        match T::deserialize(ValueDeserializer::from(value)) {
            Ok(section) => Some(section),
            Err(error) => {
                let span = error.span().unwrap_or(0..0);
                self.at(span, format!("[{name}]: {}", error.message()));
                None
            }
        }
    }
}

/// Applies `PARKLIGHT_<SECTION>__<KEY>` variables to the parsed document.
fn apply_overrides<'a>(
    root: &mut DeTable<'a>,
    overrides: &'a [(String, String)],
    report: &mut Report<'_>,
) {
    for (name, value) in overrides {
        let Some((section, key)) = name
            .strip_prefix("PARKLIGHT_")
            .and_then(|rest| rest.split_once("__"))
            .map(|(s, k)| (s.to_lowercase(), k.to_lowercase()))
        else {
            continue;
        };
        let parsed = DeValue::parse(value)
            .map(|v| v.into_inner())
            .unwrap_or_else(|_| DeValue::String(value.as_str().into()));
        let entry = root
            .entry(Spanned::new(0..0, section.clone().into()))
            .or_insert_with(|| Spanned::new(0..0, DeValue::Table(DeTable::new())));
        match entry.get_mut() {
            DeValue::Table(table) => {
                table.insert(Spanned::new(0..0, key.into()), Spanned::new(0..0, parsed));
            }
            _ => report.at(
                0..0,
                format!("{name}: [{section}] is not a section that takes keys"),
            ),
        }
    }
}

/// The `PARKLIGHT_<SECTION>__<KEY>` variables of this process.
pub fn environment_overrides() -> Vec<(String, String)> {
    std::env::vars()
        .filter(|(name, _)| name.starts_with("PARKLIGHT_") && name.contains("__"))
        .collect()
}

/// Whether loading a configuration reads the secrets it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secrets {
    /// Read them (and refuse the configuration when one cannot be read): for `run`,
    /// `check` and anything that connects.
    Read,
    /// Leave them: for the crew's and operator's tools, which only need the store and
    /// the sites, and run in a shell that may not see the service's secrets.
    Skip,
}

impl Config {
    /// Reads, overrides, checks and loads a configuration file and its site files,
    /// reading the secrets it names.
    pub fn load(path: &Path, overrides: &[(String, String)]) -> Result<Loaded, ConfigError> {
        Config::load_with(path, overrides, Secrets::Read)
    }

    /// [`Config::load`], reading the secrets or not.
    pub fn load_with(
        path: &Path,
        overrides: &[(String, String)],
        secrets: Secrets,
    ) -> Result<Loaded, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            problems: vec![Problem {
                file: path.to_owned(),
                line: None,
                message: format!("cannot read: {e}"),
                severity: Severity::Error,
            }],
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, path, base, overrides, secrets)
    }

    /// Parses configuration text; `base` resolves relative paths.
    pub fn parse(
        text: &str,
        file: &Path,
        base: &Path,
        overrides: &[(String, String)],
        secrets: Secrets,
    ) -> Result<Loaded, ConfigError> {
        let mut report = Report {
            file,
            text,
            problems: Vec::new(),
        };
        let mut root = match DeTable::parse(text) {
            Ok(root) => root.into_inner(),
            Err(error) => {
                report.at(error.span().unwrap_or(0..0), error.message().to_owned());
                return Err(ConfigError {
                    problems: report.problems,
                });
            }
        };
        apply_overrides(&mut root, overrides, &mut report);
        let mut config = Config::default();
        for (key, value) in root.clone() {
            let span = key.span();
            match key.get_ref().as_ref() {
                "mqtt" => config.mqtt = report.section("mqtt", value).unwrap_or_default(),
                "storage" => config.storage = report.section("storage", value).unwrap_or_default(),
                "ingest" => config.ingest = report.section("ingest", value).unwrap_or_default(),
                "http" => config.http = report.section("http", value).unwrap_or_default(),
                "usage" => config.usage = report.section("usage", value).unwrap_or_default(),
                "energy" => config.energy = report.section("energy", value).unwrap_or_default(),
                "influxdb" => config.influxdb = report.section("influxdb", value),
                "sites" => config.sites = report.section("sites", value).unwrap_or_default(),
                "detection" => {
                    config.detection = report.section("detection", value).unwrap_or_default()
                }
                "alerts" => config.alerts = report.section("alerts", value).unwrap_or_default(),
                "webhooks" => config.webhooks = report.section("webhooks", value).unwrap_or_default(),
                other => report.at(
                    span,
                    format!(
                        "unknown section [{other}] (mqtt, storage, ingest, http, usage, energy, influxdb, sites, detection, alerts, webhooks)"
                    ),
                ),
            }
        }
        if config.storage.path.is_relative() {
            config.storage.path = base.join(&config.storage.path);
        }
        for site in &mut config.sites {
            if site.file.is_relative() {
                site.file = base.join(&site.file);
            }
        }
        for hook in &mut config.webhooks {
            if let Some(file) = hook.secret_file.as_mut().filter(|f| f.is_relative()) {
                *file = base.join(&*file);
            }
        }
        let http = &mut config.http;
        for file in [&mut http.tls_cert, &mut http.tls_key]
            .into_iter()
            .flatten()
        {
            if file.is_relative() {
                *file = base.join(&*file);
            }
        }
        // A problem found after parsing is placed at its key, or else its section.
        let span_of = |section: &str, key: &str| {
            let (name, value) = root.get_key_value(section)?;
            let key_span = match value.get_ref() {
                DeValue::Table(table) => table.get_key_value(key).map(|(k, _)| k.span()),
                _ => None,
            };
            Some(key_span.unwrap_or(name.span()))
        };
        for (section, key, message, severity) in config.check(secrets).0 {
            report.with(span_of(section, key).unwrap_or(0..0), message, severity);
        }
        let sites = load_sites(&config.sites, &mut report.problems);
        report
            .problems
            .sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
        if report
            .problems
            .iter()
            .any(|p| p.severity == Severity::Error)
        {
            // Warnings too: whoever fixes the errors reads them in the same pass.
            return Err(ConfigError {
                problems: report.problems,
            });
        }
        Ok(Loaded {
            config,
            sites,
            warnings: report.problems,
        })
    }

    /// Checks values that parse but cannot work (errors) or may not work as meant
    /// (warnings); reports each against its section and key.
    fn check(&self, secrets: Secrets) -> Findings {
        let read = secrets == Secrets::Read;
        let mut found = Findings::default();
        let mqtt = &self.mqtt;
        if let Err(e) = parklight_sim::mqtt::broker_options(&mqtt.url, &mqtt.client_id) {
            found.error("mqtt", "url", format!("[mqtt] url: {e}"));
        }
        for (section, url) in [
            ("mqtt", Some(&mqtt.url)),
            ("influxdb", self.influxdb.as_ref().map(|i| &i.url)),
        ] {
            if url
                .and_then(|u| url::Url::parse(u).ok())
                .is_some_and(|u| !u.username().is_empty() || u.password().is_some())
            {
                found.error(
                    section,
                    "url",
                    format!(
                        "[{section}] url: no credentials in the URL (they would be logged): use {}",
                        if section == "mqtt" {
                            "username with password_env or password_file"
                        } else {
                            "token_env or token_file"
                        }
                    ),
                );
            }
        }
        self.check_http(&mut found, read);
        if !(1..=1000).contains(&self.usage.suppress_below) {
            found.error(
                "usage",
                "suppress_below",
                "[usage] suppress_below: 1 (exact counts) to 1000".into(),
            );
        }
        if (self.energy.tariff_per_kwh).is_some_and(|t| !(0.0..=1000.0).contains(&t)) {
            found.error(
                "energy",
                "tariff_per_kwh",
                "[energy] tariff_per_kwh: 0 to 1000 (a price per kWh)".into(),
            );
        }
        let currency = &self.energy.currency;
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
            found.error(
                "energy",
                "currency",
                "[energy] currency: an ISO 4217 code such as EUR or DKK".into(),
            );
        }
        if mqtt.client_id.is_empty() || mqtt.client_id.len() > 23 * 4 {
            found.error(
                "mqtt",
                "client_id",
                "[mqtt] client_id: 1 to 92 characters".into(),
            );
        }
        let prefix = &mqtt.topic_prefix;
        if prefix.is_empty()
            || prefix.ends_with('/')
            || prefix.contains(['+', '#'])
            || prefix.len() > 64
        {
            found.error(
                "mqtt",
                "topic_prefix",
                format!(
                    "[mqtt] topic_prefix {prefix:?}: not empty, no wildcards, no trailing '/', at most 64 bytes"
                ),
            );
        }
        if !(5..=3600).contains(&mqtt.keep_alive_s) {
            found.error(
                "mqtt",
                "keep_alive_s",
                "[mqtt] keep_alive_s: 5 to 3600".into(),
            );
        }
        if mqtt.max_packet_bytes < 4 * parklight_protocol::MAX_PAYLOAD {
            found.error(
                "mqtt",
                "max_packet_bytes",
                format!(
                    "[mqtt] max_packet_bytes: at least {} so oversized reports can be rejected",
                    4 * parklight_protocol::MAX_PAYLOAD
                ),
            );
        }
        match mqtt.broker_message_size_limit {
            Some(0) => found.warning(
                "mqtt",
                "broker_message_size_limit",
                "[mqtt] the broker has no message_size_limit: each message over max_packet_bytes costs the gateway a reconnect".into(),
            ),
            Some(limit) if mqtt.max_packet_bytes < limit.saturating_add(MQTT_PACKET_OVERHEAD) => {
                found.error(
                    "mqtt",
                    "max_packet_bytes",
                    format!(
                        "[mqtt] max_packet_bytes: at least {} (the broker's message_size_limit {limit} counts the payload alone; the packet adds its topic, up to {MQTT_PACKET_OVERHEAD} bytes)",
                        limit.saturating_add(MQTT_PACKET_OVERHEAD)
                    ),
                )
            }
            _ => {}
        }
        if mqtt.password_env.is_some() || mqtt.password_file.is_some() {
            if mqtt.username.is_none() {
                found.error(
                    "mqtt",
                    "username",
                    "[mqtt] a password needs a username".into(),
                );
            }
            if let (true, Err(e)) = (
                read,
                secret(mqtt.password_env.as_deref(), mqtt.password_file.as_deref()),
            ) {
                found.error(
                    "mqtt",
                    if mqtt.password_env.is_some() {
                        "password_env"
                    } else {
                        "password_file"
                    },
                    format!("[mqtt] password: {e}"),
                );
            }
        }
        if let Some(ca) = &mqtt.ca_file
            && !ca.is_file()
        {
            found.error(
                "mqtt",
                "ca_file",
                format!("[mqtt] ca_file {}: not a file", ca.display()),
            );
        }
        let storage = &self.storage;
        if storage.retention_days == 0 {
            found.error(
                "storage",
                "retention_days",
                "[storage] retention_days: at least 1".into(),
            );
        }
        if !(1..=100_000).contains(&storage.commit_max_reports) {
            found.error(
                "storage",
                "commit_max_reports",
                "[storage] commit_max_reports: 1 to 100000".into(),
            );
        }
        if storage.housekeeping_interval_s == 0 {
            found.error(
                "storage",
                "housekeeping_interval_s",
                "[storage] housekeeping_interval_s: at least 1".into(),
            );
        }
        if storage.commit_max_wait_ms > 1000 {
            found.error(
                "storage",
                "commit_max_wait_ms",
                "[storage] commit_max_wait_ms: at most 1000".into(),
            );
        }
        if !(100..=1_000_000).contains(&self.ingest.queue_max_messages) {
            found.error(
                "ingest",
                "queue_max_messages",
                "[ingest] queue_max_messages: 100 to 1000000".into(),
            );
        }
        if !(CLOCK_SKEW_MIN_S..=3600).contains(&self.ingest.clock_skew_s) {
            found.error(
                "ingest",
                "clock_skew_s",
                format!(
                    "[ingest] clock_skew_s: {CLOCK_SKEW_MIN_S} to 3600 (a node puts a fast clock back only once it is more than {CLOCK_SKEW_MIN_S} s ahead: with less, a node between the two would send no valid clock for good)"
                ),
            );
        }
        if self.ingest.ack_interval_s == 0 {
            found.error(
                "ingest",
                "ack_interval_s",
                "[ingest] ack_interval_s: at least 1".into(),
            );
        }
        if let Some(influx) = &self.influxdb {
            if !(influx.url.starts_with("http://") || influx.url.starts_with("https://"))
                || url::Url::parse(&influx.url).is_err()
            {
                found.error(
                    "influxdb",
                    "url",
                    format!(
                        "[influxdb] url {:?}: an http:// or https:// URL",
                        influx.url
                    ),
                );
            }
            if influx.org.is_empty() || influx.bucket.is_empty() {
                found.error(
                    "influxdb",
                    "bucket",
                    "[influxdb] org and bucket must not be empty".into(),
                );
            }
            if let (true, Err(e)) = (
                read,
                secret(influx.token_env.as_deref(), influx.token_file.as_deref()),
            ) {
                found.error(
                    "influxdb",
                    if influx.token_file.is_some() {
                        "token_file"
                    } else {
                        "token_env"
                    },
                    format!("[influxdb] token: {e}"),
                );
            }
            if influx.batch_reports == 0 || influx.timeout_s == 0 {
                found.error(
                    "influxdb",
                    "batch_reports",
                    "[influxdb] batch_reports and timeout_s: at least 1".into(),
                );
            }
        }
        self.check_alerts(&mut found, secrets);
        if self.sites.is_empty() {
            found.warning(
                "sites",
                "file",
                "no [[sites]]: every report is stored, but no node belongs to a zone, so no zone is judged; add a site file (deploy/README.md)".into(),
            );
        }
        found
    }

    fn check_http(&self, found: &mut Findings, read: bool) {
        let http = &self.http;
        match (&http.tls_cert, &http.tls_key) {
            (Some(_), None) | (None, Some(_)) => found.error(
                "http",
                "tls_cert",
                "[http] tls_cert and tls_key: both, or neither".into(),
            ),
            (Some(_), Some(_)) if read => {
                if let Err(e) = crate::http::tls_config(http) {
                    found.error("http", "tls_cert", format!("[http] {e}"));
                }
            }
            (None, None) if !http.listen.ip().is_loopback() && !http.plain_http_beyond_loopback => {
                found.error(
                    "http",
                    "listen",
                    format!(
                        "[http] listen {}: plain HTTP beyond loopback would send tokens in the clear: set tls_cert and tls_key, or plain_http_beyond_loopback = true behind a proxy that adds TLS",
                        http.listen
                    ),
                )
            }
            _ => {}
        }
    }

    fn check_alerts(&self, found: &mut Findings, secrets: Secrets) {
        let detection = &self.detection;
        if !(1..=12).contains(&detection.windows_to_change) {
            found.error(
                "detection",
                "windows_to_change",
                "[detection] windows_to_change: 1 to 12".into(),
            );
        }
        if !(0.0..=1.0).contains(&detection.clear_margin) {
            found.error(
                "detection",
                "clear_margin",
                "[detection] clear_margin: 0 to 1".into(),
            );
        }
        if !(-18.0..=0.0).contains(&detection.dark_below_deg) {
            found.error(
                "detection",
                "dark_below_deg",
                "[detection] dark_below_deg: -18 (astronomical night) to 0 (sunset)".into(),
            );
        }
        if detection.critical_detections == 0 {
            found.error(
                "detection",
                "critical_detections",
                "[detection] critical_detections: at least 1".into(),
            );
        }
        let alerts = &self.alerts;
        if (alerts.rollup_s as f64) < 1.5 * self.mqtt.keep_alive_s as f64 {
            found.error(
                "alerts",
                "rollup_s",
                format!(
                    "[alerts] rollup_s: at least 1.5x [mqtt] keep_alive_s ({} s), or a node's will can come after its roll-up was decided",
                    (self.mqtt.keep_alive_s * 3).div_ceil(2)
                ),
            );
        }
        if !(alerts.rollup_share > 0.0 && alerts.rollup_share <= 1.0) {
            found.error(
                "alerts",
                "rollup_share",
                "[alerts] rollup_share: above 0 and at most 1".into(),
            );
        }
        if alerts.remind_s == 0 || alerts.escalate_s == 0 || alerts.flap_window_s == 0 {
            found.error(
                "alerts",
                "remind_s",
                "[alerts] remind_s, escalate_s and flap_window_s: at least 1".into(),
            );
        }
        let mut names = std::collections::HashSet::new();
        for hook in &self.webhooks {
            let name = &hook.name;
            // "mqtt" is the alerts topic's receiver: its cursor has that name.
            if !names.insert(name)
                || !parklight_protocol::topic::is_identifier(name)
                || name == "mqtt"
            {
                found.error(
                    "webhooks",
                    "name",
                    format!(
                        "[[webhooks]] name {name:?}: unique, not \"mqtt\", letters, digits, - and _"
                    ),
                );
            }
            match url::Url::parse(&hook.url) {
                Ok(url) if url.scheme() == "https" => {}
                Ok(url)
                    if url.scheme() == "http"
                        && url.host_str().is_some_and(|h| {
                            h == "localhost"
                                || h.trim_matches(['[', ']'])
                                    .parse::<std::net::IpAddr>()
                                    .is_ok_and(|ip| ip.is_loopback())
                        }) => {}
                _ => found.error(
                    "webhooks",
                    "url",
                    format!(
                        "[[webhooks]] {name}: url {:?}: https://, or http:// to a loopback address",
                        hook.url
                    ),
                ),
            }
            if hook.secret_env.is_none() && hook.secret_file.is_none() {
                found.error(
                    "webhooks",
                    "name",
                    format!("[[webhooks]] {name}: secret_env or secret_file: its signing secret"),
                );
            } else if let (Secrets::Read, Err(e)) = (
                secrets,
                secret(hook.secret_env.as_deref(), hook.secret_file.as_deref()),
            ) {
                found.error(
                    "webhooks",
                    "secret_env",
                    format!("[[webhooks]] {name}: secret: {e}"),
                );
            }
            for kind in &hook.kinds {
                if parklight_protocol::alert::AlertKind::parse(kind).is_none() {
                    found.error(
                        "webhooks",
                        "kinds",
                        format!("[[webhooks]] {name}: unknown kind {kind:?}"),
                    );
                }
            }
            if let Some(severity) = &hook.min_severity
                && parklight_protocol::alert::Severity::parse(severity).is_none()
            {
                found.error("webhooks", "min_severity", format!("[[webhooks]] {name}: min_severity {severity:?}: low, medium, high or critical"));
            }
            if hook.timeout_s == 0 {
                found.error(
                    "webhooks",
                    "timeout_s",
                    format!("[[webhooks]] {name}: timeout_s: at least 1"),
                );
            }
        }
    }
}

/// What [`Config::check`] found: `(section, key, message, severity)`.
#[derive(Debug, Default)]
struct Findings(Vec<(&'static str, &'static str, String, Severity)>);

impl Findings {
    fn error(&mut self, section: &'static str, key: &'static str, message: String) {
        self.0.push((section, key, message, Severity::Error));
    }

    fn warning(&mut self, section: &'static str, key: &'static str, message: String) {
        self.0.push((section, key, message, Severity::Warning));
    }
}

fn load_sites(files: &[SiteFile], problems: &mut Vec<Problem>) -> Vec<Site> {
    let mut sites: Vec<Site> = Vec::new();
    let mut nodes = std::collections::HashMap::new();
    for file in files {
        let in_file = |p: parklight_site::Problem| Problem {
            file: file.file.clone(),
            line: p.line,
            severity: p.severity,
            message: match p.feature {
                Some(feature) => format!("feature {feature}: {}", p.message),
                None => p.message,
            },
        };
        let checked = match Site::check_file(&file.file) {
            Ok(checked) => checked,
            Err(error) => {
                problems.extend(error.problems.into_iter().map(in_file));
                continue;
            }
        };
        problems.extend(checked.warnings.into_iter().map(in_file));
        let site = checked.site;
        for node in &site.nodes {
            if let Some(other) = nodes.insert(node.id.clone(), site.id.clone()) {
                problems.push(Problem {
                    file: file.file.clone(),
                    line: None,
                    message: format!(
                        "feature {}: node {} is in site {other} too: node ids are unique across sites",
                        node.feature, node.id
                    ),
                    severity: Severity::Error,
                });
            }
        }
        sites.push(site);
    }
    sites
}

/// Why a secret cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// Neither source is configured.
    #[error("name an environment variable or a file")]
    NotConfigured,
    /// The environment variable is not set.
    #[error("environment variable {0} is not set")]
    Unset(String),
    /// The file cannot be read.
    #[error("{0}: {1}")]
    Unreadable(PathBuf, String),
    /// Others than its owner may read the file.
    #[error("{0}: readable by others than its owner (chmod 600)")]
    TooOpen(PathBuf),
}

/// A secret from an environment variable (first) or a file only its owner may read.
/// The value never appears in logs or errors.
pub fn secret(env: Option<&str>, file: Option<&Path>) -> Result<String, SecretError> {
    if let Some(name) = env {
        match std::env::var(name) {
            Ok(value) if !value.is_empty() => return Ok(value),
            _ if file.is_none() => return Err(SecretError::Unset(name.into())),
            _ => {}
        }
    }
    let path = file.ok_or(SecretError::NotConfigured)?;
    let unreadable = |e: std::io::Error| SecretError::Unreadable(path.into(), e.to_string());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(unreadable)?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(SecretError::TooOpen(path.into()));
        }
    }
    Ok(std::fs::read_to_string(path)
        .map_err(unreadable)?
        .trim_end()
        .to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, overrides: &[(String, String)]) -> Result<Loaded, ConfigError> {
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
        Config::parse(
            text,
            Path::new("test.toml"),
            &base,
            overrides,
            Secrets::Read,
        )
    }

    #[test]
    fn the_shipped_file_is_the_default() {
        let loaded = parse(DEFAULT_CONFIG, &[]).unwrap();
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
        let expected = Config {
            storage: StorageConfig {
                path: base.join("parklight-data"),
                ..StorageConfig::default()
            },
            sites: vec![SiteFile {
                file: base.join("sites/remiseparken.geojson"),
            }],
            ..Config::default()
        };
        assert_eq!(loaded.config, expected);
        assert_eq!(loaded.sites[0].id, "remiseparken");
    }

    #[test]
    fn the_shipped_client_limit_leaves_room_above_the_shipped_broker_limit() {
        let broker = include_str!("../../deploy/mosquitto.conf")
            .lines()
            .find_map(|line| line.strip_prefix("message_size_limit "))
            .and_then(|limit| limit.trim().parse::<usize>().ok())
            .unwrap();
        let shipped = parse(DEFAULT_CONFIG, &[]).unwrap().config.mqtt;
        assert!(shipped.max_packet_bytes >= broker + MQTT_PACKET_OVERHEAD);
        // And check holds a configuration to it when it knows the broker's limit.
        let told = [(
            "PARKLIGHT_MQTT__BROKER_MESSAGE_SIZE_LIMIT".to_owned(),
            "262144".to_owned(),
        )];
        let error = parse(DEFAULT_CONFIG, &told).unwrap_err().to_string();
        assert!(
            error.contains("[mqtt] max_packet_bytes: at least 327683"),
            "{error}"
        );
        let none = [(
            "PARKLIGHT_MQTT__BROKER_MESSAGE_SIZE_LIMIT".to_owned(),
            "0".to_owned(),
        )];
        let warned = parse(DEFAULT_CONFIG, &none).unwrap().warnings;
        assert!(
            warned
                .iter()
                .any(|w| w.message.contains("no message_size_limit")),
            "{warned:?}"
        );
    }

    #[test]
    fn the_clock_skew_is_no_less_than_nodes_allow_their_clocks() {
        let skew = |value: &str| {
            let set = [(
                "PARKLIGHT_INGEST__CLOCK_SKEW_S".to_owned(),
                value.to_owned(),
            )];
            parse(DEFAULT_CONFIG, &set).map(|loaded| loaded.config.ingest.clock_skew_s)
        };
        assert_eq!(skew("300").unwrap(), 300);
        assert_eq!(skew("3600").unwrap(), 3600);
        // Less: a node 2 minutes fast would never put its clock back, and the gateway
        // would hold every report of it. Far more: the sum with an arrival overflows.
        for refused in ["60", "299", "3601", "18446744073709551615"] {
            let error = skew(refused).unwrap_err().to_string();
            assert!(
                error.contains("[ingest] clock_skew_s: 300 to 3600"),
                "{refused}: {error}"
            );
        }
    }

    #[test]
    fn environment_overrides_keys() {
        let overrides = [
            (
                "PARKLIGHT_MQTT__URL".to_owned(),
                "mqtt://broker.example:1884".to_owned(),
            ),
            (
                "PARKLIGHT_STORAGE__RETENTION_DAYS".to_owned(),
                "90".to_owned(),
            ),
        ];
        let loaded = parse(DEFAULT_CONFIG, &overrides).unwrap();
        assert_eq!(loaded.config.mqtt.url, "mqtt://broker.example:1884");
        assert_eq!(loaded.config.storage.retention_days, 90);
        let unknown = [("PARKLIGHT_MQTT__COLOUR".to_owned(), "blue".to_owned())];
        let err = parse(DEFAULT_CONFIG, &unknown).unwrap_err().to_string();
        assert!(err.contains("colour"), "{err}");
    }

    #[test]
    fn every_problem_is_listed_with_its_line() {
        let text = "[mqtt]\nurl = \"http://nope\"\nkeep_alive_s = 1\n\n[storage]\nretention = 3\n\n[bogus]\nx = 1\n\n[http]\nlisten = \"not an address\"\n\n[[sites]]\nfile = \"missing.geojson\"\n";
        let err = parse(text, &[]).unwrap_err();
        let report = err.to_string();
        for expected in [
            "test.toml:2: [mqtt] url:",
            "test.toml:3: [mqtt] keep_alive_s: 5 to 3600",
            "test.toml:6: [storage]: unknown field `retention`",
            "test.toml:8: unknown section [bogus]",
            "test.toml:12: [http]:",
            "missing.geojson: cannot read",
        ] {
            assert!(
                report.contains(expected),
                "missing {expected:?} in:\n{report}"
            );
        }
        let syntax = parse("[mqtt\nurl = 1", &[]).unwrap_err();
        assert_eq!(syntax.problems[0].line, Some(1));
    }

    #[test]
    fn plain_http_stays_on_loopback_unless_said_so_and_https_needs_a_readable_key() {
        let http = |section: &str| parse(&format!("[http]\n{section}\n"), &[]);
        assert!(http("listen = \"127.0.0.1:8080\"").is_ok());
        assert!(http("listen = \"[::1]:8080\"").is_ok());
        let beyond = http("listen = \"0.0.0.0:8080\"").unwrap_err().to_string();
        assert!(
            beyond.contains("test.toml:2: [http] listen 0.0.0.0:8080: plain HTTP beyond loopback"),
            "{beyond}"
        );
        assert!(http("listen = \"0.0.0.0:8080\"\nplain_http_beyond_loopback = true").is_ok());
        let half = http("tls_cert = \"cert.pem\"").unwrap_err().to_string();
        assert!(
            half.contains("[http] tls_cert and tls_key: both, or neither"),
            "{half}"
        );
        let missing = http("listen = \"0.0.0.0:8443\"\ntls_cert = \"/nonexistent/cert.pem\"\ntls_key = \"/nonexistent/key.pem\"")
            .unwrap_err()
            .to_string();
        assert!(
            missing.contains("[http] tls_cert /nonexistent/cert.pem"),
            "{missing}"
        );
    }

    #[test]
    fn alerts_and_webhooks_that_cannot_work_are_refused_at_their_line() {
        let text = "[mqtt]\nkeep_alive_s = 60\n\n[alerts]\nrollup_s = 60\nrollup_share = 1.5\n\n\
            [[webhooks]]\nname = \"mqtt\"\nurl = \"http://ops.example/hook\"\nkinds = [\"fire\"]\n\
            min_severity = \"urgent\"\n\n[[webhooks]]\nname = \"ok\"\nurl = \"http://127.0.0.1:9/hook\"\n\
            secret_env = \"PARKLIGHT_TEST_UNSET_WEBHOOK_SECRET\"\n";
        let report = parse(text, &[]).unwrap_err().to_string();
        for expected in [
            "test.toml:5: [alerts] rollup_s: at least 1.5x [mqtt] keep_alive_s (90 s)",
            "test.toml:6: [alerts] rollup_share: above 0 and at most 1",
            "[[webhooks]] name \"mqtt\": unique, not \"mqtt\"",
            "[[webhooks]] mqtt: url \"http://ops.example/hook\": https://, or http:// to a loopback address",
            "[[webhooks]] mqtt: secret_env or secret_file",
            "[[webhooks]] mqtt: unknown kind \"fire\"",
            "[[webhooks]] mqtt: min_severity \"urgent\"",
            "[[webhooks]] ok: secret: environment variable PARKLIGHT_TEST_UNSET_WEBHOOK_SECRET is not set",
        ] {
            assert!(
                report.contains(expected),
                "missing {expected:?} in:\n{report}"
            );
        }
        assert!(!report.contains("[[webhooks]] ok: url"), "{report}");
        // The crew's tools need no secret: only the store and the sites.
        let tools = Config::parse(
            "[[webhooks]]\nname = \"ok\"\nurl = \"http://127.0.0.1:9/hook\"\nsecret_env = \"PARKLIGHT_TEST_UNSET_WEBHOOK_SECRET\"\n",
            Path::new("test.toml"),
            Path::new(env!("CARGO_MANIFEST_DIR")),
            &[],
            Secrets::Skip,
        );
        assert!(tools.is_ok(), "{tools:?}");
        // The defaults hold together.
        let loaded = parse(DEFAULT_CONFIG, &[]).unwrap();
        assert_eq!(
            loaded.config.alerts.settings(),
            crate::alert::Settings::default()
        );
    }

    #[test]
    fn secrets_come_from_the_environment_or_a_private_file() {
        assert_eq!(secret(None, None), Err(SecretError::NotConfigured));
        assert_eq!(
            secret(Some("PARKLIGHT_TEST_UNSET_SECRET"), None),
            Err(SecretError::Unset("PARKLIGHT_TEST_UNSET_SECRET".into()))
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "s3cret\n").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert_eq!(
                secret(None, Some(&file)),
                Err(SecretError::TooOpen(file.clone()))
            );
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        assert_eq!(
            secret(Some("PARKLIGHT_TEST_UNSET_SECRET"), Some(&file)).unwrap(),
            "s3cret"
        );
    }
}
