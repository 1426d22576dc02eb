//! Driving the datasafe engine as a library: mirror one folder into another once, the
//! way `datasafe sync` does, and print what happened.
//!
//! cargo run --example mirror_once -- SRC DST

use datasafe::config::filter::Excludes;
use datasafe::config::{Config, Dest, Output, Pair, Verbosity};
use datasafe::engine::mirror::Mirror;
use datasafe::engine::plan::{Guard, PlanOptions};
use datasafe::store::versions::Retention;
use std::error::Error;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [src, dst] = args.as_slice() else {
        return Err("usage: mirror_once SRC DST".into());
    };
    let config = Config {
        pair: Pair::resolve(src, &Dest::parse(dst.as_os_str())?)?,
        plan: PlanOptions {
            compress: false,
            checksum: false,
            delete: true,
            whole_second_mtimes: false,
            owners: false,
            kept: Default::default(),
            hard_links: true,
        },
        versions: Retention::Staggered,
        versions_max_size: None,
        guard: Guard::default(),
        excludes: Excludes::new(&["*.tmp", ".cache"])?,
        jobs: 2,
        output: Output {
            dry_run: false,
            json: false,
            log_file: None,
            error_log: None,
            verbosity: Verbosity::Quiet,
        },
    };
    // Set this flag from another thread (a signal handler, say) to stop early.
    let stop = Arc::new(AtomicBool::new(false));
    let mut mirror = Mirror::open(&config, &stop, false)?;
    mirror.reconcile(Path::new(""));
    mirror.commit();
    let summary = mirror.into_summary();
    println!(
        "copied {} files ({} bytes), deleted {}, unchanged {}, failed {}",
        summary.copied, summary.bytes_copied, summary.deleted, summary.unchanged, summary.failed
    );
    Ok(())
}
