//! `switchyard import nginx`: nginx.conf (and its includes) to a commented Switchyard config.
//!
//! [`parse`] reads the files into directives with positions; [`convert`] walks them with nginx's
//! inheritance (an inner level that sets an array directive such as `add_header` replaces the
//! outer ones) and writes the TOML; [`super::finish`] checks the result.

mod convert;
pub mod parse;
pub mod values;

use std::path::Path;

use super::{ImportError, Outcome};

/// Converts the nginx config at `path`; `out` is where the TOML will be written (it anchors the
/// relative paths Switchyard reads).
pub fn convert_file(path: &Path, out: &Path) -> Result<Outcome, ImportError> {
    let mut parser = parse::Parser::new(path);
    let top = parser.file(path, 0)?;
    convert::convert(&top, &parser.prefix, out)
}

/// Converts nginx config text named `name` whose includes resolve against `prefix` (for tests
/// and the fuzz target).
pub fn convert_text(
    text: &str,
    name: &str,
    prefix: &Path,
    out: &Path,
) -> Result<Outcome, ImportError> {
    let mut parser = parse::Parser::new(&prefix.join("nginx.conf"));
    let top = parser.text(text, name, 0)?;
    convert::convert(&top, &parser.prefix, out)
}
