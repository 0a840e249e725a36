//! The admin API's request parsing (path routing, JSON bodies, If-Match, bearer tokens) never panics on any input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_core::admin_request as admin;

fuzz_target!(|data: &[u8]| {
    // METHOD \0 PATH \0 BODY: each part may be anything.
    let mut parts = data.splitn(3, |&b| b == 0);
    let method = parts.next().unwrap_or_default();
    let path = parts.next().unwrap_or_default();
    let body = parts.next().unwrap_or_default();
    if let (Ok(method), Ok(path)) = (std::str::from_utf8(method), std::str::from_utf8(path)) {
        let _ = admin::route(method, path);
    }
    let _ = admin::parse_weights(body);
    let _ = admin::parse_switch(body);
    let _ = admin::parse_rollout(body);
    let _ = admin::parse_if_match(Some(body));
    let _ = admin::check_bearer(Some(body), "s3cr3t-token");
    if let Ok(query) = std::str::from_utf8(body) {
        let _ = admin::forced(Some(query));
    }
});
