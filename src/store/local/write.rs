//! The local store's write half ([`Store`] for [`Local`]): every create, write, rename,
//! delete, chmod, utimes and symlink is one call relative to an open folder handle
//! ([`Dir`]) reached from DST's root without passing a symlink, never a whole path
//! resolved again. Temp files are created exclusively (mode 0600) in the temp folder,
//! held open as a handle for the store's life, and reach their final names by
//! `renameat` from it.
//!
//! Only DST's root itself is named by path: once to create and open it
//! ([`Local::create`]), and by [`Store::ready`] to check that the path still names the
//! folder this store holds open (a DST removed or replaced from under a long-lived
//! writer must be prepared again, not written through a stale handle).

use super::Local;
use super::beneath::{self, Dir, Temp};
use crate::model::{Kept, Kind, Owner, Xattrs};
use crate::output::names::{esc, io_message};
use crate::store::{PrepareError, Reader, Staged, Stat, Store, TempFile, layout};
use filetime::FileTime;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// What a prepared local store holds for writing.
#[derive(Debug)]
pub(super) struct Writing {
    /// The temp folder, open: temp files are created here and renamed from here.
    tmp: Arc<Dir>,
    /// The numbers of temp names this process has used.
    next_tmp: AtomicU64,
    /// The one-writer lock (an exclusive `flock`), held while the store lives.
    _lock: File,
}

impl Local {
    /// Creates the folder `root` (and its parents) if missing and opens it as a store,
    /// not yet prepared for writing.
    pub fn create(root: &Path) -> Result<Local, PrepareError> {
        std::fs::create_dir_all(root).map_err(|e| {
            PrepareError::Unwritable(format!(
                "cannot create destination {}: {}; check the path, make the folder it \
                 goes in writable and run again",
                esc(root),
                io_message(&e)
            ))
        })?;
        Local::open(root).map_err(|e| unwritable(&root.join(layout::tmp()), &e))
    }

    /// The folder holding `name`, and `name`'s last component; the root has none, and
    /// no write acts on the root by name.
    fn parent_and_last<'n>(&self, name: &'n Path) -> io::Result<(Dir, &'n OsStr)> {
        match self.parent_of(name)? {
            (dir, Some(last)) => Ok((dir, last)),
            (_, None) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the destination's root cannot be replaced",
            )),
        }
    }

    fn writing(&self) -> io::Result<&Writing> {
        self.writing.as_ref().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the destination was not prepared for writing",
            )
        })
    }

    /// A temp name never used before by this process (another process's names carry
    /// its pid; only the lock holder sweeps the folder).
    fn temp_name(&self, writing: &Writing) -> OsString {
        let n = writing.next_tmp.fetch_add(1, Ordering::Relaxed);
        OsString::from(format!("{}-{n}.tmp", std::process::id()))
    }
}

/// "cannot write to destination PATH: …" for `path` inside DST.
fn unwritable(path: &Path, err: &io::Error) -> PrepareError {
    PrepareError::Unwritable(format!(
        "cannot write to destination {}: {}; make it writable and run again",
        esc(path),
        io_message(err)
    ))
}

fn not_a_folder(path: &Path) -> PrepareError {
    PrepareError::Unwritable(format!(
        "{} is not a folder; move it out of the way and run again",
        esc(path)
    ))
}

