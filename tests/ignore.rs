//! `globals.ignore`, `workstreams[].ignore` and the default list of tool
//! output: ignored paths are never committed and never quarantine a task.

mod common;

use common::*;

/// Run a plan; returns (exit code, stdout, stderr).
fn run_plan(repo: &TestRepo, plan_text: &str) -> (i32, String, String) {
    let plan = repo.plan("p", plan_text);
    // Python writes its bytecode, as it does by default.
    let out = repo
        .mpw()
        .env_remove("PYTHONDONTWRITEBYTECODE")
        .arg("run")
        .arg(&plan)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        stdout_of(&out),
        stderr_of(&out),
    )
}

fn python_project() -> TestRepo {
    repo()
        .with_file("toolz/__init__.py", "")
        .with_file("toolz/core.py", "def inc(x):\n    return x + 1\n")
        .commit("init")
}

#[test]
fn a_read_only_python_task_writing_bytecode_is_not_quarantined() {
    let repo = python_project();
    let (code, stdout, stderr) = run_plan(
        &repo,
        r#"{ "run_id": "R", "workstreams": [ { "id": "W", "tasks": [
            { "id": "test", "read_only": true,
              "run": "python3 -c 'import toolz.core; assert toolz.core.inc(1) == 2'" }
        ] } ] }"#,
    );
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    let st = repo.run_status("R");
    assert_eq!(task(&st, "W", "test")["state"], "SUCCEEDED");
    // Python did write its bytecode: the defaults, not luck, kept it out.
    let wt = repo.worktree_root().join("R").join("W");
    assert!(wt.join("toolz/__pycache__").is_dir());
}

#[test]
fn a_mutating_task_commits_its_change_without_the_cache_files() {
    let repo = python_project();
    let (code, stdout, stderr) = run_plan(
        &repo,
        r#"{ "run_id": "R", "workstreams": [ { "id": "W", "tasks": [
            { "id": "edit", "run": "echo 'def dec(x):\n    return x - 1' >> toolz/core.py && python3 -c 'import toolz.core' && mkdir -p .pytest_cache && echo x > .pytest_cache/v && echo x > .DS_Store" }
        ] } ] }"#,
    );
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert_eq!(repo.files_of("mpw/R/W"), vec!["toolz/core.py"]);
    let wt = repo.worktree_root().join("R").join("W");
    assert!(wt.join("toolz/__pycache__").is_dir());
    assert!(!stdout.contains("hint:"), "{stdout}");
}

#[test]
fn ignore_defaults_false_commits_cache_files_and_says_so() {
    let repo = python_project();
    let (code, stdout, stderr) = run_plan(
        &repo,
        r#"{ "run_id": "R", "globals": { "ignore_defaults": false },
             "workstreams": [ { "id": "W", "tasks": [
            { "id": "edit", "run": "mkdir -p toolz/__pycache__ && echo a > toolz/__pycache__/a.pyc && echo b > toolz/__pycache__/b.pyc && echo '# x' >> toolz/core.py" }
        ] } ] }"#,
    );
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    let files = repo.files_of("mpw/R/W");
    assert_eq!(
        files,
        vec![
            "toolz/__pycache__/a.pyc",
            "toolz/__pycache__/b.pyc",
            "toolz/core.py"
        ]
    );
    let hint = "committed 2 files under __pycache__/: add them to globals.ignore?";
    // In the summary, and in the task's event.
    assert!(
        stdout.contains(&format!("hint: W/edit: {hint}")),
        "{stdout}"
    );
    let events = repo.events("R");
    let succeeded = *of_kind(&events, "TASK_SUCCEEDED")
        .first()
        .expect("a TASK_SUCCEEDED event");
    assert_eq!(succeeded["hint"], hint, "{succeeded:#}");
}

#[test]
fn custom_ignore_globs_of_globals_and_workstream_are_never_committed_nor_quarantine() {
    let repo = repo().with_file("src/a.txt", "a\n").commit("init");
    let (code, stdout, stderr) = run_plan(
        &repo,
        r#"{ "run_id": "R", "globals": { "ignore": ["*.tmp", "out/"] },
             "workstreams": [
               { "id": "W", "allowed_paths": ["src/**"], "ignore": ["scratch/**", "!keep.tmp"],
                 "tasks": [
                   { "id": "edit", "run": "echo b > src/b.txt && echo t > x.tmp && mkdir -p out scratch/d && echo o > out/o && echo s > scratch/d/s && echo k > src/keep.tmp" },
                   { "id": "check", "read_only": true, "depends_on": ["edit"],
                     "run": "echo t > y.tmp && echo o > out/p" }
                 ] },
               { "id": "V", "tasks": [ { "id": "t", "run": "echo s > scratch.txt && mkdir -p scratch && echo s > scratch/s" } ] }
             ] }"#,
    );
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert_eq!(repo.files_of("mpw/R/W"), vec!["src/b.txt", "src/keep.tmp"]);
    // The workstream's own patterns are its own.
    assert_eq!(repo.files_of("mpw/R/V"), vec!["scratch.txt", "scratch/s"]);
    let st = repo.run_status("R");
    assert_eq!(task(&st, "W", "check")["state"], "SUCCEEDED");
}

#[test]
fn an_invalid_ignore_pattern_is_a_plan_error_with_its_location() {
    let repo = repo().commit("init");
    let plan = repo.plan(
        "bad",
        "{ \"workstreams\": [ { \"id\": \"W\",\n  \"ignore\": [\"a[z-a]\"],\n  \"tasks\": [ { \"id\": \"t\", \"run\": \"true\" } ] } ] }",
    );
    let out = repo.plan_check(&plan);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr_of(&out) + &stdout_of(&out);
    assert!(err.contains("bad.jsonc:2:"), "{err}");
    assert!(err.contains("`a[z-a]`"), "{err}");
}
