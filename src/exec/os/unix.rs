//! Unix: a process group per task, signals to stop it, and the process table
//! (`/proc` on Linux, `proc_pidinfo` on macOS) to tell whether it lives.

use crate::exec::{ProcInfo, Program};
use crate::plan::Shell;
use process_wrap::tokio::{ChildWrapper, CommandWrap, ProcessGroup};
use std::process::ExitStatus;

pub const DEFAULT_SHELL: Shell = Shell::Sh;

pub fn pwsh_program() -> String {
    "pwsh".into()
}

/// Where `exec` finds `prog` on `path` (a `PATH` value): the first entry
/// holding an executable file of that name. `None` for a name with a slash,
/// or when a relative entry comes first (it depends on the task's folder).
pub fn find_on_path(prog: &str, path: &std::ffi::OsStr) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if prog.contains('/') {
        return None;
    }
    for dir in std::env::split_paths(path) {
        if !dir.is_absolute() {
            return None;
        }
        let file = dir.join(prog);
        if std::fs::metadata(&file)
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        {
            return Some(file);
        }
    }
    None
}

/// Start `file` showing `name` as its `argv[0]`, as a `PATH` search would.
pub fn program_named(file: &std::path::Path, name: &str) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(file);
    cmd.arg0(name);
    cmd
}

pub fn add_args(cmd: &mut tokio::process::Command, _program: &Program, args: &[String]) {
    cmd.args(args);
}

/// Environment variable that marks a task's processes with its `.proc` path.
pub const MARK: &str = "MPW_PROC_FILE";

/// Make sure a child is found again if the parent is killed between the
/// spawn and its `.proc` line (docs/ARCHITECTURE.md, "Crash safety").
///
/// Linux: an empty `.proc` file is made before the spawn and the child's
/// environment carries its path ([`MARK`]); recovery finds a process of an
/// empty `.proc` by that mark ([`marked`]). Nothing runs in the child before
/// its exec, so the standard library spawns with `posix_spawn` (no copy of
/// the coordinator's page tables: a fork cost more than the rest of a task).
/// The returned file is where the parent writes the line after the spawn.
///
/// Elsewhere the child writes `pid pgid -` itself between fork and exec and
/// the parent writes the whole line after the spawn.
#[cfg(target_os = "linux")]
pub fn mark_child(
    cmd: &mut tokio::process::Command,
    proc_path: &std::path::Path,
) -> Option<std::fs::File> {
    cmd.env(MARK, proc_path);
    std::fs::File::create(proc_path).ok()
}

#[cfg(not(target_os = "linux"))]
pub fn mark_child(
    cmd: &mut tokio::process::Command,
    proc_path: &std::path::Path,
) -> Option<std::fs::File> {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(proc_path.as_os_str().as_bytes()) else {
        return None;
    };
    // SAFETY: between fork and exec only async-signal-safe calls (getpid,
    // open, write, close) on memory made before the fork or on the stack.
    unsafe {
        cmd.pre_exec(move || {
            let mut buf = [0u8; 64];
            let n = proc_line(libc::getpid().unsigned_abs(), None, &mut buf);
            let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC;
            let fd = libc::open(path.as_ptr(), flags, 0o644 as libc::c_uint);
            if fd >= 0 {
                libc::write(fd, buf.as_ptr().cast(), n);
                libc::close(fd);
            }
            Ok(())
        });
    }
    None
}

/// The processes whose environment carries `proc_path` as [`MARK`]: those a
/// killed coordinator started but did not record. Read from `/proc`.
#[cfg(target_os = "linux")]
pub fn marked(proc_path: &std::path::Path) -> Vec<ProcInfo> {
    use std::os::unix::ffi::OsStrExt;
    let mut want = format!("{MARK}=").into_bytes();
    want.extend_from_slice(proc_path.as_os_str().as_bytes());
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(env) = std::fs::read(e.path().join("environ")) else {
            continue;
        };
        if env.split(|&b| b == 0).any(|v| v == want.as_slice()) {
            // SAFETY: getpgid has no memory effects.
            let pgid = unsafe { libc::getpgid(pid as libc::pid_t) };
            found.push(ProcInfo {
                pid,
                pgid: (pgid > 0).then_some(i64::from(pgid)),
                start_time: process_start_time(pid),
            });
        }
    }
    found
}

