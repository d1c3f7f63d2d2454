//! mpw: run several streams of code changes in parallel, one git worktree
//! each, and merge them back one at a time.

pub mod clean;
pub mod cli;
pub mod error;
pub mod exec;
pub mod export;
pub mod fault;
pub mod git;
pub mod import;
pub mod integrate;
pub mod lock;
pub mod mcp;
pub mod model;
pub mod plan;
pub mod pr;
pub mod report;
pub mod runner;
pub mod scheduler;
pub mod signals;
pub mod slots;
pub mod store;
pub mod worktree_include;
