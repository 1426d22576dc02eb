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

/// Gives an open file (a temp file before it is renamed) to `owner`.
pub fn set_owner_file(file: &File, owner: crate::model::Owner) -> io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::fchown(file, Some(owner.uid), Some(owner.gid))
    }
    #[cfg(not(unix))]
    {
        let _ = (file, owner);
        Err(io::ErrorKind::Unsupported.into())
    }
}

/// Sets extended attributes on an open file (a new temp file, which has none).
pub fn set_xattrs_file(file: &File, xattrs: &crate::model::Xattrs) -> io::Result<()> {
    #[cfg(unix)]
    {
        use xattr::FileExt;
        for (name, value) in &xattrs.0 {
            file.set_xattr(name, value)?;
        }
        Ok(())
    }
    #[cfg(not(unix))]
    {
        let _ = (file, xattrs);
        Err(io::ErrorKind::Unsupported.into())
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

/// [`path_from_bytes`] for a name that is not a path (an attribute's name).
pub fn os_string_from_bytes(bytes: Vec<u8>) -> Option<OsString> {
    path_from_bytes(bytes).map(PathBuf::into_os_string)
}

/// True if this process runs as root (`euid` 0): only root can give a file to another
/// owner, so only then are owners mirrored (as rsync's `-o`/`-g`).
pub fn is_root() -> bool {
    #[cfg(unix)]
    {
        rustix::process::geteuid().is_root()
    }
    #[cfg(not(unix))]
    {
        false
    }
}

/// Owner and group of a file (`None` where the platform has no numeric owners).
pub fn owner_of(meta: &Metadata) -> Option<crate::model::Owner> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Some(crate::model::Owner {
            uid: meta.uid(),
            gid: meta.gid(),
        })
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        None
    }
}

/// The name of user `uid` on this machine, if it has one.
pub fn user_name(uid: u32) -> Option<String> {
    #[cfg(unix)]
    {
        uzers::get_user_by_uid(uid).and_then(|u| u.name().to_str().map(str::to_owned))
    }
    #[cfg(not(unix))]
    {
        let _ = uid;
        None
    }
}

/// The name of group `gid` on this machine, if it has one.
pub fn group_name(gid: u32) -> Option<String> {
    #[cfg(unix)]
    {
        uzers::get_group_by_gid(gid).and_then(|g| g.name().to_str().map(str::to_owned))
    }
    #[cfg(not(unix))]
    {
        let _ = gid;
        None
    }
}

/// The number of the user called `name` on this machine, if there is one.
pub fn uid_named(name: &str) -> Option<u32> {
    #[cfg(unix)]
    {
        uzers::get_user_by_name(name).map(|u| u.uid())
    }
    #[cfg(not(unix))]
    {
        let _ = name;
        None
    }
}

/// The number of the group called `name` on this machine, if there is one.
pub fn gid_named(name: &str) -> Option<u32> {
    #[cfg(unix)]
    {
        uzers::get_group_by_name(name).map(|g| g.gid())
    }
    #[cfg(not(unix))]
    {
        let _ = name;
        None
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

/// True if `meta` (an `fstat`) allocates fewer bytes than its size: the file may hold
/// holes worth asking [`seek_data`] about. Always false where the system does not say.
pub fn may_have_holes(meta: &Metadata) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        meta.blocks().saturating_mul(512) < meta.len()
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        false
    }
}

