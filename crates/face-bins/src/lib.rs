//! insightface's verification bins: `lfw.bin`, `cfp_fp.bin`, `cfp_ff.bin`, `agedb_30.bin`,
//! `calfw.bin`, `cplfw.bin`, `vgg2_fp.bin`. Each is a pickle of a pair `(images, same)`: the
//! encoded images (JPEG or PNG bytes) in pair order, two per pair, and one bool per pair.
//! insightface wrote the classic ones with Python 2 (`str` byte strings, protocol 2), newer
//! ones come from Python 3 (`bytes`).
//!
//! A pickle is a program; this reads it as data only. Before `serde-pickle` decodes it, the
//! opcode stream is checked ([`check_opcodes`]): only the opcodes such a pair of lists needs,
//! no globals or calls, and no container nested deeper than a tuple of lists (so that neither
//! the decoder nor dropping its result can recurse without bound). Every length is checked
//! against the bytes left.

#![warn(missing_docs)]

use serde_pickle::Value;
use std::path::Path;

/// A verification set: images in pair order and whether each pair is one person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerificationBin {
    /// Encoded images, `2 × same.len()` of them: pair `k` is images `2k` and `2k + 1`.
    pub images: Vec<Vec<u8>>,
    /// One flag per pair: the two images show the same person.
    pub same: Vec<bool>,
}

/// Why a file is not a verification bin.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {why}")]
pub struct BinError {
    /// The file.
    pub path: String,
    /// What is wrong, and the fix where there is one.
    pub why: String,
}

/// The largest bin read (insightface's are 50-400 MB).
pub const MAX_BIN_BYTES: u64 = 16 << 30;

/// Reads a verification bin.
pub fn read_bin(path: &Path) -> Result<VerificationBin, BinError> {
    let fail = |why: String| BinError {
        path: path.display().to_string(),
        why,
    };
    let len = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?.len();
    if len > MAX_BIN_BYTES {
        return Err(fail(format!("{len} bytes is more than a verification bin holds ({MAX_BIN_BYTES})")));
    }
    let bytes = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    parse_bin(&bytes).map_err(fail)
}

/// A verification bin from a pickle's bytes.
pub fn parse_bin(bytes: &[u8]) -> Result<VerificationBin, String> {
    check_opcodes(bytes)?;
    let value = serde_pickle::value_from_slice(bytes, serde_pickle::DeOptions::new()).map_err(|e| format!("not a readable pickle: {e}"))?;
    let (images, same) = match value {
        Value::Tuple(mut t) | Value::List(mut t) if t.len() == 2 => {
            let same = t.pop().unwrap_or(Value::None);
            (t.pop().unwrap_or(Value::None), same)
        }
        _ => return Err(SHAPE.into()),
    };
    let (Value::List(images), Value::List(same)) = (images, same) else {
        return Err(SHAPE.into());
    };
    let images: Vec<Vec<u8>> = images
        .into_iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::Bytes(b) => Ok(b),
            _ => Err(format!("image {i} is not a byte string: {SHAPE}")),
        })
        .collect::<Result<_, _>>()?;
    let same: Vec<bool> = same
        .into_iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::Bool(b) => Ok(b),
            Value::I64(0) => Ok(false),
            Value::I64(1) => Ok(true),
            _ => Err(format!("flag {i} is not a bool: {SHAPE}")),
        })
        .collect::<Result<_, _>>()?;
    if images.len() != 2 * same.len() {
        return Err(format!(
            "{} images for {} pairs: a verification bin holds two images per pair",
            images.len(),
            same.len()
        ));
    }
    Ok(VerificationBin { images, same })
}

const SHAPE: &str = "a verification bin is a pickle of (list of encoded images, list of bools), as insightface writes lfw.bin";

/// Writes `bin` as Python 3's `pickle.dump((images, same), f, protocol=4)` would (bytes as
/// `BINBYTES`).
pub fn write_bin(path: &Path, bin: &VerificationBin) -> std::io::Result<()> {
    let images = Value::List(bin.images.iter().cloned().map(Value::Bytes).collect());
    let same = Value::List(bin.same.iter().map(|&b| Value::Bool(b)).collect());
    let bytes = serde_pickle::value_to_vec(&Value::Tuple(vec![images, same]), serde_pickle::SerOptions::new())
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    std::fs::write(path, bytes)
}

