//! `nixoci build` options: the spec file, times, progress output, root
//! entries from JSON, and digests pinned for an input that is the same on
//! every machine.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::json;

#[test]
fn spec_file_builds_the_same_image_as_flags() {
    let f = fixture();
    let dir = tempdir();
    let config = json!({"Entrypoint": [format!("{}/bin/app", f.app)], "Env": ["A=1"]});
    fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    let by_flags = summary(&run(nixoci()
        .arg("build")
        .arg(&f.app)
        .arg("--config")
        .arg(dir.path().join("config.json"))
        .args([
            "--tag",
            "spec/test:2",
            "--root",
            "dir:/tmp:1777",
            "--max-layers",
            "3",
            "--strategy",
            "auto",
        ])
        .args([
            "--compression",
            "zstd",
            "--json",
            "--graph",
            &f.attrs_json,
            "-o",
        ])
        .arg(dir.path().join("a"))));
    // The same image described by a structured-attrs file, as the Nix library writes it.
    let mut attrs: serde_json::Value =
        serde_json::from_slice(&fs::read(&f.attrs_json).unwrap()).unwrap();
    attrs["nixoci"] = json!({
        "name": "spec/test", "tag": "2", "contents": [f.app], "config": config,
        "rootEntries": [{"type": "directory", "path": "/tmp", "mode": "1777"}],
        "maxLayers": 3, "layering": "auto", "compression": "zstd"
    });
    let spec = dir.path().join(".attrs.json");
    fs::write(&spec, attrs.to_string()).unwrap();
    let by_spec = summary(&run(nixoci()
        .arg("build")
        .arg("--spec")
        .arg(&spec)
        .args(["--json", "-o"])
        .arg(dir.path().join("b"))));
    assert_eq!(by_spec["digest"], by_flags["digest"]);
    assert_eq!(
        by_spec["layers"].as_array().unwrap().len(),
        3,
        "maxLayers counts the customisation layer"
    );

    // A typo in a spec is an error, not silently ignored.
    fs::write(
        &spec,
        json!({"contents": [f.app], "maxLayer": 3}).to_string(),
    )
    .unwrap();
    let err = fails(
        nixoci()
            .arg("build")
            .arg("--spec")
            .arg(&spec)
            .arg("-o")
            .arg(dir.path().join("c")),
    );
    assert!(err.contains("unknown field `maxLayer`"), "{err}");
}

#[test]
fn created_takes_now_source_date_epoch_and_rfc3339() {
    let f = fixture();
    let dir = tempdir();
    let created = |value: &str, env: Option<&str>| {
        let out = dir.path().join(format!("img-{}", value.replace(':', "-")));
        let mut cmd = nixoci();
        cmd.arg("build")
            .arg(&f.app)
            .args(["--created", value, "-q", "-o"])
            .arg(&out);
        if let Some(e) = env {
            cmd.env("SOURCE_DATE_EPOCH", e);
        }
        run(&mut cmd);
        let (_, config) = layout_manifest(&out);
        config["created"].as_str().unwrap().to_string()
    };
    assert_eq!(
        created("SOURCE_DATE_EPOCH", Some("315532800")),
        "1980-01-01T00:00:00Z"
    );
    assert_eq!(
        created("2026-03-01T15:44:00+01:00", None),
        "2026-03-01T14:44:00Z"
    );
    let now = created("now", None);
    assert!(
        now.as_str() > "2026-01-01" && now != "1970-01-01T00:00:01Z",
        "{now}"
    );
    let err = fails(
        nixoci()
            .arg("build")
            .arg(&f.app)
            .args(["--created", "SOURCE_DATE_EPOCH", "-o"])
            .arg(dir.path().join("x"))
            .env_remove("SOURCE_DATE_EPOCH"),
    );
    assert!(err.contains("SOURCE_DATE_EPOCH is not set"), "{err}");
    // Times that image tools could not read back are refused.
    for bad in [
        "@-99999999999",
        "@99999999999999",
        "2026-03-01T15:44:00+99:99",
        "2026-03-01T15:44:00+01:60",
        "0000-01-01T00:00:00Z",
    ] {
        let err = fails(
            nixoci()
                .arg("build")
                .arg(&f.app)
                .args(["--created", bad, "-o"])
                .arg(dir.path().join("x")),
        );
        assert!(err.contains(bad), "{bad}: {err}");
    }
}

