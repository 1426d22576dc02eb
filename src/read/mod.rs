//! The read side: commands that read a mirror and never write it. `history` opens a
//! mirror read-only (its live files and kept versions), `restore` and `archive` give
//! them back, `verify` checks them. A mirror is a [`Dest`]: a folder on this machine
//! (checked and opened by path, as each command always did) or one on another machine,
//! reached through its store behind a [`Breaker`] (`remote`); past opening, every
//! command reads either through `&dyn Reader` alike.

pub mod archive;
pub mod attrs;
pub mod history;
pub mod links;
mod remote;
pub mod restore;
pub mod verify;

pub use remote::{Breaker, Unopened, is_connection_lost, is_unreachable, open_remote};

/// How a read-side command that ran to its end (or to Ctrl-C) went; the runner in
/// `cli` maps it to the process's exit. Errors that keep a command from running are
/// each command's own error type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Everything was done and nothing wrong was found (or what was found was repaired).
    Clean,
    /// The command ran, but found or met problems: damage, differences, files that
    /// could not be restored (each said as it happened).
    Problems,
    /// A mirror could not be checked or repaired at all (said as it happened).
    Unusable,
    /// Stopped by Ctrl-C or SIGTERM.
    Interrupted,
}
