//! Signing keys: P-256 ECDSA, as cosign makes them. Private keys are read
//! as PKCS#8 PEM (encrypted ones with a password) and in cosign's own
//! `cosign.key` format (scrypt, then NaCl secretbox, around PKCS#8 DER);
//! public keys as PKIX PEM. Every cryptographic step is RustCrypto's.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use p256::ecdsa::{signature::Signer, signature::Verifier, DerSignature, SigningKey, VerifyingKey};
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use serde_json::Value;

use crate::digest::Digest;

/// cosign's PEM labels for its encrypted key files (new and old).
const COSIGN_LABELS: [&str; 2] = [
    "ENCRYPTED SIGSTORE PRIVATE KEY",
    "ENCRYPTED COSIGN PRIVATE KEY",
];

/// A private key, ready to sign.
pub struct PrivateKey {
    key: SigningKey,
}

/// A public key, ready to verify.
#[derive(Clone)]
pub struct PublicKey {
    key: VerifyingKey,
}

impl PrivateKey {
    /// A new key from the operating system's random source.
    pub fn generate() -> PrivateKey {
        PrivateKey {
            key: SigningKey::random(&mut rand_core::OsRng),
        }
    }

    /// Reads `path`: PKCS#8 PEM (`PRIVATE KEY`, or `ENCRYPTED PRIVATE KEY`
    /// with `password`), or a cosign key file (always encrypted).
    pub fn read(path: &Path, password: Option<&str>) -> Result<PrivateKey> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the key {}", path.display()))?;
        // A key pasted into a CI secret gains or loses blank lines and
        // carriage returns; the PEM parser wants exactly one line end each.
        let text: String = text
            .trim()
            .lines()
            .map(|l| format!("{}\n", l.trim_end()))
            .collect();
        let label = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("-----BEGIN "))
            .and_then(|l| l.strip_suffix("-----"))
            .ok_or_else(|| anyhow!("{} is not a PEM file", path.display()))?;
        let need_password = || {
            password.ok_or_else(|| {
                anyhow!(
                    "{} is encrypted: give its password in the variable --key-password-env names",
                    path.display()
                )
            })
        };
        let key = match label {
            "PRIVATE KEY" => SigningKey::from_pkcs8_pem(&text)
                .map_err(|e| anyhow!("{} is not a P-256 PKCS#8 key: {e}", path.display()))?,
            "ENCRYPTED PRIVATE KEY" => {
                SigningKey::from_pkcs8_encrypted_pem(&text, need_password()?.as_bytes()).map_err(
                    |e| anyhow!("cannot decrypt {} (a wrong password?): {e}", path.display()),
                )?
            }
            l if COSIGN_LABELS.contains(&l) => {
                let der = cosign_decrypt(&text, l, need_password()?)
                    .with_context(|| format!("cannot read the cosign key {}", path.display()))?;
                SigningKey::from_pkcs8_der(&der)
                    .map_err(|e| anyhow!("{}: not a P-256 key inside: {e}", path.display()))?
            }
            other => bail!(
                "{}: a `{other}` PEM is not a private key nixoci reads (PKCS#8 or cosign's)",
                path.display()
            ),
        };
        Ok(PrivateKey { key })
    }

    /// The key as PKCS#8 PEM, encrypted when a password is given.
    pub fn to_pem(&self, password: Option<&str>) -> Result<String> {
        Ok(match password {
            Some(p) => self
                .key
                .to_pkcs8_encrypted_pem(&mut rand_core::OsRng, p.as_bytes(), LineEnding::LF)
                .map_err(|e| anyhow!("cannot encrypt the key: {e}"))?
                .to_string(),
            None => self
                .key
                .to_pkcs8_pem(LineEnding::LF)
                .map_err(|e| anyhow!("cannot encode the key: {e}"))?
                .to_string(),
        })
    }

    pub fn public(&self) -> PublicKey {
        PublicKey {
            key: *self.key.verifying_key(),
        }
    }

    /// An ECDSA P-256 SHA-256 signature of `message`, ASN.1 DER (RFC 6979:
    /// the same key and message give the same signature).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        let signature: DerSignature = self.key.sign(message);
        signature.as_bytes().to_vec()
    }
}

impl PublicKey {
    /// Reads a PKIX (`PUBLIC KEY`) PEM file.
    pub fn read(path: &Path) -> Result<PublicKey> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the public key {}", path.display()))?;
        PublicKey::from_pem(&text)
            .with_context(|| format!("{} is not a P-256 public key (PKIX PEM)", path.display()))
    }

    /// A PKIX (`PUBLIC KEY`) PEM text.
    pub fn from_pem(text: &str) -> Result<PublicKey> {
        use p256::pkcs8::DecodePublicKey;
        let key = VerifyingKey::from_public_key_pem(text.trim()).map_err(|e| anyhow!("{e}"))?;
        Ok(PublicKey { key })
    }

    pub fn to_pem(&self) -> Result<String> {
        self.key
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| anyhow!("cannot encode the public key: {e}"))
    }

    /// The key's DER (SubjectPublicKeyInfo).
    pub fn der(&self) -> Result<Vec<u8>> {
        Ok(self
            .key
            .to_public_key_der()
            .map_err(|e| anyhow!("cannot encode the public key: {e}"))?
            .into_vec())
    }

    /// The key's identifier: the hex SHA-256 of its DER, the hint a bundle
    /// and a DSSE signature carry.
    pub fn id(&self) -> Result<String> {
        Ok(Digest::of(&self.der()?).hex().to_string())
    }

    /// Whether `signature` (ASN.1 DER) is this key's over `message`.
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        DerSignature::from_bytes(signature).is_ok_and(|s| self.key.verify(message, &s).is_ok())
    }
}

