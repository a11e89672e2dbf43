//! `nixoci key generate`: a P-256 key pair for `sign` and `attest`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use clap::{Args, Subcommand};

#[derive(Subcommand)]
pub(crate) enum KeyCommand {
    /// Write a new P-256 key pair: PREFIX.key (PKCS#8 PEM, encrypted when the password
    /// variable is set) and PREFIX.pub (PKIX PEM), as cosign's generate-key-pair names them.
    Generate(GenerateArgs),
}

#[derive(Args)]
pub(crate) struct GenerateArgs {
    /// Where the pair goes: PREFIX.key and PREFIX.pub.
    #[arg(long, value_name = "PREFIX", default_value = "cosign")]
    pub(crate) output_key_prefix: PathBuf,
    /// The variable holding the password that encrypts the private key; unset or empty:
    /// the key is written unencrypted (keep it in a CI secret).
    #[arg(long, value_name = "VAR", default_value = "COSIGN_PASSWORD")]
    pub(crate) password_env: String,
}

pub(crate) fn run(command: KeyCommand) -> Result<()> {
    let KeyCommand::Generate(args) = command;
    let password = std::env::var(&args.password_env)
        .ok()
        .filter(|p| !p.is_empty());
    let key = nixoci::sign::PrivateKey::generate();
    let with = |ext: &str| {
        let mut name = args.output_key_prefix.clone().into_os_string();
        name.push(ext);
        PathBuf::from(name)
    };
    let (private, public) = (with(".key"), with(".pub"));
    for file in [&private, &public] {
        if file.exists() {
            return Err(anyhow!(
                "{} exists: nixoci never overwrites a key",
                file.display()
            ));
        }
    }
    write_new(&private, key.to_pem(password.as_deref())?.as_bytes(), 0o600)?;
    write_new(&public, key.public().to_pem()?.as_bytes(), 0o644)?;
    eprintln!(
        "wrote {} ({}) and {}",
        private.display(),
        if password.is_some() {
            "encrypted"
        } else {
            "not encrypted"
        },
        public.display()
    );
    Ok(())
}

/// Creates `path` (never replacing a file) with `mode`, and writes `bytes`.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(bytes)
        .with_context(|| format!("cannot write {}", path.display()))
}