/// Elsewhere the child writes its own line: nothing to search for.
#[cfg(not(target_os = "linux"))]
pub fn marked(_proc_path: &std::path::Path) -> Vec<ProcInfo> {
    Vec::new()
}

/// `"<pid> <pid> <start or ->\n"` into `buf` without allocating; returns its length.
#[cfg_attr(target_os = "linux", allow(dead_code))]
fn proc_line(pid: u32, start: Option<u64>, buf: &mut [u8; 64]) -> usize {
    fn put(v: u64, buf: &mut [u8; 64], n: &mut usize) {
        let mut digits = [0u8; 20];
        let (mut v, mut k) = (v, 0);
        loop {
            digits[k] = b'0' + (v % 10) as u8;
            k += 1;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        for d in digits[..k].iter().rev() {
            buf[*n] = *d;
            *n += 1;
        }
    }
    let mut n = 0;
    for _ in 0..2 {
        put(u64::from(pid), buf, &mut n);
        buf[n] = b' ';
        n += 1;
    }
    match start {
        Some(t) => put(t, buf, &mut n),
        None => {
            buf[n] = b'-';
            n += 1;
        }
    }
    buf[n] = b'\n';
    n + 1
}

/// The task's stdin: `/dev/null`, opened once per process and duplicated
/// for each task (`Stdio::null` opens it again for every spawn).
pub fn null_stdin() -> std::process::Stdio {
    static NULL: std::sync::OnceLock<Option<std::fs::File>> = std::sync::OnceLock::new();
    NULL.get_or_init(|| std::fs::File::open("/dev/null").ok())
        .as_ref()
        .and_then(|f| f.try_clone().ok())
        .map_or_else(std::process::Stdio::null, Into::into)
}

/// The task leads its own process group, so that signals reach all it starts.
pub fn contain(wrap: &mut CommandWrap) {
    wrap.wrap(ProcessGroup::leader());
}

/// The group the spawned leader heads: its own pid.
pub fn group_id(pid: u32) -> Option<i64> {
    Some(i64::from(pid))
}

/// TERM (or KILL when `force`) to the group led by `pid`.
pub fn stop_tree(_child: &mut dyn ChildWrapper, pid: u32, force: bool) {
    let pgid = i32::try_from(pid).unwrap_or(0);
    for &sig in stop_signals(force) {
        signal_group(pgid, sig);
    }
}

/// TERM then CONT (stopped processes only act on TERM once continued), or KILL.
fn stop_signals(force: bool) -> &'static [i32] {
    if force {
        &[libc::SIGKILL]
    } else {
        &[libc::SIGTERM, libc::SIGCONT]
    }
}

/// Never to group 0 or 1: that would signal our own group, or everyone.
fn signal_group(pgid: i32, sig: i32) {
    if pgid > 1 {
        // SAFETY: plain syscall, no memory involved.
        unsafe { libc::killpg(pgid, sig) };
    }
}

/// Stop what a crashed coordinator left: its group, or the lone pid when no
/// group was recorded.
pub fn stop_stale(info: &ProcInfo, force: bool) {
    for &sig in stop_signals(force) {
        match info.pgid.and_then(|g| i32::try_from(g).ok()) {
            Some(pgid) => signal_group(pgid, sig),
            None => {
                if let Ok(pid) = i32::try_from(info.pid)
                    && pid > 1
                {
                    // SAFETY: plain syscall.
                    unsafe { libc::kill(pid, sig) };
                }
            }
        }
    }
}

pub fn exit_signal(status: &ExitStatus) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    status.signal()
}

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
impl ProcStat {
    /// Neither a zombie nor dead.
    fn live(&self) -> bool {
        self.state != b'Z' && self.state != b'X'
    }
}

