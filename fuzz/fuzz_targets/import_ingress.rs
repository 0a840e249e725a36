//! `switchyard import ingress` never panics or hangs on any YAML: it converts, or reports a located error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The converter reads files: one per fuzzing process, rewritten for each input.
    let path = std::env::temp_dir().join(format!("fuzz-ingress-{}.yaml", std::process::id()));
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let _ = switchyard_core::import::ingress::convert(&[path]);
});
