//! Sparse files (issue 16): where a file's data lies and where its holes are, and
//! writing a file so that its holes stay holes. Used by the engine's copy (read only
//! the data of a sparse source, leave holes in DST), `restore` (holes in TARGET) and
//! `archive` (a GNU sparse tar entry).
//!
//! Finding holes is `lseek(SEEK_DATA/SEEK_HOLE)` (behind `platform::seek_data`); where
//! the system cannot tell, a file is all data, and everything still works, only
//! without holes. Content digests never see holes: a hole is hashed as the zeros it
//! reads as ([`zeros`]), so a digest is the same however the file is stored.

use crate::platform;
use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::ops::Range;

/// A block of zeros to hash, compress or write where a hole's bytes are needed (in
/// the zero-initialised data segment: it costs no binary size and no start-up).
pub static ZEROS: [u8; ZERO_LEN] = [0; ZERO_LEN];

/// The size of [`ZEROS`].
const ZERO_LEN: usize = 256 * 1024;

/// The block a written zero run must cover whole to become a hole ([`HoleWriter`]):
/// the page size and the usual filesystem block. `cp --sparse=always` does the same.
pub const BLOCK: u64 = 4096;

/// `len` zero bytes as static slices of at most [`ZEROS`]' size, in order.
pub fn zeros(len: u64) -> impl Iterator<Item = &'static [u8]> {
    let mut left = len;
    std::iter::from_fn(move || {
        if left == 0 {
            return None;
        }
        let n = left.min(ZERO_LEN as u64) as usize;
        left -= n as u64;
        Some(&ZEROS[..n])
    })
}

/// True if every byte of `buf` is zero (a `memcmp` with [`ZEROS`], chunk by chunk).
pub fn is_zero(buf: &[u8]) -> bool {
    buf.chunks(ZERO_LEN).all(|c| c == &ZEROS[..c.len()])
}

/// The stretches of data in the first `size` bytes of `file`, in order, not
/// overlapping; what lies between them (and after the last, up to `size`) is holes.
/// A file the system cannot tell about is one stretch, `0..size`. Moves the file's
/// offset: seek before reading.
pub fn data_segments(file: &File, size: u64) -> io::Result<Vec<Range<u64>>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < size {
        let start = match platform::seek_data(file, at) {
            Ok(Some(start)) => start,
            Ok(None) => break,
            // No SEEK_DATA here (another system, a filesystem that refuses it): the
            // rest is data.
            Err(e) if cannot_tell(&e) => {
                out.push(at..size);
                break;
            }
            Err(e) => return Err(e),
        };
        if start >= size {
            break;
        }
        let end = match platform::seek_hole(file, start) {
            Ok(end) => end.min(size),
            Err(e) if cannot_tell(&e) => size,
            Err(e) => return Err(e),
        };
        // A hole reported where data was found: the file is changing under us. The
        // rest is data; the copy's own re-check notices the change.
        let end = if end <= start { size } else { end };
        out.push(start..end);
        at = end;
    }
    Ok(out)
}

/// A file of `size` bytes that is all data, as segments.
pub fn all_data(size: u64) -> Vec<Range<u64>> {
    std::iter::once(0..size).filter(|r| !r.is_empty()).collect()
}

/// True if `segments` of a file of `size` bytes leave any hole.
pub fn has_holes(segments: &[Range<u64>], size: u64) -> bool {
    segments.iter().map(|s| s.end - s.start).sum::<u64>() < size
}

fn cannot_tell(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::Unsupported || err.kind() == io::ErrorKind::InvalidInput
}

/// Writes a new file from its start, leaving holes: every run of zeros that covers
/// whole [`BLOCK`]s (aligned in the file) is skipped, not written, and [`skip`] leaves
/// a known hole. [`finish`] sets the length, so a file that ends in a hole keeps it.
/// For a file being made, written only through this (restore's TARGET files).
///
/// [`skip`]: HoleWriter::skip
/// [`finish`]: HoleWriter::finish
pub struct HoleWriter<'f> {
    file: &'f File,
    /// Where the next byte goes.
    pos: u64,
    /// Where the file's offset is (a skipped run moves `pos` only).
    offset: u64,
    /// The bytes of the block `pos` is in, short of its end, not written yet: the
    /// rest of it may be zeros too (a decoder's reads end anywhere).
    part: Vec<u8>,
}

