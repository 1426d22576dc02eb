//! Several pairs from one config file, driven through the real binary: config errors
//! (exit 2, one line, nothing touched), `sync --config` with per-pair lines and totals,
//! a failing pair beside healthy ones, command-line overrides, `watch --config` with hot
//! reload and a pair that resumes, the one-writer lock, `agent print`, `status`, and the
//! generated completions, man page and help.
//!
//! Every child runs with `HOME`, `XDG_CONFIG_HOME` and `XDG_STATE_HOME` inside the test's
//! own temp folder. Every wait polls with a deadline; the one check that something does
//! *not* happen (a removed pair's source is no longer mirrored) is ordered behind later
//! changes that are seen mirrored, not behind a sleep. Each watcher is held by a guard
//! that SIGKILLs it on drop.

use crate::common;

use common::watcher::{shared, wait_until};
use common::*;
use serde_json::Value;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::Duration;

/// How long a wait for a watcher may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// A test's temp folder with its own home and XDG folders (`home/`, `xdg-config/`,
/// `xdg-state/`; only `home/` is created) for every child it runs.
struct Ctx {
    env: TestEnv,
}

impl Ctx {
    fn new() -> Ctx {
        let env = TestEnv::new();
        fs::create_dir(env.dir.path().join("home")).unwrap();
        Ctx { env }
    }

    fn root(&self) -> &Path {
        self.env.dir.path()
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root().join(rel)
    }

    fn home(&self) -> PathBuf {
        self.path("home")
    }

    fn config_home(&self) -> PathBuf {
        self.path("xdg-config")
    }

    fn state_home(&self) -> PathBuf {
        self.path("xdg-state")
    }

    /// True if some watcher's status file (`status-PID.json`) is in the state folder.
    fn has_status_file(&self) -> bool {
        std::fs::read_dir(self.state_home().join("datasafe"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.starts_with("status-") && name.ends_with(".json")
            })
    }

    /// The binary with `args` (cwd: the temp folder), its home and XDG folders set.
    fn cmd<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.env.cmd(args);
        cmd.env("HOME", self.home())
            .env("XDG_CONFIG_HOME", self.config_home())
            .env("XDG_STATE_HOME", self.state_home())
            .stdin(Stdio::null());
        cmd
    }

    fn run<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd(args).output().unwrap()
    }

    /// Creates the folder `rel` holding `files` (path, content).
    fn folder(&self, rel: &str, files: &[(&str, &str)]) -> PathBuf {
        let dir = self.path(rel);
        fs::create_dir_all(&dir).unwrap();
        for (name, content) in files {
            write(&dir.join(name), content);
        }
        dir
    }

    /// Writes the config file `rel` (atomically: temp file, then rename, as editors do).
    fn config(&self, rel: &str, text: &str) -> PathBuf {
        let path = self.path(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        let tmp = path.with_extension("toml.tmp");
        fs::write(&tmp, text).unwrap();
        fs::rename(&tmp, &path).unwrap();
        path
    }
}

/// Writes `content` to `path`, creating folders.
fn write(path: &Path, content: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

/// A path as a TOML string (a JSON string is a valid TOML basic string).
fn q(path: &Path) -> String {
    serde_json::to_string(path.to_str().unwrap()).unwrap()
}

/// One `[[mirror]]` table; `extra` is appended as is (one `key = value` per line).
fn mirror(name: Option<&str>, src: &Path, dst: &Path, extra: &str) -> String {
    let name = name.map_or_else(String::new, |n| format!("name = {n:?}\n"));
    format!(
        "\n[[mirror]]\n{name}source = {}\ndest = {}\n{extra}\n",
        q(src),
        q(dst)
    )
}

fn text(path: &Path) -> String {
    String::from_utf8_lossy(&fs::read(path).unwrap_or_default()).into_owned()
}

/// Stdout and stderr of `out`, for failure messages.
fn both(out: &Output) -> String {
    format!("\n--- stdout\n{}\n--- stderr\n{}", stdout(out), stderr(out))
}

/// The last line of stdout, parsed as JSON.
fn json_last_line(out: &Output) -> Value {
    let text = stdout(out);
    let last = text.lines().last().unwrap_or_default();
    serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("last line is not JSON ({e}){}", both(out)))
}

/// The number after `key: ` in `line`.
fn number_after(line: &str, key: &str) -> u64 {
    let key = format!("{key}: ");
    let start = line
        .find(&key)
        .unwrap_or_else(|| panic!("no {key:?} in {line:?}"))
        + key.len();
    line[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap()
}

/// The stdout line that starts with `prefix` (exactly one must).
fn line_starting<'a>(text: &'a str, prefix: &str) -> &'a str {
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with(prefix)).collect();
    assert_eq!(lines.len(), 1, "lines starting {prefix:?} in:\n{text}");
    lines[0]
}

/// A running `datasafe watch`, SIGKILLed on drop if it still runs. Its stdout and stderr
/// go to files in the temp folder (a pipe nobody reads could stall it).
struct Watcher {
    child: Child,
    out: PathBuf,
    err: PathBuf,
    _lock: File,
}

