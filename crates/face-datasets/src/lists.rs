//! Evaluation protocol files: LFW's `pairs.txt` (View 2) and YouTube Faces' `splits.txt`.

use crate::{err, read_text, ReadError};
use std::path::Path;

/// One image of a pair: person name and 1-based image number (`Name/Name_0003.jpg`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairSide {
    /// The person's name as in LFW (`Aaron_Peirsol`).
    pub name: String,
    /// 1-based image number.
    pub index: u32,
}

impl PairSide {
    /// The image's path relative to the LFW root.
    pub fn rel_path(&self) -> String {
        format!("{0}/{0}_{1:04}.jpg", self.name, self.index)
    }
}

/// One line of LFW's `pairs.txt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LfwPair {
    /// 0-based fold.
    pub fold: usize,
    /// The first image.
    pub a: PairSide,
    /// The second image.
    pub b: PairSide,
    /// Both images show one person.
    pub same: bool,
}

/// Reads LFW View 2 `pairs.txt`: a header `folds<TAB>N`, then for each fold N matched lines
/// `name i j` followed by N mismatched lines `name1 i name2 j`. Pairs keep file order.
pub fn read_lfw_pairs(path: &Path) -> Result<Vec<LfwPair>, ReadError> {
    let text = read_text(path)?;
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let (_, header) = lines
        .next()
        .ok_or_else(|| err(path, Some(1), "empty file; expected a header `10<TAB>N`"))?;
    let h: Vec<&str> = header.split_whitespace().collect();
    let (folds, n) = match h.as_slice() {
        [f, n] => (f.parse::<usize>().ok(), n.parse::<usize>().ok()),
        _ => (None, None),
    };
    let (Some(folds), Some(n)) = (folds, n) else {
        return Err(err(
            path,
            Some(1),
            format!("header `{header}` should be `<folds><TAB><pairs per fold>`, like `10\t300`"),
        ));
    };
    let index = |s: &str, line: usize| {
        s.parse::<u32>()
            .ok()
            .filter(|&i| i >= 1)
            .ok_or_else(|| err(path, Some(line), format!("image number `{s}` is not a positive integer")))
    };
    let mut out = Vec::with_capacity(folds * 2 * n);
    for fold in 0..folds {
        for k in 0..2 * n {
            let same = k < n;
            let Some((i, line)) = lines.next() else {
                return Err(err(path, None, format!("file ends in fold {} after {k} of its {} pairs; the header promised {folds} folds of {n} matched and {n} mismatched", fold + 1, 2 * n)));
            };
            let ln = i + 1;
            let f: Vec<&str> = line.split_whitespace().collect();
            let pair = match (same, f.as_slice()) {
                (true, [name, a, b]) => LfwPair {
                    fold,
                    a: PairSide {
                        name: (*name).into(),
                        index: index(a, ln)?,
                    },
                    b: PairSide {
                        name: (*name).into(),
                        index: index(b, ln)?,
                    },
                    same,
                },
                (false, [n1, a, n2, b]) => LfwPair {
                    fold,
                    a: PairSide {
                        name: (*n1).into(),
                        index: index(a, ln)?,
                    },
                    b: PairSide {
                        name: (*n2).into(),
                        index: index(b, ln)?,
                    },
                    same,
                },
                (true, _) => {
                    return Err(err(
                        path,
                        Some(ln),
                        format!(
                            "expected a matched pair `name i j` (pair {} of fold {}), found {} fields",
                            k + 1,
                            fold + 1,
                            f.len()
                        ),
                    ))
                }
                (false, _) => {
                    return Err(err(
                        path,
                        Some(ln),
                        format!(
                            "expected a mismatched pair `name1 i name2 j` (pair {} of fold {}), found {} fields",
                            k + 1,
                            fold + 1,
                            f.len()
                        ),
                    ))
                }
            };
            out.push(pair);
        }
    }
    if let Some((i, _)) = lines.next() {
        return Err(err(
            path,
            Some(i + 1),
            format!("unexpected line after the {folds} folds the header announced"),
        ));
    }
    Ok(out)
}

