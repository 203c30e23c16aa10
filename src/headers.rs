//! Header maps in the proxy-wasm wire format: a request's headers are read in one host call
//! and looked up here, rather than one host call (and one allocation round trip into the
//! VM) per header.
//!
//! The format: a little-endian u32 count, then per pair the u32 lengths of name and value,
//! then per pair the name and the value, each followed by a NUL.

/// A request's headers as read at one moment. Lookups are by lower-case name (hosts give
/// names lower-cased, as HTTP/2 does) and return the first value.
///
/// The host's buffer is kept whole and indexed, rather than copied header by header: a
/// request's headers are read on every request, most of them never looked at.
#[derive(Debug, Default, Clone)]
pub struct HeaderSnapshot {
    /// The host's buffer, and values the filter set since, appended.
    buf: Vec<u8>,
    /// Where each header's name and value are in `buf`, in request order (inline: a
    /// request rarely has more than 16 headers).
    spans: smallvec::SmallVec<[Span; 16]>,
}

#[derive(Debug, Clone, Copy)]
struct Span {
    name_at: usize,
    name_len: usize,
    value_at: usize,
    value_len: usize,
}

impl HeaderSnapshot {
    /// Parses the wire format. A malformed map (truncated, lengths past the end) yields the
    /// pairs read before the fault: a host bug must not become a panic.
    pub fn parse(bytes: &[u8]) -> HeaderSnapshot {
        HeaderSnapshot::from_wire(bytes.to_vec())
    }

    /// [`HeaderSnapshot::parse`], keeping the host's buffer itself.
    pub fn from_wire(buf: Vec<u8>) -> HeaderSnapshot {
        let count = read_u32(&buf, 0).unwrap_or(0);
        let mut spans = smallvec::SmallVec::new();
        let mut fixed_names: Vec<(usize, String)> = Vec::new();
        let mut data = 4usize.saturating_add(count.saturating_mul(8));
        for i in 0..count {
            let at = 4 + i * 8;
            let (Some(name_len), Some(value_len)) = (read_u32(&buf, at), read_u32(&buf, at + 4))
            else {
                break;
            };
            let Some(name) = slice(&buf, data, name_len) else {
                break;
            };
            if std::str::from_utf8(name).is_err() {
                fixed_names.push((spans.len(), String::from_utf8_lossy(name).into_owned()));
            }
            let name_at = data;
            data = data.saturating_add(name_len).saturating_add(1);
            if slice(&buf, data, value_len).is_none() {
                break;
            }
            spans.push(Span {
                name_at,
                name_len,
                value_at: data,
                value_len,
            });
            data = data.saturating_add(value_len).saturating_add(1);
        }
        let mut h = HeaderSnapshot { buf, spans };
        // Names are text (hosts send ASCII); a name that is not UTF-8 is kept lossily.
        for (i, name) in fixed_names {
            let name_at = h.append(name.as_bytes());
            if let Some(s) = h.spans.get_mut(i) {
                s.name_at = name_at;
                s.name_len = name.len();
            }
        }
        h
    }

    /// Headers from (name, value) text pairs, as tests and benches build requests.
    pub fn from_pairs(pairs: &[(&str, &str)]) -> HeaderSnapshot {
        let mut h = HeaderSnapshot::default();
        for (n, v) in pairs {
            h.push(n, v.as_bytes());
        }
        h
    }

    fn append(&mut self, bytes: &[u8]) -> usize {
        let at = self.buf.len();
        self.buf.extend_from_slice(bytes);
        at
    }

    fn push(&mut self, name: &str, value: &[u8]) {
        let name_at = self.append(name.as_bytes());
        let value_at = self.append(value);
        self.spans.push(Span {
            name_at,
            name_len: name.len(),
            value_at,
            value_len: value.len(),
        });
    }

    fn name_bytes(&self, s: &Span) -> &[u8] {
        slice(&self.buf, s.name_at, s.name_len).unwrap_or_default()
    }

    fn name_of(&self, s: &Span) -> &str {
        std::str::from_utf8(self.name_bytes(s)).unwrap_or_default()
    }

    fn value_of(&self, s: &Span) -> &[u8] {
        slice(&self.buf, s.value_at, s.value_len).unwrap_or_default()
    }

