//! `mpw completions SHELL`: a completion script generated from the clap
//! definitions, so it never lags behind the commands.
//!
//! Static only: clap_complete's dynamic completion (run ids, workstream
//! ids) is behind its `unstable-dynamic` feature, whose API may change in
//! any release; see docs/ARCHITECTURE.md.

use super::{Cli, CliResult, Ctx, Exit};
use clap::{Args, CommandFactory};

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to write the script for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

pub fn completions(a: CompletionsArgs, _ctx: &Ctx) -> CliResult {
    let mut cmd = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "mpw", &mut script);
    out!("{}", String::from_utf8_lossy(&script));
    Ok(Exit::Ok)
}
