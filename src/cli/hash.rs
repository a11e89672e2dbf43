//! `nixoci hash`: hashes printed as `nix hash path` and `nix hash file` print them.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use nixoci::nix;

#[derive(Subcommand)]
pub(crate) enum HashCommand {
    /// The NAR hash of a file system tree (`nix hash path`).
    Path(HashArgs),
    /// The flat hash of a file's bytes (`nix hash file`).
    File(HashArgs),
}

#[derive(Args)]
pub(crate) struct HashArgs {
    pub(crate) path: PathBuf,
    /// Print nix32 (`nix hash … --base32`).
    #[arg(long, group = "fmt")]
    base32: bool,
    /// Print SRI, the default.
    #[arg(long, group = "fmt")]
    pub(crate) sri: bool,
    /// Print hexadecimal.
    #[arg(long, group = "fmt")]
    pub(crate) hex: bool,
}

pub(crate) fn run(cmd: HashCommand) -> Result<()> {
    let (args, hash) = match cmd {
        HashCommand::Path(args) => {
            let (hash, _) = nix::nar_hash_path(&args.path, &mut |_| {})
                .with_context(|| format!("cannot hash {}", args.path.display()))?;
            (args, hash)
        }
        HashCommand::File(args) => {
            let hash = nix::flat_hash_file(&args.path, nix::HashAlgo::Sha256, &mut |_| {})
                .with_context(|| format!("cannot hash {}", args.path.display()))?;
            (args, hash)
        }
    };
    let text = if args.base32 {
        nix_base32::to_nix_base32(&hash.bytes)
    } else if args.hex {
        hash.to_hex()
    } else {
        hash.to_sri()
    };
    println!("{text}");
    Ok(())
}
