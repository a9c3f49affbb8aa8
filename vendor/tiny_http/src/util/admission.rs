//! hookbox patch: who may hold a connection at all, decided at accept.
//!
//! Every accepted connection holds a thread of the pool and one of the
//! server's `max_connections` slots until it ends. Upstream gave both to
//! whoever connected, so one client that opened connections and sent
//! nothing could take every slot, and with them the whole server. Now, as
//! soon as `accept()` returns and before a thread, a slot or a second file
//! descriptor is spent, in this order:
//!
//! 1. the peer filter (`ConnectionLimits::admit`): a peer it refuses is
//!    written `ConnectionLimits::refusal` (plain HTTP only, without
//!    waiting: one non-blocking write) and closed;
//! 2. the per-peer cap (`max_per_peer`), counted per client address (IPv6:
//!    per /64, the block one host is usually given), except for peers the
//!    exemption filter names (a reverse proxy carries many clients on one
//!    address);
//! 3. the server-wide cap (`max_connections`): when every slot is taken, an
//!    idle connection is closed to make room (`util::eviction`), and only
//!    if none is idle is the new one refused.
//!
//! Each refusal, and each eviction, is reported to
//! `ConnectionLimits::on_accept_event`, so that the application logs it
//! (hookbox: rate-limited) instead of this crate writing a line per
//! connection.

use std::collections::HashMap;
use std::io::Error as IoError;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, PoisonError};

/// hookbox patch: a yes-or-no question about a peer's address (see
/// `ConnectionLimits::admit` and `ConnectionLimits::per_peer_exempt`).
pub type PeerFilter = Arc<dyn Fn(IpAddr) -> bool + Send + Sync>;

/// hookbox patch: what the accept loop did not let through, or closed to
/// let a connection through.
#[derive(Debug)]
pub enum AcceptEvent<'a> {
    /// The peer filter refused this address.
    NotAdmitted(IpAddr),
    /// This address already holds `max_per_peer` connections.
    PeerFull { peer: IpAddr, limit: usize },
    /// The server already holds `max_connections` connections, none of
    /// them idle (or too many evictions are still winding down).
    ServerFull { limit: usize },
    /// The server held `max_connections` connections, so an idle one from
    /// `peer` (`None`: a Unix socket) was closed to make room for the new
    /// one (`util::eviction`).
    EvictedIdle { peer: Option<IpAddr>, limit: usize },
    /// `accept()` itself failed (for example EMFILE).
    AcceptFailed(&'a IoError),
}

/// hookbox patch: told of every [`AcceptEvent`], on the accept thread, so it
/// must be quick.
pub type AcceptObserver = Arc<dyn Fn(&AcceptEvent<'_>) + Send + Sync>;

/// Open connections per peer, for the per-peer cap.
pub(crate) struct PeerCounts {
    limit: usize,
    counts: Mutex<HashMap<IpAddr, usize>>,
}

impl PeerCounts {
    pub(crate) fn new(limit: usize) -> Arc<PeerCounts> {
        Arc::new(PeerCounts {
            limit,
            counts: Mutex::new(HashMap::new()),
        })
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// One more connection for `peer`, or `None` if it is at the limit.
    pub(crate) fn take(self: &Arc<PeerCounts>, peer: IpAddr) -> Option<PeerSlot> {
        let key = key(peer);
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(key).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(PeerSlot {
            counts: self.clone(),
            key,
        })
    }

    #[cfg(test)]
    fn open(&self, peer: IpAddr) -> usize {
        let counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        counts.get(&key(peer)).copied().unwrap_or(0)
    }

    #[cfg(test)]
    fn peers(&self) -> usize {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// One connection counted against its peer; given back on drop.
pub(crate) struct PeerSlot {
    counts: Arc<PeerCounts>,
    key: IpAddr,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut counts = self
            .counts
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// What a peer is counted as: its IPv4 address (an IPv4-mapped IPv6 peer
/// too), or its IPv6 /64.
pub(crate) fn key(peer: IpAddr) -> IpAddr {
    match peer.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_peer_gets_at_most_its_limit_and_slots_come_back_on_drop() {
        let counts = PeerCounts::new(2);
        let a = counts.take(ip("127.0.0.2")).unwrap();
        let b = counts.take(ip("127.0.0.2")).unwrap();
        assert!(counts.take(ip("127.0.0.2")).is_none());
        // Another address has its own count.
        let other = counts.take(ip("127.0.0.3")).unwrap();
        drop(a);
        let c = counts.take(ip("127.0.0.2")).unwrap();
        assert_eq!(counts.open(ip("127.0.0.2")), 2);
        drop((b, c, other));
        // Nothing is kept for addresses with no connection.
        assert_eq!(counts.peers(), 0);
    }

    #[test]
    fn ipv4_mapped_peers_count_as_ipv4_and_ipv6_peers_per_64() {
        let counts = PeerCounts::new(1);
        let _v4 = counts.take(ip("192.0.2.1")).unwrap();
        assert!(counts.take(ip("::ffff:192.0.2.1")).is_none());
        let _v6 = counts.take(ip("2001:db8:1:2::1")).unwrap();
        assert!(counts.take(ip("2001:db8:1:2:ffff::9")).is_none());
        assert!(counts.take(ip("2001:db8:1:3::1")).is_some());
    }
}
