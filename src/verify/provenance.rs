//! Provenance from the derivation graph (`nixoci verify --drv`): every
//! fixed-output derivation an image's build reads, classified against the
//! pins in `mirrors/*.toml`. Fixed-output derivations are the only places a
//! Nix build may reach the network, so this lists everything the build
//! reads from outside the store, and where from.

use std::path::PathBuf;

use std::collections::BTreeSet;

use anyhow::{anyhow, bail, Result};
use serde::Serialize;

use super::sources::{self, InputSource, SourceClass, SourceTree};
use super::{read_manifest, Kind, Manifest};
use crate::nix::drv::{self, HashMode};
use crate::nix::{Hash, HashAlgo};

/// Where a fixed-output derivation's content comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Class {
    /// Fetched from a mirror a manifest names, with the pinned hash.
    Mirrored,
    /// The hash is pinned in a manifest, but it is fetched from elsewhere.
    PinnedUpstream,
    /// No URL (a build that reaches the network itself, like `uv sync`),
    /// with its output hash pinned in a manifest.
    NetworkBuild,
    /// Nothing in a manifest vouches for it.
    Unpinned,
}

impl Class {
    fn label(self) -> &'static str {
        match self {
            Class::Mirrored => "mirrored",
            Class::PinnedUpstream => "pinned upstream",
            Class::NetworkBuild => "network build",
            Class::Unpinned => "UNPINNED",
        }
    }
}

/// One fixed-output derivation and its class.
#[derive(Debug, Serialize)]
pub struct Fetch {
    pub drv: String,
    pub name: String,
    pub urls: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rev: Option<String>,
    pub mode: HashMode,
    pub algo: &'static str,
    /// The output hash, SRI.
    pub hash: String,
    pub class: Class,
    /// The pin that vouches for it (`manifest:name`), or why none does.
    pub detail: String,
}

/// A hash that a manifest vouches for.
pub(super) struct Pin {
    pub(super) label: String,
    mirror: Option<String>,
    /// A `[[fod]]` entry: a build that reaches the network itself.
    network_build: bool,
    pub(super) mode: HashMode,
    pub(super) hash: Hash,
}

/// Parses a pin's hash; SHA-1 is refused: a collision can be made, so it
/// proves nothing about content.
fn pin_hash(label: &str, text: &str) -> Result<Hash> {
    let hash = Hash::parse(text, None).map_err(|e| anyhow!("{label}: {e}"))?;
    if hash.algo == HashAlgo::Sha1 {
        bail!("{label}: a SHA-1 hash cannot pin content (use sha256 or sha512)");
    }
    Ok(hash)
}

fn pins(manifests: &[(String, Manifest)]) -> Result<Vec<Pin>> {
    let mut pins = Vec::new();
    for (label, m) in manifests {
        for s in &m.sources {
            let mode = match s.kind {
                Kind::Git => HashMode::Recursive,
                Kind::Tarball if s.unpack => HashMode::Recursive,
                Kind::Tarball | Kind::File => HashMode::Flat,
            };
            pins.push(Pin {
                label: format!("{label}:{}", s.name),
                mirror: s.mirror.as_deref().map(normalize_url),
                network_build: false,
                mode,
                hash: pin_hash(&format!("{label}: source {}", s.name), &s.hash)?,
            });
        }
        for f in &m.fods {
            pins.push(Pin {
                label: format!("{label}:{}", f.name),
                mirror: None,
                network_build: true,
                mode: if f.output_hash_mode == "flat" {
                    HashMode::Flat
                } else {
                    HashMode::Recursive
                },
                hash: pin_hash(&format!("{label}: fod {}", f.name), &f.output_hash)?,
            });
        }
    }
    Ok(pins)
}

/// URLs compare without a trailing `/` and without `.git`.
fn normalize_url(url: &str) -> String {
    let url = url.trim().trim_end_matches('/');
    url.strip_suffix(".git").unwrap_or(url).to_string()
}

