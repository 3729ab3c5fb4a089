//! Checks on names read from outside the process: a shared store's manifests, index entries
//! and scratch keys, and a local cache's own index (which another user, a bad disk or a hand
//! edit may have changed). Nothing read from there is joined to a path, or used as a key,
//! before it passes these checks.
//!
//! **Architecture Invariant:** a relative path that passes [`check_rel_path`] joined to a
//! directory names something inside that directory: it is not absolute, has no `.` or `..`
//! component, no empty component, no backslash and no NUL.

use crate::{IndexEntry, Manifest, MANIFEST};

/// The longest relative path accepted (bytes), and the longest component: what Linux allows.
const MAX_PATH: usize = 4096;
const MAX_COMPONENT: usize = 255;
/// The most files one manifest may list: 10 million is far above any artifact spherepipe
/// makes, and bounds what a forged manifest can make a reader allocate or create.
pub const MAX_FILES: usize = 10_000_000;

/// Why a name read from outside was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

fn refuse(why: String) -> Result<(), Refused> {
    Err(Refused(why))
}

/// A content hash or a fingerprint: 64 lowercase hexadecimal characters (blake3's hex).
pub fn check_hash(what: &str, s: &str) -> Result<(), Refused> {
    let ok = s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if ok {
        Ok(())
    } else {
        refuse(format!("{what} `{}` is not 64 lowercase hexadecimal characters", shown(s)))
    }
}

/// A path relative to a directory, `/`-separated, that stays inside it.
pub fn check_rel_path(s: &str) -> Result<(), Refused> {
    if s.is_empty() {
        return refuse("an empty file path".into());
    }
    if s.len() > MAX_PATH {
        return refuse(format!("a file path of {} bytes (at most {MAX_PATH})", s.len()));
    }
    if s.contains('\0') || s.contains('\\') {
        return refuse(format!("file path `{}` holds a NUL or a backslash", shown(s)));
    }
    if s.starts_with('/') {
        return refuse(format!("file path `{}` is absolute", shown(s)));
    }
    for c in s.split('/') {
        match c {
            "" => return refuse(format!("file path `{}` has an empty component", shown(s))),
            "." | ".." => return refuse(format!("file path `{}` has a `{c}` component", shown(s))),
            _ if c.len() > MAX_COMPONENT => return refuse(format!("file path `{}` has a component over {MAX_COMPONENT} bytes", shown(s))),
            _ => {}
        }
    }
    Ok(())
}

/// At most 80 characters of `s`, with control characters escaped, for a message.
fn shown(s: &str) -> String {
    let mut out: String = s.chars().take(80).flat_map(char::escape_default).collect();
    if s.chars().count() > 80 {
        out.push('…');
    }
    out
}

impl Manifest {
    /// Checks a manifest read from outside as the manifest of artifact `expected`: its hash
    /// is `expected`, every path stays inside the artifact and is listed once (sorted, no file
    /// also used as a directory, not the reserved manifest name), every file hash is a hash,
    /// and the listing hashes to `expected` — so the manifest says exactly what the artifact
    /// was when it was made.
    pub fn check(&self, expected: &str) -> Result<(), Refused> {
        check_hash("artifact hash", expected)?;
        if self.hash != expected {
            return refuse(format!("it names artifact {} instead of {expected}", shown(&self.hash)));
        }
        if self.files.len() > MAX_FILES {
            return refuse(format!("it lists {} files (at most {MAX_FILES})", self.files.len()));
        }
        for f in &self.files {
            check_rel_path(&f.path)?;
            check_hash(&format!("the hash of {}", shown(&f.path)), &f.blake3)?;
            if f.path == MANIFEST {
                return refuse(format!("it lists `{MANIFEST}`, the store's own name"));
            }
        }
        for w in self.files.windows(2) {
            let (a, b) = (&w[0].path, &w[1].path);
            if a >= b {
                return refuse(format!(
                    "its files are not sorted and unique (`{}` before `{}`)",
                    shown(a),
                    shown(b)
                ));
            }
            if b.strip_prefix(a.as_str()).is_some_and(|rest| rest.starts_with('/')) {
                return refuse(format!("`{}` is listed as a file and as a directory", shown(a)));
            }
        }
        let listed = crate::hash::listing_hash(&self.files);
        if listed != expected {
            return refuse(format!("its file list hashes to {listed}, not to {expected}"));
        }
        Ok(())
    }
}

