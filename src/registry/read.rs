//! Reading from a registry without pushing (`inspect`, `diff`, `tags`,
//! `sign REF`, `verify-image REF`): an image's manifest and config, the
//! artifacts attached to it (through the referrers API, else its fallback
//! tag `sha256-<hex>`, or cosign's tags), a repository's tags, and, only
//! when asked, a layer blob. Every body is checked against its digest
//! before it is used, where a digest names it.

use std::fs::File;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use super::client::{Body, Client};
use super::{connect, PushOptions, Reference};
use crate::digest::Digest;
use crate::media;

/// The largest artifact (SBOM, signature, attestation) read from a registry
/// (the SBOM of a 10,000-path closure is a few MiB).
const MAX_ARTIFACT: u64 = 256 << 20;

/// A layer as the manifest describes it.
pub struct RemoteLayer {
    pub digest: Digest,
    pub size: u64,
}

/// An image in a registry: its manifest (bytes, digest and media type), its
/// config and its layers.
pub struct RemoteImage {
    pub manifest: Vec<u8>,
    pub media_type: String,
    pub digest: Digest,
    pub config: Value,
    pub layers: Vec<RemoteLayer>,
}

/// An SBOM attached to an image: its artifact type and its bytes.
pub struct AttachedSbom {
    pub artifact_type: String,
    pub bytes: Vec<u8>,
    /// How it was found: `referrers API` or `fallback tag sha256-…`.
    pub found_through: String,
}

/// One repository of a registry, connected.
pub struct Remote {
    client: Client,
    reference: Reference,
}

impl Remote {
    pub fn connect(reference: &Reference, opts: &PushOptions) -> Result<Remote> {
        Ok(Remote {
            client: connect(reference, opts)?,
            reference: reference.clone(),
        })
    }

