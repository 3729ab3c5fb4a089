//! A training pack as insightface distributes them: a directory with `train.rec` (the
//! records), `train.idx` (key → offset) and `property` (`classes,height,width`). Record 0 is a
//! header whose two labels give the end of the image keys and the end of the identity keys:
//! images are keys `1..labels[0]`, and keys `labels[0]..labels[1]` hold each identity's image
//! range (insightface's `MXFaceDataset` reads the images alone; so does this).

use crate::{IrHeader, RecordError, RecordReader, RecordWriter};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

/// `property`: how many classes, and the images' size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Property {
    /// Identities, labelled `0..classes`.
    pub classes: u32,
    /// Image height in pixels.
    pub height: u32,
    /// Image width in pixels.
    pub width: u32,
}

/// One line of `train.idx`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// The record's key.
    pub key: u64,
    /// Where its first piece starts in `train.rec`.
    pub offset: u64,
}

/// A problem with a pack's files, naming the file.
fn at(path: &Path, why: impl std::fmt::Display) -> String {
    format!("{}: {why}", path.display())
}

/// Reads `property`. Refuses anything but three positive integers.
pub fn read_property(path: &Path) -> Result<Property, String> {
    let meta = std::fs::metadata(path).map_err(|e| at(path, e))?;
    if meta.len() > 4096 {
        return Err(at(path, "is not a pack's `property` file (over 4 KiB)"));
    }
    let text = std::fs::read_to_string(path).map_err(|e| at(path, e))?;
    let fields: Vec<Option<u32>> = text.trim().split(',').map(|f| f.trim().parse().ok().filter(|&v| v > 0)).collect();
    match fields.as_slice() {
        [Some(classes), Some(height), Some(width)] => Ok(Property {
            classes: *classes,
            height: *height,
            width: *width,
        }),
        _ => Err(at(
            path,
            format!(
                "`{}` is not `classes,height,width` (three positive integers)",
                text.trim().chars().take(80).collect::<String>()
            ),
        )),
    }
}

/// Writes `property`.
pub fn write_property(path: &Path, p: &Property) -> std::io::Result<()> {
    std::fs::write(path, format!("{},{},{}\n", p.classes, p.height, p.width))
}

/// Reads `train.idx`, every offset checked against the `.rec` file's `rec_len` bytes; sorted by
/// key. Its size bounds what it may allocate.
pub fn read_index(path: &Path, rec_len: u64) -> Result<Vec<IndexEntry>, String> {
    let file = File::open(path).map_err(|e| at(path, e))?;
    let mut out = Vec::new();
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| at(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |why: &str| at(path, format!("line {}: {why}", n + 1));
        let (key, offset) = line.split_once('\t').ok_or_else(|| bad("not `key<TAB>offset`"))?;
        let key: u64 = key.trim().parse().map_err(|_| bad("the key is not a whole number"))?;
        let offset: u64 = offset.trim().parse().map_err(|_| bad("the offset is not a whole number"))?;
        if offset >= rec_len || !offset.is_multiple_of(4) {
            return Err(bad(&format!(
                "offset {offset} is not where a record of the {rec_len}-byte .rec file can start"
            )));
        }
        out.push(IndexEntry { key, offset });
    }
    out.sort_by_key(|e| e.key);
    if let Some(w) = out.windows(2).find(|w| w[0].key == w[1].key) {
        return Err(at(path, format!("key {} is listed twice", w[0].key)));
    }
    Ok(out)
}

/// An opened pack.
pub struct Pack {
    /// `train.rec`.
    pub rec: PathBuf,
    /// Its size in bytes.
    pub rec_len: u64,
    /// `train.idx`, by key.
    pub index: Vec<IndexEntry>,
    /// `property`.
    pub property: Property,
}

