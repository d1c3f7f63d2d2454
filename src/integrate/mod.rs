//! `mpw integrate`: a small merge queue. Under an exclusive lock, finished
//! workstreams are merged into the target branch one at a time, in memory,
//! optionally gated, and the target moves by compare-and-swap only.
//! `batch` gates many merges at once and bisects on failure.

mod batch;
mod forecast;
mod gate;
mod restack;

use crate::git::{self, Excluded, GitError, MergeSession, Oid};
use crate::lock;
use crate::model::{
    EventData, Integration, IntegrationCancelled, IntegrationDone, IntegrationStarted,
    WorkstreamState, now,
};
use crate::plan::Plan;
use crate::runner::{Listener, RunError, open_repo};
use crate::store::{GateRunRow, IntegrationRow, RunRow, Store, TaskRow, WsPatch, WsRow};
use forecast::conflicting_pairs;
pub use forecast::{Forecast, PairConflict, WouldMerge, forecast};
use gate::{GateRuntime, end_stale_gates, run_gate};
pub use restack::{RestackOptions, RestackOutcome, RestackReport, RestackState, restack};
use serde::Serialize;
use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

type Result<T, E = RunError> = std::result::Result<T, E>;

pub use crate::model::Strategy;

#[derive(Debug, Clone)]
pub struct Options {
    pub run: Option<String>,
    pub into: Option<String>,
    pub gate: Option<Gate>,
    pub strategy: Strategy,
    pub no_wait: bool,
    pub grace: Duration,
}

/// `--gate CMD`: what must pass on each merge before the target moves, and
/// how its runs go.
#[derive(Debug, Clone)]
pub struct Gate {
    /// Run through the plan's shell.
    pub cmd: String,
    pub timeout: Duration,
    /// A failed gate run is repeated up to this many times.
    pub retries: u32,
    /// `--batch`: gate merges together, at most this many (0: all) per batch.
    pub batch: Option<usize>,
    /// `--gate-jobs`: gate runs of a bisection at once (bounded by the run's cpu slots).
    pub jobs: usize,
}

/// What happened to one workstream: its state after integrating, or in a
/// forecast what would happen.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Outcome<S = WorkstreamState> {
    pub workstream: String,
    pub state: S,
    /// The commit that brought it into the target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Conflicting paths.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<String>,
    pub detail: String,
}

/// `mpw integrate --json`. The MCP server advertises this type's schema.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Report {
    pub run_id: String,
    pub into: String,
    pub strategy: Strategy,
    /// The target's commit before and after.
    pub before: String,
    pub after: String,
    pub outcomes: Vec<Outcome>,
    /// The gate runs of this integration, oldest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gate_runs: Vec<GateRunRow>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl Report {
    /// Workstreams of the run this integration left out of the target, for
    /// any reason (conflict, gate, quarantine, failure, a stack not merged).
    pub fn unmerged(&self) -> impl Iterator<Item = &Outcome> {
        self.outcomes
            .iter()
            .filter(|o| o.state != WorkstreamState::Integrated)
    }

    /// Exit 1 unless the whole run is in the target: a script that sees 0
    /// may rely on every workstream being merged.
    pub fn failed(&self) -> bool {
        self.unmerged().next().is_some()
    }
}

/// The run, its plan and the target branch.
struct Setup {
    store: Store,
    repo: PathBuf,
    run_id: String,
    plan: Plan,
    ws_deps: Vec<Vec<usize>>,
    into: String,
    /// With a gate: the runtime it runs on and the stop requests of
    /// Ctrl-C / SIGTERM, as for `mpw run`.
    gate_rt: Option<GateRuntime>,
    /// Trouble that changes no verdict, told at the end.
    warnings: Vec<String>,
    /// The run's cpu slots: the most gate runs at once.
    cpu_slots: usize,
}

fn interrupted(s: &Setup, what: &str) -> RunError {
    let mut m = format!(
        "interrupted {what}; {} and the workstreams not yet merged are unchanged",
        s.into
    );
    for w in &s.warnings {
        m.push_str(&format!("\nwarning: {w}"));
    }
    RunError::Interrupted(m)
}

