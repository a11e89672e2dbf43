//! `nixoci hash` equals Nix 2.8's `nix hash`; `nixoci verify` checks git
//! mirrors, tarballs, files, fixed-output paths and lock files offline and
//! catches tampering; `nixoci build` refuses a modified store path.

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

use common::*;

fn nix_hash(kind: &str, format: &str, path: &Path) -> String {
    stdout(Command::new("nix").args(["hash", kind, format]).arg(path))
        .trim()
        .to_string()
}

fn nixoci_hash(kind: &str, format: &str, path: &Path) -> String {
    stdout(nixoci().args(["hash", kind, format]).arg(path))
        .trim()
        .to_string()
}

#[test]
fn hash_path_and_file_equal_nix_hash() {
    let dir = tempdir();
    let t = dir.path().join("tree");
    fs::create_dir_all(t.join("empty-dir")).unwrap();
    fs::create_dir_all(t.join("bin")).unwrap();
    fs::write(t.join("bin/tool"), "#!/bin/sh\necho tool\n").unwrap();
    fs::set_permissions(t.join("bin/tool"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(t.join("empty-file"), "").unwrap();
    symlink("bin/tool", t.join("relative-link")).unwrap();
    symlink("/nonexistent/target", t.join("dangling-link")).unwrap();
    symlink("bin", t.join("dir-link")).unwrap();
    fs::write(t.join("caf\u{e9}-\u{1f980}.txt"), "unicode").unwrap();
    fs::write(
        t.join(std::ffi::OsStr::from_bytes(b"odd-\xff\xfe-bytes")),
        "odd",
    )
    .unwrap();
    let mut deep = t.join("deep");
    for i in 0..40 {
        deep = deep.join(format!("level-{i}"));
    }
    fs::create_dir_all(&deep).unwrap();
    fs::write(deep.join("bottom"), "deep").unwrap();
    // 100 MiB that does not compress to nothing: a counter pattern.
    let mut big = fs::File::create(t.join("big.bin")).unwrap();
    let block: Vec<u8> = (0..1u32 << 20)
        .flat_map(|i| (i.wrapping_mul(2654435761)).to_le_bytes())
        .take(1 << 20)
        .collect();
    for i in 0..100u8 {
        let mut b = block.clone();
        b[0] = i;
        big.write_all(&b).unwrap();
    }
    drop(big);

    for (ours, theirs) in [
        ("--sri", "--sri"),
        ("--base32", "--base32"),
        ("--hex", "--base16"),
    ] {
        assert_eq!(
            nixoci_hash("path", ours, &t),
            nix_hash("path", theirs, &t),
            "hash path {ours}"
        );
    }
    for file in ["big.bin", "empty-file"] {
        assert_eq!(
            nixoci_hash("file", "--sri", &t.join(file)),
            nix_hash("file", "--sri", &t.join(file)),
            "{file}"
        );
    }
    assert_eq!(
        nixoci_hash("path", "--sri", &t.join("empty-dir")),
        nix_hash("path", "--sri", &t.join("empty-dir"))
    );
    assert_eq!(
        nixoci_hash("path", "--sri", &t.join("dangling-link")),
        nix_hash("path", "--sri", &t.join("dangling-link"))
    );
}

fn git(dir: &Path, args: &[&str]) -> String {
    stdout(
        Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .env("GIT_AUTHOR_DATE", "2026-01-01T00:00:00Z")
            .env("GIT_COMMITTER_DATE", "2026-01-01T00:00:00Z"),
    )
    .trim()
    .to_string()
}

/// A repository with an executable, a symlink, a nested directory, lock
/// files and two tags, and a bare mirror of it under `root/mirrors/`.
fn make_mirror(root: &Path) -> (std::path::PathBuf, Vec<(String, String)>) {
    let work = root.join("work");
    fs::create_dir_all(work.join("src/nested/deeper")).unwrap();
    git(&work, &["init", "-q", "-b", "main"]);
    git(&work, &["config", "user.email", "t@example.com"]);
    git(&work, &["config", "user.name", "t"]);
    fs::write(work.join("README"), "v1\n").unwrap();
    fs::write(work.join("src/nested/deeper/data.txt"), "nested\n").unwrap();
    fs::write(work.join("run.sh"), "#!/bin/sh\necho run\n").unwrap();
    fs::set_permissions(work.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    symlink("src/nested", work.join("link-to-nested")).unwrap();
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "one"]);
    git(&work, &["tag", "-a", "v1", "-m", "v1"]);
    fs::write(work.join("README"), "v2\n").unwrap();
    git(&work, &["commit", "-q", "-am", "two"]);
    git(&work, &["tag", "v2"]);
    let mirror = root.join("mirrors/test.git");
    fs::create_dir_all(root.join("mirrors")).unwrap();
    run(Command::new("git")
        .args(["clone", "-q", "--bare", "--no-local"])
        .arg(&work)
        .arg(&mirror));
    let mut pins = Vec::new();
    for tag in ["v1", "v2"] {
        let export = root.join(format!("export-{tag}"));
        fs::create_dir_all(&export).unwrap();
        sh(&format!(
            "git -C {} archive {tag} | tar -x -C {}",
            work.display(),
            export.display()
        ));
        pins.push((
            nix_hash("path", "--sri", &export),
            git(&work, &["rev-parse", &format!("{tag}^{{commit}}")]),
        ));
    }
    (mirror, pins)
}

fn verify(manifest: &Path, root: &Path, offline: bool) -> std::process::Output {
    let mut cmd = if offline {
        let mut c = Command::new("unshare");
        c.args(["--net", "--"]).arg(env!("CARGO_BIN_EXE_nixoci"));
        c
    } else {
        nixoci()
    };
    cmd.args(["verify", "-q"])
        .arg(manifest)
        .arg("--mirror-root")
        .arg(root)
        .output()
        .unwrap()
}

#[test]
fn git_mirrors_verify_offline_and_tampering_is_caught() {
    let dir = tempdir();
    let root = dir.path();
    let (mirror, pins) = make_mirror(root);
    let manifest = root.join("test.toml");
    let write_manifest = |with_commit: bool| {
        let mut text = String::new();
        for (tag, (hash, commit)) in ["v1", "v2"].iter().zip(&pins) {
            text.push_str(&format!(
                "[[source]]\nname = \"test-{tag}\"\nkind = \"git\"\nmirror = \"https://forge.example/mirrors/test.git\"\nrev = \"{tag}\"\nhash = \"{hash}\"\n{}\n",
                if with_commit { format!("commit = \"{commit}\"\n") } else { String::new() }
            ));
        }
        text.push_str("[[source]]\nname = \"upstream-only\"\nkind = \"tarball\"\nupstream = \"https://example.com/x.tar.gz\"\nhash = \"sha256-Q6SJed0K6eIrqQ9mNAD4RGx+YCJvnI5E+0KGp5fBtTU=\"\n");
        fs::write(&manifest, text).unwrap();
    };
    write_manifest(true);

    // With networking disabled: it never needs the network.
    let out = verify(&manifest, root, true);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{table}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        table.lines().filter(|l| l.contains(" ok ")).count(),
        2,
        "{table}"
    );
    assert!(
        table.contains("unmirrored") && table.contains("2 verified, 0 failed, 1 unmirrored"),
        "{table}"
    );

    // A rewritten tag is caught: as a moved tag when the commit was pinned…
    git(&mirror, &["tag", "-f", "v1", &pins[1].1]);
    let out = verify(&manifest, root, true);
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{table}");
    assert!(
        table.contains("moved") && table.contains("tag v1 has moved"),
        "{table}"
    );
    // …and as a hash mismatch, printed as Nix prints it, when it was not.
    write_manifest(false);
    let table = String::from_utf8_lossy(&verify(&manifest, root, false).stdout).into_owned();
    assert!(
        table.contains("mismatch")
            && table.contains(&format!("specified: {}", pins[0].0))
            && table.contains(&format!("got:    {}", pins[1].0)),
        "{table}"
    );
    git(&mirror, &["tag", "-f", "v1", &pins[0].1]);

    // A corrupted object is caught with a clear message.
    let readme = git(&mirror, &["rev-parse", "v2:README"]);
    let packed = sh(&format!(
        "git --git-dir={} cat-file -p v2:README",
        mirror.display()
    ));
    assert_eq!(packed, "v2\n");
    // Unpack the objects so one of them can be damaged on disk.
    let loose = root.join("loose.git");
    run(Command::new("git")
        .args(["init", "-q", "--bare"])
        .arg(&loose));
    sh(&format!(
        "cat {}/objects/pack/*.pack | git --git-dir={} unpack-objects -q",
        mirror.display(),
        loose.display()
    ));
    sh(&format!("cp -r {}/refs {}/packed-refs {}/ 2>/dev/null || true; git --git-dir={} update-ref refs/tags/v2 {}", mirror.display(), mirror.display(), loose.display(), loose.display(), pins[1].1));
    fs::remove_dir_all(&mirror).unwrap();
    fs::rename(&loose, &mirror).unwrap();
    let object = mirror.join("objects").join(&readme[..2]).join(&readme[2..]);
    fs::set_permissions(&object, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&object, b"this is not a zlib stream").unwrap();
    let out = verify(&manifest, root, false);
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{table}");
    assert!(
        table.contains("test-v2")
            && table.contains("missing")
            && table.contains(&readme)
            && (table.contains("corrupt") || table.contains("could not be read")),
        "{table}"
    );
}

