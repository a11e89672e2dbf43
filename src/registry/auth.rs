//! Registry credentials and challenges: `--creds`, an environment variable,
//! docker `config.json` / containers `auth.json` (with credential helpers),
//! and the Basic and Bearer (`WWW-Authenticate` realm/service/scope) flows.
//! Secrets are kept in a type whose Debug and Display never show them.

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use serde_json::Value;

/// A user name and password (or API key / identity token).
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credentials({}, <redacted>)", self.username)
    }
}

impl Credentials {
    pub fn new(username: &str, password: &str) -> Credentials {
        Credentials {
            username: username.into(),
            password: password.into(),
        }
    }

    /// `USER:PASS` (the password may contain colons).
    pub fn parse(text: &str) -> Result<Credentials> {
        let (user, pass) = text
            .split_once(':')
            .ok_or_else(|| anyhow!("credentials must be USER:PASSWORD"))?;
        if user.is_empty() {
            bail!("credentials must be USER:PASSWORD (the user name is empty)");
        }
        Ok(Credentials::new(user, pass))
    }

    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }

    /// The secret itself, for redacting it from anything printed.
    pub fn secret(&self) -> &str {
        &self.password
    }
}

/// Where credentials may come from, in order of precedence.
#[derive(Clone, Debug, Default)]
pub struct CredentialSources {
    /// `--creds USER:PASS`.
    pub explicit: Option<Credentials>,
    /// `--creds-env VAR` (and `--username`): the variable holds the password or USER:PASS.
    pub env_var: Option<String>,
    pub username: Option<String>,
}

impl CredentialSources {
    /// Credentials for `registry` (`host[:port]`), or None for anonymous access.
    pub fn resolve(&self, registry: &str) -> Result<Option<Credentials>> {
        if let Some(c) = &self.explicit {
            return Ok(Some(c.clone()));
        }
        if let Some(var) = &self.env_var {
            let value = std::env::var(var)
                .map_err(|_| anyhow!("--creds-env {var}: the variable is not set"))?;
            if value.is_empty() {
                bail!("--creds-env {var}: the variable is empty");
            }
            return Ok(Some(match &self.username {
                Some(user) => Credentials::new(user, &value),
                None => Credentials::parse(&value).map_err(|_| {
                    anyhow!(
                        "--creds-env {var}: give --username, or set the variable to USER:PASSWORD"
                    )
                })?,
            }));
        }
        from_config_files(registry)
    }
}

/// The files docker and podman/skopeo keep credentials in, most specific first.
fn config_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Ok(f) = std::env::var("REGISTRY_AUTH_FILE") {
        files.push(PathBuf::from(f));
    }
    if let Ok(dir) = std::env::var("XDG_RUNTIME_DIR") {
        files.push(PathBuf::from(dir).join("containers/auth.json"));
    }
    if let Ok(dir) = std::env::var("DOCKER_CONFIG") {
        files.push(PathBuf::from(dir).join("config.json"));
    }
    if let Ok(home) = std::env::var("HOME") {
        files.push(PathBuf::from(&home).join(".config/containers/auth.json"));
        files.push(PathBuf::from(home).join(".docker/config.json"));
    }
    files
}

fn from_config_files(registry: &str) -> Result<Option<Credentials>> {
    for file in config_files() {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let config: Value = serde_json::from_str(&text)
            .map_err(|e| anyhow!("credentials file {} is not valid JSON: {e}", file.display()))?;
        if let Some(c) =
            from_config(&config, registry).with_context(|| format!("in {}", file.display()))?
        {
            return Ok(Some(c));
        }
    }
    Ok(None)
}

fn from_config(config: &Value, registry: &str) -> Result<Option<Credentials>> {
    let keys = [
        registry.to_string(),
        format!("https://{registry}"),
        format!("http://{registry}"),
    ];
    // docker's order: a helper for this registry, then the store for all
    // of them, then the file's own `auths`.
    if let Some(helper) = keys.iter().find_map(|k| config["credHelpers"][k].as_str()) {
        return helper_get(helper, registry).map(Some);
    }
    if let Some(store) = config["credsStore"].as_str().filter(|s| !s.is_empty()) {
        return helper_get(store, registry).map(Some);
    }
    if let Some(auths) = config["auths"].as_object() {
        let entry = auths.iter().find(|(k, _)| {
            let host = k
                .trim_start_matches("https://")
                .trim_start_matches("http://");
            host.split('/').next() == Some(registry)
        });
        if let Some((_, entry)) = entry {
            if let Some(encoded) = entry["auth"].as_str().filter(|s| !s.is_empty()) {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .map_err(|_| anyhow!("the `auth` entry for {registry} is not base64"))?;
                return Credentials::parse(&String::from_utf8_lossy(&raw)).map(Some);
            }
            if let (Some(u), Some(p)) = (entry["username"].as_str(), entry["password"].as_str()) {
                return Ok(Some(Credentials::new(u, p)));
            }
            if let Some(token) = entry["identitytoken"].as_str() {
                return Ok(Some(Credentials::new("<token>", token)));
            }
        }
    }
    Ok(None)
}

