//! The SSRF guard of outbound webhooks (SPEC §7).
//!
//! A webhook URL is the merchant's input, and the server sits inside someone's network: without
//! a guard, a subscription to `http://169.254.169.254/…` or `http://10.0.0.5/admin` makes the
//! server a proxy into it. So every attempt resolves the host itself, refuses addresses that are
//! not globally routable, and hands the HTTP client *only the checked addresses* to connect to
//! ([`GuardedResolver`] is the client's DNS resolver): no second lookup happens between the
//! check and the connect, so a DNS answer that changes (DNS rebinding) cannot slip through.
//! IP-literal hosts never reach a resolver and are checked with [`check_ip`] before sending.
//!
//! Refused unless `allow_private_webhook_targets`: loopback, private (RFC 1918), link-local
//! (cloud metadata), CGNAT, unspecified, broadcast, multicast, benchmarking, documentation and
//! reserved ranges; IPv6 loopback, unique-local, link-local, site-local, multicast,
//! documentation; and IPv6 forms that carry an IPv4 address (IPv4-mapped `::ffff:a.b.c.d`,
//! IPv4-compatible `::a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`), judged by that address.
//! Teredo (`2001::/32`) and local-use NAT64 (`64:ff9b:1::/48`) are refused outright.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

/// Why an address is refused, for the delivery log and the API's 400.
pub fn blocked_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => blocked_v4(v4),
        IpAddr::V6(v6) => blocked_v6(v6),
    }
}

/// `Ok` when `ip` may be connected to under the given setting.
pub fn check_ip(ip: IpAddr, allow_private: bool) -> Result<(), String> {
    if allow_private {
        return Ok(());
    }
    match blocked_reason(ip) {
        Some(why) => Err(format!(
            "refused: {ip} is a {why} address (set allow_private_webhook_targets to allow it)"
        )),
        None => Ok(()),
    }
}

fn blocked_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    let in_net = |net: [u8; 4], bits: u32| {
        let mask = if bits == 0 {
            0
        } else {
            u32::MAX << (32 - bits)
        };
        (u32::from(ip) & mask) == (u32::from_be_bytes(net) & mask)
    };
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_unspecified() || o[0] == 0 {
        Some("unspecified (0.0.0.0/8)")
    } else if in_net([10, 0, 0, 0], 8)
        || in_net([172, 16, 0, 0], 12)
        || in_net([192, 168, 0, 0], 16)
    {
        Some("private")
    } else if in_net([169, 254, 0, 0], 16) {
        Some("link-local (cloud metadata)")
    } else if in_net([100, 64, 0, 0], 10) {
        Some("carrier-grade NAT (100.64.0.0/10)")
    } else if ip.is_broadcast() {
        Some("broadcast")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if in_net([240, 0, 0, 0], 4) {
        Some("reserved (240.0.0.0/4)")
    } else if in_net([192, 0, 0, 0], 24) {
        Some("IETF protocol assignment (192.0.0.0/24)")
    } else if in_net([198, 18, 0, 0], 15) {
        Some("benchmarking (198.18.0.0/15)")
    } else if in_net([192, 0, 2, 0], 24)
        || in_net([198, 51, 100, 0], 24)
        || in_net([203, 0, 113, 0], 24)
    {
        Some("documentation")
    } else {
        None
    }
}

fn blocked_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if ip.is_loopback() {
        return Some("IPv6 loopback");
    }
    if ip.is_unspecified() {
        return Some("IPv6 unspecified");
    }
    // IPv4-mapped ::ffff:a.b.c.d and IPv4-compatible ::a.b.c.d: the IPv4 address decides.
    if s[0..5] == [0, 0, 0, 0, 0] && (s[5] == 0xffff || s[5] == 0) {
        let v4 = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
        return blocked_v4(v4).map(|_| "IPv4-mapped or IPv4-compatible non-public");
    }
    // NAT64 well-known prefix 64:ff9b::/96 carries an IPv4 address in its last 32 bits.
    if s[0..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let v4 = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
        return blocked_v4(v4).map(|_| "NAT64 non-public");
    }
    if s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1 {
        return Some("local-use NAT64 (64:ff9b:1::/48)");
    }
    // 6to4 2002:AABB:CCDD::/48 carries the IPv4 address AA.BB.CC.DD.
    if s[0] == 0x2002 {
        let v4 = Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8);
        return blocked_v4(v4).map(|_| "6to4 non-public");
    }
    if s[0] == 0x2001 && s[1] == 0 {
        return Some("Teredo (2001::/32)");
    }
    if (s[0] & 0xfe00) == 0xfc00 {
        return Some("IPv6 unique-local (fc00::/7)");
    }
    if (s[0] & 0xffc0) == 0xfe80 {
        return Some("IPv6 link-local (fe80::/10)");
    }
    if (s[0] & 0xffc0) == 0xfec0 {
        return Some("IPv6 site-local (fec0::/10)");
    }
    if (s[0] & 0xff00) == 0xff00 {
        return Some("IPv6 multicast");
    }
    if s[0] == 0x2001 && s[1] == 0xdb8 {
        return Some("IPv6 documentation (2001:db8::/32)");
    }
    if s[0] == 0x100 && s[1..4] == [0, 0, 0] {
        return Some("IPv6 discard-only (100::/64)");
    }
    None
}

