//! What a mirror holds, kept in `DST/.datasafe/index.db` (SQLite, one table): for every
//! name stored in DST, the source metadata it was mirrored from, its SHA-256 once known,
//! and whether it is stored plain or gzipped. This file is the only code that writes the
//! index; the sync engine's index thread is its only caller that does.
//!
//! The index is an accelerator, never the truth about data: if it is missing or damaged
//! the engine lists DST instead ([`state_from_store`]) and the index is rebuilt from
//! what the run finds. Keys are the names as stored in DST (`a/b.txt.gz`), as bytes.

use crate::engine::scan::DestItem;
use crate::hash::Digest;
use crate::model::{
    Attrs, Kind, LinkKey, Meta, MirrorState, OnDisk, Owner, Record, Stored, Xattrs,
};
use crate::platform;
use crate::store::Reader;
use crate::store::layout::INDEX_FILE;
use filetime::FileTime;
use rusqlite::{Connection, OpenFlags, params};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Version 2 added `disk_size` and `disk_ino` (what DST holds, recorded at write, for
/// the watcher's fallback rescan); version 3 the owner (`uid`, `gid`, and the `owners`
/// table of the names of those numbers), extended attributes and ACLs (`xattrs`), and
/// the source identity of a file with several names (`link_dev`, `link_ino`). An older
/// index is upgraded in place on open (its rows have none of these: unknown).
const SCHEMA_VERSION: i64 = 3;
/// The oldest schema this version still reads (and upgrades when it writes).
const OLDEST_SCHEMA: i64 = 1;

/// Why the index could not be used.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// SQLite refused (corrupt file, full disk, read-only DST).
    #[error("index {path}: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// The file was written by an incompatible version.
    #[error("index {path}: schema version {found}, expected {SCHEMA_VERSION}")]
    Version {
        /// The database file.
        path: PathBuf,
        /// The version found.
        found: i64,
    },
}

/// What [`Index::children`] read of one folder.
#[derive(Debug, Default)]
pub struct Children {
    /// The records of the names directly inside it, in name order.
    pub records: Vec<(PathBuf, Record)>,
    /// Child folders with records below them but no record of their own.
    pub below: Vec<PathBuf>,
}

/// An open index with a transaction in progress; changes become visible to other readers
/// (and survive a crash) at [`Index::commit`].
pub struct Index {
    conn: Connection,
    path: PathBuf,
    /// The schema version of the file (an untouched read of a version 1 index has no
    /// `disk_*` columns).
    version: i64,
    /// When the oldest uncommitted change was made.
    dirty_since: Option<Instant>,
    /// The user (`false`) and group (`true`) numbers whose names this connection has
    /// recorded in `owners`.
    named: std::collections::HashSet<(bool, u32)>,
}

/// The names of the owner numbers an index recorded: on the machine that wrote it, user
/// and group ids stood for these names (`restore` maps them back to this machine's).
#[derive(Debug, Default)]
pub struct OwnerNames {
    /// User id → name.
    pub users: std::collections::HashMap<u32, String>,
    /// Group id → name.
    pub groups: std::collections::HashMap<u32, String>,
}

