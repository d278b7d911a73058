//! Compressed column blocks: one node's reports of one closed hour, each field a `pco`
//! chunk, so history costs about a byte per value instead of tens.
//!
//! Layout: `[u32 rows]` then, per column in [`Columns`] order, `[u32 length][pco bytes]`,
//! little-endian. Decoding checks every length: a damaged block is an error, not a panic.

use pco::ChunkConfig;
use pco::standalone::{simple_compress, simple_decompress};

use super::{ReportRow, StorageError};

const CLOCK_OK: u32 = 1;
const LAMP_ON: u32 = 1 << 1;
const HAS_LUX: u32 = 1 << 2;
const HAS_POWER: u32 = 1 << 3;
const HAS_CFG: u32 = 1 << 4;
const HAS_TEMP: u32 = 1 << 5;
const FAULTS_SHIFT: u32 = 8;

/// A block's columns, one value per report.
#[derive(Debug, Default, PartialEq)]
struct Columns {
    ts: Vec<i64>,
    received: Vec<i64>,
    boot: Vec<u32>,
    seq: Vec<u32>,
    flags: Vec<u32>,
    period_s: Vec<u32>,
    motion: Vec<u32>,
    lamp_level: Vec<u32>,
    cfg: Vec<u32>,
    lux_avg: Vec<f64>,
    lux_min: Vec<f64>,
    lux_max: Vec<f64>,
    power_w: Vec<f64>,
    temp_c: Vec<f64>,
}

fn corrupt(what: &str) -> StorageError {
    StorageError::Corrupt(what.to_owned())
}

/// Compresses reports (of one node, hour and zone) into a block.
pub fn encode(rows: &[ReportRow]) -> Result<Vec<u8>, StorageError> {
    let mut c = Columns::default();
    for r in rows {
        let mut flags = u32::from(r.faults) << FAULTS_SHIFT;
        for (present, bit) in [
            (r.clock_ok, CLOCK_OK),
            (r.lamp_on, LAMP_ON),
            (r.lux.is_some(), HAS_LUX),
            (r.power_w.is_some(), HAS_POWER),
            (r.cfg.is_some(), HAS_CFG),
            (r.temp_c.is_some(), HAS_TEMP),
        ] {
            if present {
                flags |= bit;
            }
        }
        c.ts.push(r.ts);
        c.received.push(r.received);
        c.boot.push(r.boot);
        c.seq.push(r.seq);
        c.flags.push(flags);
        c.period_s.push(u32::from(r.period_s));
        c.motion.push(r.motion);
        c.lamp_level.push(u32::from(r.lamp_level));
        c.cfg.push(r.cfg.unwrap_or(0));
        c.lux_avg.push(r.lux.map_or(0.0, |l| l.avg));
        c.lux_min.push(r.lux.map_or(0.0, |l| l.min));
        c.lux_max.push(r.lux.map_or(0.0, |l| l.max));
        c.power_w.push(r.power_w.unwrap_or(0.0));
        c.temp_c.push(r.temp_c.unwrap_or(0.0));
    }
    let mut out = (rows.len() as u32).to_le_bytes().to_vec();
    let config = ChunkConfig::default();
    let mut put = |bytes: Result<Vec<u8>, pco::errors::PcoError>| -> Result<(), StorageError> {
        let bytes =
            bytes.map_err(|e| StorageError::Corrupt(format!("compressing a block: {e}")))?;
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(&bytes);
        Ok(())
    };
    put(simple_compress(&c.ts, &config))?;
    put(simple_compress(&c.received, &config))?;
    for column in [
        &c.boot,
        &c.seq,
        &c.flags,
        &c.period_s,
        &c.motion,
        &c.lamp_level,
        &c.cfg,
    ] {
        put(simple_compress(column, &config))?;
    }
    for column in [&c.lux_avg, &c.lux_min, &c.lux_max, &c.power_w, &c.temp_c] {
        put(simple_compress(column, &config))?;
    }
    Ok(out)
}

