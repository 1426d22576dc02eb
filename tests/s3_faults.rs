//! An S3 destination when things break (issue 14), through the binary, against real
//! SeaweedFS servers of each test's own (`common::seaweed`): the S3 gateway stopped and
//! started again under a watcher, datasafe SIGKILLed in the middle of a multipart
//! upload, and a volume server of a replicated cluster killed in the middle of a sync.
//! What must hold each time: nothing half-written is visible, nothing is lost, and the
//! mirror converges once the store is whole again.

use crate::common::seaweed::{Cluster, S3Endpoint, Seaweed};
use crate::common::watcher::{DEADLINE, wait_until};
use crate::common::{TestEnv, assert_code, assert_same_trees, snapshot, stderr, stdout};
use std::ffi::OsStr;
use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// datasafe on `server`'s bucket, with the test's own state folder.
struct Rig<'a> {
    env: TestEnv,
    server: &'a dyn S3Endpoint,
    bucket: String,
    state: PathBuf,
}

impl<'a> Rig<'a> {
    fn new(server: &'a dyn S3Endpoint, hint: &str) -> Rig<'a> {
        let env = TestEnv::new();
        let bucket = server.new_bucket(hint);
        let state = env.dir.path().join("state");
        Rig {
            env,
            server,
            bucket,
            state,
        }
    }

    fn url(&self) -> String {
        format!("s3://{}/m", self.bucket)
    }

    fn cmd<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut cmd = self.env.cmd(args);
        self.server.set_env(&mut cmd);
        cmd.env("XDG_STATE_HOME", &self.state);
        cmd
    }

    fn sync(&self) -> Output {
        let url = self.url();
        self.cmd(&["sync".as_ref(), self.env.src.as_os_str(), url.as_ref()])
            .output()
            .unwrap()
    }

    /// Restores the mirror into a new folder and compares it with the source.
    fn assert_restores_to_source(&self, name: &str) {
        let to = self.env.dir.path().join(name);
        let url = self.url();
        let out = self
            .cmd(&["restore".as_ref(), url.as_ref(), to.as_os_str()])
            .output()
            .unwrap();
        assert_code(&out, 0);
        assert_same_trees(&snapshot(&self.env.src, false), &snapshot(&to, false));
    }

    fn status(&self) -> String {
        let out = self.cmd(&["status"]).output().unwrap();
        format!("{}{}", stdout(&out), stderr(&out))
    }

    fn keys(&self) -> Vec<String> {
        self.server
            .list_keys(&self.bucket, "m/", 1000)
            .into_iter()
            .map(|o| o.key[2..].to_string())
            .filter(|k| !k.starts_with(".datasafe/"))
            .collect()
    }
}

/// A child stopped with SIGTERM and reaped when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        // SAFETY: signalling a child of this process.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

