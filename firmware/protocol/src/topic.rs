//! Topics of PROTOCOL.md: building them and parsing them with the identifier rules.

use core::fmt::{self, Write};

use crate::Reject;

/// The default topic prefix; configurable on both sides.
pub const DEFAULT_PREFIX: &str = "parklight/v1";

/// The topic level under the prefix that holds gateway status (never a site id).
pub const GATEWAYS_LEVEL: &str = "_gateways";

/// Room for any topic this crate builds (a prefix of up to 100 bytes plus two identifiers).
pub type TopicBuf = heapless::String<256>;

/// Longest identifier: `^[a-z0-9][a-z0-9_-]{0,62}$`.
pub const MAX_ID_LEN: usize = 63;

/// True when `s` matches `^[a-z0-9][a-z0-9_-]{0,62}$`, the rule for site and node ids.
pub fn is_identifier(s: &str) -> bool {
    let bytes = s.as_bytes();
    match bytes.first() {
        Some(first) if first.is_ascii_lowercase() || first.is_ascii_digit() => {}
        _ => return false,
    }
    bytes.len() <= MAX_ID_LEN
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_' || *b == b'-')
}

/// A site or node identifier that satisfies [`is_identifier`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Id(heapless::String<MAX_ID_LEN>);

impl Id {
    /// Checks and copies an identifier.
    pub fn new(s: &str) -> Result<Id, Reject> {
        if !is_identifier(s) {
            return Err(Reject::BadTopic);
        }
        let mut id = heapless::String::new();
        id.push_str(s).map_err(|_| Reject::BadTopic)?;
        Ok(Id(id))
    }

    /// The identifier text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for Id {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// The last level of a per-node topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeTopic {
    /// `telemetry`: node → gateway reports.
    Telemetry,
    /// `status`: birth, will and shutdown (retained).
    Status,
    /// `event`: faults and command answers.
    Event,
    /// `config`: the node's desired configuration (retained).
    Config,
    /// `cmd`: short-lived commands.
    Cmd,
    /// `ack`: the gateway's stored-acknowledgement (retained).
    Ack,
}

impl NodeTopic {
    /// Every per-node topic kind.
    pub const ALL: [NodeTopic; 6] = [
        NodeTopic::Telemetry,
        NodeTopic::Status,
        NodeTopic::Event,
        NodeTopic::Config,
        NodeTopic::Cmd,
        NodeTopic::Ack,
    ];

    /// The topic level as PROTOCOL.md spells it.
    pub const fn as_str(self) -> &'static str {
        match self {
            NodeTopic::Telemetry => "telemetry",
            NodeTopic::Status => "status",
            NodeTopic::Event => "event",
            NodeTopic::Config => "config",
            NodeTopic::Cmd => "cmd",
            NodeTopic::Ack => "ack",
        }
    }

    /// True for the topics a node publishes and the gateway reads.
    pub const fn is_uplink(self) -> bool {
        matches!(
            self,
            NodeTopic::Telemetry | NodeTopic::Status | NodeTopic::Event
        )
    }
}

/// A parsed per-node topic, borrowing its identifiers from the topic text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedTopic<'a> {
    /// The site id.
    pub site: &'a str,
    /// The node id.
    pub node: &'a str,
    /// Which of the node's topics it is.
    pub kind: NodeTopic,
}

/// Parses `{prefix}/{site}/{node}/{kind}`; anything else is [`Reject::BadTopic`].
pub fn parse_node_topic<'a>(prefix: &str, topic: &'a str) -> Result<ParsedTopic<'a>, Reject> {
    let rest = topic
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('/'))
        .ok_or(Reject::BadTopic)?;
    let mut levels = rest.split('/');
    let (Some(site), Some(node), Some(kind), None) =
        (levels.next(), levels.next(), levels.next(), levels.next())
    else {
        return Err(Reject::BadTopic);
    };
    if !is_identifier(site) || !is_identifier(node) {
        return Err(Reject::BadTopic);
    }
    let kind = NodeTopic::ALL
        .into_iter()
        .find(|k| k.as_str() == kind)
        .ok_or(Reject::BadTopic)?;
    Ok(ParsedTopic { site, node, kind })
}

/// Builds `{prefix}/{site}/{node}/{kind}`.
pub fn node_topic(
    prefix: &str,
    site: &str,
    node: &str,
    kind: NodeTopic,
) -> Result<TopicBuf, fmt::Error> {
    let mut topic = TopicBuf::new();
    write!(topic, "{prefix}/{site}/{node}/{}", kind.as_str())?;
    Ok(topic)
}

/// Builds `{prefix}/{site}/alerts`.
pub fn alerts_topic(prefix: &str, site: &str) -> Result<TopicBuf, fmt::Error> {
    let mut topic = TopicBuf::new();
    write!(topic, "{prefix}/{site}/alerts")?;
    Ok(topic)
}

/// Builds `{prefix}/_gateways/{gateway}`.
pub fn gateway_topic(prefix: &str, gateway: &str) -> Result<TopicBuf, fmt::Error> {
    let mut topic = TopicBuf::new();
    write!(topic, "{prefix}/{GATEWAYS_LEVEL}/{gateway}")?;
    Ok(topic)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifier_rule() {
        assert!(is_identifier("pole-017"));
        assert!(is_identifier("0"));
        assert!(is_identifier(&"a".repeat(63)));
        assert!(!is_identifier(&"a".repeat(64)));
        for bad in ["", "-a", "_a", "Pole", "a.b", "a/b", "+", "#", "..", "æ"] {
            assert!(!is_identifier(bad), "{bad}");
        }
    }

    #[test]
    fn round_trip_and_refusals() {
        let topic = node_topic(DEFAULT_PREFIX, "remiseparken", "pole-017", NodeTopic::Ack).unwrap();
        assert_eq!(topic, "parklight/v1/remiseparken/pole-017/ack");
        let parsed = parse_node_topic(DEFAULT_PREFIX, &topic).unwrap();
        assert_eq!(
            (parsed.site, parsed.node, parsed.kind),
            ("remiseparken", "pole-017", NodeTopic::Ack)
        );
        for bad in [
            "parklight/v1/remiseparken/pole-017",
            "parklight/v1/remiseparken/pole-017/telemetry/x",
            "parklight/v2/remiseparken/pole-017/telemetry",
            "parklight/v1remiseparken/pole-017/telemetry",
            "parklight/v1/_gateways/gw",
            "parklight/v1/remiseparken/pole-017/alerts",
            "parklight/v1/+/pole-017/telemetry",
        ] {
            assert_eq!(
                parse_node_topic(DEFAULT_PREFIX, bad),
                Err(Reject::BadTopic),
                "{bad}"
            );
        }
        assert_eq!(gateway_topic("p", "gw").unwrap(), "p/_gateways/gw");
        assert_eq!(alerts_topic("p", "s").unwrap(), "p/s/alerts");
    }
}
