//! Registry: pushes a built image to an OCI distribution registry (zot, the
//! CNCF registry, …) so that nothing is uploaded twice, immutable tags are
//! respected and failures say what to do. Blobs are HEADed first, mounted
//! across repositories when asked, uploaded in parallel (monolithic PUT,
//! chunked PATCH where refused) straight from disk, and the manifest goes
//! last, so a failed push never leaves a tag pointing at missing blobs.
//! Nothing is ever deleted.
//!
//! The client is a small synchronous one on ureq (see the README's design
//! notes for why not oci-client).

pub mod auth;
pub mod client;
pub mod read;
pub mod stream;
pub mod url;

use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::{anyhow, bail, Result};
use serde::Serialize;

use crate::digest::Digest;
use crate::image;
use crate::image::Image;
use crate::media;
use crate::progress::Progress;
use auth::CredentialSources;
use client::{Body, Client};

/// Why a push failed; each kind has its own exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Credentials missing, invalid or expired.
    Auth,
    /// The tag exists with another digest and may not be overwritten.
    Conflict,
    /// The network or the registry failed (after retries).
    Network,
    /// The registry refused a request with a 4xx, or the request cannot be
    /// made at all (a URL that does not parse, TLS that fails, the push's
    /// time used up): retrying cannot change it.
    Rejected,
}

impl Failure {
    pub fn exit_code(self) -> u8 {
        match self {
            Failure::Auth => 3,
            Failure::Conflict => 4,
            Failure::Network | Failure::Rejected => 5,
        }
    }

    /// What an unexpected answer means: 404 (an expired upload session),
    /// 408, 429 and 5xx may pass; any other 4xx will not.
    pub fn for_status(status: u16) -> Failure {
        match status {
            400..=499 if ![404, 408, 429].contains(&status) => Failure::Rejected,
            _ => Failure::Network,
        }
    }
}

#[derive(Debug)]
pub struct PushError {
    pub failure: Failure,
    pub message: String,
}

impl PushError {
    pub fn new(failure: Failure, message: String) -> PushError {
        PushError { failure, message }
    }
}

impl fmt::Display for PushError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PushError {}

/// `registry[:port]/repository:tag`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    pub registry: String,
    pub repository: String,
    pub tag: String,
}

impl Reference {
    pub fn parse(text: &str) -> Result<Reference> {
        let bad = || {
            anyhow!("`{text}` is not REGISTRY/REPOSITORY:TAG (e.g. registry.example.com/team/app:v1.2.3)")
        };
        let (registry, rest) = text.split_once('/').ok_or_else(bad)?;
        if registry.contains('@') {
            bail!("credentials in the reference are refused (they would show in logs); pass them with --creds-env or an auth file");
        }
        if !(registry.contains('.') || registry.contains(':') || registry == "localhost") {
            return Err(bad());
        }
        let host_ok = !registry.is_empty()
            && registry
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b".-:[]".contains(&c));
        if !host_ok {
            bail!("`{registry}` is not a registry host (HOST or HOST:PORT)");
        }
        let (repository, tag) = rest.rsplit_once(':').ok_or_else(bad)?;
        if repository.is_empty() || !repository.split('/').all(repository_component_ok) {
            bail!("`{repository}` is not a valid repository name (lower-case letters and digits, separated by one `.`, one or two `_`, `-`s, or `/`)");
        }
        let tag_ok = !tag.is_empty()
            && tag.len() <= 128
            && tag
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(&c))
            && !tag.starts_with(['.', '-']);
        if !tag_ok {
            bail!("`{tag}` is not a valid tag");
        }
        Ok(Reference {
            registry: registry.into(),
            repository: repository.into(),
            tag: tag.into(),
        })
    }
}

