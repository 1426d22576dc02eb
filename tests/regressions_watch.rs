//! Regression tests for the watcher side of issue 10, each named after what broke, all
//! driven through the real binary: `--no-delete` under `watch`, deletions that empty the
//! source, excluded names inside a deleted folder, a source whose filesystem is
//! unmounted or replaced (as root, on tmpfs and a loop-mounted ext4 image), every config
//! key on reload, a truthful `watch --dry-run` and `status`, and `datasafe release`.
//!
//! Every child runs with `HOME` and the XDG folders inside the test's temp folder, so
//! `status` and `release` see only this test's watcher. Waits poll with a deadline.

use crate::common;

use common::watcher::{DEADLINE, Watcher, holds_for, read_text, shared, stored_names, wait_until};
use common::*;
use serde_json::Value;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// The binary with `args`, its home and XDG folders inside the test's temp folder.
fn cmd<I, S>(env: &TestEnv, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let home = env.dir.path().join("home");
    fs::create_dir_all(&home).unwrap();
    let mut cmd = env.cmd(args);
    cmd.env("HOME", &home)
        .env("XDG_CONFIG_HOME", env.dir.path().join("xdg-config"))
        .env("XDG_STATE_HOME", env.dir.path().join("xdg-state"))
        .stdin(Stdio::null());
    cmd
}

fn run<I, S>(env: &TestEnv, args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    cmd(env, args).output().unwrap()
}

/// Starts `datasafe watch ARGS...` (no debounce added), output in files.
fn watch(env: &TestEnv, args: &[&OsStr], tag: &str) -> Watcher {
    let out = env.dir.path().join(format!("{tag}.stdout"));
    let err = env.dir.path().join(format!("{tag}.stderr"));
    let mut argv: Vec<&OsStr> = vec!["watch".as_ref()];
    argv.extend_from_slice(args);
    let child = cmd(env, argv)
        .stdout(File::create(&out).unwrap())
        .stderr(File::create(&err).unwrap())
        .spawn()
        .unwrap();
    Watcher { child, out, err }
}

/// `watch SRC DST --debounce 50ms EXTRA...` on the env's pair.
fn watch_pair(env: &TestEnv, extra: &[&str], tag: &str) -> Watcher {
    let mut args: Vec<&OsStr> = vec![
        env.src.as_os_str(),
        env.dst.as_os_str(),
        "--debounce".as_ref(),
        "50ms".as_ref(),
    ];
    args.extend(extra.iter().map(OsStr::new));
    watch(env, &args, tag)
}

fn wait_for(w: &Watcher, what: &str, cond: impl FnMut() -> bool) {
    assert!(
        wait_until(DEADLINE, cond),
        "timed out waiting for: {what}{}",
        w.context()
    );
}

/// The one pair `status --json` shows, if a watcher runs.
fn status_pair(env: &TestEnv) -> Option<Value> {
    let out = run(env, ["status", "--json"]);
    if out.status.code() != Some(0) {
        return None;
    }
    let report: Value = serde_json::from_str(stdout(&out).lines().next()?).ok()?;
    report["pairs"].as_array()?.first().cloned()
}

fn state_of(pair: &Value) -> String {
    pair["state"].as_str().unwrap_or_default().to_string()
}

/// Writes a marker file and waits until DST has it: every event before it was handled.
fn settle(w: &Watcher, env: &TestEnv, tag: &str) {
    let name = format!("marker-{tag}.txt");
    env.write(&name, tag);
    wait_for(w, &format!("{name} to be mirrored"), || {
        env.dst.join(&name).exists()
    });
}

/// The files (not folders) under `root`, relative, without `.datasafe`.
fn files(root: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = walkdir::WalkDir::new(root)
        .min_depth(1)
        .into_iter()
        .filter_entry(|e| e.file_name() != ".datasafe")
        .filter_map(Result::ok)
        .filter(|e| !e.file_type().is_dir())
        .map(|e| e.path().strip_prefix(root).unwrap().to_path_buf())
        .collect();
    out.sort();
    out
}

