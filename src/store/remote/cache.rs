//! The local side of a remote mirror's index, for every remote store (SFTP, S3). The
//! authoritative index of a remote mirror is a local file,
//! `$XDG_STATE_HOME/datasafe/remote/KEY/index.db` (KEY made from the URL), so a pass
//! reads and writes it at local speed; a consistent copy is published to
//! `DST/.datasafe/index.db` (a snapshot by `VACUUM INTO`, written through the store's
//! own temp file and install, so a reader never sees a torn one), so the mirror
//! describes itself.
//!
//! Which one is current: each copy published gets a new random id, written beside it
//! (`DST/.datasafe/index.id`) and noted locally (`published`). A writer, once it holds
//! the lock, keeps the local index if the mirror's id is the one noted (this machine's
//! own copy; the local index may be ahead of it) and no writer of this machine died
//! (`writing`, removed at a clean close); takes the mirror's copy if its id differs
//! (another machine wrote the mirror since), trusting it only if that writer closed
//! cleanly (`published_clean` in the copy); and otherwise sets the local index aside,
//! so the engine compares with a listing of the mirror once and rebuilds it. A reader
//! (`verify`, `restore`…) only ever fetches a newer copy, never throws one away.

use crate::output::names::io_message;
use crate::store::{Store, layout};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The least time between two uploads of the index while commits keep coming (the
/// last commits are published when the store closes).
const PUBLISH_GAP: Duration = Duration::from_secs(30);

/// The local folder of one remote mirror.
pub(crate) struct Cache {
    dir: PathBuf,
}

/// When the index was last published, and whether commits since are not.
#[derive(Default)]
pub(crate) struct Publishing {
    last: Option<Instant>,
    pending: bool,
    /// The last copy this writer published was not its closing one.
    unfinished: bool,
}

/// Why the index is being published.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Publish {
    /// A commit: published if the last upload is old enough, else held back.
    Committed,
    /// Nothing new: what was held back is published once it is due.
    IfDue,
    /// The store closes: whatever is held back is published now.
    Now,
}

/// How much of the index one write to the server carries when it is published.
const UPLOAD_CHUNK: usize = 256 * 1024;

/// The note of the index copy this machine last published or fetched: its id.
const NOTE: &str = "published";
/// Beside the mirror's index copy, its id: a new random one with each copy, so a copy
/// from another machine is told apart by reading a few bytes.
const ID_FILE: &str = "index.id";
/// Present while a writer of this machine runs; left behind by one that died.
const WRITING: &str = "writing";
/// The fact in an index copy that says its writer closed cleanly after publishing it.
const CLEAN: &str = "published_clean";

/// Who refreshes the local index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// A command that only reads the mirror.
    Reader,
    /// The one writer, holding the lock.
    Writer,
}

