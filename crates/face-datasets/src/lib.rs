//! Readers for real face datasets' files. They are written for users' real copies: a
//! malformed line is an error naming the file and line; a listed image that is missing is
//! reported (and left out), never silently dropped.
//!
//! Landmarks are always 5 points: left eye, right eye, nose tip, left mouth corner, right
//! mouth corner, in pixels.

#![warn(missing_docs)]

mod lists;
mod names;

pub use lists::{read_lfw_pairs, read_ytf_splits, LfwPair, PairSide, YtfPair};
pub use names::normalize_name;

use std::fmt;
use std::path::{Path, PathBuf};

/// The 5 landmarks [x, y]: left eye, right eye, nose tip, left and right mouth corners.
pub type Landmarks = [[f64; 2]; 5];

/// A problem at a place in a file.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ReadError {
    /// The file being read.
    pub file: PathBuf,
    /// The 1-based line, when the problem has one.
    pub line: Option<usize>,
    /// What is wrong there.
    pub message: String,
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{l}: {}", self.file.display(), self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

pub(crate) fn err(file: &Path, line: Option<usize>, message: impl Into<String>) -> ReadError {
    ReadError {
        file: file.to_path_buf(),
        line,
        message: message.into(),
    }
}

/// One face image with its identity and landmarks.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Path relative to the image root, with `/` (as written in the list file).
    pub rel_path: String,
    /// The image's full path.
    pub path: PathBuf,
    /// The dataset's own identity key (CASIA folder id, or the person's folder name).
    pub identity: String,
    /// Human-readable name (CASIA: from names.txt when present).
    pub name: String,
    /// Class index as given by the list (CASIA), else assigned in order of first appearance.
    pub label: u32,
    /// `Name/video` for YouTube Faces frames.
    pub video: Option<String>,
    /// The detected landmarks, in image pixels.
    pub landmarks: Landmarks,
}

/// Samples that could be read, and the listed images that were not found.
#[derive(Debug, Default)]
pub struct Listing {
    /// The listed images that exist, in list order.
    pub samples: Vec<Sample>,
    /// The listed images that do not.
    pub missing: Vec<PathBuf>,
}

fn parse_marks(fields: &[&str], file: &Path, line: usize) -> Result<Landmarks, ReadError> {
    if fields.len() != 10 {
        return Err(err(
            file,
            Some(line),
            format!("expected 10 landmark coordinates (x1 y1 ... x5 y5), found {}", fields.len()),
        ));
    }
    let mut m = [[0.0; 2]; 5];
    for (k, f) in fields.iter().enumerate() {
        let v: f64 = f
            .trim()
            .parse()
            .map_err(|_| err(file, Some(line), format!("landmark coordinate {} is `{f}`, not a number", k + 1)))?;
        m[k / 2][k % 2] = v;
    }
    Ok(m)
}

fn read_text(path: &Path) -> Result<String, ReadError> {
    std::fs::read_to_string(path).map_err(|e| err(path, None, format!("cannot read: {e}")))
}

fn split_fields(line: &str) -> Vec<&str> {
    line.split(['\t', ' ']).filter(|s| !s.is_empty()).collect()
}

