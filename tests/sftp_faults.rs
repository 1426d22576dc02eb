//! Faults of an SFTP destination, through the built binary against a real OpenSSH sshd
//! on 127.0.0.1 (`common::sshd`): the server killed mid-upload (with and without a
//! restart), a proxy that cuts the connection or goes silent, a watcher whose server
//! goes away, a full remote disk, a remote folder the login user cannot write, an
//! unknown host key and a refused user key, a server without `hardlink@openssh.com` and
//! `posix-rename@openssh.com`, and datasafe itself killed mid-sync (the remote lock).
//!
//! Every test checks that the mirror converges and that nothing is torn: each file in
//! DST is byte-identical to a version of its source, and `DST/.datasafe/tmp` is empty
//! after the run (or the run after it). Mtimes are whole seconds over SFTP version 3, so
//! trees are compared by content. Waits poll with a deadline; the only fixed sleeps are
//! the faults themselves (how long a server stays down).

use crate::common;

use common::faults::{Tmpfs, chmod, files, noise, reachable_by_others, temp_files};
use common::sshd::{Proxy, Sshd, SshdOptions};
use common::watcher::{DEADLINE, Watcher, read_text, wait_until};
use common::{TestEnv, is_root, stderr, stdout};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// A test's tree (`src/`, and `dst/` as the remote folder, on this machine) and the
/// server it reaches `dst/` through.
struct Rig {
    env: TestEnv,
    sshd: Sshd,
    /// `sftp://USER@127.0.0.1:PORT/…/dst` (or through a proxy).
    url: String,
}

impl Rig {
    fn new() -> Rig {
        Rig::with(SshdOptions::default())
    }

    fn with(options: SshdOptions) -> Rig {
        let env = TestEnv::new();
        let sshd = Sshd::start_with(options);
        let url = sshd.url(&env.dst);
        Rig { env, sshd, url }
    }

    /// The binary with `args`: home and XDG folders in the test's temp folder (the
    /// remote mirror's local index under `XDG_STATE_HOME`), stdin not a terminal, the
    /// ssh command pointing at the server.
    fn cmd<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let home = self.env.dir.path().join("home");
        fs::create_dir_all(&home).unwrap();
        let mut cmd = self.env.cmd(args);
        cmd.env("HOME", &home)
            .env("XDG_CONFIG_HOME", self.env.dir.path().join("xdg-config"))
            .env("XDG_STATE_HOME", self.env.dir.path().join("xdg-state"))
            .stdin(Stdio::null());
        self.sshd.set_env(&mut cmd);
        cmd
    }

    /// `sync SRC URL EXTRA...`, not yet run.
    fn sync_cmd(&self, extra: &[&str]) -> Command {
        let mut args: Vec<&OsStr> =
            vec!["sync".as_ref(), self.env.src.as_os_str(), self.url.as_ref()];
        args.extend(extra.iter().map(OsStr::new));
        self.cmd(args)
    }

    /// Runs a sync to the end (failing the test after `limit`).
    fn sync(&self, extra: &[&str], tag: &str, limit: Duration) -> Done {
        let mut run = self.spawn(self.sync_cmd(extra), tag);
        let status = run.wait(limit);
        run.done(status)
    }

    /// Starts `cmd` with its stdout and stderr in files (a pipe nobody reads could stall
    /// it).
    fn spawn(&self, cmd: Command, tag: &str) -> Running {
        let (child, out, err) = self.start(cmd, tag);
        Running {
            child,
            out,
            err,
            started: Instant::now(),
        }
    }

    fn start(&self, mut cmd: Command, tag: &str) -> (Child, PathBuf, PathBuf) {
        let out = self.env.dir.path().join(format!("{tag}.stdout"));
        let err = self.env.dir.path().join(format!("{tag}.stderr"));
        let child = cmd
            .stdout(File::create(&out).unwrap())
            .stderr(File::create(&err).unwrap())
            .spawn()
            .unwrap();
        (child, out, err)
    }

    /// Starts `watch SRC URL --debounce 50ms`.
    fn watch(&self, tag: &str) -> Watcher {
        let cmd = self.cmd([
            "watch".as_ref(),
            self.env.src.as_os_str(),
            OsStr::new(&self.url),
            "--debounce".as_ref(),
            "50ms".as_ref(),
        ]);
        let (child, out, err) = self.start(cmd, tag);
        Watcher { child, out, err }
    }

    /// Everything that shows what happened, for a failure message.
    fn context(&self) -> String {
        let log = self.sshd.log();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!("\n--- sshd log (last lines)\n{}", tail.join("\n"))
    }
}

/// A running datasafe (sync or watch), killed on drop if it still runs.
struct Running {
    child: Child,
    out: PathBuf,
    err: PathBuf,
    started: Instant,
}

impl Running {
    fn stdout(&self) -> String {
        read_text(&self.out)
    }

    fn stderr(&self) -> String {
        read_text(&self.err)
    }

