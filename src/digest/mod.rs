//! Content digests: the `sha256:<hex>` name of every blob, config, manifest
//! and index. A [`Digest`] is made by hashing bytes or parsed (and checked)
//! from untrusted text, never assembled by hand, so a malformed digest can
//! never become a file name or a URL. The hashing of big streams runs on
//! threads of its own ([`BackgroundSha256`], [`Sha256Lanes`]).

mod background;
mod two_lanes;

pub use background::{BackgroundSha256, Sha256Lanes};

use std::fmt;

use anyhow::{bail, Result};
use sha2::Digest as _;

/// Lower-case hex of raw hash bytes, as OCI digests, diff_ids and Nix's
/// base-16 hashes write them.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A SHA-256 content digest; shown and serialized as `sha256:<64 hex>`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest {
    hex: String,
}

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest::from_hasher(sha2::Sha256::new_with_prefix(bytes))
    }

    /// The digest a running SHA-256 arrived at.
    pub fn from_hasher(hasher: sha2::Sha256) -> Digest {
        Digest::from_raw(&hasher.finalize())
    }

    /// The digest of 32 raw SHA-256 bytes.
    pub fn from_raw(raw: &[u8]) -> Digest {
        Digest { hex: hex(raw) }
    }

    /// The digest of a file's bytes, read in a stream.
    pub fn of_file(path: &std::path::Path) -> std::io::Result<Digest> {
        use std::io::Read;
        let mut file = std::fs::File::open(path)?;
        let mut hasher = sha2::Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match file.read(&mut buf)? {
                0 => return Ok(Digest::from_hasher(hasher)),
                n => hasher.update(&buf[..n]),
            }
        }
    }

    /// Parses `sha256:<64 lowercase hex>`, the only form nixoci writes or
    /// accepts; anything else (another algorithm, a path, a short hash) is
    /// refused with the text quoted.
    pub fn parse(text: &str) -> Result<Digest> {
        match text.strip_prefix("sha256:") {
            Some(hex)
                if hex.len() == 64
                    && hex.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) =>
            {
                Ok(Digest {
                    hex: hex.to_string(),
                })
            }
            _ => bail!(
                "unsupported or malformed digest `{}` (expected sha256:<64 hex digits>)",
                text.escape_debug()
            ),
        }
    }

    /// The 64 hex digits: a blob's file name in a layout.
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl PartialEq<str> for Digest {
    fn eq(&self, other: &str) -> bool {
        other.strip_prefix("sha256:") == Some(self.hex.as_str())
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Digest, D::Error> {
        let text = String::deserialize(d)?;
        Digest::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_made_or_parsed_never_assembled() {
        let d = Digest::of(b"{}");
        assert_eq!(
            d.to_string(),
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        assert_eq!(Digest::parse(&d.to_string()).unwrap(), d);
        assert!(d == *d.to_string().as_str());
        assert_eq!(
            serde_json::to_string(&d).unwrap(),
            format!("\"{d}\""),
            "serialized as its text"
        );
        for bad in [
            "",
            "sha256:",
            "sha512:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
            "sha256:44136FA355B3678A1146AD16F7E8649E94FB4FC21FE77E8310C060F61CAAFF8A",
            "sha256:../../../../etc/passwd",
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8",
            // 65 digits, and letters past f.
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a0",
            "sha256:g4136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
            "sha256:z4136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
        ] {
            assert!(Digest::parse(bad).is_err(), "{bad} accepted");
        }
    }
}
