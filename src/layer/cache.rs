//! The layer cache for builds outside Nix (`--cache DIR`, `NIXOCI_CACHE`):
//! a store-path layer whose inputs were built before is reused without
//! reading its store paths.
//!
//! The key is everything that decides a layer's bytes: the format version,
//! the ordered store paths and their NAR hashes, the compression, mtime and
//! owner fields. An entry is a directory `v1/<key>/` holding `blob` and
//! `meta.json`, made in a temporary directory and renamed into place, so
//! concurrent builds never see half an entry. A hit is linked (or copied)
//! into the output and checked there: its size, and the sha256 of every
//! 32 MiB chunk, recorded when the entry was made from a blob whose digest
//! the build had just computed. Chunks are checked in parallel, so a big
//! layer does not wait on one core. A damaged entry is removed and the layer
//! rebuilt. Using an entry touches it, and `prune` removes the least
//! recently used entries first.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{anyhow, bail, Context, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use super::tar::Owner;
use super::LayerBlob;
use crate::digest::Digest;
use crate::media::Compression;
use crate::nix::{self, Hash};

/// Bumped whenever the layer bytes for the same inputs change (the
/// pinned-digest test says when): older entries are then never hit.
const FORMAT: &str = "nixoci-layer-v1";
const ENTRIES: &str = "v1";
/// Bytes per checked chunk of a cached blob.
const CHUNK: u64 = 32 << 20;

pub struct LayerCache {
    entries: PathBuf,
}

/// What an entry records besides its blob.
#[derive(Serialize, Deserialize)]
struct Meta {
    digest: Digest,
    diff_id: Digest,
    size: u64,
    store_paths: Vec<String>,
    /// sha256 (hex) of each `CHUNK` of the blob.
    chunks: Vec<String>,
    /// sha256 of the fields above, so a damaged meta.json is caught too.
    seal: String,
}

impl Meta {
    fn compute_seal(&self) -> String {
        let fields = serde_json::json!([
            self.digest,
            self.diff_id,
            self.size,
            self.store_paths,
            self.chunks
        ]);
        nix::hex(&sha2::Sha256::digest(fields.to_string().as_bytes()))
    }
}

impl LayerCache {
    pub fn open(dir: &Path) -> Result<LayerCache> {
        let entries = dir.join(ENTRIES);
        fs::create_dir_all(&entries)
            .with_context(|| format!("cannot create the layer cache {}", dir.display()))?;
        Ok(LayerCache { entries })
    }

    /// The key of a store-path layer, or `None` if a path's NAR hash is
    /// unknown (then its content cannot be vouched for without reading it).
    pub fn key(
        paths: &[String],
        nar_hashes: &[Option<Hash>],
        compression: Compression,
        owner: &Owner,
    ) -> Option<String> {
        let mut h = sha2::Sha256::new();
        let mut field = |s: &str| {
            h.update((s.len() as u64).to_le_bytes());
            h.update(s.as_bytes());
        };
        field(FORMAT);
        field(env!("CARGO_PKG_VERSION"));
        field(compression.media_type());
        field(&owner.mtime.to_string());
        field(&owner.uid.to_string());
        field(&owner.gid.to_string());
        field(&owner.uname);
        field(&owner.gname);
        for (path, hash) in paths.iter().zip(nar_hashes) {
            field(path);
            field(&hash.as_ref()?.to_sri());
        }
        Some(nix::hex(&h.finalize()))
    }

    /// The cached layer for `key`, put into `blob_dir` (linked if it can be,
    /// copied if not) after its size and digest are checked.
    pub fn get(&self, key: &str, blob_dir: &Path, compression: Compression) -> Option<LayerBlob> {
        let entry = self.entries.join(key);
        let meta: Option<Meta> = fs::read(entry.join("meta.json"))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .filter(|meta: &Meta| meta.seal == meta.compute_seal());
        let Some(meta) = meta else {
            let _ = fs::remove_dir_all(&entry);
            return None;
        };
        let dest = blob_dir.join(meta.digest.hex());
        if !place_checked(&entry.join("blob"), &dest, &meta.chunks, meta.size) {
            // Damaged (or half-removed): never used, and rebuilt by the caller.
            let _ = fs::remove_dir_all(&entry);
            return None;
        }
        let _ = File::open(&entry).and_then(|d| d.set_modified(SystemTime::now()));
        Some(LayerBlob {
            digest: meta.digest,
            diff_id: meta.diff_id,
            size: meta.size,
            media_type: compression.media_type(),
            store_paths: meta.store_paths,
            file: dest,
            cache: Some("hit"),
        })
    }