    fn context(&self) -> String {
        format!(
            "\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout(),
            self.stderr()
        )
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits for the exit; kills it and fails the test after `limit` (from its start).
    fn wait(&mut self, limit: Duration) -> ExitStatus {
        let left = limit.saturating_sub(self.started.elapsed());
        let mut status = None;
        let exited = wait_until(left, || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        if !exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
            panic!(
                "datasafe still ran after {limit:?} (a hang){}",
                self.context()
            );
        }
        status.unwrap()
    }

    fn done(&self, status: ExitStatus) -> Done {
        Done {
            status,
            stdout: self.stdout(),
            stderr: self.stderr(),
            took: self.started.elapsed(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// A finished run.
struct Done {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl Done {
    fn code(&self) -> Option<i32> {
        self.status.code()
    }

    fn expect(&self, code: i32, rig: &Rig) -> &Done {
        assert_eq!(
            self.code(),
            Some(code),
            "exit code (after {:?}){}{}",
            self.took,
            self,
            rig.context()
        );
        self
    }

    /// The lines of stderr holding `needle`.
    fn lines_with(&self, needle: &str) -> Vec<&str> {
        self.stderr.lines().filter(|l| l.contains(needle)).collect()
    }
}

impl std::fmt::Display for Done {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        )
    }
}

/// Asserts DST holds exactly SRC's files with SRC's content, and no temp file.
fn assert_converged(src: &Path, dst: &Path, what: &str) {
    let (a, b) = (files(src), files(dst));
    if a != b {
        let mut diff = String::new();
        for (k, v) in &a {
            match b.get(k) {
                None => diff.push_str(&format!("missing in dst: {}\n", k.display())),
                Some(w) if w != v => diff.push_str(&format!(
                    "differs: {} ({} bytes in src, {} in dst)\n",
                    k.display(),
                    v.len(),
                    w.len()
                )),
                _ => {}
            }
        }
        for k in b.keys().filter(|k| !a.contains_key(*k)) {
            diff.push_str(&format!("extra in dst: {}\n", k.display()));
        }
        panic!("{what}: dst does not mirror src:\n{diff}");
    }
    assert_eq!(folders(src), folders(dst), "{what}: folders differ");
    let left = temp_files(dst);
    assert!(left.is_empty(), "{what}: temp files left: {left:?}");
}

/// Asserts every file in DST is byte-identical to one of the versions its source had
/// (`versions`, oldest first): nothing half-written under a final name.
fn assert_not_torn(dst: &Path, versions: &[&BTreeMap<PathBuf, Vec<u8>>], what: &str) {
    for (name, content) in files(dst) {
        let known = versions
            .iter()
            .any(|v| v.get(&name).is_some_and(|c| *c == content));
        assert!(
            known,
            "{what}: {} in dst ({} bytes) is no version of its source (torn)",
            name.display(),
            content.len()
        );
    }
}

/// Writes `count` files of `min..max` bytes of seeded noise under `dir/` in SRC.
fn big_files(env: &TestEnv, dir: &str, count: usize, min: usize, max: usize, seed: u64) {
    let mut rng = common::faults::Rng(seed);
    for i in 0..count {
        let len = rng.range(min as u64, max as u64) as usize;
        env.write(
            format!("{dir}/f{i:04}.bin"),
            noise(seed * 10_000 + i as u64, len),
        );
    }
}

/// How many files DST holds under their final names now.
fn landed(dst: &Path) -> usize {
    walkdir::WalkDir::new(dst)
        .into_iter()
        .filter_entry(|e| e.file_name() != ".datasafe")
        .flatten()
        .filter(|e| e.file_type().is_file())
        .count()
}

/// Waits until `n` files landed in DST while the run goes on; fails if it ended first.
fn wait_landed(run: &mut Running, dst: &Path, n: usize, rig: &Rig) {
    let ok = wait_until(Duration::from_secs(60), || {
        landed(dst) >= n || !run.running()
    });
    assert!(
        ok && run.running(),
        "the sync ended (or stalled) before {n} files landed ({} did){}{}",
        landed(dst),
        run.context(),
        rig.context()
    );
}

// ---------------------------------------------------------------------------------------
// 1. sshd killed mid-upload, started again: the same sync resumes and finishes
// ---------------------------------------------------------------------------------------

#[test]
fn sshd_killed_mid_upload_and_restarted_the_sync_resumes_and_converges() {
    let rig = Rig::new();
    big_files(&rig.env, "big", 120, 512 * 1024, 1024 * 1024, 1);
    let source = files(&rig.env.src);
    let mut run = rig.spawn(rig.sync_cmd(&[]), "sync");
    wait_landed(&mut run, &rig.env.dst, 10, &rig);
    rig.sshd.kill_all();
    let killed_at = landed(&rig.env.dst);
    assert_not_torn(&rig.env.dst, &[&source], "right after the kill");
    // The fault: the server stays down a few seconds.
    std::thread::sleep(Duration::from_secs(3));
    rig.sshd.restart();
    let status = run.wait(Duration::from_secs(180));
    let done = run.done(status);
    eprintln!(
        "killed with {killed_at} of {} files landed; {:?}{done}",
        source.len(),
        done.took
    );
    done.expect(0, &rig);
    assert!(
        killed_at < source.len(),
        "the server was killed only after every file landed: the test proves nothing"
    );
    assert!(
        done.stderr.contains("resuming the pass") || done.stdout.contains("resuming the pass"),
        "no \"resuming the pass\"{done}"
    );
    assert_converged(&rig.env.src, &rig.env.dst, "the resumed sync");
}

/// A sync waits up to a minute for a lost server: one back after 40 s (later than the
/// backoff's last doubling before the minute) is still waited for.
#[test]
fn sshd_down_for_40_seconds_mid_sync_is_waited_for_within_the_patience() {
    let rig = Rig::new();
    big_files(&rig.env, "big", 40, 256 * 1024, 512 * 1024, 11);
    let mut run = rig.spawn(rig.sync_cmd(&[]), "sync");
    wait_landed(&mut run, &rig.env.dst, 5, &rig);
    rig.sshd.kill_all();
    let killed = Instant::now();
    // The fault: the server stays down 40 s.
    std::thread::sleep(Duration::from_secs(40));
    assert!(
        run.running(),
        "the sync gave up {:?} after the kill, before its minute of patience{}",
        killed.elapsed(),
        run.context()
    );
    rig.sshd.restart();
    let status = run.wait(Duration::from_secs(240));
    run.done(status).expect(0, &rig);
    assert_converged(&rig.env.src, &rig.env.dst, "the resumed sync");
}

// ---------------------------------------------------------------------------------------
// 2. sshd killed mid-upload and left down: the sync ends, bounded, with a clear error
// ---------------------------------------------------------------------------------------

#[test]
fn sshd_killed_mid_upload_and_left_down_the_sync_ends_in_bounded_time() {
    let rig = Rig::new();
    big_files(&rig.env, "big", 40, 256 * 1024, 768 * 1024, 2);
    let source = files(&rig.env.src);
    let mut run = rig.spawn(rig.sync_cmd(&[]), "sync");
    wait_landed(&mut run, &rig.env.dst, 5, &rig);
    rig.sshd.kill_all();
    let killed = Instant::now();
    // The patience of a sync is 60 s; a kill found by a request in flight at once.
    let status = run.wait(Duration::from_secs(90) + run.started.elapsed());
    let done = run.done(status);
    let after = killed.elapsed();
    eprintln!("ended {after:?} after the kill{done}");
    done.expect(1, &rig);
    assert!(
        after <= Duration::from_secs(90),
        "took {after:?} after the kill"
    );
    let host = format!("{}@127.0.0.1", rig.sshd.user());
    let reach = done.lines_with("cannot reach");
    assert!(
        !reach.is_empty() && reach.iter().all(|l| l.contains(&host)),
        "no line naming {host} and why it cannot be reached{done}"
    );
    assert!(
        reach.iter().any(|l| l.contains("Connection refused")),
        "ssh's own words are missing{done}"
    );
    // Not a line per file: the files that could not be written while the server was
    // gone are one line (and the first failure, and a folder's).
    let errors = done.lines_with("error");
    assert!(
        errors.len() <= 4,
        "{} error lines for one lost server{done}",
        errors.len()
    );
    assert_not_torn(&rig.env.dst, &[&source], "the failed sync");
    rig.sshd.restart();
    rig.sync(&[], "again", Duration::from_secs(120))
        .expect(0, &rig);
    assert_converged(&rig.env.src, &rig.env.dst, "the sync after the restart");
}

/// Ctrl-C while the server is gone: the sync stops waiting for it at once (what is in
/// flight cannot finish without it; the index is saved locally) and dies by SIGINT, not
/// after its minute of patience.
#[test]
fn ctrl_c_while_the_server_is_down_ends_the_sync_at_once() {
    use std::os::unix::process::ExitStatusExt;
    let rig = Rig::new();
    big_files(&rig.env, "big", 40, 256 * 1024, 768 * 1024, 5);
    let source = files(&rig.env.src);
    let mut run = rig.spawn(rig.sync_cmd(&[]), "sync");
    wait_landed(&mut run, &rig.env.dst, 5, &rig);
    rig.sshd.kill_all();
    // Waiting for the server now (a request in flight finds it gone at once).
    assert!(
        wait_until(Duration::from_secs(30), || run
            .stderr()
            .contains("lost the connection")),
        "the loss was not noticed{}",
        run.context()
    );
    let asked = Instant::now();
    unsafe {
        libc::kill(run.child.id() as i32, libc::SIGINT);
    }
    let status = run.wait(run.started.elapsed() + Duration::from_secs(50));
    let done = run.done(status);
    let after = asked.elapsed();
    eprintln!("ended {after:?} after Ctrl-C{done}");
    assert!(
        after <= Duration::from_secs(10),
        "took {after:?} after Ctrl-C (the patience is 60 s){done}"
    );
    assert_eq!(done.status.signal(), Some(libc::SIGINT), "{done}");
    assert_not_torn(&rig.env.dst, &[&source], "the interrupted sync");
    rig.sshd.restart();
    rig.sync(&[], "again", Duration::from_secs(120))
        .expect(0, &rig);
    assert_converged(&rig.env.src, &rig.env.dst, "the sync after the restart");
}

// ---------------------------------------------------------------------------------------
// 3. The network cut or gone silent between client and server
// ---------------------------------------------------------------------------------------

#[test]
fn a_proxy_cutting_the_connection_mid_sync_the_sync_resumes() {
    let mut rig = Rig::new();
    let proxy = Proxy::start(rig.sshd.port());
    rig.url = rig.sshd.url_via(&proxy, &rig.env.dst);
    big_files(&rig.env, "big", 50, 256 * 1024, 768 * 1024, 3);
    let source = files(&rig.env.src);
    let mut run = rig.spawn(rig.sync_cmd(&[]), "sync");
    wait_landed(&mut run, &rig.env.dst, 10, &rig);
    proxy.cut();
    let cut_at = landed(&rig.env.dst);
    assert_not_torn(&rig.env.dst, &[&source], "right after the cut");
    let status = run.wait(Duration::from_secs(180));
    let done = run.done(status);
    done.expect(0, &rig);
    assert!(cut_at < source.len(), "cut only after every file landed");
    assert!(
        proxy.accepted() >= 2,
        "the sync never connected again (accepted {})",
        proxy.accepted()
    );
    assert!(
        format!("{}{}", done.stdout, done.stderr).contains("resuming the pass"),
        "no \"resuming the pass\"{done}"
    );
    assert_converged(&rig.env.src, &rig.env.dst, "the resumed sync");
}

#[test]
fn a_silent_network_mid_sync_is_noticed_by_keepalives_and_the_sync_resumes() {
    let mut rig = Rig::new();
    let proxy = Proxy::start(rig.sshd.port());
    rig.url = rig.sshd.url_via(&proxy, &rig.env.dst);
    big_files(&rig.env, "big", 50, 256 * 1024, 768 * 1024, 4);
    let source = files(&rig.env.src);
    let mut run = rig.spawn(rig.sync_cmd(&[]), "sync");
    wait_landed(&mut run, &rig.env.dst, 10, &rig);
    proxy.blackhole(true);
    let silent = Instant::now();
    // ssh's keep-alives (5 s × 3) end a silent connection: the sync says so.
    let noticed = wait_until(Duration::from_secs(30), || {
        format!("{}{}", run.stdout(), run.stderr()).contains("lost the connection")
    });
    let after = silent.elapsed();
    assert!(
        noticed,
        "no \"lost the connection\" {after:?} into a silent network (a hang){}{}",
        run.context(),
        rig.context()
    );
    eprintln!("a silent network noticed after {after:?}");
    assert!(run.running(), "the sync gave up at once{}", run.context());
    assert_not_torn(&rig.env.dst, &[&source], "while the network was silent");
    proxy.blackhole(false);
    let status = run.wait(Duration::from_secs(240));
    let done = run.done(status);
    done.expect(0, &rig);
    assert!(
        format!("{}{}", done.stdout, done.stderr).contains("resuming the pass"),
        "no \"resuming the pass\"{done}"
    );
    assert_eq!(files(&rig.env.src), files(&rig.env.dst), "the resumed sync");
    // Requests the silent network held back reach the server's old session once it
    // speaks again, after the sync moved on to a new connection (as a healed network
    // delivers a dead client's last segments): a temp file they create is the next
    // run's to sweep.
    rig.sync(&[], "after", Duration::from_secs(60))
        .expect(0, &rig);
    assert_converged(&rig.env.src, &rig.env.dst, "the sync after");
}

/// A network that stays silent (new connections too, which the proxy accepts and then
/// holds): the sync ends, never hangs, after the keep-alives, its patience and one
/// connection attempt's timeout.
#[test]
fn a_network_silent_for_good_ends_the_sync_in_bounded_time() {
    let mut rig = Rig::new();
    let proxy = Proxy::start(rig.sshd.port());
    rig.url = rig.sshd.url_via(&proxy, &rig.env.dst);
    big_files(&rig.env, "big", 40, 256 * 1024, 512 * 1024, 12);
    let source = files(&rig.env.src);
    let mut run = rig.spawn(rig.sync_cmd(&[]), "sync");
    wait_landed(&mut run, &rig.env.dst, 5, &rig);
    proxy.blackhole(true);
    let silent = Instant::now();
    // 15–20 s of keep-alives, 60 s of patience, up to 30 s for the last try to start.
    let status = run.wait(run.started.elapsed() + Duration::from_secs(130));
    let done = run.done(status);
    let after = silent.elapsed();
    eprintln!("ended {after:?} into the silence{done}");
    done.expect(1, &rig);
    let errors = done.lines_with("error");
    assert!(errors.len() <= 4, "{} error lines{done}", errors.len());
    assert!(
        done.stderr.contains("cannot reach") || done.stderr.contains("lost"),
        "no line about the connection{done}"
    );
    proxy.blackhole(false);
    assert_not_torn(&rig.env.dst, &[&source], "the sync into silence");
    rig.sync(&[], "after", Duration::from_secs(120))
        .expect(0, &rig);
    assert_converged(&rig.env.src, &rig.env.dst, "the sync after the silence");
}

// ---------------------------------------------------------------------------------------
// 4. watch: the server goes away while files change, and comes back
// ---------------------------------------------------------------------------------------

/// The folders under `root` (DST's `.datasafe` left out), sorted.
fn folders(root: &Path) -> std::collections::BTreeSet<PathBuf> {
    walkdir::WalkDir::new(root)
        .min_depth(1)
        .into_iter()
        .filter_entry(|e| e.file_name() != ".datasafe")
        .flatten()
        .filter(|e| e.file_type().is_dir())
        .map(|e| e.path().strip_prefix(root).unwrap().to_path_buf())
        .collect()
}

/// Polls until DST holds SRC's files by content, its folders, and no temp file (fails
/// after `limit`). Folders too: a folder's files go before the folder itself.
fn wait_converged(w: &Watcher, rig: &Rig, limit: Duration) {
    let (src, dst) = (&rig.env.src, &rig.env.dst);
    let ok = wait_until(limit, || {
        files(src) == files(dst) && folders(src) == folders(dst) && temp_files(dst).is_empty()
    });
    if !ok {
        eprintln!("watcher output:{}{}", w.context(), rig.context());
        assert_converged(src, dst, "the watcher");
    }
}

/// Several pairs in one watcher: while one pair's server is silent (a try to reach it
/// takes ssh's whole connect timeout, 15 s), the process's other pair mirrors its
/// changes as usual, and the silent pair catches up once its server answers again.
#[test]
fn a_silent_server_of_one_pair_does_not_hold_up_the_other_pairs() {
    let _guard = common::watcher::shared();
    let mut rig = Rig::new();
    let proxy = Proxy::start(rig.sshd.port());
    rig.url = rig.sshd.url_via(&proxy, &rig.env.dst);
    let (src2, dst2) = (
        rig.env.dir.path().join("src2"),
        rig.env.dir.path().join("dst2"),
    );
    fs::create_dir_all(&src2).unwrap();
    fs::write(src2.join("local.txt"), "the local pair").unwrap();
    rig.env.write("remote.txt", "the remote pair");
    let q = |s: &str| serde_json::to_string(s).unwrap();
    let config = rig.env.dir.path().join("pairs.toml");
    fs::write(
        &config,
        format!(
            "debounce = \"50ms\"\n\n[[mirror]]\nsource = {}\ndest = {}\n\n\
             [[mirror]]\nsource = {}\ndest = {}\n",
            q(rig.env.src.to_str().unwrap()),
            q(&rig.url),
            q(src2.to_str().unwrap()),
            q(dst2.to_str().unwrap()),
        ),
    )
    .unwrap();
    let cmd = rig.cmd(["watch".as_ref(), "--config".as_ref(), config.as_os_str()]);
    let (child, out, err) = rig.start(cmd, "watch");
    let w = Watcher { child, out, err };
    w.wait_ready(&dst2, &[PathBuf::from("local.txt")]);
    w.wait_ready(&rig.env.dst, &[PathBuf::from("remote.txt")]);

    // The remote pair's server goes silent: its connection is cut and new ones hang.
    proxy.blackhole(true);
    proxy.cut();
    rig.env
        .write("remote.txt", "changed while the server is silent");
    let lost = wait_until(Duration::from_secs(30), || {
        w.stderr().contains("lost the connection") || w.stdout().contains("lost the connection")
    });
    assert!(lost, "the cut was not noticed{}", w.context());
    // The other pair goes on: one change after another, each mirrored within seconds,
    // for longer than the silent server's connect timeout.
    let since = Instant::now();
    let mut i = 0;
    while since.elapsed() < Duration::from_secs(20) {
        let name = format!("meanwhile-{i}.txt");
        fs::write(src2.join(&name), format!("change {i}")).unwrap();
        let mirrored = wait_until(Duration::from_secs(8), || dst2.join(&name).exists());
        assert!(
            mirrored,
            "{name} was not mirrored by the local pair within 8 s, {:?} into the other \
             pair's silence{}",
            since.elapsed(),
            w.context()
        );
        i += 1;
    }
    proxy.blackhole(false);
    let back = wait_until(Duration::from_secs(120), || {
        fs::read_to_string(rig.env.dst.join("remote.txt")).unwrap_or_default()
            == "changed while the server is silent"
    });
    assert!(back, "the remote pair did not catch up{}", w.context());
}

#[test]
fn watch_reconnects_after_sshd_comes_back_and_mirrors_what_changed_meanwhile() {
    let _guard = common::watcher::shared();
    let rig = Rig::new();
    for i in 0..5 {
        rig.env.write(format!("keep/k{i}.txt"), format!("kept {i}"));
    }
    rig.env.write("edit.txt", "before the outage");
    rig.env
        .write("old-name.txt", "renamed while the server is down");
    rig.env
        .write("dir-old/inner.txt", "a folder renamed meanwhile");
    rig.env.write("gone.txt", "deleted meanwhile");
    let w = rig.watch("watch");
    let names: Vec<PathBuf> = files(&rig.env.src).into_keys().collect();
    w.wait_ready(&rig.env.dst, &names);
    wait_converged(&w, &rig, DEADLINE);

    rig.sshd.kill_all();
    let src = &rig.env.src;
    fs::write(src.join("edit.txt"), "edited while the server was down").unwrap();
    fs::rename(src.join("old-name.txt"), src.join("new-name.txt")).unwrap();
    fs::rename(src.join("dir-old"), src.join("dir-new")).unwrap();
    fs::remove_file(src.join("gone.txt")).unwrap();
    rig.env
        .write("born.txt", "created while the server was down");

    // The watcher finds the server gone when it writes those changes: `status` says so.
    let mut said = String::new();
    let reconnecting = wait_until(Duration::from_secs(30), || {
        let out = rig.cmd(["status"]).output().unwrap();
        said = format!("{}{}", stdout(&out), stderr(&out));
        said.contains("reconnecting")
    });
    assert!(
        reconnecting,
        "status never said \"reconnecting\"; it said:\n{said}{}",
        w.context()
    );
    let host = format!("{}@127.0.0.1", rig.sshd.user());
    assert!(said.contains(&host), "status does not name {host}:\n{said}");
    assert!(
        w.stderr().contains("lost the connection") || w.stdout().contains("lost the connection"),
        "the watcher did not say it lost the connection{}",
        w.context()
    );
    let before = files(&rig.env.dst);
    rig.sshd.restart();
    // Backoff is at most 60 s between tries; a few tries fit before the server returns.
    wait_converged(&w, &rig, Duration::from_secs(90));
    assert!(!rig.env.dst.join("old-name.txt").exists());
    assert!(!rig.env.dst.join("dir-old").exists());
    assert!(!rig.env.dst.join("gone.txt").exists());
    assert!(before.contains_key(Path::new("old-name.txt")));
    let cleared = wait_until(DEADLINE, || {
        let out = rig.cmd(["status"]).output().unwrap();
        said = stdout(&out);
        out.status.success() && !said.contains("reconnecting")
    });
    assert!(
        cleared,
        "status still says reconnecting:\n{said}{}",
        w.context()
    );

    // A second outage is said as the first was (not swallowed as more of the first).
    let connection_errors = |w: &Watcher| {
        w.stderr()
            .lines()
            .filter(|l| {
                l.starts_with("error:") && (l.contains("cannot reach") || l.contains("was lost"))
            })
            .count()
    };
    let first = connection_errors(&w);
    assert!(first >= 1, "the first outage was not said{}", w.context());
    rig.sshd.kill_all();
    fs::write(src.join("edit.txt"), "edited in the second outage").unwrap();
    let said_again = wait_until(Duration::from_secs(30), || connection_errors(&w) > first);
    assert!(
        said_again,
        "the second outage's failure was not said{}",
        w.context()
    );
    rig.sshd.restart();
    wait_converged(&w, &rig, Duration::from_secs(90));
    // Files untouched through both outages were never written again.
    let versions = rig.env.dst.join(".datasafe/versions");
    let rewritten: Vec<PathBuf> = walkdir::WalkDir::new(&versions)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .filter(|p| {
            p.strip_prefix(&versions)
                .is_ok_and(|r| r.starts_with("keep"))
        })
        .collect();
    assert!(
        rewritten.is_empty(),
        "untouched files written again: {rewritten:?}{}",
        w.context()
    );
}

// ---------------------------------------------------------------------------------------
// 5. The remote disk fills up
// ---------------------------------------------------------------------------------------

#[test]
fn a_full_remote_disk_fails_clearly_keeps_old_content_and_converges_after_freeing_space() {
    if !is_root() {
        eprintln!("skipping: mounting a tmpfs as the remote folder needs root");
        return;
    }
    let rig = Rig::new();
    let disk = Tmpfs::mount(&rig.env.dst, "3m");
    for i in 0..8 {
        rig.env
            .write(format!("small/s{i}.txt"), noise(500 + i, 20_000));
    }
    rig.sync(&[], "first", Duration::from_secs(60))
        .expect(0, &rig);
    let old = files(&rig.env.src);
    // Replacing files keeps the old ones as versions, and new big ones need more than
    // the disk has.
    for i in 0..3 {
        rig.env
            .write(format!("small/s{i}.txt"), noise(600 + i, 30_000));
    }
    big_files(&rig.env, "big", 4, 1024 * 1024, 1024 * 1024 + 1, 5);
    let new = files(&rig.env.src);
    let done = rig.sync(&[], "full", Duration::from_secs(90));
    eprintln!("{done}");
    done.expect(1, &rig);
    // One line per file that did not fit, naming it and saying why, and the summary's.
    let errors = done.lines_with("error");
    let per_file = done.lines_with("error: writing sftp://");
    assert!(
        !per_file.is_empty(),
        "no line names a file that did not fit{done}"
    );
    for line in &errors {
        assert!(
            line.contains("no space left on the remote disk")
                || line.contains("the destination ran out of space"),
            "an error line that does not say the remote disk is full: {line}{done}"
        );
    }
    assert_not_torn(&rig.env.dst, &[&old, &new], "the sync into a full disk");
    assert!(
        temp_files(&rig.env.dst).is_empty(),
        "temp files left: {:?}",
        temp_files(&rig.env.dst)
    );
    disk.resize("64m");
    rig.sync(&[], "freed", Duration::from_secs(90))
        .expect(0, &rig);
    assert_converged(&rig.env.src, &rig.env.dst, "the sync after freeing space");
}

// ---------------------------------------------------------------------------------------
// 6. The login user may not write the remote folder
// ---------------------------------------------------------------------------------------

#[test]
fn a_remote_folder_the_login_user_cannot_write_is_one_clear_line() {
    if !is_root() {
        eprintln!("skipping: logging in as nobody needs root");
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
    let sshd = Sshd::start_with(SshdOptions {
        user: Some("nobody"),
        ..SshdOptions::default()
    });
    let url = sshd.url(&env.dst);
    let rig = Rig { env, sshd, url };
    rig.env.write("a.txt", "a");
    rig.env.write("locked/b.txt", "b");
    rig.env.write("locked/c.txt", "c");
    // DST is root's (0755): nobody cannot make its state folder.
    fs::create_dir(&rig.env.dst).unwrap();
    chmod(&rig.env.dst, 0o755);
    let done = rig.sync(&[], "root-owned", Duration::from_secs(30));
    eprintln!("{done}");
    assert_ne!(
        done.code(),
        Some(0),
        "synced into a folder nobody cannot write{done}"
    );
    let errors = done.lines_with("error");
    assert_eq!(errors.len(), 1, "not one error line{done}");
    assert!(
        errors[0].contains(&rig.url) && errors[0].to_lowercase().contains("permission denied"),
        "the line does not name the remote folder and the reason{done}"
    );
    assert!(done.took < Duration::from_secs(20), "took {:?}", done.took);

    // DST nobody's, a folder in it root's: one line per file that cannot be written.
    std::os::unix::fs::chown(&rig.env.dst, Some(65534), Some(65534)).unwrap();
    fs::create_dir(rig.env.dst.join("locked")).unwrap();
    chmod(&rig.env.dst.join("locked"), 0o755);
    let done = rig.sync(&[], "locked-folder", Duration::from_secs(30));
    eprintln!("{done}");
    done.expect(1, &rig);
    let errors = done.lines_with("error");
    assert!(!errors.is_empty(), "no error line{done}");
    for line in &errors {
        assert!(
            line.contains("locked") && line.to_lowercase().contains("permission denied"),
            "a line not naming the locked folder and the reason: {line}{done}"
        );
    }
    assert_eq!(fs::read(rig.env.dst.join("a.txt")).unwrap(), b"a");
    assert!(temp_files(&rig.env.dst).is_empty());
}

// ---------------------------------------------------------------------------------------
// 7. An unknown host key and a refused user key
// ---------------------------------------------------------------------------------------

/// An ssh command that records its arguments in `DIR/ssh-args` and runs ssh.
fn recording_ssh(rig: &Rig) -> (String, PathBuf) {
    let log = rig.env.dir.path().join("ssh-args");
    let script = rig.env.dir.path().join("ssh-recording");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$@\" >> {}\nexec ssh -F {} \"$@\"\n",
            log.display(),
            rig.sshd.ssh_config().display()
        ),
    )
    .unwrap();
    chmod(&script, 0o755);
    (script.display().to_string(), log)
}

fn assert_login_refused(rig: &Rig, words: &str) {
    rig.env.write("a.txt", "a");
    let (ssh, args) = recording_ssh(rig);
    let mut cmd = rig.sync_cmd(&["--ssh-command", &ssh]);
    let run = rig.spawn(
        {
            cmd.env_remove(common::sshd::SSH_COMMAND_VAR);
            cmd
        },
        "sync",
    );
    let mut run = run;
    let status = run.wait(Duration::from_secs(30));
    let done = run.done(status);
    eprintln!("{done}");
    done.expect(2, rig);
    assert!(done.took < Duration::from_secs(15), "took {:?}", done.took);
    let errors = done.lines_with("error");
    assert_eq!(errors.len(), 1, "not one error line{done}");
    let host = format!("{}@127.0.0.1", rig.sshd.user());
    assert!(
        errors[0].contains(&host) && errors[0].contains(words),
        "the line does not name {host} and say {words:?}{done}"
    );
    assert_eq!(
        errors[0].matches(&host).count(),
        1,
        "the host is named twice{done}"
    );
    // Without a terminal ssh is told never to ask.
    let args = fs::read_to_string(&args).unwrap();
    assert!(args.contains("BatchMode=yes"), "ssh ran as: {args}");
    assert!(!rig.env.dst.exists() || files(&rig.env.dst).is_empty());
}

#[test]
fn an_unknown_host_key_is_one_line_with_sshs_words() {
    let rig = Rig::new();
    rig.sshd.forget_host_key();
    assert_login_refused(&rig, "Host key verification failed.");
}

#[test]
fn a_refused_user_key_is_one_line_with_sshs_words() {
    let rig = Rig::new();
    rig.sshd.refuse_user_key();
    assert_login_refused(&rig, "Permission denied (publickey)");
}

// ---------------------------------------------------------------------------------------
// 8. A server without hardlink@openssh.com and posix-rename@openssh.com
// ---------------------------------------------------------------------------------------

/// The local time now as `restore --at` takes it, once the clock has reached a new
/// second (so the changes after it are later).
fn a_moment() -> String {
    let now = || {
        let out = Command::new("date")
            .arg("+%Y-%m-%d %H:%M:%S")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let at = now();
    assert!(wait_until(Duration::from_secs(3), || now() != at));
    at
}

#[test]
fn a_server_without_hardlink_and_posix_rename_keeps_versions_by_copy() {
    let mut rig = Rig::with(SshdOptions {
        deny: vec!["hardlink", "posix-rename"],
        ..SshdOptions::default()
    });
    // The scp form this time (`dstest:/abs/path`, the host from the ssh config).
    rig.url = rig.sshd.scp_form(&rig.env.dst);
    rig.env.write("doc.txt", "version one");
    rig.env.write("deleted.txt", "deleted later");
    rig.env.write("dir/kept.txt", "kept");
    rig.sync(&[], "first", Duration::from_secs(60))
        .expect(0, &rig);
    assert_converged(&rig.env.src, &rig.env.dst, "the first sync");
    let v1 = files(&rig.env.src);
    // The versions of a second are the same: let the clock move on.
    let first = a_moment();
    rig.env
        .write("doc.txt", "version two, longer than the first");
    fs::remove_file(rig.env.src.join("deleted.txt")).unwrap();
    let done = rig.sync(&[], "update", Duration::from_secs(60));
    done.expect(0, &rig);
    let v2 = files(&rig.env.src);
    assert_converged(&rig.env.src, &rig.env.dst, "the update");
    assert_not_torn(&rig.env.dst, &[&v1, &v2], "the update");

    // The kept versions are copies: no hard link was made.
    let kept: Vec<PathBuf> = walkdir::WalkDir::new(rig.env.dst.join(".datasafe/versions"))
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect();
    assert_eq!(
        kept.len(),
        2,
        "not one version each of doc.txt and deleted.txt: {kept:?}"
    );
    for path in &kept {
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            fs::metadata(path).unwrap().nlink(),
            1,
            "{} is a hard link",
            path.display()
        );
    }
    // The mirror is on this machine: `versions` and `restore` read it by its path here,
    // through the index the sync published to DST/.datasafe/index.db.
    let dst = rig.env.dst.as_os_str();
    let out = rig.cmd(["versions".as_ref(), dst]).output().unwrap();
    let listed = stdout(&out);
    assert!(
        out.status.success() && listed.contains("doc.txt") && listed.contains("deleted.txt"),
        "versions does not list the replaced and the deleted file:\n{listed}{}",
        stderr(&out)
    );
    // Restore as it was before the update: the old content of both.
    let back = rig.env.dir.path().join("back");
    let out = rig
        .cmd([
            "restore".as_ref(),
            "--at".as_ref(),
            OsStr::new(&first),
            dst,
            back.as_os_str(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "restore --at failed:\n{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert_eq!(
        files(&back),
        v1,
        "restore --at {first} is not the first version"
    );
    // And the live mirror.
    let now = rig.env.dir.path().join("now");
    let out = rig
        .cmd(["restore".as_ref(), dst, now.as_os_str()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "restore failed:\n{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert_eq!(files(&now), v2);
    // A third sync over the replaced file: a rename onto an existing name still works.
    rig.env.write("doc.txt", "version three");
    rig.sync(&[], "third", Duration::from_secs(60))
        .expect(0, &rig);
    assert_converged(&rig.env.src, &rig.env.dst, "the third sync");
}

// ---------------------------------------------------------------------------------------
// 9. datasafe killed mid-sync; the remote lock
// ---------------------------------------------------------------------------------------

#[test]
fn datasafe_killed_mid_sync_leaves_only_temp_files_and_its_lock_is_taken_over() {
    let rig = Rig::new();
    big_files(&rig.env, "big", 40, 256 * 1024, 768 * 1024, 9);
    let source = files(&rig.env.src);
    let mut run = rig.spawn(rig.sync_cmd(&[]), "killed");
    wait_landed(&mut run, &rig.env.dst, 5, &rig);
    let pid = run.child.id();
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
    let _ = run.child.wait();
    assert_not_torn(&rig.env.dst, &[&source], "after the kill");
    assert!(landed(&rig.env.dst) < source.len(), "killed after the end");
    let lock = fs::read_to_string(rig.env.dst.join(".datasafe/lock")).unwrap_or_default();
    assert!(
        lock.starts_with(&format!("{pid} ")),
        "the killed run left no lock of its own: {lock:?}"
    );
    let done = rig.sync(&[], "next", Duration::from_secs(120));
    done.expect(0, &rig);
    assert!(
        done.stderr.contains("stale lock"),
        "the dead run's lock was not said to be taken over{done}"
    );
    assert_converged(&rig.env.src, &rig.env.dst, "the sync after the kill");
    assert!(
        !rig.env.dst.join(".datasafe/lock").exists(),
        "the lock was left"
    );
}

#[test]
fn a_lock_held_by_a_live_watcher_is_refused_naming_its_pid_and_host() {
    let _guard = common::watcher::shared();
    let rig = Rig::new();
    rig.env.write("a.txt", "a");
    let w = rig.watch("watch");
    w.wait_ready(&rig.env.dst, &[PathBuf::from("a.txt")]);
    let done = rig.sync(&[], "second-writer", Duration::from_secs(30));
    eprintln!("{done}");
    assert_ne!(done.code(), Some(0), "a second writer ran{done}");
    let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let pid = format!("pid {}", w.pid());
    assert!(
        done.stderr.contains(&pid) && done.stderr.contains(host.trim()),
        "the refusal does not name {pid} on {}{done}",
        host.trim()
    );
    assert_eq!(
        done.lines_with("error").len(),
        1,
        "not one error line{done}"
    );
}

// ---------------------------------------------------------------------------------------
// The index when its copy in the mirror is missing
// ---------------------------------------------------------------------------------------

/// The files a sync wrote again, and the versions DST keeps.
fn rewritten(done: &Done, dst: &Path) -> (u64, usize) {
    let copied = done
        .stdout
        .lines()
        .filter(|l| l.starts_with("copied "))
        .count() as u64;
    let versions = walkdir::WalkDir::new(dst.join(".datasafe/versions"))
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .count();
    (copied, versions)
}

/// A connection lost during the first upload of the index leaves the mirror without its
/// copy and this machine's index never published: the next run compares with a listing
/// of the mirror (the index cannot be known to be current) and writes nothing again —
/// before, over SFTP's whole-second mtimes, it wrote every file again and kept a version
/// of each. (Seen in the watch test: the server killed right after the first pass.)
#[test]
fn an_index_never_published_writes_nothing_again() {
    let rig = Rig::new();
    for i in 0..5 {
        rig.env.write(format!("keep/k{i}.txt"), format!("kept {i}"));
    }
    rig.sync(&[], "first", Duration::from_secs(60))
        .expect(0, &rig);
    // As a first publication cut by the connection leaves it: no copy in the mirror, and
    // no note of one beside the local index.
    fs::remove_file(rig.env.dst.join(".datasafe/index.db")).unwrap();
    let cache = rig.env.dir.path().join("xdg-state/datasafe/remote");
    let notes: Vec<PathBuf> = walkdir::WalkDir::new(&cache)
        .into_iter()
        .flatten()
        .filter(|e| e.file_name() == "published")
        .map(|e| e.into_path())
        .collect();
    assert_eq!(
        notes.len(),
        1,
        "no note of the publication under {}",
        cache.display()
    );
    fs::remove_file(&notes[0]).unwrap();
    let done = rig.sync(&[], "second", Duration::from_secs(60));
    done.expect(0, &rig);
    assert_eq!(
        rewritten(&done, &rig.env.dst),
        (0, 0),
        "unchanged files written again (and versions kept){done}"
    );
    assert_converged(&rig.env.src, &rig.env.dst, "the second sync");
    assert!(
        rig.env.dst.join(".datasafe/index.db").exists(),
        "the index was not published"
    );
}

/// Without any index (a new machine, and no copy in the mirror) the index is rebuilt
/// from a listing; unchanged files must not be written again.
#[test]
fn a_lost_index_rebuilt_from_a_listing_writes_nothing_again() {
    let rig = Rig::new();
    for i in 0..5 {
        rig.env.write(format!("keep/k{i}.txt"), format!("kept {i}"));
    }
    rig.sync(&[], "first", Duration::from_secs(60))
        .expect(0, &rig);
    fs::remove_file(rig.env.dst.join(".datasafe/index.db")).unwrap();
    fs::remove_dir_all(rig.env.dir.path().join("xdg-state")).unwrap();
    let done = rig.sync(&[], "second", Duration::from_secs(60));
    done.expect(0, &rig);
    assert_eq!(
        rewritten(&done, &rig.env.dst),
        (0, 0),
        "unchanged files written again (and versions kept){done}"
    );
    assert_converged(&rig.env.src, &rig.env.dst, "the second sync");
    // The rebuilt records now hold the source's times: the next run has nothing to do.
    let done = rig.sync(&[], "third", Duration::from_secs(60));
    done.expect(0, &rig);
    assert!(
        done.stdout.contains("Updated: 0") && rewritten(&done, &rig.env.dst) == (0, 0),
        "the third sync did something{done}"
    );
}

/// QA: a watcher started while the host cannot be reached said so once and then never
/// tried again. It must say "reconnecting" in `status`, try again, and mirror everything
/// once the server is there.
#[test]
fn watch_started_while_the_host_is_down_retries_and_mirrors_once_it_is_back() {
    let _guard = common::watcher::shared();
    let rig = Rig::new();
    for i in 0..3 {
        rig.env
            .write(format!("before/b{i}.txt"), format!("before {i}"));
    }
    rig.sshd.stop();
    let w = rig.watch("watch");
    let mut said = String::new();
    let reconnecting = wait_until(Duration::from_secs(30), || {
        let out = rig.cmd(["status"]).output().unwrap();
        said = format!("{}{}", stdout(&out), stderr(&out));
        said.contains("reconnecting")
    });
    assert!(
        reconnecting,
        "status never said \"reconnecting\"; it said:\n{said}{}",
        w.context()
    );
    rig.env
        .write("during.txt", "written while the server was down");
    rig.sshd.restart();
    wait_converged(&w, &rig, Duration::from_secs(90));
}

/// QA: the mirror's folder removed on the server while `watch` runs was never made
/// again (every write failed with "no such file"). It is made again and filled.
#[test]
fn watch_makes_the_remote_folder_again_after_it_was_removed_on_the_server() {
    let _guard = common::watcher::shared();
    let rig = Rig::new();
    for i in 0..3 {
        rig.env.write(format!("keep/k{i}.txt"), format!("kept {i}"));
    }
    let w = rig.watch("watch");
    let names: Vec<PathBuf> = files(&rig.env.src).into_keys().collect();
    w.wait_ready(&rig.env.dst, &names);
    wait_converged(&w, &rig, DEADLINE);
    fs::remove_dir_all(&rig.env.dst).unwrap();
    rig.env
        .write("after.txt", "written after the mirror was removed");
    wait_converged(&w, &rig, Duration::from_secs(60));
}
