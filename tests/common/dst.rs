//! The kind of DST a behaviour test runs against ([`Dst`]): a local folder, the same
//! folder reached over SFTP through a real sshd on 127.0.0.1, or a prefix `dst` in a
//! bucket of the shared SeaweedFS. For the first two the mirror is a folder on this
//! machine (`TestEnv::dst`); only what datasafe is given differs ([`TestEnv::dst_arg`]:
//! the path, `sftp://…` for it, or `s3://BUCKET/dst`) and what its commands get in their
//! environment (the ssh command or the `AWS_*` variables, and an `XDG_STATE_HOME` of the
//! test's own, where a remote mirror's index lives).
//!
//! A test looks at the mirror in two ways that hold for every kind. The whole tree, as
//! datasafe gives it back ([`TestEnv::try_tree`]: a bucket through `datasafe restore`),
//! and single names through the `dst_*` methods ([`TestEnv::dst_read`],
//! [`TestEnv::dst_has`], …): on disk for a folder, and for a bucket through the plain S3
//! client of `seaweed` (a GET, a HEAD, a ListObjectsV2 of `dst/REL`), never through
//! datasafe, so the keys and their metadata are checked as another S3 tool sees them.
//! The same methods put and remove names behind datasafe's back.
//!
//! What an SFTP mirror cannot carry, the comparison leaves out for it ([`Dst::coarse`]):
//! SFTP version 3 sets mtimes in whole seconds, and cannot set a symlink's own mtime.
//!
//! The servers are shared: [`shared_sshd`] hands every test that runs meanwhile the same
//! one, and the last test to let go of it stops it (a `static` would outlive the test
//! process: statics are never dropped, so its sshd would keep running). A test that kills
//! or restarts its server starts one of its own with `Sshd::start`.

use super::seaweed::{S3Endpoint, Seaweed};
use super::sshd::Sshd;
use super::{Node, TestEnv, try_snapshot};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// Where a test's mirror is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dst {
    /// `TestEnv::dst` as a local path.
    Local,
    /// `TestEnv::dst` as `sftp://USER@127.0.0.1:PORT/abs/path`, through a shared sshd.
    Sftp,
    /// `s3://BUCKET/dst` on the shared SeaweedFS: the mirror is not a folder here, so
    /// a test sees it through `datasafe restore` into a new folder ([`TestEnv::try_tree`]).
    S3,
}

impl Dst {
    /// True for a DST reached over the network (SFTP, S3): its index is local and
    /// authoritative, so a pass that trusts it lists nothing there, and what changed
    /// behind datasafe's back is found by `--repair` (or `verify`).
    pub fn is_remote(self) -> bool {
        self != Dst::Local
    }

    /// `tree` as far as this kind of DST can mirror it: for SFTP, file mtimes truncated
    /// to the second and symlink mtimes left out (set to zero). Applied to both sides of
    /// a comparison.
    pub fn coarse(self, tree: BTreeMap<PathBuf, Node>) -> BTreeMap<PathBuf, Node> {
        if self != Dst::Sftp {
            return tree;
        }
        tree.into_iter()
            .map(|(k, node)| {
                let node = match node {
                    Node::File {
                        content,
                        mode,
                        mtime,
                    } => Node::File {
                        content,
                        mode,
                        mtime: (mtime.0, 0),
                    },
                    Node::Link { target, .. } => Node::Link {
                        target,
                        mtime: (0, 0),
                    },
                    dir => dir,
                };
                (k, node)
            })
            .collect()
    }
}

/// The sshd every test running now shares (started if none runs); it stops when the
/// last holder drops its `Arc`.
pub fn shared_sshd() -> Arc<Sshd> {
    static SHARED: Mutex<Weak<Sshd>> = Mutex::new(Weak::new());
    let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(sshd) = shared.upgrade() {
        return sshd;
    }
    let sshd = Arc::new(Sshd::start());
    *shared = Arc::downgrade(&sshd);
    sshd
}

