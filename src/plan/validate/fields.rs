//! Checks of single fields and objects: the plan's own keys, globals,
//! workers, workstreams, tasks.

use super::Finding;
use super::names::{ID_RULE, branch_problem, env_name_problem, id_problem, relative_path_problem};
use crate::plan::source::esc;
use crate::plan::suggest;
use crate::plan::{Plan, Task, TaskClass, WorkerDef, Workstream};
use std::collections::{BTreeMap, HashMap, HashSet};

/// The plan's own keys and its globals.
pub(super) fn check_plan(plan: &Plan, out: &mut Vec<Finding>) {
    if let Some(s) = plan.schema
        && s != 1
    {
        out.push(
            Finding::error(
                "/schema",
                format!("unsupported `schema` {s}: only schema 1 exists"),
            )
            .help("remove `schema` or set it to 1"),
        );
    }
    if let Some(id) = &plan.run_id
        && let Some(p) = id_problem(id)
    {
        out.push(
            Finding::error(
                "/run_id",
                format!("run_id `{id}` is unfit for a branch or file name: it {p} ({ID_RULE})"),
            )
            .help("remove `run_id` (a ULID is generated) or use letters, digits, `.`, `_`, `-`"),
        );
    }
    let g = &plan.globals;
    check_limit(
        g.max_concurrency.map(u64::from),
        "/globals/max_concurrency".into(),
        "globals.max_concurrency",
        out,
    );
    check_limit(
        g.cpu_slots.map(u64::from),
        "/globals/cpu_slots".into(),
        "globals.cpu_slots",
        out,
    );
    check_limit(
        g.io_slots.map(u64::from),
        "/globals/io_slots".into(),
        "globals.io_slots",
        out,
    );
    check_limit(
        g.timeout_s,
        "/globals/timeout_s".into(),
        "globals.timeout_s",
        out,
    );
    check_env(g.env.keys(), "/globals", "globals", out);
    for (i, c) in g.copy.iter().enumerate() {
        if let Some(p) = relative_path_problem(c) {
            out.push(
                Finding::error(
                    format!("/globals/copy/{i}"),
                    format!("globals.copy entry `{c}` {p}"),
                )
                .help("name the file relative to the repository root, inside it"),
            );
        }
    }
    check_ignore(&g.ignore, "/globals", "globals.ignore", out);
    for (name, def) in &g.workers {
        check_worker(name, def, out);
    }
    if plan.workstreams.is_empty() {
        out.push(
            Finding::error("/workstreams", "`workstreams` is empty: nothing to run")
                .help("add a workstream with at least one task (`mpw init` writes an example)"),
        );
    }
}

fn check_env<'a>(
    env: impl IntoIterator<Item = &'a String>,
    base: &str,
    whose: &str,
    out: &mut Vec<Finding>,
) {
    for k in env {
        if let Some(p) = env_name_problem(k) {
            out.push(
                Finding::error(
                    format!("{base}/env/{}", esc(k)),
                    format!("environment variable name `{k}` of {whose} {p}"),
                )
                .help("rename the variable")
                .at_key(),
            );
        }
    }
}

fn check_limit(v: Option<u64>, pointer: String, what: &str, out: &mut Vec<Finding>) {
    if v == Some(0) {
        out.push(
            Finding::error(pointer, format!("{what} must be at least 1 (is 0)"))
                .help("use 1 or more, or remove the key for the default"),
        );
    }
}

pub(super) fn check_workstream<'p>(
    ws: &'p Workstream,
    w: usize,
    wp: &str,
    branches: &mut HashMap<&'p str, usize>,
    out: &mut Vec<Finding>,
) {
    let id = &ws.id;
    if let Some(b) = &ws.branch {
        if let Some(p) = branch_problem(b) {
            out.push(
                Finding::error(
                    format!("{wp}/branch"),
                    format!(
                        "branch `{b}` of workstream `{id}` is not a valid git branch name: it {p}"
                    ),
                )
                .help("remove `branch` for the default `mpw/<run>/<ws>`, or fix the name"),
            );
        } else if let Some(&first) = branches.get(b.as_str()) {
            out.push(
                Finding::error(
                    format!("{wp}/branch"),
                    format!(
                        "branch `{b}` of workstream `{id}` is already used by another workstream"
                    ),
                )
                .help("give each workstream its own branch, or remove `branch`")
                .related(format!("/workstreams/{first}/branch")),
            );
        } else {
            branches.insert(b, w);
        }
    }
    if let Some(paths) = &ws.allowed_paths {
        for (i, g) in paths.iter().enumerate() {
            if let Err(e) = globset::Glob::new(g) {
                let why = e.kind().to_string();
                out.push(
                    Finding::error(
                        format!("{wp}/allowed_paths/{i}"),
                        format!("allowed_paths glob `{g}` of workstream `{id}` is invalid: {why}"),
                    )
                    .help("fix the glob (e.g. `src/**`)"),
                );
            }
        }
    }
    check_ignore(&ws.ignore, wp, &format!("ignore of workstream `{id}`"), out);
    check_env(ws.env.keys(), wp, &format!("workstream `{id}`"), out);
    if ws.tasks.is_empty() {
        out.push(
            Finding::error(
                format!("{wp}/tasks"),
                format!("workstream `{id}` has no tasks: nothing to run"),
            )
            .help("add a task, or remove the workstream"),
        );
    }
}

