//! The data directory's advisory lock (`DATA/serve.lock`).
//!
//! A running server keeps the root key in memory for its lifetime, so the one
//! command that replaces the root key (`master rotate`) must not run while a server
//! holds the vault: the server would go on with a root that no longer unwraps
//! anything. The server takes a shared `flock` when it opens the vault and keeps it
//! until it stops; `master rotate` takes an exclusive one for its whole run and
//! refuses when it cannot. `flock` locks belong to the open file: the kernel drops
//! them when the process ends, however it ends, so a killed server leaves no stale
//! lock behind.

use std::fs::File;
use std::path::Path;

/// A held lock on the data directory; released when dropped.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

fn open(data_dir: &Path) -> std::io::Result<File> {
    let path = super::serve_lock_path(data_dir);
    crate::data_dir::owner_only()
        .read(true)
        .create(true)
        .truncate(false)
        .open(path)
}

#[cfg(unix)]
fn try_lock(data_dir: &Path, exclusive: bool) -> std::io::Result<Option<DirLock>> {
    use rustix::fs::{FlockOperation, flock};
    let file = open(data_dir)?;
    let op = if exclusive {
        FlockOperation::NonBlockingLockExclusive
    } else {
        FlockOperation::NonBlockingLockShared
    };
    match flock(&file, op) {
        Ok(()) => Ok(Some(DirLock { _file: file })),
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => Ok(None),
        Err(e) => Err(e.into()),
    }
}

#[cfg(not(unix))]
fn try_lock(data_dir: &Path, _exclusive: bool) -> std::io::Result<Option<DirLock>> {
    // No flock: the lock file exists but excludes nothing (documented).
    Ok(Some(DirLock {
        _file: open(data_dir)?,
    }))
}

/// Takes the shared lock (a serving vault). `None` if an exclusive holder (a
/// running `master rotate`) has it.
pub fn lock_shared(data_dir: &Path) -> std::io::Result<Option<DirLock>> {
    try_lock(data_dir, false)
}

/// Takes the exclusive lock (`master rotate`). `None` if anyone else holds the
/// lock (a serving vault, or another `master rotate`).
pub fn lock_exclusive(data_dir: &Path) -> std::io::Result<Option<DirLock>> {
    try_lock(data_dir, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_holders_exclude_an_exclusive_one_and_the_other_way_round() {
        let dir = tempfile::tempdir().unwrap();
        let a = lock_shared(dir.path()).unwrap().unwrap();
        let b = lock_shared(dir.path()).unwrap().unwrap();
        assert!(lock_exclusive(dir.path()).unwrap().is_none());
        drop(a);
        assert!(lock_exclusive(dir.path()).unwrap().is_none());
        drop(b);
        let x = lock_exclusive(dir.path()).unwrap().unwrap();
        assert!(lock_shared(dir.path()).unwrap().is_none());
        assert!(lock_exclusive(dir.path()).unwrap().is_none());
        drop(x);
        assert!(lock_shared(dir.path()).unwrap().is_some());
    }
}
