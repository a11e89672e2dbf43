//! Nix formats: store paths, nix32, hash spellings (SRI, nix32, hex) and the NAR
//! serialisation used for `narHash`, and derivation files ([`drv`]).
//!
//! Everything nixoci knows about Nix's own byte formats lives here, so that a
//! complete implementation (such as `nix-compat`) could replace it in one place.

pub mod drv;

use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use base64::Engine as _;
use sha2::Digest as _;

use crate::digest::hex;

/// The store directory used when none is given.
pub const DEFAULT_STORE_DIR: &str = "/nix/store";

/// Characters Nix allows in the name part of a store path.
fn is_name_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"+-._?=".contains(&c)
}

/// The nix32 alphabet (base32 without e, o, u, t).
const NIX32_ALPHABET: &[u8] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// Checks that `path` is `<store_dir>/<32 nix32 chars>-<name>` with nothing
/// after the name; the error explains what is wrong.
pub fn validate_store_path(store_dir: &str, path: &str) -> Result<()> {
    let rest = path
        .strip_prefix(store_dir)
        .and_then(|r| r.strip_prefix('/'))
        .ok_or_else(|| anyhow!("`{path}` is not inside the store directory {store_dir}"))?;
    let bytes = rest.as_bytes();
    if bytes.len() < 34 || bytes[32] != b'-' {
        bail!("`{path}` is not a store path (expected {store_dir}/<32-char hash>-<name>)");
    }
    if !bytes[..32].iter().all(|c| NIX32_ALPHABET.contains(c)) {
        bail!("`{path}` has an invalid hash part");
    }
    if !bytes[33..].iter().all(|&c| is_name_char(c)) {
        bail!("`{path}` has a name with characters Nix does not allow, or a sub-path");
    }
    Ok(())
}

/// The name part of a store path (after `<hash>-`).
pub fn store_name(path: &str) -> &str {
    let base = path.rsplit('/').next().unwrap_or(path);
    base.split_once('-').map_or(base, |(_, name)| name)
}

/// Every store path mentioned in `text` (e.g. `/nix/store/…-bash/bin/bash` gives
/// `/nix/store/…-bash`), in order of appearance, without duplicates.
pub fn store_paths_in(store_dir: &str, text: &str) -> Vec<String> {
    let prefix = format!("{}/", store_dir.trim_end_matches('/'));
    let mut found: Vec<String> = Vec::new();
    let mut search_from = 0;
    while let Some(pos) = text[search_from..].find(&prefix) {
        let start = search_from + pos;
        let after = &text.as_bytes()[start + prefix.len()..];
        let name_len = after.iter().take_while(|&&c| is_name_char(c)).count();
        let candidate = &text[start..start + prefix.len() + name_len];
        if validate_store_path(store_dir, candidate).is_ok()
            && !found.iter().any(|f| f == candidate)
        {
            found.push(candidate.to_string());
        }
        search_from = start + prefix.len();
    }
    found
}

/// The store path on disk that `candidate` (a greedy match of store-path
/// characters, as in `…-lib-1.0sha256:…` inside a database) starts with:
/// Nix finds references by their hash part, so a name may run on into
/// other text. None when no such path exists.
pub fn existing_store_path(store_dir: &str, candidate: &str) -> Option<String> {
    let shortest = store_dir.trim_end_matches('/').len() + 1 + 32 + 2;
    let mut end = candidate.len();
    while end >= shortest {
        let prefix = &candidate[..end];
        if validate_store_path(store_dir, prefix).is_ok() && fs::symlink_metadata(prefix).is_ok() {
            return Some(prefix.to_string());
        }
        end -= 1;
    }
    None
}

/// Every store path a file mentions, read in chunks (any size, bounded
/// memory): consecutive chunks overlap by the longest possible store path,
/// so a path across a chunk boundary is found too.
pub fn store_paths_in_file(store_dir: &str, path: &Path) -> io::Result<Vec<String>> {
    const CHUNK: usize = 1 << 20;
    // The store dir, `/`, the 32-character hash, `-` and a 211-byte name.
    let overlap = store_dir.len() + 1 + 32 + 1 + 211;
    let mut file = fs::File::open(path)?;
    let mut window: Vec<u8> = Vec::with_capacity(CHUNK + overlap);
    let mut found: Vec<String> = Vec::new();
    loop {
        let keep = window.len().min(overlap);
        window.drain(..window.len() - keep);
        let before = window.len();
        window.resize(before + CHUNK, 0);
        let n = file.read(&mut window[before..])?;
        window.truncate(before + n);
        if n == 0 {
            break;
        }
        for p in store_paths_in(store_dir, &String::from_utf8_lossy(&window)) {
            if !found.contains(&p) {
                found.push(p);
            }
        }
    }
    Ok(found)
}

