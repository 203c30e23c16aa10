//! `jwt-guard check`: the filter's own loading ([`Config::from_json`], the same code, so the
//! same verdict), plus [`lint`] warnings, each placed in the file; rendered for people or
//! as JSON.

use serde_json::{json, Value};

use super::lint::{self, ClusterUse};
use super::locate::{self, Position};
use crate::config::{Config, ConfigError};

/// One error or warning, placed in the file where possible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// `invalid` for the load error; a [`lint::WarningKind`] code for a warning.
    pub code: &'static str,
    pub path: String,
    pub message: String,
    pub position: Option<Position>,
}

impl Finding {
    /// What the filter itself would log: the path, then the message.
    pub fn text(&self) -> String {
        if self.path.is_empty() || self.path == "." {
            self.message.clone()
        } else {
            format!("{}: {}", self.path, self.message)
        }
    }
}

/// What `check` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// The filter stops at the first error, so there is at most one.
    pub error: Option<Finding>,
    pub warnings: Vec<Finding>,
    pub clusters: Vec<ClusterUse>,
}

impl CheckReport {
    /// The filter would load it.
    pub fn valid(&self) -> bool {
        self.error.is_none()
    }

    /// Exit 0: valid, and without warnings when `strict`.
    pub fn passes(&self, strict: bool) -> bool {
        self.valid() && (!strict || self.warnings.is_empty())
    }
}

/// Loads `bytes` as the filter does, and lints what loads.
pub fn check(bytes: &[u8]) -> CheckReport {
    let text = String::from_utf8_lossy(bytes);
    match Config::from_json(bytes) {
        Err(e) => CheckReport {
            error: Some(error_finding(&text, &e)),
            warnings: Vec::new(),
            clusters: Vec::new(),
        },
        Ok(config) => {
            // It loaded, so it is JSON.
            let raw: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
            let mut warnings: Vec<Finding> = lint::lint(&config, &raw)
                .into_iter()
                .map(|w| Finding {
                    code: w.kind.code(),
                    position: locate::locate(&text, &w.path).map(|(p, _)| p),
                    path: w.path,
                    message: w.message,
                })
                .collect();
            // In file order, as a reader goes through it.
            warnings.sort_by_key(|w| w.position.map(|p| (p.line, p.column)));
            CheckReport {
                error: None,
                warnings,
                clusters: lint::clusters(&config),
            }
        }
    }
}

/// Where the error is: the value its path names (or, for an unknown field, its key);
/// serde's own position for a syntax error or a path that is not all in the text (a
/// missing field); else the part of the path that is there.
fn error_finding(text: &str, e: &ConfigError) -> Finding {
    let found = locate::locate(text, &e.path);
    let exact = match found {
        Some((p, true)) if e.message.starts_with("unknown field") => {
            locate::locate_key(text, &e.path).or(Some(p))
        }
        Some((p, true)) => Some(p),
        _ => None,
    };
    let position = exact
        .or_else(|| locate::serde_position(text, &e.message))
        .or(found.map(|(p, _)| p));
    Finding {
        code: "invalid",
        path: e.path.clone(),
        message: e.message.clone(),
        position,
    }
}

/// For people: each finding as `file:line:col: severity: path: message` with the line
/// and a caret, the clusters, and a summary line.
pub fn render_human(report: &CheckReport, file: &str, bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::new();
    if let Some(e) = &report.error {
        out.push_str(&finding_block(e, "error", file, &text));
    }
    for w in &report.warnings {
        out.push_str(&finding_block(
            w,
            &format!("warning[{}]", w.code),
            file,
            &text,
        ));
    }
    if !report.clusters.is_empty() {
        out.push_str("Envoy clusters this config calls (each must be defined in Envoy):\n");
        let width = report
            .clusters
            .iter()
            .map(|c| c.cluster.len())
            .max()
            .unwrap_or(0);
        for c in &report.clusters {
            out.push_str(&format!(
                "  {:width$}  {} for provider {:?} ({}), at {}\n",
                c.cluster, c.fetches, c.provider, c.uri, c.path
            ));
        }
    }
    let summary = match (&report.error, report.warnings.len()) {
        (Some(_), _) => "invalid: the filter would refuse this configuration".to_string(),
        (None, 0) => "valid".to_string(),
        (None, 1) => "valid, 1 warning".to_string(),
        (None, n) => format!("valid, {n} warnings"),
    };
    out.push_str(&format!("{file}: {summary}\n"));
    out
}

fn finding_block(f: &Finding, severity: &str, file: &str, text: &str) -> String {
    let Some(p) = f.position else {
        return format!("{file}: {severity}: {}\n", f.text());
    };
    let mut out = format!("{file}:{}:{}: {severity}: {}\n", p.line, p.column, f.text());
    if let Some(line) = locate::line_text(text, p.line) {
        out.push_str(&snippet(line, p));
    }
    out
}

/// Widest part of a line shown around the caret: a minified config is one long line.
const SNIPPET_CHARS: usize = 100;

/// The line (or a window of it around the column) and a caret under the column.
fn snippet(line: &str, p: Position) -> String {
    let chars: Vec<char> = line.chars().collect();
    let col = p.column.saturating_sub(1).min(chars.len());
    let (start, end) = if chars.len() <= SNIPPET_CHARS {
        (0, chars.len())
    } else {
        let start = col.saturating_sub(SNIPPET_CHARS / 2);
        (start, (start + SNIPPET_CHARS).min(chars.len()))
    };
    let shown: String = chars.get(start..end).unwrap_or_default().iter().collect();
    let (lead, trail) = (
        if start > 0 { "..." } else { "" },
        if end < chars.len() { "..." } else { "" },
    );
    // Tabs stay tabs under the line, so the caret lines up in any terminal.
    let pad: String = chars
        .get(start..col)
        .unwrap_or_default()
        .iter()
        .map(|c| if *c == '\t' { '\t' } else { ' ' })
        .collect();
    let gutter = " ".repeat(p.line.to_string().len());
    format!(
        "{gutter} |\n{} | {lead}{shown}{trail}\n{gutter} | {}{pad}^\n",
        p.line,
        " ".repeat(lead.len())
    )
}

