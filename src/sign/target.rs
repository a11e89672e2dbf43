//! What is signed or verified: an image in an OCI layout (its artifacts are
//! kept in the layout, and `push` uploads them with it) or an image in a
//! registry (its artifacts are pushed next to it, and read from there:
//! cosign's tags, the referrers API or its fallback tag).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use serde_json::Value;

use super::{Found, BUNDLE, DSSE, SIMPLE_SIGNING};
use crate::digest::Digest;
use crate::image::{Image, Layer, NewArtifact, Referrer};
use crate::registry::read::{Remote, RemoteImage};
use crate::registry::{PushOptions, Reference};

pub enum Target {
    Layout {
        path: PathBuf,
        image: Image,
    },
    Registry {
        reference: Reference,
        opts: Box<PushOptions>,
        remote: Box<Remote>,
        image: Box<RemoteImage>,
    },
}

impl Target {
    /// An OCI layout directory at `text`, else the registry reference it is.
    pub fn open(text: &str, opts: PushOptions) -> Result<Target> {
        let path = Path::new(text);
        if path.exists() {
            return Target::layout(path);
        }
        let reference = Reference::parse(text).map_err(|e| {
            anyhow!("{text} is neither an OCI layout here nor a registry reference: {e:#}")
        })?;
        let remote = Remote::connect(&reference, &opts)?;
        let image = remote.image()?;
        Ok(Target::Registry {
            reference,
            opts: Box::new(opts),
            remote: Box::new(remote),
            image: Box::new(image),
        })
    }

    /// The image of the OCI layout at `path`.
    pub fn layout(path: &Path) -> Result<Target> {
        Ok(Target::Layout {
            path: path.to_path_buf(),
            image: crate::output::open_layout_image(path)?,
        })
    }

    /// The image's manifest and its media type.
    pub fn manifest(&self) -> (Vec<u8>, String) {
        match self {
            Target::Layout { image, .. } => image.manifest(),
            Target::Registry { image, .. } => (image.manifest.clone(), image.media_type.clone()),
        }
    }

    pub fn config(&self) -> &Value {
        match self {
            Target::Layout { image, .. } => &image.config,
            Target::Registry { image, .. } => &image.config,
        }
    }

    /// The name a signature binds the image to: `registry/repository`, or
    /// for a layout the name its index gives it (else its directory's).
    pub fn docker_reference(&self) -> String {
        match self {
            Target::Registry { reference, .. } => {
                format!("{}/{}", reference.registry, reference.repository)
            }
            Target::Layout { path, .. } => layout_name(path).unwrap_or_else(|| {
                path.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            }),
        }
    }

    /// The image's `created`: what its artifacts carry.
    pub fn created(&self) -> String {
        self.config()["created"]
            .as_str()
            .unwrap_or(crate::image::DEFAULT_CREATED)
            .to_string()
    }

