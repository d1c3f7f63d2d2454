//! Exclusive file locks (std `File::lock`), the one way mpw keeps two
//! processes apart: one coordinator per run, one integration per repository.
//! The OS releases a lock when its holder dies, which is how a crashed
//! coordinator is recognised. See docs/ARCHITECTURE.md, "Files on disk".

use crate::error::IoError;
use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;

fn open(path: &Path) -> Result<File, IoError> {
    let err = |source| IoError {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| IoError {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(err)
}

/// Take the lock at `path` (created if missing) if nobody holds it:
/// `None` when another process does. Held until the file is dropped.
pub fn try_acquire(path: &Path) -> Result<Option<File>, IoError> {
    let f = open(path)?;
    match f.try_lock() {
        Ok(()) => Ok(Some(f)),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(source)) => Err(IoError {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Take the lock at `path`, waiting for its holder; `on_wait` is told once
/// when it has to wait.
pub fn acquire(path: &Path, on_wait: &mut dyn FnMut()) -> Result<File, IoError> {
    if let Some(f) = try_acquire(path)? {
        return Ok(f);
    }
    on_wait();
    let f = open(path)?;
    f.lock().map_err(|source| IoError {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(f)
}

/// Does a live process hold the lock at `path`? A missing file is no lock.
pub fn is_held(path: &Path) -> bool {
    path.exists() && !matches!(try_acquire(path), Ok(Some(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_is_seen_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("x.lock");
        assert!(!is_held(&path));
        let held = try_acquire(&path).unwrap().expect("free");
        // File locks conflict between open file descriptions, even in one process.
        assert!(try_acquire(&path).unwrap().is_none());
        assert!(is_held(&path));
        drop(held);
        assert!(!is_held(&path));
        let mut waited = false;
        let _again = acquire(&path, &mut || waited = true).unwrap();
        assert!(!waited);
    }
}
