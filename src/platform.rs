//! Everything that differs between Unix and Windows, in one place: permission bits, path
//! bytes for the index, creating symlinks, opening files privately, and flushing a
//! filesystem. The rest of the crate calls these functions and stays portable.
//!
//! Windows support is deliberately thin for now: modes map to the read-only attribute and
//! symlinks need the privilege Windows asks for. Nothing here decides *what* to do.

use std::ffi::OsString;
use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

/// Permission bits of a file as datasafe records them (`0o7777` on Unix).
pub fn mode_of(meta: &Metadata) -> u32 {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        meta.permissions().mode() & 0o7777
    }
    #[cfg(not(unix))]
    {
        if meta.permissions().readonly() {
            0o444
        } else {
            0o644
        }
    }
}

/// Sets permission bits on an open file (used on temp files before they are renamed).
pub fn set_mode_file(file: &File, mode: u32) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(mode))
    }
    #[cfg(not(unix))]
    {
        let mut perms = file.metadata()?.permissions();
        perms.set_readonly(mode & 0o200 == 0);
        file.set_permissions(perms)
    }
}

/// Sets permission bits on a path (directories; never follows a final symlink because
/// callers only pass paths they have just checked are directories).
pub fn set_mode_path(path: &Path, mode: u32) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
    }
    #[cfg(not(unix))]
    {
        let mut perms = std::fs::metadata(path)?.permissions();
        perms.set_readonly(mode & 0o200 == 0);
        std::fs::set_permissions(path, perms)
    }
}

/// Creates a new file that nobody else can read while it is being written: exclusive
/// create (never reuses a name, never follows a planted symlink) and mode 0600.
pub fn create_private(path: &Path) -> io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)
}

/// Opens a source file for reading without following a symlink that replaced it since
/// the scan (the scan already decided it was a regular file).
pub fn open_source(path: &Path) -> io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.custom_flags(libc::O_NOFOLLOW);
    }
    opts.open(path)
}

/// Creates a symlink at `link` pointing to `target`, exactly as the source had it.
pub fn symlink(target: &Path, link: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(target, link)
    }
    #[cfg(windows)]
    {
        // Windows needs to know the kind up front; a dangling link becomes a file link.
        let resolved = link.parent().map(|p| p.join(target));
        match resolved.and_then(|p| std::fs::metadata(p).ok()) {
            Some(m) if m.is_dir() => std::os::windows::fs::symlink_dir(target, link),
            _ => std::os::windows::fs::symlink_file(target, link),
        }
    }
}

/// The bytes the index stores for a relative path. Unix paths are bytes already; on
/// Windows the (potentially ill-formed) UTF-16 is stored in its WTF-8 encoding.
pub fn path_to_bytes(path: &Path) -> Vec<u8> {
    path.as_os_str().as_encoded_bytes().to_vec()
}

/// The inverse of [`path_to_bytes`]; `None` if the bytes cannot be a path here (only
/// possible on Windows with a damaged index).
pub fn path_from_bytes(bytes: Vec<u8>) -> Option<PathBuf> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStringExt;
        Some(PathBuf::from(OsString::from_vec(bytes)))
    }
    #[cfg(not(unix))]
    {
        String::from_utf8(bytes).ok().map(PathBuf::from)
    }
}

/// Identity of a file (device and inode) to recognise the same directory under two
/// spellings, and to tell whether a source file was replaced during a copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileId(u64, u64);

/// The identity of the file `meta` describes.
pub fn file_id(meta: &Metadata) -> FileId {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        FileId(meta.dev(), meta.ino())
    }
    #[cfg(not(unix))]
    {
        // No stable identity without opening the file; size and times catch replacement.
        let _ = meta;
        FileId(0, 0)
    }
}

/// The inode number of the file `meta` describes (0 where there is none).
pub fn inode(meta: &Metadata) -> u64 {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        meta.ino()
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        0
    }
}

