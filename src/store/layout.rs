//! Where mpw keeps its files (docs/ARCHITECTURE.md lists them).

use super::{Result, StoreError};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Where mpw keeps its files: `<git-common-dir>/mpw/`.
#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    pub fn new(common_dir: &Path) -> Self {
        Layout {
            root: common_dir.join("mpw"),
        }
    }
    pub fn db(&self) -> PathBuf {
        self.root.join("mpw.db")
    }
    pub fn integrate_lock(&self) -> PathBuf {
        self.root.join("integrate.lock")
    }
    pub fn run_dir(&self, run: &str) -> PathBuf {
        self.root.join("runs").join(run)
    }
    pub fn plan_json(&self, run: &str) -> PathBuf {
        self.run_dir(run).join("plan.json")
    }
    pub fn run_status(&self, run: &str) -> PathBuf {
        self.run_dir(run).join("run_status.json")
    }
    pub fn events_jsonl(&self, run: &str) -> PathBuf {
        self.run_dir(run).join("events.jsonl")
    }
    pub fn ws_json(&self, run: &str, ws: &str) -> PathBuf {
        self.run_dir(run)
            .join("workstreams")
            .join(format!("{ws}.json"))
    }
    /// Lock file held by the coordinator of a run while it works.
    pub fn run_lock(&self, run: &str) -> PathBuf {
        self.run_dir(run).join("coordinator.lock")
    }
    /// `logs/<ws>/<task>.<attempt>.out|.err`
    pub fn log(&self, run: &str, ws: &str, task: &str, attempt: u32, stderr: bool) -> PathBuf {
        let ext = if stderr { "err" } else { "out" };
        self.ws_logs(run, ws)
            .join(format!("{task}.{attempt}.{ext}"))
    }

    /// `logs/_integrate/`: the gate runs' logs and `.proc` files.
    pub fn gate_logs(&self, run: &str) -> PathBuf {
        self.run_dir(run).join("logs").join("_integrate")
    }

    /// `logs/_integrate/<ws>.<n>.out|.err`: the n-th gate run on a workstream.
    pub fn gate_log(&self, run: &str, ws: &str, n: u32, stderr: bool) -> PathBuf {
        let ext = if stderr { "err" } else { "out" };
        self.gate_logs(run).join(format!("{ws}.{n}.{ext}"))
    }

    /// The number of the last gate run on a workstream (None: no gate ran).
    pub fn last_gate_run(&self, run: &str, ws: &str) -> Option<u32> {
        let dir = self.gate_logs(run);
        let prefix = format!("{ws}.");
        std::fs::read_dir(dir)
            .ok()?
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                let n = name.strip_prefix(&prefix)?.strip_suffix(".out")?;
                n.parse().ok()
            })
            .max()
    }

    /// The command showing whichever of a log pair has content (standard
    /// error first: that is where failures usually speak); None when both
    /// are empty or missing.
    pub fn log_with_content(out: &Path, err: &Path) -> Option<bool> {
        let has = |p: &Path| fs::metadata(p).is_ok_and(|m| m.len() > 0);
        if has(err) {
            Some(true)
        } else if has(out) {
            Some(false)
        } else {
            None
        }
    }

    /// The warm workers' own stderr logs and `.proc` files: `logs/.workers/`
    /// (no workstream id starts with a dot).
    pub fn worker_logs(&self, run: &str) -> PathBuf {
        self.run_dir(run).join("logs").join(".workers")
    }

    /// Where mpw writes the adapters it carries.
    pub fn adapters(&self) -> PathBuf {
        self.root.join("adapters")
    }

    /// The logs of one workstream's setup commands and tasks.
    pub fn ws_logs(&self, run: &str, ws: &str) -> PathBuf {
        self.run_dir(run).join("logs").join(ws)
    }
}

/// Write a file atomically: temp file in the same directory, then rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// `write_atomic`, the content written by `fill` through a buffer: a big
/// status file is never held in memory whole.
pub fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    let io = |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io)?;
    #[allow(unused_mut)]
    let mut builder = tempfile::Builder::new();
    // A temp file is private (0600); these are ordinary files, so the umask decides.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    let tmp = builder.tempfile_in(dir).map_err(io)?;
    let mut w = std::io::BufWriter::new(tmp);
    fill(&mut w).map_err(io)?;
    let tmp = w.into_inner().map_err(|e| io(e.into_error()))?;
    // No fsync: these files are derived from the database and rewritten;
    // the rename is what keeps readers from ever seeing half a file.
    tmp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}
