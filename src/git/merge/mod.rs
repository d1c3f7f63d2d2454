//! In-memory three-way merges that agree with `git merge-tree --write-tree`.

mod git_compat;
mod session;

pub use session::MergeSession;

use super::Oid;

/// The outcome of a three-way merge: the merged tree and the paths left conflicted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeResult {
    /// The merged tree; with conflicts it holds conflict markers like `git merge-tree`'s.
    pub tree: Oid,
    /// Unresolved conflicted paths only, sorted and deduplicated.
    pub conflicts: Vec<String>,
}

impl MergeResult {
    /// `true` when no conflict is left to resolve.
    pub fn is_clean(&self) -> bool {
        self.conflicts.is_empty()
    }
}
