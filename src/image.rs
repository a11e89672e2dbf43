//! The image model and its JSON: [`Image`], [`Layer`] and [`Index`] (what
//! every reader in `source` makes, `build` produces, and every writer in
//! `output` and the pusher take); the image config (runtime config, rootfs,
//! history), the manifest and the index, all as canonical JSON (sorted keys,
//! no spaces) so digests are stable; the timestamps they carry; and the
//! store paths an image holds (its history's, else its layers').

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Map, Value};

use crate::digest::Digest;
use crate::layer::LayerBlob;
use crate::media;

pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
/// The `index.json` annotation that names the tag an artifact of a layout
/// is pushed under (cosign's signatures and attestations).
pub const TAG_ANNOTATION: &str = "dev.nixoci.tag";

/// nixpkgs' default `created`: one second after the epoch.
pub const DEFAULT_CREATED: &str = "1970-01-01T00:00:01Z";

/// The runtime-config keys nixoci passes on, in nixpkgs' `config` shape.
const KNOWN_CONFIG_KEYS: &[&str] = &[
    "User",
    "ExposedPorts",
    "Env",
    "Entrypoint",
    "Cmd",
    "Volumes",
    "WorkingDir",
    "Labels",
    "StopSignal",
    "ArgsEscaped",
    "Healthcheck",
    "OnBuild",
    "Shell",
];

/// Checks a user `config` object against the OCI types (via oci-spec) and
/// rejects keys no runtime reads, which are almost always typos.
pub fn validate_config(config: &Value, source: &str) -> Result<Map<String, Value>> {
    let map = match config {
        Value::Object(m) => m.clone(),
        Value::Null => Map::new(),
        _ => bail!("{source}: config must be a JSON object like nixpkgs' `config` attribute"),
    };
    for key in map.keys() {
        if !KNOWN_CONFIG_KEYS.contains(&key.as_str()) {
            bail!(
                "{source}: unknown config key `{key}` (known: {})",
                KNOWN_CONFIG_KEYS.join(", ")
            );
        }
    }
    serde_json::from_value::<oci_spec::image::Config>(Value::Object(map.clone()))
        .map_err(|e| anyhow!("{source}: invalid config: {e}"))?;
    Ok(map)
}

/// Every string in a JSON value (keys included), for finding store paths.
pub fn json_strings(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|v| json_strings(v, out)),
        Value::Object(map) => map.iter().for_each(|(k, v)| {
            out.push(k.clone());
            json_strings(v, out)
        }),
        _ => {}
    }
}

/// The Go architecture name of this machine, as nixpkgs' `go.GOARCH`.
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "riscv64" => "riscv64",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        other => other,
    }
}

/// Everything the image config holds besides the layers.
pub struct ConfigInput<'a> {
    pub config: &'a Map<String, Value>,
    pub architecture: &'a str,
    pub created: &'a str,
}

fn history_comment(paths: &[String]) -> String {
    let quoted: Vec<String> = paths.iter().map(|p| format!("'{p}'")).collect();
    format!("store paths: [{}]", quoted.join(", "))
}

/// The image config JSON: one history entry per layer, rootfs lists diff_ids.
pub fn config_json(input: &ConfigInput, layers: &[LayerBlob]) -> Vec<u8> {
    let history: Vec<Value> = layers
        .iter()
        .map(|l| {
            json!({
                "created": input.created,
                "created_by": "nixoci",
                "comment": history_comment(&l.store_paths),
            })
        })
        .collect();
    let value = json!({
        "architecture": input.architecture,
        "os": "linux",
        "created": input.created,
        "config": Value::Object(input.config.clone()),
        "rootfs": {
            "type": "layers",
            "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>(),
        },
        "history": history,
    });
    canonical(&value)
}

/// An image index listing manifests (each descriptor with its `platform`).
pub fn image_index_json(manifests: Vec<Value>) -> Vec<u8> {
    canonical(&json!({
        "schemaVersion": 2,
        "mediaType": media::INDEX,
        "manifests": manifests,
    }))
}

/// OCI 1.1's empty config (`{}`) of an artifact manifest.
pub const EMPTY_BLOB: &[u8] = b"{}";

