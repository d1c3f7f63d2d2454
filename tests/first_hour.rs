//! What a new user trips over in the first hour: a dead coordinator that
//! looks alive, resume's defaults and durations, a dirty main worktree,
//! clutter left by old runs.
#![cfg(unix)]

mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `mpw run PLAN` in the background, as a user's terminal would hold it.
/// A plan whose workstream A has a task T1 that, the first time only,
/// writes `marks/slow` and sleeps; then T2. Workstream B is stacked on A.
fn slow_once_plan(repo: &TestRepo, id: &str) -> (PathBuf, PathBuf) {
    let marks = repo.dir.path().join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let m = marks.display();
    let plan = repo.plan(
        id,
        &format!(
            r#"{{ "run_id": "{id}", "workstreams": [
              {{ "id": "A", "tasks": [
                {{ "id": "T1", "run": "if [ ! -f {m}/slow ]; then touch {m}/slow; sleep 30; fi; echo 1 > a1.txt" }},
                {{ "id": "T2", "run": "echo 2 > a2.txt", "depends_on": ["T1"] }} ] }},
              {{ "id": "B", "depends_on": ["A"], "tasks": [ {{ "id": "T1", "run": "echo b > b.txt" }} ] }} ] }}"#
        ),
    );
    (plan, marks.join("slow"))
}

/// Start the plan and kill -9 its coordinator once A/T1 runs and mpw has
/// noted its process; returns when the coordinator is dead.
fn kill_9_while_a_task_runs(repo: &TestRepo, plan: &Path, run: &str, mark: &Path) {
    let mut child = repo.spawn_run(plan, &[]);
    let noted = repo.mpw_dir().join(format!("runs/{run}/logs/A/T1.1.proc"));
    wait_until("A/T1 to run", Duration::from_secs(60), || {
        mark.exists() && noted.exists()
    });
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
}

fn stdout(repo: &TestRepo, args: &[&str]) -> String {
    let out = repo.mpw().args(args).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "mpw {args:?}: {}",
        stderr_of(&out)
    );
    stdout_of(&out)
}

/// Running time of a status object (`run_status.json` or a workstream or
/// task in it) must leave out `gap_ms`, a stretch in which nothing ran.
fn assert_gap_left_out(what: &str, v: &Value, gap_ms: i64) {
    let wall = ms_of(&v["finished_at"]) - ms_of(&v["started_at"]);
    let ran = v["duration_ms"]
        .as_i64()
        .unwrap_or_else(|| panic!("{what}: no duration_ms: {v}"));
    assert!(
        ran >= 0 && ran <= wall - gap_ms,
        "{what}: duration_ms {ran} includes the {gap_ms} ms idle gap (start to end: {wall} ms)"
    );
}

#[test]
fn a_killed_coordinator_shows_as_gone_and_resume_without_an_id_finishes_without_counting_the_gap() {
    let repo = repo().commit("init");
    let (plan, mark) = slow_once_plan(&repo, "K1");
    kill_9_while_a_task_runs(&repo, &plan, "K1", &mark);
    let killed_at = now_ms();

    let gone = "RUNNING (coordinator gone: mpw resume K1)";
    let status = stdout(&repo, &["status"]);
    assert!(status.contains(gone), "{status}");
    let runs = stdout(&repo, &["runs"]);
    assert!(runs.contains(gone), "{runs}");
    let listed: Value = serde_json::from_str(&stdout(&repo, &["runs", "--json"])).unwrap();
    assert_eq!(listed[0]["coordinator_gone"], true);

    // Idle for a while: the user notices only later.
    std::thread::sleep(Duration::from_millis(2500));
    let resumed_at = now_ms();
    let out = repo
        .mpw()
        .arg("resume")
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));

    let st = repo.run_status("K1");
    assert_eq!(st["state"], "COMPLETED");
    let gap = resumed_at - killed_at;
    assert_gap_left_out("run", &st, gap);
    assert_gap_left_out("workstream A", ws(&st, "A"), gap);
    assert_gap_left_out("task A/T1", task(&st, "A", "T1"), gap);
    // The finished run is no longer shown as running.
    let status = stdout(&repo, &["status", "K1"]);
    assert!(!status.contains("coordinator gone"), "{status}");
    // The HTML report says the same running time.
    let file = repo.dir.path().join("report.html");
    stdout(&repo, &["report", "K1", "--html", file.to_str().unwrap()]);
    let html = std::fs::read_to_string(&file).unwrap();
    let took = format!("took {}", human(st["duration_ms"].as_i64().unwrap()));
    assert!(html.contains(&took), "the report says {took}");
}

/// `report::human_ms` as users read it.
fn human(ms: i64) -> String {
    let s = ms as f64 / 1000.0;
    if s < 60.0 {
        format!("{s:.1}s")
    } else {
        format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    }
}

