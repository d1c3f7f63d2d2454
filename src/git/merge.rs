//! In-memory merges, commits, compare-and-swap ref updates, and updating a
//! checked-out worktree after its branch moved.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use gix::bstr::{BStr, ByteSlice};
use gix::merge::tree::TreatAsUnresolved;
use gix::refs::Target;
use gix::refs::transaction::{Change, LogChange, PreviousValue, RefEdit, RefLog};

use super::Oid;
use super::error::{GitError, ctx};

/// The outcome of a three-way merge: the merged tree and the paths left conflicted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeResult {
    /// The merged tree; with conflicts it holds conflict markers like `git merge-tree`'s.
    pub tree: Oid,
    /// Unresolved conflicted paths only, sorted and deduplicated.
    pub conflicts: Vec<String>,
}

impl MergeResult {
    /// `true` when no conflict is left to resolve.
    pub fn is_clean(&self) -> bool {
        self.conflicts.is_empty()
    }
}

/// An in-memory merge session: objects written by merges and commits stay in memory until `persist`.
pub struct MergeSession {
    repo: gix::Repository,
    options: gix::merge::commit::Options,
    /// Commits made by `commit` and not yet persisted.
    pending: Vec<Oid>,
}

impl MergeSession {
    /// Open the repository at (or around) `repo` for a series of in-memory merges.
    pub fn open(repo: &Path) -> Result<Self, GitError> {
        let mut repo = open_repo(repo)?.with_object_memory();
        // Merges read the same trees again and again: a cache pays off.
        repo.object_cache_size_if_unset(32 * 1024 * 1024);
        let options = repo
            .tree_merge_options()
            .map_err(ctx("reading merge options"))?
            .into();
        Ok(MergeSession {
            repo,
            options,
            pending: Vec::new(),
        })
    }

    /// Three-way merge of commits `ours` and `theirs` like `git merge-tree --write-tree`.
    pub fn merge(
        &mut self,
        ours: Oid,
        theirs: Oid,
        ours_label: &str,
        theirs_label: &str,
    ) -> Result<MergeResult, GitError> {
        let labels = gix::merge::blob::builtin_driver::text::Labels {
            ancestor: None,
            current: Some(ours_label.into()),
            other: Some(theirs_label.into()),
        };
        let doing = || format!("merging {theirs} into {ours}");
        let mut outcome = self
            .repo
            .merge_commits(ours, theirs, labels, self.options.clone())
            .map_err(ctx(doing()))?;
        let mut tree = outcome
            .tree_merge
            .tree
            .write()
            .map_err(ctx(doing()))?
            .detach();
        let fixes = rename_mode_fixes(&outcome.tree_merge.conflicts);
        if !fixes.is_empty() {
            tree = apply_mode_fixes(&self.repo, &mut outcome.tree_merge.tree, tree, &fixes)
                .map_err(ctx(doing()))?;
        }
        let (undo, dir_rename_conflicts) = dir_rename_fixes(&outcome.tree_merge.conflicts);
        if !undo.is_empty() {
            let editor = &mut outcome.tree_merge.tree;
            for (moved_to, back_to, kind, id) in &undo {
                editor.remove(moved_to.as_str()).map_err(ctx(doing()))?;
                editor
                    .upsert(back_to.as_str(), *kind, *id)
                    .map_err(ctx(doing()))?;
            }
            tree = editor.write().map_err(ctx(doing()))?.detach();
        }
        let how = TreatAsUnresolved::git();
        let mut conflicts = if outcome.tree_merge.has_unresolved_conflicts(how) {
            conflicted_paths(&self.repo, tree, &outcome.tree_merge.conflicts, how)
                .map_err(ctx(doing()))?
        } else {
            Vec::new()
        };
        if !dir_rename_conflicts.is_empty() {
            conflicts.extend(dir_rename_conflicts);
            conflicts.sort();
            conflicts.dedup();
        }
        Ok(MergeResult { tree, conflicts })
    }