impl Index {
    /// Opens (creating if needed) the index in `state_dir`. Returns the index and whether
    /// it already existed with content the caller can trust.
    pub fn open(state_dir: &Path) -> Result<(Index, bool), IndexError> {
        let path = state_dir.join(INDEX_FILE);
        // The index and its journals must be files of our own, never symlinks planted to
        // make SQLite write outside DST.
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let file = state_dir.join(format!("{INDEX_FILE}{suffix}"));
            if std::fs::symlink_metadata(&file).is_ok_and(|m| !m.is_file()) {
                let _ = std::fs::remove_file(&file);
            }
        }
        let existed = path.exists();
        let wrap = |source| IndexError::Sqlite {
            path: path.clone(),
            source,
        };
        let flags = OpenFlags::default() | OpenFlags::SQLITE_OPEN_NOFOLLOW;
        let conn = Connection::open_with_flags(&path, flags).map_err(wrap)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;",
        )
        .map_err(wrap)?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(wrap)?;
        if existed && !(OLDEST_SCHEMA..=SCHEMA_VERSION).contains(&version) {
            return Err(IndexError::Version {
                path,
                found: version,
            });
        }
        // An index with `files` but an older schema gains the new columns; every row
        // keeps what it had (no `disk_*`: the fallback rescan then compares size and
        // mtime only, until the file is written again).
        let has_files: bool = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'files'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map_err(wrap)?
            > 0;
        if has_files && version < 2 {
            conn.execute_batch(
                "BEGIN;
                 ALTER TABLE files ADD COLUMN disk_size INTEGER;
                 ALTER TABLE files ADD COLUMN disk_ino INTEGER;
                 PRAGMA user_version = 2;
                 COMMIT;",
            )
            .map_err(wrap)?;
        }
        if has_files && version < 3 {
            conn.execute_batch(
                "BEGIN;
                 ALTER TABLE files ADD COLUMN uid INTEGER;
                 ALTER TABLE files ADD COLUMN gid INTEGER;
                 ALTER TABLE files ADD COLUMN xattrs BLOB;
                 ALTER TABLE files ADD COLUMN link_dev INTEGER;
                 ALTER TABLE files ADD COLUMN link_ino INTEGER;
                 PRAGMA user_version = 3;
                 COMMIT;",
            )
            .map_err(wrap)?;
        }
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS files (
                 name BLOB PRIMARY KEY,
                 kind INTEGER NOT NULL,
                 size INTEGER NOT NULL,
                 mtime_s INTEGER NOT NULL,
                 mtime_ns INTEGER NOT NULL,
                 mode INTEGER NOT NULL,
                 sha256 BLOB,
                 gz INTEGER NOT NULL,
                 target BLOB,
                 disk_size INTEGER,
                 disk_ino INTEGER,
                 uid INTEGER,
                 gid INTEGER,
                 xattrs BLOB,
                 link_dev INTEGER,
                 link_ino INTEGER
             ) WITHOUT ROWID;
             CREATE INDEX IF NOT EXISTS files_by_link ON files (link_ino, link_dev)
                 WHERE link_ino IS NOT NULL;
             CREATE TABLE IF NOT EXISTS owners (
                 kind TEXT NOT NULL,
                 id INTEGER NOT NULL,
                 name TEXT NOT NULL,
                 PRIMARY KEY (kind, id)
             );
             CREATE TABLE IF NOT EXISTS mirror (
                 key TEXT PRIMARY KEY,
                 value TEXT NOT NULL
             );
             CREATE TABLE IF NOT EXISTS renames (
                 from_name BLOB PRIMARY KEY,
                 to_name BLOB NOT NULL
             );",
        )
        .map_err(wrap)?;
        // Set only when it differs: setting it writes the header page, and an index a
        // no-op pass opened must stay as it was (a read of it made meanwhile, by
        // `prefetch`, is then known to be current).
        if version != SCHEMA_VERSION {
            conn.execute_batch("PRAGMA user_version = 3;")
                .map_err(wrap)?;
        }
        conn.execute_batch("BEGIN;").map_err(wrap)?;
        let index = Index {
            conn,
            path,
            version: SCHEMA_VERSION,
            dirty_since: None,
            named: Default::default(),
        };
        Ok((index, existed))
    }

    /// Records a fact about the mirror as a whole, such as `compress` (`1` or `0`): what
    /// `restore` needs to tell a gzipped version from a plain file named `.gz`.
    pub fn set_mirror_fact(&mut self, key: &str, value: &str) -> Result<(), IndexError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO mirror (key, value) VALUES (?1, ?2)",
                rusqlite::params![key, value],
            )
            .map_err(|source| IndexError::Sqlite {
                path: self.path.clone(),
                source,
            })?;
        self.dirty_since.get_or_insert_with(Instant::now);
        Ok(())
    }

    /// A fact recorded by [`Index::set_mirror_fact`], if any (an index written before
    /// facts were recorded has none).
    pub fn mirror_fact(&self, key: &str) -> Option<String> {
        self.conn
            .query_row("SELECT value FROM mirror WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .ok()
    }

    /// Opens an existing index for reading without creating, changing or locking any file
    /// in `state_dir` (for `verify`, which must leave a mirror exactly as it found it).
    /// A plain read-only SQLite connection to a WAL database creates `-wal` and `-shm`
    /// files when they are missing; so when there is no `-wal` (no writer has the index
    /// open) the file is opened `immutable`, and otherwise as an ordinary reader of the
    /// files the writer keeps. See [`load_untouched`] for the race between the two.
    pub fn open_untouched(state_dir: &Path) -> Result<Option<Index>, IndexError> {
        let path = state_dir.join(INDEX_FILE);
        if !path.exists() {
            return Ok(None);
        }
        let wrap = |source| IndexError::Sqlite {
            path: path.clone(),
            source,
        };
        // A connection is used by one thread at a time (rusqlite's `Connection` is not
        // `Sync`): no mutex around every call (a pass reads the index a folder at a time).
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NOFOLLOW
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = if has_wal(state_dir) {
            Connection::open_with_flags(&path, flags)
        } else {
            let uri = format!("{}?immutable=1", platform::file_uri(&path));
            Connection::open_with_flags(uri, flags | OpenFlags::SQLITE_OPEN_URI)
        }
        .map_err(wrap)?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(wrap)?;
        if !(OLDEST_SCHEMA..=SCHEMA_VERSION).contains(&version) {
            return Err(IndexError::Version {
                path,
                found: version,
            });
        }
        Ok(Some(Index {
            conn,
            path,
            version,
            dirty_since: None,
            named: Default::default(),
        }))
    }

    /// Reads every record into memory.
    pub fn load(&self) -> Result<MirrorState, IndexError> {
        self.load_under(Path::new(""))
    }

    /// Reads the records of `scope` and everything below it (all, for an empty scope).
    pub fn load_under(&self, scope: &Path) -> Result<MirrorState, IndexError> {
        let (key, lo, hi) = tree_bounds(scope);
        let sql = format!(
            "SELECT {} FROM files WHERE ?1 = x'' OR name = ?1 OR (name >= ?2 AND name < ?3)",
            self.columns()
        );
        // The whole index: the map made its size at once (growing it rehashes every
        // record several times over).
        let rows: i64 = if scope.as_os_str().is_empty() {
            self.conn
                .query_row("SELECT count(*) FROM files", [], |r| r.get(0))
                .map_err(|e| self.err(e))?
        } else {
            0
        };
        let mut stmt = self.conn.prepare_cached(&sql).map_err(|e| self.err(e))?;
        let mut rows_read = stmt.query(params![key, lo, hi]).map_err(|e| self.err(e))?;
        let mut state = MirrorState::with_capacity_and_hasher(
            usize::try_from(rows).unwrap_or(0),
            Default::default(),
        );
        while let Some(row) = rows_read.next().map_err(|e| self.err(e))? {
            // A row this version cannot read is dropped: the run re-checks that path.
            if let Some((name, record)) = decode(row).map_err(|e| self.err(e))? {
                state.insert(name.into_os_string(), record);
            }
        }
        Ok(state)
    }

    /// The records of the names directly inside the folder `dir` (the root's for an
    /// empty `dir`; the root's own record is not among them), in name order, and the
    /// child folders that have records below them but none of their own. Memory is one
    /// folder's worth: the rows below a child folder are skipped with a new range read
    /// of the B-tree past them (`name >= "dir/child0"`), one per child folder with
    /// names below it, so reading every folder this way reads each row about once.
    pub fn children(&self, dir: &Path) -> Result<Children, IndexError> {
        let mut prefix = platform::path_to_bytes(dir);
        let hi = (!prefix.is_empty()).then(|| {
            let mut hi = prefix.clone();
            hi.push(b'/' + 1);
            hi
        });
        if !prefix.is_empty() {
            prefix.push(b'/');
        }
        let sql = match hi {
            Some(_) => format!(
                "SELECT {} FROM files WHERE name >= ?1 AND name < ?2 ORDER BY name",
                self.columns()
            ),
            None => format!(
                "SELECT {} FROM files WHERE name >= ?1 ORDER BY name",
                self.columns()
            ),
        };
        let mut out = Children::default();
        let mut lo = prefix.clone();
        loop {
            let mut stmt = self.conn.prepare_cached(&sql).map_err(|e| self.err(e))?;
            let mut rows = match &hi {
                Some(hi) => stmt.query(params![lo, hi]),
                None => stmt.query(params![lo]),
            }
            .map_err(|e| self.err(e))?;
            let mut skip_to = None;
            while let Some(row) = rows.next().map_err(|e| self.err(e))? {
                let name = row
                    .get_ref(0)
                    .and_then(|v| Ok(v.as_blob()?))
                    .map_err(|e| self.err(e))?;
                let Some(rest) = name.strip_prefix(prefix.as_slice()) else {
                    continue;
                };
                if rest.is_empty() {
                    continue;
                }
                if let Some(slash) = rest.iter().position(|b| *b == b'/') {
                    // A name below the child folder `rest[..slash]`: skip its subtree.
                    let child = [prefix.as_slice(), &rest[..slash]].concat();
                    // Its own record, if any, came before (a prefix sorts first),
                    // though not always last (`a/y-` sorts between `a/y` and `a/y/z`).
                    let recorded = out
                        .records
                        .binary_search_by(|(n, _)| {
                            n.as_os_str().as_encoded_bytes().cmp(child.as_slice())
                        })
                        .is_ok();
                    if !recorded && let Some(child) = platform::path_from_bytes(child.clone()) {
                        out.below.push(child);
                    }
                    skip_to = Some([child.as_slice(), b"0"].concat());
                    break;
                }
                if let Some(found) = decode(row).map_err(|e| self.err(e))? {
                    out.records.push(found);
                }
            }
            match skip_to {
                Some(next) => lo = next,
                None => return Ok(out),
            }
        }
    }

    /// The record for one stored name.
    pub fn get(&self, name: &Path) -> Result<Option<Record>, IndexError> {
        let sql = format!("SELECT {} FROM files WHERE name = ?1", self.columns());
        let mut stmt = self.conn.prepare_cached(&sql).map_err(|e| self.err(e))?;
        let mut rows = stmt
            .query(params![platform::path_to_bytes(name)])
            .map_err(|e| self.err(e))?;
        match rows.next().map_err(|e| self.err(e))? {
            Some(row) => Ok(decode(row).map_err(|e| self.err(e))?.map(|(_, r)| r)),
            None => Ok(None),
        }
    }

    /// Records that `from` is about to move to `to` in DST by steps that are not one
    /// atomic rename (an object store copies, then deletes): a run that dies between
    /// them leaves this intent, and the next run finishes the move ([`Index::renames`]).
    /// Cleared by [`Index::move_tree`] of the same `from`, or [`Index::drop_rename`].
    pub fn intend_rename(&mut self, from: &Path, to: &Path) -> Result<(), IndexError> {
        self.dirty_since.get_or_insert_with(Instant::now);
        let (from, to) = (platform::path_to_bytes(from), platform::path_to_bytes(to));
        self.conn
            .prepare_cached("INSERT OR REPLACE INTO renames (from_name, to_name) VALUES (?1, ?2)")
            .and_then(|mut stmt| stmt.execute(params![from, to]))
            .map(drop)
            .map_err(|source| self.err(source))
    }

    /// Forgets the intent to move `from` (the move failed: what it left is compared
    /// afresh like anything else).
    pub fn drop_rename(&mut self, from: &Path) -> Result<(), IndexError> {
        self.dirty_since.get_or_insert_with(Instant::now);
        let from = platform::path_to_bytes(from);
        self.conn
            .prepare_cached("DELETE FROM renames WHERE from_name = ?1")
            .and_then(|mut stmt| stmt.execute(params![from]))
            .map(drop)
            .map_err(|source| self.err(source))
    }

    /// The moves an earlier run began and did not see through ([`Index::intend_rename`]):
    /// `(from, to)`, in name order.
    pub fn renames(&self) -> Result<Vec<(PathBuf, PathBuf)>, IndexError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT from_name, to_name FROM renames ORDER BY from_name")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                let from = platform::path_from_bytes(r.get(0)?);
                let to = platform::path_from_bytes(r.get(1)?);
                Ok(from.zip(to))
            })
            .map_err(|e| self.err(e))?;
        // A pair this platform cannot name is left for the next pass to compare afresh.
        rows.filter_map(Result::transpose)
            .collect::<Result<_, _>>()
            .map_err(|e| self.err(e))
    }

    /// Records that `from` and everything below it now live under `to` (a rename), and
    /// clears the intent to move it.
    pub fn move_tree(&mut self, from: &Path, to: &Path) -> Result<(), IndexError> {
        self.drop_rename(from)?;
        let moved = self.load_under(from)?;
        self.remove_tree(from)?;
        self.remove_tree(to)?;
        for (name, record) in moved {
            let rest = Path::new(&name).strip_prefix(from).unwrap_or(Path::new(""));
            let new_name = if rest.as_os_str().is_empty() {
                to.to_path_buf()
            } else {
                to.join(rest)
            };
            self.put(&new_name, &record)?;
        }
        Ok(())
    }

    /// The columns [`decode`] reads, for this file's schema.
    fn columns(&self) -> &'static str {
        match self.version {
            3.. => {
                "name, kind, size, mtime_s, mtime_ns, mode, sha256, gz, target, disk_size, \
                 disk_ino, uid, gid, xattrs, link_dev, link_ino"
            }
            2 => {
                "name, kind, size, mtime_s, mtime_ns, mode, sha256, gz, target, disk_size, \
                 disk_ino, NULL, NULL, NULL, NULL, NULL"
            }
            _ => {
                "name, kind, size, mtime_s, mtime_ns, mode, sha256, gz, target, NULL, NULL, \
                 NULL, NULL, NULL, NULL, NULL"
            }
        }
    }

    fn err(&self, source: rusqlite::Error) -> IndexError {
        IndexError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Records that DST now holds `name` as described (and, unless it is a folder,
    /// nothing below it: a file that replaced a folder replaced its content too).
    pub fn put(&mut self, name: &Path, rec: &Record) -> Result<(), IndexError> {
        if rec.kind != Kind::Dir {
            let (_, lo, hi) = tree_bounds(name);
            self.conn
                .prepare_cached("DELETE FROM files WHERE name >= ?1 AND name < ?2")
                .and_then(|mut stmt| stmt.execute(params![lo, hi]))
                .map_err(|e| self.err(e))?;
        }
        let kind = match rec.kind {
            Kind::File => 0,
            Kind::Dir => 1,
            Kind::Symlink => 2,
            // Never stored: the planner skips special files.
            Kind::Special => return Ok(()),
        };
        self.dirty_since.get_or_insert_with(Instant::now);
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO files
                 (name, kind, size, mtime_s, mtime_ns, mode, sha256, gz, target, disk_size,
                  disk_ino, uid, gid, xattrs, link_dev, link_ino)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15,
                  ?16)",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    platform::path_to_bytes(name),
                    kind,
                    rec.meta.size as i64,
                    rec.meta.mtime.unix_seconds(),
                    rec.meta.mtime.nanoseconds(),
                    rec.meta.mode,
                    rec.sha256.map(|d| d.0.to_vec()),
                    rec.stored == Stored::Gzip,
                    rec.target.as_deref().map(platform::path_to_bytes),
                    rec.disk.map(|d| d.size as i64),
                    rec.disk.map(|d| d.ino as i64),
                    rec.attrs.owner.map(|o| o.uid),
                    rec.attrs.owner.map(|o| o.gid),
                    rec.attrs.xattrs.as_deref().map(Xattrs::encode),
                    rec.link.map(|l| l.dev as i64),
                    rec.link.map(|l| l.ino as i64),
                ])
            })
            .map(drop)
            .map_err(|source| IndexError::Sqlite {
                path: self.path.clone(),
                source,
            })?;
        if let Some(owner) = rec.attrs.owner {
            self.name_owner(owner)?;
        }
        Ok(())
    }

    /// Records the names this machine gives `owner`'s numbers, once per number.
    fn name_owner(&mut self, owner: Owner) -> Result<(), IndexError> {
        for (group, id) in [(false, owner.uid), (true, owner.gid)] {
            if !self.named.insert((group, id)) {
                continue;
            }
            let name = match group {
                false => platform::user_name(id),
                true => platform::group_name(id),
            };
            let Some(name) = name else { continue };
            self.conn
                .prepare_cached(
                    "INSERT OR REPLACE INTO owners (kind, id, name) VALUES (?1, ?2, ?3)",
                )
                .and_then(|mut stmt| stmt.execute(params![if group { "g" } else { "u" }, id, name]))
                .map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// The names of the owner numbers recorded (none in an index from before owners
    /// were kept).
    pub fn owner_names(&self) -> Result<OwnerNames, IndexError> {
        let mut names = OwnerNames::default();
        if self.version < 3 {
            return Ok(names);
        }
        let mut stmt = self
            .conn
            .prepare_cached("SELECT kind, id, name FROM owners")
            .map_err(|e| self.err(e))?;
        let mut rows = stmt.query([]).map_err(|e| self.err(e))?;
        while let Some(row) = rows.next().map_err(|e| self.err(e))? {
            let (kind, id, name): (String, u32, String) = (
                row.get(0).map_err(|e| self.err(e))?,
                row.get(1).map_err(|e| self.err(e))?,
                row.get(2).map_err(|e| self.err(e))?,
            );
            match kind.as_str() {
                "u" => names.users.insert(id, name),
                _ => names.groups.insert(id, name),
            };
        }
        Ok(names)
    }

    /// Every name recorded as the source file `key` (the names of one file with
    /// several), in name order.
    pub fn linked(&self, key: LinkKey) -> Result<Vec<(PathBuf, Record)>, IndexError> {
        if self.version < 3 {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {} FROM files WHERE link_ino = ?1 AND link_dev = ?2 ORDER BY name",
            self.columns()
        );
        self.records_of(&sql, params![key.ino as i64, key.dev as i64])
    }

    /// The named records a query of [`Index::columns`] finds.
    fn records_of(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<(PathBuf, Record)>, IndexError> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(|e| self.err(e))?;
        let mut rows = stmt.query(params).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(|e| self.err(e))? {
            if let Some(found) = decode(row).map_err(|e| self.err(e))? {
                out.push(found);
            }
        }
        Ok(out)
    }

    /// Files recorded with `meta` (size, mtime to the nanosecond, mode) and no link key:
    /// the candidates for a name a file had while it had one name, which a new name of
    /// it (`ln a b` under a watcher) is linked to once the source says it is the same
    /// file. Not an indexed lookup (a scan of the table): the caller bounds how often.
    pub fn unlinked_like(&self, meta: Meta) -> Result<Vec<(PathBuf, Record)>, IndexError> {
        let sql = format!(
            "SELECT {} FROM files WHERE size = ?1 AND mtime_s = ?2 AND mtime_ns = ?3 \
             AND mode = ?4 AND link_ino IS NULL ORDER BY name",
            self.columns()
        );
        self.records_of(
            &sql,
            params![
                meta.size as i64,
                meta.mtime.unix_seconds(),
                meta.mtime.nanoseconds(),
                meta.mode
            ],
        )
    }

    /// Every name recorded with a link key (files with several names in the source),
    /// with its key: what `restore` and `archive` group names by. Read through the
    /// partial index on the key, so a mirror without hard links reads no row.
    pub fn link_keys(&self) -> Result<Vec<(PathBuf, LinkKey)>, IndexError> {
        if self.version < 3 {
            return Ok(Vec::new());
        }
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT name, link_dev, link_ino FROM files INDEXED BY files_by_link \
                 WHERE link_ino IS NOT NULL",
            )
            .map_err(|e| self.err(e))?;
        let mut rows = stmt.query([]).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(|e| self.err(e))? {
            let name: Vec<u8> = row.get(0).map_err(|e| self.err(e))?;
            let (dev, ino): (i64, i64) = (
                row.get(1).map_err(|e| self.err(e))?,
                row.get(2).map_err(|e| self.err(e))?,
            );
            if let Some(name) = platform::path_from_bytes(name) {
                let key = LinkKey {
                    dev: dev as u64,
                    ino: ino as u64,
                };
                out.push((name, key));
            }
        }
        Ok(out)
    }

    /// Forgets the record of `name` alone (a file or link: what lies below that name
    /// now is another entry's).
    pub fn remove(&mut self, name: &Path) -> Result<(), IndexError> {
        self.dirty_since.get_or_insert_with(Instant::now);
        let key = platform::path_to_bytes(name);
        self.conn
            .prepare_cached("DELETE FROM files WHERE name = ?1")
            .and_then(|mut stmt| stmt.execute(params![key]))
            .map(drop)
            .map_err(|source| IndexError::Sqlite {
                path: self.path.clone(),
                source,
            })
    }

    /// Records that DST no longer holds `name` nor anything below it.
    pub fn remove_tree(&mut self, name: &Path) -> Result<(), IndexError> {
        self.dirty_since.get_or_insert_with(Instant::now);
        let (key, lo, hi) = tree_bounds(name);
        self.conn
            .prepare_cached("DELETE FROM files WHERE name = ?1 OR (name >= ?2 AND name < ?3)")
            .and_then(|mut stmt| stmt.execute(params![key, lo, hi]))
            .map(drop)
            .map_err(|source| IndexError::Sqlite {
                path: self.path.clone(),
                source,
            })
    }

    /// True if a change waits for [`Index::commit`].
    pub fn is_dirty(&self) -> bool {
        self.dirty_since.is_some()
    }

    /// How long the oldest uncommitted change has waited.
    pub fn pending_for(&self) -> Duration {
        self.dirty_since.map_or(Duration::ZERO, |t| t.elapsed())
    }

    /// Makes the changes so far durable and starts a new transaction.
    pub fn commit(&mut self) -> Result<(), IndexError> {
        if self.dirty_since.take().is_none() {
            return Ok(());
        }
        self.conn
            .execute_batch("COMMIT; BEGIN;")
            .map_err(|source| IndexError::Sqlite {
                path: self.path.clone(),
                source,
            })
    }
}

