//! `nixoci build`: its arguments, and the build (with --push, the push after it).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, Result};
use clap::Args;

use nixoci::build::{self, BuildRequest};
use nixoci::layering::Strategy;
use nixoci::media::Compression;
use nixoci::output::{Destination, Format};
use nixoci::progress::Progress;
use nixoci::registry;
use nixoci::registry::stream::Streams;
use nixoci::spec::{Overrides, Spec};

use super::registry::{parse_references, RegistryArgs};

#[derive(Args)]
pub(crate) struct BuildArgs {
    /// Store paths to put in the image (merged into / like symlinkJoin; their closure is read from the local store).
    pub(crate) store_paths: Vec<String>,
    /// A spec file holding contents, config, root entries, options and the graph (see README).
    #[arg(long, value_name = "FILE")]
    pub(crate) spec: Option<PathBuf>,
    /// A closure graph file instead of reading the local store (exportReferencesGraph, classic or path-info JSON).
    #[arg(long, value_name = "FILE")]
    pub(crate) graph: Option<PathBuf>,
    /// Runtime config in nixpkgs' `config` shape: {"Entrypoint": […], "Env": […], …}.
    #[arg(long, value_name = "CONFIG.json")]
    pub(crate) config: Option<PathBuf>,
    /// Image name and tag; NAME alone means NAME:latest.
    #[arg(long, value_name = "NAME[:TAG]")]
    pub(crate) tag: Option<String>,
    /// Layer compression (docker-archive always stores plain tars).
    #[arg(long, value_enum)]
    pub(crate) compression: Option<Compression>,
    /// Output format.
    #[arg(long, value_enum, default_value = "oci-layout")]
    pub(crate) format: Format,
    /// Compress a docker-archive or oci-archive as a whole, as nixpkgs' `compressor` does
    /// (`gzip` gives `docker load`'s `.tar.gz`); deterministic for any --jobs.
    #[arg(long, value_enum, default_value = "none", value_name = "COMPRESSION")]
    pub(crate) archive_compression: Compression,
    /// Worker threads (default: all cores). Digests do not depend on it.
    #[arg(long, short = 'j')]
    pub(crate) jobs: Option<usize>,
    /// Layer budget including the customisation layer (nixpkgs' maxLayers).
    #[arg(long)]
    pub(crate) max_layers: Option<usize>,
    /// Layering strategy [default: auto, as nixpkgs since 25.05].
    #[arg(long, value_enum)]
    pub(crate) strategy: Option<Strategy>,
    /// A root entry: dir:PATH[:MODE], symlink:PATH:TARGET or file:PATH:SOURCE[:MODE]. Repeatable.
    #[arg(long = "root", value_name = "ENTRY")]
    pub(crate) roots: Vec<String>,
    /// Image creation time: RFC 3339, `now`, `SOURCE_DATE_EPOCH` or @SECONDS [default: 1970-01-01T00:00:01Z].
    #[arg(long)]
    pub(crate) created: Option<String>,
    /// mtime of every file in the layers (same forms as --created) [default: 1970-01-01T00:00:01Z].
    #[arg(long)]
    pub(crate) mtime: Option<String>,
    /// Image architecture [default: this machine's, e.g. amd64].
    #[arg(long)]
    pub(crate) architecture: Option<String>,
    /// Output path (`-` for stdout with the archive formats). An existing OCI layout or file there is replaced atomically; anything else is refused.
    #[arg(short = 'o', long = "output", value_name = "PATH")]
    pub(crate) output: String,
    /// Replace the output even if it is not an OCI layout or a file (a directory of yours is deleted).
    #[arg(long)]
    pub(crate) force: bool,
    /// Reuse store-path layers built before (keyed by paths, NAR hashes and options) from this directory.
    #[arg(long, env = "NIXOCI_CACHE", value_name = "DIR")]
    pub(crate) cache: Option<PathBuf>,
    /// No progress bars.
    #[arg(long, short = 'q')]
    pub(crate) quiet: bool,
    /// Print a JSON summary: image digest and each layer's digest, diff_id, size and store paths.
    #[arg(long)]
    pub(crate) json: bool,
    /// Keep a bill of materials of the closure in the OCI layout, as a referrer that `nixoci push` uploads.
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub(crate) sbom: Option<nixoci::sbom::Format>,
    #[command(flatten, next_help_heading = "Signing")]
    pub(crate) signing: super::sign::SignKeyArgs,
    /// With --sign-key: also attest the image's provenance (SLSA v1, in DSSE) from this
    /// derivation's graph, as `nixoci attest --drv` does; --graph gives the NAR hashes.
    #[arg(
        long,
        value_name = "DRV",
        requires = "sign_key",
        help_heading = "Signing"
    )]
    pub(crate) provenance: Option<String>,
    #[command(flatten, next_help_heading = "Signing")]
    pub(crate) provenance_args: super::sign::ProvenanceArgs,
    /// Push the built layout to REGISTRY/REPOSITORY:TAG, as `nixoci push` would (repeatable).
    /// With --cache, the layers the cache does not have (64 MiB and up) are uploaded to the first
    /// REF while they are compressed; the push after the build sends only what is still missing.
    #[arg(long = "push", value_name = "REF")]
    pub(crate) push: Vec<String>,
    #[command(flatten, next_help_heading = "Pushing (with --push)")]
    pub(crate) registry: RegistryArgs,
}

pub(crate) fn run(args: BuildArgs) -> Result<()> {
    // The provenance reads the NAR hashes from the same graph.
    let graph = args.graph.clone();
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
    let sign_key = args.signing.key()?;
    if sign_key.is_some() && !writes_layout {
        return Err(anyhow!(
            "--sign-key keeps the signatures in an OCI layout: use --format oci-layout -o DIR"
        ));
    }
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
    if let (Some(key), Destination::Path(layout)) = (&sign_key, &destination) {
        let target = nixoci::sign::target::Target::layout(Path::new(layout))?;
        let said = target.sign(key, args.signing.signature_format)?;
        if let Some(drv) = &args.provenance {
            let sources = args.provenance_args.sources(drv, graph.as_deref());
            let (_, attested) = target.attest(key, &sources, args.signing.signature_format)?;
            if !args.quiet {
                eprintln!("{attested}");
            }
        }
        if !args.quiet {
            eprintln!("{said}");
        }
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
