//! Records that travel: a *piece* is one workstream's rows (workstream,
//! tasks, attempts, events) and logs, written by `mpw run --records-out` on
//! a CI runner and merged into another repository's database by
//! `mpw import` (or, for the upstreams of a stacked workstream, by
//! `mpw run --upstream-from`). See docs/ARCHITECTURE.md, "Scaling out".
//!
//! Merging is idempotent: rows are replaced by key, events are added once.
//! The rows are copied column by column, so the format follows the schema.

use crate::git::{self, GitError};
use crate::model::{RunState, WorkstreamState};
use crate::plan::{self, LoadOptions, Loaded, PlanError};
use crate::store::{Layout, NewRun, NewWs, RunPatch, Store, StoreError};
use rusqlite::{Connection, params_from_iter, types::ValueRef};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// File name of a piece inside its directory.
pub const PIECE_FILE: &str = "mpw-piece.json";
const KIND: &str = "mpw-piece";
const SCHEMA: u64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Git(#[from] GitError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A piece that does not belong here (another plan, another base) or is
    /// not a piece at all; nothing was merged.
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Env(String),
    /// Finding the repository.
    #[error(transparent)]
    Run(Box<crate::runner::RunError>),
}

type Result<T, E = ImportError> = std::result::Result<T, E>;

/// One workstream's records, as read from `mpw-piece.json`.
#[derive(Debug, Clone)]
pub struct Piece {
    pub dir: PathBuf,
    pub run_id: String,
    pub ws: String,
    pub name: Option<String>,
    pub base: String,
    pub base_ref: Option<String>,
    /// The whole plan, normalised, without its run id.
    pub plan: Value,
    row: Map<String, Value>,
    tasks: Vec<Map<String, Value>>,
    attempts: Vec<Map<String, Value>>,
    events: Vec<Map<String, Value>>,
}

impl Piece {
    pub fn state(&self) -> Option<&str> {
        self.row.get("state").and_then(Value::as_str)
    }
    pub fn head(&self) -> Option<&str> {
        self.row.get("head").and_then(Value::as_str)
    }
}

/// The plan as pieces carry it: normalised, run id left out (it is the
/// piece's own field), so pieces of one plan compare equal.
pub fn plan_value(loaded: &Loaded) -> Value {
    let mut plan = loaded.plan.clone();
    plan.run_id = None;
    serde_json::to_value(&plan).expect("plan serialises")
}

/// Load a plan file and give its piece form.
pub fn plan_value_of(path: &Path) -> Result<Value> {
    Ok(plan_value(&plan::load(path, LoadOptions::default())?))
}

// ---------------------------------------------------------------- writing

/// Write a piece per workstream in `wss` into `out/<ws>/`.
pub fn write_pieces(
    layout: &Layout,
    run_id: &str,
    wss: &[String],
    plan: &Value,
    out: &Path,
) -> Result<Vec<PathBuf>> {
    let store = Store::open_existing(layout.clone())?;
    let run = store.run(run_id)?;
    drop(store);
    let conn = connect(layout)?;
    let mut written = Vec::new();
    for ws in wss {
        let e = |e: rusqlite::Error| db(layout, e);
        let row = rows(
            &conn,
            "SELECT * FROM workstreams WHERE run_id = ?1 AND id = ?2",
            &[run_id, ws],
        )
        .map_err(e)?
        .pop()
        .ok_or_else(|| ImportError::Refused(format!("run {run_id} has no workstream {ws}")))?;
        let tasks = rows(
            &conn,
            "SELECT * FROM tasks WHERE run_id = ?1 AND ws = ?2 ORDER BY idx",
            &[run_id, ws],
        )
        .map_err(e)?;
        let attempts = rows(
            &conn,
            "SELECT * FROM attempts WHERE run_id = ?1 AND ws = ?2 ORDER BY task, attempt",
            &[run_id, ws],
        )
        .map_err(e)?;
        let mut events = rows(
            &conn,
            "SELECT * FROM events WHERE run_id = ?1 AND ws = ?2 ORDER BY seq",
            &[run_id, ws],
        )
        .map_err(e)?;
        for ev in &mut events {
            ev.remove("seq");
        }
        let dir = out.join(ws);
        let logs = dir.join("logs");
        std::fs::create_dir_all(&logs).map_err(|e| io(&logs, e))?;
        let src = layout.ws_logs(run_id, ws);
        if let Ok(entries) = std::fs::read_dir(&src) {
            for f in entries.flatten() {
                if f.file_type().is_ok_and(|t| t.is_file()) {
                    let to = logs.join(f.file_name());
                    std::fs::copy(f.path(), &to).map_err(|e| io(&to, e))?;
                }
            }
        }
        let piece = json!({
            "kind": KIND,
            "schema": SCHEMA,
            "run_id": run_id,
            "workstream": ws,
            "name": run.name,
            "base": run.base,
            "base_ref": run.base_ref,
            "plan": plan,
            "row": row,
            "tasks": tasks,
            "attempts": attempts,
            "events": events,
        });
        let file = dir.join(PIECE_FILE);
        crate::store::write_atomic(&file, &serde_json::to_vec_pretty(&piece).unwrap())?;
        written.push(file);
    }
    Ok(written)
}

