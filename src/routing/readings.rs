//! The readings of a request: every way a common upstream or Envoy setting reads its path,
//! host and method. A plain request has one reading of each.

use std::borrow::Cow;

use smallvec::{smallvec, SmallVec};

/// A request has a handful of readings of each part; they stay inline.
pub type Readings<T> = SmallVec<[T; 4]>;

/// The path without query or fragment.
pub fn route_path(path: &str) -> &str {
    let end = path.find(['?', '#']).unwrap_or(path.len());
    path.get(..end).unwrap_or(path)
}

/// The method as sent; upper-cased (Werkzeug upper-cases `get`); `HEAD` also as `GET`
/// (every common framework answers `HEAD` with the `GET` handler).
pub(super) fn method_readings(method: &str) -> Readings<Cow<'_, str>> {
    let mut out: Readings<Cow<'_, str>> = smallvec![Cow::Borrowed(method)];
    if method.bytes().any(|b| b.is_ascii_lowercase()) {
        out.push(Cow::Owned(method.to_ascii_uppercase()));
    }
    if method.eq_ignore_ascii_case("HEAD") {
        out.push(Cow::Borrowed("GET"));
    }
    out
}

/// The readings of a request path, the path as sent first. Each transformation is one
/// that some upstream or Envoy setting applies:
/// - dot segments resolved (RFC 3986 §5.2.4; Envoy's `normalize_path`, most servers);
/// - empty segments merged (`merge_slashes`, many routers);
/// - percent-decoded, `\` as `/` (Flask, Express params, `%2F`-decoding servers, IIS);
/// - `;` parameters cut from each segment, before or after decoding (Tomcat, Jetty, Spring);
/// - trailing slashes dropped (Express, Spring before 6, most non-strict routers).
pub fn path_readings(path: &str) -> Readings<Cow<'_, str>> {
    let raw = route_path(path);
    let mut out: Readings<Cow<'_, str>> = smallvec![Cow::Borrowed(raw)];
    let suspicious = raw.contains(['%', ';', '\\']) || raw.contains("//") || has_dot_segment(raw);
    if suspicious {
        let decoded = percent_decode(raw);
        let candidates = [
            resolve_dots(raw, false),
            resolve_dots(raw, true),
            resolve_dots(&decoded, true),
            resolve_dots(&percent_decode(&cut_params(raw)), true),
            resolve_dots(&cut_params(&decoded), true),
        ];
        for c in candidates {
            push_new(&mut out, Cow::Owned(c));
        }
    }
    let trimmed: Vec<String> = out
        .iter()
        .filter(|p| p.len() > 1 && p.ends_with('/'))
        .map(|p| {
            let t = p.trim_end_matches('/');
            if t.is_empty() { "/" } else { t }.to_string()
        })
        .collect();
    for t in trimmed {
        push_new(&mut out, Cow::Owned(t));
    }
    out
}

pub(super) fn push_new<'a>(out: &mut Readings<Cow<'a, str>>, candidate: Cow<'a, str>) {
    if !out.contains(&candidate) {
        out.push(candidate);
    }
}

fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|s| s == "." || s == "..")
}

/// Whether case-insensitive matching could read `path` differently: it has an upper-case
/// letter, or a non-ASCII one (Java's `equalsIgnoreCase` folds `ſ` to `s`, `K` to `k`).
pub(super) fn might_fold(path: &str) -> bool {
    path.bytes()
        .any(|b| b.is_ascii_uppercase() || !b.is_ascii())
}

/// Every valid `%XX` decoded (invalid UTF-8 becomes U+FFFD); `\` read as `/`.
fn percent_decode(path: &str) -> String {
    percent_encoding::percent_decode_str(path)
        .decode_utf8_lossy()
        .replace('\\', "/")
}

/// Each segment cut at its first `;` (`/admin;x/users` -> `/admin/users`).
fn cut_params(path: &str) -> String {
    path.split('/')
        .map(|seg| seg.split(';').next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("/")
}

/// RFC 3986 §5.2.4 dot-segment removal; with `merge`, empty segments are dropped too.
fn resolve_dots(path: &str, merge: bool) -> String {
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing = false;
    for seg in path.trim_start_matches('/').split('/') {
        trailing = false;
        match seg {
            "." => trailing = true,
            ".." => {
                segments.pop();
                trailing = true;
            }
            "" if merge => trailing = true,
            s => segments.push(s),
        }
    }
    let mut out = format!("/{}", segments.join("/"));
    if trailing && !segments.is_empty() {
        out.push('/');
    }
    out
}

/// One reading of the authority: a host (lower case) and the port, if the reading keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HostReading<'a> {
    pub host: &'a str,
    pub port: Option<&'a str>,
}

