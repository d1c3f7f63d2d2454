//! The entries of `<common dir>/worktrees/`, read and repaired without gix
//! (which refuses to list any worktree while one entry is half-written):
//! leftovers of a cut creation or removal, and the branch check of an add.

use super::error::{GitError, removed};
use super::worktree::canon;
use std::path::{Path, PathBuf};

/// One entry of `<common dir>/worktrees/`, read without gix, which refuses
/// to list any worktree while one entry is half-written.
pub(super) struct Registration {
    pub admin: PathBuf,
    /// The worktree it points at; None when its `gitdir` file is missing or empty.
    pub base: Option<PathBuf>,
    pub lock_reason: Option<String>,
}

pub(super) fn registrations(common: &Path) -> Vec<Registration> {
    let Ok(entries) = std::fs::read_dir(common.join("worktrees")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let admin = e.path();
        if !admin.is_dir() {
            continue;
        }
        let base = std::fs::read_to_string(admin.join("gitdir"))
            .ok()
            .map(|t| t.trim_end_matches(['\n', '\r']).to_string())
            .filter(|t| !t.is_empty())
            .and_then(|t| {
                let dot_git = admin.join(t);
                dot_git.parent().map(Path::to_path_buf)
            });
        let lock_reason = std::fs::read_to_string(admin.join("locked"))
            .ok()
            .map(|t| t.trim().to_string());
        out.push(Registration {
            admin,
            base,
            lock_reason,
        });
    }
    out
}

/// Refuse a branch that a worktree (the main one included) has checked
/// out, as git and gix do, from the HEAD files alone.
pub(super) fn refuse_checked_out(
    common: &Path,
    registered: &[Registration],
    name: &gix::refs::FullName,
) -> Result<(), GitError> {
    let want = format!("ref: {}", name.as_bstr());
    let main = common.join("HEAD");
    let main_dir = (common.file_name() == Some(".git".as_ref()))
        .then(|| common.parent().map(Path::to_path_buf))
        .flatten();
    let heads = std::iter::once((main, main_dir)).chain(
        registered
            .iter()
            .map(|g| (g.admin.join("HEAD"), g.base.clone())),
    );
    for (head, base) in heads {
        let Ok(text) = std::fs::read_to_string(&head) else {
            continue;
        };
        if text.trim_end() == want {
            let at = base.unwrap_or_else(|| common.to_path_buf());
            return Err(GitError::gix(
                format!("checking out {}", name.shorten()),
                format!("it is already checked out in {}", at.display()),
            ));
        }
    }
    Ok(())
}

/// A creation or removal was cut short: still marked "initializing", or its
/// HEAD, or the worktree's `.git` pointing back at it, cannot be read.
pub(super) fn unfinished(g: &Registration) -> bool {
    let Some(base) = &g.base else { return true };
    let head_ok = std::fs::read_to_string(g.admin.join("HEAD")).is_ok_and(|h| {
        let h = h.trim();
        h.starts_with("ref: refs/") || (h.len() >= 40 && h.bytes().all(|b| b.is_ascii_hexdigit()))
    });
    let back = read_dot_git(base).is_some_and(|a| canon(&a) == canon(&g.admin));
    g.lock_reason.as_deref() == Some("initializing") || !head_ok || !back
}

/// The registration a worktree's `.git` file points at.
pub(super) fn read_dot_git(base: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(base.join(".git")).ok()?;
    let to = text
        .strip_prefix("gitdir: ")?
        .trim_end_matches(['\n', '\r']);
    (!to.is_empty()).then(|| base.join(to))
}

/// `path/.git` points into this repository's `worktrees/` at an entry that is gone.
pub(super) fn dangling_dot_git(common: &Path, path: &Path) -> bool {
    read_dot_git(path).is_some_and(|a| {
        !a.exists()
            && a.parent()
                .is_some_and(|p| canon(p) == common.join("worktrees"))
    })
}

pub(super) fn is_empty_dir(p: &Path) -> bool {
    std::fs::read_dir(p).is_ok_and(|mut d| d.next().is_none())
}

pub(super) fn remove_dir(p: &Path) -> Result<(), GitError> {
    removed(std::fs::remove_dir_all(p), p)
}

/// Remove a worktree in an order where a kill at any point leaves something
/// the next call recognises as unfinished: first the `.git` file (the rest
/// of the directory is then clearly half-removed), then the directory, then
/// the registration, moved out of `worktrees/` in one rename before it is
/// deleted. See docs/ARCHITECTURE.md, "Crash safety".
pub(super) fn discard(common: &Path, admin: &Path, base: Option<&Path>) -> Result<(), GitError> {
    if let Some(base) = base.filter(|b| b.exists()) {
        let dot_git = base.join(".git");
        match std::fs::remove_file(&dot_git) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(GitError::Io {
                    path: dot_git,
                    source: e,
                });
            }
            _ => {}
        }
        remove_dir(base)?;
    }
    if let Some(name) = admin.file_name() {
        crate::fault::kill_point(format_args!(
            "kill-removing-worktree:{}",
            name.to_string_lossy()
        ));
    }
    let trash = common.join("mpw").join("trash");
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| GitError::Io { path, source }
    };
    std::fs::create_dir_all(&trash).map_err(io(&trash))?;
    let to = trash.join(format!(
        "{}-{}",
        admin.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    remove_dir(&to)?;
    std::fs::rename(admin, &to).map_err(io(admin))?;
    // Out of `worktrees/` it is no registration any more: what a failure
    // here leaves is cleared by the next add.
    if let Err(e) = remove_dir(&to) {
        tracing::debug!("leaving {} for later: {e}", to.display());
    }
    Ok(())
}

/// Clear what killed creations and removals left, before adding a worktree
/// at `dest` (holding the add lock, so no mpw process is half-way through
/// registering one): registrations without a readable `gitdir` (gix cannot
/// list worktrees while one exists), an unfinished registration at `dest`,
/// and the trash of removals cut short.
/// `registered`: the registrations of `common` (the common dir's real path).
pub(super) fn clear_leftovers(
    common: &Path,
    registered: &[Registration],
    dest: &Path,
) -> Result<(), GitError> {
    let want = canon(dest);
    for g in registered {
        let foreign_lock = g
            .lock_reason
            .as_deref()
            .is_some_and(|w| w != "initializing");
        match &g.base {
            None if !foreign_lock => discard(common, &g.admin, None)?,
            Some(b) if canon(b) == want && unfinished(g) && !foreign_lock => {
                discard(common, &g.admin, Some(dest))?
            }
            _ => {}
        }
    }
    if !dest.join(".git").exists() || dangling_dot_git(common, dest) {
        // An empty directory, or one a cut removal left: gix wants it absent or empty.
        if dest.exists() && (is_empty_dir(dest) || dangling_dot_git(common, dest)) {
            remove_dir(dest)?;
        }
    }
    // Another process may be deleting its own entry right now: no error here,
    // what stays is cleared by the next add.
    if let Ok(entries) = std::fs::read_dir(common.join("mpw").join("trash")) {
        for e in entries.flatten() {
            if let Err(err) = remove_dir(&e.path()) {
                tracing::debug!("leaving {} for later: {err}", e.path().display());
            }
        }
    }
    Ok(())
}
