//! Test helpers: real repositories in temp dirs and the real `mpw` binary.
//!
//! ```ignore
//! let repo = repo().with_file("src/lib.rs", "fn a() {}\n").commit("init");
//! let plan = repo.plan("demo", r#"{ "workstreams": [...] }"#);
//! repo.mpw().args(["run", plan.to_str().unwrap()]).assert().success();
//! ```
#![allow(dead_code)]

pub mod scale;

use std::path::{Path, PathBuf};
use std::process::Command;

/// A repository being built: files first, then `commit()`.
pub struct RepoBuilder {
    dir: tempfile::TempDir,
    files: Vec<(String, Vec<u8>)>,
    name: String,
}

/// A temp dir holding `repo/` (the main worktree) and room beside it
/// (plans, bare remotes, `repo.mpw/` worktrees).
pub struct TestRepo {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

pub fn repo() -> RepoBuilder {
    RepoBuilder {
        dir: tempfile::tempdir().expect("tempdir"),
        files: Vec::new(),
        name: "repo".into(),
    }
}

impl RepoBuilder {
    /// Name of the repository folder (to test spaces and non-ASCII paths).
    pub fn named(mut self, name: &str) -> Self {
        self.name = name.into();
        self
    }

    pub fn with_file(mut self, path: &str, content: impl AsRef<[u8]>) -> Self {
        self.files.push((path.into(), content.as_ref().to_vec()));
        self
    }

    /// `n` small files under `dir/`, for repositories of a realistic size.
    pub fn with_many_files(mut self, dir: &str, n: usize) -> Self {
        for i in 0..n {
            self.files.push((
                format!("{dir}/f{i:05}.txt"),
                format!("line {i}\n").into_bytes(),
            ));
        }
        self
    }

    /// `git init` without a commit.
    pub fn init(self) -> TestRepo {
        let path = self.dir.path().join(&self.name);
        std::fs::create_dir_all(&path).unwrap();
        run_git(&path, &["init", "-q", "-b", "main"]);
        run_git(&path, &["config", "user.name", "Test User"]);
        run_git(&path, &["config", "user.email", "test@example.com"]);
        run_git(&path, &["config", "commit.gpgsign", "false"]);
        let repo = TestRepo {
            dir: self.dir,
            path,
        };
        for (p, c) in &self.files {
            repo.write(p, c);
        }
        repo
    }

    /// `git init`, write the files, commit them on `main`.
    pub fn commit(self, message: &str) -> TestRepo {
        let has_files = !self.files.is_empty();
        let repo = self.init();
        if !has_files {
            repo.write("README.md", "test repository\n");
        }
        repo.git(&["add", "-A"]);
        repo.git(&["commit", "-q", "-m", message]);
        repo
    }
}

impl TestRepo {
    pub fn write(&self, rel: &str, content: impl AsRef<[u8]>) {
        write_file(&self.path.join(rel), content.as_ref());
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path.join(rel)).unwrap()
    }

    /// Run git in the main worktree; panics on failure; returns trimmed stdout.
    pub fn git(&self, args: &[&str]) -> String {
        run_git(&self.path, args)
    }

