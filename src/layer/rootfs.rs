//! The customisation layer's tree: `contents` merged into `/` the way nixpkgs'
//! `symlinkJoin` (lndir) does, then declarative root entries that replace
//! shell `extraCommands` (directories with modes, symlinks, copied files).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;

use super::tar::{Owner, TarWriter};
use crate::nix;

/// One declarative entry of the image root.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum RootEntry {
    /// A real directory (parents are created at 0755).
    Directory {
        path: String,
        #[serde(default = "default_dir_mode", deserialize_with = "de_mode")]
        mode: u32,
        #[serde(default)]
        uid: u64,
        #[serde(default)]
        gid: u64,
    },
    /// A symlink, its target written as given.
    Symlink { path: String, target: String },
    /// A file copied from `source` (usually a store path).
    File {
        path: String,
        source: String,
        #[serde(default = "default_file_mode", deserialize_with = "de_mode")]
        mode: u32,
        #[serde(default)]
        uid: u64,
        #[serde(default)]
        gid: u64,
    },
}

fn default_dir_mode() -> u32 {
    0o755
}

fn default_file_mode() -> u32 {
    0o444
}

/// Modes are octal strings (`"1777"`, `"0o755"`) or plain integers.
fn de_mode<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Mode {
        Text(String),
        Number(u32),
    }
    let mode = match Mode::deserialize(d)? {
        Mode::Number(n) => n,
        Mode::Text(t) => u32::from_str_radix(t.trim_start_matches("0o"), 8)
            .map_err(|_| serde::de::Error::custom(format!("mode `{t}` is not octal")))?,
    };
    if mode > 0o7777 {
        return Err(serde::de::Error::custom(format!(
            "mode {mode:o} is out of range"
        )));
    }
    Ok(mode)
}

impl RootEntry {
    /// Parses the CLI spelling: `dir:/tmp:1777`, `symlink:/bin/sh:TARGET`,
    /// `file:/init:SOURCE[:MODE]`.
    pub fn parse_cli(text: &str) -> Result<RootEntry> {
        let parts: Vec<&str> = text.splitn(4, ':').collect();
        let mode = |m: Option<&&str>, default: u32| -> Result<u32> {
            m.map(|m| {
                u32::from_str_radix(m, 8)
                    .ok()
                    .filter(|mode| *mode <= 0o7777)
                    .ok_or_else(|| {
                        anyhow!("mode `{m}` in `{text}` is not an octal mode (0 to 7777)")
                    })
            })
            .unwrap_or(Ok(default))
        };
        Ok(match parts.as_slice() {
            ["dir", path, rest @ ..] if rest.len() <= 1 => RootEntry::Directory {
                path: path.to_string(),
                mode: mode(rest.first(), 0o755)?,
                uid: 0,
                gid: 0,
            },
            ["symlink", path, target] => RootEntry::Symlink {
                path: path.to_string(),
                target: target.to_string(),
            },
            ["file", path, source, rest @ ..] => RootEntry::File {
                path: path.to_string(),
                source: source.to_string(),
                mode: mode(rest.first(), 0o444)?,
                uid: 0,
                gid: 0,
            },
            _ => bail!(
                "root entry `{text}` is not one of dir:PATH[:MODE], symlink:PATH:TARGET, file:PATH:SOURCE[:MODE]"
            ),
        })
    }
}

#[derive(Clone, Debug)]
enum Node {
    Dir {
        mode: u32,
        owner: (u64, u64),
        children: BTreeMap<Vec<u8>, Node>,
    },
    Symlink(Vec<u8>),
    File {
        source: PathBuf,
        mode: u32,
        owner: (u64, u64),
    },
}

fn new_dir(mode: u32) -> Node {
    Node::Dir {
        mode,
        owner: (0, 0),
        children: BTreeMap::new(),
    }
}

/// The tree of `/` in the customisation layer.
#[derive(Debug)]
pub struct RootTree {
    root: Node,
    store_dir: String,
}

impl RootTree {
    pub fn new(store_dir: &str) -> RootTree {
        RootTree {
            root: new_dir(0o755),
            store_dir: store_dir.to_string(),
        }
    }

    /// Merges one `contents` entry like lndir: real directories, one symlink
    /// per file pointing at it, symlinks copied as they are, and whatever an
    /// earlier content put at a name wins.
    pub fn merge_content(&mut self, content: &Path) -> Result<()> {
        let meta = fs::metadata(content).with_context(|| {
            format!("contents: store path {} does not exist", content.display())
        })?;
        if !meta.is_dir() {
            bail!(
                "contents entry {} is not a directory; symlinkJoin can only merge directories",
                content.display()
            );
        }
        let Node::Dir { children, .. } = &mut self.root else {
            unreachable!("the root is always a directory")
        };
        merge_dir(children, content)
    }