impl Watcher {
    /// Starts `datasafe watch --debounce 50ms ARGS...`.
    fn start<S: AsRef<OsStr>>(ctx: &Ctx, args: &[S], tag: &str) -> Watcher {
        let lock = shared();
        let out = ctx.path(&format!("{tag}.stdout"));
        let err = ctx.path(&format!("{tag}.stderr"));
        let mut argv: Vec<&OsStr> = vec!["watch".as_ref(), "--debounce".as_ref(), "50ms".as_ref()];
        argv.extend(args.iter().map(AsRef::as_ref));
        let child = ctx
            .cmd(argv)
            .stdout(File::create(&out).unwrap())
            .stderr(File::create(&err).unwrap())
            .spawn()
            .unwrap();
        Watcher {
            child,
            out,
            err,
            _lock: lock,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stdout(&self) -> String {
        text(&self.out)
    }

    fn stderr(&self) -> String {
        text(&self.err)
    }

    fn context(&self) -> String {
        format!(
            "\n--- watcher stdout\n{}\n--- watcher stderr\n{}",
            self.stdout(),
            self.stderr()
        )
    }

    /// Waits until `cond` holds; fails naming `what` and showing the watcher's output.
    fn wait_for(&self, what: &str, cond: impl FnMut() -> bool) {
        assert!(
            wait_until(DEADLINE, cond),
            "timed out waiting for: {what}{}",
            self.context()
        );
    }

    /// Waits until DST mirrors SRC; on timeout fails listing every difference.
    fn wait_mirrored(&self, src: &Path, dst: &Path, gz: bool) {
        if !wait_until(DEADLINE, || is_mirrored(src, dst, gz)) {
            eprintln!("watcher output:{}", self.context());
            assert_mirrored(src, dst, gz);
            panic!("the trees differed until the deadline{}", self.context());
        }
    }

    fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.pid() as libc::pid_t, sig);
        }
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let mut status = None;
        let done = wait_until(DEADLINE, || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        assert!(done, "the watcher did not exit{}", self.context());
        status.unwrap()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.signal(libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// Runs `sync --config FILE` (plus `extra`) and asserts exit 2 with exactly one line on
/// stderr holding every string in `wants`, nothing on stdout, and that none of `untouched`
/// (nor the XDG state folder, where default logs would go) was created.
fn assert_config_error(ctx: &Ctx, file: &Path, wants: &[&str], untouched: &[&Path]) {
    let out = ctx.run([OsStr::new("sync"), "--config".as_ref(), file.as_os_str()]);
    assert_code(&out, 2);
    let err = stderr(&out);
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one line on stderr{}",
        both(&out)
    );
    for want in wants {
        assert!(err.contains(want), "{want:?} not in stderr{}", both(&out));
    }
    assert_eq!(stdout(&out), "", "nothing on stdout{}", both(&out));
    assert!(!ctx.state_home().exists(), "the state folder was created");
    for path in untouched {
        assert!(
            !path.exists(),
            "{} was created{}",
            path.display(),
            both(&out)
        );
    }
}

// ---------------------------------------------------------------------------------------
// 1. Config errors: exit 2, one line, nothing created
// ---------------------------------------------------------------------------------------

#[test]
fn an_unknown_key_is_named_with_its_line_and_column() {
    let ctx = Ctx::new();
    let src = ctx.folder("music", &[("a.flac", "a")]);
    let dst = ctx.path("backup/music");
    let file = ctx.config(
        "cfg.toml",
        &format!(
            "[[mirror]]\nsource = {}\ndestination = {}\n",
            q(&src),
            q(&dst)
        ),
    );
    assert_config_error(
        &ctx,
        &file,
        &["`destination`", "line 3, column 1", "cfg.toml"],
        &[&dst, &ctx.path("backup")],
    );
    // The same file for `watch`: refused before anything starts.
    let out = ctx.run([OsStr::new("watch"), "--config".as_ref(), file.as_os_str()]);
    assert_code(&out, 2);
    assert!(stderr(&out).contains("destination"), "{}", both(&out));
    assert!(!ctx.path("backup").exists());
}

#[test]
fn a_type_error_names_its_line_and_column() {
    let ctx = Ctx::new();
    let src = ctx.folder("music", &[("a.flac", "a")]);
    let dst = ctx.path("backup");
    let file = ctx.config(
        "cfg.toml",
        &format!(
            "jobs = \"four\"\n[[mirror]]\nsource = {}\ndest = {}\n",
            q(&src),
            q(&dst)
        ),
    );
    assert_config_error(&ctx, &file, &["line 1, column 8", "four"], &[&dst]);
}

#[test]
fn an_invalid_duration_is_refused() {
    let ctx = Ctx::new();
    let src = ctx.folder("music", &[("a.flac", "a")]);
    let dst = ctx.path("backup");
    let file = ctx.config(
        "cfg.toml",
        &format!(
            "# timing\ndebounce = \"soon\"\n[[mirror]]\nsource = {}\ndest = {}\n",
            q(&src),
            q(&dst)
        ),
    );
    assert_config_error(&ctx, &file, &["line 2", "\"soon\"", "duration"], &[&dst]);
}

/// A value written as a flag and in the file is read by one parser: the same bad text
/// gets the same message both ways (exit 2), and the same good text the same setting.
#[test]
fn a_bad_value_gets_the_same_message_as_a_flag_and_in_the_file() {
    let ctx = Ctx::new();
    let src = ctx.folder("music", &[("a.flac", "a")]);
    let dst = ctx.path("backup");
    let table = [
        ("watch", "--debounce", "debounce", "soon"),
        ("watch", "--rescan", "rescan", "5"),
        ("watch", "--max-wait", "max_wait", "2 weeks"),
        ("sync", "--keep-versions", "keep_versions", "soon"),
        (
            "sync",
            "--versions-max-size",
            "versions_max_size",
            "10 parsecs",
        ),
    ];
    for (command, flag, key, bad) in table {
        let out = ctx.run([
            OsStr::new(command),
            src.as_os_str(),
            dst.as_os_str(),
            flag.as_ref(),
            bad.as_ref(),
        ]);
        assert_code(&out, 2);
        let err = stderr(&out);
        let first = err.lines().next().unwrap_or_default();
        let (_, message) = first
            .split_once(">': ")
            .unwrap_or_else(|| panic!("no value message for {flag}{}", both(&out)));
        assert!(message.contains(bad), "{message:?} quotes {bad:?}");

        let file = ctx.config(
            "cfg.toml",
            &format!("{key} = {bad:?}\n{}", mirror(None, &src, &dst, "")),
        );
        let out = ctx.run([OsStr::new(command), "--config".as_ref(), file.as_os_str()]);
        assert_code(&out, 2);
        let line = stderr(&out);
        assert!(
            line.contains("line 1, column ") && line.trim_end().ends_with(&format!(": {message}")),
            "{key}: the file's message is not the flag's {message:?}{}",
            both(&out)
        );
    }
    assert!(!dst.exists(), "nothing was created");
}

#[test]
fn two_pairs_with_the_same_dest_are_refused() {
    let ctx = Ctx::new();
    let a = ctx.folder("a", &[("x", "x")]);
    let b = ctx.folder("b", &[("y", "y")]);
    let dst = ctx.path("backup/same");
    // The same folder spelled two ways.
    let text = mirror(None, &a, &dst, "") + &mirror(None, &b, &ctx.path("backup/./same/"), "");
    let file = ctx.config("cfg.toml", &text);
    assert_config_error(
        &ctx,
        &file,
        &["same dest", "\"a\"", "\"b\""],
        &[&ctx.path("backup")],
    );
}

#[test]
fn a_dest_inside_another_pairs_source_is_refused() {
    let ctx = Ctx::new();
    let a = ctx.folder("a", &[("x", "x")]);
    let b = ctx.folder("b", &[("y", "y")]);
    let inside_b = b.join("mirror-of-a");
    let text = mirror(None, &a, &inside_b, "") + &mirror(None, &b, &ctx.path("backup/b"), "");
    let file = ctx.config("cfg.toml", &text);
    assert_config_error(
        &ctx,
        &file,
        &["overlaps the source", "\"a\"", "\"b\""],
        &[&inside_b, &ctx.path("backup")],
    );
}

#[test]
fn a_dest_inside_its_own_source_needs_an_exclude() {
    let ctx = Ctx::new();
    let src = ctx.folder("work", &[("notes.txt", "notes"), ("sub/deep.txt", "deep")]);
    let dst = src.join("backup");
    let file = ctx.config("cfg.toml", &mirror(None, &src, &dst, ""));
    assert_config_error(
        &ctx,
        &file,
        &["inside its source", "exclude = [\"backup\"]"],
        &[&dst],
    );

    // With the exclude the pair is fine, and the mirror does not hold itself.
    let file = ctx.config(
        "cfg.toml",
        &mirror(None, &src, &dst, "exclude = [\"backup\"]"),
    );
    let out = ctx.run([OsStr::new("sync"), "--config".as_ref(), file.as_os_str()]);
    assert_code(&out, 0);
    assert_eq!(text(&dst.join("notes.txt")), "notes");
    assert_eq!(text(&dst.join("sub/deep.txt")), "deep");
    assert!(!dst.join("backup").exists(), "the mirror holds itself");
}

#[test]
fn a_missing_config_file_is_named() {
    let ctx = Ctx::new();
    let file = ctx.path("no-such-config.toml");
    assert_config_error(&ctx, &file, &["no-such-config.toml"], &[]);
}

#[test]
fn tilde_and_home_expand_to_the_home_given() {
    let ctx = Ctx::new();
    let home = ctx.home();
    let music = ctx.folder("home/Music", &[("a.flac", "aaa"), ("album/b.flac", "bb")]);
    let docs = ctx.folder("home/Documents", &[("c.txt", "c")]);
    let pics = ctx.folder("home/Pictures", &[("d.png", "d")]);
    let text = "log_file = \"~/logs/datasafe.log\"\n\
                \n[[mirror]]\nsource = \"~/Music\"\ndest = \"~/backup/Music\"\n\
                \n[[mirror]]\nsource = \"$HOME/Documents\"\ndest = \"$HOME/backup/Documents\"\n\
                \n[[mirror]]\nsource = \"${HOME}/Pictures\"\ndest = \"${HOME}/backup/Pictures\"\n";
    // Outside the home, so nothing resolves by accident relative to the file.
    let file = ctx.config("etc/cfg.toml", text);
    let out = ctx.run([OsStr::new("sync"), "--config".as_ref(), file.as_os_str()]);
    assert_code(&out, 0);
    assert_mirrored(&music, &home.join("backup/Music"), false);
    assert_mirrored(&docs, &home.join("backup/Documents"), false);
    assert_mirrored(&pics, &home.join("backup/Pictures"), false);
    let log = text_of(&home.join("logs/datasafe.log"));
    assert!(log.contains("[Music] copied a.flac"), "log:\n{log}");
    assert!(!ctx.path("etc/~").exists() && !ctx.path("~").exists());
}

fn text_of(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------
// 2. sync --config: every enabled pair, a line each, totals, JSON, logs
// ---------------------------------------------------------------------------------------

#[test]
fn sync_config_runs_every_enabled_pair_with_a_line_each_and_totals() {
    let ctx = Ctx::new();
    let a = ctx.folder("a", &[("1.txt", "one"), ("sub/2.txt", "two")]);
    let b = ctx.folder("b", &[("3.txt", "three")]);
    let c = ctx.folder(
        "c",
        &[("4.txt", "four"), ("5.txt", "five"), ("6.txt", "six")],
    );
    let d = ctx.folder("d", &[("7.txt", "seven")]);
    let out_dir = ctx.path("out");
    let text = mirror(None, &a, &out_dir.join("a"), "")
        + &mirror(Some("docs"), &b, &out_dir.join("b"), "")
        + &mirror(None, &c, &out_dir.join("c"), "")
        + &mirror(None, &d, &out_dir.join("d"), "enabled = false");
    let file = ctx.config("cfg.toml", &text);
    let log = ctx.path("logs/run.log");
    let out = ctx.run([
        OsStr::new("sync"),
        "--config".as_ref(),
        file.as_os_str(),
        "--json".as_ref(),
        "--log-file".as_ref(),
        log.as_os_str(),
    ]);
    assert_code(&out, 0);
    assert_mirrored(&a, &out_dir.join("a"), false);
    assert_mirrored(&b, &out_dir.join("b"), false);
    assert_mirrored(&c, &out_dir.join("c"), false);
    assert!(!out_dir.join("d").exists(), "the disabled pair was written");

    let so = stdout(&out);
    let all = so.clone() + &stderr(&out);
    assert!(
        all.contains("skipping pair d"),
        "disabled pair not mentioned{}",
        both(&out)
    );
    for (name, files) in [("a", 2), ("docs", 1), ("c", 3)] {
        let line = line_starting(&so, &format!("pair {name}: Files backed up: "));
        assert_eq!(number_after(line, "Files backed up"), files, "{line}");
    }
    assert!(
        !so.lines().any(|l| l.starts_with("pair d:")),
        "a line for the disabled pair{}",
        both(&out)
    );
    let total = line_starting(&so, "Backup completed at ");
    assert_eq!(number_after(total, "Files backed up"), 6, "{total}");

    let json = json_last_line(&out);
    assert_eq!(json["copied"], 6, "{json}");
    assert_eq!(json["failed"], 0, "{json}");
    assert_eq!(json["bytes_copied"], 3 + 3 + 5 + 4 + 4 + 3, "{json}");
    let pairs = json["pairs"].as_array().expect("a pairs array");
    let names: Vec<&str> = pairs.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["a", "docs", "c"], "{json}");
    let copied: Vec<u64> = pairs
        .iter()
        .map(|p| p["copied"].as_u64().unwrap())
        .collect();
    assert_eq!(copied, [2, 1, 3], "{json}");

    // Every operation line in the log names its pair.
    let log = text_of(&log);
    for (name, file) in [
        ("a", "1.txt"),
        ("a", "sub/2.txt"),
        ("docs", "3.txt"),
        ("c", "6.txt"),
    ] {
        let want = format!("[{name}] copied {file}");
        assert!(log.contains(&want), "{want:?} not in the log:\n{log}");
    }
    for line in log.lines().filter(|l| l.contains(" copied ")) {
        assert!(
            line.contains("[a] ") || line.contains("[docs] ") || line.contains("[c] "),
            "a copy line without its pair: {line:?}"
        );
    }
}

#[test]
fn json_pairs_carry_their_own_duration() {
    // Each entry of `pairs` flattens a full summary, `duration_s` included: it must be the
    // pair's own time, not a placeholder 0.
    let ctx = Ctx::new();
    let a = ctx.folder("a", &[("x.txt", "x")]);
    let b = ctx.folder("b", &[("y.txt", "y")]);
    let text = mirror(None, &a, &ctx.path("out/a"), "") + &mirror(None, &b, &ctx.path("out/b"), "");
    let file = ctx.config("cfg.toml", &text);
    let out = ctx.run([
        OsStr::new("sync"),
        "--config".as_ref(),
        file.as_os_str(),
        "--json".as_ref(),
    ]);
    assert_code(&out, 0);
    let json = json_last_line(&out);
    assert!(json["duration_s"].as_f64().unwrap() > 0.0, "{json}");
    for pair in json["pairs"].as_array().expect("a pairs array") {
        let secs = pair["duration_s"]
            .as_f64()
            .expect("duration_s in each pair");
        assert!(
            secs > 0.0,
            "pair {} reports duration_s = {secs} in the JSON (the total is {})",
            pair["name"],
            json["duration_s"]
        );
    }
}

#[test]
fn the_log_file_key_gets_lines_named_by_pair() {
    let ctx = Ctx::new();
    let a = ctx.folder("a", &[("x.txt", "x")]);
    let b = ctx.folder("b", &[("y.txt", "y")]);
    let log = ctx.path("logs/from-key.log");
    let errors = ctx.path("logs/errors.log");
    let text = format!("log_file = {}\nerror_log_file = {}\n", q(&log), q(&errors))
        + &mirror(None, &a, &ctx.path("out/a"), "")
        + &mirror(Some("bee"), &b, &ctx.path("out/b"), "");
    let file = ctx.config("cfg.toml", &text);
    let out = ctx.run([OsStr::new("sync"), "--config".as_ref(), file.as_os_str()]);
    assert_code(&out, 0);
    let log = text_of(&log);
    assert!(log.contains("[a] copied x.txt"), "log:\n{log}");
    assert!(log.contains("[bee] copied y.txt"), "log:\n{log}");
    assert!(log.contains("pair bee: Files backed up: 1"), "log:\n{log}");
    assert!(errors.exists(), "the error log was not opened");
}

#[test]
fn a_relative_log_file_is_relative_to_the_config_file() {
    // README: "`~` and `$HOME` expand; relative paths are relative to the file."
    let ctx = Ctx::new();
    let a = ctx.folder("etc/a", &[("x.txt", "x")]);
    let text = "log_file = \"rel.log\"\n".to_string() + &mirror(None, &a, &ctx.path("out/a"), "");
    ctx.config("etc/cfg.toml", &text);
    // Run from the temp folder, not from etc/.
    let out = ctx.run(["sync", "--config", "etc/cfg.toml"]);
    assert_code(&out, 0);
    assert!(
        ctx.path("etc/rel.log").exists(),
        "log_file = \"rel.log\" was not written next to the config file (etc/rel.log); \
         written relative to the cwd instead: {}",
        ctx.path("rel.log").exists()
    );
}

#[test]
fn source_and_dest_relative_paths_are_relative_to_the_config_file() {
    let ctx = Ctx::new();
    let a = ctx.folder("etc/music", &[("x.txt", "x")]);
    let text = "[[mirror]]\nsource = \"music\"\ndest = \"../out/music\"\n";
    ctx.config("etc/cfg.toml", text);
    let out = ctx.run(["sync", "--config", "etc/cfg.toml"]);
    assert_code(&out, 0);
    assert_mirrored(&a, &ctx.path("out/music"), false);
}

#[test]
fn without_src_dst_or_config_the_default_config_file_is_used() {
    let ctx = Ctx::new();
    let default = ctx.config_home().join("datasafe/config.toml");

    // None there yet: exit 2, naming the path it looked at.
    let out = ctx.run(["sync"]);
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains(default.to_str().unwrap()),
        "the default path is not named{}",
        both(&out)
    );
    assert_eq!(stderr(&out).trim_end().lines().count(), 1, "{}", both(&out));
    assert!(!ctx.state_home().exists());

    let a = ctx.folder("a", &[("x.txt", "x")]);
    let b = ctx.folder("b", &[("y.txt", "y")]);
    fs::create_dir_all(default.parent().unwrap()).unwrap();
    fs::write(
        &default,
        mirror(None, &a, &ctx.path("out/a"), "") + &mirror(None, &b, &ctx.path("out/b"), ""),
    )
    .unwrap();
    let out = ctx.run(["sync"]);
    assert_code(&out, 0);
    assert_mirrored(&a, &ctx.path("out/a"), false);
    assert_mirrored(&b, &ctx.path("out/b"), false);
    assert!(
        stdout(&out).contains("pair b: Files backed up: 1"),
        "{}",
        both(&out)
    );
    // The default log goes under $XDG_STATE_HOME.
    let log = text_of(&ctx.state_home().join("datasafe/datasafe.log"));
    assert!(log.contains("[a] copied x.txt"), "log:\n{log}");
}

// ---------------------------------------------------------------------------------------
// 3. A failing pair beside healthy ones
// ---------------------------------------------------------------------------------------

#[test]
fn a_pair_whose_source_is_missing_fails_alone() {
    let ctx = Ctx::new();
    let a = ctx.folder("a", &[("x.txt", "x")]);
    let gone = ctx.path("unmounted/drive");
    let c = ctx.folder("c", &[("z.txt", "z")]);
    let text = mirror(None, &a, &ctx.path("out/a"), "")
        + &mirror(Some("usb"), &gone, &ctx.path("out/usb"), "")
        + &mirror(None, &c, &ctx.path("out/c"), "");
    let file = ctx.config("cfg.toml", &text);
    let out = ctx.run([
        OsStr::new("sync"),
        "--config".as_ref(),
        file.as_os_str(),
        "--json".as_ref(),
    ]);
    assert_code(&out, 1);
    assert_mirrored(&a, &ctx.path("out/a"), false);
    assert_mirrored(&c, &ctx.path("out/c"), false);
    let err = stderr(&out);
    let line = err
        .lines()
        .find(|l| l.contains("usb"))
        .unwrap_or_else(|| panic!("no error naming the pair{}", both(&out)));
    assert!(
        line.contains(gone.to_str().unwrap()),
        "the path is not named: {line}"
    );
    assert!(line.contains("does not exist"), "{line}");
    assert!(!gone.exists(), "the missing source was created");
    let json = json_last_line(&out);
    assert_eq!(json["copied"], 2, "{json}");
    assert_eq!(json["failed"], 1, "{json}");
}

// ---------------------------------------------------------------------------------------
// 4. Command-line flags over the file
// ---------------------------------------------------------------------------------------

#[test]
fn command_line_flags_override_the_file() {
    let ctx = Ctx::new();
    let a = ctx.folder(
        "a",
        &[
            ("keep.txt", "a"),
            ("stay.txt", "s"),
            ("drop.tmp", "t"),
            ("drop.log", "l"),
        ],
    );
    let b = ctx.folder("b", &[("keep.txt", "b"), ("sub/x.log", "l")]);
    let (da, db) = (ctx.path("out/a"), ctx.path("out/b"));
    let text = "compress = false\nexclude = [\"*.tmp\"]\ndelete = true\n".to_string()
        + &mirror(None, &a, &da, "compress = false")
        + &mirror(None, &b, &db, "");
    let file = ctx.config("cfg.toml", &text);
    let sync = |extra: &[&str]| {
        let mut args: Vec<&OsStr> = vec!["sync".as_ref(), "--config".as_ref(), file.as_os_str()];
        args.extend(extra.iter().map(OsStr::new));
        ctx.run(args)
    };

    // --compress beats `compress = false`; --exclude adds to the file's "*.tmp".
    let out = sync(&["--compress", "--exclude", "*.log"]);
    assert_code(&out, 0);
    for (dst, want) in [(&da, "a"), (&db, "b")] {
        let gz = dst.join("keep.txt.gz");
        assert!(
            gz.exists(),
            "{} is not gzipped{}",
            dst.display(),
            both(&out)
        );
        assert!(!dst.join("keep.txt").exists());
        let got = snapshot(dst, true);
        let Some(Node::File { content, .. }) = got.get(Path::new("keep.txt")) else {
            panic!("keep.txt missing in {}: {got:?}", dst.display());
        };
        assert_eq!(content, want.as_bytes());
    }
    assert!(
        !da.join("drop.tmp.gz").exists(),
        "the file's exclude was lost"
    );
    assert!(!da.join("drop.log.gz").exists(), "--exclude was not added");
    assert!(!db.join("sub/x.log.gz").exists(), "--exclude was not added");

    // --no-delete beats `delete = true`.
    fs::remove_file(a.join("keep.txt")).unwrap();
    let out = sync(&["--compress", "--exclude", "*.log", "--no-delete"]);
    assert_code(&out, 0);
    assert!(
        da.join("keep.txt.gz").exists(),
        "--no-delete did not keep it{}",
        both(&out)
    );
    // Without it the file's `delete = true` applies again.
    let out = sync(&["--compress", "--exclude", "*.log"]);
    assert_code(&out, 0);
    assert!(
        !da.join("keep.txt.gz").exists(),
        "not deleted{}",
        both(&out)
    );
}

// ---------------------------------------------------------------------------------------
// 5. watch --config: several pairs, hot reload, an invalid edit
// ---------------------------------------------------------------------------------------

#[test]
fn watch_config_mirrors_every_pair_and_reloads_edits() {
    let ctx = Ctx::new();
    let a = ctx.folder("a", &[("a0.txt", "a0")]);
    let b = ctx.folder("b", &[("b0.txt", "b0")]);
    let c = ctx.folder("c", &[("c0.txt", "c0"), ("sub/c1.txt", "c1")]);
    let (da, db, dc) = (ctx.path("out/a"), ctx.path("out/b"), ctx.path("out/c"));
    let file = ctx.config(
        "cfg.toml",
        &(mirror(None, &a, &da, "compress = false") + &mirror(None, &b, &db, "")),
    );
    let w = Watcher::start(&ctx, &[OsStr::new("--config"), file.as_os_str()], "watch");
    w.wait_mirrored(&a, &da, false);
    w.wait_mirrored(&b, &db, false);

    // One process mirrors changes in both sources.
    write(&a.join("new/a1.txt"), "a1");
    write(&b.join("b1.txt"), "b1");
    fs::remove_file(b.join("b0.txt")).unwrap();
    w.wait_mirrored(&a, &da, false);
    w.wait_mirrored(&b, &db, false);

    // Add c, remove b, gzip a.
    ctx.config(
        "cfg.toml",
        &(mirror(None, &a, &da, "compress = true") + &mirror(None, &c, &dc, "")),
    );
    w.wait_mirrored(&c, &dc, false);
    w.wait_mirrored(&a, &da, true);
    w.wait_for("the reload to be reported", || {
        w.stdout().contains("reloaded: 2 pairs started, 2 stopped")
    });
    w.wait_for("status to list a and c, not b", || {
        status_json(&ctx).is_some_and(|r| {
            let mut names: Vec<&str> = r["pairs"]
                .as_array()
                .map(|ps| ps.iter().filter_map(|p| p["name"].as_str()).collect())
                .unwrap_or_default();
            names.sort_unstable();
            names == ["a", "c"]
        })
    });

    // b is no longer watched: its change is not mirrored, though two later changes in c
    // (which the same loop handles after it) are.
    write(&b.join("after-removal.txt"), "not mirrored");
    write(&c.join("c2.txt"), "c2");
    w.wait_mirrored(&c, &dc, false);
    write(&c.join("c3.txt"), "c3");
    w.wait_mirrored(&c, &dc, false);
    assert!(
        !db.join("after-removal.txt").exists(),
        "a removed pair is still mirrored{}",
        w.context()
    );
    // Its mirror is released: a one-off sync may write it now.
    let out = ctx.run([OsStr::new("sync"), b.as_os_str(), db.as_os_str()]);
    assert_code(&out, 0);
    assert_mirrored(&b, &db, false);
    write(&a.join("a2.txt"), "a2");
    w.wait_mirrored(&a, &da, true);

    // An invalid edit is reported and the running configuration kept.
    ctx.config(
        "cfg.toml",
        &(mirror(None, &a, &da, "compress = true") + &mirror(None, &c, &dc, "destination = 1")),
    );
    w.wait_for("the invalid edit to be reported", || {
        let err = w.stderr();
        err.contains("destination") && err.contains("running configuration is kept")
    });
    write(&a.join("a3.txt"), "a3");
    write(&c.join("c4.txt"), "c4");
    fs::remove_file(c.join("sub/c1.txt")).unwrap();
    w.wait_mirrored(&a, &da, true);
    w.wait_mirrored(&c, &dc, false);
}

// ---------------------------------------------------------------------------------------
// 6. A pair whose source is missing at start resumes when it appears
// ---------------------------------------------------------------------------------------

#[test]
fn watch_config_retries_a_pair_whose_source_appears_later() {
    let ctx = Ctx::new();
    let a = ctx.folder("a", &[("a0.txt", "a0")]);
    let late = ctx.path("late");
    let (da, dl) = (ctx.path("out/a"), ctx.path("out/late"));
    let file = ctx.config(
        "cfg.toml",
        &(mirror(None, &a, &da, "") + &mirror(None, &late, &dl, "")),
    );
    let w = Watcher::start(&ctx, &[OsStr::new("--config"), file.as_os_str()], "watch");
    w.wait_mirrored(&a, &da, false);
    w.wait_for("the missing source to be reported", || {
        let err = w.stderr();
        err.contains("[late]") && err.contains(late.to_str().unwrap())
    });
    w.wait_for(
        "status to show the late pair paused and the other watching",
        || {
            let Some(report) = status_json(&ctx) else {
                return false;
            };
            let state = |name| pair_field(&report, name, "state").and_then(Value::as_str);
            state("a") == Some("watching") && state("late").is_some_and(|s| s.starts_with("paused"))
        },
    );
    write(&a.join("a1.txt"), "a1");
    w.wait_mirrored(&a, &da, false);
    assert!(w.child_running(), "the watcher exited{}", w.context());

    fs::create_dir(&late).unwrap();
    write(&late.join("first.txt"), "here now");
    w.wait_mirrored(&late, &dl, false);
    // And it is watched from then on.
    write(&late.join("second.txt"), "watched");
    w.wait_mirrored(&late, &dl, false);
}

impl Watcher {
    fn child_running(&self) -> bool {
        // `kill(pid, 0)` without reaping: the guard still owns the child.
        unsafe { libc::kill(self.pid() as libc::pid_t, 0) == 0 }
    }
}

// ---------------------------------------------------------------------------------------
// 7. One writer per mirror
// ---------------------------------------------------------------------------------------

#[test]
fn a_second_writer_is_refused_naming_the_watchers_pid() {
    let ctx = Ctx::new();
    let src = ctx.folder("src-watched", &[("x.txt", "x")]);
    let dst = ctx.path("out/watched");
    let mut w = Watcher::start(&ctx, &[src.as_os_str(), dst.as_os_str()], "watch");
    w.wait_mirrored(&src, &dst, false);
    w.wait_for("the watcher to say it is watching", || {
        w.stdout().contains("watching")
    });
    let who = format!("another datasafe process (pid {})", w.pid());

    // A single pair on the command line: a fatal error.
    let out = ctx.run([OsStr::new("sync"), src.as_os_str(), dst.as_os_str()]);
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains(&who),
        "{who:?} not in stderr{}",
        both(&out)
    );
    assert!(
        stderr(&out).contains("is writing the mirror"),
        "{}",
        both(&out)
    );

