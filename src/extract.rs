//! Where a token comes from: a header with a prefix, a query parameter, a cookie.

use std::borrow::Cow;
use std::sync::Arc;

use smallvec::SmallVec;

use crate::headers::HeaderSnapshot;

/// One place a provider looks for its token. Names are shared (`Arc`): every verified
/// request's identity says where its token was, without copying the name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// Header `name` (lower case) whose value starts with `prefix` (compared case-insensitively,
    /// so `bearer` and `BEARER` are the RFC 6750 scheme too).
    Header { name: Arc<str>, prefix: Arc<str> },
    /// Query parameter of the request path.
    Query(Arc<str>),
    /// Cookie of the `cookie` header.
    Cookie(Arc<str>),
}

/// A token found in a request, with where it was found (to strip it when asked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found<'h> {
    /// Borrowed from the request's headers when it was there as sent.
    pub token: Cow<'h, str>,
    pub source: TokenSource,
}

/// Why no single token could be taken from a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExtractError {
    /// More than one token: RFC 6750 §2 forbids it, and a filter that verified one of them
    /// must not forward the others to an upstream that might read those instead.
    Ambiguous,
    /// A credential in a token header that is not a well-formed bearer credential
    /// (`Bearer\t<t>`, `Bearer:<t>`, `Bearer<t>`, `Basic x,Bearer <t>`): the client meant to
    /// send a token, and an upstream may well read one there, so it is not "no token".
    Malformed,
}

/// Looks for the token in `sources`. Every place is searched, each repeated header, query
/// parameter and cookie counted, and each spelling an upstream may take for the same
/// name (`x_jwt` for `x-jwt`, `access%5Ftoken` or `access_token[]` for `access_token`):
/// one token is `Some`, none is `None`, more than one is [`ExtractError::Ambiguous`]. A
/// header that carries another scheme (say `Basic`) is not a token.
pub fn find_token<'s, 'h>(
    sources: impl IntoIterator<Item = &'s TokenSource>,
    headers: &'h HeaderSnapshot,
    path: &str,
) -> Result<Option<Found<'h>>, ExtractError> {
    find_candidate(sources, headers, path)?
        .map(Candidate::into_found)
        .transpose()
}

/// [`find_token`], but the one token found is a [`Candidate`] whose shape is checked
/// by its user: the check reads every byte, and a user that knows these very bytes as
/// well formed (the verified-token cache holds only such) may spare it. The outcome is
/// [`find_token`]'s: where there is more than one token, a malformed one is still
/// reported before the ambiguity, as if each had been checked where it was found.
pub fn find_candidate<'s, 'h>(
    sources: impl IntoIterator<Item = &'s TokenSource>,
    headers: &'h HeaderSnapshot,
    path: &str,
) -> Result<Option<Candidate<'h>>, ExtractError> {
    // Runs on every request: the common case (one Authorization header) allocates nothing.
    let mut found: Option<Candidate<'h>> = None;
    let mut seen: SmallVec<[&TokenSource; 4]> = SmallVec::new();
    for source in sources {
        // Providers on one route often share a source (the Authorization header).
        if seen.contains(&source) {
            continue;
        }
        seen.push(source);
        let after_scheme =
            matches!(source, TokenSource::Header { prefix, .. } if !prefix.is_empty());
        let candidate = |raw: Cow<'h, [u8]>| Candidate {
            raw,
            after_scheme,
            source: source.clone(),
        };
        let tokens: SmallVec<[Candidate<'h>; 2]> = match source {
            TokenSource::Header { name, prefix } => {
                let mut tokens = SmallVec::new();
                for value in headers.values_spelled_as(name) {
                    match credential(value, prefix) {
                        Credential::Token(t) => tokens.push(candidate(Cow::Borrowed(t))),
                        Credential::Malformed => return Err(ExtractError::Malformed),
                        Credential::Other => {}
                    }
                }
                tokens
            }
            TokenSource::Query(name) => query_params(path, name)
                .map(|t| candidate(Cow::Owned(t.into_bytes())))
                .collect(),
            TokenSource::Cookie(name) => headers
                .get_all("cookie")
                .flat_map(|c| cookies(&c, name).collect::<Vec<_>>())
                .map(|t| candidate(Cow::Owned(t.into_bytes())))
                .collect(),
        };
        if usize::from(found.is_some()) + tokens.len() > 1 {
            let malformed = found.iter().chain(&tokens).any(|t| !t.well_formed());
            return Err(if malformed {
                ExtractError::Malformed
            } else {
                ExtractError::Ambiguous
            });
        }
        found = found.or(tokens.into_iter().next());
    }
    Ok(found)
}

