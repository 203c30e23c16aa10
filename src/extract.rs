//! Where a token comes from: a header with a prefix, a query parameter, a cookie.

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

/// Looks for a token in `sources`, in order. `header` reads a request header by lower-case
/// name. A header that is present but carries another scheme (say `Basic`) is not a token.
pub fn find_token(
    sources: &[TokenSource],
    header: &dyn Fn(&str) -> Option<String>,
    path: &str,
) -> Option<Found> {
    sources.iter().find_map(|source| {
        let token = match source {
            TokenSource::Header { name, prefix } => {
                header(name).and_then(|v| strip_prefix(&v, prefix))
            }
            TokenSource::Query(name) => query_param(path, name),
            TokenSource::Cookie(name) => header("cookie").and_then(|c| cookie(&c, name)),
        }?;
        Some(Found {
            token,
            source: source.clone(),
        })
    })
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

fn query_param(path: &str, name: &str) -> Option<String> {
    let query = path.split_once('?')?.1;
    let query = query.split('#').next().unwrap_or("");
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| v.to_string())
    })
}

fn cookie(header: &str, name: &str) -> Option<String> {
    header.split(';').find_map(|pair| {
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

    fn headers(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |n| {
            pairs
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        for v in [
            "Bearer abc.def.ghi",
            "bearer abc.def.ghi",
            "BEARER abc.def.ghi",
            "  Bearer   abc.def.ghi ",
        ] {
            let h = move |n: &str| (n == "authorization").then(|| v.to_string());
            let f = find_token(&bearer(), &h, "/").unwrap();
            assert_eq!(f.token, "abc.def.ghi", "{v}");
        }
    }

    #[test]
    fn other_schemes_are_not_tokens_and_empty_bearer_is_empty() {
        let h = headers(&[("authorization", "Basic dXNlcjpwdw==")]);
        assert_eq!(find_token(&bearer(), &h, "/"), None);
        let h = headers(&[("authorization", "Bearer")]);
        assert_eq!(find_token(&bearer(), &h, "/").unwrap().token, "");
        let h = headers(&[("authorization", "Bearer ")]);
        assert_eq!(find_token(&bearer(), &h, "/").unwrap().token, "");
        let h = headers(&[("authorization", "Bearerabc")]);
        assert_eq!(find_token(&bearer(), &h, "/"), None);
        assert_eq!(find_token(&bearer(), &headers(&[]), "/"), None);
    }

    #[test]
    fn query_and_cookie_sources() {
        let sources = vec![
            TokenSource::Query("access_token".into()),
            TokenSource::Cookie("session".into()),
        ];
        let f = find_token(&sources, &headers(&[]), "/a?x=1&access_token=t.q.s&y=2").unwrap();
        assert_eq!(f.token, "t.q.s");
        assert_eq!(f.source, TokenSource::Query("access_token".into()));
        let h = headers(&[("cookie", "a=1; session=t.c.s; b=2")]);
        let f = find_token(&sources, &h, "/a").unwrap();
        assert_eq!(f.token, "t.c.s");
        assert_eq!(
            find_token(
                &sources,
                &headers(&[("cookie", "sessionx=1")]),
                "/a?access_tokenx=1"
            ),
            None
        );
    }

    #[test]
    fn custom_header_without_prefix() {
        let sources = vec![TokenSource::Header {
            name: "x-jwt".into(),
            prefix: String::new(),
        }];
        let f = find_token(&sources, &headers(&[("x-jwt", "a.b.c")]), "/").unwrap();
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
        assert_eq!(find_token(&bearer(), &h, "/"), None);
        let h = headers(&[("authorization", "ü")]);
        assert_eq!(find_token(&bearer(), &h, "/"), None);
    }
}
