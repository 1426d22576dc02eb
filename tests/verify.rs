//! `datasafe verify` driven through the real binary: damage sync cannot see (a flipped
//! byte under a restored mtime, plain or gzipped), missing files, broken gzip, planted
//! symlinks, `--source`, `--config`, a missing index, and a watcher holding the lock.

use crate::common;

use common::watcher;
use common::*;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

/// Three files in two folders, a symlink and an empty folder.
fn sample_tree(env: &TestEnv) {
    env.write("docs/a.txt", "alpha");
    env.write("docs/report.txt", "quarterly numbers ".repeat(500));
    env.write(
        "top.bin",
        (0..70_000u32).map(|i| (i % 251) as u8).collect::<Vec<_>>(),
    );
    fs::create_dir_all(env.src.join("empty")).unwrap();
    symlink("docs/a.txt", env.src.join("link")).unwrap();
}

/// Files and symlinks in [`sample_tree`].
const SAMPLE_FILES: u64 = 4;

/// Runs `datasafe verify DST EXTRA...`.
fn verify(env: &TestEnv, extra: &[&str]) -> Output {
    let mut args: Vec<&OsStr> = vec!["verify".as_ref(), env.dst.as_os_str()];
    args.extend(extra.iter().map(OsStr::new));
    env.cmd(args).output().unwrap()
}