    /// Overlays what `extraCommands`/`fakeRootCommands` made: `<extra>/root`
    /// is copied in (real files, not links) over `contents`, with the modes
    /// recorded inside the build before the store reset them: `<extra>/owners`
    /// (NUL-separated `path uid gid mode`, from fakeroot) or `<extra>/modes`
    /// (`path mode`, owned by root).
    pub fn overlay(&mut self, extra: &Path) -> Result<()> {
        let (file, width) = match extra.join("owners") {
            owners if owners.exists() => (owners, 4),
            _ => (extra.join("modes"), 2),
        };
        let text = fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
        let fields: Vec<&[u8]> = text.split(|&b| b == 0).collect();
        let number = |b: &[u8], radix| {
            u64::from_str_radix(std::str::from_utf8(b).unwrap_or(""), radix)
                .map_err(|_| anyhow!("{} is malformed", file.display()))
        };
        let mut owners = std::collections::HashMap::new();
        for record in fields.chunks(width).filter(|r| r.len() == width) {
            let (uid, gid) = if width == 4 {
                (number(record[1], 10)?, number(record[2], 10)?)
            } else {
                (0, 0)
            };
            owners.insert(
                record[0].to_vec(),
                (uid, gid, number(record[width - 1], 8)? as u32 & 0o7777),
            );
        }
        let Node::Dir { children, .. } = &mut self.root else {
            unreachable!("the root is always a directory")
        };
        overlay_dir(children, &extra.join("root"), b"", &owners)
    }

    /// Applies a declarative entry; it replaces whatever `contents` put there.
    pub fn apply(&mut self, entry: &RootEntry) -> Result<()> {
        let (path, node) = match entry {
            RootEntry::Directory {
                path,
                mode,
                uid,
                gid,
            } => (
                path,
                Node::Dir {
                    mode: *mode,
                    owner: (*uid, *gid),
                    children: BTreeMap::new(),
                },
            ),
            RootEntry::Symlink { path, target } => {
                (path, Node::Symlink(target.as_bytes().to_vec()))
            }
            RootEntry::File {
                path,
                source,
                mode,
                uid,
                gid,
            } => {
                // Only store content goes in: a spec must not be able to
                // copy a runner's secrets (/etc/shadow, keys) into an image.
                let store_path = source
                    .strip_prefix(&format!("{}/", self.store_dir))
                    .map(|rest| {
                        format!(
                            "{}/{}",
                            self.store_dir,
                            rest.split('/').next().unwrap_or("")
                        )
                    });
                let inside = store_path
                    .as_deref()
                    .is_some_and(|p| nix::validate_store_path(&self.store_dir, p).is_ok())
                    && !Path::new(source)
                        .components()
                        .any(|c| matches!(c, std::path::Component::ParentDir));
                if !inside {
                    bail!("root entry {path}: source {source} is not in the store {}; only store paths can be copied into an image", self.store_dir);
                }
                let real = fs::canonicalize(source).with_context(|| {
                    format!("root entry {path}: source {source} does not exist")
                })?;
                let real_store = fs::canonicalize(&self.store_dir)
                    .unwrap_or_else(|_| PathBuf::from(&self.store_dir));
                if !real.starts_with(&real_store) {
                    bail!(
                        "root entry {path}: source {source} leads out of the store (to {})",
                        real.display()
                    );
                }
                let meta = fs::metadata(&real)?;
                if !meta.is_file() {
                    bail!("root entry {path}: source {source} is not a regular file");
                }
                (
                    path,
                    Node::File {
                        source: PathBuf::from(source),
                        mode: *mode,
                        owner: (*uid, *gid),
                    },
                )
            }
        };
        let parts = split_root_path(path)?;
        let (last, parents) = parts
            .split_last()
            .ok_or_else(|| anyhow!("root entry path `{path}` names `/` itself"))?;
        let mut dir = &mut self.root;
        for part in parents {
            let Node::Dir { children, .. } = dir else {
                unreachable!("walk only descends into directories")
            };
            let child = children
                .entry(part.clone())
                .or_insert_with(|| new_dir(0o755));
            if !matches!(child, Node::Dir { .. }) {
                // A directory entry below a symlink from contents: make it real.
                *child = new_dir(0o755);
            }
            dir = child;
        }
        let Node::Dir { children, .. } = dir else {
            unreachable!("walk only descends into directories")
        };
        match (children.get_mut(last), node) {
            // `mkdir -p` + `chmod` on a directory keeps what is inside.
            (
                Some(Node::Dir { mode, owner, .. }),
                Node::Dir {
                    mode: m, owner: o, ..
                },
            ) => {
                *mode = m;
                *owner = o;
            }
            (_, node) => {
                children.insert(last.clone(), node);
            }
        }
        Ok(())
    }

