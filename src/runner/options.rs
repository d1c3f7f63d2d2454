//! What a run was asked to do, how it is started and how it ended: shared by
//! the runner's files, which import it from here (never from `runner/mod.rs`).

use crate::model::{RunState, TaskState};
use crate::plan::{LoadOptions, Plan, Shell};
use std::path::PathBuf;
use std::time::Duration;

/// What `mpw run` was asked to do.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub plan: PathBuf,
    pub repo: Option<PathBuf>,
    pub max_concurrency: Option<usize>,
    pub workstreams: Vec<String>,
    pub fail_fast: bool,
    /// How the plan is read.
    pub load: LoadOptions,
    /// Between TERM and KILL when stopping tasks.
    pub grace: Duration,
    /// Overrides the plan's `run_id`.
    pub run_id: Option<String>,
    /// Overrides the plan's `base`.
    pub base: Option<String>,
    /// Take the selected workstreams' upstreams from records and a remote
    /// instead of running them (a CI runner per workstream).
    pub upstream: Option<Upstream>,
}

/// Where the upstreams of `--workstream` come from on a CI runner.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Remote their branches were pushed to.
    pub remote: String,
    /// Directories holding their pieces (see `crate::import`).
    pub records: Vec<PathBuf>,
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
