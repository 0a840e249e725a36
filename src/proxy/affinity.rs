//! Server affinity on the request path: the server a client's cookie names inside the pool the pool choice gave, and the cookie naming the server that answered.
//!
//! The pool is chosen first, as without affinity (override, sticky assignment, weights): affinity
//! only picks the server inside it. A cookie naming a server that is down (unhealthy, ejected) or
//! gone, or one of another pool, gets a server picked as usual; the answer's cookie then names
//! the server that answered, so the client stays there.

use std::net::SocketAddr;

use pingora::http::RequestHeader;

use super::pick::{self, ServerChoice};
use super::Ctx;
use crate::upstream::Service;

/// The server for the request's try: on the first try the server of `pool` its affinity cookie
/// names, while that server can take requests; otherwise (and on retries) [`pick::pick_server`].
pub fn pick_server(
    service: &Service,
    pool: usize,
    tried: &[SocketAddr],
    req: &RequestHeader,
) -> Option<ServerChoice> {
    let claimed = tried
        .is_empty()
        .then(|| claimed(service, pool, req))
        .flatten();
    match claimed {
        Some(server) => Some(ServerChoice { pool, server }),
        None => pick::pick_server(service, pool, tried),
    }
}

/// The server of `pool` the request's cookie names, if it can take requests now: available,
/// and a backup only while no other server of the pool is (as [`crate::upstream::Pool::pick`]
/// would have it). A client on a server that is not a backup stays there whatever the backups do.
fn claimed(service: &Service, pool: usize, req: &RequestHeader) -> Option<usize> {
    let affinity = service.affinity.as_ref()?;
    let server = affinity.find(pool, pick::cookie(req, &affinity.cookie)?)?;
    let servers = &service.pools[pool].servers;
    let s = &servers[server];
    let usable = s.state.is_available()
        && (!s.backup || !servers.iter().any(|o| !o.backup && o.state.is_available()));
    usable.then_some(server)
}

/// The `Set-Cookie` value naming `server` of `pool` (the one that answered), unless the
/// request's cookie names it already. HttpOnly, SameSite=Lax, Secure on TLS listeners.
pub fn set_cookie(
    service: &Service,
    pool: usize,
    server: usize,
    req: &RequestHeader,
    tls: bool,
) -> Option<String> {
    let affinity = service.affinity.as_ref()?;
    let value = affinity.value(pool, server);
    if pick::cookie(req, &affinity.cookie) == Some(value) {
        return None;
    }
    let secure = if tls { "; Secure" } else { "" };
    Some(format!(
        "{}={value}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax{secure}",
        affinity.cookie,
        affinity.ttl.as_secs()
    ))
}

