//! Closure and graph: reads a Nix closure in every form it is found in
//! (structured `exportReferencesGraph` JSON, the classic text file,
//! `nix path-info --json` in its array and object shapes, or the local store)
//! into one validated graph.

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use crate::nix::{self, Hash, HashAlgo};

/// One store path of a closure.
#[derive(Clone, Debug, PartialEq)]
pub struct PathInfo {
    pub path: String,
    /// NAR hash, when the source recorded one (the classic format does not).
    pub nar_hash: Option<Hash>,
    pub nar_size: u64,
    /// Direct references, self-reference removed, in source order.
    pub references: Vec<String>,
}

/// A closed reference graph: every reference is itself a node.
#[derive(Clone, Debug, Default)]
pub struct Closure {
    nodes: Vec<PathInfo>,
    index: HashMap<String, usize>,
}

impl Closure {
    /// Builds a graph from nodes in source order. Self-references are dropped,
    /// repeated nodes are merged, and a reference to a path that is not a node
    /// is an error.
    pub fn from_nodes(nodes: Vec<PathInfo>, store_dir: &str, source: &str) -> Result<Closure> {
        let mut closure = Closure::default();
        for mut node in nodes {
            nix::validate_store_path(store_dir, &node.path)
                .map_err(|e| anyhow!("{source}: {e}"))?;
            dedup_references(&mut node);
            match closure.index.get(&node.path) {
                Some(&i) => {
                    let existing = &mut closure.nodes[i];
                    if existing.nar_hash.is_some()
                        && node.nar_hash.is_some()
                        && existing.nar_hash != node.nar_hash
                    {
                        bail!(
                            "{source}: {} appears twice with different narHash values",
                            node.path
                        );
                    }
                    for r in node.references {
                        if !existing.references.contains(&r) {
                            existing.references.push(r);
                        }
                    }
                }
                None => {
                    closure.index.insert(node.path.clone(), closure.nodes.len());
                    closure.nodes.push(node);
                }
            }
        }
        for node in &closure.nodes {
            for r in &node.references {
                if !closure.index.contains_key(r) {
                    bail!(
                        "{source}: {} references {r}, which the graph does not list (the closure is incomplete)",
                        node.path
                    );
                }
            }
        }
        Ok(closure)
    }

    /// Fills in NAR sizes the source did not record (the classic format), from
    /// the paths on disk, so size-based layering sees the real sizes.
    pub fn fill_missing_sizes(&mut self) -> Result<()> {
        for node in &mut self.nodes {
            if node.nar_size == 0 {
                node.nar_size = nix::nar_size(Path::new(&node.path))
                    .with_context(|| format!("cannot measure {}", node.path))?;
            }
        }
        Ok(())
    }

    /// The graph without `excluded` nodes (nixpkgs' `excludePaths`: helper
    /// paths such as the customisation layer's own store path); references to
    /// them are dropped, so what they referenced stays, now as roots.
    pub fn without(&self, excluded: &[String]) -> Closure {
        let mut out = Closure::default();
        for node in self.nodes.iter().filter(|n| !excluded.contains(&n.path)) {
            let mut node = node.clone();
            node.references.retain(|r| !excluded.contains(r));
            out.index.insert(node.path.clone(), out.nodes.len());
            out.nodes.push(node);
        }
        out
    }

    pub fn nodes(&self) -> &[PathInfo] {
        &self.nodes
    }

    pub fn get(&self, path: &str) -> Option<&PathInfo> {
        self.index.get(path).map(|&i| &self.nodes[i])
    }

    pub fn contains(&self, path: &str) -> bool {
        self.index.contains_key(path)
    }

    /// Indices of each node's references.
    pub fn reference_indices(&self) -> Vec<Vec<usize>> {
        self.nodes
            .iter()
            .map(|n| n.references.iter().map(|r| self.index[r]).collect())
            .collect()
    }
}

/// Reads a closure graph file in any supported format, detected from its content.
pub fn read_graph_file(file: &Path, store_dir: &str) -> Result<Closure> {
    let source = file.display().to_string();
    let text =
        fs::read_to_string(file).with_context(|| format!("cannot read graph file {source}"))?;
    parse_graph(&text, store_dir, &source)
}

