//! Hard links inside a pair, as the planner sees them: names of one source file (the
//! same `LinkKey`, device and inode) are one file with several names in DST. During a
//! pass, the first name of a key the walk meets is its *leader* ([`Leaders`]); every
//! later name is either already the leader's file in DST (left alone) or is made a
//! second name of it ([`LinkLater`], carried out once the walk's copies are done, so
//! the leader's new copy is installed first). A leader DST lacks altogether (a new
//! name) holds its copy back: if a later name of the same file is current in DST, that
//! one leads and the new name is linked to it (`ln a b` copies nothing); else the copy
//! goes out once the walk is over ([`Leaders::finish`]). Pure, like the rest of the
//! planner; what DST holds is judged from the records alone.
//!
//! Only files with more than one name enter [`Leaders`]: a tree without hard links
//! costs a pass nothing.

use super::{Action, PlanOptions};
use crate::hash::Digest;
use crate::model::{Entry, Kind, LinkKey, Meta, NameHasher, Record, Stored};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// What a record says of a file, as far as telling two names apart needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seen {
    meta: Meta,
    sha256: Option<Digest>,
    /// DST's inode number (an S3 object's stamp); `None` where the store has none.
    ino: Option<u64>,
    link: Option<LinkKey>,
}

impl Seen {
    fn of(record: &Record) -> Seen {
        Seen {
            meta: record.meta,
            sha256: record.sha256,
            ino: record.disk.map(|d| d.ino).filter(|&ino| ino != 0),
            link: record.link,
        }
    }

    /// True if `self` and `other` are records of one file in DST: the same inode where
    /// the store has inode numbers, else (SFTP) recorded as the same source file with
    /// the same metadata and digest.
    fn same_file(&self, other: &Seen, key: LinkKey) -> bool {
        match (self.ino, other.ino) {
            (Some(a), Some(b)) => a == b,
            _ => {
                self.link == Some(key)
                    && other.link == Some(key)
                    && self.meta == other.meta
                    && self.sha256 == other.sha256
            }
        }
    }

    /// True if both are known to hold the same bytes (equal digests and sizes).
    fn same_content(&self, other: &Seen) -> bool {
        self.sha256.is_some() && self.sha256 == other.sha256 && self.meta.size == other.meta.size
    }
}

/// The first name of a key met in a pass.
#[derive(Debug)]
struct Leader {
    /// Its name in DST.
    name: PathBuf,
    stored: Stored,
    /// What the index recorded for it before this pass.
    known: Option<Seen>,
    /// This pass writes it again (a copy or a `--checksum` compare): its later names
    /// are linked to the new copy.
    rewritten: bool,
    /// Its copy, held back while DST lacks the name: a later name DST holds current
    /// may lead instead.
    held: Option<Action>,
}

/// A later name of a file met earlier in the pass, to become a second name of the
/// leader's file in DST once the walk's copies are done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkLater {
    /// The source file under this name.
    pub entry: Entry,
    /// The form it is stored in (the leader's).
    pub stored: Stored,
    /// The leader's name in DST.
    pub to: PathBuf,
    /// Keep what DST holds under this name now as a version: false when it is the
    /// leader's old file (the leader's own replacement kept it) or the same bytes.
    pub keep: bool,
    /// The size and digest recorded for this name, for a copy instead of a link.
    pub was: Option<(u64, Digest)>,
}

/// The name a later name is linked to ([`Action::Link`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkTo {
    /// The first name, in DST.
    pub name: PathBuf,
    /// What the index holds for it: what the later name is recorded as too.
    pub record: Record,
    /// What the index recorded for the later name (size and digest), for a copy
    /// instead where DST cannot link.
    pub was: Option<(u64, Digest)>,
}

impl LinkLater {
    /// The action once the walk's copies are done and `leader` is what the index holds
    /// for the leader's name: a link, or a copy when the leader is not recorded as a
    /// file of the same source file in the same form (its copy failed).
    pub fn action(self, leader: Option<Record>) -> Action {
        let of_this_file = |r: &Record| {
            r.kind == Kind::File && r.stored == self.stored && r.link == self.entry.link
        };
        match leader.filter(of_this_file) {
            Some(record) => Action::Link {
                entry: self.entry,
                stored: self.stored,
                keep: self.keep,
                to: Box::new(LinkTo {
                    name: self.to,
                    record,
                    was: self.was,
                }),
            },
            None => Action::Copy {
                entry: self.entry,
                stored: self.stored,
                was: self.was,
            },
        }
    }
}

