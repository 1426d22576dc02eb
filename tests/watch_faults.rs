//! Fault injection against a running `datasafe watch`: SIGKILL in the middle of a burst
//! of thousands of files (then a restart), a full disk, a destination that stops being
//! writable, a destination removed from under the watcher, and a file truncated, grown
//! and replaced while it is copied.
//!
//! Each test holds the shared watcher lock (`common::watcher::shared`). Tests that need
//! root (a tmpfs, dropping to uid 65534) skip with a reason when not root. Every wait
//! polls with a deadline; the only sleeps that are not polls pace the fault itself (the
//! delay before a SIGKILL, the rhythm of a writer). With `DATASAFE_LONG=1`
//! (`scripts/long_tests.sh`) the SIGKILL test runs 10 rounds instead of 2.

use crate::common;

use common::faults::*;
use common::watcher::*;
use common::*;
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The window over which a watcher facing a fault must stay alive and idle.
const WINDOW: Duration = Duration::from_secs(3);
/// The CPU time it may use in that window (a busy loop would use the whole of it).
const IDLE_CPU: Duration = Duration::from_millis(750);

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// Asserts every file DST holds is, byte for byte, what its source holds now: nothing
/// torn or partial under a final name.
fn assert_no_torn(src: &Path, dst: &Path, when: &str) {
    let now = files(src);
    let bad: Vec<String> = files(dst)
        .into_iter()
        .filter(|(rel, content)| now.get(rel) != Some(content))
        .map(|(rel, content)| {
            let want = now.get(&rel).map(Vec::len);
            format!(
                "  {}: {} bytes, source {want:?}",
                rel.display(),
                content.len()
            )
        })
        .collect();
    assert!(
        bad.is_empty(),
        "{when}: files in DST unlike their source:\n{}",
        bad.join("\n")
    );
}

/// `datasafe verify DST`.
fn verify(env: &TestEnv, dst: &Path) -> Output {
    env.cmd([
        std::ffi::OsStr::new("verify"),
        dst.as_os_str(),
        std::ffi::OsStr::new("-q"),
    ])
    .output()
    .unwrap()
}

/// Stops the watcher with SIGTERM (so it commits its index), then checks the mirror with
/// `datasafe verify`: exit 0 and no file DST holds that the index does not know.
fn stop_and_verify(w: &mut Watcher, env: &TestEnv, dst: &Path) {
    w.signal(libc::SIGTERM);
    let status = w.wait_exit(DEADLINE);
    assert_eq!(
        status.signal(),
        Some(libc::SIGTERM),
        "after SIGTERM the watcher stops cleanly, then dies by it{}",
        w.context()
    );
    let out = verify(env, dst);
    let text = stdout(&out);
    assert!(
        !text.contains("not in index"),
        "the index lost files:\n{text}"
    );
    assert_code(&out, 0);
}

/// The lines of `text` that start with `error:`.
fn error_lines(text: &str) -> Vec<&str> {
    text.lines().filter(|l| l.starts_with("error:")).collect()
}

/// Asserts the watcher stays alive for [`WINDOW`] using little CPU and printing at most
/// `max_errors` new error lines (a busy loop, or an error per turn of the loop, fails).
fn assert_calm(w: &mut Watcher, max_errors: usize, what: &str) {
    let cpu = w.cpu_time();
    let errors = error_lines(&w.stderr()).len();
    let alive = holds_for(WINDOW, || w.running());
    assert!(alive, "the watcher exited ({what}){}", w.context());
    let used = w.cpu_time().saturating_sub(cpu);
    assert!(
        used < IDLE_CPU,
        "the watcher used {used:?} of CPU in {WINDOW:?} ({what}){}",
        w.context()
    );
    let new = error_lines(&w.stderr()).len() - errors;
    assert!(
        new <= max_errors,
        "{new} more error lines in {WINDOW:?} ({what}){}",
        w.context()
    );
}

