//! The addresses server names resolved to: what the resolver service publishes and snapshots compile from.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

/// What is known about one name: its last good addresses (kept through later failures) and how
/// its last lookup went.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NameState {
    /// Sorted and without duplicates, so that a reordered answer is no change.
    pub addrs: Arc<[IpAddr]>,
    /// When `addrs` was last confirmed by an answer.
    pub resolved_at: Option<SystemTime>,
    /// Why the last lookup failed; `None` after a good answer.
    pub error: Option<String>,
}

/// Every server name's state, by name (lower case, as the config holds it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Addresses {
    names: HashMap<Arc<str>, NameState>,
}

/// What a lookup gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// At least one address.
    Found(Vec<IpAddr>),
    /// No address, or no answer: the reason (NXDOMAIN, no records, SERVFAIL, timeout ...).
    Failed(String),
}

impl Addresses {
    /// The addresses of `name` (empty when it never resolved).
    pub fn of(&self, name: &str) -> &[IpAddr] {
        self.names.get(name).map_or(&[], |s| &s.addrs)
    }

    pub fn get(&self, name: &str) -> Option<&NameState> {
        self.names.get(name)
    }

    /// Whether [`Addresses::apply`] of `answer` to `name` would change what a snapshot shows.
    pub fn changes(&self, name: &str, answer: &Answer) -> bool {
        let state = self.names.get(name);
        match answer {
            Answer::Found(addrs) => {
                let mut addrs = addrs.clone();
                addrs.sort();
                addrs.dedup();
                state.is_none_or(|s| *s.addrs != *addrs || s.error.is_some())
            }
            Answer::Failed(_) => state.is_none_or(|s| s.error.is_none()),
        }
    }

    /// Applies one lookup's answer to `name`. A failure keeps the last good addresses and only
    /// notes the error. Returns whether anything a snapshot shows changed: the addresses, or
    /// the name going from good to failing or back (not the time of a repeated equal answer).
    pub fn apply(&mut self, name: &Arc<str>, answer: Answer, now: SystemTime) -> bool {
        let state = self.names.entry(name.clone()).or_default();
        match answer {
            Answer::Found(mut addrs) => {
                addrs.sort();
                addrs.dedup();
                let changed = *state.addrs != *addrs || state.error.is_some();
                if *state.addrs != *addrs {
                    state.addrs = addrs.into();
                }
                state.error = None;
                state.resolved_at = Some(now);
                changed
            }
            Answer::Failed(why) => {
                let changed = state.error.is_none();
                state.error = Some(why);
                changed
            }
        }
    }

    /// Forgets names no longer in the config; returns whether any was dropped.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) -> bool {
        let before = self.names.len();
        self.names.retain(|n, _| keep(n));
        self.names.len() != before
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &NameState)> {
        self.names.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn failures_keep_the_last_good_addresses_and_reorders_are_no_change() {
        let mut a = Addresses::default();
        let name: Arc<str> = "api".into();
        let t = SystemTime::now();
        assert!(a.apply(
            &name,
            Answer::Found(vec![ip("10.0.0.2"), ip("10.0.0.1")]),
            t
        ));
        assert_eq!(a.of("api"), &[ip("10.0.0.1"), ip("10.0.0.2")]);
        assert!(
            !a.apply(
                &name,
                Answer::Found(vec![ip("10.0.0.1"), ip("10.0.0.2")]),
                t
            ),
            "the same set in another order changes nothing"
        );
        assert!(a.apply(&name, Answer::Failed("NXDOMAIN".into()), t));
        assert_eq!(a.of("api"), &[ip("10.0.0.1"), ip("10.0.0.2")], "kept");
        assert_eq!(
            a.get("api").and_then(|s| s.error.as_deref()),
            Some("NXDOMAIN")
        );
        assert!(!a.changes(&name, &Answer::Failed("SERVFAIL".into())));
        assert!(
            !a.apply(&name, Answer::Failed("SERVFAIL".into()), t),
            "still failing: nothing to publish"
        );
        assert!(a.apply(
            &name,
            Answer::Found(vec![ip("10.0.0.1"), ip("10.0.0.2")]),
            t
        ));
        assert_eq!(a.get("api").and_then(|s| s.error.as_deref()), None);
        assert!(a.retain(|n| n != "api"));
        assert!(a.of("api").is_empty());
    }
}
