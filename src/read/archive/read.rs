//! Reading one file's content for an archive, the way `sync` copies: through an open
//! handle (`O_NOFOLLOW` for a plain folder's file; a mirror's through its store, and
//! un-gzipped by `restore::Content`), checked afterwards to be unchanged, and read again
//! if it changed meanwhile.
//!
//! Small files are read whole into memory (so a retry costs nothing in the archive);
//! larger ones are left to the writer to stream, which is what keeps memory flat.

use crate::engine::source::Source as Folder;
use crate::hash::Stoppable;
use crate::model::Stored;
use crate::model::{Kind, Meta};
use crate::output::names::{esc, io_message};
use crate::read::restore::{Content, is_damaged};
use crate::store::{Reader, Stat};
use std::borrow::Cow;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Where a file's content is read from.
#[derive(Clone)]
pub enum FileAt {
    /// A file on this machine, by path: a plain folder's, or one written out to the
    /// scratch folder.
    Path(PathBuf),
    /// A name in the mirror being archived, read through its store.
    Stored(Arc<dyn Reader>, PathBuf),
    /// A name in the plain folder being archived, read through the folder's handles
    /// (never through a symlink).
    Source(Arc<Folder>, PathBuf),
}

impl FileAt {
    /// The path as messages show it.
    pub fn shown(&self) -> Cow<'_, Path> {
        match self {
            FileAt::Path(path) => Cow::Borrowed(path),
            FileAt::Stored(store, name) => Cow::Owned(store.display(name)),
            FileAt::Source(folder, rel) => Cow::Owned(folder.path(rel)),
        }
    }

    /// Opens the file and its content (un-gzipped if `stored` says so); also returns
    /// its `fstat`.
    fn open(&self, stored: Stored) -> io::Result<(Content, Stat)> {
        match self {
            FileAt::Stored(store, name) => Content::open(&**store, name, stored),
            FileAt::Source(folder, rel) => {
                let file = folder.open_file(rel)?;
                let stat = Stat::of(&file.metadata()?);
                Ok((Content::of(Box::new(file), stored), stat))
            }
            FileAt::Path(path) => {
                let file = crate::platform::open_source(path)?;
                let stat = Stat::of(&file.metadata()?);
                if stat.kind != Kind::File {
                    return Err(io::Error::other("it is not a regular file"));
                }
                Ok((Content::of(Box::new(file), stored), stat))
            }
        }
    }

    /// What stands at the file's name now (never followed).
    fn stat(&self) -> Option<Stat> {
        match self {
            FileAt::Stored(store, name) => store.stat(name).ok().flatten(),
            FileAt::Source(folder, rel) => folder.status(rel).ok().map(Stat::from),
            FileAt::Path(path) => std::fs::symlink_metadata(path).ok().map(|m| Stat::of(&m)),
        }
    }
}

impl std::fmt::Debug for FileAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.shown())
    }
}

/// Files up to this size are read whole into memory; larger ones are streamed.
pub const SMALL: u64 = 1 << 20;

/// How many times a file that changed while being read is read again (as `sync`).
pub const RETRIES: u32 = 3;

/// Why a file is not in the archive (or not as a settled snapshot).
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// It could not be opened or read.
    #[error("cannot read {}: {}; it is left out of the archive", esc(.path), io_message(.err))]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        err: io::Error,
    },
    /// Its gzip stream in the mirror is damaged.
    #[error(
        "cannot read {}: it is damaged ({}); it is left out of the archive (try --at with an earlier time)",
        esc(.path),
        io_message(.err)
    )]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What the decoder said.
        err: io::Error,
    },
    /// Ctrl-C.
    #[error("interrupted")]
    Interrupted,
}

impl Failure {
    /// The failure for a read error on the file `at`, told apart by what caused it.
    pub fn of(at: &FileAt, err: io::Error, stop: &AtomicBool) -> Failure {
        if stop.load(Ordering::Relaxed) {
            Failure::Interrupted
        } else if is_damaged(&err) {
            Failure::Damaged {
                path: at.shown().into_owned(),
                err,
            }
        } else {
            Failure::Read {
                path: at.shown().into_owned(),
                err,
            }
        }
    }
}

/// A file read for the archive.
pub enum Got {
    /// Read whole: its content and metadata (`size` is the content's length).
    Small {
        /// The content, un-gzipped.
        data: Vec<u8>,
        /// Mode and mtime as the file had them.
        meta: Meta,
        /// False if it kept changing through every retry: `data` is the last read.
        settled: bool,
    },
    /// Too large to hold, or a plain file with holes: the writer streams it with
    /// [`open`].
    Large,
}

/// A file opened for streaming.
pub struct Opened<'a> {
    /// The content, un-gzipped, stopping with an error on Ctrl-C.
    pub reader: Stoppable<'a, Content>,
    /// The file's `fstat` when it was opened.
    pub before: Stat,
}

impl Opened<'_> {
    /// True if the file is still what it was when it was opened: the open file and
    /// what stands at its name now both have the size, mtime, mode and inode it had.
    pub fn settled(&self, at: &FileAt) -> bool {
        let after = self.reader.inner.file().stat().ok();
        after == Some(self.before) && at.stat() == Some(self.before)
    }
}