impl Cache {
    /// The cache folder of `remote` (created if missing).
    pub(crate) fn of(key: &str) -> io::Result<Cache> {
        let base = crate::config::state_dir().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "no folder for datasafe's state (set HOME or XDG_STATE_HOME): a remote \
                 mirror keeps its index there",
            )
        })?;
        let dir = base.join("remote").join(key_of(key));
        std::fs::create_dir_all(&dir).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot create {}: {}", dir.display(), io_message(&e)),
            )
        })?;
        Ok(Cache { dir })
    }

    /// The local index file.
    pub(crate) fn index_file(&self) -> PathBuf {
        self.dir.join(layout::INDEX_FILE)
    }

    /// The local index and SQLite's companions.
    fn index_files(&self) -> Vec<PathBuf> {
        ["", "-wal", "-shm", "-journal"]
            .iter()
            .map(|s| self.dir.join(format!("{}{s}", layout::INDEX_FILE)))
            .collect()
    }

    /// The id of the copy this machine last published or fetched (see [`ID_FILE`]), and
    /// whether the local index can be trusted as far as that copy goes: this machine's
    /// own, or a copy whose writer closed cleanly (`false`: a copy fetched while its
    /// writer was at work, which may be behind the mirror).
    fn note(&self) -> Option<(String, bool)> {
        let text = std::fs::read_to_string(self.dir.join(NOTE)).ok()?;
        let mut words = text.split_whitespace();
        let id = words.next()?.to_string();
        Some((id, words.next() != Some("unfinished")))
    }

    fn set_note(&self, id: &str, trusted: bool) -> io::Result<()> {
        let tmp = self.dir.join(format!("{NOTE}.tmp"));
        let how = if trusted { "trusted" } else { "unfinished" };
        std::fs::write(&tmp, format!("{id} {how}\n"))?;
        std::fs::rename(&tmp, self.dir.join(NOTE))
    }

    /// The id of the mirror's index copy (`None`: no copy, or one without an id).
    fn remote_id(&self, store: &dyn Store) -> io::Result<Option<String>> {
        let mut file = match store.open(&id_file()) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut text = String::new();
        file.by_ref().take(256).read_to_string(&mut text)?;
        Ok(Some(text.trim().to_string()).filter(|t| !t.is_empty()))
    }

    /// Makes the local index the current one (see the module's comment) and says
    /// whether it describes the mirror as it is: keeps it, replaces it with the mirror's
    /// copy, or (a writer only) sets it aside. A reader never throws the local index
    /// away: a writer on this machine may be making it.
    pub(crate) fn refresh(&self, store: &dyn Store, role: Role) -> io::Result<bool> {
        let local = self.index_file().exists();
        // An id without its copy (the copy removed by hand) is no copy.
        let remote = store.stat(&layout::index())?.is_some();
        let remote_id = match remote {
            true => self.remote_id(store)?,
            false => None,
        };
        // A writer of this machine that did not close cleanly: its last writes may not be
        // in the index (nor its copy in the mirror).
        let died = role == Role::Writer && self.dir.join(WRITING).exists();
        let note = self.note();
        let current =
            local && remote_id.is_some() && remote_id == note.as_ref().map(|n| n.0.clone());
        let trusted = match (remote, current) {
            (_, true) => !died && note.is_some_and(|n| n.1),
            (false, _) => {
                if local && role == Role::Writer {
                    log::info!(
                        "{} holds no index; rebuilding it from what the mirror holds",
                        store.display(layout::state()).display()
                    );
                    self.discard();
                }
                false
            }
            (true, false) => {
                let clean = self.download(store)? && remote_id.is_some();
                if let Some(id) = &remote_id {
                    self.set_note(id, clean)?;
                }
                clean
            }
        };
        if !trusted && role == Role::Writer && self.index_file().exists() {
            if died {
                self.finish_moves(store);
            }
            // Rebuilt from a listing of the mirror: records the mirror may contradict
            // are not kept.
            log::info!(
                "the index of {} may be behind the mirror (a run that did not finish); \
                 comparing with a listing of it this time",
                store.display(Path::new("")).display()
            );
            self.discard();
        }
        Ok(trusted)
    }

    /// Finishes the moves a writer of this machine began in steps (a copy, then the
    /// old name's deletion) and died in the middle of: their intents are in its index
    /// ([`crate::index::Index::intend_rename`]), which is about to be set aside. What is
    /// left at the old name goes on to the new one; otherwise the next pass would take
    /// the old names for deletions (versions kept, the deletion guard tripped by a big
    /// folder's move). A move that cannot be finished is said, and left to that pass.
    fn finish_moves(&self, store: &dyn Store) {
        let index = crate::index::Index::open_untouched(&self.dir);
        let moves = match index.as_ref().map(|i| i.as_ref().map(|i| i.renames())) {
            Ok(Some(Ok(moves))) => moves,
            // No index, or one from before intents were kept: nothing to finish.
            _ => return,
        };
        drop(index);
        let shown = |name: &Path| store.display(name);
        for (from, to) in moves {
            let finished = match store.stat(&from) {
                Ok(Some(_)) => store.rename(&from, &to).map(|()| true),
                Ok(None) => Ok(false),
                Err(e) => Err(e),
            };
            match finished {
                Ok(true) => log::info!(
                    "finished moving {} to {}, which a run that did not finish left halfway",
                    crate::output::names::esc(&shown(&from)),
                    crate::output::names::esc(&shown(&to))
                ),
                // The old name's deletion was done: nothing is left to move.
                Ok(false) => {}
                Err(e) => log::warn!(
                    "cannot finish moving {} to {}, which a run that did not finish left \
                     halfway: {}; this pass compares both with the source",
                    crate::output::names::esc(&shown(&from)),
                    crate::output::names::esc(&shown(&to)),
                    io_message(&e)
                ),
            }
        }
    }

    /// Notes that a writer runs (removed by [`Cache::closed`]).
    pub(crate) fn writing(&self) -> io::Result<()> {
        std::fs::write(self.dir.join(WRITING), format!("{}\n", std::process::id()))
    }

    /// The writer closed with its index published: the next one may trust it.
    pub(crate) fn closed(&self) {
        let _ = std::fs::remove_file(self.dir.join(WRITING));
    }

    fn discard(&self) {
        for file in self.index_files() {
            let _ = std::fs::remove_file(file);
        }
        let _ = std::fs::remove_file(self.dir.join(NOTE));
    }

    /// Copies the mirror's index here, in place of the local one; true if its writer
    /// closed cleanly when it published it.
    fn download(&self, store: &dyn Store) -> io::Result<bool> {
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
        drop(to);
        let clean = read_fact(&tmp, CLEAN).as_deref() == Some("1");
        self.discard();
        std::fs::rename(&tmp, self.index_file())?;
        Ok(clean)
    }

    /// Publishes a snapshot of the local index to the mirror, unless the last upload
    /// was less than [`PUBLISH_GAP`] ago (see [`Publish`]).
    pub(crate) fn publish(
        &self,
        store: &dyn Store,
        state: &Mutex<Publishing>,
        when: Publish,
    ) -> io::Result<()> {
        let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
        if when == Publish::Committed {
            state.pending = true;
        }
        let held_back = state.last.is_some_and(|t| t.elapsed() < PUBLISH_GAP);
        // Closing: published if anything is new, or if the copy there says the writer
        // was still at work.
        let wanted = state.pending || (when == Publish::Now && state.unfinished);
        if !wanted || (when != Publish::Now && held_back) {
            return Ok(());
        }
        let snapshot = self.dir.join(format!("{}.snapshot", layout::INDEX_FILE));
        let _ = std::fs::remove_file(&snapshot);
        // The last copy of a writer that closes says so: a copy published while the
        // writer was still at work may be behind the mirror.
        snapshot_into(&self.index_file(), &snapshot, when == Publish::Now)?;
        let mut temp = store.temp_file()?;
        let mut from = std::fs::File::open(&snapshot)?;
        // In big pieces: each write to the server waits for its answer, and `io::copy`'s
        // 8 KiB would make a 10 MB index (100k files) some 1,200 round trips.
        let mut buf = vec![0u8; UPLOAD_CHUNK];
        loop {
            let n = from.read(&mut buf)?;
            if n == 0 {
                break;
            }
            temp.write_all(&buf[..n])?;
        }
        temp.set_meta(0o600, filetime::FileTime::now())?;
        temp.install(&layout::index())?;
        drop(temp);
        let _ = std::fs::remove_file(&snapshot);
        // A new id for each copy: another machine's copy never looks like this one,
        // whatever its size and time.
        let id = new_id();
        let mut temp = store.temp_file()?;
        temp.write_all(format!("{id}\n").as_bytes())?;
        temp.set_meta(0o600, filetime::FileTime::now())?;
        temp.install(&id_file())?;
        drop(temp);
        self.set_note(&id, true)?;
        state.pending = false;
        state.unfinished = when != Publish::Now;
        state.last = Some(Instant::now());
        Ok(())
    }
}

