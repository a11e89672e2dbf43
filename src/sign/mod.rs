//! Signatures and attestations of images, in the formats verifiers read
//! today, made with a key ([`keys`]) and checked offline:
//!
//! - cosign's "simple signing" payload, signed and kept under the tag
//!   `sha256-<hex>.sig`, the signature in the layer's annotation;
//! - a Sigstore bundle v0.3 (public-key verification material, no
//!   transparency-log entry) whose message signature is over the manifest,
//!   kept as an OCI 1.1 referrer;
//! - an in-toto Statement ([`provenance`]) in a DSSE envelope, kept both as
//!   cosign's `sha256-<hex>.att` and as a bundle referrer.
//!
//! The artifacts are [`NewArtifact`]s: a layout keeps them and `push`
//! uploads them, or `nixoci sign REF` pushes them next to an image.

pub mod keys;
pub mod provenance;
pub mod target;

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use serde_json::{json, Value};

use crate::digest::Digest;
use crate::image::{self, NewArtifact};
use crate::media;
pub use keys::{PrivateKey, PublicKey};

/// The media type of a Sigstore bundle v0.3 (and of its referrers).
pub const BUNDLE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
/// cosign's signed payload.
pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// cosign's attestation layer: a DSSE envelope.
pub const DSSE: &str = "application/vnd.dsse.envelope.v1+json";
/// The annotation that holds a cosign signature (base64).
pub const COSIGN_SIGNATURE: &str = "dev.cosignproject.cosign/signature";
/// The DSSE payload type of an in-toto Statement.
pub const IN_TOTO: &str = "application/vnd.in-toto+json";
/// What a bundle referrer holds, as cosign v3 annotates it.
const BUNDLE_CONTENT: &str = "dev.sigstore.bundle.content";

/// Which formats `sign` and `attest` write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SignatureFormat {
    /// cosign's `.sig` / `.att` tags.
    Legacy,
    /// Sigstore bundles as OCI 1.1 referrers.
    Bundle,
    /// Both.
    Both,
}

impl SignatureFormat {
    fn legacy(self) -> bool {
        self != SignatureFormat::Bundle
    }
    fn bundle(self) -> bool {
        self != SignatureFormat::Legacy
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unb64(text: &str, what: &str) -> Result<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|_| anyhow!("{what} is not base64"))
}

/// The image a signature is about: its manifest and the name it is known by.
pub struct Subject<'a> {
    pub manifest: &'a [u8],
    pub media_type: &'a str,
    /// `registry/repository` (cosign's `docker-reference`), or the image's name.
    pub docker_reference: &'a str,
}

impl Subject<'_> {
    pub fn digest(&self) -> Digest {
        Digest::of(self.manifest)
    }

    fn descriptor(&self) -> Value {
        image::descriptor(self.media_type, &self.digest(), self.manifest.len() as u64)
    }

    fn tag(&self, suffix: &str) -> String {
        format!("sha256-{}.{suffix}", self.digest().hex())
    }
}

/// cosign's simple-signing payload for the manifest digest.
pub fn simple_signing_payload(subject: &Subject) -> Vec<u8> {
    image::canonical(&json!({
        "critical": {
            "identity": {"docker-reference": subject.docker_reference},
            "image": {"docker-manifest-digest": subject.digest().to_string()},
            "type": "cosign container image signature",
        },
        "optional": null,
    }))
}

/// DSSE's pre-authentication encoding: what a DSSE signature covers.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// A DSSE envelope of `statement`, signed.
pub fn dsse_envelope(key: &PrivateKey, statement: &[u8]) -> Result<Value> {
    Ok(json!({
        "payloadType": IN_TOTO,
        "payload": b64(statement),
        "signatures": [{"keyid": key.public().id()?, "sig": b64(&key.sign(&pae(IN_TOTO, statement)))}],
    }))
}

fn bundle(key: &PrivateKey, content: (&str, Value)) -> Result<Vec<u8>> {
    let mut bundle = json!({
        "mediaType": BUNDLE,
        "verificationMaterial": {"publicKey": {"hint": key.public().id()?}, "tlogEntries": []},
    });
    bundle[content.0] = content.1;
    Ok(image::canonical(&bundle))
}

