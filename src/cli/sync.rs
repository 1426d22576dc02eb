//! The `sync` runner: one full reconcile of every enabled pair (`engine::mirror::Mirror`),
//! a line per pair when there are several, the summary of all, and the [`Exit`] the run
//! earns. The engine returns summaries; only this runner knows exit codes.
//!
//! A pair that cannot be mirrored at all (SRC missing, DST unwritable) ends a single-pair
//! run with the usage exit and no summary; in a config file's run it is one failure of
//! that pair, and the other pairs go on.

use crate::cli::SyncArgs;
use crate::cli::exit::Exit;
use crate::cli::run::{enabled_pairs, ended, start};
use crate::config::{PairSettings, Settings, Verbosity, check_source};
use crate::engine::mirror::Mirror;
use crate::engine::repair::Check;
use crate::output::report::Summary;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// `datasafe sync`: settles the arguments, runs every pair, says how the process ends.
pub(super) fn run(args: &SyncArgs) -> Exit {
    let (settings, stop) = match start(args.settings()) {
        Ok(started) => started,
        Err(exit) => return exit,
    };
    // `--repair` distrusts the index about DST's content, not only its names.
    let check = match args.repair {
        true => Check::Content,
        false => Check::Names,
    };
    ended(sync_pairs(&settings, &stop, &check))
}

/// One full reconcile of every enabled pair, each pass checking DST as `check` says;
/// prints the summary of all and maps it to the exit.
fn sync_pairs(settings: &Settings, stop: &Arc<AtomicBool>, check: &Check) -> Exit {
    let started = Instant::now();
    let output = &settings.output;
    let named = settings.file.is_some();
    let mut total = Summary {
        dry_run: output.dry_run,
        ..Summary::default()
    };
    for pair in enabled_pairs(&settings.pairs, stop, |p| (&p.name, p.enabled)) {
        crate::output::logging::set_pair(named.then(|| Arc::from(pair.name.as_str())));
        let show_progress = output.verbosity > Verbosity::Quiet;
        let result = sync_pair(pair, stop, show_progress, check);
        crate::output::logging::set_pair(None);
        match result {
            Ok(summary) => total.add(&pair.name, summary, named),
            Err(e) if named => {
                log::error!("[{}] {e}; the other pairs go on", pair.name);
                total.add(
                    &pair.name,
                    Summary {
                        failed: 1,
                        ..Summary::default()
                    },
                    named,
                );
            }
            Err(e) => {
                log::error!("{e}");
                crate::output::logging::clear_progress();
                return Exit::Usage;
            }
        }
    }
    total.interrupted = stop.load(Ordering::Relaxed);
    let word = if total.interrupted {
        "interrupted"
    } else {
        "completed"
    };
    total.finish(started, output.json, word);
    exit_of(&total)
}

/// The most passes a sync makes when its connection to DST is lost and made again.
const RESUME_PASSES: u32 = 3;

/// One full reconcile of one pair; an error is one that keeps the pair from being
/// mirrored at all (SRC is not a folder now, DST cannot be opened for writing).
fn sync_pair(
    pair: &PairSettings,
    stop: &Arc<AtomicBool>,
    show_progress: bool,
    check: &Check,
) -> anyhow::Result<Summary> {
    check_source(&pair.config.pair.src)?;
    let mut mirror = Mirror::open_to_sync(&pair.config, stop, show_progress)?;
    let mut connections = mirror.connections();
    mirror.reconcile_checking(Path::new(""), check);
    mirror.commit();
    // A remote DST reached again during the pass: what was in flight when the
    // connection went failed; another pass (which finds only that to do) resumes.
    for _ in 1..RESUME_PASSES {
        let reconnected = mirror.connections() != connections && !mirror.dest_lost();
        if !reconnected
            || mirror.summary().failed == 0
            || stop.load(std::sync::atomic::Ordering::Relaxed)
        {
            break;
        }
        log::info!("connected to the destination again; resuming the pass");
        connections = mirror.connections();
        mirror.resume(check);
    }
    Ok(mirror.into_summary())
}

/// The exit a finished run earns: interruption first, then any failure or deletion
/// held back (the mirror is not what SRC is), else success.
fn exit_of(total: &Summary) -> Exit {
    if total.interrupted {
        Exit::Interrupted
    } else {
        Exit::problems_unless(total.failed == 0 && total.held_deletions == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_exits_by_what_it_left_undone() {
        let exit = |s: Summary| exit_of(&s);
        assert_eq!(exit(Summary::default()), Exit::Success);
        let failed = Summary {
            failed: 1,
            ..Summary::default()
        };
        assert_eq!(exit(failed), Exit::Problems);
        let held = Summary {
            held_deletions: 3,
            ..Summary::default()
        };
        assert_eq!(exit(held), Exit::Problems);
        let stopped = Summary {
            failed: 1,
            interrupted: true,
            ..Summary::default()
        };
        assert_eq!(exit(stopped), Exit::Interrupted);
    }
}
