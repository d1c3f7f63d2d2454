//! Records that travel: a *piece* is one workstream's rows (workstream,
//! tasks, attempts, events) and logs, written by `mpw run --records-out` on
//! a CI runner and merged into another repository's database by
//! `mpw import` (or, for the upstreams of a stacked workstream, by
//! `mpw run --upstream-from`). See docs/ARCHITECTURE.md, "Scaling out".
//!
//! Merging is idempotent: rows are replaced by key, events are added once.
//! The rows are copied column by column, so the format follows the schema.

mod merge;
mod piece;
mod sql;

pub use merge::{check_piece, merge_piece};
pub use piece::{read_pieces, write_pieces};

use crate::error::LayerError;
use crate::git;
use crate::model::{RunState, WorkstreamState};
use crate::plan::{self, LoadOptions, Loaded};
use crate::store::{Layout, NewRun, RunPatch, Store, StoreError};
use serde_json::{Map, Value, json};
use sql::connect;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// File name of a piece inside its directory.
pub const PIECE_FILE: &str = "mpw-piece.json";

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Layer(#[from] LayerError),
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

crate::error::from_layers!(ImportError);

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
            listed(paths)
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
    let root = crate::runner::worktree_root(main, plan);
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
            .map(|w| {
                let branch = crate::runner::ws_branch(run_id, w);
                crate::runner::new_ws(w, branch, &root.join(run_id).join(&w.id))
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
                listed(records)
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

/// Paths for a message: `a, b, c`.
fn listed(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn db(layout: &Layout, source: rusqlite::Error) -> ImportError {
    ImportError::from(StoreError::Db {
        path: layout.db(),
        source,
    })
}

pub(super) fn io(path: &Path, source: std::io::Error) -> ImportError {
    ImportError::from(StoreError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn runner_err(e: crate::runner::RunError) -> ImportError {
    ImportError::Run(Box::new(e))
}
