//! Layer compression that uses every core on every layer, with output that
//! never depends on the number of threads:
//! - gzip is compressed in fixed-size blocks in parallel, each block a gzip
//!   member of its own (as BGZF does): members are independent, so no block
//!   waits for the one before it, and gzip readers read a file of members as
//!   the concatenation of their contents (RFC 1952, section 2.2). The
//!   deflate engine is libdeflate, which spends about half the CPU of zlib
//!   at a size within 1% of zlib's level 6; zlib-rs is the fallback when
//!   nixoci is built without the `libdeflate` feature;
//! - zstd runs in its multi-threaded mode, whose output is the same for any
//!   number of workers (at least one).

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;

use super::Compression;

/// The deflate engine and level, and the block size, that make gzip layer
/// bytes: part of the layer cache's key. libdeflate's level 2 is the least
/// CPU whose output stays within 5% of zlib's level 6 (it is 1% larger on
/// real closures); zlib-rs's level 6 is what earlier releases wrote.
#[cfg(feature = "libdeflate")]
pub const GZIP_ENCODER: &str = "libdeflate-1.26.1 level 2, 1 MiB members";
#[cfg(feature = "libdeflate")]
const GZIP_LEVEL: i32 = 2;
#[cfg(not(feature = "libdeflate"))]
pub const GZIP_ENCODER: &str = "zlib-rs level 6, 1 MiB members";
#[cfg(not(feature = "libdeflate"))]
const GZIP_LEVEL: u32 = 6;
/// Input bytes per gzip member (BGZF uses 64 KiB, pigz 128 KiB blocks;
/// bigger blocks lose less to starting each one afresh, and 1 MiB loses
/// 0.1% against 4 MiB). Part of the output format.
pub const GZIP_BLOCK: usize = 1 << 20;
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
    pending: VecDeque<Receiver<io::Result<Vec<u8>>>>,
    /// Whether a member was handed out: an empty input still gets one, so
    /// that the output is a gzip file.
    submitted: bool,
}

/// No name, no time, "Unix": the same bytes on every machine.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];

impl<W: Write> ParallelGzip<W> {
    pub fn new(out: W, threads: Arc<rayon::ThreadPool>) -> Self {
        ParallelGzip {
            out,
            threads,
            block: Vec::with_capacity(GZIP_BLOCK),
            pending: VecDeque::new(),
            submitted: false,
        }
    }

    fn max_pending(&self) -> usize {
        self.threads.current_num_threads() * 2 + 2
    }

    /// Hands the block to the pool as the next member.
    fn submit(&mut self) -> io::Result<()> {
        let block = std::mem::replace(&mut self.block, Vec::with_capacity(GZIP_BLOCK));
        let (tx, rx) = sync_channel(1);
        self.threads.spawn(move || {
            let _ = tx.send(gzip_member(&block));
        });
        self.pending.push_back(rx);
        self.submitted = true;
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
        if !self.block.is_empty() || !self.submitted {
            self.submit()?;
        }
        while !self.pending.is_empty() {
            self.write_oldest()?;
        }
        Ok(self.out)
    }
}

impl<W: Write> Write for ParallelGzip<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(GZIP_BLOCK - self.block.len());
        self.block.extend_from_slice(&buf[..n]);
        if self.block.len() == GZIP_BLOCK {
            self.submit()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One block as a whole gzip member: header, raw deflate, CRC-32 and size.
fn gzip_member(data: &[u8]) -> io::Result<Vec<u8>> {
    let mut member = Vec::with_capacity(data.len() / 2 + 1024);
    member.extend_from_slice(&GZIP_HEADER);
    deflate_raw(data, &mut member)?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(data);
    member.extend_from_slice(&crc.finalize().to_le_bytes());
    // Blocks are at most GZIP_BLOCK bytes, so the size always fits.
    member.extend_from_slice(&(data.len() as u32).to_le_bytes());
    Ok(member)
}

#[cfg(feature = "libdeflate")]
thread_local! {
    /// Each worker's libdeflate compressor (it holds no state between
    /// calls, so which thread compresses which block changes no byte).
    static DEFLATE: std::cell::RefCell<Option<libdeflater::Compressor>> =
        const { std::cell::RefCell::new(None) };
}

/// Appends `data` as a complete raw deflate stream.
#[cfg(feature = "libdeflate")]
fn deflate_raw(data: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    DEFLATE.with(|cell| {
        let mut cell = cell.borrow_mut();
        let deflate = match &mut *cell {
            Some(deflate) => deflate,
            empty => {
                let level = libdeflater::CompressionLvl::new(GZIP_LEVEL)
                    .map_err(|e| io::Error::other(format!("libdeflate level: {e:?}")))?;
                empty.insert(libdeflater::Compressor::new(level))
            }
        };
        let start = out.len();
        out.resize(start + deflate.deflate_compress_bound(data.len()), 0);
        let written = deflate
            .deflate_compress(data, &mut out[start..])
            .map_err(|e| io::Error::other(format!("libdeflate: {e:?}")))?;
        out.truncate(start + written);
        Ok(())
    })
}

/// Appends `data` as a complete raw deflate stream. A new deflate state
/// for each block: a reset one was found to carry state over from the
/// previous block (zlib-rs 0.6), which made the bytes depend on which
/// thread compressed what.
#[cfg(not(feature = "libdeflate"))]
fn deflate_raw(data: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    use flate2::{Compress, FlushCompress, Status};
    let mut deflate = Compress::new(flate2::Compression::new(GZIP_LEVEL), false);
    loop {
        if out.capacity() - out.len() < 1024 {
            out.reserve(out.capacity().max(64 << 10));
        }
        let consumed = deflate.total_in() as usize;
        let status = deflate
            .compress_vec(&data[consumed..], out, FlushCompress::Finish)
            .map_err(io::Error::other)?;
        if status == Status::StreamEnd {
            return Ok(());
        }
    }
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
            GZIP_BLOCK - 1,
            GZIP_BLOCK,
            GZIP_BLOCK + 1,
            5 * GZIP_BLOCK + 12_345,
        ] {
            let data = sample(len);
            let one = gzip(&data, 1);
            assert_eq!(one, gzip(&data, 3), "len {len}");
            let mut back = Vec::new();
            flate2::read::MultiGzDecoder::new(&one[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data, "len {len}");
        }
    }

    #[test]
    fn each_full_block_is_one_member_and_an_empty_input_is_one_empty_member() {
        for (len, members) in [
            (0, 1),
            (1, 1),
            (GZIP_BLOCK, 1),
            (GZIP_BLOCK + 1, 2),
            (3 * GZIP_BLOCK, 3),
        ] {
            let data = sample(len);
            let gz = gzip(&data, 2);
            let mut rest = &gz[..];
            let mut back = Vec::new();
            let mut count = 0;
            while !rest.is_empty() {
                let mut member = flate2::bufread::GzDecoder::new(rest);
                let mut content = Vec::new();
                member.read_to_end(&mut content).unwrap();
                assert!(content.len() <= GZIP_BLOCK, "len {len}");
                back.extend(content);
                rest = member.into_inner();
                count += 1;
            }
            assert_eq!((count, back), (members, data), "len {len}");
        }
    }
}