impl IndexEntry {
    /// Checks an index entry read from outside as the entry for `fingerprint`.
    pub fn check(&self, fingerprint: &str) -> Result<(), Refused> {
        check_hash("fingerprint", &self.fingerprint)?;
        if self.fingerprint != fingerprint {
            return refuse(format!("it is the entry of fingerprint {}, not {fingerprint}", self.fingerprint));
        }
        check_hash("artifact hash", &self.artifact)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FileEntry;

    fn h(s: &str) -> String {
        blake3::hash(s.as_bytes()).to_hex().to_string()
    }

    #[test]
    fn paths_that_climb_out_or_are_odd_are_refused() {
        for good in ["a", "a/b.txt", "sub/dir/x.parquet", ".hidden", "a..b", "..a"] {
            assert_eq!(check_rel_path(good), Ok(()), "{good}");
        }
        let long_component = "x".repeat(256);
        let long_path = ["y"; 2100].join("/");
        let refusals = [
            ("", "empty file path"),
            ("../x", "`..` component"),
            ("a/../../etc/passwd", "`..` component"),
            ("/etc/passwd", "absolute"),
            ("a//b", "empty component"),
            ("a/", "empty component"),
            ("./a", "`.` component"),
            ("a\\..\\b", "backslash"),
            ("a\0b", "NUL"),
            (long_component.as_str(), "component over 255"),
            (long_path.as_str(), "bytes (at most 4096)"),
        ];
        for (bad, why) in refusals {
            let e = check_rel_path(bad).unwrap_err().0;
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn hashes_are_64_lowercase_hex() {
        assert_eq!(check_hash("x", &h("a")), Ok(()));
        for bad in [
            "",
            "abc",
            &h("a").to_uppercase(),
            &format!("{}0", h("a")),
            &format!("../{}", &h("a")[3..]),
        ] {
            assert!(check_hash("fingerprint", bad).is_err(), "{bad}");
        }
    }

    fn manifest(files: &[(&str, &str)]) -> Manifest {
        let files: Vec<FileEntry> = files
            .iter()
            .map(|(p, c)| FileEntry {
                path: p.to_string(),
                size: c.len() as u64,
                blake3: h(c),
            })
            .collect();
        Manifest {
            hash: crate::hash::listing_hash(&files),
            files,
        }
    }

    #[test]
    fn a_manifest_must_hash_to_its_name_and_list_only_safe_paths() {
        let m = manifest(&[("a.txt", "A"), ("sub/b", "B")]);
        assert_eq!(m.check(&m.hash), Ok(()));
        // Its hash is the listing's: a file added to a genuine manifest is caught.
        let mut more = m.clone();
        more.files.push(FileEntry {
            path: "zz".into(),
            size: 1,
            blake3: h("Z"),
        });
        assert!(more.check(&m.hash).unwrap_err().0.contains("hashes to"));
        // Asked under another name.
        assert!(m.check(&h("other")).unwrap_err().0.contains("instead of"));
        // A forged manifest that is self-consistent but climbs out.
        for (bad, why) in [
            (manifest(&[("../escape", "x")]), "`..` component"),
            (manifest(&[("/abs", "x")]), "absolute"),
            (manifest(&[(MANIFEST, "x")]), "the store's own name"),
            (manifest(&[("a", "x"), ("a/b", "y")]), "as a file and as a directory"),
            (manifest(&[("b", "x"), ("a", "y")]), "not sorted"),
            (manifest(&[("a", "x"), ("a", "x")]), "not sorted and unique"),
        ] {
            let e = bad.check(&bad.hash).unwrap_err().0;
            assert!(e.contains(why), "{e}");
        }
        let mut short = manifest(&[("a", "x")]);
        short.files[0].blake3 = "abc".into();
        short.hash = crate::hash::listing_hash(&short.files);
        assert!(short.check(&short.hash).unwrap_err().0.contains("the hash of a"));
    }

    #[test]
    fn an_index_entry_must_be_the_one_asked_for() {
        let e = IndexEntry {
            fingerprint: h("fp"),
            artifact: h("art"),
            provenance: serde_json::Value::Null,
        };
        assert_eq!(e.check(&h("fp")), Ok(()));
        assert!(e.check(&h("other")).unwrap_err().0.contains("not"));
        let forged = IndexEntry {
            artifact: "../../etc".into(),
            ..e.clone()
        };
        assert!(forged.check(&h("fp")).unwrap_err().0.contains("artifact hash"));
    }
}
