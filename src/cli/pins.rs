//! `nixoci pins`: a mirrors manifest's pins, made anew with Nix.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Subcommand;

use nixoci::verify;

#[derive(Subcommand)]
pub(crate) enum PinsCommand {
    /// Make every hash of a manifest anew with Nix (the fake-hash dance), and write them in place.
    #[command(
        after_help = "Each pin (a [[source]] hash, a [[fod]] outputHash) gets a fake hash of its own; the
        image is built with nix-build --keep-going and --arg pinsFile, and each hash Nix reports
        (`got:`) replaces its fake, round after round until the image builds. The TOML keeps its
        comments and order; each [[fod]] records the nixpkgs revision it was made with. Pins of
        another platform are left alone. A second run with the same inputs changes nothing.

        Examples:
          nixoci pins update mirrors/authentik.toml
          nixoci pins update mirrors/authentik.toml --only authentik-python-deps-2026.2.0
          nixoci pins update pins.toml --file containers/authentik -I nixpkgs=/path/to/nixpkgs"
    )]
    Update {
        /// The manifest (mirrors/IMAGE.toml).
        manifest: PathBuf,
        /// Only this pin (repeatable); the others keep their hashes.
        #[arg(long, value_name = "NAME")]
        only: Vec<String>,
        /// The image's Nix expression, taking the manifest as `pinsFile` (default: containers/IMAGE
        /// beside the manifest's folder).
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
        /// A Nix search path entry for nix-build, e.g. nixpkgs=/path (repeatable).
        #[arg(short = 'I', long = "include", value_name = "NAME=PATH")]
        include: Vec<String>,
        /// The nixpkgs revision to record on fixed outputs (default: the nearest flake.lock's).
        #[arg(long, value_name = "REV")]
        nixpkgs_rev: Option<String>,
    },
}

fn update(
    manifest: &Path,
    only: Vec<String>,
    file: Option<PathBuf>,
    include: Vec<String>,
    nixpkgs_rev: Option<String>,
) -> Result<()> {
    let mut opts = verify::pins::UpdateOptions::for_manifest(manifest, file, nixpkgs_rev)?;
    opts.only = only;
    opts.include = include;
    for change in verify::pins::update(manifest, &opts)? {
        if change.before == change.after {
            println!("{}: unchanged", change.name);
        } else {
            println!("{}: {} -> {}", change.name, change.before, change.after);
        }
    }
    Ok(())
}

pub(crate) fn run(command: PinsCommand) -> Result<()> {
    match command {
        PinsCommand::Update {
            manifest,
            only,
            file,
            include,
            nixpkgs_rev,
        } => update(&manifest, only, file, include, nixpkgs_rev),
    }
}
