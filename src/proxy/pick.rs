//! The request path's decisions as plain functions: which pool (override, sticky, weights), which server, whether to shield.

use std::net::{IpAddr, SocketAddr};

use http::header;
use pingora::http::RequestHeader;

use crate::config::rollout::StickyKey;
use crate::snapshot::Snapshot;
use crate::upstream::{sticky_hash, Service};

/// The pool a request goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolChoice {
    pub pool: usize,
    /// A tester's override chose it (a forced request is never shielded).
    pub forced: bool,
    /// A sticky id to hand the client in a cookie (cookie name, id): it had none.
    pub new_cookie: Option<(String, String)>,
}

/// The request's pool: a tester's override, else the sticky assignment, else a weighted pick.
/// `None` only when every pool has weight 0.
pub fn choose_pool(
    service: &Service,
    req: &RequestHeader,
    client_ip: Option<IpAddr>,
) -> Option<PoolChoice> {
    if let Some(pool) = override_pool(service, req) {
        return Some(PoolChoice {
            pool,
            forced: true,
            new_cookie: None,
        });
    }
    let mut new_cookie = None;
    let hash = match &service.sticky {
        None => None,
        Some(StickyKey::ClientIp) => client_ip.map(|ip| match ip {
            IpAddr::V4(v4) => sticky_hash(&v4.octets()),
            IpAddr::V6(v6) => sticky_hash(&v6.octets()),
        }),
        Some(StickyKey::Header(name)) => req.headers.get(name).map(|v| sticky_hash(v.as_bytes())),
        Some(StickyKey::Cookie(name)) => Some(match cookie(req, name) {
            Some(id) if !id.is_empty() => sticky_hash(id.as_bytes()),
            _ => {
                let id = format!("{:032x}", fastrand::u128(..));
                let h = sticky_hash(id.as_bytes());
                new_cookie = Some((name.clone(), id));
                h
            }
        }),
    };
    let pool = match hash {
        Some(h) => service.pick_pool_by(h),
        None => service.pick_pool(),
    }?;
    Some(PoolChoice {
        pool,
        forced: false,
        new_cookie,
    })
}

/// The stable pool a request on `choice` falls back to once if it fails there: only while the
/// service's rollout shields its canary, only on the canary, only for a shielded method, and
/// never for a forced request.
pub fn shield_for(service: &Service, choice: &PoolChoice, method: &http::Method) -> Option<usize> {
    let shield = service.shield.as_ref()?;
    (!choice.forced && shield.canary == choice.pool && shield.methods.contains(method))
        .then_some(shield.stable)
}

/// A server for the request's try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerChoice {
    /// The pool it is in: another one than asked when the asked pool had no server at all.
    pub pool: usize,
    pub server: usize,
}

/// Picks a server of `pool` not in `tried`. On the first try (`tried` empty) a pool with no
/// server able to take traffic gives the request to another pool with weight above 0. When
/// every server able to take it was ejected by passive checks, those active checks find healthy
/// are tried again (nginx). `None`: no server at all.
pub fn pick_server(service: &Service, pool: usize, tried: &[SocketAddr]) -> Option<ServerChoice> {
    let mut pool = pool;
    let mut picked = service.pools[pool].pick(service.balance, tried);
    if picked.is_none() && tried.is_empty() {
        if let Some(other) = service.fallback_pool(pool) {
            pool = other;
            picked = service.pools[other].pick(service.balance, &[]);
        }
    }
    if picked.is_none() {
        picked = service.pools[pool].pick_ejected(tried);
    }
    picked.map(|server| ServerChoice { pool, server })
}

/// Whether a retry has somewhere to go: a server of `pool` not in `tried` that [`pick_server`]
/// would take on a retry (available, or ejected by passive checks but healthy).
pub fn has_untried(service: &Service, pool: usize, tried: &[SocketAddr]) -> bool {
    service.pools[pool]
        .servers
        .iter()
        .any(|s| s.state.is_healthy() && !tried.contains(&s.addr))
}

