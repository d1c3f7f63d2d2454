//! `mpw init [--copilot] [--force]`: a commented starter plan with its JSON
//! Schema beside it, and optionally a Copilot instructions file, in the
//! repository around the current directory.

use super::{CliError, CliResult, Ctx, Exit};
use crate::git::{self, GitError};
use clap::Args;
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Also write .github/instructions/mpw-plans.instructions.md, which
    /// teaches GitHub Copilot the plan format for files under plans/.
    #[arg(long)]
    pub copilot: bool,
    /// Overwrite files that already exist.
    #[arg(long)]
    pub force: bool,
}

pub const PLAN: &str = "plans/mpw-plan.jsonc";
/// No URL serves the schema, so it sits beside the plan; `"$schema"` points
/// at it relatively, as editors expect.
pub const SCHEMA: &str = "plans/mpw-plan.schema.json";
pub const COPILOT: &str = ".github/instructions/mpw-plans.instructions.md";

const STARTER_PLAN: &str = include_str!("init/starter-plan.jsonc");
const COPILOT_INSTRUCTIONS: &str = include_str!("init/copilot-instructions.md");

pub fn init(a: InitArgs, ctx: &Ctx) -> CliResult {
    let start = match &ctx.repo {
        Some(r) => r.clone(),
        None => {
            std::env::current_dir().map_err(|e| CliError::env(format!("current directory: {e}")))?
        }
    };
    let root = match git::discover(&start) {
        Ok(info) => info.workdir,
        // A plan can be written before the first commit.
        Err(GitError::NoCommits { path }) => path,
        Err(e) => return Err(e.into()),
    };
    let schema = serde_json::to_string_pretty(&crate::plan::schema())
        .expect("a Value always serializes")
        + "\n";
    let mut files: Vec<(&str, &str)> = vec![(PLAN, STARTER_PLAN), (SCHEMA, &schema)];
    if a.copilot {
        files.push((COPILOT, COPILOT_INSTRUCTIONS));
    }
    // All or nothing: refuse before writing anything.
    if !a.force {
        let existing: Vec<&str> = files
            .iter()
            .map(|(rel, _)| *rel)
            .filter(|rel| root.join(rel).exists())
            .collect();
        if !existing.is_empty() {
            return Err(CliError::usage(format!(
                "{} already exist{}; nothing written (--force overwrites)",
                existing
                    .iter()
                    .map(|r| root.join(r).display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                if existing.len() == 1 { "s" } else { "" }
            )));
        }
    }
    for (rel, text) in &files {
        write(&root.join(rel), text)?;
        outln!("wrote {}", Path::new(rel).display());
    }
    if !ctx.quiet {
        outln!("next: mpw plan check {PLAN}, then mpw run {PLAN}");
    }
    Ok(Exit::Ok)
}

fn write(path: &PathBuf, text: &str) -> Result<(), CliError> {
    let io = |e: std::io::Error| CliError::env(format!("writing {}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    std::fs::write(path, text).map_err(io)
}