/// The readings of an authority. Envoy picks a virtual host by the whole authority (port
/// included unless `strip_any_host_port`; a trailing dot kept unless
/// `strip_trailing_host_dot`), while upstreams and other settings drop the port, the
/// trailing dot and any `user@`. Without host rules one reading is enough.
pub(super) fn host_readings(authority: &str, rules_match_hosts: bool) -> Readings<HostReading<'_>> {
    let exact = split_port(authority);
    if !rules_match_hosts {
        return smallvec![exact];
    }
    let lenient = HostReading {
        host: bare_host(exact.host),
        port: exact.port,
    };
    let mut out: Readings<HostReading<'_>> = smallvec![exact];
    for r in [
        lenient,
        HostReading {
            port: None,
            ..lenient
        },
        HostReading {
            port: None,
            ..exact
        },
    ] {
        if !out.contains(&r) {
            out.push(r);
        }
    }
    out
}

/// The host without `user@` and without a trailing dot.
fn bare_host(h: &str) -> &str {
    let h = h.rsplit_once('@').map_or(h, |(_, after)| after);
    h.strip_suffix('.').unwrap_or(h)
}

/// `host:port`, `[v6]:port`, or a host alone. A suffix after `:` that is not a port
/// stays part of the host (no host rule matches it then).
fn split_port(authority: &str) -> HostReading<'_> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        match rest.split_once(']') {
            Some((h, "")) => (h, None),
            Some((h, p)) => match p.strip_prefix(':') {
                Some(port) if is_port(port) => (h, Some(port)),
                _ => (authority, None),
            },
            None => (authority, None),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, port)) if is_port(port) && !h.contains(':') => (h, Some(port)),
            _ => (authority, None),
        }
    };
    HostReading { host, port }
}

fn is_port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
}

/// Case-insensitive comparison as lenient upstreams make it: ASCII and Unicode simple
/// lower-casing, plus the folds that map non-ASCII letters onto ASCII ones (`ſ`, `K`,
/// `İ`, `ı`), so `/ſecret` reads as `/secret` to a Java router.
pub fn fold(c: char) -> char {
    match c {
        'ſ' => 's',
        'K' => 'k',
        'İ' | 'ı' => 'i',
        c if c.is_ascii() => c.to_ascii_lowercase(),
        c => {
            let mut lower = c.to_lowercase();
            match (lower.next(), lower.next()) {
                (Some(l), None) => l,
                _ => c,
            }
        }
    }
}

/// `s` without `prefix`, comparing folded characters.
pub fn strip_prefix_folded<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let mut chars = s.char_indices();
    for p in prefix.chars() {
        let (_, c) = chars.next()?;
        if fold(c) != fold(p) {
            return None;
        }
    }
    let rest = chars.next().map_or(s.len(), |(i, _)| i);
    s.get(rest..)
}

pub fn eq_folded(a: &str, b: &str) -> bool {
    strip_prefix_folded(a, b).is_some_and(str::is_empty)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_transformation() {
        let got = |p: &str| -> Vec<String> {
            path_readings(p)
                .into_iter()
                .map(|c| c.into_owned())
                .collect()
        };
        assert_eq!(got("/a/"), vec!["/a/", "/a"]);
        assert_eq!(got("/"), vec!["/"]);
        assert_eq!(
            got("/a;b/c"),
            vec!["/a;b/c", "/a/c"],
            "the cut reading is the servlet one"
        );
        assert_eq!(got("/x/%2e%2e/y"), vec!["/x/%2e%2e/y", "/y"]);
        assert_eq!(resolve_dots("/a/b/../../..", true), "/");
        assert_eq!(resolve_dots("/a/./b/.", false), "/a/b/");
        assert_eq!(resolve_dots("/a//b", false), "/a//b");
        assert_eq!(percent_decode("/a%2"), "/a%2");
        assert_eq!(percent_decode("/%zz%41"), "/%zzA");
        assert_eq!(percent_decode("/%ff"), "/\u{fffd}");
        assert_eq!(split_port("[::1]:80").host, "::1");
        assert_eq!(split_port("a:b:c").port, None);
    }

    #[test]
    fn folding_maps_what_java_and_js_fold() {
        assert!(eq_folded("/ſecret", "/secret"));
        assert!(eq_folded("/\u{212A}ey", "/key"));
        assert!(eq_folded("/ADMİN", "/admin"));
        assert!(!eq_folded("/admi", "/admin"));
        assert_eq!(strip_prefix_folded("/ADMIN/x", "/admin"), Some("/x"));
        assert_eq!(strip_prefix_folded("/ü", "/Ü"), Some(""));
    }
}
