//! Bills of materials: `nixoci sbom` writes CycloneDX 1.6 and SPDX 2.3 that
//! the official validators accept (cyclonedx-python-lib, spdx-tools), with
//! one component per store path of the image, its NAR hash, layer and
//! references, and the pinned sources; the same closure, the same bytes.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::Value;

const VALIDATE_CYCLONEDX: &str = "import sys
from cyclonedx.validation.json import JsonStrictValidator
from cyclonedx.schema import SchemaVersion
errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(open(sys.argv[1]).read())
if errors:
    sys.exit(f'invalid: {errors}')";

fn cyclonedx_valid(file: &Path) -> bool {
    Command::new("python3")
        .args(["-c", VALIDATE_CYCLONEDX])
        .arg(file)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// spdx-tools' `pyspdxtools`, run as a module (no console-script shim needed).
fn spdx_valid(file: &Path) -> bool {
    Command::new("python3")
        .args(["-m", "spdx_tools.spdx.clitools.pyspdxtools", "-i"])
        .arg(file)
        .output()
        .expect("python3 with spdx-tools (.ci/setup installs it)")
        .status
        .success()
}

/// The fixture app's image (its graph: all four fixture paths) at `out`.
fn build_fixture_image(out: &Path, extra: &[&str]) {
    let f = fixture();
    run(nixoci()
        .arg("build")
        .arg(&f.app)
        .args(["--graph", &f.attrs_json, "--tag", "team/app:1", "-q"])
        .args(extra)
        .arg("-o")
        .arg(out));
}

#[test]
fn sboms_validate_and_list_exactly_the_image_store_paths() {
    let f = fixture();
    let dir = tempdir();
    let image = dir.path().join("image");
    build_fixture_image(&image, &[]);
    let mirrors = repo().join("mirrors/authentik.toml");
    let sbom = |format: &str, extra: &[&str], out: &Path| {
        run(nixoci()
            .arg("sbom")
            .arg(&image)
            .args(["--format", format, "--name", "team/app:1", "--mirrors"])
            .arg(&mirrors)
            .args(extra)
            .arg("-o")
            .arg(out));
        fs::read(out).unwrap()
    };
    let cdx = dir.path().join("app.cdx.json");
    let bytes = sbom("cyclonedx", &["--graph", &f.attrs_json], &cdx);
    assert!(cyclonedx_valid(&cdx));
    let spdx = dir.path().join("app.spdx.json");
    sbom("spdx", &["--graph", &f.attrs_json], &spdx);
    assert!(spdx_valid(&spdx));

    // The components' store paths are exactly the image's: its layers'.
    let doc: Value = serde_json::from_slice(&bytes).unwrap();
    let (_, config) = layout_manifest(&image);
    let mut in_image = BTreeSet::new();
    for h in config["history"].as_array().unwrap() {
        let comment = h["comment"].as_str().unwrap();
        for p in comment
            .trim_start_matches("store paths: [")
            .trim_end_matches(']')
            .split(", ")
        {
            if !p.is_empty() {
                in_image.insert(p.trim_matches('\'').to_string());
            }
        }
    }
    let store_path = |c: &Value| {
        c["properties"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == "nix:store_path"))
            .map(|p| p["value"].as_str().unwrap().to_string())
    };
    let components = doc["components"].as_array().unwrap();
    let listed: BTreeSet<String> = components.iter().filter_map(store_path).collect();
    assert_eq!(listed, in_image);
    // (The graph given to the build is the image's closure: all four fixture paths.)
    assert_eq!(
        listed,
        BTreeSet::from([f.app.clone(), f.lib.clone(), f.link.clone(), f.note.clone()])
    );
    let app = components
        .iter()
        .find(|c| store_path(c).as_deref() == Some(&f.app))
        .unwrap();
    assert_eq!(
        (app["name"].as_str(), app["version"].as_str()),
        (Some("fixture-app"), Some("2.0"))
    );
    let nar = stdout(Command::new("nix-store").args(["-q", "--hash"]).arg(&f.app));
    let nar_hex = stdout(Command::new("nix").args(["hash", "to-base16", nar.trim()]));
    assert_eq!(app["hashes"][0]["content"], nar_hex.trim());
    let layer = app["properties"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "nixoci:layer")
        .unwrap();
    assert!(config["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .contains(&layer["value"]));
    let deps = doc["dependencies"].as_array().unwrap();
    let app_deps = deps.iter().find(|d| d["ref"] == f.app.as_str()).unwrap();
    assert_eq!(app_deps["dependsOn"], serde_json::json!([f.lib]));
    let source = components
        .iter()
        .find(|c| c["bom-ref"] == "source:authentik")
        .unwrap();
    assert_eq!(
        source["externalReferences"][0]["url"],
        "https://forge.ops.eblu.me/mirrors/authentik.git"
    );

    // The same closure gives the same bytes, from the graph or the local store.
    let again = dir.path().join("again.cdx.json");
    assert_eq!(sbom("cyclonedx", &[], &again), bytes);

    // The validators are not a formality: a broken document fails them.
    let mut broken = doc.clone();
    broken["components"][0]["hashes"][0]["alg"] = Value::from("SHA-999");
    fs::write(&cdx, broken.to_string()).unwrap();
    assert!(!cyclonedx_valid(&cdx));
    let mut broken: Value = serde_json::from_slice(&fs::read(&spdx).unwrap()).unwrap();
    broken["relationships"][1]["spdxElementId"] = Value::from("SPDXRef-nowhere");
    fs::write(&spdx, broken.to_string()).unwrap();
    assert!(!spdx_valid(&spdx));
}

#[test]
fn an_attached_sbom_is_pushed_and_found_from_the_image_digest() {
    let f = fixture();
    let dir = tempdir();
    let image = dir.path().join("image");
    build_fixture_image(&image, &[]);
    let (manifest, _) = layout_manifest(&image);
    let image_digest = common_digest(&image);
    run(nixoci()
        .arg("sbom")
        .arg(&image)
        .args(["--graph", &f.attrs_json, "--attach", "-o"])
        .arg(dir.path().join("sbom.json")));
    // Kept in the layout as a referrer; the image still opens as one image.
    let index = read_json(&image.join("index.json"));
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2, "{index}");
    assert_eq!(
        index["manifests"][1]["artifactType"],
        "application/vnd.cyclonedx+json"
    );
    assert_eq!(layout_manifest(&image).0, manifest);
    let inspect: Value = serde_json::from_str(&stdout(
        Command::new("skopeo")
            .arg("inspect")
            .arg(format!("oci:{}:1", image.display())),
    ))
    .unwrap();
    assert_eq!(
        inspect["Digest"],
        image_digest.as_str(),
        "other tools still see the image"
    );
    // Attaching again replaces it (one per type).
    run(nixoci()
        .arg("sbom")
        .arg(&image)
        .args(["--graph", &f.attrs_json, "--attach"]));
    assert_eq!(read_json(&image.join("index.json")), index);

    // A registry without the referrers API: the fallback tag sha256-<hex>.
    let registry = Registry::start(Auth::Anonymous);
    let proxy = Proxy::start(&registry);
    let push = |host: &str| {
        let out = run(nixoci()
            .args(["push", "--insecure", "-q", "--json"])
            .arg(&image)
            .arg(format!("{host}/team/app:1")));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let first = push(&proxy.host());
    assert_eq!(first["digest"], image_digest.as_str());
    let sbom = sbom_from_registry(&registry.host(), &image_digest);
    let components = sbom["components"].as_array().unwrap();
    assert!(
        components.iter().any(|c| c["bom-ref"] == f.app.as_str()),
        "{sbom}"
    );
    // Pushing again uploads nothing and keeps one entry under the tag.
    let again = push(&proxy.host());
    assert_eq!(again["bytes_uploaded"], 0);
    let tag = image_digest.replacen(':', "-", 1);
    let referrers = registry_json(&registry.host(), &format!("manifests/{tag}"));
    assert_eq!(referrers["manifests"].as_array().unwrap().len(), 1);

    // A registry with the referrers API (as zot): no fallback tag is made.
    let registry = Registry::start(Auth::Anonymous);
    let proxy = Proxy::start(&registry);
    proxy.set_plan(serde_json::json!({"oci_subject": true}));
    push(&proxy.host());
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!(
            "http://{}/v2/team/app/manifests/{tag}",
            registry.host()
        ))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "404");
}

