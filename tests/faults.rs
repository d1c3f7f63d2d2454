//! Faults and bad input: crashes and resume, Ctrl-C, cancel, timeouts,
//! floods, concurrent runs, and every kind of bad input with its exit code.
#![cfg(unix)]

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The pid a task wrote with `echo $$ > FILE`; waits for the whole line,
/// since the file exists a moment before its content does.
fn read_pid(p: &Path) -> i32 {
    let mut text = String::new();
    wait_until(
        &format!("a pid in {}", p.display()),
        Duration::from_secs(30),
        || {
            text = std::fs::read_to_string(p).unwrap_or_default();
            text.ends_with('\n')
        },
    );
    text.trim().parse().unwrap()
}

/// `mpw resume RUN`, which must finish the run (exit 0).
fn resume_ok(repo: &TestRepo, run: &str) {
    let out = repo
        .mpw()
        .args(["resume", run])
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    assert_ok(&out);
}

fn status(repo: &TestRepo, run: &str) -> Value {
    repo.run_status(run)
}

fn task_state(st: &Value, ws: &str, t: &str) -> String {
    task(st, ws, t)["state"].as_str().unwrap().to_string()
}

/// Each task appends a line to a counter file outside the repo, so running
/// twice would show; and writes a file into the worktree to be committed.
/// A fresh repository whose run `id` of the counting plan (`slow_task` as
/// there) was killed at the fault point `fault`.
fn killed_run(id: &str, slow_task: &str, fault: &str) -> TestRepo {
    let repo = repo().commit("init");
    let plan = counting_plan(&repo, id, slow_task);
    let mut child = repo.spawn_run(&plan, &[("MPW_FAULT", fault)]);
    assert!(
        !child.wait().unwrap().success(),
        "the coordinator died at {fault}"
    );
    repo
}

fn counting_plan(repo: &TestRepo, id: &str, slow_task: &str) -> std::path::PathBuf {
    let c = repo.dir.path().join("counts");
    std::fs::create_dir_all(&c).unwrap();
    let c = c.to_str().unwrap();
    let mut wss = Vec::new();
    for w in ["A", "B"] {
        let mut tasks = Vec::new();
        for t in ["T1", "T2", "T3"] {
            let key = format!("{w}/{t}");
            let sleep = if key == slow_task {
                // Slow only the first time, so the resumed attempt is quick.
                format!("if [ ! -f {c}/slow.pid ]; then echo $$ > {c}/slow.pid; sleep 30; fi; ")
            } else {
                String::new()
            };
            let dep = if t == "T1" {
                String::new()
            } else {
                format!(
                    r#", "depends_on": ["T{}"]"#,
                    t[1..].parse::<u32>().unwrap() - 1
                )
            };
            tasks.push(format!(
                r#"{{ "id": "{t}", "run": "{sleep}echo {key} >> {c}/{w}{t}.count; echo {key} > {t}.txt"{dep} }}"#
            ));
        }
        wss.push(format!(
            r#"{{ "id": "{w}", "tasks": [{}] }}"#,
            tasks.join(",")
        ));
    }
    repo.plan(
        id,
        &format!(
            r#"{{ "run_id": "{id}", "workstreams": [{}] }}"#,
            wss.join(",")
        ),
    )
}

fn assert_each_task_once(repo: &TestRepo, run: &str) {
    let c = repo.dir.path().join("counts");
    for w in ["A", "B"] {
        let log = repo.git(&["log", "--format=%s", &format!("main..mpw/{run}/{w}")]);
        assert_eq!(log.lines().count(), 3, "{w}: one commit per task: {log}");
        for t in ["T1", "T2", "T3"] {
            assert_eq!(
                repo.git(&["show", &format!("mpw/{run}/{w}:{t}.txt")]),
                format!("{w}/{t}")
            );
            let n = std::fs::read_to_string(c.join(format!("{w}{t}.count")))
                .unwrap_or_default()
                .lines()
                .count();
            // The interrupted task ran twice (once cut short); every other once.
            assert!(n >= 1, "{w}/{t} never ran");
        }
    }
}

/// Start the plan, wait for its slow task (A/T2) to run and mpw to have
/// noted its process, kill -9 the coordinator; returns the task's pid (left
/// running, as after a real crash).
fn kill_9_while_the_slow_task_runs(repo: &TestRepo, plan: &Path, run: &str) -> i32 {
    let mut child = repo.spawn_run(plan, &[]);
    let pidfile = repo.dir.path().join("counts/slow.pid");
    let noted = repo.mpw_dir().join(format!("runs/{run}/logs/A/T2.1.proc"));
    wait_until("the slow task to start", Duration::from_secs(30), || {
        pidfile.exists() && noted.exists()
    });
    let pid = read_pid(&pidfile);
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    pid
}

/// A repository with run `id` finished: one workstream A, its task
/// committed `a.txt`; ready to integrate.
fn finished_run(id: &str) -> TestRepo {
    let repo = repo().commit("init");
    let plan = repo.plan(
        &id.to_lowercase(),
        &format!(
            r#"{{ "run_id": "{id}", "workstreams": [ {{ "id": "A", "tasks": [ {{ "id": "T", "run": "echo a > a.txt" }} ] }} ] }}"#
        ),
    );
    let out = repo.mpw().arg("run").arg(&plan).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    repo
}

#[test]
fn kill_9_while_a_task_runs_then_resume_finishes_exactly_once() {
    let repo = repo().commit("init");
    let plan = counting_plan(&repo, "K1", "A/T2");
    let task_pid = kill_9_while_the_slow_task_runs(&repo, &plan, "K1");
    assert!(
        alive(task_pid),
        "the orphaned task is still running before resume"
    );
    resume_ok(&repo, "K1");
    assert!(!alive(task_pid), "resume ended the orphaned process group");
    let st = status(&repo, "K1");
    assert_eq!(st["state"], "COMPLETED");
    assert_each_task_once(&repo, "K1");
    // Tasks finished before the crash ran once.
    let c = repo.dir.path().join("counts");
    assert_eq!(
        std::fs::read_to_string(c.join("AT1.count"))
            .unwrap()
            .lines()
            .count(),
        1
    );
    let events = std::fs::read_to_string(repo.mpw_dir().join("runs/K1/events.jsonl")).unwrap();
    assert!(events.contains("TASK_INTERRUPTED") && events.contains("RUN_RESUMED"));
}

