//! `mpw restack`: a stacked workstream brought onto its upstream's new head
//! (by merge, by `--rebase`, after a squash integration), and `integrate`
//! refusing a stale stack. Histories are checked with the git CLI.

mod common;

use common::*;
use serde_json::Value;
use std::path::PathBuf;

/// A finished run: UP writes `a.txt` (one, two); DOWN stacks on it, appends
/// `three` to `a.txt` and writes `b.txt`.
fn stacked_run(repo: &TestRepo, id: &str) {
    let plan = repo.plan(
        id,
        &format!(
            r#"{{ "run_id": "{id}", "workstreams": [
                {{ "id": "UP", "tasks": [ {{ "id": "T", "run": "printf 'one\ntwo\n' > a.txt" }} ] }},
                {{ "id": "DOWN", "depends_on": ["UP"], "tasks": [
                    {{ "id": "T", "run": "printf 'three\n' >> a.txt && printf 'mine\n' > b.txt" }} ] }}
            ] }}"#
        ),
    );
    let out = repo.mpw().arg("run").arg(&plan).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
}

fn worktree(repo: &TestRepo, run: &str, ws: &str) -> PathBuf {
    repo.worktree_root().join(run).join(ws)
}

fn branch(run: &str, ws: &str) -> String {
    format!("mpw/{run}/{ws}")
}

/// The user fixes UP in its worktree: its first line becomes ONE.
fn fix_upstream(repo: &TestRepo, run: &str) -> String {
    let wt = worktree(repo, run, "UP");
    write_file(&wt.join("a.txt"), b"ONE\ntwo\n");
    run_git(&wt, &["commit", "-q", "-am", "fix UP"]);
    run_git(&wt, &["rev-parse", "HEAD"])
}

fn mpw_json(repo: &TestRepo, args: &[&str]) -> (Option<i32>, Value, String) {
    let out = repo.mpw().args(args).arg("--json").output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code(), v, stderr_of(&out))
}

fn outcome<'a>(report: &'a Value, ws: &str) -> &'a Value {
    report["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["workstream"] == ws)
        .unwrap_or_else(|| panic!("no outcome for {ws} in {report:#}"))
}

fn restacked_events(repo: &TestRepo, run: &str) -> Vec<Value> {
    let evs = repo.events(run);
    of_kind(&evs, "RESTACKED").into_iter().cloned().collect()
}

#[test]
fn restack_by_merge_brings_the_fixed_upstream_in_with_one_merge_commit() {
    let repo = repo().commit("init");
    stacked_run(&repo, "RM");
    let old = repo.head(&branch("RM", "DOWN"));
    let fixed = fix_upstream(&repo, "RM");

    let (code, r, err) = mpw_json(&repo, &["restack", "RM", "DOWN"]);
    assert_eq!(code, Some(0), "{r:#}{err}");
    let o = outcome(&r, "DOWN");
    assert_eq!(o["state"], "RESTACKED");
    assert_eq!(o["mode"], "merge");
    assert_eq!(o["upstreams"], serde_json::json!(["UP"]));
    let new = repo.head(&branch("RM", "DOWN"));
    assert_eq!(o["from"], old.as_str());
    assert_eq!(o["to"], new.as_str());
    // One merge commit: the old head first, the upstream's fixed head second.
    assert_eq!(
        repo.git(&["log", "-1", "--format=%P", &new]),
        format!("{old} {fixed}")
    );
    assert_eq!(
        repo.git(&["show", &format!("{new}:a.txt")]),
        "ONE\ntwo\nthree"
    );
    assert_eq!(repo.git(&["show", &format!("{new}:b.txt")]), "mine");
    // The clean worktree followed its branch.
    let wt = worktree(&repo, "RM", "DOWN");
    assert_eq!(run_git(&wt, &["rev-parse", "HEAD"]), new);
    assert_eq!(run_git(&wt, &["status", "--porcelain"]), "");
    assert_eq!(
        std::fs::read_to_string(wt.join("a.txt")).unwrap(),
        "ONE\ntwo\nthree\n"
    );
    let evs = restacked_events(&repo, "RM");
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0]["workstream"], "DOWN");
    assert_eq!(evs[0]["mode"], "merge");
    assert_eq!(evs[0]["from"], old.as_str());
    assert_eq!(evs[0]["to"], new.as_str());

    // Up to date now: a second restack moves nothing.
    let (code, r, err) = mpw_json(&repo, &["restack", "RM"]);
    assert_eq!(code, Some(0), "{r:#}{err}");
    assert_eq!(outcome(&r, "DOWN")["state"], "UP_TO_DATE");
    assert_eq!(repo.head(&branch("RM", "DOWN")), new);
}

