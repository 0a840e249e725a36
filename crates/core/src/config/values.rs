//! Values that parse themselves, so each is checked in one place: strings with `${VAR}` expansion,
//! durations and sizes of the config file, and the weights, rollout steps and shares that the
//! config, the admin API and `control` all take.

use std::fmt;
use std::ops::Deref;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

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

/// Why a [`Weight`], [`Steps`] or [`Share`] was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValueError {
    // The weight messages read after what is weighed: `weight of pool "blue" is -5, below 0`.
    #[error("is {0}, below 0")]
    NegativeWeight(i64),
    #[error("is {0}, above the most")]
    WeightTooLarge(u64),
    #[error("is {0}, not an integer")]
    FractionalWeight(f64),
    /// Not a number at all: "a string, not a number", "null", ...
    #[error("is {0}")]
    WeightNotANumber(&'static str),
    #[error("steps must not be empty")]
    NoSteps,
    #[error("step {0} is outside 1..=100 (percent)")]
    StepOutOfRange(u32),
    #[error("steps {0:?} must be strictly ascending")]
    StepsNotAscending(Vec<u32>),
    #[error("steps {0:?} must end at 100")]
    StepsNotEndingAt100(Vec<u32>),
    #[error("{0} is not a share between 0 and 1")]
    NotAShare(f64),
}

/// Largest pool or server weight: keeps sums far from overflow.
pub const MAX_WEIGHT: u32 = 1_000_000;

/// A pool or server weight: an integer from 0 to [`MAX_WEIGHT`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Weight(u32);

impl Weight {
    pub const MAX: Weight = Weight(MAX_WEIGHT);

