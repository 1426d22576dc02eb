//! A mirror in a folder on another machine, over SFTP ([`Sftp`]): the second
//! implementation of the destination seam, beside [`super::local::Local`].
//!
//! - The connection (`conn`) is the user's own `ssh -s sftp`, one per mirror, its
//!   requests pipelined for all workers, brought back with backoff when it is lost.
//! - Files are written as on a local disk: to a temp name in `DST/.datasafe/tmp/`
//!   created exclusively (a few ahead of need: `ahead`), mode and mtime set on the
//!   open handle, `fsync@openssh.com` where offered, then `posix-rename@openssh.com` to
//!   the final name, a file's requests sent together where the protocol allows
//!   (`files`). A killed run leaves only temp files, which the next [`Store::prepare`]
//!   sweeps.
//! - The one-writer lock is `DST/.datasafe/lock`, created exclusively, holding pid, host
//!   and time, its mtime renewed while it is held (`lock`).
//! - The index is a local file (`$XDG_STATE_HOME/datasafe/remote/…`, keyed by the URL),
//!   authoritative; a consistent copy is published to `DST/.datasafe/index.db` after
//!   commits, so the mirror describes itself to another machine (`cache`).
//!
//! What SFTP cannot do: a path is resolved by the server, which follows a symlink on the
//! way (only the last component is never followed: `lstat`), so every folder on the way
//! to a name is checked to be a real folder first (`folders`); mtimes are whole seconds
//! (SFTP version 3).

mod ahead;
pub mod conn;
mod files;
mod folders;
mod lock;

