//! Moving a branch (compare-and-swap), and the checkout it is checked out
//! in with it: files and index follow, touching only the changed paths.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use gix::bstr::{BStr, BString, ByteSlice};
use gix::refs::Target;
use gix::refs::transaction::{Change, LogChange, PreviousValue, RefEdit, RefLog};

use super::Oid;
use super::error::{GitError, ctx, removed};
use super::repo::{commit_tree, open_repo, signatures};

/// Compare-and-swap `full_name` from `old` to `new`; `GitError::RefMoved` when it is no longer at `old`.
pub fn update_ref_cas(
    repo: &Path,
    full_name: &str,
    old: Oid,
    new: Oid,
    log_message: &str,
) -> Result<(), GitError> {
    let repo = open_repo(repo)?;
    let doing = || format!("updating {full_name}");
    let name: gix::refs::FullName = full_name.try_into().map_err(ctx(doing()))?;
    let edit = RefEdit {
        change: Change::Update {
            log: LogChange {
                mode: RefLog::AndReference,
                force_create_reflog: false,
                message: log_message.into(),
            },
            expected: PreviousValue::MustExistAndMatch(Target::Object(old)),
            new: Target::Object(new),
        },
        name,
        deref: false,
    };
    let (committer, _) = signatures(&repo)?;
    let mut time = gix::date::parse::TimeBuf::default();
    let committer = committer.to_ref(&mut time);
    match repo.edit_references_as(Some(edit), Some(committer)) {
        Ok(_) => Ok(()),
        Err(err) => {
            // Tell "somebody else moved it" apart from other failures by looking again.
            let found = repo
                .try_find_reference(full_name)
                .ok()
                .map(|r| r.and_then(|r| r.target().try_id().map(|id| id.to_owned())));
            match found {
                Some(Some(found)) if found != old => Err(GitError::RefMoved {
                    name: full_name.to_owned(),
                    expected: old.to_string(),
                    found: found.to_string(),
                }),
                Some(None) => Err(GitError::RefMoved {
                    name: full_name.to_owned(),
                    expected: old.to_string(),
                    found: "(missing)".to_owned(),
                }),
                _ => {
                    let lock = repo.common_dir().join(format!("{full_name}.lock"));
                    if lock.exists() {
                        Err(GitError::Locked { path: lock })
                    } else {
                        Err(GitError::gix(doing(), err))
                    }
                }
            }
        }
    }
}

/// Move branch `full_name` from `old` to `new` (compare-and-swap); when it is
/// checked out at `checkout`, bring that checkout along. The checkout's index
/// is locked before the branch moves, so a busy or stale `index.lock` stops
/// everything with nothing changed; if the files cannot be written after the
/// branch moved, the branch and files are put back.
pub fn advance_branch(
    repo: &Path,
    full_name: &str,
    old: Oid,
    new: Oid,
    log_message: &str,
    checkout: Option<&Path>,
) -> Result<(), GitError> {
    let Some(worktree) = checkout else {
        return update_ref_cas(repo, full_name, old, new, log_message);
    };
    let wt = open_repo(worktree)?;
    let lock = lock_index(&wt)?;
    // Written before the branch moves, removed once the checkout followed:
    // a kill in between leaves it for `finish_checkout_update`.
    let journal = Journal {
        worktree: worktree.to_path_buf(),
        branch: full_name.to_string(),
        from: old.to_string(),
        to: new.to_string(),
    };
    let journal_path = journal.write(wt.common_dir())?;
    if let Err(e) = update_ref_cas(repo, full_name, old, new, log_message) {
        remove_journal(&journal_path)?;
        return Err(e);
    }
    let Err(failed) = checkout_update_locked(&wt, old, new, lock) else {
        return remove_journal(&journal_path);
    };
    let undo = update_ref_cas(
        repo,
        full_name,
        new,
        old,
        "mpw integrate: undone, the checkout could not be updated",
    )
    .and_then(|()| checkout_update_locked(&wt, new, old, lock_index(&wt)?));
    match undo {
        Ok(()) => {
            remove_journal(&journal_path)?;
            Err(failed)
        }
        Err(e) => Err(GitError::gix(
            format!("{failed}; putting {full_name} and its checkout back failed too"),
            e,
        )),
    }
}

/// A checkout update under way: what `finish_checkout_update` needs to
/// finish it after a kill. One at a time: integrations hold a lock.
#[derive(serde::Serialize, serde::Deserialize)]
struct Journal {
    worktree: PathBuf,
    branch: String,
    from: String,
    to: String,
}