#[cfg(target_os = "linux")]
fn proc_stat(pid: u32) -> Option<ProcStat> {
    if pid == 0 {
        return None;
    }
    use std::io::Read;
    // Read once per spawn: into a buffer on the stack, without the size
    // query `fs::read` makes (procfs answers 0). The fields used come in
    // the first few hundred bytes.
    let mut file = std::fs::File::open(format!("/proc/{pid}/stat")).ok()?;
    let mut buf = [0u8; 1024];
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    let text = &buf[..n];
    // "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
    let close = text.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&text[close + 1..]).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    // The first is field 3 (state), so field N is the (N - 3)th.
    let state = fields.next()?.bytes().next()?;
    let pgrp = fields.nth(1).and_then(|f| f.parse().ok());
    let starttime = fields.nth(16).and_then(|f| f.parse().ok());
    Some(ProcStat {
        state,
        pgrp,
        starttime,
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

/// Is a live (non-zombie) process with this pid there?
pub fn pid_alive(pid: u32) -> bool {
    if i32::try_from(pid).is_ok_and(|p| p > 0) {
        #[cfg(target_os = "linux")]
        {
            proc_stat(pid).is_some_and(|st| st.live())
        }
        #[cfg(not(target_os = "linux"))]
        {
            // SAFETY: plain syscall.
            answers(unsafe { libc::kill(pid as i32, 0) })
        }
    } else {
        false
    }
}

/// Does the process group still have a live (non-zombie) member?
pub fn group_alive(pgid: i64) -> bool {
    if !i32::try_from(pgid).is_ok_and(|g| g > 1) {
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
                .is_some_and(|st| st.pgrp == Some(pgid) && st.live())
        })
    }
    #[cfg(not(target_os = "linux"))]
    {
        // SAFETY: plain syscall.
        answers(unsafe { libc::killpg(pgid as i32, 0) })
    }
}

/// A signal 0 probe found someone: it succeeded, or the target exists but
/// is not ours to signal.
#[cfg(not(target_os = "linux"))]
fn answers(ret: libc::c_int) -> bool {
    ret == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// One malloc arena for the whole process instead of one per thread (up to
/// eight per core): the coordinator allocates little, and every extra arena
/// keeps freed memory of its own. glibc only.
pub fn one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes an allocator setting; called before the
    // runtime's threads start.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Give the allocator's free pages back to the system. A spawn that must run
/// code in the child (outside Linux, or with the jobserver) forks, and a fork
/// copies the page tables of every page the coordinator has, free or not.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory; any thread may call it.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    /// State, group and start time read as `ps` reads them: fields 3, 5
    /// and 22 of `/proc/<pid>/stat`, after a name with spaces and parentheses.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_stat_fields_are_read_past_an_odd_process_name() {
        use std::os::unix::process::CommandExt;
        // A process's name is the name of the file it runs.
        let dir = tempfile::tempdir().unwrap();
        let odd = dir.path().join("a) b (c");
        std::os::unix::fs::symlink("/bin/sleep", &odd).unwrap();
        let mut child = std::process::Command::new(&odd)
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = child.id();
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let fields: Vec<&str> = text[text.rfind(')').unwrap() + 2..].split(' ').collect();
        assert!(text.contains("(a) b (c)"), "{text}");
        let st = super::proc_stat(pid).unwrap();
        assert_eq!(st.state, fields[0].as_bytes()[0]);
        assert_eq!(st.pgrp, Some(i64::from(pid)));
        assert_eq!(st.starttime, fields[19].parse().ok());
        assert_eq!(super::process_start_time(pid), st.starttime);
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn the_childs_proc_line_reads_back_as_pid_group_and_start() {
        let mut buf = [0u8; 64];
        for pid in [1, 7, 4_294_967_295] {
            let n = super::proc_line(pid, None, &mut buf);
            assert_eq!(&buf[..n], format!("{pid} {pid} -\n").as_bytes());
            let n = super::proc_line(pid, Some(u64::MAX), &mut buf);
            assert_eq!(&buf[..n], format!("{pid} {pid} {}\n", u64::MAX).as_bytes());
        }
    }
}
