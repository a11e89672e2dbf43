//! gzip layers are 1 MiB gzip members compressed in parallel (see
//! `media::compress`). Readers nobody here wrote must read them whole: Go's
//! gzip (skopeo, umoci, podman, containerd), Python's `gzip`, GNU `gzip -t`
//! and `pigz -t`. Each decompresses to exactly the tar that the diff_id
//! names, at the sizes where members start and end, and for any `--jobs`.

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::{json, Value};
use sha2::Digest as _;

const BLOCK: usize = 1 << 20;

fn sha256(bytes: &[u8]) -> String {
    let hex: String = sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

/// Compressible, but not trivially: text lines with noise, as real files are.
fn content(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 64);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if x % 5 == 0 {
            out.extend_from_slice(&x.to_le_bytes());
        } else {
            writeln!(out, "/nix/store/{:016x}-lib/lib{}.so", x >> 20, x % 97).unwrap();
        }
    }
    out.truncate(len);
    out
}

/// Every outside reader decompresses `blob` to bytes whose sha256 is `diff_id`.
fn assert_every_reader_reads(blob: &Path, diff_id: &str, what: &str) {
    let python = stdout(Command::new("python3").args([
        "-c",
        "import gzip, hashlib, sys; print('sha256:' + hashlib.sha256(gzip.open(sys.argv[1]).read()).hexdigest())",
    ]).arg(blob));
    assert_eq!(python.trim(), diff_id, "{what}: Python's gzip");
    let gnu = sh(&format!(
        "gzip -t {0} && gzip -dc {0} | sha256sum",
        blob.display()
    ));
    assert_eq!(format!("sha256:{}", &gnu[..64]), diff_id, "{what}: gzip -d");
    run(Command::new("pigz").arg("-t").arg(blob));
    let pigz = sh(&format!("pigz -dc {} | sha256sum", blob.display()));
    assert_eq!(
        format!("sha256:{}", &pigz[..64]),
        diff_id,
        "{what}: pigz -d"
    );
}

/// Go's gzip: skopeo copies the image to a directory, decompressing every
/// layer; returns the decompressed layers' sha256, in manifest order.
fn skopeo_decompressed(source: &str, dir: &Path) -> Vec<String> {
    let out = dir.join("skopeo-dir");
    run(Command::new("skopeo").args([
        "copy",
        "-q",
        "--src-tls-verify=false",
        "--dest-decompress",
        source,
        &format!("dir:{}", out.display()),
    ]));
    let manifest = read_json(&out.join("manifest.json"));
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let digest = l["digest"].as_str().unwrap();
            let hex = digest.trim_start_matches("sha256:");
            sha256(&fs::read(out.join(hex)).unwrap())
        })
        .collect()
}

/// A docker-archive whose layers are exactly `layers` (plain bytes).
fn docker_archive(dir: &Path, layers: &[Vec<u8>]) -> PathBuf {
    let root = dir.join("archive");
    fs::create_dir_all(&root).unwrap();
    let mut names = vec![];
    for (i, layer) in layers.iter().enumerate() {
        let name = format!("{i}/layer.tar");
        fs::create_dir_all(root.join(i.to_string())).unwrap();
        fs::write(root.join(&name), layer).unwrap();
        names.push(name);
    }
    let diff_ids: Vec<String> = layers.iter().map(|l| sha256(l)).collect();
    let config = json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    fs::write(root.join("config.json"), config.to_string()).unwrap();
    fs::write(
        root.join("manifest.json"),
        json!([{"Config": "config.json", "RepoTags": ["edges:1"], "Layers": names}]).to_string(),
    )
    .unwrap();
    let archive = dir.join("edges.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&archive)
        .arg("."));
    archive
}

/// A tar of exactly `len` bytes (a multiple of 512, at least 1536): one
/// file, `name`, and the two zero blocks that end an archive.
fn tar_of_size(len: usize, name: &str, seed: u64) -> Vec<u8> {
    let data = content(len - 1536, seed);
    let mut header = tar::Header::new_ustar();
    header.set_path(name).unwrap();
    header.set_size(data.len() as u64);
    header.set_mode(0o444);
    header.set_cksum();
    let mut builder = tar::Builder::new(Vec::new());
    builder.append(&header, &data[..]).unwrap();
    let tar = builder.into_inner().unwrap();
    assert_eq!(tar.len(), len);
    tar
}

