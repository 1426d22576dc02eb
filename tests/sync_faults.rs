//! Fault injection against the real binary: SIGKILL at random moments, a full disk, an
//! unreadable source, an unwritable destination, SIGINT/SIGTERM mid-copy, private files,
//! a source file that changes while it is copied, and symlinks planted in DST.
//!
//! Tests that need root (tmpfs mounts, dropping to uid 65534) skip with a reason when not
//! root. Nothing waits with a fixed sleep: waits poll with a deadline. The only sleeps
//! that are not polls are the faults themselves (the delay before a SIGKILL, the pauses
//! of a writer that keeps changing a file).

use crate::common;

use common::faults::*;
use common::*;
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// `datasafe sync SRC DST EXTRA...`, not yet run.
fn sync_cmd(env: &TestEnv, extra: &[&str]) -> Command {
    let mut args: Vec<&std::ffi::OsStr> =
        vec!["sync".as_ref(), env.src.as_os_str(), env.dst.as_os_str()];
    args.extend(extra.iter().map(|s| std::ffi::OsStr::new(*s)));
    env.cmd(args)
}

/// Starts a sync with its stdout and stderr going to files in the test folder (a pipe
/// nobody reads could fill up and stall the run). Returns the child and the two paths.
fn spawn_sync(env: &TestEnv, extra: &[&str], tag: &str) -> (Child, PathBuf, PathBuf) {
    let out = env.dir.path().join(format!("{tag}.stdout"));
    let err = env.dir.path().join(format!("{tag}.stderr"));
    let child = sync_cmd(env, extra)
        .stdin(Stdio::null())
        .stdout(File::create(&out).unwrap())
        .stderr(File::create(&err).unwrap())
        .spawn()
        .unwrap();
    (child, out, err)
}

