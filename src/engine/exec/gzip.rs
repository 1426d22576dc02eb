//! The gzip stream of a `--compress` copy: one gzip member (RFC 1952, with the header
//! flate2's `GzEncoder` writes: mtime 0, OS "unknown", XFL by level) written to the
//! temp file in few, large writes. It does not read the source or hash it (`copy`
//! does), and it decides nothing about names.
//!
//! Two deflaters, chosen by the size the file had when its copy began:
//! - Up to [`WHOLE`] bytes (nearly every file of a tree of documents), the file is
//!   gathered in memory and deflated in one call by libdeflate at the same level (on
//!   the 10k-file bench tree a `--compress` run takes about a quarter less CPU than with
//!   zlib-rs, and the output is ~2 % smaller; BENCHMARKS.md). Its compressor (~650 KiB
//!   of tables at level 6) is made once per worker thread and reused
//!   ([`WholeDeflater`]). The member is one `write`.
//! - Above that, zlib-rs streams it (memory stays bounded for a file of any size), with
//!   the window sized to the file (never more than the 32 KiB gzip allows: zlib-rs
//!   allocates and clears its window and hash chains at that size), and the compressed
//!   bytes are written once per [`FLUSH_AT`].
//!
//! The two make different (equally valid) deflate streams for the same input, and a
//! copy made before libdeflate differs in its bytes from one made now. Nothing depends
//! on that: what the index keeps is the SHA-256 of the *source* bytes (checked by
//! decompressing), and a store's own stamp of the stored bytes (an S3 ETag, the size on
//! disk) is taken from what was written. Every reader (restore, verify, archive,
//! `versions`, gunzip) decodes any valid member.

use flate2::{Compress, Compression, FlushCompress, Status};
use libdeflater::{CompressionLvl, Compressor, Crc};
use std::cell::RefCell;
use std::io::{self, Write};

/// Files up to this size are deflated whole, by libdeflate. A worker holds at most
/// this much input and its compressed form at once.
pub(super) const WHOLE: usize = 1024 * 1024;

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
    level: Compression,
    /// The size announced, for the window if the stream has to be started.
    size: u64,
    /// Inputs up to this size are deflated whole ([`WHOLE`] but in tests). Only read
    /// while gathering.
    whole: usize,
    deflater: Deflater,
    /// CRC-32 of the input so far (libdeflate's: it folds with PCLMULQDQ where the CPU
    /// has it, where zlib-rs's is a table walk unless built for such a CPU).
    crc: Crc,
    /// The input's length modulo 2^32, as gzip's trailer keeps it (RFC 1952: ISIZE).
    length: u32,
    /// Compressed bytes not yet written (the header first).
    buf: Vec<u8>,
}

/// How the member's deflate stream is being made.
enum Deflater {
    /// The input so far, deflated whole at the end (never more than `whole`).
    Whole(Vec<u8>),
    /// Streamed by zlib-rs into the buffer as the input comes.
    Stream(Box<Compress>),
}

impl<W: Write> GzipWriter<W> {
    /// Starts a member at `level` for at most `size` bytes of input (more may come: a
    /// file that grows past [`WHOLE`] is streamed after all, and then matches reach
    /// back no further than the window chosen for `size`).
    pub(super) fn new(out: W, level: Compression, size: u64) -> GzipWriter<W> {
        GzipWriter::with_whole(out, level, size, Some(WHOLE))
    }

    /// As [`GzipWriter::new`], deflating whole up to `whole` bytes (`None`: streaming
    /// every input, as tests do to check the stream on small ones).
    fn with_whole(out: W, level: Compression, size: u64, whole: Option<usize>) -> GzipWriter<W> {
        let mut writer = GzipWriter {
            out,
            level,
            size,
            whole: whole.unwrap_or(0),
            deflater: Deflater::Whole(Vec::new()),
            crc: Crc::new(),
            length: 0,
            buf: Vec::new(),
        };
        match (usize::try_from(size), whole) {
            (Ok(n), Some(whole)) if n <= whole => {
                writer.deflater = Deflater::Whole(Vec::with_capacity(n))
            }
            _ => writer.start_stream(),
        }
        writer
    }

