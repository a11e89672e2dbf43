//! Shared helpers for the integration tests: the real `nixoci` binary, a
//! closure built with Nix from plain derivations, and the outside tools
//! (umoci, skopeo, python3) used as independent checkers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
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

/// The password every registry test uses; no test output may contain it.
pub const PASSWORD: &str = "s3cret-Pa55word-nixoci";
pub const USER: &str = "ci-user";

/// A background server process, killed when dropped.
pub struct Server {
    child: std::process::Child,
    pub port: u16,
    pub log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nothing listens on, never handed out twice in this process: the
/// kernel may give a just-released port to the next bind, and two servers
/// of parallel tests must not meet on one.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

pub fn spawn(cmd: &mut Command, port: u16, log: PathBuf) -> Server {
    let file = std::fs::File::create(&log).unwrap();
    let child = cmd
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start {cmd:?}: {e} (is it installed? .ci/setup installs it)")
        });
    let mut server = Server { child, port, log };
    for _ in 0..200 {
        // A server that could not bind has exited: whatever answers is not it.
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!(
                "{cmd:?} exited ({status}): {}",
                std::fs::read_to_string(&server.log).unwrap_or_default()
            );
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return server;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    panic!(
        "{cmd:?} did not listen on {port}: {}",
        std::fs::read_to_string(&server.log).unwrap_or_default()
    );
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Auth {
    Anonymous,
    Htpasswd,
    Token,
}

/// A CNCF registry (docker-registry) on 127.0.0.1, with its token server if any.
pub struct Registry {
    pub server: Server,
    pub token: Option<Server>,
    pub dir: tempfile::TempDir,
}

impl Registry {
    pub fn start(auth: Auth) -> Registry {
        Registry::start_with(auth, false)
    }

    /// The CA that signed the registry's certificate (with `tls`), for `--ca-file`.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("tls-ca.pem")
    }

    /// With `tls`, the registry speaks HTTPS with a certificate for
    /// 127.0.0.1 from a CA of its own (`ca_file`), which no client trusts
    /// unless told to.
    pub fn start_with(auth: Auth, tls: bool) -> Registry {
        let dir = tempdir();
        let d = dir.path();
        let port = free_port();
        let tls_yaml = if tls {
            sh(&format!(
                "cd {} && openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=nixoci-test-ca \
                   -keyout tls-ca-key.pem -out tls-ca.pem 2>/dev/null && \
                 openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout tls-key.pem -out tls.csr 2>/dev/null && \
                 printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' > tls.ext && \
                 openssl x509 -req -in tls.csr -CA tls-ca.pem -CAkey tls-ca-key.pem -CAcreateserial \
                   -days 2 -extfile tls.ext -out tls-cert.pem 2>/dev/null",
                d.display()
            ));
            format!(
                ", tls: {{certificate: {}, key: {}}}",
                d.join("tls-cert.pem").display(),
                d.join("tls-key.pem").display()
            )
        } else {
            String::new()
        };
        let auth_yaml = match auth {
            Auth::Anonymous => String::new(),
            Auth::Htpasswd => {
                let line = stdout(Command::new("htpasswd").args(["-Bbn", USER, PASSWORD]));
                std::fs::write(d.join("htpasswd"), line.trim()).unwrap();
                format!(
                    "auth: {{htpasswd: {{realm: nixoci-test, path: {}}}}}\n",
                    d.join("htpasswd").display()
                )
            }
            Auth::Token => String::new(),
        };
        let mut token = None;
        let auth_yaml = if auth == Auth::Token {
            run(Command::new("openssl")
                .args([
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=nixoci-test",
                ])
                .arg("-keyout")
                .arg(d.join("key.pem"))
                .arg("-out")
                .arg(d.join("cert.pem")));
            let token_port = free_port();
            token = Some(spawn(
                Command::new("python3")
                    .arg(repo().join("tests/support/token_server.py"))
                    .arg(token_port.to_string())
                    .arg(d.join("key.pem"))
                    .arg(d.join("cert.pem"))
                    .arg(format!("{USER}:{PASSWORD}")),
                token_port,
                d.join("token.log"),
            ));
            format!(
                "auth: {{token: {{realm: \"http://127.0.0.1:{token_port}/token\", service: nixoci-test, issuer: nixoci-test-issuer, rootcertbundle: {}}}}}\n",
                d.join("cert.pem").display()
            )
        } else {
            auth_yaml
        };
        let config = format!(
            "version: 0.1\nlog: {{level: info}}\nstorage: {{filesystem: {{rootdirectory: {}}}, delete: {{enabled: true}}}}\nhttp: {{addr: 127.0.0.1:{port}, secret: nixoci-test{tls_yaml}}}\n{auth_yaml}",
            d.join("data").display()
        );
        std::fs::write(d.join("config.yml"), config).unwrap();
        let server = spawn(
            Command::new("docker-registry")
                .arg("serve")
                .arg(d.join("config.yml")),
            port,
            d.join("registry.log"),
        );
        Registry { server, token, dir }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.server.port)
    }
}

