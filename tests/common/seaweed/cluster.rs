//! A SeaweedFS cluster of separate processes on 127.0.0.1 for the tests that kill
//! part of a store: one `weed master`, two `weed volume` servers, one `weed filer` and
//! the S3 gateway `weed s3`, each on its own free ports, data in one temp folder.
//!
//! Replication is `001` (master `-defaultReplication`, filer
//! `-defaultReplicaPlacement`). SeaweedFS reads the three digits as extra copies in
//! other data centers, in other racks of the same data center, and on other servers of
//! the same rack. Both volume servers here sit in the default data center and rack, so
//! `001` is the string that keeps two copies on two servers on one machine (`010` would
//! need a second rack, `100` a second data center). Every volume is created on both
//! servers and a write is acknowledged once both copies hold it, so a read still
//! succeeds with either server killed. Writes are another matter: with one server
//! down, the master cannot place new `001` volumes and the existing ones are one copy
//! short, so writes fail until it is back — what a client must retry through.
//!
//! Start order, each waited for with a deadline: the master (until it is its own
//! leader), both volume servers (until the master lists them), the filer (until it
//! answers HTTP), the gateway (until a signed ListBuckets answers 200).

use super::client::S3Endpoint;
use super::net::{Ports, http_get};
use super::proc::Proc;
use super::{
    Loopback, START_DEADLINE, StartFailure, poll_ready, remove_tmp_sockets, server_proc,
    volumes_known, wait_ready, weed,
};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Ports: master, volume 0, volume 1, filer, S3.
const MASTER: usize = 0;
const VOLUME: usize = 1;
const FILER: usize = 3;
const S3: usize = 4;

/// A running cluster; every process is SIGKILLed and the folder removed on drop.
pub struct Cluster {
    // Field order is drop order: the gateway first, the master last, the folder after.
    s3: Proc,
    filer: Proc,
    volumes: [Proc; 2],
    master: Proc,
    ports: Ports,
    started_in: Duration,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// A fresh cluster, ready when this returns (the gateway answers, both volume
    /// servers are registered).
    pub fn start() -> Cluster {
        let mut last = String::new();
        for _ in 0..5 {
            let dir = tempfile::Builder::new()
                .prefix("datasafe-weed-cluster-")
                .tempdir()
                .unwrap();
            let ports = Ports::reserve(5);
            let began = Instant::now();
            let mut cluster = Cluster::new(dir, ports);
            match cluster.start_all() {
                Ok(()) => {
                    cluster.started_in = began.elapsed();
                    return cluster;
                }
                Err(StartFailure::PortTaken) => last = cluster.logs(),
                Err(StartFailure::Other(why)) => panic!("{why}\n{}", cluster.logs()),
            }
        }
        panic!("the cluster found no free ports in 5 tries; its logs:\n{last}")
    }

