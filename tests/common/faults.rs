//! Helpers the fault tests share (`tests/sync_faults.rs`, `tests/watch_faults.rs`): a
//! seeded PRNG, file maps, a tmpfs guard for a full disk, and a tree uid 65534 can work
//! in (for permission errors, which root never sees).

use super::{TestEnv, is_root};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The unprivileged user the permission tests run the binary as.
pub const NOBODY: u32 = 65534;

/// A small seeded PRNG (splitmix64): the faults vary, but every run of a test is the same.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

/// A file of `len` pseudo-random bytes from `seed` (tearing shows as a mismatch).
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    Rng(seed).bytes(len)
}

/// The names in `DST/.datasafe/tmp` (empty if the folder does not exist).
pub fn temp_files(dst: &Path) -> Vec<PathBuf> {
    match fs::read_dir(dst.join(".datasafe/tmp")) {
        Ok(rd) => rd.flatten().map(|e| e.path()).collect(),
        Err(_) => Vec::new(),
    }
}

/// Every regular file under `root` (DST's `.datasafe` left out) with its content.
pub fn files(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut map = BTreeMap::new();
    if !root.exists() {
        return map;
    }
    for entry in walkdir::WalkDir::new(root).min_depth(1).follow_links(false) {
        let Ok(entry) = entry else { continue };
        let rel = entry.path().strip_prefix(root).unwrap().to_path_buf();
        if rel.starts_with(".datasafe") || !entry.file_type().is_file() {
            continue;
        }
        if let Ok(content) = fs::read(entry.path()) {
            map.insert(rel, content);
        }
    }
    map
}

/// True if others may pass through every folder above `path` (and `path` itself).
pub fn reachable_by_others(path: &Path) -> bool {
    path.ancestors()
        .all(|p| fs::metadata(p).is_ok_and(|m| m.mode() & 0o001 != 0))
}

pub fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// `chown -R uid:uid path` without following symlinks.
pub fn chown_tree(path: &Path, uid: u32) {
    for entry in walkdir::WalkDir::new(path).follow_links(false) {
        let entry = entry.unwrap();
        std::os::unix::fs::lchown(entry.path(), Some(uid), Some(uid)).unwrap();
    }
}

/// A test tree that uid 65534 can work in (the temp folder opened up, DST created), or
/// `None`, with the reason printed, when the binary cannot be run as uid 65534 here.
pub fn env_for_nobody(test: &str) -> Option<TestEnv> {
    if !is_root() {
        eprintln!("skipping {test}: needs root (chown, setpriv to uid {NOBODY})");
        return None;
    }
    let setpriv = Command::new("setpriv")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !setpriv {
        eprintln!("skipping {test}: setpriv (util-linux) is not installed");
        return None;
    }
    let env = TestEnv::new();
    chmod(env.dir.path(), 0o755);
    if !reachable_by_others(env.dir.path()) {
        eprintln!(
            "skipping {test}: uid {NOBODY} cannot reach the temp folder {} (set TMPDIR)",
            env.dir.path().display()
        );
        return None;
    }
    fs::create_dir(&env.dst).unwrap();
    Some(env)
}

/// A tmpfs mounted for the life of the guard; unmounted on drop, even after a failure.
pub struct Tmpfs {
    pub dir: PathBuf,
}

impl Tmpfs {
    pub fn mount(dir: &Path, size: &str) -> Tmpfs {
        fs::create_dir_all(dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "mount -t tmpfs on {} failed",
            dir.display()
        );
        Tmpfs {
            dir: dir.to_path_buf(),
        }
    }

    pub fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.dir)
            .status()
            .unwrap();
        assert!(status.success(), "remount of {} failed", self.dir.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// The binary as uid 65534 can run it: itself, or a copy in the test folder when the
/// target folder is private (a `CARGO_TARGET_DIR` under /root).
pub fn binary_for_nobody(env: &TestEnv) -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_datasafe"));
    if reachable_by_others(bin) {
        return bin.to_path_buf();
    }
    let copy = env.dir.path().join("datasafe-bin");
    if !copy.exists() {
        fs::copy(bin, &copy).unwrap();
        chmod(&copy, 0o755);
    }
    copy
}
