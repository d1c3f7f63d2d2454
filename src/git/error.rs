use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("{}: not a git repository (or any parent up to the root)", .path.display())]
    NotARepo { path: PathBuf },
    #[error("{}: is a bare repository; mpw needs a repository with a worktree", .path.display())]
    Bare { path: PathBuf },
    #[error("{}: the repository has no commits yet; make a first commit, then run again", .path.display())]
    NoCommits { path: PathBuf },
    #[error("revision {rev:?} does not resolve to a commit")]
    UnknownRev { rev: String },
    #[error("reference {name} moved: expected {expected}, found {found}")]
    RefMoved {
        name: String,
        expected: String,
        found: String,
    },
    #[error("{} exists: another git process is working here, or one was killed; if none is running, remove the file and try again", .path.display())]
    Locked { path: PathBuf },
    #[error("{} is in use by another process, so {} cannot be removed; nothing was removed: close the program holding it, then try again", .file.display(), .worktree.display())]
    InUse { file: PathBuf, worktree: PathBuf },
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Anything gix reports, with what we were doing.
    #[error("{context}: {message}")]
    Gix { context: String, message: String },
}

impl GitError {
    pub fn gix(context: impl Into<String>, err: impl std::fmt::Display) -> Self {
        GitError::Gix {
            context: context.into(),
            message: err.to_string(),
        }
    }
}

/// `result.map_err(ctx("what we were doing"))`
pub(crate) fn ctx<E: std::fmt::Display>(context: impl Into<String>) -> impl FnOnce(E) -> GitError {
    let context = context.into();
    move |e| GitError::gix(context, e)
}

/// A removal's result, where finding `path` already gone counts as done.
pub(crate) fn removed(result: std::io::Result<()>, path: &std::path::Path) -> Result<(), GitError> {
    match result {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(GitError::Io {
            path: path.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}
