//! `mpw mcp` driven by a real MCP client: the official Python SDK runs
//! `tests/mcp_client.py`, which talks to the server over stdio and prints
//! what each step answered; the assertions are here.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// A Python with the `mcp` package (`pip install mcp`), or None.
fn python_with_mcp() -> Option<String> {
    let candidates = std::env::var("MPW_TEST_PYTHON")
        .into_iter()
        .chain(["python3".to_string(), "python".to_string()]);
    for py in candidates {
        let ok = Command::new(&py)
            .args(["-c", "import mcp.client.stdio"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Some(py);
        }
    }
    None
}

const GOOD_PLAN: &str = r#"{
  "name": "mcp demo",
  "workstreams": [
    { "id": "A", "tasks": [ { "id": "T1", "run": "echo first && echo hello from A && echo a > a.txt" } ] },
    { "id": "B", "tasks": [ { "id": "T1", "run": "echo b > b.txt" } ] },
    { "id": "C", "tasks": [ { "id": "T1", "run": "echo c > a.txt" } ] }
  ]
}
"#;

const BAD_PLAN: &str = r#"{
  "workstreams": [
    { "id": "A", "tasks": [ { "id": "T1", "run": "true", "depends_on": ["NOPE"] } ] },
    { "id": "A", "tasks": [ { "id": "T1", "run": "true" } ] }
  ]
}
"#;

const SLOW_PLAN: &str =
    r#"{ "workstreams": [ { "id": "S", "tasks": [ { "id": "T1", "run": "sleep 60" } ] } ] }"#;

/// Still running when the client has gone.
const LATE_PLAN: &str = r#"{ "workstreams": [ { "id": "L", "tasks": [ { "id": "T1", "run": "sleep 2 && echo late > late.txt" } ] } ] }"#;

/// A repository with three plans committed under `plans/`, and a valid
/// plan beside the repository, outside it.
fn repo_with_plans() -> TestRepo {
    let repo = repo()
        .with_file("README.md", "demo\n")
        .with_file("plans/good.jsonc", GOOD_PLAN)
        .with_file("plans/bad.jsonc", BAD_PLAN)
        .with_file("plans/slow.jsonc", SLOW_PLAN)
        .with_file("plans/late.jsonc", LATE_PLAN)
        .commit("init");
    write_file(&repo.dir.path().join("outside.jsonc"), GOOD_PLAN.as_bytes());
    repo
}

/// Runs the client script against `mpw mcp` started in `repo`.
fn client_session(python: &str, repo: &TestRepo) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp_client.py");
    let out = Command::new(python)
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_mpw"))
        .arg(&repo.path)
        .env_remove("RUST_LOG")
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "the MCP client failed:\n{}",
        stderr_of(&out)
    );
    serde_json::from_str(&stdout_of(&out))
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", stdout_of(&out), stderr_of(&out)))
}

/// The CLI's error lines for the same request.
fn cli_error(repo: &TestRepo, args: &[&str]) -> String {
    let out = repo.mpw().args(args).output().unwrap();
    assert_ne!(out.status.code(), Some(0));
    stderr_of(&out).trim().to_string()
}

