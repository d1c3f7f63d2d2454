//! `mpw run` end to end: real repositories, the real binary, real SQLite.

mod common;

use common::*;
use serde_json::Value;

#[test]
fn commits_each_changing_task_with_trailers_and_skips_no_ops() {
    let repo = repo().with_file("src/a.txt", "a\n").commit("init");
    let base = repo.head("HEAD");
    let (code, id, stdout, stderr) = run_plan(
        &repo,
        r#"{ "run_id": "R1", "workstreams": [ { "id": "WS-1", "tasks": [
            { "id": "T1", "name": "Write b", "run": "echo b > src/b.txt" },
            { "id": "T2", "run": "true", "depends_on": ["T1"] },
            { "id": "T3", "argv": ["sh", "-c", "rm src/a.txt"], "depends_on": ["T2"], "commit_message": "Remove a" }
        ] } ] }"#,
        &[],
    );
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert_eq!(id, "R1");
    let branch = "mpw/R1/WS-1";
    let log = repo.git(&["log", "--format=%s", &format!("{base}..{branch}")]);
    assert_eq!(
        log.lines().collect::<Vec<_>>(),
        vec!["Remove a", "WS-1: Write b"]
    );
    let msg = repo.git(&["log", "-1", "--format=%B", &format!("{branch}~1")]);
    assert!(
        msg.contains("Mpw-Run: R1") && msg.contains("Mpw-Task: WS-1/T1"),
        "{msg}"
    );
    assert_eq!(repo.files_of(&format!("{branch}~1")), vec!["src/b.txt"]);
    assert_eq!(repo.git(&["show", &format!("{branch}:src/b.txt")]), "b");
    let st = repo.run_status("R1");
    assert_eq!(st["state"], "COMPLETED");
    assert!(task(&st, "WS-1", "T2")["commit"].is_null());
    assert_eq!(task(&st, "WS-1", "T3")["commit"], repo.head(branch));
    // The main worktree and the base branch are untouched.
    assert_eq!(repo.head("main"), base);
    assert_eq!(repo.git(&["status", "--porcelain"]), "");
    // The worktree is a normal git worktree, clean.
    let wt = repo.worktree_root().join("R1").join("WS-1");
    assert!(
        repo.git(&["worktree", "list"])
            .contains(wt.to_str().unwrap())
    );
    assert_eq!(run_git(&wt, &["status", "--porcelain"]), "");
    run_git(&repo.path, &["fsck", "--no-progress"]);
}

#[test]
fn retry_then_success_records_each_attempt() {
    let repo = repo().commit("init");
    let (code, _, _, stderr) = run_plan(
        &repo,
        r#"{ "run_id": "R2", "workstreams": [ { "id": "W", "tasks": [
            { "id": "T", "retries": 2,
              "run": "echo try$MPW_ATTEMPT > out.txt; test $MPW_ATTEMPT -ge 2" }
        ] } ] }"#,
        &[],
    );
    assert_eq!(code, 0, "{stderr}");
    let st = repo.run_status("R2");
    let t = task(&st, "W", "T");
    assert_eq!(t["state"], "SUCCEEDED");
    assert_eq!(t["attempts"], 2);
    // The failed attempt's change was discarded; the commit holds attempt 2.
    assert_eq!(repo.git(&["show", "mpw/R2/W:out.txt"]), "try2");
    let events = std::fs::read_to_string(repo.mpw_dir().join("runs/R2/events.jsonl")).unwrap();
    assert!(events.contains("\"TASK_RETRY\""), "{events}");
    // Logs of both attempts are kept.
    assert!(repo.mpw_dir().join("runs/R2/logs/W/T.1.out").exists());
    assert!(repo.mpw_dir().join("runs/R2/logs/W/T.2.out").exists());
}

