//! The Nix library (`nix/`: nixpkgs-compatible buildLayeredImage and
//! streamLayeredImage), built with Debian's Nix 2.8 from plain derivations.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::Value;

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
    let inspect: Value = serde_json::from_str(&stdout(
        Command::new("skopeo")
            .args(["inspect", "--config"])
            .arg(format!("docker-archive:{}", archive.display())),
    ))
    .unwrap();
    assert_eq!(
        inspect["config"]["Entrypoint"],
        serde_json::json!([format!("{}/bin/app", f.app)]),
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
