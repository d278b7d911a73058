//! Alerts on `{prefix}/{site}/alerts`, published by the gateway (PROTOCOL.md "Alerts").

use alloc::string::String;
use alloc::vec::Vec;

use crate::fields::{Field, Fields};
use crate::json::Object;
use crate::topic::is_identifier;
use crate::{DecodeError, Message, Reject};

macro_rules! wire_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
        pub enum $name {
            $($(#[$vdoc])* #[serde(rename = $text)] $variant,)+
        }

        impl $name {
            /// Every value, in PROTOCOL.md's order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The value as PROTOCOL.md spells it.
            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text,)+ }
            }

            fn read(field: &Field<'_>) -> Result<Self, DecodeError> {
                let names: Vec<&str> = Self::ALL.iter().map(|v| v.as_str()).collect();
                Ok(Self::ALL[field.one_of(&names)?])
            }
        }
    };
}

wire_enum!(
    /// What an alert is about.
    AlertKind {
        /// A zone is below its lighting class while it is dark outside.
        DarkZone = "dark_zone",
        /// No node reports light for a zone.
        ZoneUnobserved = "zone_unobserved",
        /// A node's connection is lost.
        NodeOffline = "node_offline",
        /// A lamp does not light.
        LampFault = "lamp_fault",
        /// A light sensor fails.
        SensorFault = "sensor_fault",
        /// A lamp is on in daylight.
        DayBurner = "day_burner",
        /// A whole site lost power.
        SitePowerLoss = "site_power_loss",
    }
);

wire_enum!(
    /// Where an alert is in its lifecycle.
    AlertState {
        /// Raised.
        Raised = "raised",
        /// Acknowledged by a crew.
        Acknowledged = "acknowledged",
        /// Resolved.
        Resolved = "resolved",
    }
);

wire_enum!(
    /// How urgent an alert is.
    Severity {
        /// Low.
        Low = "low",
        /// Medium.
        Medium = "medium",
        /// High.
        High = "high",
        /// Critical.
        Critical = "critical",
    }
);

/// One change of an alert.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Alert {
    /// The alert's id, stable over its lifecycle.
    pub id: String,
    /// What it is about.
    pub kind: AlertKind,
    /// The site.
    pub site: String,
    /// The zone, if it concerns one.
    pub zone: Option<String>,
    /// The node, if it concerns one.
    pub node: Option<String>,
    /// Lifecycle state.
    pub state: AlertState,
    /// Urgency.
    pub severity: Severity,
    /// When the condition began, Unix ms.
    pub since: u64,
    /// When this change happened, Unix ms.
    pub ts: u64,
    /// Human-readable explanation.
    pub detail: String,
    /// For a roll-up, the nodes it covers.
    pub children: Vec<String>,
}

fn owned(field: &Field<'_>) -> Result<String, DecodeError> {
    let text: heapless::String<{ crate::MAX_PAYLOAD }> = field.string(crate::MAX_PAYLOAD)?;
    Ok(String::from(text.as_str()))
}

fn identifier(field: &Field<'_>) -> Result<String, DecodeError> {
    let text = owned(field)?;
    if is_identifier(&text) {
        Ok(text)
    } else {
        Err(DecodeError::field(Reject::OutOfRange, field.key()))
    }
}

impl Message for Alert {
    fn from_object(object: Object<'_>) -> Result<Self, DecodeError> {
        Ok(Alert {
            id: owned(&object.required("id")?)?,
            kind: AlertKind::read(&object.required("kind")?)?,
            site: identifier(&object.required("site")?)?,
            zone: object.required("zone")?.nullable(identifier)?,
            node: object.required("node")?.nullable(identifier)?,
            state: AlertState::read(&object.required("state")?)?,
            severity: Severity::read(&object.required("severity")?)?,
            since: object.required("since")?.u64()?,
            ts: object.required("ts")?.u64()?,
            detail: owned(&object.required("detail")?)?,
            children: object
                .required("children")?
                .elements()?
                .map(|f| identifier(&f))
                .collect::<Result<_, _>>()?,
        })
    }
}