impl<'f> HoleWriter<'f> {
    /// A writer at the start of `file`, which is empty.
    pub fn new(file: &'f File) -> HoleWriter<'f> {
        HoleWriter {
            file,
            pos: 0,
            offset: 0,
            part: Vec::new(),
        }
    }

    /// Writes `buf` next, leaving its whole zero blocks as holes. Data comes out in
    /// one write per run of blocks that are not all zeros.
    pub fn write(&mut self, mut buf: &[u8]) -> io::Result<()> {
        if !self.part.is_empty() {
            let n = (self.to_edge() as usize).min(buf.len());
            self.part.extend_from_slice(&buf[..n]);
            self.pos += n as u64;
            buf = &buf[n..];
            if self.pos.is_multiple_of(BLOCK) {
                let whole = self.part.len() as u64 == BLOCK;
                if !(whole && is_zero(&self.part)) {
                    let part = std::mem::take(&mut self.part);
                    self.write_at(self.pos - part.len() as u64, &part)?;
                    self.part = part;
                }
                self.part.clear();
            }
        }
        // The run of `buf` to write next, as indices into it.
        let mut run: Option<Range<usize>> = None;
        let mut i = 0;
        while i < buf.len() {
            let pos = self.pos + i as u64;
            let to_edge = (BLOCK - pos % BLOCK) as usize;
            let n = to_edge.min(buf.len() - i);
            if n < to_edge {
                // The last bytes, short of their block's end: kept for the next call.
                self.part.extend_from_slice(&buf[i..]);
            } else if n as u64 == BLOCK && is_zero(&buf[i..i + n]) {
                if let Some(r) = run.take() {
                    self.write_at(self.pos + r.start as u64, &buf[r])?;
                }
            } else {
                run = Some(run.map_or(i..i + n, |r| r.start..i + n));
            }
            i += n;
        }
        if let Some(r) = run {
            self.write_at(self.pos + r.start as u64, &buf[r])?;
        }
        self.pos += buf.len() as u64;
        Ok(())
    }

    /// Where the next byte goes: what was written and skipped so far.
    pub fn pos(&self) -> u64 {
        self.pos
    }

    /// Leaves the next `len` bytes a hole.
    pub fn skip(&mut self, len: u64) -> io::Result<()> {
        self.flush_part()?;
        self.pos += len;
        Ok(())
    }

    /// Sets the file's length to what was written and skipped; returns it.
    pub fn finish(mut self) -> io::Result<u64> {
        self.flush_part()?;
        self.file.set_len(self.pos)?;
        Ok(self.pos)
    }

    fn to_edge(&self) -> u64 {
        BLOCK - self.pos % BLOCK
    }

    /// Writes the bytes held of an unfinished block, unless they are zeros (which the
    /// file reads as anyway, once its length is set).
    fn flush_part(&mut self) -> io::Result<()> {
        let part = std::mem::take(&mut self.part);
        if !is_zero(&part) {
            self.write_at(self.pos - part.len() as u64, &part)?;
        }
        self.part = part;
        self.part.clear();
        Ok(())
    }

    fn write_at(&mut self, at: u64, bytes: &[u8]) -> io::Result<()> {
        let mut file = self.file;
        if self.offset != at {
            file.seek(SeekFrom::Start(at))?;
        }
        file.write_all(bytes)?;
        self.offset = at + bytes.len() as u64;
        Ok(())
    }
}

#[cfg(all(test, unix))]
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileExt, MetadataExt};

    /// A file of `size` bytes with `data` written at each offset, the rest left holes.
    fn sparse_file(dir: &std::path::Path, size: u64, data: &[(u64, &[u8])]) -> File {
        let path = dir.join(format!("f{}", data.len()));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        file.set_len(size).unwrap();
        for (at, bytes) in data {
            file.write_all_at(bytes, *at).unwrap();
        }
        file
    }

    /// True if the filesystem of the temp folder makes holes (tmpfs, ext4, xfs, btrfs
    /// do; some overlay setups do not): else the tests say so and only check the bytes.
    fn makes_holes(dir: &std::path::Path) -> bool {
        let file = sparse_file(dir, 1 << 20, &[]);
        let holes = file.metadata().unwrap().blocks() == 0;
        if !holes {
            eprintln!("skipped: {} cannot make holes", dir.display());
        }
        holes
    }

    const MIB: u64 = 1 << 20;

    #[test]
    fn data_segments_find_leading_trailing_and_no_holes() {
        let dir = tempfile::tempdir().unwrap();
        if !makes_holes(dir.path()) {
            return;
        }
        let block = vec![7u8; 64 * 1024];
        // Leading hole: data from 1 MiB to the end.
        let f = sparse_file(dir.path(), MIB + block.len() as u64, &[(MIB, &block)]);
        assert_eq!(
            data_segments(&f, MIB + block.len() as u64).unwrap(),
            vec![MIB..MIB + block.len() as u64]
        );
        // Trailing hole: data at the start only.
        let f = sparse_file(dir.path(), 4 * MIB, &[(0, &block)]);
        let segments = data_segments(&f, 4 * MIB).unwrap();
        assert_eq!(segments, vec![0..block.len() as u64]);
        assert!(has_holes(&segments, 4 * MIB));
        // Holes on both sides of two stretches.
        let f = sparse_file(dir.path(), 8 * MIB, &[(MIB, &block), (5 * MIB, &block)]);
        let len = block.len() as u64;
        assert_eq!(
            data_segments(&f, 8 * MIB).unwrap(),
            vec![MIB..MIB + len, 5 * MIB..5 * MIB + len]
        );
        // Asked for less than the file: cut at `size`.
        assert_eq!(data_segments(&f, MIB + 10).unwrap(), vec![MIB..MIB + 10]);
        // No holes.
        let dense = dir.path().join("dense");
        std::fs::write(&dense, vec![1u8; 3 * MIB as usize]).unwrap();
        let f = File::open(&dense).unwrap();
        let segments = data_segments(&f, 3 * MIB).unwrap();
        assert_eq!(segments, vec![0..3 * MIB]);
        assert!(!has_holes(&segments, 3 * MIB));
        // All hole, and empty.
        let f = sparse_file(dir.path(), 2 * MIB, &[]);
        assert_eq!(data_segments(&f, 2 * MIB).unwrap(), vec![]);
        assert_eq!(data_segments(&f, 0).unwrap(), vec![]);
    }

    #[test]
    fn a_hole_writer_leaves_whole_zero_blocks_as_holes() {
        let dir = tempfile::tempdir().unwrap();
        let holes = makes_holes(dir.path());
        let path = dir.path().join("out");
        let file = File::create(&path).unwrap();
        let mut expect = Vec::new();
        let mut out = HoleWriter::new(&file);
        // Unaligned data, then 1 MiB of zeros written (most of it whole blocks), a
        // skipped hole, data again, and a trailing skipped hole.
        let head = vec![5u8; 1000];
        out.write(&head).unwrap();
        expect.extend_from_slice(&head);
        // Written in pieces that end anywhere, as a decoder's reads do.
        let zeros = vec![0u8; MIB as usize];
        for piece in zeros.chunks(1000) {
            out.write(piece).unwrap();
        }
        expect.extend_from_slice(&zeros);
        out.skip(MIB).unwrap();
        expect.resize(expect.len() + MIB as usize, 0);
        let mut mixed = vec![0u8; 3 * BLOCK as usize];
        mixed[BLOCK as usize + 1] = 9;
        out.write(&mixed).unwrap();
        expect.extend_from_slice(&mixed);
        out.skip(2 * MIB).unwrap();
        expect.resize(expect.len() + 2 * MIB as usize, 0);
        assert_eq!(out.finish().unwrap(), expect.len() as u64);
        drop(file);
        assert!(std::fs::read(&path).unwrap() == expect);
        let blocks = std::fs::metadata(&path).unwrap().blocks() * 512;
        if holes {
            // Two blocks of data (the first, partly zeros; the middle of `mixed`).
            assert!(blocks <= 4 * BLOCK, "{blocks} bytes allocated");
        }
    }

    #[test]
    fn zeros_come_in_static_slices_of_the_length_asked() {
        let lens: Vec<usize> = zeros(ZERO_LEN as u64 * 2 + 5).map(<[u8]>::len).collect();
        assert_eq!(lens, vec![ZERO_LEN, ZERO_LEN, 5]);
        assert_eq!(zeros(0).count(), 0);
        assert!(is_zero(&[0; 600_000]));
        let mut one = vec![0u8; 600_000];
        one[599_999] = 1;
        assert!(!is_zero(&one));
        assert!(is_zero(&[]));
    }
}
