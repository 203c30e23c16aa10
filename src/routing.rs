//! Which rules a request selects, under every reading an upstream may give it.
//!
//! A filter that decides on one reading of a request while the upstream serves another is
//! bypassed: `/health/..;/admin` is `/health/..;/admin` to a matcher that takes the path
//! as sent, and `/admin` to a servlet container. So the request is read every way a
//! common upstream or Envoy setting reads it (the path as sent, with dot segments
//! resolved, percent-decoded, with `;` parameters cut, without a trailing slash, ignoring
//! case; the host with and without its port, trailing dot and user info; `HEAD` as `GET`),
//! and [`select_rules`] returns every rule any reading selects. The flow then requires all
//! of them to let the request through: the strictest reading decides. Headers that some
//! upstreams take as the real path, method or host (`X-Original-URL`,
//! `X-HTTP-Method-Override`, `X-Forwarded-Host`, a `_method` parameter) add readings too.
//!
//! A plain request (lower-case path without `%`, `;`, `\`, `//`, dot segments or a
//! trailing slash, a host without port, an upper-case method) has one reading and costs
//! one rule scan.

use std::borrow::Cow;

use crate::headers::HeaderSnapshot;
use crate::policy::Rule;

/// Headers that some upstreams take as the request's real path: Symfony and IIS's URL
/// Rewrite read `X-Original-URL` and `X-Rewrite-URL`.
const PATH_OVERRIDES: [&str; 2] = ["x-original-url", "x-rewrite-url"];
/// ... its real method: Express's method-override, Spring, ASP.NET and many API gateways.
const METHOD_OVERRIDES: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];
/// ... its real host: frameworks that trust the proxy in front (Django, Express, Rails).
const HOST_OVERRIDES: [&str; 2] = ["x-forwarded-host", "x-host"];

/// The rules `method`, `authority` and `path` (query included) select, with the override
/// headers among `headers`: one entry per distinct selection, `None` standing for the
/// default; the as-sent reading's first.
pub fn select_rules(
    rules: &[Rule],
    method: &str,
    authority: &str,
    path: &str,
    headers: &HeaderSnapshot,
) -> Vec<Option<usize>> {
    let overrides = Overrides::of(headers, method, path);
    let mut paths = path_readings(path);
    for p in &overrides.paths {
        for r in path_readings(p) {
            push_new(&mut paths, Cow::Owned(r.into_owned()));
        }
    }
    let match_hosts = rules.iter().any(|r| r.matcher.host.is_some());
    let mut hosts = host_readings(authority, match_hosts);
    if match_hosts {
        for h in &overrides.hosts {
            for r in host_readings(h, true) {
                if !hosts.contains(&r) {
                    hosts.push(r);
                }
            }
        }
    }
    let mut methods = method_readings(method);
    for m in &overrides.methods {
        for r in method_readings(m) {
            push_new(&mut methods, Cow::Owned(r.into_owned()));
        }
    }
    let fold_rules = rules
        .iter()
        .any(|r| !r.matcher.ignore_case && r.matcher.has_upper_case());
    let mut selected: Vec<Option<usize>> = Vec::with_capacity(1);
    for p in &paths {
        // Upstreams that route case-insensitively (Express, ASP.NET, Spring with
        // case-insensitive matching) read `/ADMIN` as `/admin`.
        let folds: &[bool] = if fold_rules || might_fold(p) {
            &[false, true]
        } else {
            &[false]
        };
        for &fold in folds {
            for h in &hosts {
                for m in &methods {
                    let pick = rules.iter().position(|r| r.matcher.matches(m, *h, p, fold));
                    if !selected.contains(&pick) {
                        selected.push(pick);
                    }
                }
            }
        }
    }
    selected
}

/// What override headers (and a `_method` query parameter, which Rails, Laravel and
/// Symfony honour) say the request is.
#[derive(Default)]
struct Overrides {
    paths: Vec<String>,
    methods: Vec<String>,
    hosts: Vec<String>,
}

impl Overrides {
    fn of(headers: &HeaderSnapshot, method: &str, path: &str) -> Overrides {
        let mut o = Overrides::default();
        for (name, value) in headers.iter() {
            let value = String::from_utf8_lossy(value).trim().to_string();
            if PATH_OVERRIDES.contains(&name) {
                o.paths.push(value);
            } else if METHOD_OVERRIDES.contains(&name) {
                o.methods.push(value);
            } else if HOST_OVERRIDES.contains(&name) {
                // A list (one entry per proxy): each may be the one an upstream reads.
                o.hosts
                    .extend(value.split(',').map(|h| h.trim().to_ascii_lowercase()));
            }
        }
        if !method.eq_ignore_ascii_case("GET") {
            let query = path.split_once('?').map_or("", |(_, q)| q);
            for pair in query.split('&') {
                if let Some(("_method", m)) = pair.split_once('=') {
                    o.methods.push(m.to_string());
                }
            }
        }
        o
    }
}

