//! Warm worker processes: one long-lived process speaking Bazel's JSON
//! persistent-worker protocol (one JSON object a line on stdin and stdout),
//! in its own process group (job object on Windows) like every task, with a
//! `.proc` file beside its stderr log so that `mpw resume` can end it after a
//! crash. One request at a time. See docs/ARCHITECTURE.md, "Module map";
//! the protocol is in the README, "Warm workers".

use super::capture::{self, Pumps};
use super::{Cancel, Ending, Outcome, ProcInfo, Spec, os, proc};
use process_wrap::tokio::{ChildWrapper, CommandWrap, KillOnDrop};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{ChildStdin, ChildStdout};
use tokio::sync::watch;
use tracing::debug;

/// How to start one worker process.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    /// The pool's name, for messages.
    pub name: String,
    pub argv: Vec<String>,
    /// Added to the inherited environment.
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    /// The worker's own stderr; its `.proc` file goes beside it.
    pub stderr: PathBuf,
    /// How long a new worker has to answer its first, empty request.
    pub startup_timeout: Duration,
}

/// What a request asks, besides the command's files and rules in `Spec`.
#[derive(Debug, Clone)]
pub struct Request {
    pub arguments: Vec<String>,
    /// The `mpw` object of the request: env, run, workstream, task, attempt.
    pub mpw: Value,
}

/// After a request: may the worker serve another one?
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Ready,
    /// It is gone or unusable; why, for the WORKER_EXITED event.
    Gone(String),
}

/// One running worker process.
pub struct Worker {
    child: Box<dyn ChildWrapper>,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    info: ProcInfo,
    proc_path: PathBuf,
    name: String,
    next_id: u64,
    /// Requests served so far.
    pub served: u64,
    /// Its group was ended and waited for: never signal that id again (reuse).
    ended: bool,
}

