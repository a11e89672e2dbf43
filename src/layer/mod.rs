//! Tar and layers: writes store-path layers byte-identical to nixpkgs'
//! `stream_layered_image.py`, builds the customisation layer, and runs each
//! layer through one streaming pass of tar → sha256 (diff_id) → compression →
//! sha256 (digest) → blob file (and, for `build --push`, a registry upload:
//! [`BlobStreams`]), checking every store path's NAR hash on the way.

pub mod cache;
pub mod explicit;
pub mod rootfs;
pub mod tar;

use std::cmp::Ordering;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};

use crate::digest::{BackgroundSha256, Digest, Sha256Lanes};
use crate::media::compress::Compressor;
use crate::media::Compression;
use crate::nix::{self, Hash, NarEncoder};
use tar::{Owner, TarWriter};

/// What one finished layer is.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LayerBlob {
    /// The compressed blob's digest.
    pub digest: Digest,
    /// The uncompressed tar's digest.
    pub diff_id: Digest,
    /// Size of the blob in bytes.
    pub size: u64,
    #[serde(skip)]
    pub media_type: &'static str,
    /// The store paths it holds (for the customisation layer: what it links to).
    pub store_paths: Vec<String>,
    #[serde(skip)]
    pub file: PathBuf,
    /// With a layer cache: `hit`, `miss`, or `uncached` (a layer it cannot key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<&'static str>,
}

/// The store paths the layer blob `file` holds (the `<store>/<hash>-<name>`
/// its entries are in), once its tar is found to hash to `diff_id`: how an
/// image whose history names no store paths (nix2container's, say) is read.
/// Entry names are untrusted: only well-formed store paths are taken.
pub fn store_paths_in_layer(file: &Path, diff_id: &Digest, store_dir: &str) -> Result<Vec<String>> {
    let (paths, tar_digest) = store_paths_in_tar(crate::media::decompressed(file)?, store_dir)?;
    if tar_digest != *diff_id {
        bail!("its tar hashes to {tar_digest}, but the image's config says {diff_id}");
    }
    Ok(paths)
}

fn store_paths_in_tar(tar: impl io::Read, store_dir: &str) -> Result<(Vec<String>, Digest)> {
    struct Hashing<R> {
        inner: R,
        hasher: sha2::Sha256,
    }
    impl<R: io::Read> io::Read for Hashing<R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.inner.read(buf)?;
            sha2::Digest::update(&mut self.hasher, &buf[..n]);
            Ok(n)
        }
    }
    let mut stream = Hashing {
        inner: tar,
        hasher: <sha2::Sha256 as sha2::Digest>::new(),
    };
    let prefix = store_dir.trim_start_matches('/');
    let mut found = std::collections::BTreeSet::new();
    {
        let mut archive = ::tar::Archive::new(&mut stream);
        for entry in archive.entries().context("cannot read the layer's tar")? {
            let entry = entry.context("cannot read the layer's tar")?;
            let name = entry.path_bytes();
            let name = String::from_utf8_lossy(&name);
            let name = name.trim_start_matches("./").trim_start_matches('/');
            let Some(rest) = name.strip_prefix(prefix).and_then(|r| r.strip_prefix('/')) else {
                continue;
            };
            let top = rest.split('/').next().unwrap_or_default();
            let path = format!("{store_dir}/{top}");
            if nix::validate_store_path(store_dir, &path).is_ok() {
                found.insert(path);
            }
        }
    }
    // The end-of-archive blocks and padding count in the diff_id too.
    io::copy(&mut stream, &mut io::sink()).context("cannot read the layer's tar")?;
    Ok((
        found.into_iter().collect(),
        Digest::from_hasher(stream.hasher),
    ))
}

