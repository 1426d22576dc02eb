//! The read side on a mirror on another machine (issue 13): `verify`, `restore`,
//! `versions` and `archive` take `sftp://…` and `host:path` as they take a local DST,
//! through a real OpenSSH server on 127.0.0.1 (`common::sshd`). Each run gets its own
//! `XDG_STATE_HOME` (where a remote mirror's index is cached), so a second, empty one
//! is "another machine" that has only the URL and the index the mirror holds
//! (`DST/.datasafe/index.db`). Also: `verify --config` with a remote dest and the
//! config's `ssh_command`, `--repair` (verify's and sync's) of a remote mirror, and a
//! host that cannot be reached (one line, exit 2, at once).

use crate::common::faults::noise;
use crate::common::sshd::{SSH_COMMAND_VAR, Sshd};
use crate::common::{TestEnv, assert_code, set_mtime, stderr, stdout};
use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

/// How a test reaches the server: through `DATASAFE_SSH_COMMAND`, or `--ssh-command`
/// on every command (the variable then unset).
#[derive(Clone, Copy, PartialEq)]
enum Via {
    Env,
    Flag,
}

/// One machine: its own state folder, the server, and how it names the ssh command.
struct Machine<'a> {
    env: &'a TestEnv,
    sshd: &'a Sshd,
    state: PathBuf,
    via: Via,
}

impl Machine<'_> {
    /// Runs `datasafe ARGS` (the subcommand first) as this machine.
    fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        let mut args: Vec<OsString> = args.iter().map(|a| a.as_ref().to_owned()).collect();
        if self.via == Via::Flag {
            let flag = format!("--ssh-command={}", self.sshd.ssh_command());
            args.insert(1, flag.into());
        }
        let mut cmd = self.env.cmd(args);
        cmd.env("XDG_STATE_HOME", &self.state)
            .env_remove(SSH_COMMAND_VAR);
        if self.via == Via::Env {
            self.sshd.set_env(&mut cmd);
        }
        cmd.output().unwrap()
    }

    fn ok<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        let out = self.run(args);
        assert_code(&out, 0);
        out
    }
}

/// A machine with an empty state folder of its own.
fn machine<'a>(env: &'a TestEnv, sshd: &'a Sshd, name: &str, via: Via) -> Machine<'a> {
    let state = env.dir.path().join(format!("state-{name}"));
    fs::create_dir_all(&state).unwrap();
    Machine {
        env,
        sshd,
        state,
        via,
    }
}

/// The sample tree: files in folders, a bigger file (many reads), a symlink, an empty
/// folder; whole-second mtimes (SFTP keeps no more).
fn sample_tree(env: &TestEnv) {
    env.write("a.txt", "alpha");
    env.write("docs/b.txt", "bravo");
    env.write("docs/deep/c.bin", noise(3, 300_000));
    fs::set_permissions(
        env.src.join("docs/b.txt"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::os::unix::fs::symlink("docs/b.txt", env.src.join("link")).unwrap();
    fs::create_dir(env.src.join("empty")).unwrap();
    for (i, rel) in ["a.txt", "docs/b.txt", "docs/deep/c.bin"]
        .iter()
        .enumerate()
    {
        set_mtime(&env.src.join(rel), 1_700_000_000 + i as i64 * 1000, 0);
    }
}

/// What a tree holds, for comparing trees whose folders and links have other mtimes:
/// files (content, mode, mtime in seconds), links (target), folders.
fn tree(root: &Path) -> BTreeMap<PathBuf, String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = BTreeMap::new();
    for entry in walkdir::WalkDir::new(root).min_depth(1) {
        let entry = entry.unwrap();
        let rel = entry.path().strip_prefix(root).unwrap().to_path_buf();
        if rel.starts_with(".datasafe") {
            continue;
        }
        let meta = entry.path().symlink_metadata().unwrap();
        let what = if meta.file_type().is_symlink() {
            format!("link {}", fs::read_link(entry.path()).unwrap().display())
        } else if meta.is_dir() {
            "folder".to_string()
        } else {
            let content = fs::read(entry.path()).unwrap();
            format!(
                "file {:x} {} bytes mode {:o} mtime {}",
                content
                    .iter()
                    .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(*b))),
                content.len(),
                meta.mode() & 0o7777,
                meta.mtime()
            )
        };
        out.insert(rel, what);
    }
    out
}

