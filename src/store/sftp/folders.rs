//! Keeps every path the store sends inside the mirror, and whole. The SFTP server resolves each
//! path it is given, following a symlink in any component but the last, where a local
//! store walks with `O_NOFOLLOW` handles; so a folder of DST replaced by a symlink
//! (`b` → `../f`, or → `/etc`) would make `remove b/a` remove `f/a` or `/etc/a`.
//! [`Folders::beneath`] makes sure every folder on the way to a name is a real folder
//! (an `lstat` of each, top down) before the name is used. A name that is not UTF-8 is
//! refused with an error naming why: the SFTP client sends paths as UTF-8 only, and a
//! lossy conversion would write the file under another name.
//!
//! Folders found real are remembered, so a pass asks about each one once; the store
//! forgets a folder (and all below it) when it removes or renames it. The lock makes
//! this process the only writer; a folder swapped for a symlink on the server by hand
//! while `watch` runs is seen once the store forgets it (a restart, or its removal).

use super::conn::Conn;
use crate::config::Remote;
use crate::model::Kind;
use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The folders of one mirror known to be real folders (relative to DST).
#[derive(Default)]
pub(super) struct Folders {
    known: Mutex<BTreeSet<PathBuf>>,
}

impl Folders {
    /// True if every folder on the way to `name` (below DST's root, `name` itself left
    /// out) is a real folder; false if one is missing or anything else (a symlink).
    pub(super) fn beneath(&self, conn: &Conn, remote: &Remote, name: &Path) -> io::Result<bool> {
        if name.to_str().is_none() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the name is not valid UTF-8, and SFTP paths are sent as UTF-8 here; \
                 rename it (or mirror it to a local folder)",
            ));
        }
        let mut on_the_way: Vec<&Path> = name
            .ancestors()
            .skip(1)
            .filter(|a| !a.as_os_str().is_empty())
            .collect();
        on_the_way.reverse();
        for folder in on_the_way {
            if self.lock().contains(folder) {
                continue;
            }
            // lstat: the last component is never followed, and those before it are
            // folders already found real.
            match conn.lstat(&remote.remote_path(folder))? {
                Some(found) if found.kind == Kind::Dir => {
                    self.lock().insert(folder.to_path_buf());
                }
                _ => return Ok(false),
            }
        }
        Ok(true)
    }

    /// [`Folders::beneath`] as an error for a request that would go through something
    /// that is not a folder.
    pub(super) fn require(&self, conn: &Conn, remote: &Remote, name: &Path) -> io::Result<()> {
        if self.beneath(conn, remote, name)? {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::NotFound,
                "a folder on the way is missing or is not a folder (a symlink is never \
                 followed inside the mirror)",
            ))
        }
    }

    /// `name` is a real folder now (the store made it).
    pub(super) fn made(&self, name: &Path) {
        if !name.as_os_str().is_empty() {
            self.lock().insert(name.to_path_buf());
        }
    }

    /// `name` and everything below it may no longer be real folders.
    pub(super) fn forget(&self, name: &Path) {
        let mut known = self.lock();
        let below: Vec<PathBuf> = known
            .range(name.to_path_buf()..)
            .take_while(|p| p.starts_with(name))
            .cloned()
            .collect();
        for p in below {
            known.remove(&p);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<PathBuf>> {
        // Nothing is left half-done in the set by a panic.
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forget_drops_a_folder_and_all_below_it_only() {
        let f = Folders::default();
        for p in ["a", "a/b", "a/b/c", "ab", "a b", "b"] {
            f.made(Path::new(p));
        }
        f.forget(Path::new("a"));
        let left: Vec<PathBuf> = f.lock().iter().cloned().collect();
        assert_eq!(left, ["a b", "ab", "b"].map(PathBuf::from));
    }
}
