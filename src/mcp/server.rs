//! The MCP tools and resources, each one `mpw` subcommand.

use super::invoke::{self, Output};
use super::schema::*;
use super::{McpError, Workspace, confine};
use crate::integrate::{Forecast, Report as IntegrateReport};
use crate::model::Strategy;
use crate::plan::CheckReport;
use crate::store::RunStatus;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::schema_for_output;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolResult, ContentBlock, Implementation, JsonObject, ListResourceTemplatesResult,
    ListResourcesResult, PaginatedRequestParams, ReadResourceRequestParams, ReadResourceResponse,
    ReadResourceResult, Resource, ResourceContents, ResourceTemplate, ServerCapabilities,
    ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt, tool, tool_handler, tool_router};
use serde_json::Value;
use std::ffi::OsString;
use std::sync::Arc;

const INSTRUCTIONS: &str = "mpw runs plans of workstreams in parallel git worktrees and merges them back. \
Write a plan (see plan_schema), check it with plan_check until it has no errors, start it with run_start, \
poll run_status until its state is no longer RUNNING, read failing tasks' output with task_logs, \
then integrate_forecast and integrate. Every tool does what the mpw command of the same purpose does, \
in the repository this server was started in.";

const STATUS_URI: &str = "mpw://runs/{run}/run_status.json";
const EVENTS_URI: &str = "mpw://runs/{run}/events.jsonl";

#[derive(Clone)]
pub struct MpwServer {
    ws: Arc<Workspace>,
    tool_router: ToolRouter<Self>,
}

pub async fn serve_stdio(ws: Workspace) -> Result<(), McpError> {
    let server = MpwServer {
        ws: Arc::new(ws),
        tool_router: MpwServer::tool_router(),
    };
    let running = server
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| McpError::Protocol(e.to_string()))?;
    running
        .waiting()
        .await
        .map_err(|e| McpError::Protocol(e.to_string()))?;
    Ok(())
}

fn args<I, S>(items: I) -> Vec<OsString>
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    items.into_iter().map(Into::into).collect()
}

fn error(message: impl Into<String>) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(message.into())])
}

/// A command's JSON object on stdout is the structured result, also when
/// it exits 1 with one (a conflict in `integrate`, an invalid plan in
/// `plan check`): the assistant needs the details. Without one, the
/// command's error lines come back as a tool error.
fn json_result(out: std::io::Result<Output>) -> CallToolResult {
    match out {
        Err(e) => error(format!("running mpw: {e}")),
        Ok(out) => match serde_json::from_str::<Value>(&out.stdout) {
            Ok(v @ Value::Object(_)) => CallToolResult::structured(v),
            _ => error(out.message()),
        },
    }
}

/// `--name=value` when there is a value.
fn option(a: &mut Vec<OsString>, name: &str, value: Option<impl std::fmt::Display>) {
    if let Some(v) = value {
        a.push(format!("--{name}={v}").into());
    }
}

fn positional(a: &mut Vec<OsString>, values: &[&str]) {
    a.push("--".into());
    a.extend(values.iter().map(OsString::from));
}

fn out_schema<T: schemars::JsonSchema + 'static>() -> Arc<JsonObject> {
    schema_for_output::<T>()
}

impl MpwServer {
    /// `mpw` with `a`, then `-- RUN` when a run is given: after `--`
    /// nothing is read as an option.
    async fn call(&self, mut a: Vec<OsString>, run: Option<&str>) -> std::io::Result<Output> {
        if let Some(r) = run {
            positional(&mut a, &[r]);
        }
        invoke::run(&self.ws, &a).await
    }
}

#[tool_router]
impl MpwServer {
    /// The JSON Schema of the plan format: what a plan file may contain.
    #[tool(
        output_schema = out_schema::<JsonObject>(),
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn plan_schema(&self) -> CallToolResult {
        json_result(invoke::run(&self.ws, &args(["plan", "schema"])).await)
    }

    /// Validate a plan, given as text (`plan`) or as a file in the repository
    /// (`path`). Returns ok, or every error with its file, line and column.
    #[tool(
        output_schema = out_schema::<CheckReport>(),
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn plan_check(&self, Parameters(p): Parameters<PlanCheckIn>) -> CallToolResult {
        let mut a = args(["plan", "check", "--json"]);
        if p.strict == Some(true) {
            a.push("--strict".into());
        }
        match (p.plan, p.path) {
            (Some(text), None) => {
                // The command reads files: the text goes to a file of its own.
                let dir = match tempfile::tempdir() {
                    Ok(d) => d,
                    Err(e) => return error(format!("a temporary directory: {e}")),
                };
                let name = "inline-plan.jsonc";
                if let Err(e) = std::fs::write(dir.path().join(name), text) {
                    return error(format!("writing the plan text: {e}"));
                }
                positional(&mut a, &[name]);
                json_result(invoke::run_in(&self.ws, dir.path(), &a).await)
            }
            (None, Some(path)) => {
                let rel = match confine(&self.ws.root, &self.ws.canonical_root, &path) {
                    Ok(r) => r,
                    Err(m) => return error(m),
                };
                a.push("--".into());
                a.push(rel.into());
                json_result(invoke::run(&self.ws, &a).await)
            }
            _ => error("give either `plan` (the plan text) or `path` (a plan file), not both"),
        }
    }