/// Reads one `files` row; `None` for a row this version cannot represent.
fn decode(row: &rusqlite::Row<'_>) -> rusqlite::Result<Option<(PathBuf, Record)>> {
    let name: Vec<u8> = row.get(0)?;
    let Some(name) = platform::path_from_bytes(name) else {
        return Ok(None);
    };
    let kind = match row.get::<_, i64>(1)? {
        0 => Kind::File,
        1 => Kind::Dir,
        2 => Kind::Symlink,
        _ => return Ok(None),
    };
    let sha: Option<Vec<u8>> = row.get(6)?;
    let target: Option<Vec<u8>> = row.get(8)?;
    let record = Record {
        kind,
        meta: Meta {
            size: row.get::<_, i64>(2)? as u64,
            mtime: FileTime::from_unix_time(row.get(3)?, row.get(4)?),
            mode: row.get(5)?,
        },
        sha256: sha.as_deref().and_then(Digest::from_slice),
        stored: if row.get::<_, i64>(7)? != 0 {
            Stored::Gzip
        } else {
            Stored::Plain
        },
        target: target.and_then(platform::path_from_bytes),
        disk: match (
            row.get::<_, Option<i64>>(9)?,
            row.get::<_, Option<i64>>(10)?,
        ) {
            (Some(size), Some(ino)) => Some(OnDisk {
                size: size as u64,
                ino: ino as u64,
            }),
            _ => None,
        },
        attrs: Attrs {
            owner: match (
                row.get::<_, Option<u32>>(11)?,
                row.get::<_, Option<u32>>(12)?,
            ) {
                (Some(uid), Some(gid)) => Some(Owner { uid, gid }),
                _ => None,
            },
            xattrs: row
                .get::<_, Option<Vec<u8>>>(13)?
                .and_then(|blob| Xattrs::decode(&blob))
                .and_then(Xattrs::shared),
        },
        link: match (
            row.get::<_, Option<i64>>(14)?,
            row.get::<_, Option<i64>>(15)?,
        ) {
            (Some(dev), Some(ino)) => Some(LinkKey {
                dev: dev as u64,
                ino: ino as u64,
            }),
            _ => None,
        },
    };
    Ok(Some((name, record)))
}

