//! `mpw integrate` and `mpw clean` end to end.

mod common;

use common::*;
use serde_json::Value;

/// A repository with a finished run `id` whose workstreams write the given
/// files (ws id, path, content); the main checkout stays on `main`.
fn finished_run(repo: &TestRepo, id: &str, writes: &[(&str, &str, &str)]) {
    let wss: Vec<String> = writes
        .iter()
        .map(|(ws, path, content)| {
            format!(
                r#"{{ "id": "{ws}", "name": "Write {path}", "tasks": [ {{ "id": "T", "run": "mkdir -p $(dirname {path}) && printf '{content}' > {path}" }} ] }}"#
            )
        })
        .collect();
    let plan = repo.plan(
        id,
        &format!(
            r#"{{ "run_id": "{id}", "workstreams": [{}] }}"#,
            wss.join(",")
        ),
    );
    let out = repo.mpw().arg("run").arg(&plan).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
}

/// Hold `integrate.lock` as another integration would, until dropped.
fn hold_integrate_lock(repo: &TestRepo) -> std::fs::File {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(repo.mpw_dir().join("integrate.lock"))
        .unwrap();
    f.lock().unwrap();
    f
}

fn integrate(repo: &TestRepo, args: &[&str]) -> std::process::Output {
    repo.mpw().arg("integrate").args(args).output().unwrap()
}

fn ws_state(repo: &TestRepo, run: &str, id: &str) -> Value {
    ws(&repo.run_status(run), id).clone()
}

