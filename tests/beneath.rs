//! Issue 12, part 3: the local store works through directory handles, never a whole path
//! resolved again. Two threats, both driven through the binary:
//!
//! - A folder in the mirror owned by an unprivileged user, who swaps a folder inside it
//!   for a symlink to a folder outside DST and back, in a tight loop, while a root `sync`
//!   or `watch` writes, deletes, chmods, sets times and makes symlinks under it (the class
//!   of rsync's CVE-2024-12087/12088). Afterwards nothing outside DST may have changed: the
//!   canary tree the symlink points to keeps its names, contents, modes, owners and mtimes,
//!   and nothing appears beside it. These tests need root and skip with a printed reason
//!   otherwise.
//! - A path longer than PATH_MAX (50 folders of 120-byte names, 6,000+ bytes): it mirrors,
//!   verifies, restores, archives (zip and tar.zst, the full name in the entry) and is
//!   watched. The tests never hand std a path over PATH_MAX: they build, walk and read
//!   such trees through open folders, reached as `/proc/self/fd/N/NAME`.
//!
//! The user owns `DST/victim` (as a user owns their folder in a root backup of `/home`)
//! and swaps `DST/victim/d`, a folder inside it, where datasafe has much to do: renaming
//! `victim` itself would need write access to DST, which the user does not have.
//!
//! The swapper is a forked child that closes every inherited descriptor (other tests'
//! pipes and locks live in this process too), drops to uid 65534 with raw syscalls (only
//! that child; the test process keeps its uid) and only then opens the user's folder: every
//! swap is done with that user's rights. It exchanges the two names with one
//! `renameat2(RENAME_EXCHANGE)`, so the folder is always either the real one or the link.

use crate::common;

use common::faults::{NOBODY, chown_tree, env_for_nobody};
use common::watcher::{DEADLINE, Watcher, shared, wait_until};
use common::*;
use std::collections::BTreeMap;
use std::ffi::{CString, OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------
// The symlink race
// ---------------------------------------------------------------------------------------

/// How long one race test may go on before it stops (passing if the canary held).
const RACE_BUDGET: Duration = Duration::from_secs(20);
/// Rounds of changes per race test; each one gives datasafe all the kinds of work below.
const RACE_ROUNDS: usize = 3;
/// Per round: files created under the swapped folder (each one a rename into it).
const NEW_FILES: usize = 200;
/// Files in the swapped folder at the start; per round a slice of them is deleted,
/// chmodded, given a new mtime, and rewritten.
const OLD_FILES: usize = 300;
/// Per round: symlinks created under the swapped folder.
const NEW_LINKS: usize = 30;
/// Folders with files, one deleted per round (a whole-tree delete under the swap).
const GONE_DIRS: usize = RACE_ROUNDS;
/// Folders whose mode and mtime change every round (the folder metadata pass).
const META_DIRS: usize = 20;
/// How long a watch round waits for the watcher to report the round's last change.
const ROUND_WAIT: Duration = Duration::from_secs(5);
/// The deadline for one `sync` run under the swap.
const SYNC_LIMIT: Duration = Duration::from_secs(60);

/// The user's folder in SRC and DST, and inside it the folder that gets swapped.
const VICTIM: &str = "victim";
const SWAPPED: &str = "d";

/// The source tree under `SRC/victim/d` before the race.
fn plant_victim(env: &TestEnv) {
    let d = env.src.join(VICTIM).join(SWAPPED);
    for i in 0..OLD_FILES {
        env.write(d.join(format!("o{i:04}")), format!("old {i}\n"));
    }
    for g in 0..GONE_DIRS {
        for i in 0..5 {
            env.write(d.join(format!("gone{g}/f{i}")), format!("gone {g} {i}\n"));
        }
    }
    for m in 0..META_DIRS {
        env.write(d.join(format!("meta{m}/f")), format!("meta {m}\n"));
    }
    env.write(
        Path::new(VICTIM).join("beside.txt"),
        "beside the swapped folder\n",
    );
}

/// Round `r`'s changes to `SRC/victim/d`: new files and symlinks, deletions of files and
/// of a folder, chmods, new mtimes and new content of old files, new folder modes.
fn change_victim(env: &TestEnv, r: usize) {
    let d = env.src.join(VICTIM).join(SWAPPED);
    for i in 0..NEW_FILES {
        env.write(d.join(format!("n{r}-{i:04}")), format!("new {r} {i}\n"));
    }
    for i in 0..NEW_LINKS {
        symlink(format!("o{i:04}"), d.join(format!("l{r}-{i:03}"))).unwrap();
    }
    let slice = OLD_FILES / RACE_ROUNDS;
    for i in r * slice..(r + 1) * slice {
        let path = d.join(format!("o{i:04}"));
        match i % 4 {
            0 => fs::remove_file(&path).unwrap(),
            1 => fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap(),
            2 => set_mtime(&path, 1_500_000_000 + i as i64, 0),
            _ => fs::write(&path, format!("rewritten {r} {i}\n")).unwrap(),
        }
    }
    fs::remove_dir_all(d.join(format!("gone{r}"))).unwrap();
    for m in 0..META_DIRS {
        let path = d.join(format!("meta{m}"));
        let mode = [0o700, 0o750, 0o755][(m + r) % 3];
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        set_mtime(&path, 1_400_000_000 + (r * 100 + m) as i64, 0);
    }
}

/// A folder outside DST the swapper points the symlink at, holding the names datasafe
/// works on under the swapped folder (so a redirected delete, chmod or utimes finds
/// something), each with its own content, mode and an old mtime. Root's, as `/etc` is.
fn plant_canary(env: &TestEnv) -> (PathBuf, PathBuf) {
    let outside = env.dir.path().join("outside");
    let canary = outside.join("canary");
    fs::create_dir_all(&canary).unwrap();
    let mirror = env.src.join(VICTIM).join(SWAPPED);
    let mut dirs = vec![canary.clone()];
    for entry in walkdir::WalkDir::new(&mirror).min_depth(1) {
        let entry = entry.unwrap();
        let rel = entry.path().strip_prefix(&mirror).unwrap();
        let path = canary.join(rel);
        if entry.file_type().is_dir() {
            fs::create_dir(&path).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o751)).unwrap();
            dirs.push(path);
        } else {
            fs::write(&path, format!("canary {}\n", rel.display())).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
            set_mtime(&path, 1_000_000_000, 0);
        }
    }
    fs::write(canary.join("only-in-canary"), "canary\n").unwrap();
    set_mtime(&canary.join("only-in-canary"), 1_000_000_000, 0);
    // Folder mtimes last, deepest first: writing into a folder moves its mtime.
    for dir in dirs.iter().rev().chain([&outside]) {
        set_mtime(dir, 1_000_000_000, 0);
    }
    (outside, canary)
}