impl Worker {
    /// Start a worker and wait until it answers an empty request (the
    /// protocol has no greeting; every worker must answer every request).
    pub async fn start(spec: &WorkerSpec) -> Result<Worker, String> {
        let name = &spec.name;
        let Some((prog, args)) = spec.argv.split_first() else {
            return Err(format!("worker {name} has an empty command"));
        };
        let err_file = capture::open_log(&spec.stderr)
            .map_err(|e| format!("worker {name}: log `{}`: {e}", spec.stderr.display()))?;
        let mut cmd = tokio::process::Command::new(prog);
        cmd.args(args)
            .current_dir(&spec.cwd)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(err_file));
        let mut wrap = CommandWrap::from(cmd);
        os::contain(&mut wrap);
        wrap.wrap(KillOnDrop);
        let mut child = wrap
            .spawn()
            .map_err(|e| format!("could not start worker {name} (`{prog}`): {e}"))?;
        let pid = child.id().unwrap_or(0);
        let info = ProcInfo {
            pid,
            pgid: os::group_id(pid),
            start_time: os::process_start_time(pid),
        };
        let proc_path = spec.stderr.with_extension("proc");
        proc::record(&proc_path, None, &info);
        let (Some(stdin), Some(stdout)) = (child.stdin().take(), child.stdout().take()) else {
            return Err(format!("worker {name}: no pipes to talk to it"));
        };
        let mut w = Worker {
            child,
            stdin: Some(stdin),
            stdout: BufReader::new(stdout),
            info,
            proc_path,
            name: name.clone(),
            next_id: 0,
            served: 0,
            ended: false,
        };
        debug!(pid, worker = %name, "worker started");
        let probe = json!({"arguments": [], "requestId": w.next_id});
        w.next_id += 1;
        let answered = async {
            w.send(&probe).await?;
            let line = w.read_line().await?;
            parse_response(&line, 0).map(|_| ())
        };
        let result = tokio::time::timeout(spec.startup_timeout, answered).await;
        let why = match result {
            Ok(Ok(())) => return Ok(w),
            Ok(Err(Lost::Exited)) => {
                format!(
                    "worker {name} exited before it answered its first request{}",
                    w.exit_note().await
                )
            }
            Ok(Err(Lost::Stopped)) => format!("worker {name} was stopped while starting"),
            Ok(Err(Lost::Garbage(line))) => format!(
                "worker {name} answered its first request with a line that is not a protocol response: {}",
                quote(&line)
            ),
            Err(_) => format!(
                "worker {name} did not start within {}s (no answer to its first request; its stderr is in {})",
                spec.startup_timeout.as_secs_f64(),
                spec.stderr.display()
            ),
        };
        w.kill().await;
        Err(why)
    }

    pub fn info(&self) -> ProcInfo {
        self.info
    }

    async fn send(&mut self, v: &Value) -> Result<(), Lost> {
        let mut line = v.to_string();
        line.push('\n');
        let stdin = self.stdin.as_mut().ok_or(Lost::Exited)?;
        stdin
            .write_all(line.as_bytes())
            .await
            .map_err(|_| Lost::Exited)?;
        stdin.flush().await.map_err(|_| Lost::Exited)
    }

    /// The next line on stdout; EOF is the worker gone.
    async fn read_line(&mut self) -> Result<String, Lost> {
        let mut line = String::new();
        match self.stdout.read_line(&mut line).await {
            Ok(0) | Err(_) => Err(Lost::Exited),
            Ok(_) => Ok(line),
        }
    }

    /// ", code N" once the process is gone (waits briefly for it).
    async fn exit_note(&mut self) -> String {
        match self.exit_code().await {
            Some(c) => format!(" (code {c})"),
            None => String::new(),
        }
    }

    async fn exit_code(&mut self) -> Option<i32> {
        let waited = tokio::time::timeout(Duration::from_secs(2), self.child.wait()).await;
        match waited {
            Ok(Ok(st)) => st.code().or_else(|| os::exit_signal(&st).map(|s| 128 + s)),
            _ => None,
        }
    }

    /// End the worker's whole process group now.
    pub async fn kill(mut self) {
        os::stop_tree(self.child.as_mut(), self.info.pid, true);
        let _ = tokio::time::timeout(Duration::from_secs(2), self.child.wait()).await;
        self.ended = true;
        proc::forget(&self.proc_path);
    }

    /// Close its stdin (the protocol's "exit"), give it `grace`, then end
    /// the group. Returns its exit code when it exited by itself.
    pub async fn stop(mut self, grace: Duration) -> Option<i32> {
        self.stdin = None;
        let code = match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(Ok(st)) => st.code(),
            _ => None,
        };
        // Whatever it started is ended with it.
        os::stop_tree(self.child.as_mut(), self.info.pid, true);
        let _ = tokio::time::timeout(Duration::from_secs(2), self.child.wait()).await;
        self.ended = true;
        proc::forget(&self.proc_path);
        code
    }

    /// Run one request: its output goes to `spec.stdout` through the
    /// guardrails, exactly as a process task's. Timeout and cancel send a
    /// cancel request, then after `spec.grace` end the worker.
    pub async fn request(
        &mut self,
        req: &Request,
        spec: &Spec,
        mut cancel: watch::Receiver<Cancel>,
    ) -> (Outcome, Health) {
        let start = Instant::now();
        let name = self.name.clone();
        let (out_file, err_file) = match capture::create_outputs(spec) {
            Ok(f) => f,
            Err(why) => {
                let o = Outcome::unstarted(Ending::SpawnFailed(why), Some(127), start, spec);
                return (o, Health::Ready);
            }
        };
        if *cancel.borrow_and_update() != Cancel::No {
            let o = Outcome::unstarted(Ending::Cancelled, None, start, spec);
            return (o, Health::Ready);
        }
        let id = self.next_id;
        self.next_id += 1;
        self.served += 1;
        let msg = json!({
            "arguments": req.arguments,
            "requestId": id,
            "sandboxDir": spec.cwd.to_string_lossy(),
            "mpw": req.mpw,
        });
        let far = tokio::time::Instant::now() + Duration::from_secs(100 * 365 * 86_400);
        let deadline = spec.timeout.map(|t| tokio::time::Instant::now() + t);
        let mut stopped: Option<Ending> = None;
        let mut kill_at: Option<tokio::time::Instant> = None;
        let mut cancel_open = true;
        let sent = self.send(&msg).await;
        // Outside the loop: `read_until` keeps what it read when a select! drops it.
        let mut line: Vec<u8> = Vec::new();
        let answer: Result<Value, Lost> = match sent {
            Err(e) => Err(e),
            Ok(()) => loop {
                if cancel_open && stopped.is_none() {
                    let level = *cancel.borrow_and_update();
                    match level {
                        Cancel::No => {}
                        Cancel::Graceful => {
                            stopped = Some(Ending::Cancelled);
                            let _ = self.send(&json!({"requestId": id, "cancel": true})).await;
                            kill_at = Some(tokio::time::Instant::now() + spec.grace);
                        }
                        Cancel::Immediate => {
                            stopped = Some(Ending::Cancelled);
                            kill_at = Some(tokio::time::Instant::now());
                        }
                    }
                }
                tokio::select! {
                    biased;
                    r = self.stdout.read_until(b'\n', &mut line) => {
                        break match r {
                            Ok(0) | Err(_) => Err(Lost::Exited),
                            Ok(_) => parse_response(&String::from_utf8_lossy(&line), id),
                        };
                    }
                    r = cancel.changed(), if cancel_open => {
                        if r.is_err() {
                            cancel_open = false;
                        } else if *cancel.borrow() == Cancel::Immediate {
                            stopped.get_or_insert(Ending::Cancelled);
                            kill_at = Some(tokio::time::Instant::now());
                        }
                    }
                    _ = tokio::time::sleep_until(deadline.unwrap_or(far)), if deadline.is_some() && stopped.is_none() => {
                        debug!(pid = self.info.pid, "worker request timed out: cancelling");
                        stopped = Some(Ending::TimedOut);
                        let _ = self.send(&json!({"requestId": id, "cancel": true})).await;
                        kill_at = Some(tokio::time::Instant::now() + spec.grace);
                    }
                    _ = tokio::time::sleep_until(kill_at.unwrap_or(far)), if kill_at.is_some() => {
                        break Err(Lost::Stopped);
                    }
                }
            },
        };
        let (output, ending, exit_code, health) = match answer {
            Ok(resp) => {
                let output = resp["output"].as_str().unwrap_or_default().to_string();
                let code = resp["exitCode"].as_i64().map(|c| c as i32);
                match stopped {
                    Some(e) => (output, e, None, Health::Ready),
                    None => {
                        let code = code.unwrap_or(1);
                        (output, Ending::Exited(code), Some(code), Health::Ready)
                    }
                }
            }
            Err(Lost::Stopped) => {
                let e = stopped.unwrap_or(Ending::Cancelled);
                let why = match e {
                    Ending::TimedOut => {
                        "did not stop its timed-out request within the grace period"
                    }
                    _ => "was ended with its cancelled request",
                };
                (String::new(), e, None, Health::Gone(why.into()))
            }
            Err(Lost::Exited) => {
                let code = self.exit_code().await;
                let shown = code.map_or("unknown".to_string(), |c| c.to_string());
                let why = format!("worker {name} exited with code {shown} during the request");
                let e = stopped.unwrap_or(Ending::Broken(why.clone()));
                (String::new(), e, None, Health::Gone(why))
            }
            Err(Lost::Garbage(line)) => {
                let why = format!(
                    "worker {name} wrote a line that is not a protocol response: {}",
                    quote(&line)
                );
                (
                    String::new(),
                    Ending::Broken(why.clone()),
                    None,
                    Health::Gone(why),
                )
            }
        };
        if let Health::Gone(_) = health {
            os::stop_tree(self.child.as_mut(), self.info.pid, true);
        }
        let (_stop_tx, stop_rx) = watch::channel(false);
        let pumps = Pumps::start(
            (
                Some(std::io::Cursor::new(output.into_bytes())),
                out_file,
                &spec.stdout,
            ),
            (None::<std::io::Cursor<Vec<u8>>>, err_file, &spec.stderr),
            &spec.guards,
            stop_rx,
        );
        let captured = pumps.finish(&spec.guards).await;
        let outcome = Outcome::ran(ending, exit_code, start, spec, self.info, captured);
        (outcome, health)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // A worker never outlives its pool (KillOnDrop ends only the leader).
        if !self.ended {
            os::stop_tree(self.child.as_mut(), self.info.pid, true);
            proc::forget(&self.proc_path);
        }
    }
}

