//! MXNet RecordIO, the container of insightface's training packs (`train.rec`, `train.idx`,
//! `property`). Everything in a pack is untrusted: each length is checked against what the file
//! can still hold before anything is allocated, and a bad record is an error naming its offset.
//!
//! The format (dmlc-core's `recordio.h`; checked against its writer and reader):
//!
//! ```text
//! record  = magic:u32le (0xced7230a)  lrec:u32le  data[len]  zero padding to 4 bytes
//! lrec    = cflag << 29 | len         (len < 2^29)
//! ```
//!
//! A payload that holds the magic at a 4-byte-aligned offset is written in pieces, the magic
//! itself left out: `cflag` 1 starts such a record, 2 continues it, 3 ends it (0: a whole
//! record); a reader joins the pieces with the magic between them.
//!
//! An image record's payload is an [`IrHeader`] (`flag` u32, `label` f32, `id` u64, `id2` u64,
//! little-endian), then `flag` more f32 labels when `flag > 0`, then the encoded image.
//! `train.idx` is text, one `key<TAB>offset` line per record, the offset of its first piece.

#![warn(missing_docs)]

mod pack;

pub use pack::{read_index, read_property, write_property, IndexEntry, Pack, PackWriter, Property};

use std::io::{self, Read, Seek, SeekFrom, Write};

/// The magic number that starts every record piece.
pub const MAGIC: u32 = 0xced7_230a;

/// The largest piece a record may declare (29 bits of length).
pub const MAX_PIECE: u32 = (1 << 29) - 1;

/// What is wrong with a record, and where.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The bytes at `offset` are not a RecordIO record.
    #[error("byte {offset}: {why}")]
    Bad {
        /// Where the record (or the piece) starts.
        offset: u64,
        /// What is wrong.
        why: String,
    },
    /// The file could not be read.
    #[error("{0}")]
    Io(#[from] io::Error),
}

impl RecordError {
    fn bad(offset: u64, why: impl Into<String>) -> RecordError {
        RecordError::Bad { offset, why: why.into() }
    }
}

/// Reads records from a seekable stream of `len` bytes (a `.rec` file).
pub struct RecordReader<R> {
    inner: R,
    len: u64,
    pos: u64,
}

impl<R: Read + Seek> RecordReader<R> {
    /// A reader over `inner`, which holds `len` bytes, at its start.
    pub fn new(inner: R, len: u64) -> RecordReader<R> {
        RecordReader { inner, len, pos: 0 }
    }

    /// Moves to the record that starts at `offset` (from an index entry).
    pub fn seek(&mut self, offset: u64) -> Result<(), RecordError> {
        if offset > self.len || !offset.is_multiple_of(4) {
            return Err(RecordError::bad(
                offset,
                format!(
                    "no record can start here (the file holds {} bytes, records start on 4-byte boundaries)",
                    self.len
                ),
            ));
        }
        self.inner.seek(SeekFrom::Start(offset))?;
        self.pos = offset;
        Ok(())
    }

    /// Where the next record starts.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The next whole record's payload (its pieces joined), or `None` at the end of the file.
    pub fn next_record(&mut self) -> Result<Option<Vec<u8>>, RecordError> {
        let start = self.pos;
        let mut out = Vec::new();
        let mut first = true;
        loop {
            let Some((cflag, len)) = self.piece_header(start, first)? else {
                return Ok(None);
            };
            let padded = u64::from(len).div_ceil(4) * 4;
            if padded > self.len - self.pos {
                return Err(RecordError::bad(
                    self.pos - 8,
                    format!(
                        "a piece of {len} bytes runs past the end of the file ({} bytes left)",
                        self.len - self.pos
                    ),
                ));
            }
            let at = out.len();
            out.resize(at + len as usize, 0);
            self.inner.read_exact(&mut out[at..])?;
            let mut pad = [0u8; 3];
            self.inner.read_exact(&mut pad[..(padded - u64::from(len)) as usize])?;
            self.pos += padded;
            match (first, cflag) {
                (true, 0) | (false, 3) => return Ok(Some(out)),
                (true, 1) | (false, 2) => out.extend_from_slice(&MAGIC.to_le_bytes()),
                _ => {
                    return Err(RecordError::bad(
                        start,
                        format!(
                            "continuation flag {cflag} where a record {} (a damaged file)",
                            if first { "starts" } else { "goes on" }
                        ),
                    ))
                }
            }
            first = false;
        }
    }

    /// The magic and length word of the next piece: `None` at a clean end of file (only
    /// before a record's first piece).
    fn piece_header(&mut self, start: u64, first: bool) -> Result<Option<(u32, u32)>, RecordError> {
        if self.pos == self.len && first {
            return Ok(None);
        }
        if self.len - self.pos < 8 {
            return Err(RecordError::bad(
                self.pos,
                format!("the file ends {} bytes into a record header", self.len - self.pos),
            ));
        }
        let mut head = [0u8; 8];
        self.inner.read_exact(&mut head)?;
        let magic = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        if magic != MAGIC {
            let what = if first { "record" } else { "piece of the record that starts there" };
            return Err(RecordError::bad(
                if first { self.pos } else { start },
                format!("a {what} starts with {magic:#010x}, not RecordIO's magic {MAGIC:#010x}: not a RecordIO file, or a damaged one"),
            ));
        }
        let lrec = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        self.pos += 8;
        Ok(Some((lrec >> 29, lrec & MAX_PIECE)))
    }
}

