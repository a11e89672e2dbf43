//! The provenance of an image as an in-toto Statement v1 with an SLSA
//! provenance v1 predicate: the image (subject); the flake reference and
//! locked nixpkgs (external parameters); every fixed-output derivation of
//! its `.drv` closure, classified as `verify --drv` classifies them
//! (resolved dependencies); each layer with its store paths and their NAR
//! hashes (byproducts); the CI run (run details). The same inputs give the
//! same bytes: nothing in it is a clock reading.

use std::collections::BTreeSet;

use anyhow::{anyhow, bail, Result};
use serde_json::{json, Value};

use crate::digest::Digest;
use crate::verify::provenance::{Class, Fetch};

pub const SLSA_PROVENANCE: &str = "https://slsa.dev/provenance/v1";
pub const STATEMENT: &str = "https://in-toto.io/Statement/v1";
/// What kind of build the predicate describes.
pub const BUILD_TYPE: &str = "https://nixoci.dev/provenance/nix-image/v1";

/// A layer of the image and the store paths it holds.
pub struct LayerPaths {
    pub digest: Digest,
    /// Each store path with its NAR hash (SRI).
    pub store_paths: Vec<(String, String)>,
}

/// Everything the Statement says.
pub struct Inputs {
    /// The image's name (`registry/repository`, or the layout's).
    pub name: String,
    pub manifest_digest: Digest,
    /// The installable that was built, e.g. `.#authentik-image`.
    pub flake: Option<String>,
    /// The `flake.lock` it was built with: its nixpkgs revision and narHash.
    pub flake_lock: Option<Value>,
    /// The `.drv` the fixed outputs were read from.
    pub drv: String,
    pub fetches: Vec<Fetch>,
    pub layers: Vec<LayerPaths>,
    /// An SBOM attached to the image: its media type and digest.
    pub sbom: Option<(String, Digest)>,
    /// The CI run, from the Forgejo (GitHub) Actions environment.
    pub run: Option<Run>,
}

/// A CI run, as the Actions environment describes it.
pub struct Run {
    pub builder_id: String,
    pub invocation_id: String,
}

impl Run {
    /// The run the `GITHUB_*` variables (which Forgejo Actions sets) name.
    pub fn from_env() -> Option<Run> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let server = var("GITHUB_SERVER_URL")?;
        let repository = var("GITHUB_REPOSITORY")?;
        let run_id = var("GITHUB_RUN_ID")?;
        let workflow = var("GITHUB_WORKFLOW_REF").unwrap_or_else(|| repository.clone());
        Some(Run {
            builder_id: format!("{server}/{workflow}"),
            invocation_id: format!(
                "{server}/{repository}/actions/runs/{run_id}/attempts/{}",
                var("GITHUB_RUN_ATTEMPT").unwrap_or_else(|| "1".into())
            ),
        })
    }
}

/// The class's name in the Statement, as `verify --json` writes it.
fn class_name(class: Class) -> &'static str {
    match class {
        Class::Mirrored => "mirrored",
        Class::PinnedUpstream => "pinned-upstream",
        Class::NetworkBuild => "network-build",
        Class::Unpinned => "unpinned",
    }
}

fn dependency(fetch: &Fetch) -> Result<Value> {
    let hash = crate::nix::Hash::parse(&fetch.hash, None)
        .map_err(|e| anyhow!("{}: its output hash: {e}", fetch.drv))?;
    let mode = match fetch.mode {
        crate::nix::drv::HashMode::Flat => "flat",
        crate::nix::drv::HashMode::Recursive => "nar",
        crate::nix::drv::HashMode::Text => "text",
    };
    let mut annotations = json!({
        "drv": fetch.drv,
        "class": class_name(fetch.class),
        "outputHash": fetch.hash,
        "outputHashMode": mode,
        "pin": fetch.detail,
    });
    if fetch.urls.len() > 1 {
        annotations["urls"] = json!(fetch.urls);
    }
    if let Some(rev) = &fetch.rev {
        annotations["rev"] = json!(rev);
        if fetch.class == Class::Mirrored {
            annotations["mirrorCommit"] = json!(rev);
        }
    }
    let mut entry = json!({
        "name": fetch.name,
        // A flat hash is the file's; a recursive one is of its NAR.
        "digest": {format!("{}{}", if mode == "flat" { "" } else { "nix-nar-" }, hash.algo.name()): hash.to_hex()},
        "annotations": annotations,
    });
    if let Some(url) = fetch.urls.first() {
        entry["uri"] = json!(url);
    }
    Ok(entry)
}

