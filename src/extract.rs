//! Where a token comes from: a header with a prefix, a query parameter, a cookie.

use crate::headers::HeaderSnapshot;

/// One place a provider looks for its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// Header `name` (lower case) whose value starts with `prefix` (compared case-insensitively,
    /// so `bearer` and `BEARER` are the RFC 6750 scheme too).
    Header { name: String, prefix: String },
    /// Query parameter of the request path.
    Query(String),
    /// Cookie of the `cookie` header.
    Cookie(String),
}

/// A token found in a request, with where it was found (to strip it when asked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub token: String,
    pub source: TokenSource,
}

/// More than one token in one request: RFC 6750 §2 forbids it, and a filter that verified
/// one of them must not forward the others to an upstream that might read those instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ambiguous;

/// Looks for the token in `sources`. Every place is searched, each repeated header, query
/// parameter and cookie counted: one token is `Some`, none is `None`, more than one is
/// [`Ambiguous`]. A header that carries another scheme (say `Basic`) is not a token.
pub fn find_token<'s>(
    sources: impl IntoIterator<Item = &'s TokenSource>,
    headers: &HeaderSnapshot,
    path: &str,
) -> Result<Option<Found>, Ambiguous> {
    let mut found: Option<Found> = None;
    let mut seen: Vec<&TokenSource> = Vec::new();
    for source in sources {
        // Providers on one route often share a source (the Authorization header).
        if seen.contains(&source) {
            continue;
        }
        seen.push(source);
        let tokens: Vec<String> = match source {
            TokenSource::Header { name, prefix } => headers
                .get_all(name)
                .filter_map(|v| strip_prefix(&v, prefix))
                .collect(),
            TokenSource::Query(name) => query_params(path, name).collect(),
            TokenSource::Cookie(name) => headers
                .get_all("cookie")
                .flat_map(|c| cookies(&c, name).collect::<Vec<_>>())
                .collect(),
        };
        for token in tokens {
            if found.is_some() {
                return Err(Ambiguous);
            }
            found = Some(Found {
                token,
                source: source.clone(),
            });
        }
    }
    Ok(found)
}

/// `Bearer abc` -> `abc`; `Bearer` or `Bearer   ` -> `` (an empty token, reported as malformed
/// rather than missing, since the client meant to send one).
fn strip_prefix(value: &str, prefix: &str) -> Option<String> {
    let value = value.trim();
    if prefix.is_empty() {
        return Some(value.to_string());
    }
    let scheme = prefix.trim_end();
    let head = value.get(..prefix.len());
    if head.is_some_and(|h| h.eq_ignore_ascii_case(prefix)) {
        return value.get(prefix.len()..).map(|t| t.trim().to_string());
    }
    if value.eq_ignore_ascii_case(scheme) {
        return Some(String::new());
    }
    None
}

fn query_params<'a>(path: &'a str, name: &'a str) -> impl Iterator<Item = String> + 'a {
    let query = path.split_once('?').map_or("", |(_, q)| q);
    let query = query.split('#').next().unwrap_or("");
    query.split('&').filter_map(move |pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (!pair.is_empty() && k == name).then(|| v.to_string())
    })
}

fn cookies<'a>(header: &'a str, name: &'a str) -> impl Iterator<Item = String> + 'a {
    header.split(';').filter_map(move |pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k.trim() == name).then(|| v.trim().trim_matches('"').to_string())
    })
}

/// The request path with `source`'s token removed, if the token was in the query.
pub fn path_without_param(path: &str, name: &str) -> String {
    let Some((base, query)) = path.split_once('?') else {
        return path.to_string();
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| pair.split_once('=').map_or(*pair, |(k, _)| k) != name)
        .collect();
    if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    }
}