/// For machines: `{"valid", "errors": [...], "warnings": [...], "clusters": [...]}`.
pub fn render_json(report: &CheckReport, file: &str) -> Value {
    let finding = |f: &Finding| {
        json!({
            "code": f.code,
            "path": f.path,
            "message": f.message,
            "line": f.position.map(|p| p.line),
            "column": f.position.map(|p| p.column),
        })
    };
    json!({
        "file": file,
        "valid": report.valid(),
        "errors": report.error.iter().map(finding).collect::<Vec<_>>(),
        "warnings": report.warnings.iter().map(finding).collect::<Vec<_>>(),
        "clusters": report.clusters.iter().map(|c| json!({
            "cluster": c.cluster,
            "provider": c.provider,
            "path": c.path,
            "fetches": c.fetches,
            "uri": c.uri,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{
  "providers": [{
    "name": "corp", "issuer": "https://idp", "audiences": ["api"],
    "remote_jwks": {"uri": "https://idp/jwks", "cluster": "idp"}
  }],
  "rules": [
    {"match": {"path_prefix": "/"}, "allow": "anonymous"},
    {"match": {"path": "/admin"}, "require": {}}
  ]
}
"#;

    #[test]
    fn a_semantic_error_is_placed_at_its_value() {
        let text = GOOD.replace("\"cluster\": \"idp\"", "\"cluster\": \" \"");
        let r = check(text.as_bytes());
        let e = r.error.clone().unwrap();
        assert_eq!(e.path, "providers[0].remote_jwks.cluster");
        assert_eq!(
            e.position,
            Some(Position {
                line: 4,
                column: 59
            })
        );
        assert!(!r.passes(false));
        let human = render_human(&r, "c.json", text.as_bytes());
        assert!(
            human.starts_with(
                "c.json:4:59: error: providers[0].remote_jwks.cluster: must name an Envoy cluster\n"
            ),
            "{human}"
        );
        let caret_line = human.lines().nth(3).unwrap();
        let code_line = human.lines().nth(2).unwrap();
        assert_eq!(
            code_line.find("\" \"").unwrap(),
            caret_line.find('^').unwrap(),
            "{human}"
        );
        assert!(human.ends_with("c.json: invalid: the filter would refuse this configuration\n"));
    }

    #[test]
    fn syntax_and_type_errors_use_serde_positions() {
        let text = GOOD.replace("\"audiences\": [\"api\"],", "\"audiences\": [\"api\"]");
        let e = check(text.as_bytes()).error.unwrap();
        assert_eq!(e.position.map(|p| p.line), Some(4), "{e:?}");
        let text = GOOD.replace("\"name\": \"corp\"", "\"name\": 7");
        let e = check(text.as_bytes()).error.unwrap();
        assert_eq!(e.path, "providers[0].name");
        assert_eq!(
            e.position,
            Some(Position {
                line: 3,
                column: 13
            })
        );
        let text = GOOD.replace("\"cluster\": \"idp\"", "\"clutser\": \"idp\"");
        let e = check(text.as_bytes()).error.unwrap();
        assert!(e.message.contains("clutser"), "{e:?}");
        assert_eq!(
            e.position,
            Some(Position {
                line: 4,
                column: 48
            })
        );
    }

    #[test]
    fn a_missing_field_points_at_its_object() {
        let text = GOOD.replace("\"audiences\": [\"api\"],", "");
        let e = check(text.as_bytes()).error.unwrap();
        assert_eq!(e.path, "providers[0].audiences");
        assert_eq!(
            e.position,
            Some(Position {
                line: 2,
                column: 17
            })
        );
    }

    #[test]
    fn warnings_do_not_fail_unless_strict() {
        let r = check(GOOD.as_bytes());
        assert!(r.valid());
        assert_eq!(r.warnings.len(), 1, "{r:?}");
        assert_eq!(r.warnings[0].code, "shadowed-rule");
        assert_eq!(
            r.warnings[0].position,
            Some(Position {
                line: 8,
                column: 15
            })
        );
        assert!(r.passes(false));
        assert!(!r.passes(true));
        let human = render_human(&r, "c.json", GOOD.as_bytes());
        assert!(human.contains("c.json:8:15: warning[shadowed-rule]: rules[1].match: "));
        assert!(human.contains("  idp  JWKS for provider \"corp\" (https://idp/jwks), at providers[0].remote_jwks.cluster\n"), "{human}");
        assert!(human.ends_with("c.json: valid, 1 warning\n"));
        let j = render_json(&r, "c.json");
        assert_eq!(j["valid"], true);
        assert_eq!(j["warnings"][0]["line"], 8);
        assert_eq!(j["clusters"][0]["cluster"], "idp");
    }

    #[test]
    fn long_lines_are_cut_around_the_caret() {
        let line = format!("{}X{}", "a".repeat(300), "b".repeat(300));
        let s = snippet(
            &line,
            Position {
                line: 1,
                column: 301,
            },
        );
        let lines: Vec<&str> = s.lines().collect();
        assert!(lines[1].len() < 120, "{s}");
        assert_eq!(lines[1].find('X'), lines[2].find('^'), "{s}");
        let s = snippet(
            "\t\"a\": x",
            Position {
                line: 12,
                column: 7,
            },
        );
        assert_eq!(s, "   |\n12 | \t\"a\": x\n   | \t     ^\n");
    }
}
