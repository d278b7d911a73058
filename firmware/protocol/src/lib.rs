//! The parklight wire contract of `shared/PROTOCOL.md`, version 1.
//!
//! `#![no_std]` and allocation-free, so the firmware and the gateway share one decoder.
//!
//! - [`topic`]: topic building and parsing with the identifier rules.
//! - [`json`]: a strict JSON reader (duplicate keys, integer/float types, depth bound).
//! - [`fields`]: typed field access that names the field in every error.
//! - [`telemetry`], [`status`], [`event`], [`config`], [`command`], [`ack`]: the messages
//!   between nodes and the gateway; [`alert`] and [`gateway`] (feature `alloc`) the ones
//!   only std peers exchange.
//! - [`Reject`]: the reject codes, one variant per code.
//!
//! Decoding checks in PROTOCOL.md's order: topic, size, UTF-8, depth, JSON, fields.
//! [`decode_uplink`] does all of it for what a node publishes; each message type
//! implements [`Message`] for its payload alone.
//!
//! ```
//! use parklight_protocol::{decode_uplink, Uplink, DEFAULT_PREFIX};
//! let payload = br#"{"v":1,"boot":7,"seq":1042,"ts":1764093600000,"period_s":60,
//!   "lux":{"avg":6.4,"min":5.9,"max":7.1},"motion":3,"lamp":{"on":true,"level":80}}"#;
//! let uplink = decode_uplink(DEFAULT_PREFIX, "parklight/v1/remiseparken/pole-017/telemetry", payload)?;
//! assert!(matches!(uplink.message, Uplink::Telemetry(t) if t.seq == 1042));
//! # Ok::<(), parklight_protocol::DecodeError>(())
//! ```
#![no_std]
#![deny(missing_docs)]

#[cfg(feature = "alloc")]
extern crate alloc;

pub mod ack;
#[cfg(feature = "alloc")]
pub mod alert;
pub mod command;
pub mod config;
pub mod event;
pub mod fields;
#[cfg(feature = "alloc")]
pub mod gateway;
pub mod json;
mod reject;
pub mod status;
pub mod telemetry;
pub mod topic;

pub use ack::Ack;
pub use command::Command;
pub use config::Config;
pub use event::{Event, EventKind};
pub use reject::{DecodeError, Reject};
pub use status::Status;
pub use telemetry::{Faults, Lamp, Lux, ReportId, Telemetry};
pub use topic::{DEFAULT_PREFIX, Id, NodeTopic, TopicBuf};

use fields::Fields;
use json::{Object, Value};

/// Largest payload in bytes; longer is [`Reject::TooLong`].
pub const MAX_PAYLOAD: usize = 1024;
/// Deepest nesting; the top-level object is level 1.
pub const MAX_DEPTH: usize = 8;
/// The schema version this crate speaks.
pub const VERSION: u64 = 1;
/// The earliest time a valid clock reads, Unix ms: 2020-01-01 (PROTOCOL.md clock rules).
pub const EARLIEST_VALID_TS: i64 = 1_577_836_800_000;

/// The id of a config or command (`"c-3"`, `"o-17"`): 1 to 64 characters.
pub type CommandId = heapless::String<64>;
/// The longest `id` of a config or command, in characters.
pub const MAX_COMMAND_ID: usize = 64;

/// A payload buffer of the largest allowed size.
pub type PayloadBuf = heapless::Vec<u8, MAX_PAYLOAD>;

/// Why a message could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    /// The encoded message does not fit the buffer or [`MAX_PAYLOAD`].
    TooLong,
}

impl core::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("encoded message is longer than the buffer or 1024 bytes")
    }
}

impl core::error::Error for EncodeError {}

/// A message of PROTOCOL.md: decoded from and encoded to a JSON payload with `"v":1`.
pub trait Message: Sized + serde::Serialize {
    /// Reads the message from the fields of its top-level object (`v` already checked).
    fn from_object(object: Object<'_>) -> Result<Self, DecodeError>;

    /// Decodes a payload, checking size, UTF-8, depth, JSON, version and fields in order.
    fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        let object = payload_object(payload)?;
        check_version(object)?;
        Self::from_object(object)
    }

    /// Encodes the message into `buf` with `"v":1` first; returns the length written.
    fn encode(&self, buf: &mut [u8]) -> Result<usize, EncodeError> {
        let len = encode_versioned(self, buf)?;
        if len > MAX_PAYLOAD {
            return Err(EncodeError::TooLong);
        }
        Ok(len)
    }

    /// Encodes into a new [`PayloadBuf`].
    fn to_payload(&self) -> Result<PayloadBuf, EncodeError> {
        let mut buf = [0u8; MAX_PAYLOAD];
        let len = self.encode(&mut buf)?;
        PayloadBuf::from_slice(&buf[..len]).map_err(|_| EncodeError::TooLong)
    }
}

