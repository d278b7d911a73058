//! A node's desired configuration on `.../{node}/config` (PROTOCOL.md "Config").

use core::fmt::Write;

use serde::ser::{Serialize, Serializer};

use crate::fields::{Field, Fields, optional};
use crate::json::Object;
use crate::{CommandId, DecodeError, Message, Reject, read_command_id};

/// Most steps a profile may have.
pub const MAX_PROFILE_STEPS: usize = 8;
/// A POSIX TZ string such as `CET-1CEST,M3.5.0,M10.5.0/3`, at most 64 bytes.
pub type TzString = heapless::String<64>;
/// A lighting class such as `P4`: 1 to 8 upper-case letters and digits.
pub type LightingClass = heapless::String<8>;
/// The steps of one night.
pub type Profile = heapless::Vec<Step, MAX_PROFILE_STEPS>;

/// The whole desired state of a node; applied whole or not at all.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Config {
    /// The id the node's answer names.
    pub id: CommandId,
    /// Version of this config, 1 or more; the node reports the one it runs.
    pub cfg: u32,
    /// Report interval in seconds, 1 to 3600.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval_s: Option<u16>,
    /// Where the node is, for sunset and sunrise and local times.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// Dimming steps from sunset to sunrise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<Profile>,
    /// Brighten on motion.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub motion_boost: Option<MotionBoost>,
}

/// The node's position and local time rules.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Location {
    /// Latitude in degrees, -90 to 90.
    pub lat: f64,
    /// Longitude in degrees, -180 to 180.
    pub lon: f64,
    /// POSIX TZ string (the node has no time zone database).
    pub tz: TzString,
}

/// When a profile step starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// At sunset (only as the first step).
    Sunset,
    /// At a local time of day.
    Local {
        /// Hour, 0 to 23.
        hour: u8,
        /// Minute, 0 to 59.
        minute: u8,
    },
}

impl At {
    /// Parses `sunset` or `HH:MM`.
    pub fn parse(text: &str) -> Option<At> {
        if text == "sunset" {
            return Some(At::Sunset);
        }
        let bytes = text.as_bytes();
        if bytes.len() != 5 || bytes[2] != b':' {
            return None;
        }
        let two = |i: usize| -> Option<u8> {
            let (a, b) = (bytes[i], bytes[i + 1]);
            (a.is_ascii_digit() && b.is_ascii_digit()).then(|| (a - b'0') * 10 + (b - b'0'))
        };
        let (hour, minute) = (two(0)?, two(3)?);
        (hour < 24 && minute < 60).then_some(At::Local { hour, minute })
    }
}

impl Serialize for At {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match *self {
            At::Sunset => s.serialize_str("sunset"),
            At::Local { hour, minute } => {
                let mut text = heapless::String::<5>::new();
                write!(text, "{hour:02}:{minute:02}").map_err(serde::ser::Error::custom)?;
                s.serialize_str(&text)
            }
        }
    }
}

/// One step of a profile.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Step {
    /// When the step starts.
    pub at: At,
    /// Lamp level in percent.
    pub level: u8,
    /// The lighting class this step is designed to deliver (adaptive lighting).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<LightingClass>,
}

/// Brighten on motion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct MotionBoost {
    /// Lamp level in percent while boosted.
    pub level: u8,
    /// Seconds after the last detection to stay boosted, up to a day.
    pub hold_s: u32,
}

fn read_location(object: Object<'_>) -> Result<Location, DecodeError> {
    let tz: TzString = object.required("tz")?.string(64)?;
    if tz.is_empty() {
        return Err(DecodeError::field(Reject::OutOfRange, "tz"));
    }
    Ok(Location {
        lat: object.required("lat")?.f64_in(-90.0..=90.0)?,
        lon: object.required("lon")?.f64_in(-180.0..=180.0)?,
        tz,
    })
}

fn read_step(field: Field<'_>) -> Result<Step, DecodeError> {
    let object = field.object()?;
    let at_field = object.required("at")?;
    let at_text: heapless::String<8> = at_field.string(8)?;
    let at = At::parse(&at_text).ok_or(DecodeError::field(Reject::OutOfRange, "at"))?;
    let class = optional(object, "class", |f| {
        let class: LightingClass = f.string(8)?;
        let valid = !class.is_empty()
            && class
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
        valid
            .then_some(class)
            .ok_or(DecodeError::field(Reject::OutOfRange, "class"))
    })?;
    Ok(Step {
        at,
        level: object.required("level")?.percent()?,
        class,
    })
}

fn read_profile(field: &Field<'_>) -> Result<Profile, DecodeError> {
    let mut profile = Profile::new();
    for element in field.elements()? {
        let step = read_step(element)?;
        if step.at == At::Sunset && !profile.is_empty() {
            return Err(DecodeError::field(Reject::Inconsistent, "profile"));
        }
        profile
            .push(step)
            .map_err(|_| DecodeError::field(Reject::OutOfRange, "profile"))?;
    }
    if profile.is_empty() {
        return Err(DecodeError::field(Reject::OutOfRange, "profile"));
    }
    Ok(profile)
}

fn read_motion_boost(object: Object<'_>) -> Result<MotionBoost, DecodeError> {
    Ok(MotionBoost {
        level: object.required("level")?.percent()?,
        hold_s: object.required("hold_s")?.u32_in(0..=86_400)?,
    })
}

impl Message for Config {
    fn from_object(object: Object<'_>) -> Result<Self, DecodeError> {
        let object = &crate::json::Table::new(object);
        Ok(Config {
            id: read_command_id(&object.required("id")?)?,
            cfg: object.required("cfg")?.u32_in(1..=u32::MAX)?,
            interval_s: optional(object, "interval_s", |f| f.u16_in(1..=3600))?,
            location: optional(object, "location", |f| f.object().and_then(read_location))?,
            profile: optional(object, "profile", read_profile)?,
            motion_boost: optional(object, "motion_boost", |f| {
                f.object().and_then(read_motion_boost)
            })?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::At;

    #[test]
    fn at_parses_strictly() {
        assert_eq!(At::parse("sunset"), Some(At::Sunset));
        assert_eq!(
            At::parse("23:00"),
            Some(At::Local {
                hour: 23,
                minute: 0
            })
        );
        assert_eq!(
            At::parse("00:59"),
            Some(At::Local {
                hour: 0,
                minute: 59
            })
        );
        for bad in ["24:00", "12:60", "1:00", "12-00", "sunrise", "", "12:0a"] {
            assert_eq!(At::parse(bad), None, "{bad}");
        }
    }
}