#[test]
fn kill_9_right_after_a_commit_is_recognised_on_resume() {
    let repo = killed_run("K2", "none", "kill-after-commit:A/T2");
    // The commit exists, the database still says RUNNING.
    let msg = repo.git(&["log", "-1", "--format=%B", "mpw/K2/A"]);
    assert!(msg.contains("Mpw-Task: A/T2"), "{msg}");
    resume_ok(&repo, "K2");
    assert_each_task_once(&repo, "K2");
    let c = repo.dir.path().join("counts");
    assert_eq!(
        std::fs::read_to_string(c.join("AT2.count"))
            .unwrap()
            .lines()
            .count(),
        1,
        "A/T2 was not run again"
    );
    assert_eq!(task_state(&status(&repo, "K2"), "A", "T2"), "SUCCEEDED");
    // Resume again: nothing to do, nothing runs twice.
    let out = repo.mpw().args(["resume", "K2"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn resume_removes_git_locks_a_kill_left_in_the_runs_worktrees_and_refs() {
    let repo = killed_run("K5", "none", "kill-after-commit:A/T1");
    // What a kill -9 in the middle of a write leaves: git's lock files.
    // A's worktree exists for sure: its first task just committed there.
    let list = repo.git(&["worktree", "list", "--porcelain"]);
    let wt_a = list
        .lines()
        .filter_map(|l| l.strip_prefix("worktree "))
        .find(|p| p.ends_with("K5/A"))
        .unwrap()
        .to_string();
    let admin_a = repo.git(&["-C", &wt_a, "rev-parse", "--absolute-git-dir"]);
    let common = repo.path.join(".git");
    let planted = [
        Path::new(admin_a.trim()).join("index.lock"),
        common.join("refs/heads/mpw/K5/A.lock"),
        common.join("refs/mpw/K5/failed/B/T9.lock"),
    ];
    for p in &planted {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, "").unwrap();
    }
    // The user's own lock is not mpw's to remove.
    let users = common.join("index.lock");
    std::fs::write(&users, "").unwrap();
    resume_ok(&repo, "K5");
    assert_each_task_once(&repo, "K5");
    for p in &planted {
        assert!(!p.exists(), "{} is still there", p.display());
    }
    assert!(users.exists(), "the main worktree's lock was removed");
    let events = std::fs::read_to_string(repo.mpw_dir().join("runs/K5/events.jsonl")).unwrap();
    let resumed = events.lines().find(|l| l.contains("RUN_RESUMED")).unwrap();
    assert!(
        resumed.contains("stale_locks_removed") && resumed.contains("A.lock"),
        "{resumed}"
    );
    let shown = repo.mpw().args(["events", "K5"]).output().unwrap();
    assert!(
        stdout_of(&shown).contains("removed git lock files a killed process left")
            && stdout_of(&shown).contains("index.lock"),
        "{}",
        stdout_of(&shown)
    );
}

#[test]
fn mpw_cancel_after_a_crash_ends_the_orphan_and_its_stale_locks() {
    let repo = repo().commit("init");
    let plan = counting_plan(&repo, "K6", "A/T2");
    let task_pid = kill_9_while_the_slow_task_runs(&repo, &plan, "K6");
    let lock = repo.path.join(".git/refs/heads/mpw/K6/A.lock");
    std::fs::write(&lock, "").unwrap();
    let out = repo.mpw().args(["cancel", "K6"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert!(!alive(task_pid), "cancel ended the orphaned task");
    assert!(!lock.exists(), "the stale branch lock is gone");
    let st = status(&repo, "K6");
    assert_eq!(st["state"], "CANCELLED");
    assert_eq!(task_state(&st, "A", "T2"), "CANCELLED");
    // The branch can be cleaned up like any other.
    let out = repo
        .mpw()
        .args(["clean", "K6", "--branches", "--force"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert!(
        repo.git(&["branch", "--list", "mpw/K6/*"])
            .trim()
            .is_empty()
    );
}

#[test]
fn mpw_cancel_after_a_crash_keeps_the_running_attempts_work() {
    let repo = repo().commit("init");
    let pidfile = repo.dir.path().join("task.pid");
    let plan = repo.plan(
        "k",
        &format!(
            r#"{{ "run_id": "KC", "workstreams": [ {{ "id": "A", "tasks": [
                {{ "id": "T", "run": "echo work > kept.txt; echo $$ > {}; sleep 60" }} ] }} ] }}"#,
            pidfile.display()
        ),
    );
    let mut child = repo.spawn_run(&plan, &[]);
    let noted = repo.mpw_dir().join("runs/KC/logs/A/T.1.proc");
    wait_until("the task to write", Duration::from_secs(30), || {
        noted.exists() && std::fs::read_to_string(&pidfile).is_ok_and(|s| s.ends_with('\n'))
    });
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    let out = repo.mpw().args(["cancel", "KC"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    // As with Ctrl-C on a live run: the attempt's work is kept under a ref.
    assert_eq!(
        repo.git(&["show", "refs/mpw/KC/cancelled/A/T:kept.txt"]),
        "work"
    );
    let st = status(&repo, "KC");
    assert_eq!(task_state(&st, "A", "T"), "CANCELLED");
    assert_eq!(
        task(&st, "A", "T")["preserved_ref"],
        "refs/mpw/KC/cancelled/A/T"
    );
}

#[test]
fn a_task_started_but_not_yet_recorded_is_ended_by_resume_and_cancel() {
    for (run, how) in [("K7", "resume"), ("K8", "cancel")] {
        // Killed after A/T2 started, before its pid reached the database.
        let repo = killed_run(run, "A/T2", "kill-before-pid:A/T2");
        let task_pid = read_pid(&repo.dir.path().join("counts/slow.pid"));
        assert!(alive(task_pid), "the unrecorded task runs on");
        let out = repo
            .mpw()
            .args([how, run])
            .timeout(Duration::from_secs(60))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{how}: {}", stderr_of(&out));
        assert!(!alive(task_pid), "{how} ended the unrecorded task");
        let left: Vec<_> = std::fs::read_dir(repo.mpw_dir().join(format!("runs/{run}/logs/A")))
            .unwrap()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "proc"))
            .collect();
        assert!(left.is_empty(), "{how} left {left:?}");
    }
}

