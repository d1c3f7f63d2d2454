//! Snapshots of a worktree: what changed, a commit of it (what
//! `git add -A && git commit` records), and a reset back to a commit.

use super::Oid;
use super::checkout::{patch_index, remove_file_and_empty_parents, write_entries};
use super::error::{GitError, ctx};
use super::ignore::IgnoreRules;
use super::repo::{Local, Repo, Walk, match_all, open_repo, write_commit};
use gix::bstr::{BStr, BString, ByteSlice};
use gix::refs::transaction::PreviousValue;
use gix::status::plumbing::index_as_worktree;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

/// A path that differs between the worktree and its HEAD commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// `/`-separated, relative to the worktree root.
    pub path: String,
    pub kind: ChangeKind,
}

/// Paths a snapshot or reset leaves alone: the worktree's baseline (files
/// copied in, what setup commands left; exact paths, or folders ending in
/// `/`) and what the plan's ignore rules match.
#[derive(Debug, Clone, Default)]
pub struct Excluded {
    pub paths: BTreeSet<String>,
    pub ignore: Option<Arc<IgnoreRules>>,
}

impl Excluded {
    pub fn paths(paths: impl IntoIterator<Item = String>) -> Self {
        Excluded {
            paths: paths.into_iter().collect(),
            ignore: None,
        }
    }

    pub fn with_ignore(mut self, rules: Arc<IgnoreRules>) -> Self {
        self.ignore = Some(rules);
        self
    }

    pub fn contains(&self, path: &str) -> bool {
        self.in_baseline(path) || self.ignore.as_ref().is_some_and(|r| r.is_ignored(path))
    }

    fn in_baseline(&self, path: &str) -> bool {
        if self.paths.is_empty() {
            return false;
        }
        if self.paths.contains(path) {
            return true;
        }
        // Any folder entry that is a prefix of the path.
        let mut end = 0;
        while let Some(i) = path[end..].find('/') {
            end += i + 1;
            if self.paths.contains(&path[..end]) {
                return true;
            }
        }
        false
    }
}

fn full_path(workdir: &Path, rel: &BStr) -> Result<PathBuf, GitError> {
    gix::path::from_bstr(rel)
        .map(|p| workdir.join(p))
        .map_err(ctx(format!("path {rel}")))
}

fn workdir_of(repo: &gix::Repository) -> Result<PathBuf, GitError> {
    repo.workdir()
        .map(Path::to_path_buf)
        .ok_or_else(|| GitError::Bare {
            path: repo.path().to_path_buf(),
        })
}

fn head_tree(repo: &gix::Repository) -> Result<(Oid, Oid), GitError> {
    let commit = repo.head_commit().map_err(ctx("reading HEAD"))?;
    let tree = commit
        .tree_id()
        .map_err(ctx("reading HEAD's tree"))?
        .detach();
    Ok((commit.id, tree))
}

/// Index against worktree: changed tracked paths and untracked (never
/// ignored) files; stat refreshes for the rest.
#[derive(Default)]
struct Scan {
    paths: Vec<BString>,
    /// Stat refreshes of unchanged entries, by index position.
    stats: Vec<(usize, gix::index::entry::Stat)>,
    /// Racily clean entries git smudges (size 0) so they are checked again.
    smudge: Vec<usize>,
}

impl<'index> index_as_worktree::VisitEntry<'index> for Scan {
    type ContentChange = ();
    type SubmoduleStatus = ();

    fn visit_entry(
        &mut self,
        _entries: &'index [gix::index::Entry],
        _entry: &'index gix::index::Entry,
        entry_index: usize,
        rela_path: &'index BStr,
        status: index_as_worktree::EntryStatus<(), ()>,
    ) {
        use index_as_worktree::{Change as C, EntryStatus as S};
        match status {
            S::NeedsUpdate(stat) => self.stats.push((entry_index, stat)),
            S::Change(C::SubmoduleModification(_)) => {}
            S::Change(C::Modification {
                set_entry_stat_size_zero,
                ..
            }) => {
                if set_entry_stat_size_zero {
                    self.smudge.push(entry_index);
                }
                self.paths.push(rela_path.to_owned());
            }
            _ => self.paths.push(rela_path.to_owned()),
        }
    }
}

