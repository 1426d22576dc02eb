//! A mirror in a bucket of S3-compatible object storage ([`S3`]): the third
//! implementation of the destination seam, beside [`super::local::Local`] and the SFTP
//! store.
//!
//! - Each stored name is one object at `PREFIX/NAME` (`NAME.gz` with `--compress`); its
//!   kind, mode and mtime ride in user metadata (`meta`); a folder is a marker object
//!   `PREFIX/NAME/`. The connection and its errors are `client`.
//! - A file is held until its final name is known and then sent in one step, a single
//!   `PutObject` or a multipart upload completed only when every part is in (`files`):
//!   S3 replaces an object atomically, so nothing half-written is ever visible.
//!   Uploads a killed run left unfinished are aborted by the next writer.
//! - A version is a server-side copy into `PREFIX/.datasafe/versions/…` (the store's
//!   "hard link": the bytes do not pass through here); a rename is a copy and a delete.
//! - One writer per prefix: a lease object created only if absent (`lease`).
//! - The index is local and authoritative; a snapshot is published to
//!   `PREFIX/.datasafe/index.db` with one `PutObject` after commits (shared with the
//!   SFTP store: [`super::remote::cache`]); a pass with a current index sends no
//!   request per object.

pub mod client;
mod files;
mod lease;
mod meta;

