//! A throwaway OpenSSH server on 127.0.0.1 for the SFTP tests ([`Sshd`]), and a TCP
//! proxy in front of it that can drop or silence its connections ([`Proxy`]).
//!
//! Each [`Sshd`] is Debian's real `/usr/sbin/sshd` (package `openssh-server`; `.ci/run`
//! installs it) with its own temp folder: a fresh ed25519 host key and user key,
//! `authorized_keys`, an `sshd_config` (`internal-sftp`, public keys only) and an
//! `ssh_config` for the client (the host key pinned in its own `known_hosts`, strict
//! checking, batch mode), so `ssh -F DIR/ssh_config` reaches it as the alias `dstest`
//! or as `USER@127.0.0.1:PORT`. The login account is the current user (root in
//! CI); the remote folder is on this machine, so a test compares trees directly. Tests
//! hand the client command to datasafe through `DATASAFE_SSH_COMMAND`
//! ([`Sshd::set_env`]), so every subcommand picks it up. Many tests run on parallel
//! threads of one process: each starts its own server on its own port.
//!
//! A size-limited remote folder is [`super::faults::Tmpfs`] (root only) mounted on a
//! folder of the test's `TestEnv`, not of the server's temp folder:
//! `let remote = env.dir.path().join("remote"); let _disk = Tmpfs::mount(&remote,
//! "1m"); let dst = sshd.url(&remote);` — the server writes there as the login user.
//!
//! Here the server's life (start, stop, kill, restart) and its files; the configs'
//! text is `config`, the process tree under the listener `tree`, the proxy `proxy`.
//! Deliberately not here: anything datasafe-specific (URLs are strings the tests pass
//! on), and a fallback when sshd is missing: the tests fail loudly, they never skip.

mod config;
mod proxy;
pub(crate) mod tree;

pub use proxy::Proxy;

use super::is_root;
use super::watcher::{DEADLINE, POLL, wait_until};
use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;
use tree::{children_of, end_tree, parents};

/// The server binary (Debian's `openssh-server`).
pub const SSHD: &str = "/usr/sbin/sshd";
/// The `ssh_config` alias for the server (`dstest:/abs/path`).
pub const ALIAS: &str = "dstest";
/// The `ssh_config` alias for a [`Proxy`] in front of it ([`Sshd::scp_form_via`]).
pub const PROXY_ALIAS: &str = "dsproxy";
/// The name the host key is known by in the client's `known_hosts`, whatever the
/// alias, address or port (the proxy's too).
const HOST_KEY_ALIAS: &str = "datasafe-test-sshd";
/// The variable datasafe reads its ssh command from (like rsync's `-e`).
pub const SSH_COMMAND_VAR: &str = "DATASAFE_SSH_COMMAND";

/// How a server differs from the default one.
#[derive(Clone, Debug, Default)]
pub struct SshdOptions {
    /// SFTP requests the server refuses, named as `/usr/lib/openssh/sftp-server -Q
    /// requests` prints them (`"hardlink"`, `"posix-rename"`, `"fsync"`, `"statvfs"`…);
    /// passed as `internal-sftp -P`. OpenSSH also leaves a refused extension out of what
    /// it advertises, so this is a server that lacks it (`sftp`'s `ln` says "Server does
    /// not support hardlink@openssh.com extension").
    pub deny: Vec<&'static str>,
    /// The account clients log in as; `None` is the current user. Another account (say
    /// `"nobody"`, for permission errors on the remote side) needs root.
    pub user: Option<&'static str>,
    /// Extra `sshd_config` lines (`"ClientAliveInterval 1"`), written before the
    /// harness's own: sshd keeps the first value it reads, so these override.
    pub extra_config: Vec<String>,
    /// Log each SFTP request at this level (`"VERBOSE"`: one line per request with
    /// its path) to [`Sshd::sftp_log`]. The subsystem is then the external
    /// `sftp-server -e -l LEVEL` with its stderr sent to a file (internal-sftp logs only
    /// to syslog). `None`: internal-sftp, errors only. Not an `extra_config`: a
    /// `Subsystem` line cannot be given twice.
    pub sftp_log_level: Option<&'static str>,
}

