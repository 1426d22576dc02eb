//! The planner: pure functions from (what the source has, what the mirror holds) to the
//! actions that make the mirror equal the source. No I/O, no clocks, no threads, so every
//! decision is table-tested below. `sync` feeds it; `exec` carries its actions out.
//!
//! A file is unchanged only if size, mtime (to the nanosecond) and permission bits all
//! match what was mirrored; with `checksum` an equal-size file is compared by content
//! instead (the worker hashes it, because hashing is I/O). A record rebuilt from a
//! listing that keeps whole seconds (SFTP) matches in the source's second.

use crate::config::filter::Excludes;
use crate::hash::Digest;
use crate::index::isize_matches;
use crate::model::{Entry, Kind, LinkKey};
use crate::model::{MirrorState, Record, Stored};
use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::hash::BuildHasher;
use std::path::{Path, PathBuf};

pub mod links;

/// The choices that change what a mirror should look like.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlanOptions {
    /// Store files gzipped as `NAME.gz`.
    pub compress: bool,
    /// Compare content by SHA-256 instead of trusting size and mtime.
    pub checksum: bool,
    /// Delete what is no longer in the source.
    pub delete: bool,
    /// DST keeps mtimes in whole seconds and no symlink mtimes (SFTP version 3;
    /// `Caps::nanosecond_mtimes` false): a record read back from DST itself (rebuilt
    /// from a listing: no digest, nanoseconds 0) matches a source mtime in the same
    /// second, and a symlink matches by its target alone. Not a user's choice: the
    /// engine sets it from the store.
    pub whole_second_mtimes: bool,
    /// Owners and groups are mirrored (run as root, as rsync's `-o -g`): a record whose
    /// owner differs, or that has none, is a metadata update. Off (a user's run), the
    /// executor records no owner, and only a recorded one that differs is updated.
    pub owners: bool,
    /// The extended attributes and ACLs kept (`--xattrs`, `--acls`).
    pub kept: crate::model::Kept,
    /// Names of one source file are one file in DST (`--hard-links`, on by default).
    pub hard_links: bool,
}

impl PlanOptions {
    /// The form files are stored in.
    pub fn stored(&self) -> Stored {
        if self.compress {
            Stored::Gzip
        } else {
            Stored::Plain
        }
    }

    /// The form the file `rel` is stored in: gzipped under `--compress`, unless
    /// `NAME.gz` would pass the 255-byte limit on a name (`NAME` of 253 bytes or more):
    /// such a file is stored as it is, uncompressed, so it is still mirrored.
    pub fn stored_for(&self, rel: &Path) -> Stored {
        if self.compress && !gz_name_fits(rel) {
            Stored::Plain
        } else {
            self.stored()
        }
    }
}

/// One thing to do to DST.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Write the source file into DST in the given form, replacing whatever is there.
    Copy {
        /// The source file.
        entry: Entry,
        /// Plain or gzipped.
        stored: Stored,
        /// The size and SHA-256 the index records for the copy DST holds now: a new
        /// content that only extends it keeps no version (the new copy contains it).
        was: Option<(u64, Digest)>,
    },
    /// Hash the source (and DST when no digest is known) and copy only if they differ.
    Compare {
        /// The source file.
        entry: Entry,
        /// The form it is stored in.
        stored: Stored,
        /// What the mirror holds for it (boxed: the rarest action, and the largest).
        known: Box<Record>,
    },
    /// The content is current; set mode and mtime on the stored file.
    SetMeta {
        /// The source file.
        entry: Entry,
        /// The form it is stored in.
        stored: Stored,
        /// Its digest, if known, to keep in the index.
        sha256: Option<Digest>,
        /// What differs from what DST holds (for the line that says it).
        changed: Changed,
    },
    /// Create a directory (replacing a file or symlink of the same name).
    Mkdir {
        /// The source directory.
        entry: Entry,
    },
    /// Create or replace a symlink.
    Symlink {
        /// The source symlink.
        entry: Entry,
    },
    /// Move a name in DST (a folder with everything in it), as the source was moved.
    Rename {
        /// The old name in DST.
        from: PathBuf,
        /// The new name in DST.
        to: PathBuf,
        /// What it is.
        kind: Kind,
    },
    /// Nothing to write: DST already holds `name` as `record` (found so while the index
    /// is rebuilt from DST, or its digest learned by a check); only the index learns it.
    /// Sent as the walk finds it, so a rebuild holds no list of the whole tree.
    Record {
        /// The name in DST.
        name: PathBuf,
        /// What the index should say about it.
        record: Record,
    },
    /// Make `entry`'s name in DST a second name of the file DST holds as `to` (a name
    /// of the same source file met earlier in the pass: see [`links`]), replacing what
    /// is there in one rename. Sent only once `to`'s own copy is installed.
    Link {
        /// The source file under this name.
        entry: Entry,
        /// The form both names are stored in.
        stored: Stored,
        /// Keep what the name holds now as a version (false: it is the other name's
        /// old file, kept already, or the same bytes).
        keep: bool,
        /// The other name and its record (boxed: large, and links are rare).
        to: Box<links::LinkTo>,
    },
    /// Remove a name from DST (a directory with everything in it).
    Delete {
        /// The name as stored in DST.
        name: PathBuf,
        /// What it is in DST.
        kind: Kind,
        /// True if it is the old stored form of a file that still exists (`a.txt` once
        /// `a.txt.gz` is written): a conversion, not a deletion.
        superseded: bool,
    },
}

