//! Pre-push checks: reads a built image's layers into a map of its file
//! system and checks what would otherwise fail only after a deploy: the
//! entrypoint and its `#!` interpreter, paths named in `Env`, directories the
//! app must write to, and the entrypoint wrapper's own config.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;

use anyhow::{anyhow, Result};
use serde::Serialize;
use serde_json::Value;

use crate::image::Image;

/// The runtime default when an image sets no PATH (containerd, Docker).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Bytes kept of each file that starts with `#!`.
const SHEBANG_PREFIX: usize = 256;
/// Largest file read whole (wrapper configs, /etc/passwd).
const SMALL_FILE: u64 = 1 << 20;
/// Linux's PATH_MAX: no runtime can unpack a longer name or link target.
const PATH_MAX: usize = 4096;
/// The most bytes of names and link targets read from all layers, which
/// bounds the memory of the file-system map (real images name a few MiB).
const MAX_NAME_BYTES: usize = 256 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

#[derive(Debug, Serialize)]
pub struct Finding {
    pub status: Status,
    pub check: &'static str,
    pub message: String,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub ok: bool,
    pub findings: Vec<Finding>,
}

#[derive(Clone, Debug, PartialEq)]
enum Kind {
    File,
    Dir,
    Symlink(String),
    Other,
}

#[derive(Clone, Debug)]
struct Node {
    kind: Kind,
    mode: u32,
    uid: u64,
    gid: u64,
    /// First bytes of files that start with `#!`.
    shebang: Option<Vec<u8>>,
}

/// The image's merged file system (paths are absolute, without trailing `/`).
struct Fs {
    /// Ordered, so that a whiteout removes a subtree as one key range.
    nodes: BTreeMap<String, Node>,
}

/// Removes `target` and everything below it (`target/…`).
fn remove_tree(nodes: &mut BTreeMap<String, Node>, target: &str) {
    nodes.remove(target);
    let prefix = format!("{}/", target.trim_end_matches('/'));
    let doomed: Vec<String> = nodes
        .range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
        .map(|(k, _)| k.clone())
        .collect();
    for k in doomed {
        nodes.remove(&k);
    }
}

