//! Keeping old copies: before a file in DST is replaced or deleted, it moves into
//! `DST/.datasafe/versions` under a timestamped name (see [`crate::store::versions`]), and
//! retention later prunes what is too old. Nothing is ever copied: a replaced file is
//! hard-linked into the versions folder before the new copy is renamed over it (so the
//! final name never goes missing), a deleted one is linked and then unlinked. Where
//! the file system has no hard links, a rename does the same job.
//!
//! Folders inside the versions folder are reached like every other folder in DST
//! ([`Executor::dest_dir`]), so a symlink planted there never leads a write outside DST.
//!
//! Pruning: by retention after a full pass ([`Executor::prune_versions`]), by the size
//! budget after it ([`Executor::prune_to_budget`]), and when DST is full while a live
//! file is written ([`Executor::make_room`]): live files win over old copies. Each
//! pruned version is logged (`Pruned version: …`); oldest go first.

use super::ops::Reach;
use super::{Executor, OpError};
use crate::output::names::{esc, io_message};
use crate::store::layout::STATE_DIR;
use crate::store::layout::VERSIONS_DIR;
use crate::store::versions::{self, Retention};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Past this many versions of one name in one second something is wrong.
const MAX_SEQ: u32 = 10_000;

/// What an attempt to put old content at a version slot found.
enum Slot {
    /// The slot was taken: try the next one.
    Taken,
    /// The old content is there now.
    Placed,
    /// The original is gone: nothing to keep.
    Gone,
}

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
        if !self.keeping() {
            return Ok(());
        }
        match fs::symlink_metadata(path) {
            Ok(m) if m.is_file() => {}
            _ => return Ok(()),
        }
        let placed =
            self.place_version(name, path, |target| match fs::hard_link(path, target) {
                Ok(()) => {
                    if !keep_original {
                        match fs::remove_file(path) {
                            // Another worker deleted it (or a folder around it) meanwhile.
                            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                            other => other.map_err(OpError::io("deleting", path))?,
                        }
                    }
                    Ok(Slot::Placed)
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(Slot::Taken),
                // Gone since the check above (another worker deleted a folder around it):
                // nothing to keep, and nothing left to delete.
                Err(e) if e.kind() == io::ErrorKind::NotFound && is_gone(path) => Ok(Slot::Gone),
                Err(_) => {
                    // No hard links here (some network and FAT file systems): move it. Then
                    // a replaced name is missing until the new copy lands.
                    if fs::symlink_metadata(target).is_ok() {
                        return Ok(Slot::Taken);
                    }
                    fs::rename(path, target).map_err(OpError::io("keeping a version of", path))?;
                    Ok(Slot::Placed)
                }
            })?;
        if let Some(rel) = placed {
            log::info!(
                "Kept version: {} as {}",
                esc(name),
                esc(Path::new(STATE_DIR).join(VERSIONS_DIR).join(&rel).as_path())
            );
            self.versions_kept
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }

    /// Keeps, instead of a copy, a prefix marker (see [`versions::Prefix`]) for the file
    /// stored as `name` (at `path`), about to be replaced by content whose first `size`
    /// bytes are the old content (SHA-256 `sha`): no bytes are kept, and `restore` can
    /// still give the old content back from the new one.
    pub(super) fn preserve_prefix(
        &self,
        name: &Path,
        path: &Path,
        (size, sha): (u64, crate::hash::Digest),
    ) -> Result<(), OpError> {
        if !self.keeping() {
            return Ok(());
        }
        let Some(old) = fs::symlink_metadata(path).ok().filter(|m| m.is_file()) else {
            return Ok(());
        };
        let mtime = filetime::FileTime::from_last_modification_time(&old);
        let marker = versions::Prefix {
            size,
            mtime: (mtime.unix_seconds(), mtime.nanoseconds()),
            mode: crate::model::Meta::of(&old).mode,
            sha,
        }
        .to_target();
        let placed = self.place_version(name, path, |target| {
            match crate::platform::symlink(Path::new(&marker), target) {
                Ok(()) => Ok(Slot::Placed),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(Slot::Taken),
                Err(e) => Err(OpError::io("keeping a version of", path)(e)),
            }
        })?;
        if let Some(rel) = placed {
            // No version was kept (the new copy holds the old content): only a debug
            // line, and nothing counted.
            log::debug!(
                "{} only grew: its first {} are in the new copy (marker {})",
                esc(name),
                crate::output::names::human_bytes(size),
                esc(Path::new(STATE_DIR).join(VERSIONS_DIR).join(&rel).as_path())
            );
        }
        Ok(())
    }

    /// Finds the first free version slot for `name` (stored at `path`) at this moment
    /// and has `place` put the old content there, trying later slots while `place`
    /// finds one taken. Returns the version's path under the versions folder, or `None`
    /// if `place` found the original gone.
    fn place_version(
        &self,
        name: &Path,
        path: &Path,
        mut place: impl FnMut(&Path) -> Result<Slot, OpError>,
    ) -> Result<Option<PathBuf>, OpError> {
        let at = chrono::Local::now().naive_local();
        let dir = self.dest_dir(&versions_rel(name, at, 0), Reach::Parents)?;
        for seq in 0..MAX_SEQ {
            let (rel, sidecar) = versions::version_and_sidecar(name, at, seq);
            if let Some(sidecar) = sidecar {
                self.write_sidecar(&dir, &sidecar, name)?;
            }
            let target = dir.join(rel.file_name().unwrap_or(rel.as_os_str()));
            if self.later_seq_taken(&dir, name, at, seq) {
                continue;
            }
            match place(&target)? {
                Slot::Taken => continue,
                Slot::Placed => return Ok(Some(rel)),
                Slot::Gone => return Ok(None),
            }
        }
        Err(OpError::Io {
            doing: "keeping a version of",
            path: path.to_path_buf(),
            err: io::Error::other("too many versions within one second"),
        })
    }

    /// True if a later version of `name` in the same second exists (looking 1, 2, 4…
    /// 64 slots on): then `seq` is a slot that pruning freed, and taking it would order
    /// this newer version before older ones. Pruning goes oldest first, so freed slots
    /// come first and the taken ones after them.
    fn later_seq_taken(
        &self,
        dir: &Path,
        name: &Path,
        at: chrono::NaiveDateTime,
        seq: u32,
    ) -> bool {
        (0..7).map(|k| seq + (1 << k)).any(|later| {
            let next = versions::version_name(name, at, later);
            fs::symlink_metadata(dir.join(next.file_name().unwrap_or(next.as_os_str()))).is_ok()
        })
    }

    /// Keeps every regular file in the folder stored as `name` (at `path`) as a version
    /// before the folder is deleted. Symlinks inside are not followed.
    pub(super) fn preserve_tree(&self, name: &Path, path: &Path) -> Result<(), OpError> {
        if !self.keeping() {
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
            self.tidy_versions();
        }
        pruned
    }

    /// Deletes the oldest versions until all of them together take at most `max` bytes
    /// (`--versions-max-size`). Returns how many went.
    pub fn prune_to_budget(&self, max: u64) -> u64 {
        let sized = self.sized_versions();
        let mut total: u64 = sized.iter().map(|(_, size, _)| size).sum();
        if total <= max {
            return 0;
        }
        let before = total;
        let mut pruned = 0;
        for (version, size, _) in &sized {
            if total <= max {
                break;
            }
            if self.remove_version(version) {
                pruned += 1;
                total = total.saturating_sub(*size);
            }
        }
        if pruned > 0 {
            log::info!(
                "versions took {} of a budget of {}: pruned the oldest {}",
                crate::output::names::human_bytes(before),
                crate::output::names::human_bytes(max),
                crate::output::names::count_of(pruned, "version")
            );
            self.tidy_versions();
        }
        pruned
    }

    /// DST is full while a live file is written: deletes the oldest versions until about
    /// `need` bytes are free again (only versions that are the last link to their data
    /// free anything). Returns false if nothing could be pruned, so the caller stops
    /// retrying. One worker at a time: the others wait, then retry into the room made.
    /// Prunes nothing when even every version gone would leave less free than `least`
    /// bytes (a file bigger than the disk): that would lose the history for nothing.
    pub(super) fn make_room(&self, need: u64, least: u64) -> bool {
        let _one = self
            .making_room
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if least > 0 {
            let freeable: u64 = self
                .sized_versions()
                .iter()
                .filter(|(_, _, links)| *links <= 1)
                .map(|(_, size, _)| size)
                .sum();
            let free = crate::platform::free_bytes(&self.dst).unwrap_or(0);
            if free.saturating_add(freeable) < least {
                log::warn!(
                    "{} is full, and pruning every version would free {} of the {} needed: \
                     versions kept",
                    esc(&self.dst),
                    crate::output::names::human_bytes(freeable),
                    crate::output::names::human_bytes(least.saturating_sub(free))
                );
                return false;
            }
        }
        let mut freed = 0u64;
        let mut pruned = 0u64;
        for (version, size, links) in self.sized_versions() {
            if freed >= need {
                break;
            }
            if links > 1 {
                continue;
            }
            if self.remove_version(&version) {
                freed += size;
                pruned += 1;
            }
        }
        if pruned > 0 {
            log::warn!(
                "{} is full: pruned the oldest {} ({}) so live files can be written",
                esc(&self.dst),
                crate::output::names::count_of(pruned, "version"),
                crate::output::names::human_bytes(freed)
            );
            self.pruned_for_room
                .fetch_add(pruned, std::sync::atomic::Ordering::Relaxed);
            self.tidy_versions();
        }
        pruned > 0
    }

    /// Every version, oldest first, with its size on disk and its link count.
    fn sized_versions(&self) -> Vec<(versions::Version, u64, u64)> {
        let root = self.dst.join(STATE_DIR).join(VERSIONS_DIR);
        versions::list(&self.dst)
            .into_iter()
            .filter_map(|v| {
                let meta = fs::symlink_metadata(root.join(&v.path)).ok()?;
                Some((v, meta.len(), link_count(&meta)))
            })
            .collect()
    }

    /// Deletes one version and logs it; true if it went.
    fn remove_version(&self, version: &versions::Version) -> bool {
        let name = Path::new(STATE_DIR).join(VERSIONS_DIR).join(&version.path);
        let path = match self.dest_dir(&name, Reach::Lookup) {
            Ok(dir) => dir.join(version.path.file_name().unwrap_or(version.path.as_os_str())),
            Err(_) => return false,
        };
        match fs::remove_file(&path) {
            Ok(()) => {
                log::info!("Pruned version: {}", esc(&name));
                true
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => {
                log::warn!("pruning {}: {}", esc(&path), io_message(&e));
                false
            }
        }
    }

    /// After pruning: sidecars no version needs, then empty folders.
    fn tidy_versions(&self) {
        let root = self.dst.join(STATE_DIR).join(VERSIONS_DIR);
        versions::remove_orphan_sidecars(&root);
        remove_empty_dirs(&root);
    }

    /// Writes the sidecar of a shortened version name (the stored file name's bytes) in
    /// the versions folder `dir`, unless it is there: through a temp file and a rename,
    /// so it is never seen half written.
    fn write_sidecar(&self, dir: &Path, sidecar: &Path, name: &Path) -> Result<(), OpError> {
        let path = dir.join(sidecar.file_name().unwrap_or(sidecar.as_os_str()));
        if fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()) {
            return Ok(());
        }
        let whole = name.file_name().unwrap_or(name.as_os_str());
        let (temp, mut file) = self.temp_file(&path)?;
        std::io::Write::write_all(&mut file, whole.as_encoded_bytes())
            .map_err(OpError::io("keeping a version of", name))?;
        drop(file);
        fs::rename(&temp.path, &path).map_err(OpError::io("keeping a version of", name))?;
        temp.keep();
        Ok(())
    }
}

#[cfg(unix)]
fn link_count(meta: &fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::nlink(meta)
}

#[cfg(not(unix))]
fn link_count(_meta: &fs::Metadata) -> u64 {
    1
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