    /// Write a commit object (in memory) with the configured identity, or `mpw <mpw@localhost>`.
    pub fn commit(&mut self, tree: Oid, parents: &[Oid], message: &str) -> Result<Oid, GitError> {
        let (author, committer) = signatures(&self.repo)?;
        let mut message = message.to_owned();
        if !message.ends_with('\n') {
            message.push('\n');
        }
        let commit = gix::objs::Commit {
            tree,
            parents: parents.iter().copied().collect(),
            author,
            committer,
            encoding: None,
            message: message.into(),
            extra_headers: Vec::new(),
        };
        let id = self
            .repo
            .write_object(&commit)
            .map_err(ctx("writing a commit"))?
            .detach();
        self.pending.push(id);
        Ok(id)
    }

    /// Write the commits made so far, and every in-memory object they need, to the object database.
    pub fn persist(&mut self) -> Result<(), GitError> {
        let Some(mut memory) = self.repo.objects.take_object_memory() else {
            return Ok(());
        };
        // Walk from the commits through objects that only live in memory: what is
        // on disk already is complete, and conflicted merge leftovers stay behind.
        let mut stack: Vec<Oid> = std::mem::take(&mut self.pending);
        let mut result = Ok(());
        while let Some(id) = stack.pop() {
            let Some((kind, data)) = memory.remove(&id) else {
                continue;
            };
            match kind {
                gix::objs::Kind::Commit => {
                    if let Ok(c) = gix::objs::CommitRef::from_bytes(&data, id.kind()) {
                        stack.push(c.tree());
                        stack.extend(c.parents());
                    }
                }
                gix::objs::Kind::Tree => {
                    for entry in gix::objs::TreeRefIter::from_bytes(&data, id.kind()).flatten() {
                        if !entry.mode.is_commit() {
                            stack.push(entry.oid.to_owned());
                        }
                    }
                }
                _ => {}
            }
            let odb = &*self.repo.objects;
            if let Err(e) = gix::objs::Write::write_buf_with_known_id(odb, kind, &data, id) {
                result = Err(GitError::gix(format!("writing object {id}"), e));
                memory.insert(id, (kind, data));
                break;
            }
        }
        self.repo.objects.set_object_memory(memory);
        result
    }
}

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
    update_ref_cas(repo, full_name, old, new, log_message)?;
    let Err(failed) = checkout_update_locked(&wt, old, new, lock) else {
        return Ok(());
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
        Ok(()) => Err(failed),
        Err(e) => Err(GitError::gix(
            format!("{failed}; putting {full_name} and its checkout back failed too"),
            e,
        )),
    }
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
        use gix::diff::tree_with_rewrites::Change as C;
        let (location, old_mode, new) = match change {
            C::Addition {
                location,
                entry_mode,
                id,
                ..
            } => (location, None, Some((*entry_mode, *id))),
            C::Deletion {
                location,
                entry_mode,
                ..
            } => (location, Some(*entry_mode), None),
            C::Modification {
                location,
                previous_entry_mode,
                entry_mode,
                id,
                ..
            } => (
                location,
                Some(*previous_entry_mode),
                Some((*entry_mode, *id)),
            ),
            C::Rewrite { .. } => unreachable!("rename tracking is off"),
        };
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
    for state in [&mut attrs, &mut files] {
        if !state.entries().is_empty() {
            state.sort_entries();
            write_entries(repo, &workdir, state)?;
        }
    }

    fault_point("checkout-update")?;
    // The index: drop removed paths, update changed ones with fresh stat, add new ones.
    let mut index = repo.open_index().map_err(ctx(doing()))?;
    index.remove_entries(|_, path, _| removed.contains(path));
    let mut new_entries = Vec::new();
    for state in [&attrs, &files] {
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

/// For the test of a checkout that cannot be written after its branch moved:
/// fails the first update after its files are written (once per process, so
/// the undo can go through).
fn fault_point(name: &str) -> Result<(), GitError> {
    static FIRED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if crate::fault::armed(name) && !FIRED.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return Err(GitError::gix(
            "updating the checkout",
            format!("fault injected (MPW_FAULT={name})"),
        ));
    }
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

/// `true` when commits `a` and `b` have the same tree.
pub fn trees_equal(repo: &Path, a: Oid, b: Oid) -> Result<bool, GitError> {
    let repo = open_repo(repo)?;
    Ok(commit_tree_id_in(&repo, a)? == commit_tree_id_in(&repo, b)?)
}

/// Open a repository as git on Linux, macOS and Windows reads stat data:
/// with nanoseconds. Without them every file written in the same second as
/// the index is "racy" and status hashes it again (all of a new worktree).
/// On Windows the file system has no exec bit: `core.fileMode=false`, as Git
/// for Windows sets, whatever the repository's config says (a repository made
/// on Linux says true, and every executable would look changed).
pub(super) fn open_repo(path: &Path) -> Result<gix::Repository, GitError> {
    let overrides: &[&str] = if cfg!(windows) {
        &["gitoxide.core.useNsec=true", "core.fileMode=false"]
    } else {
        &["gitoxide.core.useNsec=true"]
    };
    let opts = gix::open::Options::default().config_overrides(overrides.iter().copied());
    gix::open_opts(path, opts).map_err(|e| {
        if path.exists() {
            GitError::gix(format!("opening {}", path.display()), e)
        } else {
            GitError::NotARepo {
                path: path.to_owned(),
            }
        }
    })
}

pub(super) fn commit_tree_id_in(repo: &gix::Repository, commit: Oid) -> Result<Oid, GitError> {
    repo.find_commit(commit)
        .map_err(|_| GitError::UnknownRev {
            rev: commit.to_string(),
        })?
        .tree_id()
        .map(|id| id.detach())
        .map_err(ctx(format!("reading commit {commit}")))
}

fn commit_tree(repo: &gix::Repository, commit: Oid) -> Result<gix::Tree<'_>, GitError> {
    let tree = commit_tree_id_in(repo, commit)?;
    repo.find_tree(tree)
        .map_err(ctx(format!("reading tree {tree}")))
}