/// The Statement, as canonical JSON.
pub fn statement(inputs: &Inputs) -> Result<Vec<u8>> {
    let mut external = json!({"drv": inputs.drv});
    if let Some(flake) = &inputs.flake {
        external["flake"] = json!(flake);
    }
    if let Some(lock) = &inputs.flake_lock {
        let locked = &lock["nodes"]["nixpkgs"]["locked"];
        if !locked.is_null() {
            external["nixpkgs"] =
                json!({"rev": locked["rev"], "narHash": locked["narHash"], "type": locked["type"]});
        }
    }
    let dependencies = inputs
        .fetches
        .iter()
        .map(dependency)
        .collect::<Result<Vec<_>>>()?;
    let mut byproducts: Vec<Value> = inputs
        .layers
        .iter()
        .map(|l| {
            json!({
                "name": "layer",
                "digest": {"sha256": l.digest.hex()},
                "annotations": {"storePaths": l.store_paths.iter()
                    .map(|(path, nar)| json!({"path": path, "narHash": nar}))
                    .collect::<Vec<_>>()},
            })
        })
        .collect();
    if let Some((media_type, digest)) = &inputs.sbom {
        byproducts.push(
            json!({"name": "sbom", "mediaType": media_type, "digest": {"sha256": digest.hex()}}),
        );
    }
    let mut run_details = json!({
        "builder": {"id": "https://nixoci.dev/local"},
        "byproducts": byproducts,
    });
    if let Some(run) = &inputs.run {
        run_details["builder"]["id"] = json!(run.builder_id);
        run_details["metadata"] = json!({"invocationId": run.invocation_id});
    }
    Ok(crate::image::canonical(&json!({
        "_type": STATEMENT,
        "subject": [{"name": inputs.name, "digest": {"sha256": inputs.manifest_digest.hex()}}],
        "predicateType": SLSA_PROVENANCE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": external,
                "resolvedDependencies": dependencies,
            },
            "runDetails": run_details,
        },
    })))
}

/// The fixed-output derivations a Statement lists, by `.drv` path, with
/// their classes.
pub fn listed_dependencies(statement: &Value) -> Result<Vec<(String, String)>> {
    if statement["predicateType"] != SLSA_PROVENANCE {
        bail!("the attestation is not SLSA provenance v1");
    }
    statement["predicate"]["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            let drv = d["annotations"]["drv"].as_str();
            let class = d["annotations"]["class"].as_str();
            match (drv, class) {
                (Some(drv), Some(class)) => Ok((drv.to_string(), class.to_string())),
                _ => Err(anyhow!(
                    "a resolved dependency has no drv or class annotation"
                )),
            }
        })
        .collect()
}

/// `--policy no-upstream`: every dependency came from a mirror or is a
/// pinned network build.
pub fn check_no_upstream(statement: &Value) -> Result<()> {
    let bad: Vec<String> = listed_dependencies(statement)?
        .into_iter()
        .filter(|(_, class)| class != "mirrored" && class != "network-build")
        .map(|(drv, class)| format!("{drv} ({class})"))
        .collect();
    if !bad.is_empty() {
        bail!(
            "policy no-upstream: {} dependency(ies) not from the mirrors: {}",
            bad.len(),
            bad.join(", ")
        );
    }
    Ok(())
}

