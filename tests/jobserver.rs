//! mpw as a jobserver for its cpu-class tasks, with real GNU make: the jobs
//! of every task's make count against `cpu_slots`; the machine pool shares
//! one budget between mpw processes.
#![cfg(unix)]

mod common;

use common::{TestRepo, assert_ok, repo};
use std::path::{Path, PathBuf};

/// A Makefile of `n` jobs, each logging its start and end (seconds since the
/// epoch) to `$(LOG)`, with `secs` of work between.
fn makefile(repo: &TestRepo, n: usize, secs: &str) -> PathBuf {
    let jobs: Vec<String> = (1..=n).map(|i| format!("j{i}")).collect();
    let text = format!(
        "all: {all}\n.PHONY: all {all}\n{all}:\n\t@echo \"$$(date +%s.%N) start $@\" >> $(LOG); sleep {secs}; echo \"$$(date +%s.%N) end $@\" >> $(LOG)\n",
        all = jobs.join(" ")
    );
    let p = repo.dir.path().join(format!("jobs-{n}-{secs}.mk"));
    std::fs::write(&p, text).unwrap();
    p
}

/// Where the jobs of a test log, outside the repository.
fn log_dir(repo: &TestRepo) -> PathBuf {
    let d = repo.dir.path().join("joblog");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The most jobs that ran at once, from every log in `dir`.
fn peak_overlap(dir: &Path) -> usize {
    let logs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    peak_of(&logs)
}

/// The most jobs of one log (one task's make) that ran at once, over all logs.
fn peak_in_one_task(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| peak_of(&[e.unwrap().path()]))
        .max()
        .unwrap_or(0)
}

fn peak_of(logs: &[PathBuf]) -> usize {
    let mut edges: Vec<(f64, i32)> = Vec::new();
    for log in logs {
        let text = std::fs::read_to_string(log).unwrap();
        for line in text.lines() {
            let mut parts = line.split_whitespace();
            let t: f64 = parts.next().unwrap().parse().unwrap();
            let d = if parts.next() == Some("start") { 1 } else { -1 };
            edges.push((t, d));
        }
    }
    // At equal times an end comes before a start.
    edges.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let (mut now, mut peak) = (0i32, 0i32);
    for (_, d) in edges {
        now += d;
        peak = peak.max(now);
    }
    peak as usize
}

/// Jobs that logged an end, in every log of `dir`.
fn ended(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .map(|t| t.lines().filter(|l| l.contains(" end ")).count())
        .sum()
}

/// Three workstreams, one cpu task each running `command` with `{log}`
/// replaced by its own log file; `extra` goes into each task.
fn three_makes(repo: &TestRepo, cpu_slots: usize, command: &str, extra: &str) -> PathBuf {
    let logs = log_dir(repo);
    let ws: Vec<String> = ["A", "B", "C"]
        .iter()
        .map(|w| {
            let cmd = command.replace("{log}", &logs.join(format!("{w}.log")).display().to_string());
            format!(
                r#"{{ "id": "{w}", "tasks": [ {{ "id": "build", "class": "cpu", "run": "{cmd}"{extra} }} ] }}"#
            )
        })
        .collect();
    repo.plan(
        "three",
        &format!(
            r#"{{ "globals": {{ "cpu_slots": {cpu_slots}, "max_concurrency": 3 }}, "workstreams": [ {} ] }}"#,
            ws.join(", ")
        ),
    )
}

/// Three plain `make`s of 8 half-second jobs each, 4 cpu slots.
fn plain_makes(repo: &TestRepo) -> PathBuf {
    let mk = makefile(repo, 8, "0.5");
    three_makes(
        repo,
        4,
        &format!("make -s -f {} LOG={{log}}", mk.display()),
        "",
    )
}

fn run(repo: &TestRepo, plan: &Path, machine_slots: &str) -> std::process::Output {
    repo.mpw()
        .args(["-q", "run", "--grace", "1"])
        .arg(plan)
        .env("MPW_MACHINE_SLOTS", machine_slots)
        .output()
        .unwrap()
}