/// Opens a file to stream it.
pub fn open<'a>(at: &FileAt, stored: Stored, stop: &'a AtomicBool) -> Result<Opened<'a>, Failure> {
    let (content, before) = at.open(stored).map_err(|e| Failure::of(at, e, stop))?;
    Ok(Opened {
        reader: Stoppable {
            inner: content,
            stop,
        },
        before,
    })
}

/// True if the plain file just opened has holes (it allocates fewer blocks than its
/// size, GNU tar's test, and `SEEK_DATA` finds some): a tar holds it as a sparse entry,
/// which the writer's streaming path makes, whatever its size.
fn has_holes(opened: &Opened<'_>) -> bool {
    let size = opened.before.size;
    opened
        .reader
        .inner
        .file()
        .data_segments(size)
        .is_ok_and(|segments| crate::sparse::has_holes(&segments, size))
}

/// Reads a file whole if it is small (and has no holes), retrying while it changes
/// under the read.
pub fn read_small(at: &FileAt, stored: Stored, stop: &AtomicBool) -> Result<Got, Failure> {
    let mut attempt = 0;
    loop {
        let opened = open(at, stored, stop)?;
        if stored == Stored::Plain && (opened.before.size > SMALL || has_holes(&opened)) {
            return Ok(Got::Large);
        }
        let mut data = Vec::with_capacity(opened.before.size.min(SMALL) as usize);
        let mut reader = opened.reader;
        // A plain file is read to the size fstat gave: one that grew meanwhile has a new
        // size and mtime, so the check below reads it again. No read for EOF is needed.
        let limit = match stored {
            Stored::Plain => opened.before.size,
            Stored::Gzip => SMALL + 1,
        };
        (&mut reader)
            .take(limit)
            .read_to_end(&mut data)
            .map_err(|e| Failure::of(at, e, stop))?;
        if data.len() as u64 > SMALL {
            return Ok(Got::Large);
        }
        let opened = Opened {
            reader,
            before: opened.before,
        };
        let settled = opened.settled(at);
        if settled || attempt >= RETRIES {
            let meta = Meta {
                size: data.len() as u64,
                ..opened.before.meta()
            };
            return Ok(Got::Small {
                data,
                meta,
                settled,
            });
        }
        attempt += 1;
        log::debug!(
            "{} changed while being read; reading again",
            esc(&at.shown())
        );
    }
}

/// A reader that yields exactly `left` bytes: the source's, then zeros if it ended early
/// (a tar header promised that many), also after a read error, which it keeps: a
/// failed read must not leave the stream short of what the header said.
pub struct Exact<R> {
    /// The source.
    pub inner: R,
    /// Bytes still owed.
    pub left: u64,
    /// The source ended (or failed) before `left` reached 0.
    pub short: bool,
    /// The source's read error, if it failed: the rest was zero-filled.
    pub error: Option<io::Error>,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = if self.short {
            0
        } else {
            match self.inner.read(&mut buf[..want]) {
                Ok(n) => n,
                Err(e) => {
                    self.error = Some(e);
                    0
                }
            }
        };
        let n = if n == 0 {
            self.short = true;
            buf[..want].fill(0);
            want
        } else {
            n
        };
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(data: &[u8], left: u64) -> (Vec<u8>, bool) {
        let mut reader = Exact {
            inner: data,
            left,
            short: false,
            error: None,
        };
        let mut out = Vec::new();
        reader.read_to_end(&mut out).unwrap();
        (out, reader.short)
    }

    #[test]
    fn exact_yields_the_promised_size_cut_or_zero_filled() {
        assert_eq!(exact(b"abcdef", 6), (b"abcdef".to_vec(), false));
        assert_eq!(exact(b"abcdef", 3), (b"abc".to_vec(), false));
        assert_eq!(exact(b"ab", 5), (b"ab\0\0\0".to_vec(), true));
        assert_eq!(exact(b"", 0), (Vec::new(), false));
    }

    #[test]
    fn a_file_read_whole_keeps_its_mode_and_mtime() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"content").unwrap();
        let at = FileAt::Path(path.clone());
        let stop = AtomicBool::new(false);
        let Got::Small {
            data,
            meta,
            settled,
        } = read_small(&at, Stored::Plain, &stop).unwrap()
        else {
            panic!("a small file was not read whole");
        };
        assert_eq!(
            (data.as_slice(), meta.size, settled),
            (&b"content"[..], 7, true)
        );
        std::fs::write(&path, vec![0u8; SMALL as usize + 1]).unwrap();
        assert!(matches!(
            read_small(&at, Stored::Plain, &stop).unwrap(),
            Got::Large
        ));
        let missing = read_small(&FileAt::Path(dir.path().join("gone")), Stored::Plain, &stop);
        assert!(matches!(missing, Err(Failure::Read { .. })));
        stop.store(true, Ordering::Relaxed);
        assert!(matches!(
            read_small(&at, Stored::Plain, &stop),
            Err(Failure::Interrupted) | Ok(Got::Large)
        ));
    }
}
