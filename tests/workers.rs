//! Warm workers end to end: real Python worker processes (mpw's adapter, and
//! a minimal raw-protocol worker written here), the real binary, real git.
//! Skipped, with a message, where `python3` is absent.
#![cfg(unix)]

mod common;

use common::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn have_python() -> bool {
    let ok = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("skipped: python3 is not installed");
    }
    ok
}

/// A repository with a Python package `pkg` whose `step` module writes
/// `out_<name>.txt` holding the worker's pid, and prints a line; not yet committed.
fn python_repo() -> RepoBuilder {
    repo().with_file("pkg/__init__.py", "").with_file(
        "pkg/step.py",
        "import os, sys\n\
             name = sys.argv[1]\n\
             open(f'out_{name}.txt', 'w').write(str(os.getpid()))\n\
             print('step', name, 'attempt', os.environ['MPW_ATTEMPT'])\n",
    )
}

/// The pid a task wrote into `out_<name>.txt` on its branch.
fn pid_in(repo: &TestRepo, rev: &str, name: &str) -> String {
    repo.git(&["show", &format!("{rev}:out_{name}.txt")])
}

fn wait_for(what: &str, f: impl FnMut() -> bool) {
    wait_until(what, Duration::from_secs(60), f)
}

#[test]
fn each_task_is_committed_and_few_workers_serve_many_tasks() {
    if !have_python() {
        return;
    }
    let repo = python_repo().commit("init");
    let chain = |ws: &str| {
        (1..=4)
            .map(|i| {
                let dep = if i > 1 { format!(r#", "depends_on": ["T{}"]"#, i - 1) } else { String::new() };
                format!(r#"{{ "id": "T{i}", "worker": "py", "args": ["-m", "pkg.step", "{ws}{i}"]{dep} }}"#)
            })
            .collect::<Vec<_>>()
            .join(",")
    };
    let plan = format!(
        r#"{{ "run_id": "W1", "globals": {{ "workers": {{ "py": {{ "adapter": "python", "max": 2 }} }} }},
            "workstreams": [ {{ "id": "A", "tasks": [{}] }}, {{ "id": "B", "tasks": [{}] }} ] }}"#,
        chain("a"),
        chain("b")
    );
    let (code, _, _, err) = run_plan(&repo, &plan, &[]);
    assert_eq!(code, 0, "{err}");
    let mut pids = std::collections::BTreeSet::new();
    for ws in ["A", "B"] {
        let branch = format!("mpw/W1/{ws}");
        let log = repo.git(&["log", "--format=%s", &format!("main..{branch}")]);
        assert_eq!(log.lines().count(), 4, "a commit per task: {log}");
        for i in 1..=4 {
            let name = format!("{}{i}", ws.to_lowercase());
            pids.insert(pid_in(&repo, &branch, &name));
        }
        let out =
            std::fs::read_to_string(repo.mpw_dir().join(format!("runs/W1/logs/{ws}/T4.1.out")))
                .unwrap();
        assert_eq!(out.trim(), format!("step {}4 attempt 1", ws.to_lowercase()));
    }
    assert!(
        pids.len() <= 2,
        "8 tasks ran in at most 2 worker processes: {pids:?}"
    );
    let evs = repo.events("W1");
    assert_eq!(of_kind(&evs, "WORKER_STARTED").len(), pids.len());
    assert_eq!(
        of_kind(&evs, "WORKER_EXITED").len(),
        pids.len(),
        "every worker ended with the run"
    );
    for pid in &pids {
        assert!(
            !alive(pid.parse().unwrap()),
            "worker {pid} outlived the run"
        );
    }
    // The adapter was written where the plan's repository keeps mpw's files.
    assert!(repo.mpw_dir().join("adapters/mpw_worker.py").exists());
}

#[test]
fn max_requests_recycles_workers() {
    if !have_python() {
        return;
    }
    let repo = python_repo().commit("init");
    let (code, _, _, err) = run_plan(
        &repo,
        r#"{ "run_id": "W8", "globals": { "workers": { "py": { "adapter": "python", "max": 1, "max_requests": 2 } } },
             "workstreams": [ { "id": "A", "tasks": [
               { "id": "T1", "worker": "py", "args": ["-m", "pkg.step", "1"] },
               { "id": "T2", "worker": "py", "args": ["-m", "pkg.step", "2"], "depends_on": ["T1"] },
               { "id": "T3", "worker": "py", "args": ["-m", "pkg.step", "3"], "depends_on": ["T2"] } ] } ] }"#,
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let b = "mpw/W8/A";
    assert_eq!(pid_in(&repo, b, "1"), pid_in(&repo, b, "2"));
    assert_ne!(pid_in(&repo, b, "2"), pid_in(&repo, b, "3"));
    let evs = repo.events("W8");
    let recycled = of_kind(&evs, "WORKER_RECYCLED");
    assert_eq!(recycled.len(), 1);
    assert_eq!(recycled[0]["requests"], 2);
    assert_eq!(recycled[0]["pid"].to_string(), pid_in(&repo, b, "1"));
}

#[test]
fn a_worker_that_exits_mid_request_fails_the_attempt_and_the_retry_gets_a_fresh_one() {
    if !have_python() {
        return;
    }
    let repo = python_repo()
        .with_file(
            "crash.py",
            "import os\n\
             if os.environ['MPW_ATTEMPT'] == '1':\n    os._exit(3)\n\
             open('out_crash.txt', 'w').write(str(os.getpid()))\n",
        )
        .commit("init");
    let (code, _, _, err) = run_plan(
        &repo,
        r#"{ "run_id": "W2", "globals": { "workers": { "py": { "adapter": "python", "max": 1 } } },
             "workstreams": [ { "id": "A", "tasks": [ { "id": "T1", "worker": "py", "args": ["crash.py"], "retries": 1 } ] } ] }"#,
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let st = repo.run_status("W2");
    assert_eq!(task(&st, "A", "T1")["state"], "SUCCEEDED");
    assert_eq!(task(&st, "A", "T1")["attempts"], 2);
    let evs = repo.events("W2");
    let retry = of_kind(&evs, "TASK_RETRY");
    assert_eq!(
        retry[0]["reason"],
        "worker py exited with code 3 during the request"
    );
    let exited = of_kind(&evs, "WORKER_EXITED");
    let crashed = exited[0]["pid"].to_string();
    assert_ne!(
        pid_in(&repo, "mpw/W2/A", "crash"),
        crashed,
        "the retry ran on a new worker"
    );
    assert_eq!(of_kind(&evs, "WORKER_STARTED").len(), 2);
}

#[test]
fn a_timed_out_request_that_ignores_cancel_kills_and_replaces_the_worker() {
    if !have_python() {
        return;
    }
    let repo = python_repo().with_file(
        "stubborn.py",
        "import os, time\n\
         open(os.environ['PIDFILE'], 'w').write(str(os.getpid()))\n\
         while True:\n    try:\n        time.sleep(60)\n    except KeyboardInterrupt:\n        pass\n",
    )
    .commit("init");
    let pidfile = repo.dir.path().join("stubborn.pid");
    let plan = format!(
        r#"{{ "run_id": "W3", "globals": {{ "workers": {{ "py": {{ "adapter": "python", "max": 1 }} }} }},
             "workstreams": [ {{ "id": "A", "tasks": [
               {{ "id": "T1", "worker": "py", "args": ["stubborn.py"], "timeout_s": 1, "allow_failure": true,
                  "env": {{ "PIDFILE": "{}" }} }},
               {{ "id": "T2", "worker": "py", "args": ["-m", "pkg.step", "after"] }} ] }} ] }}"#,
        pidfile.display()
    );
    let (code, _, _, err) = run_plan(&repo, &plan, &["--grace", "1"]);
    assert_eq!(code, 0, "{err}");
    let st = repo.run_status("W3");
    assert_eq!(task(&st, "A", "T1")["state"], "FAILED");
    assert!(
        task(&st, "A", "T1")["reason"]
            .as_str()
            .unwrap()
            .contains("timed out after 1s")
    );
    let stubborn: i32 = std::fs::read_to_string(&pidfile).unwrap().parse().unwrap();
    assert!(!alive(stubborn), "the stubborn worker was killed");
    let after = pid_in(&repo, "mpw/W3/A", "after");
    assert_ne!(
        after,
        stubborn.to_string(),
        "the next request got a fresh worker"
    );
    let evs = repo.events("W3");
    let exited = of_kind(&evs, "WORKER_EXITED");
    assert!(
        exited[0]["reason"]
            .as_str()
            .unwrap()
            .contains("did not stop"),
        "{exited:?}"
    );
}