fn journal_path(common_dir: &Path) -> PathBuf {
    common_dir.join("mpw").join("checkout-update.json")
}

impl Journal {
    /// Write it whole (a temporary file renamed), so a kill leaves it or not.
    fn write(&self, common_dir: &Path) -> Result<PathBuf, GitError> {
        let path = journal_path(common_dir);
        let io = |source| GitError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(path.parent().expect("in .git/mpw")).map_err(io)?;
        let tmp = path.with_extension("tmp");
        let text = serde_json::to_vec(self).expect("plain strings");
        std::fs::write(&tmp, text).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        Ok(path)
    }
}

fn remove_journal(path: &Path) -> Result<(), GitError> {
    removed(std::fs::remove_file(path), path)
}

/// Finish a checkout update a killed process left half-done (see
/// `advance_branch`). The branch is at the journal's `to` (moved) or `from`
/// (not moved, or moved back); every path the update touches must be at
/// one of the two states, and is then brought to the branch's. Anything
/// else was changed since by someone: refused, naming the paths, with the
/// journal kept. Only call while holding the integrate lock. Returns the
/// checkout it finished.
pub fn finish_checkout_update(repo: &Path) -> Result<Option<PathBuf>, GitError> {
    let common = open_repo(repo)?.common_dir().to_path_buf();
    let path = journal_path(&common);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(GitError::Io { path, source }),
    };
    let j: Journal = serde_json::from_slice(&text)
        .map_err(|e| GitError::gix(format!("reading {}", path.display()), e))?;
    let oid = |s: &str| {
        s.parse::<Oid>()
            .map_err(|e| GitError::gix(format!("reading {}", path.display()), e))
    };
    let (from, to) = (oid(&j.from)?, oid(&j.to)?);
    if !j.worktree.exists() {
        remove_journal(&path)?;
        return Ok(None);
    }
    let wt = open_repo(&j.worktree)?;
    // The index lock the killed process took (before writing the journal).
    let index_lock = wt.index_path().with_file_name("index.lock");
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if let (Some(l), Some(jt)) = (mtime(&index_lock), mtime(&path))
        && l <= jt
    {
        remove_journal(&index_lock)?;
    }
    let tip = super::ref_target(repo, &j.branch)?;
    let (at, other) = match tip {
        Some(t) if t == to => (to, from),
        Some(t) if t == from => (from, to),
        _ => {
            return Err(GitError::gix(
                format!("finishing the update of {}", j.worktree.display()),
                format!(
                    "mpw was killed while moving {} from {from} to {to} and its checkout with it; \
                     the branch is now at {}. Check the checkout, then delete {}",
                    j.branch,
                    tip.map_or("nothing".to_string(), |t| t.to_string()),
                    path.display()
                ),
            ));
        }
    };
    let changed = neither(&wt, &j.worktree, from, to)?;
    if !changed.is_empty() {
        return Err(GitError::gix(
            format!("finishing the update of {}", j.worktree.display()),
            format!(
                "mpw was killed while moving {} from {from} to {to} and its checkout with it, \
                 and these files have changed since: {}. Put them back or move them away, \
                 then run mpw integrate again",
                j.branch,
                changed.join(", ")
            ),
        ));
    }
    checkout_update_locked(&wt, other, at, lock_index(&wt)?)?;
    remove_journal(&path)?;
    Ok(Some(j.worktree))
}

type Side = Option<(gix::object::tree::EntryMode, Oid)>;

/// A tree-to-tree change as its path and its entry before and after (None:
/// absent on that side). Rename tracking is off, so there are no rewrites.
fn sides(change: &gix::diff::tree_with_rewrites::Change) -> (&gix::bstr::BString, Side, Side) {
    use gix::diff::tree_with_rewrites::Change as C;
    match change {
        C::Addition {
            location,
            entry_mode,
            id,
            ..
        } => (location, None, Some((*entry_mode, *id))),
        C::Deletion {
            location,
            entry_mode,
            id,
            ..
        } => (location, Some((*entry_mode, *id)), None),
        C::Modification {
            location,
            previous_entry_mode,
            previous_id,
            entry_mode,
            id,
            ..
        } => (
            location,
            Some((*previous_entry_mode, *previous_id)),
            Some((*entry_mode, *id)),
        ),
        C::Rewrite { .. } => unreachable!("rename tracking is off"),
    }
}

