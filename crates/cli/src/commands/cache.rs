//! The caches and the shared store: opening the store, `verify` and `gc` of either.

use crate::failure::Failure;
use crate::load_pipeline;
use anyhow::Context;
use spherepipe_engine::{open_store, plan};
use spherepipe_stage::Registry;
use spherepipe_store::{CacheLock, LockMode, Mirror, ObjectRemote, Store};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The local cache as a working copy of the shared store at `url`, which must answer now:
/// an unreachable store, refused credentials or a missing bucket stop here (exit 2), before
/// anything runs or is cached.
pub(crate) fn with_shared_store(store: Store, url: Option<&str>) -> Result<Store, Failure> {
    match url {
        Some(url) => Ok(store.with_mirror(connect_shared(url)?)),
        None => Ok(store),
    }
}

/// The shared store at `url`, checked to answer (exit 2 with the URL and the fix otherwise).
pub(crate) fn connect_shared(url: &str) -> Result<Mirror, Failure> {
    let remote = ObjectRemote::connect(url).map_err(|e| Failure::usage(e.to_string()))?;
    Ok(Mirror::new(std::sync::Arc::new(remote)))
}

/// `spherepipe verify`: re-hashes every artifact; corrupted ones go to quarantine.
pub(crate) fn verify(cache: &Path, mode: LockMode) -> Result<u8, Failure> {
    if !spherepipe_store::CacheLayout::new(cache).artifacts().is_dir() {
        return Err(Failure::usage(format!(
            "{} is not a spherepipe cache (no artifacts/ directory); pass --cache DIR",
            cache.display()
        )));
    }
    let store = Store::open(cache).context("opening the cache")?;
    let _lock = CacheLock::exclusive(store.root(), "verify", mode, |who| {
        eprintln!("waiting for {who} to finish (verify moves corrupted artifacts aside)")
    })
    .map_err(|e| Failure::usage(e.to_string()))?;
    let (n, problems) = store.verify().context("verifying")?;
    for pr in &problems {
        println!("corrupted: {} ({}); moved to {}", pr.artifact, pr.problem, pr.moved_to.display());
    }
    println!(
        "verified {n} artifacts: {} corrupted{}",
        problems.len(),
        if problems.is_empty() { "" } else { "; the next run rebuilds them" }
    );
    Ok(if problems.is_empty() { 0 } else { 1 })
}

/// `spherepipe verify --store URL`: the shared store's objects re-hashed, corrupt ones removed.
pub(crate) fn verify_shared(url: &str) -> Result<u8, Failure> {
    let mirror = connect_shared(url)?;
    let (n, problems) = mirror.verify().context("verifying the store")?;
    for pr in &problems {
        println!("corrupted: {} in {url}: {}", pr.key, pr.problem);
    }
    println!(
        "verified {n} objects in {url}: {} corrupted{}",
        problems.len(),
        if problems.is_empty() {
            ""
        } else {
            "; the next run rebuilds what they belonged to"
        }
    );
    Ok(if problems.is_empty() { 0 } else { 1 })
}

/// `spherepipe gc --store URL`: what the given pipelines do not use, in the shared store,
/// sparing objects younger than the grace period.
pub(crate) fn gc_shared(files: &[PathBuf], registry: &Registry, url: &str, grace_hours: f64, yes: bool) -> Result<u8, Failure> {
    if !(grace_hours.is_finite() && grace_hours >= 0.0) {
        return Err(Failure::usage(format!(
            "--grace-hours {grace_hours}: give a number of hours, 0 or more"
        )));
    }
    let mirror = connect_shared(url)?;
    let mut keep = BTreeSet::new();
    for f in files {
        let p = load_pipeline(f, registry, &[])?;
        let store = open_store(&p)?.with_mirror(mirror.clone());
        keep.extend(plan(&p, &store)?.into_iter().filter_map(|s| s.artifact));
    }
    let grace = std::time::Duration::from_secs_f64(grace_hours * 3600.0).max(spherepipe_store::MIN_GC_GRACE);
    let grace_hours = grace.as_secs_f64() / 3600.0;
    let gone = mirror.gc(&keep, grace, yes).context("collecting garbage in the store")?;
    let bytes: u64 = gone.iter().map(|o| o.size).sum();
    let (each, all) = gc_words(yes);
    for o in &gone {
        println!("{each} {} ({} bytes)", o.key, o.size);
    }
    println!(
        "{url}: {} artifacts kept, {} objects {all} ({bytes} bytes); objects younger than {grace_hours} h are never removed",
        keep.len(),
        gone.len(),
    );
    Ok(0)
}

/// How `gc` words what it found: per item, and in the closing line.
pub(crate) fn gc_words(yes: bool) -> (&'static str, &'static str) {
    if yes {
        ("deleted", "deleted")
    } else {
        ("unused ", "unused; rerun with --yes to delete them")
    }
}

pub(crate) fn gc(files: &[PathBuf], registry: &Registry, yes: bool, mode: LockMode) -> Result<u8, Failure> {
    // Pipelines may use different caches: collect live artifacts per cache.
    let mut live: BTreeMap<PathBuf, (Store, BTreeSet<String>)> = BTreeMap::new();
    for f in files {
        let p = load_pipeline(f, registry, &[])?;
        let store = open_store(&p)?;
        let st = plan(&p, &store)?;
        let entry = live
            .entry(store.root().to_path_buf())
            .or_insert_with(|| (store.clone(), BTreeSet::new()));
        entry.1.extend(st.into_iter().filter_map(|s| s.artifact));
    }
    for (root, (store, keep)) in &live {
        let _lock = if yes {
            let lock = CacheLock::exclusive(root, "gc", mode, |who| eprintln!("waiting for {who} to finish (gc deletes)"));
            Some(lock.map_err(|e| Failure::usage(e.to_string()))?)
        } else {
            None
        };
        let gone = store.gc(keep, yes).context("collecting garbage")?;
        let (each, all) = gc_words(yes);
        for g in &gone {
            println!("{each} {} ({} bytes)", store.artifact_dir(&g.artifact).display(), g.bytes);
        }
        // This cache's bytes alone: the line is per cache.
        let total: u64 = gone.iter().map(|g| g.bytes).sum();
        println!(
            "{}: {} artifacts kept, {} {all} ({total} bytes)",
            root.display(),
            keep.len(),
            gone.len()
        );
    }
    Ok(0)
}