    /// Every value of header `name`, in order, as text (non-UTF-8 bytes become U+FFFD).
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = String> + 'a {
        self.spans
            .iter()
            .filter(move |s| self.name_bytes(s) == name.as_bytes())
            .map(|s| text(self.value_of(s)).into_owned())
    }

    /// Every value of `name` under each spelling an upstream may read as that name: `_`
    /// for `-` (CGI, WSGI and Rack map both to `HTTP_X_NAME`). `name` is lower case.
    pub fn get_all_spellings<'a>(&'a self, name: &'a str) -> impl Iterator<Item = String> + 'a {
        self.values_spelled_as(name).map(|v| text(v).into_owned())
    }

    /// [`HeaderSnapshot::get_all_spellings`], as the bytes sent.
    pub fn values_spelled_as<'a, 'n>(
        &'a self,
        name: &'n str,
    ) -> impl Iterator<Item = &'a [u8]> + use<'a, 'n> {
        self.spans
            .iter()
            .filter(move |s| same_spelling(self.name_bytes(s), name.as_bytes()))
            .map(|s| self.value_of(s))
    }

    /// Every (name, value) pair as bytes, in order: for scans that compare names to a
    /// few known ones (no name is turned into text for that).
    pub fn iter_bytes(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.spans
            .iter()
            .map(|s| (self.name_bytes(s), self.value_of(s)))
    }

    /// Every (name, value) pair, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.spans
            .iter()
            .map(|s| (self.name_of(s), self.value_of(s)))
    }

    /// The names present, each once, that an upstream could read as one of `wanted` (lower
    /// case): the same name in any case, or with `_` for `-` (CGI, WSGI and Rack map both to
    /// `HTTP_X_NAME`).
    pub fn names_spelled_as(&self, wanted: &[impl AsRef<str>]) -> Vec<String> {
        // Runs on every request and almost always finds nothing: no allocation then.
        let mut out: Vec<String> = Vec::new();
        for s in &self.spans {
            let n = self.name_bytes(s);
            if wanted
                .iter()
                .any(|w| same_spelling(n, w.as_ref().as_bytes()))
            {
                let n = self.name_of(s);
                if !out.iter().any(|o| o == n) {
                    out.push(n.to_string());
                }
            }
        }
        out
    }

    /// The names of the headers present, each once, in order.
    pub fn names(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for (n, _) in self.iter() {
            if !out.contains(&n) {
                out.push(n);
            }
        }
        out
    }

    /// The first value of header `name`, as bytes.
    pub fn get_bytes(&self, name: &str) -> Option<&[u8]> {
        self.spans
            .iter()
            .find(|s| self.name_bytes(s) == name.as_bytes())
            .map(|s| self.value_of(s))
    }

    /// The first value of header `name` as text, borrowed unless it is not UTF-8 (those
    /// bytes become U+FFFD).
    pub fn get_str(&self, name: &str) -> Option<std::borrow::Cow<'_, str>> {
        self.get_bytes(name).map(text)
    }

    /// The first value of header `name` as text; bytes that are not UTF-8 become U+FFFD.
    pub fn get(&self, name: &str) -> Option<String> {
        self.get_bytes(name).map(|v| text(v).into_owned())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.get_bytes(name).is_some()
    }

    /// Forgets every value of `name` (the caller removed it from the request).
    pub fn remove(&mut self, name: &str) {
        let buf = &self.buf;
        self.spans
            .retain(|s| slice(buf, s.name_at, s.name_len).unwrap_or_default() != name.as_bytes());
    }

    /// Records that the caller set `name` to `value` on the request.
    pub fn set(&mut self, name: &str, value: &[u8]) {
        self.remove(name);
        self.push(name, value);
    }
}

/// Bytes as text, borrowed when they are UTF-8 (as header values nearly always are); other
/// bytes become U+FFFD. `from_utf8` first: its ASCII fast path is several times faster than
/// the lossy decoder on a long value such as a token.
fn text(v: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(v) {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(v),
    }
}

/// Whether header name `a` reads as `b` to an upstream that takes `_` for `-` and
/// ignores case.
fn same_spelling(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(&x, &y)| {
            let norm = |c: u8| {
                if c == b'_' {
                    b'-'
                } else {
                    c.to_ascii_lowercase()
                }
            };
            norm(x) == norm(y)
        })
}

fn read_u32(bytes: &[u8], at: usize) -> Option<usize> {
    let raw: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    usize::try_from(u32::from_le_bytes(raw)).ok()
}

fn slice(bytes: &[u8], at: usize, len: usize) -> Option<&[u8]> {
    bytes.get(at..at.checked_add(len)?)
}

