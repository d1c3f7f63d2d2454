//! `mpw mcp`: the MCP server for AI assistants.

use super::{CliError, CliResult, Ctx, Exit};
use clap::Args;

#[derive(Debug, Args)]
#[command(after_help = "\
Tools: plan_schema, plan_check, run_start, run_status, task_logs, run_cancel,
integrate_forecast, integrate, pr_prepare. Resources: mpw://runs/<run>/run_status.json
and mpw://runs/<run>/events.jsonl. Plan paths must lie inside the repository.

VS Code (.vscode/mcp.json):
  { \"servers\": { \"mpw\": { \"type\": \"stdio\", \"command\": \"mpw\",
      \"args\": [\"--repo\", \"${workspaceFolder}\", \"mcp\"] } } }
Claude Code:
  claude mcp add mpw -- mpw mcp")]
pub struct McpArgs {}

impl From<crate::mcp::McpError> for CliError {
    fn from(e: crate::mcp::McpError) -> Self {
        use crate::mcp::McpError as M;
        match e {
            M::Git(g) => g.into(),
            e => CliError::env(e.to_string()),
        }
    }
}

pub fn mcp(_a: McpArgs, ctx: &Ctx) -> CliResult {
    crate::mcp::serve(ctx.repo.as_deref())?;
    Ok(Exit::Ok)
}
