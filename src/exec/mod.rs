//! Spawning task commands: shell or argv, own process group (job object on
//! Windows), output streamed to files and scanned by guardrails, timeouts and
//! cancellation that end the whole process tree.

use crate::plan::Shell;
use process_wrap::tokio::{ChildWrapper, CommandWrap, KillOnDrop};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tracing::debug;

/// What to start.
#[derive(Debug, Clone)]
pub enum Program {
    /// Through a shell: `sh -c SCRIPT`, `bash -c`,
    /// `pwsh -NoLogo -NoProfile -NonInteractive -Command`, `cmd /S /C`.
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

impl ProcInfo {
    fn to_line(self) -> String {
        let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        format!(
            "{} {} {}\n",
            self.pid,
            opt(self.pgid.map(|g| g.to_string())),
            opt(self.start_time.map(|t| t.to_string()))
        )
    }

    fn from_line(line: &str) -> Option<ProcInfo> {
        let mut f = line.split_whitespace();
        let pid = f.next()?.parse().ok()?;
        let pgid = f.next()?.parse().ok();
        let start_time = f.next()?.parse().ok();
        Some(ProcInfo {
            pid,
            pgid,
            start_time,
        })
    }
}

/// `T2.1.out` → `T2.1.proc`: the identity of the process while it runs.
fn proc_file(stdout: &Path) -> PathBuf {
    stdout.with_extension("proc")
}

/// End the processes that a dead coordinator left running, found by the
/// `.proc` files in `dirs` (the log folders), and remove those files.
/// Returns how many were still alive.
pub fn end_leftovers(dirs: &[PathBuf], grace: Duration) -> usize {
    let mut ended = 0;
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for p in entries.flatten().map(|e| e.path()) {
            if p.extension().is_none_or(|x| x != "proc") {
                continue;
            }
            let info = std::fs::read_to_string(&p)
                .ok()
                .and_then(|t| ProcInfo::from_line(&t));
            if let Some(info) = info
                && kill_stale(&info, grace)
            {
                ended += 1;
            }
            let _ = std::fs::remove_file(&p);
        }
    }
    ended
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

/// Read buffer for each output pipe (the only per-stream memory besides the scan line).
const READ_BUF: usize = 64 * 1024;
/// Longest line scanned as one piece; longer lines are scanned in chunks of this size.
const MAX_SCAN_LINE: usize = 64 * 1024;
/// Matching lines kept in outcomes are cut to this many characters.
const MAX_MATCH_CHARS: usize = 200;
/// After the main process exited by itself: how long background processes may
/// keep the output pipes open before the group is killed.
const PIPE_DRAIN: Duration = Duration::from_secs(1);
/// After KILL: how long to wait for the pipes to close before giving up on
/// them (a process that escaped the group may still hold them).
const PIPE_AFTER_KILL: Duration = Duration::from_secs(2);

impl Outcome {
    /// The task's verdict. Order: quarantine_on match, cancellation,
    /// fail_on match, how the process ended, missing `require` patterns.
    pub fn verdict(&self) -> Verdict {
        if let Some((pat, line)) = &self.quarantine_match {
            return Verdict::Quarantined(format!("output matched quarantine_on /{pat}/: {line}"));
        }
        if self.ending == Ending::Cancelled {
            return Verdict::Cancelled;
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
            Ending::SpawnFailed(reason) => return Verdict::Failed(reason.clone()),
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
pub fn default_shell() -> Shell {
    if cfg!(windows) {
        Shell::Pwsh
    } else {
        Shell::Sh
    }
}

/// The program and arguments actually spawned for `program` (shell resolved).
/// On Windows the `cmd` script is passed verbatim (raw, in quotes after `/S /C`).
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
                Shell::Pwsh => (
                    pwsh_program(),
                    &["-NoLogo", "-NoProfile", "-NonInteractive", "-Command"],
                ),
                Shell::Cmd => ("cmd".into(), &["/S", "/C"]),
            };
            let mut args: Vec<String> = flags.iter().map(|s| s.to_string()).collect();
            args.push(script.clone());
            (prog, args)
        }
    }
}

/// `pwsh`, or on Windows `powershell` when `pwsh` is not on PATH.
fn pwsh_program() -> String {
    #[cfg(windows)]
    {
        let found = std::env::var_os("PATH").is_some_and(|path| {
            std::env::split_paths(&path).any(|dir| dir.join("pwsh.exe").is_file())
        });
        if !found {
            return "powershell".into();
        }
    }
    "pwsh".into()
}

/// First match of one guard kind.
#[derive(Debug, Clone)]
struct Hit {
    at: Instant,
    pattern: String,
    line: String,
}

/// Line-by-line guardrail scanning over one output stream, bounded memory.
struct Scanner {
    guards: Guards,
    line: Vec<u8>,
    fail: Option<Hit>,
    quarantine: Option<Hit>,
    required: Vec<bool>,
}

impl Scanner {
    fn new(guards: Guards) -> Self {
        let required = vec![false; guards.require.len()];
        Scanner {
            guards,
            line: Vec::new(),
            fail: None,
            quarantine: None,
            required,
        }
    }

