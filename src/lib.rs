//! datasafe keeps live, versioned, optionally gzipped mirrors of directories. The crate
//! is a library with a thin binary on top; data flows one way:
//! scan (or watch) → plan → execute → index, and only the store touches a destination.
//! See ARCHITECTURE.md for the map.

pub mod cli;
pub mod config;
pub mod daemon;
pub mod engine;
/// The bodies of the fuzz targets (`fuzz/`, `tests/fuzz_smoke.rs`); not an interface.
#[doc(hidden)]
pub mod fuzzing;
pub mod hash;
pub mod index;
pub mod model;
pub mod output;
pub mod platform;
pub mod read;
pub mod sparse;
pub mod store;
pub mod watch;