/// An OCI 1.1 artifact manifest: one `blob` of `artifact_type`, about the
/// manifest `subject` (a referrer, as an SBOM is to its image).
fn artifact_manifest(
    artifact_type: &str,
    blob: Value,
    subject: Value,
    created: &str,
    annotations: &[(&str, &str)],
) -> Vec<u8> {
    let mut all = json!({"org.opencontainers.image.created": created});
    for (k, v) in annotations {
        all[*k] = json!(v);
    }
    canonical(&json!({
        "schemaVersion": 2,
        "mediaType": media::MANIFEST,
        "artifactType": artifact_type,
        "config": descriptor(media::EMPTY, &Digest::of(EMPTY_BLOB), EMPTY_BLOB.len() as u64),
        "layers": [blob],
        "subject": subject,
        "annotations": all,
    }))
}

/// An artifact about an image, made to be kept in its layout and pushed
/// with it: an SBOM, a signature, an attestation.
pub struct NewArtifact {
    /// What it is, for replacing an earlier one of the same kind (an
    /// SBOM's media type, `signature-bundle`, ...).
    pub kind: String,
    pub artifact_type: String,
    pub manifest: Vec<u8>,
    /// Every blob the manifest names (its config and layers).
    pub blobs: Vec<Vec<u8>>,
    /// The tag it is pushed under instead of as a referrer (cosign's
    /// `sha256-<hex>.sig` and `.att`, whose manifests have no subject).
    pub tag: Option<String>,
}

impl NewArtifact {
    /// An OCI 1.1 referrer of the manifest `subject`: `document` (of media
    /// type `artifact_type`) as its one layer, with an empty config.
    pub fn referrer(
        kind: &str,
        artifact_type: &str,
        document: Vec<u8>,
        subject: Value,
        created: &str,
        annotations: &[(&str, &str)],
    ) -> NewArtifact {
        let layer = descriptor(artifact_type, &Digest::of(&document), document.len() as u64);
        NewArtifact {
            kind: kind.to_string(),
            artifact_type: artifact_type.to_string(),
            manifest: artifact_manifest(artifact_type, layer, subject, created, annotations),
            blobs: vec![document, EMPTY_BLOB.to_vec()],
            tag: None,
        }
    }
}

/// A content descriptor.
pub fn descriptor(media_type: &str, digest: &Digest, size: u64) -> Value {
    json!({ "mediaType": media_type, "digest": digest, "size": size })
}

/// The image manifest, from the config's and the layers' descriptors.
pub fn manifest_json(config: Value, layers: Vec<Value>) -> Vec<u8> {
    let value = json!({
        "schemaVersion": 2,
        "mediaType": media::MANIFEST,
        "config": config,
        "layers": layers,
    });
    canonical(&value)
}

/// The layout's `index.json`, naming the manifest by tag and full reference.
pub fn index_json(manifest: Value, tag: &str, reference: &str) -> Vec<u8> {
    let mut manifest = manifest;
    manifest["annotations"] = json!({
        REF_NAME_ANNOTATION: tag,
        "io.containerd.image.name": normalized_name(reference),
    });
    canonical(&json!({
        "schemaVersion": 2,
        "mediaType": media::INDEX,
        "manifests": [manifest],
    }))
}

/// `NAME[:TAG]` as docker and podman read it: NAME alone is NAME:latest,
/// and a colon before the last `/` belongs to a registry host's port.
pub fn split_name_tag(given: &str) -> Result<(String, String)> {
    let (name, tag) = match given.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n, t),
        _ => (given, "latest"),
    };
    if name.is_empty() || tag.is_empty() {
        bail!("--tag `{given}` must be NAME or NAME:TAG");
    }
    Ok((name.to_string(), tag.to_string()))
}

/// A reference as containerd and the Kubernetes CRI look images up:
/// `hello:1` is `docker.io/library/hello:1`, `team/app:1` is
/// `docker.io/team/app:1`, and a name whose first part is a host
/// (`registry.example.com/…`, `localhost:5000/…`) stays as it is.
pub fn normalized_name(reference: &str) -> String {
    let host = reference.split_once('/').map(|(first, _)| first);
    match host {
        Some(h) if h.contains('.') || h.contains(':') || h == "localhost" => reference.to_string(),
        Some(_) => format!("docker.io/{reference}"),
        None => format!("docker.io/library/{reference}"),
    }
}