use super::remote::cache;
use super::{
    Caps, Inventoried, Listed, PrepareError, ReadFile, Reader, Staged, Stat, Store, TempFile,
    layout,
};
use crate::config::Bucket;
use crate::model::{Kept, Kind, Owner, Xattrs};
use crate::output::names::{esc, io_message};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Delete, MetadataDirective, ObjectIdentifier};
use client::Client;
use filetime::FileTime;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The longest object a listing takes for a possible symlink (a target is at most
/// `PATH_MAX`).
const SYMLINK_MAX: i64 = 4096;

/// A bucket prefix as a store.
pub struct S3 {
    client: Arc<Client>,
    cache: cache::Cache,
    writing: Option<Writing>,
}

/// What a prepared store holds.
struct Writing {
    lease: lease::Held,
    next_spool: AtomicU64,
    published: Mutex<cache::Publishing>,
}

impl S3 {
    /// A store that reads `bucket` (no lease, nothing written).
    pub fn open(bucket: &Bucket) -> io::Result<S3> {
        let store = S3::connect(bucket)?;
        store.cache.refresh(&store, cache::Role::Reader)?;
        Ok(store)
    }

    /// A store that will write `bucket`, once prepared; the bucket must exist.
    pub fn create(bucket: &Bucket) -> Result<S3, PrepareError> {
        S3::connect(bucket).map_err(|e| PrepareError::Unwritable(e.to_string()))
    }

    /// A client for `bucket`, the bucket checked to be there (one request).
    fn connect(bucket: &Bucket) -> io::Result<S3> {
        let client = Arc::new(Client::new(bucket)?);
        client
            .run(client.s3.head_bucket().bucket(&bucket.bucket).send())
            .map_err(|e| {
                let e = client.error(e);
                match e.kind() {
                    // HEAD answers a missing bucket with a bare 404.
                    io::ErrorKind::NotFound => io::Error::new(
                        io::ErrorKind::NotFound,
                        format!(
                            "{} does not exist: create it first, or check its name and the \
                             endpoint",
                            client.place()
                        ),
                    ),
                    // HEAD's answer has no body: a 403 may be refused credentials or
                    // missing permissions. A listing says which.
                    io::ErrorKind::PermissionDenied => client
                        .run(
                            client
                                .s3
                                .list_objects_v2()
                                .bucket(&bucket.bucket)
                                .max_keys(1)
                                .send(),
                        )
                        .map_or_else(|e| client.error(e), |_| e),
                    _ => e,
                }
            })?;
        Ok(S3 {
            cache: cache::Cache::of(&bucket.key())?,
            client,
            writing: None,
        })
    }

    /// Whether `bucket` can be reached now (one request).
    pub fn reachable(bucket: &Bucket) -> io::Result<()> {
        S3::connect(bucket).map(drop)
    }

    fn key(&self, name: &Path) -> io::Result<String> {
        key_of(&self.client, name)
    }

    /// The name inside the mirror of the object `key` (a marker's without its slash).
    fn name_of(&self, key: &str) -> PathBuf {
        let root = folder_key(&self.client.bucket.key_of(Path::new("")));
        PathBuf::from(key.strip_prefix(&root).unwrap_or(key).trim_end_matches('/'))
    }

    /// Keys of everything under the folder `name` (the marker too), in pages.
    fn keys_under(&self, name: &Path) -> io::Result<Vec<String>> {
        let mut keys = Vec::new();
        self.each_object_under(name, |o| keys.extend(o.key().map(str::to_string)))?;
        Ok(keys)
    }

    /// Every object under the folder `name` (the marker too), page by page.
    fn each_object_under(
        &self,
        name: &Path,
        mut each: impl FnMut(&aws_sdk_s3::types::Object),
    ) -> io::Result<()> {
        let prefix = folder_key(&self.key(name)?);
        let mut token = None;
        loop {
            let answer = list_page(&self.client, &prefix, None, token.take())?;
            answer.contents().iter().for_each(&mut each);
            match answer.next_continuation_token() {
                Some(next) if answer.is_truncated() == Some(true) => token = Some(next.to_string()),
                _ => return Ok(()),
            }
        }
    }

    /// Deletes `keys`, a thousand a request.
    fn delete_keys(&self, keys: &[String]) -> io::Result<()> {
        let client = &self.client;
        for batch in keys.chunks(1000) {
            let objects = batch
                .iter()
                .map(|k| {
                    ObjectIdentifier::builder()
                        .key(k)
                        .build()
                        .map_err(io::Error::other)
                })
                .collect::<io::Result<Vec<_>>>()?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(io::Error::other)?;
            let answer = client.call(
                client
                    .s3
                    .delete_objects()
                    .bucket(&client.bucket.bucket)
                    .delete(delete)
                    .send(),
            )?;
            if let Some(failed) = answer.errors().first() {
                return Err(io::Error::other(format!(
                    "cannot delete {} in {}: {}",
                    failed.key().unwrap_or("?"),
                    client.place(),
                    failed.message().unwrap_or("refused")
                )));
            }
        }
        Ok(())
    }

    /// A server-side copy of `from` to `to`, with new metadata if given.
    fn copy_key(
        &self,
        from: &str,
        to: &str,
        metadata: Option<std::collections::HashMap<String, String>>,
    ) -> io::Result<Option<String>> {
        let client = &self.client;
        let source = format!("{}/{}", client.bucket.bucket, encode_key(from));
        let mut request = client
            .s3
            .copy_object()
            .bucket(&client.bucket.bucket)
            .key(to)
            .copy_source(source);
        if let Some(metadata) = metadata {
            request = request
                .metadata_directive(MetadataDirective::Replace)
                .set_metadata(Some(metadata));
        }
        let copied = client.call(request.send())?;
        client.note_written(to);
        Ok(copied
            .copy_object_result()
            .and_then(|r| r.e_tag())
            .map(str::to_string))
    }

    /// Aborts the multipart uploads a killed writer left under the prefix (the lease is
    /// held: no other writer has one under way).
    fn abort_leftover_uploads(&self) -> io::Result<()> {
        let client = &self.client;
        let prefix = &client.bucket.prefix;
        let answer = client.call(
            client
                .s3
                .list_multipart_uploads()
                .bucket(&client.bucket.bucket)
                .set_prefix((!prefix.is_empty()).then(|| format!("{prefix}/")))
                .send(),
        )?;
        for upload in answer.uploads() {
            let (Some(key), Some(id)) = (upload.key(), upload.upload_id()) else {
                continue;
            };
            log::info!("aborting an unfinished upload of {key} left by an earlier run");
            let _ = client.run(
                client
                    .s3
                    .abort_multipart_upload()
                    .bucket(&client.bucket.bucket)
                    .key(key)
                    .upload_id(id)
                    .send(),
            );
        }
        Ok(())
    }

    /// Which of `objects` (their place in a listing, their key) are symlinks: their
    /// metadata says so, read with HEADs sent together (a listing shows no metadata).
    fn symlinks_among(&self, objects: &[(usize, String)]) -> io::Result<Vec<usize>> {
        let client = &self.client;
        client.check_up()?;
        let mut found = Vec::new();
        for batch in objects.chunks(64) {
            let answers = client.run(async {
                let mut heads = tokio::task::JoinSet::new();
                for (at, key) in batch {
                    let (s3, bucket, key, at) = (
                        client.s3.clone(),
                        client.bucket.bucket.clone(),
                        key.clone(),
                        *at,
                    );
                    heads.spawn(async move {
                        (at, s3.head_object().bucket(bucket).key(key).send().await)
                    });
                }
                heads.join_all().await
            });
            for (at, answer) in answers {
                match answer {
                    Ok(head) => {
                        if head
                            .metadata()
                            .and_then(|m| m.get(meta::KIND))
                            .map(String::as_str)
                            == Some(meta::SYMLINK)
                        {
                            found.push(at);
                        }
                    }
                    Err(e) => {
                        let e = client.error(e);
                        // Gone since the listing: left as listed.
                        if e.kind() != io::ErrorKind::NotFound {
                            return Err(e);
                        }
                    }
                }
            }
        }
        Ok(found)
    }

    /// True if the prefix holds nothing but datasafe's own state (one listing of its
    /// top level): a first mirror into it need not look before each upload.
    fn holds_nothing_yet(&self) -> io::Result<bool> {
        let client = &self.client;
        let root = folder_key(&client.bucket.key_of(Path::new("")));
        let state = format!("{root}{}/", layout::STATE_DIR);
        let listed = list_page(client, &root, Some("/"), None)?;
        let files = listed
            .contents()
            .iter()
            .any(|o| o.key() != Some(root.as_str()));
        let folders = listed
            .common_prefixes()
            .iter()
            .any(|p| p.prefix() != Some(state.as_str()));
        Ok(listed.is_truncated() != Some(true) && !files && !folders)
    }

    fn writing(&self) -> io::Result<&Writing> {
        self.writing
            .as_ref()
            .ok_or_else(|| io::Error::other("the store was not prepared for writing"))
    }

    fn put_marker(
        &self,
        name: &Path,
        (mode, mtime, owner): (u32, FileTime, Option<Owner>),
        only_new: bool,
    ) -> io::Result<()> {
        let client = &self.client;
        let key = folder_key(&self.key(name)?);
        if key.is_empty() {
            return Ok(()); // the bucket's root: nothing to mark
        }
        let mut request = client
            .s3
            .put_object()
            .bucket(&client.bucket.bucket)
            .key(&key)
            .set_metadata(Some(meta::of(Kind::Dir, mode, mtime, owner)))
            .body(ByteStream::from_static(b""));
        if only_new {
            request = request.if_none_match("*");
        }
        if let Err(e) = client.call(request.send()) {
            if e.kind() == io::ErrorKind::AlreadyExists {
                // A folder is there (its marker, or one the server made for the
                // objects under it): looked at again, it must say so.
                client.note_implied_folder(&key);
            }
            return Err(e);
        }
        client.note_folder(
            &key,
            meta::stat_of(
                true,
                0,
                Some(&meta::of(Kind::Dir, mode, mtime, owner)),
                None,
                None,
            ),
            true,
        );
        Ok(())
    }
}

/// The object key of `name`: S3 keys are UTF-8, so a name that is not is refused with
/// one line (never mangled into another name).
pub(crate) fn key_of(client: &Client, name: &Path) -> io::Result<String> {
    if name.to_str().is_none() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is not valid UTF-8 and S3 keys must be: rename it to mirror it to {}",
                esc(name),
                client.place()
            ),
        ));
    }
    Ok(client.bucket.key_of(name))
}

