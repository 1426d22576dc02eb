//! A mirror on another machine, opened for the read side: [`open_remote`] connects
//! (through `store::open_reader`, which refreshes the local cache of the mirror's index)
//! and checks that the root is a folder, as `config::check_dir` checks a local one; a
//! host that cannot be reached is [`Unopened::Unreachable`], one line naming it.
//!
//! The store behind it is wrapped in a [`Breaker`]: a remote store waits (within its
//! patience, about a minute) for a lost host to come back before a request fails, and
//! the read side makes thousands of requests (a `stat` per file to restore, an `open`
//! per file to verify). Once one request has given up on the host, the breaker fails
//! every later one at once with the same reason, and the commands ask it
//! ([`Breaker::tripped`]) to end with that one line instead of a problem per file.
//! It deliberately trips only on a host given up on, not on a connection that merely
//! died under a request (the next one may find a new connection).

use crate::config::{Dest, NotAFolder};
use crate::model::Kind;
use crate::store::{self, Caps, Inventoried, Listed, ReadFile, Reader, Stat, Step, Walked};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

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

/// True if `e` is a host that could not be reached (`store::sftp::conn::unreachable`:
/// no connection could be made, within the store's patience): its message is the whole
/// line, naming the host, with nothing of ours around it.
pub fn is_unreachable(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::ConnectionRefused
}

/// True if `e` says the mirror's host is gone: it could not be reached, or the
/// connection died under a request that cannot be sent again (an open file's read).
pub fn is_connection_lost(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted
    )
}

/// Connects to the remote mirror `dst` for reading and checks that its root is a
/// folder. A connection that died while it was opened (refreshing the cached index
/// reads a file) is made once more; a host gone is [`Unopened::Unreachable`].
pub fn open_remote(dst: &Dest) -> Result<Arc<Breaker>, Unopened> {
    let opened = match store::open_reader(dst) {
        Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => store::open_reader(dst),
        opened => opened,
    };
    let reader = opened.map_err(|e| {
        if is_connection_lost(&e) {
            Unopened::Unreachable(e)
        } else {
            Unopened::NotAFolder(NotAFolder::Unreadable(e))
        }
    })?;
    match reader.stat(Path::new("")) {
        Ok(Some(s)) if s.kind == Kind::Dir => Ok(Arc::new(Breaker::new(reader))),
        Ok(Some(_)) => Err(Unopened::NotAFolder(NotAFolder::NotADirectory)),
        Ok(None) => Err(Unopened::NotAFolder(NotAFolder::Missing(
            io::ErrorKind::NotFound.into(),
        ))),
        Err(e) if is_connection_lost(&e) => Err(Unopened::Unreachable(e)),
        Err(e) => Err(Unopened::NotAFolder(NotAFolder::Unreadable(e))),
    }
}

/// A remote store that stops asking once its host was given up on (see the module's
/// comment). Looks and `stat_each` use the trait's defaults here, built on the calls
/// below, so each of their requests passes the breaker; a walk is the store's own (one
/// READDIR per folder answers with every name's attributes), passed whole: a folder
/// below its top that cannot be listed is passed over, as any walk does.
pub struct Breaker {
    inner: Box<dyn Reader>,
    /// The reason the host was given up on, once it was.
    tripped: Mutex<Option<String>>,
}

impl Breaker {
    fn new(inner: Box<dyn Reader>) -> Breaker {
        Breaker {
            inner,
            tripped: Mutex::new(None),
        }
    }

    /// Why the host was given up on, if it was: the error every request since failed
    /// with (`cannot reach HOST: …`).
    pub fn tripped(&self) -> Option<io::Error> {
        self.state()
            .as_ref()
            .map(|why| io::Error::new(io::ErrorKind::ConnectionRefused, why.clone()))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.tripped
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs one request unless the host was given up on; notes it if this one gives up.
    fn guard<T>(&self, request: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
        if let Some(e) = self.tripped() {
            return Err(e);
        }
        let result = request();
        if let Err(e) = &result
            && is_unreachable(e)
        {
            self.state().get_or_insert_with(|| e.to_string());
        }
        result
    }
}

impl Reader for Breaker {
    fn caps(&self) -> Caps {
        self.inner.caps()
    }

    fn display(&self, name: &Path) -> PathBuf {
        self.inner.display(name)
    }

    fn stat(&self, name: &Path) -> io::Result<Option<Stat>> {
        self.guard(|| self.inner.stat(name))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<Listed>> {
        self.guard(|| self.inner.list(dir))
    }

    fn open(&self, name: &Path) -> io::Result<Box<dyn ReadFile>> {
        self.guard(|| self.inner.open(name))
    }

    fn read_link(&self, name: &Path) -> io::Result<PathBuf> {
        self.guard(|| self.inner.read_link(name))
    }

    fn index_file(&self) -> PathBuf {
        self.inner.index_file()
    }

    fn walk(
        &self,
        top: &Path,
        detail: bool,
        visit: &mut dyn FnMut(Walked) -> Step,
    ) -> io::Result<()> {
        self.guard(|| self.inner.walk(top, detail, visit))
    }

    fn keeps_unix_meta(&self) -> bool {
        self.inner.keeps_unix_meta()
    }

    fn inventory(&self) -> Option<io::Result<Vec<Inventoried>>> {
        if let Some(e) = self.tripped() {
            return Some(Err(e));
        }
        let listed = self.inner.inventory()?;
        Some(self.guard(|| listed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::Memory;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A store whose every `stat` gives up on its host, counting the tries.
    struct Gone(Memory, Arc<AtomicU32>);

    impl Reader for Gone {
        fn caps(&self) -> Caps {
            self.0.caps()
        }
        fn display(&self, name: &Path) -> PathBuf {
            self.0.display(name)
        }
        fn stat(&self, _name: &Path) -> io::Result<Option<Stat>> {
            self.1.fetch_add(1, Ordering::Relaxed);
            Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "cannot reach nas: Connection refused",
            ))
        }
        fn list(&self, dir: &Path) -> io::Result<Vec<Listed>> {
            self.0.list(dir)
        }
        fn open(&self, name: &Path) -> io::Result<Box<dyn ReadFile>> {
            self.0.open(name)
        }
        fn read_link(&self, name: &Path) -> io::Result<PathBuf> {
            self.0.read_link(name)
        }
        fn index_file(&self) -> PathBuf {
            self.0.index_file()
        }
    }

    #[test]
    fn a_host_given_up_on_fails_every_later_request_at_once() {
        let tries = Arc::new(AtomicU32::new(0));
        let breaker = Breaker::new(Box::new(Gone(Memory::new(), tries.clone())));
        assert!(breaker.tripped().is_none());
        assert!(breaker.list(Path::new("")).is_ok(), "not tripped yet");
        let names: Vec<&Path> = ["a", "b", "c"].iter().map(Path::new).collect();
        let found = breaker.stat_each(&names);
        assert!(found.iter().all(|r| r.as_ref().is_err_and(is_unreachable)));
        assert_eq!(tries.load(Ordering::Relaxed), 1, "asked the host once");
        let e = breaker.tripped().unwrap();
        assert_eq!(e.to_string(), "cannot reach nas: Connection refused");
        assert!(
            breaker.list(Path::new("")).is_err(),
            "tripped: nothing asked"
        );
    }
}
