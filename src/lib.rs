//! datasafe keeps live, versioned, optionally gzipped mirrors of directories. The crate
//! is a library with a thin binary on top; data flows one way:
//! scan (or watch) → plan → exec → index. See ARCHITECTURE.md for the map.

pub mod agent;
pub mod app;
pub mod archive;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod exec;
pub mod filter;
/// The bodies of the fuzz targets (`fuzz/`, `tests/fuzz_smoke.rs`); not an interface.
#[doc(hidden)]
pub mod fuzzing;
pub mod hash;
pub mod history;
pub mod index;
pub mod logging;
pub mod names;
pub mod plan;
pub mod platform;
pub mod repair;
pub mod report;
pub mod restore;
pub mod scan;
pub mod status;
pub mod sync;
pub mod verify;
pub mod versions;
pub mod watch;