/// Checks a pickle's opcode stream before it is decoded: only the opcodes a pair of lists of
/// byte strings and bools needs (protocol 2 and later: what Python 2's and Python 3's `pickle`
/// write for one), every argument inside the file, and no container deeper than a tuple of
/// lists. Returns where it is wrong.
pub fn check_opcodes(b: &[u8]) -> Result<(), String> {
    let mut at = 0usize;
    // The nesting depth of each item on the pickle machine's stack (scalars 0), with marks.
    let mut stack: Vec<Option<u8>> = Vec::new();
    let mut memo: std::collections::HashMap<u64, u8> = std::collections::HashMap::new();
    let bad = |at: usize, why: String| Err(format!("byte {at}: {why}; {SHAPE}"));
    if b.first() != Some(&0x80) {
        return bad(
            0,
            "not a pickle of protocol 2 or later (they start with the PROTO opcode 0x80)".into(),
        );
    }
    while at < b.len() {
        let op = b[at];
        let arg = |n: usize| -> Result<u64, String> {
            let bytes = b
                .get(at + 1..at + 1 + n)
                .ok_or_else(|| format!("byte {at}: the file ends inside an opcode's argument"))?;
            Ok(bytes.iter().rev().fold(0u64, |v, &x| v << 8 | u64::from(x)))
        };
        // (bytes the opcode takes after itself, what it does to the stack)
        let (len, effect): (u64, Effect) = match op {
            0x80 => (1, Effect::None),                                 // PROTO
            0x95 => (8, Effect::None),                                 // FRAME
            b'(' => (0, Effect::Mark),                                 // MARK
            b'.' => return if stack.len() == 1 { Ok(()) } else { bad(at, "STOP with a stack that is not one item".into()) },
            b']' | b')' => (0, Effect::Push(1)),                       // EMPTY_LIST, EMPTY_TUPLE
            b'a' => (0, Effect::Append),                               // APPEND
            b'e' => (0, Effect::Appends),                              // APPENDS
            b't' => (0, Effect::TupleMark),                            // TUPLE
            0x85 => (0, Effect::Tuple(1)),                             // TUPLE1
            0x86 => (0, Effect::Tuple(2)),                             // TUPLE2
            0x87 => (0, Effect::Tuple(3)),                             // TUPLE3
            0x88 | 0x89 | b'N' => (0, Effect::Push(0)),                // NEWTRUE, NEWFALSE, NONE
            b'K' => (1, Effect::Push(0)),                              // BININT1
            b'M' => (2, Effect::Push(0)),                              // BININT2
            b'J' => (4, Effect::Push(0)),                              // BININT
            b'U' | b'C' | 0x8c => (1 + arg(1)?, Effect::Push(0)),      // SHORT_BINSTRING, SHORT_BINBYTES, SHORT_BINUNICODE
            b'T' | b'B' | b'X' => (4 + arg(4)?, Effect::Push(0)),      // BINSTRING, BINBYTES, BINUNICODE
            0x8e | 0x8d => (arg(8)?.saturating_add(8), Effect::Push(0)), // BINBYTES8, BINUNICODE8 (a claim near 2^64 must not wrap)
            b'q' => (1, Effect::Put(arg(1)?)),                         // BINPUT
            b'r' => (4, Effect::Put(arg(4)?)),                         // LONG_BINPUT
            0x94 => (0, Effect::Put(memo.len() as u64)),               // MEMOIZE
            b'h' => (1, Effect::Get(arg(1)?)),                         // BINGET
            b'j' => (4, Effect::Get(arg(4)?)),                         // LONG_BINGET
            other => {
                return bad(
                    at,
                    format!("opcode {other:#04x} has no place in a verification bin (a global, a call, or an old protocol: re-save it with pickle protocol 2 or later)"),
                )
            }
        };
        if len > (b.len() - at - 1) as u64 {
            return bad(at, "an argument runs past the end of the file".into());
        }
        let pop_to_mark = |stack: &mut Vec<Option<u8>>| -> Option<Vec<u8>> {
            let mark = stack.iter().rposition(|x| x.is_none())?;
            let items = stack.split_off(mark + 1).into_iter().flatten().collect();
            stack.pop();
            Some(items)
        };
        let depth = match effect {
            Effect::None => None,
            Effect::Mark => {
                stack.push(None);
                None
            }
            Effect::Push(d) => Some(d),
            Effect::Append => {
                let item = stack.pop().flatten();
                let list = stack.pop().flatten();
                match (item, list) {
                    (Some(i), Some(l)) => Some(l.max(i + 1)),
                    _ => return bad(at, "APPEND without a list and an item".into()),
                }
            }
            Effect::Appends => {
                let items = pop_to_mark(&mut stack).ok_or_else(|| format!("byte {at}: APPENDS without a mark"))?;
                let list = stack.pop().flatten().ok_or_else(|| format!("byte {at}: APPENDS without a list"))?;
                Some(items.iter().fold(list, |d, &i| d.max(i + 1)))
            }
            Effect::TupleMark => {
                let items = pop_to_mark(&mut stack).ok_or_else(|| format!("byte {at}: TUPLE without a mark"))?;
                Some(items.iter().map(|&i| i + 1).max().unwrap_or(1))
            }
            Effect::Tuple(n) => {
                if stack.len() < n || stack[stack.len() - n..].iter().any(Option::is_none) {
                    return bad(at, format!("a tuple of {n} without {n} items"));
                }
                let items: Vec<u8> = stack.split_off(stack.len() - n).into_iter().flatten().collect();
                Some(items.iter().map(|&i| i + 1).max().unwrap_or(1))
            }
            Effect::Put(k) => {
                let top = stack
                    .last()
                    .copied()
                    .flatten()
                    .ok_or_else(|| format!("byte {at}: a memo store with nothing to store"))?;
                memo.insert(k, top);
                None
            }
            Effect::Get(k) => Some(
                *memo
                    .get(&k)
                    .ok_or_else(|| format!("byte {at}: a memo fetch of {k}, never stored"))?,
            ),
        };
        if let Some(d) = depth {
            if d > MAX_DEPTH {
                return bad(at, format!("containers nested {d} deep"));
            }
            stack.push(Some(d));
        }
        at += 1 + len as usize;
    }
    bad(at, "the pickle has no STOP".into())
}