/// A workstream whose tasks are all skipped while its worktree is still being
/// made (its setup runs) ends SKIPPED; the worktree, ready later, does not
/// reopen it (a run once exited 3: "cannot go from SKIPPED to RUNNING").
#[test]
fn a_workstream_skipped_while_its_worktree_is_made_stays_skipped() {
    let repo = repo().commit("init");
    let (code, _, _, stderr) = run_plan(
        &repo,
        r#"{ "run_id": "R9", "workstreams": [
            { "id": "A", "tasks": [ { "id": "T1", "run": "exit 3" } ] },
            { "id": "B", "setup": ["sleep 1"], "tasks": [
                { "id": "T1", "run": "echo b > b.txt", "depends_on": ["A/T1"] } ] }
        ] }"#,
        &[],
    );
    assert_eq!(code, 1, "{stderr}");
    let st = repo.run_status("R9");
    let b = st["workstreams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["id"] == "B")
        .unwrap();
    assert_eq!(b["state"], "SKIPPED", "{st}");
    assert_eq!(task(&st, "B", "T1")["state"], "SKIPPED");
}

#[test]
fn final_failure_keeps_work_under_a_ref_and_skips_dependants() {
    let repo = repo().commit("init");
    let (code, _, stdout, stderr) = run_plan(
        &repo,
        r#"{ "run_id": "R3", "workstreams": [
            { "id": "A", "tasks": [
                { "id": "T1", "run": "echo half > half.txt; echo boom >&2; exit 3" },
                { "id": "T2", "run": "echo never > never.txt", "depends_on": ["T1"] } ] },
            { "id": "B", "tasks": [ { "id": "T1", "run": "echo b > b.txt", "depends_on": ["A/T1"] } ] },
            { "id": "C", "tasks": [ { "id": "T1", "run": "echo c > c.txt" } ] }
        ] }"#,
        &[],
    );
    assert_eq!(code, 1, "{stderr}");
    let st = repo.run_status("R3");
    assert_eq!(st["state"], "FAILED");
    let t1 = task(&st, "A", "T1");
    assert_eq!(t1["state"], "FAILED");
    assert_eq!(t1["exit_code"], 3);
    assert_eq!(t1["preserved_ref"], "refs/mpw/R3/failed/A/T1");
    assert_eq!(
        repo.git(&["show", "refs/mpw/R3/failed/A/T1:half.txt"]),
        "half"
    );
    assert_eq!(task(&st, "A", "T2")["state"], "SKIPPED");
    assert_eq!(task(&st, "B", "T1")["state"], "SKIPPED");
    assert_eq!(ws(&st, "A")["state"], "FAILED");
    assert_eq!(ws(&st, "C")["state"], "COMPLETED");
    // The worktree was reset: the half-done file is gone from it.
    assert!(!repo.worktree_root().join("R3/A/half.txt").exists());
    assert!(stdout.contains("mpw logs R3 A/T1"), "{stdout}");
    let err = repo
        .mpw()
        .args(["logs", "R3", "A/T1", "--stderr"])
        .output()
        .unwrap();
    assert_eq!(stdout_of(&err), "boom\n");
}

#[test]
fn quarantine_by_allowed_paths_by_output_and_by_read_only_writes() {
    let repo = repo().commit("init");
    let (code, _, _, _) = run_plan(
        &repo,
        r#"{ "run_id": "R4", "workstreams": [
            { "id": "P", "allowed_paths": ["src/**"], "tasks": [
                { "id": "ok", "run": "mkdir -p src && echo x > src/x.txt" },
                { "id": "out", "run": "echo y > outside.txt", "depends_on": ["ok"] } ] },
            { "id": "Q", "tasks": [
                { "id": "key", "run": "echo k > k.txt; echo 'BEGIN RSA PRIVATE KEY'",
                  "guardrails": { "quarantine_on": ["BEGIN RSA PRIVATE KEY"] } } ] },
            { "id": "R", "tasks": [ { "id": "ro", "read_only": true, "run": "echo r > r.txt" } ] }
        ] }"#,
        &[],
    );
    assert_eq!(code, 1);
    let st = repo.run_status("R4");
    assert_eq!(task(&st, "P", "ok")["state"], "SUCCEEDED");
    let out = task(&st, "P", "out");
    assert_eq!(out["state"], "QUARANTINED");
    assert!(out["reason"].as_str().unwrap().contains("outside.txt"));
    assert_eq!(
        repo.git(&["show", "refs/mpw/R4/quarantine/P/out:outside.txt"]),
        "y"
    );
    assert_eq!(task(&st, "Q", "key")["state"], "QUARANTINED");
    assert_eq!(
        repo.git(&["show", "refs/mpw/R4/quarantine/Q/key:k.txt"]),
        "k"
    );
    let ro = task(&st, "R", "ro");
    assert_eq!(ro["state"], "QUARANTINED");
    assert!(ro["reason"].as_str().unwrap().contains("read-only"), "{ro}");
    for w in ["P", "Q", "R"] {
        assert_eq!(ws(&st, w)["state"], "QUARANTINED");
    }
    // Quarantined work never reaches the branch.
    let (ok, _, _) = repo.git_try(&["show", "mpw/R4/P:outside.txt"]);
    assert!(!ok);
}

