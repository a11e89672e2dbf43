//! `nixoci build` end to end: a closure built by Nix 2.8 becomes an image that
//! umoci unpacks, skopeo reads, and whose store layers are byte-identical to
//! Python tarfile's (nixpkgs' writer).

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::json;

/// Every entry under `store_path` in the store must appear in `rootfs` with the
/// same type, permission bits, link target and contents.
fn assert_same_tree(store_path: &Path, rootfs: &Path) {
    let inside = rootfs.join(store_path.strip_prefix("/").unwrap());
    let want = fs::symlink_metadata(store_path).unwrap();
    let got = fs::symlink_metadata(&inside)
        .unwrap_or_else(|_| panic!("{} missing from the image", store_path.display()));
    assert_eq!(
        want.file_type(),
        got.file_type(),
        "{}",
        store_path.display()
    );
    if want.file_type().is_symlink() {
        assert_eq!(
            fs::read_link(store_path).unwrap(),
            fs::read_link(&inside).unwrap()
        );
        return;
    }
    assert_eq!(
        want.mode() & 0o7777,
        got.mode() & 0o7777,
        "mode of {}",
        store_path.display()
    );
    if want.is_dir() {
        let mut names: Vec<_> = fs::read_dir(store_path)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        let mut got_names: Vec<_> = fs::read_dir(&inside)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        got_names.sort();
        assert_eq!(names, got_names, "entries of {}", store_path.display());
        for n in names {
            assert_same_tree(&store_path.join(n), rootfs);
        }
    } else {
        assert_eq!(
            fs::read(store_path).unwrap(),
            fs::read(&inside).unwrap(),
            "contents of {}",
            store_path.display()
        );
    }
}

fn closure_of(paths: &[&str]) -> Vec<String> {
    stdout(Command::new("nix-store").arg("-qR").args(paths))
        .lines()
        .map(str::to_string)
        .collect()
}

fn write_config(dir: &Path, f: &Fixture) -> std::path::PathBuf {
    let config = json!({
        "Entrypoint": [format!("{}/bin/app", f.app)],
        "Cmd": ["--flag"],
        "Env": [format!("NOTE={}", f.note), format!("LINK={}", f.link), "TMPDIR=/tmp"],
        "User": "65534",
        "WorkingDir": "/",
        "ExposedPorts": {"9000/tcp": {}, "9443/tcp": {}},
        "Volumes": {"/data": {}},
        "Labels": {"org.example": "yes"},
        "StopSignal": "SIGTERM",
    });
    let path = dir.join("config.json");
    fs::write(&path, config.to_string()).unwrap();
    path
}

fn build_app_image(dir: &Path, extra: &[&str]) -> (std::path::PathBuf, serde_json::Value) {
    let f = fixture();
    let config = write_config(dir, f);
    let out = dir.join("image");
    let output = run(nixoci()
        .arg("build")
        .arg(&f.app)
        .arg("--config")
        .arg(&config)
        .args(["--tag", "example/app:1.0", "--json", "-o"])
        .arg(&out)
        .args(["--root", "dir:/tmp:1777", "--root", "dir:/blueprints:0777"])
        .args(["--root", &format!("file:/note.txt:{}:0644", f.note)])
        .args(["--root", &format!("symlink:/usr/bin/app:{}/bin/app", f.app)])
        .args(extra));
    (out, summary(&output))
}