/// Compact JSON with keys sorted (serde_json's map is a BTreeMap here).
pub fn canonical(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("a JSON value always serialises")
}

/// Resolves a `created`/`mtime` setting to Unix seconds: an RFC 3339 time,
/// `now`, `SOURCE_DATE_EPOCH` (read from the environment) or `@SECONDS`.
pub fn resolve_time(text: &str) -> Result<i64> {
    // Years 1970 to 9999: what image tools can print and parse back.
    const LATEST: i64 = 253_402_300_799;
    let secs = resolve_any_time(text)?;
    if !(0..=LATEST).contains(&secs) {
        bail!("`{text}` is outside 1970-01-01T00:00:00Z ..= 9999-12-31T23:59:59Z");
    }
    Ok(secs)
}

fn resolve_any_time(text: &str) -> Result<i64> {
    match text {
        "now" => Ok(SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|_| anyhow!("the clock is before 1970"))?
            .as_secs() as i64),
        "SOURCE_DATE_EPOCH" => {
            let v = std::env::var("SOURCE_DATE_EPOCH").map_err(|_| {
                anyhow!("created = SOURCE_DATE_EPOCH, but SOURCE_DATE_EPOCH is not set")
            })?;
            v.trim()
                .parse()
                .map_err(|_| anyhow!("SOURCE_DATE_EPOCH=`{v}` is not a number of seconds"))
        }
        t if t.starts_with('@') => t[1..].parse().map_err(|_| anyhow!("`{t}` is not @SECONDS")),
        t => parse_rfc3339(t),
    }
}