#[test]
fn tarballs_files_fixed_outputs_and_lock_files() {
    let dir = tempdir();
    let root = dir.path();
    // A tarball with one top-level directory (fetchzip strips it) and a file.
    let tree = root.join("src/pkg-1.0");
    fs::create_dir_all(tree.join("lib")).unwrap();
    fs::write(tree.join("lib/a.py"), "print(1)\n").unwrap();
    fs::create_dir_all(root.join("mirror")).unwrap();
    sh(&format!(
        "tar -C {} -czf {}/pkg-1.0.tar.gz pkg-1.0",
        root.join("src").display(),
        root.join("mirror").display()
    ));
    fs::write(root.join("mirror/tool.bin"), "binary\n").unwrap();
    let tree_hash = nix_hash("path", "--sri", &tree);
    let file_hash = nix_hash("file", "--sri", &root.join("mirror/tool.bin"));

    // A fixed-output path built by Nix, and one never built here.
    let deps = nix_build(&repo().join("tests/fixtures/fod.nix"), &["deps"], &[]);
    assert!(deps[0].ends_with("-fixture-deps-1.0"));

    // Lock files inside a git source, and a cache holding their artifacts.
    let work = root.join("work");
    fs::create_dir_all(work.join("web")).unwrap();
    let cache = root.join("cache");
    fs::create_dir_all(cache.join("pypi")).unwrap();
    fs::create_dir_all(cache.join("npm/left-pad/-")).unwrap();
    fs::write(
        cache.join("pypi/six-1.16.0-py2.py3-none-any.whl"),
        "wheel bytes",
    )
    .unwrap();
    fs::write(cache.join("npm/left-pad/-/left-pad-1.3.0.tgz"), "tgz bytes").unwrap();
    let sha256 = sh(&format!(
        "sha256sum {} | cut -d' ' -f1",
        cache.join("pypi/six-1.16.0-py2.py3-none-any.whl").display()
    ));
    let sha512 = sh(&format!(
        "openssl dgst -sha512 -binary {} | base64 -w0",
        cache.join("npm/left-pad/-/left-pad-1.3.0.tgz").display()
    ));
    fs::write(work.join("uv.lock"), format!(
        "version = 1\n[[package]]\nname = \"six\"\nversion = \"1.16.0\"\nwheels = [{{ url = \"https://files.pythonhosted.org/packages/d9/5a/six-1.16.0-py2.py3-none-any.whl\", hash = \"sha256:{}\" }}]\n[[package]]\nname = \"notcached\"\nversion = \"1\"\nsdist = {{ url = \"https://example/notcached-1.tar.gz\", hash = \"sha256:{}\" }}\n",
        sha256.trim(), "0".repeat(64)
    )).unwrap();
    fs::write(work.join("web/package-lock.json"), json!({"lockfileVersion": 3, "packages": {
        "": {"name": "web"},
        "node_modules/left-pad": {"resolved": "https://registry.npmjs.org/left-pad/-/left-pad-1.3.0.tgz", "integrity": format!("sha512-{}", sha512.trim())}
    }}).to_string()).unwrap();
    // A Go module in a GOMODCACHE layout (upper case escaped as `!x`), pinned by go.sum.
    let module = cache.join("gomod/example.com/!foo@v1.0.0");
    fs::create_dir_all(module.join("sub")).unwrap();
    fs::write(module.join("go.mod"), "module example.com/Foo\n").unwrap();
    fs::write(module.join("sub/foo.go"), "package sub\n").unwrap();
    let download = cache.join("gomod/cache/download/example.com/!foo/@v");
    fs::create_dir_all(&download).unwrap();
    fs::write(download.join("v1.0.0.mod"), "module example.com/Foo\n").unwrap();
    let h1 = |lines: &str| {
        format!(
            "h1:{}",
            sh(&format!(
                "printf '{lines}' | openssl dgst -sha256 -binary | base64 -w0"
            ))
            .trim()
        )
    };
    let file_sha = |p: &Path| {
        sh(&format!("sha256sum {} | cut -c1-64", p.display()))
            .trim()
            .to_string()
    };
    let tree_h1 = h1(&format!(
        "%s  example.com/Foo@v1.0.0/go.mod\\n%s  example.com/Foo@v1.0.0/sub/foo.go\\n' '{}' '{}",
        file_sha(&module.join("go.mod")),
        file_sha(&module.join("sub/foo.go"))
    ));
    let mod_h1 = h1(&format!(
        "%s  go.mod\\n' '{}",
        file_sha(&download.join("v1.0.0.mod"))
    ));
    fs::write(
        work.join("go.sum"),
        format!("example.com/Foo v1.0.0 {tree_h1}\nexample.com/Foo v1.0.0/go.mod {mod_h1}\n"),
    )
    .unwrap();
    git(&work, &["init", "-q", "-b", "main"]);
    git(
        &work,
        &["-c", "user.email=t@e", "-c", "user.name=t", "add", "-A"],
    );
    git(
        &work,
        &[
            "-c",
            "user.email=t@e",
            "-c",
            "user.name=t",
            "commit",
            "-q",
            "-m",
            "locks",
        ],
    );
    git(&work, &["tag", "v1"]);
    run(Command::new("git")
        .args(["clone", "-q", "--bare"])
        .arg(&work)
        .arg(root.join("app.git")));
    fs::create_dir_all(root.join("export")).unwrap();
    sh(&format!(
        "git -C {} archive v1 | tar -x -C {}",
        work.display(),
        root.join("export").display()
    ));
    let app_hash = nix_hash("path", "--sri", &root.join("export"));

    let manifest = root.join("mixed.toml");
    fs::write(
        &manifest,
        format!(
            r#"
[[source]]
name = "pkg"
kind = "tarball"
unpack = true
mirror = "https://forge.example/mirror/pkg-1.0.tar.gz"
hash = "{tree_hash}"

[[source]]
name = "tool"
kind = "file"
mirror = "https://forge.example/mirror/tool.bin"
hash = "{file_hash}"

[[source]]
name = "app"
kind = "git"
mirror = "https://forge.example/app.git"
rev = "v1"
hash = "{app_hash}"

[[fod]]
name = "fixture-deps-1.0"
outputHash = "sha256-2VD35R+ze2oS2wod5MbPe9ckn9zHIiCLCb/QdhzXR94="

[[fod]]
name = "never-built-deps-1.0"
outputHash = "sha256-2VD35R+ze2oS2wod5MbPe9ckn9zHIiCLCb/QdhzXR94="

[[lockfile]]
source = "app"
path = "uv.lock"
format = "uv"
cache = "cache/pypi"

[[lockfile]]
source = "app"
path = "web/package-lock.json"
format = "npm"
cache = "cache/npm"

[[lockfile]]
source = "app"
path = "go.sum"
format = "gosum"
cache = "cache/gomod"
"#
        ),
    )
    .unwrap();
    let out = verify(&manifest, root, true);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{table}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The built fixed output is hashed and matches; it is not merely listed.
    let fod_row = table
        .lines()
        .find(|l| l.contains("fixture-deps-1.0") && !l.contains("never-built"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        fod_row.contains(" ok ") && !fod_row.contains("absent"),
        "{fod_row}"
    );
    assert!(
        table.contains("absent") && table.contains("never-built-deps-1.0"),
        "{table}"
    );
    assert!(
        table.contains("2 pins: 1 checked, 0 wrong, 1 not in the cache"),
        "{table}"
    );
    assert!(
        table.contains("1 pins: 1 checked, 0 wrong, 0 not in the cache"),
        "{table}"
    );
    assert!(
        table.contains("2 pins: 2 checked, 0 wrong, 0 not in the cache"),
        "go.sum: {table}"
    );

    // Tampering with the tarball, the file and a cached artifact is caught.
    fs::write(tree.join("lib/a.py"), "print('evil')\n").unwrap();
    sh(&format!(
        "tar -C {} -czf {}/pkg-1.0.tar.gz pkg-1.0",
        root.join("src").display(),
        root.join("mirror").display()
    ));
    fs::write(root.join("mirror/tool.bin"), "tampered\n").unwrap();
    fs::write(cache.join("npm/left-pad/-/left-pad-1.3.0.tgz"), "evil").unwrap();
    fs::write(module.join("sub/foo.go"), "package evil\n").unwrap();
    let out = verify(&manifest, root, true);
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{table}");
    assert!(
        table.contains(&format!("specified: {file_hash}")),
        "{table}"
    );
    assert!(
        table.contains(&format!("specified: {tree_hash}")),
        "the tampered tarball: {table}"
    );
    assert!(
        table.contains("left-pad") && table.contains("specified: sha512-"),
        "{table}"
    );
    assert!(table.contains(&format!("specified: {tree_h1}")), "{table}");
    let json: serde_json::Value = serde_json::from_slice(
        &nixoci()
            .args(["verify", "--json", "-q"])
            .arg(&manifest)
            .arg("--mirror-root")
            .arg(root)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let tool = json
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "tool")
        .unwrap();
    assert_eq!(tool["status"], "mismatch");
    assert_eq!(tool["expected"], file_hash.as_str());
}

#[test]
fn build_refuses_a_store_path_modified_after_registration() {
    let salt = format!(
        "tamper-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let paths = nix_build(
        &repo().join("tests/fixtures/closure.nix"),
        &["lib"],
        &["--argstr", "salt", &salt],
    );
    let lib = &paths[0];
    let file = Path::new(lib).join("lib/libfixture.so");
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&file, "tampered\n").unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o444)).unwrap();
    let dir = tempdir();
    let out = dir.path().join("image");
    let err = fails(nixoci().arg("build").arg(lib).arg("-o").arg(&out));
    let _ = Command::new("nix-store").arg("--delete").arg(lib).output();
    assert!(
        err.contains(&format!(
            "store path {lib} does not match its registered NAR hash"
        )),
        "{err}"
    );
    assert!(!out.exists());
}