/// One `/`-separated part of a repository name, as the distribution spec
/// has it: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`. So no `..`, and no part
/// that starts or ends with a separator.
fn repository_component_ok(part: &str) -> bool {
    let bytes = part.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if !bytes.first().is_some_and(alnum) || !bytes.last().is_some_and(alnum) {
        return false;
    }
    let mut separator = String::new();
    for &c in bytes {
        if alnum(&c) {
            let ok = separator.is_empty()
                || separator == "."
                || separator == "_"
                || separator == "__"
                || separator.bytes().all(|s| s == b'-');
            if !ok {
                return false;
            }
            separator.clear();
        } else if b"._-".contains(&c) {
            separator.push(c as char);
        } else {
            return false;
        }
    }
    true
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}:{}", self.registry, self.repository, self.tag)
    }
}

pub struct PushOptions {
    pub creds: CredentialSources,
    pub trust: client::Trust,
    pub mount_from: Option<String>,
    pub parallel: usize,
    /// Chunk size for chunked uploads.
    pub chunk_size: u64,
    pub progress: Progress,
    pub verbose: bool,
    pub timeouts: client::Timeouts,
    /// Compress plain-tar layers before pushing (digests known up front).
    pub compression: Option<crate::media::Compression>,
}

#[derive(Debug, Serialize)]
pub struct PushedRef {
    pub reference: String,
    /// `registry/repository@sha256:…`, for pinning deployments by digest.
    pub pinned: String,
    /// `pushed` or `already pushed`.
    pub status: &'static str,
}

#[derive(Debug, Serialize)]
pub struct PushSummary {
    pub digest: Digest,
    pub pushed: Vec<PushedRef>,
    /// Blob bytes sent over the wire (retried attempts included).
    pub bytes_uploaded: u64,
    pub blobs_uploaded: usize,
    pub blobs_present: usize,
    pub blobs_mounted: usize,
}

impl PushSummary {
    fn new(digest: Digest) -> PushSummary {
        PushSummary {
            digest,
            pushed: Vec::new(),
            bytes_uploaded: 0,
            blobs_uploaded: 0,
            blobs_present: 0,
            blobs_mounted: 0,
        }
    }

    /// `registry/repository@sha256:…` of what was pushed to `reference`.
    fn pinned(&self, reference: &Reference) -> String {
        format!(
            "{}/{}@{}",
            reference.registry, reference.repository, self.digest
        )
    }

    fn record(&mut self, reference: &Reference, status: &'static str) {
        self.pushed.push(PushedRef {
            reference: reference.to_string(),
            pinned: self.pinned(reference),
            status,
        });
    }
}

/// One blob to make present in the repository.
struct Blob<'a> {
    digest: Digest,
    size: u64,
    content: BlobContent<'a>,
}

enum BlobContent<'a> {
    Bytes(&'a [u8]),
    File(&'a Path),
}

impl<'a> From<&'a image::Layer> for Blob<'a> {
    fn from(layer: &'a image::Layer) -> Blob<'a> {
        Blob {
            digest: layer.digest.clone(),
            size: layer.size,
            content: BlobContent::File(&layer.file),
        }
    }
}

/// The config and layer blobs of an image, each once.
fn blobs_of(source: &Image) -> Vec<Blob<'_>> {
    let mut blobs = vec![Blob {
        digest: Digest::of(&source.config_bytes),
        size: source.config_bytes.len() as u64,
        content: BlobContent::Bytes(&source.config_bytes),
    }];
    for layer in &source.layers {
        if !blobs.iter().any(|b| b.digest == layer.digest) {
            blobs.push(Blob::from(layer));
        }
    }
    blobs
}

