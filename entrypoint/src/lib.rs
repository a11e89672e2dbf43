//! nixoci-entrypoint: the start-up step that runs inside images as
//! `nixoci-entrypoint CONFIG.json [ARGS…]`. It mirrors store directories into
//! writable places as real directories with one symlink per file (as lndir
//! does: directory symlinks hide files from `Path.rglob`), sets the
//! environment (fixed values, and defaults that the caller's environment
//! overrides), then `execve`s the application so that it becomes PID 1.
//!
//! It is its own crate with only std and serde_json, because it goes inside
//! images; nixoci uses its config type to check images.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::symlink;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

/// The wrapper config the Nix side writes into the store.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub links: Vec<Link>,
    /// Set for the program, whatever the caller's environment says.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Set only where the caller's environment (a pod spec, `docker run -e`)
    /// does not set the variable: the image's defaults, which the caller's
    /// values win over.
    #[serde(default)]
    pub default_env: BTreeMap<String, String>,
    pub exec: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    pub from: String,
    pub to: String,
}

/// Exit codes: a bad config and a missing program are build mistakes.
pub const EXIT_BAD_CONFIG: i32 = 2;
pub const EXIT_NO_PROGRAM: i32 = 127;

/// Reads and checks the config; errors say what is wrong and where.
pub fn load(path: &Path) -> Result<Config, (i32, String)> {
    let text = fs::read_to_string(path).map_err(|e| {
        (
            EXIT_BAD_CONFIG,
            format!("cannot read config {}: {e}", path.display()),
        )
    })?;
    let config: Config = serde_json::from_str(&text).map_err(|e| {
        (
            EXIT_BAD_CONFIG,
            format!("config {} is malformed: {e}", path.display()),
        )
    })?;
    let program = config.exec.first().ok_or_else(|| {
        (
            EXIT_BAD_CONFIG,
            format!("config {}: `exec` is empty", path.display()),
        )
    })?;
    if !Path::new(program).is_absolute() {
        return Err((
            EXIT_BAD_CONFIG,
            format!(
                "config {}: exec target `{program}` must be an absolute path",
                path.display()
            ),
        ));
    }
    match fs::metadata(program) {
        Ok(m) if m.is_file() => {}
        Ok(_) => {
            return Err((
                EXIT_NO_PROGRAM,
                format!("exec target {program} is not a file"),
            ))
        }
        Err(e) => {
            return Err((
                EXIT_NO_PROGRAM,
                format!("exec target {program} does not exist in this image: {e}"),
            ))
        }
    }
    for link in &config.links {
        for p in [&link.from, &link.to] {
            if !Path::new(p).is_absolute() {
                return Err((
                    EXIT_BAD_CONFIG,
                    format!(
                        "config {}: link path `{p}` must be absolute",
                        path.display()
                    ),
                ));
            }
        }
        // A `to` inside its `from` (or the other way round) would copy into
        // itself without end.
        let (from, to) = (Path::new(&link.from), Path::new(&link.to));
        if to.starts_with(from) || from.starts_with(to) {
            return Err((
                EXIT_BAD_CONFIG,
                format!(
                    "config {}: link from {} to {}: one is inside the other",
                    path.display(),
                    link.from,
                    link.to
                ),
            ));
        }
    }
    Ok(config)
}

/// Mirrors `from` into `to`: real directories, a symlink per file pointing
/// into `from`, symlinks in `from` copied as they are. Nothing that exists at
/// the destination is replaced or entered unless it is a real directory, so
/// mounts and operators' files win, reruns change nothing, and no symlink is
/// ever followed out of `to`.
pub fn mirror(from: &Path, to: &Path) -> io::Result<()> {
    // Nothing to mirror: make nothing (an empty `to` would look linked).
    if !fs::metadata(from)?.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a directory", from.display()),
        ));
    }
    match fs::symlink_metadata(to) {
        Ok(m) if m.file_type().is_dir() => {}
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists and is not a directory; leaving it alone",
                    to.display()
                ),
            ))
        }
        // Missing (or unreadable: then making it fails with the reason).
        Err(_) => fs::create_dir_all(to)?,
    }
    mirror_dir(from, to)
}

