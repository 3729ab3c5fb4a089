//! How a command fails: its message, exit status, and how the message is printed.

/// A command that could not do its job: the message, the exit status, and whether the
/// message is printed as it is (already worded: a pipeline file's diagnostics, an
/// interruption) or as an error (`error: …`, added in one place, `main_with`).
pub(crate) struct Failure {
    pub(crate) code: u8,
    pub(crate) message: String,
    pub(crate) as_is: bool,
}

impl Failure {
    /// A problem with the command line, the pipeline file or the cache (exit 2).
    pub(crate) fn usage(message: impl Into<String>) -> Failure {
        Failure {
            code: 2,
            message: message.into(),
            as_is: false,
        }
    }

    /// A stage or a measurement that failed (exit 1).
    pub(crate) fn failed(message: impl Into<String>) -> Failure {
        Failure {
            code: 1,
            message: message.into(),
            as_is: false,
        }
    }

    /// A pipeline file's diagnostics, each already worded `error: …` with its place and fix
    /// (exit 2).
    pub(crate) fn diagnostics(text: String) -> Failure {
        Failure {
            code: 2,
            message: text,
            as_is: true,
        }
    }

    /// Stopped by Ctrl-C (exit 130).
    pub(crate) fn interrupted(message: impl Into<String>) -> Failure {
        Failure {
            code: 130,
            message: message.into(),
            as_is: true,
        }
    }

    /// What is printed.
    pub(crate) fn text(&self) -> String {
        if self.as_is {
            self.message.clone()
        } else {
            format!("error: {}", self.message)
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::usage(format!("{e:#}"))
    }
}
