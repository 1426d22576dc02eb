//! The runners that talk to a running watcher through its status file: `status` and
//! `release`. Neither sets up logging: they print their answer and say why not.

use crate::cli::exit::Exit;
use crate::daemon::status::StatusError;
use std::path::Path;

/// `datasafe status`: 0 if a watcher runs, 1 if none does (or its report cannot be
/// shown).
pub(super) fn status(json: bool) -> Exit {
    match crate::daemon::status::show(json) {
        Ok(()) => Exit::Success,
        // The answer to the question rather than a failure: no `error:` before it.
        Err(e @ StatusError::NotRunning) => {
            eprintln!("{e}");
            Exit::Problems
        }
        Err(e) => {
            eprintln!("error: {e}");
            Exit::Problems
        }
    }
}

/// `datasafe release`: 0 if a watcher was asked, 1 if none runs for what was given.
pub(super) fn release(dst: Option<&Path>, config: Option<&Path>) -> Exit {
    match crate::daemon::status::release(dst, config) {
        Ok(()) => Exit::Success,
        Err(e) => {
            eprintln!("{e}");
            Exit::Problems
        }
    }
}
