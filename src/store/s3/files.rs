//! Files in and out of a bucket: a file being written ([`Upload`]) is held until its
//! final name is known — in memory up to [`IN_MEMORY`], past that in a spool file in
//! the mirror's local cache folder, so memory stays flat whatever the file's size — and
//! [`Staged::install`] sends it to its final key in one step: one `PutObject`, or a
//! multipart upload completed only once every part is in (aborted on every error, so
//! the old object stays whole and nothing new is visible). S3 replaces an object
//! atomically, so no temp key is needed: a killed run leaves at most an unfinished
//! multipart upload, which the next writer aborts.
//!
//! Its ETag is known before it is sent: the MD5 of its bytes (of each part's MD5s for a
//! multipart upload), computed as it is written ([`Digests`]). Each request carries its
//! `Content-MD5` (the server refuses bytes that arrived changed), and the index keeps the
//! ETag's stamp ([`meta::stamp`]), against which `verify` checks a listing.
//!
//! A stored file is read back ([`Object`]) in ranged `GetObject`s of [`READ_CHUNK`].

use super::client::Client;
use super::meta;
use crate::model::{Kind, Owner, Xattrs};
use crate::store::{ReadFile, Staged, Stat, TempFile};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use filetime::FileTime;
use md5::{Digest as _, Md5};
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

/// The MD5s an object's ETag is made of, computed as its bytes are written: one per
/// [`PART`] (a multipart upload's parts); for a file sent with one `PutObject` (never
/// more than one part) the first is the whole file's.
#[derive(Clone, Default)]
struct Digests {
    part: Md5,
    /// Bytes in the part being hashed.
    in_part: u64,
    done: Vec<[u8; 16]>,
}

impl Digests {
    fn update(&mut self, mut buf: &[u8]) {
        while !buf.is_empty() {
            let n = buf.len().min((PART - self.in_part) as usize);
            self.part.update(&buf[..n]);
            self.in_part += n as u64;
            buf = &buf[n..];
            if self.in_part == PART {
                self.done.push(self.part.finalize_reset().into());
                self.in_part = 0;
            }
        }
    }

    /// Each part's MD5, as [`multipart`] cuts the file (an empty file is one part).
    fn parts(&self) -> Vec<[u8; 16]> {
        let mut parts = self.done.clone();
        if self.in_part > 0 || parts.is_empty() {
            parts.push(self.part.clone().finalize().into());
        }
        parts
    }

    /// The ETag S3 gives the object: the MD5 of its bytes when sent `whole` (one
    /// `PutObject`), else `MD5(part MD5s)-N`.
    fn etag(&self, whole: bool) -> String {
        let parts = self.parts();
        if whole {
            return hex(&parts[0]);
        }
        let mut all = Md5::new();
        for part in &parts {
            all.update(part);
        }
        format!("{}-{}", hex(&all.finalize()), parts.len())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A `Content-MD5` header's value.
fn content_md5(digest: &[u8; 16]) -> String {
    aws_smithy_types::base64::encode(digest)
}

/// The server's ETag for what was sent, compared with the one computed here: they differ
/// only where a server's ETag is not an MD5 (encrypted with a KMS key, say). Nothing is
/// wrong then, but `verify` has to download such an object to check it.
fn compare_etag(key: &str, sent: &str, answer: Option<&str>) {
    if let Some(theirs) = answer
        && meta::stamp(theirs) != meta::stamp(sent)
    {
        log::debug!("{key}: the server's ETag {theirs} is not the MD5 of what was sent ({sent})");
    }
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
    /// The MD5s of what was written.
    digests: Digests,
    /// Sent: the spool's path is not removed twice.
    installed: bool,
    /// Owner and group, sent as `uid`/`gid` metadata ([`TempFile::set_owner`]).
    owner: Option<Owner>,
    /// Extended attributes, sent as `xattrs` metadata ([`TempFile::set_xattrs`]); `Err`
    /// (their encoded length) when too long for it, said when the name is known.
    xattrs: Result<Option<String>, usize>,
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
            digests: Digests::default(),
            installed: false,
            owner: None,
            xattrs: Ok(None),
        }
    }

    /// A symlink to `target` to be placed (its target is the object's body).
    pub fn symlink(client: Arc<Client>, target: &Path, mtime: FileTime) -> Upload {
        let body = crate::platform::path_to_bytes(target);
        let mut digests = Digests::default();
        digests.update(&body);
        Upload {
            client,
            spool_dir: PathBuf::new(),
            spool_name: String::new(),
            size: body.len() as u64,
            held: Held::Memory(body),
            mode: 0o777,
            mtime,
            kind: Kind::Symlink,
            digests,
            installed: false,
            owner: None,
            xattrs: Ok(None),
        }
    }

