//! nginx's value syntaxes (times, sizes, variables, location regexes) turned into Switchyard's.

/// nginx time (`30s`, `7d`, `1h30m`, `500ms`, bare seconds) to a Switchyard duration
/// (one unit of `ms`, `s`, `m`, `h`): the largest unit that holds it exactly.
pub fn duration(v: &str) -> Option<String> {
    let ms = duration_ms(v)?;
    Some(if ms.is_multiple_of(3_600_000) && ms > 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    })
}

pub fn duration_ms(v: &str) -> Option<u64> {
    let v = v.trim();
    if v.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    let mut rest = v;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 12 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, len): (u64, usize) = if rest.starts_with("ms") {
            (1, 2)
        } else {
            match rest.bytes().next() {
                None => (1000, 0),
                Some(b's') => (1000, 1),
                Some(b'm') => (60_000, 1),
                Some(b'h') => (3_600_000, 1),
                Some(b'd') => (86_400_000, 1),
                Some(b'w') => (604_800_000, 1),
                Some(b'M') => (2_592_000_000, 1),
                Some(b'y') => (31_536_000_000, 1),
                _ => return None,
            }
        };
        rest = &rest[len..];
        total = total.checked_add(n.checked_mul(unit)?)?;
        if len == 0 {
            break;
        }
    }
    Some(total)
}

/// nginx size (`10m`, `512k`, `1g`, bare bytes) in bytes.
pub fn size_bytes(v: &str) -> Option<u64> {
    let v = v.trim();
    let (num, mult) = match v.as_bytes().last()? {
        b'k' | b'K' => (&v[..v.len() - 1], 1024),
        b'm' | b'M' => (&v[..v.len() - 1], 1024 * 1024),
        b'g' | b'G' => (&v[..v.len() - 1], 1024 * 1024 * 1024),
        _ => (v, 1),
    };
    if num.is_empty() || num.len() > 15 || !num.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    num.parse::<u64>().ok()?.checked_mul(mult)
}

/// A size as Switchyard writes it.
pub fn size(bytes: u64) -> String {
    const K: u64 = 1024;
    if bytes >= K * K * K && bytes.is_multiple_of(K * K * K) {
        format!("{}GB", bytes / (K * K * K))
    } else if bytes >= K * K && bytes.is_multiple_of(K * K) {
        format!("{}MB", bytes / (K * K))
    } else if bytes >= K && bytes.is_multiple_of(K) {
        format!("{}KB", bytes / K)
    } else {
        format!("{bytes}B")
    }
}

/// nginx variables Switchyard has under its own name.
fn variable(name: &str) -> Option<&'static str> {
    Some(match name {
        "host" => "$host",
        "scheme" => "$scheme",
        "remote_addr" | "binary_remote_addr" => "$client_ip",
        "request_id" => "$request_id",
        "request_uri" => "$request_uri",
        "uri" | "document_uri" => "$uri",
        "args" | "query_string" => "$args",
        "is_args" => "$is_args",
        _ => return None,
    })
}

/// Translates a value with nginx variables into Switchyard's variables; `Err` names the first
/// variable Switchyard does not have. `server_name` is the server's first name.
pub fn template(v: &str, server_name: Option<&str>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = v;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, tail) = if let Some(body) = after.strip_prefix('{') {
            match body.find('}') {
                Some(end) => (&body[..end], &body[end + 1..]),
                None => return Err(format!("${{{body}")),
            }
        } else {
            let n = after
                .bytes()
                .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
                .count();
            (&after[..n], &after[n..])
        };
        if name.is_empty() {
            out.push('$');
        } else if let Some(s) = variable(name) {
            out.push_str(s);
        } else if name == "server_name" && server_name.is_some() {
            out.push_str(server_name.unwrap_or_default());
        } else {
            return Err(format!("${name}"));
        }
        rest = tail;
    }
    out.push_str(rest);
    Ok(out)
}

/// What a regex location reduces to.
#[derive(Debug, PartialEq, Eq)]
pub enum RegexLocation {
    /// `^/api/` or `^/api(/|$)`: a path prefix.
    Prefix(String),
    /// `^/health$`: one path.
    Exact(String),
    /// `\.(js|css)$`: files with these extensions.
    Extensions(Vec<String>),
}

