//! Which network addresses outbound requests may reach.
//!
//! Plugins (through `wasi:http`) and, later, outgoing webhooks resolve a host
//! name, check every resolved address with [`NetGuard::check`], and connect to
//! a checked address, so DNS rebinding has no window. Loopback, private,
//! link-local (cloud metadata at 169.254.169.254), CGNAT, unique-local,
//! multicast, IPv4-mapped/compatible IPv6 of those and other reserved ranges
//! are refused unless the operator allows a CIDR explicitly.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// Why an address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("address {addr} is in a blocked range ({range})")]
pub struct Blocked {
    /// The refused address.
    pub addr: IpAddr,
    /// Which range it falls in.
    pub range: &'static str,
}

/// The address policy: blocked special-purpose ranges, minus operator exceptions.
#[derive(Debug, Clone, Default)]
pub struct NetGuard {
    allow: Vec<IpNet>,
}

impl NetGuard {
    /// A guard that allows the given CIDRs even if they are in blocked ranges.
    pub fn new(allow: Vec<IpNet>) -> Self {
        NetGuard { allow }
    }

    /// Parse a comma-separated CIDR list (`127.0.0.0/8,::1/128`); a bare
    /// address means a single host.
    pub fn parse_cidrs(list: &str) -> Result<Vec<IpNet>, String> {
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("invalid CIDR `{s}`"))
            })
            .collect()
    }

    /// The operator's exceptions.
    pub fn allowed(&self) -> &[IpNet] {
        &self.allow
    }

    /// Whether `addr` may be connected to.
    pub fn check(&self, addr: IpAddr) -> Result<(), Blocked> {
        // An IPv4-mapped address is allowed when its IPv4 form is.
        let mapped = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        if self
            .allow
            .iter()
            .any(|net| net.contains(&addr) || mapped.is_some_and(|m| net.contains(&m)))
        {
            return Ok(());
        }
        match blocked_range(addr) {
            Some(range) => Err(Blocked { addr, range }),
            None => Ok(()),
        }
    }
}

/// The special-purpose range `addr` belongs to, if any.
pub fn blocked_range(addr: IpAddr) -> Option<&'static str> {
    match addr {
        IpAddr::V4(v4) => blocked_v4(v4),
        IpAddr::V6(v6) => blocked_v6(v6),
    }
}

fn blocked_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    Some(match o {
        [0, ..] => "0.0.0.0/8 (this network)",
        [10, ..] => "10.0.0.0/8 (private)",
        [100, b, ..] if (64..128).contains(&b) => "100.64.0.0/10 (CGNAT)",
        [127, ..] => "127.0.0.0/8 (loopback)",
        [169, 254, ..] => "169.254.0.0/16 (link-local, cloud metadata)",
        [172, b, ..] if (16..32).contains(&b) => "172.16.0.0/12 (private)",
        [192, 0, 0, _] => "192.0.0.0/24 (IETF protocol assignments)",
        [192, 0, 2, _] => "192.0.2.0/24 (documentation)",
        [192, 88, 99, _] => "192.88.99.0/24 (6to4 relay)",
        [192, 168, ..] => "192.168.0.0/16 (private)",
        [198, b, ..] if b == 18 || b == 19 => "198.18.0.0/15 (benchmarking)",
        [198, 51, 100, _] => "198.51.100.0/24 (documentation)",
        [203, 0, 113, _] => "203.0.113.0/24 (documentation)",
        [a, ..] if (224..240).contains(&a) => "224.0.0.0/4 (multicast)",
        [a, ..] if a >= 240 => "240.0.0.0/4 (reserved, broadcast)",
        _ => return None,
    })
}

fn blocked_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if ip.is_unspecified() {
        return Some("::/128 (unspecified)");
    }
    if ip.is_loopback() {
        return Some("::1/128 (loopback)");
    }
    // IPv4-mapped (::ffff:a.b.c.d) and IPv4-compatible (::a.b.c.d): judge the
    // embedded IPv4 address, and refuse the mapped form of anything blocked.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return blocked_v4(v4).map(|_| "::ffff:0:0/96 (IPv4-mapped blocked address)");
    }
    let s = ip.segments();
    if s[..6] == [0, 0, 0, 0, 0, 0] {
        return Some("::/96 (IPv4-compatible, deprecated)");
    }
    if s[..5] == [0, 0, 0, 0, 0xffff] {
        return Some("::ffff:0:0:0/96 (IPv4-translated)");
    }
    Some(match s[0] {
        0x0064 if s[1] == 0xff9b => "64:ff9b::/32 (NAT64, incl. local-use 64:ff9b:1::/48)",
        0x0100 if s[1..4] == [0, 0, 0] => "100::/64 (discard)",
        0x2001 if s[1] < 0x0200 => "2001::/23 (IETF protocol assignments, Teredo)",
        0x2001 if s[1] == 0x0db8 => "2001:db8::/32 (documentation)",
        0x2002 => "2002::/16 (6to4)",
        x if x & 0xfe00 == 0xfc00 => "fc00::/7 (unique local)",
        x if x & 0xffc0 == 0xfe80 => "fe80::/10 (link-local)",
        x if x & 0xffc0 == 0xfec0 => "fec0::/10 (site-local, deprecated)",
        x if x & 0xff00 == 0xff00 => "ff00::/8 (multicast)",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_special_ranges_and_allows_public() {
        let g = NetGuard::default();
        for bad in [
            "127.0.0.1",
            "10.0.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "192.168.1.1",
            "172.16.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "fd00::1",
            "fe80::1",
            "ff02::1",
            "64:ff9b::a00:1",
            "::ffff:0:7f00:1",
        ] {
            let ip: IpAddr = bad.parse().unwrap();
            assert!(g.check(ip).is_err(), "{bad} should be blocked");
        }
        for good in [
            "1.1.1.1",
            "93.184.216.34",
            "2606:4700::1111",
            "::ffff:1.1.1.1",
        ] {
            let ip: IpAddr = good.parse().unwrap();
            assert!(g.check(ip).is_ok(), "{good} should be allowed");
        }
    }

    #[test]
    fn operator_exceptions_open_a_range() {
        let g = NetGuard::new(NetGuard::parse_cidrs("127.0.0.0/8, ::1").unwrap());
        assert!(g.check("127.0.0.1".parse().unwrap()).is_ok());
        assert!(g.check("::1".parse().unwrap()).is_ok());
        assert!(g.check("10.0.0.1".parse().unwrap()).is_err());
        // The IPv4-mapped form of an allowed address is allowed too.
        assert!(g.check("::ffff:127.0.0.1".parse().unwrap()).is_ok());
        assert!(g.check("::ffff:10.0.0.1".parse().unwrap()).is_err());
        assert!(NetGuard::parse_cidrs("nonsense").is_err());
    }
}