impl Action {
    /// The name in DST this action writes or removes.
    pub fn dest_name(&self) -> PathBuf {
        match self {
            Action::Copy { entry, stored, .. }
            | Action::Compare { entry, stored, .. }
            | Action::SetMeta { entry, stored, .. }
            | Action::Link { entry, stored, .. } => stored.name_for(&entry.rel),
            Action::Mkdir { entry } | Action::Symlink { entry } => entry.rel.clone(),
            Action::Delete { name, .. } | Action::Record { name, .. } => name.clone(),
            Action::Rename { to, .. } => to.clone(),
        }
    }
}

/// What to do about one source entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// DST already holds it as it is.
    Unchanged,
    /// DST must change.
    Act(Action),
    /// It cannot be mirrored (FIFO, socket, device); the reason is for the warning.
    Skip(&'static str),
}

/// True if `rel`'s gzipped name (`NAME.gz`) fits the 255-byte limit on a name.
pub fn gz_name_fits(rel: &Path) -> bool {
    rel.file_name()
        .is_none_or(|n| n.len() + ".gz".len() <= crate::store::versions::NAME_MAX)
}

/// The name a source entry is stored under in DST, or `None` if it is not mirrored.
pub fn target_name(entry: &Entry, opts: &PlanOptions) -> Option<PathBuf> {
    match entry.kind {
        Kind::File => Some(opts.stored_for(&entry.rel).name_for(&entry.rel)),
        Kind::Dir | Kind::Symlink => Some(entry.rel.clone()),
        Kind::Special => None,
    }
}

/// Decides what one source entry needs, given what the mirror holds under its name.
pub fn plan_entry(entry: &Entry, known: Option<&Record>, opts: &PlanOptions) -> Decision {
    match entry.kind {
        Kind::Special => Decision::Skip("not a regular file, directory or symlink"),
        Kind::Dir => match known {
            Some(r) if r.kind == Kind::Dir => Decision::Unchanged,
            _ => Decision::Act(Action::Mkdir {
                entry: entry.clone(),
            }),
        },
        Kind::Symlink => match known {
            Some(r)
                if r.kind == Kind::Symlink
                    && r.target == entry.target
                    && (r.meta.mtime == entry.meta.mtime || opts.whole_second_mtimes)
                    // A link's owner changed alone (lchown): made again with the new one.
                    && !attrs_differ(entry, r, opts) =>
            {
                Decision::Unchanged
            }
            _ => Decision::Act(Action::Symlink {
                entry: entry.clone(),
            }),
        },
        Kind::File => plan_file(entry, known, opts),
    }
}

fn plan_file(entry: &Entry, known: Option<&Record>, opts: &PlanOptions) -> Decision {
    let stored = opts.stored_for(&entry.rel);
    let known = known.filter(|r| r.kind == Kind::File && r.stored == stored);
    let copy = Decision::Act(Action::Copy {
        entry: entry.clone(),
        stored,
        was: known.and_then(|r| Some((r.meta.size, r.sha256?))),
    });
    let Some(known) = known else {
        return copy;
    };
    if known.link.is_some() && known.link != entry.link {
        // DST holds the name as one of several names of a file, and the source's name
        // left that file (replaced by a separate one, or hard links turned off): only a
        // new file of its own separates it; new metadata would reach every name.
        return copy;
    }
    let same_size = match stored {
        Stored::Plain => known.meta.size == entry.meta.size,
        Stored::Gzip => isize_matches(known.meta.size, entry.meta.size),
    };
    if !same_size {
        return copy;
    }
    if opts.checksum {
        return Decision::Act(Action::Compare {
            entry: entry.clone(),
            stored,
            known: Box::new(known.clone()),
        });
    }
    if known.meta.mtime != entry.meta.mtime && !rebuilt_in_the_same_second(known, entry, opts) {
        return copy;
    }
    if known.meta != entry.meta || attrs_differ(entry, known, opts) {
        // Same content, new mode, owner or attributes (or a record rebuilt from a gzip
        // trailer): fix metadata.
        return Decision::Act(Action::SetMeta {
            entry: entry.clone(),
            stored,
            sha256: known.sha256,
            changed: Changed::between(known, entry),
        });
    }
    if known.link != entry.link {
        // A file of one name gained another (`ln a c`): DST's file is right as it is,
        // only the index learns the key (the new name is linked to it).
        return Decision::Act(Action::Record {
            name: stored.name_for(&entry.rel),
            record: Record {
                link: entry.link,
                ..known.clone()
            },
        });
    }
    Decision::Unchanged
}

