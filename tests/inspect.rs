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
        // nixpkgs' docker-archive: its history comments name the store paths too.
        ("docker-archive", dir.path().join("image.tar")),
    ] {
        build_image(&out, &["--format", format]);
        let out = if format == "docker-archive" {
            // Written again as nixpkgs' stream_layered_image.py writes it
            // (the CI-loop bench's baseline streamer).
            let nixpkgs = dir.path().join("nixpkgs.tar");
            run(Command::new("python3")
                .arg(repo().join("benches/nixpkgs_streamer.py"))
                .arg(&out)
                .arg(&nixpkgs));
            nixpkgs
        } else {
            out
        };
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
        // diff reads nixpkgs' archive too: against the same closure as an
        // OCI layout, the same store paths (its plain-tar layers are other
        // blobs than the layout's gzip ones).
        let layout = dir.path().join("layout");
        let report: Value = serde_json::from_str(&stdout(
            nixoci().arg("diff").arg(&layout).arg(&out).arg("--json"),
        ))
        .unwrap();
        for key in ["added", "removed", "changed"] {
            assert_eq!(report[key], serde_json::json!([]), "{format}: {report:#}");
        }
        run(nixoci().arg("diff").arg(&out).arg(&out).arg("--exit-code"));
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

/// Takes the history comments out of `layout`'s image (as in an image
/// nix2container or a Dockerfile built), making every digest anew so that
/// the layout stays valid; `edit` may change the config further.
fn strip_history(layout: &Path, edit: impl Fn(&mut Value)) {
    let (mut manifest, mut config) = layout_manifest(layout);
    config["history"] = serde_json::json!([]);
    edit(&mut config);
    let (digest, size) = put_blob(layout, &serde_json::to_vec(&config).unwrap());
    manifest["config"]["digest"] = digest.into();
    manifest["config"]["size"] = size.into();
    let (digest, size) = put_blob(layout, &serde_json::to_vec(&manifest).unwrap());
    let mut index = read_json(&layout.join("index.json"));
    index["manifests"][0]["digest"] = digest.into();
    index["manifests"][0]["size"] = size.into();
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
}

/// `nixoci inspect --json` with its stderr.
fn inspect_with_note(image: &str, extra: &[&str]) -> (Value, String) {
    let out = nixoci()
        .args(["inspect", "--json", image])
        .args(extra)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{err}");
    (serde_json::from_slice(&out.stdout).unwrap(), err)
}

/// The blob GETs a proxy saw after `from` requests.
fn blob_gets(proxy: &Proxy, from: usize) -> Vec<String> {
    proxy.stats().1[from..]
        .iter()
        .filter(|r| r.starts_with("GET ") && r.contains("/blobs/"))
        .cloned()
        .collect()
}

#[test]
fn without_store_paths_in_the_history_they_come_from_the_sbom_or_the_layers() {
    let dir = tempdir();
    let named = dir.path().join("named");
    build_image(&named, &[]);
    let expected = inspect_json(&named, &[]);
    let layer_digests: Vec<String> = layer_sizes(&named).into_keys().collect();
    let bare = dir.path().join("bare");
    run(Command::new("cp").arg("-r").arg(&named).arg(&bare));
    strip_history(&bare, |_| {});
    let same_paths = |report: &Value, how: &str| {
        assert_eq!(report["paths"], expected["paths"], "{how}");
        for (got, want) in report["layers"]
            .as_array()
            .unwrap()
            .iter()
            .zip(expected["layers"].as_array().unwrap())
        {
            assert_eq!(got["store_paths"], want["store_paths"], "{how}");
        }
    };
    // A local image: read from its layers, saying so.
    let (report, note) = inspect_with_note(bare.to_str().unwrap(), &[]);
    same_paths(&report, "local layers");
    assert!(
        note.contains("no SBOM is attached; they come from its 3 layers"),
        "{note}"
    );
    // `nixoci sbom` reads such an image's layers too; attached, the SBOM is
    // what inspect reads.
    let with_sbom = dir.path().join("with-sbom");
    run(Command::new("cp").arg("-r").arg(&bare).arg(&with_sbom));
    run(nixoci().arg("sbom").arg(&with_sbom).arg("--attach"));
    let (report, note) = inspect_with_note(with_sbom.to_str().unwrap(), &[]);
    same_paths(&report, "local SBOM");
    assert!(note.contains("the SBOM attached in its layout"), "{note}");

    // In a registry without the referrers API (the CNCF registry), the SBOM
    // is found through its fallback tag; in one with it (zot, played by the
    // proxy), through the API. Neither read downloads a layer.
    let registry = Registry::start(Auth::Anonymous);
    let proxy = Proxy::start(&registry);
    let push = |layout: &Path, reference: &str| {
        run(nixoci()
            .args(["push", "--insecure", "-q"])
            .arg(layout)
            .arg(reference));
    };
    let layer_gets = |from: usize| {
        let mut gets: Vec<String> = blob_gets(&proxy, from)
            .into_iter()
            .filter(|g| layer_digests.iter().any(|d| g.contains(d.as_str())))
            .collect();
        gets.sort();
        gets
    };
    let tagged = format!("{}/team/app:sbom", proxy.host());
    push(&with_sbom, &tagged);
    proxy.set_plan(serde_json::json!({"oci_subject": true, "referrers_api": true}));
    let zot = format!("{}/team/zot:sbom", proxy.host());
    push(&with_sbom, &zot);
    for (reference, through, plan) in [
        (
            &tagged,
            "found through the referrers tag sha256-",
            serde_json::json!({}),
        ),
        (
            &zot,
            "found through the referrers API",
            serde_json::json!({"referrers_api": true}),
        ),
    ] {
        proxy.set_plan(plan);
        let before = proxy.stats().1.len();
        let (report, note) = inspect_with_note(reference, &["--insecure"]);
        same_paths(&report, reference);
        assert!(note.contains(through), "{note}");
        assert_eq!(layer_gets(before), Vec::<String>::new(), "{reference}");
    }
    // With the API, the push wrote no fallback tag.
    assert!(
        !proxy
            .stats()
            .1
            .iter()
            .any(|r| r.starts_with("PUT /v2/team/zot/manifests/sha256-")),
        "{:?}",
        proxy.stats().1
    );
    // An SBOM manifest that does not match its digest, or that is about
    // another image (a registry listing another image's referrers), is refused.
    let index_entry = |layout: &Path, wanted: Option<&str>| -> String {
        read_json(&layout.join("index.json"))["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["artifactType"].as_str() == wanted)
            .unwrap()["digest"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let sbom_manifest = index_entry(&with_sbom, Some("application/vnd.cyclonedx+json"));
    proxy.set_plan(
        serde_json::json!({"referrers_api": true, "tamper_manifest_gets": sbom_manifest}),
    );
    let err = fails(nixoci().args(["inspect", "--insecure", &zot]));
    assert!(err.contains("does not match its digest"), "{err}");
    let other = dir.path().join("other");
    run(Command::new("cp").arg("-r").arg(&bare).arg(&other));
    strip_history(&other, |config| config["author"] = "someone else".into());
    let other_ref = format!("{}/team/zot:other", proxy.host());
    push(&other, &other_ref);
    proxy.set_plan(serde_json::json!({
        "referrers_api": true,
        "referrers_alias": {index_entry(&other, None): index_entry(&with_sbom, None)},
    }));
    let err = fails(nixoci().args(["inspect", "--insecure", &other_ref]));
    assert!(err.contains("is about another image"), "{err}");

    // Neither history nor SBOM: refused, downloading nothing, unless
    // --fetch-layers, which downloads each layer once and says so.
    // Another repository: in team/app, the SBOM pushed with the same manifest is attached.
    let plain = format!("{}/team/bare:1", proxy.host());
    push(&bare, &plain);
    let before = proxy.stats().1.len();
    let err = fails(nixoci().args(["inspect", "--insecure", &plain]));
    assert!(
        err.contains("no SBOM is attached to it")
            && err.contains("--fetch-layers reads them from its 3 layers"),
        "{err}"
    );
    assert_eq!(layer_gets(before), Vec::<String>::new());
    let before = proxy.stats().1.len();
    let (report, note) = inspect_with_note(&plain, &["--insecure", "--fetch-layers"]);
    same_paths(&report, "fetched layers");
    assert!(note.contains("(--fetch-layers: "), "{note}");
    let fetched = layer_gets(before);
    assert_eq!(fetched.len(), layer_digests.len(), "{fetched:?}");
    assert_eq!(
        report["layers"], expected["layers"],
        "the tar sizes are measured too"
    );
    // diff works across the three: the same store paths, the same layers.
    for (old, new) in [
        (tagged.as_str(), plain.as_str()),
        (plain.as_str(), named.to_str().unwrap()),
    ] {
        let diff: Value = serde_json::from_str(&stdout(nixoci().args([
            "diff",
            "--insecure",
            "--json",
            "--fetch-layers",
            old,
            new,
        ])))
        .unwrap();
        for key in ["added", "removed", "changed", "layers_new"] {
            assert_eq!(diff[key], serde_json::json!([]), "{old} {new}: {diff:#}");
        }
    }

    // A layer that arrives damaged, or whose tar is not the config's
    // diff_id, is refused.
    proxy.set_plan(serde_json::json!({"tamper_blob_gets": layer_digests[0]}));
    let err = fails(nixoci().args(["inspect", "--insecure", "--fetch-layers", &plain]));
    assert!(err.contains("arrived damaged"), "{err}");
    proxy.set_plan(serde_json::json!({}));
    let lying = dir.path().join("lying");
    run(Command::new("cp").arg("-r").arg(&named).arg(&lying));
    strip_history(&lying, |config| {
        config["rootfs"]["diff_ids"][1] = format!("sha256:{}", "1".repeat(64)).into();
    });
    let err = fails(nixoci().arg("inspect").arg(&lying));
    assert!(
        err.contains("but the image's config says sha256:1111"),
        "{err}"
    );
    let lying_ref = format!("{}/team/app:lying", proxy.host());
    run(Command::new("skopeo")
        .args(["copy", "-q", "--dest-tls-verify=false"])
        .arg(format!("oci:{}", lying.display()))
        .arg(format!("docker://{lying_ref}")));
    let err = fails(nixoci().args(["inspect", "--insecure", "--fetch-layers", &lying_ref]));
    assert!(
        err.contains("but the image's config says sha256:1111"),
        "{err}"
    );
}

/// The compressed sizes of a layout's layers, by digest, read from its manifest.
fn layer_sizes(layout: &Path) -> BTreeMap<String, u64> {
    let (manifest, _) = layout_manifest(layout);
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["digest"].as_str().unwrap().to_string(),
                l["size"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn diff_reports_a_changed_package_an_added_path_and_the_bytes_to_pull() {
    let f = fixture();
    // The same closure with another salt: a library with another hash.
    let salted = nix_build(
        &repo().join("tests/fixtures/closure.nix"),
        &["lib", "app"],
        &["--argstr", "salt", "diff"],
    );
    let (new_lib, new_app) = (&salted[0], &salted[1]);
    let dir = tempdir();
    // A path both images hold, in a layer of its own.
    let shared_nix = dir.path().join("shared.nix");
    std::fs::write(
        &shared_nix,
        r#"derivation { name = "fixture-shared-3.1"; system = "x86_64-linux"; builder = "/bin/sh"; args = [ "-c" "/bin/mkdir -p $out/share && echo shared > $out/share/file" ]; }"#,
    )
    .unwrap();
    let shared = &nix_build(&shared_nix, &[], &[])[0];
    let (old, new) = (dir.path().join("old"), dir.path().join("new"));
    // OLD: the library and the shared path. NEW: the salted library, an app
    // on it (added) and the shared path.
    run(nixoci()
        .arg("build")
        .args([&f.lib, shared])
        .args(["--tag", "t:old", "-q", "-o"])
        .arg(&old));
    run(nixoci()
        .arg("build")
        .args([new_app, shared])
        .args(["--tag", "t:new", "-q", "-o"])
        .arg(&new));
    let report: Value = serde_json::from_str(&stdout(
        nixoci().arg("diff").arg(&old).arg(&new).arg("--json"),
    ))
    .unwrap();
    assert_eq!(
        report["changed"],
        serde_json::json!([{
            "name": "fixture-lib", "old": f.lib, "new": new_lib,
            "old_version": "1.0", "new_version": "1.0",
        }]),
        "{report:#}"
    );
    assert_eq!(report["added"], serde_json::json!([new_app]), "{report:#}");
    assert_eq!(report["removed"], serde_json::json!([]), "{report:#}");
    // The bytes to pull, from the manifests: NEW's layers OLD lacks.
    let (old_layers, new_layers) = (layer_sizes(&old), layer_sizes(&new));
    let expected: u64 = new_layers
        .iter()
        .filter(|(d, _)| !old_layers.contains_key(*d))
        .map(|(_, s)| s)
        .sum();
    assert!(expected > 0);
    assert_eq!(
        report["bytes_to_pull"].as_u64(),
        Some(expected),
        "{report:#}"
    );
    let reused = report["layers_reused"].as_array().unwrap();
    assert!(
        !reused.is_empty(),
        "the unsalted app's layer is in both: {report:#}"
    );
    // Exit status: 0 either way, 1 with --exit-code when they differ, and 0
    // for an image against itself.
    let text = stdout(nixoci().arg("diff").arg(&old).arg(&new));
    assert!(
        text.starts_with("1 added, 0 removed, 1 changed; "),
        "{text}"
    );
    assert!(text.contains("fixture-lib 1.0 -> 1.0"), "{text}");
    let markdown = stdout(nixoci().arg("diff").arg(&old).arg(&new).arg("--markdown"));
    assert!(markdown.contains(&format!("- `{new_app}`")), "{markdown}");
    let err = fails(nixoci().arg("diff").arg(&old).arg(&new).arg("--exit-code"));
    assert!(err.contains("the images differ"), "{err}");
    run(nixoci().arg("diff").arg(&new).arg(&new).arg("--exit-code"));
}

#[test]
fn registry_references_are_read_without_a_layer_get() {
    let f = fixture();
    let registry = Registry::start(Auth::Anonymous);
    let proxy = Proxy::start(&registry);
    let dir = tempdir();
    let (old, new) = (dir.path().join("old"), dir.path().join("new"));
    run(nixoci()
        .arg("build")
        .arg(&f.lib)
        .args(["--tag", "t:old", "-q", "-o"])
        .arg(&old));
    build_image(&new, &[]);
    let (old_ref, new_ref) = (
        format!("{}/team/app:old", proxy.host()),
        format!("{}/team/app:new", proxy.host()),
    );
    run(nixoci()
        .args(["push", "--insecure", "-q"])
        .arg(&old)
        .arg(&old_ref));
    run(nixoci()
        .args(["push", "--insecure", "-q"])
        .arg(&new)
        .arg(&new_ref));
    let (_, before) = proxy.stats();
    // The same answers as from the layouts, but no tar sizes (no layer read).
    let remote = inspect_json(Path::new(&new_ref), &["--insecure"]);
    let local = inspect_json(&new, &[]);
    assert_eq!(remote["paths"], local["paths"]);
    for (r, l) in remote["layers"]
        .as_array()
        .unwrap()
        .iter()
        .zip(local["layers"].as_array().unwrap())
    {
        assert_eq!(r["digest"], l["digest"]);
        assert_eq!(r["compressed_size"], l["compressed_size"]);
        assert_eq!(r["store_paths"], l["store_paths"]);
        assert_eq!(r["uncompressed_size"], Value::Null);
    }
    let remote_diff: Value = serde_json::from_str(&stdout(
        nixoci()
            .args(["diff", "--insecure", "--json"])
            .args([&old_ref, &new_ref]),
    ))
    .unwrap();
    let local_diff: Value = serde_json::from_str(&stdout(
        nixoci().arg("diff").arg(&old).arg(&new).arg("--json"),
    ))
    .unwrap();
    assert_eq!(remote_diff, local_diff);
    assert!(remote_diff["bytes_to_pull"].as_u64().unwrap() > 0);
    // A local image against a reference works too (the base marks shared layers).
    let mixed = inspect_json(&new, &["--insecure", "--base", &old_ref]);
    assert_eq!(
        mixed["layers"],
        inspect_json(&new, &["--base", old.to_str().unwrap()])["layers"]
    );
    // Only manifests and configs were read: every blob GET names a config.
    let (_, after) = proxy.stats();
    let configs: Vec<String> = [&old, &new]
        .iter()
        .map(|l| {
            layout_manifest(l).0["config"]["digest"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let blob_gets: Vec<&String> = after[before.len()..]
        .iter()
        .filter(|r| r.starts_with("GET ") && r.contains("/blobs/"))
        .collect();
    assert!(!blob_gets.is_empty(), "{after:?}");
    for get in &blob_gets {
        assert!(
            configs.iter().any(|c| get.contains(c.as_str())),
            "a layer was downloaded: {get}"
        );
    }
    // What a node holding OLD really pulls for NEW: skopeo copies OLD, then
    // NEW, into one OCI layout (it reuses the blobs it has). It also reads
    // NEW's config, which bytes_to_pull (layers) leaves out.
    let pulled = dir.path().join("pulled");
    let skopeo_pull = |reference: &str, tag: &str| {
        run(Command::new("skopeo")
            .args(["copy", "--src-tls-verify=false", "-q"])
            .arg(format!("docker://{reference}"))
            .arg(format!("oci:{}:{tag}", pulled.display())));
    };
    skopeo_pull(&old_ref, "old");
    let after_old = proxy.pulled_bytes();
    skopeo_pull(&new_ref, "new");
    let (new_manifest, _) = layout_manifest(&new);
    assert_eq!(
        proxy.pulled_bytes() - after_old,
        remote_diff["bytes_to_pull"].as_u64().unwrap()
            + new_manifest["config"]["size"].as_u64().unwrap(),
        "{remote_diff:#}"
    );
    // A config that does not match its digest is refused.
    proxy.set_plan(serde_json::json!({"tamper_blob_gets": true}));
    let err = fails(nixoci().args(["inspect", "--insecure"]).arg(&new_ref));
    assert!(
        err.contains("the config does not match its digest"),
        "{err}"
    );
    proxy.set_plan(serde_json::json!({}));
    // A name that is neither here nor a reference is refused, saying both.
    let err = fails(nixoci().args(["inspect", "no-such-image"]));
    assert!(err.contains("neither an image here"), "{err}");
}

/// Measures a treemap as a browser paints it: parses the SVG as XML, and
/// counts, in Chromium's screenshot, the pixels of each rectangle's fill.
/// Prints `PATH WIDTH HEIGHT PIXELS` per rectangle.
const MEASURE: &str = r##"
import sys, xml.etree.ElementTree as ET
from PIL import Image
svg, png = sys.argv[1:]
rects = ET.parse(svg).getroot().iter("{http://www.w3.org/2000/svg}rect")
image = Image.open(png).convert("RGB")
counts = {"#%02x%02x%02x" % c: n for n, c in image.getcolors(maxcolors=10**7)}
for r in rects:
    print(r.get("data-path"), r.get("width"), r.get("height"), counts.get(r.get("fill"), 0))
"##;

#[test]
fn the_treemap_paints_each_store_path_in_proportion_to_its_nar_size() {
    let top = &nix_build(&repo().join("tests/fixtures/treemap.nix"), &[], &[])[0];
    let dir = tempdir();
    let layout = dir.path().join("layout");
    run(nixoci()
        .arg("build")
        .arg(top)
        .args(["--tag", "t:1", "-q", "--max-layers", "4", "-o"])
        .arg(&layout));
    let svg = dir.path().join("image.svg");
    let report: Value = serde_json::from_str(&stdout(
        nixoci()
            .arg("inspect")
            .arg(&layout)
            .arg("--json")
            .arg("--svg")
            .arg(&svg),
    ))
    .unwrap();
    // The same report gives the same bytes.
    let again = dir.path().join("again.svg");
    run(nixoci()
        .arg("inspect")
        .arg(&layout)
        .arg("--svg")
        .arg(&again));
    assert_eq!(std::fs::read(&svg).unwrap(), std::fs::read(&again).unwrap());
    let png = dir.path().join("image.png");
    run(Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            "--window-size=1600,1000",
        ])
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", svg.display())));
    let measured = stdout(
        Command::new("/usr/bin/python3")
            .args(["-c", MEASURE])
            .arg(&svg)
            .arg(&png),
    );
    let sizes: BTreeMap<&str, u64> = report["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["path"].as_str().unwrap(), p["nar_size"].as_u64().unwrap()))
        .collect();
    let total: u64 = sizes.values().sum();
    let rows: Vec<Vec<&str>> = measured.lines().map(|l| l.split(' ').collect()).collect();
    // One rectangle per store path.
    let mut painted: Vec<&str> = rows.iter().map(|r| r[0]).collect();
    painted.sort();
    assert_eq!(
        painted,
        sizes.keys().copied().collect::<Vec<_>>(),
        "{measured}"
    );
    for row in &rows {
        let expected = sizes[row[0]] as f64 / total as f64 * 1600.0 * 1000.0;
        let pixels: f64 = row[3].parse().unwrap();
        assert!(
            (pixels - expected).abs() / expected < 0.01,
            "{}: {pixels} pixels painted, {expected:.0} expected\n{measured}",
            row[0]
        );
    }
}
