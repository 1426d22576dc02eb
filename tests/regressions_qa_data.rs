//! Regressions found by the QA pass over issue 10's data-loss and mirror-correctness
//! items, each driving the real binary in a temp tree.

use crate::common;

use chrono::Timelike;
use common::faults::{Tmpfs, noise};
use common::*;
use std::fs;
use std::os::unix::fs::symlink;

#[test]
fn regression_first_sync_restore_command_works_when_a_symlink_or_empty_folder_was_there() {
    let env = TestEnv::new();
    env.write("a.txt", "a\n");
    fs::create_dir_all(env.dst.join("empty")).unwrap();
    fs::create_dir_all(env.dst.join("links")).unwrap();
    fs::write(env.dst.join("file3.txt"), "three\n").unwrap();
    symlink("nowhere", env.dst.join("link")).unwrap();
    symlink("nowhere", env.dst.join("links/l")).unwrap();
    let out = env.sync_ok(&["--keep-versions", "0"]);
    let line = restore_line(&stderr(&out));
    let restored = run_restore_line(&env, &line);
    assert_code(&restored, 0);
    let target = env.dir.path().join("dst.before-datasafe");
    assert_eq!(
        fs::read_to_string(target.join("file3.txt")).unwrap(),
        "three\n"
    );
}

#[test]
fn regression_compressed_file_that_becomes_a_folder_is_logged_and_counted_as_deleted() {
    let env = TestEnv::new();
    env.write("f", "f as a file\n");
    env.sync_ok(&["--compress"]);
    fs::remove_file(env.src.join("f")).unwrap();
    env.write("f/inner.txt", "inside f\n");
    let out = env.sync_ok(&["--compress"]);
    let text = stdout(&out);
    assert!(text.contains("deleted f.gz\n"), "{text}");
    assert_eq!(count(&out, "Deleted"), 1, "{text}");
    assert!(!env.dst.join("f.gz").exists());
    assert_mirrored(&env.src, &env.dst, true);
    // With --no-delete the old file stays beside the folder, as any deleted file would.
    let env = TestEnv::new();
    env.write("f", "f as a file\n");
    env.sync_ok(&["--compress"]);
    fs::remove_file(env.src.join("f")).unwrap();
    env.write("f/inner.txt", "inside f\n");
    env.sync_ok(&["--compress", "--no-delete"]);
    assert!(env.dst.join("f.gz").is_file());
    assert!(env.dst.join("f/inner.txt.gz").is_file());
}

/// A moment (as `restore --at` reads it) after every stamp so far and before the next.
fn moment_between() -> String {
    let now = chrono::Local::now();
    let next = now + chrono::Duration::seconds(1);
    std::thread::sleep(
        (next.with_nanosecond(0).unwrap() - now)
            .to_std()
            .unwrap_or_default(),
    );
    let at = chrono::Local::now().format("%Y-%m-%d %H:%M:%S").to_string();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    at
}

#[test]
fn regression_restore_at_before_a_folder_became_a_symlink_brings_the_folder_back() {
    for compress in [false, true] {
        let flags: &[&str] = if compress { &["--compress"] } else { &[] };
        let env = TestEnv::new();
        env.write("d/a.txt", "a in d\n");
        env.write("other/b.txt", "b\n");
        env.sync_ok(flags);
        let at = moment_between();
        fs::remove_dir_all(env.src.join("d")).unwrap();
        symlink("other", env.src.join("d")).unwrap();
        env.sync_ok(flags);
        let target = env.dir.path().join("back");
        let out = env
            .cmd(["restore", "dst", "back", "--at", &at])
            .output()
            .unwrap();
        assert_code(&out, 0);
        assert_eq!(
            fs::read_to_string(target.join("d/a.txt")).unwrap(),
            "a in d\n"
        );
    }
}

