//! The common case of a worktree status: no tracked file changed. One pass
//! over the folders that hold tracked files, each file's stat read relative to
//! its open folder (no walk from the root per file) and compared as git's
//! `refresh_index` compares it. What it cannot vouch for is left to gix's full
//! status (docs/ARCHITECTURE.md, "Per-task cost").

use gix::bstr::{BStr, ByteSlice};
use gix::index::entry::{Flags, Stat};
use std::ops::Range;
use std::path::{Path, PathBuf};

/// What the pass saw when every tracked file still has the stat data the
/// index recorded.
pub(super) struct Unchanged {
    /// Some folder holds a name the index does not know (untracked, ignored,
    /// or a folder of such): only the untracked walk can judge it.
    pub others: bool,
}

/// Some when no tracked file changed (none racily clean either), None when
/// the pass cannot tell: a changed stat, a conflict, special flags, a
/// submodule, a symlinked folder, a name in another case or normalization.
pub(super) fn tracked_unchanged(
    index: &gix::index::File,
    workdir: &Path,
    fs: gix::fs::Capabilities,
    opts: gix::index::entry::stat::Options,
) -> Option<Unchanged> {
    let mut pass = Pass {
        index,
        fs,
        opts,
        others: false,
    };
    pass.folder(0, workdir.to_path_buf(), 0..index.entries().len())?;
    Some(Unchanged {
        others: pass.others,
    })
}

struct Pass<'a> {
    index: &'a gix::index::File,
    fs: gix::fs::Capabilities,
    opts: gix::index::entry::stat::Options,
    others: bool,
}

enum Child {
    /// An index entry, by position.
    File(usize),
    /// The index entries below a folder (sorted paths keep them together).
    Folder(Range<usize>),
}

impl<'a> Pass<'a> {
    fn path(&self, i: usize) -> &'a BStr {
        self.index.entries()[i].path(self.index)
    }

    /// The folder whose entries are `range`, all starting with the first
    /// `prefix` bytes of their path (`a/b/`, or nothing for the root).
    fn folder(&mut self, prefix: usize, dir: PathBuf, range: Range<usize>) -> Option<()> {
        let mut children: Vec<(&'a BStr, Child)> = Vec::new();
        let mut i = range.start;
        while i < range.end {
            let path = self.path(i);
            let rest = &path[prefix..];
            match rest.find_byte(b'/') {
                None => {
                    children.push((rest.as_bstr(), Child::File(i)));
                    i += 1;
                }
                Some(slash) => {
                    let below = &path[..prefix + slash + 1];
                    let start = i;
                    while i < range.end && self.path(i).starts_with(below) {
                        i += 1;
                    }
                    children.push((rest[..slash].as_bstr(), Child::Folder(start..i)));
                }
            }
        }
        // Index order puts `a.txt` before `a/x`; the search wants names.
        children.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut found = 0;
        for item in std::fs::read_dir(&dir).ok()? {
            let item = item.ok()?;
            let name = item.file_name();
            let name = gix::path::os_str_into_bstr(&name).ok()?;
            if prefix == 0 && name == ".git" {
                continue;
            }
            let Ok(k) = children.binary_search_by(|c| c.0.cmp(name)) else {
                self.others = true;
                continue;
            };
            found += 1;
            match &children[k].1 {
                Child::File(i) => self.file(*i, &item)?,
                Child::Folder(below) => {
                    // A symlink where a folder was: git sees its files as removed.
                    if !item.file_type().ok()?.is_dir() {
                        return None;
                    }
                    let below = below.clone();
                    self.folder(prefix + name.len() + 1, item.path(), below)?;
                }
            }
        }
        // Fewer names than children: something tracked is gone.
        (found == children.len()).then_some(())
    }

    fn file(&self, i: usize, item: &std::fs::DirEntry) -> Option<()> {
        let entry = &self.index.entries()[i];
        let special = Flags::INTENT_TO_ADD | Flags::SKIP_WORKTREE | Flags::ASSUME_VALID;
        if entry.stage_raw() != 0 || entry.flags.intersects(special) || entry.mode.is_submodule() {
            return None;
        }
        // Relative to the open folder, and without following a symlink.
        let md = item.metadata().ok()?;
        let (kind, stat) = facts(&md)?;
        let changed = kind.is_dir
            || entry
                .mode
                .change_to_match_fs_with_values(
                    kind.is_file,
                    kind.is_dir,
                    kind.is_symlink,
                    kind.is_executable,
                    self.fs.symlink,
                    self.fs.executable_bit,
                )
                .is_some();
        let emptied = entry.id.is_empty_blob() && entry.stat.size != 0;
        let differs = changed
            || emptied
            || !stat.matches(&entry.stat, self.opts)
            || stat.is_racy(self.index.timestamp(), self.opts);
        (!differs).then_some(())
    }
}

pub(super) struct Kind {
    is_file: bool,
    is_dir: bool,
    is_symlink: bool,
    is_executable: bool,
}

