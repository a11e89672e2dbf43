//! `nixoci sign` and `nixoci attest`: signatures and SLSA provenance of an
//! image in a layout or a registry.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use super::registry::RegistryAccess;
use nixoci::sign::{self, provenance, target::Target, SignatureFormat};

/// The key and format flags `sign` and `attest` share.
#[derive(Args)]
pub(crate) struct KeyArgs {
    /// The private key: PKCS#8 PEM (as `nixoci key generate` writes it) or cosign's cosign.key.
    #[arg(long, value_name = "FILE")]
    pub(crate) key: PathBuf,
    /// The variable holding the key's password, if it is encrypted.
    #[arg(long, value_name = "VAR", default_value = "COSIGN_PASSWORD")]
    pub(crate) key_password_env: String,
    /// cosign's `.sig`/`.att` tags (legacy), Sigstore bundles as OCI referrers (bundle), or both.
    #[arg(long, value_enum, default_value = "both")]
    pub(crate) signature_format: SignatureFormat,
}

impl KeyArgs {
    pub(crate) fn private_key(&self) -> Result<sign::PrivateKey> {
        let password = std::env::var(&self.key_password_env)
            .ok()
            .filter(|p| !p.is_empty());
        sign::PrivateKey::read(&self.key, password.as_deref())
    }
}

#[derive(Args)]
pub(crate) struct SignArgs {
    /// An OCI layout (the signatures are kept in it and pushed with it) or
    /// REGISTRY/REPOSITORY:TAG (they are pushed next to the image).
    #[arg(value_name = "IMAGE|REF")]
    pub(crate) image: String,
    #[command(flatten)]
    pub(crate) key: KeyArgs,
    #[command(flatten, next_help_heading = "Registry access")]
    pub(crate) registry: RegistryAccess,
}

pub(crate) fn run_sign(args: SignArgs) -> Result<()> {
    let key = args.key.private_key()?;
    let target = Target::open(&args.image, args.registry.options(true, None)?)?;
    let (manifest, media_type) = target.manifest();
    let name = target.docker_reference();
    let subject = sign::Subject {
        manifest: &manifest,
        media_type: &media_type,
        docker_reference: &name,
    };
    let artifacts = sign::signatures(&key, &subject, args.key.signature_format, &target.created())?;
    let count = artifacts.len();
    let place = target.store(artifacts)?;
    eprintln!(
        "signed {} ({count} signature(s), {place})",
        subject.digest()
    );
    Ok(())
}

#[derive(Args)]
pub(crate) struct AttestArgs {
    /// An OCI layout or REGISTRY/REPOSITORY:TAG, as for sign.
    #[arg(value_name = "IMAGE|REF")]
    pub(crate) image: String,
    /// The image's derivation: every fixed output of its closure is listed, classified
    /// against the pin files, as `nixoci verify --drv` classifies them.
    #[arg(long, value_name = "DRV")]
    pub(crate) drv: String,
    /// Pin files (mirrors/*.toml). Repeatable.
    #[arg(long = "mirrors", value_name = "TOML")]
    pub(crate) mirrors: Vec<PathBuf>,
    /// NAR hashes of the image's store paths (exportReferencesGraph or `nix path-info --json
    /// -r`) instead of the local store.
    #[arg(long, value_name = "FILE")]
    pub(crate) graph: Option<PathBuf>,
    /// The installable that was built, recorded as an external parameter (e.g. .#authentik-image).
    #[arg(long, value_name = "FLAKE#ATTR")]
    pub(crate) flake: Option<String>,
    /// The flake.lock it was built with: its nixpkgs revision and narHash are recorded.
    #[arg(long, value_name = "FILE")]
    pub(crate) flake_lock: Option<PathBuf>,
    /// Also print the Statement.
    #[arg(long)]
    pub(crate) print: bool,
    #[command(flatten)]
    pub(crate) key: KeyArgs,
    #[command(flatten, next_help_heading = "Registry access")]
    pub(crate) registry: RegistryAccess,
}

pub(crate) fn run_attest(args: AttestArgs) -> Result<()> {
    let key = args.key.private_key()?;
    let target = Target::open(&args.image, args.registry.options(true, None)?)?;
    let inputs = provenance::gather(
        &target,
        &provenance::Sources {
            drv: &args.drv,
            manifests: &args.mirrors,
            graph: args.graph.as_deref(),
            flake: args.flake.clone(),
            flake_lock: args.flake_lock.as_deref(),
        },
    )?;
    let statement = provenance::statement(&inputs)?;
    let (manifest, media_type) = target.manifest();
    let name = target.docker_reference();
    let subject = sign::Subject {
        manifest: &manifest,
        media_type: &media_type,
        docker_reference: &name,
    };
    let artifacts = sign::attestations(
        &key,
        &subject,
        &statement,
        args.key.signature_format,
        &target.created(),
    )?;
    let place = target.store(artifacts)?;
    eprintln!(
        "attested {}: {} fixed output(s), {} layer(s) ({place})",
        subject.digest(),
        inputs.fetches.len(),
        inputs.layers.len()
    );
    if args.print {
        println!("{}", String::from_utf8_lossy(&statement));
    }
    Ok(())
}
