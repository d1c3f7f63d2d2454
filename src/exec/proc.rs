//! The `.proc` file next to a task's output (`T2.1.out` → `T2.1.proc`): the
//! identity of its process while it runs, so that `mpw resume` can end what a
//! crashed coordinator left running, and only if it is still ours.

use super::{ProcInfo, os};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tracing::debug;

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

/// Write the `.proc` line of a started task into `file` (made before the
/// spawn, see `os::mark_child`) or else into a new file at `path`. A failure
/// is only logged: the task runs on without it.
pub(super) fn record(path: &Path, file: Option<std::fs::File>, info: &ProcInfo) {
    use std::io::Write;
    let written = match file {
        Some(mut f) => f.write_all(info.to_line().as_bytes()),
        None => std::fs::write(path, info.to_line()),
    };
    if let Err(e) = written {
        debug!(pid = info.pid, "writing {}: {e}", path.display());
    }
}

/// The task's tree has ended: nothing left to find.
pub(super) fn forget(path: &Path) {
    let _ = std::fs::remove_file(path);
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
            // No line: the coordinator died between the spawn and writing it.
            let infos = match info {
                Some(info) => vec![info],
                None => os::marked(&p),
            };
            for info in infos {
                if kill_stale(&info, grace) {
                    ended += 1;
                }
            }
            forget(&p);
        }
    }
    ended
}

/// Start time of a pid as the OS reports it (Linux: field 22 of
/// /proc/<pid>/stat, clock ticks since boot; macOS: start time in µs since
/// the epoch; Windows: creation time in 100 ns units since 1601), None where
/// unknown.
pub fn process_start_time(pid: u32) -> Option<u64> {
    os::process_start_time(pid)
}

/// Is the process (or, on Unix, what is left of its process group) still
/// alive and the same one we started? A pid that is alive with another start
/// time was reused: not ours. When the leader is gone but its group still has
/// members, the group is ours (a pid is not reused while a group carries it).
pub fn is_alive(info: &ProcInfo) -> bool {
    if let Some(recorded) = info.start_time
        && let Some(now) = os::process_start_time(info.pid)
        && recorded != now
    {
        return false;
    }
    if os::pid_alive(info.pid) {
        return true;
    }
    info.pgid.is_some_and(os::group_alive)
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
    os::stop_stale(info, false);
    if !gone(grace) {
        os::stop_stale(info, true);
        gone(Duration::from_secs(2));
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_lines_round_trip_with_unknown_fields() {
        let info = ProcInfo {
            pid: 42,
            pgid: None,
            start_time: Some(7),
        };
        assert_eq!(info.to_line(), "42 - 7\n");
        assert_eq!(ProcInfo::from_line(&info.to_line()), Some(info));
        assert_eq!(ProcInfo::from_line("not a pid"), None);
        assert_eq!(ProcInfo::from_line("42 -"), None, "cut short");
    }

    #[test]
    fn leftovers_of_dead_processes_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let stdout = dir.path().join("T1.out");
        let dead = ProcInfo {
            pid: u32::MAX - 1,
            pgid: None,
            start_time: None,
        };
        record(&stdout.with_extension("proc"), None, &dead);
        std::fs::write(dir.path().join("T2.proc"), "garbage").unwrap();
        std::fs::write(dir.path().join("T1.out"), "kept").unwrap();

        let logs = [dir.path().to_path_buf(), dir.path().join("missing")];
        assert_eq!(end_leftovers(&logs, Duration::from_millis(10)), 0);
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["T1.out"]);
    }

    /// A coordinator killed between a spawn and the `.proc` line leaves the
    /// empty file made before the spawn: its process is found by the mark in
    /// its environment and ended.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_process_without_its_line_is_found_by_its_mark_and_ended() {
        use std::os::unix::process::CommandExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("T1.1.proc");
        std::fs::write(&path, "").unwrap();
        let other = dir.path().join("T2.1.proc");
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .env(os::MARK, &path)
            .process_group(0)
            .spawn()
            .unwrap();
        let pids = |p: &Path| os::marked(p).iter().map(|i| i.pid).collect::<Vec<_>>();
        // Recovery scans long after the spawn; a scan at once may find the
        // child not yet readable on a loaded machine: look a few times.
        let mut found = pids(&path);
        for _ in 0..50 {
            if found == [child.id()] {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
            found = pids(&path);
        }
        let environ = std::fs::read(format!("/proc/{}/environ", child.id()))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "));
        assert_eq!(found, [child.id()], "the child's environ: {environ:?}");
        assert!(
            pids(&other).is_empty(),
            "another task's mark is not this one"
        );
        let logs = [dir.path().to_path_buf()];
        assert_eq!(end_leftovers(&logs, Duration::from_secs(5)), 1);
        assert_eq!(child.wait().unwrap().code(), None, "ended by a signal");
        assert!(!path.exists());
    }
}
