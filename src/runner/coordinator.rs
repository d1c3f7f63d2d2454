//! The coordinator: one loop that asks the scheduler what may start, starts
//! attempts and provisioning as tokio tasks, and records every result in the
//! ledger. See docs/ARCHITECTURE.md, "Plan flow".

use super::ctx::{AttemptResult, Msg, Provisioned, RunCtx};
use super::error::{Result, RunError};
use super::ledger::{Ledger, Listener, WsPhase};
use super::options::{Finished, Invocation, StoredOptions};
use super::workers::Pools;
use super::{attempt, provision, recover};
use crate::exec::{Cancel, Verdict};
use crate::git::{Excluded, Oid};
use crate::model::{
    AttemptState, EventData, RunState, SetupFailed, StaleLocks, TaskState, WorkstreamState,
    WorktreeCreated,
};
use crate::plan::Loaded;
use crate::scheduler::{Scheduler, Slots, TaskInfo};
use crate::signals::Signals;
use crate::slots::{Budget, Unit};
use crate::store::{RunPatch, Store, TaskPatch, WsPatch};
use std::fs::File;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

struct Coord<'a> {
    l: Ledger<'a>,
    sched: Scheduler<'a>,
    cancel_tx: watch::Sender<Cancel>,
    tx: mpsc::UnboundedSender<Msg>,
    pools: Arc<Pools>,
    in_flight: usize,
    cancelled: bool,
    fail_fast: bool,
    stop_starting: bool,
    max_provisioning: usize,
    /// The cpu budget shared with the tasks' tools (see `crate::slots`).
    budget: Budget,
    /// The budget's unit each running cpu task holds, by task.
    units: std::collections::HashMap<usize, Unit>,
    /// Tasks whose wait for a machine slot has been told (TASK_WAITING).
    told_waiting: Vec<bool>,
    /// `Ledger::unsuccessful` when blocked tasks were last looked for.
    seen_unsuccessful: usize,
    /// Attempts recorded RUNNING in the open batch, not started yet.
    launch: Vec<Launch>,
    /// Started attempts whose pid row waits for the next commit.
    pids: Vec<(usize, u32, crate::exec::ProcInfo)>,
}

/// What an attempt recorded RUNNING needs to start.
struct Launch {
    task: usize,
    attempt: u32,
    start: Oid,
    excluded: Arc<Excluded>,
    will_retry: bool,
    cancel: watch::Receiver<Cancel>,
}

/// A recorded run, ready for its coordinator.
pub(super) struct Start {
    pub store: Store,
    pub run_id: String,
    pub loaded: Loaded,
    pub opts: StoredOptions,
    pub listener: Box<dyn Listener>,
    pub how: Invocation,
    /// The run's coordinator lock, held until the run ends.
    pub lock: File,
}

/// Drive a recorded run to its end.
pub(super) fn drive(start: Start) -> Result<Finished> {
    crate::exec::one_malloc_arena();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(RunError::runtime("cannot start the runtime"))?;
    // The coordinator runs on a worker, beside the attempts: their messages
    // wake it there, not on another thread (docs/ARCHITECTURE.md, "Per-task cost").
    rt.block_on(async {
        tokio::spawn(drive_async(start))
            .await
            .map_err(|e| RunError::runtime("the coordinator stopped")(std::io::Error::other(e)))?
    })
}

/// The run's fixed context, from its recorded row and plan.
pub(super) fn slots(loaded: &Loaded, opts: &StoredOptions) -> Slots {
    let g = &loaded.plan.globals;
    let max = opts
        .max_concurrency
        .or(g.max_concurrency.map(|m| m as usize))
        .unwrap_or(3)
        .max(1);
    let or_max = |n: Option<u32>| n.map(|c| c as usize).unwrap_or(max).max(1);
    Slots {
        max,
        cpu: or_max(g.cpu_slots),
        io: or_max(g.io_slots),
    }
}

