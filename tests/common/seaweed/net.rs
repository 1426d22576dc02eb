//! Ports for `weed` servers and a plain HTTP probe of them.
//!
//! Every `weed` component listens on an HTTP port `P` and a gRPC port, which defaults
//! to `P + 10000`; some of its clients assume that offset even when the gRPC port is
//! given (in 4.48 the `mini` maintenance worker dials the admin server at admin port +
//! 10000 whatever `-admin.port.grpc` says). So [`Ports`] hands out HTTP ports `P` with
//! `P + 10000` free too, and the servers get `-port.grpc=P+10000` explicitly. Both lie
//! below the kernel's ephemeral range, so no outgoing connection of another test is
//! handed one while a server is down between a kill and a restart. Ports handed out
//! are kept in a process-wide set until dropped, so two servers of one test process
//! never pick the same; a clash with another process is caught when `weed` starts
//! ("is not available", "address already in use") and the start is retried on new ones.

use crate::common::faults::Rng;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// `weed`'s default distance from a component's HTTP port to its gRPC port.
pub const GRPC_OFFSET: u16 = 10_000;

static RESERVED: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// HTTP ports (each with its gRPC port at +10000) held for one server's life.
#[derive(Debug)]
pub struct Ports(Vec<u16>);

impl Ports {
    /// `n` HTTP ports, each free now with its gRPC port, none held by another server
    /// of this process.
    pub fn reserve(n: usize) -> Ports {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
            .unwrap_or(32768);
        let (from, mut to) = (
            10_000u32,
            low.min(65_536).saturating_sub(u32::from(GRPC_OFFSET)),
        );
        if to <= from + 1_000 {
            // No room below the ephemeral range: any pair that is free now.
            to = 65_536 - u32::from(GRPC_OFFSET);
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let mut rng = Rng(nanos
            ^ (u64::from(std::process::id()) << 32)
            ^ COUNTER.fetch_add(1, Ordering::Relaxed).wrapping_mul(0x9e37));
        let mut reserved = RESERVED.lock().unwrap_or_else(|e| e.into_inner());
        let mut ports = Vec::with_capacity(n);
        for _ in 0..10_000 {
            if ports.len() == n {
                break;
            }
            let port = rng.range(u64::from(from), u64::from(to)) as u16;
            let grpc = port + GRPC_OFFSET;
            // Held already, as anyone's HTTP or gRPC port.
            let taken = |p: u16| {
                reserved
                    .iter()
                    .chain(&ports)
                    .any(|&r| r == p || r + GRPC_OFFSET == p)
            };
            if taken(port) || taken(grpc) {
                continue;
            }
            if is_free(port) && is_free(grpc) {
                ports.push(port);
            }
        }
        assert_eq!(
            ports.len(),
            n,
            "no {n} free port pairs (P, P+{GRPC_OFFSET}) on 127.0.0.1 in {from}..{to}"
        );
        reserved.extend(ports.iter().copied());
        Ports(ports)
    }

    /// The `i`th HTTP port.
    pub fn http(&self, i: usize) -> u16 {
        self.0[i]
    }

    /// The `i`th gRPC port (HTTP + 10000).
    pub fn grpc(&self, i: usize) -> u16 {
        self.0[i] + GRPC_OFFSET
    }

    /// Every port, HTTP and gRPC.
    pub fn all(&self) -> Vec<u16> {
        self.0.iter().flat_map(|&p| [p, p + GRPC_OFFSET]).collect()
    }
}

impl Drop for Ports {
    fn drop(&mut self) {
        let mut reserved = RESERVED.lock().unwrap_or_else(|e| e.into_inner());
        for p in &self.0 {
            reserved.remove(p);
        }
    }
}

fn is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// True if something accepts TCP connections on 127.0.0.1:`port`.
pub fn accepts(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2)).is_ok()
}

/// `GET path` on 127.0.0.1:`port` (HTTP/1.0, no body sent): the status code and body,
/// or `None` if nothing answered within `timeout`.
pub fn http_get(port: u16, path: &str, timeout: Duration) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_owned());
    Some((status, body))
}
