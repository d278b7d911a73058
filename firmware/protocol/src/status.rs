//! Status: birth, last will and shutdown on `.../{node}/status` (PROTOCOL.md "Status").

use crate::fields::{Fields, optional};
use crate::json::Object;
use crate::telemetry::ReportId;
use crate::{DecodeError, Message};

/// Firmware version text, at most 32 bytes.
pub type FirmwareVersion = heapless::String<32>;

/// What a node's status topic says.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum Status {
    /// Birth, published retained on every connect.
    Online(Birth),
    /// The last will (`lost`) or a clean stop (`shutdown`).
    Offline(Offline),
}

/// A node's birth message.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Birth {
    /// Boot counter.
    pub boot: u32,
    /// Connections within this boot: 1, 2, ...
    pub conn: u32,
    /// Firmware version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fw: Option<FirmwareVersion>,
    /// Report interval in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval_s: Option<u16>,
    /// Version of the config the node runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cfg: Option<u32>,
    /// First report not yet acknowledged (or the next one when none is held).
    pub oldest: ReportId,
    /// Reports held unacknowledged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buffered: Option<u32>,
    /// Reports dropped unacknowledged since boot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropped: Option<u32>,
}

/// Why a node is offline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OfflineReason {
    /// The broker published the last will: the connection died.
    Lost,
    /// The node stopped on purpose.
    Shutdown,
}

/// A node's offline status.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Offline {
    /// Lost or shut down.
    pub reason: OfflineReason,
    /// Boot of the connection that ended.
    pub boot: u32,
    /// Which connection of that boot ended.
    pub conn: u32,
}

impl Message for Status {
    fn from_object(object: Object<'_>) -> Result<Self, DecodeError> {
        let object = &crate::json::Table::new(object);
        let online = object.required("state")?.one_of(&["online", "offline"])? == 0;
        let boot = object.required("boot")?.u32()?;
        let conn = object.required("conn")?.u32()?;
        if !online {
            let reason = match object.required("reason")?.one_of(&["lost", "shutdown"])? {
                0 => OfflineReason::Lost,
                _ => OfflineReason::Shutdown,
            };
            return Ok(Status::Offline(Offline { reason, boot, conn }));
        }
        Ok(Status::Online(Birth {
            boot,
            conn,
            fw: optional(object, "fw", |f| f.string(32))?,
            interval_s: optional(object, "interval_s", |f| f.u16_in(1..=3600))?,
            cfg: optional(object, "cfg", |f| f.u32())?,
            oldest: ReportId::read(object.required("oldest")?.object()?)?,
            buffered: optional(object, "buffered", |f| f.u32())?,
            dropped: optional(object, "dropped", |f| f.u32())?,
        }))
    }
}
