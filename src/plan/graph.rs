//! Summary of a loaded plan and its DAG as Graphviz dot or Mermaid.

use super::Loaded;
use serde::Serialize;
use std::collections::HashMap;
use std::fmt::Write as _;

/// What `mpw plan check` reports about a valid plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Summary {
    pub name: Option<String>,
    pub workstreams: usize,
    pub tasks: usize,
    pub per_workstream: Vec<WorkstreamSummary>,
    /// Number of levels of the task DAG.
    pub depth: usize,
    /// Longest chain of tasks, as `WS/T`, first to last.
    pub critical_path: Vec<String>,
    pub critical_path_len: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct WorkstreamSummary {
    pub id: String,
    pub tasks: usize,
    pub depends_on: Vec<String>,
}

/// Task `WS/T` name of a global task index.
pub fn task_name(loaded: &Loaded, g: usize) -> String {
    let n = &loaded.dag.tasks[g];
    let ws = &loaded.plan.workstreams[n.ws];
    format!("{}/{}", ws.id, ws.tasks[n.task].id)
}

pub fn summary(loaded: &Loaded) -> Summary {
    let plan = &loaded.plan;
    let dag = &loaded.dag;
    let critical_path: Vec<String> = dag
        .critical_path
        .iter()
        .map(|&g| task_name(loaded, g))
        .collect();
    Summary {
        name: plan.name.clone(),
        workstreams: plan.workstreams.len(),
        tasks: dag.tasks.len(),
        per_workstream: plan
            .workstreams
            .iter()
            .enumerate()
            .map(|(w, ws)| WorkstreamSummary {
                id: ws.id.clone(),
                tasks: ws.tasks.len(),
                depends_on: dag.ws_deps[w]
                    .iter()
                    .map(|&x| plan.workstreams[x].id.clone())
                    .collect(),
            })
            .collect(),
        depth: dag.levels.iter().max().map_or(0, |m| m + 1),
        critical_path_len: critical_path.len(),
        critical_path,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GraphFormat {
    #[default]
    Dot,
    Mermaid,
}

enum Edge {
    /// task → task (global indices; from is the dependency)
    Task(usize, usize),
    /// whole workstream → task
    WsToTask(usize, usize),
    /// workstream → workstream (`depends_on` of the second)
    Ws(usize, usize),
}

/// Edges as written in the plan (not the expanded DAG): a workstream
/// `depends_on` is one edge between clusters, not one per task pair.
fn edges(loaded: &Loaded) -> Vec<Edge> {
    let plan = &loaded.plan;
    let dag = &loaded.dag;
    let ws_index: HashMap<&str, usize> = plan
        .workstreams
        .iter()
        .enumerate()
        .map(|(i, w)| (w.id.as_str(), i))
        .collect();
    let find_task = |w: usize, t: &str| {
        plan.workstreams[w]
            .tasks
            .iter()
            .position(|x| x.id == t)
            .map(|i| dag.ws_tasks[w].start + i)
    };
    let mut out = Vec::new();
    for (w, deps) in dag.ws_deps.iter().enumerate() {
        for &d in deps {
            out.push(Edge::Ws(d, w));
        }
    }
    for (g, node) in dag.tasks.iter().enumerate() {
        let task = &plan.workstreams[node.ws].tasks[node.task];
        for d in &task.depends_on {
            let e = if let Some((wid, tid)) = d.split_once('/') {
                ws_index
                    .get(wid)
                    .and_then(|&x| find_task(x, tid))
                    .map(|x| Edge::Task(x, g))
            } else if let Some(x) = find_task(node.ws, d) {
                Some(Edge::Task(x, g))
            } else {
                ws_index.get(d.as_str()).map(|&x| Edge::WsToTask(x, g))
            };
            out.extend(e);
        }
    }
    out
}

/// Graphviz string escapes; a carriage return is dropped.
const DOT_ESCAPES: &[(char, &str)] = &[('"', "\\\""), ('\\', "\\\\"), ('\n', "\\n"), ('\r', "")];

/// Mermaid entity codes; a line break becomes a space.
const MERMAID_ESCAPES: &[(char, &str)] = &[
    ('"', "#quot;"),
    ('#', "#35;"),
    ('<', "#lt;"),
    ('>', "#gt;"),
    ('\n', " "),
    ('\r', " "),
];

/// `s` in double quotes, with each character of `escapes` replaced.
fn quoted(s: &str, escapes: &[(char, &str)]) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match escapes.iter().find(|(k, _)| *k == c) {
            Some((_, e)) => o.push_str(e),
            None => o.push(c),
        }
    }
    o.push('"');
    o
}