/// The number of files kept under `DST/.datasafe/versions`.
fn versions(dst: &Path) -> usize {
    files(&dst.join(".datasafe").join("versions")).len()
}

// ---------------------------------------------------------------------------------------
// Item 1: --no-delete / delete = false under watch
// ---------------------------------------------------------------------------------------

#[test]
fn regression_watch_no_delete_keeps_files_deleted_or_renamed_in_the_source() {
    let _lock = shared();
    let env = TestEnv::new();
    env.write("gone.txt", "gone");
    env.write("old-name.txt", "renamed");
    env.write("folder/inner.txt", "inner");
    let w = watch_pair(&env, &["--no-delete", "--keep-versions", "0"], "w");
    w.wait_ready(&env.dst, &stored_names(&env.src, false));

    fs::remove_file(env.src.join("gone.txt")).unwrap();
    fs::rename(env.src.join("old-name.txt"), env.src.join("new-name.txt")).unwrap();
    fs::rename(env.src.join("folder"), env.src.join("moved")).unwrap();
    settle(&w, &env, "1");
    wait_for(&w, "the renamed names to be mirrored", || {
        env.dst.join("new-name.txt").exists() && env.dst.join("moved/inner.txt").exists()
    });
    for kept in ["gone.txt", "old-name.txt", "folder/inner.txt"] {
        assert!(
            env.dst.join(kept).exists(),
            "{kept} was deleted from the mirror despite --no-delete{}",
            w.context()
        );
    }
    assert_eq!(
        fs::read_to_string(env.dst.join("old-name.txt")).unwrap(),
        "renamed"
    );
}

#[test]
fn regression_watch_config_delete_false_keeps_files_deleted_in_the_source() {
    let _lock = shared();
    let env = TestEnv::new();
    env.write("gone.txt", "gone");
    env.write("dir/a.txt", "a");
    let config = env.dir.path().join("cfg.toml");
    fs::write(
        &config,
        format!(
            "debounce = \"50ms\"\ndelete = false\n[[mirror]]\nsource = {:?}\ndest = {:?}\n",
            env.src, env.dst
        ),
    )
    .unwrap();
    let w = watch(&env, &["--config".as_ref(), config.as_os_str()], "w");
    w.wait_ready(&env.dst, &stored_names(&env.src, false));
    fs::remove_file(env.src.join("gone.txt")).unwrap();
    fs::remove_dir_all(env.src.join("dir")).unwrap();
    settle(&w, &env, "1");
    assert!(
        env.dst.join("gone.txt").exists() && env.dst.join("dir/a.txt").exists(),
        "delete = false was ignored by watch{}",
        w.context()
    );
}

// ---------------------------------------------------------------------------------------
// Item 3: deletions that empty the source are mirrored
// ---------------------------------------------------------------------------------------

#[test]
fn regression_watch_mirrors_the_deletions_that_empty_the_source() {
    let _lock = shared();
    let env = TestEnv::new();
    env.write("a.txt", "a");
    env.write("b.txt", "b");
    env.write("sub/c.txt", "c");
    let w = watch_pair(&env, &[], "w");
    w.wait_ready(&env.dst, &stored_names(&env.src, false));

    // One by one, then the rest at once: the source ends empty.
    fs::remove_file(env.src.join("a.txt")).unwrap();
    wait_for(&w, "a.txt to be deleted", || {
        !env.dst.join("a.txt").exists()
    });
    fs::remove_file(env.src.join("b.txt")).unwrap();
    fs::remove_dir_all(env.src.join("sub")).unwrap();
    wait_for(&w, "the mirror to be empty too", || {
        files(&env.dst).is_empty()
    });
    assert!(
        versions(&env.dst) >= 3,
        "the deleted files were not kept as versions{}",
        w.context()
    );
    let mut pair = Value::Null;
    let watching = wait_until(DEADLINE, || {
        pair = status_pair(&env).unwrap_or(Value::Null);
        state_of(&pair) == "watching"
    });
    assert!(watching, "status: {pair}{}", w.context());
    // And it goes on watching.
    env.write("later.txt", "later");
    wait_for(&w, "a later file to be mirrored", || {
        env.dst.join("later.txt").exists()
    });
}

