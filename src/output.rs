//! Output formats: an OCI image layout directory, a docker-archive (the
//! `docker save` format that skopeo and podman load) and an oci-archive; all
//! written atomically, so a failed build leaves nothing at the output path.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::json;

use crate::digest::Digest;
use crate::image::{self, Image, Index, NewArtifact};
use crate::layer::tar::{Owner, TarWriter};
use crate::media::compress::Compressor;
use crate::media::{self, Compression};

/// The output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// An OCI image layout directory (`oci-layout`, `index.json`, `blobs/`).
    OciLayout,
    /// A `docker save` tar (uncompressed layers), for `skopeo copy docker-archive:` and `podman load`.
    DockerArchive,
    /// An OCI image layout packed in a tar.
    OciArchive,
}

/// Where the result goes.
#[derive(Clone, Debug)]
pub enum Destination {
    Path(PathBuf),
    Stdout,
}

impl Destination {
    pub fn parse(text: &str) -> Destination {
        if text == "-" {
            Destination::Stdout
        } else {
            Destination::Path(PathBuf::from(text))
        }
    }
}

/// A scratch directory beside the output, removed unless it is kept.
pub struct Staging {
    pub dir: PathBuf,
    /// `--force`: the output may replace anything, not only what nixoci wrote.
    force: bool,
}

/// Staging directories are named `.NAME.nixoci-PID`.
const STAGING_MARK: &str = ".nixoci-";