/// The lines of stdout that start with `prefix`, sorted (workers finish in any order).
fn lines_with(out: &Output, prefix: &str) -> Vec<String> {
    let mut lines: Vec<String> = stdout(out)
        .lines()
        .filter(|l| l.starts_with(prefix))
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

/// Flips one byte of `path` in place and puts its mtime back, so size and mtime (all a
/// sync looks at) say nothing changed.
fn flip_byte(path: &Path, at: usize) {
    let meta = fs::metadata(path).unwrap();
    let mut bytes = fs::read(path).unwrap();
    bytes[at] ^= 0x20;
    fs::write(path, &bytes).unwrap();
    set_mtime(path, meta.mtime(), meta.mtime_nsec() as u32);
}

/// Every name under `root` (including `.datasafe`) with its size and mtime.
fn tree_state(root: &Path) -> BTreeMap<PathBuf, (u64, i64, i64)> {
    walkdir::WalkDir::new(root)
        .into_iter()
        .map(|e| {
            let e = e.unwrap();
            let m = e.path().symlink_metadata().unwrap();
            (e.path().to_path_buf(), (m.len(), m.mtime(), m.mtime_nsec()))
        })
        .collect()
}

#[test]
fn a_clean_mirror_verifies_and_nothing_in_it_is_touched() {
    let env = TestEnv::new();
    sample_tree(&env);
    env.sync_ok(&[]);
    let before = tree_state(&env.dst);
    let out = verify(&env, &[]);
    assert_code(&out, 0);
    let text = stdout(&out);
    let first = text.lines().find(|l| l.starts_with("Verify completed at "));
    let first = first.unwrap_or_else(|| panic!("no summary in:\n{text}"));
    assert!(first.contains(", Duration: "), "{first}");
    assert!(
        first.ends_with(&format!(", Files verified: {SAMPLE_FILES}")),
        "{first}"
    );
    for label in ["Damaged", "Missing", "Unchecked", "Not in index"] {
        assert_eq!(count(&out, label), 0, "{label}\n{text}");
    }
    assert!(
        !text.contains("Not in source"),
        "no source columns without --source"
    );
    assert_eq!(
        tree_state(&env.dst),
        before,
        "verify changed something in DST"
    );

    // The JSON line ends stdout and carries the counts and the (empty) lists.
    let out = verify(&env, &["--json", "-q"]);
    assert_code(&out, 0);
    let last = stdout(&out).lines().last().unwrap().to_string();
    let json: serde_json::Value = serde_json::from_str(&last).unwrap();
    assert_eq!(json["files_verified"], SAMPLE_FILES);
    assert_eq!(json["damaged"], 0);
    assert_eq!(json["paths"]["missing"], serde_json::json!([]));
    assert_eq!(
        tree_state(&env.dst),
        before,
        "verify changed something in DST"
    );
}

#[test]
fn a_flipped_byte_in_a_gzipped_file_under_its_old_mtime_is_damaged() {
    let env = TestEnv::new();
    sample_tree(&env);
    env.sync_ok(&["--compress"]);
    let gz = env.dst.join("docs/report.txt.gz");
    let len = fs::metadata(&gz).unwrap().len() as usize;
    flip_byte(&gz, len / 2);
    // sync compares size and mtime only, so it cannot see this.
    let again = env.sync_ok(&["--compress"]);
    assert_eq!(count(&again, "Files backed up"), 0);

    let out = verify(&env, &[]);
    assert_code(&out, 1);
    let damaged = lines_with(&out, "damaged: ");
    assert_eq!(damaged.len(), 1, "{}", stdout(&out));
    assert!(
        damaged[0].starts_with("damaged: docs/report.txt.gz ("),
        "{}",
        damaged[0]
    );
    assert_eq!(count(&out, "Damaged"), 1);
    assert_eq!(count(&out, "Files verified"), SAMPLE_FILES);
}

#[test]
fn a_flipped_byte_in_a_plain_file_of_the_same_size_and_mtime_is_damaged() {
    let env = TestEnv::new();
    sample_tree(&env);
    env.sync_ok(&[]);
    flip_byte(&env.dst.join("top.bin"), 1234);
    let out = verify(&env, &[]);
    assert_code(&out, 1);
    assert_eq!(
        lines_with(&out, "damaged: "),
        ["damaged: top.bin (content does not match the recorded SHA-256)"]
    );
}

#[test]
fn a_deleted_mirror_file_is_missing_and_names_are_escaped() {
    let env = TestEnv::new();
    sample_tree(&env);
    let odd = OsStr::from_bytes(b"odd\xffname\n.txt");
    env.write(odd, "bytes");
    env.sync_ok(&[]);
    fs::remove_file(env.dst.join("docs/a.txt")).unwrap();
    fs::remove_file(env.dst.join(odd)).unwrap();
    let out = verify(&env, &[]);
    assert_code(&out, 1);
    assert_eq!(
        lines_with(&out, "missing: "),
        ["missing: docs/a.txt", "missing: odd\\xffname\\n.txt"]
    );
    assert_eq!(count(&out, "Missing"), 2);
    // The link to the deleted file is still what the index recorded.
    assert!(lines_with(&out, "damaged: ").is_empty(), "{}", stdout(&out));
}

#[test]
fn a_corrupt_gzip_header_is_damaged() {
    let env = TestEnv::new();
    sample_tree(&env);
    env.sync_ok(&["--compress"]);
    let gz = env.dst.join("docs/a.txt.gz");
    let meta = fs::metadata(&gz).unwrap();
    let mut bytes = fs::read(&gz).unwrap();
    bytes[0] = b'P';
    bytes[1] = b'K';
    fs::write(&gz, &bytes).unwrap();
    set_mtime(&gz, meta.mtime(), meta.mtime_nsec() as u32);
    let out = verify(&env, &[]);
    assert_code(&out, 1);
    let damaged = lines_with(&out, "damaged: ");
    assert_eq!(damaged.len(), 1, "{}", stdout(&out));
    assert!(
        damaged[0].starts_with("damaged: docs/a.txt.gz (gzip data is corrupt"),
        "{}",
        damaged[0]
    );
}

#[test]
fn source_catches_a_changed_a_new_and_a_removed_source_file() {
    let env = TestEnv::new();
    sample_tree(&env);
    env.write("old.txt", "old");
    env.sync_ok(&["--compress"]);
    let src = env.src.to_str().unwrap();
    assert_code(&verify(&env, &["--source", src]), 0);

    // Same size and mtime: only the content tells.
    flip_byte(&env.src.join("docs/a.txt"), 0);
    env.write("new.txt", "new");
    env.write("newdir/deep/x", "x");
    fs::remove_file(env.src.join("old.txt")).unwrap();
    let out = verify(&env, &["--source", src]);
    assert_code(&out, 1);
    assert_eq!(
        lines_with(&out, "differs from source: "),
        ["differs from source: docs/a.txt"]
    );
    assert_eq!(
        lines_with(&out, "not in mirror: "),
        ["not in mirror: new.txt", "not in mirror: newdir/"]
    );
    assert_eq!(
        lines_with(&out, "not in source: "),
        ["not in source: old.txt"]
    );
    assert_eq!(count(&out, "Differs from source"), 1);
    assert_eq!(count(&out, "Not in mirror"), 2);
    assert_eq!(count(&out, "Not in source"), 1);
    // The mirror itself is intact: without --source there is nothing to report.
    assert_code(&verify(&env, &[]), 0);
}

#[test]
fn an_index_rebuilt_from_a_listing_is_unchecked_until_compared_with_the_source() {
    let env = TestEnv::new();
    sample_tree(&env);
    env.sync_ok(&[]);
    fs::remove_file(env.dst.join(".datasafe/index.db")).unwrap();
    env.sync_ok(&[]);
    let out = verify(&env, &[]);
    assert_code(&out, 0);
    assert_eq!(count(&out, "Unchecked"), 3, "{}", stdout(&out));
    assert_eq!(count(&out, "Files verified"), 1, "only the link");

    let src = env.src.to_str().unwrap();
    let out = verify(&env, &["--source", src]);
    assert_code(&out, 0);
    assert_eq!(count(&out, "Unchecked"), 0);
    assert_eq!(count(&out, "Files verified"), SAMPLE_FILES);

    flip_byte(&env.dst.join("docs/report.txt"), 10);
    let out = verify(&env, &["--source", src]);
    assert_code(&out, 1);
    assert_eq!(
        lines_with(&out, "differs from source: "),
        ["differs from source: docs/report.txt"]
    );
}

#[test]
fn files_unknown_to_the_index_are_warnings_unless_comparing_with_the_source() {
    let env = TestEnv::new();
    sample_tree(&env);
    env.sync_ok(&[]);
    fs::write(env.dst.join("stray.txt"), "stray").unwrap();
    fs::create_dir_all(env.dst.join("junk/more")).unwrap();
    fs::write(env.dst.join("junk/more/x"), "x").unwrap();
    let out = verify(&env, &[]);
    assert_code(&out, 0);
    assert_eq!(
        lines_with(&out, "not in index: "),
        ["not in index: junk/", "not in index: stray.txt"]
    );
    assert_eq!(count(&out, "Not in index"), 2);
    let out = verify(&env, &["--source", env.src.to_str().unwrap()]);
    assert_code(&out, 1);
}

#[test]
fn a_planted_symlink_is_reported_and_never_followed() {
    let env = TestEnv::new();
    sample_tree(&env);
    env.sync_ok(&[]);
    // Outside DST, with exactly the content the index recorded: following the link
    // would make the file look intact.
    let outside = env.dir.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("a.txt"), "alpha").unwrap();
    fs::remove_file(env.dst.join("top.bin")).unwrap();
    fs::copy(env.src.join("top.bin"), outside.join("top.bin")).unwrap();
    symlink(outside.join("top.bin"), env.dst.join("top.bin")).unwrap();
    let out = verify(&env, &[]);
    assert_code(&out, 1);
    assert_eq!(
        lines_with(&out, "damaged: "),
        ["damaged: top.bin (a symlink stands where a file should be; not followed)"]
    );

    // A folder swapped for a link to a faithful copy: the folder is damaged and its
    // files are not in the mirror.
    fs::remove_dir_all(env.dst.join("docs")).unwrap();
    fs::copy(env.src.join("docs/report.txt"), outside.join("report.txt")).unwrap();
    symlink(&outside, env.dst.join("docs")).unwrap();
    let out = verify(&env, &[]);
    assert_code(&out, 1);
    let text = stdout(&out);
    assert!(
        text.contains("damaged: docs/ (a symlink stands where a folder should be; not followed)"),
        "{text}"
    );
    assert_eq!(
        lines_with(&out, "missing: "),
        ["missing: docs/a.txt", "missing: docs/report.txt"]
    );
}

