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
    // The same inputs from elsewhere (the nixoci binary copied to another
    // directory): the same store path, as only content counts.
    let elsewhere = tempdir();
    let copy = elsewhere.path().join("nixoci");
    std::fs::copy(release_nixoci(), &copy).unwrap();
    let again = nix_build(
        &repo().join("tests/fixtures/lib-images.nix"),
        &["basic"],
        &["--arg", "nixociBin", copy.to_str().unwrap()],
    );
    assert_eq!(first, again, "same inputs, same store path");
    // The second build came from the store; `--check` really builds again
    // and fails if any byte differs (the layout and nixpkgs' .tar.gz).
    for attr in ["basic", "dropIn"] {
        lib_images(&[attr], &[]);
        lib_images(&[attr], &["--check"]);
    }
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

fn sha256_of(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    nixoci::digest::hex(&sha2::Sha256::digest(bytes))
}

/// A docker-archive's member, read with Python's tarfile (which, as
/// nixpkgs' own fromImage reader does, decompresses gzip transparently).
fn archive_member(archive: &Path, name: &str) -> Vec<u8> {
    run(Command::new("python3").args([
        "-c",
        "import sys, tarfile\nwith tarfile.open(sys.argv[1]) as t: sys.stdout.buffer.write(t.extractfile(sys.argv[2]).read())",
    ])
    .arg(archive)
    .arg(name))
    .stdout
}

