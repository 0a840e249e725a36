//! `switchyard import nginx` never panics or hangs on any text: it converts, or reports a located error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // Includes resolve under a directory that does not exist; the output is validated without lookups.
    let prefix = std::path::Path::new("/nonexistent");
    let out = std::path::Path::new("/nonexistent/switchyard.toml");
    match switchyard_core::import::nginx::convert_text(&text, "fuzz.conf", prefix, out) {
        Ok(_) => {}
        Err(switchyard_core::import::ImportError::Invalid(e)) => {
            panic!("the converted config failed validation: {e}")
        }
        Err(_) => {}
    }
});
