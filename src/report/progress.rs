//! The numbers the live bars show, kept apart from drawing them so that a
//! test can check them: fed the run as recorded when the coordinator starts
//! its work, then every event.

use crate::model::{Event, EventKind, WorkstreamState};
use crate::store::RunStatus;
use std::collections::{BTreeSet, HashMap};

/// One workstream's bar.
#[derive(Debug, Clone, PartialEq)]
pub struct WsProgress {
    pub id: String,
    /// Its tasks.
    pub total: usize,
    /// Tasks in a final state; never more than `total`.
    done: BTreeSet<String>,
    /// Tasks running now, in the order they started.
    pub running: Vec<String>,
    /// The state or last happening the bar's message shows.
    pub label: String,
    /// The workstream reached a final state in this invocation.
    pub finished: bool,
}

impl WsProgress {
    pub fn done(&self) -> usize {
        self.done.len()
    }

    /// The bar's message: what runs, else the label.
    pub fn message(&self) -> String {
        if self.running.is_empty() {
            self.label.clone()
        } else {
            format!("running {}", self.running.join(", "))
        }
    }
}

/// Every workstream's bar and the run's.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub workstreams: Vec<WsProgress>,
    index: HashMap<String, usize>,
}

impl Progress {
    pub fn new(st: &RunStatus) -> Self {
        let workstreams: Vec<WsProgress> = st
            .workstreams
            .iter()
            .map(|w| {
                let done: BTreeSet<String> = w
                    .tasks
                    .iter()
                    .filter(|t| t.state.is_terminal())
                    .map(|t| t.id.clone())
                    .collect();
                // A workstream that still has tasks to run waits for them,
                // whatever a previous invocation recorded (a workstream
                // skipped when its dependency was cancelled runs on resume).
                let state = if w.state.is_terminal() && done.len() < w.tasks.len() {
                    WorkstreamState::Pending
                } else {
                    w.state
                };
                WsProgress {
                    id: w.id.clone(),
                    total: w.tasks.len(),
                    done,
                    running: Vec::new(),
                    label: state.to_string(),
                    finished: false,
                }
            })
            .collect();
        let index = workstreams
            .iter()
            .enumerate()
            .map(|(i, w)| (w.id.clone(), i))
            .collect();
        Progress { workstreams, index }
    }

    pub fn total(&self) -> usize {
        self.workstreams.iter().map(|w| w.total).sum()
    }

    pub fn done(&self) -> usize {
        self.workstreams.iter().map(WsProgress::done).sum()
    }

    pub fn ws(&self, id: &str) -> Option<&WsProgress> {
        self.index.get(id).map(|&i| &self.workstreams[i])
    }