/// A name that cannot be there: missing, or a folder on the way is not a folder.
fn absent(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

fn is_folder(status: io::Result<beneath::Status>) -> Option<bool> {
    status.ok().map(|s| s.kind == Kind::Dir)
}

impl Store for Local {
    fn prepare(&mut self) -> Result<(), PrepareError> {
        let state_name = OsStr::new(layout::STATE_DIR);
        let tmp_name = OsStr::new(layout::TMP_DIR);
        let (state_path, tmp_path) = (self.display(layout::state()), self.display(&layout::tmp()));
        if is_folder(self.dir.status(state_name)) == Some(false) {
            return Err(not_a_folder(&state_path));
        }
        let make = |dir: &Dir, name: &OsStr| match dir.mkdir(name) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            other => other,
        };
        make(&self.dir, state_name).map_err(|e| unwritable(&tmp_path, &e))?;
        let state = self.dir.dir(layout::state()).map_err(|e| match e.kind() {
            io::ErrorKind::NotADirectory => not_a_folder(&state_path),
            _ => unwritable(&tmp_path, &e),
        })?;
        // A symlink planted as the temp folder would send temp files, and the cleanup
        // of leftovers, outside DST.
        if is_folder(state.status(tmp_name)) == Some(false) {
            let _ = state.remove_file(tmp_name);
        }
        make(&state, tmp_name).map_err(|e| unwritable(&tmp_path, &e))?;
        let tmp = state.dir(Path::new(tmp_name)).map_err(|e| match e.kind() {
            io::ErrorKind::NotADirectory => not_a_folder(&tmp_path),
            _ => unwritable(&tmp_path, &e),
        })?;
        // Only the lock holder may clean temp files: another writer may be using them.
        let lock = take_lock(&state, &self.display(&layout::lock()), &self.root)?;
        if let Ok(leftovers) = tmp.entries() {
            for (name, _) in leftovers {
                log::debug!("removing leftover temp file {}", esc(&tmp_path.join(&name)));
                let _ = tmp.remove_file(&name);
            }
        }
        self.writing = Some(Writing {
            tmp: Arc::new(tmp),
            next_tmp: AtomicU64::new(0),
            _lock: lock,
        });
        Ok(())
    }

    fn ready(&self) -> bool {
        let Ok(writing) = self.writing() else {
            return false;
        };
        // The path still names the folder held open, and its temp folder is the one
        // temp files are made in.
        let same_root = std::fs::metadata(&self.root).is_ok_and(|m| {
            self.dir
                .own_status()
                .is_ok_and(|own| same_file(&m, own.dev, own.ino))
        });
        same_root
            && match (self.dir.dir(&layout::tmp()), writing.tmp.own_status()) {
                (Ok(found), Ok(held)) => found
                    .own_status()
                    .is_ok_and(|f| (f.dev, f.ino) == (held.dev, held.ino)),
                _ => false,
            }
    }

    fn temp_file(&self) -> io::Result<Box<dyn TempFile>> {
        let writing = self.writing()?;
        let (temp, file) = Temp::make(
            writing.tmp.clone(),
            || self.temp_name(writing),
            Dir::create_private,
        )?;
        Ok(Box::new(LocalTemp {
            root: self.dir.clone(),
            file: Some(file),
            temp,
            target: None,
        }))
    }

    fn temp_symlink(&self, target: &Path, mtime: FileTime) -> io::Result<Box<dyn Staged>> {
        let writing = self.writing()?;
        let (temp, ()) = Temp::make(
            writing.tmp.clone(),
            || self.temp_name(writing),
            |dir, name| dir.symlink(target, name),
        )?;
        // Symlink mtimes are not supported everywhere; a failure here is not worth a
        // failed link.
        let _ = temp.dir().set_link_mtime(temp.name(), mtime);
        Ok(Box::new(LocalTemp {
            root: self.dir.clone(),
            file: None,
            temp,
            target: None,
        }))
    }

    fn mkdir(&self, name: &Path) -> io::Result<()> {
        let (dir, last) = self.parent_and_last(name)?;
        dir.mkdir(last)
    }

    fn symlink(&self, target: &Path, name: &Path) -> io::Result<()> {
        let (dir, last) = self.parent_and_last(name)?;
        dir.symlink(target, last)
    }

    fn link(&self, from: &Path, to: &Path) -> io::Result<()> {
        let (from_dir, from_last) = self.parent_and_last(from)?;
        let (to_dir, to_last) = self.parent_and_last(to)?;
        from_dir.link(from_last, &to_dir, to_last)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let (from_dir, from_last) = self.parent_and_last(from)?;
        let (to_dir, to_last) = self.parent_and_last(to)?;
        from_dir.rename(from_last, &to_dir, to_last)
    }

    fn remove_file(&self, name: &Path) -> io::Result<()> {
        let (dir, last) = self.parent_and_last(name)?;
        dir.remove_file(last)
    }

    fn remove_dir(&self, name: &Path) -> io::Result<()> {
        let (dir, last) = self.parent_and_last(name)?;
        dir.remove_dir(last)
    }

    fn remove_tree(&self, name: &Path) -> io::Result<()> {
        let (dir, last) = match self.parent_and_last(name) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            other => other?,
        };
        dir.remove_tree(last)
    }

    fn set_meta(
        &self,
        name: &Path,
        kind: Kind,
        mode: u32,
        mtime: FileTime,
    ) -> io::Result<Option<Stat>> {
        let missing = |e: &io::Error| {
            matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            )
        };
        let Some((dir, last)) = self.parent_if_there(name)? else {
            return Ok(None);
        };
        match (kind, last) {
            (Kind::Dir, None) => {
                dir.set_own_meta(mode, mtime)?;
                Ok(Some(dir.own_status()?.into()))
            }
            (Kind::Dir, Some(last)) => match dir.status(last) {
                Ok(s) if s.kind == Kind::Dir => {
                    dir.set_dir_meta(last, mode, mtime)?;
                    Ok(Some(dir.status(last)?.into()))
                }
                Ok(_) => Ok(None),
                Err(e) if missing(&e) => Ok(None),
                Err(e) => Err(e),
            },
            (Kind::File, Some(last)) => {
                // Opened with O_NOFOLLOW: a planted symlink is not a file. A file that
                // cannot be opened (mode 000 for this user) is not reachable either:
                // the engine copies it again, which replaces it.
                let Ok(file) = dir.open_file(last) else {
                    return Ok(None);
                };
                crate::platform::set_mode_file(&file, mode)?;
                filetime::set_file_handle_times(&file, Some(mtime), Some(mtime))?;
                Ok(Some(crate::store::ReadFile::stat(&file)?))
            }
            _ => Ok(None),
        }
    }

    fn set_owner(&self, name: &Path, kind: Kind, owner: Owner) -> io::Result<bool> {
        let Some((dir, last)) = self.reach(name, kind)? else {
            return Ok(false);
        };
        dir.set_owner(last, owner)?;
        Ok(true)
    }

    fn set_xattrs(
        &self,
        name: &Path,
        kind: Kind,
        xattrs: &Xattrs,
        kept: &Kept,
    ) -> io::Result<bool> {
        let Some((dir, last)) = self.reach(name, kind)? else {
            return Ok(false);
        };
        dir.set_xattrs(last, xattrs, kept)?;
        Ok(true)
    }

    fn barrier(&self) -> io::Result<()> {
        self.dir.sync_filesystem()
    }

    fn free_bytes(&self) -> Option<u64> {
        self.dir.free_bytes().ok()
    }
}

