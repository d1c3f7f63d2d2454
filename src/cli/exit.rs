//! The one place where results and errors become exit codes (0 ok, 1 work
//! failed, 2 usage or invalid plan, 3 environment, 130 interrupted; see
//! docs/ARCHITECTURE.md, "Module map").

use crate::error::LayerError;
use crate::export::ExportError;
use crate::git::GitError;
use crate::import::ImportError;
use crate::integrate::Report;
use crate::model::RunState;
use crate::plan::PlanError;
use crate::runner::{Finished, RunError};
use crate::store::StoreError;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    /// The work ran but something failed.
    Failed = 1,
    /// Usage error or invalid plan; nothing was touched.
    Usage = 2,
    /// Environment problem: not a repository, lock held, dirty target, I/O.
    Env = 3,
    Interrupted = 130,
}

impl Exit {
    /// How a run (or resume) ended.
    pub fn of_run(fin: &Finished) -> Exit {
        match fin.state {
            _ if fin.interrupted => Exit::Interrupted,
            RunState::Completed => Exit::Ok,
            _ => Exit::Failed,
        }
    }

    /// A conflict or a gate failure: the work needs a look.
    pub fn of_integration(r: &Report) -> Exit {
        if r.failed() { Exit::Failed } else { Exit::Ok }
    }

    /// Bad arguments; `--help` and `--version` are no error.
    pub fn of_clap(e: &clap::Error) -> Exit {
        if e.use_stderr() {
            Exit::Usage
        } else {
            Exit::Ok
        }
    }

    fn of_git(e: &GitError) -> Exit {
        match e {
            GitError::UnknownRev { .. } | GitError::NoCommits { .. } => Exit::Usage,
            _ => Exit::Env,
        }
    }

    /// A bad plan is a usage error; git and the store say for themselves.
    fn of_layer(e: &LayerError) -> Exit {
        match e {
            LayerError::Plan(_) => Exit::Usage,
            LayerError::Git(e) => Exit::of_git(e),
            LayerError::Store(e) => Exit::of_store(e),
        }
    }

    fn of_store(e: &StoreError) -> Exit {
        match e {
            StoreError::RunExists(_)
            | StoreError::NoSuchRun(_)
            | StoreError::NoRuns
            | StoreError::NoSuchTask { .. } => Exit::Usage,
            _ => Exit::Env,
        }
    }

    /// A foreign or broken piece is bad input (nothing merged); a missing
    /// upstream or a branch that disagrees with its records is the environment.
    fn of_import(e: &ImportError) -> Exit {
        match e {
            ImportError::Layer(e) => Exit::of_layer(e),
            ImportError::Refused(_) => Exit::Usage,
            ImportError::Run(e) => Exit::of_run_error(e),
            ImportError::Env(_) => Exit::Env,
        }
    }

    fn of_export(e: &ExportError) -> Exit {
        match e {
            ExportError::Layer(e) => Exit::of_layer(e),
            ExportError::Usage(_) => Exit::Usage,
            ExportError::Env(_) => Exit::Env,
        }
    }

    fn of_run_error(e: &RunError) -> Exit {
        use RunError as R;
        match e {
            R::Layer(e) => Exit::of_layer(e),
            R::Import(e) => Exit::of_import(e),
            R::BadTask { .. }
            | R::BadWorkstream { .. }
            | R::BadRunId { .. }
            | R::BadBase { .. }
            | R::NoSuchWorkstream { .. }
            | R::NoSuchWorkstreamInRun { .. }
            | R::NothingToPropose { .. }
            | R::NothingToResume { .. }
            | R::NotFinished { .. }
            | R::NoTarget { .. }
            | R::NoSuchBranch { .. }
            | R::NotStacked { .. } => Exit::Usage,
            R::Io(_)
            | R::NoDirectory { .. }
            | R::WorktreeInTheWay { .. }
            | R::RunLocked { .. }
            | R::StillRunning { .. }
            | R::IntegrationLocked { .. }
            | R::DirtyTarget { .. }
            | R::DirtyWorktree { .. }
            | R::UntrackedInTheWay { .. }
            | R::TargetKeptMoving { .. }
            | R::TargetGone { .. }
            | R::BadRecord { .. }
            | R::Runtime { .. }
            | R::Env(_) => Exit::Env,
            R::Interrupted(_) => Exit::Interrupted,
        }
    }
}

/// An error on its way to the user: what to print and how to exit.
#[derive(Debug)]
pub struct CliError {
    pub exit: Exit,
    pub message: String,
}

impl CliError {
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        CliError {
            exit,
            message: message.into(),
        }
    }
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(Exit::Usage, message)
    }
    pub fn env(message: impl Into<String>) -> Self {
        Self::new(Exit::Env, message)
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<PlanError> for CliError {
    fn from(e: PlanError) -> Self {
        CliError::usage(e.to_string())
    }
}

/// Each module's error: its message, with the exit code `Exit::of_*` gives it.
macro_rules! from_error {
    ($($error:ty => $exit:ident),+ $(,)?) => {$(
        impl From<$error> for CliError {
            fn from(e: $error) -> Self {
                CliError::new(Exit::$exit(&e), e.to_string())
            }
        }
    )+};
}

from_error!(
    GitError => of_git,
    StoreError => of_store,
    ImportError => of_import,
    ExportError => of_export,
    RunError => of_run_error,
);

pub type CliResult = Result<Exit, CliError>;
