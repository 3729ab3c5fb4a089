//! `spherepipe report`: the pipeline's page (`spherepipe-report`), gathered from the plan, the
//! run records and the artifacts. `run` writes it too, at the end of every run.

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::Value;
use spherepipe_engine::lineage::Lineage;
use spherepipe_engine::records::{self, Attempt, RunRecord};
use spherepipe_engine::StageState as RunState;
use spherepipe_engine::{plan, NodeStatus, Status};
use spherepipe_pipeline::{Pipeline, Source};
use spherepipe_report::{Figure, Image, Page, StageState, StageView};
use spherepipe_store::{FileEntry, Store};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What `show` says of a stage, and what the page shows on click (`show --json` is this,
/// serialised).
#[derive(Debug, Clone, Serialize)]
pub struct StageDetails {
    /// The stage's name.
    pub stage: String,
    /// Its kind.
    pub kind: String,
    /// The kind's version.
    pub version: String,
    /// Cached, stale or never run.
    pub state: Status,
    /// Why it is not cached, in words.
    pub reason: String,
    /// Its fingerprint, when its inputs are known.
    pub fingerprint: Option<String>,
    /// Its resolved params.
    pub params: BTreeMap<String, Value>,
    /// The artifact's directory in the local cache.
    pub artifact: Option<PathBuf>,
    /// Where the shared store holds its manifest, when only it has the artifact.
    pub in_store: Option<String>,
    /// The artifact's files.
    pub files: Vec<FileEntry>,
    /// The last run that ran, found, failed or cancelled it.
    pub last_run: Option<LastRun>,
    /// How its artifact was made (inputs by the stages that made them, host, times, executor):
    /// from this cache's index, else the shared store's. `spherepipe lineage` walks the chain.
    pub lineage: Option<Lineage>,
}

/// A stage's last recorded run, as `show` gives it.
#[derive(Debug, Clone, Serialize)]
pub struct LastRun {
    /// The run.
    pub run_id: String,
    /// When it started, in seconds since the Unix epoch.
    pub started_unix: f64,
    /// What became of the stage.
    pub state: RunState,
    /// Seconds the stage ran.
    pub wall_s: f64,
    /// The artifact it made or found.
    pub artifact: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// Its Slurm jobs, one per attempt: the resources each asked for and how Slurm ended it.
    pub attempts: Vec<Attempt>,
}

/// Stage `i`'s details; `runs` are the run records, oldest first (its last run is looked up
/// there).
pub fn details(p: &Pipeline, store: &Store, s: &NodeStatus, i: usize, runs: &[RunRecord]) -> Result<StageDetails> {
    let local = s.artifact.as_ref().and_then(|a| store.read_manifest(a).ok());
    let dir = s.artifact.as_ref().filter(|_| local.is_some()).map(|a| store.artifact_dir(a));
    // Held only by the shared store: its manifest there, and where.
    let remote = match (&s.artifact, &local, store.mirror()) {
        (Some(a), None, Some(m)) => m
            .manifest(a)
            .context("reading the store")?
            .map(|man| (format!("{}/artifacts/{a}.json", m.url()), man)),
        _ => None,
    };
    let in_store = remote.as_ref().map(|r| r.0.clone());
    let lineage = match (&s.fingerprint, &in_store) {
        (Some(fp), None) => store.lookup(fp),
        (Some(fp), Some(_)) => store.locate(fp).context("reading the store")?,
        (None, _) => None,
    }
    .as_ref()
    .and_then(Lineage::from_entry);
    let files = local.or(remote.map(|r| r.1)).map(|m| m.files).unwrap_or_default();
    let node = &p.nodes[i];
    let last_run = runs.iter().rev().find_map(|r| {
        let rec = r.stages.iter().find(|x| x.stage == node.name && x.state != RunState::Skipped)?;
        Some(LastRun {
            run_id: r.run_id.clone(),
            started_unix: r.started_unix,
            state: rec.state,
            wall_s: rec.wall_s,
            artifact: rec.artifact.clone(),
            error: rec.error.clone(),
            attempts: rec.attempts.clone(),
        })
    });
    Ok(StageDetails {
        stage: node.name.clone(),
        kind: node.kind.kind().to_owned(),
        version: node.kind.version().to_owned(),
        state: s.state,
        reason: s.reason(),
        fingerprint: s.fingerprint.clone(),
        params: node.params.0.clone(),
        artifact: dir,
        in_store,
        files,
        last_run,
        lineage,
    })
}

/// The page of `p` as it stands in `store`; `history` adds earlier runs' results.
pub fn page(p: &Pipeline, file: &Path, store: &Store, history: bool) -> Result<Page> {
    let status = plan(p, store)?;
    let runs = records::read_runs(store);
    let latest = runs.iter().rev().find(|r| r.pipeline == p.name);
    let mut stages = Vec::new();
    let mut dirs = Vec::new();
    for (i, s) in status.iter().enumerate() {
        let d = details(p, store, s, i, &runs)?;
        stages.push(stage_view(p, s, i, latest, &runs, &d));
        dirs.push(d.artifact);
    }
    let (results, missing) = crate::metrics::rows(store, &p.name, &status, &sinks(p), history);
    Ok(Page {
        name: p.name.clone(),
        file: file.display().to_string(),
        generated: utc_now(),
        stages,
        edges: edges(p),
        results,
        missing,
        figures: figures(p, &dirs),
    })
}

/// Writes the page to `out` (through a temporary file, so a reader never sees half a page).
pub fn write(page: &Page, out: &Path) -> Result<()> {
    // Whole or not at all (the directory made if need be), and two runs writing one page
    // never share a temporary file.
    spherepipe_store::write_atomic(out, spherepipe_report::render(page).as_bytes()).with_context(|| format!("writing {}", out.display()))
}

/// Where `run` writes the page: `reports/<pipeline>.html` in the cache.
pub fn default_path(p: &Pipeline, store: &Store) -> PathBuf {
    store.layout().report(&p.name)
}

/// A stage's state word: `ran` when `latest` (this pipeline's last run) made its artifact,
/// `failed` when that run failed it and nothing replaced it, else the plan's. Its time is the
/// run that made its artifact, in any pipeline (`runs`), or the one that failed.
fn stage_view(p: &Pipeline, s: &NodeStatus, i: usize, latest: Option<&RunRecord>, runs: &[RunRecord], d: &StageDetails) -> StageView {
    let node = &p.nodes[i];
    let latest = latest.and_then(|r| r.stages.iter().find(|x| x.stage == node.name));
    let state = match (s.state, latest) {
        (Status::Cached, Some(r)) if r.state == RunState::Ran && r.artifact == s.artifact => StageState::Ran,
        (Status::Cached, _) => StageState::Cached,
        (_, Some(r)) if r.state == RunState::Failed => StageState::Failed(r.error.clone().unwrap_or_default()),
        (Status::Stale, _) => StageState::Stale(s.reason()),
        (Status::NeverRun, _) => StageState::NeverRun,
    };
    let made = |r: &&spherepipe_engine::records::StageRecord| match &state {
        StageState::Failed(_) => r.stage == node.name && r.state == RunState::Failed,
        _ => r.state == RunState::Ran && r.artifact.is_some() && r.artifact == s.artifact,
    };
    let wall_s = runs.iter().rev().find_map(|r| r.stages.iter().find(made)).map(|r| r.wall_s);
    StageView {
        name: node.name.clone(),
        base: node.base.clone(),
        kind: node.kind.kind().to_owned(),
        state,
        wall_s,
        bytes: (!d.files.is_empty()).then(|| d.files.iter().map(|f| f.size).sum()),
        details: serde_json::to_value(d).unwrap_or(Value::Null),
    }
}

/// (input, consumer) for every stage input that is a stage.
fn edges(p: &Pipeline) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for (i, node) in p.nodes.iter().enumerate() {
        for source in node.inputs.values().flatten() {
            if let Source::Stage(j) = source {
                if !out.contains(&(*j, i)) {
                    out.push((*j, i));
                }
            }
        }
    }
    out
}

