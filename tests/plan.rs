//! `mpw plan check | schema | graph`, driven through the real binary.

mod common;

use common::{mpw, stderr_of, stdout_of, testdata};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn check(path: &Path, extra: &[&str]) -> std::process::Output {
    let mut c = mpw();
    c.current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["plan", "check"])
        .args(extra)
        .arg(path);
    c.output().unwrap()
}

fn rel(p: &Path) -> PathBuf {
    p.strip_prefix(env!("CARGO_MANIFEST_DIR"))
        .unwrap()
        .to_path_buf()
}

fn jsonc_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonc"))
        .collect();
    v.sort();
    v
}

/// (file under testdata/plans/bad, substrings the error output must contain:
/// the culprit's id or key, and `file:line:col`).
const BAD: &[(&str, &[&str])] = &[
    (
        "syntax-error",
        &["syntax-error.jsonc:3:44: error", "Expected comma"],
    ),
    (
        "not-an-object",
        &["not-an-object.jsonc:2:1: error", "must be a JSON object"],
    ),
    ("empty-file", &["empty-file.jsonc:1:1: error", "empty"]),
    (
        "misspelt-key",
        &[
            "misspelt-key.jsonc:6:7: error: unknown key `alowed_paths` in workstream `WS-1`\n  help: did you mean `allowed_paths`?",
        ],
    ),
    (
        "misspelt-dependency",
        &[
            "misspelt-dependency.jsonc:7:22: error: workstream `docs` depends on unknown workstream `parsr`\n  help: did you mean `parser`?",
            "misspelt-dependency.jsonc:9:56: error: task `docs/write` depends on unknown task `parser/lexx`",
            "help: did you mean `parser/lex`?",
            "misspelt-dependency.jsonc:10:41: error: unknown key `depend_on` in task `docs/check`\n  help: did you mean `depends_on`?",
            "plan is invalid: 3 error(s)",
        ],
    ),
    (
        "type-error-and-more",
        &[
            "type-error-and-more.jsonc:4:33: error: `priority` of workstream `WS-1`",
            "help: write `priority` as a whole number",
            "type-error-and-more.jsonc:4:96: error: task `WS-1/T1` depends on unknown task `T2`",
            "plan is invalid: 2 error(s)",
        ],
    ),
    (
        "type-error",
        &[
            "type-error.jsonc:6:51: error",
            "`timeout_s` of task `WS-1/T1`",
            "\"soon\"",
        ],
    ),
    (
        "two-type-errors",
        &[
            "two-type-errors.jsonc:3:33: error: `priority` of workstream `WS-1`",
            "two-type-errors.jsonc:7:49: error: `retries` of task `WS-2/T1`",
            "two-type-errors.jsonc:8:30: error: `run` of task `WS-2/T2`",
        ],
    ),
    (
        "missing-task-id",
        &["missing-task-id.jsonc:6:9: error", "missing field `id`"],
    ),
    (
        "unknown-shell",
        &["unknown-shell.jsonc:2:25: error", "`shell`", "zsh"],
    ),
    (
        "negative-limit",
        &[
            "negative-limit.jsonc:2:35: error",
            "`max_concurrency`",
            "-2",
        ],
    ),
    (
        "duplicate-key",
        &["duplicate-key.jsonc:3:61: error", "duplicate key `run`"],
    ),
    (
        "duplicate-workstream-id",
        &[
            "duplicate-workstream-id.jsonc:4:13: error",
            "duplicate workstream id `WS-1`",
            "first at 3:13",
        ],
    ),
    (
        "duplicate-task-id",
        &[
            "duplicate-task-id.jsonc:7:17: error",
            "duplicate task id `T1`",
            "`WS-1`",
            "first at 6:17",
        ],
    ),
    (
        "unknown-task-dep",
        &[
            "unknown-task-dep.jsonc:6:53: error",
            "`WS-1/T1`",
            "unknown task `T9`",
        ],
    ),
    (
        "unknown-cross-task-dep",
        &[
            "unknown-cross-task-dep.jsonc:3:76: error",
            "unknown task `WS-2/T9`",
        ],
    ),
    (
        "unknown-workstream-in-task-dep",
        &[
            "unknown-workstream-in-task-dep.jsonc:3:76: error",
            "unknown workstream `WS-9`",
        ],
    ),
    (
        "unknown-workstream-in-depends-on",
        &[
            "unknown-workstream-in-depends-on.jsonc:3:36: error",
            "unknown workstream `WS-7`",
        ],
    ),
    (
        "self-dependency-task",
        &[
            "self-dependency-task.jsonc:3:76: error",
            "task `WS-1/T1` depends on itself",
        ],
    ),
    (
        "self-dependency-workstream",
        &[
            "self-dependency-workstream.jsonc:3:36: error",
            "workstream `WS-1` depends on itself",
        ],
    ),
    (
        "task-cycle",
        &[
            "task-cycle.jsonc:6:53: error",
            "dependency cycle: WS-1/T1 -> WS-1/T3 -> WS-1/T2 -> WS-1/T1",
        ],
    ),
    (
        "cross-workstream-cycle",
        &[
            "cross-workstream-cycle.jsonc:3:76: error",
            "dependency cycle: WS-1/T1 -> WS-2/T1 -> WS-1/T1",
        ],
    ),
    (
        "cycle-through-workstream-depends-on",
        &[
            "cycle-through-workstream-depends-on.jsonc:3:76: error",
            "dependency cycle: WS-1/T1 -> WS-2/T1 -> WS-1/T1",
        ],
    ),
    (
        "workstream-cycle",
        &[
            "workstream-cycle.jsonc:3:36: error",
            "workstream dependency cycle: WS-1 -> WS-3 -> WS-2 -> WS-1",
        ],
    ),
    (
        "bad-workstream-id",
        &["bad-workstream-id.jsonc:3:13: error", "`feature/x`", "`/`"],
    ),
    (
        "bad-task-id",
        &["bad-task-id.jsonc:3:40: error", "`fix the ~bug`", "a space"],
    ),
    (
        "bad-task-id-dotdot",
        &["bad-task-id-dotdot.jsonc:3:40: error", "`a..b`", "`..`"],
    ),
    (
        "bad-branch",
        &["bad-branch.jsonc:3:31: error", "`topic//x.lock`", "`WS-1`"],
    ),
    (
        "no-run-nor-argv",
        &[
            "no-run-nor-argv.jsonc:3:40: error",
            "`WS-1/T1` has neither `run` nor `argv`",
        ],
    ),
    (
        "both-run-and-argv",
        &[
            "both-run-and-argv.jsonc:3:69: error",
            "`WS-1/T1` has both `run` and `argv`",
        ],
    ),
    (
        "empty-argv",
        &[
            "empty-argv.jsonc:3:54: error",
            "`WS-1/T1` has an empty `argv`",
        ],
    ),
    (
        "cwd-absolute",
        &["cwd-absolute.jsonc:3:68: error", "cwd `/etc`", "absolute"],
    ),
    (
        "cwd-escapes",
        &[
            "cwd-escapes.jsonc:3:68: error",
            "cwd `sub/../../other`",
            "escapes the worktree",
        ],
    ),
    (
        "copy-escapes",
        &[
            "copy-escapes.jsonc:2:25: error",
            "`../secrets.env`",
            "escapes",
        ],
    ),
    (
        "max-concurrency-zero",
        &[
            "max-concurrency-zero.jsonc:2:35: error",
            "max_concurrency must be at least 1",
        ],
    ),
    (
        "cpu-slots-zero",
        &[
            "cpu-slots-zero.jsonc:2:29: error",
            "cpu_slots must be at least 1",
        ],
    ),
    (
        "jobserver-on-io-task",
        &[
            "jobserver-on-io-task.jsonc:2:89: error",
            "task `WS-1/T1` asks for the jobserver, but only cpu-class tasks get it",
        ],
    ),
    (
        "io-slots-zero",
        &[
            "io-slots-zero.jsonc:2:28: error",
            "io_slots must be at least 1",
        ],
    ),
    (
        "timeout-zero",
        &[
            "timeout-zero.jsonc:2:89: error",
            "timeout_s of task `WS-1/T1` must be at least 1",
        ],
    ),
    (
        "bad-regex",
        &[
            "bad-regex.jsonc:9:59: error",
            "guardrails.fail_on",
            "`warning[unclosed`",
            "unclosed character class",
        ],
    ),
    (
        "bad-glob",
        &[
            "bad-glob.jsonc:3:49: error",
            "allowed_paths glob `src/[abc`",
            "unclosed",
        ],
    ),
    (
        "bad-run-id",
        &["bad-run-id.jsonc:2:13: error", "run_id `run:1`", "`:`"],
    ),
    (
        "schema-version",
        &["schema-version.jsonc:2:13: error", "`schema` 2"],
    ),
    (
        "empty-workstreams",
        &[
            "empty-workstreams.jsonc:3:18: error",
            "`workstreams` is empty",
        ],
    ),
    (
        "workstream-without-tasks",
        &[
            "workstream-without-tasks.jsonc:4:30: error",
            "`WS-2` has no tasks",
        ],
    ),
    (
        "reserved-names",
        &[
            "reserved-names.jsonc:5:56: error: task id `_setup1` starts with `_`, which mpw reserves",
            "reserved-names.jsonc:6:13: error: workstream id `_gate-A-1` starts with `_`",
            "plan is invalid: 2 error(s)",
        ],
    ),
    (
        "many-mistakes",
        &[
            "many-mistakes.jsonc:5:24: error: globals.max_concurrency",
            "many-mistakes.jsonc:10:17: error: branch `bad..branch`",
            "many-mistakes.jsonc:12:53: error: task `WS-1/T1` depends on unknown task `T7`",
            "many-mistakes.jsonc:13:17: error: duplicate task id `T1`",
            "many-mistakes.jsonc:14:45: error: cwd `../outside`",
            "many-mistakes.jsonc:18:13: error: workstream id `WS 2`",
            "many-mistakes.jsonc:20:17: error: task `WS 2/T1` has neither",
            "many-mistakes.jsonc:25:22: error: workstream dependency cycle: WS-3 -> WS-4 -> WS-3",
            "many-mistakes.jsonc:26:75: error: guardrails.require regex `(unclosed`",
            "plan is invalid: 9 error(s)",
        ],
    ),
];

