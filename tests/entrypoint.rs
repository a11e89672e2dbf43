//! The entrypoint wrapper and `nixoci check`, proven by running an
//! authentik-shaped image for real with runc as uid 65534.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::{json, Value};

/// Builds the authentik-shaped image with `config` and root entries; returns the layout.
fn build_image(dir: &Path, name: &str, config: Value, extra: &[&str]) -> PathBuf {
    let a = authentik();
    let config_file = dir.join(format!("{name}.json"));
    fs::write(&config_file, config.to_string()).unwrap();
    let out = dir.join(name);
    run(nixoci()
        .arg("build")
        .args([&a.ak, &a.busybox])
        .arg("--config")
        .arg(&config_file)
        .args(["--tag", "blumeops/authentik:test", "-q", "-o"])
        .arg(&out)
        .args(extra));
    out
}

fn authentik_config() -> Value {
    let a = authentik();
    json!({
        "Entrypoint": [format!("{}/bin/nixoci-entrypoint", a.entrypoint), a.wrapper_config],
        "Env": [format!("PATH={}/bin", a.busybox), "TMPDIR=/tmp"],
        "ExposedPorts": {"9000/tcp": {}, "9443/tcp": {}},
        "User": "65534",
    })
}

const ROOTS: [&str; 4] = ["--root", "dir:/tmp:1777", "--root", "dir:/blueprints:0777"];

/// Every entry under `dir` with its type and link target, to compare runs.
fn snapshot(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in walk(dir) {
        let meta = fs::symlink_metadata(&entry).unwrap();
        let target = fs::read_link(&entry)
            .map(|t| t.display().to_string())
            .unwrap_or_default();
        out.push(format!(
            "{} {:?} {target}",
            entry.display(),
            meta.file_type()
        ));
    }
    out.sort();
    out
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if fs::symlink_metadata(&p).unwrap().is_dir() {
            found.extend(walk(&p));
        }
        found.push(p);
    }
    found
}

#[test]
fn authentik_image_runs_as_nobody_with_real_blueprint_directories() {
    let a = authentik();
    let dir = tempdir();
    let image = build_image(dir.path(), "image", authentik_config(), &ROOTS);

    let report = stdout(nixoci().arg("check").arg(&image));
    assert!(report.contains("passed"), "{report}");

    let bundle = Bundle::unpack(&image, "test", dir.path());
    // A read-only ConfigMap-like mount at /blueprints/custom, and an operator's file.
    let custom = dir.path().join("custom");
    fs::create_dir_all(&custom).unwrap();
    fs::write(custom.join("common.yaml"), "version: 1\n").unwrap();
    fs::create_dir_all(bundle.rootfs().join("blueprints/custom")).unwrap();
    // An operator's own file where a built-in one would go, and one of their own.
    let operator_dir = bundle.rootfs().join("blueprints/example");
    fs::create_dir_all(&operator_dir).unwrap();
    fs::write(operator_dir.join("example-two.yaml"), "operator: mine\n").unwrap();
    fs::write(operator_dir.join("extra.yaml"), "operator: extra\n").unwrap();
    // The operator's directory belongs to the app's user, as on its volume.
    std::os::unix::fs::chown(&operator_dir, Some(65534), Some(65534)).unwrap();
    let mount_custom = |c: &mut Value| {
        c["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/blueprints/custom", "type": "bind",
            "source": custom.display().to_string(), "options": ["rbind", "ro"]
        }));
    };
    let (code, out, err) = bundle.run(&["server", "with space"], mount_custom);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    // The wrapper exec'd the app: it is PID 1, so signals to PID 1 reach it.
    assert!(out.contains("uid=65534 pid=1\n"), "{out}");
    for d in ["default", "system", "example", "system/nested"] {
        assert!(
            out.contains(&format!("dir /blueprints/{d}\n")),
            "/blueprints/{d} is a real directory: {out}"
        );
    }
    assert!(
        out.contains("link /blueprints/system/nested/deep.yaml"),
        "{out}"
    );
    assert!(
        out.contains("link /blueprints/default/default-one.yaml"),
        "{out}"
    );
    assert!(
        out.contains("file /blueprints/custom/common.yaml"),
        "the mount is untouched and visible: {out}"
    );
    for operator_file in ["example-two.yaml", "extra.yaml"] {
        assert!(
            out.contains(&format!("file /blueprints/example/{operator_file}\n")),
            "an operator's file stays a file: {out}"
        );
    }
    assert_eq!(
        fs::read_to_string(operator_dir.join("example-two.yaml")).unwrap(),
        "operator: mine\n",
        "an operator's file is never replaced"
    );
    assert!(
        out.contains("link /blueprints/example/example-one.yaml"),
        "{out}"
    );
    assert!(
        out.contains("AUTHENTIK_BLUEPRINTS_DIR=/blueprints"),
        "{out}"
    );
    assert!(
        out.contains("arg [server]\narg [with space]\n"),
        "arguments pass through unchanged: {out}"
    );
    assert_eq!(
        fs::read_dir(&custom).unwrap().count(),
        1,
        "nothing was written into the mount"
    );
    let link = fs::read_link(bundle.rootfs().join("blueprints/default/default-one.yaml")).unwrap();
    assert_eq!(
        link,
        Path::new(&a.django).join("blueprints/default/default-one.yaml")
    );

    // A second start on the same rootfs changes nothing; the exit code comes back.
    let before = snapshot(&bundle.rootfs().join("blueprints"));
    let (code, out, _) = bundle.run(&["exit-3"], mount_custom);
    assert_eq!(code, 3, "the app's exit code is the container's: {out}");
    assert_eq!(snapshot(&bundle.rootfs().join("blueprints")), before);

    // With a read-only root, linking fails: one warning, and the app still starts.
    let ro = tempdir();
    let ro_bundle = Bundle::unpack(&image, "test", ro.path());
    // Its directories exist already, so that only the links fail: a link
    // that cannot be made is reported, not passed over.
    for d in ["default", "example", "system/nested"] {
        fs::create_dir_all(ro_bundle.rootfs().join("blueprints").join(d)).unwrap();
    }
    let (code, out, err) = ro_bundle.run(&["worker"], |c| c["root"]["readonly"] = json!(true));
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.contains("arg [worker]"), "{out}");
    let warnings: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("nixoci-entrypoint: warning"))
        .collect();
    assert_eq!(warnings.len(), 1, "{err}");
    assert!(
        warnings[0].contains("Read-only file system") && warnings[0].contains("starting anyway"),
        "{err}"
    );
}

