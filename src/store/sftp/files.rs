//! Open files of the SFTP store: [`RemoteRead`] (a stored file read from its start or at
//! any offset, as restore, verify and archive read) and [`RemoteTemp`] (a file or symlink
//! being written under a temp name, installed by one rename), and the listing of a
//! folder.
//!
//! Round trips are what a remote file costs: see [`RemoteTemp`] for how a file's
//! requests are sent together.

use super::conn::{Conn, block_on, runtime};
use super::folders::Folders;
use super::{Staged, Stat, TempFile, meta_of, owner_of, sent_seconds, stat_of};
use crate::config::Remote;
use crate::model::{Kind, Owner};
use crate::store::ReadFile;
use bytes::{Bytes, BytesMut};
use filetime::FileTime;
use openssh_sftp_client::file::File;
use openssh_sftp_client::fs::ReadDir;
use openssh_sftp_client::metadata::MetaData;
use std::collections::VecDeque;
use std::io::{self, SeekFrom};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use tokio::io::AsyncSeek;
use tokio::task::JoinHandle;

/// Every entry of a folder being listed, with its attributes.
pub(super) async fn read_all(
    entries: ReadDir,
) -> Result<Vec<(PathBuf, MetaData)>, openssh_sftp_client::Error> {
    use futures_core::Stream;
    let mut entries = Box::pin(entries);
    let mut out = Vec::new();
    while let Some(entry) = std::future::poll_fn(|cx| Stream::poll_next(entries.as_mut(), cx)).await
    {
        let entry = entry?;
        out.push((entry.filename().to_path_buf(), entry.metadata()));
    }
    Ok(out)
}

/// A stored file open for reading.
pub(super) struct RemoteRead {
    conn: Arc<Conn>,
    file: File,
    /// The connection the handle belongs to.
    number: u64,
    /// Where the next read starts.
    offset: u64,
}

impl RemoteRead {
    pub(super) fn new(conn: Arc<Conn>, (file, number): (File, u64)) -> RemoteRead {
        RemoteRead {
            conn,
            file,
            number,
            offset: 0,
        }
    }

    fn size(&mut self) -> io::Result<u64> {
        Ok(self.stat()?.size)
    }
}

impl io::Read for RemoteRead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        Pin::new(&mut self.file).start_seek(SeekFrom::Start(self.offset))?;
        let want = u32::try_from(buf.len()).unwrap_or(u32::MAX);
        let file = &mut self.file;
        let read = block_on(async { file.read(want, BytesMut::with_capacity(buf.len())).await })?;
        match self.conn.check(self.number, read)? {
            None => Ok(0),
            Some(data) => {
                let n = data.len().min(buf.len());
                buf[..n].copy_from_slice(&data[..n]);
                self.offset += n as u64;
                Ok(n)
            }
        }
    }
}

impl io::Seek for RemoteRead {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let target = match pos {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::Current(d) => self.offset.checked_add_signed(d),
            SeekFrom::End(d) => self.size()?.checked_add_signed(d),
        };
        self.offset = target
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        Ok(self.offset)
    }
}

impl ReadFile for RemoteRead {
    fn stat(&self) -> io::Result<Stat> {
        let mut file = self.file.clone();
        let meta = block_on(async move { file.metadata().await })?;
        Ok(stat_of(&self.conn.check(self.number, meta)?))
    }
}

/// Chunk writes of one file in flight at once: a big file streams at the link's speed,
/// not one round trip per chunk, and a worker holds at most this many chunks in memory.
const WINDOW: usize = 4;

/// Bytes in one chunk: the largest write OpenSSH's server takes in one request (its
/// `limits@openssh.com` answer). A server that takes less gets a chunk in several
/// requests (see [`RemoteTemp::settle`]).
const CHUNK: usize = 256 * 1024 - 1024;

