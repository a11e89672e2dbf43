//! `nixoci key`, `sign`, `attest` and `verify-image` through the CLI, with
//! verifiers nobody here wrote: sigstore-js (`@sigstore/verify`) for the
//! bundles, securesystemslib and in-toto for the DSSE envelope, Python's
//! `cryptography` for cosign's legacy signature; keys made by nixoci, and a
//! cosign key file made the way cosign documents it.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

const BUNDLE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";

/// Where .ci/setup installs sigstore-js.
const SIGSTORE_JS: &str = "/opt/nixoci-sigstore/node_modules";

/// The fixture app's image, in a new OCI layout.
fn layout(dir: &Path, name: &str) -> PathBuf {
    let out = dir.join(name);
    run(nixoci()
        .arg("build")
        .arg(&fixture().app)
        .args(["--tag", "team/app:1", "-q", "-o"])
        .arg(&out));
    out
}

/// `nixoci key generate` into `dir/prefix.key` and `.pub`.
fn key_pair(dir: &Path, prefix: &str) -> (PathBuf, PathBuf) {
    let prefix = dir.join(prefix);
    run(nixoci()
        .args(["key", "generate", "--output-key-prefix"])
        .arg(&prefix)
        .env_remove("COSIGN_PASSWORD"));
    (prefix.with_extension("key"), prefix.with_extension("pub"))
}

/// The fixture app's derivation.
fn app_drv() -> String {
    stdout(
        Command::new("nix-instantiate")
            .arg(repo().join("tests/fixtures/closure.nix"))
            .args(["-A", "app"]),
    )
    .trim()
    .to_string()
}

/// A layout's artifacts by kind: their manifest, and their first layer's file.
fn artifacts(layout: &Path) -> BTreeMap<String, (Value, PathBuf)> {
    read_json(&layout.join("index.json"))["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|entry| {
            let kind = entry["annotations"]["dev.nixoci.artifact"].as_str()?;
            let manifest = read_json(&blob_path(layout, entry["digest"].as_str().unwrap()));
            let layer = blob_path(layout, manifest["layers"][0]["digest"].as_str().unwrap());
            Some((kind.to_string(), (manifest, layer)))
        })
        .collect()
}

/// The image manifest of a layout, as a file.
fn manifest_file(layout: &Path) -> PathBuf {
    let index = read_json(&layout.join("index.json"));
    let entry = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e.get("artifactType").is_none())
        .unwrap();
    blob_path(layout, entry["digest"].as_str().unwrap())
}

/// (accepted, what the verifier said).
fn verifier(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success() && text.contains("verified"), text)
}

fn sigstore_js(bundle: &Path, key: &Path, manifest: &Path) -> (bool, String) {
    verifier(
        Command::new("node")
            .arg(repo().join("tests/support/sigstore_verify.js"))
            .args([bundle, key, manifest])
            .env("NODE_PATH", SIGSTORE_JS),
    )
}

fn python(args: &[&str]) -> (bool, String) {
    verifier(
        Command::new("python3")
            .arg(repo().join("tests/support/signatures.py"))
            .args(args),
    )
}

/// `nixoci push` of a layout to a loopback registry.
fn push(layout: &Path, reference: &str) {
    run(nixoci()
        .args(["push", "--insecure", "-q"])
        .arg(layout)
        .arg(reference));
}

/// `nixoci verify-image` of a reference in a loopback registry.
fn verify_remote(reference: &str, key: &Path) -> Command {
    let mut cmd = nixoci();
    cmd.args(["verify-image", "--insecure", reference, "--key"])
        .arg(key);
    cmd
}