fn normalize(name: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in name.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

impl Fs {
    fn read(source: &Image) -> Result<Fs> {
        let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
        nodes.insert(
            "/".into(),
            Node {
                kind: Kind::Dir,
                mode: 0o755,
                uid: 0,
                gid: 0,
                shebang: None,
            },
        );
        let mut name_bytes = 0usize;
        for (index, layer) in source.layers.iter().enumerate() {
            let mut archive = tar::Archive::new(source.layer_reader(layer)?);
            for entry in archive.entries()? {
                let mut entry = entry?;
                let raw_name = entry.path_bytes();
                let link_len = entry.link_name_bytes().map_or(0, |l| l.len());
                if raw_name.len() > PATH_MAX || link_len > PATH_MAX {
                    return Err(anyhow!(
                        "layer {} ({}): a member's name or link target is longer than PATH_MAX ({PATH_MAX} bytes); no runtime can unpack it",
                        index + 1,
                        layer.digest
                    ));
                }
                name_bytes += raw_name.len() + link_len;
                if name_bytes > MAX_NAME_BYTES {
                    return Err(anyhow!(
                        "the layers name more than {MAX_NAME_BYTES} bytes of paths and link targets (layer {}, {}): too many to check",
                        index + 1,
                        layer.digest
                    ));
                }
                let name = normalize(&String::from_utf8_lossy(&raw_name));
                let base = name.rsplit('/').next().unwrap_or_default().to_string();
                // Whiteouts from base images delete lower entries.
                if base == ".wh..wh..opq" {
                    // An opaque directory: what lower layers put inside goes.
                    let dir = parent(&name).to_string();
                    let kept = nodes.get(&dir).cloned();
                    remove_tree(&mut nodes, &dir);
                    if let Some(node) = kept {
                        nodes.insert(dir, node);
                    }
                    continue;
                }
                if let Some(hidden) = base.strip_prefix(".wh.") {
                    let target = normalize(&format!("{}/{hidden}", parent(&name)));
                    remove_tree(&mut nodes, &target);
                    continue;
                }
                let header = entry.header();
                let kind = match header.entry_type() {
                    t if t.is_dir() => Kind::Dir,
                    t if t.is_symlink() => Kind::Symlink(
                        entry
                            .link_name_bytes()
                            .map(|l| String::from_utf8_lossy(&l).into_owned())
                            .unwrap_or_default(),
                    ),
                    t if t.is_file() || t.is_hard_link() => Kind::File,
                    _ => Kind::Other,
                };
                let mode = header.mode().unwrap_or(0) & 0o7777;
                let uid = header.uid().unwrap_or(0);
                let gid = header.gid().unwrap_or(0);
                let mut shebang = None;
                if kind == Kind::File {
                    let mut prefix = Vec::new();
                    (&mut entry)
                        .take(SHEBANG_PREFIX as u64)
                        .read_to_end(&mut prefix)?;
                    if prefix.starts_with(b"#!") {
                        shebang = Some(prefix);
                    }
                }
                if kind != Kind::Dir {
                    // A non-directory replaces a whole subtree.
                    remove_tree(&mut nodes, &name);
                }
                nodes.insert(
                    name,
                    Node {
                        kind,
                        mode,
                        uid,
                        gid,
                        shebang,
                    },
                );
            }
        }
        Ok(Fs { nodes })
    }

    /// Follows symlinks (inside the image root) to the final path.
    fn resolve(&self, path: &str) -> Option<(String, &Node)> {
        let mut pending: Vec<String> = normalize(path)
            .split('/')
            .filter(|c| !c.is_empty())
            .map(String::from)
            .collect();
        pending.reverse();
        let mut current = String::from("/");
        let mut hops = 0;
        while let Some(component) = pending.pop() {
            let next = normalize(&format!("{current}/{component}"));
            let node = self.nodes.get(&next)?;
            if let Kind::Symlink(target) = &node.kind {
                hops += 1;
                if hops > 40 {
                    return None;
                }
                let base = if target.starts_with('/') {
                    String::from("/")
                } else {
                    current.clone()
                };
                let mut rest: Vec<String> = target
                    .split('/')
                    .filter(|c| !c.is_empty())
                    .map(String::from)
                    .collect();
                rest.reverse();
                pending.extend(rest);
                current = base;
            } else {
                current = next;
            }
        }
        let node = self.nodes.get(&current)?;
        Some((current, node))
    }
}

/// Who the container runs as.
#[derive(Clone, Copy, Debug)]
struct User {
    uid: u64,
    gid: u64,
}

impl User {
    fn may(&self, node: &Node, bits: u32) -> bool {
        if self.uid == 0 {
            // root reads and writes anything; it executes what has any x bit.
            return bits & 1 == 0 || node.mode & 0o111 != 0;
        }
        let class = if node.uid == self.uid {
            node.mode >> 6
        } else if node.gid == self.gid {
            node.mode >> 3
        } else {
            node.mode
        };
        class & bits == bits
    }
}

const W: u32 = 2;
const X: u32 = 1;

struct Checker {
    fs: Fs,
    user: User,
    path_var: Option<String>,
    findings: Vec<Finding>,
}

impl Checker {
    fn add(&mut self, status: Status, check: &'static str, message: String) {
        self.findings.push(Finding {
            status,
            check,
            message,
        });
    }

    /// Resolves a command the way execve + PATH lookup would.
    fn find_program(&self, program: &str) -> Option<String> {
        if program.contains('/') {
            return Some(program.to_string());
        }
        let path = self.path_var.clone().unwrap_or_else(|| DEFAULT_PATH.into());
        path.split(':')
            .map(|dir| format!("{}/{program}", dir.trim_end_matches('/')))
            .find(|candidate| {
                self.fs
                    .resolve(candidate)
                    .is_some_and(|(_, n)| n.kind == Kind::File)
            })
    }

    /// Checks that `program` exists and is executable by the user, then its
    /// `#!` interpreter (recursively). Returns the resolved path.
    fn check_executable(
        &mut self,
        check: &'static str,
        program: &str,
        depth: usize,
    ) -> Option<String> {
        let Some(path) = self.find_program(program) else {
            self.add(
                Status::Fail,
                check,
                format!("`{program}` is not in the image's PATH"),
            );
            return None;
        };
        let Some((resolved, node)) = self.fs.resolve(&path).map(|(p, n)| (p, n.clone())) else {
            self.add(
                Status::Fail,
                check,
                format!("{path} does not exist in the image (is it in the closure?)"),
            );
            return None;
        };
        if node.kind != Kind::File {
            self.add(Status::Fail, check, format!("{path} is not a regular file"));
            return None;
        }
        if !self.user.may(&node, X) {
            self.add(
                Status::Fail,
                check,
                format!("{path} is not executable by uid {}", self.user.uid),
            );
            return None;
        }
        self.add(
            Status::Pass,
            check,
            format!("{path} exists and is executable by uid {}", self.user.uid),
        );
        if let Some(prefix) = &node.shebang {
            let line = String::from_utf8_lossy(prefix);
            let line = line[2..]
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_string();
            let mut words = line.split_whitespace();
            match words.next() {
                None => self.add(
                    Status::Fail,
                    "interpreter",
                    format!("{path} starts with an empty `#!` line"),
                ),
                Some(_) if depth >= 4 => self.add(
                    Status::Fail,
                    "interpreter",
                    format!("{path}: `#!` chain too deep"),
                ),
                Some(interpreter) => {
                    let interpreter = interpreter.to_string();
                    self.check_executable("interpreter", &interpreter, depth + 1);
                    // `#!/usr/bin/env prog`: prog must be found through PATH.
                    if interpreter.ends_with("/env") {
                        if let Some(prog) = words.find(|w| !w.starts_with('-')) {
                            self.check_executable("interpreter", prog, depth + 1);
                        }
                    }
                }
            }
        }
        Some(resolved)
    }

    /// `required`: the config names the directory; otherwise (a plain /tmp
    /// that images run fine without) a problem is only a warning.
    fn check_writable_dir(&mut self, dir: &str, why: &str, required: bool) {
        let bad = if required { Status::Fail } else { Status::Warn };
        match self.fs.resolve(dir).map(|(p, n)| (p, n.clone())) {
            None => self.add(
                bad,
                "writable",
                format!("{dir} ({why}) does not exist in the image"),
            ),
            Some((_, node)) if node.kind != Kind::Dir => {
                self.add(bad, "writable", format!("{dir} ({why}) is not a directory"))
            }
            Some((_, node)) if !self.user.may(&node, W | X) => self.add(
                bad,
                "writable",
                format!(
                    "{dir} ({why}) is not writable by uid {} (mode {:o}, owner {}:{})",
                    self.user.uid, node.mode, node.uid, node.gid
                ),
            ),
            Some(_) => self.add(
                Status::Pass,
                "writable",
                format!("{dir} ({why}) is writable by uid {}", self.user.uid),
            ),
        }
    }
}

fn parse_user(user: &str, passwd: Option<&str>) -> Result<User, String> {
    let (name, group) = user.split_once(':').unwrap_or((user, ""));
    let lookup = |field: &str| -> Option<(u64, u64)> {
        passwd?.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&field) && f.len() > 3)
                .then(|| (f[2].parse().ok(), f[3].parse().ok()))
                .and_then(|(u, g)| Some((u?, g?)))
        })
    };
    let (uid, default_gid) = match name.parse::<u64>() {
        Ok(uid) => (uid, uid),
        Err(_) if name.is_empty() => (0, 0),
        Err(_) => lookup(name).ok_or_else(|| format!("User `{name}` is a name, but the image's /etc/passwd does not define it; use a numeric uid"))?,
    };
    let gid = if group.is_empty() {
        default_gid
    } else {
        group
            .parse()
            .map_err(|_| format!("group `{group}` in User must be numeric"))?
    };
    Ok(User { uid, gid })
}

