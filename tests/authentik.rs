//! The authentik image (`containers/authentik`), the flake and the CI
//! recipe, built with Debian's Nix 2.8 against the stand-in nixpkgs: every
//! component from the fixture mirrors, and the derivation graph of the real
//! pins checked for where each fixed-output derivation reads from.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use serde_json::Value;

/// `nix build --json` of one of the flake's packages.
fn nix_flake_attr(attr: &str) -> Command {
    let (copy, standin, _) = flake_dirs();
    let mut cmd = Command::new("nix");
    cmd.args(["build", "--no-link", "--json"])
        .arg(format!("path:{}#{attr}", copy.display()))
        .args(["--override-input", "nixpkgs"])
        .arg(format!("path:{}", standin.display()))
        .arg("--no-write-lock-file")
        .envs(standin_env());
    cmd
}

fn nix_flake(args: &[&str]) -> Command {
    let (copy, standin, _) = flake_dirs();
    let mut cmd = Command::new("nix");
    cmd.args(args)
        .arg(format!("path:{}", copy.display()))
        .args(["--override-input", "nixpkgs"])
        .arg(format!("path:{}", standin.display()))
        .arg("--no-write-lock-file")
        .envs(standin_env());
    cmd
}

/// The pins as committed (real hashes: their fixed outputs are never built here).
fn real_pins() -> PathBuf {
    repo().join("mirrors/authentik.toml")
}

/// `nix-instantiate containers/authentik` of `repo_dir` with `pins`.
fn instantiate(repo_dir: &Path, pins: &Path) -> Output {
    let (_, standin, _) = flake_dirs();
    Command::new("nix-instantiate")
        .arg(repo_dir.join("containers/authentik"))
        .arg("-I")
        .arg(format!("nixpkgs={}", standin.display()))
        .arg("--arg")
        .arg("pinsFile")
        .arg(pins)
        .output()
        .unwrap()
}

fn drv_of(repo_dir: &Path, pins: &Path) -> String {
    let out = instantiate(repo_dir, pins);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `nixoci verify --drv` of the repository copy, whose nixpkgs is the stand-in.
fn verify_drv(args: &[&str]) -> Output {
    let (copy, standin, _) = flake_dirs();
    nixoci()
        .arg("verify")
        .arg("--drv")
        .arg("--repo")
        .arg(copy)
        .arg("--source-tree")
        .arg(standin)
        .args(args)
        .output()
        .unwrap()
}

/// A private copy of the repository copy, to edit.
fn edited_copy(dir: &Path) -> PathBuf {
    let (copy, _, _) = flake_dirs();
    let target = dir.join("repo");
    run(Command::new("cp").arg("-r").arg(copy).arg(&target));
    target
}

#[test]
fn the_image_is_built_from_the_mirrors_and_runs() {
    fixture_pins();
    let (copy, _, dir) = flake_dirs();
    let build = || {
        let json = stdout(&mut nix_flake_attr("authentik-image"));
        serde_json::from_str::<Value>(&json).unwrap()[0]["outputs"]["out"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let image = build();
    // nix-build of the container gives the same image as the flake.
    let by_nix_build = nix_build_authentik(&copy.join("mirrors/authentik.toml"), &[]);
    assert!(by_nix_build.status.success());
    assert_eq!(
        fs::read(Path::new(&image).join("index.json")).unwrap(),
        fs::read(
            Path::new(String::from_utf8_lossy(&by_nix_build.stdout).trim()).join("index.json")
        )
        .unwrap()
    );
    let (_, config) = layout_manifest(Path::new(&image));
    let c = &config["config"];
    assert_eq!(c["User"], "65534");
    assert!(
        c["ExposedPorts"].get("9000/tcp").is_some() && c["ExposedPorts"].get("9443/tcp").is_some()
    );
    assert!(c.get("Cmd").is_none());
    let env: Vec<&str> = c["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    for wanted in ["TMPDIR=/tmp", "AUTHENTIK_BLUEPRINTS_DIR=/blueprints"] {
        assert!(env.contains(&wanted), "{env:?}");
    }
    assert!(env
        .iter()
        .any(|e| e.starts_with("SSL_CERT_FILE=/nix/store/")));
    let report = stdout(nixoci().arg("check").arg(&image));
    assert!(report.contains("passed"), "{report}");

    let bundle = Bundle::unpack(
        Path::new(&image),
        "v2026.2.0",
        &dir.path().join("authentik"),
    );
    let rootfs = bundle.rootfs();
    assert_eq!(
        fs::metadata(rootfs.join("tmp")).unwrap().mode() & 0o7777,
        0o1777
    );
    let media = fs::metadata(rootfs.join("media")).unwrap();
    assert_eq!((media.uid(), media.gid()), (65534, 65534));

    // Run it for real (runc, uid 65534): every component, built from the
    // fixture mirrors, reports the one version.
    let (code, text, err) = bundle.run(&["server"], |_| {});
    assert_eq!(code, 0, "{text}{err}");
    for line in [
        "authentik server starting: server",
        "AUTHENTIK_BLUEPRINTS_DIR=/blueprints TMPDIR=/tmp uid=65534",
        "server 2026.2.0",
        "django 2026.2.0",
        "web ui 2026.2.0",
        "api client 2026.2.0 (3 operations)",
        "web assets found",
        // lifecycle/ak wrote the mode file where the server reads it.
        "mode server",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "`{line}` missing:\n{text}{err}"
        );
    }
    // The wrapper linked the built-in blueprints as real directories, so a
    // walk that skips directory symlinks (like authentik's rglob) finds them.
    for blueprint in [
        "default/flow-default-authentication-flow.yaml",
        "system/bootstrap.yaml",
        "system/nested/providers-oauth2.yaml",
        "example/flows-enrollment-2-stage.yaml",
    ] {
        assert!(
            text.contains(&format!("blueprint /blueprints/{blueprint}\n")),
            "{text}"
        );
    }
    // Values the pod spec sets reach ak unchanged; where it sets neither
    // (an environment without the image's Env), both get the wrapper's defaults.
    let with_env = |pod: &'static [&'static str]| {
        move |config: &mut Value| {
            let env = config["process"]["env"].as_array_mut().unwrap();
            env.retain(|e| {
                let e = e.as_str().unwrap();
                !e.starts_with("TMPDIR=") && !e.starts_with("AUTHENTIK_BLUEPRINTS_DIR=")
            });
            env.extend(pod.iter().map(|e| Value::from(*e)));
        }
    };
    for (pod, wanted) in [
        (
            &[
                "TMPDIR=/media",
                "AUTHENTIK_BLUEPRINTS_DIR=/blueprints/default",
            ][..],
            "AUTHENTIK_BLUEPRINTS_DIR=/blueprints/default TMPDIR=/media uid=65534",
        ),
        (
            &[][..],
            "AUTHENTIK_BLUEPRINTS_DIR=/blueprints TMPDIR=/tmp uid=65534",
        ),
    ] {
        let (code, text, err) = bundle.run(&["server"], with_env(pod));
        assert_eq!(code, 0, "{text}{err}");
        assert!(
            text.lines().any(|l| l == wanted),
            "{pod:?}: `{wanted}` missing:\n{text}{err}"
        );
    }
    // `kubectl exec … sh` does not run the entrypoint, and still sees both.
    let (code, text, err) = bundle.run(&[], |config| {
        config["process"]["args"] = serde_json::json!([
            "/bin/sh",
            "-c",
            "echo dir=$AUTHENTIK_BLUEPRINTS_DIR tmp=$TMPDIR"
        ]);
    });
    assert_eq!(
        (code, text.trim()),
        (0, "dir=/blueprints tmp=/tmp"),
        "{err}"
    );

    // Build-only parts stay out of the runtime closure.
    let mut closure = String::new();
    for part in ["ak", "authentik-django", "authentik-server"] {
        let out = nix_build_authentik(
            &copy.join("mirrors/authentik.toml"),
            &["-A", &format!("components.{part}")],
        );
        let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
        closure += &stdout(Command::new("nix-store").args(["-qR", &path]));
    }
    assert!(closure.contains("-authentik-webui-2026.2.0"), "{closure}");
    for build_only in [
        "python-deps",
        "webui-deps",
        "client-go",
        "client-ts",
        "-source",
        "authentik-version-",
    ] {
        assert!(
            !closure.contains(build_only),
            "{build_only} is in the runtime closure:\n{closure}"
        );
    }
}

#[test]
fn every_fixed_output_of_the_real_graph_is_pinned() {
    let (copy, _, _) = flake_dirs();
    let drv = drv_of(copy, &real_pins());
    let pins = real_pins();
    let pins = pins.to_str().unwrap();

    let out = verify_drv(&["--allow-upstream", "--json", &drv, pins]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let fetches = report["fetches"].as_array().unwrap();
    // What the evaluation copied into the store is the stand-in's files.
    let sources = report["sources"].as_array().unwrap();
    assert!(sources.len() >= 5, "{sources:#?}");
    for source in sources {
        assert_eq!(source["class"], "tree", "{source:#}");
    }
    let nixoci_source = sources.iter().find(|s| s["name"] == "nixoci").unwrap();
    assert_eq!(
        nixoci_source["detail"],
        format!("source tree {}: bin/nixoci", flake_dirs().1.display())
    );
    // Without the stand-in's tree, its nixoci binary is an unknown source.
    let out = nixoci()
        .args(["verify", "--drv", "--repo"])
        .arg(copy)
        .args([&drv, pins])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("fetched during evaluation and not pinned")
            && err.contains("-nixoci ")
            && err.contains("-nixoci-entrypoint"),
        "{err}"
    );
    let class_of = |name: &str| -> Vec<&str> {
        fetches
            .iter()
            .filter(|f| f["name"].as_str().unwrap().contains(name))
            .map(|f| f["class"].as_str().unwrap())
            .collect()
    };
    assert_eq!(class_of("authentik-version-2026.2.0"), ["mirrored"]);
    assert_eq!(class_of("authentik-client-go-v3.2026.2.0"), ["mirrored"]);
    assert_eq!(
        class_of("oci-python-ceb4fcc090851717a3069d78e85ceb1e86c2740c"),
        ["mirrored"]
    );
    assert_eq!(class_of("python-deps"), ["network-build"]);
    assert_eq!(class_of("webui-deps"), ["network-build"]);
    assert_eq!(class_of("go-modules"), ["network-build"]);
    assert_eq!(fetches.len(), 6, "{fetches:#?}");
    for mirrored in fetches.iter().filter(|f| f["class"] == "mirrored") {
        assert_eq!(mirrored["mode"], "recursive");
        assert!(mirrored["urls"][0]
            .as_str()
            .unwrap()
            .starts_with("https://forge.ops.eblu.me/mirrors/"));
    }

    // Every source comes from the mirrors: the proof needs no --allow-upstream.
    let out = verify_drv(&[&drv, pins]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        report.contains(
            "6 fixed-output derivations: 3 mirrored, 0 pinned upstream, 3 network builds, 0 unpinned"
        ),
        "{report}"
    );
}

#[test]
fn an_upstream_fetch_added_to_any_component_is_caught() {
    for (file, argument, anchor, fetch) in [
        (
            "webui.nix",
            "fetchurl",
            "stdenvNoCC.mkDerivation {",
            r#"extraSource = fetchurl { url = "https://example.org/evil-1.0.tar.gz"; hash = "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="; };"#,
        ),
        (
            "python-deps.nix",
            "fetchFromGitHub",
            "stdenv.mkDerivation {",
            r#"patchSource = fetchFromGitHub { owner = "evil"; repo = "patches"; rev = "v1"; hash = "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="; };"#,
        ),
    ] {
        let dir = tempdir();
        let copy = edited_copy(dir.path());
        let path = copy.join("containers/authentik").join(file);
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains(anchor), "{file}");
        let text = text
            .replacen("{", &format!("{{\n  {argument},"), 1)
            .replacen(anchor, &format!("{anchor}\n  {fetch}"), 1);
        fs::write(&path, text).unwrap();
        let drv = drv_of(&copy, &real_pins());
        let out = verify_drv(&["--allow-upstream", &drv, real_pins().to_str().unwrap()]);
        let report = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{file}: {report}");
        let line = report
            .lines()
            .find(|l| l.starts_with("UNPINNED"))
            .unwrap_or_else(|| panic!("{report}"));
        let evil = if argument == "fetchurl" {
            "evil-1.0.tar.gz"
        } else {
            "source"
        };
        assert!(line.ends_with(evil), "{file}: {line}");
        assert!(report.contains("1 unpinned"), "{report}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("1 fixed-output derivation(s) not proven"),
            "{err}"
        );
    }
}