#[test]
fn no_index_or_no_destination_is_a_usage_error_naming_the_path() {
    let env = TestEnv::new();
    fs::create_dir_all(&env.dst).unwrap();
    let out = verify(&env, &[]);
    assert_code(&out, 2);
    let want = format!(
        "error: no index at {}/.datasafe/index.db: run datasafe sync SRC {} first\n",
        env.dst.display(),
        env.dst.display()
    );
    assert_eq!(stderr(&out), want);
    assert_eq!(stdout(&out), "");
    assert!(!env.dst.join(".datasafe").exists(), "verify created state");

    let gone = env.dir.path().join("gone");
    let out = env
        .cmd([OsStr::new("verify"), gone.as_os_str()])
        .output()
        .unwrap();
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains(&format!("{} does not exist", gone.display())),
        "{}",
        stderr(&out)
    );

    let out = verify(&env, &["--source"]);
    assert_code(&out, 2);
}

#[test]
fn config_verifies_every_enabled_pair() {
    let env = TestEnv::new();
    let make = |name: &str, compress: bool| {
        let src = env.dir.path().join(format!("{name}-src"));
        let dst = env.dir.path().join(format!("{name}-dst"));
        fs::create_dir_all(src.join("d")).unwrap();
        fs::write(src.join("d/f.txt"), format!("{name} content")).unwrap();
        let mut args = vec![OsStr::new("sync"), src.as_os_str(), dst.as_os_str()];
        if compress {
            args.push(OsStr::new("--compress"));
        }
        assert_code(&env.cmd(args).output().unwrap(), 0);
        (src, dst)
    };
    let (a_src, a_dst) = make("a", false);
    let (b_src, b_dst) = make("b", true);
    let (c_src, c_dst) = make("c", false);
    let config = env.dir.path().join("config.toml");
    let pair = |name: &str, src: &Path, dst: &Path, extra: &str| {
        format!(
            "[[mirror]]\nname = \"{name}\"\nsource = \"{}\"\ndest = \"{}\"\n{extra}\n",
            src.display(),
            dst.display()
        )
    };
    let text = [
        pair("a", &a_src, &a_dst, ""),
        pair("b", &b_src, &b_dst, "compress = true"),
        // Disabled: its damage must not count.
        pair("c", &c_src, &c_dst, "enabled = false"),
    ]
    .concat();
    fs::write(&config, text).unwrap();
    flip_byte(&c_dst.join("d/f.txt"), 0);
    let run = |extra: &[&str]| {
        let mut args = vec![
            OsStr::new("verify"),
            "--config".as_ref(),
            config.as_os_str(),
        ];
        args.extend(extra.iter().map(OsStr::new));
        env.cmd(args)
            .env("XDG_STATE_HOME", env.dir.path().join("state"))
            .env("XDG_CONFIG_HOME", env.dir.path().join("config"))
            .output()
            .unwrap()
    };
    let out = run(&[]);
    assert_code(&out, 0);
    assert_eq!(lines_with(&out, "pair ").len(), 2, "{}", stdout(&out));
    assert_eq!(count(&out, "Files verified"), 2);

    let gz = b_dst.join("d/f.txt.gz");
    let len = fs::metadata(&gz).unwrap().len() as usize;
    flip_byte(&gz, len - 6);
    fs::write(a_src.join("d/f.txt"), "changed").unwrap();
    let out = run(&["--source", "--json"]);
    assert_code(&out, 1);
    let text = stdout(&out);
    assert!(text.contains("[b] damaged: d/f.txt.gz ("), "{text}");
    assert!(text.contains("[a] differs from source: d/f.txt"), "{text}");
    assert!(
        text.contains("pair a: Files verified: 1, Damaged: 0"),
        "{text}"
    );
    assert!(
        text.contains("pair b: Files verified: 1, Damaged: 1"),
        "{text}"
    );
    let json: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(json["damaged"], 1);
    assert_eq!(json["pairs"][1]["name"], "b");
    assert_eq!(json["pairs"][1]["paths"]["damaged"][0], "d/f.txt.gz");
}

