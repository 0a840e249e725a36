//! Per-service caps on idle upstream connections (nginx `keepalive N`), kept by service name across snapshots so a reload does not reset their counts.
//!
//! pingora's connector has one process-wide pool (`upstream_keepalive_pool_size`, LRU); vendor
//! patch 15 lets peers carry a shared [`IdleLimit`]: an HTTP/1 connection released while the
//! service already keeps `keepalive` idle ones is closed instead of pooled. The global pool
//! still bounds the total ([`global_pool_size`] sizes it at start from the configured caps).

use std::collections::HashMap;
use std::sync::Arc;

use pingora_core::upstreams::peer::IdleLimit;

use crate::config::ServiceConfig;

/// pingora's own per-thread default for `upstream_keepalive_pool_size`.
const PINGORA_POOL_SIZE: usize = 128;

/// The caps by service name; owned by the runtime's writer, used only when compiling a snapshot.
#[derive(Debug, Default)]
pub struct IdleLimits {
    by_service: HashMap<String, Arc<IdleLimit>>,
}

impl IdleLimits {
    /// The cap of every service, by the services' order; `None` for a service without
    /// `keepalive`. A service keeps its cap (and its count) while `keepalive` stays the same.
    pub fn compile(&mut self, services: &[ServiceConfig]) -> Vec<Option<Arc<IdleLimit>>> {
        let mut next = HashMap::new();
        let limits = services
            .iter()
            .map(|s| {
                let max = s.upstream.keepalive?;
                let limit = self
                    .by_service
                    .get(&s.name)
                    .filter(|l| l.max() == max)
                    .cloned()
                    .unwrap_or_else(|| IdleLimit::new(max));
                next.insert(s.name.clone(), limit.clone());
                Some(limit)
            })
            .collect();
        self.by_service = next;
        limits
    }
}

/// pingora's `upstream_keepalive_pool_size` (per worker thread; the pool holds that times
/// `threads`): its default, or more when the services' `keepalive` caps add up to more. Read
/// at start only: a reload that raises the caps above it is bounded by it.
pub fn global_pool_size(services: &[ServiceConfig], threads: usize) -> usize {
    let sum: usize = services.iter().filter_map(|s| s.upstream.keepalive).sum();
    PINGORA_POOL_SIZE.max(sum.div_ceil(threads.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(name: &str, keepalive: Option<usize>) -> ServiceConfig {
        let text = format!(
            "[[listeners]]\nname = \"h\"\naddress = \"127.0.0.1:1\"\n\
             [services.{name}.pools.p]\nservers = [\"127.0.0.1:2\"]\n{}",
            keepalive.map_or(String::new(), |k| format!(
                "[services.{name}.upstream]\nkeepalive = {k}\n"
            ))
        );
        let config = crate::config::parse_without_lookups(&text, std::path::Path::new("t.toml"))
            .expect("config");
        config.services[0].clone()
    }

    #[test]
    fn caps_survive_a_recompile_while_unchanged() {
        let mut limits = IdleLimits::default();
        let a = limits.compile(&[service("a", Some(4)), service("b", None)]);
        assert_eq!(a[0].as_ref().map(|l| l.max()), Some(4));
        assert!(a[1].is_none());
        let again = limits.compile(&[service("a", Some(4))]);
        assert!(Arc::ptr_eq(
            a[0].as_ref().expect("cap"),
            again[0].as_ref().expect("cap")
        ));
        let changed = limits.compile(&[service("a", Some(8))]);
        assert_eq!(changed[0].as_ref().map(|l| l.max()), Some(8));
    }

    #[test]
    fn the_global_pool_grows_with_the_caps() {
        assert_eq!(global_pool_size(&[service("a", None)], 4), 128);
        assert_eq!(global_pool_size(&[service("a", Some(1000))], 4), 250);
    }
}
