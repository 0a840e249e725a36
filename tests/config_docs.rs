//! docs/config.md documents every key the config accepts, and no other.
//!
//! The accepted keys come from the source: the fields of the `Raw*` structs (the serde mirror of
//! the TOML, all `deny_unknown_fields`) in `src/config/`, including the route options the
//! `with_route_options!` macro adds, with `#[serde(rename)]` honoured. Following the field types
//! from `RawConfig` gives each struct its table: `[server]`, `[[listeners]]`,
//! `[services.NAME.pools.NAME]` (a map's entries are written `NAME`), ...
//!
//! The documented keys come from the key tables of docs/config.md: a Markdown table whose header's
//! first cell is `Key` lists, in its first column, keys written as `` `key` ``; they belong to the
//! tables named in backticks in the heading above it (`` ## `[server]` ``; a heading may name
//! several, as `` `[defaults]` and `[[routes]]` ``).
//!
//! The keys config/switchyard.toml uses, also those in commented-out lines, must be documented.
//! That the reference config passes `switchyard check` is `reference_config_is_valid` in
//! tests/config_errors.rs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Where the `Raw*` structs are defined.
const SOURCES: &[&str] = &[
    "crates/core/src/config/raw.rs",
    "crates/core/src/config/server.rs",
    "crates/core/src/config/listeners.rs",
    "crates/core/src/config/routes.rs",
    "crates/core/src/config/services.rs",
    "crates/core/src/config/admin.rs",
    "crates/core/src/config/limits.rs",
    "crates/core/src/config/rollout.rs",
    "crates/core/src/config/acme.rs",
    "crates/core/src/config/retry.rs",
    "crates/core/src/config/affinity.rs",
    "crates/core/src/config/upstream_conn.rs",
    "crates/core/src/config/cors.rs",
    "crates/core/src/config/headers.rs",
    "crates/core/src/config/redirect.rs",
    "crates/core/src/config/tls_policy.rs",
    "crates/core/src/config/error_pages.rs",
    "crates/core/src/config/compression.rs",
    "crates/core/src/config/access.rs",
    "crates/core/src/config/static_site.rs",
    "crates/core/src/config/tracing.rs",
    "crates/core/src/config/cluster.rs",
];
const ROOT: &str = "RawConfig";
const DOC: &str = "docs/config.md";
const REFERENCE: &str = "config/switchyard.toml";

fn read(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// The accepted keys, from the source.

#[derive(Debug, Clone)]
struct Field {
    key: String,
    ty: String,
}

#[derive(Debug, Clone)]
struct RawStruct {
    file: &'static str,
    fields: Vec<Field>,
    /// A hand-written Deserialize that also takes a bare boolean (`compression = true`).
    takes_bool: bool,
}

/// How a field holds another `Raw*` struct.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// `[a.b]`
    One,
    /// `[a.b.NAME]`
    Map,
    /// `[[a.b]]`
    Array,
}

/// Every `Raw*` struct of `SOURCES` by name.
fn raw_structs() -> BTreeMap<String, RawStruct> {
    let mut out = BTreeMap::new();
    for &file in SOURCES {
        let text = read(file);
        let (text, from_macro) = expand_route_options(file, &text);
        for (name, s) in from_macro.into_iter().chain(plain_structs(file, &text)) {
            assert!(
                out.insert(name.clone(), s).is_none(),
                "struct {name} is defined twice"
            );
        }
    }
    out
}

