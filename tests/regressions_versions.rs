//! Regressions of issue 10 in the executor and versions, driven through the binary: a
//! path that changes type keeps what it replaces (sync and watch); the first sync into a
//! folder that is no mirror keeps what was there and says how to get it back; a name
//! too long for its version name still updates, lists and restores; growing files; a
//! full disk and a size budget prune the oldest versions.

use crate::common;

use common::faults::{Tmpfs, noise};
use common::watcher::*;
use common::*;
use std::fs;
use std::io::Write;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Every version under DST as `datasafe versions DST --json` lists it: (path, time).
fn listed_versions(env: &TestEnv, dst: &Path) -> Vec<(String, String)> {
    let out = env
        .cmd(["versions".as_ref(), dst.as_os_str(), "--json".as_ref()])
        .output()
        .unwrap();
    assert_code(&out, 0);
    let list: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["path"].as_str().unwrap().to_string(),
                v["time"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn listed_paths(env: &TestEnv, dst: &Path) -> Vec<String> {
    let mut paths: Vec<String> = listed_versions(env, dst).into_iter().map(|v| v.0).collect();
    paths.sort();
    paths
}

/// SRC before: folder `d/` (two files), file `f`, folder `l/` (one file).
fn plant_types(env: &TestEnv) {
    env.write("d/a.txt", "a in d\n");
    env.write("d/b.txt", "b in d\n");
    env.write("f", "f as a file\n");
    env.write("l/c.txt", "c in l\n");
}

/// SRC after: `d` a file, `f` a folder, `l` a symlink.
fn change_types(env: &TestEnv) {
    fs::remove_dir_all(env.src.join("d")).unwrap();
    env.write("d", "d is a file now\n");
    fs::remove_file(env.src.join("f")).unwrap();
    env.write("f/inner.txt", "inside f\n");
    fs::remove_dir_all(env.src.join("l")).unwrap();
    symlink("d", env.src.join("l")).unwrap();
}

const REPLACED: [&str; 4] = ["d/a.txt", "d/b.txt", "f", "l/c.txt"];

#[test]
fn regression_sync_a_path_that_changes_type_keeps_and_reports_what_it_replaced() {
    let env = TestEnv::new();
    plant_types(&env);
    env.sync_ok(&[]);
    change_types(&env);
    let out = env.sync_ok(&[]);
    let text = stdout(&out);
    for line in ["deleted d/ (2 files)", "deleted f\n", "deleted l/ (1 file)"] {
        assert!(text.contains(line), "no {line:?} in:\n{text}");
    }
    assert_eq!(count(&out, "Deleted"), 4, "{text}");
    assert_mirrored(&env.src, &env.dst, false);
    assert_eq!(listed_paths(&env, &env.dst), REPLACED);
    // The next run finds nothing left to do (the index forgot what went).
    let again = env.sync_ok(&[]);
    assert_eq!(count(&again, "Deleted"), 0, "{}", stdout(&again));
    assert_eq!(count(&again, "Files backed up"), 0, "{}", stdout(&again));
}

#[test]
fn regression_watch_a_path_that_changes_type_keeps_and_reports_what_it_replaced() {
    let _lock = shared();
    let env = TestEnv::new();
    plant_types(&env);
    let w = Watcher::ready(&env, &[], "w");
    change_types(&env);
    w.wait_mirrored(&env.src, &env.dst, false);
    let done = wait_until(Duration::from_secs(20), || {
        listed_paths(&env, &env.dst) == REPLACED
    });
    assert!(
        done,
        "versions: {:?}{}",
        listed_paths(&env, &env.dst),
        w.context()
    );
    let ok = wait_until(Duration::from_secs(10), || {
        let text = w.stdout();
        text.contains("deleted d/ (2 files)")
            && text.contains("deleted f\n")
            && text.contains("deleted l/ (1 file)")
    });
    assert!(ok, "the replaced paths were not logged{}", w.context());
}

#[test]
fn regression_first_sync_into_a_folder_that_is_no_mirror_keeps_what_was_there() {
    let env = TestEnv::new();
    env.write("file1.txt", "one\n");
    env.write("file2.txt", "two\n");
    fs::create_dir_all(env.dst.join("old")).unwrap();
    fs::write(env.dst.join("file3.txt"), "three, not in the source\n").unwrap();
    fs::write(env.dst.join("old/x.txt"), "an old note\n").unwrap();
    // --keep-versions 0 and few files: nothing else would keep them.
    let out = env.sync_ok(&["--keep-versions", "0"]);
    assert!(!env.dst.join("file3.txt").exists());
    assert!(!env.dst.join("old").exists());
    assert_mirrored(&env.src, &env.dst, false);
    let err = stderr(&out);
    let warnings: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("before it became a mirror"))
        .collect();
    assert_eq!(warnings.len(), 1, "{err}");
    assert!(warnings[0].contains("2 files"), "{err}");
    assert!(warnings[0].contains(".datasafe/versions"), "{err}");
    // The command it gives brings them back.
    let line = restore_line(&err);
    let restored = run_restore_line(&env, &line);
    assert_code(&restored, 0);
    let target = env.dir.path().join("dst.before-datasafe");
    assert_eq!(
        fs::read_to_string(target.join("file3.txt")).unwrap(),
        "three, not in the source\n"
    );
    assert_eq!(
        fs::read_to_string(target.join("old/x.txt")).unwrap(),
        "an old note\n"
    );
    // Now DST is a mirror: a file deleted from the source goes as usual (no versions
    // with --keep-versions 0, no warning), even after the index is lost.
    fs::remove_file(env.dst.join(".datasafe/index.db")).unwrap();
    fs::remove_file(env.src.join("file2.txt")).unwrap();
    let out = env.sync_ok(&["--keep-versions", "0"]);
    assert!(
        !stderr(&out).contains("before it became a mirror"),
        "{}",
        stderr(&out)
    );
    assert_mirrored(&env.src, &env.dst, false);
}

#[test]
fn regression_a_first_pass_without_deletions_leaves_what_was_there_for_the_next_to_keep() {
    let env = TestEnv::new();
    env.write("file1.txt", "one\n");
    fs::create_dir_all(&env.dst).unwrap();
    fs::write(env.dst.join("file3.txt"), "not in the source\n").unwrap();
    // The first pass deletes nothing, so DST is not yet a mirror after it.
    env.sync_ok(&["--no-delete"]);
    assert!(env.dst.join("file3.txt").exists());
    let out = env.sync_ok(&["--keep-versions", "0"]);
    assert!(!env.dst.join("file3.txt").exists());
    let line = restore_line(&stderr(&out));
    assert!(line.ends_with(" file3.txt"), "{line}");
    assert_code(&run_restore_line(&env, &line), 0);
    let target = env.dir.path().join("dst.before-datasafe");
    assert_eq!(
        fs::read_to_string(target.join("file3.txt")).unwrap(),
        "not in the source\n"
    );
}

#[test]
fn regression_first_sync_keeps_a_file_it_replaces_in_a_folder_that_is_no_mirror() {
    let env = TestEnv::new();
    env.write("a.txt", "the source's a\n");
    fs::create_dir_all(&env.dst).unwrap();
    fs::write(env.dst.join("a.txt"), "someone else's a\n").unwrap();
    common::set_mtime(&env.dst.join("a.txt"), 1_600_000_000, 0);
    let out = env.sync_ok(&["--keep-versions", "0"]);
    assert_mirrored(&env.src, &env.dst, false);
    let line = restore_line(&stderr(&out));
    assert_code(&run_restore_line(&env, &line), 0);
    let target = env.dir.path().join("dst.before-datasafe");
    assert_eq!(
        fs::read_to_string(target.join("a.txt")).unwrap(),
        "someone else's a\n"
    );
}

#[test]
fn regression_a_name_too_long_for_its_version_still_updates_lists_and_restores() {
    let env = TestEnv::new();
    // 80 CJK characters: 240 bytes, 244 with the extension; its version name is longer
    // than the 255 bytes a name may have.
    let name = format!("{}.txt", "漢".repeat(80));
    let file = env.write(&name, "first\n");
    common::set_mtime(&file, 1_700_000_000, 0);
    env.sync_ok(&[]);
    env.write(&name, "second, longer\n");
    common::set_mtime(&file, 1_700_000_100, 0);
    let out = env.sync_ok(&[]);
    assert_eq!(count(&out, "Failed"), 0);
    assert_mirrored(&env.src, &env.dst, false);
    let listed = listed_versions(&env, &env.dst);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].0, name);
    // Every name under the versions folder fits.
    for entry in walkdir::WalkDir::new(env.dst.join(".datasafe/versions")) {
        let entry = entry.unwrap();
        assert!(entry.file_name().len() <= 255, "{}", entry.path().display());
    }
    let target = env.dir.path().join("restored");
    let out = env
        .cmd([
            "restore".as_ref(),
            env.dst.as_os_str(),
            target.as_os_str(),
            "--at".as_ref(),
            listed[0].1.as_ref(),
        ])
        .output()
        .unwrap();
    assert_code(&out, 0);
    assert_eq!(fs::read_to_string(target.join(&name)).unwrap(), "first\n");
    // And a gzipped mirror of the same name.
    let gz = env.dir.path().join("gz");
    let sync_gz = || {
        let out = env
            .cmd([
                "sync".as_ref(),
                env.src.as_os_str(),
                gz.as_os_str(),
                "--compress".as_ref(),
            ])
            .output()
            .unwrap();
        assert_code(&out, 0);
    };
    sync_gz();
    env.write(&name, "third\n");
    common::set_mtime(&file, 1_700_000_200, 0);
    sync_gz();
    assert_eq!(listed_paths(&env, &gz), [name]);
}

