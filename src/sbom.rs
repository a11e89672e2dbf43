//! Bills of materials: CycloneDX 1.6 and SPDX 2.3 JSON of an image's
//! closure, from what Nix knows exactly: one component per store path, with
//! its name and version as `builtins.parseDrvName` splits them, its NAR hash,
//! the layer that holds it and its references; and the mirrored sources
//! (`mirrors/*.toml`) with their URLs and hashes. The same closure always
//! gives the same bytes: times come from the image, identifiers from hashes.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

use crate::closure::PathInfo;
use crate::image;
use crate::nix;
use crate::verify::Manifest;

/// Which standard to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// CycloneDX 1.6 JSON.
    Cyclonedx,
    /// SPDX 2.3 JSON.
    Spdx,
}

impl Format {
    /// The media type registries and tools know it by (the referrer's artifactType).
    pub fn media_type(self) -> &'static str {
        match self {
            Format::Cyclonedx => "application/vnd.cyclonedx+json",
            Format::Spdx => "application/spdx+json",
        }
    }
}

/// What a bill of materials is made from.
pub struct Inventory<'a> {
    /// The document's subject, e.g. `blumeops/authentik:v2026.2.0`.
    pub name: String,
    /// RFC 3339 time the document carries (the image's `created`).
    pub created: String,
    /// The store paths, each with its NAR hash and references.
    pub paths: Vec<PathInfo>,
    /// The layer (`sha256:` diff_id) each store path is in, when known.
    pub layer_of: BTreeMap<String, String>,
    /// Pinned sources the closure was built from.
    pub sources: &'a [Manifest],
}

/// `builtins.parseDrvName`: the name ends at the first `-` that is followed
/// by something other than a letter; what follows is the version.
pub fn parse_drv_name(name: &str) -> (&str, &str) {
    let bytes = name.as_bytes();
    for i in 0..bytes.len() {
        if bytes[i] == b'-' && bytes.get(i + 1).is_some_and(|c| !c.is_ascii_alphabetic()) {
            return (&name[..i], &name[i + 1..]);
        }
    }
    (name, "")
}

fn nar_hex(node: &PathInfo) -> Result<String> {
    node.nar_hash.as_ref().map(|h| h.to_hex()).ok_or_else(|| {
        anyhow!(
            "{} has no NAR hash: a bill of materials needs one per path",
            node.path
        )
    })
}

/// A pinned source's hash as hex SHA-256, when it is one.
fn source_hex(hash: &str) -> Option<String> {
    nix::Hash::parse(hash, Some(nix::HashAlgo::Sha256))
        .ok()
        .filter(|h| h.algo == nix::HashAlgo::Sha256)
        .map(|h| h.to_hex())
}

/// The serial number and namespace: derived from the content, so that the
/// same closure gives the same document.
fn content_id(inv: &Inventory) -> Result<String> {
    let mut text = inv.name.clone();
    for node in &inv.paths {
        text.push('\n');
        text.push_str(&node.path);
        text.push(' ');
        text.push_str(&nar_hex(node)?);
    }
    Ok(crate::digest::Digest::of(text.as_bytes()).hex().to_string())
}