/// The target's tip now; it may have been deleted while we waited for the lock.
fn target_tip(s: &Setup) -> Result<Oid> {
    git::branch_tip(&s.repo, &s.into)?.ok_or_else(|| RunError::TargetGone {
        branch: s.into.clone(),
    })
}

/// Record that an integration stopped on Ctrl-C / SIGTERM, and pass the error on.
fn record_cancelled(s: &mut Setup, listener: &mut dyn Listener, err: RunError) -> Result<RunError> {
    if let RunError::Interrupted(reason) = &err {
        let data = EventData::IntegrationCancelled(IntegrationCancelled {
            into: s.into.clone(),
            reason: reason.clone(),
        });
        let ev = s.store.event(&s.run_id, None, None, None, data)?;
        listener.event(&ev);
    }
    s.store.write_status_files(&s.run_id)?;
    Ok(err)
}

/// A finished run's store and row, and the main worktree as found now (the
/// repository may have moved since the run).
fn open_run(repo: Option<&Path>, run: Option<&str>) -> Result<(Store, RunRow, PathBuf)> {
    let rc = open_repo(repo)?;
    let store = Store::open_existing(rc.layout.clone())?;
    let row = store.run_or_latest(run)?;
    if !row.state.is_terminal() {
        return Err(RunError::NotFinished {
            run: row.id,
            state: row.state,
        });
    }
    Ok((store, row, rc.info.main_workdir))
}

fn setup(repo: Option<&Path>, run: Option<&str>, into: Option<&str>) -> Result<Setup> {
    let (store, row, main) = open_run(repo, run)?;
    let into = match (into, &row.base_ref) {
        (Some(i), _) => i.to_string(),
        (None, Some(b)) => b.clone(),
        (None, None) => return Err(RunError::NoTarget { run: row.id }),
    };
    if git::branch_tip(&main, &into)?.is_none() {
        return Err(RunError::NoSuchBranch { branch: into });
    }
    let loaded = crate::runner::stored_plan(&store.layout, &row.id)?;
    let cpu_slots = crate::runner::cpu_slots(&loaded, &row);
    Ok(Setup {
        store,
        repo: main,
        run_id: row.id,
        plan: loaded.plan,
        ws_deps: loaded.dag.ws_deps,
        into,
        gate_rt: None,
        warnings: Vec::new(),
        cpu_slots,
    })
}

/// Dependencies first, then priority, then plan order.
fn order(plan: &Plan, deps: &[Vec<usize>]) -> Vec<usize> {
    let n = plan.workstreams.len();
    let mut done = vec![false; n];
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let next = (0..n)
            .filter(|&i| !done[i] && deps[i].iter().all(|&d| done[d]))
            .min_by_key(|&i| (plan.workstreams[i].priority, i));
        let Some(i) = next else { break };
        done[i] = true;
        out.push(i);
    }
    out
}

fn take_lock(path: &Path, no_wait: bool, on_wait: &mut dyn FnMut(&str)) -> Result<File> {
    if no_wait {
        return lock::try_acquire(path)?.ok_or_else(|| RunError::IntegrationLocked {
            lock: path.to_path_buf(),
        });
    }
    Ok(lock::acquire(path, &mut || {
        on_wait(&format!(
            "waiting for another mpw integrate to finish (lock {})",
            path.display()
        ))
    })?)
}

/// The worktree that has `branch` checked out, if any; refuse if it has changes.
/// The worktree that has the target checked out, and its untracked files
/// (which may stay, as with `git merge`, unless a merge would write there).
struct Checkout {
    path: PathBuf,
    untracked: BTreeSet<String>,
}

fn checked_out_clean(repo: &Path, branch: &str) -> Result<Option<Checkout>> {
    let wt = git::list_worktrees(repo)?
        .into_iter()
        .find(|w| w.branch.as_deref() == Some(branch));
    let Some(wt) = wt else { return Ok(None) };
    let (untracked, dirty): (Vec<_>, Vec<_>) = git::changes(&wt.path, &Excluded::default())?
        .into_iter()
        .partition(|c| c.kind == git::ChangeKind::Added);
    if !dirty.is_empty() {
        return Err(RunError::DirtyTarget {
            branch: branch.into(),
            worktree: wt.path,
            more: dirty.len() > 20,
            paths: dirty.into_iter().take(20).map(|c| c.path).collect(),
        });
    }
    Ok(Some(Checkout {
        path: wt.path,
        untracked: untracked.into_iter().map(|c| c.path).collect(),
    }))
}