/// A tuple of lists of scalars: depth 2; one more for a list wrapper.
const MAX_DEPTH: u8 = 3;

/// What an opcode does to the pickle machine's stack (for depth checking only).
enum Effect {
    None,
    Mark,
    Push(u8),
    Append,
    Appends,
    TupleMark,
    Tuple(usize),
    Put(u64),
    Get(u64),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Python 2's `cPickle.dumps((['ab', 'c'], [True]), 2)`, byte by byte.
    const PYTHON2: &[u8] = b"\x80\x02]q\x00(U\x02abq\x01U\x01cq\x02e]q\x03\x88a\x86q\x04.";

    #[test]
    fn a_python2_pickle_of_byte_strings_reads() {
        let bin = parse_bin(PYTHON2).unwrap();
        assert_eq!(bin.images, [b"ab".to_vec(), b"c".to_vec()]);
        assert_eq!(bin.same, [true]);
    }

    #[test]
    fn what_this_writes_reads_back() {
        let d = tempfile::tempdir().unwrap();
        let bin = VerificationBin {
            images: vec![b"\xff\xd8one".to_vec(), vec![0; 300], b"two".to_vec(), Vec::new()],
            same: vec![true, false],
        };
        let path = d.path().join("x.bin");
        write_bin(&path, &bin).unwrap();
        assert_eq!(read_bin(&path).unwrap(), bin);
    }

    #[test]
    fn a_pickle_that_is_not_a_bin_is_refused_before_it_is_decoded() {
        // A global and a call: os.system('x').
        let evil = b"\x80\x02cos\nsystem\nq\x00U\x01x\x85R.";
        let e = parse_bin(evil).unwrap_err();
        assert!(e.contains("opcode 0x63 has no place in a verification bin"), "{e}");
        // Lists nested a hundred deep.
        let mut deep = b"\x80\x02".to_vec();
        deep.extend(std::iter::repeat_n(b']', 100));
        deep.extend(std::iter::repeat_n(b'a', 99));
        deep.push(b'.');
        assert!(parse_bin(&deep).unwrap_err().contains("containers nested 4 deep"));
        // A length past the end, and a count mismatch.
        assert!(parse_bin(b"\x80\x02B\xff\xff\xff\x7f").unwrap_err().contains("runs past the end"));
        assert!(parse_bin(b"\x80\x04\x8e\xff\xff\xff\xff\xff\xff\xff\xff")
            .unwrap_err()
            .contains("runs past the end"));
        let three = b"\x80\x02]q\x00(U\x01aU\x01bU\x01ce]\x88a\x86.";
        assert!(parse_bin(three).unwrap_err().contains("3 images for 1 pairs"));
        assert!(parse_bin(b"\x80\x02K\x01.")
            .unwrap_err()
            .contains("a verification bin is a pickle of"));
        assert!(parse_bin(b"\x80\x02]").unwrap_err().contains("no STOP"));
        assert!(parse_bin(b"8,112,112").unwrap_err().contains("not a pickle of protocol 2 or later"));
    }
}
