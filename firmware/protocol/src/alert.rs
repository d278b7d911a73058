//! Alerts on `{prefix}/{site}/alerts`, published by the gateway (PROTOCOL.md "Alerts").
//!
//! Alerts are not bound by the 1024-byte limit of node messages (a roll-up lists up to
//! 500 children), so they have their own unbounded [`Alert::to_json`] and
//! [`Alert::from_json`] instead of [`crate::Message`].

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use crate::fields::{Field, Fields, optional};
use crate::json::Object;
use crate::topic::is_identifier;
use crate::{DecodeError, EncodeError, Reject, check_version, encode_versioned, unbounded_object};

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

            /// The value spelled `text`.
            pub fn parse(text: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.as_str() == text)
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
        /// Too few of a zone's nodes have a valid reading to judge it.
        ZoneUnobserved = "zone_unobserved",
        /// A node's connection is lost.
        NodeOffline = "node_offline",
        /// A lamp does not light.
        LampFault = "lamp_fault",
        /// A lamp whose light falls steadily over weeks.
        LampDegraded = "lamp_degraded",
        /// A light sensor fails.
        SensorFault = "sensor_fault",
        /// An enclosure is open.
        Tamper = "tamper",
        /// A lamp is on in daylight.
        DayBurner = "day_burner",
        /// A node does not run the config published for it.
        ConfigNotApplied = "config_not_applied",
        /// Most nodes of a site (or of one circuit) lost power at once.
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

/// The most children an alert message lists; `children_count` has the full count.
pub const MAX_CHILDREN: usize = 500;

/// One change of an alert.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Alert {
    /// The alert's id: unique, stable over its lifecycle and URL-safe.
    pub id: String,
    /// The alert's change number: 1 when raised, one more with every change.
    pub rev: u32,
    /// What it is about.
    pub kind: AlertKind,
    /// The site.
    pub site: String,
    /// The zone, if it concerns one.
    pub zone: Option<String>,
    /// The node, if it concerns one.
    pub node: Option<String>,
    /// For the power loss of one circuit, the circuit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub circuit: Option<String>,
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
    /// Who acknowledged or resolved it (absent for automatic changes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// Their note.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Its condition came and went repeatedly.
    pub flapping: bool,
    /// For a roll-up, the nodes it covers (at most [`MAX_CHILDREN`]).
    pub children: Vec<String>,
    /// How many nodes the roll-up covers.
    pub children_count: u32,
}

fn identifier(field: &Field<'_>) -> Result<String, DecodeError> {
    let text = field.owned_string()?;
    if is_identifier(&text) {
        Ok(text)
    } else {
        Err(DecodeError::field(Reject::OutOfRange, field.key()))
    }
}

fn id(field: &Field<'_>) -> Result<String, DecodeError> {
    let text = field.owned_string()?;
    let url_safe = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~');
    if (1..=64).contains(&text.len()) && text.chars().all(url_safe) {
        Ok(text)
    } else {
        Err(DecodeError::field(Reject::OutOfRange, field.key()))
    }
}

impl Alert {
    /// The message as JSON with `"v":1` first, of any length.
    pub fn to_json(&self) -> Result<Vec<u8>, EncodeError> {
        let mut buf = vec![0u8; 1024];
        loop {
            match encode_versioned(self, &mut buf) {
                Ok(len) => {
                    buf.truncate(len);
                    return Ok(buf);
                }
                // Doubling from 1 KiB reaches any real alert in a few steps.
                Err(_) if buf.len() < 1 << 24 => buf.resize(buf.len() * 2, 0),
                Err(error) => return Err(error),
            }
        }
    }

    /// Decodes a message strictly (PROTOCOL.md's checks but the size bound).
    pub fn from_json(payload: &[u8]) -> Result<Alert, DecodeError> {
        let object = unbounded_object(payload)?;
        check_version(object)?;
        Alert::from_object(object)
    }

