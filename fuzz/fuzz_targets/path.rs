//! The path normaliser never panics, and what it returns is normal: idempotent, rooted, without dot segments (and without `//` when merging).
#![no_main]

use std::borrow::Cow;

use libfuzzer_sys::fuzz_target;
use switchyard_core::path::normalize;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Ok(raw) = std::str::from_utf8(rest) else {
        return;
    };
    let merge = flags & 1 == 1;
    let Ok(normal) = normalize(raw, merge) else {
        return;
    };
    if !raw.starts_with('/') {
        assert_eq!(normal, raw);
        return;
    }
    assert!(normal.starts_with('/'), "{raw:?} -> {normal:?}");
    for seg in normal.split('/').skip(1) {
        assert!(seg != "." && seg != "..", "dot segment left: {raw:?} -> {normal:?}");
    }
    if merge {
        assert!(!normal.contains("//"), "{raw:?} -> {normal:?}");
    }
    assert!(!normal.contains('\\'), "{raw:?} -> {normal:?}");
    // Escapes left are upper-case and of reserved characters only.
    let bytes = normal.as_bytes();
    for (i, _) in normal.match_indices('%') {
        let hex = &bytes[i + 1..i + 3];
        assert!(hex.iter().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(b)));
        let c = u8::from_str_radix(std::str::from_utf8(hex).expect("ascii"), 16).expect("hex");
        assert!(
            !(c.is_ascii_alphanumeric() || b"-._~".contains(&c)),
            "an unreserved character left escaped: {raw:?} -> {normal:?}"
        );
    }
    match normalize(&normal, merge) {
        Ok(Cow::Borrowed(again)) => assert_eq!(again, normal.as_ref()),
        other => panic!("not idempotent: {raw:?} -> {normal:?} -> {other:?}"),
    }
});