/// `datasafe watch SRC DST --debounce 50ms EXTRA...` as uid/gid 65534 (the binary copied
/// into the test folder when the target folder is private).
fn watch_as_nobody(env: &TestEnv, extra: &[&str], tag: &str) -> Watcher {
    let bin = binary_for_nobody(env);
    let out = env.dir.path().join(format!("{tag}.stdout"));
    let err = env.dir.path().join(format!("{tag}.stderr"));
    let child = Command::new("setpriv")
        .arg(format!("--reuid={NOBODY}"))
        .arg(format!("--regid={NOBODY}"))
        .arg("--clear-groups")
        .arg(bin)
        .arg("watch")
        .arg(&env.src)
        .arg(&env.dst)
        .args(["--debounce", DEBOUNCE])
        .args(extra)
        .current_dir(env.dir.path())
        .stdin(Stdio::null())
        .stdout(File::create(&out).unwrap())
        .stderr(File::create(&err).unwrap())
        .spawn()
        .unwrap();
    Watcher { child, out, err }
}

/// Waits until the watcher says it is watching (its start-up reconcile may still run).
fn wait_watching(w: &Watcher) {
    let ok = wait_until(START_DEADLINE, || w.stdout().contains("watching"));
    assert!(ok, "the watcher did not start{}", w.context());
}

/// Like [`Watcher::wait_mirrored`], with the longer start-up deadline (a restarted
/// watcher may have thousands of files to copy in a debug build).
fn wait_mirrored_long(w: &Watcher, src: &Path, dst: &Path) {
    if !wait_until(START_DEADLINE, || is_mirrored(src, dst, false)) {
        eprintln!("watcher output:{}", w.context());
        assert_mirrored(src, dst, false);
    }
}

// ---------------------------------------------------------------------------------------
// 1. SIGKILL mid-burst, then a restart
// ---------------------------------------------------------------------------------------

/// Files per burst, and how many folders they spread over.
const BURST: usize = 1500;
const BURST_DIRS: usize = 30;

/// Burst file `i` of round `round`: its name, then filler; every 100th is 256 KiB, so
/// some copies take long enough for the kill to land inside them.
fn burst_file(round: usize, i: usize) -> (String, Vec<u8>) {
    let rel = format!("r{round}/d{:02}/f{i:04}.dat", i % BURST_DIRS);
    let len = if i % 100 == 7 {
        256 << 10
    } else {
        64 + i % 900
    };
    let mut content = format!("{rel}\n").into_bytes();
    content.extend(noise((round * BURST + i) as u64, len));
    (rel, content)
}

/// Writes round `round`'s burst into `src`: each file complete under a temp name outside
/// SRC, then renamed in (so a copy never sees it half written), paced in small batches.
fn write_burst(src: PathBuf, staging: PathBuf, round: usize) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for d in 0..BURST_DIRS {
            fs::create_dir_all(src.join(format!("r{round}/d{d:02}"))).unwrap();
        }
        for i in 0..BURST {
            let (rel, content) = burst_file(round, i);
            fs::write(&staging, content).unwrap();
            fs::rename(&staging, src.join(rel)).unwrap();
            if i % 100 == 99 {
                // The burst's rhythm: the watcher copies while files keep coming.
                std::thread::sleep(Duration::from_millis(40));
            }
        }
    })
}