/// Waits until the wall clock is past the second `then` fell in.
fn next_second(then: chrono::DateTime<chrono::Local>) {
    while chrono::Local::now().timestamp() <= then.timestamp() {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Syncs the sample tree to `dst`, then edits a second later: `a.txt` rewritten (a
/// version of "alpha" is kept) and `docs/b.txt` appended to (a prefix marker is kept:
/// the old content is the start of the new). Returns the `--at` text of a moment
/// between the two.
fn mirror_with_history(m: &Machine, dst: &str, extra: &[&str]) -> String {
    let sync = |m: &Machine| {
        let mut args: Vec<OsString> = vec!["sync".into(), m.env.src.clone().into(), dst.into()];
        args.extend(extra.iter().map(OsString::from));
        m.ok(&args);
    };
    sample_tree(m.env);
    sync(m);
    let then = chrono::Local::now();
    next_second(then);
    let at = then.format("%Y-%m-%d %H:%M:%S").to_string();
    next_second(chrono::Local::now());
    m.env.write("a.txt", "ALPHA, edited");
    m.env.write("docs/b.txt", "bravo, and more");
    sync(m);
    at
}

/// Unpacks a `.tar.zst` into `into`.
fn untar_zst(archive: &Path, into: &Path) {
    let file = fs::File::open(archive).unwrap();
    let decoder = zstd::Decoder::new(file).unwrap();
    let mut tar = tar::Archive::new(decoder);
    tar.set_preserve_permissions(true);
    tar.set_preserve_mtime(true);
    tar.unpack(into).unwrap();
}

/// Every read command on the mirror at `dst`, as machine `m` sees it: versions, verify
/// (plain and with the source), restore (now and `--at`), archive. `tag` keeps each
/// call's TARGET and OUT apart.
fn reads_back(m: &Machine, dst: &str, at: &str, tag: &str) {
    let env = m.env;
    let dir = env.dir.path();

    let out = m.ok(&["versions", dst]);
    let listed = stdout(&out);
    assert!(
        listed.contains("a.txt") && listed.lines().count() == 1,
        "versions of {dst}:\n{listed}"
    );

    let out = m.ok(&["verify", dst]);
    let said = stdout(&out);
    assert!(
        said.contains("verify downloads every file from")
            && said.matches("downloads every file").count() == 1,
        "verify of a remote mirror says once that it downloads:\n{said}"
    );
    assert!(said.contains("Damaged: 0, Missing: 0"), "{said}");

    let src: &OsStr = env.src.as_os_str();
    m.ok(&[OsStr::new("verify"), "--source".as_ref(), src, dst.as_ref()]);

    let target = dir.join(format!("restored-{tag}"));
    m.ok(&[OsStr::new("restore"), dst.as_ref(), target.as_os_str()]);
    assert_eq!(tree(&target), tree(&env.src), "restore of {dst}");

    let earlier = dir.join(format!("earlier-{tag}"));
    m.ok(&[
        OsStr::new("restore"),
        "--at".as_ref(),
        at.as_ref(),
        dst.as_ref(),
        earlier.as_os_str(),
        "a.txt".as_ref(),
        "docs".as_ref(),
    ]);
    assert_eq!(fs::read(earlier.join("a.txt")).unwrap(), b"alpha");
    assert_eq!(fs::read(earlier.join("docs/b.txt")).unwrap(), b"bravo");

    let archive = dir.join(format!("out-{tag}.tar.zst"));
    let out = m.ok(&[OsStr::new("archive"), dst.as_ref(), archive.as_os_str()]);
    assert!(
        stdout(&out).contains("Backup completed"),
        "{}",
        stdout(&out)
    );
    let unpacked = dir.join(format!("unpacked-{tag}"));
    untar_zst(&archive, &unpacked);
    let files = |t: BTreeMap<PathBuf, String>| {
        t.into_iter()
            .filter(|(_, what)| what.starts_with("file") || what.starts_with("link"))
            .collect::<BTreeMap<_, _>>()
    };
    assert_eq!(
        files(tree(&unpacked)),
        files(tree(&env.src)),
        "archive of {dst}"
    );
}

/// Flips the first byte of a file on the server's disk, keeping its size.
fn corrupt(path: &Path) {
    let mut bytes = fs::read(path).unwrap();
    bytes[0] ^= 0xff;
    fs::write(path, bytes).unwrap();
}

/// A mirror over SFTP reads back as a local one does, from this machine and from one
/// that has only the URL: the index comes from the mirror's own copy.
fn remote_mirror_reads_back(compress: bool) {
    let env = TestEnv::new();
    let sshd = Sshd::start();
    let remote = env.dir.path().join("remote");
    let dst = sshd.url(&remote);
    let here = machine(&env, &sshd, "here", Via::Env);
    let extra: &[&str] = if compress { &["--compress"] } else { &[] };
    let at = mirror_with_history(&here, &dst, extra);
    assert!(
        remote.join(".datasafe/index.db").is_file(),
        "the mirror holds its index"
    );
    reads_back(&here, &dst, &at, "here");

    let there = machine(&env, &sshd, "there", Via::Env);
    reads_back(&there, &dst, &at, "there");

    // Damage on the server's disk: each machine's verify names it and exits 1.
    let stored = if compress {
        "docs/b.txt.gz"
    } else {
        "docs/b.txt"
    };
    corrupt(&remote.join(stored));
    for m in [&here, &there] {
        let out = m.run(&["verify", &dst]);
        assert_code(&out, 1);
        assert!(
            stdout(&out).contains(&format!("damaged: {stored}")),
            "{}",
            stdout(&out)
        );
    }
}

#[test]
fn a_remote_mirror_verifies_restores_lists_and_archives_from_here_and_elsewhere() {
    remote_mirror_reads_back(false);
}

#[test]
fn a_gzipped_remote_mirror_verifies_restores_lists_and_archives_from_here_and_elsewhere() {
    remote_mirror_reads_back(true);
}

#[test]
fn host_path_form_and_the_ssh_command_flag_reach_a_remote_mirror() {
    let env = TestEnv::new();
    let sshd = Sshd::start();
    let remote = env.dir.path().join("remote");
    let dst = sshd.scp_form(&remote);
    let here = machine(&env, &sshd, "here", Via::Flag);
    let at = mirror_with_history(&here, &dst, &[]);
    reads_back(&here, &dst, &at, "here");
    let there = machine(&env, &sshd, "there", Via::Flag);
    reads_back(&there, &dst, &at, "there");

    // The advice to repair reaches the mirror the way this run did.
    corrupt(&remote.join("docs/deep/c.bin"));
    let src: &OsStr = env.src.as_os_str();
    let out = there.run(&[OsStr::new("verify"), "--source".as_ref(), src, dst.as_ref()]);
    assert_code(&out, 1);
    let flag = format!("--ssh-command '{}'", sshd.ssh_command());
    assert!(
        stderr(&out).contains(&format!("sync --repair {flag} ")),
        "{}",
        stderr(&out)
    );
}

#[test]
fn verify_and_sync_repair_a_remote_mirror() {
    let env = TestEnv::new();
    let sshd = Sshd::start();
    let remote = env.dir.path().join("remote");
    let dst = sshd.url(&remote);
    let m = machine(&env, &sshd, "here", Via::Env);
    sample_tree(&env);
    m.ok(&[OsStr::new("sync"), env.src.as_os_str(), dst.as_ref()]);
    let src: &OsStr = env.src.as_os_str();

    corrupt(&remote.join("docs/b.txt"));
    let out = m.run(&[OsStr::new("verify"), "--source".as_ref(), src, dst.as_ref()]);
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains(&format!("--repair {} {dst}", env.src.display())),
        "the advice names the URL:\n{}",
        stderr(&out)
    );
    m.ok(&[
        OsStr::new("verify"),
        "--source".as_ref(),
        src,
        "--repair".as_ref(),
        dst.as_ref(),
    ]);
    assert_eq!(fs::read(remote.join("docs/b.txt")).unwrap(), b"bravo");
    m.ok(&["verify", &dst]);

    corrupt(&remote.join("a.txt"));
    m.ok(&[OsStr::new("sync"), "--repair".as_ref(), src, dst.as_ref()]);
    assert_eq!(fs::read(remote.join("a.txt")).unwrap(), b"alpha");
    m.ok(&["verify", &dst]);
}

#[test]
fn verify_config_checks_a_pair_with_a_remote_dest_through_the_files_ssh_command() {
    let env = TestEnv::new();
    let sshd = Sshd::start();
    let remote = env.dir.path().join("remote");
    let dst = sshd.url(&remote);
    sample_tree(&env);
    let config = env.dir.path().join("config.toml");
    fs::write(
        &config,
        format!(
            "ssh_command = \"{}\"\n\n[[mirror]]\nname = \"far\"\nsource = \"{}\"\ndest = \"{dst}\"\ncompress = true\n",
            sshd.ssh_command(),
            env.src.display()
        ),
    )
    .unwrap();
    // Nothing in the environment: only the file says how to reach the server.
    let state = env.dir.path().join("state");
    let bare = |args: &[&OsStr]| {
        env.cmd(args)
            .env("XDG_STATE_HOME", &state)
            .env_remove(SSH_COMMAND_VAR)
            .output()
            .unwrap()
    };
    let cfg: &OsStr = config.as_os_str();
    assert_code(&bare(&["sync".as_ref(), "--config".as_ref(), cfg]), 0);
    assert!(remote.join("docs/b.txt.gz").is_file());
    let out = bare(&["verify".as_ref(), "--config".as_ref(), cfg]);
    assert_code(&out, 0);
    assert!(
        stdout(&out).contains("pair far: Files verified: 4"),
        "{}",
        stdout(&out)
    );
    assert_code(
        &bare(&[
            "verify".as_ref(),
            "--config".as_ref(),
            cfg,
            "--source".as_ref(),
        ]),
        0,
    );

    corrupt(&remote.join("docs/b.txt.gz"));
    let out = bare(&["verify".as_ref(), "--config".as_ref(), cfg]);
    assert_code(&out, 1);
    assert!(
        stdout(&out).contains("damaged: docs/b.txt.gz"),
        "{}",
        stdout(&out)
    );
    assert_code(
        &bare(&[
            "verify".as_ref(),
            "--config".as_ref(),
            cfg,
            "--repair".as_ref(),
        ]),
        0,
    );
    assert_code(&bare(&["verify".as_ref(), "--config".as_ref(), cfg]), 0);

    // The flag wins over the file: a command that cannot work is used, and said.
    let out = bare(&[
        "verify".as_ref(),
        "--config".as_ref(),
        cfg,
        "--ssh-command=false".as_ref(),
    ]);
    assert_code(&out, 2);
    assert!(stderr(&out).contains("cannot reach"), "{}", stderr(&out));
}

#[test]
fn an_unreachable_host_is_one_line_and_exit_2_at_once() {
    let env = TestEnv::new();
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dst = format!("sftp://127.0.0.1:{port}/srv/mirror");
    let state = env.dir.path().join("state");
    let target = env.dir.path().join("target");
    let out_file = env.dir.path().join("out.zip");
    let src: &OsStr = env.src.as_os_str();
    let d: &OsStr = dst.as_ref();
    let commands: Vec<Vec<&OsStr>> = vec![
        vec!["verify".as_ref(), d],
        vec!["verify".as_ref(), "--source".as_ref(), src, d],
        vec!["versions".as_ref(), d],
        vec!["restore".as_ref(), d, target.as_os_str()],
        vec!["archive".as_ref(), d, out_file.as_os_str()],
    ];
    for args in commands {
        let started = Instant::now();
        let out = env
            .cmd(&args)
            .env("XDG_STATE_HOME", &state)
            .env(
                SSH_COMMAND_VAR,
                "ssh -F /dev/null -o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no",
            )
            .output()
            .unwrap();
        let took = started.elapsed();
        assert_code(&out, 2);
        let err = stderr(&out);
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: one line:\n{err}");
        assert!(
            lines[0].starts_with("error: cannot reach 127.0.0.1: ")
                && lines[0].contains("Connection refused"),
            "{args:?}: {err}"
        );
        assert_eq!(stdout(&out), "", "{args:?}");
        assert!(took < Duration::from_secs(10), "{args:?} took {took:?}");
        assert!(
            !target.exists() && !out_file.exists(),
            "{args:?} wrote nothing"
        );
    }
}

#[test]
fn a_missing_remote_mirror_is_named_by_its_url() {
    let env = TestEnv::new();
    let sshd = Sshd::start();
    let dst = sshd.url(&env.dir.path().join("nothing-here"));
    let m = machine(&env, &sshd, "here", Via::Env);
    for args in [
        vec!["verify", dst.as_str()],
        vec!["versions", dst.as_str()],
        vec!["restore", dst.as_str(), "target"],
        vec!["archive", dst.as_str(), "out.zip"],
    ] {
        let out = m.run(&args);
        assert_code(&out, 2);
        assert!(
            stderr(&out).contains(&format!("{dst} does not exist")),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}

/// Starts `datasafe ARGS` as `m`, waits until it connected and `ready` says it got
/// where the test wants it, kills the server (the connection dies and no new one can
/// be made), and waits for it to end, at most `limit`. Returns its output and how long
/// it ran after the kill; `None` if it was still running at `limit` (it is killed then).
fn kill_server_midway(
    m: &Machine,
    args: &[&OsStr],
    ready: impl Fn() -> bool,
    limit: Duration,
) -> Option<(Output, Duration)> {
    use crate::common::watcher::wait_until;
    use std::process::Stdio;
    let mut cmd = m.env.cmd(args);
    cmd.env("XDG_STATE_HOME", &m.state)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    m.sshd.set_env(&mut cmd);
    let mut child = cmd.spawn().unwrap();
    let there = wait_until(Duration::from_secs(60), || {
        (m.sshd.sessions() > 0 && ready()) || child.try_wait().unwrap().is_some()
    });
    assert!(there, "{args:?} never got there");
    assert!(
        child.try_wait().unwrap().is_none(),
        "{args:?} ended before the kill: grow the tree"
    );
    m.sshd.kill_all();
    let killed = Instant::now();
    while killed.elapsed() < limit {
        if child.try_wait().unwrap().is_some() {
            let took = killed.elapsed();
            return Some((child.wait_with_output().unwrap(), took));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    eprintln!("--- stdout\n{}\n--- stderr\n{}", stdout(&out), stderr(&out));
    None
}

/// The names in `dir` that contain `part`.
fn names_with(dir: &Path, part: &str) -> Vec<OsString> {
    fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().contains(part))
        .collect()
}

/// A server that goes away mid-`verify` is a mirror that could not be checked (one
/// line, exit 2), never damage, and the check stops once a request gave up waiting for
/// it, instead of waiting that long again for every file left. `restore` cut off while
/// it writes stops the same way (exit 1: what it restored stays), and `archive` cut off
/// while it writes leaves no archive (exit 2).
#[test]
fn a_server_lost_midway_stops_verify_restore_and_archive_instead_of_failing_every_file() {
    let env = TestEnv::new();
    let sshd = Sshd::start();
    let remote = env.dir.path().join("remote");
    let dst = sshd.url(&remote);
    let m = machine(&env, &sshd, "here", Via::Env);
    for i in 0..3000 {
        env.write(format!("d{}/f{i}.txt", i % 30), format!("file {i}\n"));
    }
    m.ok(&[OsStr::new("sync"), env.src.as_os_str(), dst.as_ref()]);
    // A request waits up to a minute for the server to come back before it fails.
    let limit = Duration::from_secs(100);
    let d: &OsStr = dst.as_ref();

    // Killed a moment after it connected: listing the mirror, or hashing.
    let started = Instant::now();
    let args = [OsStr::new("verify"), "--jobs".as_ref(), "1".as_ref(), d];
    let (out, took) = kill_server_midway(
        &m,
        &args,
        || started.elapsed() > Duration::from_millis(300),
        limit,
    )
    .expect("verify kept going (a minute per file) after the server was gone");
    assert_code(&out, 2);
    let said = stdout(&out);
    assert!(
        !said.contains("damaged:") && !said.contains("missing:"),
        "a lost connection is no damage:\n{said}"
    );
    // ssh's loss is a warning of the connection's own; the check's end is one line.
    let err = stderr(&out);
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "one line:\n{err}");
    assert!(errors[0].starts_with("error: cannot reach "), "{err}");
    assert!(
        took < Duration::from_secs(90),
        "verify took {took:?} after the kill"
    );

    // Killed once files are being written into TARGET.
    sshd.restart();
    let target = env.dir.path().join("target");
    let args = [OsStr::new("restore"), d, target.as_os_str()];
    let restoring = || fs::read_dir(&target).is_ok_and(|mut d| d.next().is_some());
    let (out, took) = kill_server_midway(&m, &args, restoring, limit)
        .expect("restore kept going (a minute per file) after the server was gone");
    assert_code(&out, 1);
    let err = stderr(&out);
    assert_eq!(
        err.lines().filter(|l| l.contains("cannot reach")).count(),
        1,
        "the lost server is said once:\n{err}"
    );
    assert!(err.contains("the restore stopped there"), "{err}");
    assert!(
        took < Duration::from_secs(90),
        "restore took {took:?} after the kill"
    );

    // Killed once the archive is being written (its temp file beside OUT).
    sshd.restart();
    let out_file = env.dir.path().join("out.zip");
    let args = [OsStr::new("archive"), d, out_file.as_os_str()];
    let writing = || !names_with(env.dir.path(), "out.zip").is_empty();
    let (out, took) = kill_server_midway(&m, &args, writing, limit)
        .expect("archive kept going (a minute per file) after the server was gone");
    assert_code(&out, 2);
    let err = stderr(&out);
    assert!(
        err.lines()
            .last()
            .is_some_and(|l| l.starts_with("error: cannot reach ")),
        "{err}"
    );
    assert!(
        took < Duration::from_secs(90),
        "archive took {took:?} after the kill"
    );
    let left = names_with(env.dir.path(), "out.zip");
    assert!(left.is_empty(), "left behind: {left:?}");
}