    fn new(dir: tempfile::TempDir, ports: Ports) -> Cluster {
        let weed = weed();
        let sub = |name: &str| -> PathBuf {
            let path = dir.path().join(name);
            fs::create_dir_all(&path).unwrap();
            path
        };
        let master_addr = format!("127.0.0.1:{}.{}", ports.http(MASTER), ports.grpc(MASTER));
        let master_dir = sub("master");
        let master = server_proc(
            "weed master",
            weed,
            &master_dir,
            &dir.path().join("master.log"),
        )
        .arg("master")
        .arg("-ip=127.0.0.1")
        .arg("-ip.bind=127.0.0.1")
        .arg(format!("-port={}", ports.http(MASTER)))
        .arg(format!("-port.grpc={}", ports.grpc(MASTER)))
        .arg(format!("-mdir={}", master_dir.display()))
        .arg("-defaultReplication=001")
        .arg("-volumeSizeLimitMB=64")
        .arg("-telemetry=false");
        let volumes = [0, 1].map(|i| {
            let vdir = sub(&format!("volume{i}"));
            server_proc(
                format!("volume server {i}").as_str(),
                weed,
                &vdir,
                &dir.path().join(format!("volume{i}.log")),
            )
            .arg("volume")
            .arg("-ip=127.0.0.1")
            .arg("-ip.bind=127.0.0.1")
            .arg(format!("-port={}", ports.http(VOLUME + i)))
            .arg(format!("-port.grpc={}", ports.grpc(VOLUME + i)))
            .arg(format!("-dir={}", vdir.display()))
            .arg(format!("-mserver={master_addr}"))
            .arg("-max=16")
            .arg("-preStopSeconds=0")
        });
        let filer_dir = sub("filer");
        let filer = server_proc(
            "weed filer",
            weed,
            &filer_dir,
            &dir.path().join("filer.log"),
        )
        .arg("filer")
        .arg("-ip=127.0.0.1")
        .arg("-ip.bind=127.0.0.1")
        .arg(format!("-port={}", ports.http(FILER)))
        .arg(format!("-port.grpc={}", ports.grpc(FILER)))
        .arg(format!("-master={master_addr}"))
        .arg("-defaultReplicaPlacement=001")
        .arg(format!(
            "-localSocket={}",
            filer_dir.join("filer.sock").display()
        ));
        let s3_dir = sub("s3");
        let s3 = server_proc("weed s3", weed, &s3_dir, &dir.path().join("s3.log"))
            .arg("s3")
            .arg("-ip=127.0.0.1")
            .arg("-ip.bind=127.0.0.1")
            .arg(format!("-port={}", ports.http(S3)))
            .arg(format!("-port.grpc={}", ports.grpc(S3)))
            .arg(format!(
                "-filer=127.0.0.1:{}.{}",
                ports.http(FILER),
                ports.grpc(FILER)
            ))
            .arg("-port.iceberg=0")
            .arg("-port.lance=0")
            .arg("-autoCreateBucket=false")
            .arg(format!("-localSocket={}", s3_dir.join("s3.sock").display()));
        Cluster {
            s3,
            filer,
            volumes,
            master,
            ports,
            started_in: Duration::ZERO,
            dir,
        }
    }

    fn start_all(&self) -> Result<(), StartFailure> {
        let master = self.ports.http(MASTER);
        wait_ready(&self.master, || {
            match http_get(master, "/cluster/status", Duration::from_secs(2)) {
                Some((200, body)) if body.contains("\"IsLeader\":true") => Ok(()),
                other => Err(format!("master /cluster/status: {other:?}")),
            }
        })?;
        // The volume servers start together; each is waited for in turn.
        let mut log_before = [0; 2];
        for (i, volume) in self.volumes.iter().enumerate() {
            log_before[i] = volume.log_len();
            volume.spawn().map_err(StartFailure::Other)?;
        }
        for (i, before) in log_before.into_iter().enumerate() {
            poll_ready(&self.volumes[i], before, || self.volume_ready(i))?;
        }
        let filer = self.ports.http(FILER);
        wait_ready(&self.filer, || {
            match http_get(filer, "/", Duration::from_secs(2)) {
                Some((status, _)) if status < 500 => Ok(()),
                other => Err(format!("filer GET /: {other:?}")),
            }
        })?;
        self.wait_s3()
    }

    /// Spawns volume server `i` and waits until it is ready.
    fn wait_volume(&self, i: usize) -> Result<(), StartFailure> {
        wait_ready(&self.volumes[i], || self.volume_ready(i))
    }

    /// `Ok` once volume server `i` answers and the master lists it.
    fn volume_ready(&self, i: usize) -> Result<(), String> {
        let port = self.ports.http(VOLUME + i);
        if !matches!(
            http_get(port, "/status", Duration::from_secs(2)),
            Some((200, _))
        ) {
            return Err(format!("volume server {i} does not answer /status"));
        }
        volumes_known(self.ports.http(MASTER), port, &self.volume_dir(i))
    }