fn uuid_of(hex: &str) -> String {
    format!(
        "{}-{}-5{}-8{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

/// The document in the chosen format, as canonical JSON.
pub fn write(inv: &Inventory, format: Format) -> Result<Vec<u8>> {
    Ok(image::canonical(&match format {
        Format::Cyclonedx => cyclonedx(inv)?,
        Format::Spdx => spdx(inv)?,
    }))
}

fn cyclonedx(inv: &Inventory) -> Result<Value> {
    let mut components = Vec::new();
    let mut dependencies = Vec::new();
    for node in &inv.paths {
        let (name, version) = parse_drv_name(crate::nix::store_name(&node.path));
        let mut properties = vec![json!({"name": "nix:store_path", "value": node.path})];
        if let Some(layer) = inv.layer_of.get(&node.path) {
            properties.push(json!({"name": "nixoci:layer", "value": layer}));
        }
        let mut component = json!({
            "type": "library",
            "bom-ref": node.path,
            "name": name,
            "hashes": [{"alg": "SHA-256", "content": nar_hex(node)?}],
            "properties": properties,
        });
        if !version.is_empty() {
            component["version"] = json!(version);
        }
        components.push(component);
        let mut refs = node.references.clone();
        refs.sort();
        dependencies.push(json!({"ref": node.path, "dependsOn": refs}));
    }
    let mut sources = Vec::new();
    for manifest in inv.sources {
        for s in &manifest.sources {
            let mut source = json!({
                "type": "file",
                "bom-ref": format!("source:{}", s.name),
                "name": s.name,
                "externalReferences": s.mirror.iter().chain(s.upstream.iter())
                    .map(|url| json!({"type": "distribution", "url": url}))
                    .collect::<Vec<_>>(),
                "properties": [{"name": "nix:hash", "value": s.hash}],
            });
            if let Some(rev) = &s.rev {
                source["version"] = json!(rev);
            }
            if let Some(hex) = source_hex(&s.hash) {
                source["hashes"] = json!([{"alg": "SHA-256", "content": hex}]);
            }
            sources.push(source);
        }
    }
    components.extend(sources);
    Ok(json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": format!("urn:uuid:{}", uuid_of(&content_id(inv)?)),
        "version": 1,
        "metadata": {
            "timestamp": inv.created,
            "tools": {"components": [{"type": "application", "name": "nixoci", "version": env!("CARGO_PKG_VERSION")}]},
            "component": {"type": "container", "bom-ref": "image", "name": inv.name},
        },
        "components": components,
        "dependencies": dependencies,
    }))
}

/// An SPDX identifier for a store path: its hash part is unique.
fn spdx_id(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let hash = base.split_once('-').map_or(base, |(h, _)| h);
    format!("SPDXRef-nix-{hash}")
}

fn spdx(inv: &Inventory) -> Result<Value> {
    let mut packages = Vec::new();
    let mut relationships = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": "SPDXRef-image",
    })];
    packages.push(json!({
        "SPDXID": "SPDXRef-image",
        "name": inv.name,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "primaryPackagePurpose": "CONTAINER",
    }));
    for node in &inv.paths {
        let (name, version) = parse_drv_name(crate::nix::store_name(&node.path));
        let mut package = json!({
            "SPDXID": spdx_id(&node.path),
            "name": name,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "checksums": [{"algorithm": "SHA256", "checksumValue": nar_hex(node)?}],
            "comment": match inv.layer_of.get(&node.path) {
                Some(layer) => format!("store path {} (NAR hash), in layer {layer}", node.path),
                None => format!("store path {} (NAR hash)", node.path),
            },
        });
        if !version.is_empty() {
            package["versionInfo"] = json!(version);
        }
        packages.push(package);
        relationships.push(json!({
            "spdxElementId": "SPDXRef-image",
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": spdx_id(&node.path),
        }));
        let mut refs = node.references.clone();
        refs.sort();
        for r in refs {
            relationships.push(json!({
                "spdxElementId": spdx_id(&node.path),
                "relationshipType": "DEPENDS_ON",
                "relatedSpdxElement": spdx_id(&r),
            }));
        }
    }
    // Source names may differ only in characters an SPDX ID cannot hold
    // (`a b`, `a-b`): the position keeps their IDs apart.
    let all_sources = inv.sources.iter().flat_map(|m| m.sources.iter());
    for (i, s) in all_sources.enumerate() {
        let mut package = json!({
            "SPDXID": format!("SPDXRef-source-{}-{}", i + 1, s.name.replace(|c: char| !c.is_ascii_alphanumeric() && c != '.', "-")),
            "name": s.name,
            "downloadLocation": s.mirror.clone().or_else(|| s.upstream.clone()).unwrap_or_else(|| "NOASSERTION".into()),
            "filesAnalyzed": false,
            "comment": format!("pinned {} source, Nix hash {}", format!("{:?}", s.kind).to_lowercase(), s.hash),
        });
        if let Some(rev) = &s.rev {
            package["versionInfo"] = json!(rev);
        }
        if let Some(hex) = source_hex(&s.hash) {
            package["checksums"] = json!([{"algorithm": "SHA256", "checksumValue": hex}]);
        }
        packages.push(package);
    }
    Ok(json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": inv.name,
        "documentNamespace": format!("https://nixoci.invalid/spdx/{}", content_id(inv)?),
        "creationInfo": {
            "created": inv.created,
            "creators": [format!("Tool: nixoci-{}", env!("CARGO_PKG_VERSION"))],
        },
        "packages": packages,
        "relationships": relationships,
    }))
}

