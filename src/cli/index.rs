//! `nixoci index`: single-platform images combined into an OCI image index.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use nixoci::output::Destination;

#[derive(Args)]
pub(crate) struct IndexArgs {
    /// The single-platform images, in the order the index lists them.
    #[arg(required = true, value_name = "IMAGE")]
    pub(crate) images: Vec<PathBuf>,
    /// Name and tag of the index; NAME alone means NAME:latest.
    #[arg(long, value_name = "NAME[:TAG]")]
    pub(crate) tag: String,
    /// The OCI layout to write. An existing OCI layout or file there is replaced; anything else is refused.
    #[arg(short = 'o', long = "output", value_name = "DIR")]
    pub(crate) output: PathBuf,
    /// Replace the output even if it is not an OCI layout or a file.
    #[arg(long)]
    pub(crate) force: bool,
}

pub(crate) fn run(args: IndexArgs) -> Result<()> {
    let (name, tag) = nixoci::image::split_name_tag(&args.tag)?;
    let index = nixoci::image::Index::of(
        args.images
            .iter()
            .map(|p| nixoci::image::Image::open(p, None))
            .collect::<Result<Vec<_>>>()?,
    )?;
    let digest = nixoci::output::write_index(
        &index,
        &tag,
        &format!("{name}:{tag}"),
        &Destination::Path(args.output.clone()),
        args.force,
    )?;
    eprintln!(
        "indexed {} images ({}) -> {} ({digest})",
        index.images.len(),
        index
            .images
            .iter()
            .map(|i| i.platform_name())
            .collect::<Result<Vec<_>>>()?
            .join(", "),
        args.output.display()
    );
    Ok(())
}
