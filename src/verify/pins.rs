//! `nixoci pins update`: makes a manifest's hashes anew against the nixpkgs
//! in use, the way users do by hand after a version bump (the "fake-hash
//! dance"): every pin gets a fake hash of its own, the image is built with
//! `nix-build --keep-going`, and each `got:` Nix reports replaces the fake
//! it answers, round after round until the image builds. The TOML is then
//! edited in place, line by line, so its comments and order stay; fixed
//! outputs also record the nixpkgs revision they were made with.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};

use super::read_manifest;
use crate::nix::Hash;

pub struct UpdateOptions {
    /// The Nix expression of the image; it takes the manifest as `pinsFile`.
    pub expression: PathBuf,
    /// Only these pins (by name); all of them when empty.
    pub only: Vec<String>,
    /// `-I` entries for nix-build (`nixpkgs=PATH`).
    pub include: Vec<String>,
    /// The nixpkgs revision the fixed outputs are recorded as made with.
    pub nixpkgs_rev: Option<String>,
    /// The system this machine builds for (`x86_64-linux`): a pin of
    /// another platform cannot be made here and is left alone.
    pub system: String,
}

impl UpdateOptions {
    /// The options a manifest implies, each overridable: the image's
    /// expression beside the manifest's folder (`mirrors/X.toml` →
    /// `containers/<image>`), the nixpkgs revision from the nearest
    /// `flake.lock` above the expression, and this machine's system.
    pub fn for_manifest(
        manifest_path: &Path,
        expression: Option<PathBuf>,
        nixpkgs_rev: Option<String>,
    ) -> Result<UpdateOptions> {
        let expression = match expression {
            Some(e) => e,
            None => {
                let image = read_manifest(manifest_path)?.image.ok_or_else(|| {
                    anyhow!(
                        "{} names no `image`; give the image's Nix expression with --file",
                        manifest_path.display()
                    )
                })?;
                let mirrors = manifest_path.canonicalize()?;
                let root = mirrors.parent().and_then(Path::parent).ok_or_else(|| {
                    anyhow!("cannot find the repository of {}", manifest_path.display())
                })?;
                root.join("containers").join(image)
            }
        };
        let nixpkgs_rev = match nixpkgs_rev {
            Some(rev) => Some(rev),
            None => locked_nixpkgs(&expression)?,
        };
        Ok(UpdateOptions {
            expression,
            only: Vec::new(),
            include: Vec::new(),
            nixpkgs_rev,
            system: format!("{}-linux", std::env::consts::ARCH),
        })
    }
}

/// The nixpkgs revision of the nearest `flake.lock` at or above `from`.
fn locked_nixpkgs(from: &Path) -> Result<Option<String>> {
    let from = from
        .canonicalize()
        .with_context(|| format!("cannot find {}", from.display()))?;
    for dir in from.ancestors() {
        let lock = dir.join("flake.lock");
        if lock.is_file() {
            let value: serde_json::Value = serde_json::from_str(&fs::read_to_string(&lock)?)
                .with_context(|| format!("{}: not JSON", lock.display()))?;
            return Ok(value["nodes"]["nixpkgs"]["locked"]["rev"]
                .as_str()
                .map(String::from));
        }
    }
    Ok(None)
}

/// One pin the update made: its name, the hash before and after.
#[derive(Debug, serde::Serialize)]
pub struct Change {
    pub name: String,
    pub before: String,
    pub after: String,
}

/// Where a pin's hash lives in the TOML: the `index`-th `[[table]]` block,
/// under `key`.
struct Target {
    name: String,
    table: &'static str,
    index: usize,
    key: &'static str,
    before: String,
    fake: String,
    got: Option<String>,
}

/// How many build rounds at most: each round settles every pin whose
/// inputs did not depend on another unsettled pin.
const MAX_ROUNDS: usize = 8;