fn parse_rfc3339(text: &str) -> Result<i64> {
    let bad = || {
        anyhow!("`{text}` is not a time: use RFC 3339 (1970-01-01T00:00:01Z), now, SOURCE_DATE_EPOCH or @SECONDS")
    };
    let b = text.as_bytes();
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || !(b[10] == b'T' || b[10] == b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| {
        text.get(r)
            .and_then(|s| s.parse::<i64>().ok())
            .ok_or_else(bad)
    };
    let (y, mo, d, h, mi, s) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    let mut rest = &text[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" | "" => 0,
        tz if tz.len() == 6 && (tz.starts_with('+') || tz.starts_with('-')) && &tz[3..4] == ":" => {
            let sign = if tz.starts_with('-') { -1 } else { 1 };
            let hh: i64 = tz[1..3].parse().map_err(|_| bad())?;
            let mm: i64 = tz[4..6].parse().map_err(|_| bad())?;
            if hh > 23 || mm > 59 {
                return Err(bad());
            }
            sign * (hh * 3600 + mm * 60)
        }
        _ => return Err(bad()),
    };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return Err(bad());
    }
    Ok(days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s - offset)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// `YYYY-MM-DDTHH:MM:SSZ` for Unix seconds.
pub fn format_rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The store paths of an image, read from its config's history (the
/// `store paths: [...]` comments nixpkgs and nixoci write per layer), each
/// with the diff_id of the first layer that names it (the one holding it).
pub fn history_store_paths(config: &Value) -> BTreeMap<String, String> {
    let diff_ids = config["rootfs"]["diff_ids"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let history = config["history"].as_array().cloned().unwrap_or_default();
    let mut found = BTreeMap::new();
    for (entry, diff_id) in history.iter().zip(diff_ids.iter()) {
        let Some(list) = entry["comment"]
            .as_str()
            .and_then(|c| c.strip_prefix("store paths: ["))
            .and_then(|c| c.strip_suffix(']'))
        else {
            continue;
        };
        // The customisation layer's comment names the contents again: a
        // path is in the first (store) layer that names it.
        for item in list.split(", ").filter(|i| !i.is_empty()) {
            let path = item.trim_matches('\'');
            found
                .entry(path.to_string())
                .or_insert_with(|| diff_id.as_str().unwrap_or_default().to_string());
        }
    }
    found
}

/// The digests of an image's layers' tars (`rootfs.diff_ids`) its config
/// lists, which must be one per layer.
pub fn config_diff_ids(config: &Value, layers: usize) -> Result<Vec<Digest>> {
    let diff_ids = config["rootfs"]["diff_ids"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| Digest::parse(d.as_str().unwrap_or_default()).context("the config's diff_ids"))
        .collect::<Result<Vec<_>>>()?;
    if diff_ids.len() != layers {
        bail!(
            "the config lists {} diff_ids for {} layers",
            diff_ids.len(),
            layers
        );
    }
    Ok(diff_ids)
}

// The image model: what every reader makes and every writer takes.

/// A referrer in a layout: its manifest and the blobs it names.
pub struct Referrer {
    pub artifact_type: String,
    pub manifest_bytes: Vec<u8>,
    pub blobs: Vec<Layer>,
    /// Pushed under this tag (cosign's `.sig` and `.att`), not as a referrer.
    pub tag: Option<String>,
}

impl Referrer {
    /// The blob that holds what it is about (an SBOM, a signature, an
    /// envelope): its manifest's one layer (its config is empty or cosign's).
    pub fn document(&self) -> Option<&Layer> {
        let manifest: Value = serde_json::from_slice(&self.manifest_bytes).ok()?;
        let digest = manifest["layers"][0]["digest"].as_str()?;
        self.blobs.iter().find(|b| b.digest == *digest)
    }
}

/// One layer blob of an image.
#[derive(Clone, Debug)]
pub struct Layer {
    pub media_type: String,
    /// The blob's digest; for docker-archives computed on open.
    pub digest: Digest,
    pub size: u64,
    pub file: PathBuf,
}

/// An image: its config, its layers and the manifest that names them, with
/// the directory its blobs are in. [`crate::source`] opens one from any
/// format, `build` makes one, and every writer in [`crate::output`] and the
/// pusher take one.
pub struct Image {
    pub config: Value,
    pub config_bytes: Vec<u8>,
    pub layers: Vec<Layer>,
    /// The OCI manifest bytes, when the source is an OCI layout (archives of
    /// the docker kind have none).
    pub manifest_bytes: Option<Vec<u8>>,
    pub manifest_media_type: String,
    /// Directory the blobs live in.
    pub root: PathBuf,
    /// Artifacts about this image kept in its layout (an SBOM): OCI 1.1
    /// referrers, whose `subject` is this image's manifest.
    pub referrers: Vec<Referrer>,
    pub(crate) _unpacked: Option<tempfile::TempDir>,
    /// Layers whose blob was checked already (`check` reads each twice).
    pub(crate) verified: std::sync::Mutex<std::collections::BTreeSet<Digest>>,
}

impl Image {
    /// The OCI manifest: the source's own, or one made for its config and
    /// layers (a docker-archive has none), with its media type.
    pub fn manifest(&self) -> (Vec<u8>, String) {
        if let Some(bytes) = &self.manifest_bytes {
            return (bytes.clone(), self.manifest_media_type.clone());
        }
        let layers = self
            .layers
            .iter()
            .map(|l| descriptor(&l.media_type, &l.digest, l.size))
            .collect();
        let config = descriptor(
            media::CONFIG,
            &Digest::of(&self.config_bytes),
            self.config_bytes.len() as u64,
        );
        (manifest_json(config, layers), media::MANIFEST.to_string())
    }

    /// An image whose blobs were just written to the layout `root`: its
    /// manifest is the one made for them.
    pub fn written(config_bytes: Vec<u8>, layers: Vec<Layer>, root: &Path) -> Result<Image> {
        let config = serde_json::from_slice(&config_bytes)?;
        let mut image = Image {
            config,
            config_bytes,
            layers,
            manifest_bytes: None,
            manifest_media_type: media::MANIFEST.to_string(),
            root: root.to_path_buf(),
            referrers: Vec::new(),
            _unpacked: None,
            verified: Default::default(),
        };
        image.manifest_bytes = Some(image.manifest().0);
        Ok(image)
    }

    /// The digests of its layers' tars (`rootfs.diff_ids`), one per layer.
    pub fn diff_ids(&self) -> Result<Vec<Digest>> {
        config_diff_ids(&self.config, self.layers.len())
    }

    /// `os/architecture[/variant]`, as people write platforms.
    pub fn platform_name(&self) -> Result<String> {
        let platform = self.platform()?;
        Ok(["os", "architecture", "variant"]
            .iter()
            .filter_map(|k| platform[*k].as_str())
            .collect::<Vec<_>>()
            .join("/"))
    }

    /// The platform its config names, as an image index lists it:
    /// normalised as containerd compares platforms (`aarch64` and
    /// `arm64/v8` are `arm64`, `x86_64` is `amd64`, a bare `arm` is `arm/v7`),
    /// so that one platform cannot be listed twice under two spellings.
    pub fn platform(&self) -> Result<Value> {
        let field = |key: &str, default: &str| -> Result<String> {
            match &self.config[key] {
                Value::Null => Ok(default.to_string()),
                Value::String(s) if !s.is_empty() => Ok(s.to_ascii_lowercase()),
                other => bail!("the config's {key} is not a platform name: {other}"),
            }
        };
        let os = field("os", "linux")?;
        let architecture = field("architecture", "amd64")?;
        let variant = match &self.config["variant"] {
            Value::Null => None,
            Value::String(s) => Some(s.to_ascii_lowercase()),
            other => bail!("the config's variant is not a platform name: {other}"),
        };
        let (architecture, variant) = normalize_architecture(&architecture, variant.as_deref());
        let mut platform = serde_json::json!({"architecture": architecture, "os": os});
        if let Some(variant) = variant {
            platform["variant"] = Value::from(variant);
        }
        Ok(platform)
    }

    /// Its store paths, each with the diff_id of the layer that holds it:
    /// from its config history, else (an image that nixoci and nixpkgs did
    /// not build) from its layers' tars, each checked against its diff_id.
    pub fn store_paths(&self) -> Result<BTreeMap<String, String>> {
        let named = history_store_paths(&self.config);
        if !named.is_empty() {
            return Ok(named);
        }
        let mut found = BTreeMap::new();
        for (layer, diff_id) in self.layers.iter().zip(self.diff_ids()?) {
            layer.verify()?;
            let paths = crate::layer::store_paths_in_layer(
                &layer.file,
                &diff_id,
                crate::nix::DEFAULT_STORE_DIR,
            )
            .with_context(|| format!("layer {}", layer.digest))?;
            for path in paths {
                found.entry(path).or_insert_with(|| diff_id.to_string());
            }
        }
        Ok(found)
    }

    /// The layer's tar stream, decompressed according to its content, once
    /// the blob is checked against its digest.
    pub fn layer_reader(&self, layer: &Layer) -> Result<Box<dyn Read>> {
        let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if !verified.contains(&layer.digest) {
            layer.verify()?;
            verified.insert(layer.digest.clone());
        }
        drop(verified);
        media::decompressed(&layer.file)
    }
}

impl From<&LayerBlob> for Layer {
    fn from(blob: &LayerBlob) -> Layer {
        Layer {
            media_type: blob.media_type.to_string(),
            digest: blob.digest.clone(),
            size: blob.size,
            file: blob.file.clone(),
        }
    }
}

impl Layer {
    /// Checks a layer blob's size and sha256 against its descriptor: a blob
    /// changed after the image was made is refused, never used.
    pub fn verify(&self) -> Result<()> {
        let size = fs::metadata(&self.file)
            .with_context(|| format!("blob {} is missing", self.digest))?
            .len();
        let got = Digest::of_file(&self.file)
            .with_context(|| format!("cannot read blob {}", self.digest))?;
        if got != self.digest || (self.size != 0 && size != self.size) {
            bail!(
                "blob {} is damaged: its content hashes to {got} ({size} bytes, {} expected)",
                self.digest,
                self.size
            );
        }
        Ok(())
    }
}

/// An architecture and variant as containerd's `platforms.Normalize` gives
/// them.
fn normalize_architecture(architecture: &str, variant: Option<&str>) -> (String, Option<String>) {
    let variant = variant.filter(|v| !v.is_empty());
    let (architecture, variant) = match (architecture, variant) {
        ("i386", v) => ("386", v.map(str::to_string)),
        ("x86_64" | "x86-64" | "amd64", Some("v1") | None) => ("amd64", None),
        ("x86_64" | "x86-64" | "amd64", v) => ("amd64", v.map(str::to_string)),
        ("aarch64" | "arm64", Some("8" | "v8") | None) => ("arm64", None),
        ("aarch64" | "arm64", v) => ("arm64", v.map(str::to_string)),
        ("armhf", _) => ("arm", Some("v7".to_string())),
        ("armel", _) => ("arm", Some("v6".to_string())),
        ("arm", None | Some("7")) => ("arm", Some("v7".to_string())),
        ("arm", Some(v @ ("5" | "6" | "8"))) => ("arm", Some(format!("v{v}"))),
        (a, v) => (a, v.map(str::to_string)),
    };
    (architecture.to_string(), variant)
}

/// An image index (`nixoci index`): its bytes and the images it lists, in order.
pub struct Index {
    pub bytes: Vec<u8>,
    pub images: Vec<Image>,
    pub(crate) _unpacked: Option<tempfile::TempDir>,
}

impl Index {
    /// The index of `images`, one per platform, in the order given; two
    /// images of one platform are refused.
    pub fn of(images: Vec<Image>) -> Result<Index> {
        let mut entries: Vec<Value> = Vec::new();
        for image in &images {
            let platform = image.platform()?;
            if entries.iter().any(|e| e["platform"] == platform) {
                bail!(
                    "two images are for the same platform {platform}; an index takes one per platform"
                );
            }
            let (manifest, media_type) = image.manifest();
            let mut entry = descriptor(&media_type, &Digest::of(&manifest), manifest.len() as u64);
            entry["platform"] = platform;
            entries.push(entry);
        }
        Ok(Index {
            bytes: image_index_json(entries),
            images,
            _unpacked: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn architectures_normalise_as_containerd_does() {
        for ((arch, variant), want) in [
            (("aarch64", None), ("arm64", None)),
            (("arm64", Some("v8")), ("arm64", None)),
            (("arm64", Some("8")), ("arm64", None)),
            (("arm64", Some("v9")), ("arm64", Some("v9"))),
            (("x86_64", None), ("amd64", None)),
            (("amd64", Some("v1")), ("amd64", None)),
            (("amd64", Some("v3")), ("amd64", Some("v3"))),
            (("i386", None), ("386", None)),
            (("armhf", None), ("arm", Some("v7"))),
            (("armel", None), ("arm", Some("v6"))),
            (("arm", None), ("arm", Some("v7"))),
            (("arm", Some("6")), ("arm", Some("v6"))),
            (("riscv64", None), ("riscv64", None)),
        ] {
            assert_eq!(
                normalize_architecture(arch, variant),
                (want.0.to_string(), want.1.map(str::to_string)),
                "{arch} {variant:?}"
            );
        }
    }

    #[test]
    fn times_round_trip() {
        assert_eq!(resolve_time(DEFAULT_CREATED).unwrap(), 1);
        assert_eq!(resolve_time("@315532800").unwrap(), 315532800);
        assert_eq!(format_rfc3339(315532800), "1980-01-01T00:00:00Z");
        assert_eq!(
            resolve_time("2026-11-29T08:00:00+01:00").unwrap(),
            resolve_time("2026-11-29T07:00:00Z").unwrap()
        );
        for secs in [0, 1, 951782400, 4102444800] {
            assert_eq!(resolve_time(&format_rfc3339(secs)).unwrap(), secs);
        }
        assert!(resolve_time("yesterday").is_err());
    }

    #[test]
    fn config_is_checked() {
        assert!(validate_config(
            &json!({"Entrypoint": ["/bin/sh"], "ExposedPorts": {"80/tcp": {}}}),
            "c"
        )
        .is_ok());
        assert!(validate_config(&json!({"Entrypoint": "/bin/sh"}), "c").is_err());
        let err = validate_config(&json!({"Entrpoint": ["/bin/sh"]}), "c").unwrap_err();
        assert!(err.to_string().contains("unknown config key `Entrpoint`"));
    }

    #[test]
    fn canonical_json_sorts_keys() {
        assert_eq!(
            canonical(&json!({"b": 1, "a": {"d": 2, "c": 3}})),
            br#"{"a":{"c":3,"d":2},"b":1}"#
        );
    }
}
