//! The Nix side: `nix/` (nixpkgs-compatible buildLayeredImage and
//! streamLayeredImage), `containers/authentik` and `flake.nix`, built with
//! Debian's Nix 2.8 against a stand-in nixpkgs whose Rust packages are the
//! binaries cargo built.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::*;
use serde_json::Value;

fn release_nixoci() -> PathBuf {
    // The binary under test (cargo builds it for the integration tests).
    PathBuf::from(env!("CARGO_BIN_EXE_nixoci"))
}

fn lib_images(attrs: &[&str], extra: &[&str]) -> Vec<String> {
    let bin = release_nixoci().display().to_string();
    nix_build(
        &repo().join("tests/fixtures/lib-images.nix"),
        attrs,
        &[&["--arg", "nixociBin", &bin], extra].concat(),
    )
}

fn config_of(layout: &str) -> (Value, Value) {
    layout_manifest(Path::new(layout))
}

#[test]
fn nixpkgs_docker_tools_assertions_hold() {
    let paths = lib_images(
        &[
            "basic",
            "twoLayered",
            "onTop",
            "createdNow",
            "extra",
            "stream",
            "fakeRoot",
        ],
        &["--argstr", "created", "now"],
    );
    let (basic, two, on_top, now, extra, stream, fake_root) = (
        &paths[0], &paths[1], &paths[2], &paths[3], &paths[4], &paths[5], &paths[6],
    );
    let f = fixture();
    let dir = tempdir();

    // contents at /, the config's store paths in the image, /nix at 0755.
    let bundle = dir.path().join("basic");
    run(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{basic}:1"))
        .arg(&bundle));
    let rootfs = bundle.join("rootfs");
    assert_eq!(
        fs::read_link(rootfs.join("bin/app")).unwrap(),
        Path::new(&f.app).join("bin/app")
    );
    assert!(
        rootfs.join(f.note.trim_start_matches('/')).is_file(),
        "a store path named only in Env is in the image"
    );
    for d in ["nix", "nix/store"] {
        assert_eq!(fs::metadata(rootfs.join(d)).unwrap().mode() & 0o7777, 0o755);
    }

    // maxLayers counts every layer; nothing is dropped (bulk-layer).
    let (manifest, _) = config_of(two);
    assert_eq!(manifest["layers"].as_array().unwrap().len(), 2);
    let bundle = dir.path().join("two");
    run(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{two}:1"))
        .arg(&bundle));
    for p in [&f.app, &f.lib] {
        assert!(
            bundle
                .join("rootfs")
                .join(p.trim_start_matches('/'))
                .exists(),
            "{p} kept"
        );
    }

    // Layered on layered with maxLayers = 4: exactly 4 layers; the base's layers shared.
    let (manifest, config) = config_of(on_top);
    let layers: Vec<&Value> = manifest["layers"].as_array().unwrap().iter().collect();
    assert_eq!(layers.len(), 4);
    let (base_manifest, _) = config_of(two);
    assert_eq!(
        layers[..2],
        base_manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .collect::<Vec<_>>()[..]
    );
    // nixpkgs' Env merge: both sides, LAST_LAYER once, the child's value.
    let env: Vec<&str> = config["config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert_eq!(
        env,
        vec!["FROM_PARENT=true", "LAST_LAYER=child", "FROM_CHILD=true"]
    );

    // created = "now".
    let (_, config) = config_of(now);
    assert_ne!(config["created"], "1970-01-01T00:00:01Z");
    assert!(config["created"].as_str().unwrap() > "2026");

    // extraCommands: files at /, modes kept, store paths they name in the image.
    let bundle = dir.path().join("extra");
    run(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{extra}:1"))
        .arg(&bundle));
    let rootfs = bundle.join("rootfs");
    assert_eq!(
        fs::read_to_string(rootfs.join("hello.txt")).unwrap(),
        "hello\n"
    );
    assert_eq!(
        fs::metadata(rootfs.join("tmp")).unwrap().mode() & 0o7777,
        0o1777
    );
    assert_eq!(
        fs::read_link(rootfs.join("note-link")).unwrap(),
        Path::new(&f.note)
    );
    assert!(rootfs.join(f.note.trim_start_matches('/')).is_file());
    assert!(
        !rootfs.join("nix/store").read_dir().unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains("customisation")),
        "the helper path is excluded"
    );

    // fakeRootCommands: owners and modes given under fakeroot are in the layer.
    let bundle = dir.path().join("fake-root");
    run(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{fake_root}:1"))
        .arg(&bundle));
    let alice = fs::metadata(bundle.join("rootfs/home/alice")).unwrap();
    assert_eq!((alice.uid(), alice.gid()), (1000, 1000));
    let file = fs::metadata(bundle.join("rootfs/home/alice/file")).unwrap();
    assert_eq!((file.uid(), file.mode() & 0o7777), (1000, 0o600));
    assert_eq!(fs::metadata(bundle.join("rootfs/home")).unwrap().uid(), 0);

    // streamLayeredImage: a script writing a docker-archive to stdout.
    let archive = dir.path().join("streamed.tar");
    let out = Command::new(stream).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    fs::write(&archive, &out.stdout).unwrap();
    let inspect = stdout(
        Command::new("skopeo")
            .arg("inspect")
            .arg(format!("docker-archive:{}", archive.display())),
    );
    assert!(
        inspect.contains(&format!("{}/bin/app", f.app)) || inspect.contains("Layers"),
        "{inspect}"
    );
    run(Command::new("skopeo")
        .arg("copy")
        .arg(format!("docker-archive:{}", archive.display()))
        .arg(format!(
            "oci:{}:s",
            dir.path().join("from-stream").display()
        )));
}

