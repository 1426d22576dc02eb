//! Temp files opened ahead of need ([`Ahead`]): the exclusive create of a temp file is a
//! round trip of its own, and a worker that waited for it before every file spent a
//! third of a small file's time waiting. While files come in quick succession (a pass,
//! a burst of changes), creates go out in the background, a few files ahead of the
//! workers, so a worker asking for a temp file usually finds one open; a lone change
//! opens just its own. Unused ones are closed and removed when the watcher goes idle
//! and when the store closes (or, after a crash, swept by the next run's prepare like
//! any temp file).

use super::conn::{Conn, REQUEST_DEADLINE, block_on, lock, runtime};
use openssh_sftp_client::Error as SftpError;
use openssh_sftp_client::file::File;
use std::collections::VecDeque;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// Temp files kept open ahead: about the number of workers writing to a remote store
/// (`config::dest::jobs_for`), so none of them waits in the usual case.
pub(super) const AHEAD: usize = 16;

/// An exclusive create under way.
pub(super) struct Opening {
    /// The temp file's name, relative to DST.
    pub name: PathBuf,
    /// The connection it was sent on.
    pub number: u64,
    task: JoinHandle<Option<Result<File, SftpError>>>,
}

impl Opening {
    /// Waits for the create: the open file, `Err` as the server (or a lost connection)
    /// said, through [`Conn::check`].
    pub fn wait(self, conn: &Conn) -> io::Result<File> {
        let done = block_on(self.task)?
            .map_err(|e| io::Error::other(format!("an SFTP request was cut: {e}")))?;
        match done {
            Some(result) => conn.check(self.number, result),
            None => {
                conn.lost(self.number, "the server did not answer in time");
                Err(conn.lost_error(""))
            }
        }
    }
}

/// Two temp files asked for within this long of each other are a run of them: the
/// creates go ahead.
const QUICK: Duration = Duration::from_millis(100);

/// How long without a temp file asked for makes the creates under way pointless.
const IDLE: Duration = Duration::from_secs(2);

/// The creates under way, oldest first.
pub(super) struct Ahead {
    conn: Arc<Conn>,
    queue: Mutex<Queue>,
}

struct Queue {
    openings: VecDeque<Opening>,
    /// When a temp file was last asked for.
    last: Option<Instant>,
}

impl Ahead {
    pub fn new(conn: Arc<Conn>) -> Ahead {
        Ahead {
            conn,
            queue: Mutex::new(Queue {
                openings: VecDeque::new(),
                last: None,
            }),
        }
    }

    /// The oldest create under way (started now if none is), after starting new ones
    /// so that [`AHEAD`] stay under way while temp files are asked for in quick
    /// succession; `name` gives the next temp name.
    pub fn next(&self, name: &dyn Fn() -> PathBuf) -> io::Result<Opening> {
        let mut queue = lock(&self.queue);
        let now = Instant::now();
        let quick = queue
            .last
            .is_some_and(|last| now.duration_since(last) < QUICK);
        queue.last = Some(now);
        let want = if quick { AHEAD + 1 } else { 1 };
        while queue.openings.len() < want {
            let session = self.conn.session()?;
            let name = name();
            let remote = self.conn.remote().remote_path(&name);
            let number = session.number;
            let task = runtime()?.spawn(async move {
                let mut options = session.sftp.options();
                options.read(true).write(true).create_new(true);
                tokio::time::timeout(REQUEST_DEADLINE, options.open(remote))
                    .await
                    .ok()
            });
            queue.openings.push_back(Opening { name, number, task });
        }
        queue
            .openings
            .pop_front()
            .ok_or_else(|| io::Error::other("no temp file under way"))
    }

    /// [`Ahead::clear`] once no temp file was asked for in a while (a burst of changes
    /// is over; between its batches the creates stay).
    pub fn clear_if_idle(&self) {
        let idle = lock(&self.queue)
            .last
            .is_none_or(|last| last.elapsed() >= IDLE);
        if idle {
            self.clear();
        }
    }

    /// Closes and removes the temp files opened ahead and not used (the connection
    /// must be up; if it is not, the next run's prepare sweeps them).
    pub fn clear(&self) {
        let openings = std::mem::take(&mut lock(&self.queue).openings);
        for opening in openings {
            let name = opening.name.clone();
            if !self.conn.is_up() {
                opening.task.abort();
                continue;
            }
            if let Ok(file) = opening.wait(&self.conn) {
                drop(file);
            }
            let _ = self
                .conn
                .remove_file(&self.conn.remote().remote_path(&name));
        }
    }
}

impl Drop for Ahead {
    fn drop(&mut self) {
        self.clear();
    }
}
