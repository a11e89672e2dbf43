//! The input sources of a derivation graph (`inputSrcs`): the store paths
//! that evaluation itself added. They are files of the evaluated repository
//! or of nixpkgs, `builtins.toFile` texts, and whatever `builtins.fetchurl`,
//! `fetchTarball`, `fetchGit`, `fetchTree` and flake inputs fetched. No
//! derivation fetches them, so the fixed-output classification cannot see
//! them; `verify --drv` proves each one here instead:
//! - a copy of a trusted source tree (the repository, a locked flake input
//!   found in the store, or a tree named on the command line): every file,
//!   symlink and directory of the store path is in the tree, byte for byte
//!   (a filtered copy, as `lib.cleanSource` makes, is a subset);
//! - a text the evaluation wrote: its store path is the `builtins.toFile`
//!   path of its own content and references;
//! - a fetch pinned by a manifest (its NAR or flat hash);
//! - otherwise an unpinned evaluation fetch, which fails the check.
//!
//! Trees are read without following symlinks: a symlink in a source is
//! compared as a link, never entered.

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsString;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;

use super::provenance::Pin;
use crate::nix::drv::HashMode;
use crate::nix::{self, Hash, HashAlgo};

/// Where an input source's content comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceClass {
    /// A copy of (part of) a trusted source tree.
    Tree,
    /// A `builtins.toFile` text, written by the evaluation.
    Text,
    /// Fetched during evaluation, with the hash a manifest pins.
    Pinned,
    /// Fetched during evaluation, and nothing vouches for it.
    Unpinned,
}

impl SourceClass {
    fn label(self) -> &'static str {
        match self {
            SourceClass::Tree => "source tree",
            SourceClass::Text => "text",
            SourceClass::Pinned => "pinned fetch",
            SourceClass::Unpinned => "UNPINNED FETCH",
        }
    }
}

/// One input source and its class.
#[derive(Debug, Serialize)]
pub struct InputSource {
    pub path: String,
    pub name: String,
    /// The NAR hash, SRI.
    pub nar_hash: String,
    pub nar_size: u64,
    pub class: SourceClass,
    /// The tree file, or the pin, that vouches for it; or why none does.
    pub detail: String,
}

/// A directory whose files are trusted sources.
#[derive(Debug)]
pub struct SourceTree {
    pub label: String,
    pub root: PathBuf,
}

/// The trusted trees: the repository, each input locked in its `flake.lock`
/// that is in the store (its path follows from the locked NAR hash, so it is
/// exactly the locked content), and `extra`.
pub fn trees(store_dir: &str, repo: &Path, extra: &[PathBuf]) -> Result<Vec<SourceTree>> {
    let mut trees = Vec::new();
    for (label, root) in std::iter::once(("repository", repo))
        .chain(extra.iter().map(|p| ("source tree", p.as_path())))
    {
        if !root.is_dir() {
            bail!("{} is not a directory (a {label})", root.display());
        }
        trees.push(SourceTree {
            label: format!("{label} {}", root.display()),
            root: root.to_path_buf(),
        });
    }
    let lock = repo.join("flake.lock");
    if lock.exists() {
        let text =
            fs::read_to_string(&lock).with_context(|| format!("cannot read {}", lock.display()))?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", lock.display()))?;
        let nodes = value["nodes"].as_object().into_iter().flatten();
        for (input, node) in nodes {
            let Some(nar_hash) = node["locked"]["narHash"].as_str() else {
                continue;
            };
            let hash = Hash::parse(nar_hash, None)
                .map_err(|e| anyhow!("{}: input {input}: {e}", lock.display()))?;
            let root = nix::fixed_output_path(store_dir, "source", &hash, true);
            if Path::new(&root).is_dir() {
                trees.push(SourceTree {
                    label: format!("flake.lock input {input}"),
                    root: PathBuf::from(root),
                });
            }
        }
    }
    Ok(trees)
}

