//! `mpw integrate --gate CMD --batch`: batched gates with bisection, end to end.
//!
//! The gate sees the merged checkout: it fails when a culprit's `BAD-*` file
//! is there, and appends the workstreams it covered to a log outside the
//! repository, so that a test counts gate runs.

mod common;

use common::*;
use serde_json::Value;
use std::path::PathBuf;

/// A finished run `id` with one workstream per entry, each writing its own
/// `<ws>.txt`; a culprit also writes `BAD-<ws>`.
fn finished_run(repo: &TestRepo, id: &str, wss: &[&str], culprits: &[&str]) {
    let entries: Vec<String> = wss
        .iter()
        .map(|ws| {
            let bad = if culprits.contains(ws) {
                format!(" && printf bad > BAD-{ws}")
            } else {
                String::new()
            };
            format!(
                r#"{{ "id": "{ws}", "name": "Write {ws}", "tasks": [ {{ "id": "T", "run": "printf '{ws}' > {ws}.txt{bad}" }} ] }}"#
            )
        })
        .collect();
    let plan = repo.plan(
        id,
        &format!(
            r#"{{ "run_id": "{id}", "workstreams": [{}] }}"#,
            entries.join(",")
        ),
    );
    let out = repo.mpw().arg("run").arg(&plan).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
}

fn names(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("W{i}")).collect()
}

/// The gate log beside the repository.
fn gate_log(repo: &TestRepo) -> PathBuf {
    repo.dir.path().join("gate.log")
}

/// A gate that records what it covered and fails where a `BAD-*` file is.
fn gate(repo: &TestRepo) -> String {
    format!(
        "echo \"$MPW_GATE_COVERS\" >> '{}'; ! ls BAD-* >/dev/null 2>&1",
        gate_log(repo).display()
    )
}