#[test]
fn three_plain_makes_share_four_cpu_slots() {
    let repo = repo().with_file("README.md", "x\n").commit("init");
    let plan = plain_makes(&repo);
    let out = run(&repo, &plan, "0");
    assert_ok(&out);
    let logs = log_dir(&repo);
    assert_eq!(ended(&logs), 24, "every job ran");
    let peak = peak_overlap(&logs);
    assert!(peak <= 4, "{peak} jobs at once with cpu_slots 4");
    assert!(peak >= 3, "only {peak} jobs at once: the pool was not used");
    // Plain make runs one job at a time unless it was given the jobserver.
    assert!(
        peak_in_one_task(&logs) >= 2,
        "no make ran two jobs: no jobserver"
    );
}

#[test]
fn without_the_jobserver_make_j8_oversubscribes() {
    let repo = repo().with_file("README.md", "x\n").commit("init");
    let mk = makefile(&repo, 8, "0.5");
    let plan = three_makes(
        &repo,
        4,
        &format!("make -s -j8 -f {} LOG={{log}}", mk.display()),
        r#", "jobserver": false"#,
    );
    let out = run(&repo, &plan, "0");
    assert_ok(&out);
    let peak = peak_overlap(&log_dir(&repo));
    assert!(peak > 4, "only {peak} jobs at once without the jobserver");
}

#[test]
fn opting_out_leaves_the_task_without_the_jobserver() {
    let repo = repo().with_file("README.md", "x\n").commit("init");
    let logs = log_dir(&repo);
    let show = |name: &str| {
        format!(
            "echo \\\"MAKEFLAGS=$MAKEFLAGS\\\" > {}",
            logs.join(name).display()
        )
    };
    // Off for the run, on again for one task; io tasks never get it.
    let plan = repo.plan(
        "optout",
        &format!(
            r#"{{ "globals": {{ "cpu_slots": 2, "jobserver": false }}, "workstreams": [
                {{ "id": "A", "tasks": [
                    {{ "id": "off", "class": "cpu", "run": "{off}" }},
                    {{ "id": "on", "class": "cpu", "jobserver": true, "run": "{on}", "depends_on": ["off"] }},
                    {{ "id": "io", "run": "{io}", "depends_on": ["on"] }} ] }} ] }}"#,
            off = show("off"),
            on = show("on"),
            io = show("io"),
        ),
    );
    let out = run(&repo, &plan, "0");
    assert_ok(&out);
    let read = |n: &str| std::fs::read_to_string(logs.join(n)).unwrap();
    assert!(read("on").contains("--jobserver-auth="), "{}", read("on"));
    assert!(!read("off").contains("jobserver"), "{}", read("off"));
    assert!(!read("io").contains("jobserver"), "{}", read("io"));
}

#[test]
fn tokens_a_killed_make_held_come_back() {
    let repo = repo().with_file("README.md", "x\n").commit("init");
    // The hog's jobs ignore TERM: mpw's KILL after the grace takes make down
    // before it can give its tokens back.
    let hog = repo.dir.path().join("hog.mk");
    std::fs::write(
        &hog,
        "all: h1 h2 h3 h4\n.PHONY: all h1 h2 h3 h4\nh1 h2 h3 h4:\n\t@trap '' TERM; sleep 60\n",
    )
    .unwrap();
    let mk = makefile(&repo, 8, "0.5");
    let logs = log_dir(&repo);
    let build = |w: &str| {
        format!(
            r#"{{ "id": "{w}", "tasks": [ {{ "id": "build", "class": "cpu", "depends_on": ["H/hog"], "run": "make -s -f {} LOG={}" }} ] }}"#,
            mk.display(),
            logs.join(format!("{w}.log")).display()
        )
    };
    let plan = repo.plan(
        "killed",
        &format!(
            r#"{{ "globals": {{ "cpu_slots": 4, "max_concurrency": 3 }}, "workstreams": [
                {{ "id": "H", "tasks": [ {{ "id": "hog", "class": "cpu", "allow_failure": true, "timeout_s": 2,
                   "run": "make -s -f {hog}" }} ] }},
                {a}, {b}, {c} ] }}"#,
            hog = hog.display(),
            a = build("A"),
            b = build("B"),
            c = build("C"),
        ),
    );
    let out = run(&repo, &plan, "0");
    let st = repo.run_status(&run_id(&repo));
    let hog_task = common::task(&st, "H", "hog");
    assert_eq!(hog_task["state"], "FAILED", "{hog_task}");
    assert!(
        hog_task["reason"]
            .as_str()
            .unwrap_or("")
            .contains("timed out"),
        "{hog_task}"
    );
    assert_eq!(
        ended(&logs),
        24,
        "every job after the hog ran: {:?}",
        common::stderr_of(&out)
    );
    let peak = peak_overlap(&logs);
    assert!(peak <= 4, "{peak} jobs at once with cpu_slots 4");
    assert!(
        peak >= 3,
        "only {peak} jobs at once: the hog's tokens did not come back"
    );
}