// ---------------------------------------------------------------------------------------
// Item 11: a deleted folder keeps its excluded names in DST, as sync does
// ---------------------------------------------------------------------------------------

#[test]
fn regression_watch_deleting_a_folder_keeps_the_excluded_files_inside_it() {
    let _lock = shared();
    let env = TestEnv::new();
    env.write("dir/a.txt", "a");
    env.write("dir/keep.tmp", "excluded later");
    env.write("dir/deeper/b.txt", "b");
    env.write("dir/deeper/also.tmp", "excluded later");
    // Mirrored before the exclude existed: DST holds the .tmp files.
    env.sync_ok(&[]);
    let w = watch_pair(&env, &["--exclude", "*.tmp"], "w");
    w.wait_ready(&env.dst, &[PathBuf::from("dir/a.txt")]);
    settle(&w, &env, "0");

    fs::remove_dir_all(env.src.join("dir")).unwrap();
    wait_for(&w, "dir/a.txt to be deleted", || {
        !env.dst.join("dir/a.txt").exists() && !env.dst.join("dir/deeper/b.txt").exists()
    });
    settle(&w, &env, "1");
    for kept in ["dir/keep.tmp", "dir/deeper/also.tmp"] {
        assert!(
            env.dst.join(kept).exists(),
            "{kept} (excluded) was deleted with its folder{}",
            w.context()
        );
    }
}

// ---------------------------------------------------------------------------------------
// Telling the truth: watch --dry-run and status
// ---------------------------------------------------------------------------------------

#[test]
fn regression_watch_dry_run_never_says_it_mirrored() {
    let _lock = shared();
    let env = TestEnv::new();
    env.write("a.txt", "a");
    fs::create_dir(&env.dst).unwrap();
    let w = watch_pair(&env, &["--dry-run"], "w");
    wait_for(&w, "the start-up pass to print its plan", || {
        w.stdout().contains("copy a.txt")
    });
    env.write("b.txt", "b");
    wait_for(&w, "the new file to be planned", || {
        w.stdout().contains("copy b.txt")
    });
    let mut pair = Value::Null;
    wait_for(&w, "status to show the pair", || {
        pair = status_pair(&env).unwrap_or(Value::Null);
        pair.is_object()
    });
    assert_eq!(pair["files_mirrored"], 0, "{pair}");
    assert!(state_of(&pair).contains("dry run"), "{pair}");
    // The periodic status line (every 10 s once something happened).
    wait_for(&w, "a status line", || w.stdout().contains("status"));
    let out = w.stdout();
    assert!(
        !out.contains("files mirrored"),
        "a dry run claims to have mirrored files{}",
        w.context()
    );
    assert!(out.contains("would be copied"), "{}", w.context());
    assert!(files(&env.dst).is_empty(), "a dry run wrote files");
    // The summary at the end says so too, as sync --dry-run's does.
    let mut w = w;
    w.signal(libc::SIGINT);
    w.wait_exit(DEADLINE);
    assert!(
        w.stdout().contains("dry run: nothing was changed"),
        "the final summary of a dry run does not say nothing was changed{}",
        w.context()
    );
}

/// 150 files mirrored, then 120 deleted while no watcher runs: the start-up pass of a
/// watcher holds the deletions (more than half of the mirror, more than 100).
fn mass_delete_setup(env: &TestEnv) {
    for i in 0..150 {
        env.write(format!("f{i:03}.txt"), format!("{i}"));
    }
    env.sync_ok(&[]);
    for i in 0..120 {
        fs::remove_file(env.src.join(format!("f{i:03}.txt"))).unwrap();
    }
}