/// The `cookie` header with cookie `name` removed; `None` when nothing is left.
pub fn cookie_header_without(header: &str, name: &str) -> Option<String> {
    let kept: Vec<&str> = header
        .split(';')
        .map(str::trim)
        .filter(|pair| {
            !pair.is_empty() && pair.split_once('=').map_or(*pair, |(k, _)| k.trim()) != name
        })
        .collect();
    (!kept.is_empty()).then(|| kept.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer() -> Vec<TokenSource> {
        vec![TokenSource::Header {
            name: "authorization".into(),
            prefix: "Bearer ".into(),
        }]
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderSnapshot {
        HeaderSnapshot::from_pairs(pairs)
    }

    fn one(sources: &[TokenSource], h: &HeaderSnapshot, path: &str) -> Option<Found> {
        find_token(sources, h, path).unwrap()
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        for v in [
            "Bearer abc.def.ghi",
            "bearer abc.def.ghi",
            "BEARER abc.def.ghi",
            "  Bearer   abc.def.ghi ",
        ] {
            let h = headers(&[("authorization", v)]);
            let f = one(&bearer(), &h, "/").unwrap();
            assert_eq!(f.token, "abc.def.ghi", "{v}");
        }
    }

    #[test]
    fn other_schemes_are_not_tokens_and_empty_bearer_is_empty() {
        let h = headers(&[("authorization", "Basic dXNlcjpwdw==")]);
        assert_eq!(one(&bearer(), &h, "/"), None);
        let h = headers(&[("authorization", "Bearer")]);
        assert_eq!(one(&bearer(), &h, "/").unwrap().token, "");
        let h = headers(&[("authorization", "Bearer ")]);
        assert_eq!(one(&bearer(), &h, "/").unwrap().token, "");
        let h = headers(&[("authorization", "Bearerabc")]);
        assert_eq!(one(&bearer(), &h, "/"), None);
        assert_eq!(one(&bearer(), &headers(&[]), "/"), None);
    }

    #[test]
    fn query_and_cookie_sources() {
        let sources = vec![
            TokenSource::Query("access_token".into()),
            TokenSource::Cookie("session".into()),
        ];
        let f = one(&sources, &headers(&[]), "/a?x=1&access_token=t.q.s&y=2").unwrap();
        assert_eq!(f.token, "t.q.s");
        assert_eq!(f.source, TokenSource::Query("access_token".into()));
        let h = headers(&[("cookie", "a=1; session=t.c.s; b=2")]);
        let f = one(&sources, &h, "/a").unwrap();
        assert_eq!(f.token, "t.c.s");
        let h = headers(&[("cookie", "sessionx=1")]);
        assert_eq!(one(&sources, &h, "/a?access_tokenx=1"), None);
    }

    #[test]
    fn more_than_one_token_is_ambiguous_wherever_they_are() {
        let both = vec![
            bearer().remove(0),
            TokenSource::Query("access_token".into()),
            TokenSource::Cookie("session".into()),
        ];
        let twice = [
            ("authorization", "Bearer a.b.c"),
            ("authorization", "Bearer d.e.f"),
        ];
        for (h, path) in [
            (headers(&twice), "/"),
            (
                headers(&[("authorization", "Bearer a.b.c")]),
                "/?access_token=d.e.f",
            ),
            (headers(&[]), "/?access_token=a&access_token=b"),
            (
                headers(&[("cookie", "session=a"), ("cookie", "session=b")]),
                "/",
            ),
            (headers(&[("cookie", "session=a; session=b")]), "/"),
            (
                headers(&[("authorization", "Bearer a"), ("cookie", "session=b")]),
                "/",
            ),
        ] {
            assert_eq!(find_token(&both, &h, path), Err(Ambiguous), "{h:?} {path}");
        }
        // Another scheme next to the bearer token is not a second token.
        let h = headers(&[
            ("authorization", "Basic dXNlcjpwdw=="),
            ("authorization", "Bearer a"),
        ]);
        assert_eq!(one(&both, &h, "/").unwrap().token, "a");
        // A source listed by two providers is one place, not two.
        let shared = [bearer(), bearer()].concat();
        let h = headers(&[("authorization", "Bearer a")]);
        assert_eq!(one(&shared, &h, "/").unwrap().token, "a");
    }

    #[test]
    fn custom_header_without_prefix() {
        let sources = vec![TokenSource::Header {
            name: "x-jwt".into(),
            prefix: String::new(),
        }];
        let f = one(&sources, &headers(&[("x-jwt", "a.b.c")]), "/").unwrap();
        assert_eq!(f.token, "a.b.c");
    }

    #[test]
    fn stripping_query_and_cookie() {
        assert_eq!(
            path_without_param("/a?access_token=t&x=1", "access_token"),
            "/a?x=1"
        );
        assert_eq!(
            path_without_param("/a?access_token=t", "access_token"),
            "/a"
        );
        assert_eq!(path_without_param("/a", "access_token"), "/a");
        assert_eq!(
            cookie_header_without("a=1; session=t; b=2", "session").as_deref(),
            Some("a=1; b=2")
        );
        assert_eq!(cookie_header_without("session=t", "session"), None);
    }

    #[test]
    fn multibyte_header_values_do_not_panic() {
        let h = headers(&[("authorization", "Béarer ü")]);
        assert_eq!(one(&bearer(), &h, "/"), None);
        let h = headers(&[("authorization", "ü")]);
        assert_eq!(one(&bearer(), &h, "/"), None);
    }
}
