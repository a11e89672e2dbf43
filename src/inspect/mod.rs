//! What is in an image, by store path: each path's name, version, NAR size,
//! layer and share of the image; each layer's paths and sizes; why a path
//! is there (the shortest reference chain from the image's roots, as
//! `nix why-depends` shows one); a treemap of it ([`svg`]); and what changed
//! between two images. The store paths come from the image's
//! config history (the `store paths: [...]` comments that nixoci and
//! nixpkgs write per layer), else from its attached SBOM, else from its
//! layers ([`Subject`] says which); their sizes and references from a
//! closure graph or the local store.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;

mod treemap;

pub use treemap::svg;

use crate::closure::PathInfo;
use crate::image::{history_store_paths, Image};
use crate::sbom;

/// One store path of the image.
#[derive(Debug, Clone, Serialize)]
pub struct PathRow {
    pub path: String,
    /// Name and version as `builtins.parseDrvName` splits the path's name.
    pub name: String,
    pub version: String,
    pub nar_size: u64,
    /// Index of the layer that holds it (0 is the bottom layer).
    pub layer: usize,
    /// Its NAR size over the NAR size of every store path of the image.
    pub share: f64,
    /// Its direct references among the image's paths.
    pub references: Vec<String>,
}

/// One layer of the image.
#[derive(Debug, Clone, Serialize)]
pub struct LayerRow {
    pub index: usize,
    pub digest: String,
    pub diff_id: String,
    /// The blob's size, as a registry stores and a node pulls it.
    pub compressed_size: u64,
    /// The size of its tar, when its blob was read (a local image).
    pub uncompressed_size: Option<u64>,
    pub store_paths: Vec<String>,
    /// Whether the `--base` image has this layer too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_base: Option<bool>,
}

/// What `nixoci inspect` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Store paths, biggest first (ties by path).
    pub paths: Vec<PathRow>,
    pub layers: Vec<LayerRow>,
    /// NAR size of every store path of the image.
    pub nar_size: u64,
    /// Paths no other path of the image refers to: where `--why` chains start.
    pub roots: Vec<String>,
}

/// What `inspect` and `diff` read of an image: its config, its layers and
/// its store paths, from a local image (layout or archive) or a registry.
pub struct Subject {
    /// How the user named it, for messages.
    pub name: String,
    pub config: serde_json::Value,
    pub layers: Vec<SubjectLayer>,
    /// Its store paths, each with the diff_id of the layer holding it.
    pub layer_of: BTreeMap<String, String>,
    /// Where the store paths came from, when not from the history: for
    /// the user to know what was read.
    pub note: Option<String>,
    /// A local image, kept open so that its blobs (an archive's unpacked
    /// ones too) stay readable; or the directory of downloaded layers.
    _image: Option<Image>,
    _downloads: Option<tempfile::TempDir>,
}

/// A layer of a [`Subject`].
pub struct SubjectLayer {
    pub digest: String,
    /// The blob's size.
    pub size: u64,
    /// The blob, when it is at hand (a local image, or downloaded with
    /// `--fetch-layers`): `inspect` reads it to measure the tar; `diff`
    /// never does.
    pub file: Option<PathBuf>,
}

/// The SBOM formats an image's store paths can be read from, preferred first.
const SBOM_TYPES: [&str; 2] = ["application/vnd.cyclonedx+json", "application/spdx+json"];

impl Subject {
    /// A local image: an OCI layout, an oci-archive or a docker-archive. Its
    /// store paths come from its history, else from the SBOM attached in its
    /// layout, else from its layers (at hand, so read without asking).
    pub fn local(path: &Path) -> Result<Subject> {
        let image = Image::open(path, None)?;
        let name = path.display().to_string();
        let mut found = (history_store_paths(&image.config), None);
        if found.0.is_empty() {
            let attached = SBOM_TYPES.iter().find_map(|wanted| {
                image
                    .referrers
                    .iter()
                    .find(|r| r.artifact_type == *wanted)?
                    .document()
            });
            found = match attached {
                Some(blob) => {
                    blob.verify()?;
                    let bytes = std::fs::read(&blob.file)
                        .with_context(|| format!("cannot read {}", blob.file.display()))?;
                    (
                        sbom::read_paths(&bytes)?,
                        Some(format!("{name}: its history names no store paths; they come from the SBOM attached in its layout")),
                    )
                }
                None => (
                    image.store_paths()?,
                    Some(format!("{name}: its history names no store paths and no SBOM is attached; they come from its {} layers", image.layers.len())),
                ),
            };
        }
        let layers = image
            .layers
            .iter()
            .map(|l| SubjectLayer {
                digest: l.digest.to_string(),
                size: l.size,
                file: Some(l.file.clone()),
            })
            .collect();
        Subject::new(name, image.config.clone(), layers, found, Some(image), None)
    }