/// One page of the keys that start with `prefix`; grouped at `delimiter` (`"/"`: what
/// is deeper comes as a common prefix, a folder), or every key below it.
fn list_page(
    client: &Client,
    prefix: &str,
    delimiter: Option<&str>,
    token: Option<String>,
) -> io::Result<aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output> {
    client.call(
        client
            .s3
            .list_objects_v2()
            .bucket(&client.bucket.bucket)
            .prefix(prefix)
            .set_delimiter(delimiter.map(str::to_string))
            .set_continuation_token(token)
            .send(),
    )
}

/// What a folder the store knows only to be there is (no metadata read).
pub(crate) fn implied_folder() -> Stat {
    meta::stat_of(true, 0, None, None, None)
}

/// `key` as a folder's marker key (ending in `/`; empty stays empty).
fn folder_key(key: &str) -> String {
    if key.is_empty() || key.ends_with('/') {
        key.to_string()
    } else {
        format!("{key}/")
    }
}

/// A key as the `x-amz-copy-source` header takes it: percent-encoded, `/` kept.
fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for &b in key.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What stands at `name`. One listing of the keys that start with its key says whether
/// it is there, as an object or a folder (a marker, or objects under it); only a name
/// that is there costs a HEAD for its metadata. So a new file's look before its upload is
/// one request.
pub(crate) fn head(client: &Client, name: &Path) -> io::Result<Option<Stat>> {
    let key = key_of(client, name)?;
    if key.is_empty() || key.ends_with('/') {
        return head_pair(client, name);
    }
    let marker_key = folder_key(&key);
    if let Some(known) = client.known_folder(&marker_key) {
        return Ok(Some(known));
    }
    // Never for datasafe's own state: a prefix that held only it may keep old versions.
    if !name.starts_with(layout::STATE_DIR) && client.surely_absent(&key) {
        return Ok(None);
    }
    let listed = list_page(client, &key, Some("/"), None)?;
    let object = listed
        .contents()
        .iter()
        .any(|o| o.key() == Some(key.as_str()));
    let folder = listed
        .common_prefixes()
        .iter()
        .any(|p| p.prefix() == Some(marker_key.as_str()));
    match (object, folder) {
        // Not in this page of a long listing: look the slow way.
        (false, false) if listed.is_truncated() == Some(true) => head_pair(client, name),
        (false, false) => Ok(None),
        (true, _) => head_one(client, &key, false),
        (false, true) => {
            let marker = head_one(client, &marker_key, true)?;
            let stat = marker.unwrap_or_else(implied_folder);
            client.note_folder(&marker_key, stat, marker.is_some());
            Ok(Some(stat))
        }
    }
}