/// A token found in a request, its shape not checked yet (see [`find_candidate`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate<'h> {
    /// Borrowed from the request's headers when it was there as sent.
    raw: Cow<'h, [u8]>,
    /// Found after a scheme (`Bearer`): it must be a token68 (RFC 7235 §2.1).
    after_scheme: bool,
    pub source: TokenSource,
}

impl<'h> Candidate<'h> {
    /// The token's bytes, as sent.
    pub fn bytes(&self) -> &[u8] {
        &self.raw
    }

    /// Whether the token has its source's shape: after a scheme, empty or a token68;
    /// anything elsewhere.
    pub fn well_formed(&self) -> bool {
        !self.after_scheme || self.raw.is_empty() || is_token68(&self.raw)
    }

    /// The token as text, if it is well formed (non-UTF-8 bytes where any bytes are
    /// allowed become U+FFFD).
    pub fn text(&self) -> Option<Cow<'_, str>> {
        self.well_formed()
            .then(|| String::from_utf8_lossy(&self.raw))
    }

    /// The token checked, as [`find_token`] gives it.
    pub fn into_found(self) -> Result<Found<'h>, ExtractError> {
        if !self.well_formed() {
            return Err(ExtractError::Malformed);
        }
        let token = match self.raw {
            Cow::Borrowed(b) => String::from_utf8_lossy(b),
            Cow::Owned(b) => Cow::Owned(String::from_utf8_lossy(&b).into_owned()),
        };
        Ok(Found {
            token,
            source: self.source,
        })
    }
}

/// What a token header's value holds.
enum Credential<T> {
    Token(T),
    /// Another scheme (`Basic ...`): not a token.
    Other,
    Malformed,
}

/// `Bearer abc` -> `abc`; `Bearer` or `Bearer   ` -> `` (an empty token, reported as
/// malformed rather than missing, since the client meant to send one). The scheme is
/// case-insensitive and followed by spaces, then one token68 (RFC 7235 §2.1: checked by
/// [`Candidate::well_formed`]); anything else that names the scheme is malformed.
fn credential<'a>(value: &'a [u8], prefix: &str) -> Credential<&'a [u8]> {
    let value = trim_blanks(value);
    if prefix.is_empty() {
        return Credential::Token(value);
    }
    let scheme = prefix.trim_end().as_bytes();
    let separator = prefix.as_bytes().get(scheme.len()..).unwrap_or_default();
    let Some(rest) = strip_prefix_ignore_case(value, scheme) else {
        // `Basic x, Bearer <t>` (two credentials joined into one header) names the scheme
        // too; an upstream may split it and read the token.
        let names_scheme = value
            .split(|&b| b == b',')
            .any(|part| strip_prefix_ignore_case(trim_start(part, blank), scheme).is_some());
        return if names_scheme {
            Credential::Malformed
        } else {
            Credential::Other
        };
    };
    if rest.is_empty() || separator.is_empty() {
        return Credential::Token(rest);
    }
    match rest.strip_prefix(separator) {
        Some(t) => Credential::Token(trim_start(t, |b| b == b' ')),
        None => Credential::Malformed,
    }
}

