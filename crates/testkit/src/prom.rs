//! The Prometheus text format (`GET /metrics`) parsed into samples, and look-ups of one series or a sum.

use std::collections::BTreeMap;

/// Labels of one series, by name.
pub type Labels = BTreeMap<String, String>;

/// One sample of the text format: name, labels, value.
pub type Sample = (String, Labels, f64);

/// Splits a series `name{k="v",...}` (or a bare `name`) into name and labels. Label values here
/// hold no `"`, `,` or `\`.
fn parse_series(series: &str) -> (String, Labels) {
    match series.split_once('{') {
        Some((name, rest)) => {
            let body = rest
                .strip_suffix('}')
                .unwrap_or_else(|| panic!("no closing brace in {series:?}"));
            let labels = body
                .split(',')
                .filter(|kv| !kv.is_empty())
                .map(|kv| {
                    let (k, v) = kv
                        .split_once('=')
                        .unwrap_or_else(|| panic!("label without = in {series:?}"));
                    (k.to_string(), v.trim_matches('"').to_string())
                })
                .collect();
            (name.to_string(), labels)
        }
        None => (series.to_string(), Labels::new()),
    }
}

/// Parses the sample lines of the text format; panics on a line that is not `series value`.
pub fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("no value in {line:?}"));
            let value: f64 = value
                .parse()
                .unwrap_or_else(|e| panic!("value in {line:?}: {e}"));
            let (name, labels) = parse_series(series);
            (name, labels, value)
        })
        .collect()
}

/// The value of the sample of `name` with exactly the labels `want` (None if absent).
fn exact_sample(text: &str, name: &str, want: &Labels) -> Option<f64> {
    samples(text)
        .into_iter()
        .find(|(n, l, _)| n == name && l == want)
        .map(|(_, _, v)| v)
}

/// The value of the sample of `name` with exactly the labels `labels` (None if absent).
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: Labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    exact_sample(text, name, &want)
}

/// The value of the sample written as `series`, e.g. `switchyard_rate_limit_keys{zone="a"}` or
/// `switchyard_config_generation`: the same name and exactly the same labels, in any order.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    let (name, want) = parse_series(series);
    exact_sample(text, &name, &want)
}

/// The sum over every sample of `name` whose labels include `labels`.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples(text)
        .into_iter()
        .filter(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| v)
        .sum()
}
