//! What a stage asks of a cluster node when an executor other than the local one runs it.
//! Resources are an execution setting: they never enter a fingerprint, since they do not
//! change what the stage produces.

use serde::{Deserialize, Serialize};

/// A stage's request to the scheduler (Slurm's `--cpus-per-task`, `--mem`, `--gres=gpu:N`,
/// `--time`, `--partition`), and how often to try again when the scheduler ends the job for
/// its resources. Unset fields are left to the site's defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// CPU cores for the stage's one task.
    #[serde(default)]
    pub cpus: Option<u32>,
    /// Memory, in Slurm's notation (`16G`, `4000M`; a bare number is megabytes).
    #[serde(default)]
    pub mem: Option<String>,
    /// GPUs on the node.
    #[serde(default)]
    pub gpus: Option<u32>,
    /// Wall-clock limit, in Slurm's notation (`2:00:00`, `1-00:00:00`; a bare number is minutes).
    #[serde(default)]
    pub time: Option<String>,
    /// The partition (queue).
    #[serde(default)]
    pub partition: Option<String>,
    /// Attempts after the first when Slurm ends the job `OUT_OF_MEMORY`, `TIMEOUT`,
    /// `NODE_FAIL` or `PREEMPTED` (default 0).
    #[serde(default)]
    pub retries: Option<u32>,
    /// What a retry raises: `mem` after `OUT_OF_MEMORY`, `time` after `TIMEOUT` (default both).
    /// A node failure or a preemption is retried as it was.
    #[serde(default)]
    pub raise: Option<Vec<Raise>>,
    /// By how much each retry raises it (default 2).
    #[serde(default)]
    pub factor: Option<f64>,
}

/// What a retry may raise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Raise {
    /// The memory, after `OUT_OF_MEMORY`.
    Mem,
    /// The time limit, after `TIMEOUT`.
    Time,
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
            retries: self.retries.or(defaults.retries),
            raise: self.raise.or(defaults.raise),
            factor: self.factor.or(defaults.factor),
        }
    }

    /// Why these resources cannot be asked for: memory or time Slurm would not read, or a
    /// factor that raises nothing.
    pub fn check(&self) -> Result<(), String> {
        if let Some(m) = &self.mem {
            mem_megabytes(m)?;
        }
        if let Some(t) = &self.time {
            time_seconds(t)?;
        }
        match self.factor {
            Some(f) if !(f > 1.0 && f <= 100.0) => Err(format!("`factor: {f}` must be above 1 (and at most 100)")),
            _ => Ok(()),
        }
    }

    /// How many attempts in all.
    pub fn attempts(&self) -> u32 {
        self.retries.unwrap_or(0).saturating_add(1)
    }

    /// The resources of the next attempt after the scheduler ended one with `state`: `None`
    /// when that end is not one to retry. Memory or time is raised by `factor` after
    /// `OUT_OF_MEMORY` or `TIMEOUT` (when `raise` allows it and it is set: an unset one is
    /// the site's default, which spherepipe cannot know).
    pub fn after(&self, state: &str) -> Option<Resources> {
        let raises = |r: Raise| self.raise.as_deref().is_none_or(|l| l.contains(&r));
        let factor = self.factor.unwrap_or(2.0);
        let mut next = self.clone();
        match state {
            "OUT_OF_MEMORY" if raises(Raise::Mem) => {
                next.mem = self
                    .mem
                    .as_deref()
                    .and_then(|m| mem_megabytes(m).ok())
                    .map(|mb| format!("{}M", (mb as f64 * factor).ceil() as u64));
            }
            "TIMEOUT" if raises(Raise::Time) => {
                next.time = self
                    .time
                    .as_deref()
                    .and_then(|t| time_seconds(t).ok())
                    .map(|s| slurm_time((s as f64 * factor).ceil() as u64));
            }
            "OUT_OF_MEMORY" | "TIMEOUT" | "NODE_FAIL" | "PREEMPTED" => {}
            _ => return None,
        }
        Some(next)
    }
}

/// Slurm memory (`16G`, `512M`, `4096`: megabytes without a unit) in megabytes.
pub fn mem_megabytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, scale) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let scale = match c.to_ascii_uppercase() {
                'K' => 1.0 / 1024.0,
                'M' => 1.0,
                'G' => 1024.0,
                'T' => 1024.0 * 1024.0,
                _ => {
                    return Err(format!(
                        "`mem: {s}` is not an amount of memory (units: K, M, G, T); write it as Slurm does: 16G, 4000M"
                    ))
                }
            };
            (&t[..i], scale)
        }
        _ => (t, 1.0),
    };
    match num.parse::<u64>() {
        Ok(n) if n > 0 => Ok(((n as f64) * scale).ceil() as u64),
        _ => Err(format!("`mem: {s}` is not an amount of memory; write it as Slurm does: 16G, 4000M")),
    }
}

