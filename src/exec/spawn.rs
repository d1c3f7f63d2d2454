//! Starting a command as its own process tree (process group on Unix, job
//! object on Windows) and ending it: by itself, on timeout, on cancel
//! (TERM, grace, KILL), or when the caller drops the future.

use super::capture::{self, Pumps};
use super::{Cancel, Ending, Outcome, ProcInfo, Spec, command_line, os, proc};
use crate::slots::Jobserver;
use process_wrap::tokio::{ChildWrapper, CommandWrap, KillOnDrop};
use std::ffi::{OsStr, OsString};
use std::io;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::debug;

/// After the main process exited by itself: how long background processes may
/// keep the output pipes open before the group is killed.
const PIPE_DRAIN: Duration = Duration::from_secs(1);
/// After KILL: how long to wait for the pipes to close before giving up on
/// them (a process that escaped the group may still hold them).
const PIPE_AFTER_KILL: Duration = Duration::from_secs(2);

/// The spawned process tree: the leader plus its process group (job object on Windows).
/// Dropping it while armed kills the whole tree.
struct Tree {
    child: Box<dyn ChildWrapper>,
    pid: u32,
    armed: bool,
}

impl Tree {
    /// Wait for the leader only (not for the rest of the group / job).
    async fn wait_leader(&mut self) -> io::Result<ExitStatus> {
        // SAFETY: we only wait on the native child; the wrappers (process group,
        // job object) keep no state that this disturbs, and we never call their
        // own `wait` afterwards. The tree is ended through `terminate`/`kill`.
        match unsafe { self.child.try_inner_child_mut() } {
            Some(child) => child.wait().await,
            None => self.child.wait().await,
        }
    }

    /// Ask the whole tree to stop (TERM to the group; on Windows there is no
    /// graceful stop for a job, so this is the same as `kill`).
    fn terminate(&mut self) {
        os::stop_tree(self.child.as_mut(), self.pid, false);
    }

    fn kill(&mut self) {
        os::stop_tree(self.child.as_mut(), self.pid, true);
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        if self.armed {
            self.kill();
        }
    }
}

/// The file of a task's shell on the task's `PATH`, looked up once per
/// `PATH` value and checked still there at each use: a spawn by name walks
/// `PATH` with one failed `exec` per entry before the shell's, and forks
/// when the task sets its own `PATH` (docs/ARCHITECTURE.md, "Per-task
/// cost"). A shell installed mid-run in an earlier `PATH` entry is not seen.
fn shell_file(prog: &str, spec: &Spec) -> Option<PathBuf> {
    // (PATH, shell, file): a run sees one or two PATH values.
    static FOUND: Mutex<Vec<(OsString, String, PathBuf)>> = Mutex::new(Vec::new());
    if !matches!(spec.program, super::Program::Shell { .. }) {
        return None;
    }
    let own;
    let path: &OsStr = match spec.env.iter().rfind(|(k, _)| k == "PATH") {
        Some((_, v)) => v.as_ref(),
        None => {
            own = std::env::var_os("PATH")?;
            &own
        }
    };
    let mut found = FOUND.lock().unwrap_or_else(|e| e.into_inner());
    let known = found.iter().position(|(p, s, _)| p == path && s == prog);
    if let Some(i) = known
        && found[i].2.is_file()
    {
        return Some(found[i].2.clone());
    }
    let file = os::find_on_path(prog, path)?;
    match known {
        Some(i) => found[i].2 = file.clone(),
        None => found.push((path.to_owned(), prog.to_string(), file.clone())),
    }
    Some(file)
}

/// Why `prog` cannot be started in `spec.cwd`, found before trying.
fn check_startable(spec: &Spec, prog: &str) -> Result<(), String> {
    if prog.is_empty() {
        return Err("could not start ``: empty command".into());
    }
    std::fs::metadata(&spec.cwd)
        .and_then(|m| {
            if m.is_dir() {
                Ok(())
            } else {
                Err(io::Error::other("not a directory"))
            }
        })
        .map_err(|e| {
            format!(
                "could not start `{prog}`: working directory `{}`: {e}",
                spec.cwd.display()
            )
        })
}

