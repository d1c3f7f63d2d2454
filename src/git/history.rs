//! Read-only questions about history: diffstats, logs, merge bases.

use std::path::Path;

use gix::bstr::ByteSlice;

use super::Oid;
use super::error::{GitError, ctx};
use super::repo::{commit_tree_id_in, open_repo};

/// Lines added and removed in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStat {
    /// Repository-relative path, `/`-separated.
    pub path: String,
    /// Lines added (0 for binary files).
    pub added: usize,
    /// Lines removed (0 for binary files).
    pub removed: usize,
    /// `true` when git would print `-` for the counts.
    pub binary: bool,
}

/// Per-file and total line counts between two commits.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DiffStat {
    /// Changed files in git's path order.
    pub files: Vec<FileStat>,
    /// Sum of lines added.
    pub added: usize,
    /// Sum of lines removed.
    pub removed: usize,
}

/// Like `git diff --numstat --no-renames from to` for two commits.
pub fn diffstat(repo: &Path, from: Oid, to: Oid) -> Result<DiffStat, GitError> {
    let repo = open_repo(repo)?;
    let doing = || format!("diffing {from} and {to}");
    let old_tree = repo
        .find_tree(commit_tree_id_in(&repo, from)?)
        .map_err(ctx(doing()))?;
    let new_tree = repo
        .find_tree(commit_tree_id_in(&repo, to)?)
        .map_err(ctx(doing()))?;
    let changes = repo
        .diff_tree_to_tree(&old_tree, &new_tree, gix::diff::Options::default())
        .map_err(ctx(doing()))?;
    let mut cache = repo
        .diff_resource_cache_for_tree_diff()
        .map_err(ctx(doing()))?;
    let mut out = DiffStat::default();
    for change in &changes {
        if change.entry_mode().is_tree() {
            continue;
        }
        cache
            .set_resource_by_change(change.to_ref(), &repo.objects)
            .map_err(ctx(doing()))?;
        let counts = gix::object::blob::diff::Platform {
            resource_cache: &mut cache,
        }
        .line_counts()
        .map_err(ctx(doing()))?;
        let path = change.location().to_str_lossy().into_owned();
        let stat = match counts {
            Some(c) => FileStat {
                path,
                added: c.insertions as usize,
                removed: c.removals as usize,
                binary: false,
            },
            None => FileStat {
                path,
                added: 0,
                removed: 0,
                binary: true,
            },
        };
        out.added += stat.added;
        out.removed += stat.removed;
        out.files.push(stat);
        cache.clear_resource_cache_keep_allocation();
    }
    // gix walks breadth-first; git lists files in full-path order.
    out.files
        .sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    Ok(out)
}

/// One commit of a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitInfo {
    /// The commit id.
    pub id: Oid,
    /// The first line of the message.
    pub summary: String,
    /// The whole message.
    pub message: String,
    /// `Name <email>` of the author.
    pub author: String,
    /// Author time, unix seconds.
    pub time: i64,
}

/// Commits reachable from `to` but not from `from`, newest first, like `git log from..to`.
pub fn log_range(repo: &Path, from: Oid, to: Oid) -> Result<Vec<CommitInfo>, GitError> {
    let repo = open_repo(repo)?;
    let doing = || format!("listing {from}..{to}");
    let walk = repo
        .rev_walk([to])
        .with_hidden([from])
        .sorting(gix::revision::walk::Sorting::ByCommitTime(
            gix::traverse::commit::simple::CommitTimeOrder::NewestFirst,
        ))
        .all()
        .map_err(ctx(doing()))?;
    let mut out = Vec::new();
    for info in walk {
        let info = info.map_err(ctx(doing()))?;
        let commit = info.object().map_err(ctx(doing()))?;
        let decoded = commit.decode().map_err(ctx(doing()))?;
        let author = decoded.author().map_err(ctx(doing()))?;
        out.push(CommitInfo {
            id: info.id,
            summary: decoded.message_summary().to_str_lossy().into_owned(),
            message: decoded.message.to_str_lossy().into_owned(),
            author: format!("{} <{}>", author.name, author.email),
            time: author.time().map(|t| t.seconds).unwrap_or(0),
        });
    }
    Ok(out)
}

/// The commits `git rebase --onto X <hidden> tip` would replay: reachable
/// from `tip` and from none of `hidden`, merges left out, parents first.
pub fn commits_to_replay(repo: &Path, tip: Oid, hidden: &[Oid]) -> Result<Vec<Oid>, GitError> {
    let repo = open_repo(repo)?;
    let doing = || format!("listing the commits of {tip}");
    let walk = repo
        .rev_walk([tip])
        .with_hidden(hidden.iter().copied())
        .all()
        .map_err(ctx(doing()))?;
    let mut parents: std::collections::HashMap<Oid, Vec<Oid>> = Default::default();
    for info in walk {
        let info = info.map_err(ctx(doing()))?;
        parents.insert(info.id, info.parent_ids.iter().copied().collect());
    }
    // Depth-first from the tip, each commit after its parents: commit times
    // may tie, so they cannot give the order.
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![(tip, false)];
    while let Some((id, expanded)) = stack.pop() {
        let Some(ps) = parents.get(&id) else { continue };
        if expanded {
            if ps.len() <= 1 {
                out.push(id);
            }
            continue;
        }
        if !seen.insert(id) {
            continue;
        }
        stack.push((id, true));
        stack.extend(ps.iter().rev().map(|p| (*p, false)));
    }
    Ok(out)
}