/// The link key `known` records for `entry`'s name when the source file has one name
/// now (`st_nlink` 1: the walk gives it no key). Either its other names went (`rm b`
/// of `a`, `b`) and it is still that file, or the name was replaced by a separate
/// file; only the source's device and inode tell, which the caller reads (a rare
/// `lstat`) before choosing [`plan_survivor`] or keeping `plan_entry`'s copy. Not
/// without `delete`: DST keeps the names SRC lost, still names of the same file, so
/// only a copy of its own keeps this name's later metadata updates off them.
pub fn left_alone(entry: &Entry, known: Option<&Record>, opts: &PlanOptions) -> Option<LinkKey> {
    let known =
        known.filter(|r| r.kind == Kind::File && r.stored == opts.stored_for(&entry.rel))?;
    (entry.kind == Kind::File && entry.link.is_none() && opts.hard_links && opts.delete)
        .then_some(known.link)
        .flatten()
}

/// Plans the last name of a file whose other names went ([`left_alone`], the source
/// checked to be the recorded file): DST's file holds the right bytes, so a change of
/// membership alone copies nothing and keeps no version: only the index forgets the
/// key (an [`Action::Record`]), or, with new metadata too, a metadata update. DST's
/// other names of the file are its deletions (or a separate copy) in the same pass.
pub fn plan_survivor(entry: &Entry, known: &Record, opts: &PlanOptions) -> Decision {
    let known = Record {
        link: None,
        ..known.clone()
    };
    match plan_entry(entry, Some(&known), opts) {
        Decision::Unchanged => Decision::Act(Action::Record {
            name: opts.stored_for(&entry.rel).name_for(&entry.rel),
            record: known,
        }),
        other => other,
    }
}

/// True if `known` was read back from a DST that keeps whole seconds (no digest, no
/// nanoseconds) and `entry`'s mtime is in the same second: as unchanged as DST can
/// tell (see [`PlanOptions::whole_second_mtimes`]).
fn rebuilt_in_the_same_second(known: &Record, entry: &Entry, opts: &PlanOptions) -> bool {
    opts.whole_second_mtimes
        && known.sha256.is_none()
        && known.meta.mtime.nanoseconds() == 0
        && known.meta.mtime.unix_seconds() == entry.meta.mtime.unix_seconds()
}

/// True if a directory's recorded mode, mtime, owner or attributes differ from the
/// source's.
pub fn dir_meta_differs(entry: &Entry, known: Option<&Record>, opts: &PlanOptions) -> bool {
    match known {
        Some(r) if r.kind == Kind::Dir => {
            r.meta.mode != entry.meta.mode
                || r.meta.mtime != entry.meta.mtime
                || attrs_differ(entry, r, opts)
        }
        _ => true,
    }
}

/// True if what the index recorded of a name's owner or attributes is not the
/// source's: a metadata update, never a copy. A recorded owner that differs always
/// counts (the index learns the new one; DST gets it when run as root); an owner not
/// recorded (an older index) counts only when owners are mirrored. Attributes count
/// only when the pair keeps them (the walk reads none otherwise).
pub fn attrs_differ(entry: &Entry, known: &Record, opts: &PlanOptions) -> bool {
    let owner = match known.attrs.owner {
        Some(recorded) => entry.attrs.owner.is_some_and(|now| now != recorded),
        None => opts.owners && entry.attrs.owner.is_some(),
    };
    owner || (opts.kept.any() && known.attrs.xattrs != entry.attrs.xattrs)
}

/// What a metadata update changes: what its `updated` line names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Changed {
    pub mode: bool,
    pub owner: bool,
    /// Extended attributes other than ACLs.
    pub xattrs: bool,
    pub acl: bool,
    /// The names the file has (hard links).
    pub links: bool,
}

impl Changed {
    /// How `entry` differs from `known` beyond its content.
    pub fn between(known: &Record, entry: &Entry) -> Changed {
        fn split(x: &crate::model::Xattrs, acl: bool) -> Vec<&(std::ffi::OsString, Vec<u8>)> {
            let mut v: Vec<_> =
                x.0.iter()
                    .filter(|(n, _)| crate::model::Xattrs::is_acl(n) == acl)
                    .collect();
            v.sort();
            v
        }
        let (was, now) = (known.attrs.xattrs(), entry.attrs.xattrs());
        Changed {
            mode: known.meta.mode != entry.meta.mode,
            owner: entry.attrs.owner.is_some() && known.attrs.owner != entry.attrs.owner,
            xattrs: split(was, false) != split(now, false),
            acl: split(was, true) != split(now, true),
            links: known.link != entry.link,
        }
    }
}

