//! The request-head checks never panic, and a head they accept has a valid Host (when HTTP/1.1 needs one) and no list-form Content-Length.
#![no_main]

use http::Version;
use libfuzzer_sys::fuzz_target;
use pingora_http::RequestHeader;
use switchyard_core::head;

fuzz_target!(|data: &[u8]| {
    // First byte: the version; then "METHOD TARGET\n" and "name: value\n" lines.
    let Some((&v, rest)) = data.split_first() else {
        return;
    };
    let version = match v % 3 {
        0 => Version::HTTP_10,
        1 => Version::HTTP_11,
        _ => Version::HTTP_2,
    };
    let mut lines = rest.split(|&b| b == b'\n');
    let first = lines.next().unwrap_or_default();
    let mut words = first.splitn(2, |&b| b == b' ');
    let (method, target) = (words.next().unwrap_or_default(), words.next().unwrap_or(b"/"));
    let Ok(method) = std::str::from_utf8(method) else {
        return;
    };
    let Ok(mut req) = RequestHeader::build(method, target, None) else {
        return;
    };
    req.set_version(version);
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let Ok(name) = std::str::from_utf8(name) else {
            continue;
        };
        let value = value.strip_prefix(b" ").unwrap_or(value);
        if let Ok(value) = http::HeaderValue::from_bytes(value) {
            let _ = req.append_header(name.to_string(), value);
        }
    }
    if head::check(&req).is_ok() {
        if let Some(host) = req.headers.get(http::header::HOST) {
            assert!(head::valid_host(host.as_bytes()));
        } else {
            assert!(version != Version::HTTP_11, "HTTP/1.1 accepted without Host");
        }
        for cl in req.headers.get_all(http::header::CONTENT_LENGTH) {
            assert!(!cl.as_bytes().contains(&b','));
        }
    }
    let _ = head::valid_host(rest);
});