#[test]
fn entrypoint_rejects_a_bad_config_and_a_missing_program() {
    let a = authentik();
    let dir = tempdir();
    let bin = format!("{}/bin/nixoci-entrypoint", a.entrypoint);
    let bad = dir.path().join("bad.json");
    fs::write(&bad, "{\"links\": [").unwrap();
    let out = Command::new(&bin).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is malformed"),
        "{out:?}"
    );
    fs::write(
        &bad,
        json!({"exec": ["/nix/store/00000000000000000000000000000000-gone/bin/ak"]}).to_string(),
    )
    .unwrap();
    let out = Command::new(&bin).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(127));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not exist"),
        "{out:?}"
    );
    let out = Command::new(&bin)
        .arg(dir.path().join("missing.json"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    // The binary is static: it runs in images without a libc.
    let file = stdout(Command::new("file").arg(&bin));
    assert!(
        file.contains("statically linked") || file.contains("static-pie"),
        "{file}"
    );
}

fn check_fails(image: &Path, expect: &str) {
    let out = nixoci().arg("check").arg(image).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "check passed an image it should fail:\n{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("FAIL") && l.contains(expect)),
        "expected a failure about `{expect}`:\n{text}"
    );
}

#[test]
fn check_catches_seeded_mistakes() {
    let a = authentik();
    let dir = tempdir();

    let mut config = authentik_config();
    config["Entrypoint"] = json!([format!("{}/bin/ak", a.ak_bad_interpreter)]);
    let image = build_image(dir.path(), "bad-interpreter", config, &ROOTS);
    check_fails(&image, "/bin/bash does not exist in the image");

    let mut config = authentik_config();
    config["Env"]
        .as_array_mut()
        .unwrap()
        .push(json!("SSL_CERT_FILE=/etc/ssl/certs/ca-bundle.crt"));
    let image = build_image(dir.path(), "bad-env", config, &ROOTS);
    check_fails(
        &image,
        "SSL_CERT_FILE: /etc/ssl/certs/ca-bundle.crt does not exist",
    );

    let image = build_image(
        dir.path(),
        "tmp-not-writable",
        authentik_config(),
        &["--root", "dir:/tmp:0755", "--root", "dir:/blueprints:0777"],
    );
    check_fails(
        &image,
        "/tmp (temporary files) is not writable by uid 65534",
    );

    // An image without its closure: the entrypoint is not in the image.
    let spec = dir.path().join("no-store.json");
    fs::write(&spec, json!({"contents": [a.ak], "config": authentik_config(), "includeStorePaths": false, "tag": "test"}).to_string()).unwrap();
    let image = dir.path().join("no-store");
    run(nixoci()
        .arg("build")
        .arg("--spec")
        .arg(&spec)
        .args(["-q", "-o"])
        .arg(&image));
    check_fails(&image, "nixoci-entrypoint does not exist in the image");

    // JSON output for CI, and archives are checked the same way.
    let archive = dir.path().join("good.tar");
    let config_file = dir.path().join("good.json");
    fs::write(&config_file, authentik_config().to_string()).unwrap();
    run(nixoci()
        .arg("build")
        .args([&a.ak, &a.busybox])
        .arg("--config")
        .arg(&config_file)
        .args(ROOTS)
        .args(["--format", "docker-archive", "-q", "-o"])
        .arg(&archive));
    let json: Value =
        serde_json::from_str(&stdout(nixoci().arg("check").arg("--json").arg(&archive))).unwrap();
    assert_eq!(json["ok"], true, "{json}");
    assert!(json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["check"] == "wrapper" && f["status"] == "pass"));
}

