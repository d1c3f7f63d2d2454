//! The plan's `ignore` rules (gitignore syntax) on top of the repository's
//! own: paths matching them are never committed, never count as a change
//! and never quarantine a task.

use ignore::gitignore::{Gitignore, GitignoreBuilder};

/// Well-known tool output that is not source, ignored unless
/// `globals.ignore_defaults` is false.
pub const DEFAULT_IGNORES: &[&str] = &[
    "__pycache__/",
    "*.py[co]",
    ".pytest_cache/",
    ".mypy_cache/",
    ".ruff_cache/",
    ".tox/",
    // A slash inside anchors a gitignore pattern; this one holds at any depth.
    "**/node_modules/.cache/",
    ".DS_Store",
    "Thumbs.db",
];

/// Compiled ignore rules, matched against `/`-separated paths relative to
/// the worktree root.
#[derive(Debug, Clone)]
pub struct IgnoreRules(Gitignore);

impl IgnoreRules {
    /// The defaults (when `defaults`) then `patterns`, later lines winning as
    /// in a `.gitignore` (so `!keep.pyc` re-includes).
    pub fn new<'a>(
        defaults: bool,
        patterns: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, String> {
        // The root only anchors patterns with a `/`; paths are given relative.
        let mut b = GitignoreBuilder::new("");
        if defaults {
            for p in DEFAULT_IGNORES {
                b.add_line(None, p).map_err(|e| e.to_string())?;
            }
        }
        for p in patterns {
            b.add_line(None, p)
                .map_err(|e| format!("ignore pattern `{p}`: {e}"))?;
        }
        b.build().map(IgnoreRules).map_err(|e| e.to_string())
    }

    /// Whether one pattern line is valid gitignore syntax.
    pub fn check_pattern(p: &str) -> Result<(), String> {
        let mut b = GitignoreBuilder::new("");
        b.add_line(None, p).map_err(|e| e.to_string())?;
        b.build().map(|_| ()).map_err(|e| e.to_string())
    }

    /// Whether the file at `path`, or a folder above it, is ignored.
    pub fn is_ignored(&self, path: &str) -> bool {
        self.0.matched_path_or_any_parents(path, false).is_ignore()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_cover_caches_at_any_depth_and_patterns_can_reinclude() {
        let r = IgnoreRules::new(true, ["*.log", "!keep.log"]).unwrap();
        assert!(r.is_ignored("toolz/__pycache__/x.cpython-312.pyc"));
        assert!(r.is_ignored("a.pyc"));
        assert!(r.is_ignored(".pytest_cache/v/cache/nodeids"));
        assert!(r.is_ignored("web/node_modules/.cache/x"));
        assert!(r.is_ignored("build.log"));
        assert!(!r.is_ignored("keep.log"));
        assert!(!r.is_ignored("toolz/core.py"));
        assert!(!r.is_ignored("web/node_modules/left-pad/index.js"));
        let none = IgnoreRules::new(false, []).unwrap();
        assert!(!none.is_ignored("toolz/__pycache__/x.pyc"));
    }

    #[test]
    fn a_bad_pattern_is_named() {
        let e = IgnoreRules::new(false, ["a[z-a]"]).unwrap_err();
        assert!(e.contains("a[z-a]"), "{e}");
    }
}
