//! The `.datasafe` layout, defined once: the names of datasafe's own state inside a
//! destination (the index, the temp folder, the one-writer lock, kept versions). Every
//! store lays its state out this way, so a mirror describes itself wherever it is, and
//! nothing else in the crate spells these names.

use std::path::{Path, PathBuf};

/// The folder inside DST that holds datasafe's own state; never mirrored or deleted.
pub const STATE_DIR: &str = ".datasafe";
/// The index's file name inside the state folder.
pub const INDEX_FILE: &str = "index.db";
/// The temp folder inside the state folder: every file reaches its final name from here.
pub const TMP_DIR: &str = "tmp";
/// The one-writer lock inside the state folder.
pub const LOCK_FILE: &str = "lock";
/// Kept versions inside the state folder, under their source paths.
pub const VERSIONS_DIR: &str = "versions";

/// The state folder, relative to DST.
pub fn state() -> &'static Path {
    Path::new(STATE_DIR)
}

/// The temp folder, relative to DST.
pub fn tmp() -> PathBuf {
    state().join(TMP_DIR)
}

/// The lock file, relative to DST.
pub fn lock() -> PathBuf {
    state().join(LOCK_FILE)
}

/// The index file, relative to DST.
pub fn index() -> PathBuf {
    state().join(INDEX_FILE)
}

/// The versions folder, relative to DST.
pub fn versions() -> PathBuf {
    state().join(VERSIONS_DIR)
}

/// The index file and the companions SQLite keeps beside it (write-ahead log, shared
/// memory, rollback journal), relative to DST: what goes when a damaged index is thrown
/// away.
pub fn index_files() -> Vec<PathBuf> {
    ["", "-wal", "-shm", "-journal"]
        .iter()
        .map(|suffix| state().join(format!("{INDEX_FILE}{suffix}")))
        .collect()
}