/// What to do about a file that has a link key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Linked {
    /// Send this (the leader's own plan, or an unchanged later name's), now.
    Now(Option<Action>),
    /// Nothing now: its copy or link goes out once the walk is over
    /// ([`Leaders::finish`]).
    Held,
}

/// The leader of each key met so far in a pass, and the links to make after it.
#[derive(Debug, Default)]
pub struct Leaders {
    leaders: HashMap<LinkKey, Leader, NameHasher>,
    links: Vec<LinkLater>,
}

impl Leaders {
    /// Plans `entry` (stored as `name`, what the index holds there `known`), whose
    /// ordinary plan is `action` (`None`: unchanged, present in DST). A file without a
    /// link key, and the first name of a key, keep their plan; a later name keeps it
    /// only if its record is the leader's file and neither is written again.
    pub fn plan(
        &mut self,
        entry: &Entry,
        name: &Path,
        known: Option<&Record>,
        action: Option<Action>,
        opts: &PlanOptions,
    ) -> Linked {
        let Some(key) = entry
            .link
            .filter(|_| entry.kind == Kind::File && opts.hard_links)
        else {
            return Linked::Now(action);
        };
        let stored = opts.stored_for(&entry.rel);
        let known = known.filter(|r| r.kind == Kind::File && r.stored == stored);
        let rewritten = matches!(
            action,
            Some(Action::Copy { .. } | Action::Compare { .. } | Action::Link { .. })
        );
        let seen = known.map(Seen::of);
        let lead = |held: Option<Action>| Leader {
            name: name.to_path_buf(),
            stored,
            known: seen,
            rewritten,
            held,
        };
        let Some(leader) = self.leaders.get_mut(&key) else {
            if known.is_none() && matches!(action, Some(Action::Copy { .. })) {
                self.leaders.insert(key, lead(action));
                return Linked::Held;
            }
            self.leaders.insert(key, lead(None));
            return Linked::Now(action);
        };
        if leader.stored != stored {
            // One name gzipped and one not (a name too long for `.gz`): two files.
            return Linked::Now(action);
        }
        // A `--checksum` compare writes only if the content differs, and then the new
        // names are linked to its new copy: it may lead as well as an unchanged name.
        let copied = matches!(action, Some(Action::Copy { .. } | Action::Link { .. }));
        if leader.held.is_some() && seen.is_some() && !copied {
            // The first name is new, this one is current in DST: it leads, and the new
            // name (and any met since) become names of its file.
            let old = std::mem::replace(leader, lead(None));
            if let Some(Action::Copy { entry, .. }) = old.held {
                self.links.push(LinkLater {
                    entry,
                    stored,
                    to: name.to_path_buf(),
                    keep: true,
                    was: None,
                });
            }
            for link in self.links.iter_mut().filter(|l| l.to == old.name) {
                link.to = name.to_path_buf();
            }
            return Linked::Now(action);
        }
        let same = matches!((&leader.known, &seen), (Some(l), Some(k)) if l.same_file(k, key));
        if same && !leader.rewritten && !rewritten {
            return Linked::Now(action);
        }
        let same_bytes = !leader.rewritten
            && matches!((&leader.known, &seen), (Some(l), Some(k)) if l.same_content(k));
        self.links.push(LinkLater {
            entry: entry.clone(),
            stored,
            to: leader.name.clone(),
            keep: !same && !same_bytes,
            was: known.and_then(|r| Some((r.meta.size, r.sha256?))),
        });
        Linked::Held
    }

    /// Once the walk is over: the copies held back (new names no current name led), to
    /// carry out first, and the links to make once they are installed.
    pub fn finish(self) -> (Vec<Action>, Vec<LinkLater>) {
        let copies = self.leaders.into_values().filter_map(|l| l.held).collect();
        (copies, self.links)
    }

    /// How many keys are held (for tests and the memory bound).
    pub fn len(&self) -> usize {
        self.leaders.len()
    }

    /// True if no file with several names was met.
    pub fn is_empty(&self) -> bool {
        self.leaders.is_empty()
    }
}

