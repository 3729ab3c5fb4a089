//! What a stage asks of a cluster node when an executor other than the local one runs it.
//! Resources are an execution setting: they never enter a fingerprint, since they do not
//! change what the stage produces.

use serde::{Deserialize, Serialize};

/// A stage's request to the scheduler (Slurm's `--cpus-per-task`, `--mem`, `--gres=gpu:N`,
/// `--time`, `--partition`). Unset fields are left to the site's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// CPU cores for the stage's one task.
    #[serde(default)]
    pub cpus: Option<u32>,
    /// Memory, in Slurm's notation (`16G`, `4000M`).
    #[serde(default)]
    pub mem: Option<String>,
    /// GPUs on the node.
    #[serde(default)]
    pub gpus: Option<u32>,
    /// Wall-clock limit, in Slurm's notation (`2:00:00`, `1-00:00:00`).
    #[serde(default)]
    pub time: Option<String>,
    /// The partition (queue).
    #[serde(default)]
    pub partition: Option<String>,
}

impl Resources {
    /// These resources, with every field left unset taken from `defaults`.
    pub fn or(self, defaults: Resources) -> Resources {
        Resources {
            cpus: self.cpus.or(defaults.cpus),
            mem: self.mem.or(defaults.mem),
            gpus: self.gpus.or(defaults.gpus),
            time: self.time.or(defaults.time),
            partition: self.partition.or(defaults.partition),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_pipeline_sets_wins_and_the_kind_fills_the_rest() {
        let written = Resources {
            cpus: Some(8),
            gpus: Some(0),
            ..Resources::default()
        };
        let kind = Resources {
            gpus: Some(1),
            time: Some("4:00:00".into()),
            ..Resources::default()
        };
        let r = written.or(kind);
        assert_eq!(
            (r.cpus, r.gpus, r.time.as_deref(), r.mem),
            (Some(8), Some(0), Some("4:00:00"), None)
        );
    }
}
