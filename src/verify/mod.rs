//! Verify: checks, fully offline, that mirrored sources and fixed-output
//! store paths still hash to their pins in `mirrors/*.toml`: git mirrors
//! (tag → commit, NAR hash of the tree from git objects), tarballs and files
//! (flat, or NAR of the unpacked tree), fixed-output outputs in the local
//! store, and lock-file hashes (uv, npm, go.sum) against local caches.
//! Unmirrored sources are listed as such, never counted as verified.
//! `pins` makes a manifest's hashes anew with Nix (`nixoci pins update`).

pub mod git;
pub mod locks;
pub mod pins;
pub mod provenance;
pub mod sources;

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::nix::{self, Hash};
use crate::progress::Progress;

/// One `mirrors/<image>.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub image: Option<String>,
    /// The version every pin and component of the image is at.
    pub version: Option<String>,
    #[serde(default, rename = "source")]
    pub sources: Vec<Source>,
    #[serde(default, rename = "fod")]
    pub fods: Vec<Fod>,
    #[serde(default, rename = "lockfile")]
    pub lockfiles: Vec<LockFile>,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A git repository; `hash` is the NAR hash of the tree at `rev` (fetchgit).
    Git,
    /// A tarball; `hash` is flat, or the NAR hash of the unpacked tree with `unpack = true` (fetchzip).
    Tarball,
    /// A single file; `hash` is flat (fetchurl).
    File,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    pub name: String,
    pub kind: Kind,
    /// Where our copy lives; absent means the source is not mirrored.
    pub mirror: Option<String>,
    pub upstream: Option<String>,
    /// A tag (or other revision) for git sources.
    pub rev: Option<String>,
    /// The commit `rev` resolved to when the pin was made.
    pub commit: Option<String>,
    /// The pin as written in Nix (`sha256-…`; nix32 and hex are read too).
    pub hash: String,
    #[serde(default)]
    pub unpack: bool,
    /// The mirror's path under `--mirror-root`, if not derived from `mirror`.
    pub path: Option<String>,
    pub note: Option<String>,
}

/// A fixed-output derivation: its output's name and declared hash.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Fod {
    pub name: String,
    pub output_hash: String,
    #[serde(default = "recursive")]
    pub output_hash_mode: String,
    /// The platform the hash holds for, where it depends on one.
    pub system: Option<String>,
    /// The nixpkgs revision (or its prefix) the hash was made with: a build
    /// with another nixpkgs may give another output (the Nix side warns).
    pub nixpkgs: Option<String>,
    pub note: Option<String>,
}

fn recursive() -> String {
    "recursive".into()
}

/// A lock file inside a git source, checked against a local artifact cache.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockFile {
    /// The git source holding it.
    pub source: String,
    pub path: String,
    pub format: locks::Format,
    /// The cache directory under `--mirror-root` (pip/uv wheels, npm tarballs, GOMODCACHE).
    pub cache: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Hash matches the pin.
    Ok,
    /// Hash differs from the pin.
    Mismatch,
    /// The tag points at another commit than pinned.
    Moved,
    /// The mirror or artifact is not there.
    Missing,
    /// Verified, but something (submodules, checkout filters) may make fetchgit differ.
    Flagged,
    /// Not mirrored: nothing to verify offline.
    Unmirrored,
    /// Not present locally (e.g. a fixed-output path never built here): not checked.
    Absent,
}

impl Status {
    pub fn is_failure(self) -> bool {
        matches!(self, Status::Mismatch | Status::Moved | Status::Missing)
    }
}

#[derive(Debug, Serialize)]
pub struct Row {
    pub manifest: String,
    pub name: String,
    pub kind: String,
    pub status: Status,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub got: Option<String>,
}

pub struct Options<'a> {
    pub mirror_root: Option<&'a Path>,
    pub store_dir: &'a str,
    pub progress: Progress,
}

