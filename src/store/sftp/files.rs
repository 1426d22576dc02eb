//! Open files of the SFTP store: [`RemoteRead`] (a stored file read from its start or at
//! any offset, as restore, verify and archive read) and [`RemoteTemp`] (a file or symlink
//! being written under a temp name, installed by one rename), and the listing of a
//! folder.
//!
//! Round trips are what a remote file costs (workers overlap them, one file cannot): a
//! small file takes six — open, write, fsetstat with the fstat behind it, the engine's
//! look at the final name, fsync, rename (the close goes out just before the rename and
//! is not waited for).

use super::conn::{Conn, block_on};
use super::folders::Folders;
use super::{Staged, Stat, TempFile, meta_of, stat_of};
use crate::config::Remote;
use crate::model::Kind;
use crate::store::ReadFile;
use bytes::BytesMut;
use filetime::FileTime;
use openssh_sftp_client::file::File;
use openssh_sftp_client::fs::ReadDir;
use openssh_sftp_client::metadata::MetaData;
use std::io::{self, SeekFrom};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use tokio::io::AsyncSeek;

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

/// A file or symlink under a temp name in `DST/.datasafe/tmp`, removed when dropped
/// unless installed.
pub(super) struct RemoteTemp {
    conn: Arc<Conn>,
    remote: Remote,
    /// The store's real folders: the final name is reached through them only.
    folders: Arc<Folders>,
    /// Its name, relative to DST.
    name: PathBuf,
    /// The open file and its connection (`None` for a symlink, or once closed).
    file: Option<(File, u64)>,
    /// What the server said of the open file right after its mode and time were set
    /// (asked in the same round trip); dropped by any later write.
    stat: Option<Stat>,
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
            stat: None,
            installed: false,
        }
    }

    fn open(&mut self) -> io::Result<(&mut File, u64)> {
        match self.file.as_mut() {
            Some((file, number)) => Ok((file, *number)),
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a staged symlink holds no bytes",
            )),
        }
    }

    fn lstat(&self, name: &Path) -> io::Result<Option<Stat>> {
        if !self.folders.beneath(&self.conn, &self.remote, name)? {
            return Ok(None);
        }
        self.conn.lstat(&self.remote.remote_path(name))
    }
}

impl io::Write for RemoteTemp {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let conn = self.conn.clone();
        self.stat = None;
        let (file, number) = self.open()?;
        let written = block_on(async { file.write_all(buf).await })?;
        conn.check(number, written)
            .map_err(|e| conn.explain_write(e, buf.len()))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Staged for RemoteTemp {
    fn stat(&self) -> io::Result<Stat> {
        if let (Some(_), Some(stat)) = (&self.file, self.stat) {
            return Ok(stat);
        }
        match &self.file {
            Some((file, number)) => {
                let mut file = file.clone();
                let meta = block_on(async move { file.metadata().await })?;
                Ok(stat_of(&self.conn.check(*number, meta)?))
            }
            None => self
                .lstat(&self.name)?
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound)),
        }
    }

    fn look(&mut self, name: &Path) -> io::Result<Option<Stat>> {
        self.lstat(name)
    }

    fn install(&mut self, name: &Path) -> io::Result<()> {
        if let Some((mut file, number)) = self.file.take() {
            // Durable before it gets its final name, where the server can do that.
            if self.conn.extensions().fsync {
                let synced = block_on(async { file.sync_all().await })?;
                self.conn
                    .check(number, synced)
                    .map_err(|e| self.conn.explain_write(e, 0))?;
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
        let conn = self.conn.clone();
        self.stat = None;
        let (file, number) = self.open()?;
        // The fstat that `Staged::stat` will want goes out right behind the fsetstat, in
        // the same round trip: the server answers a session's requests in order, so it
        // sees the new mode and time.
        let mut asker = file.clone();
        let (set, got) = block_on(async {
            // `biased`: polled in this order, so the requests are queued in this order.
            tokio::join!(
                biased;
                file.set_metadata(meta_of(mode, mtime)),
                asker.metadata()
            )
        })?;
        drop(asker);
        conn.check(number, set)?;
        if let Ok(meta) = got {
            self.stat = Some(stat_of(&meta));
        }
        Ok(())
    }
}

impl Drop for RemoteTemp {
    fn drop(&mut self) {
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
        let _ = self.conn.remove_file(&path);
    }
}
