//! The coordinator: one loop that owns the store, asks the scheduler what may
//! start, starts attempts and provisioning as tokio tasks, and records every
//! result. All state changes happen here, through `Store::transition_*`.

use super::attempt::{self, AttemptResult, TaskCtx};
use super::provision::{self, Provisioned, WsCtx};
use super::{Finished, Result, RunError, StoredOptions, is_done};
use crate::exec::{self, Cancel, ProcInfo, Verdict};
use crate::git::{self, Excluded, Oid};
use crate::model::{
    AttemptState, Event, EventData, RunState, SetupFailed, StaleLocks, TaskState, WorkstreamState,
    WorktreeCreated,
};
use crate::plan::Loaded;
use crate::scheduler::{Scheduler, Slots, TaskInfo};
use crate::store::{RunPatch, RunStatus, Store, TaskPatch, WsPatch};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// Receives every event of a run as it is recorded (progress bars, log
/// lines, JSON). Listeners only listen.
pub trait Listener: Send {
    /// The run as recorded before the first event of this invocation.
    fn start(&mut self, _status: &RunStatus) {}
    fn event(&mut self, ev: &Event);
    /// The final status, after the last event.
    fn finish(&mut self, _status: &RunStatus) {}
}

/// Everything fixed for the run's lifetime, shared with attempts.
pub(crate) struct RunCtx {
    pub run_id: String,
    pub repo: PathBuf,
    pub layout: crate::store::Layout,
    pub base: Oid,
    pub grace: Duration,
    pub ws: Vec<WsCtx>,
    pub tasks: Vec<TaskCtx>,
}

enum Msg {
    Started {
        task: usize,
        attempt: u32,
        proc: ProcInfo,
    },
    Finished {
        task: usize,
        attempt: u32,
        result: AttemptResult,
    },
    Provisioned {
        ws: usize,
        result: std::result::Result<Provisioned, String>,
    },
}

struct Coord<'a> {
    ctx: Arc<RunCtx>,
    store: Store,
    listener: Box<dyn Listener>,
    sched: Scheduler<'a>,
    dag: &'a crate::plan::Dag,
    states: Vec<TaskState>,
    attempts: Vec<u32>,
    max_attempts: Vec<u32>,
    held_until: Vec<Option<Instant>>,
    ws_state: Vec<WorkstreamState>,
    ws_open: Vec<bool>,
    ws_busy: Vec<bool>,
    ws_head: Vec<Option<Oid>>,
    ws_excluded: Vec<Arc<Excluded>>,
    /// Provisioned by an earlier invocation (its baseline is recorded).
    ws_known: Vec<bool>,
    cancel_tx: watch::Sender<Cancel>,
    tx: mpsc::UnboundedSender<Msg>,
    in_flight: usize,
    cancelled: bool,
    fail_fast: bool,
    stop_starting: bool,
    max_provisioning: usize,
}

/// Drive a recorded run to its end.
pub(super) fn drive(
    store: Store,
    run_id: &str,
    loaded: Loaded,
    opts: StoredOptions,
    listener: Box<dyn Listener>,
    how: super::Invocation,
    _lock: File,
) -> Result<Finished> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| RunError::Env(format!("cannot start the runtime: {e}")))?;
    rt.block_on(drive_async(store, run_id, loaded, opts, listener, how))
}

