//! `nixoci diff`: what changed from one image to another, without reading a
//! layer where the images' histories or SBOMs name their store paths.

use anyhow::{anyhow, Result};
use clap::Args;

use super::registry::{open_subject, RegistryAccess};

#[derive(Args)]
pub(crate) struct DiffArgs {
    /// The old image: an OCI layout, an oci-archive, a docker-archive or REGISTRY/REPOSITORY:TAG.
    #[arg(value_name = "OLD")]
    pub(crate) old: String,
    /// The new image, in any of the same forms.
    #[arg(value_name = "NEW")]
    pub(crate) new: String,
    /// Print the difference as JSON.
    #[arg(long, conflicts_with = "markdown")]
    pub(crate) json: bool,
    /// Print it as Markdown (for a pull-request comment).
    #[arg(long)]
    pub(crate) markdown: bool,
    /// Exit 1 when the images differ (as `diff` does); without it, 0 either way.
    #[arg(long)]
    pub(crate) exit_code: bool,
    /// For a registry image whose history names no store paths and that has no SBOM
    /// attached: download its layers and read the store paths from them (see inspect).
    #[arg(long)]
    pub(crate) fetch_layers: bool,
    #[command(flatten, next_help_heading = "Reading from a registry")]
    pub(crate) registry: RegistryAccess,
}

pub(crate) fn run(args: DiffArgs) -> Result<()> {
    let diff = nixoci::inspect::diff(
        &open_subject(&args.old, &args.registry, args.fetch_layers)?,
        &open_subject(&args.new, &args.registry, args.fetch_layers)?,
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&diff)?);
    } else {
        print!("{}", diff.render(args.markdown));
    }
    if args.exit_code && !diff.is_empty() {
        return Err(anyhow!("the images differ"));
    }
    Ok(())
}
