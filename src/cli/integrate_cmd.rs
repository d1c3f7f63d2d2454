//! `mpw integrate`, `mpw restack` and `mpw clean`.

use super::{CliResult, Ctx, Exit};
use crate::integrate::{
    self, Forecast, Options, Report, RestackOptions, RestackReport, RestackState, Strategy,
};
use crate::model::Event;
use crate::report::{self, Style};
use crate::runner::Listener;
use clap::Args;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct IntegrateArgs {
    /// Run id or prefix (default: the latest run).
    pub run: Option<String>,
    /// Branch to merge into (default: the branch the run started from).
    #[arg(long, value_name = "BRANCH")]
    pub into: Option<String>,
    /// Command that must pass on each merge result before the branch moves.
    #[arg(long, value_name = "CMD")]
    pub gate: Option<String>,
    /// With --gate: merge the workstreams in memory, gate the top once, and
    /// bisect on failure to find the culprits; N at most per batch (default: all).
    #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "0", requires = "gate")]
    pub batch: Option<usize>,
    /// Run a failed gate again up to N times; a gate that then passes is flaky.
    #[arg(long, value_name = "N", default_value_t = 0, requires = "gate")]
    pub gate_retries: u32,
    /// With --batch: gate up to K candidates of a bisection at once, each in
    /// its own scratch worktree (at most the run's cpu slots).
    #[arg(long, value_name = "K", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..), requires = "batch")]
    pub gate_jobs: u32,
    /// Seconds the gate may take.
    #[arg(long, value_name = "SECS", default_value_t = 1800)]
    pub gate_timeout: u64,
    #[arg(long, value_enum, default_value_t = Strategy::Merge)]
    pub strategy: Strategy,
    /// Merge in memory only and print a conflict forecast; nothing moves.
    #[arg(long)]
    pub dry_run: bool,
    /// Seconds between TERM and KILL when stopping the gate (Ctrl-C, timeout).
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    pub grace: u64,
    /// Exit 3 instead of waiting when another integration holds the lock.
    #[arg(long)]
    pub no_wait: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RestackArgs {
    /// Run id or prefix (default: the latest run).
    pub run: Option<String>,
    /// The stacked workstream (default: every stale one, in stack order).
    pub workstream: Option<String>,
    /// Replay its own commits onto the new head instead of merging it.
    #[arg(long)]
    pub rebase: bool,
    /// Exit 3 instead of waiting when an integration holds the lock.
    #[arg(long)]
    pub no_wait: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CleanArgs {
    /// Run id or prefix (default: the latest run).
    #[arg(conflicts_with = "all")]
    pub run: Option<String>,
    /// Every finished run (COMPLETED, FAILED, CANCELLED); RUNNING ones are left.
    #[arg(long)]
    pub all: bool,
    /// With --all: only runs finished longer ago than this (7d, 12h, 30m).
    #[arg(long, value_name = "AGE", requires = "all", value_parser = crate::clean::parse_age)]
    pub older_than: Option<std::time::Duration>,
    /// Also delete the branches of integrated workstreams.
    #[arg(long)]
    pub branches: bool,
    /// Also remove worktrees with uncommitted changes and branches not integrated.
    #[arg(long)]
    pub force: bool,
    #[arg(long)]
    pub json: bool,
}

struct Lines {
    quiet: bool,
}

impl Listener for Lines {
    fn event(&mut self, ev: &Event) {
        if !self.quiet {
            let time = ev.ts.get(11..19).unwrap_or(&ev.ts);
            eprintln!("{time} {}", report::event_line(ev));
        }
    }
}

pub fn integrate(a: IntegrateArgs, ctx: &Ctx) -> CliResult {
    if a.dry_run {
        let f = integrate::forecast(ctx.repo.as_deref(), a.run.as_deref(), a.into.as_deref())?;
        if a.json {
            outln!("{}", serde_json::to_string_pretty(&f).unwrap());
        } else {
            out!("{}", render_forecast(&f));
        }
        return Ok(if f.conflicts() {
            Exit::Failed
        } else {
            Exit::Ok
        });
    }
    let opts = Options {
        run: a.run,
        into: a.into,
        gate: a.gate.map(|cmd| integrate::Gate {
            cmd,
            timeout: Duration::from_secs(a.gate_timeout),
            retries: a.gate_retries,
            batch: a.batch,
            jobs: a.gate_jobs as usize,
        }),
        strategy: a.strategy,
        no_wait: a.no_wait,
        grace: Duration::from_secs(a.grace),
    };
    let mut lines = Lines { quiet: ctx.quiet };
    let r = integrate::integrate(ctx.repo.as_deref(), &opts, &mut lines, &mut |m| {
        eprintln!("mpw: {m}")
    })?;
    for w in &r.warnings {
        eprintln!("mpw: warning: {w}");
    }
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&r).unwrap());
    } else {
        out!("{}", render_report(&r, Style { color: ctx.color }));
    }
    Ok(Exit::of_integration(&r))
}

pub fn restack(a: RestackArgs, ctx: &Ctx) -> CliResult {
    let opts = RestackOptions {
        run: a.run,
        workstream: a.workstream,
        rebase: a.rebase,
        no_wait: a.no_wait,
    };
    let mut lines = Lines { quiet: ctx.quiet };
    let r = integrate::restack(ctx.repo.as_deref(), &opts, &mut lines, &mut |m| {
        eprintln!("mpw: {m}")
    })?;
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&r).unwrap());
    } else {
        out!("{}", render_restack(&r, Style { color: ctx.color }));
    }
    Ok(if r.failed() { Exit::Failed } else { Exit::Ok })
}

