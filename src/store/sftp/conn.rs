//! One SSH connection per remote mirror: the user's own `ssh` run as `ssh -s -- HOST
//! sftp` (so `~/.ssh/config`, keys, the agent, `ProxyJump` and `known_hosts` work as with
//! `rsync -e ssh`), with one pipelined SFTP session over it shared by every worker.
//!
//! [`Conn`] owns the session and brings it back: a request that finds the connection
//! gone (ssh exited, the server restarted, the network went silent and ssh's keep-alives
//! gave up) marks it down; the next request connects again, waiting between tries with
//! a growing backoff, for at most [`Conn::patience`] in all before it fails with the last
//! reason. Requests that only read are sent again on the new connection; a write whose
//! handle died with the old one fails, and the engine writes that file again.
//!
//! Never a hang: ssh is told to send keep-alives and give up on a silent server, every
//! request has a deadline, and without a terminal on stdin ssh never prompts
//! (`BatchMode`): a password it would need is one error line naming the host.
//!
//! The async client runs on one small runtime owned by this module; the store's calls
//! come from plain threads and block on it.

use crate::config::Remote;
use openssh_sftp_client::error::SftpErrorKind;
use openssh_sftp_client::{Error as SftpError, Sftp, SftpOptions};
use std::future::Future;
use std::io::{self, IsTerminal};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::runtime::Handle;

/// How long one request may wait for its answer before the connection counts as dead.
pub(super) const REQUEST_DEADLINE: Duration = Duration::from_secs(120);
/// ssh's keep-alive: a server silent for `INTERVAL × COUNT` seconds ends the connection.
const ALIVE_INTERVAL: u32 = 5;
const ALIVE_COUNT: u32 = 3;
/// How long ssh may take to connect.
const CONNECT_TIMEOUT: u32 = 15;

/// How long the first connection of a store may take: ssh's own timeout, the SFTP
/// start-up after it, and a margin.
const FULL_CONNECT: Duration = Duration::from_secs(CONNECT_TIMEOUT as u64 + 20);

/// The least time a try to connect again is given.
const MIN_CONNECT: Duration = Duration::from_secs(2);
/// The first wait between connection attempts; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How long a request waits for a lost connection to come back, in milliseconds (see
/// [`set_patience`]).
static PATIENCE_MS: AtomicU64 = AtomicU64::new(60_000);

/// Sets how long requests wait for a lost connection to come back before they fail:
/// long for `sync` (it rides out a restart of the server and resumes), short for
/// `watch`, whose loop says "reconnecting" and tries again itself, never stalled.
pub fn set_patience(patience: Duration) {
    PATIENCE_MS.store(
        u64::try_from(patience.as_millis()).unwrap_or(u64::MAX),
        Ordering::Relaxed,
    );
}

/// Set once the user asked the process to stop (see [`give_up_on`]).
static STOP: OnceLock<Arc<std::sync::atomic::AtomicBool>> = OnceLock::new();

/// Makes requests stop waiting for a lost connection once `stop` is set (Ctrl-C): what
/// is in flight cannot finish without the server, and the index is saved locally.
pub fn give_up_on(stop: Arc<std::sync::atomic::AtomicBool>) {
    let _ = STOP.set(stop);
}

fn stopping() -> bool {
    STOP.get().is_some_and(|s| s.load(Ordering::Relaxed))
}

/// The runtime every SFTP session of this process runs on: one thread ("sftp") drives
/// the connections' I/O (each session's read and flush tasks, ssh's pipes, timers); a
/// caller's future runs on the caller's own thread ([`block_on`]) and only waits there.
/// One thread and no work-stealing scheduler: a round trip wakes that thread and the
/// waiting caller, nothing else (a multi-thread runtime also woke its idle workers, and
/// the wake-ups, not the bytes, were most of a small file's cost).
pub(super) fn runtime() -> io::Result<&'static Handle> {
    static RUNTIME: OnceLock<Result<Handle, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            let handle = runtime.handle().clone();
            std::thread::Builder::new()
                .name("sftp".into())
                .spawn(move || runtime.block_on(std::future::pending::<()>()))
                .map_err(|e| e.to_string())?;
            Ok(handle)
        })
        .as_ref()
        .map_err(|e| io::Error::other(format!("cannot start the SFTP runtime: {e}")))
}

