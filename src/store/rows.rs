//! The rows of the database as Rust types, and what a change may set.

use crate::model::{
    AttemptState, Event, EventData, Integration, RunState, TaskState, WorkstreamState,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

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
    pub integration: Option<Integration>,
    #[serde(skip)]
    pub baseline: Option<Vec<String>>,
}

/// A task as recorded; also its entry in `run_status.json`, where the
/// workstream and the position are those of the list it sits in.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TaskRow {
    #[serde(skip)]
    pub ws: String,
    pub id: String,
    #[serde(skip)]
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

/// One run of an integration gate on the merge of the workstreams it covered.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct GateRunRow {
    pub id: i64,
    pub into_branch: String,
    /// The batch of `mpw integrate --batch` it belongs to (none: sequential).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<u32>,
    pub covered: Vec<String>,
    pub commit: String,
    pub passed: bool,
    /// Runs of the gate it took (more than one with `--gate-retries`).
    pub attempts: u32,
    /// Failed, then passed on a retry.
    pub flaky: bool,
    pub duration_ms: i64,
    pub log: String,
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
    /// The run's `plan.json`, written with the row.
    pub plan_json: &'a [u8],
}

pub struct NewWs<'a> {
    pub id: &'a str,
    pub name: Option<&'a str>,
    pub branch: String,
    pub worktree: String,
    pub tasks: Vec<(&'a str, Option<&'a str>)>,
}

/// Facts a run's transition records (empty: none).
#[derive(Debug, Default, Clone)]
pub struct RunPatch {
    /// Git lock files a killed process had left, removed before going on.
    pub stale_locks_removed: Vec<String>,
    /// The dead coordinator's last event time (see `StaleLocks`).
    pub coordinator_last_seen: Option<String>,
}

/// Fields a workstream transition may set (None: unchanged).
#[derive(Debug, Default, Clone)]
pub struct WsPatch {
    pub start_commit: Option<String>,
    pub head: Option<String>,
    pub reason: Option<String>,
    pub integration: Option<Integration>,
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
    /// Advice for the user, recorded in the event only.
    pub hint: Option<String>,
}

pub(super) fn parse_col<T: std::str::FromStr>(r: &rusqlite::Row, i: usize) -> rusqlite::Result<T> {
    let s: String = r.get(i)?;
    s.parse().map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Text,
            format!("bad state {s}").into(),
        )
    })
}

pub(super) fn run_row(r: &rusqlite::Row) -> rusqlite::Result<RunRow> {
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

pub(super) fn ws_row(r: &rusqlite::Row) -> rusqlite::Result<WsRow> {
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
        integration: json_col(r, 11)?,
        baseline: json_col(r, 12)?,
    })
}

pub(super) fn task_row(r: &rusqlite::Row) -> rusqlite::Result<TaskRow> {
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
}

pub(super) fn attempt_row(r: &rusqlite::Row) -> rusqlite::Result<AttemptRow> {
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
}

pub(super) fn integration_row(r: &rusqlite::Row) -> rusqlite::Result<IntegrationRow> {
    Ok(IntegrationRow {
        ws: r.get(0)?,
        into_branch: r.get(1)?,
        state: parse_col(r, 2)?,
        branch_head: r.get(3)?,
        commit: r.get(4)?,
        conflicts: json_col(r, 5)?.unwrap_or_default(),
        reason: r.get(6)?,
        at: r.get(7)?,
    })
}

pub(super) fn gate_run_row(r: &rusqlite::Row) -> rusqlite::Result<GateRunRow> {
    Ok(GateRunRow {
        id: r.get(0)?,
        into_branch: r.get(1)?,
        batch: r.get(2)?,
        covered: json_col(r, 3)?.unwrap_or_default(),
        commit: r.get(4)?,
        passed: r.get::<_, String>(5)? == "PASSED",
        attempts: r.get(6)?,
        flaky: r.get(7)?,
        duration_ms: r.get(8)?,
        log: r.get(9)?,
        at: r.get(10)?,
    })
}

/// An event with its sequence number.
pub(super) fn event_row(r: &rusqlite::Row) -> rusqlite::Result<(i64, Event)> {
    let facts: Map<String, Value> = json_col(r, 6)?.unwrap_or_default();
    let data = EventData::from_facts(parse_col(r, 2)?, facts).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(6, rusqlite::types::Type::Text, e.into())
    })?;
    Ok((
        r.get(0)?,
        Event {
            ts: r.get(1)?,
            run: r.get(7)?,
            workstream: r.get(3)?,
            task: r.get(4)?,
            attempt: r.get(5)?,
            data,
        },
    ))
}

/// A JSON column; what does not parse counts as absent.
fn json_col<T: serde::de::DeserializeOwned>(
    r: &rusqlite::Row,
    i: usize,
) -> rusqlite::Result<Option<T>> {
    Ok(r.get::<_, Option<String>>(i)?
        .and_then(|s| serde_json::from_str(&s).ok()))
}
