//! The real client IP: X-Forwarded-For is believed only when the peer is a configured trusted proxy.

use std::net::IpAddr;

/// An IP network such as `10.0.0.0/8` or `2001:db8::/32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// `"10.0.0.0/8"`, `"192.0.2.7"` (a single address), `"2001:db8::/32"`.
    pub fn parse(s: &str) -> Result<IpNet, String> {
        let bad = || {
            format!("invalid network \"{s}\" (expected e.g. \"10.0.0.0/8\" or \"2001:db8::/32\")")
        };
        let (ip, prefix) = match s.trim().split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = ip.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(IpNet { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for IpNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`) count as the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The networks whose X-Forwarded-For is believed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct TrustedProxies(pub Vec<IpNet>);

impl TrustedProxies {
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(ip))
    }

    /// The client's address: the peer itself unless it is trusted; then X-Forwarded-For read from
    /// the right, skipping trusted hops (nginx's `real_ip_recursive on`). A malformed entry stops
    /// the walk at the last address that could be believed.
    pub fn client_ip(&self, peer: IpAddr, forwarded_for: Option<&str>) -> IpAddr {
        if self.0.is_empty() || !self.contains(peer) {
            return peer;
        }
        let Some(xff) = forwarded_for else {
            return peer;
        };
        let mut client = peer;
        for part in xff.rsplit(',') {
            let Ok(ip) = part.trim().parse::<IpAddr>() else {
                break;
            };
            client = ip;
            if !self.contains(ip) {
                break;
            }
        }
        client
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn networks() {
        let n = IpNet::parse("10.0.0.0/8").expect("net");
        assert!(n.contains(ip("10.1.2.3")));
        assert!(n.contains(ip("::ffff:10.1.2.3")));
        assert!(!n.contains(ip("11.0.0.1")));
        let h = IpNet::parse("192.0.2.7").expect("host");
        assert!(h.contains(ip("192.0.2.7")) && !h.contains(ip("192.0.2.8")));
        let v6 = IpNet::parse("2001:db8::/32").expect("v6");
        assert!(v6.contains(ip("2001:db8:1::1")) && !v6.contains(ip("2001:db9::1")));
        assert!(IpNet::parse("0.0.0.0/0")
            .expect("all")
            .contains(ip("8.8.8.8")));
        assert!(IpNet::parse("10.0.0.0/33").is_err());
        assert!(IpNet::parse("nonsense").is_err());
    }

    #[test]
    fn believes_forwarded_for_only_from_trusted_peers() {
        let t = TrustedProxies(vec![IpNet::parse("10.0.0.0/8").expect("net")]);
        let spoof = Some("6.6.6.6");
        assert_eq!(t.client_ip(ip("203.0.113.9"), spoof), ip("203.0.113.9"));
        assert_eq!(
            t.client_ip(ip("10.0.0.5"), Some("198.51.100.1")),
            ip("198.51.100.1")
        );
        // A client-supplied entry left of the real one is ignored: the walk stops at the first untrusted hop.
        assert_eq!(
            t.client_ip(ip("10.0.0.5"), Some("6.6.6.6, 198.51.100.1, 10.0.0.9")),
            ip("198.51.100.1")
        );
        assert_eq!(
            t.client_ip(ip("10.0.0.5"), Some("junk, 10.0.0.7")),
            ip("10.0.0.7")
        );
        assert_eq!(t.client_ip(ip("10.0.0.5"), None), ip("10.0.0.5"));
        assert_eq!(
            TrustedProxies::default().client_ip(ip("10.0.0.5"), spoof),
            ip("10.0.0.5")
        );
    }
}
