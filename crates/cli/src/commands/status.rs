//! `spherepipe status`.

use crate::commands::*;
use crate::failure::Failure;
use anyhow::Context;
use spherepipe_engine::{open_store, plan};
use spherepipe_pipeline::Pipeline;

/// One row of `status --json`: the plan's typed status (every reason, each with its `kind`
/// and fields), plus the reasons in words and the first one's kind.
#[derive(serde::Serialize)]
pub(crate) struct StatusRow<'a> {
    #[serde(flatten)]
    pub(crate) status: &'a spherepipe_engine::NodeStatus,
    pub(crate) reason: String,
    pub(crate) reason_kind: &'static str,
}

/// `spherepipe status`: each stage cached, stale (and why) or never-run.
pub(crate) fn status(p: &Pipeline, json: bool, store_url: Option<&str>) -> Result<u8, Failure> {
    let store = with_shared_store(open_store(p)?, store_url.or(p.store.as_deref()))?;
    let st = plan(p, &store)?;
    if json {
        let rows: Vec<StatusRow> = st
            .iter()
            .map(|s| StatusRow {
                reason: s.reason(),
                reason_kind: s.reasons.first().map(|r| r.kind()).unwrap_or(""),
                status: s,
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows).context("encoding JSON")?);
    } else {
        println!("{:<32} {:<10} REASON", "STAGE", "STATE");
        for s in &st {
            println!("{:<32} {:<10} {}", s.stage, s.state.as_str(), s.reason());
        }
    }
    Ok(0)
}
