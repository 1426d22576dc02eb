//! The thin wrapper around the OS watcher ([`TapWatcher`]) that sees every raw event
//! before the debouncer, and what it notes per path ([`Tap`]): when each was last touched
//! (for the hold), first written (for the max-wait, [`Watch::overdue`]), and renamed away
//! (for renames the debouncer loses).

use notify::event::{ModifyKind, RenameMode};
use notify::{Event, EventKind, RecursiveMode, Watcher};
use notify_debouncer_full::DebouncedEvent;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// What the raw events said, per path: when each was last touched (for [`Hold`]) and when
/// each was first written since it was last emitted (for the max-wait). Bounded: past
/// [`Tap::CAP`] paths, entries older than the horizon are dropped, and past that a burst
/// is left to the debouncer and the fallback rescan.
#[derive(Default)]
pub(super) struct Tap {
    state: Mutex<TapState>,
}

#[derive(Default)]
pub(super) struct TapState {
    first_write: HashMap<PathBuf, Instant>,
    pub(super) last_touch: HashMap<PathBuf, Instant>,
    /// How long a touch matters to [`Hold`]: a little over the debounce.
    horizon: Duration,
    /// When `last_touch` was last pruned.
    last_prune: Option<Instant>,
    /// Paths renamed away, and when: each is re-checked once the debounce has passed,
    /// unless a debounced rename from it is released first. The debouncer drops a
    /// queued rename when its new name (or a folder around it) is removed within the
    /// debounce (`mv a x; rm x`), and then nothing would ever name the old path.
    renamed_from: HashMap<PathBuf, Instant>,
}

/// The tap shared by every [`TapWatcher`] (the OS watcher is built inside the debouncer,
/// which gives it no way to receive state of ours).
pub(super) static TAP: OnceLock<Arc<Tap>> = OnceLock::new();

impl Tap {
    const CAP: usize = 65536;

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, TapState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn set_horizon(&self, debounce: Duration) {
        self.lock().horizon = debounce * 2 + Duration::from_secs(1);
    }

    pub(super) fn note(&self, event: &Event, now: Instant) {
        let mut state = self.lock();
        let state = &mut *state;
        // Full: drop what is past the horizon, at most once per horizon (in a flood the
        // map stays full, and a scan per event would stall the OS watcher's thread).
        if state.last_touch.len() >= Self::CAP
            && state
                .last_prune
                .is_none_or(|at| now.duration_since(at) >= state.horizon)
        {
            let horizon = state.horizon;
            state
                .last_touch
                .retain(|_, at| now.duration_since(*at) < horizon);
            state.last_prune = Some(now);
        }
        let written = matches!(
            event.kind,
            EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Any)
        );
        if let (
            EventKind::Modify(ModifyKind::Name(RenameMode::From | RenameMode::Both)),
            Some(from),
        ) = (event.kind, event.paths.first())
            && state.renamed_from.len() < Self::CAP
        {
            state.renamed_from.insert(from.clone(), now);
        }
        for path in &event.paths {
            if state.last_touch.len() < Self::CAP {
                state.last_touch.insert(path.clone(), now);
            }
            if written && state.first_write.len() < Self::CAP {
                state.first_write.entry(path.clone()).or_insert(now);
            }
        }
    }

    /// When `event`'s paths were last touched, if after `event` itself. Renames and
    /// rescans are never held back: nothing later repeats them.
    pub(super) fn touched_since(&self, event: &DebouncedEvent) -> Option<Instant> {
        if event.need_rescan()
            || matches!(
                event.kind,
                EventKind::Modify(ModifyKind::Name(RenameMode::Both))
            )
        {
            return None;
        }
        let state = self.lock();
        event
            .paths
            .iter()
            .filter_map(|p| state.last_touch.get(p).copied())
            .max()
            .filter(|&at| at > event.time)
    }

    /// Paths renamed away at least `debounce` before `now` whose rename was not
    /// released (see [`TapState::renamed_from`]), as removal events to re-check them.
    pub(super) fn lost_renames(&self, now: Instant, debounce: Duration) -> Vec<DebouncedEvent> {
        let mut state = self.lock();
        if state.renamed_from.is_empty() {
            return Vec::new();
        }
        let due: Vec<(PathBuf, Instant)> = state
            .renamed_from
            .iter()
            .filter(|(_, at)| **at + debounce <= now)
            .map(|(p, at)| (p.clone(), *at))
            .collect();
        due.into_iter()
            .map(|(path, at)| {
                state.renamed_from.remove(&path);
                let event =
                    Event::new(EventKind::Remove(notify::event::RemoveKind::Any)).add_path(path);
                DebouncedEvent::new(event, at)
            })
            .collect()
    }

    /// A debounced rename from `from` is being acted on: no need to re-check it alone.
    pub(super) fn renamed(&self, from: &Path) {
        self.lock().renamed_from.remove(from);
    }

    /// Drops what is known about `paths` (they are being acted on).
    pub(super) fn forget(&self, paths: &[PathBuf]) {
        let mut state = self.lock();
        for path in paths {
            state.last_touch.remove(path);
            state.first_write.remove(path);
        }
    }

    pub(super) fn overdue(&self, max_wait: Duration) -> Vec<PathBuf> {
        let mut state = self.lock();
        let now = Instant::now();
        let mut due = Vec::new();
        for (path, since) in state.first_write.iter_mut() {
            if now.duration_since(*since) >= max_wait {
                due.push(path.clone());
                *since = now;
            }
        }
        due
    }
}

/// The platform's watcher ([`super::OsWatcher`]), with every raw event noted in the [`Tap`] before the
/// debouncer sees it.
pub struct TapWatcher(super::OsWatcher);

impl Watcher for TapWatcher {
    fn new<F: notify::EventHandler>(
        mut handler: F,
        config: notify::Config,
    ) -> notify::Result<Self> {
        let tap = TAP.get_or_init(Arc::default).clone();
        let tapped = move |event: notify::Result<Event>| {
            if let Ok(e) = &event {
                tap.note(e, Instant::now());
            }
            handler.handle_event(event);
        };
        super::OsWatcher::new(tapped, config).map(TapWatcher)
    }

    fn watch(&mut self, path: &Path, recursive_mode: RecursiveMode) -> notify::Result<()> {
        self.0.watch(path, recursive_mode)
    }

    fn unwatch(&mut self, path: &Path) -> notify::Result<()> {
        self.0.unwatch(path)
    }

    fn configure(&mut self, option: notify::Config) -> notify::Result<bool> {
        self.0.configure(option)
    }

    fn kind() -> notify::WatcherKind {
        super::OsWatcher::kind()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::DataChange;

    #[test]
    fn tap_reports_paths_written_past_max_wait_once_per_period() {
        let tap = Tap::default();
        let write = Event::new(EventKind::Modify(ModifyKind::Data(DataChange::Any)))
            .add_path("/a/log".into());
        tap.note(&write, Instant::now());
        assert!(tap.overdue(Duration::from_secs(3600)).is_empty());
        assert_eq!(tap.overdue(Duration::ZERO), [PathBuf::from("/a/log")]);
        tap.forget(&write.paths);
        assert!(tap.overdue(Duration::ZERO).is_empty());
    }
}