#[test]
fn cancel_stops_the_request_and_no_worker_outlives_the_run() {
    if !have_python() {
        return;
    }
    let repo = python_repo()
        .with_file(
            "slow.py",
            "import os, time\n\
         open(os.environ['PIDFILE'], 'w').write(str(os.getpid()))\n\
         time.sleep(120)\n",
        )
        .commit("init");
    let pidfile = repo.dir.path().join("slow.pid");
    let plan = repo.plan(
        "p",
        &format!(
            r#"{{ "run_id": "W4", "globals": {{ "workers": {{ "py": {{ "adapter": "python" }} }} }},
                 "workstreams": [ {{ "id": "A", "tasks": [
                   {{ "id": "T1", "worker": "py", "args": ["slow.py"], "env": {{ "PIDFILE": "{}" }} }} ] }} ] }}"#,
            pidfile.display()
        ),
    );
    let child = repo.spawn_run(&plan, &[]);
    wait_for("the slow request to start", || pidfile.exists());
    let cancel = repo.mpw().args(["cancel", "W4"]).output().unwrap();
    assert!(cancel.status.success(), "{}", stderr_of(&cancel));
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr_of(&out));
    let st = repo.run_status("W4");
    assert_eq!(task(&st, "A", "T1")["state"], "CANCELLED");
    let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().parse().unwrap();
    assert!(!alive(pid), "worker {pid} outlived the run");
}

