//! Rule matchers: path (exact, segment-aware prefix, template), methods and host, each
//! compared against one reading of a request (see [`super::readings`]).

use super::readings::{eq_folded, fold, strip_prefix_folded, HostReading};
use crate::headers::HeaderSnapshot;
use crate::schema::{
    check_path, err, is_token_name, ConfigError, RawHeaderMatch, RawMatch, SyntaxError,
};

#[derive(Debug, Default)]
pub struct Matcher {
    pub path: PathMatch,
    /// Upper case; empty matches every method.
    pub methods: Vec<String>,
    pub host: Option<HostMatch>,
    /// Compare the path ignoring case (for upstreams that route case-insensitively).
    pub ignore_case: bool,
    /// Every one must hold.
    pub headers: Vec<HeaderMatch>,
    /// The request must not match this.
    pub not: Option<Box<Matcher>>,
}

/// Whether a matcher matches one reading of a request. Headers can leave it open: a
/// header sent twice, or under a second spelling, may be read either way upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    Yes,
    No,
    /// Some upstream reading matches and another does not.
    Maybe,
}

impl Fit {
    fn of(b: bool) -> Fit {
        if b {
            Fit::Yes
        } else {
            Fit::No
        }
    }

    fn and(self, other: impl FnOnce() -> Fit) -> Fit {
        match self {
            Fit::No => Fit::No,
            Fit::Yes => other(),
            Fit::Maybe => match other() {
                Fit::No => Fit::No,
                _ => Fit::Maybe,
            },
        }
    }

    fn not(self) -> Fit {
        match self {
            Fit::Yes => Fit::No,
            Fit::No => Fit::Yes,
            Fit::Maybe => Fit::Maybe,
        }
    }
}

/// A condition on one request header, by lower-case name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderMatch {
    pub name: String,
    pub test: HeaderTest,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderTest {
    Exact(String),
    Prefix(String),
    /// `true`: present (any value); `false`: absent.
    Present(bool),
}

impl HeaderMatch {
    /// Every value an upstream may read for the header: each value sent under any spelling
    /// of its name (`x_env` for `x-env`, as CGI and WSGI read it), all of them joined when
    /// there are several, and none at all when only another spelling was sent. The test
    /// must give one answer for every reading to be `Yes` or `No`.
    fn fit(&self, headers: &HeaderSnapshot) -> Fit {
        let mut values = headers.get_all_spellings(&self.name).peekable();
        if values.peek().is_none() {
            return Fit::of(self.test.holds(None));
        }
        let values: Vec<String> = values.collect();
        let (mut some_hold, mut some_fail) = (false, false);
        let mut note = |holds: bool| {
            some_hold |= holds;
            some_fail |= !holds;
        };
        for v in &values {
            note(self.test.holds(Some(v)));
        }
        if values.len() > 1 {
            note(self.test.holds(Some(&values.join(","))));
        }
        if !headers.contains(&self.name) {
            note(self.test.holds(None));
        }
        match (some_hold, some_fail) {
            (true, true) => Fit::Maybe,
            (true, false) => Fit::Yes,
            _ => Fit::No,
        }
    }
}

impl HeaderTest {
    fn holds(&self, value: Option<&str>) -> bool {
        match (self, value) {
            (HeaderTest::Present(want), v) => *want == v.is_some(),
            (_, None) => false,
            (HeaderTest::Exact(x), Some(v)) => v == x,
            (HeaderTest::Prefix(x), Some(v)) => v.starts_with(x.as_str()),
        }
    }
}

#[derive(Debug, Default)]
pub enum PathMatch {
    #[default]
    Any,
    Exact(String),
    /// Segment-aware: `/health` matches `/health` and `/health/x`, not `/healthz`, so a
    /// public prefix never opens a neighbouring route by accident.
    Prefix(String),
    /// `/workflows/{id}/steps`: `{name}` and `*` match one segment, a final `**` the rest.
    Template(Vec<Segment>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    One,
    Rest,
}

impl PathMatch {
    pub fn prefix(p: String) -> PathMatch {
        if p == "/" {
            PathMatch::Any
        } else {
            PathMatch::Prefix(p)
        }
    }