#[test]
fn every_bad_plan_exits_2_naming_the_culprit_and_its_position() {
    let mut failures = Vec::new();
    for (name, expected) in BAD {
        let path = testdata(&format!("plans/bad/{name}.jsonc"));
        let out = check(&rel(&path), &[]);
        let err = stderr_of(&out);
        if out.status.code() != Some(2) {
            failures.push(format!("{name}: exit {:?}\n{err}", out.status.code()));
        }
        for s in *expected {
            if !err.contains(s) {
                failures.push(format!("{name}: missing {s:?} in\n{err}"));
            }
        }
        if !stdout_of(&out).is_empty() {
            failures.push(format!("{name}: stdout not empty"));
        }
        // each error comes with a one-line suggestion
        let errors = err.lines().filter(|l| l.contains(": error: ")).count();
        let helps = err.lines().filter(|l| l.starts_with("  help: ")).count();
        if errors != helps {
            failures.push(format!(
                "{name}: {errors} error(s), {helps} help line(s)\n{err}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_bad_plan_file_is_in_the_table() {
    let listed: Vec<&str> = BAD.iter().map(|(n, _)| *n).collect();
    for p in jsonc_files(&testdata("plans/bad")) {
        let stem = p.file_stem().unwrap().to_str().unwrap().to_string();
        assert!(
            listed.contains(&stem.as_str()),
            "{stem} has no expectations"
        );
    }
}

#[test]
fn every_good_plan_and_example_plan_is_valid() {
    let mut files = jsonc_files(&testdata("plans/good"));
    files.extend(jsonc_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("plans"),
    ));
    assert!(files.len() >= 6, "{files:?}");
    for f in files {
        let out = check(&rel(&f), &[]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: {}",
            f.display(),
            stderr_of(&out)
        );
        let stdout = stdout_of(&out);
        assert!(stdout.contains("plan is valid"), "{stdout}");
        assert!(stdout.contains("critical path"), "{stdout}");
        assert!(stderr_of(&out).is_empty(), "{}", stderr_of(&out));
    }
}

#[test]
fn many_mistakes_reports_every_error_in_one_run_as_json_too() {
    let out = check(
        &rel(&testdata("plans/bad/many-mistakes.jsonc")),
        &["--json"],
    );
    assert_eq!(out.status.code(), Some(2));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    let errors = v["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 9, "{errors:#?}");
    assert!(errors.iter().all(|e| e["severity"] == "error"));
    let first = &errors[0];
    assert_eq!(first["pointer"], "/globals/max_concurrency");
    assert_eq!(first["location"]["line"], 5);
    assert_eq!(first["location"]["col"], 24);
    assert!(v["warnings"].as_array().unwrap().is_empty());
    // the human form still goes to stderr
    assert!(stderr_of(&out).contains("many-mistakes.jsonc:5:24: error"));
}

#[test]
fn unknown_keys_fail_warn_with_lenient_and_metadata_is_free() {
    let f = rel(&testdata("plans/warn/unknown-key.jsonc"));
    let out = check(&f, &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr_of(&out);
    for s in [
        "unknown-key.jsonc:3:3: error: unknown key `owner` in the plan",
        "unknown-key.jsonc:7:7: error: unknown key `estimate` in workstream `WS-1`",
        "unknown-key.jsonc:9:54: error: unknown key `guardrails.warn_on` in task `WS-1/T1`",
        "plan is invalid: 3 error(s)",
    ] {
        assert!(err.contains(s), "missing {s:?} in\n{err}");
    }
    // nothing close to `owner`: the way out is named instead
    assert!(err.contains("help: remove it, move it under `metadata`, or pass --lenient"));
    assert!(stdout_of(&out).is_empty());
    // the old flag still works, and means what is now the default
    assert_eq!(check(&f, &["--strict"]).status.code(), Some(2));

    let out = check(&f, &["--lenient"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    for s in [
        "unknown-key.jsonc:3:3: warning: unknown key `owner` in the plan; ignored",
        "unknown-key.jsonc:7:7: warning: unknown key `estimate` in workstream `WS-1`; ignored",
        "unknown-key.jsonc:9:54: warning: unknown key `guardrails.warn_on` in task `WS-1/T1`; ignored",
    ] {
        assert!(err.contains(s), "missing {s:?} in\n{err}");
    }
    assert!(!err.contains("metadata"), "{err}");
    assert!(stdout_of(&out).contains("plan is valid"));

    let out = check(&f, &["--json", "--lenient"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["warnings"].as_array().unwrap().len(), 3);
    assert_eq!(v["warnings"][0]["severity"], "warning");
    assert_eq!(v["warnings"][0]["pointer"], "/owner");

    let out = check(&f, &["--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["errors"].as_array().unwrap().len(), 3);
}

#[test]
fn misspelt_keys_and_ids_come_with_a_guess_in_json_too() {
    let out = check(
        &rel(&testdata("plans/bad/misspelt-dependency.jsonc")),
        &["--json"],
    );
    assert_eq!(out.status.code(), Some(2));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let helps: Vec<&str> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["help"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        helps,
        [
            "did you mean `parser`?",
            "did you mean `parser/lex`?",
            "did you mean `depends_on`?"
        ]
    );
}

#[test]
fn run_refuses_a_misspelt_plan_before_touching_anything_unless_lenient() {
    let repo = common::repo().commit("init");
    let plan = repo.plan(
        "typo",
        r#"{ "workstreams": [ { "id": "A", "alowed_paths": ["a/**"],
             "tasks": [ { "id": "T1", "run": "echo hi > a.txt" } ] } ] }"#,
    );
    let out = repo.mpw().args(["run"]).arg(&plan).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("did you mean `allowed_paths`?"));
    assert!(!repo.path.with_extension("mpw").exists());
    let out = repo
        .mpw()
        .args(["run", "--lenient"])
        .arg(&plan)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("warning: unknown key `alowed_paths`"));
}

#[test]
fn check_json_has_the_normalised_plan_and_the_summary() {
    let out = check(&rel(&testdata("plans/good/stacked.jsonc")), &["--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["warnings"], serde_json::json!([]));
    let plan = &v["plan"];
    assert_eq!(plan["workstreams"][1]["id"], "api");
    // defaults filled in: normalised
    assert_eq!(plan["workstreams"][0]["tasks"][0]["class"], "io");
    assert_eq!(plan["workstreams"][0]["tasks"][0]["read_only"], false);
    let s = &v["summary"];
    assert_eq!(s["workstreams"], 3);
    assert_eq!(s["tasks"], 6);
    assert_eq!(s["depth"], 5);
    assert_eq!(
        s["critical_path"],
        serde_json::json!(["base/a", "base/c", "api/gen", "api/check", "docs/write"])
    );
    assert_eq!(s["critical_path_len"], 5);
    assert_eq!(s["per_workstream"][1]["id"], "api");
    assert_eq!(s["per_workstream"][1]["tasks"], 2);
    assert_eq!(
        s["per_workstream"][1]["depends_on"],
        serde_json::json!(["base"])
    );
}

#[test]
fn missing_plan_exits_2_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        vec!["plan", "check", "no/such/plan.jsonc"],
        vec!["plan", "graph", "no/such/plan.jsonc"],
    ] {
        let out = mpw().current_dir(dir.path()).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert!(
            stderr_of(&out).contains("no/such/plan.jsonc"),
            "{}",
            stderr_of(&out)
        );
    }
    let out = mpw()
        .current_dir(dir.path())
        .args(["plan", "check", "--json", "nope.jsonc"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("nope.jsonc")
    );
}

#[test]
fn plan_commands_touch_nothing_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("p.jsonc");
    std::fs::copy(testdata("plans/good/jsonc-features.jsonc"), &plan).unwrap();
    let bad = dir.path().join("bad.jsonc");
    std::fs::copy(testdata("plans/bad/many-mistakes.jsonc"), &bad).unwrap();
    let before = std::fs::read(&plan).unwrap();
    for args in [
        vec!["plan", "check", "p.jsonc"],
        vec!["plan", "check", "--json", "p.jsonc"],
        vec!["plan", "check", "bad.jsonc"],
        vec!["plan", "schema"],
        vec!["plan", "graph", "p.jsonc"],
        vec!["plan", "graph", "--format", "mermaid", "p.jsonc"],
    ] {
        mpw().current_dir(dir.path()).args(&args).output().unwrap();
    }
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["bad.jsonc", "p.jsonc"]);
    assert_eq!(std::fs::read(&plan).unwrap(), before);
}

fn schema() -> Value {
    let out = mpw().args(["plan", "schema"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    serde_json::from_slice(&out.stdout).expect("schema is JSON")
}

/// A small JSON Schema checker: `$ref` (local), `type`, `properties`,
/// `required`, `items`, `enum`, `const`, `anyOf`/`oneOf`, `minimum`,
/// `maximum`, `minItems`, `additionalProperties` (schema form). Enough for
/// what schemars emits for the plan types; patterns are ECMA-262 and left out.
fn conforms(root: &Value, schema: &Value, v: &Value, at: &str, errs: &mut Vec<String>) {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let target = root
            .pointer(r.trim_start_matches('#'))
            .unwrap_or_else(|| panic!("bad $ref {r}"));
        conforms(root, target, v, at, errs);
    }
    if let Some(t) = schema.get("type") {
        let types: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let ok = types.iter().any(|t| match *t {
            "object" => v.is_object(),
            "array" => v.is_array(),
            "string" => v.is_string(),
            "integer" => v.is_i64() || v.is_u64(),
            "number" => v.is_number(),
            "boolean" => v.is_boolean(),
            "null" => v.is_null(),
            _ => false,
        });
        if !ok {
            errs.push(format!("{at}: {v} is not {types:?}"));
            return;
        }
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array)
        && !e.contains(v)
    {
        errs.push(format!("{at}: {v} not in {e:?}"));
    }
    if let Some(c) = schema.get("const")
        && c != v
    {
        errs.push(format!("{at}: {v} != {c}"));
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(alts) = schema.get(key).and_then(Value::as_array) {
            let n = alts
                .iter()
                .filter(|s| {
                    let mut e = Vec::new();
                    conforms(root, s, v, at, &mut e);
                    e.is_empty()
                })
                .count();
            if n == 0 || (key == "oneOf" && n > 1) {
                errs.push(format!("{at}: {n} alternatives of {key} match {v}"));
            }
        }
    }
    if let (Some(min), Some(x)) = (schema.get("minimum").and_then(Value::as_f64), v.as_f64())
        && x < min
    {
        errs.push(format!("{at}: {x} < {min}"));
    }
    if let (Some(max), Some(x)) = (schema.get("maximum").and_then(Value::as_f64), v.as_f64())
        && x > max
    {
        errs.push(format!("{at}: {x} > {max}"));
    }
    if let Value::Array(a) = v {
        if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
            && (a.len() as u64) < min
        {
            errs.push(format!("{at}: fewer than {min} items"));
        }
        if let Some(items) = schema.get("items") {
            for (i, x) in a.iter().enumerate() {
                conforms(root, items, x, &format!("{at}/{i}"), errs);
            }
        }
    }
    if let Value::Object(o) = v {
        let props = schema.get("properties").and_then(Value::as_object);
        if let Some(req) = schema.get("required").and_then(Value::as_array) {
            for r in req.iter().filter_map(Value::as_str) {
                if !o.contains_key(r) {
                    errs.push(format!("{at}: missing {r}"));
                }
            }
        }
        for (k, x) in o {
            match props.and_then(|p| p.get(k)) {
                Some(s) => conforms(root, s, x, &format!("{at}/{k}"), errs),
                None => {
                    if let Some(extra) = schema.get("additionalProperties")
                        && extra.is_object()
                    {
                        conforms(root, extra, x, &format!("{at}/{k}"), errs);
                    }
                }
            }
        }
    }
}

fn parse_jsonc(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    jsonc_parser::parse_to_serde_value(&text, &Default::default())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn schema_describes_the_plan_and_accepts_the_good_plans() {
    let s = schema();
    assert_eq!(s["$schema"], "https://json-schema.org/draft/2020-12/schema");
    assert_eq!(s["type"], "object");
    let props = s["properties"].as_object().unwrap();
    for k in [
        "workstreams",
        "globals",
        "run_id",
        "base",
        "metadata",
        "schema",
    ] {
        assert!(props.contains_key(k), "no {k}");
    }
    assert_eq!(s["required"], serde_json::json!(["workstreams"]));
    let defs = s["$defs"].as_object().unwrap();
    for d in [
        "Globals",
        "Workstream",
        "Task",
        "Guardrails",
        "Shell",
        "TaskClass",
    ] {
        assert!(defs.contains_key(d), "no $defs/{d}");
    }
    let task = &defs["Task"]["properties"];
    for k in [
        "id",
        "run",
        "argv",
        "depends_on",
        "class",
        "guardrails",
        "read_only",
        "allow_failure",
    ] {
        assert!(task.get(k).is_some(), "Task has no {k}");
    }
    assert!(task["id"]["pattern"].is_string());
    assert_eq!(
        defs["Globals"]["properties"]["max_concurrency"]["minimum"],
        1
    );
    // unknown keys are warnings, so the schema must not forbid them
    assert!(s.get("additionalProperties").is_none_or(|a| a != false));

    let mut files = jsonc_files(&testdata("plans/good"));
    files.extend(jsonc_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("plans"),
    ));
    for f in files {
        let v = parse_jsonc(&f);
        let mut errs = Vec::new();
        conforms(&s, &s, &v, "", &mut errs);
        assert!(errs.is_empty(), "{}: {errs:#?}", f.display());
    }
    // and the checker does catch a wrong type, so the loop above means something
    let mut errs = Vec::new();
    let bad =
        serde_json::json!({"workstreams": [{"id": "W", "tasks": [{"id": "T", "timeout_s": "x"}]}]});
    conforms(&s, &s, &bad, "", &mut errs);
    assert!(!errs.is_empty());
}

fn graph(fmt: Option<&str>, plan: &str) -> String {
    let mut c = mpw();
    c.current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["plan", "graph"]);
    if let Some(f) = fmt {
        c.args(["--format", f]);
    }
    let out = c.arg(plan).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    stdout_of(&out)
}

#[test]
fn graph_dot_has_clusters_nodes_and_edges() {
    let g = graph(None, "testdata/plans/good/stacked.jsonc");
    assert!(g.starts_with("digraph "), "{g}");
    assert!(g.contains("compound=true"));
    for s in [
        "subgraph \"cluster_base\" {",
        "subgraph \"cluster_api\" {",
        "subgraph \"cluster_docs\" {",
        "\"base/a\" [label=\"a\"];",
        "\"base/a\" -> \"base/c\";",
        "\"base/b\" -> \"base/c\";",
        "\"api/gen\" -> \"api/check\";",
        // workstream depends_on: one edge between the clusters
        "\"base/c\" -> \"api/gen\" [ltail=\"cluster_base\", lhead=\"cluster_api\", style=dashed];",
        // a task waiting for a whole workstream
        "\"api/check\" -> \"docs/write\" [ltail=\"cluster_api\"];",
    ] {
        assert!(g.contains(s), "missing {s:?} in\n{g}");
    }
    assert_eq!(g, graph(Some("dot"), "testdata/plans/good/stacked.jsonc"));
}

#[test]
fn graph_escapes_labels() {
    let g = graph(None, "testdata/plans/good/all-fields.jsonc");
    assert!(
        g.contains(r#"label="WS-1: Tokenizer \"quoted\" <b>";"#),
        "{g}"
    );
    let m = graph(Some("mermaid"), "testdata/plans/good/all-fields.jsonc");
    assert!(
        m.contains(r#"subgraph ws0["WS-1: Tokenizer #quot;quoted#quot; #lt;b#gt;"]"#),
        "{m}"
    );
}

#[test]
fn graph_mermaid_has_subgraphs_and_edges() {
    let g = graph(Some("mermaid"), "testdata/plans/good/jsonc-features.jsonc");
    assert!(g.starts_with("flowchart LR\n"), "{g}");
    for s in [
        "subgraph ws0[\"WS-1: Tokenizer\"]",
        "ws0_t0[\"T1: Split lexer\"]",
        "subgraph ws1[\"WS-2\"]",
        "ws0_t0 --> ws0_t1",
        "ws0_t0 --> ws1_t0",
    ] {
        assert!(g.contains(s), "missing {s:?} in\n{g}");
    }
    assert_eq!(g.matches("\n  end\n").count(), 2);
    let g = graph(Some("mermaid"), "testdata/plans/good/stacked.jsonc");
    assert!(g.contains("ws0 -.-> ws1"), "{g}");
    assert!(g.contains("ws1 --> ws2_t0"), "{g}");
}

#[test]
fn graph_of_an_invalid_plan_exits_2() {
    let mut c = mpw();
    let out = c
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["plan", "graph", "testdata/plans/bad/task-cycle.jsonc"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("dependency cycle"));
    assert!(out.stdout.is_empty());
}

/// A generated plan: `n_ws` workstreams of `n_tasks` tasks; each task depends
/// on the previous one, every 10th workstream is stacked on the one before,
/// and every task 50 waits for task 50 of the previous workstream.
pub fn generated_plan(n_ws: usize, n_tasks: usize) -> String {
    let mut wss = Vec::new();
    for w in 0..n_ws {
        let tasks: Vec<Value> = (0..n_tasks)
            .map(|t| {
                let mut deps = Vec::new();
                if t > 0 {
                    deps.push(format!("T{}", t - 1));
                }
                if t == n_tasks / 2 && w > 0 {
                    deps.push(format!("WS-{}/T{t}", w - 1));
                }
                serde_json::json!({
                    "id": format!("T{t}"),
                    "name": format!("task {t} of {w}"),
                    "run": "true",
                    "depends_on": deps,
                    "guardrails": { "fail_on": ["error\\[E\\d+\\]"] },
                })
            })
            .collect();
        let depends_on: Vec<String> = if w % 10 == 9 {
            vec![format!("WS-{}", w - 1)]
        } else {
            vec![]
        };
        wss.push(serde_json::json!({
            "id": format!("WS-{w}"),
            "depends_on": depends_on,
            "allowed_paths": ["src/**"],
            "tasks": tasks,
        }));
    }
    serde_json::to_string_pretty(&serde_json::json!({ "name": "generated", "workstreams": wss }))
        .unwrap()
}

#[test]
fn generated_plan_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("gen.json");
    std::fs::write(&p, generated_plan(10, 20)).unwrap();
    let out = mpw()
        .args(["plan", "check", "--json"])
        .arg(&p)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["summary"]["tasks"], 200);
}

/// Benchmark: `cargo test --release --test plan -- --ignored --nocapture bench`
/// (or `scripts/bench_validate.sh`). Prints the time; asserts nothing about it.
#[test]
#[ignore]
fn bench_validate_100x100() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("plan-100x100.json");
    std::fs::write(&p, generated_plan(100, 100)).unwrap();
    let mut best = std::time::Duration::MAX;
    for _ in 0..5 {
        let start = std::time::Instant::now();
        let out = mpw().args(["plan", "check"]).arg(&p).output().unwrap();
        let took = start.elapsed();
        assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
        best = best.min(took);
    }
    let size = std::fs::metadata(&p).unwrap().len();
    println!(
        "mpw plan check, 100 workstreams x 100 tasks ({} KiB): best of 5 = {:.1} ms (whole process)",
        size / 1024,
        best.as_secs_f64() * 1000.0
    );
}

#[test]
fn fix_sorts_keys_and_recases_ids_keeping_comments_then_checks() {
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan.jsonc");
    std::fs::write(
        &plan,
        r#"// generated by an assistant
{
  "workstreams": [
    {
      "tasks": [
        { "run": "true", "id": "build" }, // compiles
        { "id": "test", "run": "true", "depends_on": ["Build", "lint"] },
      ],
      "id": "core",
    },
  ],
  "name": "fixable",
}
"#,
    )
    .unwrap();
    let out = mpw()
        .current_dir(dir.path())
        .args(["plan", "check", "--fix", "plan.jsonc"])
        .output()
        .unwrap();
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("plan.jsonc: fixed: `Build` -> `build` in the depends_on of task `core/test`"),
        "{err}"
    );
    assert!(
        err.contains("fixed: sorted the keys of 3 object(s) into schema order"),
        "{err}"
    );
    // what is not certain is left, with a one-line suggestion
    assert!(
        err.contains("error: task `core/test` depends on unknown task `lint`"),
        "{err}"
    );
    assert!(
        err.contains("help: known tasks of `core`: `build`"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&plan).unwrap(),
        r#"// generated by an assistant
{
  "name": "fixable",
  "workstreams": [
    {
      "id": "core",
      "tasks": [
        { "id": "build", "run": "true" }, // compiles
        { "id": "test", "run": "true", "depends_on": ["build", "lint"] },
      ],
    },
  ],
}
"#
    );
    let again = mpw()
        .current_dir(dir.path())
        .args(["plan", "check", "--fix", "plan.jsonc"])
        .output()
        .unwrap();
    assert!(stderr_of(&again).contains("nothing to fix with certainty"));
}
