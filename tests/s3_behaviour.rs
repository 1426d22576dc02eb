//! An S3-compatible bucket as DST (issue 14), through the binary, against a real
//! SeaweedFS (`common::seaweed`: one shared `weed mini`, a bucket per test; a server of
//! its own where a test stops or breaks it). What a bucket holds is checked two ways:
//! through a plain S3 client (rclone and curl, not datasafe's own) and by datasafe's
//! `restore` into a new folder compared with the source. Each test has its own
//! `XDG_STATE_HOME` (where the local index of a remote mirror lives); a second one is
//! "another machine" that has only the URL.

use crate::common::seaweed::{S3Endpoint, Seaweed};
use crate::common::watcher::{DEADLINE, wait_until};
use crate::common::{TestEnv, assert_code, assert_same_trees, snapshot, stderr, stdout};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// One test's bucket on a server, and the machine (state folder) that runs datasafe.
struct Place<'a> {
    env: &'a TestEnv,
    server: &'a dyn S3Endpoint,
    bucket: String,
    state: PathBuf,
}

impl<'a> Place<'a> {
    /// A new bucket on the shared server.
    fn new(env: &'a TestEnv, hint: &str) -> Place<'a> {
        Place::on(env, Seaweed::shared(), hint)
    }

    fn on(env: &'a TestEnv, server: &'a dyn S3Endpoint, hint: &str) -> Place<'a> {
        let bucket = server.new_bucket(hint);
        Place {
            env,
            server,
            bucket,
            state: env.dir.path().join("state"),
        }
    }

    /// `s3://BUCKET/PREFIX`.
    fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.bucket)
    }

    /// `datasafe ARGS` with this server's variables and this machine's state folder.
    fn cmd<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut cmd = self.env.cmd(args);
        self.server.set_env(&mut cmd);
        cmd.env("XDG_STATE_HOME", &self.state);
        cmd
    }

    fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        self.cmd(args).output().unwrap()
    }

    fn ok<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        let out = self.run(args);
        assert_code(&out, 0);
        out
    }

    /// The same bucket from another machine (an empty state folder).
    fn elsewhere(&self, name: &str) -> Place<'a> {
        Place {
            env: self.env,
            server: self.server,
            bucket: self.bucket.clone(),
            state: self.env.dir.path().join(name),
        }
    }

    /// The keys under `prefix/` (plain listing), without the prefix, datasafe's own
    /// state left out.
    fn keys(&self, prefix: &str) -> Vec<String> {
        let root = format!("{prefix}/");
        self.server
            .list_keys(&self.bucket, &root, 1000)
            .into_iter()
            .map(|o| o.key[root.len()..].to_string())
            .filter(|k| !k.is_empty() && !k.starts_with(".datasafe/"))
            .collect()
    }

    /// Restores `prefix` into a new folder `name` of the test's folder.
    fn restore(&self, prefix: &str, name: &str) -> PathBuf {
        let to = self.env.dir.path().join(name);
        let url = self.url(prefix);
        self.ok(&["restore".as_ref(), url.as_ref(), to.as_os_str()]);
        to
    }
}

/// A source with files in folders, an empty folder, a symlink, an executable and a
/// name with a space.
fn sample(env: &TestEnv) {
    env.write("a.txt", "alpha");
    env.write("docs/b c.md", "bravo charlie");
    env.write("docs/deep/d.bin", vec![7u8; 70_000]);
    let exe = env.write("bin/run.sh", "#!/bin/sh\necho hi\n");
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o750)).unwrap();
    fs::create_dir_all(env.src.join("empty")).unwrap();
    std::os::unix::fs::symlink("a.txt", env.src.join("link")).unwrap();
}

