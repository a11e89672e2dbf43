//! Second tier: the per-artifact hashes in lock files inside a mirrored
//! source (`uv.lock` sha256, `package-lock.json` sha512 `integrity`, `go.sum`
//! `h1:`), checked against a local cache of those artifacts.

use std::fs;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;
use sha2::Digest as _;

use super::{compare, git, LockFile, Row, Status};
use crate::nix::Hash;

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// `uv.lock`: `hash = "sha256:<hex>"` per wheel and sdist.
    Uv,
    /// `package-lock.json`: `integrity = "sha512-<base64>"` per tarball.
    Npm,
    /// `go.sum`: `h1:` dirhashes of module trees and go.mod files (GOMODCACHE).
    Gosum,
}

/// One artifact a lock file pins: where it is in the cache, and its hash.
struct Pin {
    label: String,
    candidates: Vec<PathBuf>,
    check: Check,
}

enum Check {
    /// A flat hash of one file.
    Flat(Hash),
    /// Go's `h1:` over a module tree (files named `module@version/…`) or a go.mod file.
    GoTree {
        prefix: String,
        expected: String,
    },
    GoMod {
        expected: String,
    },
}

fn lock_row(lock: &LockFile, status: Status, detail: String) -> Row {
    Row {
        manifest: String::new(),
        name: format!("{}:{}", lock.source, lock.path),
        kind: format!("{:?}", lock.format).to_lowercase(),
        status,
        detail,
        expected: None,
        got: None,
    }
}

pub fn verify(
    lock: &LockFile,
    repo: Option<&Path>,
    commit: Option<&str>,
    mirror_root: Option<&Path>,
) -> Vec<Row> {
    let (Some(repo), Some(commit)) = (repo, commit) else {
        return vec![lock_row(
            lock,
            Status::Missing,
            format!(
                "source {} is not available, so its lock file cannot be read",
                lock.source
            ),
        )];
    };
    let text = match git::read_file(repo, commit, &lock.path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => return vec![lock_row(lock, Status::Missing, format!("{e:#}"))],
    };
    let Some(cache) = mirror_root
        .and_then(|r| super::under_root(r, &lock.cache))
        .filter(|c| c.is_dir())
    else {
        return vec![lock_row(
            lock,
            Status::Absent,
            format!(
                "no artifact cache `{}` under the mirror root; not checked",
                lock.cache
            ),
        )];
    };
    let pins = match lock.format {
        Format::Uv => uv_pins(&text, &cache),
        Format::Npm => npm_pins(&text, &cache),
        Format::Gosum => gosum_pins(&text, &cache),
    };
    let pins = match pins {
        Ok(p) => p,
        Err(e) => {
            return vec![lock_row(
                lock,
                Status::Mismatch,
                format!("{} is malformed: {e}", lock.path),
            )]
        }
    };
    let (mut checked, mut uncached) = (0, 0);
    let mut rows = Vec::new();
    for pin in &pins {
        // Names come from the lock file: only files inside the cache count.
        let Some(file) = pin.candidates.iter().find(|c| {
            c.strip_prefix(&cache)
                .ok()
                .and_then(|rel| rel.to_str())
                .and_then(|rel| super::under_root(&cache, rel))
                .is_some()
        }) else {
            uncached += 1;
            continue;
        };
        checked += 1;
        let result = match &pin.check {
            Check::Flat(hash) => {
                crate::nix::flat_hash_file(file, hash.algo, &mut |_| {}).map(|got| {
                    compare(
                        &pin.label,
                        "artifact",
                        hash,
                        &got,
                        &file.display().to_string(),
                    )
                })
            }
            Check::GoTree { prefix, expected } => {
                go_tree_hash(file, prefix).map(|got| go_compare(&pin.label, expected, &got))
            }
            Check::GoMod { expected } => fs::read(file)
                .map(|b| go_compare(&pin.label, expected, &h1(&[("go.mod".into(), b)]))),
        };
        match result {
            Ok(r) if r.status == Status::Ok => {}
            Ok(mut r) => {
                r.name = format!("{}:{}", lock.source, r.name);
                rows.push(r);
            }
            Err(e) => rows.push(lock_row(
                lock,
                Status::Missing,
                format!("cannot read {}: {e}", file.display()),
            )),
        }
    }
    let failed = rows.len();
    let status = if failed > 0 {
        Status::Mismatch
    } else if checked == 0 {
        Status::Absent
    } else {
        Status::Ok
    };
    rows.insert(
        0,
        lock_row(
            lock,
            status,
            format!(
                "{} pins: {checked} checked, {failed} wrong, {uncached} not in the cache",
                pins.len()
            ),
        ),
    );
    rows
}

fn basename(url: &str) -> String {
    url.rsplit('/')
        .next()
        .unwrap_or(url)
        .split(['?', '#'])
        .next()
        .unwrap_or("")
        .to_string()
}

