//! The layer cache for builds outside Nix (`--cache DIR`, `NIXOCI_CACHE`):
//! a store-path layer whose inputs were built before is reused without
//! reading its store paths.
//!
//! The key is everything that decides a layer's bytes: the format version,
//! the ordered store paths and their NAR hashes, the compression, mtime and
//! owner fields. An entry is a directory `v1/<key>/` holding `blob` and
//! `meta.json`, made in a temporary directory and renamed into place, so
//! concurrent builds never see half an entry.
//!
//! The cache is trusted only as far as who can write it: a cache directory
//! (or its `v1/`) that another user owns, that group or others can write, or
//! that is a symlink is refused, as OpenSSH refuses such key files, since
//! its writer could put any bytes into every image built from it. Within it,
//! an entry is used only if its recorded key and store paths are the
//! request's (the key covers the NAR hashes), its files are regular files of
//! ours (never followed through a symlink), and its blob, linked (or
//! copied) into the output, hashes to the digest it is named by: every hit
//! is re-hashed. Anything else is removed and the layer rebuilt. Using an
//! entry touches it, and `prune` removes the least recently used first.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use super::tar::Owner;
use super::LayerBlob;
use crate::digest::Digest;
use crate::media::Compression;
use crate::nix::Hash;

/// Bumped whenever the layer bytes for the same inputs change (the
/// pinned-digest test says when): older entries are then never hit.
const FORMAT: &str = "nixoci-layer-v2";
const ENTRIES: &str = "v1";
/// The most a `meta.json` may take (real ones take well under 64 KiB even
/// for layers of thousands of paths).
const MAX_META: u64 = 16 << 20;

pub struct LayerCache {
    entries: PathBuf,
}

/// What an entry records besides its blob.
#[derive(Serialize, Deserialize)]
struct Meta {
    /// The key the entry was made for: an entry moved under another key's
    /// name is refused.
    key: String,
    digest: Digest,
    diff_id: Digest,
    size: u64,
    store_paths: Vec<String>,
    /// sha256 of the fields above, so a damaged meta.json is caught too
    /// (damage, not forgery: only the cache's owner can write it).
    seal: String,
}

impl Meta {
    fn compute_seal(&self) -> String {
        let fields = serde_json::json!([
            self.key,
            self.digest,
            self.diff_id,
            self.size,
            self.store_paths,
        ]);
        crate::digest::hex(&sha2::Sha256::digest(fields.to_string().as_bytes()))
    }
}

impl LayerCache {
    /// Opens (making it if need be) the cache at `dir`; refuses one that
    /// anyone but this user could write.
    pub fn open(dir: &Path) -> Result<LayerCache> {
        let entries = dir.join(ENTRIES);
        fs::create_dir_all(&entries)
            .with_context(|| format!("cannot create the layer cache {}", dir.display()))?;
        for d in [dir, &entries] {
            only_ours(d)?;
        }
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
        if compression == Compression::Gzip {
            field(crate::media::compress::GZIP_ENCODER);
        }
        field(&owner.mtime.to_string());
        field(&owner.uid.to_string());
        field(&owner.gid.to_string());
        field(&owner.uname);
        field(&owner.gname);
        for (path, hash) in paths.iter().zip(nar_hashes) {
            field(path);
            field(&hash.as_ref()?.to_sri());
        }
        Some(crate::digest::hex(&h.finalize()))
    }

    /// The cached layer for `key` (made of `store_paths`), put into
    /// `blob_dir` (linked if it can be, copied if not) once it proves to be
    /// that layer: anything else is removed, and the caller rebuilds.
    pub fn get(
        &self,
        key: &str,
        store_paths: &[String],
        blob_dir: &Path,
        compression: Compression,
    ) -> Option<LayerBlob> {
        let entry = self.entries.join(key);
        let meta = read_meta(&entry)
            .filter(|m| m.key == key && m.store_paths == store_paths)
            .filter(|m| m.seal == m.compute_seal());
        let placed = meta.and_then(|meta| {
            let dest = blob_dir.join(meta.digest.hex());
            place_checked(&entry.join("blob"), &dest, &meta.digest).then_some((meta, dest))
        });
        let Some((meta, dest)) = placed else {
            // Damaged, forged or half-removed: never used, and rebuilt.
            let _ = fs::remove_dir_all(&entry);
            return None;
        };
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
                key: key.to_string(),
                digest: blob.digest.clone(),
                diff_id: blob.diff_id.clone(),
                size: blob.size,
                store_paths: blob.store_paths.clone(),
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
    /// `max_size` bytes, and what killed builds left half-made; returns
    /// (entries removed, bytes kept). Entries a concurrent prune or build
    /// removes meanwhile are skipped, not errors.
    pub fn prune(&self, max_size: u64) -> Result<(usize, u64)> {
        let gone = |e: &io::Error| e.kind() == io::ErrorKind::NotFound;
        let mut entries = Vec::new();
        for entry in fs::read_dir(&self.entries)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix(".tmp-").and_then(temporary_entry_pid) {
                // SAFETY: kill with signal 0 only asks whether `pid` exists.
                let alive = unsafe { libc::kill(pid, 0) } == 0
                    || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
                if !alive {
                    match fs::remove_dir_all(entry.path()) {
                        Err(e) if !gone(&e) => return Err(e.into()),
                        _ => {}
                    }
                }
                continue;
            }
            let used = match entry.metadata().and_then(|m| m.modified()) {
                Ok(used) => used,
                Err(e) if gone(&e) => continue,
                Err(e) => return Err(e.into()),
            };
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
            match fs::remove_dir_all(&path) {
                Err(e) if !gone(&e) => {
                    return Err(anyhow!("cannot remove {}: {e}", path.display()))
                }
                _ => {}
            }
            total -= size;
            removed += 1;
        }
        Ok((removed, total))
    }
}