/// The fault-injecting proxy of `tests/support/fault_proxy.py`.
pub struct Proxy {
    pub server: Server,
    pub plan: PathBuf,
    pub stats: PathBuf,
    _dir: tempfile::TempDir,
}

impl Proxy {
    pub fn start(upstream: &Registry) -> Proxy {
        let dir = tempdir();
        let plan = dir.path().join("plan.json");
        let stats = dir.path().join("stats.json");
        std::fs::write(&plan, "{}").unwrap();
        let port = free_port();
        let server = spawn(
            Command::new("python3")
                .arg(repo().join("tests/support/fault_proxy.py"))
                .arg(port.to_string())
                .arg(upstream.server.port.to_string())
                .arg(&plan)
                .arg(&stats),
            port,
            dir.path().join("proxy.log"),
        );
        Proxy {
            server,
            plan,
            stats,
            _dir: dir,
        }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.server.port)
    }

    pub fn set_plan(&self, plan: serde_json::Value) {
        std::fs::write(&self.plan, plan.to_string()).unwrap();
    }

    fn stats_json(&self) -> serde_json::Value {
        std::fs::read(&self.stats)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_else(
                || serde_json::json!({"blob_bytes": 0, "requests": [], "authorized": []}),
            )
    }

    fn lines(v: &serde_json::Value) -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap().to_string())
            .collect()
    }

    /// (blob bytes received, request lines) so far.
    pub fn stats(&self) -> (u64, Vec<String>) {
        let v = self.stats_json();
        (
            v["blob_bytes"].as_u64().unwrap(),
            Self::lines(&v["requests"]),
        )
    }

    /// The bytes of the blobs it answered to GETs.
    pub fn pulled_bytes(&self) -> u64 {
        self.stats_json()["pulled_bytes"].as_u64().unwrap_or(0)
    }

    /// The most blob uploads the proxy saw in flight at once.
    pub fn max_uploads_at_once(&self) -> u64 {
        self.stats_json()["max_uploads_at_once"].as_u64().unwrap()
    }

    /// The requests that carried an `Authorization` header.
    pub fn authorized(&self) -> Vec<String> {
        Self::lines(&self.stats_json()["authorized"])
    }
}

/// An unpacked runc bundle of `image`.
pub struct Bundle {
    pub dir: std::path::PathBuf,
}

impl Bundle {
    /// Unpacks `image:tag` into `dir/bundle`.
    pub fn unpack(image: &std::path::Path, tag: &str, dir: &std::path::Path) -> Bundle {
        let bundle = dir.join("bundle");
        run(Command::new("umoci")
            .args(["unpack", "--image"])
            .arg(format!("{}:{tag}", image.display()))
            .arg(&bundle));
        Bundle { dir: bundle }
    }

    pub fn rootfs(&self) -> std::path::PathBuf {
        self.dir.join("rootfs")
    }

