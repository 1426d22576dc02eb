//! The kind of DST a behaviour test runs against ([`Dst`]): a local folder, or the same
//! folder reached over SFTP through a real sshd on 127.0.0.1. Either way the mirror is a
//! folder on this machine (`TestEnv::dst`), so a test inspects it directly; only what
//! datasafe is given differs ([`TestEnv::dst_arg`]: the path, or `sftp://…` for it) and
//! what its commands get in their environment (the ssh command, and an
//! `XDG_STATE_HOME` of the test's own, where a remote mirror's index lives).
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
