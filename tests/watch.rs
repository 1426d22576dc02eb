//! `datasafe watch` driven through the real binary: live mirroring of creates, edits,
//! deletes, modes, bursts, renames (inode kept), moves in and out, a kernel queue
//! overflow, a file that never goes quiet, a vanished source root, Ctrl-C mid-copy, the
//! inotify watch limit, DST and the log file inside SRC, and excludes.
//!
//! Every wait polls with a deadline; the only bounded windows that are not waits check
//! that nothing happens (DST unchanged while the source is away, no feedback loop, low
//! CPU). Each watcher is held by a guard that SIGKILLs it on drop. Tests that change a
//! sysctl need root (they skip with a reason otherwise), take the test lock exclusively
//! (the inotify limits are per user, so every other watcher would feel them) and restore
//! the value on drop, panic or not.

use crate::common;

use common::dst::Dst;
use common::faults::temp_files;
use common::watcher::*;
use common::*;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// A sysctl under /proc/sys set for the length of a test, restored on drop.
struct Sysctl {
    path: PathBuf,
    old: String,
}

impl Sysctl {
    /// Sets `/proc/sys/NAME` to `value`; `Err` (with why) if it cannot be read or written.
    fn set(name: &str, value: u64) -> Result<Sysctl, String> {
        let path = Path::new("/proc/sys").join(name);
        let old = fs::read_to_string(&path).map_err(|e| format!("reading {path:?}: {e}"))?;
        fs::write(&path, value.to_string()).map_err(|e| format!("writing {path:?}: {e}"))?;
        Ok(Sysctl {
            path,
            old: old.trim().to_string(),
        })
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        if let Err(e) = fs::write(&self.path, &self.old) {
            eprintln!("could not restore {:?} to {}: {e}", self.path, self.old);
        }
    }
}

fn inode(path: &Path) -> u64 {
    fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .ino()
}

/// Lines of `text` that start with `prefix`.
fn lines_starting(text: &str, prefix: &str) -> usize {
    text.lines().filter(|l| l.starts_with(prefix)).count()
}

const MIB: usize = 1 << 20;

/// Chunk `i` of the big test file made from `seed`: shared noise, stamped with the seed
/// and the chunk number, so a torn or mixed file never compares equal.
fn chunk(noise: &[u8], seed: u64, i: usize) -> Vec<u8> {
    let mut c = noise.to_vec();
    c[..8].copy_from_slice(&seed.to_le_bytes());
    c[8..16].copy_from_slice(&(i as u64).to_le_bytes());
    c
}

