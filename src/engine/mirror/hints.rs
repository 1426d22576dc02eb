//! A watcher's hints ([`Mirror::apply`]): renames first, then each changed path
//! re-checked against the source as it is now (`plan_path`, `plan_gone`,
//! `plan_rename`); folders that appeared are walked by a scoped reconcile.

use super::reconcile::say_if_uncompressed;
use super::relink::{HintLinks, is_the_file};
use super::{Applied, Mirror};
use crate::engine::plan::{self, Action, Decision, Keep};
use crate::engine::scan;
use crate::engine::source::Source;
use crate::model::Kind;
use crate::model::{MirrorState, Record, Stored};
use crate::output::names::{esc, io_message};
use crate::watch::Hint;
use std::collections::{BTreeMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};

impl Mirror {
    /// Re-checks the paths `hints` name against the source as it is now and makes DST
    /// match: copies, deletes, renames, walks folders that appeared.
    pub fn apply(&mut self, hints: Vec<Hint>) -> Applied {
        if !self.source_present() {
            return Applied::SourceGone;
        }
        // Every path below is looked at from SRC's root handle, never re-resolved.
        let Ok(src) = Source::open(&self.cfg.pair.src) else {
            return Applied::SourceGone;
        };
        let (renames, changes) = coalesce(hints);
        let mut changes = changes;
        for (from, to) in renames {
            if let Some(action) = self.plan_rename(&src, &from, &to) {
                self.pump_all(vec![action]);
            }
            // Whatever the rename did, both paths are re-checked: that cleans up after
            // a failed rename and catches a change made together with it.
            let to_is_dir = src.status(&to).is_ok_and(|s| s.kind == Kind::Dir);
            changes.entry(from).or_insert(false);
            *changes.entry(to).or_insert(false) |= to_is_dir;
        }
        let changes = drop_covered(changes);
        let mut actions = Vec::new();
        let mut walks = Vec::new();
        let mut links = HintLinks::default();
        for (rel, walk) in changes {
            self.plan_path(&src, &rel, walk, &mut actions, &mut walks, &mut links);
        }
        // Deletions that arrive as events are carried out even when they leave SRC
        // empty: the user deleted those files one by one, in a source the caller has
        // checked is still the same folder (the empty-source and mass-delete guard is
        // for full passes, which cannot tell an emptied folder from an unmounted one).
        if !actions.is_empty() {
            self.pump_all(actions);
        }
        if !self.stopped() {
            self.finish_links(&src, links);
        }
        for scope in walks {
            if self.stopped() {
                break;
            }
            self.reconcile(&scope);
        }
        if !self.stopped() {
            self.finish_dirs(Vec::new());
        }
        Applied::Done
    }

