//! `nixoci build --cache`: unchanged layers are reused without reading the
//! store, the bytes never depend on the cache, damaged entries are rebuilt,
//! concurrent builds share it, and `nixoci cache prune` keeps it bounded.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::{json, Value};

/// A store of `paths` chained paths of ~`kib` KiB each, with NAR hashes in
/// the graph (as Nix gives them); returns the spec file.
fn store(dir: &Path, paths: usize, kib: usize) -> PathBuf {
    let store = dir.join("store");
    let mut graph = Vec::new();
    let mut previous: Option<String> = None;
    for i in 0..paths {
        let path = store.join(format!("{:0>32}-pkg-{i}", i));
        fs::create_dir_all(path.join("share")).unwrap();
        let text: String = (0..kib * 32)
            .map(|n| format!("pkg {i} line {n:>20}\n"))
            .collect();
        fs::write(path.join("share/data"), text).unwrap();
        let path = path.display().to_string();
        let nar = stdout(nixoci().args(["hash", "path", &path]));
        graph.push(json!({"path": path, "references": previous.iter().collect::<Vec<_>>(), "narHash": nar.trim()}));
        previous = Some(path);
    }
    let spec = dir.join("spec.json");
    fs::write(
        &spec,
        json!({"storeDir": store, "graph": graph, "tag": "1"}).to_string(),
    )
    .unwrap();
    spec
}

fn build(spec: &Path, out: &Path, extra: &[&str]) -> Value {
    summary(&run(nixoci()
        .arg("build")
        .arg("--spec")
        .arg(spec)
        .args(["--json", "-q"])
        .args(extra)
        .arg("-o")
        .arg(out)))
}