    // In a config file beside a healthy pair: that pair fails, the other is mirrored.
    let other = ctx.folder("other", &[("y.txt", "y")]);
    let file = ctx.config(
        "cfg.toml",
        &(mirror(Some("busy"), &src, &dst, "") + &mirror(None, &other, &ctx.path("out/other"), "")),
    );
    let out = ctx.run([OsStr::new("sync"), "--config".as_ref(), file.as_os_str()]);
    assert_code(&out, 1);
    assert_mirrored(&other, &ctx.path("out/other"), false);
    let err = stderr(&out);
    assert!(
        err.lines()
            .any(|l| l.contains("[busy]") && l.contains(&who)),
        "no error naming the pair and the pid{}",
        both(&out)
    );

    // Killed outright, the watcher leaves its lock file (and status file) behind, but
    // neither holds anyone up: the lock died with it, and its pid is not running.
    w.signal(libc::SIGKILL);
    w.wait_exit();
    assert!(ctx.has_status_file(), "expected a stale status file");
    let out = ctx.run(["status"]);
    assert_code(&out, 1);
    let out = ctx.run([OsStr::new("sync"), src.as_os_str(), dst.as_os_str()]);
    assert_code(&out, 0);
}

// ---------------------------------------------------------------------------------------
// 8. agent print
// ---------------------------------------------------------------------------------------