/// The id of the repository's only run.
fn run_id(repo: &TestRepo) -> String {
    let runs = repo.mpw_dir().join("runs");
    let mut ids: Vec<String> = std::fs::read_dir(runs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    ids.pop().unwrap()
}

#[test]
fn under_make_j3_mpw_takes_its_slots_from_make() {
    let repo = repo().with_file("README.md", "x\n").commit("init");
    let plan = plain_makes(&repo);
    // `+`: make passes its jobserver to the recipe.
    let outer = repo.dir.path().join("outer.mk");
    std::fs::write(
        &outer,
        format!(
            "all:\n\t+{} -q run {}\n",
            assert_cmd::cargo::cargo_bin("mpw").display(),
            plan.display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new("make")
        .args(["-s", "-j3", "-f"])
        .arg(&outer)
        .current_dir(&repo.path)
        .env("XDG_STATE_HOME", repo.state_home())
        .env("MPW_MACHINE_SLOTS", "0")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert_ok(&out);
    let logs = log_dir(&repo);
    assert_eq!(ended(&logs), 24, "every job ran");
    let peak = peak_overlap(&logs);
    assert!(
        peak <= 3,
        "{peak} jobs at once under make -j3 (cpu_slots 4)"
    );
    assert!(peak >= 2, "only {peak} jobs at once under make -j3");
}

#[test]
fn two_runs_share_the_machine_pool_and_mpw_slots_names_the_holders() {
    let a = repo().with_file("README.md", "x\n").commit("init");
    let b = repo().with_file("README.md", "y\n").commit("init");
    let mk = makefile(&a, 8, "0.5");
    let logs = log_dir(&a);
    let plan_of = |repo: &TestRepo, tag: &str| {
        let cmd = format!(
            "make -s -f {} LOG={}/{tag}-{{log}}",
            mk.display(),
            logs.display()
        );
        let ws: Vec<String> = ["A", "B", "C"]
            .iter()
            .map(|w| {
                format!(
                    r#"{{ "id": "{w}", "tasks": [ {{ "id": "build", "class": "cpu", "run": "{}" }} ] }}"#,
                    cmd.replace("{log}", &format!("{w}.log"))
                )
            })
            .collect();
        repo.plan(
            tag,
            &format!(
                r#"{{ "run_id": "RUN-{tag}", "globals": {{ "cpu_slots": 4, "max_concurrency": 3 }}, "workstreams": [ {} ] }}"#,
                ws.join(", ")
            ),
        )
    };
    let (pa, pb) = (plan_of(&a, "a"), plan_of(&b, "b"));
    // One machine: both runs use the same state directory.
    let state = a.state_home();
    let spawn = |repo: &TestRepo, plan: &Path| {
        repo.mpw_process()
            .args(["run", "--grace", "1"])
            .arg(plan)
            .env("XDG_STATE_HOME", &state)
            .env("MPW_MACHINE_SLOTS", "4")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (ra, rb) = (spawn(&a, &pa), spawn(&b, &pb));
    // While they run: `mpw slots` names a holder's pid, run and task.
    let mut seen = serde_json::Value::Null;
    common::wait_until(
        "mpw slots to show a task",
        std::time::Duration::from_secs(60),
        || {
            let out = common::mpw()
                .args(["slots", "--json"])
                .env("XDG_STATE_HOME", &state)
                .env("MPW_MACHINE_SLOTS", "4")
                .output()
                .unwrap();
            seen = serde_json::from_slice(&out.stdout).unwrap();
            seen["held"]
                .as_array()
                .unwrap()
                .iter()
                .any(|h| h["task"].is_string())
        },
    );
    let holder = seen["held"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["task"].is_string())
        .unwrap()
        .clone();
    assert_eq!(seen["size"], 4, "{seen}");
    let pids = [ra.id(), rb.id()];
    assert!(
        pids.contains(&(holder["pid"].as_u64().unwrap() as u32)),
        "{seen}"
    );
    assert!(
        ["RUN-a", "RUN-b"].contains(&holder["run"].as_str().unwrap()),
        "{seen}"
    );
    assert!(
        holder["task"].as_str().unwrap().ends_with("/build"),
        "{seen}"
    );

    let (oa, ob) = (
        ra.wait_with_output().unwrap(),
        rb.wait_with_output().unwrap(),
    );
    assert_ok(&oa);
    assert_ok(&ob);
    assert_eq!(ended(&logs), 48, "every job of both runs ran");
    let peak = peak_overlap(&logs);
    assert!(
        peak <= 4,
        "{peak} jobs at once across two runs with 4 machine slots"
    );
    assert!(peak >= 3, "only {peak} jobs at once");
    // The run that waited said why, not as running.
    let said = format!("{}{}", common::stderr_of(&oa), common::stderr_of(&ob));
    assert!(
        said.contains("TASK_WAITING: waiting for a slot: ") && said.contains("/4 held by run RUN-"),
        "{said}"
    );
    // All given back when the runs end.
    let out = common::mpw()
        .args(["slots", "--json"])
        .env("XDG_STATE_HOME", &state)
        .env("MPW_MACHINE_SLOTS", "4")
        .output()
        .unwrap();
    let after: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(after["held"], serde_json::json!([]), "{after}");
}

/// A repository holding a workspace of 8 crates without dependencies, and a
/// rustc wrapper that logs each crate's compile (start, end) to `$JOBLOG`
/// and makes it last at least half a second.
fn cargo_repo() -> (TestRepo, PathBuf) {
    let mut b = repo()
        .with_file(".gitignore", "target/\n")
        .with_file(
            "Cargo.toml",
            "[workspace]\nresolver = \"2\"\nmembers = [\"c1\", \"c2\", \"c3\", \"c4\", \"c5\", \"c6\", \"c7\", \"c8\"]\n",
        );
    for i in 1..=8 {
        b = b
            .with_file(
                &format!("c{i}/Cargo.toml"),
                format!("[package]\nname = \"c{i}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n"),
            )
            .with_file(
                &format!("c{i}/src/lib.rs"),
                format!("pub fn f{i}() -> u32 {{ {i} }}\n"),
            );
    }
    let repo = b.commit("init");
    let wrapper = repo.dir.path().join("rustc-wrapper.sh");
    std::fs::write(
        &wrapper,
        "#!/bin/sh\n# $1 is rustc. Probes (no --crate-name, or ___) are not jobs.\ncase \" $* \" in *\" --crate-name c\"*) ;; *) exec \"$@\" ;; esac\necho \"$(date +%s.%N) start rustc\" >> \"$JOBLOG\"\n\"$@\"; rc=$?\nsleep 0.5\necho \"$(date +%s.%N) end rustc\" >> \"$JOBLOG\"\nexit $rc\n",
    )
    .unwrap();
    let mut perms = std::fs::metadata(&wrapper).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&wrapper, perms).unwrap();
    (repo, wrapper)
}

/// Three workstreams each building the workspace with `cargo build -j8`
/// (`jobserver` set on the tasks or not); the peak of crates compiled at once.
fn three_cargo_builds(jobserver: bool) -> usize {
    let (repo, wrapper) = cargo_repo();
    let logs = log_dir(&repo);
    let ws: Vec<String> = ["A", "B", "C"]
        .iter()
        .map(|w| {
            format!(
                r#"{{ "id": "{w}", "tasks": [ {{ "id": "build", "class": "cpu", "run": "cargo build --offline -j8",
                   "jobserver": {jobserver}, "env": {{ "RUSTC_WRAPPER": "{}", "JOBLOG": "{}" }} }} ] }}"#,
                wrapper.display(),
                logs.join(format!("{w}.log")).display()
            )
        })
        .collect();
    let plan = repo.plan(
        "cargo",
        &format!(
            r#"{{ "globals": {{ "cpu_slots": 4, "max_concurrency": 3 }}, "workstreams": [ {} ] }}"#,
            ws.join(", ")
        ),
    );
    let out = repo
        .mpw()
        .args(["-q", "run"])
        .arg(&plan)
        .env("MPW_MACHINE_SLOTS", "0")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET_DIR")
        .env_remove("CARGO_BUILD_JOBS")
        .output()
        .unwrap();
    assert_ok(&out);
    let said = repo
        .mpw()
        .args(["logs", &run_id(&repo), "A/build", "--stderr"])
        .output()
        .unwrap();
    assert_eq!(
        ended(&logs),
        24,
        "every crate was compiled; A/build said: {}",
        common::stdout_of(&said)
    );
    peak_overlap(&logs)
}

