//! Files in and out of a bucket: a file being written ([`Upload`]) is held until its
//! final name is known — in memory up to [`IN_MEMORY`], past that in a spool file in
//! the mirror's local cache folder, so memory stays flat whatever the file's size — and
//! [`Staged::install`] sends it to its final key in one step: one `PutObject`, or a
//! multipart upload completed only once every part is in (aborted on every error, so
//! the old object stays whole and nothing new is visible). S3 replaces an object
//! atomically, so no temp key is needed: a killed run leaves at most an unfinished
//! multipart upload, which the next writer aborts.
//!
//! A stored file is read back ([`Object`]) in ranged `GetObject`s of [`READ_CHUNK`].

use super::client::Client;
use super::meta;
use crate::model::Kind;
use crate::store::{ReadFile, Staged, Stat, TempFile};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use filetime::FileTime;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A file up to this size is held in memory and sent with one `PutObject`.
pub const IN_MEMORY: usize = 8 * 1024 * 1024;
/// The smallest part of a multipart upload (S3's minimum is 5 MiB).
const PART: u64 = 16 * 1024 * 1024;
/// S3's most parts in one upload.
const MAX_PARTS: u64 = 10_000;
/// How much one read of a stored file fetches.
const READ_CHUNK: u64 = 8 * 1024 * 1024;

/// Where a file being written is held.
enum Held {
    Memory(Vec<u8>),
    /// The spool file, and its path (removed when the upload is dropped).
    Spool(std::fs::File, PathBuf),
}

/// A file being written, sent to its final key by [`Staged::install`].
pub struct Upload {
    client: Arc<Client>,
    /// Where a spool file goes once the file outgrows memory.
    spool_dir: PathBuf,
    spool_name: String,
    held: Held,
    size: u64,
    mode: u32,
    mtime: FileTime,
    kind: Kind,
    /// Sent: the spool's path is not removed twice.
    installed: bool,
}

impl Upload {
    /// An empty file to be written.
    pub fn new(client: Arc<Client>, spool_dir: PathBuf, spool_name: String) -> Upload {
        Upload {
            client,
            spool_dir,
            spool_name,
            held: Held::Memory(Vec::new()),
            size: 0,
            mode: 0o600,
            mtime: FileTime::now(),
            kind: Kind::File,
            installed: false,
        }
    }

    /// A symlink to `target` to be placed (its target is the object's body).
    pub fn symlink(client: Arc<Client>, target: &Path, mtime: FileTime) -> Upload {
        let body = crate::platform::path_to_bytes(target);
        Upload {
            client,
            spool_dir: PathBuf::new(),
            spool_name: String::new(),
            size: body.len() as u64,
            held: Held::Memory(body),
            mode: 0o777,
            mtime,
            kind: Kind::Symlink,
            installed: false,
        }
    }

    /// Sends what is held to `key`, replacing what is there.
    fn send(&mut self, key: &str) -> io::Result<()> {
        let metadata = meta::of(self.kind, self.mode, self.mtime);
        let client = &self.client;
        match &mut self.held {
            Held::Memory(bytes) => {
                let body = ByteStream::from(bytes.clone());
                client.call(
                    client
                        .s3
                        .put_object()
                        .bucket(&client.bucket.bucket)
                        .key(key)
                        .set_metadata(Some(metadata))
                        .body(body)
                        .send(),
                )?;
                Ok(())
            }
            Held::Spool(file, path) => {
                file.flush()?;
                multipart(client, key, path, self.size, metadata)
            }
        }
    }
}

/// Sends the file at `path` (`size` bytes) to `key` as a multipart upload, completed
/// only once every part is in, aborted on any error.
fn multipart(
    client: &Client,
    key: &str,
    path: &Path,
    size: u64,
    metadata: std::collections::HashMap<String, String>,
) -> io::Result<()> {
    let bucket = &client.bucket.bucket;
    let created = client.call(
        client
            .s3
            .create_multipart_upload()
            .bucket(bucket)
            .key(key)
            .set_metadata(Some(metadata))
            .send(),
    )?;
    let upload_id = created
        .upload_id()
        .ok_or_else(|| {
            io::Error::other(format!(
                "{} started an upload without an id",
                client.place()
            ))
        })?
        .to_string();
    let part_size = PART.max(size.div_ceil(MAX_PARTS));
    let sent = (|| -> io::Result<Vec<CompletedPart>> {
        let mut parts = Vec::new();
        let mut offset = 0u64;
        let mut number = 1i32;
        while offset < size || number == 1 {
            let length = part_size.min(size - offset);
            let body = client
                .run(
                    ByteStream::read_from()
                        .path(path)
                        .offset(offset)
                        .length(aws_sdk_s3::primitives::Length::Exact(length))
                        .build(),
                )
                .map_err(io::Error::other)?;
            let answer = client.call(
                client
                    .s3
                    .upload_part()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .part_number(number)
                    .content_length(length as i64)
                    .body(body)
                    .send(),
            )?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(answer.e_tag().map(str::to_string))
                    .build(),
            );
            offset += length;
            number += 1;
            if length == 0 {
                break;
            }
        }
        Ok(parts)
    })();
    let completed = sent.and_then(|parts| {
        client
            .call(
                client
                    .s3
                    .complete_multipart_upload()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .multipart_upload(
                        CompletedMultipartUpload::builder()
                            .set_parts(Some(parts))
                            .build(),
                    )
                    .send(),
            )
            .map(drop)
    });
    if completed.is_err() {
        // Nothing new becomes visible; the parts are freed (if this fails too, the
        // next writer's start aborts it).
        let _ = client.run(
            client
                .s3
                .abort_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(&upload_id)
                .send(),
        );
    }
    completed
}