/// Where the next data at or after `from` starts in `file` (`lseek(SEEK_DATA)`); `None`
/// if only a hole (or nothing) is left. `Unsupported` where the system cannot tell
/// (the caller reads the whole file). Moves the file's offset.
pub fn seek_data(file: &File, from: u64) -> io::Result<Option<u64>> {
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
    {
        match lseek(file, from, libc::SEEK_DATA) {
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => Ok(None),
            other => other.map(Some),
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
    {
        let _ = (file, from);
        Err(io::ErrorKind::Unsupported.into())
    }
}

/// Where the hole after the data at `from` starts in `file` (`lseek(SEEK_HOLE)`; the
/// end of the file counts as one). Moves the file's offset.
pub fn seek_hole(file: &File, from: u64) -> io::Result<u64> {
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
    {
        lseek(file, from, libc::SEEK_HOLE)
    }
    #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
    {
        let _ = (file, from);
        Err(io::ErrorKind::Unsupported.into())
    }
}

#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
fn lseek(file: &File, from: u64, whence: libc::c_int) -> io::Result<u64> {
    use std::os::fd::AsRawFd;
    let from =
        libc::off_t::try_from(from).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: lseek only reads the descriptor, which `file` keeps open.
    let at = unsafe { libc::lseek(file.as_raw_fd(), from, whence) };
    u64::try_from(at).map_err(|_| io::Error::last_os_error())
}

/// True if the error means the disk (or quota) is full.
pub fn is_no_space(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// True if `errno` says the filesystem does not do what was asked (`ENOTSUP`,
/// `EOPNOTSUPP`: extended attributes on a filesystem without them).
pub fn is_not_supported(errno: i32) -> bool {
    #[cfg(unix)]
    {
        errno == libc::ENOTSUP || errno == libc::EOPNOTSUPP
    }
    #[cfg(not(unix))]
    {
        let _ = errno;
        false
    }
}

/// True if the OS refused a path for its length (`ENAMETOOLONG`).
pub fn is_name_too_long(err: &io::Error) -> bool {
    #[cfg(unix)]
    {
        err.raw_os_error() == Some(libc::ENAMETOOLONG)
    }
    #[cfg(not(unix))]
    {
        err.kind() == io::ErrorKind::InvalidFilename
    }
}

/// The bytes an unprivileged writer may still use on the filesystem holding `path`, if
/// `statvfs` tells.
pub fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs fills the zeroed struct it is given; the path is NUL-terminated.
    let mut buf: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut buf) } != 0 {
        return None;
    }
    #[allow(clippy::useless_conversion)]
    Some(u64::from(buf.f_bavail).saturating_mul(u64::from(buf.f_frsize)))
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

/// This machine's name (who holds a remote mirror's lock).
pub fn hostname() -> String {
    #[cfg(unix)]
    {
        let mut buf = [0u8; 256];
        // SAFETY: the buffer is valid for its length; the name is NUL-terminated within it.
        let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
        if rc == 0 {
            let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            return String::from_utf8_lossy(&buf[..end]).into_owned();
        }
    }
    std::env::var("COMPUTERNAME").unwrap_or_else(|_| "localhost".to_string())
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

/// The signals that ask datasafe to stop cleanly: Ctrl-C (SIGINT), SIGTERM and SIGHUP.
#[cfg(unix)]
const STOP_SIGNALS: [i32; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// Runs `handler` with the signal's number, on a thread of its own, for every SIGINT,
/// SIGTERM or SIGHUP (on Windows: Ctrl-C, as SIGINT's number 2). Call it once.
pub fn on_stop_signals(handler: impl Fn(i32) + Send + 'static) -> io::Result<()> {
    #[cfg(unix)]
    {
        stop_signals::install(Box::new(handler))
    }
    #[cfg(not(unix))]
    {
        ctrlc::set_handler(move || handler(2)).map_err(io::Error::other)
    }
}

/// Ends the process by `signal` with the default action, as if it had never been
/// caught, so a parent (a shell loop, `xargs`, systemd) sees a process killed by it
/// and stops too. Falls back to exit code 128 + `signal`.
pub fn die_by_signal(signal: i32) -> ! {
    #[cfg(unix)]
    // SAFETY: plain libc calls on a local, zeroed signal set; nothing is left borrowed.
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, signal);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(signal);
    }
    std::process::exit(128 + signal)
}

/// The self-pipe behind [`on_stop_signals`]: the signal handler only writes the
/// signal's number into a pipe (all a handler may safely do); a thread reads it and
/// calls the real handler.
#[cfg(unix)]
mod stop_signals {
    use std::fs::File;
    use std::io::{self, Read};
    use std::os::fd::FromRawFd;
    use std::sync::atomic::{AtomicI32, Ordering};

    /// The pipe's write end, for the signal handler.
    static WRITE_END: AtomicI32 = AtomicI32::new(-1);

    extern "C" fn note(signal: libc::c_int) {
        let byte = signal as u8;
        // SAFETY: write(2) is async-signal-safe; the byte lives for the call. A full pipe
        // (non-blocking) drops the byte: enough signals are already waiting.
        unsafe {
            libc::write(
                WRITE_END.load(Ordering::Relaxed),
                (&raw const byte).cast(),
                1,
            );
        }
    }

    pub(super) fn install(handler: Box<dyn Fn(i32) + Send>) -> io::Result<()> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` has room for the two descriptors pipe(2) writes.
        if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fcntl on descriptors this function just created.
        unsafe {
            for fd in fds {
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            }
            libc::fcntl(fds[1], libc::F_SETFL, libc::O_NONBLOCK);
        }
        // SAFETY: the read end is ours alone from here on.
        let mut read_end = unsafe { File::from_raw_fd(fds[0]) };
        WRITE_END.store(fds[1], Ordering::Relaxed);
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                let mut byte = [0u8];
                loop {
                    match read_end.read(&mut byte) {
                        Ok(1) => handler(i32::from(byte[0])),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        _ => return,
                    }
                }
            })?;
        for signal in super::STOP_SIGNALS {
            // A signal ignored when datasafe started stays ignored, as for any Unix tool:
            // `datasafe watch … &` in a script must outlive a Ctrl-C meant for the
            // foreground job, and `nohup` must keep working.
            // SAFETY: sigaction only fills the zeroed struct it is given.
            let ignored = unsafe {
                let mut old: libc::sigaction = std::mem::zeroed();
                libc::sigaction(signal, std::ptr::null(), &mut old) == 0
                    && old.sa_sigaction == libc::SIG_IGN
            };
            if ignored {
                continue;
            }
            // SAFETY: a zeroed sigaction with an empty mask, SA_RESTART (so no other
            // call sees EINTR) and a handler that is async-signal-safe.
            let ok = unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = note as extern "C" fn(libc::c_int) as libc::sighandler_t;
                action.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut action.sa_mask);
                libc::sigaction(signal, &action, std::ptr::null_mut()) == 0
            };
            if !ok {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

/// The identity of a folder as a mount point would change it: its inode and the
/// filesystem id `statfs` gives (derived from the UUID on ext4, random per mount on
/// tmpfs), or the device where there is no filesystem id. So the same drive plugged in
/// again is the same (even on another device node), while another filesystem mounted
/// there, or the folder deleted and made again, is not. ext4 gives a folder made again
/// at once the inode number the deleted one had, so its birth time (where the
/// filesystem keeps one) tells the two apart.
#[derive(Clone, Copy, Debug, Eq)]
pub struct RootId {
    dev: u64,
    ino: u64,
    fsid: [u64; 2],
    born: Option<std::time::SystemTime>,
}

impl PartialEq for RootId {
    fn eq(&self, other: &RootId) -> bool {
        let no_fsid = [0, 0];
        let born_same = match (self.born, other.born) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        born_same
            && if self.fsid != no_fsid && other.fsid != no_fsid {
                self.fsid == other.fsid && self.ino == other.ino
            } else {
                self.dev == other.dev && self.ino == other.ino
            }
    }
}

/// The identity of the folder at `path` (followed if it is a link, like the source root).
pub fn root_id(path: &Path) -> io::Result<RootId> {
    let meta = std::fs::metadata(path)?;
    let FileId(dev, ino) = file_id(&meta);
    Ok(RootId {
        dev,
        ino,
        fsid: fs_id(path)?,
        born: meta.created().ok(),
    })
}

/// The filesystem id of the filesystem holding `path` (zeros where there is none).
fn fs_id(path: &Path) -> io::Result<[u64; 2]> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::ffi::OsStrExt;
        let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: statfs fills the zeroed struct it is given; the path is NUL-terminated.
        let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statfs(c_path.as_ptr(), &mut buf) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // `fsid_t` is opaque in libc; its two ints are read through its bytes.
        // SAFETY: fsid_t is two c_ints, plain data.
        let raw: [libc::c_int; 2] = unsafe { std::mem::transmute(buf.f_fsid) };
        Ok([raw[0] as u32 as u64, raw[1] as u32 as u64])
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = path;
        Ok([0, 0])
    }
}

/// Set by the release signal (SIGUSR1), taken by the watcher's loop.
#[cfg(unix)]
static RELEASE_ASKED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[cfg(unix)]
extern "C" fn on_release_signal(_: libc::c_int) {
    // Only an atomic store: all a signal handler may safely do here.
    RELEASE_ASKED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// The signal `datasafe release` sends a watcher (`kill -USR1 PID` does the same).
#[cfg(unix)]
pub const RELEASE_SIGNAL: libc::c_int = libc::SIGUSR1;

/// Makes the release signal (SIGUSR1) ask for a release instead of ending the process.
pub fn catch_release_signal() {
    #[cfg(unix)]
    // SAFETY: the handler only stores to an atomic; SA_RESTART keeps system calls going.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_release_signal as extern "C" fn(libc::c_int) as usize;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(RELEASE_SIGNAL, &action, std::ptr::null_mut());
    }
}

/// True (once) if the release signal arrived since the last call.
pub fn release_asked() -> bool {
    #[cfg(unix)]
    {
        RELEASE_ASKED.swap(false, std::sync::atomic::Ordering::SeqCst)
    }
    #[cfg(not(unix))]
    {
        false
    }
}

/// Sends the release signal to process `pid`.
pub fn send_release(pid: u32) -> io::Result<()> {
    #[cfg(unix)]
    {
        let pid =
            libc::pid_t::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: kill only sends a signal.
        if unsafe { libc::kill(pid, RELEASE_SIGNAL) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        Err(io::Error::from(io::ErrorKind::Unsupported))
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
    fn a_folder_made_again_is_another_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("r");
        std::fs::create_dir(&root).unwrap();
        let first = root_id(&root).unwrap();
        assert_eq!(first, root_id(&root).unwrap());
        // Keep the old inode alive, so the new folder cannot reuse its number.
        let away = dir.path().join("away");
        std::fs::rename(&root, &away).unwrap();
        std::fs::create_dir(&root).unwrap();
        assert_ne!(first, root_id(&root).unwrap());
        assert_eq!(first, root_id(&away).unwrap());
        // Deleted and made again (ext4 hands out the freed inode number again).
        let before = root_id(&root).unwrap();
        std::fs::remove_dir(&root).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(10));
        std::fs::create_dir(&root).unwrap();
        if before.born.is_some() {
            assert_ne!(before, root_id(&root).unwrap());
        }
        let on_another_device = RootId {
            dev: first.dev + 1,
            ..first
        };
        if first.fsid != [0, 0] {
            assert_eq!(first, on_another_device, "the same filesystem id and inode");
        } else {
            assert_ne!(first, on_another_device);
        }
    }

    #[test]
    fn file_uris_escape_everything_but_unreserved_bytes() {
        use std::os::unix::ffi::OsStrExt;
        let p = Path::new(std::ffi::OsStr::from_bytes(b"/a b/c?d#e%\xff/x.db"));
        assert_eq!(file_uri(p), "file:/a%20b/c%3Fd%23e%25%FF/x.db");
    }
}
