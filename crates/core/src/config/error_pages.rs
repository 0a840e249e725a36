//! `error_pages`: the bodies of Switchyard's own error answers per route, service or `[defaults]`, HTML for browsers and JSON for API clients, read and checked at config load.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use toml::Spanned;

use super::values::Text;
use super::Validator;

/// The largest page body, inline or from a file (nginx's own error pages are a few hundred bytes;
/// a page is held in memory for as long as its config).
pub const MAX_PAGE_BYTES: usize = 256 * 1024;

/// One status's page as written: a file path (the HTML page), or
/// `{ html = "...", html_file = "...", json = "...", json_file = "..." }` with at most one of each
/// pair. Inline bodies are taken as written (no `${VAR}` expansion); file paths are expanded and
/// relative to the config file.
#[derive(Debug, Clone, Default)]
pub struct RawErrorPage {
    pub html: Option<String>,
    pub html_file: Option<Text>,
    pub json: Option<String>,
    pub json_file: Option<Text>,
}

impl<'de> Deserialize<'de> for RawErrorPage {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct PageVisitor;
        impl<'de> Visitor<'de> for PageVisitor {
            type Value = RawErrorPage;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(r#"the path of an HTML file, or { html, html_file, json, json_file }"#)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawErrorPage, E> {
                Ok(RawErrorPage {
                    html_file: Some(Text::expand(v).map_err(E::custom)?),
                    ..RawErrorPage::default()
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawErrorPage, A::Error> {
                let mut page = RawErrorPage::default();
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "html" => page.html = Some(map.next_value()?),
                        "html_file" => page.html_file = Some(map.next_value()?),
                        "json" => page.json = Some(map.next_value()?),
                        "json_file" => page.json_file = Some(map.next_value()?),
                        other => {
                            return Err(de::Error::unknown_field(
                                other,
                                &["html", "html_file", "json", "json_file"],
                            ))
                        }
                    }
                }
                Ok(page)
            }
        }
        d.deserialize_any(PageVisitor)
    }
}

/// `error_pages = { 503 = ..., 404 = ... }` as written: status → page.
pub type RawErrorPages = BTreeMap<String, Spanned<RawErrorPage>>;

/// One body, and where it came from (shown by `GET /v1/config`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageBody {
    pub body: Bytes,
    /// The file it was read from, or `inline`.
    pub source: String,
}

/// A status's bodies: HTML for browsers, JSON for API clients.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorPage {
    pub html: Option<PageBody>,
    pub json: Option<PageBody>,
}

/// What the client asked for with `Accept`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageKind {
    Html,
    Json,
}

impl PageKind {
    pub fn content_type(self) -> &'static str {
        match self {
            PageKind::Html => "text/html; charset=utf-8",
            PageKind::Json => "application/json",
        }
    }

    /// HTML when `Accept` names `text/html` (or XHTML) with a quality above 0 and at least that
    /// of any JSON type it names, as browsers' navigations do; JSON otherwise (API clients, curl's
    /// `*/*`, no `Accept` at all).
    pub fn for_accept(accept: Option<&str>) -> PageKind {
        let Some(accept) = accept else {
            return PageKind::Json;
        };
        let (mut html, mut json) = (0.0f32, 0.0f32);
        for item in accept.split(',') {
            let mut parts = item.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            if media == "text/html" || media == "application/xhtml+xml" {
                html = html.max(q);
            } else if media == "application/json" || media.ends_with("+json") {
                json = json.max(q);
            }
        }
        if html > 0.0 && html >= json {
            PageKind::Html
        } else {
            PageKind::Json
        }
    }
}

/// Status → page, shared between the snapshots of one config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorPages(Arc<BTreeMap<u16, ErrorPage>>);

impl ErrorPages {
    pub fn new(pages: BTreeMap<u16, ErrorPage>) -> ErrorPages {
        ErrorPages(Arc::new(pages))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The body of `kind` for `status`, if this level has one.
    pub fn body(&self, status: u16, kind: PageKind) -> Option<&PageBody> {
        let page = self.0.get(&status)?;
        match kind {
            PageKind::Html => page.html.as_ref(),
            PageKind::Json => page.json.as_ref(),
        }
    }
}

/// The page for `status` through `levels` (most specific first): the first level with a body of
/// the kind the client wants; a browser with no HTML page anywhere gets the first JSON page. `None`:
/// the built-in JSON body.
pub fn choose<'a>(
    levels: &[&'a ErrorPages],
    status: u16,
    wanted: PageKind,
) -> Option<(&'a PageBody, PageKind)> {
    let find = |kind| {
        levels
            .iter()
            .find_map(|l| l.body(status, kind))
            .map(|b| (b, kind))
    };
    find(wanted).or_else(|| match wanted {
        PageKind::Html => find(PageKind::Json),
        PageKind::Json => None,
    })
}

/// `{"503": {"html": "/etc/switchyard/503.html", "json": "inline"}}`: where each body came from.
impl Serialize for ErrorPages {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Sources<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            html: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            json: Option<&'a str>,
        }
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (status, page) in self.0.iter() {
            let sources = Sources {
                html: page.html.as_ref().map(|b| b.source.as_str()),
                json: page.json.as_ref().map(|b| b.source.as_str()),
            };
            map.serialize_entry(&status.to_string(), &sources)?;
        }
        map.end()
    }
}

