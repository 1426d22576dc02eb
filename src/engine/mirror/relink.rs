//! Hard links under a watcher ([`Mirror::apply`]'s share of `plan::links`): an edit
//! through one name of a file with several names raises an event for that name only.
//! Its copy is planned as usual; once it is installed, every other name the index
//! records for the same source file (`Index::linked`) whose source is still that file
//! becomes a name of the new copy, so an edit through any name updates all names. A
//! new name of a file DST holds current (`ln a b`) is linked, not copied, found among
//! the names the index records with its key or, for a file mirrored while it had one
//! name, among the names recorded with its metadata and no key (a bounded search).
//! A new folder's pass links its held-back copies the same way ([`Mirror::link_outside`]).
//! A name that left the group (its source is another file now) is planned like any file.

use super::Mirror;
use crate::engine::plan::Action;
use crate::engine::plan::links::{self, Leaders, LinkTo, Linked};
use crate::engine::source::Source;
use crate::model::{Entry, Kind, LinkKey, Record};
use std::path::{Path, PathBuf};

/// What a batch of hints defers until its copies are installed.
pub(super) struct HintLinks {
    /// The first name of each source file met in the batch (and the links to it).
    leaders: Leaders,
    /// New names of files DST holds current, linked to a recorded name.
    direct: Vec<Action>,
    /// Names written in this batch whose other recorded names follow them: the key,
    /// the name in DST, what the index held for it before.
    written: Vec<(LinkKey, PathBuf, Option<Record>)>,
    /// How many searches for a name recorded without its key are left (`LOOKUPS`).
    lookups: usize,
}

impl Default for HintLinks {
    fn default() -> HintLinks {
        HintLinks {
            leaders: Leaders::default(),
            direct: Vec::new(),
            written: Vec::new(),
            lookups: LOOKUPS,
        }
    }
}

/// How many new names a batch of hints (or a new folder's pass) may look for among
/// the names recorded without a key ([`Mirror::current_name`]): each is a scan of the
/// index, and a folder of many new names (`cp -al`) copies the rest, which the next
/// full pass links.
const LOOKUPS: usize = 8;

impl Mirror {
    /// Plans the file `entry` (stored as `name`, recorded as `known`), whose ordinary
    /// plan is `action`, as a name of a file with several names; returns what to send
    /// with the batch. Files with one name pass through untouched.
    pub(super) fn plan_linked(
        &mut self,
        src: &Source,
        entry: Entry,
        name: &Path,
        known: Option<Record>,
        action: Option<Action>,
        links: &mut HintLinks,
    ) -> Option<Action> {
        let opts = self.cfg.plan;
        let Some(key) = entry
            .link
            .filter(|_| opts.hard_links && entry.kind == Kind::File)
        else {
            return action;
        };
        let stored = opts.stored_for(&entry.rel);
        if let Some(Action::Copy { was, .. }) = &action
            && let Some((to, record, learn)) =
                self.current_name(src, key, &entry, name, &mut links.lookups)
        {
            links.direct.extend(learn);
            // A new name (or one DST lost) of a file DST holds current: linked.
            let keep = !known
                .as_ref()
                .is_some_and(|k| links::same_file(k, &record, key));
            links.direct.push(Action::Link {
                to: Box::new(LinkTo {
                    name: to,
                    record,
                    was: *was,
                }),
                entry,
                stored,
                keep,
            });
            return None;
        }
        if action
            .as_ref()
            .is_some_and(|a| !matches!(a, Action::Record { .. }))
        {
            links.written.push((key, name.to_path_buf(), known.clone()));
        }
        match links
            .leaders
            .plan(&entry, name, known.as_ref(), action, &opts)
        {
            Linked::Now(action) => action,
            Linked::Held => None,
        }
    }

    /// Once the batch's own actions are carried out: its later names are linked to the
    /// first, then the other recorded names of each file written follow it.
    pub(super) fn finish_links(&mut self, src: &Source, links: HintLinks) {
        let HintLinks {
            leaders,
            direct,
            written,
            ..
        } = links;
        let (copies, later) = leaders.finish();
        if !copies.is_empty() {
            self.pump_all(copies);
        }
        if !later.is_empty() || !direct.is_empty() {
            let mut actions = direct;
            for link in later {
                let leader = self.tally.index.get(&link.to);
                actions.push(link.action(leader));
            }
            self.pump_all(actions);
        }
        let mut actions = Vec::new();
        for (key, name, before) in written {
            let Some(now) = self
                .tally
                .index
                .get(&name)
                .filter(|r| r.kind == Kind::File && r.link == Some(key))
            else {
                continue;
            };
            for (other, record, entry) in self.other_names(src, key, &name) {
                if record.stored != now.stored || links::same_file(&now, &record, key) {
                    continue;
                }
                let keep = !before
                    .as_ref()
                    .is_some_and(|b| links::same_file(b, &record, key));
                log::debug!("{} follows {}", other.display(), name.display());
                actions.push(Action::Link {
                    to: Box::new(LinkTo {
                        name: name.clone(),
                        record: now.clone(),
                        was: record.sha256.map(|sha| (record.meta.size, sha)),
                    }),
                    entry,
                    stored: now.stored,
                    keep,
                });
            }
        }
        if !actions.is_empty() {
            self.pump_all(actions);
        }
    }

