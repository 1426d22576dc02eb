//! The process exit codes, as one leaf type (fd's `exit_codes.rs`): the runners in `cli`
//! map what a command did to an [`Exit`], and only `main` turns it into the process's
//! code. The engine and the read side return results and summaries, never codes.
//!
//! A run stopped by Ctrl-C, SIGTERM or SIGHUP does not exit with a code at all: once it
//! has cleaned up it dies by that signal (see `cli::run`); [`Exit::Interrupted`] is the
//! code only where a process cannot die by a signal.

use std::process::ExitCode;

/// How a command ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Everything was done (0).
    Success,
    /// The command ran, but something it met is wrong: files that failed, damage found,
    /// deletions held back, no watcher running (1).
    Problems,
    /// A usage, configuration or fatal error: nothing (more) was done (2).
    Usage,
    /// Stopped by Ctrl-C or SIGTERM, where the process cannot die by the signal (130).
    Interrupted,
}

impl Exit {
    /// The process exit code.
    pub const fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Problems => 1,
            Exit::Usage => 2,
            Exit::Interrupted => 130,
        }
    }

    /// [`Exit::Success`] if `ok`, else [`Exit::Problems`].
    pub const fn problems_unless(ok: bool) -> Exit {
        if ok { Exit::Success } else { Exit::Problems }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_a_contract() {
        for (exit, code) in [
            (Exit::Success, 0),
            (Exit::Problems, 1),
            (Exit::Usage, 2),
            (Exit::Interrupted, 130),
        ] {
            assert_eq!(exit.code(), code);
        }
    }
}