/// The image manifest's digest, as index.json names it.
fn common_digest(layout: &Path) -> String {
    read_json(&layout.join("index.json"))["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

fn registry_json(host: &str, path: &str) -> Value {
    serde_json::from_str(&stdout(
        Command::new("curl")
            .args(["-sf", "-H", "Accept: application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json"])
            .arg(format!("http://{host}/v2/team/app/{path}")),
    ))
    .unwrap()
}

/// The CycloneDX SBOM of `digest`, found as a client would: the fallback
/// tag's index, its artifact manifest, then the blob.
fn sbom_from_registry(host: &str, digest: &str) -> Value {
    let referrers = registry_json(host, &format!("manifests/{}", digest.replacen(':', "-", 1)));
    let entry = referrers["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["artifactType"] == "application/vnd.cyclonedx+json")
        .unwrap_or_else(|| panic!("no SBOM among {referrers}"))
        .clone();
    let artifact = registry_json(
        host,
        &format!("manifests/{}", entry["digest"].as_str().unwrap()),
    );
    assert_eq!(artifact["subject"]["digest"], digest);
    registry_json(
        host,
        &format!(
            "blobs/{}",
            artifact["layers"][0]["digest"].as_str().unwrap()
        ),
    )
}

#[test]
fn build_sbom_keeps_a_valid_spdx_document_in_the_layout() {
    let dir = tempdir();
    let image = dir.path().join("image");
    build_fixture_image(&image, &["--sbom", "spdx"]);
    let index = read_json(&image.join("index.json"));
    let entry = &index["manifests"][1];
    assert_eq!(entry["artifactType"], "application/spdx+json");
    let blob = |digest: &str| image.join("blobs/sha256").join(&digest["sha256:".len()..]);
    let artifact = read_json(&blob(entry["digest"].as_str().unwrap()));
    assert_eq!(
        artifact["subject"]["digest"],
        index["manifests"][0]["digest"]
    );
    // pyspdxtools tells formats by the file name.
    let document = dir.path().join("attached.spdx.json");
    fs::copy(
        blob(artifact["layers"][0]["digest"].as_str().unwrap()),
        &document,
    )
    .unwrap();
    assert!(spdx_valid(&document));
    let doc = read_json(&document);
    let mut names: Vec<&str> = doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "fixture-app",
            "fixture-lib",
            "fixture-link",
            "fixture-note.txt",
            "team/app:1"
        ]
    );
    // The same build gives the same document.
    let again = dir.path().join("again");
    build_fixture_image(&again, &["--sbom", "spdx"]);
    assert_eq!(read_json(&again.join("index.json")), index);
}

#[test]
fn recompressing_on_push_leaves_the_old_images_sbom_behind() {
    // Plain-tar layers with an SBOM about that image: `push --compression`
    // makes another image, which the SBOM is not about.
    let dir = tempdir();
    let image = dir.path().join("image");
    build_fixture_image(&image, &["--compression", "none", "--sbom", "cyclonedx"]);
    let plain_digest = common_digest(&image);
    let registry = Registry::start(Auth::Anonymous);
    let out = run(nixoci()
        .args([
            "push",
            "--insecure",
            "-q",
            "--json",
            "--compression",
            "gzip",
        ])
        .arg(&image)
        .arg(format!("{}/team/app:1", registry.host())));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("its attached artifacts (SBOM) are not pushed"),
        "{err}"
    );
    let pushed = serde_json::from_slice::<Value>(&out.stdout).unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(pushed, plain_digest);
    for subject in [&pushed, &plain_digest] {
        let status = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .arg(format!(
                "http://{}/v2/team/app/manifests/{}",
                registry.host(),
                subject.replacen(':', "-", 1)
            ))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&status.stdout),
            "404",
            "a referrer of {subject} was pushed"
        );
    }
}