// ---------------------------------------------------------------- reading

/// Every piece under these directories (or piece files), in a stable order.
pub fn read_pieces(paths: &[PathBuf]) -> Result<Vec<Piece>> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_file() {
            files.push(p.clone());
        } else if p.is_dir() {
            find_pieces(p, &mut files)?;
        } else {
            return Err(ImportError::Refused(format!(
                "{}: no such file or directory",
                p.display()
            )));
        }
    }
    files.sort();
    files.dedup();
    files.iter().map(|f| read_piece(f)).collect()
}

fn find_pieces(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).map_err(|e| io(&d, e))?.flatten() {
            let path = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(path);
            } else if e.file_name() == PIECE_FILE {
                out.push(path);
            }
        }
    }
    Ok(())
}

fn read_piece(file: &Path) -> Result<Piece> {
    let bad =
        |why: &str| ImportError::Refused(format!("{}: not an mpw piece: {why}", file.display()));
    let text = std::fs::read_to_string(file).map_err(|e| io(file, e))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| bad(&e.to_string()))?;
    if v.get("kind").and_then(Value::as_str) != Some(KIND) {
        return Err(bad("no \"kind\": \"mpw-piece\""));
    }
    if v.get("schema").and_then(Value::as_u64) != Some(SCHEMA) {
        return Err(bad(&format!(
            "schema {} (this mpw reads {SCHEMA}); import it with the mpw version that wrote it",
            v.get("schema").unwrap_or(&Value::Null)
        )));
    }
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let obj = |k: &str| v.get(k).and_then(Value::as_object).cloned();
    let list = |k: &str| -> Vec<Map<String, Value>> {
        v.get(k)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|x| x.as_object().cloned()).collect())
            .unwrap_or_default()
    };
    let run_id = s("run_id").ok_or_else(|| bad("no run_id"))?;
    let ws = s("workstream").ok_or_else(|| bad("no workstream"))?;
    let row = obj("row").ok_or_else(|| bad("no workstream row"))?;
    if plan::id_problem(&run_id).is_some() || plan::id_problem(&ws).is_some() {
        return Err(bad("its run or workstream id is not a valid id"));
    }
    Ok(Piece {
        dir: file.parent().unwrap_or(Path::new(".")).to_path_buf(),
        run_id,
        ws,
        name: s("name"),
        base: s("base").ok_or_else(|| bad("no base"))?,
        base_ref: s("base_ref"),
        plan: v.get("plan").cloned().ok_or_else(|| bad("no plan"))?,
        row,
        tasks: list("tasks"),
        attempts: list("attempts"),
        events: list("events"),
    })
}

// ---------------------------------------------------------------- merging

/// Is this piece one of this run (same plan, same base)? Says why not.
pub fn check_piece(p: &Piece, run_id: &str, plan: &Value, base: &str) -> Result<()> {
    let what = format!("{}: piece of {}/{}", p.dir.display(), p.run_id, p.ws);
    if p.run_id != run_id {
        return Err(ImportError::Refused(format!(
            "{what} belongs to run {}, not {run_id}",
            p.run_id
        )));
    }
    if &p.plan != plan {
        return Err(ImportError::Refused(format!(
            "{what} comes from another plan than the one run {run_id} here was made from (they differ{}); refused",
            first_difference(&p.plan, plan)
                .map(|d| format!(" at {d}"))
                .unwrap_or_default()
        )));
    }
    if p.base != base {
        return Err(ImportError::Refused(format!(
            "{what} was run from base {}, but run {run_id} here starts from {base}: another base, refused",
            p.base
        )));
    }
    Ok(())
}