/// The regular files (copies with bytes) under DST's versions folder.
fn version_copies(dst: &Path) -> usize {
    walkdir::WalkDir::new(dst.join(".datasafe/versions"))
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file() && !e.file_name().to_string_lossy().ends_with(".name"))
        .count()
}

#[test]
fn regression_an_appended_file_keeps_no_copy_as_a_version_at_each_copy() {
    let env = TestEnv::new();
    let log = env.write("app.log", "line 0\n");
    env.sync_ok(&[]);
    let before_appends = chrono::Local::now().format("%Y-%m-%d %H:%M:%S").to_string();
    for i in 1..=5 {
        let mut f = fs::OpenOptions::new().append(true).open(&log).unwrap();
        writeln!(f, "line {i}").unwrap();
        drop(f);
        common::set_mtime(&log, 1_700_000_000 + i, 0);
        let out = env.sync_ok(&[]);
        assert_eq!(count(&out, "Files backed up"), 1);
    }
    assert_mirrored(&env.src, &env.dst, false);
    assert_eq!(version_copies(&env.dst), 0, "an appended file kept a copy");
    let out = env
        .cmd([
            "versions".as_ref(),
            env.dst.as_os_str(),
            "--summary".as_ref(),
            "--json".as_ref(),
        ])
        .output()
        .unwrap();
    let usage: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(usage["total"]["bytes"], 0, "{usage}");
    // No version is listed (a prefix marker holds no bytes and is no version), yet the
    // older state still restores: before the appends, the first line alone.
    let listed = listed_versions(&env, &env.dst);
    assert!(listed.is_empty(), "{listed:?}");
    let target = env.dir.path().join("restored");
    let out = env
        .cmd([
            "restore".as_ref(),
            env.dst.as_os_str(),
            target.as_os_str(),
            "--at".as_ref(),
            before_appends.as_ref(),
        ])
        .output()
        .unwrap();
    assert_code(&out, 0);
    assert_eq!(
        fs::read_to_string(target.join("app.log")).unwrap(),
        "line 0\n"
    );
    // A rewrite (not only an append) still keeps the old copy.
    env.write("app.log", "rotated\n");
    env.sync_ok(&[]);
    assert_eq!(version_copies(&env.dst), 1);
}