#[test]
fn build_layered_image_returns_nixpkgs_docker_archives() {
    let paths = lib_images(&["dropIn", "dropInPlain", "dropInZstd"], &[]);
    let (gz, plain, zst) = (
        Path::new(&paths[0]),
        Path::new(&paths[1]),
        Path::new(&paths[2]),
    );
    // nixpkgs' file names, and the passthru attributes.
    assert!(paths[0].ends_with("-drop-in.tar.gz"), "{}", paths[0]);
    assert!(paths[1].ends_with("-drop-in.tar"), "{}", paths[1]);
    assert!(paths[2].ends_with("-drop-in.tar.zst"), "{}", paths[2]);
    let bin = release_nixoci().display().to_string();
    let passthru = stdout(
        Command::new("nix-instantiate")
            .args(["--eval", "--strict", "--json", "-E"])
            .arg(format!(
                "let i = (import {} {{ nixociBin = {bin}; }}).dropIn; in {{ inherit (i) imageName imageTag; stream = i.stream.name; }}",
                repo().join("tests/fixtures/lib-images.nix").display()
            )),
    );
    let passthru: Value = serde_json::from_str(&passthru).unwrap();
    assert_eq!(
        passthru,
        serde_json::json!({"imageName": "example/drop-in", "imageTag": "1.0", "stream": "stream-drop-in"})
    );

    // One image, three compressions of the same bytes.
    let plain_bytes = fs::read(plain).unwrap();
    let unzipped = run(Command::new("gzip").arg("-dc").arg(gz)).stdout;
    assert_eq!(
        unzipped, plain_bytes,
        "the .tar.gz is the plain archive, gzipped"
    );
    let unzstd = run(Command::new("zstd").arg("-dcq").arg(zst)).stdout;
    assert_eq!(
        unzstd, plain_bytes,
        "the .tar.zst is the plain archive, zstd'ed"
    );

    // skopeo reads the plain one.
    let inspect: Value = serde_json::from_str(&stdout(
        Command::new("skopeo")
            .args(["inspect", "--config"])
            .arg(format!("docker-archive:{}", plain.display())),
    ))
    .unwrap();
    let f = fixture();
    assert_eq!(
        inspect["config"]["Entrypoint"],
        serde_json::json!([format!("{}/bin/app", f.app)])
    );

    // Store layers equal the Python-tarfile reference, path for path (the
    // history comment names each layer's paths, as nixpkgs writes it).
    let manifest: Value = serde_json::from_slice(&archive_member(gz, "manifest.json")).unwrap();
    let config: Value =
        serde_json::from_slice(&archive_member(gz, manifest[0]["Config"].as_str().unwrap()))
            .unwrap();
    assert_eq!(
        manifest[0]["RepoTags"],
        serde_json::json!(["example/drop-in:1.0"])
    );
    let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
    let history = config["history"].as_array().unwrap();
    let store_layers = diff_ids.len() - 1;
    assert!(store_layers >= 2, "{config}");
    for (diff_id, entry) in diff_ids.iter().zip(history).take(store_layers) {
        let comment = entry["comment"].as_str().unwrap();
        let paths: Vec<&str> = comment
            .trim_start_matches("store paths: [")
            .trim_end_matches(']')
            .split(", ")
            .map(|p| p.trim_matches('\''))
            .collect();
        let reference = run(Command::new("python3")
            .arg(repo().join("tests/support/tarfile_store_layer.py"))
            .args(["1", "0", "0", "root", "root"])
            .args(&paths))
        .stdout;
        assert_eq!(
            diff_id.as_str().unwrap(),
            format!("sha256:{}", sha256_of(&reference)),
            "{paths:?}"
        );
    }

    // podman loads them and runs the image.
    let dir = tempdir();
    for archive in [plain, zst] {
        let out = stdout(podman(dir.path(), &["load", "-i"]).arg(archive));
        assert!(out.contains("example/drop-in:1.0"), "{out}");
    }
    let loaded = podman(dir.path(), &["load", "-i"])
        .arg(gz)
        .output()
        .unwrap();
    if !loaded.status.success() {
        // Debian 12's podman 4.3 (containers/image 5.23) cannot read any
        // gzipped docker-archive: GNU gzip's of the same tar fails the same
        // way. Then the archive must load once decompressed.
        let by_gnu_gzip = dir.path().join("gnu.tar.gz");
        fs::write(
            &by_gnu_gzip,
            run(Command::new("gzip").arg("-c").arg(plain)).stdout,
        )
        .unwrap();
        let gnu = podman(dir.path(), &["load", "-i"])
            .arg(&by_gnu_gzip)
            .output()
            .unwrap();
        assert!(
            !gnu.status.success(),
            "podman loads GNU gzip's archive but not ours: {}",
            String::from_utf8_lossy(&loaded.stderr)
        );
        let unpacked = dir.path().join("unzipped.tar");
        fs::write(&unpacked, &unzipped).unwrap();
        stdout(podman(dir.path(), &["load", "-i"]).arg(&unpacked));
    }
    let images = stdout(&mut podman(
        dir.path(),
        &["images", "--format", "{{.Repository}}:{{.Tag}}"],
    ));
    assert!(
        images.lines().any(|l| l == "localhost/example/drop-in:1.0"),
        "{images}"
    );
}

#[test]
fn extra_commands_run_in_the_merged_contents() {
    let paths = lib_images(&["seesContents"], &[]);
    let dir = tempdir();
    let bundle = dir.path().join("b");
    run(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:1", paths[0]))
        .arg(&bundle));
    let rootfs = bundle.join("rootfs");
    assert!(
        fs::read_link(rootfs.join("bin/bash")).is_ok(),
        "contents are merged"
    );
    assert!(fs::read_link(rootfs.join("bin/app")).is_ok());
    assert!(
        fs::symlink_metadata(rootfs.join("bin/app-relative")).is_err(),
        "what extraCommands removed stays removed"
    );
    assert_eq!(
        fs::read_to_string(rootfs.join("made-here")).unwrap(),
        "made\n"
    );
}