#[test]
fn kill_9_of_the_coordinator_mid_request_then_resume_runs_each_task_once() {
    if !have_python() {
        return;
    }
    let repo = python_repo()
        .with_file(
            "effect.py",
            "import os, sys, time\n\
         gate = os.environ['GATE']\n\
         if sys.argv[1] == 'slow' and os.environ['MPW_ATTEMPT'] == '1':\n\
         \x20   open(gate + '.pid', 'w').write(str(os.getpid()))\n\
         \x20   while os.path.exists(gate):\n        time.sleep(0.05)\n\
         with open(os.environ['EFFECTS'], 'a') as f:\n    f.write(sys.argv[1] + '\\n')\n\
         open('done_' + sys.argv[1], 'w').write('1')\n",
        )
        .commit("init");
    let gate = repo.dir.path().join("gate");
    let effects = repo.dir.path().join("effects.txt");
    std::fs::write(&gate, "").unwrap();
    let plan = repo.plan(
        "p",
        &format!(
            r#"{{ "run_id": "W5", "globals": {{ "env": {{ "GATE": "{}", "EFFECTS": "{}" }},
                   "workers": {{ "py": {{ "adapter": "python", "max": 1 }} }} }},
                 "workstreams": [ {{ "id": "A", "tasks": [
                   {{ "id": "T1", "worker": "py", "args": ["effect.py", "quick"] }},
                   {{ "id": "T2", "worker": "py", "args": ["effect.py", "slow"], "depends_on": ["T1"] }},
                   {{ "id": "T3", "worker": "py", "args": ["effect.py", "last"], "depends_on": ["T2"] }} ] }} ] }}"#,
            gate.display(),
            effects.display()
        ),
    );
    let mut child = repo.spawn_run(&plan, &[]);
    let pidfile = repo.dir.path().join("gate.pid");
    wait_for("the slow request to start", || pidfile.exists());
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    let worker: i32 = std::fs::read_to_string(&pidfile).unwrap().parse().unwrap();
    assert!(
        alive(worker),
        "a kill -9 leaves the worker running, as after a crash"
    );
    // The gate holds only the first attempt: the orphaned worker is still
    // in it when resume ends it, and the second attempt goes through.
    let out = repo.mpw().args(["resume", "W5"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert!(!alive(worker), "resume ended the dead coordinator's worker");
    let st = repo.run_status("W5");
    for t in ["T1", "T2", "T3"] {
        assert_eq!(task(&st, "A", t)["state"], "SUCCEEDED", "{t}");
    }
    // The worker killed mid-request had not written its effect: once each.
    let ran = std::fs::read_to_string(&effects).unwrap();
    assert_eq!(ran.lines().collect::<Vec<_>>(), ["quick", "slow", "last"]);
    let log = repo.git(&["log", "--format=%s", "main..mpw/W5/A"]);
    assert_eq!(log.lines().count(), 3, "{log}");
    let evs = repo.events("W5");
    assert_eq!(of_kind(&evs, "TASK_INTERRUPTED").len(), 1);
}

/// A raw-protocol worker: answers every request, except that a request
/// whose first argument is `garbage` gets a line that is not JSON on its
/// first attempt.
const RAW_WORKER: &str = r#"
import json, os, sys
for line in sys.stdin:
    req = json.loads(line)
    args = req.get("arguments", [])
    env = (req.get("mpw") or {}).get("env", {})
    if args and args[0] == "garbage" and env.get("MPW_ATTEMPT") == "1":
        print("this is not a response", flush=True)
        continue
    if args:
        with open(os.path.join(req["sandboxDir"], "out_raw.txt"), "w") as f:
            f.write(str(os.getpid()))
    print(json.dumps({"requestId": req.get("requestId", 0), "exitCode": 0, "output": "raw ok\n"}), flush=True)
"#;

#[test]
fn a_line_that_is_not_a_response_fails_the_attempt_quoting_it_and_restarts_the_worker() {
    if !have_python() {
        return;
    }
    let repo = python_repo().commit("init");
    let worker = repo.dir.path().join("raw_worker.py");
    std::fs::write(&worker, RAW_WORKER).unwrap();
    let plan = format!(
        r#"{{ "run_id": "W6", "globals": {{ "workers": {{ "raw": {{ "argv": ["python3", "{}"] }} }} }},
             "workstreams": [ {{ "id": "A", "tasks": [
               {{ "id": "T1", "worker": "raw", "args": ["garbage"], "retries": 1,
                  "guardrails": {{ "require": ["raw ok"] }} }} ] }} ] }}"#,
        worker.display()
    );
    let (code, _, _, err) = run_plan(&repo, &plan, &[]);
    assert_eq!(code, 0, "{err}");
    let evs = repo.events("W6");
    let retry = of_kind(&evs, "TASK_RETRY");
    assert_eq!(
        retry[0]["reason"],
        "worker raw wrote a line that is not a protocol response: `this is not a response`"
    );
    let exited = of_kind(&evs, "WORKER_EXITED");
    assert_ne!(
        pid_in(&repo, "mpw/W6/A", "raw"),
        exited[0]["pid"].to_string()
    );
    assert_eq!(of_kind(&evs, "WORKER_STARTED").len(), 2);
}

