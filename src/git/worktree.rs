//! Repositories, branches and linked worktrees.

use super::Oid;
use super::error::{GitError, ctx};
use super::registrations::{
    Registration, clear_leftovers, dangling_dot_git, discard, is_empty_dir, refuse_checked_out,
    registrations, remove_dir, unfinished,
};
use super::repo::{Repo, open_repo};
use gix::bstr::ByteSlice;
use gix::refs::transaction::PreviousValue;
use gix::worktree::add::Head;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// Facts about the repository around a path.
#[derive(Debug, Clone)]
pub struct RepoInfo {
    /// Root of the worktree containing the path (main or linked).
    pub workdir: PathBuf,
    /// Root of the main worktree.
    pub main_workdir: PathBuf,
    /// The git common dir, absolute.
    pub common_dir: PathBuf,
    /// Short name of the branch checked out in `workdir`; None when detached.
    pub head_branch: Option<String>,
    /// Commit HEAD points at.
    pub head: Oid,
}

pub(super) fn canon(p: &Path) -> PathBuf {
    gix::path::realpath(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Find the repository around `path`: not one, bare, or without commits are errors.
pub fn discover(path: &Path) -> Result<RepoInfo, GitError> {
    let repo = gix::discover(path).map_err(|_| GitError::NotARepo {
        path: path.to_path_buf(),
    })?;
    let Some(workdir) = repo.workdir().map(canon) else {
        return Err(GitError::Bare {
            path: canon(repo.git_dir()),
        });
    };
    let head = match repo.head_id() {
        Ok(id) => id.detach(),
        Err(_) => return Err(GitError::NoCommits { path: workdir }),
    };
    let head_branch = repo
        .head_name()
        .map_err(ctx("reading HEAD"))?
        .map(|n| n.shorten().to_string());
    let common_dir = canon(repo.common_dir());
    let main_workdir = match repo.main_repo() {
        Ok(main) => main.workdir().map(canon).unwrap_or_else(|| workdir.clone()),
        Err(_) => workdir.clone(),
    };
    Ok(RepoInfo {
        workdir,
        main_workdir,
        common_dir,
        head_branch,
        head,
    })
}

/// Resolve any revision (`main`, `HEAD~1`, an id or a prefix of one) to a commit.
pub fn resolve_commit(repo: &Path, rev: &str) -> Result<Oid, GitError> {
    let r = open_repo(repo)?;
    let unknown = || GitError::UnknownRev {
        rev: rev.to_string(),
    };
    let id = r.rev_parse_single(rev).map_err(|_| unknown())?;
    let obj = id.object().map_err(|_| unknown())?;
    let commit = obj.peel_to_commit().map_err(|_| unknown())?;
    Ok(commit.id)
}

/// Is `refs/heads/<short>` a valid reference name?
pub fn is_valid_branch_name(short: &str) -> bool {
    gix::validate::reference::name(format!("refs/heads/{short}").as_str().into()).is_ok()
}

/// The commit a branch points at, if it exists.
pub fn branch_tip(repo: &Path, short: &str) -> Result<Option<Oid>, GitError> {
    ref_target(repo, &format!("refs/heads/{short}"))
}

/// The commit any reference points at (peeled), if it exists.
pub fn ref_target(repo: &Path, full_name: &str) -> Result<Option<Oid>, GitError> {
    ref_target_in(&open_repo(repo)?, full_name)
}

fn ref_target_in(r: &gix::Repository, full_name: &str) -> Result<Option<Oid>, GitError> {
    let Some(mut reference) = r
        .try_find_reference(full_name)
        .map_err(ctx(format!("reading {full_name}")))?
    else {
        return Ok(None);
    };
    let id = reference
        .peel_to_id()
        .map_err(ctx(format!("reading {full_name}")))?;
    Ok(Some(id.detach()))
}

/// Create a branch at `target`; fine if it already points exactly there.
pub fn create_branch(repo: &Path, short: &str, target: Oid) -> Result<(), GitError> {
    create_branch_in(&open_repo(repo)?, short, target)
}

fn create_branch_in(r: &gix::Repository, short: &str, target: Oid) -> Result<(), GitError> {
    if let Some(tip) = ref_target_in(r, &format!("refs/heads/{short}"))? {
        if tip == target {
            return Ok(());
        }
        return Err(GitError::gix(
            format!("creating branch {short}"),
            format!("it already exists at {tip}"),
        ));
    }
    r.reference(
        format!("refs/heads/{short}"),
        target,
        PreviousValue::MustNotExist,
        format!("mpw: branch {short}"),
    )
    .map_err(ctx(format!("creating branch {short}")))?;
    Ok(())
}

/// The main repository, opened once for the branches and worktrees a run
/// adds, and what worktrees of one commit share: the index built from its
/// tree (each worktree gets a copy that its checkout fills with its own stat
/// data) and the objects read for the first of them. See
/// docs/ARCHITECTURE.md, "Provisioning".
pub struct Worktrees {
    repo: gix::ThreadSafeRepository,
    /// The last tree checked out and its index: most runs start every
    /// workstream at one commit.
    index: std::sync::Mutex<Option<(Oid, Arc<gix::index::State>)>>,
    kept: Arc<Kept>,
}

impl Worktrees {
    pub fn open(repo: &Path) -> Result<Worktrees, GitError> {
        Ok(Worktrees {
            repo: open_repo(repo)?.into_sync(),
            index: std::sync::Mutex::new(None),
            kept: Arc::default(),
        })
    }

    /// Let go of the kept index and objects: no worktree is left to add.
    pub fn forget_checkouts(&self) {
        *self.index.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let mut map = self.kept.map.write().unwrap_or_else(|e| e.into_inner());
        *map = Default::default();
        self.kept
            .bytes
            .store(0, std::sync::atomic::Ordering::Relaxed);
    }

    /// The commit a branch points at, if it exists.
    pub fn branch_tip(&self, short: &str) -> Result<Option<Oid>, GitError> {
        ref_target_in(&self.repo.to_thread_local(), &format!("refs/heads/{short}"))
    }

    /// Create a branch at `target`; fine if it already points exactly there.
    pub fn create_branch(&self, short: &str, target: Oid) -> Result<(), GitError> {
        create_branch_in(&self.repo.to_thread_local(), short, target)
    }

    /// Add a linked worktree at `path` with `branch_short` checked out, and
    /// open it for its tasks, knowing the index just written.
    pub fn add_worktree(&self, path: &Path, branch_short: &str) -> Result<Repo, GitError> {
        let name: gix::refs::FullName = format!("refs/heads/{branch_short}")
            .try_into()
            .map_err(ctx(format!("branch name {branch_short}")))?;
        let written = self.add(path, Head::Attached(name))?;
        let repo = Repo::open(path)?;
        if let Some((tree, index)) = written {
            repo.knows_index(index, tree);
        }
        Ok(repo)
    }

    /// The tree checked out and the index written for it (None for a sparse
    /// checkout, which gix writes itself).
    fn add(&self, path: &Path, head: Head) -> Result<Option<(Oid, gix::index::File)>, GitError> {
        let r = self.repo.to_thread_local();
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| GitError::Io {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        // gix reads every registered worktree while adding one and fails on an
        // entry another process is half-way through creating: one at a time.
        let lock_dir = r.common_dir().join("mpw");
        let io = |source| GitError::Io {
            path: lock_dir.clone(),
            source,
        };
        std::fs::create_dir_all(&lock_dir).map_err(io)?;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(lock_dir.join("worktree-add.lock"))
            .map_err(io)?;
        lock.lock().map_err(io)?;
        let common = canon(r.common_dir());
        let registered = registrations(&common);
        clear_leftovers(&common, &registered, path)?;
        let interrupt = AtomicBool::new(false);
        let doing = || format!("adding worktree {}", path.display());
        // gix checks that a branch is not checked out elsewhere by opening
        // every worktree, once per add: a run of 100 workstreams spent half
        // its CPU there. The same check from the HEAD files, then the
        // worktree added at the branch's commit and HEAD attached to it.
        let (head, attach) = match head {
            Head::Attached(name) => {
                refuse_checked_out(&common, &registered, &name)?;
                let commit = ref_target_in(&r, name.as_bstr().to_str_lossy().as_ref())?
                    .ok_or_else(|| {
                        GitError::gix(doing(), format!("no branch {}", name.as_bstr()))
                    })?;
                (Head::Detached(commit), Some(name))
            }
            detached => (detached, None),
        };
        let prepared = r
            .prepare_add_worktree(path, head, &interrupt)
            .map_err(ctx(doing()))?;
        if let Some(name) = attach {
            use gix::refs::transaction::{Change, LogChange, RefEdit, RefLog};
            let attached = prepared.repo().edit_reference(RefEdit {
                change: Change::Update {
                    log: LogChange {
                        mode: RefLog::AndReference,
                        force_create_reflog: false,
                        message: "mpw: attach".into(),
                    },
                    expected: PreviousValue::Any,
                    new: gix::refs::Target::Symbolic(name),
                },
                name: "HEAD".try_into().expect("a valid ref name"),
                deref: false,
            });
            if let Err(e) = attached {
                if let Err(undo) = prepared.rollback() {
                    tracing::debug!("could not undo adding {}: {undo}", path.display());
                }
                return Err(GitError::gix(doing(), e));
            }
        }
        // Registered: checkouts of several worktrees may run side by side.
        drop(lock);
        if let Some(name) = path.file_name() {
            crate::fault::kill_point(format_args!(
                "kill-adding-worktree:{}",
                name.to_string_lossy()
            ));
        }
        if sparse(prepared.repo()) {
            // gix's own checkout applies the sparse patterns.
            prepared
                .checkout(gix::progress::Discard, &interrupt)
                .map_err(ctx(doing()))?;
            return Ok(None);
        }
        // As gix's checkout does: files, then the index, then the
        // registration is finished (its "initializing" lock removed); a
        // failure removes what was written.
        match self.checkout(&r, prepared.repo(), &interrupt) {
            Ok(written) => {
                prepared.persist().map_err(ctx(doing()))?;
                Ok(Some(written))
            }
            Err(e) => {
                if let Err(undo) = prepared.rollback() {
                    tracing::debug!("could not undo adding {}: {undo}", path.display());
                }
                Err(e)
            }
        }
    }

    /// Write HEAD's tree into the new, empty worktree of `wr`, and its index.
    fn checkout(
        &self,
        main: &gix::Repository,
        wr: &gix::Repository,
        interrupt: &AtomicBool,
    ) -> Result<(Oid, gix::index::File), GitError> {
        let doing = || {
            format!(
                "checking out {}",
                wr.workdir().unwrap_or(wr.git_dir()).display()
            )
        };
        let workdir = wr
            .workdir()
            .ok_or_else(|| GitError::gix(doing(), "no worktree"))?;
        let tree = wr.head_tree_id().map_err(ctx(doing()))?.detach();
        let state = self.index_of(main, tree)?;
        let mut index =
            gix::index::File::from_state(gix::index::State::clone(&state), wr.index_path());
        let mut options = wr
            .checkout_options(gix::worktree::stack::state::attributes::Source::IdMapping)
            .map_err(ctx(doing()))?;
        options.destination_is_initially_empty = true;
        gix::worktree::state::checkout(
            &mut index,
            workdir,
            SharedObjects::new(main, &self.kept)?,
            &gix::progress::Discard,
            &gix::progress::Discard,
            interrupt,
            options,
        )
        .map_err(ctx(doing()))?;
        past_newest_file(&index, wr.git_dir());
        index.write(Default::default()).map_err(ctx(doing()))?;
        Ok((tree, index))
    }

    /// The index of `tree` (no stat data yet), built once per tree.
    fn index_of(
        &self,
        main: &gix::Repository,
        tree: Oid,
    ) -> Result<Arc<gix::index::State>, GitError> {
        let mut last = self.index.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((t, state)) = last.as_ref()
            && *t == tree
        {
            return Ok(state.clone());
        }
        let file = main
            .index_from_tree(&tree)
            .map_err(ctx(format!("reading tree {tree}")))?;
        let state = Arc::new(gix::index::State::clone(&file));
        *last = Some((tree, state.clone()));
        Ok(state)
    }
}

/// Let the file system's clock pass the newest file of `index` before the
/// index is written: a file as new as its index is racily clean, and the
/// first status would read it again. The clock behind file times moves in
/// ticks of a few milliseconds, so the last files of a checkout often share
/// the index's tick. Bounded: a coarse file system (FAT's 2 s) is left to
/// the racy check.
fn past_newest_file(index: &gix::index::State, git_dir: &Path) {
    let newest = index
        .entries()
        .iter()
        .map(|e| (u64::from(e.stat.mtime.secs), e.stat.mtime.nsecs))
        .max();
    let Some(newest) = newest else { return };
    let probe = git_dir.join("mpw-clock");
    for _ in 0..20 {
        let now = std::fs::write(&probe, b"x")
            .and_then(|()| std::fs::metadata(&probe))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
        // gix keeps the low 32 bits of the seconds, as git does.
        match now {
            Some(t) if (t.as_secs() & u64::from(u32::MAX), t.subsec_nanos()) > newest => break,
            Some(_) => std::thread::sleep(std::time::Duration::from_millis(1)),
            None => break,
        }
    }
    let _ = std::fs::remove_file(&probe);
}

/// Objects for checkouts: the main repository's object store (its pack
/// indexes read once), and the objects read so far kept in memory for the
/// next worktree, up to `SHARED_BYTES`: each would otherwise be inflated
/// again, and its delta chain resolved again, for every worktree.
#[derive(Clone)]
struct SharedObjects {
    odb: gix::OdbHandleArc,
    kept: Arc<Kept>,
}

/// An object as read: its kind and its (inflated) data.
type KeptObject = (gix::object::Kind, Box<[u8]>);

#[derive(Default)]
struct Kept {
    map: std::sync::RwLock<gix::hashtable::HashMap<Oid, KeptObject>>,
    bytes: std::sync::atomic::AtomicUsize,
}

const SHARED_BYTES: usize = 64 << 20;

impl SharedObjects {
    fn new(r: &gix::Repository, kept: &Arc<Kept>) -> Result<SharedObjects, GitError> {
        Ok(SharedObjects {
            odb: r
                .objects
                .clone()
                .into_arc()
                .map_err(ctx("opening the object store"))?,
            kept: kept.clone(),
        })
    }
}

impl gix::objs::Find for SharedObjects {
    fn try_find<'a>(
        &self,
        id: &gix::oid,
        buffer: &'a mut Vec<u8>,
    ) -> gix::Result<Option<gix::objs::Data<'a>>> {
        use std::sync::atomic::Ordering::Relaxed;
        let found = {
            let map = self.kept.map.read().unwrap_or_else(|e| e.into_inner());
            map.get(id).map(|(kind, data)| {
                buffer.clear();
                buffer.extend_from_slice(data);
                *kind
            })
        };
        let kind = match found {
            Some(kind) => kind,
            None => {
                let Some(data) = self.odb.try_find(id, buffer)? else {
                    return Ok(None);
                };
                let kind = data.kind;
                if self.kept.bytes.load(Relaxed) + buffer.len() <= SHARED_BYTES {
                    let mut map = self.kept.map.write().unwrap_or_else(|e| e.into_inner());
                    if map
                        .insert(id.to_owned(), (kind, buffer.as_slice().into()))
                        .is_none()
                    {
                        self.kept.bytes.fetch_add(buffer.len(), Relaxed);
                    }
                }
                kind
            }
        };
        Ok(Some(gix::objs::Data {
            kind,
            object_hash: id.kind(),
            data: buffer,
        }))
    }
}

/// Is sparse checkout on for this worktree?
fn sparse(r: &gix::Repository) -> bool {
    r.config_snapshot()
        .boolean("core.sparseCheckout")
        .unwrap_or(false)
}

fn add(repo: &Path, path: &Path, head: Head) -> Result<(), GitError> {
    Worktrees::open(repo)?.add(path, head)?;
    Ok(())
}

/// Add a linked worktree at `path` with `branch_short` checked out.
pub fn add_worktree(repo: &Path, path: &Path, branch_short: &str) -> Result<(), GitError> {
    Worktrees::open(repo)?.add_worktree(path, branch_short)?;
    Ok(())
}

/// Add a scratch worktree at `path` with a detached HEAD at `commit`.
pub fn add_detached_worktree(repo: &Path, path: &Path, commit: Oid) -> Result<(), GitError> {
    add(repo, path, Head::Detached(commit))
}

/// Remove a linked worktree (also when its directory is already gone);
/// without `force`, one with changes is refused.
pub fn remove_worktree(repo: &Path, path: &Path, force: bool) -> Result<(), GitError> {
    refuse_held_open(path)?;
    let r = open_repo(repo)?;
    let force = if force {
        gix::worktree::remove::Force::DiscardChanges
    } else {
        gix::worktree::remove::Force::Never
    };
    r.remove_worktree(path, force, gix::progress::Discard)
        .map_err(ctx(format!("removing worktree {}", path.display())))?;
    Ok(())
}

/// Refuse to remove the worktree at `path` while a file in it is held open.
fn refuse_held_open(path: &Path) -> Result<(), GitError> {
    match held_open(path) {
        Some(file) => Err(GitError::InUse {
            file,
            worktree: path.to_path_buf(),
        }),
        None => Ok(()),
    }
}

/// Elsewhere than on Windows, an open file does not stop its removal.
#[cfg(not(windows))]
fn held_open(_dir: &Path) -> Option<PathBuf> {
    None
}

/// The first file or folder under `dir` that another process holds open.
/// Windows refuses to delete it, or only marks it for deletion so that its
/// folder cannot be removed, and a removal stopped half way would leave a
/// broken worktree: so it is looked for before anything is removed (see
/// README.md, Windows). Opening it with no sharing fails while any other
/// handle is open.
#[cfg(windows)]
fn held_open(dir: &Path) -> Option<PathBuf> {
    use std::os::windows::fs::OpenOptionsExt;
    const DELETE: u32 = 0x0001_0000;
    // Folders open only with backup semantics; links are checked, not followed.
    const BACKUP_SEMANTICS: u32 = 0x0200_0000;
    const OPEN_REPARSE_POINT: u32 = 0x0020_0000;
    const ERROR_SHARING_VIOLATION: i32 = 32;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let opened = std::fs::OpenOptions::new()
                .access_mode(DELETE)
                .share_mode(0)
                .custom_flags(BACKUP_SEMANTICS | OPEN_REPARSE_POINT)
                .open(&p);
            if opened.is_err_and(|e| e.raw_os_error() == Some(ERROR_SHARING_VIOLATION)) {
                return Some(p);
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(p);
            }
        }
    }
    None
}