/// What must not be deleted from DST even though the source does not have it.
#[derive(Debug, Default)]
pub struct Keep<'a> {
    /// Excluded paths are neither copied nor deleted.
    pub excludes: Option<&'a Excludes>,
    /// Source paths that could not be read: what DST holds at or under them stays.
    pub unreadable: &'a [PathBuf],
}

impl Keep<'_> {
    /// True if DST's `name` (plain or `.gz`) is excluded or lies under an unreadable
    /// source path: it stays.
    pub fn keeps(&self, name: &Path) -> bool {
        let logical = strip_gz(name);
        let names = [Some(name), logical.as_deref()];
        names.into_iter().flatten().any(|n| {
            self.excludes.is_some_and(|ex| ex.covers(n))
                || self.unreadable.iter().any(|u| n.starts_with(u))
        })
    }
}

/// Records looked up by name: the whole index's map, or one folder's records.
pub trait Recorded {
    /// The record of `name`, if any.
    fn record(&self, name: &OsStr) -> Option<&Record>;
}

impl Recorded for MirrorState {
    fn record(&self, name: &OsStr) -> Option<&Record> {
        self.get(name)
    }
}

/// The deletions that make DST hold only `targets`: every listed name not a target and
/// not kept, minus those inside a directory that is itself deleted. With `delete` off,
/// only the other stored form of a current file is removed (turning `--compress` on or
/// off converts a mirror; it never leaves `NAME` and `NAME.gz` side by side).
pub fn plan_deletions<'n>(
    listing: impl IntoIterator<Item = (&'n Path, Kind)>,
    targets: &HashSet<OsString, impl BuildHasher>,
    known: &impl Recorded,
    keep: &Keep<'_>,
    opts: &PlanOptions,
) -> Vec<Action> {
    let listing: Vec<(&Path, Kind)> = listing.into_iter().collect();
    // A folder holding something kept (an excluded file, say) stays, like rsync's
    // "cannot delete non-empty directory": only its other contents go.
    let pinned: HashSet<&Path> = listing
        .iter()
        .filter(|(name, _)| !targets.contains(name.as_os_str()) && keep.keeps(name))
        .flat_map(|(name, _)| name.ancestors().skip(1))
        .collect();
    let mut stale: Vec<(&Path, Kind, bool)> = listing
        .into_iter()
        .filter(|(name, _)| !targets.contains(name.as_os_str()) && !keep.keeps(name))
        .filter(|(name, _)| !pinned.contains(name))
        .map(|(name, kind)| {
            let other = other_form_of_target(name, kind, targets, known, opts.compress);
            (name, kind, other)
        })
        .filter(|(_, _, superseded)| opts.delete || *superseded)
        .collect();
    stale.sort_by(|a, b| a.0.cmp(b.0));
    let stale_dirs: HashSet<&Path> = stale
        .iter()
        .filter(|(_, k, _)| *k == Kind::Dir)
        .map(|(n, _, _)| *n)
        .collect();
    stale
        .into_iter()
        .filter(|(name, _, _)| !name.ancestors().skip(1).any(|a| stale_dirs.contains(a)))
        .map(|(name, kind, superseded)| Action::Delete {
            name: name.to_path_buf(),
            kind,
            superseded,
        })
        .collect()
}

/// True if `name` is a file stored in the form no longer in use for a source file that
/// still exists (`a.txt` while `a.txt.gz` is the target, or the reverse). Only the form
/// `compress` no longer uses can be the old one: with `--compress` on, a gzipped `f.gz`
/// beside a target `f` is a file that became a folder (a type change, deleted and
/// counted as such), not a conversion.
fn other_form_of_target(
    name: &Path,
    kind: Kind,
    targets: &HashSet<OsString, impl BuildHasher>,
    known: &impl Recorded,
    compress: bool,
) -> bool {
    if kind != Kind::File {
        return false;
    }
    let stored = known.record(name.as_os_str()).map(|r| r.stored);
    match stored {
        Some(Stored::Gzip) => {
            !compress && strip_gz(name).is_some_and(|p| targets.contains(p.as_os_str()))
        }
        // A plain file the index does not know (one that was in DST before it became a
        // mirror) is no old form of anything: deleting it is a real deletion.
        Some(Stored::Plain) => {
            compress && targets.contains(Stored::Gzip.name_for(name).as_os_str())
        }
        None => false,
    }
}

/// The deletion guard: when a pass holds its deletions back instead of carrying them out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Guard {
    /// Let every deletion through (`--force`).
    pub force: bool,
    /// Hold a pass that would delete more files than this. `None`: hold one that would
    /// delete more than half of the mirror and more than [`Guard::MIN_MASS_DELETE`].
    pub max_delete: Option<u64>,
}