#[test]
fn a_worker_that_never_starts_gets_a_clear_error() {
    if !have_python() {
        return;
    }
    let repo = python_repo().commit("init");
    let (code, ..) = run_plan(
        &repo,
        r#"{ "run_id": "W7", "globals": { "workers": {
               "mute": { "argv": ["python3", "-c", "import time; time.sleep(60)"], "startup_timeout_s": 1 },
               "none": { "argv": ["no-such-program-mpw"] } } },
             "workstreams": [ { "id": "A", "tasks": [ { "id": "T1", "worker": "mute", "args": ["x"] } ] },
                              { "id": "B", "tasks": [ { "id": "T1", "worker": "none", "args": ["x"] } ] } ] }"#,
        &["--grace", "1"],
    );
    assert_eq!(code, 1);
    let st = repo.run_status("W7");
    let mute = task(&st, "A", "T1")["reason"].as_str().unwrap().to_string();
    assert!(
        mute.starts_with("worker mute did not start within 1s"),
        "{mute}"
    );
    let none = task(&st, "B", "T1")["reason"].as_str().unwrap().to_string();
    assert!(
        none.starts_with("could not start worker none (`no-such-program-mpw`)"),
        "{none}"
    );
}

#[test]
fn worker_plan_errors_name_file_line_and_column() {
    let repo = repo().with_file("a", "a").commit("init");
    let plan = repo.plan(
        "bad",
        r#"{ "globals": { "workers": { "py": { "adapter": "python", "max": 0 } } },
  "workstreams": [ { "id": "A", "tasks": [
    { "id": "T1", "worker": "nope", "args": [] },
    { "id": "T2", "worker": "py", "run": "true" },
    { "id": "T3", "run": "true", "args": ["x"] } ] } ] }"#,
    );
    let out = repo.plan_check(&plan);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr_of(&out) + &stdout_of(&out);
    let file = plan.display().to_string();
    for expected in [
        format!("{file}:1:65: error: max of worker `py` must be at least 1"),
        format!("{file}:3:29: error: task `A/T1` names unknown worker `nope` (known: py)"),
        format!("{file}:4:29: error: task `A/T2` has both `worker` and `run`"),
        format!("{file}:5:42: error: task `A/T3` has `args` without `worker`"),
    ] {
        assert!(err.contains(&expected), "no `{expected}` in:\n{err}");
    }
}

#[test]
fn the_adapter_is_printed_as_carried() {
    let out = mpw().args(["adapter", "python"]).output().unwrap();
    assert!(out.status.success());
    let carried = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("adapters/python/mpw_worker.py"),
    )
    .unwrap();
    assert_eq!(stdout_of(&out), carried);
}