/// Remove one of mpw's worktrees, changes and all, also when its creation or
/// removal was cut short (a killed process). Locks with a reason other than
/// "initializing" (the marker of a creation under way) are the user's and
/// refuse. A directory no registration points at goes only when it is empty
/// or its `.git` names a registration that is gone (what a cut removal leaves).
pub fn remove_run_worktree(repo: &Path, path: &Path) -> Result<(), GitError> {
    refuse_held_open(path)?;
    let r = open_repo(repo)?;
    let common = canon(r.common_dir());
    let want = canon(path);
    let mine: Vec<Registration> = registrations(&common)
        .into_iter()
        .filter(|g| g.base.as_deref().is_some_and(|b| canon(b) == want))
        .collect();
    if mine.is_empty() {
        if path.exists() && !is_empty_dir(path) && !dangling_dot_git(&common, path) {
            return Err(GitError::gix(
                format!("removing worktree {}", path.display()),
                "it is not a worktree of this repository",
            ));
        }
        return remove_dir(path);
    }
    for g in mine {
        if let Some(why) = g.lock_reason.as_deref().filter(|w| *w != "initializing") {
            return Err(GitError::gix(
                format!("removing worktree {}", path.display()),
                format!("it is locked: {why}"),
            ));
        }
        discard(&common, &g.admin, Some(path))?;
    }
    Ok(())
}