/// Author and committer like git picks them, with the time taken now (or from `GIT_*_DATE`).
pub(super) fn signatures(
    repo: &gix::Repository,
) -> Result<(gix::actor::Signature, gix::actor::Signature), GitError> {
    let now = gix::date::Time::now_local_or_utc();
    let make = |sig: Option<gix::Result<gix::actor::SignatureRef<'_>>>, date_var: &str| {
        let Some(Ok(sig)) = sig else {
            return gix::actor::Signature {
                name: "mpw".into(),
                email: "mpw@localhost".into(),
                time: now,
            };
        };
        // gix fixes the time when the repository is opened; a session lives longer.
        let time = if std::env::var_os(date_var).is_some() {
            sig.time().unwrap_or(now)
        } else {
            now
        };
        gix::actor::Signature {
            name: sig.name.to_owned(),
            email: sig.email.to_owned(),
            time,
        }
    };
    Ok((
        make(repo.author(), "GIT_AUTHOR_DATE"),
        make(repo.committer(), "GIT_COMMITTER_DATE"),
    ))
}

/// Where gix's merged exec bit differs from git's: a rename on one side and a
/// mode change on the other. gix keeps the exec bit if any side had it; git
/// merges modes three-way (the side that changed wins), and so do we.
fn rename_mode_fixes(conflicts: &[gix::merge::tree::Conflict]) -> Vec<(String, bool)> {
    use gix::merge::tree::{Resolution, ResolutionFailure};
    let merged = |base: gix::objs::tree::EntryMode,
                  ours: gix::objs::tree::EntryMode,
                  theirs: gix::objs::tree::EntryMode| {
        if !(base.is_blob() && ours.is_blob() && theirs.is_blob()) {
            return None;
        }
        let (b, o, t) = (
            base.is_executable(),
            ours.is_executable(),
            theirs.is_executable(),
        );
        Some(if o == b { t } else { o })
    };
    let mut fixes = Vec::new();
    for c in conflicts {
        let (ours, theirs) = c.changes_in_resolution();
        let (base, _) = ours.source_entry_mode_and_id();
        let Some(exec) = merged(base, ours.entry_mode(), theirs.entry_mode()) else {
            continue;
        };
        let paths: Vec<&BStr> = match &c.resolution {
            Ok(Resolution::OursModifiedTheirsRenamedAndChangedThenRename {
                final_location,
                ..
            }) => vec![
                final_location
                    .as_ref()
                    .map_or(theirs.location(), |p| p.as_bstr()),
            ],
            Err(ResolutionFailure::OursRenamedTheirsRenamedDifferently { .. }) => {
                vec![ours.location(), theirs.location()]
            }
            _ => continue,
        };
        for path in paths {
            fixes.push((path.to_str_lossy().into_owned(), exec));
        }
    }
    fixes
}