/// Asks `docker-credential-<helper> get` for the registry's credentials.
fn helper_get(helper: &str, registry: &str) -> Result<Credentials> {
    let program = format!("docker-credential-{helper}");
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| anyhow!("cannot run credential helper {program}: {e}"))?;
    child
        .stdin
        .take()
        .ok_or_else(|| anyhow!("no stdin"))?
        .write_all(registry.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        // The helper's own message, which never contains the secret.
        bail!(
            "{program} has no credentials for {registry}: {}",
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    let v: Value = serde_json::from_slice(&out.stdout)
        .map_err(|_| anyhow!("{program} printed something that is not JSON"))?;
    match (v["Username"].as_str(), v["Secret"].as_str()) {
        (Some(u), Some(s)) => Ok(Credentials::new(u, s)),
        _ => bail!("{program} did not return Username and Secret"),
    }
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses `Basic realm="x"` or `Bearer realm="…",service="…",scope="…"`.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let (scheme, rest) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => {
            let params = parse_params(rest);
            Some(Challenge::Bearer {
                realm: params.get("realm")?.clone(),
                service: params.get("service").cloned(),
                scope: params.get("scope").cloned(),
            })
        }
        _ => None,
    }
}

fn parse_params(text: &str) -> HashMap<String, String> {
    let mut params = HashMap::new();
    let mut rest = text.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        params.insert(key, value.to_string());
        rest = next.trim_start_matches(',').trim();
    }
    params
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse() {
        assert_eq!(
            parse_challenge(r#"Basic realm="test-realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="http://127.0.0.1:5080/token",service="test-registry",scope="repository:a/b:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "http://127.0.0.1:5080/token".into(),
                service: Some("test-registry".into()),
                scope: Some("repository:a/b:pull,push".into())
            })
        );
    }

    #[test]
    fn secrets_are_not_printed() {
        let c = Credentials::parse("zot-ci:zak_secret:with:colons").unwrap();
        assert_eq!(c.secret(), "zak_secret:with:colons");
        // Debug output (`--verbose`, errors) names the user, and only the user.
        assert_eq!(format!("{c:?}"), "Credentials(zot-ci, <redacted>)");
    }

    #[test]
    fn docker_config_auths() {
        let encoded = base64::engine::general_purpose::STANDARD.encode("u:p");
        let config = serde_json::json!({"auths": {"https://reg.example:5000": {"auth": encoded}}});
        let c = from_config(&config, "reg.example:5000").unwrap().unwrap();
        assert_eq!((c.username.as_str(), c.secret()), ("u", "p"));
        assert!(from_config(&config, "other.example").unwrap().is_none());
    }

    /// A credentials entry names one host and port exactly: never a host
    /// that merely starts or ends like it, where its secret would leak.
    #[test]
    fn docker_config_entries_match_the_whole_host() {
        let encoded = base64::engine::general_purpose::STANDARD.encode("u:p");
        for (key, registry) in [
            ("reg.io", "reg.io.evil.net"),
            ("reg.io.evil.net", "reg.io"),
            ("127.0.0.1:5000", "127.0.0.1:50001"),
            ("127.0.0.1:50001", "127.0.0.1:5000"),
            ("127.0.0.1", "127.0.0.1:5000"),
            ("https://evil.reg.io/v2/", "reg.io"),
        ] {
            let config = serde_json::json!({"auths": {key: {"auth": encoded}}});
            assert!(
                from_config(&config, registry).unwrap().is_none(),
                "{key}'s credentials sent to {registry}"
            );
        }
        // A scheme or an API path around the same host still matches.
        for key in ["reg.io", "https://reg.io/v2/", "http://reg.io"] {
            let config = serde_json::json!({"auths": {key: {"auth": encoded}}});
            assert!(from_config(&config, "reg.io").unwrap().is_some(), "{key}");
        }
    }
}