/// What `nixoci verify` was given, sorted: derivations (`nix-instantiate`
/// paths, or `nix path-info`'s `…drv!out`) and pin files. Without pin files,
/// every `mirrors/*.toml` of the current directory is checked.
pub fn split_arguments(args: &[PathBuf]) -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let (drvs, given): (Vec<PathBuf>, Vec<PathBuf>) = args
        .iter()
        .map(|p| PathBuf::from(p.to_string_lossy().trim_end_matches("!out")))
        .partition(|p| p.extension().is_some_and(|x| x == "drv"));
    if !given.is_empty() {
        return Ok((drvs, given));
    }
    let mut found: Vec<PathBuf> = fs::read_dir("mirrors")
        .map_err(|_| anyhow!("no pin files given and no ./mirrors directory"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    found.sort();
    Ok((drvs, found))
}

pub fn read_manifest(path: &Path) -> Result<Manifest> {
    let text =
        fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let manifest: Manifest =
        toml::from_str(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    for source in &manifest.sources {
        for url in source.mirror.iter().chain(source.upstream.iter()) {
            if !is_source_url(url) {
                bail!(
                    "{}: source {}: `{}` is not a URL a pin can name (http, https, git, ssh or file; no spaces or control characters)",
                    path.display(),
                    source.name,
                    url.escape_debug()
                );
            }
        }
    }
    Ok(manifest)
}

/// A URL that bills of materials and fetchers can take as it is: a known
/// scheme, a host or path after it, no whitespace or control characters
/// (which would end a field or forge a line).
fn is_source_url(url: &str) -> bool {
    let Some((scheme, rest)) = url.split_once("://") else {
        return false;
    };
    let scheme = scheme.to_ascii_lowercase();
    let known = [
        "http",
        "https",
        "git",
        "ssh",
        "file",
        "git+https",
        "git+ssh",
    ];
    known.contains(&scheme.as_str())
        && !rest.is_empty()
        && !url.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Verifies every entry of every manifest.
pub fn verify(manifests: &[PathBuf], opts: &Options) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for path in manifests {
        let manifest = read_manifest(path)?;
        let label = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut commits = std::collections::HashMap::new();
        for source in &manifest.sources {
            let (row, commit) = verify_source(source, opts);
            if let Some(c) = commit {
                commits.insert(source.name.clone(), c);
            }
            rows.push(Row {
                manifest: label.clone(),
                ..row
            });
        }
        for fod in &manifest.fods {
            rows.push(Row {
                manifest: label.clone(),
                ..verify_fod(fod, opts)
            });
        }
        for lock in &manifest.lockfiles {
            let source = manifest.sources.iter().find(|s| s.name == lock.source);
            let repo = source.and_then(|s| mirror_dir(s, opts.mirror_root));
            let commit = commits.get(&lock.source);
            for row in locks::verify(
                lock,
                repo.as_deref(),
                commit.map(String::as_str),
                opts.mirror_root,
            ) {
                rows.push(Row {
                    manifest: label.clone(),
                    ..row
                });
            }
        }
    }
    Ok(rows)
}

fn row(name: &str, kind: &str, status: Status, detail: String) -> Row {
    Row {
        manifest: String::new(),
        name: name.into(),
        kind: kind.into(),
        status,
        detail,
        expected: None,
        got: None,
    }
}

/// Compares a computed hash with a pin; mismatches read like Nix's message.
pub fn compare(name: &str, kind: &str, pin: &Hash, got: &Hash, what: &str) -> Row {
    if pin == got {
        row(
            name,
            kind,
            Status::Ok,
            format!("{what} matches {}", pin.to_sri()),
        )
    } else {
        Row {
            expected: Some(pin.to_sri()),
            got: Some(got.to_sri()),
            ..row(
                name,
                kind,
                Status::Mismatch,
                format!(
                    "hash mismatch in {what}:\n  specified: {}\n     got:    {}",
                    pin.to_sri(),
                    got.to_sri()
                ),
            )
        }
    }
}

/// The mirror's local path: `--mirror-root` joined with `path`, or with the
/// mirror URL's path (`…/mirrors/authentik.git`), or its last component.
fn mirror_dir(source: &Source, root: Option<&Path>) -> Option<PathBuf> {
    let root = root?;
    let mut candidates: Vec<String> = Vec::new();
    if let Some(p) = &source.path {
        candidates.push(p.clone());
    }
    if let Some(url) = &source.mirror {
        let path = url.split_once("://").map(|(_, rest)| rest).unwrap_or(url);
        let path = path.split_once('/').map(|(_, p)| p).unwrap_or(path);
        candidates.push(path.to_string());
        if let Some(last) = path.rsplit('/').next() {
            candidates.push(last.to_string());
        }
    }
    candidates.push(format!("{}.git", source.name));
    candidates.push(source.name.clone());
    candidates.iter().find_map(|c| under_root(root, c))
}

/// `root/relative` if it exists and stays under `root`: `relative` must be
/// plain names (no `..`, not absolute), and no symlink may lead out of the
/// root. Pins and lock files are untrusted input; the mirror root is the
/// only place verify reads from.
pub fn under_root(root: &Path, relative: &str) -> Option<PathBuf> {
    let rel = Path::new(relative);
    let plain = !relative.is_empty()
        && rel
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
    if !plain {
        return None;
    }
    let joined = root.join(rel);
    let real_root = fs::canonicalize(root).ok()?;
    let real = fs::canonicalize(&joined).ok()?;
    real.starts_with(&real_root).then_some(joined)
}

fn verify_source(source: &Source, opts: &Options) -> (Row, Option<String>) {
    let kind = format!("{:?}", source.kind).to_lowercase();
    if source.mirror.is_none() {
        let from = source.upstream.clone().unwrap_or_else(|| "upstream".into());
        return (
            row(
                &source.name,
                &kind,
                Status::Unmirrored,
                format!("not mirrored: fetched from {from}; nothing to verify offline"),
            ),
            None,
        );
    }
    let pin = match Hash::parse(&source.hash, None) {
        Ok(h) => h,
        Err(e) => {
            return (
                row(
                    &source.name,
                    &kind,
                    Status::Mismatch,
                    format!("the pin is unreadable: {e}"),
                ),
                None,
            )
        }
    };
    let Some(local) = mirror_dir(source, opts.mirror_root) else {
        let why = match opts.mirror_root {
            Some(r) => format!(
                "no mirror of {} under {}",
                source.mirror.as_deref().unwrap_or(&source.name),
                r.display()
            ),
            None => "no --mirror-root given".into(),
        };
        return (row(&source.name, &kind, Status::Missing, why), None);
    };
    match source.kind {
        Kind::Git => verify_git(source, &local, &pin, opts),
        Kind::File | Kind::Tarball => (
            verify_file(source, &local, &pin, opts)
                .unwrap_or_else(|e| row(&source.name, &kind, Status::Missing, format!("{e:#}"))),
            None,
        ),
    }
}

fn verify_git(source: &Source, repo: &Path, pin: &Hash, opts: &Options) -> (Row, Option<String>) {
    let rev = source.rev.as_deref().unwrap_or("HEAD");
    let commit = match git::resolve(repo, rev) {
        Ok(c) => c,
        Err(e) => {
            return (
                row(&source.name, "git", Status::Missing, format!("{e:#}")),
                None,
            )
        }
    };
    if let Some(pinned) = &source.commit {
        if !commit.starts_with(pinned.as_str()) && !pinned.starts_with(&commit) {
            let mut r = row(
                &source.name,
                "git",
                Status::Moved,
                format!(
                    "tag {rev} has moved: pinned at commit {pinned}, the mirror now has {commit}"
                ),
            );
            r.expected = Some(pinned.clone());
            r.got = Some(commit.clone());
            return (r, Some(commit));
        }
    }
    let bars = opts.progress.start(0, 1);
    let result = git::tree_nar_hash(repo, &commit, &|n| bars.bytes(n));
    bars.finish();
    let (got, notes) = match result {
        Ok(r) => r,
        Err(e) => {
            return (
                row(
                    &source.name,
                    "git",
                    Status::Missing,
                    format!("{rev} ({commit}): {e:#}"),
                ),
                Some(commit),
            )
        }
    };
    let mut r = compare(
        &source.name,
        "git",
        pin,
        &got,
        &format!("the tree of {rev} ({})", &commit[..12.min(commit.len())]),
    );
    if r.status == Status::Ok && (!notes.submodules.is_empty() || !notes.filters.is_empty()) {
        r.status = Status::Flagged;
        if !notes.submodules.is_empty() {
            r.detail.push_str(&format!(
                "; submodules not included (fetchgit fetches them): {}",
                notes.submodules.join(", ")
            ));
        }
        if !notes.filters.is_empty() {
            r.detail.push_str(&format!(
                "; .gitattributes checkout filters may change files: {}",
                notes.filters.join(", ")
            ));
        }
    } else if r.status == Status::Mismatch
        && (!notes.submodules.is_empty() || !notes.filters.is_empty())
    {
        r.detail.push_str("\n  (the tree has submodules or checkout filters, which fetchgit applies and this check cannot)");
    }
    (r, Some(commit))
}

fn verify_file(source: &Source, local: &Path, pin: &Hash, opts: &Options) -> Result<Row> {
    let kind = format!("{:?}", source.kind).to_lowercase();
    let bars = opts.progress.start(fs::metadata(local)?.len(), 1);
    let on_bytes = |n| bars.bytes(n);
    let result = if source.kind == Kind::Tarball && source.unpack {
        let tmp = tempfile::Builder::new()
            .prefix("nixoci-unpack-")
            .tempdir()?;
        unpack_tarball(local, tmp.path())?;
        let top = single_top_dir(tmp.path())?;
        let (h, _) = nix::nar_hash_path(&top, &mut |n| on_bytes(n))?;
        compare(&source.name, &kind, pin, &h, "the unpacked tree")
    } else {
        let h = nix::flat_hash_file(local, pin.algo, &mut |n| on_bytes(n))?;
        compare(&source.name, &kind, pin, &h, "the file")
    };
    bars.finish();
    Ok(result)
}

/// fetchzip strips a single top-level directory.
fn single_top_dir(dir: &Path) -> Result<PathBuf> {
    let entries: Vec<_> = fs::read_dir(dir)?.collect::<std::io::Result<_>>()?;
    match entries.as_slice() {
        [one] if one.file_type()?.is_dir() => Ok(one.path()),
        _ => Ok(dir.to_path_buf()),
    }
}

fn unpack_tarball(file: &Path, dest: &Path) -> Result<()> {
    let mut archive = tar::Archive::new(crate::media::decompressed(file)?);
    archive.set_preserve_permissions(true);
    let mut budget = crate::media::UnpackBudget::for_archive(file)?;
    for entry in archive.entries()? {
        let mut entry = entry?;
        budget.spend(entry.header().size()?)?;
        if !entry.unpack_in(dest)? {
            bail!(
                "{}: a member would land outside the archive",
                file.display()
            );
        }
    }
    Ok(())
}

fn verify_fod(fod: &Fod, opts: &Options) -> Row {
    let pin = match Hash::parse(&fod.output_hash, None) {
        Ok(h) => h,
        Err(e) => {
            return row(
                &fod.name,
                "fod",
                Status::Mismatch,
                format!("the outputHash is unreadable: {e}"),
            )
        }
    };
    let recursive = fod.output_hash_mode == "recursive";
    let path = nix::fixed_output_path(opts.store_dir, &fod.name, &pin, recursive);
    if fs::symlink_metadata(&path).is_err() {
        return row(
            &fod.name,
            "fod",
            Status::Absent,
            format!("{path} is not in the local store (not built here); not checked"),
        );
    }
    let bars = opts.progress.start(0, 1);
    let got = if recursive {
        nix::nar_hash_path(Path::new(&path), &mut |n| bars.bytes(n)).map(|(h, _)| h)
    } else {
        nix::flat_hash_file(Path::new(&path), pin.algo, &mut |n| bars.bytes(n))
    };
    bars.finish();
    match got {
        Ok(got) => compare(&fod.name, "fod", &pin, &got, &path),
        Err(e) => row(
            &fod.name,
            "fod",
            Status::Missing,
            format!("cannot read {path}: {e}"),
        ),
    }
}

/// The readable table.
pub fn render(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<12} {:<38} {:<8} {:<10} {}\n",
        "MANIFEST", "NAME", "KIND", "STATUS", "DETAIL"
    );
    for r in rows {
        let status = format!("{:?}", r.status).to_lowercase();
        out.push_str(&format!(
            "{:<12} {:<38} {:<8} {:<10} {}\n",
            r.manifest, r.name, r.kind, status, r.detail
        ));
    }
    let failed = rows.iter().filter(|r| r.status.is_failure()).count();
    let verified = rows
        .iter()
        .filter(|r| matches!(r.status, Status::Ok | Status::Flagged))
        .count();
    let unmirrored = rows
        .iter()
        .filter(|r| r.status == Status::Unmirrored)
        .count();
    out.push_str(&format!(
        "{verified} verified, {failed} failed, {unmirrored} unmirrored, {} not checked\n",
        rows.len() - verified - failed - unmirrored
    ));
    out
}