/// What gix's `Metadata` and `Stat::from_fs` make of a file's lstat, from the
/// standard library's metadata (gix's own type cannot be built from it on Unix).
#[cfg(unix)]
pub(super) fn facts(md: &std::fs::Metadata) -> Option<(Kind, Stat)> {
    use gix::index::entry::stat::Time;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    // gix takes a time before 1970 as zero.
    let time = |secs: i64, nsecs: i64| Time {
        secs: u32::try_from(secs).unwrap_or(0),
        nsecs: if secs < 0 {
            0
        } else {
            u32::try_from(nsecs).unwrap_or(0)
        },
    };
    let ft = md.file_type();
    let kind = Kind {
        is_file: ft.is_file(),
        is_dir: ft.is_dir(),
        is_symlink: ft.is_symlink(),
        is_executable: ft.is_file() && md.permissions().mode() & 0o100 != 0,
    };
    let stat = Stat {
        mtime: time(md.mtime(), md.mtime_nsec()),
        ctime: time(md.ctime(), md.ctime_nsec()),
        // Truncated as git and gix do.
        dev: md.dev() as u32,
        ino: md.ino() as u32,
        uid: md.uid(),
        gid: md.gid(),
        size: md.len() as u32,
    };
    Some((kind, stat))
}

#[cfg(windows)]
pub(super) fn facts(md: &std::fs::Metadata) -> Option<(Kind, Stat)> {
    let md = gix::index::fs::Metadata::from(md.clone());
    let kind = Kind {
        is_file: md.is_file(),
        is_dir: md.is_dir(),
        is_symlink: md.is_symlink(),
        is_executable: md.is_executable(),
    };
    Some((kind, Stat::from_fs(&md).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the pass vouches for is what git calls clean, and what it
    /// cannot judge it leaves to the full status; `changes()` agrees with
    /// `git status` either way. Names are chosen so that index order (`a-b/`,
    /// `a.txt`, `a/`, `a0.txt`) differs from name order.
    #[cfg(unix)]
    #[test]
    fn the_pass_vouches_only_for_what_git_calls_clean() {
        use crate::git::Repo;
        use crate::git::test_support::{commit_all, git, init_repo_named, write_files};
        let (_d, p) = init_repo_named("q");
        write_files(
            &p,
            &[
                (".gitignore", "*.log\n"),
                ("a-b/c.txt", "1\n"),
                ("a.txt", "2\n"),
                ("a/b.txt", "3\n"),
                ("a0.txt", "4\n"),
                ("b/c/d.txt", "5\n"),
            ],
        );
        commit_all(&p, "init");
        let handle = Repo::open(&p).unwrap();
        let verdict = || {
            let repo = crate::git::repo::open_repo(&p).unwrap();
            let index = repo.open_index().unwrap();
            let fs = repo.filesystem_options().unwrap();
            let stat = repo.stat_options().unwrap();
            tracked_unchanged(&index, &p, fs, stat).map(|u| u.others)
        };
        let agree = || {
            let ch = handle.changes(&Default::default()).unwrap();
            let mine: Vec<String> = ch.into_iter().map(|c| c.path).collect();
            let status = git(&p, &["status", "--porcelain", "-uall"]);
            let mut theirs: Vec<String> = status
                .lines()
                .filter_map(|l| l.trim_start().split_once(' '))
                .map(|(_, f)| f.to_string())
                .collect();
            theirs.sort();
            assert_eq!(mine, theirs);
        };
        // The pass's verdict, and `changes()` against `git status`.
        let check = |want: Option<bool>| {
            assert_eq!(verdict(), want);
            agree();
        };
        check(Some(false));
        // Ignored or untracked names, and an empty folder: the walk judges.
        std::fs::write(p.join("b/c/x.log"), "x\n").unwrap();
        check(Some(true));
        std::fs::create_dir(p.join("a/empty")).unwrap();
        check(Some(true));
        std::fs::write(p.join("a/new.txt"), "n\n").unwrap();
        check(Some(true));
        std::fs::remove_file(p.join("a/new.txt")).unwrap();
        // A tracked file gone, changed, or a folder turned into a symlink.
        std::fs::rename(p.join("a0.txt"), p.join("a0.bak")).unwrap();
        check(None);
        std::fs::rename(p.join("a0.bak"), p.join("a0.txt")).unwrap();
        std::fs::write(p.join("a-b/c.txt"), "9\n").unwrap();
        check(None);
        git(&p, &["checkout", "--", "a-b/c.txt"]);
        std::fs::rename(p.join("b"), p.join("b2")).unwrap();
        std::os::unix::fs::symlink("b2", p.join("b")).unwrap();
        check(None);
    }

    /// The stat this pass computes is the one gix computes by path, so the
    /// two never disagree on what "unchanged" means.
    #[test]
    fn a_files_stat_is_the_one_gix_reads_by_path() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.txt");
        std::fs::write(&file, "a\n").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let item = std::fs::read_dir(dir.path())
            .unwrap()
            .map(Result::unwrap)
            .find(|e| e.file_name() == "a.txt")
            .unwrap();
        let (kind, stat) = facts(&item.metadata().unwrap()).unwrap();
        let by_path = gix::index::fs::Metadata::from_path_no_follow(&file).unwrap();
        assert_eq!(stat, Stat::from_fs(&by_path).unwrap());
        assert_eq!(kind.is_file, by_path.is_file());
        assert_eq!(kind.is_dir, by_path.is_dir());
        assert_eq!(kind.is_symlink, by_path.is_symlink());
        assert_eq!(kind.is_executable, by_path.is_executable());
    }
}