/// Reads the whole contents of small files at `paths` (resolved, absolute) from the layers.
fn read_files(source: &Image, paths: &BTreeSet<String>) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut found = BTreeMap::new();
    if paths.is_empty() {
        return Ok(found);
    }
    for layer in &source.layers {
        let mut archive = tar::Archive::new(source.layer_reader(layer)?);
        for entry in archive.entries()? {
            let mut entry = entry?;
            let name = normalize(&String::from_utf8_lossy(&entry.path_bytes()));
            if paths.contains(&name)
                && entry.header().entry_type().is_file()
                && entry.size() <= SMALL_FILE
            {
                let mut bytes = Vec::new();
                entry.read_to_end(&mut bytes)?;
                found.insert(name, bytes);
            }
        }
    }
    Ok(found)
}

/// Runs every check; `writable` adds directories the app must write to.
pub fn check(source: &Image, writable: &[String]) -> Result<Report> {
    let fs = Fs::read(source)?;
    let config = &source.config["config"];
    let env: Vec<(String, String)> = config["Env"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str())
                .filter_map(|e| e.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .unwrap_or_default();
    let path_var = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone());
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let argv: Vec<String> = strings(&config["Entrypoint"])
        .into_iter()
        .chain(strings(&config["Cmd"]))
        .collect();

    // Files whose contents matter: /etc/passwd for a named user, the wrapper config.
    let user_text = config["User"].as_str().unwrap_or("").to_string();
    let mut wanted = BTreeSet::new();
    wanted.insert("/etc/passwd".to_string());
    let wrapper_config = match argv.as_slice() {
        [program, config_path, ..]
            if Path::new(program)
                .file_name()
                .is_some_and(|n| n == "nixoci-entrypoint") =>
        {
            let resolved = fs
                .resolve(config_path)
                .map(|(p, _)| p)
                .unwrap_or_else(|| normalize(config_path));
            wanted.insert(resolved.clone());
            Some((config_path.clone(), resolved))
        }
        _ => None,
    };
    let contents = read_files(source, &wanted)?;
    let passwd = contents
        .get("/etc/passwd")
        .map(|b| String::from_utf8_lossy(b).into_owned());

    let mut findings = Vec::new();
    let user = match parse_user(&user_text, passwd.as_deref()) {
        Ok(u) => u,
        Err(message) => {
            findings.push(Finding {
                status: Status::Fail,
                check: "user",
                message,
            });
            User {
                uid: 65534,
                gid: 65534,
            }
        }
    };
    let mut c = Checker {
        fs,
        user,
        path_var: path_var.clone(),
        findings,
    };

    match argv.first() {
        None => c.add(
            Status::Fail,
            "entrypoint",
            "the config has neither Entrypoint nor Cmd".into(),
        ),
        Some(program) => {
            c.check_executable("entrypoint", &program.clone(), 0);
        }
    }

    // Directories the app writes to; the config names all but the first.
    let mut dirs: Vec<(String, String)> = vec![("/tmp".into(), "temporary files".into())];
    for (key, value) in &env {
        if ["TMPDIR", "TMP", "TEMP"].contains(&key.as_str()) {
            dirs.push((value.clone(), key.clone()));
        }
    }
    if let Some(volumes) = config["Volumes"].as_object() {
        dirs.extend(volumes.keys().map(|v| (v.clone(), "a Volume".to_string())));
    }
    dirs.extend(
        writable
            .iter()
            .map(|w| (w.clone(), "--writable".to_string())),
    );

    if let Some((config_path, resolved)) = wrapper_config {
        match contents.get(&resolved) {
            None => c.add(
                Status::Fail,
                "wrapper",
                format!("wrapper config {config_path} is not in the image"),
            ),
            Some(bytes) => match serde_json::from_slice::<nixoci_entrypoint::Config>(bytes) {
                Err(e) => c.add(
                    Status::Fail,
                    "wrapper",
                    format!("wrapper config {config_path} is malformed: {e}"),
                ),
                Ok(wrapper) => {
                    for link in &wrapper.links {
                        match c.fs.resolve(&link.from) {
                            Some((_, n)) if n.kind == Kind::Dir => c.add(
                                Status::Pass,
                                "wrapper",
                                format!("link source {} exists", link.from),
                            ),
                            _ => c.add(
                                Status::Fail,
                                "wrapper",
                                format!(
                                    "link source {} is not a directory in the image",
                                    link.from
                                ),
                            ),
                        }
                        dirs.push((link.to.clone(), format!("wrapper link from {}", link.from)));
                    }
                    match wrapper.exec.first() {
                        Some(program) => {
                            c.check_executable("wrapper", &program.clone(), 0);
                        }
                        None => c.add(
                            Status::Fail,
                            "wrapper",
                            "wrapper config has an empty exec".into(),
                        ),
                    }
                    for (k, v) in wrapper.env.iter().chain(&wrapper.default_env) {
                        check_env_value(&mut c, k, v);
                    }
                }
            },
        }
    }

    for (key, value) in &env {
        check_env_value(&mut c, key, value);
    }
    let named: BTreeSet<String> = dirs.iter().skip(1).map(|(d, _)| normalize(d)).collect();
    let mut seen = BTreeSet::new();
    for (i, (dir, why)) in dirs.into_iter().enumerate() {
        if seen.insert(normalize(&dir)) {
            let required = i > 0 || named.contains(&normalize(&dir));
            c.check_writable_dir(&dir, &why, required);
        }
    }
    if path_var.is_none() {
        c.add(
            Status::Warn,
            "path",
            format!("PATH is not set; the runtime's default ({DEFAULT_PATH}) applies"),
        );
    }
    let ok = c.findings.iter().all(|f| f.status != Status::Fail);
    Ok(Report {
        ok,
        findings: c.findings,
    })
}