impl Scan {
    fn emit(
        &mut self,
        entry: gix::dir::EntryRef<'_>,
        _collapsed: Option<gix::dir::entry::Status>,
    ) -> gix::dir::walk::Action {
        use gix::dir::entry::{Kind, Status};
        // Nested repositories are not something `git add -A` records as blobs.
        if entry.status == Status::Untracked
            && matches!(entry.disk_kind, Some(Kind::File | Kind::Symlink))
        {
            self.paths.push(entry.rela_path.into_owned());
        }
        std::ops::ControlFlow::Continue(())
    }
}

/// Submodules are not part of mpw's snapshots.
#[derive(Clone, Copy)]
struct NoSubmodules;

impl index_as_worktree::traits::SubmoduleStatus for NoSubmodules {
    type Output = ();
    fn status(&mut self, _: &gix::index::Entry, _: &BStr) -> gix::Result<Option<()>> {
        Ok(None)
    }
}

/// Below this many index entries, files are compared on one thread
/// (starting threads costs more than it saves).
const SMALL_INDEX: usize = 2_000;

fn status_threads(small: bool) -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    if small {
        return 1;
    }
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, Into::into))
}

/// The walk's delegate: untracked files into `scan`. Nested repositories
/// are found here, as gix finds them, but only below the worktree's root:
/// gix would also take the worktree itself for a nested repository (its
/// `.git` file read, HEAD, `commondir` and real paths resolved) on each walk.
struct Untracked<'a> {
    scan: &'a mut Scan,
    workdir: &'a Path,
}

impl gix::dir::walk::Delegate for Untracked<'_> {
    fn emit(
        &mut self,
        entry: gix::dir::EntryRef<'_>,
        collapsed: Option<gix::dir::entry::Status>,
    ) -> gix::dir::walk::Action {
        self.scan.emit(entry, collapsed)
    }

    fn can_recurse(
        &mut self,
        entry: gix::dir::EntryRef<'_>,
        for_deletion: Option<gix::dir::walk::ForDeletionMode>,
        worktree_root_is_repository: bool,
    ) -> bool {
        use gix::dir::entry::{Kind, Status};
        if entry.index_kind == Some(Kind::Repository) {
            // A submodule's checkout.
            return false;
        }
        if !entry.rela_path.is_empty()
            && entry.status == Status::Untracked
            && entry.disk_kind == Some(Kind::Directory)
            && let Ok(dir) = full_path(self.workdir, entry.rela_path.as_ref())
            && gix::discover::is_git(&dir.join(gix::discover::DOT_GIT_DIR)).is_ok()
        {
            return false;
        }
        entry.status.can_recurse(
            entry.disk_kind,
            entry.pathspec_match,
            for_deletion,
            worktree_root_is_repository,
        )
    }
}

/// Untracked (never ignored) files into `scan`, as `Repository::dirwalk`
/// finds them, with the config's ignore rules kept while the index is the
/// same: each costs file system calls per task.
fn walk_untracked(
    local: &mut Local,
    index: &gix::index::File,
    workdir: &Path,
    interrupt: &AtomicBool,
    scan: &mut Scan,
) -> Result<(), GitError> {
    let doing = "listing untracked files";
    let git_dir_realpath = local.git_dir_realpath()?;
    let Local { repo, walk, .. } = local;
    if walk.is_none() {
        use gix::worktree::stack::state::ignore::Source;
        let excludes = repo
            .excludes(index, None, Source::WorktreeThenIdMappingIfNotSkipped)
            .map_err(ctx(doing))?
            .detach();
        *walk = Some(Walk { excludes });
    }
    let Some(walk) = walk.as_ref() else {
        return Ok(());
    };
    let mut excludes = walk.excludes.clone();
    let mut pathspec = match_all()?;
    let fs = repo.filesystem_options().map_err(ctx(doing))?;
    let icase = fs.ignore_case.then(|| index.prepare_icase_backing());
    let mut options: gix::dir::walk::Options<'_> = repo
        .dirwalk_options()
        .map_err(ctx(doing))?
        .emit_untracked(gix::dir::walk::EmissionMode::Matching)
        .into();
    // Nested repositories are left to `Untracked::can_recurse`.
    options.recurse_repositories = true;
    gix::dir::walk(
        workdir,
        gix::dir::walk::Context {
            should_interrupt: Some(interrupt),
            git_dir_realpath: &git_dir_realpath,
            current_dir: repo.current_dir(),
            index,
            ignore_case_index_lookup: icase.as_ref(),
            pathspec: &mut pathspec,
            // Only called for pathspecs with attributes; ours is empty.
            pathspec_attributes: &mut |_, _, _, _| false,
            excludes: Some(&mut excludes),
            objects: &repo.objects,
            explicit_traversal_root: Some(workdir),
        },
        options,
        &mut Untracked { scan, workdir },
    )
    .map_err(ctx(doing))?;
    Ok(())
}