#[test]
fn image_unpacks_with_umoci_and_holds_the_whole_closure() {
    let f = fixture();
    let dir = tempdir();
    let (image, summary) = build_app_image(dir.path(), &[]);
    let bundle = dir.path().join("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:1.0", image.display()))
        .arg(&bundle));
    let rootfs = bundle.join("rootfs");

    // Every path of the closure of contents and config, byte for byte.
    let closure = closure_of(&[&f.app, &f.note, &f.link]);
    assert!(
        closure.contains(&f.lib) && closure.len() == 4,
        "{closure:?}"
    );
    for path in &closure {
        assert_same_tree(Path::new(path), &rootfs);
    }
    for dir in ["nix", "nix/store"] {
        assert_eq!(
            fs::metadata(rootfs.join(dir)).unwrap().mode() & 0o7777,
            0o755,
            "/{dir}"
        );
    }
    // The hard link arrives as a second regular file with the same bytes.
    let lib_in_image = rootfs.join(f.lib.trim_start_matches('/')).join("lib");
    assert_eq!(
        fs::read(lib_in_image.join("libfixture.so")).unwrap(),
        fs::read(lib_in_image.join("libfixture-hardlink.so")).unwrap()
    );
    assert!(lib_in_image.join("empty-dir").is_dir());

    // The customisation layer: contents merged into / like symlinkJoin.
    assert!(
        fs::symlink_metadata(rootfs.join("bin")).unwrap().is_dir(),
        "/bin is a real directory"
    );
    assert_eq!(
        fs::read_link(rootfs.join("bin/app")).unwrap(),
        Path::new(&f.app).join("bin/app")
    );
    assert_eq!(
        fs::read_link(rootfs.join("bin/app-relative")).unwrap(),
        Path::new("app")
    );
    assert_eq!(
        fs::read_link(rootfs.join("lib")).unwrap(),
        Path::new(&f.lib).join("lib"),
        "symlinks are copied as they are"
    );
    assert_eq!(
        fs::metadata(rootfs.join("tmp"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o1777
    );
    assert_eq!(
        fs::metadata(rootfs.join("blueprints"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o777
    );
    let note = fs::symlink_metadata(rootfs.join("note.txt")).unwrap();
    assert!(note.is_file() && note.mode() & 0o7777 == 0o644 && note.uid() == 0);
    assert_eq!(
        fs::read(rootfs.join("note.txt")).unwrap(),
        fs::read(&f.note).unwrap()
    );
    assert_eq!(
        fs::read_link(rootfs.join("usr/bin/app")).unwrap(),
        Path::new(&f.app).join("bin/app")
    );

    // The config carries everything, and history and rootfs match the layers.
    let (manifest, config) = layout_manifest(&image);
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), summary["layers"].as_array().unwrap().len());
    assert_eq!(
        config["rootfs"]["diff_ids"].as_array().unwrap().len(),
        layers.len()
    );
    assert_eq!(config["history"].as_array().unwrap().len(), layers.len());
    assert_eq!(config["created"], "1970-01-01T00:00:01Z");
    assert_eq!(config["os"], "linux");
    assert_eq!(config["architecture"], "amd64");
    let c = &config["config"];
    assert_eq!(c["Entrypoint"][0], format!("{}/bin/app", f.app));
    assert_eq!(c["User"], "65534");
    assert_eq!(c["ExposedPorts"], json!({"9000/tcp": {}, "9443/tcp": {}}));
    assert_eq!(c["StopSignal"], "SIGTERM");
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );

    // skopeo, an independent reader, agrees.
    let inspect: serde_json::Value = serde_json::from_str(&stdout(
        Command::new("skopeo")
            .arg("inspect")
            .arg(format!("oci:{}:1.0", image.display())),
    ))
    .unwrap();
    assert_eq!(inspect["Digest"], summary["digest"]);
    assert_eq!(inspect["Layers"].as_array().unwrap().len(), layers.len());
    assert!(inspect["Env"]
        .as_array()
        .unwrap()
        .contains(&json!("TMPDIR=/tmp")));
}