/// Parses graph text in any supported format; `source` names it in errors.
pub fn parse_graph(text: &str, store_dir: &str, source: &str) -> Result<Closure> {
    let trimmed = text.trim_start();
    let nodes = if let Some(nodes) = plain_node_list(trimmed, source) {
        nodes?
    } else if trimmed.starts_with('[') || trimmed.starts_with('{') {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| anyhow!("{source}: not valid JSON ({e}); is the file truncated?"))?;
        nodes_from_json(&value, source)?
    } else if trimmed.is_empty() {
        bail!("{source}: the graph file is empty")
    } else {
        parse_classic(text, source, store_dir)?
    };
    if nodes.is_empty() {
        bail!("{source}: the graph lists no store paths");
    }
    Closure::from_nodes(nodes, store_dir, source)
}

/// A graph in `nix-store --load-db` form (closureInfo's `registration`):
/// per path, sorted, its NAR hash and size, no deriver, and its references
/// as the graph gives them (self-references included, which
/// [`Closure::from_nodes`] drops). Every path needs a NAR hash.
pub fn registration(nodes: &[PathInfo], store_dir: &str) -> Result<String> {
    let mut nodes: Vec<&PathInfo> = nodes.iter().collect();
    nodes.sort_by(|a, b| a.path.cmp(&b.path));
    nodes.dedup_by(|a, b| a.path == b.path);
    let mut text = String::new();
    for node in nodes {
        nix::validate_store_path(store_dir, &node.path)?;
        let hash = node
            .nar_hash
            .as_ref()
            .ok_or_else(|| anyhow!("{} has no NAR hash to register", node.path))?;
        let mut refs = node.references.clone();
        refs.sort();
        refs.dedup();
        text.push_str(&format!(
            "{}\nsha256:{}\n{}\n\n{}\n",
            node.path,
            hash.to_hex(),
            node.nar_size,
            refs.len()
        ));
        for r in refs {
            nix::validate_store_path(store_dir, &r)?;
            text.push_str(&r);
            text.push('\n');
        }
    }
    Ok(text)
}

/// The common shape, a JSON list of `{path, narHash, narSize, references}`
/// objects, read straight into nodes: a big graph's strings are then
/// allocated once, not first into a JSON tree. `None` when the text is of
/// another shape (or not valid), which [`nodes_from_json`] then reads and
/// explains.
fn plain_node_list(text: &str, source: &str) -> Option<Result<Vec<PathInfo>>> {
    #[derive(serde::Deserialize)]
    struct Plain {
        path: String,
        #[serde(rename = "narHash")]
        nar_hash: Option<String>,
        #[serde(rename = "narSize", default)]
        nar_size: u64,
        #[serde(default)]
        references: Vec<String>,
    }
    if !text.starts_with('[') {
        return None;
    }
    let plain: Vec<Plain> = serde_json::from_str(text).ok()?;
    Some(
        plain
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                let nar_hash = p
                    .nar_hash
                    .map(|h| Hash::parse(&h, Some(HashAlgo::Sha256)))
                    .transpose()
                    .map_err(|e| anyhow!("{source}: entry {i}: narHash: {e}"))?;
                Ok(PathInfo {
                    path: p.path,
                    nar_hash,
                    nar_size: p.nar_size,
                    references: p.references,
                })
            })
            .collect(),
    )
}

/// Drops a node's self-reference and repeated references, keeping the first
/// of each. Most paths have a few references, compared pairwise; a path with
/// many is deduplicated through a set.
fn dedup_references(node: &mut PathInfo) {
    let references = std::mem::take(&mut node.references);
    let mut kept: Vec<String> = Vec::with_capacity(references.len());
    let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
    let many = references.len() > 16;
    for r in references {
        let repeated = if many {
            !seen.insert(r.clone())
        } else {
            kept.contains(&r)
        };
        if r != node.path && !repeated {
            kept.push(r);
        }
    }
    node.references = kept;
}

