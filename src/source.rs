//! Image sources: opens a built image given as an OCI layout directory, an
//! oci-archive or a docker-archive, and gives its manifest, config and layer
//! blobs. Archives are unpacked into a private temp dir, refusing any member
//! that would land outside it.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use crate::digest::Digest;
use crate::image;
use crate::media;

/// What a path holds: one image, or a multi-platform index of images.
pub enum Source {
    Image(ImageSource),
    Index(IndexSource),
}

/// An image index (`nixoci index`): its bytes and the images it lists, in order.
pub struct IndexSource {
    pub bytes: Vec<u8>,
    pub images: Vec<ImageSource>,
    _unpacked: Option<tempfile::TempDir>,
}

/// Opens an OCI layout, an oci-archive or a docker-archive; `reference`
/// picks an entry by its ref.name when a layout holds several.
pub fn open_source(path: &Path, reference: Option<&str>) -> Result<Source> {
    let meta =
        fs::metadata(path).with_context(|| format!("image {} does not exist", path.display()))?;
    if meta.is_dir() {
        return open_layout(path, reference, None);
    }
    let tmp = tempfile::Builder::new().prefix("nixoci-image-").tempdir()?;
    unpack_archive(path, tmp.path())
        .with_context(|| format!("cannot read archive {}", path.display()))?;
    if tmp.path().join("oci-layout").is_file() {
        let root = tmp.path().to_path_buf();
        open_layout(&root, reference, Some(tmp))
    } else if tmp.path().join("manifest.json").is_file() {
        open_docker(tmp).map(Source::Image)
    } else {
        bail!(
            "{} is neither an OCI layout, an oci-archive nor a docker-archive",
            path.display()
        )
    }
}

/// A referrer in a layout: its manifest and the blobs it names.
pub struct Referrer {
    pub artifact_type: String,
    pub manifest_bytes: Vec<u8>,
    pub blobs: Vec<LayerRef>,
}

/// One layer blob of an image.
#[derive(Clone, Debug)]
pub struct LayerRef {
    pub media_type: String,
    /// The blob's digest; for docker-archives computed on open.
    pub digest: Digest,
    pub size: u64,
    pub file: PathBuf,
}

/// An opened image.
pub struct ImageSource {
    pub config: Value,
    pub config_bytes: Vec<u8>,
    pub layers: Vec<LayerRef>,
    /// The OCI manifest bytes, when the source is an OCI layout (archives of
    /// the docker kind have none).
    pub manifest_bytes: Option<Vec<u8>>,
    pub manifest_media_type: String,
    /// Directory the blobs live in.
    pub root: PathBuf,
    /// Artifacts about this image kept in its layout (an SBOM): OCI 1.1
    /// referrers, whose `subject` is this image's manifest.
    pub referrers: Vec<Referrer>,
    _unpacked: Option<tempfile::TempDir>,
    /// Layers whose blob was checked already (`check` reads each twice).
    verified: std::sync::Mutex<std::collections::BTreeSet<Digest>>,
}

impl ImageSource {
    /// Opens `path`; `reference` picks a manifest by its ref.name when a layout holds several.
    pub fn open(path: &Path, reference: Option<&str>) -> Result<ImageSource> {
        match open_source(path, reference)? {
            Source::Image(image) => Ok(image),
            Source::Index(index) => bail!(
                "{} is a multi-platform image index ({} images); this needs one image",
                path.display(),
                index.images.len()
            ),
        }
    }

    /// The OCI manifest: the source's own, or one made for its config and
    /// layers (a docker-archive has none), with its media type.
    pub fn manifest(&self) -> (Vec<u8>, String) {
        if let Some(bytes) = &self.manifest_bytes {
            return (bytes.clone(), self.manifest_media_type.clone());
        }
        let layers = self
            .layers
            .iter()
            .map(|l| image::descriptor(&l.media_type, &l.digest, l.size))
            .collect();
        let config = image::descriptor(
            media::CONFIG,
            &Digest::of(&self.config_bytes),
            self.config_bytes.len() as u64,
        );
        (
            image::manifest_json(config, layers),
            media::MANIFEST.to_string(),
        )
    }

    /// The platform its config names, as an image index lists it.
    pub fn platform(&self) -> Value {
        let mut platform = serde_json::json!({
            "architecture": self.config["architecture"].as_str().unwrap_or("amd64"),
            "os": self.config["os"].as_str().unwrap_or("linux"),
        });
        if let Some(variant) = self.config["variant"].as_str() {
            platform["variant"] = Value::from(variant);
        }
        platform
    }

    pub fn blob(&self, digest: &Digest) -> PathBuf {
        blob_file(&self.root, digest)
    }

    /// The layer's tar stream, decompressed according to its content, once
    /// the blob is checked against its digest.
    pub fn layer_reader(&self, layer: &LayerRef) -> Result<Box<dyn Read>> {
        let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if !verified.contains(&layer.digest) {
            verify_blob(layer)?;
            verified.insert(layer.digest.clone());
        }
        drop(verified);
        media::decompressed(&layer.file)
    }
}