    /// Take in one event; returns the workstream it changed.
    pub fn apply(&mut self, ev: &Event) -> Option<usize> {
        let i = *self.index.get(ev.workstream.as_deref()?)?;
        let w = &mut self.workstreams[i];
        let task = ev.task.clone();
        let kind = ev.kind();
        match kind {
            EventKind::TaskStarted => {
                let t = task?;
                w.done.remove(&t);
                if !w.running.contains(&t) {
                    w.running.push(t);
                }
            }
            EventKind::TaskSucceeded
            | EventKind::TaskFailed
            | EventKind::TaskQuarantined
            | EventKind::TaskSkipped
            | EventKind::TaskCancelled => {
                let t = task?;
                w.running.retain(|r| *r != t);
                w.label = format!("{t} {}", kind.as_str().trim_start_matches("TASK_"));
                // A set: the same task ending twice counts once.
                w.done.insert(t);
            }
            EventKind::TaskRetry | EventKind::TaskInterrupted | EventKind::TaskReady => {
                let t = task?;
                w.running.retain(|r| *r != t);
                w.done.remove(&t);
                if kind != EventKind::TaskReady {
                    w.label = format!("{t} {}", kind.as_str().trim_start_matches("TASK_"));
                }
            }
            EventKind::TaskWaiting => {
                let t = task?;
                let why = ev.data.task().and_then(|f| f.reason.clone());
                w.label = format!("{t} {}", why.unwrap_or_else(|| "waiting".into()));
            }
            EventKind::WorkstreamStarted => {
                w.label = WorkstreamState::Running.to_string();
            }
            EventKind::WorktreeCreated => w.label = "worktree ready".into(),
            EventKind::WorkstreamCompleted
            | EventKind::WorkstreamFailed
            | EventKind::WorkstreamQuarantined
            | EventKind::WorkstreamSkipped => {
                w.running.clear();
                w.label = kind.as_str().trim_start_matches("WORKSTREAM_").into();
                w.finished = true;
            }
            _ => return None,
        }
        Some(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EventData, RunState, TaskFacts, TaskState, WorkstreamFacts};
    use crate::report::test_support::ws_status;
    use crate::store::{Counts, TaskStatus};

    fn task(ws: &str, id: &str, state: TaskState) -> TaskStatus {
        TaskStatus {
            ws: ws.into(),
            id: id.into(),
            idx: 0,
            name: None,
            state,
            attempts: 0,
            exit_code: None,
            commit: None,
            preserved_ref: None,
            reason: None,
            started_at: None,
            finished_at: None,
            duration_ms: None,
        }
    }

    /// A workstream as recorded: id, state, and its tasks' ids and states.
    type Recorded<'a> = (&'a str, WorkstreamState, &'a [(&'a str, TaskState)]);

    fn recorded(wss: &[Recorded]) -> RunStatus {
        RunStatus {
            schema: 1,
            run_id: "R".into(),
            name: None,
            state: RunState::Running,
            repo: "/r".into(),
            base: "b".into(),
            base_ref: None,
            started_at: None,
            finished_at: None,
            duration_ms: None,
            counts: Counts::default(),
            gate_runs: vec![],
            workstreams: wss
                .iter()
                .map(|(id, state, tasks)| {
                    let tasks = tasks.iter().map(|(t, s)| task(id, t, *s)).collect();
                    ws_status(id, *state, tasks)
                })
                .collect(),
        }
    }

    fn ev(ws: &str, task: Option<&str>, data: EventData) -> Event {
        Event {
            ts: "2026-01-01T00:00:00.000Z".into(),
            run: "R".into(),
            workstream: Some(ws.into()),
            task: task.map(Into::into),
            attempt: Some(1),
            data,
        }
    }

    fn started(ws: &str, t: &str) -> Event {
        ev(ws, Some(t), EventData::TaskStarted(TaskFacts::default()))
    }

    fn succeeded(ws: &str, t: &str) -> Event {
        ev(ws, Some(t), EventData::TaskSucceeded(TaskFacts::default()))
    }

    /// (done, total) of the run's bar and of each workstream's, and labels.
    fn bars(p: &Progress) -> (usize, usize, Vec<(usize, usize, String)>) {
        (
            p.done(),
            p.total(),
            p.workstreams
                .iter()
                .map(|w| (w.done(), w.total, w.message()))
                .collect(),
        )
    }

    use TaskState::{Cancelled, Pending, Succeeded};
    use WorkstreamState as W;

    #[test]
    fn a_fresh_run_starts_empty_and_fills_to_its_total() {
        let st = recorded(&[
            ("A", W::Pending, &[("T1", Pending), ("T2", Pending)]),
            ("B", W::Pending, &[("T1", Pending)]),
        ]);
        let mut p = Progress::new(&st);
        assert_eq!(
            bars(&p),
            (
                0,
                3,
                vec![(0, 2, "PENDING".into()), (0, 1, "PENDING".into())]
            )
        );
        p.apply(&ev(
            "A",
            None,
            EventData::WorkstreamStarted(WorkstreamFacts::default()),
        ));
        p.apply(&started("A", "T1"));
        assert_eq!(bars(&p).2[0], (0, 2, "running T1".into()));
        p.apply(&succeeded("A", "T1"));
        assert_eq!(bars(&p).2[0], (1, 2, "T1 SUCCEEDED".into()));
        p.apply(&started("A", "T2"));
        p.apply(&succeeded("A", "T2"));
        // The same end seen twice counts once.
        p.apply(&succeeded("A", "T2"));
        p.apply(&started("B", "T1"));
        p.apply(&succeeded("B", "T1"));
        assert_eq!((p.done(), p.total()), (3, 3));
    }

    /// What `mpw resume` showed: "6/6" on the first frame, then "7/6", and
    /// SKIPPED for the stacked workstream until it started.
    #[test]
    fn a_resumed_run_counts_only_what_is_done_and_never_passes_its_total() {
        // As recorded after recovery: A/T1 done, A/T2 cut short by the
        // crash and back to PENDING, A/T3 was cancelled and is PENDING again;
        // B (stacked on A) was SKIPPED and its tasks are PENDING again.
        let st = recorded(&[
            (
                "A",
                W::Failed,
                &[("T1", Succeeded), ("T2", Pending), ("T3", Pending)],
            ),
            ("B", W::Skipped, &[("T1", Pending), ("T2", Pending)]),
            ("C", W::Completed, &[("T1", Succeeded)]),
        ]);
        let mut p = Progress::new(&st);
        assert_eq!(
            bars(&p),
            (
                2,
                6,
                vec![
                    (1, 3, "PENDING".into()),
                    (0, 2, "PENDING".into()),
                    (1, 1, "COMPLETED".into())
                ]
            )
        );
        let mut seen = vec![p.done()];
        for (ws, t) in [("A", "T2"), ("A", "T3"), ("B", "T1"), ("B", "T2")] {
            p.apply(&started(ws, t));
            seen.push(p.done());
            p.apply(&succeeded(ws, t));
            seen.push(p.done());
        }
        assert_eq!(seen, [2, 2, 3, 3, 4, 4, 5, 5, 6]);
        assert!(p.workstreams.iter().all(|w| w.done() <= w.total));
    }

    #[test]
    fn a_retry_or_an_interruption_takes_the_task_off_the_done_count() {
        let st = recorded(&[("A", W::Running, &[("T1", Pending), ("T2", Cancelled)])]);
        let mut p = Progress::new(&st);
        // A CANCELLED task is final until the run says otherwise.
        assert_eq!((p.done(), p.total()), (1, 2));
        p.apply(&started("A", "T1"));
        p.apply(&ev(
            "A",
            Some("T1"),
            EventData::TaskRetry(TaskFacts::default()),
        ));
        assert_eq!(bars(&p).2[0], (1, 2, "T1 RETRY".into()));
        p.apply(&started("A", "T2"));
        assert_eq!(bars(&p).2[0], (0, 2, "running T2".into()));
        p.apply(&ev(
            "A",
            Some("T2"),
            EventData::TaskSkipped(TaskFacts::default()),
        ));
        p.apply(&started("A", "T1"));
        p.apply(&succeeded("A", "T1"));
        assert_eq!((p.done(), p.total()), (2, 2));
    }
}