#[test]
fn sync_puts_one_object_per_file_and_restore_gives_the_tree_back() {
    let env = TestEnv::new();
    sample(&env);
    let place = Place::new(&env, "tree");
    let url = place.url("notes");
    place.ok(&["sync".as_ref(), env.src.as_os_str(), url.as_ref()]);

    // What a plain client sees: one object per file at prefix/REL, the folder markers.
    let keys = place.keys("notes");
    for key in [
        "a.txt",
        "docs/b c.md",
        "docs/deep/d.bin",
        "bin/run.sh",
        "link",
    ] {
        assert!(keys.iter().any(|k| k == key), "{key} not in {keys:?}");
    }
    assert!(
        keys.iter().any(|k| k == "empty/"),
        "no marker for empty/: {keys:?}"
    );
    assert_eq!(
        place.server.get(&place.bucket, "notes/docs/b c.md"),
        b"bravo charlie"
    );
    // Mode and mtime ride along as user metadata, as rclone reads them.
    let head = place.server.head(&place.bucket, "notes/bin/run.sh");
    assert_eq!(head.metadata.get("mode").map(String::as_str), Some("750"));
    let mtime = fs::metadata(env.src.join("bin/run.sh"))
        .unwrap()
        .modified()
        .unwrap();
    let secs = mtime
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        head.metadata
            .get("mtime")
            .is_some_and(|m| m.starts_with(&secs.to_string())),
        "{:?}",
        head.metadata
    );
    let link = place.server.head(&place.bucket, "notes/link");
    assert_eq!(
        link.metadata.get("kind").map(String::as_str),
        Some("symlink")
    );

    // datasafe's own way back: the same tree, modes, mtimes and the symlink.
    let back = place.restore("notes", "back");
    assert_same_trees(&snapshot(&env.src, false), &snapshot(&back, false));
}

/// The issue: "S3 keeps all of it in the index and in object metadata". Run as root, an
/// owner rides as `uid`/`gid` user metadata (rclone's names); a chown alone rewrites the
/// metadata without a version.
#[test]
fn owners_ride_as_uid_and_gid_metadata_and_a_chown_alone_is_an_update() {
    if !crate::common::is_root() {
        eprintln!("skipped: owners are mirrored only when run as root");
        return;
    }
    let env = TestEnv::new();
    env.write("d/theirs.txt", "nobody's");
    env.write("mine.txt", "root's");
    for rel in ["d", "d/theirs.txt"] {
        std::os::unix::fs::lchown(env.src.join(rel), Some(65534), Some(65533)).unwrap();
    }
    let place = Place::new(&env, "owners");
    let url = place.url("o");
    place.ok(&["sync".as_ref(), env.src.as_os_str(), url.as_ref()]);
    let ids = |key: &str| {
        let head = place.server.head(&place.bucket, key);
        (
            head.metadata.get("uid").cloned(),
            head.metadata.get("gid").cloned(),
        )
    };
    let some = |u: &str, g: &str| (Some(u.to_string()), Some(g.to_string()));
    assert_eq!(ids("o/d/theirs.txt"), some("65534", "65533"));
    // A folder's owner is in the index (and in its marker's metadata where the server
    // keeps a marker's: SeaweedFS keeps none for a folder, not even its mode).
    assert_eq!(ids("o/mine.txt"), some("0", "0"));
    std::os::unix::fs::lchown(env.src.join("mine.txt"), Some(1234), Some(4321)).unwrap();
    let out = place.ok(&["sync".as_ref(), env.src.as_os_str(), url.as_ref()]);
    assert_eq!(
        crate::common::count(&out, "Files backed up"),
        0,
        "{}",
        stdout(&out)
    );
    assert_eq!(crate::common::count(&out, "Updated"), 1, "{}", stdout(&out));
    assert_eq!(ids("o/mine.txt"), some("1234", "4321"));
    assert!(
        !place
            .keys("o")
            .iter()
            .any(|k| k.starts_with(".datasafe/versions/")),
        "a chown alone kept a version: {:?}",
        place.keys("o")
    );
}