    /// Is any guard still looking for its first match?
    fn active(&self) -> bool {
        (self.fail.is_none() && !self.guards.fail_on.is_empty())
            || (self.quarantine.is_none() && !self.guards.quarantine_on.is_empty())
            || self.required.iter().any(|r| !r)
    }

    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() && self.active() {
            match data.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    if self.line.is_empty() && i <= MAX_SCAN_LINE {
                        self.scan(&data[..i]);
                    } else {
                        self.push(&data[..i]);
                        self.flush_line();
                    }
                    data = &data[i + 1..];
                }
                None => {
                    self.push(data);
                    break;
                }
            }
        }
    }

    /// Append to the pending line, scanning full chunks as they fill up.
    fn push(&mut self, mut part: &[u8]) {
        while !part.is_empty() {
            let take = (MAX_SCAN_LINE - self.line.len()).min(part.len());
            self.line.extend_from_slice(&part[..take]);
            part = &part[take..];
            if self.line.len() >= MAX_SCAN_LINE {
                self.flush_line();
            }
        }
    }

    fn flush_line(&mut self) {
        let line = std::mem::take(&mut self.line);
        self.scan(&line);
        self.line = line;
        self.line.clear();
    }

    /// End of stream: scan what is left.
    fn finish(&mut self) {
        if !self.line.is_empty() && self.active() {
            self.flush_line();
        }
        self.line = Vec::new();
    }

    fn scan(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if self.fail.is_none() {
            self.fail = first_hit(&self.guards.fail_on, line);
        }
        if self.quarantine.is_none() {
            self.quarantine = first_hit(&self.guards.quarantine_on, line);
        }
        for (re, seen) in self.guards.require.iter().zip(self.required.iter_mut()) {
            if !*seen && re.is_match(line) {
                *seen = true;
            }
        }
    }
}

fn first_hit(patterns: &[regex::bytes::Regex], line: &[u8]) -> Option<Hit> {
    let (re, m) = patterns
        .iter()
        .find_map(|re| re.find(line).map(|m| (re, m)))?;
    // Long lines: show the part around the match, not just their beginning.
    let from = if line.len() > MAX_MATCH_CHARS && m.end() > MAX_MATCH_CHARS {
        m.start().saturating_sub(MAX_MATCH_CHARS / 4)
    } else {
        0
    };
    let text = String::from_utf8_lossy(&line[from..]);
    Some(Hit {
        at: Instant::now(),
        pattern: re.as_str().to_string(),
        line: text.trim_end().chars().take(MAX_MATCH_CHARS).collect(),
    })
}

fn earliest(a: Option<Hit>, b: Option<Hit>) -> Option<(String, String)> {
    let hit = match (a, b) {
        (Some(a), Some(b)) => Some(if b.at < a.at { b } else { a }),
        (a, b) => a.or(b),
    };
    hit.map(|h| (h.pattern, h.line))
}

/// Copy one pipe into its file with a fixed buffer, scanning as it goes.
/// Stops at EOF, or when `stop` fires (or its sender goes away).
async fn pump<R: AsyncRead + Unpin>(
    reader: Option<R>,
    mut file: tokio::fs::File,
    mut scanner: Scanner,
    mut stop: watch::Receiver<bool>,
) -> (Scanner, Option<String>) {
    let mut error: Option<String> = None;
    if let Some(mut reader) = reader {
        let mut buf = vec![0u8; READ_BUF];
        loop {
            let n = tokio::select! {
                r = reader.read(&mut buf) => match r {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        error.get_or_insert_with(|| format!("reading output: {e}"));
                        break;
                    }
                },
                _ = stop.wait_for(|s| *s) => break,
            };
            let data = &buf[..n];
            scanner.feed(data);
            // On a write error keep draining the pipe so the task never blocks on it.
            if error.is_none()
                && let Err(e) = file.write_all(data).await
            {
                error = Some(format!("writing output: {e}"));
            }
        }
    }
    scanner.finish();
    if let Err(e) = file.flush().await {
        error.get_or_insert_with(|| format!("writing output: {e}"));
    }
    (scanner, error)
}

/// The spawned process tree: the leader plus its process group (job object on Windows).
/// Dropping it while armed kills the whole tree.
struct Tree {
    child: Box<dyn ChildWrapper>,
    #[cfg(unix)]
    pgid: i32,
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
        #[cfg(unix)]
        {
            signal_group(self.pgid, libc::SIGTERM);
            // Stopped processes only act on TERM once continued.
            signal_group(self.pgid, libc::SIGCONT);
        }
        #[cfg(not(unix))]
        self.kill();
    }

    fn kill(&mut self) {
        #[cfg(unix)]
        signal_group(self.pgid, libc::SIGKILL);
        #[cfg(not(unix))]
        if let Err(e) = self.child.start_kill() {
            debug!("terminating job: {e}");
        }
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        if self.armed {
            self.kill();
        }
    }
}

#[cfg(unix)]
fn signal_group(pgid: i32, sig: i32) -> bool {
    if pgid <= 1 {
        return false;
    }
    // SAFETY: plain syscall, no memory involved.
    unsafe { libc::killpg(pgid, sig) == 0 }
}

fn open_output(path: &Path) -> io::Result<std::fs::File> {
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::File::create(path)
}