/// The path without query or fragment.
pub fn route_path(path: &str) -> &str {
    let end = path.find(['?', '#']).unwrap_or(path.len());
    path.get(..end).unwrap_or(path)
}

/// The method as sent; upper-cased (Werkzeug upper-cases `get`); `HEAD` also as `GET`
/// (every common framework answers `HEAD` with the `GET` handler).
fn method_readings(method: &str) -> Vec<Cow<'_, str>> {
    let mut out = vec![Cow::Borrowed(method)];
    let upper = method.to_ascii_uppercase();
    if upper != method {
        out.push(Cow::Owned(upper.clone()));
    }
    if upper == "HEAD" {
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
pub fn path_readings(path: &str) -> Vec<Cow<'_, str>> {
    let raw = route_path(path);
    let mut out: Vec<Cow<'_, str>> = vec![Cow::Borrowed(raw)];
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

fn push_new<'a>(out: &mut Vec<Cow<'a, str>>, candidate: Cow<'a, str>) {
    if !out.contains(&candidate) {
        out.push(candidate);
    }
}

fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|s| s == "." || s == "..")
}

/// Whether case-insensitive matching could read `path` differently: it has an upper-case
/// letter, or a non-ASCII one (Java's `equalsIgnoreCase` folds `ſ` to `s`, `K` to `k`).
fn might_fold(path: &str) -> bool {
    path.bytes()
        .any(|b| b.is_ascii_uppercase() || !b.is_ascii())
}