#[test]
fn progress_bars_on_a_terminal_and_silence_elsewhere() {
    let f = fixture();
    let dir = tempdir();
    let log = dir.path().join("typescript");
    let cmd = format!(
        "{} build {} -o {}",
        env!("CARGO_BIN_EXE_nixoci"),
        f.app,
        dir.path().join("tty").display()
    );
    run(Command::new("script").args(["-qec", &cmd]).arg(&log));
    let screen = String::from_utf8_lossy(&fs::read(&log).unwrap()).into_owned();
    assert!(
        screen.contains("/3 layers") && screen.contains("KiB"),
        "no progress on a terminal: {screen}"
    );

    let out = run(nixoci()
        .arg("build")
        .arg(&f.app)
        .arg("-o")
        .arg(dir.path().join("pipe")));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("/3 layers") && !stderr.contains('\x1b'),
        "progress on a pipe: {stderr}"
    );
    let quiet = run(nixoci()
        .arg("build")
        .arg(&f.app)
        .arg("-q")
        .arg("-o")
        .arg(dir.path().join("quiet")));
    assert!(quiet.stderr.is_empty() && quiet.stdout.is_empty());
}

/// A tiny store under a fixed path, made the same way on every machine.
fn fixed_store() -> (std::path::PathBuf, serde_json::Value) {
    let store = Path::new("/tmp/nixoci-golden/store");
    let _ = fs::remove_dir_all("/tmp/nixoci-golden");
    let a = store.join("0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a-golden-a");
    let b = store.join("1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b-golden-b");
    fs::create_dir_all(a.join("share")).unwrap();
    fs::create_dir_all(b.join("bin")).unwrap();
    let text: String = (0..20000)
        .map(|i| format!("line {i} of a file that compresses\n"))
        .collect();
    fs::write(a.join("share/data.txt"), text).unwrap();
    fs::write(b.join("bin/tool"), "#!/bin/sh\necho tool\n").unwrap();
    std::os::unix::fs::symlink(a.join("share/data.txt"), b.join("data")).unwrap();
    for (p, mode) in [
        (a.join("share/data.txt"), 0o444),
        (b.join("bin/tool"), 0o555),
        (a.join("share"), 0o555),
        (a.clone(), 0o555),
        (b.join("bin"), 0o555),
        (b.clone(), 0o555),
    ] {
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
    }
    let graph = json!([
        {"path": b.display().to_string(), "references": [a.display().to_string()]},
        {"path": a.display().to_string(), "references": []},
    ]);
    (store.to_path_buf(), graph)
}

