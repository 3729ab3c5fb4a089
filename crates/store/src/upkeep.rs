//! Keeping a shared store healthy: `verify --store` (every object re-hashed or re-checked, what
//! is bad on a second look removed) and `gc --store` (what no kept artifact needs, sparing the
//! young and what a concurrent push reuses; the scheme is in `mirror.rs`'s module doc).

use crate::mirror::{now_unix, Mirror, MirrorError, RemoteProblem, MIN_GC_GRACE};
use crate::remote::RemoteObject;
use std::collections::BTreeSet;
use std::time::Duration;

impl Mirror {
    /// Re-hashes every blob in the store (streamed), checks that every index entry and
    /// manifest is usable and that every manifest's blobs are there. What is bad on a second
    /// look is deleted — a blob whose content does not hash to its name, a manifest that
    /// lacks a blob or is refused, an index entry that is refused — so that nothing corrupt is
    /// trusted and the next run that makes the artifact uploads it again. Returns how many
    /// objects were checked and what was wrong.
    pub fn verify(&self) -> Result<(usize, Vec<RemoteProblem>), MirrorError> {
        let mut problems = Vec::new();
        let mut say = |key: &str, problem: String| {
            problems.push(RemoteProblem {
                key: key.to_owned(),
                problem,
            })
        };
        let blobs = self.remote.list("blobs")?;
        let mut good = BTreeSet::new();
        for b in &blobs {
            let name = b.key.trim_start_matches("blobs/");
            let Some(got) = self.hash_object(&b.key)? else { continue };
            if got == name {
                good.insert(got);
            } else if self.hash_object(&b.key)?.as_deref() == Some(name) {
                good.insert(name.to_owned());
                say(
                    &b.key,
                    "it read wrong once and right on a second read; kept (check this machine)".into(),
                );
            } else {
                self.remote.delete(&b.key)?;
                say(&b.key, format!("its content hashes to {got}; removed"));
            }
        }
        let manifests = self.remote.list("artifacts")?;
        for m in &manifests {
            let artifact = m.key.trim_start_matches("artifacts/").trim_end_matches(".json");
            let why = match self.manifest(artifact) {
                Ok(Some(manifest)) => manifest
                    .files
                    .iter()
                    .find(|f| !good.contains(&f.blake3))
                    .map(|f| format!("lacks the blob of {}", f.path)),
                Ok(None) => None,
                Err(e) if e.is_bad_object() => Some(format!("is unusable ({e})")),
                Err(e) => return Err(e),
            };
            if let Some(why) = why {
                self.remote.delete(&m.key)?;
                say(&m.key, format!("{why}; removed, so the artifact is rebuilt and uploaded again"));
            }
        }
        let index = self.remote.list("index")?;
        for o in &index {
            let fp = o.key.trim_start_matches("index/").trim_end_matches(".json");
            match self.index_entry(fp) {
                Err(e) if e.is_bad_object() => {
                    self.remote.delete(&o.key)?;
                    say(
                        &o.key,
                        format!("is unusable ({e}); removed, so the stage is rebuilt and recorded again"),
                    );
                }
                Err(e) => return Err(e),
                Ok(_) => {}
            }
        }
        Ok((blobs.len() + manifests.len() + index.len(), problems))
    }

    /// Removes (with `delete`; else only lists) what no artifact in `keep` needs: index
    /// entries and manifests of other artifacts (and unusable ones), and blobs no remaining
    /// manifest names. An object younger than `grace` (at least [`MIN_GC_GRACE`]) is never
    /// removed: a run in flight uploads its blobs before its manifest and index entry, so
    /// they look unused until it finishes. See the module doc for blobs a push reuses.
    pub fn gc(&self, keep: &BTreeSet<String>, grace: Duration, delete: bool) -> Result<Vec<RemoteObject>, MirrorError> {
        let grace = grace.max(MIN_GC_GRACE).as_secs() as i64;
        let young = |modified: i64| now_unix().saturating_sub(modified) < grace;
        let mut gone = Vec::new();
        for o in self.remote.list("index")? {
            let fp = o.key.trim_start_matches("index/").trim_end_matches(".json");
            let used = matches!(self.index_entry(fp), Ok(Some(e)) if keep.contains(&e.artifact));
            if !used && !young(o.modified_unix) {
                gone.push(o);
            }
        }
        let mut seen = BTreeSet::new();
        let mut needed = BTreeSet::new();
        for o in self.remote.list("artifacts")? {
            let artifact = o.key.trim_start_matches("artifacts/").trim_end_matches(".json").to_owned();
            if keep.contains(&artifact) || young(o.modified_unix) {
                self.add_blobs(&artifact, &mut needed)?;
            } else {
                gone.push(o.clone());
            }
            seen.insert(o.key);
        }
        let candidates: Vec<RemoteObject> = self
            .remote
            .list("blobs")?
            .into_iter()
            .filter(|o| !needed.contains(o.key.trim_start_matches("blobs/")) && !young(o.modified_unix))
            .collect();
        if !delete {
            gone.extend(candidates);
            return Ok(gone);
        }
        for o in &gone {
            self.remote.delete(&o.key)?;
        }
        // Manifests written since the listing may reuse a candidate.
        for o in self.remote.list("artifacts")? {
            if !seen.contains(&o.key) {
                self.add_blobs(o.key.trim_start_matches("artifacts/").trim_end_matches(".json"), &mut needed)?;
            }
        }
        for o in candidates {
            let name = o.key.trim_start_matches("blobs/");
            let refreshed = self.remote.head(&o.key)?.is_none_or(|now| young(now.modified_unix));
            if !needed.contains(name) && !refreshed {
                self.remote.delete(&o.key)?;
                gone.push(o);
            }
        }
        Ok(gone)
    }

    /// Adds the blobs `artifact`'s manifest names to `needed` (nothing for an unusable one).
    fn add_blobs(&self, artifact: &str, needed: &mut BTreeSet<String>) -> Result<(), MirrorError> {
        match self.manifest(artifact) {
            Ok(Some(m)) => needed.extend(m.files.into_iter().map(|f| f.blake3)),
            Ok(None) => {}
            Err(e) if e.is_bad_object() => {}
            Err(e) => return Err(e),
        }
        Ok(())
    }
}