impl TestEnv {
    /// A test tree whose DST is of kind `dst` (for SFTP, on the shared server).
    pub fn on(dst: Dst) -> TestEnv {
        match dst {
            Dst::Local => TestEnv::new(),
            Dst::Sftp => TestEnv::on_sshd(shared_sshd()),
            Dst::S3 => TestEnv::on_s3(),
        }
    }

    /// A test tree whose DST is `s3://BUCKET/dst`, a new bucket on the shared SeaweedFS.
    pub fn on_s3() -> TestEnv {
        let mut env = TestEnv::new();
        env.bucket = Some(Seaweed::shared().new_bucket("env"));
        env
    }

    /// A test tree whose DST is `dst/` over SFTP through `sshd`.
    pub fn on_sshd(sshd: Arc<Sshd>) -> TestEnv {
        let mut env = TestEnv::new();
        env.sshd = Some(sshd);
        env
    }

    /// The kind of DST this tree's commands are given.
    pub fn kind(&self) -> Dst {
        match (&self.sshd, &self.bucket) {
            (Some(_), _) => Dst::Sftp,
            (None, Some(_)) => Dst::S3,
            (None, None) => Dst::Local,
        }
    }

    /// DST as datasafe is given it: the local path, or its `sftp://` URL.
    pub fn dst_arg(&self) -> OsString {
        self.dst_arg_of(&self.dst)
    }

    /// `path` (a folder on this machine) as this tree's kind of DST names it.
    pub fn dst_arg_of(&self, path: &Path) -> OsString {
        if let Some(bucket) = &self.bucket {
            // The folder's place in the test's folder is the prefix.
            let rel = path.strip_prefix(self.dir.path()).unwrap_or(path);
            return format!("s3://{bucket}/{}", rel.display()).into();
        }
        match &self.sshd {
            Some(sshd) => sshd.url(path).into(),
            None => path.as_os_str().to_owned(),
        }
    }

    /// The folder where a command of this tree keeps its state (`XDG_STATE_HOME`) when
    /// DST is remote: the remote mirror's authoritative index is under it.
    pub fn state_home(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Gives `cmd` what a remote DST needs: the ssh command and the state folder.
    /// Nothing for a local DST (its commands run as they always did).
    pub fn set_dst_env<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        if let Some(sshd) = &self.sshd {
            sshd.set_env(cmd);
            cmd.env("XDG_STATE_HOME", self.state_home());
        }
        if self.bucket.is_some() {
            Seaweed::shared().set_env(cmd);
            cmd.env("XDG_STATE_HOME", self.state_home());
        }
        cmd
    }

    /// The tree under `root` as this kind of DST can mirror it ([`Dst::coarse`]); `None`
    /// if it changed under the walk.
    pub fn try_tree(&self, root: &Path, gz: bool) -> Option<BTreeMap<PathBuf, Node>> {
        if self.bucket.is_some() && !root.starts_with(&self.src) {
            return self.restored(root);
        }
        try_snapshot(root, gz).map(|t| self.kind().coarse(t))
    }

    /// The bucket mirror named by the folder `root` as `datasafe restore` gives it back
    /// into a new folder (gzipped files come back plain); `None` if it cannot.
    fn restored(&self, root: &Path) -> Option<BTreeMap<PathBuf, Node>> {
        static RESTORES: AtomicU64 = AtomicU64::new(0);
        let n = RESTORES.fetch_add(1, Ordering::Relaxed);
        let to = self.dir.path().join(format!("restored-{n}"));
        let out = self
            .cmd([
                OsString::from("restore"),
                self.dst_arg_of(root),
                to.clone().into(),
            ])
            .output()
            .ok()?;
        let tree = match out.status.success() {
            true => try_snapshot(&to, false),
            false => None,
        };
        let _ = std::fs::remove_dir_all(&to);
        tree
    }

    /// True if DST mirrors SRC right now, as far as this kind of DST can.
    pub fn is_mirrored(&self, gz: bool) -> bool {
        match (
            self.try_tree(&self.src, false),
            self.try_tree(&self.dst, gz),
        ) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        }
    }

    /// Asserts DST mirrors SRC, as far as this kind of DST can, listing every difference.
    pub fn assert_mirrored(&self, gz: bool) {
        let a = self.kind().coarse(super::snapshot(&self.src, false));
        let b = match self.bucket.is_some() {
            true => self
                .restored(&self.dst)
                .expect("the bucket mirror restores"),
            false => self.kind().coarse(super::snapshot(&self.dst, gz)),
        };
        super::assert_same_trees(&a, &b);
    }
}