    /// Sends what is held to `key`, replacing what is there.
    fn send(&mut self, key: &str) -> io::Result<()> {
        let mut metadata = meta::of(self.kind, self.mode, self.mtime, self.owner);
        if let Ok(Some(xattrs)) = &self.xattrs {
            metadata.insert(meta::XATTRS.to_string(), xattrs.clone());
        }
        let client = &self.client;
        match &mut self.held {
            Held::Memory(bytes) => {
                let body = ByteStream::from(bytes.clone());
                let sent = client.call(
                    client
                        .s3
                        .put_object()
                        .bucket(&client.bucket.bucket)
                        .key(key)
                        .set_metadata(Some(metadata))
                        .content_md5(content_md5(&self.digests.parts()[0]))
                        .body(body)
                        // Content-MD5 (signed with the headers) guards the bytes: no
                        // SHA-256 of the body here for the signature, nor at the server.
                        .customize()
                        .disable_payload_signing()
                        .send(),
                )?;
                compare_etag(key, &self.digests.etag(true), sent.e_tag());
                Ok(())
            }
            Held::Spool(file, path) => {
                file.flush()?;
                let parts = Some(&self.digests).filter(|_| part_size(self.size) == PART);
                let etag = multipart(client, key, (path, self.size), metadata, parts)?;
                if let Some(digests) = parts {
                    compare_etag(key, &digests.etag(false), etag.as_deref());
                }
                Ok(())
            }
        }
    }

    /// The ETag the object will have, if it is known here.
    fn etag(&self) -> Option<String> {
        match self.held {
            Held::Memory(_) => Some(self.digests.etag(true)),
            Held::Spool(..) => (part_size(self.size) == PART).then(|| self.digests.etag(false)),
        }
    }
}

/// How big each part of a multipart upload of `size` bytes is.
fn part_size(size: u64) -> u64 {
    PART.max(size.div_ceil(MAX_PARTS))
}

/// Sends the file at `path` (`size` bytes) to `key` as a multipart upload, completed
/// only once every part is in, aborted on any error; each part with its `Content-MD5`
/// when `digests` are known. The server's ETag of the object.
fn multipart(
    client: &Client,
    key: &str,
    (path, size): (&Path, u64),
    metadata: std::collections::HashMap<String, String>,
    digests: Option<&Digests>,
) -> io::Result<Option<String>> {
    let md5s = digests.map(Digests::parts);
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
    let part_size = part_size(size);
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
            let md5 = md5s
                .as_ref()
                .and_then(|m| m.get(number as usize - 1))
                .map(content_md5);
            let request = client
                .s3
                .upload_part()
                .bucket(bucket)
                .key(key)
                .upload_id(&upload_id)
                .part_number(number)
                .content_length(length as i64)
                .set_content_md5(md5.clone())
                .body(body)
                .customize();
            // With a Content-MD5 (signed with the headers) guarding the bytes, the
            // part's body is not hashed again for the signature (nor at the server).
            let answer = client.call(match md5 {
                Some(_) => request.disable_payload_signing().send(),
                None => request.send(),
            })?;
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
            .map(|done| done.e_tag().map(str::to_string))
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
        self.digests.update(buf);
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
            ino: self.etag().map_or(0, |etag| meta::stamp(&etag)),
            links: 1,
            owner: self.owner,
        })
    }

    fn look(&mut self, name: &Path) -> io::Result<Option<Stat>> {
        super::head(&self.client, name)
    }

    fn install(&mut self, name: &Path) -> io::Result<()> {
        let key = super::key_of(&self.client, name)?;
        if let Err(len) = self.xattrs {
            log::warn!(
                "the extended attributes of {} take {len} bytes, more than S3 object metadata \
                 holds: they are kept in the index only",
                self.client.bucket.url_of(name)
            );
        }
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

    fn set_owner(&mut self, owner: Owner) -> io::Result<()> {
        self.owner = Some(owner);
        Ok(())
    }

    /// Too many to ride in object metadata: kept in the index only (said on install).
    fn set_xattrs(&mut self, xattrs: &Xattrs) -> io::Result<()> {
        self.xattrs = meta::encode_xattrs(xattrs);
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
        let stat = meta::stat_of(false, total, answer.metadata(), stored, answer.e_tag());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_are_the_md5_of_the_bytes_or_of_the_parts_md5s() {
        let mut empty = Digests::default();
        empty.update(b"");
        assert_eq!(empty.etag(true), "d41d8cd98f00b204e9800998ecf8427e");
        let mut small = Digests::default();
        small.update(b"The quick brown fox ");
        small.update(b"jumps over the lazy dog");
        assert_eq!(small.etag(true), "9e107d9d372bb6826bd81d3542a419d6");

        // Two parts: the first exactly PART bytes, the second one byte, fed in odd
        // pieces across the boundary.
        let bytes = vec![7u8; PART as usize + 1];
        let mut two = Digests::default();
        for piece in bytes.chunks(3 * 1024 * 1024 + 5) {
            two.update(piece);
        }
        let first: [u8; 16] = Md5::digest(&bytes[..PART as usize]).into();
        let second: [u8; 16] = Md5::digest(&bytes[PART as usize..]).into();
        assert_eq!(two.parts(), vec![first, second]);
        let mut all = Md5::new();
        all.update(first);
        all.update(second);
        assert_eq!(two.etag(false), format!("{}-2", hex(&all.finalize())));

        // Exactly one part's worth is one part, not a part and an empty one.
        let mut one = Digests::default();
        one.update(&bytes[..PART as usize]);
        assert_eq!(one.parts(), vec![first]);
    }
}