/// Merge the run's finished workstreams into the target branch.
pub fn integrate(
    repo: Option<&Path>,
    opts: &Options,
    listener: &mut dyn Listener,
    on_wait: &mut dyn FnMut(&str),
) -> Result<Report> {
    let mut s = setup(repo, opts.run.as_deref(), opts.into.as_deref())?;
    let _lock = take_lock(&s.store.layout.integrate_lock(), opts.no_wait, on_wait)?;
    // Only now: Ctrl-C while waiting for the lock ends mpw at once, as
    // nothing has been touched yet.
    if opts.gate.is_some() {
        s.gate_rt = Some(GateRuntime::new()?);
    }
    end_stale_gates(&mut s, opts.grace)?;
    // A checkout update a killed integration left half-done goes first.
    git::finish_checkout_update(&s.repo)?;
    let checkout = checked_out_clean(&s.repo, &s.into)?;
    let target_ref = format!("refs/heads/{}", s.into);
    let before = target_tip(&s)?;
    let run = s.run_id.clone();
    let started = EventData::IntegrationStarted(IntegrationStarted {
        into: s.into.clone(),
        strategy: opts.strategy,
        target: before.to_string(),
    });
    let ev = s.store.event(&run, None, None, None, started)?;
    listener.event(&ev);

    let rows = s.store.workstreams(&run)?;
    let history = s.store.integrations(&run)?;
    let tasks = s.store.tasks(&run)?;
    let mut session = MergeSession::open(&s.repo)?;
    let first_gate_run = s.store.last_gate_run()?;
    let mut outcomes = Vec::new();
    let mut integrated: BTreeSet<usize> = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| r.state == WorkstreamState::Integrated)
        .map(|(i, _)| i)
        .collect();
    let batch = opts.gate.as_ref().and_then(|g| g.batch);
    if let Some(size) = batch {
        let mut q = batch::Queue {
            opts,
            rows: &rows,
            history: &history,
            tasks: &tasks,
            checkout: checkout.as_ref(),
            target_ref: &target_ref,
            listener,
        };
        match batch::integrate(&mut s, &mut session, &mut q, size, &mut integrated) {
            Ok(o) => outcomes = o,
            Err(e) => {
                s.store.write_status_files(&run)?;
                return Err(e);
            }
        }
    }
    let sequential = match batch {
        Some(_) => vec![],
        None => order(&s.plan, &s.ws_deps),
    };
    for w in sequential {
        if s.gate_rt.as_ref().is_some_and(GateRuntime::stopped) {
            let e = interrupted(&s, "between two merges");
            return Err(record_cancelled(&mut s, listener, e)?);
        }
        let row = &rows[w];
        let head = match candidate(&s, &rows, w, &integrated, &history)? {
            Ok(head) => head,
            Err(skip) => {
                outcomes.push(skip);
                continue;
            }
        };
        let message = merge_message(&s, w, row, &tasks);
        let result = merge_one(
            &mut s,
            &mut session,
            opts,
            &target_ref,
            row,
            head,
            &message,
            checkout.as_ref(),
            listener,
        );
        let merged = match result {
            Ok(r) => r,
            Err(e) => {
                // What was integrated before stays recorded for other tools.
                return Err(record_cancelled(&mut s, listener, e)?);
            }
        };
        let covered = match merged.0 {
            WorkstreamState::GateFailed => vec![row.id.clone()],
            _ => vec![],
        };
        let outcome = record(&mut s, listener, row, head, opts.strategy, merged, covered)?;
        if outcome.state == WorkstreamState::Integrated {
            integrated.insert(w);
        }
        outcomes.push(outcome);
    }
    let after = target_tip(&s)?;
    let done = EventData::IntegrationCompleted(IntegrationDone {
        into: s.into.clone(),
        target: after.to_string(),
    });
    let ev = s.store.event(&run, None, None, None, done)?;
    listener.event(&ev);
    s.store.write_status_files(&run)?;
    let gate_runs = s.store.gate_runs(&run, first_gate_run)?;
    Ok(Report {
        run_id: run,
        into: s.into.clone(),
        strategy: opts.strategy,
        before: before.to_string(),
        after: after.to_string(),
        outcomes,
        gate_runs,
        warnings: std::mem::take(&mut s.warnings),
    })
}

