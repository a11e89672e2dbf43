//! The little URL handling the protocol needs: resolving a `Location` header
//! as an RFC 3986 reference against the request it answered, and comparing
//! origins, so that credentials only ever go to the registry itself.

/// An absolute `http`/`https` URL split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Parts<'a> {
    scheme: &'a str,
    authority: &'a str,
    path: &'a str,
    query: Option<&'a str>,
}

/// Splits an absolute URL; `None` if it has no scheme and authority.
fn split(url: &str) -> Option<Parts<'_>> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme.is_empty()
        || !scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        || !scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    {
        return None;
    }
    let rest = rest.split_once('#').map_or(rest, |(before, _)| before);
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let (path, query) = match tail.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (tail, None),
    };
    Some(Parts {
        scheme,
        authority,
        path,
        query,
    })
}

/// The `(scheme, host, port)` of an absolute URL, lower-cased, with the
/// scheme's default port filled in and any `user:pass@` dropped.
pub fn origin(url: &str) -> Option<(String, String, u16)> {
    let parts = split(url)?;
    let scheme = parts.scheme.to_ascii_lowercase();
    let host_port = parts
        .authority
        .rsplit_once('@')
        .map_or(parts.authority, |(_, h)| h);
    let (host, port) = match host_port.rsplit_once(':') {
        // `[::1]` alone has colons but no port.
        Some((h, p)) if !p.contains(']') => (h, Some(p.parse::<u16>().ok()?)),
        _ => (host_port, None),
    };
    let port = match (port, scheme.as_str()) {
        (Some(p), _) => p,
        (None, "http") => 80,
        (None, "https") => 443,
        (None, _) => return None,
    };
    if host.is_empty() {
        return None;
    }
    Some((scheme, host.to_ascii_lowercase(), port))
}

/// True when both URLs name the same scheme, host and port.
pub fn same_origin(a: &str, b: &str) -> bool {
    matches!((origin(a), origin(b)), (Some(x), Some(y)) if x == y)
}

/// Resolves `reference` against the absolute URL `base` (RFC 3986 §5.2).
/// A fragment is dropped: it is never sent, and it must not swallow a query
/// that is appended later.
pub fn resolve(base: &str, reference: &str) -> Option<String> {
    let reference = reference
        .split_once('#')
        .map_or(reference, |(before, _)| before);
    let base = split(base)?;
    if let Some(target) = split(reference) {
        return Some(join(
            target.scheme,
            target.authority,
            &remove_dot_segments(target.path),
            target.query,
        ));
    }
    let (ref_path, ref_query) = match reference.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (reference, None),
    };
    if let Some(network_path) = ref_path.strip_prefix("//") {
        // `//host/path`: same scheme, new authority.
        let split_at = network_path.find('/').unwrap_or(network_path.len());
        let (authority, path) = network_path.split_at(split_at);
        return Some(join(
            base.scheme,
            authority,
            &remove_dot_segments(path),
            ref_query,
        ));
    }
    if ref_path.contains(':')
        && !ref_path.starts_with('/')
        && ref_path
            .split('/')
            .next()
            .is_some_and(|first| first.contains(':'))
    {
        // A scheme other than `x://…` (`mailto:`, `other-host:5000`): not a
        // place to send a blob to.
        return None;
    }
    let (path, query) = if ref_path.is_empty() {
        (base.path.to_string(), ref_query.or(base.query))
    } else if ref_path.starts_with('/') {
        (remove_dot_segments(ref_path), ref_query)
    } else {
        let merged = if base.path.is_empty() {
            format!("/{ref_path}")
        } else {
            let dir_end = base.path.rfind('/').map_or(0, |i| i + 1);
            format!("{}{ref_path}", &base.path[..dir_end])
        };
        (remove_dot_segments(&merged), ref_query)
    };
    Some(join(base.scheme, base.authority, &path, query))
}

fn join(scheme: &str, authority: &str, path: &str, query: Option<&str>) -> String {
    let path = if path.is_empty() { "/" } else { path };
    match query {
        Some(q) => format!("{scheme}://{authority}{path}?{q}"),
        None => format!("{scheme}://{authority}{path}"),
    }
}