/// True if `a` and `b` are recorded as one file in DST (see [`Leaders`]); `key` is
/// the source file both are names of. What a watcher's relink checks.
pub fn same_file(a: &Record, b: &Record, key: LinkKey) -> bool {
    Seen::of(a).same_file(&Seen::of(b), key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::OnDisk;
    use filetime::FileTime;

    const KEY: LinkKey = LinkKey { dev: 1, ino: 7 };

    fn meta(size: u64, secs: i64) -> Meta {
        Meta {
            size,
            mtime: FileTime::from_unix_time(secs, 0),
            mode: 0o644,
        }
    }

    fn file(rel: &str, m: Meta, link: Option<LinkKey>) -> Entry {
        Entry {
            rel: rel.into(),
            kind: Kind::File,
            meta: m,
            target: None,
            attrs: Default::default(),
            link,
        }
    }

    fn rec(m: Meta, ino: u64, link: Option<LinkKey>) -> Record {
        Record {
            disk: Some(OnDisk { size: m.size, ino }),
            link,
            sha256: Some(crate::hash::hash_reader(&m.size.to_le_bytes()[..]).unwrap()),
            ..Record::plain(Kind::File, m, Stored::Plain)
        }
    }

    fn opts() -> PlanOptions {
        PlanOptions {
            hard_links: true,
            delete: true,
            ..PlanOptions::default()
        }
    }

    fn copy(entry: &Entry) -> Option<Action> {
        Some(Action::Copy {
            entry: entry.clone(),
            stored: Stored::Plain,
            was: None,
        })
    }

    #[test]
    fn names_sharing_the_leaders_inode_are_left_alone() {
        let m = meta(5, 100);
        let mut leaders = Leaders::default();
        let (a, b) = (file("a", m, Some(KEY)), file("d/b", m, Some(KEY)));
        let known = rec(m, 40, Some(KEY));
        let planned = leaders.plan(&a, Path::new("a"), Some(&known), None, &opts());
        assert_eq!(planned, Linked::Now(None));
        let planned = leaders.plan(&b, Path::new("d/b"), Some(&known), None, &opts());
        assert_eq!(planned, Linked::Now(None));
        assert_eq!(leaders.len(), 1);
        assert_eq!(leaders.finish(), (vec![], vec![]));
    }

    #[test]
    fn a_rewritten_leader_takes_its_names_along_keeping_no_second_version() {
        let (old, new) = (meta(5, 100), meta(9, 200));
        let mut leaders = Leaders::default();
        let (a, b) = (file("a", new, Some(KEY)), file("b", new, Some(KEY)));
        let known = rec(old, 40, Some(KEY));
        let planned = leaders.plan(&a, Path::new("a"), Some(&known), copy(&a), &opts());
        assert_eq!(planned, Linked::Now(copy(&a)));
        let planned = leaders.plan(&b, Path::new("b"), Some(&known), copy(&b), &opts());
        assert_eq!(planned, Linked::Held);
        let (copies, links) = leaders.finish();
        assert!(copies.is_empty());
        assert_eq!(links[0].to, Path::new("a"));
        assert!(
            !links[0].keep,
            "b's old file is a's old file, kept once by a's copy"
        );
    }

    #[test]
    fn a_name_held_as_a_separate_file_or_missing_is_linked() {
        let m = meta(5, 100);
        let mut leaders = Leaders::default();
        let (a, b, c, d) = (
            file("a", m, Some(KEY)),
            file("b", m, Some(KEY)),
            file("c", m, Some(KEY)),
            file("d", m, Some(KEY)),
        );
        leaders.plan(
            &a,
            Path::new("a"),
            Some(&rec(m, 40, Some(KEY))),
            None,
            &opts(),
        );
        // A separate copy with other bytes (recorded before the names were linked).
        let other = Record {
            sha256: None,
            ..rec(m, 41, None)
        };
        leaders.plan(&b, Path::new("b"), Some(&other), None, &opts());
        // A separate copy of the same bytes: nothing to keep.
        leaders.plan(
            &c,
            Path::new("c"),
            Some(&rec(m, 42, Some(KEY))),
            None,
            &opts(),
        );
        // Not in DST at all.
        leaders.plan(&d, Path::new("d"), None, copy(&d), &opts());
        let (copies, links) = leaders.finish();
        assert!(copies.is_empty());
        let got: Vec<(&str, &str, bool)> = links
            .iter()
            .map(|l| {
                let rel = l.entry.rel.to_str().unwrap();
                (rel, l.to.to_str().unwrap(), l.keep)
            })
            .collect();
        assert_eq!(got, [("b", "a", true), ("c", "a", false), ("d", "a", true)]);
    }

    #[test]
    fn a_new_first_name_waits_for_a_name_dst_holds_current() {
        let m = meta(5, 100);
        let mut leaders = Leaders::default();
        let (a, b, c) = (
            file("a", m, Some(KEY)),
            file("b", m, Some(KEY)),
            file("c", m, Some(KEY)),
        );
        // `ln c a; ln c b`: a and b are new, c is mirrored already.
        assert_eq!(
            leaders.plan(&a, Path::new("a"), None, copy(&a), &opts()),
            Linked::Held
        );
        assert_eq!(
            leaders.plan(&b, Path::new("b"), None, copy(&b), &opts()),
            Linked::Held
        );
        let known = rec(m, 40, None);
        let set = Some(Action::SetMeta {
            entry: c.clone(),
            stored: Stored::Plain,
            sha256: None,
            changed: Default::default(),
        });
        assert_eq!(
            leaders.plan(&c, Path::new("c"), Some(&known), set.clone(), &opts()),
            Linked::Now(set)
        );
        let (copies, links) = leaders.finish();
        assert!(copies.is_empty(), "nothing copied: {copies:?}");
        let mut got: Vec<(&Path, &Path)> = links
            .iter()
            .map(|l| (l.entry.rel.as_path(), l.to.as_path()))
            .collect();
        got.sort();
        assert_eq!(
            got,
            [
                (Path::new("a"), Path::new("c")),
                (Path::new("b"), Path::new("c"))
            ]
        );
        // With no current name, the first new one is copied after the walk.
        let mut leaders = Leaders::default();
        leaders.plan(&a, Path::new("a"), None, copy(&a), &opts());
        leaders.plan(&b, Path::new("b"), None, copy(&b), &opts());
        let (copies, links) = leaders.finish();
        assert_eq!(copies, [copy(&a).unwrap()]);
        assert_eq!(links[0].to, Path::new("a"));
    }

    #[test]
    fn a_name_compared_under_checksum_leads_a_new_name() {
        // `ln x c` under `--checksum`: x is compared, c is new; c must not be copied
        // and x linked to the copy (a version of x kept for nothing).
        let m = meta(5, 100);
        let mut leaders = Leaders::default();
        let (c, x) = (file("c", m, Some(KEY)), file("x", m, Some(KEY)));
        assert_eq!(
            leaders.plan(&c, Path::new("c"), None, copy(&c), &opts()),
            Linked::Held
        );
        let known = rec(m, 40, None);
        let compare = Some(Action::Compare {
            entry: x.clone(),
            stored: Stored::Plain,
            known: Box::new(known.clone()),
        });
        assert_eq!(
            leaders.plan(&x, Path::new("x"), Some(&known), compare.clone(), &opts()),
            Linked::Now(compare)
        );
        let (copies, links) = leaders.finish();
        assert!(copies.is_empty(), "{copies:?}");
        assert_eq!(links.len(), 1);
        assert_eq!(
            (links[0].entry.rel.as_path(), links[0].to.as_path()),
            (Path::new("c"), Path::new("x"))
        );
    }

    #[test]
    fn without_inode_numbers_key_meta_and_digest_decide() {
        let m = meta(5, 100);
        let mut leaders = Leaders::default();
        let (a, b) = (file("a", m, Some(KEY)), file("b", m, Some(KEY)));
        let known = rec(m, 0, Some(KEY));
        leaders.plan(&a, Path::new("a"), Some(&known), None, &opts());
        let planned = leaders.plan(&b, Path::new("b"), Some(&known), None, &opts());
        assert_eq!(planned, Linked::Now(None));
        let unlinked = rec(m, 0, None);
        assert_eq!(
            leaders.plan(&b, Path::new("b"), Some(&unlinked), None, &opts()),
            Linked::Held
        );
    }

    #[test]
    fn files_with_one_name_and_links_turned_off_are_not_held() {
        let m = meta(5, 100);
        let mut leaders = Leaders::default();
        let a = file("a", m, None);
        assert_eq!(
            leaders.plan(&a, Path::new("a"), None, copy(&a), &opts()),
            Linked::Now(copy(&a))
        );
        let off = PlanOptions {
            hard_links: false,
            ..opts()
        };
        let b = file("b", m, Some(KEY));
        leaders.plan(&b, Path::new("b"), None, copy(&b), &off);
        assert!(leaders.is_empty());
    }

    #[test]
    fn a_link_whose_leader_failed_is_a_copy() {
        let m = meta(5, 100);
        let link = LinkLater {
            entry: file("b", m, Some(KEY)),
            stored: Stored::Plain,
            to: "a".into(),
            keep: true,
            was: None,
        };
        assert!(matches!(link.clone().action(None), Action::Copy { .. }));
        let other_file = rec(m, 40, Some(LinkKey { dev: 1, ino: 8 }));
        assert!(matches!(
            link.clone().action(Some(other_file)),
            Action::Copy { .. }
        ));
        assert!(matches!(
            link.action(Some(rec(m, 40, Some(KEY)))),
            Action::Link { .. }
        ));
    }
}