#[test]
fn include_nix_db_registers_the_contents_closure() {
    let paths = lib_images(&["nixDb"], &[]);
    let dir = tempdir();
    let bundle = dir.path().join("b");
    run(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:1", paths[0]))
        .arg(&bundle));
    let rootfs = bundle.join("rootfs");
    let store = format!("local?root={}", rootfs.display());
    let f = fixture();
    let dump = stdout(Command::new("nix-store").args(["--store", &store, "--dump-db"]));
    let mut registered: Vec<&str> = dump
        .lines()
        .filter(|l| l.starts_with("/nix/store/"))
        .collect();
    registered.sort();
    registered.dedup();
    let mut wanted = vec![f.app.as_str(), f.lib.as_str()];
    wanted.sort();
    assert_eq!(registered, wanted, "the closure of contents, nothing else");
    assert!(fs::read_link(
        rootfs
            .join("nix/var/nix/gcroots/docker")
            .join(Path::new(&f.app).file_name().unwrap())
    )
    .is_ok());
    run(Command::new("nix-store").args(["--store", &store, "--verify", "--check-contents"]));
    // The check can fail: a changed file in the image is caught.
    let numbers = rootfs
        .join(f.lib.trim_start_matches('/'))
        .join("share/numbers.txt");
    let mut perms = fs::metadata(&numbers).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o644);
    fs::set_permissions(&numbers, perms).unwrap();
    fs::write(&numbers, "changed\n").unwrap();
    let tampered =
        fails(Command::new("nix-store").args(["--store", &store, "--verify", "--check-contents"]));
    assert!(tampered.contains("was modified"), "{tampered}");
}

#[test]
fn layering_pipeline_and_debug_reach_the_build() {
    let paths = lib_images(&["pipeline"], &[]);
    let f = fixture();
    let (manifest, config) = config_of(&paths[0]);
    assert_eq!(manifest["layers"].as_array().unwrap().len(), 3, "{config}");
    let comments: Vec<&str> = config["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["comment"].as_str().unwrap())
        .collect();
    assert_eq!(comments[0], format!("store paths: ['{}']", f.lib));
    assert!(
        comments[1].contains(&f.app) && comments[1].contains(&f.note),
        "{comments:?}"
    );
    // debug = true: the plan is in the build log.
    let bin = release_nixoci().display().to_string();
    let drv = stdout(
        Command::new("nix-instantiate")
            .arg(repo().join("tests/fixtures/lib-images.nix"))
            .args(["--arg", "nixociBin", &bin, "-A", "pipeline"]),
    );
    let log = stdout(Command::new("nix-store").arg("-l").arg(drv.trim()));
    assert!(
        log.contains(&format!("store layer 1: [\"{}\"]", f.lib)),
        "{log}"
    );
}

#[test]
fn unsupported_arguments_are_refused_with_the_alternative() {
    let bin = release_nixoci().display().to_string();
    let eval = |args: &str| {
        fails(Command::new("nix-instantiate").args(["--eval", "--strict", "-E"]).arg(format!(
            "let lib = import {}/nix {{ nixoci = {bin}; }}; in (lib.buildLayeredImage {{ name = \"x\"; {args} }}).drvPath",
            repo().display()
        )))
    };
    let err = eval("enableFakechroot = true;");
    assert!(
        err.contains("enableFakechroot is not supported")
            && err.contains("fakeRootCommands")
            && err.contains("rootEntries"),
        "{err}"
    );
    assert!(eval("format = \"tarball\";").contains("format must be"));
    assert!(eval("compressor = \"xz\";").contains("compressor must be"));
    assert!(eval("layers = [ ./. ];").contains("use format = \"oci\""));
}

#[test]
fn build_image_index_lists_each_platform() {
    let paths = lib_images(&["multiArch"], &[]);
    let index = Path::new(&paths[0]);
    let raw: Value = serde_json::from_str(&stdout(
        Command::new("skopeo")
            .args(["inspect", "--raw"])
            .arg(format!("oci:{}:1.0", index.display())),
    ))
    .unwrap();
    let platforms: Vec<&str> = raw["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap())
        .collect();
    assert_eq!(platforms, ["amd64", "arm64"]);
    let annotations = &read_json(&index.join("index.json"))["manifests"][0]["annotations"];
    assert_eq!(
        annotations["io.containerd.image.name"],
        "docker.io/example/drop-in:1.0"
    );
}
