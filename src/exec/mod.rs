//! Spawning task commands: shell or argv, own process group (job object on
//! Windows), output streamed to files and scanned by guardrails, timeouts and
//! cancellation that end the whole process tree.
//!
//! - `spawn`: starting the tree, timeouts, TERM / grace / KILL;
//! - `capture`: output to files and the guardrails that scan it;
//! - `proc`: the `.proc` files that let `mpw resume` end what a crashed run left;
//! - `os`: all that differs between Unix and Windows, one file per platform.
//!
//! See docs/ARCHITECTURE.md for where this sits in a run.

mod capture;
mod os;
mod proc;
mod pwsh;
mod spawn;
#[cfg(all(test, unix))]
mod tests;
#[cfg(all(test, windows))]
mod tests_windows;
mod worker;

pub use proc::{end_leftovers, is_alive, kill_stale, process_start_time};
pub use spawn::{run, run_with};
pub use worker::{Health, Request, Worker, WorkerSpec};

use crate::plan::Shell;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What to start.
#[derive(Debug, Clone)]
pub enum Program {
    /// Through a shell: `sh -c SCRIPT`, `bash -c`,
    /// `pwsh -NoLogo -NoProfile -NonInteractive -EncodedCommand`, `cmd /D /S /C`.
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

/// One command to run, and how.
#[derive(Debug, Clone)]
pub struct Spec {
    /// What to start.
    pub program: Program,
    /// Working directory; must exist.
    pub cwd: PathBuf,
    /// Added to the inherited environment.
    pub env: Vec<(String, String)>,
    /// After this long the tree is stopped and the outcome is `TimedOut`.
    pub timeout: Option<Duration>,
    /// Between TERM and KILL.
    pub grace: Duration,
    /// File that receives stdout (created with its folders); the `.proc`
    /// file is written beside it while the command runs.
    pub stdout: PathBuf,
    /// File that receives stderr.
    pub stderr: PathBuf,
    /// Rules applied to both streams as they are captured.
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
    /// A worker failed the request itself (exited, answered garbage, did not start).
    Broken(String),
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
    /// The timeout that applied (for the "timed out after Ns" verdict).
    pub timeout: Option<Duration>,
    /// Writing the captured output failed (disk full, ...): the output files
    /// are incomplete. Guardrails were still applied to everything read.
    pub output_error: Option<String>,
}

/// The task's verdict from its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Succeeded,
    Failed(String),
    Quarantined(String),
    Cancelled,
}

impl Outcome {
    /// The outcome of a command that never started (could not, or was
    /// cancelled first): no process, no output scanned.
    pub(crate) fn unstarted(
        ending: Ending,
        exit_code: Option<i32>,
        start: Instant,
        spec: &Spec,
    ) -> Self {
        Outcome {
            ending,
            exit_code,
            fail_match: None,
            quarantine_match: None,
            missing_require: Vec::new(),
            proc: None,
            duration: start.elapsed(),
            timeout: spec.timeout,
            output_error: None,
        }
    }

    /// The outcome of a process that ran, with what the guardrails found in
    /// its output.
    fn ran(
        ending: Ending,
        exit_code: Option<i32>,
        start: Instant,
        spec: &Spec,
        proc: ProcInfo,
        captured: capture::Captured,
    ) -> Self {
        Outcome {
            ending,
            exit_code,
            fail_match: captured.fail_match,
            quarantine_match: captured.quarantine_match,
            missing_require: captured.missing_require,
            proc: Some(proc),
            duration: start.elapsed(),
            timeout: spec.timeout,
            output_error: captured.output_error,
        }
    }

    /// The task's verdict. Order: quarantine_on match, cancellation,
    /// a log that could not be written, fail_on match, how the process ended, missing `require` patterns.
    pub fn verdict(&self) -> Verdict {
        if let Some((pat, line)) = &self.quarantine_match {
            return Verdict::Quarantined(format!("output matched quarantine_on /{pat}/: {line}"));
        }
        if self.ending == Ending::Cancelled {
            return Verdict::Cancelled;
        }
        // An incomplete log is no record of what the task did.
        if let Some(e) = &self.output_error {
            return Verdict::Failed(e.clone());
        }
        if let Some((pat, line)) = &self.fail_match {
            return Verdict::Failed(format!("output matched fail_on /{pat}/: {line}"));
        }
        match &self.ending {
            Ending::Exited(0) => {}
            Ending::Exited(code) => return Verdict::Failed(format!("exited with code {code}")),
            Ending::Signalled(sig) => return Verdict::Failed(format!("killed by signal {sig}")),
            Ending::TimedOut => {
                let secs = self.timeout.map(|t| t.as_secs_f64()).unwrap_or(0.0);
                return Verdict::Failed(format!("timed out after {secs}s"));
            }
            Ending::SpawnFailed(reason) | Ending::Broken(reason) => {
                return Verdict::Failed(reason.clone());
            }
            Ending::Cancelled => unreachable!("handled above"),
        }
        if !self.missing_require.is_empty() {
            let pats: Vec<String> = self
                .missing_require
                .iter()
                .map(|p| format!("/{p}/"))
                .collect();
            return Verdict::Failed(format!("output never matched require {}", pats.join(", ")));
        }
        Verdict::Succeeded
    }
}

/// Sh on Unix, Pwsh on Windows.
/// Keep a long-lived coordinator's memory small: call before its runtime's
/// threads start (docs/ARCHITECTURE.md, "Per-task cost").
pub fn one_malloc_arena() {
    os::one_malloc_arena()
}

/// Free memory back to the system (see the unix version for why).
pub fn release_free_memory() {
    os::release_free_memory()
}

pub fn default_shell() -> Shell {
    os::DEFAULT_SHELL
}

/// The program and arguments actually spawned for `program` (shell resolved).
/// A `pwsh` script goes wrapped and encoded (see `pwsh`); on Windows the
/// `cmd` script is passed verbatim (raw, in quotes after `/D /S /C`).
pub fn command_line(program: &Program) -> (String, Vec<String>) {
    match program {
        Program::Argv(argv) => match argv.split_first() {
            Some((prog, args)) => (prog.clone(), args.to_vec()),
            None => (String::new(), Vec::new()),
        },
        Program::Shell { shell, script } => {
            let (prog, flags): (String, &[&str]) = match shell {
                Shell::Sh => ("sh".into(), &["-c"]),
                Shell::Bash => ("bash".into(), &["-c"]),
                Shell::Pwsh => {
                    let mut args: Vec<String> = pwsh::FLAGS.map(String::from).to_vec();
                    args.push(pwsh::encode(&pwsh::wrap(script)));
                    return (os::pwsh_program(), args);
                }
                // /D: no AutoRun commands from the registry.
                Shell::Cmd => ("cmd".into(), &["/D", "/S", "/C"]),
            };
            let mut args: Vec<String> = flags.iter().map(|s| s.to_string()).collect();
            args.push(script.clone());
            (prog, args)
        }
    }
}
