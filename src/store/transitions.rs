//! The one place a state changes: the row and its event are written in one
//! transaction, then the event is appended to `events.jsonl`.

use super::rows::{RunPatch, TaskPatch, WsPatch};
use super::{Result, Store, StoreError, begin};
use crate::model::{
    AttemptState, Event, EventData, RunState, StaleLocks, StateMachine, TaskFacts, TaskState,
    WorkstreamFacts, WorkstreamState, WsIntegration, now,
};
use rusqlite::{Connection, OptionalExtension, params};
use std::fs::{self, OpenOptions};
use std::io::Write;

impl Store {
    /// Append an event that is not a state change (WORKTREE_CREATED, RUN_RESUMED, ...).
    pub fn event(
        &mut self,
        run: &str,
        ws: Option<&str>,
        task: Option<&str>,
        attempt: Option<u32>,
        data: EventData,
    ) -> Result<Event> {
        let ev = Event {
            ts: now(),
            run: run.into(),
            workstream: ws.map(Into::into),
            task: task.map(Into::into),
            attempt,
            data,
        };
        insert_event(&self.conn, &ev).map_err(self.err())?;
        self.append_jsonl(&ev)?;
        Ok(ev)
    }

    /// After the commit: the same event to `events.jsonl`.
    fn append(&mut self, ev: Option<Event>) -> Result<Option<Event>> {
        if let Some(ev) = &ev {
            self.append_jsonl(ev)?;
        }
        Ok(ev)
    }

    fn append_jsonl(&mut self, ev: &Event) -> Result<()> {
        let path = self.layout.events_jsonl(&ev.run);
        let io = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        if !self.jsonl.contains_key(&ev.run) {
            fs::create_dir_all(path.parent().unwrap()).map_err(io)?;
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(io)?;
            self.jsonl.insert(ev.run.clone(), f);
        }
        let mut line = serde_json::to_vec(ev).expect("event serialises");
        line.push(b'\n');
        // One write call per line: appends from two processes do not interleave.
        self.jsonl
            .get_mut(&ev.run)
            .unwrap()
            .write_all(&line)
            .map_err(io)
    }

    /// Move the run to `to`, with its event.
    pub fn transition_run(
        &mut self,
        run: &str,
        to: RunState,
        patch: RunPatch,
    ) -> Result<Option<Event>> {
        let ts = now();
        let e = self.err();
        let tx = begin(&mut self.conn).map_err(&e)?;
        let from: RunState = tx
            .query_row("SELECT state FROM runs WHERE id = ?1", [run], |r| {
                super::rows::parse_col(r, 0)
            })
            .optional()
            .map_err(&e)?
            .ok_or_else(|| StoreError::NoSuchRun(run.into()))?;
        if from == to {
            return Ok(None);
        }
        check(run, || format!("run {run}"), from, to)?;
        let (started, finished) = match to {
            RunState::Running => (Some(ts.clone()), None),
            s if s.is_terminal() => (None, Some(ts.clone())),
            _ => (None, None),
        };
        tx.prepare_cached(
            "UPDATE runs SET state = ?2, started_at = COALESCE(started_at, ?3),
                 finished_at = CASE WHEN ?4 IS NULL THEN NULL ELSE ?4 END,
                 coordinator_pid = CASE WHEN ?5 THEN ?6 ELSE coordinator_pid END
             WHERE id = ?1",
        )
        .map_err(&e)?
        .execute(params![
            run,
            to.as_str(),
            started,
            finished,
            to == RunState::Running,
            std::process::id()
        ])
        .map_err(&e)?;
        let ev = run_event(to, patch).map(|data| Event {
            ts,
            run: run.into(),
            workstream: None,
            task: None,
            attempt: None,
            data,
        });
        commit_with(tx, &ev).map_err(&e)?;
        self.append(ev)
    }