/// The workstreams each gate run covered, one run a line.
fn gate_runs(repo: &TestRepo) -> Vec<String> {
    std::fs::read_to_string(gate_log(repo))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn integrate(repo: &TestRepo, args: &[&str]) -> (Option<i32>, Value, String) {
    let out = repo
        .mpw()
        .arg("integrate")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", stdout_of(&out), stderr_of(&out)));
    (out.status.code(), report, stderr_of(&out))
}

fn state_of(report: &Value, ws: &str) -> String {
    report["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["workstream"] == ws)
        .unwrap_or_else(|| panic!("no outcome for {ws} in {report:#}"))["state"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn eight_good_workstreams_take_exactly_one_gate_run() {
    let repo = repo().commit("init");
    let ws = names(8);
    let ids: Vec<&str> = ws.iter().map(String::as_str).collect();
    finished_run(&repo, "Q1", &ids, &[]);
    let before = repo.head("main");
    let (code, report, err) = integrate(&repo, &["--gate", &gate(&repo), "--batch"]);
    assert_eq!(code, Some(0), "{report:#}{err}");
    assert_eq!(gate_runs(&repo), vec![ids.join(" ")]);
    for w in &ids {
        assert_eq!(state_of(&report, w), "INTEGRATED");
        assert_eq!(repo.read(&format!("{w}.txt")), *w, "the checkout follows");
    }
    // One merge commit per workstream, in integration order.
    let log = repo.git(&[
        "log",
        "--format=%s",
        "--first-parent",
        &format!("{before}..main"),
    ]);
    assert_eq!(log.lines().count(), 8);
    assert!(
        log.lines()
            .last()
            .unwrap()
            .starts_with("Merge workstream W1:")
    );
    let runs = report["gate_runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["passed"], true);
    assert_eq!(runs[0]["covered"].as_array().unwrap().len(), 8);
    let evs = repo.events("Q1");
    assert_eq!(of_kind(&evs, "BATCH_STARTED").len(), 1);
    assert_eq!(of_kind(&evs, "GATE_PASSED").len(), 1);
    assert!(of_kind(&evs, "BISECT_SPLIT").is_empty());
    assert_eq!(repo.git(&["status", "--porcelain"]), "");
}

#[test]
fn one_culprit_among_eight_is_isolated_in_at_most_seven_gate_runs() {
    let repo = repo().commit("init");
    let ws = names(8);
    let ids: Vec<&str> = ws.iter().map(String::as_str).collect();
    // The first is the worst place for the search.
    finished_run(&repo, "Q2", &ids, &["W1"]);
    let (code, report, err) = integrate(&repo, &["--gate", &gate(&repo), "--batch"]);
    assert_eq!(code, Some(1), "{report:#}{err}");
    let runs = gate_runs(&repo);
    assert!(runs.len() <= 7, "{} gate runs: {runs:#?}", runs.len());
    assert_eq!(state_of(&report, "W1"), "GATE_FAILED");
    for w in &ids[1..] {
        assert_eq!(state_of(&report, w), "INTEGRATED", "{report:#}");
    }
    assert!(std::fs::metadata(repo.path.join("BAD-W1")).is_err());
    assert_eq!(repo.read("W8.txt"), "W8");
    let evs = repo.events("Q2");
    assert!(!of_kind(&evs, "BISECT_SPLIT").is_empty());
    let failed = of_kind(&evs, "GATE_FAILED");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["workstream"], "W1");
    assert!(
        failed[0]["covered"]
            .as_array()
            .unwrap()
            .contains(&"W1".into())
    );
    // The culprit's record points at the log of the run that isolated it.
    let detail = report["outcomes"][0]["detail"].as_str().unwrap();
    assert!(detail.contains("log:"), "{detail}");
    assert!(err.contains("BISECT_SPLIT"), "{err}");
    // `status` and the HTML report draw the bisection as a tree: the first
    // run covers all eight, the ones below it fewer, indented.
    let out = repo.mpw().arg("status").output().unwrap();
    let text = stdout_of(&out);
    let tree: Vec<&str> = text
        .lines()
        .skip_while(|l| *l != "GATE RUNS")
        .skip(1)
        .collect();
    assert_eq!(tree.len(), runs.len(), "{text}");
    assert!(
        tree[0].starts_with("  #") && tree[0].contains("FAILED"),
        "{text}"
    );
    assert!(tree[1].starts_with("    #"), "{text}");
    let html = repo.dir.path().join("r.html");
    let out = repo
        .mpw()
        .args(["report", "--html"])
        .arg(&html)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("<h3>Gate runs</h3>") && page.contains("batch 1 FAILED"));
}

#[test]
fn two_culprits_in_one_batch_are_both_found() {
    let repo = repo().commit("init");
    let ws = names(8);
    let ids: Vec<&str> = ws.iter().map(String::as_str).collect();
    finished_run(&repo, "Q3", &ids, &["W3", "W6"]);
    let (code, report, err) = integrate(&repo, &["--gate", &gate(&repo), "--batch"]);
    assert_eq!(code, Some(1), "{report:#}{err}");
    for w in &ids {
        let want = if ["W3", "W6"].contains(w) {
            "GATE_FAILED"
        } else {
            "INTEGRATED"
        };
        assert_eq!(state_of(&report, w), want, "{report:#}");
    }
    assert!(gate_runs(&repo).len() < 16, "fewer than two gates each");
    assert_eq!(
        repo.git(&["ls-tree", "--name-only", "main"])
            .lines()
            .filter(|f| f.starts_with("BAD"))
            .count(),
        0
    );
}

#[test]
fn a_forecast_conflict_is_taken_out_before_any_gate_runs() {
    let repo = repo().commit("init");
    let plan = repo.plan(
        "Q4",
        r#"{ "run_id": "Q4", "workstreams": [
            { "id": "A", "tasks": [ { "id": "T", "run": "printf a > shared.txt" } ] },
            { "id": "B", "tasks": [ { "id": "T", "run": "printf b > shared.txt" } ] },
            { "id": "C", "tasks": [ { "id": "T", "run": "printf c > c.txt" } ] }
        ] }"#,
    );
    let out = repo.mpw().arg("run").arg(&plan).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let (code, report, err) = integrate(&repo, &["--gate", &gate(&repo), "--batch"]);
    assert_eq!(code, Some(1), "{report:#}{err}");
    assert_eq!(state_of(&report, "A"), "INTEGRATED");
    assert_eq!(state_of(&report, "B"), "CONFLICT");
    assert_eq!(state_of(&report, "C"), "INTEGRATED");
    // No gate ever saw B, and the output says why it was left out.
    assert_eq!(gate_runs(&repo), vec!["A C".to_string()]);
    assert!(err.contains("taken out before gating"), "{err}");
    let b = &report["outcomes"][1];
    assert!(
        b["detail"]
            .as_str()
            .unwrap()
            .contains("conflicts with A on shared.txt"),
        "{b}"
    );
    let evs = repo.events("Q4");
    assert_eq!(
        of_kind(&evs, "BATCH_STARTED")[0]["taken_out"],
        serde_json::json!(["B"])
    );
}

#[test]
fn a_batch_leaves_the_same_history_and_tree_as_one_by_one() {
    let ws = names(6);
    let ids: Vec<&str> = ws.iter().map(String::as_str).collect();
    let mut results = Vec::new();
    for batch in [false, true] {
        let repo = repo().with_file("base.txt", "base\n").commit("init");
        finished_run(&repo, "Q5", &ids, &["W2", "W5"]);
        let before = repo.head("main");
        let g = gate(&repo);
        let mut args = vec!["--gate", g.as_str()];
        if batch {
            args.extend(["--batch", "4"]);
        }
        let (code, report, err) = integrate(&repo, &args);
        assert_eq!(code, Some(1), "{report:#}{err}");
        let subjects = repo.git(&[
            "log",
            "--format=%s %P",
            "--first-parent",
            &format!("{before}..main"),
        ]);
        let shape: Vec<(String, usize)> = subjects
            .lines()
            .map(|l| {
                let (s, parents) = l.split_once(" (run Q5) ").unwrap();
                (s.to_string(), parents.split(' ').count())
            })
            .collect();
        let states: Vec<String> = ids.iter().map(|w| state_of(&report, w)).collect();
        results.push((
            repo.head("main^{tree}"),
            shape,
            states,
            gate_runs(&repo).len(),
        ));
    }
    let (seq, bat) = (&results[0], &results[1]);
    assert_eq!(bat.0, seq.0, "same tree");
    assert_eq!(bat.1, seq.1, "same merge commits, same parents");
    assert_eq!(bat.2, seq.2, "same states");
    assert_eq!(seq.3, 6, "one by one gates each workstream");
}

#[test]
fn a_gate_that_fails_once_passes_on_retry_and_is_recorded_as_flaky() {
    let repo = repo().commit("init");
    finished_run(&repo, "Q6", &["W1", "W2"], &[]);
    let count = repo.dir.path().join("failed-once");
    let g = format!(
        "if [ ! -e '{0}' ]; then touch '{0}'; exit 1; fi",
        count.display()
    );
    let (code, report, err) = integrate(&repo, &["--gate", &g, "--batch", "--gate-retries", "1"]);
    assert_eq!(code, Some(0), "{report:#}{err}");
    assert_eq!(state_of(&report, "W1"), "INTEGRATED");
    let runs = report["gate_runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["flaky"], true);
    assert_eq!(runs[0]["attempts"], 2);
    let evs = repo.events("Q6");
    assert_eq!(of_kind(&evs, "GATE_PASSED")[0]["flaky"], true);
    assert!(err.contains("flaky"), "{err}");
}

#[test]
fn batch_without_a_gate_is_a_usage_error() {
    let repo = repo().commit("init");
    finished_run(&repo, "Q7", &["W1"], &[]);
    let out = repo.mpw().args(["integrate", "--batch"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("--gate"), "{}", stderr_of(&out));
}

/// Ctrl-C in the middle of a bisection: the target and the states stay as
/// they were, and no scratch worktree is left.
#[cfg(unix)]
#[test]
fn ctrl_c_during_a_bisection_leaves_the_target_and_states_alone() {
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let repo = repo().commit("init");
    finished_run(&repo, "Q8", &["W1", "W2"], &["W2"]);
    let tip = repo.head("main");
    let pid_file = repo.dir.path().join("gate.pid");
    // The first run (W1 and W2) fails at once; the second (W1 alone) waits.
    let g = format!(
        "if ls BAD-* >/dev/null 2>&1; then exit 1; fi; echo $$ > '{}'; sleep 120",
        pid_file.display()
    );
    let integrate = repo
        .mpw_process()
        .args(["-q", "integrate", "--grace", "2", "--batch", "--gate", &g])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&pid_file).is_ok_and(|t| t.ends_with('\n')) {
        assert!(Instant::now() < end, "the second gate run never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    unsafe { libc::kill(integrate.id() as i32, libc::SIGINT) };
    let out = integrate.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr_of(&out));
    assert_eq!(repo.head("main"), tip);
    let st = repo.run_status("Q8");
    assert_eq!(ws(&st, "W1")["state"], "COMPLETED");
    assert_eq!(ws(&st, "W2")["state"], "COMPLETED");
    assert!(!repo.git(&["worktree", "list"]).contains("_gate"));
}

/// Retries are the gate's, batched or not: one by one, the flaky gate shows
/// in `mpw status` next to the workstream it passed for.
#[test]
fn one_by_one_a_flaky_gate_shows_in_status() {
    let repo = repo().commit("init");
    finished_run(&repo, "Q9", &["W1"], &[]);
    let count = repo.dir.path().join("failed-once");
    let g = format!(
        "if [ ! -e '{0}' ]; then touch '{0}'; exit 1; fi",
        count.display()
    );
    let (code, report, err) = integrate(&repo, &["--gate", &g, "--gate-retries", "2"]);
    assert_eq!(code, Some(0), "{report:#}{err}");
    assert_eq!(state_of(&report, "W1"), "INTEGRATED");
    assert_eq!(report["gate_runs"][0]["attempts"], 2);
    let text = stdout_of(&repo.mpw().arg("status").output().unwrap());
    let line = text.lines().find(|l| l.starts_with("W1 ")).unwrap();
    assert!(line.contains("gate flaky"), "{text}");
    // A gate that always fails is tried 1 + retries times, then GATE_FAILED.
    let repo = repo_with_one_ws();
    let (code, report, _) = integrate(&repo, &["--gate", "exit 1", "--gate-retries", "1"]);
    assert_eq!(code, Some(1));
    assert_eq!(state_of(&report, "W1"), "GATE_FAILED");
    assert_eq!(report["gate_runs"][0]["attempts"], 2);
    assert_eq!(report["gate_runs"][0]["flaky"], false);
}

fn repo_with_one_ws() -> TestRepo {
    let repo = repo().commit("init");
    finished_run(&repo, "Q10", &["W1"], &[]);
    repo
}

/// A gate that logs its start and end and, to let a peer overlap it, waits a
/// little for another gate run to start (or to be running) before it ends.
fn gate_that_waits_for_a_peer(repo: &TestRepo) -> String {
    format!(
        r#"log='{}'; echo "start $MPW_GATE_COVERS" >> "$log"; n=$(grep -c ^start "$log"); i=0
while [ $i -lt 30 ]; do s=$(grep -c ^start "$log"); e=$(grep -c ^end "$log")
  if [ "$s" -gt "$n" ] || [ $((s - e)) -ge 2 ]; then break; fi; sleep 0.1; i=$((i+1)); done
echo "end $MPW_GATE_COVERS" >> "$log"; ! ls BAD-* >/dev/null 2>&1"#,
        gate_log(repo).display()
    )
}

#[test]
fn gate_jobs_two_gates_overlap_and_find_the_same_culprits_as_one_by_one() {
    let ws = names(8);
    let ids: Vec<&str> = ws.iter().map(String::as_str).collect();
    let mut results = Vec::new();
    for jobs in [None, Some("2")] {
        let repo = repo().with_file("base.txt", "base\n").commit("init");
        finished_run(&repo, "Q9", &ids, &["W3", "W6"]);
        let g = match jobs {
            None => gate(&repo),
            Some(_) => gate_that_waits_for_a_peer(&repo),
        };
        let mut args = vec!["--gate", g.as_str()];
        if let Some(k) = jobs {
            args.extend(["--batch", "--gate-jobs", k]);
        }
        let (code, report, err) = integrate(&repo, &args);
        assert_eq!(code, Some(1), "{report:#}{err}");
        let states: Vec<String> = ids.iter().map(|w| state_of(&report, w)).collect();
        let log = std::fs::read_to_string(gate_log(&repo)).unwrap_or_default();
        results.push((repo.head("main^{tree}"), states, log));
    }
    let (seq, par) = (&results[0], &results[1]);
    assert_eq!(par.0, seq.0, "the target tree of one by one integration");
    assert_eq!(par.1, seq.1, "the same culprits");
    assert_eq!(
        seq.1.iter().filter(|s| *s == "GATE_FAILED").count(),
        2,
        "{:?}",
        seq.1
    );
    // Two gate runs were running at once: a start before the other's end.
    let mut open = 0;
    let mut most = 0;
    for l in par.2.lines() {
        if l.starts_with("start") {
            open += 1;
        } else if l.starts_with("end") {
            open -= 1;
        }
        most = most.max(open);
    }
    assert!(most >= 2, "no two gate runs overlapped:\n{}", par.2);
}

#[test]
fn gate_jobs_needs_a_batch() {
    let repo = repo_with_one_ws();
    let out = repo
        .mpw()
        .args(["integrate", "--gate", "true", "--gate-jobs", "2"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
}
