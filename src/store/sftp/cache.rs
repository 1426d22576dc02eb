//! The local side of a remote mirror's index. The authoritative index of a remote
//! mirror is a local file, `$XDG_STATE_HOME/datasafe/remote/KEY/index.db` (KEY made
//! from the URL), so a pass reads and writes it at local speed; a consistent copy is
//! published to `DST/.datasafe/index.db` (a snapshot by `VACUUM INTO`, uploaded under a
//! temp name and renamed into place), so the mirror describes itself.
//!
//! Which one is current: after each upload the size and mtime of the remote copy are
//! noted beside the local index (`published`). When a store opens, a remote copy that
//! still matches that note means the local index is this machine's own and current (it
//! may be ahead: commits since the last upload). A remote copy that differs was written
//! by another machine: it replaces the local one. No remote copy while a local one
//! exists means the mirror was made anew: the local index is set aside, and the engine
//! rebuilds it from a listing.

use super::Sftp;
use crate::config::Remote;
use crate::output::names::io_message;
use crate::store::{Reader, Store, layout};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The least time between two uploads of the index while commits keep coming (the
/// last commits are published when the store closes).
const PUBLISH_GAP: Duration = Duration::from_secs(30);

/// The local folder of one remote mirror.
pub(super) struct Cache {
    dir: PathBuf,
}

/// When the index was last published, and whether commits since are not.
#[derive(Default)]
pub(super) struct Publishing {
    last: Option<Instant>,
    pending: bool,
}

/// Why the index is being published.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Publish {
    /// A commit: published if the last upload is old enough, else held back.
    Committed,
    /// Nothing new: what was held back is published once it is due.
    IfDue,
    /// The store closes: whatever is held back is published now.
    Now,
}

/// The note of what was published: the remote copy's size and mtime.
const NOTE: &str = "published";

impl Cache {
    /// The cache folder of `remote` (created if missing).
    pub(super) fn of(remote: &Remote) -> io::Result<Cache> {
        let base = crate::config::state_dir().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "no folder for datasafe's state (set HOME or XDG_STATE_HOME): a remote \
                 mirror keeps its index there",
            )
        })?;
        let dir = base.join("remote").join(key_of(&remote.url()));
        std::fs::create_dir_all(&dir).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot create {}: {}", dir.display(), io_message(&e)),
            )
        })?;
        Ok(Cache { dir })
    }

    /// The local index file.
    pub(super) fn index_file(&self) -> PathBuf {
        self.dir.join(layout::INDEX_FILE)
    }

    /// The local index and SQLite's companions.
    fn index_files(&self) -> Vec<PathBuf> {
        ["", "-wal", "-shm", "-journal"]
            .iter()
            .map(|s| self.dir.join(format!("{}{s}", layout::INDEX_FILE)))
            .collect()
    }

    fn note(&self) -> Option<(u64, i64)> {
        let text = std::fs::read_to_string(self.dir.join(NOTE)).ok()?;
        let (size, mtime) = text.trim().split_once(' ')?;
        Some((size.parse().ok()?, mtime.parse().ok()?))
    }

    fn set_note(&self, size: u64, mtime: i64) -> io::Result<()> {
        let tmp = self.dir.join(format!("{NOTE}.tmp"));
        std::fs::write(&tmp, format!("{size} {mtime}\n"))?;
        std::fs::rename(&tmp, self.dir.join(NOTE))
    }

    /// Makes the local index the current one (see the module's comment): keeps it,
    /// replaces it with the mirror's copy, or sets it aside.
    pub(super) fn refresh(&self, store: &Sftp) -> io::Result<()> {
        let remote = store.stat(&layout::index())?;
        let local = self.index_file().exists();
        match remote {
            None if local => {
                log::info!(
                    "{} holds no index; rebuilding it from what the mirror holds",
                    store.display(layout::state()).display()
                );
                self.discard();
                Ok(())
            }
            None => Ok(()),
            Some(r) if local && self.note() == Some((r.size, r.mtime.unix_seconds())) => Ok(()),
            Some(r) => {
                self.download(store)?;
                self.set_note(r.size, r.mtime.unix_seconds())
            }
        }
    }

    fn discard(&self) {
        for file in self.index_files() {
            let _ = std::fs::remove_file(file);
        }
        let _ = std::fs::remove_file(self.dir.join(NOTE));
    }

    /// Copies the mirror's index here, in place of the local one.
    fn download(&self, store: &Sftp) -> io::Result<()> {
        let mut from = store.open(&layout::index())?;
        let tmp = self.dir.join(format!("{}.download", layout::INDEX_FILE));
        let mut to = std::fs::File::create(&tmp)?;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = from.read(&mut buf)?;
            if n == 0 {
                break;
            }
            to.write_all(&buf[..n])?;
        }
        to.sync_all()?;
        self.discard();
        std::fs::rename(&tmp, self.index_file())
    }

    /// Publishes a snapshot of the local index to the mirror, unless the last upload
    /// was less than [`PUBLISH_GAP`] ago (see [`Publish`]).
    pub(super) fn publish(
        &self,
        store: &Sftp,
        state: &Mutex<Publishing>,
        when: Publish,
    ) -> io::Result<()> {
        let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
        if when == Publish::Committed {
            state.pending = true;
        }
        let held_back = state.last.is_some_and(|t| t.elapsed() < PUBLISH_GAP);
        if !state.pending || (when != Publish::Now && held_back) {
            return Ok(());
        }
        let snapshot = self.dir.join(format!("{}.snapshot", layout::INDEX_FILE));
        let _ = std::fs::remove_file(&snapshot);
        snapshot_into(&self.index_file(), &snapshot)?;
        let mut temp = store.temp_file()?;
        let mut from = std::fs::File::open(&snapshot)?;
        io::copy(&mut from, &mut temp)?;
        temp.set_meta(0o600, filetime::FileTime::now())?;
        temp.install(&layout::index())?;
        drop(temp);
        let _ = std::fs::remove_file(&snapshot);
        if let Some(r) = store.stat(&layout::index())? {
            self.set_note(r.size, r.mtime.unix_seconds())?;
        }
        state.pending = false;
        state.last = Some(Instant::now());
        Ok(())
    }
}

/// A consistent copy of the SQLite database `index` at `to` (a reader's snapshot: the
/// writer goes on meanwhile).
fn snapshot_into(index: &Path, to: &Path) -> io::Result<()> {
    let conn = rusqlite::Connection::open_with_flags(
        index,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(io::Error::other)?;
    conn.busy_timeout(Duration::from_secs(10))
        .map_err(io::Error::other)?;
    conn.execute("VACUUM INTO ?1", [to.to_string_lossy()])
        .map_err(io::Error::other)?;
    Ok(())
}

/// A folder name for a URL: its readable part, then 16 hex digits of its SHA-256 (so
/// two URLs never share one).
fn key_of(url: &str) -> String {
    use sha2::Digest;
    let readable: String = url
        .trim_start_matches("sftp://")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(80)
        .collect();
    let digest = sha2::Sha256::digest(url.as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("{readable}-{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_keys_are_readable_and_distinct() {
        let a = key_of("sftp://me@nas:22/srv/notes");
        assert!(a.starts_with("me_nas_22_srv_notes-"), "{a}");
        assert_ne!(a, key_of("sftp://me@nas:22/srv/notes_"));
        assert!(!key_of(&format!("sftp://h/{}", "x".repeat(500))).contains('/'));
    }
}