#[test]
fn concurrent_wrappers_on_a_fresh_target_both_link_everything_and_keep_operator_files() {
    let bin = static_entrypoint();
    let dir = tempdir();
    let src = dir.path().join("blueprints");
    for d in 0..60 {
        let sub = src.join(format!("dir-{d:02}/nested"));
        fs::create_dir_all(&sub).unwrap();
        for f in 0..100 {
            fs::write(sub.join(format!("f{f:03}.yaml")), "version: 1").unwrap();
        }
    }
    for round in 0..5 {
        let to = dir.path().join(format!("target-{round}"));
        // An operator's own file where a built-in one would go.
        fs::create_dir_all(to.join("dir-00/nested")).unwrap();
        fs::write(to.join("dir-00/nested/f000.yaml"), "operator's").unwrap();
        let config = dir.path().join(format!("config-{round}.json"));
        fs::write(
            &config,
            json!({"links": [{"from": src, "to": to}], "exec": ["/bin/true"]}).to_string(),
        )
        .unwrap();
        let children: Vec<_> = (0..2)
            .map(|_| {
                Command::new(bin)
                    .arg(&config)
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success() && out.stderr.is_empty(), "{out:?}");
        }
        let links = walk(&to)
            .iter()
            .filter(|p| fs::symlink_metadata(p).unwrap().file_type().is_symlink())
            .count();
        assert_eq!(links, 6000 - 1, "round {round}");
        let operator = to.join("dir-00/nested/f000.yaml");
        assert!(fs::symlink_metadata(&operator).unwrap().is_file());
        assert_eq!(fs::read_to_string(&operator).unwrap(), "operator's");
    }
}

#[test]
fn odd_link_configs_neither_nest_nor_leave_empty_directories() {
    let bin = static_entrypoint();
    let dir = tempdir();
    let from = dir.path().join("from");
    fs::create_dir_all(from.join("a")).unwrap();
    fs::write(from.join("a/x.yaml"), "x").unwrap();
    let config = dir.path().join("config.json");
    // `to` inside `from`: refused before anything is made.
    fs::write(
        &config,
        json!({"links": [{"from": from, "to": from.join("a/copy")}], "exec": ["/bin/true"]})
            .to_string(),
    )
    .unwrap();
    let out = Command::new(bin).arg(&config).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("one is inside the other"),
        "{out:?}"
    );
    assert!(!from.join("a/copy").exists());
    // A missing `from`: a warning, no empty `to`, and the app still runs.
    let to = dir.path().join("to");
    fs::write(
        &config,
        json!({"links": [{"from": dir.path().join("gone"), "to": to}], "exec": ["/bin/sh", "-c", "echo ran"]}).to_string(),
    )
    .unwrap();
    let out = Command::new(bin).arg(&config).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ran\n");
    assert!(!out.stderr.is_empty(), "the missing source is reported");
    assert!(!to.exists(), "an empty {} was made", to.display());
}