/// Pushes the image (or the image index) at `src` under every reference in `refs`.
pub fn push(src: &Path, refs: &[Reference], opts: &PushOptions) -> Result<PushSummary> {
    let mut source = match crate::source::open_source(src, None)? {
        crate::source::Source::Image(image) => image,
        crate::source::Source::Index(index) => {
            if opts.compression.is_some() {
                bail!("--compression recompresses one image's layers; an index's images are pushed as they are");
            }
            return push_index(&index, refs, opts);
        }
    };
    let compressed_dir = tempfile::Builder::new().prefix("nixoci-push-").tempdir()?;
    if let Some(compression) = opts.compression {
        if compress_plain_layers(&mut source, compression, compressed_dir.path())? {
            // The layers changed: the manifest is made anew for them, and
            // artifacts about the old manifest are not about this one.
            source.manifest_bytes = None;
            if !source.referrers.is_empty() {
                eprintln!("warning: --compression changes the image's digest; its attached artifacts (SBOM) are not pushed");
                source.referrers.clear();
            }
        }
    }
    let (manifest_bytes, media_type) = source.manifest();
    let digest = Digest::of(&manifest_bytes);
    let blobs = blobs_of(&source);

    let mut summary = PushSummary::new(digest.clone());
    for reference in refs {
        let client = connect(reference, opts)?;
        let already_pushed = tag_holds(&client, reference, &digest)?;
        if !already_pushed {
            upload_blobs(&client, &blobs, opts, &mut summary)?;
            put_manifest(
                &client,
                &reference.tag,
                &manifest_bytes,
                &media_type,
                &digest,
                reference,
            )?;
        }
        // On an image pushed before, artifacts attached since are still
        // added (present ones cost a HEAD).
        push_referrers(
            &client,
            &source.referrers,
            &digest,
            reference,
            opts,
            &mut summary,
        )?;
        if already_pushed {
            summary.record(reference, "already pushed");
        } else {
            eprintln!("{reference}: pushed {}", summary.pinned(reference));
            summary.record(reference, "pushed");
        }
    }
    Ok(summary)
}

/// An OCI manifest for a docker-archive, whose layers are pushed as they are.
/// Compresses every plain-tar layer of `source` into `dir` and points the
/// layer at the result; returns whether any layer changed.
fn compress_plain_layers(
    source: &mut Image,
    compression: crate::media::Compression,
    dir: &Path,
) -> Result<bool> {
    use crate::media::Compression;
    if compression == Compression::None {
        return Ok(false);
    }
    let threads = std::sync::Arc::new(rayon::ThreadPoolBuilder::new().build()?);
    let mut changed = false;
    for layer in &mut source.layers {
        if !Compression::is_plain_layer(&layer.media_type) {
            continue;
        }
        let (digest, size, file) = crate::layer::compress_layer_file(
            &layer.file,
            &layer.digest,
            compression,
            dir,
            &threads,
        )?;
        *layer = crate::image::Layer {
            media_type: compression.media_type().to_string(),
            digest,
            size,
            file,
        };
        changed = true;
    }
    Ok(changed)
}

/// Pushes an image index: for each reference, every image's blobs and its
/// manifest (by digest) first, then the index under the tag, with the same
/// HEAD-skip, tag and retry rules as one image.
fn push_index(
    index: &crate::image::Index,
    refs: &[Reference],
    opts: &PushOptions,
) -> Result<PushSummary> {
    let digest = Digest::of(&index.bytes);
    let mut summary = PushSummary::new(digest.clone());
    for reference in refs {
        let client = connect(reference, opts)?;
        if tag_holds(&client, reference, &digest)? {
            summary.record(reference, "already pushed");
            continue;
        }
        for image in &index.images {
            upload_blobs(&client, &blobs_of(image), opts, &mut summary)?;
            let (bytes, media_type) = image.manifest();
            let child = Digest::of(&bytes);
            put_manifest(
                &client,
                &child.to_string(),
                &bytes,
                &media_type,
                &child,
                reference,
            )?;
        }
        put_manifest(
            &client,
            &reference.tag,
            &index.bytes,
            media::INDEX,
            &digest,
            reference,
        )?;
        eprintln!("{reference}: pushed {}", summary.pinned(reference));
        summary.record(reference, "pushed");
    }
    Ok(summary)
}

fn connect(reference: &Reference, opts: &PushOptions) -> Result<Client> {
    let creds = opts.creds.resolve(&reference.registry)?;
    let mut client = Client::connect(
        &reference.registry,
        &reference.repository,
        creds,
        &opts.trust,
        opts.verbose,
        opts.timeouts,
    )?;
    client.extra_pull_scope = opts.mount_from.clone();
    Ok(client)
}