    /// An image in a registry: its manifest and config, and no layer when
    /// its history names its store paths. Otherwise they come from the SBOM
    /// attached to it (through the referrers API or its fallback tag), and
    /// only with `fetch_layers` from its layers, downloaded and checked.
    pub fn remote(
        reference: &crate::registry::Reference,
        opts: &crate::registry::PushOptions,
        fetch_layers: bool,
    ) -> Result<Subject> {
        let remote = crate::registry::read::Remote::connect(reference, opts)?;
        let image = remote.image()?;
        let name = reference.to_string();
        let mut layers: Vec<SubjectLayer> = image
            .layers
            .iter()
            .map(|l| SubjectLayer {
                digest: l.digest.to_string(),
                size: l.size,
                file: None,
            })
            .collect();
        let history = history_store_paths(&image.config);
        if !history.is_empty() {
            let found = (history, None);
            return Subject::new(name, image.config, layers, found, None, None);
        }
        if let Some(sbom) = remote.sbom(&image.digest, &SBOM_TYPES)? {
            let note = format!(
                "{name}: its history names no store paths; they come from its attached SBOM ({}, found through {})",
                sbom.artifact_type, sbom.found_through
            );
            let found = (sbom::read_paths(&sbom.bytes)?, Some(note));
            return Subject::new(name, image.config, layers, found, None, None);
        }
        let total: u64 = image.layers.iter().map(|l| l.size).sum();
        if !fetch_layers {
            bail!(
                "{name}: its history names no store paths and no SBOM is attached to it (neither the referrers API nor the tag sha256-{} lists one); --fetch-layers reads them from its {} layers, downloading {}",
                image.digest.hex(),
                image.layers.len(),
                human(total)
            );
        }
        let downloads = tempfile::tempdir().context("cannot make a temporary directory")?;
        let diff_ids = crate::image::config_diff_ids(&image.config, image.layers.len())
            .with_context(|| name.clone())?;
        let mut layer_of = BTreeMap::new();
        for (index, (layer, diff_id)) in image.layers.iter().zip(&diff_ids).enumerate() {
            let file = downloads.path().join(layer.digest.hex());
            remote.blob(&layer.digest, layer.size, &file)?;
            let paths =
                crate::layer::store_paths_in_layer(&file, diff_id, crate::nix::DEFAULT_STORE_DIR)
                    .with_context(|| format!("{name}: layer {}", layer.digest))?;
            for path in paths {
                layer_of.entry(path).or_insert_with(|| diff_id.to_string());
            }
            layers[index].file = Some(file);
        }
        let note = format!(
            "{name}: its history names no store paths and no SBOM is attached; read them from its {} layers (--fetch-layers: {} downloaded)",
            image.layers.len(),
            human(total)
        );
        let found = (layer_of, Some(note));
        Subject::new(name, image.config, layers, found, None, Some(downloads))
    }

    fn new(
        name: String,
        config: serde_json::Value,
        layers: Vec<SubjectLayer>,
        (layer_of, note): (BTreeMap<String, String>, Option<String>),
        image: Option<Image>,
        downloads: Option<tempfile::TempDir>,
    ) -> Result<Subject> {
        if layer_of.is_empty() {
            bail!("{name} holds no store paths: its history names none, and neither its SBOM nor its layers have any");
        }
        Ok(Subject {
            name,
            config,
            layers,
            layer_of,
            note,
            _image: image,
            _downloads: downloads,
        })
    }
}