/// A consistent copy of the SQLite database `index` at `to` (a reader's snapshot: the
/// writer goes on meanwhile).
fn snapshot_into(index: &Path, to: &Path, clean: bool) -> io::Result<()> {
    let conn = rusqlite::Connection::open_with_flags(
        index,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(io::Error::other)?;
    conn.busy_timeout(Duration::from_secs(10))
        .map_err(io::Error::other)?;
    conn.execute("VACUUM INTO ?1", [to.to_string_lossy()])
        .map_err(io::Error::other)?;
    drop(conn);
    let copy = rusqlite::Connection::open(to).map_err(io::Error::other)?;
    copy.execute(
        "INSERT OR REPLACE INTO mirror (key, value) VALUES (?1, ?2)",
        [CLEAN, if clean { "1" } else { "0" }],
    )
    .map_err(io::Error::other)?;
    Ok(())
}

/// A fact of the index copy at `path`, read without changing it.
fn read_fact(path: &Path, key: &str) -> Option<String> {
    let conn = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .ok()?;
    conn.query_row("SELECT value FROM mirror WHERE key = ?1", [key], |r| {
        r.get(0)
    })
    .ok()
}

/// A random id: 16 hex digits from the clock, the pid and a counter, hashed.
fn new_id() -> String {
    use sha2::Digest;
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let seed = format!(
        "{:?} {} {} {}",
        std::time::SystemTime::now(),
        std::process::id(),
        COUNT.fetch_add(1, Ordering::Relaxed),
        super::hostname()
    );
    let digest = sha2::Sha256::digest(seed.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The mirror's file that names its index copy ([`ID_FILE`]), relative to DST.
fn id_file() -> PathBuf {
    layout::state().join(ID_FILE)
}

/// A folder name for a URL: its readable part, then 16 hex digits of its SHA-256 (so
/// two URLs never share one).
fn key_of(url: &str) -> String {
    use sha2::Digest;
    let readable: String = url
        .trim_start_matches("sftp://")
        .trim_start_matches("s3://")
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