/// Every valid `%XX` decoded (invalid UTF-8 becomes U+FFFD); `\` read as `/`.
fn percent_decode(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = |at: usize| bytes.get(at).and_then(|c| (*c as char).to_digit(16));
        match (b, hex(i + 1), hex(i + 2)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push(u8::try_from(hi * 16 + lo).unwrap_or(b'?'));
                i += 3;
            }
            (b'\\', _, _) => {
                out.push(b'/');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).replace('\\', "/")
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
fn host_readings(authority: &str, rules_match_hosts: bool) -> Vec<HostReading<'_>> {
    let exact = split_port(authority);
    if !rules_match_hosts {
        return vec![exact];
    }
    let lenient = HostReading {
        host: bare_host(exact.host),
        port: exact.port,
    };
    let mut out = vec![exact];
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
    use crate::policy::{Action, HostMatch, Matcher, PathMatch};

    fn rule(path: PathMatch, methods: &[&str], host: Option<&str>) -> Rule {
        Rule {
            name: "r".into(),
            matcher: Matcher {
                path,
                methods: methods.iter().map(|m| m.to_string()).collect(),
                host: host.map(|h| HostMatch::parse(h).unwrap()),
                ignore_case: false,
            },
            action: Action::Anonymous,
            dry_run: false,
        }
    }

    fn prefix(p: &str) -> PathMatch {
        PathMatch::prefix(p.into())
    }

    /// A public `/health` and `/public`, a protected `/admin`, a `/validation/{id}`
    /// template and a catch-all.
    fn rules() -> Vec<Rule> {
        vec![
            rule(prefix("/health"), &[], None),
            rule(prefix("/public"), &[], None),
            rule(prefix("/admin"), &[], None),
            rule(
                PathMatch::template("/validation/{id}").unwrap(),
                &["POST"],
                None,
            ),
            rule(PathMatch::Any, &[], None),
        ]
    }

    fn select(method: &str, path: &str) -> Vec<Option<usize>> {
        select_rules(&rules(), method, "api.example.com", path, &none())
    }

    fn none() -> HeaderSnapshot {
        HeaderSnapshot::default()
    }

    #[test]
    fn a_plain_request_has_one_reading() {
        assert_eq!(select("GET", "/health/live?x=1"), vec![Some(0)]);
        assert_eq!(select("GET", "/admin/users"), vec![Some(2)]);
        assert_eq!(
            path_readings("/workflows/active?x=/../y"),
            vec!["/workflows/active"]
        );
        assert!(matches!(path_readings("/a/b")[0], Cow::Borrowed(_)));
    }

    #[test]
    fn every_reading_that_reaches_admin_selects_the_admin_rule() {
        for path in [
            // `;` parameters: servlet containers cut them, so `..;` is a dot segment.
            "/admin;x/users",
            "/;x/admin/users",
            "/health/..;/admin/users",
            "/health/%2e%2e;/admin/users",
            "/public/..;/..;/admin",
            // Dot segments and encodings that a non-normalizing Envoy passes as sent.
            "/health/../admin/users",
            "/health/%2e%2e/admin/users",
            "/health/..%2Fadmin/users",
            "/health/..%5cadmin/users",
            "/health\\..\\admin",
            "/health/./../admin",
            "/%61dmin/users",
            "//admin/users",
            // Case: Express routes `/ADMIN` to `/admin`; Java folds `ſ`... on `/admin` no,
            // but upper case does.
            "/ADMIN/users",
            "/Admin",
        ] {
            let picks = select("GET", path);
            assert!(picks.contains(&Some(2)), "{path}: {picks:?}");
        }
    }

    #[test]
    fn a_protected_path_hiding_a_public_one_keeps_its_own_rule_too() {
        // Decided as /health by a decoding reading, served as /admin by the raw one.
        for path in [
            "/admin/../health",
            "/admin/%2e%2e/health",
            "/admin/..%2Fhealth",
            "/admin/users;x=%2F..%2F..%2Fhealth",
        ] {
            let picks = select("GET", path);
            assert!(picks.contains(&Some(2)), "{path}: {picks:?}");
        }
    }

    #[test]
    fn trailing_slash_selects_the_template_too() {
        let picks = select("POST", "/validation/1/");
        assert!(picks.contains(&Some(3)), "{picks:?}");
        assert!(picks.contains(&Some(4)), "{picks:?}");
        assert_eq!(select("POST", "/validation/1"), vec![Some(3)]);
    }

    #[test]
    fn head_is_read_as_get_and_methods_as_upper_case() {
        let r = vec![
            rule(PathMatch::Any, &["GET"], None),
            rule(PathMatch::Any, &[], None),
        ];
        assert_eq!(
            select_rules(&r, "HEAD", "h", "/x", &none()),
            vec![Some(1), Some(0)]
        );
        assert_eq!(
            select_rules(&r, "get", "h", "/x", &none()),
            vec![Some(1), Some(0)]
        );
        assert_eq!(select_rules(&r, "GET", "h", "/x", &none()), vec![Some(0)]);
    }

    #[test]
    fn hosts_are_read_as_envoy_and_as_upstreams_read_them() {
        let r = vec![
            rule(PathMatch::Any, &[], Some("public.example.com")),
            rule(PathMatch::Any, &[], Some("admin.example.com")),
            rule(PathMatch::Any, &[], Some("any.example.com:*")),
            rule(PathMatch::Any, &[], None),
        ];
        let pick = |a: &str| select_rules(&r, "GET", a, "/", &none());
        assert_eq!(pick("public.example.com"), vec![Some(0)]);
        assert_eq!(pick("PUBLIC.example.com"), vec![Some(0)]);
        // Envoy routes a host with a port (or a trailing dot, or user info) to another
        // virtual host unless told otherwise; the upstream may not care.
        assert_eq!(pick("public.example.com:1"), vec![Some(3), Some(0)]);
        assert_eq!(pick("admin.example.com."), vec![Some(3), Some(1)]);
        assert_eq!(pick("x@admin.example.com"), vec![Some(3), Some(1)]);
        // `:*` accepts any port, so both readings agree.
        assert_eq!(pick("any.example.com:8443"), vec![Some(2)]);
        assert_eq!(pick("[::1]:80"), vec![Some(3)]);
        // Without host rules the host is not read at all.
        assert_eq!(
            select_rules(&rules(), "GET", "x@y:1", "/admin", &none()),
            vec![Some(2)]
        );
    }

    #[test]
    fn override_headers_are_readings_too() {
        let h = |pairs: &[(&str, &str)]| HeaderSnapshot::from_pairs(pairs);
        let r = rules();
        let over = h(&[("x-original-url", "/admin/users")]);
        assert_eq!(
            select_rules(&r, "GET", "a", "/public", &over),
            vec![Some(1), Some(2)]
        );
        let over = h(&[("x-rewrite-url", "/%61dmin?x=1")]);
        assert!(select_rules(&r, "GET", "a", "/health", &over).contains(&Some(2)));
        let post = vec![
            rule(PathMatch::Any, &["DELETE"], None),
            rule(PathMatch::Any, &[], None),
        ];
        for (headers, path) in [
            (vec![("x-http-method-override", "DELETE")], "/x"),
            (vec![("x-method-override", "delete")], "/x"),
            (vec![], "/x?_method=DELETE"),
        ] {
            let picks = select_rules(&post, "POST", "a", path, &h(&headers));
            assert_eq!(picks, vec![Some(1), Some(0)], "{headers:?} {path}");
        }
        let hosts = vec![
            rule(PathMatch::Any, &[], Some("admin.example.com")),
            rule(PathMatch::Any, &[], None),
        ];
        let over = h(&[("x-forwarded-host", "cdn.example, ADMIN.example.com")]);
        let picks = select_rules(&hosts, "GET", "public.example.com", "/", &over);
        assert_eq!(picks, vec![Some(1), Some(0)]);
    }

    #[test]
    fn readings() {
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