#[test]
fn restack_by_rebase_replays_its_own_commits_onto_the_fixed_upstream() {
    let repo = repo().commit("init");
    stacked_run(&repo, "RR");
    let down = branch("RR", "DOWN");
    // A second commit of its own, made by hand (same timestamp as the first).
    let wt = worktree(&repo, "RR", "DOWN");
    write_file(&wt.join("c.txt"), b"by hand\n");
    run_git(&wt, &["add", "c.txt"]);
    run_git(&wt, &["commit", "-q", "-m", "by hand"]);
    let old = repo.head(&down);
    let own = |tip: &str| repo.git(&["log", "--format=%an|%ae|%s", &format!("{tip}~2..{tip}")]);
    let own_before = own(&old);
    let fixed = fix_upstream(&repo, "RR");

    // With no workstream named: every stale stacked one of the run.
    let (code, r, err) = mpw_json(&repo, &["restack", "RR", "--rebase"]);
    assert_eq!(code, Some(0), "{r:#}{err}");
    assert_eq!(outcome(&r, "DOWN")["mode"], "rebase");
    let new = repo.head(&down);
    // Its two commits, replayed in order straight onto the fix: no merge.
    assert_eq!(
        repo.git(&["rev-list", "--count", &format!("{fixed}..{new}")]),
        "2"
    );
    assert_eq!(repo.git(&["rev-parse", &format!("{new}~2")]), fixed);
    assert_eq!(
        repo.git(&["rev-list", "--merges", &format!("{fixed}..{new}")]),
        ""
    );
    assert_eq!(own(&new), own_before);
    assert_eq!(
        repo.git(&["show", &format!("{new}:a.txt")]),
        "ONE\ntwo\nthree"
    );
    assert_eq!(repo.git(&["show", &format!("{new}:c.txt")]), "by hand");
    assert_eq!(run_git(&wt, &["rev-parse", "HEAD"]), new);
    assert_eq!(run_git(&wt, &["status", "--porcelain"]), "");

    // Now the stack integrates, with no line twice.
    let (code, r, err) = mpw_json(&repo, &["integrate", "RR"]);
    assert_eq!(code, Some(0), "{r:#}{err}");
    assert_eq!(repo.read("a.txt"), "ONE\ntwo\nthree\n");
}

#[test]
fn integrate_refuses_a_stale_stack_until_it_is_restacked() {
    let repo = repo().commit("init");
    stacked_run(&repo, "RI");
    let main_before = repo.head("main");
    fix_upstream(&repo, "RI");

    let (code, r, err) = mpw_json(&repo, &["integrate", "RI"]);
    assert_eq!(code, Some(1), "{r:#}{err}");
    assert_eq!(outcome(&r, "UP")["state"], "INTEGRATED");
    let down = outcome(&r, "DOWN");
    assert_ne!(down["state"], "INTEGRATED");
    let detail = down["detail"].as_str().unwrap();
    assert!(
        detail.contains("DOWN is stacked on UP, whose head changed; run mpw restack"),
        "{detail}"
    );
    // UP's fix is in; DOWN's change is not.
    assert_ne!(repo.head("main"), main_before);
    assert_eq!(repo.read("a.txt"), "ONE\ntwo\n");
    assert!(!repo.path.join("b.txt").exists());

    let (code, r, err) = mpw_json(&repo, &["restack", "RI"]);
    assert_eq!(code, Some(0), "{r:#}{err}");
    let (code, r, err) = mpw_json(&repo, &["integrate", "RI"]);
    assert_eq!(code, Some(0), "{r:#}{err}");
    assert_eq!(outcome(&r, "DOWN")["state"], "INTEGRATED");
    assert_eq!(repo.read("a.txt"), "ONE\ntwo\nthree\n");
}