/// A boxed DNS lookup future.
pub type Lookup = Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>>;

/// Host name → addresses. Injected so tests can script answers (a rebinding DNS server).
pub trait Dns: Send + Sync {
    fn lookup(&self, host: &str) -> Lookup;
}

/// The operating system's resolver (through tokio).
pub struct SystemDns;

impl Dns for SystemDns {
    fn lookup(&self, host: &str) -> Lookup {
        let host = host.to_string();
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host.as_str(), 0)).await?;
            Ok(addrs.map(|a| a.ip()).collect())
        })
    }
}

/// The HTTP client's DNS resolver: resolves with [`Dns`] and returns only addresses the guard
/// allows, so the connection goes to a checked address and to nothing else. When every address
/// is refused the request fails with the reason.
pub struct GuardedResolver {
    pub dns: Arc<dyn Dns>,
    pub allow_private: bool,
}

#[derive(Debug)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

impl GuardedResolver {
    /// The allowed addresses of `host`, or why there are none.
    pub async fn checked(&self, host: &str) -> Result<Vec<IpAddr>, String> {
        let ips = self
            .dns
            .lookup(host)
            .await
            .map_err(|e| format!("DNS lookup of {host} failed: {e}"))?;
        if ips.is_empty() {
            return Err(format!("DNS lookup of {host} found no address"));
        }
        let mut ok = Vec::new();
        let mut first_refusal = None;
        for ip in ips {
            match check_ip(ip, self.allow_private) {
                Ok(()) => ok.push(ip),
                Err(e) => {
                    first_refusal.get_or_insert(e);
                }
            }
        }
        match (ok.is_empty(), first_refusal) {
            (true, Some(e)) => Err(format!("{host}: {e}")),
            _ => Ok(ok),
        }
    }
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let dns = self.dns.clone();
        let guard = GuardedResolver {
            dns,
            allow_private: self.allow_private,
        };
        let host = name.as_str().to_string();
        Box::pin(async move {
            let ips = guard
                .checked(&host)
                .await
                .map_err(|e| Box::new(Refused(e)) as Box<dyn std::error::Error + Send + Sync>)?;
            let addrs: Vec<SocketAddr> = ips.into_iter().map(|ip| SocketAddr::new(ip, 0)).collect();
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Checks a webhook URL's form (API validation): `https://` (or `http://` when private targets
/// are allowed), a host, and an IP-literal host that the guard allows. Host names are resolved
/// at every attempt, not here.
pub fn check_url(url: &str, allow_private: bool) -> Result<reqwest::Url, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("Not a URL ({e})."))?;
    match parsed.scheme() {
        "https" => {}
        "http" if allow_private => {}
        "http" => {
            return Err(
                "Must be an https:// URL (plain http:// only when the server allows private webhook targets).".into(),
            );
        }
        _ => return Err("Must be an https:// URL.".into()),
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("Credentials in the URL are not accepted.".into());
    }
    let Some(host) = parsed.host_str() else {
        return Err("The URL has no host.".into());
    };
    if let Some(ip) = literal_ip(&parsed) {
        check_ip(ip, allow_private)?;
    } else {
        let d = host.trim_end_matches('.').to_ascii_lowercase();
        if !allow_private && (d == "localhost" || d.ends_with(".localhost")) {
            return Err("refused: localhost is a loopback name (set allow_private_webhook_targets to allow it)".into());
        }
    }
    Ok(parsed)
}

/// The IP of an IP-literal URL host (these bypass the resolver).
pub fn literal_ip(url: &reqwest::Url) -> Option<IpAddr> {
    let host = url.host_str()?;
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(s: &str) -> bool {
        blocked_reason(s.parse().unwrap()).is_some()
    }

    #[test]
    fn ipv4_ranges() {
        for ip in [
            "127.0.0.1",
            "127.255.255.254",
            "10.0.0.1",
            "10.255.255.255",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "169.254.0.1",
            "100.64.0.1",
            "100.127.255.255",
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "192.0.0.8",
            "198.18.0.1",
            "192.0.2.1",
            "198.51.100.1",
            "203.0.113.1",
        ] {
            assert!(refused(ip), "{ip} should be refused");
        }
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "172.15.255.255",
            "172.32.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "169.253.255.255",
            "192.169.0.1",
            "11.0.0.1",
        ] {
            assert!(!refused(ip), "{ip} should be allowed");
        }
    }

