//! [`Proxy`]: a TCP proxy on 127.0.0.1 in front of an sshd, for network faults the
//! server cannot make itself: every connection dropped at once, or a network gone
//! silent. Plain std threads (an accept loop, two pumps per connection), no new crate.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

/// A TCP proxy on 127.0.0.1 in front of a server's port, for network faults: it can
/// drop every connection at once ([`Proxy::cut`]) or go silent ([`Proxy::blackhole`]).
/// Each connection is two threads pumping bytes; everything ends on drop.
pub struct Proxy {
    port: u16,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

struct Shared {
    target: u16,
    state: Mutex<Links>,
    /// Wakes pumps held by a blackhole (it was lifted, or their link was cut).
    wake: Condvar,
    accepted: AtomicUsize,
}

struct Links {
    blackhole: bool,
    stopping: bool,
    /// Bumped by every cut: a link made before it is over.
    epoch: u64,
    next_id: u64,
    /// Live links by id, with both sockets (to shut them down).
    live: BTreeMap<u64, Link>,
}

struct Link {
    client: TcpStream,
    server: TcpStream,
    /// Pumps still running (2, then 1, then the link is removed).
    pumps: u8,
}

impl Proxy {
    /// A proxy listening on a port of its own, forwarding each connection to
    /// `127.0.0.1:target_port` (a connection it cannot forward is closed at once).
    pub fn start(target_port: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            target: target_port,
            state: Mutex::new(Links {
                blackhole: false,
                stopping: false,
                epoch: 0,
                next_id: 0,
                live: BTreeMap::new(),
            }),
            wake: Condvar::new(),
            accepted: AtomicUsize::new(0),
        });
        let accept = {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || accept_loop(&listener, &shared))
        };
        Proxy {
            port,
            shared,
            accept: Some(accept),
        }
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Closes every live connection at once, both ways (each side sees the connection
    /// end). New connections are forwarded as before.
    pub fn cut(&self) {
        let mut links = self.shared.links();
        links.epoch += 1;
        for link in links.live.values() {
            let _ = link.client.shutdown(Shutdown::Both);
            let _ = link.server.shutdown(Shutdown::Both);
        }
        self.shared.wake.notify_all();
    }

    /// `true`: connections stay open but no byte passes either way (a network gone
    /// silent: only keep-alives and timeouts notice); new connections are accepted and
    /// stay silent too. `false`: what was held back flows again, nothing lost.
    pub fn blackhole(&self, on: bool) {
        self.shared.links().blackhole = on;
        self.shared.wake.notify_all();
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        self.shared.links().live.len()
    }

    /// Connections accepted since the start.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.links().stopping = true;
        self.cut();
        // Wake the accept loop with a connection of our own; it sees `stopping`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

impl Shared {
    fn links(&self) -> MutexGuard<'_, Links> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits while the proxy is a blackhole; false once the link `epoch` was cut.
    fn may_pass(&self, epoch: u64) -> bool {
        let mut links = self.links();
        loop {
            if links.epoch != epoch || links.stopping {
                return false;
            }
            if !links.blackhole {
                return true;
            }
            links = self.wake.wait(links).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn pump_done(&self, id: u64) {
        let mut links = self.links();
        if let Some(link) = links.live.get_mut(&id) {
            link.pumps -= 1;
            if link.pumps == 0 {
                links.live.remove(&id);
            }
        }
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    for client in listener.incoming() {
        if shared.links().stopping {
            return;
        }
        let Ok(client) = client else { continue };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        // Refused (the server is down): dropping the client closes it, as a dead
        // server behind a live address would look.
        let Ok(server) = TcpStream::connect(("127.0.0.1", shared.target)) else {
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let (Ok(c2), Ok(s2), Ok(c3), Ok(s3)) = (
            client.try_clone(),
            server.try_clone(),
            client.try_clone(),
            server.try_clone(),
        ) else {
            continue;
        };
        let (id, epoch) = {
            let mut links = shared.links();
            let id = links.next_id;
            links.next_id += 1;
            let epoch = links.epoch;
            links.live.insert(
                id,
                Link {
                    client,
                    server,
                    pumps: 2,
                },
            );
            (id, epoch)
        };
        for (from, to) in [(c2, s2), (s3, c3)] {
            let shared = Arc::clone(shared);
            std::thread::spawn(move || {
                pump(from, to, &shared, epoch);
                shared.pump_done(id);
            });
        }
    }
}

/// Copies `from` to `to` until either ends or the link is cut; a clean end is passed
/// on as a half-close, an error ends both ways.
fn pump(mut from: TcpStream, mut to: TcpStream, shared: &Shared, epoch: u64) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if !shared.may_pass(epoch) {
            break;
        }
        let n = match from.read(&mut buf) {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        // Bytes read while the proxy turned silent wait here until it speaks again.
        if !shared.may_pass(epoch) || to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
