//! The one place a state changes: the row and its event are written in one
//! transaction, then the event is appended to `events.jsonl`, which follows
//! the events table (the record).

use super::rows::{RunPatch, TaskPatch, WsPatch, parse_col};
use super::{Result, Store, StoreError, Tx};
use crate::model::{
    AttemptState, Event, EventData, RunState, StaleLocks, StateMachine, TaskFacts, TaskState,
    WorkstreamFacts, WorkstreamState, WsIntegration, now,
};
use rusqlite::{Connection, OptionalExtension, params};
use std::fs::{self, OpenOptions};
use std::io::{Read, Write};

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
        self.write().map_err(self.err())?;
        insert_event(&self.conn, &ev).map_err(self.err())?;
        self.after_commit(&ev)?;
        Ok(ev)
    }

    /// Begin a change: take the write lock, then read what is there now.
    fn begin_change<T>(
        &mut self,
        sql: &str,
        params: impl rusqlite::Params,
        row: impl FnOnce(&rusqlite::Row) -> rusqlite::Result<T>,
        missing: impl FnOnce() -> StoreError,
    ) -> Result<(Tx<'_>, T)> {
        let e = self.err();
        let tx = self.begin().map_err(&e)?;
        let cur = tx
            .prepare_cached(sql)
            .and_then(|mut st| st.query_row(params, row).optional())
            .map_err(&e)?;
        Ok((tx, cur.ok_or_else(missing)?))
    }

    /// After the commit: the same event to `events.jsonl`.
    fn append(&mut self, ev: Option<Event>) -> Result<Option<Event>> {
        if let Some(ev) = &ev {
            self.after_commit(ev)?;
        }
        Ok(ev)
    }

    /// The line of an event just recorded: now, or inside a batch once the
    /// batch commits (the file never runs ahead of the table).
    fn after_commit(&mut self, ev: &Event) -> Result<()> {
        match &mut self.batch {
            Some(b) => {
                b.events.push(ev.clone());
                Ok(())
            }
            None => self.append_jsonl(std::slice::from_ref(ev)),
        }
    }

    /// `events.jsonl` follows the events table: the lines of `evs`, all
    /// committed, in one write per run (the lines of one write do not
    /// interleave with another process's). The first append of a process
    /// opens the file and brings it up to the table (a process killed
    /// between its commit and its append left lines out); that catch-up
    /// writes the rest of `evs` of its run too.
    pub(super) fn append_jsonl(&mut self, evs: &[Event]) -> Result<()> {
        let mut caught_up: Vec<&str> = Vec::new();
        let mut pending: Option<(&str, Vec<u8>)> = None;
        for ev in evs {
            crate::fault::kill_point(format_args!("kill-before-event-line:{}", ev.data.kind()));
            if caught_up.contains(&ev.run.as_str()) {
                continue;
            }
            if !self.jsonl.contains_key(&ev.run) {
                self.open_jsonl(&ev.run)?;
                caught_up.push(&ev.run);
                continue;
            }
            match &mut pending {
                Some((run, lines)) if *run == ev.run => lines.extend(line_of(ev)),
                _ => {
                    if let Some((run, lines)) = pending.replace((&ev.run, line_of(ev))) {
                        self.write_jsonl(run, &lines)?;
                    }
                }
            }
        }
        match pending {
            Some((run, lines)) => self.write_jsonl(run, &lines),
            None => Ok(()),
        }
    }

    fn write_jsonl(&mut self, run: &str, lines: &[u8]) -> Result<()> {
        let path = self.layout.events_jsonl(run);
        let f = self.jsonl.get_mut(run).expect("opened before its lines");
        f.write_all(lines)
            .map_err(|source| StoreError::Io { path, source })
    }

    /// Open `run`'s `events.jsonl` and write every event of the table that
    /// it lacks.
    fn open_jsonl(&mut self, run: &str) -> Result<()> {
        let path = self.layout.events_jsonl(run);
        let io = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        fs::create_dir_all(path.parent().unwrap_or(&path)).map_err(io)?;
        let mut f = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(io)?;
        let mut text = Vec::new();
        f.read_to_end(&mut text).map_err(io)?;
        // A line cut short by a kill is dropped and written again whole.
        let whole = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if whole < text.len() {
            f.set_len(whole as u64).map_err(io)?;
        }
        let written = text[..whole].iter().filter(|&&b| b == b'\n').count();
        let mut missing = Vec::new();
        for (_, e) in self.events(run, 0)?.iter().skip(written) {
            missing.extend(line_of(e));
        }
        f.write_all(&missing).map_err(io)?;
        self.jsonl.insert(run.to_string(), f);
        Ok(())
    }

    /// Move the run to `to`, with its event.
    pub fn transition_run(
        &mut self,
        run: &str,
        to: RunState,
        patch: RunPatch,
    ) -> Result<Option<Event>> {
        let (ts, e) = (now(), self.err());
        let (tx, from): (_, RunState) = self.begin_change(
            "SELECT state FROM runs WHERE id = ?1",
            [run],
            |r| parse_col(r, 0),
            || StoreError::NoSuchRun(run.into()),
        )?;
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
        let (ts, e) = (now(), self.err());
        let (tx, from): (_, WorkstreamState) = self.begin_change(
            "SELECT state FROM workstreams WHERE run_id = ?1 AND id = ?2",
            params![run, ws],
            |r| parse_col(r, 0),
            || StoreError::NoSuchWorkstream {
                run: run.into(),
                ws: ws.into(),
            },
        )?;
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
        // The integration's history row commits with its state, or neither does.
        if let Some(i) = &patch.integration {
            tx.prepare_cached(
                "INSERT INTO integrations (run_id, ws, into_branch, state, branch_head, commit_id, conflicts, reason, at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )
            .map_err(&e)?
            .execute(params![
                run,
                ws,
                i.into,
                to.as_str(),
                i.branch_head,
                i.commit,
                serde_json::to_string(&i.conflicts).unwrap(),
                i.detail,
                i.at
            ])
            .map_err(&e)?;
        }
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
        self.task_changed(ws);
        let (ts, e) = (now(), self.err());
        let (tx, (from, attempts)): (_, (TaskState, u32)) = self.begin_change(
            "SELECT state, attempts FROM tasks WHERE run_id = ?1 AND ws = ?2 AND id = ?3",
            params![run, ws, task],
            |r| Ok((parse_col(r, 0)?, r.get(1)?)),
            || StoreError::NoSuchTask {
                run: run.into(),
                task: format!("{ws}/{task}"),
            },
        )?;
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
                     duration_ms = CASE WHEN ?9 IS NOT NULL
                         THEN (SELECT SUM(duration_ms) FROM attempts a
                               WHERE a.run_id = ?1 AND a.ws = ?2 AND a.task = ?3)
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
fn commit_with(tx: Tx, ev: &Option<Event>) -> rusqlite::Result<()> {
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
        coordinator_last_seen: patch.coordinator_last_seen,
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
        hint: patch.hint,
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

fn line_of(ev: &Event) -> Vec<u8> {
    let mut line = serde_json::to_vec(ev).expect("event serialises");
    line.push(b'\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EventKind, Integration, Strategy};
    use crate::store::{Layout, NewRun, NewWs};

    /// A run R with workstream W holding task T, all PENDING.
    fn store_with_run(dir: &std::path::Path) -> Store {
        let mut store = Store::open(Layout::new(dir)).unwrap();
        store
            .create_run(&NewRun {
                id: "R",
                plan_json: b"{}",
                name: None,
                repo: "/repo",
                base: "b",
                base_ref: None,
                plan_path: None,
                worktree_root: "/wt",
                options: serde_json::json!({}),
                workstreams: vec![NewWs {
                    id: "W",
                    name: None,
                    branch: "mpw/R/W".into(),
                    worktree: "/wt/R/W".into(),
                    tasks: vec![("T", None)],
                }],
            })
            .unwrap();
        store
    }

    fn is_bad_transition<T: std::fmt::Debug>(r: Result<T>) -> bool {
        matches!(r, Err(StoreError::BadTransition { .. }))
    }

    #[test]
    fn a_change_outside_the_tables_is_refused_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = store_with_run(dir.path());
        assert!(is_bad_transition(s.transition_run(
            "R",
            RunState::Completed,
            RunPatch::default()
        )));
        assert!(is_bad_transition(s.transition_ws(
            "R",
            "W",
            WorkstreamState::Integrated,
            WsPatch::default()
        )));
        assert!(is_bad_transition(s.transition_task(
            "R",
            "W",
            "T",
            TaskState::Succeeded,
            TaskPatch::default()
        )));
        assert_eq!(s.run("R").unwrap().state, RunState::Pending);
        assert_eq!(
            s.workstreams("R").unwrap()[0].state,
            WorkstreamState::Pending
        );
        assert_eq!(s.tasks("R").unwrap()[0].state, TaskState::Pending);
        assert!(s.events("R", 0).unwrap().is_empty());
        assert!(!s.layout.events_jsonl("R").exists());
    }

    #[test]
    fn an_integration_state_needs_its_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = store_with_run(dir.path());
        s.transition_ws("R", "W", WorkstreamState::Running, WsPatch::default())
            .unwrap();
        s.transition_ws("R", "W", WorkstreamState::Completed, WsPatch::default())
            .unwrap();
        assert!(is_bad_transition(s.transition_ws(
            "R",
            "W",
            WorkstreamState::Conflict,
            WsPatch::default()
        )));
        let integration = Integration {
            into: "main".into(),
            commit: None,
            conflicts: vec!["a.txt".into()],
            at: now(),
            strategy: Strategy::Merge,
            branch_head: "h".into(),
            detail: "conflicts".into(),
            covered: vec![],
        };
        let patch = WsPatch {
            integration: Some(integration.clone()),
            ..Default::default()
        };
        let ev = s
            .transition_ws("R", "W", WorkstreamState::Conflict, patch)
            .unwrap()
            .unwrap();
        assert_eq!(
            ev.data,
            EventData::WorkstreamConflict(WsIntegration::from(&integration))
        );
        assert_eq!(
            s.workstreams("R").unwrap()[0].integration,
            Some(integration)
        );
        // The history row came in the same transaction.
        let history = s.integrations("R").unwrap();
        assert_eq!(history.len(), 1);
        assert_eq!(history[0].state, WorkstreamState::Conflict);
        assert_eq!(history[0].conflicts, vec!["a.txt".to_string()]);
    }

    #[test]
    fn a_refused_integration_change_writes_no_history_row() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = store_with_run(dir.path());
        let patch = WsPatch {
            integration: Some(Integration {
                into: "main".into(),
                commit: Some("c".into()),
                conflicts: vec![],
                at: now(),
                strategy: Strategy::Merge,
                branch_head: "h".into(),
                detail: "merged".into(),
                covered: vec![],
            }),
            ..Default::default()
        };
        // PENDING cannot become INTEGRATED: neither the state nor the row.
        assert!(is_bad_transition(s.transition_ws(
            "R",
            "W",
            WorkstreamState::Integrated,
            patch
        )));
        assert!(s.integrations("R").unwrap().is_empty());
        assert_eq!(
            s.workstreams("R").unwrap()[0].state,
            WorkstreamState::Pending
        );
    }

    /// The events table and `events.jsonl` tell the same typed events, in order.
    #[test]
    fn events_read_back_from_the_table_equal_the_lines() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = store_with_run(dir.path());
        s.transition_run("R", RunState::Running, RunPatch::default())
            .unwrap();
        let head = WsPatch {
            head: Some("h1".into()),
            ..Default::default()
        };
        s.transition_ws("R", "W", WorkstreamState::Running, head)
            .unwrap();
        s.transition_task("R", "W", "T", TaskState::Ready, TaskPatch::default())
            .unwrap();
        let running = TaskPatch {
            attempt: Some(1),
            ..Default::default()
        };
        s.transition_task("R", "W", "T", TaskState::Running, running)
            .unwrap();
        let failed = TaskPatch {
            attempt: Some(1),
            exit_code: Some(2),
            reason: Some("exit 2".into()),
            duration_ms: Some(5),
            ..Default::default()
        };
        s.transition_task("R", "W", "T", TaskState::Failed, failed)
            .unwrap();
        let locks = RunPatch {
            stale_locks_removed: vec!["/x/index.lock".into()],
            ..Default::default()
        };
        s.transition_run("R", RunState::Cancelled, locks).unwrap();

        let from_table: Vec<Event> = s
            .events("R", 0)
            .unwrap()
            .into_iter()
            .map(|(_, e)| e)
            .collect();
        let text = std::fs::read_to_string(s.layout.events_jsonl("R")).unwrap();
        let from_lines: Vec<Event> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(from_table, from_lines);
        let kinds: Vec<EventKind> = from_table.iter().map(Event::kind).collect();
        assert_eq!(
            kinds,
            [
                EventKind::RunStarted,
                EventKind::WorkstreamStarted,
                EventKind::TaskReady,
                EventKind::TaskStarted,
                EventKind::TaskFailed,
                EventKind::RunCancelled,
            ]
        );
        let failed = from_table[4].data.task().unwrap();
        assert_eq!(
            (
                failed.exit_code,
                failed.reason.as_deref(),
                failed.duration_ms
            ),
            (Some(2), Some("exit 2"), Some(5))
        );
        assert_eq!(
            from_table[5].data,
            EventData::RunCancelled(StaleLocks {
                stale_locks_removed: vec!["/x/index.lock".into()],
                ..Default::default()
            })
        );
    }
}
