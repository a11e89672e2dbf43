//! NAR hashes of git trees computed straight from a (bare) repository's
//! objects through git's plumbing, as `fetchgit` would produce them from a
//! checkout: no `.git`, executable bits and symlinks kept. Nothing is checked
//! out, so case-insensitive file systems cannot change the result.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context, Result};

use crate::nix::{Hash, NarEncoder, Sha256Counter};

/// What the tree holds that a plain object walk cannot reproduce exactly.
#[derive(Debug, Default)]
pub struct TreeNotes {
    /// Paths of submodules (fetchgit fetches them; they are not in this tree).
    pub submodules: Vec<String>,
    /// `.gitattributes` files that ask for checkout filters (eol, ident, filter=…).
    pub filters: Vec<String>,
}

fn git(repo: &Path) -> Command {
    let mut cmd = Command::new("git");
    // Replace refs and grafts rewrite history behind a tag's back: a mirror
    // must be read as `git clone` (and fetchgit) sees it, without them.
    cmd.args(["-c", "advice.graftFileDeprecated=false", "--git-dir"])
        .arg(repo)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_NO_REPLACE_OBJECTS", "1")
        .env("GIT_GRAFT_FILE", "/dev/null")
        .env_remove("GIT_DIR");
    cmd
}

fn run_git(repo: &Path, args: &[&str]) -> Result<Vec<u8>> {
    let out = git(repo)
        .args(args)
        .output()
        .map_err(|e| anyhow!("cannot run git: {e}"))?;
    if !out.status.success() {
        bail!(
            "git {} failed in {}: {}",
            args.join(" "),
            repo.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

/// The commit a tag (or any revision) names in the repository.
pub fn resolve(repo: &Path, rev: &str) -> Result<String> {
    for candidate in [
        format!("refs/tags/{rev}^{{commit}}"),
        format!("{rev}^{{commit}}"),
    ] {
        let out = git(repo)
            .args(["rev-parse", "--verify", "--quiet", &candidate])
            .output()?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).trim().to_string());
        }
    }
    bail!("{rev} does not exist in {}", repo.display())
}

/// Reads a file at `path` in `commit`.
pub fn read_file(repo: &Path, commit: &str, path: &str) -> Result<Vec<u8>> {
    run_git(repo, &["cat-file", "blob", &format!("{commit}:{path}")])
}

#[derive(Debug)]
enum Entry {
    Dir(BTreeMap<Vec<u8>, Entry>),
    File { id: String, executable: bool },
    Symlink { id: String },
}

/// NAR hash of the tree of `commit`, its total blob size, and notes.
pub fn tree_nar_hash(
    repo: &Path,
    commit: &str,
    on_bytes: &dyn Fn(u64),
) -> Result<(Hash, TreeNotes)> {
    let listing = run_git(repo, &["ls-tree", "-r", "-t", "-z", "--full-tree", commit])
        .with_context(|| {
            format!("cannot list the tree of {commit}: is an object corrupt or missing?")
        })?;
    let mut root: BTreeMap<Vec<u8>, Entry> = BTreeMap::new();
    let mut notes = TreeNotes::default();
    let mut attributes = Vec::new();
    for record in listing.split(|&b| b == 0).filter(|r| !r.is_empty()) {
        let tab = record
            .iter()
            .position(|&b| b == b'\t')
            .ok_or_else(|| anyhow!("unexpected git ls-tree output"))?;
        let meta = String::from_utf8_lossy(&record[..tab]).into_owned();
        let path = &record[tab + 1..];
        let mut fields = meta.split(' ');
        let (mode, id) = (
            fields.next().unwrap_or(""),
            fields.nth(1).unwrap_or("").to_string(),
        );
        let entry = match mode {
            "040000" => Entry::Dir(BTreeMap::new()),
            "100644" => Entry::File {
                id,
                executable: false,
            },
            "100755" => Entry::File {
                id,
                executable: true,
            },
            "120000" => Entry::Symlink { id },
            // A checkout without submodules leaves an empty directory
            // there (fetchgit with fetchSubmodules = false).
            "160000" => {
                notes
                    .submodules
                    .push(String::from_utf8_lossy(path).into_owned());
                Entry::Dir(BTreeMap::new())
            }
            other => bail!(
                "unknown git file mode {other} at {}",
                String::from_utf8_lossy(path)
            ),
        };
        if path.rsplit(|&b| b == b'/').next() == Some(b".gitattributes") {
            if let Entry::File { id, .. } = &entry {
                attributes.push((String::from_utf8_lossy(path).into_owned(), id.clone()));
            }
        }
        insert(&mut root, path, entry)?;
    }
    for (path, id) in attributes {
        let text =
            String::from_utf8_lossy(&run_git(repo, &["cat-file", "blob", &id])?).into_owned();
        let filtering = text.lines().any(|l| {
            let l = l.trim();
            !l.starts_with('#')
                && l.split_whitespace().skip(1).any(|a| {
                    a.starts_with("filter")
                        || a.starts_with("eol")
                        || a == "ident"
                        || a.starts_with("text")
                        || a == "crlf"
                })
        });
        if filtering {
            notes.filters.push(path);
        }
    }

    // Blobs are read in NAR order through one `git cat-file --batch`.
    let mut ids = Vec::new();
    collect_ids(&root, &mut ids);
    let mut child = git(repo)
        .args(["cat-file", "--batch"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| anyhow!("cannot run git cat-file: {e}"))?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| anyhow!("git cat-file has no stdin"))?;
    let feeder = std::thread::spawn(move || -> std::io::Result<()> {
        for id in ids {
            writeln!(stdin, "{id}")?;
        }
        Ok(())
    });
    let mut objects = BufReader::with_capacity(
        1 << 20,
        child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("git cat-file has no stdout"))?,
    );
    let mut nar = NarEncoder::new(Sha256Counter::default())?;
    nar.directory()?;
    let walked = write_dir(&mut nar, &root, &mut objects, on_bytes);
    drop(objects);
    let _ = feeder.join();
    let status = child.wait()?;
    if let Err(e) = walked {
        let mut stderr = String::new();
        if let Some(mut s) = child.stderr.take() {
            let _ = s.read_to_string(&mut stderr);
        }
        bail!(
            "{e:#}{}",
            if stderr.trim().is_empty() {
                String::new()
            } else {
                format!(" (git: {})", stderr.trim())
            }
        );
    }
    if !status.success() {
        bail!("git cat-file failed in {}", repo.display());
    }
    nar.close_node()?;
    Ok((Hash::sha256(nar.into_inner().finish().0), notes))
}