    /// Start a run of a plan file in the background and return its id at
    /// once; follow it with run_status.
    #[tool(
        output_schema = out_schema::<RunStarted>(),
        annotations(read_only_hint = false, destructive_hint = false, open_world_hint = false)
    )]
    async fn run_start(&self, Parameters(p): Parameters<RunStartIn>) -> CallToolResult {
        let rel = match confine(&self.ws.root, &self.ws.canonical_root, &p.path) {
            Ok(r) => r,
            Err(m) => return error(m),
        };
        let mut a = Vec::new();
        option(&mut a, "max-concurrency", p.max_concurrency);
        for w in p.workstreams.unwrap_or_default() {
            a.push(format!("--workstream={w}").into());
        }
        a.push("--".into());
        a.push(rel.into());
        match invoke::start_run(&self.ws, &a).await {
            Err(e) => error(format!("starting mpw run: {e}")),
            Ok(Err(out)) => error(out.message()),
            Ok(Ok(s)) => CallToolResult::structured(serde_json::json!(RunStarted {
                run_id: s.run_id,
                log: s.log.display().to_string(),
            })),
        }
    }

    /// Run, workstream and task states of a run (default: the latest), as
    /// run_status.json. The run has ended when `state` is not RUNNING.
    #[tool(
        output_schema = out_schema::<RunStatus>(),
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn run_status(&self, Parameters(p): Parameters<RunIn>) -> CallToolResult {
        json_result(
            self.call(args(["status", "--json"]), p.run.as_deref())
                .await,
        )
    }

    /// A task's captured output (standard output, or standard error).
    #[tool(
        output_schema = out_schema::<TaskLogs>(),
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn task_logs(&self, Parameters(p): Parameters<TaskLogsIn>) -> CallToolResult {
        let stderr = p.stderr == Some(true);
        let mut a = args(["logs"]);
        option(&mut a, "attempt", p.attempt);
        if stderr {
            a.push("--stderr".into());
        }
        positional(&mut a, &[&p.run, &p.task]);
        let out = match invoke::run(&self.ws, &a).await {
            Ok(o) if o.code == Some(0) => o,
            Ok(o) => return error(o.message()),
            Err(e) => return error(format!("running mpw: {e}")),
        };
        let (text, lines, truncated) = tail(&out.stdout, p.tail);
        CallToolResult::structured(serde_json::json!(TaskLogs {
            run: p.run,
            task: p.task,
            attempt: p.attempt,
            stream: if stderr { "stderr" } else { "stdout" }.into(),
            text,
            lines,
            truncated,
        }))
    }

    /// Stop a run (its tasks are stopped and their work kept), then return
    /// its status.
    #[tool(
        output_schema = out_schema::<RunStatus>(),
        annotations(destructive_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    async fn run_cancel(&self, Parameters(p): Parameters<RunCancelIn>) -> CallToolResult {
        let mut a = args(["cancel"]);
        positional(&mut a, &[&p.run]);
        match invoke::run(&self.ws, &a).await {
            Ok(o) if o.code == Some(0) => {}
            Ok(o) => return error(o.message()),
            Err(e) => return error(format!("running mpw: {e}")),
        }
        json_result(self.call(args(["status", "--json"]), Some(&p.run)).await)
    }

    /// Which finished workstreams would merge cleanly into the target
    /// branch, which conflict with it or with each other, and on which
    /// paths. Merges in memory only: nothing moves.
    #[tool(
        output_schema = out_schema::<Forecast>(),
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn integrate_forecast(&self, Parameters(p): Parameters<ForecastIn>) -> CallToolResult {
        let mut a = args(["integrate", "--dry-run", "--json"]);
        option(&mut a, "into", p.into);
        json_result(self.call(a, p.run.as_deref()).await)
    }

    /// Merge a run's finished workstreams into a branch (default: the one
    /// the run started from), one at a time, in dependency order. A conflict
    /// or failed gate leaves the branch alone for that workstream. Fails at
    /// once if another integration holds the lock.
    #[tool(
        output_schema = out_schema::<IntegrateReport>(),
        annotations(destructive_hint = false, idempotent_hint = true, open_world_hint = false)
    )]
    async fn integrate(&self, Parameters(p): Parameters<IntegrateIn>) -> CallToolResult {
        let mut a = args(["integrate", "--json", "--no-wait"]);
        option(&mut a, "into", p.into);
        option(&mut a, "gate", p.gate);
        option(&mut a, "strategy", p.strategy.map(Strategy::as_str));
        json_result(self.call(a, p.run.as_deref()).await)
    }

    /// Write a pull request title and body per finished workstream, with
    /// the `gh pr create` line that would open it. Pushes nothing.
    #[tool(
        output_schema = out_schema::<PrPrepared>(),
        annotations(read_only_hint = false, destructive_hint = false, open_world_hint = false)
    )]
    async fn pr_prepare(&self, Parameters(p): Parameters<RunIn>) -> CallToolResult {
        match self.call(args(["pr", "--json"]), p.run.as_deref()).await {
            Err(e) => error(format!("running mpw: {e}")),
            Ok(out) => match serde_json::from_str::<Value>(&out.stdout) {
                // An object is what MCP accepts as a structured result.
                Ok(v @ Value::Array(_)) => {
                    CallToolResult::structured(serde_json::json!({ "drafts": v }))
                }
                _ => error(out.message()),
            },
        }
    }
}