/// OpenSSH's external SFTP server (for [`SshdOptions::sftp_log_level`]).
pub const SFTP_SERVER: &str = "/usr/lib/openssh/sftp-server";

/// A running sshd on 127.0.0.1 with its keys and configs in a temp folder. Every
/// process it started (the listener and each connection's sshd) is SIGKILLed and the
/// folder removed on drop.
pub struct Sshd {
    dir: tempfile::TempDir,
    port: u16,
    user: String,
    state: Mutex<State>,
}

struct State {
    /// The listening sshd (`sshd -D`), when running.
    child: Option<Child>,
    /// The port the `dsproxy` alias points at, once a test asked for it.
    proxy_port: Option<u16>,
}

/// Why one start of sshd did not end with a server that takes logins.
enum StartFailure {
    /// Another process holds the port (sshd logged "Address already in use").
    PortTaken,
    /// Anything else, with what to print.
    Other(String),
}

impl Sshd {
    /// A server with the default options (every SFTP extension offered).
    pub fn start() -> Sshd {
        Sshd::start_with(SshdOptions::default())
    }

    /// A server with `options`, ready when this returns: its port accepted a connection
    /// and an `sftp` login through the client config worked (and its session ended).
    pub fn start_with(options: SshdOptions) -> Sshd {
        require_installed(Path::new(SSHD));
        if is_root() {
            // sshd running as root needs its privilege-separation folder; /run is a
            // tmpfs, so a fresh boot of a machine where .ci/run made it has none.
            let _ = fs::create_dir_all("/run/sshd");
        }
        let dir = tempfile::Builder::new()
            .prefix("datasafe-sshd-")
            .tempdir()
            .unwrap();
        let text = dir.path().to_string_lossy();
        assert!(
            !text.contains(char::is_whitespace) && !text.contains('"'),
            "the temp folder {text} holds a space or quote, which the ssh command cannot carry: set TMPDIR"
        );
        let me = current_user();
        let user = options.user.map_or_else(|| me.clone(), str::to_owned);
        if user != me {
            assert!(
                is_root(),
                "logging in as {user} needs root (the tests run as {me})"
            );
        }
        if is_root() {
            refuse_locked(&user);
        }
        let sshd = Sshd {
            port: 0,
            user,
            dir,
            state: Mutex::new(State {
                child: None,
                proxy_port: None,
            }),
        };
        keygen(&sshd.path("host_key"));
        keygen(&sshd.path("user_key"));
        fs::copy(sshd.path("user_key.pub"), sshd.path("authorized_keys")).unwrap();
        let host_key = fs::read_to_string(sshd.path("host_key.pub")).unwrap();
        fs::write(
            sshd.path("known_hosts"),
            format!("{HOST_KEY_ALIAS} {host_key}"),
        )
        .unwrap();
        if sshd.user != me {
            // sshd reads authorized_keys as the login user.
            fs::set_permissions(sshd.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
            fs::set_permissions(
                sshd.path("authorized_keys"),
                fs::Permissions::from_mode(0o644),
            )
            .unwrap();
        }
        sshd.start_on_a_free_port(&options)
    }

    fn start_on_a_free_port(mut self, options: &SshdOptions) -> Sshd {
        let mut last = String::new();
        for _ in 0..20 {
            self.port = pick_port();
            let text = config::server(self.dir.path(), self.port, options);
            fs::write(self.path("sshd_config"), text).unwrap();
            self.write_client_config(None);
            match self.spawn_and_wait() {
                Ok(child) => {
                    self.state().child = Some(child);
                    return self;
                }
                Err(StartFailure::PortTaken) => last = self.log(),
                Err(StartFailure::Other(why)) => panic!("{why}"),
            }
        }
        panic!("sshd found no free port in 20 tries; its log:\n{last}")
    }

    /// The port sshd listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The account clients log in as.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The server's temp folder (keys, configs, `sshd.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The client config (`dstest`, `dsproxy` and `127.0.0.1` with the user key).
    pub fn ssh_config(&self) -> PathBuf {
        self.path("ssh_config")
    }

    /// The ssh program with its options, as `--ssh-command` and `DATASAFE_SSH_COMMAND`
    /// take it: `ssh -F DIR/ssh_config`.
    pub fn ssh_command(&self) -> String {
        format!("ssh -F {}", self.ssh_config().display())
    }

    /// Points `cmd` at this server: sets `DATASAFE_SSH_COMMAND` to [`Sshd::ssh_command`].
    pub fn set_env<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        cmd.env(SSH_COMMAND_VAR, self.ssh_command())
    }

