//! Tests of the SFTP test harness itself (`common::sshd`): a real sshd on 127.0.0.1,
//! driven with OpenSSH's own `sftp` and `ssh` clients, so a failure here is the harness's
//! and not datasafe's. Kills, restarts, a cut or silent proxy, a denied extension, a
//! full remote disk and a second login account each do what the SFTP tests rely on.

use crate::common::faults::{Tmpfs, chmod, reachable_by_others};
use crate::common::sshd::{ALIAS, PROXY_ALIAS, Proxy, SSH_COMMAND_VAR, Sshd, SshdOptions};
use crate::common::watcher::{DEADLINE, holds_for, wait_until};
use crate::common::{TestEnv, is_root, stderr, stdout};
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

/// A command the server must answer (sftp's `pwd` answers from the client's memory),
/// and a piece of the answer that the echoed command line does not hold.
const ASK: &str = "ls -l /dev/null";
const ANSWER: &str = "crw-";

/// An `sftp -b -` kept open: commands go in one at a time, its stdout comes back line
/// by line. (sftp reads its next command before it looks at the connection, so a dead
/// connection shows when the next command is sent.)
struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    seen: String,
    err: PathBuf,
}

impl Session {
    fn open(sshd: &Sshd, args: &[&str], err: PathBuf) -> Session {
        let mut child = sshd
            .sftp_cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(fs::File::create(&err).unwrap())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Session {
            child,
            stdin,
            lines,
            seen: String::new(),
            err,
        }
    }

    /// Sends one command; false if sftp no longer reads them.
    fn send(&mut self, command: &str) -> bool {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(format!("{command}\n").as_bytes()).is_ok() && stdin.flush().is_ok()
    }

