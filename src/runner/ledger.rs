//! The coordinator's record of a run: the in-memory mirror of every task's
//! and workstream's state, and the one place each of them changes (database
//! row, event, listeners, in that order). See docs/ARCHITECTURE.md,
//! "State machines".

use super::ctx::RunCtx;
use super::error::Result;
use crate::git::{Excluded, Oid};
use crate::model::{Event, EventData, RunState, TaskState, WorkstreamState};
use crate::plan::Dag;
use crate::store::{RunPatch, RunStatus, Store, TaskPatch, WsPatch};
use std::sync::Arc;
use std::time::Instant;

/// Receives every event of a run as it is recorded (progress bars, log
/// lines, JSON). Listeners only listen.
pub trait Listener: Send {
    /// The run as recorded when this invocation starts its work: after a
    /// resume's recovery (whose events came before), before the rest.
    fn start(&mut self, _status: &RunStatus) {}
    fn event(&mut self, ev: &Event);
    /// The final status, after the last event.
    fn finish(&mut self, _status: &RunStatus) {}
}

/// What the coordinator knows of one task (its state: `Ledger::states`).
#[derive(Debug, Clone)]
pub(super) struct TaskSlot {
    /// Attempts started so far.
    pub attempts: u32,
    pub max_attempts: u32,
    /// Retry backoff: not to start before then.
    pub held_until: Option<Instant>,
}

/// Where a workstream's worktree stands in this invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WsPhase {
    /// Not provisioned (yet, or it failed to be).
    Closed,
    /// Worktree and setup under way.
    Provisioning,
    /// Provisioned: its tasks may start.
    Open,
}

/// What the coordinator knows of one workstream.
#[derive(Debug, Clone)]
pub(super) struct WsSlot {
    pub state: WorkstreamState,
    pub phase: WsPhase,
    pub head: Option<Oid>,
    /// Paths present after setup, never committed. `Some` once provisioned,
    /// in this invocation or (recorded) an earlier one.
    pub baseline: Option<Arc<Excluded>>,
}

/// The state a workstream should be in, from its tasks' states (each with
/// whether it may fail) and its phase. Pure, so it is tested on its own.
pub(super) fn derive_ws_state(
    cur: WorkstreamState,
    phase: WsPhase,
    tasks: &[(TaskState, bool)],
) -> WorkstreamState {
    let strict: Vec<TaskState> = tasks
        .iter()
        .filter(|(_, may_fail)| !may_fail)
        .map(|(s, _)| *s)
        .collect();
    let next = if !tasks.iter().all(|(s, _)| s.is_terminal()) {
        WorkstreamState::Running
    } else if strict.contains(&TaskState::Quarantined) {
        WorkstreamState::Quarantined
    } else if strict
        .iter()
        .any(|s| matches!(s, TaskState::Failed | TaskState::Cancelled))
    {
        WorkstreamState::Failed
    } else if strict.contains(&TaskState::Skipped) {
        if tasks.iter().all(|(s, _)| *s == TaskState::Skipped) {
            WorkstreamState::Skipped
        } else {
            WorkstreamState::Failed
        }
    } else {
        WorkstreamState::Completed
    };
    // A task may move before the worktree is there (skipped, or reopened
    // by resume): the workstream starts running only once provisioned.
    if next == WorkstreamState::Running && cur == WorkstreamState::Pending && phase != WsPhase::Open
    {
        cur
    } else {
        next
    }
}

pub(super) struct Ledger<'a> {
    pub ctx: Arc<RunCtx>,
    pub store: Store,
    pub dag: &'a Dag,
    pub tasks: Vec<TaskSlot>,
    /// Each task's state, by global index; changed by `transition_task` only.
    states: Vec<TaskState>,
    /// How many tasks have ended, and how many of those did not succeed:
    /// the coordinator's step looks at every task only when these say it
    /// may find something (docs/ARCHITECTURE.md, "Per-task cost").
    ended: usize,
    unsuccessful: usize,
    pub ws: Vec<WsSlot>,
    listener: Box<dyn Listener>,
    /// Inside `begin_batch`: what waits for the batch's commit.
    batch: Option<Batch>,
}

/// What a batch's changes tell the world once they are committed, besides
/// their events (which the store keeps for its commit): the status files of
/// the workstreams that ended.
#[derive(Default)]
struct Batch {
    ended_ws: Vec<String>,
}

/// A task in this state may keep its dependants from ever running.
fn unsuccessful(s: TaskState) -> bool {
    s.is_terminal() && s != TaskState::Succeeded
}

