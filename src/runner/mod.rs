//! `mpw run` and `mpw resume`: turn a validated plan into a recorded run and
//! drive it to its end. The runner emits events to listeners; it prints nothing.

mod attempt;
mod coordinator;
mod provision;

pub use coordinator::Listener;

use crate::git::{self, GitError, Oid, RepoInfo};
use crate::model::{RunState, TaskState};
use crate::plan::{self, LoadOptions, Loaded, Plan, PlanError, Shell};
use crate::store::{Layout, NewRun, NewWs, Store, StoreError};
use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Git(#[from] GitError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Bad input the user can fix; nothing was touched.
    #[error("{0}")]
    Usage(String),
    /// The machine or repository is not in a state to run.
    #[error("{0}")]
    Env(String),
}

type Result<T, E = RunError> = std::result::Result<T, E>;

/// What `mpw run` was asked to do.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub plan: PathBuf,
    pub repo: Option<PathBuf>,
    pub max_concurrency: Option<usize>,
    pub workstreams: Vec<String>,
    pub fail_fast: bool,
    /// Unknown plan keys are warnings, not errors.
    pub lenient: bool,
    /// Between TERM and KILL when stopping tasks.
    pub grace: Duration,
}

/// How a run ended, for the exit code and the summary.
#[derive(Debug, Clone)]
pub struct Finished {
    pub run_id: String,
    pub state: RunState,
    /// Stopped by Ctrl-C / SIGTERM / `mpw cancel`.
    pub interrupted: bool,
    /// Main worktree of the repository the run works in.
    pub repo: PathBuf,
}

/// Facts of the repository a run works in.
pub struct RepoCtx {
    pub info: RepoInfo,
    pub layout: Layout,
}

/// Find the repository: `--repo`, else the plan's `globals.repo_root`
/// (relative to the plan file), else the current directory.
pub fn open_repo(repo: Option<&Path>) -> Result<RepoCtx> {
    let start = match repo {
        Some(p) => p.to_path_buf(),
        None => {
            std::env::current_dir().map_err(|e| RunError::Env(format!("current directory: {e}")))?
        }
    };
    if !start.exists() {
        return Err(RunError::Env(format!(
            "{}: no such directory",
            start.display()
        )));
    }
    let info = git::discover(&start)?;
    let layout = Layout::new(&info.common_dir);
    Ok(RepoCtx { info, layout })
}

/// How the coordinator was started.
pub(crate) struct Invocation {
    /// The main worktree, as found now.
    pub repo: PathBuf,
    pub resuming: bool,
}

/// Options of a run kept in its row, so `resume` continues the same way.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, Default)]
pub(crate) struct StoredOptions {
    pub max_concurrency: Option<usize>,
    pub fail_fast: bool,
    pub grace_ms: u64,
}

/// Everything checked before anything is touched.
struct Prepared {
    repo: RepoCtx,
    loaded: Loaded,
    run_id: String,
    base: Oid,
    base_ref: Option<String>,
    worktree_root: PathBuf,
    warnings: Vec<String>,
}

/// Validate the plan against the repository and record the run. Nothing on
/// disk is touched when this fails.
fn prepare(opts: &RunOptions) -> Result<Prepared> {
    let loaded = plan::load(
        &opts.plan,
        LoadOptions {
            lenient: opts.lenient,
        },
    )?;
    let repo_dir = loaded.repo_dir(opts.repo.as_deref());
    let repo = open_repo(repo_dir.as_deref())?;
    let main = repo.info.main_workdir.clone();

    let base_rev = loaded.plan.base.clone().unwrap_or_else(|| "HEAD".into());
    let base = git::resolve_commit(&main, &base_rev).map_err(|e| match e {
        GitError::UnknownRev { .. } => RunError::Usage(format!(
            "{}: base {base_rev:?} does not resolve to a commit in {}",
            opts.plan.display(),
            main.display()
        )),
        e => e.into(),
    })?;
    let base_ref = if base_rev == "HEAD" {
        repo.info.head_branch.clone()
    } else if git::branch_tip(&main, &base_rev)?.is_some() {
        Some(base_rev.clone())
    } else {
        None
    };

    let run_id = loaded
        .plan
        .run_id
        .clone()
        .unwrap_or_else(|| ulid::Ulid::generate().to_string());
    let loaded = select_workstreams(loaded, &opts.workstreams)?;

    let mut warnings = Vec::new();
    let worktree_root = match &loaded.plan.globals.worktree_root {
        Some(r) => absolute(&main.join(r)),
        None => {
            let name = main
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "repo".into());
            main.parent().unwrap_or(&main).join(format!("{name}.mpw"))
        }
    };
    if worktree_root.starts_with(&main) {
        warnings.push(format!(
            "worktree_root {} is inside the main worktree {}: cargo, npm and editors that search upward will see the nested worktrees as part of the main one, and `git status` there will list them unless ignored; a folder beside the repository (the default) avoids this",
            worktree_root.display(),
            main.display()
        ));
    }
    Ok(Prepared {
        repo,
        loaded,
        run_id,
        base,
        base_ref,
        worktree_root,
        warnings,
    })
}