#[test]
fn unchanged_inputs_give_the_same_path_and_a_changed_leaf_only_its_layer() {
    let first = lib_images(&["basic"], &[]);
    let again = lib_images(&["basic"], &[]);
    assert_eq!(first, again, "same inputs, same store path");
    let changed = lib_images(&["basic"], &["--argstr", "noteText", "another note"]);
    assert_ne!(first, changed);
    let (a, _) = config_of(&first[0]);
    let (b, _) = config_of(&changed[0]);
    let digests = |m: &Value| {
        m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let (a, b) = (digests(&a), digests(&b));
    assert_eq!(a.len(), b.len());
    let differing: Vec<usize> = (0..a.len()).filter(|&i| a[i] != b[i]).collect();
    assert_eq!(
        differing.len(),
        1,
        "only the note's layer changes: {a:?} vs {b:?}"
    );
}

/// A copy of this repository (tracked and new files) and a stand-in nixpkgs
/// holding the binaries cargo built.
fn flake_dirs() -> &'static (PathBuf, PathBuf, tempfile::TempDir) {
    static DIRS: OnceLock<(PathBuf, PathBuf, tempfile::TempDir)> = OnceLock::new();
    DIRS.get_or_init(|| {
        let dir = tempdir();
        let copy = dir.path().join("repo");
        let files = stdout(Command::new("git").arg("-C").arg(repo()).args([
            "ls-files",
            "-co",
            "--exclude-standard",
        ]));
        for file in files.lines().filter(|f| !f.starts_with("target/")) {
            let to = copy.join(file);
            fs::create_dir_all(to.parent().unwrap()).unwrap();
            if let Ok(meta) = fs::symlink_metadata(repo().join(file)) {
                if meta.is_file() {
                    fs::copy(repo().join(file), &to).unwrap();
                }
            }
        }
        let standin = dir.path().join("nixpkgs");
        fs::create_dir_all(standin.join("bin")).unwrap();
        for f in ["flake.nix", "default.nix"] {
            fs::copy(
                repo().join("tests/fixtures/standin-nixpkgs").join(f),
                standin.join(f),
            )
            .unwrap();
        }
        fs::copy(release_nixoci(), standin.join("bin/nixoci")).unwrap();
        fs::copy(static_entrypoint(), standin.join("bin/nixoci-entrypoint")).unwrap();
        (copy, standin, dir)
    })
}