#[test]
fn regression_status_shows_held_deletions_counted_once_and_release_lets_them_through() {
    let _lock = shared();
    let env = TestEnv::new();
    mass_delete_setup(&env);
    let out = run(&env, [OsStr::new("release"), env.dst.as_os_str()]);
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("datasafe sync") && stderr(&out).contains("--force"),
        "release without a watcher must say to sync with --force: {}",
        stderr(&out)
    );

    let w = watch_pair(&env, &["--rescan", "1s"], "w");
    let mut pair = Value::Null;
    wait_for(&w, "status to show 120 held deletions", || {
        pair = status_pair(&env).unwrap_or(Value::Null);
        pair["held_deletions"] == 120
    });
    assert!(state_of(&pair).contains("held back"), "{pair}");
    assert!(state_of(&pair).contains("datasafe release"), "{pair}");
    // Later full passes hold the same deletions: still 120, not a sum.
    wait_for(&w, "a few rescans", || {
        w.stderr().matches("held back 120 deletions").count() >= 3
    });
    let pair = status_pair(&env).expect("status");
    assert_eq!(pair["held_deletions"], 120, "{pair}");
    assert_eq!(files(&env.dst).len(), 150, "deleted despite the guard");

    let out = run(&env, [OsStr::new("release"), env.dst.as_os_str()]);
    assert_code(&out, 0);
    assert!(
        stdout(&out).contains("120 held deletions"),
        "{}",
        stdout(&out)
    );
    wait_for(&w, "the held deletions to be released", || {
        files(&env.dst).len() == 30
    });
    wait_for(&w, "status to show nothing held", || {
        status_pair(&env).is_some_and(|p| p["held_deletions"] == 0 && state_of(&p) == "watching")
    });
    assert!(
        w.stderr().contains("releasing 120 deletions"),
        "{}",
        w.context()
    );
    assert_eq!(
        versions(&env.dst),
        120,
        "released deletions are kept as versions"
    );
}

#[test]
fn regression_status_shows_a_pair_paused_for_an_empty_source_and_release_mirrors_it() {
    let _lock = shared();
    let env = TestEnv::new();
    env.write("a.txt", "a");
    env.write("b.txt", "b");
    env.sync_ok(&[]);
    fs::remove_file(env.src.join("a.txt")).unwrap();
    fs::remove_file(env.src.join("b.txt")).unwrap();
    let w = watch_pair(&env, &[], "w");
    let mut pair = Value::Null;
    wait_for(&w, "status to show the pause", || {
        pair = status_pair(&env).unwrap_or(Value::Null);
        state_of(&pair).starts_with("paused")
    });
    let state = state_of(&pair);
    assert!(state.contains("empty"), "{pair}");
    assert!(state.contains("datasafe release"), "{pair}");
    assert_eq!(pair["held_deletions"], 2, "{pair}");
    assert_eq!(files(&env.dst).len(), 2);

    // kill -USR1 does what `datasafe release` does.
    w.signal(libc::SIGUSR1);
    wait_for(&w, "the emptied source to be mirrored", || {
        files(&env.dst).is_empty()
    });
    wait_for(&w, "status to show the pair watching", || {
        status_pair(&env).is_some_and(|p| state_of(&p) == "watching" && p["held_deletions"] == 0)
    });
}

// ---------------------------------------------------------------------------------------
// Item 4: the source's filesystem unmounted, remounted or replaced
// ---------------------------------------------------------------------------------------

/// A mount that is undone on drop, even after a failure.
struct Mounted(PathBuf);