/// The hash algorithms that appear in pins and lock files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashAlgo {
    Sha1,
    Sha256,
    Sha512,
}

impl HashAlgo {
    pub fn name(self) -> &'static str {
        match self {
            HashAlgo::Sha1 => "sha1",
            HashAlgo::Sha256 => "sha256",
            HashAlgo::Sha512 => "sha512",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        match name {
            "sha1" => Some(HashAlgo::Sha1),
            "sha256" => Some(HashAlgo::Sha256),
            "sha512" => Some(HashAlgo::Sha512),
            _ => None,
        }
    }

    fn len(self) -> usize {
        match self {
            HashAlgo::Sha1 => 20,
            HashAlgo::Sha256 => 32,
            HashAlgo::Sha512 => 64,
        }
    }
}

/// A hash with its algorithm, parsed from any spelling Nix accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hash {
    pub algo: HashAlgo,
    pub bytes: Vec<u8>,
}

impl Hash {
    pub fn sha256(bytes: [u8; 32]) -> Self {
        Hash {
            algo: HashAlgo::Sha256,
            bytes: bytes.to_vec(),
        }
    }

    /// Parses `sha256-<base64>` (SRI), `sha256:<nix32|hex|base64>`, or a bare
    /// digest when `default_algo` is given (as in the registration format).
    pub fn parse(text: &str, default_algo: Option<HashAlgo>) -> Result<Hash> {
        let text = text.trim();
        let (algo, digest, sri) = if let Some((name, rest)) = text.split_once('-') {
            match HashAlgo::from_name(name) {
                Some(a) => (a, rest, true),
                None => bail!("unknown hash algorithm in `{text}`"),
            }
        } else if let Some((name, rest)) = text.split_once(':') {
            let a = HashAlgo::from_name(name)
                .ok_or_else(|| anyhow!("unknown hash algorithm in `{text}`"))?;
            (a, rest, false)
        } else {
            let a =
                default_algo.ok_or_else(|| anyhow!("hash `{text}` does not name its algorithm"))?;
            (a, text, false)
        };
        let want = algo.len();
        let bytes = if sri {
            decode_base64(digest)
        } else if digest.len() == want * 2 && digest.bytes().all(|c| c.is_ascii_hexdigit()) {
            decode_hex(digest)
        } else if digest.len() == nix32_len(want) {
            nix_base32::from_nix_base32(digest)
        } else {
            decode_base64(digest)
        };
        match bytes {
            Some(b) if b.len() == want => Ok(Hash { algo, bytes: b }),
            _ => bail!(
                "`{text}` is not a valid {} hash (SRI, nix32 or hex)",
                algo.name()
            ),
        }
    }

    /// `sha256-<base64>`, the form Nix prints in `hash = "…"` attributes.
    pub fn to_sri(&self) -> String {
        format!(
            "{}-{}",
            self.algo.name(),
            base64::engine::general_purpose::STANDARD.encode(&self.bytes)
        )
    }

    /// `sha256:<nix32>`, the form of `narHash` in exportReferencesGraph.
    pub fn to_nix32(&self) -> String {
        format!(
            "{}:{}",
            self.algo.name(),
            nix_base32::to_nix_base32(&self.bytes)
        )
    }

    pub fn to_hex(&self) -> String {
        hex(&self.bytes)
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_sri())
    }
}

fn nix32_len(bytes: usize) -> usize {
    (bytes * 8).div_ceil(5)
}

