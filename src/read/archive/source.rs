//! What goes into an archive, in order: [`Entry`]s listed from a plain folder (a
//! read-only walk, as `sync` scans) or from a mirror (what `restore` plans for the
//! moment, through `restore::load`, so both write exactly the same files).
//!
//! Listing reads no file content; `read` does that, and the writers in `zip`/`tar`
//! decide how it is stored. Folders come before what they hold, every folder above an
//! entry is an entry (with its recorded mode and mtime), and `.datasafe/` never is.

use super::read::FileAt;
use crate::config::filter::Excludes;
use crate::engine::scan::{self, ScanRules, Scanned};
use crate::engine::source::Source as Folder;
use crate::model::Stored;
use crate::model::{Attrs, Kind, Meta};
use crate::output::names::{esc, io_message};
use crate::read::history::History;
use crate::read::links::{self, Group};
use crate::read::restore::{Origin, Plan};
use filetime::FileTime;
use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// One thing to archive.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Its path relative to SOURCE (its name in the archive, before `--prefix`).
    pub rel: PathBuf,
    /// What it is.
    pub kind: EntryKind,
    /// Permission bits (files: read again when the file is opened).
    pub mode: u32,
    /// Modification time (files: read again when the file is opened).
    pub mtime: FileTime,
    /// Owner, extended attributes and ACLs: a plain folder's own, or what the mirror
    /// recorded for the content restore would write (none for a version).
    pub attrs: Attrs,
    /// For a file with several names, which file it is (`read::links`): a plain
    /// folder's device and inode, a mirror's recorded link key or stored file. A tar
    /// writes the first name met as the file and the others as hard-link entries.
    pub link: Option<Group>,
}

/// What an [`Entry`] is.
#[derive(Clone, Debug)]
pub enum EntryKind {
    /// A folder.
    Dir,
    /// A symlink, pointing here.
    Link(PathBuf),
    /// A file whose content is read from `path` (un-gzipped if `stored` says so).
    File {
        /// Where the content is.
        path: FileAt,
        /// Plain or gzipped (a mirror's files only).
        stored: Stored,
    },
}

/// What was listed, and how many paths could not be.
#[derive(Debug, Default)]
pub struct Listing {
    /// The entries, sorted (parents before children).
    pub entries: Vec<Entry>,
    /// Paths that could not be read (already reported).
    pub failed: u64,
}

/// Lists a plain folder: every entry under `scopes` (all, if empty) that `rules` leave
/// in, plus the folders above each scope, sorted.
pub fn of_folder(folder: &Arc<Folder>, scopes: &[PathBuf], rules: &ScanRules) -> Listing {
    let mut found: BTreeMap<PathBuf, Entry> = BTreeMap::new();
    let mut failed = 0;
    for scope in scopes {
        if folder.status(scope).is_err() {
            log::warn!(
                "nothing in {} at or under {}",
                esc(folder.root()),
                esc(scope)
            );
            continue;
        }
        for above in scope.ancestors().skip(1) {
            if above.as_os_str().is_empty() || found.contains_key(above) {
                continue;
            }
            if let Ok(status) = folder.status(above) {
                let meta = crate::engine::source::meta(&status);
                found.insert(above.to_path_buf(), dir(above, &meta));
            }
        }
        failed += walk(folder, scope, rules, |e| {
            found.insert(e.rel.clone(), e);
            true
        });
    }
    Listing {
        entries: found.into_values().collect(),
        failed,
    }
}

/// Walks `scope` of a plain folder (all of it, if empty), handing each entry to `take`
/// in walk order (sorted per folder, folders before what they hold) until it returns
/// false. Returns how many paths could not be read (each is reported).
pub fn walk(
    folder: &Arc<Folder>,
    scope: &Path,
    rules: &ScanRules,
    mut take: impl FnMut(Entry) -> bool,
) -> u64 {
    let mut failed = 0;
    let root = folder.root();
    scan::walk(folder, scope, rules, |item| {
        match item {
            Scanned::Entry(e) if e.rel.as_os_str().is_empty() => {}
            Scanned::Entry(e) => {
                let kind = match e.kind {
                    Kind::Dir => Some(EntryKind::Dir),
                    Kind::Symlink => Some(EntryKind::Link(e.target.unwrap_or_default())),
                    Kind::File => Some(EntryKind::File {
                        path: FileAt::Source(folder.clone(), e.rel.clone()),
                        stored: Stored::Plain,
                    }),
                    Kind::Special => {
                        log::warn!(
                            "{} is a FIFO, socket or device; it is left out",
                            esc(&root.join(&e.rel))
                        );
                        None
                    }
                };
                if let Some(kind) = kind {
                    let entry = Entry {
                        rel: e.rel,
                        kind,
                        mode: e.meta.mode,
                        mtime: e.meta.mtime,
                        attrs: e.attrs,
                        link: e.link.map(Group::Source),
                    };
                    if !take(entry) {
                        return ControlFlow::Break(());
                    }
                }
            }
            Scanned::Error { rel, error } => {
                failed += 1;
                log::error!(
                    "cannot read {}: {}; it is left out of the archive",
                    esc(&root.join(rel)),
                    io_message(&error)
                );
            }
        }
        ControlFlow::Continue(())
    });
    failed
}