/// The config's `rootfs.diff_ids`, as text.
fn diff_ids_of(config: &serde_json::Value) -> Vec<String> {
    config["rootfs"]["diff_ids"]
        .as_array()
        .map(|ids| {
            ids.iter()
                .map(|d| d.as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Inspects `image`. Sizes and references come from `graph`
/// (exportReferencesGraph or `nix path-info --json`), or else from the local
/// store; `base`, when given, is the image whose layers count as shared.
pub fn inspect(image: &Subject, graph: Option<&Path>, base: Option<&Subject>) -> Result<Report> {
    let layer_of = &image.layer_of;
    let nodes = sbom::image_nodes(graph, layer_of)?;
    let diff_ids = diff_ids_of(&image.config);
    let base_layers: Option<BTreeSet<&str>> =
        base.map(|b| b.layers.iter().map(|l| l.digest.as_str()).collect());
    let mut layers = Vec::new();
    for (index, layer) in image.layers.iter().enumerate() {
        let diff_id = diff_ids.get(index).cloned().unwrap_or_default();
        let mut store_paths: Vec<String> = layer_of
            .iter()
            .filter(|(_, d)| **d == diff_id)
            .map(|(p, _)| p.clone())
            .collect();
        store_paths.sort();
        layers.push(LayerRow {
            index,
            digest: layer.digest.clone(),
            diff_id,
            compressed_size: layer.size,
            uncompressed_size: layer.file.as_deref().map(tar_size).transpose()?,
            store_paths,
            in_base: base_layers
                .as_ref()
                .map(|b| b.contains(layer.digest.as_str())),
        });
    }
    Ok(report(&nodes, layers))
}

fn report(nodes: &[PathInfo], layers: Vec<LayerRow>) -> Report {
    let layer_index: HashMap<&str, usize> = layers
        .iter()
        .flat_map(|l| l.store_paths.iter().map(move |p| (p.as_str(), l.index)))
        .collect();
    let nar_size: u64 = nodes.iter().map(|n| n.nar_size).sum();
    let referenced: BTreeSet<&str> = nodes
        .iter()
        .flat_map(|n| n.references.iter().map(String::as_str))
        .collect();
    let roots = nodes
        .iter()
        .filter(|n| !referenced.contains(n.path.as_str()))
        .map(|n| n.path.clone())
        .collect();
    let mut paths: Vec<PathRow> = nodes
        .iter()
        .map(|n| {
            let (name, version) = name_version(&n.path);
            PathRow {
                path: n.path.clone(),
                name,
                version,
                nar_size: n.nar_size,
                layer: layer_index.get(n.path.as_str()).copied().unwrap_or(0),
                share: if nar_size == 0 {
                    0.0
                } else {
                    n.nar_size as f64 / nar_size as f64
                },
                references: n.references.clone(),
            }
        })
        .collect();
    paths.sort_by(|a, b| b.nar_size.cmp(&a.nar_size).then(a.path.cmp(&b.path)));
    Report {
        paths,
        layers,
        nar_size,
        roots,
    }
}

/// The size of a layer's tar, decompressed as its bytes say.
fn tar_size(file: &Path) -> Result<u64> {
    let mut stream = crate::media::decompressed(file)?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        match stream
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", file.display()))?
        {
            0 => return Ok(total),
            n => total += n as u64,
        }
    }
}

impl Report {
    /// The shortest reference chain from one of the image's roots to `path`
    /// (a store path or a unique part of one's name), roots tried in order.
    pub fn why(&self, path: &str) -> Result<Vec<String>> {
        let target = self.find(path)?;
        let references: BTreeMap<&str, &[String]> = self
            .paths
            .iter()
            .map(|p| (p.path.as_str(), p.references.as_slice()))
            .collect();
        let mut previous: HashMap<&str, &str> = HashMap::new();
        let mut queue: VecDeque<&str> = VecDeque::new();
        for root in &self.roots {
            previous.insert(root, "");
            queue.push_back(root);
        }
        while let Some(current) = queue.pop_front() {
            if current == target {
                let mut chain = vec![current.to_string()];
                let mut at = current;
                while let Some(&before) = previous.get(at).filter(|b| !b.is_empty()) {
                    chain.push(before.to_string());
                    at = before;
                }
                chain.reverse();
                return Ok(chain);
            }
            for next in references.get(current).copied().unwrap_or_default() {
                if !previous.contains_key(next.as_str()) {
                    previous.insert(next, current);
                    queue.push_back(next);
                }
            }
        }
        Err(anyhow!("{target} is not reachable from the image's roots"))
    }

    fn find(&self, wanted: &str) -> Result<&str> {
        if let Some(row) = self.paths.iter().find(|p| p.path == wanted) {
            return Ok(&row.path);
        }
        let matches: Vec<&str> = self
            .paths
            .iter()
            .filter(|p| p.path.contains(wanted))
            .map(|p| p.path.as_str())
            .collect();
        match matches.as_slice() {
            [one] => Ok(one),
            [] => Err(anyhow!("no store path of the image matches `{wanted}`")),
            many => Err(anyhow!(
                "`{wanted}` matches {} store paths ({}); give the whole path",
                many.len(),
                many.join(", ")
            )),
        }
    }

    /// The report for people (`markdown`: a pull-request comment), the
    /// `top` biggest paths first.
    pub fn render(&self, top: Option<usize>, markdown: bool) -> String {
        let shown = top.unwrap_or(self.paths.len()).min(self.paths.len());
        let mut out = String::new();
        let heading = format!(
            "{} store paths, {} in NAR size, in {} layers",
            self.paths.len(),
            human(self.nar_size),
            self.layers.len()
        );
        let row = |cells: &[String]| {
            if markdown {
                format!("| {} |\n", cells.join(" | "))
            } else {
                format!("{}\n", cells.join("  "))
            }
        };
        if markdown {
            out.push_str(&format!("**{heading}**\n\n"));
            out.push_str(
                "| store path | version | NAR size | layer | share |\n|---|---|---:|---:|---:|\n",
            );
        } else {
            out.push_str(&format!("{heading}\n\n"));
        }
        for p in &self.paths[..shown] {
            out.push_str(&row(&[
                if markdown {
                    format!("`{}`", p.name)
                } else {
                    format!("{:<40}", p.name)
                },
                if markdown {
                    p.version.clone()
                } else {
                    format!("{:<16}", p.version)
                },
                format!("{:>10}", human(p.nar_size)),
                format!("{:>3}", p.layer),
                format!("{:>5.1}%", p.share * 100.0),
            ]));
        }
        if shown < self.paths.len() {
            out.push_str(&format!(
                "{}… and {} more\n",
                if markdown { "\n" } else { "" },
                self.paths.len() - shown
            ));
        }
        out.push('\n');
        if markdown {
            out.push_str("| layer | digest | compressed | tar | store paths | shared |\n|---:|---|---:|---:|---:|---|\n");
        }
        for l in &self.layers {
            let shared = match l.in_base {
                Some(true) => "shared",
                Some(false) => "new",
                None => "",
            };
            let (digest, compressed) = (
                &l.digest[..19.min(l.digest.len())],
                human(l.compressed_size),
            );
            let tar = l.uncompressed_size.map_or("?".to_string(), human);
            let paths = l.store_paths.len();
            out.push_str(&if markdown {
                format!("| {} | `{digest}` | {compressed} | {tar} | {paths} | {shared} |\n", l.index)
            } else {
                format!(
                    "layer {:>3}  {digest}  {compressed:>10} compressed  {tar:>10} tar  {paths} store path(s) {shared}\n",
                    l.index
                )
            });
        }
        out
    }
}

/// A store path that is in both images under one name, with another hash.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Changed {
    pub name: String,
    pub old: String,
    pub new: String,
    pub old_version: String,
    pub new_version: String,
}

/// What changed from one image to another (`nixoci diff`).
#[derive(Debug, Clone, Serialize)]
pub struct Diff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<Changed>,
    /// Layers of the new image the old one has (by digest).
    pub layers_reused: Vec<String>,
    /// Layers of the new image the old one lacks.
    pub layers_new: Vec<String>,
    /// What a node that holds the old image pulls for the new one: the new
    /// layers' compressed bytes.
    pub bytes_to_pull: u64,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && self.layers_new.is_empty()
    }

    /// The report for people (`markdown`: a pull-request comment).
    pub fn render(&self, markdown: bool) -> String {
        let mut out = String::new();
        let summary = format!(
            "{} added, {} removed, {} changed; {} layer(s) reused, {} new: {} to pull",
            self.added.len(),
            self.removed.len(),
            self.changed.len(),
            self.layers_reused.len(),
            self.layers_new.len(),
            human(self.bytes_to_pull)
        );
        let (bullet, code) = if markdown { ("- ", "`") } else { ("  ", "") };
        out.push_str(&if markdown {
            format!("**{summary}**\n")
        } else {
            format!("{summary}\n")
        });
        for (title, paths) in [("added", &self.added), ("removed", &self.removed)] {
            if !paths.is_empty() {
                out.push_str(&format!("\n{title}:\n"));
                for p in paths {
                    out.push_str(&format!("{bullet}{code}{p}{code}\n"));
                }
            }
        }
        if !self.changed.is_empty() {
            out.push_str("\nchanged:\n");
            for c in &self.changed {
                out.push_str(&format!(
                    "{bullet}{code}{}{code} {} -> {}\n",
                    c.name, c.old_version, c.new_version
                ));
            }
        }
        out
    }
}