/// Delete local branches.
pub fn delete_branches(repo: &Path, shorts: &[String]) -> Result<(), GitError> {
    let r = open_repo(repo)?;
    for s in shorts {
        let name = format!("refs/heads/{s}");
        if let Some(reference) = r
            .try_find_reference(name.as_str())
            .map_err(ctx(format!("reading {name}")))?
        {
            reference
                .delete()
                .map_err(ctx(format!("deleting branch {s}")))?;
        }
    }
    Ok(())
}

/// A worktree of the repository.
#[derive(Debug, Clone)]
pub struct WorktreeInfo {
    pub path: PathBuf,
    pub branch: Option<String>,
    pub head: Option<Oid>,
    pub is_main: bool,
    /// Its creation or removal was cut short (a killed process), or is under
    /// way: `remove_run_worktree` clears it.
    pub unfinished: bool,
}

/// The main worktree and every linked one.
pub fn list_worktrees(repo: &Path) -> Result<Vec<WorktreeInfo>, GitError> {
    let r = open_repo(repo)?;
    let main = r.main_repo().map_err(ctx("opening the main worktree"))?;
    let mut out = Vec::new();
    let describe = |repo: &gix::Repository, path: PathBuf, is_main: bool| WorktreeInfo {
        path,
        branch: repo
            .head_name()
            .ok()
            .flatten()
            .map(|n| n.shorten().to_string()),
        head: repo.head_id().ok().map(|i| i.detach()),
        is_main,
        unfinished: false,
    };
    if let Some(wd) = main.workdir() {
        out.push(describe(&main, canon(wd), true));
    }
    let registered = registrations(&canon(main.common_dir()));
    for proxy in main.worktrees().map_err(ctx("listing worktrees"))? {
        let Ok(base) = proxy.base() else { continue };
        let base = canon(&base);
        let admin = canon(proxy.git_dir());
        let unfinished = registered
            .iter()
            .find(|g| canon(&g.admin) == admin)
            .is_none_or(unfinished);
        match proxy.into_repo_with_possibly_inaccessible_worktree() {
            Ok(wr) => out.push(WorktreeInfo {
                unfinished,
                ..describe(&wr, base, false)
            }),
            Err(_) => out.push(WorktreeInfo {
                path: base,
                branch: None,
                head: None,
                is_main: false,
                unfinished,
            }),
        }
    }
    Ok(out)
}