/// The best common ancestor of `a` and `b`, `None` for unrelated histories.
pub fn merge_base(repo: &Path, a: Oid, b: Oid) -> Result<Option<Oid>, GitError> {
    let repo = open_repo(repo)?;
    let mut bases = merge_bases_in(&repo, a, b)?;
    if bases.len() > 1 {
        // Like git: drop bases that are ancestors of other bases.
        let all = bases.clone();
        bases.retain(|x| {
            !all.iter()
                .any(|y| y != x && merge_bases_in(&repo, *x, *y).is_ok_and(|m| m.contains(x)))
        });
    }
    Ok(bases.first().copied())
}

/// Common ancestors of `a` and `b` that are not ancestors of other ones found
/// first, newest first: git's `paint_down_to_common`. (gix's own merge-base
/// needs the `revision` feature, which this crate does not enable.)
fn merge_bases_in(repo: &gix::Repository, a: Oid, b: Oid) -> Result<Vec<Oid>, GitError> {
    use std::collections::{BinaryHeap, HashMap};
    const P1: u8 = 1;
    const P2: u8 = 2;
    const STALE: u8 = 4;
    const RESULT: u8 = 8;
    if a == b {
        return Ok(vec![a]);
    }
    let doing = || format!("finding the merge base of {a} and {b}");
    let mut info: HashMap<Oid, (i64, Vec<Oid>)> = HashMap::new();
    let mut load = |id: Oid| -> Result<(i64, Vec<Oid>), GitError> {
        if let Some(i) = info.get(&id) {
            return Ok(i.clone());
        }
        let commit = repo.find_commit(id).map_err(|_| GitError::UnknownRev {
            rev: id.to_string(),
        })?;
        let time = commit.time().map_err(ctx(doing()))?.seconds;
        let parents: Vec<Oid> = commit.parent_ids().map(|p| p.detach()).collect();
        info.insert(id, (time, parents.clone()));
        Ok((time, parents))
    };
    let mut flags: HashMap<Oid, u8> = HashMap::new();
    let mut queue = BinaryHeap::new();
    for (id, f) in [(a, P1), (b, P2)] {
        flags.insert(id, f);
        queue.push((load(id)?.0, id));
    }
    let mut result = Vec::new();
    while queue
        .iter()
        .any(|(_, id)| flags.get(id).copied().unwrap_or(0) & STALE == 0)
    {
        let Some((_, id)) = queue.pop() else { break };
        let mut f = flags[&id] & (P1 | P2 | STALE);
        if f == P1 | P2 {
            if flags[&id] & RESULT == 0 {
                *flags.get_mut(&id).expect("present") |= RESULT;
                result.push(id);
            }
            f |= STALE;
        }
        for parent in load(id)?.1 {
            let pf = flags.entry(parent).or_insert(0);
            if *pf & f == f {
                continue;
            }
            *pf |= f;
            queue.push((load(parent)?.0, parent));
        }
    }
    Ok(result
        .into_iter()
        .filter(|id| flags[id] & STALE == 0)
        .collect())
}

/// `true` when `ancestor` is `of` or one of its ancestors.
pub fn is_ancestor(repo: &Path, ancestor: Oid, of: Oid) -> Result<bool, GitError> {
    if ancestor == of {
        return Ok(true);
    }
    let repo = open_repo(repo)?;
    Ok(merge_bases_in(&repo, ancestor, of)?.contains(&ancestor))
}

/// The tree id of `commit`.
pub fn commit_tree_id(repo: &Path, commit: Oid) -> Result<Oid, GitError> {
    commit_tree_id_in(&open_repo(repo)?, commit)
}

/// `true` when commits `a` and `b` have the same tree.
pub fn trees_equal(repo: &Path, a: Oid, b: Oid) -> Result<bool, GitError> {
    let repo = open_repo(repo)?;
    Ok(commit_tree_id_in(&repo, a)? == commit_tree_id_in(&repo, b)?)
}