    /// Runs the container as uid 65534 with extra `args`; returns (exit code, stdout, stderr).
    pub fn run(
        &self,
        args: &[&str],
        edit: impl FnOnce(&mut serde_json::Value),
    ) -> (i32, String, String) {
        let path = self.dir.join("config.json");
        let mut config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let mut argv: Vec<serde_json::Value> =
            config["process"]["args"].as_array().unwrap().clone();
        argv.extend(args.iter().map(|a| serde_json::json!(a)));
        config["process"]["args"] = serde_json::json!(argv);
        config["process"]["terminal"] = serde_json::json!(false);
        config["process"]["user"] = serde_json::json!({"uid": 65534, "gid": 65534});
        edit(&mut config);
        let runc_config = self.dir.join("config.json");
        let original = std::fs::read(&runc_config).unwrap();
        std::fs::write(&runc_config, config.to_string()).unwrap();
        let id = format!("nixoci-test-{}-{}", std::process::id(), rand_suffix());
        let out = Command::new("runc")
            .arg("run")
            .arg("--bundle")
            .arg(&self.dir)
            .arg(&id)
            .output()
            .expect("runc");
        let _ = Command::new("runc")
            .args(["delete", "--force", &id])
            .output();
        std::fs::write(&runc_config, original).unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

pub fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// The binary under test (cargo builds it for the integration tests).
pub fn release_nixoci() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_nixoci"))
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A copy of this repository (tracked and new files) and a stand-in nixpkgs
/// holding the binaries cargo built.
pub fn flake_dirs() -> &'static (PathBuf, PathBuf, tempfile::TempDir) {
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
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            if let Ok(meta) = std::fs::symlink_metadata(repo().join(file)) {
                if meta.is_file() {
                    std::fs::copy(repo().join(file), &to).unwrap();
                }
            }
        }
        let standin = dir.path().join("nixpkgs");
        copy_tree(&repo().join("tests/fixtures/standin-nixpkgs"), &standin);
        std::fs::create_dir_all(standin.join("bin")).unwrap();
        std::fs::copy(release_nixoci(), standin.join("bin/nixoci")).unwrap();
        std::fs::copy(static_entrypoint(), standin.join("bin/nixoci-entrypoint")).unwrap();
        (copy, standin, dir)
    })
}

/// The environment of every build against the stand-in nixpkgs: its
/// fetchers' mirrors, and Nix's sandbox as a daemon sets it up. Builders run
/// as build users and see their inputs, `/bin/sh` (busybox, also copied into
/// the store for the stand-in's packages), and only the host programs that
/// the stand-in's `host-programs.json` names (bash for stdenv's builder,
/// python3 for the ./tools fakes, git, GNU coreutils, find, grep, sed and
/// tar), each bound at `/host/bin` with its own libraries, Java with
/// openapi-generator's jar (at `/host/jvm` and `/host/share`), Go (at its
/// own paths), npm (at `/host/lib`) and uv (at `/host/bin`); `/usr/bin` stays
/// empty, as in nixpkgs' sandbox. The fixture mirrors and the registry proxy
/// stand for the network of fixed-output derivations.
pub fn standin_env() -> [(&'static str, std::ffi::OsString); 4] {
    [
        ("NIXOCI_FIXTURE_MIRRORS", fixture_mirrors().into()),
        ("NIX_CONFIG", standin_nix_config().into()),
        // Both spellings: Nix passes every listed impure variable, set or
        // not, and uv ignores `https_proxy` when `HTTPS_PROXY` is empty.
        ("https_proxy", registry_proxy().into()),
        ("HTTPS_PROXY", registry_proxy().into()),
    ]
}

/// Where `.ci/setup` puts the real packages of the fixture registries
/// (TypeScript, dumb-init's wheel), laid out as the registries serve them.
const REGISTRY_DOWNLOADS: &str = "/opt/nixoci-test-registries";

/// The network of the stand-in's npm and uv (`tests/fixtures/registries`):
/// a proxy that answers for the npm registry and PyPI over TLS with the
/// test CA's certificate, serving the fixture packages and the real
/// TypeScript and dumb-init. Its URL, for `https_proxy`; one per test
/// process, gone with it.
pub fn registry_proxy() -> &'static str {
    // The server stays a child of the test process, which it watches: it
    // exits when the tests do.
    static PROXY: OnceLock<(
        String,
        tempfile::TempDir,
        std::sync::Mutex<std::process::Child>,
    )> = OnceLock::new();
    &PROXY
        .get_or_init(|| {
            let fixtures = repo().join("tests/fixtures/registries");
            let dir = tempdir();
            let mut server = Command::new("python3")
                .arg(fixtures.join("server.py"))
                .arg(dir.path().join("requests.log"))
                .arg(&fixtures)
                .arg(REGISTRY_DOWNLOADS)
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let mut port = String::new();
            std::io::BufRead::read_line(
                &mut std::io::BufReader::new(server.stdout.take().unwrap()),
                &mut port,
            )
            .unwrap();
            let url = format!("http://127.0.0.1:{}", port.trim());
            (url, dir, std::sync::Mutex::new(server))
        })
        .0
}

/// Debian's Java 17, which runs the real openapi-generator in the sandbox.
const JVM: &str = "/usr/lib/jvm/java-17-openjdk-amd64";
/// Where `.ci/setup` puts uv's binary.
const UV: &str = "/opt/uv/0.9.0/uv";
/// Where `.ci/setup` puts openapi-generator's jar.
const OPENAPI_GENERATOR_JAR: &str = "/opt/openapi-generator-cli/7.16.0/openapi-generator-cli.jar";

