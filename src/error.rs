//! The errors of the layers every command stands on (the plan, git, the
//! store), held whole by the commands' own error types so that the CLI maps
//! them to exit codes once (`cli::exit`); and the plain I/O error on a path.

use crate::git::GitError;
use crate::plan::PlanError;
use crate::store::StoreError;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Git(#[from] GitError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// `From` each layer's error for a command's error type with a
/// `Layer(LayerError)` variant, so that `?` works on them directly.
macro_rules! from_layers {
    ($t:ty) => {
        $crate::error::from_layers!(
            @each $t: $crate::plan::PlanError, $crate::git::GitError, $crate::store::StoreError
        );
    };
    (@each $t:ty: $($e:ty),+) => {$(
        impl From<$e> for $t {
            fn from(e: $e) -> Self {
                Self::Layer(e.into())
            }
        }
    )+};
}
pub(crate) use from_layers;

/// Reading or writing `path` failed (a lock file, a directory, a file).
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct IoError {
    pub path: PathBuf,
    pub source: std::io::Error,
}
