//! Plan paths given to the MCP tools stay inside the repository the server
//! was started in: the server must not read more than the CLI run there would.

use std::path::{Component, Path, PathBuf};

/// Resolves `given` (relative to `root`, or absolute) and returns it relative
/// to `root`, or an error naming the path if it leads outside: through `..`,
/// as an absolute path elsewhere, or through a symbolic link.
///
/// `canonical_root` is `root` canonicalised. A path that does not exist is
/// returned as is, so that the command reports it as the CLI would.
pub fn confine(root: &Path, canonical_root: &Path, given: &str) -> Result<PathBuf, String> {
    let outside = || {
        format!(
            "{given}: outside the repository {}; the MCP server only reads plans inside the repository it was started in",
            root.display()
        )
    };
    if given.trim().is_empty() {
        return Err("the plan path is empty".into());
    }
    let p = Path::new(given);
    let rel = if p.is_absolute() {
        let norm = normalise(p).ok_or_else(outside)?;
        let inside = norm
            .strip_prefix(root)
            .or_else(|_| norm.strip_prefix(canonical_root))
            .map_err(|_| outside())?;
        inside.to_path_buf()
    } else {
        // `C:foo` (drive-relative) is neither absolute nor under the root.
        if p.components()
            .any(|c| matches!(c, Component::Prefix(_) | Component::RootDir))
        {
            return Err(outside());
        }
        normalise(p).ok_or_else(outside)?
    };
    let full = canonical_root.join(&rel);
    if let Ok(real) = std::fs::canonicalize(&full)
        && !real.starts_with(canonical_root)
    {
        return Err(outside());
    }
    Ok(rel)
}

/// Removes `.` and resolves `..` textually; None if `..` climbs above the start.
fn normalise(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    let mut depth = 0usize;
    for c in p.components() {
        match c {
            Component::Prefix(_) | Component::RootDir => out.push(c.as_os_str()),
            Component::CurDir => {}
            Component::ParentDir => {
                if depth == 0 {
                    return None;
                }
                out.pop();
                depth -= 1;
            }
            Component::Normal(s) => {
                out.push(s);
                depth += 1;
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("repo");
        std::fs::create_dir_all(root.join("plans")).unwrap();
        std::fs::write(root.join("plans/a.jsonc"), "{}").unwrap();
        std::fs::write(dir.path().join("secret.jsonc"), "{}").unwrap();
        let canon = std::fs::canonicalize(&root).unwrap();
        (dir, root, canon)
    }

    #[test]
    fn paths_inside_the_repository_come_back_relative() {
        let (_d, root, canon) = setup();
        let ok = |g: &str| confine(&root, &canon, g).unwrap();
        assert_eq!(ok("plans/a.jsonc"), Path::new("plans/a.jsonc"));
        assert_eq!(ok("./plans/../plans/a.jsonc"), Path::new("plans/a.jsonc"));
        let abs = root.join("plans/a.jsonc");
        assert_eq!(ok(abs.to_str().unwrap()), Path::new("plans/a.jsonc"));
        // Missing files are left for the command to report.
        assert_eq!(ok("plans/missing.jsonc"), Path::new("plans/missing.jsonc"));
    }

    #[test]
    fn paths_leading_outside_are_refused_with_the_path_named() {
        let (d, root, canon) = setup();
        let outside = d.path().join("secret.jsonc");
        for g in [
            "../secret.jsonc",
            "plans/../../secret.jsonc",
            outside.to_str().unwrap(),
        ] {
            let e = confine(&root, &canon, g).unwrap_err();
            assert!(e.starts_with(g), "{e}");
            assert!(e.contains("outside the repository"), "{e}");
        }
        assert!(confine(&root, &canon, "").is_err());
    }

    #[cfg(unix)]
    #[test]
    fn a_symbolic_link_out_of_the_repository_is_refused() {
        let (d, root, canon) = setup();
        std::os::unix::fs::symlink(d.path().join("secret.jsonc"), root.join("plans/link.jsonc"))
            .unwrap();
        let e = confine(&root, &canon, "plans/link.jsonc").unwrap_err();
        assert!(e.contains("outside the repository"), "{e}");
    }
}
