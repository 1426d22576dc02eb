//! Regressions found by the QA pass over issue 10 ("Telling the truth", repair, reload):
//! what datasafe says, and the commands it advises, tried as a user would, through the
//! real binary in temp trees. Each test is named after what broke: a dry-run status line
//! saying "1 files", a watcher advising `run again with --force` for deletions that
//! `datasafe release` lets through, `verify --repair` of an unwritable DST ending as if
//! one file had failed (exit 1), `verify --source` that could not leave out what the
//! mirror leaves out, so that the repair it advised copied excluded files into the
//! mirror and deleted what a `--no-delete` mirror keeps (and failed on what it keeps),
//! advice that turned a gzipped mirror plain or broke on a space in a path, a warning
//! with a run of 30 spaces, a DST that cannot be created without advice, and
//! `sync --repair --dry-run` saying it writes.
//!
//! Advised commands are run as printed, through `sh -c`, with the binary first on PATH.
//! Tests that need another user skip with a printed reason. Waits poll with a deadline.

use crate::common;

use common::faults::{NOBODY, binary_for_nobody, chmod, chown_tree, env_for_nobody};
use common::watcher::{DEADLINE, Watcher, shared, wait_until};
use common::*;
use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

/// Every child's home and XDG folders lie inside the test's temp folder, so `status` and
/// `release` see only this test's watcher.
fn isolate(env: &TestEnv, cmd: &mut Command) {
    let home = env.dir.path().join("home");
    fs::create_dir_all(&home).unwrap();
    cmd.env("HOME", &home)
        .env("XDG_CONFIG_HOME", env.dir.path().join("xdg-config"))
        .env("XDG_STATE_HOME", env.dir.path().join("xdg-state"));
}

