//! Hard links under a watcher ([`Mirror::apply`]'s share of `plan::links`): an edit
//! through one name of a file with several names raises an event for that name only.
//! Its copy is planned as usual; once it is installed, every other name the index
//! records for the same source file (`Index::linked`) whose source is still that file
//! becomes a name of the new copy, so an edit through any name updates all names. A
//! new name of a file DST holds current (`ln a b`) is linked, not copied. A name that
//! left the group (its source is another file now) is planned like any file.

use super::Mirror;
use crate::engine::plan::Action;
use crate::engine::plan::links::{self, Leaders, LinkTo, Linked};
use crate::engine::source::Source;
use crate::model::{Entry, Kind, LinkKey, Record};
use std::path::{Path, PathBuf};

/// What a batch of hints defers until its copies are installed.
#[derive(Default)]
pub(super) struct HintLinks {
    /// The first name of each source file met in the batch (and the links to it).
    leaders: Leaders,
    /// New names of files DST holds current, linked to a recorded name.
    direct: Vec<Action>,
    /// Names written in this batch whose other recorded names follow them: the key,
    /// the name in DST, what the index held for it before.
    written: Vec<(LinkKey, PathBuf, Option<Record>)>,
}

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
            && let Some((to, record)) = self
                .other_names(src, key, name)
                .into_iter()
                .find(|(_, r, _)| r.meta == entry.meta && r.stored == stored)
                .map(|(to, r, _)| (to, r))
        {
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
        if action.is_some() {
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