/// Serializes pairs into the wire format (for a local reply's headers).
pub fn serialize(pairs: &[(&str, &str)]) -> Vec<u8> {
    let size = 4 + pairs
        .iter()
        .map(|(n, v)| 10 + n.len() + v.len())
        .sum::<usize>();
    let mut out = Vec::with_capacity(size);
    let len = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
    out.extend_from_slice(&len(pairs.len()));
    for (name, value) in pairs {
        out.extend_from_slice(&len(name.len()));
        out.extend_from_slice(&len(value.len()));
    }
    for (name, value) in pairs {
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.extend_from_slice(value.as_bytes());
        out.push(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_a_wanted_name_is_found() {
        let managed = vec!["x-client-id".to_string(), "x-jwt-guard-dry-run".to_string()];
        let h = HeaderSnapshot::from_pairs(&[
            ("x-client-id", "a"),
            ("x_client_id", "b"),
            ("x_client-id", "c"),
            ("x-client-ids", "d"),
            ("x-jwt-guard_dry_run", "e"),
            ("authorization", "f"),
        ]);
        assert_eq!(
            h.names_spelled_as(&managed),
            vec![
                "x-client-id",
                "x_client_id",
                "x_client-id",
                "x-jwt-guard_dry_run"
            ]
        );
    }

    const REQUEST: &[(&str, &str)] = &[
        (":method", "GET"),
        (":path", "/a?b=c"),
        ("authorization", "Bearer x.y.z"),
        ("x-empty", ""),
        ("cookie", "a=1"),
        ("cookie", "b=2"),
    ];

    #[test]
    fn round_trips_names_values_and_empty_values() {
        let h = HeaderSnapshot::parse(&serialize(REQUEST));
        assert_eq!(h.get(":path").as_deref(), Some("/a?b=c"));
        assert_eq!(h.get("authorization").as_deref(), Some("Bearer x.y.z"));
        assert_eq!(h.get("x-empty").as_deref(), Some(""));
        assert!(h.contains("x-empty"));
        assert_eq!(h.get("missing"), None);
        // Repeated: the first value, as the SDK's single-value read gives.
        assert_eq!(h.get("cookie").as_deref(), Some("a=1"));
        assert_eq!(h.get_all("cookie").collect::<Vec<_>>(), ["a=1", "b=2"]);
        assert_eq!(h.get_all("missing").count(), 0);
    }

    #[test]
    fn matches_the_sdk_wire_layout_byte_for_byte() {
        let bytes = serialize(&[("a", "bc")]);
        assert_eq!(
            bytes,
            [1, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, b'a', 0, b'b', b'c', 0]
        );
    }

    #[test]
    fn non_utf8_values_are_kept_as_bytes_and_read_lossily() {
        let mut bytes = serialize(&[("x", "ab")]);
        let at = bytes.len() - 3;
        bytes[at] = 0xff;
        let h = HeaderSnapshot::parse(&bytes);
        assert_eq!(h.get_bytes("x"), Some(&[0xff, b'b'][..]));
        assert_eq!(h.get("x").as_deref(), Some("\u{fffd}b"));
        assert_eq!(h.get_str("x").as_deref(), Some("\u{fffd}b"));
        let all: Vec<_> = h.get_all_spellings("x").collect();
        assert_eq!(all, ["\u{fffd}b"]);
        // UTF-8 values are borrowed from the host's buffer, not copied.
        let h = HeaderSnapshot::parse(&serialize(&[("x_y", "é b")]));
        assert!(matches!(
            h.get_str("x_y"),
            Some(std::borrow::Cow::Borrowed("é b"))
        ));
        let all: Vec<_> = h.values_spelled_as("x-y").collect();
        assert_eq!(all, ["é b".as_bytes()]);
    }

    #[test]
    fn malformed_maps_give_what_was_readable_and_never_panic() {
        let good = serialize(REQUEST);
        for cut in 0..good.len() {
            let h = HeaderSnapshot::parse(&good[..cut]);
            assert!(h.spans.len() <= REQUEST.len());
        }
        assert_eq!(
            HeaderSnapshot::parse(&good[..good.len() - 9]).spans.len(),
            5
        );
        // A count far beyond the data, and lengths past the end.
        let mut huge = vec![0xff, 0xff, 0xff, 0xff];
        huge.extend_from_slice(&[0xff; 16]);
        assert!(HeaderSnapshot::parse(&huge).spans.is_empty());
        assert!(HeaderSnapshot::parse(&[]).spans.is_empty());
    }

    #[test]
    fn remove_and_set_track_what_the_filter_changed() {
        let mut h = HeaderSnapshot::parse(&serialize(REQUEST));
        h.remove("cookie");
        assert!(!h.contains("cookie"));
        h.set(":path", b"/a");
        assert_eq!(h.get(":path").as_deref(), Some("/a"));
        assert_eq!(h.iter().last(), Some((":path", &b"/a"[..])));
        assert_eq!(h.get("authorization").as_deref(), Some("Bearer x.y.z"));
    }

    #[test]
    fn a_name_that_is_not_utf8_is_read_lossily() {
        let mut bytes = serialize(&[("xy", "1"), ("b", "2")]);
        bytes[20] = 0xff;
        let h = HeaderSnapshot::parse(&bytes);
        assert_eq!(h.names(), ["\u{fffd}y", "b"]);
        assert_eq!(h.get("b").as_deref(), Some("2"));
    }
}