/// Each `ignore` pattern must be gitignore syntax.
fn check_ignore(patterns: &[String], at: &str, what: &str, out: &mut Vec<Finding>) {
    for (i, p) in patterns.iter().enumerate() {
        if let Err(why) = crate::git::IgnoreRules::check_pattern(p) {
            out.push(Finding::error(
                format!("{at}/ignore/{i}"),
                format!("{what} pattern `{p}` is invalid: {why}"),
            ));
        }
    }
}

/// A pool of `globals.workers`.
fn check_worker(name: &str, def: &WorkerDef, out: &mut Vec<Finding>) {
    let wp = format!("/globals/workers/{}", esc(name));
    if let Some(p) = id_problem(name) {
        out.push(
            Finding::error(
                wp.clone(),
                format!("worker name `{name}` is unfit for a file name: it {p} ({ID_RULE})"),
            )
            .at_key(),
        );
    }
    match (&def.argv, &def.adapter) {
        (None, None) => out.push(
            Finding::error(
                wp.clone(),
                format!(
                    "worker `{name}` has neither `argv` nor `adapter`: one of them is required"
                ),
            )
            .at_key(),
        ),
        (Some(_), Some(_)) => out.push(Finding::error(
            format!("{wp}/adapter"),
            format!("worker `{name}` has both `argv` and `adapter`: keep one"),
        )),
        (Some(a), None) if a.first().is_none_or(|p| p.is_empty()) => out.push(Finding::error(
            format!("{wp}/argv"),
            format!("worker `{name}` has an empty `argv` or program name"),
        )),
        _ => {}
    }
    if def.python.is_some() && def.adapter.is_none() {
        out.push(Finding::error(
            format!("{wp}/python"),
            format!("worker `{name}` has `python` without `adapter`: it only chooses the adapter's interpreter"),
        ));
    }
    if let Some(py) = &def.python
        && py.first().is_none_or(|p| p.is_empty())
    {
        out.push(Finding::error(
            format!("{wp}/python"),
            format!("worker `{name}` has an empty `python`"),
        ));
    }
    check_limit(
        def.max.map(u64::from),
        format!("{wp}/max"),
        &format!("max of worker `{name}`"),
        out,
    );
    check_limit(
        def.startup_timeout_s,
        format!("{wp}/startup_timeout_s"),
        &format!("startup_timeout_s of worker `{name}`"),
        out,
    );
    check_env(def.env.keys(), &wp, &format!("worker `{name}`"), out);
}

/// Only a cpu-class process task is given the jobserver: asking for it
/// elsewhere would silently do nothing.
fn check_jobserver(task: &Task, tp: &str, name: &str, out: &mut Vec<Finding>) {
    if task.jobserver != Some(true) {
        return;
    }
    let why = if task.worker.is_some() {
        "a worker's request runs in a process started before it"
    } else if task.class != TaskClass::Cpu {
        "only cpu-class tasks get it"
    } else {
        return;
    };
    out.push(
        Finding::error(
            format!("{tp}/jobserver"),
            format!("task `{name}` asks for the jobserver, but {why}"),
        )
        .help("remove `\"jobserver\": true`, or make it a `\"class\": \"cpu\"` task with `run` or `argv`"),
    );
}