/// gix moves a path added on one side into a directory renamed on the other
/// and calls it resolved. git (`merge.directoryRenames=conflict`, the default)
/// moves only paths added directly in the renamed directory, and reports those
/// as conflicts; deeper ones stay where they were added. Returns the moves to
/// undo as (moved to, back to, kind, blob) and the paths to report.
#[allow(clippy::type_complexity)]
fn dir_rename_fixes(
    conflicts: &[gix::merge::tree::Conflict],
) -> (
    Vec<(String, String, gix::objs::tree::EntryKind, Oid)>,
    Vec<String>,
) {
    use gix::merge::tree::Resolution;
    let (mut undo, mut report) = (Vec::new(), Vec::new());
    for c in conflicts {
        let Ok(Resolution::SourceLocationAffectedByRename { final_location }) = &c.resolution
        else {
            continue;
        };
        let (_, added) = c.changes_in_resolution();
        let (original, moved) = (added.location(), final_location.as_bstr());
        // The common tail is what the directory rename left alone.
        let tail = original
            .iter()
            .rev()
            .zip(moved.iter().rev())
            .take_while(|(a, b)| a == b)
            .count();
        let tail = &original[original.len() - tail..];
        let tail = match tail.find_byte(b'/') {
            Some(pos) if pos + 1 < tail.len() => &tail[pos + 1..],
            _ => tail,
        };
        if tail.contains(&b'/') {
            let (mode, id) = added.entry_mode_and_id();
            undo.push((
                moved.to_str_lossy().into_owned(),
                original.to_str_lossy().into_owned(),
                mode.kind(),
                id.to_owned(),
            ));
        } else {
            // gix may pick a parent of the renamed directory; git uses the
            // directory the other side's renamed files went to.
            let (renamed, _) = c.changes_in_resolution();
            let name = original.rsplit_str("/").next().unwrap_or(original);
            let dest = match renamed.location().rfind_byte(b'/') {
                Some(pos) => format!(
                    "{}/{}",
                    renamed.location()[..pos].to_str_lossy(),
                    name.to_str_lossy()
                ),
                None => name.to_str_lossy().into_owned(),
            };
            if dest.as_bytes() != moved.as_bytes() && !renamed.entry_mode().is_tree() {
                let (mode, id) = added.entry_mode_and_id();
                undo.push((
                    moved.to_str_lossy().into_owned(),
                    dest.clone(),
                    mode.kind(),
                    id.to_owned(),
                ));
                report.push(dest);
            } else {
                report.push(moved.to_str_lossy().into_owned());
            }
        }
    }
    (undo, report)
}

/// Set the exec bit of `fixes` in the merged `tree`, returning the new tree id.
fn apply_mode_fixes(
    repo: &gix::Repository,
    editor: &mut gix::object::tree::Editor<'_>,
    tree: Oid,
    fixes: &[(String, bool)],
) -> Result<Oid, gix::Error> {
    use gix::objs::tree::EntryKind;
    let written = repo.find_tree(tree)?;
    let mut changed = false;
    for (path, exec) in fixes {
        let Some(entry) = written.lookup_entry_by_path(path)? else {
            continue;
        };
        if !entry.mode().is_blob() || entry.mode().is_executable() == *exec {
            continue;
        }
        let kind = if *exec {
            EntryKind::BlobExecutable
        } else {
            EntryKind::Blob
        };
        editor.upsert(path.as_str(), kind, entry.object_id())?;
        changed = true;
    }
    if !changed {
        return Ok(tree);
    }
    Ok(editor.write()?.detach())
}

/// The paths git would leave conflicted in the index, found by applying the
/// conflicts to an index of the merged tree.
fn conflicted_paths(
    repo: &gix::Repository,
    tree: Oid,
    conflicts: &[gix::merge::tree::Conflict],
    how: TreatAsUnresolved,
) -> Result<Vec<String>, gix::Error> {
    let mut index = repo.index_from_tree(&tree)?;
    gix::merge::tree::apply_index_entries(
        conflicts,
        how,
        &mut index,
        gix::merge::tree::apply_index_entries::RemovalMode::Prune,
    );
    let mut paths: BTreeSet<String> = index
        .entries()
        .iter()
        .filter(|e| e.stage() != gix::index::entry::Stage::Unconflicted)
        .map(|e| e.path(&index).to_str_lossy().into_owned())
        .collect();
    if paths.is_empty() {
        // Not expressible as index stages: name the paths the conflicts are about.
        for c in conflicts.iter().filter(|c| c.is_unresolved(how)) {
            let (ours, theirs) = c.changes_in_resolution();
            paths.insert(ours.location().to_str_lossy().into_owned());
            paths.insert(theirs.location().to_str_lossy().into_owned());
        }
    }
    Ok(paths.into_iter().collect())
}

