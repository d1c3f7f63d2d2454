//! Spawning task commands: shell or argv, own process group (job object on
//! Windows), output streamed to files and scanned by guardrails, timeouts and
//! cancellation that end the whole process tree.

use crate::plan::Shell;
use std::path::PathBuf;
use std::time::Duration;

/// What to start.
#[derive(Debug, Clone)]
pub enum Program {
    /// Through a shell: `sh -c SCRIPT`, `bash -c`, `pwsh -NoProfile -Command`, `cmd /C`.
    Shell { shell: Shell, script: String },
    /// Program and arguments, no shell.
    Argv(Vec<String>),
}

/// Output rules, compiled (regexes match bytes, line by line over stdout and stderr).
#[derive(Debug, Clone, Default)]
pub struct Guards {
    pub fail_on: Vec<regex::bytes::Regex>,
    pub quarantine_on: Vec<regex::bytes::Regex>,
    pub require: Vec<regex::bytes::Regex>,
}

#[derive(Debug, Clone)]
pub struct Spec {
    pub program: Program,
    pub cwd: PathBuf,
    /// Added to the inherited environment.
    pub env: Vec<(String, String)>,
    pub timeout: Option<Duration>,
    /// Between TERM and KILL.
    pub grace: Duration,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    pub guards: Guards,
}

/// How hard to stop running work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Cancel {
    #[default]
    No,
    /// TERM, grace period, KILL.
    Graceful,
    /// KILL now.
    Immediate,
}

/// Identity of a spawned process, recorded so `mpw resume` can tell whether
/// a process of a crashed coordinator is still alive and still ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcInfo {
    pub pid: u32,
    /// Process group id (Unix); equals pid.
    pub pgid: Option<i64>,
    /// Start time of the process as the OS reports it (Linux: clock ticks since boot).
    pub start_time: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    Exited(i32),
    /// Killed by a signal that we did not send (Unix).
    Signalled(i32),
    TimedOut,
    Cancelled,
    /// Could not start; exit code 127.
    SpawnFailed(String),
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub ending: Ending,
    /// Exit code, 127 when it could not start, None when killed.
    pub exit_code: Option<i32>,
    /// First `fail_on` match: (pattern, matching line).
    pub fail_match: Option<(String, String)>,
    /// First `quarantine_on` match: (pattern, matching line).
    pub quarantine_match: Option<(String, String)>,
    /// `require` patterns that never matched.
    pub missing_require: Vec<String>,
    pub proc: Option<ProcInfo>,
    pub duration: Duration,
}

/// The task's verdict from its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Succeeded,
    Failed(String),
    Quarantined(String),
    Cancelled,
}