#[test]
fn sigkill_of_a_watcher_mid_burst_then_restart_converges_with_an_intact_index() {
    let _lock = shared();
    let env = TestEnv::new();
    let rounds = if long_mode() { 10 } else { 2 };
    let mut rng = Rng(0x5eed_0101);
    let staging = env.dir.path().join("burst.next");
    let mut w = Watcher::ready(&env, &[], "w0");
    let mut mid_copy = 0;
    for round in 0..rounds {
        let writer = write_burst(env.src.clone(), staging.clone(), round);
        // The fault: SIGKILL after a seeded random delay, while files still arrive or
        // are still being copied.
        std::thread::sleep(Duration::from_millis(rng.range(150, 900)));
        w.signal(libc::SIGKILL);
        let status = w.wait_exit(DEADLINE);
        let writing = !writer.is_finished();
        writer.join().unwrap();
        let mirrored = files(&env.dst).len();
        eprintln!(
            "round {round}: killed ({status}) with {mirrored} files mirrored, writer {}",
            if writing { "still writing" } else { "done" }
        );
        if writing || mirrored < files(&env.src).len() {
            mid_copy += 1;
        }
        assert_no_torn(
            &env.src,
            &env.dst,
            &format!("after the kill in round {round}"),
        );
        w = Watcher::start(&env, &env.src, &env.dst, &[], &format!("w{}", round + 1));
        wait_watching(&w);
    }
    assert!(
        mid_copy > 0,
        "no kill landed while the burst was still being mirrored"
    );
    wait_mirrored_long(&w, &env.src, &env.dst);
    let settled = wait_until(DEADLINE, || temp_files(&env.dst).is_empty());
    assert!(
        settled,
        "temp files left: {:?}{}",
        temp_files(&env.dst),
        w.context()
    );
    assert!(!w.stderr().contains("panicked"), "{}", w.context());
    stop_and_verify(&mut w, &env, &env.dst);
}

// ---------------------------------------------------------------------------------------
// 2. Disk full, and a destination that stops being writable
// ---------------------------------------------------------------------------------------

#[test]
fn disk_full_while_watching_names_the_file_stays_calm_and_converges_after() {
    let _lock = shared();
    if !is_root() {
        eprintln!("skipping disk_full_while_watching: needs root to mount a tmpfs");
        return;
    }
    let mut env = TestEnv::new();
    let guard = Tmpfs::mount(&env.dir.path().join("mnt"), "2m");
    env.dst = guard.dir.join("dst");
    let mut w = Watcher::ready(&env, &["--rescan", "2s"], "w");

    for i in 0..5 {
        env.write(format!("small/s{i}.txt"), noise(10 + i, 20_000));
    }
    let big = env.write("big.bin", noise(7, 3_000_000));
    let big_in_dst = env.dst.join("big.bin");
    let said = wait_until(DEADLINE, || {
        error_lines(&w.stderr()).iter().any(|l| {
            l.contains("no space left on device") && l.contains(&*big_in_dst.to_string_lossy())
        })
    });
    assert!(
        said,
        "no error naming {} and the full disk{}",
        big_in_dst.display(),
        w.context()
    );
    // What fits is mirrored; what does not is not there at all.
    let small = wait_until(DEADLINE, || {
        (0..5).all(|i| {
            let rel = format!("small/s{i}.txt");
            fs::read(env.dst.join(&rel)).ok() == fs::read(env.src.join(&rel)).ok()
        })
    });
    assert!(small, "the small files were not mirrored{}", w.context());
    assert!(!big_in_dst.exists(), "a partial big.bin under its name");
    assert_no_torn(&env.src, &env.dst, "on a full disk");
    // Each fallback rescan (2 s) may try big.bin again: one error each, no more.
    assert_calm(&mut w, 3, "disk full");

    guard.resize("64m");
    w.wait_mirrored(&env.src, &env.dst, false);
    assert_eq!(fs::read(&big_in_dst).unwrap(), fs::read(&big).unwrap());
    let settled = wait_until(DEADLINE, || temp_files(&env.dst).is_empty());
    assert!(settled, "temp files left: {:?}", temp_files(&env.dst));
    stop_and_verify(&mut w, &env, &env.dst);
    drop(guard);
}