/// Reduces a location regex to a prefix, an exact path or an extension set, when it is one.
pub fn reduce_regex(re: &str) -> Option<RegexLocation> {
    if let Some(body) = re.strip_prefix('^') {
        let (lit, tail) = literal_prefix(body)?;
        if !lit.starts_with('/') {
            return None;
        }
        return match tail {
            "$" => Some(RegexLocation::Exact(lit)),
            "" | ".*" | "(/.*)?$" | "(/|$)" | "(/.*|$)" | "(?:/|$)" | "(/.*)?" => {
                Some(RegexLocation::Prefix(lit))
            }
            _ => None,
        };
    }
    // `\.(js|css|png)$`, `\.js$`, `.*\.(js|css)$`
    let body = re.strip_prefix(".*").unwrap_or(re);
    let body = body.strip_prefix("\\.")?;
    let body = body.strip_suffix('$')?;
    let list = if let Some(inner) = body.strip_prefix('(').and_then(|b| b.strip_suffix(')')) {
        inner.strip_prefix("?:").unwrap_or(inner)
    } else {
        body
    };
    let exts: Vec<String> = list.split('|').map(str::to_string).collect();
    if exts
        .iter()
        .all(|e| !e.is_empty() && e.bytes().all(|b| b.is_ascii_alphanumeric()))
    {
        Some(RegexLocation::Extensions(exts))
    } else {
        None
    }
}

/// The literal characters at the start of a regex (escapes resolved), and the rest.
fn literal_prefix(body: &str) -> Option<(String, &str)> {
    let mut lit = String::new();
    let mut chars = body.char_indices().peekable();
    while let Some(&(i, c)) = chars.peek() {
        match c {
            '\\' => {
                chars.next();
                let (_, e) = chars.next()?;
                if e.is_ascii_alphanumeric() {
                    return None;
                }
                lit.push(e);
            }
            '.' | '*' | '+' | '?' | '(' | ')' | '[' | ']' | '{' | '}' | '|' | '$' | '^' => {
                return Some((lit, &body[i..]));
            }
            _ => {
                chars.next();
                lit.push(c);
            }
        }
    }
    Some((lit, ""))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests unwrap freely
    use super::*;

    #[test]
    fn times_and_sizes() {
        assert_eq!(duration("30").as_deref(), Some("30s"));
        assert_eq!(duration("7d").as_deref(), Some("168h"));
        assert_eq!(duration("1m30s").as_deref(), Some("90s"));
        assert_eq!(duration("500ms").as_deref(), Some("500ms"));
        assert_eq!(duration("x"), None);
        assert_eq!(size_bytes("10m"), Some(10 << 20));
        assert_eq!(size(10 << 20), "10MB");
        assert_eq!(size(1500), "1500B");
    }

    #[test]
    fn variables() {
        assert_eq!(
            template("https://$host$request_uri", None).unwrap(),
            "https://$host$request_uri"
        );
        assert_eq!(template("${remote_addr}x", None).unwrap(), "$client_ipx");
        assert_eq!(template("$server_name", Some("a.io")).unwrap(), "a.io");
        assert_eq!(template("$http_x", None).unwrap_err(), "$http_x");
        assert_eq!(template("5$", None).unwrap(), "5$");
    }

    #[test]
    fn regexes() {
        use RegexLocation::*;
        assert_eq!(reduce_regex("^/api/"), Some(Prefix("/api/".into())));
        assert_eq!(reduce_regex("^/api(/|$)"), Some(Prefix("/api".into())));
        assert_eq!(reduce_regex("^/health$"), Some(Exact("/health".into())));
        assert_eq!(
            reduce_regex("\\.(js|css)$"),
            Some(Extensions(vec!["js".into(), "css".into()]))
        );
        assert_eq!(reduce_regex("^/user/(\\d+)$"), None);
        assert_eq!(
            reduce_regex("\\.php$"),
            Some(Extensions(vec!["php".into()]))
        );
    }
}