fn spawn_failed(start: Instant, timeout: Option<Duration>, reason: String) -> Outcome {
    Outcome {
        ending: Ending::SpawnFailed(reason),
        exit_code: Some(127),
        fail_match: None,
        quarantine_match: None,
        missing_require: Vec::new(),
        proc: None,
        duration: start.elapsed(),
        timeout,
        output_error: None,
    }
}

/// Run one command to its end. `cancel` is watched: Graceful → TERM to the
/// whole process group, `spec.grace`, then KILL; Immediate → KILL the group now.
/// `on_start` is called once right after spawn with the process identity.
///
/// Cancellation already requested before the start: nothing is spawned, the
/// outcome is `Cancelled`. Dropping the returned future kills the process tree.
pub async fn run(
    spec: &Spec,
    mut cancel: watch::Receiver<Cancel>,
    on_start: impl FnOnce(ProcInfo),
) -> Outcome {
    let start = Instant::now();
    let (prog, args) = command_line(&spec.program);

    let out_file = match open_output(&spec.stdout) {
        Ok(f) => f,
        Err(e) => {
            let why = format!(
                "could not create output file `{}`: {e}",
                spec.stdout.display()
            );
            return spawn_failed(start, spec.timeout, why);
        }
    };
    let err_file = match open_output(&spec.stderr) {
        Ok(f) => f,
        Err(e) => {
            let why = format!(
                "could not create output file `{}`: {e}",
                spec.stderr.display()
            );
            return spawn_failed(start, spec.timeout, why);
        }
    };

    if *cancel.borrow_and_update() != Cancel::No {
        return Outcome {
            ending: Ending::Cancelled,
            exit_code: None,
            fail_match: None,
            quarantine_match: None,
            missing_require: Vec::new(),
            proc: None,
            duration: start.elapsed(),
            timeout: spec.timeout,
            output_error: None,
        };
    }
    if prog.is_empty() {
        return spawn_failed(
            start,
            spec.timeout,
            "could not start ``: empty command".into(),
        );
    }
    if let Err(e) = std::fs::metadata(&spec.cwd).and_then(|m| {
        if m.is_dir() {
            Ok(())
        } else {
            Err(io::Error::other("not a directory"))
        }
    }) {
        let why = format!(
            "could not start `{prog}`: working directory `{}`: {e}",
            spec.cwd.display()
        );
        return spawn_failed(start, spec.timeout, why);
    }

    let mut cmd = tokio::process::Command::new(&prog);
    #[cfg(windows)]
    if matches!(
        spec.program,
        Program::Shell {
            shell: Shell::Cmd,
            ..
        }
    ) {
        // cmd.exe does its own parsing; with /S it strips exactly the outer quotes.
        if let Program::Shell { script, .. } = &spec.program {
            cmd.args(["/S", "/C"]).raw_arg(format!("\"{script}\""));
        }
    } else {
        cmd.args(&args);
    }
    #[cfg(not(windows))]
    cmd.args(&args);
    cmd.current_dir(&spec.cwd)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut wrap = CommandWrap::from(cmd);
    #[cfg(unix)]
    wrap.wrap(process_wrap::tokio::ProcessGroup::leader());
    #[cfg(windows)]
    wrap.wrap(process_wrap::tokio::JobObject);
    wrap.wrap(KillOnDrop);

    let mut child = match wrap.spawn() {
        Ok(c) => c,
        Err(e) => {
            return spawn_failed(
                start,
                spec.timeout,
                format!("could not start `{prog}`: {e}"),
            );
        }
    };
    let pid = child.id().unwrap_or(0);
    let info = ProcInfo {
        pid,
        pgid: if cfg!(unix) {
            Some(i64::from(pid))
        } else {
            None
        },
        start_time: process_start_time(pid),
    };
    debug!(pid, program = %prog, cwd = %spec.cwd.display(), "task started");
    // Before anything else: a coordinator killed before it records the pid
    // still leaves the way to end this process.
    let proc_path = proc_file(&spec.stdout);
    if let Err(e) = std::fs::write(&proc_path, info.to_line()) {
        debug!(pid, "writing {}: {e}", proc_path.display());
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let out_pump = tokio::spawn(pump(
        child.stdout().take(),
        tokio::fs::File::from_std(out_file),
        Scanner::new(spec.guards.clone()),
        stop_rx.clone(),
    ));
    let err_pump = tokio::spawn(pump(
        child.stderr().take(),
        tokio::fs::File::from_std(err_file),
        Scanner::new(spec.guards.clone()),
        stop_rx,
    ));
    let mut tree = Tree {
        child,
        #[cfg(unix)]
        pgid: i32::try_from(pid).unwrap_or(0),
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
    let pumps = async { (out_pump.await, err_pump.await) };
    tokio::pin!(pumps);
    let (out_res, err_res) = loop {
        tokio::select! {
            biased;
            r = &mut pumps => break r,
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
    let _ = std::fs::remove_file(&proc_path);

    let (out_scan, out_err) =
        out_res.unwrap_or_else(|e| (Scanner::new(Guards::default()), Some(e.to_string())));
    let (err_scan, err_err) =
        err_res.unwrap_or_else(|e| (Scanner::new(Guards::default()), Some(e.to_string())));

    let (ending, exit_code) = match (stopped, status) {
        (Some(ending), _) => (ending, None),
        (None, Ok(st)) => exit_ending(st),
        (None, Err(e)) => {
            debug!(pid, "waiting for the task failed: {e}");
            (Ending::Exited(-1), Some(-1))
        }
    };
    let missing_require = spec
        .guards
        .require
        .iter()
        .enumerate()
        .filter(|(i, _)| {
            !out_scan.required.get(*i).copied().unwrap_or(false)
                && !err_scan.required.get(*i).copied().unwrap_or(false)
        })
        .map(|(_, re)| re.as_str().to_string())
        .collect();
    let outcome = Outcome {
        ending,
        exit_code,
        fail_match: earliest(out_scan.fail, err_scan.fail),
        quarantine_match: earliest(out_scan.quarantine, err_scan.quarantine),
        missing_require,
        proc: Some(info),
        duration: start.elapsed(),
        timeout: spec.timeout,
        output_error: out_err.or(err_err),
    };
    debug!(pid, ending = ?outcome.ending, "task ended");
    outcome
}

fn exit_ending(status: ExitStatus) -> (Ending, Option<i32>) {
    if let Some(code) = status.code() {
        return (Ending::Exited(code), Some(code));
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            return (Ending::Signalled(sig), None);
        }
    }
    (Ending::Exited(-1), Some(-1))
}

/// Start time of a pid as the OS reports it (Linux: field 22 of
/// /proc/<pid>/stat, clock ticks since boot; macOS: start time in µs since
/// the epoch), None where unknown.
pub fn process_start_time(pid: u32) -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        proc_stat(pid)?.starttime
    }
    #[cfg(target_os = "macos")]
    {
        macos_start_time(pid)
    }
    #[cfg(not(any(target_os = "linux", target_os = "macos")))]
    {
        let _ = pid;
        None
    }
}

#[cfg(target_os = "linux")]
struct ProcStat {
    state: u8,
    pgrp: Option<i64>,
    starttime: Option<u64>,
}

#[cfg(target_os = "linux")]
fn proc_stat(pid: u32) -> Option<ProcStat> {
    if pid == 0 {
        return None;
    }
    let text = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
    let close = text.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&text[close + 1..]).ok()?;
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    // fields[0] is field 3 (state), so field N is fields[N - 3].
    Some(ProcStat {
        state: fields.first()?.bytes().next()?,
        pgrp: fields.get(2).and_then(|f| f.parse().ok()),
        starttime: fields.get(19).and_then(|f| f.parse().ok()),
    })
}

