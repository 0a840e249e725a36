//! The config loader never panics or hangs on any text, and every error it reports has a location.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Relative paths resolve under a directory that does not exist; names are not looked up.
    let path = std::path::Path::new("/nonexistent/fuzz.toml");
    if let Err(errors) = switchyard_core::config::parse_without_lookups(text, path) {
        assert!(!errors.0.is_empty(), "an error result with no error");
        for e in &errors.0 {
            assert!(e.line >= 1 && e.column >= 1, "{e}");
            assert!(e.line <= text.lines().count().max(1) + 1, "{e}");
        }
    }
});