/// What the race must not change about one path outside DST.
#[derive(PartialEq, Eq)]
struct Seen {
    kind: &'static str,
    mode: u32,
    owner: (u32, u32),
    mtime: (i64, i64),
    /// A file's content, a symlink's target.
    content: Vec<u8>,
}

impl std::fmt::Debug for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} mode {:o} owner {}:{} mtime {}.{:09} content {:?}",
            self.kind,
            self.mode,
            self.owner.0,
            self.owner.1,
            self.mtime.0,
            self.mtime.1,
            String::from_utf8_lossy(&self.content)
        )
    }
}

/// Everything under `root` (itself included) as [`Seen`], symlinks not followed. A path
/// that vanishes under the walk (datasafe may still be moving things) is left out, which
/// shows as a difference.
fn seen_tree(root: &Path) -> BTreeMap<PathBuf, Seen> {
    let mut map = BTreeMap::new();
    for entry in walkdir::WalkDir::new(root).follow_links(false) {
        let Ok(entry) = entry else { continue };
        let Ok(meta) = entry.path().symlink_metadata() else {
            continue;
        };
        let ft = meta.file_type();
        let (kind, content) = if ft.is_symlink() {
            let target = fs::read_link(entry.path()).unwrap_or_default();
            ("symlink", target.into_os_string().into_vec())
        } else if ft.is_dir() {
            ("folder", Vec::new())
        } else {
            ("file", fs::read(entry.path()).unwrap_or_default())
        };
        let rel = entry.path().strip_prefix(root).unwrap().to_path_buf();
        map.insert(
            rel,
            Seen {
                kind,
                mode: meta.mode() & 0o7777,
                owner: (meta.uid(), meta.gid()),
                mtime: (meta.mtime(), meta.mtime_nsec()),
                content,
            },
        );
    }
    map
}

