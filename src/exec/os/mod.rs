//! The platform layer of `exec`: one file per platform, each with the same
//! functions, so that the rest of `exec` is written once for all of them.
//! mpw runs on Unix and Windows.

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub(super) use unix::*;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub(super) use windows::*;