#[test]
fn edited_pins_are_caught() {
    let (copy, _, _) = flake_dirs();
    let drv = drv_of(copy, &real_pins());
    let dir = tempdir();
    let text = fs::read_to_string(real_pins()).unwrap();

    // A hash edited in the TOML no longer vouches for what the graph fetches.
    let edited = dir.path().join("edited.toml");
    fs::write(
        &edited,
        text.replace(
            "sha256-pVQ34cZYX3hlk6hF1aZ/n32xMqTF4Jmp0G0VGDU7iXc=",
            "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
        ),
    )
    .unwrap();
    let out = verify_drv(&["--allow-upstream", &drv, edited.to_str().unwrap()]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(
        report.contains("UNPINNED         authentik-version-2026.2.0"),
        "{report}"
    );
    assert!(report.contains("its hash is not that pin's"), "{report}");

    // The version, the tags and the fixed-output names must agree, or
    // nothing evaluates.
    for (from, to, message) in [
        ("version = \"2026.2.0\"", "version = \"2026.2.1\"", "version is 2026.2.1, but containers/authentik/default.nix says 2026.2.0"),
        ("rev = \"v3.2026.2.0\"", "rev = \"v3.2026.1.0\"", "`authentik-client-go` is pinned at rev `v3.2026.1.0`, but version 2026.2.0 needs `v3.2026.2.0`"),
        ("name = \"authentik-webui-deps-2026.2.0\"", "name = \"authentik-webui-deps-2026.1.0\"", "no [[fod]] named `authentik-webui-deps-2026.2.0`"),
    ] {
        assert!(text.contains(from), "{from}");
        let pins = dir.path().join("bad.toml");
        fs::write(&pins, text.replacen(from, to, 1)).unwrap();
        let out = instantiate(copy, &pins);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(err.contains(message), "{message}:\n{err}");
    }
}

#[test]
fn override_attrs_really_rebuilds_a_component() {
    let pins = fixture_pins();
    let (copy, standin, _) = flake_dirs();
    let expr = format!(
        r#"let c = (import {}/containers/authentik {{ pkgs = import {} {{ }}; pinsFile = {}; }}).components;
           in [ c.webui (c.webui.overrideAttrs (old: {{ postInstall = (old.postInstall or "") + "echo overridden > $out/overridden"; }})) ]"#,
        copy.display(),
        standin.display(),
        pins.display()
    );
    let out = Command::new("nix-build")
        .args(["--no-out-link", "-E", &expr])
        .envs(standin_env())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let paths: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(paths.len(), 2);
    assert_ne!(paths[0], paths[1]);
    assert!(!Path::new(&paths[0]).join("overridden").exists());
    assert_eq!(
        fs::read_to_string(Path::new(&paths[1]).join("overridden")).unwrap(),
        "overridden\n"
    );
    // The override kept the rest of the build.
    assert_eq!(
        fs::read(Path::new(&paths[0]).join("dist/index.js")).unwrap(),
        fs::read(Path::new(&paths[1]).join("dist/index.js")).unwrap()
    );
}

#[test]
fn the_committed_lock_pins_nixpkgs_and_reads_offline() {
    let (copy, _, _) = flake_dirs();
    let out = Command::new("nix")
        .args(["flake", "metadata", "--json"])
        .arg(format!("path:{}", copy.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).unwrap();
    let locked = &meta["locks"]["nodes"]["nixpkgs"]["locked"];
    assert_eq!(locked["rev"], "fabb8c9deee281e50b1065002c9828f2cf7b2239");
    assert_eq!(
        locked["narHash"],
        "sha256-YaHht/C35INEX3DeJQNWjNaTcPjYmBwwjFJ2jdtr+5U="
    );
    assert_eq!(locked["lastModified"], 1772598333);
    assert_eq!(
        meta["locks"]["nodes"]["nixpkgs"]["original"]["ref"],
        "nixos-25.11"
    );
}

#[test]
fn flake_evaluates_every_output() {
    let out = nix_flake(&["flake", "check", "--no-build"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let show = nix_flake(&["flake", "show", "--json"]).output().unwrap();
    let outputs: Value = serde_json::from_slice(&show.stdout).unwrap();
    for (attr, names) in [
        (
            "packages",
            vec!["nixoci", "nixoci-entrypoint", "authentik-image", "default"],
        ),
        ("apps", vec!["push"]),
        ("devShells", vec!["default"]),
        ("checks", vec!["authentik-image"]),
    ] {
        for n in names {
            assert!(
                outputs[attr]["x86_64-linux"].get(n).is_some(),
                "{attr}.{n} missing: {outputs}"
            );
        }
    }
    assert!(
        outputs.get("lib").is_some() && outputs.get("overlays").is_some(),
        "{outputs}"
    );
    // The tools for both platforms our users run; the authentik image only
    // where the pins hold the per-platform fixed outputs.
    assert!(
        outputs["packages"]["aarch64-linux"].get("nixoci").is_some(),
        "{outputs}"
    );
    assert!(
        outputs["packages"]["aarch64-linux"]
            .get("authentik-image")
            .is_none(),
        "{outputs}"
    );

    // With aarch64 pins (here never built, only evaluated) for every
    // per-platform fixed output, the arm64 image and the index of both
    // appear; with one of them missing, neither does.
    let dir = tempdir();
    let copy = edited_copy(dir.path());
    let pins = copy.join("mirrors/authentik.toml");
    let aarch64_pin = |name: &str| {
        format!("\n[[fod]]\nname = \"{name}\"\noutputHash = \"sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"\nsystem = \"aarch64-linux\"\n")
    };
    let mut text = fs::read_to_string(&pins).unwrap();
    text.push_str(&aarch64_pin("authentik-webui-deps-2026.2.0"));
    fs::write(&pins, &text).unwrap();
    let names = nix_flake_eval_names(&copy, "packages.aarch64-linux");
    assert!(!names.contains("authentik-image"), "{names}");
    text.push_str(&aarch64_pin("authentik-python-deps-2026.2.0"));
    fs::write(&pins, &text).unwrap();
    let arch = nix_flake_eval(
        &copy,
        "packages.aarch64-linux.authentik-image.nixoci.architecture",
    );
    assert_eq!(arch, "arm64");
    let args = nix_flake_eval(&copy, "packages.x86_64-linux.authentik-index.drvAttrs.args");
    assert_eq!(args.matches("-authentik-oci").count(), 2, "{args}");
}

/// The attribute names of an attribute set of the flake in `copy`.
fn nix_flake_eval_names(copy: &Path, attr: &str) -> String {
    nix_flake_eval_with(copy, attr, &["--apply", "builtins.attrNames"])
}

/// `nix eval --json` of an attribute of the flake in `copy` (with the stand-in nixpkgs).
fn nix_flake_eval(copy: &Path, attr: &str) -> String {
    nix_flake_eval_with(copy, attr, &[])
}

fn nix_flake_eval_with(copy: &Path, attr: &str, extra: &[&str]) -> String {
    let (_, standin, _) = flake_dirs();
    let out = stdout(
        Command::new("nix")
            .args(["eval", "--json"])
            .arg(format!("path:{}#{attr}", copy.display()))
            .args(["--override-input", "nixpkgs"])
            .arg(format!("path:{}", standin.display()))
            .arg("--no-write-lock-file")
            .args(extra)
            .envs(standin_env()),
    );
    match serde_json::from_str::<Value>(&out) {
        Ok(Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => out,
    }
}

#[test]
fn the_ci_recipe_builds_checks_and_pushes_a_container_once() {
    fixture_pins();
    let (copy, _, _) = flake_dirs();
    let registry = Registry::start(Auth::Htpasswd);
    let script = |sha: &str| recipe(copy, "authentik", sha, &registry).output().unwrap();
    let out = script("2d4098e0123456789abcdef");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(!text.contains(PASSWORD), "the key leaked: {text}");
    let reference = format!(
        "{}/blumeops/authentik:v2026.2.0-2d4098e-nix",
        registry.host()
    );
    let marker = format!("pushed {}/blumeops/authentik@", registry.host());
    let digest = text
        .split(&marker)
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("{text}"));
    let inspect: Value = serde_json::from_str(&stdout(
        Command::new("skopeo")
            .args([
                "inspect",
                "--tls-verify=false",
                "--creds",
                &format!("{USER}:{PASSWORD}"),
            ])
            .arg(format!("docker://{reference}")),
    ))
    .unwrap();
    assert_eq!(
        inspect["Digest"], digest,
        "the tag holds the printed digest"
    );
    // Re-running the job for the same commit succeeds without touching the tag.
    let again = script("2d4098e0123456789abcdef");
    let text = String::from_utf8_lossy(&again.stderr);
    assert!(
        again.status.success() && text.contains("already pushed"),
        "{text}"
    );
}

/// The CI recipe for `container` at `sha` in `repo_dir`, pushing to `registry`
/// with the stand-in nixpkgs and the fixture mirrors.
fn recipe(repo_dir: &Path, container: &str, sha: &str, registry: &Registry) -> Command {
    recipe_step(repo_dir, &[container, sha], registry)
}

/// The CI recipe with `args` (`[build|push] CONTAINER SHA`), as `recipe`.
fn recipe_step(repo_dir: &Path, args: &[&str], registry: &Registry) -> Command {
    let (_, standin, _) = flake_dirs();
    let mut cmd = Command::new("bash");
    cmd.arg(repo_dir.join(".forgejo/scripts/build-and-push.sh"))
        .args(args)
        .current_dir(repo_dir)
        .env("REGISTRY", format!("{}/blumeops", registry.host()))
        .env("REGISTRY_USER", USER)
        .env("ZOT_CI_API_KEY", PASSWORD)
        .env("NIXOCI", release_nixoci())
        .env(
            "NIX_BUILD_FLAGS",
            format!("-I nixpkgs={}", standin.display()),
        )
        .env("PUSH_FLAGS", "--insecure -q")
        .envs(standin_env());
    cmd
}

/// `nix-build` of `containers/authentik` in `repo_dir` with its own pins.
fn nix_build_in(repo_dir: &Path, extra: &[&str]) -> Output {
    let (_, standin, _) = flake_dirs();
    Command::new("nix-build")
        .arg(repo_dir.join("containers/authentik"))
        .arg("-I")
        .arg(format!("nixpkgs={}", standin.display()))
        .args(extra)
        .envs(standin_env())
        .output()
        .unwrap()
}

fn layer_digests_of(image: &Path) -> Vec<String> {
    let (manifest, _) = layout_manifest(image);
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_changed_top_package_rebuilds_no_explicit_layer() {
    fixture_pins();
    let dir = tempdir();
    let copy = edited_copy(dir.path());
    let built = |out: &Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    };
    let before = built(&nix_build_in(&copy, &["--no-out-link"]));
    let before_layers = layer_digests_of(&before);
    assert_eq!(
        before_layers.len(),
        8,
        "4 explicit, 3 planned, 1 customisation"
    );

    let ak = copy.join("containers/authentik/ak.nix");
    let text = fs::read_to_string(&ak).unwrap();
    fs::write(
        &ak,
        text.replacen(
            "export PYTHONDONTWRITEBYTECODE=1",
            &format!(
                "export PYTHONDONTWRITEBYTECODE=1\n  export AK_EDITED={}",
                rand_suffix()
            ),
            1,
        ),
    )
    .unwrap();
    let dry = nix_build_in(&copy, &["--no-out-link", "--dry-run"]);
    let plan = String::from_utf8_lossy(&dry.stderr);
    assert!(plan.contains("-ak.drv"), "{plan}");
    assert!(plan.contains("-authentik-oci.drv"), "{plan}");
    assert!(
        !plan.contains("-layer.drv"),
        "an explicit layer would be rebuilt:\n{plan}"
    );

    let after = built(&nix_build_in(&copy, &["--no-out-link"]));
    let after_layers = layer_digests_of(&after);
    assert_eq!(
        before_layers[..4],
        after_layers[..4],
        "the explicit layers are the same blobs"
    );
    assert_ne!(before_layers, after_layers);
    // The explicit layers' blobs are links into their derivations' outputs.
    let blob = after
        .join("blobs/sha256")
        .join(&after_layers[0]["sha256:".len()..]);
    assert!(fs::read_link(&blob).unwrap().ends_with("blob"));
    let report = stdout(nixoci().arg("check").arg(&after));
    assert!(report.contains("passed"), "{report}");
    let bundle = Bundle::unpack(&after, "v2026.2.0", &dir.path().join("run"));
    let (code, text, err) = bundle.run(&["server"], |_| {});
    assert_eq!(code, 0, "{text}{err}");
    assert!(
        text.contains("server 2026.2.0\n") && text.contains("web ui 2026.2.0\n"),
        "{text}"
    );
}

#[test]
fn the_ci_recipe_refuses_hostile_inputs() {
    let (copy, _, _) = flake_dirs();
    let dir = tempdir();
    let pwned = dir.path().join("pwned");
    for (container, sha) in [
        (
            format!("x\"; touch {}; \"", pwned.display()),
            "2d4098e".to_string(),
        ),
        ("../../etc".to_string(), "2d4098e".to_string()),
        (
            "authentik".to_string(),
            format!("$(touch {})", pwned.display()),
        ),
        ("authentik".to_string(), "main; touch x".to_string()),
    ] {
        let out = Command::new("bash")
            .arg(copy.join(".forgejo/scripts/build-and-push.sh"))
            .args([&container, &sha])
            .current_dir(copy)
            .env("REGISTRY", "127.0.0.1:1/blumeops")
            .env("REGISTRY_USER", "ci")
            .env("NIXOCI", "/bin/false")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{container} {sha}: {out:?}");
        assert!(!pwned.exists(), "{container} {sha} ran shell code");
    }
}

#[test]
fn the_workflow_passes_inputs_through_env_and_pins_actions() {
    for (workflow, min_runs) in [
        ("build-container-nix.yaml", 4),
        ("authentik-real-build.yaml", 1),
        ("container-diff-nix.yaml", 4),
    ] {
        workflow_is_safe(workflow, min_runs);
    }
    // The real build needs no secret.
    let text =
        fs::read_to_string(repo().join(".forgejo/workflows/authentik-real-build.yaml")).unwrap();
    assert!(!text.contains("secrets."), "{text}");
    // Every workflow passes actionlint, with our runner's label.
    let lint = Command::new("actionlint")
        .arg("-config-file")
        .arg(repo().join(".forgejo/actionlint.yaml"))
        .args(
            [
                "authentik-real-build.yaml",
                "build-container-nix.yaml",
                "container-diff-nix.yaml",
            ]
            .map(|w| repo().join(".forgejo/workflows").join(w)),
        )
        .output()
        .expect("actionlint (.ci/setup installs it)");
    assert!(
        lint.status.success(),
        "{}",
        String::from_utf8_lossy(&lint.stdout)
    );
    // The registry key reaches only the push step, which evaluates no Nix
    // code; every build step is limited to commits of the default branch.
    let text =
        fs::read_to_string(repo().join(".forgejo/workflows/build-container-nix.yaml")).unwrap();
    let steps: Vec<&str> = text.split("\n      - ").collect();
    let with_secret: Vec<&&str> = steps.iter().filter(|s| s.contains("secrets.")).collect();
    assert_eq!(with_secret.len(), 1, "{with_secret:#?}");
    assert!(
        with_secret[0].contains("run: bash .forgejo/scripts/build-and-push.sh push "),
        "{}",
        with_secret[0]
    );
    for step in steps.iter().filter(|s| s.contains("build-and-push.sh")) {
        assert!(
            step.contains("DEFAULT_BRANCH: ${{ github.event.repository.default_branch }}"),
            "{step}"
        );
    }
    // The pull-request diff: the job's token reaches only the comment step,
    // which runs no Nix code.
    let text =
        fs::read_to_string(repo().join(".forgejo/workflows/container-diff-nix.yaml")).unwrap();
    let steps: Vec<&str> = text.split("\n      - ").collect();
    let with_secret: Vec<&&str> = steps.iter().filter(|s| s.contains("secrets.")).collect();
    assert_eq!(with_secret.len(), 1, "{with_secret:#?}");
    assert!(
        with_secret[0].contains("run: bash .forgejo/scripts/pr-comment.sh ")
            && !with_secret[0].contains("build-and-push.sh"),
        "{}",
        with_secret[0]
    );
}

/// Every checkout leaves no token in .git/config for later steps (and Nix
/// code) to read.
fn checkouts_keep_no_credentials(text: &str) {
    let checkouts: Vec<&str> = text.split("uses: actions/checkout@").skip(1).collect();
    assert!(!checkouts.is_empty());
    for checkout in checkouts {
        let step = checkout.split("\n      - ").next().unwrap();
        assert!(step.contains("persist-credentials: false"), "{step}");
    }
}

fn workflow_is_safe(workflow: &str, min_runs: usize) {
    let text = fs::read_to_string(repo().join(".forgejo/workflows").join(workflow)).unwrap();
    checkouts_keep_no_credentials(&text);
    let mut in_run: Option<usize> = None;
    let mut runs = 0;
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        let trimmed = line.trim_start().trim_start_matches("- ");
        if let Some(run_indent) = in_run {
            if line.trim().is_empty() || indent > run_indent {
                assert!(
                    !line.contains("${{"),
                    "an expression inside a script: {line}"
                );
                continue;
            }
            in_run = None;
        }
        if let Some(script) = trimmed.strip_prefix("run:") {
            runs += 1;
            assert!(
                !script.contains("${{"),
                "an expression inside a script: {line}"
            );
            if script.trim() == "|" {
                in_run = Some(indent);
            }
        }
        if let Some(action) = trimmed.strip_prefix("uses:") {
            let pin = action
                .split_whitespace()
                .next()
                .unwrap()
                .rsplit_once('@')
                .unwrap()
                .1;
            assert!(
                pin.len() == 40 && pin.bytes().all(|c| c.is_ascii_hexdigit()),
                "not pinned by commit: {line}"
            );
        }
    }
    assert!(runs >= min_runs, "{workflow}: {runs} run steps found");
}

/// A repository copy as our users' runner sees it: no root flake (so no
/// flake.lock) and no NIX_PATH; `nixpkgs` comes from a flake registry file,
/// which the `NIX_CONFIG` returned beside the copy names (with the stand-in's
/// sandbox).
fn bare_runner_copy(dir: &Path) -> (PathBuf, String) {
    let copy = edited_copy(dir);
    for file in ["flake.nix", "flake.lock"] {
        fs::remove_file(copy.join(file)).unwrap();
    }
    let (_, standin, _) = flake_dirs();
    let registry_file = dir.join("flake-registry.json");
    fs::write(
        &registry_file,
        serde_json::json!({"version": 2, "flakes": [{
            "from": {"type": "indirect", "id": "nixpkgs"},
            "to": {"type": "path", "path": standin},
        }]})
        .to_string(),
    )
    .unwrap();
    let config = format!(
        "{}flake-registry = {}\n",
        standin_nix_config(),
        registry_file.display()
    );
    (copy, config)
}

#[test]
fn the_ci_recipe_runs_on_a_bare_runner_and_finds_every_kind_of_version() {
    // A runner like our users': nix and skopeo, no root flake, no NIX_PATH,
    // no nixoci; nixpkgs comes from the flake registry.
    let dir = tempdir();
    let (copy, nix_config) = bare_runner_copy(dir.path());
    // What a dockerTools user writes: the default result, a .tar.gz.
    let image = |name: &str, let_version: &str, version_attr: &str| {
        format!(
            r#"{{ pkgs ? import <nixpkgs> {{ }} }}:
let
  nixoci = pkgs.callPackage ../../nix/package.nix {{ }};
  nixociLib = import ../../nix {{ inherit nixoci pkgs; system = builtins.currentSystem; }};
  {let_version}
in
nixociLib.buildLayeredImage {{
  name = "blumeops/{name}";
  contents = [ pkgs.bashInteractive ];
  config.Entrypoint = [ "${{pkgs.bashInteractive}}/bin/bash" "-c" "echo {name}" ];
  {version_attr}
}}
"#
        )
    };
    let containers = [
        (
            "from-dockerfile",
            image("from-dockerfile", "", ""),
            "v1.4.2-2d4098e-nix",
        ),
        (
            "from-version",
            image("from-version", "version = \"2.3.4\";", "tag = version;"),
            "v2.3.4-2d4098e-nix",
        ),
        (
            "from-passthru",
            image("from-passthru", "", "passthru.version = \"0.9.1\";"),
            "v0.9.1-2d4098e-nix",
        ),
    ];
    for (name, text, _) in &containers {
        fs::create_dir_all(copy.join("containers").join(name)).unwrap();
        fs::write(copy.join("containers").join(name).join("default.nix"), text).unwrap();
    }
    fs::write(
        copy.join("containers/from-dockerfile/Dockerfile"),
        "FROM scratch\nARG CONTAINER_APP_VERSION=1.4.2\n",
    )
    .unwrap();
    let registry = Registry::start(Auth::Htpasswd);
    for (container, _, tag) in containers {
        let out = recipe(&copy, container, "2d4098e0123456789abcdef", &registry)
            .env_remove("NIX_PATH")
            .env_remove("NIXOCI")
            .env_remove("NIX_BUILD_FLAGS")
            .env("NIX_CONFIG", &nix_config)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{container}: {text}");
        assert!(
            text.contains("building nixoci from its pinned source"),
            "{container}: {text}"
        );
        assert!(
            text.contains("nixpkgs comes from the runner's flake registry and is not pinned"),
            "{container}: {text}"
        );
        assert!(text.contains(&format!("({tag})")), "{container}: {text}");
        let manifest: Value = serde_json::from_str(&stdout(
            Command::new("skopeo")
                .args([
                    "inspect",
                    "--raw",
                    "--tls-verify=false",
                    "--creds",
                    &format!("{USER}:{PASSWORD}"),
                ])
                .arg(format!(
                    "docker://{}/blumeops/{container}:{tag}",
                    registry.host()
                )),
        ))
        .unwrap();
        for layer in manifest["layers"].as_array().unwrap() {
            assert_eq!(
                layer["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip",
                "{container}: the archive's plain layers are pushed gzipped"
            );
        }
    }

    // The workflow's way: a build step, then a push step that evaluates
    // nothing. Nix code that reads the registry key sees it empty, even
    // where the key is in the build step's environment, and no derivation
    // holds it.
    fs::create_dir_all(copy.join("containers/reads-the-key")).unwrap();
    fs::write(
        copy.join("containers/reads-the-key/default.nix"),
        image(
            "reads-the-key",
            "version = \"3.0.0\";",
            "tag = version; config.Labels.seen = \"key:${builtins.getEnv \"ZOT_CI_API_KEY\"}\";",
        ),
    )
    .unwrap();
    // nixpkgs is the one flake.lock locks (the runner's registry then
    // points nowhere).
    let (_, standin, _) = flake_dirs();
    let nar_hash = stdout(Command::new("nix").args(["hash", "path"]).arg(standin));
    fs::write(
        copy.join("flake.lock"),
        serde_json::json!({"nodes": {
            "nixpkgs": {"locked": {"type": "path", "path": standin, "narHash": nar_hash.trim()}},
            "root": {"inputs": {"nixpkgs": "nixpkgs"}}
        }, "root": "root", "version": 7})
        .to_string(),
    )
    .unwrap();
    let nix_config = format!("{nix_config}flake-registry = /nonexistent/registry.json\n");
    // Only commits of the default branch are built.
    let git = |args: &[&str]| stdout(Command::new("git").arg("-C").arg(&copy).args(args));
    git(&["init", "-q", "-b", "main"]);
    git(&["add", "-A"]);
    git(&[
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@t",
        "commit",
        "-qm",
        "main",
    ]);
    git(&["update-ref", "refs/remotes/origin/main", "HEAD"]);
    let on_main = git(&["rev-parse", "HEAD"]).trim().to_string();
    git(&["checkout", "-qb", "side"]);
    git(&[
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@t",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "side",
    ]);
    let on_side = git(&["rev-parse", "HEAD"]).trim().to_string();
    git(&["checkout", "-q", "main"]);
    let outputs = dir.path().join("outputs");
    let step = |mode: &str, sha: &str, extra: &[(&str, String)]| {
        recipe_step(&copy, &[mode, "reads-the-key", sha], &registry)
            .env_remove("NIX_PATH")
            .env_remove("NIXOCI")
            .env_remove("NIX_BUILD_FLAGS")
            .env("NIX_CONFIG", &nix_config)
            .env("DEFAULT_BRANCH", "main")
            .env("GITHUB_OUTPUT", &outputs)
            .envs(extra.iter().map(|(k, v)| (*k, v)))
            .output()
            .unwrap()
    };
    let refused = step("build", &on_side, &[]);
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("is not on origin/main"));
    let built = step("build", &on_main, &[]);
    assert!(built.status.success(), "{built:?}");
    assert!(
        String::from_utf8_lossy(&built.stdout).contains("locked in flake.lock"),
        "{built:?}"
    );
    let output = |key: &str| step_output(&outputs, key);
    let result = output("result");
    let drv = stdout(Command::new("nix-store").args(["-q", "--deriver", &result]));
    let drvs = stdout(Command::new("nix-store").args(["-qR", drv.trim()]));
    let mut checked = 0;
    for drv in drvs.lines().filter(|d| d.ends_with(".drv")) {
        let text = fs::read(drv).unwrap();
        assert!(
            !text
                .windows(PASSWORD.len())
                .any(|w| w == PASSWORD.as_bytes()),
            "{drv} holds the key"
        );
        checked += 1;
    }
    assert!(checked > 3, "{drvs}");
    let pushed = step(
        "push",
        &on_main,
        &[
            ("RESULT", result),
            ("TAG", output("tag")),
            ("NIXOCI", output("nixoci")),
        ],
    );
    assert!(pushed.status.success(), "{pushed:?}");
    let config: Value = serde_json::from_str(&stdout(
        Command::new("skopeo")
            .args([
                "inspect",
                "--config",
                "--tls-verify=false",
                "--creds",
                &format!("{USER}:{PASSWORD}"),
            ])
            .arg(format!(
                "docker://{}/blumeops/reads-the-key:v3.0.0-{}-nix",
                registry.host(),
                &on_main[..7]
            )),
    ))
    .unwrap();
    assert_eq!(config["config"]["Labels"]["seen"], "key:", "{config:#}");
}

/// The upstream facts that stopped a real nixpkgs build, one component at a
/// time. The fixtures carry them (each fixture file says which upstream fact
/// it stands for) and the stand-in fails on them as nixpkgs does: the real
/// generator aborts on a missing templateDir, real npm fails its TLS
/// handshake without a CA file, real Node refuses a missing export,
/// builders are build users (not root) and find store copies read-only,
/// `npm run` finds no /usr/bin/env.
#[test]
fn each_upstream_trap_is_met_component_by_component() {
    let pins = fixture_pins();
    let component = |name: &str| -> PathBuf {
        let out = nix_build_authentik(pins, &["-A", &format!("components.{name}")]);
        assert!(
            out.status.success(),
            "components.{name} does not build:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    };
    // 1. client-go's config.yaml says `templateDir: /local/templates/`. The
    // real generator wrote the client, with client-go's own template too.
    let client_go = component("client-go");
    let schema_version = fs::read_to_string(client_go.join("schema_version.go")).unwrap();
    assert!(
        schema_version.starts_with("// Generated with client-go's own templates.\n"),
        "{schema_version}"
    );
    assert!(
        schema_version.contains(
            r#"var Operations = []string{ "CoreUsersList", "FlowsInstancesList", "RootConfigRetrieve", }"#
        ),
        "{schema_version}"
    );
    let client = fs::read_to_string(client_go.join("client.go")).unwrap();
    assert!(client.contains("func NewAPIClient("), "{client}");
    // 2. dumb-init has no entry point: its binary is a wheel data script.
    // Real uv installed the real wheel; the binary runs (it is static).
    let django = component("authentik-django");
    let dumb_init = run(Command::new(django.join("bin/dumb-init")).arg("--version"));
    assert_eq!(
        String::from_utf8_lossy(&dumb_init.stderr),
        "dumb-init v1.2.5\n"
    );
    // The stand-in's Python is the machine's 3.11 (see its pythonVersion).
    for script in ["gunicorn", "uvicorn", "dramatiq"] {
        let text = fs::read_to_string(django.join("bin").join(script)).unwrap();
        assert!(
            text.starts_with(&format!("#!{}/bin/python3.11", django.display())),
            "{text}"
        );
    }
    // 3. The vendored modules come read-only from the store, and the build
    // user cannot delete in them without a chmod.
    let server = component("authentik-server");
    let go_modules = nix_build_authentik(pins, &["-A", "components.authentik-server.goModules"]);
    let go_modules = PathBuf::from(String::from_utf8_lossy(&go_modules.stdout).trim());
    assert_eq!(
        fs::metadata(go_modules.join("goauthentik.io/api"))
            .unwrap()
            .mode()
            & 0o222,
        0,
        "the trap: a read-only copy"
    );
    assert!(server.join("bin").is_dir());
    // 4. npm in the fixed-output derivation needs a CA file.
    component("webui-deps");
    // 5. upstream's ts-config.yaml (templates and the options the web code
    // uses), and tsc behind `#!/usr/bin/env node`. The real generator wrote
    // the client and the real tsc compiled it: without the config there is
    // no package.json (npmName) and no UnknownDefaultOpenApi members. Blob
    // file contents and request objects are typescript-fetch 7.16's
    // defaults, checked in the declarations tsc wrote.
    let client_ts = component("client-ts");
    let compiled = |file: &str| fs::read_to_string(client_ts.join("dist").join(file)).unwrap();
    for (file, wanted) in [
        ("runtime.js", "// Generated with authentik's own TypeScript templates."),
        ("models/FlowDesignationEnum.js", "UnknownDefaultOpenApi: '11184809'"),
        ("esm/models/FlowDesignationEnum.js", "UnknownDefaultOpenApi: '11184809'"),
        ("apis/DefaultApi.d.ts", "rootConfigRetrieve(initOverrides?: RequestInit | runtime.InitOverrideFunction): Promise<Blob>;"),
        ("apis/DefaultApi.d.ts", "coreUsersList(requestParameters?: CoreUsersListRequest"),
    ] {
        let text = compiled(file);
        assert!(text.contains(wanted), "{file}: {wanted}:\n{text}");
        assert!(
            !text.contains("NOTE: This class is auto generated"),
            "{file}: the generator's own header, not authentik's templates:\n{text}"
        );
    }
    let package: Value =
        serde_json::from_slice(&fs::read(client_ts.join("package.json")).unwrap()).unwrap();
    assert_eq!(package["name"], "@goauthentik/api", "{package:#}");
    assert_eq!(package["version"], "2026.2.0", "{package:#}");
    // 6. The build scripts import three names from upstream's node.js.
    let webui = component("webui");
    assert_eq!(
        fs::read_to_string(webui.join("dist/version.txt")).unwrap(),
        "2026.2.0\n"
    );
    // 8. One store hash under two names (a path, and the same in a RUNPATH
    // up to its `:`): both are stripped, and nothing stops the loop.
    let deps = component("python-deps");
    let native =
        fs::read_to_string(deps.join("lib/python3.11/site-packages/lxml/_native.so")).unwrap();
    assert_eq!(native.matches("/nix/store/").count(), 2, "{native}");
    assert_eq!(
        native
            .matches("/nix/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee")
            .count(),
        2,
        "{native}"
    );
    assert!(!deps.join("bin/python").exists() && deps.join("bin/dumb-init").is_file());
}

/// The sandbox that every stand-in build in these tests gets is Nix's, as a
/// daemon sets it up: a builder runs as a build user, so store copies are
/// read-only to it (what defect 3 hit), and finds no /usr/bin/env (what
/// defect 5 hit).
#[test]
fn store_copies_are_read_only_to_builders_and_the_sandbox_has_no_env() {
    let traps = repo().join("tests/fixtures/sandbox-traps.nix");
    let build = |attr: &str| {
        Command::new("nix-build")
            .arg("--no-out-link")
            .arg(&traps)
            .args(["-A", attr])
            .envs(standin_env())
            .output()
            .unwrap()
    };
    let out = build("deleteCopy");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("Permission denied"),
        "{err}"
    );
    assert!(build("deleteCopyAfterChmod").status.success());
    let out = build("useEnv");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("/usr/bin/env: not found"),
        "{err}"
    );
    // The same builder without /usr/bin/env in it builds there.
    assert!(build("noEnv").status.success());
}

/// Each fixed-output pin records the nixpkgs it was made with; evaluation
/// warns, naming the pin, when flake.lock holds another, and says nothing
/// when they agree.
#[test]
fn a_pin_made_with_another_nixpkgs_is_named_at_evaluation() {
    let (copy, _, _) = flake_dirs();
    let lock = read_json(&repo().join("flake.lock"));
    let rev = lock["nodes"]["nixpkgs"]["locked"]["rev"].as_str().unwrap();
    let out = instantiate(copy, &real_pins());
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for pin in [
        "authentik-python-deps-2026.2.0",
        "authentik-webui-deps-2026.2.0",
        "authentik-server-2026.2.0-go-modules",
    ] {
        assert!(
            err.contains(&format!(
                "[[fod]] `{pin}` was made with nixpkgs 1267bb49, but flake.lock holds {rev}"
            )),
            "{pin}:\n{err}"
        );
    }
    let out = instantiate(copy, fixture_pins());
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("was made with nixpkgs"), "{err}");
    assert!(fs::read_to_string(fixture_pins())
        .unwrap()
        .contains(&format!("nixpkgs = \"{rev}\"")));
}

/// The real-build job's steps on the stand-in, on a runner like our users'
/// (no root flake, NIX_PATH unset, nixpkgs from the flake registry): the
/// build, every fixed output again with --check, and the provenance proof
/// pass with the fixture pins; a wrong pin fails, naming its fixed output
/// and the hash Nix got. (Starting the image next to PostgreSQL needs
/// podman images from a registry: only the job itself does that.)
#[test]
fn the_real_build_job_checks_every_fixed_output_and_names_a_wrong_pin() {
    let pins = fs::read_to_string(fixture_pins()).unwrap();
    let dir = tempdir();
    let (copy, nix_config) = bare_runner_copy(dir.path());
    let job = |pins: &str| {
        fs::write(copy.join("mirrors/authentik.toml"), pins).unwrap();
        let out = Command::new("bash")
            .arg(copy.join(".forgejo/scripts/real-build.sh"))
            .arg("authentik")
            .current_dir(&copy)
            .env_remove("NIX_PATH")
            .envs(standin_env())
            .env("NIX_CONFIG", &nix_config)
            .env("NIXOCI", release_nixoci())
            .env("REAL_BUILD_RUN", "0")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let (ok, text) = job(&pins);
    assert!(ok, "{text}");
    for wanted in [
        "6 fixed outputs rebuilt to their pins",
        "6 fixed-output derivations: 3 mirrored, 0 pinned upstream, 3 network builds, 0 unpinned",
        "== 4. skipped (REAL_BUILD_RUN=0)",
    ] {
        assert!(text.contains(wanted), "{wanted}:\n{text}");
    }

    // A wrong pin for the Python environment: named, with what Nix got.
    let manifest: Value =
        serde_json::to_value(toml::from_str::<toml::Value>(&pins).unwrap()).unwrap();
    let right = manifest["fod"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "authentik-python-deps-2026.2.0")
        .unwrap()["outputHash"]
        .as_str()
        .unwrap()
        .to_string();
    let wrong = "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
    let (ok, text) = job(&pins.replace(&right, wrong));
    assert!(!ok, "{text}");
    assert!(
        text.contains(&format!(
            "fixed output authentik-python-deps-2026.2.0: pinned {wrong}, got {right}"
        )),
        "{text}"
    );
    assert!(
        text.contains("nixoci pins update mirrors/authentik.toml"),
        "{text}"
    );
}

/// The value a CI step wrote for `key` to its `$GITHUB_OUTPUT` file.
fn step_output(outputs: &Path, key: &str) -> String {
    fs::read_to_string(outputs)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_string))
        .unwrap_or_else(|| panic!("no {key} in the step's outputs"))
}

/// Writes `containers/greeter` in `copy`: a small image of a script that
/// says `greeting`, and `extra` contents.
fn greeter(copy: &Path, greeting: &str, extra: &str) {
    fs::create_dir_all(copy.join("containers/greeter")).unwrap();
    fs::write(
        copy.join("containers/greeter/default.nix"),
        format!(
            r#"{{ pkgs ? import <nixpkgs> {{ }} }}:
let
  nixoci = pkgs.callPackage ../../nix/package.nix {{ }};
  nixociLib = import ../../nix {{ inherit nixoci pkgs; system = builtins.currentSystem; }};
  version = "1.0.0";
in
nixociLib.buildLayeredImage {{
  name = "blumeops/greeter";
  tag = version;
  contents = [ (pkgs.writeShellScriptBin "greet" "echo {greeting}") {extra} ];
  config.Entrypoint = [ "/bin/greet" ];
}}
"#
        ),
    )
    .unwrap();
}

#[test]
fn the_ci_recipe_comments_a_pull_request_with_the_diff_against_the_last_pushed_image() {
    let dir = tempdir();
    let copy = edited_copy(dir.path());
    // A small container: a script (changed by the pull request) and, in the
    // pull request, a note (added).
    let write_container = |greeting: &str, extra: &str| greeter(&copy, greeting, extra);
    let git = |args: &[&str]| {
        stdout(
            Command::new("git")
                .arg("-C")
                .arg(&copy)
                .args(["-c", "user.name=t", "-c", "user.email=t@t"])
                .args(args),
        )
        .trim()
        .to_string()
    };
    write_container("hello", "");
    git(&["init", "-q", "-b", "main"]);
    git(&["add", "-A"]);
    git(&["commit", "-qm", "first"]);
    let first = git(&["rev-parse", "HEAD"]);
    git(&["commit", "-q", "--allow-empty", "-m", "second"]);
    let second = git(&["rev-parse", "HEAD"]);
    git(&["update-ref", "refs/remotes/origin/main", "HEAD"]);

    let registry = Registry::start(Auth::Anonymous);
    let outputs = dir.path().join("outputs");
    let step = |args: &[&str], extra: &[(&str, String)]| {
        let _ = fs::remove_file(&outputs);
        let out = recipe_step(&copy, args, &registry)
            .env("GITHUB_OUTPUT", &outputs)
            .env("READ_FLAGS", "--insecure")
            .envs(extra.iter().map(|(k, v)| (*k, v)))
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{args:?}: {text}");
        text
    };
    let output = |key: &str| step_output(&outputs, key);
    // Before anything was pushed, the comment says there is nothing to compare with.
    let pr_build = |sha: &str| {
        step(&["build", "greeter", sha], &[]);
        vec![
            ("RESULT", output("result")),
            ("TAG", output("tag")),
            ("NIXOCI", output("nixoci")),
            ("BASE_BRANCH", "main".to_string()),
        ]
    };
    let built = pr_build(&second);
    step(&["diff", "greeter", &second], &built);
    let comment = fs::read_to_string(copy.join(output("comment"))).unwrap();
    assert!(comment.contains("nothing to compare with"), "{comment}");
    // Pushed from main: both commits, and one from a branch, which is never
    // the base, however it sorts.
    for sha in [&first, &second, &"fffffff".to_string()] {
        step(&["greeter", sha], &[]);
    }

    // The pull request: the script changed, a note added.
    git(&["checkout", "-qb", "pr"]);
    write_container(
        "hello again",
        r#"(pkgs.writeTextFile { name = "greeter-note-2.0"; text = "note"; destination = "/share/note"; })"#,
    );
    git(&["commit", "-qam", "pr"]);
    let pr = git(&["rev-parse", "HEAD"]);
    let built = pr_build(&pr);
    let mut hostile = built.clone();
    hostile[3].1 = "main; touch pwned".to_string();
    let out = recipe_step(&copy, &["diff", "greeter", &pr], &registry)
        .envs(hostile.iter().map(|(k, v)| (*k, v)))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let text = step(&["diff", "greeter", &pr], &built);
    let file = output("comment");
    assert_eq!(file, "diff-greeter.md");
    let comment = fs::read_to_string(copy.join(&file)).unwrap();
    let base = format!("v1.0.0-{}-nix", &second[..7]);
    assert!(text.contains(&format!("(base: {base})")), "{text}");
    assert!(
        comment.starts_with("<!-- nixoci-diff:greeter -->\n"),
        "{comment}"
    );
    assert!(
        comment.contains(&format!(
            "Compared with `{}/blumeops/greeter:{base}`",
            registry.host()
        )),
        "{comment}"
    );
    assert!(
        comment.contains("**1 added, 0 removed, 1 changed; "),
        "{comment}"
    );
    assert!(comment.contains("-greeter-note-2.0`"), "{comment}");
    assert!(comment.contains("- `greet` "), "{comment}");

    // Posted to the pull request by the comment step, then updated in place
    // by the next run; the token goes only in the header.
    let token = "pr-token-6f1d2c";
    let port = free_port();
    let api_log = dir.path().join("api.json");
    let _api = spawn(
        Command::new("python3")
            .arg(repo().join("tests/support/forgejo_api.py"))
            .arg(port.to_string())
            .arg(token)
            .arg(&api_log),
        port,
        dir.path().join("api.log"),
    );
    let comment_step_with = |token: &str, file: &str, pr: &str, repository: &str| {
        Command::new("bash")
            .arg(copy.join(".forgejo/scripts/pr-comment.sh"))
            .arg(file)
            .current_dir(&copy)
            .env("FORGEJO_TOKEN", token)
            .env("API_URL", format!("http://127.0.0.1:{port}/api/v1"))
            .env("REPOSITORY", repository)
            .env("PR", pr)
            .output()
            .unwrap()
    };
    let comment_step = |token: &str| comment_step_with(token, &file, "7", "blumeops/blumeops");
    // Inputs that are not a number, an owner/name or a marked comment are
    // refused before anything is sent.
    fs::write(copy.join("unmarked.md"), "no marker\n").unwrap();
    for (file, pr, repository) in [
        (file.as_str(), "7; curl evil", "blumeops/blumeops"),
        (file.as_str(), "7", "blumeops/../admin"),
        ("unmarked.md", "7", "blumeops/blumeops"),
    ] {
        let out = comment_step_with(token, file, pr, repository);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{file} {pr} {repository}: {out:?}"
        );
    }
    assert!(!api_log.exists(), "a refused step reached the API");
    let posted = comment_step(token);
    assert!(posted.status.success(), "{posted:?}");
    let again = comment_step(token);
    assert!(again.status.success(), "{again:?}");
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("updated comment 100"),
        "{again:?}"
    );
    for out in [&posted, &again] {
        let text = format!("{out:?}");
        assert!(!text.contains(token), "the token leaked: {text}");
    }
    let api = read_json(&api_log);
    assert_eq!(
        api["comments"],
        serde_json::json!([{"id": 100, "issue": 7, "body": comment}]),
        "one comment, the diff"
    );
    let methods: Vec<&str> = api["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["method"].as_str().unwrap())
        .collect();
    assert_eq!(methods, ["GET", "POST", "GET", "PATCH"]);
    // A wrong token fails the step.
    let refused = comment_step("wrong");
    assert!(!refused.status.success(), "{refused:?}");
}