impl Write for Upload {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Held::Memory(bytes) = &mut self.held
            && bytes.len() + buf.len() > IN_MEMORY
        {
            std::fs::create_dir_all(&self.spool_dir)?;
            let path = self.spool_dir.join(&self.spool_name);
            let mut file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)?;
            file.write_all(bytes)?;
            self.held = Held::Spool(file, path);
        }
        match &mut self.held {
            Held::Memory(bytes) => bytes.extend_from_slice(buf),
            Held::Spool(file, _) => file.write_all(buf)?,
        }
        self.size += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Staged for Upload {
    fn stat(&self) -> io::Result<Stat> {
        Ok(Stat {
            kind: self.kind,
            size: self.size,
            mtime: self.mtime,
            mode: self.mode,
            ino: 0,
            links: 1,
        })
    }

    fn look(&mut self, name: &Path) -> io::Result<Option<Stat>> {
        super::head(&self.client, name)
    }

    fn install(&mut self, name: &Path) -> io::Result<()> {
        let key = super::key_of(&self.client, name)?;
        // Noted before it is sent: a look after a failed send is then a real one.
        self.client.note_written(&key);
        self.send(&key)?;
        self.installed = true;
        Ok(())
    }
}

impl TempFile for Upload {
    fn set_meta(&mut self, mode: u32, mtime: FileTime) -> io::Result<()> {
        self.mode = mode;
        self.mtime = mtime;
        Ok(())
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if let Held::Spool(_, path) = &self.held {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A stored object open for reading: read in ranged requests as it is read.
pub struct Object {
    client: Arc<Client>,
    key: String,
    stat: Stat,
    pos: u64,
    chunk: Vec<u8>,
    /// Where `chunk` starts.
    chunk_at: u64,
}

impl Object {
    /// Opens `key`, whose stat is `stat`.
    pub fn new(client: Arc<Client>, key: String, stat: Stat) -> Object {
        Object {
            client,
            key,
            stat,
            pos: 0,
            chunk: Vec::new(),
            chunk_at: 0,
        }
    }

    /// Opens `key` with one request: its first chunk, its size and its metadata come
    /// with one `GetObject`. `None` if there is no such object.
    pub fn open(client: Arc<Client>, key: String) -> io::Result<Option<Object>> {
        let ranged = client.call(
            client
                .s3
                .get_object()
                .bucket(&client.bucket.bucket)
                .key(&key)
                .range(format!("bytes=0-{}", READ_CHUNK - 1))
                .send(),
        );
        let answer = match ranged {
            Ok(answer) => answer,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            // An empty object has no byte 0: a range of it is refused (416).
            Err(_) => match client.call(
                client
                    .s3
                    .get_object()
                    .bucket(&client.bucket.bucket)
                    .key(&key)
                    .send(),
            ) {
                Ok(answer) => answer,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            },
        };
        let total = answer
            .content_range()
            .and_then(|r| r.rsplit('/').next())
            .and_then(|n| n.parse::<u64>().ok())
            .or_else(|| answer.content_length().map(|n| n.max(0) as u64))
            .unwrap_or(0);
        let stored = answer
            .last_modified()
            .and_then(|t| std::time::SystemTime::try_from(*t).ok())
            .map(FileTime::from_system_time);
        let stat = meta::stat_of(false, total, answer.metadata(), stored);
        let bytes = client
            .run(answer.body.collect())
            .map_err(|e| io::Error::new(io::ErrorKind::ConnectionAborted, e.to_string()))?;
        Ok(Some(Object {
            client,
            key,
            stat,
            pos: 0,
            chunk: bytes.into_bytes().to_vec(),
            chunk_at: 0,
        }))
    }

    /// What the object is (a symlink's body is its target).
    pub fn kind(&self) -> Kind {
        self.stat.kind
    }

    fn fetch(&mut self) -> io::Result<()> {
        let end = (self.pos + READ_CHUNK).min(self.stat.size) - 1;
        let client = &self.client;
        let answer = client.call(
            client
                .s3
                .get_object()
                .bucket(&client.bucket.bucket)
                .key(&self.key)
                .range(format!("bytes={}-{end}", self.pos))
                .send(),
        )?;
        let bytes = client
            .run(answer.body.collect())
            .map_err(|e| io::Error::new(io::ErrorKind::ConnectionAborted, e.to_string()))?;
        self.chunk = bytes.into_bytes().to_vec();
        self.chunk_at = self.pos;
        Ok(())
    }
}

impl Read for Object {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.stat.size || buf.is_empty() {
            return Ok(0);
        }
        let inside =
            self.pos >= self.chunk_at && self.pos < self.chunk_at + self.chunk.len() as u64;
        if !inside {
            self.fetch()?;
            if self.chunk.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{} ended early", self.key),
                ));
            }
        }
        let from = (self.pos - self.chunk_at) as usize;
        let n = buf.len().min(self.chunk.len() - from);
        buf[..n].copy_from_slice(&self.chunk[from..from + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Object {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let pos = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.stat.size.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = pos.ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        Ok(self.pos)
    }
}

impl ReadFile for Object {
    fn stat(&self) -> io::Result<Stat> {
        Ok(self.stat)
    }
}