/// Every absolute path in an Env value must exist; missing PATH entries only warn.
fn check_env_value(c: &mut Checker, key: &str, value: &str) {
    for part in value.split(':').filter(|p| p.starts_with('/')) {
        let exists = c.fs.resolve(part).is_some();
        let (status, message) = match (exists, key == "PATH") {
            (true, _) => (Status::Pass, format!("{key}: {part} exists")),
            (false, true) => (
                Status::Warn,
                format!("PATH entry {part} does not exist in the image"),
            ),
            (false, false) => (
                Status::Fail,
                format!("{key}: {part} does not exist in the image"),
            ),
        };
        c.add(status, "env", message);
    }
}

impl Report {
    /// The readable list `nixoci check` prints.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for f in &self.findings {
            let tag = match f.status {
                Status::Pass => "ok  ",
                Status::Warn => "WARN",
                Status::Fail => "FAIL",
            };
            out.push_str(&format!("{tag} {:<10} {}\n", f.check, f.message));
        }
        let fails = self
            .findings
            .iter()
            .filter(|f| f.status == Status::Fail)
            .count();
        let warns = self
            .findings
            .iter()
            .filter(|f| f.status == Status::Warn)
            .count();
        out.push_str(&if self.ok {
            format!("passed ({warns} warning(s))\n")
        } else {
            format!("{fails} check(s) failed, {warns} warning(s)\n")
        });
        out
    }
}

/// Opens an image and checks it.
pub fn check_path(image: &Path, reference: Option<&str>, writable: &[String]) -> Result<Report> {
    let source = Image::open(image, reference).map_err(|e| anyhow!("{e:#}"))?;
    check(&source, writable)
}