/// Source names that differ only in characters an SPDX ID cannot hold get
/// distinct IDs, and the document validates; a URL that would forge a line
/// or run script is refused with the manifest, naming the source.
#[test]
fn spdx_source_ids_are_unique_and_urls_are_checked() {
    let f = fixture();
    let dir = tempdir();
    let image = dir.path().join("image");
    build_fixture_image(&image, &[]);
    let hash = "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
    let pins = dir.path().join("pins.toml");
    fs::write(
        &pins,
        format!(
            "[[source]]\nname = \"a b\"\nkind = \"file\"\nmirror = \"https://forge.example/m/a\"\nhash = \"{hash}\"\n\n[[source]]\nname = \"a-b\"\nkind = \"file\"\nmirror = \"https://forge.example/m/b\"\nhash = \"{hash}\"\n"
        ),
    )
    .unwrap();
    let spdx = dir.path().join("app.spdx.json");
    run(nixoci()
        .arg("sbom")
        .arg(&image)
        .args(["--format", "spdx", "--graph", &f.attrs_json, "--mirrors"])
        .arg(&pins)
        .arg("-o")
        .arg(&spdx));
    assert!(spdx_valid(&spdx));
    let doc: Value = serde_json::from_slice(&fs::read(&spdx).unwrap()).unwrap();
    let ids: Vec<&str> = doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["SPDXID"].as_str().unwrap())
        .collect();
    let unique: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "{ids:?}");
    assert_eq!(
        ids.iter()
            .filter(|i| i.starts_with("SPDXRef-source-"))
            .count(),
        2
    );

    for (url, shown) in [
        (
            "https://forge.example/a\\nforged: line",
            "https://forge.example/a\\nforged: line",
        ),
        ("javascript:alert(1)", "javascript:alert(1)"),
        ("https://forge.example/a b", "https://forge.example/a b"),
    ] {
        fs::write(
            &pins,
            format!("[[source]]\nname = \"bad\"\nkind = \"file\"\nmirror = \"{url}\"\nhash = \"{hash}\"\n"),
        )
        .unwrap();
        let err = fails(
            nixoci()
                .arg("sbom")
                .arg(&image)
                .args(["--graph", &f.attrs_json, "--mirrors"])
                .arg(&pins)
                .arg("-o")
                .arg(dir.path().join("bad.json")),
        );
        assert!(
            err.contains(&format!(
                "source bad: `{shown}` is not a URL a pin can name"
            )),
            "{url}: {err}"
        );
        assert!(!dir.path().join("bad.json").exists());
        let err = fails(nixoci().arg("verify").arg(&pins));
        assert!(err.contains("is not a URL a pin can name"), "{err}");
    }
}

