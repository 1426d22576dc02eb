//! What keeps a pass from destroying what it should not: the deletion guard (an empty
//! source, a mass delete) and the adoption of a folder that was not yet a mirror (what
//! it held is kept as versions, and the run says how to get it back).

use super::reconcile::ScanReport;
use super::{Mirror, shell_word};
use crate::engine::exec::Executor;
use crate::engine::plan::{Action, Held};
use crate::model::Kind;
use crate::output::names::{count_of, esc};
use chrono::Timelike;
use std::path::{Path, PathBuf};

/// How far DST is from being a datasafe mirror. What a folder held before it became a
/// mirror was never datasafe's: it is removed or replaced as the source says, but
/// always kept as versions, and the run says so once, loudly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Adopting {
    /// A mirror (or not writing).
    No,
    /// DST had no `.datasafe` folder when it was opened: everything it holds is
    /// someone else's.
    Fresh,
    /// A first pass began but did not complete (the index says `adopted = 0`): names
    /// the index does not know are someone else's.
    Unfinished,
}

/// The index's fact saying whether DST has had its first complete pass as a mirror
/// (`0` until then; absent in mirrors made before it existed, which are mirrors).
pub(super) const ADOPTED: &str = "adopted";

impl Mirror {
    /// Before a full pass's follow-up: if DST is not a mirror yet, notes the moment
    /// (for the `restore` command the warning gives) and the versions kept so far; in a
    /// fresh DST, every file replaced from now on is kept too.
    pub(super) fn start_adopting(&mut self) -> Option<(chrono::NaiveDateTime, u64)> {
        if self.adopting == Adopting::No {
            return None;
        }
        let exec = self.mode.executor()?;
        let at = chrono::Local::now().naive_local();
        let at = at.with_nanosecond(0).unwrap_or(at);
        exec.keep_every_deletion(self.adopting == Adopting::Fresh);
        Some((at, exec.versions_kept()))
    }

    /// Deletes what DST held before it became a mirror and the source lacks, keeping
    /// every file as a version, and says so in one warning: how many, where, and the
    /// `restore` command that brings them back. After a complete pass with deletions
    /// on and nothing held back, DST is a mirror (`adopted = 1` in the index).
    pub(super) fn finish_adopting(
        &mut self,
        (at, kept_before): (chrono::NaiveDateTime, u64),
        foreign: Vec<Action>,
        complete: bool,
    ) {
        let planned: Vec<(PathBuf, Option<Kind>)> = foreign
            .iter()
            .map(|a| match a {
                Action::Delete { name, kind, .. } => (name.clone(), Some(*kind)),
                other => (other.dest_name(), None),
            })
            .collect();
        if let Some(exec) = self.mode.executor() {
            exec.keep_every_deletion(true);
        }
        let before_foreign = self.mode.executor().map_or(0, Executor::versions_kept);
        if !foreign.is_empty() {
            self.pump_all(foreign);
        }
        let Some(exec) = self.mode.executor() else {
            return;
        };
        let versions = crate::store::layout::versions();
        // Only names that left something to restore: a symlink or a folder holding no
        // file keeps no version, and `restore` refuses a PATH with nothing under it.
        let names: Option<Vec<PathBuf>> = planned
            .into_iter()
            .map(|(name, kind)| match kind? {
                Kind::File => Some(Some(name)),
                Kind::Dir => {
                    let kept = exec.store().stat(&versions.join(&name));
                    Some(matches!(kept, Ok(Some(s)) if s.kind == Kind::Dir).then_some(name))
                }
                _ => Some(None),
            })
            .collect::<Option<Vec<Option<PathBuf>>>>()
            .map(|n| n.into_iter().flatten().collect());
        exec.keep_every_deletion(false);
        let kept_now = exec.versions_kept();
        let all = kept_now - kept_before;
        let removed = kept_now - before_foreign;
        let kept = if self.adopting == Adopting::Fresh {
            all
        } else {
            removed
        };
        if kept > 0 {
            let (src, dst) = (&self.cfg.pair.src, &self.cfg.pair.dst.display());
            // Only the removed names, when they are all there is and few: else the
            // whole mirror as it was then (which holds them).
            let names = names.unwrap_or_default();
            let plain = names.iter().all(|n| n.to_str().is_some());
            let paths = if removed == kept && !names.is_empty() && names.len() <= 10 && plain {
                names
                    .iter()
                    .map(|n| format!(" {}", shell_word(&n.to_string_lossy())))
                    .collect::<String>()
            } else {
                String::new()
            };
            let (were, they) = if kept == 1 {
                ("was", "it was")
            } else {
                ("were", "they were")
            };
            log::warn!(
                "{} held {} that {were} there before it became a mirror of {} (not in the \
                 source, or replaced by it): {they} kept in {}, not lost; to get {} back, run: \
                 datasafe restore {} {} --at \"{}\"{paths}",
                esc(dst),
                count_of(kept, "file"),
                esc(src),
                esc(&dst.join(crate::store::layout::versions())),
                if kept == 1 { "it" } else { "them" },
                shell_word(&dst.to_string_lossy()),
                shell_word(&restore_target(dst).to_string_lossy()),
                at.format(crate::read::restore::AT_FORMAT),
            );
        }
        if complete && self.cfg.plan.delete && !self.stopped() {
            if let Some(index) = self.tally.index.0.as_mut() {
                let result = index.set_mirror_fact(ADOPTED, "1");
                self.tally.index.check(result);
            }
            self.adopting = Adopting::No;
        }
    }