impl<'a> Ledger<'a> {
    /// The mirror as the database has it.
    pub fn load(
        ctx: Arc<RunCtx>,
        store: Store,
        dag: &'a Dag,
        listener: Box<dyn Listener>,
    ) -> Result<Self> {
        let rows = store.tasks(&ctx.run_id)?;
        let states: Vec<TaskState> = rows.iter().map(|r| r.state).collect();
        let tasks = ctx
            .tasks
            .iter()
            .zip(&rows)
            .map(|(t, r)| TaskSlot {
                attempts: r.attempts,
                max_attempts: t.retries + 1,
                held_until: None,
            })
            .collect();
        let ws = store
            .workstreams(&ctx.run_id)?
            .iter()
            .zip(&ctx.ws)
            .map(|(w, c)| WsSlot {
                state: w.state,
                phase: WsPhase::Closed,
                head: w.head.as_deref().and_then(|h| h.parse().ok()),
                baseline: w.baseline.as_ref().map(|b| {
                    Arc::new(Excluded::paths(b.iter().cloned()).with_ignore(c.ignore.clone()))
                }),
            })
            .collect();
        let mut store = store;
        store.keep_status(Some(&ctx.run_id));
        Ok(Ledger {
            ctx,
            store,
            dag,
            tasks,
            ended: states.iter().filter(|s| s.is_terminal()).count(),
            unsuccessful: states.iter().filter(|&&s| unsuccessful(s)).count(),
            states,
            ws,
            listener,
            batch: None,
        })
    }

    pub fn task_states(&self) -> &[TaskState] {
        &self.states
    }

    pub fn state(&self, task: usize) -> TaskState {
        self.states[task]
    }

    /// Every task has ended.
    pub fn all_ended(&self) -> bool {
        self.ended == self.states.len()
    }

    /// How many tasks ended without success so far (it only grows).
    pub fn unsuccessful(&self) -> usize {
        self.unsuccessful
    }

    /// Run, workstream and task ids of a task.
    pub fn ids(&self, task: usize) -> (String, String, String) {
        (
            self.ctx.run_id.clone(),
            self.ctx.ws[self.ctx.tasks[task].ws].id.clone(),
            self.ctx.tasks[task].id.clone(),
        )
    }

    /// Tell the listener where the run stands now.
    pub fn start_listener(&mut self) -> Result<()> {
        let status = self.store.run_status(&self.ctx.run_id)?;
        self.listener.start(&status);
        Ok(())
    }

    pub fn finish(&mut self) -> Result<()> {
        // The last write reads everything anyway: what was kept can go first.
        self.store.keep_status(None);
        let status = self.store.write_status_files(&self.ctx.run_id)?;
        self.listener.finish(&status);
        Ok(())
    }

    /// From here to `end_batch`, changes commit together (see
    /// `Store::begin_batch`); listeners and status files hear of them after.
    pub fn begin_batch(&mut self) {
        self.store.begin_batch();
        self.batch.get_or_insert_default();
    }

    /// Commit the batch, then tell the listener and write the status files.
    pub fn end_batch(&mut self) -> Result<()> {
        let Some(batch) = self.batch.take() else {
            return Ok(());
        };
        for ev in self.store.end_batch()? {
            self.listener.event(&ev);
        }
        for ws in &batch.ended_ws {
            self.store.write_status_files_of(&self.ctx.run_id, ws)?;
        }
        if !batch.ended_ws.is_empty() {
            crate::exec::release_free_memory();
        }
        Ok(())
    }

    // ---- the one place each kind of state changes ----

    /// Inside a batch the store keeps the event until its commit
    /// (`end_batch` tells the listener then).
    fn emit(&mut self, ev: Option<Event>) {
        if let Some(ev) = ev
            && self.batch.is_none()
        {
            self.listener.event(&ev);
        }
    }