/// The inventory of an image: its store paths from its layers' history,
/// their NAR hashes and references from `graph` or the local store.
pub fn of_image<'a>(
    image: &std::path::Path,
    graph: Option<&std::path::Path>,
    name: &str,
    sources: &'a [Manifest],
) -> Result<Inventory<'a>> {
    let source = crate::image::Image::open(image, None)?;
    let layer_of = source.store_paths()?;
    Ok(Inventory {
        name: name.to_string(),
        created: created_of(&source.config),
        paths: image_nodes(graph, &layer_of)?,
        layer_of,
        sources,
    })
}

/// The inventory of every path of a closure graph.
pub fn of_graph<'a>(
    graph: &std::path::Path,
    name: &str,
    sources: &'a [Manifest],
) -> Result<Inventory<'a>> {
    let mut paths = crate::closure::read_graph_file(graph, nix::DEFAULT_STORE_DIR)?
        .nodes()
        .to_vec();
    paths.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Inventory {
        name: name.to_string(),
        created: image::DEFAULT_CREATED.to_string(),
        paths,
        layer_of: BTreeMap::new(),
        sources,
    })
}

/// `nixoci build --sbom`: the document of what the build put in the layout,
/// kept there as a referrer of the image.
pub fn attach_to_build(
    layout: &std::path::Path,
    summary: &crate::build::BuildSummary,
    format: Format,
) -> Result<()> {
    let mut layer_of = BTreeMap::new();
    for layer in &summary.layers {
        for path in &layer.store_paths {
            layer_of
                .entry(path.clone())
                .or_insert_with(|| layer.diff_id.to_string());
        }
    }
    let config = crate::image::Image::open(layout, None)?.config;
    let inventory = Inventory {
        name: summary.reference.clone(),
        created: created_of(&config),
        paths: restrict(&summary.closure, &layer_of)?,
        layer_of,
        sources: &[],
    };
    let bytes = write(&inventory, format)?;
    crate::output::attach_referrer(layout, format.media_type(), &bytes, &inventory.created)?;
    Ok(())
}

/// The image's `created`: what its documents carry, never the wall clock.
fn created_of(config: &Value) -> String {
    config["created"]
        .as_str()
        .unwrap_or(image::DEFAULT_CREATED)
        .to_string()
}

/// The store paths an SBOM of ours lists, each with the diff_id of its
/// layer (empty when the document names none): what `inspect` and `diff`
/// read of an image whose history names no store paths. The document came
/// from a registry: every path and layer is checked before it is taken.
pub fn read_paths(document: &[u8]) -> Result<BTreeMap<String, String>> {
    let doc: Value = serde_json::from_slice(document)
        .map_err(|e| anyhow!("the attached SBOM is not JSON: {e}"))?;
    let mut found = BTreeMap::new();
    let mut take = |path: &str, layer: Option<&str>| -> Result<()> {
        nix::validate_store_path(nix::DEFAULT_STORE_DIR, path)
            .context("the attached SBOM names a bad store path")?;
        let layer = match layer {
            Some(l) => crate::digest::Digest::parse(l)
                .context("the attached SBOM names a bad layer")?
                .to_string(),
            None => String::new(),
        };
        found.insert(path.to_string(), layer);
        Ok(())
    };
    if doc["bomFormat"] == "CycloneDX" {
        for component in doc["components"].as_array().into_iter().flatten() {
            let property = |name: &str| {
                component["properties"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|p| p["name"] == name)
                    .and_then(|p| p["value"].as_str())
            };
            if let Some(path) = property("nix:store_path") {
                take(path, property("nixoci:layer"))?;
            }
        }
    } else if doc["spdxVersion"].is_string() {
        for package in doc["packages"].as_array().into_iter().flatten() {
            let Some(comment) = package["comment"]
                .as_str()
                .and_then(|c| c.strip_prefix("store path "))
            else {
                continue;
            };
            let (path, rest) = comment.split_once(' ').unwrap_or((comment, ""));
            take(path, rest.strip_prefix("(NAR hash), in layer "))?;
        }
    } else {
        bail!("the attached SBOM is neither CycloneDX nor SPDX");
    }
    Ok(found)
}

