//! The `nixoci` command line: the subcommands (each in its module under
//! `cli/`), dispatched, and the exit status of their errors.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use nixoci::registry::PushError;

mod cli;
use cli::{
    build, cache, check, diff, hash, index, inspect, key, nix_helper, pins, plan, push, sbom, sign,
    tags, verify, verify_image,
};

#[derive(Parser)]
#[command(
    name = "nixoci",
    version,
    about = "Turn Nix store closures into layered, deterministic OCI images",
    long_about = "Turn Nix store closures into layered, deterministic OCI images.\n\n\
        nixoci reimplements nixpkgs' dockerTools.buildLayeredImage: one layer per popular store \
        path (or nixpkgs' auto-layer), store-layer tars byte-identical to nixpkgs, every byte read \
        once, all cores busy, and the same digests on every machine."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build an image from store paths, or from a spec file the Nix library writes.
    #[command(after_help = "Examples:\n  \
        nixoci build /nix/store/…-hello --config config.json --tag hello:1.0 -o hello-oci\n  \
        nixoci build --spec image.json --format docker-archive -o image.tar\n  \
        nixoci build --spec image.json --format oci-archive -o - | skopeo copy oci-archive:/dev/stdin …\n\n\
        Root entries (--root) replace shell extraCommands:\n  \
        dir:/tmp:1777   symlink:/bin/sh:/nix/store/…-busybox/bin/sh   file:/init:/nix/store/…-init:0755")]
    Build(Box<build::BuildArgs>),
    /// Print the store-path layers of a closure graph as JSON (bottom layer first).
    Plan(plan::PlanArgs),
    /// Combine single-platform images into one multi-platform image (an OCI image index).
    #[command(after_help = "Examples:\n  \
        nixoci index app-amd64 app-arm64.tar --tag team/app:1.0 -o app\n  \
        nixoci push app registry.example.com/team/app:1.0\n\n\
        Each image (an OCI layout, oci-archive or docker-archive) is listed with the platform its config\n\
        names (architecture, os, variant), normalised as containerd compares them (aarch64 is arm64,\n\
        arm64/v8 is arm64, x86_64 is amd64); two images of one platform are refused. Runtimes pull the\n\
        one for their own platform.")]
    Index(index::IndexArgs),
    /// Write a bill of materials (CycloneDX 1.6 or SPDX 2.3 JSON) of an image's store paths.
    #[command(after_help = "Examples:\n  \
        nixoci sbom result --mirrors mirrors/authentik.toml -o authentik.cdx.json\n  \
        nixoci sbom --graph closure.json --format spdx -o closure.spdx.json\n\n\
        One component per store path (name and version as builtins.parseDrvName splits them, NAR hash,\n\
        layer, references), and each pinned source with its mirror URL and hash. With an image, its\n\
        store paths come from its layers' history and their NAR hashes from --graph or the local store.\n\
        The same closure gives the same bytes.")]
    Sbom(sbom::SbomArgs),
    /// Show what is in an image by store path: sizes, layers, shares, and why a path is there.
    #[command(after_help = "Examples:\n  \
        nixoci inspect result --top 10\n  \
        nixoci inspect result --why openssl\n  \
        nixoci inspect image.tar --graph closure.json --json\n  \
        nixoci inspect result --base previous-release --markdown\n\n\
        The store paths come from the image's config history (nixoci's and nixpkgs' images record\n\
        them per layer), else from its attached SBOM, else from its layers (a registry image's\n\
        only with --fetch-layers); their NAR sizes and references from --graph or the local\n\
        store. A path's share is its NAR size over the image's. Roots are the paths no other path\n\
        refers to.")]
    Inspect(inspect::InspectArgs),
    /// Show what changed between two images: store paths added, removed and changed, layers, bytes to pull.
    #[command(after_help = "Examples:\n  \
        nixoci diff previous-release result\n  \
        nixoci diff old.tar new-layout --markdown > diff.md\n\n\
        Store paths come from each image's config history (else its SBOM, else its layers, as\n\
        for inspect); a name that one path left and another took is \"changed\", with both\n\
        versions. Bytes to pull: the compressed size of the new image's layers the old one lacks.\n\n\
        Exit status: 0 with or without differences; with --exit-code, 1 when they differ.")]
    Diff(diff::DiffArgs),
    /// List the tags of a repository in a registry, one per line.
    #[command(after_help = "Example:\n  \
        nixoci tags registry.example.com/team/app | grep -- '-nix$'\n\n\
        Anonymous unless credentials are given; every page of the list is read.")]
    Tags(tags::TagsArgs),
    /// Check a built image before pushing it: entrypoint, interpreter, Env paths, writable dirs.
    #[command(
        after_help = "Checks, each of which would have saved a build-push-deploy round trip:\n  \
        - the Entrypoint (or Cmd) exists in the image and is executable by User;\n  \
        - its #! interpreter exists and is executable;\n  \
        - every absolute path in an Env value exists (missing PATH entries only warn);\n  \
        - /tmp, TMPDIR, Volumes, wrapper link targets and --writable dirs exist and are writable by User;\n  \
        - a nixoci-entrypoint wrapper's config: link sources and exec target exist;\n  \
        - (warning) PATH is unset.\n\n\
        Exit status: 0 when nothing failed, 1 otherwise."
    )]
    Check(check::CheckArgs),
    /// Push a built image to a registry: nothing uploaded twice, immutable tags respected.
    #[command(after_help = "Examples:\n  \
        nixoci push result registry.example.com/team/app:v1.2.3-abc1234-nix --username ci --creds-env API_KEY\n  \
        nixoci push --insecure image.tar 127.0.0.1:5000/test/app:1 --json\n\n\
        Credentials, first found wins: --creds USER:PASS; --creds-env VAR (with --username, or VAR=USER:PASS);\n\
        REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json, $DOCKER_CONFIG/config.json,\n\
        ~/.config/containers/auth.json, ~/.docker/config.json (auths, credHelpers, credsStore).\n\n\
        Exit status: 0 pushed (or already there), 3 credentials missing/invalid/expired,\n\
        4 the tag exists with another digest (tags are immutable), 5 network or registry failure,\n\
        1 anything else (bad input).")]
    Push(Box<push::PushArgs>),
    /// Check offline that mirrored sources and fixed-output paths match their pins in mirrors/*.toml.
    #[command(
        after_help = "Statuses: ok, flagged (ok, but submodules or checkout filters may make fetchgit differ),\n\
        mismatch, moved (the tag points elsewhere than the pinned commit), missing (mirror or object not there),\n\
        unmirrored (fetched from upstream: nothing to verify), absent (not in the local store or cache: not checked).\n\n\
        It never opens a network connection. Exit status: 1 on any mismatch, moved tag or missing mirror.\n\n\
        Provenance of a derivation graph:\n  \
        nixoci verify --drv $(nix-instantiate containers/authentik) mirrors/authentik.toml\n  \
        nixoci verify --flake .#authentik-image mirrors/authentik.toml\n\
        classify every fixed-output derivation (mirrored, pinned upstream, network build, unpinned)\n\
        and every input source the evaluation put in the store (a copy of --repo, a flake.lock input\n\
        or a --source-tree; a toFile text; a pinned fetch; else an unpinned evaluation fetch). --flake\n\
        first evaluates in restricted mode, with fetches allowed from the mirrors only. Exit status 1\n\
        on anything unpinned."
    )]
    Verify(verify::VerifyArgs),
    /// Make a key pair for signing images.
    #[command(subcommand)]
    Key(key::KeyCommand),
    /// Sign an image (its manifest digest), as cosign does and as a Sigstore bundle.
    #[command(after_help = "Examples:\n  \
        nixoci key generate --output-key-prefix ci\n  \
        nixoci sign result --key ci.key                 # kept in the layout; nixoci push uploads it\n  \
        nixoci sign registry.example.com/team/app:v1 --key ci.key --creds-env API_KEY\n\n\
        Writes cosign's simple-signing payload under the tag sha256-<hex>.sig (the signature in the\n\
        layer's dev.cosignproject.cosign/signature annotation), and a Sigstore bundle v0.3 with the\n\
        public key's hint and no transparency-log entry as an OCI 1.1 referrer (with the fallback\n\
        tag sha256-<hex> where the registry has no referrers API). No network beyond the registry.")]
    Sign(sign::SignArgs),
    /// Attach signed SLSA provenance: every fixed output of the image's derivation graph, its layers.
    #[command(after_help = "Example:\n  \
        nixoci attest result --key ci.key --drv $(nix-instantiate containers/authentik) \\\n      \
        --mirrors mirrors/authentik.toml --flake .#authentik-image --flake-lock flake.lock\n\n\
        An in-toto Statement v1 with an SLSA provenance v1 predicate in a signed DSSE envelope,\n\
        kept as cosign's sha256-<hex>.att and as a Sigstore bundle referrer. Deterministic apart\n\
        from the signature: nothing in it is a clock reading.")]
    Attest(sign::AttestArgs),
    /// Verify an image's signatures and provenance with a public key.
    #[command(after_help = "Examples:\n  \
        nixoci verify-image result --key ci.pub\n  \
        nixoci verify-image registry.example.com/team/app:v1 --key ci.pub --policy no-upstream\n\n\
        Every signature and attestation found (cosign's tags, bundle referrers) must verify and\n\
        be about this image, and there must be one signature at least. Exit status: 0 verified,\n\
        1 verification failed, 2 usage.")]
    VerifyImage(verify_image::VerifyImageArgs),
    /// Print hashes the way `nix hash path` and `nix hash file` do.
    #[command(subcommand)]
    Hash(hash::HashCommand),
    /// Manage the layer cache of `nixoci build --cache`.
    #[command(subcommand)]
    Cache(cache::CacheCommand),
    /// Manage a mirrors manifest's pins.
    #[command(subcommand)]
    Pins(pins::PinsCommand),
    /// Helpers the Nix library runs as derivation builders.
    #[command(subcommand, hide = true)]
    NixHelper(nix_helper::NixHelper),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Build(args) => build::run(*args),
        Command::Plan(args) => plan::run(args),
        Command::Hash(command) => hash::run(command),
        Command::Index(args) => index::run(args),
        Command::Sbom(args) => sbom::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Diff(args) => diff::run(args),
        Command::Tags(args) => tags::run(args),
        Command::Key(command) => key::run(command),
        Command::Sign(args) => sign::run_sign(args),
        Command::Attest(args) => sign::run_attest(args),
        Command::VerifyImage(args) => verify_image::run(args),
        Command::Check(args) => check::run(args),
        Command::Push(args) => push::run(*args),
        Command::Verify(args) => verify::run(args),
        Command::Cache(command) => cache::run(command),
        Command::Pins(command) => pins::run(command),
        Command::NixHelper(helper) => nix_helper::run(helper),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nixoci: error: {e:#}");
            match e.downcast_ref::<PushError>() {
                Some(push) => ExitCode::from(push.failure.exit_code()),
                None => ExitCode::FAILURE,
            }
        }
    }
}