/// RFC 3986 §5.2.4, on whole segments.
fn remove_dot_segments(path: &str) -> String {
    let absolute = path.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(usize::from(absolute)).collect();
    let last = segments.len().saturating_sub(1);
    let mut trailing_slash = false;
    for (i, segment) in segments.iter().enumerate() {
        match *segment {
            "." => trailing_slash = i == last,
            ".." => {
                out.pop();
                trailing_slash = i == last;
            }
            s => {
                out.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut result = String::with_capacity(path.len());
    if absolute {
        result.push('/');
    }
    result.push_str(&out.join("/"));
    if trailing_slash && !result.ends_with('/') {
        result.push('/');
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "http://reg:5000/v2/team/app/blobs/uploads/";

    #[test]
    fn rfc3986_examples() {
        // RFC 3986 §5.4.1, with the base "http://a/b/c/d;p?q".
        let base = "http://a/b/c/d;p?q";
        for (reference, expected) in [
            ("g", "http://a/b/c/g"),
            ("./g", "http://a/b/c/g"),
            ("g/", "http://a/b/c/g/"),
            ("/g", "http://a/g"),
            ("//g", "http://g/"),
            ("?y", "http://a/b/c/d;p?y"),
            ("g?y", "http://a/b/c/g?y"),
            ("#s", "http://a/b/c/d;p?q"),
            ("", "http://a/b/c/d;p?q"),
            (".", "http://a/b/c/"),
            ("./", "http://a/b/c/"),
            ("..", "http://a/b/"),
            ("../g", "http://a/b/g"),
            ("../..", "http://a/"),
            ("../../../g", "http://a/g"),
            ("/./g", "http://a/g"),
            ("g.", "http://a/b/c/g."),
            ("..g", "http://a/b/c/..g"),
            ("./g/.", "http://a/b/c/g/"),
            ("g/../h", "http://a/b/c/h"),
        ] {
            assert_eq!(
                resolve(base, reference).as_deref(),
                Some(expected),
                "{reference}"
            );
        }
    }

    #[test]
    fn registry_locations() {
        assert_eq!(
            resolve(BASE, "/v2/team/app/blobs/uploads/abc?_state=x").unwrap(),
            "http://reg:5000/v2/team/app/blobs/uploads/abc?_state=x"
        );
        assert_eq!(
            resolve(BASE, "uploads/rel").unwrap(),
            "http://reg:5000/v2/team/app/blobs/uploads/uploads/rel"
        );
        assert_eq!(
            resolve(BASE, "?_state=x").unwrap(),
            "http://reg:5000/v2/team/app/blobs/uploads/?_state=x"
        );
        assert_eq!(
            resolve(BASE, "/up?_state=1#frag").unwrap(),
            "http://reg:5000/up?_state=1"
        );
        // A colon in the first segment is no relative path (RFC 3986
        // path-noscheme): neither the userinfo trick nor a bare host:port.
        assert_eq!(resolve(BASE, "@other:6000/up"), None);
        assert_eq!(resolve(BASE, "other:6000/up"), None);
        assert_eq!(
            resolve(BASE, "./a:b").unwrap(),
            "http://reg:5000/v2/team/app/blobs/uploads/a:b"
        );
    }

    #[test]
    fn origins() {
        assert!(same_origin("http://reg:80/a", "http://REG/b"));
        assert!(same_origin("https://reg/a", "https://reg:443/b?x"));
        assert!(!same_origin("http://reg:5000/a", "http://reg:5001/a"));
        assert!(!same_origin("http://reg/a", "https://reg/a"));
        assert!(!same_origin("http://reg/a", "http://evil/a"));
        assert!(!same_origin("http://reg@evil/a", "http://reg/a"));
        assert!(same_origin("http://[::1]:5000/a", "http://[::1]:5000/b"));
        assert!(!same_origin("http://[::1]/a", "http://[::1]:5000/b"));
        assert_eq!(
            origin("http://[::1]/a"),
            Some(("http".into(), "[::1]".into(), 80))
        );
        assert_eq!(origin("relative/path"), None);
        assert_eq!(origin("http://reg:notaport/"), None);
        // A scheme starts with a letter and holds only letters, digits and
        // `+-.` (RFC 3986 §3.1); anything else is not an absolute URL.
        assert_eq!(origin("1x://evil:80/"), None);
        assert_eq!(origin("h~p://evil:80/"), None);
        assert_eq!(origin("://evil:80/"), None);
        assert_eq!(
            origin("git+ssh://Host:22/x"),
            Some(("git+ssh".into(), "host".into(), 22))
        );
    }
}