/// A bundle referrer of the subject.
fn bundle_artifact(
    kind: &str,
    content: &str,
    bytes: Vec<u8>,
    subject: &Subject,
    created: &str,
) -> NewArtifact {
    NewArtifact::referrer(
        kind,
        BUNDLE,
        bytes,
        subject.descriptor(),
        created,
        &[(BUNDLE_CONTENT, content)],
    )
}

/// A cosign-style tagged artifact: one layer, with annotations, and the
/// config cosign gives it (rootfs naming the layer).
fn cosign_artifact(
    kind: &str,
    layer_type: &str,
    layer: Vec<u8>,
    annotations: Value,
    tag: String,
) -> NewArtifact {
    let layer_digest = Digest::of(&layer);
    let config = image::canonical(&json!({
        "architecture": "", "os": "", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest.to_string()]},
    }));
    let mut layer_descriptor = image::descriptor(layer_type, &layer_digest, layer.len() as u64);
    layer_descriptor["annotations"] = annotations;
    let manifest = image::manifest_json(
        image::descriptor(media::CONFIG, &Digest::of(&config), config.len() as u64),
        vec![layer_descriptor],
    );
    NewArtifact {
        kind: kind.to_string(),
        artifact_type: layer_type.to_string(),
        manifest,
        blobs: vec![layer, config],
        tag: Some(tag),
    }
}

/// The signatures of the subject, in `format`.
pub fn signatures(
    key: &PrivateKey,
    subject: &Subject,
    format: SignatureFormat,
    created: &str,
) -> Result<Vec<NewArtifact>> {
    let mut out = Vec::new();
    if format.legacy() {
        let payload = simple_signing_payload(subject);
        let signature = b64(&key.sign(&payload));
        out.push(cosign_artifact(
            "signature-legacy",
            SIMPLE_SIGNING,
            payload,
            json!({COSIGN_SIGNATURE: signature}),
            subject.tag("sig"),
        ));
    }
    if format.bundle() {
        let signed = bundle(
            key,
            (
                "messageSignature",
                json!({
                    "messageDigest": {"algorithm": "SHA2_256", "digest": b64(&sha256(subject.manifest))},
                    "signature": b64(&key.sign(subject.manifest)),
                }),
            ),
        )?;
        out.push(bundle_artifact(
            "signature-bundle",
            "message-signature",
            signed,
            subject,
            created,
        ));
    }
    Ok(out)
}

/// The attestation of `statement` about the subject, in `format`.
pub fn attestations(
    key: &PrivateKey,
    subject: &Subject,
    statement: &[u8],
    format: SignatureFormat,
    created: &str,
) -> Result<Vec<NewArtifact>> {
    let envelope = dsse_envelope(key, statement)?;
    let mut out = Vec::new();
    if format.legacy() {
        out.push(cosign_artifact(
            "attestation-legacy",
            DSSE,
            image::canonical(&envelope),
            json!({COSIGN_SIGNATURE: "", "predicateType": provenance::SLSA_PROVENANCE}),
            subject.tag("att"),
        ));
    }
    if format.bundle() {
        let bytes = bundle(key, ("dsseEnvelope", envelope))?;
        out.push(bundle_artifact(
            "attestation-bundle",
            "dsse-envelope",
            bytes,
            subject,
            created,
        ));
    }
    Ok(out)
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).to_vec()
}

/// One artifact found next to an image: its type, manifest and first layer.
pub struct Found {
    pub artifact_type: String,
    pub manifest: Value,
    pub layer: Vec<u8>,
    /// Where it was found, for messages.
    pub origin: String,
}

/// What `verify-image` checked.
#[derive(Debug, Default, serde::Serialize)]
pub struct Verified {
    /// Each signature and attestation that verified, with where it was.
    pub checked: Vec<String>,
    /// The in-toto Statement of the provenance, when one verified.
    #[serde(skip)]
    pub statement: Option<Value>,
}