fn text(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn signatures_and_attestations_pass_independent_verifiers_and_fail_when_anything_changes() {
    let dir = tempdir();
    let image = layout(dir.path(), "image");
    let (key, public) = key_pair(dir.path(), "ci");
    let (_, other) = key_pair(dir.path(), "other");
    assert!(fs_text(&key).starts_with("-----BEGIN PRIVATE KEY-----"));
    run(nixoci().arg("sign").arg(&image).arg("--key").arg(&key));
    run(nixoci()
        .arg("attest")
        .arg(&image)
        .arg("--key")
        .arg(&key)
        .args(["--drv", &app_drv()]));
    let found = artifacts(&image);
    let kinds: Vec<&str> = found.keys().map(String::as_str).collect();
    assert_eq!(
        kinds,
        [
            "attestation-bundle",
            "attestation-legacy",
            "signature-bundle",
            "signature-legacy"
        ]
    );
    let manifest = manifest_file(&image);
    let digest = format!("sha256:{}", manifest.file_name().unwrap().to_str().unwrap());
    // A manifest one byte different.
    let changed = dir.path().join("changed.json");
    let mut bytes = std::fs::read(&manifest).unwrap();
    let at = bytes.iter().position(|&b| b == b'2').unwrap();
    bytes[at] = b'3';
    std::fs::write(&changed, &bytes).unwrap();
    // Another image's manifest: the attestation's subject is not it.
    let other_image = dir.path().join("other-image");
    run(nixoci()
        .arg("build")
        .arg(&fixture().lib)
        .args(["--tag", "team/lib:1", "-q", "-o"])
        .arg(&other_image));
    let other_manifest = manifest_file(&other_image);

    // sigstore-js accepts both bundles with the key and no transparency
    // log, and refuses them with another key, another manifest or subject.
    for kind in ["signature-bundle", "attestation-bundle"] {
        let (artifact, bundle) = &found[kind];
        assert_eq!(artifact["artifactType"], BUNDLE);
        assert_eq!(artifact["subject"]["digest"], digest.as_str());
        let (ok, said) = sigstore_js(bundle, &public, &manifest);
        assert!(ok, "{kind}: {said}");
        for (key, manifest, why) in [
            (&other, &manifest, "another key"),
            (&public, &changed, "a changed manifest"),
            (&public, &other_manifest, "another image"),
        ] {
            let (ok, said) = sigstore_js(bundle, key, manifest);
            assert!(!ok && said.contains("refused"), "{kind} with {why}: {said}");
        }
    }

    // The DSSE envelope, by securesystemslib and in-toto.
    let (artifact, envelope) = &found["attestation-legacy"];
    assert_eq!(
        artifact["layers"][0]["mediaType"],
        "application/vnd.dsse.envelope.v1+json"
    );
    assert_eq!(
        artifact["layers"][0]["annotations"]["predicateType"],
        "https://slsa.dev/provenance/v1"
    );
    let (ok, said) = python(&["dsse", text(envelope), text(&public), text(&manifest)]);
    assert!(ok, "{said}");
    let (ok, said) = python(&["dsse", text(envelope), text(&other), text(&manifest)]);
    assert!(!ok, "{said}");
    let (ok, said) = python(&["dsse", text(envelope), text(&public), text(&other_manifest)]);
    assert!(!ok && said.contains("subject"), "{said}");

    // cosign's legacy signature: its layer type and annotation, and an
    // ECDSA signature over the payload, which names the manifest digest.
    let (artifact, payload) = &found["signature-legacy"];
    let layer = &artifact["layers"][0];
    assert_eq!(
        layer["mediaType"],
        "application/vnd.dev.cosign.simplesigning.v1+json"
    );
    let signature = layer["annotations"]["dev.cosignproject.cosign/signature"]
        .as_str()
        .unwrap();
    let (ok, said) = python(&["cosign", text(payload), signature, text(&public), &digest]);
    assert!(ok, "{said}");
    let (ok, said) = python(&["cosign", text(payload), signature, text(&other), &digest]);
    assert!(!ok, "{said}");
    let config = read_json(&blob_path(
        &image,
        artifact["config"]["digest"].as_str().unwrap(),
    ));
    assert_eq!(
        config["rootfs"]["diff_ids"][0], layer["digest"],
        "cosign's config names the payload"
    );

    // nixoci's own check agrees, and refuses another key.
    let said = stdout(
        nixoci()
            .arg("verify-image")
            .arg(&image)
            .arg("--key")
            .arg(&public),
    );
    assert_eq!(said.lines().count(), 4, "{said}");
    let out = nixoci()
        .arg("verify-image")
        .arg(&image)
        .arg("--key")
        .arg(&other)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    // A layout with a signature whose payload names another image fails too.
    let (_, payload) = &found["signature-legacy"];
    let original = std::fs::read(payload).unwrap();
    std::fs::write(
        payload,
        String::from_utf8_lossy(&original).replace(&digest[7..17], "0000000000"),
    )
    .unwrap();
    let err = fails(
        nixoci()
            .arg("verify-image")
            .arg(&image)
            .arg("--key")
            .arg(&public),
    );
    assert!(
        err.contains("damaged") || err.contains("does not verify"),
        "{err}"
    );
    std::fs::write(payload, original).unwrap();

    // Determinism: attesting again gives the same Statement.
    let statement = |layout: &Path| {
        let envelope = read_json(&artifacts(layout)["attestation-legacy"].1);
        envelope["payload"].as_str().unwrap().to_string()
    };
    let before = statement(&image);
    let again = layout(dir.path(), "again");
    run(nixoci()
        .arg("attest")
        .arg(&again)
        .arg("--key")
        .arg(&key)
        .args(["--drv", &app_drv()]));
    assert_eq!(statement(&again), before);
}

fn fs_text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

#[test]
fn encrypted_keys_pkcs8_and_cosign_format_sign_with_their_password() {
    let dir = tempdir();
    // PKCS#8, encrypted with the password in COSIGN_PASSWORD.
    let prefix = dir.path().join("enc");
    run(nixoci()
        .args(["key", "generate", "--output-key-prefix"])
        .arg(&prefix)
        .env("COSIGN_PASSWORD", "correct horse"));
    let key = prefix.with_extension("key");
    assert!(fs_text(&key).starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let err = fails(
        nixoci()
            .args(["key", "generate", "--output-key-prefix"])
            .arg(&prefix),
    );
    assert!(err.contains("never overwrites"), "{err}");
    // A cosign key file, made by the tests with cosign's parameters.
    run(Command::new("python3")
        .arg(repo().join("tests/support/signatures.py"))
        .args(["cosign-key", "s3cret"])
        .arg(dir.path().join("cosign")));
    for (key, public, password) in [
        (key, prefix.with_extension("pub"), "correct horse"),
        (
            dir.path().join("cosign.key"),
            dir.path().join("cosign.pub"),
            "s3cret",
        ),
    ] {
        let image = layout(dir.path(), &format!("image-{password}").replace(' ', "-"));
        let sign = |password: Option<&str>| {
            let mut cmd = nixoci();
            cmd.arg("sign").arg(&image).arg("--key").arg(&key);
            match password {
                Some(p) => cmd.env("COSIGN_PASSWORD", p),
                None => cmd.env_remove("COSIGN_PASSWORD"),
            };
            cmd
        };
        let err = fails(&mut sign(None));
        assert!(err.contains("is encrypted"), "{err}");
        let err = fails(&mut sign(Some("wrong")));
        assert!(err.contains("wrong password"), "{err}");
        run(&mut sign(Some(password)));
        run(nixoci()
            .arg("verify-image")
            .arg(&image)
            .arg("--key")
            .arg(&public));
        let (ok, said) = sigstore_js(
            &artifacts(&image)["signature-bundle"].1,
            &public,
            &manifest_file(&image),
        );
        assert!(ok, "{said}");
    }
}

#[test]
fn signatures_travel_to_a_registry_and_verify_from_there() {
    let dir = tempdir();
    let image = layout(dir.path(), "image");
    let (key, public) = key_pair(dir.path(), "ci");
    let (_, other) = key_pair(dir.path(), "other");
    run(nixoci().arg("sign").arg(&image).arg("--key").arg(&key));
    run(nixoci()
        .arg("attest")
        .arg(&image)
        .arg("--key")
        .arg(&key)
        .args(["--drv", &app_drv()]));
    let digest = format!(
        "sha256:{}",
        manifest_file(&image).file_name().unwrap().to_str().unwrap()
    );
    let hex = &digest[7..];
    let registry = Registry::start(Auth::Anonymous);
    let proxy = Proxy::start(&registry);
    // The CNCF registry has no referrers API: the fallback tag.
    let reference = format!("{}/team/app:1", proxy.host());
    push(&image, &reference);
    let raw = |tag: &str| -> Value {
        serde_json::from_str(&stdout(
            Command::new("skopeo")
                .args(["inspect", "--raw", "--tls-verify=false"])
                .arg(format!("docker://{}/team/app:{tag}", proxy.host())),
        ))
        .unwrap()
    };
    let sig = raw(&format!("sha256-{hex}.sig"));
    assert_eq!(
        sig["layers"][0]["mediaType"],
        "application/vnd.dev.cosign.simplesigning.v1+json"
    );
    assert!(sig["layers"][0]["annotations"]["dev.cosignproject.cosign/signature"].is_string());
    let att = raw(&format!("sha256-{hex}.att"));
    assert_eq!(
        att["layers"][0]["mediaType"],
        "application/vnd.dsse.envelope.v1+json"
    );
    let index = raw(&format!("sha256-{hex}"));
    let bundles = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["artifactType"] == BUNDLE)
        .count();
    assert_eq!(bundles, 2, "{index:#}");
    let said = stdout(&mut verify_remote(&reference, &public));
    assert!(
        said.contains(&format!("the tag sha256-{hex}.sig")),
        "{said}"
    );
    assert!(said.contains("through the referrers tag"), "{said}");
    assert_eq!(said.lines().count(), 4, "{said}");
    let out = verify_remote(&reference, &other).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");

    // zot (played by the proxy) keeps referrers itself: no fallback tag,
    // and the bundles are found through its API.
    proxy.set_plan(serde_json::json!({"oci_subject": true, "referrers_api": true}));
    let zot = format!("{}/team/zot:1", proxy.host());
    push(&image, &zot);
    let said = stdout(&mut verify_remote(&zot, &public));
    assert!(said.contains("through the referrers API"), "{said}");
    assert!(
        !proxy
            .stats()
            .1
            .iter()
            .any(|r| r.starts_with(&format!("PUT /v2/team/zot/manifests/sha256-{hex} "))),
        "{:?}",
        proxy.stats().1
    );

    // Pushed again to a registry with immutable tags (zot with create-only
    // rights): cosign's tags already hold the same manifests, so they are
    // not put again.
    proxy.set_plan(serde_json::json!({"immutable_tags": true}));
    push(&image, &reference);

    // A registry that lists the signed image's bundles for another image:
    // they are not about it, so that image is unsigned.
    let lib = dir.path().join("lib");
    run(nixoci()
        .arg("build")
        .arg(&fixture().lib)
        .args(["--tag", "team/lib:1", "-q", "-o"])
        .arg(&lib));
    let lib_ref = format!("{}/team/zot:lib", proxy.host());
    push(&lib, &lib_ref);
    let lib_digest = format!(
        "sha256:{}",
        manifest_file(&lib).file_name().unwrap().to_str().unwrap()
    );
    proxy.set_plan(serde_json::json!({
        "referrers_api": true,
        "referrers_alias": {lib_digest: digest},
    }));
    let err = fails(&mut verify_remote(&lib_ref, &public));
    assert!(err.contains("has no signature"), "{err}");

    // An image pushed unsigned is signed where it is, then verifies; an
    // image with no signature fails.
    proxy.set_plan(serde_json::json!({}));
    let unsigned = layout(dir.path(), "unsigned");
    let plain = format!("{}/team/plain:1", proxy.host());
    push(&unsigned, &plain);
    let err = fails(&mut verify_remote(&plain, &public));
    assert!(err.contains("has no signature"), "{err}");
    run(nixoci()
        .args([
            "sign",
            "--insecure",
            &plain,
            "--signature-format",
            "legacy",
            "--key",
        ])
        .arg(&key));
    let said = stdout(&mut verify_remote(&plain, &public));
    assert_eq!(said.lines().count(), 1, "{said}");
    assert!(said.contains(".sig"), "{said}");
    // Signed but not attested: a policy has nothing to check.
    let err = fails(verify_remote(&plain, &public).args(["--policy", "no-upstream"]));
    assert!(err.contains("no provenance attestation"), "{err}");
}

#[test]
fn each_signature_and_attestation_is_checked_on_its_own() {
    let dir = tempdir();
    let (a, a_public) = key_pair(dir.path(), "a");
    let (b, b_public) = key_pair(dir.path(), "b");
    // (signed by, its format, attested by, its format, verified with): each
    // case has exactly one artifact the verifying key did not make.
    type Case<'a> = (&'a Path, &'a str, Option<(&'a Path, &'a str)>, &'a Path);
    let cases: [Case; 4] = [
        (&a, "legacy", None, &b_public),
        (&a, "bundle", None, &b_public),
        (&a, "both", Some((&b, "legacy")), &a_public),
        (&a, "both", Some((&b, "bundle")), &a_public),
    ];
    for (i, (signer, format, attester, verify_with)) in cases.into_iter().enumerate() {
        let image = layout(dir.path(), &format!("image-{i}"));
        run(nixoci()
            .arg("sign")
            .arg(&image)
            .arg("--key")
            .arg(signer)
            .args(["--signature-format", format]));
        if let Some((attester, format)) = attester {
            run(nixoci()
                .arg("attest")
                .arg(&image)
                .arg("--key")
                .arg(attester)
                .args(["--drv", &app_drv(), "--signature-format", format]));
        }
        let out = nixoci()
            .arg("verify-image")
            .arg(&image)
            .arg("--key")
            .arg(verify_with)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "case {i}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("does not verify with this key")
                || err.contains("no signature of the envelope verifies"),
            "case {i}: {err}"
        );
    }
}