    /// Compresses all of `data`.
    pub(super) fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        self.crc.update(data);
        // Truncating: ISIZE is the length modulo 2^32.
        self.length = self.length.wrapping_add(data.len() as u32);
        if let Deflater::Whole(input) = &mut self.deflater {
            if input.len() + data.len() <= self.whole {
                input.extend_from_slice(data);
                return Ok(());
            }
            // The file grew past what is deflated whole: stream what came so far first.
            let gathered = std::mem::take(input);
            self.start_stream();
            self.deflate(&gathered)?;
        }
        self.deflate(data)
    }

    /// Ends the member (the last block, the CRC-32 and the length) and writes out what
    /// is left. Nothing is flushed or synced: the temp file's owner decides that.
    pub(super) fn finish(mut self) -> io::Result<W> {
        if let Deflater::Whole(input) = &self.deflater {
            self.buf.extend_from_slice(&header(self.level));
            WholeDeflater::deflate(self.level, input, &mut self.buf)?;
        } else {
            loop {
                self.make_room()?;
                let Deflater::Stream(deflate) = &mut self.deflater else {
                    unreachable!("not whole, so streaming")
                };
                let status = deflate
                    .compress_vec(&[], &mut self.buf, FlushCompress::Finish)
                    .map_err(io::Error::other)?;
                if status == Status::StreamEnd {
                    break;
                }
            }
        }
        self.buf.extend_from_slice(&self.crc.sum().to_le_bytes());
        self.buf.extend_from_slice(&self.length.to_le_bytes());
        self.out.write_all(&self.buf)?;
        Ok(self.out)
    }

    /// Switches to streaming with zlib-rs: the header goes into the buffer, sized for
    /// the first output of a file of the size announced.
    fn start_stream(&mut self) {
        let bound = usize::try_from(self.size.saturating_add(self.size / 8))
            .unwrap_or(FLUSH_AT)
            .min(FLUSH_AT);
        self.buf = Vec::with_capacity(bound + HEADROOM + HEADER.len() + 8);
        self.buf.extend_from_slice(&header(self.level));
        self.deflater = Deflater::Stream(Box::new(Compress::new_with_window_bits(
            self.level,
            false,
            window_bits(self.size),
        )));
    }

    /// Streams `data` through zlib-rs (the CRC is already counted).
    fn deflate(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            self.make_room()?;
            let Deflater::Stream(deflate) = &mut self.deflater else {
                unreachable!("only called once streaming")
            };
            let before = deflate.total_in();
            deflate
                .compress_vec(data, &mut self.buf, FlushCompress::None)
                .map_err(io::Error::other)?;
            // At most `data.len()`, so it fits a usize.
            let used = (deflate.total_in() - before) as usize;
            data = &data[used..];
        }
        Ok(())
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

/// A worker thread's libdeflate compressor, made on its first whole file and kept for
/// the next ones (made again if the level changes).
struct WholeDeflater {
    level: u32,
    compressor: Compressor,
}

thread_local! {
    static WHOLE_DEFLATER: RefCell<Option<WholeDeflater>> = const { RefCell::new(None) };
}

