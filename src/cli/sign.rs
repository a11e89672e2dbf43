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
    /// Print nothing on success.
    #[arg(long, short = 'q')]
    pub(crate) quiet: bool,
}

impl KeyArgs {
    pub(crate) fn private_key(&self) -> Result<sign::PrivateKey> {
        private_key(&self.key, &self.key_password_env)
    }
}

/// The private key in `file`, decrypted with the password in `password_env`
/// if it is encrypted.
pub(crate) fn private_key(file: &std::path::Path, password_env: &str) -> Result<sign::PrivateKey> {
    let password = std::env::var(password_env).ok().filter(|p| !p.is_empty());
    sign::PrivateKey::read(file, password.as_deref())
}

/// `--sign-key` and its companions, for `build` and `push`.
#[derive(Args)]
pub(crate) struct SignKeyArgs {
    /// Sign the image with this private key (PKCS#8 PEM or cosign.key): build keeps the
    /// signatures in the layout (pushed with it); push signs the image it pushed.
    #[arg(long, value_name = "FILE")]
    pub(crate) sign_key: Option<PathBuf>,
    /// The variable holding the key's password, if it is encrypted.
    #[arg(long, value_name = "VAR", default_value = "COSIGN_PASSWORD")]
    pub(crate) key_password_env: String,
    /// cosign's `.sig`/`.att` tags (legacy), Sigstore bundles as OCI referrers (bundle), or both.
    #[arg(long, value_enum, default_value = "both", requires = "sign_key")]
    pub(crate) signature_format: SignatureFormat,
}

impl SignKeyArgs {
    /// The key, when one was given (read before any work starts).
    pub(crate) fn key(&self) -> Result<Option<sign::PrivateKey>> {
        self.sign_key
            .as_deref()
            .map(|file| private_key(file, &self.key_password_env))
            .transpose()
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
    let said = target.sign(&key, args.key.signature_format)?;
    if !args.key.quiet {
        eprintln!("{said}");
    }
    Ok(())
}

/// What the provenance records besides the image, shared by `attest` and
/// `build --provenance`.
#[derive(Args)]
pub(crate) struct ProvenanceArgs {
    /// Pin files (mirrors/*.toml) that classify the fixed outputs. Repeatable.
    #[arg(long = "mirrors", value_name = "TOML")]
    pub(crate) mirrors: Vec<PathBuf>,
    /// The installable that was built, recorded as an external parameter (e.g. .#authentik-image).
    #[arg(long, value_name = "FLAKE#ATTR")]
    pub(crate) flake: Option<String>,
    /// The flake.lock it was built with: its nixpkgs revision and narHash are recorded.
    #[arg(long, value_name = "FILE")]
    pub(crate) flake_lock: Option<PathBuf>,
}

impl ProvenanceArgs {
    pub(crate) fn sources<'a>(
        &'a self,
        drv: &'a str,
        graph: Option<&'a std::path::Path>,
    ) -> provenance::Sources<'a> {
        provenance::Sources {
            drv,
            manifests: &self.mirrors,
            graph,
            flake: self.flake.clone(),
            flake_lock: self.flake_lock.as_deref(),
        }
    }
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
    /// NAR hashes of the image's store paths (exportReferencesGraph or `nix path-info --json
    /// -r`) instead of the local store.
    #[arg(long, value_name = "FILE")]
    pub(crate) graph: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) provenance: ProvenanceArgs,
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
    let (statement, said) = target.attest(
        &key,
        &args.provenance.sources(&args.drv, args.graph.as_deref()),
        args.key.signature_format,
    )?;
    if !args.key.quiet {
        eprintln!("{said}");
    }
    if args.print {
        println!("{}", String::from_utf8_lossy(&statement));
    }
    Ok(())
}
