//! mpw: run several streams of code changes in parallel, one git worktree
//! each, and merge them back one at a time.

pub mod cli;
pub mod exec;
pub mod git;
pub mod model;
pub mod plan;