/// The `NIX_CONFIG` of [`standin_env`], for callers that add settings.
pub fn standin_nix_config() -> &'static str {
    static CONFIG: OnceLock<String> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let packages: std::collections::BTreeMap<String, Vec<String>> = serde_json::from_slice(
            &std::fs::read(repo().join("tests/fixtures/standin-nixpkgs/host-programs.json"))
                .unwrap(),
        )
        .unwrap();
        let programs: Vec<&String> = packages.values().flatten().collect();
        let mut paths = vec![
            "/bin/sh=/bin/busybox".to_string(),
            "/bin/busybox".to_string(),
            // python3 finds its standard library next to its binary.
            "/host/lib/python3.11=/usr/lib/python3.11".to_string(),
            fixture_mirrors().display().to_string(),
        ];
        paths.extend(
            programs
                .iter()
                .map(|program| format!("/host/bin/{program}=/usr/bin/{program}")),
        );
        // The real openapi-generator: its jar (from .ci/setup) and Debian's
        // Java 17, whose configuration files link into /etc/java-17-openjdk.
        // The real Go: Debian's toolchain (static binaries) at its own paths,
        // because its GOROOT links into /usr/share by relative links.
        paths.extend([
            format!("/host/jvm={JVM}"),
            "/etc/java-17-openjdk".to_string(),
            format!("/host/share/openapi-generator-cli.jar={OPENAPI_GENERATOR_JAR}"),
            "/usr/lib/go-1.19".to_string(),
            "/usr/share/go-1.19".to_string(),
            // npm, which the host's node (a host program) runs.
            "/host/lib/node_modules/npm=/usr/lib/node_modules/npm".to_string(),
            format!("/host/bin/uv={UV}"),
        ]);
        let jvm_binaries = [
            "bin/java",
            "lib/libjli.so",
            "lib/server/libjvm.so",
            "lib/libjava.so",
            "lib/libjimage.so",
            "lib/libzip.so",
            "lib/libnio.so",
            "lib/libnet.so",
        ]
        .map(|binary| Path::new(JVM).join(binary));
        let binaries = programs.iter().map(|p| PathBuf::from("/usr/bin").join(p));
        let extra_binaries = jvm_binaries.into_iter().chain([PathBuf::from(UV)]);
        for binary in binaries.chain(extra_binaries).chain([release_nixoci()]) {
            let out = Command::new("ldd").arg(&binary).output().unwrap();
            // Scripts (none today) and static binaries have no libraries.
            let libraries = String::from_utf8_lossy(&out.stdout).into_owned();
            for library in libraries.split_whitespace().filter(|w| w.starts_with('/')) {
                if !paths.iter().any(|p| p == library) {
                    paths.push(library.to_string());
                }
            }
        }
        format!("sandbox = true\nsandbox-paths = {}\n", paths.join(" "))
    })
}

/// Fixture mirrors at the real pins' URLs (`HOST/PATH` under the root that
/// the stand-in's fetchers read from `NIXOCI_FIXTURE_MIRRORS`): authentik and
/// its Go client as bare git repositories with the pinned tags, and
/// oci-python's (whose commit [`fixture_oci_python_rev`] gives); and the Go
/// modules that go.sum names, as proxy.golang.org serves them.
pub fn fixture_mirrors() -> &'static Path {
    static ROOT: OnceLock<tempfile::TempDir> = OnceLock::new();
    ROOT.get_or_init(|| {
        let root = tempdir();
        let fixtures = repo().join("tests/fixtures/mirrors");
        for (name, path, tag) in [
            (
                "authentik",
                "forge.ops.eblu.me/mirrors/authentik.git",
                "version/2026.2.0",
            ),
            (
                "authentik-client-go",
                "forge.ops.eblu.me/mirrors/authentik-client-go.git",
                "v3.2026.2.0",
            ),
            // Pinned by commit: fixture_pins puts this commit's in the pins.
            (
                "oci-python",
                "forge.ops.eblu.me/mirrors/oci-python.git",
                "fixture",
            ),
        ] {
            let work = root.path().join(format!("work-{name}"));
            copy_tree(&fixtures.join(name), &work);
            let git = |args: &[&str]| {
                run(Command::new("git")
                    .arg("-C")
                    .arg(&work)
                    .args([
                        "-c",
                        "user.name=fixture",
                        "-c",
                        "user.email=fixture@example.org",
                    ])
                    .args(args)
                    .env("GIT_AUTHOR_DATE", "2026-03-01T00:00:00Z")
                    .env("GIT_COMMITTER_DATE", "2026-03-01T00:00:00Z"));
            };
            git(&["init", "-q"]);
            git(&["add", "-A"]);
            git(&["commit", "-qm", "fixture"]);
            git(&["tag", tag]);
            run(Command::new("git")
                .args(["clone", "-q", "--bare"])
                .arg(&work)
                .arg(root.path().join(path)));
        }
        // The Go module proxy that goModules vendors from.
        let goproxy = repo().join("tests/fixtures/goproxy");
        run(Command::new("python3")
            .arg(goproxy.join("layout.py"))
            .arg(&goproxy)
            .arg(root.path().join("proxy.golang.org")));
        root
    })
    .path()
}