/// Compares two images by the store paths their histories name and by
/// their layers' digests; no layer is read.
pub fn diff(old: &Subject, new: &Subject) -> Result<Diff> {
    let (old_paths, new_paths) = (&old.layer_of, &new.layer_of);
    let mut added: Vec<String> = new_paths
        .keys()
        .filter(|p| !old_paths.contains_key(*p))
        .cloned()
        .collect();
    let mut removed: Vec<String> = old_paths
        .keys()
        .filter(|p| !new_paths.contains_key(*p))
        .cloned()
        .collect();
    // A name that one path left and one path took changed; a name with
    // several paths on either side stays as added and removed.
    let by_name = |paths: &[String]| {
        let mut names: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for p in paths {
            names.entry(name_version(p).0).or_default().push(p.clone());
        }
        names
    };
    let (added_names, removed_names) = (by_name(&added), by_name(&removed));
    let mut changed = Vec::new();
    for (name, new_list) in &added_names {
        if let (Some([old_path]), [new_path]) = (
            removed_names.get(name).map(Vec::as_slice),
            new_list.as_slice(),
        ) {
            changed.push(Changed {
                name: name.clone(),
                old: old_path.clone(),
                new: new_path.clone(),
                old_version: name_version(old_path).1,
                new_version: name_version(new_path).1,
            });
        }
    }
    added.retain(|p| !changed.iter().any(|c| &c.new == p));
    removed.retain(|p| !changed.iter().any(|c| &c.old == p));
    let old_layers: BTreeSet<&str> = old.layers.iter().map(|l| l.digest.as_str()).collect();
    let (mut layers_reused, mut layers_new, mut bytes_to_pull) = (Vec::new(), Vec::new(), 0);
    for layer in &new.layers {
        let digest = layer.digest.clone();
        if old_layers.contains(digest.as_str()) {
            layers_reused.push(digest);
        } else if !layers_new.contains(&digest) {
            bytes_to_pull += layer.size;
            layers_new.push(digest);
        }
    }
    Ok(Diff {
        added,
        removed,
        changed,
        layers_reused,
        layers_new,
        bytes_to_pull,
    })
}