fn remove_file_and_empty_parents(workdir: &Path, path: &BStr) -> Result<(), GitError> {
    let rel = gix::path::from_bstr(path).map_err(ctx(format!("removing {path}")))?;
    let full = workdir.join(&rel);
    match std::fs::remove_file(&full) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(GitError::Io {
                path: full,
                source: e,
            });
        }
    }
    // Like git: a directory left empty goes too.
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
pub(super) mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::process::Command;

    /// Run git in `dir`, panic on failure, return trimmed stdout.
    pub(crate) fn git(dir: &Path, args: &[&str]) -> String {
        let out = git_out(dir, args);
        assert!(
            out.status.success(),
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    pub(crate) fn git_out(dir: &Path, args: &[&str]) -> std::process::Output {
        Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .output()
            .expect("git runs")
    }

    pub(crate) fn oid(s: &str) -> Oid {
        Oid::from_hex(s.trim().as_bytes()).expect("hex id")
    }

    /// A fresh repository with an identity and branch main.
    pub(crate) fn init_repo() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        git(p, &["init", "-q", "-b", "main"]);
        git(p, &["config", "user.name", "Test"]);
        git(p, &["config", "user.email", "test@example.com"]);
        git(p, &["config", "commit.gpgsign", "false"]);
        dir
    }

    pub(crate) fn write(root: &Path, path: &str, content: &str) {
        let full = root.join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, content).unwrap();
    }

    pub(crate) fn commit_all(root: &Path, msg: &str) -> Oid {
        git(root, &["add", "-A"]);
        git(root, &["commit", "-q", "--allow-empty", "-m", msg]);
        oid(&git(root, &["rev-parse", "HEAD"]))
    }

    #[cfg(unix)]
    fn set_exec(path: &Path, exec: bool) {
        use std::os::unix::fs::PermissionsExt;
        let mode = if exec { 0o755 } else { 0o644 };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    #[cfg(not(unix))]
    fn set_exec(_: &Path, _: bool) {}

    /// A small seeded LCG: deterministic cases without a dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0 >> 33
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    type Files = BTreeMap<String, (Vec<String>, bool)>;

    const NEW_PATHS: &[&str] = &[
        "new.txt",
        "a/new.txt",
        "n1/n2/deep.txt",
        "a/b/c/d.txt",
        "z.txt",
        "a/b/direct.txt",
        "c/d/e/g/new.txt",
    ];

    /// Apply 1..=4 random edits of one side to `files`.
    fn mutate(rng: &mut Rng, files: &mut Files, side: &str) {
        for op in 0..1 + rng.below(4) {
            let paths: Vec<String> = files.keys().cloned().collect();
            let pick = paths[rng.below(paths.len())].clone();
            match rng.below(7) {
                0 | 1 => {
                    // Edit one line; both sides often pick the same few lines.
                    let lines = &mut files.get_mut(&pick).unwrap().0;
                    if !lines.is_empty() {
                        let k = rng.below(lines.len().min(6)) * 2;
                        let k = k.min(lines.len() - 1);
                        lines[k] = format!("{side} edit {op} {}", rng.below(3));
                    }
                }
                2 => {
                    let lines = &mut files.get_mut(&pick).unwrap().0;
                    lines.push(format!("{side} appended {}", rng.below(2)));
                }
                3 => {
                    let path = NEW_PATHS[rng.below(NEW_PATHS.len())].to_owned();
                    let content = if rng.below(2) == 0 {
                        vec!["same new content".to_owned()]
                    } else {
                        vec![format!("{side} new content"), "tail".to_owned()]
                    };
                    files.insert(path, (content, false));
                }
                4 => {
                    if files.len() > 3 {
                        files.remove(&pick);
                    }
                }
                5 => {
                    let name = pick.rsplit('/').next().unwrap().to_owned();
                    let dest = match rng.below(3) {
                        0 => format!("ren/{name}"),
                        1 => format!("a/moved-{name}"),
                        _ => format!("deep/er/{side}-{name}"),
                    };
                    if !files.contains_key(&dest) {
                        let mut entry = files.remove(&pick).unwrap();
                        if rng.below(3) == 0 && !entry.0.is_empty() {
                            entry.0[0] = format!("{side} renamed and edited");
                        }
                        files.insert(dest, entry);
                    }
                }
                _ => {
                    let e = files.get_mut(&pick).unwrap();
                    e.1 = !e.1;
                }
            }
        }
    }

    /// Make the worktree hold exactly `files`, commit on a new branch `name` from `base`.
    fn commit_files(root: &Path, name: &str, base: Option<&str>, files: &Files) {
        if let Some(base) = base {
            git(root, &["checkout", "-q", "-f", "-B", name, base]);
            git(root, &["clean", "-q", "-fdx"]);
        }
        let tracked = git(root, &["ls-files"]);
        for path in tracked.lines() {
            if !files.contains_key(path) {
                std::fs::remove_file(root.join(path)).unwrap();
            }
        }
        for (path, (lines, exec)) in files {
            let mut text = lines.join("\n");
            text.push('\n');
            write(root, path, &text);
            set_exec(&root.join(path), *exec);
        }
        commit_all(root, name);
    }

    fn base_files() -> Files {
        let mut files = Files::new();
        for (i, path) in [
            "f0.txt",
            "f1.txt",
            "a/f2.txt",
            "a/f3.txt",
            "a/b/f4.txt",
            "c/f5.txt",
            "c/d/e/f6.txt",
            "run.sh",
        ]
        .iter()
        .enumerate()
        {
            let lines = (0..12).map(|k| format!("file {i} line {k}")).collect();
            files.insert((*path).to_owned(), (lines, *path == "run.sh"));
        }
        files
    }

    /// `git merge-tree --write-tree --name-only`: (tree, conflicted paths).
    fn git_merge_tree(root: &Path, ours: &str, theirs: &str) -> (Oid, Vec<String>) {
        let out = git_out(
            root,
            &["merge-tree", "--write-tree", "--name-only", ours, theirs],
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.code() == Some(0) || out.status.code() == Some(1),
            "merge-tree failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut lines = text.lines();
        let tree = oid(lines.next().unwrap());
        let mut paths: Vec<String> = lines
            .take_while(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        paths.sort();
        paths.dedup();
        assert_eq!(out.status.code() == Some(0), paths.is_empty(), "{text}");
        (tree, paths)
    }

    #[test]
    fn merge_matches_git_merge_tree_on_generated_branches() {
        let dir = init_repo();
        let root = dir.path();
        let base = base_files();
        commit_files(root, "main", None, &base);
        let mut rng = Rng(std::env::var("MPW_MERGE_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0x5eed_1234));
        let mut session = MergeSession::open(root).unwrap();
        let (mut clean, mut conflicted) = (0, 0);
        let cases: usize = std::env::var("MPW_MERGE_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(80);
        for case in 0..cases {
            let (ours, theirs) = (format!("ours{case}"), format!("theirs{case}"));
            let mut ours_files = base.clone();
            mutate(&mut rng, &mut ours_files, "ours");
            let mut theirs_files = base.clone();
            mutate(&mut rng, &mut theirs_files, "theirs");
            commit_files(root, &ours, Some("main"), &ours_files);
            commit_files(root, &theirs, Some("main"), &theirs_files);
            let ours_id = oid(&git(root, &["rev-parse", &ours]));
            let theirs_id = oid(&git(root, &["rev-parse", &theirs]));

            let (git_tree, git_paths) = git_merge_tree(root, &ours, &theirs);
            let result = session.merge(ours_id, theirs_id, &ours, &theirs).unwrap();
            assert_eq!(
                result.is_clean(),
                git_paths.is_empty(),
                "case {case}: verdict differs; gix {:?} git {git_paths:?}",
                result.conflicts
            );
            assert_eq!(result.conflicts, git_paths, "case {case}: conflicted paths");
            if result.tree != git_tree {
                let list = |id: Oid| -> Vec<String> {
                    let tree = session.repo.find_tree(id).unwrap();
                    let mut rec = gix::traverse::tree::Recorder::default();
                    tree.traverse().breadthfirst(&mut rec).unwrap();
                    rec.records
                        .iter()
                        .map(|e| format!("{:o} {} {}", e.mode.value(), e.oid, e.filepath))
                        .collect()
                };
                let (a, b) = (list(result.tree), list(git_tree));
                let only_gix: Vec<_> = a.iter().filter(|x| !b.contains(x)).collect();
                let only_git: Vec<_> = b.iter().filter(|x| !a.contains(x)).collect();
                let ours_diff = git(root, &["diff", "--raw", "-M", "main", &ours]);
                let theirs_diff = git(root, &["diff", "--raw", "-M", "main", &theirs]);
                eprintln!(
                    "case {case}: tree differs\ngix only: {only_gix:#?}\ngit only: {only_git:#?}\nconflicts {git_paths:?}\nours:\n{ours_diff}\ntheirs:\n{theirs_diff}"
                );
                panic!("case {case}: trees differ");
            }
            if result.is_clean() {
                clean += 1;
            } else {
                conflicted += 1;
            }
        }
        assert!(
            clean >= 10 && conflicted >= 10,
            "{clean} clean, {conflicted} conflicted"
        );
    }

    #[test]
    fn merge_criss_cross_matches_git() {
        let dir = init_repo();
        let root = dir.path();
        write(root, "f.txt", "1\n2\n3\n4\n5\n6\n7\n8\n");
        commit_all(root, "base");
        git(root, &["branch", "other"]);
        write(root, "f.txt", "1 main\n2\n3\n4\n5\n6\n7\n8\n");
        commit_all(root, "main 1");
        git(root, &["checkout", "-q", "other"]);
        write(root, "f.txt", "1\n2\n3\n4\n5\n6\n7\n8 other\n");
        commit_all(root, "other 1");
        let o1 = git(root, &["rev-parse", "HEAD"]);
        git(root, &["merge", "-q", "--no-edit", "main"]);
        write(root, "g.txt", "other\n");
        commit_all(root, "other 2");
        git(root, &["checkout", "-q", "main"]);
        git(root, &["merge", "-q", "--no-edit", &o1]);
        write(root, "f.txt", "1 main\n2\n3\n4 main\n5\n6\n7\n8 other\n");
        commit_all(root, "main 2");
        let bases = git(root, &["merge-base", "--all", "main", "other"]);
        assert_eq!(bases.lines().count(), 2, "criss-cross");
        let (git_tree, git_paths) = git_merge_tree(root, "main", "other");
        let mut session = MergeSession::open(root).unwrap();
        let main = oid(&git(root, &["rev-parse", "main"]));
        let other = oid(&git(root, &["rev-parse", "other"]));
        let result = session.merge(main, other, "main", "other").unwrap();
        assert_eq!(result.conflicts, git_paths);
        assert_eq!(result.tree, git_tree);
    }

    #[test]
    fn objects_stay_in_memory_until_persist() {
        let dir = init_repo();
        let root = dir.path();
        write(root, "f.txt", "base\n");
        let base = commit_all(root, "base");
        git(root, &["checkout", "-q", "-b", "side"]);
        write(root, "side.txt", "side\n");
        let side = commit_all(root, "side");
        git(root, &["checkout", "-q", "main"]);
        write(root, "main.txt", "main\n");
        let main = commit_all(root, "main");
        let _ = base;

        let mut session = MergeSession::open(root).unwrap();
        let merged = session.merge(main, side, "main", "side").unwrap();
        assert!(merged.is_clean());
        let commit = session
            .commit(merged.tree, &[main, side], "Merge side")
            .unwrap();
        let exists = |id: Oid| {
            git_out(root, &["cat-file", "-e", &id.to_string()])
                .status
                .success()
        };
        assert!(!exists(merged.tree), "tree must not be on disk yet");
        assert!(!exists(commit), "commit must not be on disk yet");
        session.persist().unwrap();
        assert!(exists(commit) && exists(merged.tree));
        git(root, &["fsck", "--no-dangling", "--connectivity-only"]);
        assert_eq!(
            git(root, &["rev-parse", &format!("{commit}^{{tree}}")]),
            merged.tree.to_string()
        );
        assert_eq!(
            git(
                root,
                &["log", "-1", "--format=%s|%an|%P", &commit.to_string()]
            ),
            format!("Merge side|Test|{main} {side}")
        );
        // The session goes on working after a persist.
        let again = session.merge(commit, side, "main", "side").unwrap();
        assert_eq!(again.tree, merged.tree);
        assert!(trees_equal(root, commit, commit).unwrap());
        assert!(!trees_equal(root, commit, main).unwrap());
    }

    #[test]
    fn update_ref_cas_moves_or_reports_moved() {
        let dir = init_repo();
        let root = dir.path();
        write(root, "f.txt", "1\n");
        let c1 = commit_all(root, "one");
        write(root, "f.txt", "2\n");
        let c2 = commit_all(root, "two");
        write(root, "f.txt", "3\n");
        let c3 = commit_all(root, "three");
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

    #[test]
    fn checkout_update_brings_checked_out_branch_to_new_commit() {
        let dir = init_repo();
        let root = dir.path();
        write(root, "keep.txt", "untouched\n");
        write(root, "keep/dir/also.txt", "untouched too\n");
        write(root, "mod.txt", "old\n");
        write(root, "del.txt", "bye\n");
        write(root, "gone/dir/file.txt", "whole dir goes\n");
        write(root, "old/name.txt", "renamed content\n");
        write(root, "tool.sh", "#!/bin/sh\n");
        write(root, "becomes_dir", "file now\n");
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
        assert_eq!(
            std::fs::read_to_string(root.join("mod.txt")).unwrap(),
            "new\n"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("new/deep/dir/name.txt")).unwrap(),
            "renamed content\n"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("becomes_dir/inner.txt")).unwrap(),
            "dir now\n"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("added.txt")).unwrap(),
            "added\n"
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

    /// Rough timing: 30 branches merged one by one into main on a 5,000-file repo.
    /// `cargo test --lib git::merge::tests::bench -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn bench_merge_30_branches() {
        let dir = init_repo();
        let root = dir.path();
        for i in 0..5000 {
            write(
                root,
                &format!("d{}/e{}/f{i}.txt", i % 50, i % 7),
                &format!("file {i}\nline 2\nline 3\n"),
            );
        }
        let base = commit_all(root, "base");
        let mut tips = Vec::new();
        for b in 0..30 {
            git(
                root,
                &["checkout", "-q", "-b", &format!("b{b}"), &base.to_string()],
            );
            for k in 0..3 {
                let i = b * 100 + k;
                write(
                    root,
                    &format!("d{}/e{}/f{i}.txt", i % 50, i % 7),
                    &format!("file {i} changed by {b}\nline 2\nline 3\n"),
                );
            }
            write(root, &format!("new/b{b}.txt"), "new\n");
            tips.push(commit_all(root, &format!("b{b}")));
        }
        git(root, &["checkout", "-q", "main"]);

        let start = std::time::Instant::now();
        let mut session = MergeSession::open(root).unwrap();
        let mut tip = base;
        for (b, theirs) in tips.iter().enumerate() {
            let r = session
                .merge(tip, *theirs, "main", &format!("b{b}"))
                .unwrap();
            assert!(r.is_clean());
            let c = session.commit(r.tree, &[tip, *theirs], "merge").unwrap();
            session.persist().unwrap();
            update_ref_cas(root, "refs/heads/main", tip, c, "merge").unwrap();
            tip = c;
        }
        let gix_ms = start.elapsed().as_secs_f64() * 1000.0 / 30.0;

        git(root, &["branch", "-f", "gitmain", &base.to_string()]);
        let start = std::time::Instant::now();
        let mut tip = base.to_string();
        for (b, theirs) in tips.iter().enumerate() {
            let tree = git(
                root,
                &["merge-tree", "--write-tree", &tip, &theirs.to_string()],
            );
            let c = git(
                root,
                &[
                    "commit-tree",
                    &tree,
                    "-p",
                    &tip,
                    "-p",
                    &theirs.to_string(),
                    "-m",
                    &format!("merge {b}"),
                ],
            );
            git(root, &["update-ref", "refs/heads/gitmain", &c, &tip]);
            tip = c;
        }
        let git_ms = start.elapsed().as_secs_f64() * 1000.0 / 30.0;
        assert!(trees_equal(root, oid(&tip), oid(&git(root, &["rev-parse", "main"]))).unwrap());
        eprintln!("per merge+commit+ref: mpw {gix_ms:.1} ms, git CLI {git_ms:.1} ms");
    }
}
