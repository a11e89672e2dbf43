//! A small synchronous OCI distribution client on ureq and rustls: requests
//! with the auth dance, retries with backoff on 5xx, 429 (honouring
//! `Retry-After`), resets and timeouts, and blob bodies streamed from disk.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::auth::{self, Challenge, Credentials};
use super::{Failure, PushError};

/// What goes in a request body.
pub enum Body<'a> {
    Empty,
    Bytes(&'a [u8]),
    /// `len` bytes of a file from `offset`; `on_sent` sees every piece.
    File {
        path: &'a Path,
        offset: u64,
        len: u64,
        on_sent: &'a (dyn Fn(u64) + Sync),
    },
}

/// The parts of a response the protocol needs.
#[derive(Debug)]
pub struct Reply {
    /// The URL that was asked: relative `Location`s resolve against it.
    pub url: String,
    pub status: u16,
    headers: HashMap<String, String>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// The registry's own error text (`{"errors":[{"code","message"}]}`), if any.
    pub fn registry_error(&self) -> String {
        let parsed: Option<serde_json::Value> = serde_json::from_str(&self.body).ok();
        let detail = parsed
            .as_ref()
            .and_then(|v| v["errors"].as_array())
            .map(|errors| {
                errors
                    .iter()
                    .map(|e| {
                        format!(
                            "{} {}",
                            e["code"].as_str().unwrap_or(""),
                            e["message"].as_str().unwrap_or("")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_else(|| self.body.chars().take(200).collect());
        let detail = printable(&detail);
        format!(
            "HTTP {}{}",
            self.status,
            if detail.trim().is_empty() {
                String::new()
            } else {
                format!(": {}", detail.trim())
            }
        )
    }
}

/// How long the client waits: `stall` with no byte moving either way ends an
/// exchange, as does a response body not read whole within `stall`; the
/// whole push to one repository (every request, transfer and retry) ends
/// `total` after the client connected.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub stall: Duration,
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            stall: Duration::from_secs(60),
            total: Duration::from_secs(3600),
        }
    }
}

enum AuthState {
    None,
    Basic,
    Bearer(String),
}

/// One repository on one registry.
pub struct Client {
    agent: ureq::Agent,
    /// `--insecure`: plain HTTP allowed, to the registry and its token server.
    insecure: bool,
    pub base: String,
    pub registry: String,
    pub repository: String,
    creds: Option<Credentials>,
    auth: Mutex<AuthState>,
    verbose: bool,
    pub retries: u32,
    pub timeouts: Timeouts,
    /// When the push must be over: `timeouts.total` after connecting.
    pub deadline: Instant,
    /// Extra repositories the token must cover (for cross-repo mounts).
    pub extra_pull_scope: Option<String>,
}

/// How the client trusts a registry's TLS.
#[derive(Clone, Debug, Default)]
pub struct Trust {
    /// Plain HTTP and unverified TLS allowed (loopback registries).
    pub insecure: bool,
    /// CA certificates (PEM) trusted instead of the built-in Mozilla roots.
    pub ca_file: Option<std::path::PathBuf>,
}

impl Trust {
    fn tls_config(&self) -> Result<ureq::tls::TlsConfig, PushError> {
        let mut tls = ureq::tls::TlsConfig::builder().disable_verification(self.insecure);
        if let Some(path) = &self.ca_file {
            let pem = std::fs::read(path).map_err(|e| {
                PushError::new(
                    Failure::Rejected,
                    format!("cannot read the CA file {}: {e}", path.display()),
                )
            })?;
            let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(cert)) => Some(cert),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                return Err(PushError::new(
                    Failure::Rejected,
                    format!("{} holds no PEM certificate", path.display()),
                ));
            }
            tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
        }
        Ok(tls.build())
    }
}

