//! Semantic checks of a deserialized plan, and the DAG when they pass.
//! Every problem is collected; nothing stops at the first one.

use super::dag;
use super::source::esc;
use super::suggest;
use super::{Dag, Plan, Severity, TaskNode, WorkerDef, Workstream};
use std::collections::{BTreeMap, HashMap, HashSet};

/// A problem before it has a line and column.
#[derive(Debug, Clone)]
pub(crate) struct Finding {
    pub severity: Severity,
    /// JSON pointer of the culprit.
    pub pointer: String,
    /// Point at the key of the last pointer segment rather than its value.
    pub at_key: bool,
    pub message: String,
    /// Pointer of an earlier place the message refers to ("first at …").
    pub related: Option<String>,
    /// What to do about it, in one line.
    pub help: Option<String>,
}

impl Finding {
    pub(crate) fn error(pointer: impl Into<String>, message: impl Into<String>) -> Self {
        Finding {
            severity: Severity::Error,
            pointer: pointer.into(),
            at_key: false,
            message: message.into(),
            related: None,
            help: None,
        }
    }
    pub(crate) fn warning(pointer: impl Into<String>, message: impl Into<String>) -> Self {
        Finding {
            severity: Severity::Warning,
            ..Finding::error(pointer, message)
        }
    }
    pub(crate) fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
    /// A help line when there is one.
    pub(crate) fn maybe_help(mut self, help: Option<String>) -> Self {
        self.help = help.or(self.help);
        self
    }
    fn or_help(mut self, help: &str) -> Self {
        self.help.get_or_insert_with(|| help.to_string());
        self
    }
    /// Without a closer guess, the help line names what exists.
    fn or_list(self, what: &str, names: &[&str]) -> Self {
        if self.help.is_some() || names.is_empty() {
            return self;
        }
        const SHOWN: usize = 8;
        let mut list: Vec<String> = names.iter().take(SHOWN).map(|n| format!("`{n}`")).collect();
        if names.len() > SHOWN {
            list.push(format!("and {} more", names.len() - SHOWN));
        }
        self.help(format!("known {what}: {}", list.join(", ")))
    }
    fn at_key(mut self) -> Self {
        self.at_key = true;
        self
    }
    fn related(mut self, pointer: String) -> Self {
        self.related = Some(pointer);
        self
    }
}

const ID_RULE: &str =
    "allowed: letters, digits, `.`, `_`, `-`, at most 64, no `..`, not starting with `-` or `.`";

/// Why `id` cannot be a workstream/task/run id (a branch component and a file name).
pub fn id_problem(id: &str) -> Option<String> {
    if id.is_empty() {
        return Some("is empty".into());
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Some(format!("contains {}", describe_char(c)));
    }
    if id.chars().count() > 64 {
        return Some(format!("is {} characters long", id.chars().count()));
    }
    if id.starts_with('-') || id.starts_with('.') {
        return Some(format!("starts with `{}`", &id[..1]));
    }
    if id.contains("..") {
        return Some("contains `..`".into());
    }
    if id.ends_with('.') {
        return Some("ends with `.`".into());
    }
    if id.ends_with(".lock") {
        return Some("ends with `.lock`".into());
    }
    None
}

/// Ids starting with `_` are mpw's own: its setup logs (`_setup1`), gate
/// logs (`logs/_integrate/`) and gate worktrees (`_gate-…`) live beside the
/// plan's ids, so no plan id may take one of their names.
fn reserved_problem(kind: &str, id: &str) -> Option<String> {
    id.starts_with('_').then(|| {
        format!(
            "{kind} id `{id}` starts with `_`, which mpw reserves for its own files \
             (setup logs `_setup<n>`, gate logs `_integrate`, gate worktrees `_gate-…`); rename it"
        )
    })
}

fn describe_char(c: char) -> String {
    match c {
        ' ' => "a space".into(),
        c if c.is_control() => format!("control character U+{:04X}", c as u32),
        c => format!("`{c}`"),
    }
}