#[test]
fn stacked_workstreams_start_from_their_dependencies() {
    let repo = repo().commit("init");
    let (code, _, _, stderr) = run_plan(
        &repo,
        r#"{ "run_id": "R5", "workstreams": [
            { "id": "A", "tasks": [ { "id": "T", "run": "echo a > a.txt" } ] },
            { "id": "B", "tasks": [ { "id": "T", "run": "echo b > b.txt" } ] },
            { "id": "C", "depends_on": ["A", "B"], "tasks": [ { "id": "T", "run": "cat a.txt b.txt > c.txt" } ] },
            { "id": "D", "depends_on": ["A"], "tasks": [ { "id": "T", "run": "cat a.txt > d.txt" } ] }
        ] }"#,
        &[],
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(repo.git(&["show", "mpw/R5/C:c.txt"]), "a\nb");
    assert_eq!(repo.git(&["show", "mpw/R5/D:d.txt"]), "a");
    // D is stacked on A: A's tip is an ancestor of D.
    let (ok, _, _) = repo.git_try(&["merge-base", "--is-ancestor", "mpw/R5/A", "mpw/R5/D"]);
    assert!(ok);
}

#[test]
fn ignored_files_copy_and_setup_are_never_committed() {
    let repo = repo().with_file(".gitignore", "*.log\n").commit("init");
    repo.write(".env", "SECRET=1\n");
    let (code, _, _, stderr) = run_plan(
        &repo,
        r#"{ "run_id": "R6", "globals": { "copy": [".env", "missing.toml"], "setup": ["echo deps > vendor.txt"] },
             "workstreams": [ { "id": "W", "tasks": [
                { "id": "T", "run": "test -f .env && test -f vendor.txt && echo noise > build.log && echo real > real.txt && echo \"$MPW_RUN_ID $MPW_WORKSTREAM $MPW_TASK $MPW_ATTEMPT $MPW_SLOT\" > env.txt" }
             ] } ] }"#,
        &[],
    );
    assert_eq!(code, 0, "{stderr}");
    let files = repo.files_of("mpw/R6/W");
    assert_eq!(files, vec!["env.txt", "real.txt"]);
    assert_eq!(repo.git(&["show", "mpw/R6/W:env.txt"]), "R6 W T 1 0");
    let events = std::fs::read_to_string(repo.mpw_dir().join("runs/R6/events.jsonl")).unwrap();
    assert!(
        events.contains("missing.toml"),
        "missing copy reported: {events}"
    );
}

#[test]
fn failing_setup_fails_the_workstream_with_a_reason() {
    let repo = repo().commit("init");
    let (code, _, _, _) = run_plan(
        &repo,
        r#"{ "run_id": "R7", "workstreams": [
            { "id": "W", "setup": ["exit 4"], "tasks": [ { "id": "T", "run": "echo t > t.txt" } ] } ] }"#,
        &[],
    );
    assert_eq!(code, 1);
    let st = repo.run_status("R7");
    assert_eq!(ws(&st, "W")["state"], "FAILED");
    assert!(
        ws(&st, "W")["reason"]
            .as_str()
            .unwrap()
            .contains("setup command `exit 4` failed")
    );
    assert_eq!(task(&st, "W", "T")["state"], "SKIPPED");
}