/// The `Set-Cookie` value for the answer of the server this request used, when its service has
/// affinity and the request's cookie names another server.
pub(super) fn answer_cookie(req: &RequestHeader, ctx: &Ctx) -> Option<String> {
    let (_, service) = ctx.service()?;
    set_cookie(service, ctx.pool?, ctx.server?, req, ctx.tls)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::upstream::ServerRegistry;

    /// Service "api" with affinity (cookie "srv"), pool blue (weight 1) with three servers and
    /// pool green (weight 0) with one.
    fn service() -> Service {
        service_with("servers = [\"127.0.0.1:2\", \"127.0.0.1:3\", \"127.0.0.1:4\"]")
    }

    /// [`service`] with pool blue's `servers = ...` line given.
    fn service_with(blue_servers: &str) -> Service {
        let text = format!(
            "[[listeners]]\nname = \"http\"\naddress = \"127.0.0.1:1\"\n\n\
             [[routes]]\nhost = \"*\"\nservice = \"api\"\n\n\
             [services.api]\naffinity = {{ cookie = \"srv\", ttl = \"1h\" }}\n\n\
             [services.api.pools.blue]\nweight = 1\n{blue_servers}\n\n\
             [services.api.pools.green]\nweight = 0\nservers = [\"127.0.0.1:5\"]\n"
        );
        let config = crate::config::parse(&text, Path::new("t.toml")).expect("valid config");
        Service::build(
            &config.services[0],
            &mut ServerRegistry::default(),
            &Default::default(),
        )
    }

    fn request(cookie: Option<&str>) -> RequestHeader {
        let mut req = RequestHeader::build("GET", b"/", None).expect("request");
        if let Some(c) = cookie {
            req.append_header("cookie", format!("a=1; {c}"))
                .expect("header");
        }
        req
    }

    /// The cookie header value (`srv=...`) from a Set-Cookie line.
    fn pair(set_cookie: &str) -> &str {
        set_cookie.split(';').next().expect("a pair")
    }

    #[test]
    fn a_client_stays_on_its_server_and_moves_once_when_it_is_down() {
        let s = service();
        let blue = s.pool_index("blue").expect("blue");
        let first = pick_server(&s, blue, &[], &request(None)).expect("a server");
        let set = set_cookie(&s, blue, first.server, &request(None), false).expect("a cookie");
        assert_eq!(
            set,
            format!(
                "{}; Path=/; Max-Age=3600; HttpOnly; SameSite=Lax",
                pair(&set)
            )
        );
        assert!(!set.contains("127.0.0.1"));
        let with = request(Some(pair(&set)));
        for _ in 0..20 {
            assert_eq!(pick_server(&s, blue, &[], &with), Some(first));
        }
        assert_eq!(
            set_cookie(&s, blue, first.server, &with, false),
            None,
            "unchanged"
        );

        // Its server goes down: another one, and the cookie names that one from then on.
        s.pools[blue].servers[first.server].state.set_healthy(false);
        let moved = pick_server(&s, blue, &[], &with).expect("another server");
        assert_ne!(moved.server, first.server);
        let set = set_cookie(&s, blue, moved.server, &with, true).expect("rewritten");
        assert!(set.ends_with("; Secure"), "{set}");
        let with = request(Some(pair(&set)));
        for _ in 0..20 {
            assert_eq!(pick_server(&s, blue, &[], &with), Some(moved));
        }
        // A retry never goes back to a server already tried.
        let tried = [s.pools[blue].servers[moved.server].addr];
        let retry = pick_server(&s, blue, &tried, &with).expect("a retry");
        assert_ne!(retry.server, moved.server);
    }

    #[test]
    fn a_backup_keeps_its_clients_only_while_every_other_server_is_down() {
        let s = service_with(
            "servers = [\"127.0.0.1:2\", { address = \"127.0.0.1:3\", backup = true }]",
        );
        let pool = s.pool_index("blue").expect("blue");
        let [primary, backup] = [&s.pools[pool].servers[0], &s.pools[pool].servers[1]];
        assert!(backup.backup && !primary.backup);
        let on = |server: usize| {
            let set = set_cookie(&s, pool, server, &request(None), false).expect("cookie");
            request(Some(pair(&set)))
        };
        assert_eq!(claimed(&s, pool, &on(0)), Some(0));
        assert_eq!(claimed(&s, pool, &on(1)), None, "the primary is up");
        primary.state.set_healthy(false);
        assert_eq!(claimed(&s, pool, &on(1)), Some(1), "every primary is down");
        assert_eq!(
            pick_server(&s, pool, &[], &on(0)).map(|c| c.server),
            Some(1)
        );
        primary.state.set_healthy(true);
        assert_eq!(claimed(&s, pool, &on(1)), None, "back to the primary");
        assert_eq!(claimed(&s, pool, &on(0)), Some(0));
    }

    #[test]
    fn a_cookie_of_another_pool_or_a_forged_one_is_ignored() {
        let s = service();
        let (blue, green) = (
            s.pool_index("blue").expect("blue"),
            s.pool_index("green").expect("green"),
        );
        let green_cookie = set_cookie(&s, green, 0, &request(None), false).expect("cookie");
        let with = request(Some(pair(&green_cookie)));
        assert_eq!(claimed(&s, blue, &with), None);
        assert_eq!(claimed(&s, green, &with), Some(0));
        assert_eq!(claimed(&s, blue, &request(Some("srv=127.0.0.1:2"))), None);
        assert_eq!(claimed(&s, blue, &request(Some("srv="))), None);
    }
}
