//! `mpw run`, `resume`, `cancel`, `status`, `runs`, `logs`, `events`.

use super::{CliError, CliResult, Ctx, Exit};
use crate::report::{self, BarListener, LineListener, Style};
use crate::runner::{self, Listener, RunOptions};
use crate::store::{Store, StoreError};
use clap::Args;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The plan file (JSON or JSONC).
    pub plan: PathBuf,
    /// Tasks running at once (overrides globals.max_concurrency).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrency: Option<u32>,
    /// Run only these workstreams (and what they depend on). Repeatable.
    #[arg(long = "workstream", value_name = "WS")]
    pub workstreams: Vec<String>,
    /// Start nothing new after the first failure.
    #[arg(long)]
    pub fail_fast: bool,
    #[command(flatten)]
    pub load: super::plan_cmd::LoadArgs,
    /// Seconds between TERM and KILL when stopping tasks.
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    pub grace: u64,
    /// Print the final status as JSON (run_status.json) on stdout.
    #[arg(long)]
    pub json: bool,
    /// Run id to use (overrides the plan's `run_id`).
    #[arg(long, value_name = "ID")]
    pub run_id: Option<String>,
    /// Rev to start from (overrides the plan's `base`).
    #[arg(long, value_name = "REV")]
    pub base: Option<String>,
    /// Do not run what the selected workstreams depend on: take their
    /// records from --upstream-records and their branches from REMOTE.
    #[arg(long, value_name = "REMOTE", requires = "workstreams")]
    pub upstream_from: Option<String>,
    /// Directories with the upstreams' records (`mpw run --records-out`).
    #[arg(long, value_name = "DIR", requires = "upstream_from")]
    pub upstream_records: Vec<PathBuf>,
    /// At the end, write the records of the selected workstreams here, for `mpw import`.
    #[arg(long, value_name = "DIR")]
    pub records_out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// Run id or prefix (default: the latest run).
    pub run: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CancelArgs {
    /// Run id (or an unambiguous prefix).
    pub run: String,
    /// Seconds between TERM and KILL for tasks of a run whose coordinator is gone.
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    pub grace: u64,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Run id or prefix (default: the latest run).
    pub run: Option<String>,
    /// Print run_status.json.
    #[arg(long, conflicts_with = "watch")]
    pub json: bool,
    /// Redraw the table every second until the run ends.
    #[arg(long)]
    pub watch: bool,
}

#[derive(Debug, Args)]
pub struct RunsArgs {
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Run id or prefix.
    pub run: String,
    /// `WS/TASK` (setup commands: `WS/_setup1`, ...; the integration gate: `integrate/WS`).
    pub task: String,
    /// Which attempt, or which gate run (default: the last one).
    #[arg(long, value_name = "N")]
    pub attempt: Option<u32>,
    /// Show standard error instead of standard output.
    #[arg(long)]
    pub stderr: bool,
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Run id or prefix.
    pub run: String,
    /// Keep printing new events until the run ends.
    #[arg(long)]
    pub follow: bool,
    /// One JSON object a line (as events.jsonl).
    #[arg(long)]
    pub json: bool,
}

fn listener(ctx: &Ctx, json: bool) -> Box<dyn Listener> {
    if ctx.tty && !ctx.quiet && !json && ctx.verbose == 0 {
        Box::new(BarListener::new())
    } else {
        Box::new(LineListener::new(ctx.quiet))
    }
}

fn finish(ctx: &Ctx, fin: runner::Finished, json: bool) -> CliResult {
    let rc = runner::open_repo(Some(&fin.repo))?;
    let store = Store::open_existing(rc.layout)?;
    let st = store.run_status(&fin.run_id)?;
    let mut out = std::io::stdout().lock();
    if json {
        let _ = writeln!(out, "{}", serde_json::to_string_pretty(&st).unwrap());
    } else {
        let events = store.events_with(&fin.run_id, "hint")?;
        let closing = report::Closing {
            hints: report::task_hints(events.iter().map(|(_, e)| e)),
            layout: &store.layout,
            plan: store.run(&fin.run_id)?.plan_path,
        };
        let style = Style { color: ctx.color };
        let _ = write!(out, "{}", report::summary(&st, &closing, style));
    }
    Ok(Exit::of_run(&fin))
}

