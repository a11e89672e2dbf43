//! The build pipeline: [`resolve`] turns a spec into a [`ResolvedSpec`]
//! (closure, layer plan, root tree, every default filled in); [`build`]
//! then builds every layer in parallel, writes the layout that makes them an
//! [`Image`], and hands that image to `output` in the chosen format.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use serde_json::{json, Value};

use crate::closure::{self, Closure};
use crate::digest::Digest;
use crate::image::{self, ConfigInput, Image, Layer};
use crate::layer::explicit;
use crate::layer::rootfs::RootTree;
use crate::layer::tar::Owner;
use crate::layer::{self, LayerBlob, LayerOptions};
use crate::layering::{self, Strategy};
use crate::media::{self, Compression};
use crate::nix;
use crate::output::{self, Destination, Format, Staging};
use crate::progress::Progress;
use crate::spec::{GraphSource, Spec};

/// What to build (a spec, with the CLI's flags applied) and where it goes.
pub struct BuildRequest {
    pub spec: Spec,
    /// Directory relative graph paths in the spec are read from.
    pub spec_dir: Option<PathBuf>,
    pub format: Format,
    /// The whole archive's compression (archive formats only).
    pub archive_compression: Compression,
    pub destination: Destination,
    /// Replace an output that nixoci did not write (`--force`).
    pub force: bool,
    /// A layer cache directory (`--cache`).
    pub cache: Option<PathBuf>,
    /// Where layers the cache does not have also go while they are
    /// compressed (`--push`). Only the cache can tell a new layer from one a
    /// registry may hold already, so without a cache nothing is streamed.
    pub streams: Option<Arc<dyn layer::BlobStreams + Send>>,
    pub jobs: usize,
    pub progress: Progress,
}

/// What `--json` prints.
#[derive(Debug, Serialize)]
pub struct BuildSummary {
    pub reference: String,
    /// The manifest digest: what a registry will call the image.
    pub digest: Digest,
    pub config_digest: Digest,
    pub media_type: &'static str,
    pub layers: Vec<LayerBlob>,
    /// The closure the image holds (for its bill of materials).
    #[serde(skip)]
    pub closure: Vec<closure::PathInfo>,
}

/// The image's store closure: the graph, and which paths must be in it.
pub struct ResolvedClosure {
    pub closure: Closure,
    pub config_paths: Vec<String>,
}

/// Store paths a config names (Entrypoint, Env values, …).
pub fn config_store_paths(config: &Value, store_dir: &str) -> Vec<String> {
    let mut strings = Vec::new();
    image::json_strings(config, &mut strings);
    let mut paths: Vec<String> = strings
        .iter()
        .flat_map(|s| nix::store_paths_in(store_dir, s))
        .collect();
    paths.sort();
    paths.dedup();
    paths
}

