//! `nixoci verify-image`: an image's signatures and provenance, checked
//! with a public key.

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use clap::Args;

use super::registry::RegistryAccess;
use nixoci::sign::{self, provenance, target::Target};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Policy {
    /// Every dependency the provenance lists came from a mirror (or is a pinned network build).
    NoUpstream,
}

#[derive(Args)]
pub(crate) struct VerifyImageArgs {
    /// An OCI layout (checked offline) or REGISTRY/REPOSITORY:TAG.
    #[arg(value_name = "IMAGE|REF")]
    pub(crate) image: String,
    /// The public key (PKIX PEM, as `nixoci key generate` and cosign write it).
    #[arg(long, value_name = "FILE")]
    pub(crate) key: PathBuf,
    /// Require the provenance to pass this policy.
    #[arg(long, value_enum)]
    pub(crate) policy: Option<Policy>,
    /// Require the provenance to list exactly the fixed outputs of this derivation's closure.
    #[arg(long, value_name = "DRV")]
    pub(crate) drv: Option<String>,
    /// Pin files for --drv (mirrors/*.toml). Repeatable.
    #[arg(long = "mirrors", value_name = "TOML")]
    pub(crate) mirrors: Vec<PathBuf>,
    /// Print what was checked as JSON.
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten, next_help_heading = "Registry access")]
    pub(crate) registry: RegistryAccess,
}

pub(crate) fn run(args: VerifyImageArgs) -> Result<()> {
    let key = sign::PublicKey::read(&args.key)?;
    let target = Target::open(&args.image, args.registry.options(true, None)?)?;
    let (manifest, _) = target.manifest();
    let verified = sign::verify(&key, &manifest, &target.found()?)?;
    let needs_provenance = args.policy.is_some() || args.drv.is_some();
    if let Some(statement) = &verified.statement {
        if args.policy == Some(Policy::NoUpstream) {
            provenance::check_no_upstream(statement)?;
        }
        if let Some(drv) = &args.drv {
            let report = nixoci::verify::provenance::classify(
                nixoci::nix::DEFAULT_STORE_DIR,
                std::slice::from_ref(drv),
                &args.mirrors,
                &[],
            )?;
            provenance::check_same_fetches(statement, &report.fetches)?;
        }
    } else if needs_provenance {
        return Err(anyhow!(
            "the image has no provenance attestation to check --policy or --drv against"
        ));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&verified)?);
    } else {
        for what in &verified.checked {
            println!("verified: {what}");
        }
    }
    Ok(())
}
