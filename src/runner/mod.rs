//! `mpw run` and `mpw resume`: turn a validated plan into a recorded run and
//! drive it to its end. The runner emits events to listeners; it prints nothing.
//!
//! Its files, none of which imports from this one or from a file that
//! imports it back (checked by a test below; see docs/ARCHITECTURE.md,
//! "Module map"):
//! - `coordinator`: the loop that starts work and records results;
//! - `ledger`: the states in memory and the one place each changes;
//! - `ctx`: what executors get and send back; `attempt`, `provision`: the executors;
//! - `recover`: after a coordinator died (`resume`, `cancel`);
//! - `workers`: the warm worker pools that serve `worker` tasks;
//! - `error`, `options`: shared by all of them.

mod attempt;
mod coordinator;
mod ctx;
mod error;
mod ledger;
mod options;
mod provision;
mod recover;
mod workers;

use ctx::RunCtx;
use error::Result;
pub use error::RunError;
pub use ledger::Listener;
pub(crate) use options::Invocation;
pub use options::{Finished, RunOptions, StoredOptions, Upstream, plan_shell};
pub use workers::PYTHON_ADAPTER;

use crate::git::{self, ChangeKind, Excluded, GitError, Oid, RepoInfo};
use crate::lock;
use crate::model::RunState;
use crate::plan::{self, LoadOptions, Loaded, Plan};
use crate::store::{Layout, NewRun, NewWs, RunRow, Store};
use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
        None => std::env::current_dir().map_err(RunError::io(Path::new("current directory")))?,
    };
    if !start.exists() {
        return Err(RunError::NoDirectory { path: start });
    }
    let info = git::discover(&start)?;
    let layout = Layout::new(&info.common_dir);
    Ok(RepoCtx { info, layout })
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
    let loaded = plan::load(&opts.plan, opts.load)?;
    let repo_dir = loaded.repo_dir(opts.repo.as_deref());
    let repo = open_repo(repo_dir.as_deref())?;
    let main = repo.info.main_workdir.clone();

    let base_rev = opts
        .base
        .clone()
        .or_else(|| loaded.plan.base.clone())
        .unwrap_or_else(|| "HEAD".into());
    let base = git::resolve_commit(&main, &base_rev).map_err(|e| match e {
        GitError::UnknownRev { .. } => RunError::BadBase {
            plan: opts.plan.clone(),
            base: base_rev.clone(),
            repo: main.clone(),
        },
        e => e.into(),
    })?;
    let base_ref = if base_rev == "HEAD" {
        repo.info.head_branch.clone()
    } else if git::branch_tip(&main, &base_rev)?.is_some() {
        Some(base_rev.clone())
    } else {
        None
    };

    if let Some(id) = &opts.run_id
        && let Some(problem) = plan::id_problem(id)
    {
        return Err(RunError::BadRunId {
            id: id.clone(),
            problem,
        });
    }
    let run_id = opts
        .run_id
        .clone()
        .or_else(|| loaded.plan.run_id.clone())
        .unwrap_or_else(|| ulid::Ulid::generate().to_string());
    let loaded = select_workstreams(loaded, &opts.workstreams)?;

    let mut warnings = Vec::new();
    let worktree_root = worktree_root(&main, &loaded.plan);
    if worktree_root.starts_with(&main) {
        warnings.push(format!(
            "worktree_root {} is inside the main worktree {}: cargo, npm and editors that search upward will see the nested worktrees as part of the main one, and `git status` there will list them unless ignored; a folder beside the repository (the default) avoids this",
            worktree_root.display(),
            main.display()
        ));
    }
    // Worktrees are made from the base commit: edits not committed in the
    // main worktree are not in them. Said only when the base is HEAD's
    // commit, where a user expects their checkout to be what runs.
    if git::resolve_commit(&main, "HEAD").is_ok_and(|head| head == base) {
        let dirty: Vec<String> = git::changes(&main, &Excluded::default())?
            .into_iter()
            .filter(|c| c.kind != ChangeKind::Added)
            .map(|c| c.path)
            .collect();
        if !dirty.is_empty() {
            warnings.push(format!(
                "the main worktree has uncommitted changes to {} tracked file(s) ({}{}): workstreams start from HEAD; your uncommitted changes are not in them",
                dirty.len(),
                dirty.iter().take(5).cloned().collect::<Vec<_>>().join(", "),
                if dirty.len() > 5 { ", ..." } else { "" }
            ));
        }
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
                return Err(RunError::NoSuchWorkstream {
                    name: n.clone(),
                    plan: loaded.path.clone(),
                    known: ids.iter().map(|i| i.to_string()).collect(),
                });
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

/// A workstream's branch: its `branch`, or `mpw/<run>/<ws>`.
pub(crate) fn ws_branch(run_id: &str, w: &plan::Workstream) -> String {
    w.branch
        .clone()
        .unwrap_or_else(|| format!("mpw/{run_id}/{}", w.id))
}

/// Where a run's worktrees go: `globals.worktree_root` (relative to the main
/// worktree), or `<main worktree>.mpw` beside it.
pub(crate) fn worktree_root(main: &Path, plan: &Plan) -> PathBuf {
    match &plan.globals.worktree_root {
        Some(r) => absolute(&main.join(r)),
        None => {
            let name = main
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "repo".into());
            main.parent().unwrap_or(main).join(format!("{name}.mpw"))
        }
    }
}