    fn from_object(object: Object<'_>) -> Result<Self, DecodeError> {
        let children: Vec<String> = object
            .required("children")?
            .elements()?
            .map(|f| identifier(&f))
            .collect::<Result<_, _>>()?;
        if children.len() > MAX_CHILDREN {
            return Err(DecodeError::field(Reject::OutOfRange, "children"));
        }
        let children_count = object.required("children_count")?.u32()?;
        if (children_count as usize) < children.len() {
            return Err(DecodeError::field(Reject::OutOfRange, "children_count"));
        }
        let rev = object.required("rev")?.u32()?;
        if rev == 0 {
            return Err(DecodeError::field(Reject::OutOfRange, "rev"));
        }
        Ok(Alert {
            id: id(&object.required("id")?)?,
            rev,
            kind: AlertKind::read(&object.required("kind")?)?,
            site: identifier(&object.required("site")?)?,
            zone: object.required("zone")?.nullable(identifier)?,
            node: object.required("node")?.nullable(identifier)?,
            circuit: optional(object, "circuit", |f| f.nullable(identifier))?.flatten(),
            state: AlertState::read(&object.required("state")?)?,
            severity: Severity::read(&object.required("severity")?)?,
            since: object.required("since")?.u64()?,
            ts: object.required("ts")?.u64()?,
            detail: object.required("detail")?.owned_string()?,
            by: optional(object, "by", |f| f.nullable(Field::owned_string))?.flatten(),
            note: optional(object, "note", |f| f.nullable(Field::owned_string))?.flatten(),
            flapping: optional(object, "flapping", Field::bool)?.unwrap_or(false),
            children,
            children_count,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_protocol_example_decodes_and_encodes_back() {
        let text = br#"{"v":1,"id":"a-8f2c","rev":3,"kind":"dark_zone","site":"remiseparken","zone":"skatepark","node":null,
 "state":"acknowledged","severity":"high","since":1764093600000,"ts":1764093660000,
 "detail":"avg 0.8 lx < required 5.0 lx (P4) with 14 detections in the last 5 min",
 "by":"crew-east","note":"on our way","flapping":false,"children":[],"children_count":0}"#;
        let alert = Alert::from_json(text).unwrap();
        assert_eq!(alert.rev, 3);
        assert_eq!(alert.by.as_deref(), Some("crew-east"));
        assert_eq!(alert.circuit, None);
        let again = Alert::from_json(&alert.to_json().unwrap()).unwrap();
        assert_eq!(again, alert);
    }

    #[test]
    fn a_roll_up_of_500_children_is_longer_than_a_node_message_and_round_trips() {
        let children: Vec<String> = (0..MAX_CHILDREN)
            .map(|i| alloc::format!("pole-{i:03}"))
            .collect();
        let alert = Alert {
            id: "a-1".into(),
            rev: 1,
            kind: AlertKind::SitePowerLoss,
            site: "remiseparken".into(),
            zone: None,
            node: None,
            circuit: Some("north".into()),
            state: AlertState::Raised,
            severity: Severity::Critical,
            since: 1,
            ts: 2,
            detail: "power loss".into(),
            by: None,
            note: None,
            flapping: false,
            children,
            children_count: 612,
        };
        let json = alert.to_json().unwrap();
        assert!(json.len() > crate::MAX_PAYLOAD);
        assert!(json.starts_with(br#"{"v":1,"id":"a-1","rev":1,"#));
        assert_eq!(Alert::from_json(&json).unwrap(), alert);
    }

    #[test]
    fn bad_alerts_are_refused_naming_the_field() {
        let good = r#"{"v":1,"id":"a-1","rev":1,"kind":"tamper","site":"s","zone":null,"node":"n","state":"raised","severity":"high","since":1,"ts":1,"detail":"","children":[],"children_count":0}"#;
        assert!(Alert::from_json(good.as_bytes()).is_ok());
        for (from, to, field) in [
            (r#""rev":1"#, r#""rev":0"#, "rev"),
            (r#""id":"a-1""#, r#""id":"a/1""#, "id"),
            (r#""kind":"tamper""#, r#""kind":"fire""#, "kind"),
            (
                r#""children_count":0"#,
                r#""children_count":-1"#,
                "children_count",
            ),
            (r#""children":[]"#, r#""children":["a b"]"#, "children"),
            (r#""site":"s""#, r#""site":"S!""#, "site"),
        ] {
            let bad = good.replace(from, to);
            let error = Alert::from_json(bad.as_bytes()).unwrap_err();
            assert_eq!(error.field, Some(field), "{bad}: {error}");
        }
    }
}
