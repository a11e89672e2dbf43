//! `nixoci plan`: the layers of a closure graph, as JSON.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use nixoci::layering::{self, Strategy};
use nixoci::{closure, nix};

#[derive(Args)]
pub(crate) struct PlanArgs {
    /// Closure graph (exportReferencesGraph JSON or text, or nix path-info --json).
    #[arg(long, value_name = "FILE")]
    pub(crate) graph: PathBuf,
    #[arg(long, value_enum, default_value = "auto")]
    pub(crate) strategy: Strategy,
    /// nixpkgs' layeringPipeline instead of a strategy: a JSON list of steps, or a file holding one,
    /// e.g. '[["popularity_contest"],["limit_layers",10]]'.
    #[arg(long, value_name = "JSON|FILE", conflicts_with = "strategy")]
    pub(crate) pipeline: Option<String>,
    /// Layer budget including the customisation layer (nixpkgs' maxLayers).
    #[arg(long, default_value_t = 100)]
    pub(crate) max_layers: usize,
    /// Store directory the graph's paths live in.
    #[arg(long, default_value = nix::DEFAULT_STORE_DIR)]
    pub(crate) store_dir: String,
}

pub(crate) fn run(args: PlanArgs) -> Result<()> {
    let mut closure = closure::read_graph_file(&args.graph, &args.store_dir)?;
    if args.strategy == Strategy::Auto || args.pipeline.is_some() {
        closure.fill_missing_sizes()?;
    }
    let plan = match &args.pipeline {
        Some(text) => layering::pipeline::run(
            &closure,
            &layering::pipeline::load(&serde_json::Value::String(text.clone()), None)?,
        )?,
        None => {
            let budget = layering::store_layer_budget(args.max_layers, 0)?;
            layering::plan(&closure, args.strategy, budget)
        }
    };
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, &plan)?;
    writeln!(out)?;
    Ok(())
}