/// False if the filesystem holding `path` may not keep what a Unix filesystem keeps:
/// a file's inode number while it is unchanged (FAT and exFAT number inodes as they are
/// read into memory; FUSE and SMB mounts may do the same) and the permission bits set
/// on it. Then neither says anything about a file replaced behind datasafe's back.
pub fn keeps_unix_metadata(path: &Path) -> bool {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::ffi::OsStrExt;
        let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
            return false;
        };
        let mut buf = std::mem::MaybeUninit::<libc::statfs>::uninit();
        // SAFETY: a valid C string and a buffer of the right type; read only on success.
        if unsafe { libc::statfs(c_path.as_ptr(), buf.as_mut_ptr()) } != 0 {
            return false;
        }
        // SAFETY: statfs succeeded, so the buffer is filled.
        let kind = unsafe { buf.assume_init() }.f_type as u64;
        const UNSTABLE: [u64; 6] = [
            0x4d44,      // MSDOS (FAT)
            0x2011_bab0, // exFAT
            0x6573_5546, // FUSE
            0x517b,      // SMB
            0xff53_4d42, // CIFS
            0xfe53_4d42, // SMB2
        ];
        !UNSTABLE.contains(&kind)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = path;
        cfg!(unix)
    }
}

/// True for FIFOs, sockets and device nodes: things a mirror cannot copy.
pub fn is_special(meta: &Metadata) -> bool {
    let ft = meta.file_type();
    !(ft.is_file() || ft.is_dir() || ft.is_symlink())
}

/// Makes everything written to the filesystem holding `dir` durable, once, instead of an
/// fsync per file: `syncfs(2)` on Linux, `fsync` of the directory elsewhere.
pub fn sync_filesystem(dir: &Path) -> io::Result<()> {
    let handle = File::open(dir)?;
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: syncfs only reads the descriptor, which `handle` keeps open.
        if unsafe { libc::syncfs(handle.as_raw_fd()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        handle.sync_all()
    }
}

/// Starts writing `file`'s dirty pages to disk without waiting for them (Linux:
/// `sync_file_range(SYNC_FILE_RANGE_WRITE)`; elsewhere nothing), so a final `fsync` of
/// a long file written in one go has little left to wait for.
pub fn start_writeback(file: &File) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: sync_file_range only reads the descriptor, which `file` keeps open;
        // a failure only means the final fsync does all the work.
        unsafe {
            libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = file;
}

/// Makes a rename or unlink in `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// True if the error means the disk (or quota) is full.
pub fn is_no_space(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// The kernel's limit on watched folders per user (`fs.inotify.max_user_watches`), where
/// there is one.
pub fn watch_limit() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        std::fs::read_to_string("/proc/sys/fs/inotify/max_user_watches")
            .ok()?
            .trim()
            .parse()
            .ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// Gives memory freed after a big reconcile back to the OS, so an idle watcher stays
/// small (glibc keeps freed heap otherwise).
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Caps glibc's malloc arenas for a long-running process. Every thread that allocates
/// gets an arena of its own (up to 8 per core), and the worker threads started for each
/// batch of events leave freed memory spread over them: a watcher under steady churn
/// grew from 13 to 55 MiB that way in the soak test. Two arenas are plenty for a
/// process whose threads mostly wait on disks.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before the threads start.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// True if a process with this pid exists (used to tell a live watcher's status file
/// from one a killed watcher left behind).
pub fn process_alive(pid: u32) -> bool {
    #[cfg(unix)]
    {
        let Ok(pid) = libc::pid_t::try_from(pid) else {
            return false;
        };
        // SAFETY: signal 0 only checks that the process exists and may be signalled.
        let r = unsafe { libc::kill(pid, 0) };
        r == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        true
    }
}

/// What stands at a path below a root, found without following any symlink.
#[derive(Debug)]
pub enum Beneath {
    /// A regular file, open for reading.
    File(File),
    /// A directory.
    Dir,
    /// A symlink, with its target exactly as stored.
    Symlink(PathBuf),
    /// A FIFO, socket or device node (never opened: a FIFO would block).
    Special,
}

/// Why [`look_beneath`] found nothing usable, and where.
#[derive(Debug)]
pub struct BeneathError {
    /// What the OS said.
    pub error: io::Error,
    /// True if a folder on the way failed (missing, not a folder, a symlink, unreadable),
    /// false if the last component did.
    pub on_the_way: bool,
}

/// Looks at `rel` below `root` without following a symlink anywhere below `root` (the
/// root itself may be a link the user gave): every folder on the way is opened with
/// `O_DIRECTORY | O_NOFOLLOW` relative to the one before, and the last component is
/// inspected with `fstatat(AT_SYMLINK_NOFOLLOW)` and opened with `O_NOFOLLOW`, so a
/// link planted in a mirror is reported, never read through. `rel` must be a plain
/// relative path (`..` or an absolute path is refused: an index could be tampered with).
pub fn look_beneath(root: &Path, rel: &Path) -> Result<Beneath, BeneathError> {
    use std::path::Component;
    let last = |error| BeneathError {
        error,
        on_the_way: false,
    };
    let mut names = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(name) => names.push(name),
            Component::CurDir => {}
            _ => {
                return Err(last(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "not a plain relative path",
                )));
            }
        }
    }
    #[cfg(unix)]
    {
        unix_beneath::look(root, &names)
    }
    #[cfg(not(unix))]
    {
        // Windows support is thin (see the top of this file): only the last component is
        // checked for being a link.
        let path = names.iter().fold(root.to_path_buf(), |p, n| p.join(n));
        let meta = std::fs::symlink_metadata(&path).map_err(last)?;
        let ft = meta.file_type();
        if ft.is_symlink() {
            std::fs::read_link(&path)
                .map(Beneath::Symlink)
                .map_err(last)
        } else if ft.is_dir() {
            Ok(Beneath::Dir)
        } else if ft.is_file() {
            File::open(&path).map(Beneath::File).map_err(last)
        } else {
            Ok(Beneath::Special)
        }
    }
}

