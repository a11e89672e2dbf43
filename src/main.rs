//! The `nixoci` command line: parses arguments and calls the library.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use clap::{Args, Parser, Subcommand};

use nixoci::build::{self, BuildRequest};
use nixoci::layering::{self, Strategy};
use nixoci::media::Compression;
use nixoci::output::{Destination, Format};
use nixoci::progress::Progress;
use nixoci::registry::auth::{CredentialSources, Credentials};
use nixoci::registry::stream::Streams;
use nixoci::registry::{self, PushError, PushOptions, Reference};
use nixoci::spec::{Overrides, Spec};
use nixoci::{closure, nix, verify};

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
    Build(Box<BuildArgs>),
    /// Print the store-path layers of a closure graph as JSON (bottom layer first).
    Plan(PlanArgs),
    /// Combine single-platform images into one multi-platform image (an OCI image index).
    #[command(after_help = "Examples:\n  \
        nixoci index app-amd64 app-arm64.tar --tag team/app:1.0 -o app\n  \
        nixoci push app registry.example.com/team/app:1.0\n\n\
        Each image (an OCI layout, oci-archive or docker-archive) is listed with the platform its config\n\
        names (architecture, os, variant), normalised as containerd compares them (aarch64 is arm64,\n\
        arm64/v8 is arm64, x86_64 is amd64); two images of one platform are refused. Runtimes pull the\n\
        one for their own platform.")]
    Index(IndexArgs),
    /// Write a bill of materials (CycloneDX 1.6 or SPDX 2.3 JSON) of an image's store paths.
    #[command(after_help = "Examples:\n  \
        nixoci sbom result --mirrors mirrors/authentik.toml -o authentik.cdx.json\n  \
        nixoci sbom --graph closure.json --format spdx -o closure.spdx.json\n\n\
        One component per store path (name and version as builtins.parseDrvName splits them, NAR hash,\n\
        layer, references), and each pinned source with its mirror URL and hash. With an image, its\n\
        store paths come from its layers' history and their NAR hashes from --graph or the local store.\n\
        The same closure gives the same bytes.")]
    Sbom(SbomArgs),
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
    Check(CheckArgs),
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
    Push(Box<PushArgs>),
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
    Verify(VerifyArgs),
    /// Print hashes the way `nix hash path` and `nix hash file` do.
    #[command(subcommand)]
    Hash(HashCommand),
    /// Manage the layer cache of `nixoci build --cache`.
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Manage a mirrors manifest's pins.
    #[command(subcommand)]
    Pins(PinsCommand),
    /// Helpers the Nix library runs as derivation builders.
    #[command(subcommand, hide = true)]
    NixHelper(NixHelper),
}