#[test]
fn max_concurrency_is_honoured_and_used() {
    let repo = repo().commit("init");
    let stamps = repo.dir.path().join("stamps");
    std::fs::create_dir_all(&stamps).unwrap();
    let s = stamps.to_str().unwrap();
    let mut wss = Vec::new();
    // Each task waits (up to 10 s) until a second one has started, so a
    // slow machine cannot hide whether two really run at once.
    for w in 0..4 {
        wss.push(format!(
            r#"{{ "id": "W{w}", "tasks": [ {{ "id": "T", "read_only": true,
                "run": "python3 -c 'import time;print(time.time())' > {s}/W{w}.start; i=0; while [ $(ls {s} | grep -c start) -lt 2 ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done; sleep 0.3; python3 -c 'import time;print(time.time())' > {s}/W{w}.end" }} ] }}"#
        ));
    }
    let plan = format!(
        r#"{{ "run_id": "R8", "globals": {{ "max_concurrency": 2 }}, "workstreams": [{}] }}"#,
        wss.join(",")
    );
    let (code, _, _, stderr) = run_plan(&repo, &plan, &[]);
    assert_eq!(code, 0, "{stderr}");
    let read = |n: &str| -> f64 {
        std::fs::read_to_string(stamps.join(n))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let spans: Vec<(f64, f64)> = (0..4)
        .map(|w| (read(&format!("W{w}.start")), read(&format!("W{w}.end"))))
        .collect();
    // Most tasks running at any start instant.
    let max_overlap = spans
        .iter()
        .map(|(s, _)| spans.iter().filter(|(a, b)| a <= s && s < b).count())
        .max()
        .unwrap();
    assert_eq!(max_overlap, 2, "spans: {spans:?}");
}

#[test]
fn workstream_subset_runs_only_those_and_their_dependencies() {
    let repo = repo().commit("init");
    let (code, _, _, stderr) = run_plan(
        &repo,
        r#"{ "run_id": "R9", "workstreams": [
            { "id": "A", "tasks": [ { "id": "T", "run": "echo a > a.txt" } ] },
            { "id": "B", "depends_on": ["A"], "tasks": [ { "id": "T", "run": "echo b > b.txt" } ] },
            { "id": "C", "tasks": [ { "id": "T", "run": "echo c > c.txt" } ] }
        ] }"#,
        &["--workstream", "B"],
    );
    assert_eq!(code, 0, "{stderr}");
    let st = repo.run_status("R9");
    let ids: Vec<&str> = st["workstreams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["A", "B"]);
    let (ok, _, _) = repo.git_try(&["rev-parse", "--verify", "mpw/R9/C"]);
    assert!(!ok);
}

#[test]
fn run_status_json_has_the_documented_shape() {
    let repo = repo().commit("init");
    let (code, _, _, _) = run_plan(
        &repo,
        r#"{ "run_id": "R10", "name": "shape", "workstreams": [ { "id": "W", "tasks": [ { "id": "T", "run": "echo x > x.txt" } ] } ] }"#,
        &[],
    );
    assert_eq!(code, 0);
    let st = repo.run_status("R10");
    for k in [
        "schema",
        "run_id",
        "name",
        "state",
        "repo",
        "base",
        "started_at",
        "finished_at",
        "counts",
        "workstreams",
    ] {
        assert!(st.get(k).is_some(), "missing {k}");
    }
    assert_eq!(st["schema"], 1);
    assert_eq!(st["counts"]["tasks"], 1);
    assert_eq!(st["counts"]["SUCCEEDED"], 1);
    let w = ws(&st, "W");
    for k in [
        "id", "state", "branch", "worktree", "head", "counts", "tasks",
    ] {
        assert!(w.get(k).is_some(), "missing workstream.{k}");
    }
    let t = task(&st, "W", "T");
    for k in [
        "id",
        "state",
        "attempts",
        "exit_code",
        "commit",
        "preserved_ref",
        "reason",
        "started_at",
        "finished_at",
        "duration_ms",
    ] {
        assert!(t.get(k).is_some(), "missing task.{k}");
    }
    assert_eq!(w["head"], t["commit"]);
    assert_eq!(st["base"], repo.head("main"));
    // status --json prints the same object.
    let out = repo
        .mpw()
        .args(["status", "R10", "--json"])
        .output()
        .unwrap();
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed, st);
    assert!(repo.mpw_dir().join("runs/R10/workstreams/W.json").exists());
    assert!(repo.mpw_dir().join("runs/R10/plan.json").exists());
}

