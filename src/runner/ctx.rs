//! What the coordinator hands to the executors (attempts, provisioning) and
//! what they send back. Executors import from here, never from the
//! coordinator (see docs/ARCHITECTURE.md, "Module map").

use super::error::{Result, RunError};
use super::options::{StoredOptions, plan_shell};
use crate::exec::{Guards, ProcInfo, Program, Verdict};
use crate::git::{IgnoreRules, Oid};
use crate::plan::Loaded;
use crate::plan::{Plan, Shell, Task, TaskClass, Workstream};
use crate::store::{Layout, Store, WsRow};
use globset::{Glob, GlobSet, GlobSetBuilder};
use regex::bytes::Regex;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

fn bad_task(w: &Workstream, t: &Task, problem: String) -> RunError {
    RunError::BadTask {
        ws: w.id.clone(),
        task: t.id.clone(),
        problem,
    }
}

fn bad_ws(w: &Workstream, problem: String) -> RunError {
    RunError::BadWorkstream {
        ws: w.id.clone(),
        problem,
    }
}

/// The index of each pool by name, for the tasks that name one.
fn pool_index(plan: &Plan, name: &str) -> Option<usize> {
    plan.globals.workers.keys().position(|k| k == name)
}

/// The slot class of a pool's requests (default cpu).
fn pool_class(plan: &Plan, name: &str) -> TaskClass {
    plan.globals
        .workers
        .get(name)
        .and_then(|w| w.class)
        .unwrap_or(TaskClass::Cpu)
}

/// Everything fixed for the run's lifetime, shared with attempts.
pub(crate) struct RunCtx {
    pub run_id: String,
    pub repo: PathBuf,
    pub layout: Layout,
    pub base: Oid,
    pub grace: Duration,
    pub ws: Vec<WsCtx>,
    pub tasks: Vec<TaskCtx>,
    /// Given to the tasks whose `jobserver` is true (see `crate::slots`).
    pub jobserver: Option<crate::slots::Jobserver>,
    /// The main repository for provisioning, opened at the first one.
    worktrees: std::sync::OnceLock<crate::git::Worktrees>,
}

impl RunCtx {
    /// The context of a recorded run, from its rows and its stored plan.
    pub fn load(
        store: &Store,
        run_id: &str,
        loaded: &Loaded,
        opts: &StoredOptions,
        repo: PathBuf,
    ) -> Result<RunCtx> {
        let row = store.run(run_id)?;
        let plan = &loaded.plan;
        let base: Oid = row.base.parse().map_err(|_| RunError::BadRecord {
            run: run_id.into(),
            problem: format!("bad base commit {}", row.base),
        })?;
        let grace = Duration::from_millis(if opts.grace_ms == 0 {
            5000
        } else {
            opts.grace_ms
        });
        let ws_rows = store.workstreams(run_id)?;
        let shell = plan_shell(plan);
        // The plan's rules, made once for every workstream without its own.
        let mut shared: Option<Arc<IgnoreRules>> = None;
        let ws = plan
            .workstreams
            .iter()
            .enumerate()
            .map(|(i, w)| WsCtx::new(plan, w, i, &ws_rows[i], shell, &mut shared))
            .collect::<Result<_>>()?;
        let mut tasks = Vec::with_capacity(loaded.dag.tasks.len());
        for node in &loaded.dag.tasks {
            let w = &plan.workstreams[node.ws];
            tasks.push(TaskCtx::new(plan, w, &w.tasks[node.task], node.ws, shell)?);
        }
        Ok(RunCtx {
            run_id: run_id.into(),
            repo,
            layout: store.layout.clone(),
            base,
            grace,
            ws,
            tasks,
            jobserver: None,
            worktrees: std::sync::OnceLock::new(),
        })
    }

    /// No workstream is left to provision: the checkout's kept index and
    /// objects (up to 64 MiB) are not held for the rest of the run.
    pub fn forget_checkouts(&self) {
        if let Some(w) = self.worktrees.get() {
            w.forget_checkouts();
        }
    }

    /// The main repository for adding branches and worktrees, opened once
    /// per run (docs/ARCHITECTURE.md, "Provisioning").
    pub fn worktrees(&self) -> std::result::Result<&crate::git::Worktrees, crate::git::GitError> {
        if let Some(w) = self.worktrees.get() {
            return Ok(w);
        }
        let w = crate::git::Worktrees::open(&self.repo)?;
        Ok(self.worktrees.get_or_init(|| w))
    }
}

