//! Redirects: a route's `redirect = { to, code }`, a listener's `redirect_code`, and what a route sends its requests to (a service or a redirect).

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::headers::{Template, TemplateError};
use super::values::Text;
use super::{ServiceConfig, Validator};

/// The codes an HTTP→HTTPS redirect may use (the default keeps the method and body).
pub const HTTPS_CODES: [u16; 4] = [301, 302, 307, 308];
pub const DEFAULT_HTTPS_CODE: u16 = 308;
/// The codes a route's redirect may use.
pub const ROUTE_CODES: [u16; 5] = [301, 302, 303, 307, 308];
/// A route's redirect is permanent unless it says otherwise (nginx `return 301`).
pub const DEFAULT_ROUTE_CODE: u16 = 301;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedirect {
    pub to: Spanned<Text>,
    pub code: Option<Spanned<u16>>,
}

/// Where a redirecting route sends its clients.
#[derive(Debug, Clone, Serialize)]
pub struct RedirectConfig {
    /// The Location, with variables (`$host`, `$request_uri`, `$path`, ...).
    pub to: Template,
    pub code: u16,
}

/// What a route hands its requests to: exactly one of these.
#[derive(Debug, Clone)]
pub enum RouteTarget {
    Service(String),
    Redirect(RedirectConfig),
    /// Files from a directory (`static_site.rs`).
    Static(std::sync::Arc<super::static_site::StaticSite>),
}

impl Validator {
    /// A redirect status among `allowed`; the default when absent.
    pub(super) fn redirect_code(
        &mut self,
        code: Option<&Spanned<u16>>,
        allowed: &[u16],
        default: u16,
    ) -> u16 {
        match code {
            None => default,
            Some(c) if allowed.contains(c.get_ref()) => *c.get_ref(),
            Some(c) => {
                let list: Vec<String> = allowed.iter().map(u16::to_string).collect();
                self.error(
                    c.span(),
                    format!(
                        "redirect code {} is not one of {}",
                        c.get_ref(),
                        list.join(", ")
                    ),
                );
                default
            }
        }
    }

    /// The route's target: a `service` or a `redirect`, exactly one. (Add a new kind of target
    /// here and in [`RouteTarget`].)
    pub(super) fn route_target(
        &mut self,
        at: std::ops::Range<usize>,
        service: Option<&Spanned<Text>>,
        redirect: Option<&Spanned<RawRedirect>>,
        static_files: Option<&Spanned<super::static_site::RawStatic>>,
        services: &[ServiceConfig],
    ) -> Option<RouteTarget> {
        // The second target given, in the order they are checked: where a "not two" error points.
        let second = [static_files.map(|s| s.span()), redirect.map(|r| r.span())]
            .into_iter()
            .flatten()
            .nth(usize::from(service.is_none()));
        if let Some(span) = second {
            self.error(
                span,
                "a route has one of `service`, `static` or `redirect`, not two",
            );
            return None;
        }
        match (service, redirect, static_files) {
            (Some(s), _, _) if !services.iter().any(|svc| svc.name == s.get_ref().0) => {
                self.error(
                    s.span(),
                    format!("route refers to unknown service \"{}\"", s.get_ref()),
                );
                None
            }
            (Some(s), _, _) => Some(RouteTarget::Service(s.get_ref().0.clone())),
            (None, Some(r), _) => self.route_redirect(r.get_ref()).map(RouteTarget::Redirect),
            (None, None, Some(s)) => self.static_site(s).map(RouteTarget::Static),
            (None, None, None) => {
                self.error(at, "route has no `service`, `static` or `redirect`");
                None
            }
        }
    }

    fn route_redirect(&mut self, r: &RawRedirect) -> Option<RedirectConfig> {
        let code = self.redirect_code(r.code.as_ref(), &ROUTE_CODES, DEFAULT_ROUTE_CODE);
        let text: &str = r.to.get_ref();
        let to = match Template::parse(text) {
            Ok(t) => t,
            Err(e @ TemplateError::UnknownVar(_)) => {
                self.error(r.to.span(), format!("redirect to: {e}"));
                return None;
            }
            Err(TemplateError::BadValue(_)) => {
                self.error(
                    r.to.span(),
                    format!("redirect to \"{text}\" is not a valid Location"),
                );
                return None;
            }
        };
        let starts_ok = ["http://", "https://", "/", "$"]
            .iter()
            .any(|p| text.starts_with(p));
        if !starts_ok || text.starts_with("//") {
            self.error(
                r.to.span(),
                format!(
                    "redirect to \"{text}\" must be an absolute URL (https://...), a path (/...) or start with a variable"
                ),
            );
            return None;
        }
        Some(RedirectConfig { to, code })
    }
}