impl Staging {
    /// Creates the staging directory in the output's parent (so the final
    /// rename stays on one filesystem), or in the temp dir for stdout. It
    /// first checks that the output may be replaced, so that a refused
    /// output costs no build, and removes what dead runs left behind.
    pub fn new(dest: &Destination, force: bool) -> Result<Staging> {
        let parent = match dest {
            Destination::Path(p) => {
                check_replaceable(p, force)?;
                let parent = p
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
                if !parent.is_dir() {
                    bail!("output directory {} does not exist", parent.display());
                }
                parent.to_path_buf()
            }
            Destination::Stdout => std::env::temp_dir(),
        };
        let name = match dest {
            Destination::Path(p) => p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            Destination::Stdout => "stdout".into(),
        };
        remove_stale_staging(&parent, &name);
        let dir = parent.join(format!(".{name}{STAGING_MARK}{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir(&dir)
            .with_context(|| format!("cannot write to {}: is it writable?", parent.display()))?;
        Ok(Staging { dir, force })
    }

    /// Moves the finished `staged` file or directory to `dest`.
    pub fn commit(&self, staged: &Path, dest: &Path) -> Result<()> {
        check_replaceable(dest, self.force)?;
        commit(staged, dest)
    }

    pub fn blob_dir(&self) -> Result<PathBuf> {
        let blobs = self.dir.join("layout/blobs/sha256");
        fs::create_dir_all(&blobs).with_context(|| format!("cannot create {}", blobs.display()))?;
        Ok(blobs)
    }

    pub fn layout_dir(&self) -> PathBuf {
        self.dir.join("layout")
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// `-o` replaces only what nixoci itself writes: an OCI layout (a directory
/// with `oci-layout`) or a regular file. Anything else (a directory of the
/// user's, a symlink, a device) needs `--force`.
pub fn check_replaceable(dest: &Path, force: bool) -> Result<()> {
    let meta = match fs::symlink_metadata(dest) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(anyhow!("cannot look at the output {}: {e}", dest.display())),
    };
    if force || meta.is_file() {
        return Ok(());
    }
    if meta.is_dir() && fs::symlink_metadata(dest.join("oci-layout")).is_ok_and(|m| m.is_file()) {
        return Ok(());
    }
    let what = if meta.is_dir() {
        "a directory that is not an OCI layout"
    } else if meta.file_type().is_symlink() {
        "a symlink"
    } else {
        "not a regular file"
    };
    bail!(
        "the output {} exists and is {what}; nixoci replaces only OCI layouts and files. \
         Choose another path, or pass --force to replace it",
        dest.display()
    )
}

/// Removes `.NAME.nixoci-PID` staging directories beside the output whose
/// process is gone (killed runs cannot clean up after themselves).
fn remove_stale_staging(parent: &Path, name: &str) {
    let prefix = format!(".{name}{STAGING_MARK}");
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(pid) = file_name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Writes a small blob into the layout and returns its digest.
pub fn write_blob(blob_dir: &Path, bytes: &[u8]) -> Result<Digest> {
    let digest = Digest::of(bytes);
    let path = blob_dir.join(digest.hex());
    fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(digest)
}

/// Finishes the layout (`oci-layout`, `index.json`).
pub fn finish_layout(layout: &Path, index: &[u8]) -> Result<()> {
    fs::write(
        layout.join("oci-layout"),
        image::canonical(&json!({"imageLayoutVersion": "1.0.0"})),
    )?;
    fs::write(layout.join("index.json"), index)?;
    Ok(())
}

/// Moves a finished file or directory to `dest`, replacing what is there in
/// one step (an existing directory, or a file where a directory goes, is
/// swapped out, then removed). Callers check first that `dest` may go.
fn commit(staged: &Path, dest: &Path) -> Result<()> {
    sync_dir(staged);
    let swap = fs::symlink_metadata(dest).is_ok_and(|existing| {
        existing.is_dir() || fs::symlink_metadata(staged).is_ok_and(|m| m.is_dir())
    });
    if swap {
        let old = dest.with_file_name(format!(
            ".{}.old-{}",
            dest.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            std::process::id()
        ));
        fs::rename(dest, &old).with_context(|| format!("cannot replace {}", dest.display()))?;
        if let Err(e) = fs::rename(staged, dest) {
            let _ = fs::rename(&old, dest);
            return Err(anyhow!("cannot move the result to {}: {e}", dest.display()));
        }
        let _ = fs::remove_dir_all(&old).or_else(|_| fs::remove_file(&old));
    } else if let Err(e) = fs::rename(staged, dest) {
        if e.kind() != std::io::ErrorKind::CrossesDevices {
            return Err(anyhow!("cannot move the result to {}: {e}", dest.display()));
        }
        // Staged on another file system (a Nix build directory): copy, then drop the stage.
        if let Err(e) = copy_tree(staged, dest) {
            let _ = fs::remove_dir_all(dest).or_else(|_| fs::remove_file(dest));
            return Err(e.context(format!("cannot copy the result to {}", dest.display())));
        }
    }
    if let Some(parent) = dest.parent() {
        sync_dir(parent);
    }
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    let meta = fs::symlink_metadata(from)?;
    if meta.file_type().is_symlink() {
        // Blobs of explicit layers point into the store: keep pointing.
        std::os::unix::fs::symlink(fs::read_link(from)?, to)?;
    } else if meta.is_dir() {
        fs::create_dir(to)?;
        for entry in fs::read_dir(from)? {
            let entry = entry?;
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
    } else {
        fs::copy(from, to)?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// One member of an archive: its name and the file it is copied from.
pub struct Member {
    pub name: String,
    pub file: PathBuf,
}

/// Writes an uncompressed tar of regular files (the outer archive of
/// docker-archive and oci-archive), each directory entry (`blobs/`,
/// `blobs/sha256/`) before the first member inside it, as strict readers want.
pub fn write_archive<W: Write>(out: W, members: &[Member], mtime: u64) -> Result<W> {
    let mut tar = TarWriter::new(out);
    let owner = Owner::numeric_root(mtime);
    let mut made: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    for m in members {
        let mut dir = String::new();
        for part in m
            .name
            .split('/')
            .collect::<Vec<_>>()
            .split_last()
            .map_or(&[][..], |(_, d)| d)
        {
            dir.push_str(part);
            dir.push('/');
            if made.insert(dir.clone()) {
                tar.directory(dir.as_bytes(), 0o755, &owner)?;
            }
        }
        let mut file =
            File::open(&m.file).with_context(|| format!("cannot read {}", m.file.display()))?;
        let size = file.metadata()?.len();
        tar.file(
            m.name.as_bytes(),
            0o644,
            size,
            &owner,
            &mut file,
            &mut |_| Ok(()),
        )?;
    }
    Ok(tar.finish()?)
}

/// How a whole archive is compressed (nixpkgs' `compressor`), with the
/// threads that do it.
pub struct ArchiveCompression<'a> {
    pub kind: Compression,
    pub threads: &'a Arc<rayon::ThreadPool>,
    pub zstd_workers: u32,
}

impl ArchiveCompression<'_> {
    fn writer<W: Write>(&self, out: W) -> io::Result<Compressor<W>> {
        Compressor::new(self.kind, out, self.threads, self.zstd_workers)
    }
}

/// How an image is written out: its format, the name an archive gives it
/// (as `docker save` takes one), the archive members' mtime and the whole
/// archive's compression.
pub struct Target<'a> {
    pub format: Format,
    pub reference: &'a str,
    pub mtime: u64,
    pub archive: ArchiveCompression<'a>,
}

/// Writes an image whose blobs are in the staging layout to its
/// destination: the layout renamed into place, or an archive of it
/// (oci-archive) or of its layers and config (docker-archive), compressed
/// as asked.
pub fn emit(image: &Image, target: &Target, staging: &Staging, dest: &Destination) -> Result<()> {
    let archive = &target.archive;
    match (target.format, dest) {
        (Format::OciLayout, _) if archive.kind != Compression::None => {
            bail!("--archive-compression applies to the archive formats; an OCI layout's layers take --compression")
        }
        (Format::OciLayout, Destination::Path(path)) => staging.commit(&image.root, path),
        (Format::OciLayout, Destination::Stdout) => {
            bail!("an OCI layout is a directory and cannot go to stdout; use --format oci-archive or docker-archive")
        }
        (Format::OciArchive, dest) => emit_archive(
            staging,
            dest,
            &layout_members(&image.root)?,
            target.mtime,
            archive,
        ),
        (Format::DockerArchive, dest) => {
            let members = docker_archive_members(staging, image, target.reference)?;
            emit_archive(staging, dest, &members, target.mtime, archive)
        }
    }
}

/// Writes an archive, compressed as asked, to the destination: stdout, or a
/// temp file renamed into place.
pub fn emit_archive(
    staging: &Staging,
    dest: &Destination,
    members: &[Member],
    mtime: u64,
    compression: &ArchiveCompression,
) -> Result<()> {
    match dest {
        Destination::Stdout => {
            let stdout = BufWriter::new(io::stdout().lock());
            let mut w = write_archive(compression.writer(stdout)?, members, mtime)?.finish()?;
            w.flush()?;
        }
        Destination::Path(path) => {
            let tmp = staging.dir.join("archive.tar");
            let file = BufWriter::new(File::create(&tmp)?);
            let w = write_archive(compression.writer(file)?, members, mtime)?.finish()?;
            let file = w.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
            staging.commit(&tmp, path)?;
        }
    }
    Ok(())
}

/// The members of an oci-archive: the whole layout directory.
pub fn layout_members(layout: &Path) -> Result<Vec<Member>> {
    let mut members = vec![
        Member {
            name: "oci-layout".into(),
            file: layout.join("oci-layout"),
        },
        Member {
            name: "index.json".into(),
            file: layout.join("index.json"),
        },
    ];
    let mut blobs: Vec<_> = fs::read_dir(layout.join("blobs/sha256"))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<io::Result<_>>()?;
    blobs.sort();
    for b in blobs {
        members.push(Member {
            name: format!("blobs/sha256/{b}"),
            file: layout.join("blobs/sha256").join(&b),
        });
    }
    Ok(members)
}

/// Writes an OCI layout whose `index.json` names the image index `index`
/// under `tag` and `reference`; its images' blobs are copied in (symlinks
/// into the store, as explicit layers are, stay symlinks), each checked
/// against its digest. Returns the index's digest.
pub fn write_index(
    index: &Index,
    tag: &str,
    reference: &str,
    dest: &Destination,
    force: bool,
) -> Result<Digest> {
    let Destination::Path(dest) = dest else {
        bail!("an OCI layout is a directory and cannot go to stdout");
    };
    let staging = Staging::new(&Destination::Path(dest.to_path_buf()), force)?;
    let blob_dir = staging.blob_dir()?;
    for image in &index.images {
        write_blob(&blob_dir, &image.config_bytes)?;
        for layer in &image.layers {
            layer.verify()?;
            let to = blob_dir.join(layer.digest.hex());
            if fs::symlink_metadata(&to).is_err() {
                copy_tree(&layer.file, &to)
                    .with_context(|| format!("cannot copy blob {}", layer.digest))?;
            }
        }
        write_blob(&blob_dir, &image.manifest().0)?;
    }
    let digest = write_blob(&blob_dir, &index.bytes)?;
    let layout = staging.layout_dir();
    finish_layout(
        &layout,
        &image::index_json(
            image::descriptor(media::INDEX, &digest, index.bytes.len() as u64),
            tag,
            reference,
        ),
    )?;
    staging.commit(&layout, dest)?;
    Ok(digest)
}

/// Keeps `bytes` (of media type `artifact_type`, e.g. an SBOM) in the OCI
/// layout as an OCI 1.1 referrer of its image: the blob, an artifact
/// manifest whose `subject` is the image's manifest, and an `index.json`
/// entry with its `artifactType`. One referrer per type: attaching again
/// replaces the earlier one.
pub fn attach_referrer(
    layout: &Path,
    artifact_type: &str,
    bytes: &[u8],
    created: &str,
) -> Result<Digest> {
    let image = open_layout_image(layout)?;
    let artifact = NewArtifact::referrer(
        artifact_type,
        artifact_type,
        bytes.to_vec(),
        image_descriptor(&image),
        created,
        &[],
    );
    let digest = Digest::of(&artifact.manifest);
    attach_artifacts(layout, &[artifact])?;
    Ok(digest)
}

/// The image of the OCI layout `layout` (attaching works on layouts only).
pub fn open_layout_image(layout: &Path) -> Result<Image> {
    if !layout.join("oci-layout").is_file() {
        bail!(
            "{} is not an OCI layout directory: attach works on layouts",
            layout.display()
        );
    }
    Image::open(layout, None)
}

/// The descriptor of `image`'s manifest: an artifact's subject.
pub fn image_descriptor(image: &Image) -> serde_json::Value {
    let (manifest, media_type) = image.manifest();
    image::descriptor(&media_type, &Digest::of(&manifest), manifest.len() as u64)
}

/// The `index.json` annotation that names an artifact's kind.
const KIND_ANNOTATION: &str = "dev.nixoci.artifact";

/// Keeps `artifacts` in the layout: their blobs, and one `index.json` entry
/// each (with its `artifactType`, kind and tag), replacing any earlier
/// artifact of the same kind. `index.json` is replaced in one rename.
pub fn attach_artifacts(layout: &Path, artifacts: &[NewArtifact]) -> Result<()> {
    let blob_dir = layout.join("blobs/sha256");
    let index_file = layout.join("index.json");
    let mut index: serde_json::Value = serde_json::from_slice(
        &fs::read(&index_file).with_context(|| format!("cannot read {}", index_file.display()))?,
    )?;
    let entries = index["manifests"]
        .as_array_mut()
        .ok_or_else(|| anyhow!("{} lists no manifests", index_file.display()))?;
    for artifact in artifacts {
        for blob in &artifact.blobs {
            write_blob(&blob_dir, blob)?;
        }
        let digest = write_blob(&blob_dir, &artifact.manifest)?;
        // Entries written before kinds were recorded are known by their type.
        entries.retain(|e| {
            e["annotations"][KIND_ANNOTATION]
                .as_str()
                .or_else(|| e["artifactType"].as_str())
                != Some(artifact.kind.as_str())
        });
        let mut entry = image::descriptor(media::MANIFEST, &digest, artifact.manifest.len() as u64);
        entry["artifactType"] = json!(artifact.artifact_type);
        entry["annotations"] = json!({KIND_ANNOTATION: artifact.kind});
        if let Some(tag) = &artifact.tag {
            entry["annotations"][image::TAG_ANNOTATION] = json!(tag);
        }
        entries.push(entry);
    }
    let tmp = layout.join(".index.json.nixoci-tmp");
    fs::write(&tmp, image::canonical(&index))?;
    fs::rename(&tmp, &index_file)?;
    Ok(())
}

/// `docker save` layout: `<diff_id>/layer.tar`, `<config digest>.json`,
/// `manifest.json`. Its layers are plain tars, named by their diff_ids.
fn docker_archive_members(
    staging: &Staging,
    image: &Image,
    reference: &str,
) -> Result<Vec<Member>> {
    let diff_ids = image.diff_ids()?;
    if let Some(layer) = image
        .layers
        .iter()
        .find(|l| !Compression::is_plain_layer(&l.media_type))
    {
        bail!(
            "a docker-archive holds plain tars, and layer {} is {}",
            layer.digest,
            layer.media_type
        );
    }
    let layer_names: Vec<String> = diff_ids
        .iter()
        .map(|d| format!("{}/layer.tar", d.hex()))
        .collect();
    let mut members: Vec<Member> = image
        .layers
        .iter()
        .zip(&layer_names)
        .map(|(l, name)| Member {
            name: name.clone(),
            file: l.file.clone(),
        })
        .collect();
    let config_name = format!("{}.json", Digest::of(&image.config_bytes).hex());
    let config_file = staging.dir.join("config.json");
    fs::write(&config_file, &image.config_bytes)?;
    members.push(Member {
        name: config_name.clone(),
        file: config_file,
    });
    let manifest = json!([{
        "Config": config_name,
        "RepoTags": [reference],
        "Layers": layer_names,
    }]);
    let manifest_file = staging.dir.join("manifest.json");
    fs::write(&manifest_file, image::canonical(&manifest))?;
    members.push(Member {
        name: "manifest.json".into(),
        file: manifest_file,
    });
    Ok(members)
}
