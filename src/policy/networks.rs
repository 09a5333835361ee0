//! Address rules: which IP addresses an upstream connection may go to.
//!
//! An agent steered by what it reads can ask for `http://169.254.169.254/` (the cloud
//! metadata service, which hands out the machine's credentials) or for a name that resolves
//! there. So every address a connection would use is checked here, after resolution: named
//! classes (`metadata`, `link_local`, `loopback`, `private`) and CIDRs, denied or allowed.
//!
//! The most specific rule wins, as in a routing table: `allow 10.1.0.0/16` opens a hole in
//! `deny private`, while `allow private` does not open `deny metadata` (Alibaba's
//! 100.100.100.200 is inside CGNAT, but the metadata rule names the address itself). On a
//! tie the allow wins, since it was written to make an exception.
//!
//! IPv6 addresses that carry an IPv4 address (IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible
//! `::a.b.c.d`, NAT64 `64:ff9b::/96` and `64:ff9b:1::/48`, 6to4 `2002::/16`) are also judged
//! by that IPv4 address, so `::ffff:169.254.169.254` is as denied as `169.254.169.254`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A named set of addresses that `deny_networks` and `allow_networks` may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NetClass {
    /// Cloud metadata and credential endpoints (AWS, GCP, Azure, Alibaba, Oracle, Tencent...).
    Metadata,
    /// 169.254.0.0/16 and fe80::/10: addresses that only mean something on one link.
    LinkLocal,
    /// This machine: 127.0.0.0/8, ::1, and the unspecified 0.0.0.0/8 and ::, which Linux
    /// connects to the local host.
    Loopback,
    /// RFC 1918 (10/8, 172.16/12, 192.168/16), CGNAT (100.64/10) and ULA (fc00::/7).
    Private,
}

/// Every class, in the order they are listed to users.
pub const CLASSES: [NetClass; 4] = [NetClass::Metadata, NetClass::LinkLocal, NetClass::Loopback, NetClass::Private];

/// Classes denied whatever the config says, unless `allow_networks` opens them.
pub const ALWAYS_DENIED: [NetClass; 2] = [NetClass::Metadata, NetClass::LinkLocal];

const METADATA: &[Cidr] = &[
    Cidr::v4([169, 254, 169, 254], 32), // AWS, GCP, Azure, OpenStack, Oracle, DigitalOcean...
    Cidr::v4([169, 254, 170, 2], 32),   // AWS ECS task credentials
    Cidr::v4([169, 254, 170, 23], 32),  // AWS EKS Pod Identity agent
    Cidr::v4([169, 254, 0, 23], 32),    // Tencent Cloud
    Cidr::v4([100, 100, 100, 200], 32), // Alibaba Cloud
    Cidr::v4([192, 0, 0, 192], 32),     // Oracle Cloud
    Cidr::v4([168, 63, 129, 16], 32),   // Azure WireServer
    Cidr::v6([0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x254], 128), // AWS IMDS over IPv6
    Cidr::v6([0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x23], 128), // AWS EKS Pod Identity over IPv6
    Cidr::v6([0xfd20, 0x00ce, 0, 0, 0, 0, 0, 0x254], 128), // GCP metadata over IPv6
];
const LINK_LOCAL: &[Cidr] = &[Cidr::v4([169, 254, 0, 0], 16), Cidr::v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10)];
const LOOPBACK: &[Cidr] = &[
    Cidr::v4([127, 0, 0, 0], 8),
    Cidr::v4([0, 0, 0, 0], 8),
    Cidr::v6([0, 0, 0, 0, 0, 0, 0, 1], 128),
    Cidr::v6([0, 0, 0, 0, 0, 0, 0, 0], 128),
];
const PRIVATE: &[Cidr] = &[
    Cidr::v4([10, 0, 0, 0], 8),
    Cidr::v4([172, 16, 0, 0], 12),
    Cidr::v4([192, 168, 0, 0], 16),
    Cidr::v4([100, 64, 0, 0], 10),
    Cidr::v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),
];