/// Whether the tag already holds `digest` (then nothing is pushed); a tag
/// holding anything else is a conflict, since tags are immutable here.
fn tag_holds(client: &Client, reference: &Reference, digest: &Digest) -> Result<bool> {
    match existing_tag(client, &reference.tag)? {
        Some(existing) if *digest == *existing => {
            eprintln!("{reference}: already pushed ({digest})");
            Ok(true)
        }
        Some(existing) => Err(PushError::new(
            Failure::Conflict,
            format!("{reference} already exists with digest {existing}, not {digest}; tags are immutable here (create-only rights forbid overwriting), so push under a new tag"),
        )
        .into()),
        None => Ok(false),
    }
}

/// The digest the tag points at, if it exists.
fn existing_tag(client: &Client, tag: &str) -> Result<Option<String>, PushError> {
    let reply = client.request(
        "HEAD",
        &client.url(&format!("manifests/{tag}")),
        &[("Accept", media::MANIFEST_ACCEPT.into())],
        &Body::Empty,
        true,
    )?;
    match reply.status {
        200 => Ok(Some(
            reply
                .header("docker-content-digest")
                .map(str::to_string)
                .ok_or_else(|| {
                    PushError::new(
                        Failure::Network,
                        format!(
                            "{}: the registry did not say which digest tag {tag} has",
                            client.registry
                        ),
                    )
                })?,
        )),
        404 => Ok(None),
        403 => Err(PushError::new(
            Failure::Auth,
            format!(
                "{}: no permission to read {}",
                client.registry, client.repository
            ),
        )),
        _ => Err(PushError::new(
            Failure::Network,
            format!("HEAD of tag {tag}: {}", reply.registry_error()),
        )),
    }
}

fn upload_blobs(
    client: &Client,
    blobs: &[Blob],
    opts: &PushOptions,
    summary: &mut PushSummary,
) -> Result<()> {
    let multi = opts.progress.multi();
    let next = AtomicUsize::new(0);
    let sent = AtomicU64::new(0);
    let counts = Mutex::new((0usize, 0usize, 0usize));
    let first_error: Mutex<Option<PushError>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..opts.parallel.max(1).min(blobs.len()) {
            scope.spawn(|| loop {
                if first_error.lock().map(|e| e.is_some()).unwrap_or(true) {
                    return;
                }
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(blob) = blobs.get(i) else { return };
                let bar = opts
                    .progress
                    .blob_bar(&multi, &blob.digest.hex()[..12], blob.size);
                let on_sent = |n: u64| {
                    sent.fetch_add(n, Ordering::Relaxed);
                    bar.inc(n);
                };
                match ensure_blob(client, blob, opts, &on_sent) {
                    Ok(outcome) => {
                        let mut c = counts.lock().unwrap_or_else(|p| p.into_inner());
                        match outcome {
                            Outcome::Present => c.1 += 1,
                            Outcome::Mounted => c.2 += 1,
                            Outcome::Uploaded => c.0 += 1,
                        }
                        bar.finish_and_clear();
                    }
                    Err(e) => {
                        bar.abandon();
                        *first_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                        return;
                    }
                }
            });
        }
    });
    summary.bytes_uploaded += sent.load(Ordering::Relaxed);
    let (uploaded, present, mounted) = *counts.lock().unwrap_or_else(|p| p.into_inner());
    summary.blobs_uploaded += uploaded;
    summary.blobs_present += present;
    summary.blobs_mounted += mounted;
    match first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

enum Outcome {
    Present,
    Mounted,
    Uploaded,
}

