//! `nixoci inspect`: what is in an image, by store path, and why a path is there.

use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use clap::Args;

use super::registry::{open_subject, RegistryAccess};

#[derive(Args)]
pub(crate) struct InspectArgs {
    /// The image: an OCI layout, an oci-archive or a docker-archive (nixoci's or nixpkgs'), or
    /// REGISTRY/REPOSITORY:TAG (its manifest and config are read, never a layer, unless
    /// --fetch-layers).
    #[arg(value_name = "IMAGE|REF")]
    pub(crate) image: String,
    /// A closure graph with sizes and references (exportReferencesGraph or `nix path-info
    /// --json -r`) instead of the local store.
    #[arg(long, value_name = "FILE")]
    pub(crate) graph: Option<PathBuf>,
    /// An image whose layers count as shared (a base, or the release running now).
    #[arg(long, value_name = "IMAGE|REF")]
    pub(crate) base: Option<String>,
    /// Print the shortest reference chain from the image's roots to this store path (or a
    /// unique part of its name), as `nix why-depends` does.
    #[arg(long, value_name = "PATH")]
    pub(crate) why: Option<String>,
    /// Only the N biggest store paths.
    #[arg(long, value_name = "N")]
    pub(crate) top: Option<usize>,
    /// Print the report as JSON.
    #[arg(long, conflicts_with = "markdown")]
    pub(crate) json: bool,
    /// Print the report as Markdown tables (for a pull-request comment).
    #[arg(long)]
    pub(crate) markdown: bool,
    /// Also write a treemap of the image to FILE: one rectangle per store path, its area
    /// proportional to the NAR size, grouped by layer (plain SVG, no scripts).
    #[arg(long, value_name = "FILE")]
    pub(crate) svg: Option<PathBuf>,
    /// For a registry image whose history names no store paths (nixoci's and nixpkgs' images
    /// name them; nix2container's do not) and that has no SBOM attached: download its layers
    /// and read the store paths from them. Without it, such an image is refused, never
    /// downloaded.
    #[arg(long)]
    pub(crate) fetch_layers: bool,
    #[command(flatten, next_help_heading = "Reading from a registry")]
    pub(crate) registry: RegistryAccess,
}

pub(crate) fn run(args: InspectArgs) -> Result<()> {
    if args.top == Some(0) {
        return Err(anyhow!("--top needs at least 1"));
    }
    let image = open_subject(&args.image, &args.registry, args.fetch_layers)?;
    let base = args
        .base
        .as_deref()
        .map(|b| open_subject(b, &args.registry, args.fetch_layers))
        .transpose()?;
    let report = nixoci::inspect::inspect(&image, args.graph.as_deref(), base.as_ref())?;
    if let Some(file) = &args.svg {
        std::fs::write(file, nixoci::inspect::svg(&report, &image.name))
            .with_context(|| format!("cannot write {}", file.display()))?;
    }
    if let Some(path) = &args.why {
        let chain = report.why(path)?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&chain)?);
        } else {
            println!("{}", chain.join("\n→ "));
        }
        return Ok(());
    }
    if args.json {
        let mut report = report;
        if let Some(top) = args.top {
            report.paths.truncate(top);
        }
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render(args.top, args.markdown));
    }
    Ok(())
}