/// Encodes `value` into `buf` with `"v":1` first, whatever its length; returns the length
/// written.
pub fn encode_versioned<T: serde::Serialize>(
    value: &T,
    buf: &mut [u8],
) -> Result<usize, EncodeError> {
    // The value serializes as `{...}`; it is written after room for `{"v":1` and its
    // opening brace becomes the comma that joins the two.
    const HEAD: &[u8] = b"{\"v\":1";
    let body = buf.get_mut(HEAD.len()..).ok_or(EncodeError::TooLong)?;
    let body_len = serde_json_core::to_slice(value, body).map_err(|_| EncodeError::TooLong)?;
    let len = if body_len == 2 {
        HEAD.len() + 1
    } else {
        buf[HEAD.len()] = b',';
        HEAD.len() + body_len
    };
    buf[..HEAD.len()].copy_from_slice(HEAD);
    buf[len - 1] = b'}';
    Ok(len)
}

/// Checks size, UTF-8, depth and JSON, and returns the top-level object.
pub fn payload_object(payload: &[u8]) -> Result<Object<'_>, DecodeError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(Reject::TooLong.into());
    }
    unbounded_object(payload)
}

/// Checks UTF-8, depth and JSON, and returns the top-level object, of any size (for the
/// messages only std peers exchange).
pub fn unbounded_object(payload: &[u8]) -> Result<Object<'_>, DecodeError> {
    let text = core::str::from_utf8(payload).map_err(|_| Reject::NotUtf8)?;
    if json::exceeds_depth(payload, MAX_DEPTH) {
        return Err(Reject::TooDeep.into());
    }
    match json::parse(text)? {
        Value::Object(object) => Ok(object),
        _ => Err(Reject::NotObject.into()),
    }
}

/// Checks `"v":1`: absent is a missing field, a non-integer a wrong type, any other
/// integer an unknown version.
pub fn check_version(object: Object<'_>) -> Result<(), DecodeError> {
    let v = object.required("v")?;
    match v.u64() {
        Ok(VERSION) => Ok(()),
        Err(e) if e.reason == Reject::WrongType => Err(e),
        _ => Err(DecodeError::field(Reject::UnknownVersion, "v")),
    }
}

/// What a node publishes, decoded.
// Without an allocator there is nothing to box into; a decoded message is short-lived.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Uplink {
    /// A report.
    Telemetry(Telemetry),
    /// Birth, will or shutdown.
    Status(Status),
    /// A fault change or a command answer.
    Event(Event),
}

/// A decoded uplink message with the identifiers from its topic.
#[derive(Debug, Clone, PartialEq)]
pub struct UplinkMessage<'t> {
    /// The site id from the topic.
    pub site: &'t str,
    /// The node id from the topic.
    pub node: &'t str,
    /// The message.
    pub message: Uplink,
}

/// Decodes a message a node published, checking the topic first.
pub fn decode_uplink<'t>(
    prefix: &str,
    topic: &'t str,
    payload: &[u8],
) -> Result<UplinkMessage<'t>, DecodeError> {
    let parsed = topic::parse_node_topic(prefix, topic)?;
    let message = match parsed.kind {
        NodeTopic::Telemetry => Uplink::Telemetry(Telemetry::decode(payload)?),
        NodeTopic::Status => Uplink::Status(Status::decode(payload)?),
        NodeTopic::Event => Uplink::Event(Event::decode(payload)?),
        NodeTopic::Config | NodeTopic::Cmd | NodeTopic::Ack => {
            return Err(Reject::BadTopic.into());
        }
    };
    Ok(UplinkMessage {
        site: parsed.site,
        node: parsed.node,
        message,
    })
}

/// The `(boot, seq)` of a report that was rejected, when they can still be read: a
/// rejected report with a readable identity still counts as handled (PROTOCOL.md).
pub fn salvage_report_id(payload: &[u8]) -> Option<ReportId> {
    let object = payload_object(payload).ok()?;
    Some(ReportId {
        boot: object.optional("boot")?.u32().ok()?,
        seq: object.optional("seq")?.u32().ok()?,
    })
}

/// The `id` of a config or command that was rejected, when it can still be read, so the
/// answer can name it.
pub fn salvage_command_id(payload: &[u8]) -> Option<CommandId> {
    let object = payload_object(payload).ok()?;
    read_command_id(&object.optional("id")?).ok()
}

/// Reads an `id` field: a string of 1 to [`MAX_COMMAND_ID`] characters.
pub(crate) fn read_command_id(field: &fields::Field<'_>) -> Result<CommandId, DecodeError> {
    let id: CommandId = field.string(MAX_COMMAND_ID)?;
    if id.is_empty() {
        return Err(DecodeError::field(Reject::OutOfRange, field.key()));
    }
    Ok(id)
}

/// What the gateway sends a node, decoded.
#[allow(clippy::large_enum_variant)] // as for `Uplink`
#[derive(Debug, Clone, PartialEq)]
pub enum Downlink {
    /// Desired configuration.
    Config(Config),
    /// A short-lived command.
    Command(Command),
    /// Stored-acknowledgement.
    Ack(Ack),
}

/// Decodes a message for a node by the kind of topic it arrived on.
pub fn decode_downlink(kind: NodeTopic, payload: &[u8]) -> Result<Downlink, DecodeError> {
    match kind {
        NodeTopic::Config => Config::decode(payload).map(Downlink::Config),
        NodeTopic::Cmd => Command::decode(payload).map(Downlink::Command),
        NodeTopic::Ack => Ack::decode(payload).map(Downlink::Ack),
        NodeTopic::Telemetry | NodeTopic::Status | NodeTopic::Event => Err(Reject::BadTopic.into()),
    }
}
