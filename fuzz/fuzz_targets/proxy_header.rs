//! The PROXY protocol header parse never panics, and what it accepts is consistent: a header no longer than the input or `MAX_HEADER`, and the same answer for the input cut after it; every prefix of an accepted input asks for more or gives the same header.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_core::proxy_protocol::{parse, Parsed, MAX_HEADER};

fuzz_target!(|data: &[u8]| {
    let Ok(Parsed::Header { len, source }) = parse(data) else {
        return;
    };
    assert!(len > 0 && len <= data.len() && len <= MAX_HEADER, "len {len} of {}", data.len());
    // What follows the header does not change it.
    match parse(&data[..len]) {
        Ok(Parsed::Header { len: again, source: s }) => assert_eq!((again, s), (len, source)),
        other => panic!("the header alone parses as {other:?}"),
    }
    // A cut header asks for more (a connection then keeps reading) or is refused, never
    // accepted as a different header.
    for cut in 1..len {
        if let Ok(Parsed::Header { .. }) = parse(&data[..cut]) {
            panic!("a prefix of {cut} bytes of a {len}-byte header was accepted");
        }
    }
});