#[test]
fn replace_refs_cannot_hide_a_moved_tag() {
    let dir = tempdir();
    let root = dir.path();
    let (mirror, pins) = make_mirror(root);
    let manifest = root.join("test.toml");
    fs::write(
        &manifest,
        format!(
            "[[source]]\nname = \"test\"\nkind = \"git\"\nmirror = \"https://forge.example/mirrors/test.git\"\nrev = \"v2\"\nhash = \"{}\"\n",
            pins[1].0
        ),
    )
    .unwrap();
    assert!(verify(&manifest, root, false).status.success());
    // An evil commit: the tag moves to it, and a replace ref makes plain git
    // commands show the good commit in its place. `git clone` checks out the
    // evil tree (replace refs are not fetched), so verify must see it too.
    let work = root.join("work");
    fs::write(work.join("README"), "evil\n").unwrap();
    git(&work, &["commit", "-q", "-am", "evil"]);
    let evil = git(&work, &["rev-parse", "HEAD"]);
    run(Command::new("git")
        .arg("--git-dir")
        .arg(&mirror)
        .args(["fetch", "-q"])
        .arg(&work)
        .arg("HEAD:refs/heads/evil"));
    git(&mirror, &["tag", "-f", "v2", &evil]);
    git(&mirror, &["replace", &evil, &pins[1].1]);
    let shown = git(&mirror, &["cat-file", "-p", "v2:README"]);
    assert_eq!(
        shown, "v2",
        "the replace ref hides the evil tree from plain git"
    );
    let out = verify(&manifest, root, false);
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{table}");
    assert!(table.contains("mismatch"), "{table}");
}

