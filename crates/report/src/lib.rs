//! The page of a pipeline: one self-contained HTML file (inline CSS, inline SVG, a few lines of
//! inline JavaScript; nothing fetched) with the DAG and each stage's state, the results table
//! and the figures. It is built from a [`Page`], plain data the caller gathers from the engine
//! and the store, so this crate knows nothing of either.

#![warn(missing_docs)]

mod graph;
mod html;
#[cfg(test)]
mod tests;

pub use graph::{layout, DagDrawing};
pub use html::{base64, escape};
use serde::Serialize;
use spherepipe_headline::Row;

/// Everything the page shows.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// The pipeline's name.
    pub name: String,
    /// The pipeline file, as given.
    pub file: String,
    /// When the page was written (shown as is).
    pub generated: String,
    /// Every expanded stage, in pipeline order.
    pub stages: Vec<StageView>,
    /// Edges between stages, as indices into `stages` (input, consumer).
    pub edges: Vec<(usize, usize)>,
    /// The headline table: one row per evaluation (and, with history, earlier runs).
    pub results: Vec<Row>,
    /// Result stages with no result for these params, and why.
    pub missing: Vec<(String, String)>,
    /// Figures, in order.
    pub figures: Vec<Figure>,
}

/// One expanded stage.
#[derive(Debug, Clone, Serialize)]
pub struct StageView {
    /// Its expanded name (`train@m=3`).
    pub name: String,
    /// Its name in the file (`train`): expansions of one matrix share it and are drawn as one
    /// group node.
    pub base: String,
    /// Its kind.
    pub kind: String,
    /// Where it stands.
    pub state: StageState,
    /// Seconds its artifact took to make, when a run recorded it.
    pub wall_s: Option<f64>,
    /// The artifact's size in bytes, when there is one.
    pub bytes: Option<u64>,
    /// What `spherepipe show --json` says of it (shown on click).
    pub details: serde_json::Value,
}

/// A stage's state as the page shows it: a word and a colour.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", content = "why", rename_all = "kebab-case")]
pub enum StageState {
    /// Its artifact is in the cache and this run made it.
    Ran,
    /// Its artifact is in the cache from before.
    Cached,
    /// It ran before with other material; the reason says what changed.
    Stale(String),
    /// It never ran in this pipeline.
    NeverRun,
    /// Its last run failed; the error's first line.
    Failed(String),
}

impl StageState {
    /// The word on the node.
    pub fn word(&self) -> &'static str {
        match self {
            StageState::Ran => "ran",
            StageState::Cached => "cached",
            StageState::Stale(_) => "stale",
            StageState::NeverRun => "never-run",
            StageState::Failed(_) => "failed",
        }
    }

    /// The why of a stale or failed stage.
    pub fn why(&self) -> Option<&str> {
        match self {
            StageState::Stale(w) | StageState::Failed(w) => Some(w),
            _ => None,
        }
    }

    /// How much it needs attention, for a group's colour: its worst member's.
    fn severity(&self) -> u8 {
        match self {
            StageState::Cached => 0,
            StageState::Ran => 1,
            StageState::NeverRun => 2,
            StageState::Stale(_) => 3,
            StageState::Failed(_) => 4,
        }
    }

    /// The node's fill.
    fn colour(&self) -> &'static str {
        match self {
            StageState::Cached => "#cfe8c9",
            StageState::Ran => "#8fd18a",
            StageState::NeverRun => "#e4e4e4",
            StageState::Stale(_) => "#ffe08a",
            StageState::Failed(_) => "#f4a3a3",
        }
    }
}

/// A figure: an SVG drawn by a stage (inlined) or a PNG (inlined as a data URI).
#[derive(Debug, Clone)]
pub struct Figure {
    /// The stage it comes from.
    pub stage: String,
    /// What it shows.
    pub caption: String,
    /// The image.
    pub image: Image,
}

/// A figure's content.
#[derive(Debug, Clone)]
pub enum Image {
    /// An SVG document's text.
    Svg(String),
    /// PNG bytes.
    Png(Vec<u8>),
}

/// How many stages are in each state, in order of first appearance: `3 cached, 1 stale`.
fn count_states<'a>(states: impl Iterator<Item = &'a StageState>) -> String {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for s in states {
        match counts.iter_mut().find(|c| c.0 == s.word()) {
            Some(c) => c.1 += 1,
            None => counts.push((s.word(), 1)),
        }
    }
    counts.iter().map(|(w, n)| format!("{n} {w}")).collect::<Vec<_>>().join(", ")
}

/// The page as one HTML document.
pub fn render(page: &Page) -> String {
    html::document(page, &layout(page))
}