/// Paths where the index differs from `head_tree` (staged changes), kept
/// while index and tree are the same.
fn staged(
    local: &mut Local,
    index: &gix::index::File,
    head_tree: Oid,
) -> Result<Vec<BString>, GitError> {
    if let Some((tree, paths)) = &local.staged
        && *tree == head_tree
    {
        return Ok(paths.clone());
    }
    let doing = "reading the staged changes";
    let repo = &local.repo;
    let tree_index: gix::index::State =
        repo.index_from_tree(&head_tree).map_err(ctx(doing))?.into();
    let mut paths = Vec::new();
    gix::diff::index(
        &tree_index,
        index,
        |change| {
            if let gix::diff::index::ChangeRef::Rewrite {
                source_location, ..
            } = &change
            {
                paths.push(source_location.as_ref().to_owned());
            }
            paths.push(change.location().to_owned());
            Ok(std::ops::ControlFlow::Continue(()))
        },
        None::<gix::diff::index::RewriteOptions<'_, gix::Repository>>,
        &mut match_all()?,
        // Only called for pathspecs with attributes; ours is empty.
        &mut |_, _, _, _| false,
    )
    .map_err(ctx(doing))?;
    local.staged = Some((head_tree, paths.clone()));
    Ok(paths)
}

/// Paths whose worktree state differs from HEAD's tree (staged or not,
/// untracked included, ignored never), minus excluded ones, with their kind.
fn collect(
    local: &mut Local,
    head_tree: Oid,
    excluded: &Excluded,
) -> Result<BTreeMap<BString, ChangeKind>, GitError> {
    let doing = "reading the worktree status";
    let mut index = local.index()?;
    let workdir = workdir_of(&local.repo)?;
    let interrupt = AtomicBool::new(false);
    let mut scan = Scan::default();
    // Tracked files, then the untracked ones, both on this thread: gix's
    // combined status starts two threads per call (docs/ARCHITECTURE.md,
    // "Per-task cost").
    let small = index.entries().len() < SMALL_INDEX;
    let repo = &local.repo;
    let fs = repo.filesystem_options().map_err(ctx(doing))?;
    let stat = repo.stat_options().map_err(ctx(doing))?;
    let quick = super::quick_status::tracked_unchanged(&index, &workdir, fs, stat);
    if quick.is_none() {
        use gix::worktree::stack::state::attributes::Source;
        let stack = repo
            .attributes_only(&index, Source::WorktreeThenIdMapping)
            .map_err(ctx(doing))?
            .detach();
        let (filter, _) = gix::filter::Pipeline::new(repo, stack.clone())
            .map_err(ctx(doing))?
            .into_parts();
        let pathspec = match_all()?;
        let objects = repo.objects.clone().into_arc().map_err(ctx(doing))?;
        index_as_worktree(
            &index,
            &workdir,
            &mut scan,
            index_as_worktree::traits::FastEq,
            NoSubmodules,
            objects,
            &mut gix::progress::Discard,
            index_as_worktree::Context {
                pathspec,
                stack,
                filter,
                should_interrupt: &interrupt,
            },
            index_as_worktree::Options {
                fs,
                thread_limit: Some(status_threads(small)),
                stat,
                fscache: false,
            },
        )
        .map_err(ctx(doing))?;
    }
    // Nothing in the worktree but tracked files: nothing untracked either.
    if quick.is_none_or(|q| q.others) {
        walk_untracked(local, &index, &workdir, &interrupt, &mut scan)?;
    }
    let mut candidates: BTreeSet<BString> = scan.paths.into_iter().collect();
    // Staged changes: the index against HEAD's tree.
    candidates.extend(staged(local, &index, head_tree)?);
    let repo = &local.repo;
    // Keep the stat refreshes, or every later status pays for them again.
    if !scan.stats.is_empty() || !scan.smudge.is_empty() {
        let entries = index.entries_mut();
        for (i, stat) in scan.stats {
            entries[i].stat = stat;
        }
        for i in scan.smudge {
            entries[i].stat.size = 0;
        }
        if let Err(e) = index.write(Default::default()) {
            tracing::debug!("could not write index stat refreshes: {e}");
        }
    }
    let mut out = BTreeMap::new();
    if candidates.is_empty() {
        return Ok(out);
    }
    let tree = repo
        .find_tree(head_tree)
        .map_err(ctx("reading HEAD's tree"))?;
    for path in candidates {
        let Ok(s) = path.to_str() else { continue };
        if excluded.contains(s) {
            continue;
        }
        let on_disk = full_path(&workdir, path.as_bstr())
            .map(|p| std::fs::symlink_metadata(p).is_ok())
            .unwrap_or(false);
        let in_head = tree
            .lookup_entry_by_path(s)
            .map_err(ctx(format!("looking up {s}")))?
            .is_some_and(|e| !e.mode().is_tree());
        let kind = match (in_head, on_disk) {
            (false, true) => ChangeKind::Added,
            (true, false) => ChangeKind::Deleted,
            (true, true) => ChangeKind::Modified,
            (false, false) => continue,
        };
        out.insert(path, kind);
    }
    Ok(out)
}