/// The store's new row of a plan workstream, for `run` and `import` alike.
pub(crate) fn new_ws<'a>(w: &'a plan::Workstream, branch: String, worktree: &Path) -> NewWs<'a> {
    NewWs {
        id: &w.id,
        name: w.name.as_deref(),
        branch,
        worktree: worktree.to_string_lossy().into_owned(),
        tasks: w
            .tasks
            .iter()
            .map(|t| (t.id.as_str(), t.name.as_deref()))
            .collect(),
    }
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
    // Upstreams taken from records are not run here: their branches come
    // from the remote.
    let upstream: Vec<String> = match &opts.upstream {
        Some(_) => plan
            .workstreams
            .iter()
            .map(|w| w.id.clone())
            .filter(|id| !opts.workstreams.contains(id))
            .collect(),
        None => Vec::new(),
    };

    // Refuse before touching anything: branches or worktree paths in the way.
    let mut wss = Vec::new();
    for w in &plan.workstreams {
        let branch = ws_branch(&p.run_id, w);
        let bad = |problem: String| RunError::BadWorkstream {
            ws: w.id.clone(),
            problem,
        };
        if !git::is_valid_branch_name(&branch) {
            return Err(bad(format!("{branch:?} is not a valid branch name")));
        }
        let ours = !upstream.contains(&w.id);
        if ours && git::branch_tip(&main, &branch)?.is_some() {
            return Err(bad(format!(
                "branch {branch} already exists; pick another run_id or branch (or `mpw resume {}`)",
                p.run_id
            )));
        }
        let wt = p.worktree_root.join(&p.run_id).join(&w.id);
        if ours && wt.exists() {
            return Err(RunError::WorktreeInTheWay {
                ws: w.id.clone(),
                path: wt,
            });
        }
        wss.push((w, branch, wt));
    }

    // A bad machine slot setting is refused before anything is recorded.
    crate::slots::machine::size().map_err(RunError::Env)?;
    let mut store = Store::open(p.repo.layout.clone())?;
    let stored = opts.stored.clone();
    // Dropped once written: it is the size of the plan again.
    let plan_json = serde_json::to_vec_pretty(plan).expect("plan serialises");
    store.create_run(&NewRun {
        id: &p.run_id,
        plan_json: &plan_json,
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
            .map(|(w, branch, wt)| new_ws(w, branch.clone(), wt))
            .collect(),
    })?;
    drop(plan_json);
    if let Some(up) = &opts.upstream {
        let full = crate::import::plan_value_of(&opts.plan)?;
        crate::import::seed_upstreams(
            &mut store,
            &main,
            &p.run_id,
            &full,
            &p.base.to_string(),
            &upstream,
            up,
        )?;
    }
    on_id(&p.run_id);
    let lock = lock_run(&store.layout, &p.run_id)?;
    let how = Invocation {
        repo: main,
        resuming: false,
    };
    coordinator::drive(coordinator::Start {
        store,
        run_id: p.run_id,
        loaded: p.loaded,
        opts: stored,
        listener,
        how,
        lock,
    })
}