/// Loads the closure from the spec's graph (or the local store) and checks
/// that every root is in it and every path is on disk.
pub fn resolve_closure(
    spec: &Spec,
    spec_dir: Option<&std::path::Path>,
    roots: &[String],
    config_paths: &[String],
) -> Result<Closure> {
    let store_dir = spec.store_dir.as_deref().unwrap_or(nix::DEFAULT_STORE_DIR);
    let mut closure = match spec.graph_source(spec_dir) {
        GraphSource::File(file) => closure::read_graph_file(&file, store_dir)?,
        GraphSource::Inline(value) => {
            let nodes = closure::nodes_from_json(&value, "spec graph")?;
            Closure::from_nodes(nodes, store_dir, "spec graph")?
        }
        GraphSource::LocalStore => {
            if roots.is_empty() {
                return Ok(Closure::default());
            }
            closure::read_from_store(roots, store_dir)?
        }
    };
    for root in roots {
        if !closure.contains(root) {
            let why = if config_paths.contains(root) {
                "the image config names it (an entrypoint or Env value outside the image would not start)"
            } else {
                "it is in contents or a root entry"
            };
            bail!("{root} is not in the closure graph, but {why}");
        }
    }
    let missing: Vec<&str> = closure
        .nodes()
        .iter()
        .map(|n| n.path.as_str())
        .filter(|p| fs::symlink_metadata(p).is_err())
        .collect();
    if !missing.is_empty() {
        bail!(
            "the closure graph names {} path(s) that are not in the store: {}",
            missing.len(),
            missing
                .iter()
                .take(5)
                .copied()
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    closure.fill_missing_sizes()?;
    Ok(closure)
}

/// The mtime and owner fields of store-path layers, from the spec.
fn store_owner(spec: &Spec) -> Result<Owner> {
    let mtime = image::resolve_time(spec.mtime.as_deref().unwrap_or(image::DEFAULT_CREATED))?;
    Ok(Owner {
        mtime: u64::try_from(mtime).map_err(|_| anyhow!("mtime may not be before 1970"))?,
        uid: spec.uid.unwrap_or(0),
        gid: spec.gid.unwrap_or(0),
        uname: spec.uname.clone().unwrap_or_else(|| "root".into()),
        gname: spec.gname.clone().unwrap_or_else(|| "root".into()),
    })
}

/// Builds one layer as an output of its own (the Nix library's `buildLayer`):
/// the closure of the spec's `contents` less what its `layers` cover, into
/// `out/blob` and `out/meta.json`.
pub fn build_layer_output(
    spec: &Spec,
    spec_dir: Option<&std::path::Path>,
    out: &std::path::Path,
) -> Result<()> {
    let store_dir = spec.store_dir.as_deref().unwrap_or(nix::DEFAULT_STORE_DIR);
    let (_, covered) = explicit::read_all(store_dir, &spec.layers)?;
    let closure = resolve_closure(spec, spec_dir, &spec.contents, &[])?.without(&covered);
    let mut paths: Vec<String> = closure.nodes().iter().map(|n| n.path.clone()).collect();
    paths.sort();
    let expected: Vec<Option<nix::Hash>> = paths
        .iter()
        .map(|p| closure.get(p).and_then(|n| n.nar_hash.clone()))
        .collect();
    let size = closure.nodes().iter().map(|n| n.nar_size).sum();
    let owner = store_owner(spec)?;
    let compression = spec.compression.unwrap_or(Compression::Gzip);
    let threads = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .build()
            .context("cannot start compression threads")?,
    );
    fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let blob = layer::build_store_layer(
        0,
        &paths,
        &expected,
        size,
        &owner,
        &LayerOptions {
            compression,
            threads: &threads,
            blob_dir: out,
            on_bytes: &|_| {},
            streams: None,
        },
    )?;
    fs::rename(&blob.file, out.join("blob"))?;
    let mut covers = paths.clone();
    covers.extend(covered);
    covers.sort();
    covers.dedup();
    let meta = explicit::Meta {
        digest: blob.digest,
        diff_id: blob.diff_id,
        size: blob.size,
        media_type: compression.media_type().to_string(),
        store_paths: paths,
        covers,
    };
    fs::write(out.join("meta.json"), serde_json::to_vec_pretty(&meta)?)?;
    Ok(())
}

/// Everything but the layers: closure, plan and root tree.
pub struct Prepared {
    pub closure: Closure,
    pub plan: layering::Plan,
    pub tree: RootTree,
    pub config: serde_json::Map<String, Value>,
}

/// `fixed_layers` is how many layers a base image and explicit layers bring
/// (they count against `maxLayers`, as in nixpkgs); `covered` are the store
/// paths the explicit layers hold, which the plan leaves out.
pub fn prepare(
    spec: &Spec,
    spec_dir: Option<&std::path::Path>,
    fixed_layers: usize,
    covered: &[String],
) -> Result<Prepared> {
    let store_dir = spec.store_dir.as_deref().unwrap_or(nix::DEFAULT_STORE_DIR);
    let config_value = spec.config.clone().unwrap_or(Value::Null);
    let config = image::validate_config(&config_value, "config")?;
    let config_paths = config_store_paths(&config_value, store_dir);

    let mut tree = RootTree::new(store_dir);
    for content in &spec.contents {
        nix::validate_store_path(store_dir, content).map_err(|e| anyhow!("contents: {e}"))?;
        tree.merge_content(std::path::Path::new(content))?;
    }
    for extra in &spec.extra_roots {
        tree.overlay(std::path::Path::new(extra))?;
    }
    for entry in &spec.root_entries {
        tree.apply(entry)?;
    }

    let include = spec.include_store_paths.unwrap_or(true);
    let mut roots: Vec<String> = Vec::new();
    if include {
        roots.extend(spec.contents.iter().cloned());
        roots.extend(config_paths.iter().cloned());
        roots.extend(tree.store_references());
        roots.sort();
        roots.dedup();
    }
    let closure = if include {
        resolve_closure(spec, spec_dir, &roots, &config_paths)?
            .without(&spec.exclude_paths)
            .without(covered)
    } else {
        Closure::default()
    };
    let plan = match &spec.layering_pipeline {
        // As in nixpkgs, a pipeline makes the store layers itself: maxLayers
        // and the base image's layers are not counted against it. It runs on
        // an empty closure too, where nixpkgs refuses what it refuses anyway.
        Some(pipeline) => {
            layering::pipeline::run(&closure, &layering::pipeline::load(pipeline, spec_dir)?)?
        }
        None => {
            let budget =
                layering::store_layer_budget(spec.max_layers.unwrap_or(100), fixed_layers)?;
            layering::plan(&closure, spec.layering.unwrap_or(Strategy::Auto), budget)
        }
    };
    if spec.debug == Some(true) {
        for (i, layer) in plan.iter().enumerate() {
            eprintln!("store layer {}: {layer:?}", i + 1);
        }
    }
    Ok(Prepared {
        closure,
        plan,
        tree,
        config,
    })
}

/// A spec resolved once, before any layer is built: the base image and the
/// explicit layers opened, the closure planned into layers, and every
/// default filled in.
pub struct ResolvedSpec {
    pub prepared: Prepared,
    pub base: Option<Image>,
    pub explicit: Vec<explicit::ExplicitLayer>,
    pub tag: String,
    /// `name:tag`, the name lower-cased as registries want it.
    pub reference: String,
    /// RFC 3339.
    pub created: String,
    pub architecture: String,
    /// The mtime and owner fields of store-path entries.
    pub store_owner: Owner,
    pub compression: Compression,
}

/// Resolves `spec` (relative paths from `spec_dir`) for an output `format`.
pub fn resolve(spec: &Spec, spec_dir: Option<&Path>, format: Format) -> Result<ResolvedSpec> {
    let base = match &spec.from_image {
        Some(path) => Some(
            Image::open(Path::new(path), None)
                .with_context(|| format!("cannot open fromImage {path}"))?,
        ),
        None => None,
    };
    let store_dir = spec.store_dir.as_deref().unwrap_or(nix::DEFAULT_STORE_DIR);
    let (explicit, covered) = explicit::read_all(store_dir, &spec.layers)?;
    if !explicit.is_empty() && format == Format::DockerArchive {
        bail!("explicit layers are compressed blobs: build an OCI layout or oci-archive with them");
    }
    let mut prepared = prepare(
        spec,
        spec_dir,
        base.as_ref().map_or(0, |b| b.layers.len()) + explicit.len(),
        &covered,
    )?;
    if let Some(base) = &base {
        merge_base_env(&mut prepared.config, &base.config);
    }
    let created_text = spec.created.as_deref().unwrap_or(image::DEFAULT_CREATED);
    let name = spec
        .name
        .clone()
        .unwrap_or_else(|| "nixoci-image".into())
        .to_lowercase();
    let tag = spec.tag.clone().unwrap_or_else(|| "latest".into());
    Ok(ResolvedSpec {
        prepared,
        base,
        explicit,
        reference: format!("{name}:{tag}"),
        tag,
        created: image::format_rfc3339(image::resolve_time(created_text)?),
        architecture: spec
            .architecture
            .clone()
            .unwrap_or_else(|| image::host_architecture().to_string()),
        store_owner: store_owner(spec)?,
        compression: match format {
            // docker-archive holds uncompressed layers, as `docker save` writes them.
            Format::DockerArchive => Compression::None,
            _ => spec.compression.unwrap_or(Compression::Gzip),
        },
    })
}

/// Builds the image the request describes and writes it out.
pub fn build(req: BuildRequest) -> Result<BuildSummary> {
    let resolved = resolve(&req.spec, req.spec_dir.as_deref(), req.format)?;
    let staging = Staging::new(&req.destination, req.force)?;
    // Layers run on `jobs` threads, biggest first; their compression runs on
    // another `jobs` threads, so that one big layer still gets every core.
    let compress_threads = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(req.jobs)
            .thread_name(|i| format!("nixoci-compress-{i}"))
            .build()
            .context("cannot start compression threads")?,
    );
    let layers = build_layers(&resolved, &staging.blob_dir()?, &req, &compress_threads)?;
    let (image, config_digest, manifest_digest) =
        write_layout(&resolved, &layers, &staging.layout_dir())?;
    output::emit(
        &image,
        &output::Target {
            format: req.format,
            reference: &resolved.reference,
            mtime: resolved.store_owner.mtime,
            archive: output::ArchiveCompression {
                kind: req.archive_compression,
                threads: &compress_threads,
                zstd_workers: req.jobs as u32,
            },
        },
        &staging,
        &req.destination,
    )?;
    Ok(BuildSummary {
        reference: resolved.reference,
        digest: manifest_digest,
        config_digest,
        media_type: media::MANIFEST,
        layers,
        closure: resolved.prepared.closure.nodes().to_vec(),
    })
}

