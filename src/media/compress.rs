//! Layer compression that uses every core on every layer, with output that
//! never depends on the number of threads:
//! - gzip is compressed in fixed-size blocks in parallel, as pigz does: each
//!   block is a raw deflate stream primed with the previous 32 KiB of input
//!   and ended by a sync flush (the last one by the final block), so the
//!   blocks concatenate into one deflate stream, in one gzip member whose
//!   CRC-32 is computed as the input goes by;
//! - zstd runs in its multi-threaded mode, whose output is the same for any
//!   number of workers (at least one).

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;

use flate2::{Compress, FlushCompress, Status};

use super::Compression;

/// gzip's level (zlib's default, what `gzip` and nixpkgs use).
const GZIP_LEVEL: u32 = 6;
/// Input bytes per gzip block (pigz uses 128 KiB; 1 MiB blocks spend ~7%
/// less CPU on starting blocks here). Part of the output format.
pub const GZIP_BLOCK: usize = 1 << 20;
/// deflate's window: how much of the previous block primes the next.
const WINDOW: usize = 32 << 10;
/// zstd's level, and its job size (4 MiB jobs that do not re-read the
/// previous job's tail: ~7% less CPU and half the memory of the defaults,
/// for ~0.5% more bytes). Part of the output format.
const ZSTD_LEVEL: i32 = 3;
pub const ZSTD_JOB: u64 = 4 << 20;

/// A compressing writer for one layer.
pub enum Compressor<W: Write> {
    Gzip(ParallelGzip<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
    Plain(W),
}

impl<W: Write> Compressor<W> {
    /// `threads` compress gzip blocks; zstd gets `zstd_workers` workers.
    /// Blobs are not fsynced: the atomic rename of the finished output is
    /// what keeps an interrupted build from leaving anything half-made.
    pub fn new(
        kind: Compression,
        out: W,
        threads: &Arc<rayon::ThreadPool>,
        zstd_workers: u32,
    ) -> io::Result<Self> {
        Ok(match kind {
            Compression::Gzip => Compressor::Gzip(ParallelGzip::new(out, threads.clone())),
            Compression::Zstd => {
                let mut enc = zstd::stream::write::Encoder::new(out, ZSTD_LEVEL)?;
                enc.multithread(zstd_workers.max(1))?;
                enc.set_parameter(zstd::zstd_safe::CParameter::OverlapSizeLog(1))?;
                enc.set_parameter(zstd::zstd_safe::CParameter::JobSize(ZSTD_JOB as u32))?;
                Compressor::Zstd(enc)
            }
            Compression::None => Compressor::Plain(out),
        })
    }

    pub fn finish(self) -> io::Result<W> {
        match self {
            Compressor::Gzip(e) => e.finish(),
            Compressor::Zstd(e) => e.finish(),
            Compressor::Plain(w) => Ok(w),
        }
    }
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::Gzip(e) => e.write(buf),
            Compressor::Zstd(e) => e.write(buf),
            Compressor::Plain(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressor::Gzip(_) => Ok(()),
            Compressor::Zstd(e) => e.flush(),
            Compressor::Plain(w) => w.flush(),
        }
    }
}

/// gzip in parallel blocks (see the module doc). At most a few blocks per
/// thread are in flight, so memory stays bounded.
pub struct ParallelGzip<W: Write> {
    out: W,
    threads: Arc<rayon::ThreadPool>,
    block: Vec<u8>,
    /// The last `WINDOW` bytes before `block`: the next block's dictionary.
    dictionary: Vec<u8>,
    crc: crc32fast::Hasher,
    total_in: u64,
    pending: VecDeque<Receiver<io::Result<Vec<u8>>>>,
    /// Whether the header is out.
    started: bool,
}

/// No name, no time, "Unix": the same bytes on every machine.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];

impl<W: Write> ParallelGzip<W> {
    pub fn new(out: W, threads: Arc<rayon::ThreadPool>) -> Self {
        ParallelGzip {
            out,
            threads,
            block: Vec::with_capacity(GZIP_BLOCK),
            dictionary: Vec::new(),
            crc: crc32fast::Hasher::new(),
            total_in: 0,
            pending: VecDeque::new(),
            started: false,
        }
    }

    fn max_pending(&self) -> usize {
        self.threads.current_num_threads() * 2 + 2
    }