/// Runs `future` to completion from a plain thread (never from inside the runtime).
pub(super) fn block_on<F: Future>(future: F) -> io::Result<F::Output> {
    Ok(runtime()?.block_on(future))
}

/// What the server offers beyond SFTP version 3.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Extensions {
    /// `posix-rename@openssh.com`: a rename that replaces its target in one step.
    pub posix_rename: bool,
    /// `hardlink@openssh.com`.
    pub hardlink: bool,
    /// `fsync@openssh.com`.
    pub fsync: bool,
    /// `statvfs@openssh.com`: free space.
    pub statvfs: bool,
}

/// A live session and what it offers.
pub(super) struct Session {
    /// The SFTP client; its requests are pipelined over the one ssh process.
    pub sftp: Sftp,
    /// Which connection this is (1 for the first): a failure marks only its own
    /// connection down, not a newer one another worker already made.
    pub number: u64,
    /// ssh itself, killed when the session goes.
    child: Mutex<Option<tokio::process::Child>>,
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Ok(mut child) = self.child.lock()
            && let Some(child) = child.as_mut()
        {
            let _ = child.start_kill();
        }
    }
}

/// The state of the connection.
enum Link {
    /// Connected.
    Up(Arc<Session>),
    /// Not connected: the next try is due at `next` (the wait doubling each time), and
    /// `error` says why the last one failed.
    Down {
        next: Instant,
        wait: Duration,
        error: String,
        /// True once a connection was made: the next one is a reconnection.
        was_up: bool,
        /// When it was lost: requests wait for it to come back until `patience` after
        /// this, then fail at once (only one try per backoff step is made).
        since: Instant,
    },
}

impl Link {
    /// How long requests still wait for the connection to come back (see
    /// [`set_patience`]); all of it while connected.
    fn patience_left(&self) -> Duration {
        let patience = Duration::from_millis(PATIENCE_MS.load(Ordering::Relaxed));
        match self {
            Link::Up(_) => patience,
            Link::Down { since, .. } => patience.saturating_sub(since.elapsed()),
        }
    }
}

/// The connection of one remote mirror.
pub struct Conn {
    remote: Remote,
    link: Mutex<Link>,
    /// Connections made so far.
    made: AtomicU64,
    /// What the first session offered (the same server is assumed afterwards).
    extensions: OnceLock<Extensions>,
    /// The last thing ssh wrote on stderr (its reason when a connection fails).
    stderr: Arc<Mutex<String>>,
    /// Temp files that could not be removed because the connection was down: removed
    /// as soon as it is back.
    orphans: Mutex<Vec<String>>,
}

/// Why a connection could not be made or was lost: one line naming the host, with ssh's
/// own words.
pub fn unreachable(remote: &Remote, why: &str) -> io::Error {
    let host = remote.destination();
    // ssh names the host itself in some of its words ("user@host: Permission denied").
    let why = why
        .strip_prefix(host.as_str())
        .and_then(|rest| rest.strip_prefix(": "))
        .unwrap_or(why);
    io::Error::new(
        io::ErrorKind::ConnectionRefused,
        format!("cannot reach {host}: {why}"),
    )
}

impl Conn {
    /// Connects to `remote` (once; failing at once if that fails, with ssh's reason).
    pub fn open(remote: &Remote) -> io::Result<Arc<Conn>> {
        let conn = Arc::new(Conn {
            remote: remote.clone(),
            link: Mutex::new(Link::Down {
                next: Instant::now(),
                wait: FIRST_BACKOFF,
                error: String::new(),
                was_up: false,
                since: Instant::now(),
            }),
            made: AtomicU64::new(0),
            extensions: OnceLock::new(),
            stderr: Arc::new(Mutex::new(String::new())),
            orphans: Mutex::new(Vec::new()),
        });
        conn.session_now(FULL_CONNECT)?;
        Ok(conn)
    }