/// Classifies every input source, in path order.
pub(super) fn classify(
    store_dir: &str,
    sources: &BTreeSet<String>,
    trees: &[SourceTree],
    pins: &[Pin],
) -> Result<Vec<InputSource>> {
    let index = if sources.is_empty() {
        HashMap::new()
    } else {
        index_trees(trees)?
    };
    let mut classified = Vec::new();
    for path in sources {
        nix::validate_store_path(store_dir, path)?;
        let store_path = Path::new(path);
        let (nar, nar_size) = nix::nar_hash_path(store_path, &mut |_| {})
            .with_context(|| format!("cannot read the input source {path}"))?;
        let name = nix::store_name(path).to_string();
        let (class, detail) = if let Some(detail) = tree_copy(store_path, &name, trees, &index)? {
            (SourceClass::Tree, detail)
        } else if is_text(store_dir, store_path, &name)? {
            (SourceClass::Text, "builtins.toFile".to_string())
        } else if let Some(pin) = matching_pin(store_path, &nar, pins)? {
            (SourceClass::Pinned, pin.label.clone())
        } else {
            (
                SourceClass::Unpinned,
                "an evaluation fetch: no file of the source trees, no toFile text and no pin matches it (a local file? name its tree with --repo or --source-tree)".to_string(),
            )
        };
        classified.push(InputSource {
            path: path.clone(),
            name,
            nar_hash: nar.to_sri(),
            nar_size,
            class,
            detail,
        });
    }
    classified.sort_by(|a, b| (a.class as u8, &a.name).cmp(&(b.class as u8, &b.name)));
    Ok(classified)
}

/// Every entry of every tree by file name (`.git` left out), walked without
/// following symlinks.
fn index_trees(trees: &[SourceTree]) -> Result<HashMap<OsString, Vec<(usize, PathBuf)>>> {
    let mut index: HashMap<OsString, Vec<(usize, PathBuf)>> = HashMap::new();
    for (i, tree) in trees.iter().enumerate() {
        let mut dirs = vec![tree.root.clone()];
        while let Some(dir) = dirs.pop() {
            let entries =
                fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))?;
            for entry in entries {
                let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
                let name = entry.file_name();
                if name == ".git" {
                    continue;
                }
                if entry.file_type()?.is_dir() {
                    dirs.push(entry.path());
                }
                index.entry(name).or_default().push((i, entry.path()));
            }
        }
    }
    Ok(index)
}

/// The tree file the store path copies, as `label: relative path`. Nix names
/// a copied path after its file name, or `source` for a whole tree.
fn tree_copy(
    store_path: &Path,
    name: &str,
    trees: &[SourceTree],
    index: &HashMap<OsString, Vec<(usize, PathBuf)>>,
) -> Result<Option<String>> {
    let roots = trees
        .iter()
        .enumerate()
        .filter(|(_, t)| name == "source" || t.root.file_name().is_some_and(|n| n == name))
        .map(|(i, t)| (i, t.root.clone()));
    let named = index
        .get(&OsString::from(name))
        .into_iter()
        .flatten()
        .cloned();
    for (tree, candidate) in roots.chain(named) {
        if is_copy_of(store_path, &candidate)
            .with_context(|| format!("cannot compare {}", candidate.display()))?
        {
            let relative = candidate
                .strip_prefix(&trees[tree].root)
                .unwrap_or(&candidate)
                .display()
                .to_string();
            let relative = if relative.is_empty() { "." } else { &relative };
            return Ok(Some(format!("{}: {relative}", trees[tree].label)));
        }
    }
    Ok(None)
}