/// The commit of the fixture oci-python mirror, which fixture pins name
/// instead of upstream's.
pub fn fixture_oci_python_rev() -> String {
    stdout(
        Command::new("git")
            .arg("--git-dir")
            .arg(fixture_mirrors().join("forge.ops.eblu.me/mirrors/oci-python.git"))
            .args(["rev-parse", "fixture^{commit}"]),
    )
    .trim()
    .to_string()
}

/// `nix-build` of `containers/authentik` in the repository copy, against the
/// stand-in nixpkgs and the fixture mirrors.
pub fn nix_build_authentik(pins: &Path, extra: &[&str]) -> Output {
    let (copy, standin, _) = flake_dirs();
    Command::new("nix-build")
        .arg("--no-out-link")
        .arg(copy.join("containers/authentik"))
        .arg("-I")
        .arg(format!("nixpkgs={}", standin.display()))
        .arg("--arg")
        .arg("pinsFile")
        .arg(pins)
        .args(extra)
        .envs(standin_env())
        .output()
        .unwrap()
}

/// Pins of the fixture mirrors: mirrors/authentik.toml (with the fixture
/// oci-python mirror's commit) made anew by `nixoci pins update` against the
/// stand-in nixpkgs, as users do after a version bump.
pub fn fixture_pins() -> &'static Path {
    static PINS: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    PINS.get_or_init(|| {
        let dir = tempdir();
        let pins = dir.path().join("authentik.toml");
        let text = std::fs::read_to_string(repo().join("mirrors/authentik.toml"))
            .unwrap()
            .replace(
                "ceb4fcc090851717a3069d78e85ceb1e86c2740c",
                &fixture_oci_python_rev(),
            );
        std::fs::write(&pins, &text).unwrap();
        let (copy, standin, _) = flake_dirs();
        run(nixoci()
            .args(["pins", "update"])
            .arg(&pins)
            .arg("--file")
            .arg(copy.join("containers/authentik"))
            .arg("-I")
            .arg(format!("nixpkgs={}", standin.display()))
            .envs(standin_env()));
        // The repository copy's flake and CI recipe build from them too.
        std::fs::copy(&pins, copy.join("mirrors/authentik.toml")).unwrap();
        (dir, pins)
    })
    .1
    .as_path()
}

/// Runs `cmd` under `/usr/bin/time`: its output (stderr without time's line)
/// and its peak RSS in KiB.
pub fn run_measured(cmd: &Command) -> (Output, u64) {
    let mut timed = Command::new("/usr/bin/time");
    timed
        .args(["-f", "maxrss=%M"])
        .arg(cmd.get_program())
        .args(cmd.get_args());
    if let Some(dir) = cmd.get_current_dir() {
        timed.current_dir(dir);
    }
    let mut out = timed.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let (rest, rss) = err.rsplit_once("maxrss=").expect("time printed no maxrss");
    let rss_kib = rss.trim().parse().unwrap();
    out.stderr = rest.as_bytes().to_vec();
    (out, rss_kib)
}

/// containerd with its own root, state and socket; stopped on drop.
pub struct Containerd {
    child: std::process::Child,
    socket: String,
    _dir: tempfile::TempDir,
}

impl Containerd {
    pub fn start() -> Containerd {
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

    pub fn ctr(&self, args: &[&str]) -> String {
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

/// podman with its own storage under `root` (vfs, no systemd).
pub fn podman(root: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("podman");
    cmd.arg("--root")
        .arg(root.join("root"))
        .arg("--runroot")
        .arg(root.join("run"))
        .args([
            "--storage-driver",
            "vfs",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "none",
        ])
        .args(args);
    cmd
}