fn blank(b: u8) -> bool {
    matches!(b, b' ' | b'\t')
}

/// `value` without the spaces and tabs around it.
fn trim_blanks(value: &[u8]) -> &[u8] {
    let value = trim_start(value, blank);
    let end = value.iter().rposition(|&b| !blank(b)).map_or(0, |i| i + 1);
    value.get(..end).unwrap_or_default()
}

fn trim_start(value: &[u8], drop: impl Fn(u8) -> bool) -> &[u8] {
    let start = value.iter().position(|&b| !drop(b)).unwrap_or(value.len());
    value.get(start..).unwrap_or_default()
}

fn strip_prefix_ignore_case<'a>(s: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| s.get(prefix.len()..))
        .flatten()
}

/// RFC 7235 token68: the characters a bearer token (and a JWT) is made of. Every
/// request's token is checked, so eight bytes at a time ([`token68_word`]); the tail a
/// byte at a time.
pub(crate) fn is_token68(t: &[u8]) -> bool {
    let padding = t.iter().rev().take_while(|&&b| b == b'=').count();
    let body = t.get(..t.len() - padding).unwrap_or_default();
    let words = body.chunks_exact(8);
    let tail = words.remainder();
    !body.is_empty()
        && words
            .map(|w| u64::from_le_bytes(w.try_into().unwrap_or([0; 8])))
            .all(token68_word)
        && tail.iter().all(|&b| token68_byte(b))
}

/// One of token68's characters but the final `=` padding.
fn token68_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;
const LOWS: u64 = 0x7f7f_7f7f_7f7f_7f7f;

/// Whether all eight bytes of `x` pass [`token68_byte`], by byte-wise arithmetic on the
/// word (each byte ASCII first, so no sum below carries into the next byte): letters are
/// `a..=z` once `0x20` is set, `-./0-9` one range, then `+`, `_` and `~`.
fn token68_word(x: u64) -> bool {
    if x & HIGHS != 0 {
        return false;
    }
    let valid = in_range(x | (ONES * 0x20), b'a', b'z')
        | in_range(x, b'-', b'9')
        | equal(x, b'+')
        | equal(x, b'_')
        | equal(x, b'~');
    valid == HIGHS
}

/// The high bit of each byte of `x` (every byte ASCII) that is in `lo..=hi` (`lo` > 0).
fn in_range(x: u64, lo: u8, hi: u8) -> u64 {
    let at_least_lo = x + ONES * u64::from(0x80 - lo);
    let above_hi = x + ONES * u64::from(0x7f - hi);
    at_least_lo & !above_hi & HIGHS
}

/// The high bit of each byte of `x` (every byte ASCII) that equals `c` (ASCII).
fn equal(x: u64, c: u8) -> u64 {
    let v = x ^ (ONES * u64::from(c));
    !(((v & LOWS) + LOWS) | v) & HIGHS
}

/// A parameter or cookie name as frameworks compare it: percent-decoded (`+` as space),
/// an array suffix cut (`name[]`, `name[0]`: PHP, Rails, qs), and `.` and space read as
/// `_` (PHP).
pub(crate) fn name_key(raw: &str) -> String {
    let decoded = form_decode(raw);
    let base = decoded.split('[').next().unwrap_or_default();
    base.replace(['.', ' '], "_")
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte (invalid
/// UTF-8 becomes U+FFFD).
pub(crate) fn form_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

fn query_params<'a>(path: &'a str, name: &'a str) -> impl Iterator<Item = String> + 'a {
    let query = path.split_once('?').map_or("", |(_, q)| q);
    let query = query.split('#').next().unwrap_or("");
    let key = name_key(name);
    query.split('&').filter_map(move |pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (!pair.is_empty() && name_key(k) == key).then(|| form_decode(v))
    })
}

fn cookies<'a>(header: &'a str, name: &'a str) -> impl Iterator<Item = String> + 'a {
    let key = name_key(name);
    header.split(';').filter_map(move |pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (name_key(k.trim()) == key).then(|| form_decode(v.trim().trim_matches('"')))
    })
}

