//! After a failure, mpw names the log that has content and one next step;
//! `integrate` says what it left unmerged and exits 1 for it.

mod common;

use common::*;

fn run(repo: &TestRepo, name: &str, plan: &str) -> (i32, String, String, std::path::PathBuf) {
    let plan = repo.plan(name, plan);
    let out = repo.mpw().arg("run").arg(&plan).output().unwrap();
    let code = out.status.code().unwrap_or(-1);
    (code, stdout_of(&out), stderr_of(&out), plan)
}

fn mpw_out(repo: &TestRepo, args: &[&str]) -> (i32, String, String) {
    let out = repo.mpw().args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        stdout_of(&out),
        stderr_of(&out),
    )
}

#[test]
fn a_quarantined_task_points_at_its_stdout_and_says_how_to_run_again() {
    let repo = repo().with_file("src/a.txt", "a\n").commit("init");
    let (code, stdout, stderr, plan) = run(
        &repo,
        "q",
        r#"{ "run_id": "Q", "workstreams": [ { "id": "W", "allowed_paths": ["src/**"], "tasks": [
            { "id": "T", "run": "echo wrote docs; echo d > docs.txt" } ] } ] }"#,
    );
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    // Only stdout has content: the hint names it, without --stderr.
    assert!(
        stdout.contains("W/T QUARANTINED: mpw logs Q W/T\n"),
        "{stdout}"
    );
    let (_, log, _) = mpw_out(&repo, &["logs", "Q", "W/T"]);
    assert_eq!(log, "wrote docs\n");
    let next = format!(
        "next: its work is kept at refs/mpw/Q/quarantine/W/T; widen allowed_paths or ignore in the plan, or drop the change from the task, then: mpw run {} --workstream W (a new run; change the plan's run_id if it sets one)",
        plan.display()
    );
    assert!(stdout.contains(&next), "{stdout}");
}

#[test]
fn a_failed_task_points_at_stderr_when_that_is_where_it_spoke() {
    let repo = repo().commit("init");
    let (code, stdout, _, _) = run(
        &repo,
        "f",
        r#"{ "run_id": "F", "workstreams": [ { "id": "W", "tasks": [
            { "id": "T", "run": "echo boom >&2; exit 3" },
            { "id": "S", "run": "exit 4" } ] } ] }"#,
    );
    assert_eq!(code, 1);
    assert!(
        stdout.contains("W/T FAILED: mpw logs F W/T --stderr\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("W/S FAILED: it printed nothing\n"),
        "{stdout}"
    );
    assert!(stdout.contains("fix the cause, then: mpw run "), "{stdout}");
    let (_, log, _) = mpw_out(&repo, &["logs", "F", "W/T", "--stderr"]);
    assert_eq!(log, "boom\n");
}

#[test]
fn a_failed_gate_names_its_log_which_mpw_logs_shows() {
    let repo = repo().commit("init");
    let (code, ..) = run(
        &repo,
        "g",
        r#"{ "run_id": "G", "workstreams": [ { "id": "B", "tasks": [
            { "id": "T", "run": "echo b > b.txt" } ] } ] }"#,
    );
    assert_eq!(code, 0);
    // Like pytest: the failure report goes to stdout.
    let (code, stdout, _) = mpw_out(
        &repo,
        &["integrate", "--gate", "echo 1 failed, 2 passed; exit 1"],
    );
    assert_eq!(code, 1);
    assert!(stdout.contains("see mpw logs G integrate/B;"), "{stdout}");
    assert!(stdout.contains("fix it in "), "{stdout}");
    assert!(
        stdout.contains("commit, and run mpw integrate again"),
        "{stdout}"
    );
    let (code, log, err) = mpw_out(&repo, &["logs", "G", "integrate/B"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(log, "1 failed, 2 passed\n");
    let (code, _, err) = mpw_out(&repo, &["logs", "G", "integrate/Nope"]);
    assert_eq!(code, 2);
    assert!(err.contains("no gate has run on workstream Nope"), "{err}");
}

#[test]
fn integrate_says_what_it_left_unmerged_and_exits_1() {
    let repo = repo().commit("init");
    let (code, ..) = run(
        &repo,
        "u",
        r#"{ "run_id": "U", "workstreams": [
            { "id": "A", "tasks": [ { "id": "T", "run": "echo a > a.txt" } ] },
            { "id": "Q", "allowed_paths": ["q/**"], "tasks": [ { "id": "T", "run": "echo q > elsewhere.txt" } ] }
        ] }"#,
    );
    assert_eq!(code, 1);
    let (code, stdout, _) = mpw_out(&repo, &["integrate"]);
    assert_eq!(code, 1, "{stdout}");
    assert_eq!(
        stdout.lines().last().unwrap(),
        "1 workstream(s) left unmerged: Q (QUARANTINED) (see above; exit 1)"
    );
    assert_eq!(repo.git(&["show", "main:a.txt"]), "a");
}

#[test]
fn integrate_exits_0_once_everything_is_in() {
    let repo = repo().commit("init");
    let (code, ..) = run(
        &repo,
        "ok",
        r#"{ "run_id": "OK", "workstreams": [
            { "id": "A", "tasks": [ { "id": "T", "run": "echo a > a.txt" } ] } ] }"#,
    );
    assert_eq!(code, 0);
    let (code, stdout, _) = mpw_out(&repo, &["integrate"]);
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.ends_with("every workstream of the run is integrated\n"),
        "{stdout}"
    );
}