    /// `sftp://USER@127.0.0.1:PORT/abs/path` for `remote` (made absolute). The path is
    /// absolute as datasafe reads the URL; OpenSSH's own `sftp` client would take it
    /// relative to the home folder.
    pub fn url(&self, remote: &Path) -> String {
        url(&self.user, self.port, remote)
    }

    /// `dstest:/abs/path`, the scp/rsync form, for `remote` (made absolute).
    pub fn scp_form(&self, remote: &Path) -> String {
        format!("{ALIAS}:{}", absolute(remote).display())
    }

    /// Like [`Sshd::url`], through `proxy`.
    pub fn url_via(&self, proxy: &Proxy, remote: &Path) -> String {
        url(&self.user, proxy.port(), remote)
    }

    /// `dsproxy:/abs/path`, through `proxy`: the client config gains (or moves) the
    /// alias `dsproxy` to the proxy's port.
    pub fn scp_form_via(&self, proxy: &Proxy, remote: &Path) -> String {
        let mut state = self.state();
        if state.proxy_port != Some(proxy.port()) {
            state.proxy_port = Some(proxy.port());
            self.write_client_config(state.proxy_port);
        }
        format!("{PROXY_ALIAS}:{}", absolute(remote).display())
    }

    /// Empties the client's `known_hosts`: the next connections fail as with an unknown
    /// host key ("Host key verification failed."; the config never asks).
    pub fn forget_host_key(&self) {
        fs::write(self.path("known_hosts"), "").unwrap();
    }

    /// Empties `authorized_keys`: the next logins are refused ("Permission denied
    /// (publickey)").
    pub fn refuse_user_key(&self) {
        fs::write(self.path("authorized_keys"), "").unwrap();
    }

