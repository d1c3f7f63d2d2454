//! The tools' inputs, and the shapes of their structured results.
//!
//! Results are the commands' `--json` output passed through unchanged; the
//! types below only describe them (as JSON Schemas for the clients), listing
//! the fields an assistant needs. The objects may carry more fields.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

// ---- inputs ----

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(default)]
pub struct PlanCheckIn {
    /// The plan's text (JSON or JSONC). Locations in errors then name the
    /// file `inline-plan.jsonc`. Give this or `path`.
    pub plan: Option<String>,
    /// A plan file inside the repository, relative to its root. Give this or `plan`.
    pub path: Option<String>,
    /// Unknown keys are errors, not warnings.
    pub strict: Option<bool>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct RunStartIn {
    /// The plan file inside the repository, relative to its root.
    pub path: String,
    /// Run only these workstreams (and what they depend on).
    #[serde(default)]
    pub workstreams: Option<Vec<String>>,
    /// Tasks running at once (overrides globals.max_concurrency).
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub max_concurrency: Option<u32>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(default)]
pub struct RunIn {
    /// Run id or an unambiguous prefix (default: the latest run).
    pub run: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct RunCancelIn {
    /// Run id or an unambiguous prefix.
    pub run: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct TaskLogsIn {
    /// Run id or an unambiguous prefix.
    pub run: String,
    /// `WS/TASK`, e.g. `WS-1/T2` (setup commands: `WS/_setup1`, ...).
    pub task: String,
    /// Which attempt (default: the last one).
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub attempt: Option<u32>,
    /// Standard error instead of standard output.
    #[serde(default)]
    pub stderr: Option<bool>,
    /// Only the last N lines.
    #[serde(default)]
    pub tail: Option<u32>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(default)]
pub struct ForecastIn {
    /// Run id or an unambiguous prefix (default: the latest run).
    pub run: Option<String>,
    /// Branch to merge into (default: the branch the run started from).
    pub into: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StrategyIn {
    /// A two-parent merge commit per workstream.
    Merge,
    /// One single-parent commit per workstream.
    Squash,
}

impl StrategyIn {
    pub fn as_str(self) -> &'static str {
        match self {
            StrategyIn::Merge => "merge",
            StrategyIn::Squash => "squash",
        }
    }
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(default)]
pub struct IntegrateIn {
    /// Run id or an unambiguous prefix (default: the latest run).
    pub run: Option<String>,
    /// Branch to merge into (default: the branch the run started from).
    pub into: Option<String>,
    /// Command that must pass on each merge result, in a scratch checkout,
    /// before the branch moves (as `mpw integrate --gate`).
    pub gate: Option<String>,
    pub strategy: Option<StrategyIn>,
}

// ---- results ----
//
// Described as serialised: a field that the command may leave out is
// `skip_serializing_if`, so that the schema does not require it.

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct Location {
    pub file: String,
    pub line: u64,
    pub col: u64,
}

/// One problem found in a plan.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct Diagnostic {
    /// `error` or `warning`.
    pub severity: String,
    /// JSON pointer of the culprit, e.g. `/workstreams/1/tasks/0/id`.
    pub pointer: String,
    /// File, line and column (1-based); null when the file could not be read.
    pub location: Option<Location>,
    pub message: String,
}

/// `mpw plan check --json`.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct PlanCheckOut {
    pub ok: bool,
    /// Every error, with its location (when `ok` is false).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<Diagnostic>,
    #[serde(default)]
    pub warnings: Vec<Diagnostic>,
    /// The plan with defaults applied (when `ok`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<Value>,
    /// Workstreams, tasks, levels and the critical path (when `ok`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<Value>,
}

/// Task counts: `tasks` is the total, then one count per state present.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct Counts {
    pub tasks: u64,
    #[serde(flatten)]
    pub by_state: std::collections::BTreeMap<String, u64>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct TaskStatus {
    pub id: String,
    /// PENDING, READY, RUNNING, SUCCEEDED, FAILED, SKIPPED, CANCELLED, ...
    pub state: String,
    pub attempts: u64,
    pub exit_code: Option<i64>,
    pub commit: Option<String>,
    pub reason: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct WsStatus {
    pub id: String,
    /// PENDING, RUNNING, COMPLETED, FAILED, INTEGRATED, CONFLICT, ...
    pub state: String,
    pub branch: String,
    pub worktree: String,
    pub head: Option<String>,
    pub counts: Counts,
    /// Set once `integrate` has tried the workstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integration: Option<Value>,
    pub tasks: Vec<TaskStatus>,
}

/// `run_status.json` (schema 1), as `mpw status --json` prints it.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct RunStatus {
    pub schema: u64,
    pub run_id: String,
    pub name: Option<String>,
    /// RUNNING until the run ends; COMPLETED, FAILED, CANCELLED, ... then.
    pub state: String,
    pub repo: String,
    pub base: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub counts: Counts,
    pub workstreams: Vec<WsStatus>,
}

/// A run started in the background.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct RunStarted {
    pub run_id: String,
    /// The coordinator's own output (progress lines and final summary).
    pub log: String,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct TaskLogs {
    pub run: String,
    pub task: String,
    /// The attempt asked for; null means the last one.
    pub attempt: Option<u32>,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// The captured output (the last `tail` lines if asked).
    pub text: String,
    /// Lines in the whole log.
    pub lines: u64,
    /// True when `tail` left lines out.
    pub truncated: bool,
}

/// One workstream's result in an integration or its forecast.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct Outcome {
    pub workstream: String,
    /// INTEGRATED, CONFLICT, GATE_FAILED, SKIPPED, ...
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Conflicting paths.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<String>,
    pub detail: String,
}

/// `mpw integrate --json`.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct IntegrateReport {
    pub run_id: String,
    pub into: String,
    pub strategy: String,
    /// The target's commit before and after.
    pub before: String,
    pub after: String,
    pub outcomes: Vec<Outcome>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct PairConflict {
    pub a: String,
    pub b: String,
    pub paths: Vec<String>,
}

/// `mpw integrate --dry-run --json`: nothing moves.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct Forecast {
    pub run_id: String,
    pub into: String,
    /// The target's commit.
    pub target: String,
    /// Each candidate merged alone onto the target: its conflicting paths.
    pub against_target: std::collections::BTreeMap<String, Vec<String>>,
    /// Pairs of candidates that conflict with each other.
    pub pairs: Vec<PairConflict>,
    /// Candidates merged one after another in integration order.
    pub sequence: Vec<Outcome>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct PrDraft {
    pub workstream: String,
    pub title: String,
    /// Branch the PR merges into.
    pub base: String,
    pub head: String,
    /// The PR body, written to a file.
    pub body_file: String,
    /// The `gh pr create` arguments that would open it.
    pub gh: Vec<String>,
}

/// `mpw pr --json`: one draft per finished workstream. Nothing is pushed.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct PrPrepared {
    pub drafts: Vec<PrDraft>,
}
