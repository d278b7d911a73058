//! Telemetry: one report per window (PROTOCOL.md "Telemetry").

use serde::ser::{Serialize, SerializeSeq, Serializer};

use crate::fields::{Fields, optional};
use crate::json::Object;
use crate::{DecodeError, Message, Reject};

/// Highest illuminance a report may carry, in lux.
pub const MAX_LUX: f64 = 200_000.0;

/// `(boot, seq)`: identifies a report of a node. Orders by boot, then seq.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct ReportId {
    /// Boot counter of the node.
    pub boot: u32,
    /// Report counter within the boot.
    pub seq: u32,
}

impl ReportId {
    pub(crate) fn read(object: Object<'_>) -> Result<ReportId, DecodeError> {
        Ok(ReportId {
            boot: object.required("boot")?.u32()?,
            seq: object.required("seq")?.u32()?,
        })
    }
}

/// Illuminance over a window, in lux.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Lux {
    /// Mean.
    pub avg: f64,
    /// Lowest sample.
    pub min: f64,
    /// Highest sample.
    pub max: f64,
}

/// The lamp's commanded output.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Lamp {
    /// Whether the lamp is on.
    pub on: bool,
    /// Level in percent, 0 to 100.
    pub level: u8,
    /// Metered power in watts, where the node meters it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub power_w: Option<f64>,
}

/// A fault a node can report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// The lamp does not light when commanded.
    Lamp,
    /// The light sensor fails.
    Sensor,
    /// The enclosure was opened.
    Tamper,
}

impl Fault {
    /// Every fault, in report order.
    pub const ALL: [Fault; 3] = [Fault::Lamp, Fault::Sensor, Fault::Tamper];

    /// The name PROTOCOL.md gives it (also its event kind).
    pub const fn as_str(self) -> &'static str {
        match self {
            Fault::Lamp => "lamp_fault",
            Fault::Sensor => "sensor_fault",
            Fault::Tamper => "tamper",
        }
    }

    const fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// The set of active faults. Names this version does not know are ignored on decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Faults(u8);

impl Faults {
    /// No faults.
    pub const NONE: Faults = Faults(0);

    /// True when no fault is active.
    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }

    /// True when `fault` is active.
    pub fn contains(self, fault: Fault) -> bool {
        self.0 & fault.bit() != 0
    }

    /// Marks `fault` active or cleared.
    pub fn set(&mut self, fault: Fault, active: bool) {
        if active {
            self.0 |= fault.bit();
        } else {
            self.0 &= !fault.bit();
        }
    }

    /// The active faults.
    pub fn iter(self) -> impl Iterator<Item = Fault> {
        Fault::ALL.into_iter().filter(move |f| self.contains(*f))
    }
}

impl Serialize for Faults {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(None)?;
        for fault in self.iter() {
            seq.serialize_element(fault.as_str())?;
        }
        seq.end()
    }
}

/// One report of a node.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Telemetry {
    /// Boot counter.
    pub boot: u32,
    /// Report counter within the boot.
    pub seq: u32,
    /// End of the window, Unix ms; 0 without a valid clock.
    pub ts: u64,
    /// Milliseconds since boot at the end of the window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub up_ms: Option<u64>,
    /// Window length in seconds, 1 to 3600.
    pub period_s: u16,
    /// Illuminance over the window; `None` (null) when the sensor failed.
    pub lux: Option<Lux>,
    /// Motion detections in the window.
    pub motion: u32,
    /// The lamp's commanded output.
    pub lamp: Lamp,
    /// Version of the config the node runs (0: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cfg: Option<u32>,
    /// Active faults.
    #[serde(skip_serializing_if = "Faults::is_empty")]
    pub faults: Faults,
    /// First report not yet acknowledged, sent after the node dropped reports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest: Option<ReportId>,
    /// Controller temperature in °C.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temp_c: Option<f64>,
}

impl Telemetry {
    /// The report's identity.
    pub fn id(&self) -> ReportId {
        ReportId {
            boot: self.boot,
            seq: self.seq,
        }
    }
}

fn read_lux(object: Object<'_>) -> Result<Lux, DecodeError> {
    let read = |key| object.required(key)?.f64_in(0.0..=MAX_LUX);
    let lux = Lux {
        avg: read("avg")?,
        min: read("min")?,
        max: read("max")?,
    };
    if lux.min <= lux.avg && lux.avg <= lux.max {
        Ok(lux)
    } else {
        Err(DecodeError::field(Reject::Inconsistent, "lux"))
    }
}

fn read_lamp(object: Object<'_>) -> Result<Lamp, DecodeError> {
    Ok(Lamp {
        on: object.required("on")?.bool()?,
        level: object.required("level")?.percent()?,
        power_w: optional(object, "power_w", |f| f.f64_in(0.0..=f64::MAX))?,
    })
}

fn read_faults(field: &crate::fields::Field<'_>) -> Result<Faults, DecodeError> {
    let names: [&str; 3] = Fault::ALL.map(Fault::as_str);
    let mut faults = Faults::NONE;
    for element in field.elements()? {
        match element.one_of(&names) {
            Ok(index) => faults.set(Fault::ALL[index], true),
            Err(e) if e.reason == Reject::WrongType => return Err(e),
            Err(_) => {} // a fault this version does not know
        }
    }
    Ok(faults)
}

impl Message for Telemetry {
    fn from_object(object: Object<'_>) -> Result<Self, DecodeError> {
        let object = &crate::json::Table::new(object);
        Ok(Telemetry {
            boot: object.required("boot")?.u32()?,
            seq: object.required("seq")?.u32()?,
            ts: object.required("ts")?.u64()?,
            up_ms: optional(object, "up_ms", |f| f.u64())?,
            period_s: object.required("period_s")?.u16_in(1..=3600)?,
            lux: object
                .required("lux")?
                .nullable(|f| f.object().and_then(read_lux))?,
            motion: object.required("motion")?.u32()?,
            lamp: read_lamp(object.required("lamp")?.object()?)?,
            cfg: optional(object, "cfg", |f| f.u32())?,
            faults: optional(object, "faults", read_faults)?.unwrap_or_default(),
            oldest: optional(object, "oldest", |f| f.object().and_then(ReportId::read))?,
            temp_c: optional(object, "temp_c", |f| f.f64_in(f64::MIN..=f64::MAX))?,
        })
    }
}
