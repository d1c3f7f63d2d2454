//! Remotes: reading a remote's URL with gix, fetching refs with the `git`
//! binary.

use super::GitError;
use super::repo::open_repo;
use std::path::Path;

/// The URL of a configured remote, if there is such a remote.
pub fn remote_url(repo: &Path, name: &str) -> Result<Option<String>, GitError> {
    let r = open_repo(repo)?;
    let url = r
        .config_snapshot()
        .string(format!("remote.{name}.url").as_str())
        .map(|u| u.to_string());
    Ok(url)
}

/// Fetch `refspecs` (`+src:dst`) from `remote` (a remote name or a URL).
/// Refspecs whose source does not exist on the remote are left out, not fatal.
///
/// This uses the `git` binary: mpw builds gix without its network client,
/// and fetching over https and ssh needs the user's credential helpers and
/// ssh setup, which only git itself honours in full.
pub fn fetch(repo: &Path, remote: &str, refspecs: &[String]) -> Result<(), GitError> {
    if refspecs.is_empty() {
        return Ok(());
    }
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(repo)
        .args([
            "fetch",
            "--quiet",
            "--no-tags",
            "--no-write-fetch-head",
            remote,
        ])
        .args(refspecs)
        .output()
        .map_err(|e| GitError::Io {
            path: "git".into(),
            source: e,
        })?;
    if out.status.success() {
        return Ok(());
    }
    Err(GitError::gix(
        format!("git fetch {remote}"),
        String::from_utf8_lossy(&out.stderr).trim(),
    ))
}

/// Names of the refs under `prefix` on `remote`, as `git ls-remote` lists them.
/// Uses the `git` binary for the same reason as [`fetch`].
pub fn remote_refs(repo: &Path, remote: &str, prefix: &str) -> Result<Vec<String>, GitError> {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["ls-remote", "--quiet", remote])
        .arg(format!("{prefix}*"))
        .output()
        .map_err(|e| GitError::Io {
            path: "git".into(),
            source: e,
        })?;
    if !out.status.success() {
        return Err(GitError::gix(
            format!("git ls-remote {remote}"),
            String::from_utf8_lossy(&out.stderr).trim(),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('\t').map(|(_, r)| r.to_string()))
        .filter(|r| r.starts_with(prefix))
        .collect())
}
