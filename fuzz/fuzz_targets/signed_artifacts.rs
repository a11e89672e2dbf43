#![no_main]
//! What a registry or a layout holds next to an image: SBOMs (read for
//! their store paths), cosign payloads, Sigstore bundles and DSSE envelopes
//! (verified against a key).
use libfuzzer_sys::fuzz_target;

// The key the seed corpus (fuzz/corpus/signed_artifacts) was signed with.
const KEY: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEPTOGHg1rpIgnh9jXxNBwAmxnvc25
BG6As3m8G0VLhsUVnbRFWunPl32mVuU2oeF7oiHrxFM5DeMo8mTuK3YIgA==
-----END PUBLIC KEY-----";

fuzz_target!(|data: &[u8]| {
    let _ = nixoci::sbom::read_paths(data);
    let key = nixoci::sign::PublicKey::from_pem(KEY).expect("the fuzz key parses");
    let manifest: serde_json::Value = serde_json::from_slice(data).unwrap_or_default();
    for artifact_type in [nixoci::sign::SIMPLE_SIGNING, nixoci::sign::BUNDLE, nixoci::sign::DSSE] {
        let found = [nixoci::sign::Found {
            artifact_type: artifact_type.to_string(),
            manifest: manifest.clone(),
            layer: data.to_vec(),
            origin: "fuzz".into(),
        }];
        let _ = nixoci::sign::verify(&key, data, &found);
    }
});
