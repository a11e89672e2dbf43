//! `nixoci verify`: pins checked offline, or the provenance of a derivation graph.

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use clap::Args;

use nixoci::nix;
use nixoci::progress::Progress;

#[derive(Args)]
pub(crate) struct VerifyArgs {
    /// Pin files (default: every mirrors/*.toml); with --drv, the derivations (`.drv`) come first.
    #[arg(value_name = "[DRV…] MANIFEST")]
    pub(crate) manifests: Vec<PathBuf>,
    /// Read the derivation closure of the given .drv files and classify every fixed-output
    /// derivation: mirrored, pinned upstream, network build or unpinned. Exits 1 on any unpinned one.
    #[arg(long)]
    pub(crate) drv: bool,
    /// Instantiate FLAKE#ATTR first, in Nix's restricted mode with `allowed-uris` set to the
    /// manifests' mirrors (an evaluation-time fetch of anything else fails), then check its
    /// graph as --drv does. Arguments after `--` go to `nix eval`, e.g.
    /// `-- --override-input nixpkgs path:/src/nixpkgs`.
    #[arg(long, value_name = "FLAKE#ATTR", conflicts_with = "drv")]
    pub(crate) flake: Option<String>,
    /// Extra arguments for `nix eval` with --flake.
    #[arg(last = true, requires = "flake", value_name = "NIX-ARGS")]
    pub(crate) nix_args: Vec<String>,
    /// With --drv: accept fixed-output derivations whose hash is pinned but that fetch from upstream.
    #[arg(long)]
    pub(crate) allow_upstream: bool,
    /// With --drv: the evaluated repository. Input sources (paths the evaluation copied into the
    /// store) that are copies of its files pass, and so do those of the inputs its flake.lock
    /// locks, where they are in the store.
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub(crate) repo: PathBuf,
    /// With --drv: another directory whose files are trusted sources, e.g. the nixpkgs given by
    /// `-I nixpkgs=DIR` or `--override-input nixpkgs path:DIR` (repeatable).
    #[arg(long, value_name = "DIR")]
    pub(crate) source_tree: Vec<PathBuf>,
    /// Directory holding the mirrors (bare git repositories, tarballs, artifact caches).
    #[arg(long, value_name = "DIR")]
    pub(crate) mirror_root: Option<PathBuf>,
    /// Store directory to look for fixed-output paths in.
    #[arg(long, value_name = "DIR", default_value = nix::DEFAULT_STORE_DIR)]
    pub(crate) store: String,
    /// Print the rows as JSON.
    #[arg(long)]
    pub(crate) json: bool,
    /// No progress bars.
    #[arg(long, short = 'q')]
    pub(crate) quiet: bool,
}

pub(crate) fn run(args: VerifyArgs) -> Result<()> {
    use nixoci::verify::{self, provenance};
    let (drvs, pin_files) = verify::split_arguments(&args.manifests)?;
    if !drvs.is_empty() && !args.drv {
        return Err(anyhow!(
            "{} is a derivation: pass --drv to check a derivation graph",
            drvs[0].display()
        ));
    }
    if args.flake.is_none() && !args.drv && (args.allow_upstream || !args.source_tree.is_empty()) {
        return Err(anyhow!(
            "--allow-upstream and --source-tree go with --drv or --flake"
        ));
    }
    if args.drv || args.flake.is_some() {
        let roots: Vec<String> = match &args.flake {
            Some(installable) => {
                if !drvs.is_empty() {
                    return Err(anyhow!("--flake takes no .drv paths"));
                }
                vec![provenance::instantiate_restricted(
                    installable,
                    &pin_files,
                    &args.nix_args,
                )?]
            }
            None if drvs.is_empty() => {
                return Err(anyhow!(
                    "--drv needs derivation paths, e.g. nixoci verify --drv $(nix-instantiate containers/authentik)"
                ))
            }
            None => drvs
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect(),
        };
        let trees = verify::sources::trees(&args.store, &args.repo, &args.source_tree)?;
        let report = provenance::classify(&args.store, &roots, &pin_files, &trees)?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", provenance::render(&report));
        }
        return provenance::refuse_unproven(&report, args.allow_upstream);
    }
    let rows = verify::verify(
        &pin_files,
        &verify::Options {
            mirror_root: args.mirror_root.as_deref(),
            store_dir: &args.store,
            progress: Progress::from_quiet(args.quiet),
        },
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", verify::render(&rows));
    }
    let failed = rows.iter().filter(|r| r.status.is_failure()).count();
    if failed > 0 {
        return Err(anyhow!("{failed} pin(s) did not verify"));
    }
    Ok(())
}
