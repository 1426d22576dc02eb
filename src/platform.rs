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
