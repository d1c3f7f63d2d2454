//! State on disk: SQLite (WAL) for runs, workstreams, tasks, attempts, events
//! and integrations; `events.jsonl` and `run_status.json` beside it.
//!
//! Every state change goes through one `transition_*` function that writes the
//! row and its event in one transaction and appends the event to
//! `events.jsonl`, so the database and the event stream cannot disagree.

use crate::model::{AttemptState, Event, EventKind, RunState, TaskState, WorkstreamState, now};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

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

/// Where mpw keeps its files: `<git-common-dir>/mpw/`.
#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    pub fn new(common_dir: &Path) -> Self {
        Layout {
            root: common_dir.join("mpw"),
        }
    }
    pub fn db(&self) -> PathBuf {
        self.root.join("mpw.db")
    }
    pub fn integrate_lock(&self) -> PathBuf {
        self.root.join("integrate.lock")
    }
    pub fn run_dir(&self, run: &str) -> PathBuf {
        self.root.join("runs").join(run)
    }
    pub fn plan_json(&self, run: &str) -> PathBuf {
        self.run_dir(run).join("plan.json")
    }
    pub fn run_status(&self, run: &str) -> PathBuf {
        self.run_dir(run).join("run_status.json")
    }
    pub fn events_jsonl(&self, run: &str) -> PathBuf {
        self.run_dir(run).join("events.jsonl")
    }
    pub fn ws_json(&self, run: &str, ws: &str) -> PathBuf {
        self.run_dir(run)
            .join("workstreams")
            .join(format!("{ws}.json"))
    }
    /// Lock file held by the coordinator of a run while it works.
    pub fn run_lock(&self, run: &str) -> PathBuf {
        self.run_dir(run).join("coordinator.lock")
    }
    /// `logs/<ws>/<task>.<attempt>.out|.err`
    pub fn log(&self, run: &str, ws: &str, task: &str, attempt: u32, stderr: bool) -> PathBuf {
        let ext = if stderr { "err" } else { "out" };
        self.ws_logs(run, ws)
            .join(format!("{task}.{attempt}.{ext}"))
    }

    /// The logs of one workstream's setup commands and tasks.
    pub fn ws_logs(&self, run: &str, ws: &str) -> PathBuf {
        self.run_dir(run).join("logs").join(ws)
    }
}

/// Write a file atomically: temp file in the same directory, then rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io)?;
    #[allow(unused_mut)]
    let mut builder = tempfile::Builder::new();
    // A temp file is private (0600); these are ordinary files, so the umask decides.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    let mut tmp = builder.tempfile_in(dir).map_err(io)?;
    tmp.write_all(bytes).map_err(io)?;
    // No fsync: these files are derived from the database and rewritten;
    // the rename is what keeps readers from ever seeing half a file.
    tmp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}

const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    name TEXT,
    state TEXT NOT NULL,
    repo TEXT NOT NULL,
    base TEXT NOT NULL,
    base_ref TEXT,
    plan_path TEXT,
    worktree_root TEXT NOT NULL,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    coordinator_pid INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    options TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE workstreams (
    run_id TEXT NOT NULL,
    id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    name TEXT,
    state TEXT NOT NULL,
    branch TEXT NOT NULL,
    worktree TEXT NOT NULL,
    start_commit TEXT,
    head TEXT,
    reason TEXT,
    started_at TEXT,
    finished_at TEXT,
    integration TEXT,
    baseline TEXT,
    PRIMARY KEY (run_id, id)
);
CREATE TABLE tasks (
    run_id TEXT NOT NULL,
    ws TEXT NOT NULL,
    id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    name TEXT,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    exit_code INTEGER,
    commit_id TEXT,
    preserved_ref TEXT,
    reason TEXT,
    started_at TEXT,
    finished_at TEXT,
    duration_ms INTEGER,
    PRIMARY KEY (run_id, ws, id)
);
CREATE TABLE attempts (
    run_id TEXT NOT NULL,
    ws TEXT NOT NULL,
    task TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    state TEXT NOT NULL,
    start_commit TEXT,
    pid INTEGER,
    pgid INTEGER,
    proc_start INTEGER,
    exit_code INTEGER,
    reason TEXT,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    duration_ms INTEGER,
    PRIMARY KEY (run_id, ws, task, attempt)
);
CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    ts TEXT NOT NULL,
    kind TEXT NOT NULL,
    ws TEXT,
    task TEXT,
    attempt INTEGER,
    data TEXT NOT NULL
);
CREATE INDEX events_run ON events (run_id, seq);
CREATE TABLE integrations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    ws TEXT NOT NULL,
    into_branch TEXT NOT NULL,
    state TEXT NOT NULL,
    branch_head TEXT NOT NULL,
    commit_id TEXT,
    conflicts TEXT NOT NULL,
    reason TEXT,
    at TEXT NOT NULL
);
"#];