/// The paths that differ between `from` and `to` whose file in the checkout
/// is at neither state.
fn neither(
    repo: &gix::Repository,
    workdir: &Path,
    from: Oid,
    to: Oid,
) -> Result<Vec<String>, GitError> {
    let doing = || format!("reading {}", workdir.display());
    let (old_tree, new_tree) = (commit_tree(repo, from)?, commit_tree(repo, to)?);
    let changes = repo
        .diff_tree_to_tree(&old_tree, &new_tree, gix::diff::Options::default())
        .map_err(ctx(doing()))?;
    let (mut pipeline, index) = repo.filter_pipeline(None).map_err(ctx(doing()))?;
    let mut out = Vec::new();
    for change in &changes {
        let (location, before, after) = sides(change);
        let blob = |e: Side| e.filter(|(m, _)| !m.is_tree()).map(|(_, id)| id);
        let (before, after) = (blob(before), blob(after));
        if before.is_none() && after.is_none() {
            continue;
        }
        let on_disk = pipeline
            .worktree_file_to_object(location.as_bstr(), &index)
            .map_err(ctx(format!("reading {location}")))?
            .map(|(id, _, _)| id);
        if on_disk != before && on_disk != after {
            out.push(location.to_str_lossy().into_owned());
        }
    }
    Ok(out)
}

/// Take the index lock of a checkout, failing at once when it is held.
fn lock_index(repo: &gix::Repository) -> Result<gix::lock::File, GitError> {
    let path = repo.index_path();
    gix::lock::File::acquire_to_update_resource(
        &path,
        gix::lock::acquire::Fail::Immediately,
        None,
        0,
    )
    .map_err(|e| {
        let lock = path.with_file_name("index.lock");
        if lock.exists() {
            GitError::Locked { path: lock }
        } else {
            GitError::gix(format!("locking {}", path.display()), e)
        }
    })
}

/// Bring the index and files of a checkout (clean at `from`) to commit `to`,
/// touching only changed paths; the new index is written through `lock`.
fn checkout_update_locked(
    repo: &gix::Repository,
    from: Oid,
    to: Oid,
    lock: gix::lock::File,
) -> Result<(), GitError> {
    let workdir: PathBuf = repo
        .workdir()
        .ok_or_else(|| GitError::Bare {
            path: repo.git_dir().to_owned(),
        })?
        .to_owned();
    let doing = || format!("updating {} from {from} to {to}", workdir.display());
    let old_tree = commit_tree(repo, from)?;
    let new_tree = commit_tree(repo, to)?;
    let changes = repo
        .diff_tree_to_tree(&old_tree, &new_tree, gix::diff::Options::default())
        .map_err(ctx(doing()))?;

    let hash = repo.object_hash();
    let mut removed = BTreeSet::new();
    // Entries to write; .gitattributes first since they steer the filters of the rest.
    let mut attrs = gix::index::State::new(hash);
    let mut files = gix::index::State::new(hash);
    for change in &changes {
        let (location, old, new) = sides(change);
        let old_mode = old.map(|(m, _)| m);
        if let Some(mode) = old_mode
            && !mode.is_tree()
            && new.is_none_or(|(m, _)| m.is_tree())
        {
            removed.insert(location.clone());
        }
        if let Some((mode, id)) = new
            && !mode.is_tree()
        {
            let target = if location.ends_with(b".gitattributes") {
                &mut attrs
            } else {
                &mut files
            };
            target.dangerously_push_entry(
                Default::default(),
                id,
                gix::index::entry::Flags::empty(),
                mode.into(),
                location.as_bstr(),
            );
        }
    }

    for path in &removed {
        remove_file_and_empty_parents(&workdir, path.as_bstr())?;
    }
    crate::fault::kill_point("kill-updating-checkout");
    for state in [&mut attrs, &mut files] {
        if !state.entries().is_empty() {
            state.sort_entries();
            write_entries(repo, &workdir, state)?;
        }
    }

    if crate::fault::armed_once("checkout-update") {
        return Err(GitError::gix(
            "updating the checkout",
            "fault injected (MPW_FAULT=checkout-update)",
        ));
    }
    let mut index = repo.open_index().map_err(ctx(doing()))?;
    patch_index(&mut index, &[&attrs, &files], &removed);
    let mut out = std::io::BufWriter::new(lock);
    index
        .write_to(&mut out, Default::default())
        .map_err(ctx(doing()))?;
    out.into_inner()
        .map_err(|e| GitError::Io {
            path: index.path().to_owned(),
            source: e.into_error(),
        })?
        .commit()
        .map_err(ctx(doing()))?;
    Ok(())
}