impl Mounted {
    fn ext4(image: &Path, at: &Path) -> Mounted {
        let ok = Command::new("mount")
            .args(["-o", "loop"])
            .arg(image)
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "mount -o loop {} failed", image.display());
        Mounted(at.to_path_buf())
    }

    fn tmpfs(at: &Path) -> Mounted {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "mount -t tmpfs on {} failed", at.display());
        Mounted(at.to_path_buf())
    }

    /// Unmounts now (retrying briefly: a copy in flight may hold a file open).
    fn unmount(self) {
        let at = self.0.clone();
        let ok = wait_until(DEADLINE, || {
            Command::new("umount")
                .arg(&at)
                .status()
                .is_ok_and(|s| s.success())
        });
        assert!(ok, "umount {} failed", at.display());
        std::mem::forget(self);
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

fn make_ext4(path: &Path) -> bool {
    File::create(path).unwrap().set_len(16 << 20).unwrap();
    Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(path)
        .status()
        .is_ok_and(|s| s.success())
}

fn mirrored_files(dst: &Path) -> Vec<PathBuf> {
    files(dst)
        .into_iter()
        .filter(|p| !p.starts_with("lost+found"))
        .collect()
}

#[test]
fn regression_watch_pauses_when_the_source_drive_is_unmounted_and_resumes_when_it_is_back() {
    if !is_root() {
        eprintln!("skipped: mounting a loop ext4 image needs root");
        return;
    }
    let _lock = shared();
    let env = TestEnv::new();
    let image = env.dir.path().join("drive.img");
    if !make_ext4(&image) {
        eprintln!("skipped: mkfs.ext4 is not available");
        return;
    }
    let drive = Mounted::ext4(&image, &env.src);
    env.write("a.txt", "a");
    env.write("sub/b.txt", "b");
    // Underneath the mount point: what the folder shows once the drive is gone.
    let w = watch_pair(&env, &["--exclude", "lost+found"], "w");
    w.wait_ready(&env.dst, &stored_names(&env.src, false));
    settle(&w, &env, "0");
    let before = mirrored_files(&env.dst);

    drive.unmount();
    wait_for(&w, "a message that the source was unmounted", || {
        w.stderr().contains("no longer the folder being mirrored")
    });
    let mut pair = Value::Null;
    wait_for(&w, "status to show the pause", || {
        pair = status_pair(&env).unwrap_or(Value::Null);
        state_of(&pair).contains("unmounted")
    });
    // Something written into the bare mount point is not mirrored, nothing is deleted.
    env.write("on-the-mount-point.txt", "not the drive");
    assert!(
        holds_for(Duration::from_secs(2), || mirrored_files(&env.dst)
            == before),
        "the mirror changed while the drive was away{}",
        w.context()
    );
    fs::remove_file(env.src.join("on-the-mount-point.txt")).unwrap();

    // The same drive again: mirroring resumes with a reconcile.
    let image_mount = Mounted::ext4(&image, &env.src);
    wait_for(&w, "the pair to resume", || {
        w.stdout().contains("the same filesystem")
    });
    env.write("after.txt", "after the return");
    wait_for(&w, "a new file on the drive to be mirrored", || {
        env.dst.join("after.txt").exists()
    });
    assert!(env.dst.join("sub/b.txt").exists(), "{}", w.context());
    drop(w);
    drop(image_mount);
}

#[test]
fn regression_watch_stays_paused_when_another_filesystem_is_mounted_over_the_source() {
    if !is_root() {
        eprintln!("skipped: mounting tmpfs needs root");
        return;
    }
    let _lock = shared();
    let env = TestEnv::new();
    let first = Mounted::tmpfs(&env.src);
    env.write("a.txt", "a");
    env.write("b.txt", "b");
    let w = watch_pair(&env, &[], "w");
    w.wait_ready(&env.dst, &stored_names(&env.src, false));
    settle(&w, &env, "0");
    let before = files(&env.dst);

    first.unmount();
    wait_for(&w, "a message that the source was unmounted", || {
        w.stderr().contains("no longer the folder being mirrored")
    });
    // Another (empty) filesystem where the source was: the pair stays paused, says how
    // to go on, and deletes nothing.
    let _second = Mounted::tmpfs(&env.src);
    wait_for(&w, "a message saying how to accept the new source", || {
        w.stderr()
            .contains("is now a different folder or filesystem")
    });
    env.write("new.txt", "on another filesystem");
    assert!(
        holds_for(Duration::from_secs(2), || files(&env.dst) == before),
        "the mirror changed for another filesystem{}",
        w.context()
    );
    let pair = status_pair(&env).expect("status");
    assert!(state_of(&pair).starts_with("paused"), "{pair}");
}

#[test]
fn regression_watch_stays_paused_when_the_source_is_deleted_and_made_again() {
    let _lock = shared();
    let env = TestEnv::new();
    env.write("a.txt", "a");
    env.write("b.txt", "b");
    let w = watch_pair(&env, &[], "w");
    w.wait_ready(&env.dst, &stored_names(&env.src, false));
    settle(&w, &env, "0");
    let before = files(&env.dst);
    // Kept aside (so its inode stays in use), and a new empty folder in its place.
    fs::rename(&env.src, env.dir.path().join("old-src")).unwrap();
    fs::create_dir(&env.src).unwrap();
    wait_for(&w, "a message saying how to go on", || {
        w.stderr().contains("restart `datasafe watch`")
    });
    env.write("new.txt", "new");
    assert!(
        holds_for(Duration::from_secs(2), || files(&env.dst) == before),
        "the mirror changed for a folder made again{}",
        w.context()
    );
    let pair = status_pair(&env).expect("status");
    assert!(state_of(&pair).starts_with("paused"), "{pair}");
}

// ---------------------------------------------------------------------------------------
// Item 5: every key takes effect on reload
// ---------------------------------------------------------------------------------------

/// A config file for the env's pair: `top` at the top level, `pair` in its table.
fn write_config(env: &TestEnv, top: &str, pair: &str) -> PathBuf {
    let path = env.dir.path().join("cfg.toml");
    let tmp = env.dir.path().join("cfg.toml.tmp");
    let name = if pair.contains("name =") {
        ""
    } else {
        "name = \"p\"\n"
    };
    fs::write(
        &tmp,
        format!(
            "{top}\n[[mirror]]\n{name}source = {:?}\ndest = {:?}\n{pair}\n",
            env.src, env.dst
        ),
    )
    .unwrap();
    fs::rename(&tmp, &path).unwrap();
    path
}

/// Starts a watcher on the config file `top` / `pair` and waits until it mirrors.
fn watch_config(env: &TestEnv, top: &str, pair: &str) -> Watcher {
    let config = write_config(env, top, pair);
    let w = watch(env, &["--config".as_ref(), config.as_os_str()], "w");
    w.wait_ready(&env.dst, &stored_names(&env.src, false));
    w
}

/// Rewrites the config and waits until the watcher reported the reload.
fn reload(w: &Watcher, env: &TestEnv, top: &str, pair: &str) {
    let before = w.stdout().matches("reloaded").count();
    // A different size, so the edit is seen even within one mtime tick.
    let pad = "#".repeat(before + 1);
    write_config(env, &format!("{top}\n{pad}"), pair);
    let ok = wait_until(DEADLINE, || w.stdout().matches("reloaded").count() > before);
    assert!(
        ok,
        "timed out waiting for the reload of:\n{}{}",
        read_text(&env.dir.path().join("cfg.toml")),
        w.context()
    );
}

#[test]
fn regression_reload_applies_keep_versions() {
    let _lock = shared();
    let env = TestEnv::new();
    env.write("a.txt", "one");
    let w = watch_config(&env, "debounce = \"50ms\"", "keep_versions = \"staggered\"");
    reload(&w, &env, "debounce = \"50ms\"", "keep_versions = \"0\"");
    env.write("a.txt", "two, longer");
    wait_for(&w, "the change", || {
        fs::read_to_string(env.dst.join("a.txt")).is_ok_and(|t| t == "two, longer")
    });
    settle(&w, &env, "1");
    assert_eq!(
        versions(&env.dst),
        0,
        "keep_versions = \"0\" after a reload still kept a version{}",
        w.context()
    );
}

#[test]
fn regression_reload_applies_force_and_max_delete() {
    let _lock = shared();
    let env = TestEnv::new();
    mass_delete_setup(&env);
    let w = watch(
        &env,
        &[
            "--config".as_ref(),
            write_config(&env, "debounce = \"50ms\"", "").as_os_str(),
        ],
        "w",
    );
    wait_for(&w, "the deletions to be held", || {
        w.stderr().contains("held back 120 deletions")
    });
    // max_delete above the count lets the pass through.
    reload(&w, &env, "debounce = \"50ms\"", "max_delete = 1000");
    wait_for(&w, "max_delete = 1000 to let the deletions through", || {
        files(&env.dst).len() == 30
    });

    // force = true lets a pass that empties the source through.
    for i in 120..150 {
        fs::remove_file(env.src.join(format!("f{i:03}.txt"))).unwrap();
    }
    wait_for(&w, "the event deletions", || files(&env.dst).is_empty());
    drop(w);
    // Files deleted while no watcher runs: the start-up pass of an empty source holds.
    env.write("x.txt", "x");
    env.sync_ok(&[]);
    fs::remove_file(env.src.join("x.txt")).unwrap();
    let w = watch(
        &env,
        &[
            "--config".as_ref(),
            write_config(&env, "debounce = \"50ms\"", "").as_os_str(),
        ],
        "w2",
    );
    wait_for(&w, "the empty source to hold", || {
        w.stderr().contains("is empty")
    });
    reload(&w, &env, "debounce = \"50ms\"", "force = true");
    wait_for(&w, "force = true to mirror the empty source", || {
        files(&env.dst).is_empty()
    });
}

#[test]
fn regression_reload_applies_rescan_max_wait_and_debounce() {
    let _lock = shared();
    let env = TestEnv::new();
    env.write("a.txt", "a");
    let w = watch_config(&env, "debounce = \"50ms\"\nrescan = \"1h\"", "");
    // rescan: a file removed from DST behind the watcher's back comes back only by a
    // rescan.
    reload(&w, &env, "debounce = \"50ms\"\nrescan = \"1s\"", "");
    fs::remove_file(env.dst.join("a.txt")).unwrap();
    wait_for(&w, "rescan = \"1s\" to restore a.txt", || {
        env.dst.join("a.txt").exists()
    });

    // debounce: with an hour, nothing is mirrored; back to 50ms, it is.
    reload(&w, &env, "debounce = \"1h\"\nrescan = \"1h\"", "");
    env.write("b.txt", "b");
    assert!(
        holds_for(Duration::from_secs(2), || !env.dst.join("b.txt").exists()),
        "debounce = \"1h\" after a reload was ignored{}",
        w.context()
    );
    reload(&w, &env, "debounce = \"50ms\"\nrescan = \"1h\"", "");
    wait_for(&w, "b.txt after debounce = \"50ms\"", || {
        env.dst.join("b.txt").exists()
    });

    // max_wait: a file written without pause is copied once it has waited that long.
    reload(
        &w,
        &env,
        "debounce = \"1s\"\nrescan = \"1h\"\nmax_wait = \"1s\"",
        "",
    );
    let path = env.src.join("growing.log");
    let copied = wait_until(DEADLINE, || {
        use std::io::Write;
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"line\n").unwrap();
        env.dst.join("growing.log").exists()
    });
    assert!(copied, "max_wait after a reload was ignored{}", w.context());
}

