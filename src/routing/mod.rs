//! Which rules a request selects, under every reading an upstream may give it.
//!
//! A filter that decides on one reading of a request while the upstream serves another is
//! bypassed: `/health/..;/admin` is `/health/..;/admin` to a matcher that takes the path
//! as sent, and `/admin` to a servlet container. So the request is read every way a
//! common upstream or Envoy setting reads it ([`readings`]: the path as sent, with dot
//! segments resolved, percent-decoded, with `;` parameters cut, without a trailing slash,
//! ignoring case; the host with and without its port, trailing dot and user info; `HEAD`
//! as `GET`), and [`select_rules`] returns every rule any reading selects. The flow then
//! requires all of them to let the request through: the strictest reading decides.
//! Headers that some upstreams take as the real path, method or host (`X-Original-URL`,
//! `X-HTTP-Method-Override`, `X-Forwarded-Host`, a `_method` parameter) add readings too.
//!
//! A plain request (lower-case path without `%`, `;`, `\`, `//`, dot segments or a
//! trailing slash, a host without port, an upper-case method) has one reading and costs
//! one scan of the matchers.

mod matcher;
mod readings;

use std::borrow::Cow;

use crate::extract::{form_decode, name_key};
use crate::headers::HeaderSnapshot;

pub use self::matcher::{
    Fit, HeaderMatch, HeaderTest, HostMatch, HostName, Matcher, PathMatch, Segment,
};
use self::readings::{host_readings, method_readings, might_fold, push_new};
pub(crate) use self::readings::{path_readings, route_path};
pub use self::readings::{HostReading, Readings};

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

/// What the matchers as a whole read, known at configure time so that a request need not
/// scan them to find out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MatcherTraits {
    /// Some matcher compares the host: hosts have readings.
    pub hosts: bool,
    /// Some case-sensitive matcher has a letter case folding changes: every path may read
    /// differently ignoring case.
    pub case: bool,
}

impl MatcherTraits {
    pub fn of<'m>(matchers: impl Iterator<Item = &'m Matcher>) -> MatcherTraits {
        matchers.fold(MatcherTraits::default(), |t, m| MatcherTraits {
            hosts: t.hosts || m.reads_host(),
            case: t.case || m.has_upper_case(),
        })
    }
}

/// The rules a request selects: `routes`, first match wins, one entry per distinct
/// selection (`None` standing for the default, the as-sent reading's first); and every deny
/// rule that some reading matches.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Selected {
    pub routes: Readings<Option<usize>>,
    pub denies: Readings<usize>,
}

