//! Dependencies: each `depends_on` entry resolved, cycles found, the task
//! DAG built.

use super::{Finding, Ids};
use crate::plan::dag;
use crate::plan::suggest;
use crate::plan::{Dag, Plan, Severity, TaskNode, Workstream};

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

/// Resolves every `depends_on`, reports cycles, and builds the DAG when the
/// plan has no more errors than `errors_before`.
pub(super) fn dag(
    plan: &Plan,
    ids: &Ids,
    errors_before: usize,
    out: &mut Vec<Finding>,
) -> Option<Dag> {
    let (ws_index, task_index) = (&ids.ws, &ids.tasks);
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
                            let f = Finding::error(
                                p,
                                format!("{who} depends on `{d}` of unknown workstream `{wid}`"),
                            );
                            let full = |w: &str| format!("{w}/{tid}");
                            out.push(f.suggest_among(wid, "workstreams", &ws_ids, full));
                            None
                        }
                        Some(&x) => match task_index[x].get(tid) {
                            None => {
                                let ids = task_ids(&plan.workstreams[x]);
                                let f = Finding::error(
                                    p,
                                    format!(
                                        "{who} depends on unknown task `{d}`: workstream `{wid}` has no task `{tid}`"
                                    ),
                                );
                                let what = format!("tasks of `{wid}`");
                                let full = |t: &str| format!("{wid}/{t}");
                                out.push(f.suggest_among(tid, &what, &ids, full));
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

    let errors_after = out
        .iter()
        .filter(|f| f.diag.severity == Severity::Error)
        .count();
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