/// When pool `pool` of service `service` has no server because some of its server names have
/// no address yet: the 503's reason, naming them. `None` when every name has addresses (the
/// servers are down, not unknown).
pub fn unresolved(snap: &Snapshot, service: usize, pool: usize) -> Option<String> {
    let servers = &snap.config.services.get(service)?.pools.get(pool)?.servers;
    let names: Vec<String> = servers
        .iter()
        .filter(|s| {
            s.address
                .name()
                .is_some_and(|n| snap.addresses.of(n).is_empty())
        })
        .map(|s| format!("\"{}\"", s.address))
        .collect();
    (!names.is_empty()).then(|| {
        format!(
            "no upstream server available: server name {} has no address yet",
            names.join(", ")
        )
    })
}

/// The value of cookie `name` in the request's Cookie headers.
pub fn cookie<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a str> {
    req.headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

/// The pool a tester asked for with the service's override header or cookie (`POOL`, or
/// `POOL:SECRET` when a secret is configured); `None` when absent, wrong or unknown, or when the
/// pool has no server able to take the request.
pub fn override_pool(service: &Service, req: &RequestHeader) -> Option<usize> {
    let o = service.pool_override.as_ref()?;
    let from_header = o
        .header
        .as_ref()
        .and_then(|h| req.headers.get(h))
        .and_then(|v| v.to_str().ok());
    let value = from_header.or_else(|| o.cookie.as_deref().and_then(|c| cookie(req, c)))?;
    let pool = match &o.secret {
        Some(secret) => {
            let (pool, given) = value.rsplit_once(':')?;
            secret.matches(given.as_bytes()).then_some(pool)?
        }
        None => value,
    };
    let idx = service.pool_index(pool.trim())?;
    (service.available_servers(idx) > 0).then_some(idx)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::upstream::{ServerRegistry, Shield};

    /// Service "api" with pools blue (weight `blue`, two servers), green (weight `green`) and the
    /// given extra service settings.
    fn service(blue: u32, green: u32, extra: &str) -> Service {
        let text = format!(
            "[[listeners]]\nname = \"http\"\naddress = \"127.0.0.1:1\"\n\n\
             [[routes]]\nhost = \"*\"\nservice = \"api\"\n\n\
             [services.api]\n{extra}\n\
             [services.api.pools.blue]\nweight = {blue}\nservers = [\"127.0.0.1:2\", \"127.0.0.1:3\"]\n\n\
             [services.api.pools.green]\nweight = {green}\nservers = [\"127.0.0.1:4\"]\n"
        );
        let config = crate::config::parse(&text, Path::new("t.toml")).expect("valid config");
        Service::build(
            &config.services[0],
            &mut ServerRegistry::default(),
            &Default::default(),
        )
    }

    fn request(headers: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build("GET", b"/", None).expect("request");
        for (k, v) in headers {
            req.append_header(k.to_string(), *v).expect("header");
        }
        req
    }

    fn index(s: &Service, name: &str) -> usize {
        s.pool_index(name).expect("pool")
    }

    #[test]
    fn weights_decide_and_a_zero_weight_pool_is_never_chosen() {
        let s = service(1, 0, "");
        for _ in 0..200 {
            let choice = choose_pool(&s, &request(&[]), None).expect("a pool");
            assert_eq!(choice.pool, index(&s, "blue"));
            assert!(!choice.forced);
        }
    }

    #[test]
    fn the_override_header_forces_a_pool_even_at_weight_zero_and_needs_the_secret() {
        let s = service(
            1,
            0,
            "pool_override = { header = \"x-pool\", secret = \"s3cret\" }",
        );
        let green = index(&s, "green");
        let forced = choose_pool(&s, &request(&[("x-pool", "green:s3cret")]), None).expect("pool");
        assert_eq!((forced.pool, forced.forced), (green, true));
        for wrong in ["green", "green:nope", "purple:s3cret", ""] {
            let c = choose_pool(&s, &request(&[("x-pool", wrong)]), None).expect("pool");
            assert!(!c.forced, "{wrong:?} must not force a pool");
        }
    }

    #[test]
    fn the_override_cookie_works_without_a_secret() {
        let s = service(1, 0, "pool_override = { cookie = \"pool\" }");
        let c = choose_pool(&s, &request(&[("cookie", "a=1; pool=green")]), None).expect("pool");
        assert_eq!((c.pool, c.forced), (index(&s, "green"), true));
    }

    #[test]
    fn sticky_keys_give_a_client_the_same_pool_and_a_new_client_a_cookie() {
        let s = service(50, 50, "sticky = { key = \"header:x-user\" }");
        for user in ["alice", "bob", "carol", "dave"] {
            let first = choose_pool(&s, &request(&[("x-user", user)]), None).expect("pool");
            for _ in 0..20 {
                let again = choose_pool(&s, &request(&[("x-user", user)]), None).expect("pool");
                assert_eq!(again.pool, first.pool, "{user} moved");
            }
        }
        let s = service(50, 50, "sticky = { key = \"cookie\" }");
        let fresh = choose_pool(&s, &request(&[]), None).expect("pool");
        let (name, id) = fresh.new_cookie.clone().expect("a new client gets an id");
        let back =
            choose_pool(&s, &request(&[("cookie", &format!("{name}={id}"))]), None).expect("pool");
        assert_eq!((back.pool, back.new_cookie), (fresh.pool, None));
        let ip = Some(IpAddr::from([192, 0, 2, 7]));
        let s = service(50, 50, "sticky = { key = \"client_ip\" }");
        let by_ip = choose_pool(&s, &request(&[]), ip).expect("pool").pool;
        assert!((0..20).all(|_| choose_pool(&s, &request(&[]), ip).map(|c| c.pool) == Some(by_ip)));
    }

    #[test]
    fn only_unforced_canary_requests_with_a_shielded_method_are_shielded() {
        let mut s = service(90, 10, "");
        let (blue, green) = (index(&s, "blue"), index(&s, "green"));
        let on = |pool, forced| PoolChoice {
            pool,
            forced,
            new_cookie: None,
        };
        assert_eq!(
            shield_for(&s, &on(green, false), &http::Method::GET),
            None,
            "no rollout"
        );
        s.shield = Some(Shield {
            canary: green,
            stable: blue,
            methods: vec![http::Method::GET, http::Method::HEAD],
        });
        assert_eq!(
            shield_for(&s, &on(green, false), &http::Method::GET),
            Some(blue)
        );
        assert_eq!(shield_for(&s, &on(green, false), &http::Method::POST), None);
        assert_eq!(shield_for(&s, &on(green, true), &http::Method::GET), None);
        assert_eq!(shield_for(&s, &on(blue, false), &http::Method::GET), None);
    }

    #[test]
    fn servers_already_tried_are_skipped_and_an_empty_pool_falls_back_on_the_first_try() {
        let s = service(1, 1, "");
        let blue = index(&s, "blue");
        let first = pick_server(&s, blue, &[]).expect("a server");
        let tried = [s.pools[blue].servers[first.server].addr];
        let second = pick_server(&s, blue, &tried).expect("the other server");
        assert_eq!(second.pool, blue);
        assert_ne!(second.server, first.server);
        let both = [s.pools[blue].servers[0].addr, s.pools[blue].servers[1].addr];
        assert_eq!(
            pick_server(&s, blue, &both),
            None,
            "a retry stays in its pool"
        );

        let s = service(1, 1, "");
        let (blue, green) = (index(&s, "blue"), index(&s, "green"));
        for server in &s.pools[blue].servers {
            server.state.set_healthy(false);
        }
        let moved = pick_server(&s, blue, &[]).expect("green takes it");
        assert_eq!(moved.pool, green);
    }

    #[test]
    fn a_retry_has_somewhere_to_go_while_an_untried_server_is_healthy() {
        let s = service(1, 1, "");
        let blue = index(&s, "blue");
        let [a, b] = [&s.pools[blue].servers[0], &s.pools[blue].servers[1]];
        assert!(has_untried(&s, blue, &[a.addr]));
        assert!(!has_untried(&s, blue, &[a.addr, b.addr]));
        b.state.eject(&s.passive);
        assert!(has_untried(&s, blue, &[a.addr]), "ejected but healthy");
        b.state.set_healthy(false);
        assert!(!has_untried(&s, blue, &[a.addr]), "down by active checks");
    }
}
