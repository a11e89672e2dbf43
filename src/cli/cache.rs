//! `nixoci cache`: the layer cache of `build --cache`.

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use clap::Subcommand;

#[derive(Subcommand)]
pub(crate) enum CacheCommand {
    /// Remove the least recently used layers until the cache holds at most SIZE.
    #[command(
        after_help = "Example:\n  nixoci cache prune --cache ~/.cache/nixoci --max-size 20G"
    )]
    Prune {
        /// The cache directory.
        #[arg(long, env = "NIXOCI_CACHE", value_name = "DIR")]
        cache: PathBuf,
        /// Size to keep: bytes, or with K, M, G or T (powers of 1024).
        #[arg(long, value_name = "SIZE", value_parser = nixoci::layer::cache::parse_size)]
        max_size: u64,
    },
}

fn prune(cache: &std::path::Path, max_size: u64) -> Result<()> {
    if !cache.is_dir() {
        return Err(anyhow!("no layer cache at {}", cache.display()));
    }
    let (removed, kept) = nixoci::layer::cache::LayerCache::open(cache)?.prune(max_size)?;
    eprintln!(
        "removed {removed} layer(s); {kept} bytes kept in {}",
        cache.display()
    );
    Ok(())
}

pub(crate) fn run(command: CacheCommand) -> Result<()> {
    match command {
        CacheCommand::Prune { cache, max_size } => prune(&cache, max_size),
    }
}