/// A run as recorded.
#[derive(Debug, Clone, Serialize)]
pub struct RunRow {
    pub id: String,
    pub name: Option<String>,
    pub state: RunState,
    pub repo: String,
    pub base: String,
    pub base_ref: Option<String>,
    pub plan_path: Option<String>,
    pub worktree_root: String,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub coordinator_pid: Option<u32>,
    pub cancel_requested: bool,
    /// Command-line options the run was started with (JSON), reused by resume.
    pub options: Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct WsRow {
    pub id: String,
    pub idx: usize,
    pub name: Option<String>,
    pub state: WorkstreamState,
    pub branch: String,
    pub worktree: String,
    pub start_commit: Option<String>,
    pub head: Option<String>,
    pub reason: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub integration: Option<Value>,
    #[serde(skip)]
    pub baseline: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TaskRow {
    pub ws: String,
    pub id: String,
    pub idx: usize,
    pub name: Option<String>,
    pub state: TaskState,
    pub attempts: u32,
    pub exit_code: Option<i32>,
    pub commit: Option<String>,
    pub preserved_ref: Option<String>,
    pub reason: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub duration_ms: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AttemptRow {
    pub ws: String,
    pub task: String,
    pub attempt: u32,
    pub state: AttemptState,
    pub start_commit: Option<String>,
    pub pid: Option<u32>,
    pub pgid: Option<i64>,
    pub proc_start: Option<u64>,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub duration_ms: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct IntegrationRow {
    pub ws: String,
    pub into_branch: String,
    pub state: WorkstreamState,
    pub branch_head: String,
    pub commit: Option<String>,
    pub conflicts: Vec<String>,
    pub reason: Option<String>,
    pub at: String,
}

/// What a new run records before anything is touched.
pub struct NewRun<'a> {
    pub id: &'a str,
    pub name: Option<&'a str>,
    pub repo: &'a str,
    pub base: &'a str,
    pub base_ref: Option<&'a str>,
    pub plan_path: Option<&'a str>,
    pub worktree_root: &'a str,
    pub options: Value,
    pub workstreams: Vec<NewWs<'a>>,
}

pub struct NewWs<'a> {
    pub id: &'a str,
    pub name: Option<&'a str>,
    pub branch: String,
    pub worktree: String,
    pub tasks: Vec<(&'a str, Option<&'a str>)>,
}

/// Fields a workstream transition may set (None: unchanged).
#[derive(Debug, Default, Clone)]
pub struct WsPatch {
    pub start_commit: Option<String>,
    pub head: Option<String>,
    pub reason: Option<String>,
    pub integration: Option<Value>,
    /// Paths copy/setup left in the worktree (JSON list), never committed.
    pub baseline: Option<Vec<String>>,
}

/// Fields a task transition may set (None: unchanged).
#[derive(Debug, Default, Clone)]
pub struct TaskPatch {
    /// Attempt number this transition concerns (required for RUNNING and outcomes).
    pub attempt: Option<u32>,
    /// Commit the attempt started from (RUNNING).
    pub start_commit: Option<String>,
    pub exit_code: Option<i32>,
    pub commit: Option<String>,
    pub preserved_ref: Option<String>,
    pub reason: Option<String>,
    /// How the attempt ended, when it differs from the task's new state
    /// (a retry: task READY, attempt FAILED; resume: attempt INTERRUPTED).
    pub attempt_state: Option<AttemptState>,
    pub duration_ms: Option<i64>,
}

pub struct Store {
    conn: Connection,
    pub layout: Layout,
    jsonl: HashMap<String, File>,
}

fn db_err(layout: &Layout) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |source| StoreError::Db {
        path: layout.db(),
        source,
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
        Self::configure(&conn).map_err(db_err(&layout))?;
        Self::migrate(&mut conn).map_err(db_err(&layout))?;
        Ok(Store {
            conn,
            layout,
            jsonl: HashMap::new(),
        })
    }

    /// Open for reading commands: no database yet means no runs yet.
    pub fn open_existing(layout: Layout) -> Result<Store> {
        if !layout.db().exists() {
            return Err(StoreError::NoRuns);
        }
        Self::open(layout)
    }

    fn configure(conn: &Connection) -> rusqlite::Result<()> {
        // Several processes (a run, `mpw status`, a second run) share the file.
        conn.busy_timeout(Duration::from_secs(30))?;
        // Switching to WAL needs the file to itself and answers BUSY without
        // consulting the busy handler; once set it persists, so retry only
        // while another process is mid-switch (first use, several runs at once).
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0))?;
            if mode.eq_ignore_ascii_case("wal") {
                break;
            }
            match conn
                .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0))
            {
                Ok(_) => break,
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::DatabaseBusy
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e),
            }
        }
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        Ok(())
    }

    fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let version = version as usize;
        if version >= MIGRATIONS.len() {
            return Ok(());
        }
        // IMMEDIATE: two processes migrating at once serialise here.
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let version = version as usize;
        for (i, m) in MIGRATIONS.iter().enumerate().skip(version) {
            tx.execute_batch(m)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        }
        tx.commit()
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        db_err(&self.layout)
    }

    /// Record a new run with all its workstreams and tasks as PENDING.
    pub fn create_run(&mut self, run: &NewRun) -> Result<()> {
        let layout = self.layout.clone();
        let e = db_err(&layout);
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(&e)?;
        let exists: bool = tx
            .query_row("SELECT 1 FROM runs WHERE id = ?1", [run.id], |_| Ok(true))
            .optional()
            .map_err(&e)?
            .unwrap_or(false);
        if exists || layout.run_dir(run.id).exists() {
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
        tx.commit().map_err(&e)?;
        fs::create_dir_all(layout.run_dir(run.id)).map_err(|source| StoreError::Io {
            path: layout.run_dir(run.id),
            source,
        })?;
        Ok(())
    }

    /// Append an event that is not a state change (WORKTREE_CREATED, TASK_RETRY, ...).
    pub fn event(
        &mut self,
        run: &str,
        kind: EventKind,
        ws: Option<&str>,
        task: Option<&str>,
        attempt: Option<u32>,
        data: Map<String, Value>,
    ) -> Result<Event> {
        let ev = Event {
            ts: now(),
            kind,
            run: run.into(),
            workstream: ws.map(Into::into),
            task: task.map(Into::into),
            attempt,
            data,
        };
        Self::insert_event(&self.conn, &ev).map_err(self.err())?;
        self.append_jsonl(&ev)?;
        Ok(ev)
    }

    fn insert_event(conn: &Connection, ev: &Event) -> rusqlite::Result<()> {
        conn.prepare_cached(
            "INSERT INTO events (run_id, ts, kind, ws, task, attempt, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(
            params![
                ev.run,
                ev.ts,
                ev.kind.as_str(),
                ev.workstream,
                ev.task,
                ev.attempt,
                Value::Object(ev.data.clone()).to_string()
            ],
        )?;
        Ok(())
    }

    /// Record the state change's event in its transaction and commit both.
    fn commit_with(tx: rusqlite::Transaction, ev: &Option<Event>) -> rusqlite::Result<()> {
        if let Some(ev) = ev {
            Self::insert_event(&tx, ev)?;
        }
        tx.commit()
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
        data: Map<String, Value>,
    ) -> Result<Option<Event>> {
        let cur = self.run(run)?;
        if cur.state == to {
            return Ok(None);
        }
        let ts = now();
        let layout = self.layout.clone();
        let e = db_err(&layout);
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(&e)?;
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
        let ev = to.event().map(|kind| Event {
            ts,
            kind,
            run: run.into(),
            workstream: None,
            task: None,
            attempt: None,
            data,
        });
        Self::commit_with(tx, &ev).map_err(&e)?;
        self.append(ev)
    }

    /// Move a workstream to `to`, with its event.
    pub fn transition_ws(
        &mut self,
        run: &str,
        ws: &str,
        to: WorkstreamState,
        patch: WsPatch,
        mut data: Map<String, Value>,
    ) -> Result<Option<Event>> {
        let ts = now();
        let layout = self.layout.clone();
        let e = db_err(&layout);
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(&e)?;
        let from: String = tx
            .query_row(
                "SELECT state FROM workstreams WHERE run_id = ?1 AND id = ?2",
                params![run, ws],
                |r| r.get(0),
            )
            .map_err(&e)?;
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
            patch.integration.as_ref().map(|v| v.to_string()),
            started,
            finished,
            patch
                .baseline
                .as_ref()
                .map(|b| serde_json::to_string(b).unwrap())
        ])
        .map_err(&e)?;
        if let Some(r) = &patch.reason {
            data.entry("reason").or_insert(json!(r));
        }
        let ev = (from != to.as_str())
            .then(|| to.event())
            .flatten()
            .map(|kind| Event {
                ts,
                kind,
                run: run.into(),
                workstream: Some(ws.into()),
                task: None,
                attempt: None,
                data,
            });
        Self::commit_with(tx, &ev).map_err(&e)?;
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
        let layout = self.layout.clone();
        let e = db_err(&layout);
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(&e)?;
        let (from, attempts): (String, u32) = tx
            .query_row(
                "SELECT state, attempts FROM tasks WHERE run_id = ?1 AND ws = ?2 AND id = ?3",
                params![run, ws, task],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(&e)?
            .ok_or_else(|| StoreError::NoSuchTask {
                run: run.into(),
                task: format!("{ws}/{task}"),
            })?;
        let from: TaskState = from.parse().expect("valid state in db");
        if from != to && !from.can_become(to) {
            return Err(StoreError::BadTransition {
                run: run.into(),
                what: format!("task {ws}/{task}"),
                from: from.to_string(),
                to: to.to_string(),
            });
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
            let kind = match (from, to, patch.attempt_state) {
                (
                    TaskState::Running,
                    TaskState::Ready | TaskState::Pending,
                    Some(AttemptState::Interrupted),
                ) => Some(EventKind::TaskInterrupted),
                (TaskState::Running, TaskState::Ready, _) => Some(EventKind::TaskRetry),
                _ => to.event(),
            };
            kind.map(|kind| {
                let mut data = Map::new();
                let put = |d: &mut Map<String, Value>, k: &str, v: Option<Value>| {
                    if let Some(v) = v {
                        d.insert(k.into(), v);
                    }
                };
                put(&mut data, "exit_code", patch.exit_code.map(|c| json!(c)));
                put(&mut data, "commit", patch.commit.clone().map(Value::from));
                put(
                    &mut data,
                    "preserved_ref",
                    patch.preserved_ref.clone().map(Value::from),
                );
                put(&mut data, "reason", patch.reason.clone().map(Value::from));
                put(
                    &mut data,
                    "duration_ms",
                    patch.duration_ms.map(|c| json!(c)),
                );
                Event {
                    ts,
                    kind,
                    run: run.into(),
                    workstream: Some(ws.into()),
                    task: Some(task.into()),
                    attempt: (attempt > 0).then_some(attempt),
                    data,
                }
            })
        };
        Self::commit_with(tx, &ev).map_err(&e)?;
        self.append(ev)
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
        self.conn
            .execute(
                "UPDATE attempts SET pid = ?5, pgid = ?6, proc_start = ?7
                 WHERE run_id = ?1 AND ws = ?2 AND task = ?3 AND attempt = ?4",
                params![run, ws, task, attempt, pid, pgid, start.map(|s| s as i64)],
            )
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

    pub fn record_integration(&mut self, run: &str, row: &IntegrationRow) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO integrations (run_id, ws, into_branch, state, branch_head, commit_id, conflicts, reason, at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    run,
                    row.ws,
                    row.into_branch,
                    row.state.as_str(),
                    row.branch_head,
                    row.commit,
                    serde_json::to_string(&row.conflicts).unwrap(),
                    row.reason,
                    row.at
                ],
            )
            .map_err(self.err())?;
        Ok(())
    }

    // ---- queries ----

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
        let mut st = self
            .conn
            .prepare("SELECT * FROM runs ORDER BY created_at DESC, rowid DESC")
            .map_err(self.err())?;
        let rows = st.query_map([], run_row).map_err(self.err())?;
        rows.collect::<rusqlite::Result<_>>().map_err(self.err())
    }

    /// The given run, or the newest one.
    pub fn run_or_latest(&self, id: Option<&str>) -> Result<RunRow> {
        match id {
            Some(id) => self.find_run(id),
            None => self.runs()?.into_iter().next().ok_or(StoreError::NoRuns),
        }
    }

    pub fn workstreams(&self, run: &str) -> Result<Vec<WsRow>> {
        let mut st = self
            .conn
            .prepare(
                "SELECT id, idx, name, state, branch, worktree, start_commit, head, reason, started_at, finished_at, integration, baseline
                 FROM workstreams WHERE run_id = ?1 ORDER BY idx",
            )
            .map_err(self.err())?;
        let rows = st
            .query_map([run], |r| {
                Ok(WsRow {
                    id: r.get(0)?,
                    idx: r.get::<_, i64>(1)? as usize,
                    name: r.get(2)?,
                    state: parse_col(r, 3)?,
                    branch: r.get(4)?,
                    worktree: r.get(5)?,
                    start_commit: r.get(6)?,
                    head: r.get(7)?,
                    reason: r.get(8)?,
                    started_at: r.get(9)?,
                    finished_at: r.get(10)?,
                    integration: r
                        .get::<_, Option<String>>(11)?
                        .and_then(|s| serde_json::from_str(&s).ok()),
                    baseline: r
                        .get::<_, Option<String>>(12)?
                        .and_then(|s| serde_json::from_str(&s).ok()),
                })
            })
            .map_err(self.err())?;
        rows.collect::<rusqlite::Result<_>>().map_err(self.err())
    }

    /// Tasks of a run in plan order.
    pub fn tasks(&self, run: &str) -> Result<Vec<TaskRow>> {
        let mut st = self
            .conn
            .prepare(
                "SELECT t.ws, t.id, t.idx, t.name, t.state, t.attempts, t.exit_code, t.commit_id, t.preserved_ref,
                        t.reason, t.started_at, t.finished_at, t.duration_ms
                 FROM tasks t JOIN workstreams w ON w.run_id = t.run_id AND w.id = t.ws
                 WHERE t.run_id = ?1 ORDER BY w.idx, t.idx",
            )
            .map_err(self.err())?;
        let rows = st
            .query_map([run], |r| {
                Ok(TaskRow {
                    ws: r.get(0)?,
                    id: r.get(1)?,
                    idx: r.get::<_, i64>(2)? as usize,
                    name: r.get(3)?,
                    state: parse_col(r, 4)?,
                    attempts: r.get(5)?,
                    exit_code: r.get(6)?,
                    commit: r.get(7)?,
                    preserved_ref: r.get(8)?,
                    reason: r.get(9)?,
                    started_at: r.get(10)?,
                    finished_at: r.get(11)?,
                    duration_ms: r.get(12)?,
                })
            })
            .map_err(self.err())?;
        rows.collect::<rusqlite::Result<_>>().map_err(self.err())
    }

    pub fn attempts(&self, run: &str) -> Result<Vec<AttemptRow>> {
        let mut st = self
            .conn
            .prepare(
                "SELECT ws, task, attempt, state, start_commit, pid, pgid, proc_start, exit_code, reason,
                        started_at, finished_at, duration_ms
                 FROM attempts WHERE run_id = ?1 ORDER BY started_at, ws, task, attempt",
            )
            .map_err(self.err())?;
        let rows = st
            .query_map([run], |r| {
                Ok(AttemptRow {
                    ws: r.get(0)?,
                    task: r.get(1)?,
                    attempt: r.get(2)?,
                    state: parse_col(r, 3)?,
                    start_commit: r.get(4)?,
                    pid: r.get(5)?,
                    pgid: r.get(6)?,
                    proc_start: r.get::<_, Option<i64>>(7)?.map(|v| v as u64),
                    exit_code: r.get(8)?,
                    reason: r.get(9)?,
                    started_at: r.get(10)?,
                    finished_at: r.get(11)?,
                    duration_ms: r.get(12)?,
                })
            })
            .map_err(self.err())?;
        rows.collect::<rusqlite::Result<_>>().map_err(self.err())
    }

    /// Events of a run after sequence number `after`, with their sequence numbers.
    pub fn events(&self, run: &str, after: i64) -> Result<Vec<(i64, Event)>> {
        let mut st = self
            .conn
            .prepare(
                "SELECT seq, ts, kind, ws, task, attempt, data FROM events
                 WHERE run_id = ?1 AND seq > ?2 ORDER BY seq",
            )
            .map_err(self.err())?;
        let rows = st
            .query_map(params![run, after], |r| {
                let data: String = r.get(6)?;
                Ok((
                    r.get(0)?,
                    Event {
                        ts: r.get(1)?,
                        kind: parse_col(r, 2)?,
                        run: run.into(),
                        workstream: r.get(3)?,
                        task: r.get(4)?,
                        attempt: r.get(5)?,
                        data: serde_json::from_str::<Map<String, Value>>(&data).unwrap_or_default(),
                    },
                ))
            })
            .map_err(self.err())?;
        rows.collect::<rusqlite::Result<_>>().map_err(self.err())
    }

    pub fn integrations(&self, run: &str) -> Result<Vec<IntegrationRow>> {
        let mut st = self
            .conn
            .prepare(
                "SELECT ws, into_branch, state, branch_head, commit_id, conflicts, reason, at
                 FROM integrations WHERE run_id = ?1 ORDER BY id",
            )
            .map_err(self.err())?;
        let rows = st
            .query_map([run], |r| {
                let conflicts: String = r.get(5)?;
                Ok(IntegrationRow {
                    ws: r.get(0)?,
                    into_branch: r.get(1)?,
                    state: parse_col(r, 2)?,
                    branch_head: r.get(3)?,
                    commit: r.get(4)?,
                    conflicts: serde_json::from_str(&conflicts).unwrap_or_default(),
                    reason: r.get(6)?,
                    at: r.get(7)?,
                })
            })
            .map_err(self.err())?;
        rows.collect::<rusqlite::Result<_>>().map_err(self.err())
    }

    // ---- summaries on disk ----

    /// The `run_status.json` object (DESIGN section 6), from the database.
    pub fn run_status(&self, run: &str) -> Result<RunStatus> {
        let r = self.run(run)?;
        let wss = self.workstreams(run)?;
        let tasks = self.tasks(run)?;
        let mut counts = Counts::default();
        let mut out = Vec::with_capacity(wss.len());
        for ws in wss {
            let mut wc = Counts::default();
            let mut trs = Vec::new();
            for t in tasks.iter().filter(|t| t.ws == ws.id) {
                wc.add(t.state);
                counts.add(t.state);
                trs.push(TaskStatus {
                    id: t.id.clone(),
                    name: t.name.clone(),
                    state: t.state,
                    attempts: t.attempts,
                    exit_code: t.exit_code,
                    commit: t.commit.clone(),
                    preserved_ref: t.preserved_ref.clone(),
                    reason: t.reason.clone(),
                    started_at: t.started_at.clone(),
                    finished_at: t.finished_at.clone(),
                    duration_ms: t.duration_ms,
                });
            }
            out.push(WsStatus {
                id: ws.id,
                name: ws.name,
                state: ws.state,
                branch: ws.branch,
                worktree: ws.worktree,
                base: ws.start_commit,
                head: ws.head,
                reason: ws.reason,
                started_at: ws.started_at,
                finished_at: ws.finished_at,
                counts: wc,
                integration: ws.integration,
                tasks: trs,
            });
        }
        Ok(RunStatus {
            schema: 1,
            run_id: r.id,
            name: r.name,
            state: r.state,
            repo: r.repo,
            base: r.base,
            base_ref: r.base_ref,
            started_at: r.started_at,
            finished_at: r.finished_at,
            counts,
            workstreams: out,
        })
    }

    /// Rewrite `run_status.json` and every `workstreams/<ws>.json` atomically.
    pub fn write_status_files(&self, run: &str) -> Result<RunStatus> {
        self.write_status_files_of(run, None)
    }

    /// Rewrite `run_status.json` and the one workstream's file (all when None).
    pub fn write_status_files_of(&self, run: &str, only: Option<&str>) -> Result<RunStatus> {
        let st = self.run_status(run)?;
        let text = serde_json::to_vec_pretty(&st).expect("status serialises");
        write_atomic(&self.layout.run_status(run), &text)?;
        for ws in st
            .workstreams
            .iter()
            .filter(|w| only.is_none_or(|o| o == w.id))
        {
            let text = serde_json::to_vec_pretty(ws).expect("status serialises");
            write_atomic(&self.layout.ws_json(run, &ws.id), &text)?;
        }
        Ok(st)
    }
}