/// A landmark list in the SphereFace PyTorch port's format: `path [class] x1 y1 ... x5 y5`,
/// tab- (or space-) separated, one image per line. `with_class` says whether the class column
/// is present (CASIA) or not (LFW, YTF). Identity = first path component; for YTF-style paths
/// `Name/video/frame.jpg` the video is `Name/video`.
pub fn read_landmark_list(list: &Path, image_root: &Path, with_class: bool) -> Result<Listing, ReadError> {
    let text = read_text(list)?;
    let mut out = Listing::default();
    let mut labels: std::collections::HashMap<String, u32> = std::collections::HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let f = split_fields(line);
        let need = if with_class { 12 } else { 11 };
        if f.len() != need {
            return Err(err(
                list,
                Some(n),
                format!(
                    "expected {need} fields (path{} and 10 coordinates), found {}",
                    if with_class { ", class" } else { "" },
                    f.len()
                ),
            ));
        }
        let rel = f[0].to_owned();
        if rel.starts_with('/') || rel.split('/').any(|c| c == "..") {
            return Err(err(
                list,
                Some(n),
                format!("image path `{rel}` must be relative and stay under the image root"),
            ));
        }
        let parts: Vec<&str> = rel.split('/').collect();
        if parts.len() < 2 {
            return Err(err(list, Some(n), format!("image path `{rel}` has no identity folder")));
        }
        let identity = parts[0].to_owned();
        let next = labels.len() as u32;
        let label = if with_class {
            f[1].parse::<u32>()
                .map_err(|_| err(list, Some(n), format!("class `{}` is not a non-negative integer", f[1])))?
        } else {
            *labels.entry(identity.clone()).or_insert(next)
        };
        let landmarks = parse_marks(&f[need - 10..], list, n)?;
        let path = image_root.join(&rel);
        if !path.is_file() {
            out.missing.push(path);
            continue;
        }
        let video = (parts.len() >= 3).then(|| format!("{}/{}", parts[0], parts[1]));
        out.samples.push(Sample {
            rel_path: rel,
            path,
            name: identity.clone(),
            identity,
            label,
            video,
            landmarks,
        });
    }
    Ok(out)
}

/// CASIA-WebFace `names.txt`: `<id> <name>` per line. Returns id -> name.
pub fn read_casia_names(path: &Path) -> Result<std::collections::BTreeMap<String, String>, ReadError> {
    let text = read_text(path)?;
    let mut out = std::collections::BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let (id, name) = line
            .trim()
            .split_once([' ', '\t'])
            .ok_or_else(|| err(path, Some(i + 1), "expected `<identity id> <name>`"))?;
        if out.insert(id.to_owned(), name.trim().to_owned()).is_some() {
            return Err(err(path, Some(i + 1), format!("identity `{id}` is listed twice")));
        }
    }
    Ok(out)
}

/// MegaFace / FaceScrub images from a devkit list (`{"path": [...]}`, optionally `"id"`),
/// with landmarks from each image's `<image>.json` sidecar (`landmarks: {"0": {x, y}, ...}`).
pub fn read_megaface_list(list: &Path, image_root: &Path) -> Result<Listing, ReadError> {
    let text = read_text(list)?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| err(list, Some(e.line()), format!("not valid JSON: {e}")))?;
    let paths = v["path"]
        .as_array()
        .ok_or_else(|| err(list, None, "expected a JSON object with a `path` list"))?;
    let ids = v["id"].as_array();
    let mut out = Listing::default();
    let mut labels: std::collections::HashMap<String, u32> = std::collections::HashMap::new();
    for (i, p) in paths.iter().enumerate() {
        let rel = p
            .as_str()
            .ok_or_else(|| err(list, None, format!("path entry {i} is not a string")))?
            .to_owned();
        let path = image_root.join(&rel);
        if !path.is_file() {
            out.missing.push(path);
            continue;
        }
        let side = PathBuf::from(format!("{}.json", path.display()));
        let sv: serde_json::Value =
            serde_json::from_str(&read_text(&side)?).map_err(|e| err(&side, Some(e.line()), format!("not valid JSON: {e}")))?;
        let mut m = [[0.0; 2]; 5];
        for (k, point) in m.iter_mut().enumerate() {
            let pt = &sv["landmarks"][k.to_string()];
            match (pt["x"].as_f64(), pt["y"].as_f64()) {
                (Some(x), Some(y)) => *point = [x, y],
                _ => return Err(err(&side, None, format!("landmark \"{k}\" with numeric x and y is missing"))),
            }
        }
        let identity = match ids {
            Some(a) => a
                .get(i)
                .and_then(|x| x.as_str())
                .ok_or_else(|| err(list, None, format!("`id` has no string entry {i}")))?
                .to_owned(),
            None => rel.clone(),
        };
        let next = labels.len() as u32;
        let label = *labels.entry(identity.clone()).or_insert(next);
        out.samples.push(Sample {
            rel_path: rel,
            path,
            name: identity.clone(),
            identity,
            label,
            video: None,
            landmarks: m,
        });
    }
    Ok(out)
}

