//! Request smuggling and strict HTTP/1.1 framing: each row of the contract's "Strict framing"
//! table (plus the usual CL/TE, chunk-size and header-syntax variants) sent as raw bytes, checked
//! on both sides of the proxy: what the client is answered and what the upstream receives.

use std::net::SocketAddr;

use crate::raw_backend::{RawBackend, Request};
use testkit::*;

use crate::wire::*;
use crate::BIN;

/// A request hidden in a body: if it is ever forwarded, the framing desynchronised.
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: h.test\r\n\r\n";

/// Every host to the one recording backend.
const CONFIG: &str = r#"
{server}
{http_listener}
[[routes]]
host = "*"
service = "api"

[services.api.pools.main]
weight = 1
servers = ["{raw}"]
"#;

/// What the upstream must have received for a forwarded case.
type Check = fn(&Request) -> Result<(), String>;

/// What a case must lead to.
enum Expect {
    /// The proxy answers this status itself (JSON error) and forwards nothing.
    Refused(u16),
    /// Forwarded as exactly one request, answered 200 once.
    Forwarded(Check),
    /// Like `Forwarded`, and then the proxy closes the connection (so nothing after the body is
    /// ever read as a request).
    ForwardedThenClosed(Check),
    /// A malformed chunked body: 400 (no response started: the backend answers only after a whole
    /// body), the connection closed, and the upstream never gets a complete request from it.
    BadBody,
    /// The contract leaves the answer open: any one answer, but at most one request upstream and
    /// never one made of body bytes.
    NoSmuggle,
    /// The contract leaves it open whether this is refused (400, nothing upstream) or forwarded
    /// (then checked like `Forwarded`).
    RefusedOrForwarded(Check),
}

struct Case {
    name: &'static str,
    request: String,
    expect: Expect,
}

/// A case whose request is `template` with `{p}` replaced by `/c/<name>` and `{s}` by
/// [`SMUGGLED`].
fn case(name: &'static str, template: &str, expect: Expect) -> Case {
    Case {
        name,
        request: template
            .replace("{p}", &format!("/c/{name}"))
            .replace("{s}", SMUGGLED),
        expect,
    }
}

struct Rig {
    backend: RawBackend,
    _proxy: Proxy,
    addr: SocketAddr,
}

fn rig() -> Rig {
    let backend = RawBackend::spawn();
    let http = port();
    let proxy = Proxy::start(
        BIN,
        &fill(CONFIG, &[("http", &http), ("raw", &backend.addr)]),
    );
    Rig {
        backend,
        _proxy: proxy,
        addr: local(http),
    }
}

