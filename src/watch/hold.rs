//! The hold thread ([`Hold`]): takes the debouncer's batches and releases each event
//! exactly the debounce after its path was last touched (as the [`Tap`] saw it), so a
//! path is acted on only once it has been quiet for the whole debounce. It also re-checks
//! paths renamed away whose rename the debouncer lost.

use super::tap::Tap;
use super::{Signal, translate};
use crossbeam_channel::{RecvTimeoutError, Sender};
use notify::EventKind;
use notify::event::{ModifyKind, RenameMode};
use notify_debouncer_full::DebouncedEvent;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::RwLock;
use std::time::{Duration, Instant};

/// Debounced events waiting until they are exactly the debounce old, oldest first.
pub(super) struct Hold {
    pub(super) debounce: Duration,
    pub(super) held: VecDeque<DebouncedEvent>,
}

impl Hold {
    /// Takes batches from the debouncer until it stops, releasing each event at its
    /// deadline as signals. Blocks on the channel while nothing is held.
    pub(super) fn run(
        mut self,
        batches: &crossbeam_channel::Receiver<Vec<DebouncedEvent>>,
        tap: &Tap,
        roots: &RwLock<Vec<(usize, PathBuf)>>,
        signals: &Sender<Signal>,
    ) {
        loop {
            let next = match self.held.front() {
                None => batches.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(first) => batches.recv_deadline(first.time + self.debounce),
            };
            match next {
                Ok(batch) => batch.into_iter().for_each(|e| self.hold(e)),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            let ready = self.release(Instant::now(), tap);
            if ready.is_empty() {
                continue;
            }
            let roots = roots.read().unwrap_or_else(|e| e.into_inner());
            for signal in translate(&ready, &roots) {
                let _ = signals.send(signal);
            }
        }
    }

    /// Holds `event` in deadline order (behind any held event of the same time).
    fn hold(&mut self, event: DebouncedEvent) {
        let at = self.held.partition_point(|e| e.time <= event.time);
        self.held.insert(at, event);
    }

    /// The held events that are the debounce old at `now`, in order. An event whose path
    /// was touched again while it was held (a write after a create, say, which the
    /// debouncer folds into the create) is held again until the debounce after that
    /// touch, so nothing is acted on before its path has been quiet for the debounce.
    fn release(&mut self, now: Instant, tap: &Tap) -> Vec<DebouncedEvent> {
        let mut ready = Vec::new();
        while let Some(first) = self.held.front() {
            if first.time + self.debounce > now {
                break;
            }
            let Some(mut event) = self.held.pop_front() else {
                break;
            };
            match tap.touched_since(&event) {
                Some(at) if at + self.debounce > now => {
                    event.time = at;
                    self.hold(event);
                }
                _ => {
                    if matches!(
                        event.kind,
                        EventKind::Modify(ModifyKind::Name(RenameMode::Both))
                    ) && let Some(from) = event.paths.first()
                    {
                        tap.renamed(from);
                    }
                    tap.forget(&event.paths);
                    ready.push(event);
                }
            }
        }
        ready.extend(tap.lost_renames(now, self.debounce));
        ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::tests::ev;
    use notify::Event;
    use notify::event::{CreateKind, DataChange, RemoveKind};

    #[test]
    fn hold_releases_each_event_exactly_the_debounce_after_its_path_went_quiet() {
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let tap = Tap::default();
        let mut hold = Hold {
            debounce: ms(50),
            held: VecDeque::new(),
        };
        let at = |event: DebouncedEvent, time: Instant| DebouncedEvent { time, ..event };
        let created = ev(EventKind::Create(CreateKind::File), &["/a/new"]);
        let written = ev(
            EventKind::Modify(ModifyKind::Data(DataChange::Any)),
            &["/a/new"],
        );
        let renamed = ev(
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
            &["/a/x", "/a/y"],
        );
        let quiet = ev(EventKind::Remove(RemoveKind::File), &["/a/old"]);
        // The create, and a write 10 ms later that the debouncer folded into it.
        tap.note(&created, t0);
        tap.note(&written, t0 + ms(10));
        tap.note(&renamed, t0 + ms(5));
        tap.note(&renamed, t0 + ms(20));
        tap.note(&quiet, t0 + ms(30));
        hold.hold(at(quiet, t0 + ms(30)));
        hold.hold(at(created, t0));
        hold.hold(at(renamed, t0 + ms(5)));
        let paths = |events: Vec<DebouncedEvent>| -> Vec<Vec<PathBuf>> {
            events.into_iter().map(|e| e.event.paths).collect()
        };
        assert!(hold.release(t0 + ms(49), &tap).is_empty());
        // Due, but touched at 10 ms: held until 60 ms.
        assert!(hold.release(t0 + ms(50), &tap).is_empty());
        // A rename is released on time even though its paths were touched since.
        assert_eq!(
            paths(hold.release(t0 + ms(55), &tap)),
            [vec![PathBuf::from("/a/x"), PathBuf::from("/a/y")]]
        );
        assert!(hold.release(t0 + ms(59), &tap).is_empty());
        assert_eq!(
            paths(hold.release(t0 + ms(60), &tap)),
            [vec![PathBuf::from("/a/new")]]
        );
        assert_eq!(
            paths(hold.release(t0 + ms(80), &tap)),
            [vec![PathBuf::from("/a/old")]]
        );
        assert!(hold.held.is_empty());
        assert!(
            tap.lock().last_touch.is_empty(),
            "released paths are forgotten"
        );
    }

    #[test]
    fn a_rename_the_debouncer_lost_is_re_checked_at_its_old_name() {
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let tap = Tap::default();
        let mut hold = Hold {
            debounce: ms(50),
            held: VecDeque::new(),
        };
        // `mv a x; rm x`: the debouncer emits only the removal of x.
        let from = Event::new(EventKind::Modify(ModifyKind::Name(RenameMode::From)))
            .add_path("/r/a".into());
        tap.note(&from, t0);
        let removed = ev(EventKind::Remove(RemoveKind::File), &["/r/x"]);
        tap.note(&removed, t0 + ms(10));
        hold.hold(DebouncedEvent {
            time: t0 + ms(10),
            ..removed
        });
        let got: Vec<Vec<PathBuf>> = hold
            .release(t0 + ms(60), &tap)
            .into_iter()
            .map(|e| e.event.paths)
            .collect();
        assert_eq!(
            got,
            [vec![PathBuf::from("/r/x")], vec![PathBuf::from("/r/a")]]
        );
        // A rename the debouncer did deliver is not re-checked on its own.
        let both = Event::new(EventKind::Modify(ModifyKind::Name(RenameMode::Both)))
            .add_path("/r/b".into())
            .add_path("/r/c".into());
        tap.note(&both, t0 + ms(100));
        hold.hold(DebouncedEvent::new(both, t0 + ms(100)));
        assert_eq!(hold.release(t0 + ms(150), &tap).len(), 1);
        assert!(tap.lost_renames(t0 + ms(500), ms(50)).is_empty());
    }
}