/// True if the index in `state_dir` has a write-ahead log: a writer has it open (or one
/// was killed and left it).
fn has_wal(state_dir: &Path) -> bool {
    state_dir.join(format!("{INDEX_FILE}-wal")).exists()
}

/// Every record of the index in `state_dir`, read without writing anything there
/// ([`Index::open_untouched`]); `None` if there is no index. An immutable open is safe
/// because a writer that starts meanwhile puts its changes in a new `-wal`, not in the
/// file being read (a checkpoint comes much later); should a `-wal` have appeared by the
/// end of the read, the records are read again through it.
pub fn load_untouched(state_dir: &Path) -> Result<Option<MirrorState>, IndexError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let had_wal = has_wal(state_dir);
        let Some(index) = Index::open_untouched(state_dir)? else {
            return Ok(None);
        };
        let state = index.load();
        if had_wal || !has_wal(state_dir) || attempt == 2 {
            return state.map(Some);
        }
    }
}

/// The key of `name` and the half-open key range of everything below it: children are
/// exactly the keys in [name + "/", name + "0"), since '0' follows '/'.
fn tree_bounds(name: &Path) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let key = platform::path_to_bytes(name);
    let mut lo = key.clone();
    lo.push(b'/');
    let mut hi = key.clone();
    hi.push(b'/' + 1);
    (key, lo, hi)
}