use super::remote::cache;
use super::{Caps, Listed, PrepareError, ReadFile, Reader, Staged, Stat, Store, TempFile, layout};
use crate::config::Remote;
use crate::model::{Kind, Owner};
use crate::output::names::{esc, io_message};
use conn::{Conn, Session};
use filetime::FileTime;
use openssh_sftp_client::UnixTimeStamp;
use openssh_sftp_client::metadata::{MetaData, MetaDataBuilder, Permissions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// A folder on another machine as a store.
pub struct Sftp {
    conn: Arc<Conn>,
    /// The local folder holding this mirror's index (and what was last published).
    cache: cache::Cache,
    /// What writing needs, once [`Store::prepare`] made the store ready.
    writing: Option<Writing>,
    /// The temp folder was found gone (DST removed on the server while this store
    /// wrote it): not ready until it is prepared again.
    gone: std::sync::atomic::AtomicBool,
    /// Folders of the mirror known to be real folders (no symlink on the way).
    folders: Arc<folders::Folders>,
}

/// What a prepared store holds.
struct Writing {
    /// Temp files opened ahead of need (closed and removed while the lock is still
    /// held: fields drop in order).
    ahead: ahead::Ahead,
    /// The lock file, renewed while held, removed when dropped.
    _lock: lock::Held,
    /// Temp names made so far.
    next_tmp: Arc<AtomicU64>,
    /// When the index was last published, and whether a commit since is unpublished.
    published: Mutex<cache::Publishing>,
}

impl Sftp {
    /// Connects to `remote` as a store that reads (no lock, nothing written there).
    pub fn open(remote: &Remote) -> io::Result<Sftp> {
        let store = Sftp::connect(remote)?;
        store.cache.refresh(&store, cache::Role::Reader)?;
        Ok(store)
    }

    /// Connects to `remote`; its local index is not looked at yet (a reader refreshes
    /// it at once, a writer once it holds the lock, in [`Store::prepare`]).
    fn connect(remote: &Remote) -> io::Result<Sftp> {
        Ok(Sftp {
            conn: Conn::open(remote)?,
            cache: cache::Cache::of(&remote.url())?,
            writing: None,
            gone: std::sync::atomic::AtomicBool::new(false),
            folders: Arc::default(),
        })
    }

    /// Connects to `remote` and creates its folder (and the folders it is in) if
    /// missing, as a store not yet prepared for writing.
    pub fn create(remote: &Remote) -> Result<Sftp, PrepareError> {
        // Not `open`: the index is refreshed once, under the lock (`prepare`).
        let store = Sftp::connect(remote).map_err(|e| PrepareError::Unwritable(e.to_string()))?;
        store.make_root().map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists | io::ErrorKind::NotADirectory => {
                PrepareError::Unwritable(format!("destination {}: {e}", remote.url()))
            }
            _ => PrepareError::Unwritable(format!(
                "cannot create destination {}: {}; check the path and that the remote user \
                 may write there, and run again",
                remote.url(),
                io_message(&e)
            )),
        })?;
        Ok(store)
    }

    /// The remote folder.
    pub fn remote(&self) -> &Remote {
        self.conn.remote()
    }

    /// The connection (for `status` and the watcher: is it up, how often was it made).
    pub fn conn(&self) -> &Arc<Conn> {
        &self.conn
    }

    /// The path the server is asked for.
    fn path(&self, name: &Path) -> String {
        self.remote().remote_path(name)
    }

    /// True if every folder on the way to `name` is a real folder ([`folders`]).
    fn beneath(&self, name: &Path) -> io::Result<bool> {
        self.folders.beneath(&self.conn, self.remote(), name)
    }

    /// Fails (not found) unless every folder on the way to `name` is a real folder.
    fn require(&self, name: &Path) -> io::Result<()> {
        self.folders.require(&self.conn, self.remote(), name)
    }

    /// `mkdir -p` of the root, one folder at a time from the top.
    fn make_root(&self) -> io::Result<()> {
        // The root and the folders it is in may be symlinks (as a local DST may be, and
        // as rsync follows them): they are followed. Inside the mirror nothing is.
        let root = self.remote().path.clone();
        if let Some(found) = self.stat_followed(&self.path(Path::new("")))? {
            return match found.kind {
                Kind::Dir => Ok(()),
                _ => Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "it exists and is not a folder; choose a folder",
                )),
            };
        }
        let mut prefix = String::new();
        for part in root.split('/') {
            if part.is_empty() {
                continue;
            }
            if !prefix.is_empty() || root.starts_with('/') {
                prefix.push('/');
            }
            prefix.push_str(part);
            match self.stat_followed(&prefix)? {
                Some(s) if s.kind == Kind::Dir => continue,
                Some(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::NotADirectory,
                        format!("{prefix} on the server is not a folder; choose a folder"),
                    ));
                }
                None => {}
            }
            let path = prefix.clone();
            let made = self.conn.run(false, move |s| {
                let path = path.clone();
                async move { s.sftp.fs().create_dir(path).await }
            });
            if let Err(e) = made {
                // Made meanwhile (SFTP v3 says only "failure"): fine if it is a folder.
                match self.stat_followed(&prefix)? {
                    Some(s) if s.kind == Kind::Dir => {}
                    _ => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// `stat` of a server path, following a symlink; `None` if nothing is there.
    fn stat_followed(&self, path: &str) -> io::Result<Option<Stat>> {
        let path = path.to_string();
        let found = self.conn.run(true, move |s| {
            let path = path.clone();
            async move { s.sftp.fs().metadata(path).await }
        });
        match found {
            Ok(meta) => Ok(Some(stat_of(&meta))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The names directly inside `dir`, each with what READDIR said of it.
    fn list_detailed(&self, dir: &Path) -> io::Result<Vec<(PathBuf, Stat)>> {
        // `dir` itself as well as the folders on the way: OPENDIR would follow a symlink
        // there (a name inside it has them all on its way).
        self.require(&dir.join("_"))?;
        let path = self.path(dir);
        let entries = self.conn.run(true, move |s| {
            let path = path.clone();
            async move {
                let dir = s.sftp.fs().open_dir(path).await?;
                files::read_all(dir.read_dir()).await
            }
        })?;
        let mut out = Vec::with_capacity(entries.len());
        for (name, meta) in entries {
            if name == Path::new(".") || name == Path::new("..") {
                continue;
            }
            out.push((dir.join(name), stat_of(&meta)));
        }
        Ok(out)
    }

    /// `lstat` of a server path; `None` if nothing is there.
    fn stat_path(&self, path: &str) -> io::Result<Option<Stat>> {
        self.conn.lstat(path)
    }

    /// Runs a request on one path that changes the store (never sent twice).
    fn change<F, Fut>(&self, what: F) -> io::Result<()>
    where
        F: Fn(Arc<Session>) -> Fut,
        Fut: std::future::Future<Output = Result<(), openssh_sftp_client::Error>>,
    {
        self.conn.run(false, what)
    }

    /// A temp name in the temp folder, unique to this process.
    fn temp_name(&self) -> PathBuf {
        let n = self
            .writing
            .as_ref()
            .map_or(0, |w| w.next_tmp.fetch_add(1, Ordering::Relaxed));
        layout::tmp().join(format!("{}-{n}.tmp", std::process::id()))
    }

    fn writing(&self) -> io::Result<&Writing> {
        self.writing
            .as_ref()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "the store is not prepared"))
    }
}

/// What a server's attributes say, as a [`Stat`] (mtimes in whole seconds).
fn stat_of(meta: &MetaData) -> Stat {
    let kind = match meta.file_type() {
        Some(t) if t.is_dir() => Kind::Dir,
        Some(t) if t.is_file() => Kind::File,
        Some(t) if t.is_symlink() => Kind::Symlink,
        _ => Kind::Special,
    };
    let mtime = meta.modified().map_or(FileTime::zero(), |t| {
        FileTime::from_system_time(t.as_system_time())
    });
    Stat {
        kind,
        size: meta.len().unwrap_or(0),
        mtime,
        mode: meta.permissions().map_or(0, |p| p.as_raw().bits() & 0o7777),
        // SFTP version 3 has no inode numbers and no link counts.
        ino: 0,
        links: 1,
        owner: meta
            .uid()
            .zip(meta.gid())
            .map(|(uid, gid)| Owner { uid, gid }),
    }
}

/// The mtime in whole seconds as [`meta_of`] sends it: SFTP version 3 carries an
/// unsigned 32-bit count of seconds, so a time before 1970 or after 2106 is sent as
/// the epoch.
fn sent_seconds(mtime: FileTime) -> i64 {
    match u32::try_from(mtime.unix_seconds()) {
        Ok(seconds) => i64::from(seconds),
        Err(_) => 0,
    }
}

/// Attributes that set mode and mtime (atime too, to the same value).
fn meta_of(mode: u32, mtime: FileTime) -> MetaData {
    let time = SystemTime::UNIX_EPOCH
        + Duration::from_secs(u64::try_from(sent_seconds(mtime)).unwrap_or(0));
    let stamp = UnixTimeStamp::new(time)
        .unwrap_or_else(|_| UnixTimeStamp::new(SystemTime::UNIX_EPOCH).expect("epoch fits"));
    let perm = Permissions::from((mode & 0o7777) as u16);
    let mut builder = MetaDataBuilder::new();
    builder.permissions(perm).time(stamp, stamp);
    builder.create()
}

/// Attributes that set the owner and group alone (by number: SFTP knows no names).
fn owner_of(owner: Owner) -> MetaData {
    let mut builder = MetaDataBuilder::new();
    builder.id((owner.uid, owner.gid));
    builder.create()
}

impl Reader for Sftp {
    fn caps(&self) -> Caps {
        let ext = self.conn.extensions();
        Caps {
            hard_links: ext.hardlink,
            atomic_rename: ext.posix_rename,
            posix_meta: true,
            symlinks: true,
            server_side_copy: false,
            fsync: ext.fsync,
            nanosecond_mtimes: false,
            cheap_listing: false,
            // By number, where the server's user may give files away (root).
            owners: true,
            xattrs: false,
        }
    }

    fn display(&self, name: &Path) -> PathBuf {
        PathBuf::from(self.remote().url_of(name))
    }

    fn stat(&self, name: &Path) -> io::Result<Option<Stat>> {
        if name.as_os_str().is_empty() {
            // DST itself may be a symlink to its folder (followed, as for a local DST).
            return self.stat_followed(&self.path(name));
        }
        // Through a symlink on the way, the name is not in the mirror (as for a local
        // store, which never follows one).
        if !self.beneath(name)? {
            return Ok(None);
        }
        self.stat_path(&self.path(name))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<Listed>> {
        Ok(self
            .list_detailed(dir)?
            .into_iter()
            .map(|(name, stat)| Listed {
                name,
                kind: stat.kind,
            })
            .collect())
    }

    fn walk(
        &self,
        top: &Path,
        detail: bool,
        visit: &mut dyn FnMut(super::Walked) -> super::Step,
    ) -> io::Result<()> {
        // One READDIR answers with each name's attributes: no request per name.
        let mut folders = vec![top.to_path_buf()];
        let mut first = true;
        while let Some(dir) = folders.pop() {
            let listed = match self.list_detailed(&dir) {
                Ok(listed) => listed,
                Err(e) if first => return Err(e),
                Err(_) => continue,
            };
            first = false;
            for (name, stat) in listed {
                let is_dir = stat.kind == Kind::Dir;
                if is_dir {
                    // Seen as a folder by its own lstat: no symlink on the way to below.
                    self.folders.made(&name);
                }
                let walked = super::Walked {
                    name: name.clone(),
                    kind: stat.kind,
                    stat: detail.then_some(stat),
                };
                match visit(walked) {
                    super::Step::Go if is_dir => folders.push(name),
                    super::Step::Go | super::Step::Prune => {}
                    super::Step::Stop => return Ok(()),
                }
            }
        }
        Ok(())
    }

    fn open(&self, name: &Path) -> io::Result<Box<dyn ReadFile>> {
        match self.stat(name)? {
            Some(s) if s.kind == Kind::File => {}
            Some(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "not a regular file",
                ));
            }
            None => return Err(io::ErrorKind::NotFound.into()),
        }
        let path = self.path(name);
        let file = self.conn.run(true, move |s| {
            let path = path.clone();
            async move {
                let file = s.sftp.open(path).await?;
                Ok((file, s.number))
            }
        })?;
        Ok(Box::new(files::RemoteRead::new(self.conn.clone(), file)))
    }

    fn read_link(&self, name: &Path) -> io::Result<PathBuf> {
        self.require(name)?;
        let path = self.path(name);
        self.conn.run(true, move |s| {
            let path = path.clone();
            async move { s.sftp.fs().read_link(path).await }
        })
    }

    fn index_file(&self) -> PathBuf {
        self.cache.index_file()
    }
}

impl Store for Sftp {
    fn prepare(&mut self) -> Result<(), PrepareError> {
        let url = self.display(layout::state());
        let unwritable = |e: io::Error| {
            PrepareError::Unwritable(format!(
                "cannot write {}: {}; check that the remote user may write there",
                esc(&url),
                io_message(&e)
            ))
        };
        for dir in [layout::state().to_path_buf(), layout::tmp()] {
            match self.stat(&dir).map_err(unwritable)? {
                Some(s) if s.kind == Kind::Dir => {}
                Some(_) => {
                    return Err(PrepareError::Unwritable(format!(
                        "{} is not a folder; move it away and run again",
                        esc(&self.display(&dir))
                    )));
                }
                None => match self.mkdir(&dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(unwritable(e)),
                },
            }
        }
        let held = lock::take(self.conn.clone(), &self.path(&layout::lock()))?;
        // Under the lock: the index this writer starts from (see `cache`).
        self.cache
            .refresh(self, cache::Role::Writer)
            .and_then(|_| self.cache.writing())
            .map_err(unwritable)?;
        // Only the lock holder may clean temp files: another writer may be using them.
        if let Ok(leftovers) = self.list(&layout::tmp()) {
            for left in leftovers {
                log::debug!(
                    "removing leftover temp file {}",
                    esc(&self.display(&left.name))
                );
                let _ = self.remove_file(&left.name);
            }
        }
        self.writing = Some(Writing {
            ahead: ahead::Ahead::new(self.conn.clone()),
            _lock: held,
            next_tmp: Arc::new(AtomicU64::new(0)),
            published: Mutex::new(cache::Publishing::default()),
        });
        Ok(())
    }

    fn ready(&self) -> bool {
        self.writing.is_some() && self.conn.is_up() && !self.gone.load(Ordering::Relaxed)
    }

    fn temp_file(&self) -> io::Result<Box<dyn TempFile>> {
        let writing = self.writing()?;
        let name = || self.temp_name();
        // A create sent on a connection lost since is passed over (its file removed once
        // the connection is back); there are at most so many of them.
        let mut passed = 0;
        loop {
            let opening = writing.ahead.next(&name)?;
            let (name, number) = (opening.name.clone(), opening.number);
            match opening.wait(&self.conn) {
                Ok(file) if self.conn.is_current(number) => {
                    return Ok(Box::new(files::RemoteTemp::new(
                        self.conn.clone(),
                        self.remote().clone(),
                        self.folders.clone(),
                        name,
                        Some((file, number)),
                    )));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    // No temp folder: DST was removed on the server. Said once by the
                    // watcher, which makes it again.
                    if matches!(self.stat(&layout::tmp()), Ok(None)) {
                        self.gone.store(true, Ordering::Relaxed);
                    }
                    return Err(e);
                }
                Err(e) if e.kind() != io::ErrorKind::ConnectionAborted => return Err(e),
                // The server may have made the file before the connection went, its
                // answer lost: removed once the connection is back.
                failed => {
                    self.conn.orphan(self.path(&name));
                    passed += 1;
                    if let Err(e) = failed
                        && (passed > 2 * ahead::AHEAD || self.conn.is_current(number))
                    {
                        return Err(e);
                    }
                }
            }
        }
    }

    fn temp_symlink(&self, target: &Path, _mtime: FileTime) -> io::Result<Box<dyn Staged>> {
        self.writing()?;
        let name = self.temp_name();
        self.symlink(target, &name)?;
        // SFTP version 3 cannot set a symlink's own time: it keeps the time it was made.
        Ok(Box::new(files::RemoteTemp::new(
            self.conn.clone(),
            self.remote().clone(),
            self.folders.clone(),
            name,
            None,
        )))
    }

    fn mkdir(&self, name: &Path) -> io::Result<()> {
        self.require(name)?;
        let path = self.path(name);
        let made = self.change(|s| {
            let path = path.clone();
            async move { s.sftp.fs().create_dir(path).await }
        });
        if made.is_ok() {
            self.folders.made(name);
        }
        match made {
            // SFTP version 3 has no "already exists": a failure with something there is
            // that.
            Err(e) if e.kind() == io::ErrorKind::Other && self.stat(name)?.is_some() => {
                Err(io::Error::new(io::ErrorKind::AlreadyExists, e.to_string()))
            }
            other => other,
        }
    }

    fn symlink(&self, target: &Path, name: &Path) -> io::Result<()> {
        self.require(name)?;
        let (target, path) = (target.to_path_buf(), self.path(name));
        let made = self.change(|s| {
            let (target, path) = (target.clone(), path.clone());
            async move { s.sftp.fs().symlink(target, path).await }
        });
        match made {
            Err(e) if e.kind() == io::ErrorKind::Other && self.stat(name)?.is_some() => {
                Err(io::Error::new(io::ErrorKind::AlreadyExists, e.to_string()))
            }
            other => other,
        }
    }

    fn link(&self, from: &Path, to: &Path) -> io::Result<()> {
        if !self.conn.extensions().hardlink {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "the server does not offer hardlink@openssh.com",
            ));
        }
        self.require(from)?;
        self.require(to)?;
        let (from_path, to_path) = (self.path(from), self.path(to));
        let made = self.change(|s| {
            let (from, to) = (from_path.clone(), to_path.clone());
            async move { s.sftp.fs().hard_link(from, to).await }
        });
        match made {
            Err(e) if e.kind() == io::ErrorKind::Other && self.stat(to)?.is_some() => {
                Err(io::Error::new(io::ErrorKind::AlreadyExists, e.to_string()))
            }
            other => other,
        }
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.require(from)?;
        self.require(to)?;
        // Whatever was a folder at either name may be something else after.
        self.folders.forget(from);
        self.folders.forget(to);
        let (from_path, to_path) = (self.path(from), self.path(to));
        if !self.conn.extensions().posix_rename {
            // Plain SFTP rename refuses an existing target: clear it first (a moment
            // with no file under `to`; `caps().atomic_rename` says so).
            match self.stat(to)? {
                Some(s) if s.kind == Kind::Dir => {
                    let _ = self.remove_dir(to);
                }
                Some(_) => {
                    let _ = self.remove_file(to);
                }
                None => {}
            }
        }
        let renamed = self.change(|s| {
            let (from, to) = (from_path.clone(), to_path.clone());
            async move { s.sftp.fs().rename(from, to).await }
        });
        // Again after: another worker may have found a name real while it moved.
        self.folders.forget(from);
        self.folders.forget(to);
        renamed
    }

    fn remove_file(&self, name: &Path) -> io::Result<()> {
        self.require(name)?;
        self.conn.remove_file(&self.path(name))
    }

    fn remove_dir(&self, name: &Path) -> io::Result<()> {
        self.require(name)?;
        self.folders.forget(name);
        let path = self.path(name);
        let removed = self.change(|s| {
            let path = path.clone();
            async move { s.sftp.fs().remove_dir(path).await }
        });
        // Again after: another worker may have found it real meanwhile.
        self.folders.forget(name);
        removed
    }

    fn remove_tree(&self, name: &Path) -> io::Result<()> {
        let gone = |e: &io::Error| e.kind() == io::ErrorKind::NotFound;
        if !self.beneath(name)? {
            return Ok(());
        }
        let mut folders = Vec::new();
        let mut files = Vec::new();
        let walked = self.walk(name, false, &mut |w| {
            if w.kind == Kind::Dir {
                folders.push(w.name);
            } else {
                files.push(w.name);
            }
            super::Step::Go
        });
        match walked {
            Err(e) if gone(&e) => return Ok(()),
            other => other?,
        }
        for file in files {
            match self.remove_file(&file) {
                Err(e) if !gone(&e) => return Err(e),
                _ => {}
            }
        }
        // A folder before what it holds in the walk: deepest last, so removed first.
        folders.sort_by_key(|f| std::cmp::Reverse(f.components().count()));
        for folder in folders.iter().map(PathBuf::as_path).chain([name]) {
            match self.remove_dir(folder) {
                Err(e) if !gone(&e) => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    fn set_meta(
        &self,
        name: &Path,
        kind: Kind,
        mode: u32,
        mtime: FileTime,
    ) -> io::Result<Option<Stat>> {
        // setstat follows a symlink: look first, and set only a `kind` found there.
        match self.stat(name)? {
            Some(s) if s.kind == kind => {}
            _ => return Ok(None),
        }
        let path = self.path(name);
        let set = self.change(|s| {
            let path = path.clone();
            async move { s.sftp.fs().set_metadata(path, meta_of(mode, mtime)).await }
        });
        match set {
            Ok(()) => self.stat(name),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// SFTP version 3 sets attributes through a symlink, never on it: a symlink keeps
    /// the server user's owner (its own owner matters to no one reading through it).
    fn set_owner(&self, name: &Path, kind: Kind, owner: Owner) -> io::Result<bool> {
        match self.stat(name)? {
            Some(s) if s.kind == kind => {}
            _ => return Ok(false),
        }
        if kind == Kind::Symlink {
            return Ok(true);
        }
        let path = self.path(name);
        let set = self.change(|s| {
            let path = path.clone();
            async move { s.sftp.fs().set_metadata(path, owner_of(owner)).await }
        });
        match set {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn barrier(&self) -> io::Result<()> {
        // Each file was made durable (fsync@openssh.com) before its rename, where the
        // server offers it; nothing more can be asked of an SFTP server.
        Ok(())
    }

    fn free_bytes(&self) -> Option<u64> {
        if !self.conn.extensions().statvfs {
            return None;
        }
        let path = self.path(Path::new(""));
        let stat = self
            .conn
            .run(true, move |s| {
                let path = path.clone();
                async move { s.sftp.fs().statvfs(path).await }
            })
            .ok()?;
        Some(stat.bavail.saturating_mul(stat.frsize))
    }

    fn connections(&self) -> u64 {
        self.conn.connections()
    }

    fn index_committed(&self) -> io::Result<()> {
        let writing = self.writing()?;
        self.cache
            .publish(self, &writing.published, cache::Publish::Committed)
    }

    fn index_idle(&self) -> io::Result<()> {
        let writing = self.writing()?;
        if !self.conn.is_up() {
            return Ok(());
        }
        let published = self
            .cache
            .publish(self, &writing.published, cache::Publish::IfDue);
        // Nothing is being written: no temp file waits open in the mirror for long.
        writing.ahead.clear_if_idle();
        published
    }
}

impl Drop for Sftp {
    fn drop(&mut self) {
        // The last commits, if the last publication was held back to spare the link.
        let Some(writing) = &self.writing else {
            return;
        };
        let published = match self.conn.is_up() {
            true => self
                .cache
                .publish(self, &writing.published, cache::Publish::Now),
            false => Err(self.conn.lost_error("")),
        };
        match published {
            // The next writer may trust the index as it is.
            Ok(()) => self.cache.closed(),
            Err(e) => log::warn!(
                "cannot publish the index to {}: {} (the next run compares with a listing \
                 of the mirror)",
                esc(&self.display(&layout::index())),
                io_message(&e)
            ),
        }
    }
}