/// Runs every case on one proxy, one after the other, and fails with the list of every case that
/// broke the contract (not just the first).
fn run_table(cases: &[Case]) {
    let rig = rig();
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|c| {
            run_case(&rig, c)
                .err()
                .map(|e| format!("  {}: {e}", c.name))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases broke the contract:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

fn run_case(rig: &Rig, c: &Case) -> Result<(), String> {
    let before = rig.backend.mark();
    let errors_before = rig.backend.errors().len();
    let ex = exchange(rig.addr, c.request.as_bytes(), 1);
    rig.backend.settle();
    let bytes_upstream = rig.backend.bytes_since(&before);
    // No desync: a fresh connection still gets its normal answer.
    let follow_up = normal_get(rig.addr, "h.test", "/after");
    let seen: Vec<Request> = rig
        .backend
        .requests_since(&before)
        .into_iter()
        .filter(|r| r.target != "/after")
        .collect();
    if let Some(r) = seen.iter().find(|r| r.target.contains("smuggled")) {
        return Err(format!(
            "the smuggled request reached the upstream: {} {} (answers: {})",
            r.method,
            r.target,
            ex.describe()
        ));
    }
    if let Some(e) = rig.backend.errors().get(errors_before) {
        return Err(format!("the upstream got bytes it could not parse: {e}"));
    }
    let first = ex.responses.first();
    match &c.expect {
        Expect::Refused(status) => refused(&ex, &seen, bytes_upstream, *status)?,
        Expect::Forwarded(check) => forwarded(&ex, &seen, *check)?,
        Expect::ForwardedThenClosed(check) => {
            forwarded(&ex, &seen, *check)?;
            if !ex.closed {
                return Err("the connection stayed open after a request with both \
                            Transfer-Encoding and Content-Length"
                    .into());
            }
        }
        Expect::BadBody => {
            let resp = one_answer(&ex)?;
            check_proxy_answer(resp, 400)?;
            if !ex.closed {
                return Err("the connection stayed open after a malformed chunked body".into());
            }
            if seen.len() > 1 {
                return Err(format!("{} requests upstream: {seen:?}", seen.len()));
            }
            if let Some(r) = seen.iter().find(|r| r.complete) {
                return Err(format!(
                    "the upstream got a complete request out of a malformed body: body {}",
                    snippet(&r.body)
                ));
            }
        }
        Expect::NoSmuggle => {
            one_answer(&ex)?;
            if seen.len() > 1 {
                return Err(format!("{} requests upstream: {seen:?}", seen.len()));
            }
        }
        Expect::RefusedOrForwarded(check) => {
            if first.is_some_and(|r| r.status == 200) {
                forwarded(&ex, &seen, *check)?;
            } else {
                refused(&ex, &seen, bytes_upstream, 400)?;
            }
        }
    }
    follow_up.map(|_| ())
}

/// The one answer of an exchange; an error when there is none or more than one.
fn one_answer(ex: &Exchange) -> Result<&RawResponse, String> {
    match ex.responses.as_slice() {
        [_] if !ex.leftover.is_empty() => Err(format!(
            "bytes after the one answer (a second, torn answer?): {}",
            ex.describe()
        )),
        [one] => Ok(one),
        [] => Err(format!("no answer ({})", ex.describe())),
        _ => Err(format!(
            "{} answers where one was due: {}",
            ex.responses.len(),
            ex.describe()
        )),
    }
}

/// Reports every way the exchange differs from "answered `status` by the proxy, nothing upstream".
fn refused(ex: &Exchange, seen: &[Request], bytes: usize, status: u16) -> Result<(), String> {
    let mut problems = Vec::new();
    if let Err(e) = one_answer(ex).and_then(|resp| check_proxy_answer(resp, status)) {
        problems.push(e);
    }
    if !seen.is_empty() {
        problems.push(format!(
            "{} request(s) forwarded upstream: {:?}",
            seen.len(),
            seen.iter().map(|r| &r.target).collect::<Vec<_>>()
        ));
    } else if bytes > 0 {
        problems.push(format!("{bytes} bytes sent upstream"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

fn forwarded(ex: &Exchange, seen: &[Request], check: Check) -> Result<(), String> {
    let resp = one_answer(ex)?;
    if resp.status != 200 {
        return Err(format!(
            "status {} instead of 200 from the backend (body {})",
            resp.status,
            snippet(&resp.body)
        ));
    }
    let [r] = seen else {
        return Err(format!(
            "{} requests upstream instead of 1: {seen:?}",
            seen.len()
        ));
    };
    if !r.complete {
        return Err(format!("the upstream got an incomplete request: {r:?}"));
    }
    check(r).map_err(|e| {
        format!(
            "{e}; upstream head {:?}",
            String::from_utf8_lossy(&r.raw_head)
        )
    })
}

// What the upstream must see.

fn no_content_length(r: &Request) -> Result<(), String> {
    let cl = r.header_values("content-length");
    if cl.is_empty() {
        Ok(())
    } else {
        Err(format!("Content-Length lines upstream: {cl:?}"))
    }
}

/// Exactly one `Content-Length: 5` line, no Transfer-Encoding, body `hello`.
fn one_content_length_hello(r: &Request) -> Result<(), String> {
    let cl = r.header_values("content-length");
    if cl != ["5"] {
        return Err(format!(
            "Content-Length lines upstream: {cl:?} (want exactly one `5`)"
        ));
    }
    if !r.header_values("transfer-encoding").is_empty() {
        return Err("Transfer-Encoding upstream next to Content-Length".into());
    }
    body_is(r, b"hello")
}

/// Chunked framing (no Content-Length line), body `hello`.
fn chunked_hello(r: &Request) -> Result<(), String> {
    no_content_length(r)?;
    let te = r.header_values("transfer-encoding");
    if !te.last().is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        return Err(format!("upstream Transfer-Encoding {te:?}, not chunked"));
    }
    body_is(r, b"hello")
}

fn body_is(r: &Request, want: &[u8]) -> Result<(), String> {
    if r.body == want {
        Ok(())
    } else {
        Err(format!(
            "upstream body {} instead of {}",
            snippet(&r.body),
            snippet(want)
        ))
    }
}

/// A GET without a body.
fn bodiless_get(r: &Request) -> Result<(), String> {
    if r.method != "GET" {
        return Err(format!("method {} upstream", r.method));
    }
    body_is(r, b"")
}

/// Forwarded with CRLF line endings only (the client used bare LF), its header intact.
fn crlf_only(r: &Request) -> Result<(), String> {
    bodiless_get(r)?;
    let bare = r
        .raw_head
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || r.raw_head[i - 1] != b'\r'));
    if bare {
        return Err("bare LF forwarded upstream".into());
    }
    if r.header("x-a") != Some("b") {
        return Err(format!("header X-A upstream: {:?}", r.header("x-a")));
    }
    Ok(())
}

#[test]
fn content_length_framing() {
    use Expect::*;
    let other_length = 5 + SMUGGLED.len();
    let two_different = format!(
        "POST {{p}} HTTP/1.1\r\nHost: h.test\r\nContent-Length: 5\r\nContent-Length: {other_length}\r\n\r\nhello{{s}}"
    );
    let list_different = format!(
        "POST {{p}} HTTP/1.1\r\nHost: h.test\r\nContent-Length: 5, {other_length}\r\n\r\nhello{{s}}"
    );
    run_table(&[
        case("cl_two_different", &two_different, Refused(400)),
        case("cl_list_different", &list_different, Refused(400)),
        case(
            "cl_list_same",
            "POST {p} HTTP/1.1\r\nHost: h.test\r\nContent-Length: 5, 5\r\n\r\nhello",
            Refused(400),
        ),
        case(
            "cl_two_identical",
            "POST {p} HTTP/1.1\r\nHost: h.test\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
            Forwarded(one_content_length_hello),
        ),
        case(
            "cl_plus",
            "POST {p} HTTP/1.1\r\nHost: h.test\r\nContent-Length: +5\r\n\r\nhello",
            Refused(400),
        ),
        case(
            "cl_trailing_letter",
            "POST {p} HTTP/1.1\r\nHost: h.test\r\nContent-Length: 5x\r\n\r\nhello",
            Refused(400),
        ),
        case(
            "cl_negative",
            "POST {p} HTTP/1.1\r\nHost: h.test\r\nContent-Length: -1\r\n\r\nhello",
            Refused(400),
        ),
        case(
            "cl_blank",
            "POST {p} HTTP/1.1\r\nHost: h.test\r\nContent-Length: \r\n\r\nhello",
            Refused(400),
        ),
        case(
            "cl_space_before_colon",
            "POST {p} HTTP/1.1\r\nHost: h.test\r\nContent-Length : 5\r\n\r\nhello",
            Refused(400),
        ),
    ]);
}

#[test]
fn transfer_encoding_framing() {
    use Expect::*;
    run_table(&[
        // CL.TE: by Content-Length the body is 4 bytes, by chunked it ends before the smuggled
        // request, which must never be read off this connection: it is closed after the answer.
        case(
            "te_with_cl_after",
            "POST {p} HTTP/1.1\r\nHost: h.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n5\r\nhello\r\n0\r\n\r\n{s}",
            ForwardedThenClosed(chunked_hello),
        ),
        case(
            "te_with_cl_before",
            "POST {p} HTTP/1.1\r\nHost: h.test\r\nContent-Length: 60\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n{s}",
            ForwardedThenClosed(chunked_hello),
        ),
        case(
            "te_gzip",
            "POST {p} HTTP/1.1\r\nHost: h.test\r\nTransfer-Encoding: gzip\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            Refused(400),
        ),
        case(
            "te_chunked_gzip",
            "POST {p} HTTP/1.1\r\nHost: h.test\r\nTransfer-Encoding: chunked, gzip\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            Refused(400),
        ),
        case(
            "te_xchunked",
            "POST {p} HTTP/1.1\r\nHost: h.test\r\nTransfer-Encoding: xchunked\r\nContent-Length: 5\r\n\r\nhello",
            Refused(400),
        ),
        case(
            "te_chunked_identity",
            "POST {p} HTTP/1.1\r\nHost: h.test\r\nTransfer-Encoding: chunked, identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            Refused(400),
        ),
        case(
            "te_space_before_colon",
            "POST {p} HTTP/1.1\r\nHost: h.test\r\nTransfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\nhello",
            Refused(400),
        ),
        case(
            "te_duplicate_lines_last_identity",
            "POST {p} HTTP/1.1\r\nHost: h.test\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            Refused(400),
        ),
        case(
            "te_http10",
            "POST {p} HTTP/1.0\r\nHost: h.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            Refused(400),
        ),
        // Valid OWS and a repeated final chunked: the contract does not say; no desync either way.
        case(
            "te_tab_before_value",
            "POST {p} HTTP/1.1\r\nHost: h.test\r\nTransfer-Encoding:\tchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            RefusedOrForwarded(chunked_hello),
        ),
        case(
            "te_duplicate_chunked_lines",
            "POST {p} HTTP/1.1\r\nHost: h.test\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            RefusedOrForwarded(chunked_hello),
        ),
    ]);
}

#[test]
fn chunk_size_forms() {
    use Expect::*;
    const HEAD: &str = "POST {p} HTTP/1.1\r\nHost: h.test\r\nTransfer-Encoding: chunked\r\n\r\n";
    let with = |body: &str| format!("{HEAD}{body}");
    run_table(&[
        case(
            "chunk_extension",
            &with("5;ext=1\r\nhello\r\n0\r\n\r\n"),
            Forwarded(chunked_hello),
        ),
        case(
            "chunk_size_empty",
            &with("\r\nhello\r\n0\r\n\r\n{s}"),
            BadBody,
        ),
        // Read as 0 by a lax parser: the body would end there and the smuggled request follow.
        case("chunk_size_0x", &with("0x5\r\n\r\n{s}"), BadBody),
        case(
            "chunk_size_not_hex",
            &with("zz\r\nhello\r\n0\r\n\r\n{s}"),
            BadBody,
        ),
        case(
            "chunk_size_negative",
            &with("-5\r\nhello\r\n0\r\n\r\n{s}"),
            BadBody,
        ),
        // 2^64: wraps to 0 in a parser that does not check for overflow.
        case(
            "chunk_size_wraps_to_zero",
            &with("10000000000000000\r\n\r\n{s}"),
            BadBody,
        ),
        case(
            "chunk_size_huge",
            &with("ffffffffffffffffffffffff\r\nhello\r\n0\r\n\r\n{s}"),
            BadBody,
        ),
        case(
            "chunk_data_without_crlf",
            &with("5\r\nhello0\r\n\r\n{s}"),
            BadBody,
        ),
        // The last chunk without the blank line that ends the trailers: the smuggled request's
        // lines would be trailers (and its request line is no field line).
        case(
            "chunk_missing_final_crlf",
            &with("5\r\nhello\r\n0\r\n{s}"),
            NoSmuggle,
        ),
    ]);
}

#[test]
fn header_syntax() {
    use Expect::*;
    run_table(&[
        case(
            "obs_fold_space",
            "GET {p} HTTP/1.1\r\nHost: h.test\r\nX-Folded: a\r\n b\r\n\r\n",
            Refused(400),
        ),
        case(
            "obs_fold_tab",
            "GET {p} HTTP/1.1\r\nHost: h.test\r\nX-Folded: a\r\n\tb\r\n\r\n",
            Refused(400),
        ),
        case(
            "obs_fold_transfer_encoding",
            "POST {p} HTTP/1.1\r\nHost: h.test\r\nContent-Length: 5\r\nTransfer-Encoding: identity\r\n chunked\r\n\r\nhello",
            Refused(400),
        ),
        case(
            "nul_in_value",
            "GET {p} HTTP/1.1\r\nHost: h.test\r\nX-A: a\0b\r\n\r\n",
            Refused(400),
        ),
        case(
            "nul_in_name",
            "GET {p} HTTP/1.1\r\nHost: h.test\r\nX-\0A: b\r\n\r\n",
            Refused(400),
        ),
        case(
            "bare_cr_in_value",
            "GET {p} HTTP/1.1\r\nHost: h.test\r\nX-A: a\rb\r\n\r\n",
            Refused(400),
        ),
        case(
            "bare_cr_in_name",
            "GET {p} HTTP/1.1\r\nHost: h.test\r\nX-\rA: b\r\n\r\n",
            Refused(400),
        ),
        case(
            "space_before_colon",
            "GET {p} HTTP/1.1\r\nHost: h.test\r\nX-A : b\r\n\r\n",
            Refused(400),
        ),
        case(
            "bare_lf",
            "GET {p} HTTP/1.1\nHost: h.test\nX-A: b\n\n",
            Forwarded(crlf_only),
        ),
    ]);
}

#[test]
fn host_header() {
    use Expect::*;
    let mut cases = vec![
        case(
            "no_host_http11",
            "GET {p} HTTP/1.1\r\nX-A: b\r\n\r\n",
            Refused(400),
        ),
        case(
            "two_hosts",
            "GET {p} HTTP/1.1\r\nHost: h.test\r\nHost: h.test\r\n\r\n",
            Refused(400),
        ),
        case(
            "two_different_hosts",
            "GET {p} HTTP/1.1\r\nHost: h.test\r\nHost: other.test\r\n\r\n",
            Refused(400),
        ),
        case(
            "no_host_http10",
            "GET {p} HTTP/1.0\r\n\r\n",
            Forwarded(bodiless_get),
        ),
    ];
    for (name, host) in [
        ("host_space", "a b"),
        ("host_at", "a@b"),
        ("host_slash", "a/b"),
        ("host_open_bracket", "[::1"),
        ("host_two_colons", "host:port:x"),
        ("host_empty", ""),
    ] {
        cases.push(case(
            name,
            &format!("GET {{p}} HTTP/1.1\r\nHost: {host}\r\n\r\n"),
            Refused(400),
        ));
    }
    run_table(&cases);
}

/// `a.example` goes to its own backend, everything else to the catch-all's.
const TWO_HOSTS: &str = r#"
{server}
{http_listener}
[[routes]]
host = "*"
service = "api"

[[routes]]
host = "a.example"
service = "a"

[services.api.pools.main]
weight = 1
servers = ["{raw}"]

[services.a.pools.main]
weight = 1
servers = ["{a}"]
"#;

#[test]
fn absolute_form_is_routed_by_its_authority() {
    let other = RawBackend::spawn();
    let a = RawBackend::spawn();
    let http = port();
    let _proxy = Proxy::start(
        BIN,
        &fill(
            TWO_HOSTS,
            &[("http", &http), ("raw", &other.addr), ("a", &a.addr)],
        ),
    );
    let addr = local(http);
    let mut failures = Vec::new();
    // HTTP/1.0 may leave Host out; HTTP/1.1 may not, absolute form or not (below).
    for (name, version, extra_host) in [
        ("no_host_http10", "1.0", ""),
        ("same_host", "1.1", "Host: a.example\r\n"),
    ] {
        let before = a.mark();
        let request = format!("GET http://a.example/x/{name} HTTP/{version}\r\n{extra_host}\r\n");
        let ex = exchange(addr, request.as_bytes(), 1);
        let seen = a.requests_since(&before);
        let problem = match (ex.responses.first(), seen.as_slice()) {
            (Some(resp), [r]) if resp.status == 200 => {
                let hosts = r.header_values("host");
                if hosts != ["a.example"] {
                    Some(format!(
                        "upstream Host lines {hosts:?}, want [\"a.example\"]"
                    ))
                } else if r.target != format!("/x/{name}") {
                    Some(format!(
                        "upstream target {:?}, want origin-form /x/{name}",
                        r.target
                    ))
                } else {
                    None
                }
            }
            _ => Some(format!(
                "not routed to a.example's backend: {}; a.example's backend got {:?}",
                ex.describe(),
                seen.iter().map(|r| &r.target).collect::<Vec<_>>()
            )),
        };
        if let Some(p) = problem {
            failures.push(format!("{name}: {p}"));
        }
    }
    // An authority that disagrees with Host is refused and goes nowhere, and so is an
    // HTTP/1.1 absolute-form request without Host (RFC 9112 §3.2: a server MUST answer 400).
    for (name, request) in [
        (
            "host_mismatch",
            &b"GET http://a.example/x/mismatch HTTP/1.1\r\nHost: other.example\r\n\r\n"[..],
        ),
        (
            "no_host_http11",
            &b"GET http://a.example/x/no_host HTTP/1.1\r\n\r\n"[..],
        ),
    ] {
        let (a_before, other_before) = (a.mark(), other.mark());
        let ex = exchange(addr, request, 1);
        match ex.responses.first() {
            Some(resp) => {
                if let Err(e) = check_proxy_answer(resp, 400) {
                    failures.push(format!("{name}: {e}"));
                }
            }
            None => failures.push(format!("{name}: no answer ({})", ex.describe())),
        }
        let forwarded =
            a.requests_since(&a_before).len() + other.requests_since(&other_before).len();
        if forwarded > 0 {
            failures.push(format!("{name}: {forwarded} request(s) forwarded upstream"));
        }
    }
    if let Err(e) = normal_get(addr, "h.test", "/after") {
        failures.push(format!("follow-up: {e}"));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let rig = rig();
    let before = rig.backend.mark();
    let mut stream = open(rig.addr);
    std::io::Write::write_all(
        &mut stream,
        b"GET /c/pipe-1 HTTP/1.1\r\nHost: h.test\r\n\r\n\
          POST /c/pipe-2 HTTP/1.1\r\nHost: h.test\r\nContent-Length: 5\r\n\r\nhello\
          GET /c/pipe-3 HTTP/1.1\r\nHost: h.test\r\n\r\n",
    )
    .unwrap();
    let ex = read_exchange(&mut stream, 3, QUIET);
    assert_eq!(ex.statuses(), [200, 200, 200], "{}", ex.describe());
    for (resp, want) in ex
        .responses
        .iter()
        .zip(["/c/pipe-1", "/c/pipe-2", "/c/pipe-3"])
    {
        let body = String::from_utf8_lossy(&resp.body);
        assert!(
            body.contains(want),
            "answers out of order: {want} answered with {body:?}"
        );
    }
    let seen: Vec<(String, String, Vec<u8>)> = rig
        .backend
        .requests_since(&before)
        .into_iter()
        .map(|r| (r.method, r.target, r.body))
        .collect();
    assert_eq!(
        seen,
        [
            ("GET".into(), "/c/pipe-1".into(), vec![]),
            ("POST".into(), "/c/pipe-2".into(), b"hello".to_vec()),
            ("GET".into(), "/c/pipe-3".into(), vec![]),
        ],
        "the upstream must get the three requests, in order"
    );
    // And nothing else: three request lines in all the bytes that went upstream.
    let request_lines: usize = rig
        .backend
        .raw()
        .iter()
        .map(|bytes| {
            String::from_utf8_lossy(bytes)
                .matches(" HTTP/1.1\r\n")
                .count()
        })
        .sum();
    assert_eq!(request_lines, 3, "request lines upstream");
    normal_get(rig.addr, "h.test", "/after").unwrap();
}

const TLS_CONFIG: &str = r#"
{server}
{https_listener}
[[certificates]]
cert = "{certs}/localhost.crt"
key = "{certs}/localhost.key"
fallback = true

[[routes]]
host = "*"
service = "api"

[services.api.pools.main]
weight = 1
servers = ["{raw}"]
"#;

#[test]
fn plain_http_on_a_tls_listener_gets_400_and_a_close() {
    let backend = RawBackend::spawn();
    let https = port();
    let _proxy = Proxy::start(
        BIN,
        &fill(TLS_CONFIG, &[("https", &https), ("raw", &backend.addr)]),
    );
    let ex = exchange(
        local(https),
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        1,
    );
    let resp = ex
        .responses
        .first()
        .unwrap_or_else(|| panic!("no plain HTTP answer: {}", ex.describe()));
    assert_proxy_answer(resp, 400);
    assert!(ex.closed, "the connection stayed open after the 400");
    assert!(
        backend.requests().is_empty(),
        "forwarded upstream: {:?}",
        backend.requests()
    );
    // The listener still does TLS.
    let resp = https_client()
        .get(format!("https://localhost:{https}/tls-ok"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
}

/// An upstream that answers in HTTP/1.0 with no length (its body ends where it closes the
/// connection): `/none` is a 204, anything else a 200 with a short body.
fn close_delimited_backend() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match stream.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let answer: &[u8] = if head.starts_with(b"GET /none ") {
                    b"HTTP/1.0 204 No Content\r\n\r\n"
                } else {
                    b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nframed by the close"
                };
                let _ = stream.write_all(answer);
            });
        }
    });
    addr
}