enum Lost {
    /// EOF or a broken pipe.
    Exited,
    /// Not a response to this request.
    Garbage(String),
    /// Ended by us (cancel or timeout, grace over).
    Stopped,
}

/// A response to request `id`: a JSON object with an integer `exitCode`
/// (or `wasCancelled`), `requestId` equal to `id` when present, `output` a
/// string when present. Unknown fields are ignored.
fn parse_response(line: &str, id: u64) -> Result<Value, Lost> {
    let garbage = || Lost::Garbage(line.trim_end().to_string());
    let v: Value = serde_json::from_str(line).map_err(|_| garbage())?;
    let Some(obj) = v.as_object() else {
        return Err(garbage());
    };
    let id_ok = match obj.get("requestId") {
        None => true,
        Some(r) => r.as_u64() == Some(id),
    };
    let cancelled = obj.get("wasCancelled").and_then(Value::as_bool) == Some(true);
    let code_ok = obj.get("exitCode").is_some_and(Value::is_i64) || cancelled;
    let output_ok = obj.get("output").is_none_or(Value::is_string);
    if id_ok && code_ok && output_ok {
        Ok(v)
    } else {
        Err(garbage())
    }
}

/// A line as quoted in messages: at most 200 characters, in backticks.
fn quote(line: &str) -> String {
    let cut: String = line.chars().take(capture::MAX_MATCH_CHARS).collect();
    let more = if cut.len() < line.len() { "…" } else { "" };
    format!("`{cut}{more}`")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_parsed_strictly() {
        assert!(parse_response(r#"{"requestId": 3, "exitCode": 0, "output": "hi"}"#, 3).is_ok());
        assert!(parse_response(r#"{"exitCode": 2, "extra": 1}"#, 3).is_ok());
        assert!(parse_response(r#"{"requestId": 3, "wasCancelled": true}"#, 3).is_ok());
        for bad in [
            "hello",
            "[1]",
            r#"{"requestId": 4, "exitCode": 0}"#,
            r#"{"requestId": 3}"#,
            r#"{"requestId": 3, "exitCode": "0"}"#,
            r#"{"requestId": 3, "exitCode": 0, "output": 5}"#,
        ] {
            assert!(
                matches!(parse_response(bad, 3), Err(Lost::Garbage(l)) if l == bad),
                "{bad}"
            );
        }
    }
}