    /// What sshd logged so far (connections, logins, errors), for failure messages.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&fs::read(self.path("sshd.log")).unwrap_or_default()).into_owned()
    }

    /// What the SFTP server logged so far (with [`SshdOptions::sftp_log_level`]).
    pub fn sftp_log(&self) -> String {
        String::from_utf8_lossy(&fs::read(self.path("sftp.log")).unwrap_or_default()).into_owned()
    }

    /// True while the listening sshd runs.
    pub fn is_running(&self) -> bool {
        let mut state = self.state();
        match state.child.as_mut() {
            Some(child) => child.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    /// How many connections the server holds now (one sshd process each, children of
    /// the listener); 0 right after a start.
    pub fn sessions(&self) -> usize {
        let state = self.state();
        match &state.child {
            Some(child) => children_of(child.id(), &parents()).len(),
            None => 0,
        }
    }

    /// Runs `sftp -F CONFIG -b - HOST` (`HOST` being [`ALIAS`], [`PROXY_ALIAS`] or a
    /// URL) with `batch` on stdin, one command a line; the first failing command ends
    /// it with a non-zero exit (prefix a command with `-` to go on).
    pub fn sftp(&self, host: &str, batch: &str) -> Output {
        let mut child = self
            .sftp_cmd(&[host])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run sftp: {e}"));
        let mut stdin = child.stdin.take().unwrap();
        let batch = batch.to_owned();
        // Written from a thread, so a long batch and a long answer cannot block each
        // other; sftp may also fail before it reads it all.
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(batch.as_bytes());
        });
        let out = child.wait_with_output().unwrap();
        let _ = writer.join();
        out
    }

    /// `sftp -F CONFIG -b - ARGS...`, not yet run (stdin, stdout and stderr to set);
    /// `args` ends with the host, options (`-o ServerAliveInterval=1`) go before it.
    pub fn sftp_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("sftp");
        cmd.arg("-F")
            .arg(self.ssh_config())
            .args(["-b", "-"])
            .args(args);
        cmd
    }

    /// Stops the server gracefully: SIGTERM to the listener and to every connection's
    /// sshd (each closes its connection; clients see it end), then waits for them.
    /// Nothing happens if it is not running.
    pub fn stop(&self) {
        self.end(libc::SIGTERM);
    }

    /// Kills the server at once: SIGKILL to the listener and to every connection's sshd
    /// (a crash: the kernel closes their connections, and half-done work stays as it
    /// was). Returns when they are gone. A network gone silent is [`Proxy::blackhole`].
    pub fn kill_all(&self) {
        self.end(libc::SIGKILL);
    }

    /// Starts the server again (stopping it gracefully first if it runs) on the same
    /// port, keys and configs; returns when it takes logins again.
    pub fn restart(&self) {
        self.stop();
        let deadline = Instant::now() + DEADLINE;
        loop {
            match self.spawn_and_wait() {
                Ok(child) => {
                    self.state().child = Some(child);
                    return;
                }
                // Whoever took the port meanwhile may let it go; the clients know only
                // this port, so there is no other to move to.
                Err(StartFailure::PortTaken) if Instant::now() < deadline => {
                    std::thread::sleep(POLL)
                }
                Err(StartFailure::PortTaken) => panic!(
                    "sshd cannot listen on port {} again: another process holds it\n--- sshd log\n{}",
                    self.port,
                    self.log()
                ),
                Err(StartFailure::Other(why)) => panic!("{why}"),
            }
        }
    }

    /// Ends the listener and its tree with `sig`, if it runs.
    fn end(&self, sig: i32) {
        let child = self.state().child.take();
        if let Some(child) = child
            && let Err(stuck) = end_tree(child, sig)
        {
            panic!("{stuck}\n--- sshd log\n{}", self.log());
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock left nothing half-done in it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes the client config (atomically: an ssh starting meanwhile reads the old
    /// or the new file, never half of one).
    fn write_client_config(&self, proxy_port: Option<u16>) {
        let text = config::client(self.dir.path(), self.port, proxy_port, &self.user);
        let tmp = self.path("ssh_config.new");
        fs::write(&tmp, text).unwrap();
        fs::rename(&tmp, self.ssh_config()).unwrap();
    }

    /// Starts `sshd -D` and waits until its port accepts and an sftp login works.
    fn spawn_and_wait(&self) -> Result<Child, StartFailure> {
        let log_before = self.log().len();
        let mut child = Command::new(SSHD)
            .arg("-D")
            .arg("-f")
            .arg(self.path("sshd_config"))
            .arg("-E")
            .arg(self.path("sshd.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| StartFailure::Other(format!("cannot start {SSHD}: {e}")))?;
        let deadline = Instant::now() + DEADLINE;
        let mut last_try = String::new();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let log = self.log();
                let this_run = log.get(log_before..).unwrap_or(&log);
                if this_run.contains("Address already in use") {
                    return Err(StartFailure::PortTaken);
                }
                return Err(StartFailure::Other(format!(
                    "sshd exited ({status}) before it took a login\n--- sshd log\n{log}"
                )));
            }
            // sshd writes its pid file once it listens (a leftover of a killed run
            // holds another pid); probing the port instead would leave a line of noise
            // per probe in the log.
            let pid_file = fs::read_to_string(self.path("sshd.pid")).unwrap_or_default();
            if pid_file.trim() == child.id().to_string() {
                match self.try_login(deadline) {
                    Ok(()) => {
                        // The check's own session ends on the server a moment after
                        // sftp exits; wait for it so `sessions()` starts at 0.
                        wait_until(DEADLINE, || children_of(child.id(), &parents()).is_empty());
                        return Ok(child);
                    }
                    Err(why) => last_try = why,
                }
            }
            if Instant::now() >= deadline {
                let _ = end_tree(child, libc::SIGKILL);
                return Err(StartFailure::Other(format!(
                    "sshd on port {} took no login within {DEADLINE:?}; last sftp try: {last_try}\n--- sshd log\n{}",
                    self.port,
                    self.log()
                )));
            }
            std::thread::sleep(POLL);
        }
    }

    /// One `sftp` login with an empty batch, killed at `deadline`.
    fn try_login(&self, deadline: Instant) -> Result<(), String> {
        let err = self.path("login.stderr");
        let mut child = self
            .sftp_cmd(&[ALIAS])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&err).unwrap())
            .spawn()
            .map_err(|e| format!("cannot run sftp: {e}"))?;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err("sftp hung".into());
            }
            std::thread::sleep(POLL);
        };
        if status.success() {
            Ok(())
        } else {
            Err(format!(
                "{status}: {}",
                fs::read_to_string(&err).unwrap_or_default().trim()
            ))
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let child = self.state().child.take();
        if let Some(child) = child {
            // No panic here: the drop may run while a failed test unwinds.
            if let Err(stuck) = end_tree(child, libc::SIGKILL) {
                eprintln!("{stuck}");
            }
        }
    }
}