/// Single names of the mirror, read and changed as another tool would: files on disk for
/// a folder (local or SFTP), the plain S3 client for a bucket. `rel` is relative to DST
/// (`docs/a.txt`, `.datasafe/index.db`); in a bucket it is the key `dst/REL`.
impl TestEnv {
    /// The key of `rel` in this tree's bucket (`dst/REL`).
    pub fn key(&self, rel: impl AsRef<Path>) -> String {
        let rel = rel.as_ref().display().to_string();
        match rel.is_empty() {
            true => "dst/".to_owned(),
            false => format!("dst/{rel}"),
        }
    }

    /// The bytes of the file `rel` in the mirror (a bucket: a plain GET of its key);
    /// `None` if there is none.
    pub fn dst_read(&self, rel: impl AsRef<Path>) -> Option<Vec<u8>> {
        match &self.bucket {
            Some(bucket) => Seaweed::shared().try_get(bucket, &self.key(rel)).ok(),
            None => std::fs::read(self.dst.join(rel)).ok(),
        }
    }

    /// True if the mirror holds `rel` as a file, folder or link (a bucket: its key, or
    /// any key below `rel/`, a folder's marker included).
    pub fn dst_has(&self, rel: impl AsRef<Path>) -> bool {
        let Some(bucket) = &self.bucket else {
            return self.dst.join(rel).exists();
        };
        let key = self.key(rel);
        let folder = match key.ends_with('/') {
            true => key.clone(),
            false => format!("{key}/"),
        };
        Seaweed::shared()
            .list_keys(bucket, &key, 1000)
            .iter()
            .any(|o| o.key == key || o.key.starts_with(&folder))
    }

