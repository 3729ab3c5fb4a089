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
    let (folds, n) = lfw_header(path, header)?;
    // The header is untrusted: it sizes nothing beyond the lines the file holds.
    let promised = n.checked_mul(2).and_then(|m| m.checked_mul(folds)).ok_or_else(|| {
        err(
            path,
            Some(1),
            format!("the header promises {folds} folds of {n} pairs each, more than can be counted"),
        )
    })?;
    let mut out = Vec::with_capacity(promised.min(text.lines().count()));
    for fold in 0..folds {
        for k in 0..2 * n {
            let Some((i, line)) = lines.next() else {
                return Err(err(path, None, format!("file ends in fold {} after {k} of its {} pairs; the header promised {folds} folds of {n} matched and {n} mismatched", fold + 1, 2 * n)));
            };
            out.push(lfw_pair(path, i + 1, line, fold, k, n)?);
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

/// The header `<folds><TAB><pairs per fold>`.
fn lfw_header(path: &Path, header: &str) -> Result<(usize, usize), ReadError> {
    let h: Vec<&str> = header.split_whitespace().collect();
    match h.as_slice() {
        [f, n] => f.parse::<usize>().ok().zip(n.parse::<usize>().ok()),
        _ => None,
    }
    .ok_or_else(|| {
        err(
            path,
            Some(1),
            format!("header `{header}` should be `<folds><TAB><pairs per fold>`, like `10\t300`"),
        )
    })
}

/// Pair `k` of `fold` at line `ln`: the first `n` of a fold are matched (`name i j`), the next
/// `n` mismatched (`name1 i name2 j`).
fn lfw_pair(path: &Path, ln: usize, line: &str, fold: usize, k: usize, n: usize) -> Result<LfwPair, ReadError> {
    let same = k < n;
    let f: Vec<&str> = line.split_whitespace().collect();
    let (n1, i, n2, j) = match (same, f.as_slice()) {
        (true, [name, i, j]) => (*name, *i, *name, *j),
        (false, [n1, i, n2, j]) => (*n1, *i, *n2, *j),
        _ => {
            let want = if same {
                "a matched pair `name i j`"
            } else {
                "a mismatched pair `name1 i name2 j`"
            };
            return Err(err(
                path,
                Some(ln),
                format!("expected {want} (pair {} of fold {}), found {} fields", k + 1, fold + 1, f.len()),
            ));
        }
    };
    let index = |s: &str| {
        s.parse::<u32>()
            .ok()
            .filter(|&i| i >= 1)
            .ok_or_else(|| err(path, Some(ln), format!("image number `{s}` is not a positive integer")))
    };
    Ok(LfwPair {
        fold,
        a: PairSide {
            name: n1.into(),
            index: index(i)?,
        },
        b: PairSide {
            name: n2.into(),
            index: index(j)?,
        },
        same,
    })
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
            .ok()
            .filter(|&s| s >= 1)
            .ok_or_else(|| err(path, Some(ln), format!("split number `{}` is not an integer from 1 up", f[0])))?;
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
        std::fs::write(&p, "1\t1\nA\t0\t2\nA\t1\tB\t2\n").unwrap();
        assert!(read_lfw_pairs(&p)
            .unwrap_err()
            .to_string()
            .ends_with("pairs.txt:2: image number `0` is not a positive integer"));
        std::fs::write(&p, "1\t1\nA\t1\t2\nA\t1\tB\t2\nC\t1\t2\n").unwrap();
        assert!(read_lfw_pairs(&p)
            .unwrap_err()
            .to_string()
            .ends_with("pairs.txt:4: unexpected line after the 1 folds the header announced"));
        std::fs::write(&p, "1\t1\nA\t1\nA\t1\tB\t2\n").unwrap();
        assert!(read_lfw_pairs(&p)
            .unwrap_err()
            .to_string()
            .ends_with("pairs.txt:2: expected a matched pair `name i j` (pair 1 of fold 1), found 2 fields"));
    }

    #[test]
    fn headers_and_split_numbers_that_lie_are_refused_without_allocating() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("pairs.txt");
        // A header that promises a billion pairs per fold in a three-line file.
        std::fs::write(&p, "10\t1000000000\nA\t1\t2\nB\t1\t2\n").unwrap();
        let e = read_lfw_pairs(&p).unwrap_err().to_string();
        assert!(e.contains("file ends in fold 1 after 2 of its 2000000000 pairs"), "{e}");
        std::fs::write(&p, format!("{}\t{}\n", usize::MAX, usize::MAX)).unwrap();
        let e = read_lfw_pairs(&p).unwrap_err().to_string();
        assert!(e.contains("pairs.txt:1") && e.contains("more than can be counted"), "{e}");
        let y = d.path().join("splits.txt");
        std::fs::write(&y, "0, A/1, B/2, 0, 0\n").unwrap();
        let e = read_ytf_splits(&y).unwrap_err().to_string();
        assert!(e.contains("splits.txt:1") && e.contains("from 1 up"), "{e}");
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
