//! `.worktreeinclude`: ignored files copied into each new worktree, never
//! committed, and named by `plan check`.

mod common;

use common::{stderr_of, stdout_of};

/// A repository whose ignored files are the usual local ones, with a
/// `.worktreeinclude` naming some of them.
fn repo_with_local_files() -> common::TestRepo {
    let repo = common::repo()
        .with_file(".gitignore", ".env\nconfig/local.toml\n*.log\nbuild/\n")
        .with_file("config/app.toml", "name = \"app\"\n")
        .with_file(
            ".worktreeinclude",
            "# local settings every worktree needs\n.env\nconfig/local.toml\nbuild/keep.cfg\n",
        )
        .commit("init");
    repo.write(".env", "SECRET=1\n");
    repo.write("config/local.toml", "debug = true\n");
    repo.write("debug.log", "not wanted\n");
    repo.write("build/out.bin", "not wanted either\n");
    repo.write("build/keep.cfg", "wanted\n");
    repo
}

const PLAN: &str = r#"{
  "workstreams": [ { "id": "A", "tasks": [
    { "id": "T1", "run": "cat .env config/local.toml build/keep.cfg > seen.txt" }
  ] } ]
}"#;

#[test]
fn included_files_are_copied_into_the_worktree_and_never_committed() {
    let repo = repo_with_local_files();
    let plan = repo.plan("include", PLAN);
    let out = repo.mpw().arg("run").arg(&plan).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let run_id = stdout_of(&out).lines().next().unwrap().trim().to_string();

    let wt = repo.worktree_root().join(&run_id).join("A");
    assert_eq!(
        std::fs::read_to_string(wt.join("seen.txt")).unwrap(),
        "SECRET=1\ndebug = true\nwanted\n"
    );
    assert!(!wt.join("debug.log").exists());
    assert!(!wt.join("build/out.bin").exists());

    let tree = repo.git(&["ls-tree", "-r", "--name-only", &format!("mpw/{run_id}/A")]);
    let files: Vec<String> = tree.lines().map(str::to_string).collect();
    assert!(files.contains(&"seen.txt".to_string()), "{files:?}");
    for local in [".env", "config/local.toml", "build/keep.cfg"] {
        assert!(
            !files.contains(&local.to_string()),
            "{local} committed: {files:?}"
        );
    }
}

#[test]
fn plan_check_names_the_files_each_worktree_gets() {
    let repo = repo_with_local_files();
    let plan = repo.plan(
        "include",
        r#"{ "globals": { "copy": ["notes.txt"] },
             "workstreams": [ { "id": "A", "tasks": [ { "id": "T1", "run": "true" } ] } ] }"#,
    );
    let out = repo.plan_check(&plan);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let text = stdout_of(&out);
    assert!(text.contains("copied into each new worktree"), "{text}");
    for line in [
        "notes.txt  (globals.copy)",
        ".env  (.worktreeinclude)",
        "build/keep.cfg  (.worktreeinclude)",
        "config/local.toml  (.worktreeinclude)",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    assert!(
        !text.contains("debug.log") && !text.contains("out.bin"),
        "{text}"
    );

    let out = repo
        .mpw()
        .args(["plan", "check", "--json"])
        .arg(&plan)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["copy"]["worktreeinclude"],
        serde_json::json!([".env", "build/keep.cfg", "config/local.toml"])
    );
}