/// The store paths of an image (`layer_of`'s keys) as closure nodes, with
/// their NAR sizes, hashes and references among themselves: from `graph`
/// (exportReferencesGraph or `nix path-info --json`), else the local store.
pub fn image_nodes(
    graph: Option<&std::path::Path>,
    layer_of: &BTreeMap<String, String>,
) -> Result<Vec<PathInfo>> {
    let closure = match graph {
        Some(file) => crate::closure::read_graph_file(file, nix::DEFAULT_STORE_DIR)?,
        None => {
            let roots: Vec<String> = layer_of.keys().cloned().collect();
            crate::closure::read_from_store(&roots, nix::DEFAULT_STORE_DIR)?
        }
    };
    restrict(closure.nodes(), layer_of)
}

/// The closure `paths` restricted to `keep` (references outside it dropped);
/// every kept path must be in it.
pub fn restrict(paths: &[PathInfo], keep: &BTreeMap<String, String>) -> Result<Vec<PathInfo>> {
    let mut out: Vec<PathInfo> = paths
        .iter()
        .filter(|p| keep.contains_key(&p.path))
        .map(|p| PathInfo {
            references: p
                .references
                .iter()
                .filter(|r| keep.contains_key(*r))
                .cloned()
                .collect(),
            ..p.clone()
        })
        .collect();
    out.sort_by(|a, b| a.path.cmp(&b.path));
    let found: std::collections::BTreeSet<&str> = out.iter().map(|p| p.path.as_str()).collect();
    if let Some(missing) = keep.keys().find(|k| !found.contains(k.as_str())) {
        return Err(anyhow!(
            "{missing} is in the image but not in the closure graph"
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_read_back_from_both_formats_and_bad_ones_are_refused() {
        let lib = "/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-libfoo-2.3";
        let app = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-app-1.0";
        let layer = format!("sha256:{}", "c".repeat(64));
        let node = |path: &str, refs: &[&str]| PathInfo {
            path: path.to_string(),
            nar_hash: Some(nix::Hash::sha256([7; 32])),
            nar_size: 1,
            references: refs.iter().map(|r| r.to_string()).collect(),
        };
        let inventory = Inventory {
            name: "image".into(),
            created: image::DEFAULT_CREATED.into(),
            paths: vec![node(app, &[lib]), node(lib, &[])],
            layer_of: BTreeMap::from([(lib.to_string(), layer.clone())]),
            sources: &[],
        };
        let want = BTreeMap::from([
            (app.to_string(), String::new()),
            (lib.to_string(), layer.clone()),
        ]);
        for format in [Format::Cyclonedx, Format::Spdx] {
            let document = write(&inventory, format).unwrap();
            assert_eq!(read_paths(&document).unwrap(), want, "{format:?}");
            let text = String::from_utf8(document).unwrap();
            let bad = text.replace(
                lib,
                "/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-libfoo/../../etc",
            );
            assert!(read_paths(bad.as_bytes()).is_err(), "{format:?}");
            let bad = text.replace(&layer, "sha256:short");
            assert!(read_paths(bad.as_bytes()).is_err(), "{format:?}");
        }
        assert!(read_paths(b"{}").is_err());
    }

    #[test]
    fn names_split_as_parse_drv_name_does() {
        for (name, want) in [
            ("hello-2.12.1", ("hello", "2.12.1")),
            ("python3.12-django-5.2.1", ("python3.12-django", "5.2.1")),
            ("nss-cacert-3.101", ("nss-cacert", "3.101")),
            ("fixture-note.txt", ("fixture-note.txt", "")),
            (
                "authentik-webui-deps-2026.2.0",
                ("authentik-webui-deps", "2026.2.0"),
            ),
            ("glibc-2.40-66-bin", ("glibc", "2.40-66-bin")),
            ("x-", ("x-", "")),
        ] {
            assert_eq!(parse_drv_name(name), want, "{name}");
        }
    }
}