    /// The image as a signature's subject.
    fn subject<'a>(
        &self,
        manifest: &'a [u8],
        media_type: &'a str,
        name: &'a str,
    ) -> super::Subject<'a> {
        super::Subject {
            manifest,
            media_type,
            docker_reference: name,
        }
    }

    /// Signs the image and keeps the signatures; says what it did.
    pub fn sign(&self, key: &super::PrivateKey, format: super::SignatureFormat) -> Result<String> {
        let (manifest, media_type) = self.manifest();
        let name = self.docker_reference();
        let subject = self.subject(&manifest, &media_type, &name);
        let artifacts = super::signatures(key, &subject, format, &self.created())?;
        let count = artifacts.len();
        let place = self.store(artifacts)?;
        Ok(format!(
            "signed {} ({count} signature(s), {place})",
            subject.digest()
        ))
    }

    /// Attests the image's provenance and keeps the attestation; returns
    /// the Statement and says what it did.
    pub fn attest(
        &self,
        key: &super::PrivateKey,
        sources: &super::provenance::Sources,
        format: super::SignatureFormat,
    ) -> Result<(Vec<u8>, String)> {
        let inputs = super::provenance::gather(self, sources)?;
        let statement = super::provenance::statement(&inputs)?;
        let (manifest, media_type) = self.manifest();
        let name = self.docker_reference();
        let subject = self.subject(&manifest, &media_type, &name);
        let artifacts = super::attestations(key, &subject, &statement, format, &self.created())?;
        let place = self.store(artifacts)?;
        let said = format!(
            "attested {}: {} fixed output(s), {} layer(s) ({place})",
            subject.digest(),
            inputs.fetches.len(),
            inputs.layers.len()
        );
        Ok((statement, said))
    }

    /// Keeps `artifacts`: in the layout, or pushed to the registry. Says where.
    pub fn store(&self, artifacts: Vec<NewArtifact>) -> Result<String> {
        match self {
            Target::Layout { path, .. } => {
                crate::output::attach_artifacts(path, &artifacts)?;
                Ok(format!("kept in {}", path.display()))
            }
            Target::Registry {
                reference,
                opts,
                image,
                ..
            } => {
                let dir = tempfile::tempdir().context("cannot make a temporary directory")?;
                let mut referrers = Vec::new();
                for artifact in artifacts {
                    let mut blobs = Vec::new();
                    for bytes in &artifact.blobs {
                        let digest = Digest::of(bytes);
                        let file = dir.path().join(digest.hex());
                        std::fs::write(&file, bytes)
                            .with_context(|| format!("cannot write {}", file.display()))?;
                        blobs.push(Layer {
                            media_type: String::new(),
                            digest,
                            size: bytes.len() as u64,
                            file,
                        });
                    }
                    referrers.push(Referrer {
                        artifact_type: artifact.artifact_type,
                        manifest_bytes: artifact.manifest,
                        blobs,
                        tag: artifact.tag,
                    });
                }
                crate::registry::push_artifacts(reference, opts, &image.digest, &referrers)?;
                Ok(format!(
                    "pushed to {}/{}",
                    reference.registry, reference.repository
                ))
            }
        }
    }

    /// The signatures, attestations and SBOMs found next to the image.
    pub fn found(&self) -> Result<Vec<Found>> {
        let mut found = Vec::new();
        match self {
            Target::Layout { path, image } => {
                for referrer in &image.referrers {
                    let Some(blob) = referrer.document() else {
                        continue;
                    };
                    let manifest: Value = serde_json::from_slice(&referrer.manifest_bytes)?;
                    blob.verify()?;
                    found.push(Found {
                        artifact_type: referrer.artifact_type.clone(),
                        layer: std::fs::read(&blob.file)
                            .with_context(|| format!("cannot read {}", blob.file.display()))?,
                        origin: format!(
                            "{} in {}",
                            artifact_label(referrer, &manifest),
                            path.display()
                        ),
                        manifest,
                    });
                }
            }
            Target::Registry { remote, image, .. } => {
                for (suffix, layer_type) in [("sig", SIMPLE_SIGNING), ("att", DSSE)] {
                    let tag = format!("sha256-{}.{suffix}", image.digest.hex());
                    if let Some((manifest, layer)) = remote.artifact(&tag, None)? {
                        if manifest["layers"][0]["mediaType"] == layer_type {
                            found.push(Found {
                                artifact_type: layer_type.to_string(),
                                manifest,
                                layer,
                                origin: format!("the tag {tag}"),
                            });
                        }
                    }
                }
                let (entries, through) = remote.referrers(&image.digest)?;
                let known = [
                    BUNDLE,
                    crate::sbom::Format::Cyclonedx.media_type(),
                    crate::sbom::Format::Spdx.media_type(),
                ];
                for entry in entries.iter().filter(|e| {
                    e["artifactType"]
                        .as_str()
                        .is_some_and(|t| known.contains(&t))
                }) {
                    let digest = Digest::parse(entry["digest"].as_str().unwrap_or_default())?;
                    if let Some((manifest, layer)) =
                        remote.artifact(&digest.to_string(), Some(&digest))?
                    {
                        if manifest["subject"]["digest"].as_str() != Some(&image.digest.to_string())
                        {
                            continue;
                        }
                        found.push(Found {
                            artifact_type: entry["artifactType"]
                                .as_str()
                                .unwrap_or_default()
                                .to_string(),
                            manifest,
                            layer,
                            origin: format!("the referrer {digest} (through {through})"),
                        });
                    }
                }
            }
        }
        Ok(found)
    }
}

/// The name a layout's index gives its image (`io.containerd.image.name`),
/// without its tag.
fn layout_name(layout: &Path) -> Option<String> {
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).ok()?).ok()?;
    let name = index["manifests"]
        .as_array()?
        .iter()
        .find(|m| m.get("artifactType").is_none())?["annotations"]["io.containerd.image.name"]
        .as_str()?
        .to_string();
    Some(
        crate::image::split_name_tag(&name)
            .map(|(n, _)| n)
            .unwrap_or(name),
    )
}

/// How a layout's artifact is named in messages: its tag (cosign's), the
/// content of a Sigstore bundle, or its type.
fn artifact_label(referrer: &Referrer, manifest: &Value) -> String {
    if let Some(tag) = &referrer.tag {
        return tag.clone();
    }
    match manifest["annotations"]["dev.sigstore.bundle.content"].as_str() {
        Some(content) => format!("the {content} bundle"),
        None => referrer.artifact_type.clone(),
    }
}