/// Lists what `restore` would write for `plan`, leaving out what `excludes` cover.
/// Every folder above a restored path is an entry, with the mode and mtime the mirror
/// recorded for it (restore gives it the same).
///
/// A path whose content then was only the start of a later copy (a prefix marker: the
/// file only grew since) is written out first into `scratch` (see [`Scratch`]).
pub fn of_mirror(
    history: &History,
    plan: &Plan,
    excludes: &Excludes,
    scratch: &mut Scratch,
    stop: &AtomicBool,
) -> Listing {
    let mut found: BTreeMap<PathBuf, Entry> = BTreeMap::new();
    let mut failed = 0;
    let store = history.store();
    let folder = |rel: &Path| match plan.folders.get(rel) {
        Some(meta) => Entry {
            attrs: plan.folder_attrs.get(rel).cloned().unwrap_or_default(),
            ..dir(rel, meta)
        },
        None => Entry {
            rel: rel.to_path_buf(),
            kind: EntryKind::Dir,
            mode: 0o755,
            mtime: FileTime::now(),
            attrs: Attrs::default(),
            link: None,
        },
    };
    // Names of one file: the first archived is the file, the others links to it.
    let groups = links::groups(links::keys_of(&**store), &plan.inodes);
    for item in &plan.items {
        if excludes.covers(&item.rel) {
            continue;
        }
        let entry = match &item.origin {
            // Read through the mirror's store when it is archived, never by path.
            Origin::File { name, stored, .. } => Entry {
                rel: item.rel.clone(),
                kind: EntryKind::File {
                    path: FileAt::Stored(store.clone(), name.clone()),
                    stored: *stored,
                },
                mode: 0o644,
                mtime: FileTime::zero(),
                attrs: item.attrs.clone(),
                link: groups.get(name).copied(),
            },
            Origin::Link { target, mtime } => Entry {
                rel: item.rel.clone(),
                kind: EntryKind::Link(target.clone()),
                mode: 0o777,
                mtime: *mtime,
                attrs: item.attrs.clone(),
                link: None,
            },
            Origin::Folder => folder(&item.rel),
            Origin::Prefix { .. } => {
                match scratch.dir().map_err(|e| e.to_string()).and_then(|dir| {
                    crate::read::restore::write_prefix(history, item, &dir, stop)
                        .map_err(|e| e.to_string())
                }) {
                    Ok(path) => Entry {
                        rel: item.rel.clone(),
                        kind: EntryKind::File {
                            path: FileAt::Path(path),
                            stored: Stored::Plain,
                        },
                        mode: 0o644,
                        mtime: FileTime::zero(),
                        attrs: Attrs::default(),
                        link: None,
                    },
                    Err(message) => {
                        failed += 1;
                        log::error!(
                            "cannot archive {}: {message}; it is left out of the archive",
                            esc(&item.rel)
                        );
                        continue;
                    }
                }
            }
        };
        for above in item.rel.ancestors().skip(1) {
            if above.as_os_str().is_empty() || found.contains_key(above) {
                continue;
            }
            found.insert(above.to_path_buf(), folder(above));
        }
        found.insert(item.rel.clone(), entry);
    }
    Listing {
        entries: found.into_values().collect(),
        failed,
    }
}

fn dir(rel: &Path, meta: &Meta) -> Entry {
    Entry {
        rel: rel.to_path_buf(),
        kind: EntryKind::Dir,
        mode: meta.mode,
        mtime: meta.mtime,
        attrs: Attrs::default(),
        link: None,
    }
}

/// Why the scratch folder cannot be had; the file that needed it is left out.
#[derive(Debug, thiserror::Error)]
enum ScratchError {
    /// It cannot be made.
    #[error("making the scratch folder {}: {}", esc(.path), io_message(.source))]
    Make {
        /// The folder.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// It cannot be made private.
    #[error("{}: {}", esc(.path), io_message(.source))]
    Private {
        /// The folder.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// A private folder for content that must be written out before it can be archived
/// (see [`of_mirror`]): made on first use, removed with everything in it on drop.
pub struct Scratch {
    /// Where it goes (beside OUT, so on the filesystem the user chose for the archive).
    path: PathBuf,
    made: bool,
}

impl Scratch {
    /// A scratch folder at `path`, not made yet.
    pub fn at(path: PathBuf) -> Scratch {
        Scratch { path, made: false }
    }

    /// The folder, made (private) if it is not there yet.
    fn dir(&mut self) -> Result<PathBuf, ScratchError> {
        if !self.made {
            std::fs::create_dir(&self.path).map_err(|source| ScratchError::Make {
                path: self.path.clone(),
                source,
            })?;
            self.made = true;
            crate::platform::set_mode_path(&self.path, 0o700).map_err(|source| {
                ScratchError::Private {
                    path: self.path.clone(),
                    source,
                }
            })?;
        }
        Ok(self.path.clone())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.made {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
