//! Reading the text exposition back in unit tests.

use std::collections::BTreeMap;

use prometheus::TextEncoder;

use super::Metrics;

/// The text exposition of `metrics` alone (no scrape-time gauges set).
pub fn text(metrics: &Metrics) -> String {
    let mut out = String::new();
    TextEncoder::new()
        .encode_utf8(&metrics.registry().gather(), &mut out)
        .expect("encodable");
    out
}

/// One sample of the text exposition: name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// Parses the text format's sample lines (label values here never hold `"`, `,` or `\`).
pub fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("sample has a value");
            let value: f64 = value.parse().expect("numeric value");
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => {
                    let body = rest.strip_suffix('}').expect("closing brace");
                    let labels = body
                        .split(',')
                        .filter(|kv| !kv.is_empty())
                        .map(|kv| {
                            let (k, v) = kv.split_once('=').expect("label=value");
                            (k.to_string(), v.trim_matches('"').to_string())
                        })
                        .collect();
                    (name, labels)
                }
                None => (series, BTreeMap::new()),
            };
            (name.to_string(), labels, value)
        })
        .collect()
}

/// The value of the one sample named `name` whose labels include `want`.
pub fn value(text: &str, name: &str, want: &[(&str, &str)]) -> Option<f64> {
    let found: Vec<f64> = samples(text)
        .into_iter()
        .filter(|(n, labels, _)| {
            n == name
                && want
                    .iter()
                    .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| v)
        .collect();
    assert!(found.len() <= 1, "{name} {want:?} matches {found:?}");
    found.first().copied()
}
