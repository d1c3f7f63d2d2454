//! The machine pool: one budget for every mpw process of a user on this
//! machine. Slot `n` is the file `slot-<n>.lock` in the state directory, held
//! with `File::try_lock`, so the OS frees the slots of a process that dies.
//! Who holds it is in `slot-<n>.json` beside it (a locked file cannot be read
//! on Windows). See docs/ARCHITECTURE.md, "Slots, jobserver and the machine pool".

use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

/// How many slots the machine has: `MPW_MACHINE_SLOTS`, else `machine_slots`
/// of the user's config file, else the number of physical cores. 0 means no pool.
pub fn size() -> Result<usize, String> {
    if let Ok(v) = std::env::var("MPW_MACHINE_SLOTS") {
        return v.trim().parse().map_err(|_| {
            format!("MPW_MACHINE_SLOTS must be a number of slots (0 = off), found `{v}`")
        });
    }
    if let Some(path) = config_file() {
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                #[derive(Deserialize)]
                struct Config {
                    machine_slots: Option<usize>,
                }
                let c: Config =
                    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
                if let Some(n) = c.machine_slots {
                    return Ok(n);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
    }
    Ok(physical_cores())
}

/// The default pool: physical cores, as compilers gain little from a
/// second hardware thread per core.
pub fn physical_cores() -> usize {
    num_cpus::get_physical().max(1)
}

fn env_dir(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// `mpw/<leaf>` under the user's folder for it: `%<windows>%` on Windows,
/// elsewhere `$<xdg>` or else `~/<home>`.
fn user_path(windows: &str, xdg: &str, home: &str, leaf: &str) -> Option<PathBuf> {
    let base = if cfg!(windows) {
        env_dir(windows)
    } else {
        env_dir(xdg).or_else(|| env_dir("HOME").map(|h| h.join(home)))
    };
    base.map(|b| b.join("mpw").join(leaf))
}

/// `$XDG_CONFIG_HOME/mpw/config.json` (`~/.config`), `%APPDATA%\mpw\config.json`.
pub fn config_file() -> Option<PathBuf> {
    user_path("APPDATA", "XDG_CONFIG_HOME", ".config", "config.json")
}

/// `$XDG_STATE_HOME/mpw/slots` (`~/.local/state`), `%LOCALAPPDATA%\mpw\slots`.
pub fn dir() -> Option<PathBuf> {
    user_path("LOCALAPPDATA", "XDG_STATE_HOME", ".local/state", "slots")
}

/// Who holds a slot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Holder {
    pub slot: usize,
    pub pid: u32,
    pub run: String,
    /// The task it runs for; none while it feeds the run's jobserver.
    pub task: Option<String>,
}

/// The slots this process holds.
pub struct Pool {
    dir: PathBuf,
    size: usize,
    run: String,
    held: Vec<(usize, File, Option<String>)>,
    /// `want-<pid>.lock`, held while this process waits for a slot.
    wanting: Option<File>,
}

fn lock_path(dir: &Path, n: usize) -> PathBuf {
    dir.join(format!("slot-{n}.lock"))
}

fn info_path(dir: &Path, n: usize) -> PathBuf {
    dir.join(format!("slot-{n}.json"))
}

fn open(dir: &Path, n: usize) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock_path(dir, n))
}

impl Pool {
    /// The folder is made when the first slot is taken.
    pub fn new(dir: PathBuf, size: usize, run: &str) -> io::Result<Pool> {
        Ok(Pool {
            dir,
            size,
            run: run.into(),
            held: Vec::new(),
            wanting: None,
        })
    }

    pub fn size(&self) -> usize {
        self.size
    }

    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// One more slot, if one is free now.
    pub fn take(&mut self) -> io::Result<bool> {
        std::fs::create_dir_all(&self.dir)?;
        for n in 0..self.size {
            if self.held.iter().any(|h| h.0 == n) {
                continue;
            }
            let f = open(&self.dir, n)?;
            match f.try_lock() {
                Ok(()) => {
                    self.held.push((n, f, None));
                    self.write_info(n, None)?;
                    return Ok(true);
                }
                Err(std::fs::TryLockError::WouldBlock) => continue,
                Err(std::fs::TryLockError::Error(e)) => return Err(e),
            }
        }
        Ok(false)
    }

    /// Give back slots until `keep` are held.
    pub fn keep(&mut self, keep: usize) {
        while self.held.len() > keep {
            if let Some((n, f, _)) = self.held.pop() {
                // Before the unlock: a new holder writes its own after.
                let _ = std::fs::remove_file(info_path(&self.dir, n));
                drop(f);
            }
        }
    }