fn uv_pins(text: &str, cache: &Path) -> anyhow::Result<Vec<Pin>> {
    #[derive(Deserialize)]
    struct Lock {
        #[serde(default)]
        package: Vec<Package>,
    }
    #[derive(Deserialize)]
    struct Package {
        name: String,
        sdist: Option<Artifact>,
        #[serde(default)]
        wheels: Vec<Artifact>,
    }
    #[derive(Deserialize)]
    struct Artifact {
        url: Option<String>,
        hash: Option<String>,
    }
    let lock: Lock = toml::from_str(text)?;
    let mut pins = Vec::new();
    for package in lock.package {
        for artifact in package.sdist.into_iter().chain(package.wheels) {
            if let (Some(url), Some(hash)) = (artifact.url, artifact.hash) {
                let file = basename(&url);
                pins.push(Pin {
                    label: format!("{} {file}", package.name),
                    candidates: vec![cache.join(&file)],
                    check: Check::Flat(Hash::parse(&hash, None)?),
                });
            }
        }
    }
    Ok(pins)
}

fn npm_pins(text: &str, cache: &Path) -> anyhow::Result<Vec<Pin>> {
    let lock: serde_json::Value = serde_json::from_str(text)?;
    let mut pins = Vec::new();
    for (name, entry) in lock["packages"].as_object().into_iter().flatten() {
        let (Some(url), Some(integrity)) =
            (entry["resolved"].as_str(), entry["integrity"].as_str())
        else {
            continue;
        };
        // npm writes several space-separated hashes at times; the strongest is enough.
        let Some(sri) = integrity
            .split_whitespace()
            .find(|s| s.starts_with("sha512-"))
            .or(integrity.split_whitespace().next())
        else {
            continue;
        };
        let after_host = url
            .split_once("://")
            .map(|(_, r)| r)
            .and_then(|r| r.split_once('/'))
            .map(|(_, p)| p)
            .unwrap_or(url);
        pins.push(Pin {
            label: name.trim_start_matches("node_modules/").to_string(),
            candidates: vec![cache.join(after_host), cache.join(basename(url))],
            check: Check::Flat(Hash::parse(sri, None)?),
        });
    }
    Ok(pins)
}

/// Go's case encoding of module paths in the module cache (`!` + lower case).
fn escape_module(path: &str) -> String {
    path.chars()
        .flat_map(|c| {
            if c.is_ascii_uppercase() {
                vec!['!', c.to_ascii_lowercase()]
            } else {
                vec![c]
            }
        })
        .collect()
}

fn gosum_pins(text: &str, cache: &Path) -> anyhow::Result<Vec<Pin>> {
    let mut pins = Vec::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [module, version, hash] = fields.as_slice() else {
            anyhow::bail!("line {}: expected `module version h1:hash`", n + 1);
        };
        let escaped = escape_module(module);
        if let Some(v) = version.strip_suffix("/go.mod") {
            pins.push(Pin {
                label: format!("{module} {version}"),
                candidates: vec![cache
                    .join("cache/download")
                    .join(&escaped)
                    .join("@v")
                    .join(format!("{v}.mod"))],
                check: Check::GoMod {
                    expected: hash.to_string(),
                },
            });
        } else {
            pins.push(Pin {
                label: format!("{module} {version}"),
                candidates: vec![cache.join(format!("{escaped}@{version}"))],
                check: Check::GoTree {
                    prefix: format!("{module}@{version}"),
                    expected: hash.to_string(),
                },
            });
        }
    }
    Ok(pins)
}

/// Go's dirhash `h1:`: sha256 over sorted lines `<sha256 hex>  <name>\n`.
fn h1(files: &[(String, Vec<u8>)]) -> String {
    let mut sorted: Vec<&(String, Vec<u8>)> = files.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut summary = sha2::Sha256::new();
    for (name, content) in sorted {
        summary.update(format!(
            "{}  {name}\n",
            crate::digest::hex(&sha2::Sha256::digest(content))
        ));
    }
    format!(
        "h1:{}",
        base64::engine::general_purpose::STANDARD.encode(summary.finalize())
    )
}

fn go_tree_hash(dir: &Path, prefix: &str) -> std::io::Result<String> {
    fn walk(dir: &Path, rel: &str, out: &mut Vec<(String, Vec<u8>)>) -> std::io::Result<()> {
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = format!("{rel}/{}", entry.file_name().to_string_lossy());
            if entry.file_type()?.is_dir() {
                walk(&entry.path(), &name, out)?;
            } else {
                out.push((name, fs::read(entry.path())?));
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(dir, prefix, &mut files)?;
    Ok(h1(&files))
}

fn go_compare(label: &str, expected: &str, got: &str) -> Row {
    let status = if expected == got {
        Status::Ok
    } else {
        Status::Mismatch
    };
    Row {
        manifest: String::new(),
        name: label.into(),
        kind: "artifact".into(),
        status,
        detail: if status == Status::Ok {
            format!("{label} matches")
        } else {
            format!("hash mismatch in {label}:\n  specified: {expected}\n     got:    {got}")
        },
        expected: Some(expected.into()),
        got: Some(got.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_h1_of_a_go_mod_file() {
        // The line `golang.org/x/text v0.3.0/go.mod h1:NqM8…` found in many public go.sum
        // files: that version has no go.mod, so Go hashes the synthesized one.
        let got = h1(&[("go.mod".into(), b"module golang.org/x/text\n".to_vec())]);
        assert_eq!(got, "h1:NqM8EUOU14njkJ3fqMW+pc6Ldnwhi/IjpwHt7yyuwOQ=");
        assert_eq!(
            escape_module("github.com/BurntSushi/toml"),
            "github.com/!burnt!sushi/toml"
        );
    }
}