type Merged = (WorkstreamState, Option<Oid>, Vec<String>, String);

/// The head of workstream `w` when it is due for merging now, or why not.
fn candidate(
    s: &Setup,
    rows: &[WsRow],
    w: usize,
    integrated: &BTreeSet<usize>,
    history: &[IntegrationRow],
) -> Result<std::result::Result<Oid, Outcome>> {
    let row = &rows[w];
    let skip = |state: WorkstreamState, detail: String| {
        Err(Outcome {
            workstream: row.id.clone(),
            state,
            commit: None,
            conflicts: vec![],
            detail,
        })
    };
    if row.state == WorkstreamState::Integrated {
        return Ok(skip(row.state, "already integrated".into()));
    }
    if !row.state.is_mergeable() {
        return Ok(skip(
            row.state,
            format!(
                "not merged: workstream is {}{}",
                row.state,
                row.reason
                    .as_ref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            ),
        ));
    }
    if let Some(&d) = s.ws_deps[w].iter().find(|d| !integrated.contains(d)) {
        return Ok(skip(
            row.state,
            format!(
                "not merged: it stacks on {}, which is not integrated",
                rows[d].id
            ),
        ));
    }
    let Some(head) = git::branch_tip(&s.repo, &row.branch)? else {
        return Ok(skip(
            row.state,
            format!("not merged: branch {} is gone", row.branch),
        ));
    };
    if let Some(why) = restack::stale_stack(&s.repo, &s.run_id, rows, &s.ws_deps[w], w, head)? {
        return Ok(skip(row.state, why));
    }
    // A conflict or gate failure is tried again once the branch has moved.
    if matches!(
        row.state,
        WorkstreamState::Conflict | WorkstreamState::GateFailed
    ) && history
        .iter()
        .rev()
        .find(|h| h.ws == row.id)
        .is_some_and(|h| h.branch_head.parse::<Oid>().ok() == Some(head))
    {
        return Ok(skip(
            row.state,
            format!(
                "unchanged since it was {}; fix it in {}, commit, and run mpw integrate again",
                row.state, row.worktree
            ),
        ));
    }
    Ok(Ok(head))
}

/// The message of a workstream's merge commit.
fn merge_message(s: &Setup, w: usize, row: &WsRow, tasks: &[TaskRow]) -> String {
    let run = &s.run_id;
    let name = s.plan.workstreams[w]
        .name
        .clone()
        .unwrap_or_else(|| row.id.clone());
    let task_lines: String = tasks
        .iter()
        .filter(|t| t.ws == row.id)
        .map(|t| {
            format!(
                "- {} {}: {}\n",
                t.id,
                t.state,
                t.name.clone().unwrap_or_default()
            )
        })
        .collect();
    format!(
        "Merge workstream {}: {name} (run {run})\n\nTasks:\n{task_lines}\nMpw-Run: {run}\nMpw-Workstream: {}\n",
        row.id, row.id
    )
}

/// Record one workstream's integration result: its row, its state and event.
fn record(
    s: &mut Setup,
    listener: &mut dyn Listener,
    row: &WsRow,
    head: Oid,
    strategy: Strategy,
    (state, commit, conflicts, detail): Merged,
    covered: Vec<String>,
) -> Result<Outcome> {
    let run = s.run_id.clone();
    // The history row is written with the state change, in one transaction.
    let at = now();
    let integration = Integration {
        into: s.into.clone(),
        commit: commit.map(|c| c.to_string()),
        conflicts: conflicts.clone(),
        at,
        strategy,
        branch_head: head.to_string(),
        detail: detail.clone(),
        covered,
    };
    let ev = s.store.transition_ws(
        &run,
        &row.id,
        state,
        WsPatch {
            integration: Some(integration),
            ..Default::default()
        },
    )?;
    if let Some(ev) = ev {
        listener.event(&ev);
    }
    Ok(Outcome {
        workstream: row.id.clone(),
        state,
        commit: commit.map(|c| c.to_string()),
        conflicts,
        detail,
    })
}

