//! Names as container tools expect them: `--tag NAME` means NAME:latest, the
//! layout's `io.containerd.image.name` is the normalized reference, and the
//! oci-archive (with its directory entries) imports into containerd, which
//! then finds the image by that name and runs it.

mod common;

use std::path::Path;
use std::process::{Child, Command};

use common::*;
use serde_json::json;

/// containerd with its own root, state and socket; stopped on drop.
struct Containerd {
    child: Child,
    socket: String,
    _dir: tempfile::TempDir,
}

impl Containerd {
    fn start() -> Containerd {
        let dir = tempdir();
        let socket = dir.path().join("containerd.sock").display().to_string();
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{0}/root\"\nstate = \"{0}/state\"\n[grpc]\n  address = \"{1}\"\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  disable_tcp_service = true\n",
                dir.path().display(),
                socket
            ),
        )
        .unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdout(std::fs::File::create(dir.path().join("log")).unwrap())
            .stderr(std::fs::File::create(dir.path().join("err")).unwrap())
            .spawn()
            .expect("containerd (.ci/setup installs it)");
        for _ in 0..100 {
            if Path::new(&socket).exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Containerd {
            child,
            socket,
            _dir: dir,
        }
    }

    fn ctr(&self, args: &[&str]) -> String {
        stdout(
            Command::new("ctr")
                .args(["-a", &self.socket, "-n", "nixoci-test"])
                .args(args),
        )
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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