    /// Plans what one path needs, looking at it as it is now.
    fn plan_path(
        &mut self,
        src: &Source,
        rel: &Path,
        walk: bool,
        actions: &mut Vec<Action>,
        walks: &mut Vec<PathBuf>,
        links: &mut HintLinks,
    ) {
        if rel.as_os_str().is_empty() {
            if walk {
                walks.push(PathBuf::new());
            } else {
                self.tally.touched.insert(PathBuf::new());
            }
            return;
        }
        if self.rules.covers(rel) {
            return;
        }
        // Whatever happened at `rel` may have changed its folder's mtime (a file made and
        // removed within the debounce leaves nothing else to do): refresh the folder's
        // metadata if DST has it.
        let parent = rel.parent().unwrap_or(Path::new(""));
        if self.dest_is_dir(parent) {
            self.tally.touched.insert(parent.to_path_buf());
        }
        let path = src.path(rel);
        // A folder on the way that is a symlink now (NotADirectory) means `rel` is gone
        // from SRC: what the link leads to is never read.
        let mut entry = match src.entry(rel, &self.cfg.plan.kept) {
            Ok(entry) => entry,
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    || e.kind() == io::ErrorKind::NotADirectory =>
            {
                self.plan_gone(rel, actions);
                return;
            }
            Err(e) => {
                self.tally.summary.failed += 1;
                log::error!("reading {}: {}", esc(&path), io_message(&e));
                return;
            }
        };
        if !self.cfg.plan.hard_links {
            // As a full pass sees it (`Merge::item`): names are separate files.
            entry.link = None;
        }
        let Some(name) = plan::target_name(&entry, &self.cfg.plan) else {
            self.tally.summary.skipped += 1;
            log::warn!(
                "skipping {}: not a regular file, folder or symlink",
                esc(&path)
            );
            return;
        };
        // Stored under another name before (kind or form changed): that name goes. Only
        // a file stored in the other form is a conversion; a file that became a folder
        // or a link (`f.gz` → `f/` under --compress) is a deletion, logged, counted and
        // kept as a version, and left alone by --no-delete, as in a full pass.
        for (old, record) in self.stored_names(rel) {
            if old != name {
                let converted = record.kind == entry.kind;
                if converted || self.cfg.plan.delete {
                    actions.push(Action::Delete {
                        name: old,
                        kind: record.kind,
                        superseded: converted,
                    });
                }
            }
        }
        let known = self.tally.index.get(&name);
        if entry.kind == Kind::Dir {
            if walk || !known.as_ref().is_some_and(|r| r.kind == Kind::Dir) {
                walks.push(entry.rel);
            } else {
                // A folder's own metadata changed.
                self.tally.touched.insert(entry.rel);
            }
            return;
        }
        let mut decision = plan::plan_entry(&entry, known.as_ref(), &self.cfg.plan);
        if let Some(key) = plan::left_alone(&entry, known.as_ref(), &self.cfg.plan)
            && let Some(known) = &known
            && is_the_file(src, rel, key)
        {
            // Its other names went: DST's file stays (see `plan::plan_survivor`).
            decision = plan::plan_survivor(&entry, known, &self.cfg.plan);
        }
        let action = match decision {
            Decision::Unchanged => {
                // An event said this file changed, yet size and mtime match: two writes
                // within one kernel timestamp tick look like that. For a recent mtime,
                // compare content rather than trust the clock.
                known
                    .clone()
                    .filter(|_| entry.kind == Kind::File && recently(entry.meta.mtime))
                    .map(|known| Action::Compare {
                        stored: self.cfg.plan.stored_for(&entry.rel),
                        entry: entry.clone(),
                        known: Box::new(known),
                    })
            }
            Decision::Act(action) => {
                say_if_uncompressed(&action, &self.cfg.plan, &self.cfg.pair.src);
                Some(action)
            }
            Decision::Skip(why) => {
                self.tally.summary.skipped += 1;
                log::warn!("skipping {}: {why}", esc(&path));
                None
            }
        };
        // Names of a file with several names go with the others (see `relink`).
        actions.extend(self.plan_linked(src, entry, &name, known, action, links));
    }

    /// Plans the deletions for source path `rel`, which is gone: by the same rule as a
    /// full pass (`plan::plan_deletions` over what DST holds there, with nothing wanted),
    /// so excluded names and the folders holding them stay, and with `delete` off
    /// nothing goes.
    fn plan_gone(&mut self, rel: &Path, actions: &mut Vec<Action>) {
        let mut listing: Vec<(PathBuf, Kind)> = Vec::new();
        for (name, record) in self.stored_names(rel) {
            let items = match record.kind {
                Kind::Dir => self.list_dest(&name),
                _ => Vec::new(),
            };
            if items.is_empty() {
                // A file, or a folder DST no longer shows: its record goes either way.
                listing.push((name, record.kind));
            } else {
                listing.extend(items.into_iter().map(|i| (i.rel, i.kind)));
            }
        }
        if listing.is_empty() {
            return;
        }
        let keep = Keep {
            excludes: Some(&self.cfg.excludes),
            unreadable: &[],
        };
        let names = listing.iter().map(|(n, k)| (n.as_path(), *k));
        actions.extend(plan::plan_deletions(
            names,
            &HashSet::new(),
            &MirrorState::default(),
            &keep,
            &self.cfg.plan,
        ));
    }

    /// The names DST holds for source path `rel`, per the index (plain and `.gz`).
    fn stored_names(&mut self, rel: &Path) -> Vec<(PathBuf, Record)> {
        [Stored::Plain, Stored::Gzip]
            .into_iter()
            .filter_map(|form| {
                let name = form.name_for(rel);
                let record = self.tally.index.get(&name)?;
                let is_file_form = record.kind == Kind::File && record.stored == form;
                (form == Stored::Plain && record.kind != Kind::File || is_file_form)
                    .then_some((name, record))
            })
            .collect()
    }

