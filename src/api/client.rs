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
    let forms = [peer, peer.to_canonical()];
    let inside = |nets: &[Cidr]| {
        nets.iter()
            .any(|net| forms.iter().any(|ip| net.contains(*ip)))
    };
    api_allow.is_empty() || inside(api_allow) || inside(trust_proxy)
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
}