pub fn run(a: RunArgs, ctx: &Ctx) -> CliResult {
    let opts = RunOptions {
        plan: a.plan,
        repo: ctx.repo.clone(),
        stored: runner::StoredOptions {
            max_concurrency: a.max_concurrency.map(|m| m as usize),
            fail_fast: a.fail_fast,
            grace_ms: Duration::from_secs(a.grace).as_millis() as u64,
        },
        workstreams: a.workstreams,
        load: a.load.options(),
        run_id: a.run_id,
        base: a.base,
        upstream: a.upstream_from.map(|remote| runner::Upstream {
            remote,
            records: a.upstream_records,
        }),
    };
    let json = a.json;
    let fin = runner::run(
        &opts,
        listener(ctx, json),
        &mut |w| eprintln!("mpw: {w}"),
        &mut |id| {
            if !json {
                outln!("{id}");
            } else {
                eprintln!("run {id}");
            }
        },
    )?;
    if let Some(dir) = &a.records_out {
        write_records(&opts, &fin, dir)?;
    }
    finish(ctx, fin, json)
}

/// `--records-out`: a piece per workstream this invocation ran.
fn write_records(
    opts: &RunOptions,
    fin: &runner::Finished,
    dir: &std::path::Path,
) -> Result<(), CliError> {
    let rc = runner::open_repo(Some(&fin.repo))?;
    let store = Store::open_existing(rc.layout.clone())?;
    // Upstreams taken from records were not run here: no piece of theirs.
    let wss: Vec<String> = if opts.upstream.is_none() {
        store
            .workstreams(&fin.run_id)?
            .into_iter()
            .map(|w| w.id)
            .collect()
    } else {
        opts.workstreams.clone()
    };
    drop(store);
    let plan = crate::import::plan_value_of(&opts.plan)?;
    crate::import::write_pieces(&rc.layout, &fin.run_id, &wss, &plan, dir)?;
    Ok(())
}

pub fn resume(a: ResumeArgs, ctx: &Ctx) -> CliResult {
    let id = {
        let rc = runner::open_repo(ctx.repo.as_deref())?;
        Store::open_existing(rc.layout)?
            .run_or_latest(a.run.as_deref())?
            .id
    };
    let fin = runner::resume(ctx.repo.as_deref(), &id, listener(ctx, a.json))?;
    finish(ctx, fin, a.json)
}

pub fn cancel(a: CancelArgs, ctx: &Ctx) -> CliResult {
    let id = {
        let rc = runner::open_repo(ctx.repo.as_deref())?;
        Store::open_existing(rc.layout)?.find_run(&a.run)?.id
    };
    let state = runner::cancel(ctx.repo.as_deref(), &id, Duration::from_secs(a.grace))?;
    outln!("run {id} {state}");
    Ok(Exit::Ok)
}

fn open_store(ctx: &Ctx) -> Result<Store, CliError> {
    let rc = runner::open_repo(ctx.repo.as_deref())?;
    Ok(Store::open_existing(rc.layout)?)
}

pub fn status(a: StatusArgs, ctx: &Ctx) -> CliResult {
    let store = open_store(ctx)?;
    let id = store.run_or_latest(a.run.as_deref())?.id;
    let style = Style { color: ctx.color };
    let gone = |store: &Store| -> Result<bool, CliError> {
        Ok(runner::coordinator_gone(&store.layout, &store.run(&id)?))
    };
    if a.watch {
        loop {
            let st = store.run_status(&id)?;
            let gone = gone(&store)?;
            let mut out = std::io::stdout().lock();
            // Clear the screen and redraw from the top.
            let _ = write!(
                out,
                "\x1b[2J\x1b[H{}",
                report::status_table(&st, style, gone)
            );
            let _ = out.flush();
            // A run whose coordinator died changes no more until resumed.
            if st.state.is_terminal() || gone {
                return Ok(Exit::Ok);
            }
            drop(out);
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    let st = store.run_status(&id)?;
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&st).unwrap());
    } else {
        out!("{}", report::status_table(&st, style, gone(&store)?));
    }
    Ok(Exit::Ok)
}