#[test]
fn store_layers_are_byte_identical_to_python_tarfile() {
    let dir = tempdir();
    let (_, summary) = build_app_image(dir.path(), &["--compression", "none"]);
    let layers = summary["layers"].as_array().unwrap();
    assert!(
        layers.len() >= 5,
        "one layer per store path plus the customisation layer"
    );
    for layer in &layers[..layers.len() - 1] {
        let paths: Vec<&str> = layer["store_paths"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap())
            .collect();
        let tar = run(Command::new("python3")
            .arg(repo().join("tests/support/tarfile_store_layer.py"))
            .args(["1", "0", "0", "root", "root"])
            .args(&paths))
        .stdout;
        let digest = format!("sha256:{}", sha256_hex(&tar));
        assert_eq!(layer["diff_id"], digest.as_str(), "layer of {paths:?}");
        assert_eq!(
            layer["digest"], layer["diff_id"],
            "uncompressed: digest is the diff_id"
        );
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    let out = run(Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .arg("-")
        .stdin({
            let file = tempfile::NamedTempFile::new().unwrap();
            fs::write(file.path(), bytes).unwrap();
            fs::File::open(file.path()).unwrap()
        }));
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn digests_do_not_depend_on_runs_or_thread_counts() {
    for compression in ["gzip", "zstd"] {
        let mut digests = Vec::new();
        for jobs in ["1", "2", "1"] {
            let dir = tempdir();
            let (_, summary) =
                build_app_image(dir.path(), &["--compression", compression, "--jobs", jobs]);
            digests.push((summary["digest"].clone(), layer_digests(&summary)));
        }
        assert_eq!(
            digests[0], digests[1],
            "{compression}: 1 thread vs 2 threads"
        );
        assert_eq!(digests[0], digests[2], "{compression}: two runs");
    }
}

#[test]
fn every_graph_format_gives_the_same_image() {
    let f = fixture();
    let dir = tempdir();
    let path_info = dir.path().join("path-info.json");
    let text = stdout(
        Command::new("nix")
            .args(["path-info", "--json", "--recursive"])
            .args([&f.app, &f.link, &f.note]),
    );
    fs::write(&path_info, &text).unwrap();
    // Newer Nix prints an object keyed by store path; make one from 2.8's array.
    let keyed = dir.path().join("path-info-keyed.json");
    let array: serde_json::Value = serde_json::from_str(&text).unwrap();
    let object: serde_json::Map<String, serde_json::Value> = array
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["path"].as_str().unwrap().to_string(), e.clone()))
        .collect();
    fs::write(&keyed, serde_json::Value::Object(object).to_string()).unwrap();

    let (_, from_store) = build_app_image(dir.path(), &["--compression", "zstd"]);
    for graph in [
        f.attrs_json.clone(),
        f.classic_graph.clone(),
        path_info.display().to_string(),
        keyed.display().to_string(),
    ] {
        let sub = tempfile::tempdir_in(dir.path()).unwrap();
        let (_, from_graph) =
            build_app_image(sub.path(), &["--compression", "zstd", "--graph", &graph]);
        assert_eq!(from_graph["digest"], from_store["digest"], "graph {graph}");
    }
}

#[test]
fn docker_archive_copies_with_skopeo_and_oci_archive_inspects() {
    let dir = tempdir();
    let f = fixture();
    let config = write_config(dir.path(), f);
    let archive = dir.path().join("image.tar");
    run(nixoci()
        .arg("build")
        .arg(&f.app)
        .arg("--config")
        .arg(&config)
        .args([
            "--tag",
            "example/app:1.0",
            "--format",
            "docker-archive",
            "-q",
            "-o",
        ])
        .arg(&archive));
    let copied = dir.path().join("copied");
    run(Command::new("skopeo")
        .arg("copy")
        .arg(format!("docker-archive:{}", archive.display()))
        .arg(format!("oci:{}:1.0", copied.display())));
    let bundle = dir.path().join("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:1.0", copied.display()))
        .arg(&bundle));
    assert_same_tree(Path::new(&f.app), &bundle.join("rootfs"));

    // The docker-archive is what nixpkgs writes: manifest.json with RepoTags.
    let listing = stdout(Command::new("tar").arg("-tf").arg(&archive));
    assert!(listing.lines().any(|l| l == "manifest.json"), "{listing}");
    let manifest = stdout(
        Command::new("tar")
            .arg("-xOf")
            .arg(&archive)
            .arg("manifest.json"),
    );
    assert!(
        manifest.contains("\"RepoTags\":[\"example/app:1.0\"]"),
        "{manifest}"
    );

    let oci_archive = dir.path().join("image-oci.tar");
    run(nixoci()
        .arg("build")
        .arg(&f.app)
        .arg("--config")
        .arg(&config)
        .args(["--format", "oci-archive", "-q", "-o"])
        .arg(&oci_archive));
    let inspect = stdout(
        Command::new("skopeo")
            .arg("inspect")
            .arg(format!("oci-archive:{}", oci_archive.display())),
    );
    assert!(inspect.contains(&format!("NOTE={}", f.note)), "{inspect}");

    // `-o -` streams the archive to stdout.
    let streamed = run(nixoci()
        .arg("build")
        .arg(&f.app)
        .arg("--config")
        .arg(&config)
        .args(["--format", "oci-archive", "-q", "-o", "-"]))
    .stdout;
    assert_eq!(
        streamed,
        fs::read(&oci_archive).unwrap(),
        "stdout and file outputs are the same bytes"
    );
}

