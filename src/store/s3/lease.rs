//! The one-writer lease of a bucket prefix: the object `PREFIX/.datasafe/lock`, created
//! only if absent (`If-None-Match: *`), holding `pid host started`, rewritten every
//! [`RENEW`] while held (only if it is still ours: `If-Match` its ETag) and deleted when
//! the writer closes. It is stale, and taken over with a warning, when its holder is a
//! process of this machine that is gone, or when it was not renewed for [`STALE`] (a
//! writer elsewhere that died or lost its network that long).

use super::client::Client;
use crate::output::names::esc;
use crate::store::PrepareError;
use crate::store::remote::{alive, hostname};
use aws_sdk_s3::primitives::ByteStream;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

/// How often a held lease is renewed.
const RENEW: Duration = Duration::from_secs(60);
/// A lease not renewed this long is stale.
const STALE: Duration = Duration::from_secs(10 * 60);

/// A lease this process holds: renewed by a thread, deleted when dropped.
pub struct Held {
    client: Arc<Client>,
    key: String,
    stop: Arc<AtomicBool>,
    renewer: Option<JoinHandle<()>>,
    /// Set when a renewal found the lease taken by another writer.
    pub lost: Arc<AtomicBool>,
}

/// Takes the lease at `key`, or says who holds it.
pub fn take(client: Arc<Client>, key: String) -> Result<Held, PrepareError> {
    let content = format!(
        "{} {} {}\n",
        std::process::id(),
        hostname(),
        chrono::Local::now().format(crate::output::TIME_FORMAT)
    );
    let shown = format!("s3://{}/{key}", client.bucket.bucket);
    let unwritable =
        |e: io::Error| PrepareError::Unwritable(format!("cannot take the lock {shown}: {e}"));
    for _ in 0..3 {
        match put(&client, &key, &content, Condition::Absent) {
            Ok(etag) => return Ok(Held::start(client, key, content, etag)),
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(unwritable(e)),
            Err(_) => {}
        }
        let Some((text, etag, age)) = read(&client, &key).map_err(unwritable)? else {
            continue; // released meanwhile
        };
        let mut words = text.split_whitespace();
        let pid: Option<u32> = words.next().and_then(|p| p.parse().ok());
        let host = words.next().unwrap_or("").to_string();
        let dead_here = host == hostname() && pid.is_some_and(|p| !alive(p));
        if !dead_here && age < STALE {
            return Err(PrepareError::Locked(format!(
                "{shown} is held by another datasafe process (pid {} on {}); stop it, or \
                 wait {} minutes after it died for the lock to go stale",
                pid.map_or("?".to_string(), |p| p.to_string()),
                if host.is_empty() { "?" } else { &host },
                STALE.as_secs() / 60
            )));
        }
        log::warn!(
            "taking over the stale lock {} (left by pid {} on {})",
            esc(std::path::Path::new(&shown)),
            pid.map_or("?".to_string(), |p| p.to_string()),
            host
        );
        match put(&client, &key, &content, Condition::Matches(etag)) {
            Ok(etag) => return Ok(Held::start(client, key, content, etag)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(unwritable(e)),
        }
    }
    Err(PrepareError::Locked(format!(
        "{shown} changed hands while it was being taken; run again"
    )))
}

enum Condition {
    Absent,
    Matches(Option<String>),
}

/// Writes the lease; `AlreadyExists` if the condition failed. Returns the new ETag.
fn put(client: &Client, key: &str, content: &str, when: Condition) -> io::Result<Option<String>> {
    let mut request = client
        .s3
        .put_object()
        .bucket(&client.bucket.bucket)
        .key(key)
        .body(ByteStream::from(content.as_bytes().to_vec()));
    request = match when {
        Condition::Absent => request.if_none_match("*"),
        Condition::Matches(Some(etag)) => request.if_match(etag),
        Condition::Matches(None) => request,
    };
    let answer = client.call(request.send())?;
    Ok(answer.e_tag().map(str::to_string))
}

/// The lease's text, ETag and age (`None`: no lease).
fn read(client: &Client, key: &str) -> io::Result<Option<(String, Option<String>, Duration)>> {
    let answer = client.run(
        client
            .s3
            .get_object()
            .bucket(&client.bucket.bucket)
            .key(key)
            .send(),
    );
    let answer = match answer {
        Ok(answer) => answer,
        Err(e) => {
            let e = client.error(e);
            return match e.kind() {
                io::ErrorKind::NotFound => Ok(None),
                _ => Err(e),
            };
        }
    };
    let etag = answer.e_tag().map(str::to_string);
    let age = answer
        .last_modified()
        .and_then(|t| SystemTime::try_from(*t).ok())
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .unwrap_or_default();
    let body = client
        .run(answer.body.collect())
        .map_err(|e| io::Error::other(e.to_string()))?;
    let text = String::from_utf8_lossy(&body.into_bytes()).into_owned();
    Ok(Some((text, etag, age)))
}

impl Held {
    fn start(client: Arc<Client>, key: String, content: String, etag: Option<String>) -> Held {
        let stop = Arc::new(AtomicBool::new(false));
        let lost = Arc::new(AtomicBool::new(false));
        let etag = Arc::new(Mutex::new(etag));
        let renewer = {
            let (client, key, stop, lost, etag) = (
                client.clone(),
                key.clone(),
                stop.clone(),
                lost.clone(),
                etag.clone(),
            );
            std::thread::Builder::new()
                .name("s3-lease".to_string())
                .spawn(move || {
                    let mut last = std::time::Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(200));
                        if last.elapsed() < RENEW {
                            continue;
                        }
                        last = std::time::Instant::now();
                        let current = etag.lock().unwrap_or_else(|p| p.into_inner()).clone();
                        match put(&client, &key, &content, Condition::Matches(current)) {
                            Ok(new) => *etag.lock().unwrap_or_else(|p| p.into_inner()) = new,
                            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                                log::error!(
                                    "the lock s3://{}/{key} was taken by another writer",
                                    client.bucket.bucket
                                );
                                lost.store(true, Ordering::Relaxed);
                                return;
                            }
                            Err(e) => log::warn!("cannot renew the lock: {e}"),
                        }
                    }
                })
                .ok()
        };
        Held {
            client,
            key,
            stop,
            renewer,
            lost,
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(renewer) = self.renewer.take() {
            let _ = renewer.join();
        }
        if self.lost.load(Ordering::Relaxed) {
            return;
        }
        let client = &self.client;
        let _ = client.run(
            client
                .s3
                .delete_object()
                .bucket(&client.bucket.bucket)
                .key(&self.key)
                .send(),
        );
    }
}