#[test]
fn signed_provenance_of_the_authentik_graph_refuses_an_upstream_fetch_and_another_graph() {
    let pins = fixture_pins();
    let (copy, standin, _) = flake_dirs();
    let drv = drv_of(copy, pins);
    // The same graph with one fetchurl from upstream added.
    let dir = tempdir();
    let expr = format!(
        r#"let pkgs = import {} {{ }};
               image = import {}/containers/authentik {{ inherit pkgs; pinsFile = {}; }};
           in derivation {{
             name = "authentik-and-a-download"; system = builtins.currentSystem;
             builder = "/bin/sh"; args = [ "-c" "echo > $out" ];
             inherit image;
             download = pkgs.fetchurl {{
               url = "https://upstream.example/extra-1.0.tar.gz";
               hash = "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
             }};
           }}"#,
        standin.display(),
        copy.display(),
        pins.display()
    );
    let with_download = stdout(
        Command::new("nix-instantiate")
            .args(["-E", &expr])
            .envs(standin_env()),
    )
    .trim()
    .to_string();
    // A small image stands for the built one: the provenance's dependencies
    // come from the graph it names.
    let image = dir.path().join("image");
    run(nixoci()
        .arg("build")
        .arg(&fixture().app)
        .args(["--tag", "blumeops/authentik:1", "-q", "-o"])
        .arg(&image));
    let prefix = dir.path().join("ci");
    run(nixoci()
        .args(["key", "generate", "--output-key-prefix"])
        .arg(&prefix)
        .env_remove("COSIGN_PASSWORD"));
    let (key, public) = (prefix.with_extension("key"), prefix.with_extension("pub"));
    let attest = |graph: &str| {
        run(nixoci().arg("sign").arg(&image).arg("--key").arg(&key));
        let out = run(nixoci()
            .arg("attest")
            .arg(&image)
            .arg("--key")
            .arg(&key)
            .args(["--drv", graph, "--print", "--mirrors"])
            .arg(pins)
            .args(["--flake", ".#authentik-image", "--flake-lock"])
            .arg(copy.join("flake.lock")));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let verify_image = |extra: &[&str]| {
        nixoci()
            .arg("verify-image")
            .arg(&image)
            .arg("--key")
            .arg(&public)
            .args(extra)
            .output()
            .unwrap()
    };
    // The stand-in graph: every fixed output mirrored (or a pinned network
    // build), each listed with its class and, for git mirrors, its commit.
    let statement = attest(&drv);
    let dependencies = statement["predicate"]["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .unwrap();
    assert!(dependencies.len() > 5, "{statement:#}");
    assert!(
        dependencies
            .iter()
            .any(|d| d["annotations"]["mirrorCommit"].is_string()),
        "{statement:#}"
    );
    let external = &statement["predicate"]["buildDefinition"]["externalParameters"];
    let lock = read_json(&copy.join("flake.lock"));
    assert_eq!(external["flake"], ".#authentik-image");
    assert_eq!(
        external["nixpkgs"]["rev"],
        lock["nodes"]["nixpkgs"]["locked"]["rev"]
    );
    assert_eq!(
        external["nixpkgs"]["narHash"],
        lock["nodes"]["nixpkgs"]["locked"]["narHash"]
    );
    assert!(external["nixpkgs"]["rev"].is_string(), "{external:#}");
    let out = verify_image(&["--policy", "no-upstream"]);
    assert!(out.status.success(), "{out:?}");
    let pins_arg = pins.to_str().unwrap();
    let out = verify_image(&["--drv", &drv, "--mirrors", pins_arg]);
    assert!(out.status.success(), "{out:?}");
    // Another graph than the attested one: refused.
    let out = verify_image(&["--drv", &with_download, "--mirrors", pins_arg]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not the derivation's") && err.contains("extra-1.0.tar.gz.drv"),
        "{err}"
    );
    // With the upstream download: the policy names it.
    attest(&with_download);
    let out = verify_image(&["--policy", "no-upstream"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("policy no-upstream: 1 dependency")
            && err.contains("extra-1.0.tar.gz.drv (unpinned)"),
        "{err}"
    );
}

#[test]
fn the_ci_recipe_signs_and_attests_when_a_key_secret_is_present() {
    let dir = tempdir();
    let copy = edited_copy(dir.path());
    greeter(&copy, "signed", "");
    // Its pins: the recipe classifies the provenance's fixed outputs with them.
    fs::write(copy.join("mirrors/greeter.toml"), "").unwrap();
    let prefix = dir.path().join("ci");
    let password = "ci-key-Pa55";
    run(nixoci()
        .args(["key", "generate", "--output-key-prefix"])
        .arg(&prefix)
        .env("COSIGN_PASSWORD", password));
    let key_text = fs::read_to_string(prefix.with_extension("key")).unwrap();
    let registry = Registry::start(Auth::Anonymous);
    let outputs = dir.path().join("outputs");
    let sha = "5e1f0a2b3c4d5e6f";
    let built = recipe_step(&copy, &["build", "greeter", sha], &registry)
        .env("GITHUB_OUTPUT", &outputs)
        .output()
        .unwrap();
    assert!(built.status.success(), "{built:?}");
    let output = |key: &str| step_output(&outputs, key);
    let push = |drv: &str| {
        recipe_step(&copy, &["push", "greeter", sha], &registry)
            .env("RESULT", output("result"))
            .env("TAG", output("tag"))
            .env("NIXOCI", output("nixoci"))
            .env("DRV", drv)
            .env("COSIGN_KEY", &key_text)
            .env("COSIGN_PASSWORD", password)
            .output()
            .unwrap()
    };
    let refused = push("not-a-drv");
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    let drv = output("drv");
    assert!(drv.ends_with(".drv"), "{drv}");
    let pushed = push(&drv);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&pushed.stdout),
        String::from_utf8_lossy(&pushed.stderr)
    );
    assert!(pushed.status.success(), "{text}");
    assert!(text.contains("signed and attested"), "{text}");
    let secret_line = key_text.lines().nth(1).unwrap();
    assert!(
        !text.contains(password) && !text.contains(secret_line),
        "a secret leaked: {text}"
    );
    let reference = format!("{}/blumeops/greeter:{}", registry.host(), output("tag"));
    let said = stdout(
        nixoci()
            .args(["verify-image", "--insecure", &reference, "--key"])
            .arg(prefix.with_extension("pub"))
            .args(["--drv", &drv, "--mirrors"])
            .arg(copy.join("mirrors/greeter.toml")),
    );
    assert_eq!(said.lines().count(), 4, "{said}");
    // The provenance records the flake.lock the repository has.
    let lock = read_json(&copy.join("flake.lock"));
    let json: Value = serde_json::from_str(&stdout(
        Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!(
                "docker://{}/blumeops/greeter:sha256-{}.att",
                registry.host(),
                &text
                    .split("pushed ")
                    .nth(1)
                    .and_then(|r| r.split("@sha256:").nth(1))
                    .unwrap()[..64]
            )),
    ))
    .unwrap();
    let layer = json["layers"][0]["digest"].as_str().unwrap().to_string();
    let envelope: Value =
        serde_json::from_str(&stdout(Command::new("curl").arg("-fsS").arg(format!(
            "http://{}/v2/blumeops/greeter/blobs/{layer}",
            registry.host()
        ))))
        .unwrap();
    use base64::Engine as _;
    let statement: Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(envelope["payload"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        statement["predicate"]["buildDefinition"]["externalParameters"]["nixpkgs"]["rev"],
        lock["nodes"]["nixpkgs"]["locked"]["rev"],
        "{statement:#}"
    );
}