#[derive(Args)]
struct BuildArgs {
    /// Store paths to put in the image (merged into / like symlinkJoin; their closure is read from the local store).
    store_paths: Vec<String>,
    /// A spec file holding contents, config, root entries, options and the graph (see README).
    #[arg(long, value_name = "FILE")]
    spec: Option<PathBuf>,
    /// A closure graph file instead of reading the local store (exportReferencesGraph, classic or path-info JSON).
    #[arg(long, value_name = "FILE")]
    graph: Option<PathBuf>,
    /// Runtime config in nixpkgs' `config` shape: {"Entrypoint": […], "Env": […], …}.
    #[arg(long, value_name = "CONFIG.json")]
    config: Option<PathBuf>,
    /// Image name and tag; NAME alone means NAME:latest.
    #[arg(long, value_name = "NAME[:TAG]")]
    tag: Option<String>,
    /// Layer compression (docker-archive always stores plain tars).
    #[arg(long, value_enum)]
    compression: Option<Compression>,
    /// Output format.
    #[arg(long, value_enum, default_value = "oci-layout")]
    format: Format,
    /// Compress a docker-archive or oci-archive as a whole, as nixpkgs' `compressor` does
    /// (`gzip` gives `docker load`'s `.tar.gz`); deterministic for any --jobs.
    #[arg(long, value_enum, default_value = "none", value_name = "COMPRESSION")]
    archive_compression: Compression,
    /// Worker threads (default: all cores). Digests do not depend on it.
    #[arg(long, short = 'j')]
    jobs: Option<usize>,
    /// Layer budget including the customisation layer (nixpkgs' maxLayers).
    #[arg(long)]
    max_layers: Option<usize>,
    /// Layering strategy [default: auto, as nixpkgs since 25.05].
    #[arg(long, value_enum)]
    strategy: Option<Strategy>,
    /// A root entry: dir:PATH[:MODE], symlink:PATH:TARGET or file:PATH:SOURCE[:MODE]. Repeatable.
    #[arg(long = "root", value_name = "ENTRY")]
    roots: Vec<String>,
    /// Image creation time: RFC 3339, `now`, `SOURCE_DATE_EPOCH` or @SECONDS [default: 1970-01-01T00:00:01Z].
    #[arg(long)]
    created: Option<String>,
    /// mtime of every file in the layers (same forms as --created) [default: 1970-01-01T00:00:01Z].
    #[arg(long)]
    mtime: Option<String>,
    /// Image architecture [default: this machine's, e.g. amd64].
    #[arg(long)]
    architecture: Option<String>,
    /// Output path (`-` for stdout with the archive formats). An existing OCI layout or file there is replaced atomically; anything else is refused.
    #[arg(short = 'o', long = "output", value_name = "PATH")]
    output: String,
    /// Replace the output even if it is not an OCI layout or a file (a directory of yours is deleted).
    #[arg(long)]
    force: bool,
    /// Reuse store-path layers built before (keyed by paths, NAR hashes and options) from this directory.
    #[arg(long, env = "NIXOCI_CACHE", value_name = "DIR")]
    cache: Option<PathBuf>,
    /// No progress bars.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// Print a JSON summary: image digest and each layer's digest, diff_id, size and store paths.
    #[arg(long)]
    json: bool,
    /// Keep a bill of materials of the closure in the OCI layout, as a referrer that `nixoci push` uploads.
    #[arg(long, value_enum, value_name = "FORMAT")]
    sbom: Option<nixoci::sbom::Format>,
    /// Push the built layout to REGISTRY/REPOSITORY:TAG, as `nixoci push` would (repeatable).
    /// With --cache, the layers the cache does not have (64 MiB and up) are uploaded to the first
    /// REF while they are compressed; the push after the build sends only what is still missing.
    #[arg(long = "push", value_name = "REF")]
    push: Vec<String>,
    #[command(flatten, next_help_heading = "Pushing (with --push)")]
    registry: RegistryArgs,
}

#[derive(Args)]
struct PlanArgs {
    /// Closure graph (exportReferencesGraph JSON or text, or nix path-info --json).
    #[arg(long, value_name = "FILE")]
    graph: PathBuf,
    #[arg(long, value_enum, default_value = "auto")]
    strategy: Strategy,
    /// nixpkgs' layeringPipeline instead of a strategy: a JSON list of steps, or a file holding one,
    /// e.g. '[["popularity_contest"],["limit_layers",10]]'.
    #[arg(long, value_name = "JSON|FILE", conflicts_with = "strategy")]
    pipeline: Option<String>,
    /// Layer budget including the customisation layer (nixpkgs' maxLayers).
    #[arg(long, default_value_t = 100)]
    max_layers: usize,
    /// Store directory the graph's paths live in.
    #[arg(long, default_value = nix::DEFAULT_STORE_DIR)]
    store_dir: String,
}

