//! Where a configuration error is in the file: a JSON path such as
//! `providers[0].remote_jwks.cluster` (the paths [`crate::config::ConfigError`] names) ->
//! line and column of that value in the JSON text, and the line itself for a caret.
//!
//! The text is scanned once into a tree of offsets (strings with escapes, nested arrays
//! and objects); the path is then followed through it. Object keys may contain `.` or `[`
//! (claim paths such as `claims.a.b`), so at each object the longest key that the rest of
//! the path starts with is taken.

/// A place in a text: 1-based line and column (the column counts characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

/// The value at `path` in `text`: its position, and whether the whole path was found
/// (`false`: the deepest part that exists, e.g. the object a required field is missing
/// from). `None` when the text is not JSON this scanner can read.
pub fn locate(text: &str, path: &str) -> Option<(Position, bool)> {
    let mut scanner = Scanner {
        bytes: text.as_bytes(),
        at: 0,
        depth: 0,
    };
    let root = scanner.document()?;
    let (node, _, exact) = follow(&root, path);
    Some((position_of(text, node.offset()), exact))
}

/// Where the key of the member at `path` is, when the whole path is found and ends at an
/// object member (for an unknown field, the key is the mistake).
pub fn locate_key(text: &str, path: &str) -> Option<Position> {
    let mut scanner = Scanner {
        bytes: text.as_bytes(),
        at: 0,
        depth: 0,
    };
    let root = scanner.document()?;
    match follow(&root, path) {
        (_, Some(key), true) => Some(position_of(text, key)),
        _ => None,
    }
}

/// Line and column of byte `offset` in `text`.
pub fn position_of(text: &str, offset: usize) -> Position {
    let before = text.get(..offset).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    Position {
        line: before.matches('\n').count() + 1,
        column: before.get(line_start..).map_or(0, |l| l.chars().count()) + 1,
    }
}

/// Line `line` (1-based) of `text`, without its line break.
pub fn line_text(text: &str, line: usize) -> Option<&str> {
    text.split('\n')
        .nth(line.checked_sub(1)?)
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
}

/// The position serde_json puts at the end of its messages (`... at line 3 column 7`), as
/// a character column in `text`. Its column counts bytes.
pub fn serde_position(text: &str, message: &str) -> Option<Position> {
    let (_, tail) = message.rsplit_once(" at line ")?;
    let (line, column) = tail.split_once(" column ")?;
    let line: usize = line.trim().parse().ok()?;
    let byte_column: usize = column.trim().parse().ok()?;
    let content = line_text(text, line).unwrap_or_default();
    let prefix_end = byte_column.saturating_sub(1).min(content.len());
    let column = (0..=prefix_end)
        .rev()
        .find_map(|end| content.get(..end))
        .map_or(0, |p| p.chars().count())
        + 1;
    Some(Position { line, column })
}

/// A value of the scanned text: where it starts, and its members.
#[derive(Debug)]
enum Node {
    /// Members: key, the key's offset, value.
    Object(usize, Vec<(String, usize, Node)>),
    Array(usize, Vec<Node>),
    Scalar(usize),
}

impl Node {
    fn offset(&self) -> usize {
        match self {
            Node::Object(o, _) | Node::Array(o, _) | Node::Scalar(o) => *o,
        }
    }
}

/// Follows `path` from `root`: the node reached, its key's offset if it is an object
/// member, and whether all of the path was followed.
fn follow<'n>(root: &'n Node, path: &str) -> (&'n Node, Option<usize>, bool) {
    let mut node = root;
    let mut key_at = None;
    let mut rest = path.trim_start_matches('.');
    while !rest.is_empty() {
        let next = match node {
            Node::Array(_, items) => rest
                .strip_prefix('[')
                .and_then(|r| r.split_once(']'))
                .and_then(|(index, after)| {
                    let item = items.get(index.parse::<usize>().ok()?)?;
                    Some((item, None, after))
                }),
            Node::Object(_, members) => members
                .iter()
                .filter_map(|(key, key_offset, child)| {
                    let after = rest.strip_prefix(key.as_str())?;
                    let ends = after.is_empty() || after.starts_with(['.', '[']);
                    ends.then_some((key.len(), child, Some(*key_offset), after))
                })
                .max_by_key(|(len, _, _, _)| *len)
                .map(|(_, child, key_offset, after)| (child, key_offset, after)),
            Node::Scalar(_) => None,
        };
        match next {
            Some((child, key_offset, after)) => {
                node = child;
                key_at = key_offset;
                rest = after.strip_prefix('.').unwrap_or(after);
            }
            None => return (node, key_at, false),
        }
    }
    (node, key_at, true)
}