async fn drive_async(start: Start) -> Result<Finished> {
    let Start {
        store,
        run_id,
        loaded,
        opts,
        listener,
        how,
        lock: _lock,
    } = start;
    let run_id = run_id.as_str();
    let slots = slots(&loaded, &opts);
    let budget = Budget::new(run_id, slots.cpu).map_err(RunError::Env)?;
    let mut ctx = RunCtx::load(&store, run_id, &loaded, &opts, how.repo)?;
    ctx.jobserver = Some(budget.jobserver());
    let ctx = Arc::new(ctx);
    let info: Vec<TaskInfo> = ctx
        .tasks
        .iter()
        .map(|t| TaskInfo {
            class: t.class,
            read_only: t.read_only,
            allow_failure: t.allow_failure,
        })
        .collect();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (cancel_tx, _) = watch::channel(Cancel::No);
    let by_class = |class| match class {
        crate::plan::TaskClass::Cpu => slots.cpu,
        crate::plan::TaskClass::Io => slots.io,
    };
    let pools = Pools::new(
        &loaded.plan,
        &ctx.layout,
        run_id,
        &ctx.repo,
        ctx.grace,
        by_class,
        tx.clone(),
    )
    .map_err(RunError::io(&ctx.layout.adapters()))?;
    // The context has what the run needs of the plan; the plan itself (a
    // few MiB at 10,000 tasks) goes (docs/ARCHITECTURE.md, "Per-task cost").
    let Loaded { plan, dag, .. } = loaded;
    drop(plan);
    let dag = &dag;
    let mut c = Coord {
        l: Ledger::load(ctx, store, dag, listener)?,
        sched: Scheduler::new(dag, &info, slots),
        cancel_tx,
        tx,
        pools: Arc::new(pools),
        in_flight: 0,
        cancelled: false,
        fail_fast: opts.fail_fast,
        stop_starting: false,
        max_provisioning: slots.max,
        budget,
        units: std::collections::HashMap::new(),
        told_waiting: vec![false; info.len()],
        seen_unsuccessful: 0,
        launch: Vec::new(),
        pids: Vec::new(),
    };
    if how.resuming {
        // Ending a dead coordinator's processes waits out their grace.
        let (removed, last_seen) = tokio::task::block_in_place(|| recover::recover(&mut c.l))?;
        crate::fault::kill_point("kill-after-recover");
        let locks = StaleLocks {
            stale_locks_removed: recover::lock_names(&removed),
            coordinator_last_seen: last_seen,
        };
        c.l.event(None, None, None, EventData::RunResumed(locks))?;
    }
    c.l.start_listener()?;
    c.l.transition_run(RunState::Running, RunPatch::default())?;
    // Setup's peak (the plan's forms, the first status) is over.
    crate::exec::release_free_memory();

    let mut signals = Signals::new().map_err(RunError::runtime("cannot listen for SIGTERM"))?;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    // While a cpu task waits for a token that a tool may give back any moment.
    let mut token_poll = tokio::time::interval(Duration::from_millis(20));
    token_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Scheduling looks at every task: only after something that can change
    // what may start (a pid recorded or a worker's event cannot). Messages
    // that arrived together and the step after them commit as one.
    c.batch(Coord::step)?;
    while !c.done() {
        tokio::select! {
            msg = rx.recv() => {
                if let Some(msg) = msg {
                    c.batch(|c| {
                        let (mut next, mut changed) = (Some(msg), false);
                        while let Some(msg) = next {
                            changed |= !matches!(msg, Msg::Started { .. } | Msg::Worker(_));
                            c.handle(msg)?;
                            next = rx.try_recv().ok();
                        }
                        if changed { c.step() } else { Ok(()) }
                    })?;
                    continue;
                }
            }
            _ = token_poll.tick(), if c.budget.waiting() => {}
            _ = tick.tick() => {
                if !c.cancelled && c.l.store.run(run_id)?.cancel_requested {
                    c.cancel(Cancel::Graceful);
                }
                c.batch(Coord::record_pids)?;
            }
            level = signals.next() => {
                let level = if c.cancelled { Cancel::Immediate } else { level };
                c.cancel(level);
            }
        }
        c.batch(Coord::step)?;
    }
    // Events of workers that ended with their last request, then the idle ones.
    c.batch(|c| {
        while let Ok(msg) = rx.try_recv() {
            c.handle(msg)?;
        }
        c.record_pids()
    })?;
    for data in c.pools.shutdown().await {
        c.l.event(None, None, None, data)?;
    }
    let final_state = if c.cancelled {
        RunState::Cancelled
    } else if c.l.ws.iter().all(|w| w.state == WorkstreamState::Completed) {
        RunState::Completed
    } else {
        RunState::Failed
    };
    c.l.transition_run(final_state, RunPatch::default())?;
    c.l.finish()?;
    Ok(Finished {
        run_id: run_id.into(),
        state: final_state,
        interrupted: c.cancelled,
        repo: c.l.ctx.repo.clone(),
    })
}