#[test]
fn after_a_squash_integration_restack_drops_the_upstreams_original_commits() {
    let repo = repo().commit("init");
    stacked_run(&repo, "RS");
    let down = branch("RS", "DOWN");
    let up_commit = repo.head(&branch("RS", "UP"));
    // UP is squashed into main; DOWN, which still carries UP's original
    // commit, then conflicts with the squash (both add a.txt).
    let (code, r, err) = mpw_json(&repo, &["integrate", "RS", "--strategy", "squash"]);
    assert_eq!(code, Some(1), "{r:#}{err}");
    assert_eq!(outcome(&r, "UP")["state"], "INTEGRATED");
    assert_eq!(outcome(&r, "DOWN")["state"], "CONFLICT");
    let squash = repo.head("main");

    // integrate names the stale stack rather than merging UP's originals.
    let (code, r, _) = mpw_json(&repo, &["integrate", "RS", "--strategy", "squash"]);
    assert_eq!(code, Some(1));
    let detail = outcome(&r, "DOWN")["detail"].as_str().unwrap().to_string();
    assert!(
        detail.contains("whose head changed; run mpw restack"),
        "{detail}"
    );
    assert!(detail.contains("integrated by squash"), "{detail}");
    assert_eq!(repo.head("main"), squash);

    // Even without --rebase: a merge could not drop the commits.
    let (code, r, err) = mpw_json(&repo, &["restack", "RS", "DOWN"]);
    assert_eq!(code, Some(0), "{r:#}{err}");
    assert_eq!(outcome(&r, "DOWN")["mode"], "rebase");
    let new = repo.head(&down);
    // Only its own commit on top of the target; UP's original is gone.
    assert_eq!(
        repo.git(&["rev-list", "--count", &format!("main..{new}")]),
        "1"
    );
    assert_eq!(repo.git(&["log", "-1", "--format=%P", &new]), squash);
    let (contains, _, _) = repo.git_try(&["merge-base", "--is-ancestor", &up_commit, &new]);
    assert!(!contains, "UP's original commit is still in DOWN");
    assert_eq!(
        repo.git(&["show", &format!("{new}:a.txt")]),
        "one\ntwo\nthree"
    );

    let (code, r, err) = mpw_json(&repo, &["integrate", "RS", "--strategy", "squash"]);
    assert_eq!(code, Some(0), "{r:#}{err}");
    assert_eq!(repo.read("a.txt"), "one\ntwo\nthree\n");
    assert_eq!(repo.read("b.txt"), "mine\n");
}