/// Instantiates `installable` (`FLAKE#ATTR`) with Nix in restricted mode,
/// `allowed-uris` set to the mirrors that the manifests name, and returns
/// its `.drv` path: a `builtins.fetchurl`, `fetchTarball` or `fetchGit` of
/// anything else fails the evaluation itself. `nix_args` go to `nix eval`
/// (`--override-input`, say).
pub fn instantiate_restricted(
    installable: &str,
    manifests: &[PathBuf],
    nix_args: &[String],
) -> Result<String> {
    let mut mirrors = Vec::new();
    for path in manifests {
        for source in read_manifest(path)?.sources {
            if let Some(mirror) = source.mirror {
                mirrors.push(allowed_uri_prefix(&mirror)?);
            }
        }
    }
    mirrors.sort();
    mirrors.dedup();
    let out = std::process::Command::new("nix")
        .args(["eval", "--raw", "--option", "restrict-eval", "true"])
        .args(["--option", "allowed-uris", &mirrors.join(" ")])
        .arg(format!("{installable}.drvPath"))
        .args(nix_args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| anyhow!("cannot run nix (is Nix installed?): {e}"))?;
    if !out.status.success() {
        bail!(
            "restricted evaluation of {installable} failed (fetches may only reach the mirrors: {}):\n{}",
            if mirrors.is_empty() { "none named".to_string() } else { mirrors.join(" ") },
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
    }
    let drv = String::from_utf8(out.stdout)
        .map_err(|_| anyhow!("nix eval printed a .drv path that is not UTF-8"))?;
    Ok(drv.trim().to_string())
}

/// A mirror URL as an `allowed-uris` entry, which Nix matches as a plain
/// prefix: one that ends its host, so `https://mirror.example` cannot
/// allow `https://mirror.example.evil.net`.
fn allowed_uri_prefix(mirror: &str) -> Result<String> {
    let mirror = mirror.trim();
    let rest = match mirror.split_once("://") {
        Some((_, rest)) if super::is_source_url(mirror) => rest,
        _ => bail!("mirror `{mirror}` is not a URL"),
    };
    Ok(if rest.contains('/') {
        mirror.to_string()
    } else {
        format!("{mirror}/")
    })
}

/// The whole proof of a derivation graph: its fixed-output derivations and
/// its input sources.
#[derive(Debug, Serialize)]
pub struct Report {
    pub fetches: Vec<Fetch>,
    pub sources: Vec<InputSource>,
}

/// Classifies every fixed-output derivation and every input source in the
/// closure of `roots`.
pub fn classify(
    store_dir: &str,
    roots: &[String],
    manifests: &[PathBuf],
    trees: &[SourceTree],
) -> Result<Report> {
    let manifests = manifests
        .iter()
        .map(|p| {
            let label = p
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            Ok((label, read_manifest(p)?))
        })
        .collect::<Result<Vec<_>>>()?;
    let pins = pins(&manifests)?;
    let mut fetches = Vec::new();
    let mut input_srcs = BTreeSet::new();
    drv::walk(store_dir, roots, |path, drv| {
        input_srcs.extend(drv.input_srcs.iter().cloned());
        if drv.is_impure() {
            fetches.push(Fetch {
                name: drv.name(),
                drv: path.to_string(),
                urls: Vec::new(),
                rev: None,
                mode: HashMode::Recursive,
                algo: "none",
                hash: String::new(),
                class: Class::Unpinned,
                detail: "an impure derivation (__impure): it may reach the network, and no hash pins what it gets".to_string(),
            });
            return Ok(());
        }
        let Some((mode, hash)) = drv.fixed_output()? else {
            return Ok(());
        };
        // nixpkgs' fetchurl and fetchzip use `urls`; fetchgit and
        // <nix/fetchurl.nix> use `url`.
        let mut urls: Vec<String> = drv
            .attr("urls")
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect();
        if let Some(url) = drv.attr("url").filter(|u| !u.is_empty()) {
            if !urls.contains(&url) {
                urls.push(url);
            }
        }
        let (class, detail) = classify_fetch(&pins, &urls, mode, &hash);
        fetches.push(Fetch {
            name: drv.name(),
            drv: path.to_string(),
            rev: drv.attr("rev").filter(|r| !r.is_empty()),
            urls,
            mode,
            algo: hash.algo.name(),
            hash: hash.to_sri(),
            class,
            detail,
        });
        Ok(())
    })?;
    fetches.sort_by(|a, b| (a.class as u8, &a.name).cmp(&(b.class as u8, &b.name)));
    let sources = sources::classify(store_dir, &input_srcs, trees, &pins)?;
    Ok(Report { fetches, sources })
}

/// What a fetcher really does decides its class: "mirrored" needs every URL
/// it may try to be a mirror, and a pin with its hash for one of them; a
/// fetch without URLs is a network build only where a `[[fod]]` entry pins it.
fn classify_fetch(pins: &[Pin], urls: &[String], mode: HashMode, hash: &Hash) -> (Class, String) {
    if hash.algo == HashAlgo::Sha1 {
        return (
            Class::Unpinned,
            "a SHA-1 output hash pins nothing (a collision can be made)".to_string(),
        );
    }
    let same = |p: &Pin| p.mode == mode && p.hash == *hash;
    let mirror_of = |p: &Pin| {
        p.mirror
            .as_ref()
            .is_some_and(|m| urls.iter().any(|u| normalize_url(u) == *m))
    };
    let not_mirrors: Vec<&str> = urls
        .iter()
        .filter(|u| {
            let u = normalize_url(u);
            !pins.iter().any(|p| p.mirror.as_ref() == Some(&u))
        })
        .map(String::as_str)
        .collect();
    if let Some(pin) = pins.iter().find(|p| same(p) && mirror_of(p)) {
        if not_mirrors.is_empty() {
            (Class::Mirrored, pin.label.clone())
        } else {
            (
                Class::PinnedUpstream,
                format!(
                    "{}, but it may also fetch from {}",
                    pin.label,
                    not_mirrors.join(" ")
                ),
            )
        }
    } else if let Some(pin) = pins.iter().find(|p| mirror_of(p)) {
        (
            Class::Unpinned,
            format!(
                "fetched from the mirror of {}, but its hash is not that pin's ({})",
                pin.label, pin.hash
            ),
        )
    } else if let Some(pin) = pins.iter().find(|p| same(p)) {
        if urls.is_empty() && pin.network_build {
            (Class::NetworkBuild, pin.label.clone())
        } else {
            (Class::PinnedUpstream, pin.label.clone())
        }
    } else {
        (Class::Unpinned, "no manifest pins this hash".to_string())
    }
}

/// Refuses what is not proven to come from the mirrors or the trusted
/// trees: unpinned fixed outputs and evaluation fetches, and the upstream
/// fixed outputs unless `allow_upstream`.
pub fn refuse_unproven(report: &Report, allow_upstream: bool) -> Result<()> {
    let refused: Vec<&str> = report
        .fetches
        .iter()
        .filter(|f| {
            f.class == Class::Unpinned || (f.class == Class::PinnedUpstream && !allow_upstream)
        })
        .map(|f| f.drv.as_str())
        .collect();
    let unpinned_sources: Vec<&str> = report
        .sources
        .iter()
        .filter(|s| s.class == SourceClass::Unpinned)
        .map(|s| s.path.as_str())
        .collect();
    let mut problems = Vec::new();
    if !refused.is_empty() {
        problems.push(format!(
            "{} fixed-output derivation(s) not proven to come from the mirrors{}: {}",
            refused.len(),
            if allow_upstream {
                ""
            } else {
                " (pinned upstream ones pass with --allow-upstream)"
            },
            refused.join(" ")
        ));
    }
    if !unpinned_sources.is_empty() {
        problems.push(format!(
            "{} input source(s) fetched during evaluation and not pinned: {}",
            unpinned_sources.len(),
            unpinned_sources.join(" ")
        ));
    }
    if problems.is_empty() {
        return Ok(());
    }
    bail!("{}", problems.join("; "))
}

pub fn render(report: &Report) -> String {
    let mut out = render_fetches(&report.fetches);
    out.push_str(&sources::render(&report.sources));
    out
}

fn render_fetches(fetches: &[Fetch]) -> String {
    let mut out = String::new();
    for f in fetches {
        out.push_str(&format!(
            "{:<16} {}\n    drv   {}\n",
            f.class.label(),
            f.name,
            f.drv
        ));
        for u in &f.urls {
            out.push_str(&format!("    url   {u}\n"));
        }
        if let Some(rev) = &f.rev {
            out.push_str(&format!("    rev   {rev}\n"));
        }
        let mode = match f.mode {
            HashMode::Recursive => "recursive",
            HashMode::Flat => "flat",
            HashMode::Text => "text",
        };
        out.push_str(&format!("    hash  {mode} {} {}\n", f.algo, f.hash));
        out.push_str(&format!("    pin   {}\n", f.detail));
    }
    let count = |c: Class| fetches.iter().filter(|f| f.class == c).count();
    out.push_str(&format!(
        "{} fixed-output derivations: {} mirrored, {} pinned upstream, {} network builds, {} unpinned\n",
        fetches.len(),
        count(Class::Mirrored),
        count(Class::PinnedUpstream),
        count(Class::NetworkBuild),
        count(Class::Unpinned)
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_uri_prefixes_end_the_host() {
        assert_eq!(
            allowed_uri_prefix("https://mirror.example").unwrap(),
            "https://mirror.example/"
        );
        assert_eq!(
            allowed_uri_prefix("https://forge.example/mirrors/a.git").unwrap(),
            "https://forge.example/mirrors/a.git"
        );
        for bad in ["mirror.example", "://x", "https://", "https://a b/"] {
            assert!(allowed_uri_prefix(bad).is_err(), "{bad}");
        }
    }
}