/// The process that makes a temporary entry `.tmp-<key>-<pid>-<thread>`.
fn temporary_entry_pid(rest: &str) -> Option<i32> {
    rest.split('-').nth(1)?.parse().ok()
}

/// Refuses `dir` unless it is a real directory of this user's that group
/// and others cannot write.
fn only_ours(dir: &Path) -> Result<()> {
    let meta = fs::symlink_metadata(dir)
        .with_context(|| format!("cannot read the layer cache {}", dir.display()))?;
    let me = euid();
    if !meta.file_type().is_dir() {
        bail!(
            "the layer cache {} is not a directory (a symlink?); refusing it",
            dir.display()
        );
    }
    if meta.uid() != me {
        bail!(
            "the layer cache {} belongs to uid {}, not to this user (uid {me}): whoever can \
             write it could change the layers of every image built from it; use a cache of \
             your own",
            dir.display(),
            meta.uid()
        );
    }
    if meta.mode() & 0o022 != 0 {
        bail!(
            "the layer cache {} can be written by its group or others (mode {:o}): they could \
             change the layers of every image built from it; `chmod go-w` it, or use a cache \
             of your own",
            dir.display(),
            meta.mode() & 0o7777
        );
    }
    Ok(())
}

/// Opens a file of an entry: a regular file of this user's, never a
/// symlink followed.
fn open_ours(path: &Path) -> io::Result<File> {
    let file = fs::OpenOptions::new()
        .read(true)
        // Nor a FIFO waited on.
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() || meta.uid() != euid() {
        return Err(io::Error::other("not a regular file of ours"));
    }
    Ok(file)
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

fn read_meta(entry: &Path) -> Option<Meta> {
    let mut bytes = Vec::new();
    open_ours(&entry.join("meta.json"))
        .ok()?
        .take(MAX_META)
        .read_to_end(&mut bytes)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Links (or copies) the entry's blob `from` to `to` and checks there that
/// it hashes to `digest` (which fixes its size too); leaves nothing at `to`
/// when not.
fn place_checked(from: &Path, to: &Path, digest: &Digest) -> bool {
    let _ = fs::remove_file(to);
    // A link shares the entry blob's inode, so what is checked at `to` is
    // the entry's file itself: a regular file of ours (a symlink links as a
    // symlink, and is refused) with the right digest.
    let placed = fs::hard_link(from, to).or_else(|_| fs::copy(from, to).map(|_| ()));
    let good = placed.is_ok()
        && open_ours(to).is_ok()
        && Digest::of_file(to).is_ok_and(|got| got == *digest);
    if !good {
        let _ = fs::remove_file(to);
    }
    good
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
    // Digits and dots only: never negative or NaN; too many digits give
    // infinity, which is out of range too. u64::MAX rounds up to 2^64 as an
    // f64, so 2^64 and up are refused.
    let bytes = number * (1u64 << shift) as f64;
    if bytes >= u64::MAX as f64 {
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
        assert!(parse_size("-5").is_err());
        assert_eq!(parse_size("3T").unwrap(), 3 << 40);
        assert_eq!(parse_size("16777215T").unwrap(), 16_777_215 << 40);
        assert!(parse_size("16777216T").is_err(), "2^64");
        assert!(parse_size(&"9".repeat(400)).is_err(), "infinite");
    }

    /// The keys of one input, pinned. When layer bytes change (the
    /// pinned-digest test in tests/build_options.rs fails), FORMAT or the
    /// encoder's name must change too, and with them these keys, so that
    /// entries of earlier releases are never served under the new bytes'
    /// names. The zlib-rs fallback writes other bytes, so its gzip key
    /// differs. (nixoci's version is part of the key too.)
    #[test]
    fn keys_change_with_the_format_and_the_gzip_encoder() {
        let paths = ["/nix/store/0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a-a".to_string()];
        let hashes = [Some(
            Hash::parse("sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=", None).unwrap(),
        )];
        let owner = Owner::numeric_root(1);
        let key = |c| LayerCache::key(&paths, &hashes, c, &owner).unwrap();
        #[cfg(feature = "libdeflate")]
        let gzip = "704ed4388406502167bb114687eb53622f282b39ccaf7781a99f92f083095e38";
        #[cfg(not(feature = "libdeflate"))]
        let gzip = "a81e8ccf47565cd56ec8240f2be06b0cd45f7e609f80c8d05cbe194e81765af8";
        assert_eq!(key(Compression::Gzip), gzip);
        assert_eq!(
            key(Compression::Zstd),
            "93e72f16e1a3a13633f7d30fb46e54cb07dd1fa500cf538b2e2291e16e8200ea"
        );
    }
}
