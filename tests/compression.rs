//! Response compression by type, length and level, decided per response: nginx as the upstream
//! serving files of many types, reqwest and curl `--compressed` as clients. Never images (but
//! SVG), archives, `application/octet-stream` or already-encoded bodies (gRPC: tests/grpc.rs).
#![allow(clippy::unwrap_used)] // tests unwrap freely

use std::io::Read;
use std::process::Command;

use testkit::*;

const BIN: Bin = testkit::bin!();

/// A text-like body long enough for any min_length used here, compressible.
fn text(len: usize) -> String {
    "switchyard compresses text; ".repeat(len / 28 + 1)[..len].to_string()
}

/// nginx serving one file per type (its `types` chosen here), and the proxy in front with
/// `zip.test` (defaults), `custom.test` (only text/css from 4 KB, gzip level 9, br 4),
/// `wild.test` (`text/*` and `application/*`) and `off.test` (`compression = false`).
fn setup() -> (Running, Nginx) {
    let port = port();
    let nginx_dir = tempfile::tempdir().unwrap();
    let root = nginx_dir.path();
    let files: &[(&str, usize)] = &[
        ("page.html", 5000),
        ("small.html", 100),
        ("style.css", 5000),
        ("small.css", 2000),
        ("app.js", 5000),
        ("data.json", 5000),
        ("logo.svg", 5000),
        ("photo.png", 5000),
        ("blob.bin", 5000),
        ("pack.zip", 5000),
        ("clip.mp4", 5000),
        ("font.woff2", 5000),
        ("readme.xyz", 5000),
        ("enc.html", 5000),
    ];
    for (name, len) in files {
        std::fs::write(root.join(name), text(*len)).unwrap();
    }
    let servers = format!(
        r#"
    types {{
        text/html html; text/css css; application/javascript js; application/json json;
        image/svg+xml svg; image/png png; application/octet-stream bin; application/zip zip;
        video/mp4 mp4; font/woff2 woff2; text/x-unusual xyz;
    }}
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location = /enc.html {{ add_header Content-Encoding br; }}
    }}
"#,
        root = root.display()
    );
    let nginx = Nginx::start(&servers, &[port]);
    // nginx keeps its own temp dir; the files' dir must outlive the test.
    std::mem::forget(nginx_dir);
    let running = World::bare()
        .http()
        .address("nginx", format!("127.0.0.1:{port}"))
        .pool("files", "main", 1, &["nginx"])
        .route("zip.test", "files")
        .route_with(Route::new("off.test", "files").set("compression", false))
        .toml(
            r#"
[[routes]]
host = "custom.test"
service = "files"
compression = { types = ["text/css"], min_length = "4KB", level = { gzip = 9, br = 4 } }
"#,
        )
        .toml(
            r#"
[[routes]]
host = "wild.test"
path = "/"
service = "files"
compression = { types = ["text/*", "application/*"] }
"#,
        )
        .start(BIN);
    (running, nginx)
}

/// GET `path` on `host` with `Accept-Encoding: gzip`: (Content-Encoding, decoded body).
fn get(s: &Running, host: &str, path: &str) -> (Option<String>, Vec<u8>) {
    let resp = http1_client()
        .get(format!("http://{host}:{}{path}", s.http()))
        .header("Accept-Encoding", "gzip")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200, "{host}{path}");
    let encoding = resp
        .headers()
        .get("content-encoding")
        .map(|v| v.to_str().unwrap().to_string());
    let bytes = resp.bytes().unwrap().to_vec();
    let body = if encoding.as_deref() == Some("gzip") {
        assert_eq!(&bytes[..2], &[0x1f, 0x8b], "gzip magic for {host}{path}");
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_end(&mut out)
            .unwrap();
        out
    } else {
        bytes
    };
    (encoding, body)
}

#[test]
fn default_types_and_min_length() {
    let (s, _nginx) = setup();
    for path in [
        "/page.html",
        "/style.css",
        "/app.js",
        "/data.json",
        "/logo.svg",
    ] {
        let (enc, body) = get(&s, "zip.test", path);
        assert_eq!(enc.as_deref(), Some("gzip"), "{path} compressed");
        assert_eq!(body, text(5000).as_bytes(), "{path} decodes to the file");
    }
    // Under min_length (256 bytes by default), and a type not in the list: sent as they are.
    for (path, len) in [("/small.html", 100), ("/readme.xyz", 5000)] {
        let (enc, body) = get(&s, "zip.test", path);
        assert_eq!(enc, None, "{path} not compressed");
        assert_eq!(body, text(len).as_bytes());
    }
    // Compression off on the route.
    assert_eq!(get(&s, "off.test", "/page.html").0, None);
}