/// An OCI layout around one gzip layer whose tar bytes `write_tar` streams.
fn layout_with_layer(dir: &Path, write_tar: impl Fn(&mut dyn std::io::Write)) -> PathBuf {
    use sha2::Digest as _;
    let layout = dir.join("layout");
    let blobs = layout.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let hex = nixoci::digest::hex(&sha2::Sha256::digest(bytes));
        fs::write(blobs.join(&hex), bytes).unwrap();
        (format!("sha256:{hex}"), bytes.len())
    };
    struct Both(flate2::write::GzEncoder<Vec<u8>>, sha2::Sha256);
    impl std::io::Write for Both {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.1.update(buf);
            self.0.write_all(buf)?;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut both = Both(
        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()),
        sha2::Sha256::new(),
    );
    write_tar(&mut both);
    let diff_id = format!("sha256:{}", nixoci::digest::hex(&both.1.finalize()));
    let (layer, layer_size) = put(&both.0.finish().unwrap());
    let config = json!({"architecture": "amd64", "os": "linux", "config": {"Entrypoint": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]}});
    let (config, config_size) = put(config.to_string().as_bytes());
    let manifest = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer, "size": layer_size}]});
    let (manifest, manifest_size) = put(manifest.to_string().as_bytes());
    fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    fs::write(
        layout.join("index.json"),
        json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest, "size": manifest_size, "annotations": {"org.opencontainers.image.ref.name": "1"}}]})
        .to_string(),
    )
    .unwrap();
    layout
}

#[test]
fn check_reads_a_hostile_layer_in_bounded_memory() {
    let dir = tempdir();
    // A PAX header of 300 MiB (all there, compressing to under 1 MiB).
    let mut header = [0u8; 512];
    header[..9].copy_from_slice(b"pax-bomb\0");
    header[100..108].copy_from_slice(b"0000644\0");
    header[124..136].copy_from_slice(format!("{:011o}\0", 300u64 << 20).as_bytes());
    header[156] = b'x';
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    header[148..156].copy_from_slice(b"        ");
    let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
    header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let layout = layout_with_layer(dir.path(), |out| {
        out.write_all(&header).unwrap();
        let chunk = vec![b'a'; 1 << 20];
        for _ in 0..300 {
            out.write_all(&chunk).unwrap();
        }
        out.write_all(&[0u8; 1024]).unwrap();
    });
    let (out, rss_kib) = run_measured(nixoci().arg("check").arg(&layout));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("extension record"), "{err}");
    assert!(rss_kib < 64 << 10, "{rss_kib} KiB");
}

#[test]
fn a_tampered_blob_is_refused_by_check_and_from_image() {
    let dir = tempdir();
    let layout = layout_with_layer(dir.path(), |out| {
        let mut tar = tar::Builder::new(out);
        let mut h = tar::Header::new_ustar();
        h.set_size(5);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, "hello.txt", &b"hello"[..]).unwrap();
        tar.finish().unwrap();
    });
    let before = nixoci().arg("check").arg(&layout).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&before.stderr).contains("damaged"),
        "{before:?}"
    );
    let (manifest, _) = layout_manifest(&layout);
    let blob = blob_path(&layout, manifest["layers"][0]["digest"].as_str().unwrap());
    // One byte changed, the size kept: only the sha256 can tell.
    let original = fs::read(&blob).unwrap();
    let mut flipped = original.clone();
    flipped[original.len() / 2] ^= 1;
    fs::write(&blob, &flipped).unwrap();
    let out = nixoci().arg("check").arg(&layout).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("is damaged"), "{err}");
    fs::write(&blob, &original).unwrap();
    // Inject a file: the same layer name, other bytes.
    let injected = dir.path().join("injected");
    fs::create_dir_all(&injected).unwrap();
    fs::write(injected.join("evil"), "evil").unwrap();
    run(Command::new("tar")
        .arg("-czf")
        .arg(&blob)
        .arg("-C")
        .arg(&injected)
        .arg("."));
    let out = nixoci().arg("check").arg(&layout).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("is damaged"), "{err}");
    // fromImage: the build refuses the base image instead of shipping it.
    let spec = dir.path().join("spec.json");
    fs::write(
        &spec,
        json!({"fromImage": layout, "graph": [], "tag": "1"}).to_string(),
    )
    .unwrap();
    for format in ["oci-layout", "docker-archive"] {
        let err = fails(
            nixoci()
                .args(["build", "--spec"])
                .arg(&spec)
                .args(["--format", format, "-o"])
                .arg(dir.path().join(format)),
        );
        assert!(err.contains("is damaged"), "{format}: {err}");
    }
}