/// Asserts that nothing was written at or beside `out`.
fn assert_nothing_left(out: &Path) {
    assert!(
        fs::symlink_metadata(out).is_err(),
        "{} was created",
        out.display()
    );
    if let Ok(entries) = fs::read_dir(out.parent().unwrap()) {
        let stray: Vec<_> = entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("nixoci"))
            .collect();
        assert!(stray.is_empty(), "left behind: {stray:?}");
    }
}

#[test]
fn bad_inputs_get_clear_errors_and_leave_nothing_behind() {
    let f = fixture();
    let dir = tempdir();
    let out = dir.path().join("image");

    let missing = "/nix/store/00000000000000000000000000000000-missing";
    let err = fails(nixoci().args(["build", missing, "-o"]).arg(&out));
    assert!(
        err.contains(&format!("store path {missing} does not exist")),
        "{err}"
    );
    assert_nothing_left(&out);

    let graph = dir.path().join("graph.json");
    fs::write(
        &graph,
        json!([
            {"path": f.app, "references": [f.lib, missing]},
            {"path": f.lib, "references": []},
            {"path": missing, "references": []}
        ])
        .to_string(),
    )
    .unwrap();
    let err = fails(
        nixoci()
            .arg("build")
            .arg(&f.app)
            .arg("--graph")
            .arg(&graph)
            .arg("-o")
            .arg(&out),
    );
    assert!(
        err.contains("not in the store") && err.contains(missing),
        "{err}"
    );
    assert_nothing_left(&out);

    let truncated = dir.path().join("truncated.json");
    let whole = fs::read(&f.attrs_json).unwrap();
    fs::write(&truncated, &whole[..whole.len() / 2]).unwrap();
    let err = fails(
        nixoci()
            .arg("build")
            .arg(&f.app)
            .arg("--graph")
            .arg(&truncated)
            .arg("-o")
            .arg(&out),
    );
    assert!(
        err.contains(&format!("{}: not valid JSON", truncated.display())),
        "{err}"
    );
    assert_nothing_left(&out);

    // A classic graph whose reference count overflows is an error, not a crash.
    let huge = dir.path().join("huge-count");
    fs::write(&huge, format!("{}\n\n18446744073709551615\n", f.app)).unwrap();
    let planned = nixoci()
        .arg("plan")
        .arg("--graph")
        .arg(&huge)
        .output()
        .unwrap();
    assert_eq!(planned.status.code(), Some(1), "{planned:?}");
    assert!(
        String::from_utf8_lossy(&planned.stderr).contains("promises"),
        "{planned:?}"
    );

    // A file that is not a graph is not quoted back (it may hold secrets).
    let shadow = dir.path().join("shadow");
    fs::write(
        &shadow,
        "root:$6$secret-salt$hash:19000:0:99999:7:::\nuser:x\n3\n",
    )
    .unwrap();
    let planned = nixoci()
        .arg("plan")
        .arg("--graph")
        .arg(&shadow)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&planned.stderr);
    assert_eq!(planned.status.code(), Some(1), "{err}");
    assert!(
        err.contains("not a closure graph") && !err.contains("secret"),
        "{err}"
    );

    // Root entries: host files, out-of-range modes and trailing junk.
    let secret = dir.path().join("secret");
    fs::write(&secret, "runner key").unwrap();
    for (entry, expect) in [
        ("file:/x:/etc/shadow".to_string(), "not in the store"),
        (format!("file:/x:{}", secret.display()), "not in the store"),
        (
            format!("file:/x:{}/../../etc/shadow", f.note),
            "not in the store",
        ),
        ("dir:/tmp:77777777".to_string(), "not an octal mode"),
        ("dir:/tmp:1777:extra".to_string(), "is not one of"),
        (
            format!("file:/x:{}:0644:extra", f.note),
            "not an octal mode",
        ),
    ] {
        let err = fails(
            nixoci()
                .arg("build")
                .arg(&f.app)
                .args(["--root", &entry, "-o"])
                .arg(&out),
        );
        assert!(err.contains(expect), "{entry}: {err}");
        assert_nothing_left(&out);
    }

    let config = dir.path().join("bad-config.json");
    fs::write(&config, r#"{"Entrypoint": "/bin/sh"}"#).unwrap();
    let err = fails(
        nixoci()
            .arg("build")
            .arg(&f.app)
            .arg("--config")
            .arg(&config)
            .arg("-o")
            .arg(&out),
    );
    assert!(err.contains("invalid config"), "{err}");
    assert_nothing_left(&out);

    // An entrypoint outside the given graph is refused, not silently shipped.
    fs::write(
        &config,
        json!({"Entrypoint": [format!("{}/bin/app", f.app)]}).to_string(),
    )
    .unwrap();
    let lib_only = dir.path().join("lib-graph.json");
    fs::write(
        &lib_only,
        json!([{"path": f.lib, "references": []}]).to_string(),
    )
    .unwrap();
    let err = fails(
        nixoci()
            .arg("build")
            .arg(&f.lib)
            .arg("--config")
            .arg(&config)
            .arg("--graph")
            .arg(&lib_only)
            .arg("-o")
            .arg(&out),
    );
    assert!(
        err.contains("not in the closure graph") && err.contains("config"),
        "{err}"
    );
    assert_nothing_left(&out);

    let err = fails(
        nixoci()
            .arg("build")
            .arg(&f.app)
            .arg("-o")
            .arg(dir.path().join("no/such/dir/image")),
    );
    assert!(err.contains("does not exist"), "{err}");
}

