//! `nixoci diff`: what changed from one image to another, without reading a layer.

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use clap::Args;

#[derive(Args)]
pub(crate) struct DiffArgs {
    /// The old image (an OCI layout, an oci-archive or a docker-archive).
    pub(crate) old: PathBuf,
    /// The new image.
    pub(crate) new: PathBuf,
    /// Print the difference as JSON.
    #[arg(long, conflicts_with = "markdown")]
    pub(crate) json: bool,
    /// Print it as Markdown (for a pull-request comment).
    #[arg(long)]
    pub(crate) markdown: bool,
    /// Exit 1 when the images differ (as `diff` does); without it, 0 either way.
    #[arg(long)]
    pub(crate) exit_code: bool,
}

pub(crate) fn run(args: DiffArgs) -> Result<()> {
    let diff = nixoci::inspect::diff(&args.old, &args.new)?;
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