#[test]
fn build_and_push_sign_on_the_way() {
    let dir = tempdir();
    let (key, public) = key_pair(dir.path(), "ci");
    let registry = Registry::start(Auth::Anonymous);
    // build --sign-key --provenance --push: the layout carries both, and so
    // does the registry.
    let built = format!("{}/team/built:1", registry.host());
    let layout = dir.path().join("built");
    let out = run(nixoci()
        .arg("build")
        .arg(&fixture().app)
        .args(["--tag", "team/app:1", "-o"])
        .arg(&layout)
        .arg("--sign-key")
        .arg(&key)
        .args(["--provenance", &app_drv(), "--sbom", "cyclonedx"])
        .args(["--push", &built, "--insecure"])
        // As a Forgejo Actions run sets them.
        .env("GITHUB_SERVER_URL", "https://forge.example")
        .env("GITHUB_REPOSITORY", "blumeops/blumeops")
        .env(
            "GITHUB_WORKFLOW_REF",
            "blumeops/blumeops/.forgejo/workflows/build-container-nix.yaml@refs/heads/main",
        )
        .env("GITHUB_RUN_ID", "42")
        .env("GITHUB_RUN_ATTEMPT", "2"));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("signed sha256:") && said.contains("attested sha256:"),
        "{said}"
    );
    let found = artifacts(&layout);
    assert_eq!(found.len(), 5, "{:?}", found.keys());
    // The provenance names the SBOM attached with it.
    let envelope = read_json(&found["attestation-legacy"].1);
    let statement: Value =
        serde_json::from_slice(&base64_decode(envelope["payload"].as_str().unwrap())).unwrap();
    let sbom = statement["predicate"]["runDetails"]["byproducts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "sbom")
        .unwrap_or_else(|| panic!("{statement:#}"));
    let run_details = &statement["predicate"]["runDetails"];
    assert_eq!(
        run_details["builder"]["id"],
        "https://forge.example/blumeops/blumeops/.forgejo/workflows/build-container-nix.yaml@refs/heads/main"
    );
    assert_eq!(
        run_details["metadata"]["invocationId"],
        "https://forge.example/blumeops/blumeops/actions/runs/42/attempts/2"
    );
    let sbom_file = &found["application/vnd.cyclonedx+json"].1;
    assert_eq!(
        sbom["digest"]["sha256"].as_str().unwrap(),
        sbom_file.file_name().unwrap().to_str().unwrap()
    );
    let said = stdout(verify_remote(&built, &public).args(["--drv", &app_drv()]));
    assert_eq!(said.lines().count(), 4, "{said}");
    // push --sign-key signs what it pushed, where it is.
    let plain = dir.path().join("plain");
    run(nixoci()
        .arg("build")
        .arg(&fixture().lib)
        .args(["--tag", "team/lib:1", "-q", "-o"])
        .arg(&plain));
    let pushed = format!("{}/team/pushed:1", registry.host());
    run(nixoci()
        .args(["push", "--insecure", "-q"])
        .arg(&plain)
        .arg(&pushed)
        .arg("--sign-key")
        .arg(&key));
    let said = stdout(&mut verify_remote(&pushed, &public));
    assert_eq!(said.lines().count(), 2, "{said}");
    // Signing needs a layout to keep the signatures in.
    let err = fails(
        nixoci()
            .arg("build")
            .arg(&fixture().lib)
            .args(["--format", "docker-archive", "-o"])
            .arg(dir.path().join("x.tar"))
            .arg("--sign-key")
            .arg(&key),
    );
    assert!(
        err.contains("--sign-key keeps the signatures in an OCI layout"),
        "{err}"
    );
}

