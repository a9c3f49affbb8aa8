//! Who is calling: the client address behind an optional trusted proxy, and
//! the per-token rate limit.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::Cidr;

/// The client's address. Without trusted proxies it is the connection's
/// peer, whatever `X-Forwarded-For` says. When the peer is a trusted proxy,
/// `X-Forwarded-For` (all its headers, in order) is read from the right:
/// each trusted proxy appends the address it got the request from, so the
/// first entry that is not a trusted proxy is the client, and anything to
/// its left — which the client could have written — is ignored. An entry
/// that is not an address gives `None`: unknown, and refused by allowlists.
pub fn client_ip(peer: Option<IpAddr>, forwarded: &[&str], trusted: &[Cidr]) -> Option<IpAddr> {
    let peer = peer?;
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(peer) {
        return Some(peer);
    }
    let mut client = peer;
    let entries: Vec<&str> = forwarded.iter().flat_map(|h| h.split(',')).collect();
    for entry in entries.iter().rev() {
        let ip = parse_entry(entry)?;
        client = ip;
        if !is_trusted(ip) {
            break;
        }
    }
    Some(client)
}

/// Whether a request from `peer` may have its body read into memory before
/// the pipeline has looked at it (`tiny_http::ConnectionLimits::
/// preread_allowed`): when `--api-allow` is empty, when the peer is inside
/// it, or when the peer is a `--trust-proxy` address (the client behind a
/// proxy is known only from `X-Forwarded-For`, after the body). Anyone else
/// would be answered 403 `ip_not_allowed` whatever the body, so it is not
/// read. The peer is also tried canonicalised: an IPv4-mapped IPv6 peer (on
/// a dual-stack listener) counts as its IPv4 address too, and as itself, so
/// that this lets in at least everyone the pipeline's own check does.
pub fn may_send_body(peer: IpAddr, api_allow: &[Cidr], trust_proxy: &[Cidr]) -> bool {
    api_allow.is_empty() || peer_in(peer, api_allow) || peer_in(peer, trust_proxy)
}

/// Whether a connection's peer is inside `nets`, tried as it is and
/// canonicalised (an IPv4-mapped peer against IPv4 and IPv6 networks alike).
pub fn peer_in(peer: IpAddr, nets: &[Cidr]) -> bool {
    let forms = [peer, peer.to_canonical()];
    nets.iter()
        .any(|net| forms.iter().any(|ip| net.contains(*ip)))
}

/// `203.0.113.9`, `2001:db8::1`, `[2001:db8::1]`, `[2001:db8::1]:443` or
/// `203.0.113.9:443`; an IPv4-mapped IPv6 address as its IPv4 address.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    let bare = entry
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .unwrap_or(entry);
    bare.parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .map(|ip| ip.to_canonical())
}

/// A token bucket per API token: `per_s` requests a second on average, up
/// to `2 * per_s` at once. One lock for all tokens, held for a hash lookup
/// and a little arithmetic; buckets are as many as live tokens that called.
pub struct RateLimiter {
    per_s: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    /// `per_s == 0` turns limiting off.
    pub fn new(per_s: u32) -> RateLimiter {
        RateLimiter {
            per_s: f64::from(per_s),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// The configured rate, for messages.
    pub fn per_second(&self) -> f64 {
        self.per_s
    }

    /// Takes one request from `key`'s bucket, or says how long until one
    /// is there.
    pub fn take(&self, key: &str, now: Instant) -> Result<(), Duration> {
        if self.per_s <= 0.0 {
            return Ok(());
        }
        let burst = 2.0 * self.per_s;
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_s).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / self.per_s))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_cidr;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn forwarded_for_counts_only_from_a_trusted_peer() {
        let trusted = [parse_cidr("10.0.0.0/8").unwrap()];
        // Not from the proxy: the header is ignored.
        assert_eq!(
            client_ip(ip("203.0.113.7"), &["127.0.0.1"], &trusted),
            ip("203.0.113.7")
        );
        // From the proxy: the rightmost untrusted entry; what the client
        // wrote to the left of it is ignored.
        assert_eq!(
            client_ip(ip("10.0.0.2"), &["127.0.0.1, 198.51.100.4"], &trusted),
            ip("198.51.100.4")
        );
        // Chained proxies are skipped; headers are read in order.
        assert_eq!(
            client_ip(
                ip("10.0.0.2"),
                &["1.2.3.4", "198.51.100.4, 10.9.9.9"],
                &trusted
            ),
            ip("198.51.100.4")
        );
        assert_eq!(
            client_ip(ip("10.0.0.2"), &["[2001:db8::1]:443"], &trusted),
            ip("2001:db8::1")
        );
        assert_eq!(
            client_ip(ip("10.0.0.2"), &["[2001:db8::1]"], &trusted),
            ip("2001:db8::1")
        );
        assert_eq!(
            client_ip(ip("10.0.0.2"), &["::ffff:198.51.100.4"], &trusted),
            ip("198.51.100.4")
        );
        // No header: the proxy itself.
        assert_eq!(client_ip(ip("10.0.0.2"), &[], &trusted), ip("10.0.0.2"));
        // Garbage appended by a proxy: unknown.
        assert_eq!(client_ip(ip("10.0.0.2"), &["unknown"], &trusted), None);
        // No trusted proxies at all: always the peer.
        assert_eq!(
            client_ip(ip("10.0.0.2"), &["198.51.100.4"], &[]),
            ip("10.0.0.2")
        );
    }