/// Every difference between two [`seen_tree`]s, one line each ("" if none).
fn seen_diff(before: &BTreeMap<PathBuf, Seen>, after: &BTreeMap<PathBuf, Seen>) -> String {
    let mut lines = Vec::new();
    for (path, was) in before {
        match after.get(path) {
            None => lines.push(format!("removed: {}", path.display())),
            Some(now) if now != was => lines.push(format!(
                "changed: {}\n    before {was:?}\n    after  {now:?}",
                path.display()
            )),
            Some(_) => {}
        }
    }
    for path in after.keys().filter(|p| !before.contains_key(*p)) {
        lines.push(format!("created: {}", path.display()));
    }
    let total = lines.len();
    if total > 40 {
        lines.truncate(40);
        lines.push(format!("... and {} more", total - 40));
    }
    if total > 0 {
        let changed = |what: fn(&Seen, &Seen) -> bool| {
            before
                .iter()
                .filter(|(p, was)| after.get(*p).is_some_and(|now| what(was, now)))
                .count()
        };
        lines.insert(
            0,
            format!(
                "{} removed, {} created, {} with a new content or type, {} a new mode, {} a \
                 new owner, {} a new mtime:",
                before.keys().filter(|p| !after.contains_key(*p)).count(),
                after.keys().filter(|p| !before.contains_key(*p)).count(),
                changed(|a, b| a.kind != b.kind || a.content != b.content),
                changed(|a, b| a.mode != b.mode),
                changed(|a, b| a.owner != b.owner),
                changed(|a, b| a.mtime != b.mtime),
            ),
        );
    }
    lines.join("\n")
}

/// The unprivileged user's loop: swaps `DIR/d` with `DIR/lnk` (a symlink to the canary)
/// and back until killed (or until its own deadline, should the test die first).
struct Swapper {
    pid: libc::pid_t,
    /// Completed swaps (there and back), counted by the child in a shared page: a race
    /// that never swapped proves nothing.
    swaps: *const AtomicU64,
}

impl Swapper {
    /// Forks the swapper for the user's folder `dir`, pointing `lnk` at `target`.
    fn start(dir: &Path, target: &Path, limit: Duration) -> Swapper {
        // Everything the child needs is made before the fork: after it, the child calls
        // only async-signal-safe functions (no allocation, no locks, no Rust I/O).
        let dir = CString::new(dir.as_os_str().as_bytes()).unwrap();
        let target = CString::new(target.as_os_str().as_bytes()).unwrap();
        let swapped = CString::new(SWAPPED).unwrap();
        let lnk = CString::new("lnk").unwrap();
        let mut junk: Vec<CString> = (0..4096)
            .map(|n| CString::new(format!("junk{n}")).unwrap())
            .collect();
        junk.shrink_to_fit();
        let limit_ns = limit.as_nanos() as i64;
        let page = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert!(
            page != libc::MAP_FAILED,
            "mmap: {}",
            io::Error::last_os_error()
        );
        // A fresh anonymous mapping is zeroed, and page-aligned for an AtomicU64.
        let swaps = page as *const AtomicU64;
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", io::Error::last_os_error());
        if pid == 0 {
            unsafe { swapper_child(&dir, &target, &swapped, &lnk, &junk, limit_ns, &*swaps) }
        }
        Swapper { pid, swaps }
    }

    /// True while the child runs (false if it could not drop to the user and exited).
    fn alive(&mut self) -> bool {
        if self.pid <= 0 {
            return false;
        }
        let mut status = 0;
        if unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) } == 0 {
            return true;
        }
        eprintln!("the swapper exited: wait status {status}");
        self.pid = 0;
        false
    }

    /// How many times the folder was swapped for the link and back so far.
    fn swaps(&self) -> u64 {
        unsafe { (*self.swaps).load(Ordering::Relaxed) }
    }

    fn stop(&mut self) {
        if self.pid > 0 {
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                let mut status = 0;
                libc::waitpid(self.pid, &mut status, 0);
            }
            self.pid = 0;
        }
    }
}

impl Drop for Swapper {
    fn drop(&mut self) {
        self.stop();
        unsafe { libc::munmap(self.swaps as *mut libc::c_void, 4096) };
    }
}