/// Write the (sorted) entries of `state` into the worktree, overwriting what
/// is there, filling in each entry's stat.
pub(super) fn write_entries(
    repo: &gix::Repository,
    workdir: &Path,
    state: &mut gix::index::State,
) -> Result<(), GitError> {
    let doing = || format!("writing files in {}", workdir.display());
    let objects = repo.objects.clone().into_arc().map_err(|e| GitError::Io {
        path: workdir.to_path_buf(),
        source: e,
    })?;
    let mut opts = repo
        .checkout_options(gix::worktree::stack::state::attributes::Source::WorktreeThenIdMapping)
        .map_err(ctx(doing()))?;
    opts.overwrite_existing = true;
    opts.destination_is_initially_empty = false;
    let outcome = gix::worktree::state::checkout(
        state,
        workdir,
        objects,
        &gix::progress::Discard,
        &gix::progress::Discard,
        &AtomicBool::new(false),
        opts,
    )
    .map_err(ctx(doing()))?;
    if let Some(e) = outcome.errors.first() {
        return Err(GitError::gix(
            format!("writing {}", e.path),
            e.error.to_string(),
        ));
    }
    if let Some(c) = outcome.collisions.first() {
        return Err(GitError::gix(
            format!("writing {}", c.path),
            format!("{:?}", c.error_kind),
        ));
    }
    Ok(())
}

/// Record in `index` the entries of `written` (files just written, with the
/// stat the writing filled in) and forget the `removed` paths.
pub(super) fn patch_index(
    index: &mut gix::index::State,
    written: &[&gix::index::State],
    removed: &BTreeSet<BString>,
) {
    index.remove_entries(|_, path, _| removed.contains(path));
    let mut new_entries = Vec::new();
    for state in written {
        for entry in state.entries() {
            let path = entry.path(state);
            match index.entry_mut_by_path_and_stage(path, gix::index::entry::Stage::Unconflicted) {
                Some(e) => {
                    e.id = entry.id;
                    e.mode = entry.mode;
                    e.stat = entry.stat;
                    e.flags = entry.flags;
                }
                None => new_entries.push((entry.stat, entry.id, entry.flags, entry.mode, path)),
            }
        }
    }
    for (stat, id, flags, mode, path) in new_entries {
        index.dangerously_push_entry(stat, id, flags, mode, path);
    }
    index.sort_entries();
    // A stale cache-tree would make `git write-tree` return the old tree.
    index.remove_tree();
    index.remove_resolve_undo();
}

/// Remove `path` (a file, or a folder where git tracks a file) and, like
/// git, the folders it leaves empty; never anything outside `workdir`.
pub(super) fn remove_file_and_empty_parents(workdir: &Path, path: &BStr) -> Result<(), GitError> {
    let doing = || format!("removing {path}");
    let rel = gix::path::from_bstr(path).map_err(ctx(doing()))?;
    if !rel
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)))
    {
        return Err(GitError::gix(doing(), "the path leads out of the worktree"));
    }
    let full = workdir.join(&rel);
    let removed = match std::fs::symlink_metadata(&full) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(&full),
        Ok(_) => std::fs::remove_file(&full),
        Err(e) => Err(e),
    };
    match removed {
        Ok(()) => {}
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) => {}
        Err(source) => return Err(GitError::Io { path: full, source }),
    }
    let mut dir = full.parent();
    while let Some(d) = dir {
        if d == workdir || !d.starts_with(workdir) || std::fs::remove_dir(d).is_err() {
            break;
        }
        dir = d.parent();
    }
    Ok(())
}

