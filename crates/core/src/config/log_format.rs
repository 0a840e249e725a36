//! `[server] access_log_format`: JSON (default), nginx's `combined`, or a template of nginx variables compiled at config load.

use serde::{Serialize, Serializer};
use toml::Spanned;

use super::values::Text;
use super::Validator;

/// nginx's `combined` format.
pub const COMBINED: &str = r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent""#;

/// A variable a template may name (nginx's names, plus `$pool` and `$tries`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogVar {
    RemoteAddr,
    RemoteUser,
    TimeLocal,
    TimeIso8601,
    Request,
    RequestMethod,
    RequestUri,
    Uri,
    Host,
    Status,
    BodyBytesSent,
    RequestLength,
    HttpReferer,
    HttpUserAgent,
    HttpXForwardedFor,
    RequestTime,
    UpstreamConnectTime,
    UpstreamHeaderTime,
    UpstreamResponseTime,
    UpstreamAddr,
    RequestId,
    TraceId,
    Pool,
    Tries,
}

impl LogVar {
    /// Every variable with its name.
    pub const ALL: &'static [(&'static str, LogVar)] = &[
        ("remote_addr", LogVar::RemoteAddr),
        ("remote_user", LogVar::RemoteUser),
        ("time_local", LogVar::TimeLocal),
        ("time_iso8601", LogVar::TimeIso8601),
        ("request", LogVar::Request),
        ("request_method", LogVar::RequestMethod),
        ("request_uri", LogVar::RequestUri),
        ("uri", LogVar::Uri),
        ("host", LogVar::Host),
        ("status", LogVar::Status),
        ("body_bytes_sent", LogVar::BodyBytesSent),
        ("request_length", LogVar::RequestLength),
        ("http_referer", LogVar::HttpReferer),
        ("http_user_agent", LogVar::HttpUserAgent),
        ("http_x_forwarded_for", LogVar::HttpXForwardedFor),
        ("request_time", LogVar::RequestTime),
        ("upstream_connect_time", LogVar::UpstreamConnectTime),
        ("upstream_header_time", LogVar::UpstreamHeaderTime),
        ("upstream_response_time", LogVar::UpstreamResponseTime),
        ("upstream_addr", LogVar::UpstreamAddr),
        ("request_id", LogVar::RequestId),
        ("trace_id", LogVar::TraceId),
        ("pool", LogVar::Pool),
        ("tries", LogVar::Tries),
    ];

    pub fn name(self) -> &'static str {
        LogVar::ALL
            .iter()
            .find(|(_, v)| *v == self)
            .map_or("", |(n, _)| n)
    }
}

/// One piece of a compiled template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    Var(LogVar),
}

/// How each access-log line is written.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One JSON object per line (docs/operations.md).
    #[default]
    Json,
    /// A template: `combined` or the operator's own. `source` is the text as configured.
    Template { source: String, pieces: Vec<Piece> },
}

/// `"json"`, `"combined"` or the template, as the config writes it.
impl Serialize for LogFormat {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            LogFormat::Json => s.serialize_str("json"),
            LogFormat::Template { source, .. } => s.serialize_str(source),
        }
    }
}

/// Why a template was refused: the byte offset in the template and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    pub at: usize,
    pub reason: String,
}

/// Compiles a template: `$name` or `${name}` for a variable (names are `[a-z0-9_]`), `$$`... is
/// not special (nginx has no escape for `$` either); an unknown name is an error.
pub fn compile(template: &str) -> Result<Vec<Piece>, TemplateError> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let bytes = template.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'$' {
            let ch = template[i..].chars().next().unwrap_or_default();
            text.push(ch);
            i += ch.len_utf8();
            continue;
        }
        let braced = bytes.get(i + 1) == Some(&b'{');
        let start = i + 1 + usize::from(braced);
        let len = bytes[start..]
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
            .count();
        let name = &template[start..start + len];
        let end = start + len + usize::from(braced);
        if name.is_empty() || (braced && bytes.get(start + len) != Some(&b'}')) {
            return Err(TemplateError {
                at: i,
                reason: "a `$` must start a variable name ($name or ${name})".into(),
            });
        }
        let Some(&(_, var)) = LogVar::ALL.iter().find(|(n, _)| *n == name) else {
            let known: Vec<&str> = LogVar::ALL.iter().map(|(n, _)| *n).collect();
            return Err(TemplateError {
                at: i,
                reason: format!(
                    "unknown access log variable ${name} (known: ${})",
                    known.join(", $")
                ),
            });
        };
        if !text.is_empty() {
            pieces.push(Piece::Text(std::mem::take(&mut text)));
        }
        pieces.push(Piece::Var(var));
        i = end;
    }
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    Ok(pieces)
}

impl Validator {
    /// `access_log_format`: `"json"` (default), `"combined"` or a template.
    pub(super) fn log_format(&mut self, raw: Option<&Spanned<Text>>) -> LogFormat {
        let Some(raw) = raw else {
            return LogFormat::Json;
        };
        let source: &str = raw.get_ref();
        let template = match source {
            "json" => return LogFormat::Json,
            "combined" => COMBINED,
            t => t,
        };
        match compile(template) {
            Ok(pieces) => LogFormat::Template {
                source: source.to_string(),
                pieces,
            },
            Err(e) => {
                // Point at the variable when the string is written plainly ("..." or '...' with
                // no escapes), else at the string.
                let span = raw.span();
                let written = self.text.get(span.clone()).unwrap_or("");
                let plain = written.len() == template.len() + 2;
                let at = if plain {
                    span.start + 1 + e.at
                } else {
                    span.start
                };
                self.error(at..at, e.reason);
                LogFormat::Json
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiles_combined_and_braces() {
        let p = compile(COMBINED).expect("combined");
        assert_eq!(p[0], Piece::Var(LogVar::RemoteAddr));
        assert_eq!(p[1], Piece::Text(" - ".into()));
        assert!(p.contains(&Piece::Var(LogVar::HttpUserAgent)));
        let p = compile("${pool}x$tries").expect("braces");
        assert_eq!(
            p,
            vec![
                Piece::Var(LogVar::Pool),
                Piece::Text("x".into()),
                Piece::Var(LogVar::Tries)
            ]
        );
        assert_eq!(
            compile("é $status").expect("utf-8")[0],
            Piece::Text("é ".into())
        );
    }

    #[test]
    fn refuses_unknown_and_bare_dollars() {
        let e = compile("$status $nope").expect_err("unknown");
        assert_eq!(e.at, 8);
        assert!(e.reason.contains("$nope"), "{}", e.reason);
        assert!(compile("cost: $ 5").is_err());
        assert!(compile("${status").is_err());
    }
}