/// Exactly one of `run`, `argv` and `worker`; `args` only with `worker`.
fn check_command(
    task: &Task,
    tp: &str,
    name: &str,
    workers: &BTreeMap<String, WorkerDef>,
    out: &mut Vec<Finding>,
) {
    if let Some(wk) = &task.worker {
        if task.run.is_some() || task.argv.is_some() {
            let key = if task.run.is_some() { "run" } else { "argv" };
            out.push(Finding::error(
                format!("{tp}/worker"),
                format!("task `{name}` has both `worker` and `{key}`: keep one"),
            ));
        }
        if !workers.contains_key(wk) {
            let known: Vec<&str> = workers.keys().map(String::as_str).collect();
            let known = if known.is_empty() {
                "globals.workers defines none".to_string()
            } else {
                format!("known: {}", known.join(", "))
            };
            let help = suggest::hint(wk, workers.keys().map(String::as_str))
                .unwrap_or_else(|| "define it under `globals.workers`".into());
            out.push(
                Finding::error(
                    format!("{tp}/worker"),
                    format!("task `{name}` names unknown worker `{wk}` ({known})"),
                )
                .help(help),
            );
        }
        return;
    }
    if task.args.is_some() {
        out.push(Finding::error(
            format!("{tp}/args"),
            format!(
                "task `{name}` has `args` without `worker`: `args` are a worker request's arguments"
            ),
        ));
    }
    match (&task.run, &task.argv) {
        (None, None) => out.push(
            Finding::error(
                format!("{tp}/id"),
                format!(
                    "task `{name}` has neither `run` nor `argv` (nor `worker`): one of them is required"
                ),
            )
            .help("add `\"run\": \"<command line>\"` or `\"argv\": [\"<program>\", ...]`"),
        ),
        (Some(_), Some(_)) => out.push(
            Finding::error(
                format!("{tp}/argv"),
                format!("task `{name}` has both `run` and `argv`: keep one"),
            )
            .help("remove one of them"),
        ),
        (Some(r), None) if r.trim().is_empty() => out.push(
            Finding::error(
                format!("{tp}/run"),
                format!("task `{name}` has an empty `run`"),
            )
            .help("write the command line to run"),
        ),
        (None, Some(a)) if a.is_empty() => out.push(
            Finding::error(
                format!("{tp}/argv"),
                format!("task `{name}` has an empty `argv`"),
            )
            .help("list the program and its arguments"),
        ),
        (None, Some(a)) if a[0].is_empty() => out.push(
            Finding::error(
                format!("{tp}/argv/0"),
                format!("task `{name}` has an empty program name in `argv`"),
            )
            .help("put the program first in `argv`"),
        ),
        _ => {}
    }
}

/// `regex_ok`: patterns already known to compile. Generated plans repeat
/// the same few guardrails on thousands of tasks; compile each once.
pub(super) fn check_task<'p>(
    task: &'p Task,
    tp: &str,
    name: &str,
    workers: &BTreeMap<String, WorkerDef>,
    regex_ok: &mut HashSet<&'p str>,
    out: &mut Vec<Finding>,
) {
    check_command(task, tp, name, workers, out);
    check_jobserver(task, tp, name, out);
    if let Some(cwd) = &task.cwd
        && let Some(p) = relative_path_problem(cwd)
    {
        out.push(
            Finding::error(
                format!("{tp}/cwd"),
                format!("cwd `{cwd}` of task `{name}` {p}"),
            )
            .help("use a directory inside the worktree, relative to its root"),
        );
    }
    check_limit(
        task.timeout_s,
        format!("{tp}/timeout_s"),
        &format!("timeout_s of task `{name}`"),
        out,
    );
    check_env(task.env.keys(), tp, &format!("task `{name}`"), out);
    let g = &task.guardrails;
    for (key, list) in [
        ("fail_on", &g.fail_on),
        ("quarantine_on", &g.quarantine_on),
        ("require", &g.require),
    ] {
        for (i, re) in list.iter().enumerate() {
            if regex_ok.contains(re.as_str()) {
                continue;
            }
            match regex::Regex::new(re) {
                Ok(_) => {
                    regex_ok.insert(re);
                }
                Err(e) => {
                    // regex's text spans lines (pattern, caret, "error: ..."); keep one line.
                    let text = e.to_string();
                    let e = text
                        .lines()
                        .rev()
                        .find_map(|l| l.strip_prefix("error: "))
                        .unwrap_or_else(|| text.lines().next().unwrap_or_default());
                    out.push(Finding::error(
                        format!("{tp}/guardrails/{key}/{i}"),
                        format!(
                            "guardrails.{key} regex `{re}` of task `{name}` does not compile: {e}"
                        ),
                    )
.help("fix the regex (Rust regex syntax; escape `\\` as `\\\\` in JSON)"));
                }
            }
        }
    }
}
