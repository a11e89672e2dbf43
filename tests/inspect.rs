//! `nixoci inspect` through the CLI, against Nix's own answers: the store
//! paths of a fixture image, their NAR sizes (`nix path-info -s`), and a
//! `--why` chain that `nix why-depends` also finds.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::Value;
use sha2::Digest as _;

fn build_image(out: &Path, extra: &[&str]) {
    let f = fixture();
    run(nixoci()
        .arg("build")
        .arg(&f.app)
        .args(["--tag", "team/app:1", "-q", "--max-layers", "3"])
        .args(extra)
        .arg("-o")
        .arg(out));
}

fn inspect_json(image: &Path, extra: &[&str]) -> Value {
    serde_json::from_str(&stdout(
        nixoci().arg("inspect").arg(image).arg("--json").args(extra),
    ))
    .unwrap()
}

/// `nix path-info -s` of each path: its NAR size.
fn nix_sizes(paths: &[&str]) -> BTreeMap<String, u64> {
    stdout(
        Command::new("nix")
            .args([
                "--extra-experimental-features",
                "nix-command",
                "path-info",
                "-s",
            ])
            .args(paths),
    )
    .lines()
    .map(|line| {
        let mut words = line.split_whitespace();
        let path = words.next().unwrap().to_string();
        (path, words.next().unwrap().parse().unwrap())
    })
    .collect()
}

#[test]
fn inspect_lists_exactly_the_image_store_paths_with_nix_sizes() {
    let f = fixture();
    let dir = tempdir();
    for (format, out) in [
        ("oci-layout", dir.path().join("layout")),
        // nixpkgs' format: its history comments name the store paths too.
        ("docker-archive", dir.path().join("image.tar")),
    ] {
        build_image(&out, &["--format", format]);
        let report = inspect_json(&out, &[]);
        let closure = stdout(Command::new("nix-store").args(["-qR", &f.app]));
        let mut expected: Vec<&str> = closure.lines().collect();
        expected.sort();
        let rows = report["paths"].as_array().unwrap();
        let mut listed: Vec<&str> = rows.iter().map(|r| r["path"].as_str().unwrap()).collect();
        listed.sort();
        assert_eq!(listed, expected, "{format}");
        let sizes = nix_sizes(&expected);
        let mut total = 0;
        for row in rows {
            let path = row["path"].as_str().unwrap();
            assert_eq!(row["nar_size"].as_u64().unwrap(), sizes[path], "{path}");
            total += sizes[path];
        }
        assert_eq!(report["nar_size"].as_u64().unwrap(), total);
        // Biggest first, with names as parseDrvName splits them.
        let first = &rows[0];
        assert!(
            rows.iter()
                .all(|r| r["nar_size"].as_u64() <= first["nar_size"].as_u64()),
            "{report:#}"
        );
        let lib = rows
            .iter()
            .find(|r| r["path"].as_str() == Some(f.lib.as_str()))
            .unwrap();
        assert_eq!(
            (lib["name"].as_str(), lib["version"].as_str()),
            (Some("fixture-lib"), Some("1.0"))
        );
        // Each path is in the layer whose history names it, and each layer's
        // sizes are its blob's and its tar's.
        let layers = report["layers"].as_array().unwrap();
        for row in rows {
            let layer = &layers[row["layer"].as_u64().unwrap() as usize];
            assert!(
                layer["store_paths"]
                    .as_array()
                    .unwrap()
                    .contains(&row["path"]),
                "{row:#} {layer:#}"
            );
        }
        for layer in layers {
            assert!(layer["compressed_size"].as_u64().unwrap() > 0);
            assert!(
                layer["uncompressed_size"].as_u64().unwrap()
                    >= layer["compressed_size"].as_u64().unwrap() / 2
            );
        }
        // The table for people and --top.
        let text = stdout(nixoci().arg("inspect").arg(&out).args(["--top", "1"]));
        assert!(
            text.starts_with(&format!("{} store paths", expected.len())),
            "{text}"
        );
        assert!(
            text.contains(&format!("… and {} more", expected.len() - 1)),
            "{text}"
        );
        let markdown = stdout(nixoci().arg("inspect").arg(&out).arg("--markdown"));
        assert!(markdown.contains("| `fixture-lib` | 1.0 |"), "{markdown}");
    }
}