/// A file or symlink under a temp name in `DST/.datasafe/tmp`, removed when dropped
/// unless installed.
///
/// Round trips are what a remote file costs (workers overlap them, one file cannot), so
/// a file's requests go out together wherever the protocol allows: the last (for a
/// small file, the only) chunk of its bytes is held back and sent with its mode and
/// time, its `fsync` and the engine's look at the final name, in one round trip
/// ([`Staged::look`]); the rename is the next, the close goes out just before it and is
/// not waited for. With the create done ahead (`super::ahead`), a small file waits for
/// two round trips. The server answers a session's requests in the order they came,
/// so the `fsync` covers every chunk before it; chunks of a big file go out as they are
/// written, up to [`WINDOW`] at a time, and all are answered before the last batch is
/// sent. The rename waits for the batch's answers: a failed write must never be
/// followed by the file's final name (the server would carry on with the next request
/// of a batch after a failed one).
pub(super) struct RemoteTemp {
    conn: Arc<Conn>,
    remote: Remote,
    /// The store's real folders: the final name is reached through them only.
    folders: Arc<Folders>,
    /// Its name, relative to DST.
    name: PathBuf,
    /// The open file and its connection (`None` for a symlink, or once closed).
    file: Option<(File, u64)>,
    /// Bytes written but not sent yet (at most `chunk`).
    held: Vec<u8>,
    /// Bytes sent (or in flight), holes skipped included: where `held` starts in the
    /// file.
    sent: u64,
    /// True if the file ends in a hole skipped ([`TempFile::skip_hole`]) with nothing
    /// written after it: its last byte is written (a zero) when the file is settled,
    /// so the server's file has its full length.
    hole_at_end: bool,
    /// Chunk writes in flight, oldest first.
    inflight: VecDeque<JoinHandle<Result<(), openssh_sftp_client::Error>>>,
    /// Mode and mtime to set, from [`TempFile::set_meta`].
    meta: Option<(u32, FileTime)>,
    /// True while everything written and set is on the server (and synced).
    settled: bool,
    /// A write that failed: the file is incomplete, and every later step fails the same
    /// way (the engine's look ignores errors; its install must not).
    failed: Option<(io::ErrorKind, String)>,
    /// True once it is under its final name.
    installed: bool,
}

impl RemoteTemp {
    pub(super) fn new(
        conn: Arc<Conn>,
        remote: Remote,
        folders: Arc<Folders>,
        name: PathBuf,
        file: Option<(File, u64)>,
    ) -> RemoteTemp {
        RemoteTemp {
            conn,
            remote,
            folders,
            name,
            file,
            held: Vec::new(),
            sent: 0,
            hole_at_end: false,
            inflight: VecDeque::new(),
            meta: None,
            settled: true,
            failed: None,
            installed: false,
        }
    }