fn cache_states(summary: &Value) -> Vec<String> {
    summary["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["cache"].as_str().unwrap_or("none").to_string())
        .collect()
}

#[test]
fn unchanged_layers_are_hits_and_the_bytes_never_depend_on_the_cache() {
    let dir = tempdir();
    let spec = store(dir.path(), 4, 600);
    let cache = dir.path().join("cache");
    let cache_arg = cache.to_str().unwrap();
    for compression in ["gzip", "zstd"] {
        let plain = build(
            &spec,
            &dir.path().join("plain"),
            &["--compression", compression],
        );
        assert_eq!(
            cache_states(&plain),
            ["none"; 5],
            "no cache, no cache field"
        );
        let first = build(
            &spec,
            &dir.path().join("first"),
            &["--compression", compression, "--cache", cache_arg],
        );
        assert_eq!(
            cache_states(&first),
            ["miss", "miss", "miss", "miss", "uncached"]
        );
        for jobs in ["1", "2", "8"] {
            let again = build(
                &spec,
                &dir.path().join(format!("again-{jobs}")),
                &[
                    "--compression",
                    compression,
                    "--cache",
                    cache_arg,
                    "--jobs",
                    jobs,
                ],
            );
            assert_eq!(
                cache_states(&again),
                ["hit", "hit", "hit", "hit", "uncached"]
            );
            assert_eq!(
                again["digest"], plain["digest"],
                "{compression} --jobs {jobs}"
            );
            assert_eq!(layer_digests(&again), layer_digests(&plain));
        }
        // The image from hits is whole: skopeo copies it, checking every blob.
        run(Command::new("skopeo")
            .arg("copy")
            .arg(format!("oci:{}:1", dir.path().join("again-1").display()))
            .arg(format!(
                "oci:{}:1",
                dir.path().join(format!("copy-{compression}")).display()
            )));
    }
    // A hit reads no store path: after a path's content is changed behind
    // Nix's back, the cached build still succeeds (nothing was read), while
    // a build without the cache reads it and refuses it.
    let data = dir
        .path()
        .join("store")
        .join(format!("{:0>32}-pkg-0/share/data", 0));
    fs::write(&data, "changed behind Nix's back\n").unwrap();
    let from_cache = build(&spec, &dir.path().join("no-read"), &["--cache", cache_arg]);
    assert_eq!(&cache_states(&from_cache)[..4], ["hit"; 4]);
    let err = fails(
        nixoci()
            .arg("build")
            .arg("--spec")
            .arg(&spec)
            .args(["-q", "-o"])
            .arg(dir.path().join("x")),
    );
    assert!(
        err.contains("does not match its registered NAR hash"),
        "{err}"
    );
}

#[test]
fn a_damaged_entry_is_rebuilt_not_used() {
    let dir = tempdir();
    let spec = store(dir.path(), 2, 300);
    let cache = dir.path().join("cache");
    let first = build(
        &spec,
        &dir.path().join("a"),
        &["--cache", cache.to_str().unwrap()],
    );
    // Flip one byte in one cached blob.
    let entries: Vec<PathBuf> = fs::read_dir(cache.join("v1"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(entries.len(), 2);
    let blob = entries[0].join("blob");
    let mut bytes = fs::read(&blob).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    fs::remove_file(&blob).unwrap();
    fs::write(&blob, bytes).unwrap();
    let second = build(
        &spec,
        &dir.path().join("b"),
        &["--cache", cache.to_str().unwrap()],
    );
    let mut states = cache_states(&second);
    states.sort();
    assert_eq!(states, ["hit", "miss", "uncached"]);
    assert_eq!(second["digest"], first["digest"]);
    // The output holds good blobs only, and the entry is good again.
    run(Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:1", dir.path().join("b").display()))
        .arg(dir.path().join("unpacked")));
    let third = build(
        &spec,
        &dir.path().join("c"),
        &["--cache", cache.to_str().unwrap()],
    );
    assert_eq!(&cache_states(&third)[..2], ["hit", "hit"]);
}

#[test]
fn concurrent_builds_share_a_cache() {
    let dir = tempdir();
    let spec = store(dir.path(), 6, 400);
    let cache = dir.path().join("cache");
    let children: Vec<_> = (0..2)
        .map(|i| {
            nixoci()
                .arg("build")
                .arg("--spec")
                .arg(&spec)
                .args(["--json", "-q", "-o"])
                .arg(dir.path().join(format!("out-{i}")))
                .env("NIXOCI_CACHE", &cache)
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let summaries: Vec<Value> = children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            assert!(out.status.success());
            serde_json::from_slice(&out.stdout).unwrap()
        })
        .collect();
    assert_eq!(summaries[0]["digest"], summaries[1]["digest"]);
    let after = build(
        &spec,
        &dir.path().join("after"),
        &["--cache", cache.to_str().unwrap()],
    );
    assert_eq!(&cache_states(&after)[..6], ["hit"; 6]);
    assert_eq!(after["digest"], summaries[0]["digest"]);
    let leftovers: Vec<_> = fs::read_dir(cache.join("v1"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn prune_removes_the_least_recently_used_first() {
    let dir = tempdir();
    let old = store(&dir.path().join("old"), 1, 300);
    let new = store(&dir.path().join("new"), 1, 300);
    let cache = dir.path().join("cache");
    let c = cache.to_str().unwrap();
    build(&old, &dir.path().join("a"), &["--cache", c]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    build(&new, &dir.path().join("b"), &["--cache", c]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    // Using the old one makes it the most recent.
    build(&old, &dir.path().join("c"), &["--cache", c]);
    let sizes: Vec<u64> = fs::read_dir(cache.join("v1"))
        .unwrap()
        .map(|e| fs::metadata(e.unwrap().path().join("blob")).unwrap().len())
        .collect();
    let keep = sizes.iter().max().unwrap().to_string();
    let pruned = run(nixoci().args(["cache", "prune", "--cache", c, "--max-size", &keep]));
    assert!(
        String::from_utf8_lossy(&pruned.stderr).starts_with("removed 1 layer(s)"),
        "{pruned:?}"
    );
    let after = build(&old, &dir.path().join("d"), &["--cache", c]);
    assert_eq!(
        cache_states(&after)[0],
        "hit",
        "the recently used entry stays"
    );
    let after = build(&new, &dir.path().join("e"), &["--cache", c]);
    assert_eq!(
        cache_states(&after)[0],
        "miss",
        "the least recently used one went"
    );
    run(nixoci().args(["cache", "prune", "--cache", c, "--max-size", "0"]));
    assert_eq!(fs::read_dir(cache.join("v1")).unwrap().count(), 0);
    let err = fails(nixoci().args(["cache", "prune", "--cache", c, "--max-size", "ten"]));
    assert!(err.contains("not a size"), "{err}");
}

/// Unpacks a built layout with umoci: each store path of the spec's store
/// is in it, with its own bytes.
fn assert_layers_hold_the_store(layout: &Path, store: &Path, scratch: &Path) {
    let bundle = scratch.join("bundle");
    let _ = fs::remove_dir_all(&bundle);
    run(Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:1", layout.display()))
        .arg(&bundle));
    for entry in fs::read_dir(store).unwrap() {
        let path = entry.unwrap().path();
        let inside = bundle
            .join("rootfs")
            .join(path.strip_prefix("/").unwrap())
            .join("share/data");
        assert_eq!(
            fs::read(&inside).unwrap(),
            fs::read(path.join("share/data")).unwrap(),
            "{}",
            inside.display()
        );
    }
}

/// What a writer of the cache could do to its entries, each answered with
/// a rebuild, never a hit: two entries swapped, a blob that is a symlink
/// (to the right bytes, even), a blob replaced by another valid layer, a
/// damaged meta.json, and a blob that another user owns.
#[test]
fn poisoned_cache_entries_are_rebuilt_never_used() {
    let dir = tempdir();
    let spec = store(dir.path(), 2, 300);
    let store_dir = dir.path().join("store");
    let cache = dir.path().join("cache");
    let c = cache.to_str().unwrap();
    let first = build(&spec, &dir.path().join("first"), &["--cache", c]);
    let entries = || -> Vec<PathBuf> {
        let mut e: Vec<PathBuf> = fs::read_dir(cache.join("v1"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        e.sort();
        e
    };
    let [a, b] = &entries()[..] else {
        panic!("{:?}", entries())
    };
    // Each attack, and how many of the two store layers it poisons.
    let attacks: [(&str, usize, &dyn Fn()); 5] = [
        ("two entries swapped", 2, &|| {
            let aside = dir.path().join("aside");
            fs::rename(a, &aside).unwrap();
            fs::rename(b, a).unwrap();
            fs::rename(&aside, b).unwrap();
        }),
        ("a symlinked blob", 1, &|| {
            let elsewhere = dir.path().join("attacker-blob");
            fs::copy(a.join("blob"), &elsewhere).unwrap();
            fs::remove_file(a.join("blob")).unwrap();
            std::os::unix::fs::symlink(&elsewhere, a.join("blob")).unwrap();
        }),
        ("a blob replaced by another layer", 1, &|| {
            fs::remove_file(a.join("blob")).unwrap();
            fs::copy(b.join("blob"), a.join("blob")).unwrap();
        }),
        // Damage the digest check cannot see: the seal does.
        ("meta.json's diff_id changed", 1, &|| {
            let meta_file = a.join("meta.json");
            let mut meta = read_json(&meta_file);
            meta["diff_id"] = json!(format!("sha256:{}", "0".repeat(64)));
            fs::remove_file(&meta_file).unwrap();
            fs::write(&meta_file, meta.to_string()).unwrap();
        }),
        // Its owner could change it in the output after the check.
        ("a blob of another user's", 1, &|| {
            std::os::unix::fs::chown(a.join("blob"), Some(65534), None).unwrap();
        }),
    ];
    for (i, (attack, poisoned, poison)) in attacks.iter().enumerate() {
        poison();
        let out = dir.path().join(format!("after-{i}"));
        let after = build(&spec, &out, &["--cache", c]);
        let states = cache_states(&after);
        let count = |state: &str| states.iter().filter(|s| *s == state).count();
        assert_eq!(
            (count("miss"), count("hit")),
            (*poisoned, 2 - poisoned),
            "{attack}: {states:?}"
        );
        assert_eq!(after["digest"], first["digest"], "{attack}");
        for blob in fs::read_dir(out.join("blobs/sha256")).unwrap() {
            let blob = blob.unwrap();
            assert!(blob.file_type().unwrap().is_file(), "{attack}: {blob:?}");
        }
        assert_layers_hold_the_store(&out, &store_dir, dir.path());
        // Rebuilt, the entries serve hits again.
        let again = build(
            &spec,
            &dir.path().join(format!("again-{i}")),
            &["--cache", c],
        );
        assert_eq!(&cache_states(&again)[..2], ["hit", "hit"], "{attack}");
    }
}

/// A cache that anyone but its user could write is refused, by builds and
/// by prune, naming why: writable by group or others, another user's, or a
/// symlinked `v1/` (which prune would otherwise follow).
#[test]
fn a_cache_others_could_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempdir();
    let spec = store(dir.path(), 1, 10);
    let cache = dir.path().join("cache");
    let c = cache.to_str().unwrap();
    build(&spec, &dir.path().join("a"), &["--cache", c]);
    let refused = |why: &str| {
        let err = fails(
            nixoci()
                .args(["build", "--spec"])
                .arg(&spec)
                .args(["-q", "--cache", c, "-o"])
                .arg(dir.path().join("refused")),
        );
        assert!(err.contains(why), "{why}: {err}");
        let err = fails(nixoci().args(["cache", "prune", "--cache", c, "--max-size", "0"]));
        assert!(err.contains(why), "{why}: {err}");
    };
    let mode = |path: &Path, mode: u32| {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap()
    };
    mode(&cache, 0o777);
    refused("can be written by its group or others (mode 777)");
    mode(&cache, 0o755);
    mode(&cache.join("v1"), 0o775);
    refused("can be written by its group or others (mode 775)");
    mode(&cache.join("v1"), 0o755);
    std::os::unix::fs::chown(&cache, Some(65534), None).unwrap();
    refused("belongs to uid 65534");
    std::os::unix::fs::chown(&cache, Some(0), None).unwrap();
    // A symlinked v1/: prune leaves the directory it points to alone.
    let elsewhere = dir.path().join("elsewhere");
    fs::rename(cache.join("v1"), &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, cache.join("v1")).unwrap();
    refused("is not a directory (a symlink?)");
    assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 1);
}

/// Prune removes what killed builds left half-made (a temporary entry of a
/// process that is gone) but not a live build's, and concurrent prunes of
/// one cache all succeed.
#[test]
fn prune_cleans_up_after_killed_builds_and_runs_concurrently() {
    let dir = tempdir();
    let spec = store(dir.path(), 6, 20);
    let cache = dir.path().join("cache");
    let c = cache.to_str().unwrap();
    build(&spec, &dir.path().join("a"), &["--cache", c]);
    let mut finished = Command::new("true").spawn().unwrap();
    let dead_pid = finished.id();
    finished.wait().unwrap();
    let dead = cache.join(format!("v1/.tmp-{}-{dead_pid}-ThreadId(2)", "f".repeat(64)));
    let live = cache.join(format!(
        "v1/.tmp-{}-{}-ThreadId(2)",
        "e".repeat(64),
        std::process::id()
    ));
    for tmp in [&dead, &live] {
        fs::create_dir_all(tmp).unwrap();
        fs::write(tmp.join("blob"), vec![0u8; 4096]).unwrap();
    }
    let prunes: Vec<_> = (0..8)
        .map(|_| {
            nixoci()
                .args(["cache", "prune", "--cache", c, "--max-size", "0"])
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for prune in prunes {
        let out = prune.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(!dead.exists(), "a dead build's temporary entry stays");
    assert!(live.exists(), "a live build's temporary entry went");
    let left: Vec<_> = fs::read_dir(cache.join("v1")).unwrap().collect();
    assert_eq!(left.len(), 1, "{left:?}");
}

/// An entry made for the same store paths with other options (here zstd,
/// put under the gzip entry's name) is not the requested layer: the
/// recorded key must match as well as the paths.
#[test]
fn an_entry_for_the_same_paths_with_other_options_is_not_used() {
    let dir = tempdir();
    let spec = store(dir.path(), 1, 300);
    let cache = dir.path().join("cache");
    let c = cache.to_str().unwrap();
    let entries = || -> Vec<PathBuf> {
        fs::read_dir(cache.join("v1"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    };
    let gzip = build(&spec, &dir.path().join("gzip"), &["--cache", c]);
    let [gzip_entry] = &entries()[..] else {
        panic!("{:?}", entries())
    };
    build(
        &spec,
        &dir.path().join("zstd"),
        &["--cache", c, "--compression", "zstd"],
    );
    let zstd_entry = entries()
        .into_iter()
        .find(|e| e != gzip_entry)
        .expect("a zstd entry");
    fs::remove_dir_all(gzip_entry).unwrap();
    fs::rename(&zstd_entry, gzip_entry).unwrap();
    let again = build(&spec, &dir.path().join("again"), &["--cache", c]);
    assert_eq!(cache_states(&again)[0], "miss");
    assert_eq!(again["digest"], gzip["digest"]);
}

/// What prune cannot remove is an error, not a silent success that counts
/// it as removed: a file made immutable (`chattr +i`, which stops root too)
/// in a killed build's temporary entry, and then in an entry.
#[test]
fn prune_reports_what_it_cannot_remove() {
    let dir = tempdir();
    let spec = store(dir.path(), 1, 300);
    let cache = dir.path().join("cache");
    let c = cache.to_str().unwrap();
    build(&spec, &dir.path().join("a"), &["--cache", c]);
    let entry = fs::read_dir(cache.join("v1"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    // pid 2^22 + 1 is above Linux's pid limit: that build is gone.
    let dead = cache.join("v1/.tmp-0123-4194305-ThreadId(1)");
    fs::create_dir(&dead).unwrap();
    fs::write(dead.join("blob"), "half made").unwrap();
    // Prune with `file` immutable; the flag is cleared before anything is
    // asserted, so that the test's directory can always be removed.
    let prune_with_immutable = |file: &Path| -> std::process::Output {
        run(Command::new("chattr").arg("+i").arg(file));
        let out = nixoci()
            .args(["cache", "prune", "--cache", c, "--max-size", "0"])
            .output()
            .unwrap();
        run(Command::new("chattr").arg("-i").arg(file));
        out
    };
    let out = prune_with_immutable(&dead.join("blob"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{out:?}");
    assert!(err.contains("Operation not permitted"), "{err}");
    assert!(entry.exists(), "prune went on after an error");

    let out = prune_with_immutable(&entry.join("blob"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        err.contains(&format!("cannot remove {}", entry.display())),
        "{err}"
    );
    let out = run(nixoci().args(["cache", "prune", "--cache", c, "--max-size", "0"]));
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with("removed 1 layer(s); 0 bytes kept"),
        "{out:?}"
    );
    assert!(!dead.exists() && !entry.exists());
}

/// A user who is not root keeps a cache of their own, and it serves hits.
#[test]
fn a_user_who_is_not_root_uses_a_cache_of_their_own() {
    let dir = tempdir();
    let root = dir.path();
    // The test's temporary directory is root's; the user needs to reach in.
    fs::set_permissions(root, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let spec = store(root, 1, 300);
    let home = root.join("home");
    fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(65534), Some(65534)).unwrap();
    let as_nobody = |out: &str| -> Value {
        summary(&run(Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_nixoci"))
            .arg("build")
            .arg("--spec")
            .arg(&spec)
            .args(["--json", "-q", "--cache"])
            .arg(home.join("cache"))
            .arg("-o")
            .arg(home.join(out))))
    };
    assert_eq!(cache_states(&as_nobody("first"))[0], "miss");
    assert_eq!(cache_states(&as_nobody("second"))[0], "hit");
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&fs::metadata(home.join("cache/v1")).unwrap()),
        65534
    );
}

/// A layer that cannot be added to the cache (here, `v1/` is append-only,
/// so the finished entry cannot be renamed into place) is a warning, and
/// the build still succeeds.
#[test]
fn a_layer_the_cache_cannot_take_is_a_warning_not_a_failure() {
    let dir = tempdir();
    let spec = store(dir.path(), 1, 300);
    let cache = dir.path().join("cache");
    fs::create_dir_all(cache.join("v1")).unwrap();
    fs::set_permissions(&cache, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    run(Command::new("chattr").arg("+a").arg(cache.join("v1")));
    let out = nixoci()
        .args(["build", "--json", "-q", "--cache"])
        .arg(&cache)
        .arg("--spec")
        .arg(&spec)
        .arg("-o")
        .arg(dir.path().join("out"))
        .output()
        .unwrap();
    run(Command::new("chattr").arg("-a").arg(cache.join("v1")));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning: cannot add a layer to the cache"),
        "{err}"
    );
}