    /// Run git and return (success, stdout, stderr) without panicking.
    pub fn git_try(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new("git")
            .args(args)
            .current_dir(&self.path)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        )
    }

    pub fn head(&self, rev: &str) -> String {
        self.git(&["rev-parse", rev])
    }

    /// Commit everything in the main worktree.
    pub fn commit_all(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-m", message]);
        self.head("HEAD")
    }

    /// Write a plan file beside the repository (not inside it) and return its path.
    pub fn plan(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join("plans").join(format!("{name}.jsonc"));
        write_file(&p, text.as_bytes());
        p
    }

    /// `mpw plan check PLAN`, finished.
    pub fn plan_check(&self, plan: &Path) -> std::process::Output {
        self.mpw()
            .args(["plan", "check"])
            .arg(plan)
            .output()
            .unwrap()
    }

    /// The run's events, parsed from its `events.jsonl`, in order.
    pub fn events(&self, run: &str) -> Vec<serde_json::Value> {
        let p = self.mpw_dir().join("runs").join(run).join("events.jsonl");
        std::fs::read_to_string(&p)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The `mpw` binary, run inside the repository, colours off, with the
    /// test's own machine slot pool.
    pub fn mpw(&self) -> assert_cmd::Command {
        let mut c = mpw();
        c.current_dir(&self.path)
            .env("XDG_STATE_HOME", self.state_home());
        c
    }

    /// The `mpw` binary as a process to start and then watch, signal or
    /// kill: the same environment as `mpw()`.
    pub fn mpw_process(&self) -> Command {
        let mut c = Command::new(assert_cmd::cargo::cargo_bin("mpw"));
        c.current_dir(&self.path)
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .env("XDG_STATE_HOME", self.state_home());
        c
    }

    /// `mpw -q run PLAN` started in the background, as from a second
    /// terminal: the same environment as `mpw()`, plus `envs`; output piped.
    pub fn spawn_run(&self, plan: &Path, envs: &[(&str, &str)]) -> std::process::Child {
        self.mpw_process()
            .args(["-q", "run"])
            .arg(plan)
            .envs(envs.iter().copied())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// This test's `XDG_STATE_HOME`: its machine slots, shared by nobody else.
    pub fn state_home(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The repository's git common dir (`.git`).
    pub fn common_dir(&self) -> PathBuf {
        self.path.join(".git")
    }

    pub fn mpw_dir(&self) -> PathBuf {
        self.common_dir().join("mpw")
    }

    /// `run_status.json` of a run, parsed.
    pub fn run_status(&self, run_id: &str) -> serde_json::Value {
        let p = self
            .mpw_dir()
            .join("runs")
            .join(run_id)
            .join("run_status.json");
        let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        serde_json::from_str(&text).unwrap()
    }

    /// Default worktree root: `<repo>.mpw` beside the repository.
    pub fn worktree_root(&self) -> PathBuf {
        self.dir.path().join(format!(
            "{}.mpw",
            self.path.file_name().unwrap().to_string_lossy()
        ))
    }

    /// Files changed by a commit (`git show --name-only`).
    pub fn files_of(&self, rev: &str) -> Vec<String> {
        self.git(&["show", "--name-only", "--format=", rev])
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// The `mpw` binary with colours off and no inherited log filter.
pub fn mpw() -> assert_cmd::Command {
    let mut c = assert_cmd::Command::cargo_bin("mpw").unwrap();
    c.env("NO_COLOR", "1").env_remove("RUST_LOG");
    c
}

pub fn run_git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_DATE", "2026-01-01T00:00:00Z")
        .env("GIT_COMMITTER_DATE", "2026-01-01T00:00:00Z")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} in {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn write_file(path: &Path, content: &[u8]) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, content).unwrap();
}

/// Path to a file under `testdata/`.
pub fn testdata(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(rel)
}

/// Stdout of a finished command as text.
pub fn stdout_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

pub fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// `mpw run` of a plan written from `plan_text`, with `extra` arguments;
/// returns (exit code, the run id from stdout's first line, stdout, stderr).
pub fn run_plan(repo: &TestRepo, plan_text: &str, extra: &[&str]) -> (i32, String, String, String) {
    let plan = repo.plan("p", plan_text);
    let out = repo
        .mpw()
        .arg("run")
        .arg(&plan)
        .args(extra)
        .output()
        .unwrap();
    let stdout = stdout_of(&out);
    let id = stdout.lines().next().unwrap_or("").trim().to_string();
    (out.status.code().unwrap_or(-1), id, stdout, stderr_of(&out))
}

/// The `kind` of each event of a JSON-lines text (`events.jsonl`, `mpw events --json`).
pub fn kinds_of(jsonl: &str) -> Vec<String> {
    jsonl
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["kind"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// The command succeeded; else fail showing what it printed.
pub fn assert_ok(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        stdout_of(out),
        stderr_of(out)
    );
}

/// The events of one kind.
pub fn of_kind<'a>(evs: &'a [serde_json::Value], kind: &str) -> Vec<&'a serde_json::Value> {
    evs.iter().filter(|e| e["kind"] == kind).collect()
}

/// One workstream of a `run_status.json`.
pub fn ws<'a>(st: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    st["workstreams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["id"] == id)
        .unwrap_or_else(|| panic!("no workstream {id} in {st:#}"))
}

/// One task of a `run_status.json`.
pub fn task<'a>(st: &'a serde_json::Value, ws_id: &str, id: &str) -> &'a serde_json::Value {
    ws(st, ws_id)["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id)
        .unwrap_or_else(|| panic!("no task {ws_id}/{id}"))
}

/// Poll `f` every 50 ms until it holds; panics naming `what` after `timeout`.
pub fn wait_until(what: &str, timeout: std::time::Duration, mut f: impl FnMut() -> bool) {
    let end = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < end {
        if f() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

/// Milliseconds since the epoch of an RFC 3339 time in a status file.
pub fn ms_of(v: &serde_json::Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("no time: {v}")))
        .unwrap()
        .timestamp_millis()
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Is `pid` a live process (kill -0; a zombie, or one gone meanwhile, is not)?
#[cfg(unix)]
pub fn alive(pid: i32) -> bool {
    // kill -0, and a zombie does not count.
    let ok = unsafe { libc::kill(pid, 0) } == 0;
    ok && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(true)
}