    /// The image the reference names: its manifest and config.
    pub fn image(&self) -> Result<RemoteImage> {
        let reference = &self.reference;
        let manifest_bytes = self
            .get(
                &format!("manifests/{}", reference.tag),
                media::MANIFEST_ACCEPT,
            )?
            .ok_or_else(|| anyhow!("{reference} does not exist"))?;
        let digest = Digest::of(manifest_bytes.as_bytes());
        let manifest: Value = serde_json::from_str(&manifest_bytes)
            .map_err(|e| anyhow!("{reference}: the manifest is not JSON: {e}"))?;
        let media_type = manifest["mediaType"]
            .as_str()
            .unwrap_or(media::MANIFEST)
            .to_string();
        if media_type == media::INDEX || media_type == media::DOCKER_MANIFEST_LIST {
            bail!("{reference} is a multi-platform image index; name one platform's image");
        }
        let config_digest = self.descriptor_digest(&manifest["config"])?;
        let config_text = self
            .get(
                &format!("blobs/{config_digest}"),
                "application/octet-stream",
            )?
            .ok_or_else(|| anyhow!("{reference}: its config {config_digest} is missing"))?;
        if Digest::of(config_text.as_bytes()) != config_digest {
            bail!("{reference}: the config does not match its digest {config_digest}");
        }
        let config = serde_json::from_str(&config_text)
            .map_err(|e| anyhow!("{reference}: the config is not JSON: {e}"))?;
        let layers = manifest["layers"]
            .as_array()
            .ok_or_else(|| anyhow!("{reference}: the manifest lists no layers"))?
            .iter()
            .map(|layer| {
                Ok(RemoteLayer {
                    digest: self.descriptor_digest(layer)?,
                    size: layer["size"]
                        .as_u64()
                        .ok_or_else(|| anyhow!("{reference}: a layer has no size"))?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(RemoteImage {
            manifest: manifest_bytes.into_bytes(),
            media_type,
            digest,
            config,
            layers,
        })
    }

    /// The referrers of the manifest `subject` (image index entries, with
    /// their `artifactType`): from the referrers API, or, where the registry
    /// has none (it answers 404), from the fallback tag that `nixoci push`,
    /// cosign and oras write there. Also says which it was.
    pub fn referrers(&self, subject: &Digest) -> Result<(Vec<Value>, String)> {
        let (index, found_through) =
            match self.get(&format!("referrers/{subject}"), media::INDEX)? {
                Some(text) => (text, "the referrers API".to_string()),
                None => {
                    let tag = format!("sha256-{}", subject.hex());
                    match self.get(&format!("manifests/{tag}"), media::INDEX)? {
                        Some(text) => (text, format!("the referrers tag {tag}")),
                        None => return Ok((Vec::new(), "no referrers".into())),
                    }
                }
            };
        let index: Value = serde_json::from_str(&index).map_err(|e| {
            anyhow!(
                "{}: {found_through} answered no image index: {e}",
                self.reference
            )
        })?;
        let entries = index["manifests"].as_array().cloned().unwrap_or_default();
        Ok((entries, found_through))
    }

    /// The artifact manifest `tag_or_digest` names (checked against
    /// `digest` when given) and its first layer, which must be at most
    /// `MAX_ARTIFACT` bytes; None when there is no such manifest.
    pub fn artifact(
        &self,
        tag_or_digest: &str,
        digest: Option<&Digest>,
    ) -> Result<Option<(Value, Vec<u8>)>> {
        let Some(text) = self.get(&format!("manifests/{tag_or_digest}"), media::MANIFEST)? else {
            return Ok(None);
        };
        if digest.is_some_and(|d| Digest::of(text.as_bytes()) != *d) {
            bail!(
                "{}: the artifact manifest does not match its digest {tag_or_digest}",
                self.reference
            );
        }
        let manifest: Value = serde_json::from_str(&text).map_err(|e| {
            anyhow!(
                "{}: the artifact manifest {tag_or_digest} is not JSON: {e}",
                self.reference
            )
        })?;
        let blob = &manifest["layers"][0];
        let size = blob["size"].as_u64().unwrap_or(u64::MAX);
        if size > MAX_ARTIFACT {
            bail!(
                "{}: the artifact {tag_or_digest} is {size} bytes, more than the {MAX_ARTIFACT} read",
                self.reference
            );
        }
        let dir = tempfile::tempdir().context("cannot make a temporary directory")?;
        let file = dir.path().join("artifact");
        self.blob(&self.descriptor_digest(blob)?, size, &file)?;
        let bytes = std::fs::read(&file).context("cannot read the downloaded artifact")?;
        Ok(Some((manifest, bytes)))
    }

    /// The SBOM attached to the manifest `subject` whose artifact type is
    /// the first of `artifact_types` that one has (see [`Remote::referrers`]).
    pub fn sbom(&self, subject: &Digest, artifact_types: &[&str]) -> Result<Option<AttachedSbom>> {
        let (entries, found_through) = self.referrers(subject)?;
        let Some((artifact_type, entry)) = artifact_types.iter().find_map(|wanted| {
            entries
                .iter()
                .find(|e| e["artifactType"].as_str() == Some(wanted))
                .map(|e| (wanted.to_string(), e))
        }) else {
            return Ok(None);
        };
        let manifest_digest = self.descriptor_digest(entry)?;
        let (manifest, bytes) = self
            .artifact(&manifest_digest.to_string(), Some(&manifest_digest))?
            .ok_or_else(|| {
                anyhow!(
                    "{}: {found_through} lists {manifest_digest}, which is missing",
                    self.reference
                )
            })?;
        if manifest["subject"]["digest"].as_str() != Some(&subject.to_string()) {
            bail!(
                "{}: the SBOM manifest {manifest_digest} is about another image",
                self.reference
            );
        }
        Ok(Some(AttachedSbom {
            artifact_type,
            bytes,
            found_through,
        }))
    }

    /// Downloads the blob `digest` of `size` bytes into the new file
    /// `dest`, and checks both.
    pub fn blob(&self, digest: &Digest, size: u64, dest: &Path) -> Result<()> {
        let file =
            File::create(dest).with_context(|| format!("cannot create {}", dest.display()))?;
        let reply = self
            .client
            .download(
                &self.client.url(&format!("blobs/{digest}")),
                "application/octet-stream",
                &file,
            )
            .map_err(|e| anyhow!("{}: {}", self.reference, e))?;
        if reply.status != 200 {
            bail!(
                "{}: GET of blob {digest}: {}",
                self.reference,
                reply.registry_error()
            );
        }
        let length = file
            .metadata()
            .with_context(|| format!("cannot read {}", dest.display()))?
            .len();
        let got =
            Digest::of_file(dest).with_context(|| format!("cannot read {}", dest.display()))?;
        if got != *digest || length != size {
            bail!(
                "{}: blob {digest} arrived damaged: {length} bytes hashing to {got} ({size} expected)",
                self.reference
            );
        }
        Ok(())
    }

    /// Every tag of the repository, as the registry lists them, page by
    /// page (the `Link` header names the next one).
    pub fn tags(&self) -> Result<Vec<String>> {
        let mut tags = Vec::new();
        let mut next = Some(self.client.url("tags/list?n=1000"));
        while let Some(url) = next.take() {
            let reply = self.client.request(
                "GET",
                &url,
                &[("Accept", "application/json".into())],
                &Body::Empty,
                true,
            )?;
            match reply.status {
                200 => {}
                404 => bail!(
                    "{}/{} does not exist",
                    self.client.registry,
                    self.client.repository
                ),
                _ => bail!(
                    "listing the tags of {}/{}: {}",
                    self.client.registry,
                    self.client.repository,
                    reply.registry_error()
                ),
            }
            let page: Value = serde_json::from_str(&reply.body)
                .map_err(|e| anyhow!("{}: the tag list is not JSON: {e}", self.client.registry))?;
            for tag in page["tags"].as_array().into_iter().flatten() {
                let tag = tag
                    .as_str()
                    .ok_or_else(|| anyhow!("{}: a tag is not text", self.client.registry))?;
                tags.push(tag.to_string());
            }
            // Only a next page on the registry itself is followed.
            next = reply
                .header("link")
                .and_then(|link| link.strip_prefix("</v2/"))
                .and_then(|link| link.split_once(">; rel=\"next\""))
                .map(|(path, _)| format!("{}/v2/{path}", self.client.base));
            if tags.len() > 1_000_000 {
                bail!("{}: more than a million tags", self.client.registry);
            }
        }
        Ok(tags)
    }

    fn descriptor_digest(&self, descriptor: &Value) -> Result<Digest> {
        let text = descriptor["digest"]
            .as_str()
            .ok_or_else(|| anyhow!("{}: a descriptor has no digest", self.reference))?;
        Digest::parse(text)
    }

    /// The body of `GET /v2/REPOSITORY/PATH`, or None on 404.
    fn get(&self, path: &str, accept: &str) -> Result<Option<String>> {
        let client = &self.client;
        let reply = client.request(
            "GET",
            &client.url(path),
            &[("Accept", accept.into())],
            &Body::Empty,
            true,
        )?;
        match reply.status {
            200 => Ok(Some(reply.body)),
            404 => Ok(None),
            _ => bail!(
                "GET {path} on {}: {}",
                client.registry,
                reply.registry_error()
            ),
        }
    }
}
