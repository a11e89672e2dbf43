//! Media types and compression: the names OCI and Docker give to manifests,
//! configs, indexes and layers; how a layer is compressed ([`Compression`],
//! with the deterministic parallel encoders in [`compress`]); and how any
//! blob or archive is recognised and decompressed again ([`sniff`],
//! [`decompressed`]), behind the guard that bounds what an untrusted tar's
//! headers can make a reader allocate ([`tar_guard`]). Every other module
//! asks this one.

pub mod compress;
pub mod tar_guard;

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use anyhow::{Context, Result};

use tar_guard::TarGuard;

pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// The config of an artifact that has none (OCI 1.1).
pub const EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// A plain-tar layer as Docker names it (docker-archives pushed by skopeo).
pub const DOCKER_PLAIN_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";

/// What a registry is asked for when a manifest is fetched: any of these.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// Layer compression.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// gzip (libdeflate, 1 MiB members compressed in parallel): every runtime
    /// can pull it.
    Gzip,
    /// zstd level 3: faster and smaller; needs containerd 1.5+ / Docker 23+.
    Zstd,
    /// Plain tar.
    None,
}

impl Compression {
    /// The OCI layer media type of a tar compressed this way.
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
        }
    }

    /// Whether a layer of `media_type` is a plain tar (OCI or Docker name).
    pub fn is_plain_layer(media_type: &str) -> bool {
        media_type == Compression::None.media_type() || media_type == DOCKER_PLAIN_LAYER
    }
}

/// How a blob is compressed, read from its magic bytes (never from a name
/// the blob's producer chose).
pub fn sniff(file: &Path) -> Result<Compression> {
    let mut magic = [0u8; 4];
    let n = File::open(file)
        .and_then(|mut f| f.read(&mut magic))
        .with_context(|| format!("cannot read {}", file.display()))?;
    Ok(match &magic[..n] {
        [0x1f, 0x8b, ..] => Compression::Gzip,
        [0x28, 0xb5, 0x2f, 0xfd] => Compression::Zstd,
        _ => Compression::None,
    })
}

/// The tar stream of a layer or archive, decompressed as its content says,
/// behind the guard that bounds the memory its headers can ask for.
pub fn decompressed(file: &Path) -> Result<Box<dyn Read>> {
    let open = || File::open(file).with_context(|| format!("cannot open {}", file.display()));
    let stream: Box<dyn Read> = match sniff(file)? {
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(open()?))),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(open()?)?),
        Compression::None => Box::new(BufReader::new(open()?)),
    };
    Ok(Box::new(TarGuard::new(stream)))
}

/// How many bytes unpacking one archive into a temporary directory may
/// write: a small `.tar.gz` can expand a thousandfold, and on a tmpfs
/// `$TMPDIR` every byte is memory. The budget is 32 times the archive's size
/// or 256 MiB, whichever is more; `NIXOCI_MAX_UNPACK` (bytes) sets another.
pub struct UnpackBudget {
    archive: String,
    cap: u64,
    spent: u64,
}

/// The variable that sets the unpack budget, in bytes.
pub const MAX_UNPACK_VAR: &str = "NIXOCI_MAX_UNPACK";

impl UnpackBudget {
    pub fn for_archive(archive: &Path) -> Result<Self> {
        let size = std::fs::metadata(archive)
            .with_context(|| format!("cannot read {}", archive.display()))?
            .len();
        let cap = match std::env::var(MAX_UNPACK_VAR) {
            Ok(text) => text
                .trim()
                .parse::<u64>()
                .map_err(|_| anyhow::anyhow!("{MAX_UNPACK_VAR}={text} is not a number of bytes"))?,
            Err(_) => size.saturating_mul(32).max(256 << 20),
        };
        Ok(UnpackBudget {
            archive: archive.display().to_string(),
            cap,
            spent: 0,
        })
    }

    /// Counts `bytes` about to be written; fails, naming the cap, once the
    /// total would pass it.
    pub fn spend(&mut self, bytes: u64) -> Result<()> {
        self.spent = self.spent.saturating_add(bytes);
        if self.spent > self.cap {
            anyhow::bail!(
                "unpacking {} would write more than {} bytes into the temporary directory (the cap: 32 times the archive's size, at least 256 MiB); set {MAX_UNPACK_VAR}=BYTES to allow more",
                self.archive,
                self.cap
            );
        }
        Ok(())
    }
}