#[test]
fn check_applies_many_whiteouts() {
    let dir = tempdir();
    let count = 20_000;
    let layout = layout_with_layer(dir.path(), |out| {
        let mut tar = tar::Builder::new(out);
        let mut add = |name: String| {
            let mut h = tar::Header::new_ustar();
            h.set_size(0);
            h.set_mode(0o644);
            h.set_cksum();
            tar.append_data(&mut h, name, &b""[..]).unwrap();
        };
        add("bin/sh".to_string());
        for i in 0..count {
            add(format!("d/f{i:06}"));
        }
        for i in 0..count {
            add(format!("d/.wh.f{i:06}"));
        }
        add(".wh.bin".to_string());
        tar.finish().unwrap();
    });
    let out = nixoci().arg("check").arg(&layout).output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    // The whiteout of /bin removed the entrypoint /bin/sh.
    assert!(!out.status.success(), "{report}");
    assert!(report.contains("/bin/sh"), "{report}");
    // How the time grows with the count is benches/check-whiteouts.sh's to
    // measure (a timed test would only measure the machine's load).
}

#[test]
fn a_missing_tmp_only_warns_unless_the_config_names_it() {
    let a = authentik();
    let dir = tempdir();
    let plain = json!({"Entrypoint": [format!("{}/bin/ak", a.ak)], "Env": [format!("PATH={}/bin", a.busybox)]});
    let image = build_image(dir.path(), "no-tmp", plain.clone(), &[]);
    let out = nixoci().arg("check").arg(&image).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("WARN") && l.contains("/tmp (temporary files) does not exist")),
        "{text}"
    );
    // With TMPDIR=/tmp the app will write there: now it blocks the push.
    let mut named = plain;
    named["Env"]
        .as_array_mut()
        .unwrap()
        .push(json!("TMPDIR=/tmp"));
    let image = build_image(dir.path(), "tmpdir-no-tmp", named, &[]);
    check_fails(&image, "/tmp (temporary files) does not exist");
    // A missing entrypoint always blocks it.
    let gone = json!({"Entrypoint": ["/bin/no-such-app"]});
    let image = build_image(dir.path(), "no-entrypoint", gone, &[]);
    check_fails(&image, "/bin/no-such-app");
}

/// A file added to the store with `mode`.
fn store_file(dir: &Path, name: &str, text: &str, mode: u32) -> String {
    use std::os::unix::fs::PermissionsExt;
    let file = dir.join(name);
    fs::write(&file, text).unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(mode)).unwrap();
    stdout(Command::new("nix-store").arg("--add").arg(&file))
        .trim()
        .to_string()
}