#[test]
fn agent_print_renders_the_unit_and_the_plist() {
    let ctx = Ctx::new();
    let a = ctx.folder("a", &[("x", "x")]);
    ctx.config("cfg.toml", &mirror(None, &a, &ctx.path("out/a"), ""));
    let exe = fs::canonicalize(env!("CARGO_BIN_EXE_datasafe")).unwrap();
    let exe = exe.to_str().unwrap();
    // Given relative to the cwd (the temp folder): printed absolute.
    let config = ctx.path("cfg.toml");
    let config = config.to_str().unwrap();

    let out = ctx.run([
        "agent",
        "print",
        "--platform",
        "systemd",
        "--config",
        "cfg.toml",
    ]);
    assert_code(&out, 0);
    let unit = stdout(&out);
    let exec = format!("ExecStart={exe} watch --config {config}\n");
    assert!(unit.contains(&exec), "{exec:?} not in:\n{unit}");
    assert!(unit.contains("Restart=on-failure\n"), "{unit}");
    assert!(unit.contains("WantedBy=default.target\n"), "{unit}");

    let out = ctx.run([
        "agent",
        "print",
        "--platform",
        "launchd",
        "--config",
        "cfg.toml",
    ]);
    assert_code(&out, 0);
    let plist = stdout(&out);
    let squash: String = plist.split_whitespace().collect();
    assert!(
        squash.contains("<key>Label</key><string>io.datasafe.watch</string>"),
        "{plist}"
    );
    let args = format!(
        "<key>ProgramArguments</key><array><string>{exe}</string><string>watch</string>\
         <string>--config</string><string>{config}</string></array>"
    );
    assert!(squash.contains(&args), "{args:?} not in:\n{plist}");
    assert!(squash.contains("<key>RunAtLoad</key><true/>"), "{plist}");
    assert!(squash.contains("<key>KeepAlive</key><true/>"), "{plist}");

    // No --config: the default path.
    let default = ctx.config_home().join("datasafe/config.toml");
    ctx.config(
        "xdg-config/datasafe/config.toml",
        &mirror(None, &a, &ctx.path("out/a"), ""),
    );
    let out = ctx.run(["agent", "print", "--platform", "systemd"]);
    assert_code(&out, 0);
    let exec = format!("ExecStart={exe} watch --config {}\n", default.display());
    assert!(
        stdout(&out).contains(&exec),
        "{exec:?} not in{}",
        both(&out)
    );
}