/// The PKCS#8 DER inside a cosign key file: its JSON names the scrypt
/// parameters and salt, and the secretbox nonce.
fn cosign_decrypt(pem_text: &str, label: &str, password: &str) -> Result<Vec<u8>> {
    use crypto_secretbox::aead::{Aead, KeyInit};
    let body: String = pem_text
        .lines()
        .skip_while(|l| !l.contains(&format!("BEGIN {label}")))
        .skip(1)
        .take_while(|l| !l.contains("-----END"))
        .collect();
    let b64 = base64::engine::general_purpose::STANDARD;
    let json: Value = serde_json::from_slice(&b64.decode(body.trim()).context("not base64")?)
        .context("not the JSON cosign writes")?;
    let field = |v: &Value, what: &str| -> Result<Vec<u8>> {
        b64.decode(v.as_str().ok_or_else(|| anyhow!("no {what}"))?)
            .map_err(|_| anyhow!("the {what} is not base64"))
    };
    if json["kdf"]["name"] != "scrypt" || json["cipher"]["name"] != "nacl/secretbox" {
        bail!(
            "it uses {} and {}, not scrypt and nacl/secretbox",
            json["kdf"]["name"],
            json["cipher"]["name"]
        );
    }
    let params = &json["kdf"]["params"];
    let (n, r, p) = (
        params["N"].as_u64().unwrap_or(0),
        params["r"].as_u64().unwrap_or(0),
        params["p"].as_u64().unwrap_or(0),
    );
    // N must be a power of two; the bound keeps a hostile file from asking
    // for gigabytes (cosign writes 2^15).
    if !n.is_power_of_two()
        || !(2..=1 << 20).contains(&n)
        || !(1..=32).contains(&r)
        || !(1..=16).contains(&p)
    {
        bail!("its scrypt parameters N={n} r={r} p={p} are out of range");
    }
    let scrypt_params = scrypt::Params::new(n.trailing_zeros() as u8, r as u32, p as u32, 32)
        .map_err(|e| anyhow!("its scrypt parameters: {e}"))?;
    let mut key = [0u8; 32];
    scrypt::scrypt(
        password.as_bytes(),
        &field(&json["kdf"]["salt"], "salt")?,
        &scrypt_params,
        &mut key,
    )
    .map_err(|e| anyhow!("scrypt: {e}"))?;
    let nonce = field(&json["cipher"]["nonce"], "nonce")?;
    if nonce.len() != 24 {
        bail!("its nonce is {} bytes, not 24", nonce.len());
    }
    let cipher = crypto_secretbox::XSalsa20Poly1305::new(&key.into());
    cipher
        .decrypt(
            crypto_secretbox::Nonce::from_slice(&nonce),
            field(&json["ciphertext"], "ciphertext")?.as_slice(),
        )
        .map_err(|_| anyhow!("it does not decrypt: a wrong password (COSIGN_PASSWORD?)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cosign_pem(kdf: Value, cipher: &str) -> String {
        cosign_pem_with_nonce(kdf, cipher, &[0u8; 24])
    }

    fn cosign_pem_with_nonce(kdf: Value, cipher: &str, nonce: &[u8]) -> String {
        let b64 = base64::engine::general_purpose::STANDARD;
        let json = serde_json::json!({
            "kdf": kdf,
            "cipher": {"name": cipher, "nonce": b64.encode(nonce)},
            "ciphertext": b64.encode([0u8; 48]),
        });
        format!(
            "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n{}\n-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n",
            b64.encode(json.to_string())
        )
    }

    #[test]
    fn hostile_cosign_key_files_are_refused_before_any_work() {
        let salt = base64::engine::general_purpose::STANDARD.encode([1u8; 32]);
        let kdf = |n: u64, r: u64, p: u64| serde_json::json!({"name": "scrypt", "params": {"N": n, "r": r, "p": p}, "salt": salt});
        let label = COSIGN_LABELS[0];
        for (n, r, p) in [
            (1 << 30, 8, 1),
            (3000, 8, 1),
            (32768, 1000, 1),
            (32768, 8, 0),
        ] {
            let err = cosign_decrypt(&cosign_pem(kdf(n, r, p), "nacl/secretbox"), label, "pw")
                .unwrap_err()
                .to_string();
            assert!(err.contains("out of range"), "N={n} r={r} p={p}: {err}");
        }
        let err = cosign_decrypt(&cosign_pem(kdf(32768, 8, 1), "aes-gcm"), label, "pw")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not scrypt and nacl/secretbox"), "{err}");
        let short_nonce = cosign_pem_with_nonce(kdf(1024, 8, 1), "nacl/secretbox", &[0u8; 12]);
        let err = cosign_decrypt(&short_nonce, label, "pw")
            .unwrap_err()
            .to_string();
        assert!(err.contains("its nonce is 12 bytes"), "{err}");
        // Well-formed, but not this password's: no panic, a clear refusal.
        let err = cosign_decrypt(&cosign_pem(kdf(1024, 8, 1), "nacl/secretbox"), label, "pw")
            .unwrap_err()
            .to_string();
        assert!(err.contains("wrong password"), "{err}");
    }
}
