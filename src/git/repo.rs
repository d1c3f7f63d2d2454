//! Opening a repository, and the identity and commit objects mpw writes.

use std::path::Path;

use super::Oid;
use super::error::{GitError, ctx};

/// Open a repository as git on Linux, macOS and Windows reads stat data:
/// with nanoseconds. Without them every file written in the same second as
/// the index is "racy" and status hashes it again (all of a new worktree).
/// On Windows the file system has no exec bit: `core.fileMode=false`, as Git
/// for Windows sets, whatever the repository's config says (a repository made
/// on Linux says true, and every executable would look changed).
pub(super) fn open_repo(path: &Path) -> Result<gix::Repository, GitError> {
    // Without a git identity (a fresh CI runner), gix cannot write reflogs;
    // the fallback is the identity mpw's commits use then (see `signatures`).
    let mut overrides = vec![
        "gitoxide.core.useNsec=true",
        "gitoxide.committer.nameFallback=mpw",
        "gitoxide.committer.emailFallback=mpw@localhost",
        "gitoxide.author.nameFallback=mpw",
        "gitoxide.author.emailFallback=mpw@localhost",
    ];
    if cfg!(windows) {
        overrides.push("core.fileMode=false");
    }
    let opts = gix::open::Options::default().config_overrides(overrides);
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

/// A repository (or linked worktree) opened once and kept: config, packs
/// and recently read objects stay in memory; refs, HEAD and the files are
/// read fresh on each use, so commits made through it or by anyone else are
/// seen. The runner keeps one per workstream for its tasks' snapshots
/// (docs/ARCHITECTURE.md, "Per-task cost"). Uses are one at a time.
pub struct Repo {
    local: std::sync::Mutex<Local>,
}

pub(super) struct Local {
    pub repo: gix::Repository,
    /// The index as last read, with the stat data of its file then.
    pub index: Option<(gix::index::entry::Stat, gix::index::File)>,
    /// What a walk for untracked files needs, made while the index is the same.
    pub walk: Option<Walk>,
    /// The paths where the index differs from a tree (HEAD's), found while
    /// the index is the same: neither changes without the other's key changing.
    pub staged: Option<(Oid, Vec<gix::bstr::BString>)>,
    /// The git dir's real path (a `stat` per component of its path to find).
    pub git_dir_realpath: Option<std::path::PathBuf>,
}

/// The ignore rules of the config and `info/exclude`, before any folder's
/// `.gitignore` is read (cloned for each walk, so those are read fresh).
pub(super) struct Walk {
    pub excludes: gix::worktree::Stack,
}

/// Objects kept in memory per handle: HEAD's commit and trees of a few levels.
const OBJECT_CACHE: usize = 256 * 1024;

impl Repo {
    pub fn open(path: &Path) -> Result<Repo, GitError> {
        let mut repo = open_repo(path)?;
        repo.object_cache_size_if_unset(OBJECT_CACHE);
        Ok(Repo {
            local: std::sync::Mutex::new(Local {
                repo,
                index: None,
                walk: None,
                staged: None,
                git_dir_realpath: None,
            }),
        })
    }

    /// The index was just written from `tree` (a fresh checkout): its file
    /// need not be read again, and nothing is staged against `tree`.
    pub(super) fn knows_index(&self, mut index: gix::index::File, tree: Oid) {
        let Some((md, (_, stat))) = std::fs::symlink_metadata(index.path())
            .ok()
            .and_then(|md| super::quick_status::facts(&md).map(|f| (md, f)))
        else {
            return;
        };
        // As a read of the file would have it: racy entries are judged by it.
        index.set_timestamp(filetime::FileTime::from_last_modification_time(&md));
        self.with(|local| {
            local.index = Some((stat, index));
            local.staged = Some((tree, Vec::new()));
        });
    }

    pub(super) fn with<T>(&self, f: impl FnOnce(&mut Local) -> T) -> T {
        // A panic in an earlier use leaves nothing half-done in `Local`.
        let mut local = self.local.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut local)
    }
}