// These tests check against the git CLI, which a Windows build under Wine lacks.
#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use crate::git::test_support::*;
    use std::process::Command;

    #[test]
    fn checkout_update_brings_checked_out_branch_to_new_commit() {
        let dir = init_repo();
        let root = dir.path();
        write_files(
            root,
            &[
                ("keep.txt", "untouched\n"),
                ("keep/dir/also.txt", "untouched too\n"),
                ("mod.txt", "old\n"),
                ("del.txt", "bye\n"),
                ("gone/dir/file.txt", "whole dir goes\n"),
                ("old/name.txt", "renamed content\n"),
                ("tool.sh", "#!/bin/sh\n"),
                ("becomes_dir", "file now\n"),
            ],
        );
        let from = commit_all(root, "base");

        // The new commit is made in a linked worktree: main's files stay as they are.
        let wt_dir = tempfile::tempdir().unwrap();
        let wt = wt_dir.path().join("wt");
        git(
            root,
            &[
                "worktree",
                "add",
                "-q",
                "-b",
                "feature",
                wt.to_str().unwrap(),
            ],
        );
        write(&wt, "mod.txt", "new\n");
        std::fs::remove_file(wt.join("del.txt")).unwrap();
        std::fs::remove_dir_all(wt.join("gone")).unwrap();
        std::fs::create_dir_all(wt.join("new/deep/dir")).unwrap();
        std::fs::rename(wt.join("old/name.txt"), wt.join("new/deep/dir/name.txt")).unwrap();
        set_exec(&wt.join("tool.sh"), true);
        std::fs::remove_file(wt.join("becomes_dir")).unwrap();
        write(&wt, "becomes_dir/inner.txt", "dir now\n");
        write(&wt, "added.txt", "added\n");
        let to = commit_all(&wt, "feature");

        // Old mtimes on untouched files, recorded in the index.
        git(
            root,
            &["-c", "core.fsmonitor=false", "status", "--porcelain"],
        );
        for f in ["keep.txt", "keep/dir/also.txt"] {
            assert!(
                Command::new("touch")
                    .args(["-d", "2001-02-03 04:05:06"])
                    .arg(root.join(f))
                    .status()
                    .unwrap()
                    .success()
            );
        }
        git(root, &["update-index", "--refresh"]);
        let mtime = |p: &str| std::fs::metadata(root.join(p)).unwrap().modified().unwrap();
        let keep_before = (mtime("keep.txt"), mtime("keep/dir/also.txt"));

        advance_branch(
            root,
            "refs/heads/main",
            from,
            to,
            "mpw: integrate",
            Some(root),
        )
        .unwrap();

        // Stat data is right: diff-files does not refresh, so stale stat would show up.
        assert!(
            git_out(root, &["diff-files", "--quiet"]).status.success(),
            "{}",
            git(root, &["diff-files"])
        );
        assert!(
            git_out(root, &["diff-index", "--cached", "--quiet", "HEAD"])
                .status
                .success()
        );
        assert_eq!(
            git(root, &["status", "--porcelain", "--untracked-files=all"]),
            ""
        );
        assert_eq!(
            git(root, &["write-tree"]),
            git(root, &["rev-parse", "HEAD^{tree}"])
        );
        assert_files(
            root,
            &[
                ("mod.txt", "new\n"),
                ("new/deep/dir/name.txt", "renamed content\n"),
                ("becomes_dir/inner.txt", "dir now\n"),
                ("added.txt", "added\n"),
            ],
        );
        for gone in ["del.txt", "gone", "old"] {
            assert!(!root.join(gone).exists(), "{gone} should be gone");
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(root.join("tool.sh"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o111, 0o111, "exec bit");
        }
        assert_eq!((mtime("keep.txt"), mtime("keep/dir/also.txt")), keep_before);
    }

    #[test]
    fn update_ref_cas_moves_or_reports_moved() {
        let dir = init_repo();
        let root = dir.path();
        let c1 = commit_file(root, "f.txt", "1\n", "one");
        let c2 = commit_file(root, "f.txt", "2\n", "two");
        let c3 = commit_file(root, "f.txt", "3\n", "three");
        git(root, &["branch", "x", &c1.to_string()]);

        update_ref_cas(root, "refs/heads/x", c1, c2, "mpw: integrate").unwrap();
        assert_eq!(oid(&git(root, &["rev-parse", "x"])), c2);
        assert!(git(root, &["reflog", "-1", "x"]).contains("mpw: integrate"));

        git(root, &["branch", "-f", "x", &c3.to_string()]);
        let err = update_ref_cas(root, "refs/heads/x", c2, c1, "stale").unwrap_err();
        match err {
            GitError::RefMoved {
                name,
                expected,
                found,
            } => {
                assert_eq!(name, "refs/heads/x");
                assert_eq!(expected, c2.to_string());
                assert_eq!(found, c3.to_string());
            }
            other => panic!("expected RefMoved, got {other}"),
        }
        assert_eq!(oid(&git(root, &["rev-parse", "x"])), c3);
    }
}