/// What changed in the worktree against its HEAD commit, sorted by path.
pub fn changes(worktree: &Path, excluded: &Excluded) -> Result<Vec<Change>, GitError> {
    Repo::open(worktree)?.changes(excluded)
}

/// Where a snapshot commit goes.
#[derive(Debug, Clone, Copy)]
pub enum CommitTarget<'a> {
    /// Onto the checked-out branch (only if it is still at HEAD's commit);
    /// the index follows, so `git status` is clean afterwards.
    Head,
    /// To this full ref name, created or overwritten, parent HEAD's commit;
    /// HEAD, branch and index stay as they are.
    Ref(&'a str),
}

/// Commit what changed in the worktree (never ignored or excluded files);
/// None when nothing changed.
pub fn commit_worktree(
    worktree: &Path,
    excluded: &Excluded,
    message: &str,
    target: CommitTarget,
) -> Result<Option<Oid>, GitError> {
    let repo = Repo::open(worktree)?;
    let changed = repo.changes(excluded)?;
    repo.commit_changes(&changed, message, target)
}

impl Repo {
    /// What changed in the worktree against its HEAD commit, sorted by path.
    pub fn changes(&self, excluded: &Excluded) -> Result<Vec<Change>, GitError> {
        self.with(|local| {
            let (_, tree) = head_tree(&local.repo)?;
            Ok(collect(local, tree, excluded)?
                .into_iter()
                .map(|(p, kind)| Change {
                    path: p.to_str_lossy().into_owned(),
                    kind,
                })
                .collect())
        })
    }

    /// Commit the given changes (as `changes` just reported them) without
    /// reading the status again; None when there are none.
    pub fn commit_changes(
        &self,
        changed: &[Change],
        message: &str,
        target: CommitTarget,
    ) -> Result<Option<Oid>, GitError> {
        if changed.is_empty() {
            return Ok(None);
        }
        self.with(|local| commit_changes_in(&local.repo, changed, message, target))
    }

    /// Make files and index equal to `commit` (HEAD's commit): like
    /// `git reset --hard && git clean -fd`, but excluded paths and ignored files stay.
    pub fn reset_worktree(&self, commit: Oid, excluded: &Excluded) -> Result<(), GitError> {
        self.with(|local| reset_worktree_in(local, commit, excluded))
    }
}

fn commit_changes_in(
    repo: &gix::Repository,
    changed: &[Change],
    message: &str,
    target: CommitTarget,
) -> Result<Option<Oid>, GitError> {
    let workdir = workdir_of(repo)?;
    let (head, head_tree) = head_tree(repo)?;
    let changed: BTreeMap<BString, ChangeKind> = changed
        .iter()
        .map(|c| (BString::from(c.path.as_str()), c.kind))
        .collect();
    let doing = || format!("snapshotting {}", workdir.display());
    let (mut pipeline, index) = repo.filter_pipeline(None).map_err(ctx(doing()))?;
    let mut editor = repo.edit_tree(head_tree).map_err(ctx(doing()))?;
    // What the index gets when the commit lands on the checked-out branch.
    let mut written = gix::index::State::new(repo.object_hash());
    let mut removed = BTreeSet::new();
    for path in changed.keys() {
        let fs_path = full_path(&workdir, path.as_bstr())?;
        // Stat before reading: a write racing with us looks changed next time.
        let stat = gix::index::fs::Metadata::from_path_no_follow(&fs_path)
            .ok()
            .and_then(|m| gix::index::entry::Stat::from_fs(&m).ok());
        match pipeline
            .worktree_file_to_object(path.as_bstr(), &index)
            .map_err(ctx(format!("adding {path}")))?
        {
            Some((id, kind, _)) => {
                let kind = keep_exec_bit(repo, &index, path.as_bstr(), kind);
                editor
                    .upsert(path.as_bstr(), kind, id)
                    .map_err(ctx(format!("adding {path}")))?;
                written.dangerously_push_entry(
                    stat.unwrap_or_default(),
                    id,
                    gix::index::entry::Flags::empty(),
                    kind.into(),
                    path.as_bstr(),
                );
            }
            None => {
                editor
                    .remove(path.as_bstr())
                    .map_err(ctx(format!("removing {path}")))?;
                removed.insert(path.clone());
            }
        }
    }
    let tree = editor.write().map_err(ctx(doing()))?.detach();
    if tree == head_tree {
        return Ok(None);
    }
    let id = write_commit(repo, tree, &[head], message)?;
    match target {
        CommitTarget::Head => {
            let name = repo
                .head_name()
                .map_err(ctx("reading HEAD"))?
                .ok_or_else(|| GitError::gix(doing(), "HEAD is detached"))?;
            repo.reference(
                name.as_ref(),
                id,
                PreviousValue::MustExistAndMatch(gix::refs::Target::Object(head)),
                format!("commit: {}", message.lines().next().unwrap_or_default()),
            )
            .map_err(ctx(format!("moving {}", name.as_bstr())))?;
            apply_index(repo, &written, &removed)?;
        }
        CommitTarget::Ref(name) => {
            repo.reference(name, id, PreviousValue::Any, "mpw: keep a task's work")
                .map_err(ctx(format!("writing {name}")))?;
        }
    }
    Ok(Some(id))
}