    #[test]
    fn bodies_are_read_ahead_only_for_peers_the_allowlist_or_a_trusted_proxy_lets_in() {
        let nets =
            |list: &[&str]| -> Vec<Cidr> { list.iter().map(|n| parse_cidr(n).unwrap()).collect() };
        let allow = nets(&["10.9.9.9/32", "2001:db8::/32"]);
        let mapped = nets(&["::ffff:10.0.0.0/104"]);
        let proxies = nets(&["192.0.2.10/32"]);
        let rows: &[(&str, &[Cidr], &[Cidr], bool)] = &[
            // No allowlist: anyone.
            ("203.0.113.7", &[], &[], true),
            ("::ffff:203.0.113.7", &[], &[], true),
            // Inside the allowlist, as IPv4 or IPv4-mapped IPv6.
            ("10.9.9.9", &allow, &[], true),
            ("::ffff:10.9.9.9", &allow, &[], true),
            ("2001:db8::5", &allow, &[], true),
            // Outside it.
            ("10.9.9.8", &allow, &[], false),
            ("::ffff:10.9.9.8", &allow, &[], false),
            ("127.0.0.1", &allow, &[], false),
            ("::1", &allow, &[], false),
            // A trusted proxy, whoever it forwards for.
            ("192.0.2.10", &allow, &proxies, true),
            ("::ffff:192.0.2.10", &allow, &proxies, true),
            ("192.0.2.11", &allow, &proxies, false),
            // An allowlist written as IPv4-mapped IPv6 still matches the
            // mapped form, as the pipeline's check does.
            ("::ffff:10.0.0.1", &mapped, &[], true),
            ("::ffff:11.0.0.1", &mapped, &[], false),
        ];
        for (peer, allow, proxies, expected) in rows {
            let ip: IpAddr = peer.parse().unwrap();
            assert_eq!(
                may_send_body(ip, allow, proxies),
                *expected,
                "{peer} allow {allow:?} proxies {proxies:?}"
            );
        }
    }