/// A HEAD of `key` (`None` for the empty key: nothing to ask).
async fn head_at(
    client: &Client,
    key: &str,
) -> Option<
    Result<
        aws_sdk_s3::operation::head_object::HeadObjectOutput,
        aws_sdk_s3::error::SdkError<
            aws_sdk_s3::operation::head_object::HeadObjectError,
            aws_sdk_s3::config::http::HttpResponse,
        >,
    >,
> {
    if key.is_empty() {
        return None;
    }
    let request = client
        .s3
        .head_object()
        .bucket(&client.bucket.bucket)
        .key(key);
    Some(request.send().await)
}

/// The stat of the object `key` (a folder's marker if `folder`), `None` if it is not
/// there.
fn head_one(client: &Client, key: &str, folder: bool) -> io::Result<Option<Stat>> {
    client.check_up()?;
    match client.run(head_at(client, key)) {
        None => Ok(None),
        Some(Ok(found)) => Ok(Some(stat_of_head(&found, folder))),
        Some(Err(e)) => match client.error(e) {
            e if e.kind() == io::ErrorKind::NotFound => Ok(None),
            e => Err(e),
        },
    }
}

fn stat_of_head(
    found: &aws_sdk_s3::operation::head_object::HeadObjectOutput,
    folder: bool,
) -> Stat {
    let stored = found
        .last_modified()
        .and_then(|t| std::time::SystemTime::try_from(*t).ok())
        .map(FileTime::from_system_time);
    let size = found.content_length().unwrap_or(0).max(0) as u64;
    meta::stat_of(folder, size, found.metadata(), stored, found.e_tag())
}

impl S3 {
    /// The object at `name` if it is a `kind` (a file or symlink; never a folder), with
    /// all of its user metadata: one HEAD.
    fn head_object(
        &self,
        name: &Path,
        kind: Kind,
    ) -> io::Result<Option<(Stat, std::collections::HashMap<String, String>)>> {
        let key = self.key(name)?;
        if key.is_empty() || key.ends_with('/') {
            return Ok(None);
        }
        let client = &self.client;
        client.check_up()?;
        match client.run(head_at(client, &key)) {
            None => Ok(None),
            Some(Ok(found)) => {
                let stat = stat_of_head(&found, false);
                Ok((stat.kind == kind)
                    .then(|| (stat, found.metadata().cloned().unwrap_or_default())))
            }
            Some(Err(e)) => match client.error(e) {
                e if e.kind() == io::ErrorKind::NotFound => Ok(None),
                e => Err(e),
            },
        }
    }
}

