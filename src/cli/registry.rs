//! How commands reach a registry: the access arguments every command that
//! reads or writes one shares (`push`, `build --push`, `inspect`, `diff`),
//! and the upload arguments of the pushing ones.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Args;

use nixoci::media::Compression;
use nixoci::progress::Progress;
use nixoci::registry::auth::{CredentialSources, Credentials};
use nixoci::registry::{self, PushOptions, Reference};

/// How to reach a registry: credentials, trust, timeouts.
#[derive(Args)]
pub(crate) struct RegistryAccess {
    /// USER:PASSWORD for HTTP Basic or the token server.
    #[arg(long, value_name = "USER:PASS", conflicts_with = "creds_env")]
    pub(crate) creds: Option<String>,
    /// Read the password (or USER:PASS) from this environment variable.
    #[arg(long, value_name = "VAR")]
    pub(crate) creds_env: Option<String>,
    /// User name to go with --creds-env.
    #[arg(long)]
    pub(crate) username: Option<String>,
    /// Allow plain HTTP and unverified TLS (for loopback registries).
    #[arg(long)]
    pub(crate) insecure: bool,
    /// Trust the CA certificates in FILE (PEM) instead of the built-in Mozilla roots, for a
    /// registry with a private CA.
    #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
    pub(crate) ca_file: Option<PathBuf>,
    /// Seconds with no byte moving before a transfer counts as failed (then it is retried).
    #[arg(long, value_name = "SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) stall_timeout: u64,
    /// Seconds the whole exchange with one repository may take, every transfer and retry
    /// included; then it stops with exit 5.
    #[arg(long, value_name = "SECONDS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) timeout: u64,
    /// Log every request (method, URL, status; never headers or credentials).
    #[arg(long, short = 'v')]
    pub(crate) verbose: bool,
}

impl RegistryAccess {
    /// Options for reading (and, with [`RegistryArgs`], pushing).
    pub(crate) fn options(
        &self,
        quiet: bool,
        compression: Option<Compression>,
    ) -> Result<PushOptions> {
        Ok(PushOptions {
            creds: CredentialSources {
                explicit: self.creds.as_deref().map(Credentials::parse).transpose()?,
                env_var: self.creds_env.clone(),
                username: self.username.clone(),
            },
            trust: registry::client::Trust {
                insecure: self.insecure,
                ca_file: self.ca_file.clone(),
            },
            mount_from: None,
            parallel: 1,
            chunk_size: 16 << 20,
            progress: Progress::from_quiet(quiet),
            verbose: self.verbose,
            timeouts: registry::client::Timeouts {
                stall: Duration::from_secs(self.stall_timeout),
                total: Duration::from_secs(self.timeout),
            },
            compression,
        })
    }
}

/// How to push to a registry (`push`, and `build --push`).
#[derive(Args)]
pub(crate) struct RegistryArgs {
    #[command(flatten)]
    pub(crate) access: RegistryAccess,
    /// Mount blobs from this repository of the same registry instead of uploading them.
    #[arg(long, value_name = "REPO")]
    pub(crate) mount_from: Option<String>,
    /// Blobs uploaded at once.
    #[arg(long, default_value_t = 4)]
    pub(crate) parallel: usize,
    /// Chunk size in bytes when the registry refuses monolithic uploads.
    #[arg(long, default_value_t = 16 << 20)]
    pub(crate) chunk_size: u64,
}

impl RegistryArgs {
    pub(crate) fn options(
        &self,
        quiet: bool,
        compression: Option<Compression>,
    ) -> Result<PushOptions> {
        Ok(PushOptions {
            mount_from: self.mount_from.clone(),
            parallel: self.parallel,
            chunk_size: self.chunk_size.max(1),
            ..self.access.options(quiet, compression)?
        })
    }
}

pub(crate) fn parse_references(refs: &[String]) -> Result<Vec<Reference>> {
    refs.iter().map(|r| Reference::parse(r)).collect()
}

/// An image named on the command line: a local path when one exists there,
/// else a registry reference (read without its layers unless
/// `fetch_layers`). Where its store paths did not come from its history,
/// says where they came from.
pub(crate) fn open_subject(
    text: &str,
    access: &RegistryAccess,
    fetch_layers: bool,
) -> Result<nixoci::inspect::Subject> {
    let path = std::path::Path::new(text);
    let subject = if path.exists() {
        nixoci::inspect::Subject::local(path)?
    } else {
        let reference = Reference::parse(text).map_err(|e| {
            anyhow::anyhow!("{text} is neither an image here (no such file or directory) nor a registry reference: {e:#}")
        })?;
        nixoci::inspect::Subject::remote(&reference, &access.options(true, None)?, fetch_layers)?
    };
    if let Some(note) = &subject.note {
        eprintln!("nixoci: {note}");
    }
    Ok(subject)
}