#[test]
fn unwritable_dst_while_watching_is_a_clear_error_without_a_crash_loop() {
    let Some(env) = env_for_nobody("unwritable_dst_while_watching") else {
        return;
    };
    chown_tree(&env.dst, NOBODY);
    let _lock = shared();
    env.write("a.txt", "alpha\n");
    env.write("sub/b.txt", "beta\n");
    let mut w = watch_as_nobody(&env, &["--rescan", "2s"], "w");
    wait_watching(&w);
    w.wait_mirrored(&env.src, &env.dst, false);

    // DST becomes root's (folders 0755, its state folder too): uid 65534 can no longer
    // create a temp file or a name in it, as on a read-only mount.
    chown_tree(&env.dst, 0);
    env.write("new.txt", "new while DST is read only\n");
    env.write("sub/c.txt", "gamma\n");
    let new_in_dst = env.dst.join("new.txt");
    let said = wait_until(DEADLINE, || {
        error_lines(&w.stderr())
            .iter()
            .any(|l| l.contains("permission denied") && l.contains(&*new_in_dst.to_string_lossy()))
    });
    assert!(
        said,
        "no error naming {} and the refusal{}",
        new_in_dst.display(),
        w.context()
    );
    assert!(!new_in_dst.exists());
    // Each fallback rescan retries the two files: two errors each, no more.
    assert_calm(&mut w, 4, "DST unwritable");
    assert!(!w.stderr().contains("panicked"), "{}", w.context());

    chown_tree(&env.dst, NOBODY);
    w.wait_mirrored(&env.src, &env.dst, false);
}

// ---------------------------------------------------------------------------------------
// 3. DST removed while watching
// ---------------------------------------------------------------------------------------

