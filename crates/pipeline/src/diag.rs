//! Error reports that say where, what and how to fix it.

use crate::locate::Pos;
use std::fmt;
use std::path::PathBuf;

/// One problem with a pipeline file: where it is, which stage, what is wrong, and the fix.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    /// The pipeline file.
    pub file: PathBuf,
    /// Line and column, when the problem has a place.
    pub pos: Option<Pos>,
    /// The stage it concerns, if any.
    pub stage: Option<String>,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub fix: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "error: {}", self.message)?;
        match self.pos {
            Some(p) => writeln!(f, "  --> {}:{}:{}", self.file.display(), p.line, p.col)?,
            None => writeln!(f, "  --> {}", self.file.display())?,
        }
        if let Some(s) = &self.stage {
            writeln!(f, "  stage: {s}")?;
        }
        if let Some(fix) = &self.fix {
            writeln!(f, "  fix: {fix}")?;
        }
        Ok(())
    }
}

/// One or more diagnostics, reported together.
#[derive(Debug, Clone)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        if self.0.len() > 1 {
            writeln!(f, "\n{} problems found.", self.0.len())?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}
