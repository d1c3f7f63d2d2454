//! Plan files: parse (JSON/JSONC), validate, and the task DAG.

mod dag;
mod fix;
mod graph;
mod keys;
mod load;
mod source;
pub mod suggest;
mod types;
mod validate;

pub use fix::{Fixed, fix};
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
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub struct Location {
    pub file: PathBuf,
    pub line: usize,
    pub col: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One problem found in a plan.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub struct Diagnostic {
    pub severity: Severity,
    /// JSON pointer of the culprit, e.g. `/workstreams/1/tasks/0/id`.
    pub pointer: String,
    /// Null when the file could not be read.
    pub location: Option<Location>,
    pub message: String,
    /// One line saying what to do about it ("did you mean `depends_on`?").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
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
        }?;
        match &self.help {
            Some(h) => write!(f, "\n  help: {h}"),
            None => Ok(()),
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

/// `mpw plan check --json`: the verdict, and for a valid plan what a run of
/// it would use. The MCP server advertises this type's schema.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
pub struct CheckReport {
    pub ok: bool,
    /// Every error, with its location (when `ok` is false).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<Diagnostic>,
    /// The plan with defaults applied (when `ok`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<Plan>,
    /// Workstreams, tasks, levels and the critical path (when `ok`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
    /// What each new worktree gets copied from the main one (when `ok`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub copy: Option<Copies>,
    pub warnings: Vec<Diagnostic>,
}

/// Untracked files copied into each new worktree.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
pub struct Copies {
    /// The plan's `globals.copy` patterns.
    pub globals: Vec<String>,
    /// The paths `.worktreeinclude` names.
    pub worktreeinclude: Vec<String>,
}

impl CheckReport {
    /// A valid plan.
    pub fn valid(loaded: &Loaded, worktreeinclude: Vec<String>) -> Self {
        CheckReport {
            ok: true,
            errors: Vec::new(),
            plan: Some(loaded.plan.clone()),
            summary: Some(summary(loaded)),
            copy: Some(Copies {
                globals: loaded.plan.globals.copy.clone(),
                worktreeinclude,
            }),
            warnings: loaded.warnings.clone(),
        }
    }

    /// An invalid plan: its problems, errors apart from warnings.
    pub fn invalid(diags: &[Diagnostic]) -> Self {
        let (errors, warnings) = diags
            .iter()
            .cloned()
            .partition(|d| d.severity == Severity::Error);
        CheckReport {
            ok: false,
            errors,
            plan: None,
            summary: None,
            copy: None,
            warnings,
        }
    }
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

impl Dag {
    /// The tasks that depend on each task.
    pub fn dependants(&self) -> Vec<Vec<usize>> {
        dag::successors(self.tasks.iter().map(|t| t.deps.as_slice()))
    }
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

impl Loaded {
    /// Where the plan's repository is: `--repo`, else `globals.repo_root`
    /// relative to the plan file; `None` means the current directory.
    pub fn repo_dir(&self, cli_repo: Option<&std::path::Path>) -> Option<PathBuf> {
        match (cli_repo, &self.plan.globals.repo_root) {
            (Some(r), _) => Some(r.to_path_buf()),
            (None, Some(root)) => Some(
                self.path
                    .parent()
                    .unwrap_or_else(|| std::path::Path::new("."))
                    .join(root),
            ),
            (None, None) => None,
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions {
    /// Unknown keys are warnings, not errors.
    pub lenient: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_ok(text: &str) -> Loaded {
        parse_str(text, Path::new("t.jsonc"), LoadOptions::default())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn errors(text: &str) -> Vec<String> {
        match parse_str(text, Path::new("t.jsonc"), LoadOptions::default()) {
            Err(PlanError::Invalid(d)) => d.iter().map(|d| d.to_string()).collect(),
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    use std::path::Path;

    const STACKED: &str = r#"{
      "workstreams": [
        { "id": "B", "depends_on": ["A"], "tasks": [
            { "id": "T1", "run": "x" },
            { "id": "T2", "run": "x", "depends_on": ["T1", "C/T1"] } ] },
        { "id": "A", "tasks": [ { "id": "T1", "run": "x" }, { "id": "T2", "run": "x", "depends_on": ["T1"] } ] },
        { "id": "C", "tasks": [ { "id": "T1", "run": "x", "depends_on": ["A"] } ] }
      ]
    }"#;

    #[test]
    fn dag_semantics() {
        let l = load_ok(STACKED);
        let d = &l.dag;
        // global index: B/T1=0 B/T2=1 A/T1=2 A/T2=3 C/T1=4
        assert_eq!(d.ws_tasks, vec![0..2, 2..4, 4..5]);
        assert_eq!(d.ws_deps, vec![vec![1], vec![], vec![]]);
        assert_eq!(d.ws_order, vec![1, 0, 2]);
        // B/T1 waits for all of A (workstream depends_on)
        assert_eq!(d.tasks[0].deps, vec![2, 3]);
        // B/T2: T1 of its own, C/T1, and all of A
        assert_eq!(d.tasks[1].deps, vec![0, 2, 3, 4]);
        // C/T1: `A` names every task of A
        assert_eq!(d.tasks[4].deps, vec![2, 3]);
        assert_eq!(d.levels, vec![2, 3, 0, 1, 2]);
        assert_eq!(d.critical_path, vec![2, 3, 0, 1]);
        let s = summary(&l);
        assert_eq!(s.depth, 4);
        assert_eq!(s.critical_path, vec!["A/T1", "A/T2", "B/T1", "B/T2"]);
        assert_eq!(s.per_workstream[0].depends_on, vec!["A"]);
    }

    #[test]
    fn cycle_paths_are_printed_with_positions() {
        let e = errors(
            r#"{"workstreams": [
  {"id": "WS-1", "tasks": [{"id": "T1", "run": "x", "depends_on": ["WS-2/T1"]}]},
  {"id": "WS-2", "depends_on": ["WS-1"], "tasks": [{"id": "T1", "run": "x"}]}
]}"#,
        );
        assert_eq!(
            e[0],
            "t.jsonc:2:68: error: dependency cycle: WS-1/T1 -> WS-2/T1 -> WS-1/T1\n  \
             help: remove one of these `depends_on` entries"
        );
        let e = errors(
            r#"{"workstreams": [
  {"id": "A", "depends_on": ["B"], "tasks": [{"id": "T1", "run": "x", "depends_on": ["T2"]}, {"id": "T2", "run": "x", "depends_on": ["T1"]}]},
  {"id": "B", "depends_on": ["A"], "tasks": [{"id": "T1", "run": "x"}]}
]}"#,
        );
        // the workstream cycle once (not once per task pair), and the
        // independent task cycle inside A as well
        assert_eq!(e.len(), 2, "{e:#?}");
        assert!(
            e[0].contains("t.jsonc:2:30: error: workstream dependency cycle: A -> B -> A"),
            "{e:#?}"
        );
        assert!(
            e[1].contains("dependency cycle: A/T1 -> A/T2 -> A/T1"),
            "{e:#?}"
        );
    }

    #[test]
    fn a_task_id_that_is_also_a_workstream_id_is_the_task_with_a_warning() {
        let l = load_ok(
            r#"{"workstreams": [
  {"id": "A", "tasks": [{"id": "B", "run": "x"}, {"id": "T2", "run": "x", "depends_on": ["B"]}]},
  {"id": "B", "tasks": [{"id": "T1", "run": "x"}]}
]}"#,
        );
        assert_eq!(l.dag.tasks[1].deps, vec![0]);
        assert_eq!(l.warnings.len(), 1);
        assert!(
            l.warnings[0].message.contains("names both"),
            "{:?}",
            l.warnings
        );
    }

    #[test]
    fn broken_pieces_do_not_hide_the_other_errors() {
        let e = errors(
            r#"{"workstreams": [
  {"id": "A", "priority": "high", "tasks": [{"id": "T1", "run": "x", "retries": -1}, "oops", {"run": "x"}]},
  {"id": 7, "tasks": [{"id": "T1", "run": "x"}]},
  {"id": "C", "depends_on": ["a"], "tasks": [{"id": "T1", "run": "x", "depends_on": ["A/T2"]}]}
]}"#,
        );
        let first: Vec<&str> = e.iter().map(|d| d.lines().next().unwrap()).collect();
        assert_eq!(
            first,
            [
                "t.jsonc:2:27: error: `priority` of workstream `A`: invalid type: string \"high\", expected i64",
                "t.jsonc:2:81: error: `retries` of task `A/T1`: invalid value: integer `-1`, expected u32",
                "t.jsonc:2:86: error: task `A/#1`: invalid type: string \"oops\", expected struct Task",
                "t.jsonc:2:94: error: task `A/#2`: missing field `id`",
                "t.jsonc:3:10: error: `id` of workstream `#1`: invalid type: integer `7`, expected a string",
                "t.jsonc:4:30: error: workstream `C` depends on unknown workstream `a`",
                "t.jsonc:4:86: error: task `C/T1` depends on unknown task `A/T2`: workstream `A` has no task `T2`",
            ],
            "{e:#?}"
        );
        assert!(e[5].ends_with("help: did you mean `A`?"), "{}", e[5]);
    }

    #[test]
    fn jsonc_is_accepted_but_json5_looseness_is_not() {
        load_ok(
            "// c\n{ /* c */ \"workstreams\": [{\"id\": \"A\", \"tasks\": [{\"id\": \"T\", \"run\": \"x\",},],},], }",
        );
        for loose in [
            "{ workstreams: [] }",
            "{ 'workstreams': [] }",
            "{ \"workstreams\": [] \"name\": \"x\" }",
        ] {
            let e = errors(loose);
            assert!(e[0].starts_with("t.jsonc:1:"), "{loose}: {e:?}");
        }
    }

    #[test]
    fn utf8_columns_are_characters_and_bom_is_skipped() {
        let e = errors(
            "\u{feff}{\"name\": \"\u{e9}\u{e9}\", \"schema\": 3, \"workstreams\": [{\"id\": \"A\", \"tasks\": [{\"id\": \"T\", \"run\": \"x\"}]}]}",
        );
        assert!(
            e[0].starts_with("t.jsonc:1:26: error: unsupported `schema` 3"),
            "{e:?}"
        );
    }
}