/// sha256 (hex) of a file's bytes, computed here, not by nixoci.
fn file_sha256(path: &Path) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(fs::read(path).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every byte nixoci writes for one fixed input, pinned: layers, configs
/// and manifests in each compression, the archives, a two-platform index and
/// both bills of materials. The pins were computed with the release before
/// the image-model redesign, so the redesign provably changed no byte; a
/// change here means every user's images change too.
#[test]
fn digests_are_pinned_for_a_fixed_input_in_every_format() {
    let (store, graph) = fixed_store();
    let dir = tempdir();
    let build = |name: &str, spec: serde_json::Value, args: &[&str]| -> std::path::PathBuf {
        let mut spec = spec;
        spec["storeDir"] = json!(store);
        spec["tag"] = json!("1");
        if spec.get("graph").is_none() {
            spec["graph"] = graph.clone();
        }
        let spec_file = dir.path().join(format!("{name}.json"));
        fs::write(&spec_file, spec.to_string()).unwrap();
        let out = dir.path().join(name);
        run(nixoci()
            .arg("build")
            .arg("--spec")
            .arg(&spec_file)
            .args(args)
            .args(["--json", "-q", "-o"])
            .arg(&out));
        out
    };
    let mut pins: Vec<(String, String)> = Vec::new();
    for compression in ["gzip", "zstd", "none"] {
        let layout = build(
            compression,
            json!({"compression": compression, "architecture": "amd64"}),
            &[],
        );
        let (manifest, _) = layout_manifest(&layout);
        let index = read_json(&layout.join("index.json"));
        for layer in manifest["layers"].as_array().unwrap()[..2].iter() {
            pins.push((
                format!("{compression} layer"),
                layer["digest"].as_str().unwrap().into(),
            ));
        }
        pins.push((
            format!("{compression} config"),
            manifest["config"]["digest"].as_str().unwrap().into(),
        ));
        pins.push((
            format!("{compression} manifest"),
            index["manifests"][0]["digest"].as_str().unwrap().into(),
        ));
    }
    for (format, archive) in [
        ("docker-archive", "none"),
        ("docker-archive", "gzip"),
        ("docker-archive", "zstd"),
        ("oci-archive", "none"),
    ] {
        let file = build(
            &format!("{format}-{archive}"),
            json!({"architecture": "amd64"}),
            &["--format", format, "--archive-compression", archive],
        );
        pins.push((format!("{format} {archive}"), file_sha256(&file)));
    }
    let arm = build("arm64", json!({"architecture": "arm64"}), &[]);
    let both = dir.path().join("index");
    run(nixoci()
        .args(["index", "--tag", "golden:1", "-o"])
        .arg(&both)
        .arg(dir.path().join("gzip"))
        .arg(&arm));
    pins.push((
        "index".into(),
        read_json(&both.join("index.json"))["manifests"][0]["digest"]
            .as_str()
            .unwrap()
            .into(),
    ));
    // A bill of materials lists NAR hashes: the graph gets Nix's own.
    let mut hashed = graph.clone();
    for node in hashed.as_array_mut().unwrap() {
        let hash = stdout(
            Command::new("nix-hash")
                .args(["--type", "sha256", "--base32"])
                .arg(node["path"].as_str().unwrap()),
        );
        node["narHash"] = json!(format!("sha256:{}", hash.trim()));
    }
    for format in ["cyclonedx", "spdx"] {
        // The layout's index.json names the image and its SBOM referrer.
        let layout = build(
            &format!("sbom-{format}"),
            json!({"architecture": "amd64", "graph": hashed}),
            &["--sbom", format],
        );
        pins.push((
            format!("{format} sbom"),
            file_sha256(&layout.join("index.json")),
        ));
    }
    let pinned: Vec<(&str, &str)> = vec![
        (
            "gzip layer",
            "sha256:f4dbc9513fb9eb8ea54892a945f26fc2b1a85076483a85b0c09a1ff435fb48d6",
        ),
        (
            "gzip layer",
            "sha256:5e0243e9ed93b607005bc0a00205c03ff6bfe5a539f56c186e889b2e157eca6b",
        ),
        (
            "gzip config",
            "sha256:9899d417a3e0772e987360adfd9fb535d78541896e36ae86180b8e9a0b06fb2c",
        ),
        (
            "gzip manifest",
            "sha256:fea3e77e114cc28c1eae467fcf123a6c4df8345e8a5cda7be2e500ad60ee0620",
        ),
        (
            "zstd layer",
            "sha256:99bcd5c0709e0a65ad452ae491f5e7dc893dd7878849a293eed3ad39f2e97116",
        ),
        (
            "zstd layer",
            "sha256:d98cad7d223ce37bac81fbb34626573c8dfcb80d5fd42826b70cea01e1c90dc1",
        ),
        (
            "zstd config",
            "sha256:9899d417a3e0772e987360adfd9fb535d78541896e36ae86180b8e9a0b06fb2c",
        ),
        (
            "zstd manifest",
            "sha256:568da6eae4def9ea69dfeb5c7585a635b9cd76b112b2165f329eb517cbb6cde9",
        ),
        (
            "none layer",
            "sha256:c7cfd5c9957a19cf86fbe1aaafa1b009e4c5e2f66d92384512d6f67cb60a1423",
        ),
        (
            "none layer",
            "sha256:c81c4614c287fc0f1bc2c9b4cdf2a8207191fc253d3b0bdc71e43bd0383e74c0",
        ),
        (
            "none config",
            "sha256:9899d417a3e0772e987360adfd9fb535d78541896e36ae86180b8e9a0b06fb2c",
        ),
        (
            "none manifest",
            "sha256:df911a3348a951119f955c3e86e461be99d85b2260fa29c7a650d701b1dc2bc9",
        ),
        (
            "docker-archive none",
            "cd110ff6e3634a888fd91dd88fc203b1dc7b793bbdebefbcc7ff4d63c13e86e6",
        ),
        (
            "docker-archive gzip",
            "114c60fd1038029a7a6ef68c264599f68d17d4d4509225a5b14f4f9d63d99d75",
        ),
        (
            "docker-archive zstd",
            "b9467cd5e6083edc5ef44f9c42d47d95548b22e494c78d7c74bd58fafbd85d17",
        ),
        (
            "oci-archive none",
            "6e797c2bd202193d2836451381fbefcf46e7fff5ae4dae899624db36cd0b5e2a",
        ),
        (
            "index",
            "sha256:a15909a189ed06c7c5ffb84726551d31c712e0a7c05a9cc718df11fe5bcb9ffb",
        ),
        (
            "cyclonedx sbom",
            "6d0fa8e56a5692c0e7bc43a87297b82204111a3d47ec5c973a92e6898487df79",
        ),
        (
            "spdx sbom",
            "fdd49c1919f9c472f406449baba640ee77ed66acbe9efaeb60a1300ce88a510f",
        ),
    ];
    let got: Vec<String> = pins.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    let want: Vec<String> = pinned.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    assert_eq!(got, want, "\n{}", got.join("\n"));
}

#[test]
fn output_replaces_only_what_nixoci_wrote() {
    let f = fixture();
    let dir = tempdir();
    let build = |out: &Path, extra: &[&str]| {
        let mut cmd = nixoci();
        cmd.arg("build")
            .arg(&f.app)
            .args(["--graph", &f.attrs_json, "-q"])
            .args(extra)
            .arg("-o")
            .arg(out);
        cmd
    };
    // A directory of the user's survives, whatever the format.
    let precious = dir.path().join("precious");
    fs::create_dir(&precious).unwrap();
    fs::write(precious.join("a"), "x").unwrap();
    for format in ["oci-layout", "docker-archive", "oci-archive"] {
        let err = fails(&mut build(&precious, &["--format", format]));
        assert!(err.contains("--force"), "{err}");
        assert_eq!(fs::read_to_string(precious.join("a")).unwrap(), "x");
    }
    // So does a symlink, and what it points at.
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&precious, &link).unwrap();
    fails(&mut build(&link, &[]));
    assert!(fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());

    // An OCI layout and a file are replaced, in both directions.
    let out = dir.path().join("image");
    run(&mut build(&out, &[]));
    assert!(out.join("oci-layout").is_file());
    run(&mut build(&out, &[]));
    run(&mut build(&out, &["--format", "docker-archive"]));
    assert!(out.is_file());
    run(&mut build(&out, &[]));
    assert!(out.join("index.json").is_file());

    // --force replaces the user's directory.
    run(&mut build(&precious, &["--force"]));
    assert!(precious.join("oci-layout").is_file());
    assert!(!precious.join("a").exists());
    // Nothing is left beside the outputs.
    let mut left: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["image", "link", "precious"]);
}