/// Where the file system has no exec bit (`core.fileMode=false`, always on
/// Windows), a file keeps the exec bit its index entry has, as `git add` does.
fn keep_exec_bit(
    repo: &gix::Repository,
    index: &gix::index::State,
    path: &BStr,
    kind: gix::object::tree::EntryKind,
) -> gix::object::tree::EntryKind {
    use gix::object::tree::EntryKind;
    let trusted = repo
        .config_snapshot()
        .boolean("core.fileMode")
        .unwrap_or(true);
    let was_exec = index
        .entry_by_path(path)
        .is_some_and(|e| e.mode == gix::index::entry::Mode::FILE_EXECUTABLE);
    if kind == EntryKind::Blob && was_exec && !trusted {
        EntryKind::BlobExecutable
    } else {
        kind
    }
}

fn apply_index(
    repo: &gix::Repository,
    written: &gix::index::State,
    removed: &BTreeSet<BString>,
) -> Result<(), GitError> {
    let doing = "updating the index";
    let mut index = repo.open_index().map_err(ctx(doing))?;
    patch_index(&mut index, &[written], removed);
    index.write(Default::default()).map_err(ctx(doing))?;
    Ok(())
}

/// Make files and index equal to `commit` (HEAD's commit): like
/// `git reset --hard && git clean -fd`, but excluded paths and ignored files stay.
pub fn reset_worktree(worktree: &Path, commit: Oid, excluded: &Excluded) -> Result<(), GitError> {
    Repo::open(worktree)?.reset_worktree(commit, excluded)
}

fn reset_worktree_in(local: &mut Local, commit: Oid, excluded: &Excluded) -> Result<(), GitError> {
    let workdir = workdir_of(&local.repo)?;
    let (head, head_tree) = head_tree(&local.repo)?;
    if head != commit {
        return Err(GitError::gix(
            format!("resetting {}", workdir.display()),
            format!("HEAD is at {head}, not {commit}"),
        ));
    }
    let changed = collect(local, head_tree, excluded)?;
    if changed.is_empty() {
        return Ok(());
    }
    let repo = &local.repo;
    let doing = || format!("resetting {}", workdir.display());
    let tree = repo.find_tree(head_tree).map_err(ctx(doing()))?;
    let mut restore = gix::index::State::new(repo.object_hash());
    let mut drop = BTreeSet::new();
    for (path, kind) in &changed {
        let s = path.to_str_lossy();
        let entry = tree
            .lookup_entry_by_path(s.as_ref())
            .map_err(ctx(doing()))?;
        match (kind, entry) {
            (ChangeKind::Added, _) | (_, None) => {
                drop.insert(path.clone());
            }
            (_, Some(e)) => {
                // A file may have become a folder (or the reverse): clear the way.
                let p = full_path(&workdir, path.as_bstr())?;
                if p.is_dir() && !p.is_symlink() {
                    let _ = std::fs::remove_dir_all(&p);
                }
                restore.dangerously_push_entry(
                    Default::default(),
                    e.object_id(),
                    gix::index::entry::Flags::empty(),
                    e.mode().into(),
                    path.as_bstr(),
                );
            }
        }
    }
    for path in &drop {
        remove_file_and_empty_parents(&workdir, path.as_bstr())?;
    }
    if !restore.entries().is_empty() {
        restore.sort_entries();
        write_entries(repo, &workdir, &mut restore)?;
    }
    apply_index(repo, &restore, &drop)
}