/// Issue 16: a file's extended attributes ride in its object's metadata (`xattrs`) as
/// well as in the index; a change of attribute alone, or of mode, rewrites the metadata
/// keeping the rest, with no copy and no version; `verify` compares them; a restore
/// gives them back; a set too large for S3's 2 KB of metadata is said, naming the file,
/// and kept in the index.
#[test]
fn xattrs_ride_in_object_metadata_and_a_change_alone_is_an_update() {
    let env = TestEnv::new();
    env.write("a.txt", "attributed");
    env.write("big.txt", "too many attributes for metadata");
    let probe = env.src.join("a.txt");
    if let Err(e) = xattr::set(&probe, "user.color", b"red") {
        eprintln!("skipped: the source's filesystem takes no user.* attributes ({e})");
        return;
    }
    xattr::set(env.src.join("big.txt"), "user.big", &[b'x'; 1800]).unwrap();
    let place = Place::new(&env, "xattrs");
    let url = place.url("x");
    let sync = || place.ok(&["sync", "--xattrs", env.src.to_str().unwrap(), url.as_str()]);
    let out = sync();
    let warned = format!(
        "the extended attributes of {url}/big.txt take 2424 bytes, more than S3 object \
         metadata holds: they are kept in the index only"
    );
    assert!(stderr(&out).contains(&warned), "{}", stderr(&out));
    let meta = |key: &str| place.server.head(&place.bucket, key).metadata;
    let first = meta("x/a.txt");
    let red = first.get("xattrs").cloned().expect("no xattrs metadata");
    assert!(!meta("x/big.txt").contains_key("xattrs"));

    // An attribute alone: the metadata changes, nothing is copied or kept.
    xattr::set(&probe, "user.color", b"blue").unwrap();
    let out = sync();
    assert_eq!(
        crate::common::count(&out, "Files backed up"),
        0,
        "{}",
        stdout(&out)
    );
    assert_eq!(crate::common::count(&out, "Updated"), 1, "{}", stdout(&out));
    let blue = meta("x/a.txt").get("xattrs").cloned().unwrap();
    assert_ne!(blue, red);
    // A mode alone keeps the attributes in the metadata.
    fs::set_permissions(&probe, fs::Permissions::from_mode(0o600)).unwrap();
    sync();
    let after = meta("x/a.txt");
    assert_eq!(after.get("mode").map(String::as_str), Some("600"));
    assert_eq!(after.get("xattrs"), Some(&blue));
    assert!(
        !place
            .keys("x")
            .iter()
            .any(|k| k.starts_with(".datasafe/versions/")),
        "an attribute or mode change kept a version: {:?}",
        place.keys("x")
    );

    assert_code(&place.run(&["verify", url.as_str()]), 0);
    let back = env.dir.path().join("back");
    place.ok(&["restore", url.as_str(), back.to_str().unwrap()]);
    assert_eq!(
        xattr::get(back.join("a.txt"), "user.color").unwrap(),
        Some(b"blue".to_vec())
    );
    assert_eq!(
        xattr::get(back.join("big.txt"), "user.big").unwrap(),
        Some(vec![b'x'; 1800])
    );
}

#[test]
fn changes_are_mirrored_and_replaced_or_deleted_files_are_kept_as_versions() {
    let env = TestEnv::new();
    env.write("keep.txt", "same");
    env.write("edit.txt", "first");
    env.write("gone.txt", "doomed");
    let place = Place::new(&env, "versions");
    let url = place.url("m");
    place.ok(&["sync".as_ref(), env.src.as_os_str(), url.as_ref()]);

    // Not the same second: versions are named by the time.
    std::thread::sleep(Duration::from_millis(1100));
    env.write("edit.txt", "second, longer");
    fs::remove_file(env.src.join("gone.txt")).unwrap();
    env.write("new.txt", "fresh");
    let out = place.ok(&["sync".as_ref(), env.src.as_os_str(), url.as_ref()]);
    assert!(
        stdout(&out).contains("Kept version: edit.txt"),
        "{}",
        stdout(&out)
    );

    let keys = place.keys("m");
    assert!(keys.contains(&"new.txt".to_string()) && !keys.contains(&"gone.txt".to_string()));
    assert_eq!(
        place.server.get(&place.bucket, "m/edit.txt"),
        b"second, longer"
    );
    // The old contents are objects under .datasafe/versions, copied on the server.
    let versions: Vec<String> = place
        .server
        .list_keys(&place.bucket, "m/.datasafe/versions/", 1000)
        .into_iter()
        .map(|o| o.key)
        .filter(|k| !k.ends_with('/'))
        .collect();
    assert_eq!(versions.len(), 2, "{versions:?}");
    let old: Vec<Vec<u8>> = versions
        .iter()
        .map(|k| place.server.get(&place.bucket, k))
        .collect();
    assert!(old.contains(&b"first".to_vec()) && old.contains(&b"doomed".to_vec()));

    let listed = stdout(&place.ok(&["versions".as_ref(), url.as_ref() as &OsStr]));
    assert!(
        listed.contains("edit.txt") && listed.contains("gone.txt"),
        "{listed}"
    );
    let back = place.restore("m", "back");
    assert_same_trees(&snapshot(&env.src, false), &snapshot(&back, false));
}