    pub fn template(t: &str) -> Result<PathMatch, SyntaxError> {
        let parts: Vec<&str> = t.trim_start_matches('/').split('/').collect();
        let mut segs = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let seg = if *part == "**" {
                if i + 1 != parts.len() {
                    return Err(SyntaxError::TemplateRest);
                }
                Segment::Rest
            } else if *part == "*"
                || (part.starts_with('{') && part.ends_with('}') && part.len() > 2)
            {
                Segment::One
            } else if part.contains(['{', '}', '*']) {
                return Err(SyntaxError::TemplateSegment((*part).to_string()));
            } else {
                Segment::Literal((*part).to_string())
            };
            segs.push(seg);
        }
        Ok(PathMatch::Template(segs))
    }

    /// The literal text this matcher compares, for deciding whether case can matter.
    fn literals(&self) -> Vec<&str> {
        match self {
            PathMatch::Any => vec![],
            PathMatch::Exact(p) | PathMatch::Prefix(p) => vec![p.as_str()],
            PathMatch::Template(segs) => segs
                .iter()
                .filter_map(|s| match s {
                    Segment::Literal(l) => Some(l.as_str()),
                    _ => None,
                })
                .collect(),
        }
    }

    /// `fold`: compare ignoring case (see [`crate::routing::fold`]).
    pub(crate) fn matches(&self, path: &str, fold: bool) -> bool {
        if fold {
            self.matches_with::<Folded>(path)
        } else {
            self.matches_with::<AsIs>(path)
        }
    }

    /// One body for both comparisons, compiled once for each: the case-sensitive one, on
    /// every request, stays a plain byte comparison.
    fn matches_with<C: Compare>(&self, path: &str) -> bool {
        match self {
            PathMatch::Any => true,
            PathMatch::Exact(p) => C::eq(path, p),
            PathMatch::Prefix(p) => match C::strip_prefix(path, p) {
                Some(rest) => p.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
                None => false,
            },
            PathMatch::Template(segs) => {
                let Some(rest) = path.strip_prefix('/') else {
                    return false;
                };
                let mut parts = rest.split('/');
                for seg in segs {
                    match seg {
                        Segment::Rest => return true,
                        Segment::One => {
                            if parts.next().is_none_or(str::is_empty) {
                                return false;
                            }
                        }
                        Segment::Literal(l) => {
                            if !parts.next().is_some_and(|p| C::eq(p, l)) {
                                return false;
                            }
                        }
                    }
                }
                parts.next().is_none()
            }
        }
    }
}

/// How a path's text is compared with a rule's.
trait Compare {
    fn strip_prefix<'a>(s: &'a str, prefix: &str) -> Option<&'a str>;
    fn eq(a: &str, b: &str) -> bool;
}

/// As written.
struct AsIs;

impl Compare for AsIs {
    fn strip_prefix<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
        s.strip_prefix(prefix)
    }

    fn eq(a: &str, b: &str) -> bool {
        a == b
    }
}

/// Ignoring case, as lenient upstreams compare (see [`fold`]).
struct Folded;

impl Compare for Folded {
    fn strip_prefix<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
        strip_prefix_folded(s, prefix)
    }

    fn eq(a: &str, b: &str) -> bool {
        eq_folded(a, b)
    }
}

