//! The live dashboard page: one HTML page, its script and its style, compiled into the binary and served without the token (they hold no data); the page asks for the token and reads the JSON API with it.
//!
//! The script polls `GET /v1/services`, the rollout, events and traffic endpoints of each service
//! and `GET /v1/certs` every two seconds with `Authorization: Bearer <token>` (kept in the tab's
//! `sessionStorage`, never in a URL), and draws the traffic chart as inline SVG. Its URLs are
//! relative, so the page also works behind a reverse proxy that adds a path prefix. The Content
//! Security Policy allows nothing but these files and requests to the same origin.

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use super::Asset;

const PAGE: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/app.js");
const STYLE: &str = include_str!("dashboard/app.css");

/// Same-origin files and requests only; no inline script, no framing, no form posts.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The file's type and text.
fn content(asset: Asset) -> (&'static str, &'static str) {
    match asset {
        Asset::Page => ("text/html; charset=utf-8", PAGE),
        Asset::Script => ("text/javascript; charset=utf-8", SCRIPT),
        Asset::Style => ("text/css; charset=utf-8", STYLE),
    }
}

/// The file with its type and the page's security headers.
pub fn response(asset: Asset) -> Response<Vec<u8>> {
    let (content_type, body) = content(asset);
    let mut resp = super::text_response(StatusCode::OK, content_type, body.as_bytes().to_vec());
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_and_headers() {
        let page = response(Asset::Page);
        assert_eq!(page.status(), StatusCode::OK);
        assert_eq!(
            page.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        assert!(page.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap_or_default()
            .contains("script-src 'self'"));
        let html = String::from_utf8_lossy(page.body());
        // Relative URLs: the page works under a path prefix too; nothing from elsewhere.
        assert!(html.contains("src=\"dashboard/app.js\""));
        assert!(html.contains("href=\"dashboard/app.css\""));
        assert!(!html.contains("http://") && !html.contains("https://"));
        // The one absolute URL of the script is SVG's namespace name, which is never fetched.
        let script = SCRIPT.replace("'http://www.w3.org/2000/svg'", "");
        assert!(!script.contains("http://") && !script.contains("https://"));
        assert!(!STYLE.contains("http://") && !STYLE.contains("https://"));
        // The token goes in a header, never in a URL.
        assert!(SCRIPT.contains("Authorization"));
        assert!(!SCRIPT.contains("?token") && !SCRIPT.contains("#token"));
        assert_eq!(Asset::parse("app.css"), Some(Asset::Style));
        assert_eq!(Asset::parse("../app.js"), None);
    }
}