#[test]
fn compress_stores_gzip_objects_that_restore_to_the_original() {
    let env = TestEnv::new();
    env.write("log.txt", "line\n".repeat(5000));
    env.write("sub/x.csv", "1,2,3\n");
    let place = Place::new(&env, "gz");
    let url = place.url("z");
    place.ok(&[
        "sync".as_ref(),
        "--compress".as_ref(),
        env.src.as_os_str(),
        url.as_ref(),
    ]);
    let keys = place.keys("z");
    assert!(keys.contains(&"log.txt.gz".to_string()), "{keys:?}");
    let stored = place.server.get(&place.bucket, "z/log.txt.gz");
    assert_eq!(&stored[..2], &[0x1f, 0x8b]);
    assert!(stored.len() < 25_000 / 10);
    let back = place.restore("z", "back");
    assert_eq!(
        fs::read_to_string(back.join("log.txt")).unwrap(),
        "line\n".repeat(5000)
    );
    assert_eq!(
        fs::read_to_string(back.join("sub/x.csv")).unwrap(),
        "1,2,3\n"
    );
}

#[test]
fn a_file_bigger_than_one_request_goes_up_in_parts_and_comes_back_whole() {
    let env = TestEnv::new();
    let data: Vec<u8> = (0..20 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    env.write("big.bin", &data);
    let place = Place::new(&env, "big");
    let url = place.url("b");
    place.ok(&["sync".as_ref(), env.src.as_os_str(), url.as_ref()]);
    // A multipart upload's ETag ends with the number of parts.
    let head = place.server.head(&place.bucket, "b/big.bin");
    assert_eq!(head.size, data.len() as u64);
    assert!(
        head.etag.as_deref().is_some_and(|e| e.contains('-')),
        "{head:?}"
    );
    assert!(
        place
            .server
            .list_multipart_uploads(&place.bucket)
            .is_empty()
    );
    let back = place.restore("b", "back");
    assert!(fs::read(back.join("big.bin")).unwrap() == data);
    let out = place.ok(&["verify".as_ref(), url.as_ref() as &OsStr]);
    assert!(stdout(&out).contains("Damaged: 0"), "{}", stdout(&out));
}

#[test]
fn an_upload_a_killed_run_left_unfinished_is_aborted_by_the_next_run() {
    let env = TestEnv::new();
    env.write("a.txt", "a");
    let place = Place::new(&env, "orphan");
    let url = place.url("p");
    place.ok(&["sync".as_ref(), env.src.as_os_str(), url.as_ref()]);
    // What a run killed in the middle of a multipart upload leaves behind.
    let id = place
        .server
        .create_multipart_upload(&place.bucket, "p/huge.iso");
    place.server.upload_part(
        &place.bucket,
        "p/huge.iso",
        &id,
        1,
        &vec![1u8; 5 * 1024 * 1024],
    );
    assert_eq!(place.server.list_multipart_uploads(&place.bucket).len(), 1);
    env.write("b.txt", "b");
    let out = place.ok(&["sync".as_ref(), env.src.as_os_str(), url.as_ref()]);
    assert!(
        place
            .server
            .list_multipart_uploads(&place.bucket)
            .is_empty(),
        "{}",
        stderr(&out)
    );
    // Nothing new became visible under that name.
    assert!(!place.keys("p").contains(&"huge.iso".to_string()));
}

#[test]
fn another_machine_restores_and_verifies_from_the_bucket_alone() {
    let env = TestEnv::new();
    sample(&env);
    let place = Place::new(&env, "machine");
    let url = place.url("m");
    place.ok(&["sync".as_ref(), env.src.as_os_str(), url.as_ref()]);
    let other = place.elsewhere("state-other");
    let out = other.ok(&["verify".as_ref(), url.as_ref() as &OsStr]);
    assert!(
        stdout(&out).contains("Damaged: 0, Missing: 0"),
        "{}",
        stdout(&out)
    );
    let back = other.restore("m", "back");
    assert_same_trees(&snapshot(&env.src, false), &snapshot(&back, false));
}

#[test]
fn verify_finds_an_object_changed_behind_datasafes_back() {
    let env = TestEnv::new();
    env.write("a.txt", "original");
    env.write("b.txt", "untouched");
    let place = Place::new(&env, "rot");
    let url = place.url("v");
    place.ok(&["sync".as_ref(), env.src.as_os_str(), url.as_ref()]);
    place.server.put(&place.bucket, "v/a.txt", b"tampered");
    let out = place.run(&["verify".as_ref(), url.as_ref() as &OsStr]);
    assert_code(&out, 1);
    assert!(stdout(&out).contains("a.txt"), "{}", stdout(&out));
}

/// The default verify of a bucket is its listing: an intact mirror is checked without
/// downloading a byte (each object's ETag and size match what the index recorded);
/// `--deep` downloads and hashes every file. A same-size edit behind datasafe's back
/// changes the ETag, so the listing sends that object to be read and it is found; a
/// removed object is missing and a stray one is not in the index.
#[test]
fn verify_checks_a_listing_by_default_and_downloads_everything_with_deep() {
    let env = TestEnv::new();
    sample(&env);
    env.write("same.txt", "original");
    fs::write(env.src.join("big.bin"), vec![5u8; 9 * 1024 * 1024]).unwrap();
    let place = Place::new(&env, "quick");
    let url = place.url("q");
    place.ok(&["sync".as_ref(), env.src.as_os_str(), url.as_ref()]);
    let bytes: u64 = walkdir::WalkDir::new(&env.src)
        .into_iter()
        .map(Result::unwrap)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.metadata().unwrap().len())
        .sum();

    let quick = place.ok(&["verify".as_ref(), url.as_ref() as &OsStr]);
    let text = stdout(&quick);
    assert!(text.contains("Damaged: 0, Missing: 0"), "{text}");
    assert!(text.contains("Bytes checked: 0 "), "{text}");
    let deep = place.ok(&["verify", "--deep", &url]);
    let text = stdout(&deep);
    assert!(text.contains(&format!("Bytes checked: {bytes} ")), "{text}");

    place.server.put(&place.bucket, "q/same.txt", b"tampere!");
    place.server.delete(&place.bucket, "q/a.txt");
    place.server.put(&place.bucket, "q/stray", b"zz");
    let out = place.run(&["verify".as_ref(), url.as_ref() as &OsStr]);
    assert_code(&out, 1);
    let text = stdout(&out);
    assert!(text.contains("damaged: same.txt"), "{text}");
    assert!(text.contains("missing: a.txt"), "{text}");
    assert!(text.contains("not in index: stray"), "{text}");
    // Only the object whose ETag no longer matched was downloaded.
    assert!(text.contains("Bytes checked: 8 "), "{text}");
}

