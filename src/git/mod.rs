//! Every gix call of mpw lives in this module: repositories, refs, worktrees,
//! snapshot commits, in-memory merges.

mod error;
mod history;
mod ignored;
mod merge;
mod snapshot;
mod worktree;

pub use error::GitError;
pub use gix::ObjectId as Oid;
pub use history::*;
pub use ignored::*;
pub use merge::*;
pub use snapshot::*;
pub use worktree::*;