async fn drive_async(
    store: Store,
    run_id: &str,
    loaded: Loaded,
    opts: StoredOptions,
    listener: Box<dyn Listener>,
    how: super::Invocation,
) -> Result<Finished> {
    let resuming = how.resuming;
    let row = store.run(run_id)?;
    let plan = &loaded.plan;
    let dag = &loaded.dag;
    let repo = how.repo;
    let base: Oid = row
        .base
        .parse()
        .map_err(|_| RunError::Env(format!("run {run_id}: bad base commit {}", row.base)))?;
    let grace = Duration::from_millis(if opts.grace_ms == 0 {
        5000
    } else {
        opts.grace_ms
    });
    let ws_rows = store.workstreams(run_id)?;
    let shell = super::plan_shell(plan);
    let ws_ctx: Vec<WsCtx> = plan
        .workstreams
        .iter()
        .enumerate()
        .map(|(i, w)| WsCtx::new(plan, w, i, &ws_rows[i], shell))
        .collect::<Result<_>>()?;
    let mut tasks = Vec::with_capacity(dag.tasks.len());
    for node in &dag.tasks {
        let w = &plan.workstreams[node.ws];
        tasks.push(TaskCtx::new(plan, w, &w.tasks[node.task], node.ws, shell)?);
    }
    let info: Vec<TaskInfo> = tasks
        .iter()
        .map(|t| TaskInfo {
            class: t.class,
            read_only: t.read_only,
            allow_failure: t.allow_failure,
        })
        .collect();
    let max = opts
        .max_concurrency
        .or(plan.globals.max_concurrency.map(|m| m as usize))
        .unwrap_or(3)
        .max(1);
    let slots = Slots {
        max,
        cpu: plan
            .globals
            .cpu_slots
            .map(|c| c as usize)
            .unwrap_or(max)
            .max(1),
        io: plan
            .globals
            .io_slots
            .map(|c| c as usize)
            .unwrap_or(max)
            .max(1),
    };
    let ctx = Arc::new(RunCtx {
        run_id: run_id.into(),
        repo,
        layout: store.layout.clone(),
        base,
        grace,
        ws: ws_ctx,
        tasks,
    });
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (cancel_tx, _) = watch::channel(Cancel::No);
    let n = dag.tasks.len();
    let nws = plan.workstreams.len();
    let max_attempts = ctx.tasks.iter().map(|t| t.retries + 1).collect();
    let mut c = Coord {
        sched: Scheduler::new(dag, &info, slots),
        dag,
        states: vec![TaskState::Pending; n],
        attempts: vec![0; n],
        max_attempts,
        held_until: vec![None; n],
        ws_state: vec![WorkstreamState::Pending; nws],
        ws_open: vec![false; nws],
        ws_busy: vec![false; nws],
        ws_head: vec![None; nws],
        ws_excluded: (0..nws).map(|_| Arc::new(Excluded::default())).collect(),
        ws_known: vec![false; nws],
        ctx,
        store,
        cancel_tx,
        tx,
        in_flight: 0,
        cancelled: false,
        fail_fast: opts.fail_fast,
        stop_starting: false,
        max_provisioning: slots.max,
        listener,
    };
    c.load_states()?;
    let status = c.store.run_status(run_id)?;
    c.listener.start(&status);
    if resuming {
        let removed = c.recover()?;
        let locks = StaleLocks {
            stale_locks_removed: lock_names(&removed),
        };
        c.event(None, None, None, EventData::RunResumed(locks))?;
    }
    c.transition_run(RunState::Running, RunPatch::default())?;

    let mut signals = Signals::new()?;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        c.step()?;
        if c.done() {
            break;
        }
        tokio::select! {
            msg = rx.recv() => {
                if let Some(msg) = msg {
                    c.handle(msg).await?;
                }
            }
            _ = tick.tick() => {
                if !c.cancelled && c.store.run(run_id)?.cancel_requested {
                    c.cancel(Cancel::Graceful)?;
                }
            }
            level = signals.next() => {
                let level = if c.cancelled { Cancel::Immediate } else { level };
                c.cancel(level)?;
            }
        }
    }
    let final_state = if c.cancelled {
        RunState::Cancelled
    } else if c.ws_state.iter().all(|s| *s == WorkstreamState::Completed) {
        RunState::Completed
    } else {
        RunState::Failed
    };
    c.transition_run(final_state, RunPatch::default())?;
    let status = c.store.write_status_files(run_id)?;
    c.listener.finish(&status);
    Ok(Finished {
        run_id: run_id.into(),
        state: final_state,
        interrupted: c.cancelled,
        repo: c.ctx.repo.clone(),
    })
}

