//! `mpw export PLAN --to github-actions|argo`.

use super::{CliError, CliResult, Ctx, Exit};
use crate::export::{self, ExportOptions, Target};
use clap::{Args, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ToArg {
    GithubActions,
    Argo,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The plan file, inside the repository (runners read it from their checkout).
    pub plan: PathBuf,
    /// What to write: a GitHub Actions workflow or an Argo Workflow.
    #[arg(long, value_enum, value_name = "TARGET")]
    pub to: ToArg,
    /// Write here instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Use this run id in every workflow run (default: one per workflow run).
    #[arg(long, value_name = "ID")]
    pub run_id: Option<String>,
    /// Command that installs mpw on a runner.
    #[arg(long, value_name = "CMD", default_value = export::DEFAULT_INSTALL)]
    pub install: String,
    /// A final job imports the records, integrates into BRANCH and pushes it
    /// (default: it opens a pull request per workstream).
    #[arg(long, value_name = "BRANCH")]
    pub integrate_into: Option<String>,
    /// Gate command for the integration (with --integrate-into).
    #[arg(long, value_name = "CMD", requires = "integrate_into")]
    pub gate: Option<String>,
    #[command(flatten)]
    pub argo: export::ArgoOptions,
    #[command(flatten)]
    pub load: super::plan_cmd::LoadArgs,
}

pub fn export(a: ExportArgs, ctx: &Ctx) -> CliResult {
    let opts = ExportOptions {
        plan: a.plan,
        repo: ctx.repo.clone(),
        target: match a.to {
            ToArg::GithubActions => Target::GithubActions,
            ToArg::Argo => Target::Argo,
        },
        run_id: a.run_id,
        install: a.install,
        integrate_into: a.integrate_into,
        gate: a.gate,
        load: a.load.options(),
        argo: a.argo,
    };
    let text = export::export(&opts)?;
    match a.out {
        Some(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|e| CliError::env(format!("{}: {e}", dir.display())))?;
            }
            std::fs::write(&path, text)
                .map_err(|e| CliError::env(format!("{}: {e}", path.display())))?;
            if !ctx.quiet {
                eprintln!("mpw: wrote {}", path.display());
            }
        }
        None => out!("{text}"),
    }
    Ok(Exit::Ok)
}