#[test]
fn regression_reload_applies_log_files() {
    let _lock = shared();
    let env = TestEnv::new();
    env.write("a.txt", "a");
    let (log1, log2) = (
        env.dir.path().join("one.log"),
        env.dir.path().join("two.log"),
    );
    let (err2,) = (env.dir.path().join("two-errors.log"),);
    let top1 = format!("debounce = \"50ms\"\nlog_file = {log1:?}");
    let w = watch_config(&env, &top1, "");
    settle(&w, &env, "0");
    let top2 = format!("debounce = \"50ms\"\nlog_file = {log2:?}\nerror_log_file = {err2:?}");
    reload(&w, &env, &top2, "");
    settle(&w, &env, "1");
    wait_for(&w, "the new log file to get lines", || {
        read_text(&log2).contains("marker-1.txt")
    });
    assert!(
        !read_text(&log1).contains("marker-1.txt"),
        "{}",
        read_text(&log1)
    );
    // An error goes to the new error log.
    fs::remove_dir_all(&env.src).unwrap();
    wait_for(&w, "the error log to get the pause", || {
        read_text(&err2).contains("is kept as it is")
    });
}

#[test]
fn reload_applies_each_other_pair_key() {
    let _lock = shared();
    let env = TestEnv::new();
    env.write("a.txt", "a");
    env.write("b.tmp", "b");
    let top = "debounce = \"50ms\"";
    let w = watch_config(&env, top, "");
    // exclude: a new .tmp is no longer mirrored.
    reload(&w, &env, top, "exclude = [\"*.tmp\"]");
    env.write("c.tmp", "c");
    settle(&w, &env, "1");
    assert!(
        !env.dst.join("c.tmp").exists(),
        "exclude ignored{}",
        w.context()
    );
    // delete: a deletion is no longer mirrored.
    reload(&w, &env, top, "exclude = [\"*.tmp\"]\ndelete = false");
    fs::remove_file(env.src.join("a.txt")).unwrap();
    settle(&w, &env, "2");
    assert!(
        env.dst.join("a.txt").exists(),
        "delete = false ignored{}",
        w.context()
    );
    // compress: files are stored gzipped.
    reload(
        &w,
        &env,
        top,
        "exclude = [\"*.tmp\"]\ndelete = false\ncompress = true",
    );
    wait_for(&w, "compress = true", || {
        env.dst.join("marker-1.txt.gz").exists()
    });
    // name: log lines carry the new name.
    reload(
        &w,
        &env,
        top,
        "name = \"renamed\"\nexclude = [\"*.tmp\"]\ndelete = false\ncompress = true",
    );
    wait_for(&w, "the new name in log lines", || {
        w.stdout().contains("[renamed]")
    });
    // enabled = false: the pair stops.
    reload(&w, &env, top, "enabled = false");
    wait_for(&w, "the pair to stop", || {
        w.stdout().contains("stopped watching")
    });
}