#[test]
fn a_conflicting_restack_moves_nothing_and_names_the_paths() {
    let repo = repo().commit("init");
    stacked_run(&repo, "RC");
    let down = branch("RC", "DOWN");
    let old = repo.head(&down);
    // The fix writes where DOWN appended its line.
    let wt_up = worktree(&repo, "RC", "UP");
    write_file(&wt_up.join("a.txt"), b"one\ntwo\nzzz\n");
    run_git(&wt_up, &["commit", "-q", "-am", "fix UP"]);
    let wt = worktree(&repo, "RC", "DOWN");

    for args in [
        vec!["restack", "RC", "DOWN"],
        vec!["restack", "RC", "--rebase"],
    ] {
        let (code, r, err) = mpw_json(&repo, &args);
        assert_eq!(code, Some(1), "{args:?}: {r:#}{err}");
        let o = outcome(&r, "DOWN");
        assert_eq!(o["state"], "CONFLICT", "{args:?}");
        assert_eq!(o["conflicts"], serde_json::json!(["a.txt"]), "{args:?}");
        let detail = o["detail"].as_str().unwrap();
        assert!(detail.contains("nothing moved"), "{detail}");
        assert!(detail.contains(&wt.display().to_string()), "{detail}");
        assert_eq!(repo.head(&down), old, "{args:?}: the branch moved");
        assert_eq!(run_git(&wt, &["rev-parse", "HEAD"]), old);
        assert_eq!(run_git(&wt, &["status", "--porcelain"]), "");
        assert_eq!(
            std::fs::read_to_string(wt.join("a.txt")).unwrap(),
            "one\ntwo\nthree\n"
        );
    }
    assert!(restacked_events(&repo, "RC").is_empty());
}

#[test]
fn a_dirty_worktree_is_refused_with_exit_3_naming_the_files() {
    let repo = repo().commit("init");
    stacked_run(&repo, "RD");
    let down = branch("RD", "DOWN");
    let old = repo.head(&down);
    fix_upstream(&repo, "RD");
    let wt = worktree(&repo, "RD", "DOWN");
    write_file(&wt.join("b.txt"), b"half done\n");

    let out = repo.mpw().args(["restack", "RD"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    assert!(
        err.contains("b.txt") && err.contains("uncommitted"),
        "{err}"
    );
    assert_eq!(repo.head(&down), old);
    assert_eq!(
        std::fs::read_to_string(wt.join("b.txt")).unwrap(),
        "half done\n"
    );
    assert!(restacked_events(&repo, "RD").is_empty());

    // A workstream that stacks on nothing is a usage error.
    let out = repo.mpw().args(["restack", "RD", "UP"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("stacks on no other workstream"));
}

#[test]
fn with_no_workstream_named_a_chain_is_restacked_in_stack_order() {
    let repo = repo().commit("init");
    let plan = repo.plan(
        "RCH",
        r#"{ "run_id": "RCH", "workstreams": [
            { "id": "C", "depends_on": ["B"], "tasks": [ { "id": "T", "run": "printf c > c.txt" } ] },
            { "id": "B", "depends_on": ["UP"], "tasks": [ { "id": "T", "run": "printf b > b.txt" } ] },
            { "id": "UP", "tasks": [ { "id": "T", "run": "printf 'one\ntwo\n' > a.txt" } ] }
        ] }"#,
    );
    let out = repo.mpw().arg("run").arg(&plan).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let fixed = fix_upstream(&repo, "RCH");

    let (code, r, err) = mpw_json(&repo, &["restack", "RCH"]);
    assert_eq!(code, Some(0), "{r:#}{err}");
    let order: Vec<&str> = r["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["workstream"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["B", "C"]);
    assert_eq!(outcome(&r, "B")["state"], "RESTACKED");
    // C was stale only once B moved: it stacks on B's new head.
    assert_eq!(outcome(&r, "C")["state"], "RESTACKED");
    let (b, c) = (
        repo.head(&branch("RCH", "B")),
        repo.head(&branch("RCH", "C")),
    );
    for (tip, on) in [(&b, &fixed), (&c, &b)] {
        let (contains, _, _) = repo.git_try(&["merge-base", "--is-ancestor", on, tip]);
        assert!(contains, "{tip} does not contain {on}");
    }
    assert_eq!(repo.git(&["show", &format!("{c}:a.txt")]), "ONE\ntwo");
    let (code, r, err) = mpw_json(&repo, &["integrate", "RCH"]);
    assert_eq!(code, Some(0), "{r:#}{err}");
}
