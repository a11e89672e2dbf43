//! Provenance from the derivation graph (`nixoci verify --drv`): every
//! fixed-output derivation an image's build reads, classified against the
//! pins in `mirrors/*.toml`. Fixed-output derivations are the only places a
//! Nix build may reach the network, so this lists everything the build
//! reads from outside the store, and where from.

use std::path::PathBuf;

use anyhow::{bail, Result};
use serde::Serialize;

use super::{read_manifest, Kind, Manifest};
use crate::nix::drv::{self, HashMode};
use crate::nix::Hash;

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

struct Pin {
    label: String,
    mirror: Option<String>,
    mode: HashMode,
    hash: Hash,
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
                mode,
                hash: Hash::parse(&s.hash, None)
                    .map_err(|e| anyhow::anyhow!("{label}: source {}: {e}", s.name))?,
            });
        }
        for f in &m.fods {
            pins.push(Pin {
                label: format!("{label}:{}", f.name),
                mirror: None,
                mode: if f.output_hash_mode == "flat" {
                    HashMode::Flat
                } else {
                    HashMode::Recursive
                },
                hash: Hash::parse(&f.output_hash, None)
                    .map_err(|e| anyhow::anyhow!("{label}: fod {}: {e}", f.name))?,
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

/// Classifies every fixed-output derivation in the closure of `roots`.
pub fn classify(store_dir: &str, roots: &[String], manifests: &[PathBuf]) -> Result<Vec<Fetch>> {
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
    for (path, drv) in drv::closure(store_dir, roots)? {
        let Some((mode, hash)) = drv.fixed_output()? else {
            continue;
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
        let same = |p: &Pin| p.mode == mode && p.hash == hash;
        let mirror_pins: Vec<&Pin> = pins
            .iter()
            .filter(|p| {
                p.mirror
                    .as_ref()
                    .is_some_and(|m| urls.iter().any(|u| normalize_url(u) == *m))
            })
            .collect();
        let (class, detail) = if let Some(pin) = mirror_pins.iter().find(|p| same(p)) {
            (Class::Mirrored, pin.label.clone())
        } else if let Some(pin) = mirror_pins.first() {
            (
                Class::Unpinned,
                format!(
                    "fetched from the mirror of {}, but its hash is not that pin's ({})",
                    pin.label, pin.hash
                ),
            )
        } else if let Some(pin) = pins.iter().find(|p| same(p)) {
            if urls.is_empty() {
                (Class::NetworkBuild, pin.label.clone())
            } else {
                (Class::PinnedUpstream, pin.label.clone())
            }
        } else {
            (Class::Unpinned, "no manifest pins this hash".to_string())
        };
        fetches.push(Fetch {
            name: drv.name(),
            drv: path,
            rev: drv.attr("rev").filter(|r| !r.is_empty()),
            urls,
            mode,
            algo: hash.algo.name(),
            hash: hash.to_sri(),
            class,
            detail,
        });
    }
    fetches.sort_by(|a, b| (a.class as u8, &a.name).cmp(&(b.class as u8, &b.name)));
    Ok(fetches)
}

/// The report: one block per fixed-output derivation, then the counts.
/// Refuses the fetches not proven to come from the mirrors: the unpinned
/// ones, and the upstream ones unless `allow_upstream`.
pub fn refuse_unproven(fetches: &[Fetch], allow_upstream: bool) -> Result<()> {
    let refused: Vec<&str> = fetches
        .iter()
        .filter(|f| {
            f.class == Class::Unpinned || (f.class == Class::PinnedUpstream && !allow_upstream)
        })
        .map(|f| f.drv.as_str())
        .collect();
    if refused.is_empty() {
        return Ok(());
    }
    bail!(
        "{} fixed-output derivation(s) not proven to come from the mirrors{}: {}",
        refused.len(),
        if allow_upstream {
            ""
        } else {
            " (pinned upstream ones pass with --allow-upstream)"
        },
        refused.join(" ")
    )
}

pub fn render(fetches: &[Fetch]) -> String {
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