/// A step's changes commit together, and a task's process starts only once
/// its RUNNING state is committed, with its event's line written.
#[test]
fn a_task_runs_only_once_its_start_is_recorded() {
    let repo = killed_run("KL", "none", "kill-before-launch:A/T2");
    let db = rusqlite::Connection::open(repo.mpw_dir().join("mpw.db")).unwrap();
    let state: String = db
        .query_row(
            "SELECT state FROM attempts WHERE run_id = 'KL' AND ws = 'A' AND task = 'T2'",
            [],
            |r| r.get(0),
        )
        .expect("A/T2's attempt is recorded");
    assert_eq!(state, "RUNNING");
    let lines = std::fs::read_to_string(repo.mpw_dir().join("runs/KL/events.jsonl")).unwrap();
    assert!(
        lines.lines().any(|l| l.contains("\"TASK_STARTED\"")
            && l.contains("\"workstream\":\"A\"")
            && l.contains("\"task\":\"T2\"")),
        "A/T2's start is in events.jsonl:\n{lines}"
    );
    assert!(
        !repo.dir.path().join("counts/AT2.count").exists(),
        "not started"
    );
    resume_ok(&repo, "KL");
    assert_each_task_once(&repo, "KL");
}

#[test]
fn a_worktree_half_created_when_the_coordinator_died_is_made_again_on_resume() {
    let repo = killed_run("K9", "none", "kill-adding-worktree:A");
    // What git and gix leave mid-creation: the worktree locked "initializing".
    let admin = repo.path.join(".git/worktrees/A");
    assert_eq!(
        std::fs::read_to_string(admin.join("locked"))
            .unwrap()
            .trim(),
        "initializing"
    );
    // Cut short one step earlier still: before its HEAD was written.
    std::fs::remove_file(admin.join("HEAD")).unwrap();
    resume_ok(&repo, "K9");
    assert_each_task_once(&repo, "K9");
    assert_eq!(status(&repo, "K9")["state"], "COMPLETED");
}

/// `git worktree list` has nothing half-made or left over, and `git fsck` is clean.
fn assert_worktrees_clean(repo: &TestRepo) {
    let list = repo.git(&["worktree", "list", "--porcelain"]);
    assert!(
        !list.contains("prunable") && !list.contains("locked") && !list.contains("_gate"),
        "{list}"
    );
    let (ok, _, err) = repo.git_try(&["fsck", "--no-progress"]);
    assert!(ok, "git fsck: {err}");
}

#[test]
fn a_resume_killed_while_removing_a_half_made_worktree_is_resumed_again() {
    let repo = killed_run("KR", "none", "kill-adding-worktree:A");
    // The resume clears A's unfinished worktree; killed half-way through.
    let out = repo
        .mpw()
        .args(["resume", "KR"])
        .env("MPW_FAULT", "kill-removing-worktree:A")
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), None, "the resume died removing A");
    assert!(
        !repo.worktree_root().join("KR/A").exists(),
        "A's folder went first"
    );
    assert!(
        repo.common_dir().join("worktrees/A").exists(),
        "its registration not yet"
    );
    resume_ok(&repo, "KR");
    assert_each_task_once(&repo, "KR");
    assert_eq!(status(&repo, "KR")["state"], "COMPLETED");
    assert_worktrees_clean(&repo);
}