    fn open(&self) -> io::Result<(&File, u64)> {
        match self.file.as_ref() {
            Some((file, number)) => Ok((file, *number)),
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a staged symlink holds no bytes",
            )),
        }
    }

    /// The error of an earlier failed write, again.
    fn failure(&self) -> io::Result<()> {
        match &self.failed {
            Some((kind, message)) => Err(io::Error::new(*kind, message.clone())),
            None => Ok(()),
        }
    }

    /// Notes a failed write (see [`RemoteTemp::failed`]) and returns it.
    fn fail(&mut self, err: io::Error) -> io::Error {
        if self.failed.is_none() {
            self.failed = Some((err.kind(), err.to_string()));
        }
        err
    }

    fn lstat(&self, name: &Path) -> io::Result<Option<Stat>> {
        if !self.folders.beneath(&self.conn, &self.remote, name)? {
            return Ok(None);
        }
        self.conn.lstat(&self.remote.remote_path(name))
    }

    /// Sends the held chunk on its own (more bytes follow it), then waits for the oldest
    /// chunks until at most [`WINDOW`] are in flight.
    fn send_held(&mut self) -> io::Result<()> {
        let (file, _) = self.open()?;
        let mut file = file.clone();
        let data = std::mem::take(&mut self.held);
        let offset = self.sent;
        self.sent += data.len() as u64;
        let task = runtime()?.spawn(async move {
            Pin::new(&mut file).start_seek(SeekFrom::Start(offset))?;
            // Handed over as it is, not copied into the request byte by byte.
            file.write_all_zero_copy(&mut [Bytes::from(data)]).await
        });
        self.inflight.push_back(task);
        self.drain(WINDOW)
    }

    /// Waits for chunk writes in flight until at most `keep` are left.
    fn drain(&mut self, keep: usize) -> io::Result<()> {
        while self.inflight.len() > keep {
            let Some(task) = self.inflight.pop_front() else {
                break;
            };
            let number = self.open()?.1;
            let done = block_on(task)?
                .map_err(|e| io::Error::other(format!("a write to the server was cut: {e}")))
                .and_then(|written| {
                    self.conn
                        .check(number, written)
                        .map_err(|e| self.conn.explain_write(e, CHUNK))
                });
            if let Err(e) = done {
                return Err(self.fail(e));
            }
        }
        Ok(())
    }

    /// Sends what is held back — the last chunk, mode and time, the `fsync` — in one
    /// round trip with an `lstat` of `look` (a server path) when given, whose answer it
    /// returns. Chunks in flight are answered first: the batch must reach the server
    /// after them.
    fn settle(&mut self, look: Option<&str>) -> io::Result<Option<Stat>> {
        let conn = self.conn.clone();
        let lstat = |path: Option<&str>| match path {
            Some(path) => conn.lstat(path),
            None => Ok(None),
        };
        self.failure()?;
        if self.file.is_none() || self.settled {
            return lstat(look);
        }
        self.drain(0)?;
        let Some((file, number)) = self.file.as_ref() else {
            return lstat(look);
        };
        let number = *number;
        // The look goes with the batch only on the file's own connection (a new one
        // has lost the file anyway).
        let session = match look {
            Some(_) => Some(self.conn.session()?).filter(|s| s.number == number),
            None => None,
        };
        if self.hole_at_end && self.held.is_empty() {
            // `sent` counts the hole: its last byte goes out as the last chunk.
            self.held.push(0);
            self.sent -= 1;
        }
        self.hole_at_end = false;
        let held = Bytes::from(std::mem::take(&mut self.held));
        let offset = self.sent;
        let meta = self.meta.map(|(mode, mtime)| meta_of(mode, mtime));
        let fsync = self.conn.extensions().fsync;
        let (mut data, mut attrs, mut sync) = (file.clone(), file.clone(), file.clone());
        let (wrote, set, synced, seen) = block_on(async {
            // `biased`: polled in this order, so the requests are queued in this order
            // (each is queued at its first poll).
            tokio::join!(
                biased;
                async {
                    if held.is_empty() {
                        return Ok(0);
                    }
                    Pin::new(&mut data).start_seek(SeekFrom::Start(offset))?;
                    // One request: the client splits at the server's limit.
                    data.write_zero_copy(std::slice::from_ref(&held)).await
                },
                async {
                    match meta {
                        Some(meta) => attrs.set_metadata(meta).await,
                        None => Ok(()),
                    }
                },
                async {
                    if fsync {
                        sync.sync_all().await
                    } else {
                        Ok(())
                    }
                },
                async {
                    match (&session, look) {
                        (Some(s), Some(path)) => Some(s.sftp.fs().symlink_metadata(path).await),
                        _ => None,
                    }
                }
            )
        })?;
        let written = self
            .conn
            .check(number, wrote)
            .map_err(|e| self.conn.explain_write(e, held.len()))
            .and_then(|n| {
                self.conn.check(number, set)?;
                self.conn
                    .check(number, synced)
                    .map_err(|e| self.conn.explain_write(e, 0))?;
                Ok(n)
            })
            .and_then(|n| {
                if n < held.len() {
                    // The server takes smaller writes than OpenSSH's: the rest of the
                    // chunk went out after the fsync, which is sent again after it.
                    self.rest(offset + n as u64, &held[n..])?;
                }
                Ok(())
            });
        self.sent += held.len() as u64;
        if let Err(e) = written {
            return Err(self.fail(e));
        }
        self.settled = true;
        match seen {
            Some(Ok(meta)) => Ok(Some(stat_of(&meta))),
            Some(Err(e)) => match self.conn.check(number, Err(e)) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
                Ok(never) => Ok(never),
            },
            None => lstat(look),
        }
    }
}

impl RemoteTemp {
    /// Writes `data` at `offset` and syncs again (a chunk the server took only part of
    /// in one request).
    fn rest(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let (file, number) = self.open()?;
        let (mut data_file, mut sync) = (file.clone(), file.clone());
        let fsync = self.conn.extensions().fsync;
        let wrote = block_on(async {
            Pin::new(&mut data_file).start_seek(SeekFrom::Start(offset))?;
            data_file.write_all(data).await
        })?;
        self.conn
            .check(number, wrote)
            .map_err(|e| self.conn.explain_write(e, data.len()))?;
        if fsync {
            let synced = block_on(async move { sync.sync_all().await })?;
            self.conn
                .check(number, synced)
                .map_err(|e| self.conn.explain_write(e, 0))?;
        }
        Ok(())
    }
}