impl Coord<'_> {
    /// Fill the in-memory mirror from the database.
    fn load_states(&mut self) -> Result<()> {
        let rows = self.store.tasks(&self.ctx.run_id)?;
        for (i, r) in rows.iter().enumerate() {
            self.states[i] = r.state;
            self.attempts[i] = r.attempts;
        }
        for (i, w) in self.store.workstreams(&self.ctx.run_id)?.iter().enumerate() {
            self.ws_state[i] = w.state;
            self.ws_head[i] = w.head.as_deref().and_then(|h| h.parse().ok());
            if let Some(b) = &w.baseline {
                self.ws_excluded[i] = Arc::new(Excluded(b.iter().cloned().collect()));
                self.ws_known[i] = true;
            }
        }
        Ok(())
    }

    // ---- the one place each kind of state changes ----

    fn emit(&mut self, ev: Option<Event>) {
        if let Some(ev) = ev {
            self.listener.event(&ev);
        }
    }

    fn event(
        &mut self,
        ws: Option<usize>,
        task: Option<usize>,
        attempt: Option<u32>,
        data: EventData,
    ) -> Result<()> {
        let ws_id = ws.map(|w| self.ctx.ws[w].id.clone());
        let task_id = task.map(|t| self.ctx.tasks[t].id.clone());
        let ev = self.store.event(
            &self.ctx.run_id,
            ws_id.as_deref(),
            task_id.as_deref(),
            attempt,
            data,
        )?;
        self.emit(Some(ev));
        Ok(())
    }

    fn transition_run(&mut self, to: RunState, patch: RunPatch) -> Result<()> {
        let run = self.ctx.run_id.clone();
        let ev = self.store.transition_run(&run, to, patch)?;
        self.emit(ev);
        Ok(())
    }

    fn transition_task(&mut self, i: usize, to: TaskState, patch: TaskPatch) -> Result<()> {
        let (run, ws, task) = (
            self.ctx.run_id.clone(),
            self.ctx.ws[self.ctx.tasks[i].ws].id.clone(),
            self.ctx.tasks[i].id.clone(),
        );
        let ev = self.store.transition_task(&run, &ws, &task, to, patch)?;
        self.states[i] = to;
        self.emit(ev);
        if to.is_terminal() || to == TaskState::Running {
            self.update_ws(self.ctx.tasks[i].ws)?;
        }
        Ok(())
    }

    fn transition_ws(&mut self, w: usize, to: WorkstreamState, patch: WsPatch) -> Result<()> {
        let (run, ws) = (self.ctx.run_id.clone(), self.ctx.ws[w].id.clone());
        let ev = self.store.transition_ws(&run, &ws, to, patch)?;
        self.ws_state[w] = to;
        self.emit(ev);
        if to.is_terminal() {
            self.store.write_status_files_of(&run, Some(&ws))?;
        }
        Ok(())
    }

    /// Derive a workstream's state from its tasks.
    fn update_ws(&mut self, w: usize) -> Result<()> {
        let range = self.dag.ws_tasks[w].clone();
        let strict: Vec<TaskState> = range
            .clone()
            .filter(|&t| !self.ctx.tasks[t].allow_failure)
            .map(|t| self.states[t])
            .collect();
        let all_done = range.clone().all(|t| self.states[t].is_terminal());
        let cur = self.ws_state[w];
        let next = if !all_done {
            WorkstreamState::Running
        } else if strict.contains(&TaskState::Quarantined) {
            WorkstreamState::Quarantined
        } else if strict
            .iter()
            .any(|s| matches!(s, TaskState::Failed | TaskState::Cancelled))
        {
            WorkstreamState::Failed
        } else if strict.contains(&TaskState::Skipped) {
            if range.clone().all(|t| self.states[t] == TaskState::Skipped) {
                WorkstreamState::Skipped
            } else {
                WorkstreamState::Failed
            }
        } else {
            WorkstreamState::Completed
        };
        if next != cur
            && !(next == WorkstreamState::Running
                && cur == WorkstreamState::Pending
                && !self.ws_open[w])
        {
            let reason = match next {
                WorkstreamState::Failed
                | WorkstreamState::Quarantined
                | WorkstreamState::Skipped => self.ws_reason(w),
                _ => None,
            };
            self.transition_ws(
                w,
                next,
                WsPatch {
                    reason,
                    ..Default::default()
                },
            )?;
        }
        Ok(())
    }

    fn ws_reason(&self, w: usize) -> Option<String> {
        let bad: Vec<String> = self.dag.ws_tasks[w]
            .clone()
            .filter(|&t| !self.ctx.tasks[t].allow_failure)
            .filter(|&t| {
                matches!(
                    self.states[t],
                    TaskState::Failed | TaskState::Quarantined | TaskState::Cancelled
                )
            })
            .map(|t| format!("{} {}", self.ctx.tasks[t].id, self.states[t]))
            .collect();
        if bad.is_empty() {
            Some("upstream work did not complete".into())
        } else {
            Some(bad.join(", "))
        }
    }

    // ---- the loop ----

    fn done(&self) -> bool {
        self.in_flight == 0
            && !self.ws_busy.iter().any(|b| *b)
            && self.states.iter().all(|s| s.is_terminal())
    }

    /// Skip what can never run, provision what can, promote and start tasks.
    fn step(&mut self) -> Result<()> {
        // Tasks behind a failure never run.
        loop {
            let blocked = self.sched.blocked(&self.states);
            if blocked.is_empty() {
                break;
            }
            for i in blocked {
                let reason = self.blocked_reason(i);
                self.transition_task(
                    i,
                    TaskState::Skipped,
                    TaskPatch {
                        reason: Some(reason),
                        ..Default::default()
                    },
                )?;
            }
        }
        if self.stop_starting {
            let waiting: Vec<usize> = (0..self.states.len())
                .filter(|&i| matches!(self.states[i], TaskState::Pending | TaskState::Ready))
                .collect();
            let reason = if self.cancelled {
                "run cancelled before it started"
            } else {
                "not started: --fail-fast after a failure"
            };
            for i in waiting {
                self.transition_task(
                    i,
                    TaskState::Skipped,
                    TaskPatch {
                        reason: Some(reason.into()),
                        ..Default::default()
                    },
                )?;
            }
            return Ok(());
        }
        self.provision_ready()?;
        for i in self.sched.newly_ready(&self.states, &self.ws_open) {
            self.transition_task(i, TaskState::Ready, TaskPatch::default())?;
        }
        let now = Instant::now();
        let held = &self.held_until;
        let open = &self.ws_open;
        let tasks = &self.ctx.tasks;
        let start = self.sched.startable(&self.states, &|i| {
            held[i].is_some_and(|t| t > now) || !open[tasks[i].ws]
        });
        for i in start {
            self.start_attempt(i)?;
        }
        Ok(())
    }

    fn blocked_reason(&self, i: usize) -> String {
        let culprit = self.dag.tasks[i]
            .deps
            .iter()
            .find(|&&d| {
                matches!(
                    self.states[d],
                    TaskState::Failed
                        | TaskState::Quarantined
                        | TaskState::Skipped
                        | TaskState::Cancelled
                ) && !(self.ctx.tasks[d].allow_failure
                    && matches!(self.states[d], TaskState::Failed | TaskState::Quarantined))
            })
            .copied();
        match culprit {
            Some(d) => format!(
                "upstream {}/{} {}",
                self.ctx.ws[self.ctx.tasks[d].ws].id, self.ctx.tasks[d].id, self.states[d]
            ),
            None => "upstream did not complete".into(),
        }
    }

    /// Provision every workstream whose dependencies are COMPLETED; skip the
    /// ones whose dependencies ended otherwise.
    fn provision_ready(&mut self) -> Result<()> {
        for w in 0..self.ws_open.len() {
            if self.ws_open[w] || self.ws_busy[w] || self.ws_state[w].is_terminal() {
                continue;
            }
            let deps = self.dag.ws_deps[w].clone();
            if deps.iter().any(|&d| {
                self.ws_state[d].is_terminal() && self.ws_state[d] != WorkstreamState::Completed
            }) {
                let names: Vec<String> = deps
                    .iter()
                    .filter(|&&d| self.ws_state[d] != WorkstreamState::Completed)
                    .map(|&d| format!("{} {}", self.ctx.ws[d].id, self.ws_state[d]))
                    .collect();
                let reason = format!("depends on {}", names.join(", "));
                for t in self.dag.ws_tasks[w].clone() {
                    if !self.states[t].is_terminal() {
                        self.transition_task(
                            t,
                            TaskState::Skipped,
                            TaskPatch {
                                reason: Some(reason.clone()),
                                ..Default::default()
                            },
                        )?;
                    }
                }
                self.transition_ws(
                    w,
                    WorkstreamState::Skipped,
                    WsPatch {
                        reason: Some(reason),
                        ..Default::default()
                    },
                )?;
                continue;
            }
            if !deps
                .iter()
                .all(|&d| self.ws_state[d] == WorkstreamState::Completed)
            {
                continue;
            }
            // Nothing left to run here (all tasks done before a resume): no worktree needed.
            if self.dag.ws_tasks[w]
                .clone()
                .all(|t| self.states[t].is_terminal())
            {
                continue;
            }
            // Checkouts and setup commands are heavy: at most max_concurrency at once.
            if self.ws_busy.iter().filter(|b| **b).count() >= self.max_provisioning {
                break;
            }
            let from: Vec<Oid> = deps.iter().filter_map(|&d| self.ws_head[d]).collect();
            self.ws_busy[w] = true;
            let ctx = self.ctx.clone();
            let tx = self.tx.clone();
            let cancel = self.cancel_tx.subscribe();
            let known = self.ws_known[w].then(|| self.ws_excluded[w].clone());
            tokio::spawn(async move {
                let result = provision::provision(ctx, w, from, known, cancel).await;
                let _ = tx.send(Msg::Provisioned { ws: w, result });
            });
        }
        Ok(())
    }

    fn start_attempt(&mut self, i: usize) -> Result<()> {
        let w = self.ctx.tasks[i].ws;
        let attempt = self.attempts[i] + 1;
        self.attempts[i] = attempt;
        let start = self.ws_head[w].expect("open workstream has a head");
        self.transition_task(
            i,
            TaskState::Running,
            TaskPatch {
                attempt: Some(attempt),
                start_commit: Some(start.to_string()),
                ..Default::default()
            },
        )?;
        self.in_flight += 1;
        let ctx = self.ctx.clone();
        let tx = self.tx.clone();
        let tx2 = self.tx.clone();
        let cancel = self.cancel_tx.subscribe();
        let excluded = self.ws_excluded[w].clone();
        let will_retry = attempt < self.max_attempts[i];
        tokio::spawn(async move {
            let on_start = move |proc| {
                let _ = tx2.send(Msg::Started {
                    task: i,
                    attempt,
                    proc,
                });
            };
            let result = attempt::run_attempt(
                ctx, i, attempt, start, excluded, will_retry, cancel, on_start,
            )
            .await;
            let _ = tx.send(Msg::Finished {
                task: i,
                attempt,
                result,
            });
        });
        Ok(())
    }

    async fn handle(&mut self, msg: Msg) -> Result<()> {
        match msg {
            Msg::Started {
                task,
                attempt,
                proc,
            } => {
                let (run, ws, id) = self.ids(task);
                crate::fault::kill_point(&format!("kill-before-pid:{ws}/{id}"));
                self.store.record_proc(&run, &ws, &id, attempt, &proc)?;
            }
            Msg::Finished {
                task,
                attempt,
                result,
            } => {
                self.in_flight -= 1;
                self.finish_attempt(task, attempt, result)?;
            }
            Msg::Provisioned { ws, result } => {
                self.ws_busy[ws] = false;
                match result {
                    Ok(p) => {
                        self.ws_head[ws] = Some(p.start_commit);
                        self.ws_excluded[ws] =
                            Arc::new(Excluded(p.baseline.iter().cloned().collect()));
                        self.ws_open[ws] = true;
                        self.ws_known[ws] = true;
                        if p.created {
                            let data = EventData::WorktreeCreated(WorktreeCreated {
                                path: self.ctx.ws[ws].worktree.to_string_lossy().into_owned(),
                                branch: self.ctx.ws[ws].branch.clone(),
                                commit: p.start_commit.to_string(),
                                missing_copies: p.missing_copies,
                            });
                            self.event(Some(ws), None, None, data)?;
                        }
                        let patch = WsPatch {
                            start_commit: p.fresh.then(|| p.start_commit.to_string()),
                            head: Some(p.start_commit.to_string()),
                            baseline: Some(p.baseline),
                            ..Default::default()
                        };
                        self.transition_ws(ws, WorkstreamState::Running, patch)?;
                    }
                    Err(reason) => {
                        let data = EventData::SetupFailed(SetupFailed {
                            reason: reason.clone(),
                        });
                        self.event(Some(ws), None, None, data)?;
                        for t in self.dag.ws_tasks[ws].clone() {
                            if !self.states[t].is_terminal() {
                                self.transition_task(
                                    t,
                                    TaskState::Skipped,
                                    TaskPatch {
                                        reason: Some(format!(
                                            "workstream could not start: {reason}"
                                        )),
                                        ..Default::default()
                                    },
                                )?;
                            }
                        }
                        self.transition_ws(
                            ws,
                            WorkstreamState::Failed,
                            WsPatch {
                                reason: Some(reason),
                                ..Default::default()
                            },
                        )?;
                    }
                }
            }
        }
        Ok(())
    }

    fn ids(&self, task: usize) -> (String, String, String) {
        (
            self.ctx.run_id.clone(),
            self.ctx.ws[self.ctx.tasks[task].ws].id.clone(),
            self.ctx.tasks[task].id.clone(),
        )
    }

    fn finish_attempt(&mut self, i: usize, attempt: u32, r: AttemptResult) -> Result<()> {
        let w = self.ctx.tasks[i].ws;
        let duration_ms = Some(r.duration.as_millis() as i64);
        if let Some(c) = r.commit {
            self.ws_head[w] = Some(c);
        }
        let patch = TaskPatch {
            attempt: Some(attempt),
            exit_code: r.exit_code,
            commit: r.commit.map(|c| c.to_string()),
            preserved_ref: r.preserved_ref.clone(),
            duration_ms,
            ..Default::default()
        };
        match r.verdict {
            Verdict::Succeeded => {
                if r.commit.is_some() {
                    let run = self.ctx.run_id.clone();
                    let ws = self.ctx.ws[w].id.clone();
                    let ev = self.store.transition_ws(
                        &run,
                        &ws,
                        self.ws_state[w],
                        WsPatch {
                            head: r.commit.map(|c| c.to_string()),
                            ..Default::default()
                        },
                    )?;
                    self.emit(ev);
                }
                self.transition_task(i, TaskState::Succeeded, patch)?;
            }
            Verdict::Failed(reason) if attempt < self.max_attempts[i] && !self.cancelled => {
                // Short backoff: 1 s, 2 s, 4 s ... at most 30 s.
                let backoff = Duration::from_secs((1u64 << (attempt - 1).min(5)).min(30));
                self.held_until[i] = Some(Instant::now() + backoff);
                self.transition_task(
                    i,
                    TaskState::Ready,
                    TaskPatch {
                        reason: Some(reason),
                        attempt_state: Some(AttemptState::Failed),
                        ..patch
                    },
                )?;
            }
            Verdict::Failed(reason) => {
                self.end_unsuccessful(i, TaskState::Failed, reason, patch)?
            }
            Verdict::Quarantined(reason) => {
                self.end_unsuccessful(i, TaskState::Quarantined, reason, patch)?
            }
            Verdict::Cancelled => {
                self.transition_task(
                    i,
                    TaskState::Cancelled,
                    TaskPatch {
                        reason: Some("cancelled while running".into()),
                        ..patch
                    },
                )?;
            }
        }
        Ok(())
    }

    /// A task FAILED or QUARANTINED for good: it counts for `--fail-fast`
    /// unless it may fail.
    fn end_unsuccessful(
        &mut self,
        i: usize,
        state: TaskState,
        reason: String,
        patch: TaskPatch,
    ) -> Result<()> {
        if !self.ctx.tasks[i].allow_failure {
            self.note_failure();
        }
        self.transition_task(
            i,
            state,
            TaskPatch {
                reason: Some(reason),
                ..patch
            },
        )
    }

    fn note_failure(&mut self) {
        if self.fail_fast {
            self.stop_starting = true;
        }
    }

    fn cancel(&mut self, level: Cancel) -> Result<()> {
        self.cancelled = true;
        self.stop_starting = true;
        self.cancel_tx.send_replace(level);
        Ok(())
    }

    /// After a crash: recognise work that was committed but not recorded,
    /// end processes left behind, reset worktrees, reopen what did not finish.
    /// Returns the lock files the dead coordinator left, now removed.
    fn recover(&mut self) -> Result<Vec<PathBuf>> {
        let run = self.ctx.run_id.clone();
        self.store.clear_cancel(&run)?;
        let attempts = self.store.attempts(&run)?;
        let ws_ids = self.ctx.ws.iter().map(|w| w.id.as_str());
        end_dead_coordinators_processes(&self.ctx.layout, &run, ws_ids, &attempts, self.ctx.grace);
        for i in 0..self.states.len() {
            match self.states[i] {
                TaskState::Running => {
                    let (_, ws, id) = self.ids(i);
                    let w = self.ctx.tasks[i].ws;
                    let a = attempts
                        .iter()
                        .rfind(|a| a.ws == ws && a.task == id && a.state == AttemptState::Running);
                    let attempt = a.map(|a| a.attempt).unwrap_or(self.attempts[i]);
                    // Committed before the crash, recorded never: it is done.
                    let task_key = format!("{ws}/{id}");
                    let start: Option<Oid> = a
                        .and_then(|a| a.start_commit.as_deref())
                        .and_then(|s| s.parse().ok());
                    let tip = git::branch_tip(&self.ctx.repo, &self.ctx.ws[w].branch)?;
                    let found = match (tip, start) {
                        (Some(tip), Some(start)) if tip != start => {
                            git::find_task_commit(&self.ctx.repo, tip, start, &run, &task_key)?
                        }
                        _ => None,
                    };
                    if let Some(found) = found {
                        self.ws_head[w] = Some(found.id);
                        self.transition_task(
                            i,
                            TaskState::Succeeded,
                            TaskPatch {
                                attempt: Some(attempt),
                                commit: Some(found.id.to_string()),
                                exit_code: Some(0),
                                reason: Some("committed before the coordinator stopped; recognised on resume".into()),
                                ..Default::default()
                            },
                        )?;
                        let ev = self.store.transition_ws(
                            &run,
                            &ws,
                            self.ws_state[w],
                            WsPatch {
                                head: Some(found.id.to_string()),
                                ..Default::default()
                            },
                        )?;
                        self.emit(ev);
                    } else {
                        // Pending: it waits for its worktree to be reset.
                        self.transition_task(
                            i,
                            TaskState::Pending,
                            TaskPatch {
                                attempt: Some(attempt),
                                attempt_state: Some(AttemptState::Interrupted),
                                reason: Some("coordinator stopped while it ran".into()),
                                ..Default::default()
                            },
                        )?;
                        // The attempt does not count against retries.
                        self.attempts[i] = attempt;
                        self.max_attempts[i] += 1;
                    }
                }
                TaskState::Cancelled | TaskState::Skipped => {
                    self.transition_task(
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
        for w in 0..self.ws_state.len() {
            let unfinished = self.dag.ws_tasks[w]
                .clone()
                .any(|t| !is_done(self.states[t]));
            if unfinished && self.ws_state[w].is_terminal()
                || self.ws_state[w] == WorkstreamState::Running
            {
                self.ws_state[w] = WorkstreamState::Pending;
            }
            if !unfinished && !self.ws_state[w].is_terminal() {
                self.update_ws(w)?;
            }
        }
        // A kill -9 mid-write leaves git's lock files, which would fail every
        // later write; the processes of this run are all gone by now.
        let ws = self
            .ctx
            .ws
            .iter()
            .map(|w| (w.worktree.clone(), w.branch.clone()));
        remove_run_locks(&self.ctx.repo, &run, ws)
    }
}

/// End what a dead coordinator's run left running: the attempts recorded as
/// RUNNING with their pid, and any process started too late to be recorded
/// (its `.proc` file beside its log). Each is checked to still be ours.
fn end_dead_coordinators_processes<'a>(
    layout: &crate::store::Layout,
    run: &str,
    ws_ids: impl Iterator<Item = &'a str>,
    attempts: &[crate::store::AttemptRow],
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
    let logs: Vec<PathBuf> = ws_ids.map(|w| layout.ws_logs(run, w)).collect();
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

fn lock_names(removed: &[PathBuf]) -> Vec<String> {
    removed.iter().map(|p| p.display().to_string()).collect()
}

/// Stop a run whose coordinator is gone: end its processes, record CANCELLED.
pub(super) fn cancel_orphaned(
    store: &mut Store,
    repo: &Path,
    run: &str,
    grace: Duration,
) -> Result<()> {
    let attempts = store.attempts(run)?;
    let workstreams = store.workstreams(run)?;
    let ws_ids = workstreams.iter().map(|w| w.id.as_str());
    end_dead_coordinators_processes(&store.layout, run, ws_ids, &attempts, grace);
    for a in attempts {
        if a.state != AttemptState::Running {
            continue;
        }
        store.transition_task(
            run,
            &a.ws,
            &a.task,
            TaskState::Cancelled,
            TaskPatch {
                attempt: Some(a.attempt),
                reason: Some("cancelled; its coordinator had stopped".into()),
                ..Default::default()
            },
        )?;
    }
    for t in store.tasks(run)? {
        if matches!(t.state, TaskState::Pending | TaskState::Ready) {
            store.transition_task(
                run,
                &t.ws,
                &t.id,
                TaskState::Skipped,
                TaskPatch {
                    reason: Some("run cancelled before it started".into()),
                    ..Default::default()
                },
            )?;
        }
    }
    for w in store.workstreams(run)? {
        if !w.state.is_terminal() {
            store.transition_ws(
                run,
                &w.id,
                WorkstreamState::Failed,
                WsPatch {
                    reason: Some("run cancelled".into()),
                    ..Default::default()
                },
            )?;
        }
    }
    let removed = remove_run_locks(
        repo,
        run,
        workstreams
            .into_iter()
            .map(|w| (PathBuf::from(w.worktree), w.branch)),
    )?;
    let patch = RunPatch {
        stale_locks_removed: lock_names(&removed),
    };
    store.transition_run(run, RunState::Cancelled, patch)?;
    store.write_status_files(run)?;
    Ok(())
}

/// Ctrl-C and SIGTERM: the first asks for a graceful stop, the next kills.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Self> {
        Ok(Signals {
            #[cfg(unix)]
            term: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .map_err(|e| RunError::Env(format!("cannot listen for SIGTERM: {e}")))?,
        })
    }

    async fn next(&mut self) -> Cancel {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => Cancel::Graceful,
                _ = self.term.recv() => Cancel::Graceful,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            Cancel::Graceful
        }
    }
}
