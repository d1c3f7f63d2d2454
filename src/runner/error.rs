//! The runner's error: what went wrong, with what it concerns (plan, task,
//! path), so that the CLI can choose the exit code in one place.

use crate::error::{IoError, LayerError};
use crate::model::RunState;
use std::path::{Path, PathBuf};

/// Why `run`, `resume`, `cancel`, `integrate` or `clean` stopped. The CLI
/// maps each variant to its exit code in one place (`cli::exit`).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Layer(#[from] LayerError),
    /// Records of upstream workstreams (`mpw run --upstream-from`).
    #[error(transparent)]
    Import(#[from] crate::import::ImportError),

    // Bad input the user can fix; nothing was touched.
    #[error("task {ws}/{task}: {problem}")]
    BadTask {
        ws: String,
        task: String,
        problem: String,
    },
    #[error("workstream {ws}: {problem}")]
    BadWorkstream { ws: String, problem: String },
    #[error("--run-id {id:?}: {problem}")]
    BadRunId { id: String, problem: String },
    #[error("{}: base {base:?} does not resolve to a commit in {}", plan.display(), repo.display())]
    BadBase {
        plan: PathBuf,
        base: String,
        repo: PathBuf,
    },
    #[error("--workstream {name}: no such workstream in {} (it has: {})", plan.display(), known.join(", "))]
    NoSuchWorkstream {
        name: String,
        plan: PathBuf,
        known: Vec<String>,
    },
    #[error("--workstream {name}: no such workstream in run {run}")]
    NoSuchWorkstreamInRun { name: String, run: String },
    #[error(
        "run {run} has no COMPLETED or INTEGRATED workstream to prepare a PR for; name one with --workstream"
    )]
    NothingToPropose { run: String },
    #[error("run {run} already COMPLETED; nothing to resume")]
    NothingToResume { run: String },
    #[error("run {run} is {state}; integrate it when it has finished")]
    NotFinished { run: String, state: RunState },
    #[error("run {run} did not start from a branch; say which one with --into BRANCH")]
    NoTarget { run: String },
    #[error("--into {branch}: no such branch")]
    NoSuchBranch { branch: String },
    #[error(
        "branch {branch} was deleted while this integration waited for the lock; nothing was changed"
    )]
    TargetGone { branch: String },

    // The machine or repository is not in a state to run.
    /// Also a lock file that could not be opened or locked.
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("{}: no such directory", path.display())]
    NoDirectory { path: PathBuf },
    #[error("workstream {ws}: worktree path {} already exists and is not mpw's; move it away or set globals.worktree_root", path.display())]
    WorktreeInTheWay { ws: String, path: PathBuf },
    #[error("run {run} is being worked on by another mpw process right now (lock {})", lock.display())]
    RunLocked { run: String, lock: PathBuf },
    #[error("run {run} is still running; cancel it first (mpw cancel {run})")]
    StillRunning { run: String },
    #[error("another mpw integrate holds the lock {} (--no-wait)", lock.display())]
    IntegrationLocked { lock: PathBuf },
    #[error("{branch} is checked out in {} and it has uncommitted changes ({}{}); commit or stash them first, nothing was merged",
        worktree.display(), paths.join(", "), if *more { ", ..." } else { "" })]
    DirtyTarget {
        branch: String,
        worktree: PathBuf,
        /// The first twenty; `more` when there are others.
        paths: Vec<String>,
        more: bool,
    },
    #[error("workstream {ws}: its worktree {} has uncommitted changes ({}{}); commit or stash them first, nothing was restacked",
        worktree.display(), paths.join(", "), if *more { ", ..." } else { "" })]
    DirtyWorktree {
        ws: String,
        worktree: PathBuf,
        /// The first twenty; `more` when there are others.
        paths: Vec<String>,
        more: bool,
    },
    #[error(
        "workstream {ws} of run {run} stacks on no other workstream (no depends_on); there is nothing to restack it onto"
    )]
    NotStacked { ws: String, run: String },
    #[error("merging {ws} would overwrite untracked file(s) in {}: {}; move them away and run mpw integrate again ({into} was not moved for it)",
        worktree.display(), paths.join(", "))]
    UntrackedInTheWay {
        ws: String,
        worktree: PathBuf,
        paths: Vec<String>,
        into: String,
    },
    #[error("{into} kept moving while merging {ws}; try again")]
    TargetKeptMoving { into: String, ws: String },
    #[error("run {run}: {problem}")]
    BadRecord { run: String, problem: String },
    /// Anything else in the environment (used by `pr` for external tools).
    #[error("{0}")]
    Env(String),
    /// The async runtime or the signal handlers could not be set up.
    #[error("{what}: {source}")]
    Runtime {
        what: &'static str,
        source: std::io::Error,
    },

    /// Ctrl-C or SIGTERM stopped it; what it had not finished is unchanged.
    #[error("{0}")]
    Interrupted(String),
}

crate::error::from_layers!(RunError);

impl RunError {
    pub(crate) fn runtime(what: &'static str) -> impl FnOnce(std::io::Error) -> RunError {
        move |source| RunError::Runtime { what, source }
    }

    pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RunError + '_ {
        move |source| {
            RunError::Io(IoError {
                path: path.to_path_buf(),
                source,
            })
        }
    }
}

pub(crate) type Result<T, E = RunError> = std::result::Result<T, E>;
