//! `nixoci check`: an image's entrypoint, interpreter, Env paths and writable directories.

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use clap::Args;

#[derive(Args)]
pub(crate) struct CheckArgs {
    /// An OCI layout directory, an oci-archive or a docker-archive.
    pub(crate) image: PathBuf,
    /// Which image of a layout holding several (its ref.name tag).
    #[arg(long = "ref", value_name = "TAG")]
    pub(crate) reference: Option<String>,
    /// Another directory the application must be able to write to. Repeatable.
    #[arg(long, value_name = "DIR")]
    pub(crate) writable: Vec<String>,
    /// Print the findings as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

pub(crate) fn run(args: CheckArgs) -> Result<()> {
    let report = nixoci::check::check_path(&args.image, args.reference.as_deref(), &args.writable)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    if report.ok {
        Ok(())
    } else {
        Err(anyhow!("{} failed its checks", args.image.display()))
    }
}