#[test]
fn merges_each_workstream_and_keeps_the_checkout_clean() {
    let repo = repo().with_file("base.txt", "base\n").commit("init");
    finished_run(
        &repo,
        "I1",
        &[("A", "a.txt", "a\n"), ("B", "dir/b.txt", "b\n")],
    );
    let before = repo.head("main");
    let out = integrate(&repo, &[]);
    assert_ok(&out);
    // The strategy as `--strategy` spells it.
    assert!(
        stdout_of(&out).contains("run I1 into main (merge): "),
        "{}",
        stdout_of(&out)
    );
    // Two merge commits, first-parent chain back to the old tip.
    let log = repo.git(&[
        "log",
        "--format=%s",
        "--first-parent",
        &format!("{before}..main"),
    ]);
    assert_eq!(
        log.lines().collect::<Vec<_>>(),
        vec![
            "Merge workstream B: Write dir/b.txt (run I1)",
            "Merge workstream A: Write a.txt (run I1)"
        ]
    );
    assert_eq!(
        repo.git(&["rev-list", "--parents", "-1", "main"])
            .split(' ')
            .count(),
        3
    );
    // main is checked out here: its files follow and status stays clean.
    assert_eq!(repo.read("a.txt"), "a\n");
    assert_eq!(repo.read("dir/b.txt"), "b\n");
    assert_eq!(repo.git(&["status", "--porcelain"]), "");
    let a = ws_state(&repo, "I1", "A");
    assert_eq!(a["state"], "INTEGRATED");
    assert_eq!(a["integration"]["into"], "main");
    assert!(a["integration"]["commit"].is_string());
    // Idempotent: nothing more to do, main does not move.
    let tip = repo.head("main");
    let out = integrate(&repo, &[]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(repo.head("main"), tip);
    assert!(stdout_of(&out).contains("already integrated"));
}

#[test]
fn a_conflict_leaves_the_target_alone_and_can_be_fixed_in_the_worktree() {
    let repo = repo().with_file("shared.txt", "one\n").commit("init");
    finished_run(
        &repo,
        "I2",
        &[("A", "shared.txt", "from A\n"), ("B", "b.txt", "b\n")],
    );
    // Someone changes the same line on main meanwhile.
    repo.write("shared.txt", "from main\n");
    let tip = repo.commit_all("main edit");
    let out = integrate(&repo, &[]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout_of(&out);
    assert!(
        text.contains("CONFLICT") && text.contains("shared.txt"),
        "{text}"
    );
    assert!(text.contains("mpw integrate again"), "{text}");
    let a = ws_state(&repo, "I2", "A");
    assert_eq!(a["state"], "CONFLICT");
    assert_eq!(
        a["integration"]["conflicts"],
        serde_json::json!(["shared.txt"])
    );
    // B still went in; A did not touch main.
    assert_eq!(ws_state(&repo, "I2", "B")["state"], "INTEGRATED");
    assert_eq!(repo.git(&["show", "main:shared.txt"]), "from main");
    assert!(
        repo.git(&["rev-list", "--first-parent", &format!("{tip}..main")])
            .lines()
            .count()
            == 1
    );
    // Unchanged branch: not tried again.
    let out = integrate(&repo, &[]);
    assert!(stdout_of(&out).contains("unchanged"), "{}", stdout_of(&out));
    // Fix it in A's worktree, commit, integrate again.
    let wt = repo.worktree_root().join("I2").join("A");
    let (ok, _, _) = (
        std::process::Command::new("git")
            .args(["merge", "-q", "main"])
            .current_dir(&wt)
            .status()
            .unwrap()
            .success(),
        (),
        (),
    );
    assert!(!ok, "the merge conflicts in the worktree too");
    std::fs::write(wt.join("shared.txt"), "resolved\n").unwrap();
    run_git(&wt, &["add", "-A"]);
    run_git(&wt, &["commit", "-q", "--no-edit"]);
    let out = integrate(&repo, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout_of(&out));
    assert_eq!(ws_state(&repo, "I2", "A")["state"], "INTEGRATED");
    assert_eq!(repo.git(&["show", "main:shared.txt"]), "resolved");
}

#[test]
fn a_failing_gate_leaves_the_target_alone() {
    let repo = repo().commit("init");
    finished_run(&repo, "I3", &[("A", "a.txt", "a\n"), ("B", "b.txt", "b\n")]);
    let tip = repo.head("main");
    // The gate sees the merged tree: it fails only where b.txt exists.
    let out = integrate(&repo, &["--gate", "test ! -f b.txt"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout_of(&out));
    assert_eq!(ws_state(&repo, "I3", "A")["state"], "INTEGRATED");
    assert_eq!(ws_state(&repo, "I3", "B")["state"], "GATE_FAILED");
    assert_eq!(
        repo.git(&[
            "rev-list",
            "--count",
            "--first-parent",
            &format!("{tip}..main")
        ]),
        "1"
    );
    let (ok, _, _) = repo.git_try(&["cat-file", "-e", "main:b.txt"]);
    assert!(!ok);
    // Gate logs are kept and the scratch worktree is gone.
    assert!(
        repo.mpw_dir()
            .join("runs/I3/logs/_integrate/B.1.out")
            .exists()
    );
    assert!(!repo.git(&["worktree", "list"]).contains("_gate"));
}

#[test]
fn a_dirty_checked_out_target_is_refused_before_anything() {
    let repo = repo().with_file("x.txt", "x\n").commit("init");
    finished_run(&repo, "I4", &[("A", "a.txt", "a\n")]);
    repo.write("x.txt", "my unsaved edit\n");
    let tip = repo.head("main");
    let out = integrate(&repo, &[]);
    assert_eq!(out.status.code(), Some(3));
    let err = stderr_of(&out);
    assert!(
        err.contains("x.txt") && err.contains(repo.path.to_str().unwrap()),
        "{err}"
    );
    assert_eq!(repo.read("x.txt"), "my unsaved edit\n");
    assert_eq!(repo.head("main"), tip);
    assert_eq!(ws_state(&repo, "I4", "A")["state"], "COMPLETED");
}

#[test]
fn squash_writes_one_single_parent_commit_per_workstream() {
    let repo = repo().commit("init");
    finished_run(&repo, "I5", &[("A", "a.txt", "a\n"), ("B", "b.txt", "b\n")]);
    let before = repo.head("main");
    let out = integrate(&repo, &["--strategy", "squash"]);
    assert_eq!(out.status.code(), Some(0));
    let revs = repo.git(&["rev-list", "--parents", &format!("{before}..main")]);
    let lines: Vec<&str> = revs.lines().collect();
    assert_eq!(lines.len(), 2);
    for l in lines {
        assert_eq!(l.split(' ').count(), 2, "single parent: {l}");
    }
    let msg = repo.git(&["log", "-1", "--format=%B", "main"]);
    assert!(
        msg.contains("Merge workstream B") && msg.contains("Mpw-Run: I5"),
        "{msg}"
    );
}

#[test]
fn dry_run_forecasts_conflicting_pairs_and_moves_nothing() {
    let repo = repo().with_file("f.txt", "0\n").commit("init");
    finished_run(
        &repo,
        "I6",
        &[
            ("A", "f.txt", "A\n"),
            ("B", "f.txt", "B\n"),
            ("C", "c.txt", "c\n"),
        ],
    );
    let tip = repo.head("main");
    // A forecast conflict exits 1, as `git merge-tree` does.
    let out = integrate(&repo, &["--dry-run", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let f: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(f["pairs"].as_array().unwrap().len(), 1, "{f:#}");
    assert_eq!(f["pairs"][0]["a"], "A");
    assert_eq!(f["pairs"][0]["b"], "B");
    assert_eq!(f["pairs"][0]["paths"], serde_json::json!(["f.txt"]));
    assert_eq!(f["sequence"][1]["state"], "CONFLICT");
    let out = integrate(&repo, &["--dry-run"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout_of(&out);
    assert!(text.contains("A x B: f.txt"), "{text}");
    assert_eq!(repo.head("main"), tip);
    assert_eq!(ws_state(&repo, "I6", "A")["state"], "COMPLETED");
    // Without a conflict in sight, 0.
    let clean = common::repo().with_file("f.txt", "0\n").commit("init");
    finished_run(
        &clean,
        "I6b",
        &[("A", "a.txt", "a\n"), ("B", "b.txt", "b\n")],
    );
    assert_eq!(integrate(&clean, &["--dry-run"]).status.code(), Some(0));
}

#[test]
fn two_integrations_at_once_both_land() {
    let repo = repo().commit("init");
    finished_run(&repo, "I7", &[("A", "a.txt", "a\n"), ("B", "b.txt", "b\n")]);
    finished_run(&repo, "I8", &[("C", "c.txt", "c\n"), ("D", "d.txt", "d\n")]);
    // Integrate into a branch not checked out anywhere.
    repo.git(&["branch", "target"]);
    let spawn = |run: &str| {
        repo.mpw_process()
            .args(["integrate", run, "--into", "target"])
            .output()
    };
    let (r1, r2) = std::thread::scope(|s| {
        let a = s.spawn(|| spawn("I7").unwrap());
        let b = s.spawn(|| spawn("I8").unwrap());
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_eq!(r1.status.code(), Some(0), "{}", stderr_of(&r1));
    assert_eq!(r2.status.code(), Some(0), "{}", stderr_of(&r2));
    for f in ["a.txt", "b.txt", "c.txt", "d.txt"] {
        let (ok, _, _) = repo.git_try(&["cat-file", "-e", &format!("target:{f}")]);
        assert!(ok, "{f} missing from target");
    }
    assert_eq!(
        repo.git(&["rev-list", "--count", "--first-parent", "main..target"]),
        "4"
    );
}

#[test]
fn no_wait_exits_3_while_another_integration_holds_the_lock() {
    let repo = repo().commit("init");
    finished_run(&repo, "I9", &[("A", "a.txt", "a\n")]);
    let f = hold_integrate_lock(&repo);
    let out = integrate(&repo, &["--no-wait"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("lock"));
    f.unlock().unwrap();
    assert_eq!(integrate(&repo, &["--no-wait"]).status.code(), Some(0));
}

#[test]
fn clean_removes_worktrees_and_integrated_branches_but_keeps_unmerged_work() {
    let repo = repo().commit("init");
    finished_run(
        &repo,
        "I10",
        &[("A", "a.txt", "a\n"), ("B", "b.txt", "b\n")],
    );
    let out = integrate(&repo, &["--gate", "test ! -f b.txt"]);
    assert_eq!(out.status.code(), Some(1));
    // An uncommitted edit in B's worktree.
    let wt_b = repo.worktree_root().join("I10").join("B");
    std::fs::write(wt_b.join("wip.txt"), "wip\n").unwrap();
    let out = repo
        .mpw()
        .args(["clean", "I10", "--branches"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let text = stdout_of(&out);
    assert!(!repo.worktree_root().join("I10").join("A").exists());
    assert!(wt_b.join("wip.txt").exists(), "dirty worktree kept: {text}");
    assert!(text.contains("uncommitted"), "{text}");
    let (a, _, _) = repo.git_try(&["rev-parse", "--verify", "mpw/I10/A"]);
    let (b, _, _) = repo.git_try(&["rev-parse", "--verify", "mpw/I10/B"]);
    assert!(!a, "integrated branch deleted");
    assert!(b, "unmerged branch kept");
    // --force removes the rest.
    let out = repo
        .mpw()
        .args(["clean", "I10", "--branches", "--force"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(!wt_b.exists());
    let (b, _, _) = repo.git_try(&["rev-parse", "--verify", "mpw/I10/B"]);
    assert!(!b);
    assert!(!repo.git(&["worktree", "list"]).contains("I10"));
}

#[test]
fn integrate_works_in_the_repository_it_is_run_in_even_if_moved() {
    let repo = repo().commit("init");
    finished_run(&repo, "I11", &[("A", "a.txt", "a\n")]);
    let before = repo.head("main");
    // Copy the whole repository (with its .git/mpw) elsewhere and integrate there.
    let moved = repo.dir.path().join("moved");
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(&repo.path)
        .arg(&moved)
        .status()
        .unwrap();
    assert!(status.success());
    let out = mpw()
        .current_dir(&moved)
        .args(["integrate", "I11"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert_eq!(run_git(&moved, &["show", "main:a.txt"]), "a");
    assert_eq!(
        repo.head("main"),
        before,
        "the original repository is untouched"
    );
}

#[test]
fn untracked_files_in_the_checkout_stay_unless_a_merge_would_overwrite_them() {
    let repo = repo().commit("init");
    finished_run(
        &repo,
        "I12",
        &[("A", "a.txt", "a\n"), ("B", "b.txt", "b\n")],
    );
    // The user's own untracked plan file does not block integration.
    repo.write("plans/mine.jsonc", "{}\n");
    // But an untracked file where B's merge would write is never overwritten.
    repo.write("b.txt", "precious\n");
    let tip = repo.head("main");
    let out = integrate(&repo, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    assert!(err.contains("untracked") && err.contains("b.txt"), "{err}");
    assert_eq!(repo.read("b.txt"), "precious\n");
    assert_eq!(repo.read("plans/mine.jsonc"), "{}\n");
    // A went in before B was refused; main moved exactly once.
    assert_eq!(ws_state(&repo, "I12", "A")["state"], "INTEGRATED");
    assert_eq!(
        repo.git(&[
            "rev-list",
            "--first-parent",
            "--count",
            &format!("{tip}..main")
        ]),
        "1"
    );
    // Move it away, integrate again: B lands, the plan file is still there.
    std::fs::remove_file(repo.path.join("b.txt")).unwrap();
    let out = integrate(&repo, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert_eq!(repo.read("b.txt"), "b\n");
    assert_eq!(repo.read("plans/mine.jsonc"), "{}\n");
}

#[test]
fn a_held_git_lock_stops_integration_with_nothing_changed() {
    let repo = repo().with_file("x.txt", "x\n").commit("init");
    finished_run(&repo, "LK", &[("A", "a.txt", "a\n")]);
    let tip = repo.head("main");
    for lock in [".git/index.lock", ".git/refs/heads/main.lock"] {
        let lock = repo.path.join(lock);
        std::fs::write(&lock, "").unwrap();
        let out = integrate(&repo, &[]);
        assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
        let err = stderr_of(&out);
        assert!(err.contains(lock.to_str().unwrap()), "{err}");
        assert_eq!(repo.head("main"), tip, "the branch did not move");
        assert!(!repo.path.join("a.txt").exists(), "no file was written");
        std::fs::remove_file(&lock).unwrap();
        assert_eq!(repo.git(&["status", "--porcelain"]), "");
        assert_eq!(ws_state(&repo, "LK", "A")["state"], "COMPLETED");
    }
    let out = integrate(&repo, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert_eq!(repo.read("a.txt"), "a\n");
}

#[test]
fn a_checkout_that_cannot_be_written_puts_the_branch_and_files_back() {
    let repo = repo().with_file("x.txt", "x\n").commit("init");
    let plan = repo.plan(
        "cw",
        r#"{ "run_id": "CW", "workstreams": [ { "id": "A", "tasks": [
            { "id": "T", "run": "echo changed > x.txt; mkdir -p new && echo n > new/n.txt" } ] } ] }"#,
    );
    let out = repo.mpw().arg("run").arg(&plan).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let tip = repo.head("main");
    // The files are written, then the step fails before the index is.
    let out = repo
        .mpw()
        .arg("integrate")
        .env("MPW_FAULT", "checkout-update")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    assert_eq!(repo.head("main"), tip, "the branch is back");
    assert_eq!(repo.read("x.txt"), "x\n", "the file is back");
    assert!(!repo.path.join("new").exists(), "the added file is gone");
    assert_eq!(repo.git(&["status", "--porcelain"]), "");
    assert_eq!(ws_state(&repo, "CW", "A")["state"], "COMPLETED");
    let out = integrate(&repo, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert_eq!(repo.read("x.txt"), "changed\n");
    assert_eq!(repo.git(&["status", "--porcelain"]), "");
}

#[test]
fn a_target_deleted_while_waiting_for_the_lock_is_a_clear_error() {
    let repo = repo().commit("init");
    finished_run(&repo, "IG", &[("A", "a.txt", "a\n")]);
    repo.git(&["branch", "release"]);
    let f = hold_integrate_lock(&repo);
    let mut waiting = repo
        .mpw_process()
        .args(["integrate", "--into", "release"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // It says it waits once it has checked the branch; then the branch goes.
    use std::io::{BufRead, Read};
    let mut stderr = std::io::BufReader::new(waiting.stderr.take().unwrap());
    let mut first = String::new();
    stderr.read_line(&mut first).unwrap();
    assert!(first.contains("wait"), "{first}");
    repo.git(&["branch", "-D", "release"]);
    f.unlock().unwrap();
    let mut err = first.clone();
    stderr.read_to_string(&mut err).unwrap();
    let code = waiting.wait().unwrap().code();
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains("release was deleted") && !err.contains("panicked"),
        "{err}"
    );
    assert_eq!(ws_state(&repo, "IG", "A")["state"], "COMPLETED");
}

#[test]
fn a_workstream_named_integrate_keeps_its_logs_apart_from_the_gate_logs() {
    let repo = repo().commit("init");
    finished_run(&repo, "IN", &[("integrate", "a.txt", "a\n")]);
    let out = integrate(&repo, &["--gate", "echo gate-said-this"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let logs = repo.mpw_dir().join("runs/IN/logs");
    let gate = std::fs::read_to_string(logs.join("_integrate/integrate.1.out")).unwrap();
    assert_eq!(gate.trim(), "gate-said-this");
    // The workstream's own task log is its own.
    let task = std::fs::read_to_string(logs.join("integrate/T.1.out")).unwrap();
    assert!(!task.contains("gate-said-this"), "{task}");
}

/// A run whose workstream deletes `gone.txt`, changes `x.txt` and adds
/// `new/n.txt`, integrated with a kill half-way through the checkout update:
/// the branch moved, `gone.txt` went, the new files are not written yet.
fn killed_during_the_checkout_update() -> TestRepo {
    let repo = repo()
        .with_file("x.txt", "x\n")
        .with_file("gone.txt", "g\n")
        .commit("init");
    let plan = repo.plan(
        "ku",
        r#"{ "run_id": "KU", "workstreams": [ { "id": "A", "tasks": [
            { "id": "T", "run": "rm gone.txt; echo changed > x.txt; mkdir -p new && echo n > new/n.txt" } ] } ] }"#,
    );
    let out = repo.mpw().arg("run").arg(&plan).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let out = repo
        .mpw()
        .arg("integrate")
        .env("MPW_FAULT", "kill-updating-checkout")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), None, "killed: {}", stderr_of(&out));
    assert_eq!(
        repo.head("main^2"),
        repo.head("mpw/KU/A"),
        "the branch moved"
    );
    assert!(!repo.path.join("gone.txt").exists());
    assert_eq!(repo.read("x.txt"), "x\n", "not written yet");
    repo
}

#[test]
fn an_integration_killed_while_updating_the_checkout_is_finished_by_the_next() {
    let repo = killed_during_the_checkout_update();
    let out = integrate(&repo, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert_eq!(repo.read("x.txt"), "changed\n");
    assert_eq!(repo.read("new/n.txt"), "n\n");
    assert!(!repo.path.join("gone.txt").exists());
    assert_eq!(repo.git(&["status", "--porcelain"]), "");
    assert_eq!(ws_state(&repo, "KU", "A")["state"], "INTEGRATED");
    assert!(!repo.mpw_dir().join("checkout-update.json").exists());
}

#[test]
fn a_file_changed_after_a_killed_checkout_update_is_named_and_kept() {
    let repo = killed_during_the_checkout_update();
    repo.write("x.txt", "mine\n");
    let out = integrate(&repo, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    assert!(err.contains("x.txt") && !err.contains("n.txt"), "{err}");
    assert_eq!(repo.read("x.txt"), "mine\n", "the edit is kept");
    // Put back, the next integration finishes the update.
    repo.write("x.txt", "x\n");
    let out = integrate(&repo, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert_eq!(repo.read("x.txt"), "changed\n");
    assert_eq!(repo.git(&["status", "--porcelain"]), "");
}
