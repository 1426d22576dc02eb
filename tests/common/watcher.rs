//! A running `datasafe watch` for the integration tests, and waits with a deadline.
//! Every test that starts a watcher holds [`shared`] (the tests that lower a
//! system-wide inotify limit hold [`exclusive`]), and each watcher is SIGKILLed on drop.

use super::{TestEnv, assert_mirrored, is_mirrored};
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a wait for the watcher may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);
/// The same for the start-up reconcile, which copies (or gzips) up to 300 MB in a debug
/// build: seconds on an idle machine, much more on a loaded one.
pub const START_DEADLINE: Duration = Duration::from_secs(90);
/// How often a wait looks again.
pub const POLL: Duration = Duration::from_millis(15);
/// The debounce every watcher here runs with (unless a test needs another).
pub const DEBOUNCE: &str = "50ms";

/// A lock shared by every watcher test and held exclusively by the tests that lower a
/// per-user inotify limit. It is an `flock` on a file in the temp folder, so it also
/// keeps apart test processes running at the same time (two `cargo test` runs): the
/// limits are system-wide per user, and a second process would otherwise read (and
/// "restore") the lowered value. Released when the returned file is dropped.
pub fn test_lock(op: i32) -> File {
    use std::os::fd::AsRawFd;
    let path = std::env::temp_dir().join("datasafe-watch-tests.lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    loop {
        if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
            return file;
        }
        let err = std::io::Error::last_os_error();
        assert_eq!(err.kind(), std::io::ErrorKind::Interrupted, "flock: {err}");
    }
}

pub fn shared() -> File {
    test_lock(libc::LOCK_SH)
}

pub fn exclusive() -> File {
    test_lock(libc::LOCK_EX)
}

/// Polls `cond` every [`POLL`] until it holds (true) or `limit` has passed (false).
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

/// True if `cond` holds at every poll for the whole of `window`.
pub fn holds_for(window: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + window;
    while Instant::now() < end {
        if !cond() {
            return false;
        }
        std::thread::sleep(POLL);
    }
    cond()
}

pub fn read_text(path: &Path) -> String {
    String::from_utf8_lossy(&fs::read(path).unwrap_or_default()).into_owned()
}

/// A running `datasafe watch`, SIGKILLed on drop if it is still running. Its stdout and
/// stderr go to files next to the tree (a pipe nobody reads could stall it).
pub struct Watcher {
    pub child: Child,
    pub out: PathBuf,
    pub err: PathBuf,
}

impl Watcher {
    /// Starts `datasafe watch SRC DST --debounce 50ms EXTRA...` (without the default
    /// debounce if `extra` names one). DST is a path or a URL.
    pub fn start(
        env: &TestEnv,
        src: &Path,
        dst: impl AsRef<std::ffi::OsStr>,
        extra: &[&str],
        tag: &str,
    ) -> Watcher {
        let out = env.dir.path().join(format!("{tag}.stdout"));
        let err = env.dir.path().join(format!("{tag}.stderr"));
        let mut args: Vec<&std::ffi::OsStr> = vec!["watch".as_ref(), src.as_os_str(), dst.as_ref()];
        if !extra.contains(&"--debounce") {
            args.extend(["--debounce", DEBOUNCE].map(std::ffi::OsStr::new));
        }
        args.extend(extra.iter().map(std::ffi::OsStr::new));
        let child = env
            .cmd(args)
            .stdin(Stdio::null())
            .stdout(File::create(&out).unwrap())
            .stderr(File::create(&err).unwrap())
            .spawn()
            .unwrap();
        Watcher { child, out, err }
    }

    /// Starts a watcher on the env's pair after planting `probe.txt` in SRC (if it is not
    /// there), and waits until its start-up reconcile has copied every file SRC holds.
    pub fn ready(env: &TestEnv, extra: &[&str], tag: &str) -> Watcher {
        if !env.src.join("probe.txt").exists() {
            env.write("probe.txt", "probe");
        }
        let names = stored_names(&env.src, extra.contains(&"--compress"));
        let w = Watcher::start(env, &env.src, env.dst_arg(), extra, tag);
        match &env.bucket {
            // A bucket mirror: its objects, as a plain listing shows them.
            Some(bucket) => {
                use super::seaweed::{S3Endpoint, Seaweed};
                let ok = wait_until(START_DEADLINE, || {
                    let keys: Vec<PathBuf> = Seaweed::shared()
                        .list_keys(bucket, "dst/", 1000)
                        .into_iter()
                        .map(|o| PathBuf::from(&o.key[4..]))
                        .collect();
                    w.stdout().contains("watching") && names.iter().all(|n| keys.contains(n))
                });
                assert!(ok, "the watcher did not become ready{}", w.context());
            }
            None => w.wait_ready(&env.dst, &names),
        }
        w
    }

    /// Waits until the watcher printed "watching" and DST holds every name in `names`
    /// (a file reaches its final name only complete, so this is the start-up reconcile
    /// having copied what SRC held before the start).
    pub fn wait_ready(&self, dst: &Path, names: &[PathBuf]) {
        let ok = wait_until(START_DEADLINE, || {
            self.stdout().contains("watching") && names.iter().all(|n| dst.join(n).exists())
        });
        assert!(ok, "the watcher did not become ready{}", self.context());
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn stdout(&self) -> String {
        read_text(&self.out)
    }

    pub fn stderr(&self) -> String {
        read_text(&self.err)
    }

    /// Its output so far, for failure messages.
    pub fn context(&self) -> String {
        format!(
            "\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout(),
            self.stderr()
        )
    }

    pub fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits for the process to exit (failing after `limit`).
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let mut status = None;
        let done = wait_until(limit, || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        assert!(
            done,
            "the watcher did not exit within {limit:?}{}",
            self.context()
        );
        status.unwrap()
    }

    /// Waits until DST mirrors SRC (content, modes, mtimes); on timeout, fails listing
    /// every difference.
    pub fn wait_mirrored(&self, src: &Path, dst: &Path, gz: bool) {
        if !wait_until(DEADLINE, || is_mirrored(src, dst, gz)) {
            eprintln!("watcher output:{}", self.context());
            assert_mirrored(src, dst, gz);
            panic!("the trees differed until the deadline{}", self.context());
        }
    }

    /// Waits until the env's DST mirrors its SRC as far as its kind of DST can
    /// ([`TestEnv::is_mirrored`]); on timeout, fails listing every difference.
    pub fn wait_env_mirrored(&self, env: &TestEnv, gz: bool) {
        if !wait_until(DEADLINE, || env.is_mirrored(gz)) {
            eprintln!("watcher output:{}", self.context());
            env.assert_mirrored(gz);
            panic!("the trees differed until the deadline{}", self.context());
        }
    }

    /// CPU time (user + system) the process has used so far.
    pub fn cpu_time(&self) -> Duration {
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        let after_name = &stat[stat.rfind(')').unwrap() + 1..];
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        // Fields 14 and 15 of stat(5) (utime, stime); `fields[0]` is field 3.
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        let per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        Duration::from_millis(ticks * 1000 / per_sec)
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            unsafe {
                libc::kill(self.pid(), libc::SIGKILL);
            }
        }
        let _ = self.child.wait();
    }
}

/// The files under `src`, named as DST stores them: with `.gz` appended when `gz`.
pub fn stored_names(src: &Path, gz: bool) -> Vec<PathBuf> {
    walkdir::WalkDir::new(src)
        .min_depth(1)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let rel = e.path().strip_prefix(src).unwrap().to_path_buf();
            match gz {
                true => PathBuf::from(format!("{}.gz", rel.display())),
                false => rel,
            }
        })
        .collect()
}