/// JSON shapes: a list of `{path, narHash, narSize, references}` (structured
/// exportReferencesGraph, or `nix path-info --json` before Nix 2.19), an object
/// keyed by store path (newer `nix path-info`), or an object holding exactly one
/// such list (a `.attrs.json`, or a spec with a `graph` key).
pub fn nodes_from_json(value: &Value, source: &str) -> Result<Vec<PathInfo>> {
    match value {
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| node_from_json(item, None, &|| format!("{source}: entry {i}")))
            .collect(),
        Value::Object(map) => {
            if let Some(graph) = map.get("graph") {
                return nodes_from_json(graph, &format!("{source}: graph"));
            }
            if !map.is_empty() && map.keys().all(|k| k.starts_with('/')) {
                return map
                    .iter()
                    .map(|(path, item)| {
                        node_from_json(item, Some(path), &|| format!("{source}: {path}"))
                    })
                    .collect();
            }
            let lists: Vec<&String> = map
                .iter()
                .filter(|(_, v)| {
                    v.as_array()
                        .is_some_and(|a| a.first().is_some_and(|f| f.get("path").is_some()))
                })
                .map(|(k, _)| k)
                .collect();
            match lists.as_slice() {
                [key] => nodes_from_json(&map[*key], &format!("{source}: {key}")),
                [] => bail!("{source}: JSON object holds no closure graph (no list of {{path, references}} objects)"),
                _ => bail!(
                    "{source}: JSON object holds several graphs ({}); name one `graph`",
                    lists.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ")
                ),
            }
        }
        _ => bail!("{source}: expected a JSON list or object"),
    }
}

/// `at` names the entry in errors (made only for one).
fn node_from_json(
    item: &Value,
    key_path: Option<&str>,
    at: &dyn Fn() -> String,
) -> Result<PathInfo> {
    if item.is_null() {
        // Newer Nix writes `null` for a path that is not valid.
        bail!(
            "{}: the store path is not valid (path-info gave null)",
            at()
        );
    }
    let obj = item
        .as_object()
        .ok_or_else(|| anyhow!("{}: expected an object", at()))?;
    let path = match (obj.get("path"), key_path) {
        (Some(Value::String(p)), _) => p.clone(),
        (None, Some(p)) => p.to_string(),
        _ => bail!("{}: missing string field `path`", at()),
    };
    let references = match obj.get("references") {
        Some(Value::Array(refs)) => refs
            .iter()
            .map(|r| {
                r.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| anyhow!("{}: `references` must hold strings", at()))
            })
            .collect::<Result<Vec<_>>>()?,
        None | Some(Value::Null) => Vec::new(),
        _ => bail!("{}: `references` must be a list", at()),
    };
    let nar_hash = match obj.get("narHash") {
        Some(Value::String(h)) => Some(
            Hash::parse(h, Some(HashAlgo::Sha256))
                .map_err(|e| anyhow!("{}: narHash: {e}", at()))?,
        ),
        None | Some(Value::Null) => None,
        _ => bail!("{}: `narHash` must be a string", at()),
    };
    let nar_size = match obj.get("narSize") {
        Some(v) => v
            .as_u64()
            .ok_or_else(|| anyhow!("{}: `narSize` must be a non-negative integer", at()))?,
        None => 0,
    };
    Ok(PathInfo {
        path,
        nar_hash,
        nar_size,
        references,
    })
}

/// The classic `exportReferencesGraph` text: blocks of path, deriver line,
/// reference count and references. It records no sizes or hashes.
fn parse_classic(text: &str, source: &str, store_dir: &str) -> Result<Vec<PathInfo>> {
    let lines: Vec<&str> = text.lines().collect();
    let mut nodes = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].is_empty() && i + 1 == lines.len() {
            break;
        }
        let path = lines[i];
        let line_no = i + 1;
        // Nothing from a file that is not a graph is quoted back: it may be
        // anything (`--graph /etc/shadow`).
        if nix::validate_store_path(store_dir, path).is_err() {
            bail!("{source}: line {line_no} is not a store path under {store_dir}: this is not a closure graph");
        }
        let count_line = lines.get(i + 2).ok_or_else(|| {
            anyhow!("{source}: line {line_no}: block for `{path}` is truncated (expected deriver and reference count)")
        })?;
        let count: usize = count_line.trim().parse().map_err(|_| {
            anyhow!(
                "{source}: line {}: expected the reference count of `{path}`",
                i + 3
            )
        })?;
        let refs_start = i + 3;
        if count > lines.len().saturating_sub(refs_start) {
            bail!(
                "{source}: block for `{path}` promises {count} references but the file ends first"
            );
        }
        nodes.push(PathInfo {
            path: path.to_string(),
            nar_hash: None,
            nar_size: 0,
            references: lines[refs_start..refs_start + count]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        });
        i = refs_start + count;
    }
    Ok(nodes)
}

