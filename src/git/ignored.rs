//! The ignored files and folders of a worktree, as git sees them (for
//! `.worktreeinclude`, see docs/ARCHITECTURE.md).

use super::error::{GitError, ctx};
use super::repo::open_repo;
use gix::bstr::ByteSlice;
use gix::dir::entry::Status;
use gix::dir::walk::EmissionMode;
use std::path::Path;
use std::sync::atomic::AtomicBool;

/// An ignored path, relative to the worktree, with `/` separators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnoredPath {
    pub path: String,
    /// A whole ignored directory, reported once rather than file by file
    /// (git does not look inside it either).
    pub dir: bool,
}

/// Every ignored file and directory of the worktree at `workdir`, sorted.
pub fn ignored_paths(workdir: &Path) -> Result<Vec<IgnoredPath>, GitError> {
    let doing = "listing ignored files";
    let repo = open_repo(workdir)?;
    let index = repo.index_or_empty().map_err(ctx(doing))?;
    let options = repo
        .dirwalk_options()
        .map_err(ctx(doing))?
        .emit_ignored(Some(EmissionMode::CollapseDirectory))
        .emit_untracked(EmissionMode::CollapseDirectory);
    let mut collect = gix::dir::walk::delegate::Collect::default();
    repo.dirwalk(
        &index,
        Vec::<&str>::new(),
        &AtomicBool::new(false),
        options,
        &mut collect,
    )
    .map_err(ctx(doing))?;
    let mut out: Vec<IgnoredPath> = collect
        .into_entries_by_path()
        .into_iter()
        .filter(|(e, _)| matches!(e.status, Status::Ignored(_)))
        .map(|(e, _)| IgnoredPath {
            path: e.rela_path.to_str_lossy().into_owned(),
            dir: e
                .disk_kind
                .is_some_and(|k| matches!(k, gix::dir::entry::Kind::Directory)),
        })
        .collect();
    out.dedup();
    Ok(out)
}
