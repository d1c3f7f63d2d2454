//! The fixes that make gix's merge agree with `git merge-tree --write-tree`
//! (git's `ort` strategy, default options): the same tree, the same
//! conflicted paths. Each fix names the git behaviour it matches.

use std::collections::BTreeSet;

use gix::bstr::{BStr, ByteSlice};
use gix::merge::tree::TreatAsUnresolved;

use crate::git::Oid;

/// Write the tree of a finished gix merge and list its unresolved paths,
/// both as git would have them.
pub(super) fn write_like_git(
    repo: &gix::Repository,
    merge: &mut gix::merge::tree::Outcome<'_>,
) -> Result<(Oid, Vec<String>), gix::Error> {
    let mut tree = merge.tree.write()?.detach();
    // git: after a rename, the exec bit merges three-way.
    let fixes = rename_mode_fixes(&merge.conflicts);
    if !fixes.is_empty() {
        tree = apply_mode_fixes(repo, &mut merge.tree, tree, &fixes)?;
    }
    // git: `merge.directoryRenames=conflict` moves only direct children, as conflicts.
    let (undo, dir_rename_conflicts) = dir_rename_fixes(&merge.conflicts);
    if !undo.is_empty() {
        let editor = &mut merge.tree;
        for (moved_to, back_to, kind, id) in &undo {
            editor.remove(moved_to.as_str())?;
            editor.upsert(back_to.as_str(), *kind, *id)?;
        }
        tree = editor.write()?.detach();
    }
    // git: what counts as unresolved, and the paths its index would hold at stages 1-3.
    let how = TreatAsUnresolved::git();
    let mut conflicts = if merge.has_unresolved_conflicts(how) {
        conflicted_paths(repo, tree, &merge.conflicts, how)?
    } else {
        Vec::new()
    };
    if !dir_rename_conflicts.is_empty() {
        conflicts.extend(dir_rename_conflicts);
        conflicts.sort();
        conflicts.dedup();
    }
    Ok((tree, conflicts))
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

/// Set the exec bit of `fixes` in the merged `tree`, returning the new tree id
/// (the three-way mode merge of `rename_mode_fixes`).
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

/// The paths git would leave conflicted in the index (what `merge-tree
/// --name-only` lists), found by applying the conflicts to an index of the
/// merged tree.
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

// These tests check against the git CLI, which a Windows build under Wine lacks.
#[cfg(all(test, unix))]
mod tests {
    use super::super::MergeSession;
    use crate::git::Oid;
    use crate::git::test_support::*;
    use std::collections::BTreeMap;
    use std::path::Path;

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
}