/// Waits for `child` to exit, polling; kills it and fails if it takes longer than `limit`.
fn wait_deadline(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the run did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn read_text(path: &Path) -> String {
    String::from_utf8_lossy(&fs::read(path).unwrap_or_default()).into_owned()
}

/// Asserts that every file DST holds under a final name is, byte for byte, either its
/// source file as it is now or what DST held for it before the run (`before`): never a
/// torn or partial file, never something made up.
fn assert_no_torn(src: &Path, dst: &Path, before: &BTreeMap<PathBuf, Vec<u8>>, when: &str) {
    let now = files(src);
    let mut bad = String::new();
    for (rel, content) in files(dst) {
        let ok = now.get(&rel) == Some(&content) || before.get(&rel) == Some(&content);
        if !ok {
            let src_len = now.get(&rel).map(Vec::len);
            bad.push_str(&format!(
                "  {}: {} bytes in dst, source has {src_len:?}\n",
                rel.display(),
                content.len()
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "{when}: files in DST that match no version of their source:\n{bad}"
    );
}

/// Runs `datasafe sync SRC DST EXTRA...` as uid/gid 65534 with no supplementary groups.
fn sync_as_nobody(env: &TestEnv, extra: &[&str]) -> Output {
    Command::new("setpriv")
        .arg(format!("--reuid={NOBODY}"))
        .arg(format!("--regid={NOBODY}"))
        .arg("--clear-groups")
        .arg(binary_for_nobody(env))
        .arg("sync")
        .arg(&env.src)
        .arg(&env.dst)
        .args(extra)
        .current_dir(env.dir.path())
        .output()
        .unwrap()
}

// ---------------------------------------------------------------------------------------
// 1. SIGKILL at random moments
// ---------------------------------------------------------------------------------------

/// 2000 small files in 20 folders and three 5 MB files; ten runs (100 with
/// `DATASAFE_LONG=1`, see `scripts/long_tests.sh`) killed with SIGKILL after a seeded
/// random delay, the source changing between iterations (rewrites, deletions,
/// new files; sometimes the index or the whole mirror is gone). After each kill nothing
/// under a final name may be torn, and one normal run must converge and pass `verify`.
#[test]
fn sigkill_at_random_moments_never_leaves_a_torn_file() {
    let env = TestEnv::new();
    let mut rng = Rng(0x5eed_0001);
    let mut small: Vec<String> = Vec::new();
    for d in 0..20 {
        for f in 0..100 {
            let rel = format!("d{d:02}/f{f:03}.txt");
            env.write(&rel, format!("{rel} v0 {}\n", "x".repeat((d * 7 + f) % 90)));
            small.push(rel);
        }
    }
    let bigs = ["big0.bin", "deep/er/big1.bin", "deep/big2.bin"];
    for (i, rel) in bigs.iter().enumerate() {
        env.write(rel, noise(i as u64, 5 << 20));
    }

    let runs: u64 = if long_mode() { 100 } else { 10 };
    let mut killed = 0;
    for it in 0..runs {
        if it > 0 {
            // Two of the big files change (whole new content, a slightly different size).
            let keep = rng.range(0, bigs.len() as u64) as usize;
            for rel in bigs
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != keep)
                .map(|(_, r)| r)
            {
                let len = (5 << 20) + rng.range(0, 65536) as usize;
                env.write(rel, noise(rng.next(), len));
            }
            for _ in 0..150 {
                let rel = &small[rng.range(0, small.len() as u64) as usize];
                let len = rng.range(0, 200) as usize;
                env.write(rel, format!("{rel} v{it} {}\n", "y".repeat(len)));
            }
            for _ in 0..30 {
                let i = rng.range(0, small.len() as u64) as usize;
                let rel = small.swap_remove(i);
                let _ = fs::remove_file(env.src.join(&rel));
            }
            for k in 0..30 {
                let rel = format!("d{:02}/new-{it}-{k}.txt", rng.range(0, 20));
                env.write(&rel, format!("{rel} new\n"));
                small.push(rel);
            }
            match it % 10 {
                // No index: the run rebuilds it from DST.
                3 | 7 => {
                    for name in ["index.db", "index.db-wal", "index.db-shm"] {
                        let _ = fs::remove_file(env.dst.join(".datasafe").join(name));
                    }
                }
                // No mirror at all.
                5 => fs::remove_dir_all(&env.dst).unwrap(),
                _ => {}
            }
        }
        // What DST holds before this run (the last convergence, unless it was wiped).
        let before = files(&env.dst);
        let jobs = ["1", "2", "4"][rng.range(0, 3) as usize];
        // A release build finishes a run in a fraction of the time a debug build takes.
        let max_delay = if cfg!(debug_assertions) { 1000 } else { 150 };
        let delay = Duration::from_millis(rng.range(0, max_delay));
        let mut child = sync_cmd(&env, &["-q", "--jobs", jobs])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // The fault: SIGKILL after a seeded random delay.
        std::thread::sleep(delay);
        let _ = child.kill();
        let status = wait_deadline(&mut child, Duration::from_secs(10));
        eprintln!("iteration {it}: delay {delay:?} jobs {jobs}: {status}");
        if status.signal() == Some(libc::SIGKILL) {
            killed += 1;
        } else {
            assert_eq!(
                status.code(),
                Some(0),
                "iteration {it}: run exited by itself with {status}"
            );
        }
        assert_no_torn(
            &env.src,
            &env.dst,
            &before,
            &format!("iteration {it}, killed after {delay:?}"),
        );

        let out = env.sync(&["-q"]);
        assert_code(&out, 0);
        assert_mirrored(&env.src, &env.dst, false);
        assert!(
            temp_files(&env.dst).is_empty(),
            "iteration {it}: temp files left: {:?}",
            temp_files(&env.dst)
        );
        let verified = env
            .cmd([OsStr::new("verify"), env.dst.as_os_str(), OsStr::new("-q")])
            .output()
            .unwrap();
        assert_code(&verified, 0);
    }
    eprintln!("{killed} of {runs} runs were killed mid-run");
    // Make sure the test tested something: most kills must have landed mid-run.
    assert!(
        killed >= runs * 3 / 10,
        "only {killed} of {runs} runs were still running when killed"
    );
}

// ---------------------------------------------------------------------------------------
// 2. Disk full
// ---------------------------------------------------------------------------------------

/// A 2 MiB tmpfs as DST's parent and a source that does not fit (a 3 MB file and small
/// ones). Returns the env (DST on the tmpfs), the mount guard and the first run's output.
fn run_on_full_disk(test: &str) -> Option<(TestEnv, Tmpfs, Output)> {
    if !is_root() {
        eprintln!("skipping {test}: needs root to mount a tmpfs");
        return None;
    }
    let mut env = TestEnv::new();
    let mnt = env.dir.path().join("mnt");
    let guard = Tmpfs::mount(&mnt, "2m");
    env.dst = mnt.join("dst");
    env.write("big.bin", noise(7, 3_000_000));
    for i in 0..12 {
        env.write(format!("small/s{i:02}.txt"), noise(100 + i, 20_000));
    }
    let out = env.sync(&[]);
    Some((env, guard, out))
}

#[test]
fn disk_full_fails_cleanly_then_converges_when_there_is_room() {
    let Some((env, guard, out)) =
        run_on_full_disk("disk_full_fails_cleanly_then_converges_when_there_is_room")
    else {
        return;
    };
    assert_code(&out, 1);
    let err = stderr(&out);
    assert!(err.contains("no space left on device"), "stderr:\n{err}");
    assert!(!err.contains("panicked"), "stderr:\n{err}");
    let text = stdout(&out);
    assert!(text.contains("Backup completed at"), "no summary:\n{text}");
    assert!(count(&out, "Failed") >= 1, "{text}");
    assert_no_torn(&env.src, &env.dst, &BTreeMap::new(), "after ENOSPC");
    assert!(
        temp_files(&env.dst).is_empty(),
        "temp files left: {:?}",
        temp_files(&env.dst)
    );

    guard.resize("64m");
    env.sync_ok(&[]);
    assert_mirrored(&env.src, &env.dst, false);
    drop(guard);
}

/// The ENOSPC error must say which file could not be stored, not only the temp file's
/// name (which is meaningless to the user and is already deleted when they read it).
#[test]
fn disk_full_error_names_the_file_being_stored() {
    let Some((_env, _guard, out)) = run_on_full_disk("disk_full_error_names_the_file_being_stored")
    else {
        return;
    };
    assert_code(&out, 1);
    let err = stderr(&out);
    let line = err
        .lines()
        .find(|l| l.starts_with("error:") && l.contains("no space left on device (os error 28)"))
        .unwrap_or_else(|| panic!("no ENOSPC error line in:\n{err}"));
    // big.bin cannot fit whatever the order of the workers.
    let names_file = err
        .lines()
        .filter(|l| l.contains("no space left on device (os error 28)"))
        .any(|l| l.contains("big.bin"));
    assert!(
        names_file,
        "the ENOSPC error does not name big.bin, e.g.:\n{line}\n--- stderr\n{err}"
    );
}

// ---------------------------------------------------------------------------------------
// 3. Unreadable source
// ---------------------------------------------------------------------------------------

#[test]
fn unreadable_source_file_fails_alone() {
    let Some(env) = env_for_nobody("unreadable_source_file_fails_alone") else {
        return;
    };
    env.write("a.txt", "alpha\n");
    env.write("sub/b.txt", "beta\n");
    let secret = env.write("sub/secret.txt", "root only\n");
    chown_tree(&env.src, NOBODY);
    chown_tree(&env.dst, NOBODY);
    std::os::unix::fs::lchown(&secret, Some(0), Some(0)).unwrap();
    chmod(&secret, 0o600);

    let out = sync_as_nobody(&env, &[]);
    assert_code(&out, 1);
    let err = stderr(&out);
    assert!(
        err.lines().any(|l| l.starts_with("error:")
            && l.contains(&*secret.to_string_lossy())
            && l.contains("permission denied")),
        "no error naming {} with \"permission denied\":\n{err}",
        secret.display()
    );
    assert_eq!(count(&out, "Failed"), 1, "{}", stdout(&out));
    assert_eq!(fs::read(env.dst.join("a.txt")).unwrap(), b"alpha\n");
    assert_eq!(fs::read(env.dst.join("sub/b.txt")).unwrap(), b"beta\n");
    assert!(!env.dst.join("sub/secret.txt").exists());
    assert!(temp_files(&env.dst).is_empty());
}

#[test]
fn unreadable_source_folder_keeps_what_dst_holds_for_it() {
    let Some(env) = env_for_nobody("unreadable_source_folder_keeps_what_dst_holds_for_it") else {
        return;
    };
    env.write("open/a.txt", "alpha\n");
    env.write("locked/x.txt", "x\n");
    env.write("locked/sub/y.txt", "y\n");
    chown_tree(&env.src, NOBODY);
    chown_tree(&env.dst, NOBODY);
    let out = sync_as_nobody(&env, &[]);
    assert_code(&out, 0);
    assert_mirrored(&env.src, &env.dst, false);

    let locked = env.src.join("locked");
    std::os::unix::fs::lchown(&locked, Some(0), Some(0)).unwrap();
    chmod(&locked, 0o700);
    env.write("open/new.txt", "new\n");
    chown_tree(&env.src.join("open"), NOBODY);

    let out = sync_as_nobody(&env, &[]);
    assert_code(&out, 1);
    let err = stderr(&out);
    assert!(
        err.lines().any(|l| l.starts_with("error:")
            && l.contains(&*locked.to_string_lossy())
            && l.contains("permission denied")),
        "no error naming {}:\n{err}",
        locked.display()
    );
    assert_eq!(count(&out, "Deleted"), 0, "{}", stdout(&out));
    assert_eq!(fs::read(env.dst.join("locked/x.txt")).unwrap(), b"x\n");
    assert_eq!(fs::read(env.dst.join("locked/sub/y.txt")).unwrap(), b"y\n");
    assert_eq!(fs::read(env.dst.join("open/new.txt")).unwrap(), b"new\n");
    // Its mode (0700, root's) was not copied onto the mirror's folder, which would lock
    // uid 65534 out of its own mirror once the source is readable again.
    let mode = fs::metadata(env.dst.join("locked")).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o755, "the unreadable folder's mode was mirrored");
    std::os::unix::fs::lchown(&locked, Some(NOBODY), Some(NOBODY)).unwrap();
    chmod(&locked, 0o755);
    env.write("locked/x.txt", "x2\n");
    chown_tree(&env.src, NOBODY);
    let out = sync_as_nobody(&env, &[]);
    assert_code(&out, 0);
    assert_eq!(fs::read(env.dst.join("locked/x.txt")).unwrap(), b"x2\n");
}

// ---------------------------------------------------------------------------------------
// 4. Unwritable destination
// ---------------------------------------------------------------------------------------

#[test]
fn unwritable_destination_is_one_clear_error() {
    let Some(env) = env_for_nobody("unwritable_destination_is_one_clear_error") else {
        return;
    };
    env.write("a.txt", "alpha\n");
    env.write("sub/b.txt", "beta\n");
    chown_tree(&env.src, NOBODY);
    // DST stays root's, 0755: readable, not writable, by uid 65534.

    // A fatal error (exit 2): one line, no summary of files that "failed".
    let out = sync_as_nobody(&env, &[]);
    assert_code(&out, 2);
    let err = stderr(&out);
    assert!(!err.contains("panicked"), "stderr:\n{err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "expected one error line:\n{err}");
    assert!(
        errors[0].contains(&*env.dst.to_string_lossy()) && errors[0].contains("permission denied"),
        "the error does not name the destination and the OS error:\n{err}"
    );
    assert!(
        !stdout(&out).contains("Backup completed at"),
        "{}",
        stdout(&out)
    );
    assert!(
        fs::read_dir(&env.dst).unwrap().next().is_none(),
        "something was written to DST"
    );
}

#[test]
fn read_only_dst_subfolder_fails_only_its_files() {
    let Some(env) = env_for_nobody("read_only_dst_subfolder_fails_only_its_files") else {
        return;
    };
    env.write("a.txt", "alpha\n");
    env.write("ro/old.txt", "old\n");
    env.write("rw/c.txt", "gamma\n");
    chown_tree(&env.src, NOBODY);
    chown_tree(&env.dst, NOBODY);
    assert_code(&sync_as_nobody(&env, &[]), 0);

    // uid 65534 can no longer write into DST's ro/ (root's, 0755).
    let ro = env.dst.join("ro");
    std::os::unix::fs::lchown(&ro, Some(0), Some(0)).unwrap();
    env.write("a.txt", "alpha 2\n");
    env.write("ro/old.txt", "old, changed\n");
    env.write("ro/new.txt", "new\n");
    env.write("rw/d.txt", "delta\n");
    chown_tree(&env.src, NOBODY);

    let out = sync_as_nobody(&env, &[]);
    assert_code(&out, 1);
    let err = stderr(&out);
    assert!(!err.contains("panicked"), "stderr:\n{err}");
    for name in ["ro/old.txt", "ro/new.txt"] {
        let path = env.dst.join(name);
        assert!(
            err.lines().any(|l| l.starts_with("error:")
                && l.contains(&*path.to_string_lossy())
                && l.contains("permission denied")),
            "no error naming {}:\n{err}",
            path.display()
        );
    }
    assert_eq!(fs::read(env.dst.join("a.txt")).unwrap(), b"alpha 2\n");
    assert_eq!(fs::read(env.dst.join("rw/d.txt")).unwrap(), b"delta\n");
    assert_eq!(fs::read(env.dst.join("ro/old.txt")).unwrap(), b"old\n");
    assert!(!env.dst.join("ro/new.txt").exists());
    assert!(
        temp_files(&env.dst).is_empty(),
        "temp files left: {:?}",
        temp_files(&env.dst)
    );
}

// ---------------------------------------------------------------------------------------
// 5. SIGINT / SIGTERM mid-copy
// ---------------------------------------------------------------------------------------

/// Starts a run over a 40 MiB file and 400 small ones, sends `signal` once the big file's
/// temp file holds at least 1 MiB, and checks: killed by `signal` (a shell shows 130 for
/// SIGINT) after the summary, no temp files, nothing torn, and
/// the next run copies exactly what is missing (the index was saved) and converges.
fn interrupt_mid_copy(signal: libc::c_int) {
    let env = TestEnv::new();
    let block = noise(u64::try_from(signal).unwrap(), 1 << 20);
    let mut big = File::create(env.write("big.bin", "")).unwrap();
    for i in 0..40u8 {
        let mut b = block.clone();
        b[..8].fill(i);
        big.write_all(&b).unwrap();
    }
    drop(big);
    for i in 0..400 {
        env.write(format!("small/{i:03}.txt"), format!("small file {i}\n"));
    }

    let (mut child, out_path, err_path) = spawn_sync(&env, &["--jobs", "2"], "interrupted");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let in_flight = temp_files(&env.dst)
            .iter()
            .any(|p| fs::metadata(p).is_ok_and(|m| m.len() >= 1 << 20));
        if in_flight {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the run ended ({status}) before it could be interrupted\n{}\n{}",
                read_text(&out_path),
                read_text(&err_path)
            );
        }
        assert!(
            Instant::now() < deadline,
            "no temp file of 1 MiB appeared in 30 s"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    let status = wait_deadline(&mut child, Duration::from_secs(20));
    let (out, err) = (read_text(&out_path), read_text(&err_path));
    // It cleans up, then dies by the signal itself (a shell shows 130 for SIGINT).
    assert_eq!(
        status.signal(),
        Some(signal),
        "status {status}\n--- stdout\n{out}\n--- stderr\n{err}"
    );
    assert!(!err.contains("panicked"), "stderr:\n{err}");
    assert!(
        out.contains("Files backed up:"),
        "no summary after the signal:\n{out}"
    );
    assert!(
        temp_files(&env.dst).is_empty(),
        "temp files left: {:?}",
        temp_files(&env.dst)
    );
    assert_no_torn(&env.src, &env.dst, &BTreeMap::new(), "after the signal");

    let have = files(&env.dst);
    let missing = files(&env.src)
        .keys()
        .filter(|k| !have.contains_key(*k))
        .count() as u64;
    assert!(missing >= 1, "big.bin was copied before the signal");
    let out = env.sync_ok(&["-q"]);
    assert_mirrored(&env.src, &env.dst, false);
    assert_eq!(
        count(&out, "Files backed up"),
        missing,
        "the run after the signal copied more than was missing: the index was not saved\n{}",
        stdout(&out)
    );
}

#[test]
fn sigint_mid_copy_exits_130_and_leaves_nothing_behind() {
    interrupt_mid_copy(libc::SIGINT);
}

#[test]
fn sigterm_mid_copy_exits_130_and_leaves_nothing_behind() {
    interrupt_mid_copy(libc::SIGTERM);
}

// ---------------------------------------------------------------------------------------
// 6. Private files
// ---------------------------------------------------------------------------------------

#[test]
fn private_files_stay_private_in_dst_and_while_being_written() {
    let env = TestEnv::new();
    let secret = env.write("secret.txt", "hunter2\n");
    chmod(&secret, 0o600);
    let big = env.write("private/big.bin", noise(6, 32 << 20));
    chmod(&big, 0o600);

    let (mut child, out_path, err_path) = spawn_sync(&env, &[], "private");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen: HashMap<PathBuf, u32> = HashMap::new();
    let mut leaks = Vec::new();
    let status = loop {
        for path in temp_files(&env.dst) {
            // A temp file may be renamed away between the listing and the stat.
            if let Ok(meta) = fs::symlink_metadata(&path) {
                let mode = meta.mode() & 0o7777;
                seen.insert(path.clone(), mode);
                if mode != 0o600 {
                    leaks.push((path, mode));
                }
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the run did not end in 60 s");
        std::thread::sleep(Duration::from_millis(1));
    };
    assert_eq!(
        status.code(),
        Some(0),
        "{}\n{}",
        read_text(&out_path),
        read_text(&err_path)
    );
    assert!(
        !seen.is_empty(),
        "never saw the temp file of the 32 MiB copy"
    );
    assert!(leaks.is_empty(), "temp files readable by others: {leaks:?}");
    for rel in ["secret.txt", "private/big.bin"] {
        let mode = fs::metadata(env.dst.join(rel)).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o600, "{rel} is {mode:o} in DST");
    }
    assert_mirrored(&env.src, &env.dst, false);
}

// ---------------------------------------------------------------------------------------
// 7. A file that changes while it is copied
// ---------------------------------------------------------------------------------------

/// Content of the changing file: generation `g` has byte `i` = `gen_byte(g, i)`, the
/// first 8 bytes being `g` itself. The writer only ever appends the generation's own
/// bytes, truncates, or replaces the file (by rename) with a new generation, so any whole
/// snapshot of the file is a prefix of one generation: anything else is a torn copy.
struct Generations(HashMap<u64, Vec<u8>>);

impl Generations {
    fn block(&mut self, g: u64) -> &[u8] {
        self.0
            .entry(g)
            .or_insert_with(|| noise(0xabc0_0000 + g, 1 << 16))
    }

    fn bytes(&mut self, g: u64, from: u64, to: u64) -> Vec<u8> {
        let head = g.to_le_bytes();
        let block = self.block(g).to_vec();
        (from..to)
            .map(|i| {
                if i < 8 {
                    head[i as usize]
                } else {
                    block[(i % (1 << 16)) as usize] ^ (i >> 16) as u8
                }
            })
            .collect()
    }

    /// True if `content` is a prefix of the generation its first 8 bytes name.
    fn is_whole(&mut self, content: &[u8]) -> bool {
        if content.len() < 8 {
            return false;
        }
        let g = u64::from_le_bytes(content[..8].try_into().unwrap());
        if g > 1_000_000 {
            return false;
        }
        self.bytes(g, 0, content.len() as u64) == content
    }
}

#[test]
fn file_changing_while_copied_converges() {
    let env = TestEnv::new();
    for i in 0..50 {
        env.write(format!("stable/{i:02}.txt"), format!("stable {i}\n"));
    }
    let hot = env.src.join("hot.log");
    let staging = env.dir.path().join("hot.next");
    let mut gens = Generations(HashMap::new());
    fs::write(&hot, gens.bytes(0, 0, 4 << 20)).unwrap();

    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (hot, staging, done) = (hot.clone(), staging.clone(), done.clone());
        std::thread::spawn(move || {
            let mut gens = Generations(HashMap::new());
            let mut rng = Rng(0x5eed_0007);
            let (mut g, mut len) = (0u64, 4u64 << 20);
            let (mut grown, mut truncated, mut replaced) = (0, 0, 0);
            let until = Instant::now() + Duration::from_millis(2500);
            while Instant::now() < until {
                match rng.range(0, 3) {
                    // Grow (or when it got small, instead of truncating).
                    op @ (0 | 1) if (op == 0 && len < 6 << 20) || len < 64 << 10 => {
                        let to = len + rng.range(64 << 10, 512 << 10);
                        let mut f = OpenOptions::new().append(true).open(&hot).unwrap();
                        f.write_all(&gens.bytes(g, len, to)).unwrap();
                        len = to;
                        grown += 1;
                    }
                    0 | 1 => {
                        let to = rng.range(len / 4, len);
                        OpenOptions::new()
                            .write(true)
                            .open(&hot)
                            .unwrap()
                            .set_len(to)
                            .unwrap();
                        len = to;
                        truncated += 1;
                    }
                    _ => {
                        g += 1;
                        len = rng.range(1 << 20, 4 << 20);
                        fs::write(&staging, gens.bytes(g, 0, len)).unwrap();
                        fs::rename(&staging, &hot).unwrap();
                        replaced += 1;
                    }
                }
                // The fault's rhythm: changes land at varying points of a copy.
                std::thread::sleep(Duration::from_millis(rng.range(0, 15)));
            }
            done.store(true, Ordering::SeqCst);
            (grown, truncated, replaced)
        })
    };

    let (mut runs, mut unsettled) = (0, 0);
    while !done.load(Ordering::SeqCst) {
        let out = env.sync(&["-q"]);
        runs += 1;
        unsettled += u32::from(out.status.code() == Some(1));
        let err = stderr(&out);
        assert!(
            matches!(out.status.code(), Some(0 | 1)),
            "run {runs}: {:?}\n{err}",
            out.status
        );
        for line in err.lines().filter(|l| l.starts_with("error:")) {
            assert!(
                line.contains("hot.log"),
                "run {runs}: unexpected error: {line}"
            );
        }
        if let Ok(content) = fs::read(env.dst.join("hot.log")) {
            assert!(
                gens.is_whole(&content),
                "run {runs}: DST's hot.log ({} bytes) is no whole snapshot of the source",
                content.len()
            );
        }
    }
    let (grown, truncated, replaced) = writer.join().unwrap();
    eprintln!(
        "{runs} runs ({unsettled} with hot.log failed) overlapped {grown} appends, {truncated} truncations, {replaced} replacements"
    );
    assert!(
        grown > 0 && truncated > 0 && replaced > 0,
        "{grown} {truncated} {replaced}"
    );

    env.sync_ok(&["-q"]);
    assert_mirrored(&env.src, &env.dst, false);
    let out = env.sync_ok(&[]);
    assert_eq!(count(&out, "Files backed up"), 0, "{}", stdout(&out));
}

// ---------------------------------------------------------------------------------------
// 8. Symlinks planted in DST
// ---------------------------------------------------------------------------------------

/// SRC with a real folder `a/` of files, an outside folder with one file of its own.
fn planted_setup() -> (TestEnv, PathBuf) {
    let env = TestEnv::new();
    for i in 0..20 {
        env.write(format!("a/f{i:02}.txt"), format!("file {i}\n"));
    }
    env.write("a/sub/g.txt", "g\n");
    env.write("top.txt", "top\n");
    let outside = env.dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("mine.txt"), "not datasafe's\n").unwrap();
    (env, outside)
}

fn assert_outside_untouched(outside: &Path) {
    let names: Vec<_> = fs::read_dir(outside)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names, ["mine.txt"], "the outside folder changed: {names:?}");
    assert_eq!(
        fs::read(outside.join("mine.txt")).unwrap(),
        b"not datasafe's\n"
    );
}

fn plant(link: &Path, target: &Path) {
    if link.is_dir() && !link.is_symlink() {
        fs::remove_dir_all(link).unwrap();
    }
    std::os::unix::fs::symlink(target, link).unwrap();
}

#[test]
fn symlink_planted_in_dst_is_replaced_not_followed() {
    let (env, outside) = planted_setup();
    // A fresh mirror (no index) where `a` is a link out of DST.
    fs::create_dir(&env.dst).unwrap();
    plant(&env.dst.join("a"), &outside);
    env.sync_ok(&["--jobs", "8"]);
    assert_outside_untouched(&outside);
    assert!(fs::symlink_metadata(env.dst.join("a")).unwrap().is_dir());
    assert_mirrored(&env.src, &env.dst, false);

    // An indexed mirror whose `a/` was swapped for the link behind the index's back, and
    // the same with a deeper folder.
    plant(&env.dst.join("a"), &outside);
    env.sync_ok(&[]);
    assert_outside_untouched(&outside);
    assert_mirrored(&env.src, &env.dst, false);
    plant(&env.dst.join("a/sub"), &outside);
    env.write("a/sub/g.txt", "g changed\n");
    env.sync_ok(&[]);
    assert_outside_untouched(&outside);
    assert_mirrored(&env.src, &env.dst, false);
}

/// With `--checksum`, files whose digest the index knows are compared with the index, not
/// with DST: a folder swapped for a link (or a file deleted from DST) is never restored.
#[test]
fn symlink_planted_in_dst_is_replaced_with_checksum() {
    let (env, outside) = planted_setup();
    env.sync_ok(&["--checksum"]);
    plant(&env.dst.join("a"), &outside);
    let out = env.sync(&["--checksum"]);
    assert_outside_untouched(&outside);
    assert_code(&out, 0);
    assert!(
        fs::symlink_metadata(env.dst.join("a")).unwrap().is_dir(),
        "dst/a is still a link out of DST"
    );
    let have = files(&env.dst);
    let lost: Vec<_> = files(&env.src)
        .into_keys()
        .filter(|k| !have.contains_key(k))
        .collect();
    assert!(
        lost.is_empty(),
        "exit 0, yet DST lacks {lost:?}\n{}",
        stdout(&out)
    );
    assert_mirrored(&env.src, &env.dst, false);
}

/// A file DST lost behind the index's back comes back with `--checksum` too (the index
/// knows its digest, so the run compares with the index, never looks at DST).
#[test]
fn file_missing_from_dst_is_restored_with_checksum() {
    let env = TestEnv::new();
    env.write("keep.txt", "keep\n");
    env.write("lost.txt", "lost\n");
    env.sync_ok(&["--checksum"]);
    fs::remove_file(env.dst.join("lost.txt")).unwrap();
    let out = env.sync(&["--checksum"]);
    assert_code(&out, 0);
    assert!(
        env.dst.join("lost.txt").exists(),
        "--checksum counted lost.txt as unchanged but DST does not have it\n{}",
        stdout(&out)
    );
    assert_mirrored(&env.src, &env.dst, false);
}

/// A file DST lost behind the index's back comes back when its source's mode changed
/// meanwhile (which plans a metadata update, not a copy).
#[test]
fn file_missing_from_dst_is_restored_after_a_mode_change() {
    let env = TestEnv::new();
    env.write("keep.txt", "keep\n");
    let chmodded = env.write("chmodded.txt", "mode changes\n");
    env.sync_ok(&[]);
    fs::remove_file(env.dst.join("chmodded.txt")).unwrap();
    chmod(&chmodded, 0o600);
    let first = env.sync(&[]);
    let second = env.sync(&[]);
    assert!(
        first.status.code() == Some(0) || second.status.code() == Some(0),
        "two runs after the mode change both failed\n--- first\n{}\n--- second\n{}",
        stderr(&first),
        stderr(&second)
    );
    assert_code(&first, 0);
    assert_mirrored(&env.src, &env.dst, false);
}

/// `.datasafe/tmp` planted as a link to an outside folder: the leftover cleanup must not
/// delete the files there, and temp files must not be written there.
#[test]
fn planted_temp_folder_link_is_not_followed() {
    let (env, outside) = planted_setup();
    fs::create_dir_all(env.dst.join(".datasafe")).unwrap();
    plant(&env.dst.join(".datasafe/tmp"), &outside);
    let out = env.sync(&[]);
    assert_outside_untouched(&outside);
    // Refusing (one error, nothing written) or replacing the link are both fine.
    assert!(
        matches!(out.status.code(), Some(0..=2)),
        "{:?}\n{}",
        out.status,
        stderr(&out)
    );
    if out.status.code() == Some(0) {
        assert_mirrored(&env.src, &env.dst, false);
    }
}

/// `.datasafe/index.db` planted as a link to a name outside DST: the index must not be
/// created or written there.
#[test]
fn planted_index_link_is_not_followed() {
    let (env, outside) = planted_setup();
    fs::create_dir_all(env.dst.join(".datasafe")).unwrap();
    plant(
        &env.dst.join(".datasafe/index.db"),
        &outside.join("index.db"),
    );
    let out = env.sync(&[]);
    assert_outside_untouched(&outside);
    assert!(
        matches!(out.status.code(), Some(0..=2)),
        "{:?}\n{}",
        out.status,
        stderr(&out)
    );
}