/// Header of a samples table (`samples.tsv`), the list format stages hand to each other.
pub const SAMPLES_HEADER: &str = "path\tlabel\tidentity\tname\tvideo\tx1\ty1\tx2\ty2\tx3\ty3\tx4\ty4\tx5\ty5";

/// Writes samples as a TSV table with a header (paths relative to their image root).
pub fn write_samples(path: &Path, samples: &[Sample]) -> Result<(), ReadError> {
    let mut out = String::from(SAMPLES_HEADER);
    out.push('\n');
    for s in samples {
        let marks: Vec<String> = s.landmarks.iter().flatten().map(|v| format!("{v}")).collect();
        out.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\t{}\n",
            s.rel_path,
            s.label,
            s.identity,
            s.name,
            s.video.as_deref().unwrap_or(""),
            marks.join("\t")
        ));
    }
    std::fs::write(path, out).map_err(|e| err(path, None, format!("cannot write: {e}")))
}

/// Reads a samples table written by [`write_samples`]; images resolve against `image_root`.
pub fn read_samples(path: &Path, image_root: &Path) -> Result<Listing, ReadError> {
    let text = read_text(path)?;
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, h)) if h == SAMPLES_HEADER => {}
        _ => return Err(err(path, Some(1), "not a samples table: the header line is missing or different")),
    }
    let mut out = Listing::default();
    for (i, line) in lines {
        if line.is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() != 15 {
            return Err(err(
                path,
                Some(i + 1),
                format!("expected 15 tab-separated fields, found {}", f.len()),
            ));
        }
        let label = f[1]
            .parse()
            .map_err(|_| err(path, Some(i + 1), format!("label `{}` is not an integer", f[1])))?;
        let landmarks = parse_marks(&f[5..], path, i + 1)?;
        let p = image_root.join(f[0]);
        if !p.is_file() {
            out.missing.push(p);
            continue;
        }
        out.samples.push(Sample {
            rel_path: f[0].into(),
            path: p,
            identity: f[2].into(),
            name: f[3].into(),
            label,
            video: (!f[4].is_empty()).then(|| f[4].into()),
            landmarks,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn casia_list_reads_and_reports_bad_lines_and_missing_images() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("img/0000045")).unwrap();
        std::fs::write(d.path().join("img/0000045/001.jpg"), b"x").unwrap();
        let list = d.path().join("list.txt");
        std::fs::write(
            &list,
            "0000045/001.jpg\t3\t1\t2\t3\t4\t5\t6\t7\t8\t9\t10\n0000045/002.jpg\t3\t1\t2\t3\t4\t5\t6\t7\t8\t9\t10\n",
        )
        .unwrap();
        let l = read_landmark_list(&list, &d.path().join("img"), true).unwrap();
        assert_eq!(l.samples.len(), 1);
        assert_eq!(l.samples[0].label, 3);
        assert_eq!(l.samples[0].landmarks[4], [9.0, 10.0]);
        assert_eq!(l.missing, vec![d.path().join("img/0000045/002.jpg")]);

        std::fs::write(
            &list,
            "0000045/001.jpg\t3\t1\t2\t3\t4\t5\t6\t7\t8\t9\t10\n0000045/001.jpg\t3\t1\t2\tx\t4\t5\t6\t7\t8\t9\t10\n",
        )
        .unwrap();
        let e = read_landmark_list(&list, &d.path().join("img"), true).unwrap_err().to_string();
        assert!(e.ends_with("list.txt:2: landmark coordinate 3 is `x`, not a number"), "{e}");
        std::fs::write(&list, "0000045/001.jpg\t1\t2\n").unwrap();
        let e = read_landmark_list(&list, &d.path().join("img"), true).unwrap_err().to_string();
        assert!(e.contains("list.txt:1: expected 12 fields"), "{e}");
        std::fs::write(&list, "../etc/passwd\t1\t1\t2\t3\t4\t5\t6\t7\t8\t9\t10\n").unwrap();
        assert!(read_landmark_list(&list, &d.path().join("img"), true)
            .unwrap_err()
            .to_string()
            .contains("must be relative"));
    }
}