/// Every layer of the image into `blob_dir`, bottom to top: the base
/// image's, the explicit layers, then the planned store layers and the
/// customisation layer (built in parallel, biggest first, through the cache
/// when there is one).
fn build_layers(
    resolved: &ResolvedSpec,
    blob_dir: &Path,
    req: &BuildRequest,
    compress_threads: &Arc<rayon::ThreadPool>,
) -> Result<Vec<LayerBlob>> {
    let prepared = &resolved.prepared;
    let compression = resolved.compression;
    let store_owner = &resolved.store_owner;
    let root_owner = Owner::numeric_root(store_owner.mtime);

    let total: u64 = prepared.closure.nodes().iter().map(|n| n.nar_size).sum();
    let bars = req.progress.start(total, prepared.plan.len() as u64 + 1);
    let on_bytes = |n: u64| bars.bytes(n);
    let opts = LayerOptions {
        compression,
        threads: compress_threads,
        blob_dir,
        on_bytes: &on_bytes,
        streams: None,
    };
    let new_layer_opts = LayerOptions {
        streams: req.streams.as_deref().map(|s| s as &dyn layer::BlobStreams),
        ..opts
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(req.jobs)
        .build()
        .context("cannot start worker threads")?;
    let cache = req
        .cache
        .as_deref()
        .map(layer::cache::LayerCache::open)
        .transpose()?;
    let store_layer_count = prepared.plan.len();
    let layer_size = |i: usize| -> u64 {
        prepared.plan.get(i).map_or(0, |paths| {
            paths
                .iter()
                .filter_map(|p| prepared.closure.get(p))
                .map(|n| n.nar_size)
                .sum()
        })
    };
    let mut order: Vec<usize> = (0..=store_layer_count).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(layer_size(i)));
    let slots: Vec<Mutex<Option<Result<LayerBlob>>>> =
        (0..=store_layer_count).map(|_| Mutex::new(None)).collect();
    pool.scope_fifo(|scope| {
        for &i in &order {
            let (slots, opts, new_layer_opts, bars, root_owner, cache) =
                (&slots, &opts, &new_layer_opts, &bars, &root_owner, &cache);
            let size = layer_size(i);
            scope.spawn_fifo(move |_| {
                let blob = if i < store_layer_count {
                    let paths = &prepared.plan[i];
                    let expected: Vec<Option<nix::Hash>> = paths
                        .iter()
                        .map(|p| prepared.closure.get(p).and_then(|n| n.nar_hash.clone()))
                        .collect();
                    let key = cache.as_ref().and_then(|_| {
                        layer::cache::LayerCache::key(paths, &expected, compression, store_owner)
                    });
                    match (cache, key) {
                        (Some(cache), Some(key)) => {
                            match cache.get(&key, paths, opts.blob_dir, compression) {
                                Some(hit) => {
                                    bars.bytes(size);
                                    Ok(hit)
                                }
                                None => layer::build_store_layer(
                                    i,
                                    paths,
                                    &expected,
                                    size,
                                    store_owner,
                                    new_layer_opts,
                                )
                                .map(|blob| {
                                    cache.put(&key, &blob);
                                    LayerBlob {
                                        cache: Some("miss"),
                                        ..blob
                                    }
                                }),
                            }
                        }
                        (cache, _) => {
                            layer::build_store_layer(i, paths, &expected, size, store_owner, opts)
                                .map(|blob| LayerBlob {
                                    cache: cache.as_ref().map(|_| "uncached"),
                                    ..blob
                                })
                        }
                    }
                } else {
                    layer::build_root_layer(i, &prepared.tree, root_owner, opts).map(|blob| {
                        LayerBlob {
                            cache: cache.as_ref().map(|_| "uncached"),
                            ..blob
                        }
                    })
                };
                bars.layer_done();
                *slots[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(blob);
            });
        }
    });
    let mut layers: Vec<LayerBlob> = slots
        .into_iter()
        .map(|slot| {
            slot.into_inner()
                .unwrap_or_else(|p| p.into_inner())
                .unwrap_or_else(|| Err(anyhow!("a layer was not built")))
        })
        .collect::<Result<Vec<_>>>()?;
    bars.finish();
    // Bottom to top: the base image, the explicit layers, the planned ones.
    let mut all = match &resolved.base {
        Some(base) => base_layers(base, blob_dir, compression == Compression::None)?,
        None => Vec::new(),
    };
    for layer in &resolved.explicit {
        all.push(layer.link_into(blob_dir)?);
    }
    all.append(&mut layers);
    Ok(all)
}

/// The config, the manifest and `index.json` for `layers`, written into the
/// staging `layout`: the finished image, with its config's and manifest's
/// digests.
fn write_layout(
    resolved: &ResolvedSpec,
    layers: &[LayerBlob],
    layout: &Path,
) -> Result<(Image, Digest, Digest)> {
    let blob_dir = layout.join("blobs/sha256");
    let config_bytes = image::config_json(
        &ConfigInput {
            config: &resolved.prepared.config,
            architecture: &resolved.architecture,
            created: &resolved.created,
        },
        layers,
    );
    let config_digest = output::write_blob(&blob_dir, &config_bytes)?;
    let image = Image::written(
        config_bytes,
        layers.iter().map(Layer::from).collect(),
        layout,
    )?;
    let (manifest_bytes, _) = image.manifest();
    let manifest_digest = output::write_blob(&blob_dir, &manifest_bytes)?;
    let manifest_desc = image::descriptor(
        media::MANIFEST,
        &manifest_digest,
        manifest_bytes.len() as u64,
    );
    output::finish_layout(
        layout,
        &image::index_json(manifest_desc, &resolved.tag, &resolved.reference),
    )?;
    Ok((image, config_digest, manifest_digest))
}

/// nixpkgs' Env merge with a base image: base Env then ours, one entry per
/// variable, the last value winning at the position of the first.
fn merge_base_env(config: &mut serde_json::Map<String, Value>, base: &Value) {
    let strings = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let all: Vec<String> = strings(base["config"].get("Env"))
        .into_iter()
        .chain(strings(config.get("Env")))
        .collect();
    if all.is_empty() {
        return;
    }
    let mut merged: Vec<(String, String)> = Vec::new();
    for entry in all {
        let key = entry.split('=').next().unwrap_or_default().to_string();
        match merged.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = entry,
            None => merged.push((key, entry)),
        }
    }
    config.insert(
        "Env".into(),
        json!(merged.into_iter().map(|(_, e)| e).collect::<Vec<_>>()),
    );
}

