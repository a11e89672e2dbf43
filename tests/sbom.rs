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
        .status()
        .unwrap()
        .success()
}

fn spdx_valid(file: &Path) -> bool {
    Command::new("pyspdxtools")
        .arg("-i")
        .arg(file)
        .output()
        .expect("pyspdxtools (.ci/setup installs spdx-tools)")
        .status
        .success()
}

#[test]
fn sboms_validate_and_list_exactly_the_image_store_paths() {
    let f = fixture();
    let dir = tempdir();
    let image = dir.path().join("image");
    run(nixoci()
        .arg("build")
        .arg(&f.app)
        .args(["--graph", &f.attrs_json, "--tag", "team/app:1", "-q", "-o"])
        .arg(&image));
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
