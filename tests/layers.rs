//! The layering of docs/architecture.md as a test: every import between top-level modules points down, so none can close a circle.
//!
//! The crate boundary already stops the core crate (`crates/core`) from importing anything above
//! it. Inside the `switchyard` crate the compiler allows any import, so this test reads every
//! non-test source file, collects its `crate::MODULE` (and `switchyard_core::MODULE`) paths, and
//! checks each against the floors below: a module may import only modules on a lower floor. A new
//! top-level module must be given a floor here (the test says so), and an upward import fails
//! with the file and the line.
//!
//! `LAYERS_ROOT=/path/to/checkout cargo test --test layers -- --nocapture report` prints the
//! module graph's circles and the files in them for any checkout (used for the before/after
//! figures of the structure work).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules by floor; a module may import only modules on a lower floor.
const FLOORS: &[(u32, &[&str])] = &[
    // Leaves: no import from the crates.
    (
        0,
        &[
            "path",
            "fsutil",
            "hex",
            "lograte",
            "secret",
            "static_files",
            "head",
            "proxy_protocol",
        ],
    ),
    (1, &["limits", "rollout", "htpasswd", "trace_context"]),
    // The model.
    (2, &["config"]),
    // Parts: routing, pools, the book; metric families, certificates, logs, persistence.
    (
        3,
        &[
            "routing",
            "upstream",
            "keepalive",
            "tls",
            "access_log",
            "logging",
            "otlp",
            "api",
            "maintenance",
            "etcd",
        ],
    ),
    (4, &["book", "metrics", "redis_limits", "admin_request"]),
    (5, &["state"]),
    (6, &["snapshot"]),
    (7, &["scrape"]),
    // The store.
    (8, &["runtime"]),
    // Changes: everything that writes goes through the runtime.
    (9, &["control", "health", "acme", "dns", "cluster"]),
    // Surfaces.
    (10, &["proxy", "admin", "ctl", "import"]),
    // The shell.
    (11, &["server"]),
    (12, &["demo"]),
    (13, &["cli"]),
    (14, &["main"]),
];

struct Source {
    file: PathBuf,
    module: String,
    /// (line number, imported module)
    imports: Vec<(usize, String)>,
}

fn root() -> PathBuf {
    std::env::var_os("LAYERS_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module a file belongs to: its first path component under `src/` (a folder is one module).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("under src");
    let first = rel.components().next().expect("a component");
    let name = first.as_os_str().to_string_lossy();
    name.trim_end_matches(".rs").to_string()
}

/// Files that are compiled only for tests: declared by `#[cfg(test)] mod NAME;`.
fn test_only_files(files: &[PathBuf], text: &BTreeMap<PathBuf, String>) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    for file in files {
        let lines: Vec<&str> = text[file].lines().collect();
        for pair in lines.windows(2) {
            let decl = pair[1].trim();
            if pair[0].trim() != "#[cfg(test)]" || !decl.ends_with(';') || !decl.contains("mod ") {
                continue;
            }
            let name = decl.trim_end_matches(';').rsplit(' ').next().unwrap_or("");
            let dir = if file
                .file_name()
                .is_some_and(|n| n == "mod.rs" || n == "lib.rs")
            {
                file.parent().expect("parent").to_path_buf()
            } else {
                file.with_extension("")
            };
            out.insert(dir.join(format!("{name}.rs")));
            out.insert(dir.join(name).join("mod.rs"));
        }
    }
    out
}

/// The non-test lines of a file: a `#[cfg(test)]` item (an inline `mod tests { ... }` runs to
/// the end of the file in this codebase; a `mod x;` declaration is one line) is left out.
fn product_lines(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate().peekable();
    while let Some((i, line)) = lines.next() {
        if line.trim() == "#[cfg(test)]" {
            match lines.peek() {
                Some((_, next)) if next.trim_end().ends_with('{') => break,
                Some(_) => {
                    lines.next();
                    continue;
                }
                None => break,
            }
        }
        if line.trim_start().starts_with("//") {
            continue;
        }
        out.push((i + 1, line));
    }
    out
}

fn imports(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    for prefix in ["crate::", "switchyard_core::", "switchyard::"] {
        let mut rest = line;
        while let Some(at) = rest.find(prefix) {
            let before = rest[..at].chars().last();
            rest = &rest[at + prefix.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.push(name);
            }
        }
        // `use crate::{a, b::c}` and `pub use switchyard_core::{a, b}`.
        if let Some(at) = line.find(&format!("{prefix}{{")) {
            let list = &line[at + prefix.len() + 1..];
            let list = list.split('}').next().unwrap_or("");
            out.extend(
                list.split(',')
                    .map(|s| s.trim().split("::").next().unwrap_or("").to_string())
                    .filter(|s| !s.is_empty() && s != "self"),
            );
        }
    }
    out
}

