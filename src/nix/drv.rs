//! Nix's derivation files (`.drv`, the ATerm `Derive(…)` form), read straight
//! from the store: outputs, input derivations and the environment, which is
//! where fetchers keep their URLs and revisions.
//!
//! The format has a fixed shape, so the parser is a flat, non-recursive
//! reader of that shape; anything else is refused with its byte offset.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};

use super::{validate_store_path, Hash, HashAlgo};

/// Derivation files are small; a larger one is not one.
const MAX_DRV_BYTES: u64 = 64 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub name: String,
    pub path: String,
    /// `r:sha256` (recursive), `sha256` (flat) or `text:sha256`; empty when
    /// the output is not fixed.
    pub hash_algo: String,
    /// The fixed output's hash in hex; empty when not fixed.
    pub hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Derivation {
    pub outputs: Vec<Output>,
    /// Input derivations and the outputs used from each.
    pub input_drvs: Vec<(String, Vec<String>)>,
    pub input_srcs: Vec<String>,
    pub system: String,
    pub builder: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
}

/// How a fixed output's hash covers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HashMode {
    /// The NAR serialisation of the output (`outputHashMode = "recursive"`).
    Recursive,
    /// The bytes of a single-file output.
    Flat,
    /// A text output (`builtins.toFile`-style).
    Text,
}

impl Derivation {
    /// The fixed output (hash mode and hash), if this is a fixed-output derivation.
    pub fn fixed_output(&self) -> Result<Option<(HashMode, Hash)>> {
        let [out] = self.outputs.as_slice() else {
            return Ok(None);
        };
        // Floating content-addressed outputs have no hash yet; impure ones
        // (`__impure`) say `impure` where a hash would be.
        if out.hash.is_empty() || self.is_impure() {
            return Ok(None);
        }
        let (mode, algo) = if let Some(a) = out.hash_algo.strip_prefix("r:") {
            (HashMode::Recursive, a)
        } else if let Some(a) = out.hash_algo.strip_prefix("text:") {
            (HashMode::Text, a)
        } else {
            (HashMode::Flat, out.hash_algo.as_str())
        };
        let algo = match algo {
            "sha1" => HashAlgo::Sha1,
            "sha256" => HashAlgo::Sha256,
            "sha512" => HashAlgo::Sha512,
            other => bail!("unsupported output hash algorithm `{other}`"),
        };
        let hash = Hash::parse(&out.hash, Some(algo))?;
        Ok(Some((mode, hash)))
    }

    /// An impure derivation (`__impure = true`): like a fixed-output one it
    /// may reach the network, but nothing pins what it gets.
    pub fn is_impure(&self) -> bool {
        self.outputs.iter().any(|o| o.hash == "impure")
    }

    /// An attribute as the builder sees it: from the environment, or from
    /// the structured attributes (`__json`) where the derivation has them.
    pub fn attr(&self, name: &str) -> Option<String> {
        if let Some(json) = self.env.get("__json") {
            let value: serde_json::Value = serde_json::from_str(json).ok()?;
            return match &value[name] {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Array(items) => Some(
                    items
                        .iter()
                        .filter_map(|i| i.as_str())
                        .collect::<Vec<_>>()
                        .join(" "),
                ),
                _ => None,
            };
        }
        self.env.get(name).cloned()
    }

    /// The derivation's name (from its environment).
    pub fn name(&self) -> String {
        self.attr("name").unwrap_or_default()
    }
}

/// Parses the text of a `.drv` file.
pub fn parse(text: &str) -> Result<Derivation> {
    parse_bytes(text.as_bytes())
}