#[test]
fn three_cargo_builds_with_j8_share_four_cpu_slots() {
    // cargo takes an inherited jobserver over its own, -j8 or not.
    let peak = three_cargo_builds(true);
    assert!(peak <= 4, "{peak} crates compiled at once with cpu_slots 4");
    assert!(peak >= 3, "only {peak} crates compiled at once");
}

#[test]
fn without_the_jobserver_cargo_j8_oversubscribes() {
    let peak = three_cargo_builds(false);
    assert!(
        peak > 4,
        "only {peak} crates compiled at once without the jobserver"
    );
}

#[test]
fn an_integration_gate_waits_for_the_machine_slot_a_run_holds() {
    let repo = repo().with_file("README.md", "x\n").commit("init");
    let log = repo.dir.path().join("order.log");
    let done = repo.plan(
        "done",
        r#"{ "run_id": "DONE", "workstreams": [ { "id": "W", "tasks": [ { "id": "T", "run": "echo w > w.txt" } ] } ] }"#,
    );
    let out = run(&repo, &done, "1");
    assert_ok(&out);
    // A second run holds the only machine slot for a while.
    let busy = repo.plan(
        "busy",
        &format!(
            r#"{{ "run_id": "BUSY", "workstreams": [ {{ "id": "B", "tasks": [ {{ "id": "hold", "class": "cpu",
                "run": "echo task-start >> {log}; sleep 2; echo task-end >> {log}" }} ] }} ] }}"#,
            log = log.display()
        ),
    );
    let mut busy_run = repo
        .mpw_process()
        .args(["-q", "run"])
        .arg(&busy)
        .env("MPW_MACHINE_SLOTS", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    common::wait_until(
        "the busy task to start",
        std::time::Duration::from_secs(60),
        || std::fs::read_to_string(&log).is_ok_and(|t| t.contains("task-start")),
    );
    let gate = format!("echo gate >> {}", log.display());
    let out = repo
        .mpw()
        .args(["-q", "integrate", "DONE", "--gate", &gate])
        .env("MPW_MACHINE_SLOTS", "1")
        .output()
        .unwrap();
    assert_ok(&out);
    assert!(busy_run.wait().unwrap().success());
    let order = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        order, "task-start\ntask-end\ngate\n",
        "the gate ran while the run held the slot"
    );
}

