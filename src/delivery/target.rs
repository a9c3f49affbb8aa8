//! The delivery target policy (SPEC section 6): which URLs and addresses a
//! webhook may point at.
//!
//! By default only public addresses are allowed. Loopback, private,
//! link-local (cloud metadata at 169.254.169.254), CGNAT, multicast,
//! broadcast, unspecified, documentation and other reserved ranges are
//! refused unless listed in `--allow-targets`. IPv4-mapped, NAT64 and 6to4
//! IPv6 addresses are judged by the IPv4 address inside them. Decimal and
//! hex IPv4 spellings (`http://2130706433/`, `http://0x7f.1/`) are
//! normalised by the WHATWG URL parser before they reach this check.
//!
//! [`check_url`] is pure. [`check_resolved`] looks a host name up at
//! registration, so that a name pointing at a refused address is answered
//! 422 at once; a name that does not resolve (yet) is accepted, since the
//! binding check is the one at connect time, made by the delivery engine on
//! every attempt (DNS rebinding).
//!
//! [`PolicyResolver`] is that connect-time check: ureq asks it for the
//! addresses of every request's host (even when the connection then comes
//! from the pool) and connects only to what it returns, so nothing refused
//! is ever returned. An IP-literal host (the common case on an internal
//! network) is judged as it is: no lookup, no thread. A host name is looked
//! up by ureq's resolver, which runs `getaddrinfo` on a thread of its own
//! so that a hung lookup costs at most the connect timeout; the answers
//! are filtered by the policy, and the allowed ones are kept in a small
//! cache, keyed by host and port, for [`RESOLVED_TTL`] (5 s). So a name
//! costs one lookup thread per 5 s instead of one per attempt.
//!
//! Why the cache keeps DNS rebinding out: it holds only addresses that
//! passed the policy, and those are the addresses connected to. A name that
//! rebinds from a public address to an internal one gets, for at most the
//! TTL, the public address it was checked at (the connection goes there,
//! not to the new answer); after that the new answer is looked up and
//! refused. Refusals and failed lookups are not cached: such a name is
//! looked up again at every attempt. The cache lives as long as the agent,
//! whose allow list does not change; it is bounded (1,024 names; the
//! expired go first, all of them if none had).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use ureq::unversioned::resolver::{
    DefaultResolver, ResolvedSocketAddrs, Resolver as ResolverTrait,
};
use ureq::unversioned::transport::NextTimeout;
use url::{Host, Url};

use crate::config::Cidr;

/// Why an address is not a public delivery target.
pub fn non_public_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_reason(v4),
        IpAddr::V6(v6) => v6_reason(v6),
    }
}

fn v4_reason(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, _, _) => "an unspecified (0.0.0.0/8) address",
        (127, _, _) => "a loopback address",
        (10, _, _) => "a private address",
        (172, 16..=31, _) => "a private address",
        (192, 168, _) => "a private address",
        (169, 254, _) => "a link-local address (cloud metadata lives here)",
        (100, 64..=127, _) => "a carrier-grade NAT address",
        (192, 0, 0) => "an IETF protocol assignment address",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "a documentation address",
        (192, 88, 99) => "a 6to4 relay (deprecated) address",
        (198, 18..=19, _) => "a benchmarking address",
        (224..=239, _, _) => "a multicast address",
        (240..=255, _, _) => "a reserved or broadcast address",
        _ => return None,
    })
}