/// Builds a best-effort mirror state from a detailed listing of `store`, for a mirror
/// without a usable index. Gzipped files are recognised by name and magic; their source
/// size is read from the gzip trailer (ISIZE, modulo 4 GiB), so a size mismatch means a
/// copy. Files and links are read through the store, never through a symlink.
pub fn state_from_store(store: &dyn Reader, items: &[DestItem]) -> MirrorState {
    let mut state = MirrorState::default();
    for item in items {
        let Some(stat) = &item.meta else { continue };
        let mut record = Record {
            kind: item.kind,
            meta: stat.meta(),
            sha256: None,
            stored: Stored::Plain,
            target: None,
            disk: Some(stat.on_disk()),
            attrs: Attrs {
                owner: stat.owner,
                xattrs: None,
            },
            link: None,
        };
        match item.kind {
            Kind::File if item.rel.extension() == Some("gz".as_ref()) => {
                let isize = store
                    .open(&item.rel)
                    .and_then(|mut file| crate::store::gzip_isize(&mut *file));
                if let Ok(Some(isize)) = isize {
                    record.stored = Stored::Gzip;
                    record.meta.size = isize;
                }
            }
            Kind::File | Kind::Dir => {}
            Kind::Symlink => match store.read_link(&item.rel) {
                Ok(t) => record.target = Some(t),
                Err(_) => continue,
            },
            Kind::Special => continue,
        }
        state.insert(item.rel.clone().into_os_string(), record);
    }
    state
}

