//! Every gix call of mpw lives in this module: repositories, refs, worktrees,
//! snapshot commits, in-memory merges. See the "Module map" in
//! docs/ARCHITECTURE.md.

mod checkout;
mod error;
mod history;
mod ignore;
mod ignored;
mod merge;
mod quick_status;
mod registrations;
mod remote;
mod repo;
mod snapshot;
// Git-CLI helpers: the tests that use them are Unix-only (Wine has no git).
#[cfg(all(test, unix))]
pub(crate) mod test_support;
mod worktree;

pub use checkout::{advance_branch, finish_checkout_update, update_ref_cas};
pub use error::GitError;
pub use gix::ObjectId as Oid;
pub use history::*;
pub use ignore::{DEFAULT_IGNORES, IgnoreRules};
pub use ignored::*;
pub use merge::*;
pub use remote::*;
pub use repo::Repo;
pub use snapshot::*;
pub use worktree::*;