/// Checks a layer blob's size and sha256 against its descriptor: a blob
/// changed after the image was made is refused, never used.
pub fn verify_blob(layer: &LayerRef) -> Result<()> {
    let size = fs::metadata(&layer.file)
        .with_context(|| format!("blob {} is missing", layer.digest))?
        .len();
    let got = Digest::of_file(&layer.file)
        .with_context(|| format!("cannot read blob {}", layer.digest))?;
    if got != layer.digest || (layer.size != 0 && size != layer.size) {
        bail!(
            "blob {} is damaged: its content hashes to {got} ({size} bytes, {} expected)",
            layer.digest,
            layer.size
        );
    }
    Ok(())
}

fn check_bytes(bytes: &[u8], digest: &Digest) -> Result<()> {
    let got = Digest::of(bytes);
    if got != *digest {
        bail!("blob {digest} is damaged: its content hashes to {got}");
    }
    Ok(())
}

fn read_json(path: &Path) -> Result<(Value, Vec<u8>)> {
    let bytes = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let value = serde_json::from_slice(&bytes)
        .map_err(|e| anyhow!("{} is not valid JSON: {e}", path.display()))?;
    Ok((value, bytes))
}

fn blob_file(root: &Path, digest: &Digest) -> PathBuf {
    root.join("blobs/sha256").join(digest.hex())
}

/// The digest a descriptor names, checked (it becomes a file name).
fn digest_of(descriptor: &Value, what: &str) -> Result<Digest> {
    let text = descriptor["digest"]
        .as_str()
        .ok_or_else(|| anyhow!("{what} without digest"))?;
    Digest::parse(text).with_context(|| what.to_string())
}

