//! One `weed` process of a test server: its command line, log file, start and end, and
//! the two numbers the module's `//!` quotes (resident memory, CPU time).
//!
//! Every `weed` is spawned from one long-lived thread of the harness with
//! `PR_SET_PDEATHSIG = SIGKILL`: the kernel kills it when that thread ends, which is
//! only when the test process ends. So a test binary that is itself killed (a CI
//! timeout, Ctrl-C, a crash) leaves no server behind, and the shared server, which lives
//! in a static and is never dropped, ends with the process. (The death signal follows
//! the *thread* that forked, not the process; a test thread would kill its server when
//! it returns, hence the one keeper thread.)
//!
//! Deliberately not here: what the arguments mean (`mini`, `cluster`), readiness.

use crate::common::sshd::tree::end_tree;
use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

type SpawnJob = Box<dyn FnOnce() -> io::Result<Child> + Send>;
/// A job and where to send its result.
type Request = (SpawnJob, mpsc::Sender<io::Result<Child>>);

/// Runs `job` (which spawns a child) on the keeper thread and returns its result.
fn spawn_on_keeper(job: SpawnJob) -> io::Result<Child> {
    static KEEPER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    let keeper = KEEPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("seaweed-keeper".into())
            .spawn(move || {
                // The receiver lives in a static's sender's peer: the loop ends only
                // with the process, and with it every child's parent thread.
                for (job, reply) in rx {
                    let _ = reply.send(job());
                }
            })
            .unwrap();
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    keeper
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((job, reply_tx))
        .unwrap();
    reply_rx.recv().unwrap()
}

/// A `weed SUBCOMMAND ARGS…` that can be started, ended and started again with the
/// same command line, appending to the same log.
pub struct Proc {
    /// What failure messages call it ("weed mini", "volume server 1").
    pub name: String,
    program: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    cwd: PathBuf,
    log: PathBuf,
    child: Mutex<Option<Child>>,
}

impl Proc {
    /// A process not yet started; its stdout and stderr go to `log` (appended).
    pub fn new(name: impl Into<String>, program: &Path, cwd: &Path, log: &Path) -> Proc {
        Proc {
            name: name.into(),
            program: program.to_owned(),
            args: Vec::new(),
            env: Vec::new(),
            cwd: cwd.to_owned(),
            log: log.to_owned(),
            child: Mutex::new(None),
        }
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Proc {
        self.args.push(arg.into());
        self
    }

    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Proc {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Starts the process (it must not be running); returns at once.
    pub fn spawn(&self) -> Result<(), String> {
        let mut child = self.child();
        assert!(child.is_none(), "{} is already running", self.name);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("{}: {e}", self.log.display()))?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let (program, args, env, cwd) = (
            self.program.clone(),
            self.args.clone(),
            self.env.clone(),
            self.cwd.clone(),
        );
        let spawned = spawn_on_keeper(Box::new(move || {
            let mut cmd = Command::new(&program);
            cmd.args(&args)
                .envs(env)
                .current_dir(&cwd)
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(err);
            // SAFETY: only async-signal-safe calls between fork and exec.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            cmd.spawn()
        }));
        let spawned =
            spawned.map_err(|e| format!("cannot start {}: {e}", self.program.display()))?;
        *child = Some(spawned);
        Ok(())
    }

    /// The exit status if the process was started and has ended.
    pub fn exited(&self) -> Option<ExitStatus> {
        self.child().as_mut().and_then(|c| c.try_wait().unwrap())
    }

    /// True while the process runs.
    pub fn is_running(&self) -> bool {
        let mut child = self.child();
        child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child().as_ref().map(Child::id)
    }

    /// Ends the process and anything below it with `sig` (SIGTERM waits for a graceful
    /// end, up to the harness's deadline; then SIGKILL) and forgets it. Nothing happens
    /// if it is not running.
    pub fn end(&self, sig: i32) -> Result<(), String> {
        let Some(mut child) = self.child().take() else {
            return Ok(());
        };
        if child.try_wait().unwrap().is_some() {
            // It exited by itself and is reaped: its pid may be someone else's by now.
            return Ok(());
        }
        end_tree(child, sig).map_err(|e| format!("{}: {e}", self.name))
    }

    /// What the process logged so far, over all its starts.
    pub fn log_text(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    /// The length of the log now, to read only what a later start adds.
    pub fn log_len(&self) -> usize {
        fs::metadata(&self.log).map_or(0, |m| m.len() as usize)
    }

    /// The last `n` lines of the log, for failure messages.
    pub fn log_tail(&self, n: usize) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Resident memory in KiB (`VmRSS`), while it runs.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// User + system CPU time used so far, while it runs.
    pub fn cpu_time(&self) -> Option<Duration> {
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.pid()?)).ok()?;
        let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
        // After the name: state(3) ... utime is field 14, stime 15 (1-based).
        let utime: u64 = fields.nth(11)?.parse().ok()?;
        let stime: u64 = fields.next()?.parse().ok()?;
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Some(Duration::from_millis((utime + stime) * 1000 / ticks))
    }

    fn child(&self) -> MutexGuard<'_, Option<Child>> {
        // A test that panicked while holding the lock left nothing half-done in it.
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // No panic here: the drop may run while a failed test unwinds.
        if let Err(stuck) = self.end(libc::SIGKILL) {
            eprintln!("{stuck}");
        }
    }
}
