//! Typed access to the fields of a message, naming the field in every error.

use crate::json::{Array, Object, Table, Value};
use crate::{DecodeError, Reject};

/// One field of a message: its key and its value.
#[derive(Debug, Clone, Copy)]
pub struct Field<'a> {
    key: &'static str,
    value: Value<'a>,
}

/// Looks fields up by key.
pub trait Fields<'a> {
    /// The field, or [`Reject::MissingField`].
    fn required(self, key: &'static str) -> Result<Field<'a>, DecodeError>;
    /// The field if present.
    fn optional(self, key: &'static str) -> Option<Field<'a>>;
}

impl<'a> Fields<'a> for Object<'a> {
    fn required(self, key: &'static str) -> Result<Field<'a>, DecodeError> {
        self.optional(key)
            .ok_or(DecodeError::field(Reject::MissingField, key))
    }

    fn optional(self, key: &'static str) -> Option<Field<'a>> {
        self.get(key).map(|value| Field { key, value })
    }
}

impl<'a> Fields<'a> for &Table<'a> {
    fn required(self, key: &'static str) -> Result<Field<'a>, DecodeError> {
        self.optional(key)
            .ok_or(DecodeError::field(Reject::MissingField, key))
    }

    fn optional(self, key: &'static str) -> Option<Field<'a>> {
        self.get(key).map(|value| Field { key, value })
    }
}

impl<'a> Field<'a> {
    fn error(&self, reason: Reject) -> DecodeError {
        DecodeError::field(reason, self.key)
    }

    /// The key of this field.
    pub fn key(&self) -> &'static str {
        self.key
    }

    /// True when the value is `null`.
    pub fn is_null(&self) -> bool {
        matches!(self.value, Value::Null)
    }

    /// An unsigned integer.
    pub fn u64(&self) -> Result<u64, DecodeError> {
        match self.value {
            Value::Number(n) => n.to_u64().map_err(|r| self.error(r)),
            _ => Err(self.error(Reject::WrongType)),
        }
    }

    /// An unsigned integer in `range`.
    pub fn u64_in(&self, range: core::ops::RangeInclusive<u64>) -> Result<u64, DecodeError> {
        let value = self.u64()?;
        if range.contains(&value) {
            Ok(value)
        } else {
            Err(self.error(Reject::OutOfRange))
        }
    }

    /// A `u32`.
    pub fn u32(&self) -> Result<u32, DecodeError> {
        self.u64()
            .and_then(|v| u32::try_from(v).map_err(|_| self.error(Reject::OutOfRange)))
    }

    /// A `u32` in `range`.
    pub fn u32_in(&self, range: core::ops::RangeInclusive<u32>) -> Result<u32, DecodeError> {
        let value = self.u32()?;
        if range.contains(&value) {
            Ok(value)
        } else {
            Err(self.error(Reject::OutOfRange))
        }
    }

    /// A `u16` in `range`.
    pub fn u16_in(&self, range: core::ops::RangeInclusive<u16>) -> Result<u16, DecodeError> {
        self.u32_in(u32::from(*range.start())..=u32::from(*range.end()))
            .map(|v| v as u16)
    }

    /// A percentage, 0 to 100.
    pub fn percent(&self) -> Result<u8, DecodeError> {
        self.u32_in(0..=100).map(|v| v as u8)
    }

    /// A finite number in `range`.
    pub fn f64_in(&self, range: core::ops::RangeInclusive<f64>) -> Result<f64, DecodeError> {
        let value = match self.value {
            Value::Number(n) => n.to_f64().map_err(|r| self.error(r))?,
            _ => return Err(self.error(Reject::WrongType)),
        };
        if range.contains(&value) {
            Ok(value)
        } else {
            Err(self.error(Reject::OutOfRange))
        }
    }

    /// `true` or `false`.
    pub fn bool(&self) -> Result<bool, DecodeError> {
        match self.value {
            Value::Bool(b) => Ok(b),
            _ => Err(self.error(Reject::WrongType)),
        }
    }

    /// A string of at most `N` bytes and `max_chars` characters.
    pub fn string<const N: usize>(
        &self,
        max_chars: usize,
    ) -> Result<heapless::String<N>, DecodeError> {
        let Value::String(s) = self.value else {
            return Err(self.error(Reject::WrongType));
        };
        if s.char_count() > max_chars {
            return Err(self.error(Reject::OutOfRange));
        }
        let mut out = heapless::String::new();
        s.decode_into(&mut out).map_err(|r| self.error(r))?;
        Ok(out)
    }

    /// A string of any length (for the messages only std peers exchange).
    #[cfg(feature = "alloc")]
    pub fn owned_string(&self) -> Result<alloc::string::String, DecodeError> {
        match self.value {
            Value::String(s) => Ok(s.chars().collect()),
            _ => Err(self.error(Reject::WrongType)),
        }
    }

    /// A string that must be one of `choices`; returns its index.
    pub fn one_of(&self, choices: &[&str]) -> Result<usize, DecodeError> {
        let Value::String(s) = self.value else {
            return Err(self.error(Reject::WrongType));
        };
        choices
            .iter()
            .position(|choice| s.eq_str(choice))
            .ok_or(self.error(Reject::OutOfRange))
    }

    /// A nested object.
    pub fn object(&self) -> Result<Object<'a>, DecodeError> {
        match self.value {
            Value::Object(o) => Ok(o),
            _ => Err(self.error(Reject::WrongType)),
        }
    }

    /// An array.
    pub fn array(&self) -> Result<Array<'a>, DecodeError> {
        match self.value {
            Value::Array(a) => Ok(a),
            _ => Err(self.error(Reject::WrongType)),
        }
    }

    /// Applies `read` unless the value is `null` (for fields that say "or null").
    pub fn nullable<T>(
        &self,
        read: impl FnOnce(&Self) -> Result<T, DecodeError>,
    ) -> Result<Option<T>, DecodeError> {
        if self.is_null() {
            Ok(None)
        } else {
            read(self).map(Some)
        }
    }

    /// The elements of an array field, each as a field under this key.
    pub fn elements(&self) -> Result<impl Iterator<Item = Field<'a>>, DecodeError> {
        let key = self.key;
        Ok(self.array()?.iter().map(move |value| Field { key, value }))
    }
}

/// Reads an optional field with `read`.
pub fn optional<'a, T>(
    object: impl Fields<'a>,
    key: &'static str,
    read: impl FnOnce(&Field<'a>) -> Result<T, DecodeError>,
) -> Result<Option<T>, DecodeError> {
    object.optional(key).map(|f| read(&f)).transpose()
}
