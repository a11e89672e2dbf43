//! The Nix library's build steps: what `nix/default.nix` runs inside its
//! derivations through `nixoci nix-helper`. Each reads the derivation's
//! structured attributes (`.attrs.json`) and writes one output.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use serde_json::Value;

use crate::layer::rootfs::RootTree;
use crate::spec::Spec;
use crate::{build, closure, image, nix};

fn read_attrs(attrs: &Path) -> Result<Value> {
    let text =
        fs::read_to_string(attrs).with_context(|| format!("cannot read {}", attrs.display()))?;
    serde_json::from_str(&text).map_err(|e| anyhow!("{}: {e}", attrs.display()))
}

/// Writes the attribute `key` as canonical JSON (an entrypoint wrapper's config).
pub fn write_json(attrs: &Path, key: &str, output: &Path) -> Result<()> {
    let value = read_attrs(attrs)?;
    let item = value
        .get(key)
        .ok_or_else(|| anyhow!("{} has no `{key}`", attrs.display()))?;
    Ok(fs::write(output, image::canonical(item))?)
}

/// Builds one layer as its own output (`buildLayer`): `blob` and `meta.json`.
pub fn layer(attrs: &Path, output: &Path) -> Result<()> {
    build::build_layer_output(&Spec::read(attrs)?, attrs.parent(), output)
}

/// Writes the `nix-store --load-db` registration of the graph in `attrs`
/// (`includeNixDB`).
pub fn registration(attrs: &Path, output: &Path) -> Result<()> {
    let nodes = closure::nodes_from_json(&read_attrs(attrs)?, &attrs.display().to_string())?;
    Ok(fs::write(
        output,
        closure::registration(&nodes, nix::DEFAULT_STORE_DIR)?,
    )?)
}

/// Merges `paths` into `output` as symlinkJoin does, for `extraCommands` to
/// run in.
pub fn link_contents(output: &Path, paths: &[PathBuf]) -> Result<()> {
    let mut tree = RootTree::new(nix::DEFAULT_STORE_DIR);
    for path in paths {
        tree.merge_content(path)?;
    }
    tree.materialize(output)
}

/// Writes `streamLayeredImage`'s script: `nixoci` (at `exe`) building the
/// spec in `attrs` as a docker-archive to stdout, its arguments passed on.
pub fn stream_script(attrs: &Path, output: &Path, exe: &Path) -> Result<()> {
    let value = read_attrs(attrs)?;
    let mut spec = value
        .get("nixoci")
        .cloned()
        .ok_or_else(|| anyhow!("{} has no `nixoci` spec", attrs.display()))?;
    if let (Some(obj), Some(graph)) = (spec.as_object_mut(), value.get("graph")) {
        obj.insert("graph".into(), graph.clone());
    }
    let script = format!(
        "#!/bin/sh\n# Writes the image to stdout as a docker-archive (like nixpkgs' streamLayeredImage).\n\
         exec {} build --spec - --format docker-archive -o - \"$@\" <<'NIXOCI_SPEC'\n{}\nNIXOCI_SPEC\n",
        exe.display(),
        serde_json::to_string(&spec)?
    );
    fs::write(output, script)?;
    fs::set_permissions(output, fs::Permissions::from_mode(0o555))?;
    Ok(())
}