    /// Waits up to `limit` for an output line containing `needle`.
    fn saw(&mut self, needle: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push_str(&line);
                    self.seen.push('\n');
                    if line.contains(needle) {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
    }

    /// Sends `command` and fails the test unless a line with `needle` comes back.
    fn run(&mut self, command: &str, needle: &str) {
        assert!(
            self.send(command),
            "sftp stopped reading commands{}",
            self.context()
        );
        assert!(
            self.saw(needle, DEADLINE),
            "no {needle:?} after {command:?}{}",
            self.context()
        );
    }

    /// Sends [`ASK`] and waits for sftp to exit, failing after `limit`.
    fn poke_until_exit(&mut self, limit: Duration) -> ExitStatus {
        let _ = self.send(ASK);
        let mut status = None;
        let exited = wait_until(limit, || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        assert!(exited, "sftp still runs after {limit:?}{}", self.context());
        status.unwrap()
    }

    fn context(&self) -> String {
        format!(
            "\n--- sftp stdout\n{}--- sftp stderr\n{}",
            self.seen,
            fs::read_to_string(&self.err).unwrap_or_default()
        )
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn remote_dir(env: &TestEnv) -> PathBuf {
    let remote = env.dir.path().join("remote");
    fs::create_dir_all(&remote).unwrap();
    remote
}

fn assert_ok(out: &Output, sshd: &Sshd) {
    assert!(
        out.status.success(),
        "sftp failed ({})\n--- stdout\n{}--- stderr\n{}--- sshd log\n{}",
        out.status,
        stdout(out),
        stderr(out),
        sshd.log()
    );
}

fn put(local: &Path, remote: &Path) -> String {
    format!("put {} {}\n", local.display(), remote.display())
}

#[test]
fn put_lands_in_the_remote_folder_by_alias_and_by_url() {
    let env = TestEnv::new();
    let remote = remote_dir(&env);
    let started = Instant::now();
    let sshd = Sshd::start();
    eprintln!(
        "sshd ready in {:?} ({})",
        started.elapsed(),
        sshd.dir().display()
    );
    assert_eq!(
        sshd.sessions(),
        0,
        "the start's own login session was still open"
    );
    let local = env.write("a.txt", "hello over sftp");

    let out = sshd.sftp(ALIAS, &put(&local, &remote.join("a.txt")));
    assert_ok(&out, &sshd);
    assert_eq!(fs::read(remote.join("a.txt")).unwrap(), b"hello over sftp");

    let url = sshd.url(&remote);
    let host = format!("sftp://{}@127.0.0.1:{}", sshd.user(), sshd.port());
    assert_eq!(url, format!("{host}{}", remote.display()));
    assert_eq!(
        sshd.scp_form(&remote),
        format!("{ALIAS}:{}", remote.display())
    );
    // The URL's user, host and port reach the same server through the `127.0.0.1`
    // block of the client config. (The path stays out: OpenSSH's sftp reads a URL's
    // path relative to the home folder, datasafe reads it as absolute.)
    let out = sshd.sftp(&host, &put(&local, &remote.join("b.txt")));
    assert_ok(&out, &sshd);
    assert_eq!(fs::read(remote.join("b.txt")).unwrap(), b"hello over sftp");

    // The ssh command as datasafe gets it, split on spaces as rsync's -e is.
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        &format!("exec ${SSH_COMMAND_VAR} {ALIAS} echo from-the-server"),
    ]);
    let out = sshd.set_env(&mut cmd).output().unwrap();
    assert_ok(&out, &sshd);
    assert_eq!(stdout(&out).trim(), "from-the-server");
}

#[test]
fn ln_makes_a_hard_link_when_the_server_offers_it() {
    let env = TestEnv::new();
    let remote = remote_dir(&env);
    let sshd = Sshd::start();
    let local = env.write("a.txt", "linked");
    let batch = format!(
        "{}ln {r}/a.txt {r}/b.txt\n",
        put(&local, &remote.join("a.txt")),
        r = remote.display()
    );
    let out = sshd.sftp(ALIAS, &batch);
    assert_ok(&out, &sshd);
    use std::os::unix::fs::MetadataExt;
    assert_eq!(fs::metadata(remote.join("b.txt")).unwrap().nlink(), 2);
}

#[test]
fn ln_and_rename_over_a_file_fail_when_hardlink_and_posix_rename_are_denied() {
    let env = TestEnv::new();
    let remote = remote_dir(&env);
    let sshd = Sshd::start_with(SshdOptions {
        deny: vec!["hardlink", "posix-rename"],
        ..Default::default()
    });
    let local = env.write("a.txt", "not linked");
    let r = remote.display();
    let setup = format!(
        "{}{}",
        put(&local, &remote.join("a.txt")),
        put(&local, &remote.join("c.txt"))
    );
    assert_ok(&sshd.sftp(ALIAS, &setup), &sshd);

    let out = sshd.sftp(ALIAS, &format!("ln {r}/a.txt {r}/b.txt\n"));
    assert!(!out.status.success(), "ln worked with hardlink denied");
    assert!(
        stderr(&out).contains("does not support hardlink@openssh.com"),
        "{}",
        stderr(&out)
    );
    assert!(!remote.join("b.txt").exists());
    // Without posix-rename, sftp falls back to the plain SFTP rename, which does not
    // replace an existing name.
    let out = sshd.sftp(ALIAS, &format!("rename {r}/a.txt {r}/c.txt\n"));
    assert!(
        !out.status.success(),
        "rename replaced c.txt with posix-rename denied"
    );
    assert!(remote.join("a.txt").exists());
}

#[test]
fn kill_all_ends_a_live_session_and_restart_takes_logins_again() {
    let env = TestEnv::new();
    let remote = remote_dir(&env);
    let sshd = Sshd::start();
    let port = sshd.port();
    let mut session = Session::open(&sshd, &[ALIAS], env.dir.path().join("sftp.err"));
    session.run(ASK, ANSWER);
    assert_eq!(sshd.sessions(), 1);

    sshd.kill_all();
    assert!(!sshd.is_running());
    let status = session.poke_until_exit(DEADLINE);
    assert!(
        !status.success(),
        "sftp exited 0 after the server was killed"
    );
    let out = sshd.sftp(ALIAS, "pwd\n");
    assert!(!out.status.success(), "a login worked with sshd killed");

    sshd.restart();
    assert_eq!(sshd.port(), port);
    assert!(sshd.is_running());
    let local = env.write("a.txt", "after the restart");
    assert_ok(
        &sshd.sftp(ALIAS, &put(&local, &remote.join("a.txt"))),
        &sshd,
    );
    assert_eq!(
        fs::read(remote.join("a.txt")).unwrap(),
        b"after the restart"
    );
}

#[test]
fn stop_ends_a_live_session_and_restart_takes_logins_again() {
    let env = TestEnv::new();
    let sshd = Sshd::start();
    let mut session = Session::open(&sshd, &[ALIAS], env.dir.path().join("sftp.err"));
    session.run(ASK, ANSWER);

    sshd.stop();
    assert!(!sshd.is_running());
    assert_eq!(sshd.sessions(), 0);
    let status = session.poke_until_exit(DEADLINE);
    assert!(!status.success(), "sftp exited 0 after the server stopped");

    sshd.restart();
    assert_ok(&sshd.sftp(ALIAS, "pwd\n"), &sshd);
    // A restart of a running server stops it first.
    sshd.restart();
    assert_ok(&sshd.sftp(ALIAS, "pwd\n"), &sshd);
}

#[test]
fn proxy_cut_ends_a_live_session_and_later_ones_pass() {
    let env = TestEnv::new();
    let remote = remote_dir(&env);
    let sshd = Sshd::start();
    let proxy = Proxy::start(sshd.port());
    assert_eq!(
        sshd.scp_form_via(&proxy, &remote),
        format!("{PROXY_ALIAS}:{}", remote.display())
    );
    let mut session = Session::open(&sshd, &[PROXY_ALIAS], env.dir.path().join("sftp.err"));
    session.run(ASK, ANSWER);
    assert_eq!((proxy.connections(), proxy.accepted()), (1, 1));

    proxy.cut();
    assert!(
        wait_until(DEADLINE, || proxy.connections() == 0),
        "the proxy still holds {} connections after the cut",
        proxy.connections()
    );
    let status = session.poke_until_exit(DEADLINE);
    assert!(!status.success(), "sftp exited 0 after the cut");
    assert!(sshd.is_running(), "the cut reached the server");

    // New connections pass again, by the alias and by the URL's host and port.
    let local = env.write("a.txt", "through the proxy");
    assert_ok(
        &sshd.sftp(PROXY_ALIAS, &put(&local, &remote.join("a.txt"))),
        &sshd,
    );
    let url = sshd.url_via(&proxy, &remote);
    let host = url.strip_suffix(&*remote.to_string_lossy()).unwrap();
    assert_eq!(
        host,
        format!("sftp://{}@127.0.0.1:{}", sshd.user(), proxy.port())
    );
    assert_ok(&sshd.sftp(host, &put(&local, &remote.join("b.txt"))), &sshd);
    assert_eq!(proxy.accepted(), 3);
    assert!(remote.join("a.txt").exists() && remote.join("b.txt").exists());
}

#[test]
fn proxy_blackhole_holds_bytes_until_lifted_and_keepalives_give_up() {
    let env = TestEnv::new();
    let remote = remote_dir(&env);
    let sshd = Sshd::start();
    let proxy = Proxy::start(sshd.port());
    sshd.scp_form_via(&proxy, &remote);

    // Silent: a command gets no answer; lifted: the answer comes, nothing was lost.
    let mut session = Session::open(&sshd, &[PROXY_ALIAS], env.dir.path().join("sftp.err"));
    session.run(ASK, ANSWER);
    proxy.blackhole(true);
    assert!(session.send(ASK));
    let mut answered = false;
    assert!(
        holds_for(Duration::from_millis(500), || {
            answered = answered || session.saw(ANSWER, Duration::ZERO);
            !answered
        }),
        "an answer passed the blackhole{}",
        session.context()
    );
    proxy.blackhole(false);
    assert!(
        session.saw(ANSWER, DEADLINE),
        "no answer after the blackhole was lifted{}",
        session.context()
    );
    session.run(ASK, ANSWER);
    assert_eq!(proxy.connections(), 1);

    // A client with keep-alives gives up on a silent network by itself.
    let mut ssh = Command::new("ssh")
        .arg("-F")
        .arg(sshd.ssh_config())
        .args(["-o", "ServerAliveInterval=1", "-o", "ServerAliveCountMax=2"])
        .args([PROXY_ALIAS, "-s", "sftp"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // SSH_FXP_INIT (version 3); the SSH_FXP_VERSION answer shows the session is up.
    let mut stdin = ssh.stdin.take().unwrap();
    stdin.write_all(&[0, 0, 0, 5, 1, 0, 0, 0, 3]).unwrap();
    let mut head = [0u8; 5];
    ssh.stdout.as_mut().unwrap().read_exact(&mut head).unwrap();
    assert_eq!(head[4], 2, "not an SSH_FXP_VERSION: {head:?}");
    proxy.blackhole(true);
    let started = Instant::now();
    let mut status = None;
    let gave_up = wait_until(DEADLINE, || {
        status = ssh.try_wait().unwrap();
        status.is_some()
    });
    if !gave_up {
        let _ = ssh.kill();
    }
    let mut err = String::new();
    ssh.stderr
        .as_mut()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        gave_up,
        "ssh still waits on a silent network after {DEADLINE:?}"
    );
    assert!(!status.unwrap().success());
    assert!(err.contains("Timeout"), "ssh's stderr: {err}");
    eprintln!("ssh gave up after {:?}: {}", started.elapsed(), err.trim());
    drop(stdin);
}

#[test]
fn two_servers_run_side_by_side() {
    let env = TestEnv::new();
    let local = env.write("a.txt", "two servers");
    let servers: Vec<(Sshd, PathBuf)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..2)
            .map(|i| {
                let (env, local) = (&env, &local);
                scope.spawn(move || {
                    let remote = env.dir.path().join(format!("remote{i}"));
                    fs::create_dir(&remote).unwrap();
                    let sshd = Sshd::start();
                    assert_ok(&sshd.sftp(ALIAS, &put(local, &remote.join("a.txt"))), &sshd);
                    (sshd, remote)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let (a, b) = (&servers[0].0, &servers[1].0);
    assert_ne!(a.port(), b.port());
    for (sshd, remote) in &servers {
        assert_eq!(fs::read(remote.join("a.txt")).unwrap(), b"two servers");
        assert_eq!(
            sshd.log().matches("Accepted publickey").count(),
            2,
            "{}",
            sshd.log()
        );
    }
    // Killing one leaves the other serving.
    a.kill_all();
    assert_ok(&b.sftp(ALIAS, "pwd\n"), b);
}

#[test]
fn a_full_tmpfs_as_the_remote_folder_refuses_a_put() {
    if !is_root() {
        eprintln!("skipping a_full_tmpfs_as_the_remote_folder_refuses_a_put: needs root (mount)");
        return;
    }
    let env = TestEnv::new();
    let remote = env.dir.path().join("remote");
    let _disk = Tmpfs::mount(&remote, "256k");
    let sshd = Sshd::start();
    let small = env.write("small", vec![1u8; 16 * 1024]);
    let big = env.write("big", vec![2u8; 1024 * 1024]);
    assert_ok(
        &sshd.sftp(ALIAS, &put(&small, &remote.join("small"))),
        &sshd,
    );
    let out = sshd.sftp(ALIAS, &put(&big, &remote.join("big")));
    assert!(!out.status.success(), "a 1 MiB put fit a 256 KiB tmpfs");
    eprintln!("sftp on a full disk: {}", stderr(&out).trim());
}

#[test]
fn a_second_account_gets_permission_errors_in_roots_folders() {
    if !is_root() {
        eprintln!("skipping a_second_account_gets_permission_errors_in_roots_folders: needs root");
        return;
    }
    let env = TestEnv::new();
    chmod(env.dir.path(), 0o755);
    if !reachable_by_others(env.dir.path()) {
        eprintln!(
            "skipping: nobody cannot reach {} (set TMPDIR)",
            env.dir.path().display()
        );
        return;
    }
    let locked = remote_dir(&env);
    let open = env.dir.path().join("open");
    fs::create_dir(&open).unwrap();
    std::os::unix::fs::chown(&open, Some(65534), Some(65534)).unwrap();
    let sshd = Sshd::start_with(SshdOptions {
        user: Some("nobody"),
        ..Default::default()
    });
    assert_eq!(sshd.user(), "nobody");
    assert!(sshd.url(&open).starts_with("sftp://nobody@127.0.0.1:"));
    let local = env.write("a.txt", "as nobody");
    assert_ok(&sshd.sftp(ALIAS, &put(&local, &open.join("a.txt"))), &sshd);
    let out = sshd.sftp(ALIAS, &put(&local, &locked.join("a.txt")));
    assert!(!out.status.success(), "nobody wrote into root's folder");
    assert!(
        stderr(&out).contains("Permission denied"),
        "{}",
        stderr(&out)
    );
}

#[test]
#[should_panic(expected = "install openssh-server")]
fn a_missing_sshd_fails_the_test_loudly() {
    crate::common::sshd::require_installed(Path::new("/nonexistent/sbin/sshd"));
}

#[test]
fn an_unknown_host_key_and_a_refused_user_key_each_fail_the_login() {
    let sshd = Sshd::start();
    let quiet = sshd.sftp(ALIAS, "pwd\n");
    assert_ok(&quiet, &sshd);
    assert_eq!(
        stderr(&quiet),
        "",
        "a good login printed something on stderr"
    );

    sshd.forget_host_key();
    let out = sshd.sftp(ALIAS, "pwd\n");
    assert!(
        !out.status.success(),
        "a login worked with the host key unknown"
    );
    assert!(
        stderr(&out).contains("Host key verification failed"),
        "{}",
        stderr(&out)
    );

    let sshd = Sshd::start();
    sshd.refuse_user_key();
    let out = sshd.sftp(ALIAS, "pwd\n");
    assert!(
        !out.status.success(),
        "a login worked with the user key refused"
    );
    assert!(
        stderr(&out).contains("Permission denied (publickey)"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn drop_kills_the_server_and_its_sessions_and_removes_its_folder() {
    let env = TestEnv::new();
    let sshd = Sshd::start();
    let (port, dir) = (sshd.port(), sshd.dir().to_path_buf());
    let mut session = Session::open(&sshd, &[ALIAS], env.dir.path().join("sftp.err"));
    session.run(ASK, ANSWER);
    drop(sshd);
    let status = session.poke_until_exit(DEADLINE);
    assert!(!status.success(), "the session outlived its server");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    assert!(!dir.exists(), "{} is left behind", dir.display());
}