#[test]
fn verify_works_while_a_watcher_holds_the_lock() {
    let _shared = watcher::shared();
    let env = TestEnv::new();
    sample_tree(&env);
    let w = watcher::Watcher::ready(&env, &["--compress"], "watch");
    let files = SAMPLE_FILES + 1; // and the watcher helper's probe.txt

    // Mirrored, and the index committed (every 2 s): verify sees every file.
    let mut out = verify(&env, &[]);
    let ready = watcher::wait_until(watcher::DEADLINE, || {
        out = verify(&env, &[]);
        is_mirrored(&env.src, &env.dst, true)
            && out.status.code() == Some(0)
            && count(&out, "Files verified") == files
    });
    assert!(
        ready,
        "verify never saw the whole mirror\n--- last verify\n{}{}{}",
        stdout(&out),
        stderr(&out),
        w.context()
    );
    assert_eq!(count(&out, "Damaged"), 0);
    let lock = File::open(env.dst.join(".datasafe/lock")).unwrap();
    assert!(
        matches!(lock.try_lock(), Err(fs::TryLockError::WouldBlock)),
        "the watcher should hold the lock"
    );

    // The watcher does not look at DST, so damage there stays until verify finds it.
    let state_names = || {
        let mut v: Vec<_> = fs::read_dir(env.dst.join(".datasafe"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        v.sort();
        v
    };
    let before = state_names();
    let gz = env.dst.join("top.bin.gz");
    let len = fs::metadata(&gz).unwrap().len() as usize;
    flip_byte(&gz, len / 2);
    let out = verify(&env, &[]);
    assert_code(&out, 1);
    let damaged = lines_with(&out, "damaged: ");
    assert_eq!(damaged.len(), 1, "{}", stdout(&out));
    assert!(
        damaged[0].starts_with("damaged: top.bin.gz ("),
        "{}",
        damaged[0]
    );
    assert_eq!(state_names(), before, "verify added files to .datasafe");
}

/// Bytes the process has read so far (`rchar` in /proc/PID/io).
fn bytes_read(pid: u32) -> u64 {
    let io = fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    io.lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn ctrl_c_stops_in_the_middle_of_a_file_with_130() {
    let env = TestEnv::new();
    let mut noise = vec![0u8; 64 << 20];
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for chunk in noise.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    env.write("big.bin", &noise);
    drop(noise);
    env.sync_ok(&["-q"]);
    let mut child = env
        .cmd([
            OsStr::new("verify"),
            env.dst.as_os_str(),
            "--jobs".as_ref(),
            "1".as_ref(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Signal once it is well into the file (and long before its end).
    let deadline = Instant::now() + watcher::START_DEADLINE;
    while bytes_read(child.id()) < 4 << 20 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "verify ended before it could be interrupted"
        );
        assert!(Instant::now() < deadline, "verify never started reading");
        std::thread::sleep(Duration::from_millis(2));
    }
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let out = child.wait_with_output().unwrap();
    // It stops, then dies by SIGINT itself (a shell shows 130).
    assert_eq!(out.status.signal(), Some(libc::SIGINT), "{:?}", out.status);
    let text = stdout(&out);
    assert!(text.contains("Verify interrupted at "), "{text}");
    assert_eq!(
        count(&out, "Files verified"),
        0,
        "the file was read to its end"
    );
    assert!(
        stderr(&out).contains("interrupted: stopping the check"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_hard_link_broken_in_the_mirror_is_damaged_and_repair_links_it_again() {
    let env = TestEnv::new();
    env.write("docs/a.txt", "one file, three names");
    fs::hard_link(env.src.join("docs/a.txt"), env.src.join("b.txt")).unwrap();
    fs::hard_link(env.src.join("docs/a.txt"), env.src.join("docs/c.txt")).unwrap();
    env.write("single.txt", "alone");
    env.sync_ok(&[]);
    let ino = |n: &str| fs::metadata(env.dst.join(n)).unwrap().ino();
    assert_eq!(ino("b.txt"), ino("docs/a.txt"));
    assert_code(&verify(&env, &[]), 0);

    // A copy made by hand stands where a second name of the file was: same bytes, a
    // file of its own.
    fs::copy(env.dst.join("docs/a.txt"), env.dst.join("tmp")).unwrap();
    fs::rename(env.dst.join("tmp"), env.dst.join("b.txt")).unwrap();
    let out = verify(&env, &[]);
    assert_code(&out, 1);
    assert_eq!(
        lines_with(&out, "damaged:"),
        [
            "damaged: b.txt (a file of its own, no longer the same file as docs/a.txt: the \
          source's names are one file (hard links))"
        ]
    );
    assert!(stdout(&out).contains("Damaged: 1,"), "{}", stdout(&out));

    let src = env.src.to_str().unwrap();
    assert_code(&verify(&env, &["--source", src, "--repair"]), 0);
    assert_eq!(ino("b.txt"), ino("docs/a.txt"));
    assert_eq!(ino("docs/c.txt"), ino("docs/a.txt"));
    assert_code(&verify(&env, &[]), 0);
}

#[test]
fn a_mode_changed_in_the_mirror_is_damaged_and_repair_sets_it_in_place() {
    let env = TestEnv::new();
    env.write("d/g.txt", "gee");
    env.write("f.txt", "eff");
    env.sync_ok(&[]);
    fs::set_permissions(env.dst.join("f.txt"), fs::Permissions::from_mode(0o4777)).unwrap();
    fs::set_permissions(env.dst.join("d"), fs::Permissions::from_mode(0o700)).unwrap();
    let ino = fs::metadata(env.dst.join("f.txt")).unwrap().ino();
    let out = verify(&env, &[]);
    assert_code(&out, 1);
    assert_eq!(
        lines_with(&out, "damaged:"),
        [
            "damaged: d/ (mode is 700, the index recorded 755)",
            "damaged: f.txt (mode is 4777, the index recorded 644)"
        ]
    );
    let src = env.src.to_str().unwrap();
    let out = verify(&env, &["--source", src, "--repair"]);
    assert_code(&out, 0);
    assert!(stdout(&out).contains("Bytes copied: 0"), "{}", stdout(&out));
    let mode = |n: &str| fs::metadata(env.dst.join(n)).unwrap().mode() & 0o7777;
    assert_eq!((mode("f.txt"), mode("d")), (0o644, 0o755));
    assert_eq!(fs::metadata(env.dst.join("f.txt")).unwrap().ino(), ino);
    assert!(!env.dst.join(".datasafe/versions").exists());
    assert_code(&verify(&env, &[]), 0);
}
