//! After a coordinator died: recognise work it committed but never recorded,
//! end the processes it left, clear git's lock files, and either reopen what
//! did not finish (`resume`) or record the run CANCELLED (`cancel`).
//! See docs/ARCHITECTURE.md, "State machines".

use super::attempt;
use super::ctx::RunCtx;
use super::error::Result;
use super::ledger::Ledger;
use super::options::is_done;
use crate::exec::{self, ProcInfo, Verdict};
use crate::git::{self, Excluded, Oid};
use crate::model::{AttemptState, RunState, TaskState, WorkstreamState};
use crate::store::{AttemptRow, Layout, RunPatch, Store, TaskPatch, WsPatch};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Bring the ledger of a resumed run back to what can continue. Returns the
/// lock files the dead coordinator left, now removed, and, when it died
/// while the run was RUNNING, the time of its last event.
pub(super) fn recover(l: &mut Ledger) -> Result<(Vec<PathBuf>, Option<String>)> {
    let run = l.ctx.run_id.clone();
    let last_seen = last_seen(&l.store, &run)?;
    l.store.clear_cancel(&run)?;
    let attempts = l.store.attempts(&run)?;
    let ws_ids = l.ctx.ws.iter().map(|w| w.id.as_str());
    end_dead_coordinators_processes(&l.ctx.layout, &run, ws_ids, &attempts, l.ctx.grace);
    for i in 0..l.tasks.len() {
        match l.state(i) {
            TaskState::Running => recover_running(l, i, &attempts, last_seen.as_deref())?,
            TaskState::Cancelled | TaskState::Skipped => {
                l.transition_task(
                    i,
                    TaskState::Pending,
                    TaskPatch {
                        reason: None,
                        ..Default::default()
                    },
                )?;
            }
            _ => {}
        }
    }
    // Workstreams not finished go back to be provisioned (their worktree
    // is checked, reset or re-created there).
    for w in 0..l.ws.len() {
        let unfinished = l.dag.ws_tasks[w].clone().any(|t| !is_done(l.state(t)));
        let state = l.ws[w].state;
        if unfinished && state.is_terminal() || state == WorkstreamState::Running {
            l.transition_ws(w, WorkstreamState::Pending, WsPatch::default())?;
        }
        if !unfinished && !l.ws[w].state.is_terminal() {
            l.update_ws(w)?;
        }
    }
    // A kill -9 mid-write leaves git's lock files, which would fail every
    // later write; the processes of this run are all gone by now.
    let ws = l
        .ctx
        .ws
        .iter()
        .map(|w| (w.worktree.clone(), w.branch.clone()));
    Ok((remove_run_locks(&l.ctx.repo, &run, ws)?, last_seen))
}

/// A run still recorded RUNNING has lost its coordinator: its last event is
/// when it was last seen working; the time since then is no running time.
fn last_seen(store: &Store, run: &str) -> Result<Option<String>> {
    if store.run(run)?.state != RunState::Running {
        return Ok(None);
    }
    Ok(store.last_event_ts(run)?)
}

/// How long an attempt the dead coordinator had running ran: until its
/// coordinator was last seen.
fn ran_until(a: Option<&AttemptRow>, last_seen: Option<&str>) -> Option<i64> {
    let ms = |s: &str| chrono::DateTime::parse_from_rfc3339(s).ok();
    let (start, end) = (ms(&a?.started_at)?, ms(last_seen?)?);
    Some((end - start).num_milliseconds().max(0))
}

/// A task the dead coordinator had running: done if its commit is on the
/// branch, else back to PENDING without counting the attempt.
fn recover_running(
    l: &mut Ledger,
    i: usize,
    attempts: &[AttemptRow],
    last_seen: Option<&str>,
) -> Result<()> {
    let (run, ws, id) = l.ids(i);
    let w = l.ctx.tasks[i].ws;
    let a = attempts
        .iter()
        .rfind(|a| a.ws == ws && a.task == id && a.state == AttemptState::Running);
    let attempt = a.map(|a| a.attempt).unwrap_or(l.tasks[i].attempts);
    let duration_ms = ran_until(a, last_seen);
    // Committed before the crash, recorded never: it is done.
    let task_key = format!("{ws}/{id}");
    let start: Option<Oid> = a
        .and_then(|a| a.start_commit.as_deref())
        .and_then(|s| s.parse().ok());
    let tip = git::branch_tip(&l.ctx.repo, &l.ctx.ws[w].branch)?;
    let found = match (tip, start) {
        (Some(tip), Some(start)) if tip != start => {
            git::find_task_commit(&l.ctx.repo, tip, start, &run, &task_key)?
        }
        _ => None,
    };
    if let Some(found) = found {
        l.ws[w].head = Some(found.id);
        l.transition_task(
            i,
            TaskState::Succeeded,
            TaskPatch {
                attempt: Some(attempt),
                commit: Some(found.id.to_string()),
                exit_code: Some(0),
                reason: Some(
                    "committed before the coordinator stopped; recognised on resume".into(),
                ),
                duration_ms,
                ..Default::default()
            },
        )?;
        l.record_head(w, found.id)?;
    } else {
        // Pending: it waits for its worktree to be reset.
        l.transition_task(
            i,
            TaskState::Pending,
            TaskPatch {
                attempt: Some(attempt),
                attempt_state: Some(AttemptState::Interrupted),
                reason: Some("coordinator stopped while it ran".into()),
                duration_ms,
                ..Default::default()
            },
        )?;
        // The attempt does not count against retries.
        l.tasks[i].attempts = attempt;
        l.tasks[i].max_attempts += 1;
    }
    Ok(())
}