#[test]
fn never_images_archives_octet_stream_or_encoded() {
    let (s, _nginx) = setup();
    // Even on a route that lists `application/*` and `text/*`.
    for host in ["zip.test", "wild.test"] {
        for path in [
            "/photo.png",
            "/blob.bin",
            "/pack.zip",
            "/clip.mp4",
            "/font.woff2",
        ] {
            let (enc, body) = get(&s, host, path);
            assert_eq!(enc, None, "{host}{path} must not be compressed");
            assert_eq!(body, text(5000).as_bytes(), "{host}{path} untouched");
        }
        // Already encoded by the upstream: passed through, not compressed again.
        let (enc, body) = get(&s, host, "/enc.html");
        assert_eq!(
            enc.as_deref(),
            Some("br"),
            "{host}: the upstream's encoding kept"
        );
        assert_eq!(body, text(5000).as_bytes(), "{host}: the bytes untouched");
    }
    // `text/*` takes a type the default list does not name.
    assert_eq!(
        get(&s, "wild.test", "/readme.xyz").0.as_deref(),
        Some("gzip")
    );
}

#[test]
fn route_types_min_length_and_level() {
    let (s, _nginx) = setup();
    let (enc, body) = get(&s, "custom.test", "/style.css");
    assert_eq!(enc.as_deref(), Some("gzip"));
    assert_eq!(body, text(5000).as_bytes());
    // Below the route's 4 KB, and a type the route does not list.
    assert_eq!(get(&s, "custom.test", "/small.css").0, None);
    assert_eq!(get(&s, "custom.test", "/page.html").0, None);
    // Level 9 compresses at least as well as the default level 5 (gzip's header says which:
    // XFL = 2 marks the best compression).
    let raw = |host: &str| {
        http1_client()
            .get(format!("http://{host}:{}/style.css", s.http()))
            .header("Accept-Encoding", "gzip")
            .send()
            .unwrap()
            .bytes()
            .unwrap()
            .to_vec()
    };
    let (best, default) = (raw("custom.test"), raw("zip.test"));
    assert_eq!(best[8], 2, "XFL of a level-9 gzip stream");
    assert_eq!(default[8], 0, "XFL of a level-5 gzip stream");
}

#[test]
fn curl_compressed_decodes_what_it_gets() {
    let (s, _nginx) = setup();
    let curl = peer("curl", "curl");
    let fetch = |host: &str, path: &str| {
        let out = Command::new(&curl)
            .args(["-sS", "--compressed", "-D", "-", "-o", "/dev/null"])
            .args(["-w", "size_download=%{size_download}\n"])
            .args(["-H", &format!("Host: {host}")])
            .arg(format!("http://127.0.0.1:{}{path}", s.http()))
            .output()
            .unwrap();
        assert!(out.status.success(), "curl failed: {out:?}");
        String::from_utf8(out.stdout).unwrap().to_ascii_lowercase()
    };
    let page = fetch("zip.test", "/page.html");
    let encoding = page
        .lines()
        .find_map(|l| l.strip_prefix("content-encoding: "))
        .map(|v| v.trim().to_string());
    assert!(
        matches!(encoding.as_deref(), Some("gzip" | "br" | "zstd")),
        "curl --compressed got {encoding:?}:\n{page}"
    );
    let size: usize = page
        .lines()
        .find_map(|l| l.strip_prefix("size_download="))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(size < 1000, "5000 repetitive bytes sent as {size}");
    let png = fetch("zip.test", "/photo.png");
    assert!(!png.contains("content-encoding"), "{png}");
    assert!(png.contains("size_download=5000"), "{png}");
    // curl checks the decoded body's integrity itself; compare it too.
    let out = Command::new(&curl)
        .args(["-sS", "--compressed", "-H", "Host: zip.test"])
        .arg(format!("http://127.0.0.1:{}/app.js", s.http()))
        .output()
        .unwrap();
    assert_eq!(out.stdout, text(5000).as_bytes());
}

#[test]
fn config_errors_point_at_the_value() {
    let bad = |value: &str| {
        let config = format!(
            "[[listeners]]\nname = \"http\"\naddress = \"127.0.0.1:{}\"\n\
             [services.s.pools.p]\nservers = [\"127.0.0.1:1\"]\n\
             [[routes]]\nhost = \"*\"\nservice = \"s\"\ncompression = {value}\n",
            port()
        );
        let (code, _, err) = check(BIN, &config);
        assert_ne!(code, 0, "{value} must be refused");
        err
    };
    let err = bad(r#"{ types = ["image/png"] }"#);
    assert!(
        err.contains(":9:") && err.contains("never compressed"),
        "{err}"
    );
    let err = bad(r#"{ types = ["nonsense"] }"#);
    assert!(err.contains("not a media type"), "{err}");
    let err = bad("{ level = 12 }");
    assert!(err.contains("outside 1..=9"), "{err}");
    let err = bad("{ level = { br = 12 } }");
    assert!(err.contains("br level 12"), "{err}");
    let err = bad("{ typo = 1 }");
    assert!(err.contains("typo"), "{err}");
}
