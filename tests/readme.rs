//! The README's quick start, run as written: the first `sh` block after
//! "## Quick start" runs in a test repository with the built `mpw` first on
//! PATH, so the README and the binary cannot drift apart.
#![cfg(unix)]

mod common;

use common::*;
use std::path::Path;
use std::process::Command;

/// The first ```sh block after the "## Quick start" heading.
fn quick_start() -> String {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let section = readme
        .split_once("\n## Quick start\n")
        .expect("README has a '## Quick start' section")
        .1;
    let block = section
        .split_once("```sh\n")
        .expect("the quick start has a ```sh block")
        .1;
    block
        .split_once("```")
        .expect("the block is closed")
        .0
        .to_string()
}

#[test]
fn the_readme_quick_start_runs_as_written_and_leaves_the_original_alone() {
    let script = quick_start();
    assert!(script.contains("mpw run plans/demo.jsonc"), "{script}");
    let demo =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("plans/demo.jsonc"))
            .unwrap();
    let repo = repo()
        .with_file("src/lib.rs", "pub fn f() {}\n")
        .with_file("plans/demo.jsonc", demo)
        .commit("init");
    let before = repo.head("main");
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_mpw")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("sh")
        .arg("-ec")
        .arg(&script)
        .current_dir(&repo.path)
        .env("PATH", path)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        // The scratch clone has no local identity; integrate commits there.
        .env("GIT_AUTHOR_NAME", "Test User")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test User")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the quick start failed ({:?})\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        stdout_of(&out),
        stderr_of(&out)
    );
    // The user's own repository is untouched.
    assert_eq!(repo.head("main"), before);
    assert_eq!(repo.git(&["status", "--porcelain"]), "");
    assert!(
        !repo.mpw_dir().exists(),
        "no run was recorded in the original"
    );
    // The scratch clone has the demo merged, the PR bodies and the report,
    // and no worktree or merged branch left.
    let scratch = repo.dir.path().join("mpw-scratch");
    let git = |args: &[&str]| run_git(&scratch, args);
    assert_ne!(git(&["rev-parse", "HEAD"]), before);
    assert!(!git(&["ls-tree", "-r", "--name-only", "HEAD", "mpw-demo"]).is_empty());
    assert_eq!(git(&["status", "--porcelain", "--untracked-files=no"]), "");
    assert_eq!(git(&["worktree", "list"]).lines().count(), 1);
    assert_eq!(git(&["branch", "--list", "mpw/*"]), "");
    assert!(scratch.join("report.html").is_file());
    let runs: Vec<_> = std::fs::read_dir(scratch.join(".git/mpw/runs"))
        .unwrap()
        .collect();
    assert_eq!(runs.len(), 1);
    let pr_dir = runs[0].as_ref().unwrap().path().join("pr");
    assert!(
        std::fs::read_dir(&pr_dir).unwrap().count() > 0,
        "PR bodies in {}",
        pr_dir.display()
    );
}
