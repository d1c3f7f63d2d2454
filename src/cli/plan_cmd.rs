//! `mpw plan check | schema | graph`.

use super::{CliResult, Ctx, Exit};
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum PlanCmd {}

pub fn run(cmd: PlanCmd, _ctx: &Ctx) -> CliResult {
    match cmd {}
    #[allow(unreachable_code)]
    Ok(Exit::Ok)
}