    /// Puts `data` at `rel` in the mirror behind datasafe's back (its folders made on
    /// disk; a plain PUT without metadata in a bucket).
    pub fn dst_put(&self, rel: impl AsRef<Path>, data: impl AsRef<[u8]>) {
        match &self.bucket {
            Some(bucket) => Seaweed::shared().put(bucket, &self.key(rel), data.as_ref()),
            None => {
                let path = self.dst.join(rel);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, data).unwrap();
            }
        }
    }

    /// Removes the file `rel` from the mirror behind datasafe's back; panics if it is
    /// not there.
    pub fn dst_remove(&self, rel: impl AsRef<Path>) {
        match &self.bucket {
            Some(bucket) => {
                let key = self.key(&rel);
                assert!(self.dst_read(&rel).is_some(), "no object {key} to remove");
                Seaweed::shared().delete(bucket, &key);
            }
            None => std::fs::remove_file(self.dst.join(rel)).unwrap(),
        }
    }

    /// Every file and symlink under the mirror's folder `rel` (`""`: the whole mirror,
    /// its `.datasafe` left out), relative to that folder, sorted. In a bucket: every
    /// key below it but folder markers (a plain listing).
    pub fn dst_files(&self, rel: impl AsRef<Path>) -> Vec<PathBuf> {
        let rel = rel.as_ref();
        let top = rel.as_os_str().is_empty();
        let mut found: Vec<PathBuf> = match &self.bucket {
            Some(bucket) => {
                let root = match top {
                    true => self.key(rel),
                    false => format!("{}/", self.key(rel)),
                };
                Seaweed::shared()
                    .list_keys(bucket, &root, 1000)
                    .into_iter()
                    .map(|o| o.key[root.len()..].to_owned())
                    .filter(|k| !k.is_empty() && !k.ends_with('/'))
                    .filter(|k| !(top && k.starts_with(".datasafe/")))
                    .map(PathBuf::from)
                    .collect()
            }
            None => {
                let root = self.dst.join(rel);
                walkdir::WalkDir::new(&root)
                    .into_iter()
                    .filter_entry(|e| !(top && e.depth() == 1 && e.file_name() == ".datasafe"))
                    .filter_map(Result::ok)
                    .filter(|e| !e.file_type().is_dir())
                    .map(|e| e.path().strip_prefix(&root).unwrap().to_path_buf())
                    .collect()
            }
        };
        found.sort();
        found
    }

    /// The permission bits of `rel` in the mirror (a bucket: `x-amz-meta-mode` of its
    /// object, from a plain HEAD). Not for a folder in a bucket: SeaweedFS 4.48 keeps
    /// no user metadata on a marker `KEY/` (it is a folder of its filer), so there a
    /// folder's mode is seen only through restore, from datasafe's index.
    pub fn dst_mode(&self, rel: impl AsRef<Path>) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        let Some(bucket) = &self.bucket else {
            let meta = std::fs::symlink_metadata(self.dst.join(rel)).unwrap();
            return meta.permissions().mode() & 0o7777;
        };
        let key = self.key(&rel);
        let head = Seaweed::shared().head(bucket, &key);
        let mode = head.metadata.get("mode");
        u32::from_str_radix(mode.map_or("", String::as_str), 8)
            .unwrap_or_else(|_| panic!("no octal x-amz-meta-mode on {key}: {head:?}"))
    }

    /// The target of the symlink `rel` in the mirror (a bucket: the body of an object
    /// marked `x-amz-meta-kind: symlink`); `None` if it is no symlink.
    pub fn dst_link(&self, rel: impl AsRef<Path>) -> Option<PathBuf> {
        let Some(bucket) = &self.bucket else {
            return std::fs::read_link(self.dst.join(rel)).ok();
        };
        let key = self.key(&rel);
        let s3 = Seaweed::shared();
        let body = s3.try_get(bucket, &key).ok()?;
        let link = s3.head(bucket, &key).metadata.get("kind").cloned();
        (link.as_deref() == Some("symlink"))
            .then(|| PathBuf::from(String::from_utf8(body).unwrap()))
    }

    /// Everything the mirror holds, `.datasafe` included, one line each with what a
    /// change would alter (on disk: size and mtime, folders too; in a bucket: size,
    /// ETag and LastModified from a plain listing), to show that a command left it
    /// untouched.
    pub fn dst_listing(&self) -> Vec<String> {
        use std::os::unix::fs::MetadataExt;
        match &self.bucket {
            Some(bucket) => Seaweed::shared()
                .list_keys(bucket, "dst/", 1000)
                .into_iter()
                .map(|o| format!("{} {} {:?} {:?}", o.key, o.size, o.etag, o.mtime))
                .collect(),
            None => walkdir::WalkDir::new(&self.dst)
                .sort_by_file_name()
                .into_iter()
                .map(|e| {
                    let e = e.unwrap();
                    let m = e.path().symlink_metadata().unwrap();
                    let size = if m.is_dir() { 0 } else { m.len() };
                    let path = e.path().display();
                    format!("{path} {size} {}.{:09}", m.mtime(), m.mtime_nsec())
                })
                .collect(),
        }
    }

    /// Leaves in the mirror what a run killed in the middle of a write leaves: a temp
    /// file in `DST/.datasafe/tmp`, or in a bucket an unfinished multipart upload (one
    /// part sent) of `dst/torn.bin`.
    pub fn plant_torn_write(&self) {
        match &self.bucket {
            Some(bucket) => {
                let s3 = Seaweed::shared();
                let key = self.key("torn.bin");
                let id = s3.create_multipart_upload(bucket, &key);
                s3.upload_part(bucket, &key, &id, 1, &vec![1u8; 5 * 1024 * 1024]);
            }
            None => std::fs::write(self.dst.join(".datasafe/tmp/123-4.tmp"), "torn").unwrap(),
        }
    }

    /// What is left of torn writes: the entries of `DST/.datasafe/tmp`, or the
    /// bucket's unfinished multipart uploads.
    pub fn torn_writes(&self) -> usize {
        match &self.bucket {
            Some(bucket) => Seaweed::shared().list_multipart_uploads(bucket).len(),
            None => std::fs::read_dir(self.dst.join(".datasafe/tmp"))
                .unwrap()
                .count(),
        }
    }
}