/// The SBOM lists exactly the image's store paths, whatever the graph file
/// holds: a path of the graph outside the image is left out, a path of the
/// image missing from the graph is an error, and references come sorted
/// however the graph orders them.
#[test]
fn the_sbom_follows_the_image_not_the_graph_file() {
    let f = fixture();
    let dir = tempdir();
    let image = dir.path().join("image");
    build_fixture_image(&image, &[]);
    let attrs: Value = serde_json::from_slice(&fs::read(&f.attrs_json).unwrap()).unwrap();
    let mut graph = attrs["graph"].as_array().unwrap().clone();
    let outside = format!("/nix/store/{}-outside-1.0", "0".repeat(32));
    graph.push(serde_json::json!({
        "path": outside, "references": [], "narSize": 8,
        "narHash": "sha256:0rrfc4h9rhc6hzahw36w5jw4h72xlbg60lmhnn5mdyvpvw24llm2",
    }));
    // The link refers to the app and, here, to the lib, listed unsorted.
    for node in graph.iter_mut() {
        if node["path"] == f.link.as_str() {
            node["references"] = serde_json::json!([f.app, f.lib]);
        }
    }
    let write_graph = |graph: &[Value]| {
        let file = dir.path().join("graph.json");
        fs::write(&file, serde_json::json!({ "graph": graph }).to_string()).unwrap();
        file
    };
    let file = write_graph(&graph);
    let cdx = dir.path().join("app.cdx.json");
    run(nixoci()
        .arg("sbom")
        .arg(&image)
        .arg("--graph")
        .arg(&file)
        .arg("-o")
        .arg(&cdx));
    let doc: Value = serde_json::from_slice(&fs::read(&cdx).unwrap()).unwrap();
    let text = doc.to_string();
    assert!(!text.contains("outside-1.0"), "{text}");
    let link = doc["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["ref"] == f.link.as_str())
        .unwrap();
    let mut sorted = vec![f.app.clone(), f.lib.clone()];
    sorted.sort();
    assert_eq!(link["dependsOn"], serde_json::json!(sorted));

    // Without the note, the graph misses a path of the image.
    graph.retain(|n| n["path"] != f.note.as_str());
    let file = write_graph(&graph);
    let err = fails(
        nixoci()
            .arg("sbom")
            .arg(&image)
            .arg("--graph")
            .arg(&file)
            .arg("-o")
            .arg(dir.path().join("missing.json")),
    );
    assert!(
        err.contains(&format!(
            "{} is in the image but not in the closure graph",
            f.note
        )),
        "{err}"
    );
}

/// An SBOM attached after the image was pushed goes up with the next push,
/// although the tag already holds the image (nothing else is uploaded).
#[test]
fn an_sbom_attached_after_the_push_follows_on_the_next() {
    let f = fixture();
    let dir = tempdir();
    let image = dir.path().join("image");
    build_fixture_image(&image, &[]);
    let image_digest = common_digest(&image);
    let registry = Registry::start(Auth::Anonymous);
    let push = || {
        let out = run(nixoci()
            .args(["push", "--insecure", "-q", "--json"])
            .arg(&image)
            .arg(format!("{}/team/app:1", registry.host())));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    push();
    run(nixoci()
        .arg("sbom")
        .arg(&image)
        .args(["--graph", &f.attrs_json, "--attach", "-o"])
        .arg(dir.path().join("sbom.json")));
    let again = push();
    assert_eq!(again["pushed"][0]["status"], "already pushed", "{again:#}");
    let sbom = sbom_from_registry(&registry.host(), &image_digest);
    assert!(
        sbom["components"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["bom-ref"] == f.app.as_str()),
        "{sbom}"
    );
}