/// `nix build --json` of one of the flake's packages.
fn nix_flake_attr(attr: &str) -> Command {
    let (copy, standin, _) = flake_dirs();
    let mut cmd = Command::new("nix");
    cmd.args(["build", "--no-link", "--json"])
        .arg(format!("path:{}#{attr}", copy.display()))
        .args(["--override-input", "nixpkgs"])
        .arg(format!("path:{}", standin.display()))
        .arg("--no-write-lock-file");
    cmd
}

fn nix_flake(args: &[&str]) -> Command {
    let (copy, standin, _) = flake_dirs();
    let mut cmd = Command::new("nix");
    cmd.args(args)
        .arg(format!("path:{}", copy.display()))
        .args(["--override-input", "nixpkgs"])
        .arg(format!("path:{}", standin.display()))
        .arg("--no-write-lock-file");
    cmd
}

#[test]
fn flake_builds_the_authentik_image_and_it_runs() {
    let (copy, standin, dir) = flake_dirs();
    let build = || {
        let json = stdout(&mut nix_flake_attr("authentik-image"));
        serde_json::from_str::<Value>(&json).unwrap()[0]["outputs"]["out"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let image = build();
    // Building again gives the same path; nix-build of the container agrees.
    assert_eq!(build(), image);
    let by_nix_build = stdout(
        Command::new("nix-build")
            .arg("--no-out-link")
            .arg(copy.join("containers/authentik"))
            .arg("-I")
            .arg(format!("nixpkgs={}", standin.display())),
    );
    let (flake_manifest, config) = layout_manifest(Path::new(&image));
    let (classic_manifest, _) = layout_manifest(Path::new(by_nix_build.trim()));
    assert_eq!(
        flake_manifest["layers"].as_array().unwrap().len(),
        classic_manifest["layers"].as_array().unwrap().len()
    );

    // The image is what blumeops runs.
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
    assert!(
        env.contains(&"TMPDIR=/tmp")
            && env
                .iter()
                .any(|e| e.starts_with("SSL_CERT_FILE=/nix/store/"))
            && env.iter().any(|e| e.starts_with("TZDIR="))
    );
    let report = stdout(nixoci().arg("check").arg(&image));
    assert!(report.contains("passed"), "{report}");

    // Run it for real (runc, uid 65534): built-in blueprints and the arguments.
    let bundle = Bundle::unpack(
        Path::new(&image),
        "v2026.2.0",
        &dir.path().join("authentik"),
    );
    let (code, text, err) = bundle.run(&["server"], |_| {});
    assert_eq!(code, 0, "{text}{err}");
    for d in ["default", "system", "example"] {
        assert!(text.contains(&format!("dir /blueprints/{d}\n")), "{text}");
        assert!(
            text.contains(&format!("link /blueprints/{d}/{d}.yaml")),
            "{text}"
        );
    }
    assert!(
        text.contains("AUTHENTIK_BLUEPRINTS_DIR=/blueprints") && text.contains("arg [server]"),
        "{text}"
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
}

#[test]
fn the_ci_recipe_builds_checks_and_pushes_a_container_once() {
    let (copy, standin, _) = flake_dirs();
    let registry = Registry::start(Auth::Htpasswd);
    let script = |sha: &str| {
        Command::new("bash")
            .arg(copy.join(".forgejo/scripts/build-and-push.sh"))
            .args(["authentik", sha])
            .current_dir(copy)
            .env("REGISTRY", format!("{}/blumeops", registry.host()))
            .env("REGISTRY_USER", USER)
            .env("ZOT_CI_API_KEY", PASSWORD)
            .env("NIXOCI", release_nixoci())
            .env(
                "NIX_BUILD_FLAGS",
                format!("-I nixpkgs={}", standin.display()),
            )
            .env("PUSH_FLAGS", "--insecure -q")
            .output()
            .unwrap()
    };
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
