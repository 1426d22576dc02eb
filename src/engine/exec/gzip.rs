//! The gzip stream of a `--compress` copy: one gzip member (RFC 1952, the header
//! flate2's `GzEncoder` writes, so the bytes are the same as before) deflated with
//! zlib-rs into a buffer that goes to the temp file in few, large writes. It does not
//! read the source or hash it (`copy` does), and it decides nothing about names.
//!
//! Two things make it cheaper than a `GzEncoder` per file, and both matter on a tree of
//! small files, where the per-file costs are as large as the deflating itself:
//! - The window is sized to the file (never more than the 32 KiB gzip allows): deflate
//!   cannot look further back than the file is long, and zlib-rs allocates and clears
//!   its window and hash chains at that size, for every file. The stream is the same.
//! - The compressed bytes are buffered and written once per [`FLUSH_AT`], so a small
//!   file is one `write` (a `GzEncoder` over the temp file made three).

use flate2::{Compress, Compression, Crc, FlushCompress, Status};
use std::io::{self, Write};

/// Compressed bytes are written out once this many are waiting.
const FLUSH_AT: usize = 256 * 1024;

/// Room kept free in the buffer for one deflate call to make progress.
const HEADROOM: usize = 1024;

/// What deflate needs beyond the data in its window (zlib's `MIN_LOOKAHEAD`): a
/// window this much larger than the file sees the whole file.
const LOOKAHEAD: u64 = 258 + 3 + 1;

/// A gzip member being written to `out`.
pub(super) struct GzipWriter<W: Write> {
    out: W,
    deflate: Compress,
    crc: Crc,
    /// Compressed bytes not yet written (the header first).
    buf: Vec<u8>,
}

impl<W: Write> GzipWriter<W> {
    /// Starts a member at `level` for at most `size` bytes of input (more may come;
    /// then matches reach back no further than the window chosen for `size`).
    pub(super) fn new(out: W, level: Compression, size: u64) -> GzipWriter<W> {
        let bound = usize::try_from(size.saturating_add(size / 8))
            .unwrap_or(FLUSH_AT)
            .min(FLUSH_AT);
        let mut buf = Vec::with_capacity(bound + HEADROOM + HEADER.len() + 8);
        buf.extend_from_slice(&header(level));
        GzipWriter {
            out,
            deflate: Compress::new_with_window_bits(level, false, window_bits(size)),
            crc: Crc::new(),
            buf,
        }
    }

    /// Compresses all of `data`.
    pub(super) fn write_all(&mut self, mut data: &[u8]) -> io::Result<()> {
        self.crc.update(data);
        while !data.is_empty() {
            self.make_room()?;
            let before = self.deflate.total_in();
            self.deflate
                .compress_vec(data, &mut self.buf, FlushCompress::None)
                .map_err(io::Error::other)?;
            // At most `data.len()`, so it fits a usize.
            let used = (self.deflate.total_in() - before) as usize;
            data = &data[used..];
        }
        Ok(())
    }

    /// Ends the member (the last block, the CRC-32 and the length) and writes out what
    /// is left. Nothing is flushed or synced: the temp file's owner decides that.
    pub(super) fn finish(mut self) -> io::Result<W> {
        loop {
            self.make_room()?;
            let status = self
                .deflate
                .compress_vec(&[], &mut self.buf, FlushCompress::Finish)
                .map_err(io::Error::other)?;
            if status == Status::StreamEnd {
                break;
            }
        }
        self.buf.extend_from_slice(&self.crc.sum().to_le_bytes());
        // ISIZE is the length modulo 2^32 (RFC 1952), as `amount` is.
        self.buf.extend_from_slice(&self.crc.amount().to_le_bytes());
        self.out.write_all(&self.buf)?;
        Ok(self.out)
    }

    /// Writes the buffer out once it holds [`FLUSH_AT`] bytes, and makes sure deflate
    /// has [`HEADROOM`] to write into.
    fn make_room(&mut self) -> io::Result<()> {
        if self.buf.len() >= FLUSH_AT {
            self.out.write_all(&self.buf)?;
            self.buf.clear();
        }
        if self.buf.capacity() - self.buf.len() < HEADROOM {
            self.buf.reserve(HEADROOM.max(self.buf.len()));
        }
        Ok(())
    }
}

/// The length of the header gzip members get.
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];

/// The header flate2's `GzEncoder` writes: no name, mtime 0 (the file keeps its own),
/// XFL by level as gzip(1) sets it, OS "unknown" (reproducible across systems).
fn header(level: Compression) -> [u8; 10] {
    let mut header = HEADER;
    header[8] = if level.level() >= Compression::best().level() {
        2
    } else if level.level() <= Compression::fast().level() {
        4
    } else {
        0
    };
    header
}