#[test]
fn agent_print_with_a_missing_config_file_names_it() {
    let ctx = Ctx::new();
    let out = ctx.run([
        "agent",
        "print",
        "--platform",
        "systemd",
        "--config",
        "nope.toml",
    ]);
    assert_code(&out, 2);
    let err = stderr(&out);
    assert!(
        err.contains(ctx.path("nope.toml").to_str().unwrap()),
        "{}",
        both(&out)
    );
    assert!(err.contains("does not exist"), "{}", both(&out));
    assert_eq!(stdout(&out), "", "printed a unit anyway{}", both(&out));
}

// ---------------------------------------------------------------------------------------
// 9. status
// ---------------------------------------------------------------------------------------

/// `status --json` parsed, if it exits 0 and prints exactly one watcher's JSON.
fn status_json(ctx: &Ctx) -> Option<Value> {
    let mut all = status_all(ctx);
    (all.len() == 1).then(|| all.remove(0))
}

/// Every watcher's report from `status --json` (one JSON object per line).
fn status_all(ctx: &Ctx) -> Vec<Value> {
    let out = ctx.run(["status", "--json"]);
    if out.status.code() != Some(0) {
        return Vec::new();
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn pair_field<'a>(report: &'a Value, name: &str, field: &str) -> Option<&'a Value> {
    report["pairs"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
        .map(|p| &p[field])
}

#[test]
fn status_shows_the_running_watcher_and_its_pairs() {
    let ctx = Ctx::new();
    let out = ctx.run(["status"]);
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("no datasafe watcher is running"),
        "{}",
        both(&out)
    );
    let out = ctx.run(["status", "--json"]);
    assert_code(&out, 1);
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["running"], false);

    let a = ctx.folder("alpha", &[("x.txt", "x")]);
    let b = ctx.folder("beta", &[("y.txt", "y"), ("z.txt", "z")]);
    let (da, db) = (ctx.path("out/alpha"), ctx.path("out/beta"));
    let file = ctx.config(
        "cfg.toml",
        &(mirror(None, &a, &da, "") + &mirror(None, &b, &db, "")),
    );
    let mut w = Watcher::start(&ctx, &[OsStr::new("--config"), file.as_os_str()], "watch");
    w.wait_mirrored(&a, &da, false);
    w.wait_mirrored(&b, &db, false);

    let mut report = Value::Null;
    w.wait_for("status --json to show both pairs watching", || {
        report = status_json(&ctx).unwrap_or(Value::Null);
        ["alpha", "beta"]
            .iter()
            .all(|n| pair_field(&report, n, "state").and_then(Value::as_str) == Some("watching"))
    });
    assert_eq!(report["pid"], w.pid(), "{report}");
    assert!(ctx.has_status_file());

    let out = ctx.run(["status"]);
    assert_code(&out, 0);
    let shown = stdout(&out);
    for want in ["alpha", "beta", "watching", &format!("pid {}", w.pid())] {
        assert!(shown.contains(want), "{want:?} not in status{}", both(&out));
    }

    // A change shows up in the counts.
    let before = |r: &Value| pair_field(r, "beta", "files_mirrored").and_then(Value::as_u64);
    let start = before(&report).expect("files_mirrored for beta");
    write(&b.join("new.txt"), "new");
    w.wait_mirrored(&b, &db, false);
    w.wait_for("files_mirrored of beta to count the new file", || {
        report = status_json(&ctx).unwrap_or(Value::Null);
        before(&report) == Some(start + 1)
    });
    assert_eq!(
        pair_field(&report, "beta", "last_change").and_then(Value::as_str),
        Some("new.txt"),
        "{report}"
    );

    w.signal(libc::SIGINT);
    let status = w.wait_exit();
    assert_eq!(
        status.signal(),
        Some(libc::SIGINT),
        "{status:?}{}",
        w.context()
    );
    let out = ctx.run(["status"]);
    assert_code(&out, 1);
    assert!(
        !ctx.has_status_file(),
        "the status file outlived the watcher"
    );
}