impl Pack {
    /// Opens the pack in `dir`, saying which file is missing or wrong.
    pub fn open(dir: &Path) -> Result<Pack, String> {
        let (rec, idx, prop) = (dir.join("train.rec"), dir.join("train.idx"), dir.join("property"));
        for f in [&rec, &idx, &prop] {
            if !f.is_file() {
                return Err(format!(
                    "{} is missing: an insightface pack is a directory with train.rec, train.idx and property (as faces_webface_112x112 or faces_emore)",
                    f.display()
                ));
            }
        }
        let rec_len = std::fs::metadata(&rec).map_err(|e| at(&rec, e))?.len();
        Ok(Pack {
            index: read_index(&idx, rec_len)?,
            property: read_property(&prop)?,
            rec,
            rec_len,
        })
    }

    /// A reader of `train.rec`.
    pub fn reader(&self) -> Result<RecordReader<BufReader<File>>, String> {
        let f = File::open(&self.rec).map_err(|e| at(&self.rec, e))?;
        Ok(RecordReader::new(BufReader::with_capacity(1 << 20, f), self.rec_len))
    }

    /// The record with key `key` (which must be indexed).
    pub fn read(&self, reader: &mut RecordReader<BufReader<File>>, key: u64) -> Result<Vec<u8>, RecordError> {
        let i = self.index.binary_search_by_key(&key, |e| e.key).map_err(|_| RecordError::Bad {
            offset: 0,
            why: format!("key {key} is not in train.idx"),
        })?;
        let offset = self.index[i].offset;
        if reader.position() != offset {
            reader.seek(offset)?;
        }
        reader.next_record()?.ok_or(RecordError::Bad {
            offset,
            why: "the file ends where the index puts a record".into(),
        })
    }

    /// The keys of the image records: those record 0's header names (`1..labels[0]`) when it is
    /// insightface's header, else every indexed key.
    pub fn image_keys(&self) -> Result<Vec<u64>, String> {
        let header = match self.index.first() {
            Some(e) if e.key == 0 => {
                let mut r = self.reader()?;
                let rec = self.read(&mut r, 0).map_err(|e| at(&self.rec, e))?;
                IrHeader::unpack(&rec).map_err(|e| at(&self.rec, format!("record 0: {e}")))?.0
            }
            _ => return Ok(self.index.iter().map(|e| e.key).collect()),
        };
        match header.labels.as_slice() {
            [end, ..] if *end >= 1.0 && end.fract() == 0.0 => {
                let end = *end as u64;
                let keys: Vec<u64> = self.index.iter().map(|e| e.key).filter(|&k| k >= 1 && k < end).collect();
                if keys.len() as u64 != end - 1 {
                    return Err(at(
                        &self.rec,
                        format!("record 0 says images are keys 1..{end}, but train.idx lists {} of them", keys.len()),
                    ));
                }
                Ok(keys)
            }
            _ => Ok(self.index.iter().map(|e| e.key).collect()),
        }
    }
}

/// Writes a pack the way insightface's packing scripts lay it out: record 0 the header, the
/// images as keys `1..=n` grouped by class, then one record per identity with its key range.
pub struct PackWriter {
    dir: PathBuf,
    /// (class, encoded image), in the order given.
    images: Vec<(u32, Vec<u8>)>,
}

impl PackWriter {
    /// A pack to be written in `dir`.
    pub fn new(dir: &Path) -> PackWriter {
        PackWriter {
            dir: dir.to_owned(),
            images: Vec::new(),
        }
    }

    /// Adds an image of class `class` (images of one class must come together).
    pub fn push(&mut self, class: u32, encoded: Vec<u8>) {
        self.images.push((class, encoded));
    }

