//! Scalar config values that parse themselves: strings with `${VAR}` expansion, durations, sizes.

use std::fmt;
use std::ops::Deref;

use serde::{Deserialize, Deserializer};

/// A string value after `${VAR}` expansion. `$$` writes a literal `$`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text(pub String);

impl Text {
    pub fn expand(raw: &str) -> Result<Text, String> {
        Self::expand_with(raw, |name| std::env::var(name).ok())
    }

    pub fn expand_with(raw: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<Text, String> {
        let mut out = String::with_capacity(raw.len());
        let mut rest = raw;
        while let Some(pos) = rest.find('$') {
            out.push_str(&rest[..pos]);
            let after = &rest[pos + 1..];
            if let Some(tail) = after.strip_prefix('$') {
                out.push('$');
                rest = tail;
            } else if let Some(body) = after.strip_prefix('{') {
                let end = body
                    .find('}')
                    .ok_or_else(|| format!("unterminated ${{...}} in {raw:?}"))?;
                let name = &body[..end];
                let valid = !name.is_empty()
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                if !valid {
                    return Err(format!("invalid environment variable name {name:?}"));
                }
                let value = lookup(name)
                    .ok_or_else(|| format!("environment variable \"{name}\" is not set"))?;
                out.push_str(&value);
                rest = &body[end + 1..];
            } else {
                out.push('$');
                rest = after;
            }
        }
        out.push_str(rest);
        Ok(Text(out))
    }
}

impl Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Text::expand(&raw).map_err(serde::de::Error::custom)
    }
}

/// A duration written as `"500ms"`, `"30s"`, `"5m"`, `"1h"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    pub fn parse(s: &str) -> Result<Duration, String> {
        let bad = || format!("invalid duration \"{s}\" (expected e.g. \"500ms\", \"30s\", \"5m\")");
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (num, unit) = t.split_at(split);
        let n: u64 = num.parse().map_err(|_| bad())?;
        let ms = match unit.trim() {
            "ms" => n,
            "s" => n.saturating_mul(1000),
            "m" => n.saturating_mul(60_000),
            "h" => n.saturating_mul(3_600_000),
            _ => return Err(bad()),
        };
        Ok(Duration(std::time::Duration::from_millis(ms)))
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Text::deserialize(d)?;
        Duration::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// A byte size written as a number of bytes or a string such as `"64KB"` or `"10MB"` (powers of 1024).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bytes(pub u64);

impl Bytes {
    pub fn parse(s: &str) -> Result<Bytes, String> {
        let bad = || format!("invalid size \"{s}\" (expected e.g. \"512\", \"64KB\", \"10MB\")");
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num.parse().map_err(|_| bad())?;
        let mult: u64 = match unit.trim().to_ascii_uppercase().as_str() {
            "" | "B" => 1,
            "K" | "KB" | "KIB" => 1 << 10,
            "M" | "MB" | "MIB" => 1 << 20,
            "G" | "GB" | "GIB" => 1 << 30,
            _ => return Err(bad()),
        };
        n.checked_mul(mult).map(Bytes).ok_or_else(bad)
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Int(u64),
            Str(Text),
        }
        match Either::deserialize(d)? {
            Either::Int(n) => Ok(Bytes(n)),
            Either::Str(s) => Bytes::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_variables() {
        let env = |n: &str| (n == "TOKEN").then(|| "s3cr3t".to_string());
        let t = Text::expand_with("a-${TOKEN}-$$-$x", env).expect("expands");
        assert_eq!(t.0, "a-s3cr3t-$-$x");
        let err = Text::expand_with("${MISSING}", env).expect_err("unset");
        assert_eq!(err, "environment variable \"MISSING\" is not set");
        assert!(Text::expand_with("${OPEN", env).is_err());
        assert!(Text::expand_with("${A-B}", env).is_err());
    }

    #[test]
    fn parses_durations() {
        assert_eq!(Duration::parse("500ms").expect("ms").0.as_millis(), 500);
        assert_eq!(Duration::parse("30s").expect("s").0.as_secs(), 30);
        assert_eq!(Duration::parse("5m").expect("m").0.as_secs(), 300);
        assert_eq!(Duration::parse("1h").expect("h").0.as_secs(), 3600);
        let err = Duration::parse("abc").expect_err("bad");
        assert!(err.starts_with("invalid duration \"abc\""), "{err}");
        assert!(Duration::parse("10").is_err());
        assert!(Duration::parse("10 days").is_err());
    }

    #[test]
    fn parses_sizes() {
        assert_eq!(Bytes::parse("512").expect("b").0, 512);
        assert_eq!(Bytes::parse("64KB").expect("kb").0, 64 * 1024);
        assert_eq!(Bytes::parse("10MB").expect("mb").0, 10 << 20);
        assert_eq!(Bytes::parse("1g").expect("g").0, 1 << 30);
        assert!(Bytes::parse("ten").is_err());
        assert!(Bytes::parse("99999999999999999999GB").is_err());
    }
}