/// A task's commit found by its trailers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskCommit {
    pub id: Oid,
    pub attempt: Option<u32>,
}

/// Walk first parents from `tip` down to `stop_at` (exclusive) for the commit
/// with trailers `Mpw-Run: <run_id>` and `Mpw-Task: <task>`.
pub fn find_task_commit(
    repo: &Path,
    tip: Oid,
    stop_at: Oid,
    run_id: &str,
    task: &str,
) -> Result<Option<TaskCommit>, GitError> {
    let r = open_repo(repo)?;
    let want_run = format!("Mpw-Run: {run_id}");
    let want_task = format!("Mpw-Task: {task}");
    let mut cur = Some(tip);
    while let Some(id) = cur {
        if id == stop_at {
            break;
        }
        let c = r
            .find_commit(id)
            .map_err(ctx(format!("reading commit {id}")))?;
        let msg = c.message_raw_sloppy().to_str_lossy().into_owned();
        let lines: Vec<&str> = msg.lines().map(str::trim).collect();
        if lines.contains(&want_run.as_str()) && lines.contains(&want_task.as_str()) {
            let attempt = lines
                .iter()
                .find_map(|l| l.strip_prefix("Mpw-Attempt: "))
                .and_then(|a| a.parse().ok());
            return Ok(Some(TaskCommit { id, attempt }));
        }
        cur = c.parent_ids().next().map(|p| p.detach());
    }
    Ok(None)
}