    /// Writes `train.rec`, `train.idx` and `property` (`classes` classes of `height × width`).
    pub fn finish(self, height: u32, width: u32) -> std::io::Result<Property> {
        let classes = self.images.iter().map(|(c, _)| c + 1).max().unwrap_or(0);
        let n = self.images.len() as u64;
        let mut rec = RecordWriter::new(BufWriter::new(File::create(self.dir.join("train.rec"))?));
        let mut idx = BufWriter::new(File::create(self.dir.join("train.idx"))?);
        let mut put = |key: u64, payload: Vec<u8>| -> std::io::Result<()> {
            let at = rec.write_record(&payload)?;
            writeln!(idx, "{key}\t{at}")
        };
        let ids_end = n + 1 + u64::from(classes);
        put(0, header(vec![(n + 1) as f32, ids_end as f32]).pack(b""))?;
        let mut ranges = vec![(0u64, 0u64); classes as usize];
        for (i, (class, img)) in self.images.iter().enumerate() {
            let key = i as u64 + 1;
            let r = &mut ranges[*class as usize];
            *r = if r.1 == 0 { (key, key + 1) } else { (r.0, key + 1) };
            put(key, IrHeader::one(*class as f32, key).pack(img))?;
        }
        for (c, (start, end)) in ranges.into_iter().enumerate() {
            put(n + 1 + c as u64, header(vec![start as f32, end as f32]).pack(b""))?;
        }
        rec.finish()?;
        idx.flush()?;
        let p = Property { classes, height, width };
        write_property(&self.dir.join("property"), &p)?;
        Ok(p)
    }
}

fn header(labels: Vec<f32>) -> IrHeader {
    IrHeader {
        label: 0.0,
        labels,
        id: 0,
        id2: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_pack_reads_back_with_its_header_images_and_property() {
        let d = tempfile::tempdir().unwrap();
        let mut w = PackWriter::new(d.path());
        for (class, img) in [(0u32, b"img-a".to_vec()), (0, b"img-b".to_vec()), (1, b"img-c".to_vec())] {
            w.push(class, img);
        }
        assert_eq!(
            w.finish(112, 112).unwrap(),
            Property {
                classes: 2,
                height: 112,
                width: 112
            }
        );
        assert_eq!(std::fs::read_to_string(d.path().join("property")).unwrap(), "2,112,112\n");
        let pack = Pack::open(d.path()).unwrap();
        // Record 0, three images, two identities.
        assert_eq!(pack.index.len(), 6);
        assert_eq!(pack.image_keys().unwrap(), [1, 2, 3]);
        let mut r = pack.reader().unwrap();
        let rec = pack.read(&mut r, 3).unwrap();
        let (h, img) = IrHeader::unpack(&rec).unwrap();
        assert_eq!((h.class(), h.id, img), (1.0, 3, &b"img-c"[..]));
        // Identity 0's record names its key range [1, 3).
        let (h, _) = IrHeader::unpack(&pack.read(&mut r, 4).unwrap()).unwrap();
        assert_eq!(h.labels, [1.0, 3.0]);
    }

    #[test]
    fn a_pack_with_a_missing_or_lying_file_is_refused_naming_it() {
        let d = tempfile::tempdir().unwrap();
        let e = Pack::open(d.path()).err().unwrap();
        assert!(e.contains("train.rec is missing") && e.contains("faces_emore"), "{e}");
        let mut w = PackWriter::new(d.path());
        w.push(0, b"x".to_vec());
        w.finish(112, 112).unwrap();
        std::fs::write(d.path().join("property"), "2,112\n").unwrap();
        assert!(Pack::open(d.path()).err().unwrap().contains("is not `classes,height,width`"));
        std::fs::write(d.path().join("property"), "1,112,112\n").unwrap();
        std::fs::write(d.path().join("train.idx"), "0\t0\n1\t999999\n").unwrap();
        let e = Pack::open(d.path()).err().unwrap();
        assert!(e.contains("train.idx: line 2: offset 999999 is not where a record"), "{e}");
        std::fs::write(d.path().join("train.idx"), "0\t0\n0\t0\n").unwrap();
        assert!(Pack::open(d.path()).err().unwrap().contains("key 0 is listed twice"));
    }
}