fn decode_base64(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The store path of a fixed-output derivation's output, from its name and
/// declared hash (Nix's `makeFixedOutputPath`, for outputs without references).
pub fn fixed_output_path(store_dir: &str, name: &str, hash: &Hash, recursive: bool) -> String {
    let fingerprint = if recursive && hash.algo == HashAlgo::Sha256 {
        format!("source:sha256:{}:{store_dir}:{name}", hash.to_hex())
    } else {
        let inner = format!(
            "fixed:out:{}{}:{}:",
            if recursive { "r:" } else { "" },
            hash.algo.name(),
            hash.to_hex()
        );
        let inner_hash = hex(&sha2::Sha256::digest(inner.as_bytes()));
        format!("output:out:sha256:{inner_hash}:{store_dir}:{name}")
    };
    store_path_of_fingerprint(store_dir, name, &fingerprint)
}

/// The store path of a `builtins.toFile` text (Nix's `makeTextPath`): its
/// content's SHA-256 and the store paths it refers to (sorted).
pub fn text_path(store_dir: &str, name: &str, sha256: &[u8; 32], references: &[String]) -> String {
    let mut kind = "text".to_string();
    for reference in references {
        kind.push(':');
        kind.push_str(reference);
    }
    let fingerprint = format!("{kind}:sha256:{}:{store_dir}:{name}", hex(sha256));
    store_path_of_fingerprint(store_dir, name, &fingerprint)
}

/// `<store>/<hash>-<name>`, the hash being the fingerprint's SHA-256 folded
/// to 20 bytes, in nix32.
fn store_path_of_fingerprint(store_dir: &str, name: &str, fingerprint: &str) -> String {
    let digest = sha2::Sha256::digest(fingerprint.as_bytes());
    let mut compressed = [0u8; 20];
    for (i, b) in digest.iter().enumerate() {
        compressed[i % 20] ^= b;
    }
    format!(
        "{store_dir}/{}-{name}",
        nix_base32::to_nix_base32(&compressed)
    )
}

/// A `Write` that feeds SHA-256 and counts bytes: the sink of a NAR hash.
#[derive(Default)]
pub struct Sha256Counter {
    hasher: sha2::Sha256,
    count: u64,
}

impl Sha256Counter {
    pub fn finish(self) -> ([u8; 32], u64) {
        (self.hasher.finalize().into(), self.count)
    }
}

impl Write for Sha256Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.hasher.update(buf);
        self.count += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Streaming NAR serialiser. The caller drives it in NAR order (directory
/// entries sorted by name bytes); file contents arrive in pieces, so a file is
/// never held in memory.
pub struct NarEncoder<W: Write> {
    out: W,
    pending_padding: u64,
}

impl<W: Write> NarEncoder<W> {
    pub fn new(mut out: W) -> io::Result<Self> {
        write_nar_str(&mut out, b"nix-archive-1")?;
        Ok(NarEncoder {
            out,
            pending_padding: 0,
        })
    }

    pub fn into_inner(self) -> W {
        self.out
    }

    fn strs(&mut self, items: &[&[u8]]) -> io::Result<()> {
        for item in items {
            write_nar_str(&mut self.out, item)?;
        }
        Ok(())
    }

    /// Opens a directory node; entries follow, then `close_node`.
    pub fn directory(&mut self) -> io::Result<()> {
        self.strs(&[b"(", b"type", b"directory"])
    }

    /// Opens a directory entry; its node follows, then `close_entry`.
    pub fn entry(&mut self, name: &[u8]) -> io::Result<()> {
        self.strs(&[b"entry", b"(", b"name", name, b"node"])
    }

    pub fn close_entry(&mut self) -> io::Result<()> {
        self.strs(&[b")"])
    }

    pub fn close_node(&mut self) -> io::Result<()> {
        self.strs(&[b")"])
    }

    pub fn symlink(&mut self, target: &[u8]) -> io::Result<()> {
        self.strs(&[b"(", b"type", b"symlink", b"target", target, b")"])
    }

    /// Opens a regular file of `size` bytes; send exactly that many bytes with
    /// `contents`, then call `finish_regular`.
    pub fn regular(&mut self, executable: bool, size: u64) -> io::Result<()> {
        self.strs(&[b"(", b"type", b"regular"])?;
        if executable {
            self.strs(&[b"executable", b""])?;
        }
        self.strs(&[b"contents"])?;
        self.out.write_all(&size.to_le_bytes())?;
        self.pending_padding = padding_for(size);
        Ok(())
    }

    pub fn contents(&mut self, data: &[u8]) -> io::Result<()> {
        self.out.write_all(data)
    }

    pub fn finish_regular(&mut self) -> io::Result<()> {
        let pad = [0u8; 8];
        self.out.write_all(&pad[..self.pending_padding as usize])?;
        self.pending_padding = 0;
        self.close_node()
    }
}

fn padding_for(len: u64) -> u64 {
    (8 - len % 8) % 8
}

fn write_nar_str<W: Write>(out: &mut W, s: &[u8]) -> io::Result<()> {
    out.write_all(&(s.len() as u64).to_le_bytes())?;
    out.write_all(s)?;
    out.write_all(&[0u8; 8][..padding_for(s.len() as u64) as usize])
}

/// Whether a file mode counts as executable for NAR (any x bit for the owner).
pub fn is_executable(mode: u32) -> bool {
    mode & 0o100 != 0
}

/// Serialises the tree at `path` as a NAR into `out`, reading every file once.
/// `on_bytes` is told how many file bytes were read, for progress.
pub fn dump_path<W: Write>(path: &Path, out: W, on_bytes: &mut dyn FnMut(u64)) -> io::Result<W> {
    let mut nar = NarEncoder::new(out)?;
    let mut buf = vec![0u8; 256 * 1024];
    dump_node(&mut nar, path, &mut buf, on_bytes)?;
    Ok(nar.into_inner())
}

fn dump_node<W: Write>(
    nar: &mut NarEncoder<W>,
    path: &Path,
    buf: &mut [u8],
    on_bytes: &mut dyn FnMut(u64),
) -> io::Result<()> {
    let meta = fs::symlink_metadata(path)?;
    let kind = meta.file_type();
    if kind.is_symlink() {
        let target = fs::read_link(path)?;
        nar.symlink(target.as_os_str().as_bytes())
    } else if kind.is_dir() {
        nar.directory()?;
        let mut names: Vec<PathBuf> = fs::read_dir(path)?
            .map(|e| e.map(|e| PathBuf::from(e.file_name())))
            .collect::<io::Result<_>>()?;
        names.sort_by(|a, b| a.as_os_str().as_bytes().cmp(b.as_os_str().as_bytes()));
        for name in names {
            nar.entry(name.as_os_str().as_bytes())?;
            dump_node(nar, &path.join(&name), buf, on_bytes)?;
            nar.close_entry()?;
        }
        nar.close_node()
    } else if kind.is_file() {
        nar.regular(is_executable(meta.permissions().mode()), meta.len())?;
        let mut file = fs::File::open(path)?;
        let mut left = meta.len();
        while left > 0 {
            let n = file.read(buf)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{} shrank while it was read", path.display()),
                ));
            }
            let n = n.min(left as usize);
            nar.contents(&buf[..n])?;
            on_bytes(n as u64);
            left -= n as u64;
        }
        nar.finish_regular()
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} is neither a file, a directory nor a symlink; NAR cannot hold it",
                path.display()
            ),
        ))
    }
}

