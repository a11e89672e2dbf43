//! Image sources: opens a built image given as an OCI layout directory, an
//! oci-archive or a docker-archive, as an [`Image`] (or, for a
//! multi-platform layout, an [`Index`]), every digest checked on the way.
//! Archives are unpacked into a private temp dir, refusing any member that
//! would land outside it.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use crate::digest::Digest;
use crate::image::{self, Image, Index, Layer, Referrer};
use crate::media;

/// What a path holds: one image, or a multi-platform index of images.
pub enum Source {
    Image(Image),
    Index(Index),
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
    // Errors name the archive, not the temporary directory it went to.
    let in_archive = || format!("in archive {}", path.display());
    if tmp.path().join("oci-layout").is_file() {
        let root = tmp.path().to_path_buf();
        open_layout(&root, reference, Some(tmp)).with_context(in_archive)
    } else if tmp.path().join("manifest.json").is_file() {
        open_docker(tmp).map(Source::Image).with_context(in_archive)
    } else {
        bail!(
            "{} is neither an OCI layout, an oci-archive nor a docker-archive",
            path.display()
        )
    }
}

fn check_bytes(bytes: &[u8], digest: &Digest) -> Result<()> {
    let got = Digest::of(bytes);
    if got != *digest {
        bail!("blob {digest} is damaged: its content hashes to {got}");
    }
    Ok(())
}

/// The largest index, manifest or config read: registries refuse manifests
/// over 4 MiB too, and real ones are a few KiB. A larger one is refused
/// before it is read, so it costs no memory.
pub const MAX_JSON_BYTES: u64 = 4 << 20;

fn read_json(path: &Path) -> Result<(Value, Vec<u8>)> {
    let file = fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    // Read one byte past the cap, so a file that grows is caught too.
    let mut bytes = Vec::new();
    file.take(MAX_JSON_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.len() as u64 > MAX_JSON_BYTES {
        bail!(
            "{} is over the {MAX_JSON_BYTES}-byte (4 MiB) cap for an image's index, manifest or config",
            path.display()
        );
    }
    let value = serde_json::from_slice(&bytes)
        .map_err(|e| anyhow!("{} is not valid JSON: {e}", path.display()))?;
    Ok((value, bytes))
}

fn blob_file(root: &Path, digest: &Digest) -> PathBuf {
    root.join("blobs/sha256").join(digest.hex())
}

/// The blob a descriptor names, in the layout at `root`.
fn layer_at(root: &Path, descriptor: &Value, what: &str) -> Result<Layer> {
    let digest = digest_of(descriptor, what)?;
    Ok(Layer {
        media_type: descriptor["mediaType"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        size: descriptor["size"].as_u64().unwrap_or_default(),
        file: blob_file(root, &digest),
        digest,
    })
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
        return Ok(Source::Index(Index {
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
        // cosign's signatures and attestations name their image only by
        // their tag, `sha256-<hex>.sig` or `.att`.
        let tag = entry["annotations"][image::TAG_ANNOTATION]
            .as_str()
            .map(str::to_string);
        let about_it = match &tag {
            Some(t) => [".sig", ".att"]
                .iter()
                .any(|suffix| *t == format!("sha256-{}{suffix}", subject.hex())),
            None => manifest["subject"]["digest"]
                .as_str()
                .is_some_and(|d| *subject == *d),
        };
        if !about_it {
            continue;
        }
        let what = format!("artifact {digest}: a blob");
        let blobs = std::iter::once(&manifest["config"])
            .chain(manifest["layers"].as_array().into_iter().flatten())
            .map(|d| layer_at(root, d, &what))
            .collect::<Result<Vec<_>>>()?;
        found.push(Referrer {
            artifact_type: entry["artifactType"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            manifest_bytes: bytes,
            blobs,
            tag,
        });
    }
    Ok(found)
}

fn image_of_manifest(
    root: &Path,
    manifest: Value,
    manifest_bytes: Vec<u8>,
    unpacked: Option<tempfile::TempDir>,
) -> Result<Image> {
    let config_digest = digest_of(&manifest["config"], "the manifest's config")?;
    let (config, config_bytes) = read_json(&blob_file(root, &config_digest))?;
    check_bytes(&config_bytes, &config_digest)?;
    let layers = manifest["layers"]
        .as_array()
        .ok_or_else(|| anyhow!("manifest without layers"))?
        .iter()
        .map(|l| layer_at(root, l, "a layer"))
        .collect::<Result<Vec<_>>>()?;
    Ok(Image {
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

fn open_docker(tmp: tempfile::TempDir) -> Result<Image> {
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
            Ok(Layer {
                media_type: media::sniff(&file)?.media_type().to_string(),
                digest,
                size,
                file,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let image = Image {
        config,
        config_bytes,
        layers,
        manifest_bytes: None,
        manifest_media_type: media::MANIFEST.to_string(),
        root,
        referrers: Vec::new(),
        _unpacked: Some(tmp),
        verified: Default::default(),
    };
    check_docker_diff_ids(&image)?;
    Ok(image)
}

/// A docker-archive names no layer digests, so its config's `diff_ids` are
/// all that ties the layers to it: each must be the digest of its layer's
/// tar. For a plain layer (the usual kind) that is the digest already known.
fn check_docker_diff_ids(image: &Image) -> Result<()> {
    for (i, (layer, diff_id)) in image.layers.iter().zip(image.diff_ids()?).enumerate() {
        let tar_digest = if media::sniff(&layer.file)? == media::Compression::None {
            layer.digest.clone()
        } else {
            let mut hasher = crate::nix::Sha256Counter::default();
            std::io::copy(&mut media::decompressed(&layer.file)?, &mut hasher)
                .with_context(|| format!("cannot read {}", layer.file.display()))?;
            Digest::from_raw(&hasher.finish().0)
        };
        if tar_digest != diff_id {
            bail!(
                "layer {} of the docker-archive is not the one its config names: the config's diff_id is {diff_id}, the layer's tar is {tar_digest}",
                i + 1
            );
        }
    }
    Ok(())
}

/// Unpacks an archive's regular files (and directories) into `dest`.
fn unpack_archive(archive: &Path, dest: &Path) -> Result<()> {
    let mut budget = media::UnpackBudget::for_archive(archive)?;
    let mut tar = tar::Archive::new(media::decompressed(archive)?);
    // Readers disagree on which of two members of one name counts (skopeo
    // takes the first, a plain unpack the last): refused, so that every
    // tool acts on the same image.
    let mut members = std::collections::HashSet::new();
    for entry in tar.entries()? {
        let mut entry = entry?;
        let kind = entry.header().entry_type();
        if !kind.is_dir() {
            let name = entry.path()?.into_owned();
            if !members.insert(inside(&name).unwrap_or_else(|| name.clone())) {
                bail!(
                    "archive member {} appears twice (tools disagree on which one counts)",
                    name.display()
                );
            }
        }
        if kind.is_file() || kind.is_dir() {
            budget.spend(entry.header().size()?)?;
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
                    budget.spend(fs::metadata(&from)?.len())?;
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

impl Image {
    /// Opens `path`; `reference` picks a manifest by its ref.name when a layout holds several.
    pub fn open(path: &Path, reference: Option<&str>) -> Result<Image> {
        match open_source(path, reference)? {
            Source::Image(image) => Ok(image),
            Source::Index(index) => bail!(
                "{} is a multi-platform image index ({} images); this needs one image",
                path.display(),
                index.images.len()
            ),
        }
    }
}