    /// Store paths this layer refers to: symlink targets, and paths named
    /// inside copied files.
    pub fn store_references(&self) -> Vec<String> {
        let mut found = Vec::new();
        collect_refs(&self.root, &self.store_dir, &mut found);
        found.sort();
        found.dedup();
        found
    }

    /// Makes the merged `contents` on disk under `dir` (which must exist),
    /// so that `extraCommands` runs in it as nixpkgs runs it in symlinkJoin's
    /// output: real directories, symlinks into the store.
    pub fn materialize(&self, dir: &Path) -> Result<()> {
        let Node::Dir { children, .. } = &self.root else {
            unreachable!("the root is always a directory")
        };
        materialize_dir(children, dir)
    }

    /// Writes the tree: `./` first, then every entry in byte order of names,
    /// as GNU tar `--sort=name` orders the nixpkgs customisation layer.
    pub fn write<W: std::io::Write>(
        &self,
        tar: &mut TarWriter<W>,
        owner: &Owner,
        on_bytes: &(dyn Fn(u64) + Sync),
    ) -> Result<()> {
        write_node(tar, b"./".to_vec(), &self.root, owner, on_bytes)
    }
}

/// How deep a root entry may go (the tree is walked recursively).
const MAX_ROOT_DEPTH: usize = 256;

fn split_root_path(path: &str) -> Result<Vec<Vec<u8>>> {
    let p = Path::new(path);
    if !p.is_absolute() {
        bail!("root entry path `{path}` must be absolute");
    }
    let depth = p.components().count();
    if depth > MAX_ROOT_DEPTH {
        bail!(
            "root entry path has {depth} components; at most {MAX_ROOT_DEPTH}: `{}…`",
            path.chars().take(60).collect::<String>()
        );
    }
    p.components()
        .filter(|c| !matches!(c, Component::RootDir | Component::CurDir))
        .map(|c| match c {
            Component::Normal(n) => Ok(n.as_bytes().to_vec()),
            _ => Err(anyhow!("root entry path `{path}` may not contain `..`")),
        })
        .collect()
}

/// A directory's entries, by name.
fn sorted_entries(dir: &Path) -> Result<Vec<fs::DirEntry>> {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    Ok(entries)
}

fn merge_dir(dest: &mut BTreeMap<Vec<u8>, Node>, src: &Path) -> Result<()> {
    for entry in sorted_entries(src)? {
        let name = entry.file_name().as_bytes().to_vec();
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            let child = dest.entry(name).or_insert_with(|| new_dir(0o755));
            if let Node::Dir { children, .. } = child {
                merge_dir(children, &path)?;
            }
        } else if let std::collections::btree_map::Entry::Vacant(slot) = dest.entry(name) {
            let target = if kind.is_symlink() {
                fs::read_link(&path)?
            } else {
                path
            };
            slot.insert(Node::Symlink(target.as_os_str().as_bytes().to_vec()));
        }
    }
    Ok(())
}

type Owners = std::collections::HashMap<Vec<u8>, (u64, u64, u32)>;

fn overlay_dir(
    dest: &mut BTreeMap<Vec<u8>, Node>,
    src: &Path,
    rel: &[u8],
    owners: &Owners,
) -> Result<()> {
    for entry in sorted_entries(src)? {
        let name = entry.file_name().as_bytes().to_vec();
        let mut path_rel = rel.to_vec();
        if !path_rel.is_empty() {
            path_rel.push(b'/');
        }
        path_rel.extend_from_slice(&name);
        let kind = entry.file_type()?;
        let recorded = owners.get(&path_rel).copied();
        let (uid, gid) = recorded.map_or((0, 0), |(u, g, _)| (u, g));
        if kind.is_dir() {
            let mode = recorded.map_or(0o755, |(_, _, m)| m);
            let child = dest.entry(name).or_insert_with(|| new_dir(mode));
            if !matches!(child, Node::Dir { .. }) {
                *child = new_dir(mode);
            }
            if let Node::Dir {
                mode: m,
                owner,
                children,
            } = child
            {
                *m = mode;
                *owner = (uid, gid);
                overlay_dir(children, &entry.path(), &path_rel, owners)?;
            }
        } else if kind.is_symlink() {
            dest.insert(
                name,
                Node::Symlink(fs::read_link(entry.path())?.as_os_str().as_bytes().to_vec()),
            );
        } else {
            let fallback = if entry.metadata()?.permissions().mode() & 0o111 != 0 {
                0o555
            } else {
                0o444
            };
            let mode = recorded.map_or(fallback, |(_, _, m)| m);
            dest.insert(
                name,
                Node::File {
                    source: entry.path(),
                    mode,
                    owner: (uid, gid),
                },
            );
        }
    }
    Ok(())
}

