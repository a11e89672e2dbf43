//! Layers built as derivations of their own (the Nix library's `buildLayer`,
//! with nix2container's meaning): an output directory holding the compressed
//! `blob` and `meta.json`, so that Nix and binary caches keep each layer,
//! and an image that uses it only points at the blob.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::LayerBlob;
use crate::digest::Digest;
use crate::media::Compression;

/// `meta.json` of a layer output.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Meta {
    pub digest: Digest,
    pub diff_id: Digest,
    pub size: u64,
    pub media_type: String,
    /// The store paths in this layer.
    pub store_paths: Vec<String>,
    /// These and the paths of the layers it builds on: what an image using
    /// it leaves out of its other layers.
    pub covers: Vec<String>,
}

pub struct ExplicitLayer {
    pub dir: PathBuf,
    pub meta: Meta,
}

impl ExplicitLayer {
    /// Opens a layer output: a store path (which nothing can change after
    /// Nix made it) holding a regular `blob` and a `meta.json` whose paths
    /// are store paths, its own among the ones it covers.
    pub fn read(store_dir: &str, dir: &Path) -> Result<ExplicitLayer> {
        let dir_text = dir.to_string_lossy();
        crate::nix::validate_store_path(store_dir, dir_text.trim_end_matches('/')).map_err(|e| {
            anyhow!("layers: {e}: a layer must be a buildLayer output in the store, which nothing can change")
        })?;
        let path = dir.join("meta.json");
        let text = fs::read(&path)
            .with_context(|| format!("{} is not a layer (no meta.json)", dir.display()))?;
        let meta: Meta =
            serde_json::from_slice(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        let blob = fs::symlink_metadata(dir.join("blob"))
            .with_context(|| format!("{} has no blob", dir.display()))?;
        if !blob.is_file() {
            bail!(
                "{}: the blob is not a regular file (a symlink could point anywhere)",
                dir.display()
            );
        }
        if blob.len() != meta.size {
            bail!("{}: the blob does not match meta.json", dir.display());
        }
        for p in meta.store_paths.iter().chain(&meta.covers) {
            crate::nix::validate_store_path(store_dir, p)
                .map_err(|e| anyhow!("{}: meta.json: {e}", dir.display()))?;
        }
        if let Some(own) = meta.store_paths.iter().find(|p| !meta.covers.contains(p)) {
            bail!(
                "{}: meta.json: the layer holds {own} but does not cover it",
                dir.display()
            );
        }
        Ok(ExplicitLayer {
            dir: dir.to_path_buf(),
            meta,
        })
    }

    /// The layer in an image: `blob_dir/<hex>` is a symlink to the blob.
    pub fn link_into(&self, blob_dir: &Path) -> Result<LayerBlob> {
        let dest = blob_dir.join(self.meta.digest.hex());
        if fs::symlink_metadata(&dest).is_err() {
            std::os::unix::fs::symlink(self.dir.join("blob"), &dest)
                .with_context(|| format!("cannot link {}", dest.display()))?;
        }
        let media_type = [Compression::Gzip, Compression::Zstd, Compression::None]
            .into_iter()
            .map(Compression::media_type)
            .find(|t| *t == self.meta.media_type)
            .ok_or_else(|| {
                anyhow!(
                    "{}: unknown media type {}",
                    self.dir.display(),
                    self.meta.media_type
                )
            })?;
        Ok(LayerBlob {
            digest: self.meta.digest.clone(),
            diff_id: self.meta.diff_id.clone(),
            size: self.meta.size,
            media_type,
            store_paths: self.meta.store_paths.clone(),
            file: dest,
            cache: None,
        })
    }
}

/// Reads the layers at `dirs`, and every store path they cover. A covered
/// path leaves the image's other layers, so one of these layers must hold
/// it: else it would be in no layer at all.
pub fn read_all(store_dir: &str, dirs: &[String]) -> Result<(Vec<ExplicitLayer>, Vec<String>)> {
    let layers = dirs
        .iter()
        .map(|dir| ExplicitLayer::read(store_dir, Path::new(dir)))
        .collect::<Result<Vec<_>>>()?;
    let held: std::collections::BTreeSet<&String> =
        layers.iter().flat_map(|l| &l.meta.store_paths).collect();
    for layer in &layers {
        if let Some(lost) = layer.meta.covers.iter().find(|p| !held.contains(p)) {
            bail!(
                "{} covers {lost}, but none of the image's layers holds it: add the layer it builds on to `layers`",
                layer.dir.display()
            );
        }
    }
    let covered = layers
        .iter()
        .flat_map(|l| l.meta.covers.iter().cloned())
        .collect();
    Ok((layers, covered))
}