#[test]
fn regression_watch_renaming_a_folder_keeps_an_anchored_excluded_file_inside_it() {
    let _lock = common::watcher::shared();
    let env = TestEnv::new();
    env.write("e/x.txt", "x\n");
    let flags = ["--exclude", "/e/keep", "--keep-versions", "0"];
    let w = common::watcher::Watcher::ready(&env, &flags, "w");
    // Only the mirror has it: excluded, so neither copied nor ever deleted.
    fs::write(env.dst.join("e/keep"), "mine, excluded\n").unwrap();
    fs::rename(env.src.join("e"), env.src.join("e2")).unwrap();
    env.write("marker.txt", "m");
    let ok = common::watcher::wait_until(std::time::Duration::from_secs(20), || {
        env.dst.join("e2/x.txt").exists() && env.dst.join("marker.txt").exists()
    });
    assert!(ok, "the rename was not mirrored{}", w.context());
    assert_eq!(
        fs::read_to_string(env.dst.join("e/keep")).ok().as_deref(),
        Some("mine, excluded\n"),
        "the excluded file went with the folder's rename{}",
        w.context()
    );
    assert!(!env.dst.join("e/x.txt").exists(), "{}", w.context());
}

#[test]
fn regression_compress_a_name_too_long_for_its_gz_is_stored_uncompressed_not_failed_forever() {
    let env = TestEnv::new();
    let names: Vec<String> = [253, 255]
        .iter()
        .map(|n| format!("{}.txt", "a".repeat(n - 4)))
        .collect();
    for name in &names {
        env.write(name, format!("{name} v1\n"));
    }
    env.write("short.txt", "short\n");
    let out = env.sync_ok(&["--compress"]);
    let err = stderr(&out);
    assert_eq!(count(&out, "Failed"), 0, "{err}");
    assert_eq!(err.matches("is stored uncompressed").count(), 2, "{err}");
    for name in &names {
        assert_eq!(
            fs::read_to_string(env.dst.join(name)).unwrap(),
            format!("{name} v1\n")
        );
    }
    assert!(env.dst.join("short.txt.gz").is_file());
    // The next run has nothing to do and says nothing; an update goes through.
    let again = env.sync_ok(&["--compress"]);
    assert_eq!(count(&again, "Files backed up"), 0, "{}", stdout(&again));
    assert!(stderr(&again).is_empty(), "{}", stderr(&again));
    env.write(&names[1], "v2\n");
    let out = env.sync_ok(&["--compress"]);
    assert_eq!(count(&out, "Updated"), 1, "{}", stdout(&out));
    assert_eq!(fs::read_to_string(env.dst.join(&names[1])).unwrap(), "v2\n");
    let verify = env
        .cmd(["verify", "dst", "--source", "src"])
        .output()
        .unwrap();
    assert_code(&verify, 0);
    let restored = env.cmd(["restore", "dst", "back"]).output().unwrap();
    assert_code(&restored, 0);
    assert_mirrored(&env.src, &env.dir.path().join("back"), false);
}

#[test]
fn regression_watch_a_source_deleted_and_made_again_stays_paused_and_deletes_nothing() {
    use common::watcher::{Watcher, holds_for, shared, wait_until};
    use std::time::Duration;
    let _lock = shared();
    let env = TestEnv::new();
    env.write("a.txt", "a\n");
    env.write("b.txt", "b\n");
    let w = Watcher::ready(&env, &["--keep-versions", "0"], "w");
    // ext4 gives the new folder the inode number the old one had.
    fs::remove_dir_all(&env.src).unwrap();
    fs::create_dir(&env.src).unwrap();
    env.write("new.txt", "new\n");
    let said = wait_until(Duration::from_secs(10), || {
        let err = w.stderr();
        err.contains("a different folder or filesystem")
            || err.contains("no longer the folder being mirrored")
    });
    assert!(said, "no message that SRC is another folder{}", w.context());
    let kept = holds_for(Duration::from_secs(2), || {
        env.dst.join("a.txt").exists() && !env.dst.join("new.txt").exists()
    });
    assert!(
        kept,
        "the mirror followed a folder made again{}",
        w.context()
    );
}