/// Runs `command` (a line datasafe advised, word for word) with `sh -c`, the binary
/// under test first on PATH.
fn run_advised(env: &TestEnv, command: &str) -> Output {
    let bin = Path::new(env!("CARGO_BIN_EXE_datasafe")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(command)
        .env("PATH", path)
        .current_dir(env.dir.path());
    isolate(env, &mut cmd);
    cmd.output().unwrap()
}

/// The commands a line advises: each `datasafe …` after `run`, up to a parenthesis, a
/// comma or the end of the line.
fn advised_in(line: &str) -> Vec<String> {
    line.split("datasafe ")
        .skip(1)
        .map(|rest| {
            let cmd = rest.split(" (").next().unwrap();
            let cmd = cmd.split(", or").next().unwrap();
            format!("datasafe {}", cmd.trim_end_matches(['.', ',', ' ', '`']))
        })
        .collect()
}

/// Waits for `cond`, failing with the watcher's output.
fn wait_for(w: &Watcher, what: &str, cond: impl FnMut() -> bool) {
    assert!(
        wait_until(DEADLINE, cond),
        "timed out waiting for {what}{}",
        w.context()
    );
}

/// Files (not folders) under `root`, without `.datasafe`.
fn file_count(root: &Path) -> usize {
    walkdir::WalkDir::new(root)
        .min_depth(1)
        .into_iter()
        .filter_entry(|e| e.file_name() != ".datasafe")
        .filter_map(Result::ok)
        .filter(|e| !e.file_type().is_dir())
        .count()
}

// ---------------------------------------------------------------------------------------
// Wording
// ---------------------------------------------------------------------------------------

/// `watch --dry-run`'s status line said "1 files would be copied".
#[test]
fn regression_watch_dry_run_status_line_says_1_file_not_1_files() {
    let _lock = shared();
    let env = TestEnv::new();
    env.write("a.txt", "a");
    env.sync_ok(&["-q"]);
    let w = Watcher::start(&env, &env.src, &env.dst, &["--dry-run"], "w");
    // After the start-up pass (a file written during it is planned by the pass and by
    // its event: a dry run records nothing, so both would count).
    wait_for(&w, "the watcher's start-up pass", || {
        w.stdout().contains("start-up pass done")
    });
    env.write("b.txt", "b");
    // The status line comes at most every 10 s.
    let ok = wait_until(DEADLINE + Duration::from_secs(15), || {
        w.stdout().contains("status (dry run")
    });
    assert!(ok, "no dry-run status line{}", w.context());
    let out = w.stdout();
    assert!(
        out.contains("1 file would be copied") && !out.contains("1 files"),
        "{}",
        w.context()
    );
}

// ---------------------------------------------------------------------------------------
// The advice of a watcher's deletion guard
// ---------------------------------------------------------------------------------------

/// A watcher holding deletions back said "to let them through, run again with --force":
/// `datasafe release` is what lets a running watcher's deletions through (a watcher
/// restarted with --force keeps the guard off for good). The command it names, run as
/// printed, lets them through.
#[test]
fn regression_watch_held_deletions_advise_the_release_command_that_lets_them_through() {
    let _lock = shared();
    let env = TestEnv::new();
    for i in 0..150 {
        env.write(format!("f{i:03}.txt"), format!("{i}\n"));
    }
    env.sync_ok(&["-q"]);
    for i in 0..120 {
        fs::remove_file(env.src.join(format!("f{i:03}.txt"))).unwrap();
    }
    let args = [
        "watch".as_ref(),
        env.src.as_os_str(),
        env.dst.as_os_str(),
        "--debounce".as_ref(),
        "50ms".as_ref(),
    ];
    let out = env.dir.path().join("w.stdout");
    let err = env.dir.path().join("w.stderr");
    let mut cmd = env.cmd(args);
    isolate(&env, &mut cmd);
    let child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(fs::File::create(&out).unwrap())
        .stderr(fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let w = Watcher { child, out, err };
    wait_for(&w, "the deletions to be held", || {
        w.stderr().contains("held back 120 deletions")
    });
    let stderr = w.stderr();
    let line = stderr
        .lines()
        .find(|l| l.contains("held back 120 deletions"))
        .unwrap();
    assert!(
        !line.contains("run again with --force"),
        "a watcher advises a new run:\n{line}"
    );
    let commands = advised_in(line);
    assert_eq!(commands.len(), 1, "{line}");
    assert!(commands[0].starts_with("datasafe release"), "{line}");
    // The watcher publishes its status (where `release` finds it) about once a second.
    wait_for(&w, "the status file to show the held deletions", || {
        let mut cmd = env.cmd(["status", "--json"]);
        isolate(&env, &mut cmd);
        stdout(&cmd.output().unwrap()).contains("\"held_deletions\":120")
    });
    let out = run_advised(&env, &commands[0]);
    assert_code(&out, 0);
    wait_for(&w, "the released deletions", || file_count(&env.dst) == 30);
    assert_mirrored(&env.src, &env.dst, false);
}

// ---------------------------------------------------------------------------------------
// verify --repair
// ---------------------------------------------------------------------------------------

/// `verify --source SRC --repair DST` with a DST the user cannot write printed the
/// error, then `Repair completed: … Failed: 1` and exited 1, as if one file had failed;
/// `sync` makes an unwritable DST a fatal error (exit 2).
#[test]
fn regression_verify_repair_of_an_unwritable_dst_is_a_fatal_error_exit_2() {
    let test = "regression_verify_repair_of_an_unwritable_dst_is_a_fatal_error_exit_2";
    let Some(env) = env_for_nobody(test) else {
        return;
    };
    fs::remove_dir(&env.dst).unwrap();
    for i in 0..3 {
        env.write(format!("f{i}.txt"), format!("{i}\n"));
    }
    env.sync_ok(&["-q"]);
    env.write("f0.txt", "changed\n");
    chown_tree(&env.src, NOBODY);
    chmod(&env.dst, 0o755);
    let home = env.dir.path().join("home");
    fs::create_dir(&home).unwrap();
    chown_tree(&home, NOBODY);
    // DST is root's: readable, not writable, by uid 65534.
    let out = Command::new("setpriv")
        .arg(format!("--reuid={NOBODY}"))
        .arg(format!("--regid={NOBODY}"))
        .arg("--clear-groups")
        .arg(binary_for_nobody(&env))
        .args(["verify", "--source"])
        .arg(&env.src)
        .arg("--repair")
        .arg(&env.dst)
        .env("HOME", &home)
        .env("XDG_STATE_HOME", home.join(".state"))
        .current_dir(env.dir.path())
        .output()
        .unwrap();
    let err = stderr(&out);
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "expected one error line:\n{err}");
    assert!(
        errors[0].contains("permission denied") && errors[0].contains("make it writable"),
        "{err}"
    );
    assert_code(&out, 2);
}

/// A mirror kept with `--exclude` could not be verified against its source: verify had
/// no `--exclude`, so it reported every excluded path as "not in mirror" and advised
/// `verify --source SRC --repair DST`, which copied them into the mirror. The advice now
/// carries the excludes, and both commands it gives, run as printed, repair the mirror
/// and leave the excluded paths out.
#[test]
fn regression_verify_source_leaves_out_what_the_mirror_excludes_and_its_advice_too() {
    for which in 0..2 {
        let env = TestEnv::new();
        env.write("docs/top.txt", "excluded at the root");
        env.write("a/docs/inner.txt", "not excluded: not at the root");
        env.write("keep.txt", "keep");
        env.write("scratch.tmp", "excluded anywhere");
        let excludes = ["--exclude", "/docs", "--exclude", "*.tmp"];
        let mut flags = vec!["-q"];
        flags.extend(excludes);
        env.sync_ok(&flags);
        assert!(!env.dst.join("docs").exists() && !env.dst.join("scratch.tmp").exists());

        let verify = |extra: &[&str]| {
            let mut args = vec![
                "verify",
                env.dst.to_str().unwrap(),
                "--source",
                env.src.to_str().unwrap(),
            ];
            args.extend(extra);
            env.cmd(args).output().unwrap()
        };
        let out = verify(&excludes);
        assert_code(&out, 0);

        fs::write(env.dst.join("keep.txt"), "damaged").unwrap();
        let out = verify(&excludes);
        assert_code(&out, 1);
        let err = stderr(&out);
        let line = err
            .lines()
            .find(|l| l.contains("run: datasafe"))
            .unwrap_or_else(|| panic!("no advice:\n{err}"));
        let commands = advised_in(line);
        assert_eq!(commands.len(), 2, "{line}");
        let out = run_advised(&env, &commands[which]);
        assert_code(&out, 0);
        assert_eq!(
            fs::read_to_string(env.dst.join("keep.txt")).unwrap(),
            "keep"
        );
        assert!(
            !env.dst.join("docs").exists() && !env.dst.join("scratch.tmp").exists(),
            "`{}` copied excluded paths into the mirror",
            commands[which]
        );
        assert!(env.dst.join("a/docs/inner.txt").exists());
        assert_code(&verify(&excludes), 0);
    }
}

/// `verify --source SRC --repair DST` repaired a `--no-delete` mirror with the defaults,
/// deleting the files it keeps for the source's deleted ones.
#[test]
fn regression_verify_repair_keeps_what_a_no_delete_mirror_keeps() {
    let env = TestEnv::new();
    env.write("a.txt", "a");
    env.write("gone.txt", "deleted in the source, kept by the mirror");
    env.sync_ok(&["-q", "--no-delete"]);
    fs::remove_file(env.src.join("gone.txt")).unwrap();
    env.sync_ok(&["-q", "--no-delete"]);
    fs::write(env.dst.join("a.txt"), "damaged").unwrap();
    let out = env
        .cmd([
            "verify",
            "--source",
            env.src.to_str().unwrap(),
            "--repair",
            env.dst.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        env.dst.join("gone.txt").exists(),
        "the repair deleted what --no-delete keeps\n{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert_eq!(fs::read_to_string(env.dst.join("a.txt")).unwrap(), "a");
}

/// The warning for a file still being written while it was copied carried a run of 30
/// spaces in the middle of its sentence (a string continued on the next source line
/// without a backslash).
#[test]
fn regression_the_still_being_written_warning_has_no_run_of_spaces() {
    use std::io::Write;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let env = TestEnv::new();
    let big = env.write("growing.bin", common::faults::noise(7, 48 << 20));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (big, stop) = (big.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut f = fs::OpenOptions::new().append(true).open(&big).unwrap();
            let chunk = common::faults::noise(8, 4096);
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
    let line = err
        .lines()
        .find(|l| l.contains("was still being written"))
        .unwrap_or_else(|| panic!("no warning about the growing file:\n{err}"));
    assert!(!line.contains("  "), "a run of spaces in:\n{line}");
}

/// `verify` of a gzipped mirror whose index was deleted advised `datasafe sync SRC DST`,
/// which turns the mirror into a plain one; the advice keeps `--compress`.
#[test]
fn regression_verify_without_an_index_advises_a_sync_that_keeps_a_mirror_gzipped() {
    let env = TestEnv::new();
    env.write("a.txt", "a");
    env.write("sub/b.txt", "b");
    env.sync_ok(&["-q", "--compress"]);
    fs::remove_file(env.dst.join(".datasafe/index.db")).unwrap();
    let out = env
        .cmd([
            "verify",
            env.dst.to_str().unwrap(),
            "--source",
            env.src.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_code(&out, 2);
    let err = stderr(&out);
    let commands = advised_in(err.trim());
    assert_eq!(commands.len(), 1, "{err}");
    let command = commands[0].trim_end_matches(" first");
    assert_code(&run_advised(&env, command), 0);
    assert_mirrored(&env.src, &env.dst, true);
}

/// `verify DST --source SRC` of a `--no-delete` mirror (or a config pair with
/// `delete = false`) failed on every file the mirror keeps for one deleted in the source
/// ("not in source", exit 1) and advised a repair that, run as printed, could never put
/// that right. What such a mirror keeps is said in one line and is no problem.
#[test]
fn regression_verify_source_of_a_no_delete_mirror_does_not_fail_on_what_it_keeps() {
    let env = TestEnv::new();
    env.write("a.txt", "a");
    env.write("gone.txt", "deleted in the source, kept by the mirror");
    env.sync_ok(&["-q", "--no-delete"]);
    fs::remove_file(env.src.join("gone.txt")).unwrap();
    env.sync_ok(&["-q", "--no-delete"]);
    let out = env
        .cmd([
            "verify",
            env.dst.to_str().unwrap(),
            "--source",
            env.src.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_code(&out, 0);
    assert!(
        stdout(&out).contains("1 path not in the source, kept by the mirror"),
        "{}",
        stdout(&out)
    );
    assert!(!stderr(&out).contains("run: datasafe"), "{}", stderr(&out));

    let config = env.dir.path().join("cfg.toml");
    fs::write(
        &config,
        format!(
            "[[mirror]]\nsource = {:?}\ndest = {:?}\ndelete = false\n",
            env.src, env.dst
        ),
    )
    .unwrap();
    let out = env
        .cmd(["verify", "--config", config.to_str().unwrap(), "--source"])
        .output()
        .unwrap();
    assert_code(&out, 0);
}

/// The commands `verify` advises named SRC and DST unquoted: with a space in a path
/// (`My Backup`), the command copied as printed ran on other folders and failed. Both
/// commands, and the one advised for a mirror without its index, run as printed.
#[test]
fn regression_commands_verify_advises_run_as_printed_with_a_space_in_the_paths() {
    for which in 0..3 {
        let env = TestEnv::new();
        let src = env.dir.path().join("my notes");
        let dst = env.dir.path().join("My Backup");
        fs::create_dir(&src).unwrap();
        fs::write(src.join("a.txt"), "a").unwrap();
        let run = |args: &[&str]| env.cmd(args).output().unwrap();
        let (s, d) = (src.to_str().unwrap(), dst.to_str().unwrap());
        assert_code(&run(&["sync", "-q", s, d]), 0);
        if which == 2 {
            fs::remove_file(dst.join(".datasafe/index.db")).unwrap();
        } else {
            fs::write(dst.join("a.txt"), "damaged").unwrap();
        }
        let out = run(&["verify", d, "--source", s]);
        let err = stderr(&out);
        let commands = advised_in(err.trim());
        let command = if which == 2 {
            commands[0].trim_end_matches(" first").to_string()
        } else {
            commands[which].clone()
        };
        let out = run_advised(&env, &command);
        assert_code(&out, 0);
        assert_eq!(
            fs::read_to_string(dst.join("a.txt")).unwrap(),
            "a",
            "{command}"
        );
        assert_code(&run(&["verify", d, "--source", s]), 0);
    }
}

/// A watched source replaced by another folder (here: made beside it and renamed over
/// it) pauses the pair with advice to run `datasafe sync SRC DST`; with a space in the
/// paths that command, copied as printed, named other folders. It runs as printed now.
#[test]
fn regression_the_sync_advised_for_a_replaced_source_runs_as_printed() {
    let _lock = shared();
    let env = TestEnv::new();
    let src = env.dir.path().join("my notes");
    let dst = env.dir.path().join("My Backup");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("old.txt"), "old").unwrap();
    let w = Watcher::start(&env, &src, &dst, &[], "w");
    wait_for(&w, "the first pass", || dst.join("old.txt").exists());
    let other = env.dir.path().join("other");
    fs::create_dir(&other).unwrap();
    fs::write(other.join("new.txt"), "new").unwrap();
    fs::remove_dir_all(&src).unwrap();
    fs::rename(&other, &src).unwrap();
    wait_for(&w, "the pause with advice", || {
        w.stderr().contains("run `datasafe sync")
    });
    drop(w);
    let err = fs::read_to_string(env.dir.path().join("w.stderr")).unwrap();
    let line = err
        .lines()
        .find(|l| l.contains("run `datasafe sync"))
        .unwrap();
    let command = line
        .split("run `")
        .nth(1)
        .and_then(|rest| rest.split('`').next())
        .unwrap();
    let out = run_advised(&env, command);
    assert_code(&out, 0);
    assert_mirrored(&src, &dst, false);
}

/// A DST that cannot be created (its parent not writable) was one line that named it
/// and the OS error but not what to do, unlike every other unwritable DST.
#[test]
fn regression_a_dst_that_cannot_be_created_says_what_to_do() {
    let test = "regression_a_dst_that_cannot_be_created_says_what_to_do";
    let Some(env) = env_for_nobody(test) else {
        return;
    };
    env.write("a.txt", "a");
    chown_tree(&env.src, NOBODY);
    // DST (root's, 0755) exists; a folder inside it cannot be made by uid 65534.
    let inside = env.dst.join("new");
    let out = Command::new("setpriv")
        .arg(format!("--reuid={NOBODY}"))
        .arg(format!("--regid={NOBODY}"))
        .arg("--clear-groups")
        .arg(binary_for_nobody(&env))
        .arg("sync")
        .arg(&env.src)
        .arg(&inside)
        .env("HOME", env.dir.path())
        .env("XDG_STATE_HOME", env.dir.path().join("state"))
        .current_dir(env.dir.path())
        .output()
        .unwrap();
    assert_code(&out, 2);
    let err = stderr(&out);
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(
        errors[0].contains("permission denied") && errors[0].contains("run again"),
        "no advice in:\n{err}"
    );
}

/// `sync --repair --dry-run` warned "writing it again" for each wrong file in DST,
/// though a dry run writes nothing (and did not).
#[test]
fn regression_sync_repair_dry_run_does_not_say_it_writes() {
    let env = TestEnv::new();
    env.write("a.txt", "aaa");
    env.sync_ok(&["-q"]);
    fs::write(env.dst.join("a.txt"), "edited behind datasafe's back").unwrap();
    let out = env.sync_ok(&["--repair", "--dry-run"]);
    let err = stderr(&out);
    assert!(err.contains("is not what datasafe wrote"), "{err}");
    assert!(!err.contains("writing it again"), "{err}");
    assert_eq!(
        fs::read_to_string(env.dst.join("a.txt")).unwrap(),
        "edited behind datasafe's back"
    );
}

#[test]
fn regression_repair_keeps_a_version_of_a_copy_edited_with_its_mtime_put_back() {
    let env = TestEnv::new();
    env.write("a.txt", "the original\n");
    env.sync_ok(&[]);
    // Edited in the mirror behind datasafe's back: same size, mtime put back.
    fs::write(env.dst.join("a.txt"), "TAMPERED WIT\n").unwrap();
    let src_mtime = fs::metadata(env.src.join("a.txt"))
        .unwrap()
        .modified()
        .unwrap();
    fs::File::options()
        .write(true)
        .open(env.dst.join("a.txt"))
        .unwrap()
        .set_modified(src_mtime)
        .unwrap();
    env.sync_ok(&["--repair"]);
    assert_eq!(
        fs::read_to_string(env.dst.join("a.txt")).unwrap(),
        "the original\n"
    );
    let kept: Vec<String> = walkdir::WalkDir::new(env.dst.join(".datasafe/versions"))
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| fs::read_to_string(e.path()).unwrap())
        .collect();
    assert_eq!(
        kept,
        ["TAMPERED WIT\n"],
        "what the repair replaced was not kept"
    );
}

#[test]
fn regression_a_sigint_ignored_at_start_stays_ignored() {
    let _lock = shared();
    let env = TestEnv::new();
    env.write("a.txt", "a");
    let bin = env!("CARGO_BIN_EXE_datasafe");
    // As `datasafe watch … &` in a script: the shell starts it with SIGINT ignored.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "trap '' INT; exec '{bin}' watch --debounce 50ms '{}' '{}'",
            env.src.display(),
            env.dst.display()
        ))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        wait_until(DEADLINE, || env.dst.join("a.txt").exists()),
        "the watcher never mirrored"
    );
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    // Still watching: a file made after the Ctrl-C is mirrored.
    env.write("b.txt", "b");
    let mirrored = wait_until(DEADLINE, || env.dst.join("b.txt").exists());
    let exited = child.try_wait().unwrap();
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let _ = child.wait();
    assert!(
        exited.is_none() && mirrored,
        "a Ctrl-C the shell ignored for it stopped the watcher ({exited:?})"
    );
}
