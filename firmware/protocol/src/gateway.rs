//! The gateway's own status on `{prefix}/_gateways/{gateway}` (PROTOCOL.md "Gateway status").

use alloc::string::String;
use alloc::vec::Vec;

use crate::fields::Fields;
use crate::json::Object;
use crate::status::OfflineReason;
use crate::topic::is_identifier;
use crate::{DecodeError, Message, Reject};

/// What a gateway's status topic says.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum GatewayStatus {
    /// Birth.
    Online {
        /// When the gateway started, Unix ms.
        started: u64,
        /// The sites it serves.
        sites: Vec<String>,
    },
    /// Last will (`lost`) or clean stop (`shutdown`).
    Offline {
        /// Why.
        reason: OfflineReason,
    },
}

impl Message for GatewayStatus {
    fn from_object(object: Object<'_>) -> Result<Self, DecodeError> {
        if object.required("state")?.one_of(&["online", "offline"])? == 1 {
            let reason = match object.required("reason")?.one_of(&["lost", "shutdown"])? {
                0 => OfflineReason::Lost,
                _ => OfflineReason::Shutdown,
            };
            return Ok(GatewayStatus::Offline { reason });
        }
        let started = object.required("started")?.u64()?;
        let mut sites = Vec::new();
        for field in object.required("sites")?.elements()? {
            let site: heapless::String<{ crate::topic::MAX_ID_LEN }> =
                field.string(crate::topic::MAX_ID_LEN)?;
            if !is_identifier(&site) {
                return Err(DecodeError::field(Reject::OutOfRange, "sites"));
            }
            sites.push(String::from(site.as_str()));
        }
        Ok(GatewayStatus::Online { started, sites })
    }
}
