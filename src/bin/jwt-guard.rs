//! `jwt-guard`: the filter's own code as a command, for CI and for a desk.
//!
//!   jwt-guard check config.json        validate as the filter does, plus warnings
//!   jwt-guard explain --config ...     what the filter would do with one request
//!   jwt-guard schema                   the JSON Schema of the plugin config
//!
//! Exit codes: 0 valid / allowed; 1 invalid (or, with --strict, warnings) / denied;
//! 2 usage error (bad arguments, unreadable files, for explain an invalid config).

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use jwt_guard::cli::{check, explain, logs};

#[derive(Parser)]
#[command(
    name = "jwt-guard",
    version,
    about = "Check a jwt-guard plugin config, explain a decision, print the config's JSON Schema",
    long_about = "The jwt-guard filter's own code, natively: `check` loads a config exactly as \
                  the filter does, `explain` runs the filter's request handling on one request \
                  offline, `schema` prints the JSON Schema of the config."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Format {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a plugin config as the filter does; warn about likely mistakes.
    ///
    /// Exit 0: the filter would load it (warnings allowed unless --strict); 1: it would
    /// not (or --strict and warnings); 2: usage error.
    Check {
        /// The plugin config (JSON), or - for standard input.
        config: String,
        /// Warnings fail the check too (exit 1).
        #[arg(long)]
        strict: bool,
        #[arg(long, value_enum, default_value = "human")]
        format: Format,
    },
    /// Show what the filter would do with one request: the rules it selects, each
    /// requirement, the decision, the reply or the headers sent upstream.
    ///
    /// Exit 0: allowed; 1: denied; 2: usage error or an invalid config.
    Explain {
        /// The plugin config (JSON), or - for standard input.
        #[arg(long)]
        config: String,
        #[arg(long, default_value = "GET")]
        method: String,
        /// The request path, query included.
        #[arg(long)]
        path: String,
        /// The request's host (:authority).
        #[arg(long, default_value = "localhost")]
        host: String,
        /// A request header, "name: value"; repeat for more.
        #[arg(long = "header", value_name = "NAME: VALUE")]
        headers: Vec<String>,
        /// The token: the JWT itself, @FILE, or a file path. It is sent where its
        /// provider reads tokens (Authorization: Bearer by default).
        #[arg(long)]
        token: Option<String>,
        /// A JWKS file that answers the key fetches of remote (and discovery) providers;
        /// PROVIDER=FILE for one provider only. Repeatable.
        #[arg(long = "jwks", value_name = "[PROVIDER=]FILE")]
        jwks: Vec<String>,
        /// The time to decide at, in Unix seconds (default: now).
        #[arg(long)]
        now: Option<u64>,
        /// The client's address as Envoy reports the TCP peer (ip or ip:port).
        #[arg(long = "source-ip", value_name = "IP")]
        source_ip: Option<String>,
        #[arg(long, value_enum, default_value = "human")]
        format: Format,
        /// Also print the token's header and claims and the filter's log lines.
        #[arg(short, long)]
        verbose: bool,
    },
    /// Print the JSON Schema of the plugin config (jwt-guard.schema.json).
    Schema,
}

const OK: u8 = 0;
const FAILED: u8 = 1;
const USAGE: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Check {
            config,
            strict,
            format,
        } => run_check(&config, strict, format),
        Command::Explain {
            config,
            method,
            path,
            host,
            headers,
            token,
            jwks,
            now,
            source_ip,
            format,
            verbose,
        } => {
            let args = ExplainArgs {
                config,
                method,
                path,
                host,
                headers,
                token,
                jwks,
                now,
                source_ip,
            };
            match run_explain(args, format, verbose) {
                Ok(code) => code,
                Err(message) => {
                    eprintln!("jwt-guard explain: {message}");
                    USAGE
                }
            }
        }
        Command::Schema => {
            print!("{}", jwt_guard::json_schema::plugin_config_schema_text());
            OK
        }
    };
    ExitCode::from(code)
}

/// A file's bytes, or standard input's for `-`.
fn read_input(path: &str) -> Result<Vec<u8>, String> {
    if path == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .map_err(|e| format!("cannot read standard input: {e}"))?;
        return Ok(buf);
    }
    std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))
}

fn display_name(path: &str) -> &str {
    if path == "-" {
        "<stdin>"
    } else {
        path
    }
}

fn run_check(path: &str, strict: bool, format: Format) -> u8 {
    let bytes = match read_input(path) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("jwt-guard check: {e}");
            return USAGE;
        }
    };
    let report = check::check(&bytes);
    let name = display_name(path);
    match format {
        Format::Human => print!("{}", check::render_human(&report, name, &bytes)),
        Format::Json => println!("{:#}", check::render_json(&report, name)),
    }
    if report.passes(strict) {
        OK
    } else {
        FAILED
    }
}

struct ExplainArgs {
    config: String,
    method: String,
    path: String,
    host: String,
    headers: Vec<String>,
    token: Option<String>,
    jwks: Vec<String>,
    now: Option<u64>,
    source_ip: Option<String>,
}

