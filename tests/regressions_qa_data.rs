//! Regressions found by the QA pass over issue 10's data-loss and mirror-correctness
//! items, each driving the real binary in a temp tree.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::symlink;
use std::process::Output;

/// Runs a `datasafe restore …` command line as a warning gave it, through the shell.
fn run_restore_line(env: &TestEnv, line: &str) -> Output {
    let bin = env!("CARGO_BIN_EXE_datasafe");
    let rest = line
        .strip_prefix("datasafe ")
        .unwrap_or_else(|| panic!("not a datasafe command: {line}"));
    std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("'{bin}' {rest}"))
        .current_dir(env.dir.path())
        .output()
        .unwrap()
}

/// The command after "run: " in the warning about a folder that was no mirror.
fn restore_line(err: &str) -> String {
    let line = err
        .lines()
        .find(|l| l.contains("before it became a mirror"))
        .unwrap_or_else(|| panic!("no warning about what DST held before:\n{err}"));
    line.split("run: ").nth(1).unwrap().trim().to_string()
}

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