#[test]
fn an_integration_killed_while_adding_the_gates_worktree_is_integrated_again() {
    let repo = finished_run("GW");
    let out = repo
        .mpw()
        .args(["integrate", "--gate", "test -f a.txt"])
        .env("MPW_FAULT", "kill-adding-worktree:_gate-A.1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), None, "killed adding the gate's worktree");
    assert!(repo.git(&["worktree", "list"]).contains("_gate-A.1"));
    let out = repo
        .mpw()
        .args(["integrate", "--gate", "test -f a.txt"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert_eq!(ws(&repo.run_status("GW"), "A")["state"], "INTEGRATED");
    assert_eq!(repo.read("a.txt").trim(), "a");
    assert_worktrees_clean(&repo);
}

/// A workstream's state as the database records it.
fn ws_state_in_db(repo: &TestRepo, run: &str, ws: &str) -> String {
    let db = rusqlite::Connection::open(repo.mpw_dir().join("mpw.db")).unwrap();
    db.query_row(
        "SELECT state FROM workstreams WHERE run_id = ?1 AND id = ?2",
        [run, ws],
        |r| r.get(0),
    )
    .unwrap()
}

#[test]
fn recovery_writes_the_workstreams_it_reopens() {
    let repo = repo().commit("init");
    let plan = counting_plan(&repo, "RW", "A/T2");
    let pid = kill_9_while_the_slow_task_runs(&repo, &plan, "RW");
    assert_eq!(ws_state_in_db(&repo, "RW", "A"), "RUNNING");
    let out = repo
        .mpw()
        .args(["resume", "RW"])
        .env("MPW_FAULT", "kill-after-recover")
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), None, "killed after recovering");
    assert!(!alive(pid), "the orphan was ended");
    // What recovery changed is what the database says.
    assert_eq!(ws_state_in_db(&repo, "RW", "A"), "PENDING");
    resume_ok(&repo, "RW");
    assert_each_task_once(&repo, "RW");
    assert_eq!(ws_state_in_db(&repo, "RW", "A"), "COMPLETED");
}

#[test]
fn a_run_killed_between_its_plan_and_its_row_can_be_run_again() {
    let repo = repo().commit("init");
    let plan = counting_plan(&repo, "KP", "none");
    let mut child = repo.spawn_run(&plan, &[("MPW_FAULT", "kill-between-plan-and-run-row")]);
    assert!(!child.wait().unwrap().success(), "the run died");
    let out = repo
        .mpw()
        .arg("run")
        .arg(&plan)
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert_each_task_once(&repo, "KP");
    assert_eq!(status(&repo, "KP")["state"], "COMPLETED");
}

#[test]
fn ctrl_c_cancels_within_seconds_and_leaves_no_process() {
    let repo = repo().commit("init");
    let pids = repo.dir.path().join("pids");
    std::fs::create_dir_all(&pids).unwrap();
    let p = pids.to_str().unwrap();
    let plan = repo.plan(
        "c",
        &format!(
            r#"{{ "run_id": "C1", "workstreams": [
                {{ "id": "A", "tasks": [ {{ "id": "T1", "run": "sleep 60 & echo $! > {p}/a; echo x > x.txt; wait" }}, {{ "id": "T2", "run": "true", "depends_on": ["T1"] }} ] }},
                {{ "id": "B", "tasks": [ {{ "id": "T1", "run": "trap '' TERM; echo $$ > {p}/b; sleep 60" }} ] }} ] }}"#
        ),
    );
    let mut child = repo.spawn_run(&plan, &[]);
    wait_until("tasks to start", Duration::from_secs(30), || {
        pids.join("a").exists() && pids.join("b").exists()
    });
    let (a, b) = (read_pid(&pids.join("a")), read_pid(&pids.join("b")));
    let t = Instant::now();
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let code = child.wait().unwrap().code();
    assert_eq!(code, Some(130));
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "took {:?}",
        t.elapsed()
    );
    assert!(!alive(a) && !alive(b), "no process left");
    let st = status(&repo, "C1");
    assert_eq!(st["state"], "CANCELLED");
    assert_eq!(task_state(&st, "A", "T1"), "CANCELLED");
    assert_eq!(task_state(&st, "A", "T2"), "SKIPPED");
    assert_eq!(task_state(&st, "B", "T1"), "CANCELLED");
    // What the cancelled task wrote is kept.
    assert_eq!(repo.git(&["show", "refs/mpw/C1/cancelled/A/T1:x.txt"]), "x");
}

#[test]
fn mpw_cancel_from_another_terminal_stops_the_run() {
    let repo = repo().commit("init");
    let flag = repo.dir.path().join("started");
    let plan = repo.plan(
        "c",
        &format!(
            r#"{{ "run_id": "C2", "workstreams": [ {{ "id": "A", "tasks": [ {{ "id": "T", "run": "touch {}; sleep 60" }} ] }} ] }}"#,
            flag.display()
        ),
    );
    let mut child = repo.spawn_run(&plan, &[]);
    wait_until("the task", Duration::from_secs(30), || flag.exists());
    let out = repo
        .mpw()
        .args(["cancel", "C2"])
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert!(stdout_of(&out).contains("CANCELLED"));
    assert_eq!(child.wait().unwrap().code(), Some(130));
    assert_eq!(status(&repo, "C2")["state"], "CANCELLED");
}

#[test]
fn a_timeout_ends_backgrounded_grandchildren() {
    let repo = repo().commit("init");
    let pidfile = repo.dir.path().join("bg.pid");
    let plan = repo.plan(
        "t",
        &format!(
            r#"{{ "run_id": "T1", "workstreams": [ {{ "id": "A", "tasks": [
                {{ "id": "T", "timeout_s": 1, "run": "sleep 100 & echo $! > {}; sleep 100" }} ] }} ] }}"#,
            pidfile.display()
        ),
    );
    let out = repo
        .mpw()
        .arg("run")
        .arg(&plan)
        .arg("--grace")
        .arg("1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let st = status(&repo, "T1");
    assert_eq!(task_state(&st, "A", "T"), "FAILED");
    let reason = st["workstreams"][0]["tasks"][0]["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(reason.contains("timed out"), "{reason}");
    assert!(!alive(read_pid(&pidfile)), "the grandchild is gone");
}

#[test]
fn a_300_mb_stdout_flood_costs_disk_not_memory() {
    let repo = repo().commit("init");
    let plan = repo.plan(
        "f",
        r#"{ "run_id": "F1", "workstreams": [ { "id": "A", "tasks": [
            { "id": "T", "run": "head -c 300000000 /dev/zero; printf '\\377\\376binary'" } ] } ] }"#,
    );
    // Measure the coordinator's peak RSS in a process of its own.
    let probe = "import resource,subprocess,sys; r=subprocess.run(sys.argv[1:]); print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)";
    let out = Command::new("python3")
        .args(["-c", probe])
        .arg(assert_cmd::cargo::cargo_bin("mpw"))
        .args(["-q", "run"])
        .arg(&plan)
        .current_dir(&repo.path)
        .output()
        .unwrap();
    let text = stdout_of(&out);
    // The probe's line is the last; mpw's own output comes before it.
    let mut parts = text.lines().last().unwrap_or("").split_whitespace();
    assert_eq!(parts.next(), Some("0"), "{text}{}", stderr_of(&out));
    let kib: f64 = parts.next().unwrap().parse().unwrap();
    eprintln!(
        "coordinator peak RSS during a 300 MB flood: {:.1} MiB",
        kib / 1024.0
    );
    assert!(kib / 1024.0 < 100.0, "peak RSS {kib} KiB");
    let log = repo.mpw_dir().join("runs/F1/logs/A/T.1.out");
    assert_eq!(std::fs::metadata(&log).unwrap().len(), 300_000_000 + 8);
    let tail = {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = std::fs::File::open(&log).unwrap();
        f.seek(SeekFrom::End(-8)).unwrap();
        let mut b = Vec::new();
        f.read_to_end(&mut b).unwrap();
        b
    };
    assert_eq!(tail, b"\xff\xfebinary", "bytes kept exactly");
}

