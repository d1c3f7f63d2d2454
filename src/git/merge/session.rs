//! An in-memory merge session: merges and commits stay in memory until
//! `persist`, so a conflicted attempt leaves nothing behind.

use std::path::Path;

use super::{MergeResult, git_compat};
use crate::git::Oid;
use crate::git::error::{GitError, ctx};
use crate::git::repo::{commit_tree_id_in, open_repo, write_commit, write_replayed_commit};

/// An in-memory merge session: objects written by merges and commits stay in memory until `persist`.
pub struct MergeSession {
    /// Also read by the git-compatibility tests: merged trees live only here.
    pub(super) repo: gix::Repository,
    options: gix::merge::commit::Options,
    tree_options: gix::merge::tree::Options,
    /// Commits made by `commit` and not yet persisted.
    pending: Vec<Oid>,
}

impl MergeSession {
    /// Open the repository at (or around) `repo` for a series of in-memory merges.
    pub fn open(repo: &Path) -> Result<Self, GitError> {
        let mut repo = open_repo(repo)?.with_object_memory();
        // Merges read the same trees again and again: a cache pays off.
        repo.object_cache_size_if_unset(32 * 1024 * 1024);
        let tree_options = repo
            .tree_merge_options()
            .map_err(ctx("reading merge options"))?;
        Ok(MergeSession {
            repo,
            options: tree_options.clone().into(),
            tree_options,
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
        let doing = format!("merging {theirs} into {ours}");
        let mut outcome = self
            .repo
            .merge_commits(ours, theirs, labels, self.options.clone())
            .map_err(ctx(&doing))?;
        let (tree, conflicts) =
            git_compat::write_like_git(&self.repo, &mut outcome.tree_merge).map_err(ctx(doing))?;
        Ok(MergeResult { tree, conflicts })
    }

    /// The heads merged into one commit, one after another (one head is
    /// itself): where a stacked workstream starts. Err: the conflicted paths.
    pub fn merge_heads(
        &mut self,
        heads: &[Oid],
        message: &str,
    ) -> Result<Result<Oid, Vec<String>>, GitError> {
        let Some((first, rest)) = heads.split_first() else {
            return Err(GitError::gix("merging heads", "no head to merge"));
        };
        let mut acc = *first;
        for o in rest {
            let m = self.merge(acc, *o, "dependencies", "dependency")?;
            if !m.is_clean() {
                return Ok(Err(m.conflicts));
            }
            acc = self.commit(m.tree, &[acc, *o], message)?;
        }
        Ok(Ok(acc))
    }

    /// Apply the change `commit` made (to its first parent) onto commit `onto`,
    /// like `git cherry-pick`: a three-way merge of the trees with the
    /// parent's tree as the base.
    pub fn cherry_pick(
        &mut self,
        onto: Oid,
        commit: Oid,
        onto_label: &str,
        label: &str,
    ) -> Result<MergeResult, GitError> {
        let doing = format!("applying {commit} onto {onto}");
        let parent = self
            .repo
            .find_commit(commit)
            .map_err(ctx(&doing))?
            .parent_ids()
            .next()
            .map(|p| p.detach());
        let base = match parent {
            Some(p) => commit_tree_id_in(&self.repo, p)?,
            None => self.repo.empty_tree().id,
        };
        let ours = commit_tree_id_in(&self.repo, onto)?;
        let theirs = commit_tree_id_in(&self.repo, commit)?;
        let labels = gix::merge::blob::builtin_driver::text::Labels {
            ancestor: None,
            current: Some(onto_label.into()),
            other: Some(label.into()),
        };
        let mut outcome = self
            .repo
            .merge_trees(base, ours, theirs, labels, self.tree_options.clone())
            .map_err(ctx(&doing))?;
        let (tree, conflicts) =
            git_compat::write_like_git(&self.repo, &mut outcome).map_err(ctx(doing))?;
        Ok(MergeResult { tree, conflicts })
    }

    /// The tree of `commit`, which may live in memory only.
    pub fn tree_of(&self, commit: Oid) -> Result<Oid, GitError> {
        commit_tree_id_in(&self.repo, commit)
    }

    /// Write (in memory) a copy of commit `original` with `tree` on
    /// `parents`, keeping its author and message.
    pub fn replay(&mut self, tree: Oid, parents: &[Oid], original: Oid) -> Result<Oid, GitError> {
        let id = write_replayed_commit(&self.repo, tree, parents, original)?;
        self.pending.push(id);
        Ok(id)
    }

    /// Write a commit object (in memory) with the configured identity, or `mpw <mpw@localhost>`.
    pub fn commit(&mut self, tree: Oid, parents: &[Oid], message: &str) -> Result<Oid, GitError> {
        let id = write_commit(&self.repo, tree, parents, message)?;
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

// These tests check against the git CLI, which a Windows build under Wine lacks.
#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use crate::git::test_support::*;
    use crate::git::{trees_equal, update_ref_cas};

    #[test]
    fn objects_stay_in_memory_until_persist() {
        let dir = init_repo();
        let root = dir.path();
        commit_file(root, "f.txt", "base\n", "base");
        git(root, &["checkout", "-q", "-b", "side"]);
        let side = commit_file(root, "side.txt", "side\n", "side");
        git(root, &["checkout", "-q", "main"]);
        let main = commit_file(root, "main.txt", "main\n", "main");

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

    /// Rough timing: 30 branches merged one by one into main on a 5,000-file repo.
    /// `cargo test --lib git::merge::session::tests::bench -- --ignored --nocapture`
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