/// The structs declared through `with_route_options!`, and the text with those invocations blanked
/// out (so that the plain scan does not see them a second time).
fn expand_route_options(file: &'static str, text: &str) -> (String, Vec<(String, RawStruct)>) {
    let Some(def) = text.find("macro_rules! with_route_options") else {
        return (text.to_string(), Vec::new());
    };
    // The fields every struct of the macro gets, after the invocation's own.
    let body_start = def
        + text[def..]
            .find("pub struct $name {")
            .expect("macro struct");
    let (common, _) = struct_body(text, body_start);
    let common = parse_fields(file, "with_route_options!", common);
    assert!(
        !common.is_empty(),
        "{file}: found no fields in the with_route_options! macro"
    );
    let mut blanked = text.to_string();
    let mut structs = Vec::new();
    let mut from = def + 1;
    while let Some(at) = text[from..].find("with_route_options! {") {
        let start = from + at;
        let open = start + text[start..].find('{').expect("brace");
        let close = matching_brace(text, open);
        let inner = &text[open + 1..close];
        let decl = inner
            .find("struct ")
            .expect("a struct in with_route_options!");
        let name: String = inner[decl + 7..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let (own, _) = struct_body(inner, decl);
        let mut fields = parse_fields(file, &name, own);
        fields.extend(common.iter().cloned());
        structs.push((
            name,
            RawStruct {
                file,
                fields,
                takes_bool: false,
            },
        ));
        blanked.replace_range(start..=close, &" ".repeat(close + 1 - start));
        from = close;
    }
    (blanked, structs)
}

/// The plain `struct Raw...` definitions of a file.
fn plain_structs(file: &'static str, text: &str) -> Vec<(String, RawStruct)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(at) = text[from..].find("struct Raw") {
        let start = from + at;
        from = start + 1;
        let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
        let prefix = text[line_start..start].trim();
        if !(prefix.is_empty() || prefix.starts_with("pub")) {
            continue; // e.g. `for RawServerEntry`, or text in a comment
        }
        let name: String = text[start + 7..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let attrs = attributes_before(text, line_start);
        let (body, end) = struct_body(text, start);
        from = end;
        let mut fields = parse_fields(file, &name, body);
        if attrs.contains("rename_all") {
            panic!("{file}: {name} has serde(rename_all); teach tests/config_docs.rs about it");
        }
        let mut takes_bool = false;
        if !attrs.contains("Deserialize") {
            // A hand-written Deserialize: its keys are those its visitor names as expected.
            fields = custom_keys(file, text, &name, fields);
            let impl_at = text
                .find(&format!("Deserialize<'de> for {name}"))
                .unwrap_or(0);
            takes_bool = text[impl_at..].contains("fn visit_bool");
        }
        out.push((
            name,
            RawStruct {
                file,
                fields,
                takes_bool,
            },
        ));
    }
    out
}

/// The attribute and doc-comment lines right above `line_start`.
fn attributes_before(text: &str, line_start: usize) -> String {
    let mut attrs = Vec::new();
    for line in text[..line_start].lines().rev() {
        let t = line.trim();
        if t.starts_with("#[") || t.starts_with("//") {
            attrs.push(t);
        } else {
            break;
        }
    }
    attrs.join("\n")
}

/// The text between the braces of the struct declared at `at`, and the offset after them.
fn struct_body(text: &str, at: usize) -> (&str, usize) {
    let open = at + text[at..].find(['{', ';']).expect("struct body");
    assert!(
        text.as_bytes()[open] == b'{',
        "tuple or unit struct at {}",
        &text[at..open]
    );
    let close = matching_brace(text, open);
    (&text[open + 1..close], close + 1)
}

fn matching_brace(text: &str, open: usize) -> usize {
    let mut depth = 0;
    for (i, c) in text[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return open + i;
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced braces after offset {open}");
}

/// `[#[attr]] [pub] name: Type,` entries of a struct body; `rename` honoured, `alias` added.
fn parse_fields(file: &str, owner: &str, body: &str) -> Vec<Field> {
    let body: String = body
        .lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut fields = Vec::new();
    for entry in split_top_level(&body) {
        let mut rest = entry.trim();
        let mut attrs = String::new();
        while rest.starts_with("#[") {
            let end = rest.find(']').expect("attribute end");
            // Attributes hold no `]` inside other than their own end in these files.
            attrs.push_str(&rest[..=end]);
            rest = rest[end + 1..].trim_start();
        }
        if rest.is_empty() {
            continue;
        }
        // A macro repetition (`$(pub $field: $ty,)*`): the invocation's own fields, read there.
        if rest.starts_with("$(") {
            let mut depth = 0;
            let end = rest
                .char_indices()
                .find(|&(_, c)| {
                    match c {
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        _ => {}
                    }
                    c == ')' && depth == 0
                })
                .map(|(i, _)| i)
                .expect("end of the macro repetition");
            rest = rest[end + 1..]
                .trim_start_matches(['*', '+', '?'])
                .trim_start();
            if rest.is_empty() {
                continue;
            }
        }
        let rest = rest
            .strip_prefix("pub(crate)")
            .or_else(|| rest.strip_prefix("pub(super)"))
            .or_else(|| rest.strip_prefix("pub "))
            .unwrap_or(rest)
            .trim();
        let (name, ty) = rest
            .split_once(':')
            .unwrap_or_else(|| panic!("{file}: cannot read field `{rest}` of {owner}"));
        let name = name.trim().to_string();
        assert!(
            !attrs.contains("flatten"),
            "{file}: {owner}.{name} is serde(flatten); teach tests/config_docs.rs about it"
        );
        let key = serde_string(&attrs, "rename").unwrap_or_else(|| name.clone());
        let ty = ty.trim().to_string();
        if let Some(alias) = serde_string(&attrs, "alias") {
            fields.push(Field {
                key: alias,
                ty: ty.clone(),
            });
        }
        fields.push(Field { key, ty });
    }
    fields
}

/// The string of `name = "..."` in serde attributes.
fn serde_string(attrs: &str, name: &str) -> Option<String> {
    let at = attrs.find(&format!("{name} = \""))?;
    let rest = &attrs[at + name.len() + 4..];
    Some(rest[..rest.find('"')?].to_string())
}

/// Splits at the commas outside `<>`, `()` and `[]`.
fn split_top_level(body: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in body.char_indices() {
        match c {
            '<' | '(' | '[' => depth += 1,
            '>' | ')' | ']' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&body[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&body[start..]);
    out
}

/// For a struct with a hand-written `Deserialize`: the keys its visitor lists in `unknown_field`,
/// which must be the struct's fields.
fn custom_keys(file: &str, text: &str, name: &str, fields: Vec<Field>) -> Vec<Field> {
    let impl_at = text
        .find(&format!("Deserialize<'de> for {name}"))
        .unwrap_or_else(|| panic!("{file}: {name} has neither derive(Deserialize) nor an impl"));
    let list_at = impl_at
        + text[impl_at..]
            .find("unknown_field(")
            .unwrap_or_else(|| panic!("{file}: the Deserialize of {name} names no unknown_field"));
    let open = list_at + text[list_at..].find("&[").expect("expected-keys list") + 2;
    let close = open + text[open..].find(']').expect("list end");
    let keys: BTreeSet<String> = text[open..close]
        .split(',')
        .map(|k| k.trim().trim_matches('"').to_string())
        .filter(|k| !k.is_empty())
        .collect();
    let names: BTreeSet<String> = fields.iter().map(|f| f.key.clone()).collect();
    assert_eq!(
        keys, names,
        "{file}: the keys the Deserialize of {name} accepts differ from its fields"
    );
    fields
}

/// The `Raw*` struct a field type holds, and how.
fn sub_table(ty: &str) -> Option<(String, Shape)> {
    let bytes = ty.as_bytes();
    let at = ty.match_indices("Raw").map(|(i, _)| i).find(|&i| {
        let before_ok = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        let after_ok = bytes.get(i + 3).is_some_and(u8::is_ascii_uppercase);
        before_ok && after_ok
    })?;
    let name: String = ty[at..]
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    let outer = &ty[..at];
    let shape = if outer.contains("BTreeMap<") || outer.contains("HashMap<") {
        Shape::Map
    } else if outer.contains("Vec<") {
        Shape::Array
    } else {
        Shape::One
    };
    Some((name, shape))
}

/// A table of the config: its header as written in TOML and docs (`[limits.zones.NAME]`) and the
/// struct that holds its keys.
#[derive(Debug, Clone)]
struct Table {
    header: String,
    /// The dotted path, without brackets: `limits.zones.NAME`.
    path: String,
    strukt: String,
}

/// Every table reachable from `RawConfig`, by header, plus the root at `""`.
fn schema(structs: &BTreeMap<String, RawStruct>) -> BTreeMap<String, Table> {
    let mut out = BTreeMap::new();
    let root = Table {
        header: String::new(),
        path: String::new(),
        strukt: ROOT.to_string(),
    };
    walk_schema(structs, &root, &mut out, 0);
    out.insert(String::new(), root);
    out
}

fn walk_schema(
    structs: &BTreeMap<String, RawStruct>,
    table: &Table,
    out: &mut BTreeMap<String, Table>,
    depth: usize,
) {
    assert!(depth < 16, "the Raw* structs nest too deep (a cycle?)");
    let s = structs
        .get(&table.strukt)
        .unwrap_or_else(|| panic!("struct {} is not in {SOURCES:?}", table.strukt));
    for f in &s.fields {
        let Some((child, shape)) = sub_table(&f.ty) else {
            continue;
        };
        let mut path = if table.path.is_empty() {
            f.key.clone()
        } else {
            format!("{}.{}", table.path, f.key)
        };
        if shape == Shape::Map {
            path.push_str(".NAME");
        }
        let header = if shape == Shape::Array {
            format!("[[{path}]]")
        } else {
            format!("[{path}]")
        };
        let t = Table {
            header: header.clone(),
            path,
            strukt: child,
        };
        walk_schema(structs, &t, out, depth + 1);
        out.insert(header, t);
    }
}

/// The keys of each table: header → key → whether it holds a sub-table (and which, how).
fn accepted(
    structs: &BTreeMap<String, RawStruct>,
    tables: &BTreeMap<String, Table>,
) -> BTreeMap<String, BTreeSet<String>> {
    tables
        .iter()
        .map(|(header, t)| {
            let keys = structs[&t.strukt]
                .fields
                .iter()
                .map(|f| f.key.clone())
                .collect();
            (header.clone(), keys)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The documented keys, from docs/config.md.

/// Table header → documented key → line number.
type Documented = BTreeMap<String, BTreeMap<String, usize>>;

/// Reads the key tables of the page; errors for rows and tables it cannot place.
fn documented(md: &str) -> (Documented, Vec<String>) {
    let mut out: Documented = BTreeMap::new();
    let mut errors = Vec::new();
    let lines: Vec<&str> = md.lines().collect();
    let mut tables: Vec<String> = Vec::new();
    let mut heading = String::new();
    let mut in_fence = false;
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim_end();
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            i += 1;
            continue;
        }
        if in_fence {
            i += 1;
            continue;
        }
        if line.starts_with('#') {
            heading = line.to_string();
            tables = backticked(line)
                .into_iter()
                .filter(|s| s.starts_with('[') && s.ends_with(']'))
                .collect();
            if line.to_ascii_lowercase().contains("top level") {
                tables.push(String::new());
            }
            i += 1;
            continue;
        }
        let is_key_table = line.starts_with('|')
            && first_cell(line).eq_ignore_ascii_case("key")
            && lines
                .get(i + 1)
                .is_some_and(|l| l.starts_with("|--") || l.starts_with("| --"));
        if !is_key_table {
            i += 1;
            continue;
        }
        if tables.is_empty() {
            errors.push(format!(
                "{DOC}:{}: a key table under the heading {heading:?}, which names no `[table]`",
                i + 1
            ));
        }
        i += 2;
        while i < lines.len() && lines[i].starts_with('|') {
            let cell = first_cell(lines[i]);
            let key = cell
                .strip_prefix('`')
                .and_then(|c| c.strip_suffix('`'))
                .filter(|k| {
                    !k.is_empty()
                        && k.chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                });
            match key {
                Some(key) => {
                    for t in &tables {
                        let keys = out.entry(t.clone()).or_default();
                        if keys.insert(key.to_string(), i + 1).is_some() {
                            errors.push(format!(
                                "{DOC}:{}: `{key}` is documented twice for `{t}`",
                                i + 1
                            ));
                        }
                    }
                }
                None => errors.push(format!(
                    "{DOC}:{}: the first cell of a key table row must be one `key` in backticks, not {cell:?}",
                    i + 1
                )),
            }
            i += 1;
        }
    }
    (out, errors)
}

fn first_cell(row: &str) -> &str {
    row.trim_start_matches('|')
        .split('|')
        .next()
        .unwrap_or("")
        .trim()
}

fn backticked(line: &str) -> Vec<String> {
    line.split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, s)| s.to_string())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The comparison.

fn show(header: &str) -> String {
    if header.is_empty() {
        "the top level".to_string()
    } else {
        format!("`{header}`")
    }
}

/// Keys accepted but not documented, and documented but not accepted.
fn compare(
    structs: &BTreeMap<String, RawStruct>,
    tables: &BTreeMap<String, Table>,
    docs: &Documented,
) -> Vec<String> {
    let accepted = accepted(structs, tables);
    let mut problems = Vec::new();
    for (header, keys) in &accepted {
        if header.is_empty() {
            // The top level's keys are the tables; they are checked as tables.
            let t = &tables[header];
            let leaves = structs[&t.strukt]
                .fields
                .iter()
                .filter(|f| sub_table(&f.ty).is_none());
            for f in leaves {
                if !docs.get(header).is_some_and(|d| d.contains_key(&f.key)) {
                    problems.push(format!(
                        "{DOC} does not document the top-level key `{}` ({ROOT} in {}): add a key table under a heading \"Top level\"",
                        f.key, structs[ROOT].file
                    ));
                }
            }
            continue;
        }
        let t = &tables[header];
        let file = structs[&t.strukt].file;
        for key in keys {
            if !docs.get(header).is_some_and(|d| d.contains_key(key)) {
                problems.push(format!(
                    "{DOC} does not document `{key}` of {} ({} in {file})",
                    show(header),
                    t.strukt
                ));
            }
        }
    }
    for (header, keys) in docs {
        let Some(known) = accepted.get(header) else {
            problems.push(format!(
                "{DOC} documents the table {}, which the config does not have (tables: {})",
                show(header),
                accepted
                    .keys()
                    .filter(|h| !h.is_empty())
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
            continue;
        };
        for (key, line) in keys {
            if !known.contains(key) {
                problems.push(format!(
                    "{DOC}:{line} documents `{key}` in {}, which the config does not accept",
                    show(header)
                ));
            }
        }
    }
    problems
}

/// The (table header, key) pairs a TOML document uses, walked along the schema; keys the schema
/// does not know are returned as problems.
fn used_keys(
    structs: &BTreeMap<String, RawStruct>,
    doc: &toml::Table,
    what: &str,
) -> (BTreeSet<(String, String)>, Vec<String>) {
    let mut used = BTreeSet::new();
    let mut problems = Vec::new();
    let root = Table {
        header: String::new(),
        path: String::new(),
        strukt: ROOT.to_string(),
    };
    walk_toml(structs, &root, doc, what, &mut used, &mut problems);
    (used, problems)
}

fn walk_toml(
    structs: &BTreeMap<String, RawStruct>,
    table: &Table,
    value: &toml::Table,
    what: &str,
    used: &mut BTreeSet<(String, String)>,
    problems: &mut Vec<String>,
) {
    let fields = &structs[&table.strukt].fields;
    for (key, v) in value {
        let Some(field) = fields.iter().find(|f| &f.key == key) else {
            problems.push(format!(
                "{what} uses `{key}` in {}, which the config does not accept",
                show(&table.header)
            ));
            continue;
        };
        if !table.header.is_empty() {
            used.insert((table.header.clone(), key.clone()));
        }
        let Some((child, shape)) = sub_table(&field.ty) else {
            continue;
        };
        let base = if table.path.is_empty() {
            key.clone()
        } else {
            format!("{}.{key}", table.path)
        };
        let sub = |path: String| Table {
            header: if shape == Shape::Array {
                format!("[[{path}]]")
            } else {
                format!("[{path}]")
            },
            path,
            strukt: child.clone(),
        };
        match (shape, v) {
            (Shape::One, toml::Value::Table(t)) => {
                walk_toml(structs, &sub(base), t, what, used, problems)
            }
            (Shape::Map, toml::Value::Table(entries)) => {
                let t = sub(format!("{base}.NAME"));
                for entry in entries.values() {
                    if let toml::Value::Table(e) = entry {
                        walk_toml(structs, &t, e, what, used, problems);
                    }
                }
            }
            (Shape::Array, toml::Value::Array(items)) => {
                let t = sub(base);
                for item in items {
                    // A server may be a plain "host:port" string.
                    if let toml::Value::Table(e) = item {
                        walk_toml(structs, &t, e, what, used, problems);
                    }
                }
            }
            (Shape::One, toml::Value::Boolean(_)) if structs[&child].takes_bool => {}
            _ => problems.push(format!(
                "{what}: `{key}` in {} has the wrong shape",
                show(&table.header)
            )),
        }
    }
}

/// The reference config with its commented-out keys and table headers put back: a comment line
/// that reads `key = value` or `[table]` once its `#`s are removed.
fn uncommented(text: &str) -> String {
    text.lines()
        .map(|line| {
            let t = line.trim_start();
            if !t.starts_with('#') {
                return line.to_string();
            }
            let c = t.trim_start_matches(['#', ' ', '\t']);
            let header = c.starts_with('[')
                && c.split('#').next().is_some_and(|h| {
                    let h = h.trim();
                    h.ends_with(']')
                        && h.trim_matches(['[', ']'])
                            .chars()
                            .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '.' | '-'))
                });
            let assignment = c.split_once('=').is_some_and(|(k, v)| {
                let k = k.trim();
                !k.is_empty()
                    && k.chars()
                        .all(|ch| ch.is_ascii_lowercase() || ch == '_' || ch.is_ascii_digit())
                    && k.starts_with(|ch: char| ch.is_ascii_lowercase())
                    && c.starts_with(k)
                    && !v.trim().is_empty()
            });
            if header || assignment {
                c.to_string()
            } else {
                String::new()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn fail_with(problems: &[String]) {
    assert!(
        problems.is_empty(),
        "{} problem(s):\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}

// ---------------------------------------------------------------------------------------------
// The tests.

#[test]
fn every_accepted_key_is_documented_and_every_documented_key_is_accepted() {
    let structs = raw_structs();
    let tables = schema(&structs);
    let (docs, mut problems) = documented(&read(DOC));
    problems.extend(compare(&structs, &tables, &docs));
    fail_with(&problems);
}

#[test]
fn every_key_of_the_reference_config_is_documented() {
    let structs = raw_structs();
    let (docs, _) = documented(&read(DOC));
    let text = read(REFERENCE);
    let mut problems = Vec::new();
    let active: toml::Table = toml::from_str(&text).expect("config/switchyard.toml is TOML");
    let restored = uncommented(&text);
    let all: toml::Table = toml::from_str(&restored).unwrap_or_else(|e| {
        panic!(
            "{REFERENCE} with its commented-out `key = value` and `[table]` lines restored is not \
             TOML (a comment that reads like a key?): {e}\n{restored}"
        )
    });
    for (doc, what) in [
        (&active, REFERENCE.to_string()),
        (&all, format!("{REFERENCE} (commented-out lines included)")),
    ] {
        let (used, unknown) = used_keys(&structs, doc, &what);
        problems.extend(unknown);
        for (header, key) in used {
            if !docs.get(&header).is_some_and(|d| d.contains_key(&key)) {
                problems.push(format!(
                    "{what} uses `{key}` in `{header}`, which {DOC} does not document"
                ));
            }
        }
    }
    problems.dedup();
    fail_with(&problems);
}

/// The scan of the source finds what it should: a scan that silently found nothing would pass
/// nothing else, but this says what is wrong.
#[test]
fn the_source_scan_finds_the_config_structs() {
    let structs = raw_structs();
    let tables = schema(&structs);
    let keys = accepted(&structs, &tables);
    for (header, key) in [
        ("[server]", "merge_slashes"),
        ("[[listeners]]", "https_port"),
        ("[defaults]", "client_header_timeout"),
        ("[[routes]]", "forward_original_path"),
        ("[[routes]]", "strip_prefix"),
        ("[services.NAME.pools.NAME]", "servers"),
        ("[[services.NAME.pools.NAME.servers]]", "address"),
        ("[services.NAME.pools.NAME.health]", "expect_status"),
        ("[limits]", "max_header_size"),
        ("[limits.zones.NAME]", "max_keys"),
        ("[acme.eab]", "hmac_key"),
        ("[[acme.certificates]]", "names"),
    ] {
        assert!(
            keys.get(header).is_some_and(|k| k.contains(key)),
            "the scan of {SOURCES:?} did not find `{key}` in `{header}`; found: {keys:#?}"
        );
    }
    // Every Raw* struct is some table's: one that is not was missed by the walk (or is dead).
    let reached: BTreeSet<&str> = tables.values().map(|t| t.strukt.as_str()).collect();
    for name in structs.keys() {
        assert!(
            reached.contains(name.as_str()),
            "{name} is not reached from {ROOT} by the scan; tables: {:?}",
            tables.keys().collect::<Vec<_>>()
        );
    }
    // No Raw* struct lives outside the scanned files.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/core/src/config");
    for entry in std::fs::read_dir(&dir).expect("crates/core/src/config") {
        let path = entry.expect("entry").path();
        let rel = format!(
            "crates/core/src/config/{}",
            path.file_name().expect("name").to_string_lossy()
        );
        let text = std::fs::read_to_string(&path).expect("read");
        if text.contains("struct Raw") {
            assert!(
                SOURCES.contains(&rel.as_str()),
                "{rel} defines a Raw* struct: add it to SOURCES in tests/config_docs.rs"
            );
        }
    }
}

/// Deleting a row, or documenting a key that does not exist, is caught and named.
#[test]
fn the_check_names_missing_and_unknown_keys() {
    let structs = raw_structs();
    let tables = schema(&structs);
    let md = read(DOC);
    let row = md
        .lines()
        .find(|l| l.starts_with("| `merge_slashes` |"))
        .expect("the merge_slashes row");
    let without = md.replace(&format!("{row}\n"), "");
    let (docs, _) = documented(&without);
    let problems = compare(&structs, &tables, &docs);
    assert!(
        problems
            .iter()
            .any(|p| p.contains("`merge_slashes`") && p.contains("`[server]`")),
        "{problems:?}"
    );
    let with_bogus = md.replace(
        &format!("{row}\n"),
        &format!("{row}\n| `bogus_key` | boolean | `false` | Nothing. | yes |\n"),
    );
    let (docs, _) = documented(&with_bogus);
    let problems = compare(&structs, &tables, &docs);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("`bogus_key`"), "{problems:?}");
}
