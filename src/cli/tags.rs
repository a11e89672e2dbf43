//! `nixoci tags`: the tags of a repository, one per line.

use anyhow::{bail, Result};
use clap::Args;

use super::registry::RegistryAccess;

#[derive(Args)]
pub(crate) struct TagsArgs {
    /// The repository: REGISTRY/REPOSITORY, without a tag.
    #[arg(value_name = "REGISTRY/REPOSITORY")]
    pub(crate) repository: String,
    #[command(flatten, next_help_heading = "Reading from a registry")]
    pub(crate) registry: RegistryAccess,
}

pub(crate) fn run(args: TagsArgs) -> Result<()> {
    if args
        .repository
        .rsplit_once('/')
        .is_some_and(|(_, last)| last.contains(':'))
    {
        bail!(
            "{} names a tag: give REGISTRY/REPOSITORY only",
            args.repository
        );
    }
    // Parsed as a reference to a tag that is never asked for.
    let reference = nixoci::registry::Reference::parse(&format!("{}:latest", args.repository))?;
    let remote =
        nixoci::registry::read::Remote::connect(&reference, &args.registry.options(true, None)?)?;
    for tag in remote.tags()? {
        println!("{tag}");
    }
    Ok(())
}