/// What executors report to the coordinator.
pub(crate) enum Msg {
    Started {
        task: usize,
        attempt: u32,
        proc: ProcInfo,
    },
    Finished {
        task: usize,
        attempt: u32,
        result: AttemptResult,
    },
    Provisioned {
        ws: usize,
        result: std::result::Result<Provisioned, String>,
    },
    /// A warm worker started, exited or was recycled.
    Worker(crate::model::EventData),
}

/// What a task runs: a process, or a request to a warm worker pool.
#[derive(Debug, Clone)]
pub(crate) enum Work {
    Process(Program),
    Worker { pool: usize, args: Vec<String> },
}

/// What a task needs to know for the whole run.
pub(crate) struct TaskCtx {
    pub ws: usize,
    pub id: String,
    pub work: Work,
    pub env: Vec<(String, String)>,
    pub cwd: Option<String>,
    pub timeout: Duration,
    pub retries: u32,
    pub class: TaskClass,
    pub read_only: bool,
    pub allow_failure: bool,
    pub guards: Guards,
    pub message: String,
    /// A cpu-class process task given the run's jobserver.
    pub jobserver: bool,
}

impl TaskCtx {
    pub fn new(plan: &Plan, w: &Workstream, t: &Task, ws: usize, shell: Shell) -> Result<Self> {
        let mut class = t.class;
        let work = match (&t.run, &t.argv, &t.worker) {
            (Some(script), None, None) => Work::Process(Program::Shell {
                shell,
                script: script.clone(),
            }),
            (None, Some(argv), None) => Work::Process(Program::Argv(argv.clone())),
            (None, None, Some(name)) => {
                let pool = pool_index(plan, name)
                    .ok_or_else(|| bad_task(w, t, format!("unknown worker `{name}`")))?;
                class = pool_class(plan, name);
                Work::Worker {
                    pool,
                    args: t.args.clone().unwrap_or_default(),
                }
            }
            _ => {
                let why = "needs exactly one of run, argv and worker".into();
                return Err(bad_task(w, t, why));
            }
        };
        let compile = |pats: &[String]| -> Result<Vec<Regex>> {
            pats.iter()
                .map(|p| Regex::new(p).map_err(|e| bad_task(w, t, format!("guardrail /{p}/: {e}"))))
                .collect()
        };
        let mut env: Vec<(String, String)> = plan.globals.env.clone().into_iter().collect();
        env.extend(w.env.clone());
        env.extend(t.env.clone());
        let title = t
            .name
            .clone()
            .unwrap_or_else(|| format!("Run task {}", t.id));
        let message = t
            .commit_message
            .clone()
            .unwrap_or_else(|| format!("{}: {title}", w.id));
        let jobserver = class == TaskClass::Cpu
            && matches!(work, Work::Process(_))
            && t.jobserver.or(plan.globals.jobserver).unwrap_or(true);
        Ok(TaskCtx {
            jobserver,
            ws,
            id: t.id.clone(),
            work,
            env,
            cwd: t.cwd.clone(),
            timeout: Duration::from_secs(t.timeout_s.or(plan.globals.timeout_s).unwrap_or(1800)),
            retries: t.retries.or(plan.globals.retries).unwrap_or(0),
            class,
            read_only: t.read_only,
            allow_failure: t.allow_failure,
            guards: Guards {
                fail_on: compile(&t.guardrails.fail_on)?,
                quarantine_on: compile(&t.guardrails.quarantine_on)?,
                require: compile(&t.guardrails.require)?,
            },
            message,
        })
    }
}

/// How an attempt's work was put away (see attempt.rs).
pub(crate) struct Settled {
    pub verdict: Verdict,
    /// The commit on the workstream's branch.
    pub commit: Option<Oid>,
    pub preserved_ref: Option<String>,
    /// Committed files look like build or cache output.
    pub hint: Option<String>,
}

impl Settled {
    /// Nothing committed, nothing kept.
    pub fn only(verdict: Verdict) -> Self {
        Settled {
            verdict,
            commit: None,
            preserved_ref: None,
            hint: None,
        }
    }
}

pub(crate) struct AttemptResult {
    pub settled: Settled,
    pub exit_code: Option<i32>,
    pub duration: Duration,
}

/// What is done in a new worktree before its tasks: files copied, then
/// commands run (see `provision.rs`).
pub(crate) struct WsSetup {
    /// Untracked files copied from the main worktree.
    pub copy: Vec<String>,
    /// The global commands, then the workstream's own.
    pub commands: Vec<String>,
    pub env: Vec<(String, String)>,
    pub shell: Shell,
    pub timeout: Duration,
}