fn parse_col<T: std::str::FromStr>(r: &rusqlite::Row, i: usize) -> rusqlite::Result<T> {
    let s: String = r.get(i)?;
    s.parse().map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Text,
            format!("bad state {s}").into(),
        )
    })
}

fn run_row(r: &rusqlite::Row) -> rusqlite::Result<RunRow> {
    Ok(RunRow {
        id: r.get("id")?,
        name: r.get("name")?,
        state: {
            let s: String = r.get("state")?;
            s.parse()
                .map_err(|_| rusqlite::Error::InvalidColumnName(s))?
        },
        repo: r.get("repo")?,
        base: r.get("base")?,
        base_ref: r.get("base_ref")?,
        plan_path: r.get("plan_path")?,
        worktree_root: r.get("worktree_root")?,
        created_at: r.get("created_at")?,
        started_at: r.get("started_at")?,
        finished_at: r.get("finished_at")?,
        coordinator_pid: r.get("coordinator_pid")?,
        cancel_requested: r.get::<_, i64>("cancel_requested")? != 0,
        options: serde_json::from_str(&r.get::<_, String>("options")?).unwrap_or(Value::Null),
    })
}

/// Task counts by state; `tasks` is the total.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Counts {
    pub tasks: usize,
    #[serde(flatten)]
    pub by_state: std::collections::BTreeMap<String, usize>,
}

impl Counts {
    fn add(&mut self, s: TaskState) {
        self.tasks += 1;
        *self.by_state.entry(s.as_str().into()).or_default() += 1;
    }
    pub fn get(&self, s: TaskState) -> usize {
        self.by_state.get(s.as_str()).copied().unwrap_or(0)
    }
}

/// `run_status.json`, schema 1. Fields may be added, never renamed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunStatus {
    pub schema: u32,
    pub run_id: String,
    pub name: Option<String>,
    pub state: RunState,
    pub repo: String,
    pub base: String,
    #[serde(default)]
    pub base_ref: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub counts: Counts,
    pub workstreams: Vec<WsStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WsStatus {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    pub state: WorkstreamState,
    pub branch: String,
    pub worktree: String,
    /// Commit the workstream started from.
    #[serde(default)]
    pub base: Option<String>,
    pub head: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub finished_at: Option<String>,
    pub counts: Counts,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integration: Option<Value>,
    pub tasks: Vec<TaskStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskStatus {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    pub state: TaskState,
    pub attempts: u32,
    pub exit_code: Option<i32>,
    pub commit: Option<String>,
    pub preserved_ref: Option<String>,
    pub reason: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub duration_ms: Option<i64>,
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
