//! Events on `.../{node}/event` (PROTOCOL.md "Event").

use serde::ser::{Serialize, SerializeStruct, Serializer};

use crate::fields::{Fields, optional};
use crate::json::Object;
use crate::telemetry::Fault;
use crate::{CommandId, DecodeError, Message, read_command_id};

/// Longest `detail`, in characters.
pub const MAX_DETAIL_CHARS: usize = 200;
/// Free text of at most [`MAX_DETAIL_CHARS`] characters (room for 4-byte characters).
pub type Detail = heapless::String<{ MAX_DETAIL_CHARS * 4 }>;

/// Whether a fault started or ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultState {
    /// The fault started.
    Raised,
    /// The fault ended.
    Cleared,
}

/// What happened, with the fields each kind carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// The lamp does not light when commanded, or lights again.
    LampFault {
        /// Raised or cleared.
        state: FaultState,
    },
    /// The light sensor fails, or works again.
    SensorFault {
        /// Raised or cleared.
        state: FaultState,
    },
    /// The enclosure was opened, or closed.
    Tamper {
        /// Raised or cleared.
        state: FaultState,
    },
    /// The node restarted.
    Reboot,
    /// The node restarted after losing power.
    PowerLoss,
    /// A config or command was applied.
    CommandApplied {
        /// The config's or command's id.
        id: Option<CommandId>,
    },
    /// A config or command was refused; `detail` says why.
    CommandRejected {
        /// The config's or command's id; `None` when it could not be read.
        id: Option<CommandId>,
    },
}

impl EventKind {
    /// The `kind` as PROTOCOL.md spells it.
    pub fn as_str(&self) -> &'static str {
        KINDS[match self {
            EventKind::LampFault { .. } => 0,
            EventKind::SensorFault { .. } => 1,
            EventKind::Tamper { .. } => 2,
            EventKind::Reboot => 3,
            EventKind::PowerLoss => 4,
            EventKind::CommandApplied { .. } => 5,
            EventKind::CommandRejected { .. } => 6,
        }]
    }

    /// The event for a fault changing state.
    pub fn fault(fault: Fault, state: FaultState) -> EventKind {
        match fault {
            Fault::Lamp => EventKind::LampFault { state },
            Fault::Sensor => EventKind::SensorFault { state },
            Fault::Tamper => EventKind::Tamper { state },
        }
    }
}

/// Something that cannot wait for the next report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Boot counter.
    pub boot: u32,
    /// Event counter within the boot.
    pub eseq: u32,
    /// When it happened, Unix ms; 0 without a valid clock.
    pub ts: u64,
    /// What happened.
    pub kind: EventKind,
    /// Free text.
    pub detail: Option<Detail>,
}

const KINDS: [&str; 7] = [
    "lamp_fault",
    "sensor_fault",
    "tamper",
    "reboot",
    "power_loss",
    "command_applied",
    "command_rejected",
];

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut out = s.serialize_struct("Event", 6)?;
        out.serialize_field("boot", &self.boot)?;
        out.serialize_field("eseq", &self.eseq)?;
        out.serialize_field("ts", &self.ts)?;
        out.serialize_field("kind", self.kind.as_str())?;
        match &self.kind {
            EventKind::LampFault { state }
            | EventKind::SensorFault { state }
            | EventKind::Tamper { state } => out.serialize_field("state", state)?,
            EventKind::CommandApplied { id } | EventKind::CommandRejected { id } => {
                out.serialize_field("id", id)?
            }
            EventKind::Reboot | EventKind::PowerLoss => {}
        }
        if let Some(detail) = &self.detail {
            out.serialize_field("detail", detail)?;
        }
        out.end()
    }
}

impl Message for Event {
    fn from_object(object: Object<'_>) -> Result<Self, DecodeError> {
        let object = &crate::json::Table::new(object);
        let boot = object.required("boot")?.u32()?;
        let eseq = object.required("eseq")?.u32()?;
        let ts = object.required("ts")?.u64()?;
        let kind_index = object.required("kind")?.one_of(&KINDS)?;
        let state = || -> Result<FaultState, DecodeError> {
            match object.required("state")?.one_of(&["raised", "cleared"])? {
                0 => Ok(FaultState::Raised),
                _ => Ok(FaultState::Cleared),
            }
        };
        let id = || object.required("id")?.nullable(read_command_id);
        let kind = match kind_index {
            0 => EventKind::LampFault { state: state()? },
            1 => EventKind::SensorFault { state: state()? },
            2 => EventKind::Tamper { state: state()? },
            3 => EventKind::Reboot,
            4 => EventKind::PowerLoss,
            5 => EventKind::CommandApplied { id: id()? },
            _ => EventKind::CommandRejected { id: id()? },
        };
        Ok(Event {
            boot,
            eseq,
            ts,
            kind,
            detail: optional(object, "detail", |f| f.string(MAX_DETAIL_CHARS))?,
        })
    }
}