/// The last `n` lines of `text` (all without `n`), the total line count,
/// and whether lines were left out.
fn tail(text: &str, n: Option<u32>) -> (String, u64, bool) {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let total = lines.len();
    let keep = n.map_or(total, |n| (n as usize).min(total));
    (lines[total - keep..].concat(), total as u64, keep < total)
}

/// `mpw://runs/<run>/<file>` → (run, file).
fn parse_uri(uri: &str) -> Option<(&str, &str)> {
    let rest = uri.strip_prefix("mpw://runs/")?;
    let (run, file) = rest.split_once('/')?;
    (!run.is_empty()).then_some((run, file))
}

fn resource_error(out: Output) -> ErrorData {
    // Exit 2 is a usage error: no such run.
    if out.code == Some(2) {
        ErrorData::resource_not_found(out.message(), None)
    } else {
        ErrorData::internal_error(out.message(), None)
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for MpwServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .build(),
        )
        .with_server_info(Implementation::new("mpw", env!("CARGO_PKG_VERSION")))
        .with_instructions(INSTRUCTIONS)
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let out = invoke::run(&self.ws, &args(["runs", "--json"]))
            .await
            .map_err(|e| ErrorData::internal_error(format!("running mpw: {e}"), None))?;
        let runs: Vec<Value> = match serde_json::from_str(&out.stdout) {
            Ok(v) => v,
            Err(_) => return Err(ErrorData::internal_error(out.message(), None)),
        };
        let mut items = Vec::new();
        for r in &runs {
            let Some(id) = r["run_id"].as_str() else {
                continue;
            };
            items.push(
                Resource::new(STATUS_URI.replace("{run}", id), format!("run {id}: status"))
                    .with_description("run_status.json: run, workstream and task states")
                    .with_mime_type("application/json"),
            );
            items.push(
                Resource::new(EVENTS_URI.replace("{run}", id), format!("run {id}: events"))
                    .with_description("events.jsonl: every state change, one JSON object a line")
                    .with_mime_type("application/jsonl"),
            );
        }
        Ok(ListResourcesResult::with_all_items(items))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(ListResourceTemplatesResult::with_all_items(vec![
            ResourceTemplate::new(STATUS_URI, "run status")
                .with_description("run_status.json of a run (id or unambiguous prefix)")
                .with_mime_type("application/json"),
            ResourceTemplate::new(EVENTS_URI, "run events")
                .with_description("events.jsonl of a run (id or unambiguous prefix)")
                .with_mime_type("application/jsonl"),
        ]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let uri = request.uri;
        let (run, a, mime) = match parse_uri(&uri) {
            Some((run, "run_status.json")) => (run, "status", "application/json"),
            Some((run, "events.jsonl")) => (run, "events", "application/jsonl"),
            _ => {
                return Err(ErrorData::resource_not_found(
                    format!("{uri}: not an mpw resource; expected {STATUS_URI} or {EVENTS_URI}"),
                    None,
                ));
            }
        };
        let mut argv = args([a, "--json"]);
        positional(&mut argv, &[run]);
        let out = invoke::run(&self.ws, &argv)
            .await
            .map_err(|e| ErrorData::internal_error(format!("running mpw: {e}"), None))?;
        if out.code != Some(0) {
            return Err(resource_error(out));
        }
        let contents = ResourceContents::text(out.stdout, uri).with_mime_type(mime);
        Ok(ReadResourceResult::new(vec![contents]).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines_and_says_so() {
        assert_eq!(tail("a\nb\nc\n", Some(2)), ("b\nc\n".into(), 3, true));
        assert_eq!(tail("a\nb", None), ("a\nb".into(), 2, false));
        assert_eq!(tail("a\n", Some(5)), ("a\n".into(), 1, false));
        assert_eq!(tail("", Some(0)), ("".into(), 0, false));
    }

    #[test]
    fn resource_uris_name_a_run_and_a_file() {
        assert_eq!(
            parse_uri("mpw://runs/01AB/run_status.json"),
            Some(("01AB", "run_status.json"))
        );
        assert_eq!(parse_uri("mpw://runs//events.jsonl"), None);
        assert_eq!(parse_uri("file:///etc/passwd"), None);
    }
}
