//! `mpw pr` and `mpw report`.

use super::{CliResult, Ctx, Exit};
use crate::pr::{self, Options};
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct PrArgs {
    /// Run id or prefix (default: the latest run).
    pub run: Option<String>,
    /// Only these workstreams (default: every COMPLETED or INTEGRATED one). Repeatable.
    #[arg(long = "workstream", value_name = "WS")]
    pub workstreams: Vec<String>,
    /// Push each branch to this remote, with upstream set.
    #[arg(long, value_name = "REMOTE")]
    pub push: Option<String>,
    /// Open the PRs with `gh pr create`.
    #[arg(long)]
    pub create: bool,
    /// Where to write the PR bodies (default: .git/mpw/runs/<run>/pr/).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

pub fn pr(a: PrArgs, ctx: &Ctx) -> CliResult {
    let drafts = pr::prepare(
        ctx.repo.as_deref(),
        &Options {
            run: a.run,
            workstreams: a.workstreams,
            push: a.push.clone(),
            create: a.create,
            out: a.out,
        },
    )?;
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&drafts).unwrap());
        return Ok(Exit::Ok);
    }
    for d in &drafts {
        outln!("{}: {}", d.workstream, d.title);
        outln!("  body: {}", d.body_file.display());
        if d.pushed {
            outln!("  pushed {} to {}", d.head, a.push.as_deref().unwrap_or(""));
        }
        match &d.created {
            Some(url) => outln!("  opened: {url}"),
            None => outln!("  {}", d.gh_line()),
        }
    }
    Ok(Exit::Ok)
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Run id or prefix (default: the latest run).
    pub run: Option<String>,
    /// Write a self-contained HTML report to this file.
    #[arg(long, value_name = "FILE")]
    pub html: PathBuf,
}

pub fn report(a: ReportArgs, ctx: &Ctx) -> CliResult {
    let rc = crate::runner::open_repo(ctx.repo.as_deref())?;
    let store = crate::store::Store::open_existing(rc.layout)?;
    let run = store.run_or_latest(a.run.as_deref())?.id;
    let html = crate::report::html::render(
        &store.run_status(&run)?,
        &store.attempts(&run)?,
        &store.integrations(&run)?,
    );
    crate::store::write_atomic(&a.html, html.as_bytes())?;
    outln!("{}", a.html.display());
    Ok(Exit::Ok)
}