fn ensure_blob(
    client: &Client,
    blob: &Blob,
    opts: &PushOptions,
    on_sent: &(dyn Fn(u64) + Sync),
) -> Result<Outcome, PushError> {
    let head = client.request(
        "HEAD",
        &client.url(&format!("blobs/{}", blob.digest)),
        &[],
        &Body::Empty,
        true,
    )?;
    match head.status {
        200 => return Ok(Outcome::Present),
        404 => {}
        403 => {
            return Err(PushError::new(
                Failure::Auth,
                format!(
                    "{}: no permission to read {}",
                    client.registry, client.repository
                ),
            ))
        }
        _ => {
            return Err(PushError::new(
                Failure::Network,
                format!("HEAD of blob {}: {}", blob.digest, head.registry_error()),
            ))
        }
    }
    // The whole upload is retried from a fresh session: after a reset or a
    // 5xx nobody knows what state the old session is in.
    let mut attempt = 0;
    loop {
        attempt += 1;
        let wait = std::time::Duration::from_millis(500 * (1 << attempt.min(5)));
        match upload_once(client, blob, opts, on_sent) {
            Ok(outcome) => return Ok(outcome),
            Err(e)
                if e.failure == Failure::Network
                    && attempt <= client.retries
                    && client.may_retry(wait) =>
            {
                eprintln!(
                    "nixoci: upload of {} failed ({e}); retrying in {:.1}s ({attempt}/{})",
                    blob.digest,
                    wait.as_secs_f64(),
                    client.retries
                );
                std::thread::sleep(wait);
            }
            Err(e) => return Err(e),
        }
    }
}

fn start_session(client: &Client, query: &str) -> Result<client::Reply, PushError> {
    client.request(
        "POST",
        &format!("{}{query}", client.url("blobs/uploads/")),
        &[],
        &Body::Empty,
        true,
    )
}

fn with_digest(location: &str, digest: &Digest) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}digest={digest}")
}

/// The upload URL a reply names, resolved against the request it answered.
fn location(client: &Client, reply: &client::Reply) -> Result<String, PushError> {
    let raw = reply.header("location").ok_or_else(|| {
        PushError::new(
            Failure::Network,
            format!("{}: upload session without a Location", client.registry),
        )
    })?;
    url::resolve(&reply.url, raw)
        .filter(|resolved| {
            url::origin(resolved).is_some() && resolved.parse::<ureq::http::Uri>().is_ok()
        })
        .ok_or_else(|| {
            // Asking again gives the same answer: not retried.
            PushError::new(
                Failure::Rejected,
                format!(
                    "{}: the upload Location `{}` is not a usable http(s) URL",
                    client.registry,
                    client::printable(raw)
                ),
            )
        })
}

fn upload_once(
    client: &Client,
    blob: &Blob,
    opts: &PushOptions,
    on_sent: &(dyn Fn(u64) + Sync),
) -> Result<Outcome, PushError> {
    let query = match &opts.mount_from {
        Some(from) => format!("?mount={}&from={from}", blob.digest),
        None => String::new(),
    };
    let session = start_session(client, &query)?;
    match session.status {
        201 if opts.mount_from.is_some() => return Ok(Outcome::Mounted),
        202 => {}
        403 => {
            return Err(PushError::new(
                Failure::Auth,
                format!(
                    "{}: no permission to push to {}",
                    client.registry, client.repository
                ),
            ))
        }
        _ => {
            return Err(PushError::new(
                Failure::for_status(session.status),
                format!("starting an upload: {}", session.registry_error()),
            ))
        }
    }
    let octet = [("Content-Type", "application/octet-stream".to_string())];
    let body = |offset: u64, len: u64| match &blob.content {
        BlobContent::Bytes(b) => {
            on_sent(len);
            Body::Bytes(&b[offset as usize..(offset + len) as usize])
        }
        BlobContent::File(path) => Body::File {
            path,
            offset,
            len,
            on_sent,
        },
    };
    let put = client.request(
        "PUT",
        &with_digest(&location(client, &session)?, &blob.digest),
        &octet,
        &body(0, blob.size),
        false,
    )?;
    match put.status {
        201 => return Ok(Outcome::Uploaded),
        403 => {
            return Err(PushError::new(
                Failure::Auth,
                format!(
                    "{}: no permission to push to {}",
                    client.registry, client.repository
                ),
            ))
        }
        // (A 5xx or 429 never gets here: `request` makes it an error, which
        // `ensure_blob` retries.) Any other answer refuses a monolithic upload.
        _ => {
            if opts.verbose {
                eprintln!(
                    "{}: monolithic upload refused ({}); uploading in chunks",
                    client.registry,
                    put.registry_error()
                );
            }
        }
    }
    // Chunked: PATCH pieces with Content-Range, following each new Location.
    let mut session = start_session(client, "")?;
    let mut offset = 0;
    while offset < blob.size || blob.size == 0 {
        let len = opts.chunk_size.min(blob.size - offset);
        session = patch_chunk(
            client,
            &session,
            offset,
            &body(offset, len),
            len,
            &blob.digest,
        )?;
        offset += len;
        if blob.size == 0 {
            break;
        }
    }
    finish_upload(client, &session, &blob.digest)?;
    Ok(Outcome::Uploaded)
}