impl NetClass {
    /// The name written in the config.
    pub fn name(self) -> &'static str {
        match self {
            NetClass::Metadata => "metadata",
            NetClass::LinkLocal => "link_local",
            NetClass::Loopback => "loopback",
            NetClass::Private => "private",
        }
    }

    pub fn parse(name: &str) -> Option<NetClass> {
        CLASSES.into_iter().find(|c| c.name() == name)
    }

    /// The address ranges the class stands for.
    pub fn ranges(self) -> &'static [Cidr] {
        match self {
            NetClass::Metadata => METADATA,
            NetClass::LinkLocal => LINK_LOCAL,
            NetClass::Loopback => LOOPBACK,
            NetClass::Private => PRIVATE,
        }
    }
}

/// An address range: an address with the number of leading bits that must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    const fn v4(octets: [u8; 4], prefix: u8) -> Cidr {
        Cidr { addr: IpAddr::V4(Ipv4Addr::new(octets[0], octets[1], octets[2], octets[3])), prefix }
    }

    const fn v6(s: [u16; 8], prefix: u8) -> Cidr {
        Cidr { addr: IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7])), prefix }
    }

    /// Parses `10.0.0.0/8`, `fd00::/8`, or a bare address (a range of one). Bits set past
    /// the prefix are refused: `10.1.2.3/8` is more likely a typo than a wish for 10/8.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| format!("{text:?} is neither a network class nor an address or CIDR"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max && p.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => return Err(format!("{text:?}: the prefix length must be 0 to {max}")),
            },
        };
        let cidr = Cidr { addr, prefix };
        if cidr.network() != addr {
            return Err(format!("{text:?} has bits set past its /{prefix}; did you mean {}/{prefix}?", cidr.network()));
        }
        Ok(cidr)
    }

    /// Leading bits that must match; longer is more specific.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The first address of the range.
    pub fn first(&self) -> IpAddr {
        self.network()
    }

    fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask32(self.prefix))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask128(self.prefix))),
        }
    }

    /// Whether `ip` is inside the range (an IPv4 range never holds an IPv6 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => (u32::from(ip) ^ u32::from(net)) & mask32(self.prefix) == 0,
            (IpAddr::V6(net), IpAddr::V6(ip)) => (u128::from(ip) ^ u128::from(net)) & mask128(self.prefix) == 0,
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn mask32(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix.min(32))).unwrap_or(0)
}

fn mask128(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix.min(128))).unwrap_or(0)
}

/// One entry of `deny_networks` or `allow_networks`: a class or a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NetSpec {
    Class(NetClass),
    Range(Cidr),
}

impl NetSpec {
    /// Parses a class name (`metadata`), an address or a CIDR.
    pub fn parse(text: &str) -> Result<NetSpec, String> {
        if let Some(class) = NetClass::parse(text) {
            return Ok(NetSpec::Class(class));
        }
        Cidr::parse(text).map(NetSpec::Range).map_err(|e| {
            let classes: Vec<&str> = CLASSES.iter().map(|c| c.name()).collect();
            format!("{e} (classes: {})", classes.join(", "))
        })
    }

    /// The most specific range of this entry that holds `ip`, as its prefix length.
    fn best_match(&self, ip: IpAddr) -> Option<u8> {
        match self {
            NetSpec::Range(cidr) => cidr.contains(ip).then_some(cidr.prefix),
            NetSpec::Class(class) => class.ranges().iter().filter(|c| c.contains(ip)).map(|c| c.prefix).max(),
        }
    }
}

impl fmt::Display for NetSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetSpec::Class(c) => f.write_str(c.name()),
            NetSpec::Range(r) => r.fmt(f),
        }
    }
}

/// Denied and allowed networks, checked against every address a connection would use.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct NetworkRules {
    deny: Vec<NetSpec>,
    allow: Vec<NetSpec>,
}

/// Why an address may not be connected to. Shown to the client; it names no secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    pub address: IpAddr,
    /// The IPv4 address an IPv6 address carries, when that is what was denied.
    pub embedded: Option<Ipv4Addr>,
    /// The deny entry that matched.
    pub rule: NetSpec,
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.embedded {
            Some(v4) => write!(f, "{} (which carries {v4}) is in {}", self.address, self.rule),
            None => write!(f, "{} is in {}", self.address, self.rule),
        }
    }
}

