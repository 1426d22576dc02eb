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
        let onto_a_file = there.as_ref().is_some_and(|t| t.kind == Kind::File);
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
        if onto_a_file && leader.ino == 0 && self.store.stat(&temp).is_ok_and(|s| s.is_some()) {
            // Without inode numbers (SFTP) the name may have been a name of the file
            // already: rename(2) between two names of one file does nothing, and the
            // temp name would stay until the next start's sweep.
            let _ = self.store.remove_file(&temp);
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

/// `Action::Link` through the in-memory store: a second name of one file, the old
/// content kept or not as the planner says, and a copy where the store has no links.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::plan::Action;
    use crate::model::{LinkKey, Meta};
    use crate::store::memory::Memory;
    use crate::store::{Caps, Reader, Store, versions};
    use filetime::FileTime;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    const KEY: LinkKey = LinkKey { dev: 1, ino: 9 };

    fn entry(src: &Path, rel: &str) -> Entry {
        let meta = std::fs::metadata(src.join(rel)).unwrap();
        Entry {
            rel: rel.into(),
            kind: Kind::File,
            meta: Meta::of(&meta),
            target: None,
            attrs: Default::default(),
            link: Some(KEY),
        }
    }

    /// SRC with `a` and its second name `d/b`, DST holding `d/b` as an old file of its
    /// own; `a` copied. Returns the link action for `d/b` (keeping as `keep` says).
    fn setup(mem: &Memory, keep: bool) -> (tempfile::TempDir, Executor, Action) {
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir(src.path().join("d")).unwrap();
        std::fs::write(src.path().join("a"), "shared").unwrap();
        std::fs::hard_link(src.path().join("a"), src.path().join("d/b")).unwrap();
        mem.mkdir(Path::new("d")).unwrap();
        mem.put_file(Path::new("d/b"), b"old b", FileTime::zero())
            .unwrap();
        let exec = Executor::with_store(
            src.path(),
            Box::new(mem.clone()),
            Arc::new(AtomicBool::new(false)),
        )
        .unwrap();
        let outcome = exec.run(Action::Copy {
            entry: entry(src.path(), "a"),
            stored: Stored::Plain,
            was: None,
        });
        let Outcome::Stored { record, .. } = outcome else {
            panic!("{outcome:?}")
        };
        let link = Action::Link {
            entry: entry(src.path(), "d/b"),
            stored: Stored::Plain,
            keep,
            to: Box::new(LinkTo {
                name: "a".into(),
                record,
                was: None,
            }),
        };
        (src, exec, link)
    }

    fn kept(mem: &Memory) -> Vec<PathBuf> {
        versions::list_in(mem)
            .into_iter()
            .map(|v| v.stored)
            .collect()
    }

    #[test]
    fn a_later_name_becomes_the_first_names_file() {
        for keep in [true, false] {
            let mem = Memory::new();
            let (_src, exec, link) = setup(&mem, keep);
            let outcome = exec.run(link.clone());
            assert!(
                matches!(
                    outcome,
                    Outcome::Stored {
                        done: Done::HardLinked,
                        bytes: 0,
                        ..
                    }
                ),
                "{outcome:?}"
            );
            let (a, b) = (
                mem.stat(Path::new("a")).unwrap().unwrap(),
                mem.stat(Path::new("d/b")).unwrap().unwrap(),
            );
            assert_eq!((a.ino, a.links), (b.ino, b.links));
            assert_eq!(mem.read(Path::new("d/b")).unwrap(), b"shared");
            let want: Vec<PathBuf> = if keep { vec!["d/b".into()] } else { vec![] };
            assert_eq!(kept(&mem), want, "keep: {keep}");
            assert!(mem.list(&layout::tmp()).unwrap().is_empty());
            // Linked already: unchanged.
            assert!(matches!(exec.run(link), Outcome::Same { .. }));
        }
    }

    #[test]
    fn without_hard_links_a_later_name_is_copied() {
        let caps = Caps {
            hard_links: false,
            ..Memory::new().caps()
        };
        let mem = Memory::new().with_caps(caps);
        let (_src, exec, link) = setup(&mem, true);
        let outcome = exec.run(link);
        assert!(
            matches!(
                outcome,
                Outcome::Stored {
                    done: Done::Copied,
                    bytes: 6,
                    ..
                }
            ),
            "{outcome:?}"
        );
        assert_eq!(mem.read(Path::new("d/b")).unwrap(), b"shared");
        let (a, b) = (
            mem.stat(Path::new("a")).unwrap().unwrap(),
            mem.stat(Path::new("d/b")).unwrap().unwrap(),
        );
        assert_ne!(a.ino, b.ino);
    }
}