// These tests check against the git CLI, which a Windows build under Wine lacks.
#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use crate::git::test_support::{commit_all, git, init_repo_named, write_files};

    fn repo() -> (tempfile::TempDir, PathBuf) {
        let (d, p) = init_repo_named("r ü");
        write_files(
            &p,
            &[
                (".gitignore", "*.log\n"),
                ("keep.txt", "keep\n"),
                ("mod.txt", "old\n"),
                ("del.txt", "del\n"),
                ("d/x.sh", "echo\n"),
            ],
        );
        commit_all(&p, "init");
        (d, p)
    }

    fn mess_up(p: &Path) {
        std::fs::write(p.join("mod.txt"), "new\n").unwrap();
        std::fs::remove_file(p.join("del.txt")).unwrap();
        std::fs::create_dir_all(p.join("new dir/ü")).unwrap();
        std::fs::write(p.join("new dir/ü/a b.txt"), "nested\n").unwrap();
        std::fs::write(p.join("build.log"), "ignored\n").unwrap();
        std::fs::write(p.join(".env"), "SECRET\n").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(p.join("d/x.sh"), std::fs::Permissions::from_mode(0o755))
                .unwrap();
            std::os::unix::fs::symlink("keep.txt", p.join("link")).unwrap();
        }
    }

    fn excluded() -> Excluded {
        Excluded::paths([".env".to_string()])
    }

    /// What a kept handle sees changed.
    fn paths(h: &Repo) -> Vec<String> {
        let ch = h.changes(&Excluded::default()).unwrap();
        ch.into_iter().map(|c| c.path).collect()
    }

    /// What a kept handle sees changed, committed onto HEAD through it.
    fn commit_through(h: &Repo, message: &str) -> Oid {
        let ch = h.changes(&Excluded::default()).unwrap();
        h.commit_changes(&ch, message, CommitTarget::Head)
            .unwrap()
            .unwrap()
    }

    /// One handle kept across tasks sees what changed between its uses:
    /// files, the index (staged by git itself), `.gitignore` edits, commits.
    #[test]
    fn one_kept_handle_sees_every_change_between_uses() {
        let (_d, p) = repo();
        let handle = Repo::open(&p).unwrap();
        assert!(paths(&handle).is_empty());
        std::fs::write(p.join("keep.txt"), "same size\n").unwrap();
        assert_eq!(paths(&handle), ["keep.txt"]);
        git(&p, &["checkout", "--", "keep.txt"]);
        assert!(paths(&handle).is_empty());
        // Unstaged by git: the index file changed under the handle.
        git(&p, &["rm", "-q", "--cached", "keep.txt"]);
        assert_eq!(paths(&handle), ["keep.txt"]);
        git(&p, &["add", "keep.txt"]);
        assert!(paths(&handle).is_empty());
        // A new ignore rule, then the same rule taken back.
        std::fs::write(p.join("out.tmp"), "x\n").unwrap();
        assert_eq!(paths(&handle), ["out.tmp"]);
        std::fs::write(p.join(".gitignore"), "*.log\n*.tmp\n").unwrap();
        assert_eq!(paths(&handle), [".gitignore"]);
        std::fs::write(p.join(".gitignore"), "*.log\n").unwrap();
        assert_eq!(paths(&handle), ["out.tmp"]);
        // A commit made elsewhere moves HEAD; the handle follows.
        commit_all(&p, "more");
        assert!(paths(&handle).is_empty());
        std::fs::write(p.join("mod.txt"), "newer\n").unwrap();
        let id = commit_through(&handle, "by the handle");
        assert_eq!(git(&p, &["rev-parse", "HEAD"]), id.to_string());
        assert!(paths(&handle).is_empty());
        assert_eq!(git(&p, &["status", "--porcelain"]), "");
    }

    /// The staged part is kept while index and HEAD's tree stay: HEAD moved
    /// with the index left as it was must show what now differs.
    #[test]
    fn a_kept_handle_sees_head_move_under_an_unchanged_index() {
        let (_d, p) = repo();
        let handle = Repo::open(&p).unwrap();
        assert!(paths(&handle).is_empty());
        std::fs::write(p.join("mod.txt"), "second\n").unwrap();
        commit_all(&p, "second");
        assert!(paths(&handle).is_empty());
        // HEAD back one commit, index and files as they are: mod.txt is staged.
        git(&p, &["reset", "-q", "--soft", "HEAD~1"]);
        assert_eq!(paths(&handle), ["mod.txt"]);
        git(&p, &["reset", "-q", "--soft", "HEAD@{1}"]);
        assert!(paths(&handle).is_empty());
    }

    /// In a linked worktree (the runner's case) the worktree's own `.git`
    /// file is neither a change nor makes the root a nested repository; a
    /// nested repository below is left out, as `git add -A` records no blobs
    /// of it; a folder with a `.git` that is no repository is walked.
    #[test]
    fn nested_repositories_are_left_out_of_a_linked_worktree() {
        let (d, p) = repo();
        let wt = d.path().join("wt");
        git(
            &p,
            &["worktree", "add", "-q", "-b", "side", wt.to_str().unwrap()],
        );
        let handle = Repo::open(&wt).unwrap();
        assert!(paths(&handle).is_empty());
        crate::git::test_support::init_repo_at(&wt.join("inner"));
        std::fs::write(wt.join("inner/in.txt"), "x\n").unwrap();
        std::fs::create_dir_all(wt.join("plain/deep")).unwrap();
        std::fs::write(wt.join("plain/deep/a.txt"), "a\n").unwrap();
        std::fs::create_dir_all(wt.join("fake")).unwrap();
        std::fs::write(wt.join("fake/.git"), "not a repository\n").unwrap();
        std::fs::write(wt.join("fake/f.txt"), "f\n").unwrap();
        assert_eq!(paths(&handle), ["fake/f.txt", "plain/deep/a.txt"]);
        let id = commit_through(&handle, "add");
        assert_eq!(git(&wt, &["rev-parse", "HEAD"]), id.to_string());
        assert_eq!(
            git(&wt, &["ls-tree", "-r", "--name-only", "HEAD"])
                .lines()
                .filter(|l| l.contains('/'))
                .collect::<Vec<_>>(),
            ["d/x.sh", "fake/f.txt", "plain/deep/a.txt"]
        );
        assert!(paths(&handle).is_empty());
    }

    #[test]
    fn commit_records_what_git_add_all_would_minus_excluded() {
        let (_d, p) = repo();
        mess_up(&p);
        let ch = changes(&p, &excluded()).unwrap();
        let paths: Vec<&str> = ch.iter().map(|c| c.path.as_str()).collect();
        assert!(
            paths.contains(&"mod.txt")
                && paths.contains(&"del.txt")
                && paths.contains(&"new dir/ü/a b.txt")
        );
        assert!(!paths.contains(&".env") && !paths.contains(&"build.log"));
        let id = commit_worktree(
            &p,
            &excluded(),
            "snap\n\nMpw-Run: R\nMpw-Task: W/T\n",
            CommitTarget::Head,
        )
        .unwrap()
        .unwrap();
        assert_eq!(git(&p, &["rev-parse", "HEAD"]), id.to_string());
        let ns = git(
            &p,
            &[
                "-c",
                "core.quotepath=off",
                "show",
                "--name-status",
                "--format=",
                "HEAD",
            ],
        );
        let mut expect = vec!["D\tdel.txt", "M\tmod.txt", "A\tnew dir/ü/a b.txt"];
        if cfg!(unix) {
            expect.insert(0, "M\td/x.sh");
            expect.insert(1, "A\tlink");
        }
        let mut got: Vec<&str> = ns.lines().collect();
        got.sort();
        expect.sort();
        assert_eq!(got, expect);
        if cfg!(unix) {
            assert!(git(&p, &["ls-tree", "HEAD", "d/x.sh"]).starts_with("100755"));
            assert!(git(&p, &["ls-tree", "HEAD", "link"]).starts_with("120000"));
        }
        assert_eq!(git(&p, &["status", "--porcelain"]), "?? .env");
        assert_eq!(
            git(&p, &["write-tree"]),
            git(&p, &["rev-parse", "HEAD^{tree}"])
        );
        git(&p, &["fsck", "--no-progress"]);
        assert_eq!(
            commit_worktree(&p, &excluded(), "again", CommitTarget::Head).unwrap(),
            None
        );
        let found = find_task_commit(
            &p,
            id,
            git(&p, &["rev-parse", "HEAD~1"]).parse().unwrap(),
            "R",
            "W/T",
        )
        .unwrap();
        assert_eq!(found.map(|f| f.id), Some(id));
        assert_eq!(find_task_commit(&p, id, id, "R", "W/T").unwrap(), None);
        assert!(
            find_task_commit(
                &p,
                id,
                git(&p, &["rev-parse", "HEAD~1"]).parse().unwrap(),
                "OTHER",
                "W/T"
            )
            .unwrap()
            .is_none()
        );
    }

    #[test]
    fn ref_target_keeps_branch_and_index_and_reset_restores() {
        let (_d, p) = repo();
        let head = git(&p, &["rev-parse", "HEAD"]);
        mess_up(&p);
        let id = commit_worktree(
            &p,
            &excluded(),
            "kept",
            CommitTarget::Ref("refs/mpw/R/failed/W/T"),
        )
        .unwrap()
        .unwrap();
        assert_eq!(git(&p, &["rev-parse", "HEAD"]), head);
        assert_eq!(
            git(&p, &["rev-parse", "refs/mpw/R/failed/W/T"]),
            id.to_string()
        );
        assert_eq!(git(&p, &["show", "refs/mpw/R/failed/W/T:mod.txt"]), "new");
        reset_worktree(&p, head.parse().unwrap(), &excluded()).unwrap();
        assert!(changes(&p, &excluded()).unwrap().is_empty());
        assert_eq!(std::fs::read_to_string(p.join("mod.txt")).unwrap(), "old\n");
        assert!(p.join("del.txt").exists());
        assert!(
            !p.join("new dir").exists(),
            "added files and their empty folders are gone"
        );
        assert!(
            p.join(".env").exists() && p.join("build.log").exists(),
            "excluded and ignored stay"
        );
        assert_eq!(git(&p, &["status", "--porcelain"]), "?? .env");
        assert_eq!(
            git(&p, &["write-tree"]),
            git(&p, &["rev-parse", "HEAD^{tree}"])
        );
    }

    #[test]
    fn staged_changes_count_too() {
        let (_d, p) = repo();
        std::fs::write(p.join("staged.txt"), "s\n").unwrap();
        git(&p, &["add", "staged.txt"]);
        git(&p, &["rm", "-q", "keep.txt"]);
        let ch = changes(&p, &Excluded::default()).unwrap();
        assert_eq!(
            ch,
            vec![
                Change {
                    path: "keep.txt".into(),
                    kind: ChangeKind::Deleted
                },
                Change {
                    path: "staged.txt".into(),
                    kind: ChangeKind::Added
                }
            ]
        );
        commit_worktree(&p, &Excluded::default(), "s", CommitTarget::Head)
            .unwrap()
            .unwrap();
        assert_eq!(git(&p, &["status", "--porcelain"]), "");
    }

    #[test]
    fn excluded_folders_cover_their_files() {
        let e = Excluded::paths(["node_modules/".to_string(), ".env".to_string()]);
        assert!(e.contains("node_modules/a/b.js"));
        assert!(e.contains(".env"));
        assert!(!e.contains("src/node_modules.rs"));
        assert!(!e.contains(".env.local"));
    }
}
