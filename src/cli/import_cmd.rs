//! `mpw import DIR... [--fetch REMOTE]`.

use super::{CliResult, Ctx, Exit};
use crate::import;
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Directories holding pieces (`mpw-piece.json`, searched recursively),
    /// as `mpw run --records-out` writes them and CI artifacts bring them.
    #[arg(required = true, value_name = "DIR")]
    pub dirs: Vec<PathBuf>,
    /// Fetch the workstreams' branches and preserved refs from this remote.
    #[arg(long, value_name = "REMOTE")]
    pub fetch: Option<String>,
    /// Print what was imported as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn import(a: ImportArgs, ctx: &Ctx) -> CliResult {
    let done = import::import(ctx.repo.as_deref(), &a.dirs, a.fetch.as_deref())?;
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&done).unwrap());
        return Ok(Exit::Ok);
    }
    for d in &done {
        outln!(
            "{} run {}: {} ({}), now {}",
            if d.created { "created" } else { "updated" },
            d.run_id,
            d.workstreams.join(", "),
            match d.fetched.len() {
                0 => "no refs fetched".to_string(),
                1 => "1 ref fetched".to_string(),
                n => format!("{n} refs fetched"),
            },
            d.state
        );
    }
    Ok(Exit::Ok)
}