/// Mounts a tmpfs (root only) for the unwritable and full-disk cases.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, options: &str) -> Tmpfs {
        fs::create_dir_all(dir).unwrap();
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "nixoci-test"])
            .arg(dir));
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn unwritable_and_full_output_filesystems_fail_cleanly() {
    let f = fixture();
    let dir = tempdir();

    let readonly = Tmpfs::mount(&dir.path().join("ro"), "ro,size=1m");
    let out = readonly.0.join("image");
    let err = fails(nixoci().arg("build").arg(&f.app).arg("-o").arg(&out));
    assert!(
        err.contains("cannot write to") && err.contains("Read-only file system"),
        "{err}"
    );
    assert_nothing_left(&out);

    // The fixture holds ~600 kB of numbers: more than this disk takes.
    let full = Tmpfs::mount(&dir.path().join("full"), "size=64k");
    for format in ["oci-layout", "docker-archive"] {
        let out = full.0.join("image");
        let err = fails(
            nixoci()
                .arg("build")
                .arg(&f.app)
                .args(["--format", format, "-o"])
                .arg(&out),
        );
        assert!(err.contains("No space left on device"), "{format}: {err}");
        assert_nothing_left(&out);
        assert_eq!(
            fs::read_dir(&full.0).unwrap().count(),
            0,
            "{format}: the full disk is empty again"
        );
    }
}

/// `check` hashes every blob it reads, not only the first layer: a byte
/// changed in any layer (the size kept), in the config or in the manifest
/// (still valid JSON) is refused, naming that blob.
#[test]
fn check_refuses_a_changed_byte_in_any_blob() {
    let dir = tempdir();
    let (image, _) = build_app_image(dir.path(), &[]);
    let (manifest, _) = layout_manifest(&image);
    let layers = manifest["layers"].as_array().unwrap();
    assert!(layers.len() >= 3, "{manifest}");
    let index = read_json(&image.join("index.json"));
    let mut blobs: Vec<&str> = layers
        .iter()
        .map(|l| l["digest"].as_str().unwrap())
        .collect();
    blobs.push(manifest["config"]["digest"].as_str().unwrap());
    blobs.push(index["manifests"][0]["digest"].as_str().unwrap());
    for digest in blobs {
        let blob = blob_path(&image, digest);
        let original = fs::read(&blob).unwrap();
        let mut changed = original.clone();
        // The last digit: a layer's inner byte, or a JSON digit that keeps
        // the JSON valid.
        let at = original.iter().rposition(u8::is_ascii_digit).unwrap();
        changed[at] = if changed[at] == b'1' { b'2' } else { b'1' };
        fs::write(&blob, &changed).unwrap();
        let err = fails(nixoci().arg("check").arg(&image));
        assert!(err.contains(&format!("blob {digest} is damaged")), "{err}");
        fs::write(&blob, &original).unwrap();
    }
    // Restored, no blob is damaged (the fixture's config fails other checks).
    let out = nixoci().arg("check").arg(&image).output().unwrap();
    assert!(!String::from_utf8_lossy(&out.stderr).contains("damaged"));
}