#[test]
fn pins_cannot_read_outside_the_mirror_root() {
    let dir = tempdir();
    let root = dir.path().join("root");
    fs::create_dir_all(&root).unwrap();
    let secret = dir.path().join("secret.tar.gz");
    fs::write(&secret, "not for verify's eyes").unwrap();
    // A symlink inside the root that points out of it.
    symlink(&secret, root.join("escape.tar.gz")).unwrap();
    let manifest = dir.path().join("evil.toml");
    let mut text = String::new();
    for (name, extra) in [
        ("dotdot", "path = \"../secret.tar.gz\"".to_string()),
        ("absolute", format!("path = \"{}\"", secret.display())),
        (
            "url",
            "mirror = \"https://forge.example/../secret.tar.gz\"".to_string(),
        ),
        ("link", "path = \"escape.tar.gz\"".to_string()),
    ] {
        text.push_str(&format!(
            "[[source]]\nname = \"{name}\"\nkind = \"file\"\n{extra}\n{}hash = \"sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\"\n",
            if extra.starts_with("mirror") { "" } else { "mirror = \"https://forge.example/x\"\n" }
        ));
    }
    fs::write(&manifest, text).unwrap();
    let secret_hash = nix_hash("file", "--sri", &secret);
    let out = verify(&manifest, &root, false);
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{table}");
    assert_eq!(table.matches("missing").count(), 4, "{table}");
    assert!(
        !table.contains(&secret_hash),
        "the outside file was hashed:\n{table}"
    );
}

#[test]
fn a_huge_symlink_blob_costs_no_memory() {
    let dir = tempdir();
    let root = dir.path();
    let work = root.join("work");
    fs::create_dir_all(&work).unwrap();
    git(&work, &["init", "-q", "-b", "main"]);
    // 200 MiB of zeros compress to about 200 KiB in the mirror.
    let big = root.join("zeros");
    fs::File::create(&big).unwrap().set_len(200 << 20).unwrap();
    let blob = git(&work, &["hash-object", "-w", big.to_str().unwrap()]);
    git(
        &work,
        &[
            "update-index",
            "--add",
            "--cacheinfo",
            &format!("120000,{blob},link"),
        ],
    );
    let tree = git(&work, &["write-tree"]);
    let commit = stdout(Command::new("git").arg("-C").arg(&work).args([
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@example.com",
        "commit-tree",
        &tree,
        "-m",
        "huge link",
    ]));
    git(&work, &["tag", "v1", commit.trim()]);
    fs::create_dir_all(root.join("mirrors")).unwrap();
    run(Command::new("git")
        .args(["clone", "-q", "--bare"])
        .arg(&work)
        .arg(root.join("mirrors/huge.git")));
    let manifest = root.join("huge.toml");
    fs::write(
        &manifest,
        "[[source]]\nname = \"huge\"\nkind = \"git\"\nmirror = \"https://forge.example/mirrors/huge.git\"\nrev = \"v1\"\nhash = \"sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\"\n",
    )
    .unwrap();
    let (out, rss_kib) = run_measured(
        nixoci()
            .args(["verify", "-q"])
            .arg(&manifest)
            .arg("--mirror-root")
            .arg(root),
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{table}{out:?}");
    assert!(table.contains("no checkout can make it"), "{table}");
    assert!(
        rss_kib < 64 << 10,
        "verify used {rss_kib} KiB for a 200 MiB symlink blob"
    );
}

#[test]
fn flat_tarballs_and_trees_with_submodules_or_filters_are_reported() {
    let dir = tempdir();
    let root = dir.path();
    // unpack = false: the tarball's own bytes are pinned (fetchurl's flat hash).
    fs::create_dir_all(root.join("mirror")).unwrap();
    let tarball = root.join("mirror/pkg-2.0.tar.gz");
    sh(&format!(
        "mkdir -p {0}/src/pkg && echo one > {0}/src/pkg/a && tar -C {0}/src -czf {1} pkg",
        root.display(),
        tarball.display()
    ));
    let flat = nix_hash("file", "--sri", &tarball);
    // A repository whose tree has a submodule (a gitlink) and a checkout filter.
    let work = root.join("work");
    fs::create_dir_all(&work).unwrap();
    fs::write(work.join(".gitattributes"), "*.txt eol=crlf\n").unwrap();
    fs::write(work.join("a.txt"), "text\n").unwrap();
    git(&work, &["init", "-q", "-b", "main"]);
    let commit_args = ["-c", "user.email=t@e", "-c", "user.name=t"];
    git(&work, &[&commit_args[..], &["add", "-A"]].concat());
    git(
        &work,
        &[
            "update-index",
            "--add",
            "--cacheinfo",
            "160000,1111111111111111111111111111111111111111,vendor/lib",
        ],
    );
    git(
        &work,
        &[&commit_args[..], &["commit", "-q", "-m", "sub"]].concat(),
    );
    git(&work, &["tag", "v1"]);
    run(Command::new("git")
        .args(["clone", "-q", "--bare"])
        .arg(&work)
        .arg(root.join("app.git")));
    // The tree as stored (git archive would apply the eol filter), with an
    // empty directory for the submodule, as a checkout without it leaves.
    let export = root.join("export");
    fs::create_dir_all(&export).unwrap();
    fs::copy(work.join(".gitattributes"), export.join(".gitattributes")).unwrap();
    fs::copy(work.join("a.txt"), export.join("a.txt")).unwrap();
    fs::create_dir_all(export.join("vendor/lib")).unwrap();
    let tree = nix_hash("path", "--sri", &export);
    let manifest = root.join("flags.toml");
    let write = |flat: &str| {
        fs::write(
            &manifest,
            format!(
                "[[source]]\nname = \"pkg\"\nkind = \"tarball\"\nunpack = false\nmirror = \"https://forge.example/mirror/pkg-2.0.tar.gz\"\nhash = \"{flat}\"\n\n\
                 [[source]]\nname = \"app\"\nkind = \"git\"\nmirror = \"https://forge.example/app.git\"\nrev = \"v1\"\nhash = \"{tree}\"\n"
            ),
        )
        .unwrap();
    };
    write(&flat);
    let out = verify(&manifest, root, true);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{table}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(row_of(&table, "pkg").contains(" ok "), "{table}");
    let app = row_of(&table, "app");
    assert!(app.contains(" flagged "), "{table}");
    assert!(
        app.contains("submodules not included (fetchgit fetches them): vendor/lib"),
        "{app}"
    );
    assert!(
        app.contains(".gitattributes checkout filters may change files: .gitattributes"),
        "{app}"
    );

    // The flat pin is of the bytes: a repacked tarball with the same files fails.
    sh(&format!(
        "tar -C {0}/src --mtime=@5 -czf {1} pkg",
        root.display(),
        tarball.display()
    ));
    let out = verify(&manifest, root, true);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{table}");
    assert!(row_of(&table, "pkg").contains("mismatch"), "{table}");
}

fn row_of(table: &str, name: &str) -> String {
    table
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(name))
        .unwrap_or_else(|| panic!("no {name} row: {table}"))
        .to_string()
}