/// The size of the NAR of `path`, from metadata alone (no file is read).
pub fn nar_size(path: &Path) -> io::Result<u64> {
    fn padded(len: u64) -> u64 {
        8 + len + padding_for(len)
    }
    fn node(path: &Path) -> io::Result<u64> {
        let meta = fs::symlink_metadata(path)?;
        let kind = meta.file_type();
        // "(" "type" <kind> … ")"
        let frame = padded(1) + padded(4) + padded(1);
        Ok(if kind.is_symlink() {
            let target = fs::read_link(path)?;
            frame + padded(7) + padded(6) + padded(target.as_os_str().len() as u64)
        } else if kind.is_dir() {
            let mut total = frame + padded(9);
            for entry in fs::read_dir(path)? {
                let entry = entry?;
                // "entry" "(" "name" <name> "node" <node> ")"
                total += padded(5)
                    + padded(1)
                    + padded(4)
                    + padded(entry.file_name().len() as u64)
                    + padded(4)
                    + node(&entry.path())?
                    + padded(1);
            }
            total
        } else {
            let exec = if is_executable(meta.permissions().mode()) {
                padded(10) + padded(0)
            } else {
                0
            };
            frame + padded(7) + exec + padded(8) + padded(meta.len())
        })
    }
    Ok(padded(13) + node(path)?)
}

/// The NAR SHA-256 and NAR size of the tree at `path`, as `nix hash path`
/// gives. Reading the tree and hashing run on two threads, so reads overlap
/// the hashing.
pub fn nar_hash_path(path: &Path, on_bytes: &mut dyn FnMut(u64)) -> io::Result<(Hash, u64)> {
    let hasher = dump_path(path, crate::digest::BackgroundSha256::spawn()?, on_bytes)?;
    let (digest, size) = hasher.finish()?;
    Ok((Hash::sha256(digest), size))
}