/// The request path with `source`'s token removed, if the token was in the query.
pub fn path_without_param(path: &str, name: &str) -> String {
    let Some((base, query)) = path.split_once('?') else {
        return path.to_string();
    };
    let key = name_key(name);
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| name_key(pair.split_once('=').map_or(*pair, |(k, _)| k)) != key)
        .collect();
    if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    }
}

/// The `cookie` header with cookie `name` removed; `None` when nothing is left.
pub fn cookie_header_without(header: &str, name: &str) -> Option<String> {
    let key = name_key(name);
    let kept: Vec<&str> = header
        .split(';')
        .map(str::trim)
        .filter(|pair| {
            !pair.is_empty()
                && name_key(pair.split_once('=').map_or(*pair, |(k, _)| k.trim())) != key
        })
        .collect();
    (!kept.is_empty()).then(|| kept.join("; "))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_word_at_a_time_token68_check_agrees_with_the_byte_check_on_every_byte() {
        for b in 0..=255u8 {
            for at in 0..8 {
                let mut word = *b"AZaz09-_";
                word[at] = b;
                let expected = word.iter().all(|&c| token68_byte(c));
                assert_eq!(
                    token68_word(u64::from_le_bytes(word)),
                    expected,
                    "{b:#x} at {at}"
                );
            }
        }
        for (t, ok) in [
            ("abc", true),
            ("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln-_~+/A==", true),
            ("abcdefgh", true),
            ("abcdefghi", true),
            ("abcdefg!", false),
            ("abcdefgh!", false),
            ("abc=def", false),
            ("========", false),
            ("abcdefgh\u{e9}", false),
            ("ab cdefghijk", false),
        ] {
            assert_eq!(is_token68(t.as_bytes()), ok, "{t:?}");
        }
    }

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

    fn one<'h>(sources: &[TokenSource], h: &'h HeaderSnapshot, path: &str) -> Option<Found<'h>> {
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
        assert_eq!(one(&bearer(), &headers(&[]), "/"), None);
    }

    #[test]
    fn a_credential_that_names_the_scheme_but_is_not_well_formed_is_malformed() {
        for v in [
            "Bearer\ta.b.c",
            "Bearera.b.c",
            "Bearer:a.b.c",
            "Bearer a.b.c d.e.f",
            "Bearer a.b.c,Bearer d.e.f",
            "Basic dXNlcjpwdw==,Bearer a.b.c",
            "Basic x, bearer a.b.c",
            "Bearer a.b.c\u{a0}",
        ] {
            let h = headers(&[("authorization", v)]);
            assert_eq!(
                find_token(&bearer(), &h, "/"),
                Err(ExtractError::Malformed),
                "{v:?}"
            );
        }
        // Other schemes, alone, are simply not ours.
        for v in [
            "Basic dXNlcjpwdw==",
            "Digest username=\"a\", realm=\"b\"",
            "Negotiate x",
        ] {
            let h = headers(&[("authorization", v)]);
            assert_eq!(one(&bearer(), &h, "/"), None, "{v:?}");
        }
        // Padding and the other token68 characters are fine.
        let h = headers(&[("authorization", "Bearer  ab-c_d~e+f/g==")]);
        assert_eq!(one(&bearer(), &h, "/").unwrap().token, "ab-c_d~e+f/g==");
    }

    #[test]
    fn a_malformed_token_is_reported_before_a_second_token_wherever_it_is() {
        // Shapes are checked late (find_candidate), but the answer is as if each token
        // had been checked where it was found.
        let both = vec![
            bearer().remove(0),
            TokenSource::Query("access_token".into()),
        ];
        let cases: [(&[(&str, &str)], &str); 4] = [
            (
                &[
                    ("authorization", "Bearer a b"),
                    ("authorization", "Bearer c"),
                ],
                "/",
            ),
            (
                &[
                    ("authorization", "Bearer c"),
                    ("authorization", "Bearer a b"),
                ],
                "/",
            ),
            (&[("authorization", "Bearer a b")], "/?access_token=c"),
            (&[("authorization", "Bearer a\u{e9}")], "/?access_token=c"),
        ];
        for (pairs, path) in cases {
            let h = headers(pairs);
            assert_eq!(
                find_token(&both, &h, path),
                Err(ExtractError::Malformed),
                "{pairs:?} {path}"
            );
            assert_eq!(
                find_candidate(&both, &h, path),
                Err(ExtractError::Malformed),
                "{pairs:?} {path}"
            );
        }
        // One token: found, its shape left to the caller.
        let h = headers(&[("authorization", "Bearer a b")]);
        let lone = find_candidate(&both, &h, "/").unwrap().unwrap();
        assert!(!lone.well_formed());
        assert_eq!(lone.text(), None);
        assert_eq!(lone.bytes(), b"a b");
        assert_eq!(lone.into_found(), Err(ExtractError::Malformed));
        // Good ones still make an ambiguity.
        let h = headers(&[("authorization", "Bearer a.b")]);
        assert_eq!(
            find_candidate(&both, &h, "/?access_token=c d"),
            Err(ExtractError::Ambiguous),
            "any text is a query token's shape"
        );
    }

    #[test]
    fn a_second_token_under_another_spelling_of_the_name_is_still_a_second_token() {
        let sources = vec![
            bearer().remove(0),
            TokenSource::Query("access_token".into()),
            TokenSource::Cookie("session".into()),
            TokenSource::Header {
                name: "x-jwt".into(),
                prefix: "".into(),
            },
        ];
        let auth = ("authorization", "Bearer a.b.c");
        for (extra, path) in [
            (None, "/?access%5Ftoken=d.e.f"),
            (None, "/?%61ccess_token=d.e.f"),
            (None, "/?access_token[]=d.e.f"),
            (None, "/?access_token%5B0%5D=d.e.f"),
            (None, "/?access.token=d.e.f"),
            (None, "/?access+token=d.e.f"),
            (Some(("cookie", "sess%69on=d.e.f")), "/"),
            (Some(("x_jwt", "d.e.f")), "/"),
        ] {
            let mut pairs = vec![auth];
            pairs.extend(extra);
            assert_eq!(
                find_token(&sources, &headers(&pairs), path),
                Err(ExtractError::Ambiguous),
                "{extra:?} {path}"
            );
        }
        // Alone, an encoded name is found (and its value decoded, as the upstream would).
        let h = headers(&[]);
        let f = one(&sources, &h, "/?access%5Ftoken=a%2Eb.c").unwrap();
        assert_eq!(f.token, "a.b.c");
        assert_eq!(f.source, TokenSource::Query("access_token".into()));
        assert_eq!(
            path_without_param("/a?access%5Ftoken=t&x=1&access_token[]=u", "access_token"),
            "/a?x=1"
        );
        assert_eq!(
            cookie_header_without("a=1; sess%69on=t", "session").as_deref(),
            Some("a=1")
        );
    }

    #[test]
    fn query_and_cookie_sources() {
        let sources = vec![
            TokenSource::Query("access_token".into()),
            TokenSource::Cookie("session".into()),
        ];
        let h = headers(&[]);
        let f = one(&sources, &h, "/a?x=1&access_token=t.q.s&y=2").unwrap();
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
            assert_eq!(
                find_token(&both, &h, path),
                Err(ExtractError::Ambiguous),
                "{h:?} {path}"
            );
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
            prefix: "".into(),
        }];
        let h = headers(&[("x-jwt", "a.b.c")]);
        let f = one(&sources, &h, "/").unwrap();
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