impl NetworkRules {
    /// Rules denying the always-denied classes plus `deny`, with `allow` as exceptions.
    pub fn new(deny: &[NetSpec], allow: &[NetSpec]) -> NetworkRules {
        let mut rules = NetworkRules::default();
        for spec in ALWAYS_DENIED.iter().map(|c| NetSpec::Class(*c)).chain(deny.iter().copied()) {
            if !rules.deny.contains(&spec) {
                rules.deny.push(spec);
            }
        }
        rules.extend_allow(allow);
        rules
    }

    /// These rules with more exceptions (a route's `allow_networks`).
    pub fn with_allowed(&self, allow: &[NetSpec]) -> NetworkRules {
        let mut rules = self.clone();
        rules.extend_allow(allow);
        rules
    }

    fn extend_allow(&mut self, allow: &[NetSpec]) {
        for spec in allow {
            if !self.allow.contains(spec) {
                self.allow.push(*spec);
            }
        }
    }

    pub fn denied(&self) -> &[NetSpec] {
        &self.deny
    }

    pub fn allowed(&self) -> &[NetSpec] {
        &self.allow
    }

    /// Whether a connection may go to `ip`: judged as itself and, for IPv6 addresses that
    /// carry one, as the IPv4 address inside.
    pub fn check(&self, ip: IpAddr) -> Result<(), Denied> {
        let ip = canonical(ip);
        if let Some(rule) = self.deciding_denial(ip) {
            return Err(Denied { address: ip, embedded: None, rule });
        }
        if let IpAddr::V6(v6) = ip {
            if let Some(v4) = embedded_ipv4(v6) {
                if let Some(rule) = self.deciding_denial(IpAddr::V4(v4)) {
                    return Err(Denied { address: ip, embedded: Some(v4), rule });
                }
            }
        }
        Ok(())
    }

    /// The deny entry that decides `ip`, unless an allow entry at least as specific holds it.
    fn deciding_denial(&self, ip: IpAddr) -> Option<NetSpec> {
        let (deny_prefix, rule) =
            self.deny.iter().filter_map(|s| s.best_match(ip).map(|p| (p, *s))).max_by_key(|(p, _)| *p)?;
        let allowed = self.allow.iter().filter_map(|s| s.best_match(ip)).max();
        match allowed {
            Some(allow_prefix) if allow_prefix >= deny_prefix => None,
            _ => Some(rule),
        }
    }
}

