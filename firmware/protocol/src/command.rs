//! Short-lived commands on `.../{node}/cmd` (PROTOCOL.md "Command").

use crate::fields::Fields;
use crate::json::Object;
use crate::{CommandId, DecodeError, Message, read_command_id};

/// A command to a node, tagged by `cmd`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// Hold the lamp at `level` until `until` (Unix ms), then return to the profile.
    Override {
        /// The id the node's answer names.
        id: CommandId,
        /// Level in percent.
        level: u8,
        /// End of the override, Unix ms.
        until: u64,
    },
}

impl Command {
    /// The id the node's answer names.
    pub fn id(&self) -> &CommandId {
        match self {
            Command::Override { id, .. } => id,
        }
    }
}

impl Message for Command {
    fn from_object(object: Object<'_>) -> Result<Self, DecodeError> {
        let id = read_command_id(&object.required("id")?)?;
        object.required("cmd")?.one_of(&["override"])?;
        Ok(Command::Override {
            id,
            level: object.required("level")?.percent()?,
            until: object.required("until")?.u64()?,
        })
    }
}
