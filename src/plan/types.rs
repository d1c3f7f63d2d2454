//! The plan as users write it (schema 1; docs/ARCHITECTURE.md, "How a plan flows"). The JSON Schema
//! printed by `mpw plan schema` is derived from these types. An unset `Option` is left out when
//! a plan is written (`skip_serializing_none`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;
use std::collections::BTreeMap;

pub type Metadata = serde_json::Map<String, serde_json::Value>;

/// Ids in the JSON Schema (ECMA-262 regex): `[A-Za-z0-9._-]{1,64}`, no `..`,
/// no leading `-` or `.`, no trailing `.` or `.lock`. `mpw plan check` says why.
const ID_PATTERN: &str = r"^(?!.*\.\.)(?!.*\.$)(?!.*\.lock$)[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$";

#[skip_serializing_none]
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[schemars(
    title = "mpw plan",
    description = "A plan of workstreams for mpw (schema 1)"
)]
pub struct Plan {
    /// Link to this schema, for editors.
    #[serde(rename = "$schema")]
    pub schema_url: Option<String>,
    /// Schema version of the plan format; only 1 exists.
    #[schemars(range(min = 1, max = 1))]
    pub schema: Option<u32>,
    /// Run id; a ULID is generated when absent.
    #[schemars(regex(pattern = ID_PATTERN))]
    pub run_id: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    /// Revision the workstreams start from; default HEAD.
    pub base: Option<String>,
    #[serde(default)]
    pub globals: Globals,
    pub workstreams: Vec<Workstream>,
    pub metadata: Option<Metadata>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct Globals {
    /// Repository root, relative to the plan file; `--repo` overrides.
    pub repo_root: Option<String>,
    /// Tasks running at once in the whole run (default 3).
    #[schemars(range(min = 1))]
    pub max_concurrency: Option<u32>,
    /// Of which class "cpu" at most this many (default: max_concurrency).
    #[schemars(range(min = 1))]
    pub cpu_slots: Option<u32>,
    /// Of which class "io" at most this many (default: max_concurrency).
    #[schemars(range(min = 1))]
    pub io_slots: Option<u32>,
    /// Where worktrees go; default `<main worktree>.mpw` beside the main worktree.
    pub worktree_root: Option<String>,
    pub shell: Option<Shell>,
    /// Default timeout of a task, in seconds (default 1800).
    #[schemars(range(min = 1))]
    pub timeout_s: Option<u64>,
    /// Default number of extra attempts of a failing task (default 0).
    pub retries: Option<u32>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Untracked files copied from the main worktree into each new worktree; never committed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub copy: Vec<String>,
    /// Commands run once in each new worktree before its tasks; what they leave is never committed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub setup: Vec<String>,
    /// Paths (gitignore syntax) never committed, never counted as a change,
    /// never quarantining a task; on top of the repository's own ignore rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignore: Vec<String>,
    /// Also ignore well-known tool output (`__pycache__/`, `*.py[co]`,
    /// `.pytest_cache/`, `.mypy_cache/`, `.ruff_cache/`, `.tox/`,
    /// `node_modules/.cache/`, `.DS_Store`, `Thumbs.db`); default true.
    pub ignore_defaults: Option<bool>,
    /// Pass the run's jobserver to cpu-class tasks (default true); see README,
    /// "Slots, jobserver and the machine pool".
    pub jobserver: Option<bool>,
    /// Warm worker pools, by name; a task names one in `worker`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub workers: BTreeMap<String, WorkerDef>,
    pub metadata: Option<Metadata>,
}

/// A pool of long-lived worker processes speaking Bazel's JSON
/// persistent-worker protocol. Exactly one of `argv` and `adapter`.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct WorkerDef {
    /// Program and arguments of a worker process.
    #[schemars(length(min = 1))]
    pub argv: Option<Vec<String>>,
    /// An adapter carried by mpw; "python" runs `python ARGS` requests in one interpreter.
    pub adapter: Option<Adapter>,
    /// Interpreter of the adapter (default `python3`, `python` on Windows).
    #[schemars(length(min = 1))]
    pub python: Option<Vec<String>>,
    /// Most worker processes alive at once (default: cpu_slots or io_slots of its class).
    #[schemars(range(min = 1))]
    pub max: Option<u32>,
    /// The slot class its requests use (default cpu).
    pub class: Option<TaskClass>,
    /// Extra environment of the worker process.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Recycle a worker after this many requests (0 = never).
    #[serde(default)]
    pub max_requests: u64,
    /// Seconds a new worker has to answer its first (empty) request (default 30).
    #[schemars(range(min = 1))]
    pub startup_timeout_s: Option<u64>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Adapter {
    Python,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Shell {
    Sh,
    Bash,
    Pwsh,
    Cmd,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct Workstream {
    /// `[A-Za-z0-9._-]{1,64}`, no `..`, unique.
    #[schemars(regex(pattern = ID_PATTERN))]
    pub id: String,
    pub name: Option<String>,
    pub description: Option<String>,
    /// Workstream ids whose result this one starts from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// Integration order among ready workstreams (lower first).
    #[serde(default)]
    pub priority: i64,
    /// Branch name; default `mpw/<run_id>/<ws_id>`.
    pub branch: Option<String>,
    /// Globs of the paths its tasks may change; a change elsewhere quarantines the task.
    pub allowed_paths: Option<Vec<String>>,
    /// Setup commands of this workstream, run after the global ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub setup: Vec<String>,
    /// Ignore patterns of this workstream, after `globals.ignore`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignore: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    pub tasks: Vec<Task>,
    pub metadata: Option<Metadata>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct Task {
    /// Unique within its workstream; same character rules as workstream ids.
    #[schemars(regex(pattern = ID_PATTERN))]
    pub id: String,
    pub name: Option<String>,
    /// Command line run through the shell. Exactly one of `run`, `argv` and `worker`.
    pub run: Option<String>,
    /// Program and arguments, run without a shell.
    #[schemars(length(min = 1))]
    pub argv: Option<Vec<String>>,
    /// Name of a worker pool of `globals.workers` that runs `args`.
    pub worker: Option<String>,
    /// The request's arguments, for `worker` tasks (e.g. `["-m", "pkg.step"]`).
    pub args: Option<Vec<String>>,
    /// Task ids of the same workstream (`T0`), tasks of another (`WS-2/T3`) or whole workstreams (`WS-2`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    #[serde(default)]
    pub class: TaskClass,
    #[schemars(range(min = 1))]
    pub timeout_s: Option<u64>,
    pub retries: Option<u32>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Working directory relative to the worktree.
    pub cwd: Option<String>,
    /// May run beside other read-only tasks of its workstream; must change nothing.
    #[serde(default)]
    pub read_only: bool,
    /// Its failure fails nothing else.
    #[serde(default)]
    pub allow_failure: bool,
    #[serde(default)]
    pub guardrails: Guardrails,
    /// For a cpu-class task: pass it the run's jobserver (MAKEFLAGS,
    /// CARGO_MAKEFLAGS); default `globals.jobserver`.
    pub jobserver: Option<bool>,
    pub commit_message: Option<String>,
    pub metadata: Option<Metadata>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum TaskClass {
    Cpu,
    #[default]
    Io,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct Guardrails {
    /// Regexes on stdout+stderr; a match fails the task.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fail_on: Vec<String>,
    /// Regexes on stdout+stderr; a match quarantines the task's work.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quarantine_on: Vec<String>,
    /// Regexes that must each match somewhere in the output, or the task fails.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub require: Vec<String>,
}