#[test]
fn reading_commands_show_the_run() {
    let repo = repo().commit("init");
    let (code, _, _, _) = run_plan(
        &repo,
        r#"{ "run_id": "R11", "workstreams": [ { "id": "W", "tasks": [ { "id": "T", "run": "echo hello" } ] } ] }"#,
        &[],
    );
    assert_eq!(code, 0);
    let out = repo.mpw().args(["status"]).output().unwrap();
    let s = stdout_of(&out);
    assert!(s.contains("R11") && s.contains("SUCCEEDED"), "{s}");
    let out = repo.mpw().args(["runs"]).output().unwrap();
    assert!(stdout_of(&out).contains("R11"));
    let out = repo.mpw().args(["logs", "R11", "W/T"]).output().unwrap();
    assert_eq!(stdout_of(&out), "hello\n");
    let out = repo
        .mpw()
        .args(["events", "R11", "--json"])
        .output()
        .unwrap();
    let kinds = kinds_of(&stdout_of(&out));
    for k in [
        "RUN_STARTED",
        "WORKTREE_CREATED",
        "TASK_READY",
        "TASK_STARTED",
        "TASK_SUCCEEDED",
        "WORKSTREAM_COMPLETED",
        "RUN_COMPLETED",
    ] {
        assert!(kinds.iter().any(|x| x == k), "no {k} in {kinds:?}");
    }
    // The table and the JSON lines are the same events as events.jsonl.
    let jsonl = std::fs::read_to_string(repo.mpw_dir().join("runs/R11/events.jsonl")).unwrap();
    assert_eq!(jsonl.lines().count(), kinds.len());
}

#[test]
fn fail_fast_starts_nothing_new_after_a_failure() {
    let repo = repo().commit("init");
    // A fails only once B/T1 is running, however slow the machine.
    let started = repo.dir.path().join("b-started");
    let s = started.display();
    let (code, _, _, _) = run_plan(
        &repo,
        &format!(
            r#"{{ "run_id": "R12", "globals": {{ "max_concurrency": 2 }}, "workstreams": [
            {{ "id": "A", "tasks": [ {{ "id": "T", "run": "i=0; while [ ! -f '{s}' ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done; exit 1" }} ] }},
            {{ "id": "B", "tasks": [ {{ "id": "T1", "run": "touch '{s}'; sleep 1; echo b > b.txt" }},
                                   {{ "id": "T2", "run": "echo c > c.txt", "depends_on": ["T1"] }} ] }} ] }}"#
        ),
        &["--fail-fast"],
    );
    assert_eq!(code, 1);
    let st = repo.run_status("R12");
    // What was running finishes; nothing new starts.
    assert_eq!(task(&st, "B", "T1")["state"], "SUCCEEDED");
    let t2 = task(&st, "B", "T2");
    assert_eq!(t2["state"], "SKIPPED");
    assert!(t2["reason"].as_str().unwrap().contains("fail-fast"), "{t2}");
}

#[test]
fn demo_plan_completes_on_a_fresh_repository() {
    let repo = repo()
        .with_file("src/main.rs", "fn main() {}\n")
        .commit("init");
    let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("plans/demo.jsonc");
    let out = repo.mpw().arg("run").arg(&demo).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stdout_of(&out),
        stderr_of(&out)
    );
    let id = stdout_of(&out).lines().next().unwrap().trim().to_string();
    assert_eq!(repo.run_status(&id)["state"], "COMPLETED");
}

/// Racy git: tasks that rewrite a file with content of the same size within
/// the same second as the previous commit's index are still seen.
#[test]
fn same_size_rewrites_in_the_same_second_are_committed() {
    let repo = repo().with_file("v.txt", "v0\n").commit("init");
    let (code, _, stdout, stderr) = run_plan(
        &repo,
        r#"{ "run_id": "RACY", "workstreams": [ { "id": "A", "tasks": [
            { "id": "T1", "run": "echo v1 > v.txt" },
            { "id": "T2", "run": "echo v2 > v.txt", "depends_on": ["T1"] },
            { "id": "T3", "run": "echo v3 > v.txt", "depends_on": ["T2"] }
        ] } ] }"#,
        &[],
    );
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    let log = repo.git(&["log", "--format=%s", "main..mpw/RACY/A"]);
    assert_eq!(log.lines().count(), 3, "{log}");
    assert_eq!(repo.git(&["show", "mpw/RACY/A:v.txt"]), "v3");
    assert_eq!(repo.git(&["show", "mpw/RACY/A~1:v.txt"]), "v2");
}