    /// Move a workstream to `to`, with its event.
    pub fn transition_ws(
        &mut self,
        run: &str,
        ws: &str,
        to: WorkstreamState,
        patch: WsPatch,
    ) -> Result<Option<Event>> {
        let ts = now();
        let e = self.err();
        let tx = begin(&mut self.conn).map_err(&e)?;
        let from: WorkstreamState = tx
            .query_row(
                "SELECT state FROM workstreams WHERE run_id = ?1 AND id = ?2",
                params![run, ws],
                |r| super::rows::parse_col(r, 0),
            )
            .map_err(&e)?;
        if from != to {
            check(run, || format!("workstream {ws}"), from, to)?;
        }
        let started = (to == WorkstreamState::Running).then(|| ts.clone());
        let finished = matches!(
            to,
            WorkstreamState::Completed
                | WorkstreamState::Failed
                | WorkstreamState::Quarantined
                | WorkstreamState::Skipped
        )
        .then(|| ts.clone());
        tx.prepare_cached(
            "UPDATE workstreams SET state = ?3,
                 start_commit = COALESCE(?4, start_commit), head = COALESCE(?5, head),
                 reason = COALESCE(?6, reason), integration = COALESCE(?7, integration),
                 started_at = COALESCE(started_at, ?8), finished_at = COALESCE(?9, finished_at),
                 baseline = COALESCE(?10, baseline)
             WHERE run_id = ?1 AND id = ?2",
        )
        .map_err(&e)?
        .execute(params![
            run,
            ws,
            to.as_str(),
            patch.start_commit,
            patch.head,
            patch.reason,
            patch
                .integration
                .as_ref()
                .map(|v| serde_json::to_string(v).unwrap()),
            started,
            finished,
            patch
                .baseline
                .as_ref()
                .map(|b| serde_json::to_string(b).unwrap())
        ])
        .map_err(&e)?;
        let data = if from == to {
            None
        } else {
            ws_event(run, ws, from, to, patch)?
        };
        let ev = data.map(|data| Event {
            ts,
            run: run.into(),
            workstream: Some(ws.into()),
            task: None,
            attempt: None,
            data,
        });
        commit_with(tx, &ev).map_err(&e)?;
        self.append(ev)
    }