/// The registration format of `nix-store --dump-db`: path, hex NAR hash, NAR
/// size, deriver, reference count, references.
fn parse_registration(text: &str, source: &str) -> Result<Vec<PathInfo>> {
    let lines: Vec<&str> = text.lines().collect();
    let mut nodes = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let field = |k: usize| {
            lines
                .get(i + k)
                .copied()
                .ok_or_else(|| anyhow!("{source}: truncated registration record at line {}", i + 1))
        };
        let path = field(0)?;
        let nar_hash = Hash::parse(field(1)?, Some(HashAlgo::Sha256))
            .map_err(|e| anyhow!("{source}: {path}: {e}"))?;
        let nar_size = field(2)?
            .parse()
            .map_err(|_| anyhow!("{source}: {path}: bad NAR size"))?;
        let count: usize = field(4)?
            .parse()
            .map_err(|_| anyhow!("{source}: {path}: bad reference count"))?;
        let refs = (0..count)
            .map(|k| field(5 + k).map(str::to_string))
            .collect::<Result<Vec<_>>>()?;
        nodes.push(PathInfo {
            path: path.to_string(),
            nar_hash: Some(nar_hash),
            nar_size,
            references: refs,
        });
        i += 5 + count;
    }
    Ok(nodes)
}

/// Reads the closure of `roots` from the local Nix store (through
/// `nix-store`, which also works without a daemon as root).
pub fn read_from_store(roots: &[String], store_dir: &str) -> Result<Closure> {
    for root in roots {
        nix::validate_store_path(store_dir, root)?;
        if fs::symlink_metadata(root).is_err() {
            bail!("store path {root} does not exist");
        }
    }
    let requisites = run_nix_store(&["--query", "--requisites"], roots)?;
    let mut closure_paths: Vec<String> = requisites.lines().map(str::to_string).collect();
    // Nix orders StorePathSets by base name; use the same order for tie-breaks.
    closure_paths.sort();
    let registration = run_nix_store(&["--dump-db"], &closure_paths)?;
    let nodes = parse_registration(&registration, "nix-store --dump-db")?;
    Closure::from_nodes(nodes, store_dir, "local store")
}