/// Splits a block into its column chunks, checking every length.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn u32(&mut self) -> Result<u32, StorageError> {
        let (head, rest) = self
            .rest
            .split_first_chunk::<4>()
            .ok_or_else(|| corrupt("block ends early"))?;
        self.rest = rest;
        Ok(u32::from_le_bytes(*head))
    }

    fn column<T: pco::data_types::Number>(&mut self, rows: usize) -> Result<Vec<T>, StorageError> {
        let len = self.u32()? as usize;
        if len > self.rest.len() {
            return Err(corrupt("block column runs past its end"));
        }
        let (bytes, rest) = self.rest.split_at(len);
        self.rest = rest;
        let values: Vec<T> = simple_decompress(bytes)
            .map_err(|e| StorageError::Corrupt(format!("block column: {e}")))?;
        if values.len() != rows {
            return Err(corrupt("block column has the wrong length"));
        }
        Ok(values)
    }
}

/// Restores the reports of a block (`zone` is the block's).
pub fn decode(block: &[u8], zone: Option<&str>) -> Result<Vec<ReportRow>, StorageError> {
    let mut reader = Reader { rest: block };
    let rows = reader.u32()? as usize;
    let c = Columns {
        ts: reader.column(rows)?,
        received: reader.column(rows)?,
        boot: reader.column(rows)?,
        seq: reader.column(rows)?,
        flags: reader.column(rows)?,
        period_s: reader.column(rows)?,
        motion: reader.column(rows)?,
        lamp_level: reader.column(rows)?,
        cfg: reader.column(rows)?,
        lux_avg: reader.column(rows)?,
        lux_min: reader.column(rows)?,
        lux_max: reader.column(rows)?,
        power_w: reader.column(rows)?,
        temp_c: reader.column(rows)?,
    };
    Ok((0..rows)
        .map(|i| {
            let flags = c.flags[i];
            let has = |bit: u32| flags & bit != 0;
            ReportRow {
                boot: c.boot[i],
                seq: c.seq[i],
                ts: c.ts[i],
                clock_ok: has(CLOCK_OK),
                received: c.received[i],
                period_s: c.period_s[i].min(u32::from(u16::MAX)) as u16,
                lux: has(HAS_LUX).then(|| parklight_protocol::Lux {
                    avg: c.lux_avg[i],
                    min: c.lux_min[i],
                    max: c.lux_max[i],
                }),
                motion: c.motion[i],
                lamp_on: has(LAMP_ON),
                lamp_level: c.lamp_level[i].min(100) as u8,
                power_w: has(HAS_POWER).then_some(c.power_w[i]),
                cfg: has(HAS_CFG).then_some(c.cfg[i]),
                faults: (flags >> FAULTS_SHIFT) as u8,
                temp_c: has(HAS_TEMP).then_some(c.temp_c[i]),
                zone: zone.map(str::to_owned),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> Vec<ReportRow> {
        (0..60u32)
            .map(|i| ReportRow {
                boot: 3,
                seq: 100 + i,
                ts: 1_764_093_600_000 + i64::from(i) * 60_000,
                clock_ok: i != 7,
                received: 1_764_093_600_300 + i64::from(i) * 60_000,
                period_s: 60,
                lux: (i % 11 != 0).then(|| parklight_protocol::Lux {
                    avg: 6.0 + f64::from(i) * 0.01,
                    min: 5.5,
                    max: 7.25,
                }),
                motion: i % 4,
                lamp_on: true,
                lamp_level: 80,
                power_w: (i % 2 == 0).then_some(31.5),
                cfg: Some(3),
                faults: if i == 30 { 0b101 } else { 0 },
                temp_c: None,
                zone: Some("skatepark".into()),
            })
            .collect()
    }

    #[test]
    fn a_block_restores_every_field() {
        let rows = rows();
        let block = encode(&rows).unwrap();
        assert_eq!(decode(&block, Some("skatepark")).unwrap(), rows);
        // Far smaller than the rows: 60 reports of 14 values each.
        assert!(block.len() < 60 * 14 * 2, "{} bytes", block.len());
    }

    #[test]
    fn a_damaged_block_is_an_error() {
        let block = encode(&rows()).unwrap();
        for cut in [0, 3, 10, block.len() / 2, block.len() - 1] {
            assert!(decode(&block[..cut], None).is_err(), "cut at {cut}");
        }
        let mut flipped = block.clone();
        flipped[4] ^= 0xff;
        assert!(decode(&flipped, None).is_err());
    }
}
