//! A virtual node's non-volatile memory: one JSON file per node, like a real node's flash.
//!
//! The file holds the boot counter, the running config and the buffered reports, each
//! message in its wire form, and the lamp's learned contribution to its own light
//! reading; it is replaced atomically (write, then rename).

use std::io;
use std::path::{Path, PathBuf};

use parklight_core::{NonVolatile, Persist, Restored};
use parklight_protocol::{Config, Message, Telemetry};
use serde_json::Value;

use crate::SIM_BUFFER;

/// One node's state file.
#[derive(Debug, Clone)]
pub struct NodeFile {
    path: PathBuf,
}

impl NodeFile {
    /// The file of `node` of `site` under `dir`.
    pub fn new(dir: &Path, site: &str, node: &str) -> Self {
        NodeFile {
            path: dir.join(site).join(format!("{node}.json")),
        }
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn invalid(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

impl NonVolatile<SIM_BUFFER> for NodeFile {
    type Error = io::Error;

    fn load(&mut self) -> io::Result<Restored<SIM_BUFFER>> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Restored::default()),
            Err(e) => return Err(e),
        };
        let doc: Value = serde_json::from_str(&text).map_err(invalid)?;
        let boot = doc
            .get("boot")
            .and_then(Value::as_u64)
            .and_then(|b| u32::try_from(b).ok())
            .ok_or_else(|| invalid("no boot counter"))?;
        let config = match doc.get("config") {
            None | Some(Value::Null) => None,
            Some(config) => Some(Config::decode(config.to_string().as_bytes()).map_err(invalid)?),
        };
        let mut reports = heapless::Vec::new();
        for report in doc
            .get("reports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let report = Telemetry::decode(report.to_string().as_bytes()).map_err(invalid)?;
            if reports.push(report).is_err() {
                break;
            }
        }
        Ok(Restored {
            boot,
            config,
            reports,
            lamp_lux_per_level: doc.get("lamp_lux_per_level").and_then(Value::as_f64),
        })
    }

    fn save(&mut self, _what: Persist, node: &parklight_core::Node<SIM_BUFFER>) -> io::Result<()> {
        let encode = |message: &dyn Fn() -> Result<
            parklight_protocol::PayloadBuf,
            parklight_protocol::EncodeError,
        >| {
            message()
                .map_err(invalid)
                .map(|p| String::from_utf8_lossy(&p).into_owned())
        };
        let config = match node.config() {
            Some(config) => encode(&|| config.to_payload())?,
            None => "null".to_owned(),
        };
        let reports = node
            .buffered_reports()
            .map(|report| encode(&|| report.to_payload()))
            .collect::<io::Result<Vec<_>>>()?;
        let lamp_lux = serde_json::to_string(&node.lamp_lux_per_level()).map_err(invalid)?;
        let text = format!(
            "{{\"boot\":{},\"config\":{config},\"lamp_lux_per_level\":{lamp_lux},\"reports\":[{}]}}\n",
            node.boot(),
            reports.join(",\n")
        );
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let temporary = self.path.with_extension("json.tmp");
        std::fs::write(&temporary, text)?;
        std::fs::rename(&temporary, &self.path)
    }
}

/// The default state folder: `$XDG_STATE_HOME/parklight/sim`, else
/// `~/.local/state/parklight/sim`, else `./parklight-sim-state`.
pub fn default_state_dir() -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/state")));
    match base {
        Some(base) => base.join("parklight/sim"),
        None => PathBuf::from("parklight-sim-state"),
    }
}

#[cfg(test)]
mod tests {
    use parklight_core::{Action, Identity, Node, Now, Settings};
    use parklight_protocol::{DEFAULT_PREFIX, Id};

    use super::*;

    fn start(restored: Restored<SIM_BUFFER>) -> Box<Node<SIM_BUFFER>> {
        let identity = Identity {
            prefix: heapless::String::try_from(DEFAULT_PREFIX).unwrap(),
            site: Id::new("site").unwrap(),
            node: Id::new("pole-1").unwrap(),
        };
        let now = Now {
            up_ms: 0,
            net_ms: 0,
        };
        Box::new(Node::start(
            identity,
            Settings::default(),
            restored,
            false,
            now,
            &mut |_: Action<'_>| {},
        ))
    }

    #[test]
    fn the_lamp_contribution_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = NodeFile::new(dir.path(), "site", "pole-1");
        assert_eq!(file.load().unwrap(), Restored::default(), "a new node");
        let node = start(Restored {
            boot: 3,
            lamp_lux_per_level: Some(0.45),
            ..Restored::default()
        });
        file.save(Persist::LampLux, &node).unwrap();
        let restored = file.load().unwrap();
        assert_eq!(
            (restored.boot, restored.lamp_lux_per_level),
            (4, Some(0.45))
        );
        // A file written before the field existed still loads.
        std::fs::write(file.path(), r#"{"boot":9,"config":null,"reports":[]}"#).unwrap();
        assert_eq!(file.load().unwrap().lamp_lux_per_level, None);
    }
}
