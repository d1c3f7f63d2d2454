//! `mpw clean`: remove a run's worktrees (and, with `--branches`, the branches
//! of integrated workstreams), or those of every finished run (`--all`).
//! Work that exists nowhere else is kept unless `--force`.

use crate::git::{self, Excluded};
use crate::model::WorkstreamState;
use crate::runner::{RunError, open_repo};
use crate::store::Store;
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Default, Serialize)]
pub struct Cleaned {
    pub run_id: String,
    pub removed_worktrees: Vec<String>,
    pub deleted_branches: Vec<String>,
    /// What was kept, and why.
    pub kept: Vec<String>,
}

/// What a run still has on disk and whether it was merged back.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Leftovers {
    pub workstreams: usize,
    /// Workstreams INTEGRATED.
    pub integrated: usize,
    /// Worktrees still on disk or registered with git.
    pub worktrees: usize,
    /// Branches that still exist.
    pub branches: usize,
}

/// Count what `clean` would look at for `run`; `registered` is
/// `git::list_worktrees` of the main worktree (listed once for many runs).
pub fn leftovers(
    main: &Path,
    registered: &[git::WorktreeInfo],
    store: &Store,
    run: &str,
) -> Result<Leftovers, RunError> {
    let mut out = Leftovers::default();
    for ws in store.workstreams(run)? {
        out.workstreams += 1;
        out.integrated += usize::from(ws.state == WorkstreamState::Integrated);
        let path = PathBuf::from(&ws.worktree);
        if path.exists() || registered.iter().any(|w| w.path == path) {
            out.worktrees += 1;
        }
        if git::branch_tip(main, &ws.branch)?.is_some() {
            out.branches += 1;
        }
    }
    Ok(out)
}

pub fn clean(
    repo: Option<&Path>,
    run: Option<&str>,
    branches: bool,
    force: bool,
) -> Result<Cleaned, RunError> {
    let rc = open_repo(repo)?;
    let store = Store::open_existing(rc.layout.clone())?;
    let row = store.run_or_latest(run)?;
    // A coordinator still working on the run holds its lock.
    if crate::lock::is_held(&store.layout.run_lock(&row.id)) {
        return Err(RunError::StillRunning { run: row.id });
    }
    // The repository as found now (it may have moved since the run).
    let main = rc.info.main_workdir.clone();
    let mut out = Cleaned {
        run_id: row.id.clone(),
        ..Default::default()
    };
    let registered = git::list_worktrees(&main)?;
    let mut to_delete = Vec::new();
    for ws in store.workstreams(&row.id)? {
        let path = PathBuf::from(&ws.worktree);
        let is_registered = registered.iter().any(|w| w.path == path);
        if path.exists() || is_registered {
            let dirty = if path.exists() {
                git::changes(
                    &path,
                    // The plan is not at hand here: tool caches of the
                    // default list are not changes worth keeping a worktree for.
                    &Excluded::paths(ws.baseline.clone().unwrap_or_default())
                        .with_ignore(default_ignores()),
                )?
            } else {
                vec![]
            };
            if !dirty.is_empty() && !force {
                out.kept.push(format!(
                    "worktree {} has {} uncommitted change(s) ({}); kept (--force removes it)",
                    path.display(),
                    dirty.len(),
                    dirty
                        .iter()
                        .take(5)
                        .map(|c| c.path.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                continue;
            }
            git::remove_run_worktree(&main, &path)?;
            out.removed_worktrees
                .push(path.to_string_lossy().into_owned());
        }
        if branches && git::branch_tip(&main, &ws.branch)?.is_some() {
            if ws.state == WorkstreamState::Integrated || force {
                to_delete.push(ws.branch.clone());
            } else {
                out.kept.push(format!(
                    "branch {} ({}) is not integrated; kept (--force deletes it)",
                    ws.branch, ws.state
                ));
            }
        } else if !branches && git::branch_tip(&main, &ws.branch)?.is_some() {
            out.kept.push(format!(
                "branch {} kept (--branches deletes integrated ones)",
                ws.branch
            ));
        }
    }
    if !to_delete.is_empty() {
        git::delete_branches(&main, &to_delete)?;
        out.deleted_branches = to_delete;
    }
    // The run's folder of worktrees, then `<repo>.mpw/`, if now empty
    // (remove_dir fails on a folder that is not).
    let root = PathBuf::from(&row.worktree_root);
    let _ = std::fs::remove_dir(root.join(&row.id));
    let _ = std::fs::remove_dir(&root);
    Ok(out)
}

fn default_ignores() -> std::sync::Arc<git::IgnoreRules> {
    std::sync::Arc::new(git::IgnoreRules::new(true, []).expect("the default ignore list compiles"))
}

/// `clean --all`: every finished run (COMPLETED, FAILED, CANCELLED), or
/// those finished longer than `older_than` ago.
#[derive(Debug, Default, Serialize)]
pub struct CleanedAll {
    pub cleaned: Vec<Cleaned>,
    /// Runs left alone, and why.
    pub skipped: Vec<String>,
}

pub fn clean_all(
    repo: Option<&Path>,
    older_than: Option<std::time::Duration>,
    branches: bool,
    force: bool,
) -> Result<CleanedAll, RunError> {
    let rc = open_repo(repo)?;
    let store = Store::open_existing(rc.layout.clone())?;
    let now = chrono::Utc::now();
    let mut out = CleanedAll::default();
    for r in store.runs()? {
        // A RUNNING run may be resumed, even when its coordinator is gone.
        if !r.state.is_terminal() {
            out.skipped
                .push(format!("run {} is {}: not finished", r.id, r.state));
            continue;
        }
        if let Some(limit) = older_than {
            let ended = r.finished_at.as_deref().unwrap_or(&r.created_at);
            let age = chrono::DateTime::parse_from_rfc3339(ended)
                .map(|t| {
                    (now - t.with_timezone(&chrono::Utc))
                        .to_std()
                        .unwrap_or_default()
                })
                .unwrap_or_default();
            if age < limit {
                out.skipped.push(format!(
                    "run {} finished {ended}: newer than the limit",
                    r.id
                ));
                continue;
            }
        }
        out.cleaned.push(clean(repo, Some(&r.id), branches, force)?);
    }
    Ok(out)
}

/// `7d`, `12h`, `30m`, `45s`, `2w`: a whole number and a unit.
pub fn parse_age(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?}: expected a number and a unit, as in 7d or 12h"))?;
    let secs = match unit.trim() {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        u => return Err(format!("{u:?}: unknown unit; use s, m, h, d or w")),
    };
    Ok(std::time::Duration::from_secs(n.saturating_mul(secs)))
}

#[cfg(test)]
mod tests {
    use super::parse_age;
    use std::time::Duration;

    #[test]
    fn ages_read_as_a_number_and_a_unit() {
        assert_eq!(parse_age("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_age("12h"), Ok(Duration::from_secs(12 * 3600)));
        assert_eq!(parse_age("0s"), Ok(Duration::ZERO));
        assert!(parse_age("d").unwrap_err().contains("expected a number"));
        assert!(parse_age("3y").unwrap_err().contains("unknown unit"));
    }
}