/// End what a dead coordinator's run left running: the attempts recorded as
/// RUNNING with their pid, and any process started too late to be recorded
/// (its `.proc` file beside its log), and its warm workers (their `.proc`
/// files beside their logs). Each is checked to still be ours.
fn end_dead_coordinators_processes<'a>(
    layout: &Layout,
    run: &str,
    ws_ids: impl Iterator<Item = &'a str>,
    attempts: &[AttemptRow],
    grace: Duration,
) {
    for a in attempts.iter().filter(|a| a.state == AttemptState::Running) {
        if let Some(pid) = a.pid {
            let info = ProcInfo {
                pid,
                pgid: a.pgid,
                start_time: a.proc_start,
            };
            exec::kill_stale(&info, grace);
        }
    }
    let mut logs: Vec<PathBuf> = ws_ids.map(|w| layout.ws_logs(run, w)).collect();
    logs.push(layout.worker_logs(run));
    exec::end_leftovers(&logs, grace);
}

/// Remove the git lock files a killed coordinator left in its run's worktrees
/// and refs. Caller holds the run's coordinator lock.
fn remove_run_locks(
    repo: &Path,
    run: &str,
    ws: impl Iterator<Item = (PathBuf, String)>,
) -> Result<Vec<PathBuf>> {
    let (worktrees, branches): (Vec<PathBuf>, Vec<String>) = ws
        .map(|(wt, branch)| (wt, format!("refs/heads/{branch}")))
        .unzip();
    Ok(git::remove_stale_locks(
        repo,
        &worktrees,
        &branches,
        &[format!("refs/mpw/{run}")],
    )?)
}

/// The stale lock files removed, as the events name them.
pub(super) fn lock_names(removed: &[PathBuf]) -> Vec<String> {
    removed.iter().map(|p| p.display().to_string()).collect()
}

/// Stop a run whose coordinator is gone: end its processes, keep what each
/// running attempt wrote (as a live cancel does, through the same code),
/// record CANCELLED.
pub(super) fn cancel_orphaned(store: &mut Store, ctx: &RunCtx) -> Result<()> {
    let run = ctx.run_id.as_str();
    let last_seen = last_seen(store, run)?;
    let attempts = store.attempts(run)?;
    let workstreams = store.workstreams(run)?;
    let ws_ids = workstreams.iter().map(|w| w.id.as_str());
    end_dead_coordinators_processes(&store.layout, run, ws_ids, &attempts, ctx.grace);
    // The killed coordinator's lock files would fail the commits below.
    let removed = remove_run_locks(
        &ctx.repo,
        run,
        workstreams
            .iter()
            .map(|w| (PathBuf::from(&w.worktree), w.branch.clone())),
    )?;
    for a in &attempts {
        if a.state != AttemptState::Running {
            continue;
        }
        let mut reason = "cancelled; its coordinator had stopped".to_string();
        let mut preserved_ref = None;
        let i = ctx
            .tasks
            .iter()
            .position(|t| t.id == a.task && ctx.ws[t.ws].id == a.ws);
        let start = a.start_commit.as_deref().and_then(|s| s.parse().ok());
        if let (Some(i), Some(start)) = (i, start) {
            let w = &workstreams[ctx.tasks[i].ws];
            let excluded = Excluded::paths(w.baseline.iter().flatten().cloned());
            let s = attempt::settle(
                ctx,
                i,
                a.attempt,
                start,
                &excluded,
                Verdict::Cancelled,
                false,
            );
            match s.verdict {
                Verdict::Cancelled => preserved_ref = s.preserved_ref,
                Verdict::Failed(why) => reason = format!("{reason}; {why}"),
                _ => {}
            }
        }
        store.transition_task(
            run,
            &a.ws,
            &a.task,
            TaskState::Cancelled,
            TaskPatch {
                attempt: Some(a.attempt),
                preserved_ref,
                reason: Some(reason),
                duration_ms: ran_until(Some(a), last_seen.as_deref()),
                ..Default::default()
            },
        )?;
    }
    let not_started = TaskPatch {
        reason: Some("run cancelled before it started".into()),
        ..Default::default()
    };
    for t in store.tasks(run)? {
        if matches!(t.state, TaskState::Pending | TaskState::Ready) {
            let patch = not_started.clone();
            store.transition_task(run, &t.ws, &t.id, TaskState::Skipped, patch)?;
        }
    }
    let cancelled = WsPatch {
        reason: Some("run cancelled".into()),
        ..Default::default()
    };
    for w in store.workstreams(run)? {
        if !w.state.is_terminal() {
            store.transition_ws(run, &w.id, WorkstreamState::Failed, cancelled.clone())?;
        }
    }
    let patch = RunPatch {
        stale_locks_removed: lock_names(&removed),
        coordinator_last_seen: last_seen,
    };
    store.transition_run(run, RunState::Cancelled, patch)?;
    store.write_status_files(run)?;
    Ok(())
}