/// Merge one workstream: in memory, gate, compare-and-swap, update the checkout.
#[allow(clippy::too_many_arguments)]
fn merge_one(
    s: &mut Setup,
    session: &mut MergeSession,
    opts: &Options,
    target_ref: &str,
    row: &WsRow,
    head: Oid,
    message: &str,
    checkout: Option<&Checkout>,
    listener: &mut dyn Listener,
) -> Result<Merged> {
    for _ in 0..20 {
        let tip = target_tip(s)?;
        if git::is_ancestor(&s.repo, head, tip)? {
            return Ok((
                WorkstreamState::Integrated,
                Some(tip),
                vec![],
                format!("already contained in {}", s.into),
            ));
        }
        let m = session.merge(tip, head, &s.into, &row.branch)?;
        if !m.is_clean() {
            return Ok((
                WorkstreamState::Conflict,
                None,
                m.conflicts.clone(),
                conflict_detail(s, row, &m.conflicts),
            ));
        }
        let parents: Vec<Oid> = match opts.strategy {
            Strategy::Merge => vec![tip, head],
            Strategy::Squash => vec![tip],
        };
        let commit = session.commit(m.tree, &parents, message)?;
        session.persist()?;
        if opts.gate.is_some() {
            let n = s
                .store
                .integrations(&s.run_id)?
                .iter()
                .filter(|i| i.ws == row.id)
                .count()
                + 1;
            let g = run_gate(
                s,
                opts,
                &format!("{}.{n}", row.id),
                std::slice::from_ref(&row.id),
                None,
                commit,
                listener,
            )?;
            if let Some(reason) = g.failure {
                let next = format!(
                    "{reason}; fix it in {}, commit, and run mpw integrate again",
                    row.worktree
                );
                return Ok((WorkstreamState::GateFailed, None, vec![], next));
            }
        }
        untracked_in_the_way(s, checkout, &row.id, tip, commit)?;
        match git::advance_branch(
            &s.repo,
            target_ref,
            tip,
            commit,
            &format!("mpw integrate: workstream {}", row.id),
            checkout.map(|co| co.path.as_path()),
        ) {
            Ok(()) => {
                return Ok((
                    WorkstreamState::Integrated,
                    Some(commit),
                    vec![],
                    format!("merged into {}", s.into),
                ));
            }
            // Someone moved the target meanwhile: merge again on the new tip.
            Err(GitError::RefMoved { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(RunError::TargetKeptMoving {
        into: s.into.clone(),
        ws: row.id.clone(),
    })
}

fn conflict_detail(s: &Setup, row: &WsRow, conflicts: &[String]) -> String {
    format!(
        "conflicts with {} on {}; fix it in {} (merge {} there, resolve, commit), then run mpw integrate again",
        s.into,
        conflicts.join(", "),
        row.worktree,
        s.into
    )
}

/// The checked-out target's untracked files that moving it from `from` to
/// `to` would overwrite: refuse, as `git merge` does.
fn untracked_in_the_way(
    s: &Setup,
    checkout: Option<&Checkout>,
    ws: &str,
    from: Oid,
    to: Oid,
) -> Result<()> {
    let Some(co) = checkout.filter(|co| !co.untracked.is_empty()) else {
        return Ok(());
    };
    let in_the_way: Vec<String> = git::diffstat(&s.repo, from, to)?
        .files
        .into_iter()
        .map(|f| f.path)
        .filter(|p| co.untracked.contains(p))
        .collect();
    if in_the_way.is_empty() {
        return Ok(());
    }
    Err(RunError::UntrackedInTheWay {
        ws: ws.into(),
        worktree: co.path.clone(),
        paths: in_the_way,
        into: s.into.clone(),
    })
}
