//! The build spec: everything one image needs (contents, config, root
//! entries, options and optionally the closure graph) in one JSON file. The
//! Nix library writes it; the CLI builds the same structure from flags.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
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

/// What `nixoci build`'s flags do to a spec: store paths and root entries
/// are added to its own, and every other flag given replaces its value.
#[derive(Default)]
pub struct Overrides {
    pub store_paths: Vec<String>,
    /// A JSON file holding the runtime config.
    pub config_file: Option<PathBuf>,
    pub graph_file: Option<PathBuf>,
    /// `NAME[:TAG]`.
    pub tag: Option<String>,
    /// `--root` entries, in the CLI's `KIND:PATH:…` form.
    pub root_entries: Vec<String>,
    pub compression: Option<Compression>,
    pub max_layers: Option<usize>,
    pub layering: Option<Strategy>,
    pub created: Option<String>,
    pub mtime: Option<String>,
    pub architecture: Option<String>,
}

impl Spec {
    /// The spec in `file` (`-` is stdin), or an empty one without a file,
    /// with the directory its relative paths are read from.
    pub fn load(file: Option<&Path>) -> Result<(Spec, Option<PathBuf>)> {
        Ok(match file {
            Some(file) if file.as_os_str() == "-" => (Spec::read(Path::new("/dev/stdin"))?, None),
            Some(file) => (Spec::read(file)?, file.parent().map(PathBuf::from)),
            None => (Spec::default(), None),
        })
    }

    /// The spec with `flags` applied; a spec that names nothing to build is refused.
    pub fn with_overrides(mut self, flags: Overrides) -> Result<Spec> {
        self.contents.extend(flags.store_paths);
        if let Some(file) = &flags.config_file {
            let text = fs::read_to_string(file)
                .with_context(|| format!("cannot read config {}", file.display()))?;
            let value = serde_json::from_str(&text)
                .map_err(|e| anyhow!("{}: not valid JSON ({e})", file.display()))?;
            self.config = Some(value);
        }
        if let Some(graph) = &flags.graph_file {
            self.graph = Some(Value::String(graph.display().to_string()));
        }
        if let Some(given) = &flags.tag {
            let (name, tag) = crate::image::split_name_tag(given)?;
            self.name = Some(name);
            self.tag = Some(tag);
        }
        for root in &flags.root_entries {
            self.root_entries.push(RootEntry::parse_cli(root)?);
        }
        self.compression = flags.compression.or(self.compression);
        self.max_layers = flags.max_layers.or(self.max_layers);
        self.layering = flags.layering.or(self.layering);
        self.created = flags.created.or(self.created);
        self.mtime = flags.mtime.or(self.mtime);
        self.architecture = flags.architecture.or(self.architecture);
        if self.contents.is_empty()
            && self.config.is_none()
            && self.root_entries.is_empty()
            && self.graph.is_none()
        {
            bail!("nothing to build: name store paths, --spec, --graph, --config or --root");
        }
        Ok(self)
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