/// The smallest window (9 to 15 bits) that sees all of a `size`-byte input.
fn window_bits(size: u64) -> u8 {
    match size.saturating_add(LOOKAHEAD).checked_next_power_of_two() {
        // `trailing_zeros` of a u64 is at most 64: it fits a u8.
        Some(needed) => (needed.trailing_zeros() as u8).clamp(9, 15),
        None => 15,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::MultiGzDecoder;
    use flate2::write::GzEncoder;
    use std::io::Read;

    /// Text-like bytes with a random tail, as a tree of documents has.
    fn sample(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let words = [&b"alpha "[..], b"beta ", b"gamma ", b"delta\n", b"epsilon "];
        let mut out = Vec::with_capacity(len);
        while out.len() < len * 3 / 4 {
            out.extend_from_slice(words[(next() % 5) as usize]);
        }
        out.truncate(len * 3 / 4);
        while out.len() < len {
            out.push(next() as u8);
        }
        out
    }

    fn ours(data: &[u8], level: u32, size: u64, pieces: usize) -> Vec<u8> {
        let mut g = GzipWriter::new(Vec::new(), Compression::new(level), size);
        for piece in data.chunks(pieces.max(1)) {
            g.write_all(piece).unwrap();
        }
        g.finish().unwrap()
    }

    fn gunzip(gz: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        MultiGzDecoder::new(gz).read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn a_file_given_whole_is_the_stream_gzencoder_writes_at_every_size_and_level() {
        // Sizes around the window steps, and past the largest window and the buffer.
        // (How deflate's input is cut can change its choices, so only a whole file
        // compares byte for byte; pieces must round-trip.)
        let sizes = [
            0, 1, 249, 250, 251, 511, 4096, 32_000, 32_506, 32_507, 70_000,
        ];
        for (i, &len) in sizes.iter().chain(&[600_000]).enumerate() {
            let data = sample(len, i as u64 + 7);
            for level in [1, 6, 9] {
                let mut theirs = GzEncoder::new(Vec::new(), Compression::new(level));
                theirs.write_all(&data).unwrap();
                let theirs = theirs.finish().unwrap();
                if len <= 70_000 {
                    let got = ours(&data, level, len as u64, len);
                    assert!(got == theirs, "len {len}, level {level}");
                }
                for pieces in [len, 1000, 65_536] {
                    let got = ours(&data, level, len as u64, pieces);
                    assert_eq!(
                        gunzip(&got),
                        data,
                        "len {len}, level {level}, pieces {pieces}"
                    );
                    assert_eq!(got[..10], theirs[..10], "the same header");
                }
            }
        }
    }

    #[test]
    fn more_input_than_announced_still_round_trips() {
        // A file that grew after its size was taken: the window is smaller than the
        // input, the stream is still valid and complete.
        let data = sample(300_000, 3);
        let gz = ours(&data, 6, 100, 4096);
        assert_eq!(gunzip(&gz), data);
        assert_eq!(gunzip(&ours(&[], 6, 0, 1)), b"");
    }

    #[test]
    fn windows_grow_with_the_input_up_to_gzip_s_limit() {
        assert_eq!(window_bits(0), 9);
        assert_eq!(window_bits(250), 9);
        assert_eq!(window_bits(251), 10);
        assert_eq!(window_bits(8192), 14);
        assert_eq!(window_bits(32_506), 15);
        assert_eq!(window_bits(u64::MAX), 15);
    }

    #[test]
    fn big_outputs_are_written_in_large_pieces() {
        /// Counts the writes it gets.
        struct Counting(Vec<usize>);
        impl Write for Counting {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.0.push(buf.len());
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let small = sample(8192, 1);
        let mut g = GzipWriter::new(Counting(Vec::new()), Compression::new(6), 8192);
        g.write_all(&small).unwrap();
        assert_eq!(g.finish().unwrap().0.len(), 1, "a small file is one write");

        let big: Vec<u8> = (0..4_000_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let mut g = GzipWriter::new(Counting(Vec::new()), Compression::new(6), big.len() as u64);
        for piece in big.chunks(256 * 1024) {
            g.write_all(piece).unwrap();
        }
        let writes = g.finish().unwrap().0;
        assert!(
            writes[..writes.len() - 1].iter().all(|&n| n >= FLUSH_AT),
            "{writes:?}"
        );
    }
}