fn noise() -> Vec<u8> {
    let mut state = 0x1234_5678_9abc_def0_u64;
    let mut out = Vec::with_capacity(MIB);
    while out.len() < MIB {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out
}

/// Writes the big file for `seed` (`mib` MiB) at `path`.
fn write_big(path: &Path, noise: &[u8], seed: u64, mib: usize) {
    let mut f = File::create(path).unwrap();
    for i in 0..mib {
        f.write_all(&chunk(noise, seed, i)).unwrap();
    }
}

/// True if `path` holds exactly the big file for `seed`.
fn is_big(path: &Path, noise: &[u8], seed: u64, mib: usize) -> bool {
    let Ok(mut f) = File::open(path) else {
        return false;
    };
    if f.metadata().map(|m| m.len()).ok() != Some((mib * MIB) as u64) {
        return false;
    }
    let mut buf = vec![0u8; MIB];
    for i in 0..mib {
        if f.read_exact(&mut buf).is_err() || buf != chunk(noise, seed, i) {
            return false;
        }
    }
    true
}

// ---------------------------------------------------------------------------------------
// 1. create / modify / delete / chmod
// ---------------------------------------------------------------------------------------

#[test]
fn creates_edits_deletes_and_modes_are_mirrored() {
    creates_edits_deletes_and_modes_are_mirrored_on(Dst::Local);
}

#[test]
fn creates_edits_deletes_and_modes_are_mirrored_sftp() {
    creates_edits_deletes_and_modes_are_mirrored_on(Dst::Sftp);
}

#[test]
fn creates_edits_deletes_and_modes_are_mirrored_s3() {
    creates_edits_deletes_and_modes_are_mirrored_on(Dst::S3);
}

fn creates_edits_deletes_and_modes_are_mirrored_on(dst: Dst) {
    let _lock = shared();
    let env = TestEnv::on(dst);
    env.write("old.txt", "there before");
    env.write("dir/gone.txt", "will be deleted");
    env.write("tree/a/b.txt", "a folder that will be removed");
    let w = Watcher::ready(&env, &[], "w");
    w.wait_env_mirrored(&env, false);

    // Create.
    env.write("new.txt", "created while watching");
    env.write("dir/sub/deep.txt", "in a new folder");
    w.wait_env_mirrored(&env, false);

    // Same-size rewrite within one second, told apart only by the nanoseconds.
    let f = env.write("same.txt", "version-1");
    set_mtime(&f, 1_700_000_000, 100_000_000);
    w.wait_env_mirrored(&env, false);
    fs::write(&f, "version-2").unwrap();
    set_mtime(&f, 1_700_000_000, 200_000_000);
    w.wait_env_mirrored(&env, false);
    assert_eq!(env.dst_read("same.txt").unwrap(), b"version-2");

    // Quick same-size rewrites: only the last version counts.
    let q = env.write("quick.txt", "AAAA");
    fs::write(&q, "BBBB").unwrap();
    fs::write(&q, "CCCC").unwrap();
    // And an edit of a file mirrored at start-up.
    fs::write(env.src.join("old.txt"), "edited while watching").unwrap();
    w.wait_env_mirrored(&env, false);
    assert_eq!(env.dst_read("quick.txt").unwrap(), b"CCCC");

    // Delete a file and a whole folder.
    fs::remove_file(env.src.join("dir/gone.txt")).unwrap();
    fs::remove_dir_all(env.src.join("tree")).unwrap();
    w.wait_env_mirrored(&env, false);
    assert!(!env.dst_has("dir/gone.txt") && !env.dst_has("tree"));

    // chmod of a file and of a folder.
    fs::set_permissions(env.src.join("new.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(env.src.join("dir/sub"), fs::Permissions::from_mode(0o700)).unwrap();
    w.wait_env_mirrored(&env, false);
    assert_eq!(env.dst_mode("new.txt"), 0o600);
    if dst != Dst::S3 {
        // A bucket's folder carries no mode of its own (see `TestEnv::dst_mode`): the
        // wait above saw it restored.
        assert_eq!(env.dst_mode("dir/sub"), 0o700);
    }
}

// ---------------------------------------------------------------------------------------
// 2. a burst in fresh nested folders
// ---------------------------------------------------------------------------------------

#[test]
fn a_burst_of_files_in_new_nested_folders_is_mirrored() {
    a_burst_of_files_in_new_nested_folders_is_mirrored_on(Dst::Local);
}

#[test]
fn a_burst_of_files_in_new_nested_folders_is_mirrored_sftp() {
    a_burst_of_files_in_new_nested_folders_is_mirrored_on(Dst::Sftp);
}

#[test]
fn a_burst_of_files_in_new_nested_folders_is_mirrored_s3() {
    a_burst_of_files_in_new_nested_folders_is_mirrored_on(Dst::S3);
}

fn a_burst_of_files_in_new_nested_folders_is_mirrored_on(dst: Dst) {
    let _lock = shared();
    let env = TestEnv::on(dst);
    let w = Watcher::ready(&env, &[], "w");
    for t in 0..10 {
        let levels = [
            format!("t{t}"),
            format!("t{t}/a"),
            format!("t{t}/a/b"),
            format!("t{t}/a/b/c"),
        ];
        fs::create_dir_all(env.src.join(&levels[3])).unwrap();
        for i in 0..30 {
            let rel = format!("{}/f{i}.txt", levels[i % 4]);
            fs::write(env.src.join(rel), format!("tree {t} file {i}")).unwrap();
        }
    }
    w.wait_env_mirrored(&env, false);
    assert_eq!(env.dst_files("").len(), 301, "300 files and the probe");
}

// ---------------------------------------------------------------------------------------
// 3. folder rename keeps the inode
// ---------------------------------------------------------------------------------------

fn folder_rename_keeps_the_big_file(compress: bool) {
    let env = TestEnv::new();
    let (extra, gz): (&[&str], &str) = if compress {
        (&["--compress"], ".gz")
    } else {
        (&[], "")
    };
    // Zeros: the file is big, but gzipping it in a debug build stays quick.
    env.write("big/data.bin", vec![0u8; 50 * MIB]);
    env.write("big/small.txt", "next to the big one");
    let w = Watcher::ready(&env, extra, "w");
    let old = env.dst.join(format!("big/data.bin{gz}"));
    assert!(old.exists(), "start-up copied the big file{}", w.context());
    let ino = inode(&old);

    fs::rename(env.src.join("big"), env.src.join("big2")).unwrap();
    let new = env.dst.join(format!("big2/data.bin{gz}"));
    let small = env.dst.join(format!("big2/small.txt{gz}"));
    let moved = wait_until(DEADLINE, || {
        new.exists() && small.exists() && !env.dst.join("big").exists()
    });
    assert!(moved, "big/ was not renamed to big2/ in DST{}", w.context());
    assert_eq!(
        inode(&new),
        ino,
        "the big file was copied again, not renamed{}",
        w.context()
    );
    // The line is printed once the rename is done, so it may lag a little behind.
    let said = wait_until(DEADLINE, || {
        w.stdout().lines().any(|l| l == "renamed big -> big2")
    });
    assert!(said, "no rename line{}", w.context());
    // Nothing else was needed: the mirror is complete.
    if compress {
        assert_gz_mirror_of_big_tree(&env);
    } else {
        assert_mirrored(&env.src, &env.dst, false);
    }
    assert_eq!(inode(&new), ino);
}

/// CRC-32 of 50 MiB of zeros (Python: `zlib.crc32(bytes(50 << 20))`); computing it here
/// would take seconds in a debug build.
const ZEROS_50_MIB_CRC32: u32 = 0x0e9b_9b34;

/// [`assert_mirrored`] for the compressed big-file tree, without inflating 50 MiB in a
/// debug build (seconds): the small files are compared in full, the big one (zeros) by
/// its gzip trailer (CRC-32 and length of the content), mode and mtime.
fn assert_gz_mirror_of_big_tree(env: &TestEnv) {
    let names = |root: &Path| {
        let mut v: Vec<PathBuf> = walkdir::WalkDir::new(root)
            .min_depth(1)
            .into_iter()
            .filter_entry(|e| e.file_name() != ".datasafe")
            .map(|e| e.unwrap().path().strip_prefix(root).unwrap().to_path_buf())
            .collect();
        v.sort();
        v
    };
    let want: Vec<PathBuf> = names(&env.src)
        .into_iter()
        .map(|p| match env.src.join(&p).is_file() {
            true => PathBuf::from(format!("{}.gz", p.display())),
            false => p,
        })
        .collect();
    assert_eq!(names(&env.dst), want);
    for rel in ["probe.txt", "big2/small.txt"] {
        let mut plain = Vec::new();
        let gz = fs::read(env.dst.join(format!("{rel}.gz"))).unwrap();
        flate2::read::MultiGzDecoder::new(&gz[..])
            .read_to_end(&mut plain)
            .unwrap();
        assert_eq!(plain, fs::read(env.src.join(rel)).unwrap(), "{rel}");
    }
    let src_big = env.src.join("big2/data.bin");
    let dst_big = env.dst.join("big2/data.bin.gz");
    assert_eq!(fs::read(&src_big).unwrap(), vec![0u8; 50 * MIB]);
    let gz = fs::read(&dst_big).unwrap();
    let trailer = &gz[gz.len() - 8..];
    assert_eq!(
        trailer[..4],
        ZEROS_50_MIB_CRC32.to_le_bytes(),
        "CRC-32 of the content"
    );
    assert_eq!(trailer[4..], ((50 * MIB) as u32).to_le_bytes(), "length");
    let (s, d) = (
        fs::metadata(&src_big).unwrap(),
        fs::metadata(&dst_big).unwrap(),
    );
    assert_eq!(
        (s.mode(), s.mtime(), s.mtime_nsec()),
        (d.mode(), d.mtime(), d.mtime_nsec())
    );
}

#[test]
fn a_renamed_folder_is_renamed_in_dst_not_copied() {
    let _lock = shared();
    folder_rename_keeps_the_big_file(false);
    folder_rename_keeps_the_big_file(true);
}

// ---------------------------------------------------------------------------------------
// 4. moves out of and into SRC
// ---------------------------------------------------------------------------------------

#[test]
fn folders_moved_out_are_removed_and_moved_in_are_mirrored() {
    folders_moved_out_are_removed_and_moved_in_are_mirrored_on(Dst::Local);
}

#[test]
fn folders_moved_out_are_removed_and_moved_in_are_mirrored_sftp() {
    folders_moved_out_are_removed_and_moved_in_are_mirrored_on(Dst::Sftp);
}

#[test]
fn folders_moved_out_are_removed_and_moved_in_are_mirrored_s3() {
    folders_moved_out_are_removed_and_moved_in_are_mirrored_on(Dst::S3);
}

fn folders_moved_out_are_removed_and_moved_in_are_mirrored_on(dst: Dst) {
    let _lock = shared();
    let env = TestEnv::on(dst);
    env.write("outgoing/x.txt", "x");
    env.write("outgoing/deep/y.txt", "y");
    env.write("stays.txt", "stays");
    let w = Watcher::ready(&env, &[], "w");
    assert!(env.dst_has("outgoing/deep/y.txt"));

    // Out.
    let outside = env.dir.path().join("outside");
    fs::rename(env.src.join("outgoing"), &outside).unwrap();
    w.wait_env_mirrored(&env, false);
    assert!(!env.dst_has("outgoing"));
    // Writing into the moved-out folder changes nothing in DST.
    fs::write(outside.join("later.txt"), "outside").unwrap();

    // In: a tree built outside, then moved in whole.
    let incoming = env.dir.path().join("incoming");
    for i in 0..20 {
        let rel = ["", "a", "a/b", "a/b/c", "d"][i % 5];
        let dir = incoming.join(rel);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(format!("f{i}.txt")), format!("incoming {i}")).unwrap();
    }
    fs::rename(&incoming, env.src.join("incoming")).unwrap();
    w.wait_env_mirrored(&env, false);

    // The moved-in folders are watched from now on.
    env.write("incoming/a/b/c/later.txt", "written after the move");
    w.wait_env_mirrored(&env, false);
    assert!(!env.dst_has("outgoing"));
}

// ---------------------------------------------------------------------------------------
// 5. kernel queue overflow
// ---------------------------------------------------------------------------------------

#[test]
fn an_event_flood_past_the_kernel_queue_ends_mirrored() {
    let lock = exclusive();
    if !is_root() {
        eprintln!("skipping: needs root to set fs.inotify.max_queued_events");
        return;
    }
    // The kernel reads it when an inotify instance is created: set it before the watcher
    // starts, and restore it (letting other watchers start again) once it has started.
    let queue = match Sysctl::set("fs/inotify/max_queued_events", 64) {
        Ok(guard) => guard,
        Err(why) => {
            eprintln!("skipping: {why}");
            return;
        }
    };
    let env = TestEnv::new();
    let w = Watcher::ready(&env, &[], "w");
    drop(queue);
    drop(lock);
    let _lock = shared();
    // Folders first, mirrored (and so watched) before the flood.
    for d in 0..20 {
        fs::create_dir(env.src.join(format!("d{d:02}"))).unwrap();
    }
    w.wait_mirrored(&env.src, &env.dst, false);
    // Stop the watcher while the files are made, so the kernel queue surely overflows
    // (a reader that lags behind, as on a busy machine). SIGKILL on drop still works.
    w.signal(libc::SIGSTOP);
    for d in 0..20 {
        let dir = env.src.join(format!("d{d:02}"));
        for i in 0..100 {
            fs::write(dir.join(format!("f{i:03}.txt")), format!("{d}/{i}")).unwrap();
        }
    }
    // A folder whose creation event is lost in the overflow.
    env.write("late/first.txt", "made during the flood");
    w.signal(libc::SIGCONT);
    w.wait_mirrored(&env.src, &env.dst, false);
    assert!(
        w.stderr().contains("events were lost"),
        "stderr does not mention lost events{}",
        w.context()
    );

    // The folder created during the overflow must be watched too: a file written into
    // it afterwards is mirrored (the fallback rescan is 10 minutes away).
    env.write("late/after-the-flood.txt", "written after the overflow");
    let seen = wait_until(DEADLINE, || {
        env.dst.join("late/after-the-flood.txt").exists()
    });
    assert!(
        seen,
        "a file written after the overflow into a folder created during it was not \
         mirrored: the folder is not watched{}",
        w.context()
    );
    w.wait_mirrored(&env.src, &env.dst, false);
}

// ---------------------------------------------------------------------------------------
// 6. a file that never goes quiet
// ---------------------------------------------------------------------------------------

#[test]
fn a_file_that_never_goes_quiet_is_copied_after_max_wait() {
    let _lock = shared();
    let env = TestEnv::new();
    // The debounce is longer than the gap between writes, so only --max-wait can get the
    // file copied while it is being written.
    let w = Watcher::ready(&env, &["--max-wait", "1s", "--debounce", "500ms"], "w");
    let log = env.src.join("log.txt");
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (log, done) = (log.clone(), done.clone());
        std::thread::spawn(move || {
            let mut f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .unwrap();
            for i in 0..60 {
                writeln!(f, "line {i:03} of a log that keeps growing").unwrap();
                std::thread::sleep(Duration::from_millis(50));
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    let dst_log = env.dst.join("log.txt");
    let mut seen = None;
    let in_time = wait_until(DEADLINE, || {
        if done.load(Ordering::SeqCst) {
            return true;
        }
        let copy = fs::read(&dst_log).unwrap_or_default();
        let now = fs::read(&log).unwrap_or_default();
        if !copy.is_empty() && now.starts_with(&copy) {
            seen = Some(copy.len());
            return true;
        }
        false
    });
    assert!(in_time);
    let still_writing = seen.is_some();
    writer.join().unwrap();
    assert!(
        still_writing,
        "DST/log.txt did not appear while the file was still being written{}",
        w.context()
    );
    w.wait_mirrored(&env.src, &env.dst, false);
}

// ---------------------------------------------------------------------------------------
// 7. the source root vanishes and comes back
// ---------------------------------------------------------------------------------------

#[test]
fn a_vanished_source_pauses_and_resumes_without_deleting() {
    let _lock = shared();
    let env = TestEnv::new();
    env.write("a.txt", "a");
    env.write("sub/b.txt", "b");
    env.write("sub/deeper/c.txt", "c");
    let w = Watcher::ready(&env, &[], "w");
    w.wait_mirrored(&env.src, &env.dst, false);
    let before = snapshot(&env.dst, false);
    let inodes: Vec<(PathBuf, u64)> = before
        .keys()
        .map(|rel| (rel.clone(), inode(&env.dst.join(rel))))
        .collect();

    let away = env.dir.path().join("src.away");
    fs::rename(&env.src, &away).unwrap();
    let paused = wait_until(DEADLINE, || w.stderr().contains("is gone"));
    assert!(
        paused,
        "no message about the source being gone{}",
        w.context()
    );
    let kept = holds_for(Duration::from_secs(2), || {
        try_snapshot(&env.dst, false).is_some_and(|now| now == before)
    });
    assert!(kept, "DST changed while the source was away{}", w.context());
    assert_eq!(snapshot(&env.dst, false), before);

    fs::write(away.join("extra.txt"), "added while away").unwrap();
    fs::rename(&away, &env.src).unwrap();
    let resumed = wait_until(DEADLINE, || {
        w.stdout().contains("is back") && env.dst.join("extra.txt").exists()
    });
    assert!(resumed, "mirroring did not resume{}", w.context());
    w.wait_mirrored(&env.src, &env.dst, false);
    for (rel, ino) in inodes {
        assert_eq!(
            inode(&env.dst.join(&rel)),
            ino,
            "{} was deleted and copied again after the source came back{}",
            rel.display(),
            w.context()
        );
    }
    // And it watches again.
    env.write("sub/after.txt", "after the return");
    w.wait_mirrored(&env.src, &env.dst, false);
}

// ---------------------------------------------------------------------------------------
// 8. Ctrl-C mid-copy
// ---------------------------------------------------------------------------------------

#[test]
fn ctrl_c_mid_copy_stops_cleanly_and_a_second_one_quits_at_once() {
    const BIG: usize = 300;
    let _lock = shared();
    let env = TestEnv::new();
    let noise = noise();
    let src_big = env.src.join("big.bin");
    let dst_big = env.dst.join("big.bin");

    let mut w = Watcher::ready(&env, &[], "w1");
    write_big(&src_big, &noise, 1, BIG);
    // Give up waiting for the copy to start quickly: the signal is sent either way.
    if !wait_until(Duration::from_secs(10), || !temp_files(&env.dst).is_empty()) {
        eprintln!("note: no temp file seen; the first SIGINT may not land mid-copy");
    }
    w.signal(libc::SIGINT);
    let status = w.wait_exit(DEADLINE);
    assert_eq!(
        status.signal(),
        Some(libc::SIGINT),
        "after one SIGINT the watcher stops cleanly, then dies by it{}",
        w.context()
    );
    assert!(
        w.stdout().contains("Backup stopped at"),
        "no summary{}",
        w.context()
    );
    assert_eq!(
        temp_files(&env.dst),
        Vec::<PathBuf>::new(),
        "temp files left"
    );
    assert!(
        !dst_big.exists() || is_big(&dst_big, &noise, 1, BIG),
        "DST/big.bin is torn after Ctrl-C"
    );

    // A new watcher finishes the job.
    let mut w = Watcher::ready(&env, &[], "w2");
    let done = wait_until(DEADLINE, || {
        fs::metadata(&dst_big).is_ok_and(|m| m.len() == (BIG * MIB) as u64)
            && temp_files(&env.dst).is_empty()
    });
    assert!(
        done,
        "the restarted watcher did not copy big.bin{}",
        w.context()
    );
    assert_mirrored(&env.src, &env.dst, false);

    // Mid-copy again, then a second SIGINT once the first was taken: quits at once.
    write_big(&src_big, &noise, 2, BIG);
    if !wait_until(Duration::from_secs(10), || !temp_files(&env.dst).is_empty()) {
        eprintln!("note: no temp file seen; the SIGINTs may not land mid-copy");
    }
    w.signal(libc::SIGINT);
    let first_seen = wait_until(Duration::from_secs(5), || {
        w.stderr().contains("interrupted")
    });
    assert!(
        first_seen,
        "the first SIGINT was not acknowledged{}",
        w.context()
    );
    if w.running() {
        w.signal(libc::SIGINT);
    }
    let status = w.wait_exit(DEADLINE);
    assert_eq!(
        status.signal(),
        Some(libc::SIGINT),
        "after two SIGINTs: {status:?}{}",
        w.context()
    );
    if w.stdout().contains("Backup stopped at") {
        eprintln!("note: the watcher finished cleanly before the second SIGINT");
    }
    assert!(
        is_big(&dst_big, &noise, 1, BIG) || is_big(&dst_big, &noise, 2, BIG),
        "DST/big.bin is torn after two SIGINTs"
    );
}

// ---------------------------------------------------------------------------------------
// 9. fs.inotify.max_user_watches reached
// ---------------------------------------------------------------------------------------

#[test]
fn the_watch_limit_is_reported_once_and_covered_by_the_fallback_rescan() {
    let _lock = exclusive();
    if !is_root() {
        eprintln!("skipping: needs root to set fs.inotify.max_user_watches");
        return;
    }
    let env = TestEnv::new();
    let mut deep = env.src.clone();
    for i in 0..50 {
        deep.push(format!("d{i:02}"));
    }
    fs::create_dir_all(&deep).unwrap();
    let _watches = match Sysctl::set("fs/inotify/max_user_watches", 20) {
        Ok(guard) => guard,
        Err(why) => {
            eprintln!("skipping: {why}");
            return;
        }
    };
    let mut w = Watcher::ready(&env, &["--rescan", "2s"], "w");
    let limit_lines = |w: &Watcher| {
        w.stderr()
            .lines()
            .filter(|l| l.contains("fs.inotify.max_user_watches"))
            .count()
    };
    assert_eq!(
        limit_lines(&w),
        1,
        "the limit is reported once{}",
        w.context()
    );

    let cpu_before = w.cpu_time();
    let window = Instant::now();
    // Deep down, where no watch could be installed, and a new folder that needs a watch.
    fs::write(deep.join("deep.txt"), "in an unwatched folder").unwrap();
    env.write("newdir/x.txt", "a folder created after the limit was hit");
    let dst_deep = env
        .dst
        .join(deep.strip_prefix(&env.src).unwrap().join("deep.txt"));
    let seen = wait_until(DEADLINE, || dst_deep.exists());
    assert!(
        seen,
        "the file in the unwatched folder was not mirrored{}",
        w.context()
    );
    w.wait_mirrored(&env.src, &env.dst, false);
    // Measure over at least 4 s (two fallback rescans): it keeps running, and idles.
    let alive = holds_for(
        Duration::from_secs(4).saturating_sub(window.elapsed()),
        || w.running(),
    );
    assert!(alive, "the watcher exited{}", w.context());
    let used = w.cpu_time().saturating_sub(cpu_before);
    let elapsed = window.elapsed();
    assert!(
        used < Duration::from_secs(1),
        "the watcher used {used:?} of CPU in {elapsed:?}{}",
        w.context()
    );
    assert!(w.running(), "the watcher exited{}", w.context());
    assert_eq!(
        limit_lines(&w),
        1,
        "the limit is reported once, not on every rescan or new folder{}",
        w.context()
    );
}

// ---------------------------------------------------------------------------------------
// 10. DST and the log file inside SRC
// ---------------------------------------------------------------------------------------

#[test]
fn dst_and_log_file_inside_src_cause_no_feedback_loop() {
    let _lock = shared();
    let env = TestEnv::new();
    let dst = env.src.join("mirror");
    let log = env.src.join("datasafe.log");
    env.write("probe.txt", "probe");
    env.write("before.txt", "before");
    let log_arg = log.to_str().unwrap();
    let names = stored_names(&env.src, false);
    let w = Watcher::start(&env, &env.src, &dst, &["--log-file", log_arg], "w");
    w.wait_ready(&dst, &names);

    env.write("note.txt", "a change");
    let copied = wait_until(DEADLINE, || dst.join("note.txt").exists());
    assert!(copied, "note.txt was not mirrored{}", w.context());
    // Let anything the copy itself set off run, then nothing more may happen.
    let copies = || lines_starting(&w.stdout(), "copied ");
    let mut last = copies();
    let settled = wait_until(DEADLINE, || {
        let now = copies();
        let same = now == last;
        last = now;
        same && holds_for(Duration::from_secs(2), || copies() == now)
    });
    assert!(
        settled,
        "the copy lines never stopped (feedback loop){}",
        w.context()
    );
    let out = w.stdout();
    assert_eq!(
        lines_starting(&out, "copied note.txt"),
        1,
        "note.txt copied more than once{}",
        w.context()
    );
    assert!(
        !out.contains("copied mirror") && !out.contains("datasafe.log"),
        "{out}"
    );
    assert!(!dst.join("mirror").exists(), "DST was mirrored into itself");
    assert!(
        !dst.join("datasafe.log").exists(),
        "the log file was mirrored"
    );
    assert!(
        read_text(&log).contains("note.txt"),
        "the log file has the copy line"
    );
    for rel in ["probe.txt", "before.txt", "note.txt"] {
        assert_eq!(
            fs::read(dst.join(rel)).unwrap(),
            fs::read(env.src.join(rel)).unwrap()
        );
    }
}

// ---------------------------------------------------------------------------------------
// 11. excludes
// ---------------------------------------------------------------------------------------

#[test]
fn excluded_files_created_while_watching_are_not_mirrored() {
    let _lock = shared();
    let env = TestEnv::new();
    let w = Watcher::ready(&env, &["--exclude", "*.tmp"], "w");
    env.write("a.tmp", "excluded");
    env.write("sub/b.tmp", "excluded too");
    env.write("sub/keep.txt", "kept");
    env.write("keep.txt", "kept");
    let seen = wait_until(DEADLINE, || {
        env.dst.join("keep.txt").exists() && env.dst.join("sub/keep.txt").exists()
    });
    assert!(seen, "keep.txt was not mirrored{}", w.context());
    // A renamed file: into an excluded name (DST drops it), out of one (DST gets it).
    fs::rename(env.src.join("keep.txt"), env.src.join("keep.tmp")).unwrap();
    fs::rename(env.src.join("a.tmp"), env.src.join("a.txt")).unwrap();
    let expected = || {
        let mut want = try_snapshot(&env.src, false)?;
        want.retain(|rel, _| rel.extension().is_none_or(|e| e != "tmp"));
        Some(want)
    };
    let ok = wait_until(DEADLINE, || {
        let have = try_snapshot(&env.dst, false);
        have.is_some() && have == expected()
    });
    let tmp_in_dst: Vec<PathBuf> = snapshot(&env.dst, false)
        .into_keys()
        .filter(|rel| rel.extension().is_some_and(|e| e == "tmp"))
        .collect();
    assert!(
        tmp_in_dst.is_empty(),
        "excluded files mirrored: {tmp_in_dst:?}"
    );
    assert!(
        ok,
        "DST is not SRC without *.tmp: dst {:?}{}",
        snapshot(&env.dst, false).keys().collect::<Vec<_>>(),
        w.context()
    );
    assert!(!env.dst.join("keep.txt").exists());
    assert!(env.dst.join("a.txt").exists());
}

/// Issue 12: as `sync`'s test of the same name, for the watcher: events about a source
/// folder swapped again and again for a symlink to a folder outside SRC (files of the
/// same names, and one only there) and about the files in it never make datasafe read
/// what the link leads to, in a hint's look, a folder's walk or a copy. Kept versions
/// are checked too: what was copied once stays there even after the mirror is right.
#[test]
fn regression_a_source_folder_swapped_for_a_symlink_never_mirrors_what_is_outside() {
    let _lock = shared();
    let env = TestEnv::new();
    let outside = env.dir.path().join("outside");
    let hold = env.dir.path().join("hold");
    fs::create_dir(&outside).unwrap();
    for i in 0..40 {
        env.write(format!("d/f{i}"), "inside");
        fs::write(outside.join(format!("f{i}")), "OUTSIDE").unwrap();
    }
    fs::write(outside.join("only-outside"), "OUTSIDE").unwrap();
    // Batches acted on while the swaps go on, not only once they are over.
    let w = Watcher::ready(&env, &["--debounce", "5ms", "--max-wait", "20ms"], "w");
    let leaked = |dst: &Path| -> Vec<PathBuf> {
        walkdir::WalkDir::new(dst)
            .follow_links(false)
            .into_iter()
            .flatten()
            .filter(|e| e.file_type().is_file())
            .filter(|e| {
                e.file_name() == "only-outside" || fs::read(e.path()).is_ok_and(|c| c == b"OUTSIDE")
            })
            .map(|e| e.path().to_path_buf())
            .collect()
    };
    let d = env.src.join("d");
    for round in 0..1500 {
        // Each state held a moment: long enough for the watcher to look at it.
        fs::rename(&d, &hold).unwrap();
        std::os::unix::fs::symlink(&outside, &d).unwrap();
        std::thread::sleep(Duration::from_micros(300));
        fs::remove_file(&d).unwrap();
        fs::rename(&hold, &d).unwrap();
        // An edit in the real folder: a hint for a file inside it.
        fs::write(
            d.join(format!("f{}", round % 40)),
            format!("inside {round}"),
        )
        .unwrap();
        std::thread::sleep(Duration::from_micros(300));
    }
    w.wait_mirrored(&env.src, &env.dst, false);
    let found = leaked(&env.dst);
    assert!(
        found.is_empty(),
        "read from outside SRC: {found:?}\n{}",
        w.context()
    );
}