fn v6_reason(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_reason(v4);
    }
    let s = ip.segments();
    // IPv4-translated (::ffff:0:0/96) carries an IPv4 address too.
    if s[0..4] == [0, 0, 0, 0] && s[4] == 0xffff && s[5] == 0 {
        let [a, b] = s[6].to_be_bytes();
        let [c, d] = s[7].to_be_bytes();
        return v4_reason(Ipv4Addr::new(a, b, c, d));
    }
    // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) carry an IPv4 address.
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        let [a, b] = s[6].to_be_bytes();
        let [c, d] = s[7].to_be_bytes();
        return v4_reason(Ipv4Addr::new(a, b, c, d));
    }
    if s[0] == 0x2002 {
        let [a, b] = s[1].to_be_bytes();
        let [c, d] = s[2].to_be_bytes();
        return v4_reason(Ipv4Addr::new(a, b, c, d));
    }
    Some(if ip.is_unspecified() {
        "an unspecified address"
    } else if ip.is_loopback() {
        "a loopback address"
    } else if s[0] & 0xfe00 == 0xfc00 {
        "a unique local (private) address"
    } else if s[0] & 0xffc0 == 0xfe80 {
        "a link-local address"
    } else if s[0] & 0xff00 == 0xff00 {
        "a multicast address"
    } else if s[0] == 0x2001 && s[1] == 0x0db8 {
        "a documentation address"
    } else if s[0] == 0x0064 && s[1] == 0xff9b && s[2] == 0x0001 {
        "a local-use NAT64 address"
    } else if s[0] & 0xffc0 == 0xfec0 {
        "a site-local (deprecated) address"
    } else if s[0] == 0x2001 && s[1] == 0 {
        "a Teredo tunnel address"
    } else if s[0] == 0x2001 && s[1] == 0x0002 && s[2] == 0 {
        "a benchmarking address"
    } else if s[0] == 0x0100 && s[1..4] == [0, 0, 0] {
        "a discard-only address"
    } else if s[0..6] == [0, 0, 0, 0, 0, 0] {
        "an IPv4-compatible (deprecated) address"
    } else {
        return None;
    })
}

/// Why `ip` may not be connected to, if it may not.
fn refused(ip: IpAddr, allow: &[Cidr]) -> Option<&'static str> {
    non_public_reason(ip).filter(|_| !allow.iter().any(|net| net.contains(ip)))
}

/// The refusal of a host name, without the address it resolved to: the
/// message reaches API clients, who need not learn the internal network.
fn resolves_to(host: &str, reason: &str) -> String {
    format!(
        "{host} resolves to {reason}; only public addresses are allowed unless listed in --allow-targets"
    )
}

/// Whether `ip` may be connected to: public, or inside `allow`.
pub fn check_ip(ip: IpAddr, allow: &[Cidr]) -> Result<(), String> {
    match non_public_reason(ip) {
        Some(_) if allow.iter().any(|net| net.contains(ip)) => Ok(()),
        Some(reason) => Err(format!(
            "{ip} is {reason}; only public addresses are allowed unless listed in --allow-targets"
        )),
        None => Ok(()),
    }
}

/// Checks a webhook URL at registration: absolute `http`/`https`, a host,
/// no user info, and — for IP literals and `localhost` — the address policy.
/// Returns the URL in its normalised form.
pub fn check_url(text: &str, allow: &[Cidr]) -> Result<String, String> {
    if text.len() > 2048 {
        return Err("must be at most 2048 characters".into());
    }
    let url = Url::parse(text).map_err(|e| format!("is not an absolute URL ({e})"))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(format!("must use http or https, not {}", url.scheme()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain user info; put credentials in the secret instead".into());
    }
    if url.fragment().is_some() {
        return Err("must not contain a fragment".into());
    }
    match url.host() {
        None => return Err("must name a host".into()),
        Some(Host::Ipv4(ip)) => check_ip(IpAddr::V4(ip), allow)?,
        Some(Host::Ipv6(ip)) => check_ip(IpAddr::V6(ip), allow)?,
        Some(Host::Domain(name)) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if name == "localhost" || name.ends_with(".localhost") {
                check_ip(IpAddr::V4(Ipv4Addr::LOCALHOST), allow)
                    .map_err(|_| format!("{name} is a loopback name; only public addresses are allowed unless listed in --allow-targets"))?;
            }
        }
    }
    Ok(url.to_string())
}

