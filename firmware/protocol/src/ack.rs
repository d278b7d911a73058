//! Stored-acknowledgement on `.../{node}/ack` (PROTOCOL.md "Stored acknowledgement").

use crate::fields::Fields;
use crate::json::Object;
use crate::telemetry::ReportId;
use crate::{DecodeError, Message};

/// Every report of `boot` with seq up to and including `seq` is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Ack {
    /// The boot this acknowledgement covers.
    pub boot: u32,
    /// Highest seq of that boot up to which every report is handled.
    pub seq: u32,
    /// The gateway's clock, Unix ms.
    pub now: u64,
}

impl Ack {
    /// True when this acknowledgement covers report `id`.
    pub fn covers(&self, id: ReportId) -> bool {
        id.boot == self.boot && id.seq <= self.seq
    }
}

impl Message for Ack {
    fn from_object(object: Object<'_>) -> Result<Self, DecodeError> {
        Ok(Ack {
            boot: object.required("boot")?.u32()?,
            seq: object.required("seq")?.u32()?,
            now: object.required("now")?.u64()?,
        })
    }
}