/// An answer whose end is the close of the upstream connection goes to an HTTP/1.1 client
/// chunked, so the client's connection is kept for its next request (pingora turns it into
/// chunked encoding when it has neither a Content-Length nor a Transfer-Encoding); a 204 is not
/// given a body framing.
#[test]
fn a_close_delimited_answer_goes_on_chunked_on_a_kept_connection() {
    use std::io::Write;
    let backend = close_delimited_backend().to_string();
    let http = port();
    let _proxy = Proxy::start(BIN, &fill(CONFIG, &[("http", &http), ("raw", &backend)]));
    let mut stream = open(local(http));
    for path in ["/first", "/second"] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: h.test\r\n\r\n");
        stream.write_all(request.as_bytes()).expect("send");
        let ex = read_exchange(&mut stream, 1, QUIET);
        let resp = ex
            .responses
            .first()
            .unwrap_or_else(|| panic!("{path}: no answer: {}", ex.describe()));
        assert_eq!(resp.status, 200, "{path}: {}", ex.describe());
        assert_eq!(resp.header("transfer-encoding"), Some("chunked"), "{path}");
        assert_eq!(resp.header("content-length"), None, "{path}");
        assert_eq!(resp.body, b"framed by the close", "{path}");
        assert!(!ex.closed, "{path}: the client's connection was closed");
    }
    stream
        .write_all(b"GET /none HTTP/1.1\r\nHost: h.test\r\n\r\n")
        .expect("send");
    let ex = read_exchange(&mut stream, 1, QUIET);
    let resp = ex.responses.first().expect("an answer to /none");
    assert_eq!(resp.status, 204, "{}", ex.describe());
    assert_eq!(resp.header("transfer-encoding"), None);
}
