//! `run_status.json` as the coordinator writes it at each workstream's end
//! (from what it keeps between writes) against a fresh render of the
//! database (`mpw status --json`).
#![cfg(unix)]

mod common;

use common::*;
use serde_json::Value;
use std::time::Duration;

/// The times that run up to now differ between two reads of a running run:
/// the run's and each unfinished workstream's duration.
fn without_clock(mut st: Value) -> Value {
    if st["finished_at"].is_null() {
        st["duration_ms"] = Value::Null;
    }
    for w in st["workstreams"].as_array_mut().unwrap() {
        if w["finished_at"].is_null() {
            w["duration_ms"] = Value::Null;
        }
    }
    st
}

/// `mpw status --json RUN`; None before the run is recorded.
fn fresh_try(repo: &TestRepo, run: &str) -> Option<Value> {
    let out = repo.mpw().args(["status", "--json", run]).output().unwrap();
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

fn fresh(repo: &TestRepo, run: &str) -> Value {
    fresh_try(repo, run).expect("mpw status --json")
}

fn file(repo: &TestRepo, rel: &str) -> Option<Value> {
    let text = std::fs::read_to_string(repo.mpw_dir().join(rel)).ok()?;
    Some(serde_json::from_str(&text).unwrap())
}

fn state_in_file(repo: &TestRepo, run: &str, ws_id: &str) -> String {
    file(repo, &format!("runs/{run}/run_status.json"))
        .map(|st| ws(&st, ws_id)["state"].as_str().unwrap().to_string())
        .unwrap_or_default()
}

#[test]
fn the_status_file_after_each_workstream_end_equals_a_fresh_render() {
    let repo = repo().with_file("a.txt", "a\n").commit("init");
    let gates = repo.dir.path().join("gates");
    std::fs::create_dir_all(&gates).unwrap();
    let gate = |name: &str| {
        format!(
            "while [ ! -e {} ]; do sleep 0.05; done",
            gates.join(name).display()
        )
    };
    // Each workstream does its first work, then waits at its gate; the gates
    // open one at a time, so a workstream's end is the last change when the
    // file is written, and every other workstream has changed since the
    // previous write (its tasks ran or were skipped).
    let plan = serde_json::json!({
        "run_id": "S1",
        "globals": { "max_concurrency": 4 },
        "workstreams": [
            { "id": "A", "tasks": [
                { "id": "T1", "run": "echo a > a1.txt" },
                { "id": "T2", "run": gate("A"), "depends_on": ["T1"] },
            ] },
            { "id": "B", "tasks": [
                { "id": "T1", "run": "echo b > b1.txt" },
                { "id": "T2", "run": format!("{}; exit 3", gate("B")), "depends_on": ["T1"] },
                { "id": "T3", "run": "true", "depends_on": ["T2"] },
            ] },
            { "id": "C", "tasks": [
                { "id": "T1", "run": format!("{}; echo c > c.txt", gate("C")) },
                { "id": "T2", "run": "true", "read_only": true, "depends_on": ["T1"] },
            ] },
            { "id": "D", "tasks": [
                { "id": "T1", "run": gate("D") },
            ] },
        ],
    });
    let plan = repo.plan("p", &plan.to_string());
    let mut child = repo.spawn_run(&plan, &[]);
    wait_until("every gate task to run", Duration::from_secs(60), || {
        let Some(st) = fresh_try(&repo, "S1") else {
            return false;
        };
        let waiting = [("A", "T2"), ("B", "T2"), ("C", "T1"), ("D", "T1")];
        let done = [("A", "T1"), ("B", "T1")];
        waiting
            .iter()
            .all(|(w, t)| task(&st, w, t)["state"] == "RUNNING")
            && done
                .iter()
                .all(|(w, t)| task(&st, w, t)["state"] == "SUCCEEDED")
    });
    for (w, end) in [("A", "COMPLETED"), ("B", "FAILED"), ("C", "COMPLETED")] {
        std::fs::write(gates.join(w), "").unwrap();
        wait_until(&format!("{w} to end"), Duration::from_secs(60), || {
            state_in_file(&repo, "S1", w) == end
        });
        let text = std::fs::read_to_string(repo.mpw_dir().join("runs/S1/run_status.json")).unwrap();
        let written: Value = serde_json::from_str(&text).unwrap();
        // The bytes are serde's own layout of what they say (kept tasks
        // spliced in at their indentation).
        assert_eq!(text, serde_json::to_string_pretty(&written).unwrap());
        let now = fresh(&repo, "S1");
        assert_eq!(written["state"], "RUNNING", "D still runs");
        assert_eq!(
            without_clock(written),
            without_clock(now.clone()),
            "after {w}'s end"
        );
        let ws_file = file(&repo, &format!("runs/S1/workstreams/{w}.json")).unwrap();
        assert_eq!(&ws_file, ws(&now, w), "workstreams/{w}.json");
    }
    let st = fresh(&repo, "S1");
    assert_eq!(task(&st, "B", "T3")["state"], "SKIPPED");
    assert!(task(&st, "C", "T1")["commit"].is_string());
    std::fs::write(gates.join("D"), "").unwrap();
    assert!(!child.wait().unwrap().success(), "B failed");
    let written = file(&repo, "runs/S1/run_status.json").unwrap();
    assert_eq!(written["state"], "FAILED");
    assert_eq!(written, fresh(&repo, "S1"));
}
