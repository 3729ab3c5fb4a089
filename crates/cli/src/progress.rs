//! Progress for a run: indicatif bars on a terminal (overall + one per running stage), plain
//! timestamped lines otherwise, nothing with `--quiet`.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use spherepipe_engine::{Observer, Outcome, StageState};
use spherepipe_stage::ProgressSink;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Shows a run's progress and implements the engine's `Observer`.
pub struct Reporter {
    quiet: bool,
    bars: Option<(MultiProgress, ProgressBar)>,
    running: Mutex<HashMap<String, ProgressBar>>,
    start: Instant,
}

impl Reporter {
    /// A reporter for `total` stages: bars on a terminal, lines elsewhere, nothing when `quiet`.
    pub fn new(total: usize, quiet: bool) -> Self {
        use std::io::IsTerminal;
        let bars = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let overall = multi.add(ProgressBar::new(total as u64));
            overall.set_style(
                ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} stages  {elapsed_precise}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            overall.set_prefix("pipeline");
            (multi, overall)
        });
        Reporter {
            quiet,
            bars,
            running: Mutex::new(HashMap::new()),
            start: Instant::now(),
        }
    }

    fn line(&self, msg: &str) {
        if self.quiet {
            return;
        }
        match &self.bars {
            Some((multi, _)) => {
                let _ = multi.println(msg);
            }
            None => eprintln!("[{:>7.1}s] {msg}", self.start.elapsed().as_secs_f64()),
        }
    }

    /// Clears the bars.
    pub fn finish(&self) {
        if let Some((_, overall)) = &self.bars {
            overall.finish_and_clear();
        }
    }
}

struct BarSink(ProgressBar);
impl ProgressSink for BarSink {
    fn set_length(&self, len: u64) {
        self.0.set_length(len);
    }
    fn set_position(&self, pos: u64) {
        self.0.set_position(pos);
    }
    fn message(&self, msg: &str) {
        self.0.set_message(msg.to_owned());
    }
}

/// Without a terminal, a stage's messages become log lines; counts are not printed.
struct LineSink {
    stage: String,
    quiet: bool,
    start: Instant,
}
impl ProgressSink for LineSink {
    fn set_length(&self, _: u64) {}
    fn set_position(&self, _: u64) {}
    fn message(&self, msg: &str) {
        if !self.quiet {
            eprintln!("[{:>7.1}s] {}: {msg}", self.start.elapsed().as_secs_f64(), self.stage);
        }
    }
}

impl Observer for Reporter {
    fn started(&self, stage: &str) -> Arc<dyn ProgressSink> {
        match &self.bars {
            Some((multi, _)) => {
                let bar = multi.add(ProgressBar::new(0));
                bar.set_style(
                    ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {msg} eta {eta}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                );
                bar.set_prefix(stage.to_owned());
                if let Ok(mut r) = self.running.lock() {
                    // A stage that waited for another run and then builds it itself.
                    if let Some(waited) = r.insert(stage.to_owned(), bar.clone()) {
                        waited.finish_and_clear();
                    }
                }
                Arc::new(BarSink(bar))
            }
            None => {
                self.line(&format!("{stage}: started"));
                Arc::new(LineSink {
                    stage: stage.to_owned(),
                    quiet: self.quiet,
                    start: self.start,
                })
            }
        }
    }

    fn finished(&self, o: &Outcome) {
        if let Ok(mut r) = self.running.lock() {
            if let Some(bar) = r.remove(&o.stage) {
                bar.finish_and_clear();
            }
        }
        if let Some((_, overall)) = &self.bars {
            overall.inc(1);
        }
        let what = match o.state {
            StageState::Ran => format!("ran in {:.2}s", o.wall.as_secs_f64()),
            StageState::Cached => "cached".to_owned(),
            s => format!("{}: {}", s.as_str(), o.reason.as_deref().unwrap_or("")),
        };
        self.line(&format!("{}: {what}", o.stage));
    }

    fn note(&self, msg: &str) {
        self.line(msg);
    }

    fn waiting(&self, stage: &str, holder: &str) {
        let msg = format!("waiting for {holder}, which is building it");
        match &self.bars {
            Some((multi, _)) => {
                let bar = multi.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("{prefix:>12} {spinner} {msg} {elapsed}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.set_prefix(stage.to_owned());
                bar.set_message(msg);
                bar.enable_steady_tick(std::time::Duration::from_millis(200));
                if let Ok(mut r) = self.running.lock() {
                    r.insert(stage.to_owned(), bar);
                }
            }
            None => self.line(&format!("{stage}: {msg}")),
        }
    }

    fn warning(&self, msg: &str) {
        match &self.bars {
            Some((multi, _)) if !self.quiet => {
                let _ = multi.println(msg);
            }
            _ => eprintln!("{msg}"),
        }
    }
}