#[derive(Args)]
struct IndexArgs {
    /// The single-platform images, in the order the index lists them.
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<PathBuf>,
    /// Name and tag of the index; NAME alone means NAME:latest.
    #[arg(long, value_name = "NAME[:TAG]")]
    tag: String,
    /// The OCI layout to write. An existing OCI layout or file there is replaced; anything else is refused.
    #[arg(short = 'o', long = "output", value_name = "DIR")]
    output: PathBuf,
    /// Replace the output even if it is not an OCI layout or a file.
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
struct SbomArgs {
    /// The image (OCI layout, oci-archive or docker-archive); without it, every path of --graph.
    image: Option<PathBuf>,
    /// A closure graph with NAR hashes (exportReferencesGraph or nix path-info --json).
    #[arg(long, value_name = "FILE")]
    graph: Option<PathBuf>,
    /// Pinned sources to list (mirrors/*.toml). Repeatable.
    #[arg(long = "mirrors", value_name = "TOML")]
    mirrors: Vec<PathBuf>,
    #[arg(long, value_enum, default_value = "cyclonedx")]
    format: nixoci::sbom::Format,
    /// The document's subject name.
    #[arg(long, default_value = "image")]
    name: String,
    /// Where to write it (default: stdout).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<PathBuf>,
    /// Also keep it in the image's OCI layout as an OCI 1.1 referrer, which `nixoci push` uploads.
    #[arg(long, requires = "image")]
    attach: bool,
}

#[derive(Args)]
struct CheckArgs {
    /// An OCI layout directory, an oci-archive or a docker-archive.
    image: PathBuf,
    /// Which image of a layout holding several (its ref.name tag).
    #[arg(long = "ref", value_name = "TAG")]
    reference: Option<String>,
    /// Another directory the application must be able to write to. Repeatable.
    #[arg(long, value_name = "DIR")]
    writable: Vec<String>,
    /// Print the findings as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct PushArgs {
    /// The image: an OCI layout directory (what `nixoci build` writes), an oci-archive or a docker-archive.
    src: PathBuf,
    /// Where to push: REGISTRY/REPOSITORY:TAG; several tags may be given.
    #[arg(required = true, value_name = "REF")]
    refs: Vec<String>,
    /// Compress layers that are plain tars (docker-archives, nixpkgs' .tar.gz) before pushing;
    /// deterministic, so a re-push finds them already there. Compressed layers are pushed as they are.
    #[arg(long, value_enum)]
    compression: Option<Compression>,
    /// Print the pushed repo@sha256 digests and the bytes uploaded as JSON.
    #[arg(long)]
    json: bool,
    /// No progress bars.
    #[arg(long, short = 'q')]
    quiet: bool,
    #[command(flatten)]
    registry: RegistryArgs,
}

/// How to talk to a registry (`push`, and `build --push`).
#[derive(Args)]
struct RegistryArgs {
    /// USER:PASSWORD for HTTP Basic or the token server.
    #[arg(long, value_name = "USER:PASS", conflicts_with = "creds_env")]
    creds: Option<String>,
    /// Read the password (or USER:PASS) from this environment variable.
    #[arg(long, value_name = "VAR")]
    creds_env: Option<String>,
    /// User name to go with --creds-env.
    #[arg(long)]
    username: Option<String>,
    /// Allow plain HTTP and unverified TLS (for loopback registries).
    #[arg(long)]
    insecure: bool,
    /// Trust the CA certificates in FILE (PEM) instead of the built-in Mozilla roots, for a
    /// registry with a private CA.
    #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
    ca_file: Option<PathBuf>,
    /// Mount blobs from this repository of the same registry instead of uploading them.
    #[arg(long, value_name = "REPO")]
    mount_from: Option<String>,
    /// Blobs uploaded at once.
    #[arg(long, default_value_t = 4)]
    parallel: usize,
    /// Chunk size in bytes when the registry refuses monolithic uploads.
    #[arg(long, default_value_t = 16 << 20)]
    chunk_size: u64,
    /// Seconds with no byte moving before a transfer counts as failed (then it is retried).
    #[arg(long, value_name = "SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    stall_timeout: u64,
    /// Seconds the whole push to one repository may take, every transfer and retry included;
    /// then it stops with exit 5.
    #[arg(long, value_name = "SECONDS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    timeout: u64,
    /// Log every request (method, URL, status; never headers or credentials).
    #[arg(long, short = 'v')]
    verbose: bool,
}

impl RegistryArgs {
    fn options(&self, quiet: bool, compression: Option<Compression>) -> Result<PushOptions> {
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
            mount_from: self.mount_from.clone(),
            parallel: self.parallel,
            chunk_size: self.chunk_size.max(1),
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

fn parse_references(refs: &[String]) -> Result<Vec<Reference>> {
    refs.iter().map(|r| Reference::parse(r)).collect()
}

#[derive(Args)]
struct VerifyArgs {
    /// Pin files (default: every mirrors/*.toml); with --drv, the derivations (`.drv`) come first.
    #[arg(value_name = "[DRV…] MANIFEST")]
    manifests: Vec<PathBuf>,
    /// Read the derivation closure of the given .drv files and classify every fixed-output
    /// derivation: mirrored, pinned upstream, network build or unpinned. Exits 1 on any unpinned one.
    #[arg(long)]
    drv: bool,
    /// Instantiate FLAKE#ATTR first, in Nix's restricted mode with `allowed-uris` set to the
    /// manifests' mirrors (an evaluation-time fetch of anything else fails), then check its
    /// graph as --drv does. Arguments after `--` go to `nix eval`, e.g.
    /// `-- --override-input nixpkgs path:/src/nixpkgs`.
    #[arg(long, value_name = "FLAKE#ATTR", conflicts_with = "drv")]
    flake: Option<String>,
    /// Extra arguments for `nix eval` with --flake.
    #[arg(last = true, requires = "flake", value_name = "NIX-ARGS")]
    nix_args: Vec<String>,
    /// With --drv: accept fixed-output derivations whose hash is pinned but that fetch from upstream.
    #[arg(long)]
    allow_upstream: bool,
    /// With --drv: the evaluated repository. Input sources (paths the evaluation copied into the
    /// store) that are copies of its files pass, and so do those of the inputs its flake.lock
    /// locks, where they are in the store.
    #[arg(long, value_name = "DIR", default_value = ".")]
    repo: PathBuf,
    /// With --drv: another directory whose files are trusted sources, e.g. the nixpkgs given by
    /// `-I nixpkgs=DIR` or `--override-input nixpkgs path:DIR` (repeatable).
    #[arg(long, value_name = "DIR")]
    source_tree: Vec<PathBuf>,
    /// Directory holding the mirrors (bare git repositories, tarballs, artifact caches).
    #[arg(long, value_name = "DIR")]
    mirror_root: Option<PathBuf>,
    /// Store directory to look for fixed-output paths in.
    #[arg(long, value_name = "DIR", default_value = nix::DEFAULT_STORE_DIR)]
    store: String,
    /// Print the rows as JSON.
    #[arg(long)]
    json: bool,
    /// No progress bars.
    #[arg(long, short = 'q')]
    quiet: bool,
}

#[derive(Subcommand)]
enum PinsCommand {
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

#[derive(Subcommand)]
enum CacheCommand {
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

#[derive(Subcommand)]
enum NixHelper {
    /// Write one attribute of a structured-attrs file as JSON (an entrypoint wrapper config).
    WriteJson {
        #[arg(long)]
        attrs: PathBuf,
        #[arg(long)]
        key: String,
        #[arg(short = 'o')]
        output: PathBuf,
    },
    /// Build one layer as its own output (`buildLayer`): `blob` and `meta.json`.
    Layer {
        #[arg(long)]
        attrs: PathBuf,
        #[arg(short = 'o')]
        output: PathBuf,
    },
    /// Write the `nix-store --load-db` registration of the graph in ATTRS (includeNixDB).
    Registration {
        #[arg(long)]
        attrs: PathBuf,
        #[arg(short = 'o')]
        output: PathBuf,
    },
    /// Merge store paths into DIR as symlinkJoin does, for extraCommands to run in.
    LinkContents {
        #[arg(short = 'o')]
        output: PathBuf,
        paths: Vec<PathBuf>,
    },
    /// Write the `streamLayeredImage` script: it builds the image to stdout.
    StreamScript {
        #[arg(long)]
        attrs: PathBuf,
        #[arg(short = 'o')]
        output: PathBuf,
    },
}

#[derive(Subcommand)]
enum HashCommand {
    /// The NAR hash of a file system tree (`nix hash path`).
    Path(HashArgs),
    /// The flat hash of a file's bytes (`nix hash file`).
    File(HashArgs),
}

#[derive(Args)]
struct HashArgs {
    path: PathBuf,
    /// Print nix32 (`nix hash … --base32`).
    #[arg(long, group = "fmt")]
    base32: bool,
    /// Print SRI, the default.
    #[arg(long, group = "fmt")]
    sri: bool,
    /// Print hexadecimal.
    #[arg(long, group = "fmt")]
    hex: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Build(args) => run_build(*args),
        Command::Plan(args) => run_plan(args),
        Command::Hash(cmd) => run_hash(cmd),
        Command::Index(args) => run_index(args),
        Command::Sbom(args) => run_sbom(args),
        Command::Check(args) => run_check(args),
        Command::Push(args) => run_push(*args),
        Command::Verify(args) => run_verify(args),
        Command::Cache(CacheCommand::Prune { cache, max_size }) => {
            run_cache_prune(&cache, max_size)
        }
        Command::Pins(PinsCommand::Update {
            manifest,
            only,
            file,
            include,
            nixpkgs_rev,
        }) => run_pins_update(&manifest, only, file, include, nixpkgs_rev),
        Command::NixHelper(helper) => run_nix_helper(helper),
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

fn run_build(args: BuildArgs) -> Result<()> {
    let (spec, spec_dir) = Spec::load(args.spec.as_deref())?;
    let spec = spec.with_overrides(Overrides {
        store_paths: args.store_paths,
        config_file: args.config,
        graph_file: args.graph,
        tag: args.tag,
        root_entries: args.roots,
        compression: args.compression,
        max_layers: args.max_layers,
        layering: args.strategy,
        created: args.created,
        mtime: args.mtime,
        architecture: args.architecture,
    })?;
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let destination = Destination::parse(&args.output);
    let writes_layout =
        args.format == Format::OciLayout && !matches!(destination, Destination::Stdout);
    let refs = parse_references(&args.push)?;
    if !refs.is_empty() && !writes_layout {
        return Err(anyhow!(
            "--push pushes the OCI layout it builds: use --format oci-layout -o DIR"
        ));
    }
    let push_options = args.registry.options(args.quiet, None)?;
    let streams = match refs.first() {
        Some(first) => Some(Arc::new(Streams::connect(first, &push_options)?)),
        None => None,
    };
    if args.sbom.is_some() && !writes_layout {
        return Err(anyhow!(
            "--sbom keeps the bill of materials in an OCI layout: use --format oci-layout -o DIR"
        ));
    }
    let summary = build::build(BuildRequest {
        spec,
        spec_dir,
        format: args.format,
        archive_compression: args.archive_compression,
        destination: destination.clone(),
        force: args.force,
        cache: args.cache.clone(),
        streams: streams
            .clone()
            .map(|s| s as Arc<dyn nixoci::layer::BlobStreams + Send>),
        jobs,
        progress: Progress::from_quiet(args.quiet),
    });
    // The uploads end either way: a failed build's are cancelled.
    let streamed = streams.map(|s| s.finish(summary.is_ok()));
    let summary = summary?;
    if let (Some(format), Destination::Path(layout)) = (args.sbom, &destination) {
        nixoci::sbom::attach_to_build(layout, &summary, format)?;
    }
    if !args.quiet && !args.json {
        eprintln!(
            "built {} ({} layers) {} -> {}",
            summary.reference,
            summary.layers.len(),
            summary.digest,
            args.output
        );
    }
    let pushed = match (&destination, streamed) {
        (Destination::Path(layout), Some(streamed)) => {
            for why in &streamed.abandoned {
                eprintln!("nixoci: a layer's upload during the build failed ({why}); it is pushed after the build instead");
            }
            if !args.quiet && !streamed.uploaded.is_empty() {
                eprintln!(
                    "uploaded {} layer(s), {} bytes, while they were compressed",
                    streamed.uploaded.len(),
                    streamed.bytes_uploaded
                );
            }
            Some((
                streamed,
                registry::push(Path::new(layout), &refs, &push_options)?,
            ))
        }
        _ => None,
    };
    if args.json {
        let text = match pushed {
            Some((streamed, push)) => serde_json::to_string_pretty(
                &serde_json::json!({"build": summary, "streamed": streamed, "push": push}),
            )?,
            None => serde_json::to_string_pretty(&summary)?,
        };
        match destination {
            Destination::Stdout => eprintln!("{text}"),
            Destination::Path(_) => println!("{text}"),
        }
    }
    Ok(())
}

fn run_plan(args: PlanArgs) -> Result<()> {
    let mut closure = closure::read_graph_file(&args.graph, &args.store_dir)?;
    if args.strategy == Strategy::Auto || args.pipeline.is_some() {
        closure.fill_missing_sizes()?;
    }
    let plan = match &args.pipeline {
        Some(text) => layering::pipeline::run(
            &closure,
            &layering::pipeline::load(&serde_json::Value::String(text.clone()), None)?,
        )?,
        None => {
            let budget = layering::store_layer_budget(args.max_layers, 0)?;
            layering::plan(&closure, args.strategy, budget)
        }
    };
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, &plan)?;
    writeln!(out)?;
    Ok(())
}

fn run_pins_update(
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

fn run_push(args: PushArgs) -> Result<()> {
    let refs = parse_references(&args.refs)?;
    let summary = registry::push(
        &args.src,
        &refs,
        &args.registry.options(args.quiet, args.compression)?,
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    }
    Ok(())
}

fn run_verify(args: VerifyArgs) -> Result<()> {
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

fn run_cache_prune(cache: &std::path::Path, max_size: u64) -> Result<()> {
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

fn run_nix_helper(helper: NixHelper) -> Result<()> {
    use nixoci::nixlib;
    match helper {
        NixHelper::WriteJson { attrs, key, output } => nixlib::write_json(&attrs, &key, &output),
        NixHelper::Layer { attrs, output } => nixlib::layer(&attrs, &output),
        NixHelper::Registration { attrs, output } => nixlib::registration(&attrs, &output),
        NixHelper::LinkContents { output, paths } => nixlib::link_contents(&output, &paths),
        NixHelper::StreamScript { attrs, output } => {
            nixlib::stream_script(&attrs, &output, &std::env::current_exe()?)
        }
    }
}

fn run_sbom(args: SbomArgs) -> Result<()> {
    use nixoci::sbom;
    let sources = args
        .mirrors
        .iter()
        .map(|m| nixoci::verify::read_manifest(m))
        .collect::<Result<Vec<_>>>()?;
    let inventory = match &args.image {
        Some(image) => sbom::of_image(image, args.graph.as_deref(), &args.name, &sources)?,
        None => {
            let graph = args
                .graph
                .as_ref()
                .ok_or_else(|| anyhow!("name an image or give --graph"))?;
            sbom::of_graph(graph, &args.name, &sources)?
        }
    };
    let bytes = sbom::write(&inventory, args.format)?;
    if let (true, Some(image)) = (args.attach, &args.image) {
        // The artifact carries the image's time, never the wall clock.
        let digest = nixoci::output::attach_referrer(
            image,
            args.format.media_type(),
            &bytes,
            &inventory.created,
        )?;
        eprintln!("attached to {} as {digest}", image.display());
    }
    match &args.output {
        Some(file) => std::fs::write(file, &bytes)
            .with_context(|| format!("cannot write {}", file.display()))?,
        None if args.attach => {}
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(&bytes)?;
            writeln!(out)?;
        }
    }
    Ok(())
}

fn run_index(args: IndexArgs) -> Result<()> {
    let (name, tag) = nixoci::image::split_name_tag(&args.tag)?;
    let index = nixoci::image::Index::of(
        args.images
            .iter()
            .map(|p| nixoci::image::Image::open(p, None))
            .collect::<Result<Vec<_>>>()?,
    )?;
    let digest = nixoci::output::write_index(
        &index,
        &tag,
        &format!("{name}:{tag}"),
        &Destination::Path(args.output.clone()),
        args.force,
    )?;
    eprintln!(
        "indexed {} images ({}) -> {} ({digest})",
        index.images.len(),
        index
            .images
            .iter()
            .map(|i| i.platform_name())
            .collect::<Result<Vec<_>>>()?
            .join(", "),
        args.output.display()
    );
    Ok(())
}

fn run_check(args: CheckArgs) -> Result<()> {
    let report = nixoci::check::check_path(&args.image, args.reference.as_deref(), &args.writable)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    if report.ok {
        Ok(())
    } else {
        Err(anyhow!("{} failed its checks", args.image.display()))
    }
}

fn run_hash(cmd: HashCommand) -> Result<()> {
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
