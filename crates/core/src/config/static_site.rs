//! A route's `static = { root, index, fallback, cache }`: files from a directory instead of a service (nginx `root`, `index`, `try_files` and per-pattern `Cache-Control`).

use std::path::PathBuf;
use std::sync::Arc;

use http::HeaderValue;
use serde::{Deserialize, Serialize, Serializer};
use toml::Spanned;

use super::values::Text;
use super::{serialize, Validator};
use crate::static_files::Glob;

/// `static = { ... }` as written in a `[[routes]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStatic {
    pub root: Option<Spanned<Text>>,
    pub index: Option<Spanned<Text>>,
    pub fallback: Option<Spanned<Text>>,
    pub cache: Option<Vec<Spanned<RawCacheRule>>>,
}

/// One `cache = [{ match, control }]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCacheRule {
    #[serde(rename = "match")]
    pub pattern: Option<Spanned<Text>>,
    pub control: Option<Spanned<Text>>,
}

/// A validated static site: the root exists and is a directory (held canonical, so a symlinked
/// root works and every served file is checked to lie under it).
#[derive(Debug, Clone, Serialize)]
pub struct StaticSite {
    #[serde(serialize_with = "serialize::path")]
    pub root: PathBuf,
    /// The file served for a directory (`index.html`).
    pub index: String,
    /// The path (under the root) served when no file matches: `/index.html` for a single-page
    /// app (nginx `try_files $uri $uri/ /index.html`).
    pub fallback: Option<String>,
    /// Cache-Control by pattern, first match wins; no match: no Cache-Control.
    pub cache: Vec<CacheRule>,
}

/// `Cache-Control: control` for the files `pattern` matches.
#[derive(Debug, Clone, Serialize)]
pub struct CacheRule {
    #[serde(rename = "match")]
    pub pattern: String,
    #[serde(skip)]
    pub glob: Glob,
    #[serde(serialize_with = "header_value")]
    pub control: HeaderValue,
}

fn header_value<S: Serializer>(v: &HeaderValue, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(v.to_str().unwrap_or(""))
}

/// A route's `static`, as the config writes it.
pub(super) fn serialize_opt<S: Serializer>(
    v: &Option<Arc<StaticSite>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    v.as_deref().serialize(s)
}

impl StaticSite {
    /// The Cache-Control of the file served at `path` (under the root, from `/`).
    pub fn cache_control(&self, path: &str) -> Option<&HeaderValue> {
        self.cache
            .iter()
            .find(|r| r.glob.matches(path))
            .map(|r| &r.control)
    }
}

impl Validator {
    pub(super) fn static_site(&mut self, raw: &Spanned<RawStatic>) -> Option<Arc<StaticSite>> {
        let span = raw.span();
        let raw = raw.get_ref();
        let mut ok = true;
        let root = match &raw.root {
            None => {
                self.error(
                    span.clone(),
                    "`static` has no `root` (the directory to serve)",
                );
                None
            }
            Some(r) => {
                let path = self.resolve_path(r.get_ref());
                match std::fs::canonicalize(&path) {
                    Ok(p) if p.is_dir() => Some(p),
                    Ok(_) => {
                        self.error(
                            r.span(),
                            format!("static root \"{}\" is not a directory", path.display()),
                        );
                        None
                    }
                    Err(e) => {
                        self.error(r.span(), format!("static root \"{}\": {e}", path.display()));
                        None
                    }
                }
            }
        };
        let index = match &raw.index {
            None => "index.html".to_string(),
            Some(i) => {
                let name: &str = i.get_ref();
                if name.is_empty() || name.contains(['/', '\\', '\0']) || name.starts_with('.') {
                    self.error(
                        i.span(),
                        format!("index \"{name}\" must be a file name (no `/`, not a dotfile)"),
                    );
                    ok = false;
                }
                name.to_string()
            }
        };
        let fallback = raw.fallback.as_ref().and_then(|f| {
            let p: &str = f.get_ref();
            let clean = p.starts_with('/')
                && crate::static_files::segments(p, "/", false).is_ok_and(|s| !s.is_empty());
            if clean {
                Some(p.to_string())
            } else {
                self.error(
                    f.span(),
                    format!(
                        "fallback \"{p}\" must be a file's path under the root, starting with `/` (as \"/index.html\")"
                    ),
                );
                ok = false;
                None
            }
        });
        let mut cache = Vec::new();
        for rule in raw.cache.iter().flatten() {
            let (rule_span, rule) = (rule.span(), rule.get_ref());
            let (Some(pattern), Some(control)) = (&rule.pattern, &rule.control) else {
                self.error(rule_span, "a cache rule needs `match` and `control`");
                ok = false;
                continue;
            };
            let glob = match Glob::new(pattern.get_ref()) {
                Ok(g) => g,
                Err(e) => {
                    self.error(pattern.span(), e);
                    ok = false;
                    continue;
                }
            };
            let Ok(value) = HeaderValue::from_str(control.get_ref()) else {
                self.error(control.span(), "invalid Cache-Control value");
                ok = false;
                continue;
            };
            cache.push(CacheRule {
                pattern: pattern.get_ref().to_string(),
                glob,
                control: value,
            });
        }
        let root = root?;
        ok.then(|| {
            Arc::new(StaticSite {
                root,
                index,
                fallback,
                cache,
            })
        })
    }
}