#[test]
fn two_runs_at_once_and_status_while_they_write() {
    let repo = repo().commit("init");
    let mk = |id: &str| {
        let wss: Vec<String> = (0..3)
            .map(|w| {
                let tasks: Vec<String> = (0..5)
                    .map(|t| {
                        format!(r#"{{ "id": "T{t}", "run": "echo {t} > f{t}.txt; sleep 0.05" }}"#)
                    })
                    .collect();
                format!(r#"{{ "id": "W{w}", "tasks": [{}] }}"#, tasks.join(","))
            })
            .collect();
        repo.plan(
            id,
            &format!(
                r#"{{ "run_id": "{id}", "workstreams": [{}] }}"#,
                wss.join(",")
            ),
        )
    };
    let (p1, p2) = (mk("P1"), mk("P2"));
    let mut a = repo.spawn_run(&p1, &[]);
    let mut b = repo.spawn_run(&p2, &[]);
    let mut polls = 0;
    while a.try_wait().unwrap().is_none() || b.try_wait().unwrap().is_none() {
        let out = repo.mpw().args(["status", "--json"]).output().unwrap();
        if out.status.success() {
            serde_json::from_slice::<Value>(&out.stdout).expect("status is whole JSON");
            polls += 1;
        }
        std::thread::sleep(Duration::from_millis(30));
    }
    let (oa, ob) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(oa.status.success(), "{}", stderr_of(&oa));
    assert!(ob.status.success(), "{}", stderr_of(&ob));
    assert!(polls > 0);
    for id in ["P1", "P2"] {
        let st = status(&repo, id);
        assert_eq!(st["state"], "COMPLETED");
        assert_eq!(st["counts"]["SUCCEEDED"], 15);
    }
}

// ---- bad input: the documented exit code, a clear message, nothing touched ----

fn simple_plan(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("simple.json");
    std::fs::write(
        &p,
        r#"{ "workstreams": [ { "id": "A", "tasks": [ { "id": "T", "run": "true" } ] } ] }"#,
    )
    .unwrap();
    p
}

#[test]
fn not_a_git_repository_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let plan = simple_plan(dir.path());
    let out = mpw()
        .current_dir(dir.path())
        .arg("run")
        .arg(&plan)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr_of(&out).contains("not a git repository"),
        "{}",
        stderr_of(&out)
    );
}

#[test]
fn a_bare_repository_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    run_git(dir.path(), &["init", "-q", "--bare", "b.git"]);
    let plan = simple_plan(dir.path());
    let out = mpw()
        .current_dir(dir.path().join("b.git"))
        .arg("run")
        .arg(&plan)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr_of(&out).contains("bare"), "{}", stderr_of(&out));
}

#[test]
fn a_repository_without_commits_exits_2_and_says_so() {
    let repo = repo().init();
    let plan = simple_plan(repo.dir.path());
    let out = repo.mpw().arg("run").arg(&plan).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr_of(&out).contains("no commits"),
        "{}",
        stderr_of(&out)
    );
    assert!(!repo.mpw_dir().exists(), "nothing touched");
}

