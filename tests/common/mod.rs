//! Shared helpers for the integration tests: a temp tree with `src/` and `dst/`, a way
//! to run the real binary, and a tree comparison that prints what differs.

pub mod dst;
pub mod faults;
pub mod seaweed;
pub mod sshd;
pub mod watcher;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use filetime::FileTime;

/// A temp folder with `src/` (created) and `dst/` (not created).
pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub src: PathBuf,
    pub dst: PathBuf,
    /// The server when DST is given as `sftp://` for `dst/` ([`dst::Dst::Sftp`]).
    pub sshd: Option<Arc<sshd::Sshd>>,
    /// The bucket when DST is given as `s3://BUCKET/dst` on the shared SeaweedFS
    /// ([`dst::Dst::S3`]).
    pub bucket: Option<String>,
}

impl TestEnv {
    pub fn new() -> TestEnv {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let dst = dir.path().join("dst");
        std::fs::create_dir(&src).unwrap();
        TestEnv {
            dir,
            src,
            dst,
            sshd: None,
            bucket: None,
        }
    }

    /// Writes `content` to `src/rel`, creating folders.
    pub fn write(&self, rel: impl AsRef<Path>, content: impl AsRef<[u8]>) -> PathBuf {
        let path = self.src.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        path
    }

    /// The binary with `args`, not yet run (with what a remote DST needs in its
    /// environment, [`TestEnv::set_dst_env`]).
    pub fn cmd<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_datasafe"));
        cmd.args(args).current_dir(self.dir.path());
        self.set_dst_env(&mut cmd);
        cmd
    }

    /// Runs `datasafe sync src DST EXTRA...` and returns its output.
    pub fn sync(&self, extra: &[&str]) -> Output {
        let dst = self.dst_arg();
        let mut args: Vec<&OsStr> = vec!["sync".as_ref(), self.src.as_os_str(), &dst];
        args.extend(extra.iter().map(|s| OsStr::new(*s)));
        self.cmd(args).output().unwrap()
    }

    /// Runs sync and asserts its exit code, printing its output if it differs.
    pub fn sync_ok(&self, extra: &[&str]) -> Output {
        let out = self.sync(extra);
        assert_code(&out, 0);
        out
    }
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn assert_code(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "exit code\n--- stdout\n{}\n--- stderr\n{}",
        stdout(out),
        stderr(out)
    );
}