/// How long registration waits for a host name to resolve.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// Checks the addresses a normalised URL's host name resolves to right now.
/// Refuses the URL if any of them is refused by the policy; accepts it when
/// the host is an IP literal (already checked by [`check_url`]), or when the
/// name does not resolve within [`LOOKUP_TIMEOUT`] — a receiver whose DNS is
/// not set up yet may still be registered, and its attempts record `dns`.
pub fn check_resolved(url: &str, allow: &[Cidr]) -> Result<(), String> {
    let Ok(parsed) = Url::parse(url) else {
        return Ok(());
    };
    let Some(Host::Domain(name)) = parsed.host() else {
        return Ok(());
    };
    let name = name.to_owned();
    let port = parsed.port_or_known_default().unwrap_or(443);
    let (tx, rx) = mpsc::channel();
    // getaddrinfo cannot be cancelled: the lookup runs on its own thread so
    // the API thread waits at most LOOKUP_TIMEOUT.
    let lookup = {
        let name = name.clone();
        std::thread::Builder::new()
            .name("hookbox-lookup".into())
            .spawn(move || {
                let addrs: Vec<IpAddr> = (name.as_str(), port)
                    .to_socket_addrs()
                    .map(|it| it.map(|a| a.ip()).collect())
                    .unwrap_or_default();
                let _ = tx.send(addrs);
            })
    };
    if lookup.is_err() {
        return Ok(());
    }
    let addrs = rx.recv_timeout(LOOKUP_TIMEOUT).unwrap_or_default();
    match addrs.into_iter().find_map(|ip| refused(ip, allow)) {
        Some(reason) => Err(resolves_to(&name, reason)),
        None => Ok(()),
    }
}

/// A webhook URL as the log may show it: without its query string and
/// fragment, where receivers often put an access key
/// (`https://crm.example/hook?key=...`).
pub fn loggable(url: &str) -> &str {
    let end = url.find(['?', '#']).unwrap_or(url.len());
    &url[..end]
}

/// The error a connection attempt fails with when every address of the
/// target is refused by the policy; the worker records it as `blocked_target`.
#[derive(Debug)]
pub struct BlockedTarget(pub String);

impl std::fmt::Display for BlockedTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "blocked target: {}", self.0)
    }
}

impl std::error::Error for BlockedTarget {}

fn blocked(why: String) -> ureq::Error {
    ureq::Error::Io(std::io::Error::new(
        std::io::ErrorKind::PermissionDenied,
        BlockedTarget(why),
    ))
}

/// How long a host name's policy-checked addresses are reused before the
/// name is looked up again (module doc: the resolution cache).
pub const RESOLVED_TTL: Duration = Duration::from_secs(5);

/// How many host names the resolution cache holds at most; past it,
/// expired entries go, and if none had expired, all of them.
const RESOLVED_MAX: usize = 1024;

/// Addresses of one host name that passed the policy, until `until`.
#[derive(Debug, Clone)]
struct Resolved {
    addrs: ResolvedSocketAddrs,
    until: Instant,
}

/// ureq's resolver with the target policy applied at connect time: what it
/// returns is what ureq connects to, and nothing refused is ever in it.
///
/// An IP-literal host is judged as it is, without a lookup. A host name is
/// looked up by ureq's [`DefaultResolver`] (its own thread, bounded by the
/// connect timeout), its answers filtered by the policy, and the allowed
/// ones kept for [`RESOLVED_TTL`] (module doc: the resolution cache).
#[derive(Debug)]
pub struct PolicyResolver {
    allow: Vec<Cidr>,
    inner: DefaultResolver,
    cache: Mutex<HashMap<(String, u16), Resolved>>,
}