/// Writes records, splitting a payload around any 4-byte-aligned copy of the magic as MXNet
/// does, so that what it writes reads back with MXNet's own reader.
pub struct RecordWriter<W> {
    out: W,
    pos: u64,
}

impl<W: Write> RecordWriter<W> {
    /// A writer at the start of `out`.
    pub fn new(out: W) -> RecordWriter<W> {
        RecordWriter { out, pos: 0 }
    }

    /// Writes one record; returns the offset it starts at (for the index).
    pub fn write_record(&mut self, payload: &[u8]) -> io::Result<u64> {
        if payload.len() > MAX_PIECE as usize {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a record of {} bytes is over RecordIO's 2^29-byte limit", payload.len()),
            ));
        }
        let start = self.pos;
        let magic = MAGIC.to_le_bytes();
        let mut from = 0;
        for at in (0..payload.len() / 4 * 4).step_by(4) {
            if payload[at..at + 4] == magic {
                self.piece(if from == 0 { 1 } else { 2 }, &payload[from..at])?;
                from = at + 4;
            }
        }
        self.piece(if from == 0 { 0 } else { 3 }, &payload[from..])?;
        Ok(start)
    }

    fn piece(&mut self, cflag: u32, data: &[u8]) -> io::Result<()> {
        let lrec = cflag << 29 | data.len() as u32;
        self.out.write_all(&MAGIC.to_le_bytes())?;
        self.out.write_all(&lrec.to_le_bytes())?;
        self.out.write_all(data)?;
        let pad = data.len().div_ceil(4) * 4 - data.len();
        self.out.write_all(&[0u8; 3][..pad])?;
        self.pos += 8 + (data.len() + pad) as u64;
        Ok(())
    }

    /// The stream, flushed.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// The header MXNet puts before an image in a record (`mx.recordio.IRHeader`).
#[derive(Debug, Clone, PartialEq)]
pub struct IrHeader {
    /// The label, when there is one (`flag == 0`); else 0 and the labels follow.
    pub label: f32,
    /// The labels, when there are several (`flag` of them; insightface's record 0 holds the
    /// image index range this way, and some packs the class).
    pub labels: Vec<f32>,
    /// The record's id.
    pub id: u64,
    /// A second id (reserved, 0 in practice).
    pub id2: u64,
}

/// Bytes of the fixed part of the header.
pub const IR_HEADER_BYTES: usize = 24;

impl IrHeader {
    /// A header with one label.
    pub fn one(label: f32, id: u64) -> IrHeader {
        IrHeader {
            label,
            labels: Vec::new(),
            id,
            id2: 0,
        }
    }

    /// The class: the one label, or the first of several.
    pub fn class(&self) -> f32 {
        self.labels.first().copied().unwrap_or(self.label)
    }

    /// Splits a record's payload into its header and the image bytes after it.
    pub fn unpack(payload: &[u8]) -> Result<(IrHeader, &[u8]), String> {
        if payload.len() < IR_HEADER_BYTES {
            return Err(format!(
                "a record of {} bytes is too short for an image header ({IR_HEADER_BYTES})",
                payload.len()
            ));
        }
        let u32_at = |i: usize| u32::from_le_bytes([payload[i], payload[i + 1], payload[i + 2], payload[i + 3]]);
        let u64_at = |i: usize| u64::from(u32_at(i)) | u64::from(u32_at(i + 4)) << 32;
        let flag = u32_at(0) as usize;
        let rest = &payload[IR_HEADER_BYTES..];
        if flag > rest.len() / 4 {
            return Err(format!(
                "the header announces {flag} labels, more than the record's {} remaining bytes hold",
                rest.len()
            ));
        }
        let labels = (0..flag).map(|k| f32::from_bits(u32_at(IR_HEADER_BYTES + 4 * k))).collect();
        let header = IrHeader {
            label: f32::from_bits(u32_at(4)),
            labels,
            id: u64_at(8),
            id2: u64_at(16),
        };
        Ok((header, &rest[flag * 4..]))
    }