#[test]
fn dst_removed_while_watching_is_recreated_without_an_error_per_event() {
    let _lock = shared();
    let env = TestEnv::new();
    for i in 0..20 {
        env.write(format!("d{}/f{i}.txt", i % 3), format!("file {i}\n"));
    }
    let mut w = Watcher::ready(&env, &[], "w");
    w.wait_mirrored(&env.src, &env.dst, false);

    fs::remove_dir_all(&env.dst).unwrap();
    let errors_before = error_lines(&w.stderr()).len();
    // Events keep coming after DST is gone (paced, so they are many batches).
    for i in 0..20 {
        env.write(format!("after/f{i}.txt"), format!("after {i}\n"));
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_mirrored_long(&w, &env.src, &env.dst);
    assert!(
        w.stderr().contains("creating it again"),
        "no message about DST being recreated{}",
        w.context()
    );
    let errors = error_lines(&w.stderr()).len() - errors_before;
    assert!(
        errors <= 2,
        "{errors} error lines after DST was removed{}",
        w.context()
    );
    assert_calm(&mut w, 0, "after DST came back");
    // It still watches.
    env.write("later.txt", "after the mirror was recreated\n");
    w.wait_mirrored(&env.src, &env.dst, false);
    assert!(temp_files(&env.dst).is_empty());
    stop_and_verify(&mut w, &env, &env.dst);
}

// ---------------------------------------------------------------------------------------
// 4. A file that changes while it is copied
// ---------------------------------------------------------------------------------------

/// Content of the changing file: generation `g` has byte `i` = a function of `g` and `i`,
/// the first 8 bytes being `g` itself. The writer only appends the generation's own
/// bytes, truncates, or replaces the file (by rename) with a new generation, so any whole
/// snapshot of the file is a prefix of one generation: anything else is a torn copy.
struct Generations(HashMap<u64, Vec<u8>>);

impl Generations {
    fn bytes(&mut self, g: u64, from: u64, to: u64) -> Vec<u8> {
        let head = g.to_le_bytes();
        let block = self
            .0
            .entry(g)
            .or_insert_with(|| noise(0xabc0_0000 + g, 1 << 16));
        (from..to)
            .map(|i| match i {
                0..8 => head[i as usize],
                _ => block[(i % (1 << 16)) as usize] ^ (i >> 16) as u8,
            })
            .collect()
    }

    /// True if `content` is a prefix of the generation its first 8 bytes name.
    fn is_whole(&mut self, content: &[u8]) -> bool {
        if content.len() < 8 {
            return false;
        }
        let g = u64::from_le_bytes(content[..8].try_into().unwrap());
        g <= 1_000_000 && self.bytes(g, 0, content.len() as u64) == content
    }
}

#[test]
fn file_truncated_grown_and_replaced_while_copied_ends_equal_while_watching() {
    let _lock = shared();
    let env = TestEnv::new();
    for i in 0..20 {
        env.write(format!("stable/{i:02}.txt"), format!("stable {i}\n"));
    }
    let hot = env.src.join("hot.log");
    let staging = env.dir.path().join("hot.next");
    let mut gens = Generations(HashMap::new());
    fs::write(&hot, gens.bytes(0, 0, 3 << 20)).unwrap();
    // --max-wait: the file never goes quiet, so only it gets it copied while it changes.
    let w = Watcher::ready(&env, &["--max-wait", "300ms"], "w");

    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (hot, staging, done) = (hot.clone(), staging.clone(), done.clone());
        std::thread::spawn(move || {
            let mut gens = Generations(HashMap::new());
            let mut rng = Rng(0x5eed_0107);
            let (mut g, mut len) = (0u64, 3u64 << 20);
            let mut ops = [0u32; 3];
            let until = Instant::now() + Duration::from_millis(2500);
            while Instant::now() < until {
                match rng.range(0, 3) {
                    op @ (0 | 1) if (op == 0 && len < 5 << 20) || len < 64 << 10 => {
                        let to = len + rng.range(64 << 10, 512 << 10);
                        let mut f = OpenOptions::new().append(true).open(&hot).unwrap();
                        f.write_all(&gens.bytes(g, len, to)).unwrap();
                        len = to;
                        ops[0] += 1;
                    }
                    0 | 1 => {
                        let to = rng.range(len / 4, len);
                        let f = OpenOptions::new().write(true).open(&hot).unwrap();
                        f.set_len(to).unwrap();
                        len = to;
                        ops[1] += 1;
                    }
                    _ => {
                        g += 1;
                        len = rng.range(1 << 20, 3 << 20);
                        fs::write(&staging, gens.bytes(g, 0, len)).unwrap();
                        fs::rename(&staging, &hot).unwrap();
                        ops[2] += 1;
                    }
                }
                // The fault's rhythm: changes land at varying points of a copy.
                std::thread::sleep(Duration::from_millis(rng.range(0, 20)));
            }
            done.store(true, Ordering::SeqCst);
            ops
        })
    };

    // While it changes, every copy DST shows is a whole snapshot of some moment.
    let dst_hot = env.dst.join("hot.log");
    let mut seen = Vec::new();
    while !done.load(Ordering::SeqCst) {
        let stamp = fs::metadata(&dst_hot).ok().map(|m| (m.ino(), m.len()));
        if let Some(stamp) = stamp
            && !seen.contains(&stamp)
            && let Ok(content) = fs::read(&dst_hot)
        {
            seen.push(stamp);
            assert!(
                gens.is_whole(&content),
                "DST's hot.log ({} bytes) is no whole snapshot of the source{}",
                content.len(),
                w.context()
            );
        }
        std::thread::sleep(POLL);
    }
    let [grown, truncated, replaced] = writer.join().unwrap();
    eprintln!(
        "{} copies seen while {grown} appends, {truncated} truncations, {replaced} replacements ran",
        seen.len()
    );
    assert!(grown > 0 && truncated > 0 && replaced > 0);
    // The first stamp is the start-up copy; at least one more came while it changed.
    assert!(
        seen.len() >= 2,
        "hot.log was never copied while it changed{}",
        w.context()
    );
    w.wait_mirrored(&env.src, &env.dst, false);
    assert!(!w.stderr().contains("panicked"), "{}", w.context());
}