fn dot_str(s: &str) -> String {
    quoted(s, DOT_ESCAPES)
}

fn mermaid_label(s: &str) -> String {
    quoted(s, MERMAID_ESCAPES)
}

fn label(id: &str, name: Option<&str>) -> String {
    match name {
        Some(n) if !n.is_empty() => format!("{id}: {n}"),
        _ => id.to_string(),
    }
}

/// The task DAG, grouped by workstream; edges point from a dependency to
/// what waits for it.
pub fn graph(loaded: &Loaded, fmt: GraphFormat) -> String {
    match fmt {
        GraphFormat::Dot => dot(loaded),
        GraphFormat::Mermaid => mermaid(loaded),
    }
}

/// Each workstream (index, label) with its tasks (DAG index, label), in
/// plan order: the boxes both drawings nest.
fn clusters(loaded: &Loaded) -> impl Iterator<Item = (usize, String, Vec<(usize, String)>)> + '_ {
    let (plan, dag) = (&loaded.plan, &loaded.dag);
    plan.workstreams.iter().enumerate().map(move |(w, ws)| {
        let tasks = dag.ws_tasks[w]
            .clone()
            .map(|g| {
                let t = &ws.tasks[dag.tasks[g].task];
                (g, label(&t.id, t.name.as_deref()))
            })
            .collect();
        (w, label(&ws.id, ws.name.as_deref()), tasks)
    })
}

fn dot(loaded: &Loaded) -> String {
    let plan = &loaded.plan;
    let dag = &loaded.dag;
    let cluster = |w: usize| dot_str(&format!("cluster_{}", plan.workstreams[w].id));
    let node = |g: usize| dot_str(&task_name(loaded, g));
    let mut s = String::new();
    let title = plan.name.as_deref().unwrap_or("plan");
    let _ = writeln!(s, "digraph {} {{", dot_str(title));
    let _ = writeln!(
        s,
        "  graph [rankdir=LR, compound=true, label={}];",
        dot_str(title)
    );
    let _ = writeln!(s, "  node [shape=box, style=rounded];");
    for (w, ws_label, tasks) in clusters(loaded) {
        let _ = writeln!(s, "  subgraph {} {{", cluster(w));
        let _ = writeln!(s, "    label={};", dot_str(&ws_label));
        for (g, t) in tasks {
            let _ = writeln!(s, "    {} [label={}];", node(g), dot_str(&t));
        }
        let _ = writeln!(s, "  }}");
    }
    for e in edges(loaded) {
        let _ = match e {
            Edge::Task(a, b) => writeln!(s, "  {} -> {};", node(a), node(b)),
            Edge::WsToTask(x, b) => {
                let last = dag.ws_tasks[x].end - 1;
                writeln!(s, "  {} -> {} [ltail={}];", node(last), node(b), cluster(x))
            }
            Edge::Ws(x, w) => {
                let (last, first) = (dag.ws_tasks[x].end - 1, dag.ws_tasks[w].start);
                writeln!(
                    s,
                    "  {} -> {} [ltail={}, lhead={}, style=dashed];",
                    node(last),
                    node(first),
                    cluster(x),
                    cluster(w)
                )
            }
        };
    }
    s.push_str("}\n");
    s
}

fn mermaid(loaded: &Loaded) -> String {
    let dag = &loaded.dag;
    // Generated ids: plan ids may contain `-` and `.`, and `end` is a keyword.
    let node = |g: usize| format!("ws{}_t{}", dag.tasks[g].ws, dag.tasks[g].task);
    let mut s = String::from("flowchart LR\n");
    for (w, ws_label, tasks) in clusters(loaded) {
        let _ = writeln!(s, "  subgraph ws{w}[{}]", mermaid_label(&ws_label));
        for (g, t) in tasks {
            let _ = writeln!(s, "    {}[{}]", node(g), mermaid_label(&t));
        }
        s.push_str("  end\n");
    }
    for e in edges(loaded) {
        let _ = match e {
            Edge::Task(a, b) => writeln!(s, "  {} --> {}", node(a), node(b)),
            Edge::WsToTask(x, b) => writeln!(s, "  ws{x} --> {}", node(b)),
            Edge::Ws(x, w) => writeln!(s, "  ws{x} -.-> ws{w}"),
        };
    }
    s
}