/// Updates the pins of `manifest_path` in place and returns what changed
/// (nothing is written when nothing did).
pub fn update(manifest_path: &Path, opts: &UpdateOptions) -> Result<Vec<Change>> {
    let manifest = read_manifest(manifest_path)?;
    let text = fs::read_to_string(manifest_path)
        .with_context(|| format!("cannot read {}", manifest_path.display()))?;
    let mut targets: Vec<Target> = Vec::new();
    for (index, source) in manifest.sources.iter().enumerate() {
        targets.push(target(&source.name, "source", index, "hash", &source.hash));
    }
    for (index, fod) in manifest.fods.iter().enumerate() {
        if fod.system.as_deref().is_some_and(|s| s != opts.system) {
            if opts.only.contains(&fod.name) {
                bail!(
                    "{} is pinned for {}, and this machine builds for {}",
                    fod.name,
                    fod.system.as_deref().unwrap_or_default(),
                    opts.system
                );
            }
            continue;
        }
        targets.push(target(
            &fod.name,
            "fod",
            index,
            "outputHash",
            &fod.output_hash,
        ));
    }
    for name in &opts.only {
        if !targets.iter().any(|t| &t.name == name) {
            bail!(
                "{}: no pin named `{name}` (pins: {})",
                manifest_path.display(),
                targets
                    .iter()
                    .map(|t| t.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    if !opts.only.is_empty() {
        targets.retain(|t| opts.only.contains(&t.name));
    }

    let work = tempfile::Builder::new().prefix("nixoci-pins-").tempdir()?;
    let pins_file = work.path().join(
        manifest_path
            .file_name()
            .ok_or_else(|| anyhow!("{} is not a file", manifest_path.display()))?,
    );
    for round in 1..=MAX_ROUNDS {
        let mut working = text.clone();
        for t in &targets {
            working = set_value(
                &working,
                t.table,
                t.index,
                t.key,
                t.got.as_deref().unwrap_or(&t.fake),
            )?;
        }
        fs::write(&pins_file, &working)?;
        let waiting = targets.iter().filter(|t| t.got.is_none()).count();
        eprintln!("pins update: round {round}: building with {waiting} fake hash(es)");
        let out = Command::new("nix-build")
            .args(["--no-out-link", "--keep-going"])
            .arg(&opts.expression)
            .args(opts.include.iter().flat_map(|i| ["-I", i.as_str()]))
            .arg("--arg")
            .arg("pinsFile")
            .arg(&pins_file)
            .output()
            .context("cannot run nix-build (is Nix installed?)")?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        let mismatches = hash_mismatches(&stderr);
        let mut settled = 0;
        for (specified, got) in &mismatches {
            match targets.iter_mut().find(|t| &t.fake == specified) {
                Some(t) => {
                    eprintln!("pins update:   {}: got {got}", t.name);
                    t.got = Some(got.clone());
                    settled += 1;
                }
                None => bail!(
                    "a fixed output pinned as {specified} built as {got}; it is not a pin being \
                     updated (run without --only, or fix that pin):\n{}",
                    tail(&stderr)
                ),
            }
        }
        if out.status.success() {
            if let Some(t) = targets.iter().find(|t| t.got.is_none()) {
                bail!(
                    "{} is not built by {}: is it a fixed output of this image?",
                    t.name,
                    opts.expression.display()
                );
            }
            break;
        }
        if settled == 0 {
            bail!(
                "the image does not build, and no fixed output reported its hash:\n{}",
                tail(&stderr)
            );
        }
        if round == MAX_ROUNDS {
            bail!("the pins did not settle in {MAX_ROUNDS} rounds");
        }
    }

    let mut updated = text.clone();
    let mut changes = Vec::new();
    for t in &targets {
        let after = t.got.clone().unwrap_or_else(|| t.before.clone());
        updated = set_value(&updated, t.table, t.index, t.key, &after)?;
        if t.table == "fod" {
            if let Some(rev) = &opts.nixpkgs_rev {
                updated = set_value(&updated, "fod", t.index, "nixpkgs", rev)?;
            }
        }
        changes.push(Change {
            name: t.name.clone(),
            before: t.before.clone(),
            after,
        });
    }
    if updated != text {
        let dir = manifest_path.parent().unwrap_or(Path::new("."));
        let mut staged = tempfile::NamedTempFile::new_in(dir)?;
        std::io::Write::write_all(&mut staged, updated.as_bytes())?;
        staged
            .persist(manifest_path)
            .map_err(|e| anyhow!("cannot replace {}: {e}", manifest_path.display()))?;
    }
    Ok(changes)
}

fn target(
    name: &str,
    table: &'static str,
    index: usize,
    key: &'static str,
    before: &str,
) -> Target {
    let fake = Hash::sha256(Sha256::digest(format!("nixoci pins update: {name}")).into()).to_sri();
    Target {
        name: name.to_string(),
        table,
        index,
        key,
        before: before.to_string(),
        fake,
        got: None,
    }
}

/// The (specified, got) pairs of Nix's "hash mismatch in fixed-output
/// derivation" errors, in order.
fn hash_mismatches(stderr: &str) -> Vec<(String, String)> {
    let word_after = |line: &str, label: &str| {
        line.split_once(label)
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .map(str::to_string)
    };
    let mut pairs = Vec::new();
    let mut specified = None;
    for line in stderr.lines() {
        if let Some(s) = word_after(line, "specified:") {
            specified = Some(s);
        } else if let (Some(got), Some(s)) = (word_after(line, "got:"), specified.take()) {
            pairs.push((s, got));
        }
    }
    pairs
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// `text` with `key = "value"` set in the `index`-th `[[table]]` block:
/// the value of an existing line is replaced (the rest of the line, a
/// comment included, stays); a missing key is added after the block's
/// `name` line. Every other line is kept byte for byte.
fn set_value(text: &str, table: &str, index: usize, key: &str, value: &str) -> Result<String> {
    let header = format!("[[{table}]]");
    let mut lines: Vec<String> = text.split_inclusive('\n').map(String::from).collect();
    let starts: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.trim() == header)
        .map(|(i, _)| i)
        .collect();
    let start = *starts
        .get(index)
        .ok_or_else(|| anyhow!("no {header} number {} in the manifest", index + 1))?;
    let end = (start + 1..lines.len())
        .find(|&i| lines[i].trim_start().starts_with('['))
        .unwrap_or(lines.len());
    let is_key = |line: &str, k: &str| {
        line.trim_start()
            .strip_prefix(k)
            .is_some_and(|rest| rest.trim_start().starts_with('='))
    };
    if let Some(at) = (start + 1..end).find(|&i| is_key(&lines[i], key)) {
        let line = &lines[at];
        let open = line
            .find('"')
            .ok_or_else(|| anyhow!("{header} {key} is not a string: {line}"))?;
        let close = open
            + 1
            + line[open + 1..]
                .find('"')
                .ok_or_else(|| anyhow!("{header} {key} is not a string: {line}"))?;
        lines[at] = format!("{}{value}{}", &line[..=open], &line[close..]);
    } else {
        let after = (start + 1..end)
            .find(|&i| is_key(&lines[i], "name"))
            .ok_or_else(|| anyhow!("{header} number {} has no name", index + 1))?;
        lines.insert(after + 1, format!("{key} = \"{value}\"\n"));
    }
    Ok(lines.concat())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# top\n[[source]]\nname = \"a\"\nhash = \"sha256-A\" # keep me\n\n[[fod]]\nname = \"b\"\noutputHash = \"sha256-B\"\n[[fod]]\nname = \"c\"\nnixpkgs = \"old\"\noutputHash = \"sha256-C\"\n";

    #[test]
    fn set_value_edits_one_line_and_keeps_the_rest() {
        let out = set_value(TEXT, "source", 0, "hash", "sha256-X").unwrap();
        assert_eq!(out, TEXT.replace("sha256-A", "sha256-X"));
        let out = set_value(TEXT, "fod", 1, "outputHash", "sha256-Y").unwrap();
        assert_eq!(out, TEXT.replace("sha256-C", "sha256-Y"));
        // A missing key goes after the name; an existing one is replaced.
        let out = set_value(TEXT, "fod", 0, "nixpkgs", "abc").unwrap();
        assert_eq!(
            out,
            TEXT.replace("name = \"b\"\n", "name = \"b\"\nnixpkgs = \"abc\"\n")
        );
        let out = set_value(TEXT, "fod", 1, "nixpkgs", "new").unwrap();
        assert_eq!(out, TEXT.replace("\"old\"", "\"new\""));
        assert!(set_value(TEXT, "fod", 2, "outputHash", "x").is_err());
    }

    #[test]
    fn mismatches_pair_specified_with_got() {
        let stderr = "error: hash mismatch in fixed-output derivation '/nix/store/x-a.drv':\n  \
                      specified: sha256-AAA=\n     got:    sha256-BBB=\n\
                      error: hash mismatch in fixed-output derivation '/nix/store/y-b.drv':\n  \
                      specified: sha256-CCC=\n     got:    sha256-DDD=\n";
        assert_eq!(
            hash_mismatches(stderr),
            vec![
                ("sha256-AAA=".to_string(), "sha256-BBB=".to_string()),
                ("sha256-CCC=".to_string(), "sha256-DDD=".to_string())
            ]
        );
    }
}