/// Where two plans first differ, as a JSON path, for the refusal message.
fn first_difference(a: &Value, b: &Value) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for k in x.keys().chain(y.keys()) {
                match (x.get(k), y.get(k)) {
                    (Some(u), Some(v)) if u == v => {}
                    (Some(u), Some(v)) => {
                        return Some(match first_difference(u, v) {
                            Some(rest) => format!(".{k}{rest}"),
                            None => format!(".{k}"),
                        });
                    }
                    _ => return Some(format!(".{k}")),
                }
            }
            None
        }
        (Value::Array(x), Value::Array(y)) => {
            for (i, (u, v)) in x.iter().zip(y).enumerate() {
                if u != v {
                    return Some(match first_difference(u, v) {
                        Some(rest) => format!("[{i}]{rest}"),
                        None => format!("[{i}]"),
                    });
                }
            }
            (x.len() != y.len()).then(|| format!("[{}]", x.len().min(y.len())))
        }
        _ => (a != b).then(String::new),
    }
}

/// Merge a checked piece's rows, events and logs into run `run_id`.
pub fn merge_piece(store: &mut Store, run_id: &str, p: &Piece) -> Result<()> {
    let layout = store.layout.clone();
    let mut conn = connect(&layout)?;
    let e = |err: rusqlite::Error| db(&layout, err);
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(e)?;
    let known: i64 = tx
        .query_row(
            "SELECT COUNT(*) FROM workstreams WHERE run_id = ?1 AND id = ?2",
            [run_id, &p.ws],
            |r| r.get(0),
        )
        .map_err(e)?;
    if known != 1 {
        return Err(ImportError::Refused(format!(
            "{}: run {run_id} has no workstream {}",
            p.dir.display(),
            p.ws
        )));
    }
    // This repository's own facts stay: position, worktree path, branch.
    update(
        &tx,
        "workstreams",
        &p.row,
        &["run_id", "id", "idx", "worktree", "branch"],
        &[("run_id", run_id), ("id", &p.ws)],
    )
    .map_err(e)?;
    for t in &p.tasks {
        let id = t.get("id").and_then(Value::as_str).unwrap_or_default();
        let n = update(
            &tx,
            "tasks",
            t,
            &["run_id", "ws", "id", "idx"],
            &[("run_id", run_id), ("ws", &p.ws), ("id", id)],
        )
        .map_err(e)?;
        if n != 1 {
            return Err(ImportError::Refused(format!(
                "{}: run {run_id} has no task {}/{id}",
                p.dir.display(),
                p.ws
            )));
        }
    }
    tx.execute(
        "DELETE FROM attempts WHERE run_id = ?1 AND ws = ?2",
        [run_id, &p.ws],
    )
    .map_err(e)?;
    for a in &p.attempts {
        let mut a = a.clone();
        a.insert("run_id".into(), json!(run_id));
        a.insert("ws".into(), json!(p.ws));
        // Process ids of another machine mean nothing here.
        for k in ["pid", "pgid", "proc_start"] {
            a.insert(k.into(), Value::Null);
        }
        insert(&tx, "attempts", &a).map_err(e)?;
    }
    let mut new_events = Vec::new();
    for ev in &p.events {
        let mut ev = ev.clone();
        ev.insert("run_id".into(), json!(run_id));
        ev.insert("ws".into(), json!(p.ws));
        let seen: i64 = tx
            .query_row(
                "SELECT COUNT(*) FROM events WHERE run_id = ?1 AND ts IS ?2 AND kind IS ?3 AND ws IS ?4
                 AND task IS ?5 AND attempt IS ?6 AND data IS ?7",
                rusqlite::params![
                    run_id,
                    sql_value(ev.get("ts")),
                    sql_value(ev.get("kind")),
                    p.ws,
                    sql_value(ev.get("task")),
                    sql_value(ev.get("attempt")),
                    sql_value(ev.get("data")),
                ],
                |r| r.get(0),
            )
            .map_err(e)?;
        if seen == 0 {
            insert(&tx, "events", &ev).map_err(e)?;
            new_events.push(ev);
        }
    }
    tx.commit().map_err(e)?;
    // The same events to events.jsonl, after the commit, as the store does.
    if !new_events.is_empty() {
        let path = layout.events_jsonl(run_id);
        let mut text = String::new();
        for ev in &new_events {
            text.push_str(&jsonl_line(run_id, ev).to_string());
            text.push('\n');
        }
        use std::io::Write;
        std::fs::create_dir_all(layout.run_dir(run_id)).map_err(|e| io(&path, e))?;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(|e| io(&path, e))?;
    }
    let logs = p.dir.join("logs");
    if let Ok(entries) = std::fs::read_dir(&logs) {
        let dst = layout.ws_logs(run_id, &p.ws);
        std::fs::create_dir_all(&dst).map_err(|e| io(&dst, e))?;
        for f in entries.flatten() {
            if f.file_type().is_ok_and(|t| t.is_file()) {
                let to = dst.join(f.file_name());
                std::fs::copy(f.path(), &to).map_err(|e| io(&to, e))?;
            }
        }
    }
    Ok(())
}