#[test]
fn layers_at_member_boundaries_are_read_by_every_reader() {
    let dir = tempdir();
    // Empty, one byte, exactly one member, one member and a byte, and
    // three whole members. Those that can be tars are (empty, one and
    // three members), so that umoci can unpack them too.
    let layers = vec![
        vec![],
        content(1, 2),
        tar_of_size(BLOCK, "one-member", 3),
        content(BLOCK + 1, 4),
        tar_of_size(3 * BLOCK, "three-members", 5),
    ];
    let diff_ids: Vec<String> = layers.iter().map(|l| sha256(l)).collect();
    let registry = Registry::start(Auth::Anonymous);
    let push = |name: &str, layers: &[Vec<u8>]| -> String {
        let archive = docker_archive(&dir.path().join(name), layers);
        let reference = format!("{}/gzip/{name}:1", registry.host());
        run(nixoci()
            .args(["push", "--insecure", "--compression", "gzip", "-q"])
            .arg(&archive)
            .arg(&reference));
        reference
    };
    let reference = push("edges", &layers);

    // Go's gzip, through skopeo.
    assert_eq!(
        skopeo_decompressed(&format!("docker://{reference}"), dir.path()),
        diff_ids,
        "skopeo --dest-decompress"
    );
    // The compressed blobs themselves, for the other readers.
    let raw = dir.path().join("raw");
    run(Command::new("skopeo").args([
        "copy",
        "-q",
        "--src-tls-verify=false",
        &format!("docker://{reference}"),
        &format!("dir:{}", raw.display()),
    ]));
    let manifest = read_json(&raw.join("manifest.json"));
    let blobs = manifest["layers"].as_array().unwrap();
    assert_eq!(blobs.len(), layers.len());
    for ((blob, diff_id), layer) in blobs.iter().zip(&diff_ids).zip(&layers) {
        assert_eq!(
            blob["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
        let hex = blob["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:");
        assert_every_reader_reads(&raw.join(hex), diff_id, &format!("{} bytes", layer.len()));
    }

    // Go's gzip in umoci, on the layers that are tars (the same blobs: the
    // compression is deterministic).
    let tars = push(
        "tars",
        &[layers[0].clone(), layers[2].clone(), layers[4].clone()],
    );
    let layout = dir.path().join("layout");
    run(Command::new("skopeo").args([
        "copy",
        "-q",
        "--src-tls-verify=false",
        &format!("docker://{tars}"),
        &format!("oci:{}:1", layout.display()),
    ]));
    let (tars_manifest, _) = layout_manifest(&layout);
    assert_eq!(tars_manifest["layers"][1]["digest"], blobs[2]["digest"]);
    assert_eq!(tars_manifest["layers"][2]["digest"], blobs[4]["digest"]);
    let bundle = Bundle::unpack(&layout, "1", dir.path());
    for (name, seed, len) in [("one-member", 3, BLOCK), ("three-members", 5, 3 * BLOCK)] {
        assert!(
            fs::read(bundle.rootfs().join(name)).unwrap() == content(len - 1536, seed),
            "{name} after umoci unpack"
        );
    }
}

/// A store of one path holding `mib` MiB in files of 7 MiB and less.
fn big_store(dir: &Path, mib: usize) -> (PathBuf, Value) {
    let store = dir.join("store");
    let path = store.join("0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b-big");
    fs::create_dir_all(path.join("lib")).unwrap();
    let mut left = mib * BLOCK;
    let mut i = 0;
    while left > 0 {
        let n = left.min(7 * BLOCK + 333);
        fs::write(path.join(format!("lib/part{i}.so")), content(n, 100 + i)).unwrap();
        left -= n;
        i += 1;
    }
    let graph = json!([{"path": path.display().to_string(), "references": []}]);
    (store, graph)
}

#[test]
fn a_300_mb_layer_is_read_by_every_reader_and_its_digest_does_not_depend_on_jobs() {
    let dir = tempdir();
    let (store, graph) = big_store(dir.path(), 300);
    let spec = dir.path().join("spec.json");
    fs::write(
        &spec,
        json!({"storeDir": store, "graph": graph, "name": "big", "tag": "1", "architecture": "amd64"})
            .to_string(),
    )
    .unwrap();
    let build = |jobs: &str| -> PathBuf {
        let out = dir.path().join(format!("layout-{jobs}"));
        run(nixoci()
            .args([
                "build",
                "--compression",
                "gzip",
                "-q",
                "--jobs",
                jobs,
                "--spec",
            ])
            .arg(&spec)
            .arg("-o")
            .arg(&out));
        out
    };
    let layout = build("2");
    let (manifest, config) = layout_manifest(&layout);
    for jobs in ["1", "8"] {
        let other = build(jobs);
        assert_eq!(
            layout_manifest(&other).0,
            manifest,
            "--jobs {jobs} gives other layer digests"
        );
        fs::remove_dir_all(other).unwrap();
    }
    let layers = manifest["layers"].as_array().unwrap();
    let diff_ids: Vec<String> = config["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_string())
        .collect();
    let (big, big_diff_id) = layers
        .iter()
        .zip(&diff_ids)
        .max_by_key(|(l, _)| l["size"].as_u64().unwrap())
        .unwrap();
    let blob = blob_path(&layout, big["digest"].as_str().unwrap());
    assert!(
        fs::metadata(&blob).unwrap().len() > 20 * BLOCK as u64,
        "the big layer is not big"
    );
    assert_every_reader_reads(&blob, big_diff_id, "300 MB");
    // Go's gzip twice: skopeo decompressing, and umoci unpacking, whose
    // files must be the store's.
    assert_eq!(
        skopeo_decompressed(&format!("oci:{}:1", layout.display()), dir.path()),
        diff_ids
    );
    let bundle = Bundle::unpack(&layout, "1", dir.path());
    let unpacked = bundle
        .rootfs()
        .join(store.strip_prefix("/").unwrap())
        .join("0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b-big/lib");
    let original = store.join("0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b-big/lib");
    let mut count = 0;
    for entry in fs::read_dir(&original).unwrap() {
        let name = entry.unwrap().file_name();
        assert!(
            fs::read(unpacked.join(&name)).unwrap() == fs::read(original.join(&name)).unwrap(),
            "{name:?} differs after umoci unpack"
        );
        count += 1;
    }
    assert_eq!(count, 43);
}

#[test]
fn podman_and_containerd_pull_a_pushed_gzip_image_and_run_it() {
    let a = authentik();
    let dir = tempdir();
    let config = dir.path().join("config.json");
    fs::write(
        &config,
        json!({"Entrypoint": [format!("{}/bin/sh", a.busybox), "-c", "echo pulled and running"]})
            .to_string(),
    )
    .unwrap();
    let registry = Registry::start(Auth::Anonymous);
    let reference = format!("{}/gzip/pull:1", registry.host());
    run(nixoci()
        .arg("build")
        .arg(&a.busybox)
        .arg("--config")
        .arg(&config)
        .args(["--compression", "gzip", "-q", "-o"])
        .arg(dir.path().join("layout"))
        .args(["--push", &reference, "--insecure"]));
    // busybox's layer spans several members.
    let (manifest, _) = layout_manifest(&dir.path().join("layout"));
    let biggest = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .max_by_key(|d| {
            fs::metadata(blob_path(&dir.path().join("layout"), d))
                .unwrap()
                .len()
        })
        .unwrap();
    let plain = stdout(
        Command::new("python3")
            .args([
                "-c",
                "import gzip, sys; print(len(gzip.open(sys.argv[1]).read()))",
            ])
            .arg(blob_path(&dir.path().join("layout"), &biggest)),
    );
    assert!(plain.trim().parse::<usize>().unwrap() > BLOCK, "{plain}");

    let podman_root = dir.path().join("podman");
    run(&mut podman(
        &podman_root,
        &["pull", "-q", "--tls-verify=false", &reference],
    ));
    // podman's default limits are above this machine's hard limits, and
    // raising them fails; lowering them is always allowed.
    let out = stdout(&mut podman(
        &podman_root,
        &[
            "run",
            "--rm",
            "--net",
            "none",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
            &reference,
        ],
    ));
    assert_eq!(out.trim(), "pulled and running", "podman");

    let containerd = Containerd::start();
    containerd.ctr(&["images", "pull", "--plain-http", &reference]);
    let id = format!("nixoci-{}", rand_suffix());
    let out = containerd.ctr(&["run", "--rm", &reference, &id]);
    assert_eq!(out.trim(), "pulled and running", "containerd");
}