fn agent(tls: ureq::tls::TlsConfig, stall: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .tls_config(tls)
        .timeout_connect(Some(Duration::from_secs(15).min(stall)))
        // A peer that stops reading or writing, or answers without end.
        .timeout_per_read(Some(stall))
        .timeout_per_write(Some(stall))
        .timeout_recv_response(Some(stall.max(Duration::from_secs(300))))
        // Response bodies are small (at most 1 MiB is read): one that
        // trickles for longer is a stall too.
        .timeout_recv_body(Some(stall))
        .max_redirects(5)
        .user_agent(concat!("nixoci/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

impl Client {
    /// Connects to `registry`: HTTPS with verification; with `insecure`, HTTPS
    /// without verification, falling back to plain HTTP if the server speaks no TLS.
    pub fn connect(
        registry: &str,
        repository: &str,
        creds: Option<Credentials>,
        trust: &Trust,
        verbose: bool,
        timeouts: Timeouts,
    ) -> Result<Client, PushError> {
        let insecure = trust.insecure;
        let mut client = Client {
            agent: agent(trust.tls_config()?, timeouts.stall),
            insecure,
            base: format!("https://{registry}"),
            registry: registry.into(),
            repository: repository.into(),
            creds,
            auth: Mutex::new(AuthState::None),
            verbose,
            retries: 5,
            timeouts,
            deadline: Instant::now() + timeouts.total,
            extra_pull_scope: None,
        };
        let probe = client.send_once(
            "GET",
            &format!("{}/v2/", client.base),
            &[],
            &Body::Empty,
            None,
        );
        if let Err(e) = probe {
            if insecure && (e.transport || e.tls) {
                client.base = format!("http://{registry}");
                if client.verbose {
                    eprintln!("{registry} does not speak TLS; using plain HTTP (--insecure)");
                }
            } else {
                return Err(PushError::new(
                    Failure::Network,
                    format!(
                        "cannot reach https://{registry}/v2/: {}{}",
                        e.message,
                        if registry.starts_with("127.") || registry.starts_with("localhost") {
                            " (a loopback registry without TLS needs --insecure)"
                        } else {
                            ""
                        }
                    ),
                ));
            }
        }
        Ok(client)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/v2/{}/{}", self.base, self.repository, path)
    }

    /// The credentials to send to `url`: none unless it is the registry's own
    /// scheme, host and port. An upload `Location` may name any host, and it
    /// gets the blob, never the password or token.
    fn authorization(&self, url: &str) -> Option<String> {
        if !super::url::same_origin(url, &self.base) {
            return None;
        }
        match &*self.auth.lock().unwrap_or_else(|p| p.into_inner()) {
            AuthState::None => None,
            AuthState::Basic => self.creds.as_ref().map(Credentials::basic_header),
            AuthState::Bearer(token) => Some(format!("Bearer {token}")),
        }
    }

    /// Sends a request, answering one auth challenge; retries transient
    /// failures when `retry` (blob uploads retry at a higher level instead).
    pub fn request(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, String)],
        body: &Body,
        retry: bool,
    ) -> Result<Reply, PushError> {
        self.exchange(method, url, headers, body, retry, None)
    }

    /// GETs `url` as `request` does, but a 200 answer's body, of any size
    /// and not necessarily text, goes to `sink` (emptied first, so a retry
    /// starts it over) instead of the reply.
    pub fn download(&self, url: &str, accept: &str, sink: &File) -> Result<Reply, PushError> {
        self.exchange(
            "GET",
            url,
            &[("Accept", accept.to_string())],
            &Body::Empty,
            true,
            Some(sink),
        )
    }

    fn exchange(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, String)],
        body: &Body,
        retry: bool,
        sink: Option<&File>,
    ) -> Result<Reply, PushError> {
        let mut attempt = 0;
        let mut answered_challenge = false;
        loop {
            attempt += 1;
            let result = self.send_once(method, url, headers, body, sink);
            let transient = match &result {
                Err(e) if e.transport => Some((e.message.clone(), None)),
                Ok(r) if r.status == 429 || r.status >= 500 => Some((
                    r.registry_error(),
                    r.header("retry-after")
                        .and_then(|v| v.trim().parse::<u64>().ok()),
                )),
                _ => None,
            };
            if let Some((why, retry_after)) = transient {
                let wait = retry_after
                    .map(Duration::from_secs)
                    .unwrap_or_else(|| backoff(attempt))
                    .min(Duration::from_secs(60));
                if !retry || attempt > self.retries || !self.may_retry(wait) {
                    return Err(PushError::new(
                        Failure::Network,
                        format!("{method} {} failed: {why}", redact_query(url)),
                    ));
                }
                eprintln!(
                    "nixoci: {method} {}: {why}; retrying in {:.1}s ({attempt}/{})",
                    redact_query(url),
                    wait.as_secs_f64(),
                    self.retries
                );
                std::thread::sleep(wait);
                continue;
            }
            // What is left cannot pass by retrying: a URL that cannot be
            // asked, TLS that fails, a deadline that has passed.
            let reply = result.map_err(|e| {
                PushError::new(
                    Failure::Rejected,
                    format!("{method} {}: {}", redact_query(url), e.message),
                )
            })?;
            if reply.status == 401 {
                if !super::url::same_origin(url, &self.base) {
                    return Err(PushError::new(
                        Failure::Auth,
                        format!(
                            "{method} {} asks for credentials, but it is not on {}: nixoci sends credentials only to the registry itself",
                            redact_query(url),
                            self.registry
                        ),
                    ));
                }
                if answered_challenge {
                    return Err(self.unauthorized());
                }
                answered_challenge = true;
                let challenge = reply
                    .header("www-authenticate")
                    .and_then(auth::parse_challenge);
                self.answer(challenge)?;
                continue;
            }
            return Ok(reply);
        }
    }

    /// Whether a retry after `wait` still starts before the deadline.
    pub fn may_retry(&self, wait: Duration) -> bool {
        let ok = Instant::now() + wait < self.deadline;
        if !ok {
            eprintln!(
                "nixoci: no more retries: the push's {}s (--timeout) are used up",
                self.timeouts.total.as_secs()
            );
        }
        ok
    }

    /// The time left before the deadline, or the error that it has passed.
    fn time_left(&self) -> Result<Duration, TransportError> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(TransportError::fatal(format!(
                "the push took longer than its {}s (--timeout)",
                self.timeouts.total.as_secs()
            )));
        }
        Ok(left)
    }

    fn unauthorized(&self) -> PushError {
        let who = match &self.creds {
            Some(c) => format!("the credentials for user `{}` were refused: they are invalid or expired (zot API keys expire; make a new one)", c.username),
            None => "the registry requires credentials and none were given (--creds, --creds-env, or a docker/containers auth file)".into(),
        };
        PushError::new(Failure::Auth, format!("{}: {who}", self.registry))
    }

    fn answer(&self, challenge: Option<Challenge>) -> Result<(), PushError> {
        let state = match challenge {
            Some(Challenge::Basic) | None => {
                if self.creds.is_none() {
                    return Err(self.unauthorized());
                }
                AuthState::Basic
            }
            Some(Challenge::Bearer {
                realm,
                service,
                scope,
            }) => {
                let mut scopes = vec![format!("repository:{}:pull,push", self.repository)];
                if let Some(s) = scope.filter(|s| !scopes.contains(s)) {
                    scopes.push(s);
                }
                if let Some(extra) = &self.extra_pull_scope {
                    scopes.push(format!("repository:{extra}:pull"));
                }
                AuthState::Bearer(self.fetch_token(&realm, service.as_deref(), &scopes)?)
            }
        };
        *self.auth.lock().unwrap_or_else(|p| p.into_inner()) = state;
        Ok(())
    }

    fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
    ) -> Result<String, PushError> {
        // The credentials go to the realm: never in clear from a registry
        // that speaks TLS (unless --insecure), never to another scheme.
        let realm_scheme = realm.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
        let registry_tls = self.base.starts_with("https://");
        match realm_scheme.as_deref() {
            Some("https") => {}
            Some("http") if !registry_tls || self.insecure => {}
            _ => {
                return Err(PushError::new(
                    Failure::Auth,
                    format!(
                        "{} names the token server {}, which is not https: the credentials would cross the network in clear (allowed only with --insecure)",
                        self.registry,
                        printable(realm)
                    ),
                ))
            }
        }
        let mut request = self.agent.get(realm);
        if let Some(s) = service {
            request = request.query("service", s);
        }
        for s in scopes {
            request = request.query("scope", s);
        }
        if let Some(c) = &self.creds {
            request = request
                .query("account", &c.username)
                .header("Authorization", c.basic_header());
        }
        let mut response = request.call().map_err(|e| {
            PushError::new(
                Failure::Network,
                format!("cannot reach the token server {realm}: {e}"),
            )
        })?;
        let status = response.status().as_u16();
        if status == 401 || status == 403 {
            return Err(self.unauthorized());
        }
        if status != 200 {
            return Err(PushError::new(
                Failure::Network,
                format!("token server {realm} answered HTTP {status}"),
            ));
        }
        let text = response
            .body_mut()
            .with_config()
            .limit(1 << 20)
            .read_to_string()
            .unwrap_or_default();
        let body: serde_json::Value = serde_json::from_str(&text).map_err(|_| {
            PushError::new(
                Failure::Network,
                format!("token server {realm} sent no JSON"),
            )
        })?;
        body["token"]
            .as_str()
            .or_else(|| body["access_token"].as_str())
            .map(str::to_string)
            .ok_or_else(|| {
                PushError::new(
                    Failure::Network,
                    format!("token server {realm} sent no token"),
                )
            })
    }

    /// Runs one request, ended at the latest after `left`.
    fn run<B: ureq::AsSendBody>(
        &self,
        request: ureq::http::Request<B>,
        left: Duration,
    ) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
        let request = self
            .agent
            .configure_request(request)
            .timeout_global(Some(left))
            .build();
        self.agent.run(request)
    }

    /// One HTTP exchange; `transport` errors are the retryable kind. With
    /// `sink`, a 200 answer's body is copied there.
    fn send_once(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, String)],
        body: &Body,
        sink: Option<&File>,
    ) -> Result<Reply, TransportError> {
        // No exchange outlives the push's deadline, however it trickles.
        let left = self.time_left()?;
        let mut builder = ureq::http::Request::builder().method(method).uri(url);
        if let Some(a) = self.authorization(url) {
            builder = builder.header("Authorization", a);
        }
        for (k, v) in headers {
            builder = builder.header(*k, v.as_str());
        }
        let result = match body {
            Body::Empty if method == "GET" || method == "HEAD" => {
                let request = builder
                    .body(())
                    .map_err(|e| TransportError::fatal(e.to_string()))?;
                self.run(request, left)
            }
            Body::Empty => {
                let request = builder
                    .header("Content-Length", "0")
                    .body(&[][..])
                    .map_err(|e| TransportError::fatal(e.to_string()))?;
                self.run(request, left)
            }
            Body::Bytes(bytes) => {
                let request = builder
                    .header("Content-Length", bytes.len().to_string())
                    .body(*bytes)
                    .map_err(|e| TransportError::fatal(e.to_string()))?;
                self.run(request, left)
            }
            Body::File {
                path,
                offset,
                len,
                on_sent,
            } => {
                let mut file = File::open(path).map_err(|e| {
                    TransportError::fatal(format!("cannot read {}: {e}", path.display()))
                })?;
                file.seek(SeekFrom::Start(*offset))
                    .map_err(|e| TransportError::fatal(e.to_string()))?;
                let mut reader = Counting {
                    inner: file.take(*len),
                    on_sent: *on_sent,
                };
                let request = builder
                    .header("Content-Length", len.to_string())
                    .body(ureq::SendBody::from_reader(&mut reader))
                    .map_err(|e| TransportError::fatal(e.to_string()))?;
                self.run(request, left)
            }
        };
        let mut response = result.map_err(|e| TransportError {
            transport: is_transport(&e),
            tls: matches!(e, ureq::Error::Tls(_) | ureq::Error::Rustls(_)),
            message: e.to_string(),
        })?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        // A body that cannot be read whole within the stall timeout (one
        // that drips, say) is a stall like any other, and retried as one.
        let body = if method == "HEAD" {
            String::new()
        } else if let (Some(mut file), 200) = (sink, status) {
            let copied = file.set_len(0).and_then(|()| file.rewind()).and_then(|()| {
                std::io::copy(
                    &mut response.body_mut().with_config().limit(u64::MAX).reader(),
                    &mut file,
                )
            });
            if let Err(e) = copied {
                return Err(TransportError {
                    transport: true,
                    tls: false,
                    message: format!("HTTP {status}: reading the response body: {e}"),
                });
            }
            String::new()
        } else {
            match response
                .body_mut()
                .with_config()
                .limit(1 << 20)
                .read_to_string()
            {
                Ok(text) => text,
                Err(e)
                    if is_transport(&e)
                        && !matches!(&e, ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::InvalidData) =>
                {
                    return Err(TransportError {
                        transport: true,
                        tls: false,
                        message: format!("HTTP {status}: reading the response body: {e}"),
                    })
                }
                // Too long or not text: the status says what counts.
                Err(_) => String::new(),
            }
        };
        if self.verbose {
            eprintln!("{method} {} -> {status}", redact_query(url));
        }
        Ok(Reply {
            url: url.to_string(),
            status,
            headers,
            body,
        })
    }
}

