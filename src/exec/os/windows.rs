//! Windows: a kill-on-close job object per task, so the tree ends with the
//! task, on timeout or cancel, and with the coordinator if it dies; a process
//! is named by its pid and creation time, since Windows reuses pids quickly
//! (see README.md, Windows).

use crate::exec::{ProcInfo, Program};
use crate::plan::Shell;
use process_wrap::tokio::{ChildWrapper, CommandWrap, JobObject};
use std::process::ExitStatus;
use tracing::debug;
use windows_sys::Win32::Foundation::{CloseHandle, FILETIME, HANDLE, WAIT_TIMEOUT};
use windows_sys::Win32::System::Threading::{
    GetProcessTimes, OpenProcess, PROCESS_QUERY_LIMITED_INFORMATION, PROCESS_SYNCHRONIZE,
    PROCESS_TERMINATE, TerminateProcess, WaitForSingleObject,
};

pub const DEFAULT_SHELL: Shell = Shell::Pwsh;

/// `pwsh`, or `powershell` when `pwsh` is not on PATH.
pub fn pwsh_program() -> String {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("pwsh.exe").is_file()));
    if found { "pwsh" } else { "powershell" }.into()
}

/// Windows searches for a program by its own rules (the application's
/// folder, the system folders, `PATHEXT`): left to `CreateProcess`.
pub fn find_on_path(_prog: &str, _path: &std::ffi::OsStr) -> Option<std::path::PathBuf> {
    None
}

pub fn program_named(file: &std::path::Path, _name: &str) -> tokio::process::Command {
    tokio::process::Command::new(file)
}

pub fn add_args(cmd: &mut tokio::process::Command, program: &Program, args: &[String]) {
    match program {
        Program::Shell {
            shell: Shell::Cmd,
            script,
        } => {
            // cmd.exe does its own parsing; with /S it strips exactly the outer quotes.
            cmd.args(&args[..args.len() - 1])
                .raw_arg(format!("\"{script}\""));
        }
        _ => {
            cmd.args(args);
        }
    }
}

/// Nothing to do: the job object ends the child with a killed parent.
pub fn mark_child(
    _cmd: &mut tokio::process::Command,
    _proc_path: &std::path::Path,
) -> Option<std::fs::File> {
    None
}

/// Nothing to search for: see `mark_child`.
pub fn marked(_proc_path: &std::path::Path) -> Vec<crate::exec::ProcInfo> {
    Vec::new()
}

pub fn null_stdin() -> std::process::Stdio {
    std::process::Stdio::null()
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

/// What a dead coordinator left: its job, kill-on-close, died with it, so at
/// most the leader is left (a job handle inherited elsewhere). Windows has no
/// TERM for another console's process: both steps end it.
pub fn stop_stale(info: &ProcInfo, _force: bool) {
    if let Some(p) = Process::open(info.pid, PROCESS_TERMINATE) {
        // SAFETY: an open handle with TERMINATE access.
        unsafe { TerminateProcess(p.0, 1) };
    }
}

/// No signals on Windows.
pub fn exit_signal(_status: &ExitStatus) -> Option<i32> {
    None
}

/// An open process handle, closed on drop.
struct Process(HANDLE);

impl Process {
    fn open(pid: u32, access: u32) -> Option<Process> {
        if pid == 0 {
            return None;
        }
        // SAFETY: plain Win32 call; a null handle means it failed.
        let h = unsafe { OpenProcess(access, 0, pid) };
        (!h.is_null()).then_some(Process(h))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // SAFETY: the handle came from OpenProcess and is closed once.
        unsafe { CloseHandle(self.0) };
    }
}

/// Creation time (100 ns units since 1601, from GetProcessTimes).
pub fn process_start_time(pid: u32) -> Option<u64> {
    let p = Process::open(pid, PROCESS_QUERY_LIMITED_INFORMATION)?;
    let zero = FILETIME {
        dwLowDateTime: 0,
        dwHighDateTime: 0,
    };
    let (mut created, mut exited, mut kernel, mut user) = (zero, zero, zero, zero);
    // SAFETY: an open handle and four writable FILETIMEs.
    let ok = unsafe { GetProcessTimes(p.0, &mut created, &mut exited, &mut kernel, &mut user) };
    (ok != 0).then(|| (u64::from(created.dwHighDateTime) << 32) | u64::from(created.dwLowDateTime))
}

/// Still running (not merely kept open by a handle somewhere)?
pub fn pid_alive(pid: u32) -> bool {
    let Some(p) = Process::open(pid, PROCESS_SYNCHRONIZE) else {
        return false;
    };
    // SAFETY: an open handle with SYNCHRONIZE access; no wait.
    unsafe { WaitForSingleObject(p.0, 0) == WAIT_TIMEOUT }
}

/// Never asked: there are no groups (`group_id` is None).
pub fn group_alive(_pgid: i64) -> bool {
    false
}

/// Windows' allocator has no per-thread arenas to limit.
pub fn one_malloc_arena() {}

pub fn release_free_memory() {}
