//! Helpers for the git module's tests: real repositories driven by the git binary.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::Oid;

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
    init_repo_at(dir.path());
    dir
}

/// A fresh repository in a folder `name` of a new temporary directory.
pub(crate) fn init_repo_named(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join(name);
    init_repo_at(&p);
    (dir, p)
}

/// A fresh repository at `p` (made if missing) with an identity and branch main.
pub(crate) fn init_repo_at(p: &Path) {
    std::fs::create_dir_all(p).unwrap();
    git(p, &["init", "-q", "-b", "main"]);
    git(p, &["config", "user.name", "Test"]);
    git(p, &["config", "user.email", "test@example.com"]);
    git(p, &["config", "commit.gpgsign", "false"]);
}

pub(crate) fn write(root: &Path, path: &str, content: &str) {
    let full = root.join(path);
    std::fs::create_dir_all(full.parent().unwrap()).unwrap();
    std::fs::write(full, content).unwrap();
}

/// Write each (path, content) under `root`.
pub(crate) fn write_files(root: &Path, files: &[(&str, &str)]) {
    for (path, content) in files {
        write(root, path, content);
    }
}

/// Write one file and commit everything.
pub(crate) fn commit_file(root: &Path, path: &str, content: &str, msg: &str) -> Oid {
    write(root, path, content);
    commit_all(root, msg)
}

/// Assert each file under `root` holds its content.
pub(crate) fn assert_files(root: &Path, files: &[(&str, &str)]) {
    for (path, content) in files {
        let got = std::fs::read_to_string(root.join(path)).unwrap();
        assert_eq!(got, *content, "{path}");
    }
}

pub(crate) fn commit_all(root: &Path, msg: &str) -> Oid {
    git(root, &["add", "-A"]);
    git(root, &["commit", "-q", "--allow-empty", "-m", msg]);
    oid(&git(root, &["rev-parse", "HEAD"]))
}

#[cfg(unix)]
pub(crate) fn set_exec(path: &Path, exec: bool) {
    use std::os::unix::fs::PermissionsExt;
    let mode = if exec { 0o755 } else { 0o644 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}
#[cfg(not(unix))]
pub(crate) fn set_exec(_: &Path, _: bool) {}