/// Verifies every signature and attestation in `found` against `key` and
/// the image's `manifest`: each must verify (a bad one fails the whole),
/// and there must be at least one signature. The name a legacy payload
/// gives the image is not checked, as cosign does not: a signature travels
/// with the image from a layout to any registry.
pub fn verify(key: &PublicKey, manifest: &[u8], found: &[Found]) -> Result<Verified> {
    let digest = Digest::of(manifest);
    let mut verified = Verified::default();
    let mut signatures = 0;
    for item in found {
        let what = &item.origin;
        match item.artifact_type.as_str() {
            SIMPLE_SIGNING => {
                let signature = item.manifest["layers"][0]["annotations"][COSIGN_SIGNATURE]
                    .as_str()
                    .ok_or_else(|| anyhow!("{what}: no {COSIGN_SIGNATURE} annotation"))?;
                if !key.verifies(&item.layer, &unb64(signature, "the signature")?) {
                    bail!("{what}: the signature does not verify with this key");
                }
                let payload: Value = serde_json::from_slice(&item.layer)
                    .with_context(|| format!("{what}: the payload is not JSON"))?;
                let named = &payload["critical"]["image"]["docker-manifest-digest"];
                if named.as_str() != Some(&digest.to_string()) {
                    bail!("{what}: the signed payload names {named}, not this image ({digest})");
                }
                signatures += 1;
            }
            BUNDLE => {
                let bundle: Value = serde_json::from_slice(&item.layer)
                    .with_context(|| format!("{what}: the bundle is not JSON"))?;
                if bundle["mediaType"] != BUNDLE {
                    bail!("{what}: not a Sigstore bundle v0.3");
                }
                if let Some(message) = bundle.get("messageSignature") {
                    let want = unb64(
                        message["messageDigest"]["digest"]
                            .as_str()
                            .unwrap_or_default(),
                        "the digest",
                    )?;
                    if want != sha256(manifest) {
                        bail!("{what}: the bundle signs another manifest");
                    }
                    let signature = unb64(
                        message["signature"].as_str().unwrap_or_default(),
                        "the signature",
                    )?;
                    if !key.verifies(manifest, &signature) {
                        bail!("{what}: the signature does not verify with this key");
                    }
                    signatures += 1;
                } else if let Some(envelope) = bundle.get("dsseEnvelope") {
                    verified.statement = Some(verify_envelope(key, envelope, &digest, what)?);
                } else {
                    bail!("{what}: the bundle holds neither a message signature nor an envelope");
                }
            }
            DSSE => {
                let envelope: Value = serde_json::from_slice(&item.layer)
                    .with_context(|| format!("{what}: the envelope is not JSON"))?;
                verified.statement = Some(verify_envelope(key, &envelope, &digest, what)?);
            }
            _ => continue,
        }
        verified.checked.push(what.clone());
    }
    if signatures == 0 {
        bail!("the image has no signature (neither cosign's .sig nor a signature bundle)");
    }
    Ok(verified)
}

/// The Statement of a DSSE envelope, once a signature of `key` verifies
/// and its subject is the image.
fn verify_envelope(
    key: &PublicKey,
    envelope: &Value,
    digest: &Digest,
    what: &str,
) -> Result<Value> {
    if envelope["payloadType"] != IN_TOTO {
        bail!("{what}: the envelope's payload is not an in-toto Statement");
    }
    let payload = unb64(
        envelope["payload"].as_str().unwrap_or_default(),
        "the payload",
    )?;
    let signed = pae(IN_TOTO, &payload);
    let ok = envelope["signatures"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|s| {
            s["sig"]
                .as_str()
                .and_then(|sig| unb64(sig, "").ok())
                .is_some_and(|sig| key.verifies(&signed, &sig))
        });
    if !ok {
        bail!("{what}: no signature of the envelope verifies with this key");
    }
    let statement: Value = serde_json::from_slice(&payload)
        .with_context(|| format!("{what}: the Statement is not JSON"))?;
    let about_it = statement["subject"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|s| s["digest"]["sha256"].as_str() == Some(digest.hex()));
    if !about_it {
        bail!("{what}: the attestation's subject is not this image ({digest})");
    }
    Ok(statement)
}
