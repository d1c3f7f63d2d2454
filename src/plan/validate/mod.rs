//! Semantic checks of a deserialized plan, and the DAG when they pass.
//! Every problem is collected; nothing stops at the first one.

mod deps;
mod fields;
mod names;

pub use names::{branch_problem, id_problem, relative_path_problem};

use super::{Dag, Diagnostic, Plan, Severity};
use names::{ID_RULE, reserved_problem};
use std::collections::{HashMap, HashSet};

/// A problem before it has a line and column: the diagnostic, placed when
/// the plan's text is at hand (`load.rs`), and where to point.
#[derive(Debug, Clone)]
pub(crate) struct Finding {
    /// Its `pointer` names the culprit; its `location` is still unset.
    pub diag: Diagnostic,
    /// Point at the key of the last pointer segment rather than its value.
    pub at_key: bool,
    /// Pointer of an earlier place the message refers to ("first at …").
    pub related: Option<String>,
}

impl Finding {
    pub(crate) fn error(pointer: impl Into<String>, message: impl Into<String>) -> Self {
        Finding {
            diag: Diagnostic {
                severity: Severity::Error,
                pointer: pointer.into(),
                location: None,
                message: message.into(),
                help: None,
            },
            at_key: false,
            related: None,
        }
    }
    pub(crate) fn warning(pointer: impl Into<String>, message: impl Into<String>) -> Self {
        let mut f = Finding::error(pointer, message);
        f.diag.severity = Severity::Warning;
        f
    }
    pub(crate) fn help(mut self, help: impl Into<String>) -> Self {
        self.diag.help = Some(help.into());
        self
    }
    /// A help line when there is one.
    pub(crate) fn maybe_help(mut self, help: Option<String>) -> Self {
        self.diag.help = help.or(self.diag.help);
        self
    }
    fn or_help(mut self, help: &str) -> Self {
        self.diag.help.get_or_insert_with(|| help.to_string());
        self
    }
    /// Without a closer guess, the help line names what exists.
    fn or_list(self, what: &str, names: &[&str]) -> Self {
        if self.diag.help.is_some() || names.is_empty() {
            return self;
        }
        const SHOWN: usize = 8;
        let mut list: Vec<String> = names.iter().take(SHOWN).map(|n| format!("`{n}`")).collect();
        if names.len() > SHOWN {
            list.push(format!("and {} more", names.len() - SHOWN));
        }
        self.help(format!("known {what}: {}", list.join(", ")))
    }
    /// Help for `word`, not found among `names`: the closest name, written
    /// out by `full`, or else the list.
    fn suggest_among(
        self,
        word: &str,
        what: &str,
        names: &[&str],
        full: impl Fn(&str) -> String,
    ) -> Self {
        let guess = super::suggest::did_you_mean(word, names.iter().copied());
        self.maybe_help(guess.map(|c| format!("did you mean `{}`?", full(c))))
            .or_list(what, names)
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

/// Where each id stands: workstream id -> index, and per workstream task id -> index.
pub(super) struct Ids<'p> {
    ws: HashMap<&'p str, usize>,
    tasks: Vec<HashMap<&'p str, usize>>,
}

/// Runs every check; returns the DAG when no error was found.
pub(crate) fn validate(plan: &Plan, out: &mut Vec<Finding>) -> Option<Dag> {
    let errors_before = out
        .iter()
        .filter(|f| f.diag.severity == Severity::Error)
        .count();
    fields::check_plan(plan, out);
    let ids = check_ids(plan, out);
    deps::dag(plan, &ids, errors_before, out)
}

/// Ids (fit, not reserved, unique), with each workstream's and task's own checks.
fn check_ids<'p>(plan: &'p Plan, out: &mut Vec<Finding>) -> Ids<'p> {
    let mut ws_index: HashMap<&str, usize> = HashMap::new();
    let mut branches: HashMap<&str, usize> = HashMap::new();
    let mut task_index: Vec<HashMap<&str, usize>> = Vec::with_capacity(plan.workstreams.len());
    let mut regex_ok: HashSet<&str> = HashSet::new();
    for (w, ws) in plan.workstreams.iter().enumerate() {
        let wp = format!("/workstreams/{w}");
        let what = format!("workstream id `{}`", ws.id);
        check_id(
            &ws.id,
            &format!("{wp}/id"),
            "workstream",
            &what,
            "WS-1",
            out,
        );
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
        fields::check_workstream(ws, w, &wp, &mut branches, out);
        let mut tasks: HashMap<&str, usize> = HashMap::with_capacity(ws.tasks.len());
        for (t, task) in ws.tasks.iter().enumerate() {
            let tp = format!("{wp}/tasks/{t}");
            let name = format!("{}/{}", ws.id, task.id);
            let what = format!("task id `{}` in workstream `{}`", task.id, ws.id);
            check_id(&task.id, &format!("{tp}/id"), "task", &what, "T1", out);
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
            fields::check_task(task, &tp, &name, &plan.globals.workers, &mut regex_ok, out);
        }
        task_index.push(tasks);
    }
    Ids {
        ws: ws_index,
        tasks: task_index,
    }
}

/// An id unfit for a branch or file name, or one of mpw's reserved names.
/// `what` names it in the message ("task id `T` in workstream `W`"), `kind`
/// in the reserved-name message; `example` is a fit id.
fn check_id(
    id: &str,
    pointer: &str,
    kind: &str,
    what: &str,
    example: &str,
    out: &mut Vec<Finding>,
) {
    if let Some(p) = id_problem(id) {
        out.push(
            Finding::error(
                pointer,
                format!("{what} is unfit for a branch or file name: it {p} ({ID_RULE})"),
            )
            .help(format!(
                "use letters, digits, `.`, `_`, `-`, e.g. `{example}`"
            )),
        );
    } else if let Some(m) = reserved_problem(kind, id) {
        out.push(Finding::error(pointer, m).help("ids starting with `_` are mpw's own; rename it"));
    }
}