/// Panics, in one line, if the sshd binary is missing: the SFTP tests must fail in CI,
/// never skip.
pub fn require_installed(sshd: &Path) {
    if !sshd.exists() {
        panic!(
            "{} is missing: install openssh-server (`apt-get install openssh-server`; .ci/run does)",
            sshd.display()
        );
    }
}

fn url(user: &str, port: u16, remote: &Path) -> String {
    format!(
        "sftp://{user}@127.0.0.1:{port}{}",
        absolute(remote).display()
    )
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap()
}

/// The current user's name (sshd logs in by name, so the uid must have one).
fn current_user() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    let name = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        out.status.success() && !name.is_empty(),
        "uid {} has no name (no /etc/passwd entry), so sshd cannot log it in: {}",
        unsafe { libc::geteuid() },
        String::from_utf8_lossy(&out.stderr).trim()
    );
    name
}

/// Panics, saying what to do, if sshd running as root would refuse `user` as locked:
/// without PAM it turns away an account whose password in /etc/shadow starts with `!`
/// (as `useradd` leaves it, and some systems leave root), keys or not. A non-root sshd
/// cannot read /etc/shadow and does not check.
fn refuse_locked(user: &str) {
    let shadow = fs::read_to_string("/etc/shadow").unwrap_or_default();
    let locked = shadow.lines().any(|line| {
        let mut fields = line.split(':');
        fields.next() == Some(user) && fields.next().is_some_and(|pw| pw.starts_with('!'))
    });
    assert!(
        !locked,
        "sshd would refuse {user}: its password is locked ('!' in /etc/shadow); give it `usermod -p '*' {user}` (no password, not locked) or run the tests as another user"
    );
}

fn keygen(path: &Path) {
    let out = Command::new("ssh-keygen")
        .args(["-t", "ed25519", "-N", "", "-q", "-C", "datasafe-test", "-f"])
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run ssh-keygen (openssh-client): {e}"));
    assert!(
        out.status.success(),
        "ssh-keygen {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A port for sshd: free now, and below the kernel's ephemeral range, so no `bind(0)` or
/// outgoing connection of another test is handed it while the server is down between a
/// kill and a restart. Two servers picking the same one is caught by the start (sshd
/// says "Address already in use") and retried.
fn pick_port() -> u16 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let low = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let (from, to) = (10_000u32, low.min(65_536));
    if to <= from + 1_000 {
        // No room below the ephemeral range: take one the kernel finds free.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        return listener.local_addr().unwrap().port();
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut rng = super::faults::Rng(
        nanos ^ (u64::from(std::process::id()) << 32) ^ COUNTER.fetch_add(1, Ordering::Relaxed),
    );
    for _ in 0..1_000 {
        let port = rng.range(u64::from(from), u64::from(to)) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1 in {from}..{to} after 1000 tries")
}
