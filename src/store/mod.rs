//! State on disk: SQLite (WAL) for runs, workstreams, tasks, attempts, events
//! and integrations; `events.jsonl` and `run_status.json` beside it.
//!
//! Every state change goes through one `transition_*` function that writes the
//! row and its event in one transaction and appends the event to
//! `events.jsonl`, so the database and the event stream cannot disagree.

use crate::model::{Event, RunState, TaskState, WorkstreamState, now};
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::HashMap;
use std::fs::{self, File};
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {}: {source}", .path.display())]
    Db {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("run {0} already exists; to continue it, use `mpw resume {0}`")]
    RunExists(String),
    #[error("no run {0} in this repository (see `mpw runs`)")]
    NoSuchRun(String),
    #[error("no runs yet in this repository; start one with `mpw run PLAN`")]
    NoRuns,
    #[error("run {run}: no workstream {ws} (see `mpw status {run}`)")]
    NoSuchWorkstream { run: String, ws: String },
    #[error("run {run}: no task {task} (see `mpw status {run}`)")]
    NoSuchTask { run: String, task: String },
    #[error("run {run}: {what} cannot go from {from} to {to}")]
    BadTransition {
        run: String,
        what: String,
        from: String,
        to: String,
    },
}

type Result<T, E = StoreError> = std::result::Result<T, E>;

mod layout;
mod rows;
mod schema;
mod status;
mod transitions;

pub use layout::{Layout, write_atomic};
pub use rows::{
    AttemptRow, GateRunRow, IntegrationRow, NewRun, NewWs, RunPatch, RunRow, TaskPatch, TaskRow,
    WsPatch, WsRow,
};
pub use status::{Counts, RunStatus, TaskStatus, WsStatus};

use rows::run_row;

pub struct Store {
    conn: Connection,
    pub layout: Layout,
    jsonl: HashMap<String, File>,
    /// A coordinator's `run_status.json`, kept between writes (see `keep_status`).
    kept: Option<status::Kept>,
    /// Between `begin_batch` and `end_batch`.
    batch: Option<Batch>,
}

/// A batch's transaction, begun at its first write (a step that changes
/// nothing takes no lock), and the events whose `events.jsonl` lines wait
/// for its commit.
#[derive(Default)]
struct Batch {
    open: bool,
    events: Vec<Event>,
}

fn db_err(layout: &Layout) -> impl Fn(rusqlite::Error) -> StoreError + use<> {
    let path = layout.db();
    move |source| StoreError::Db {
        path: path.clone(),
        source,
    }
}

/// Run one of the few fixed statements that steer transactions, parsed once.
fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

/// A change's write transaction: its own, which takes the database's write
/// lock at once so that what it read stays true until it commits; or, inside
/// a batch (which holds that lock), a savepoint of the batch's transaction,
/// so that a change is still all or nothing. Rolled back when dropped
/// uncommitted.
pub(super) struct Tx<'a> {
    conn: &'a Connection,
    nested: bool,
    open: bool,
}

fn begin(conn: &Connection, nested: bool) -> rusqlite::Result<Tx<'_>> {
    exec(
        conn,
        if nested {
            "SAVEPOINT change"
        } else {
            "BEGIN IMMEDIATE"
        },
    )?;
    Ok(Tx {
        conn,
        nested,
        open: true,
    })
}

impl Tx<'_> {
    pub(super) fn commit(mut self) -> rusqlite::Result<()> {
        self.open = false;
        exec(
            self.conn,
            if self.nested {
                "RELEASE change"
            } else {
                "COMMIT"
            },
        )
    }
}

impl std::ops::Deref for Tx<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if self.open {
            let _ = if self.nested {
                exec(self.conn, "ROLLBACK TO change")
                    .and_then(|()| exec(self.conn, "RELEASE change"))
            } else {
                exec(self.conn, "ROLLBACK")
            };
        }
    }
}

impl Store {
    /// Open (creating if needed) the database and bring its schema up to date.
    pub fn open(layout: Layout) -> Result<Store> {
        fs::create_dir_all(&layout.root).map_err(|source| StoreError::Io {
            path: layout.root.clone(),
            source,
        })?;
        let mut conn = Connection::open(layout.db()).map_err(db_err(&layout))?;
        schema::configure(&conn).map_err(db_err(&layout))?;
        schema::migrate(&mut conn).map_err(db_err(&layout))?;
        Ok(Store {
            conn,
            layout,
            jsonl: HashMap::new(),
            kept: None,
            batch: None,
        })
    }