/// The commit HEAD of a worktree points at.
pub fn head_of(worktree: &Path) -> Result<Oid, GitError> {
    let r = open_repo(worktree)?;
    r.head_id()
        .map(|i| i.detach())
        .map_err(ctx(format!("reading HEAD of {}", worktree.display())))
}

/// Remove the lock files a killed process left in what one run owns: each
/// worktree's `index.lock` and `HEAD.lock`, `<ref>.lock` for the given refs,
/// and any `*.lock` under the given ref folders. Only safe while holding the
/// run's coordinator lock, when nothing else writes there. Returns what was removed.
pub fn remove_stale_locks(
    repo: &Path,
    worktrees: &[PathBuf],
    refs: &[String],
    ref_dirs: &[String],
) -> Result<Vec<PathBuf>, GitError> {
    let common = open_repo(repo)?.common_dir().to_path_buf();
    let mut candidates = Vec::new();
    for wt in worktrees.iter().filter(|w| w.is_dir()) {
        let Ok(r) = gix::open(wt) else { continue };
        candidates.push(r.git_dir().join("index.lock"));
        candidates.push(r.git_dir().join("HEAD.lock"));
    }
    candidates.extend(refs.iter().map(|r| common.join(format!("{r}.lock"))));
    for dir in ref_dirs {
        collect_locks(&common.join(dir), &mut candidates);
    }
    let mut removed = Vec::new();
    for p in candidates {
        match std::fs::remove_file(&p) {
            Ok(()) => removed.push(p),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(GitError::Io { path: p, source: e });
            }
        }
    }
    Ok(removed)
}

