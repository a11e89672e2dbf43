//! Shared helpers for the integration tests: the real `nixoci` binary, a
//! closure built with Nix from plain derivations, and the outside tools
//! (umoci, skopeo, python3) used as independent checkers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn nixoci() -> Command {
    Command::new(env!("CARGO_BIN_EXE_nixoci"))
}

/// Runs a command and returns its output; panics with stderr if it failed.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {cmd:?}: {e} (is it installed? .ci/setup installs the test tools)")
    });
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}:\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn stdout(cmd: &mut Command) -> String {
    String::from_utf8(run(cmd).stdout).expect("utf-8 output")
}

/// Runs a command that must fail; returns its stderr.
pub fn fails(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        !out.status.success(),
        "{cmd:?} should have failed but succeeded:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn sh(script: &str) -> String {
    stdout(Command::new("bash").args(["-euo", "pipefail", "-c", script]))
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("nixoci-test-")
        .tempdir()
        .expect("tempdir")
}

/// Store paths of `tests/fixtures/closure.nix`, built once per test binary.
pub struct Fixture {
    pub lib: String,
    pub app: String,
    pub link: String,
    pub note: String,
    /// `.attrs.json` of a structured-attrs derivation exporting the graph.
    pub attrs_json: String,
    pub classic_graph: String,
}

pub fn nix_build(file: &Path, attrs: &[&str], extra: &[&str]) -> Vec<String> {
    let mut cmd = Command::new("nix-build");
    cmd.arg("--no-out-link").arg(file).args(extra);
    for a in attrs {
        cmd.args(["-A", a]);
    }
    stdout(&mut cmd).lines().map(str::to_string).collect()
}

pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let paths = nix_build(
            &repo().join("tests/fixtures/closure.nix"),
            &["lib", "app", "link", "note", "graphs", "classicGraph"],
            &[],
        );
        Fixture {
            lib: paths[0].clone(),
            app: paths[1].clone(),
            link: paths[2].clone(),
            note: paths[3].clone(),
            attrs_json: format!("{}/attrs.json", paths[4]),
            classic_graph: paths[5].clone(),
        }
    })
}

/// Parses `--json` output of `nixoci build`.
pub fn summary(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).expect("--json prints JSON")
}

pub fn layer_digests(summary: &serde_json::Value) -> Vec<String> {
    summary["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["digest"].as_str().expect("digest").to_string())
        .collect()
}

pub fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).expect("read json")).expect("valid json")
}

/// The manifest and config of a single-image OCI layout.
pub fn layout_manifest(layout: &Path) -> (serde_json::Value, serde_json::Value) {
    let index = read_json(&layout.join("index.json"));
    let digest = index["manifests"][0]["digest"].as_str().expect("digest");
    let manifest = read_json(&blob_path(layout, digest));
    let config = read_json(&blob_path(
        layout,
        manifest["config"]["digest"].as_str().expect("config"),
    ));
    (manifest, config)
}

pub fn blob_path(layout: &Path, digest: &str) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

/// The statically linked `nixoci-entrypoint`, built once per test binary the
/// way the README and the flake build it for images.
pub fn static_entrypoint() -> &'static PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let target = "x86_64-unknown-linux-gnu";
        run(Command::new(cargo)
            .current_dir(repo())
            .args([
                "build",
                "--release",
                "--quiet",
                "-p",
                "nixoci-entrypoint",
                "--target",
                target,
            ])
            .env("RUSTFLAGS", "-C target-feature=+crt-static"));
        let target_dir = std::env::var("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| repo().join("target"));
        target_dir.join(target).join("release/nixoci-entrypoint")
    })
}

/// Store paths of `tests/fixtures/authentik.nix`.
pub struct Authentik {
    pub busybox: String,
    pub django: String,
    pub ak: String,
    pub ak_bad_interpreter: String,
    pub entrypoint: String,
    pub wrapper_config: String,
}

pub fn authentik() -> &'static Authentik {
    static FIXTURE: OnceLock<Authentik> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let bin = static_entrypoint().display().to_string();
        let p = nix_build(
            &repo().join("tests/fixtures/authentik.nix"),
            &[
                "busybox",
                "authentik-django",
                "ak",
                "akBadInterpreter",
                "nixoci-entrypoint",
                "wrapperConfig",
            ],
            &["--arg", "entrypointBin", &bin],
        );
        Authentik {
            busybox: p[0].clone(),
            django: p[1].clone(),
            ak: p[2].clone(),
            ak_bad_interpreter: p[3].clone(),
            entrypoint: p[4].clone(),
            wrapper_config: p[5].clone(),
        }
    })
}