/// The rules (by the index paired with each matcher) that `method`, `authority` and `path`
/// (query included), with the override headers among `headers`, select under every reading
/// (see the module documentation). `traits` are those of all the matchers. A matcher that
/// a reading may or may not match (a header sent twice) is selected, and the scan for that
/// reading's first match goes on past it.
pub fn select_rules<'m>(
    routes: impl Iterator<Item = (usize, &'m Matcher)> + Clone,
    denies: impl Iterator<Item = (usize, &'m Matcher)> + Clone,
    traits: MatcherTraits,
    method: &str,
    authority: &str,
    path: &str,
    headers: &HeaderSnapshot,
) -> Selected {
    let overrides = Overrides::of(headers, method, path);
    let mut paths = path_readings(path);
    for p in &overrides.paths {
        for r in path_readings(p) {
            push_new(&mut paths, Cow::Owned(r.into_owned()));
        }
    }
    let mut hosts = host_readings(authority, traits.hosts);
    if traits.hosts {
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

    let mut selected = Selected::default();
    for p in &paths {
        // Upstreams that route case-insensitively (Express, ASP.NET, Spring with
        // case-insensitive matching) read `/ADMIN` as `/admin`.
        let folds: &[bool] = if traits.case || might_fold(p) {
            &[false, true]
        } else {
            &[false]
        };
        for &fold in folds {
            for h in &hosts {
                for m in &methods {
                    let fit = |r: &Matcher| r.matches(m, *h, p, fold, headers);
                    first_matches(routes.clone(), fit, &mut selected.routes);
                    for (i, r) in denies.clone() {
                        if fit(r) != Fit::No && !selected.denies.contains(&i) {
                            selected.denies.push(i);
                        }
                    }
                }
            }
        }
    }
    selected
}

/// Adds to `out` the first rule that surely matches (`None` if none does), and every rule
/// before it that may.
fn first_matches<'m>(
    rules: impl Iterator<Item = (usize, &'m Matcher)>,
    fit: impl Fn(&Matcher) -> Fit,
    out: &mut Readings<Option<usize>>,
) {
    let mut add = |pick: Option<usize>| {
        if !out.contains(&pick) {
            out.push(pick);
        }
    };
    for (i, r) in rules {
        match fit(r) {
            Fit::Yes => return add(Some(i)),
            Fit::Maybe => add(Some(i)),
            Fit::No => {}
        }
    }
    add(None)
}

/// Whether an override header or a `_method` parameter may make an upstream read the
/// request as some other method (whatever it names: the method as sent is not the only
/// reading then).
pub fn has_method_override(headers: &HeaderSnapshot, method: &str, path: &str) -> bool {
    !Overrides::of(headers, method, path).methods.is_empty()
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
        let is_one_of = |names: &[&str], name: &[u8]| names.iter().any(|n| n.as_bytes() == name);
        for (name, value) in headers.iter_bytes() {
            // Only the few override headers are copied.
            let text = || String::from_utf8_lossy(value).trim().to_string();
            if is_one_of(&PATH_OVERRIDES, name) {
                o.paths.push(text());
            } else if is_one_of(&METHOD_OVERRIDES, name) {
                o.methods.push(text());
            } else if is_one_of(&HOST_OVERRIDES, name) {
                // A list (one entry per proxy): each may be the one an upstream reads.
                let list = text();
                o.hosts
                    .extend(list.split(',').map(|h| h.trim().to_ascii_lowercase()));
            }
        }
        if !method.eq_ignore_ascii_case("GET") {
            let query = path.split_once('?').map_or("", |(_, q)| q);
            // Names compared as frameworks decode them (`%5Fmethod`, `_method[]`).
            for (name, m) in query.split('&').filter_map(|p| p.split_once('=')) {
                if name_key(name) == "_method" {
                    o.methods.push(form_decode(m));
                }
            }
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(path: PathMatch, methods: &[&str], host: Option<&str>) -> Matcher {
        Matcher {
            path,
            methods: methods.iter().map(|m| m.to_string()).collect(),
            host: host.map(|h| HostMatch::parse(h).unwrap()),
            ..Matcher::default()
        }
    }

    fn prefix(p: &str) -> PathMatch {
        PathMatch::prefix(p.into())
    }

    /// A public `/health` and `/public`, a protected `/admin`, a `/validation/{id}`
    /// template and a catch-all.
    fn rules() -> Vec<Matcher> {
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
        sel(
            rules().iter(),
            traits(rules().iter()),
            method,
            "api.example.com",
            path,
            &none(),
        )
    }

    /// `select_rules` as a Vec, to compare with `vec![...]`.
    fn sel<'m>(
        m: impl Iterator<Item = &'m Matcher> + Clone,
        t: MatcherTraits,
        method: &str,
        authority: &str,
        path: &str,
        headers: &HeaderSnapshot,
    ) -> Vec<Option<usize>> {
        select_rules(
            m.enumerate(),
            std::iter::empty(),
            t,
            method,
            authority,
            path,
            headers,
        )
        .routes
        .to_vec()
    }

    fn traits<'m>(m: impl Iterator<Item = &'m Matcher>) -> MatcherTraits {
        MatcherTraits::of(m)
    }

    fn none() -> HeaderSnapshot {
        HeaderSnapshot::default()
    }

    #[test]
    fn a_plain_request_has_one_reading() {
        assert_eq!(select("GET", "/health/live?x=1"), vec![Some(0)]);
        assert_eq!(select("GET", "/admin/users"), vec![Some(2)]);
        assert_eq!(
            path_readings("/workflows/active?x=/../y").to_vec(),
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
        let r = [
            rule(PathMatch::Any, &["GET"], None),
            rule(PathMatch::Any, &[], None),
        ];
        assert_eq!(
            sel(r.iter(), traits(r.iter()), "HEAD", "h", "/x", &none()),
            vec![Some(1), Some(0)]
        );
        assert_eq!(
            sel(r.iter(), traits(r.iter()), "get", "h", "/x", &none()),
            vec![Some(1), Some(0)]
        );
        assert_eq!(
            sel(r.iter(), traits(r.iter()), "GET", "h", "/x", &none()),
            vec![Some(0)]
        );
    }

    #[test]
    fn hosts_are_read_as_envoy_and_as_upstreams_read_them() {
        let r = [
            rule(PathMatch::Any, &[], Some("public.example.com")),
            rule(PathMatch::Any, &[], Some("admin.example.com")),
            rule(PathMatch::Any, &[], Some("any.example.com:*")),
            rule(PathMatch::Any, &[], None),
        ];
        let pick = |a: &str| sel(r.iter(), traits(r.iter()), "GET", a, "/", &none());
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
            sel(
                rules().iter(),
                traits(rules().iter()),
                "GET",
                "x@y:1",
                "/admin",
                &none()
            ),
            vec![Some(2)]
        );
    }

    #[test]
    fn override_headers_are_readings_too() {
        let h = |pairs: &[(&str, &str)]| HeaderSnapshot::from_pairs(pairs);
        let r = rules();
        let over = h(&[("x-original-url", "/admin/users")]);
        assert_eq!(
            sel(r.iter(), traits(r.iter()), "GET", "a", "/public", &over),
            vec![Some(1), Some(2)]
        );
        let over = h(&[("x-rewrite-url", "/%61dmin?x=1")]);
        assert!(sel(r.iter(), traits(r.iter()), "GET", "a", "/health", &over).contains(&Some(2)));
        let post = [
            rule(PathMatch::Any, &["DELETE"], None),
            rule(PathMatch::Any, &[], None),
        ];
        for (headers, path) in [
            (vec![("x-http-method-override", "DELETE")], "/x"),
            (vec![("x-method-override", "delete")], "/x"),
            (vec![], "/x?_method=DELETE"),
            (vec![], "/x?%5Fmethod=DEL%45TE"),
            (vec![], "/x?_method[]=DELETE"),
        ] {
            let picks = sel(
                post.iter(),
                traits(post.iter()),
                "POST",
                "a",
                path,
                &h(&headers),
            );
            assert_eq!(picks, vec![Some(1), Some(0)], "{headers:?} {path}");
        }
        let hosts = [
            rule(PathMatch::Any, &[], Some("admin.example.com")),
            rule(PathMatch::Any, &[], None),
        ];
        let over = h(&[("x-forwarded-host", "cdn.example, ADMIN.example.com")]);
        let picks = sel(
            hosts.iter(),
            traits(hosts.iter()),
            "GET",
            "public.example.com",
            "/",
            &over,
        );
        assert_eq!(picks, vec![Some(1), Some(0)]);
    }

    #[test]
    fn first_match_wins_and_query_is_ignored() {
        let rules = [
            rule(PathMatch::Exact("/a".into()), &["GET"], None),
            rule(PathMatch::prefix("/a".into()), &[], None),
            rule(PathMatch::Any, &[], Some("*.example.com:*")),
        ];
        let none = HeaderSnapshot::default();
        let first = |m, a, p| sel(rules.iter(), traits(rules.iter()), m, a, p, &none);
        assert_eq!(first("GET", "x", "/a?x=1"), vec![Some(0)]);
        assert_eq!(first("POST", "x", "/a"), vec![Some(1)]);
        assert_eq!(first("GET", "x", "/a/b#f"), vec![Some(1)]);
        assert_eq!(first("GET", "api.Example.com:8443", "/b"), vec![Some(2)]);
        assert_eq!(first("GET", "example.com", "/b"), vec![None]);
        assert_eq!(first("GET", "evil-example.com", "/b"), vec![None]);
    }

    fn compiled(v: serde_json::Value) -> Matcher {
        let raw: crate::schema::RawMatch = serde_json::from_value(v).unwrap();
        Matcher::compile(raw, "rules[0].match", false).unwrap()
    }

    #[test]
    fn header_matchers_select_a_rule_only_when_every_reading_agrees() {
        let r = [
            compiled(serde_json::json!({"headers": [{"name": "X-Env", "exact": "canary"}]})),
            compiled(serde_json::json!({})),
        ];
        let pick = |pairs: &[(&str, &str)]| {
            sel(
                r.iter(),
                traits(r.iter()),
                "GET",
                "a",
                "/",
                &HeaderSnapshot::from_pairs(pairs),
            )
        };
        assert_eq!(pick(&[("x-env", "canary")]), vec![Some(0)]);
        assert_eq!(pick(&[("x-env", "prod")]), vec![Some(1)]);
        assert_eq!(pick(&[]), vec![Some(1)]);
        // Sent twice, or under a spelling CGI and WSGI read as the same name: an upstream
        // may read either value, so both rules are selected and the stricter decides.
        assert_eq!(
            pick(&[("x-env", "canary"), ("x-env", "prod")]),
            vec![Some(0), Some(1)]
        );
        assert_eq!(pick(&[("x_env", "canary")]), vec![Some(0), Some(1)]);
        assert_eq!(
            pick(&[("x-env", "canary"), ("x_env", "canary")]),
            vec![Some(0), Some(1)]
        );
    }

    #[test]
    fn header_prefix_and_presence() {
        let m = compiled(serde_json::json!({"headers": [
            {"name": "x-client", "prefix": "batch-"}, {"name": "x-debug", "present": false}]}));
        let fit = |pairs: &[(&str, &str)]| {
            let h = HeaderSnapshot::from_pairs(pairs);
            m.matches(
                "GET",
                HostReading {
                    host: "a",
                    port: None,
                },
                "/",
                false,
                &h,
            )
        };
        assert_eq!(fit(&[("x-client", "batch-7")]), Fit::Yes);
        assert_eq!(fit(&[("x-client", "batch-7"), ("x-debug", "1")]), Fit::No);
        assert_eq!(fit(&[("x-client", "web")]), Fit::No);
        assert_eq!(
            fit(&[("x-client", "batch-7"), ("x_debug", "1")]),
            Fit::Maybe
        );
    }

    #[test]
    fn not_in_a_match_excludes_what_it_matches() {
        let r = [
            compiled(serde_json::json!({"path_prefix": "/api", "not": {"methods": ["GET"]}})),
            compiled(serde_json::json!({})),
        ];
        let pick = |m: &str, path: &str, pairs: &[(&str, &str)]| {
            sel(
                r.iter(),
                traits(r.iter()),
                m,
                "a",
                path,
                &HeaderSnapshot::from_pairs(pairs),
            )
        };
        assert_eq!(pick("POST", "/api/x", &[]), vec![Some(0)]);
        assert_eq!(pick("GET", "/api/x", &[]), vec![Some(1)]);
        // HEAD is also read as GET, and an override header as the method it names.
        assert_eq!(pick("HEAD", "/api/x", &[]), vec![Some(0), Some(1)]);
        assert_eq!(
            pick("GET", "/api/x", &[("x-http-method-override", "DELETE")]),
            vec![Some(1), Some(0)]
        );
        let hosts = [compiled(
            serde_json::json!({"not": {"host": "internal.example.com"}}),
        )];
        assert!(traits(hosts.iter()).hosts, "a host under not is read too");
    }

    #[test]
    fn deny_rules_are_selected_by_every_reading_that_matches_them() {
        let routes = [compiled(serde_json::json!({}))];
        let denies = [compiled(serde_json::json!({"path_prefix": "/admin"}))];
        let all = || routes.iter().chain(denies.iter());
        let s = select_rules(
            routes.iter().enumerate(),
            denies.iter().enumerate().map(|(i, m)| (i + 1, m)),
            traits(all()),
            "GET",
            "a",
            "/public/%2e%2e/admin",
            &none(),
        );
        assert_eq!(s.routes.to_vec(), vec![Some(0)]);
        assert_eq!(s.denies.to_vec(), vec![1]);
    }
}
