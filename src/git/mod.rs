//! Every gix call of mpw lives in this module: repositories, refs, worktrees,
//! snapshot commits, in-memory merges. See the "Module map" in
//! docs/ARCHITECTURE.md.

mod checkout;
mod error;
mod history;
mod ignore;
mod merge;
mod repo;
mod snapshot;
#[cfg(test)]
pub(crate) mod test_support;
mod worktree;

pub use checkout::{advance_branch, update_ref_cas};
pub use error::GitError;
pub use gix::ObjectId as Oid;
pub use history::*;
pub use ignore::{DEFAULT_IGNORES, IgnoreRules};
pub use merge::*;
pub use snapshot::*;
pub use worktree::*;