    /// The remote folder this connection serves.
    pub fn remote(&self) -> &Remote {
        &self.remote
    }

    /// What the server offers.
    pub fn extensions(&self) -> Extensions {
        self.extensions.get().copied().unwrap_or_default()
    }

    /// True if the connection is up, or down but still within its tries (so a request
    /// now would wait for it rather than fail at once).
    pub fn is_up(&self) -> bool {
        matches!(*lock(&self.link), Link::Up(_))
    }

    /// Connections made so far (more than 1: it was lost and made again).
    pub(super) fn is_current(&self, number: u64) -> bool {
        matches!(&*lock(&self.link), Link::Up(session) if session.number == number)
    }

    /// How many connections were made so far.
    pub fn connections(&self) -> u64 {
        self.made.load(Ordering::Relaxed)
    }

    /// The session, connecting if it is down and a try is due (given up after `limit`,
    /// ssh killed); else the last reason.
    fn session_now(&self, limit: Duration) -> io::Result<Arc<Session>> {
        let mut link = lock(&self.link);
        match &*link {
            Link::Up(session) => return Ok(session.clone()),
            Link::Down { next, error, .. } if Instant::now() < *next => {
                return Err(unreachable(&self.remote, error));
            }
            Link::Down { .. } => {}
        }
        let (wait, was_up, since) = match &*link {
            Link::Down {
                wait,
                was_up,
                since,
                ..
            } => (*wait, *was_up, *since),
            Link::Up(_) => (FIRST_BACKOFF, true, Instant::now()),
        };
        if was_up && wait == FIRST_BACKOFF {
            log::info!("connecting to {} again", self.remote.destination());
        }
        let made = block_on(async {
            tokio::time::timeout(limit, self.connect())
                .await
                .unwrap_or_else(|_| Err("the server did not answer in time".to_string()))
        })?;
        match made {
            Ok(session) => {
                let session = Arc::new(session);
                *link = Link::Up(session.clone());
                if was_up {
                    log::info!("connected to {} again", self.remote.destination());
                }
                Ok(session)
            }
            Err(error) => {
                *link = Link::Down {
                    next: Instant::now() + wait,
                    wait: (wait * 2).min(MAX_BACKOFF),
                    error: error.clone(),
                    was_up,
                    since,
                };
                Err(unreachable(&self.remote, &error))
            }
        }
    }

    /// The session, waiting (with backoff) for a lost connection to come back until
    /// the patience ([`set_patience`]) after it was lost; after that, failing at once.
    pub(super) fn session(&self) -> io::Result<Arc<Session>> {
        loop {
            // A try made while waiting takes no longer than the wait has left (a
            // watcher's few seconds: it must not stall the other pairs of its
            // process), but at least a couple of seconds, so a slow link can answer.
            let left = lock(&self.link).patience_left();
            match self.session_now(left.max(MIN_CONNECT)) {
                Ok(session) => {
                    let orphans = std::mem::take(&mut *lock(&self.orphans));
                    for path in orphans {
                        let _ = self.remove_file(&path);
                    }
                    return Ok(session);
                }
                Err(e) => {
                    let mut link = lock(&self.link);
                    let now = Instant::now();
                    let Link::Down { next, since, .. } = &mut *link else {
                        continue;
                    };
                    let deadline =
                        *since + Duration::from_millis(PATIENCE_MS.load(Ordering::Relaxed));
                    if now >= deadline || stopping() {
                        return Err(e);
                    }
                    // The backoff's next step may fall after the deadline: one last try
                    // is made at the deadline, so the whole patience is waited.
                    if *next > deadline {
                        *next = deadline;
                    }
                    let until = *next;
                    drop(link);
                    // In short steps: Ctrl-C ends the wait.
                    while Instant::now() < until && !stopping() {
                        let left = until.saturating_duration_since(Instant::now());
                        std::thread::sleep(left.min(Duration::from_millis(100)));
                    }
                }
            }
        }
    }

