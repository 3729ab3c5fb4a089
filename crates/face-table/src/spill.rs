//! Face rows as length-prefixed binary records in a temporary file, for a stage that must
//! reorder more rows than it should hold (shard's shuffle spills each row to its shard's
//! bucket, then sorts one bucket at a time). Private to a run: never an artifact, no schema.

use crate::FaceRow;
use anyhow::{bail, Result};
use std::io::{Read, Write};

/// Writes `row` with its `key` (where it goes) as one record.
pub fn write_record(w: &mut impl Write, key: u32, row: &FaceRow) -> Result<()> {
    w.write_all(&key.to_le_bytes())?;
    bytes(w, &row.png)?;
    for v in [row.height, row.width, row.label] {
        w.write_all(&v.to_le_bytes())?;
    }
    for s in [&row.identity, &row.dataset, &row.source] {
        bytes(w, s.as_bytes())?;
    }
    match &row.video {
        Some(v) => {
            w.write_all(&[1])?;
            bytes(w, v.as_bytes())?;
        }
        None => w.write_all(&[0])?,
    }
    for v in row.landmarks {
        w.write_all(&v.to_le_bytes())?;
    }
    w.write_all(&[u8::from(row.flipped)])?;
    Ok(())
}

/// The next record, or `None` at the end of the stream; a record cut short is an error.
pub fn read_record(r: &mut impl Read) -> Result<Option<(u32, FaceRow)>> {
    let mut key = Vec::with_capacity(4);
    r.by_ref().take(4).read_to_end(&mut key)?;
    let key: [u8; 4] = match key.len() {
        0 => return Ok(None),
        4 => [key[0], key[1], key[2], key[3]],
        _ => bail!("spill record cut short in its key"),
    };
    let png = read_bytes(r)?;
    let (height, width, label) = (
        i32::from_le_bytes(word(r)?),
        i32::from_le_bytes(word(r)?),
        i32::from_le_bytes(word(r)?),
    );
    let (identity, dataset, source) = (string(r)?, string(r)?, string(r)?);
    let video = match byte(r)? {
        0 => None,
        1 => Some(string(r)?),
        b => bail!("spill record: {b} is not a video flag"),
    };
    let mut landmarks = [0f32; 10];
    for v in &mut landmarks {
        *v = f32::from_le_bytes(word(r)?);
    }
    let flipped = byte(r)? != 0;
    let row = FaceRow {
        png,
        height,
        width,
        label,
        identity,
        dataset,
        source,
        video,
        landmarks,
        flipped,
    };
    Ok(Some((u32::from_le_bytes(key), row)))
}

fn bytes(w: &mut impl Write, b: &[u8]) -> Result<()> {
    w.write_all(&u32::try_from(b.len())?.to_le_bytes())?;
    w.write_all(b)?;
    Ok(())
}

fn word(r: &mut impl Read) -> Result<[u8; 4]> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(b)
}

fn byte(r: &mut impl Read) -> Result<u8> {
    let mut b = [0u8; 1];
    r.read_exact(&mut b)?;
    Ok(b[0])
}

fn read_bytes(r: &mut impl Read) -> Result<Vec<u8>> {
    let mut b = vec![0u8; u32::from_le_bytes(word(r)?) as usize];
    r.read_exact(&mut b)?;
    Ok(b)
}

fn string(r: &mut impl Read) -> Result<String> {
    Ok(String::from_utf8(read_bytes(r)?)?)
}