#[test]
fn a_missing_plan_exits_2() {
    let repo = repo().commit("init");
    let out = repo.mpw().args(["run", "nope.jsonc"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("nope.jsonc"));
    assert!(!repo.mpw_dir().exists());
}

#[test]
fn a_reused_run_id_exits_2_and_suggests_resume() {
    let repo = repo().commit("init");
    let plan = repo.plan("r", r#"{ "run_id": "DUP", "workstreams": [ { "id": "A", "tasks": [ { "id": "T", "run": "true" } ] } ] }"#);
    assert_eq!(
        repo.mpw()
            .arg("run")
            .arg(&plan)
            .output()
            .unwrap()
            .status
            .code(),
        Some(0)
    );
    let out = repo.mpw().arg("run").arg(&plan).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr_of(&out).contains("mpw resume DUP"),
        "{}",
        stderr_of(&out)
    );
}

#[test]
fn an_unknown_base_exits_2_and_names_it() {
    let repo = repo().commit("init");
    let plan = repo.plan("b", r#"{ "base": "no-such-branch", "workstreams": [ { "id": "A", "tasks": [ { "id": "T", "run": "true" } ] } ] }"#);
    let out = repo.mpw().arg("run").arg(&plan).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("no-such-branch"));
    assert!(!repo.mpw_dir().exists());
}

#[test]
fn worktree_root_inside_the_main_worktree_warns_why() {
    let repo = repo().with_file(".gitignore", "wt/\n").commit("init");
    let plan = repo.plan("w", r#"{ "run_id": "W1", "globals": { "worktree_root": "wt" }, "workstreams": [ { "id": "A", "tasks": [ { "id": "T", "run": "echo a > a.txt" } ] } ] }"#);
    let out = repo.mpw().arg("run").arg(&plan).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    assert!(
        err.contains("inside the main worktree") && err.contains("search upward"),
        "{err}"
    );
    assert!(repo.path.join("wt/W1/A/a.txt").exists());
}

#[test]
fn a_worktree_path_that_exists_and_is_not_ours_exits_3() {
    let repo = repo().commit("init");
    let squatter = repo.worktree_root().join("S1").join("A");
    std::fs::create_dir_all(&squatter).unwrap();
    std::fs::write(squatter.join("mine.txt"), "keep me").unwrap();
    let plan = repo.plan("s", r#"{ "run_id": "S1", "workstreams": [ { "id": "A", "tasks": [ { "id": "T", "run": "true" } ] } ] }"#);
    let out = repo.mpw().arg("run").arg(&plan).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr_of(&out).contains(squatter.to_str().unwrap()),
        "{}",
        stderr_of(&out)
    );
    assert_eq!(
        std::fs::read_to_string(squatter.join("mine.txt")).unwrap(),
        "keep me"
    );
    let (ok, _, _) = repo.git_try(&["rev-parse", "--verify", "mpw/S1/A"]);
    assert!(!ok, "no branch created");
}

#[test]
fn paths_with_spaces_and_non_ascii_work() {
    let repo = repo()
        .named("my repo ü")
        .with_file("dír ü/a b.txt", "x\n")
        .commit("init");
    let plan = repo.plan("u", r#"{ "run_id": "U1", "workstreams": [ { "id": "A", "tasks": [ { "id": "T", "run": "echo y > 'dír ü/c d.txt'" } ] } ] }"#);
    let out = repo.mpw().arg("run").arg(&plan).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert_eq!(repo.git(&["show", "mpw/U1/A:dír ü/c d.txt"]), "y");
    let out = repo.mpw().arg("integrate").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert_eq!(repo.read("dír ü/c d.txt"), "y\n");
}

#[test]
fn resume_itself_killed_and_resumed_again_finishes_once() {
    let repo = repo().commit("init");
    let c = repo.dir.path().join("c");
    std::fs::create_dir_all(&c).unwrap();
    let cs = c.to_str().unwrap();
    // A/T2 is slow until the file `fast` exists; every run of it leaves its pid.
    let plan = repo.plan(
        "rr",
        &format!(
            r#"{{ "run_id": "RR", "workstreams": [
                {{ "id": "A", "tasks": [
                    {{ "id": "T1", "run": "echo 1 >> {cs}/T1; echo 1 > t1.txt" }},
                    {{ "id": "T2", "depends_on": ["T1"], "run": "echo $$ > {cs}/pid.$MPW_ATTEMPT; test -f {cs}/fast || sleep 30; echo 2 >> {cs}/T2; echo 2 > t2.txt" }},
                    {{ "id": "T3", "depends_on": ["T2"], "run": "echo 3 >> {cs}/T3; echo 3 > t3.txt" }} ] }} ] }}"#
        ),
    );
    let mut run = repo.spawn_run(&plan, &[]);
    let noted = |n: u32| repo.mpw_dir().join(format!("runs/RR/logs/A/T2.{n}.proc"));
    wait_until("attempt 1", Duration::from_secs(30), || {
        c.join("pid.1").exists() && noted(1).exists()
    });
    unsafe { libc::kill(run.id() as i32, libc::SIGKILL) };
    run.wait().unwrap();
    // Resume, and kill the resume while the task runs again.
    let mut resume = repo
        .mpw_process()
        .args(["-q", "resume", "RR"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("attempt 2", Duration::from_secs(30), || {
        c.join("pid.2").exists() && noted(2).exists()
    });
    let first = read_pid(&c.join("pid.1"));
    assert!(!alive(first), "resume ended the first orphan");
    unsafe { libc::kill(resume.id() as i32, libc::SIGKILL) };
    resume.wait().unwrap();
    std::fs::write(c.join("fast"), "").unwrap();
    resume_ok(&repo, "RR");
    assert!(!alive(read_pid(&c.join("pid.2"))));
    let count = |f: &str| std::fs::read_to_string(c.join(f)).unwrap().lines().count();
    assert_eq!((count("T1"), count("T2"), count("T3")), (1, 1, 1));
    let log = repo.git(&["log", "--format=%s", "main..mpw/RR/A"]);
    assert_eq!(log.lines().count(), 3, "{log}");
    assert_eq!(status(&repo, "RR")["state"], "COMPLETED");
}

#[test]
fn resume_provisions_a_deleted_worktree_again_from_its_branch() {
    let repo = repo().commit("init");
    let c = repo.dir.path().join("c");
    std::fs::create_dir_all(&c).unwrap();
    let cs = c.to_str().unwrap();
    let plan = repo.plan(
        "gone",
        &format!(
            r#"{{ "run_id": "GONE", "globals": {{ "setup": ["echo setup >> {cs}/setups"] }}, "workstreams": [
                {{ "id": "A", "tasks": [
                    {{ "id": "T1", "run": "echo 1 > t1.txt" }},
                    {{ "id": "T2", "depends_on": ["T1"], "run": "echo $$ > {cs}/pid; test -f {cs}/fast || sleep 30; echo 2 > t2.txt" }} ] }} ] }}"#
        ),
    );
    let mut run = repo.spawn_run(&plan, &[]);
    let noted = repo.mpw_dir().join("runs/GONE/logs/A/T2.1.proc");
    wait_until("T2", Duration::from_secs(30), || {
        c.join("pid").exists() && noted.exists()
    });
    unsafe { libc::kill(run.id() as i32, libc::SIGKILL) };
    run.wait().unwrap();
    // The laptop's cleaner took the worktree.
    std::fs::remove_dir_all(repo.worktree_root().join("GONE").join("A")).unwrap();
    std::fs::write(c.join("fast"), "").unwrap();
    resume_ok(&repo, "GONE");
    // Provisioned again (setup ran again), T1's commit kept, T2 done once.
    assert_eq!(
        std::fs::read_to_string(c.join("setups"))
            .unwrap()
            .lines()
            .count(),
        2
    );
    let log = repo.git(&["log", "--format=%s", "main..mpw/GONE/A"]);
    assert_eq!(log.lines().count(), 2, "{log}");
    assert_eq!(repo.git(&["show", "mpw/GONE/A:t1.txt"]), "1");
    assert_eq!(repo.git(&["show", "mpw/GONE/A:t2.txt"]), "2");
    assert!(repo.worktree_root().join("GONE/A/t2.txt").exists());
}

/// A command that announces the TERM of a graceful stop in `termed` and
/// goes on running, so that only a KILL ends it.
fn ignores_term(started: &Path, termed: &Path) -> String {
    format!(
        "trap 'touch {}' TERM; touch {}; while true; do sleep 1; done",
        termed.display(),
        started.display()
    )
}