#[test]
fn deep_git_trees_verify_without_recursion_and_impossible_paths_are_refused() {
    let dir = tempdir();
    let root = dir.path();
    // A commit whose tree nests `levels` directories named `dir`, with a
    // file at the bottom, made with git's plumbing.
    let make = |name: &str, levels: usize, dir: &str| {
        let repo = root.join(format!("{name}.git"));
        run(Command::new("git")
            .args(["init", "-q", "--bare"])
            .arg(&repo));
        sh(&format!(
            "cd {} && t=$(printf '100644 blob %s\\tf\\n' $(echo bottom | git hash-object -w --stdin) | git mktree) && \
             for i in $(seq {levels}); do t=$(printf '040000 tree %s\\t{dir}\\n' $t | git mktree); done && \
             c=$(GIT_AUTHOR_DATE=2026-01-01T00:00:00Z GIT_COMMITTER_DATE=2026-01-01T00:00:00Z git -c user.email=t@e -c user.name=t commit-tree -m deep $t) && \
             git tag v1 $c",
            repo.display()
        ));
        repo
    };
    let manifest = root.join("deep.toml");
    let write = |name: &str, hash: &str| {
        fs::write(
            &manifest,
            format!("[[source]]\nname = \"{name}\"\nkind = \"git\"\nmirror = \"https://forge.example/{name}.git\"\nrev = \"v1\"\nhash = \"{hash}\"\n"),
        )
        .unwrap();
    };
    // 1,500 levels: a 3,001-byte path, which a checkout can make.
    let deep = make("deep", 1500, "d");
    let export = root.join("export");
    fs::create_dir_all(&export).unwrap();
    sh(&format!(
        "git --git-dir={} archive v1 | tar -x -C {}",
        deep.display(),
        export.display()
    ));
    write("deep", &nix_hash("path", "--sri", &export));
    let out = verify(&manifest, root, true);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // 17 levels of 250-byte names: a 4,269-byte path, which no checkout can make.
    make("deeper", 17, &"d".repeat(250));
    write(
        "deeper",
        "sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    );
    let out = verify(&manifest, root, true);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("no checkout can make it"), "{text}");
}