/// Deep enough for any configuration; a deeper text is not located rather than risking
/// the stack.
const MAX_DEPTH: usize = 200;

struct Scanner<'a> {
    bytes: &'a [u8],
    at: usize,
    depth: usize,
}

impl Scanner<'_> {
    /// One value and nothing after it but white space.
    fn document(&mut self) -> Option<Node> {
        let root = self.value()?;
        self.skip_ws();
        (self.at == self.bytes.len()).then_some(root)
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        self.skip_ws();
        (self.peek()? == b).then(|| self.at += 1)
    }

    fn value(&mut self) -> Option<Node> {
        self.skip_ws();
        let start = self.at;
        match self.peek()? {
            b'{' => self.nested(|s| s.object(start)),
            b'[' => self.nested(|s| s.array(start)),
            b'"' => self.string().map(|_| Node::Scalar(start)),
            _ => {
                // A number, true, false or null: the scalar ends at a delimiter.
                while self.peek().is_some_and(|b| {
                    !matches!(b, b',' | b']' | b'}' | b' ' | b'\t' | b'\n' | b'\r')
                }) {
                    self.at += 1;
                }
                (self.at > start).then_some(Node::Scalar(start))
            }
        }
    }

    fn nested(&mut self, f: impl FnOnce(&mut Self) -> Option<Node>) -> Option<Node> {
        if self.depth >= MAX_DEPTH {
            return None;
        }
        self.depth += 1;
        let node = f(self);
        self.depth -= 1;
        node
    }

    fn object(&mut self, start: usize) -> Option<Node> {
        self.eat(b'{')?;
        let mut members = Vec::new();
        if self.eat(b'}').is_some() {
            return Some(Node::Object(start, members));
        }
        loop {
            self.skip_ws();
            let key_offset = self.at;
            let key = self.string()?;
            self.eat(b':')?;
            members.push((key, key_offset, self.value()?));
            if self.eat(b',').is_none() {
                self.eat(b'}')?;
                return Some(Node::Object(start, members));
            }
        }
    }

    fn array(&mut self, start: usize) -> Option<Node> {
        self.eat(b'[')?;
        let mut items = Vec::new();
        if self.eat(b']').is_some() {
            return Some(Node::Array(start, items));
        }
        loop {
            items.push(self.value()?);
            if self.eat(b',').is_none() {
                self.eat(b']')?;
                return Some(Node::Array(start, items));
            }
        }
    }

    /// A JSON string, decoded (keys are compared decoded: `"a\u002eb"` is the key `a.b`).
    fn string(&mut self) -> Option<String> {
        if self.peek()? != b'"' {
            return None;
        }
        self.at += 1;
        let mut out: Vec<u8> = Vec::new();
        loop {
            let b = self.peek()?;
            self.at += 1;
            match b {
                b'"' => return String::from_utf8(out).ok(),
                b'\\' => {
                    let e = self.peek()?;
                    self.at += 1;
                    match e {
                        b'"' | b'\\' | b'/' => out.push(e),
                        b'b' => out.push(0x08),
                        b'f' => out.push(0x0c),
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        b'u' => {
                            let c = self.unicode_escape()?;
                            let mut buf = [0u8; 4];
                            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                        }
                        _ => return None,
                    }
                }
                _ => out.push(b),
            }
        }
    }

    /// After `\u`: four hex digits, and a low surrogate's `\uXXXX` after a high one.
    fn unicode_escape(&mut self) -> Option<char> {
        let high = self.hex4()?;
        if !(0xD800..0xDC00).contains(&high) {
            return Some(char::from_u32(high).unwrap_or(char::REPLACEMENT_CHARACTER));
        }
        if self.bytes.get(self.at..self.at + 2) != Some(b"\\u") {
            return Some(char::REPLACEMENT_CHARACTER);
        }
        self.at += 2;
        let low = self.hex4()?;
        let c = 0x10000 + ((high - 0xD800) << 10) + low.checked_sub(0xDC00)?;
        Some(char::from_u32(c).unwrap_or(char::REPLACEMENT_CHARACTER))
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = self.bytes.get(self.at..self.at + 4)?;
        let v = u32::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()?;
        self.at += 4;
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"{
  "providers": [
    {"name": "corp", "issuer": "https://a",
     "remote_jwks": {"uri": "https://a/jwks", "cluster": ""}},
    {"name": "two\"quoted", "claims": {"a.b": {"c": [1, {"d": true}]}, "a": 2}}
  ],
  "rules": [ {}, {"match": {"path": "/x"}} ]
}"#;

    fn at(path: &str) -> (usize, usize, bool) {
        let (p, exact) = locate(TEXT, path).unwrap();
        (p.line, p.column, exact)
    }

    #[test]
    fn paths_lead_to_their_values() {
        assert_eq!(at("providers[0].remote_jwks.cluster"), (4, 58, true));
        assert_eq!(at("providers[0].name"), (3, 14, true));
        assert_eq!(at("rules[1].match.path"), (7, 37, true));
        assert_eq!(at("rules[1]"), (7, 18, true));
        assert_eq!(at(""), (1, 1, true));
        assert_eq!(at("."), (1, 1, true));
    }

    #[test]
    fn keys_with_dots_and_escapes() {
        // `claims.a.b.c[1].d`: the key "a.b" wins over "a", which has no "b" below it.
        assert_eq!(at("providers[1].claims.a.b.c[1].d"), (5, 63, true));
        assert_eq!(at("providers[1].claims.a"), (5, 77, true));
        // An escaped quote inside a string does not end it.
        assert_eq!(at("providers[1].name"), (5, 14, true));
    }

    #[test]
    fn a_missing_part_stops_at_what_exists() {
        assert_eq!(at("providers[0].audiences"), (3, 5, false));
        assert_eq!(at("providers[7].name"), (2, 16, false));
        assert_eq!(at("rules[0].match"), (7, 14, false));
        assert_eq!(at("providers[0].name.x"), (3, 14, false));
    }

    #[test]
    fn keys_are_located_for_object_members_only() {
        let key = |path| locate_key(TEXT, path).map(|p| (p.line, p.column));
        assert_eq!(key("providers[0].remote_jwks.cluster"), Some((4, 47)));
        assert_eq!(key("providers[0]"), None);
        assert_eq!(key("providers[0].nope"), None);
    }

    #[test]
    fn unicode_escapes_and_multibyte_columns() {
        let text = "{\"k\\u00e9\\ud83d\\ude00\": {\"x\": 1},\n \"é\": \"ü\", \"n\": 1}";
        let (p, exact) = locate(text, "ké😀.x").unwrap();
        assert!(exact);
        assert_eq!((p.line, p.column), (1, 31));
        // Columns count characters: "é" and "ü" are two bytes each.
        let (p, _) = locate(text, "n").unwrap();
        assert_eq!((p.line, p.column), (2, 17));
    }

    #[test]
    fn not_json_is_not_located() {
        assert_eq!(locate("{\"a\": ", "a"), None);
        assert_eq!(locate("", ""), None);
        assert_eq!(locate("{\"a\" 1}", "a"), None);
        assert_eq!(locate("{} x", ""), None);
        let deep = "[".repeat(1000) + &"]".repeat(1000);
        assert_eq!(locate(&deep, ""), None);
    }

    #[test]
    fn serde_positions_become_character_columns() {
        let text = "{\n  \"é\": x\n}";
        let msg = "expected value at line 2 column 9";
        assert_eq!(
            serde_position(text, msg),
            Some(Position { line: 2, column: 8 })
        );
        assert_eq!(
            serde_position("", "EOF while parsing a value at line 1 column 0"),
            Some(Position { line: 1, column: 1 })
        );
        assert_eq!(serde_position(text, "no position here"), None);
        assert_eq!(line_text("a\r\nb", 1), Some("a"));
        assert_eq!(line_text("a", 0), None);
    }
}