    fn master_lists(&self, master: u16, volume_port: u16) -> bool {
        http_get(master, "/dir/status", Duration::from_secs(2)).is_some_and(|(status, body)| {
            status == 200 && body.contains(&format!("\"Url\":\"127.0.0.1:{volume_port}\""))
        })
    }

    fn wait_s3(&self) -> Result<(), StartFailure> {
        let s3 = Loopback(self.ports.http(S3));
        wait_ready(&self.s3, || s3.s3_answers())
    }

    /// How long [`Cluster::start`] took, from the master's spawn to a ready gateway.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// The sum of the five processes' resident memory in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.procs().iter().filter_map(|p| p.rss_kib()).sum()
    }

    /// The cluster's temp folder (`master/`, `volume0/`, `volume1/`, `filer/`, `s3/`,
    /// a `NAME.log` each).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Volume server `i`'s data folder (0 or 1).
    pub fn volume_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("volume{i}"))
    }

    /// Every process's log, for failure messages.
    pub fn logs(&self) -> String {
        self.procs()
            .iter()
            .map(|p| format!("--- {} (last 15 lines)\n{}\n", p.name, p.log_tail(15)))
            .collect()
    }

    /// True while volume server `i` runs.
    pub fn volume_running(&self, i: usize) -> bool {
        self.volumes[i].is_running()
    }

    /// Kills volume server `i` at once (SIGKILL) and waits until the master has
    /// dropped it from its topology, so the next request meets the cluster without it.
    pub fn kill_volume(&self, i: usize) {
        self.volumes[i]
            .end(libc::SIGKILL)
            .unwrap_or_else(|e| panic!("{e}"));
        let (master, port) = (self.ports.http(MASTER), self.ports.http(VOLUME + i));
        let deadline = Instant::now() + START_DEADLINE;
        while self.master_lists(master, port) {
            assert!(
                Instant::now() < deadline,
                "the master still lists volume server {i} {START_DEADLINE:?} after its kill\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts volume server `i` again on its ports and data (stopping it gracefully
    /// first if it runs); returns when the master lists it again.
    pub fn restart_volume(&self, i: usize) {
        if self.volumes[i].is_running() {
            self.volumes[i]
                .end(libc::SIGTERM)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        self.again(|| self.wait_volume(i), &format!("volume server {i}"));
    }

    /// Kills the S3 gateway at once (SIGKILL); the endpoint refuses connections until
    /// [`Cluster::restart_s3`].
    pub fn kill_s3(&self) {
        self.s3.end(libc::SIGKILL).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Restarts the S3 gateway on the same port (gracefully stopping it first if it
    /// runs); returns when it answers again.
    pub fn restart_s3(&self) {
        self.s3.end(libc::SIGTERM).unwrap_or_else(|e| panic!("{e}"));
        self.again(|| self.wait_s3(), "the S3 gateway");
    }

    /// Runs `start` until it succeeds, retrying while a port is taken by someone
    /// else (who may let it go: clients know only these ports).
    fn again(&self, start: impl Fn() -> Result<(), StartFailure>, what: &str) {
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            match start() {
                Ok(()) => return,
                Err(StartFailure::PortTaken) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(200))
                }
                Err(StartFailure::PortTaken) => {
                    panic!("{what} cannot listen on its ports again\n{}", self.logs())
                }
                Err(StartFailure::Other(why)) => panic!("{why}\n{}", self.logs()),
            }
        }
    }

    fn procs(&self) -> [&Proc; 5] {
        [
            &self.master,
            &self.volumes[0],
            &self.volumes[1],
            &self.filer,
            &self.s3,
        ]
    }
}

impl S3Endpoint for Cluster {
    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.http(S3))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for proc in self.procs() {
            // No panic here: the drop may run while a failed test unwinds.
            if let Err(stuck) = proc.end(libc::SIGKILL) {
                eprintln!("{stuck}");
            }
        }
        remove_tmp_sockets(&self.ports);
    }
}
