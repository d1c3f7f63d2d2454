//! The tools' inputs, and the shapes of their structured results.
//!
//! Results are the commands' `--json` output passed through unchanged,
//! described to the clients by the schemas of the types that print them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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
    pub strategy: Option<crate::model::Strategy>,
}

// ---- results ----
//
// The commands' `--json` output is passed through unchanged and described
// by the types that serialise it (`plan::CheckReport`, `store::RunStatus`,
// `integrate::Forecast`, `integrate::Report`, `pr::Draft`). Only the
// results the server makes itself are defined here.

/// A run started in the background.
#[derive(Debug, Serialize, JsonSchema)]
pub struct RunStarted {
    pub run_id: String,
    /// The coordinator's own output (progress lines and final summary).
    pub log: String,
}

#[derive(Debug, Serialize, JsonSchema)]
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

/// `mpw pr --json`: one draft per finished workstream. Nothing is pushed.
#[derive(Debug, Serialize, JsonSchema)]
pub struct PrPrepared {
    pub drafts: Vec<crate::pr::Draft>,
}