fn run_explain(args: ExplainArgs, format: Format, verbose: bool) -> Result<u8, String> {
    let config = read_input(&args.config)?;
    let headers = args
        .headers
        .iter()
        .map(|h| parse_header(h))
        .collect::<Result<Vec<_>, _>>()?;
    let token = args.token.as_deref().map(read_token).transpose()?;
    let mut answers = explain::JwksAnswers::default();
    for spec in &args.jwks {
        let (provider, file) = jwks_spec(spec)?;
        let bytes = std::fs::read(&file).map_err(|e| format!("cannot read {file}: {e}"))?;
        let f = explain::JwksFile { label: file, bytes };
        match provider {
            Some(p) => answers.by_provider.push((p, f)),
            None => answers.all = Some(f),
        }
    }
    let now_s = match args.now {
        Some(n) => n,
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|e| format!("the system clock is before 1970: {e}"))?
            .as_secs(),
    };
    let req = explain::ExplainRequest {
        method: args.method,
        path: args.path,
        host: args.host,
        headers,
        token,
        source: args.source_ip,
        now_s,
    };
    logs::capture(if verbose {
        log::LevelFilter::Debug
    } else {
        log::LevelFilter::Info
    });
    let e = explain::explain(&config, &req, &answers).map_err(|e| match e {
        explain::ExplainError::Config(c) => {
            // Placed in the file, as `check` does.
            let report = check::check(&config);
            let text = check::render_human(&report, display_name(&args.config), &config);
            format!("the config is invalid: {c}\n{text}")
        }
        other => other.to_string(),
    })?;
    match format {
        Format::Human => print!("{}", explain::render_human(&e, verbose)),
        Format::Json => println!("{:#}", explain::render_json(&e)),
    }
    Ok(if e.decision == explain::Decision::Allow {
        OK
    } else {
        FAILED
    })
}

/// `name: value` (a pseudo-header's own leading `:` is part of its name).
fn parse_header(h: &str) -> Result<(String, String), String> {
    let (lead, rest) = match h.strip_prefix(':') {
        Some(rest) => (":", rest),
        None => ("", h),
    };
    let (name, value) = rest
        .split_once(':')
        .ok_or_else(|| format!("--header {h:?}: write it as \"name: value\""))?;
    let name = format!("{lead}{}", name.trim());
    if name.is_empty() || name == ":" {
        return Err(format!("--header {h:?}: the name is empty"));
    }
    Ok((name, value.trim().to_string()))
}

/// `--token`: `@file`, a file path, or the JWT itself; `Bearer ` before it is dropped.
fn read_token(arg: &str) -> Result<String, String> {
    let text = if let Some(file) = arg.strip_prefix('@') {
        std::fs::read_to_string(file).map_err(|e| format!("cannot read {file}: {e}"))?
    } else if Path::new(arg).is_file() {
        std::fs::read_to_string(arg).map_err(|e| format!("cannot read {arg}: {e}"))?
    } else {
        arg.to_string()
    };
    let t = text.trim();
    let t = match t.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case("bearer ") => t.get(7..).unwrap_or(t).trim(),
        _ => t,
    };
    Ok(t.to_string())
}

/// `FILE` (every remote provider) or `PROVIDER=FILE`.
fn jwks_spec(spec: &str) -> Result<(Option<String>, String), String> {
    if Path::new(spec).is_file() {
        return Ok((None, spec.to_string()));
    }
    match spec.split_once('=') {
        Some((provider, file)) if !provider.is_empty() => {
            Ok((Some(provider.to_string()), file.to_string()))
        }
        _ => Err(format!("--jwks {spec}: no such file")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_name_colon_value() {
        assert_eq!(
            parse_header("X-Thing:  a: b "),
            Ok(("X-Thing".into(), "a: b".into()))
        );
        assert_eq!(
            parse_header(":authority: api.example.com"),
            Ok((":authority".into(), "api.example.com".into()))
        );
        assert!(parse_header("no colon").is_err());
        assert!(parse_header(": x").is_err());
    }

    #[test]
    fn tokens_from_the_argument_or_a_file() {
        assert_eq!(read_token("a.b.c"), Ok("a.b.c".into()));
        assert_eq!(read_token("Bearer a.b.c"), Ok("a.b.c".into()));
        let dir = std::env::temp_dir().join(format!("jwt-guard-cli-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("t.jwt");
        std::fs::write(&file, "x.y.z\n").unwrap();
        let path = file.to_str().unwrap();
        assert_eq!(read_token(path), Ok("x.y.z".into()));
        assert_eq!(read_token(&format!("@{path}")), Ok("x.y.z".into()));
        assert!(read_token("@/nonexistent/t.jwt").is_err());
        assert_eq!(jwks_spec(path), Ok((None, path.to_string())));
        assert_eq!(
            jwks_spec(&format!("corp={path}")),
            Ok((Some("corp".into()), path.to_string()))
        );
        assert!(jwks_spec("/nonexistent/jwks.json").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