    /// The payload of a record: this header, then `image`.
    pub fn pack(&self, image: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(IR_HEADER_BYTES + 4 * self.labels.len() + image.len());
        out.extend_from_slice(&(self.labels.len() as u32).to_le_bytes());
        let label = if self.labels.is_empty() { self.label } else { 0.0 };
        out.extend_from_slice(&label.to_le_bytes());
        out.extend_from_slice(&self.id.to_le_bytes());
        out.extend_from_slice(&self.id2.to_le_bytes());
        for l in &self.labels {
            out.extend_from_slice(&l.to_le_bytes());
        }
        out.extend_from_slice(image);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn read_all(bytes: &[u8]) -> Result<Vec<Vec<u8>>, RecordError> {
        let mut r = RecordReader::new(Cursor::new(bytes), bytes.len() as u64);
        let mut out = Vec::new();
        while let Some(rec) = r.next_record()? {
            out.push(rec);
        }
        Ok(out)
    }

    #[test]
    fn a_record_is_magic_length_data_and_padding() {
        let mut w = RecordWriter::new(Vec::new());
        assert_eq!(w.write_record(b"abcde").unwrap(), 0);
        assert_eq!(w.write_record(b"").unwrap(), 16);
        let bytes = w.finish().unwrap();
        // By hand: 0a 23 d7 ce, length 5 with flag 0, "abcde", 3 zero bytes; then an empty one.
        let mut want = vec![0x0a, 0x23, 0xd7, 0xce, 5, 0, 0, 0];
        want.extend_from_slice(b"abcde\0\0\0");
        want.extend_from_slice(&[0x0a, 0x23, 0xd7, 0xce, 0, 0, 0, 0]);
        assert_eq!(bytes, want);
        assert_eq!(read_all(&bytes).unwrap(), [b"abcde".to_vec(), Vec::new()]);
    }

    #[test]
    fn a_payload_holding_the_magic_is_split_and_joined_back() {
        let magic = MAGIC.to_le_bytes();
        // The magic at offsets 4 and 12 (aligned: split there) and at 9 (not aligned: kept).
        let mut payload = b"head".to_vec();
        payload.extend_from_slice(&magic);
        payload.extend_from_slice(b"x");
        payload.extend_from_slice(&magic);
        payload.extend_from_slice(b"yyy");
        payload.extend_from_slice(&magic);
        payload.extend_from_slice(b"tail!");
        let mut w = RecordWriter::new(Vec::new());
        w.write_record(&payload).unwrap();
        let bytes = w.finish().unwrap();
        // Three pieces: "head" (flag 1), "x<magic>yyy" (flag 2), "tail!" (flag 3).
        let flags: Vec<u32> = [0usize, 12, 32]
            .iter()
            .map(|&o| u32::from_le_bytes(bytes[o + 4..o + 8].try_into().unwrap()) >> 29)
            .collect();
        assert_eq!(flags, [1, 2, 3]);
        assert_eq!(read_all(&bytes).unwrap(), [payload]);
    }

    #[test]
    fn damaged_files_are_errors_that_name_the_offset() {
        let mut w = RecordWriter::new(Vec::new());
        w.write_record(b"first").unwrap();
        w.write_record(b"second record").unwrap();
        let good = w.finish().unwrap();
        // Wrong magic in the second record (at byte 16).
        let mut bad = good.clone();
        bad[16] ^= 0xff;
        let e = read_all(&bad).unwrap_err().to_string();
        assert!(
            e.starts_with("byte 16: a record starts with") && e.contains("not RecordIO's magic"),
            "{e}"
        );
        // A length past the end: nothing is allocated for it.
        let mut long = good.clone();
        long[20..24].copy_from_slice(&(MAX_PIECE).to_le_bytes());
        let e = read_all(&long).unwrap_err().to_string();
        assert!(e.contains("runs past the end of the file"), "{e}");
        // Truncated inside a header, and a continuation without a start.
        assert!(read_all(&good[..20])
            .unwrap_err()
            .to_string()
            .contains("ends 4 bytes into a record header"));
        let mut orphan = good;
        orphan[7] = 2 << 5;
        assert!(read_all(&orphan)
            .unwrap_err()
            .to_string()
            .contains("continuation flag 2 where a record starts"));
        // A seek to somewhere no record can start.
        let mut r = RecordReader::new(Cursor::new(vec![0u8; 8]), 8);
        assert!(r.seek(6).is_err() && r.seek(12).is_err() && r.seek(8).is_ok());
    }

    #[test]
    fn the_image_header_packs_and_unpacks_one_or_several_labels() {
        let one = IrHeader::one(7.0, 42);
        let payload = one.pack(b"JPEG");
        assert_eq!(payload.len(), 24 + 4);
        // struct.pack('IfQQ', 0, 7.0, 42, 0) by hand.
        assert_eq!(&payload[..8], &[0, 0, 0, 0, 0, 0, 0xe0, 0x40]);
        assert_eq!(IrHeader::unpack(&payload).unwrap(), (one, &b"JPEG"[..]));
        let range = IrHeader {
            label: 0.0,
            labels: vec![1.0, 501.0],
            id: 0,
            id2: 0,
        };
        let payload = range.pack(b"");
        let (h, rest) = IrHeader::unpack(&payload).unwrap();
        assert_eq!((h.labels.as_slice(), h.class(), rest.len()), (&[1.0f32, 501.0][..], 1.0, 0));
        // A header that claims more labels than the record holds.
        let mut lying = payload;
        lying[0] = 9;
        assert!(IrHeader::unpack(&lying).unwrap_err().contains("announces 9 labels"));
        assert!(IrHeader::unpack(b"short").is_err());
    }
}
