//! `nixoci pins update` against real Nix: the fake-hash dance on a fixture
//! image (a source and a fixed output made from it), hashes checked with
//! `nix hash`, the TOML's comments and order kept, and a second run that
//! changes nothing.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use common::*;

fn update(manifest: &Path, fixture: &Path, extra: &[&str]) -> std::process::Output {
    nixoci()
        .args(["pins", "update"])
        .arg(manifest)
        .arg("--file")
        .arg(repo().join("tests/fixtures/pins-update"))
        .args(["--nixpkgs-rev", "0123abcd"])
        .args(extra)
        .env("NIXOCI_PINS_FIXTURE", fixture)
        .output()
        .unwrap()
}

fn nix_hash(kind: &str, path: &Path) -> String {
    stdout(Command::new("nix").args(["hash", kind, "--sri"]).arg(path))
        .trim()
        .to_string()
}

#[test]
fn pins_update_makes_each_hash_anew_and_keeps_the_rest_of_the_file() {
    let dir = tempdir();
    // Build users read the fixture.
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let fixture = dir.path().join("fixture");
    let tree = fixture.join("example-src");
    fs::create_dir_all(&tree).unwrap();
    fs::set_permissions(&fixture, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&tree, fs::Permissions::from_mode(0o755)).unwrap();
    // A salt, so that no earlier run's outputs answer for this one.
    let data = format!("data {}\n", rand_suffix());
    fs::write(tree.join("data"), &data).unwrap();
    let original = fs::read_to_string(repo().join("tests/fixtures/pins-update/pins.toml")).unwrap();
    let manifest = dir.path().join("pins.toml");
    fs::write(&manifest, &original).unwrap();

    let out = update(&manifest, &fixture, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("round 2"),
        "the fixed output waited for its source: {err}"
    );
    let source_hash = nix_hash("path", &tree);
    let data_hash = nix_hash("file", &tree.join("data"));
    let fake = "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
    let want = original
        .replacen(fake, &source_hash, 1)
        .replacen(fake, &data_hash, 1)
        .replace(
            "name = \"example-data-1.0\"\n",
            "name = \"example-data-1.0\"\nnixpkgs = \"0123abcd\"\n",
        );
    let updated = fs::read_to_string(&manifest).unwrap();
    assert_eq!(
        updated, want,
        "only the two hashes changed, and the revision was recorded"
    );
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains(&format!("example-src: {fake} -> {source_hash}")),
        "{report}"
    );

    // A second run with the same inputs changes nothing: not even the file
    // is replaced (a rewrite would be a new inode).
    let inode = fs::metadata(&manifest).unwrap().ino();
    let out = update(&manifest, &fixture, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fs::read_to_string(&manifest).unwrap(), updated);
    assert_eq!(fs::metadata(&manifest).unwrap().ino(), inode);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("example-src: unchanged") && report.contains("example-data-1.0: unchanged"),
        "{report}"
    );

    // A changed source gives its new hash, and the fixed output made from it too.
    let data = format!("changed {data}");
    fs::write(tree.join("data"), &data).unwrap();
    let out = update(&manifest, &fixture, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let changed = fs::read_to_string(&manifest).unwrap();
    assert_eq!(
        changed,
        updated
            .replace(&source_hash, &nix_hash("path", &tree))
            .replace(&data_hash, &nix_hash("file", &tree.join("data")))
    );
    assert_ne!(changed, updated);

    // --only: the other pin is not touched, and an unknown name is refused.
    let out = update(&manifest, &fixture, &["--only", "no-such-pin"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("no pin named `no-such-pin` (pins: example-src, example-data-1.0)"),
        "{err}"
    );
    assert_eq!(fs::read_to_string(&manifest).unwrap(), changed);
}

#[test]
fn pins_update_fails_clearly_and_writes_nothing_when_the_image_does_not_build() {
    let dir = tempdir();
    let original = fs::read_to_string(repo().join("tests/fixtures/pins-update/pins.toml")).unwrap();
    let manifest = dir.path().join("pins.toml");
    fs::write(&manifest, &original).unwrap();
    // No fixture: the source's builder fails before any hash is known.
    let out = update(&manifest, &dir.path().join("missing"), &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("no fixed output reported its hash"), "{err}");
    assert_eq!(fs::read_to_string(&manifest).unwrap(), original);
}
