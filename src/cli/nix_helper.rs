//! `nixoci nix-helper`: the builders the Nix library runs (hidden).

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;

#[derive(Subcommand)]
pub(crate) enum NixHelper {
    /// Write one attribute of a structured-attrs file as JSON (an entrypoint wrapper config).
    WriteJson {
        #[arg(long)]
        attrs: PathBuf,
        #[arg(long)]
        key: String,
        #[arg(short = 'o')]
        output: PathBuf,
    },
    /// Build one layer as its own output (`buildLayer`): `blob` and `meta.json`.
    Layer {
        #[arg(long)]
        attrs: PathBuf,
        #[arg(short = 'o')]
        output: PathBuf,
    },
    /// Write the `nix-store --load-db` registration of the graph in ATTRS (includeNixDB).
    Registration {
        #[arg(long)]
        attrs: PathBuf,
        #[arg(short = 'o')]
        output: PathBuf,
    },
    /// Merge store paths into DIR as symlinkJoin does, for extraCommands to run in.
    LinkContents {
        #[arg(short = 'o')]
        output: PathBuf,
        paths: Vec<PathBuf>,
    },
    /// Write the `streamLayeredImage` script: it builds the image to stdout.
    StreamScript {
        #[arg(long)]
        attrs: PathBuf,
        #[arg(short = 'o')]
        output: PathBuf,
    },
}

pub(crate) fn run(helper: NixHelper) -> Result<()> {
    use nixoci::nixlib;
    match helper {
        NixHelper::WriteJson { attrs, key, output } => nixlib::write_json(&attrs, &key, &output),
        NixHelper::Layer { attrs, output } => nixlib::layer(&attrs, &output),
        NixHelper::Registration { attrs, output } => nixlib::registration(&attrs, &output),
        NixHelper::LinkContents { output, paths } => nixlib::link_contents(&output, &paths),
        NixHelper::StreamScript { attrs, output } => {
            nixlib::stream_script(&attrs, &output, &std::env::current_exe()?)
        }
    }
}