impl io::Write for RemoteTemp {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.open()?;
        self.failure()?;
        self.settled = false;
        if !buf.is_empty() {
            self.hole_at_end = false;
        }
        let mut rest = buf;
        while !rest.is_empty() {
            if self.held.len() >= CHUNK {
                self.send_held()?;
            }
            let n = (CHUNK - self.held.len()).min(rest.len());
            self.held.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Staged for RemoteTemp {
    fn stat(&self) -> io::Result<Stat> {
        match &self.file {
            // What the server will hold once the batch is in: every byte written, and
            // the mode and time as the server keeps them (SFTP version 3: whole
            // seconds). Asking would cost a round trip per file.
            Some((file, number)) => {
                self.failure()?;
                let size = self.sent + self.held.len() as u64;
                match self.meta {
                    Some((mode, mtime)) => Ok(Stat {
                        kind: Kind::File,
                        size,
                        mtime: FileTime::from_unix_time(sent_seconds(mtime), 0),
                        mode: mode & 0o7777,
                        ino: 0,
                        links: 1,
                        owner: None,
                    }),
                    None => {
                        let mut file = file.clone();
                        let meta = block_on(async move { file.metadata().await })?;
                        Ok(Stat {
                            size,
                            ..stat_of(&self.conn.check(*number, meta)?)
                        })
                    }
                }
            }
            None => self
                .lstat(&self.name)?
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound)),
        }
    }

    fn look(&mut self, name: &Path) -> io::Result<Option<Stat>> {
        if !self.folders.beneath(&self.conn, &self.remote, name)? {
            return Ok(None);
        }
        let path = self.remote.remote_path(name);
        self.settle(Some(&path))
    }

    fn install(&mut self, name: &Path) -> io::Result<()> {
        if self.file.is_some() {
            // Durable (where the server can do that) before it gets its final name.
            self.settle(None)?;
        }
        if let Some((file, number)) = self.file.take() {
            if self.conn.extensions().fsync {
                // The data is on the server's disk: the close is not waited for. Dropping
                // the handle queues it at once, so the server closes the file before it
                // sees the rename below (one session answers its requests in order).
                drop(file);
            } else {
                // Without fsync, the close is the last word on the written bytes.
                let closed = block_on(async move { file.close().await })?;
                self.conn
                    .check(number, closed)
                    .map_err(|e| self.conn.explain_write(e, 0))?;
            }
        }
        self.folders.require(&self.conn, &self.remote, name)?;
        let (from, to) = (
            self.remote.remote_path(&self.name),
            self.remote.remote_path(name),
        );
        if !self.conn.extensions().posix_rename
            && let Some(there) = self.lstat(name)?
        {
            // Plain SFTP rename refuses an existing target (never a folder here).
            if there.kind != Kind::Dir {
                let _ = self.conn.remove_file(&to);
            }
        }
        self.conn.run(false, move |s| {
            let (from, to) = (from.clone(), to.clone());
            async move { s.sftp.fs().rename(from, to).await }
        })?;
        self.installed = true;
        Ok(())
    }
}

impl TempFile for RemoteTemp {
    fn set_meta(&mut self, mode: u32, mtime: FileTime) -> io::Result<()> {
        self.open()?;
        self.failure()?;
        // Sent with the last chunk, in the batch that settles the file.
        self.meta = Some((mode, mtime));
        self.settled = false;
        Ok(())
    }

    /// Sends what is held, then moves past the hole: the next chunk is written at its
    /// offset, and the server (OpenSSH's `pwrite`) leaves the gap a hole. No zeros
    /// cross the link.
    fn skip_hole(&mut self, len: u64) -> io::Result<()> {
        self.open()?;
        self.failure()?;
        if len == 0 {
            return Ok(());
        }
        self.settled = false;
        if !self.held.is_empty() {
            self.send_held()?;
        }
        self.sent = self
            .sent
            .checked_add(len)
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        self.hole_at_end = true;
        Ok(())
    }

    /// One `fsetstat` of the owner alone, answered before the file's last batch (which
    /// sets the mode: a change of owner after it would clear set-user-id bits). Its own
    /// round trip, so that a server user who may not give files away (not root) is
    /// told apart from a failed write.
    fn set_owner(&mut self, owner: Owner) -> io::Result<()> {
        let (file, number) = self.open()?;
        self.failure()?;
        let mut file = file.clone();
        let set = block_on(async move { file.set_metadata(owner_of(owner)).await })?;
        self.conn.check(number, set)
    }
}

impl Drop for RemoteTemp {
    fn drop(&mut self) {
        for task in self.inflight.drain(..) {
            task.abort();
        }
        drop(self.file.take());
        if self.installed {
            return;
        }
        let path = self.remote.remote_path(&self.name);
        if !self.conn.is_up() {
            // No way to now: removed once the connection is back (or by the next run's
            // prepare, if it never is).
            self.conn.orphan(path);
            return;
        }
        if self
            .conn
            .remove_file(&path)
            .is_err_and(|e| e.kind() == io::ErrorKind::ConnectionAborted)
        {
            self.conn.orphan(path);
        }
    }
}
