//! Multi-platform images: `nixoci index` combines single-platform images
//! into an OCI image index that skopeo reads and resolves per platform, and
//! `nixoci push` pushes it (images first, then the index) so that it pulls
//! back by digest and re-pushes with nothing uploaded.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

/// The fixture app built for `arch`, in `format`.
fn image(dir: &Path, arch: &str, format: &str) -> PathBuf {
    let f = fixture();
    let out = dir.join(format!("{arch}-{format}"));
    run(nixoci()
        .arg("build")
        .arg(&f.app)
        .args([
            "--graph",
            &f.attrs_json,
            "--architecture",
            arch,
            "--format",
            format,
        ])
        .args(["--tag", "team/app:1", "-q", "-o"])
        .arg(&out));
    out
}

fn skopeo_json(args: &[&str]) -> Value {
    serde_json::from_str(&stdout(Command::new("skopeo").args(args))).unwrap()
}

#[test]
fn an_index_of_two_platforms_resolves_per_platform_and_pushes_once() {
    let dir = tempdir();
    let amd64 = image(dir.path(), "amd64", "oci-layout");
    // The arm64 image arrives as an oci-archive: any image source works.
    let arm64 = image(dir.path(), "arm64", "oci-archive");
    let index = dir.path().join("index");
    run(nixoci()
        .arg("index")
        .arg(&amd64)
        .arg(&arm64)
        .args(["--tag", "team/app:1.0", "-o"])
        .arg(&index));

    let raw = skopeo_json(&["inspect", "--raw", &format!("oci:{}:1.0", index.display())]);
    assert_eq!(raw["mediaType"], "application/vnd.oci.image.index.v1+json");
    let platforms: Vec<&str> = raw["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap())
        .collect();
    assert_eq!(platforms, ["amd64", "arm64"]);
    for arch in ["arm64", "amd64"] {
        let resolved = skopeo_json(&[
            "--override-arch",
            arch,
            "inspect",
            &format!("oci:{}:1.0", index.display()),
        ]);
        assert_eq!(resolved["Architecture"], arch);
    }
    // The same inputs give the same bytes.
    let again = dir.path().join("index-again");
    run(nixoci()
        .arg("index")
        .arg(&amd64)
        .arg(&arm64)
        .args(["--tag", "team/app:1.0", "-o"])
        .arg(&again));
    assert_eq!(
        fs::read(index.join("index.json")).unwrap(),
        fs::read(again.join("index.json")).unwrap()
    );

    // Pushed: the images, then the index; pulled back by digest.
    let registry = Registry::start(Auth::Anonymous);
    let proxy = Proxy::start(&registry);
    let target = format!("{}/team/app:1.0", proxy.host());
    let out = stdout(
        nixoci()
            .args(["push", "--insecure", "-q", "--json"])
            .arg(&index)
            .arg(&target),
    );
    let pushed: Value = serde_json::from_str(&out).unwrap();
    let digest = pushed["digest"].as_str().unwrap().to_string();
    assert!(pushed["bytes_uploaded"].as_u64().unwrap() > 0);
    let by_digest = format!("docker://{}/team/app@{digest}", proxy.host());
    let remote_raw =
        stdout(Command::new("skopeo").args(["inspect", "--raw", "--tls-verify=false", &by_digest]));
    assert_eq!(serde_json::from_str::<Value>(&remote_raw).unwrap(), raw);
    // The whole index pulls back, every platform's image in it.
    let pulled = dir.path().join("pulled");
    run(Command::new("skopeo")
        .args(["copy", "-q", "--all", "--src-tls-verify=false", &by_digest])
        .arg(format!("oci:{}:x", pulled.display())));
    for arch in ["amd64", "arm64"] {
        let config = skopeo_json(&[
            "--override-arch",
            arch,
            "inspect",
            "--config",
            &format!("oci:{}:x", pulled.display()),
        ]);
        assert_eq!(config["architecture"], arch);
    }
    let remote_arm = skopeo_json(&[
        "--override-arch",
        "arm64",
        "inspect",
        "--tls-verify=false",
        &format!("docker://{target}"),
    ]);
    assert_eq!(remote_arm["Architecture"], "arm64");
    // inspect and diff read one image: a multi-platform tag is refused.
    let err = fails(nixoci().args(["inspect", "--insecure", &target]));
    assert!(
        err.contains("is a multi-platform image index; name one platform's image"),
        "{err}"
    );

    // A re-push uploads nothing and leaves the tag alone.
    let (before, _) = proxy.stats();
    let out = run(nixoci()
        .args(["push", "--insecure", "-q", "--json"])
        .arg(&index)
        .arg(&target));
    let again: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(again["bytes_uploaded"], 0);
    assert_eq!(proxy.stats().0, before);
    assert!(String::from_utf8_lossy(&out.stderr).contains("already pushed"));
}

#[test]
fn an_index_refuses_two_images_of_one_platform_and_single_image_commands_say_why() {
    let dir = tempdir();
    let amd64 = image(dir.path(), "amd64", "oci-layout");
    let docker = image(dir.path(), "amd64", "docker-archive");
    let err = fails(
        nixoci()
            .arg("index")
            .arg(&amd64)
            .arg(&docker)
            .args(["--tag", "team/app:1", "-o"])
            .arg(dir.path().join("index")),
    );
    assert!(err.contains("same platform"), "{err}");
    assert!(!dir.path().join("index").exists(), "nothing is left behind");
    // A docker-archive's plain layers make a valid index entry too.
    let arm64 = image(dir.path(), "arm64", "docker-archive");
    let index = dir.path().join("index");
    run(nixoci()
        .arg("index")
        .arg(&docker)
        .arg(&arm64)
        .args(["--tag", "team/app:1", "-o"])
        .arg(&index));
    let resolved = skopeo_json(&[
        "--override-arch",
        "arm64",
        "inspect",
        &format!("oci:{}:1", index.display()),
    ]);
    assert_eq!(resolved["Architecture"], "arm64");
    // `check` takes one image: it says so for an index.
    let err = fails(nixoci().arg("check").arg(&index));
    assert!(err.contains("multi-platform image index"), "{err}");
}

/// Platforms compare as containerd normalises them: `aarch64` is `arm64`,
/// so an index cannot list one platform twice under two spellings; an
/// architecture that is not a name is refused, not taken for amd64.
#[test]
fn platforms_are_normalised_and_must_be_names() {
    let dir = tempdir();
    let arm64 = image(dir.path(), "arm64", "oci-layout");
    let amd64 = image(dir.path(), "amd64", "oci-layout");
    let aarch64 = image(dir.path(), "aarch64", "oci-layout");
    // Not next to each other: every earlier image counts.
    let err = fails(
        nixoci()
            .arg("index")
            .arg(&arm64)
            .arg(&amd64)
            .arg(&aarch64)
            .args(["--tag", "team/app:1", "-o"])
            .arg(dir.path().join("index")),
    );
    assert!(err.contains("same platform"), "{err}");
    // Alone, aarch64 is listed as containerd will match it.
    let index = dir.path().join("index-aarch64");
    run(nixoci()
        .arg("index")
        .arg(&aarch64)
        .args(["--tag", "team/app:1", "-o"])
        .arg(&index));
    let raw: Value =
        serde_json::from_slice(&std::fs::read(index.join("index.json")).unwrap()).unwrap();
    let digest = raw["manifests"][0]["digest"].as_str().unwrap();
    let inner: Value = serde_json::from_slice(
        &std::fs::read(index.join("blobs/sha256").join(&digest[7..])).unwrap(),
    )
    .unwrap();
    assert_eq!(
        inner["manifests"][0]["platform"],
        serde_json::json!({"architecture": "arm64", "os": "linux"})
    );

    // A docker-archive whose config says `"architecture": 123`.
    let archive = dir.path().join("numeric.tar");
    let config = br#"{"architecture":123,"os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let manifest = br#"[{"Config":"config.json","RepoTags":["x:1"],"Layers":[]}]"#;
    let mut tar = tar::Builder::new(std::fs::File::create(&archive).unwrap());
    for (name, bytes) in [
        ("config.json", &config[..]),
        ("manifest.json", &manifest[..]),
    ] {
        let mut h = tar::Header::new_ustar();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, name, bytes).unwrap();
    }
    tar.finish().unwrap();
    let err = fails(
        nixoci()
            .arg("index")
            .arg(&arm64)
            .arg(&archive)
            .args(["--tag", "team/app:1", "-o"])
            .arg(dir.path().join("index-numeric")),
    );
    assert!(
        err.contains("the config's architecture is not a platform name: 123"),
        "{err}"
    );
}
