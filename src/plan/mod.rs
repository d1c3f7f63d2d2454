//! Plan files: parse (JSON/JSONC), validate, and the task DAG.

mod dag;
mod graph;
mod load;
mod source;
mod types;
mod validate;

pub use graph::{GraphFormat, Summary, WorkstreamSummary, graph, summary, task_name};
pub use load::{load, parse_str};
pub use types::*;
pub use validate::{branch_problem, id_problem, relative_path_problem};

/// JSON Schema (draft 2020-12) of the plan format, derived from the types.
pub fn schema() -> serde_json::Value {
    schemars::schema_for!(Plan).to_value()
}

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

/// Where in the plan file something is (1-based).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Location {
    pub file: PathBuf,
    pub line: usize,
    pub col: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One problem found in a plan.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    /// JSON pointer of the culprit, e.g. `/workstreams/1/tasks/0/id`.
    pub pointer: String,
    pub location: Option<Location>,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        match &self.location {
            Some(l) => write!(
                f,
                "{}:{}:{}: {sev}: {}",
                l.file.display(),
                l.line,
                l.col,
                self.message
            ),
            None => write!(f, "{sev}: {}", self.message),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("cannot read plan {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Parse or validation problems; all of them, errors first.
    #[error("{}", render(.0))]
    Invalid(Vec<Diagnostic>),
}

fn render(d: &[Diagnostic]) -> String {
    let errors = d.iter().filter(|d| d.severity == Severity::Error).count();
    let mut s: Vec<String> = d.iter().map(|d| d.to_string()).collect();
    s.push(format!("plan is invalid: {errors} error(s)"));
    s.join("\n")
}

/// The task DAG with every dependency resolved to indices.
///
/// Global task index: workstreams in plan order, tasks in plan order within each.
#[derive(Debug, Clone, Default)]
pub struct Dag {
    pub tasks: Vec<TaskNode>,
    /// Global task indices of each workstream's tasks.
    pub ws_tasks: Vec<Range<usize>>,
    /// Workstreams each workstream depends on (its `depends_on`), as indices.
    pub ws_deps: Vec<Vec<usize>>,
    /// Workstream indices in a topological order (dependencies first, then plan order).
    pub ws_order: Vec<usize>,
    /// Level of each task: 0 for tasks without dependencies.
    pub levels: Vec<usize>,
    /// Longest chain of tasks, as global indices, first to last.
    pub critical_path: Vec<usize>,
}

#[derive(Debug, Clone)]
pub struct TaskNode {
    pub ws: usize,
    pub task: usize,
    /// Global indices this task waits for: its own `depends_on` (a `WS` entry
    /// expands to every task of WS) plus every task of the workstreams its
    /// workstream depends on.
    pub deps: Vec<usize>,
}

/// A parsed and valid plan.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub path: PathBuf,
    pub plan: Plan,
    pub dag: Dag,
    /// Unknown keys and other non-fatal findings.
    pub warnings: Vec<Diagnostic>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions {
    /// Unknown keys are errors, not warnings.
    pub strict: bool,
}
