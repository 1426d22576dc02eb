//! An S3 destination when things break (issue 14), through the binary, against real
//! SeaweedFS servers of each test's own (`common::seaweed`): the S3 gateway stopped and
//! started again under a watcher, datasafe SIGKILLed in the middle of a multipart
//! upload, and a volume server of a replicated cluster killed in the middle of a sync
//! and in the middle of a watch. What must hold each time: nothing half-written is
//! visible, nothing is lost, and the mirror converges once the store is whole again.

use crate::common::seaweed::{Cluster, S3Endpoint, Seaweed};
use crate::common::watcher::{
    DEADLINE, START_DEADLINE, Watcher, read_text, stored_names, wait_until,
};
use crate::common::{
    Node, TestEnv, assert_code, assert_same_trees, snapshot, stderr, stdout, try_snapshot,
};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::os::unix::process::ExitStatusExt;
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

    /// The mirror as `datasafe restore` gives it back into a new folder `name`
    /// (removed again); `None` if the restore fails.
    fn restored(&self, name: &str) -> Option<BTreeMap<PathBuf, Node>> {
        let to = self.env.dir.path().join(name);
        let url = self.url();
        let out = self
            .cmd(&["restore".as_ref(), url.as_ref(), to.as_os_str()])
            .output()
            .unwrap();
        let tree = out
            .status
            .success()
            .then(|| try_snapshot(&to, false))
            .flatten();
        let _ = fs::remove_dir_all(&to);
        tree
    }

    /// `datasafe watch --debounce 50ms SRC URL`, its output in files of the test's
    /// folder (SIGKILLed on drop if still running).
    fn watch(&self) -> Watcher {
        let (out, err) = (
            self.env.dir.path().join("watch.stdout"),
            self.env.dir.path().join("watch.stderr"),
        );
        let url = self.url();
        let child = self
            .cmd(&[
                "watch".as_ref(),
                "--debounce=50ms".as_ref(),
                self.env.src.as_os_str(),
                url.as_ref(),
            ])
            .stdin(Stdio::null())
            .stdout(File::create(&out).unwrap())
            .stderr(File::create(&err).unwrap())
            .spawn()
            .unwrap();
        Watcher { child, out, err }
    }

    /// The contents of every version the mirror keeps (plain listing and GETs).
    fn version_contents(&self) -> Vec<Vec<u8>> {
        self.server
            .list_keys(&self.bucket, "m/.datasafe/versions/", 1000)
            .into_iter()
            .filter(|o| !o.key.ends_with('/'))
            .map(|o| self.server.get(&self.bucket, &o.key))
            .collect()
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

/// Issue 14's cluster test for `watch`: one volume server of the two dies while the
/// watcher mirrors a burst of new files, the source changes more while it is dead (an
/// edit, a deletion, a folder renamed, new files, one big enough for a multipart
/// upload), and the server comes back.
///
/// What SeaweedFS 4.48 does meanwhile, with replication `001`: reads and listings go
/// on, but a write needs both copies, and the master neither places a volume on the one
/// server left ("no matching data node") nor falls back to one copy; so every write
/// (a PUT, and a server-side copy: a version, a rename) is held while the filer retries
/// its volume assignment, and fails with 500 after 30 s, for as long as the server is
/// dead. Nothing re-replicates by itself either. So a mirror cannot converge without
/// the server, and the test restarts it (on the same data) once the filer has given up
/// on a held write (its log says so): by then datasafe has had a 500. The watcher must ride that out: the requests held or failed are tried again
/// (the SDK's retries; nothing is reported failed or dropped), and in the end the
/// bucket restores to the source, every old content replaced or deleted meanwhile is
/// kept as a version, and no unfinished multipart upload is left. Then one SIGINT stops
/// the watcher cleanly (it dies by the signal, after its summary).
#[test]
fn a_volume_server_killed_in_the_middle_of_a_watch_loses_nothing_and_the_mirror_converges() {
    let _guard = crate::common::watcher::shared();
    let began = Instant::now();
    let cluster = Cluster::start();
    let rig = Rig::new(&cluster, "watch-volume");
    let env = &rig.env;
    env.write("edit.txt", "before the outage");
    env.write("gone.txt", "deleted during the outage");
    for i in 0..20 {
        env.write(
            format!("dir-old/f{i}.txt"),
            format!("renamed during the outage {i}"),
        );
    }
    let mut w = rig.watch();
    let has_all = |names: &[PathBuf]| {
        let keys = rig.keys();
        names
            .iter()
            .all(|n| keys.iter().any(|k| n.as_os_str() == k.as_str()))
    };
    let first = stored_names(&env.src, false);
    assert!(
        wait_until(START_DEADLINE, || w.stdout().contains("watching")
            && has_all(&first)),
        "the watcher did not become ready: {:?}{}",
        rig.keys(),
        w.context()
    );

    // A burst the watcher is in the middle of when the server dies.
    for i in 0..200 {
        env.write(
            format!("burst/d{}/f{i}.txt", i % 10),
            format!("burst {i} ").repeat(30),
        );
    }
    assert!(
        wait_until(DEADLINE, || rig
            .keys()
            .iter()
            .any(|k| k.starts_with("burst/"))),
        "the burst was not being mirrored{}",
        w.context()
    );
    cluster.kill_volume(1);
    let killed = Instant::now();

    // More changes while it is dead.
    env.write("edit.txt", "edited during the outage");
    fs::remove_file(env.src.join("gone.txt")).unwrap();
    fs::rename(env.src.join("dir-old"), env.src.join("dir-new")).unwrap();
    for i in 0..20 {
        env.write(
            format!("later/f{i}.txt"),
            format!("written during the outage {i}"),
        );
    }
    let big: Vec<u8> = (0..10 * 1024 * 1024u32).map(|i| (i % 241) as u8).collect();
    env.write("later/big.bin", &big);

    // The outage lasts until SeaweedFS has given up on a held write (the filer's log
    // says so, about 30 s after the write came in, be it a PUT or a copy; the gateway
    // answered datasafe with 500, and it must try again), and until then nothing
    // written after the kill has landed.
    let all = stored_names(&env.src, false);
    let filer_log = cluster.dir().join("filer.log");
    let gave_up = wait_until(Duration::from_secs(60), || {
        read_text(&filer_log).contains("retry assign: giving up")
    });
    let edit_held = rig
        .server
        .try_get(&rig.bucket, "m/edit.txt")
        .ok()
        .as_deref()
        == Some(b"before the outage".as_slice());
    assert!(
        gave_up && edit_held && !has_all(&all),
        "writes were not held with a volume server dead (gave up {gave_up}, edit held {edit_held}){}\n{}",
        w.context(),
        cluster.logs()
    );
    cluster.restart_volume(1);
    let restarted = Instant::now();

    // Converges: every file's key, then the restored tree equal to the source.
    let want = snapshot(&env.src, false);
    let mut last = None;
    let converged = wait_until(Duration::from_secs(90), || {
        if !has_all(&all)
            || rig
                .keys()
                .iter()
                .any(|k| k.starts_with("dir-old/") || k == "gone.txt")
        {
            return false;
        }
        last = rig.restored("back");
        last.as_ref() == Some(&want)
    });
    if !converged {
        match &last {
            Some(tree) => assert_same_trees(&want, tree),
            None => panic!("did not converge: {:?}{}", rig.keys(), w.context()),
        }
    }
    let converged_in = restarted.elapsed();

    // Nothing lost: the contents replaced or deleted during the outage are versions.
    let kept = rig.version_contents();
    for old in ["before the outage", "deleted during the outage"] {
        assert!(
            kept.iter().any(|c| c == old.as_bytes()),
            "no version holds {old:?}: {} versions{}",
            kept.len(),
            w.context()
        );
    }
    assert!(
        rig.server.list_multipart_uploads(&rig.bucket).is_empty(),
        "an unfinished multipart upload was left"
    );

    w.signal(libc::SIGINT);
    let status = w.wait_exit(DEADLINE);
    assert_eq!(
        status.signal(),
        Some(libc::SIGINT),
        "after one SIGINT the watcher stops cleanly, then dies by it{}",
        w.context()
    );
    assert!(
        w.stdout().contains("Backup stopped at"),
        "no summary{}",
        w.context()
    );
    eprintln!(
        "volume server dead {:?}, converged {converged_in:?} after its restart, test {:?}",
        restarted - killed,
        began.elapsed()
    );
}