// These tests check against the git CLI, which a Windows build under Wine lacks.
#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use crate::git::test_support::{commit_all, git, init_repo, oid, write};

    /// Commit with a fixed, increasing date so log order has no ties.
    fn commit_at(root: &Path, msg: &str, t: i64) -> Oid {
        let date = format!("{t} +0000");
        git(root, &["add", "-A"]);
        let out = std::process::Command::new("git")
            .args(["commit", "-q", "--allow-empty", "-m", msg])
            .current_dir(root)
            .env("GIT_AUTHOR_DATE", &date)
            .env("GIT_COMMITTER_DATE", &date)
            .output()
            .unwrap();
        assert!(out.status.success());
        oid(&git(root, &["rev-parse", "HEAD"]))
    }

    #[test]
    fn diffstat_matches_git_numstat() {
        let dir = init_repo();
        let root = dir.path();
        write(root, "a.txt", "1\n2\n3\n4\n5\n");
        write(root, "dir/b.txt", "b\n");
        write(root, "gone.txt", "x\ny\n");
        write(root, "mode.sh", "echo\n");
        std::fs::write(root.join("bin.dat"), [0u8, 1, 2, 3]).unwrap();
        let from = commit_all(root, "one");
        write(root, "a.txt", "1\ntwo\n3\n5\nsix\nseven\n");
        write(root, "dir/sub/new.txt", "n1\nn2\nn3\n");
        write(root, "empty.txt", "");
        std::fs::remove_file(root.join("gone.txt")).unwrap();
        std::fs::write(root.join("bin.dat"), [0u8, 9, 9]).unwrap();
        git(root, &["update-index", "--chmod=+x", "mode.sh"]);
        git(root, &["add", "-A"]);
        git(root, &["update-index", "--chmod=+x", "mode.sh"]);
        git(root, &["commit", "-q", "-m", "two"]);
        let to = oid(&git(root, &["rev-parse", "HEAD"]));

        let stat = diffstat(root, from, to).unwrap();
        let ours: Vec<String> = stat
            .files
            .iter()
            .map(|f| {
                if f.binary {
                    format!("-\t-\t{}", f.path)
                } else {
                    format!("{}\t{}\t{}", f.added, f.removed, f.path)
                }
            })
            .collect();
        let theirs = git(
            root,
            &[
                "diff",
                "--numstat",
                "--no-renames",
                &from.to_string(),
                &to.to_string(),
            ],
        );
        assert_eq!(ours.join("\n"), theirs);
        assert_eq!(
            stat.added,
            stat.files.iter().map(|f| f.added).sum::<usize>()
        );
        assert_eq!(
            stat.removed,
            stat.files.iter().map(|f| f.removed).sum::<usize>()
        );
        assert!(stat.files.iter().any(|f| f.binary));
    }

    #[test]
    fn log_range_merge_base_and_is_ancestor_match_git() {
        let dir = init_repo();
        let root = dir.path();
        let mut t = 1_700_000_000;
        let mut tick = || {
            t += 60;
            t
        };
        write(root, "f.txt", "0\n");
        let base = commit_at(root, "base", tick());
        git(root, &["checkout", "-q", "-b", "side"]);
        write(root, "s.txt", "1\n");
        let s1 = commit_at(root, "side 1\n\nbody text", tick());
        git(root, &["checkout", "-q", "main"]);
        write(root, "m.txt", "1\n");
        let m1 = commit_at(root, "main 1", tick());
        git(root, &["checkout", "-q", "side"]);
        write(root, "s.txt", "2\n");
        let s2 = commit_at(root, "side 2", tick());
        // Criss-cross: each side merges the other's first commit.
        git(root, &["merge", "-q", "--no-edit", &m1.to_string()]);
        let s3 = commit_at(root, "side 3", tick());
        git(root, &["checkout", "-q", "main"]);
        git(root, &["merge", "-q", "--no-edit", &s1.to_string()]);
        let m2 = commit_at(root, "main 2", tick());

        let revs = [base, s1, m1, s2, s3, m2];
        for &a in &revs {
            for &b in &revs {
                let range = format!("{a}..{b}");
                let want = git(root, &["log", "--format=%H", &range]);
                let got: Vec<String> = log_range(root, a, b)
                    .unwrap()
                    .iter()
                    .map(|c| c.id.to_string())
                    .collect();
                assert_eq!(got.join("\n"), want, "log {range}");

                let all = git(
                    root,
                    &["merge-base", "--all", &a.to_string(), &b.to_string()],
                );
                let got = merge_base(root, a, b).unwrap().expect("related");
                assert!(
                    all.lines().any(|l| oid(l) == got),
                    "merge-base {a} {b}: {got} not in {all}"
                );
                if all.lines().count() == 1 {
                    assert_eq!(got.to_string(), all);
                }

                let anc = crate::git::test_support::git_out(
                    root,
                    &[
                        "merge-base",
                        "--is-ancestor",
                        &a.to_string(),
                        &b.to_string(),
                    ],
                )
                .status
                .success();
                assert_eq!(is_ancestor(root, a, b).unwrap(), anc, "is-ancestor {a} {b}");
            }
        }
        let log = log_range(root, base, s1).unwrap();
        assert_eq!(log[0].summary, "side 1");
        assert_eq!(log[0].message, "side 1\n\nbody text\n");
        assert_eq!(log[0].author, "Test <test@example.com>");
        assert_eq!(log[0].time, 1_700_000_120);
        assert_eq!(
            commit_tree_id(root, m2).unwrap().to_string(),
            git(root, &["rev-parse", "main^{tree}"])
        );

        // Unrelated history: no merge base.
        git(root, &["checkout", "-q", "--orphan", "alone"]);
        let alone = commit_at(root, "alone", tick());
        assert_eq!(merge_base(root, alone, m2).unwrap(), None);
        assert!(!is_ancestor(root, alone, m2).unwrap());
    }
}