/// Writes `bytes` as a blob of `layout`; returns its digest.
fn put_blob(layout: &Path, bytes: &[u8]) -> String {
    use sha2::Digest as _;
    let digest = format!(
        "sha256:{}",
        nixoci::digest::hex(&sha2::Sha256::digest(bytes))
    );
    std::fs::write(blob_path(layout, &digest), bytes).unwrap();
    digest
}

#[test]
fn signatures_moved_to_another_image_are_refused() {
    let dir = tempdir();
    let (key, public) = key_pair(dir.path(), "ci");
    let signed = layout(dir.path(), "signed");
    run(nixoci().arg("sign").arg(&signed).arg("--key").arg(&key));
    run(nixoci()
        .arg("attest")
        .arg(&signed)
        .arg("--key")
        .arg(&key)
        .args(["--drv", &app_drv()]));
    let other = dir.path().join("other");
    run(nixoci()
        .arg("build")
        .arg(&fixture().lib)
        .args(["--tag", "team/lib:1", "-q", "-o"])
        .arg(&other));
    let other_manifest = manifest_file(&other);
    let other_hex = other_manifest
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let other_descriptor = serde_json::json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": format!("sha256:{other_hex}"),
        "size": std::fs::metadata(&other_manifest).unwrap().len(),
    });
    let found = artifacts(&signed);
    // Each case: one artifact of the signed image, made to look like the
    // other image's (its tag renamed, or its referrer's subject changed).
    for (kind, refusal) in [
        ("signature-legacy", "the signed payload names"),
        (
            "attestation-legacy",
            "the attestation's subject is not this image",
        ),
        ("signature-bundle", "the bundle signs another manifest"),
        (
            "attestation-bundle",
            "the attestation's subject is not this image",
        ),
    ] {
        let copy = dir.path().join(format!("other-{kind}"));
        run(Command::new("cp").arg("-r").arg(&other).arg(&copy));
        let (manifest, layer) = &found[kind];
        put_blob(&copy, &std::fs::read(layer).unwrap());
        let config = blob_path(&signed, manifest["config"]["digest"].as_str().unwrap());
        put_blob(&copy, &std::fs::read(config).unwrap());
        let mut manifest = manifest.clone();
        let mut annotations = serde_json::json!({"dev.nixoci.artifact": kind});
        if manifest.get("subject").is_some() {
            manifest["subject"] = other_descriptor.clone();
        } else {
            let suffix = if kind.starts_with("signature") {
                "sig"
            } else {
                "att"
            };
            annotations["dev.nixoci.tag"] = format!("sha256-{other_hex}.{suffix}").into();
        }
        let bytes = serde_json::to_vec(&manifest).unwrap();
        let digest = put_blob(&copy, &bytes);
        let mut index = read_json(&copy.join("index.json"));
        index["manifests"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": digest, "size": bytes.len(),
                "artifactType": found[kind].0["artifactType"].as_str()
                    .unwrap_or(found[kind].0["layers"][0]["mediaType"].as_str().unwrap()),
                "annotations": annotations,
            }));
        std::fs::write(copy.join("index.json"), index.to_string()).unwrap();
        let out = nixoci()
            .arg("verify-image")
            .arg(&copy)
            .arg("--key")
            .arg(&public)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{kind}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        // Without a signature of its own, the image is also unsigned: the
        // moved artifact must be what is refused.
        assert!(err.contains(refusal), "{kind}: {err}");
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}