/// True if `size` is what a gzip trailer would say for a file of `source_size` bytes.
pub fn isize_matches(recorded: u64, source_size: u64) -> bool {
    recorded == source_size
        || (recorded <= u64::from(u32::MAX) && recorded == source_size & 0xffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(kind: Kind, size: u64) -> Record {
        Record {
            kind,
            meta: Meta {
                size,
                mtime: FileTime::from_unix_time(1_700_000_000, 123_456_789),
                mode: 0o644,
            },
            sha256: Some(Digest([7; 32])),
            stored: Stored::Gzip,
            target: None,
            disk: Some(OnDisk { size: 9, ino: 42 }),
            attrs: Attrs::default(),
            link: None,
        }
    }

    #[test]
    fn a_move_intent_is_kept_until_the_move_is_recorded_or_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (mut idx, _) = Index::open(dir.path()).unwrap();
        idx.put(Path::new("a/x"), &rec(Kind::File, 5)).unwrap();
        idx.intend_rename(Path::new("a"), Path::new("b")).unwrap();
        idx.intend_rename(Path::new("c"), Path::new("d")).unwrap();
        idx.commit().unwrap();
        drop(idx);
        // A reader (the cache of a writer that died) sees both.
        let read = Index::open_untouched(dir.path()).unwrap().unwrap();
        let pair = |a: &str, b: &str| (PathBuf::from(a), PathBuf::from(b));
        assert_eq!(read.renames().unwrap(), [pair("a", "b"), pair("c", "d")]);
        drop(read);
        let (mut idx, _) = Index::open(dir.path()).unwrap();
        idx.move_tree(Path::new("a"), Path::new("b")).unwrap();
        idx.drop_rename(Path::new("c")).unwrap();
        idx.commit().unwrap();
        assert!(idx.renames().unwrap().is_empty());
        assert!(idx.get(Path::new("b/x")).unwrap().is_some());
    }

    #[test]
    fn names_of_one_file_are_found_by_key_or_as_unlinked_files_of_its_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let (mut idx, _) = Index::open(dir.path()).unwrap();
        let key = LinkKey { dev: 3, ino: 4 };
        let linked = Record {
            link: Some(key),
            ..rec(Kind::File, 5)
        };
        idx.put(Path::new("a"), &linked).unwrap();
        idx.put(Path::new("b"), &linked).unwrap();
        idx.put(Path::new("single"), &rec(Kind::File, 5)).unwrap();
        idx.put(Path::new("other"), &rec(Kind::File, 6)).unwrap();
        let names = |found: Vec<(PathBuf, Record)>| -> Vec<PathBuf> {
            found.into_iter().map(|(n, _)| n).collect()
        };
        assert_eq!(
            names(idx.linked(key).unwrap()),
            ["a", "b"].map(PathBuf::from)
        );
        let meta = rec(Kind::File, 5).meta;
        assert_eq!(
            names(idx.unlinked_like(meta).unwrap()),
            [PathBuf::from("single")]
        );
        let other_mode = Meta {
            mode: 0o600,
            ..meta
        };
        assert!(idx.unlinked_like(other_mode).unwrap().is_empty());
    }

    /// A folder's children are its direct names only, in name order, whatever sorts
    /// between them and their subtrees (`a-b` and `a.txt` sort between `a` and `a/x`);
    /// a folder known only by the names below it is reported as such.
    #[test]
    fn children_are_one_folder_deep_and_skip_subtrees() {
        let dir = tempfile::tempdir().unwrap();
        let (mut idx, _) = Index::open(dir.path()).unwrap();
        let names = [
            ("", Kind::Dir),
            ("a", Kind::Dir),
            ("a-b", Kind::File),
            ("a.txt", Kind::File),
            ("a/x", Kind::File),
            ("a/y", Kind::Dir),
            ("a/y/z", Kind::File),
            ("a/y-", Kind::File),
            ("ghost/deep/f", Kind::File),
            ("z", Kind::File),
        ];
        for (name, kind) in names {
            idx.put(Path::new(name), &rec(kind, 1)).unwrap();
        }
        idx.commit().unwrap();
        let names_of = |dir: &str| {
            let read = idx.children(Path::new(dir)).unwrap();
            let names: Vec<String> = read
                .records
                .iter()
                .map(|(n, _)| n.to_string_lossy().into_owned())
                .collect();
            let below: Vec<String> = read
                .below
                .iter()
                .map(|n| n.to_string_lossy().into_owned())
                .collect();
            (names, below)
        };
        assert_eq!(
            names_of(""),
            (
                vec!["a".into(), "a-b".into(), "a.txt".into(), "z".into()],
                vec!["ghost".to_string()]
            )
        );
        assert_eq!(
            names_of("a"),
            (vec!["a/x".into(), "a/y".into(), "a/y-".into()], vec![])
        );
        assert_eq!(names_of("a/y"), (vec!["a/y/z".to_string()], vec![]));
        assert_eq!(names_of("ghost"), (vec![], vec!["ghost/deep".to_string()]));
        assert_eq!(names_of("nothing"), (vec![], vec![]));
    }

    #[test]
    fn round_trips_records_and_removes_trees() {
        let dir = tempfile::tempdir().unwrap();
        let (mut idx, existed) = Index::open(dir.path()).unwrap();
        assert!(!existed);
        idx.put(Path::new("a"), &rec(Kind::Dir, 0)).unwrap();
        idx.put(Path::new("a/x.gz"), &rec(Kind::File, 5)).unwrap();
        idx.put(Path::new("a0"), &rec(Kind::File, 6)).unwrap();
        idx.put(Path::new("ab/y"), &rec(Kind::File, 7)).unwrap();
        idx.commit().unwrap();
        drop(idx);

        let (mut idx, existed) = Index::open(dir.path()).unwrap();
        assert!(existed);
        let state = idx.load().unwrap();
        assert_eq!(state.len(), 4);
        assert_eq!(state[std::ffi::OsStr::new("a/x.gz")], rec(Kind::File, 5));
        idx.remove_tree(Path::new("a")).unwrap();
        idx.commit().unwrap();
        let mut names: Vec<_> = idx.load().unwrap().into_keys().collect();
        names.sort();
        assert_eq!(names, ["a0", "ab/y"]);
    }

    #[test]
    fn a_version_1_index_is_read_untouched_and_upgraded_by_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join(INDEX_FILE)).unwrap();
        conn.execute_batch(
            "CREATE TABLE files (name BLOB PRIMARY KEY, kind INTEGER NOT NULL,
                 size INTEGER NOT NULL, mtime_s INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
                 mode INTEGER NOT NULL, sha256 BLOB, gz INTEGER NOT NULL, target BLOB)
                 WITHOUT ROWID;
             CREATE TABLE mirror (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             INSERT INTO files VALUES (x'61', 0, 5, 1700000000, 123456789, 420, NULL, 1, NULL);
             PRAGMA user_version = 1;",
        )
        .unwrap();
        drop(conn);
        let old = Record {
            disk: None,
            sha256: None,
            ..rec(Kind::File, 5)
        };
        let state = load_untouched(dir.path()).unwrap().unwrap();
        assert_eq!(state[std::ffi::OsStr::new("a")], old);

        let (mut idx, existed) = Index::open(dir.path()).unwrap();
        assert!(existed, "an upgraded index is trusted");
        assert_eq!(idx.get(Path::new("a")).unwrap(), Some(old));
        idx.put(Path::new("b"), &rec(Kind::File, 6)).unwrap();
        idx.commit().unwrap();
        drop(idx);
        let (idx, _) = Index::open(dir.path()).unwrap();
        assert_eq!(idx.get(Path::new("b")).unwrap(), Some(rec(Kind::File, 6)));
        let version: i64 = idx
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
    }

    #[test]
    fn garbage_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(INDEX_FILE), vec![0x42; 8192]).unwrap();
        let result = Index::open(dir.path()).and_then(|(i, _)| i.load());
        assert!(result.is_err());
    }

    #[test]
    fn gzip_names_map_to_gz_suffix() {
        assert_eq!(
            Stored::Gzip.name_for(Path::new("a/b.txt")),
            PathBuf::from("a/b.txt.gz")
        );
        assert_eq!(
            Stored::Plain.name_for(Path::new("a/b.txt")),
            PathBuf::from("a/b.txt")
        );
        assert!(isize_matches(5, 5));
        assert!(isize_matches(1, (1 << 32) + 1));
        assert!(!isize_matches(4, 5));
    }

    #[test]
    fn untouched_reads_create_no_file_with_or_without_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let names = || {
            let mut v: Vec<_> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            v.sort();
            v
        };
        assert!(load_untouched(dir.path()).unwrap().is_none());
        let (mut idx, _) = Index::open(dir.path()).unwrap();
        idx.put(Path::new("a"), &rec(Kind::File, 1)).unwrap();
        idx.commit().unwrap();
        // A writer holds the index open: its -wal and -shm are read, nothing is added.
        let before = names();
        let state = load_untouched(dir.path()).unwrap().unwrap();
        assert_eq!(state.len(), 1);
        assert_eq!(names(), before);
        drop(idx);
        // No writer: the WAL is gone and an immutable read must not bring it back.
        let before = names();
        assert_eq!(before, [INDEX_FILE]);
        let state = load_untouched(dir.path()).unwrap().unwrap();
        assert_eq!(state.len(), 1);
        assert_eq!(names(), before);
    }
}