/// What stands at `name`: the object, else the folder marker, HEADed together.
fn head_pair(client: &Client, name: &Path) -> io::Result<Option<Stat>> {
    let key = key_of(client, name)?;
    let object_key = if key.ends_with('/') { "" } else { key.as_str() };
    let marker_key = folder_key(&key);
    client.check_up()?;
    let (object, marker) = client
        .run(async { tokio::join!(head_at(client, object_key), head_at(client, &marker_key)) });
    if key.is_empty() {
        // The root of the bucket is always there.
        return Ok(Some(meta::stat_of(true, 0, None, None, None)));
    }
    for (answer, folder) in [(object, false), (marker, true)] {
        match answer {
            None => {}
            Some(Ok(found)) => return Ok(Some(stat_of_head(&found, folder))),
            Some(Err(e)) => {
                let e = client.error(e);
                if e.kind() != io::ErrorKind::NotFound {
                    return Err(e);
                }
            }
        }
    }
    Ok(None)
}

impl Reader for S3 {
    /// A file's from its metadata (one HEAD); a folder's are kept in the index only.
    fn xattrs(&self, name: &Path, kept: &Kept) -> io::Result<Xattrs> {
        match self.head_object(name, Kind::File)? {
            Some((_, meta)) => Ok(meta::xattrs_of(&meta, kept)),
            None => Err(io::ErrorKind::Unsupported.into()),
        }
    }

    fn caps(&self) -> Caps {
        Caps {
            // A second name is a server-side copy: no bytes pass through here.
            hard_links: true,
            atomic_rename: false,
            posix_meta: true,
            symlinks: true,
            server_side_copy: true,
            fsync: true,
            nanosecond_mtimes: true,
            cheap_listing: false,
            // In each object's metadata, by number.
            owners: true,
            // A file's in its metadata, a folder's in the index.
            xattrs: true,
        }
    }

    fn display(&self, name: &Path) -> PathBuf {
        PathBuf::from(self.client.bucket.url_of(name))
    }

    fn stat(&self, name: &Path) -> io::Result<Option<Stat>> {
        head(&self.client, name)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<Listed>> {
        let client = &self.client;
        let prefix = folder_key(&self.key(dir)?);
        let mut listed = Vec::new();
        // Objects small enough to be a symlink: a listing cannot tell one from a file.
        let mut small = Vec::new();
        let mut token = None;
        loop {
            let answer = list_page(client, &prefix, Some("/"), token.take())?;
            for object in answer.contents() {
                let Some(key) = object.key() else { continue };
                let rest = &key[prefix.len().min(key.len())..];
                if rest.is_empty() {
                    continue; // the folder's own marker
                }
                if object.size().unwrap_or(0) <= SYMLINK_MAX {
                    small.push((listed.len(), key.to_string()));
                }
                listed.push(Listed {
                    name: dir.join(rest),
                    kind: Kind::File,
                });
            }
            for common in answer.common_prefixes() {
                let Some(p) = common.prefix() else { continue };
                let rest = p[prefix.len().min(p.len())..].trim_end_matches('/');
                if rest.is_empty() {
                    continue;
                }
                listed.push(Listed {
                    name: dir.join(rest),
                    kind: Kind::Dir,
                });
            }
            match answer.next_continuation_token() {
                Some(next) if answer.is_truncated() == Some(true) => token = Some(next.to_string()),
                _ => break,
            }
        }
        if listed.is_empty() && !dir.as_os_str().is_empty() && self.stat(dir)?.is_none() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} is not there", self.display(dir).display()),
            ));
        }
        for at in self.symlinks_among(&small)? {
            listed[at].kind = Kind::Symlink;
        }
        Ok(listed)
    }

    fn inventory(&self) -> Option<io::Result<Vec<Inventoried>>> {
        Some(self.inventory_listed())
    }

    fn open(&self, name: &Path) -> io::Result<Box<dyn ReadFile>> {
        // One GET: the object's first chunk, size and metadata together.
        let key = self.key(name)?;
        let opened = match key.is_empty() || key.ends_with('/') {
            true => None,
            false => files::Object::open(self.client.clone(), key)?,
        };
        match opened {
            Some(object) if object.kind() == Kind::File => Ok(Box::new(object)),
            Some(_) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a file", self.display(name).display()),
            )),
            // Not an object: a folder, or nothing.
            None => match self.stat(name)? {
                Some(_) => Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} is not a file", self.display(name).display()),
                )),
                None => Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{} is not there", self.display(name).display()),
                )),
            },
        }
    }

    fn read_link(&self, name: &Path) -> io::Result<PathBuf> {
        let stat = self
            .stat(name)?
            .filter(|s| s.kind == Kind::Symlink)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} is not a symlink", self.display(name).display()),
                )
            })?;
        let mut object = files::Object::new(self.client.clone(), self.key(name)?, stat);
        let mut target = Vec::new();
        io::Read::read_to_end(&mut object, &mut target)?;
        crate::platform::path_from_bytes(target).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} holds a target this system cannot name",
                    self.display(name).display()
                ),
            )
        })
    }

    fn index_file(&self) -> PathBuf {
        self.cache.index_file()
    }
}