/// Sends the `len` bytes of `body` from `offset` of a chunked upload to the
/// session `session` names; returns the reply, which names the next one.
fn patch_chunk(
    client: &Client,
    session: &client::Reply,
    offset: u64,
    body: &Body,
    len: u64,
    blob: &dyn fmt::Display,
) -> Result<client::Reply, PushError> {
    let range = [
        ("Content-Type", "application/octet-stream".to_string()),
        (
            "Content-Range",
            format!("{offset}-{}", offset + len.max(1) - 1),
        ),
    ];
    let reply = client.request("PATCH", &location(client, session)?, &range, body, false)?;
    if reply.status != 202 {
        return Err(PushError::new(
            Failure::for_status(reply.status),
            format!("uploading {blob} in chunks: {}", reply.registry_error()),
        ));
    }
    Ok(reply)
}

/// Closes a chunked upload: the registry checks the bytes against `digest`.
fn finish_upload(
    client: &Client,
    session: &client::Reply,
    digest: &Digest,
) -> Result<(), PushError> {
    let done = client.request(
        "PUT",
        &with_digest(&location(client, session)?, digest),
        &[],
        &Body::Empty,
        false,
    )?;
    match done.status {
        201 => Ok(()),
        _ => Err(PushError::new(
            Failure::for_status(done.status),
            format!(
                "finishing the upload of {digest}: {}",
                done.registry_error()
            ),
        )),
    }
}

/// PUTs a manifest under `tag` (or its digest); returns whether the
/// registry answered with `OCI-Subject`, i.e. it keeps referrers itself.
fn put_manifest(
    client: &Client,
    tag: &str,
    bytes: &[u8],
    media_type: &str,
    digest: &Digest,
    reference: &Reference,
) -> Result<bool, PushError> {
    let reply = client.request(
        "PUT",
        &client.url(&format!("manifests/{tag}")),
        &[("Content-Type", media_type.to_string())],
        &Body::Bytes(bytes),
        true,
    )?;
    match reply.status {
        200..=202 => {}
        403 => {
            return Err(PushError::new(
                Failure::Conflict,
                format!("{reference}: the registry refused the tag (403): with create-only rights an existing tag cannot be overwritten; push under a new tag ({})", reply.registry_error()),
            ))
        }
        _ => return Err(PushError::new(Failure::Network, format!("{reference}: manifest upload failed: {}", reply.registry_error()))),
    }
    match reply.header("docker-content-digest") {
        Some(d) if *digest != *d => Err(PushError::new(
            Failure::Network,
            format!("{reference}: the registry stored the manifest as {d}, not {digest}"),
        )),
        _ => Ok(reply.header("oci-subject").is_some()),
    }
}

/// Pushes `referrers` of the image `reference` names (whose manifest is
/// `subject`) to it: the artifacts of its layout, or those `nixoci sign`
/// makes for an image already there.
pub fn push_artifacts(
    reference: &Reference,
    opts: &PushOptions,
    subject: &Digest,
    referrers: &[crate::image::Referrer],
) -> Result<PushSummary> {
    let client = connect(reference, opts)?;
    let mut summary = PushSummary::new(subject.clone());
    push_referrers(&client, referrers, subject, reference, opts, &mut summary)?;
    Ok(summary)
}

