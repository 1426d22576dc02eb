//! Why a pair stops mirroring without stopping ([`Pause`]): its source is gone, is
//! another folder than the one mirrored (an unmount, a folder made again), or is empty
//! while the mirror holds files (the deletion guard). Pausing deletes nothing; `tick`
//! resumes the pair when the source is back. Also `datasafe release`: a full pass without
//! the deletion guard.

use super::pair::{State, Watched};
use crate::config::check_source;
use crate::daemon::status::Board;
use crate::engine::mirror::Mirror;
use crate::output::names::{count_of, esc, shell_word};
use crate::platform::root_id;
use std::time::Instant;

/// Why a pair is paused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Pause {
    /// The source root is missing or unreadable.
    Gone,
    /// The source root is empty while its mirror holds files (the deletion guard).
    Empty,
    /// The source root is another folder than the one mirrored: its filesystem was
    /// unmounted (or another mounted over it), or it was deleted and made again.
    Moved,
}

impl Watched {
    /// True if the source root is still the folder the pair started with (or its
    /// identity cannot be read, which the existence check covers).
    pub(super) fn same_root(&self) -> bool {
        match (self.identity, root_id(self.src())) {
            (Some(was), Ok(now)) => was == now,
            _ => true,
        }
    }

    /// The OS said a filesystem under the source was unmounted: pause if that was the
    /// source's own (its root is another folder now); else (a filesystem mounted
    /// inside the source) rescan, which watches it again.
    pub(super) fn unmounted(&mut self) {
        if self.state != State::Watching {
            return;
        }
        if self.same_root() {
            self.rescan_wanted = true;
        } else {
            self.moved(Some("its filesystem was unmounted"));
        }
    }

    /// The source root turned into another folder: pause, delete nothing.
    pub(super) fn moved(&mut self, why: Option<&str>) {
        self.state = State::Paused(Pause::Moved);
        self.pending.clear();
        self.seen = root_id(self.src()).ok();
        let dst = &self.settings.config.pair.dst.display();
        log::error!(
            "source {} is no longer the folder being mirrored ({}); this pair is paused and \
             nothing is deleted: the mirror in {} is kept as it is. Mirroring resumes when the \
             same filesystem is back; to mirror what is there now instead, restart `datasafe \
             watch` (or stop it and run `datasafe sync {} {}` with the options you watch it \
             with)",
            esc(self.src()),
            why.unwrap_or("it was unmounted, or replaced by another folder"),
            esc(dst),
            shell_word(self.src()),
            shell_word(dst)
        );
    }

    /// While paused for another root: says once per new folder how to go on.
    pub(super) fn another_root(&mut self) {
        let now = root_id(self.src()).ok();
        if now.is_none() || now == self.seen {
            return;
        }
        self.seen = now;
        log::error!(
            "source {} is now a different folder or filesystem than the one mirrored; the \
             pair stays paused and its mirror {} is kept as it is. If this is the source now, \
             restart `datasafe watch` to mirror it (or stop the watcher and run `datasafe \
             sync {} {}` with the options you watch it with)",
            esc(self.src()),
            esc(&self.settings.config.pair.dst.display()),
            shell_word(self.src()),
            shell_word(&self.settings.config.pair.dst.display())
        );
    }

    /// Runs a full pass without the deletion guard if this pair holds deletions back;
    /// returns whether it did.
    pub(super) fn release(&mut self, board: &Board) -> bool {
        let empty = self.state == State::Paused(Pause::Empty);
        let holding = self.mirror.as_ref().and_then(Mirror::holding);
        if !(empty || self.state == State::Watching && holding.is_some()) {
            return false;
        }
        if check_source(self.src()).is_err() || !self.same_root() {
            log::error!(
                "not releasing the deletions held back in {}: the source {} is missing or \
                 not the folder being mirrored",
                esc(&self.settings.config.pair.dst.display()),
                esc(self.src())
            );
            return true;
        }
        let Some(mirror) = self.mirror.as_mut() else {
            return false;
        };
        log::warn!(
            "releasing {} held back in {}: a full pass without the deletion guard",
            holding.map_or_else(
                || "the deletions".to_string(),
                |(_, n)| count_of(n, "deletion")
            ),
            esc(&self.settings.config.pair.dst.display())
        );
        board.set_state(self.id, "reconciling");
        self.rescan_wanted = false;
        mirror.reconcile_forced();
        mirror.commit();
        let _ = mirror.take_held();
        self.state = State::Watching;
        self.last_reconcile = Instant::now();
        true
    }

    pub(super) fn pause(&mut self, why: &str) {
        if self.state == State::Paused(Pause::Gone) {
            return;
        }
        self.state = State::Paused(Pause::Gone);
        self.pending.clear();
        log::error!(
            "{why}; the mirror in {} is kept as it is, and mirroring resumes when the \
             source is back",
            esc(&self.settings.config.pair.dst.display())
        );
    }
}