impl Store for S3 {
    fn prepare(&mut self) -> Result<(), PrepareError> {
        let url = self.display(layout::state());
        let unwritable = |e: io::Error| {
            PrepareError::Unwritable(format!("cannot write {}: {}", esc(&url), io_message(&e)))
        };
        let held = lease::take(
            self.client.clone(),
            self.client.bucket.key_of(&layout::lock()),
        )?;
        let trusted = self
            .cache
            .refresh(self, cache::Role::Writer)
            .and_then(|trusted| self.cache.writing().map(|()| trusted))
            .map_err(unwritable)?;
        // An index that describes the mirror is no first mirror: no listing for it.
        if !trusted && self.holds_nothing_yet().unwrap_or(false) {
            self.client.set_fresh();
        }
        if let Err(e) = self.abort_leftover_uploads() {
            log::warn!(
                "cannot look for unfinished uploads in {}: {e}",
                self.client.place()
            );
        }
        let _ = std::fs::remove_dir_all(self.spool_dir());
        self.writing = Some(Writing {
            lease: held,
            next_spool: AtomicU64::new(0),
            published: Mutex::new(cache::Publishing::default()),
        });
        Ok(())
    }

    fn ready(&self) -> bool {
        self.writing
            .as_ref()
            .is_some_and(|w| !w.lease.lost.load(Ordering::Relaxed))
            && !self.client.is_down()
    }

    fn temp_file(&self) -> io::Result<Box<dyn TempFile>> {
        let n = self.writing()?.next_spool.fetch_add(1, Ordering::Relaxed);
        Ok(Box::new(files::Upload::new(
            self.client.clone(),
            self.spool_dir(),
            format!("{}-{n}", std::process::id()),
        )))
    }

    fn temp_symlink(&self, target: &Path, mtime: FileTime) -> io::Result<Box<dyn Staged>> {
        Ok(Box::new(files::Upload::symlink(
            self.client.clone(),
            target,
            mtime,
        )))
    }

    fn mkdir(&self, name: &Path) -> io::Result<()> {
        self.mkdir_as(name, 0o755, FileTime::now(), None)
    }