    /// Move a task to `to`, updating its attempt row, with its event.
    pub fn transition_task(
        &mut self,
        run: &str,
        ws: &str,
        task: &str,
        to: TaskState,
        patch: TaskPatch,
    ) -> Result<Option<Event>> {
        let ts = now();
        let e = self.err();
        let tx = begin(&mut self.conn).map_err(&e)?;
        let (from, attempts): (TaskState, u32) = tx
            .query_row(
                "SELECT state, attempts FROM tasks WHERE run_id = ?1 AND ws = ?2 AND id = ?3",
                params![run, ws, task],
                |r| Ok((super::rows::parse_col(r, 0)?, r.get(1)?)),
            )
            .optional()
            .map_err(&e)?
            .ok_or_else(|| StoreError::NoSuchTask {
                run: run.into(),
                task: format!("{ws}/{task}"),
            })?;
        if from != to {
            check(run, || format!("task {ws}/{task}"), from, to)?;
        }
        let attempt = patch.attempt.unwrap_or(attempts);
        if to == TaskState::Running {
            tx.prepare_cached(
                "INSERT INTO attempts (run_id, ws, task, attempt, state, start_commit, started_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .map_err(&e)?
            .execute(params![
                run,
                ws,
                task,
                attempt,
                AttemptState::Running.as_str(),
                patch.start_commit,
                ts
            ])
            .map_err(&e)?;
            tx.prepare_cached(
                "UPDATE tasks SET state = ?4, attempts = ?5, started_at = COALESCE(started_at, ?6)
                 WHERE run_id = ?1 AND ws = ?2 AND id = ?3",
            )
            .map_err(&e)?
            .execute(params![run, ws, task, to.as_str(), attempt, ts])
            .map_err(&e)?;
        } else {
            if from == TaskState::Running {
                let astate = patch.attempt_state.unwrap_or(match to {
                    TaskState::Succeeded => AttemptState::Succeeded,
                    TaskState::Quarantined => AttemptState::Quarantined,
                    TaskState::Cancelled | TaskState::Skipped => AttemptState::Cancelled,
                    _ => AttemptState::Failed,
                });
                tx.prepare_cached("UPDATE attempts SET state = ?5, exit_code = ?6, reason = ?7, finished_at = ?8, duration_ms = ?9
                     WHERE run_id = ?1 AND ws = ?2 AND task = ?3 AND attempt = ?4")
            .map_err(&e)?
            .execute(
                    params![run, ws, task, attempt, astate.as_str(), patch.exit_code, patch.reason, ts, patch.duration_ms],
                )
                .map_err(&e)?;
            }
            let finished = to.is_terminal().then(|| ts.clone());
            tx.prepare_cached("UPDATE tasks SET state = ?4, exit_code = COALESCE(?5, exit_code),
                     commit_id = COALESCE(?6, commit_id), preserved_ref = COALESCE(?7, preserved_ref),
                     reason = COALESCE(?8, reason), finished_at = COALESCE(?9, finished_at),
                     duration_ms = CASE WHEN ?9 IS NOT NULL AND started_at IS NOT NULL
                         THEN CAST(ROUND((julianday(?9) - julianday(started_at)) * 86400000) AS INTEGER)
                         ELSE duration_ms END
                 WHERE run_id = ?1 AND ws = ?2 AND id = ?3")
            .map_err(&e)?
            .execute(
                params![
                    run,
                    ws,
                    task,
                    to.as_str(),
                    patch.exit_code,
                    patch.commit,
                    patch.preserved_ref,
                    patch.reason,
                    finished
                ],
            )
            .map_err(&e)?;
        }
        let ev = if from == to {
            None
        } else {
            task_event(from, to, patch).map(|data| Event {
                ts,
                run: run.into(),
                workstream: Some(ws.into()),
                task: Some(task.into()),
                attempt: (attempt > 0).then_some(attempt),
                data,
            })
        };
        commit_with(tx, &ev).map_err(&e)?;
        self.append(ev)
    }
}

fn insert_event(conn: &Connection, ev: &Event) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO events (run_id, ts, kind, ws, task, attempt, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        ev.run,
        ev.ts,
        ev.kind().as_str(),
        ev.workstream,
        ev.task,
        ev.attempt,
        serde_json::Value::Object(ev.data.facts()).to_string()
    ])?;
    Ok(())
}

/// Record the state change's event in its transaction and commit both.
fn commit_with(tx: rusqlite::Transaction, ev: &Option<Event>) -> rusqlite::Result<()> {
    if let Some(ev) = ev {
        insert_event(&tx, ev)?;
    }
    tx.commit()
}

/// A change outside the state machine's table is a bug in the caller.
fn check<S: StateMachine>(run: &str, what: impl Fn() -> String, from: S, to: S) -> Result<()> {
    if from.can_become(to) {
        Ok(())
    } else {
        Err(StoreError::BadTransition {
            run: run.into(),
            what: what(),
            from: from.to_string(),
            to: to.to_string(),
        })
    }
}

/// The event of a run arriving in `to`.
fn run_event(to: RunState, patch: RunPatch) -> Option<EventData> {
    let locks = StaleLocks {
        stale_locks_removed: patch.stale_locks_removed,
    };
    Some(match to {
        RunState::Pending => return None,
        RunState::Running => EventData::RunStarted,
        RunState::Completed => EventData::RunCompleted,
        RunState::Failed => EventData::RunFailed,
        RunState::Cancelled => EventData::RunCancelled(locks),
    })
}

/// The event of a workstream arriving in `to`: its new head and why, or
/// for an integration state what its integration record says.
fn ws_event(
    run: &str,
    ws: &str,
    from: WorkstreamState,
    to: WorkstreamState,
    patch: WsPatch,
) -> Result<Option<EventData>> {
    use WorkstreamState as W;
    let facts = WorkstreamFacts {
        head: patch.head,
        reason: patch.reason,
    };
    let integration = || {
        patch
            .integration
            .as_ref()
            .map(WsIntegration::from)
            .ok_or_else(|| StoreError::BadTransition {
                run: run.into(),
                what: format!("workstream {ws} (without its integration record)"),
                from: from.to_string(),
                to: to.to_string(),
            })
    };
    Ok(Some(match to {
        W::Pending => return Ok(None),
        W::Running => EventData::WorkstreamStarted(facts),
        W::Completed => EventData::WorkstreamCompleted(facts),
        W::Failed => EventData::WorkstreamFailed(facts),
        W::Quarantined => EventData::WorkstreamQuarantined(facts),
        W::Skipped => EventData::WorkstreamSkipped(facts),
        W::Integrated => EventData::WorkstreamIntegrated(integration()?),
        W::Conflict => EventData::WorkstreamConflict(integration()?),
        W::GateFailed => EventData::GateFailed(integration()?),
    }))
}

/// The event of a task arriving in `to` from `from`, with the patch's facts.
fn task_event(from: TaskState, to: TaskState, patch: TaskPatch) -> Option<EventData> {
    use TaskState as T;
    let facts = TaskFacts {
        exit_code: patch.exit_code,
        commit: patch.commit,
        preserved_ref: patch.preserved_ref,
        reason: patch.reason,
        duration_ms: patch.duration_ms,
    };
    Some(match (from, to, patch.attempt_state) {
        (T::Running, T::Ready | T::Pending, Some(AttemptState::Interrupted)) => {
            EventData::TaskInterrupted(facts)
        }
        (T::Running, T::Ready, _) => EventData::TaskRetry(facts),
        (_, T::Pending, _) => return None,
        (_, T::Ready, _) => EventData::TaskReady(facts),
        (_, T::Running, _) => EventData::TaskStarted(facts),
        (_, T::Succeeded, _) => EventData::TaskSucceeded(facts),
        (_, T::Failed, _) => EventData::TaskFailed(facts),
        (_, T::Quarantined, _) => EventData::TaskQuarantined(facts),
        (_, T::Skipped, _) => EventData::TaskSkipped(facts),
        (_, T::Cancelled, _) => EventData::TaskCancelled(facts),
    })
}