#[test]
fn a_bad_machine_slots_setting_is_named_and_nothing_runs() {
    let repo = repo().with_file("README.md", "x\n").commit("init");
    let plan = repo.plan(
        "one",
        r#"{ "workstreams": [ { "id": "W", "tasks": [ { "id": "T", "class": "cpu", "run": "echo x > x.txt" } ] } ] }"#,
    );
    let out = run(&repo, &plan, "four");
    assert_eq!(out.status.code(), Some(3), "{}", common::stderr_of(&out));
    let err = common::stderr_of(&out);
    assert!(
        err.contains("MPW_MACHINE_SLOTS must be a number of slots (0 = off), found `four`"),
        "{err}"
    );
    assert!(!repo.mpw_dir().join("runs").exists(), "a run was recorded");
    let out = repo
        .mpw()
        .args(["slots"])
        .env("MPW_MACHINE_SLOTS", "four")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    // The user's config file, when the variable is not set.
    let config = repo.dir.path().join("config");
    std::fs::create_dir_all(config.join("mpw")).unwrap();
    std::fs::write(config.join("mpw/config.json"), r#"{ "machine_slots": 3 }"#).unwrap();
    let out = repo
        .mpw()
        .args(["slots", "--json"])
        .env_remove("MPW_MACHINE_SLOTS")
        .env("XDG_CONFIG_HOME", &config)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["size"], 3, "{v}");
}