fn check_report(image: &Path, extra: &[&str]) -> (bool, String) {
    let out = nixoci()
        .arg("check")
        .arg(image)
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn check_follows_env_shebangs_volumes_writable_dirs_and_named_users() {
    let a = authentik();
    let dir = tempdir();
    let salt = rand_suffix();
    let script = store_file(
        dir.path(),
        "run",
        &format!("#!/usr/bin/env sh\n# {salt}\necho hi\n"),
        0o555,
    );
    let passwd = store_file(
        dir.path(),
        "passwd",
        &format!("# {salt}\napp:x:1000:1000::/:/bin/sh\n"),
        0o444,
    );
    let path_env = format!("PATH={}/bin", a.busybox);
    let base = json!({"Entrypoint": [script.clone()], "Env": [path_env.clone()]});
    let tmp = ["--root", "dir:/tmp:1777"];

    // `#!/usr/bin/env sh` needs /usr/bin/env in the image, then sh on PATH.
    let image = build_image(dir.path(), "env-missing", base.clone(), &tmp);
    let (ok, report) = check_report(&image, &[]);
    assert!(!ok && report.contains("/usr/bin/env"), "{report}");
    let env_link = format!("symlink:/usr/bin/env:{}/bin/env", a.busybox);
    let image = build_image(
        dir.path(),
        "env-present",
        base.clone(),
        &[&tmp[..], &["--root", &env_link]].concat(),
    );
    let (ok, report) = check_report(&image, &[]);
    assert!(ok, "{report}");

    // Volumes and --writable directories must exist and be writable.
    let mut with_volume = base.clone();
    with_volume["Volumes"] = json!({"/data": {}});
    let image = build_image(
        dir.path(),
        "volume",
        with_volume,
        &[
            &tmp[..],
            &["--root", &env_link, "--root", "dir:/cache:0755"],
        ]
        .concat(),
    );
    let (ok, report) = check_report(&image, &[]);
    assert!(
        !ok && report.contains("/data (a Volume) does not exist"),
        "{report}"
    );
    let (_, report) = check_report(&image, &["--writable", "/cache"]);
    assert!(
        report.contains("/cache (--writable) is writable by uid 0"),
        "{report}"
    );

    // A named user is looked up in the image's /etc/passwd and checked as that uid.
    let mut named = base.clone();
    named["User"] = json!("app");
    let passwd_entry = format!("file:/etc/passwd:{passwd}");
    let image = build_image(
        dir.path(),
        "named-user",
        named.clone(),
        &[
            &tmp[..],
            &[
                "--root",
                &env_link,
                "--root",
                &passwd_entry,
                "--root",
                "dir:/cache:0755",
            ],
        ]
        .concat(),
    );
    let (ok, report) = check_report(&image, &["--writable", "/cache"]);
    assert!(
        !ok && report.contains("/cache (--writable) is not writable by uid 1000"),
        "{report}"
    );
    let image = build_image(
        dir.path(),
        "unknown-user",
        named,
        &[&tmp[..], &["--root", &env_link]].concat(),
    );
    let (ok, report) = check_report(&image, &[]);
    assert!(!ok && report.contains("does not define it"), "{report}");

    // No PATH: a warning, not a failure.
    let no_path = json!({"Entrypoint": [format!("{}/bin/sh", a.busybox)]});
    let image = build_image(dir.path(), "no-path", no_path, &tmp);
    let (ok, report) = check_report(&image, &[]);
    assert!(
        ok && report
            .lines()
            .any(|l| l.starts_with("WARN") && l.contains("PATH is not set")),
        "{report}"
    );
}

/// A docker-archive's manifest.json may name only members of the archive:
/// a `..` or an absolute path is refused before anything is read, so
/// `check` and `push` never read (or upload) a file of the host.
#[test]
fn a_docker_archive_naming_files_outside_itself_is_refused() {
    let dir = tempdir();
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    for outside in ["../../../../../../etc/hostname", "/etc/hostname"] {
        for (config_name, layer_name) in [("config.json", outside), (outside, "layer.tar")] {
            let archive = dir.path().join("outside.tar");
            let manifest = json!([{
                "Config": config_name,
                "RepoTags": ["x:1"],
                "Layers": [layer_name],
            }])
            .to_string();
            write_tar(
                &archive,
                &[
                    ("manifest.json", manifest.as_bytes()),
                    ("config.json", &config[..]),
                    ("layer.tar", &[0u8; 1024][..]),
                ],
            );
            // Nothing listens at port 1: the archive is refused before any push.
            for (command, dest) in [("check", None), ("push", Some("127.0.0.1:1/x:1"))] {
                let err = fails(nixoci().arg(command).arg(&archive).args(dest));
                assert!(
                    err.contains(&format!(
                        "manifest.json names `{outside}` outside the archive"
                    )),
                    "{command:?} {config_name} {layer_name}: {err}"
                );
            }
        }
    }
}

/// A tar of regular files, in the order given.
fn write_tar(path: &Path, members: &[(&str, &[u8])]) {
    let mut tar = tar::Builder::new(fs::File::create(path).unwrap());
    for (name, bytes) in members {
        let mut h = tar::Header::new_ustar();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, name, *bytes).unwrap();
    }
    tar.finish().unwrap();
}