    /// Keeps `blob` under `key`. Failing to cache never fails the build.
    pub fn put(&self, key: &str, blob: &LayerBlob) {
        let entry = self.entries.join(key);
        if entry.exists() {
            return;
        }
        let tmp = self.entries.join(format!(
            ".tmp-{key}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let made = (|| -> io::Result<()> {
            let _ = fs::remove_dir_all(&tmp);
            fs::create_dir(&tmp)?;
            if fs::hard_link(&blob.file, tmp.join("blob")).is_err() {
                fs::copy(&blob.file, tmp.join("blob"))?;
            }
            let mut meta = Meta {
                digest: blob.digest.clone(),
                diff_id: blob.diff_id.clone(),
                size: blob.size,
                store_paths: blob.store_paths.clone(),
                chunks: chunk_hashes(&blob.file, blob.size)?,
                seal: String::new(),
            };
            meta.seal = meta.compute_seal();
            fs::write(tmp.join("meta.json"), serde_json::to_vec(&meta)?)?;
            // A concurrent build may have won: its entry is as good as ours.
            match fs::rename(&tmp, &entry) {
                Err(_) if entry.exists() => Ok(()),
                other => other,
            }
        })();
        if let Err(e) = made {
            eprintln!("nixoci: warning: cannot add a layer to the cache: {e}");
        }
        let _ = fs::remove_dir_all(&tmp);
    }

    /// Removes the least recently used entries until the rest take at most
    /// `max_size` bytes; returns (entries removed, bytes kept).
    pub fn prune(&self, max_size: u64) -> Result<(usize, u64)> {
        let mut entries = Vec::new();
        for entry in fs::read_dir(&self.entries)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(".tmp-") {
                continue;
            }
            let used = entry.metadata()?.modified()?;
            let size = fs::metadata(entry.path().join("blob")).map_or(0, |m| m.len());
            entries.push((used, size, entry.path()));
        }
        entries.sort();
        let mut total: u64 = entries.iter().map(|e| e.1).sum();
        let mut removed = 0;
        for (_, size, path) in entries {
            if total <= max_size {
                break;
            }
            fs::remove_dir_all(&path)
                .with_context(|| format!("cannot remove {}", path.display()))?;
            total -= size;
            removed += 1;
        }
        Ok((removed, total))
    }
}

/// Links (or copies) `from` to `to` and checks its size and chunk hashes;
/// leaves nothing at `to` when they do not match.
fn place_checked(from: &Path, to: &Path, chunks: &[String], size: u64) -> bool {
    let _ = fs::remove_file(to);
    let placed = fs::hard_link(from, to).or_else(|_| fs::copy(from, to).map(|_| ()));
    let good = placed.is_ok()
        && fs::metadata(to).is_ok_and(|m| m.len() == size)
        && chunk_hashes(to, size).is_ok_and(|got| got == chunks);
    if !good {
        let _ = fs::remove_file(to);
    }
    good
}

/// The sha256 (hex) of each `CHUNK` of the `size`-byte file, in parallel.
fn chunk_hashes(path: &Path, size: u64) -> io::Result<Vec<String>> {
    let count = size.div_ceil(CHUNK).max(1);
    (0..count)
        .into_par_iter()
        .map(|i| {
            let mut file = File::open(path)?;
            file.seek(SeekFrom::Start(i * CHUNK))?;
            let mut chunk = file.take(CHUNK);
            let mut h = sha2::Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = chunk.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
            Ok(nix::hex(&h.finalize()))
        })
        .collect()
}

/// Parses sizes like `500M`, `10G`, `1.5GiB` or plain bytes (powers of 1024).
pub fn parse_size(text: &str) -> Result<u64> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| anyhow!("`{text}` is not a size (e.g. 500M, 10G)"))?;
    let shift = match unit
        .trim()
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => bail!("`{text}`: unknown unit (K, M, G or T)"),
    };
    let bytes = number * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        bail!("`{text}` is out of range");
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("0").unwrap(), 0);
        assert_eq!(parse_size("500M").unwrap(), 500 << 20);
        assert_eq!(parse_size("10G").unwrap(), 10 << 30);
        assert_eq!(parse_size("1.5GiB").unwrap(), 3 << 29);
        assert_eq!(parse_size("2kb").unwrap(), 2048);
        assert!(parse_size("ten").is_err());
        assert!(parse_size("5X").is_err());
    }
}