/// Why `name` is not a valid git branch name (`git check-ref-format --branch`).
pub fn branch_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("is empty".into());
    }
    if name == "@" {
        return Some("is `@`".into());
    }
    if let Some(c) = name
        .chars()
        .find(|&c| c.is_control() || matches!(c, ' ' | '~' | '^' | ':' | '?' | '*' | '[' | '\\'))
    {
        return Some(format!("contains {}", describe_char(c)));
    }
    if name.starts_with('-') {
        return Some("starts with `-`".into());
    }
    if name.starts_with('/') || name.ends_with('/') {
        return Some("starts or ends with `/`".into());
    }
    if name.ends_with('.') {
        return Some("ends with `.`".into());
    }
    for bad in ["..", "//", "@{"] {
        if name.contains(bad) {
            return Some(format!("contains `{bad}`"));
        }
    }
    for comp in name.split('/') {
        if comp.starts_with('.') {
            return Some(format!("has a component starting with `.` (`{comp}`)"));
        }
        if comp.ends_with(".lock") {
            return Some(format!("has a component ending with `.lock` (`{comp}`)"));
        }
    }
    None
}

/// Why a path that must stay inside the worktree does not.
pub fn relative_path_problem(p: &str) -> Option<String> {
    let b = p.as_bytes();
    if p.starts_with('/')
        || p.starts_with('\\')
        || (b.len() >= 2 && b[1] == b':' && b[0].is_ascii_alphabetic())
    {
        return Some("is absolute; it must be relative to the worktree".into());
    }
    let mut depth = 0i64;
    for comp in p.split(['/', '\\']) {
        match comp {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return Some("escapes the worktree (`..` above its root)".into());
                }
            }
            _ => depth += 1,
        }
    }
    None
}