#[test]
fn a_prefix_another_live_writer_holds_is_refused_with_its_holder() {
    let env = TestEnv::new();
    env.write("a.txt", "a");
    let place = Place::new(&env, "lease");
    let url = place.url("l");
    // A lease of a live process of this machine (this test's own).
    let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let lease = format!(
        "{} {} 2026-12-06 12:00:00\n",
        std::process::id(),
        host.trim()
    );
    place
        .server
        .put(&place.bucket, "l/.datasafe/lock", lease.as_bytes());
    let out = place.run(&["sync".as_ref(), env.src.as_os_str(), url.as_ref()]);
    assert_code(&out, 2);
    let err = stderr(&out);
    assert!(
        err.contains("held by another datasafe process")
            && err.contains(&std::process::id().to_string()),
        "{err}"
    );
    // A lease left by a process that is gone is taken over.
    let dead = format!("999999999 {} 2026-12-06 12:00:00\n", host.trim());
    place
        .server
        .put(&place.bucket, "l/.datasafe/lock", dead.as_bytes());
    let out = place.ok(&["sync".as_ref(), env.src.as_os_str(), url.as_ref()]);
    assert!(stderr(&out).contains("stale lock"), "{}", stderr(&out));
    assert!(place.keys("l").contains(&"a.txt".to_string()));
}