fn absolute(p: &Path) -> PathBuf {
    // Normalise `..` without requiring the path to exist.
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

/// Keep the named workstreams and everything they depend on (workstream and
/// task dependencies), re-validated as a plan of its own.
fn select_workstreams(loaded: Loaded, names: &[String]) -> Result<Loaded> {
    if names.is_empty() {
        return Ok(loaded);
    }
    let ids: Vec<&str> = loaded
        .plan
        .workstreams
        .iter()
        .map(|w| w.id.as_str())
        .collect();
    let mut keep = BTreeSet::new();
    let mut stack = Vec::new();
    for n in names {
        match ids.iter().position(|i| i == n) {
            Some(i) => stack.push(i),
            None => {
                return Err(RunError::Usage(format!(
                    "--workstream {n}: no such workstream in {} (it has: {})",
                    loaded.path.display(),
                    ids.join(", ")
                )));
            }
        }
    }
    while let Some(w) = stack.pop() {
        if !keep.insert(w) {
            continue;
        }
        stack.extend(loaded.dag.ws_deps[w].iter().copied());
        for t in loaded.dag.ws_tasks[w].clone() {
            stack.extend(
                loaded.dag.tasks[t]
                    .deps
                    .iter()
                    .map(|&d| loaded.dag.tasks[d].ws),
            );
        }
    }
    let mut plan = loaded.plan.clone();
    plan.workstreams = plan
        .workstreams
        .into_iter()
        .enumerate()
        .filter(|(i, _)| keep.contains(i))
        .map(|(_, w)| w)
        .collect();
    reparse(&plan, &loaded.path)
}

/// Validate a plan value again (after selection, or as stored in `plan.json`).
fn reparse(plan: &Plan, path: &Path) -> Result<Loaded> {
    let text = serde_json::to_string_pretty(plan).expect("plan serialises");
    Ok(plan::parse_str(&text, path, LoadOptions::default())?)
}

pub fn default_branch(run_id: &str, ws: &str) -> String {
    format!("mpw/{run_id}/{ws}")
}

/// Start a new run: validate, record, provision, execute. Returns when the
/// run has ended (or was interrupted).
pub fn run(
    opts: &RunOptions,
    listener: Box<dyn Listener>,
    on_warning: &mut dyn FnMut(&str),
    on_id: &mut dyn FnMut(&str),
) -> Result<Finished> {
    let p = prepare(opts)?;
    for w in p
        .loaded
        .warnings
        .iter()
        .map(|d| d.to_string())
        .chain(p.warnings.iter().cloned())
    {
        on_warning(&w);
    }
    let main = p.repo.info.main_workdir.clone();
    let plan = &p.loaded.plan;

    // Refuse before touching anything: branches or worktree paths in the way.
    let mut wss = Vec::new();
    for w in &plan.workstreams {
        let branch = w
            .branch
            .clone()
            .unwrap_or_else(|| default_branch(&p.run_id, &w.id));
        if !git::is_valid_branch_name(&branch) {
            return Err(RunError::Usage(format!(
                "workstream {}: {branch:?} is not a valid branch name",
                w.id
            )));
        }
        if git::branch_tip(&main, &branch)?.is_some() {
            return Err(RunError::Usage(format!(
                "workstream {}: branch {branch} already exists; pick another run_id or branch (or `mpw resume {}`)",
                w.id, p.run_id
            )));
        }
        let wt = p.worktree_root.join(&p.run_id).join(&w.id);
        if wt.exists() {
            return Err(RunError::Env(format!(
                "workstream {}: worktree path {} already exists and is not mpw's; move it away or set globals.worktree_root",
                w.id,
                wt.display()
            )));
        }
        wss.push((w, branch, wt));
    }

    let mut store = Store::open(p.repo.layout.clone())?;
    let stored = StoredOptions {
        max_concurrency: opts.max_concurrency,
        fail_fast: opts.fail_fast,
        grace_ms: opts.grace.as_millis() as u64,
    };
    store.create_run(&NewRun {
        id: &p.run_id,
        name: plan.name.as_deref(),
        repo: &main.to_string_lossy(),
        base: &p.base.to_string(),
        base_ref: p.base_ref.as_deref(),
        plan_path: Some(
            &absolute(&std::env::current_dir().unwrap_or_default().join(&opts.plan))
                .to_string_lossy(),
        ),
        worktree_root: &p.worktree_root.to_string_lossy(),
        options: serde_json::to_value(&stored).unwrap(),
        workstreams: wss
            .iter()
            .map(|(w, branch, wt)| NewWs {
                id: &w.id,
                name: w.name.as_deref(),
                branch: branch.clone(),
                worktree: wt.to_string_lossy().into_owned(),
                tasks: w
                    .tasks
                    .iter()
                    .map(|t| (t.id.as_str(), t.name.as_deref()))
                    .collect(),
            })
            .collect(),
    })?;
    let plan_json = serde_json::to_vec_pretty(plan).expect("plan serialises");
    crate::store::write_atomic(&store.layout.plan_json(&p.run_id), &plan_json)?;
    on_id(&p.run_id);
    let lock = lock_run(&store.layout, &p.run_id)?;
    let how = Invocation {
        repo: main,
        resuming: false,
    };
    coordinator::drive(store, &p.run_id, p.loaded, stored, listener, how, lock)
}

/// Continue a run whose coordinator died or was interrupted.
pub fn resume(repo: Option<&Path>, run_id: &str, listener: Box<dyn Listener>) -> Result<Finished> {
    let rc = open_repo(repo)?;
    let store = Store::open_existing(rc.layout.clone())?;
    let row = store.run(run_id)?;
    if row.state == RunState::Completed {
        return Err(RunError::Usage(format!(
            "run {run_id} already COMPLETED; nothing to resume"
        )));
    }
    let lock = lock_run(&store.layout, run_id)?;
    let text = std::fs::read_to_string(store.layout.plan_json(run_id))
        .map_err(|e| RunError::Env(format!("{}: {e}", store.layout.plan_json(run_id).display())))?;
    let loaded = plan::parse_str(
        &text,
        &store.layout.plan_json(run_id),
        LoadOptions::default(),
    )?;
    let stored: StoredOptions = serde_json::from_value(row.options.clone()).unwrap_or_default();
    let how = Invocation {
        repo: rc.info.main_workdir.clone(),
        resuming: true,
    };
    coordinator::drive(store, run_id, loaded, stored, listener, how, lock)
}

/// Hold the run's coordinator lock: one coordinator per run, and a crashed
/// one (whose lock the OS released) is recognised by `resume` and `cancel`.
fn lock_run(layout: &Layout, run_id: &str) -> Result<File> {
    let path = layout.run_lock(run_id);
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| RunError::Env(format!("{}: {e}", path.display())))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(RunError::Env(format!(
            "run {run_id} is being worked on by another mpw process right now (lock {})",
            path.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(RunError::Env(format!("{}: {e}", path.display())))
        }
    }
}

/// Ask a run to stop. With its coordinator alive, it is told through the
/// database and this waits until it has stopped; with none (it crashed),
/// this ends what is left of the run's processes and records the run CANCELLED.
pub fn cancel(repo: Option<&Path>, run_id: &str, grace: Duration) -> Result<RunState> {
    let rc = open_repo(repo)?;
    let mut store = Store::open_existing(rc.layout.clone())?;
    let row = store.run(run_id)?;
    if row.state.is_terminal() {
        return Ok(row.state);
    }
    store.set_cancel_requested(run_id)?;
    let deadline = std::time::Instant::now() + grace + Duration::from_secs(30);
    loop {
        match lock_run(&store.layout, run_id) {
            Ok(lock) => {
                // No coordinator (any more): finish the job here.
                let row = store.run(run_id)?;
                if !row.state.is_terminal() {
                    coordinator::cancel_orphaned(&mut store, &rc.info.main_workdir, run_id, grace)?;
                }
                drop(lock);
                return Ok(store.run(run_id)?.state);
            }
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100))
            }
            Err(e) => return Err(e),
        }
    }
}

/// The shell for `run` commands when the plan names none.
pub fn plan_shell(plan: &Plan) -> Shell {
    plan.globals
        .shell
        .unwrap_or_else(crate::exec::default_shell)
}

/// Is this task state one that a resume leaves alone?
pub(crate) fn is_done(s: TaskState) -> bool {
    s.is_terminal() && s != TaskState::Cancelled && s != TaskState::Skipped
}
