//! Request head size limits: a long request line is 414, a long header line or a big head 431
//! (nginx's large_client_header_buffers), each a JSON answer from the proxy, while heads just
//! under the limits pass; with the defaults and with limits set in `[limits]`.

use testkit::*;

use crate::wire::*;
use crate::BIN;

const CONFIG: &str = r#"
{server}
{http_listener}
{limits}
{catch_all_blue}
"#;

/// A GET whose request line is `path_len` bytes of path plus the rest, with `headers` extra
/// header lines of `header_len` bytes each (`X-Big-N: xxx...`).
fn request(path_len: usize, headers: usize, header_len: usize) -> Vec<u8> {
    let mut out = format!("GET /{} HTTP/1.1\r\nHost: h.test\r\n", "a".repeat(path_len));
    for i in 0..headers {
        let name = format!("X-Big-{i}: ");
        out.push_str(&name);
        out.push_str(&"b".repeat(header_len - name.len()));
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// Sends each `(name, request, status)` on its own connection and fails with every case whose
/// answer is not `status` (a proxy JSON answer unless 200) or after which a normal GET fails.
fn run(limits: &str, cases: &[(&str, Vec<u8>, u16)]) {
    let blue = Backend::spawn("blue").unwrap();
    let http = port();
    let _proxy = Proxy::start(
        BIN,
        &fill(
            CONFIG,
            &[("http", &http), ("blue", &blue.addr), ("limits", &limits)],
        ),
    );
    let addr = local(http);
    let mut failures = Vec::new();
    for (name, request, status) in cases {
        let ex = exchange(addr, request, 1);
        let result = match ex.responses.first() {
            None => Err(format!("no answer ({})", ex.describe())),
            Some(resp) if *status == 200 => {
                if resp.status == 200 {
                    Ok(())
                } else {
                    Err(format!("status {} instead of 200", resp.status))
                }
            }
            Some(resp) => check_proxy_answer(resp, *status),
        }
        .and_then(|()| normal_get(addr, "h.test", "/after").map(|_| ()));
        if let Err(e) = result {
            failures.push(format!("  {name} ({} bytes): {e}", request.len()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases broke the contract:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn default_head_limits_are_8k_line_and_32k_head() {
    run(
        "",
        &[
            ("request line over 8 KB", request(9000, 0, 0), 414),
            ("one header line over 8 KB", request(10, 1, 9000), 431),
            (
                "5 headers of 7 KB (head over 32 KB)",
                request(10, 5, 7000),
                431,
            ),
            ("7 KB request line", request(7000, 0, 0), 200),
            ("one 7 KB header line", request(10, 1, 7000), 200),
            (
                "4 headers of 7 KB (head under 32 KB)",
                request(10, 4, 7000),
                200,
            ),
        ],
    );
}

#[test]
fn head_limits_follow_the_config() {
    run(
        "[limits]\nmax_request_line = \"2KB\"\nmax_header_line = \"1KB\"\nmax_header_size = \"4KB\"\n",
        &[
            ("request line over 2 KB", request(2500, 0, 0), 414),
            ("one header line over 1 KB", request(10, 1, 1500), 431),
            ("5 headers of 900 bytes (head over 4 KB)", request(10, 5, 900), 431),
            ("1.5 KB request line", request(1500, 0, 0), 200),
            ("one 900-byte header line", request(10, 1, 900), 200),
        ],
    );
}