/// `verify --drv --json` of `drv` with the pins in `manifest`: exit code,
/// report and stderr.
fn verify_graph(drv: &str, manifest: &Path, extra: &[&str]) -> (Option<i32>, Value, String) {
    let out = nixoci()
        .args(["verify", "--drv", "--json", drv])
        .arg(manifest)
        .args(extra)
        .output()
        .unwrap();
    let report = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (
        out.status.code(),
        report,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The class and detail of the input source named `name`.
fn source_class(report: &Value, name: &str) -> (String, String) {
    let source = report["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no source {name}: {report:#}"));
    (
        source["class"].as_str().unwrap().to_string(),
        source["detail"].as_str().unwrap().to_string(),
    )
}

#[test]
fn evaluation_fetches_are_classified_and_unpinned_ones_fail() {
    let dir = tempdir();
    let root = dir.path();
    let repo_dir = root.join("repo");
    fs::create_dir_all(repo_dir.join("lib")).unwrap();
    fs::write(repo_dir.join("build.sh"), "echo build\n").unwrap();
    fs::write(repo_dir.join("lib/a.txt"), "a\n").unwrap();
    fs::write(repo_dir.join("lib/secret"), "left out by the filter\n").unwrap();
    // Downloads outside the repository, fetched during evaluation.
    let downloads = root.join("downloads");
    fs::create_dir_all(downloads.join("pkg-1.0")).unwrap();
    fs::write(downloads.join("evil.txt"), "fetched at evaluation\n").unwrap();
    fs::write(downloads.join("pkg-1.0/x.py"), "print(1)\n").unwrap();
    sh(&format!(
        "tar -C {0} -czf {0}/pkg-1.0.tar.gz pkg-1.0",
        downloads.display()
    ));
    // A flake input in the store: `<store>/<hash>-source`, locked in flake.lock.
    let input = root.join("input/source");
    fs::create_dir_all(&input).unwrap();
    fs::write(input.join("setup.sh"), "echo setup\n").unwrap();
    let locked = stdout(Command::new("nix-store").arg("--add").arg(&input));
    let locked = locked.trim();
    let nar_hash = nix_hash("path", "--sri", Path::new(locked));
    fs::write(
        repo_dir.join("flake.lock"),
        json!({"nodes": {
            "nixpkgs": {"locked": {"narHash": nar_hash, "type": "path", "path": "/x"}},
            "root": {"inputs": {"nixpkgs": "nixpkgs"}}
        }, "root": "root", "version": 7})
        .to_string(),
    )
    .unwrap();
    fs::write(
        repo_dir.join("default.nix"),
        r#"{ downloads, locked }:
derivation {
  name = "eval-fetches";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" "echo > $out" ];
  script = ./build.sh;
  lib = builtins.path { path = ./lib; name = "lib"; filter = p: t: baseNameOf p != "secret"; };
  note = builtins.toFile "note" "built with ${./build.sh}";
  setup = locked + "/setup.sh";
  file = builtins.fetchurl "file://${downloads}/evil.txt";
  tarball = builtins.fetchTarball "file://${downloads}/pkg-1.0.tar.gz";
}
"#,
    )
    .unwrap();
    let drv = stdout(
        Command::new("nix-instantiate")
            .arg(repo_dir.join("default.nix"))
            .args(["--argstr", "downloads"])
            .arg(&downloads)
            .args(["--arg", "locked", locked]),
    );
    let drv = drv.trim();
    let repo_arg = ["--repo", repo_dir.to_str().unwrap()];
    let no_pins = root.join("none.toml");
    fs::write(&no_pins, "").unwrap();

    // Unpinned evaluation fetches fail; the repository's files (a filtered
    // copy too), the locked input's file and the toFile text pass.
    let (code, report, err) = verify_graph(drv, &no_pins, &repo_arg);
    assert_eq!(code, Some(1), "{report:#} {err}");
    assert_eq!(report["sources"].as_array().unwrap().len(), 6, "{report:#}");
    let (class, detail) = source_class(&report, "build.sh");
    assert_eq!(class, "tree");
    assert!(detail.ends_with(": build.sh"), "{detail}");
    assert_eq!(source_class(&report, "lib").0, "tree");
    let (class, detail) = source_class(&report, "setup.sh");
    assert_eq!(
        (class.as_str(), detail.as_str()),
        ("tree", "flake.lock input nixpkgs: setup.sh")
    );
    assert_eq!(source_class(&report, "note").0, "text");
    assert_eq!(source_class(&report, "evil.txt").0, "unpinned");
    assert_eq!(source_class(&report, "source").0, "unpinned");
    assert!(
        err.contains("2 input source(s) fetched during evaluation and not pinned"),
        "{err}"
    );
    for source in report["sources"].as_array().unwrap() {
        let path = Path::new(source["path"].as_str().unwrap());
        assert_eq!(source["nar_hash"], nix_hash("path", "--sri", path));
    }

    // Pinned by a manifest (the flat hash of the file, the NAR hash of the
    // unpacked tarball), they pass.
    let tarball_store = report["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "source")
        .unwrap()["nar_hash"]
        .as_str()
        .unwrap()
        .to_string();
    let file_hash = nix_hash("file", "--sri", &downloads.join("evil.txt"));
    let pins = root.join("pins.toml");
    fs::write(
        &pins,
        format!(
            "[[source]]\nname = \"evil\"\nkind = \"file\"\nhash = \"{file_hash}\"\n\n[[source]]\nname = \"pkg\"\nkind = \"tarball\"\nunpack = true\nhash = \"{tarball_store}\"\n"
        ),
    )
    .unwrap();
    let (code, report, err) = verify_graph(drv, &pins, &repo_arg);
    assert_eq!(code, Some(0), "{report:#} {err}");
    assert_eq!(
        source_class(&report, "evil.txt"),
        ("pinned".to_string(), "pins:evil".to_string())
    );
    assert_eq!(source_class(&report, "source").0, "pinned");

    // A SHA-1 pin proves nothing and is refused.
    let sha1 = root.join("sha1.toml");
    fs::write(
        &sha1,
        "[[source]]\nname = \"weak\"\nkind = \"file\"\nhash = \"sha1-2jmj7l5rSw0yVb/vlWAYkK/YBwk=\"\n",
    )
    .unwrap();
    let (code, _, err) = verify_graph(drv, &sha1, &repo_arg);
    assert_eq!(code, Some(1));
    assert!(err.contains("a SHA-1 hash cannot pin content"), "{err}");

    // Once the repository no longer holds what was copied, the copy is an
    // unknown source; a symlink to the same bytes is not the file either
    // (trees are compared without following symlinks).
    // The same size, one byte changed.
    fs::write(repo_dir.join("build.sh"), "echo bu1ld\n").unwrap();
    fs::remove_file(repo_dir.join("lib/a.txt")).unwrap();
    fs::write(root.join("a.txt"), "a\n").unwrap();
    symlink(root.join("a.txt"), repo_dir.join("lib/a.txt")).unwrap();
    let (code, report, _) = verify_graph(drv, &pins, &repo_arg);
    assert_eq!(code, Some(1));
    assert_eq!(source_class(&report, "build.sh").0, "unpinned");
    assert_eq!(source_class(&report, "lib").0, "unpinned");
    // The toFile text names the old build.sh copy, which is still what it is.
    assert_eq!(source_class(&report, "note").0, "text");

    // Without the lock file the locked input's file is unknown too.
    fs::remove_file(repo_dir.join("flake.lock")).unwrap();
    let (_, report, _) = verify_graph(drv, &pins, &repo_arg);
    assert_eq!(source_class(&report, "setup.sh").0, "unpinned");
}

#[test]
fn fixed_outputs_are_classified_by_what_their_fetcher_does() {
    let dir = tempdir();
    let root = dir.path();
    let hash = |seed: &str| {
        sh(&format!(
            "printf %s {seed} | sha256sum | cut -d' ' -f1 | xxd -r -p | base64 -w0"
        ))
    };
    let (both, no_url, network) = (hash("both"), hash("no-url"), hash("network"));
    let (flat_tarball, tree) = (hash("flat-tarball"), hash("tree"));
    fs::write(
        root.join("graph.nix"),
        format!(
            r#"let
  fetch = name: attrs: derivation ({{
    inherit name;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" "exit 1" ];
    outputHashMode = "flat";
    outputHashAlgo = "sha256";
  }} // attrs);
in derivation {{
  name = "root";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" "exit 1" ];
  inputs = [
    (fetch "mirror-then-upstream" {{
      urls = [ "https://mirror.example/m/pkg.tar.gz" "https://upstream.example/pkg.tar.gz" ];
      outputHash = "sha256-{both}";
    }})
    (fetch "upstream-without-url" {{ outputHash = "sha256-{no_url}"; }})
    (fetch "network-build" {{ outputHashMode = "recursive"; outputHash = "sha256-{network}"; }})
    (fetch "mode-differs" {{ outputHashMode = "recursive"; outputHash = "sha256-{no_url}"; }})
    (fetch "lookalike-host" {{
      urls = [ "https://mirror.example/m/pkg.tar.gz.evil.net/x" ];
      outputHash = "sha256-{both}";
    }})
    (fetch "mirrored-twice" {{
      url = "https://mirror.example/m/pkg.tar.gz";
      urls = [ "https://mirror.example/m/pkg.tar.gz" ];
      outputHash = "sha256-{both}";
    }})
    (fetch "url-only" {{ url = "https://mirror.example/m/pkg.tar.gz"; rev = "v1"; outputHash = "sha256-{both}"; }})
    (fetch "from-another-mirror" {{
      urls = [ "https://mirror.example/m/flat.tar.gz" ];
      outputHash = "sha256-{both}";
    }})
    (fetch "flat-tarball" {{
      urls = [ "https://mirror.example/m/flat.tar.gz" ];
      outputHash = "sha256-{flat_tarball}";
    }})
    (fetch "unpacked-tarball" {{
      urls = [ "https://mirror.example/m/tree.tar.gz" ];
      outputHashMode = "recursive";
      outputHash = "sha256-{tree}";
    }})
    (fetch "sha1-from-mirror" {{
      urls = [ "https://mirror.example/m/pkg.tar.gz" ];
      outputHashAlgo = "sha1";
      outputHash = "da39a3ee5e6b4b0d3255bfef95601890afd80709";
    }})
  ];
}}
"#
        ),
    )
    .unwrap();
    let drv = stdout(Command::new("nix-instantiate").arg(root.join("graph.nix")));
    let pins = root.join("pins.toml");
    fs::write(
        &pins,
        format!(
            r#"[[source]]
name = "pkg"
kind = "file"
mirror = "https://mirror.example/m/pkg.tar.gz"
hash = "sha256-{both}"

[[source]]
name = "no-url"
kind = "file"
hash = "sha256-{no_url}"

[[fod]]
name = "network-build"
outputHash = "sha256-{network}"

# fetchurl of a tarball pins its bytes; fetchzip, the unpacked tree's NAR.
[[source]]
name = "flat"
kind = "tarball"
unpack = false
mirror = "https://mirror.example/m/flat.tar.gz"
hash = "sha256-{flat_tarball}"

[[source]]
name = "tree"
kind = "tarball"
unpack = true
mirror = "https://mirror.example/m/tree.tar.gz"
hash = "sha256-{tree}"
"#
        ),
    )
    .unwrap();
    let class_of = |report: &Value, name: &str| -> (String, String) {
        let fetch = report["fetches"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("no fetch {name}: {report:#}"));
        (
            fetch["class"].as_str().unwrap().to_string(),
            fetch["detail"].as_str().unwrap().to_string(),
        )
    };
    let (code, report, err) = verify_graph(drv.trim(), &pins, &[]);
    assert_eq!(code, Some(1), "{err}");
    // A mirror with an upstream fallback is not "mirrored": the fallback
    // may be what the builder reads.
    let (class, detail) = class_of(&report, "mirror-then-upstream");
    assert_eq!(class, "pinned-upstream");
    assert!(
        detail.ends_with("may also fetch from https://upstream.example/pkg.tar.gz"),
        "{detail}"
    );
    // A fetch without URLs is a network build only where a [[fod]] names it.
    assert_eq!(
        class_of(&report, "upstream-without-url").0,
        "pinned-upstream"
    );
    assert_eq!(class_of(&report, "network-build").0, "network-build");
    assert_eq!(class_of(&report, "flat-tarball").0, "mirrored");
    // fetchgit and <nix/fetchurl.nix> name one `url`.
    assert_eq!(class_of(&report, "url-only").0, "mirrored");
    let url_only = report["fetches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "url-only")
        .unwrap();
    assert_eq!(
        url_only["urls"],
        json!(["https://mirror.example/m/pkg.tar.gz"])
    );
    assert_eq!(url_only["rev"], "v1");
    assert_eq!(class_of(&report, "mirrored-twice").0, "mirrored");
    // pkg's bytes from the mirror of another pin: that mirror should not
    // serve them.
    let (class, detail) = class_of(&report, "from-another-mirror");
    assert_eq!(class, "unpinned");
    assert!(
        detail.starts_with("fetched from the mirror of pins:flat, but its hash is not that pin's"),
        "{detail}"
    );
    assert_eq!(class_of(&report, "unpacked-tarball").0, "mirrored");
    // The pin's hash under another mode pins nothing (it is another content).
    assert_eq!(class_of(&report, "mode-differs").0, "unpinned");
    // A URL that only starts like a mirror is not one.
    assert_eq!(class_of(&report, "lookalike-host").0, "pinned-upstream");
    let (class, detail) = class_of(&report, "sha1-from-mirror");
    assert_eq!(class, "unpinned");
    assert!(detail.contains("SHA-1"), "{detail}");
    assert!(
        err.contains("6 fixed-output derivation(s) not proven"),
        "{err}"
    );
    // With --allow-upstream, only the SHA-1 one, the other mode and the
    // other mirror are left.
    let (code, _, err) = verify_graph(drv.trim(), &pins, &["--allow-upstream"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("3 fixed-output derivation(s) not proven"),
        "{err}"
    );
    assert!(err.contains("-sha1-from-mirror.drv"), "{err}");
    // The report for people names each class.
    let out = nixoci()
        .args(["verify", "--drv", drv.trim()])
        .arg(&pins)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for (class, name) in [
        ("mirrored", "flat-tarball"),
        ("pinned upstream", "upstream-without-url"),
        ("network build", "network-build"),
        ("UNPINNED", "mode-differs"),
    ] {
        assert!(
            text.lines().any(|l| l == format!("{class:<16} {name}")),
            "{class} {name}: {text}"
        );
    }
    assert!(
        text.lines().any(|l| l == "11 fixed-output derivations: 4 mirrored, 3 pinned upstream, 1 network builds, 3 unpinned"),
        "{text}"
    );
}

#[test]
fn a_flake_is_evaluated_with_fetches_restricted_to_the_mirrors() {
    let dir = tempdir();
    let root = dir.path();
    let mirror = root.join("mirror");
    fs::create_dir_all(&mirror).unwrap();
    fs::write(mirror.join("x.txt"), "from the mirror\n").unwrap();
    let hash = nix_hash("file", "--sri", &mirror.join("x.txt"));
    let pins = root.join("pins.toml");
    fs::write(
        &pins,
        format!(
            "[[source]]\nname = \"x\"\nkind = \"file\"\nmirror = \"file://{}/\"\nhash = \"{hash}\"\n",
            mirror.display()
        ),
    )
    .unwrap();
    let flake = |url: &str| {
        let flake_dir = root.join("flake");
        fs::create_dir_all(&flake_dir).unwrap();
        fs::write(
            flake_dir.join("flake.nix"),
            format!(
                r#"{{
  outputs = {{ self }}: {{
    image = derivation {{
      name = "image";
      system = "x86_64-linux";
      builder = "/bin/sh";
      args = [ "-c" "exit 1" ];
      src = builtins.fetchurl {{ url = "{url}"; sha256 = "{hash}"; }};
    }};
  }};
}}
"#
            ),
        )
        .unwrap();
        nixoci()
            .current_dir(&flake_dir)
            .args(["verify", "--flake"])
            .arg(format!("path:{}#image", flake_dir.display()))
            .arg(&pins)
            .output()
            .unwrap()
    };

    // A fetch from the mirror is allowed, and pinned.
    let out = flake(&format!("file://{}/x.txt", mirror.display()));
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("pinned fetch     x.txt"), "{report}");

    // Anything else fails the evaluation: Nix never reaches it.
    let out = flake("http://127.0.0.1:9/x.txt");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("access to URI 'http://127.0.0.1:9/x.txt' is forbidden in restricted mode"),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "only reach the mirrors: file://{}/",
            mirror.display()
        )),
        "{err}"
    );
}

