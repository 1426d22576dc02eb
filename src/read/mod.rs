//! The read side: commands that read a mirror and never write it. `history` opens a
//! mirror read-only (its live files and kept versions), `restore` and `archive` give
//! them back, `verify` checks them. A mirror is a [`Dest`]: a folder on this machine
//! (checked and opened by path, as each command always did) or one on another machine,
//! reached through its store ([`open_remote`]); past opening, every command reads
//! either through `&dyn Reader` alike.

pub mod archive;
pub mod history;
pub mod restore;
pub mod verify;

use crate::config::{Dest, NotAFolder};
use crate::model::Kind;
use crate::store::{self, Reader};
use std::io;
use std::path::Path;

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

/// Why a mirror on another machine cannot be opened; each command words the second kind
/// for its role, as it does for a local folder.
#[derive(Debug)]
pub enum Unopened {
    /// ssh could not connect (or the session did not start): the error is the one line
    /// `cannot reach HOST: <ssh's words>`, for the runner to print as it is (exit 2).
    Unreachable(io::Error),
    /// Connected, but the mirror's root is not an existing folder there (or cannot be
    /// looked at).
    NotAFolder(NotAFolder),
}

/// True if `e` is a connection that could not be made (`store::sftp::conn::unreachable`):
/// its message is the whole line, naming the host, with nothing of ours around it.
pub fn is_unreachable(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::ConnectionRefused
}

/// Connects to the remote mirror `dst` for reading (its index refreshed into the local
/// cache: see `store::sftp`) and checks that its root is a folder, as `config::check_dir`
/// checks a local one.
pub fn open_remote(dst: &Dest) -> Result<Box<dyn Reader>, Unopened> {
    let reader = store::open_reader(dst).map_err(|e| {
        if is_unreachable(&e) {
            Unopened::Unreachable(e)
        } else {
            Unopened::NotAFolder(NotAFolder::Unreadable(e))
        }
    })?;
    match reader.stat(Path::new("")) {
        Ok(Some(s)) if s.kind == Kind::Dir => Ok(reader),
        Ok(Some(_)) => Err(Unopened::NotAFolder(NotAFolder::NotADirectory)),
        Ok(None) => Err(Unopened::NotAFolder(NotAFolder::Missing(
            io::ErrorKind::NotFound.into(),
        ))),
        Err(e) if is_unreachable(&e) => Err(Unopened::Unreachable(e)),
        Err(e) => Err(Unopened::NotAFolder(NotAFolder::Unreadable(e))),
    }
}