fn open_layout(
    root: &Path,
    reference: Option<&str>,
    unpacked: Option<tempfile::TempDir>,
) -> Result<Source> {
    let (index, _) = read_json(&root.join("index.json"))?;
    let all = index["manifests"]
        .as_array()
        .ok_or_else(|| anyhow!("index.json lists no manifests"))?;
    // Artifacts (referrers such as SBOMs) are about an image, not one.
    let (referrer_entries, manifests): (Vec<&Value>, Vec<&Value>) =
        all.iter().partition(|m| m.get("artifactType").is_some());
    let name_of = |m: &Value| {
        m["annotations"][image::REF_NAME_ANNOTATION]
            .as_str()
            .map(str::to_string)
    };
    let chosen = match reference {
        Some(r) => manifests
            .iter()
            .find(|m| name_of(m).as_deref() == Some(r))
            .copied()
            .ok_or_else(|| anyhow!("the layout has no image tagged `{r}`"))?,
        None if manifests.len() == 1 => manifests[0],
        None => bail!(
            "the layout holds {} images; name one of: {}",
            manifests.len(),
            manifests
                .iter()
                .filter_map(|m| name_of(m))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let digest = digest_of(chosen, "index.json: a manifest")?;
    let (manifest, manifest_bytes) = read_json(&blob_file(root, &digest))?;
    check_bytes(&manifest_bytes, &digest)?;
    let is_index = |v: &Value| v["mediaType"].as_str() == Some(media::INDEX);
    if is_index(chosen) || is_index(&manifest) {
        let entries = manifest["manifests"]
            .as_array()
            .ok_or_else(|| anyhow!("the image index {digest} lists no manifests"))?;
        let images = entries
            .iter()
            .map(|entry| {
                let child = digest_of(entry, "the image index lists a manifest")?;
                if is_index(entry) {
                    bail!("the image index {digest} nests another index ({child}); nixoci reads one level");
                }
                let (value, bytes) = read_json(&blob_file(root, &child))?;
                check_bytes(&bytes, &child)?;
                image_of_manifest(root, value, bytes, None)
            })
            .collect::<Result<Vec<_>>>()?;
        return Ok(Source::Index(IndexSource {
            bytes: manifest_bytes,
            images,
            _unpacked: unpacked,
        }));
    }
    let mut image = image_of_manifest(root, manifest, manifest_bytes, unpacked)?;
    image.referrers = referrers_of(root, &referrer_entries, &digest)?;
    Ok(Source::Image(image))
}

/// The layout's referrers whose subject is the manifest `subject`.
fn referrers_of(root: &Path, entries: &[&Value], subject: &Digest) -> Result<Vec<Referrer>> {
    let mut found = Vec::new();
    for entry in entries {
        let digest = digest_of(entry, "index.json: an artifact")?;
        let (manifest, bytes) = read_json(&blob_file(root, &digest))?;
        check_bytes(&bytes, &digest)?;
        if manifest["subject"]["digest"]
            .as_str()
            .is_none_or(|d| *subject != *d)
        {
            continue;
        }
        let mut blobs = Vec::new();
        for d in std::iter::once(&manifest["config"])
            .chain(manifest["layers"].as_array().into_iter().flatten())
        {
            let digest = digest_of(d, &format!("artifact {digest}: a blob"))?;
            blobs.push(LayerRef {
                media_type: d["mediaType"].as_str().unwrap_or_default().to_string(),
                size: d["size"].as_u64().unwrap_or_default(),
                file: blob_file(root, &digest),
                digest,
            });
        }
        found.push(Referrer {
            artifact_type: manifest["artifactType"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            manifest_bytes: bytes,
            blobs,
        });
    }
    Ok(found)
}

fn image_of_manifest(
    root: &Path,
    manifest: Value,
    manifest_bytes: Vec<u8>,
    unpacked: Option<tempfile::TempDir>,
) -> Result<ImageSource> {
    let config_digest = digest_of(&manifest["config"], "the manifest's config")?;
    let (config, config_bytes) = read_json(&blob_file(root, &config_digest))?;
    check_bytes(&config_bytes, &config_digest)?;
    let layers = manifest["layers"]
        .as_array()
        .ok_or_else(|| anyhow!("manifest without layers"))?
        .iter()
        .map(|l| {
            let digest = digest_of(l, "a layer")?;
            Ok(LayerRef {
                media_type: l["mediaType"].as_str().unwrap_or_default().to_string(),
                size: l["size"].as_u64().unwrap_or_default(),
                file: blob_file(root, &digest),
                digest,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(ImageSource {
        config,
        config_bytes,
        layers,
        manifest_media_type: manifest["mediaType"]
            .as_str()
            .unwrap_or(media::MANIFEST)
            .to_string(),
        manifest_bytes: Some(manifest_bytes),
        root: root.to_path_buf(),
        referrers: Vec::new(),
        _unpacked: unpacked,
        verified: Default::default(),
    })
}

fn open_docker(tmp: tempfile::TempDir) -> Result<ImageSource> {
    let root = tmp.path().to_path_buf();
    let (manifest, _) = read_json(&root.join("manifest.json"))?;
    let entry = &manifest[0];
    let member = |name: &str| -> Result<PathBuf> {
        let p = Path::new(name);
        if p.is_absolute()
            || p.components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            bail!("manifest.json names `{name}` outside the archive");
        }
        Ok(root.join(p))
    };
    let config_name = entry["Config"]
        .as_str()
        .ok_or_else(|| anyhow!("manifest.json has no Config"))?;
    let (config, config_bytes) = read_json(&member(config_name)?)?;
    let layers = entry["Layers"]
        .as_array()
        .ok_or_else(|| anyhow!("manifest.json has no Layers"))?
        .iter()
        .map(|l| {
            let file = member(l.as_str().ok_or_else(|| anyhow!("bad layer entry"))?)?;
            let digest = Digest::of_file(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let size = fs::metadata(&file)?.len();
            Ok(LayerRef {
                media_type: media::sniff(&file)?.media_type().to_string(),
                digest,
                size,
                file,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(ImageSource {
        config,
        config_bytes,
        layers,
        manifest_bytes: None,
        manifest_media_type: media::MANIFEST.to_string(),
        root,
        referrers: Vec::new(),
        _unpacked: Some(tmp),
        verified: Default::default(),
    })
}

/// Unpacks an archive's regular files (and directories) into `dest`.
fn unpack_archive(archive: &Path, dest: &Path) -> Result<()> {
    let mut tar = tar::Archive::new(media::decompressed(archive)?);
    for entry in tar.entries()? {
        let mut entry = entry?;
        let kind = entry.header().entry_type();
        if kind.is_file() || kind.is_dir() {
            // `unpack_in` refuses names that escape `dest`.
            if !entry.unpack_in(dest)? {
                bail!(
                    "archive member {} points outside the archive",
                    entry.path()?.display()
                );
            }
        } else if kind.is_symlink() || kind.is_hard_link() {
            // skopeo's docker-archives carry legacy `<id>/layer.tar` links; follow them by copying.
            let name = entry.path()?.into_owned();
            let target = entry
                .link_name()?
                .ok_or_else(|| anyhow!("link without target"))?
                .into_owned();
            let base = name.parent().unwrap_or(Path::new(""));
            let resolved = if kind.is_symlink() {
                base.join(&target)
            } else {
                target.clone()
            };
            if let (Some(from), Some(to)) = (inside(&resolved), inside(&name)) {
                let (from, to) = (dest.join(from), dest.join(to));
                if let Some(p) = to.parent() {
                    fs::create_dir_all(p)?;
                }
                if from.is_file() {
                    fs::copy(&from, &to)?;
                }
            }
        }
    }
    Ok(())
}

/// `p` with `.` and `..` resolved lexically, if it stays inside the archive.
fn inside(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::Normal(n) => out.push(n),
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            _ => return None,
        }
    }
    Some(out)
}
