//! `mpw clean`: remove a run's worktrees (and, with `--branches`, the branches
//! of integrated workstreams). Work that exists nowhere else is kept unless
//! `--force`.

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
                    &Excluded(
                        ws.baseline
                            .clone()
                            .unwrap_or_default()
                            .into_iter()
                            .collect(),
                    ),
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
    // The run's folder of worktrees, if now empty.
    let run_dir = PathBuf::from(&row.worktree_root).join(&row.id);
    let _ = std::fs::remove_dir(&run_dir);
    Ok(out)
}