    #[test]
    fn ipv6_ranges() {
        for ip in [
            "::1",
            "::",
            "fc00::1",
            "fd12:3456:789a::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "100::1",
            "2001::1",
            "64:ff9b:1::1",
        ] {
            assert!(refused(ip), "{ip} should be refused");
        }
        for ip in [
            "2606:4700:4700::1111",
            "2a00:1450:4001::1",
            "2001:4860::8888",
        ] {
            assert!(!refused(ip), "{ip} should be allowed");
        }
    }

    #[test]
    fn ipv6_forms_carrying_ipv4() {
        // IPv4-mapped
        for ip in [
            "::ffff:127.0.0.1",
            "::ffff:10.1.2.3",
            "::ffff:169.254.169.254",
            "::ffff:192.168.0.1",
            "::ffff:100.64.0.1",
            "::ffff:0.0.0.0",
            "::ffff:7f00:1",
        ] {
            assert!(refused(ip), "{ip} should be refused");
        }
        assert!(!refused("::ffff:8.8.8.8"));
        // IPv4-compatible (deprecated)
        assert!(refused("::127.0.0.1"));
        assert!(refused("::10.0.0.1"));
        assert!(!refused("::8.8.8.8"));
        // NAT64
        assert!(refused("64:ff9b::127.0.0.1"));
        assert!(refused("64:ff9b::a9fe:a9fe")); // 169.254.169.254
        assert!(refused("64:ff9b::10.0.0.1"));
        assert!(!refused("64:ff9b::8.8.8.8"));
        // 6to4
        assert!(refused("2002:7f00:1::1")); // 127.0.0.1
        assert!(refused("2002:c0a8:101::1")); // 192.168.1.1
        assert!(refused("2002:a9fe:a9fe::")); // 169.254.169.254
        assert!(!refused("2002:808:808::1")); // 8.8.8.8
    }

    #[test]
    fn allowed_when_the_operator_says_so() {
        assert!(check_ip("127.0.0.1".parse().unwrap(), true).is_ok());
        assert!(check_ip("127.0.0.1".parse().unwrap(), false).is_err());
        assert!(check_ip("::ffff:10.0.0.1".parse().unwrap(), false).is_err());
    }

    #[test]
    fn urls() {
        assert!(check_url("https://example.com/hook", false).is_ok());
        assert!(check_url("http://example.com/hook", false).is_err());
        assert!(check_url("http://example.com/hook", true).is_ok());
        assert!(check_url("ftp://example.com/hook", true).is_err());
        assert!(check_url("https://127.0.0.1/hook", false).is_err());
        assert!(check_url("https://[::1]/hook", false).is_err());
        assert!(check_url("https://[::ffff:169.254.169.254]/hook", false).is_err());
        assert!(check_url("https://localhost/hook", false).is_err());
        assert!(check_url("https://a.localhost./hook", false).is_err());
        assert!(check_url("https://user:pw@example.com/hook", false).is_err());
        assert!(check_url("not a url", false).is_err());
        assert!(check_url("https://127.0.0.1/hook", true).is_ok());
    }

    /// Answers from a script, one per lookup (the last one repeats).
    struct Scripted {
        answers: std::sync::Mutex<Vec<Vec<IpAddr>>>,
        calls: std::sync::atomic::AtomicUsize,
    }

    impl Dns for Scripted {
        fn lookup(&self, _host: &str) -> Lookup {
            self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut a = self.answers.lock().unwrap_or_else(|p| p.into_inner());
            let next = if a.len() > 1 {
                a.remove(0)
            } else {
                a.first().cloned().unwrap_or_default()
            };
            Box::pin(async move { Ok(next) })
        }
    }

    #[tokio::test]
    async fn a_dns_answer_that_changes_between_checks_is_checked_each_time() {
        let dns = Arc::new(Scripted {
            answers: std::sync::Mutex::new(vec![
                vec!["93.184.216.34".parse().unwrap()],
                vec!["127.0.0.1".parse().unwrap()],
                vec![
                    "93.184.216.34".parse().unwrap(),
                    "169.254.169.254".parse().unwrap(),
                ],
            ]),
            calls: Default::default(),
        });
        let g = GuardedResolver {
            dns: dns.clone(),
            allow_private: false,
        };
        assert_eq!(
            g.checked("rebind.example").await.unwrap(),
            vec!["93.184.216.34".parse::<IpAddr>().unwrap()]
        );
        let e = g.checked("rebind.example").await.unwrap_err();
        assert!(e.contains("loopback"), "{e}");
        // A mixed answer keeps only the public address: the connect can reach nothing else.
        assert_eq!(
            g.checked("rebind.example").await.unwrap(),
            vec!["93.184.216.34".parse::<IpAddr>().unwrap()]
        );
        // Through reqwest's resolver interface too.
        use reqwest::dns::Resolve;
        let addrs: Vec<SocketAddr> = g
            .resolve("rebind.example".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert_eq!(addrs, vec!["93.184.216.34:0".parse().unwrap()]);
        assert_eq!(dns.calls.load(std::sync::atomic::Ordering::SeqCst), 4);
    }
}
