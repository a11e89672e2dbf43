//! `nixoci push`: an image to one or more registry references.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use nixoci::media::Compression;
use nixoci::registry;

use super::registry::{parse_references, RegistryArgs};

#[derive(Args)]
pub(crate) struct PushArgs {
    /// The image: an OCI layout directory (what `nixoci build` writes), an oci-archive or a docker-archive.
    pub(crate) src: PathBuf,
    /// Where to push: REGISTRY/REPOSITORY:TAG; several tags may be given.
    #[arg(required = true, value_name = "REF")]
    pub(crate) refs: Vec<String>,
    /// Compress layers that are plain tars (docker-archives, nixpkgs' .tar.gz) before pushing;
    /// deterministic, so a re-push finds them already there. Compressed layers are pushed as they are.
    #[arg(long, value_enum)]
    pub(crate) compression: Option<Compression>,
    /// Print the pushed repo@sha256 digests and the bytes uploaded as JSON.
    #[arg(long)]
    pub(crate) json: bool,
    /// No progress bars.
    #[arg(long, short = 'q')]
    pub(crate) quiet: bool,
    #[command(flatten, next_help_heading = "Signing")]
    pub(crate) signing: super::sign::SignKeyArgs,
    #[command(flatten)]
    pub(crate) registry: RegistryArgs,
}

pub(crate) fn run(args: PushArgs) -> Result<()> {
    let refs = parse_references(&args.refs)?;
    let sign_key = args.signing.key()?;
    let options = args.registry.options(args.quiet, args.compression)?;
    let summary = registry::push(&args.src, &refs, &options)?;
    if let Some(key) = &sign_key {
        for reference in &refs {
            let target = nixoci::sign::target::Target::open(
                &reference.to_string(),
                args.registry.options(true, None)?,
            )?;
            let said = target.sign(key, args.signing.signature_format)?;
            if !args.quiet {
                eprintln!("{reference}: {said}");
            }
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    }
    Ok(())
}