impl Local {
    /// The folder holding `name` and its last component (empty for the root), if
    /// `name` is a `kind` now (never through a symlink).
    fn reach<'n>(&self, name: &'n Path, kind: Kind) -> io::Result<Option<(Dir, &'n OsStr)>> {
        let Some((dir, last)) = self.parent_if_there(name)? else {
            return Ok(None);
        };
        let Some(last) = last else {
            return Ok((kind == Kind::Dir).then_some((dir, OsStr::new(""))));
        };
        match dir.status(last) {
            Ok(s) if s.kind == kind => Ok(Some((dir, last))),
            Ok(_) => Ok(None),
            Err(e) if gone(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The folder holding `name` and its last component (`None` for the root); `None`
    /// if a folder on the way is missing or not a real folder.
    fn parent_if_there<'n>(&self, name: &'n Path) -> io::Result<Option<(Dir, Option<&'n OsStr>)>> {
        match self.parent_of(name) {
            Ok(found) => Ok(Some(found)),
            Err(e) if gone(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Missing, or reached through something that is not a real folder: not there.
fn gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

#[cfg(unix)]
fn same_file(meta: &std::fs::Metadata, dev: u64, ino: u64) -> bool {
    use std::os::unix::fs::MetadataExt;
    meta.dev() == dev && meta.ino() == ino
}

#[cfg(not(unix))]
fn same_file(meta: &std::fs::Metadata, _dev: u64, _ino: u64) -> bool {
    meta.is_dir()
}

/// Takes the one-writer lock `lock` in the state folder (released when the file closes,
/// also when the process is killed) and writes our pid into it for the other side's
/// message.
fn take_lock(state: &Dir, path: &Path, dst: &Path) -> Result<File, PrepareError> {
    use std::io::{Read, Seek};
    let mut file = state
        .open_lock(OsStr::new(layout::LOCK_FILE))
        .map_err(|e| unwritable(path, &e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let who = match holder.trim() {
                "" => "another datasafe process".to_string(),
                pid => format!("another datasafe process (pid {pid})"),
            };
            return Err(PrepareError::Locked(format!(
                "{who} is writing the mirror in {}; stop it first, or wait until it is done",
                esc(dst)
            )));
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(unwritable(path, &e)),
    }
    let _ = file.set_len(0);
    let _ = file.rewind();
    let _ = write!(file, "{}", std::process::id());
    Ok(file)
}

/// A temp file or symlink in the local store's temp folder.
struct LocalTemp {
    /// DST's root, to reach the final name's folder from.
    root: Arc<Dir>,
    /// The open file (`None` for a symlink). Declared before `temp`, so it is closed
    /// before the temp file is removed (some systems refuse to remove an open file).
    file: Option<File>,
    /// Its name in the temp folder, removed on drop unless installed.
    temp: Temp<Arc<Dir>>,
    /// The folder [`Staged::look`] reached, and the name it looked at: the install
    /// under that name that follows goes through it (the same window as between any
    /// handle's lookup and its use), and forgets it.
    /// `None` for the root itself, which needs no second handle.
    target: Option<(std::path::PathBuf, Option<Dir>)>,
}

impl LocalTemp {
    fn file(&mut self) -> io::Result<&mut File> {
        self.file.as_mut().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "a staged symlink holds no bytes",
            )
        })
    }
}

impl Staged for LocalTemp {
    fn stat(&self) -> io::Result<Stat> {
        match &self.file {
            Some(file) => crate::store::ReadFile::stat(file),
            None => Ok(self.temp.dir().status(self.temp.name())?.into()),
        }
    }

    fn look(&mut self, name: &Path) -> io::Result<Option<Stat>> {
        self.target = None;
        let (parent, last) = beneath::split(name);
        let Some(last) = last else {
            return Ok(Some(self.root.own_status()?.into()));
        };
        let dir = if parent.as_os_str().is_empty() {
            None
        } else {
            match self.root.dir(parent) {
                Ok(dir) => Some(dir),
                Err(e) if absent(&e) => return Ok(None),
                Err(e) => return Err(e),
            }
        };
        let found = match dir.as_ref().unwrap_or(&self.root).status(last) {
            Ok(status) => Some(status.into()),
            Err(e) if absent(&e) => None,
            Err(e) => return Err(e),
        };
        self.target = Some((name.to_path_buf(), dir));
        Ok(found)
    }

    fn install(&mut self, name: &Path) -> io::Result<()> {
        let (parent, last) = beneath::split(name);
        let Some(last) = last else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the destination's root cannot be replaced",
            ));
        };
        let dir = match self.target.take() {
            Some((looked, dir)) if looked == name => dir,
            _ if parent.as_os_str().is_empty() => None,
            _ => Some(self.root.dir(parent)?),
        };
        self.temp
            .rename_to(dir.as_ref().unwrap_or(&self.root), last)
    }
}