#[test]
fn regression_a_file_still_being_written_is_no_failure_and_only_a_prefix_lands() {
    let env = TestEnv::new();
    let big = env.write("growing.bin", noise(7, 48 << 20));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (big, stop) = (big.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut f = fs::OpenOptions::new().append(true).open(&big).unwrap();
            let chunk = noise(8, 4096);
            while !stop.load(Ordering::SeqCst) {
                f.write_all(&chunk).unwrap();
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };
    let out = env.sync(&["--jobs", "1"]);
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    let err = stderr(&out);
    assert_code(&out, 0);
    assert_eq!(count(&out, "Failed"), 0, "{err}");
    assert!(err.contains("was still being written"), "{err}");
    assert!(!err.contains("kept changing"), "{err}");
    // What landed is a prefix of the file.
    let copy = fs::read(env.dst.join("growing.bin")).unwrap();
    let now = fs::read(&big).unwrap();
    assert!(
        copy.len() >= 48 << 20 && now.starts_with(&copy),
        "not a prefix"
    );
    // Once it is quiet, the next run copies it whole.
    let out = env.sync_ok(&[]);
    assert!(!stderr(&out).contains("still being written"));
    assert_mirrored(&env.src, &env.dst, false);
}

#[test]
fn regression_versions_max_size_prunes_the_oldest_versions_past_the_budget() {
    let env = TestEnv::new();
    let file = env.write("data.bin", noise(1, 100_000));
    env.sync_ok(&[]);
    for i in 2..=6u64 {
        fs::write(&file, noise(i, 100_000)).unwrap();
        common::set_mtime(&file, 1_700_000_000 + i as i64, 0);
        env.sync_ok(&["--versions-max-size", "250KB"]);
    }
    let out = env
        .cmd([
            "versions".as_ref(),
            env.dst.as_os_str(),
            "--summary".as_ref(),
            "--json".as_ref(),
        ])
        .output()
        .unwrap();
    assert_code(&out, 0);
    let usage: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    let (n, bytes) = (
        usage["total"]["count"].as_u64().unwrap(),
        usage["total"]["bytes"].as_u64().unwrap(),
    );
    assert_eq!((n, bytes), (2, 200_000), "{usage}");
    assert_eq!(usage["folders"][0]["folder"], ".", "{usage}");
    // The newest two are the ones left (also when the runs fall within one second and
    // pruning freed the first sequence numbers): the content of runs 4 and 5.
    let root = env.dst.join(".datasafe/versions");
    let mut kept: Vec<Vec<u8>> = fs::read_dir(&root)
        .unwrap()
        .map(|e| fs::read(e.unwrap().path()).unwrap())
        .collect();
    kept.sort();
    let mut want = vec![noise(4, 100_000), noise(5, 100_000)];
    want.sort();
    assert!(kept == want, "the oldest versions were not the ones pruned");
    let text = env
        .cmd([
            "versions".as_ref(),
            env.dst.as_os_str(),
            "--summary".as_ref(),
        ])
        .output()
        .unwrap();
    assert!(stdout(&text).contains(": 2, "), "{}", stdout(&text));
    // The config key does the same.
    let config = env.dir.path().join("c.toml");
    fs::write(
        &config,
        format!(
            "versions_max_size = 100000\n[[mirror]]\nsource = {:?}\ndest = {:?}\n",
            env.src, env.dst
        ),
    )
    .unwrap();
    fs::write(&file, noise(9, 100_000)).unwrap();
    let out = env
        .cmd(["sync".as_ref(), "--config".as_ref(), config.as_os_str()])
        .output()
        .unwrap();
    assert_code(&out, 0);
    assert!(
        stdout(&out).contains("Pruned version:"),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    assert_eq!(fs::read_dir(&root).unwrap().count(), 1);
}

#[test]
fn regression_a_full_disk_prunes_the_oldest_versions_so_live_files_update() {
    if !is_root() {
        eprintln!("skipping: needs root to mount a small tmpfs");
        return;
    }
    let env = TestEnv::new();
    let mount = Tmpfs::mount(&env.dir.path().join("small"), "4m");
    let dst: PathBuf = mount.dir.join("dst");
    let file = env.write("big.bin", noise(1, 1 << 20));
    let sync = || {
        env.cmd(["sync".as_ref(), env.src.as_os_str(), dst.as_os_str()])
            .output()
            .unwrap()
    };
    assert_code(&sync(), 0);
    let mut pruned = false;
    for i in 2..=7u64 {
        fs::write(&file, noise(i, 1 << 20)).unwrap();
        let out = sync();
        assert_code(&out, 0);
        assert_eq!(fs::read(dst.join("big.bin")).unwrap(), noise(i, 1 << 20));
        pruned |= stdout(&out).contains("Pruned version:");
    }
    assert!(pruned, "no version was pruned to make room");
    assert_mirrored(&env.src, &dst, false);
}

#[test]
fn regression_watch_an_appended_log_with_max_wait_keeps_no_copy_per_copy() {
    let _lock = shared();
    let env = TestEnv::new();
    let log = env.write("app.log", "start\n");
    let w = Watcher::ready(&env, &["--max-wait", "300ms"], "w");
    // Appended to for about two seconds, never quiet for a debounce: copied every
    // max-wait while it grows.
    let mut f = fs::OpenOptions::new().append(true).open(&log).unwrap();
    for i in 0..100 {
        writeln!(f, "line {i}: {}", "x".repeat(200)).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(f);
    w.wait_mirrored(&env.src, &env.dst, false);
    let copies = w.stdout().matches("copied app.log").count();
    assert!(
        copies >= 3,
        "the log was not copied while it grew{}",
        w.context()
    );
    assert_eq!(
        version_copies(&env.dst),
        0,
        "a grown log kept copies{}",
        w.context()
    );
    let listed = listed_versions(&env, &env.dst);
    assert!(listed.is_empty(), "versions: {listed:?}{}", w.context());
    let err = w.stderr();
    assert!(!err.contains("kept changing"), "{}", w.context());
    assert!(!err.contains("error"), "{}", w.context());
}