fn render_restack(r: &RestackReport, style: Style) -> String {
    let mut s = format!("restack run {}\n", r.run_id);
    s.push_str(&outcome_rows(
        r.outcomes
            .iter()
            .map(|o| (o.workstream.as_str(), o.state.as_str(), o.detail.as_str())),
        style,
    ));
    if r.outcomes.is_empty() {
        s.push_str("no stacked workstream in this run\n");
    } else if r.failed() {
        let left: Vec<&str> = r
            .outcomes
            .iter()
            .filter(|o| matches!(o.state, RestackState::Conflict | RestackState::Skipped))
            .map(|o| o.workstream.as_str())
            .collect();
        s.push_str(&format!(
            "not restacked: {} (see above; exit 1)\n",
            left.join(", ")
        ));
    }
    s
}

/// One line per workstream: name, state, detail, names padded to one width.
fn outcome_rows<'a>(
    rows: impl Iterator<Item = (&'a str, &'a str, &'a str)>,
    style: Style,
) -> String {
    let rows: Vec<_> = rows.collect();
    let w = rows.iter().map(|r| r.0.len()).max().unwrap_or(4).max(10);
    let mut s = String::new();
    for (ws, state, detail) in rows {
        s.push_str(&format!(
            "{ws:<w$}  {}  {detail}\n",
            report::pad_state(&style, state)
        ));
    }
    s
}

fn render_report(r: &Report, style: Style) -> String {
    let mut s = format!(
        "integrate run {} into {} ({}): {} -> {}\n",
        r.run_id,
        r.into,
        r.strategy,
        &r.before[..10],
        &r.after[..10]
    );
    s.push_str(&outcome_rows(
        r.outcomes
            .iter()
            .map(|o| (o.workstream.as_str(), o.state.as_str(), o.detail.as_str())),
        style,
    ));
    s.push_str(&report::gate_tree(&r.gate_runs, style));
    let left: Vec<String> = r
        .unmerged()
        .map(|o| format!("{} ({})", o.workstream, o.state))
        .collect();
    if left.is_empty() {
        s.push_str("every workstream of the run is integrated\n");
    } else {
        s.push_str(&format!(
            "{} workstream(s) left unmerged: {} (see above; exit 1)\n",
            left.len(),
            left.join(", ")
        ));
    }
    s
}

fn render_forecast(f: &Forecast) -> String {
    let mut s = format!(
        "conflict forecast for run {} into {} (at {}); nothing was changed\n\n",
        f.run_id,
        f.into,
        &f.target[..10]
    );
    s.push_str(&format!("against {}:\n", f.into));
    for (ws, c) in &f.against_target {
        if c.is_empty() {
            s.push_str(&format!("  {ws}: clean\n"));
        } else {
            s.push_str(&format!("  {ws}: CONFLICT on {}\n", c.join(", ")));
        }
    }
    // The matrix: X where two workstreams conflict with each other.
    let ids: Vec<&String> = f.against_target.keys().collect();
    if ids.len() > 1 {
        let w = ids.iter().map(|i| i.len()).max().unwrap_or(2);
        s.push_str("\nbetween workstreams (X: they conflict):\n");
        s.push_str(&format!("  {:w$} ", ""));
        for (i, _) in ids.iter().enumerate() {
            s.push_str(&format!(" {:>2}", i + 1));
        }
        s.push('\n');
        for (i, a) in ids.iter().enumerate() {
            s.push_str(&format!("  {a:w$} "));
            for (j, b) in ids.iter().enumerate() {
                let hit = f
                    .pairs
                    .iter()
                    .any(|p| (&&p.a == a && &&p.b == b) || (&&p.a == b && &&p.b == a));
                let cell = if i == j {
                    "-"
                } else if hit {
                    "X"
                } else {
                    "."
                };
                s.push_str(&format!(" {cell:>2}"));
            }
            s.push_str(&format!("   {}\n", i + 1));
        }
        for p in &f.pairs {
            s.push_str(&format!("  {} x {}: {}\n", p.a, p.b, p.paths.join(", ")));
        }
    }
    s.push_str("\nin integration order:\n");
    for o in &f.sequence {
        s.push_str(&format!("  {}: {}\n", o.workstream, o.detail));
    }
    s
}

pub fn clean(a: CleanArgs, ctx: &Ctx) -> CliResult {
    if a.all {
        let all = crate::clean::clean_all(ctx.repo.as_deref(), a.older_than, a.branches, a.force)?;
        if a.json {
            outln!("{}", serde_json::to_string_pretty(&all).unwrap());
            return Ok(Exit::Ok);
        }
        for c in &all.cleaned {
            print_cleaned(c);
        }
        for s in &all.skipped {
            outln!("{s}; kept");
        }
        if all.cleaned.is_empty() {
            outln!("no finished run to clean");
        }
        return Ok(Exit::Ok);
    }
    let c = crate::clean::clean(ctx.repo.as_deref(), a.run.as_deref(), a.branches, a.force)?;
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&c).unwrap());
        return Ok(Exit::Ok);
    }
    print_cleaned(&c);
    Ok(Exit::Ok)
}

fn print_cleaned(c: &crate::clean::Cleaned) {
    outln!(
        "run {}: removed {} worktree(s), deleted {} branch(es)",
        c.run_id,
        c.removed_worktrees.len(),
        c.deleted_branches.len()
    );
    for k in &c.kept {
        outln!("  {k}");
    }
}