    /// Say whether this process waits for a slot, so that holders that hoard
    /// slots for their tools give back what they do not use.
    pub fn want(&mut self, on: bool) -> io::Result<()> {
        let path = self.dir.join(format!("want-{}.lock", std::process::id()));
        match (on, self.wanting.is_some()) {
            (true, false) => {
                std::fs::create_dir_all(&self.dir)?;
                let f = OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&path)?;
                f.lock()?;
                self.wanting = Some(f);
            }
            (false, true) => {
                let _ = std::fs::remove_file(&path);
                self.wanting = None;
            }
            _ => {}
        }
        Ok(())
    }

    /// Does another process wait for a slot? A want file nobody holds is
    /// left from a process that died: removed.
    pub fn others_want(&self) -> bool {
        let own = format!("want-{}.lock", std::process::id());
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return false;
        };
        let mut any = false;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with("want-") || name == own {
                continue;
            }
            let Ok(f) = OpenOptions::new().write(true).open(e.path()) else {
                continue;
            };
            match f.try_lock() {
                Ok(()) => {
                    let _ = std::fs::remove_file(e.path());
                }
                Err(_) => any = true,
            }
        }
        any
    }

    /// Name the task each held slot runs for, in order; the rest feed the jobserver.
    pub fn label(&mut self, tasks: &[String]) -> io::Result<()> {
        for k in 0..self.held.len() {
            let want = tasks.get(k).cloned();
            if self.held[k].2 != want {
                let n = self.held[k].0;
                self.held[k].2 = want.clone();
                self.write_info(n, want)?;
            }
        }
        Ok(())
    }

    fn write_info(&self, n: usize, task: Option<String>) -> io::Result<()> {
        let h = Holder {
            slot: n,
            pid: std::process::id(),
            run: self.run.clone(),
            task,
        };
        let tmp = self
            .dir
            .join(format!(".slot-{n}.{}.tmp", std::process::id()));
        std::fs::write(&tmp, serde_json::to_vec(&h).expect("holder is JSON"))?;
        std::fs::rename(&tmp, info_path(&self.dir, n))
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let _ = self.want(false);
    }
}

/// The holders of the slots of `dir` (numbers below `size`), by slot. A slot
/// whose lock is free has no holder, whatever its stale `.json` says.
pub fn holders(dir: &Path, size: usize) -> io::Result<Vec<Holder>> {
    let mut out = Vec::new();
    if !dir.exists() {
        return Ok(out);
    }
    for n in 0..size {
        if !lock_path(dir, n).exists() {
            continue;
        }
        let f = open(dir, n)?;
        match f.try_lock() {
            Ok(()) => continue,
            Err(std::fs::TryLockError::WouldBlock) => {}
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
        let h = std::fs::read(info_path(dir, n))
            .ok()
            .and_then(|b| serde_json::from_slice::<Holder>(&b).ok())
            .unwrap_or(Holder {
                slot: n,
                pid: 0,
                run: "?".into(),
                task: None,
            });
        out.push(Holder { slot: n, ..h });
    }
    Ok(out)
}

/// "4/4 held by run 01J…" for a task that waits for the machine.
pub fn describe_full(dir: &Path, size: usize, own_run: &str) -> String {
    let hs = holders(dir, size).unwrap_or_default();
    let mut runs: Vec<&str> = hs
        .iter()
        .map(|h| h.run.as_str())
        .filter(|r| *r != own_run)
        .collect();
    runs.dedup();
    let by = match runs.as_slice() {
        [] => "this run".to_string(),
        [one] => format!("run {one}"),
        many => format!("runs {}", many.join(", ")),
    };
    format!("{}/{size} held by {by}", hs.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lock let go of here can still be held for a moment by a child that
    /// another test forked (it holds a copy of the descriptor until its
    /// exec), so a check that a lock is free waits for that moment to pass.
    fn eventually(mut ok: impl FnMut() -> bool) -> bool {
        (0..500).any(|_| {
            ok() || {
                std::thread::sleep(std::time::Duration::from_millis(10));
                false
            }
        })
    }

    #[test]
    fn slots_are_taken_once_named_and_given_back() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("slots");
        let mut a = Pool::new(dir.clone(), 2, "RUN-A").unwrap();
        let mut b = Pool::new(dir.clone(), 2, "RUN-B").unwrap();
        assert!(a.take().unwrap());
        assert!(b.take().unwrap());
        assert!(!a.take().unwrap(), "both slots are held");
        a.label(&["T1".into()]).unwrap();
        let hs = holders(&dir, 2).unwrap();
        assert_eq!(hs.len(), 2);
        assert_eq!(hs[0].run, "RUN-A");
        assert_eq!(hs[0].task.as_deref(), Some("T1"));
        assert_eq!(hs[1].run, "RUN-B");
        assert_eq!(describe_full(&dir, 2, "RUN-B"), "2/2 held by run RUN-A");
        b.keep(0);
        assert!(eventually(|| a.take().unwrap()), "B's slot is free again");
        drop(a);
        assert!(eventually(|| holders(&dir, 2).unwrap().is_empty()));
    }

    #[test]
    fn a_waiting_process_is_seen_and_a_dead_ones_want_file_removed() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("slots");
        let mut pool = Pool::new(dir.clone(), 2, "RUN").unwrap();
        pool.want(true).unwrap();
        assert!(!pool.others_want(), "its own want file does not count");
        // Another process's want file, held while it waits.
        let other = dir.join("want-1.lock");
        let f = File::create(&other).unwrap();
        f.lock().unwrap();
        assert!(pool.others_want());
        drop(f);
        assert!(
            eventually(|| !pool.others_want()),
            "nobody holds it: that process is gone"
        );
        assert!(!other.exists(), "a dead process's want file is removed");
        drop(pool);
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "nothing left behind"
        );
    }
}
