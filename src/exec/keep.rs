//! Keeping old copies: before a file in DST is replaced or deleted, it moves into
//! `DST/.datasafe/versions` under a timestamped name (see [`crate::versions`]), and
//! retention later prunes what is too old. Nothing is ever copied: a replaced file is
//! hard-linked into the versions folder before the new copy is renamed over it (so the
//! final name never goes missing), a deleted one is linked and then unlinked. Where
//! the file system has no hard links, a rename does the same job.
//!
//! Folders inside the versions folder are reached like every other folder in DST
//! ([`Executor::dest_dir`]), so a symlink planted there never leads a write outside DST.

use super::ops::Reach;
use super::{Executor, OpError};
use crate::names::{esc, io_message};
use crate::scan::STATE_DIR;
use crate::versions::{self, Retention, VERSIONS_DIR};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Past this many versions of one name in one second something is wrong.
const MAX_SEQ: u32 = 10_000;

impl Executor {
    /// Keeps the regular file stored as `name` (at `path`) as a version before it is
    /// replaced (`keep_original`) or deleted. Does nothing if versions are off or `path`
    /// is not a regular file.
    pub(super) fn preserve(
        &self,
        name: &Path,
        path: &Path,
        keep_original: bool,
    ) -> Result<(), OpError> {
        if !self.keep.keeps() {
            return Ok(());
        }
        match fs::symlink_metadata(path) {
            Ok(m) if m.is_file() => {}
            _ => return Ok(()),
        }
        let at = chrono::Local::now().naive_local();
        let dir = self.dest_dir(&versions_rel(name, at, 0), Reach::Parents)?;
        for seq in 0..MAX_SEQ {
            let rel = versions::version_name(name, at, seq);
            let file_name = rel.file_name().unwrap_or(rel.as_os_str());
            let target = dir.join(file_name);
            match fs::hard_link(path, &target) {
                Ok(()) => {
                    if !keep_original {
                        match fs::remove_file(path) {
                            // Another worker deleted it (or a folder around it) meanwhile.
                            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                            other => other.map_err(OpError::io("deleting", path))?,
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                // Gone since the check above (another worker deleted a folder around
                // it): nothing to keep, and nothing left to delete.
                Err(e) if e.kind() == io::ErrorKind::NotFound && is_gone(path) => {
                    return Ok(());
                }
                Err(_) => {
                    // No hard links here (some network and FAT file systems): move it.
                    // Then a replaced name is missing until the new copy lands.
                    if fs::symlink_metadata(&target).is_ok() {
                        continue;
                    }
                    fs::rename(path, &target).map_err(OpError::io("keeping a version of", path))?;
                }
            }
            log::info!(
                "Kept version: {} as {}",
                esc(name),
                esc(Path::new(STATE_DIR).join(VERSIONS_DIR).join(&rel).as_path())
            );
            self.versions_kept
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Ok(());
        }
        Err(OpError::Io {
            doing: "keeping a version of",
            path: path.to_path_buf(),
            err: io::Error::other("too many versions within one second"),
        })
    }

    /// Keeps every regular file in the folder stored as `name` (at `path`) as a version
    /// before the folder is deleted. Symlinks inside are not followed.
    pub(super) fn preserve_tree(&self, name: &Path, path: &Path) -> Result<(), OpError> {
        if !self.keep.keeps() {
            return Ok(());
        }
        for entry in walkdir::WalkDir::new(path).follow_links(false) {
            let entry = match entry {
                Ok(entry) => entry,
                // Deleted meanwhile by another worker (a folder inside this one, say).
                Err(e)
                    if e.io_error()
                        .is_some_and(|e| e.kind() == io::ErrorKind::NotFound) =>
                {
                    continue;
                }
                Err(e) => {
                    let err = e
                        .into_io_error()
                        .unwrap_or_else(|| io::Error::other("loop"));
                    return Err(OpError::io("reading", path)(err));
                }
            };
            if !entry.file_type().is_file() {
                continue;
            }
            let Ok(inner) = entry.path().strip_prefix(path) else {
                continue;
            };
            self.preserve(&name.join(inner), entry.path(), false)?;
        }
        Ok(())
    }

    /// Deletes the versions retention `keep` no longer wants (with `Retention::Off`,
    /// none: turning versions off keeps what was kept so far) and the folders left
    /// empty. Returns how many went; errors are logged, never fatal.
    pub fn prune_versions(&self, keep: Retention) -> u64 {
        if !keep.keeps() {
            return 0;
        }
        let all = versions::list(&self.dst);
        if all.is_empty() {
            return 0;
        }
        let now = chrono::Local::now().naive_local();
        let mut pruned = 0;
        for rel in versions::to_prune(&all, now, keep) {
            let name = Path::new(STATE_DIR).join(VERSIONS_DIR).join(&rel);
            let path = match self.dest_dir(&name, Reach::Lookup) {
                Ok(dir) => dir.join(rel.file_name().unwrap_or(rel.as_os_str())),
                Err(_) => continue,
            };
            match fs::remove_file(&path) {
                Ok(()) => {
                    pruned += 1;
                    log::info!("Pruned version: {}", esc(&name));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => log::warn!("pruning {}: {}", esc(&path), io_message(&e)),
            }
        }
        if pruned > 0 {
            remove_empty_dirs(&self.dst.join(STATE_DIR).join(VERSIONS_DIR));
        }
        pruned
    }
}

/// True if nothing is at `path` any more.
fn is_gone(path: &Path) -> bool {
    fs::symlink_metadata(path).is_err_and(|e| e.kind() == io::ErrorKind::NotFound)
}

/// `versions/<name's folder>/<versioned name>` relative to DST.
fn versions_rel(name: &Path, at: chrono::NaiveDateTime, seq: u32) -> PathBuf {
    Path::new(STATE_DIR)
        .join(VERSIONS_DIR)
        .join(versions::version_name(name, at, seq))
}

/// Removes the empty folders below `root` (not `root` itself), deepest first.
fn remove_empty_dirs(root: &Path) {
    let dirs: Vec<PathBuf> = walkdir::WalkDir::new(root)
        .follow_links(false)
        .contents_first(true)
        .min_depth(1)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_dir())
        .map(|e| e.into_path())
        .collect();
    for dir in dirs {
        // Fails, as it should, on a folder that still holds something.
        let _ = fs::remove_dir(&dir);
    }
}