/// Pushes the image's referrers (its SBOM, signatures, attestations): their
/// blobs, their manifests by digest, and, where the registry has no
/// referrers API (no `OCI-Subject` answer), the fallback tag
/// `sha256-<hex>`: an index of the subject's referrers, to which ours is
/// added. An artifact with a tag of its own (cosign's `.sig`, `.att`) is
/// put under that tag instead.
fn push_referrers(
    client: &Client,
    referrers: &[crate::image::Referrer],
    subject: &Digest,
    reference: &Reference,
    opts: &PushOptions,
    summary: &mut PushSummary,
) -> Result<()> {
    for referrer in referrers {
        let blobs: Vec<Blob> = referrer.blobs.iter().map(Blob::from).collect();
        upload_blobs(client, &blobs, opts, summary)?;
        let digest = Digest::of(&referrer.manifest_bytes);
        if let Some(tag) = &referrer.tag {
            if existing_tag(client, tag)?.is_none_or(|d| digest != *d.as_str()) {
                put_manifest(
                    client,
                    tag,
                    &referrer.manifest_bytes,
                    media::MANIFEST,
                    &digest,
                    reference,
                )?;
            }
            continue;
        }
        let native = put_manifest(
            client,
            &digest.to_string(),
            &referrer.manifest_bytes,
            media::MANIFEST,
            &digest,
            reference,
        )?;
        if native {
            continue;
        }
        let tag = format!("sha256-{}", subject.hex());
        let reply = client.request(
            "GET",
            &client.url(&format!("manifests/{tag}")),
            &[("Accept", media::INDEX.into())],
            &Body::Empty,
            true,
        )?;
        let mut entries: Vec<serde_json::Value> = match reply.status {
            200 => serde_json::from_str::<serde_json::Value>(&reply.body)
                .ok()
                .and_then(|v| v["manifests"].as_array().cloned())
                .ok_or_else(|| {
                    anyhow!("{reference}: the referrers tag {tag} is not an image index")
                })?,
            404 => Vec::new(),
            _ => bail!(
                "{reference}: cannot read the referrers tag {tag}: {}",
                reply.registry_error()
            ),
        };
        if entries
            .iter()
            .any(|e| e["digest"].as_str().is_some_and(|d| digest == *d))
        {
            continue;
        }
        let mut entry = image::descriptor(
            media::MANIFEST,
            &digest,
            referrer.manifest_bytes.len() as u64,
        );
        entry["artifactType"] = serde_json::Value::from(referrer.artifact_type.clone());
        entries.push(entry);
        let index = image::image_index_json(entries);
        put_manifest(
            client,
            &tag,
            &index,
            media::INDEX,
            &Digest::of(&index),
            reference,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_checked_part_by_part() {
        let r = Reference::parse("registry.example.com:5000/team/app:v1.2-3_x").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_str()),
            ("registry.example.com:5000", "team/app", "v1.2-3_x")
        );
        for ok in [
            "localhost/app:1",
            "reg.io/app:1",
            "127.0.0.1:5000/app:1",
            "[::1]:5000/app:1",
        ] {
            assert!(Reference::parse(ok).is_ok(), "{ok} refused");
        }
        let longest = format!("reg.io/app:{}", "t".repeat(128));
        assert!(Reference::parse(&longest).is_ok());
        for bad in [
            // No registry host: a Docker Hub short name is not guessed.
            "team/app:1",
            "localhostx/app:1",
            // Host characters.
            "reg_io.x/app:1",
            "reg.io%2f/app:1",
            // Tags: empty, too long, a leading `.` or `-`, or characters that
            // would change the request path.
            "reg.io/app:",
            &format!("reg.io/app:{}", "t".repeat(129)),
            "reg.io/app:.hidden",
            "reg.io/app:-x",
            "reg.io/app:x/../../other/manifests/y",
            "reg.io/app:x?y",
            // Repository names.
            "reg.io/:1",
            "reg.io/Team/app:1",
            "reg.io/team/../app:1",
            "user:pass@reg.io/app:1",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad} accepted");
        }
    }
}