/// A tarball pin with `unpack = true` unpacks within the budget that
/// `check` and `push` keep too: a bomb is refused, naming the cap.
#[test]
fn unpacking_a_tarball_pin_is_bounded() {
    let dir = tempdir();
    let root = dir.path();
    fs::create_dir_all(root.join("src/bomb-1.0")).unwrap();
    fs::create_dir_all(root.join("mirror")).unwrap();
    fs::write(root.join("src/bomb-1.0/zeros"), vec![0u8; 5 << 20]).unwrap();
    sh(&format!(
        "tar -C {0}/src -czf {0}/mirror/bomb-1.0.tar.gz bomb-1.0",
        root.display()
    ));
    let tree_hash = nix_hash("path", "--sri", &root.join("src/bomb-1.0"));
    let manifest = root.join("bomb.toml");
    fs::write(
        &manifest,
        format!(
            "[[source]]\nname = \"bomb\"\nkind = \"tarball\"\nunpack = true\nmirror = \"https://forge.example/mirror/bomb-1.0.tar.gz\"\nhash = \"{tree_hash}\"\n"
        ),
    )
    .unwrap();
    let run = |budget: &str| {
        nixoci()
            .args(["verify", "-q"])
            .arg(&manifest)
            .arg("--mirror-root")
            .arg(root)
            .env("NIXOCI_MAX_UNPACK", budget)
            .output()
            .unwrap()
    };
    let within = run("6000000");
    assert!(
        within.status.success(),
        "{}{}",
        String::from_utf8_lossy(&within.stdout),
        String::from_utf8_lossy(&within.stderr)
    );
    let over = run("1000000");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&over.stdout),
        String::from_utf8_lossy(&over.stderr)
    );
    assert!(!over.status.success(), "{text}");
    assert!(
        text.contains("would write more than 1000000 bytes"),
        "{text}"
    );
}