    fn mkdir_as(
        &self,
        name: &Path,
        mode: u32,
        mtime: FileTime,
        owner: Option<Owner>,
    ) -> io::Result<()> {
        // Workers making folders on their ways often meet at the same one: one makes
        // it, the others wait and find it made (a create-only PUT would not always stop
        // them: SeaweedFS takes a marker it already has as a folder and answers 200).
        let key = folder_key(&self.key(name)?);
        let _alone = self.client.making(&key);
        if self.stat(name)?.is_some() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists", self.display(name).display()),
            ));
        }
        // In a first mirror only this run's keys are there: a folder a file another
        // worker writes into it meanwhile implies is this same folder, and its marker is
        // put all the same (create-only, SeaweedFS would refuse it, and the folder would
        // need a second PUT for its metadata).
        let only_new = name.starts_with(layout::STATE_DIR) || !self.client.surely_absent(&key);
        // A marker's metadata does not change as keys are written under it: the folder
        // is made as it is to end, and `set_meta` after its content sends nothing.
        self.put_marker(name, (mode, mtime, owner), only_new)
    }

    fn symlink(&self, target: &Path, name: &Path) -> io::Result<()> {
        if self.stat(name)?.is_some() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists", self.display(name).display()),
            ));
        }
        let mut link = files::Upload::symlink(self.client.clone(), target, FileTime::now());
        link.install(name)
    }

    fn link(&self, from: &Path, to: &Path) -> io::Result<()> {
        if self.stat(to)?.is_some() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists", self.display(to).display()),
            ));
        }
        self.copy_key(&self.key(from)?, &self.key(to)?, None)
            .map(drop)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.client.forget_folders(&folder_key(&self.key(from)?));
        let Some(what) = self.stat(from)? else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} is not there", self.display(from).display()),
            ));
        };
        if what.kind != Kind::Dir {
            // A copy, then the old name goes: a crash between leaves both, and the next
            // pass deletes the one the source no longer has.
            self.copy_key(&self.key(from)?, &self.key(to)?, None)?;
            return self.delete_keys(&[self.key(from)?]);
        }
        if let Some(there) = self.stat(to)?
            && there.kind != Kind::Dir
        {
            self.delete_keys(&[self.key(to)?])?;
        }
        let (old, new) = (folder_key(&self.key(from)?), folder_key(&self.key(to)?));
        let keys = self.keys_under(from)?;
        for key in &keys {
            let moved = format!("{new}{}", &key[old.len()..]);
            if key.ends_with('/') {
                // A folder marker: made anew (some servers, SeaweedFS among them, keep a
                // marker as a folder and will not copy it).
                let stat = self.stat(&self.name_of(key))?;
                let (mode, mtime) = stat.map_or((0o755, FileTime::now()), |s| (s.mode, s.mtime));
                let owner = stat.and_then(|s| s.owner);
                self.put_marker(&self.name_of(&moved), (mode, mtime, owner), false)?;
            } else {
                self.copy_key(key, &moved, None)?;
            }
        }
        self.delete_keys(&keys)
    }

    fn remove_file(&self, name: &Path) -> io::Result<()> {
        self.delete_keys(&[self.key(name)?])
    }

    fn remove_dir(&self, name: &Path) -> io::Result<()> {
        self.client.forget_folders(&folder_key(&self.key(name)?));
        let keys = self.keys_under(name)?;
        let marker = folder_key(&self.key(name)?);
        if keys.iter().any(|k| *k != marker) {
            return Err(io::Error::new(
                io::ErrorKind::DirectoryNotEmpty,
                format!("{} is not empty", self.display(name).display()),
            ));
        }
        self.delete_keys(&[marker])
    }

    fn remove_tree(&self, name: &Path) -> io::Result<()> {
        self.client.forget_folders(&folder_key(&self.key(name)?));
        let keys = self.keys_under(name)?;
        self.delete_keys(&keys)
    }

    fn set_meta(
        &self,
        name: &Path,
        kind: Kind,
        mode: u32,
        mtime: FileTime,
    ) -> io::Result<Option<Stat>> {
        if kind == Kind::File {
            // One HEAD; the rest of the metadata (owner, attributes) is kept.
            let Some((found, mut meta)) = self.head_object(name, kind)? else {
                return Ok(None);
            };
            meta::set_mode_mtime(&mut meta, mode, mtime);
            let key = self.key(name)?;
            let copy = self.copy_key(&key, &key, Some(meta))?;
            return Ok(Some(Stat {
                mode,
                mtime,
                // A copy of a multipart upload may be given an ETag of another form.
                ino: copy.map_or(0, |etag| meta::stamp(&etag)),
                ..found
            }));
        }
        let Some(found) = self.stat(name)? else {
            return Ok(None);
        };
        if found.kind != kind || kind != Kind::Dir {
            return Ok(None);
        }
        // Made with these by `mkdir_as` (or found so): nothing to send. The owner the
        // folder has is kept: a marker's metadata is replaced whole.
        if !self
            .client
            .marked_as(&folder_key(&self.key(name)?), mode, mtime)
        {
            self.put_marker(name, (mode, mtime, found.owner), false)?;
        }
        Ok(Some(Stat {
            mode,
            mtime,
            ..found
        }))
    }

    /// The owner rides in the metadata (`uid`, `gid`): a copy of the object onto itself
    /// with the rest of its metadata kept, a marker put again.
    fn set_owner(&self, name: &Path, kind: Kind, owner: Owner) -> io::Result<bool> {
        match kind {
            Kind::Dir => {
                let Some(found) = self.stat(name)?.filter(|f| f.kind == kind) else {
                    return Ok(false);
                };
                if found.owner != Some(owner) {
                    self.put_marker(name, (found.mode, found.mtime, Some(owner)), false)?;
                }
            }
            Kind::File | Kind::Symlink => {
                let Some((found, mut meta)) = self.head_object(name, kind)? else {
                    return Ok(false);
                };
                if found.owner != Some(owner) {
                    meta::set_owner(&mut meta, owner);
                    let key = self.key(name)?;
                    self.copy_key(&key, &key, Some(meta))?;
                }
            }
            Kind::Special => return Ok(false),
        }
        Ok(true)
    }

    /// A file's attributes ride in its metadata (`xattrs`): a copy of the object onto
    /// itself with the rest of its metadata kept. A folder's are kept in the index only
    /// (a marker's metadata is not kept by every server: SeaweedFS drops it).
    fn set_xattrs(
        &self,
        name: &Path,
        kind: Kind,
        xattrs: &Xattrs,
        kept: &Kept,
    ) -> io::Result<bool> {
        if kind != Kind::File {
            return Ok(self.stat(name)?.is_some_and(|f| f.kind == kind));
        }
        let Some((_, mut meta)) = self.head_object(name, kind)? else {
            return Ok(false);
        };
        // Attributes the pair does not keep that the object carries stay.
        let mut all = meta::xattrs_of(&meta, &Kept::EVERYTHING);
        all.0.retain(|(n, _)| !kept.keeps(n));
        all.0
            .extend(xattrs.0.iter().filter(|(n, _)| kept.keeps(n)).cloned());
        let value = match meta::encode_xattrs(&all) {
            Ok(value) => value,
            Err(len) => {
                log::warn!(
                    "the extended attributes of {} take {len} bytes, more than S3 object \
                     metadata holds: they are kept in the index only",
                    esc(&self.display(name))
                );
                None
            }
        };
        if meta.get(meta::XATTRS) == value.as_ref() {
            return Ok(true);
        }
        match value {
            Some(value) => meta.insert(meta::XATTRS.to_string(), value),
            None => meta.remove(meta::XATTRS),
        };
        let key = self.key(name)?;
        self.copy_key(&key, &key, Some(meta))?;
        Ok(true)
    }

    fn barrier(&self) -> io::Result<()> {
        // An object is durable once its PUT answered.
        Ok(())
    }

    fn free_bytes(&self) -> Option<u64> {
        None
    }

    fn index_committed(&self) -> io::Result<()> {
        let writing = self.writing()?;
        self.cache
            .publish(self, &writing.published, cache::Publish::Committed)
    }

    fn index_idle(&self) -> io::Result<()> {
        // A watcher idles: its first pass is over; from now on every look is real.
        self.client.end_fresh();
        let writing = self.writing()?;
        self.cache
            .publish(self, &writing.published, cache::Publish::IfDue)
    }
}