    /// Hands the full block to the pool, keeping its tail as the next dictionary.
    fn submit(&mut self, last: bool) -> io::Result<()> {
        if !self.started {
            self.out.write_all(&GZIP_HEADER)?;
            self.started = true;
        }
        let block = std::mem::replace(&mut self.block, Vec::with_capacity(GZIP_BLOCK));
        // The next dictionary: the last WINDOW bytes of everything so far.
        let mut next_dictionary = Vec::with_capacity(WINDOW);
        if block.len() < WINDOW {
            let keep = WINDOW - block.len();
            next_dictionary
                .extend_from_slice(&self.dictionary[self.dictionary.len().saturating_sub(keep)..]);
        }
        next_dictionary.extend_from_slice(&block[block.len().saturating_sub(WINDOW)..]);
        let dictionary = std::mem::replace(&mut self.dictionary, next_dictionary);
        let (tx, rx) = sync_channel(1);
        self.threads.spawn(move || {
            let _ = tx.send(deflate_block(&block, &dictionary, last));
        });
        self.pending.push_back(rx);
        while self.pending.len() >= self.max_pending() {
            self.write_oldest()?;
        }
        Ok(())
    }

    fn write_oldest(&mut self) -> io::Result<()> {
        if let Some(rx) = self.pending.pop_front() {
            let bytes = rx
                .recv()
                .map_err(|_| io::Error::other("a gzip worker stopped"))??;
            self.out.write_all(&bytes)?;
        }
        Ok(())
    }

    pub fn finish(mut self) -> io::Result<W> {
        self.submit(true)?;
        while !self.pending.is_empty() {
            self.write_oldest()?;
        }
        let crc = self.crc.clone().finalize();
        self.out.write_all(&crc.to_le_bytes())?;
        self.out.write_all(&(self.total_in as u32).to_le_bytes())?;
        Ok(self.out)
    }
}

impl<W: Write> Write for ParallelGzip<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(GZIP_BLOCK - self.block.len());
        self.block.extend_from_slice(&buf[..n]);
        self.crc.update(&buf[..n]);
        self.total_in += n as u64;
        if self.block.len() == GZIP_BLOCK {
            self.submit(false)?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One block as raw deflate: primed with `dictionary`, ended by a sync flush,
/// or by the end of the stream for the `last` block. Each block gets a new
/// deflate state: a reset one was found to carry state over from the
/// previous block (zlib-rs 0.6), which made the bytes depend on which
/// thread compressed what.
fn deflate_block(data: &[u8], dictionary: &[u8], last: bool) -> io::Result<Vec<u8>> {
    let mut deflate = Compress::new(flate2::Compression::new(GZIP_LEVEL), false);
    if !dictionary.is_empty() {
        deflate
            .set_dictionary(dictionary)
            .map_err(io::Error::other)?;
    }
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut out = Vec::with_capacity(data.len() / 2 + 1024);
    loop {
        if out.capacity() - out.len() < 1024 {
            out.reserve(out.capacity().max(64 << 10));
        }
        let consumed = deflate.total_in() as usize;
        let status = deflate
            .compress_vec(&data[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        let all_in = deflate.total_in() as usize == data.len();
        let room_left = out.len() < out.capacity();
        match status {
            Status::StreamEnd => break,
            _ if !last && all_in && room_left => break,
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn gzip(data: &[u8], threads: usize) -> Vec<u8> {
        let pool = Arc::new(
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap(),
        );
        let mut gz = ParallelGzip::new(Vec::new(), pool);
        // Odd write sizes cross block boundaries anywhere.
        for chunk in data.chunks(50_001) {
            gz.write_all(chunk).unwrap();
        }
        gz.finish().unwrap()
    }

    fn sample(len: usize) -> Vec<u8> {
        let mut x: u32 = 1;
        (0..len)
            .map(|i| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                // Repetitive with noise, so back-references cross blocks.
                if i % 7 == 0 {
                    (x >> 24) as u8
                } else {
                    b"nix store path "[i % 15]
                }
            })
            .collect()
    }

    #[test]
    fn round_trips_and_does_not_depend_on_threads() {
        for len in [
            0,
            1,
            WINDOW - 1,
            GZIP_BLOCK,
            GZIP_BLOCK + 1,
            5 * GZIP_BLOCK + 12_345,
        ] {
            let data = sample(len);
            let one = gzip(&data, 1);
            assert_eq!(one, gzip(&data, 3), "len {len}");
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&one[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data, "len {len}");
        }
    }
}