/// Text from a registry, safe for a terminal: control characters (escape
/// sequences included) are shown as `\u{..}`, and it is cut at 300 characters.
pub fn printable(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars().take(300) {
        if c.is_control() {
            out.push_str(&c.escape_unicode().to_string());
        } else {
            out.push(c);
        }
    }
    out
}

/// Upload URLs carry opaque `_state` tokens; keep logs readable.
fn redact_query(url: &str) -> String {
    match url.split_once('?') {
        Some((path, query)) if query.contains("_state") => format!("{path}?…"),
        _ => url.to_string(),
    }
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(250u64.saturating_mul(1 << attempt.min(6)))
}

/// A failed exchange: `transport` (resets, timeouts: worth retrying) or
/// `tls` (no or bad TLS: not worth retrying, but `--insecure` may fall back).
struct TransportError {
    transport: bool,
    tls: bool,
    message: String,
}

impl TransportError {
    fn fatal(message: String) -> TransportError {
        TransportError {
            transport: false,
            tls: false,
            message,
        }
    }
}

fn is_transport(e: &ureq::Error) -> bool {
    matches!(
        e,
        ureq::Error::Io(_)
            | ureq::Error::Timeout(_)
            | ureq::Error::ConnectionFailed
            | ureq::Error::Protocol(_)
    )
}

/// Counts body bytes as they are sent.
struct Counting<'a, R> {
    inner: R,
    on_sent: &'a (dyn Fn(u64) + Sync),
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        (self.on_sent)(n as u64);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_state_is_not_printed() {
        assert_eq!(
            redact_query("http://r/v2/a/blobs/uploads/x?_state=SECRET&digest=sha256:1"),
            "http://r/v2/a/blobs/uploads/x?…"
        );
        assert_eq!(
            redact_query("http://r/v2/a/tags/list?n=10"),
            "http://r/v2/a/tags/list?n=10"
        );
        assert_eq!(redact_query("http://r/v2/"), "http://r/v2/");
    }

    #[test]
    fn backoff_doubles_up_to_16_seconds() {
        let waits: Vec<u128> = (1..=8).map(|a| backoff(a).as_millis()).collect();
        assert_eq!(waits, [500, 1000, 2000, 4000, 8000, 16000, 16000, 16000]);
    }
}
