//! One module per command (or family of commands); `dispatch` in the crate root calls them.

mod cache;
mod dag;
mod export;
mod info;
mod lineage;
mod run;
mod run_stage;
mod show;
mod status;

pub(crate) use cache::*;
pub(crate) use dag::*;
pub(crate) use export::*;
pub(crate) use info::*;
pub(crate) use lineage::*;
pub(crate) use run::*;
pub(crate) use run_stage::*;
pub(crate) use show::*;
pub(crate) use status::*;