/// One YouTube Faces pair: videos as `Name/video_number`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YtfPair {
    /// 1-based split, as in the file.
    pub split: usize,
    /// The first video, `Name/video`.
    pub a: String,
    /// The second video.
    pub b: String,
    /// Both videos show one person.
    pub same: bool,
    /// The file's fifth column: the two videos are physically the same footage.
    pub physically_same: bool,
}

/// Reads YouTube Faces `splits.txt`: comma-separated `split number, first video, second video,
/// is same, is physically the same` (the last two 0/1), with an optional header line.
pub fn read_ytf_splits(path: &Path) -> Result<Vec<YtfPair>, ReadError> {
    let text = read_text(path)?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let ln = i + 1;
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        if line.trim().is_empty() || (ln == 1 && f[0].parse::<usize>().is_err()) {
            continue; // header
        }
        if f.len() != 5 {
            return Err(err(
                path,
                Some(ln),
                format!(
                    "expected 5 comma-separated fields (split, first video, second video, is same, is physically the same), found {}",
                    f.len()
                ),
            ));
        }
        let split = f[0]
            .parse::<usize>()
            .map_err(|_| err(path, Some(ln), format!("split number `{}` is not an integer", f[0])))?;
        let flag = |s: &str| match s {
            "0" => Ok(false),
            "1" => Ok(true),
            _ => Err(err(path, Some(ln), format!("`{s}` should be 0 or 1"))),
        };
        for v in [f[1], f[2]] {
            if v.split('/').count() != 2 {
                return Err(err(path, Some(ln), format!("video `{v}` should look like `Name/number`")));
            }
        }
        out.push(YtfPair {
            split,
            a: f[1].into(),
            b: f[2].into(),
            same: flag(f[3])?,
            physically_same: flag(f[4])?,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lfw_pairs_parse_in_file_order_and_errors_name_the_line() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("pairs.txt");
        std::fs::write(
            &p,
            "2\t1\nAbel_Pacheco\t1\t4\nAbdel_Madi\t1\tAbdul_Majeed\t2\nAbel_X\t2\t3\nA_B\t1\tC_D\t1\n",
        )
        .unwrap();
        let pairs = read_lfw_pairs(&p).unwrap();
        assert_eq!(pairs.len(), 4);
        assert_eq!(pairs[0].a.rel_path(), "Abel_Pacheco/Abel_Pacheco_0001.jpg");
        assert_eq!(pairs[0].b.index, 4);
        assert!(pairs[0].same && !pairs[1].same && pairs[2].same);
        assert_eq!((pairs[1].b.name.as_str(), pairs[3].fold), ("Abdul_Majeed", 1));

        std::fs::write(&p, "2\t1\nAbel_Pacheco\t1\t4\nAbdel_Madi\t1\t2\n").unwrap();
        let e = read_lfw_pairs(&p).unwrap_err().to_string();
        assert!(e.contains("pairs.txt:3: expected a mismatched pair"), "{e}");
        std::fs::write(&p, "ten\t300\n").unwrap();
        assert!(read_lfw_pairs(&p).unwrap_err().to_string().contains("pairs.txt:1: header"));
        std::fs::write(&p, "1\t1\nA\t1\t2\n").unwrap();
        assert!(read_lfw_pairs(&p)
            .unwrap_err()
            .to_string()
            .contains("file ends in fold 1 after 1 of its 2 pairs"));
    }

    #[test]
    fn ytf_splits_parse_with_or_without_header() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("splits.txt");
        std::fs::write(
            &p,
            "split number, first name, second name, is same, is physically the same\n1, Aaron_E/0, Aaron_E/2, 1, 1\n2, A/1, B/3, 0, 0\n",
        )
        .unwrap();
        let s = read_ytf_splits(&p).unwrap();
        assert_eq!(
            s,
            vec![
                YtfPair {
                    split: 1,
                    a: "Aaron_E/0".into(),
                    b: "Aaron_E/2".into(),
                    same: true,
                    physically_same: true
                },
                YtfPair {
                    split: 2,
                    a: "A/1".into(),
                    b: "B/3".into(),
                    same: false,
                    physically_same: false
                },
            ]
        );
        std::fs::write(&p, "1, A/0, B/1, 2, 0\n").unwrap();
        assert!(read_ytf_splits(&p)
            .unwrap_err()
            .to_string()
            .contains("splits.txt:1: `2` should be 0 or 1"));
    }
}