impl Write for LocalTemp {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file()?.write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file()?.write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file()?.flush()
    }
}

impl TempFile for LocalTemp {
    fn set_meta(&mut self, mode: u32, mtime: FileTime) -> io::Result<()> {
        let file = self.file()?;
        crate::platform::set_mode_file(file, mode)?;
        filetime::set_file_handle_times(file, Some(mtime), Some(mtime))
    }

    /// Moves past the hole and extends the file over it (`ftruncate`): nothing is
    /// allocated, and a hole at the end is kept. The file is written from its start
    /// and only forward, so its length is where writing is up to.
    fn skip_hole(&mut self, len: u64) -> io::Result<()> {
        use std::io::{Seek, SeekFrom};
        let file = self.file()?;
        let end = file
            .stream_position()?
            .checked_add(len)
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        file.set_len(end)?;
        file.seek(SeekFrom::Start(end))?;
        Ok(())
    }

    fn set_owner(&mut self, owner: Owner) -> io::Result<()> {
        crate::platform::set_owner_file(self.file()?, owner)
    }

    fn set_xattrs(&mut self, xattrs: &Xattrs) -> io::Result<()> {
        crate::platform::set_xattrs_file(self.file()?, xattrs)
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn prepare_takes_the_lock_sweeps_temp_files_and_ready_follows_the_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("dst");
        std::fs::create_dir_all(root.join(".datasafe/tmp")).unwrap();
        std::fs::write(root.join(".datasafe/tmp/99-0.tmp"), "left over").unwrap();
        let mut store = Local::create(&root).unwrap();
        assert!(!store.ready());
        store.prepare().unwrap();
        assert!(store.ready());
        assert!(!root.join(".datasafe/tmp/99-0.tmp").exists());

        let mut second = Local::create(&root).unwrap();
        match second.prepare() {
            Err(PrepareError::Locked(message)) => assert!(
                message.contains(&format!("(pid {})", std::process::id())),
                "{message}"
            ),
            other => panic!("{other:?}"),
        }

        // A temp file lands under its final name in one rename, and nothing is left.
        std::fs::create_dir(root.join("d")).unwrap();
        let mut temp = store.temp_file().unwrap();
        temp.write_all(b"hello").unwrap();
        temp.set_meta(0o640, FileTime::from_unix_time(1_000_000_000, 0))
            .unwrap();
        temp.install(Path::new("d/f")).unwrap();
        drop(temp);
        assert_eq!(std::fs::read(root.join("d/f")).unwrap(), b"hello");
        assert_eq!(
            std::fs::read_dir(root.join(".datasafe/tmp"))
                .unwrap()
                .count(),
            0
        );
        // Dropped uninstalled, a temp file is removed.
        drop(store.temp_file().unwrap());
        assert_eq!(
            std::fs::read_dir(root.join(".datasafe/tmp"))
                .unwrap()
                .count(),
            0
        );

        // DST removed and made again: the store held is no longer the folder.
        std::fs::remove_dir_all(&root).unwrap();
        assert!(!store.ready());
        std::fs::create_dir_all(root.join(".datasafe/tmp")).unwrap();
        assert!(!store.ready());
    }

    #[test]
    fn a_state_folder_that_is_not_a_folder_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("dst");
        std::fs::create_dir(&root).unwrap();
        std::os::unix::fs::symlink(tmp.path(), root.join(".datasafe")).unwrap();
        match Local::create(&root).unwrap().prepare() {
            Err(PrepareError::Unwritable(message)) => {
                assert!(
                    message.ends_with(
                        ".datasafe is not a folder; move it out of the way and run again"
                    ),
                    "{message}"
                )
            }
            other => panic!("{other:?}"),
        }
    }
}
