//! The one integration-test binary (as ripgrep and fd have): every file in `tests/` is a
//! module of it, so `common/` and the dependencies link once instead of once per file.
//! A file keeps its name and its `//!` paragraph; its tests are named `FILE::TEST`, so
//! `cargo test sync_faults::` runs one file and `cargo test regression_watch` still picks
//! tests by name.
//!
//! All modules run in one process, on the test harness's threads: a test must not change
//! what the process shares (the working directory, environment variables, signal
//! dispositions, the uid); it passes such things to the children it starts instead. What
//! is shared beyond the process (the per-user inotify limits) is guarded by the file lock
//! in `common::watcher`.

mod common;

mod archive;
mod attrs;
mod beneath;
mod config;
mod fuzz_smoke;
mod hard_links;
mod model;
mod regressions_cli;
mod regressions_qa_data;
mod regressions_qa_truth;
mod regressions_repair;
mod regressions_versions;
mod regressions_watch;
mod restore;
mod s3_behaviour;
mod s3_faults;
mod seaweed_harness;
mod sftp_behaviour;
mod sftp_faults;
mod sftp_read;
mod sparse;
mod sshd_harness;
mod sync;
mod sync_faults;
mod verify;
mod versions;
mod watch;
mod watch_faults;
