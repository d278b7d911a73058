//! Why a message was refused: the reject codes of PROTOCOL.md "Reject reasons".

use core::fmt;

/// One reject code of PROTOCOL.md, in the order a decoder checks them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reject {
    /// The topic is not one of the protocol's topics, or an identifier in it is invalid.
    BadTopic,
    /// The payload is longer than [`crate::MAX_PAYLOAD`] bytes.
    TooLong,
    /// The payload is not UTF-8.
    NotUtf8,
    /// Brackets nest deeper than [`crate::MAX_DEPTH`] levels.
    TooDeep,
    /// The payload is not a JSON document.
    NotJson,
    /// The document is JSON but not an object.
    NotObject,
    /// An object names the same key twice.
    DuplicateKey,
    /// `v` is not a version this decoder knows.
    UnknownVersion,
    /// A required field is absent.
    MissingField,
    /// A field has the wrong JSON type.
    WrongType,
    /// A field has the right type but a value outside its range.
    OutOfRange,
    /// Fields contradict each other.
    Inconsistent,
}

impl Reject {
    /// Every code, in the order a decoder checks them.
    pub const ALL: [Reject; 12] = [
        Reject::BadTopic,
        Reject::TooLong,
        Reject::NotUtf8,
        Reject::TooDeep,
        Reject::NotJson,
        Reject::NotObject,
        Reject::DuplicateKey,
        Reject::UnknownVersion,
        Reject::MissingField,
        Reject::WrongType,
        Reject::OutOfRange,
        Reject::Inconsistent,
    ];

    /// The code as PROTOCOL.md spells it (`too_deep`, `out_of_range`, ...).
    pub const fn code(self) -> &'static str {
        match self {
            Reject::BadTopic => "bad_topic",
            Reject::TooLong => "too_long",
            Reject::NotUtf8 => "not_utf8",
            Reject::TooDeep => "too_deep",
            Reject::NotJson => "not_json",
            Reject::NotObject => "not_object",
            Reject::DuplicateKey => "duplicate_key",
            Reject::UnknownVersion => "unknown_version",
            Reject::MissingField => "missing_field",
            Reject::WrongType => "wrong_type",
            Reject::OutOfRange => "out_of_range",
            Reject::Inconsistent => "inconsistent",
        }
    }

    /// The code for a spelling of PROTOCOL.md, if there is one.
    pub fn from_code(code: &str) -> Option<Reject> {
        Reject::ALL.into_iter().find(|r| r.code() == code)
    }
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A rejected message: the code, and the field it concerns where there is one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeError {
    /// The reject code.
    pub reason: Reject,
    /// The key of the offending field (the innermost one for nested fields).
    pub field: Option<&'static str>,
}

impl DecodeError {
    /// A rejection concerning the whole message.
    pub const fn whole(reason: Reject) -> Self {
        DecodeError {
            reason,
            field: None,
        }
    }

    /// A rejection concerning one field.
    pub const fn field(reason: Reject, field: &'static str) -> Self {
        DecodeError {
            reason,
            field: Some(field),
        }
    }
}

impl From<Reject> for DecodeError {
    fn from(reason: Reject) -> Self {
        DecodeError::whole(reason)
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.field {
            Some(field) => write!(f, "{} ({field})", self.reason),
            None => write!(f, "{}", self.reason),
        }
    }
}

impl core::error::Error for DecodeError {}