#[test]
fn regression_a_file_bigger_than_the_disk_does_not_prune_every_version_for_nothing() {
    if !is_root() {
        eprintln!("skipping: needs root to mount a small tmpfs");
        return;
    }
    let env = TestEnv::new();
    let mount = Tmpfs::mount(&env.dir.path().join("small"), "3m");
    let dst = mount.dir.join("dst");
    let sync = || {
        env.cmd(["sync".as_ref(), env.src.as_os_str(), dst.as_os_str()])
            .output()
            .unwrap()
    };
    let file = env.write("d.bin", noise(1, 900_000));
    assert_code(&sync(), 0);
    fs::write(&file, noise(2, 900_000)).unwrap();
    assert_code(&sync(), 0);
    let listed = |dst: &std::path::Path| {
        let out = env
            .cmd(["versions".as_ref(), dst.as_os_str()])
            .output()
            .unwrap();
        stdout(&out).lines().count()
    };
    assert_eq!(listed(&dst), 1);
    // 5 MB on a 3 MB disk: no pruning makes room, so the version stays.
    env.write("huge.bin", noise(3, 5_000_000));
    let out = sync();
    assert_code(&out, 1);
    assert!(
        !stdout(&out).contains("Pruned version:"),
        "{}",
        stdout(&out)
    );
    assert!(stderr(&out).contains("versions kept"), "{}", stderr(&out));
    assert_eq!(listed(&dst), 1, "{}", stdout(&out));
}

#[test]
fn regression_watch_compressed_file_that_becomes_a_folder_is_logged_and_counted_as_deleted() {
    use common::watcher::{Watcher, shared, wait_until};
    let _lock = shared();
    let env = TestEnv::new();
    env.write("f", "f as a file\n");
    let w = Watcher::ready(&env, &["--compress"], "w");
    fs::remove_file(env.src.join("f")).unwrap();
    env.write("f/inner.txt", "inside f\n");
    let ok = wait_until(std::time::Duration::from_secs(20), || {
        env.dst.join("f/inner.txt.gz").exists() && w.stdout().contains("deleted f.gz\n")
    });
    assert!(
        ok,
        "the replaced f.gz was not logged as deleted{}",
        w.context()
    );
    assert!(!env.dst.join("f.gz").exists(), "{}", w.context());
    let out = env.cmd(["versions", "dst", "f"]).output().unwrap();
    assert_code(&out, 0);
    assert!(stdout(&out).contains("  f  "), "{}", stdout(&out));
}

#[test]
fn regression_first_sync_with_compress_keeps_a_plain_file_that_was_there_under_the_same_name() {
    let env = TestEnv::new();
    let src_file = env.write("a.txt", "the source's a\n");
    fs::create_dir_all(&env.dst).unwrap();
    let theirs = env.dst.join("a.txt");
    fs::write(&theirs, "someone else's a, same mtime\n").unwrap();
    let mtime = filetime::FileTime::from_last_modification_time(&fs::metadata(&src_file).unwrap());
    filetime::set_file_mtime(&theirs, mtime).unwrap();
    let out = env.sync_ok(&["--compress", "--keep-versions", "0"]);
    assert_mirrored(&env.src, &env.dst, true);
    let line = restore_line(&stderr(&out));
    assert_code(&run_restore_line(&env, &line), 0);
    let target = env.dir.path().join("dst.before-datasafe");
    assert_eq!(
        fs::read_to_string(target.join("a.txt")).unwrap(),
        "someone else's a, same mtime\n"
    );
}

#[test]
fn regression_first_sync_with_compress_restores_a_plain_file_named_gz_that_was_there() {
    let env = TestEnv::new();
    env.write("a.txt", "a\n");
    fs::create_dir_all(&env.dst).unwrap();
    fs::write(env.dst.join("notes.gz"), "plain text, named gz\n").unwrap();
    let out = env.sync_ok(&["--compress"]);
    let line = restore_line(&stderr(&out));
    let restored = run_restore_line(&env, &line);
    assert_code(&restored, 0);
    let target = env.dir.path().join("dst.before-datasafe");
    assert_eq!(
        fs::read_to_string(target.join("notes.gz")).unwrap(),
        "plain text, named gz\n"
    );
}