/// Run one command to its end. `cancel` is watched: Graceful → TERM to the
/// whole process group, `spec.grace`, then KILL; Immediate → KILL the group now.
/// `on_start` is called once right after spawn with the process identity.
///
/// Cancellation already requested before the start: nothing is spawned, the
/// outcome is `Cancelled`. Dropping the returned future kills the process tree.
pub async fn run(
    spec: &Spec,
    cancel: watch::Receiver<Cancel>,
    on_start: impl FnOnce(ProcInfo),
) -> Outcome {
    run_with(spec, None, cancel, on_start).await
}

/// `run`, the command given the run's jobserver when `jobserver` is set (a
/// cpu-class task), else none, not even the one mpw was started under.
pub async fn run_with(
    spec: &Spec,
    jobserver: Option<&Jobserver>,
    mut cancel: watch::Receiver<Cancel>,
    on_start: impl FnOnce(ProcInfo),
) -> Outcome {
    let start = Instant::now();
    let spawn_failed =
        |reason| Outcome::unstarted(Ending::SpawnFailed(reason), Some(127), start, spec);
    let (prog, args) = command_line(&spec.program);

    let (out_file, err_file) = match capture::create_outputs(spec) {
        Ok(files) => files,
        Err(why) => return spawn_failed(why),
    };
    if *cancel.borrow_and_update() != Cancel::No {
        return Outcome::unstarted(Ending::Cancelled, None, start, spec);
    }
    if let Err(why) = check_startable(spec, &prog) {
        return spawn_failed(why);
    }

    let mut cmd = match shell_file(&prog, spec) {
        Some(file) => os::program_named(&file, &prog),
        None => tokio::process::Command::new(&prog),
    };
    os::add_args(&mut cmd, &spec.program, &args);
    if jobserver.is_none() {
        crate::slots::withhold(cmd.as_std_mut());
    }
    cmd.current_dir(&spec.cwd)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(os::null_stdin())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // After the plan's env: the jobserver's MAKEFLAGS win; a task without the
    // jobserver keeps what its plan sets.
    if let Some(js) = jobserver {
        js.configure(cmd.as_std_mut());
    }
    let proc_path = spec.stdout.with_extension("proc");
    let proc_file = os::mark_child(&mut cmd, &proc_path);
    let mut wrap = CommandWrap::from(cmd);
    os::contain(&mut wrap);
    wrap.wrap(KillOnDrop);

    let mut child = match wrap.spawn() {
        Ok(c) => c,
        Err(e) => {
            proc::forget(&proc_path);
            return spawn_failed(format!("could not start `{prog}`: {e}"));
        }
    };
    let pid = child.id().unwrap_or(0);
    let info = ProcInfo {
        pid,
        pgid: os::group_id(pid),
        start_time: os::process_start_time(pid),
    };
    debug!(pid, program = %prog, cwd = %spec.cwd.display(), "task started");
    // Before anything else: a coordinator killed before it records the pid
    // still leaves the way to end this process.
    if let Some(name) = spec.stdout.file_stem() {
        crate::fault::kill_point(format_args!("kill-before-proc:{}", name.to_string_lossy()));
    }
    proc::record(&proc_path, proc_file, &info);

    let (stop_tx, stop_rx) = watch::channel(false);
    let pumps = Pumps::start(
        (child.stdout().take(), out_file, &spec.stdout),
        (child.stderr().take(), err_file, &spec.stderr),
        &spec.guards,
        stop_rx,
    );
    let mut tree = Tree {
        child,
        pid,
        armed: true,
    };
    on_start(info);

    // Phase 1: until the leader exits; timeout and cancel stop the tree.
    let far = tokio::time::Instant::now() + Duration::from_secs(100 * 365 * 86_400);
    let deadline = spec.timeout.map(|t| tokio::time::Instant::now() + t);
    let mut stopped: Option<Ending> = None;
    let mut kill_at: Option<tokio::time::Instant> = None;
    let mut killed = false;
    let mut cancel_open = true;

    let status = loop {
        if cancel_open {
            match *cancel.borrow_and_update() {
                Cancel::No => {}
                Cancel::Graceful => {
                    if stopped.is_none() {
                        debug!(pid, "cancel: terminating");
                        stopped = Some(Ending::Cancelled);
                        tree.terminate();
                        kill_at = Some(tokio::time::Instant::now() + spec.grace);
                    }
                }
                Cancel::Immediate => {
                    stopped.get_or_insert(Ending::Cancelled);
                    if !killed {
                        debug!(pid, "cancel: killing");
                        tree.kill();
                        killed = true;
                    }
                }
            }
        }
        tokio::select! {
            biased;
            st = tree.wait_leader() => break st,
            r = cancel.changed(), if cancel_open => {
                if r.is_err() {
                    cancel_open = false;
                }
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or(far)), if deadline.is_some() && stopped.is_none() => {
                debug!(pid, "timeout: terminating");
                stopped = Some(Ending::TimedOut);
                tree.terminate();
                kill_at = Some(tokio::time::Instant::now() + spec.grace);
            }
            _ = tokio::time::sleep_until(kill_at.unwrap_or(far)), if kill_at.is_some() && !killed => {
                debug!(pid, "grace over: killing");
                tree.kill();
                killed = true;
            }
        }
    };

    // Phase 2: the leader is gone; collect the output. Whatever else of the
    // group still holds the pipes gets until the end of the grace period (when
    // stopping) or a short drain time (after a normal exit), then KILL.
    let leftover_deadline = match (stopped.is_some(), kill_at) {
        (true, Some(at)) => at,
        _ => tokio::time::Instant::now() + PIPE_DRAIN,
    };
    let mut force_at = killed.then(|| tokio::time::Instant::now() + PIPE_AFTER_KILL);
    let collected = pumps.finish(&spec.guards);
    tokio::pin!(collected);
    let captured = loop {
        tokio::select! {
            biased;
            c = &mut collected => break c,
            _ = tokio::time::sleep_until(leftover_deadline), if !killed => {
                debug!(pid, "output still open after the main process ended: killing the group");
                tree.kill();
                killed = true;
                force_at = Some(tokio::time::Instant::now() + PIPE_AFTER_KILL);
            }
            _ = tokio::time::sleep_until(force_at.unwrap_or(far)), if force_at.is_some() => {
                debug!(pid, "output pipes held by an escaped process: giving up on them");
                let _ = stop_tx.send(true);
                force_at = None;
            }
            r = cancel.changed(), if cancel_open => {
                if r.is_err() {
                    cancel_open = false;
                } else if *cancel.borrow_and_update() == Cancel::Immediate && !killed {
                    tree.kill();
                    killed = true;
                    force_at = Some(tokio::time::Instant::now() + PIPE_AFTER_KILL);
                }
            }
        }
    };
    // Nothing of the task outlives it (background processes that closed their output).
    tree.kill();
    tree.armed = false;
    drop(tree);
    proc::forget(&proc_path);

    let (ending, exit_code) = match (stopped, status) {
        (Some(ending), _) => (ending, None),
        (None, Ok(st)) => exit_ending(st),
        (None, Err(e)) => {
            debug!(pid, "waiting for the task failed: {e}");
            (Ending::Exited(-1), Some(-1))
        }
    };
    let outcome = Outcome::ran(ending, exit_code, start, spec, info, captured);
    debug!(pid, ending = ?outcome.ending, "task ended");
    outcome
}

fn exit_ending(status: ExitStatus) -> (Ending, Option<i32>) {
    if let Some(code) = status.code() {
        return (Ending::Exited(code), Some(code));
    }
    if let Some(sig) = os::exit_signal(&status) {
        return (Ending::Signalled(sig), None);
    }
    (Ending::Exited(-1), Some(-1))
}
