//! `nixoci sbom`: a bill of materials of an image or a closure graph.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use clap::Args;

#[derive(Args)]
pub(crate) struct SbomArgs {
    /// The image (OCI layout, oci-archive or docker-archive); without it, every path of --graph.
    pub(crate) image: Option<PathBuf>,
    /// A closure graph with NAR hashes (exportReferencesGraph or nix path-info --json).
    #[arg(long, value_name = "FILE")]
    pub(crate) graph: Option<PathBuf>,
    /// Pinned sources to list (mirrors/*.toml). Repeatable.
    #[arg(long = "mirrors", value_name = "TOML")]
    pub(crate) mirrors: Vec<PathBuf>,
    #[arg(long, value_enum, default_value = "cyclonedx")]
    pub(crate) format: nixoci::sbom::Format,
    /// The document's subject name.
    #[arg(long, default_value = "image")]
    pub(crate) name: String,
    /// Where to write it (default: stdout).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub(crate) output: Option<PathBuf>,
    /// Also keep it in the image's OCI layout as an OCI 1.1 referrer, which `nixoci push` uploads.
    #[arg(long, requires = "image")]
    pub(crate) attach: bool,
}

pub(crate) fn run(args: SbomArgs) -> Result<()> {
    use nixoci::sbom;
    let sources = args
        .mirrors
        .iter()
        .map(|m| nixoci::verify::read_manifest(m))
        .collect::<Result<Vec<_>>>()?;
    let inventory = match &args.image {
        Some(image) => sbom::of_image(image, args.graph.as_deref(), &args.name, &sources)?,
        None => {
            let graph = args
                .graph
                .as_ref()
                .ok_or_else(|| anyhow!("name an image or give --graph"))?;
            sbom::of_graph(graph, &args.name, &sources)?
        }
    };
    let bytes = sbom::write(&inventory, args.format)?;
    if let (true, Some(image)) = (args.attach, &args.image) {
        // The artifact carries the image's time, never the wall clock.
        let digest = nixoci::output::attach_referrer(
            image,
            args.format.media_type(),
            &bytes,
            &inventory.created,
        )?;
        eprintln!("attached to {} as {digest}", image.display());
    }
    match &args.output {
        Some(file) => std::fs::write(file, &bytes)
            .with_context(|| format!("cannot write {}", file.display()))?,
        None if args.attach => {}
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(&bytes)?;
            writeln!(out)?;
        }
    }
    Ok(())
}