/// Files, exec bits and symlink targets under `root`, `.git` left out.
#[cfg(unix)]
fn worktree_files(root: &std::path::Path) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let md = std::fs::symlink_metadata(&p).unwrap();
            if rel == ".git" {
                continue;
            } else if md.file_type().is_symlink() {
                out.push(format!(
                    "{rel} -> {}",
                    std::fs::read_link(&p).unwrap().display()
                ));
            } else if md.is_dir() {
                todo.push(p);
            } else {
                let exec = md.permissions().mode() & 0o111 != 0;
                out.push(format!(
                    "{rel} exec={exec} {:?}",
                    std::fs::read(&p).unwrap()
                ));
            }
        }
    }
    out.sort();
    out
}

/// Each provisioned worktree is what `git worktree add` makes (files, exec
/// bits, symlinks, eol conversion) with an index git finds clean without a
/// refresh: the tasks look before mpw's own status could refresh it. W4
/// changes the tree W5 starts from.
#[cfg(unix)]
#[test]
fn provisioned_worktrees_match_git_and_need_no_index_refresh() {
    let repo = repo()
        .with_file("bin/run.sh", "#!/bin/sh\necho hi\n")
        .with_file("deep/a/b/c.txt", "c\n")
        .with_file("deep/a/d.txt", "d\n")
        .with_file(".gitattributes", "*.bat eol=crlf\n")
        .with_file("x.bat", "echo one\necho two\n")
        .with_many_files("many", 300)
        .init();
    use std::os::unix::fs::PermissionsExt;
    let script = repo.path.join("bin/run.sh");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("deep/a/d.txt", repo.path.join("link")).unwrap();
    std::os::unix::fs::symlink("deep/a", repo.path.join("dirlink")).unwrap();
    repo.commit_all("kinds");
    let check = r#"{ "id": "check", "read_only": true, "run": "test -z \"$(git diff-files)\" && test -z \"$(git status --porcelain)\"" }"#;
    let ws = |id: &str, extra: &str| format!(r#"{{ "id": "{id}", {extra} "tasks": [ {check} ] }}"#);
    let plan = format!(
        r#"{{ "run_id": "RP", "globals": {{ "max_concurrency": 3 }}, "workstreams": [ {}, {}, {},
            {{ "id": "W4", "tasks": [ {{ "id": "add", "run": "echo new > deep/a/new.txt && chmod -x bin/run.sh" }} ] }},
            {} ] }}"#,
        ws("W1", ""),
        ws("W2", ""),
        ws("W3", ""),
        ws("W5", r#""depends_on": ["W4"],"#),
    );
    let (code, _, stdout, stderr) = run_plan(&repo, &plan, &[]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    for w in ["W1", "W2", "W3", "W4", "W5"] {
        let wt = repo.worktree_root().join("RP").join(w);
        let theirs = repo.dir.path().join(format!("git-{w}"));
        let branch = format!("mpw/RP/{w}");
        repo.git(&[
            "worktree",
            "add",
            "-q",
            "--detach",
            theirs.to_str().unwrap(),
            &branch,
        ]);
        assert_eq!(worktree_files(&wt), worktree_files(&theirs), "{w}");
        assert_eq!(
            run_git(&wt, &["ls-files", "-s"]),
            run_git(&theirs, &["ls-files", "-s"]),
            "{w}"
        );
        assert_eq!(run_git(&wt, &["diff-files"]), "", "{w}");
        assert_eq!(run_git(&wt, &["status", "--porcelain"]), "", "{w}");
    }
    assert!(
        worktree_files(&repo.worktree_root().join("RP/W1")).contains(&format!(
            "x.bat exec=false {:?}",
            b"echo one\r\necho two\r\n"
        ))
    );
    let exec_bit = |w: &str| {
        worktree_files(&repo.worktree_root().join("RP").join(w))
            .into_iter()
            .find(|l| l.starts_with("bin/run.sh "))
            .unwrap()
    };
    assert!(exec_bit("W1").contains("exec=true"));
    assert!(
        exec_bit("W5").contains("exec=false"),
        "W5 starts from W4's commit"
    );
}