/// An IPv4-mapped address as the IPv4 address it is (`::ffff:127.0.0.1` is 127.0.0.1 on the
/// wire), so both spellings meet the same rules and messages.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The IPv4 address an IPv6 address carries: IPv4-compatible `::a.b.c.d` (not `::` or
/// `::1`), NAT64 `64:ff9b::/96` (RFC 6052) and local-use `64:ff9b:1::/48` (RFC 8215, the
/// /48 layout of RFC 6052 around the reserved octet), and 6to4 `2002:AABB:CCDD::/48`.
pub fn embedded_ipv4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let o = v6.octets();
    let s = v6.segments();
    let last32 = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    if s[..6] == [0; 6] && u32::from(last32) > 1 {
        return Some(last32);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(last32);
    }
    if s[..3] == [0x64, 0xff9b, 1] {
        return Some(Ipv4Addr::new(o[6], o[7], o[9], o[10]));
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn specs(list: &[&str]) -> Vec<NetSpec> {
        list.iter().map(|s| NetSpec::parse(s).unwrap()).collect()
    }

    fn rules(deny: &[&str], allow: &[&str]) -> NetworkRules {
        NetworkRules::new(&specs(deny), &specs(allow))
    }

    fn class_of(r: &NetworkRules, addr: &str) -> Option<String> {
        r.check(ip(addr)).err().map(|d| d.rule.to_string())
    }

    #[test]
    fn every_class_holds_its_addresses() {
        let all = rules(&["loopback", "private"], &[]);
        for (addr, class) in [
            // metadata, in every form a cloud publishes
            ("169.254.169.254", "metadata"),
            ("169.254.170.2", "metadata"),
            ("169.254.170.23", "metadata"),
            ("169.254.0.23", "metadata"),
            ("100.100.100.200", "metadata"),
            ("192.0.0.192", "metadata"),
            ("168.63.129.16", "metadata"),
            ("fd00:ec2::254", "metadata"),
            ("fd00:ec2::23", "metadata"),
            ("fd20:ce::254", "metadata"),
            // link-local
            ("169.254.1.1", "link_local"),
            ("169.254.255.255", "link_local"),
            ("fe80::1", "link_local"),
            ("febf:ffff::1", "link_local"),
            // loopback, and the unspecified addresses Linux connects to this host
            ("127.0.0.1", "loopback"),
            ("127.0.0.2", "loopback"),
            ("127.255.255.254", "loopback"),
            ("0.0.0.0", "loopback"),
            ("0.1.2.3", "loopback"),
            ("::1", "loopback"),
            ("::", "loopback"),
            // private: RFC 1918, CGNAT, ULA
            ("10.0.0.1", "private"),
            ("10.255.255.255", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("100.64.0.1", "private"),
            ("100.127.255.255", "private"),
            ("fc00::1", "private"),
            ("fd12:3456::1", "private"),
        ] {
            assert_eq!(class_of(&all, addr).as_deref(), Some(class), "{addr}");
        }
        for public in
            ["8.8.8.8", "172.32.0.1", "172.15.255.255", "100.128.0.1", "192.169.0.1", "2606:4700::1111", "fec0::1"]
        {
            assert_eq!(class_of(&all, public), None, "{public}");
        }
    }

    #[test]
    fn metadata_and_link_local_are_denied_by_default_and_the_rest_is_opt_in() {
        let default = rules(&[], &[]);
        assert_eq!(class_of(&default, "169.254.169.254").as_deref(), Some("metadata"));
        assert_eq!(class_of(&default, "169.254.9.9").as_deref(), Some("link_local"));
        assert_eq!(class_of(&default, "127.0.0.1"), None, "loopback is opt-in");
        assert_eq!(class_of(&default, "10.0.0.1"), None, "private is opt-in");
        // Naming other classes does not drop the built-in denials.
        let some = rules(&["loopback"], &[]);
        assert_eq!(class_of(&some, "169.254.169.254").as_deref(), Some("metadata"));
        assert_eq!(class_of(&some, "127.0.0.2").as_deref(), Some("loopback"));
    }

    #[test]
    fn ipv6_forms_are_judged_by_the_ipv4_address_they_carry() {
        let r = rules(&["loopback", "private"], &[]);
        for (addr, carried, class) in [
            ("::ffff:169.254.169.254", "169.254.169.254", "metadata"),
            ("::ffff:127.0.0.1", "127.0.0.1", "loopback"),
            ("::ffff:10.1.2.3", "10.1.2.3", "private"),
            ("::ffff:a9fe:a9fe", "169.254.169.254", "metadata"),
            ("::169.254.169.254", "169.254.169.254", "metadata"),
            ("::127.0.0.1", "127.0.0.1", "loopback"),
            ("64:ff9b::169.254.169.254", "169.254.169.254", "metadata"),
            ("64:ff9b::a9fe:a9fe", "169.254.169.254", "metadata"),
            ("64:ff9b::7f00:1", "127.0.0.1", "loopback"),
            ("64:ff9b::c0a8:101", "192.168.1.1", "private"),
            ("64:ff9b::6464:64c8", "100.100.100.200", "metadata"),
            ("64:ff9b::6440:1", "100.64.0.1", "private"),
            ("64:ff9b:1:a9fe:a9:fe00::", "169.254.169.254", "metadata"),
            ("2002:a9fe:a9fe::1", "169.254.169.254", "metadata"),
            ("2002:0a00:0001::", "10.0.0.1", "private"),
        ] {
            let denied = r.check(ip(addr)).expect_err(addr);
            assert_eq!(denied.rule.to_string(), class, "{addr}");
            if addr.starts_with("::ffff:") {
                // A mapped address is the IPv4 address itself.
                assert_eq!(denied.address, ip(carried), "{addr}");
            } else {
                assert_eq!(denied.embedded, Some(carried.parse().unwrap()), "{addr}");
            }
        }
        for public in ["::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1", "2001:db8::1"] {
            assert!(r.check(ip(public)).is_ok(), "{public}");
        }
    }

    #[test]
    fn embedded_addresses_are_extracted_exactly() {
        let v6 = |s: &str| s.parse::<Ipv6Addr>().unwrap();
        assert_eq!(embedded_ipv4(v6("::")), None);
        assert_eq!(embedded_ipv4(v6("::1")), None);
        assert_eq!(embedded_ipv4(v6("::2")), Some(Ipv4Addr::new(0, 0, 0, 2)));
        assert_eq!(embedded_ipv4(v6("64:ff9b:1:0102:0003:0400::")), Some(Ipv4Addr::new(1, 2, 3, 4)));
        assert_eq!(embedded_ipv4(v6("2001:db8::1")), None);
        assert_eq!(embedded_ipv4(v6("64:ff9b:2::1")), None);
    }

    #[test]
    fn the_most_specific_rule_wins_and_ties_go_to_the_allow() {
        // A hole in a denied class.
        let hole = rules(&["private"], &["10.1.0.0/16"]);
        assert!(hole.check(ip("10.1.2.3")).is_ok());
        assert_eq!(class_of(&hole, "10.2.0.1").as_deref(), Some("private"));
        // Allowing a broad class does not open the metadata addresses inside it.
        let broad = rules(&["private"], &["private", "link_local"]);
        assert!(broad.check(ip("100.64.0.1")).is_ok());
        assert!(broad.check(ip("169.254.1.1")).is_ok());
        assert_eq!(class_of(&broad, "100.100.100.200").as_deref(), Some("metadata"));
        assert_eq!(class_of(&broad, "169.254.169.254").as_deref(), Some("metadata"));
        // Naming the address itself does.
        let exact = rules(&[], &["169.254.169.254"]);
        assert!(exact.check(ip("169.254.169.254")).is_ok());
        assert_eq!(class_of(&exact, "169.254.170.2").as_deref(), Some("metadata"));
        let all_metadata = rules(&[], &["metadata"]);
        assert!(all_metadata.check(ip("fd00:ec2::254")).is_ok());
        // A narrow deny inside a broad allow holds.
        let narrow = rules(&["10.0.0.5/32"], &["private"]);
        assert_eq!(class_of(&narrow, "10.0.0.5").as_deref(), Some("10.0.0.5/32"));
        // A route's allowance adds to the global one.
        let route = rules(&["loopback"], &[]).with_allowed(&specs(&["127.0.0.2"]));
        assert!(route.check(ip("127.0.0.2")).is_ok());
        assert_eq!(class_of(&route, "127.0.0.1").as_deref(), Some("loopback"));
        // An allowed IPv4 address is allowed in its IPv6 forms too.
        let mapped = rules(&["private"], &["10.0.0.5"]);
        assert!(mapped.check(ip("::ffff:10.0.0.5")).is_ok());
        assert!(mapped.check(ip("64:ff9b::a00:5")).is_ok());
        assert!(mapped.check(ip("64:ff9b::a00:6")).is_err());
    }

    #[test]
    fn cidrs_parse_strictly() {
        assert_eq!(Cidr::parse("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(Cidr::parse("127.0.0.2").unwrap().to_string(), "127.0.0.2/32");
        assert_eq!(Cidr::parse("[::1]").unwrap().to_string(), "::1/128");
        assert_eq!(Cidr::parse("0.0.0.0/0").unwrap().prefix(), 0);
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert!(!Cidr::parse("0.0.0.0/0").unwrap().contains(ip("::1")));
        assert!(Cidr::parse("::/0").unwrap().contains(ip("2001:db8::1")));
        assert!(Cidr::parse("10.1.2.3/8").unwrap_err().contains("did you mean 10.0.0.0/8"));
        for bad in ["10.0.0.0/33", "10.0.0.0/", "10.0.0.0/+8", "::/129", "example.com", "10.0.0", ""] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
        assert!(NetSpec::parse("privat").unwrap_err().contains("classes: metadata, link_local, loopback, private"));
    }
}
