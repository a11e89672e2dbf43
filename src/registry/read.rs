//! Reading an image's manifest and config from a registry, never a layer:
//! what `inspect` and `diff` need of a reference. Both bodies are checked
//! against their digests before they are parsed.

use anyhow::{anyhow, bail, Result};
use serde_json::Value;

use super::client::{Body, Client};
use super::{connect, PushOptions, Reference};
use crate::digest::Digest;
use crate::media;

/// A layer as the manifest describes it.
pub struct RemoteLayer {
    pub digest: Digest,
    pub size: u64,
}

/// An image in a registry: its manifest's digest, its config and its layers.
pub struct RemoteImage {
    pub digest: Digest,
    pub config: Value,
    pub layers: Vec<RemoteLayer>,
}

/// Fetches the manifest `reference` names and its config.
pub fn fetch_image(reference: &Reference, opts: &PushOptions) -> Result<RemoteImage> {
    let client = connect(reference, opts)?;
    let manifest_bytes = get(
        &client,
        &format!("manifests/{}", reference.tag),
        media::MANIFEST_ACCEPT,
    )?
    .ok_or_else(|| anyhow!("{reference} does not exist"))?;
    let digest = Digest::of(manifest_bytes.as_bytes());
    let manifest: Value = serde_json::from_str(&manifest_bytes)
        .map_err(|e| anyhow!("{reference}: the manifest is not JSON: {e}"))?;
    let media_type = manifest["mediaType"].as_str().unwrap_or_default();
    if media_type == media::INDEX || media_type == media::DOCKER_MANIFEST_LIST {
        bail!("{reference} is a multi-platform image index; name one platform's image");
    }
    let config_digest = descriptor_digest(&manifest["config"], reference)?;
    let config_text = get(
        &client,
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
                digest: descriptor_digest(layer, reference)?,
                size: layer["size"]
                    .as_u64()
                    .ok_or_else(|| anyhow!("{reference}: a layer has no size"))?,
            })
        })
        .collect::<Result<_>>()?;
    Ok(RemoteImage {
        digest,
        config,
        layers,
    })
}

fn descriptor_digest(descriptor: &Value, reference: &Reference) -> Result<Digest> {
    let text = descriptor["digest"]
        .as_str()
        .ok_or_else(|| anyhow!("{reference}: a descriptor has no digest"))?;
    Digest::parse(text)
}

/// The body of `GET /v2/REPOSITORY/PATH`, or None on 404.
fn get(client: &Client, path: &str, accept: &str) -> Result<Option<String>> {
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