#[test]
fn the_gateway_stopped_under_a_watcher_is_reconnected_and_what_changed_meanwhile_mirrored() {
    let _guard = crate::common::watcher::shared();
    let server = Seaweed::mini();
    let rig = Rig::new(&server, "outage");
    rig.env.write("edit.txt", "before");
    rig.env.write("gone.txt", "deleted meanwhile");
    rig.env.write("dir-old/inner.txt", "renamed meanwhile");
    let url = rig.url();
    let child = rig
        .cmd(&[
            "watch".as_ref(),
            "--debounce=50ms".as_ref(),
            rig.env.src.as_os_str(),
            url.as_ref(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _watching = Running(child);
    let has = |key: &str| rig.keys().iter().any(|k| k == key);
    assert!(
        wait_until(DEADLINE, || has("edit.txt") && has("dir-old/inner.txt")),
        "{:?}",
        rig.keys()
    );

    server.stop();
    rig.env.write("edit.txt", "edited while the store was down");
    rig.env
        .write("born.txt", "created while the store was down");
    fs::remove_file(rig.env.src.join("gone.txt")).unwrap();
    fs::rename(rig.env.src.join("dir-old"), rig.env.src.join("dir-new")).unwrap();
    let mut said = String::new();
    assert!(
        wait_until(Duration::from_secs(60), || {
            said = rig.status();
            said.contains("reconnecting to bucket")
        }),
        "status never said reconnecting:\n{said}"
    );

    server.restart();
    assert!(
        wait_until(Duration::from_secs(120), || {
            let keys = rig.keys();
            keys.iter().any(|k| k == "born.txt")
                && keys.iter().any(|k| k == "dir-new/inner.txt")
                && !keys
                    .iter()
                    .any(|k| k == "gone.txt" || k == "dir-old/inner.txt")
                && rig
                    .server
                    .try_get(&rig.bucket, "m/edit.txt")
                    .ok()
                    .as_deref()
                    == Some(b"edited while the store was down".as_slice())
        }),
        "did not converge: {:?}\n{}",
        rig.keys(),
        rig.status()
    );
    assert!(
        wait_until(DEADLINE, || !rig.status().contains("reconnecting")),
        "{}",
        rig.status()
    );
}

#[test]
fn sigkill_in_the_middle_of_a_multipart_upload_keeps_the_old_object_and_the_next_run_aborts_it() {
    let server = Seaweed::mini();
    let rig = Rig::new(&server, "killed");
    rig.env.write("big.bin", "the old content");
    assert_code(&rig.sync(), 0);

    // Big enough to take many parts (16 MiB each) and a while to send.
    let data: Vec<u8> = (0..320 * 1024 * 1024u32).map(|i| (i % 253) as u8).collect();
    rig.env.write("big.bin", &data);
    drop(data);
    let url = rig.url();
    let mut child = rig
        .cmd(&[
            "sync".as_ref(),
            "-q".as_ref(),
            rig.env.src.as_os_str(),
            url.as_ref(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = wait_until(Duration::from_secs(60), || {
        !rig.server.list_multipart_uploads(&rig.bucket).is_empty()
    });
    // SAFETY: signalling a child of this process.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
    assert!(started, "no multipart upload was seen under way");

    // The old object is whole; nothing new is visible.
    assert_eq!(rig.server.get(&rig.bucket, "m/big.bin"), b"the old content");
    assert!(!rig.server.list_multipart_uploads(&rig.bucket).is_empty());

    // The next run aborts what was left and sends the file whole.
    let out = rig.sync();
    assert_code(&out, 0);
    assert!(
        rig.server.list_multipart_uploads(&rig.bucket).is_empty(),
        "{}",
        stderr(&out)
    );
    let head = rig.server.head(&rig.bucket, "m/big.bin");
    assert_eq!(head.size, 320 * 1024 * 1024);
    rig.assert_restores_to_source("back");
}

#[test]
fn a_volume_server_killed_in_the_middle_of_a_sync_loses_nothing_and_the_mirror_converges() {
    let cluster = Cluster::start();
    let rig = Rig::new(&cluster, "volume");
    for i in 0..3000 {
        rig.env.write(
            format!("d{}/f{i}.txt", i % 20),
            format!("file {i} ").repeat(40),
        );
    }
    let url = rig.url();
    let child = rig
        .cmd(&["sync".as_ref(), rig.env.src.as_os_str(), url.as_ref()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once some of it is in, one of the two volume servers dies. With a copy missing
    // SeaweedFS holds every write (30 s, then a 500) until it is back: the sync's
    // requests wait and are tried again meanwhile.
    assert!(
        wait_until(DEADLINE, || rig.keys().len() >= 50),
        "{:?}",
        rig.keys()
    );
    cluster.kill_volume(1);
    let (mut seen, mut since) = (rig.keys().len(), Instant::now());
    let stalled = wait_until(Duration::from_secs(60), || {
        let now = rig.keys().len();
        if now != seen {
            (seen, since) = (now, Instant::now());
        }
        since.elapsed() > Duration::from_secs(3)
    });
    assert!(stalled || seen >= 3000, "writes never stalled");
    cluster.restart_volume(1);
    let first = child.wait_with_output().unwrap();
    // Whatever it could not write it says; what it wrote is whole.
    assert!(
        matches!(first.status.code(), Some(0 | 1)),
        "{}{}",
        stdout(&first),
        stderr(&first)
    );
    let mut last = rig.sync();
    let converged = wait_until(Duration::from_secs(90), || {
        if last.status.code() == Some(0) {
            return true;
        }
        last = rig.sync();
        last.status.code() == Some(0)
    });
    assert!(converged, "{}{}", stdout(&last), stderr(&last));
    rig.assert_restores_to_source("back");
}