/// Parses a `.drv` file's bytes, which need not be UTF-8 (Nix strings are
/// bytes; a value read from a binary file keeps them).
pub fn parse_bytes(bytes: &[u8]) -> Result<Derivation> {
    let mut r = Reader { bytes, pos: 0 };
    r.expect("Derive(")?;
    let outputs = r.list(|r| {
        r.expect("(")?;
        let name = r.string()?;
        r.expect(",")?;
        let path = r.string()?;
        r.expect(",")?;
        let hash_algo = r.string()?;
        r.expect(",")?;
        let hash = r.string()?;
        r.expect(")")?;
        Ok(Output {
            name,
            path,
            hash_algo,
            hash,
        })
    })?;
    r.expect(",")?;
    let input_drvs = r.list(|r| {
        r.expect("(")?;
        let path = r.string()?;
        r.expect(",")?;
        let outs = r.list(Reader::string)?;
        r.expect(")")?;
        Ok((path, outs))
    })?;
    r.expect(",")?;
    let input_srcs = r.list(Reader::string)?;
    r.expect(",")?;
    let system = r.string()?;
    r.expect(",")?;
    let builder = r.string()?;
    r.expect(",")?;
    let args = r.list(Reader::string)?;
    r.expect(",")?;
    let env = r
        .list(|r| {
            r.expect("(")?;
            let k = r.string()?;
            r.expect(",")?;
            let v = r.string()?;
            r.expect(")")?;
            Ok((k, v))
        })?
        .into_iter()
        .collect();
    r.expect(")")?;
    if r.pos != r.bytes.len() {
        bail!("trailing bytes after the derivation at offset {}", r.pos);
    }
    Ok(Derivation {
        outputs,
        input_drvs,
        input_srcs,
        system,
        builder,
        args,
        env,
    })
}

/// Reads and parses one `.drv` file of the store.
pub fn read(store_dir: &str, path: &str) -> Result<Derivation> {
    validate_store_path(store_dir, path)?;
    if !path.ends_with(".drv") {
        bail!("{path} is not a derivation (.drv) path");
    }
    let size = fs::metadata(path)
        .with_context(|| format!("cannot read {path} (is it in this machine's store?)"))?
        .len();
    if size > MAX_DRV_BYTES {
        bail!("{path} is {size} bytes: too large for a derivation");
    }
    let bytes = fs::read(Path::new(path)).with_context(|| format!("cannot read {path}"))?;
    parse_bytes(&bytes).with_context(|| format!("{path} is not a valid derivation"))
}