fn insert(root: &mut BTreeMap<Vec<u8>, Entry>, path: &[u8], entry: Entry) -> Result<()> {
    // No checkout can make a longer path (Linux's PATH_MAX); this also
    // bounds the tree's depth, and so the recursion of dropping it.
    if path.len() as u64 > SYMLINK_MAX {
        bail!(
            "git tree lists a path of {} bytes: no checkout can make it (at most {SYMLINK_MAX})",
            path.len()
        );
    }
    let parts: Vec<&[u8]> = path.split(|&b| b == b'/').collect();
    let (last, parents) = parts
        .split_last()
        .ok_or_else(|| anyhow!("empty path in git tree"))?;
    let mut dir = root;
    for p in parents {
        dir = match dir.get_mut(*p) {
            Some(Entry::Dir(children)) => children,
            _ => bail!(
                "git tree lists {} before its directory",
                String::from_utf8_lossy(path)
            ),
        };
    }
    dir.insert(last.to_vec(), entry);
    Ok(())
}

/// Every object id under `root`, in NAR order (the order `write_dir` reads them).
fn collect_ids(root: &BTreeMap<Vec<u8>, Entry>, ids: &mut Vec<String>) {
    let mut stack = vec![root.values()];
    while let Some(entries) = stack.last_mut() {
        match entries.next() {
            None => {
                stack.pop();
            }
            Some(Entry::Dir(children)) => stack.push(children.values()),
            Some(Entry::File { id, .. } | Entry::Symlink { id }) => ids.push(id.clone()),
        }
    }
}

/// Reads the next `--batch` object header and checks it is `id`.
fn next_object(objects: &mut impl BufRead, id: &str) -> Result<u64> {
    let mut header = String::new();
    objects.read_line(&mut header)?;
    let fields: Vec<&str> = header.split_whitespace().collect();
    match fields.as_slice() {
        [got, "blob", size] if *got == id => size
            .parse()
            .map_err(|_| anyhow!("bad object size for {id}")),
        [_, "missing"] | [] => bail!("git object {id} is missing or corrupt in the mirror"),
        _ => bail!(
            "git object {id} could not be read: unexpected `{}`",
            header.trim()
        ),
    }
}

fn write_dir<R: BufRead>(
    nar: &mut NarEncoder<Sha256Counter>,
    root: &BTreeMap<Vec<u8>, Entry>,
    objects: &mut R,
    on_bytes: &dyn Fn(u64),
) -> Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    // A stack of directories being written, not recursion: the tree's depth
    // is the mirror's to choose. BTreeMap order of byte strings is NAR's order.
    let mut stack = vec![root.iter()];
    while let Some(entries) = stack.last_mut() {
        let Some((name, entry)) = entries.next() else {
            stack.pop();
            if !stack.is_empty() {
                // The end of a subdirectory: close it and its entry.
                nar.close_node()?;
                nar.close_entry()?;
            }
            continue;
        };
        nar.entry(name)?;
        match entry {
            Entry::Dir(children) => {
                nar.directory()?;
                stack.push(children.iter());
                continue;
            }
            Entry::Symlink { id } => {
                let size = next_object(objects, id)?;
                // No checkout can make a longer link (Linux's PATH_MAX), and
                // the object is untrusted: never allocate what it claims.
                if size > SYMLINK_MAX {
                    bail!(
                        "git object {id} is a symlink target of {size} bytes: no checkout can make it (at most {SYMLINK_MAX})"
                    );
                }
                let mut target = vec![0u8; size as usize];
                objects
                    .read_exact(&mut target)
                    .with_context(|| format!("git object {id} is truncated or corrupt"))?;
                nar.symlink(&target)?;
                skip_newline(objects, id)?;
            }
            Entry::File { id, executable } => {
                let size = next_object(objects, id)?;
                nar.regular(*executable, size)?;
                let mut left = size;
                while left > 0 {
                    let want = buf.len().min(left as usize);
                    objects
                        .read_exact(&mut buf[..want])
                        .with_context(|| format!("git object {id} is truncated or corrupt"))?;
                    nar.contents(&buf[..want])?;
                    on_bytes(want as u64);
                    left -= want as u64;
                }
                nar.finish_regular()?;
                skip_newline(objects, id)?;
            }
        }
        nar.close_entry()?;
    }
    Ok(())
}

/// The longest symlink target a checkout can make.
const SYMLINK_MAX: u64 = 4096;

fn skip_newline(objects: &mut impl Read, id: &str) -> Result<()> {
    let mut nl = [0u8; 1];
    objects
        .read_exact(&mut nl)
        .with_context(|| format!("git object {id} is truncated"))?;
    Ok(())
}
