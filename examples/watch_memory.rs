//! What watching a big tree costs in memory and time: the RSS a process gains from one
//! recursive `watch()` of DIR with datasafe's OS watcher (`watch::OsWatcher`: on Linux
//! its compact inotify watcher) or with notify's own recommended one, one watcher per
//! process. BENCHMARKS.md ("The OS watcher's own memory") reports it; under `heaptrack`
//! it also gives the heap.
//!
//!     cargo run --release --example watch_memory -- DIR [ours|notify]

use notify::{Config, EventKindMask, RecursiveMode, Watcher};
use std::path::PathBuf;
use std::time::Instant;

/// A `/proc/self/status` field in KiB (0 where there is no `/proc`).
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args_os().skip(1);
    let Some(dir) = args.next().map(PathBuf::from) else {
        eprintln!("usage: watch_memory DIR [ours|notify]");
        std::process::exit(2);
    };
    let which = args
        .next()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_else(|| "ours".into());
    let config = Config::default()
        .with_follow_symlinks(false)
        .with_event_kinds(EventKindMask::CORE);
    let before = status_kib("VmRSS:");
    let start = Instant::now();
    let watcher: Box<dyn std::any::Any> = match which.as_str() {
        "ours" => {
            let mut w = datasafe::watch::OsWatcher::new(|_| {}, config)?;
            w.watch(&dir, RecursiveMode::Recursive)?;
            Box::new(w)
        }
        "notify" => {
            let mut w = notify::RecommendedWatcher::new(|_| {}, config)?;
            w.watch(&dir, RecursiveMode::Recursive)?;
            Box::new(w)
        }
        other => {
            eprintln!("watch_memory: unknown watcher {other:?}: say ours or notify");
            std::process::exit(2);
        }
    };
    let took = start.elapsed();
    let after = status_kib("VmRSS:");
    println!(
        "{which}: watched {} in {took:.2?}; RSS {before} -> {after} KiB (+{} KiB), peak {} KiB",
        dir.display(),
        after.saturating_sub(before),
        status_kib("VmHWM:")
    );
    drop(watcher);
    Ok(())
}
