//! Static routes over real sockets: a single-page app's fallback, index files, conditional requests, ranges and precompressed siblings (with curl), HEAD, refusals (traversal, dotfiles, symlinks out of the root), a big file streamed in bounded memory, and a reload that changes the root.
#![allow(clippy::unwrap_used)] // tests unwrap freely

use std::io::Read;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use testkit::*;

const BIN: Bin = testkit::bin!();

/// Two sites: `spa.test` (fallback, cache rules, a response header, compression on) and
/// `plain.test` (no fallback; `/files` strips its prefix).
const CONFIG: &str = r#"{server}
{http_listener}
[[routes]]
host = "spa.test"
response_headers = { "X-Frame-Options" = "DENY" }
static = { root = "{root}", fallback = "/index.html", cache = [
  { match = "*.{js,css}", control = "public, max-age=31536000, immutable" },
  { match = "/fonts/**", control = "public, max-age=31536000, immutable" },
  { match = "index.html", control = "no-cache" },
] }

[[routes]]
host = "plain.test"
compression = false
static = { root = "{root}" }

[[routes]]
host = "plain.test"
path = "/files"
strip_prefix = true
static = { root = "{root}/docs", index = "readme.txt" }
"#;

/// The site every test serves, in a temp dir, with a secret and a symlink pointing out of it.
struct Site {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Site {
    fn new() -> Site {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("site");
        let outside = dir.path().join("outside");
        for d in ["", "docs", "fonts", "nodir", ".git", "assets"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::create_dir_all(&outside).unwrap();
        let files: &[(&str, &[u8])] = &[
            ("index.html", b"<h1>home</h1>\n"),
            ("app.js", b"console.log('the app, uncompressed');\n"),
            ("app.js.br", b"pretend-brotli"),
            ("app.js.gz", b"pretend-gzip"),
            ("style.css", b"body { color: red }\n"),
            ("logo.png", b"\x89PNG-not-really"),
            ("data.json", b"{}\n"),
            ("mod.mjs", b"export {}\n"),
            ("blob", b"no extension"),
            ("fonts/a.woff2", b"wOF2"),
            ("docs/index.html", b"<p>docs</p>\n"),
            ("docs/readme.txt", b"the readme\n"),
            ("assets/range.txt", b"0123456789abcdefghijklmnopqrstuvwxyz"),
            (".env", b"SECRET=1\n"),
            (".git/config", b"[core]\n"),
        ];
        for (name, body) in files {
            std::fs::write(root.join(name), body).unwrap();
        }
        std::fs::write(outside.join("secret.txt"), b"outside the root\n").unwrap();
        std::os::unix::fs::symlink(outside.join("secret.txt"), root.join("out.txt")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("outdir")).unwrap();
        std::os::unix::fs::symlink(root.join("docs/readme.txt"), root.join("in.txt")).unwrap();
        std::os::unix::fs::symlink(root.join(".env"), root.join("env.txt")).unwrap();
        // A named pipe: never opened (a read would wait forever).
        let mkfifo = Command::new("mkfifo")
            .arg(root.join("pipe"))
            .status()
            .unwrap();
        assert!(mkfifo.success());
        Site { _dir: dir, root }
    }

    fn start(&self) -> (Proxy, u16) {
        let http = port();
        let config = fill(CONFIG, &[("http", &http), ("root", &self.root.display())]);
        (Proxy::start(BIN, &config), http)
    }
}

fn get(http: u16, host: &str, path: &str) -> reqwest::blocking::Response {
    http1_client()
        .get(format!("http://127.0.0.1:{http}{path}"))
        .header("host", host)
        .send()
        .unwrap()
}

/// `curl -sS -D - --path-as-is` with `args`: the status, the response headers (lower-case names)
/// and the body bytes.
fn curl(http: u16, host: &str, path: &str, args: &[&str]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let headers_file = dir.path().join("headers");
    let out = Command::new(peer("curl", "curl"))
        .args(["-sS", "--path-as-is", "-o", "-", "-D"])
        .arg(&headers_file)
        .args(["-H", &format!("Host: {host}")])
        .args(args)
        .arg(format!("http://127.0.0.1:{http}{path}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "curl failed: {out:?}");
    let head = std::fs::read_to_string(&headers_file).unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, out.stdout)
}

fn h<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn spa_fallback_index_types_cache_rules_and_no_listing() {
    let site = Site::new();
    let (proxy, http) = site.start();

    let home = get(http, "spa.test", "/");
    assert_eq!(home.status(), 200);
    assert_eq!(header(&home, "content-type"), "text/html");
    assert_eq!(header(&home, "cache-control"), "no-cache");
    assert_eq!(header(&home, "x-frame-options"), "DENY");
    assert!(is_request_id(&header(&home, "x-request-id")));
    assert_eq!(home.text().unwrap(), "<h1>home</h1>\n");

    // A client-side route: the app's index.html (nginx `try_files $uri $uri/ /index.html`).
    let deep = get(http, "spa.test", "/users/42/settings");
    assert_eq!(deep.status(), 200);
    assert_eq!(header(&deep, "cache-control"), "no-cache");
    assert_eq!(deep.text().unwrap(), "<h1>home</h1>\n");
    // A directory's own index, with and without the trailing slash.
    for path in ["/docs/", "/docs"] {
        let docs = get(http, "spa.test", path);
        assert_eq!(docs.status(), 200, "{path}");
        assert_eq!(docs.text().unwrap(), "<p>docs</p>\n", "{path}");
    }
    // A directory without index: the fallback on the SPA, 404 (never a listing) without one.
    assert_eq!(
        get(http, "spa.test", "/nodir/").text().unwrap(),
        "<h1>home</h1>\n"
    );
    for path in ["/nodir/", "/nodir", "/missing.js"] {
        let r = get(http, "plain.test", path);
        assert_eq!(r.status(), 404, "{path}");
        assert_proxy_error(&json_body(r), 404);
    }

    let cases = [
        (
            "/app.js",
            "text/javascript",
            Some("public, max-age=31536000, immutable"),
        ),
        (
            "/style.css",
            "text/css",
            Some("public, max-age=31536000, immutable"),
        ),
        (
            "/fonts/a.woff2",
            "font/woff2",
            Some("public, max-age=31536000, immutable"),
        ),
        ("/logo.png", "image/png", None),
        ("/data.json", "application/json", None),
        ("/mod.mjs", "text/javascript", None),
        ("/blob", "application/octet-stream", None),
    ];
    for (path, content_type, cache) in cases {
        let r = get(http, "spa.test", path);
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(header(&r, "content-type"), content_type, "{path}");
        let control = r
            .headers()
            .get("cache-control")
            .map(|v| v.to_str().unwrap());
        assert_eq!(control, cache, "{path}");
        let expected = std::fs::read(site.root.join(&path[1..])).unwrap();
        assert_eq!(r.bytes().unwrap().to_vec(), expected, "{path}");
    }

    // `/files` strips its prefix and serves docs/ with readme.txt as the index.
    let readme = get(http, "plain.test", "/files/");
    assert_eq!(readme.status(), 200);
    assert_eq!(header(&readme, "content-type"), "text/plain");
    assert_eq!(readme.text().unwrap(), "the readme\n");
    assert_eq!(
        get(http, "plain.test", "/files/index.html").text().unwrap(),
        "<p>docs</p>\n"
    );

    // Only GET and HEAD.
    let post = http1_client()
        .post(format!("http://127.0.0.1:{http}/app.js"))
        .header("host", "spa.test")
        .body("x")
        .send()
        .unwrap();
    assert_eq!(post.status(), 405);
    assert_eq!(header(&post, "allow"), "GET, HEAD");
    assert_eq!(header(&post, "x-frame-options"), "DENY");
    assert_proxy_error(&json_body(post), 405);

    // The access log has each answer with its status and body size.
    let logged = |path: &str, status: u64, bytes: u64| {
        proxy
            .access_log()
            .iter()
            .any(|e| e["path"] == path && e["status"] == status && e["bytes"] == bytes)
    };
    let js_len = std::fs::metadata(site.root.join("app.js")).unwrap().len();
    assert!(
        wait_until(Duration::from_secs(5), || logged("/app.js", 200, js_len)
            && logged("/", 200, 14)
            && proxy
                .access_log()
                .iter()
                .any(|e| e["path"] == "/missing.js" && e["status"] == 404)),
        "{:#?}",
        proxy.access_log()
    );
}

#[test]
fn etag_and_last_modified_give_304_with_curl() {
    let site = Site::new();
    let (_proxy, http) = site.start();
    let (status, headers, body) = curl(http, "spa.test", "/app.js", &[]);
    assert_eq!(status, 200);
    assert_eq!(body, std::fs::read(site.root.join("app.js")).unwrap());
    let etag = h(&headers, "etag").unwrap().to_string();
    let meta = std::fs::metadata(site.root.join("app.js")).unwrap();
    let mtime = meta
        .modified()
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert_eq!(etag, format!("\"{mtime:x}-{:x}\"", meta.len()));
    let last_modified = h(&headers, "last-modified").unwrap().to_string();
    assert_eq!(h(&headers, "accept-ranges"), Some("bytes"));

    let inm = format!("If-None-Match: {etag}");
    let (status, headers, body) = curl(http, "spa.test", "/app.js", &["-H", &inm]);
    assert_eq!(status, 304);
    assert!(body.is_empty());
    assert_eq!(h(&headers, "etag"), Some(etag.as_str()));
    assert_eq!(
        h(&headers, "cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    let other = "If-None-Match: \"other\"";
    assert_eq!(curl(http, "spa.test", "/app.js", &["-H", other]).0, 200);

    let ims = format!("If-Modified-Since: {last_modified}");
    let (status, _, body) = curl(http, "spa.test", "/app.js", &["-H", &ims]);
    assert_eq!(status, 304);
    assert!(body.is_empty());
    let old = "If-Modified-Since: Mon, 01 Jan 2001 00:00:00 GMT";
    assert_eq!(curl(http, "spa.test", "/app.js", &["-H", old]).0, 200);
    // curl's own conditional GET (-z): If-Modified-Since from a file's time.
    let (status, _, _) = curl(
        http,
        "spa.test",
        "/app.js",
        &["-z", site.root.join("app.js").to_str().unwrap()],
    );
    assert_eq!(status, 304);
}

#[test]
fn ranges_206_and_416_with_curl() {
    let site = Site::new();
    let (_proxy, http) = site.start();
    let all = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let (status, headers, body) = curl(http, "plain.test", "/assets/range.txt", &["-r", "2-5"]);
    assert_eq!(status, 206);
    assert_eq!(body, b"2345");
    assert_eq!(h(&headers, "content-range"), Some("bytes 2-5/36"));
    assert_eq!(h(&headers, "content-length"), Some("4"));
    let (status, headers, body) = curl(http, "plain.test", "/assets/range.txt", &["-r", "-3"]);
    assert_eq!((status, body.as_slice()), (206, &b"xyz"[..]));
    assert_eq!(h(&headers, "content-range"), Some("bytes 33-35/36"));
    let (status, _, body) = curl(http, "plain.test", "/assets/range.txt", &["-r", "30-"]);
    assert_eq!((status, body.as_slice()), (206, &b"uvwxyz"[..]));

    let (status, headers, body) = curl(http, "plain.test", "/assets/range.txt", &["-r", "100-"]);
    assert_eq!(status, 416);
    assert_eq!(h(&headers, "content-range"), Some("bytes */36"));
    assert!(String::from_utf8_lossy(&body).contains("\"status\":416"));

    // Several ranges: the whole file (allowed by RFC 9110), as documented.
    let (status, _, body) = curl(http, "plain.test", "/assets/range.txt", &["-r", "0-1,4-5"]);
    assert_eq!((status, body.as_slice()), (200, &all[..]));
    // If-Range with another validator: the whole file; with the current one: the range.
    let (_, headers, _) = curl(http, "plain.test", "/assets/range.txt", &[]);
    let etag = h(&headers, "etag").unwrap().to_string();
    let stale = ["-r", "0-1", "-H", "If-Range: \"stale\""];
    assert_eq!(curl(http, "plain.test", "/assets/range.txt", &stale).0, 200);
    let current = format!("If-Range: {etag}");
    let (status, _, body) = curl(
        http,
        "plain.test",
        "/assets/range.txt",
        &["-r", "0-1", "-H", &current],
    );
    assert_eq!((status, body.as_slice()), (206, &b"01"[..]));
}

#[test]
fn precompressed_siblings_by_accept_encoding_with_curl() {
    let site = Site::new();
    let (_proxy, http) = site.start();
    let cases: [(&[&str], Option<&str>, &[u8]); 4] = [
        (
            &["-H", "Accept-Encoding: gzip, deflate, br"],
            Some("br"),
            b"pretend-brotli",
        ),
        (
            &["-H", "Accept-Encoding: gzip"],
            Some("gzip"),
            b"pretend-gzip",
        ),
        (
            &["-H", "Accept-Encoding: br;q=0, gzip"],
            Some("gzip"),
            b"pretend-gzip",
        ),
        (
            &["-H", "Accept-Encoding: identity"],
            None,
            b"console.log('the app, uncompressed');\n",
        ),
    ];
    for (args, encoding, expected) in cases {
        let (status, headers, body) = curl(http, "spa.test", "/app.js", args);
        assert_eq!(status, 200, "{args:?}");
        assert_eq!(h(&headers, "content-encoding"), encoding, "{args:?}");
        // Sent as the file holds it: the on-the-fly compression leaves it alone.
        assert_eq!(body, expected, "{args:?}");
        assert_eq!(
            h(&headers, "content-type"),
            Some("text/javascript"),
            "{args:?}"
        );
        if encoding.is_some() {
            assert_eq!(h(&headers, "vary"), Some("Accept-Encoding"), "{args:?}");
            assert_eq!(
                h(&headers, "content-length"),
                Some(expected.len().to_string().as_str())
            );
        }
    }
}

#[test]
fn head_has_headers_and_no_body() {
    let site = Site::new();
    let (_proxy, http) = site.start();
    let addr = format!("127.0.0.1:{http}").parse().unwrap();
    let mut stream = connect(addr);
    use std::io::Write;
    stream
        .write_all(b"HEAD /app.js HTTP/1.1\r\nHost: plain.test\r\n\r\nGET /index.html HTTP/1.1\r\nHost: plain.test\r\n\r\n")
        .unwrap();
    let head = read_head(&mut stream);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let len = std::fs::metadata(site.root.join("app.js")).unwrap().len();
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("content-length: {len}\r\n")),
        "{head}"
    );
    // The next thing on the connection is the second answer: the HEAD had no body.
    let next = read_response(&mut stream);
    assert_eq!(next.status, 200);
    assert_eq!(next.body, b"<h1>home</h1>\n");
}

#[test]
fn traversal_dotfiles_and_symlinks_out_of_the_root_are_404() {
    let site = Site::new();
    let (_proxy, http) = site.start();
    let addr = format!("127.0.0.1:{http}").parse().unwrap();
    let fetch = |host: &str, path: &str| {
        let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let r = raw_request(addr, request.as_bytes());
        (r.status, String::from_utf8_lossy(&r.body).to_string())
    };
    let leaks = |body: &str| {
        ["outside the root", "SECRET", "[core]"]
            .iter()
            .any(|s| body.contains(s))
    };
    // Dot segments, raw or encoded, never climb out: the normalised path stays under the root
    // (so it names no file here: 404 without a fallback; the app itself on the SPA).
    for path in [
        "/../outside/secret.txt",
        "/docs/../../outside/secret.txt",
        "/%2e%2e/outside/secret.txt",
        "/%2E%2E/%2e%2e/outside/secret.txt",
    ] {
        let (status, body) = fetch("plain.test", path);
        assert_eq!(status, 404, "{path}: {body}");
        let (status, body) = fetch("spa.test", path);
        assert!(!leaks(&body), "{path}: {body}");
        assert_eq!((status, body.as_str()), (200, "<h1>home</h1>\n"), "{path}");
    }
    // Encoded slashes, dotfiles and symlinks out of the root (or onto a dotfile): 404, never the
    // file and never the SPA fallback.
    for host in ["spa.test", "plain.test"] {
        for path in [
            "/..%2foutside%2fsecret.txt",
            "/docs%2f..%2f..%2foutside%2fsecret.txt",
            "/docs%2Findex.html",
            "/.env",
            "/.git/config",
            "/%2eenv",
            "/docs/../.env",
            "/out.txt",
            "/outdir/secret.txt",
            "/env.txt",
        ] {
            let (status, body) = fetch(host, path);
            assert_eq!(status, 404, "{host}{path}: {body}");
            assert!(!leaks(&body), "{host}{path}: {body}");
        }
    }
    // A named pipe is no file: 404 (the app on the SPA), answered at once.
    assert_eq!(fetch("plain.test", "/pipe").0, 404);
    assert_eq!(
        fetch("spa.test", "/pipe"),
        (200, "<h1>home</h1>\n".to_string())
    );
    // The same with curl (`--path-as-is`: it would otherwise squash the dots itself).
    for path in [
        "/../outside/secret.txt",
        "/%2e%2e/outside/secret.txt",
        "/.env",
        "/out.txt",
    ] {
        let (status, _, body) = curl(http, "plain.test", path, &[]);
        assert_eq!(status, 404, "{path}");
        assert!(!leaks(&String::from_utf8_lossy(&body)), "{path}");
    }
    // A symlink inside the root is served.
    let inside = get(http, "plain.test", "/in.txt");
    assert_eq!(inside.status(), 200);
    assert_eq!(inside.text().unwrap(), "the readme\n");
}

/// VmRSS / VmHWM of a process, in bytes.
fn memory(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap();
    kb * 1024
}

#[test]
fn a_big_file_streams_whole_in_bounded_memory() {
    let site = Site::new();
    const SIZE: usize = 48 << 20;
    let mut data = vec![0u8; SIZE];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    std::fs::write(site.root.join("big.bin"), &data).unwrap();
    let (proxy, http) = site.start();
    // Warm up (threads, buffers), then measure the peak from here.
    assert_eq!(get(http, "plain.test", "/index.html").status(), 200);
    let before = memory(proxy.pid(), "VmRSS:");

    let mut resp = get(http, "plain.test", "/big.bin");
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-length"), SIZE.to_string());
    // Read slowly at first, so that a proxy that buffered would have to hold the file.
    let mut got = Vec::with_capacity(SIZE);
    let mut buf = vec![0u8; 64 << 10];
    let mut peak = before;
    loop {
        let n = resp.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        if got.len() < (4 << 20) {
            std::thread::sleep(Duration::from_millis(2));
        }
        peak = peak.max(memory(proxy.pid(), "VmRSS:"));
    }
    assert_eq!(got.len(), SIZE);
    assert!(got == data, "the body differs from the file");
    // Ranges across and beyond the part read with the lookup (the first 128 KB).
    for (from, to) in [
        (131_000, 132_000),
        (1_000_000, 1_000_099),
        (SIZE - 10, SIZE - 1),
    ] {
        let r = http1_client()
            .get(format!("http://127.0.0.1:{http}/big.bin"))
            .header("host", "plain.test")
            .header("range", format!("bytes={from}-{to}"))
            .send()
            .unwrap();
        assert_eq!(r.status(), 206);
        assert_eq!(
            header(&r, "content-range"),
            format!("bytes {from}-{to}/{SIZE}")
        );
        assert!(r.bytes().unwrap() == data[from..=to], "bytes {from}-{to}");
    }
    let growth = peak.saturating_sub(before);
    assert!(
        growth < (SIZE as u64) / 4,
        "RSS grew by {growth} bytes while streaming a {SIZE}-byte file (before {before})"
    );
}

#[test]
fn reload_changes_the_root() {
    let site = Site::new();
    let (mut proxy, http) = site.start();
    assert_eq!(
        get(http, "plain.test", "/index.html").text().unwrap(),
        "<h1>home</h1>\n"
    );
    let other = tempfile::tempdir().unwrap();
    std::fs::write(other.path().join("index.html"), b"<h1>new site</h1>\n").unwrap();
    let config = fill(
        CONFIG,
        &[("http", &http), ("root", &other.path().display())],
    )
    .replace(
        &format!("{}/docs", other.path().display()),
        &site.root.join("docs").display().to_string(),
    );
    proxy.reload_with(&config);
    assert!(
        wait_until(Duration::from_secs(10), || {
            get(http, "plain.test", "/index.html").text().unwrap() == "<h1>new site</h1>\n"
        }),
        "{}",
        proxy.stderr()
    );
    assert_eq!(get(http, "plain.test", "/app.js").status(), 404);
}