    #[test]
    fn rate_limiter_allows_a_burst_of_twice_the_rate_then_refills() {
        let limiter = RateLimiter::new(5);
        let t0 = Instant::now();
        for _ in 0..10 {
            assert_eq!(limiter.take("a", t0), Ok(()));
        }
        let wait = limiter.take("a", t0).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(200),
            "{wait:?}"
        );
        // Another token has its own bucket.
        assert_eq!(limiter.take("b", t0), Ok(()));
        // 200 ms later one request is allowed again, not two.
        let t1 = t0 + Duration::from_millis(200);
        assert_eq!(limiter.take("a", t1), Ok(()));
        assert!(limiter.take("a", t1).is_err());
        assert_eq!(RateLimiter::new(0).take("a", t0), Ok(()));
    }

    // Property tests: X-Forwarded-For as a client or a chain of proxies
    // could write it, read behind the trusted proxies 10.0.0.0/8, fd00::/8.
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn trusted() -> Vec<Cidr> {
        vec![
            parse_cidr("10.0.0.0/8").unwrap(),
            parse_cidr("fd00::/8").unwrap(),
        ]
    }

    /// One `X-Forwarded-For` entry: what it says (None for garbage) and
    /// how it is written.
    #[derive(Debug, Clone)]
    struct Entry {
        ip: Option<IpAddr>,
        text: String,
    }

    fn spelled(ip: IpAddr, style: u8, port: u16) -> String {
        match (ip, style % 4) {
            (IpAddr::V4(v4), 0) => v4.to_string(),
            (IpAddr::V4(v4), 1) => format!(" {v4}:{port} "),
            (IpAddr::V4(v4), 2) => v4.to_ipv6_mapped().to_string(),
            (IpAddr::V4(v4), _) => format!("[{}]", v4.to_ipv6_mapped()),
            (IpAddr::V6(v6), 0) => v6.to_string(),
            (IpAddr::V6(v6), 1) => format!("[{v6}]:{port}"),
            (IpAddr::V6(v6), 2) => format!(" [{v6}]"),
            (IpAddr::V6(v6), _) => format!("{v6} "),
        }
    }

    fn trusted_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<u32>().prop_map(|h| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (h & 0x00ff_ffff)))),
            any::<u128>().prop_map(|h| IpAddr::V6(Ipv6Addr::from((0xfd << 120) | (h >> 8)))),
        ]
    }

    fn untrusted_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<u32>().prop_map(|ip| IpAddr::V4(Ipv4Addr::from(ip))),
            any::<u128>().prop_map(|ip| IpAddr::V6(Ipv6Addr::from(ip))),
        ]
        .prop_map(|ip| ip.to_canonical())
        .prop_filter("an untrusted address", |ip| {
            !trusted().iter().any(|net| net.contains(*ip))
        })
    }

    fn entry() -> impl Strategy<Value = Entry> {
        let address = |ips: BoxedStrategy<IpAddr>| {
            (ips, any::<u8>(), any::<u16>()).prop_map(|(ip, style, port)| Entry {
                ip: Some(ip),
                text: spelled(ip, style, port),
            })
        };
        prop_oneof![
            4 => address(trusted_ip().boxed()),
            4 => address(untrusted_ip().boxed()),
            1 => "[a-z_ ]{0,8}|unknown|[0-9.:\\[\\]]{1,12}|".prop_map(|text| Entry { ip: None, text }),
        ]
        .prop_filter("garbage that does not parse", |e| {
            e.ip.is_some() || super::parse_entry(&e.text).is_none()
        })
    }

    /// Entries split over 0..=3 `X-Forwarded-For` headers, in order.
    fn headers(entries: &[Entry], cuts: &[prop::sample::Index]) -> Vec<String> {
        if entries.is_empty() {
            return Vec::new();
        }
        let mut at: Vec<usize> = cuts.iter().map(|c| c.index(entries.len())).collect();
        at.push(0);
        at.push(entries.len());
        at.sort_unstable();
        at.dedup();
        at.windows(2)
            .map(|w| {
                entries[w[0]..w[1]]
                    .iter()
                    .map(|e| e.text.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn client_ip_is_the_rightmost_untrusted_entry_never_one_to_its_left(
            peer in trusted_ip(),
            entries in prop::collection::vec(entry(), 0..8),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..3),
        ) {
            let headers = headers(&entries, &cuts);
            let refs: Vec<&str> = headers.iter().map(String::as_str).collect();
            let got = client_ip(Some(peer), &refs, &trusted());
            // The model: walk from the right over trusted proxies; stop at
            // the first untrusted address; garbage on the way is unknown.
            let mut expected = Some(peer);
            for e in entries.iter().rev() {
                match e.ip {
                    None => {
                        expected = None;
                        break;
                    }
                    Some(ip) => {
                        expected = Some(ip);
                        if !trusted().iter().any(|net| net.contains(ip)) {
                            break;
                        }
                    }
                }
            }
            prop_assert_eq!(got, expected, "headers {:?}", headers);
            // Stated directly: nothing left of the rightmost untrusted entry.
            if let Some(k) = entries.iter().rposition(|e| {
                e.ip.is_some_and(|ip| !trusted().iter().any(|net| net.contains(ip)))
            }) {
                let untrusted = entries[k].ip;
                prop_assert!(got.is_none() || got == untrusted, "{:?} left of {:?}", got, untrusted);
            }
        }

        #[test]
        fn client_ip_of_an_untrusted_peer_is_the_peer_whatever_it_forwards(
            peer in untrusted_ip(),
            headers in prop::collection::vec(any::<String>(), 0..4),
        ) {
            let refs: Vec<&str> = headers.iter().map(String::as_str).collect();
            prop_assert_eq!(client_ip(Some(peer), &refs, &trusted()), Some(peer));
            prop_assert_eq!(client_ip(Some(peer), &refs, &[]), Some(peer));
        }

        #[test]
        fn client_ip_never_panics_on_any_header_strings(
            peer in trusted_ip(),
            headers in prop::collection::vec(any::<String>(), 0..4),
            near in prop::collection::vec("[0-9a-fA-F.:\\[\\], %]{0,40}", 0..4),
        ) {
            for list in [&headers, &near] {
                let refs: Vec<&str> = list.iter().map(String::as_str).collect();
                if let Some(ip) = client_ip(Some(peer), &refs, &trusted()) {
                    // Whatever it names, it is the peer or was in the headers.
                    prop_assert!(ip == peer || !list.is_empty());
                }
                prop_assert_eq!(client_ip(None, &refs, &trusted()), None);
            }
        }
    }
}