    /// Marks session `number` as lost (if it is still the current one).
    pub(super) fn lost(&self, number: u64, why: &str) {
        let mut link = lock(&self.link);
        if let Link::Up(session) = &*link
            && session.number == number
        {
            let said = lock(&self.stderr).clone();
            let error = if said.is_empty() {
                why.to_string()
            } else {
                format!("{why} ({said})")
            };
            log::warn!(
                "lost the connection to {}: {error}",
                self.remote.destination()
            );
            *link = Link::Down {
                next: Instant::now(),
                wait: FIRST_BACKOFF,
                error,
                was_up: true,
                since: Instant::now(),
            };
        }
    }

    /// Runs one request on the session: `retry` says whether it may be sent again on a
    /// new connection if the old one was lost on the way (true for what only reads).
    pub(super) fn run<T, F, Fut>(&self, retry: bool, what: F) -> io::Result<T>
    where
        F: Fn(Arc<Session>) -> Fut,
        Fut: Future<Output = Result<T, SftpError>>,
    {
        loop {
            let session = self.session()?;
            let number = session.number;
            let result =
                block_on(async { tokio::time::timeout(REQUEST_DEADLINE, what(session)).await })?;
            match result {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e)) => match status_error(&e) {
                    Some(e) => return Err(e),
                    None => {
                        self.lost(number, &e.to_string());
                        if !retry {
                            return Err(self.lost_error(&e.to_string()));
                        }
                    }
                },
                Err(_) => {
                    self.lost(number, "the server did not answer in time");
                    if !retry {
                        return Err(self.lost_error("the server did not answer in time"));
                    }
                }
            }
        }
    }

    /// The error of a request that died with its connection (the warning that marked
    /// it lost said why).
    pub(super) fn lost_error(&self, _why: &str) -> io::Error {
        io::Error::new(
            io::ErrorKind::ConnectionAborted,
            format!(
                "the connection to {} was lost; written again once it is back",
                self.remote.destination()
            ),
        )
    }

    /// A failed write as the user should read it. OpenSSH's server answers a write the
    /// disk refused (`ENOSPC`, `EDQUOT`) with a bare "Failure": where the server offers
    /// `statvfs@openssh.com`, the free space of the remote folder's disk says whether it
    /// is full, and then the error is a [`io::ErrorKind::StorageFull`] (the engine makes
    /// room by pruning versions and says the destination ran out of space). `need` is
    /// what the failed request wrote; other writers' temp files removed meanwhile may
    /// have freed a few MiB, so "full" allows for that. Other errors pass unchanged.
    pub(super) fn explain_write(&self, err: io::Error, need: usize) -> io::Error {
        const MARGIN: u64 = 4 << 20;
        if err.kind() != io::ErrorKind::Other {
            return err;
        }
        if !self.extensions().statvfs {
            return io::Error::other(format!("{err}; is the remote disk full?"));
        }
        let path = self.remote.remote_path(std::path::Path::new(""));
        let free = self.run(true, move |s| {
            let path = path.clone();
            async move { s.sftp.fs().statvfs(path).await }
        });
        match free {
            Ok(stat) => {
                let free = stat.bavail.saturating_mul(stat.frsize);
                if free < MARGIN.saturating_add(need as u64) {
                    io::Error::new(
                        io::ErrorKind::StorageFull,
                        format!(
                            "no space left on the remote disk ({} free; {err})",
                            crate::output::names::human_bytes(free)
                        ),
                    )
                } else {
                    io::Error::other(format!(
                        "{err} ({} free on the remote disk)",
                        crate::output::names::human_bytes(free)
                    ))
                }
            }
            Err(_) => err,
        }
    }

    /// `lstat` of a server path (the last component never followed); `None` if
    /// nothing is there. Sent again on a new connection if the old one was lost.
    pub(super) fn lstat(&self, path: &str) -> io::Result<Option<super::Stat>> {
        let path = path.to_string();
        let found = self.run(true, move |s| {
            let path = path.clone();
            async move { s.sftp.fs().symlink_metadata(path).await }
        });
        match found {
            Ok(meta) => Ok(Some(super::stat_of(&meta))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Removes the file (or symlink) at a server path; never sent twice.
    pub(super) fn remove_file(&self, path: &str) -> io::Result<()> {
        let path = path.to_string();
        self.run(false, move |s| {
            let path = path.clone();
            async move { s.sftp.fs().remove_file(path).await }
        })
    }

    /// Notes a temp file to remove once the connection is back.
    pub(super) fn orphan(&self, path: String) {
        lock(&self.orphans).push(path);
    }

    /// Maps a failed request: a status from the server as an `io::Error` of the right
    /// kind, or the connection marked lost.
    pub(super) fn check<T>(&self, number: u64, result: Result<T, SftpError>) -> io::Result<T> {
        result.map_err(|e| match status_error(&e) {
            Some(e) => e,
            None => {
                self.lost(number, &e.to_string());
                self.lost_error(&e.to_string())
            }
        })
    }

    /// Starts ssh and the SFTP session over it; `Err` is the reason in one line.
    async fn connect(&self) -> Result<Session, String> {
        let mut command = self.ssh_command()?;
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot run {:?}: {e}", self.program()))?;
        let (Some(stdin), Some(stdout), Some(mut stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err("ssh started without its pipes".to_string());
        };
        *lock(&self.stderr) = String::new();
        let said = self.stderr.clone();
        // ssh's messages: kept (the last line says why a connection failed or ended)
        // and logged at debug level.
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut line = Vec::new();
            while let Ok(n) = stderr.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                line.extend_from_slice(&buf[..n]);
                while let Some(end) = line.iter().position(|&b| b == b'\n') {
                    let text = String::from_utf8_lossy(&line[..end]).trim().to_string();
                    line.drain(..=end);
                    if !text.is_empty() {
                        log::debug!("ssh: {text}");
                        *lock(&said) = text;
                    }
                }
            }
        });
        // Every request goes out at once: the library's default holds requests up to
        // 0.5 ms (a tokio timer tick, so about 1 ms) to batch them, and a file takes
        // several requests one after the other, each waiting for the last one's answer.
        let options = SftpOptions::new().flush_interval(Duration::ZERO);
        let started = tokio::time::timeout(
            Duration::from_secs(u64::from(CONNECT_TIMEOUT) + 15),
            Sftp::new(stdin, stdout, options),
        )
        .await;
        let sftp = match started {
            Ok(Ok(sftp)) => sftp,
            failed => {
                let _ = child.start_kill();
                // ssh's own reason is on its stderr: give it a moment to arrive.
                let _ = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                let said = lock(&self.stderr).clone();
                return Err(match (said.is_empty(), failed) {
                    (false, _) => said,
                    (true, Ok(Err(e))) => format!("the SFTP session did not start: {e}"),
                    (true, _) => "the server did not answer in time".to_string(),
                });
            }
        };
        let extensions = Extensions {
            posix_rename: sftp.support_posix_rename(),
            hardlink: sftp.support_hardlink(),
            fsync: sftp.support_fsync(),
            statvfs: sftp.support_statvfs(),
        };
        let _ = self.extensions.set(extensions);
        let number = self.made.fetch_add(1, Ordering::Relaxed) + 1;
        Ok(Session {
            sftp,
            number,
            child: Mutex::new(Some(child)),
        })
    }

    /// The ssh program: the first word of the ssh command.
    fn program(&self) -> String {
        self.words()
            .ok()
            .and_then(|w| w.into_iter().next())
            .unwrap_or_else(|| "ssh".to_string())
    }

    fn words(&self) -> Result<Vec<String>, String> {
        match &self.remote.ssh_command {
            Some(command) => {
                let words = split_words(command)
                    .ok_or_else(|| format!("the ssh command {command:?} has an unclosed quote"))?;
                if words.is_empty() {
                    return Err("the ssh command is empty".to_string());
                }
                Ok(words)
            }
            None => Ok(vec!["ssh".to_string()]),
        }
    }

    /// `ssh [the user's options] [ours] -s -- [user@]host sftp`: the user's options come
    /// first, and ssh keeps the first value it gets for each.
    fn ssh_command(&self) -> Result<tokio::process::Command, String> {
        let words = self.words()?;
        let mut command = tokio::process::Command::new(&words[0]);
        command.args(&words[1..]);
        command.args([
            "-o".to_string(),
            format!("ServerAliveInterval={ALIVE_INTERVAL}"),
            "-o".to_string(),
            format!("ServerAliveCountMax={ALIVE_COUNT}"),
            "-o".to_string(),
            format!("ConnectTimeout={CONNECT_TIMEOUT}"),
            // One connection, no X11 or agent forwarding, no pty.
            "-x".to_string(),
            "-a".to_string(),
            "-T".to_string(),
        ]);
        if !io::stdin().is_terminal() {
            // No one to type a password or accept a host key: fail with ssh's reason.
            command.args(["-o", "BatchMode=yes"]);
        }
        if let Some(port) = self.remote.port {
            command.args(["-p", &port.to_string()]);
        }
        // Ctrl-C and SIGTERM reach the whole process group: ssh must outlive them, so
        // the files in flight are finished and the index published before datasafe
        // closes the connection itself. ssh keeps a signal ignored that it was started
        // with ignored, and still prompts on the terminal.
        // SAFETY: only `signal`, which is async-signal-safe, runs between fork and exec.
        unsafe {
            command.pre_exec(|| {
                for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
                    libc::signal(sig, libc::SIG_IGN);
                }
                Ok(())
            });
        }
        command
            .args(["-s", "--", &self.remote.destination(), "sftp"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        Ok(command)
    }
}

/// A server's answer as an `io::Error` of the kind the engine branches on, or `None` if
/// the error is the connection's (the session is gone).
fn status_error(e: &SftpError) -> Option<io::Error> {
    let (kind, message) = match e {
        SftpError::SftpError(kind, message) => (kind, message),
        SftpError::UnsupportedExtension(name) => {
            return Some(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("the server does not offer {name}"),
            ));
        }
        // A pipe to ssh that broke, or closed: the connection is gone.
        SftpError::IOError(io)
            if matches!(
                io.kind(),
                io::ErrorKind::BrokenPipe
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::UnexpectedEof
                    | io::ErrorKind::NotConnected
            ) =>
        {
            return None;
        }
        // A request this side refused (not the connection's fault).
        SftpError::IOError(io) => return Some(io::Error::new(io.kind(), io.to_string())),
        _ => return None,
    };
    // The server's own words ("Failure"), without the library's decoration.
    let message = message.get().0.to_string();
    let kind = match kind {
        SftpErrorKind::NoSuchFile => io::ErrorKind::NotFound,
        SftpErrorKind::PermDenied => io::ErrorKind::PermissionDenied,
        SftpErrorKind::OpUnsupported => io::ErrorKind::Unsupported,
        SftpErrorKind::BadMessage => io::ErrorKind::InvalidInput,
        _ => io::ErrorKind::Other,
    };
    // The server's words ("No such file", "Permission denied"), as the OS would say them.
    let text = match kind {
        io::ErrorKind::NotFound => "No such file or directory".to_string(),
        io::ErrorKind::PermissionDenied => "Permission denied".to_string(),
        _ if message.is_empty() => format!("the server refused ({kind:?})"),
        _ => format!("the server said \"{message}\""),
    };
    Some(io::Error::new(kind, text))
}

/// Splits a command line into words as a shell would for plain words and quotes (no
/// variables, no globbing); `None` if a quote is left open.
fn split_words(line: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '\'' => break,
                        c => word.push(c),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => word.push(chars.next()?),
                        c => word.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                word.push(chars.next()?);
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Some(words)
}

/// A mutex's guard, even if a panicking thread poisoned it (the state stays usable).
pub(super) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_commands_split_like_a_shell() {
        assert_eq!(
            split_words("ssh -F '/tmp/my dir/cfg' -o \"A=b c\" x\\ y").unwrap(),
            vec!["ssh", "-F", "/tmp/my dir/cfg", "-o", "A=b c", "x y"]
        );
        assert_eq!(split_words("  ssh  ").unwrap(), vec!["ssh"]);
        assert_eq!(split_words("ssh ''").unwrap(), vec!["ssh", ""]);
        assert!(split_words("ssh 'open").is_none());
    }
}