pub fn runs(a: RunsArgs, ctx: &Ctx) -> CliResult {
    let rc = runner::open_repo(ctx.repo.as_deref())?;
    let main = rc.info.main_workdir.clone();
    let store = match Store::open_existing(rc.layout).map_err(CliError::from) {
        Err(e) if e.exit == Exit::Usage => {
            // No database yet: no runs.
            if a.json {
                outln!("[]");
            } else {
                outln!("no runs yet");
            }
            return Ok(Exit::Ok);
        }
        other => other?,
    };
    let runs = store.runs()?;
    let registered = crate::git::list_worktrees(&main)?;
    let mut rows = Vec::with_capacity(runs.len());
    for r in runs {
        let st = store.run_status(&r.id)?;
        let left = crate::clean::leftovers(&main, &registered, &store, &r.id)?;
        let gone = runner::coordinator_gone(&store.layout, &r);
        rows.push((r, st, left, gone));
    }
    if a.json {
        let rows: Vec<serde_json::Value> = rows
            .iter()
            .map(|(r, st, left, gone)| {
                serde_json::json!({
                    "run_id": r.id, "name": r.name, "state": r.state, "base": r.base,
                    "created_at": r.created_at, "started_at": r.started_at, "finished_at": r.finished_at,
                    "duration_ms": st.duration_ms,
                    "coordinator_gone": gone,
                    "counts": st.counts,
                    "workstreams": left.workstreams, "integrated": left.integrated,
                    "worktrees": left.worktrees, "branches": left.branches,
                })
            })
            .collect();
        outln!("{}", serde_json::to_string_pretty(&rows).unwrap());
        return Ok(Exit::Ok);
    }
    if rows.is_empty() {
        outln!("no runs yet");
    }
    let style = Style { color: ctx.color };
    for (r, st, left, gone) in rows {
        let label = report::run_state_label(r.state, &r.id, gone);
        outln!(
            "{}  {}  {:>3}/{:<3} tasks  {}  integrated {}/{}  {} worktree(s)  {} branch(es)  {}",
            r.id,
            report::pad_state(&style, &label),
            st.counts.get(crate::model::TaskState::Succeeded),
            st.counts.tasks,
            r.created_at
                .get(..19)
                .unwrap_or(&r.created_at)
                .replace('T', " "),
            left.integrated,
            left.workstreams,
            left.worktrees,
            left.branches,
            r.name.unwrap_or_default()
        );
    }
    Ok(Exit::Ok)
}

pub fn logs(a: LogsArgs, ctx: &Ctx) -> CliResult {
    let store = open_store(ctx)?;
    let run = store.find_run(&a.run)?.id;
    let Some((ws, task)) = a.task.split_once('/') else {
        return Err(CliError::usage(format!("{}: expected WS/TASK", a.task)));
    };
    let recorded = store
        .tasks(&run)?
        .into_iter()
        .find(|t| t.ws == ws && t.id == task);
    let path = match recorded {
        Some(t) => {
            let attempt = a.attempt.unwrap_or(t.attempts.max(1));
            store.layout.log(&run, ws, task, attempt, a.stderr)
        }
        None if task.starts_with("_setup") => {
            store
                .layout
                .log(&run, ws, task, a.attempt.unwrap_or(1), a.stderr)
        }
        // `integrate/WS`: the gate's output on that workstream.
        None if ws == "integrate" => {
            let n = a
                .attempt
                .or_else(|| store.layout.last_gate_run(&run, task))
                .ok_or_else(|| {
                    CliError::usage(format!("no gate has run on workstream {task} of run {run}"))
                })?;
            store.layout.gate_log(&run, task, n, a.stderr)
        }
        None => {
            return Err(StoreError::NoSuchTask {
                run,
                task: a.task.clone(),
            }
            .into());
        }
    };
    let mut f = std::fs::File::open(&path)
        .map_err(|e| CliError::usage(format!("no log for {} ({}: {e})", a.task, path.display())))?;
    let mut out = std::io::stdout().lock();
    std::io::copy(&mut f, &mut out).map_err(|e| CliError::env(format!("writing the log: {e}")))?;
    Ok(Exit::Ok)
}

pub fn events(a: EventsArgs, ctx: &Ctx) -> CliResult {
    let store = open_store(ctx)?;
    let run = store.find_run(&a.run)?.id;
    let mut seq = 0;
    loop {
        let batch = store.events(&run, seq)?;
        let mut out = std::io::stdout().lock();
        for (s, ev) in &batch {
            seq = *s;
            let line = if a.json {
                serde_json::to_string(ev).unwrap()
            } else {
                format!("{} {}", ev.ts, report::event_line(ev))
            };
            if writeln!(out, "{line}").is_err() {
                return Ok(Exit::Ok);
            }
        }
        let _ = out.flush();
        if !a.follow {
            return Ok(Exit::Ok);
        }
        if batch.is_empty() && store.run(&run)?.state.is_terminal() {
            return Ok(Exit::Ok);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}