impl WholeDeflater {
    /// Appends the raw deflate stream of `input` at `level` to `out`.
    fn deflate(level: Compression, input: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        // flate2's levels 0-9 mean what libdeflate's do (libdeflate goes on to 12).
        let lvl = CompressionLvl::new(level.level() as i32)
            .map_err(|e| io::Error::other(format!("compression level {}: {e:?}", level.level())))?;
        WHOLE_DEFLATER.with(|cell| {
            let mut cell = cell.borrow_mut();
            let deflater = match &mut *cell {
                Some(d) if d.level == level.level() => d,
                _ => cell.insert(WholeDeflater {
                    level: level.level(),
                    compressor: Compressor::new(lvl),
                }),
            };
            let bound = deflater.compressor.deflate_compress_bound(input.len());
            let start = out.len();
            // The trailer follows: room for it now saves growing the buffer again.
            out.reserve(bound + 8);
            out.resize(start + bound, 0);
            let written = deflater
                .compressor
                .deflate_compress(input, &mut out[start..])
                // The bound is libdeflate's own worst case: this does not happen.
                .map_err(|e| io::Error::other(format!("libdeflate: {e}")))?;
            out.truncate(start + written);
            Ok(())
        })
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

    /// Our member for `data`, announced as `size` bytes, given in `pieces`-byte
    /// writes, deflated whole up to `whole` bytes.
    fn ours_with(
        data: &[u8],
        level: u32,
        size: u64,
        pieces: usize,
        whole: Option<usize>,
    ) -> Vec<u8> {
        let mut g = GzipWriter::with_whole(Vec::new(), Compression::new(level), size, whole);
        for piece in data.chunks(pieces.max(1)) {
            g.write_all(piece).unwrap();
        }
        g.finish().unwrap()
    }

    fn ours(data: &[u8], level: u32, size: u64, pieces: usize) -> Vec<u8> {
        ours_with(data, level, size, pieces, Some(WHOLE))
    }

    fn gunzip(gz: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        MultiGzDecoder::new(gz).read_to_end(&mut out).unwrap();
        out
    }

    fn gzencoder(data: &[u8], level: u32) -> Vec<u8> {
        let mut theirs = GzEncoder::new(Vec::new(), Compression::new(level));
        theirs.write_all(data).unwrap();
        theirs.finish().unwrap()
    }

    /// Sizes around the window steps, and past the largest window and the buffer.
    const SIZES: [usize; 12] = [
        0, 1, 249, 250, 251, 511, 4096, 32_000, 32_506, 32_507, 70_000, 600_000,
    ];

    #[test]
    fn whole_files_round_trip_with_gzencoder_s_header_at_every_size_and_level() {
        for (i, &len) in SIZES.iter().enumerate() {
            let data = sample(len, i as u64 + 7);
            for level in [0, 1, 6, 9] {
                let theirs = gzencoder(&data, level);
                for pieces in [len, 1000, 65_536] {
                    let got = ours(&data, level, len as u64, pieces);
                    assert_eq!(
                        gunzip(&got),
                        data,
                        "len {len}, level {level}, pieces {pieces}"
                    );
                    assert_eq!(got[..10], theirs[..10], "the same header");
                    // Given in pieces or whole, the same input makes the same member.
                    assert!(got == ours(&data, level, len as u64, len), "len {len}");
                }
            }
        }
    }

    #[test]
    fn libdeflate_deflates_no_worse_than_zlib_at_the_same_level() {
        for (i, &len) in SIZES.iter().enumerate().filter(|(_, n)| **n >= 4096) {
            let data = sample(len, i as u64 + 7);
            let whole = ours(&data, 6, len as u64, len).len();
            let zlib = gzencoder(&data, 6).len();
            assert!(
                whole <= zlib + zlib / 50,
                "len {len}: {whole} vs zlib {zlib}"
            );
        }
    }

    #[test]
    fn a_streamed_file_given_whole_is_the_stream_gzencoder_writes_at_every_size_and_level() {
        // (How deflate's input is cut can change its choices, so only a whole file
        // compares byte for byte; pieces must round-trip.)
        for (i, &len) in SIZES.iter().enumerate() {
            let data = sample(len, i as u64 + 7);
            for level in [1, 6, 9] {
                let theirs = gzencoder(&data, level);
                if len <= 70_000 {
                    let got = ours_with(&data, level, len as u64, len, None);
                    assert!(got == theirs, "len {len}, level {level}");
                }
                for pieces in [len, 1000, 65_536] {
                    let got = ours_with(&data, level, len as u64, pieces, None);
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
    fn a_file_that_grows_past_whole_is_streamed_from_its_start() {
        // Announced small, then more comes than is deflated whole: what was gathered
        // goes through the stream first.
        let data = sample(5000, 9);
        for pieces in [100, 1999, 2000, 2001, 5000] {
            let gz = ours_with(&data, 6, 1000, pieces, Some(2000));
            assert_eq!(gunzip(&gz), data, "pieces {pieces}");
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