    /// Open for reading commands: no database yet means no runs yet.
    pub fn open_existing(layout: Layout) -> Result<Store> {
        if !layout.db().exists() {
            return Err(StoreError::NoRuns);
        }
        Self::open(layout)
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> StoreError + use<> {
        db_err(&self.layout)
    }

    /// A change's transaction (see `Tx`).
    fn begin(&mut self) -> rusqlite::Result<Tx<'_>> {
        let nested = self.batch.is_some();
        self.write()?;
        begin(&self.conn, nested)
    }

    /// Before a write: inside a batch, its transaction is begun if it is not yet.
    fn write(&mut self) -> rusqlite::Result<()> {
        if let Some(b) = &mut self.batch
            && !b.open
        {
            exec(&self.conn, "BEGIN IMMEDIATE")?;
            b.open = true;
        }
        Ok(())
    }

    /// From here to `end_batch`, every change commits as one transaction: a
    /// coordinator's step (a task's end, the next one's READY and RUNNING)
    /// costs one commit, not one per change (docs/ARCHITECTURE.md, "Per-task
    /// cost"). Once written to, the batch holds the write lock: nothing
    /// inside it may wait.
    pub fn begin_batch(&mut self) {
        self.batch.get_or_insert_default();
    }

    /// Has the open batch written anything (so it will commit)?
    pub fn batch_written(&self) -> bool {
        self.batch.as_ref().is_some_and(|b| b.open)
    }

    /// Commit the batch, then write its events' `events.jsonl` lines; the
    /// events, for the listeners. A failed commit rolls the whole batch back.
    pub fn end_batch(&mut self) -> Result<Vec<Event>> {
        let Some(batch) = self.batch.take() else {
            return Ok(Vec::new());
        };
        if batch.open
            && let Err(e) = exec(&self.conn, "COMMIT")
        {
            let _ = exec(&self.conn, "ROLLBACK");
            return Err(self.err()(e));
        }
        self.append_jsonl(&batch.events)?;
        Ok(batch.events)
    }

    /// Record a new run with all its workstreams and tasks as PENDING.
    pub fn create_run(&mut self, run: &NewRun) -> Result<()> {
        let e = self.err();
        // Never inside a batch: a run is recorded before its coordinator starts.
        let tx = begin(&self.conn, false).map_err(&e)?;
        let exists: bool = tx
            .query_row("SELECT 1 FROM runs WHERE id = ?1", [run.id], |_| Ok(true))
            .optional()
            .map_err(&e)?
            .unwrap_or(false);
        // A folder holding only plan.json is a creation a kill cut short.
        let dir = self.layout.run_dir(run.id);
        let leftover = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.path() != self.layout.plan_json(run.id));
        if exists || leftover {
            return Err(StoreError::RunExists(run.id.to_string()));
        }
        tx.prepare_cached("INSERT INTO runs (id, name, state, repo, base, base_ref, plan_path, worktree_root, created_at, options)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)")
            .map_err(&e)?
            .execute(
            params![
                run.id,
                run.name,
                RunState::Pending.as_str(),
                run.repo,
                run.base,
                run.base_ref,
                run.plan_path,
                run.worktree_root,
                now(),
                run.options.to_string()
            ],
        )
        .map_err(&e)?;
        for (i, ws) in run.workstreams.iter().enumerate() {
            tx.prepare_cached(
                "INSERT INTO workstreams (run_id, id, idx, name, state, branch, worktree)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .map_err(&e)?
            .execute(params![
                run.id,
                ws.id,
                i as i64,
                ws.name,
                WorkstreamState::Pending.as_str(),
                ws.branch,
                ws.worktree
            ])
            .map_err(&e)?;
            for (j, (t, name)) in ws.tasks.iter().enumerate() {
                tx.prepare_cached("INSERT INTO tasks (run_id, ws, id, idx, name, state) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")
            .map_err(&e)?
            .execute(
                    params![run.id, ws.id, t, j as i64, name, TaskState::Pending.as_str()],
                )
                .map_err(&e)?;
            }
        }
        // Before the commit: a run recorded is a run `mpw resume` can read.
        layout::write_atomic(&self.layout.plan_json(run.id), run.plan_json)?;
        crate::fault::kill_point("kill-between-plan-and-run-row");
        tx.commit().map_err(&e)?;
        Ok(())
    }

    /// Remember the process of a running attempt (for crash recovery).
    pub fn record_proc(
        &mut self,
        run: &str,
        ws: &str,
        task: &str,
        attempt: u32,
        proc: &crate::exec::ProcInfo,
    ) -> Result<()> {
        let (pid, pgid, start) = (proc.pid, proc.pgid, proc.start_time);
        self.write().map_err(self.err())?;
        self.conn
            .prepare_cached(
                "UPDATE attempts SET pid = ?5, pgid = ?6, proc_start = ?7
                 WHERE run_id = ?1 AND ws = ?2 AND task = ?3 AND attempt = ?4",
            )
            .and_then(|mut st| {
                st.execute(params![
                    run,
                    ws,
                    task,
                    attempt,
                    pid,
                    pgid,
                    start.map(|s| s as i64)
                ])
            })
            .map_err(self.err())?;
        Ok(())
    }