/// A store path's name and version, as `builtins.parseDrvName` splits them.
fn name_version(path: &str) -> (String, String) {
    let base = path.rsplit('/').next().unwrap_or_default();
    let (name, version) = sbom::parse_drv_name(base.get(33..).unwrap_or(base));
    (name.to_string(), version.to_string())
}

/// Bytes for people: B, KiB, MiB, GiB.
pub(crate) fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(path: &str, size: u64, refs: &[&str]) -> PathInfo {
        PathInfo {
            path: path.to_string(),
            nar_hash: None,
            nar_size: size,
            references: refs.iter().map(|r| r.to_string()).collect(),
        }
    }

    const A: &str = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-app-1.0";
    const B: &str = "/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-libfoo-2.3";
    const C: &str = "/nix/store/cccccccccccccccccccccccccccccccc-glibc-2.40";
    const D: &str = "/nix/store/dddddddddddddddddddddddddddddddd-bash-5.2";

    fn sample() -> Report {
        // app -> libfoo -> glibc; app -> glibc; bash -> glibc (bash is a root too).
        let nodes = vec![
            node(A, 100, &[B, C]),
            node(B, 300, &[C]),
            node(C, 500, &[]),
            node(D, 100, &[C]),
        ];
        report(&nodes, vec![])
    }

    #[test]
    fn rows_are_biggest_first_with_shares_and_parsed_names() {
        let r = sample();
        assert_eq!(r.nar_size, 1000);
        let first = &r.paths[0];
        assert_eq!(
            (first.name.as_str(), first.version.as_str()),
            ("glibc", "2.40")
        );
        assert!((first.share - 0.5).abs() < 1e-9);
        assert_eq!(r.paths[3].path, D, "ties by path");
        assert_eq!(r.roots, vec![A.to_string(), D.to_string()]);
    }

    #[test]
    fn why_is_the_shortest_chain_from_a_root() {
        let r = sample();
        assert_eq!(r.why("glibc").unwrap(), vec![A, C]);
        assert_eq!(r.why(B).unwrap(), vec![A, B]);
        assert_eq!(r.why("bash").unwrap(), vec![D]);
        assert!(r.why("nothing").is_err());
        // "-" is in every path: refused as ambiguous, naming the matches.
        let err = r.why("-").unwrap_err().to_string();
        assert!(err.contains("matches 4 store paths"), "{err}");
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(999), "999 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(5 << 20), "5.0 MiB");
    }
}