fn env_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("is empty")
    } else if name.contains('=') {
        Some("contains `=`")
    } else if name.contains('\0') {
        Some("contains a NUL character")
    } else {
        None
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

/// Ids worth suggesting: a stand-in for a missing id (`?missing-1`) is not.
fn task_ids(ws: &Workstream) -> Vec<&str> {
    ws.tasks
        .iter()
        .map(|t| t.id.as_str())
        .filter(|id| !id.starts_with('?'))
        .collect()
}

/// One resolved entry of a task's `depends_on`.
enum Dep {
    Task(usize),
    Workstream(usize),
}

/// Runs every check; returns the DAG when no error was found.
pub(crate) fn validate(plan: &Plan, out: &mut Vec<Finding>) -> Option<Dag> {
    let errors_before = out.iter().filter(|f| f.severity == Severity::Error).count();

    // --- plan level ---------------------------------------------------------
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

    // --- ids ----------------------------------------------------------------
    let mut ws_index: HashMap<&str, usize> = HashMap::new();
    let mut branches: HashMap<&str, usize> = HashMap::new();
    let mut task_index: Vec<HashMap<&str, usize>> = Vec::with_capacity(plan.workstreams.len());
    let mut regex_ok: HashSet<&str> = HashSet::new();
    for (w, ws) in plan.workstreams.iter().enumerate() {
        let wp = format!("/workstreams/{w}");
        if let Some(p) = id_problem(&ws.id) {
            out.push(
                Finding::error(
                    format!("{wp}/id"),
                    format!(
                        "workstream id `{}` is unfit for a branch or file name: it {p} ({ID_RULE})",
                        ws.id
                    ),
                )
                .help("use letters, digits, `.`, `_`, `-`, e.g. `WS-1`"),
            );
        } else if let Some(m) = reserved_problem("workstream", &ws.id) {
            out.push(
                Finding::error(format!("{wp}/id"), m)
                    .help("ids starting with `_` are mpw's own; rename it"),
            );
        }
        if let Some(&first) = ws_index.get(ws.id.as_str()) {
            out.push(
                Finding::error(
                    format!("{wp}/id"),
                    format!("duplicate workstream id `{}`", ws.id),
                )
                .help("give each workstream its own id")
                .related(format!("/workstreams/{first}/id")),
            );
        } else {
            ws_index.insert(&ws.id, w);
        }
        check_workstream(ws, w, &wp, &mut branches, out);
        let mut tasks: HashMap<&str, usize> = HashMap::with_capacity(ws.tasks.len());
        for (t, task) in ws.tasks.iter().enumerate() {
            let tp = format!("{wp}/tasks/{t}");
            let name = format!("{}/{}", ws.id, task.id);
            if let Some(p) = id_problem(&task.id) {
                out.push(Finding::error(
                    format!("{tp}/id"),
                    format!(
                        "task id `{}` in workstream `{}` is unfit for a branch or file name: it {p} ({ID_RULE})",
                        task.id, ws.id
                    ),
                )
.help("use letters, digits, `.`, `_`, `-`, e.g. `T1`"));
            } else if let Some(m) = reserved_problem("task", &task.id) {
                out.push(
                    Finding::error(format!("{tp}/id"), m)
                        .help("ids starting with `_` are mpw's own; rename it"),
                );
            }
            if let Some(&first) = tasks.get(task.id.as_str()) {
                out.push(
                    Finding::error(
                        format!("{tp}/id"),
                        format!("duplicate task id `{}` in workstream `{}`", task.id, ws.id),
                    )
                    .help("give each task of a workstream its own id")
                    .related(format!("{wp}/tasks/{first}/id")),
                );
            } else {
                tasks.insert(&task.id, t);
            }
            check_task(task, &tp, &name, &plan.globals.workers, &mut regex_ok, out);
        }
        task_index.push(tasks);
    }

    // --- dependencies -------------------------------------------------------
    let mut offsets = Vec::with_capacity(plan.workstreams.len());
    let mut total = 0usize;
    for ws in &plan.workstreams {
        offsets.push(total);
        total += ws.tasks.len();
    }
    let ws_ids: Vec<&str> = plan
        .workstreams
        .iter()
        .map(|w| w.id.as_str())
        .filter(|id| !id.starts_with('?'))
        .collect();
    // workstream-level
    let mut ws_deps: Vec<Vec<usize>> = Vec::with_capacity(plan.workstreams.len());
    for (w, ws) in plan.workstreams.iter().enumerate() {
        let mut deps = Vec::new();
        for (k, d) in ws.depends_on.iter().enumerate() {
            let p = format!("/workstreams/{w}/depends_on/{k}");
            match ws_index.get(d.as_str()) {
                None => out.push(
                    Finding::error(
                        p,
                        format!("workstream `{}` depends on unknown workstream `{d}`", ws.id),
                    )
                    .maybe_help(suggest::hint(
                        d,
                        ws_ids.iter().copied().filter(|id| *id != ws.id),
                    ))
                    .or_list("workstreams", &ws_ids),
                ),
                Some(&x) if x == w => out.push(
                    Finding::error(p, format!("workstream `{}` depends on itself", ws.id))
                        .help("remove this entry"),
                ),
                Some(&x) => {
                    if !deps.contains(&x) {
                        deps.push(x);
                    }
                }
            }
        }
        ws_deps.push(deps);
    }
    // task-level: explicit edges (target, entry index)
    let mut explicit: Vec<Vec<(Dep, usize)>> = Vec::with_capacity(total);
    for (w, ws) in plan.workstreams.iter().enumerate() {
        for (t, task) in ws.tasks.iter().enumerate() {
            let me = offsets[w] + t;
            let mut edges = Vec::new();
            for (k, d) in task.depends_on.iter().enumerate() {
                let p = format!("/workstreams/{w}/tasks/{t}/depends_on/{k}");
                let who = format!("task `{}/{}`", ws.id, task.id);
                let resolved = if let Some((wid, tid)) = d.split_once('/') {
                    match ws_index.get(wid) {
                        _ if wid.is_empty() || tid.is_empty() || tid.contains('/') => {
                            out.push(Finding::error(
                                p,
                                format!("{who} has a malformed dependency `{d}`: expected `TASK`, `WS/TASK` or `WS`"),
                            )
.help("write `TASK`, `WS/TASK` or `WS`"));
                            None
                        }
                        None => {
                            out.push(
                                Finding::error(
                                    p,
                                    format!("{who} depends on `{d}` of unknown workstream `{wid}`"),
                                )
                                .maybe_help(
                                    suggest::did_you_mean(wid, ws_ids.iter().copied())
                                        .map(|w| format!("did you mean `{w}/{tid}`?")),
                                )
                                .or_list("workstreams", &ws_ids),
                            );
                            None
                        }
                        Some(&x) => match task_index[x].get(tid) {
                            None => {
                                let ids = task_ids(&plan.workstreams[x]);
                                out.push(
                                    Finding::error(
                                        p,
                                        format!("{who} depends on unknown task `{d}`: workstream `{wid}` has no task `{tid}`"),
                                    )
                                    .maybe_help(
                                        suggest::did_you_mean(tid, ids.iter().copied())
                                            .map(|t| format!("did you mean `{wid}/{t}`?")),
                                    )
                                    .or_list(&format!("tasks of `{wid}`"), &ids),
                                );
                                None
                            }
                            Some(&y) => Some(Dep::Task(offsets[x] + y)),
                        },
                    }
                } else if let Some(&y) = task_index[w].get(d.as_str()) {
                    if let Some(&x) = ws_index.get(d.as_str())
                        && x != w
                    {
                        out.push(Finding::warning(
                            p.clone(),
                            format!(
                                "{who}: dependency `{d}` names both a task of `{}` and a workstream; \
                                 taken as the task (write `{d}/TASK` for the other workstream's tasks)",
                                ws.id
                            ),
                        ));
                    }
                    Some(Dep::Task(offsets[w] + y))
                } else if let Some(&x) = ws_index.get(d.as_str()) {
                    Some(Dep::Workstream(x))
                } else {
                    let mut own = task_ids(ws);
                    own.retain(|id| *id != task.id);
                    out.push(
                        Finding::error(
                            p,
                            format!(
                                "{who} depends on unknown task `{d}`: no task `{d}` in workstream `{}` and no workstream `{d}`",
                                ws.id
                            ),
                        )
                        .maybe_help(suggest::hint(d, own.iter().chain(&ws_ids).copied()))
                        .or_list(&format!("tasks of `{}`", ws.id), &own)
                        .or_help("remove this entry, or add the task it names"),
                    );
                    None
                };
                match resolved {
                    Some(Dep::Task(x)) if x == me => out.push(
                        Finding::error(
                            format!("/workstreams/{w}/tasks/{t}/depends_on/{k}"),
                            format!("{who} depends on itself"),
                        )
                        .help("remove this entry"),
                    ),
                    Some(Dep::Workstream(x)) if x == w => out.push(
                        Finding::error(
                            format!("/workstreams/{w}/tasks/{t}/depends_on/{k}"),
                            format!(
                                "{who} depends on its own workstream `{}` (and so on itself)",
                                ws.id
                            ),
                        )
                        .help("name a task of the workstream instead, or remove this entry"),
                    ),
                    Some(dep) => edges.push((dep, k)),
                    None => {}
                }
            }
            explicit.push(edges);
        }
    }

    // --- cycles -------------------------------------------------------------
    let ws_cycles = dag::cyclic_components(&ws_deps);
    let mut ws_comp = vec![usize::MAX; plan.workstreams.len()];
    for (c, comp) in ws_cycles.iter().enumerate() {
        for &w in comp {
            ws_comp[w] = c;
        }
        let cycle = dag::cycle_through(&ws_deps, comp);
        let (a, b) = (cycle[0], cycle[1]);
        let k = plan.workstreams[a]
            .depends_on
            .iter()
            .position(|d| ws_index.get(d.as_str()) == Some(&b))
            .unwrap_or(0);
        let text: Vec<&str> = cycle
            .iter()
            .map(|&w| plan.workstreams[w].id.as_str())
            .collect();
        out.push(
            Finding::error(
                format!("/workstreams/{a}/depends_on/{k}"),
                format!("workstream dependency cycle: {}", text.join(" -> ")),
            )
            .help("remove one of these `depends_on` entries"),
        );
    }

    let mut tasks = Vec::with_capacity(total);
    let mut deps_all: Vec<Vec<usize>> = Vec::with_capacity(total);
    let mut stamp = vec![usize::MAX; total];
    for (w, ws) in plan.workstreams.iter().enumerate() {
        for t in 0..ws.tasks.len() {
            let me = offsets[w] + t;
            let mut deps = Vec::new();
            let mut add = |x: usize, deps: &mut Vec<usize>| {
                if stamp[x] != me {
                    stamp[x] = me;
                    deps.push(x);
                }
            };
            for (dep, _) in &explicit[me] {
                match *dep {
                    Dep::Task(x) => add(x, &mut deps),
                    Dep::Workstream(x) => {
                        for y in offsets[x]..offsets[x] + plan.workstreams[x].tasks.len() {
                            add(y, &mut deps);
                        }
                    }
                }
            }
            for &x in &ws_deps[w] {
                // A workstream cycle is reported above; don't report it again per task.
                if ws_comp[w] != usize::MAX && ws_comp[w] == ws_comp[x] {
                    continue;
                }
                for y in offsets[x]..offsets[x] + plan.workstreams[x].tasks.len() {
                    add(y, &mut deps);
                }
            }
            deps.sort_unstable();
            deps_all.push(deps.clone());
            tasks.push(TaskNode {
                ws: w,
                task: t,
                deps,
            });
        }
    }
    let task_name = |g: usize| {
        let n = &tasks[g];
        let ws = &plan.workstreams[n.ws];
        format!("{}/{}", ws.id, ws.tasks[n.task].id)
    };
    let topo = dag::levels(&deps_all);
    if topo.is_none() {
        for comp in dag::cyclic_components(&deps_all) {
            let cycle = dag::cycle_through(&deps_all, &comp);
            let (a, b) = (cycle[0], cycle[1]);
            let (aw, at) = (tasks[a].ws, tasks[a].task);
            let bw = tasks[b].ws;
            let pointer = explicit[a]
                .iter()
                .find(|(d, _)| match *d {
                    Dep::Task(x) => x == b,
                    Dep::Workstream(x) => x == bw,
                })
                .map(|(_, k)| format!("/workstreams/{aw}/tasks/{at}/depends_on/{k}"))
                .or_else(|| {
                    plan.workstreams[aw]
                        .depends_on
                        .iter()
                        .position(|d| ws_index.get(d.as_str()) == Some(&bw))
                        .map(|k| format!("/workstreams/{aw}/depends_on/{k}"))
                })
                .unwrap_or_else(|| format!("/workstreams/{aw}/tasks/{at}/id"));
            let text: Vec<String> = cycle.iter().map(|&g| task_name(g)).collect();
            out.push(
                Finding::error(pointer, format!("dependency cycle: {}", text.join(" -> ")))
                    .help("remove one of these `depends_on` entries"),
            );
        }
    }

    let errors_after = out.iter().filter(|f| f.severity == Severity::Error).count();
    if errors_after > errors_before {
        return None;
    }
    let (_, levels) = topo?;
    let critical_path = dag::critical_path(&deps_all, &levels);
    let ws_order = dag::stable_topo(&ws_deps);
    let ws_tasks = plan
        .workstreams
        .iter()
        .enumerate()
        .map(|(w, ws)| offsets[w]..offsets[w] + ws.tasks.len())
        .collect();
    Some(Dag {
        tasks,
        ws_tasks,
        ws_deps,
        ws_order,
        levels,
        critical_path,
    })
}

fn check_workstream<'p>(
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
fn check_jobserver(task: &super::Task, tp: &str, name: &str, out: &mut Vec<Finding>) {
    if task.jobserver != Some(true) {
        return;
    }
    let why = if task.worker.is_some() {
        "a worker's request runs in a process started before it"
    } else if task.class != super::TaskClass::Cpu {
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
    task: &super::Task,
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
fn check_task<'p>(
    task: &'p super::Task,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        for ok in ["WS-1", "T1", "a.b_c-d", "x".repeat(64).as_str(), "1"] {
            assert_eq!(id_problem(ok), None, "{ok}");
        }
        for bad in [
            "", "a/b", "a b", "a..b", "-a", ".a", "a.", "a.lock", "a~", "a^", "a:", "a?", "a*",
            "a[", "a\\", "é",
        ] {
            assert!(id_problem(bad).is_some(), "{bad}");
        }
        assert!(id_problem(&"x".repeat(65)).is_some());
    }

    #[test]
    fn branches() {
        for ok in ["main", "feature/x", "mpw/run/WS-1", "a.b", "a@b"] {
            assert_eq!(branch_problem(ok), None, "{ok}");
        }
        for bad in [
            "",
            "@",
            "a..b",
            "a//b",
            "/a",
            "a/",
            "a.",
            "a.lock",
            "a/b.lock/c",
            "a@{b",
            "a b",
            "a~1",
            "a^",
            "a:b",
            "a?",
            "a*",
            "a[",
            "a\\b",
            "-a",
            "a/.b",
            "a\u{7}",
        ] {
            assert!(branch_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn relative_paths() {
        for ok in ["", ".", "sub/dir", "a/../b", "a/b/../.."] {
            assert_eq!(relative_path_problem(ok), None, "{ok}");
        }
        for bad in [
            "/abs",
            "\\abs",
            "C:\\x",
            "..",
            "a/../..",
            "../x",
            "a\\..\\..\\b",
        ] {
            assert!(relative_path_problem(bad).is_some(), "{bad}");
        }
    }
}
