//! `.worktreeinclude` at the repository root: gitignore-syntax patterns of
//! ignored files (`.env`, local config) that each new worktree gets a copy
//! of, besides `globals.copy`. Only files git ignores are taken, so a copy
//! is never committed. See docs/ARCHITECTURE.md.

use crate::git::{self, GitError};
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use std::path::Path;

pub const FILE: &str = ".worktreeinclude";

#[derive(Debug, thiserror::Error)]
pub enum IncludeError {
    #[error("{}: {message}", .file.display())]
    Pattern {
        file: std::path::PathBuf,
        message: String,
    },
    #[error(transparent)]
    Git(#[from] GitError),
}

/// The ignored files and folders of the main worktree `main` that
/// `.worktreeinclude` names, relative to it with `/` separators, sorted.
/// Empty when there is no such file.
///
/// git reports a wholly ignored folder (`target/`) as one entry without
/// looking inside; it is copied whole when a pattern names it, and looked
/// into only when a pattern names a path below it (`target/local.cfg`), so
/// `.env` does not send a search through `node_modules/`.
pub fn paths_to_copy(main: &Path) -> Result<Vec<String>, IncludeError> {
    let file = main.join(FILE);
    let Ok(text) = std::fs::read_to_string(&file) else {
        return Ok(Vec::new());
    };
    let mut b = GitignoreBuilder::new(main);
    for (n, line) in text.lines().enumerate() {
        b.add_line(None, line).map_err(|e| IncludeError::Pattern {
            file: file.clone(),
            message: format!("line {}: {e}", n + 1),
        })?;
    }
    let matcher = b.build().map_err(|e| IncludeError::Pattern {
        file: file.clone(),
        message: e.to_string(),
    })?;
    // Anchored paths named below some folder: where an ignored folder is worth entering.
    let named: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('!'))
        .map(|l| l.trim_start_matches('/').to_string())
        .filter(|l| l.trim_end_matches('/').contains('/'))
        .collect();
    let mut out = Vec::new();
    for p in git::ignored_paths(main)? {
        look(main, &matcher, &named, &p.path, p.dir, &mut out);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn look(main: &Path, m: &Gitignore, named: &[String], rel: &str, dir: bool, out: &mut Vec<String>) {
    if m.matched_path_or_any_parents(rel, dir).is_ignore() {
        out.push(rel.to_string());
        return;
    }
    let prefix = format!("{}/", rel.trim_end_matches('/'));
    if !dir || !named.iter().any(|n| n.starts_with(&prefix)) {
        return;
    }
    let Ok(entries) = std::fs::read_dir(main.join(rel)) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
        look(main, m, named, &format!("{prefix}{name}"), is_dir, out);
    }
}