/// `api.example.com` exactly, or `*.example.com` for any subdomain, case-insensitive. As
/// in Envoy's virtual-host matching, a request naming a port matches only a pattern that
/// ends in `:*` (any port, or none).
#[derive(Debug, PartialEq, Eq)]
pub struct HostMatch {
    pub name: HostName,
    pub any_port: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum HostName {
    Exact(String),
    Suffix(String),
}

impl HostMatch {
    pub fn parse(h: &str) -> Result<HostMatch, SyntaxError> {
        let h = h.to_ascii_lowercase();
        let (h, any_port) = match h.strip_suffix(":*") {
            Some(rest) => (rest.to_string(), true),
            None => (h, false),
        };
        let (h, v6) = match h.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            Some(inner) => (inner.to_string(), true),
            None => (h, false),
        };
        let allowed = |c: char| {
            c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '*') || (v6 && c == ':')
        };
        if h.is_empty() || !h.chars().all(allowed) || h.ends_with('.') {
            return Err(SyntaxError::HostName);
        }
        let name = match h.strip_prefix('*') {
            Some(rest) if rest.starts_with('.') && rest.len() > 1 && !rest.contains('*') => {
                HostName::Suffix(rest.to_string())
            }
            Some(_) => return Err(SyntaxError::HostWildcard),
            None if h.contains('*') => return Err(SyntaxError::HostWildcard),
            None => HostName::Exact(h),
        };
        Ok(HostMatch { name, any_port })
    }

    fn matches(&self, r: HostReading<'_>) -> bool {
        if r.port.is_some() && !self.any_port {
            return false;
        }
        let host = r.host;
        match &self.name {
            HostName::Exact(h) => host.eq_ignore_ascii_case(h),
            HostName::Suffix(s) => {
                host.len() > s.len()
                    && host
                        .get(host.len() - s.len()..)
                        .is_some_and(|tail| tail.eq_ignore_ascii_case(s))
            }
        }
    }
}

impl Matcher {
    /// `path` without its query; `fold`: this reading ignores case whatever the rule says.
    /// The path goes first: it is the test that rules out most rules.
    pub fn matches(
        &self,
        method: &str,
        host: HostReading<'_>,
        path: &str,
        fold: bool,
        headers: &HeaderSnapshot,
    ) -> Fit {
        let request_line = self.path.matches(path, fold || self.ignore_case)
            && (self.methods.is_empty() || self.methods.iter().any(|m| m == method))
            && self.host.as_ref().is_none_or(|h| h.matches(host));
        if !request_line {
            return Fit::No;
        }
        if self.headers.is_empty() && self.not.is_none() {
            return Fit::Yes;
        }
        let fit = self
            .headers
            .iter()
            .fold(Fit::Yes, |f, h| f.and(|| h.fit(headers)));
        match &self.not {
            None => fit,
            Some(not) => fit.and(|| not.matches(method, host, path, fold, headers).not()),
        }
    }

    /// Whether the rule's path text has letters a case-insensitive reading would fold.
    pub fn has_upper_case(&self) -> bool {
        let own = !self.ignore_case
            && self
                .path
                .literals()
                .iter()
                .any(|l| l.chars().any(|c| fold(c) != c));
        own || self.not.as_ref().is_some_and(|n| n.has_upper_case())
    }

    /// Whether the matcher, or its `not`, compares the host.
    pub fn reads_host(&self) -> bool {
        self.host.is_some() || self.not.as_ref().is_some_and(|n| n.reads_host())
    }
}

impl Matcher {
    /// The matcher at `at` (`rules[3].match`); `ignore_case`: the config's default.
    pub(crate) fn compile(
        m: RawMatch,
        at: &str,
        ignore_case: bool,
    ) -> Result<Matcher, ConfigError> {
        let path = match (m.path, m.path_prefix, m.path_template) {
            (None, None, None) => PathMatch::Any,
            (Some(p), None, None) => {
                check_path(&p, &format!("{at}.path"))?;
                PathMatch::Exact(p)
            }
            (None, Some(p), None) => {
                check_path(&p, &format!("{at}.path_prefix"))?;
                PathMatch::prefix(p)
            }
            (None, None, Some(t)) => {
                let here = format!("{at}.path_template");
                check_path(&t, &here)?;
                PathMatch::template(&t).map_err(|m| err(here, m))?
            }
            _ => {
                return Err(err(
                    at.to_string(),
                    "give one of path, path_prefix and path_template",
                ))
            }
        };
        let mut methods = Vec::with_capacity(m.methods.len());
        for (j, meth) in m.methods.iter().enumerate() {
            if !is_token_name(meth) {
                return Err(err(format!("{at}.methods[{j}]"), "must be an HTTP method"));
            }
            methods.push(meth.to_ascii_uppercase());
        }
        let host = match m.host {
            None => None,
            Some(h) => Some(HostMatch::parse(&h).map_err(|e| err(format!("{at}.host"), e))?),
        };
        let ignore_case = m.ignore_case.unwrap_or(ignore_case);
        let headers = m
            .headers
            .into_iter()
            .enumerate()
            .map(|(j, h)| HeaderMatch::compile(h, &format!("{at}.headers[{j}]")))
            .collect::<Result<_, _>>()?;
        let not = match m.not {
            None => None,
            Some(inner) => {
                let inner = Matcher::compile(*inner, &format!("{at}.not"), ignore_case)?;
                Some(Box::new(inner))
            }
        };
        Ok(Matcher {
            path,
            methods,
            host,
            ignore_case,
            headers,
            not,
        })
    }
}