    /// A scoped pass's held copies (new names of files no name inside its scope holds
    /// current, `Leaders::finish`): each one of a file DST holds current under a name
    /// outside the scope (`mkdir new && ln a new/b`, or a name another new folder's pass
    /// just copied) becomes a link to it instead. The scope's other new names of the
    /// file are linked to this one afterwards, as planned.
    pub(super) fn link_outside(&mut self, copies: Vec<Action>) -> Vec<Action> {
        if copies.is_empty() {
            return copies;
        }
        let Ok(src) = Source::open(&self.cfg.pair.src) else {
            return copies;
        };
        let mut lookups = LOOKUPS;
        let mut actions = Vec::with_capacity(copies.len());
        for action in copies {
            actions.extend(self.link_to_outside(&src, action, &mut lookups));
        }
        actions
    }

    /// `action`, or a link to a current name of its file (and what the index learns
    /// of that name), for [`Mirror::link_outside`].
    fn link_to_outside(
        &mut self,
        src: &Source,
        action: Action,
        lookups: &mut usize,
    ) -> Vec<Action> {
        let Action::Copy { entry, stored, was } = action else {
            return vec![action];
        };
        let name = stored.name_for(&entry.rel);
        let current = entry
            .link
            .and_then(|key| self.current_name(src, key, &entry, &name, lookups));
        match current {
            Some((to, record, learn)) => {
                log::debug!("{} is a name of {}", name.display(), to.display());
                let link = Action::Link {
                    entry,
                    stored,
                    keep: true,
                    to: Box::new(LinkTo {
                        name: to,
                        record,
                        was,
                    }),
                };
                learn.into_iter().chain([link]).collect()
            }
            None => vec![Action::Copy { entry, stored, was }],
        }
    }

    /// A name DST holds current for the source file `key` that `entry` (stored as
    /// `name`) can be made a name of: one the index records as that file, else (while
    /// `lookups` last) one recorded while the file had a single name — the same
    /// metadata and form, and the source says it is that file. Returns it with the
    /// record the link takes (with the key) and, for the second kind, the
    /// [`Action::Record`] by which the index learns its key.
    fn current_name(
        &mut self,
        src: &Source,
        key: LinkKey,
        entry: &Entry,
        name: &Path,
        lookups: &mut usize,
    ) -> Option<(PathBuf, Record, Option<Action>)> {
        let stored = self.cfg.plan.stored_for(&entry.rel);
        let fits = |r: &Record| r.kind == Kind::File && r.meta == entry.meta && r.stored == stored;
        let others = self.other_names(src, key, name);
        let others_empty = others.is_empty();
        if let Some((to, record, _)) = others.into_iter().find(|(_, r, _)| fits(r)) {
            return Some((to, record, None));
        }
        if *lookups == 0 || !others_empty {
            // The file's names are recorded (an edit through one of them): none is
            // current, and no name recorded without the key is either.
            return None;
        }
        *lookups -= 1;
        let (to, record) = self
            .tally
            .index
            .unlinked_like(entry.meta)
            .into_iter()
            .filter(|(other, r)| other != name && fits(r))
            .find(|(other, r)| {
                let rel = r.stored.source_of(other);
                !self.rules.covers(&rel) && is_the_file(src, &rel, key)
            })?;
        let record = Record {
            link: Some(key),
            ..record
        };
        let learn = Action::Record {
            name: to.clone(),
            record: record.clone(),
        };
        Some((to, record, Some(learn)))
    }

    /// The other names the index records for the source file `key` (not `name`) whose
    /// source is still that file, with their records and source entries.
    fn other_names(
        &mut self,
        src: &Source,
        key: LinkKey,
        name: &Path,
    ) -> Vec<(PathBuf, Record, Entry)> {
        let kept = self.cfg.plan.kept;
        self.tally
            .index
            .linked(key)
            .into_iter()
            .filter(|(other, record)| other != name && record.kind == Kind::File)
            .filter_map(|(other, record)| {
                let rel = record.stored.source_of(&other);
                if self.rules.covers(&rel) {
                    return None;
                }
                let entry = src.entry(&rel, &kept).ok()?;
                (entry.kind == Kind::File && entry.link == Some(key))
                    .then_some((other, record, entry))
            })
            .collect()
    }
}

/// True if SRC's `rel` is the source file `key` (the same device and inode), whatever
/// its link count now.
pub(super) fn is_the_file(src: &Source, rel: &Path, key: LinkKey) -> bool {
    src.status(rel)
        .is_ok_and(|s| s.dev == key.dev && s.ino == key.ino)
}