/// Visits every derivation reachable from `roots` through input
/// derivations, once each, breadth first (no recursion, so no depth limit).
/// One derivation is held at a time: memory is the paths seen, not the sum
/// of the files.
pub fn walk(
    store_dir: &str,
    roots: &[String],
    mut visit: impl FnMut(&str, &Derivation) -> Result<()>,
) -> Result<()> {
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut queue: VecDeque<String> = VecDeque::new();
    for root in roots {
        if seen.insert(root.clone()) {
            queue.push_back(root.clone());
        }
    }
    while let Some(path) = queue.pop_front() {
        let drv = read(store_dir, &path)?;
        for (input, _) in &drv.input_drvs {
            if seen.insert(input.clone()) {
                queue.push_back(input.clone());
            }
        }
        visit(&path, &drv)?;
    }
    Ok(())
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn expect(&mut self, token: &str) -> Result<()> {
        if self.bytes[self.pos..].starts_with(token.as_bytes()) {
            self.pos += token.len();
            Ok(())
        } else {
            bail!("expected `{token}` at offset {}", self.pos)
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    /// `[item,item,…]`
    fn list<T>(&mut self, mut item: impl FnMut(&mut Self) -> Result<T>) -> Result<Vec<T>> {
        self.expect("[")?;
        let mut items = Vec::new();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(items);
        }
        loop {
            items.push(item(self)?);
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(items);
                }
                _ => bail!("expected `,` or `]` at offset {}", self.pos),
            }
        }
    }

    /// `"…"` with Nix's escapes (`\"`, `\\`, `\n`, `\r`, `\t`).
    fn string(&mut self) -> Result<String> {
        let start = self.pos;
        self.expect("\"")?;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => bail!("unterminated string from offset {start}"),
                Some(b'"') => {
                    self.pos += 1;
                    break;
                }
                Some(b'\\') => {
                    let escaped = self
                        .bytes
                        .get(self.pos + 1)
                        .ok_or_else(|| anyhow!("unterminated string from offset {start}"))?;
                    out.push(match escaped {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        other => *other,
                    });
                    self.pos += 2;
                }
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
        // Builder scripts and other values may hold any bytes; store paths
        // (checked where they are used) cannot.
        Ok(String::from_utf8(out)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FETCHGIT: &str = r#"Derive([("out","/nix/store/0xw97csih5bds2lrkq65lhrb2zczgyk-source","r:sha256","a55437e1c6585f786593a845d5a67f9f7db132a4c5e099a9d06d1518353b8977")],[("/nix/store/9gjkq2dw0c0xp3l9vbbmlqnmmyxyzwhr-git-2.47.drv",["out"])],["/nix/store/3qbr0p7cj1l9mvnx2q9a3a7c8y5fsxn3-builder.sh"],"x86_64-linux","/bin/sh",["-e","/nix/store/3qbr0p7cj1l9mvnx2q9a3a7c8y5fsxn3-builder.sh"],[("name","source"),("out","/nix/store/0xw97csih5bds2lrkq65lhrb2zczgyk-source"),("rev","version/2026.2.0"),("text","a \"quoted\"\\ line\nnext"),("url","https://forge.ops.eblu.me/mirrors/authentik.git")])"#;

    #[test]
    fn parses_a_fetchgit_derivation() {
        let drv = parse(FETCHGIT).unwrap();
        assert_eq!(drv.name(), "source");
        assert_eq!(drv.attr("rev").unwrap(), "version/2026.2.0");
        assert_eq!(drv.env["text"], "a \"quoted\"\\ line\nnext");
        assert_eq!(drv.input_drvs[0].1, ["out"]);
        assert_eq!(drv.args.len(), 2);
        let (mode, hash) = drv.fixed_output().unwrap().unwrap();
        assert_eq!(mode, HashMode::Recursive);
        assert_eq!(
            hash.to_sri(),
            "sha256-pVQ34cZYX3hlk6hF1aZ/n32xMqTF4Jmp0G0VGDU7iXc="
        );
    }

    #[test]
    fn structured_attrs_are_read_from_json() {
        let text = r#"Derive([("out","/nix/store/x-a","","")],[],[],"x86_64-linux","/bin/sh",[],[("__json","{\"name\":\"a\",\"urls\":[\"https://a/1\",\"https://b/2\"]}"),("out","/nix/store/x-a")])"#;
        let drv = parse(text).unwrap();
        assert_eq!(drv.attr("urls").unwrap(), "https://a/1 https://b/2");
        assert_eq!(drv.attr("name").unwrap(), "a");
        assert_eq!(drv.attr("missing"), None);
        assert_eq!(drv.fixed_output().unwrap(), None);
    }

    #[test]
    fn a_derivation_of_the_largest_size_reads_and_a_byte_more_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().to_str().unwrap();
        let path = format!("{store}/{}-big.drv", "a".repeat(32));
        let shell = |padding: usize| {
            format!(
                r#"Derive([("out","{store}/x-a","","")],[],[],"x86_64-linux","/bin/sh",[],[("pad","{}")])"#,
                "p".repeat(padding)
            )
        };
        let fixed = shell(0).len();
        let exact = shell(MAX_DRV_BYTES as usize - fixed);
        assert_eq!(exact.len() as u64, MAX_DRV_BYTES);
        fs::write(&path, &exact).unwrap();
        assert!(read(store, &path).is_ok());
        fs::write(&path, shell(MAX_DRV_BYTES as usize - fixed + 1)).unwrap();
        let err = read(store, &path).unwrap_err().to_string();
        assert!(err.contains("too large for a derivation"), "{err}");
    }

    #[test]
    fn refuses_what_is_not_a_derivation() {
        for bad in [
            "",
            "Derive(",
            "Derive([(\"out\"",
            "Derive([],[],[],\"s\",\"b\",[],[])x",
            "Derive([],[],[],\"s\",\"b\",[],[(\"a\",\"\\",
            "{\"json\": true}",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        // Deeply nested brackets cannot recurse: the shape is fixed.
        let deep = format!("Derive({}", "[".repeat(100_000));
        assert!(parse(&deep).is_err());
    }
}