#[test]
fn regression_release_by_config_file_lets_a_watchers_held_deletions_through() {
    let _lock = shared();
    let env = TestEnv::new();
    mass_delete_setup(&env);
    let config = write_config(&env, "debounce = \"50ms\"", "");
    let out = run(
        &env,
        [
            OsStr::new("release"),
            "--config".as_ref(),
            config.as_os_str(),
        ],
    );
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("datasafe sync --config") && stderr(&out).contains("--force"),
        "{}",
        stderr(&out)
    );
    let w = watch(&env, &["--config".as_ref(), config.as_os_str()], "w");
    wait_for(&w, "the deletions to be held", || {
        status_pair(&env).is_some_and(|p| p["held_deletions"] == 120)
    });
    let out = run(
        &env,
        [
            OsStr::new("release"),
            "--config".as_ref(),
            config.as_os_str(),
        ],
    );
    assert_code(&out, 0);
    wait_for(&w, "the release", || files(&env.dst).len() == 30);
    wait_for(&w, "status to show nothing held", || {
        status_pair(&env).is_some_and(|p| p["held_deletions"] == 0)
    });
    // Nothing held any more: a second release says so and changes nothing.
    let out = run(&env, ["release"]);
    assert_code(&out, 0);
    assert!(
        stdout(&out).contains("no held deletions now"),
        "{}",
        stdout(&out)
    );
    wait_for(&w, "the watcher to say nothing was held", || {
        w.stdout().contains("no pair holds deletions back")
    });
    assert_mirrored(&env.src, &env.dst, false);
}