/// Why a pass holds its deletions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Held {
    /// The source holds nothing while the mirror holds files.
    EmptySource,
    /// More deletions than the guard allows.
    MassDelete,
}

impl Guard {
    /// Without `max_delete`, a pass deleting this many files or fewer is never held.
    pub const MIN_MASS_DELETE: u64 = 100;

    /// Whether a pass that found `source_entries` entries in the source and would delete
    /// `deleting` of the `mirror_files` files DST holds must hold its deletions.
    pub fn holds(&self, source_entries: u64, deleting: u64, mirror_files: u64) -> Option<Held> {
        if self.force || deleting == 0 {
            return None;
        }
        if source_entries == 0 && mirror_files > 0 {
            return Some(Held::EmptySource);
        }
        let mass = match self.max_delete {
            Some(max) => deleting > max,
            None => deleting > mirror_files / 2 && deleting > Self::MIN_MASS_DELETE,
        };
        mass.then_some(Held::MassDelete)
    }
}

/// `a/b.gz` → `a/b` (defined beside `Stored`, whose names it undoes).
pub use crate::model::strip_gz;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Meta;
    use filetime::FileTime;

    fn meta(size: u64, secs: i64, nanos: u32, mode: u32) -> Meta {
        Meta {
            size,
            mtime: FileTime::from_unix_time(secs, nanos),
            mode,
        }
    }

    fn file(rel: &str, m: Meta) -> Entry {
        Entry {
            rel: rel.into(),
            kind: Kind::File,
            meta: m,
            target: None,
            attrs: Default::default(),
            link: None,
        }
    }

    fn rec(kind: Kind, m: Meta, stored: Stored) -> Record {
        Record {
            kind,
            meta: m,
            sha256: None,
            stored,
            target: None,
            disk: None,
            attrs: Default::default(),
            link: None,
        }
    }

    fn opts(compress: bool, checksum: bool) -> PlanOptions {
        PlanOptions {
            compress,
            checksum,
            delete: true,
            whole_second_mtimes: false,
            owners: false,
            kept: Default::default(),
            hard_links: true,
        }
    }

    /// The short name of a decision, for compact tables.
    fn short(d: &Decision) -> &'static str {
        match d {
            Decision::Unchanged => "unchanged",
            Decision::Skip(_) => "skip",
            Decision::Act(Action::Copy { .. }) => "copy",
            Decision::Act(Action::Compare { .. }) => "compare",
            Decision::Act(Action::SetMeta { .. }) => "setmeta",
            Decision::Act(Action::Mkdir { .. }) => "mkdir",
            Decision::Act(Action::Symlink { .. }) => "symlink",
            Decision::Act(Action::Rename { .. }) => "rename",
            Decision::Act(Action::Record { .. }) => "record",
            Decision::Act(Action::Delete { .. }) => "delete",
            Decision::Act(Action::Link { .. }) => "link",
        }
    }

    #[test]
    fn a_name_that_leaves_a_file_with_several_names_is_copied_not_updated() {
        let key = |ino| Some(crate::model::LinkKey { dev: 1, ino });
        let m = meta(5, 1000, 0, 0o644);
        let linked = Record {
            link: key(7),
            ..rec(Kind::File, m, Stored::Plain)
        };
        let o = opts(false, false);
        let alone = file("a", m);
        // Replaced by a separate file of the same bytes and times: its own file.
        assert_eq!(short(&plan_entry(&alone, Some(&linked), &o)), "copy");
        let renumbered = Entry {
            link: key(8),
            ..alone.clone()
        };
        assert_eq!(short(&plan_entry(&renumbered, Some(&linked), &o)), "copy");
        // Gaining a second name: DST's file stays, only the record learns the key.
        let plain = rec(Kind::File, m, Stored::Plain);
        assert_eq!(short(&plan_entry(&renumbered, Some(&plain), &o)), "record");
        // Gaining one together with a chmod: a metadata update, no copy.
        let chmodded = Entry {
            meta: meta(5, 1000, 0, 0o600),
            ..renumbered.clone()
        };
        assert_eq!(short(&plan_entry(&chmodded, Some(&plain), &o)), "setmeta");
        assert_eq!(
            short(&plan_entry(
                &Entry {
                    link: key(7),
                    ..alone
                },
                Some(&linked),
                &o
            )),
            "unchanged"
        );
    }

    #[test]
    fn the_last_name_of_a_file_whose_other_names_went_is_not_copied() {
        let key = crate::model::LinkKey { dev: 1, ino: 7 };
        let m = meta(5, 1000, 0, 0o644);
        let linked = Record {
            link: Some(key),
            ..rec(Kind::File, m, Stored::Plain)
        };
        let o = opts(false, false);
        let alone = file("a", m);
        // Only the source's inode tells a survivor from a separate file: asked for.
        assert_eq!(left_alone(&alone, Some(&linked), &o), Some(key));
        let unlinked = rec(Kind::File, m, Stored::Plain);
        assert_eq!(left_alone(&alone, Some(&unlinked), &o), None);
        let still_linked = Entry {
            link: Some(key),
            ..alone.clone()
        };
        assert_eq!(left_alone(&still_linked, Some(&linked), &o), None);
        let off = PlanOptions {
            hard_links: false,
            ..o
        };
        assert_eq!(left_alone(&alone, Some(&linked), &off), None, "separated");
        let keeping = PlanOptions { delete: false, ..o };
        assert_eq!(
            left_alone(&alone, Some(&linked), &keeping),
            None,
            "kept names"
        );
        // The same file: the record forgets the key, nothing is written to DST.
        match plan_survivor(&alone, &linked, &o) {
            Decision::Act(Action::Record { name, record }) => {
                assert_eq!(name, Path::new("a"));
                assert_eq!(record.link, None);
                assert_eq!(record.meta, m);
            }
            other => panic!("{other:?}"),
        }
        // With a chmod too: a metadata update; with new content: a copy.
        let chmodded = file("a", meta(5, 1000, 0, 0o600));
        assert_eq!(short(&plan_survivor(&chmodded, &linked, &o)), "setmeta");
        let edited = file("a", meta(6, 2000, 0, 0o644));
        assert_eq!(short(&plan_survivor(&edited, &linked, &o)), "copy");
    }

    #[test]
    fn a_record_rebuilt_from_a_whole_second_dst_matches_within_its_second() {
        let coarse = PlanOptions {
            whole_second_mtimes: true,
            ..opts(false, false)
        };
        let src = file("a", meta(5, 1000, 123, 0o644));
        let rebuilt = rec(Kind::File, meta(5, 1000, 0, 0o644), Stored::Plain);
        let decide = |r: &Record, o: &PlanOptions| short(&plan_entry(&src, Some(r), o));
        // The same time as DST can tell: its exact time is recorded, nothing copied.
        assert_eq!(decide(&rebuilt, &coarse), "setmeta");
        // Not on a store that keeps nanoseconds, and not another second.
        assert_eq!(decide(&rebuilt, &opts(false, false)), "copy");
        let other_second = rec(Kind::File, meta(5, 999, 0, 0o644), Stored::Plain);
        assert_eq!(decide(&other_second, &coarse), "copy");
        // A record datasafe wrote itself (with a digest) still compares to the ns.
        let written = Record {
            sha256: Some(Digest([1; 32])),
            ..rebuilt.clone()
        };
        assert_eq!(decide(&written, &coarse), "copy");
        // A symlink by its target alone.
        let link = Entry {
            rel: "l".into(),
            kind: Kind::Symlink,
            meta: meta(0, 1000, 123, 0o777),
            target: Some("t".into()),
            attrs: Default::default(),
            link: None,
        };
        let made_later = Record {
            kind: Kind::Symlink,
            target: Some("t".into()),
            ..rec(Kind::Symlink, meta(0, 2000, 0, 0o777), Stored::Plain)
        };
        assert_eq!(
            short(&plan_entry(&link, Some(&made_later), &coarse)),
            "unchanged"
        );
        let link_opts = opts(false, false);
        assert_eq!(
            short(&plan_entry(&link, Some(&made_later), &link_opts)),
            "symlink"
        );
    }

    #[test]
    fn file_decisions() {
        let m = meta(100, 1000, 5, 0o644);
        let plain = |m| Some(rec(Kind::File, m, Stored::Plain));
        let gz = |m| Some(rec(Kind::File, m, Stored::Gzip));
        let table: Vec<(&str, Meta, Option<Record>, PlanOptions, &str)> = vec![
            ("new file", m, None, opts(false, false), "copy"),
            ("identical", m, plain(m), opts(false, false), "unchanged"),
            // rsync's quick check misses this one: same size, same second.
            (
                "same second, other ns",
                meta(100, 1000, 6, 0o644),
                plain(m),
                opts(false, false),
                "copy",
            ),
            (
                "size differs",
                meta(101, 1000, 5, 0o644),
                plain(m),
                opts(false, false),
                "copy",
            ),
            (
                "mode only",
                meta(100, 1000, 5, 0o600),
                plain(m),
                opts(false, false),
                "setmeta",
            ),
            (
                "checksum, same meta",
                m,
                plain(m),
                opts(false, true),
                "compare",
            ),
            (
                "checksum, size differs",
                meta(1, 1000, 5, 0o644),
                plain(m),
                opts(false, true),
                "copy",
            ),
            ("compress turned on", m, plain(m), opts(true, false), "copy"),
            ("compress turned off", m, gz(m), opts(false, false), "copy"),
            (
                "gzipped identical",
                m,
                gz(m),
                opts(true, false),
                "unchanged",
            ),
            (
                "dir where file goes",
                m,
                Some(rec(Kind::Dir, m, Stored::Plain)),
                opts(false, false),
                "copy",
            ),
            // A record rebuilt from a gzip trailer holds the size modulo 4 GiB.
            (
                "rebuilt gz over 4 GiB",
                meta((1 << 32) + 100, 1000, 5, 0o644),
                gz(m),
                opts(true, false),
                "setmeta",
            ),
        ];
        for (name, src, known, o, want) in table {
            let got = plan_entry(&file("f", src), known.as_ref(), &o);
            assert_eq!(short(&got), want, "{name}");
        }
    }

    #[test]
    fn dirs_symlinks_and_specials() {
        let m = meta(0, 1000, 0, 0o755);
        let dir = Entry {
            rel: "d".into(),
            kind: Kind::Dir,
            meta: m,
            target: None,
            attrs: Default::default(),
            link: None,
        };
        let link = Entry {
            rel: "l".into(),
            kind: Kind::Symlink,
            meta: m,
            target: Some("../x".into()),
            attrs: Default::default(),
            link: None,
        };
        let special = Entry {
            kind: Kind::Special,
            ..dir.clone()
        };
        let mut link_rec = rec(Kind::Symlink, m, Stored::Plain);
        link_rec.target = Some("../x".into());
        let mut other_target = link_rec.clone();
        other_target.target = Some("../y".into());
        // The link was given to another owner (lchown) since it was mirrored.
        let mut other_owner = link_rec.clone();
        other_owner.attrs.owner = Some(crate::model::Owner { uid: 7, gid: 7 });
        let owned_link = Entry {
            attrs: crate::model::Attrs {
                owner: Some(crate::model::Owner { uid: 8, gid: 7 }),
                xattrs: None,
            },
            ..link.clone()
        };
        let o = opts(false, false);
        let table: Vec<(&str, &Entry, Option<Record>, &str)> = vec![
            ("new dir", &dir, None, "mkdir"),
            (
                "existing dir",
                &dir,
                Some(rec(Kind::Dir, meta(0, 5, 0, 0o700), Stored::Plain)),
                "unchanged",
            ),
            (
                "file where dir goes",
                &dir,
                Some(rec(Kind::File, m, Stored::Plain)),
                "mkdir",
            ),
            ("new link", &link, None, "symlink"),
            ("same link", &link, Some(link_rec), "unchanged"),
            ("retargeted link", &link, Some(other_target), "symlink"),
            (
                "link of another owner",
                &owned_link,
                Some(other_owner),
                "symlink",
            ),
            ("fifo", &special, None, "skip"),
        ];
        for (name, entry, known, want) in table {
            assert_eq!(
                short(&plan_entry(entry, known.as_ref(), &o)),
                want,
                "{name}"
            );
        }
        assert!(dir_meta_differs(&dir, None, &opts(false, false)));
        assert!(!dir_meta_differs(
            &dir,
            Some(&rec(Kind::Dir, m, Stored::Plain)),
            &opts(false, false)
        ));
        assert!(dir_meta_differs(
            &dir,
            Some(&rec(Kind::Dir, meta(0, 1000, 0, 0o700), Stored::Plain)),
            &opts(false, false)
        ));
    }

    fn names(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .map(|a| a.dest_name().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn deletions_are_minimal_and_respect_keep() {
        let listing = [
            ("keep.txt", Kind::File),
            ("gone.txt", Kind::File),
            ("olddir", Kind::Dir),
            ("olddir/a", Kind::File),
            ("olddir/sub", Kind::Dir),
            ("olddir/sub/b", Kind::File),
            ("cache.tmp", Kind::File),
            ("locked", Kind::Dir),
            ("locked/x", Kind::File),
            ("stray-from-before", Kind::File),
            ("mixed", Kind::Dir),
            ("mixed/old.txt", Kind::File),
            ("mixed/sub", Kind::Dir),
            ("mixed/sub/keep.tmp", Kind::File),
        ];
        let listing: Vec<(&Path, Kind)> =
            listing.iter().map(|(n, k)| (Path::new(*n), *k)).collect();
        let targets: HashSet<OsString> =
            ["keep.txt", "locked"].iter().map(OsString::from).collect();
        let ex = Excludes::new(&["*.tmp"]).unwrap();
        let unreadable = [PathBuf::from("locked")];
        let keep = Keep {
            excludes: Some(&ex),
            unreadable: &unreadable,
        };
        let got = plan_deletions(
            listing.clone(),
            &targets,
            &MirrorState::default(),
            &keep,
            &opts(false, false),
        );
        assert_eq!(
            names(&got),
            ["gone.txt", "mixed/old.txt", "olddir", "stray-from-before"]
        );

        let no_delete = PlanOptions {
            delete: false,
            ..opts(false, false)
        };
        assert!(
            plan_deletions(
                listing,
                &targets,
                &MirrorState::default(),
                &keep,
                &no_delete
            )
            .is_empty()
        );
    }

    #[test]
    fn converting_forms_removes_the_old_one_even_without_delete() {
        let m = meta(1, 1, 0, 0o644);
        let listing = [
            (Path::new("a"), Kind::File),
            (Path::new("b.gz"), Kind::File),
            (Path::new("c.gz"), Kind::File),
        ];
        let mut known = MirrorState::default();
        known.insert("b.gz".into(), rec(Kind::File, m, Stored::Gzip));
        known.insert("c.gz".into(), rec(Kind::File, m, Stored::Plain));
        known.insert("a".into(), rec(Kind::File, m, Stored::Plain));
        // Compress on: a -> a.gz. Compress off: b.gz (gzip of b) -> b. c.gz is a plain
        // file of its own whose source is gone: only a real delete removes it.
        let targets: HashSet<OsString> = ["a.gz", "b"].iter().map(OsString::from).collect();
        let on = PlanOptions {
            delete: false,
            ..opts(true, false)
        };
        let got = plan_deletions(listing, &targets, &known, &Keep::default(), &on);
        assert_eq!(names(&got), ["a"]);
        // A plain `a` the index does not know was never datasafe's: no conversion.
        let unknown = MirrorState::default();
        let got = plan_deletions(listing, &targets, &unknown, &Keep::default(), &on);
        assert!(got.is_empty(), "{got:?}");
        let off = PlanOptions {
            compress: false,
            ..on
        };
        let got = plan_deletions(listing, &targets, &known, &Keep::default(), &off);
        assert_eq!(names(&got), ["b.gz"]);
    }

    #[test]
    fn strip_gz_only_strips_a_real_suffix() {
        assert_eq!(strip_gz(Path::new("a/b.gz")), Some(PathBuf::from("a/b")));
        assert_eq!(strip_gz(Path::new(".gz")), None);
        assert_eq!(strip_gz(Path::new("a/.gz")), None);
        assert_eq!(strip_gz(Path::new("a/b")), None);
    }

    #[test]
    fn the_guard_holds_an_emptied_source_and_mass_deletes() {
        let default = Guard::default();
        let forced = Guard {
            force: true,
            ..Guard::default()
        };
        let max = |n| Guard {
            force: false,
            max_delete: Some(n),
        };
        // (guard, source entries, deleting, mirror files) -> held
        let table = [
            (default, 0, 5, 5, Some(Held::EmptySource)),
            (default, 0, 0, 5, None),
            (default, 3, 101, 150, Some(Held::MassDelete)),
            (default, 3, 100, 150, None),
            (default, 3, 101, 202, None),
            (default, 3, 60, 100, None),
            (forced, 0, 5, 5, None),
            (forced, 3, 1000, 1000, None),
            (max(10), 3, 11, 1000, Some(Held::MassDelete)),
            (max(10), 3, 10, 1000, None),
            (max(0), 3, 1, 1000, Some(Held::MassDelete)),
        ];
        for (guard, entries, deleting, mirror, want) in table {
            assert_eq!(
                guard.holds(entries, deleting, mirror),
                want,
                "{guard:?} entries={entries} deleting={deleting} mirror={mirror}"
            );
        }
    }

    #[test]
    fn a_record_listed_in_whole_seconds_is_the_same_time_in_that_second() {
        use crate::model::OnDisk;
        let src = file("a", meta(5, 1_700_000_000, 123_456_789, 0o644));
        let listed = |secs, nanos| Record {
            disk: Some(OnDisk { size: 5, ino: 0 }),
            ..rec(Kind::File, meta(5, secs, nanos, 0o644), Stored::Plain)
        };
        let coarse = PlanOptions {
            whole_second_mtimes: true,
            ..opts(false, false)
        };
        let plan = |r: Record| short(&plan_entry(&src, Some(&r), &coarse));
        // Rebuilt from an SFTP listing: the same second records the source's time.
        assert_eq!(plan(listed(1_700_000_000, 0)), "setmeta");
        // Another second, a fraction that is kept, or a record a copy wrote: copied.
        assert_eq!(plan(listed(1_700_000_001, 0)), "copy");
        assert_eq!(plan(listed(1_700_000_000, 5)), "copy");
        let copied = Record {
            sha256: Some(Digest([1; 32])),
            ..listed(1_700_000_000, 0)
        };
        assert_eq!(plan(copied), "copy");
        // Not on a store that keeps nanoseconds.
        let fine = short(&plan_entry(
            &src,
            Some(&listed(1_700_000_000, 0)),
            &opts(false, false),
        ));
        assert_eq!(fine, "copy");
    }
}