    pub fn new(w: u64) -> Result<Weight, ValueError> {
        match u32::try_from(w) {
            Ok(w) if w <= MAX_WEIGHT => Ok(Weight(w)),
            _ => Err(ValueError::WeightTooLarge(w)),
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for Weight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl From<Weight> for u32 {
    fn from(w: Weight) -> u32 {
        w.0
    }
}

/// Any JSON or TOML value: a weight when it is an integer in range, else an error that says what
/// it is instead.
impl<'de> Deserialize<'de> for Weight {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct WeightVisitor;
        impl<'de> Visitor<'de> for WeightVisitor {
            type Value = Weight;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "an integer from 0 to {MAX_WEIGHT}")
            }
            fn visit_u64<E: de::Error>(self, w: u64) -> Result<Weight, E> {
                Weight::new(w).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, w: i64) -> Result<Weight, E> {
                match u64::try_from(w) {
                    Ok(w) => self.visit_u64(w),
                    Err(_) => Err(E::custom(ValueError::NegativeWeight(w))),
                }
            }
            fn visit_f64<E: de::Error>(self, w: f64) -> Result<Weight, E> {
                Err(E::custom(ValueError::FractionalWeight(w)))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Weight, E> {
                Err(E::custom(ValueError::WeightNotANumber(
                    "a string, not a number",
                )))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Weight, E> {
                Err(E::custom(ValueError::WeightNotANumber(
                    "a boolean, not a number",
                )))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Weight, E> {
                Err(E::custom(ValueError::WeightNotANumber("null")))
            }
            fn visit_none<E: de::Error>(self) -> Result<Weight, E> {
                self.visit_unit()
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<Weight, A::Error> {
                Err(de::Error::custom(ValueError::WeightNotANumber(
                    "not a number",
                )))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<Weight, A::Error> {
                Err(de::Error::custom(ValueError::WeightNotANumber(
                    "not a number",
                )))
            }
        }
        d.deserialize_any(WeightVisitor)
    }
}

/// A rollout's canary weights in percent: climbing strictly from at least 1 to exactly 100.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Steps(Vec<u32>);

impl Steps {
    pub fn new(steps: Vec<u32>) -> Result<Steps, ValueError> {
        if steps.is_empty() {
            return Err(ValueError::NoSteps);
        }
        if let Some(bad) = steps.iter().find(|s| !(1..=100).contains(*s)) {
            return Err(ValueError::StepOutOfRange(*bad));
        }
        if steps.windows(2).any(|w| w[0] >= w[1]) {
            return Err(ValueError::StepsNotAscending(steps));
        }
        if steps.last() != Some(&100) {
            return Err(ValueError::StepsNotEndingAt100(steps));
        }
        Ok(Steps(steps))
    }

    pub fn as_slice(&self) -> &[u32] {
        &self.0
    }

    pub fn into_vec(self) -> Vec<u32> {
        self.0
    }
}

impl Default for Steps {
    /// 1, 5, 25, 50 and 100 percent.
    fn default() -> Self {
        Steps(vec![1, 5, 25, 50, 100])
    }
}

impl<'de> Deserialize<'de> for Steps {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Steps::new(Vec::deserialize(d)?).map_err(de::Error::custom)
    }
}

/// A share of requests, from 0 to 1 (a rollout's largest error rate).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize)]
#[serde(transparent)]
pub struct Share(f64);

impl Share {
    pub fn new(share: f64) -> Result<Share, ValueError> {
        if (0.0..=1.0).contains(&share) {
            Ok(Share(share))
        } else {
            Err(ValueError::NotAShare(share))
        }
    }

    pub fn get(self) -> f64 {
        self.0
    }
}

impl<'de> Deserialize<'de> for Share {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Share::new(f64::deserialize(d)?).map_err(de::Error::custom)
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

    #[test]
    fn weights_are_bounded_integers() {
        assert_eq!(Weight::new(0).expect("0").get(), 0);
        assert_eq!(Weight::new(1_000_000).expect("max"), Weight::MAX);
        assert_eq!(
            Weight::new(1_000_001),
            Err(ValueError::WeightTooLarge(1_000_001))
        );
        assert!(Weight::new(u64::MAX).is_err());
        let json = |s: &str| serde_json::from_str::<Weight>(s).map_err(|e| e.to_string());
        assert_eq!(json("90").expect("int").get(), 90);
        for (bad, says) in [
            ("-5", "is -5, below 0"),
            ("1.5", "is 1.5, not an integer"),
            ("\"50\"", "is a string, not a number"),
            ("null", "is null"),
            ("true", "is a boolean, not a number"),
            ("[1]", "is not a number"),
            ("{}", "is not a number"),
            ("1000001", "is 1000001, above the most"),
            ("99999999999", "is 99999999999, above the most"),
        ] {
            let e = json(bad).expect_err(bad);
            assert!(e.starts_with(says), "{bad}: {e}");
        }
    }

    #[test]
    fn steps_climb_to_100() {
        let steps = |v: &[u32]| Steps::new(v.to_vec()).map_err(|e| e.to_string());
        assert!(steps(&[1, 5, 25, 50, 100]).is_ok());
        assert!(steps(&[100]).is_ok());
        assert_eq!(steps(&[]), Err("steps must not be empty".into()));
        assert_eq!(
            steps(&[0, 100]),
            Err("step 0 is outside 1..=100 (percent)".into())
        );
        assert_eq!(
            steps(&[5, 5, 100]),
            Err("steps [5, 5, 100] must be strictly ascending".into())
        );
        assert!(steps(&[50, 20, 100]).is_err());
        assert_eq!(steps(&[5, 50]), Err("steps [5, 50] must end at 100".into()));
        assert!(steps(&[5, 101]).is_err());
        assert_eq!(Steps::default().as_slice(), &[1, 5, 25, 50, 100]);
        let parsed: Steps = serde_json::from_str("[10, 100]").expect("valid");
        assert_eq!(parsed.into_vec(), vec![10, 100]);
        let e = serde_json::from_str::<Steps>("[50, 20]").expect_err("descending");
        assert!(e.to_string().contains("strictly ascending"), "{e}");
    }

    #[test]
    fn shares_are_between_0_and_1() {
        assert_eq!(Share::new(0.05).expect("valid").get(), 0.05);
        assert!(Share::new(0.0).is_ok() && Share::new(1.0).is_ok());
        assert_eq!(
            Share::new(1.5).map_err(|e| e.to_string()),
            Err("1.5 is not a share between 0 and 1".into())
        );
        assert!(Share::new(-0.1).is_err() && Share::new(f64::NAN).is_err());
        // An integer is a share too, as JSON writes 1.
        assert_eq!(serde_json::from_str::<Share>("1").expect("1").get(), 1.0);
        let e = serde_json::from_str::<Share>("2").expect_err("2");
        assert!(
            e.to_string()
                .starts_with("2 is not a share between 0 and 1"),
            "{e}"
        );
    }
}