fn run_nix_store(args: &[&str], paths: &[String]) -> Result<String> {
    let output = Command::new("nix-store")
        .args(args)
        .args(paths)
        .output()
        .map_err(|e| {
            anyhow!("cannot run nix-store to read the closure from the local store: {e}")
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        bail!("nix-store {} failed: {}", args.join(" "), stderr.trim());
    }
    String::from_utf8(output.stdout).map_err(|_| anyhow!("nix-store printed non-UTF-8 output"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "/nix/store/wd0ys9snp82b5v5j4pgp5wfhnfjhl2vm-a";
    const B: &str = "/nix/store/s22ggbj3jamkv6vwp28ggpl02yblm65w-b";

    /// A reference listed twice is one edge, whichever way the node's
    /// references are scanned (a short list, or more than 16).
    #[test]
    fn repeated_references_are_kept_once_in_source_order() {
        for many in [2, 40] {
            let targets: Vec<String> = (0..many)
                .map(|i| format!("/nix/store/{i:0>32}-t{i}"))
                .collect();
            let mut nodes: Vec<PathInfo> = targets
                .iter()
                .map(|path| PathInfo {
                    path: path.clone(),
                    nar_hash: None,
                    nar_size: 1,
                    references: Vec::new(),
                })
                .collect();
            let mut references = targets.clone();
            references.extend(targets.iter().rev().cloned());
            references.push(A.to_string());
            nodes.push(PathInfo {
                path: A.to_string(),
                nar_hash: None,
                nar_size: 1,
                references,
            });
            let closure = Closure::from_nodes(nodes, "/nix/store", "test").unwrap();
            let a = closure.nodes.iter().find(|n| n.path == A).unwrap();
            assert_eq!(a.references, targets, "{many} references");
        }
    }

    #[test]
    fn classic_and_json_shapes_agree() {
        let classic = format!("{B}\n\n2\n{B}\n{A}\n{A}\n\n0\n");
        let list = format!(
            r#"[{{"path":"{B}","references":["{B}","{A}"],"narSize":5}},{{"path":"{A}","references":[]}}]"#
        );
        let keyed = format!(r#"{{"{B}":{{"references":["{A}"]}},"{A}":{{"references":[]}}}}"#);
        let attrs = format!(r#"{{"outputs":{{"out":"/x"}},"closure":{list}}}"#);
        for (text, name) in [
            (classic, "classic"),
            (list, "list"),
            (keyed, "keyed"),
            (attrs, "attrs"),
        ] {
            let c = parse_graph(&text, nix::DEFAULT_STORE_DIR, name).unwrap();
            assert_eq!(c.get(B).unwrap().references, vec![A.to_string()], "{name}");
            assert!(c.contains(A), "{name}");
        }
    }

    fn info(path: &str, hash: Option<&str>, refs: &[&str]) -> PathInfo {
        PathInfo {
            path: path.to_string(),
            nar_hash: hash.map(|h| Hash::parse(h, Some(HashAlgo::Sha256)).unwrap()),
            nar_size: 1,
            references: refs.iter().map(|r| r.to_string()).collect(),
        }
    }

    #[test]
    fn repeated_nodes_merge_and_conflicting_hashes_are_refused() {
        const H1: &str = "sha256-2VD35R+ze2oS2wod5MbPe9ckn9zHIiCLCb/QdhzXR94=";
        const H2: &str = "sha256-+4cWvFuixCcO7P+z701/0H+Ah/Z5sbLNsdx2Uowqwf4=";
        const C: &str = "/nix/store/0ys9snp82b5v5j4pgp5wfhnfjhl2vmwd-c";
        // The same path twice (as concatenated graph files give it): one node,
        // its references merged once each, its self-reference dropped.
        let merged = Closure::from_nodes(
            vec![
                info(B, Some(H1), &[A, B]),
                info(A, None, &[]),
                info(C, None, &[]),
                info(B, Some(H1), &[A, C]),
                info(B, None, &[C]),
            ],
            nix::DEFAULT_STORE_DIR,
            "g",
        )
        .unwrap();
        assert_eq!(merged.nodes().len(), 3);
        assert_eq!(
            merged.get(B).unwrap().references,
            vec![A.to_string(), C.to_string()]
        );
        // Two NAR hashes for one path: the graph is not to be trusted.
        let err = Closure::from_nodes(
            vec![info(A, Some(H1), &[]), info(A, Some(H2), &[])],
            nix::DEFAULT_STORE_DIR,
            "g",
        )
        .unwrap_err();
        assert!(err.to_string().contains("different narHash"), "{err}");
        // A hash on one side only is no conflict.
        for pair in [[Some(H1), None], [None, Some(H1)]] {
            let c = Closure::from_nodes(
                pair.iter().map(|h| info(A, *h, &[])).collect(),
                nix::DEFAULT_STORE_DIR,
                "g",
            )
            .unwrap();
            assert_eq!(c.nodes().len(), 1);
        }
    }

    #[test]
    fn registration_is_nix_store_load_db_input() {
        const H1: &str = "sha256-2VD35R+ze2oS2wod5MbPe9ckn9zHIiCLCb/QdhzXR94=";
        let hex = Hash::parse(H1, Some(HashAlgo::Sha256)).unwrap().to_hex();
        // Sorted by path, each once, references sorted and kept as given
        // (self-references too), no deriver.
        let text = registration(
            &[
                info(B, Some(H1), &[B, A]),
                info(A, Some(H1), &[]),
                info(B, Some(H1), &[B, A]),
            ],
            nix::DEFAULT_STORE_DIR,
        )
        .unwrap();
        assert!(B < A, "the hashes decide the order");
        assert_eq!(
            text,
            format!("{B}\nsha256:{hex}\n1\n\n2\n{B}\n{A}\n{A}\nsha256:{hex}\n1\n\n0\n")
        );
        // A path without a NAR hash cannot be registered.
        let err = registration(&[info(A, None, &[])], nix::DEFAULT_STORE_DIR).unwrap_err();
        assert!(err.to_string().contains("no NAR hash"), "{err}");
    }

    #[test]
    fn registrations_read_back_record_by_record() {
        const H1: &str = "sha256-2VD35R+ze2oS2wod5MbPe9ckn9zHIiCLCb/QdhzXR94=";
        let written = registration(
            &[info(B, Some(H1), &[A, B]), info(A, Some(H1), &[])],
            nix::DEFAULT_STORE_DIR,
        )
        .unwrap();
        let read = parse_registration(&written, "dump").unwrap();
        assert_eq!(read.len(), 2);
        assert_eq!((read[0].path.as_str(), read[1].path.as_str()), (B, A));
        assert_eq!(read[0].references, vec![B.to_string(), A.to_string()]);
        assert!(read[1].references.is_empty());
    }

    #[test]
    fn classic_graphs_end_cleanly_and_errors_name_the_line() {
        let text = format!("{A}\n\n0\n\n");
        let c = parse_graph(&text, nix::DEFAULT_STORE_DIR, "g").unwrap();
        assert_eq!(c.nodes().len(), 1);
        // A lone path at the end is a truncated record, not an end.
        assert!(parse_graph(&format!("{A}\n"), nix::DEFAULT_STORE_DIR, "g").is_err());
        assert!(parse_graph(&format!("{A}\n\n0\n{B}\n"), nix::DEFAULT_STORE_DIR, "g").is_err());
        let bad = format!("{A}\n\n0\nnot-a-path\n\n0\n");
        let err = parse_graph(&bad, nix::DEFAULT_STORE_DIR, "g").unwrap_err();
        assert!(
            err.to_string().contains("line 4 is not a store path"),
            "{err}"
        );
        // JSON nodes may leave out or null their references.
        for refs in ["", r#","references":null"#] {
            let json = format!(r#"[{{"path":"{A}"{refs}}}]"#);
            let c = parse_graph(&json, nix::DEFAULT_STORE_DIR, "g").unwrap();
            assert!(c.get(A).unwrap().references.is_empty(), "{json}");
        }
    }

    #[test]
    fn a_json_object_without_a_graph_is_named_as_such() {
        let err = parse_graph(
            r#"{"outputs": {"out": "/x"}}"#,
            nix::DEFAULT_STORE_DIR,
            "a.json",
        )
        .unwrap_err();
        assert!(err.to_string().contains("holds no closure graph"), "{err}");
        let two = format!(
            r#"{{"one": [{{"path": "{A}", "references": []}}], "two": [{{"path": "{B}", "references": []}}]}}"#
        );
        let err = parse_graph(&two, nix::DEFAULT_STORE_DIR, "a.json").unwrap_err();
        assert!(
            err.to_string().contains("several graphs (one, two)"),
            "{err}"
        );
    }

    #[test]
    fn rejects_open_and_truncated_graphs() {
        let open = format!(r#"[{{"path":"{B}","references":["{A}"]}}]"#);
        let err = parse_graph(&open, nix::DEFAULT_STORE_DIR, "g.json").unwrap_err();
        assert!(err.to_string().contains("does not list"), "{err}");
        let truncated = format!(r#"[{{"path":"{B}","refer"#);
        let err = parse_graph(&truncated, nix::DEFAULT_STORE_DIR, "g.json").unwrap_err();
        assert!(err.to_string().contains("g.json: not valid JSON"), "{err}");
        let classic = format!("{B}\n\n3\n{A}\n");
        assert!(parse_graph(&classic, nix::DEFAULT_STORE_DIR, "c").is_err());
    }

    #[test]
    fn duplicates_merge() {
        let list =
            format!(r#"[{{"path":"{A}","references":[]}},{{"path":"{A}","references":["{A}"]}}]"#);
        let c = parse_graph(&list, nix::DEFAULT_STORE_DIR, "dup").unwrap();
        assert_eq!(c.nodes().len(), 1);
    }
}
