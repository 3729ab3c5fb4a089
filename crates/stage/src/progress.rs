//! Progress reporting and cooperative cancellation, as seen from inside a stage.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Where progress goes (a terminal bar, log lines, nothing). Implemented by the front end.
pub trait ProgressSink: Send + Sync {
    /// How many items there are.
    fn set_length(&self, len: u64);
    /// How many are done.
    fn set_position(&self, pos: u64);
    /// A line of status.
    fn message(&self, msg: &str);
}

/// A cheap, cloneable handle a stage uses to report item counts. `inc` is safe to call from
/// many rayon threads at once.
#[derive(Clone)]
pub struct Progress {
    sink: Arc<dyn ProgressSink>,
    pos: Arc<AtomicU64>,
}

impl Progress {
    /// A handle reporting to `sink`.
    pub fn new(sink: Arc<dyn ProgressSink>) -> Self {
        Progress {
            sink,
            pos: Arc::new(AtomicU64::new(0)),
        }
    }
    /// Announces how many items the stage will process.
    pub fn set_length(&self, len: u64) {
        self.sink.set_length(len);
    }
    /// Counts `n` more items done.
    pub fn inc(&self, n: u64) {
        let pos = self.pos.fetch_add(n, Ordering::Relaxed) + n;
        self.sink.set_position(pos);
    }
    /// Shows a line of status.
    pub fn message(&self, msg: &str) {
        self.sink.message(msg);
    }
    /// Items done so far.
    pub fn position(&self) -> u64 {
        self.pos.load(Ordering::Relaxed)
    }
}

/// Returned (through `anyhow`) by a stage that stopped because it was asked to.
#[derive(Debug, thiserror::Error)]
#[error("cancelled")]
pub struct Cancelled;

/// Set by the engine on Ctrl-C; a stage polls it between units of work.
#[derive(Clone, Default, Debug)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A token not yet cancelled.
    pub fn new() -> Self {
        Self::default()
    }
    /// Asks every stage holding a clone to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    /// Whether cancellation was requested.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
    /// `Err(Cancelled)` once cancellation was requested: use with `?` inside loops.
    pub fn check(&self) -> Result<(), Cancelled> {
        if self.is_cancelled() {
            Err(Cancelled)
        } else {
            Ok(())
        }
    }
}