/// The number after `label: ` in the run's summary lines.
pub fn count(out: &Output, label: &str) -> u64 {
    let text = stdout(out);
    let key = format!("{label}: ");
    let start = text
        .rfind(&key)
        .unwrap_or_else(|| panic!("no {label:?} in:\n{text}"))
        + key.len();
    text[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap()
}

/// Sets a file's mtime exactly (seconds and nanoseconds), not following symlinks.
pub fn set_mtime(path: &Path, secs: i64, nanos: u32) {
    filetime::set_symlink_file_times(
        path,
        FileTime::from_unix_time(secs, nanos),
        FileTime::from_unix_time(secs, nanos),
    )
    .unwrap();
}

/// What the comparison looks at for one path.
#[derive(Debug, PartialEq, Eq)]
pub enum Node {
    File {
        content: Vec<u8>,
        mode: u32,
        mtime: (i64, u32),
    },
    Dir {
        mode: u32,
    },
    Link {
        target: PathBuf,
        mtime: (i64, u32),
    },
}

/// Everything under `root` except DST's `.datasafe`, with `.gz` files un-gzipped and
/// renamed back when `gz`.
pub fn snapshot(root: &Path, gz: bool) -> BTreeMap<PathBuf, Node> {
    try_snapshot(root, gz)
        .unwrap_or_else(|| panic!("cannot read the tree at {} completely", root.display()))
}

/// Asserts DST mirrors SRC (content, modes, mtimes, links), listing every difference.
pub fn assert_mirrored(src: &Path, dst: &Path, gz: bool) {
    assert_same_trees(&snapshot(src, false), &snapshot(dst, gz));
}

/// Asserts the trees `a` (SRC) and `b` (DST) are equal, listing every difference.
pub fn assert_same_trees(a: &BTreeMap<PathBuf, Node>, b: &BTreeMap<PathBuf, Node>) {
    if a == b {
        return;
    }
    let mut diff = String::new();
    for (k, v) in a {
        match b.get(k) {
            None => diff.push_str(&format!("missing in dst: {}\n", k.display())),
            Some(w) if w != v => diff.push_str(&format!(
                "differs: {}\n  src {v:?}\n  dst {w:?}\n",
                k.display()
            )),
            _ => {}
        }
    }
    for k in b.keys().filter(|k| !a.contains_key(*k)) {
        diff.push_str(&format!("extra in dst: {}\n", k.display()));
    }
    panic!("dst does not mirror src:\n{diff}");
}

/// True if this process runs as root (tests that need root skip otherwise, saying so).
pub fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// Like [`snapshot`], but `None` instead of a panic when something vanishes or cannot be
/// read while the tree is walked (for polling a tree that a running process changes).
pub fn try_snapshot(root: &Path, gz: bool) -> Option<BTreeMap<PathBuf, Node>> {
    let mut map = BTreeMap::new();
    for entry in walkdir::WalkDir::new(root).min_depth(1).follow_links(false) {
        let entry = entry.ok()?;
        let rel = entry.path().strip_prefix(root).ok()?.to_path_buf();
        if rel.starts_with(".datasafe") {
            continue;
        }
        let meta = entry.path().symlink_metadata().ok()?;
        let mtime = (meta.mtime(), meta.mtime_nsec() as u32);
        let mode = meta.permissions().mode() & 0o7777;
        let ft = meta.file_type();
        let (rel, node) = if ft.is_symlink() {
            let target = std::fs::read_link(entry.path()).ok()?;
            (rel, Node::Link { target, mtime })
        } else if ft.is_dir() {
            (rel, Node::Dir { mode })
        } else if ft.is_file() {
            let raw = std::fs::read(entry.path()).ok()?;
            if gz {
                let name = rel.as_os_str().as_encoded_bytes();
                let stem = name.strip_suffix(b".gz")?;
                let mut content = Vec::new();
                flate2::read::MultiGzDecoder::new(&raw[..])
                    .read_to_end(&mut content)
                    .ok()?;
                let rel = PathBuf::from(unsafe { OsStr::from_encoded_bytes_unchecked(stem) });
                (
                    rel,
                    Node::File {
                        content,
                        mode,
                        mtime,
                    },
                )
            } else {
                (
                    rel,
                    Node::File {
                        content: raw,
                        mode,
                        mtime,
                    },
                )
            }
        } else {
            continue;
        };
        map.insert(rel, node);
    }
    Some(map)
}

/// True if DST mirrors SRC right now (see [`assert_mirrored`]); false on any difference
/// or if either tree changed under the walk.
pub fn is_mirrored(src: &Path, dst: &Path, gz: bool) -> bool {
    match (try_snapshot(src, false), try_snapshot(dst, gz)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// True when the long variants of the fault tests run (`DATASAFE_LONG=1`, as
/// `scripts/long_tests.sh` sets it): more rounds of the same faults.
pub fn long_mode() -> bool {
    std::env::var_os("DATASAFE_LONG").is_some_and(|v| !v.is_empty() && v != "0")
}

/// Runs a `datasafe restore …` command line as a warning gave it, through the shell.
pub fn run_restore_line(env: &TestEnv, line: &str) -> std::process::Output {
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
pub fn restore_line(err: &str) -> String {
    let line = err
        .lines()
        .find(|l| l.contains("before it became a mirror"))
        .unwrap_or_else(|| panic!("no warning about what DST held before:\n{err}"));
    line.split("run: ").nth(1).unwrap().trim().to_string()
}