/// Whether everything in `copy` is in `original`: the same kinds, symlink
/// targets, executable bits and bytes (directories may hold more).
fn is_copy_of(copy: &Path, original: &Path) -> io::Result<bool> {
    let mut pairs = vec![(copy.to_path_buf(), original.to_path_buf())];
    while let Some((copy, original)) = pairs.pop() {
        let have = fs::symlink_metadata(&copy)?;
        let Ok(want) = fs::symlink_metadata(&original) else {
            return Ok(false);
        };
        let (have_type, want_type) = (have.file_type(), want.file_type());
        if have_type.is_symlink() {
            if !want_type.is_symlink() || fs::read_link(&copy)? != fs::read_link(&original)? {
                return Ok(false);
            }
        } else if have_type.is_dir() {
            if !want_type.is_dir() {
                return Ok(false);
            }
            for entry in fs::read_dir(&copy)? {
                let name = entry?.file_name();
                pairs.push((copy.join(&name), original.join(&name)));
            }
        } else if have_type.is_file() {
            if !want_type.is_file()
                || have.len() != want.len()
                || nix::is_executable(have.permissions().mode())
                    != nix::is_executable(want.permissions().mode())
                || !same_bytes(&copy, &original)?
            {
                return Ok(false);
            }
        } else {
            return Ok(false);
        }
    }
    Ok(true)
}

fn same_bytes(a: &Path, b: &Path) -> io::Result<bool> {
    let (mut a, mut b) = (fs::File::open(a)?, fs::File::open(b)?);
    let (mut buf_a, mut buf_b) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let n = read_full(&mut a, &mut buf_a)?;
        if n != read_full(&mut b, &mut buf_b)? || buf_a[..n] != buf_b[..n] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

/// Fills `buf` unless the end comes first; the number of bytes read.
fn read_full(file: &mut fs::File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Whether the store path is the `builtins.toFile` path of its own content
/// and of the store paths it mentions.
fn is_text(store_dir: &str, path: &Path, name: &str) -> Result<bool> {
    let meta = fs::symlink_metadata(path)?;
    if !meta.is_file() || nix::is_executable(meta.permissions().mode()) {
        return Ok(false);
    }
    let digest = nix::flat_hash_file(path, HashAlgo::Sha256, &mut |_| {})?;
    let Ok(digest) = <[u8; 32]>::try_from(digest.bytes.as_slice()) else {
        return Ok(false);
    };
    let mut references: Vec<String> = nix::store_paths_in_file(store_dir, path)?
        .iter()
        .filter_map(|candidate| nix::existing_store_path(store_dir, candidate))
        .collect();
    references.sort();
    references.dedup();
    Ok(nix::text_path(store_dir, name, &digest, &references) == path.to_string_lossy())
}

/// The pin whose hash the fetched path has: the NAR hash for recursive
/// pins, the file's own hash for flat ones.
fn matching_pin<'a>(path: &Path, nar: &Hash, pins: &'a [Pin]) -> Result<Option<&'a Pin>> {
    let is_file = fs::symlink_metadata(path)?.is_file();
    // The file's own hash, made once per algorithm the flat pins use.
    let mut flat: Vec<Hash> = Vec::new();
    for pin in pins {
        let matches = match pin.mode {
            HashMode::Recursive => pin.hash == *nar,
            HashMode::Flat if is_file => {
                if !flat.iter().any(|h| h.algo == pin.hash.algo) {
                    flat.push(nix::flat_hash_file(path, pin.hash.algo, &mut |_| {})?);
                }
                flat.contains(&pin.hash)
            }
            HashMode::Flat | HashMode::Text => false,
        };
        if matches {
            return Ok(Some(pin));
        }
    }
    Ok(None)
}

pub fn render(sources: &[InputSource]) -> String {
    let mut out = String::new();
    for s in sources {
        out.push_str(&format!(
            "{:<16} {}\n    path  {}\n    nar   {} ({} bytes)\n    from  {}\n",
            s.class.label(),
            s.name,
            s.path,
            s.nar_hash,
            s.nar_size,
            s.detail
        ));
    }
    let count = |c: SourceClass| sources.iter().filter(|s| s.class == c).count();
    out.push_str(&format!(
        "{} input sources: {} from source trees, {} texts, {} pinned fetches, {} unpinned fetches\n",
        sources.len(),
        count(SourceClass::Tree),
        count(SourceClass::Text),
        count(SourceClass::Pinned),
        count(SourceClass::Unpinned)
    ));
    out
}