#[cfg(target_os = "macos")]
fn macos_start_time(pid: u32) -> Option<u64> {
    let pid = libc::c_int::try_from(pid).ok().filter(|p| *p > 0)?;
    let mut info: libc::proc_bsdinfo = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::proc_bsdinfo>() as libc::c_int;
    // SAFETY: `info` is a properly sized, writable proc_bsdinfo.
    let n = unsafe {
        libc::proc_pidinfo(
            pid,
            libc::PROC_PIDTBSDINFO,
            0,
            (&mut info as *mut libc::proc_bsdinfo).cast(),
            size,
        )
    };
    (n == size).then(|| info.pbi_start_tvsec * 1_000_000 + info.pbi_start_tvusec)
}

/// Is a live (non-zombie) process with this pid there? On Linux also returns its stat.
#[cfg(unix)]
fn pid_alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    if raw <= 0 {
        return false;
    }
    #[cfg(target_os = "linux")]
    {
        match proc_stat(pid) {
            Some(st) => st.state != b'Z' && st.state != b'X',
            None => false,
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        // SAFETY: plain syscall.
        let r = unsafe { libc::kill(raw, 0) };
        r == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
}

/// Does the process group still have a live (non-zombie) member?
#[cfg(unix)]
fn group_alive(pgid: i64) -> bool {
    let Ok(raw) = i32::try_from(pgid) else {
        return false;
    };
    if raw <= 1 {
        return false;
    }
    #[cfg(target_os = "linux")]
    {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return false;
        };
        dir.flatten().any(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
                .and_then(proc_stat)
                .is_some_and(|st| st.pgrp == Some(pgid) && st.state != b'Z' && st.state != b'X')
        })
    }
    #[cfg(not(target_os = "linux"))]
    {
        // SAFETY: plain syscall.
        let r = unsafe { libc::killpg(raw, 0) };
        r == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
}

/// Is the process (or, on Unix, what is left of its process group) still
/// alive and the same one we started? A pid that is alive with another start
/// time was reused: not ours. When the leader is gone but its group still has
/// members, the group is ours (a pid is not reused while a group carries it).
pub fn is_alive(info: &ProcInfo) -> bool {
    #[cfg(unix)]
    {
        if let Some(recorded) = info.start_time
            && let Some(now) = process_start_time(info.pid)
            && recorded != now
        {
            return false;
        }
        if pid_alive(info.pid) {
            return true;
        }
        info.pgid.is_some_and(group_alive)
    }
    #[cfg(windows)]
    {
        // No start time on Windows (no Win32 bindings here): existence only.
        windows_pid_exists(info.pid)
    }
    #[cfg(not(any(unix, windows)))]
    {
        let _ = info;
        false
    }
}