impl Local {
    /// The index, read again only when its file changed: a rewrite (a lock
    /// file renamed over it) changes its inode or times.
    pub fn index(&mut self) -> Result<gix::index::File, GitError> {
        let doing = "reading the index";
        let path = self.repo.index_path();
        let stat = gix::index::fs::Metadata::from_path_no_follow(&path)
            .ok()
            .and_then(|m| gix::index::entry::Stat::from_fs(&m).ok());
        if let (Some(now), Some((then, file))) = (stat, &self.index)
            && now == *then
        {
            return Ok(file.clone());
        }
        let file = self.repo.open_index().map_err(ctx(doing))?;
        self.index = stat.map(|s| (s, file.clone()));
        // Ignore rules may come from the index (a `.gitignore` not on disk).
        self.walk = None;
        self.staged = None;
        Ok(file)
    }

    /// The git dir's real path, found once.
    pub fn git_dir_realpath(&mut self) -> Result<std::path::PathBuf, GitError> {
        if let Some(p) = &self.git_dir_realpath {
            return Ok(p.clone());
        }
        let p = gix::path::realpath_opts(
            self.repo.git_dir(),
            self.repo.current_dir(),
            gix::path::realpath::MAX_SYMLINKS,
        )
        .map_err(ctx("listing untracked files"))?;
        self.git_dir_realpath = Some(p.clone());
        Ok(p)
    }
}

/// A pathspec without patterns: it matches every path. gix's
/// `Repository::pathspec` makes the same, after resolving the worktree's
/// real path (a `stat` per component) that no pattern then uses.
pub(super) fn match_all() -> Result<gix::pathspec::Search, GitError> {
    gix::pathspec::Search::from_specs(std::iter::empty(), None, Path::new(""))
        .map_err(ctx("making a pathspec"))
}

/// The tree of `commit`; `GitError::UnknownRev` when there is no such commit.
pub(super) fn commit_tree_id_in(repo: &gix::Repository, commit: Oid) -> Result<Oid, GitError> {
    repo.find_commit(commit)
        .map_err(|_| GitError::UnknownRev {
            rev: commit.to_string(),
        })?
        .tree_id()
        .map(|id| id.detach())
        .map_err(ctx(format!("reading commit {commit}")))
}

pub(super) fn commit_tree(repo: &gix::Repository, commit: Oid) -> Result<gix::Tree<'_>, GitError> {
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

/// Write a commit object with the configured identity, or `mpw <mpw@localhost>`;
/// the message gets the final newline git gives it.
pub(super) fn write_commit(
    repo: &gix::Repository,
    tree: Oid,
    parents: &[Oid],
    message: &str,
) -> Result<Oid, GitError> {
    let (author, committer) = signatures(repo)?;
    build_commit(repo, tree, parents, author, committer, message)
}

/// Write a copy of commit `original` with tree `tree` on `parents`: its
/// author and message kept, the committer now, as `git cherry-pick` does.
pub(super) fn write_replayed_commit(
    repo: &gix::Repository,
    tree: Oid,
    parents: &[Oid],
    original: Oid,
) -> Result<Oid, GitError> {
    let doing = || format!("reading commit {original}");
    let commit = repo.find_commit(original).map_err(ctx(doing()))?;
    let decoded = commit.decode().map_err(ctx(doing()))?;
    let author = decoded.author().map_err(ctx(doing()))?;
    let author = gix::actor::Signature {
        name: author.name.to_owned(),
        email: author.email.to_owned(),
        time: author.time().map_err(ctx(doing()))?,
    };
    let message = String::from_utf8_lossy(decoded.message).into_owned();
    let (_, committer) = signatures(repo)?;
    build_commit(repo, tree, parents, author, committer, &message)
}

/// The one place a commit object is built and written.
fn build_commit(
    repo: &gix::Repository,
    tree: Oid,
    parents: &[Oid],
    author: gix::actor::Signature,
    committer: gix::actor::Signature,
    message: &str,
) -> Result<Oid, GitError> {
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
    Ok(repo
        .write_object(&commit)
        .map_err(ctx("writing a commit"))?
        .detach())
}