fn collect_locks(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect_locks(&p, out);
        } else if p.extension().is_some_and(|x| x == "lock") {
            out.push(p);
        }
    }
}

// These tests check against the git CLI, which a Windows build under Wine lacks.
#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use crate::git::test_support::{commit_file, git, init_repo_named, oid};

    fn repo() -> (tempfile::TempDir, PathBuf) {
        let (d, p) = init_repo_named("r");
        commit_file(&p, "a.txt", "a\n", "init");
        (d, p)
    }

    #[test]
    fn discover_tells_the_errors_apart() {
        let d = tempfile::tempdir().unwrap();
        assert!(matches!(discover(d.path()), Err(GitError::NotARepo { .. })));
        git(d.path(), &["init", "-q", "--bare", "b.git"]);
        assert!(matches!(
            discover(&d.path().join("b.git")),
            Err(GitError::Bare { .. })
        ));
        git(d.path(), &["init", "-q", "e"]);
        assert!(matches!(
            discover(&d.path().join("e")),
            Err(GitError::NoCommits { .. })
        ));
        let (_d, p) = repo();
        std::fs::create_dir(p.join("sub")).unwrap();
        let info = discover(&p.join("sub")).unwrap();
        assert_eq!(info.workdir, canon(&p));
        assert_eq!(info.main_workdir, canon(&p));
        assert_eq!(info.head_branch.as_deref(), Some("main"));
        assert_eq!(info.head.to_string(), git(&p, &["rev-parse", "HEAD"]));
        assert_eq!(info.common_dir, canon(&p.join(".git")));
    }

    #[test]
    fn branches_and_worktrees_look_normal_to_git() {
        let (d, p) = repo();
        let head = resolve_commit(&p, "HEAD").unwrap();
        assert_eq!(resolve_commit(&p, "main").unwrap(), head);
        assert!(matches!(
            resolve_commit(&p, "nope"),
            Err(GitError::UnknownRev { .. })
        ));
        create_branch(&p, "mpw/R/W", head).unwrap();
        create_branch(&p, "mpw/R/W", head).unwrap();
        assert!(is_valid_branch_name("mpw/R/W-1.x"));
        assert!(!is_valid_branch_name("a..b"));
        let wt = d.path().join("r.mpw/R/W");
        add_worktree(&p, &wt, "mpw/R/W").unwrap();
        assert_eq!(git(&wt, &["status", "--porcelain"]), "");
        assert_eq!(git(&wt, &["rev-parse", "--abbrev-ref", "HEAD"]), "mpw/R/W");
        assert!(git(&p, &["worktree", "list"]).contains("r.mpw/R/W"));
        let list = list_worktrees(&p).unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[1].branch.as_deref(), Some("mpw/R/W"));
        assert_eq!(discover(&wt).unwrap().main_workdir, canon(&p));
        // Dirty: refused without force.
        std::fs::write(wt.join("new.txt"), "x").unwrap();
        assert!(remove_worktree(&p, &wt, false).is_err());
        remove_worktree(&p, &wt, true).unwrap();
        assert!(!wt.exists());
        assert!(!git(&p, &["worktree", "list"]).contains("r.mpw"));
        // Deleted by hand, then removed.
        let wt2 = d.path().join("r.mpw/R/X");
        add_detached_worktree(&p, &wt2, head).unwrap();
        std::fs::remove_dir_all(&wt2).unwrap();
        remove_worktree(&p, &wt2, true).unwrap();
        assert!(!git(&p, &["worktree", "list"]).contains("R/X"));
        delete_branches(&p, &["mpw/R/W".into()]).unwrap();
        assert_eq!(branch_tip(&p, "mpw/R/W").unwrap(), None);
        git(&p, &["fsck", "--no-progress"]);
    }

    /// Files, modes and symlinks of a worktree, `.git` left out.
    fn tree_of(root: &Path) -> Vec<(String, String)> {
        use std::os::unix::fs::PermissionsExt;
        let mut out = Vec::new();
        let mut todo = vec![root.to_path_buf()];
        while let Some(d) = todo.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                let md = std::fs::symlink_metadata(&p).unwrap();
                if rel == ".git" {
                    continue;
                } else if md.file_type().is_symlink() {
                    let to = std::fs::read_link(&p).unwrap();
                    out.push((rel, format!("link {}", to.display())));
                } else if md.is_dir() {
                    todo.push(p);
                } else {
                    let mode = md.permissions().mode() & 0o111 != 0;
                    let text = String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned();
                    out.push((rel, format!("exec {mode} {text:?}")));
                }
            }
        }
        out.sort();
        out
    }

    /// What the first checkout kept is let go of, and a later add still works.
    #[test]
    fn forgetting_the_kept_checkout_frees_it_and_adds_still_work() {
        use crate::git::test_support::commit_all;
        use std::sync::atomic::Ordering::Relaxed;
        let (d, p) = repo();
        std::fs::write(p.join("b.txt"), "b\n").unwrap();
        let commit = commit_all(&p, "b");
        let w = Worktrees::open(&p).unwrap();
        w.create_branch("mpw/R/A", commit).unwrap();
        w.add_worktree(&d.path().join("A"), "mpw/R/A").unwrap();
        assert!(w.kept.bytes.load(Relaxed) > 0);
        assert!(w.index.lock().unwrap().is_some());
        w.forget_checkouts();
        assert_eq!(w.kept.bytes.load(Relaxed), 0);
        assert!(w.kept.map.read().unwrap().is_empty());
        assert!(w.index.lock().unwrap().is_none());
        w.create_branch("mpw/R/B", commit).unwrap();
        w.add_worktree(&d.path().join("B"), "mpw/R/B").unwrap();
        assert_eq!(
            std::fs::read_to_string(d.path().join("B/b.txt")).unwrap(),
            "b\n"
        );
    }

    /// The index is written only once the file system's clock has passed
    /// its newest file, here one dated 5 ms ahead: a file written after the
    /// wait is newer, so an index written then finds no entry racily clean.
    #[test]
    fn the_index_waits_for_the_clock_to_pass_its_newest_file() {
        use gix::index::entry::{Flags, Mode, Stat, stat::Time};
        let d = tempfile::tempdir().unwrap();
        let ahead = std::time::SystemTime::now() + std::time::Duration::from_millis(5);
        let t = ahead.duration_since(std::time::UNIX_EPOCH).unwrap();
        let mut state = gix::index::State::new(gix::hash::Kind::Sha1);
        let stat = Stat {
            mtime: Time {
                secs: t.as_secs() as u32,
                nsecs: t.subsec_nanos(),
            },
            ..Default::default()
        };
        let id = gix::hash::ObjectId::empty_blob(gix::hash::Kind::Sha1);
        state.dangerously_push_entry(stat, id, Flags::empty(), Mode::FILE, "a.txt".into());
        past_newest_file(&state, d.path());
        let after = d.path().join("after");
        std::fs::write(&after, "x").unwrap();
        let written = std::fs::metadata(&after).unwrap().modified().unwrap();
        assert!(written > ahead, "{written:?} is not past {ahead:?}");
        assert!(!d.path().join("mpw-clock").exists());
    }

    /// A repository and its worktree `A` of branch `mpw/R/A`, added through
    /// `Worktrees`, with the handle the add returned.
    fn worktree_a() -> (tempfile::TempDir, PathBuf, Worktrees, PathBuf, Repo) {
        let (d, p) = repo();
        let head = git(&p, &["rev-parse", "HEAD"]);
        let w = Worktrees::open(&p).unwrap();
        w.create_branch("mpw/R/A", oid(&head)).unwrap();
        let wt = d.path().join("A");
        let handle = w.add_worktree(&wt, "mpw/R/A").unwrap();
        (d, p, w, wt, handle)
    }

    /// A branch checked out in another worktree, or in the main one, is
    /// refused, as git refuses it, and nothing is left at the path; a new
    /// worktree's HEAD is attached to its branch, as git's is.
    #[test]
    fn a_branch_checked_out_elsewhere_is_refused() {
        let (d, p, w, a, _) = worktree_a();
        assert_eq!(git(&a, &["symbolic-ref", "HEAD"]), "refs/heads/mpw/R/A");
        assert_eq!(git(&a, &["status", "--porcelain"]), "");
        let b = d.path().join("B");
        let err = w.add_worktree(&b, "mpw/R/A").err().unwrap().to_string();
        assert!(
            err.contains("already checked out in") && err.contains("A"),
            "{err}"
        );
        assert!(!b.exists());
        let main = git(&p, &["symbolic-ref", "--short", "HEAD"]);
        let err = w.add_worktree(&b, &main).err().unwrap().to_string();
        assert!(err.contains("already checked out in"), "{err}");
        assert!(!b.exists());
        assert_eq!(git(&p, &["worktree", "list"]).lines().count(), 2);
    }

    /// The handle an add returns knows the index it wrote: it sees nothing
    /// changed, then every kind of change made right after, staged ones too.
    #[test]
    fn the_handle_of_a_new_worktree_sees_changes_made_right_after() {
        let (_d, _, _, wt, handle) = worktree_a();
        let changed = |h: &Repo| -> Vec<String> {
            let ch = h.changes(&Default::default()).unwrap();
            ch.into_iter().map(|c| c.path).collect()
        };
        assert!(changed(&handle).is_empty());
        // Same size, at once: only the stat data tells.
        std::fs::write(wt.join("a.txt"), "b\n").unwrap();
        assert_eq!(changed(&handle), ["a.txt"]);
        std::fs::write(wt.join("a.txt"), "a\n").unwrap();
        assert!(changed(&handle).is_empty());
        // Staged by git: index and file agree, only the index against HEAD tells.
        std::fs::write(wt.join("n.txt"), "n\n").unwrap();
        git(&wt, &["add", "n.txt"]);
        assert_eq!(changed(&handle), ["n.txt"]);
    }

    /// The shared index and objects give each worktree exactly what git's
    /// checkout gives, with an index git finds clean without a refresh, also
    /// when the commit changes between worktrees.
    #[test]
    fn worktrees_of_one_commit_check_out_as_git_does() {
        use crate::git::test_support::{commit_all, set_exec, write_files};
        let (d, p) = repo();
        write_files(
            &p,
            &[
                ("bin/run.sh", "#!/bin/sh\necho hi\n"),
                ("deep/a/b/c.txt", "deep\n"),
                ("deep/a/d.txt", "d\n"),
                (".gitattributes", "*.bat eol=crlf\n"),
                ("x.bat", "echo one\necho two\n"),
            ],
        );
        set_exec(&p.join("bin/run.sh"), true);
        std::os::unix::fs::symlink("a.txt", p.join("link")).unwrap();
        std::os::unix::fs::symlink("deep/a", p.join("dirlink")).unwrap();
        let first = commit_all(&p, "kinds");
        std::fs::write(p.join("deep/a/d.txt"), "changed\n").unwrap();
        let second = commit_all(&p, "second");
        let w = Worktrees::open(&p).unwrap();
        for (i, commit) in [first, first, second, first].into_iter().enumerate() {
            let branch = format!("mpw/R/W{i}");
            w.create_branch(&branch, commit).unwrap();
            assert_eq!(w.branch_tip(&branch).unwrap(), Some(commit));
            let wt = d.path().join(format!("r.mpw/R/W{i}"));
            w.add_worktree(&wt, &branch).unwrap();
            // git's own checkout of the same commit, to compare with.
            let theirs = d.path().join(format!("git{i}"));
            git(
                &p,
                &[
                    "worktree",
                    "add",
                    "-q",
                    "--detach",
                    theirs.to_str().unwrap(),
                    &commit.to_string(),
                ],
            );
            assert_eq!(tree_of(&wt), tree_of(&theirs), "worktree {i}");
            assert_eq!(git(&wt, &["diff-files"]), "", "worktree {i}: stat data");
            assert_eq!(git(&wt, &["status", "--porcelain"]), "", "worktree {i}");
            assert_eq!(
                git(&wt, &["ls-files", "-s"]),
                git(&theirs, &["ls-files", "-s"]),
                "worktree {i}"
            );
            assert_eq!(git(&wt, &["rev-parse", "--abbrev-ref", "HEAD"]), branch);
        }
        assert!(tree_of(&d.path().join("r.mpw/R/W0")).contains(&(
            "x.bat".to_string(),
            format!("exec false {:?}", "echo one\r\necho two\r\n")
        )));
        git(&p, &["fsck", "--no-progress"]);
    }

    /// The enum `Cut` of the states named, and `ALL_CUTS` listing them in order.
    macro_rules! cuts {
        ($($cut:ident),* $(,)?) => {
            #[derive(Debug, Clone, Copy)]
            enum Cut { $($cut),* }
            const ALL_CUTS: &[Cut] = &[$(Cut::$cut),*];
        };
    }
    // Each state a kill can leave while gix adds a worktree (in the order
    // gix writes: registration folder, worktree folder, `locked`, `gitdir`,
    // `commondir`, `.git`, HEAD, files, index) or while one is removed.
    cuts! {
        EmptyRegistration, EmptyFolder, Locked, EmptyGitdir, Gitdir, Commondir, EmptyDotGit,
        DotGit, Head, SomeFiles, Index, RemovedDotGit, RemovedFolder, RemovedHalfTheRegistration,
    }

    /// Make a complete worktree at `wt`, then take away what was not yet
    /// written (or was already removed) at `cut`.
    fn cut_short(p: &Path, wt: &Path, branch: &str, cut: Cut) {
        use Cut::*;
        add_worktree(p, wt, branch).unwrap();
        let admin = p.join(".git/worktrees").join(wt.file_name().unwrap());
        let rm = |f: &Path| {
            if f.is_dir() {
                std::fs::remove_dir_all(f).unwrap()
            } else if f.exists() {
                std::fs::remove_file(f).unwrap()
            }
        };
        let order = cut as u8;
        if order <= Index as u8 {
            std::fs::write(admin.join("locked"), "initializing\n").unwrap();
        }
        let empty = |f: &Path| std::fs::write(f, "").unwrap();
        // What each step wrote, undone when the cut comes before it (last written first).
        let undo: [(Cut, &dyn Fn()); 10] = [
            (Index, &|| rm(&admin.join("index"))),
            (SomeFiles, &|| rm(&wt.join("a.txt"))),
            (Head, &|| {
                rm(&admin.join("HEAD"));
                rm(&admin.join("logs"));
            }),
            (DotGit, &|| empty(&wt.join(".git"))),
            (EmptyDotGit, &|| rm(&wt.join(".git"))),
            (Commondir, &|| rm(&admin.join("commondir"))),
            (Gitdir, &|| empty(&admin.join("gitdir"))),
            (EmptyGitdir, &|| rm(&admin.join("gitdir"))),
            (Locked, &|| rm(&admin.join("locked"))),
            (EmptyFolder, &|| rm(wt)),
        ];
        for (step, undo) in undo {
            if order < step as u8 {
                undo();
            }
        }
        match cut {
            RemovedDotGit => rm(&wt.join(".git")),
            RemovedFolder => rm(wt),
            RemovedHalfTheRegistration => {
                rm(wt);
                rm(&admin.join("HEAD"));
                rm(&admin.join("commondir"));
            }
            _ => {}
        }
    }

    #[test]
    fn a_worktree_cut_short_at_any_step_is_cleared_and_added_again() {
        for &cut in ALL_CUTS {
            let (d, p) = repo();
            let head = resolve_commit(&p, "HEAD").unwrap();
            create_branch(&p, "mpw/R/W", head).unwrap();
            let wt = d.path().join("r.mpw/R/W");
            cut_short(&p, &wt, "mpw/R/W", cut);
            // Another worktree can be added meanwhile (gix lists them all).
            let other = d.path().join("r.mpw/R/_gate-W-1");
            add_detached_worktree(&p, &other, head)
                .unwrap_or_else(|e| panic!("{cut:?}: adding another: {e}"));
            remove_run_worktree(&p, &other).unwrap();
            // As a resume does: an unfinished registration is removed, then added again.
            let found = list_worktrees(&p).unwrap();
            if let Some(t) = found.iter().find(|t| t.path == canon(&wt)) {
                assert!(t.unfinished, "{cut:?}: {t:?}");
                remove_run_worktree(&p, &wt).unwrap();
            }
            add_worktree(&p, &wt, "mpw/R/W").unwrap_or_else(|e| panic!("{cut:?}: {e}"));
            assert_eq!(git(&wt, &["status", "--porcelain"]), "", "{cut:?}");
            let list = git(&p, &["worktree", "list", "--porcelain"]);
            assert!(
                !list.contains("prunable") && !list.contains("locked") && !list.contains("_gate"),
                "{cut:?}: {list}"
            );
            assert!(!list_worktrees(&p).unwrap()[1].unfinished, "{cut:?}");
            git(&p, &["fsck", "--no-progress"]);
        }
    }
}

#[cfg(all(test, windows))]
mod windows_tests {
    use super::held_open;
    use std::os::windows::fs::OpenOptionsExt;

    #[test]
    fn a_file_held_open_without_delete_sharing_is_found() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("sub").join("held.log");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, "x").unwrap();
        std::fs::write(d.path().join("free.txt"), "y").unwrap();
        assert_eq!(held_open(d.path()), None, "nothing open");
        // As an editor or a running program holds it: read and write sharing only.
        let holder = std::fs::OpenOptions::new()
            .read(true)
            .share_mode(0x1 | 0x2)
            .open(&file)
            .unwrap();
        assert_eq!(held_open(d.path()), Some(file.clone()));
        drop(holder);
        assert_eq!(held_open(d.path()), None, "closed again");
        // Even one that allows deletion: the file would only be marked for it,
        // and its folder could not be removed.
        let holder = std::fs::File::open(&file).unwrap();
        assert_eq!(held_open(d.path()), Some(file.clone()));
        drop(holder);
    }
}
