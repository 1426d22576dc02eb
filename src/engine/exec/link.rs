//! Hard links inside a pair, carried out ([`Action::Link`](crate::engine::plan::Action)):
//! a later name of a source file with several names becomes a second name of the file
//! DST holds under the first ([`crate::engine::plan::links`] decides which). The link
//! is made under a temp name in the store's temp folder and installed over the name by
//! one rename, so the name is never missing or torn; what it held before is kept as a
//! version first unless it is the first name's old file (kept already when that was
//! replaced). A store without hard links, or a link the filesystem refuses (another
//! filesystem mounted inside DST, too many links), gets a copy, as before hard links
//! were mirrored; a refusal of links as such is said once per run.

use super::ops::Reach;
use super::{Done, Executor, OpError, Outcome};
use crate::engine::plan::links::LinkTo;
use crate::model::{Entry, Kind, Stored};
use crate::output::names::{esc, io_message};
use crate::store::layout;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

impl Executor {
    /// Makes `entry`'s name a second name of the file stored as `to.name` (recorded
    /// as `to.record`), keeping what the name held as a version when `keep`.
    pub(super) fn link(
        &self,
        entry: &Entry,
        stored: Stored,
        to: &LinkTo,
        keep: bool,
    ) -> Result<Outcome, OpError> {
        let LinkTo {
            name: to,
            record,
            was,
        } = to;
        let (to, was) = (to.as_path(), *was);
        let name = stored.name_for(&entry.rel);
        if !self.caps.hard_links || self.no_links.load(Ordering::Relaxed) {
            return self.copy(entry, stored, was);
        }
        let shown = self.shown(&name);
        // The first name must still be the file its record describes (its inode, where
        // the store has inode numbers): else a copy is the safe way.
        let leader = self
            .store
            .stat(to)
            .map_err(OpError::io("reading", &self.shown(to)))?;
        let recorded_ino = record.disk.map(|d| d.ino).filter(|&ino| ino != 0);
        let Some(leader) =
            leader.filter(|s| s.kind == Kind::File && recorded_ino.is_none_or(|ino| ino == s.ino))
        else {
            return self.copy(entry, stored, was);
        };
        let done = |done: Done| Outcome::Stored {
            done,
            name: name.clone(),
            record: record.clone(),
            bytes: 0,
        };
        let there = self
            .store
            .stat(&name)
            .map_err(OpError::io("reading", &shown))?;
        if let Some(there) = there {
            if there.kind == Kind::File && leader.ino != 0 && there.ino == leader.ino {
                // One file already (a `--checksum` pass found the first name current):
                // unchanged, and the index learns it.
                return Ok(Outcome::Same {
                    name: name.clone(),
                    record: record.clone(),
                });
            }
            if there.kind == Kind::Dir {
                self.displace_tree(&name)?;
            } else if keep {
                self.preserve(&name, true)?;
            }
        }
        let temp = self.link_temp_name();
        match self.store.link(to, &temp) {
            Ok(()) => {}
            Err(e) if refuses_links(&e) => {
                if !self.no_links.swap(true, Ordering::Relaxed) {
                    log::warn!(
                        "{} cannot hold hard links ({}): names of one file are copied \
                         separately for the rest of this run",
                        esc(&self.shown(Path::new(""))),
                        io_message(&e)
                    );
                }
                return self.copy(entry, stored, was);
            }
            Err(e) if too_many_links(&e) => {
                log::warn!(
                    "{} has too many names to link {} ({}): copied separately",
                    esc(&self.shown(to)),
                    esc(&shown),
                    io_message(&e)
                );
                return self.copy(entry, stored, was);
            }
            Err(e) => return Err(OpError::io("linking", &shown)(e)),
        }
        let mut placed = self.store.rename(&temp, &name);
        if placed.as_ref().is_err_and(|e| {
            matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            )
        }) {
            // A folder on the way is missing or is not a folder: make them folders.
            if let Err(e) = self.dest_dir(&name, Reach::Parents) {
                let _ = self.store.remove_file(&temp);
                return Err(e);
            }
            placed = self.store.rename(&temp, &name);
        }
        if let Err(e) = placed {
            let _ = self.store.remove_file(&temp);
            return Err(OpError::io("writing", &shown)(e));
        }
        Ok(done(Done::HardLinked))
    }

    /// A fresh name in the store's temp folder for a link about to be installed
    /// (swept with the other temp files if the run is killed before the rename).
    fn link_temp_name(&self) -> PathBuf {
        let n = self.link_temps.fetch_add(1, Ordering::Relaxed);
        layout::tmp().join(format!("{}-link-{n}.tmp", std::process::id()))
    }
}

/// True if `err` says DST's filesystem takes no hard links at all (or not across the
/// temp folder and the name: another filesystem mounted inside DST).
fn refuses_links(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::Unsupported
            | io::ErrorKind::CrossesDevices
            // EPERM: a filesystem without hard links (FAT) says so.
            | io::ErrorKind::PermissionDenied
    ) || err
        .raw_os_error()
        .is_some_and(crate::platform::is_not_supported)
}

/// True if `err` says the file has as many names as its filesystem allows.
fn too_many_links(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::TooManyLinks
}
