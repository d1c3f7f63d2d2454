//! `mpw mcp`: the MCP server for AI assistants.

use super::{CliError, CliResult, Ctx, Exit};
use clap::Args;

#[derive(Debug, Args)]
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