/// The report: a 4.2 s run became 22.7 s after a resume that had nothing
/// left to run (a failed task stays failed).
#[test]
fn resuming_a_failed_run_later_does_not_add_the_wait_to_its_duration() {
    let repo = repo().commit("init");
    let plan = repo.plan(
        "F1",
        r#"{ "run_id": "F1", "workstreams": [ { "id": "A", "tasks": [
            { "id": "T1", "run": "echo ok > ok.txt" },
            { "id": "T2", "run": "exit 3", "depends_on": ["T1"] } ] } ] }"#,
    );
    let out = repo.mpw().arg("run").arg(&plan).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let ended_at = now_ms();
    std::thread::sleep(Duration::from_millis(2500));
    let resumed_at = now_ms();
    let out = repo.mpw().args(["resume", "F1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let st = repo.run_status("F1");
    assert_eq!(st["state"], "FAILED");
    assert_gap_left_out("run", &st, resumed_at - ended_at);
}

#[test]
fn run_warns_about_uncommitted_changes_to_tracked_files_only() {
    let repo = repo().with_file("src/lib.rs", "fn a() {}\n").commit("init");
    let plan = |id: &str| {
        repo.plan(
            id,
            &format!(
                r#"{{ "run_id": "{id}", "workstreams": [ {{ "id": "A", "tasks": [ {{ "id": "T", "run": "true" }} ] }} ] }}"#
            ),
        )
    };
    let warning = "workstreams start from HEAD; your uncommitted changes are not in them";
    // An untracked file is not a change a user expects to be carried.
    repo.write("notes.txt", "scratch\n");
    let out = repo.mpw().arg("run").arg(plan("D1")).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert!(!stderr_of(&out).contains(warning), "{}", stderr_of(&out));

    repo.write("src/lib.rs", "fn a() { edited() }\n");
    let out = repo.mpw().arg("run").arg(plan("D2")).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    assert!(err.contains(warning) && err.contains("src/lib.rs"), "{err}");
}

fn quick_plan(repo: &TestRepo, id: &str) -> PathBuf {
    repo.plan(
        id,
        &format!(
            r#"{{ "run_id": "{id}", "workstreams": [ {{ "id": "W", "tasks": [ {{ "id": "T", "run": "echo {id} > {id}.txt" }} ] }} ] }}"#
        ),
    )
}

#[test]
fn clean_all_removes_finished_runs_and_the_emptied_folder_and_runs_shows_what_is_left() {
    let repo = repo().commit("init");
    for id in ["C1", "C2"] {
        repo.mpw()
            .arg("run")
            .arg(quick_plan(&repo, id))
            .assert()
            .success();
    }
    repo.mpw().args(["integrate", "C1"]).assert().success();
    let (plan, mark) = slow_once_plan(&repo, "C3");
    kill_9_while_a_task_runs(&repo, &plan, "C3", &mark);

    let listed: Value = serde_json::from_str(&stdout(&repo, &["runs", "--json"])).unwrap();
    let row = |id: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["run_id"] == id)
            .unwrap()
            .clone()
    };
    let left = |r: Value| {
        (
            r["integrated"].as_u64().unwrap(),
            r["workstreams"].as_u64().unwrap(),
            r["worktrees"].as_u64().unwrap(),
            r["branches"].as_u64().unwrap(),
        )
    };
    assert_eq!(left(row("C1")), (1, 1, 1, 1));
    assert_eq!(left(row("C2")), (0, 1, 1, 1));
    let text = stdout(&repo, &["runs"]);
    let c1 = text.lines().find(|l| l.starts_with("C1")).unwrap();
    assert!(
        c1.contains("integrated 1/1")
            && c1.contains("1 worktree(s)")
            && c1.contains("1 branch(es)"),
        "{c1}"
    );

    // Nothing finished an hour ago yet.
    let out = stdout(&repo, &["clean", "--all", "--older-than", "1h"]);
    assert!(out.contains("no finished run to clean"), "{out}");
    assert!(repo.worktree_root().join("C1").exists());
    let bad = repo
        .mpw()
        .args(["clean", "--all", "--older-than", "3y"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2), "{}", stderr_of(&bad));

    let out = stdout(&repo, &["clean", "--all", "--branches"]);
    assert!(
        out.contains("run C1: removed 1 worktree(s), deleted 1 branch(es)"),
        "{out}"
    );
    assert!(
        out.contains("run C3 is RUNNING: not finished; kept"),
        "{out}"
    );
    assert!(!repo.worktree_root().join("C1").exists());
    assert!(!repo.worktree_root().join("C2").exists());
    assert!(
        repo.worktree_root().join("C3").exists(),
        "a run that may be resumed is kept"
    );
    assert!(repo.git(&["branch", "--list", "mpw/C1/*"]).is_empty());
    assert!(
        !repo.git(&["branch", "--list", "mpw/C2/*"]).is_empty(),
        "not integrated: kept"
    );

    // Once the last run is cancelled and cleaned, `<repo>.mpw/` goes too.
    repo.mpw().args(["cancel", "C3"]).assert().success();
    stdout(&repo, &["clean", "--all", "--force", "--branches"]);
    assert!(
        !repo.worktree_root().exists(),
        "{} is left",
        repo.worktree_root().display()
    );
    let listed: Value = serde_json::from_str(&stdout(&repo, &["runs", "--json"])).unwrap();
    for r in listed.as_array().unwrap() {
        assert_eq!(
            (r["worktrees"].as_u64(), r["branches"].as_u64()),
            (Some(0), Some(0)),
            "{r}"
        );
    }
}