impl PolicyResolver {
    pub fn new(allow: Vec<Cidr>) -> PolicyResolver {
        PolicyResolver {
            allow,
            inner: DefaultResolver::default(),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The addresses of `host:port` that passed the policy less than
    /// [`RESOLVED_TTL`] ago.
    fn cached(&self, host: &str, port: u16, now: Instant) -> Option<ResolvedSocketAddrs> {
        let cache = self.cache.lock().ok()?;
        let hit = cache.get(&(host.to_owned(), port))?;
        (now < hit.until).then(|| hit.addrs.clone())
    }

    fn remember(&self, host: &str, port: u16, addrs: &ResolvedSocketAddrs, now: Instant) {
        let Ok(mut cache) = self.cache.lock() else {
            return;
        };
        if cache.len() >= RESOLVED_MAX {
            cache.retain(|_, r| now < r.until);
            if cache.len() >= RESOLVED_MAX {
                cache.clear();
            }
        }
        let entry = Resolved {
            addrs: addrs.clone(),
            until: now + RESOLVED_TTL,
        };
        cache.insert((host.to_owned(), port), entry);
    }

    /// `addrs` without the refused ones, or why all of them are refused.
    fn filter(
        &self,
        host: &str,
        literal: bool,
        addrs: impl IntoIterator<Item = SocketAddr>,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let mut allowed = ResolverTrait::empty(self);
        let mut why_not = None;
        for addr in addrs {
            match refused(addr.ip(), &self.allow) {
                None => allowed.push(addr),
                Some(reason) => why_not = Some(reason),
            }
        }
        match (allowed.is_empty(), why_not) {
            (true, Some(reason)) if literal => Err(blocked(format!(
                "{host} is {reason}; only public addresses are allowed unless listed in --allow-targets"
            ))),
            (true, Some(reason)) => Err(blocked(resolves_to(host, reason))),
            _ => Ok(allowed),
        }
    }

    /// [`ResolverTrait::resolve`] at `now`.
    fn resolve_at(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
        now: Instant,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let port = match uri.scheme_str() {
            Some("http") => uri.port_u16().unwrap_or(80),
            Some("https") => uri.port_u16().unwrap_or(443),
            // ureq's resolver says what is wrong with the URI.
            _ => return self.inner.resolve(uri, config, timeout),
        };
        let host = uri.host().unwrap_or_default();
        if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
            return self.filter(host, true, [SocketAddr::new(ip, port)]);
        }
        if let Some(addrs) = self.cached(host, port, now) {
            return Ok(addrs);
        }
        let resolved = self.inner.resolve(uri, config, timeout)?;
        let allowed = self.filter(host, false, resolved.iter().copied())?;
        self.remember(host, port, &allowed, now);
        Ok(allowed)
    }
}

impl ResolverTrait for PolicyResolver {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        self.resolve_at(uri, config, timeout, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loggable_urls_drop_query_and_fragment() {
        for (url, shown) in [
            (
                "https://crm.example/hook?key=s3cret",
                "https://crm.example/hook",
            ),
            ("https://crm.example/hook#k=1", "https://crm.example/hook"),
            ("https://crm.example/a?b#c", "https://crm.example/a"),
            ("http://10.0.0.5:8080/hooks", "http://10.0.0.5:8080/hooks"),
        ] {
            assert_eq!(loggable(url), shown);
        }
    }
    use crate::config::parse_cidr;

    #[test]
    fn classifies_addresses() {
        let blocked = [
            "0.0.0.0",
            "127.0.0.1",
            "127.255.0.9",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "198.18.0.1",
            "224.0.0.1",
            "239.255.255.250",
            "255.255.255.255",
            "240.0.0.1",
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::7f00:1",
            "2002:7f00:1::",
            "::127.0.0.1",
            "::ffff:0:7f00:1",
            "64:ff9b:1::a00:1",
            "fec0::1",
            "2001::1",
            "2001:2::1",
            "100::1",
            "192.88.99.1",
        ];
        for ip in blocked {
            assert!(
                non_public_reason(ip.parse().unwrap()).is_some(),
                "{ip} should be blocked"
            );
        }
        let public = [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "93.184.216.34",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ];
        for ip in public {
            assert_eq!(
                non_public_reason(ip.parse().unwrap()),
                None,
                "{ip} should be public"
            );
        }
    }

    #[test]
    fn allow_targets_opens_listed_ranges_only() {
        let allow = [parse_cidr("127.0.0.0/8").unwrap()];
        assert!(check_ip("127.0.0.1".parse().unwrap(), &allow).is_ok());
        assert!(check_ip("::ffff:127.0.0.1".parse().unwrap(), &allow).is_ok());
        assert!(check_ip("10.0.0.1".parse().unwrap(), &allow).is_err());
    }

    #[test]
    fn checks_urls_in_every_spelling() {
        let ok = [
            "https://your-domain.com/webhook",
            "http://example.com:8080/a?b=c",
            "https://93.184.216.34/x",
            "https://not-yet-registered.example/hook",
        ];
        for url in ok {
            assert!(check_url(url, &[]).is_ok(), "{url}");
        }
        let bad = [
            "",
            "/relative",
            "ftp://example.com/",
            "https://user:pw@example.com/",
            "https://example.com/#frag",
            "http://127.0.0.1/",
            "http://2130706433/",
            "http://0x7f.0.0.1/",
            "http://0177.0.0.1/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://localhost/",
            "http://LOCALHOST./",
            "http://api.localhost/",
            "http://169.254.169.254/latest/meta-data/",
            "http://10.0.0.1/",
            "javascript:alert(1)",
        ];
        for url in bad {
            assert!(check_url(url, &[]).is_err(), "{url} should be refused");
        }
        let allow = [parse_cidr("127.0.0.0/8").unwrap()];
        assert!(check_url("http://127.0.0.1:9000/hook", &allow).is_ok());
        assert!(check_url("http://localhost:9000/hook", &allow).is_ok());
    }

    #[test]
    fn names_are_judged_by_what_they_resolve_to() {
        // localhost resolves through /etc/hosts: no DNS query leaves.
        let why = check_resolved("http://localhost:9000/hook", &[]).unwrap_err();
        assert!(why.starts_with("localhost resolves to "), "{why}");
        assert!(why.contains("loopback"), "{why}");
        let allow = [
            parse_cidr("127.0.0.0/8").unwrap(),
            parse_cidr("::1/128").unwrap(),
        ];
        assert_eq!(check_resolved("http://localhost:9000/hook", &allow), Ok(()));
        // IP literals were judged by check_url; nothing to look up.
        assert_eq!(check_resolved("http://93.184.216.34/x", &[]), Ok(()));
    }

    // Property tests: every spelling of a refused IPv4 address that a URL
    // parser accepts, against an independent table of the ranges.
    use proptest::prelude::*;

    /// The IPv4 ranges that must never be a default delivery target:
    /// (network, prefix, what it is). Written out here, not derived from
    /// `v4_reason`, so that the two can disagree.
    const REFUSED_V4: [(u32, u32, &str); 15] = [
        (0x0000_0000, 8, "this network"),
        (0x0a00_0000, 8, "private"),
        (0x6440_0000, 10, "carrier-grade NAT"),
        (0x7f00_0000, 8, "loopback"),
        (0xa9fe_0000, 16, "link-local"),
        (0xac10_0000, 12, "private"),
        (0xc000_0000, 24, "IETF protocol assignments"),
        (0xc000_0200, 24, "documentation"),
        (0xc058_6300, 24, "6to4 relay"),
        (0xc0a8_0000, 16, "private"),
        (0xc612_0000, 15, "benchmarking"),
        (0xc633_6400, 24, "documentation"),
        (0xcb00_7100, 24, "documentation"),
        (0xe000_0000, 4, "multicast"),
        (0xf000_0000, 4, "reserved and broadcast"),
    ];

    fn in_refused_v4(ip: u32) -> bool {
        REFUSED_V4
            .iter()
            .any(|&(net, prefix, _)| ip >> (32 - prefix) == net >> (32 - prefix))
    }

    /// An address inside one of the ranges the brief names: private,
    /// loopback, link-local, CGNAT, multicast (and the rest of the table).
    fn refused_v4() -> impl Strategy<Value = u32> {
        (0..REFUSED_V4.len(), any::<u32>()).prop_map(|(i, host)| {
            let (net, prefix, _) = REFUSED_V4[i];
            net | (host & (u32::MAX >> prefix))
        })
    }

    fn public_v4() -> impl Strategy<Value = u32> {
        any::<u32>().prop_filter("a public address", |ip| !in_refused_v4(*ip))
    }

    /// The ways a URL can name one IPv4 address.
    fn spellings(ip: u32) -> Vec<String> {
        let dotted = Ipv4Addr::from(ip);
        let [a, b, c, d] = ip.to_be_bytes();
        vec![
            format!("http://{dotted}/hook"),
            format!("https://{dotted}:8443/hook?x=1"),
            format!("http://{ip}/"),
            format!("http://0x{ip:x}/"),
            format!("http://0X{ip:08X}/"),
            format!("http://0{ip:o}/"),
            format!("http://0x{a:x}.0x{b:x}.0x{c:x}.0x{d:x}/"),
            format!("http://0{a:o}.0{b:o}.0{c:o}.0{d:o}/"),
            format!("http://{a}.{}/", u32::from_be_bytes([0, b, c, d])),
            format!("http://{a}.{b}.{}/", u16::from_be_bytes([c, d])),
            format!("http://{dotted}./"),
            format!("http://[::ffff:{dotted}]/"),
            format!(
                "http://[::ffff:{:x}:{:x}]/",
                u16::from_be_bytes([a, b]),
                u16::from_be_bytes([c, d])
            ),
            format!("http://[0:0:0:0:0:FFFF:{dotted}]:80/"),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn every_refused_ipv4_address_is_refused_in_every_url_spelling(ip in refused_v4()) {
            prop_assert!(non_public_reason(IpAddr::V4(Ipv4Addr::from(ip))).is_some());
            let mapped = Ipv4Addr::from(ip).to_ipv6_mapped();
            prop_assert!(check_ip(IpAddr::V6(mapped), &[]).is_err());
            for url in spellings(ip) {
                let checked = check_url(&url, &[]);
                prop_assert!(checked.is_err(), "{} was accepted as {:?}", url, checked);
            }
        }

        #[test]
        fn refused_ipv4_address_is_allowed_only_by_an_allow_targets_entry_that_holds_it(
            ip in refused_v4(),
            other in refused_v4(),
        ) {
            let own = crate::config::parse_cidr(&format!("{}/32", Ipv4Addr::from(ip))).unwrap();
            let decimal = format!("http://{ip}/");
            let mapped = format!("http://[::ffff:{}]/", Ipv4Addr::from(ip));
            prop_assert!(check_url(&decimal, &[own]).is_ok(), "{} refused", decimal);
            prop_assert!(check_url(&mapped, &[own]).is_ok(), "{} refused", mapped);
            prop_assume!(other != ip);
            let elsewhere = crate::config::parse_cidr(&format!("{}/32", Ipv4Addr::from(other))).unwrap();
            prop_assert!(check_url(&decimal, &[elsewhere]).is_err(), "{} accepted", decimal);
        }

        #[test]
        fn public_ipv4_address_is_accepted_in_every_url_spelling(ip in public_v4()) {
            prop_assert_eq!(non_public_reason(IpAddr::V4(Ipv4Addr::from(ip))), None);
            for url in spellings(ip) {
                let checked = check_url(&url, &[]);
                prop_assert!(checked.is_ok(), "{} was refused: {:?}", url, checked);
            }
        }

        #[test]
        fn public_ipv4_address_inside_nat64_or_6to4_is_judged_by_that_address(
            public in public_v4(),
            refused in refused_v4(),
        ) {
            for (ip, ok) in [(public, true), (refused, false)] {
                let [a, b, c, d] = ip.to_be_bytes();
                let hi = u16::from_be_bytes([a, b]);
                let lo = u16::from_be_bytes([c, d]);
                let nat64 = Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, hi, lo);
                let six_to_four = Ipv6Addr::new(0x2002, hi, lo, 0, 0, 0, 0, 1);
                for v6 in [nat64, six_to_four] {
                    prop_assert_eq!(non_public_reason(IpAddr::V6(v6)).is_none(), ok, "{}", v6);
                }
            }
        }

        #[test]
        fn check_url_never_panics_on_any_string(
            text in any::<String>(),
            tail in "[a-zA-Z0-9.:/\\[\\]@%#?_~-]{0,60}",
            scheme in prop::sample::select(vec!["http://", "https://", "HTTP://", "http:", "ftp://", "//", ""]),
        ) {
            let _ = check_url(&text, &[]);
            let _ = check_url(&format!("{scheme}{tail}"), &[]);
            let _ = check_url(&format!("{scheme}{text}"), &[]);
            if let Ok(normal) = check_url(&format!("{scheme}{tail}"), &[]) {
                // What is accepted is accepted again in its normal form.
                prop_assert_eq!(check_url(&normal, &[]), Ok(normal.clone()));
            }
        }
    }

    // The connect-time resolver: what it returns is what ureq connects to.

    fn resolve(
        resolver: &PolicyResolver,
        url: &str,
        now: Instant,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let uri: ureq::http::Uri = url.parse().unwrap();
        let config = ureq::config::Config::default();
        resolver.resolve_at(&uri, &config, NextTimeout::default(), now)
    }

    fn blocked_why(result: Result<ResolvedSocketAddrs, ureq::Error>) -> String {
        match result {
            Err(ureq::Error::Io(e)) => match e.get_ref().and_then(|i| i.downcast_ref()) {
                Some(BlockedTarget(why)) => why.clone(),
                None => panic!("not a blocked target: {e}"),
            },
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn ip_literal_targets_are_judged_without_a_lookup_or_a_cache_entry() {
        let strict = PolicyResolver::new(Vec::new());
        let now = Instant::now();
        for url in [
            "http://127.0.0.1:9/x",
            "http://10.0.0.1/",
            "https://[::1]:8443/",
            "http://[::ffff:169.254.169.254]/",
        ] {
            let why = blocked_why(resolve(&strict, url, now));
            assert!(why.contains("only public addresses"), "{url}: {why}");
        }
        let allow = vec![parse_cidr("127.0.0.0/8").unwrap()];
        let open = PolicyResolver::new(allow);
        let addrs = resolve(&open, "http://127.0.0.1:9/x", now).unwrap();
        assert_eq!(addrs.to_vec(), ["127.0.0.1:9".parse().unwrap()]);
        let addrs = resolve(&open, "https://127.0.0.2/", now).unwrap();
        assert_eq!(addrs.to_vec(), ["127.0.0.2:443".parse().unwrap()]);
        // Still refused what the allow list does not hold.
        blocked_why(resolve(&open, "http://[::1]:9/", now));
        assert!(open.cache.lock().unwrap().is_empty());
        assert!(strict.cache.lock().unwrap().is_empty());
    }

    #[test]
    fn a_name_resolving_to_a_refused_address_is_refused_every_time_and_never_cached() {
        // localhost resolves through /etc/hosts: no DNS query leaves.
        let strict = PolicyResolver::new(Vec::new());
        let now = Instant::now();
        for _ in 0..2 {
            let why = blocked_why(resolve(&strict, "http://localhost:9/x", now));
            assert!(why.starts_with("localhost resolves to "), "{why}");
            assert!(!why.contains("127."), "{why}");
        }
        assert!(strict.cache.lock().unwrap().is_empty());
    }

    #[test]
    fn a_name_that_passed_the_policy_is_reused_until_its_ttl_and_then_looked_up_again() {
        let allow = vec![
            parse_cidr("127.0.0.0/8").unwrap(),
            parse_cidr("::1/128").unwrap(),
        ];
        let resolver = PolicyResolver::new(allow);
        let t0 = Instant::now();
        let first = resolve(&resolver, "http://localhost:9/x", t0).unwrap();
        assert!(!first.is_empty());
        assert!(first.iter().all(|a| a.ip().is_loopback() && a.port() == 9));
        // Stand in for what a rebinding name would answer next: the cached,
        // already-checked addresses are used instead of a new lookup.
        let rebound: SocketAddr = "127.9.9.9:9".parse().unwrap();
        let mut planted = resolver.empty();
        planted.push(rebound);
        resolver.remember("localhost", 9, &planted, t0);
        let soon = t0 + RESOLVED_TTL - Duration::from_millis(1);
        assert_eq!(
            resolve(&resolver, "http://localhost:9/x", soon)
                .unwrap()
                .to_vec(),
            [rebound]
        );
        // Another port is another entry.
        let other = resolve(&resolver, "http://localhost:10/x", soon).unwrap();
        assert!(other.iter().all(|a| a.port() == 10));
        // Past the TTL the name is looked up (and judged) again.
        let later = t0 + RESOLVED_TTL;
        let again = resolve(&resolver, "http://localhost:9/x", later).unwrap();
        assert!(!again.contains(&rebound), "{again:?}");
    }

    #[test]
    fn the_resolution_cache_stays_bounded() {
        let resolver = PolicyResolver::new(Vec::new());
        let now = Instant::now();
        let mut addrs = resolver.empty();
        addrs.push("93.184.216.34:443".parse().unwrap());
        for i in 0..(RESOLVED_MAX + 10) {
            resolver.remember(&format!("h{i}.example"), 443, &addrs, now);
        }
        assert!(resolver.cache.lock().unwrap().len() <= RESOLVED_MAX);
    }
}
