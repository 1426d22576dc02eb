//! Hard links inside a pair, carried out ([`Action::Link`](crate::engine::plan::Action)):
//! a later name of a source file with several names becomes a second name of the file
//! DST holds under the first ([`crate::engine::plan::links`] decides which). The link
//! is made under a temp name in the store's temp folder and installed over the name by
//! one rename, so the name is never missing or torn; what it held before is kept as a
//! version first unless it held the same bytes. When it held the first name's old file
//! (kept already when that was replaced), its version is one more link of that file, or
//! a prefix marker where the new content only extends the old (as the first name's own
//! replacement kept): every name of a file edited through one of them has a version of
//! its own, and no bytes are kept twice where the store links. A store without hard links, or a link the filesystem refuses (another
//! filesystem mounted inside DST, too many links), gets a copy, as before hard links
//! were mirrored; a refusal of links as such is said once per run.

use super::ops::Reach;
use super::{Done, Executor, OpError, Outcome};
use crate::engine::plan::links::LinkTo;
use crate::model::{Entry, Kind, Record, Stored};
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
            } else if content_changes(was, record) {
                // The name held the first name's old file, whose bytes its replacement
                // kept already. This name gets a version of its own all the same (a
                // second link of that file: no bytes where the store links, a copy made
                // on the server on S3), so `restore --at` gives every name of the file
                // its old content, and the versions folder says so without the index.
                // Where the new content only extends the old (a log appended to), the
                // replacement kept a prefix marker, not the old file: so does this name.
                match self.extended(to, stored, was, record) {
                    Some(grown) => self.preserve_prefix(&name, grown)?,
                    None => self.preserve(&name, true)?,
                }
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

    /// The old content's size and digest (`was`) if the plain file `to`, recorded as
    /// `record`, is longer and starts with exactly that content (its first bytes read
    /// and hashed through the store): the old content is then the start of the new.
    fn extended(
        &self,
        to: &Path,
        stored: Stored,
        was: Option<(u64, crate::hash::Digest)>,
        record: &Record,
    ) -> Option<(u64, crate::hash::Digest)> {
        let (size, sha) = was?;
        if stored != Stored::Plain || record.meta.size <= size {
            return None;
        }
        let file = self.store.open(to).ok()?;
        let mut buf = vec![0u8; crate::hash::CHUNK];
        let (digest, read) =
            crate::hash::hash_reader_until(io::Read::take(file, size), &mut buf, &self.stop)
                .ok()?;
        (read == size && digest == sha).then_some((size, sha))
    }

    /// A fresh name in the store's temp folder for a link about to be installed
    /// (swept with the other temp files if the run is killed before the rename).
    fn link_temp_name(&self) -> PathBuf {
        let n = self.link_temps.fetch_add(1, Ordering::Relaxed);
        layout::tmp().join(format!("{}-link-{n}.tmp", std::process::id()))
    }
}

/// True unless the name's recorded content (`was`) is known to be the content it is
/// being linked to (`to`): a name that only joins a file of the same bytes needs no
/// version.
fn content_changes(was: Option<(u64, crate::hash::Digest)>, to: &Record) -> bool {
    match (was, to.sha256) {
        (Some((size, sha)), Some(now)) => size != to.meta.size || sha != now,
        _ => true,
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
    /// own; `a` copied. Returns the link action for `d/b` (keeping as `keep` says; the
    /// index recorded `was` for it).
    fn setup(
        mem: &Memory,
        keep: bool,
        was: Option<(u64, crate::hash::Digest)>,
    ) -> (tempfile::TempDir, Executor, Action) {
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
                was,
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

    /// The size and digest of `bytes`, as the index records them.
    fn recorded(bytes: &[u8]) -> Option<(u64, crate::hash::Digest)> {
        Some((bytes.len() as u64, crate::hash::hash_reader(bytes).unwrap()))
    }

    #[test]
    fn a_later_name_becomes_the_first_names_file() {
        // Kept: asked to, or (not asked: it held the first name's old file) its old
        // bytes differ from the new ones, or are not known. Not kept: the same bytes.
        let cases = [
            (true, None, true),
            (false, None, true),
            (false, recorded(b"old b"), true),
            (false, recorded(b"shared"), false),
        ];
        for (keep, was, want_kept) in cases {
            let mem = Memory::new();
            let (_src, exec, link) = setup(&mem, keep, was);
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
            let want: Vec<PathBuf> = if want_kept {
                vec!["d/b".into()]
            } else {
                vec![]
            };
            assert_eq!(kept(&mem), want, "keep: {keep}, was: {was:?}");
            assert!(mem.list(&layout::tmp()).unwrap().is_empty());
            // Linked already: unchanged.
            assert!(matches!(exec.run(link), Outcome::Same { .. }));
        }
    }

    /// A name whose old content the new one only extends keeps a prefix marker (no
    /// bytes), as the first name's own replacement does.
    #[test]
    fn a_name_whose_old_content_the_new_one_extends_keeps_a_prefix_marker() {
        let mem = Memory::new();
        let (_src, exec, link) = setup(&mem, false, recorded(b"sha"));
        exec.run(link);
        let kept = versions::list_in(&mem);
        assert_eq!(kept.len(), 1, "{kept:?}");
        assert_eq!(kept[0].stored, Path::new("d/b"));
        let prefix = kept[0].prefix.expect("a prefix marker");
        assert_eq!(prefix.size, 3);
    }

    #[test]
    fn without_hard_links_a_later_name_is_copied() {
        let caps = Caps {
            hard_links: false,
            ..Memory::new().caps()
        };
        let mem = Memory::new().with_caps(caps);
        let (_src, exec, link) = setup(&mem, true, None);
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