/// `Write` adapter that counts, and hashes unless told the hash is not
/// needed. The hash runs on a thread of its own, so that it never holds the
/// tar writer or the compressor back.
pub struct HashingWriter<W: Write> {
    inner: W,
    hasher: Option<BackgroundSha256>,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W, hasher: BackgroundSha256) -> Self {
        HashingWriter {
            inner,
            hasher: Some(hasher),
            count: 0,
        }
    }

    /// Counts bytes only (when another hash of the same bytes exists).
    fn counting(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: None,
            count: 0,
        }
    }

    /// The inner writer, the digest (if hashing) and the byte count.
    pub fn finish(self) -> io::Result<(W, Option<Digest>, u64)> {
        let digest = match self.hasher {
            Some(hasher) => Some(Digest::from_raw(&hasher.finish()?.0)),
            None => None,
        };
        Ok((self.inner, digest, self.count))
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(h) = &mut self.hasher {
            h.write_all(&buf[..n])?;
        }
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Somewhere a layer's compressed bytes can go while they are being written,
/// besides the blob file: `nixoci build --push` uploads big layers this way,
/// during their compression.
pub trait BlobStreams: Sync {
    /// A stream for a new layer of about `size` uncompressed bytes, or `None`
    /// when this layer goes to the blob file only.
    fn open(&self, size: u64) -> Option<Box<dyn BlobStream>>;
}

/// One layer's stream. It cannot fail the build: a stream that breaks stops
/// taking bytes, and the blob file is still complete.
pub trait BlobStream: Send {
    /// The next compressed bytes.
    fn send(&mut self, bytes: &[u8]);
    /// All bytes were sent, and their digest is `digest`.
    fn finish(self: Box<Self>, digest: &Digest);
}

/// The blob file, and a stream that gets the same bytes.
struct BlobFile {
    file: BufWriter<File>,
    stream: Option<Box<dyn BlobStream>>,
}

impl Write for BlobFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        if let Some(stream) = &mut self.stream {
            stream.send(&buf[..n]);
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// The pipe a layer tar is written into: diff_id hash, compressor, digest hash
/// and the blob file.
type LayerSink = HashingWriter<Compressor<HashingWriter<BlobFile>>>;

/// Compresses the uncompressed layer `plain` (whose digest must be
/// `diff_id`) into `out_dir`, deterministically; returns the blob's digest,
/// size and path. Used to push archives whose layers are plain tars
/// (docker-archives, nixpkgs' `.tar.gz`) as compressed layers.
pub fn compress_layer_file(
    plain: &Path,
    diff_id: &Digest,
    compression: Compression,
    out_dir: &Path,
    threads: &Arc<rayon::ThreadPool>,
) -> Result<(Digest, u64, PathBuf)> {
    let opts = LayerOptions {
        compression,
        threads,
        blob_dir: out_dir,
        on_bytes: &|_| {},
        streams: None,
    };
    let input = File::open(plain).with_context(|| format!("cannot read {}", plain.display()))?;
    let size = input.metadata()?.len();
    let (mut sink, tmp, _) = open_sink(&opts, &format!(".compressing-{}", diff_id.hex()), size)?;
    io::copy(&mut io::BufReader::with_capacity(1 << 20, input), &mut sink)?;
    let blob = close_sink(sink, tmp, &opts, Vec::new())?;
    if blob.diff_id != *diff_id {
        let _ = fs::remove_file(&blob.file);
        bail!(
            "layer {diff_id} is damaged: its content hashes to {}",
            blob.diff_id
        );
    }
    Ok((blob.digest, blob.size, blob.file))
}

/// Where and how layers are written.
pub struct LayerOptions<'a> {
    pub compression: Compression,
    /// The threads that compress (gzip blocks, zstd workers).
    pub threads: &'a Arc<rayon::ThreadPool>,
    /// Directory the blob files go to (`<layout>/blobs/sha256`).
    pub blob_dir: &'a Path,
    /// Reports bytes of store content read, for progress.
    pub on_bytes: &'a (dyn Fn(u64) + Sync),
    /// Where the compressed bytes also go while they are written, if anywhere.
    pub streams: Option<&'a dyn BlobStreams>,
}

/// zstd workers for a layer of about `size` bytes: every thread once it
/// spans a few jobs (the output does not depend on it).
fn zstd_workers(threads: &rayon::ThreadPool, size: u64) -> u32 {
    if size >= 2 * crate::media::compress::ZSTD_JOB {
        threads.current_num_threads() as u32
    } else {
        1
    }
}

/// The sink, its temporary blob file, and the hashing thread its hashes run
/// on (which other hashes of the same layer can share).
fn open_sink(
    opts: &LayerOptions,
    tmp_name: &str,
    size: u64,
) -> Result<(LayerSink, PathBuf, Sha256Lanes)> {
    let tmp = opts.blob_dir.join(tmp_name);
    let file = File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let buffered = BlobFile {
        file: BufWriter::with_capacity(256 * 1024, file),
        stream: opts.streams.and_then(|streams| streams.open(size)),
    };
    // Uncompressed, the blob digest is the diff_id: hash those bytes once.
    let lanes = Sha256Lanes::spawn()?;
    let compressed = match opts.compression {
        Compression::None => HashingWriter::counting(buffered),
        _ => HashingWriter::new(buffered, lanes.stream()?),
    };
    let compressor = Compressor::new(
        opts.compression,
        compressed,
        opts.threads,
        zstd_workers(opts.threads, size),
    )?;
    Ok((HashingWriter::new(compressor, lanes.stream()?), tmp, lanes))
}

fn close_sink(
    sink: LayerSink,
    tmp: PathBuf,
    opts: &LayerOptions,
    store_paths: Vec<String>,
) -> Result<LayerBlob> {
    let (compressor, diff_id, _) = sink.finish()?;
    let diff_id = diff_id.expect("the tar stream is always hashed");
    let compressed = compressor.finish()?;
    let (buffered, digest, size) = compressed.finish()?;
    let digest = digest.unwrap_or_else(|| diff_id.clone());
    buffered.file.into_inner().map_err(|e| e.into_error())?;
    if let Some(stream) = buffered.stream {
        stream.finish(&digest);
    }
    let dest = opts.blob_dir.join(digest.hex());
    fs::rename(&tmp, &dest).with_context(|| format!("cannot move blob to {}", dest.display()))?;
    Ok(LayerBlob {
        digest,
        diff_id,
        size,
        media_type: opts.compression.media_type(),
        store_paths,
        file: dest,
        cache: None,
    })
}

/// Runs `write` into a fresh layer sink and turns the result into a blob
/// named by its digest; nothing is left behind on failure.
fn build_layer(
    index: usize,
    opts: &LayerOptions,
    size: u64,
    store_paths: Vec<String>,
    write: impl FnOnce(&mut TarWriter<LayerSink>, &Sha256Lanes) -> Result<()>,
) -> Result<LayerBlob> {
    let (sink, tmp, lanes) = open_sink(opts, &format!(".tmp-layer-{index}"), size)?;
    let result = (|| {
        let mut tar = TarWriter::new(sink);
        write(&mut tar, &lanes)?;
        Ok::<_, anyhow::Error>(tar.finish()?)
    })();
    match result.and_then(|sink| close_sink(sink, tmp.clone(), opts, store_paths)) {
        Ok(blob) => Ok(blob),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Writes one store-path layer of about `size` bytes. `expected` gives each
/// path's NAR hash from the graph, if known; a path whose content does not
/// match is refused.
pub fn build_store_layer(
    index: usize,
    paths: &[String],
    expected: &[Option<Hash>],
    size: u64,
    owner: &Owner,
    opts: &LayerOptions,
) -> Result<LayerBlob> {
    build_layer(index, opts, size, paths.to_vec(), |tar, lanes| {
        write_store_paths(tar, paths, expected, owner, lanes, opts.on_bytes)
    })
}

/// The tar stream of a store-path layer: `/nix/`, `/nix/store/` at 0755, then
/// every path and everything under it in Python `pathlib` order. The NAR
/// hashes run on `lanes`, beside the tar's own hash.
pub fn write_store_paths<W: Write>(
    tar: &mut TarWriter<W>,
    paths: &[String],
    expected: &[Option<Hash>],
    owner: &Owner,
    lanes: &Sha256Lanes,
    on_bytes: &(dyn Fn(u64) + Sync),
) -> Result<()> {
    tar.directory(b"/nix", 0o755, owner)?;
    tar.directory(b"/nix/store", 0o755, owner)?;
    for (i, path) in paths.iter().enumerate() {
        let want = expected.get(i).and_then(Option::as_ref);
        let mut walk = StoreWalk {
            // Without a registered hash there is nothing to compare: skip hashing.
            nar: NarEncoder::new(OptionalHash(want.map(|_| lanes.stream()).transpose()?))?,
            nar_in_order: true,
            owner,
            on_bytes,
        };
        let fs_path = Path::new(path);
        walk.node(tar, fs_path)
            .with_context(|| format!("cannot archive {path}"))?;
        if let Some(want) = want {
            let got = match walk.nar.into_inner().0 {
                Some(hasher) if walk.nar_in_order => Hash::sha256(hasher.finish()?.0),
                _ => {
                    // A directory whose Python order differs from NAR's byte order
                    // (names that are not UTF-8): hash this path on its own.
                    nix::nar_hash_path(fs_path, &mut |_| {})?.0
                }
            };
            if &got != want {
                bail!(
                    "store path {path} does not match its registered NAR hash: it was modified after it was built \
                     (expected {}, got {}). Repair it with `nix-store --repair-path {path}` or rebuild it",
                    want.to_sri(),
                    got.to_sri()
                );
            }
        }
    }
    Ok(())
}

/// Python compares path components as strings of code points, with bytes that
/// are not UTF-8 decoded as surrogates (U+DC80..U+DCFF).
fn python_order(a: &[u8], b: &[u8]) -> Ordering {
    fn code_points(s: &[u8]) -> impl Iterator<Item = u32> + '_ {
        s.utf8_chunks().flat_map(|chunk| {
            chunk
                .valid()
                .chars()
                .map(|c| c as u32)
                .chain(chunk.invalid().iter().map(|&byte| 0xDC00 + u32::from(byte)))
                .collect::<Vec<_>>()
        })
    }
    code_points(a).cmp(code_points(b))
}

/// A NAR hash sink that may be switched off.
struct OptionalHash(Option<BackgroundSha256>);

impl Write for OptionalHash {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.0 {
            Some(counter) => counter.write(buf),
            None => Ok(buf.len()),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct StoreWalk<'a> {
    nar: NarEncoder<OptionalHash>,
    nar_in_order: bool,
    owner: &'a Owner,
    on_bytes: &'a (dyn Fn(u64) + Sync),
}

impl StoreWalk<'_> {
    fn node<W: Write>(&mut self, tar: &mut TarWriter<W>, path: &Path) -> Result<()> {
        let meta =
            fs::symlink_metadata(path).with_context(|| format!("{} is missing", path.display()))?;
        let name = path.as_os_str().as_bytes();
        let mode = meta.permissions().mode() & 0o7777;
        let kind = meta.file_type();
        if kind.is_symlink() {
            let target = fs::read_link(path)?;
            tar.symlink(name, target.as_os_str().as_bytes(), self.owner)?;
            self.nar.symlink(target.as_os_str().as_bytes())?;
        } else if kind.is_dir() {
            tar.directory(name, mode, self.owner)?;
            self.nar.directory()?;
            let mut children: Vec<Vec<u8>> = fs::read_dir(path)?
                .map(|e| e.map(|e| e.file_name().as_bytes().to_vec()))
                .collect::<io::Result<_>>()?;
            children.sort_by(|a, b| python_order(a, b));
            if children.windows(2).any(|w| w[0] > w[1]) {
                self.nar_in_order = false;
            }
            for child in children {
                self.nar.entry(&child)?;
                self.node(tar, &path.join(std::ffi::OsStr::from_bytes(&child)))?;
                self.nar.close_entry()?;
            }
            self.nar.close_node()?;
        } else if kind.is_file() {
            let size = meta.len();
            self.nar.regular(nix::is_executable(mode), size)?;
            let mut file = File::open(path)?;
            let nar = &mut self.nar;
            let on_bytes = self.on_bytes;
            tar.file(name, mode, size, self.owner, &mut file, &mut |data| {
                on_bytes(data.len() as u64);
                nar.contents(data)
            })?;
            self.nar.finish_regular()?;
        } else {
            return Err(anyhow!(
                "{} is not a file, directory or symlink; a store path cannot hold it",
                path.display()
            ));
        }
        Ok(())
    }
}

/// Writes the customisation layer from a prepared root tree.
pub fn build_root_layer(
    index: usize,
    tree: &rootfs::RootTree,
    owner: &Owner,
    opts: &LayerOptions,
) -> Result<LayerBlob> {
    build_layer(index, opts, 0, tree.store_references(), |tar, _| {
        tree.write(tar, owner, opts.on_bytes)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_order_is_by_code_point_with_surrogates() {
        assert_eq!(python_order(b"a", b"a-c"), Ordering::Less);
        assert_eq!(
            python_order("\u{e000}".as_bytes(), b"\xff"),
            Ordering::Greater
        );
        assert_eq!(python_order(b"\xff", b"z"), Ordering::Greater);
    }
}
