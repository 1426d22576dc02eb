//! SHA-256 content digests: the type the index stores and the log prints, and the one
//! streaming function that hashes a reader. Hashing inside a copy happens in `exec`,
//! which feeds the same hasher as it writes. Also [`Stoppable`], the one reader that
//! gives up on Ctrl-C, which every long read of the read side goes through.

use sha2::{Digest as _, Sha256};
use std::fmt;
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};

/// Size of the buffer every streaming read in datasafe uses.
pub const CHUNK: usize = 256 * 1024;

/// A SHA-256 digest of a file's (uncompressed) content.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// Finishes a hasher into a digest.
    pub fn from_hasher(h: Sha256) -> Digest {
        Digest(h.finalize().into())
    }

    /// Reads a digest back from the index; `None` if the bytes are not 32 long.
    pub fn from_slice(bytes: &[u8]) -> Option<Digest> {
        bytes.try_into().ok().map(Digest)
    }

    /// Reads a digest from 64 lowercase hex digits (as `Display` writes it).
    pub fn from_hex(text: &str) -> Option<Digest> {
        if text.len() != 64 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Digest(out))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

/// Hashes everything `reader` yields, in [`CHUNK`]-sized reads (memory stays flat).
pub fn hash_reader(reader: impl Read) -> io::Result<Digest> {
    /// Never set: this hash runs to the end.
    static NEVER: AtomicBool = AtomicBool::new(false);
    let mut buf = vec![0u8; CHUNK];
    hash_reader_until(reader, &mut buf, &NEVER).map(|(digest, _)| digest)
}

/// Hashes everything `reader` yields through `buf`, returning the digest and the number
/// of bytes read; gives up with [`io::ErrorKind::Interrupted`] as soon as `stop` is set,
/// so Ctrl-C does not wait for a large file to finish.
pub fn hash_reader_until(
    reader: impl Read,
    buf: &mut [u8],
    stop: &AtomicBool,
) -> io::Result<(Digest, u64)> {
    let mut reader = Stoppable {
        inner: reader,
        stop,
    };
    let mut hasher = Sha256::new();
    let mut total = 0u64;
    loop {
        let n = match reader.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if is_stopped(&e) => {
                return Err(io::Error::new(io::ErrorKind::Interrupted, "stopped"));
            }
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((Digest::from_hasher(hasher), total))
}

/// A reader that fails once `stop` (Ctrl-C) is set, before each read, so a long file
/// stops promptly; [`is_stopped`] tells its error from the reader's own.
pub struct Stoppable<'a, R> {
    /// The reader.
    pub inner: R,
    /// Ctrl-C.
    pub stop: &'a AtomicBool,
}

/// The error a [`Stoppable`] gives once stopped. Not [`io::ErrorKind::Interrupted`]:
/// `io::copy` and every read loop retry that.
#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
struct Stopped;

/// True if `e` is a [`Stoppable`]'s own "stopped" error.
pub fn is_stopped(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<Stopped>())
}

impl<R: Read> Read for Stoppable<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.stop.load(Ordering::Relaxed) {
            return Err(io::Error::other(Stopped));
        }
        self.inner.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector() {
        let d = hash_reader(&b"abc"[..]).unwrap();
        assert_eq!(
            d.to_string(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(Digest::from_slice(&d.0), Some(d));
        assert_eq!(Digest::from_slice(&[1, 2]), None);
        let mut buf = [0u8; 2];
        let (same, n) = hash_reader_until(&b"abc"[..], &mut buf, &AtomicBool::new(false)).unwrap();
        assert_eq!((same, n), (d, 3));
        let stopped = hash_reader_until(&b"abc"[..], &mut buf, &AtomicBool::new(true));
        assert_eq!(stopped.unwrap_err().kind(), io::ErrorKind::Interrupted);
        let stop = AtomicBool::new(true);
        let mut reader = Stoppable {
            inner: &b"abc"[..],
            stop: &stop,
        };
        let e = reader.read(&mut buf).unwrap_err();
        assert!(
            is_stopped(&e) && e.kind() != io::ErrorKind::Interrupted,
            "{e:?}"
        );
        assert_eq!(e.to_string(), "interrupted");
        assert!(!is_stopped(&io::Error::other("interrupted")));
    }
}