#[test]
fn a_missing_bucket_bad_credentials_and_a_closed_port_are_one_line_each() {
    let env = TestEnv::new();
    env.write("a.txt", "a");
    let place = Place::new(&env, "errors");
    let src = env.src.as_os_str();

    let out = place.run(&["sync".as_ref(), src, "s3://no-such-bucket-here/x".as_ref()]);
    assert_code(&out, 2);
    let err = stderr(&out);
    assert!(
        err.contains("no-such-bucket-here") && err.contains("does not exist"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    let url = place.url("x");
    let mut cmd = place.cmd(&["sync".as_ref(), src, url.as_ref()]);
    let out = cmd.env("AWS_SECRET_ACCESS_KEY", "wrong").output().unwrap();
    assert_code(&out, 2);
    let err = stderr(&out);
    assert!(err.contains("refused the credentials"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    // Nothing listens there: refused at once, said once (after the SDK's retries).
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let started = Instant::now();
    let endpoint = format!("--s3-endpoint=http://127.0.0.1:{port}");
    let out = place.run(&["sync".as_ref(), endpoint.as_ref(), src, url.as_ref()]);
    assert_code(&out, 2);
    let err = stderr(&out);
    assert!(
        err.contains("cannot reach") && err.contains(&port.to_string()),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
}

/// A `watch` child, stopped (SIGTERM) and reaped when dropped.
struct Watching(Child);

impl Drop for Watching {
    fn drop(&mut self) {
        // SAFETY: signalling a child of this process.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

#[test]
fn watch_mirrors_creates_edits_renames_and_deletes_into_the_bucket() {
    let _guard = crate::common::watcher::shared();
    let env = TestEnv::new();
    env.write("d/x.txt", "x");
    env.write("f.txt", "f");
    let place = Place::new(&env, "watch");
    let url = place.url("w");
    let child = place
        .cmd(&[
            "watch".as_ref(),
            "--debounce=50ms".as_ref(),
            env.src.as_os_str(),
            url.as_ref(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _watching = Watching(child);
    let has = |key: &str| place.keys("w").iter().any(|k| k == key);
    assert!(
        wait_until(DEADLINE, || has("d/x.txt") && has("f.txt")),
        "{:?}",
        place.keys("w")
    );

    env.write("new.txt", "new");
    fs::rename(env.src.join("d"), env.src.join("e")).unwrap();
    fs::remove_file(env.src.join("f.txt")).unwrap();
    env.write("e/x.txt", "edited");
    assert!(
        wait_until(DEADLINE, || {
            has("new.txt")
                && has("e/x.txt")
                && !has("d/x.txt")
                && !has("f.txt")
                && place
                    .server
                    .try_get(&place.bucket, "w/e/x.txt")
                    .ok()
                    .as_deref()
                    == Some(b"edited".as_slice())
        }),
        "{:?}",
        place.keys("w")
    );
}

#[test]
fn a_second_sync_with_nothing_changed_copies_nothing() {
    let env = TestEnv::new();
    sample(&env);
    let place = Place::new(&env, "noop");
    let url = place.url("n");
    place.ok(&["sync".as_ref(), env.src.as_os_str(), url.as_ref()]);
    // Changed behind datasafe's back: a pass that trusts its index does not look at
    // the objects, so it neither notices nor rewrites this one.
    place
        .server
        .put(&place.bucket, "n/a.txt", b"behind its back");
    let out = place.ok(&["sync".as_ref(), env.src.as_os_str(), url.as_ref()]);
    assert!(
        stdout(&out).contains("Files backed up: 0"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        place.server.get(&place.bucket, "n/a.txt"),
        b"behind its back"
    );
}

#[test]
fn a_repair_of_an_intact_mirror_rewrites_nothing_and_tells_links_from_files() {
    let env = TestEnv::new();
    sample(&env);
    let place = Place::new(&env, "repair");
    let url = place.url("r");
    place.ok(&["sync".as_ref(), env.src.as_os_str(), url.as_ref()]);
    // A listing shows no metadata: the symlink must not pass for a file.
    let out = place.ok(&[
        "sync".as_ref(),
        "--repair".as_ref(),
        env.src.as_os_str(),
        url.as_ref(),
    ]);
    let said = format!("{}{}", stdout(&out), stderr(&out));
    assert!(!said.contains("writing it again"), "{said}");
    assert!(stdout(&out).contains("Files backed up: 0"), "{said}");
    // A file removed behind datasafe's back is written again.
    place.server.delete(&place.bucket, "r/a.txt");
    place.ok(&[
        "sync".as_ref(),
        "--repair".as_ref(),
        env.src.as_os_str(),
        url.as_ref(),
    ]);
    assert_eq!(place.server.get(&place.bucket, "r/a.txt"), b"alpha");
}

#[test]
fn a_name_that_is_not_utf8_is_refused_with_one_line_and_the_rest_is_mirrored() {
    use std::os::unix::ffi::OsStrExt;
    let env = TestEnv::new();
    env.write("fine.txt", "fine");
    fs::write(env.src.join(OsStr::from_bytes(b"bad\xffname")), "x").unwrap();
    let place = Place::new(&env, "utf8");
    let url = place.url("u");
    let out = place.run(&["sync".as_ref(), env.src.as_os_str(), url.as_ref()]);
    assert_code(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains("not valid UTF-8") && err.contains("rename it"),
        "{err}"
    );
    assert_eq!(
        err.lines().filter(|l| l.contains("UTF-8")).count(),
        1,
        "{err}"
    );
    assert_eq!(place.keys("u"), ["fine.txt"]);
}

#[test]
fn toggling_compress_converts_the_objects_without_counting_deletions() {
    let env = TestEnv::new();
    env.write("docs/a.txt", "alpha");
    env.write("already.gz", "not really gzip");
    let place = Place::new(&env, "toggle");
    let url = place.url("t");
    let src = env.src.as_os_str();
    place.ok(&["sync".as_ref(), src, url.as_ref()]);
    let out = place.ok(&["sync".as_ref(), "--compress".as_ref(), src, url.as_ref()]);
    assert!(
        stdout(&out).contains("gzipped docs/a.txt"),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("Deleted: 0"), "{}", stdout(&out));
    let mut keys = place.keys("t");
    keys.retain(|k| !k.ends_with('/'));
    keys.sort();
    assert_eq!(keys, ["already.gz.gz", "docs/a.txt.gz"]);
    place.ok(&["sync".as_ref(), src, url.as_ref()]);
    let mut keys = place.keys("t");
    keys.retain(|k| !k.ends_with('/'));
    keys.sort();
    assert_eq!(keys, ["already.gz", "docs/a.txt"]);
    let back = place.restore("t", "back");
    assert_same_trees(&snapshot(&env.src, false), &snapshot(&back, false));
}

/// A folder renamed under a watcher is moved in a bucket by copying each object, then
/// deleting the old ones; the index records the intent before the first copy. A watcher
/// SIGKILLed between the copies and the deletion leaves both names in the bucket: the
/// next run finishes the move — no old name counted as a deletion or kept as a version,
/// and the deletion guard (which a whole folder's worth of deletions trips) not in the
/// way — and the bucket restores to the source. (That run compares with a listing, as
/// after any run that did not finish, so it uploads the moved files once more.)
#[test]
fn a_folder_move_killed_halfway_is_finished_by_the_next_run() {
    let _guard = crate::common::watcher::shared();
    let env = TestEnv::new();
    for i in 0..1500 {
        env.write(format!("old/f{i:04}.txt"), format!("file {i}"));
    }
    let place = Place::new(&env, "halfway");
    let url = place.url("h");
    place.ok(&["sync".as_ref(), env.src.as_os_str(), url.as_ref()]);
    let out_file = env.dir.path().join("watch.out");
    let child = place
        .cmd(&[
            "watch".as_ref(),
            "--debounce=50ms".as_ref(),
            env.src.as_os_str(),
            url.as_ref(),
        ])
        .stdout(fs::File::create(&out_file).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut watching = Watching(child);
    // Once its start-up pass is over: a rename during the pass is mirrored by the pass
    // (copies, and deletions after its walk), not by the move this test is about.
    assert!(wait_until(DEADLINE, || fs::read_to_string(&out_file)
        .is_ok_and(|t| t.contains("is mirrored"))));

    fs::rename(env.src.join("old"), env.src.join("new")).unwrap();
    let under = |prefix: &str| place.server.list_keys(&place.bucket, prefix, 1000).len();
    let copying = wait_until(DEADLINE, || under("h/new/") > 0);
    // SAFETY: signalling a child of this process.
    unsafe { libc::kill(watching.0.id() as i32, libc::SIGKILL) };
    let _ = watching.0.wait();
    assert!(copying, "the move never started");
    assert!(under("h/old/") > 0, "the kill came after the move was done");

    let out = place.ok(&["sync".as_ref(), env.src.as_os_str(), url.as_ref()]);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(text.contains("finished moving"), "{text}");
    assert!(text.contains("Deleted: 0"), "{text}");
    assert_eq!(under("h/old/"), 0);
    assert_eq!(under("h/.datasafe/versions/"), 0);
    let back = place.restore("h", "back");
    assert_same_trees(&snapshot(&env.src, false), &snapshot(&back, false));
}