/// A fixed-output path in the store is hashed and compared with its pin:
/// changed content is a mismatch, even though its path still names the pin.
#[test]
fn a_tampered_fixed_output_path_is_caught() {
    let dir = tempdir();
    let store = dir.path().join("store");
    let content = dir.path().join("content");
    fs::create_dir_all(&content).unwrap();
    fs::write(content.join("lib.py"), "print('deps')\n").unwrap();
    let hash = nix_hash("path", "--sri", &content);
    let pin = nixoci::nix::Hash::parse(&hash, None).unwrap();
    let path = nixoci::nix::fixed_output_path(store.to_str().unwrap(), "fake-deps-1.0", &pin, true);
    fs::create_dir_all(&store).unwrap();
    sh(&format!("cp -r {} {path}", content.display()));
    let manifest = dir.path().join("fod.toml");
    fs::write(
        &manifest,
        format!("[[fod]]\nname = \"fake-deps-1.0\"\noutputHash = \"{hash}\"\n"),
    )
    .unwrap();
    let verify = || {
        nixoci()
            .args(["verify", "-q", "--store"])
            .arg(&store)
            .arg(&manifest)
            .output()
            .unwrap()
    };
    let out = verify();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    fs::write(Path::new(&path).join("lib.py"), "print('evil')\n").unwrap();
    let out = verify();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{report}");
    assert!(report.contains("fake-deps-1.0"), "{report}");
}

/// A store path with names that are not UTF-8 is hashed on its own (its
/// archive order differs from NAR's): a change to it is caught all the same.
#[test]
fn a_modified_path_with_non_utf8_names_is_refused() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempdir();
    let store = dir.path().join("store");
    let path = store.join("2123456789abcdfghijklmnpqrsvwxyz-latin1");
    fs::create_dir_all(path.join("share")).unwrap();
    // Byte order puts `\x80` before `é` (0xc3 0xa9); Python's order of
    // the surrogate-escaped names puts it after.
    let name = std::ffi::OsStr::from_bytes(b"\x80.txt");
    fs::write(path.join("share").join(name), "menu\n").unwrap();
    fs::write(path.join("share/é.txt"), "e\n").unwrap();
    let nar = stdout(nixoci().args(["hash", "path"]).arg(&path))
        .trim()
        .to_string();
    assert_eq!(nar, nix_hash("path", "--sri", &path));
    let spec = dir.path().join("spec.json");
    fs::write(
        &spec,
        json!({
            "storeDir": store,
            "graph": [{"path": path, "references": [], "narHash": nar}],
        })
        .to_string(),
    )
    .unwrap();
    let build = |out: &str| {
        nixoci()
            .args(["build", "-q", "--spec"])
            .arg(&spec)
            .arg("-o")
            .arg(dir.path().join(out))
            .output()
            .unwrap()
    };
    let out = build("good");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    fs::write(path.join("share").join(name), "MENU\n").unwrap();
    let out = build("bad");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("does not match its registered NAR hash"),
        "{err}"
    );
}

/// An impure derivation may reach the network with nothing pinning what it
/// gets: it is named as unpinned (not a bad hash). A derivation whose
/// environment holds bytes that are not UTF-8 is read all the same.
#[test]
fn impure_and_non_utf8_derivations_are_classified() {
    let dir = tempdir();
    fs::write(dir.path().join("latin1.bin"), b"caf\xe9\n").unwrap();
    fs::write(
        dir.path().join("graph.nix"),
        r#"derivation {
  name = "root";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" "exit 1" ];
  text = builtins.readFile ./latin1.bin;
  inputs = [ (derivation {
    name = "impure-fetch";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" "exit 1" ];
    __impure = true;
  }) ];
}
"#,
    )
    .unwrap();
    let drv = stdout(
        Command::new("nix-instantiate")
            .args([
                "--extra-experimental-features",
                "impure-derivations ca-derivations",
            ])
            .arg(dir.path().join("graph.nix")),
    );
    let text = fs::read(drv.trim()).unwrap();
    assert!(
        String::from_utf8(text).is_err(),
        "the .drv should hold a non-UTF-8 byte"
    );
    let empty = dir.path().join("none.toml");
    fs::write(&empty, "").unwrap();
    let repo_dir = dir.path().to_str().unwrap();
    let (code, report, err) = verify_graph(drv.trim(), &empty, &["--repo", repo_dir]);
    assert_eq!(code, Some(1), "{err}");
    let fetch = &report["fetches"][0];
    assert_eq!(fetch["name"], "impure-fetch", "{report:#}");
    assert_eq!(fetch["class"], "unpinned");
    assert!(
        fetch["detail"]
            .as_str()
            .unwrap()
            .contains("impure derivation"),
        "{report:#}"
    );
    assert!(
        err.contains("1 fixed-output derivation(s) not proven"),
        "{err}"
    );
}