/// The flat hash of a file's bytes (`nix hash file`; npm's sha512 integrity).
pub fn flat_hash_file(
    path: &Path,
    algo: HashAlgo,
    on_bytes: &mut dyn FnMut(u64),
) -> io::Result<Hash> {
    fn digest<D: sha2::Digest>(path: &Path, on_bytes: &mut dyn FnMut(u64)) -> io::Result<Vec<u8>> {
        let mut file = fs::File::open(path)?;
        let mut hasher = D::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                return Ok(hasher.finalize().to_vec());
            }
            hasher.update(&buf[..n]);
            on_bytes(n as u64);
        }
    }
    let bytes = match algo {
        HashAlgo::Sha256 => digest::<sha2::Sha256>(path, on_bytes)?,
        HashAlgo::Sha512 => digest::<sha2::Sha512>(path, on_bytes)?,
        HashAlgo::Sha1 => return Err(io::Error::other("sha1 file hashes are not supported")),
    };
    Ok(Hash { algo, bytes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_paths_in_a_file_across_chunk_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("script");
        let path = format!("/nix/store/{}-bash-5.2", "a".repeat(32));
        let mut bytes = vec![b'x'; (1 << 20) - 20];
        bytes.extend_from_slice(path.as_bytes());
        bytes.extend_from_slice(b"/bin/bash\n");
        bytes.extend(std::iter::repeat_n(b'y', 3 << 20));
        bytes.extend_from_slice(path.as_bytes());
        fs::write(&file, bytes).unwrap();
        assert_eq!(
            store_paths_in_file("/nix/store", &file).unwrap(),
            vec![path]
        );
    }

    #[test]
    fn hash_spellings_round_trip() {
        let sri = "sha256-pVQ34cZYX3hlk6hF1aZ/n32xMqTF4Jmp0G0VGDU7iXc=";
        let h = Hash::parse(sri, None).unwrap();
        assert_eq!(h.to_sri(), sri);
        // The nix32 form quoted in the deployment reference, checked there with nix-hash.
        assert_eq!(
            h.to_nix32(),
            "sha256:0xw97csih5bds2lrkq65lhrb2zczgykdaid8jdjphpsqqvhkfm55"
        );
        assert_eq!(Hash::parse(&h.to_nix32(), None).unwrap(), h);
        assert_eq!(
            Hash::parse(&format!("sha256:{}", h.to_hex()), None).unwrap(),
            h
        );
        assert_eq!(Hash::parse(&h.to_hex(), Some(HashAlgo::Sha256)).unwrap(), h);
        assert!(h.to_hex().starts_with("a55437e1"));
        assert!(Hash::parse("sha256-short", None).is_err());
        assert!(Hash::parse("md5:abc", None).is_err());
    }

    #[test]
    fn store_path_validation() {
        let good = "/nix/store/wd0ys9snp82b5v5j4pgp5wfhnfjhl2vm-a";
        assert!(validate_store_path(DEFAULT_STORE_DIR, good).is_ok());
        assert!(validate_store_path(DEFAULT_STORE_DIR, &format!("{good}/bin")).is_err());
        assert!(validate_store_path(DEFAULT_STORE_DIR, "/nix/store/short-a").is_err());
        assert!(validate_store_path(DEFAULT_STORE_DIR, "/usr/bin").is_err());
    }

    #[test]
    fn finds_store_paths_in_text() {
        let text = "PATH=/nix/store/wd0ys9snp82b5v5j4pgp5wfhnfjhl2vm-a/bin:/nix/store/s22ggbj3jamkv6vwp28ggpl02yblm65w-b-1.0/x /nix/store/wd0ys9snp82b5v5j4pgp5wfhnfjhl2vm-a";
        assert_eq!(
            store_paths_in(DEFAULT_STORE_DIR, text),
            vec![
                "/nix/store/wd0ys9snp82b5v5j4pgp5wfhnfjhl2vm-a",
                "/nix/store/s22ggbj3jamkv6vwp28ggpl02yblm65w-b-1.0"
            ]
        );
    }

    #[test]
    fn nar_size_from_metadata_equals_the_serialised_size() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("a/empty")).unwrap();
        fs::write(dir.path().join("a/file"), b"12345").unwrap();
        fs::write(dir.path().join("exe"), b"#!/bin/sh\n").unwrap();
        fs::set_permissions(dir.path().join("exe"), fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("a/file", dir.path().join("link")).unwrap();
        let (_, size) = nar_hash_path(dir.path(), &mut |_| {}).unwrap();
        assert_eq!(nar_size(dir.path()).unwrap(), size);
    }

    #[test]
    fn nar_of_a_small_file_matches_the_format() {
        let mut nar = NarEncoder::new(Vec::new()).unwrap();
        nar.regular(false, 3).unwrap();
        nar.contents(b"hi\n").unwrap();
        nar.finish_regular().unwrap();
        let bytes = nar.into_inner();
        // 13-byte magic padded to 16, then "(" "type" "regular" "contents" <3 bytes padded> ")".
        assert_eq!(bytes.len(), 8 + 16 + (8 + 8) * 4 + 8 + 8 + 8 + 8);
        assert_eq!(&bytes[8..21], b"nix-archive-1");
    }
}