#[test]
fn status_still_sees_a_watcher_after_another_one_stops() {
    // Two watchers run at once. When one stops, `status` must not claim that no watcher
    // runs while the other still does.
    let ctx = Ctx::new();
    let a = ctx.folder("first", &[("x.txt", "x")]);
    let b = ctx.folder("second", &[("y.txt", "y")]);
    let (da, db) = (ctx.path("out/first"), ctx.path("out/second"));
    let first = Watcher::start(&ctx, &[a.as_os_str(), da.as_os_str()], "first");
    first.wait_mirrored(&a, &da, false);
    // Its final state published (after which an idle watcher has nothing new to write).
    first.wait_for("status to show the first watcher's pair watching", || {
        status_json(&ctx).is_some_and(|r| {
            r["pid"] == first.pid() && pair_field(&r, "first", "state") == Some(&"watching".into())
        })
    });
    let mut second = Watcher::start(&ctx, &[b.as_os_str(), db.as_os_str()], "second");
    second.wait_mirrored(&b, &db, false);
    second.wait_for("status to show both watchers", || {
        let all = status_all(&ctx);
        all.len() == 2
            && all.iter().any(|r| {
                r["pid"] == second.pid()
                    && pair_field(r, "second", "state") == Some(&"watching".into())
            })
    });
    second.signal(libc::SIGINT);
    assert_eq!(
        second.wait_exit().signal(),
        Some(libc::SIGINT),
        "{}",
        second.context()
    );

    let seen = wait_until(Duration::from_secs(6), || {
        status_json(&ctx).is_some_and(|r| r["pid"] == first.pid())
    });
    let out = ctx.run(["status"]);
    assert!(
        seen,
        "the first watcher (pid {}) still runs, but `status` says otherwise 6 s after the \
         second one stopped (exit {:?}): {}{}",
        first.pid(),
        out.status.code(),
        stderr(&out).trim(),
        first.context()
    );
}

// ---------------------------------------------------------------------------------------
// 10. completions, man page, examples in --help
// ---------------------------------------------------------------------------------------

#[test]
fn completions_man_page_and_examples() {
    let ctx = Ctx::new();
    let out = ctx.run(["completions", "bash"]);
    assert_code(&out, 0);
    let script = stdout(&out);
    assert!(script.contains("datasafe"), "{script}");
    assert!(
        script.contains("complete "),
        "not a bash completion script:\n{script}"
    );

    let out = ctx.run(["man"]);
    assert_code(&out, 0);
    let man = stdout(&out);
    assert!(
        man.starts_with(".ie") || man.starts_with(".TH"),
        "not roff:\n{man}"
    );
    assert!(man.contains("datasafe"), "{man}");

    for cmd in ["sync", "watch"] {
        let out = ctx.run([cmd, "--help"]);
        assert_code(&out, 0);
        let help = stdout(&out);
        assert!(
            help.contains("Examples:"),
            "no examples in {cmd} --help:\n{help}"
        );
        assert!(help.contains(&format!("datasafe {cmd} ")), "{help}");
        assert!(help.contains("--config"), "{help}");
    }
}