/// Send Ctrl-C, wait until the graceful stop has reached the command (it
/// wrote `termed`), then Ctrl-C again: mpw must exit 130 long before its
/// 600 s grace would have run out.
fn second_ctrl_c_ends(child: &mut Child, termed: &Path) {
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    wait_until("the TERM to reach it", Duration::from_secs(30), || {
        termed.exists()
    });
    assert!(
        child.try_wait().unwrap().is_none(),
        "still in its grace period"
    );
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let mut code = None;
    wait_until("mpw to exit", Duration::from_secs(60), || {
        code = child.try_wait().unwrap().map(|s| s.code());
        code.is_some()
    });
    assert_eq!(code, Some(Some(130)));
}

#[test]
fn a_second_ctrl_c_kills_at_once() {
    let repo = repo().commit("init");
    let (started, termed) = (
        repo.dir.path().join("started"),
        repo.dir.path().join("termed"),
    );
    let plan = repo.plan(
        "cc",
        &format!(
            r#"{{ "run_id": "CC", "workstreams": [ {{ "id": "A", "tasks": [ {{ "id": "T", "run": "{}" }} ] }} ] }}"#,
            ignores_term(&started, &termed)
        ),
    );
    let mut child = repo
        .mpw_process()
        .args(["-q", "run", "--grace", "600"])
        .arg(&plan)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the task", Duration::from_secs(30), || started.exists());
    second_ctrl_c_ends(&mut child, &termed);
    assert_eq!(task_state(&status(&repo, "CC"), "A", "T"), "CANCELLED");
}

#[test]
fn a_second_ctrl_c_during_a_gate_kills_it_at_once() {
    let repo = finished_run("G2");
    let tip = repo.head("main");
    let (started, termed) = (
        repo.dir.path().join("started"),
        repo.dir.path().join("termed"),
    );
    let mut child = repo
        .mpw_process()
        .args(["-q", "integrate", "--grace", "600", "--gate"])
        .arg(ignores_term(&started, &termed))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the gate", Duration::from_secs(30), || started.exists());
    second_ctrl_c_ends(&mut child, &termed);
    assert!(!repo.git(&["worktree", "list"]).contains("_gate"));
    assert_eq!(repo.head("main"), tip);
    assert_eq!(ws(&repo.run_status("G2"), "A")["state"], "COMPLETED");
}

#[test]
fn ctrl_c_during_a_gate_ends_it_and_leaves_the_target_and_states_alone() {
    let repo = finished_run("G");
    let tip = repo.head("main");
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("gate.pid");
    let integrate = repo
        .mpw_process()
        .args(["-q", "integrate", "--grace", "2", "--gate"])
        .arg(format!("echo $$ > {}; sleep 120", pid_file.display()))
        .current_dir(&repo.path)
        .env("XDG_STATE_HOME", repo.state_home())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let gate = read_pid(&pid_file);
    unsafe { libc::kill(integrate.id() as i32, libc::SIGINT) };
    let out = integrate.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("interrupted"),
        "{}",
        stderr_of(&out)
    );
    // The gate's process tree is gone, and with it its scratch worktree.
    wait_until("the gate to end", Duration::from_secs(10), || !alive(gate));
    assert!(!repo.git(&["worktree", "list"]).contains("_gate"));
    // Nothing moved, nothing recorded as merged or failed.
    assert_eq!(repo.head("main"), tip);
    assert_eq!(ws(&repo.run_status("G"), "A")["state"], "COMPLETED");
    let events = std::fs::read_to_string(repo.mpw_dir().join("runs/G/events.jsonl")).unwrap();
    assert!(events.contains("INTEGRATION_CANCELLED"), "{events}");
    // And the next integration lands.
    let out = repo.mpw().arg("integrate").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert_eq!(ws(&repo.run_status("G"), "A")["state"], "INTEGRATED");
}

/// A task that writes a file and then prints a megabyte; `setup` runs first.
fn loud_plan(repo: &TestRepo, run: &str, setup: &str) -> std::path::PathBuf {
    repo.plan(
        run,
        &format!(
            r#"{{ "run_id": "{run}", "workstreams": [ {{ "id": "A", "setup": [{setup}], "tasks": [
                {{ "id": "T", "run": "echo kept > x.txt; head -c 1000000 /dev/zero | tr '\\0' y" }} ] }} ] }}"#
        ),
    )
}

/// The attempt failed naming the log, `mpw status` says so, and what the
/// task wrote is kept as for any failure.
fn assert_failed_on_the_log(repo: &TestRepo, run: &str, out: &std::process::Output) {
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(out));
    let st = status(repo, run);
    assert_eq!(task_state(&st, "A", "T"), "FAILED");
    let reason = task(&st, "A", "T")["reason"].as_str().unwrap().to_string();
    assert!(
        reason.starts_with("could not write log ") && reason.contains("T.1.out: "),
        "{reason}"
    );
    let shown = repo.mpw().args(["status", run]).output().unwrap();
    assert!(
        stdout_of(&shown).contains("could not write log"),
        "{}",
        stdout_of(&shown)
    );
    assert_eq!(
        repo.git(&["show", &format!("refs/mpw/{run}/failed/A/T:x.txt")]),
        "kept"
    );
}

#[test]
fn a_log_that_cannot_be_written_fails_the_attempt() {
    let repo = repo().commit("init");
    let plan = loud_plan(&repo, "LW", "");
    let out = repo
        .mpw()
        .arg("run")
        .arg(&plan)
        .env("MPW_FAULT", "log-write")
        .output()
        .unwrap();
    assert_failed_on_the_log(&repo, "LW", &out);
}