/// An event row as `events.jsonl` holds it.
fn jsonl_line(run_id: &str, row: &Map<String, Value>) -> Value {
    let mut o = Map::new();
    o.insert("ts".into(), row.get("ts").cloned().unwrap_or(Value::Null));
    o.insert(
        "kind".into(),
        row.get("kind").cloned().unwrap_or(Value::Null),
    );
    o.insert("run".into(), json!(run_id));
    for (col, key) in [
        ("ws", "workstream"),
        ("task", "task"),
        ("attempt", "attempt"),
    ] {
        if let Some(v) = row.get(col).filter(|v| !v.is_null()) {
            o.insert(key.into(), v.clone());
        }
    }
    if let Some(Value::Object(d)) = row
        .get("data")
        .and_then(Value::as_str)
        .and_then(|s| serde_json::from_str(s).ok())
    {
        o.extend(d);
    }
    Value::Object(o)
}

// ---------------------------------------------------------------- mpw import

/// What one `mpw import` did, per run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Imported {
    pub run_id: String,
    pub created: bool,
    pub workstreams: Vec<String>,
    pub state: RunState,
    pub fetched: Vec<String>,
}

/// `mpw import DIR... [--fetch REMOTE]`: check every piece first, then merge.
pub fn import(
    repo: Option<&Path>,
    paths: &[PathBuf],
    fetch: Option<&str>,
) -> Result<Vec<Imported>> {
    let rc = crate::runner::open_repo(repo).map_err(runner_err)?;
    let main = rc.info.main_workdir.clone();
    let pieces = read_pieces(paths)?;
    if pieces.is_empty() {
        return Err(ImportError::Refused(format!(
            "no {PIECE_FILE} under {}",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let mut by_run: BTreeMap<String, Vec<&Piece>> = BTreeMap::new();
    for p in &pieces {
        by_run.entry(p.run_id.clone()).or_default().push(p);
    }
    // Check everything before touching anything.
    let mut store = Store::open(rc.layout.clone())?;
    let mut plans = BTreeMap::new();
    for (run_id, ps) in &by_run {
        let first = ps[0];
        let (plan, base) = match store.run(run_id) {
            Ok(row) => {
                let path = store.layout.plan_json(run_id);
                let text = std::fs::read_to_string(&path).map_err(|e| io(&path, e))?;
                let loaded = plan::parse_str(&text, &path, LoadOptions::default())?;
                (plan_value(&loaded), row.base)
            }
            Err(StoreError::NoSuchRun(_)) => (first.plan.clone(), first.base.clone()),
            Err(e) => return Err(e.into()),
        };
        for p in ps {
            check_piece(p, run_id, &plan, &base)?;
        }
        let text = serde_json::to_string(&plan).expect("plan serialises");
        let loaded = plan::parse_str(&text, Path::new("piece plan"), LoadOptions::default())?;
        for p in ps {
            if !loaded.plan.workstreams.iter().any(|w| w.id == p.ws) {
                return Err(ImportError::Refused(format!(
                    "{}: the plan has no workstream {}",
                    p.dir.display(),
                    p.ws
                )));
            }
        }
        if crate::git::resolve_commit(&main, &base).is_err() {
            return Err(ImportError::Refused(format!(
                "run {run_id} starts from commit {base}, which this repository does not have; fetch it first"
            )));
        }
        plans.insert(run_id.clone(), loaded);
    }
    let mut done = Vec::new();
    for (run_id, ps) in &by_run {
        let loaded = &plans[run_id];
        let created = match store.run(run_id) {
            Ok(_) => false,
            Err(_) => {
                create_run(&mut store, &main, run_id, loaded, ps[0])?;
                true
            }
        };
        for p in ps {
            merge_piece(&mut store, run_id, p)?;
        }
        let mut fetched = Vec::new();
        if let Some(remote) = fetch {
            fetched = fetch_refs(&store, &main, remote, run_id, ps)?;
        }
        let state = settle_run(&mut store, run_id)?;
        done.push(Imported {
            run_id: run_id.clone(),
            created,
            workstreams: ps.iter().map(|p| p.ws.clone()).collect(),
            state,
            fetched,
        });
    }
    Ok(done)
}

/// A run made from a piece's plan: every workstream PENDING until its piece comes.
fn create_run(
    store: &mut Store,
    main: &Path,
    run_id: &str,
    loaded: &Loaded,
    first: &Piece,
) -> Result<()> {
    let plan = &loaded.plan;
    let root = match &plan.globals.worktree_root {
        Some(r) => main.join(r),
        None => {
            let name = main
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "repo".into());
            main.parent().unwrap_or(main).join(format!("{name}.mpw"))
        }
    };
    let mut plan = plan.clone();
    plan.run_id = Some(run_id.to_string());
    let plan_json = serde_json::to_vec_pretty(&plan).expect("plan serialises");
    store.create_run(&NewRun {
        id: run_id,
        plan_json: &plan_json,
        name: first.name.as_deref(),
        repo: &main.to_string_lossy(),
        base: &first.base,
        base_ref: first.base_ref.as_deref(),
        plan_path: None,
        worktree_root: &root.to_string_lossy(),
        options: json!({ "imported": true }),
        workstreams: plan
            .workstreams
            .iter()
            .map(|w| NewWs {
                id: &w.id,
                name: w.name.as_deref(),
                branch: w
                    .branch
                    .clone()
                    .unwrap_or_else(|| crate::runner::default_branch(run_id, &w.id)),
                worktree: root.join(run_id).join(&w.id).to_string_lossy().into_owned(),
                tasks: w
                    .tasks
                    .iter()
                    .map(|t| (t.id.as_str(), t.name.as_deref()))
                    .collect(),
            })
            .collect(),
    })?;
    Ok(())
}

/// Bring each piece's branch and preserved refs from `remote`, and check
/// that the branch is where the records say it is.
fn fetch_refs(
    store: &Store,
    main: &Path,
    remote: &str,
    run_id: &str,
    pieces: &[&Piece],
) -> Result<Vec<String>> {
    let rows = store.workstreams(run_id)?;
    let branch_of = |ws: &str| rows.iter().find(|r| r.id == ws).map(|r| r.branch.clone());
    let mut wanted = Vec::new();
    for p in pieces {
        if let Some(b) = branch_of(&p.ws) {
            wanted.push(format!("refs/heads/{b}"));
        }
    }
    let mut present = git::remote_refs(main, remote, &format!("refs/mpw/{run_id}/"))?;
    for w in &wanted {
        present.extend(git::remote_refs(main, remote, w)?);
    }
    present.sort();
    present.dedup();
    let specs: Vec<String> = present.iter().map(|r| format!("+{r}:{r}")).collect();
    git::fetch(main, remote, &specs)?;
    for p in pieces {
        let (Some(head), Some(b)) = (p.head(), branch_of(&p.ws)) else {
            continue;
        };
        let tip = git::branch_tip(main, &b)?;
        match tip {
            Some(t) if head.parse::<git::Oid>().ok() == Some(t) => {}
            Some(t) => {
                return Err(ImportError::Env(format!(
                    "branch {b} from {remote} is at {t}, but the records of {} say {head}; was the job re-run after its records were downloaded?",
                    p.ws
                )));
            }
            None if p.state() == Some(WorkstreamState::Completed.as_str()) => {
                return Err(ImportError::Env(format!(
                    "workstream {} COMPLETED at {head}, but {remote} has no branch {b}; did its push step fail?",
                    p.ws
                )));
            }
            None => {}
        }
    }
    Ok(present)
}

/// The run's state from its workstreams: RUNNING while any piece is
/// missing, then COMPLETED or FAILED as a local run ends.
fn settle_run(store: &mut Store, run_id: &str) -> Result<RunState> {
    let wss = store.workstreams(run_id)?;
    let cur = store.run(run_id)?.state;
    if cur == RunState::Pending {
        store.transition_run(run_id, RunState::Running, RunPatch::default())?;
    }
    let next = if wss.iter().all(|w| w.state == WorkstreamState::Completed) {
        Some(RunState::Completed)
    } else if wss.iter().all(|w| w.state.is_terminal()) {
        Some(RunState::Failed)
    } else {
        None
    };
    if let Some(next) = next {
        store.transition_run(run_id, next, RunPatch::default())?;
    }
    // The run lasted as long as its workstreams did on their runners, not
    // as long as the import.
    let conn = connect(&store.layout)?;
    conn.execute(
        "UPDATE runs SET
             started_at = COALESCE((SELECT MIN(started_at) FROM workstreams WHERE run_id = ?1), started_at),
             finished_at = CASE WHEN finished_at IS NULL THEN NULL
                 ELSE COALESCE((SELECT MAX(finished_at) FROM workstreams WHERE run_id = ?1), finished_at) END
         WHERE id = ?1",
        [run_id],
    )
    .map_err(|e| db(&store.layout, e))?;
    store.write_status_files(run_id)?;
    Ok(store.run(run_id)?.state)
}

// ---------------------------------------------------------------- mpw run --upstream-from

/// Before a stacked workstream runs on its own runner: its upstreams'
/// records merged from their pieces, their branches fetched from `remote`.
/// Every upstream must have ended (its job finished).
pub fn seed_upstreams(
    store: &mut Store,
    main: &Path,
    run_id: &str,
    plan: &Value,
    base: &str,
    upstream: &[String],
    from: &crate::runner::Upstream,
) -> Result<()> {
    let (records, remote) = (&from.records, from.remote.as_str());
    let pieces = if records.iter().any(|r| r.exists()) {
        read_pieces(
            &records
                .iter()
                .filter(|r| r.exists())
                .cloned()
                .collect::<Vec<_>>(),
        )?
    } else {
        Vec::new()
    };
    let mut used = Vec::new();
    for ws in upstream {
        let Some(p) = pieces.iter().find(|p| &p.ws == ws && p.run_id == run_id) else {
            return Err(ImportError::Env(format!(
                "no records of upstream workstream {ws} of run {run_id} under {}: its job must upload them first",
                records
                    .iter()
                    .map(|r| r.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        check_piece(p, run_id, plan, base)?;
        let ended = p
            .state()
            .and_then(|s| s.parse::<WorkstreamState>().ok())
            .is_some_and(|s| s.is_terminal());
        if !ended {
            return Err(ImportError::Env(format!(
                "upstream workstream {ws} did not end on its runner (state {}); run its job again",
                p.state().unwrap_or("unknown")
            )));
        }
        used.push(p);
    }
    for p in &used {
        merge_piece(store, run_id, p)?;
    }
    fetch_refs(store, main, remote, run_id, &used)?;
    Ok(())
}

// ---------------------------------------------------------------- SQL helpers

fn connect(layout: &Layout) -> Result<Connection> {
    let conn = Connection::open(layout.db()).map_err(|e| db(layout, e))?;
    conn.busy_timeout(std::time::Duration::from_secs(30))
        .map_err(|e| db(layout, e))?;
    Ok(conn)
}

fn db(layout: &Layout, source: rusqlite::Error) -> ImportError {
    ImportError::Store(StoreError::Db {
        path: layout.db(),
        source,
    })
}

fn io(path: &Path, source: std::io::Error) -> ImportError {
    ImportError::Store(StoreError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn runner_err(e: crate::runner::RunError) -> ImportError {
    ImportError::Run(Box::new(e))
}

/// Rows as JSON objects keyed by column name.
fn rows(conn: &Connection, sql: &str, args: &[&str]) -> rusqlite::Result<Vec<Map<String, Value>>> {
    let mut st = conn.prepare(sql)?;
    let cols: Vec<String> = st.column_names().map(|c| c.to_string()).collect();
    let mut out = Vec::new();
    let mut q = st.query(params_from_iter(args.iter()))?;
    while let Some(r) = q.next()? {
        let mut m = Map::new();
        for (i, c) in cols.iter().enumerate() {
            let v = match r.get_ref(i)? {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(n) => json!(n),
                ValueRef::Real(f) => json!(f),
                ValueRef::Text(t) => json!(String::from_utf8_lossy(t)),
                ValueRef::Blob(_) => continue,
            };
            m.insert(c.clone(), v);
        }
        out.push(m);
    }
    Ok(out)
}

fn columns(conn: &Connection, table: &str) -> rusqlite::Result<Vec<String>> {
    let mut st = conn.prepare(&format!("PRAGMA table_info({table})"))?;
    st.query_map([], |r| r.get::<_, String>(1))?.collect()
}

fn sql_value(v: Option<&Value>) -> rusqlite::types::Value {
    use rusqlite::types::Value as S;
    match v {
        None | Some(Value::Null) => S::Null,
        Some(Value::Bool(b)) => S::Integer(*b as i64),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(i) => S::Integer(i),
            None => S::Real(n.as_f64().unwrap_or(0.0)),
        },
        Some(Value::String(s)) => S::Text(s.clone()),
        Some(other) => S::Text(other.to_string()),
    }
}

/// `UPDATE table SET <the row's columns known here, but not `keep`> WHERE keys`.
fn update(
    conn: &Connection,
    table: &str,
    row: &Map<String, Value>,
    keep: &[&str],
    keys: &[(&str, &str)],
) -> rusqlite::Result<usize> {
    let known = columns(conn, table)?;
    let set: Vec<&String> = known
        .iter()
        .filter(|c| !keep.contains(&c.as_str()) && row.contains_key(c.as_str()))
        .collect();
    if set.is_empty() {
        return Ok(1);
    }
    let mut sql = format!("UPDATE {table} SET ");
    sql.push_str(
        &set.iter()
            .enumerate()
            .map(|(i, c)| format!("{c} = ?{}", i + 1))
            .collect::<Vec<_>>()
            .join(", "),
    );
    sql.push_str(" WHERE ");
    sql.push_str(
        &keys
            .iter()
            .enumerate()
            .map(|(i, (k, _))| format!("{k} = ?{}", set.len() + i + 1))
            .collect::<Vec<_>>()
            .join(" AND "),
    );
    let mut args: Vec<rusqlite::types::Value> =
        set.iter().map(|c| sql_value(row.get(c.as_str()))).collect();
    args.extend(
        keys.iter()
            .map(|(_, v)| rusqlite::types::Value::Text(v.to_string())),
    );
    conn.execute(&sql, params_from_iter(args))
}

/// `INSERT INTO table (<the row's columns known here>) VALUES (...)`.
fn insert(conn: &Connection, table: &str, row: &Map<String, Value>) -> rusqlite::Result<usize> {
    let known = columns(conn, table)?;
    let cols: Vec<&String> = known
        .iter()
        .filter(|c| row.contains_key(c.as_str()))
        .collect();
    let sql = format!(
        "INSERT INTO {table} ({}) VALUES ({})",
        cols.iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        (1..=cols.len())
            .map(|i| format!("?{i}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    conn.execute(
        &sql,
        params_from_iter(cols.iter().map(|c| sql_value(row.get(c.as_str())))),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_difference_of_two_plans_is_named() {
        let a = json!({ "workstreams": [ { "id": "a", "tasks": [ { "run": "x" } ] } ] });
        let b = json!({ "workstreams": [ { "id": "a", "tasks": [ { "run": "y" } ] } ] });
        assert_eq!(
            first_difference(&a, &b).as_deref(),
            Some(".workstreams[0].tasks[0].run")
        );
        assert_eq!(first_difference(&a, &a), None);
        let c = json!({ "workstreams": [], "name": "n" });
        assert_eq!(first_difference(&a, &c).as_deref(), Some(".workstreams[0]"));
    }

    #[test]
    fn event_rows_become_events_jsonl_lines() {
        let row = json!({ "ts": "t", "kind": "TASK_FAILED", "ws": "w", "task": "T",
            "attempt": 2, "data": "{\"exit_code\":3}" });
        let line = jsonl_line("R", row.as_object().unwrap());
        assert_eq!(
            line,
            json!({ "ts": "t", "kind": "TASK_FAILED", "run": "R", "workstream": "w",
                "task": "T", "attempt": 2, "exit_code": 3 })
        );
    }
}