#[test]
fn an_mcp_client_checks_runs_watches_and_integrates_a_plan() {
    let Some(python) = python_with_mcp() else {
        eprintln!("skipped: no Python with the MCP SDK here (pip install mcp)");
        return;
    };
    let repo = repo_with_plans();
    let s = client_session(&python, &repo);

    // Every tool is listed with a schema for its input and its result.
    let tools = s["tools"].as_object().unwrap();
    let mut names: Vec<&str> = tools.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "integrate",
            "integrate_forecast",
            "plan_check",
            "plan_schema",
            "pr_prepare",
            "run_cancel",
            "run_start",
            "run_status",
            "task_logs"
        ]
    );
    for (name, t) in tools {
        assert_eq!(t["input_schema"]["type"], "object", "{name}");
        assert_eq!(t["output_schema"]["type"], "object", "{name}");
        assert!(!t["description"].as_str().unwrap().is_empty(), "{name}");
    }
    assert!(
        tools["task_logs"]["input_schema"]["required"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "task")
    );
    // A result's schema is that of the type the command prints: every key
    // the run's status has is described, and states are enumerations.
    let status_schema = &tools["run_status"]["output_schema"];
    let described = status_schema["properties"].as_object().unwrap();
    for key in s["final_status"]["structured"].as_object().unwrap().keys() {
        assert!(described.contains_key(key), "run_status schema lacks {key}");
    }
    let task_state = &status_schema["$defs"]["TaskState"];
    assert!(
        task_state.to_string().contains("\"QUARANTINED\""),
        "{task_state}"
    );
    // The plan schema is the one `mpw plan schema` prints.
    let cli_schema: Value = serde_json::from_str(&stdout_of(
        &repo.mpw().args(["plan", "schema"]).output().unwrap(),
    ))
    .unwrap();
    assert_eq!(s["plan_schema"]["structured"], cli_schema);

    // A bad plan: every error with its line and column, as the CLI gives them.
    let cli: Value = serde_json::from_str(&stdout_of(
        &repo
            .mpw()
            .args(["plan", "check", "--json", "plans/bad.jsonc"])
            .output()
            .unwrap(),
    ))
    .unwrap();
    let file = &s["check_bad_file"];
    assert!(!file["is_error"].as_bool().unwrap());
    assert_eq!(file["structured"]["ok"], false);
    assert_eq!(file["structured"]["errors"], cli["errors"]);
    let errors = file["structured"]["errors"].as_array().unwrap();
    assert!(errors.len() >= 2, "{errors:#?}");
    for e in errors {
        assert_eq!(e["location"]["file"], "plans/bad.jsonc");
        assert!(e["location"]["line"].as_u64().unwrap() >= 3, "{e}");
        assert!(e["location"]["col"].as_u64().unwrap() >= 1, "{e}");
    }
    assert!(
        errors
            .iter()
            .any(|e| e["message"].as_str().unwrap().contains("NOPE"))
    );
    // The same plan as text: the same errors, in a file named for it.
    let text = s["check_bad_text"]["structured"]["errors"]
        .as_array()
        .unwrap();
    assert_eq!(text.len(), errors.len());
    for (t, f) in text.iter().zip(errors) {
        assert_eq!(t["message"], f["message"]);
        assert_eq!(t["location"]["line"], f["location"]["line"]);
        assert_eq!(t["location"]["col"], f["location"]["col"]);
        assert_eq!(t["location"]["file"], "inline-plan.jsonc");
    }
    assert_eq!(s["check_good"]["structured"]["ok"], true);
    assert_eq!(s["check_good"]["structured"]["summary"]["workstreams"], 3);

    // Paths outside the repository are refused, and nothing runs.
    for step in ["check_outside", "start_outside"] {
        assert_eq!(s[step]["is_error"], true, "{step}");
        let msg = s[step]["text"].as_str().unwrap();
        assert!(
            msg.starts_with("../outside.jsonc: outside the repository"),
            "{msg}"
        );
    }
    // A run of a bad plan fails with the CLI's own message, and starts nothing.
    assert_eq!(s["start_bad"]["is_error"], true);
    assert_eq!(
        s["start_bad"]["text"],
        cli_error(&repo, &["run", "plans/bad.jsonc"])
    );

    // The run started at once and was polled to its end.
    let run = s["start"]["structured"]["run_id"].as_str().unwrap();
    let polls = s["polls"].as_array().unwrap();
    assert_eq!(polls.last().unwrap(), "COMPLETED", "{polls:?}");
    let st = &s["final_status"]["structured"];
    assert_eq!(st["run_id"], run);
    assert_eq!(st["counts"]["SUCCEEDED"], 3);
    assert_eq!(s["latest_status"]["structured"]["run_id"], run);
    let log = Path::new(s["start"]["structured"]["log"].as_str().unwrap());
    assert!(log.starts_with(repo.mpw_dir()), "{}", log.display());
    assert!(log.exists());

    // Logs: the whole output, the last line, standard error.
    assert_eq!(s["log"]["structured"]["text"], "first\nhello from A\n");
    assert_eq!(s["log"]["structured"]["lines"], 2);
    assert_eq!(s["log_tail"]["structured"]["text"], "hello from A\n");
    assert_eq!(s["log_tail"]["structured"]["truncated"], true);
    assert_eq!(s["log_stderr"]["structured"]["stream"], "stderr");
    assert_eq!(s["log_stderr"]["structured"]["text"], "");
    // Errors are the CLI's messages.
    assert_eq!(s["log_missing"]["is_error"], true);
    assert_eq!(
        s["log_missing"]["text"],
        cli_error(&repo, &["logs", run, "A/NOPE"])
    );
    assert_eq!(
        s["status_missing"]["text"],
        cli_error(&repo, &["status", "NOSUCHRUN"])
    );

    // Resources: the run's status and events.
    let resources: Vec<&str> = s["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert!(resources.contains(&format!("mpw://runs/{run}/run_status.json").as_str()));
    assert!(resources.contains(&format!("mpw://runs/{run}/events.jsonl").as_str()));
    assert_eq!(s["templates"].as_array().unwrap().len(), 2);
    // Read before integrating, as was the tool's last answer: the same object.
    assert_eq!(s["status_resource"], *st);
    let kinds: Vec<&str> = s["events_resource"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"RUN_STARTED"), "{kinds:?}");
    assert!(kinds.contains(&"TASK_SUCCEEDED"), "{kinds:?}");

    // The forecast sees A and C conflict on a.txt; nothing moved.
    let f = &s["forecast"]["structured"];
    assert_eq!(f["run_id"], run);
    let pairs = f["pairs"].as_array().unwrap();
    assert_eq!(pairs.len(), 1, "{f:#}");
    assert_eq!((&pairs[0]["a"], &pairs[0]["b"]), (&"A".into(), &"C".into()));
    assert_eq!(pairs[0]["paths"], serde_json::json!(["a.txt"]));

    // Integrate: A and B land on main, C conflicts and main keeps A's file.
    let r = &s["integrate"]["structured"];
    let state = |ws: &str| {
        r["outcomes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["workstream"] == ws)
            .unwrap()["state"]
            .clone()
    };
    assert_eq!(state("A"), "INTEGRATED", "{r:#}");
    assert_eq!(state("B"), "INTEGRATED", "{r:#}");
    assert_eq!(state("C"), "CONFLICT", "{r:#}");
    assert_eq!(r["after"], repo.head("main"));
    assert_eq!(repo.git(&["show", "main:a.txt"]), "a");
    assert_eq!(repo.git(&["show", "main:b.txt"]), "b");
    assert_eq!(repo.git(&["status", "--porcelain"]), "");
    assert_eq!(ws(&repo.run_status(run), "A")["state"], "INTEGRATED");
    // The gate ran on each merge; the status (checked against its schema
    // by the client) now holds the integrations and the gate runs.
    assert!(!r["gate_runs"].as_array().unwrap().is_empty(), "{r:#}");
    let after = &s["status_after_integrate"]["structured"];
    assert_eq!(ws(after, "C")["integration"]["conflicts"][0], "a.txt");
    assert_eq!(after["gate_runs"], r["gate_runs"]);

    // Pull request drafts, for the integrated workstreams.
    let drafts = s["pr"]["structured"]["drafts"].as_array().unwrap();
    assert!(!drafts.is_empty(), "{:#}", s["pr"]);
    for d in drafts {
        assert!(Path::new(d["body_file"].as_str().unwrap()).exists());
    }

    // The slow run was cancelled: its status says so.
    let slow = s["slow_start"]["structured"]["run_id"].as_str().unwrap();
    assert_eq!(s["cancel"]["structured"]["run_id"], slow);
    assert_eq!(s["cancel"]["structured"]["state"], "CANCELLED");
    assert_eq!(repo.run_status(slow)["state"], "CANCELLED");

    // A run started just before the client left goes on without the server.
    let late = s["late_start"]["structured"]["run_id"].as_str().unwrap();
    let end = wait_for_end(&repo, late);
    assert_eq!(end["state"], "COMPLETED", "{end:#}");
    assert_eq!(task(&end, "L", "T1")["state"], "SUCCEEDED");
}

/// `mpw status RUN --json` once the run has ended (the coordinator removes
/// nothing while it runs, so polling is safe).
fn wait_for_end(repo: &TestRepo, run: &str) -> Value {
    loop {
        let out = repo.mpw().args(["status", "--json", run]).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
        let st: Value = serde_json::from_str(&stdout_of(&out)).unwrap();
        if !matches!(st["state"].as_str(), Some("PENDING" | "RUNNING")) {
            return st;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn mcp_outside_a_repository_says_so_and_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let out = mpw().arg("mcp").current_dir(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("not a git repository"),
        "{}",
        stderr_of(&out)
    );
    assert!(stdout_of(&out).is_empty());
}