#[cfg(unix)]
mod unix_beneath {
    use super::{Beneath, BeneathError};
    use std::ffi::{CString, OsStr};
    use std::fs::File;
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    use std::path::{Path, PathBuf};

    pub(super) fn look(root: &Path, names: &[&OsStr]) -> Result<Beneath, BeneathError> {
        let way = |error| BeneathError {
            error,
            on_the_way: true,
        };
        let last = |error| BeneathError {
            error,
            on_the_way: false,
        };
        let Some((name, folders)) = names.split_last() else {
            return Ok(Beneath::Dir);
        };
        let mut dir: OwnedFd = File::open(root).map_err(way)?.into();
        for folder in folders {
            let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
            dir = openat(&dir, folder, flags).map_err(way)?;
        }
        let c_name = c_name(name).map_err(last)?;
        let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: `dir` is an open descriptor, `c_name` a NUL-terminated string, and
        // `stat` points to writable memory of the right size.
        let r = unsafe {
            libc::fstatat(
                dir.as_raw_fd(),
                c_name.as_ptr(),
                stat.as_mut_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if r != 0 {
            return Err(last(io::Error::last_os_error()));
        }
        // SAFETY: fstatat succeeded, so it filled `stat` in.
        let mode = unsafe { stat.assume_init() }.st_mode & libc::S_IFMT;
        if mode == libc::S_IFREG {
            // O_NONBLOCK: should the file be swapped for a FIFO after the fstatat, the
            // open must not hang; it has no effect on reading a regular file.
            let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;
            openat(&dir, name, flags).map(|fd| Beneath::File(File::from(fd)))
        } else if mode == libc::S_IFDIR {
            Ok(Beneath::Dir)
        } else if mode == libc::S_IFLNK {
            read_link_at(&dir, &c_name).map(Beneath::Symlink)
        } else {
            Ok(Beneath::Special)
        }
        .map_err(last)
    }

    fn c_name(name: &OsStr) -> io::Result<CString> {
        CString::new(name.as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a name holds a NUL byte"))
    }

    fn openat(dir: &OwnedFd, name: &OsStr, flags: libc::c_int) -> io::Result<OwnedFd> {
        let c_name = c_name(name)?;
        // SAFETY: `dir` is an open descriptor and `c_name` a NUL-terminated string.
        let fd = unsafe { libc::openat(dir.as_raw_fd(), c_name.as_ptr(), flags) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: openat returned a new descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    fn read_link_at(dir: &OwnedFd, c_name: &CString) -> io::Result<PathBuf> {
        let mut buf = vec![0u8; 256];
        loop {
            // SAFETY: `buf` is writable for `buf.len()` bytes; readlinkat writes at most
            // that many and returns how many it wrote.
            let n = unsafe {
                libc::readlinkat(
                    dir.as_raw_fd(),
                    c_name.as_ptr(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                )
            };
            let Ok(n) = usize::try_from(n) else {
                return Err(io::Error::last_os_error());
            };
            if n < buf.len() {
                buf.truncate(n);
                return Ok(PathBuf::from(std::ffi::OsString::from_vec(buf)));
            }
            // The target may have been cut short: try again with room to spare.
            buf.resize(buf.len() * 4, 0);
        }
    }
}

/// A `file:` URI for `path`, every byte that is not unreserved percent-encoded (SQLite
/// reads options such as `immutable=1` only from a URI).
pub fn file_uri(path: &Path) -> String {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let bytes = absolute.as_os_str().as_encoded_bytes();
    let mut uri = String::from("file:");
    #[cfg(windows)]
    uri.push('/');
    for &b in bytes {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                uri.push(char::from(b));
            }
            #[cfg(windows)]
            b'\\' => uri.push('/'),
            _ => uri.push_str(&format!("%{b:02X}")),
        }
    }
    uri
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn look_beneath_never_follows_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("real/sub")).unwrap();
        std::fs::write(root.join("real/sub/f"), "x").unwrap();
        std::os::unix::fs::symlink("real", root.join("link")).unwrap();
        std::os::unix::fs::symlink("sub/f", root.join("real/lf")).unwrap();

        assert!(matches!(
            look_beneath(root, Path::new("real/sub/f")),
            Ok(Beneath::File(_))
        ));
        assert!(matches!(
            look_beneath(root, Path::new("real/sub")),
            Ok(Beneath::Dir)
        ));
        assert!(matches!(
            look_beneath(root, Path::new("")),
            Ok(Beneath::Dir)
        ));
        match look_beneath(root, Path::new("real/lf")) {
            Ok(Beneath::Symlink(t)) => assert_eq!(t, Path::new("sub/f")),
            other => panic!("{other:?}"),
        }
        let through = look_beneath(root, Path::new("link/sub/f")).unwrap_err();
        assert!(through.on_the_way, "{through:?}");
        let gone = look_beneath(root, Path::new("real/nope")).unwrap_err();
        assert!(!gone.on_the_way && gone.error.kind() == io::ErrorKind::NotFound);
        assert!(look_beneath(root, Path::new("../x")).is_err());
        assert!(look_beneath(root, Path::new("/etc/passwd")).is_err());
    }

    #[test]
    fn file_uris_escape_everything_but_unreserved_bytes() {
        use std::os::unix::ffi::OsStrExt;
        let p = Path::new(std::ffi::OsStr::from_bytes(b"/a b/c?d#e%\xff/x.db"));
        assert_eq!(file_uri(p), "file:/a%20b/c%3Fd%23e%25%FF/x.db");
    }
}