    /// Why a READY task is not started yet (the machine pool is full), shown
    /// by `mpw status`; `None` once it starts. Not a state change: no event.
    pub fn note_waiting(
        &mut self,
        run: &str,
        ws: &str,
        task: &str,
        why: Option<&str>,
    ) -> Result<()> {
        self.task_changed(ws);
        self.write().map_err(self.err())?;
        self.conn
            .prepare_cached(
                "UPDATE tasks SET reason = ?4 WHERE run_id = ?1 AND ws = ?2 AND id = ?3",
            )
            .and_then(|mut st| st.execute(params![run, ws, task, why]))
            .map_err(self.err())?;
        Ok(())
    }

    pub fn set_cancel_requested(&mut self, run: &str) -> Result<()> {
        self.conn
            .execute("UPDATE runs SET cancel_requested = 1 WHERE id = ?1", [run])
            .map_err(self.err())?;
        Ok(())
    }

    /// Clear a cancel request (resume continues a cancelled run).
    pub fn clear_cancel(&mut self, run: &str) -> Result<()> {
        self.conn
            .execute("UPDATE runs SET cancel_requested = 0 WHERE id = ?1", [run])
            .map_err(self.err())?;
        Ok(())
    }

    /// Record a gate run; its id (`id` of the row given is ignored).
    pub fn record_gate_run(&mut self, run: &str, g: &GateRunRow) -> Result<i64> {
        self.conn
            .execute(
                "INSERT INTO gate_runs (run_id, into_branch, batch, covered, commit_id, result, attempts, flaky, duration_ms, log, at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    run,
                    g.into_branch,
                    g.batch,
                    serde_json::to_string(&g.covered).unwrap(),
                    g.commit,
                    if g.passed { "PASSED" } else { "FAILED" },
                    g.attempts,
                    g.flaky,
                    g.duration_ms,
                    g.log,
                    g.at
                ],
            )
            .map_err(self.err())?;
        Ok(self.conn.last_insert_rowid())
    }

    // ---- queries ----

    /// Gate runs of a run with an id above `after`, oldest first.
    pub fn gate_runs(&self, run: &str, after: i64) -> Result<Vec<GateRunRow>> {
        self.query(
            "SELECT id, into_branch, batch, covered, commit_id, result, attempts, flaky, duration_ms, log, at
             FROM gate_runs WHERE run_id = ?1 AND id > ?2 ORDER BY id",
            params![run, after],
            rows::gate_run_row,
        )
    }

    /// The highest gate run id so far (0: none).
    pub fn last_gate_run(&self) -> Result<i64> {
        self.conn
            .query_row("SELECT COALESCE(MAX(id), 0) FROM gate_runs", [], |r| {
                r.get(0)
            })
            .map_err(self.err())
    }

    pub fn run(&self, id: &str) -> Result<RunRow> {
        self.conn
            .query_row("SELECT * FROM runs WHERE id = ?1", [id], run_row)
            .optional()
            .map_err(self.err())?
            .ok_or_else(|| StoreError::NoSuchRun(id.into()))
    }

    /// A run by its id or an unambiguous prefix of it.
    pub fn find_run(&self, id: &str) -> Result<RunRow> {
        if let Ok(r) = self.run(id) {
            return Ok(r);
        }
        let matches: Vec<RunRow> = self
            .runs()?
            .into_iter()
            .filter(|r| r.id.starts_with(id))
            .collect();
        match matches.len() {
            1 => Ok(matches.into_iter().next().unwrap()),
            _ => Err(StoreError::NoSuchRun(id.into())),
        }
    }

    /// Runs, newest first.
    pub fn runs(&self) -> Result<Vec<RunRow>> {
        self.query(
            "SELECT * FROM runs ORDER BY created_at DESC, rowid DESC",
            [],
            run_row,
        )
    }

    /// The given run, or the newest one.
    pub fn run_or_latest(&self, id: Option<&str>) -> Result<RunRow> {
        match id {
            Some(id) => self.find_run(id),
            None => self.runs()?.into_iter().next().ok_or(StoreError::NoRuns),
        }
    }

    pub fn workstreams(&self, run: &str) -> Result<Vec<WsRow>> {
        self.query(
            "SELECT id, idx, name, state, branch, worktree, start_commit, head, reason, started_at, finished_at, integration, baseline
             FROM workstreams WHERE run_id = ?1 ORDER BY idx",
            [run],
            rows::ws_row,
        )
    }

    /// Tasks of one workstream in plan order.
    pub fn ws_tasks(&self, run: &str, ws: &str) -> Result<Vec<TaskRow>> {
        self.query(
            "SELECT ws, id, idx, name, state, attempts, exit_code, commit_id, preserved_ref,
                    reason, started_at, finished_at, duration_ms
             FROM tasks WHERE run_id = ?1 AND ws = ?2 ORDER BY idx",
            [run, ws],
            rows::task_row,
        )
    }

    /// Tasks of a run in plan order.
    pub fn tasks(&self, run: &str) -> Result<Vec<TaskRow>> {
        self.query(
            "SELECT t.ws, t.id, t.idx, t.name, t.state, t.attempts, t.exit_code, t.commit_id, t.preserved_ref,
                    t.reason, t.started_at, t.finished_at, t.duration_ms
             FROM tasks t JOIN workstreams w ON w.run_id = t.run_id AND w.id = t.ws
             WHERE t.run_id = ?1 ORDER BY w.idx, t.idx",
            [run],
            rows::task_row,
        )
    }

    pub fn attempts(&self, run: &str) -> Result<Vec<AttemptRow>> {
        self.query(
            "SELECT ws, task, attempt, state, start_commit, pid, pgid, proc_start, exit_code, reason,
                    started_at, finished_at, duration_ms
             FROM attempts WHERE run_id = ?1 ORDER BY started_at, ws, task, attempt",
            [run],
            rows::attempt_row,
        )
    }

    /// Events of a run after sequence number `after`, with their sequence numbers.
    pub fn events(&self, run: &str, after: i64) -> Result<Vec<(i64, Event)>> {
        self.query(
            "SELECT seq, ts, kind, ws, task, attempt, data, run_id FROM events
             WHERE run_id = ?1 AND seq > ?2 ORDER BY seq",
            params![run, after],
            rows::event_row,
        )
    }

    /// Events of a run whose facts have the key `key` (e.g. `hint`), in
    /// order: the few a caller wants, without reading every event.
    pub fn events_with(&self, run: &str, key: &str) -> Result<Vec<(i64, Event)>> {
        // Facts are JSON objects: a key is a quoted name before a colon (in a
        // string value the quotes would be escaped).
        self.query(
            "SELECT seq, ts, kind, ws, task, attempt, data, run_id FROM events
             WHERE run_id = ?1 AND instr(data, ?2) > 0 ORDER BY seq",
            params![run, format!("\"{key}\":")],
            rows::event_row,
        )
    }

    pub fn integrations(&self, run: &str) -> Result<Vec<IntegrationRow>> {
        self.query(
            "SELECT ws, into_branch, state, branch_head, commit_id, conflicts, reason, at
             FROM integrations WHERE run_id = ?1 ORDER BY id",
            [run],
            rows::integration_row,
        )
    }

    /// The run's own events (RUN_*), in order: when it ran.
    pub fn run_events(&self, run: &str) -> Result<Vec<Event>> {
        self.query(
            "SELECT seq, ts, kind, ws, task, attempt, data, run_id FROM events
             WHERE run_id = ?1 AND ws IS NULL AND kind LIKE 'RUN\\_%' ESCAPE '\\' ORDER BY seq",
            [run],
            |r| rows::event_row(r).map(|(_, e)| e),
        )
    }

    /// The time of the run's newest event.
    pub fn last_event_ts(&self, run: &str) -> Result<Option<String>> {
        self.conn
            .query_row(
                "SELECT ts FROM events WHERE run_id = ?1 ORDER BY seq DESC LIMIT 1",
                [run],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.err())
    }

    fn query<T>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        row: fn(&rusqlite::Row) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>> {
        let mut st = self.conn.prepare(sql).map_err(self.err())?;
        let rows = st.query_map(params, row).map_err(self.err())?;
        rows.collect::<rusqlite::Result<_>>().map_err(self.err())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Several runs starting at once on a fresh repository all open the
    /// database: the switch to WAL can answer BUSY without waiting, and
    /// nobody may fail for it.
    #[test]
    fn many_first_opens_at_once_all_succeed() {
        for _ in 0..100 {
            let dir = tempfile::tempdir().unwrap();
            let layout = Layout::new(dir.path());
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(6));
            let openers: Vec<_> = (0..6)
                .map(|_| {
                    let (layout, barrier) = (layout.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        Store::open(layout).map(|_| ())
                    })
                })
                .collect();
            for o in openers {
                o.join().unwrap().expect("every opener gets the database");
            }
        }
    }
}