    pub fn event(
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

    pub fn transition_run(&mut self, to: RunState, patch: RunPatch) -> Result<()> {
        let run = self.ctx.run_id.clone();
        let ev = self.store.transition_run(&run, to, patch)?;
        self.emit(ev);
        Ok(())
    }

    pub fn transition_task(&mut self, i: usize, to: TaskState, patch: TaskPatch) -> Result<()> {
        let (run, ws, task) = self.ids(i);
        let ev = self.store.transition_task(&run, &ws, &task, to, patch)?;
        let from = std::mem::replace(&mut self.states[i], to);
        self.ended = self.ended + usize::from(to.is_terminal()) - usize::from(from.is_terminal());
        self.unsuccessful =
            self.unsuccessful + usize::from(unsuccessful(to)) - usize::from(unsuccessful(from));
        self.emit(ev);
        if to.is_terminal() || to == TaskState::Running {
            self.update_ws(self.ctx.tasks[i].ws)?;
        }
        Ok(())
    }

    /// Skip a task that will never run, saying why.
    pub fn skip_task(&mut self, i: usize, reason: String) -> Result<()> {
        self.transition_task(
            i,
            TaskState::Skipped,
            TaskPatch {
                reason: Some(reason),
                ..Default::default()
            },
        )
    }

    pub fn transition_ws(&mut self, w: usize, to: WorkstreamState, patch: WsPatch) -> Result<()> {
        let (run, ws) = (self.ctx.run_id.clone(), self.ctx.ws[w].id.clone());
        let ev = self.store.transition_ws(&run, &ws, to, patch)?;
        self.ws[w].state = to;
        self.emit(ev);
        if to.is_terminal() {
            self.ctx.ws[w].close_repo();
            match &mut self.batch {
                Some(b) => b.ended_ws.push(ws),
                None => {
                    self.store.write_status_files_of(&run, &ws)?;
                    crate::exec::release_free_memory();
                }
            }
        }
        Ok(())
    }

    /// End a workstream unsuccessfully, saying why.
    pub fn end_ws(&mut self, w: usize, to: WorkstreamState, reason: String) -> Result<()> {
        self.transition_ws(
            w,
            to,
            WsPatch {
                reason: Some(reason),
                ..Default::default()
            },
        )
    }

    /// A task committed: the workstream's branch moved to `head`.
    pub fn record_head(&mut self, w: usize, head: Oid) -> Result<()> {
        self.ws[w].head = Some(head);
        let (run, ws) = (self.ctx.run_id.clone(), self.ctx.ws[w].id.clone());
        let patch = WsPatch {
            head: Some(head.to_string()),
            ..Default::default()
        };
        let ev = self
            .store
            .transition_ws(&run, &ws, self.ws[w].state, patch)?;
        self.emit(ev);
        Ok(())
    }

    /// Bring a workstream's state in line with its tasks'.
    pub fn update_ws(&mut self, w: usize) -> Result<()> {
        let tasks: Vec<(TaskState, bool)> = self.dag.ws_tasks[w]
            .clone()
            .map(|t| (self.states[t], self.ctx.tasks[t].allow_failure))
            .collect();
        let cur = self.ws[w].state;
        let next = derive_ws_state(cur, self.ws[w].phase, &tasks);
        if next == cur {
            return Ok(());
        }
        let reason = match next {
            WorkstreamState::Failed | WorkstreamState::Quarantined | WorkstreamState::Skipped => {
                Some(self.ws_reason(w))
            }
            _ => None,
        };
        self.transition_ws(
            w,
            next,
            WsPatch {
                reason,
                ..Default::default()
            },
        )
    }

    fn ws_reason(&self, w: usize) -> String {
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
            "upstream work did not complete".into()
        } else {
            bad.join(", ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TaskState::*;
    use WorkstreamState as W;

    fn strict(states: &[TaskState]) -> Vec<(TaskState, bool)> {
        states.iter().map(|s| (*s, false)).collect()
    }

    #[test]
    fn unfinished_tasks_keep_a_workstream_running_once_open() {
        let t = strict(&[Succeeded, Running]);
        assert_eq!(derive_ws_state(W::Running, WsPhase::Open, &t), W::Running);
        assert_eq!(derive_ws_state(W::Pending, WsPhase::Open, &t), W::Running);
    }

    #[test]
    fn a_workstream_not_yet_open_stays_pending() {
        let t = strict(&[Skipped, Pending]);
        assert_eq!(derive_ws_state(W::Pending, WsPhase::Closed, &t), W::Pending);
        assert_eq!(
            derive_ws_state(W::Pending, WsPhase::Provisioning, &t),
            W::Pending
        );
    }

    #[test]
    fn finished_tasks_decide_the_end_state() {
        let end = |s: &[TaskState]| derive_ws_state(W::Running, WsPhase::Open, &strict(s));
        assert_eq!(end(&[Succeeded, Succeeded]), W::Completed);
        assert_eq!(end(&[Succeeded, Failed]), W::Failed);
        assert_eq!(end(&[Cancelled, Succeeded]), W::Failed);
        // Quarantine wins over failure: the work needs a look.
        assert_eq!(end(&[Failed, Quarantined]), W::Quarantined);
        assert_eq!(end(&[Skipped, Skipped]), W::Skipped);
        assert_eq!(end(&[Succeeded, Skipped]), W::Failed);
    }

    #[test]
    fn tasks_that_may_fail_do_not_fail_their_workstream() {
        let t = [(Failed, true), (Quarantined, true), (Succeeded, false)];
        assert_eq!(derive_ws_state(W::Running, WsPhase::Open, &t), W::Completed);
        // Not all skipped: a skipped strict task beside an allowed failure fails it.
        let t = [(Failed, true), (Skipped, false)];
        assert_eq!(derive_ws_state(W::Running, WsPhase::Open, &t), W::Failed);
    }

    #[test]
    fn all_done_before_the_worktree_opens_still_ends_the_workstream() {
        let t = strict(&[Skipped]);
        assert_eq!(derive_ws_state(W::Pending, WsPhase::Closed, &t), W::Skipped);
    }
}