impl Validator {
    /// Reads and checks every page: a status from 400 to 599, at most one HTML and one JSON body,
    /// files that exist and are at most [`MAX_PAGE_BYTES`], JSON bodies that parse.
    pub(super) fn error_pages(&mut self, raw: &RawErrorPages) -> ErrorPages {
        let mut pages = BTreeMap::new();
        for (key, entry) in raw {
            let span = entry.span();
            let status = match key.parse::<u16>() {
                Ok(s) if (400..=599).contains(&s) => s,
                _ => {
                    self.error(
                        span,
                        format!("error page for \"{key}\": the key is a status from 400 to 599"),
                    );
                    continue;
                }
            };
            let e = entry.get_ref();
            let html = self.page_body(status, "html", e.html.as_ref(), e.html_file.as_ref(), &span);
            let json = self.page_body(status, "json", e.json.as_ref(), e.json_file.as_ref(), &span);
            if let Some(json) = &json {
                if let Err(why) = serde_json::from_slice::<serde_json::Value>(&json.body) {
                    self.error(
                        span.clone(),
                        format!(
                            "error page {status}: the json body ({}) is not valid JSON: {why}",
                            json.source
                        ),
                    );
                }
            }
            if html.is_none() && json.is_none() {
                self.error(
                    span,
                    format!("error page {status} has no body (html, html_file, json or json_file)"),
                );
                continue;
            }
            pages.insert(status, ErrorPage { html, json });
        }
        ErrorPages::new(pages)
    }

    fn page_body(
        &mut self,
        status: u16,
        kind: &str,
        inline: Option<&String>,
        file: Option<&Text>,
        span: &std::ops::Range<usize>,
    ) -> Option<PageBody> {
        let body = match (inline, file) {
            (None, None) => return None,
            (Some(_), Some(_)) => {
                self.error(
                    span.clone(),
                    format!("error page {status}: give `{kind}` or `{kind}_file`, not both"),
                );
                return None;
            }
            (Some(text), None) => PageBody {
                body: Bytes::from(text.clone()),
                source: "inline".into(),
            },
            (None, Some(path)) => {
                let path = self.resolve_path(&path.0);
                match crate::fsutil::read_regular(&path) {
                    Ok(bytes) => PageBody {
                        body: Bytes::from(bytes),
                        source: path.display().to_string(),
                    },
                    Err(e) => {
                        self.error(
                            span.clone(),
                            format!(
                                "error page {status}: cannot read {kind} file \"{}\": {e}",
                                path.display()
                            ),
                        );
                        return None;
                    }
                }
            }
        };
        if body.body.len() > MAX_PAGE_BYTES {
            self.error(
                span.clone(),
                format!(
                    "error page {status}: the {kind} body ({}) has {} bytes; at most {MAX_PAGE_BYTES}",
                    body.source,
                    body.body.len()
                ),
            );
            return None;
        }
        Some(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_picks_html_for_browsers_only() {
        let kind = |a: Option<&str>| PageKind::for_accept(a);
        let firefox = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
        assert_eq!(kind(Some(firefox)), PageKind::Html);
        assert_eq!(kind(Some("text/html")), PageKind::Html);
        assert_eq!(kind(None), PageKind::Json);
        assert_eq!(kind(Some("*/*")), PageKind::Json);
        assert_eq!(kind(Some("application/json")), PageKind::Json);
        assert_eq!(kind(Some("application/problem+json")), PageKind::Json);
        assert_eq!(
            kind(Some("application/json, text/html;q=0.5")),
            PageKind::Json
        );
        assert_eq!(kind(Some("text/html;q=0")), PageKind::Json);
    }

    #[test]
    fn levels_choose_the_most_specific_page_of_the_wanted_kind() {
        let body = |s: &str| PageBody {
            body: Bytes::from(s.to_string()),
            source: "inline".into(),
        };
        let level = |status: u16, html: Option<&str>, json: Option<&str>| {
            let page = ErrorPage {
                html: html.map(body),
                json: json.map(body),
            };
            ErrorPages::new(BTreeMap::from([(status, page)]))
        };
        let route = level(503, None, Some("{\"r\":1}"));
        let service = level(503, Some("<p>service</p>"), None);
        let defaults = level(503, Some("<p>defaults</p>"), Some("{\"d\":1}"));
        let levels = [&route, &service, &defaults];
        let pick = |kind| choose(&levels, 503, kind).map(|(b, k)| (b.body.clone(), k));
        assert_eq!(
            pick(PageKind::Html),
            Some((Bytes::from("<p>service</p>"), PageKind::Html))
        );
        assert_eq!(
            pick(PageKind::Json),
            Some((Bytes::from("{\"r\":1}"), PageKind::Json))
        );
        assert_eq!(choose(&levels, 404, PageKind::Html), None);
        // A browser with only JSON pages gets the JSON page; an API client never gets HTML.
        let only_json = [&route];
        assert_eq!(
            choose(&only_json, 503, PageKind::Html).map(|(_, k)| k),
            Some(PageKind::Json)
        );
        let only_html = [&service];
        assert_eq!(choose(&only_html, 503, PageKind::Json), None);
    }
}