    /// Whether the deletion guard holds back the deletions of a full pass that found
    /// `report` (source entries, files in DST, files the deletions remove); says why if
    /// so.
    pub(super) fn guard_holds(&mut self, report: &ScanReport) -> Option<Held> {
        let (deleting, mirror_files) = (report.deleting, report.mirror_files);
        let held = self
            .cfg
            .guard
            .holds(report.sources, deleting, mirror_files)?;
        let (src, dst) = (&self.cfg.pair.src, &self.cfg.pair.dst.display());
        // A running watcher keeps its options: `datasafe release` is what lets them through.
        let how = if self.watched {
            format!("run datasafe release {}", shell_word(&esc(dst).to_string()))
        } else {
            "run again with --force".to_string()
        };
        match held {
            Held::EmptySource => log::error!(
                "the source {} is empty but its mirror {} holds {}: nothing is deleted. If \
                 the source is an unmounted drive, mount it; if you emptied it on purpose, \
                 {how}",
                esc(src),
                esc(dst),
                count_of(mirror_files, "file")
            ),
            Held::MassDelete => log::error!(
                "held back {} in {}: this pass would delete {deleting} of the mirror's \
                 {} ({}); nothing was deleted. Check the source {}; to let \
                 them through, {how}",
                count_of(deleting, "deletion"),
                esc(dst),
                count_of(mirror_files, "file"),
                match self.cfg.guard.max_delete {
                    Some(max) => format!("more than max_delete = {max}"),
                    None => "more than half of it".to_string(),
                },
                esc(src)
            ),
        }
        self.tally.summary.held_deletions = deleting;
        self.holding = Some((held, deleting));
        Some(held)
    }

    /// Why the last full pass held its deletions back, if it did (cleared by reading).
    pub fn take_held(&mut self) -> Option<Held> {
        self.held.take()
    }

    /// The deletions the last full pass held back and why, until a full pass holds
    /// none (for `status`).
    pub fn holding(&self) -> Option<(Held, u64)> {
        self.holding
    }
}

/// A folder beside DST that does not exist yet, to restore into.
fn restore_target(dst: &Path) -> PathBuf {
    // Beside DST, never inside it (a DST given with a trailing slash included).
    let name = dst
        .file_name()
        .map_or_else(|| "mirror".into(), |n| n.to_string_lossy().into_owned());
    let parent = dst.parent().unwrap_or(Path::new("/"));
    let candidate = |n: u32| match n {
        1 => parent.join(format!("{name}.before-datasafe")),
        n => parent.join(format!("{name}.before-datasafe-{n}")),
    };
    (1..1000)
        .map(candidate)
        .find(|p| std::fs::symlink_metadata(p).is_err())
        .unwrap_or_else(|| candidate(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_restore_target_lies_beside_the_mirror() {
        assert_eq!(
            restore_target(Path::new("/no/such/dir/Documents/")),
            Path::new("/no/such/dir/Documents.before-datasafe")
        );
    }
}
