//! The one-writer lock of a remote mirror: `DST/.datasafe/lock`, created exclusively,
//! holding `pid host started`. A remote file cannot be `flock`ed and its holder may be on
//! another machine, so the lock says who holds it and is renewed: its mtime is touched
//! every [`RENEW`] while held. It is stale (taken over, with a warning) when its holder is
//! a process of this machine that is gone, or when it was not renewed for [`STALE`] (a
//! holder on another machine that died, or lost its network for that long).

use super::conn::Conn;
use crate::output::names::esc;
use crate::store::PrepareError;
use crate::store::remote::{alive, hostname};
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

/// How often a held lock is touched.
const RENEW: Duration = Duration::from_secs(60);
/// A lock untouched this long is stale.
const STALE: Duration = Duration::from_secs(10 * 60);
/// A lock that does not say who holds it is stale once it is this old (before, it may
/// be one being written).
const UNWRITTEN: Duration = Duration::from_secs(30);

/// A lock this process holds: renewed by a thread, removed when dropped.
pub(super) struct Held {
    conn: Arc<Conn>,
    path: String,
    content: String,
    stop: Arc<AtomicBool>,
    renewer: Option<JoinHandle<()>>,
}

/// Who holds a lock, as its file says.
#[derive(Debug, PartialEq, Eq)]
struct Holder {
    pid: u32,
    host: String,
}

impl Holder {
    fn parse(content: &str) -> Option<Holder> {
        let mut words = content.split_whitespace();
        let pid = words.next()?.parse().ok()?;
        let host = words.next()?.to_string();
        Some(Holder { pid, host })
    }
}

/// Takes the lock at `path` (a server path), or says who holds it.
pub(super) fn take(conn: Arc<Conn>, path: &str) -> Result<Held, PrepareError> {
    let url = conn.remote().url();
    let host = hostname();
    let pid = std::process::id();
    let started = chrono::Local::now().format(crate::output::TIME_FORMAT);
    let content = format!("{pid} {host} {started}\n");
    let unwritable = |e: io::Error| {
        PrepareError::Unwritable(format!(
            "cannot take the lock {}/.datasafe/lock: {e}; check that the remote user may \
             write there",
            url
        ))
    };
    for _ in 0..3 {
        match create(&conn, path, &content) {
            Ok(()) => return Ok(Held::start(conn, path, content)),
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(unwritable(e)),
            Err(_) => {}
        }
        let Some((held_by, age)) = read(&conn, path).map_err(unwritable)? else {
            continue; // Gone meanwhile: try again.
        };
        let holder = Holder::parse(&held_by);
        let stale = match &holder {
            // Not written by a remote-lock holder: stale, unless it is young (another
            // process's exclusive create leaves it empty for a moment).
            None => age > UNWRITTEN,
            Some(h) if h.host == host && h.pid == pid => true,
            Some(h) if h.host == host => !alive(h.pid),
            Some(_) => age > STALE,
        };
        if !stale {
            let who = holder.map_or_else(
                || "another datasafe process".to_string(),
                |h| format!("another datasafe process (pid {} on {})", h.pid, h.host),
            );
            return Err(PrepareError::Locked(format!(
                "{who} is writing the mirror in {}; stop it first, or wait until it is done \
                 (a lock not renewed for {} minutes is taken over)",
                esc(std::path::Path::new(&url)),
                STALE.as_secs() / 60
            )));
        }
        if holder.is_none() {
            log::warn!(
                "taking over the lock of {url}, which does not say who holds it (last \
                 touched {} s ago)",
                age.as_secs()
            );
        } else if holder
            .as_ref()
            .is_some_and(|h| h.host != host || h.pid != pid)
        {
            log::warn!(
                "taking over the stale lock of {url} (held by {}, last renewed {} s ago)",
                held_by.trim(),
                age.as_secs()
            );
        }
        let _ = conn.remove_file(path);
    }
    Err(PrepareError::Locked(format!(
        "the lock of {url} changed hands while it was being taken; run again"
    )))
}

/// Creates the lock file exclusively with `content`.
fn create(conn: &Conn, path: &str, content: &str) -> io::Result<()> {
    let (p, c) = (path.to_string(), content.to_string());
    let made = conn.run(false, move |s| {
        let (p, c) = (p.clone(), c.clone());
        async move {
            let mut file = s
                .sftp
                .options()
                .write(true)
                .create_new(true)
                .open(p)
                .await?;
            file.write_all(c.as_bytes()).await?;
            file.close().await
        }
    });
    match made {
        // SFTP version 3 says only "failure" for an existing name.
        Err(e) if e.kind() == io::ErrorKind::Other => match read(conn, path)? {
            Some(_) => Err(io::ErrorKind::AlreadyExists.into()),
            None => Err(e),
        },
        other => other,
    }
}

/// The lock's content and how long ago it was last renewed; `None` if there is none.
fn read(conn: &Conn, path: &str) -> io::Result<Option<(String, Duration)>> {
    let p = path.to_string();
    let found = conn.run(true, move |s| {
        let p = p.clone();
        async move {
            let meta = s.sftp.fs().symlink_metadata(&p).await?;
            let data = s.sftp.fs().read(&p).await?;
            Ok((meta, data))
        }
    });
    match found {
        Ok((meta, data)) => {
            let age = meta
                .modified()
                .and_then(|t| SystemTime::now().duration_since(t.as_system_time()).ok())
                .unwrap_or_default();
            Ok(Some((String::from_utf8_lossy(&data).into_owned(), age)))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

impl Held {
    fn start(conn: Arc<Conn>, path: &str, content: String) -> Held {
        let stop = Arc::new(AtomicBool::new(false));
        let renewer = {
            let (conn, path, stop) = (conn.clone(), path.to_string(), stop.clone());
            std::thread::Builder::new()
                .name("sftp-lock".into())
                .spawn(move || {
                    loop {
                        std::thread::park_timeout(RENEW);
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        if conn.is_up() {
                            let _ = touch(&conn, &path);
                        }
                    }
                })
                .ok()
        };
        Held {
            conn,
            path: path.to_string(),
            content,
            stop,
            renewer,
        }
    }
}

/// Sets the lock's mtime to now.
fn touch(conn: &Conn, path: &str) -> io::Result<()> {
    use openssh_sftp_client::UnixTimeStamp;
    use openssh_sftp_client::metadata::MetaDataBuilder;
    let now = UnixTimeStamp::new(SystemTime::now()).map_err(|e| io::Error::other(e.to_string()))?;
    let p = path.to_string();
    conn.run(false, move |s| {
        let p = p.clone();
        async move {
            let mut builder = MetaDataBuilder::new();
            builder.time(now, now);
            s.sftp.fs().set_metadata(p, builder.create()).await
        }
    })
}

impl Drop for Held {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(renewer) = self.renewer.take() {
            renewer.thread().unpark();
            let _ = renewer.join();
        }
        // Removed only if it is still ours (a lock taken over as stale is not).
        if self.conn.is_up()
            && let Ok(Some((content, _))) = read(&self.conn, &self.path)
            && content == self.content
        {
            let _ = self.conn.remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holders_are_read_from_the_lock() {
        assert_eq!(
            Holder::parse("42 nas 2026-12-06 10:00:00\n"),
            Some(Holder {
                pid: 42,
                host: "nas".into()
            })
        );
        assert_eq!(Holder::parse("42"), None);
        assert_eq!(Holder::parse(""), None);
    }
}
