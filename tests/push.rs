//! `nixoci push` against the real CNCF registry (docker-registry 2.8) with no
//! auth, htpasswd Basic and Bearer tokens, and behind a proxy that counts
//! bytes and injects faults and zot-like answers.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use serde_json::{json, Value};

/// Builds the fixture image (`salt` makes a different image) as a layout.
fn image(dir: &Path, salt: &str) -> PathBuf {
    let f = fixture();
    let out = dir.join(format!("image{salt}"));
    let config = dir.join(format!("config{salt}.json"));
    fs::write(
        &config,
        json!({"Entrypoint": [format!("{}/bin/app", f.app)], "Env": [format!("SALT={salt}")]})
            .to_string(),
    )
    .unwrap();
    run(nixoci()
        .arg("build")
        .arg(&f.app)
        .arg("--config")
        .arg(&config)
        .args(["--tag", "test/app:1", "-q", "-o"])
        .arg(&out));
    out
}

fn push(args: &[&str]) -> Output {
    let out = nixoci()
        .arg("push")
        .args(["--insecure", "-q"])
        .args(args)
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !all.contains(PASSWORD),
        "the password leaked into the output:\n{all}"
    );
    out
}

fn push_ok(args: &[&str]) -> Value {
    let out = push(&[&["--json"], args].concat());
    assert!(
        out.status.success(),
        "push failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn creds() -> String {
    format!("{USER}:{PASSWORD}")
}

/// Pulls `reference` back with skopeo and checks that umoci unpacks the same
/// rootfs as the local layout.
fn assert_pulls_back_equal(reference: &str, local: &Path, skopeo_creds: Option<&str>, dir: &Path) {
    let pulled = dir.join("pulled");
    let mut cmd = Command::new("skopeo");
    cmd.args(["copy", "--src-tls-verify=false"]);
    if let Some(c) = skopeo_creds {
        cmd.arg("--src-creds").arg(c);
    }
    run(cmd
        .arg(format!("docker://{reference}"))
        .arg(format!("oci:{}:pulled", pulled.display())));
    run(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:pulled", pulled.display()))
        .arg(dir.join("remote")));
    run(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:1", local.display()))
        .arg(dir.join("local")));
    run(Command::new("diff")
        .args(["-r", "--no-dereference"])
        .arg(dir.join("local/rootfs"))
        .arg(dir.join("remote/rootfs")));
    let (local_manifest, _) = layout_manifest(local);
    let remote = stdout(
        Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .args(
                skopeo_creds
                    .map(|c| vec!["--creds".to_string(), c.to_string()])
                    .unwrap_or_default(),
            )
            .arg(format!("docker://{reference}")),
    );
    assert_eq!(
        serde_json::from_str::<Value>(&remote).unwrap(),
        local_manifest,
        "the registry holds our manifest"
    );
}

#[test]
fn pushes_anonymously_with_basic_and_with_bearer_tokens() {
    for auth in [Auth::Anonymous, Auth::Htpasswd, Auth::Token] {
        let registry = Registry::start(auth);
        let dir = tempdir();
        let layout = image(dir.path(), "");
        let reference = format!("{}/team/app:v1", registry.host());
        let c = creds();
        let args: Vec<&str> = match auth {
            Auth::Anonymous => vec![],
            _ => vec!["--creds", &c],
        };
        let summary = push_ok(&[args.as_slice(), &[layout.to_str().unwrap(), &reference]].concat());
        assert_eq!(summary["pushed"][0]["status"], "pushed", "{auth:?}");
        assert_eq!(summary["pushed"][0]["reference"], reference.as_str());
        assert!(summary["bytes_uploaded"].as_u64().unwrap() > 0);
        let index = read_json(&layout.join("index.json"));
        let digest = index["manifests"][0]["digest"].as_str().unwrap();
        assert_eq!(
            summary["digest"], digest,
            "the pushed digest is the layout's"
        );
        assert_eq!(
            summary["pushed"][0]["pinned"],
            format!("{}/team/app@{digest}", registry.host())
        );
        assert_pulls_back_equal(
            &reference,
            &layout,
            (auth != Auth::Anonymous).then_some(c.as_str()),
            dir.path(),
        );

        if auth != Auth::Anonymous {
            // Without credentials, and with a wrong password: exit 3, a clear message.
            let other = format!("{}/team/app:v2", registry.host());
            let out = push(&[layout.to_str().unwrap(), &other]);
            assert_eq!(
                out.status.code(),
                Some(3),
                "{auth:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("requires credentials"),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let wrong = format!("{USER}:not-the-{PASSWORD}");
            let out = push(&["--creds", &wrong, layout.to_str().unwrap(), &other]);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(3), "{auth:?}: {err}");
            assert!(
                err.contains(&format!("credentials for user `{USER}` were refused"))
                    && err.contains("expired"),
                "{err}"
            );
            assert!(
                !err.contains("not-the-"),
                "the wrong password leaked: {err}"
            );
        }
    }
}

#[test]
fn credentials_come_from_the_environment_and_auth_files() {
    let registry = Registry::start(Auth::Htpasswd);
    let dir = tempdir();
    let layout = image(dir.path(), "");
    let out = nixoci()
        .args([
            "push",
            "--insecure",
            "-q",
            "--username",
            USER,
            "--creds-env",
            "NIXOCI_TEST_KEY",
        ])
        .arg(&layout)
        .arg(format!("{}/env/app:1", registry.host()))
        .env("NIXOCI_TEST_KEY", PASSWORD)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let auth_file = dir.path().join("auth.json");
    fs::write(
        &auth_file,
        json!({"auths": {registry.host(): {"auth": base64_encode(&creds())}}}).to_string(),
    )
    .unwrap();
    let out = nixoci()
        .args(["push", "--insecure", "-q"])
        .arg(&layout)
        .arg(format!("{}/file/app:1", registry.host()))
        .env("REGISTRY_AUTH_FILE", &auth_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn credential_helpers_are_asked() {
    let registry = Registry::start(Auth::Token);
    let dir = tempdir();
    let layout = image(dir.path(), "");
    // A docker credential helper on PATH, named in config.json's credHelpers.
    let bin = dir.path().join("bin");
    fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-nixocitest");
    fs::write(&helper, format!("#!/bin/sh\nread host\nprintf '{{\"ServerURL\":\"%s\",\"Username\":\"{USER}\",\"Secret\":\"{PASSWORD}\"}}' \"$host\"\n")).unwrap();
    run(Command::new("chmod").arg("+x").arg(&helper));
    let docker = dir.path().join("docker");
    fs::create_dir_all(&docker).unwrap();
    fs::write(
        docker.join("config.json"),
        json!({"credHelpers": {registry.host(): "nixocitest"}}).to_string(),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = nixoci()
        .args(["push", "--insecure", "-q", "--verbose"])
        .arg(&layout)
        .arg(format!("{}/helper/app:1", registry.host()))
        .env("DOCKER_CONFIG", &docker)
        .env("PATH", path)
        .env_remove("REGISTRY_AUTH_FILE")
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{all}");
    assert!(
        !all.contains(PASSWORD),
        "--verbose leaked the secret: {all}"
    );
    assert!(
        all.contains("PUT http://") && all.contains("-> 201"),
        "verbose logs requests: {all}"
    );
}

fn base64_encode(text: &str) -> String {
    stdout(Command::new("bash").args(["-c", &format!("printf %s '{text}' | base64 -w0")]))
}

#[test]
fn a_repush_from_a_fresh_process_uploads_nothing() {
    let registry = Registry::start(Auth::Anonymous);
    let proxy = Proxy::start(&registry);
    let dir = tempdir();
    let layout = image(dir.path(), "");
    let first = push_ok(&[
        layout.to_str().unwrap(),
        &format!("{}/team/app:v1", proxy.host()),
    ]);
    let (bytes, _) = proxy.stats();
    assert_eq!(
        bytes,
        first["bytes_uploaded"].as_u64().unwrap(),
        "the proxy saw what we report"
    );
    assert!(bytes > 0);
    let blobs = layout_manifest(&layout).0["layers"]
        .as_array()
        .unwrap()
        .len()
        + 1;
    assert_eq!(first["blobs_uploaded"], blobs, "{first}");
    assert_eq!(first["blobs_present"], 0, "{first}");

    // A new tag for the same image: every blob is HEADed, none uploaded.
    let before = proxy.stats().1.len();
    let second = push_ok(&[
        layout.to_str().unwrap(),
        &format!("{}/team/app:v1-again", proxy.host()),
    ]);
    assert_eq!(second["bytes_uploaded"], 0);
    assert_eq!(second["blobs_uploaded"], 0);
    assert_eq!(second["blobs_present"], blobs, "{second}");
    let (after, requests) = proxy.stats();
    assert_eq!(
        after, bytes,
        "no blob bytes reached the registry on the re-push"
    );
    let new = &requests[before..];
    assert!(
        !new.iter().any(|r| r.starts_with("POST")
            || r.starts_with("PATCH")
            || r.contains("/blobs/uploads/")),
        "{new:?}"
    );
    assert!(
        new.iter()
            .any(|r| r.starts_with("HEAD") && r.contains("/blobs/")),
        "{new:?}"
    );

    // The same tag again: already pushed, no manifest PUT at all.
    let before = proxy.stats().1.len();
    let third = push_ok(&[
        layout.to_str().unwrap(),
        &format!("{}/team/app:v1", proxy.host()),
    ]);
    assert_eq!(third["pushed"][0]["status"], "already pushed");
    let requests = proxy.stats().1;
    assert!(
        !requests[before..].iter().any(|r| r.starts_with("PUT")),
        "{:?}",
        &requests[before..]
    );

    // Cross-repository mount: nothing uploaded, blobs mounted.
    let mounted = push_ok(&[
        "--mount-from",
        "team/app",
        layout.to_str().unwrap(),
        &format!("{}/other/app:v1", proxy.host()),
    ]);
    assert_eq!(mounted["bytes_uploaded"], 0);
    // Every blob, the config included: the CNCF registry's HEAD is per repository.
    let blobs = layout_manifest(&layout).0["layers"]
        .as_array()
        .unwrap()
        .len()
        + 1;
    assert_eq!(mounted["blobs_mounted"], blobs, "{mounted}");
    assert_eq!(mounted["blobs_uploaded"], 0, "{mounted}");
    assert_eq!(mounted["blobs_present"], 0, "{mounted}");
}

#[test]
fn immutable_tags_give_a_clear_conflict() {
    let registry = Registry::start(Auth::Anonymous);
    let proxy = Proxy::start(&registry);
    proxy.set_plan(json!({"immutable_tags": true}));
    let dir = tempdir();
    let one = image(dir.path(), "one");
    let two = image(dir.path(), "two");
    let reference = format!("{}/team/app:v1", proxy.host());
    push_ok(&[one.to_str().unwrap(), &reference]);

    let out = push(&[two.to_str().unwrap(), &reference]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(
        err.contains("already exists with digest") && err.contains("immutable"),
        "{err}"
    );

    // When the registry only says 403 at the manifest PUT (zot create-only), the message is the same kind.
    proxy.set_plan(json!({"immutable_tags": true, "hide_tags": true}));
    let out = push(&[two.to_str().unwrap(), &reference]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(
        err.contains("create-only rights") && err.contains("new tag"),
        "{err}"
    );
    let requests = proxy.stats().1;
    assert!(
        !requests.iter().any(|r| r.starts_with("DELETE")),
        "never deletes: {requests:?}"
    );
}

#[test]
fn faults_are_retried_and_the_push_still_succeeds() {
    let registry = Registry::start(Auth::Anonymous);
    let proxy = Proxy::start(&registry);
    proxy.set_plan(json!({"faults": [
        {"method": "HEAD", "path_contains": "/blobs/", "action": "429", "retry_after": 1},
        {"method": "PUT", "path_contains": "/blobs/uploads/", "action": "500"},
        {"method": "PUT", "path_contains": "/blobs/uploads/", "action": "drop"},
        {"method": "PUT", "path_contains": "/manifests/", "action": "500"},
        // A connection cut on a request the client retries itself.
        {"method": "HEAD", "path_contains": "/manifests/", "action": "drop"},
        // An upload session that expired (404) or a request timeout (408) may pass.
        {"method": "POST", "path_contains": "/blobs/uploads/", "action": "404"},
        {"method": "POST", "path_contains": "/blobs/uploads/", "action": "408"},
        // A "created" answer to an upload start that asked for no mount is no mount.
        {"method": "POST", "path_contains": "/blobs/uploads/", "action": "201"},
    ]}));
    let dir = tempdir();
    let layout = image(dir.path(), "");
    let reference = format!("{}/team/app:v1", proxy.host());
    let out = push(&["--json", layout.to_str().unwrap(), &reference]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let requests = proxy.stats().1;
    for injected in [
        "429 (injected)",
        "500 (injected)",
        "DROPPED",
        "404 (injected)",
        "408 (injected)",
        "201 (injected)",
    ] {
        assert!(
            requests.iter().any(|r| r.contains(injected)),
            "{injected} was not exercised: {requests:?}"
        );
    }
    assert!(err.contains("retrying"), "{err}");
    // A 5xx on a monolithic upload is retried as one, not taken for a refusal
    // of monolithic uploads.
    assert!(
        !requests.iter().any(|r| r.starts_with("PATCH")),
        "{requests:?}"
    );
    // A failed blob upload starts again from a new session after 1 s (then 2, 4, … s).
    assert!(
        err.lines()
            .any(|l| l.contains("upload of sha256:") && l.ends_with("retrying in 1.0s (1/5)")),
        "{err}"
    );
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("HEAD") && r.contains("/manifests/") && r.ends_with("DROPPED")),
        "the manifest HEAD was not cut: {requests:?}"
    );
    assert_pulls_back_equal(
        &format!("{}/team/app:v1", registry.host()),
        &layout,
        None,
        dir.path(),
    );
}

#[test]
fn chunked_upload_when_the_registry_refuses_monolithic_puts() {
    let registry = Registry::start(Auth::Anonymous);
    let proxy = Proxy::start(&registry);
    proxy.set_plan(json!({"refuse_monolithic": true}));
    let dir = tempdir();
    let layout = image(dir.path(), "");
    push_ok(&[
        "--chunk-size",
        "65536",
        layout.to_str().unwrap(),
        &format!("{}/team/app:v1", proxy.host()),
    ]);
    let requests = proxy.stats().1;
    assert!(
        requests
            .iter()
            .filter(|r| r.starts_with("PATCH") && r.ends_with("202"))
            .count()
            > 2,
        "{requests:?}"
    );
    assert_pulls_back_equal(
        &format!("{}/team/app:v1", registry.host()),
        &layout,
        None,
        dir.path(),
    );
}

#[test]
fn docker_archives_push_too_and_bad_references_are_refused() {
    let registry = Registry::start(Auth::Anonymous);
    let dir = tempdir();
    let f = fixture();
    let archive = dir.path().join("image.tar");
    run(nixoci()
        .arg("build")
        .arg(&f.app)
        .args(["--format", "docker-archive", "-q", "-o"])
        .arg(&archive));
    let summary = push_ok(&[
        archive.to_str().unwrap(),
        &format!("{}/team/archive:v1", registry.host()),
    ]);
    assert_eq!(summary["pushed"][0]["status"], "pushed");
    let inspect = stdout(
        Command::new("skopeo")
            .args(["inspect", "--tls-verify=false"])
            .arg(format!("docker://{}/team/archive:v1", registry.host())),
    );
    assert!(
        inspect.contains(&summary["digest"].as_str().unwrap()[..20]),
        "{inspect}"
    );

    for bad in [
        "no-registry:tag",
        "127.0.0.1:5000/Upper/case:1",
        "127.0.0.1:5000/repo",
        "127.0.0.1:5000/team/../etc:1",
        "127.0.0.1:5000/team/-app:1",
        "127.0.0.1:5000/team/a..b:1",
        "127.0.0.1:5000/team//app:1",
    ] {
        let out = push(&[archive.to_str().unwrap(), bad]);
        assert_eq!(out.status.code(), Some(1), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("is not"), "{bad}: {err}");
    }
    // Credentials in a reference are refused, and never printed.
    let with_password = format!("user:hunter2-secret@{}/team/archive:v3", registry.host());
    let out = push(&["--verbose", archive.to_str().unwrap(), &with_password]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("credentials in the reference are refused"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("hunter2"));
    // Names the distribution spec allows still pass.
    push_ok(&[
        archive.to_str().unwrap(),
        &format!("{}/team/a__b.c-d--e/x_y:v1", registry.host()),
    ]);
    // TLS is verified by default: a plain-HTTP registry is not silently used.
    let out = nixoci()
        .arg("push")
        .arg(&archive)
        .arg(format!("{}/team/archive:v2", registry.host()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--insecure"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn progress_bars_per_blob_on_a_terminal() {
    let registry = Registry::start(Auth::Anonymous);
    let dir = tempdir();
    let layout = image(dir.path(), "");
    let log = dir.path().join("typescript");
    let cmd = format!(
        "{} push --insecure {} {}/tty/app:1",
        env!("CARGO_BIN_EXE_nixoci"),
        layout.display(),
        registry.host()
    );
    run(Command::new("script").args(["-qec", &cmd]).arg(&log));
    let screen = String::from_utf8_lossy(&fs::read(&log).unwrap()).into_owned();
    let (manifest, _) = layout_manifest(&layout);
    let first_layer = &manifest["layers"][0]["digest"].as_str().unwrap()[7..19];
    assert!(
        screen.contains(first_layer) && screen.contains(" B/"),
        "no per-blob bar: {screen}"
    );
}

#[test]
fn credentials_never_follow_an_upload_location_to_another_host() {
    let registry = Registry::start(Auth::Htpasswd);
    let front = Proxy::start(&registry);
    // The "other host": it forwards to the same registry and records headers.
    let other = Proxy::start(&registry);
    let dir = tempdir();
    let layout = image(dir.path(), "");
    let c = creds();
    let reference = format!("{}/team/app:v1", front.host());

    // An absolute Location on another host: the blob goes there, bare.
    front.set_plan(json!({"location_to": other.host()}));
    let out = push(&["--creds", &c, layout.to_str().unwrap(), &reference]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !other.stats().1.is_empty(),
        "the Location was never followed, so this test proves nothing: {err}"
    );
    assert_eq!(
        other.authorized(),
        Vec::<String>::new(),
        "credentials leaked"
    );
    assert!(
        !front.authorized().is_empty(),
        "the registry itself got them"
    );
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("nixoci sends credentials only to the registry itself"),
        "{err}"
    );

    // A relative Location shaped like userinfo stays on the registry.
    let before = other.stats().1.len();
    front.set_plan(json!({"location_raw": format!("@{}/up", other.host())}));
    let out = push(&["--creds", &c, layout.to_str().unwrap(), &reference]);
    assert!(!out.status.success());
    assert_eq!(
        other.stats().1.len(),
        before,
        "the other host was contacted"
    );
    assert_eq!(
        other.authorized(),
        Vec::<String>::new(),
        "credentials leaked"
    );
}

#[test]
fn uploads_to_another_host_work_when_it_asks_for_no_credentials() {
    // Registries may hand uploads to storage elsewhere (S3 and the like).
    let registry = Registry::start(Auth::Anonymous);
    let front = Proxy::start(&registry);
    let other = Proxy::start(&registry);
    front.set_plan(json!({"location_to": other.host()}));
    let dir = tempdir();
    let layout = image(dir.path(), "");
    push_ok(&[
        layout.to_str().unwrap(),
        &format!("{}/team/app:v1", front.host()),
    ]);
    assert!(
        other.stats().1.iter().any(|r| r.starts_with("PUT")),
        "{:?}",
        other.stats().1
    );
    assert_pulls_back_equal(
        &format!("{}/team/app:v1", registry.host()),
        &layout,
        None,
        dir.path(),
    );
}

#[test]
fn relative_locations_resolve_as_rfc3986_references() {
    let registry = Registry::start(Auth::Anonymous);
    let front = Proxy::start(&registry);
    // `?_state=…` alone keeps the request's path; the upstream registry then
    // sees an upload URL without its id and refuses, cleanly.
    front.set_plan(json!({"location_raw": "?_state=x#frag"}));
    let dir = tempdir();
    let layout = image(dir.path(), "");
    let out = push(&[
        layout.to_str().unwrap(),
        &format!("{}/team/app:v1", front.host()),
    ]);
    assert!(!out.status.success());
    let requests = front.stats().1;
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("PUT /v2/team/app/blobs/uploads/ ")),
        "{requests:?}"
    );
}

#[test]
fn permission_refusals_are_auth_failures() {
    let registry = Registry::start(Auth::Anonymous);
    let proxy = Proxy::start(&registry);
    let dir = tempdir();
    let layout = image(dir.path(), "");
    // A 403 on each kind of request: exit 3, naming the missing permission.
    for (method, path, permission) in [
        ("HEAD", "/manifests/", "no permission to read team/app"),
        ("HEAD", "/blobs/", "no permission to read team/app"),
        (
            "POST",
            "/blobs/uploads/",
            "no permission to push to team/app",
        ),
        (
            "PUT",
            "/blobs/uploads/",
            "no permission to push to team/app",
        ),
    ] {
        proxy.set_plan(json!({"faults": [
            {"method": method, "path_contains": path, "action": "403", "times": 20},
        ]}));
        let out = push(&[
            layout.to_str().unwrap(),
            &format!("{}/team/app:v1", proxy.host()),
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{method} {path}: {err}");
        assert!(err.contains(permission), "{method} {path}: {err}");
    }
}

#[test]
fn a_4xx_that_cannot_pass_is_not_retried() {
    let registry = Registry::start(Auth::Anonymous);
    let proxy = Proxy::start(&registry);
    proxy.set_plan(json!({"faults": [
        {"method": "POST", "path_contains": "/blobs/uploads/", "action": "400", "times": 20},
    ]}));
    let dir = tempdir();
    let layout = image(dir.path(), "");
    let out = push(&[
        "--parallel",
        "1",
        layout.to_str().unwrap(),
        &format!("{}/team/app:v1", proxy.host()),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains("HTTP 400"), "{err}");
    let posts = proxy
        .stats()
        .1
        .iter()
        .filter(|r| r.starts_with("POST"))
        .count();
    assert_eq!(posts, 1, "{:?}", proxy.stats().1);

    // A registry's error text reaches the terminal without its escapes.
    proxy.set_plan(json!({"faults": [
        {"method": "POST", "path_contains": "/blobs/uploads/", "action": "400", "times": 20,
         "message": "\u{1b}]0;owned\u{7}\u{1b}[31mred\u{1b}[0m text"},
    ]}));
    let out = push(&[
        layout.to_str().unwrap(),
        &format!("{}/team/app:v2", proxy.host()),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(
        err.contains("red") && !err.contains('\u{1b}') && !err.contains('\u{7}'),
        "{err:?}"
    );
}

/// Runs a push that must end by itself; kills it (and fails) after `limit`.
fn push_bounded(args: &[&str], limit: std::time::Duration) -> (Output, std::time::Duration) {
    let started = std::time::Instant::now();
    let mut child = nixoci()
        .arg("push")
        .args(["--insecure", "-q"])
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            child.kill().unwrap();
            panic!("push still running after {limit:?}: it hangs");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    (child.wait_with_output().unwrap(), started.elapsed())
}

#[test]
fn stalled_and_endless_registries_end_in_exit_5() {
    let registry = Registry::start(Auth::Anonymous);
    let proxy = Proxy::start(&registry);
    let dir = tempdir();
    let layout = image(dir.path(), "");
    let reference = format!("{}/team/app:v1", proxy.host());
    let limits = ["--stall-timeout", "2", "--timeout", "6", "--parallel", "1"];
    for (fault, marker) in [
        // Headers, then a byte every second: the body never ends.
        (
            json!({"method": "POST", "action": "trickle", "times": 100}),
            "TRICKLE",
        ),
        // The PUT body is never read and nothing is answered.
        (
            json!({"method": "PUT", "path_contains": "/blobs/uploads/", "action": "blackhole", "times": 100}),
            "BLACKHOLE",
        ),
        // An endless 429 that asks for a wait of 11 days.
        (
            json!({"method": "POST", "action": "429", "retry_after": 999999, "times": 1000}),
            "429 (injected)",
        ),
    ] {
        proxy.set_plan(json!({ "faults": [fault] }));
        let mut args = limits.to_vec();
        args.extend([layout.to_str().unwrap(), reference.as_str()]);
        let (out, took) = push_bounded(&args, std::time::Duration::from_secs(90));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(5), "{marker}: {err}");
        assert!(
            proxy.stats().1.iter().any(|r| r.ends_with(marker)),
            "{marker} was not exercised"
        );
        assert!(
            err.contains("--timeout") || err.contains("timed out") || err.contains("Timeout"),
            "{marker}: {err}"
        );
        if marker.starts_with("429") {
            // 11 days asked, 6 s allowed: the retry time ends it, and says so.
            assert!(
                err.contains("no more retries: the push's 6s (--timeout) are used up"),
                "{err}"
            );
        }
        // --timeout bounds the whole push, each transfer included (a
        // generous margin for a loaded machine; before, a trickle ran on
        // for a stall timeout per retry past it).
        assert!(
            took < std::time::Duration::from_secs(6 + 6),
            "{marker}: {took:?}"
        );
        eprintln!("{marker}: exit 5 after {took:?}");
    }
}

/// `--timeout` bounds the whole push: an upload that moves, but too slowly
/// to end in time, is stopped at the deadline.
#[test]
fn a_slow_but_moving_upload_ends_at_the_timeout() {
    let registry = Registry::start(Auth::Anonymous);
    let proxy = Proxy::start(&registry);
    let dir = tempdir();
    let spec = big_layer_spec(dir.path());
    let layout = dir.path().join("layout");
    run(nixoci()
        .args(["build", "-q", "--spec"])
        .arg(&spec)
        .arg("-o")
        .arg(&layout));
    // 1 MB/s for a 72 MiB layer: never a stall, and 72 s to go.
    proxy.set_plan(json!({"faults": [
        {"method": "PUT", "path_contains": "/blobs/uploads/", "action": "throttle", "rate": 1_000_000, "times": 100},
        {"method": "PATCH", "path_contains": "/blobs/uploads/", "action": "throttle", "rate": 1_000_000, "times": 100},
    ]}));
    let (out, took) = push_bounded(
        &[
            "--timeout",
            "5",
            layout.to_str().unwrap(),
            &format!("{}/slow/app:1", proxy.host()),
        ],
        std::time::Duration::from_secs(90),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains("(--timeout)"), "{err}");
    assert!(
        proxy.stats().1.iter().any(|r| r.ends_with("THROTTLE")),
        "the throttle was not exercised"
    );
    // 5 s allowed, 72 s needed: stopped near the deadline (a margin for a
    // loaded machine).
    assert!(took < std::time::Duration::from_secs(5 + 10), "{took:?}");
}

/// A reply whose body drips counts as a stall and is retried, not taken
/// for an answer; a Location that can never be used is not retried.
#[test]
fn dripping_bodies_are_stalls_and_unusable_locations_are_final() {
    let registry = Registry::start(Auth::Anonymous);
    let proxy = Proxy::start(&registry);
    let dir = tempdir();
    let layout = image(dir.path(), "");
    proxy.set_plan(json!({"faults": [{"method": "POST", "action": "trickle", "times": 1}]}));
    let reference = format!("{}/team/drip:v1", proxy.host());
    let (out, _) = push_bounded(
        &["--stall-timeout", "2", layout.to_str().unwrap(), &reference],
        std::time::Duration::from_secs(90),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("HTTP 202: reading the response body") && err.contains("retrying"),
        "{err}"
    );

    proxy.set_plan(json!({"location_raw": "http://[::1"}));
    let before = proxy.stats().1.len();
    let (out, _) = push_bounded(
        &[
            layout.to_str().unwrap(),
            &format!("{}/team/loc:v1", proxy.host()),
        ],
        std::time::Duration::from_secs(90),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains("is not a usable http(s) URL"), "{err}");
    assert!(!err.contains("retrying"), "{err}");
    // One session per missing blob, none asked again.
    let later = &proxy.stats().1[before..];
    let posts = later.iter().filter(|r| r.starts_with("POST")).count();
    let missing = later
        .iter()
        .filter(|r| r.starts_with("HEAD") && r.contains("/blobs/") && r.ends_with(" 404"))
        .count();
    assert_eq!(posts, missing, "{later:?}");
}

#[test]
fn a_request_is_tried_six_times_at_most() {
    let registry = Registry::start(Auth::Anonymous);
    let proxy = Proxy::start(&registry);
    // An endless 429 that asks for no wait: only the count of retries ends it.
    proxy.set_plan(json!({"faults": [
        {"method": "HEAD", "path_contains": "/manifests/", "action": "429", "retry_after": 0, "times": 1000},
    ]}));
    let dir = tempdir();
    let layout = image(dir.path(), "");
    let reference = format!("{}/team/app:v1", proxy.host());
    let (out, _) = push_bounded(
        &[layout.to_str().unwrap(), &reference],
        std::time::Duration::from_secs(90),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    let tries = proxy
        .stats()
        .1
        .iter()
        .filter(|r| r.starts_with("HEAD") && r.ends_with("429 (injected)"))
        .count();
    assert_eq!(tries, 6, "one try and 5 retries: {err}");
    assert_eq!(err.matches("retrying").count(), 5, "{err}");
    assert!(
        !err.contains("no more retries"),
        "the count ended it, not the retry time: {err}"
    );
}

#[test]
fn a_registry_that_stores_another_digest_fails_the_push() {
    let registry = Registry::start(Auth::Anonymous);
    let proxy = Proxy::start(&registry);
    proxy.set_plan(json!({"wrong_manifest_digest": true}));
    let dir = tempdir();
    let layout = image(dir.path(), "");
    let out = push(&[
        layout.to_str().unwrap(),
        &format!("{}/team/app:v1", proxy.host()),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(
        err.contains(&format!("stored the manifest as sha256:{}", "0".repeat(64))),
        "{err}"
    );
}

#[test]
fn retry_after_is_honoured() {
    let registry = Registry::start(Auth::Anonymous);
    let proxy = Proxy::start(&registry);
    proxy.set_plan(json!({"faults": [
        {"method": "HEAD", "path_contains": "/blobs/", "action": "429", "retry_after": 3, "times": 1},
    ]}));
    let dir = tempdir();
    let layout = image(dir.path(), "");
    let started = std::time::Instant::now();
    push_ok(&[
        "--parallel",
        "1",
        layout.to_str().unwrap(),
        &format!("{}/team/app:v1", proxy.host()),
    ]);
    // The backoff without Retry-After would be well under a second; and
    // the 3 s asked are waited once, not on every try (a margin for a
    // loaded machine).
    let took = started.elapsed();
    assert!(took >= std::time::Duration::from_secs(3), "{took:?}");
    assert!(took < std::time::Duration::from_secs(3 + 8), "{took:?}");
}

#[test]
fn a_nixpkgs_style_tar_gz_pushes_with_compressed_layers_and_repushes_nothing() {
    let registry = Registry::start(Auth::Anonymous);
    let proxy = Proxy::start(&registry);
    let dir = tempdir();
    let f = fixture();
    // nixpkgs' buildLayeredImage result: a docker-archive, gzipped whole.
    let archive = dir.path().join("image.tar");
    run(nixoci()
        .arg("build")
        .arg(&f.app)
        .args(["--format", "docker-archive", "-q", "-o"])
        .arg(&archive));
    run(Command::new("gzip").arg("-n").arg(&archive));
    let tar_gz = dir.path().join("image.tar.gz");
    let archive_size = fs::metadata(&tar_gz).unwrap().len();

    let reference = format!("{}/team/nixpkgs:v1", proxy.host());
    let summary = push_ok(&[
        "--compression",
        "gzip",
        tar_gz.to_str().unwrap(),
        &reference,
    ]);
    let uploaded = proxy.stats().0;
    assert!(uploaded > 0);
    assert!(
        uploaded as f64 <= archive_size as f64 * 1.1,
        "{uploaded} blob bytes uploaded for a {archive_size}-byte archive"
    );
    let raw: Value = serde_json::from_str(&stdout(
        Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{}/team/nixpkgs:v1", registry.host())),
    ))
    .unwrap();
    for layer in raw["layers"].as_array().unwrap() {
        assert_eq!(
            layer["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip",
            "{raw}"
        );
    }
    // Pulled back, every blob checks out (skopeo verifies digests).
    run(Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false"])
        .arg(format!("docker://{}/team/nixpkgs:v1", registry.host()))
        .arg(format!("oci:{}:v1", dir.path().join("pulled").display())));
    // The same bytes again, from a fresh process: nothing to upload.
    let again = push_ok(&[
        "--compression",
        "gzip",
        tar_gz.to_str().unwrap(),
        &format!("{}/team/nixpkgs:v2", proxy.host()),
    ]);
    assert_eq!(again["digest"], summary["digest"]);
    assert_eq!(again["bytes_uploaded"], 0);
    assert_eq!(proxy.stats().0, uploaded, "blob bytes went up again");
}

#[test]
fn tls_is_verified_by_default() {
    let registry = Registry::start_with(Auth::Htpasswd, true);
    let dir = tempdir();
    let layout = image(dir.path(), "");
    let reference = format!("{}/team/app:v1", registry.host());
    let c = creds();
    // Without --insecure: an untrusted certificate is a failure, and no
    // credential is sent over the connection it refused.
    let out = nixoci()
        .args(["push", "-q", "--creds", &c])
        .arg(&layout)
        .arg(&reference)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(
        err.to_lowercase().contains("certificate") || err.contains("UnknownIssuer"),
        "{err}"
    );
    assert!(
        !err.contains("retrying"),
        "a refused certificate is not worth retrying: {err}"
    );
    let log = fs::read_to_string(registry.dir.path().join("registry.log")).unwrap_or_default();
    assert!(
        !log.contains(USER),
        "the registry saw the user over an untrusted connection: {log}"
    );
    // --insecure accepts it (for loopback registries) and the push works over TLS.
    let summary = push_ok(&["--creds", &c, layout.to_str().unwrap(), &reference]);
    assert_eq!(summary["pushed"][0]["status"], "pushed");
    // So does trusting the registry's own CA, with verification on.
    let out = nixoci()
        .args(["push", "-q", "--json", "--creds", &c, "--ca-file"])
        .arg(registry.ca_file())
        .arg(&layout)
        .arg(format!("{}/team/app:v2", registry.host()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A registry on TLS whose token server is plain http would have the
/// credentials cross the network in clear: refused unless --insecure.
#[test]
fn a_plain_http_token_realm_of_a_tls_registry_is_refused() {
    let registry = Registry::start_with(Auth::Token, true);
    let dir = tempdir();
    let layout = image(dir.path(), "");
    let reference = format!("{}/team/app:v1", registry.host());
    let c = creds();
    let out = nixoci()
        .args(["push", "-q", "--creds", &c, "--ca-file"])
        .arg(registry.ca_file())
        .arg(&layout)
        .arg(&reference)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("which is not https: the credentials would cross the network in clear"),
        "{err}"
    );
    // With --insecure the operator accepts it.
    let summary = push_ok(&["--creds", &c, layout.to_str().unwrap(), &reference]);
    assert_eq!(summary["pushed"][0]["status"], "pushed");
}

#[test]
fn credential_files_are_read_in_order_and_a_creds_store_is_asked() {
    let registry = Registry::start(Auth::Htpasswd);
    let dir = tempdir();
    let layout = image(dir.path(), "");
    let host = registry.host();
    let right = base64_encode(&creds());
    let wrong = base64_encode(&format!("{USER}:not-the-password"));
    let auths = |auth: &str| json!({"auths": {host.clone(): {"auth": auth}}}).to_string();
    // Each place docker and podman keep credentials, most specific first.
    let home = dir.path().join("home");
    let runtime = dir.path().join("runtime");
    let docker = dir.path().join("docker");
    let registry_file = dir.path().join("registry-auth.json");
    for d in [
        home.join(".config/containers"),
        home.join(".docker"),
        runtime.join("containers"),
        docker.clone(),
    ] {
        fs::create_dir_all(d).unwrap();
    }
    let places = [
        registry_file.clone(),
        runtime.join("containers/auth.json"),
        docker.join("config.json"),
        home.join(".config/containers/auth.json"),
        home.join(".docker/config.json"),
    ];
    let push_with = |tag: &str| {
        nixoci()
            .args(["push", "--insecure", "-q"])
            .arg(&layout)
            .arg(format!("{host}/order/app:{tag}"))
            .env("REGISTRY_AUTH_FILE", &registry_file)
            .env("XDG_RUNTIME_DIR", &runtime)
            .env("DOCKER_CONFIG", &docker)
            .env("HOME", &home)
            .output()
            .unwrap()
    };
    for (i, place) in places.iter().enumerate() {
        // The right credentials here, wrong ones in every later place.
        for (j, other) in places.iter().enumerate() {
            match j.cmp(&i) {
                std::cmp::Ordering::Less => {
                    let _ = fs::remove_file(other);
                }
                std::cmp::Ordering::Equal => fs::write(place, auths(&right)).unwrap(),
                std::cmp::Ordering::Greater => fs::write(other, auths(&wrong)).unwrap(),
            }
        }
        let out = push_with(&format!("t{i}"));
        assert!(
            out.status.success(),
            "{}: {}",
            place.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        // Wrong credentials in the first place win over right ones after it.
        if i + 1 < places.len() {
            fs::write(place, auths(&wrong)).unwrap();
            fs::write(&places[i + 1], auths(&right)).unwrap();
            let out = push_with(&format!("w{i}"));
            assert_eq!(
                out.status.code(),
                Some(3),
                "{} was not read first: {}",
                place.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    // credsStore: docker's store for every registry comes before `auths`.
    for place in &places {
        let _ = fs::remove_file(place);
    }
    let bin = dir.path().join("bin");
    fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-nixocistore");
    fs::write(&helper, format!("#!/bin/sh\nread host\nprintf '{{\"ServerURL\":\"%s\",\"Username\":\"{USER}\",\"Secret\":\"{PASSWORD}\"}}' \"$host\"\n")).unwrap();
    run(Command::new("chmod").arg("+x").arg(&helper));
    fs::write(
        docker.join("config.json"),
        json!({"credsStore": "nixocistore", "auths": {host.clone(): {"auth": wrong}}}).to_string(),
    )
    .unwrap();
    let out = nixoci()
        .args(["push", "--insecure", "-q"])
        .arg(&layout)
        .arg(format!("{host}/store/app:1"))
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("XDG_RUNTIME_DIR")
        .env("DOCKER_CONFIG", &docker)
        .env("HOME", &home)
        .env(
            "PATH",
            format!(
                "{}:{}",
                bin.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn parallel_bounds_the_uploads_in_flight() {
    let dir = tempdir();
    let layout = image(dir.path(), "");
    let layers = layout_manifest(&layout).0["layers"]
        .as_array()
        .unwrap()
        .len();
    assert!(layers >= 3, "{layers} layers");
    for (parallel, at_most, at_least) in [(1, 1, 1), (4, 4, 2)] {
        // A fresh registry each time, so that every blob is uploaded.
        let registry = Registry::start(Auth::Anonymous);
        let proxy = Proxy::start(&registry);
        proxy.set_plan(json!({"upload_delay": 0.5}));
        push_ok(&[
            layout.to_str().unwrap(),
            &format!("{}/par/app:1", proxy.host()),
            "--parallel",
            &parallel.to_string(),
        ]);
        let seen = proxy.max_uploads_at_once();
        assert!(
            (at_least..=at_most).contains(&seen),
            "--parallel {parallel}: {seen} uploads at once"
        );
    }
}

/// A synthetic store in `dir` with one path of 72 MiB of incompressible
/// bytes (big enough to be streamed) and a small one referring to it;
/// returns the spec that builds it.
fn big_layer_spec(dir: &Path) -> PathBuf {
    let store = dir.join("store");
    let big = store.join("0123456789abcdfghijklmnpqrsvwxyz-big");
    let small = store.join("1123456789abcdfghijklmnpqrsvwxyz-small");
    fs::create_dir_all(&big).unwrap();
    fs::create_dir_all(&small).unwrap();
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let data: Vec<u8> = (0..72 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    fs::write(big.join("data"), data).unwrap();
    fs::write(small.join("hello"), "hello\n").unwrap();
    let nar = |p: &Path| {
        stdout(nixoci().args(["hash", "path"]).arg(p))
            .trim()
            .to_string()
    };
    let spec = dir.join("spec.json");
    fs::write(
        &spec,
        json!({
            "storeDir": store,
            "tag": "1",
            "graph": [
                {"path": big, "references": [], "narHash": nar(&big)},
                {"path": small, "references": [big], "narHash": nar(&small)},
            ],
        })
        .to_string(),
    )
    .unwrap();
    spec
}

/// `nixoci build --push` of `spec` (extra arguments after), checked for
/// leaked credentials like `push`.
fn build_push(spec: &Path, layout: &Path, args: &[&str]) -> Output {
    let out = nixoci()
        .arg("build")
        .arg("--spec")
        .arg(spec)
        .arg("-o")
        .arg(layout)
        .args(["-q", "--insecure", "--json"])
        .args(args)
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stderr).contains(PASSWORD));
    out
}

fn build_push_ok(spec: &Path, layout: &Path, args: &[&str]) -> Value {
    let out = build_push(spec, layout, args);
    assert!(
        out.status.success(),
        "build --push failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// No upload session was started, nor a chunk sent, in `requests`.
fn assert_no_upload_started(requests: &[String]) {
    assert!(
        !requests
            .iter()
            .any(|r| r.starts_with("PATCH") || r.starts_with("POST")),
        "{requests:?}"
    );
}

/// The digest of the biggest layer a build summary lists.
fn biggest_layer(summary: &Value) -> String {
    summary["build"]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|l| l["size"].as_u64().unwrap())
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn build_push_uploads_a_new_big_layer_while_it_is_compressed() {
    let registry = Registry::start(Auth::Anonymous);
    let proxy = Proxy::start(&registry);
    let dir = tempdir();
    let spec = big_layer_spec(dir.path());
    let cache = dir.path().join("cache");
    let cache = cache.to_str().unwrap();
    let layout = dir.path().join("layout");
    let reference = format!("{}/stream/app:1", proxy.host());
    let first = build_push_ok(&spec, &layout, &["--cache", cache, "--push", &reference]);

    // The big layer went up in chunks during the build; the push after it
    // sent only the rest, and no blob byte was sent twice.
    let big = biggest_layer(&first);
    assert_eq!(first["streamed"]["uploaded"], json!([big]), "{first:#}");
    let big_size = first["build"]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["digest"] == big.as_str())
        .unwrap()["size"]
        .clone();
    assert_eq!(first["streamed"]["bytes_uploaded"], big_size, "{first:#}");
    let requests = proxy.stats().1;
    // One PATCH per 4 MiB, as the README says.
    let patches = requests.iter().filter(|r| r.starts_with("PATCH")).count() as u64;
    assert_eq!(
        patches,
        big_size.as_u64().unwrap().div_ceil(4 << 20),
        "{requests:?}"
    );
    let (manifest, _) = layout_manifest(&layout);
    let blob_bytes: u64 = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .chain([&manifest["config"]])
        .map(|d| d["size"].as_u64().unwrap())
        .sum();
    assert_eq!(
        proxy.stats().0,
        blob_bytes,
        "bytes sent != the image's blobs: {requests:?}"
    );
    assert_eq!(first["push"]["blobs_present"], 1, "{first:#}");
    assert_eq!(first["push"]["digest"], first["build"]["digest"]);
    assert_pulls_back_equal(
        &format!("{}/stream/app:1", registry.host()),
        &layout,
        None,
        dir.path(),
    );

    // Everything from the cache: nothing is streamed and nothing uploaded.
    let before = proxy.stats().1.len();
    let again = build_push_ok(
        &spec,
        &layout,
        &[
            "--cache",
            cache,
            "--push",
            &format!("{}/stream/app:2", proxy.host()),
        ],
    );
    assert_eq!(again["streamed"]["uploaded"], json!([]), "{again:#}");
    assert_eq!(again["push"]["bytes_uploaded"], 0, "{again:#}");
    assert_no_upload_started(&proxy.stats().1[before..]);

    // Without a cache nothing tells a new layer from an old one: nothing is
    // streamed, and the push finds every blob present.
    let before = proxy.stats().1.len();
    let uncached = build_push_ok(
        &spec,
        &dir.path().join("layout2"),
        &["--push", &format!("{}/stream/app:3", proxy.host())],
    );
    assert_eq!(uncached["streamed"]["uploaded"], json!([]), "{uncached:#}");
    assert_eq!(uncached["push"]["bytes_uploaded"], 0, "{uncached:#}");
    assert_no_upload_started(&proxy.stats().1[before..]);

    // A fresh cache streams the layer again, but the registry holds it: the
    // upload is not committed, its session is deleted.
    let before = proxy.stats().1.len();
    let fresh = dir.path().join("cache2");
    let present = build_push_ok(
        &spec,
        &dir.path().join("layout3"),
        &[
            "--cache",
            fresh.to_str().unwrap(),
            "--push",
            &format!("{}/stream/app:4", proxy.host()),
        ],
    );
    assert_eq!(present["streamed"]["present"], 1, "{present:#}");
    assert_eq!(present["streamed"]["uploaded"], json!([]), "{present:#}");
    let later = &proxy.stats().1[before..];
    assert!(later.iter().any(|r| r.starts_with("DELETE")), "{later:?}");
    assert!(
        !later
            .iter()
            .any(|r| r.starts_with("PUT") && r.contains("/blobs/uploads/")),
        "an upload was committed: {later:?}"
    );
}

#[test]
fn a_failed_stream_leaves_the_layer_to_the_push_after_the_build() {
    let registry = Registry::start(Auth::Anonymous);
    let proxy = Proxy::start(&registry);
    proxy.set_plan(json!({"faults": [
        {"method": "PATCH", "path_contains": "/blobs/uploads/", "action": "500"},
    ]}));
    let dir = tempdir();
    let spec = big_layer_spec(dir.path());
    let layout = dir.path().join("layout");
    let cache = dir.path().join("cache");
    let out = build_push(
        &spec,
        &layout,
        &[
            "--cache",
            cache.to_str().unwrap(),
            "--push",
            &format!("{}/fall/app:1", proxy.host()),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("it is pushed after the build instead"),
        "{err}"
    );
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    let abandoned = summary["streamed"]["abandoned"].as_array().unwrap();
    assert_eq!(abandoned.len(), 1, "{summary:#}");
    let why = abandoned[0].as_str().unwrap();
    assert!(
        why.starts_with("PATCH ") && why.ends_with("failed: HTTP 500: UNAVAILABLE injected fault"),
        "{why}"
    );
    let requests = proxy.stats().1;
    assert!(
        requests.iter().any(|r| r.starts_with("DELETE")),
        "{requests:?}"
    );
    assert_pulls_back_equal(
        &format!("{}/fall/app:1", registry.host()),
        &layout,
        None,
        dir.path(),
    );

    // The registry refuses the stream's upload session: the same fallback.
    proxy.set_plan(json!({"faults": [
        {"method": "POST", "path_contains": "/blobs/uploads/", "action": "400"},
    ]}));
    let refused = build_push_ok(
        &spec,
        &dir.path().join("layout-refused"),
        &[
            "--cache",
            dir.path().join("cache-refused").to_str().unwrap(),
            "--push",
            &format!("{}/fall/app:refused", proxy.host()),
        ],
    );
    assert_eq!(
        refused["streamed"]["abandoned"],
        json!(["starting an upload: HTTP 400: UNAVAILABLE injected fault"]),
        "{refused:#}"
    );
    assert_eq!(refused["push"]["digest"], refused["build"]["digest"]);

    // A build that fails after its big layer was streamed pushes nothing:
    // the stream is deleted, no blob committed, no tag written.
    let data = dir
        .path()
        .join("store/0123456789abcdfghijklmnpqrsvwxyz-big/data");
    let mut bytes = fs::read(&data).unwrap();
    bytes[1000] ^= 0xff;
    fs::write(&data, bytes).unwrap();
    let before = proxy.stats().1.len();
    let out = build_push(
        &spec,
        &dir.path().join("layout2"),
        &[
            "--cache",
            dir.path().join("cache2").to_str().unwrap(),
            "--push",
            &format!("{}/fall/app:2", proxy.host()),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("does not match its registered NAR hash"),
        "{err}"
    );
    assert!(!err.contains("pushed after the build"), "{err}");
    let later = &proxy.stats().1[before..];
    assert!(
        later.iter().any(|r| r.starts_with("PATCH")),
        "nothing was streamed: {later:?}"
    );
    assert!(later.iter().any(|r| r.starts_with("DELETE")), "{later:?}");
    assert!(
        !later.iter().any(|r| r.starts_with("PUT")),
        "something was committed: {later:?}"
    );
}

/// A registry slower than the compressor never holds the build back: the
/// stream is abandoned and the layer goes with the push after the build.
#[test]
fn a_registry_that_falls_behind_never_holds_back_the_build() {
    let registry = Registry::start(Auth::Anonymous);
    let proxy = Proxy::start(&registry);
    // The first chunk is never taken in (for 30 s).
    proxy.set_plan(json!({"faults": [
        {"method": "PATCH", "path_contains": "/blobs/uploads/", "action": "blackhole"},
    ]}));
    let dir = tempdir();
    let spec = big_layer_spec(dir.path());
    let layout = dir.path().join("layout");
    let summary = build_push_ok(
        &spec,
        &layout,
        &[
            "--cache",
            dir.path().join("cache").to_str().unwrap(),
            "--push",
            &format!("{}/slow/app:1", proxy.host()),
        ],
    );
    assert_eq!(
        summary["streamed"]["abandoned"],
        json!(["the registry took in the layer more slowly than it was compressed (it kept the build waiting 2s)"]),
        "{summary:#}"
    );
    assert_eq!(summary["push"]["digest"], summary["build"]["digest"]);
    assert_pulls_back_equal(
        &format!("{}/slow/app:1", registry.host()),
        &layout,
        None,
        dir.path(),
    );
}

/// A build that fails in another layer after the big one was streamed
/// whole commits nothing: the stream waits for the build's verdict.
#[test]
fn a_streamed_layer_is_committed_only_when_the_whole_build_succeeds() {
    let registry = Registry::start(Auth::Anonymous);
    let proxy = Proxy::start(&registry);
    let dir = tempdir();
    let spec = big_layer_spec(dir.path());
    // The small path no longer matches its NAR hash; with one job the big
    // layer is built (and streamed) first.
    fs::write(
        dir.path()
            .join("store/1123456789abcdfghijklmnpqrsvwxyz-small/hello"),
        "HELLO\n",
    )
    .unwrap();
    let out = build_push(
        &spec,
        &dir.path().join("layout"),
        &[
            "--jobs",
            "1",
            "--cache",
            dir.path().join("cache").to_str().unwrap(),
            "--push",
            &format!("{}/half/app:1", proxy.host()),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("does not match its registered NAR hash"),
        "{err}"
    );
    let requests = proxy.stats().1;
    let patched: u64 = requests.iter().filter(|r| r.starts_with("PATCH")).count() as u64;
    // 72 MiB of incompressible bytes are at least 18 chunks of 4 MiB.
    assert!(patched >= 18, "not streamed whole: {requests:?}");
    assert!(
        requests.iter().any(|r| r.starts_with("DELETE")),
        "{requests:?}"
    );
    assert!(
        !requests.iter().any(|r| r.starts_with("PUT")),
        "something was committed: {requests:?}"
    );
}

#[test]
fn build_push_refuses_what_it_cannot_push_before_building() {
    let dir = tempdir();
    let f = fixture();
    let out = fails(nixoci().arg("build").arg(&f.app).args([
        "--format",
        "docker-archive",
        "-o",
        dir.path().join("image.tar").to_str().unwrap(),
        "--push",
        "127.0.0.1:1/team/app:1",
    ]));
    assert!(
        out.contains("--push pushes the OCI layout it builds"),
        "{out}"
    );
    let out = fails(nixoci().arg("build").arg(&f.app).args([
        "-o",
        dir.path().join("layout").to_str().unwrap(),
        "--push",
        "team/app:1",
    ]));
    assert!(out.contains("team/app:1"), "{out}");
    assert!(
        !dir.path().join("layout").exists(),
        "it built before refusing"
    );
    // A registry it cannot reach: exit 5 before anything is built.
    let out = nixoci()
        .arg("build")
        .arg(&f.app)
        .args(["-o", dir.path().join("layout").to_str().unwrap()])
        .args(["--push", "127.0.0.1:1/team/app:1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(
        err.contains("cannot reach https://127.0.0.1:1/v2/"),
        "{err}"
    );
    assert!(
        !dir.path().join("layout").exists(),
        "it built before refusing"
    );
}

/// `push --compression` recompresses plain layers: a plain layer changed
/// after the image was made (one byte, same size) is refused, never pushed
/// under the new digest its compression would give it.
#[test]
fn recompressing_refuses_a_changed_plain_layer() {
    let registry = Registry::start(Auth::Anonymous);
    let f = fixture();
    let dir = tempdir();
    let layout = dir.path().join("plain");
    run(nixoci()
        .arg("build")
        .arg(&f.app)
        .args(["--compression", "none", "--tag", "test/app:1", "-q", "-o"])
        .arg(&layout));
    let (manifest, _) = layout_manifest(&layout);
    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    let blob = layout.join("blobs/sha256").join(&layer[7..]);
    let mut bytes = fs::read(&blob).unwrap();
    let last = bytes.len() - 2000;
    bytes[last] ^= 0x01;
    let mut perms = fs::metadata(&blob).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o644);
    fs::set_permissions(&blob, perms).unwrap();
    fs::write(&blob, bytes).unwrap();
    let out = push(&[
        "--compression",
        "gzip",
        layout.to_str().unwrap(),
        &format!("{}/test/plain:1", registry.host()),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("is damaged"), "{err}");
    let inspect = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .arg(format!("docker://{}/test/plain:1", registry.host()))
        .output()
        .unwrap();
    assert!(!inspect.status.success(), "the image was pushed");
}