fn monotonic_ns() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// The forked swapper; never returns. Exit codes 10-13 say which step of dropping to the
/// user failed (the test sees the canary untouched and the swap never happening, so it
/// checks that the swapper is still alive before the run).
unsafe fn swapper_child(
    dir: &CString,
    target: &CString,
    swapped: &CString,
    lnk: &CString,
    junk: &[CString],
    limit_ns: i64,
    swaps: &AtomicU64,
) -> ! {
    unsafe {
        // Other tests' pipes and lock files are open in this process too: holding them
        // would keep their children's output open and their locks taken.
        if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) != 0 {
            for fd in 3..65536 {
                libc::close(fd);
            }
        }
        let id = NOBODY as libc::c_long;
        if libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) != 0 {
            libc::_exit(10);
        }
        if libc::syscall(libc::SYS_setresgid, id, id, id) != 0 {
            libc::_exit(11);
        }
        if libc::syscall(libc::SYS_setresuid, id, id, id) != 0 {
            libc::_exit(12);
        }
        let fd = libc::open(dir.as_ptr(), libc::O_DIRECTORY | libc::O_RDONLY);
        if fd < 0 {
            libc::_exit(13);
        }
        let end = monotonic_ns() + limit_ns;
        let mut next_junk = 0;
        let mut st: libc::stat = std::mem::zeroed();
        loop {
            if monotonic_ns() > end {
                libc::_exit(0);
            }
            // `lnk` must be the symlink. datasafe may have replaced a swapped-in link by a
            // folder of its own, which the swap back then left at `lnk`: put it aside.
            if libc::fstatat(fd, lnk.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) != 0 {
                libc::symlinkat(target.as_ptr(), fd, lnk.as_ptr());
                continue;
            }
            if st.st_mode & libc::S_IFMT != libc::S_IFLNK {
                // `d` gone (datasafe removed the link it found there): the folder is back.
                if libc::fstatat(fd, swapped.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) != 0 {
                    libc::renameat(fd, lnk.as_ptr(), fd, swapped.as_ptr());
                } else if next_junk < junk.len() {
                    libc::renameat(fd, lnk.as_ptr(), fd, junk[next_junk].as_ptr());
                    next_junk += 1;
                } else {
                    libc::_exit(14);
                }
                continue;
            }
            let swap = |fd| {
                libc::renameat2(
                    fd,
                    swapped.as_ptr(),
                    fd,
                    lnk.as_ptr(),
                    libc::RENAME_EXCHANGE,
                )
            };
            if swap(fd) == 0 && swap(fd) == 0 {
                swaps.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Spawns `cmd` with its output in files under the test folder and waits for it with a
/// deadline (killing it and failing after `limit`).
fn run_bounded(
    env: &TestEnv,
    mut cmd: Command,
    tag: &str,
    limit: Duration,
) -> (ExitStatus, String, String) {
    let out = env.dir.path().join(format!("{tag}.stdout"));
    let err = env.dir.path().join(format!("{tag}.stderr"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(File::create(&out).unwrap())
        .stderr(File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let mut status = None;
    let done = wait_until(limit, || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    if !done {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "{tag} did not finish within {limit:?}\n--- stdout\n{}\n--- stderr\n{}",
            common::watcher::read_text(&out),
            common::watcher::read_text(&err)
        );
    }
    (
        status.unwrap(),
        common::watcher::read_text(&out),
        common::watcher::read_text(&err),
    )
}

/// The race's tree: SRC planted, an empty DST, and the canary beside them. `None`
/// (reason printed) if the test cannot run here.
fn race_setup(test: &str) -> Option<(TestEnv, PathBuf, PathBuf)> {
    let env = env_for_nobody(test)?;
    plant_victim(&env);
    // The user's folder is the user's in SRC too: a sync as root gives DST's names their
    // source owners, so a root-owned source folder would take the swapper's folder away.
    chown_tree(&env.src.join(VICTIM), NOBODY);
    let (outside, canary) = plant_canary(&env);
    Some((env, outside, canary))
}

/// Fails, naming every difference, if anything under `outside` differs from `before`.
fn assert_outside_unchanged(outside: &Path, before: &BTreeMap<PathBuf, Seen>, when: &str) {
    let diff = seen_diff(before, &seen_tree(outside));
    assert!(
        diff.is_empty(),
        "{when}: the swapped symlink let datasafe change {} outside DST:\n{diff}",
        outside.display()
    );
}

#[test]
fn a_symlink_swapped_in_during_sync_never_leads_a_write_outside_dst() {
    let started = Instant::now();
    let Some((env, outside, canary)) =
        race_setup("a_symlink_swapped_in_during_sync_never_leads_a_write_outside_dst")
    else {
        return;
    };
    env.sync_ok(&[]);
    assert_mirrored(&env.src, &env.dst, false);
    eprintln!("set up in {:?}", started.elapsed());
    let user_dir = env.dst.join(VICTIM);
    chown_tree(&user_dir, NOBODY);
    let before = seen_tree(&outside);
    let start = Instant::now();
    for r in 0..RACE_ROUNDS {
        if start.elapsed() > RACE_BUDGET {
            eprintln!("race budget spent after {r} of {RACE_ROUNDS} rounds");
            break;
        }
        change_victim(&env, r);
        let mut swapper = Swapper::start(&user_dir, &canary, SYNC_LIMIT * 2);
        let (status, _out, err) = run_bounded(
            &env,
            env.cmd([OsStr::new("sync"), env.src.as_os_str(), env.dst.as_os_str()]),
            &format!("sync{r}"),
            SYNC_LIMIT,
        );
        let alive = swapper.alive();
        swapper.stop();
        eprintln!(
            "round {r}: sync {status} after {:?}, {} lines on stderr, {} swaps",
            start.elapsed(),
            err.lines().count(),
            swapper.swaps()
        );
        assert_outside_unchanged(
            &outside,
            &before,
            &format!("round {r} of {RACE_ROUNDS} (sync)"),
        );
        assert!(
            alive,
            "the swapper had stopped before the sync ended (it could not drop to uid {NOBODY}?)"
        );
        assert!(swapper.swaps() > 0, "the swapper never swapped the folder");
    }
}

#[test]
fn a_symlink_swapped_in_while_watching_never_leads_a_write_outside_dst() {
    let Some((env, outside, canary)) =
        race_setup("a_symlink_swapped_in_while_watching_never_leads_a_write_outside_dst")
    else {
        return;
    };
    let _lock = shared();
    let w = Watcher::ready(&env, &[], "w");
    w.wait_mirrored(&env.src, &env.dst, false);
    let user_dir = env.dst.join(VICTIM);
    chown_tree(&user_dir, NOBODY);
    let before = seen_tree(&outside);
    let start = Instant::now();
    let mut swapper = Swapper::start(&user_dir, &canary, RACE_BUDGET * 3);
    for r in 0..RACE_ROUNDS {
        if start.elapsed() > RACE_BUDGET {
            eprintln!("race budget spent after {r} of {RACE_ROUNDS} rounds");
            break;
        }
        change_victim(&env, r);
        // Last in the round: once the watcher has reported it, it has planned the rest.
        // Under the swap a write may fail naming only the swapped folder, so the marker is
        // waited for a while but not required: the assertion is about the canary.
        let marker = format!("zz-marker-{r}");
        env.write(Path::new(VICTIM).join(SWAPPED).join(&marker), "marker\n");
        let reported = wait_until(ROUND_WAIT, || {
            w.stdout().contains(&marker)
                || w.stderr().contains(&marker)
                || seen_tree(&outside) != before
        });
        if !reported {
            eprintln!("round {r}: the watcher did not report {marker} within {ROUND_WAIT:?}");
        }
        eprintln!(
            "round {r}: done after {:?}, {} swaps so far",
            start.elapsed(),
            swapper.swaps()
        );
        assert_outside_unchanged(
            &outside,
            &before,
            &format!("round {r} of {RACE_ROUNDS} (watch)"),
        );
        assert!(
            swapper.alive(),
            "the swapper stopped (it could not drop to uid {NOBODY}?)"
        );
    }
    swapper.stop();
    assert_outside_unchanged(&outside, &before, "after the watch race");
    assert!(swapper.swaps() > 0, "the swapper never swapped the folder");
}

// ---------------------------------------------------------------------------------------
// Paths longer than PATH_MAX
// ---------------------------------------------------------------------------------------

/// Folders on the way to the bottom, and the length of each one's name.
const LEVELS: usize = 50;
const NAME_LEN: usize = 120;

/// The name of the folder at `level` (exactly [`NAME_LEN`] bytes).
fn level_name(level: usize) -> OsString {
    let head = format!("{level:02}-");
    OsString::from(format!("{head}{}", "n".repeat(NAME_LEN - head.len())))
}

/// The path of the bottom folder, relative to the tree's root.
fn bottom_rel() -> PathBuf {
    (0..LEVELS).map(level_name).collect()
}

/// An open folder, reached for path operations as `/proc/self/fd/N/NAME`: a short path
/// resolved from the folder itself, however long its real path is.
struct Dir(File);

impl Dir {
    fn open(path: &Path) -> io::Result<Dir> {
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(path)
            .map(Dir)
    }

    /// `NAME` inside this folder as a short path.
    fn at(&self, name: impl AsRef<OsStr>) -> PathBuf {
        Path::new(&format!("/proc/self/fd/{}", self.0.as_raw_fd())).join(name.as_ref())
    }

    fn sub(&self, name: impl AsRef<OsStr>) -> io::Result<Dir> {
        Dir::open(&self.at(name))
    }

    /// The folder `rel` below this one, opened folder by folder.
    fn walk(&self, rel: &Path) -> io::Result<Dir> {
        let mut dir = Dir::open(&self.at("."))?;
        for part in rel.iter() {
            dir = dir.sub(part)?;
        }
        Ok(dir)
    }

    fn mkdir(&self, name: impl AsRef<OsStr>) -> Dir {
        let path = self.at(name);
        fs::create_dir(&path).unwrap();
        Dir::open(&path).unwrap()
    }

    fn write(&self, name: &str, content: &[u8], mode: u32, mtime: i64) {
        let path = self.at(name);
        fs::write(&path, content).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        set_mtime(&path, mtime, 0);
    }
}

/// SRC's deep tree: 50 folders of 120-byte names, a file every ten levels on the way, and
/// at the bottom a file and a symlink to it. Returns the bottom file's path below SRC.
fn plant_long_tree(src: &Path) -> PathBuf {
    let mut dir = Dir::open(src).unwrap();
    for level in 0..LEVELS {
        if level % 10 == 5 {
            let name = format!("on-the-way-{level}.txt");
            dir.write(
                &name,
                format!("level {level}\n").as_bytes(),
                0o640,
                1_600_000_000,
            );
        }
        dir = dir.mkdir(level_name(level));
    }
    dir.write("bottom.txt", b"at the bottom\n", 0o600, 1_600_000_123);
    symlink("bottom.txt", dir.at("link")).unwrap();
    set_mtime(&dir.at("link"), 1_600_000_456, 0);
    let rel = bottom_rel().join("bottom.txt");
    assert!(
        src.join(&rel).as_os_str().len() > 6000,
        "the bottom file's path is over 6,000 bytes"
    );
    rel
}

/// Like [`snapshot`] (`.datasafe` left out, plain files), but walked through open folders
/// so that paths over PATH_MAX are read too.
fn long_snapshot(root: &Path) -> BTreeMap<PathBuf, Node> {
    fn walk(dir: &Dir, rel: &Path, map: &mut BTreeMap<PathBuf, Node>) {
        let mut names: Vec<OsString> = fs::read_dir(dir.at("."))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for name in names {
            if rel.as_os_str().is_empty() && name == ".datasafe" {
                continue;
            }
            let path = dir.at(&name);
            let meta = path.symlink_metadata().unwrap();
            let mtime = (meta.mtime(), meta.mtime_nsec() as u32);
            let mode = meta.permissions().mode() & 0o7777;
            let node = if meta.file_type().is_symlink() {
                Node::Link {
                    target: fs::read_link(&path).unwrap(),
                    mtime,
                }
            } else if meta.is_dir() {
                walk(&dir.sub(&name).unwrap(), &rel.join(&name), map);
                Node::Dir { mode }
            } else {
                Node::File {
                    content: fs::read(&path).unwrap(),
                    mode,
                    mtime,
                }
            };
            map.insert(rel.join(&name), node);
        }
    }
    let mut map = BTreeMap::new();
    walk(&Dir::open(root).unwrap(), Path::new(""), &mut map);
    map
}

/// A long path for a message: its depth and its last name.
fn short(path: &Path) -> String {
    format!(
        "{} ({} bytes)",
        shorten(&path.to_string_lossy()),
        path.as_os_str().len()
    )
}

/// Asserts that `b` holds what `a` holds (through open folders), listing differences.
fn assert_long_same(a: &Path, b: &Path, what: &str) {
    let a_map = long_snapshot(a);
    let b_map = long_snapshot(b);
    if a_map == b_map {
        return;
    }
    let mut diff = String::new();
    for (k, v) in &a_map {
        match b_map.get(k) {
            None => diff.push_str(&format!("missing: {}\n", short(k))),
            Some(w) if w != v => {
                diff.push_str(&format!("differs: {}\n  {v:?}\n  {w:?}\n", short(k)))
            }
            _ => {}
        }
    }
    for k in b_map.keys().filter(|k| !a_map.contains_key(*k)) {
        diff.push_str(&format!("extra: {}\n", short(k)));
    }
    panic!("{what}:\n{diff}");
}

/// The file `rel` below `root`, read through open folders (`None` if it is not there).
fn read_long(root: &Path, rel: &Path) -> Option<Vec<u8>> {
    let dir = Dir::open(root).ok()?.walk(rel.parent()?).ok()?;
    fs::read(dir.at(rel.file_name()?)).ok()
}

/// `text` with every 120-byte folder name cut to its number, so that output about the
/// deep tree stays readable in a failure message.
fn shorten(text: &str) -> String {
    text.replace(&"n".repeat(NAME_LEN - 3), "…")
}

/// Fails unless the run ended with exit code 0, printing its output shortened.
fn assert_ok(out: &std::process::Output, what: &str) {
    assert!(
        out.status.code() == Some(0),
        "{what}: {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        shorten(&stdout(out)),
        shorten(&stderr(out))
    );
}

/// A test tree with the deep tree in SRC.
fn long_env() -> (TestEnv, PathBuf) {
    let env = TestEnv::new();
    let bottom = plant_long_tree(&env.src);
    (env, bottom)
}

/// Runs the binary with `args` in the env's folder and returns its output.
fn run(env: &TestEnv, args: &[&OsStr]) -> std::process::Output {
    env.cmd(args).output().unwrap()
}

/// `datasafe sync SRC DST`, which must end with exit code 0.
fn sync_long(env: &TestEnv) -> std::process::Output {
    let out = env.sync(&[]);
    assert_ok(&out, "sync of the deep tree");
    out
}

#[test]
fn a_path_longer_than_path_max_mirrors_and_verifies() {
    let (env, bottom) = long_env();
    sync_long(&env);
    assert_long_same(&env.src, &env.dst, "DST does not mirror the deep tree");
    assert_eq!(
        read_long(&env.dst, &bottom).as_deref(),
        Some(&b"at the bottom\n"[..])
    );
    // A second run finds nothing to do.
    let again = sync_long(&env);
    assert_eq!(
        (count(&again, "Files backed up"), count(&again, "Updated")),
        (0, 0),
        "the second sync\n{}",
        shorten(&stdout(&again))
    );
    let verify = run(&env, &["verify".as_ref(), env.dst.as_os_str()]);
    assert_ok(&verify, "verify DST");
    let verify = run(
        &env,
        &[
            "verify".as_ref(),
            env.dst.as_os_str(),
            "--source".as_ref(),
            env.src.as_os_str(),
        ],
    );
    assert_ok(&verify, "verify DST --source SRC");
}

#[test]
fn a_path_longer_than_path_max_restores() {
    let (env, _) = long_env();
    sync_long(&env);
    let target = env.dir.path().join("restored");
    let out = run(
        &env,
        &["restore".as_ref(), env.dst.as_os_str(), target.as_os_str()],
    );
    assert_ok(&out, "restore DST TARGET");
    assert_long_same(&env.src, &target, "the restore does not hold the deep tree");
}

#[test]
fn a_path_longer_than_path_max_archives_with_its_full_name() {
    let (env, bottom) = long_env();
    sync_long(&env);
    let name = bottom.to_string_lossy().into_owned();
    let link = bottom.with_file_name("link").to_string_lossy().into_owned();
    // Both a mirror (read through the store) and a plain folder.
    for (what, source) in [("mirror", &env.dst), ("folder", &env.src)] {
        let zip = env.dir.path().join(format!("{what}.zip"));
        let out = run(
            &env,
            &["archive".as_ref(), source.as_os_str(), zip.as_os_str()],
        );
        assert_ok(&out, &format!("archive of the {what} to zip"));
        let script = "import sys, zipfile\n\
                      z = zipfile.ZipFile(sys.argv[1])\n\
                      names = z.namelist()\n\
                      assert sys.argv[2] in names, 'no entry for the bottom file'\n\
                      assert sys.argv[3] in names, 'no entry for the link'\n\
                      sys.stdout.buffer.write(z.read(sys.argv[2]))\n";
        let py = Command::new("python3")
            .args(["-c", script])
            .arg(&zip)
            .args([&name, &link])
            .output()
            .unwrap();
        assert!(
            py.status.success(),
            "{what}.zip: {}",
            String::from_utf8_lossy(&py.stderr)
        );
        assert_eq!(
            py.stdout, b"at the bottom\n",
            "{what}.zip: the bottom file's content"
        );

        let tar = env.dir.path().join(format!("{what}.tar.zst"));
        let out = run(
            &env,
            &["archive".as_ref(), source.as_os_str(), tar.as_os_str()],
        );
        assert_ok(&out, &format!("archive of the {what} to tar.zst"));
        let list = Command::new("tar")
            .arg("--zstd")
            .arg("-tf")
            .arg(&tar)
            .output()
            .unwrap();
        assert!(
            list.status.success(),
            "tar -t: {}",
            String::from_utf8_lossy(&list.stderr)
        );
        let list = String::from_utf8_lossy(&list.stdout).into_owned();
        assert!(
            list.lines().any(|l| l == name),
            "{what}.tar.zst has no entry {}",
            short(&bottom)
        );
        assert!(
            list.lines().any(|l| l == link),
            "{what}.tar.zst has no entry for the link"
        );
        let content = Command::new("tar")
            .arg("--zstd")
            .arg("-xOf")
            .arg(&tar)
            .arg(&name)
            .output()
            .unwrap();
        assert_eq!(
            content.stdout, b"at the bottom\n",
            "{what}.tar.zst: the bottom file's content"
        );
    }
}

/// inotify adds a watch by path, so folders past `PATH_MAX` send no events: the watcher
/// says so once per folder, names what covers them (the fallback rescan), and the
/// rescan mirrors a change down there.
#[test]
fn a_path_longer_than_path_max_is_watched() {
    let _lock = shared();
    let (env, bottom) = long_env();
    let w = Watcher::start(&env, &env.src, &env.dst, &["--rescan", "1s"], "w");
    // The walk goes down the deep folder before the files beside it (`00-…` sorts
    // before `on-the-way-…`), so the bottom may land first: wait for the whole tree.
    let ready = wait_until(DEADLINE, || {
        w.stdout().contains("watching")
            && read_long(&env.dst, &bottom).is_some()
            && long_snapshot(&env.src) == long_snapshot(&env.dst)
    });
    assert!(
        ready,
        "the watcher's start-up did not reach the bottom{}",
        shorten(&w.context())
    );
    assert_long_same(
        &env.src,
        &env.dst,
        "the watcher's start-up did not mirror the deep tree",
    );
    // A change at the bottom, and a new file beside it.
    let dir = Dir::open(&env.src).unwrap().walk(&bottom_rel()).unwrap();
    let mut file = OpenOptions::new()
        .append(true)
        .open(dir.at("bottom.txt"))
        .unwrap();
    file.write_all(b"and a line more\n").unwrap();
    drop(file);
    dir.write("new.txt", b"new at the bottom\n", 0o644, 1_700_000_000);
    let new = bottom.with_file_name("new.txt");
    let seen = wait_until(DEADLINE, || {
        read_long(&env.dst, &bottom).as_deref() == Some(&b"at the bottom\nand a line more\n"[..])
            && read_long(&env.dst, &new).is_some()
    });
    assert!(
        seen,
        "the watcher did not mirror the change at the bottom{}",
        shorten(&w.context())
    );
    let said = w.stderr();
    assert!(
        said.contains("cannot watch ")
            && said.contains("its path is longer than the system allows; changes below it are mirrored by the fallback rescan (--rescan, every 1s)"),
        "the watcher did not say which folders it cannot watch{}",
        shorten(&w.context())
    );
    let ok = wait_until(DEADLINE, || {
        long_snapshot(&env.src) == long_snapshot(&env.dst)
    });
    if !ok {
        assert_long_same(
            &env.src,
            &env.dst,
            "the watcher did not mirror the deep tree",
        );
    }
}