impl HeaderMatch {
    fn compile(h: RawHeaderMatch, at: &str) -> Result<HeaderMatch, ConfigError> {
        let name = h.name.to_ascii_lowercase();
        if !is_token_name(&name) || name.starts_with(':') {
            return Err(err(format!("{at}.name"), "must be a header name"));
        }
        let test = match (h.exact, h.prefix, h.present) {
            (Some(x), None, None) => HeaderTest::Exact(x),
            (None, Some(p), None) if !p.is_empty() => HeaderTest::Prefix(p),
            (None, Some(_), None) => return Err(err(format!("{at}.prefix"), "must not be empty")),
            (None, None, Some(p)) => HeaderTest::Present(p),
            _ => return Err(err(at, "give one of exact, prefix and present")),
        };
        Ok(HeaderMatch { name, test })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_is_segment_aware() {
        let p = PathMatch::prefix("/health".into());
        assert!(p.matches("/health", false));
        assert!(p.matches("/health/live", false));
        assert!(!p.matches("/healthz", false));
        assert!(!p.matches("/heal", false));
        assert!(!p.matches("/HEALTH", false));
        assert!(p.matches("/HEALTH/x", true));
        assert!(!p.matches("/HEALTHz", true));
        let p = PathMatch::prefix("/api/".into());
        assert!(p.matches("/api/x", false));
        assert!(!p.matches("/api", false));
        assert!(PathMatch::prefix("/".into()).matches("/anything", false));
    }

    #[test]
    fn templates_match_whole_segments() {
        let t = PathMatch::template("/workflows/{id}/steps").unwrap();
        assert!(t.matches("/workflows/wf_123/steps", false));
        assert!(!t.matches("/workflows//steps", false));
        assert!(!t.matches("/workflows/a/b/steps", false));
        assert!(!t.matches("/workflows/a/steps/x", false));
        assert!(!t.matches("/Workflows/a/steps", false));
        assert!(t.matches("/Workflows/a/STEPS", true));
        let t = PathMatch::template("/files/*/**").unwrap();
        assert!(t.matches("/files/a/b/c", false));
        assert!(t.matches("/files/a/", false));
        assert!(!t.matches("/files", false));
        assert!(PathMatch::template("/a/**/b").is_err());
        assert!(PathMatch::template("/a/x{id}").is_err());
    }

    #[test]
    fn host_patterns_match_case_insensitively_and_ports_only_with_a_star() {
        let at = |host, port| HostReading { host, port };
        let h = HostMatch::parse("API.example.com").unwrap();
        assert!(h.matches(at("Api.Example.Com", None)));
        assert!(!h.matches(at("api.example.com", Some("443"))));
        assert!(!h.matches(at("api.example.com.evil", None)));
        let any = HostMatch::parse("api.example.com:*").unwrap();
        assert!(any.matches(at("api.example.com", Some("443"))));
        assert!(any.matches(at("api.example.com", None)));
        assert!(HostMatch::parse("[::1]:*")
            .unwrap()
            .matches(at("::1", Some("8080"))));
        for bad in [
            "*",
            "*.",
            "",
            "a.*.com",
            "x@a.com",
            "a.com.",
            "a.com:443",
            "a b",
        ] {
            assert!(HostMatch::parse(bad).is_err(), "{bad}");
        }
    }
}