#[test]
fn staging_left_by_a_killed_build_is_removed_by_the_next_one() {
    let f = fixture();
    let dir = tempdir();
    // A process that is surely gone: spawn one and reap it.
    let mut dead = Command::new("true").spawn().unwrap();
    let pid = dead.id();
    dead.wait().unwrap();
    let stale = dir.path().join(format!(".image.nixoci-{pid}"));
    fs::create_dir_all(stale.join("layout/blobs")).unwrap();
    // A live process's staging is left alone.
    let live = dir
        .path()
        .join(format!(".image.nixoci-{}", std::process::id()));
    fs::create_dir(&live).unwrap();
    run(nixoci()
        .arg("build")
        .arg(&f.app)
        .args(["--graph", &f.attrs_json, "-q", "-o"])
        .arg(dir.path().join("image")));
    assert!(!stale.exists(), "the dead run's staging is still there");
    assert!(live.exists(), "a live run's staging was removed");

    // A real kill: SIGKILL in the middle of a build (of 96 MiB, gzipped on
    // one thread, so that it lasts), once its staging exists; then a new build.
    let store = dir.path().join("store");
    let big = store.join("3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c-big");
    fs::create_dir_all(&big).unwrap();
    let mut x: u64 = 11;
    let data: Vec<u8> = (0..96 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    fs::write(big.join("data"), data).unwrap();
    let spec = dir.path().join("big.json");
    fs::write(
        &spec,
        json!({"storeDir": store, "graph": [{"path": big, "references": []}], "compression": "gzip"})
            .to_string(),
    )
    .unwrap();
    let out = dir.path().join("killed");
    let build = || {
        let mut cmd = nixoci();
        cmd.args(["build", "-q", "--jobs", "1", "--spec"])
            .arg(&spec)
            .arg("-o")
            .arg(&out);
        cmd
    };
    let mut child = build().spawn().unwrap();
    let staging = dir.path().join(format!(".killed.nixoci-{}", child.id()));
    let started = std::time::Instant::now();
    while !staging.exists() && started.elapsed() < std::time::Duration::from_secs(30) {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert!(
        staging.exists(),
        "the build made no staging to leave behind"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        staging.exists(),
        "the killed build's staging is gone already"
    );
    assert!(!out.exists(), "the killed build finished");
    run(&mut build());
    assert!(!staging.exists(), "{} survived", staging.display());
    assert!(out.join("index.json").exists());
}

#[test]
fn big_layers_use_every_thread_and_give_the_same_bytes() {
    // One 12 MiB path: many gzip blocks, and several zstd jobs (so zstd runs
    // with as many workers as threads).
    let dir = tempdir();
    let store = dir.path().join("store");
    let big = store.join("2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c-big");
    fs::create_dir_all(&big).unwrap();
    let mut data = Vec::with_capacity(12 << 20);
    let mut x: u64 = 7;
    while data.len() < 12 << 20 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        data.extend_from_slice(format!("{} {:x}\n", x % 1000, x >> 40).as_bytes());
    }
    fs::write(big.join("data"), &data).unwrap();
    let graph = json!([{"path": big.display().to_string(), "references": []}]);
    for compression in ["gzip", "zstd"] {
        let spec =
            json!({"storeDir": store, "graph": graph, "tag": "1", "compression": compression});
        fs::write(dir.path().join("spec.json"), spec.to_string()).unwrap();
        let mut digests = Vec::new();
        for jobs in ["1", "2", "8"] {
            let out = dir.path().join(format!("{compression}-{jobs}"));
            let s = summary(&run(nixoci()
                .arg("build")
                .arg("--spec")
                .arg(dir.path().join("spec.json"))
                .args(["--json", "--jobs", jobs, "-o"])
                .arg(&out)));
            digests.push((s["digest"].clone(), layer_digests(&s)));
            if compression == "gzip" && jobs == "8" {
                let blob = blob_path(&out, s["layers"][0]["digest"].as_str().unwrap());
                run(Command::new("gzip").arg("-t").arg(&blob));
                let unpacked = stdout(Command::new("python3").args([
                    "-c",
                    "import gzip, hashlib, sys; print('sha256:' + hashlib.sha256(gzip.open(sys.argv[1]).read()).hexdigest())",
                ]).arg(&blob));
                assert_eq!(
                    unpacked.trim(),
                    s["layers"][0]["diff_id"],
                    "Python's gzip reads it"
                );
            }
        }
        assert_eq!(digests[0], digests[1], "{compression}: 1 vs 2 threads");
        assert_eq!(digests[0], digests[2], "{compression}: 1 vs 8 threads");
    }
}

#[test]
fn hostile_root_entries_cost_bounded_memory_and_no_crash() {
    let dir = tempdir();
    let store = dir.path().join("store");
    let big_path = store.join("3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d-big");
    fs::create_dir_all(&big_path).unwrap();
    // 400 MiB, sparse: cheap to make, but read whole it would cost 400 MiB.
    fs::File::create(big_path.join("blob"))
        .unwrap()
        .set_len(400 << 20)
        .unwrap();
    let spec = json!({
        "storeDir": store, "graph": [], "tag": "1", "compression": "none",
        "rootEntries": [{"type": "file", "path": "/big", "source": big_path.join("blob")}]
    });
    fs::write(dir.path().join("spec.json"), spec.to_string()).unwrap();
    let (out, rss_kib) = run_measured(
        nixoci()
            .args(["build", "-q", "--spec"])
            .arg(dir.path().join("spec.json"))
            .arg("-o")
            .arg(dir.path().join("big")),
    );
    assert!(out.status.success(), "{out:?}");
    assert!(rss_kib < 100 << 10, "{rss_kib} KiB for a 400 MiB root file");

    // A path 8000 directories deep is refused, not a stack overflow.
    let deep = format!("dir:{}", "/d".repeat(8000));
    let out = nixoci()
        .args(["build", "--graph"])
        .arg(dir.path().join("spec.json"))
        .args(["--root", &deep, "-o"])
        .arg(dir.path().join("deep"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("components; at most"),
        "{out:?}"
    );
    assert!(!dir.path().join("deep").exists());
}

#[test]
fn the_layering_strategy_decides_the_layers_built() {
    let dir = tempdir();
    let store = dir.path().join("store");
    let path = |name: &str| {
        store
            .join(format!("{:a>32}-{name}", ""))
            .display()
            .to_string()
    };
    let mut graph = Vec::new();
    for (name, refs, kib) in [
        ("app", vec!["lib", "libc"], 1000),
        ("lib", vec!["libc"], 10),
        ("tool", vec!["libc"], 100),
        ("libc", vec![], 500),
    ] {
        let p = store.join(format!("{:a>32}-{name}", ""));
        fs::create_dir_all(&p).unwrap();
        fs::write(p.join("data"), vec![b'x'; kib * 1024]).unwrap();
        graph.push(json!({"path": path(name), "references": refs.iter().map(|r| path(r)).collect::<Vec<_>>()}));
    }
    let graph_file = dir.path().join("graph.json");
    fs::write(&graph_file, serde_json::Value::Array(graph).to_string()).unwrap();
    let mut plans = Vec::new();
    for strategy in ["popularity", "auto"] {
        let plan: serde_json::Value = serde_json::from_str(&stdout(
            nixoci().args(["plan", "--graph"]).arg(&graph_file).args([
                "--store-dir",
                store.to_str().unwrap(),
                "--strategy",
                strategy,
                "--max-layers",
                "3",
            ]),
        ))
        .unwrap();
        let spec = json!({"storeDir": store, "graph": graph_file, "tag": "1"});
        fs::write(dir.path().join("spec.json"), spec.to_string()).unwrap();
        let built = summary(&run(nixoci()
            .args(["build", "--json", "--spec"])
            .arg(dir.path().join("spec.json"))
            .args(["--strategy", strategy, "--max-layers", "3", "-o"])
            .arg(dir.path().join(strategy))));
        let layers: Vec<serde_json::Value> = built["layers"].as_array().unwrap()[..2]
            .iter()
            .map(|l| l["store_paths"].clone())
            .collect();
        assert_eq!(serde_json::Value::Array(layers), plan, "{strategy}");
        plans.push(plan);
    }
    assert_ne!(
        plans[0], plans[1],
        "the strategies must differ here for this test to mean anything"
    );
}

#[test]
fn a_graph_nar_hash_is_checked_against_the_store() {
    let dir = tempdir();
    let store = dir.path().join("store");
    let p = store.join(format!("{:b>32}-pkg", ""));
    fs::create_dir_all(&p).unwrap();
    fs::write(p.join("data"), "the real content").unwrap();
    let real = stdout(nixoci().args(["hash", "path"]).arg(&p))
        .trim()
        .to_string();
    for (hash, ok) in [
        (real.as_str(), true),
        ("sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=", false),
    ] {
        let spec = json!({"storeDir": store, "tag": "1",
            "graph": [{"path": p, "references": [], "narHash": hash}]});
        fs::write(dir.path().join("spec.json"), spec.to_string()).unwrap();
        let out = nixoci()
            .args(["build", "-q", "--spec"])
            .arg(dir.path().join("spec.json"))
            .arg("-o")
            .arg(dir.path().join("image"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.success(), ok, "{hash}: {err}");
        if !ok {
            assert!(
                err.contains("does not match its registered NAR hash"),
                "{err}"
            );
        }
        // The same graph given as a file with --graph, as users pass one.
        let graph = dir.path().join("graph.json");
        fs::write(
            &graph,
            json!([{"path": p, "references": [], "narHash": hash}]).to_string(),
        )
        .unwrap();
        fs::write(
            dir.path().join("spec.json"),
            json!({"storeDir": store, "tag": "1"}).to_string(),
        )
        .unwrap();
        let out = nixoci()
            .args(["build", "-q", "--force", "--spec"])
            .arg(dir.path().join("spec.json"))
            .arg("--graph")
            .arg(&graph)
            .arg("-o")
            .arg(dir.path().join("image-from-file"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.success(), ok, "--graph FILE, {hash}: {err}");
        if !ok {
            assert!(
                err.contains("does not match its registered NAR hash"),
                "{err}"
            );
        }
    }
}

#[test]
fn mtime_and_owner_fields_reach_store_layers_only() {
    let f = fixture();
    let dir = tempdir();
    let mut attrs: serde_json::Value =
        serde_json::from_slice(&fs::read(&f.attrs_json).unwrap()).unwrap();
    attrs["nixoci"] = json!({
        "name": "owners", "tag": "1", "contents": [f.app],
        "mtime": "@1234567890", "uid": 1000, "gid": 100, "uname": "app", "gname": "users",
        "compression": "none",
        "rootEntries": [{"type": "directory", "path": "/data", "mode": "0750"}]
    });
    let spec = dir.path().join(".attrs.json");
    fs::write(&spec, attrs.to_string()).unwrap();
    let layout = dir.path().join("image");
    run(nixoci()
        .arg("build")
        .arg("--spec")
        .arg(&spec)
        .args(["-q", "-o"])
        .arg(&layout));
    let (manifest, _) = layout_manifest(&layout);
    let layers: Vec<String> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let digest = l["digest"].as_str().unwrap();
            layout
                .join("blobs/sha256")
                .join(&digest["sha256:".len()..])
                .display()
                .to_string()
        })
        .collect();
    // Every entry's mtime, uid, gid, uname and gname, read by Python's tarfile.
    let headers = |layer: &str| -> Vec<(String, i64, i64, i64, String, String)> {
        let out = stdout(Command::new("python3").args([
            "-c",
            "import sys, tarfile, json\nprint(json.dumps([(m.name, int(m.mtime), m.uid, m.gid, m.uname, m.gname) for m in tarfile.open(sys.argv[1])]))",
            layer,
        ]));
        serde_json::from_str(&out).unwrap()
    };
    let (customisation, store_layers) = layers.split_last().unwrap();
    for layer in store_layers {
        let entries = headers(layer);
        assert!(entries.iter().any(|e| e.0 == "/nix/store"), "{entries:?}");
        for (name, mtime, uid, gid, uname, gname) in entries {
            assert_eq!(
                (mtime, uid, gid, uname.as_str(), gname.as_str()),
                (1234567890, 1000, 100, "app", "users"),
                "{name}"
            );
        }
    }
    // The customisation layer stays root's (as in nixpkgs), numerically.
    let entries = headers(customisation);
    assert!(entries.iter().any(|e| e.0 == "./data"), "{entries:?}");
    for (name, _, uid, gid, uname, gname) in entries {
        assert_eq!(
            (uid, gid, uname.as_str(), gname.as_str()),
            (0, 0, "", ""),
            "{name}"
        );
    }
}

/// Explicit layers are buildLayer outputs: store paths (nothing can change
/// them after Nix made them) with a regular blob, covering what they hold;
/// and every path they cover must be held by one of the image's layers, or
/// it would silently leave the image.
#[test]
fn explicit_layers_must_be_store_paths_that_hold_what_they_cover() {
    let f = fixture();
    let dir = tempdir();
    let layer = |name: &str, held: &[&str], covers: &[&str], symlinked: bool| -> String {
        let d = dir.path().join(name).join(format!("{name}-layer"));
        fs::create_dir_all(&d).unwrap();
        let blob = b"not really gzip";
        if symlinked {
            fs::write(dir.path().join(name).join("elsewhere"), blob).unwrap();
            std::os::unix::fs::symlink(dir.path().join(name).join("elsewhere"), d.join("blob"))
                .unwrap();
        } else {
            fs::write(d.join("blob"), blob).unwrap();
        }
        fs::write(
            d.join("meta.json"),
            json!({
                "digest": format!("sha256:{}", "1".repeat(64)),
                "diffId": format!("sha256:{}", "2".repeat(64)),
                "size": blob.len(),
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "storePaths": held,
                "covers": covers,
            })
            .to_string(),
        )
        .unwrap();
        d.to_str().unwrap().to_string()
    };
    let add = |path: &str| -> String {
        stdout(Command::new("nix-store").arg("--add").arg(path))
            .trim()
            .to_string()
    };
    let build = |layer: &str| {
        let mut attrs: serde_json::Value =
            serde_json::from_slice(&fs::read(&f.attrs_json).unwrap()).unwrap();
        attrs["nixoci"] = json!({"name": "explicit", "contents": [f.app], "layers": [layer]});
        let spec = dir.path().join(".attrs.json");
        fs::write(&spec, attrs.to_string()).unwrap();
        nixoci()
            .arg("build")
            .arg("--spec")
            .arg(&spec)
            .args(["-q", "-o"])
            .arg(dir.path().join("out"))
            .arg("--force")
            .output()
            .unwrap()
    };
    let lib = f.lib.as_str();
    let cases = [
        (
            layer("outside", &[lib], &[lib], false),
            "is not inside the store directory /nix/store",
        ),
        (
            add(&layer("symlinked", &[lib], &[lib], true)),
            "the blob is not a regular file",
        ),
        (
            add(&layer("drops", &[], &[lib], false)),
            "none of the image's layers holds it",
        ),
        (
            add(&layer("uncovered", &[lib], &[], false)),
            "but does not cover it",
        ),
    ];
    for (layer, wanted) in &cases {
        let out = build(layer);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{layer}");
        assert!(err.contains(wanted), "{layer}: {err}");
    }
    // A consistent one is taken.
    let good = add(&layer("good", &[lib], &[lib], false));
    let out = build(&good);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