impl Coord<'_> {
    fn done(&self) -> bool {
        self.in_flight == 0
            && !self.l.ws.iter().any(|w| w.phase == WsPhase::Provisioning)
            && self.l.all_ended()
    }

    /// Skip what can never run, provision what can, promote and start tasks.
    fn step(&mut self) -> Result<()> {
        // Tasks behind a failure never run; only a new failure makes more.
        while self.l.unsuccessful() != self.seen_unsuccessful {
            self.seen_unsuccessful = self.l.unsuccessful();
            let blocked = self.sched.blocked(self.l.task_states());
            for i in blocked {
                // Read again: a task skipped just now may be the first culprit.
                let states = self.l.task_states();
                let reason = match self.sched.blocking_dep(i, states) {
                    Some(d) => format!(
                        "upstream {}/{} {}",
                        self.l.ctx.ws[self.l.ctx.tasks[d].ws].id, self.l.ctx.tasks[d].id, states[d]
                    ),
                    None => "upstream did not complete".into(),
                };
                self.l.skip_task(i, reason)?;
            }
        }
        if self.stop_starting {
            let reason = if self.cancelled {
                "run cancelled before it started"
            } else {
                "not started: --fail-fast after a failure"
            };
            for i in 0..self.l.tasks.len() {
                if matches!(self.l.state(i), TaskState::Pending | TaskState::Ready) {
                    self.l.skip_task(i, reason.into())?;
                }
            }
            return Ok(());
        }
        self.provision_ready()?;
        let open: Vec<bool> = self.l.ws.iter().map(|w| w.phase == WsPhase::Open).collect();
        for i in self.sched.newly_ready(self.l.task_states(), &open) {
            self.l
                .transition_task(i, TaskState::Ready, TaskPatch::default())?;
        }
        let now = Instant::now();
        let (slots, tasks) = (&self.l.tasks, &self.l.ctx.tasks);
        let start = self.sched.startable(self.l.task_states(), &|i| {
            slots[i].held_until.is_some_and(|t| t > now) || !open[tasks[i].ws]
        });
        self.start(start)
    }

    /// Start the tasks the scheduler chose; a cpu task only with a unit of the
    /// budget, the others wait for the next step.
    fn start(&mut self, tasks: Vec<usize>) -> Result<()> {
        let ctx = self.l.ctx.clone();
        let cpu = |i: &usize| ctx.tasks[*i].class == crate::plan::TaskClass::Cpu;
        let ready = tasks.iter().filter(|i| cpu(i)).count();
        let ready_js = tasks.iter().any(|&i| ctx.tasks[i].jobserver);
        let budget_err = |e| RunError::Env(format!("jobserver: {e}"));
        self.budget.settle(ready, ready_js).map_err(budget_err)?;
        for i in tasks {
            if cpu(&i) {
                let t = &ctx.tasks[i];
                let name = format!("{}/{}", ctx.ws[t.ws].id, t.id);
                match self.budget.take(&name, t.jobserver).map_err(budget_err)? {
                    Some(unit) => {
                        self.units.insert(i, unit);
                        if std::mem::take(&mut self.told_waiting[i]) {
                            let (run, ws, id) = self.l.ids(i);
                            self.l.store.note_waiting(&run, &ws, &id, None)?;
                        }
                    }
                    None => {
                        self.tell_waiting(i)?;
                        continue;
                    }
                }
            }
            self.start_attempt(i)?;
        }
        Ok(())
    }

    /// A READY cpu task waits for the machine pool: say so once per wait.
    fn tell_waiting(&mut self, i: usize) -> Result<()> {
        if self.told_waiting[i] {
            return Ok(());
        }
        let Some(reason) = self.budget.machine_wait(&self.l.ctx.run_id) else {
            return Ok(());
        };
        self.told_waiting[i] = true;
        let (run, ws_id, id) = self.l.ids(i);
        self.l
            .store
            .note_waiting(&run, &ws_id, &id, Some(&reason))?;
        let facts = crate::model::TaskFacts {
            reason: Some(reason),
            ..Default::default()
        };
        let ws = self.l.ctx.tasks[i].ws;
        self.l
            .event(Some(ws), Some(i), None, EventData::TaskWaiting(facts))
    }

    /// Provision every workstream whose dependencies are COMPLETED; skip the
    /// ones whose dependencies ended otherwise.
    fn provision_ready(&mut self) -> Result<()> {
        for w in 0..self.l.ws.len() {
            if self.l.ws[w].phase != WsPhase::Closed || self.l.ws[w].state.is_terminal() {
                continue;
            }
            let deps = self.l.dag.ws_deps[w].clone();
            let state = |d: usize| self.l.ws[d].state;
            if deps
                .iter()
                .any(|&d| state(d).is_terminal() && state(d) != WorkstreamState::Completed)
            {
                let names: Vec<String> = deps
                    .iter()
                    .filter(|&&d| state(d) != WorkstreamState::Completed)
                    .map(|&d| format!("{} {}", self.l.ctx.ws[d].id, state(d)))
                    .collect();
                let reason = format!("depends on {}", names.join(", "));
                self.skip_unfinished(w, &reason)?;
                self.l.end_ws(w, WorkstreamState::Skipped, reason)?;
                continue;
            }
            if !deps.iter().all(|&d| state(d) == WorkstreamState::Completed) {
                continue;
            }
            // Nothing left to run here (all tasks done before a resume): no worktree needed.
            if self.l.dag.ws_tasks[w]
                .clone()
                .all(|t| self.l.state(t).is_terminal())
            {
                continue;
            }
            // Checkouts and setup commands are heavy: at most max_concurrency at once.
            let busy = self.l.ws.iter();
            if busy.filter(|s| s.phase == WsPhase::Provisioning).count() >= self.max_provisioning {
                break;
            }
            let from: Vec<Oid> = deps.iter().filter_map(|&d| self.l.ws[d].head).collect();
            self.l.ws[w].phase = WsPhase::Provisioning;
            let ctx = self.l.ctx.clone();
            let tx = self.tx.clone();
            let cancel = self.cancel_tx.subscribe();
            let known = self.l.ws[w].baseline.clone();
            tokio::spawn(async move {
                let result = provision::provision(ctx, w, from, known, cancel).await;
                let _ = tx.send(Msg::Provisioned { ws: w, result });
            });
        }
        Ok(())
    }

    /// Skip the tasks of a workstream that have not ended.
    fn skip_unfinished(&mut self, w: usize, reason: &str) -> Result<()> {
        for t in self.l.dag.ws_tasks[w].clone() {
            if !self.l.state(t).is_terminal() {
                self.l.skip_task(t, reason.to_string())?;
            }
        }
        Ok(())
    }

    /// Record an attempt RUNNING; its process starts once that is committed
    /// (`launch`): a process the database does not know of could not be
    /// recovered after a crash.
    fn start_attempt(&mut self, i: usize) -> Result<()> {
        let w = self.l.ctx.tasks[i].ws;
        let attempt = self.l.tasks[i].attempts + 1;
        self.l.tasks[i].attempts = attempt;
        let start = self.l.ws[w].head.expect("open workstream has a head");
        self.l.transition_task(
            i,
            TaskState::Running,
            TaskPatch {
                attempt: Some(attempt),
                start_commit: Some(start.to_string()),
                ..Default::default()
            },
        )?;
        self.in_flight += 1;
        self.launch.push(Launch {
            task: i,
            attempt,
            start,
            excluded: self.l.ws[w].baseline.clone().unwrap_or_default(),
            will_retry: attempt < self.l.tasks[i].max_attempts,
            cancel: self.cancel_tx.subscribe(),
        });
        Ok(())
    }

    /// Start the attempts recorded RUNNING (by a committed batch).
    fn launch(&mut self) {
        for l in self.launch.drain(..) {
            let Launch {
                task: i,
                attempt,
                start,
                excluded,
                will_retry,
                cancel,
            } = l;
            let ctx = self.l.ctx.clone();
            let t = &ctx.tasks[i];
            crate::fault::kill_point(format_args!(
                "kill-before-launch:{}/{}",
                ctx.ws[t.ws].id, t.id
            ));
            let pools = self.pools.clone();
            let tx = self.tx.clone();
            let tx2 = self.tx.clone();
            tokio::spawn(async move {
                let on_start = move |proc| {
                    let _ = tx2.send(Msg::Started {
                        task: i,
                        attempt,
                        proc,
                    });
                };
                let result = attempt::run_attempt(
                    ctx, pools, i, attempt, start, excluded, will_retry, cancel, on_start,
                )
                .await;
                let _ = tx.send(Msg::Finished {
                    task: i,
                    attempt,
                    result,
                });
            });
        }
    }

    /// Make `f`'s changes as one commit (a task's end, the next one's start:
    /// docs/ARCHITECTURE.md, "Per-task cost"), then start the attempts it
    /// recorded. Committed even when `f` fails: each change is whole.
    fn batch(&mut self, f: impl FnOnce(&mut Self) -> Result<()>) -> Result<()> {
        self.l.begin_batch();
        let mut done = f(self);
        if done.is_ok() && self.l.store.batch_written() {
            done = self.record_pids();
        }
        let committed = self.l.end_batch();
        done?;
        committed?;
        self.launch();
        Ok(())
    }

    /// The pids of started attempts, into the database. Their `.proc`
    /// lines are what recovery reads first (written before `Started` is
    /// sent), so the rows wait for a commit that happens anyway: the
    /// attempt's end, another change, or the next tick.
    fn record_pids(&mut self) -> Result<()> {
        for (task, attempt, proc) in std::mem::take(&mut self.pids) {
            let (run, ws, id) = self.l.ids(task);
            self.l.store.record_proc(&run, &ws, &id, attempt, &proc)?;
        }
        Ok(())
    }

    fn handle(&mut self, msg: Msg) -> Result<()> {
        match msg {
            Msg::Started {
                task,
                attempt,
                proc,
            } => {
                let t = &self.l.ctx.tasks[task];
                crate::fault::kill_point(format_args!(
                    "kill-before-pid:{}/{}",
                    self.l.ctx.ws[t.ws].id, t.id
                ));
                self.pids.push((task, attempt, proc));
            }
            Msg::Finished {
                task,
                attempt,
                result,
            } => {
                self.in_flight -= 1;
                if let Some(unit) = self.units.remove(&task) {
                    let e = |e| RunError::Env(format!("jobserver: {e}"));
                    self.budget.give_back(unit).map_err(e)?;
                }
                self.finish_attempt(task, attempt, result)?;
            }
            Msg::Worker(data) => self.l.event(None, None, None, data)?,
            Msg::Provisioned { ws, result } => {
                match result {
                    Ok(p) => self.open_ws(ws, p)?,
                    Err(reason) => {
                        self.l.ws[ws].phase = WsPhase::Closed;
                        let data = EventData::SetupFailed(SetupFailed {
                            reason: reason.clone(),
                        });
                        self.l.event(Some(ws), None, None, data)?;
                        let why = format!("workstream could not start: {reason}");
                        self.skip_unfinished(ws, &why)?;
                        self.l.end_ws(ws, WorkstreamState::Failed, reason)?;
                    }
                }
                let to_provision = self.l.ws.iter().any(|w| {
                    w.phase == WsPhase::Provisioning
                        || (w.phase == WsPhase::Closed && !w.state.is_terminal())
                });
                if !to_provision {
                    self.l.ctx.forget_checkouts();
                }
            }
        }
        Ok(())
    }

    /// A workstream's worktree is ready: record it; its tasks may start.
    fn open_ws(&mut self, w: usize, p: Provisioned) -> Result<()> {
        let slot = &mut self.l.ws[w];
        slot.phase = WsPhase::Open;
        slot.head = Some(p.start_commit);
        let ws = &self.l.ctx.ws[w];
        slot.baseline = Some(Arc::new(
            Excluded::paths(p.baseline.iter().cloned()).with_ignore(ws.ignore.clone()),
        ));
        let data = EventData::WorktreeCreated(WorktreeCreated {
            path: ws.worktree.to_string_lossy().into_owned(),
            branch: ws.branch.clone(),
            commit: p.start_commit.to_string(),
            missing_copies: p.missing_copies,
        });
        if p.created {
            self.l.event(Some(w), None, None, data)?;
        }
        // Every task was skipped or cancelled while the worktree was being
        // made: the workstream has ended and stays as it ended.
        if self.l.ws[w].state.is_terminal() {
            return Ok(());
        }
        let patch = WsPatch {
            start_commit: p.fresh.then(|| p.start_commit.to_string()),
            head: Some(p.start_commit.to_string()),
            baseline: Some(p.baseline),
            ..Default::default()
        };
        self.l.transition_ws(w, WorkstreamState::Running, patch)
    }

    fn finish_attempt(&mut self, i: usize, attempt: u32, r: AttemptResult) -> Result<()> {
        let w = self.l.ctx.tasks[i].ws;
        let s = r.settled;
        let patch = TaskPatch {
            attempt: Some(attempt),
            exit_code: r.exit_code,
            commit: s.commit.map(|c| c.to_string()),
            preserved_ref: s.preserved_ref,
            hint: s.hint,
            duration_ms: Some(r.duration.as_millis() as i64),
            ..Default::default()
        };
        match s.verdict {
            Verdict::Succeeded => {
                if let Some(c) = s.commit {
                    self.l.record_head(w, c)?;
                }
                self.l.transition_task(i, TaskState::Succeeded, patch)?;
            }
            Verdict::Failed(reason)
                if attempt < self.l.tasks[i].max_attempts && !self.cancelled =>
            {
                // Short backoff: 1 s, 2 s, 4 s ... at most 30 s.
                let backoff = Duration::from_secs((1u64 << (attempt - 1).min(5)).min(30));
                self.l.tasks[i].held_until = Some(Instant::now() + backoff);
                self.l.transition_task(
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
                self.l.transition_task(
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
        if !self.l.ctx.tasks[i].allow_failure && self.fail_fast {
            self.stop_starting = true;
        }
        self.l.transition_task(
            i,
            state,
            TaskPatch {
                reason: Some(reason),
                ..patch
            },
        )
    }

    fn cancel(&mut self, level: Cancel) {
        self.cancelled = true;
        self.stop_starting = true;
        self.cancel_tx.send_replace(level);
    }
}