#[test]
fn why_gives_a_chain_that_nix_why_depends_also_finds() {
    let f = fixture();
    let dir = tempdir();
    let layout = dir.path().join("layout");
    build_image(&layout, &[]);
    let chain: Vec<String> =
        serde_json::from_value(inspect_json(&layout, &["--why", "fixture-lib"])).unwrap();
    assert_eq!(chain.first(), Some(&f.app), "{chain:?}");
    assert_eq!(chain.last(), Some(&f.lib), "{chain:?}");
    // Every step is a direct reference, and Nix agrees the root depends on it.
    for pair in chain.windows(2) {
        let references = stdout(Command::new("nix-store").args(["-q", "--references", &pair[0]]));
        assert!(references.lines().any(|r| r == pair[1]), "{pair:?}");
    }
    let why = Command::new("nix")
        .args([
            "--extra-experimental-features",
            "nix-command",
            "why-depends",
        ])
        .args([&f.app, &f.lib])
        .output()
        .unwrap();
    assert!(
        why.status.success(),
        "{}",
        String::from_utf8_lossy(&why.stderr)
    );
    // The text form, and refusals that name the problem.
    let text = stdout(nixoci().arg("inspect").arg(&layout).args(["--why", &f.lib]));
    assert_eq!(text, format!("{}\n→ {}\n", f.app, f.lib));
    let err = fails(
        nixoci()
            .arg("inspect")
            .arg(&layout)
            .args(["--why", "no-such-package"]),
    );
    assert!(
        err.contains("no store path of the image matches `no-such-package`"),
        "{err}"
    );
    let err = fails(nixoci().arg("inspect").arg(&layout).args(["--top", "0"]));
    assert!(err.contains("--top needs at least 1"), "{err}");
}

#[test]
fn layers_of_a_base_image_are_marked_shared() {
    let f = fixture();
    let dir = tempdir();
    let (base, layout) = (dir.path().join("base"), dir.path().join("layout"));
    run(nixoci()
        .arg("build")
        .arg(&f.lib)
        .args(["--tag", "team/base:1", "-q", "-o"])
        .arg(&base));
    build_image(&layout, &[]);
    let report = inspect_json(&layout, &["--base", base.to_str().unwrap()]);
    let lib_layer = report["paths"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["path"].as_str() == Some(f.lib.as_str()))
        .unwrap()["layer"]
        .as_u64()
        .unwrap();
    for layer in report["layers"].as_array().unwrap() {
        let holds_only_lib = layer["store_paths"] == serde_json::json!([f.lib]);
        assert_eq!(
            layer["in_base"].as_bool().unwrap(),
            holds_only_lib,
            "{layer:#}"
        );
        if holds_only_lib {
            assert_eq!(layer["index"].as_u64(), Some(lib_layer));
        }
    }
}

/// Writes `bytes` as a blob of `layout`; its descriptor's digest and size.
fn put_blob(layout: &Path, bytes: &[u8]) -> (String, usize) {
    let digest = format!(
        "sha256:{}",
        nixoci::digest::hex(&sha2::Sha256::digest(bytes))
    );
    std::fs::write(blob_path(layout, &digest), bytes).unwrap();
    (digest, bytes.len())
}

#[test]
fn an_image_without_store_paths_in_its_history_is_refused() {
    let dir = tempdir();
    let layout = dir.path().join("layout");
    build_image(&layout, &[]);
    // The history comments gone (as in an image a Dockerfile built), with
    // every digest made anew so that the layout stays valid.
    let (mut manifest, mut config) = layout_manifest(&layout);
    config["history"] = serde_json::json!([]);
    let (digest, size) = put_blob(&layout, &serde_json::to_vec(&config).unwrap());
    manifest["config"]["digest"] = digest.into();
    manifest["config"]["size"] = size.into();
    let (digest, size) = put_blob(&layout, &serde_json::to_vec(&manifest).unwrap());
    let mut index = read_json(&layout.join("index.json"));
    index["manifests"][0]["digest"] = digest.into();
    index["manifests"][0]["size"] = size.into();
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    let err = fails(nixoci().arg("inspect").arg(&layout));
    assert!(
        err.contains("names no store paths in its config history"),
        "{err}"
    );
}