impl S3 {
    /// [`Reader::inventory`]: one flat listing of the prefix (a thousand keys a
    /// request); a folder is a marker or a prefix of the keys below it.
    fn inventory_listed(&self) -> io::Result<Vec<Inventoried>> {
        let state = Path::new(layout::STATE_DIR);
        let mut found = Vec::new();
        let mut folders = std::collections::HashSet::new();
        self.each_object_under(Path::new(""), |object| {
            let Some(key) = object.key() else { return };
            let name = self.name_of(key);
            if name.as_os_str().is_empty() || name.starts_with(state) {
                return;
            }
            let mut up = name.parent();
            while let Some(folder) = up.filter(|f| !f.as_os_str().is_empty()) {
                if !folders.insert(folder.to_path_buf()) {
                    break;
                }
                up = folder.parent();
            }
            if key.ends_with('/') {
                folders.insert(name);
                return;
            }
            found.push(Inventoried {
                name,
                kind: Kind::File,
                size: object.size().unwrap_or(0).max(0) as u64,
                stamp: object.e_tag().map_or(0, meta::stamp),
            });
        })?;
        found.extend(folders.into_iter().map(|name| Inventoried {
            name,
            kind: Kind::Dir,
            size: 0,
            stamp: 0,
        }));
        Ok(found)
    }

    /// Where files too big for memory wait for their upload: the mirror's local cache
    /// folder.
    fn spool_dir(&self) -> PathBuf {
        self.cache.index_file().with_file_name("spool")
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        let Some(writing) = &self.writing else {
            return;
        };
        if writing.lease.lost.load(Ordering::Relaxed) {
            // Another writer holds the prefix now: its index is the one to publish.
            log::warn!(
                "the lock of {} was taken by another writer; this run's index is not published",
                self.client.bucket.url()
            );
            return;
        }
        match self
            .cache
            .publish(self, &writing.published, cache::Publish::Now)
        {
            Ok(()) => self.cache.closed(),
            Err(e) => log::warn!(
                "cannot publish the index to {}: {} (the next run compares with a listing \
                 of the mirror)",
                esc(&self.display(&layout::index())),
                io_message(&e)
            ),
        }
        let _ = std::fs::remove_dir_all(self.spool_dir());
    }
}
