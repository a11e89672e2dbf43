//! Names as container tools expect them: `--tag NAME` means NAME:latest, the
//! layout's `io.containerd.image.name` is the normalized reference, and the
//! oci-archive (with its directory entries) imports into containerd, which
//! then finds the image by that name and runs it.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::json;

#[test]
fn containerd_imports_the_oci_archive_by_its_normalized_name_and_runs_it() {
    let a = authentik();
    let dir = tempdir();
    let config = dir.path().join("config.json");
    std::fs::write(
        &config,
        json!({"Entrypoint": [format!("{}/bin/sh", a.busybox), "-c", "echo hello from containerd"]}).to_string(),
    )
    .unwrap();
    let build = |tag: &str, format: &str, out: &Path| {
        run(nixoci()
            .arg("build")
            .arg(&a.busybox)
            .arg("--config")
            .arg(&config)
            .args(["--tag", tag, "--format", format, "-q", "-o"])
            .arg(out));
    };
    // NAME alone is NAME:latest; names are written as containerd looks them up.
    for (tag, ref_name, image_name) in [
        ("hello", "latest", "docker.io/library/hello:latest"),
        ("example/hello:1.0", "1.0", "docker.io/example/hello:1.0"),
        (
            "localhost:5000/team/app",
            "latest",
            "localhost:5000/team/app:latest",
        ),
    ] {
        let layout = dir
            .path()
            .join(format!("layout-{ref_name}-{}", image_name.len()));
        build(tag, "oci-layout", &layout);
        let index = read_json(&layout.join("index.json"));
        let annotations = &index["manifests"][0]["annotations"];
        assert_eq!(
            annotations["org.opencontainers.image.ref.name"], ref_name,
            "{tag}"
        );
        assert_eq!(annotations["io.containerd.image.name"], image_name, "{tag}");
    }

    let archive = dir.path().join("hello.tar");
    build("example/hello:1.0", "oci-archive", &archive);
    let members = stdout(Command::new("tar").arg("-tf").arg(&archive));
    assert!(
        members.lines().any(|l| l == "blobs/") && members.lines().any(|l| l == "blobs/sha256/"),
        "{members}"
    );

    let containerd = Containerd::start();
    containerd.ctr(&["images", "import", archive.to_str().unwrap()]);
    let images = containerd.ctr(&["images", "ls", "-q"]);
    assert!(
        images.lines().any(|l| l == "docker.io/example/hello:1.0"),
        "{images}"
    );
    let id = format!("nixoci-{}", rand_suffix());
    let out = containerd.ctr(&["run", "--rm", "docker.io/example/hello:1.0", &id]);
    assert_eq!(out.trim(), "hello from containerd");
}