/// An archive with two members of one name (skopeo reads the first, a
/// plain unpack keeps the last) is refused, so no two tools act on two
/// different images.
#[test]
fn an_archive_with_a_member_twice_is_refused() {
    let dir = tempdir();
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let manifest =
        |tag: &str| json!([{"Config": "config.json", "RepoTags": [tag], "Layers": []}]).to_string();
    let (first, second) = (manifest("x:1"), manifest("y:2"));
    let archive = dir.path().join("twice.tar");
    write_tar(
        &archive,
        &[
            ("config.json", &config[..]),
            ("manifest.json", first.as_bytes()),
            ("./manifest.json", second.as_bytes()),
        ],
    );
    let err = fails(nixoci().arg("check").arg(&archive));
    assert!(
        err.contains("archive member manifest.json appears twice"),
        "{err}"
    );
}

/// A gzipped tar of `members` (name, size of zeros, hard link target), written
/// as it streams.
fn write_zero_tar_gz(path: &Path, members: &[(&str, u64, Option<&str>)]) {
    let gz =
        flate2::write::GzEncoder::new(fs::File::create(path).unwrap(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    for (name, size, link) in members {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        match link {
            Some(target) => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_size(0);
                tar.append_link(&mut h, name, target).unwrap();
            }
            None => {
                h.set_size(*size);
                h.set_cksum();
                tar.append_data(&mut h, name, std::io::Read::take(std::io::repeat(0), *size))
                    .unwrap();
            }
        }
    }
    tar.into_inner().unwrap().finish().unwrap();
}

/// `nixoci ARGS` under GNU time: exit code, stderr and peak RSS in KiB.
fn peak_rss(args: &[&std::ffi::OsStr], env: &[(&str, &str)]) -> (Option<i32>, String, u64) {
    let dir = tempdir();
    let rss_file = dir.path().join("rss");
    let out = Command::new("/usr/bin/time")
        .arg("-o")
        .arg(&rss_file)
        .args(["-f", "%M"])
        .arg(env!("CARGO_BIN_EXE_nixoci"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let rss = fs::read_to_string(&rss_file).unwrap();
    let rss = rss.lines().last().unwrap().trim().parse().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        rss,
    )
}

/// Untrusted images cost bounded memory and temporary space: names longer
/// than PATH_MAX, an index.json over the JSON cap and archives that unpack
/// to more than their budget are refused, naming the cap, in well under
/// 100 MiB.
#[test]
fn hostile_images_cost_bounded_memory_and_temporary_space() {
    let dir = tempdir();
    // 1,600 members of 1 MB names each (GNU long-name records).
    let layout = layout_with_layer(dir.path(), |out| {
        let mut tar = tar::Builder::new(out);
        let long = "x".repeat(1_000_000);
        for i in 0..1600 {
            let mut h = tar::Header::new_gnu();
            h.set_size(0);
            h.set_mode(0o644);
            h.set_cksum();
            tar.append_data(&mut h, format!("{long}/f{i}"), &b""[..])
                .unwrap();
        }
        tar.finish().unwrap();
    });
    let (code, err, rss) = peak_rss(&["check".as_ref(), layout.as_os_str()], &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("longer than PATH_MAX (4096 bytes)"), "{err}");
    assert!(rss < 100 * 1024, "check peaked at {rss} KiB");

    // An oci-archive whose index.json is 5 MB: over the JSON cap.
    let archive = dir.path().join("big-index.tar.gz");
    write_zero_tar_gz(
        &archive,
        &[("oci-layout", 30, None), ("index.json", 5 << 20, None)],
    );
    let (code, err, rss) = peak_rss(&["check".as_ref(), archive.as_os_str()], &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("index.json is over the 4194304-byte (4 MiB) cap"),
        "{err}"
    );
    assert!(rss < 100 * 1024, "check peaked at {rss} KiB");

    // One of 300 MB (300 KB gzipped): over the default unpack budget of
    // 256 MiB, refused before anything is written; push refuses it too.
    let bomb = dir.path().join("bomb.tar.gz");
    write_zero_tar_gz(
        &bomb,
        &[("oci-layout", 30, None), ("index.json", 300 << 20, None)],
    );
    for args in [
        vec!["check".as_ref(), bomb.as_os_str()],
        vec![
            "push".as_ref(),
            bomb.as_os_str(),
            "127.0.0.1:1/x:1".as_ref(),
            "--insecure".as_ref(),
        ],
    ] {
        let (code, err, rss) = peak_rss(&args, &[]);
        assert_eq!(code, Some(1), "{err}");
        assert!(
            err.contains(&format!(
                "unpacking {} would write more than 268435456 bytes",
                bomb.display()
            )) && err.contains("NIXOCI_MAX_UNPACK"),
            "{err}"
        );
        assert!(rss < 100 * 1024, "{args:?} peaked at {rss} KiB");
    }
    // NIXOCI_MAX_UNPACK sets the budget: here the 5 MB index no longer fits.
    let (_, err, _) = peak_rss(
        &["check".as_ref(), archive.as_os_str()],
        &[("NIXOCI_MAX_UNPACK", "1000000")],
    );
    assert!(err.contains("would write more than 1000000 bytes"), "{err}");
    // Links of a docker-archive are copied, and each copy counts.
    let linked = dir.path().join("linked.tar.gz");
    write_zero_tar_gz(
        &linked,
        &[
            ("big", 100 << 20, None),
            ("copy1", 0, Some("big")),
            ("copy2", 0, Some("big")),
            ("manifest.json", 2, None),
        ],
    );
    let (_, err, _) = peak_rss(
        &["check".as_ref(), linked.as_os_str()],
        &[("NIXOCI_MAX_UNPACK", "250000000")],
    );
    assert!(
        err.contains("would write more than 250000000 bytes"),
        "{err}"
    );
}

/// Names each under PATH_MAX but too many in all: the map of the file
/// system stops at its budget instead of growing with the layer.
#[test]
fn check_stops_at_its_budget_for_names() {
    let dir = tempdir();
    let layout = layout_with_layer(dir.path(), |out| {
        let mut tar = tar::Builder::new(out);
        let long = "n".repeat(4000);
        for i in 0..70_000 {
            let mut h = tar::Header::new_gnu();
            h.set_size(0);
            h.set_mode(0o644);
            h.set_cksum();
            tar.append_data(&mut h, format!("{long}{i}"), &b""[..])
                .unwrap();
        }
        tar.finish().unwrap();
    });
    let (code, err, _) = peak_rss(&["check".as_ref(), layout.as_os_str()], &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("the layers name more than 268435456 bytes of paths"),
        "{err}"
    );
}

/// A docker-archive's layers are tied to it only by its config's diff_ids:
/// each must be the digest of its layer's tar, plain or gzipped, or check
/// and push refuse the archive.
#[test]
fn docker_archive_diff_ids_must_match_their_layers() {
    use sha2::Digest as _;
    let dir = tempdir();
    let registry = Registry::start(Auth::Anonymous);
    let layer_tar = dir.path().join("content.tar");
    write_tar(&layer_tar, &[("hello", b"hello\n")]);
    let plain = fs::read(&layer_tar).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &plain).unwrap();
    let gzipped = gz.finish().unwrap();
    let right = format!(
        "sha256:{}",
        nixoci::digest::hex(&sha2::Sha256::digest(&plain))
    );
    let wrong = format!("sha256:{}", "0".repeat(64));
    for (i, (layer, diff_id, ok)) in [
        (&plain, &right, true),
        (&plain, &wrong, false),
        (&gzipped, &right, true),
        (&gzipped, &wrong, false),
    ]
    .into_iter()
    .enumerate()
    {
        let config = json!({"architecture": "amd64", "os": "linux",
            "config": {"Entrypoint": ["/hello"]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]}})
        .to_string();
        let manifest =
            json!([{"Config": "config.json", "RepoTags": ["x:1"], "Layers": ["layer.tar"]}])
                .to_string();
        let archive = dir.path().join(format!("archive-{i}.tar"));
        write_tar(
            &archive,
            &[
                ("manifest.json", manifest.as_bytes()),
                ("config.json", config.as_bytes()),
                ("layer.tar", &layer[..]),
            ],
        );
        let out = nixoci()
            .args(["push", "-q", "--insecure"])
            .arg(&archive)
            .arg(format!("{}/diff/ids:{i}", registry.host()))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.success(), ok, "case {i}: {err}");
        if !ok {
            assert!(
                err.contains(&format!(
                    "layer 1 of the docker-archive is not the one its config names: the config's diff_id is {wrong}, the layer's tar is {right}"
                )),
                "case {i}: {err}"
            );
            let err = fails(nixoci().arg("check").arg(&archive));
            assert!(err.contains("is not the one its config names"), "{err}");
        }
    }
}