fn materialize_dir(children: &BTreeMap<Vec<u8>, Node>, dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    for (name, node) in children {
        let path = dir.join(std::ffi::OsStr::from_bytes(name));
        match node {
            Node::Dir { children, .. } => {
                fs::DirBuilder::new()
                    .mode(0o755)
                    .create(&path)
                    .with_context(|| format!("cannot create {}", path.display()))?;
                materialize_dir(children, &path)?;
            }
            Node::Symlink(target) => {
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(target), &path)
                    .with_context(|| format!("cannot create {}", path.display()))?
            }
            Node::File { source, .. } => {
                fs::copy(source, &path)
                    .with_context(|| format!("cannot copy {}", source.display()))?;
            }
        }
    }
    Ok(())
}

fn collect_refs(node: &Node, store_dir: &str, found: &mut Vec<String>) {
    match node {
        Node::Dir { children, .. } => children
            .values()
            .for_each(|c| collect_refs(c, store_dir, found)),
        Node::Symlink(target) => found.extend(nix::store_paths_in(
            store_dir,
            &String::from_utf8_lossy(target),
        )),
        // A copied file needs what it mentions (a script's interpreter), not
        // its source, as Nix's reference scan of the layer would find.
        // Only paths that exist count, as Nix's scanner only finds paths of
        // the build's inputs.
        Node::File { source, .. } => {
            if let Ok(paths) = nix::store_paths_in_file(store_dir, source) {
                found.extend(
                    paths
                        .iter()
                        .filter_map(|p| nix::existing_store_path(store_dir, p)),
                );
            }
        }
    }
}

fn write_node<W: std::io::Write>(
    tar: &mut TarWriter<W>,
    name: Vec<u8>,
    node: &Node,
    owner: &Owner,
    on_bytes: &(dyn Fn(u64) + Sync),
) -> Result<()> {
    let owned = |ids: (u64, u64)| Owner {
        uid: ids.0,
        gid: ids.1,
        ..owner.clone()
    };
    match node {
        Node::Dir {
            mode,
            owner: ids,
            children,
        } => {
            tar.directory(&name, *mode, &owned(*ids))?;
            for (child_name, child) in children {
                let mut child_path = name.clone();
                if !child_path.ends_with(b"/") {
                    child_path.push(b'/');
                }
                child_path.extend_from_slice(child_name);
                write_node(tar, child_path, child, owner, on_bytes)?;
            }
        }
        Node::Symlink(target) => tar.symlink(&name, target, owner)?,
        Node::File {
            source,
            mode,
            owner: ids,
        } => {
            let mut file =
                File::open(source).with_context(|| format!("cannot read {}", source.display()))?;
            let size = file.metadata()?.len();
            tar.file(&name, *mode, size, &owned(*ids), &mut file, &mut |d| {
                on_bytes(d.len() as u64);
                Ok(())
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_entries_parse() {
        assert_eq!(
            RootEntry::parse_cli("dir:/tmp:1777").unwrap(),
            RootEntry::Directory {
                path: "/tmp".into(),
                mode: 0o1777,
                uid: 0,
                gid: 0
            }
        );
        assert!(RootEntry::parse_cli("dir:/tmp:99").is_err());
        assert!(RootEntry::parse_cli("socket:/x").is_err());
    }

    #[test]
    fn first_content_wins_and_directories_merge() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        fs::create_dir_all(a.path().join("bin")).unwrap();
        fs::write(a.path().join("bin/tool"), "a").unwrap();
        fs::create_dir_all(b.path().join("bin")).unwrap();
        fs::write(b.path().join("bin/tool"), "b").unwrap();
        fs::write(b.path().join("bin/other"), "b").unwrap();
        std::os::unix::fs::symlink("tool", b.path().join("bin/alias")).unwrap();
        let mut tree = RootTree::new("/nix/store");
        tree.merge_content(a.path()).unwrap();
        tree.merge_content(b.path()).unwrap();
        let Node::Dir { children, .. } = &tree.root else {
            panic!()
        };
        let Node::Dir { children: bin, .. } = &children[&b"bin".to_vec()] else {
            panic!()
        };
        let target = |n: &str| match &bin[&n.as_bytes().to_vec()] {
            Node::Symlink(t) => String::from_utf8(t.clone()).unwrap(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            target("tool"),
            a.path().join("bin/tool").display().to_string()
        );
        assert_eq!(
            target("other"),
            b.path().join("bin/other").display().to_string()
        );
        assert_eq!(target("alias"), "tool");
    }
}
