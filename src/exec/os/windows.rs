//! Windows: a job object per task, `taskkill`/`tasklist` for what a crashed
//! coordinator left (no Win32 bindings here, so no start times either).

use crate::exec::{ProcInfo, Program};
use crate::plan::Shell;
use process_wrap::tokio::{ChildWrapper, CommandWrap, JobObject};
use std::process::{ExitStatus, Stdio};
use tracing::debug;

pub const DEFAULT_SHELL: Shell = Shell::Pwsh;

/// `pwsh`, or `powershell` when `pwsh` is not on PATH.
pub fn pwsh_program() -> String {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("pwsh.exe").is_file()));
    if found { "pwsh" } else { "powershell" }.into()
}

pub fn add_args(cmd: &mut tokio::process::Command, program: &Program, args: &[String]) {
    match program {
        Program::Shell {
            shell: Shell::Cmd,
            script,
        } => {
            // cmd.exe does its own parsing; with /S it strips exactly the outer quotes.
            cmd.args(["/S", "/C"]).raw_arg(format!("\"{script}\""));
        }
        _ => {
            cmd.args(args);
        }
    }
}

/// The task runs in a job object, so that ending the job ends all it starts.
pub fn contain(wrap: &mut CommandWrap) {
    wrap.wrap(JobObject);
}

/// No process groups on Windows.
pub fn group_id(_pid: u32) -> Option<i64> {
    None
}

/// A job has no graceful stop: TERM and KILL both end it.
pub fn stop_tree(child: &mut dyn ChildWrapper, _pid: u32, _force: bool) {
    if let Err(e) = child.start_kill() {
        debug!("terminating job: {e}");
    }
}

/// `taskkill /T` ends the tree under the pid; `/F` forces it.
pub fn stop_stale(info: &ProcInfo, force: bool) {
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
}

/// No signals on Windows.
pub fn exit_signal(_status: &ExitStatus) -> Option<i32> {
    None
}

pub fn process_start_time(_pid: u32) -> Option<u64> {
    None
}

pub fn pid_alive(pid: u32) -> bool {
    std::process::Command::new("tasklist")
        .args(["/FI", &format!("PID eq {pid}"), "/NH", "/FO", "CSV"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(&format!("\"{pid}\"")))
}

/// Never asked: there are no groups (`group_id` is None).
pub fn group_alive(_pgid: i64) -> bool {
    false
}