#[test]
fn a_full_disk_under_the_logs_fails_the_attempt() {
    let probe = tempfile::tempdir().unwrap();
    let mount = |dir: &Path| {
        Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
            .arg(dir)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if unsafe { libc::geteuid() } != 0 || !mount(probe.path()) {
        eprintln!("skipped: needs root and permission to mount a small tmpfs");
        return;
    }
    Command::new("umount").arg(probe.path()).status().unwrap();
    let repo = repo().commit("init");
    // The workstream's setup puts a 64 KiB disk under its logs, once the
    // run's directory exists; the task's log is then made on it.
    let logs = repo.mpw_dir().join("runs/LD/logs/A");
    let setup = format!(r#""mount -t tmpfs -o size=64k tmpfs {}""#, logs.display());
    let plan = loud_plan(&repo, "LD", &setup);
    let out = repo.mpw().arg("run").arg(&plan).output().unwrap();
    let _ = Command::new("umount").arg(&logs).status();
    assert_failed_on_the_log(&repo, "LD", &out);
    let reason = task(&status(&repo, "LD"), "A", "T")["reason"].to_string();
    assert!(reason.contains("No space left on device"), "{reason}");
}

/// The kinds of a run's events, from the database (the record) and from
/// `events.jsonl`, each in its order.
fn event_kinds(repo: &TestRepo, run: &str) -> (Vec<String>, Vec<String>) {
    let db = rusqlite::Connection::open(repo.mpw_dir().join("mpw.db")).unwrap();
    let mut st = db
        .prepare("SELECT kind FROM events WHERE run_id = ?1 ORDER BY seq")
        .unwrap();
    let table: Vec<String> = st
        .query_map([run], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let text =
        std::fs::read_to_string(repo.mpw_dir().join(format!("runs/{run}/events.jsonl"))).unwrap();
    (table, kinds_of(&text))
}

#[test]
fn a_kill_between_an_events_commit_and_its_line_is_caught_up_by_resume() {
    let repo = killed_run("EV", "none", "kill-before-event-line:TASK_SUCCEEDED");
    let (table, lines) = event_kinds(&repo, "EV");
    // The lines of the last commit (a task's end and what it started) are
    // missing; the file never runs ahead of the table.
    assert!(
        table.len() > lines.len(),
        "the last commit's lines are missing"
    );
    assert_eq!(
        lines,
        table[..lines.len()],
        "the lines written are the table's first"
    );
    assert!(table[lines.len()..].contains(&"TASK_SUCCEEDED".to_string()));
    resume_ok(&repo, "EV");
    let (table, lines) = event_kinds(&repo, "EV");
    assert_eq!(lines, table, "every event once, in the table's order");
    let succeeded = lines.iter().filter(|k| *k == "TASK_SUCCEEDED").count();
    assert_eq!(succeeded, 6);
}

#[test]
fn a_big_copy_in_one_workstream_does_not_delay_anothers_timeout() {
    let repo = repo().commit("init");
    // 200 MB of files the plan copies into each new worktree.
    let big = repo.path.join("big");
    std::fs::create_dir_all(&big).unwrap();
    let chunk = vec![7u8; 10 << 20];
    for i in 0..20 {
        std::fs::write(big.join(format!("f{i}")), &chunk).unwrap();
    }
    std::fs::write(repo.path.join(".git/info/exclude"), "big/\n").unwrap();
    let plan = repo.plan(
        "bc",
        r#"{ "run_id": "BC", "globals": { "copy": ["big"] }, "workstreams": [
            { "id": "A", "tasks": [ { "id": "T", "run": "true" } ] },
            { "id": "B", "tasks": [ { "id": "T", "timeout_s": 1, "run": "sleep 30" } ] } ] }"#,
    );
    let out = repo.mpw().arg("run").arg(&plan).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let st = status(&repo, "BC");
    assert_eq!(task_state(&st, "A", "T"), "SUCCEEDED");
    let b = task(&st, "B", "T");
    assert!(b["reason"].as_str().unwrap().contains("timed out"), "{b}");
    // The bound the issue sets: the 1 s timeout fires within 1.5 s.
    let ms = b["duration_ms"].as_i64().unwrap();
    assert!(ms <= 1500, "B's 1 s timeout took {ms} ms");
}

#[test]
fn a_gate_left_by_a_killed_integration_is_ended_by_the_next_one() {
    let repo = finished_run("GK");
    let pid_file = repo.dir.path().join("gate.pid");
    let mut integrate = repo
        .mpw_process()
        .args(["-q", "integrate", "--gate"])
        .arg(format!("echo $$ > {}; sleep 120", pid_file.display()))
        .current_dir(&repo.path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let gate = read_pid(&pid_file);
    let noted = repo.mpw_dir().join("runs/GK/logs/_integrate/A.1.proc");
    wait_until("the gate's .proc", Duration::from_secs(30), || {
        noted.exists()
    });
    unsafe { libc::kill(integrate.id() as i32, libc::SIGKILL) };
    integrate.wait().unwrap();
    assert!(alive(gate), "the killed integration's gate runs on");
    assert!(repo.git(&["worktree", "list"]).contains("_gate"));
    let out = repo.mpw().arg("integrate").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    wait_until("the stale gate to end", Duration::from_secs(30), || {
        !alive(gate)
    });
    assert!(!repo.git(&["worktree", "list"]).contains("_gate"));
    assert_eq!(ws(&repo.run_status("GK"), "A")["state"], "INTEGRATED");
}

#[test]
fn a_gate_whose_integration_was_killed_before_recording_it_is_ended_by_the_next() {
    let repo = finished_run("GP");
    // Slow only the first time: the next integration's gate passes at once.
    let pid_file = repo.dir.path().join("gate.pid");
    let gate = format!(
        "if [ ! -f {p} ]; then echo $$ > {p}; sleep 120; fi",
        p = pid_file.display()
    );
    let out = repo
        .mpw()
        .args(["integrate", "--gate", &gate])
        .env("MPW_FAULT", "kill-before-proc:A.1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), None, "killed before recording the gate");
    let pid = read_pid(&pid_file);
    assert!(alive(pid), "the gate runs on");
    let out = repo
        .mpw()
        .args(["integrate", "--gate", &gate])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    wait_until("the stale gate to end", Duration::from_secs(30), || {
        !alive(pid)
    });
    assert_eq!(ws(&repo.run_status("GP"), "A")["state"], "INTEGRATED");
    assert_worktrees_clean(&repo);
}