/// Every non-test source file of the switchyard crate (`src/`) and the core crate
/// (`crates/core/src/`; the two share a namespace: `switchyard` re-exports the core's modules).
fn sources() -> Vec<Source> {
    let root = root();
    // The product's two crates; `crates/echo` (demo and test backends) and `crates/testkit`
    // (the test harness) stand apart from the product's layering.
    let crates = [root.join("src"), root.join("crates/core/src")];
    let mut out = Vec::new();
    for src in crates {
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        files.sort();
        let text: BTreeMap<PathBuf, String> = files
            .iter()
            .map(|f| (f.clone(), std::fs::read_to_string(f).expect("readable")))
            .collect();
        let tests = test_only_files(&files, &text);
        for file in &files {
            if tests.contains(file) || file.ends_with("lib.rs") {
                continue;
            }
            let module = module_of(&src, file);
            let imports = product_lines(&text[file])
                .into_iter()
                .flat_map(|(n, line)| imports(line).into_iter().map(move |m| (n, m)))
                .filter(|(_, m)| *m != module)
                .collect();
            out.push(Source {
                file: file.strip_prefix(&root).unwrap_or(file).to_path_buf(),
                module,
                imports,
            });
        }
    }
    out
}

fn floor(module: &str) -> Option<u32> {
    FLOORS
        .iter()
        .find(|(_, mods)| mods.contains(&module))
        .map(|(f, _)| *f)
}

#[test]
fn every_import_points_down() {
    let mut problems = Vec::new();
    let sources = sources();
    assert!(
        sources.len() > 30,
        "found only {} source files",
        sources.len()
    );
    for s in &sources {
        let Some(own) = floor(&s.module) else {
            problems.push(format!(
                "{}: module `{}` has no floor: add it to FLOORS in tests/layers.rs and docs/architecture.md",
                s.file.display(),
                s.module
            ));
            continue;
        };
        for (line, target) in &s.imports {
            match floor(target) {
                Some(f) if f < own => {}
                Some(f) => problems.push(format!(
                    "{}:{line}: `{}` (floor {own}) imports `{target}` (floor {f}): imports must point down",
                    s.file.display(),
                    s.module
                )),
                None => problems.push(format!(
                    "{}:{line}: `{target}` is not a module with a floor",
                    s.file.display()
                )),
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_scan_sees_real_imports() {
    // The scan itself must work, or the test above passes vacuously.
    let sources = sources();
    let of = |module: &str| -> BTreeSet<String> {
        sources
            .iter()
            .filter(|s| s.module == module)
            .flat_map(|s| s.imports.iter().map(|(_, m)| m.clone()))
            .collect()
    };
    for (module, target) in [
        ("proxy", "snapshot"),
        ("runtime", "snapshot"),
        ("snapshot", "upstream"),
        ("upstream", "config"),
        ("server", "runtime"),
    ] {
        assert!(
            of(module).contains(target),
            "{module} should import {target}: {:?}",
            of(module)
        );
    }
    assert_eq!(
        imports("use crate::{config::Config, limits, self};"),
        ["config", "limits"]
    );
    assert!(imports("let x = my_crate::thing;").is_empty());
}

/// Strongly connected components of the module graph with more than one module, and the
/// number of files in them. Prints the figures; asserts nothing on other checkouts.
#[test]
fn report() {
    let sources = sources();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut files: BTreeMap<String, usize> = BTreeMap::new();
    let modules: BTreeSet<String> = sources.iter().map(|s| s.module.clone()).collect();
    for s in &sources {
        *files.entry(s.module.clone()).or_default() += 1;
        let edges = graph.entry(s.module.clone()).or_default();
        edges.extend(
            s.imports
                .iter()
                .map(|(_, m)| m.clone())
                .filter(|m| modules.contains(m)),
        );
    }
    let circles = strongly_connected(&graph);
    let in_circles: usize = circles.iter().flatten().map(|m| files[m]).sum();
    println!(
        "{} files in {} modules; {} module circle(s) {:?}; {in_circles} file(s) in a circle",
        sources.len(),
        modules.len(),
        circles.len(),
        circles
    );
    if std::env::var_os("LAYERS_ROOT").is_none() {
        assert_eq!(in_circles, 0, "{circles:?}");
    }
}

/// Tarjan's algorithm; only components of two or more modules (or a module importing itself).
fn strongly_connected(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        s.on_stack.insert(v);
        let graph = s.graph;
        for w in graph.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.out.push(component);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out
}