/// Continue a run whose coordinator died or was interrupted.
pub fn resume(repo: Option<&Path>, run_id: &str, listener: Box<dyn Listener>) -> Result<Finished> {
    let rc = open_repo(repo)?;
    let store = Store::open_existing(rc.layout.clone())?;
    let row = store.run(run_id)?;
    if row.state == RunState::Completed {
        return Err(RunError::NothingToResume { run: run_id.into() });
    }
    let lock = lock_run(&store.layout, run_id)?;
    let loaded = stored_plan(&store.layout, run_id)?;
    let stored: StoredOptions = serde_json::from_value(row.options.clone()).unwrap_or_default();
    let how = Invocation {
        repo: rc.info.main_workdir.clone(),
        resuming: true,
    };
    coordinator::drive(coordinator::Start {
        store,
        run_id: run_id.into(),
        loaded,
        opts: stored,
        listener,
        how,
        lock,
    })
}

/// A run recorded RUNNING whose coordinator lock nobody holds: its
/// coordinator died (kill -9, power loss) and `mpw resume` continues it.
pub fn coordinator_gone(layout: &Layout, run: &RunRow) -> bool {
    // No lock file: no coordinator ever ran here (a run imported piece by piece).
    let lock = layout.run_lock(&run.id);
    run.state == RunState::Running && lock.exists() && !lock::is_held(&lock)
}

/// Hold the run's coordinator lock: one coordinator per run, and a crashed
/// one (whose lock the OS released) is recognised by `resume` and `cancel`.
fn lock_run(layout: &Layout, run_id: &str) -> Result<File> {
    let path = layout.run_lock(run_id);
    lock::try_acquire(&path)?.ok_or_else(|| RunError::RunLocked {
        run: run_id.into(),
        lock: path,
    })
}

/// The cpu slots of a finished run as its coordinator counted them: what
/// `integrate --gate-jobs` may use at most.
pub(crate) fn cpu_slots(loaded: &Loaded, row: &RunRow) -> usize {
    let stored: StoredOptions = serde_json::from_value(row.options.clone()).unwrap_or_default();
    coordinator::slots(loaded, &stored).cpu
}

/// The plan of a recorded run, as stored in its `plan.json`.
pub(crate) fn stored_plan(layout: &Layout, run_id: &str) -> Result<Loaded> {
    let path = layout.plan_json(run_id);
    let text = std::fs::read_to_string(&path).map_err(RunError::io(&path))?;
    Ok(plan::parse_str(&text, &path, LoadOptions::default())?)
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
                    let loaded = stored_plan(&store.layout, run_id)?;
                    let mut opts: StoredOptions =
                        serde_json::from_value(row.options.clone()).unwrap_or_default();
                    opts.grace_ms = grace.as_millis() as u64;
                    let ctx = RunCtx::load(&store, run_id, &loaded, &opts, rc.info.main_workdir)?;
                    recover::cancel_orphaned(&mut store, &ctx)?;
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    /// Which sibling files each file of src/runner imports (`super::x`),
    /// tests aside. Anything else named through `super::` lives in mod.rs.
    fn imports() -> BTreeMap<String, Vec<String>> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/runner");
        let mut files = BTreeMap::new();
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            if name != "mod" {
                files.insert(name, std::fs::read_to_string(&path).unwrap());
            }
        }
        let mut out = BTreeMap::new();
        for (name, text) in &files {
            let code = text.split("#[cfg(test)]").next().unwrap();
            let mut deps = Vec::new();
            for part in code.split("super::").skip(1) {
                let names: Vec<&str> = match part.strip_prefix('{') {
                    Some(list) => list.split('}').next().unwrap().split(',').collect(),
                    None => vec![part],
                };
                for n in names {
                    let n: String = n
                        .trim()
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    deps.push(n);
                }
            }
            out.insert(name.clone(), deps);
        }
        out
    }

    #[test]
    fn runner_files_import_no_cycle() {
        let graph = imports();
        for (file, deps) in &graph {
            for d in deps {
                assert!(
                    graph.contains_key(d),
                    "runner/{file}.rs takes `{d}` from runner/mod.rs, which imports it back"
                );
            }
        }
        // Peel off files that import nothing left: a cycle is what remains.
        let mut left = graph.clone();
        while let Some(leaf) = left
            .iter()
            .find(|(_, deps)| deps.iter().all(|d| !left.contains_key(d)))
            .map(|(f, _)| f.clone())
        {
            left.remove(&leaf);
        }
        assert!(left.is_empty(), "import cycle among {:?}", left.keys());
        // Executors know nothing of the coordinator.
        for exec in ["attempt", "provision"] {
            assert!(
                !graph[exec]
                    .iter()
                    .any(|d| d == "coordinator" || d == "ledger")
            );
        }
    }
}