/// `--drv`: the attestation lists exactly the fixed outputs of `fetches`.
pub fn check_same_fetches(statement: &Value, fetches: &[Fetch]) -> Result<()> {
    let listed: BTreeSet<String> = listed_dependencies(statement)?
        .into_iter()
        .map(|(d, _)| d)
        .collect();
    let derived: BTreeSet<String> = fetches.iter().map(|f| f.drv.clone()).collect();
    if listed != derived {
        let missing: Vec<&String> = derived.difference(&listed).collect();
        let extra: Vec<&String> = listed.difference(&derived).collect();
        bail!(
            "the attestation's fixed outputs are not the derivation's: missing {missing:?}, not in the derivation {extra:?}"
        );
    }
    Ok(())
}

/// Where the Statement's parts come from (`nixoci attest`).
pub struct Sources<'a> {
    /// The image's `.drv`: its closure's fixed outputs are the dependencies.
    pub drv: &'a str,
    /// The pin files (`mirrors/*.toml`) that classify them.
    pub manifests: &'a [std::path::PathBuf],
    /// NAR hashes of the image's store paths (else the local store).
    pub graph: Option<&'a std::path::Path>,
    pub flake: Option<String>,
    pub flake_lock: Option<&'a std::path::Path>,
}

/// Gathers the Statement's inputs for the image `target`.
pub fn gather(target: &super::target::Target, sources: &Sources) -> Result<Inputs> {
    use anyhow::Context as _;
    let store_dir = crate::nix::DEFAULT_STORE_DIR;
    crate::nix::validate_store_path(store_dir, sources.drv)?;
    let report = crate::verify::provenance::classify(
        store_dir,
        &[sources.drv.to_string()],
        sources.manifests,
        &[],
    )?;
    // The store paths of each layer, from the history (or a layout's layers).
    let layer_of = match target {
        super::target::Target::Layout { image, .. } => image.store_paths()?,
        super::target::Target::Registry { image, .. } => {
            crate::image::history_store_paths(&image.config)
        }
    };
    if layer_of.is_empty() {
        bail!("the image names no store paths: its layers cannot be listed in the provenance");
    }
    let nodes = crate::sbom::image_nodes(sources.graph, &layer_of)?;
    let (manifest_bytes, _) = target.manifest();
    let manifest: Value = serde_json::from_slice(&manifest_bytes)?;
    let digests: Vec<Digest> = manifest["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| Digest::parse(l["digest"].as_str().unwrap_or_default()))
        .collect::<Result<_>>()?;
    let diff_ids = crate::image::config_diff_ids(target.config(), digests.len())?;
    let mut layers = Vec::new();
    for (digest, diff_id) in digests.into_iter().zip(diff_ids) {
        let mut store_paths = Vec::new();
        for node in nodes
            .iter()
            .filter(|n| layer_of[&n.path] == diff_id.to_string())
        {
            let nar = node
                .nar_hash
                .as_ref()
                .ok_or_else(|| anyhow!("{} has no NAR hash in the graph", node.path))?;
            store_paths.push((node.path.clone(), nar.to_sri()));
        }
        layers.push(LayerPaths {
            digest,
            store_paths,
        });
    }
    let flake_lock = sources
        .flake_lock
        .map(|file| -> Result<Value> {
            serde_json::from_slice(
                &std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?,
            )
            .with_context(|| format!("{} is not JSON", file.display()))
        })
        .transpose()?;
    let sbom = target.found()?.into_iter().find_map(|f| {
        [crate::sbom::Format::Cyclonedx, crate::sbom::Format::Spdx]
            .iter()
            .find(|format| format.media_type() == f.artifact_type)
            .map(|format| (format.media_type().to_string(), Digest::of(&f.layer)))
    });
    Ok(Inputs {
        name: target.docker_reference(),
        manifest_digest: Digest::of(&manifest_bytes),
        flake: sources.flake.clone(),
        flake_lock,
        drv: sources.drv.to_string(),
        fetches: report.fetches,
        layers,
        sbom,
        run: Run::from_env(),
    })
}
