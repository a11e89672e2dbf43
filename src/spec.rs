//! The build spec: everything one image needs (contents, config, root
//! entries, options and optionally the closure graph) in one JSON file. The
//! Nix library writes it; the CLI builds the same structure from flags.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use serde::Deserialize;
use serde_json::Value;

use crate::layer::rootfs::RootEntry;
use crate::layering::Strategy;
use crate::media::Compression;

/// The spec file schema (see the README). Every field is optional.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Spec {
    /// Repository name, e.g. `blumeops/authentik`.
    pub name: Option<String>,
    pub tag: Option<String>,
    /// Store paths merged into `/` (symlinkJoin) whose closures go into the image.
    #[serde(default)]
    pub contents: Vec<String>,
    /// Runtime config in nixpkgs' shape (Entrypoint, Cmd, Env, …).
    pub config: Option<Value>,
    #[serde(default)]
    pub root_entries: Vec<RootEntry>,
    /// Outputs of `extraCommands`/`fakeRootCommands` (`root/` + `owners`), copied over `/`.
    #[serde(default)]
    pub extra_roots: Vec<String>,
    /// Graph nodes that are not part of the image (helper store paths).
    #[serde(default)]
    pub exclude_paths: Vec<String>,
    /// Layers built as their own derivations (the Nix library's
    /// `buildLayer`): outputs holding `blob` and `meta.json`. They go first,
    /// and the store paths they cover leave the rest of the plan.
    #[serde(default)]
    pub layers: Vec<String>,
    /// A base image (OCI layout, oci-archive or docker-archive) whose layers go first.
    pub from_image: Option<String>,
    pub max_layers: Option<usize>,
    pub layering: Option<Strategy>,
    /// nixpkgs' `layeringPipeline`: a list of `[op, args…]`, or a JSON file
    /// holding one. When given, it makes the store layers instead of `layering`.
    pub layering_pipeline: Option<Value>,
    /// Print the layer plan to stderr (nixpkgs' `debug`).
    pub debug: Option<bool>,
    pub compression: Option<Compression>,
    pub created: Option<String>,
    pub mtime: Option<String>,
    pub uid: Option<u64>,
    pub gid: Option<u64>,
    pub uname: Option<String>,
    pub gname: Option<String>,
    pub architecture: Option<String>,
    pub include_store_paths: Option<bool>,
    pub store_dir: Option<String>,
    /// The closure graph: inline (any supported JSON shape) or a file path.
    pub graph: Option<Value>,
}

impl Spec {
    /// Reads a spec file. A Nix `.attrs.json` whose `nixoci` key holds the spec
    /// is accepted too; its top-level `graph` (from exportReferencesGraph) is used.
    pub fn read(path: &Path) -> Result<Spec> {
        let source = path.display().to_string();
        let text =
            fs::read_to_string(path).with_context(|| format!("cannot read spec file {source}"))?;
        let mut value: Value = serde_json::from_str(&text)
            .map_err(|e| anyhow!("{source}: not valid JSON ({e}); is the file truncated?"))?;
        let top_graph = value.get("graph").cloned();
        if let Some(inner) = value.get_mut("nixoci") {
            let mut inner = inner.take();
            if inner.get("graph").is_none() {
                if let (Some(obj), Some(graph)) = (inner.as_object_mut(), top_graph) {
                    obj.insert("graph".into(), graph);
                }
            }
            value = inner;
        }
        serde_json::from_value(value).map_err(|e| anyhow!("{source}: invalid spec: {e}"))
    }
}

/// Where the closure graph comes from.
#[derive(Clone, Debug)]
pub enum GraphSource {
    File(PathBuf),
    Inline(Value),
    /// Read the closure from the local store.
    LocalStore,
}

impl Spec {
    pub fn graph_source(&self, base: Option<&Path>) -> GraphSource {
        match &self.graph {
            Some(Value::String(file)) => {
                let p = PathBuf::from(file);
                GraphSource::File(match base {
                    Some(dir) if p.is_relative() => dir.join(p),
                    _ => p,
                })
            }
            Some(v) => GraphSource::Inline(v.clone()),
            None => GraphSource::LocalStore,
        }
    }
}