/// What a workstream needs to know for its whole run.
pub(crate) struct WsCtx {
    pub id: String,
    pub branch: String,
    pub worktree: PathBuf,
    pub allowed: Option<GlobSet>,
    /// The plan's ignore rules (defaults, globals, the workstream's own).
    pub ignore: Arc<IgnoreRules>,
    pub setup: WsSetup,
    /// MPW_SLOT: the workstream's index.
    pub slot: usize,
    /// The worktree's repository, opened by the first task that needs it and
    /// kept until the workstream ends (docs/ARCHITECTURE.md, "Per-task cost").
    repo: std::sync::Mutex<Option<Arc<crate::git::Repo>>>,
}

impl WsCtx {
    pub fn new(
        plan: &Plan,
        w: &Workstream,
        slot: usize,
        row: &WsRow,
        shell: Shell,
        shared: &mut Option<Arc<IgnoreRules>>,
    ) -> Result<Self> {
        let allowed = match &w.allowed_paths {
            None => None,
            Some(globs) => {
                let mut b = GlobSetBuilder::new();
                for g in globs {
                    let glob =
                        Glob::new(g).map_err(|e| bad_ws(w, format!("allowed_paths {g:?}: {e}")))?;
                    b.add(glob);
                }
                Some(b.build().map_err(|e| bad_ws(w, e.to_string()))?)
            }
        };
        let ignore = match shared {
            Some(rules) if w.ignore.is_empty() => rules.clone(),
            _ => {
                let rules = Arc::new(
                    IgnoreRules::new(
                        plan.globals.ignore_defaults.unwrap_or(true),
                        plan.globals
                            .ignore
                            .iter()
                            .chain(&w.ignore)
                            .map(String::as_str),
                    )
                    .map_err(|e| bad_ws(w, e))?,
                );
                if w.ignore.is_empty() {
                    *shared = Some(rules.clone());
                }
                rules
            }
        };
        let mut env: Vec<(String, String)> = plan.globals.env.clone().into_iter().collect();
        env.extend(w.env.clone());
        Ok(WsCtx {
            id: w.id.clone(),
            branch: row.branch.clone(),
            worktree: PathBuf::from(&row.worktree),
            allowed,
            ignore,
            setup: WsSetup {
                copy: plan.globals.copy.clone(),
                commands: plan.globals.setup.iter().chain(&w.setup).cloned().collect(),
                env,
                shell,
                timeout: Duration::from_secs(plan.globals.timeout_s.unwrap_or(1800)),
            },
            slot,
            repo: std::sync::Mutex::new(None),
        })
    }

    /// The worktree's repository (opened once; only after provisioning).
    pub fn repo(&self) -> std::result::Result<Arc<crate::git::Repo>, crate::git::GitError> {
        let mut kept = self.repo.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = &*kept {
            return Ok(r.clone());
        }
        let r = Arc::new(crate::git::Repo::open(&self.worktree)?);
        *kept = Some(r.clone());
        Ok(r)
    }

    /// The repository as provisioning opened it, with the index it wrote.
    pub fn keep_repo(&self, repo: crate::git::Repo) {
        *self.repo.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(repo));
    }

    /// Let the repository go once the workstream has ended: a run of 100
    /// workstreams would otherwise keep 100 handles to its end.
    pub fn close_repo(&self) {
        self.repo.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// The `MPW_*` variables of a command in this workstream.
    pub fn mpw_env(&self, run_id: &str, task: &str, attempt: u32) -> Vec<(String, String)> {
        vec![
            ("MPW_RUN_ID".into(), run_id.into()),
            ("MPW_WORKSTREAM".into(), self.id.clone()),
            ("MPW_TASK".into(), task.into()),
            ("MPW_ATTEMPT".into(), attempt.to_string()),
            (
                "MPW_WORKTREE".into(),
                self.worktree.to_string_lossy().into_owned(),
            ),
            ("MPW_SLOT".into(), self.slot.to_string()),
        ]
    }
}

pub(crate) struct Provisioned {
    pub start_commit: Oid,
    pub baseline: Vec<String>,
    pub missing_copies: Vec<String>,
    /// A worktree was (re)created, not just found again.
    pub created: bool,
    /// The branch was created now (not found from an earlier invocation).
    pub fresh: bool,
}