/// A Slurm time limit in seconds: `M`, `M:S`, `H:M:S`, `D-H`, `D-H:M` or `D-H:M:S`.
pub fn time_seconds(s: &str) -> Result<u64, String> {
    let bad = || format!("`time: {s}` is not a time limit; write it as Slurm does: 30 (minutes), 2:00:00, 1-12:00:00");
    // Slurm's fields are a few digits; bounding them keeps the sums below from overflowing.
    let num = |x: &str| x.trim().parse::<u64>().ok().filter(|&v| v < 1_000_000_000).ok_or_else(bad);
    let (days, rest) = match s.split_once('-') {
        Some((d, r)) => (num(d)?, r),
        None => (0, s),
    };
    let f: Vec<&str> = rest.split(':').collect();
    let secs = match (days > 0 || s.contains('-'), f.as_slice()) {
        (false, [m]) => num(m)? * 60,
        (false, [m, sec]) => num(m)? * 60 + num(sec)?,
        (_, [h, m, sec]) => num(h)? * 3600 + num(m)? * 60 + num(sec)?,
        (true, [h]) => num(h)? * 3600,
        (true, [h, m]) => num(h)? * 3600 + num(m)? * 60,
        _ => return Err(bad()),
    };
    match days * 86_400 + secs {
        0 => Err(bad()),
        total => Ok(total),
    }
}

/// Seconds as a Slurm time limit, rounded up to a whole minute (Slurm's unit): `D-HH:MM:00`.
pub fn slurm_time(secs: u64) -> String {
    let mins = secs.div_ceil(60);
    let (d, h, m) = (mins / 1440, mins % 1440 / 60, mins % 60);
    if d > 0 {
        format!("{d}-{h:02}:{m:02}:00")
    } else {
        format!("{h:02}:{m:02}:00")
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

    #[test]
    fn slurm_memory_and_time_read_and_print_as_slurm_does() {
        assert_eq!(mem_megabytes("16G"), Ok(16_384));
        assert_eq!(mem_megabytes("4000"), Ok(4000));
        assert_eq!(mem_megabytes("512k"), Ok(1));
        assert!(mem_megabytes("lots").unwrap_err().contains("16G"));
        assert!(mem_megabytes("0M").is_err() && mem_megabytes("4X").is_err());
        // `man sbatch`: minutes, minutes:seconds, hours:minutes:seconds, days-hours, ...
        assert_eq!(time_seconds("30"), Ok(1800));
        assert_eq!(time_seconds("1:30"), Ok(90));
        assert_eq!(time_seconds("2:00:00"), Ok(7200));
        assert_eq!(time_seconds("1-12"), Ok(86_400 + 43_200));
        assert_eq!(time_seconds("1-0:30"), Ok(86_400 + 1800));
        assert_eq!(time_seconds("2-01:02:03"), Ok(2 * 86_400 + 3723));
        assert_eq!(time_seconds("3-00:00:00"), Ok(3 * 86_400));
        assert!(time_seconds("1:2:3:4").is_err() && time_seconds("soon").is_err() && time_seconds("0").is_err());
        assert!(time_seconds("99999999999999999999:00:00").is_err() && time_seconds("18446744073709551615-0").is_err());
        assert_eq!(slurm_time(90), "00:02:00");
        assert_eq!(slurm_time(2 * 86_400 + 3723), "2-01:03:00");
    }

    #[test]
    fn a_retry_raises_what_ran_out_by_the_factor() {
        let r = Resources {
            mem: Some("1500M".into()),
            time: Some("1".into()),
            retries: Some(2),
            ..Resources::default()
        };
        assert_eq!(r.attempts(), 3);
        let oom = r.after("OUT_OF_MEMORY").unwrap();
        assert_eq!((oom.mem.as_deref(), oom.time.as_deref()), (Some("3000M"), Some("1")));
        let late = r.after("TIMEOUT").unwrap();
        assert_eq!((late.mem.as_deref(), late.time.as_deref()), (Some("1500M"), Some("00:02:00")));
        assert_eq!(late.after("TIMEOUT").unwrap().time.as_deref(), Some("00:04:00"));
        // A node failure or a preemption: the same again; a plain failure: no retry.
        assert_eq!(r.after("NODE_FAIL"), Some(r.clone()));
        assert_eq!(r.after("PREEMPTED"), Some(r.clone()));
        assert_eq!(r.after("FAILED"), None);
        // Only what `raise` names, by `factor`.
        let only_time = Resources {
            raise: Some(vec![Raise::Time]),
            factor: Some(1.5),
            ..r.clone()
        };
        assert_eq!(only_time.after("OUT_OF_MEMORY").unwrap().mem.as_deref(), Some("1500M"));
        assert_eq!(only_time.after("TIMEOUT").unwrap().time.as_deref(), Some("00:02:00"));
        assert!(Resources {
            factor: Some(1.0),
            ..r.clone()
        }
        .check()
        .unwrap_err()
        .contains("above 1"));
        assert!(Resources {
            time: Some("x".into()),
            ..r
        }
        .check()
        .is_err());
    }
}