/// The stages nothing depends on: where results are.
pub fn sinks(p: &Pipeline) -> Vec<String> {
    let used: Vec<usize> = edges(p).iter().map(|e| e.0).collect();
    (0..p.nodes.len())
        .filter(|i| !used.contains(i))
        .map(|i| p.nodes[i].name.clone())
        .collect()
}

/// The largest figure file the page embeds.
const MAX_FIGURE_BYTES: u64 = 16 << 20;

/// Every figure a cached stage's artifact holds (as its kind lists them), then a contact sheet
/// of the first file of the first artifact whose kind `shows_faces`.
fn figures(p: &Pipeline, dirs: &[Option<PathBuf>]) -> Vec<Figure> {
    let mut out = Vec::new();
    for (node, dir) in p.nodes.iter().zip(dirs) {
        let Some(dir) = dir else { continue };
        for (file, caption) in node.kind.figures() {
            // A figure is a few hundred kB; a larger file (an artifact may come from a shared
            // store) is left out rather than copied into the page.
            let path = dir.join(file);
            if std::fs::metadata(&path).map_or(true, |m| m.len() > MAX_FIGURE_BYTES) {
                continue;
            }
            if let Ok(svg) = std::fs::read_to_string(&path) {
                out.push(Figure {
                    stage: node.name.clone(),
                    caption: caption.to_owned(),
                    image: Image::Svg(svg),
                });
            }
        }
    }
    let faces = p
        .nodes
        .iter()
        .zip(dirs)
        .find_map(|(n, d)| d.as_ref().filter(|_| n.kind.shows_faces()).map(|d| (n, d)));
    if let Some((node, dir)) = faces {
        if let Ok((png, n, file)) = crate::inspect::first_faces(dir, 24) {
            out.push(Figure {
                stage: node.name.clone(),
                caption: format!("{n} faces of {file}, with their five landmarks"),
                image: Image::Png(png),
            });
        }
    }
    out
}

/// Now, as `2026-11-30 09:41 UTC`.
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    utc_text(secs)
}

/// Seconds since the Unix epoch as a UTC date and time (days to a civil date: Howard
/// Hinnant's algorithm).
pub(crate) fn utc_text(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let (hour, minute) = ((secs % 86_400) / 3600, (secs % 3600) / 60);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year}-{month:02}-{day:02} {hour:02}:{minute:02} UTC")
}

#[cfg(test)]
mod tests {
    use super::utc_text;

    #[test]
    fn utc_text_gives_the_calendar_date() {
        assert_eq!(utc_text(0), "1970-01-01 00:00 UTC");
        // 2000-02-29 12:34:56 UTC, a leap day.
        assert_eq!(utc_text(951_827_696), "2000-02-29 12:34 UTC");
        // 2026-11-30 09:15:36 UTC.
        assert_eq!(utc_text(1_796_030_136), "2026-11-30 09:15 UTC");
    }
}