fn mirror_dir(from: &Path, to: &Path) -> io::Result<()> {
    let mut entries: Vec<_> = fs::read_dir(from)?.collect::<io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let source = entry.path();
        let dest = to.join(entry.file_name());
        let kind = entry.file_type()?;
        let existing = fs::symlink_metadata(&dest);
        if kind.is_dir() {
            match existing {
                // Only real directories are entered; a symlink there is not followed.
                Ok(m) if m.file_type().is_dir() => mirror_dir(&source, &dest)?,
                Ok(_) => {}
                // Missing (or unreadable: then making it fails with the reason).
                // Another container starting on the same volume may make it
                // first: a real directory is as good as ours.
                Err(_) => match fs::create_dir(&dest) {
                    Ok(()) => mirror_dir(&source, &dest)?,
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        if fs::symlink_metadata(&dest)?.file_type().is_dir() {
                            mirror_dir(&source, &dest)?;
                        }
                    }
                    Err(e) => return Err(e),
                },
            }
        } else if existing.is_err() {
            let target: PathBuf = if kind.is_symlink() {
                fs::read_link(&source)?
            } else {
                source
            };
            match symlink(&target, &dest) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
                _ => {}
            }
        }
    }
    Ok(())
}

/// Runs the wrapper: returns only if exec failed, with the exit code to use.
pub fn run(args: Vec<OsString>) -> i32 {
    let mut args = args.into_iter().skip(1);
    let Some(config_path) = args.next() else {
        eprintln!("usage: nixoci-entrypoint CONFIG.json [ARGS…]");
        return EXIT_BAD_CONFIG;
    };
    let config = match load(Path::new(&config_path)) {
        Ok(c) => c,
        Err((code, message)) => {
            eprintln!("nixoci-entrypoint: error: {message}");
            return code;
        }
    };
    for link in &config.links {
        if let Err(e) = mirror(Path::new(&link.from), Path::new(&link.to)) {
            eprintln!(
                "nixoci-entrypoint: warning: could not link {} into {}: {e}; starting anyway",
                link.from, link.to
            );
        }
    }
    let mut command = Command::new(&config.exec[0]);
    command.args(&config.exec[1..]).args(args).envs(&config.env);
    for (name, value) in &config.default_env {
        if std::env::var_os(name).is_none() {
            command.env(name, value);
        }
    }
    let error = command.exec();
    eprintln!(
        "nixoci-entrypoint: error: cannot execute {}: {error}",
        config.exec[0]
    );
    EXIT_NO_PROGRAM
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_refuses_each_bad_config_with_its_exit_code() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.json");
        let program = dir.path().join("app");
        fs::write(&program, "#!/bin/sh\n").unwrap();
        let check = |config: serde_json::Value| {
            fs::write(&file, config.to_string()).unwrap();
            load(&file).map(|c| c.exec.len())
        };
        let app = program.display().to_string();
        let d = dir.path().display().to_string();
        assert_eq!(check(serde_json::json!({"exec": [app, "serve"]})), Ok(2));
        let refused = [
            (serde_json::json!({"exec": []}), EXIT_BAD_CONFIG, "is empty"),
            (
                serde_json::json!({"exec": ["app"]}),
                EXIT_BAD_CONFIG,
                "must be an absolute path",
            ),
            (
                serde_json::json!({"exec": [d]}),
                EXIT_NO_PROGRAM,
                "is not a file",
            ),
            (
                serde_json::json!({"exec": [format!("{d}/gone")]}),
                EXIT_NO_PROGRAM,
                "does not exist",
            ),
            (
                serde_json::json!({"exec": [app], "links": [{"from": "rel", "to": "/b"}]}),
                EXIT_BAD_CONFIG,
                "must be absolute",
            ),
            (
                serde_json::json!({"exec": [app], "links": [{"from": "/a", "to": "rel"}]}),
                EXIT_BAD_CONFIG,
                "must be absolute",
            ),
            (
                serde_json::json!({"exec": [app], "links": [{"from": "/a", "to": "/a/b"}]}),
                EXIT_BAD_CONFIG,
                "one is inside the other",
            ),
            (
                serde_json::json!({"exec": [app], "links": [{"from": "/a/b", "to": "/a"}]}),
                EXIT_BAD_CONFIG,
                "one is inside the other",
            ),
        ];
        for (config, code, message) in refused {
            fs::write(&file, config.to_string()).unwrap();
            match load(&file) {
                Err((c, text)) => {
                    assert_eq!(c, code, "{config}: {text}");
                    assert!(text.contains(message), "{config}: {text}");
                }
                Ok(_) => panic!("{config} was accepted"),
            }
        }
        // Sibling paths are fine.
        assert_eq!(
            check(serde_json::json!({"exec": [app], "links": [{"from": "/a/b", "to": "/a/bc"}]})),
            Ok(1)
        );
    }

    #[test]
    fn mirror_makes_a_missing_target_and_leaves_a_non_directory_alone() {
        let src = tempfile::tempdir().unwrap();
        fs::write(src.path().join("a.yaml"), "a").unwrap();
        let dst = tempfile::tempdir().unwrap();
        // A target that does not exist yet is made, parents included.
        let fresh = dst.path().join("x/y/blueprints");
        mirror(src.path(), &fresh).unwrap();
        assert!(fs::read_link(fresh.join("a.yaml")).is_ok());
        // A file or a symlink where the target goes is an error, left as it is.
        let file = dst.path().join("file");
        fs::write(&file, "mine").unwrap();
        assert_eq!(
            mirror(src.path(), &file).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        assert_eq!(fs::read_to_string(&file).unwrap(), "mine");
        let outside = tempfile::tempdir().unwrap();
        let link = dst.path().join("link");
        symlink(outside.path(), &link).unwrap();
        assert!(mirror(src.path(), &link).is_err());
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
        // A source that is not a directory makes nothing.
        let nothing = dst.path().join("nothing");
        assert!(mirror(&src.path().join("a.yaml"), &nothing).is_err());
        assert!(fs::symlink_metadata(&nothing).is_err());
    }

    #[test]
    fn mirror_makes_real_dirs_keeps_existing_and_is_idempotent() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        fs::create_dir_all(src.path().join("default")).unwrap();
        fs::write(src.path().join("default/a.yaml"), "a").unwrap();
        fs::create_dir_all(src.path().join("custom")).unwrap();
        fs::write(src.path().join("custom/b.yaml"), "b").unwrap();
        // An operator's file and a symlink pointing out of the destination.
        fs::create_dir_all(dst.path().join("to")).unwrap();
        let outside = tempfile::tempdir().unwrap();
        symlink(outside.path(), dst.path().join("to/custom")).unwrap();
        let to = dst.path().join("to");
        fs::create_dir_all(to.join("default")).unwrap();
        fs::write(to.join("default/a.yaml"), "operator").unwrap();
        fs::write(src.path().join("default/c.yaml"), "c").unwrap();
        // An operator's file where a built-in directory goes.
        fs::create_dir_all(src.path().join("system")).unwrap();
        fs::write(src.path().join("system/s.yaml"), "s").unwrap();
        fs::write(to.join("system"), "operator's system").unwrap();
        mirror(src.path(), &to).unwrap();
        assert_eq!(
            fs::read_to_string(to.join("system")).unwrap(),
            "operator's system",
            "an operator's file where a built-in directory goes is kept"
        );
        assert_eq!(
            fs::read_to_string(to.join("default/a.yaml")).unwrap(),
            "operator",
            "an operator's file wins over a built-in one"
        );
        assert!(fs::symlink_metadata(to.join("default/a.yaml"))
            .unwrap()
            .is_file());
        assert!(fs::symlink_metadata(to.join("default")).unwrap().is_dir());
        assert_eq!(
            fs::read_link(to.join("default/c.yaml")).unwrap(),
            src.path().join("default/c.yaml")
        );
        assert_eq!(
            fs::read_dir(outside.path()).unwrap().count(),
            0,
            "never follows a symlink out of `to`"
        );
        mirror(src.path(), &to).unwrap();
        assert_eq!(fs::read_dir(to.join("default")).unwrap().count(), 2);
    }
}
