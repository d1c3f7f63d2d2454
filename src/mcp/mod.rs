//! `mpw mcp`: a Model Context Protocol server over stdio, so that an AI
//! assistant can check, run, watch and integrate plans itself.
//!
//! Every tool runs the `mpw` binary itself with the matching subcommand and
//! `--json` (see [`invoke`]), so a tool does exactly what the command does,
//! with the same messages and nothing more. Plan paths are confined to the
//! repository the server was started in ([`confine`]). The map of the code is
//! in `docs/ARCHITECTURE.md`.

mod confine;
mod invoke;
mod schema;
mod server;

pub use confine::confine;

use std::path::{Path, PathBuf};

/// Why the server could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    #[error(transparent)]
    Git(#[from] crate::git::GitError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("MCP session: {0}")]
    Protocol(String),
}

impl McpError {
    fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        McpError::Io {
            what: what.into(),
            source,
        }
    }
}

/// The repository the server serves and the binary it runs.
#[derive(Debug, Clone)]
pub struct Workspace {
    /// The worktree the server was started in, as given by git.
    pub root: PathBuf,
    /// `root`, canonicalised for the confinement check.
    pub canonical_root: PathBuf,
    /// Where the logs of detached runs go: `<git-common-dir>/mpw/mcp/`.
    pub log_dir: PathBuf,
    /// This very binary.
    pub exe: PathBuf,
}

impl Workspace {
    /// The repository around `repo` (default: the current directory).
    pub fn open(repo: Option<&Path>) -> Result<Workspace, McpError> {
        let start = match repo {
            Some(p) => p.to_path_buf(),
            None => std::env::current_dir().map_err(|e| McpError::io("current directory", e))?,
        };
        let info = crate::git::discover(&start)?;
        let canonical_root = std::fs::canonicalize(&info.workdir)
            .map_err(|e| McpError::io(info.workdir.display().to_string(), e))?;
        let layout = crate::store::Layout::new(&info.common_dir);
        let exe =
            std::env::current_exe().map_err(|e| McpError::io("locating the mpw binary", e))?;
        Ok(Workspace {
            root: info.workdir,
            canonical_root,
            log_dir: layout.root.join("mcp"),
            exe,
        })
    }
}

/// Serves MCP on stdin/stdout until the client closes the connection.
pub fn serve(repo: Option<&Path>) -> Result<(), McpError> {
    let ws = Workspace::open(repo)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| McpError::io("starting the async runtime", e))?;
    let r = rt.block_on(server::serve_stdio(ws));
    // Detached runs' output copiers may still be waiting: leave them.
    rt.shutdown_background();
    r
}