    /// A rename inside SRC becomes a rename inside DST when DST holds the old name as
    /// the index says and the source really moved (old name gone, new one there).
    /// Without `delete`, the old name stays: the new one is copied like any new path.
    fn plan_rename(&mut self, src: &Source, from: &Path, to: &Path) -> Option<Action> {
        if !self.cfg.plan.delete {
            return None;
        }
        let empty = |p: &Path| p.as_os_str().is_empty();
        if empty(from) || empty(to) || self.rules.covers(from) || self.rules.covers(to) {
            return None;
        }
        if src.status(from).is_ok() {
            return None;
        }
        let kind = src.status(to).ok()?.kind;
        let (from_name, to_name) = match kind {
            Kind::File => {
                let plan = &self.cfg.plan;
                let (from_form, to_form) = (plan.stored_for(from), plan.stored_for(to));
                (from_form.name_for(from), to_form.name_for(to))
            }
            Kind::Dir | Kind::Symlink => (from.to_path_buf(), to.to_path_buf()),
            Kind::Special => return None,
        };
        let record = self.tally.index.get(&from_name)?;
        if kind == Kind::Dir && !self.rename_keeps_excluded(&from_name, &to_name) {
            return None;
        }
        let same_form = kind != Kind::File
            || record.stored == self.cfg.plan.stored_for(from)
                && record.stored == self.cfg.plan.stored_for(to);
        (record.kind == kind && same_form).then_some(Action::Rename {
            from: from_name,
            to: to_name,
            kind,
        })
    }

    /// False if renaming DST's folder `from` to `to` would carry an excluded name inside
    /// it to a name no longer excluded (an anchored `/from/keep`), which the next pass
    /// would delete: then the folder is copied anew and the old one deleted by the rule
    /// that keeps excluded names, as `sync` does.
    /// DST's names at and below `scope`, through the carrier's store.
    fn list_dest(&self, scope: &Path) -> Vec<scan::DestItem> {
        self.mode
            .reader()
            .map_or_else(Vec::new, |dst| scan::list_store(&*dst, scope, false))
    }

    fn rename_keeps_excluded(&self, from: &Path, to: &Path) -> bool {
        if self.cfg.excludes.is_empty() {
            return true;
        }
        let keep = Keep {
            excludes: Some(&self.cfg.excludes),
            unreadable: &[],
        };
        self.list_dest(from)
            .iter()
            .filter(|i| keep.keeps(&i.rel))
            .all(|i| {
                i.rel
                    .strip_prefix(from)
                    .is_ok_and(|rest| keep.keeps(&to.join(rest)))
            })
    }
}

/// Renames first (in order), then the changed paths (deduplicated, `walk` merged).
fn coalesce(hints: Vec<Hint>) -> (Vec<(PathBuf, PathBuf)>, BTreeMap<PathBuf, bool>) {
    let mut renames = Vec::new();
    let mut changes = BTreeMap::new();
    for hint in hints {
        match hint {
            Hint::Renamed { from, to } => renames.push((from, to)),
            Hint::Changed { rel, walk } => *changes.entry(rel).or_insert(false) |= walk,
        }
    }
    (renames, changes)
}

/// Drops changes inside a folder that is walked anyway.
fn drop_covered(changes: BTreeMap<PathBuf, bool>) -> Vec<(PathBuf, bool)> {
    let walked: HashSet<PathBuf> = changes
        .iter()
        .filter(|(_, walk)| **walk)
        .map(|(p, _)| p.clone())
        .collect();
    changes
        .into_iter()
        .filter(|(p, _)| !p.ancestors().skip(1).any(|a| walked.contains(a)))
        .collect()
}

/// True if `mtime` lies within the last few seconds (or in the future).
fn recently(mtime: filetime::FileTime) -> bool {
    let now = filetime::FileTime::now();
    now.unix_seconds() - mtime.unix_seconds() < 3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_coalesce_and_walks_cover_their_insides() {
        let hints = vec![
            Hint::Changed {
                rel: "a/x".into(),
                walk: false,
            },
            Hint::Renamed {
                from: "r1".into(),
                to: "r2".into(),
            },
            Hint::Changed {
                rel: "a".into(),
                walk: false,
            },
            Hint::Changed {
                rel: "a".into(),
                walk: true,
            },
            Hint::Changed {
                rel: "ab".into(),
                walk: false,
            },
        ];
        let (renames, changes) = coalesce(hints);
        assert_eq!(renames, [(PathBuf::from("r1"), PathBuf::from("r2"))]);
        let kept = drop_covered(changes);
        assert_eq!(
            kept,
            [(PathBuf::from("a"), true), (PathBuf::from("ab"), false)]
        );
    }
}
