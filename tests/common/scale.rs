//! Helpers for running a plan "elsewhere": a bare repository standing for
//! the remote, clones of it standing for runners or a colleague's machine,
//! and the workflow simulator of `scripts/`.

use super::{mpw, run_git, stdout_of, write_file};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A remote (`origin.git`, bare) holding one commit with the plan at
/// `plans/p.jsonc`, plus room for clones beside it.
pub struct Remote {
    pub dir: tempfile::TempDir,
    pub bare: PathBuf,
    pub plan_rel: &'static str,
}

/// A clone of the remote with an identity, as a developer has it.
pub struct Clone {
    pub path: PathBuf,
}

pub fn remote_with_plan(plan: &str) -> Remote {
    remote_with_files(plan, &[("README.md", "test repository\n")])
}

pub fn remote_with_files(plan: &str, files: &[(&str, &str)]) -> Remote {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    run_git(&src, &["init", "-q", "-b", "main"]);
    for (p, c) in files {
        write_file(&src.join(p), c.as_bytes());
    }
    write_file(&src.join("plans/p.jsonc"), plan.as_bytes());
    run_git(&src, &["add", "-A"]);
    run_git(
        &src,
        &[
            "-c",
            "user.name=Test",
            "-c",
            "user.email=test@example.com",
            "commit",
            "-q",
            "-m",
            "init",
        ],
    );
    let bare = dir.path().join("origin.git");
    run_git(
        dir.path(),
        &["clone", "-q", "--bare", "src", bare.to_str().unwrap()],
    );
    Remote {
        dir,
        bare,
        plan_rel: "plans/p.jsonc",
    }
}

impl Remote {
    /// A fresh clone named `name` beside the remote.
    pub fn clone_as(&self, name: &str) -> Clone {
        let path = self.dir.path().join(name);
        run_git(
            self.dir.path(),
            &["clone", "-q", self.bare.to_str().unwrap(), name],
        );
        run_git(&path, &["config", "user.name", "Local User"]);
        run_git(&path, &["config", "user.email", "local@example.com"]);
        Clone { path }
    }

    /// The tree a branch of the remote points at.
    pub fn tree_of(&self, branch: &str) -> String {
        run_git(&self.bare, &["rev-parse", &format!("{branch}^{{tree}}")])
    }

    /// `mpw export` of the plan from a clone, into `<name>.yml` beside the remote.
    pub fn export(&self, name: &str, args: &[&str]) -> PathBuf {
        let c = self.clone_as(&format!("export-{name}"));
        let out = self.dir.path().join(format!("{name}.yml"));
        let mut cmd = c.mpw();
        cmd.args(["export", self.plan_rel])
            .args(args)
            .args(["--out", out.to_str().unwrap()]);
        cmd.assert().success();
        out
    }

    /// Run `scripts/simulate_workflow.py` on a workflow against this remote.
    pub fn simulate(&self, workflow: &Path, name: &str) -> Simulation {
        let work = self.dir.path().join(format!("sim-{name}"));
        let summary = self.dir.path().join(format!("sim-{name}.json"));
        let out = Command::new("python3")
            .arg(script("simulate_workflow.py"))
            .arg(workflow)
            .arg("--remote")
            .arg(&self.bare)
            .arg("--work")
            .arg(&work)
            .arg("--summary")
            .arg(&summary)
            .output()
            .expect("python3 runs");
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(&summary)
            .unwrap_or_else(|e| panic!("no simulation summary ({e}); output:\n{log}"));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let jobs = v["jobs"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect();
        Simulation { work, jobs, log }
    }
}

/// What a simulated workflow run left.
pub struct Simulation {
    pub work: PathBuf,
    /// Job id -> success | failure | skipped.
    pub jobs: BTreeMap<String, String>,
    pub log: String,
}

impl Simulation {
    /// The checkout a job worked in (holding its `.git/mpw` records).
    pub fn workspace(&self, job: &str) -> Clone {
        Clone {
            path: self.work.join("jobs").join(job).join("workspace"),
        }
    }
}

impl Clone {
    pub fn mpw(&self) -> assert_cmd::Command {
        let mut c = mpw();
        c.current_dir(&self.path);
        c
    }

    pub fn git(&self, args: &[&str]) -> String {
        run_git(&self.path, args)
    }

    /// `mpw run` + `mpw integrate --into main`, as one would locally.
    pub fn run_and_integrate(&self, plan: &str, run_id: &str) {
        self.mpw()
            .args(["-q", "run", plan, "--run-id", run_id])
            .output()
            .unwrap();
        self.mpw()
            .args(["-q", "integrate", run_id, "--into", "main"])
            .output()
            .unwrap();
    }

    /// `mpw status --json`, parsed.
    pub fn status_json(&self, run_id: &str) -> serde_json::Value {
        let out = self
            .mpw()
            .args(["status", run_id, "--json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", super::stderr_of(&out));
        serde_json::from_str(&stdout_of(&out)).unwrap()
    }

    /// The first two columns of `mpw status`: every workstream and task with its state.
    pub fn status_states(&self, run_id: &str) -> Vec<(String, String)> {
        let out = self.mpw().args(["status", run_id]).output().unwrap();
        assert!(out.status.success(), "{}", super::stderr_of(&out));
        stdout_of(&out)
            .lines()
            .skip(2)
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                Some((w.next()?.to_string(), w.next()?.to_string()))
            })
            .filter(|(_, s)| s.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
            .collect()
    }
}

/// Run, workstream and task states (and task attempts) of a status object.
pub fn states(st: &serde_json::Value) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert("run".into(), st["state"].as_str().unwrap().to_string());
    for w in st["workstreams"].as_array().unwrap() {
        let id = w["id"].as_str().unwrap();
        m.insert(id.into(), w["state"].as_str().unwrap().to_string());
        for t in w["tasks"].as_array().unwrap() {
            m.insert(
                format!("{id}/{}", t["id"].as_str().unwrap()),
                format!("{} x{}", t["state"].as_str().unwrap(), t["attempts"]),
            );
        }
    }
    m
}

pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name)
}

/// `--install` for exported workflows: copy the mpw built for these tests
/// where a hosted runner has cargo's binaries.
pub fn install_built_mpw() -> String {
    format!(
        "mkdir -p \"$HOME/.cargo/bin\" && cp '{}' \"$HOME/.cargo/bin/mpw\"",
        env!("CARGO_BIN_EXE_mpw")
    )
}

/// Python 3 with these modules importable, or why not.
pub fn python_with(modules: &[&str]) -> Result<(), String> {
    let code = modules
        .iter()
        .map(|m| format!("import {m}"))
        .collect::<Vec<_>>()
        .join("; ");
    match Command::new("python3").args(["-c", &code]).output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(String::from_utf8_lossy(&o.stderr).trim().to_string()),
        Err(e) => Err(format!("python3: {e}")),
    }
}