#[cfg(windows)]
fn windows_pid_exists(pid: u32) -> bool {
    std::process::Command::new("tasklist")
        .args(["/FI", &format!("PID eq {pid}"), "/NH", "/FO", "CSV"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(&format!("\"{pid}\"")))
}

/// End a process group left behind by a crashed coordinator: TERM, wait up to
/// `grace`, KILL. Only if `is_alive`. Returns whether something was killed.
/// Blocking (sleeps while waiting); call from `spawn_blocking` in async code.
pub fn kill_stale(info: &ProcInfo, grace: Duration) -> bool {
    if !is_alive(info) {
        return false;
    }
    let gone = |limit: Duration| {
        let until = Instant::now() + limit;
        loop {
            if !is_alive(info) {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    #[cfg(unix)]
    {
        let send = |sig: i32| match info.pgid.and_then(|g| i32::try_from(g).ok()) {
            Some(pgid) => {
                signal_group(pgid, sig);
            }
            None => {
                if let Ok(pid) = i32::try_from(info.pid)
                    && pid > 1
                {
                    // SAFETY: plain syscall.
                    unsafe { libc::kill(pid, sig) };
                }
            }
        };
        send(libc::SIGTERM);
        send(libc::SIGCONT);
        if !gone(grace) {
            send(libc::SIGKILL);
            gone(Duration::from_secs(2));
        }
        true
    }
    #[cfg(windows)]
    {
        let taskkill = |force: bool| {
            let mut c = std::process::Command::new("taskkill");
            c.args(["/PID", &info.pid.to_string(), "/T"]);
            if force {
                c.arg("/F");
            }
            let _ = c
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        };
        taskkill(false);
        if !gone(grace) {
            taskkill(true);
            gone(Duration::from_secs(2));
        }
        true
    }
    #[cfg(not(any(unix, windows)))]
    {
        let _ = (grace, gone);
        false
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use regex::bytes::Regex;
    use std::time::Instant;

    struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Self {
            Fixture {
                dir: tempfile::tempdir().unwrap(),
            }
        }
        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }
        fn spec(&self, program: Program) -> Spec {
            Spec {
                program,
                cwd: self.dir.path().to_path_buf(),
                env: Vec::new(),
                timeout: None,
                grace: Duration::from_millis(500),
                stdout: self.path("logs/task.out"),
                stderr: self.path("logs/task.err"),
                guards: Guards::default(),
            }
        }
        fn sh(&self, script: &str) -> Spec {
            self.spec(Program::Shell {
                shell: Shell::Sh,
                script: script.into(),
            })
        }
        fn read(&self, name: &str) -> Vec<u8> {
            std::fs::read(self.path(name)).unwrap()
        }
        fn pid_in(&self, name: &str) -> i32 {
            let text = std::fs::read_to_string(self.path(name)).unwrap();
            text.trim().parse().unwrap()
        }
    }

    fn no_cancel() -> watch::Receiver<Cancel> {
        let (tx, rx) = watch::channel(Cancel::No);
        // Keep the sender alive for the whole test process: a closed channel is
        // also handled, but tests should exercise the usual case.
        std::mem::forget(tx);
        rx
    }

    async fn run_plain(spec: &Spec) -> Outcome {
        run(spec, no_cancel(), |_| {}).await
    }

    fn res(p: &[&str]) -> Vec<Regex> {
        p.iter().map(|s| Regex::new(s).unwrap()).collect()
    }

    fn pid_dead(pid: i32) -> bool {
        // Zombies of reparented processes are reaped by init; give it a
        // moment, a long one on a loaded 2-core machine.
        for _ in 0..250 {
            // SAFETY: plain syscall.
            let gone = unsafe { libc::kill(pid, 0) } != 0;
            #[cfg(target_os = "linux")]
            let zombie = proc_stat(pid as u32).is_some_and(|s| s.state == b'Z');
            #[cfg(not(target_os = "linux"))]
            let zombie = false;
            if gone || zombie {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    async fn wait_for_file(path: &Path) {
        // Generous: the suite runs many process-heavy tests at once.
        for _ in 0..2000 {
            if std::fs::read_to_string(path).is_ok_and(|s| s.ends_with('\n')) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{} never appeared", path.display());
    }

    #[tokio::test]
    async fn exit_zero_succeeds_and_files_exist() {
        let fx = Fixture::new();
        let mut started = None;
        let out = run(&fx.sh("true"), no_cancel(), |p| started = Some(p)).await;
        assert_eq!(out.ending, Ending::Exited(0));
        assert_eq!(out.exit_code, Some(0));
        assert_eq!(out.verdict(), Verdict::Succeeded);
        let info = started.expect("on_start called");
        assert_eq!(out.proc, Some(info));
        assert_eq!(info.pgid, Some(i64::from(info.pid)));
        assert!(info.start_time.is_some());
        assert_eq!(fx.read("logs/task.out"), b"");
        assert_eq!(fx.read("logs/task.err"), b"");
    }

    #[tokio::test]
    async fn exit_three_fails() {
        let fx = Fixture::new();
        let out = run_plain(&fx.sh("echo out; echo err >&2; exit 3")).await;
        assert_eq!(out.ending, Ending::Exited(3));
        assert_eq!(out.exit_code, Some(3));
        assert_eq!(out.verdict(), Verdict::Failed("exited with code 3".into()));
        assert_eq!(fx.read("logs/task.out"), b"out\n");
        assert_eq!(fx.read("logs/task.err"), b"err\n");
    }

    #[tokio::test]
    async fn binary_output_is_kept_exactly() {
        let fx = Fixture::new();
        let out = run_plain(&fx.sh(r"printf 'a\377\376\000b\r\n'; printf '\377' >&2")).await;
        assert_eq!(out.verdict(), Verdict::Succeeded);
        assert_eq!(fx.read("logs/task.out"), b"a\xff\xfe\x00b\r\n");
        assert_eq!(fx.read("logs/task.err"), b"\xff");
    }

    #[tokio::test]
    async fn fail_on_match_fails_even_with_exit_zero() {
        let fx = Fixture::new();
        let mut spec = fx.sh("echo fine; echo 'error[E0425]: cannot find value' >&2; echo more");
        spec.guards.fail_on = res(&[r"error\[E\d+\]"]);
        let out = run_plain(&spec).await;
        assert_eq!(out.exit_code, Some(0));
        assert_eq!(
            out.fail_match,
            Some((
                r"error\[E\d+\]".into(),
                "error[E0425]: cannot find value".into()
            ))
        );
        assert_eq!(
            out.verdict(),
            Verdict::Failed(
                r"output matched fail_on /error\[E\d+\]/: error[E0425]: cannot find value".into()
            )
        );
    }

    #[tokio::test]
    async fn quarantine_beats_fail() {
        let fx = Fixture::new();
        let mut spec = fx.sh("echo 'FAIL here'; echo '-----BEGIN RSA PRIVATE KEY-----'; exit 1");
        spec.guards.fail_on = res(&["FAIL"]);
        spec.guards.quarantine_on = res(&["BEGIN RSA PRIVATE KEY"]);
        let out = run_plain(&spec).await;
        assert!(out.fail_match.is_some());
        assert_eq!(
            out.verdict(),
            Verdict::Quarantined(
                "output matched quarantine_on /BEGIN RSA PRIVATE KEY/: -----BEGIN RSA PRIVATE KEY-----"
                    .into()
            )
        );
    }

    #[tokio::test]
    async fn require_patterns() {
        let fx = Fixture::new();
        let mut spec = fx.sh("echo 'test result: ok. 3 passed'; echo done >&2");
        spec.guards.require = res(&["test result: ok", "^done$"]);
        let out = run_plain(&spec).await;
        assert!(out.missing_require.is_empty());
        assert_eq!(out.verdict(), Verdict::Succeeded);

        spec.guards.require = res(&["test result: ok", "never printed"]);
        let out = run_plain(&spec).await;
        assert_eq!(out.missing_require, vec!["never printed".to_string()]);
        assert_eq!(
            out.verdict(),
            Verdict::Failed("output never matched require /never printed/".into())
        );
    }

    #[tokio::test]
    async fn long_lines_are_scanned_in_chunks_and_matches_truncated() {
        let fx = Fixture::new();
        // 200 KB without a newline, then the marker on the same line.
        let mut spec = fx.sh("head -c 200000 /dev/zero | tr '\\0' x; echo SECRET; echo tail");
        spec.guards.quarantine_on = res(&["SECRET"]);
        spec.guards.require = res(&["^tail$"]);
        let out = run_plain(&spec).await;
        let (_, line) = out.quarantine_match.clone().expect("matched");
        assert!(line.ends_with("xxxSECRET"), "{line}");
        assert!(line.chars().count() <= MAX_MATCH_CHARS);
        assert!(out.missing_require.is_empty());
        assert!(matches!(out.verdict(), Verdict::Quarantined(_)));
    }

    #[tokio::test]
    async fn argv_runs_without_shell() {
        let fx = Fixture::new();
        let spec = fx.spec(Program::Argv(vec![
            "printf".into(),
            "[%s]\\n".into(),
            "two words".into(),
            "$HOME;*".into(),
        ]));
        let out = run_plain(&spec).await;
        assert_eq!(out.verdict(), Verdict::Succeeded);
        assert_eq!(fx.read("logs/task.out"), b"[two words]\n[$HOME;*]\n");
    }

    #[tokio::test]
    async fn env_and_cwd_are_applied() {
        let fx = Fixture::new();
        std::fs::create_dir(fx.path("sub")).unwrap();
        let mut spec = fx.sh("echo \"$MPW_TEST_VAR\"; echo \"${PATH:+has-path}\"; pwd");
        spec.env = vec![("MPW_TEST_VAR".into(), "hello world".into())];
        spec.cwd = fx.path("sub");
        let out = run_plain(&spec).await;
        assert_eq!(out.verdict(), Verdict::Succeeded);
        let text = String::from_utf8(fx.read("logs/task.out")).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "hello world");
        assert_eq!(lines[1], "has-path", "parent environment inherited");
        let cwd = std::fs::canonicalize(fx.path("sub")).unwrap();
        assert_eq!(std::fs::canonicalize(lines[2]).unwrap(), cwd);
    }

    #[tokio::test]
    async fn spawn_failure_is_127_with_reason() {
        let fx = Fixture::new();
        let spec = fx.spec(Program::Argv(vec!["mpw-no-such-program-xyz".into()]));
        let out = run_plain(&spec).await;
        assert_eq!(out.exit_code, Some(127));
        let Ending::SpawnFailed(reason) = &out.ending else {
            panic!("{:?}", out.ending)
        };
        assert!(
            reason.starts_with("could not start `mpw-no-such-program-xyz`: "),
            "{reason}"
        );
        assert!(reason.contains("os error"), "{reason}");
        assert_eq!(out.verdict(), Verdict::Failed(reason.clone()));
        assert!(fx.path("logs/task.out").exists());

        let mut spec = fx.sh("true");
        spec.cwd = fx.path("missing-dir");
        let out = run_plain(&spec).await;
        assert_eq!(out.exit_code, Some(127));
        let Ending::SpawnFailed(reason) = &out.ending else {
            panic!("{:?}", out.ending)
        };
        assert!(
            reason.contains("`sh`") && reason.contains("missing-dir"),
            "{reason}"
        );

        let script = fx.path("not-executable.sh");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        let spec = fx.spec(Program::Argv(vec![script.display().to_string()]));
        let out = run_plain(&spec).await;
        assert_eq!(out.exit_code, Some(127));
        assert!(matches!(out.ending, Ending::SpawnFailed(ref r) if r.contains("ermission denied")));
    }

    #[tokio::test]
    async fn timeout_kills_backgrounded_grandchild() {
        let fx = Fixture::new();
        let mut spec = fx.sh("sleep 30 & echo $! > bg.pid; sleep 30");
        spec.timeout = Some(Duration::from_secs(1));
        let t = Instant::now();
        let out = run_plain(&spec).await;
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        assert_eq!(out.ending, Ending::TimedOut);
        assert_eq!(out.exit_code, None);
        assert_eq!(out.verdict(), Verdict::Failed("timed out after 1s".into()));
        assert!(pid_dead(fx.pid_in("bg.pid")), "background sleep survived");
    }

    #[tokio::test]
    async fn background_child_holding_stdout_does_not_hang() {
        let fx = Fixture::new();
        let spec = fx.sh("sleep 30 & echo $! > bg.pid; echo main done");
        let t = Instant::now();
        let out = run_plain(&spec).await;
        assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
        assert_eq!(out.ending, Ending::Exited(0));
        assert_eq!(out.verdict(), Verdict::Succeeded);
        assert_eq!(fx.read("logs/task.out"), b"main done\n");
        assert!(pid_dead(fx.pid_in("bg.pid")), "background sleep survived");
    }

    #[tokio::test]
    async fn graceful_cancel_ends_the_group() {
        let fx = Fixture::new();
        let (tx, rx) = watch::channel(Cancel::No);
        let spec = fx.sh("sleep 30 & echo $! > bg.pid; sleep 30");
        let bg = fx.path("bg.pid");
        let canceller = async {
            wait_for_file(&bg).await;
            tx.send(Cancel::Graceful).unwrap();
        };
        let t = Instant::now();
        let (out, ()) = tokio::join!(run(&spec, rx, |_| {}), canceller);
        assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
        assert_eq!(out.ending, Ending::Cancelled);
        assert_eq!(out.verdict(), Verdict::Cancelled);
        let info = out.proc.unwrap();
        assert!(pid_dead(fx.pid_in("bg.pid")));
        assert!(!is_alive(&info));
    }

    #[tokio::test]
    async fn term_ignoring_task_is_killed_after_grace() {
        let fx = Fixture::new();
        let (tx, rx) = watch::channel(Cancel::No);
        let mut spec = fx.sh("trap '' TERM; sleep 30 & echo $! > bg.pid; sleep 30");
        spec.grace = Duration::from_millis(700);
        let bg = fx.path("bg.pid");
        let sent = std::sync::Mutex::new(None);
        let canceller = async {
            wait_for_file(&bg).await;
            *sent.lock().unwrap() = Some(Instant::now());
            tx.send(Cancel::Graceful).unwrap();
        };
        let (out, ()) = tokio::join!(run(&spec, rx, |_| {}), canceller);
        let waited = sent.lock().unwrap().unwrap().elapsed();
        assert!(
            waited >= Duration::from_millis(650),
            "KILL came before the grace: {waited:?}"
        );
        assert!(waited < Duration::from_secs(4), "{waited:?}");
        assert_eq!(out.ending, Ending::Cancelled);
        assert!(pid_dead(fx.pid_in("bg.pid")));
    }

    #[tokio::test]
    async fn immediate_cancel_kills_at_once() {
        let fx = Fixture::new();
        let (tx, rx) = watch::channel(Cancel::No);
        let mut spec = fx.sh("trap '' TERM; sleep 30 & echo $! > bg.pid; sleep 30");
        spec.grace = Duration::from_secs(10);
        let bg = fx.path("bg.pid");
        let sent = std::sync::Mutex::new(None);
        let canceller = async {
            wait_for_file(&bg).await;
            *sent.lock().unwrap() = Some(Instant::now());
            tx.send(Cancel::Immediate).unwrap();
        };
        let (out, ()) = tokio::join!(run(&spec, rx, |_| {}), canceller);
        let waited = sent.lock().unwrap().unwrap().elapsed();
        assert!(waited < Duration::from_secs(1), "{waited:?}");
        assert_eq!(out.ending, Ending::Cancelled);
        assert!(pid_dead(fx.pid_in("bg.pid")));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropping_the_future_kills_the_group() {
        let fx = Fixture::new();
        let spec = fx.sh("sleep 30 & echo $! > bg.pid; sleep 30");
        let bg = fx.path("bg.pid");
        let limited = async {
            tokio::select! {
                _ = run_plain(&spec) => panic!("should not finish"),
                _ = wait_for_file(&bg) => {}
            }
        };
        limited.await;
        assert!(
            pid_dead(fx.pid_in("bg.pid")),
            "background sleep survived the drop"
        );
    }

    #[tokio::test]
    async fn cancel_before_start_spawns_nothing() {
        let fx = Fixture::new();
        let (_tx, rx) = watch::channel(Cancel::Graceful);
        let mut called = false;
        let out = run(&fx.sh("touch ran"), rx, |_| called = true).await;
        assert_eq!(out.ending, Ending::Cancelled);
        assert!(!called);
        assert!(!fx.path("ran").exists());
    }

    #[test]
    fn is_alive_and_kill_stale_on_a_real_group() {
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new("sh")
            .args(["-c", "trap '' TERM; sleep 30 & sleep 30"])
            .process_group(0)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        let info = ProcInfo {
            pid,
            pgid: Some(i64::from(pid)),
            start_time: process_start_time(pid),
        };
        assert!(info.start_time.is_some());
        assert!(is_alive(&info));
        let reused = ProcInfo {
            start_time: info.start_time.map(|t| t + 12345),
            ..info
        };
        assert!(
            !is_alive(&reused),
            "another start time means another process"
        );
        assert!(!kill_stale(&reused, Duration::from_millis(100)));
        assert!(is_alive(&info));

        let t = Instant::now();
        assert!(kill_stale(&info, Duration::from_millis(300)));
        assert!(t.elapsed() < Duration::from_secs(3));
        child.wait().unwrap();
        assert!(!is_alive(&info));
        assert!(!kill_stale(&info, Duration::from_millis(100)));
    }

    #[test]
    fn process_start_time_of_self_and_unknown() {
        assert!(process_start_time(std::process::id()).is_some());
        assert_eq!(process_start_time(0), None);
        assert_eq!(process_start_time(u32::MAX - 1), None);
    }

    #[tokio::test]
    async fn flood_streams_to_disk() {
        let fx = Fixture::new();
        let mut spec = fx.sh("head -c 50000000 /dev/zero; echo end >&2");
        spec.guards.fail_on = res(&["never"]);
        let out = run_plain(&spec).await;
        assert_eq!(out.verdict(), Verdict::Succeeded);
        assert_eq!(
            std::fs::metadata(fx.path("logs/task.out")).unwrap().len(),
            50_000_000
        );
        assert_eq!(fx.read("logs/task.err"), b"end\n");
    }

    #[test]
    fn command_lines() {
        let sh = |shell| Program::Shell {
            shell,
            script: "echo hi".into(),
        };
        assert_eq!(
            command_line(&sh(Shell::Sh)),
            ("sh".into(), vec!["-c".into(), "echo hi".into()])
        );
        assert_eq!(command_line(&sh(Shell::Bash)).0, "bash");
        let (p, a) = command_line(&sh(Shell::Pwsh));
        assert_eq!(p, "pwsh");
        assert_eq!(
            a,
            [
                "-NoLogo",
                "-NoProfile",
                "-NonInteractive",
                "-Command",
                "echo hi"
            ]
        );
        assert_eq!(
            command_line(&sh(Shell::Cmd)),
            (
                "cmd".into(),
                vec!["/S".into(), "/C".into(), "echo hi".into()]
            )
        );
        let argv = Program::Argv(vec!["cargo".into(), "fmt".into(), "a b".into()]);
        assert_eq!(
            command_line(&argv),
            ("cargo".into(), vec!["fmt".into(), "a b".into()])
        );
        assert_eq!(default_shell(), Shell::Sh);
    }

    #[test]
    fn verdict_messages() {
        let base = Outcome {
            ending: Ending::Exited(0),
            exit_code: Some(0),
            fail_match: None,
            quarantine_match: None,
            missing_require: Vec::new(),
            proc: None,
            duration: Duration::ZERO,
            timeout: Some(Duration::from_secs(300)),
            output_error: None,
        };
        let with = |ending| Outcome {
            ending,
            ..base.clone()
        };
        assert_eq!(
            with(Ending::TimedOut).verdict(),
            Verdict::Failed("timed out after 300s".into())
        );
        assert_eq!(
            with(Ending::Signalled(9)).verdict(),
            Verdict::Failed("killed by signal 9".into())
        );
        assert_eq!(with(Ending::Cancelled).verdict(), Verdict::Cancelled);
        let failing = Outcome {
            fail_match: Some(("x".into(), "x".into())),
            ..with(Ending::Cancelled)
        };
        assert_eq!(failing.verdict(), Verdict::Cancelled);
    }
}