/// The base image's layers, copied into the new image as they are (or
/// decompressed, for an uncompressed output), with its diff_ids.
fn base_layers(
    base: &Image,
    blob_dir: &std::path::Path,
    uncompressed: bool,
) -> Result<Vec<LayerBlob>> {
    let diff_ids = base.diff_ids().context("fromImage")?;
    base.layers
        .iter()
        .zip(diff_ids)
        .map(|(layer, diff_id)| {
            let compressed = layer.media_type.contains("gzip") || layer.media_type.contains("zstd");
            if uncompressed && compressed {
                let dest = blob_dir.join(diff_id.hex());
                let mut reader = base.layer_reader(layer)?;
                let mut out = layer::HashingWriter::new(
                    fs::File::create(&dest)?,
                    crate::digest::BackgroundSha256::spawn()?,
                );
                std::io::copy(&mut reader, &mut out)?;
                let (_, digest, size) = out.finish()?;
                if digest.as_ref() != Some(&diff_id) {
                    bail!("fromImage: a layer does not match its diff_id {diff_id}");
                }
                return Ok(LayerBlob {
                    digest: diff_id.clone(),
                    diff_id,
                    size,
                    media_type: Compression::None.media_type(),
                    store_paths: vec![],
                    file: dest,
                    cache: None,
                });
            }
            layer.verify()?;
            let dest = blob_dir.join(layer.digest.hex());
            if fs::hard_link(&layer.file, &dest).is_err() {
                fs::copy(&layer.file, &dest)
                    .with_context(|| format!("cannot copy base layer {}", layer.digest))?;
            }
            let media_type = match layer.media_type.as_str() {
                t if t.contains("gzip") => Compression::Gzip.media_type(),
                t if t.contains("zstd") => Compression::Zstd.media_type(),
                _ => Compression::None.media_type(),
            };
            Ok(LayerBlob {
                digest: layer.digest.clone(),
                diff_id,
                size: layer.size,
                media_type,
                store_paths: vec![],
                file: dest,
                cache: None,
            })
        })
        .collect()
}
