//! hookbox patch: the open connections, and room for one more when every
//! slot is taken.
//!
//! `max_connections` bounds the threads and descriptors connections hold,
//! but a slot held by an idle connection — a kept-alive one waiting for its
//! next request (up to the socket timeout), or a new one that has sent
//! nothing yet (up to the first-byte deadline) — protects nobody. A few
//! addresses, each within its per-peer cap, could fill every slot with
//! connections that sent one cheap request and then idled, and every other
//! client was closed at accept. So every accepted connection is registered
//! here, with its [`RequestDeadline`] (which knows whether it is idle) and a
//! [`Closer`] for its socket, until its thread ends ([`Registered`] is
//! dropped with it). When a new connection finds every slot taken,
//! [`Registry::make_room`] closes one idle connection — of the peer holding
//! the most open connections (IPv6: per /64, as for the per-peer cap), the
//! one idle the longest (among peers that hold equally many, the one idle
//! the longest of all) — and the new connection takes its slot. A
//! connection reading or answering a request is never closed; only if no
//! connection is idle is the new one refused.
//!
//! The evicted connection's socket is shut down (both ways) from the accept
//! thread; its own thread sees end of file, or a failed read, and ends,
//! giving the slot back, within microseconds of getting a CPU. Until then
//! it still counts as open, so the number open may exceed
//! `max_connections` by the evictions in flight, which are at most
//! [`MAX_EVICTING`]. With that many in flight, the accept thread waits (up
//! to [`EVICTION_WAIT`]) for one to end before it evicts again — new
//! connections wait in the listen backlog meanwhile, so accepting is paced
//! by how fast evicted threads end — and only then refuses the new one.
//! (On two busy cores, 16 attacker threads reconnecting as fast as they
//! could had more than 8 evictions in flight at times; refusing then turned
//! away real clients.)
//!
//! The scan runs only when the server is full; below the cap, room costs
//! one uncontended lock. Lock order: the registry, then a deadline (the
//! connection threads take deadlines only).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::util::admission::key;
use crate::util::{Closer, RequestDeadline};

/// At most this many evicted connections may be winding down at once, so
/// the number open stays within `max_connections + MAX_EVICTING`.
pub(crate) const MAX_EVICTING: usize = 16;
/// How long a new connection may wait, on the accept thread, for an
/// eviction in flight to wind down when `MAX_EVICTING` are.
pub(crate) const EVICTION_WAIT: Duration = Duration::from_millis(100);

/// Every open connection, by peer.
pub(crate) struct Registry {
    limit: usize,
    inner: Mutex<Inner>,
    /// Signalled when an evicted connection has ended.
    wound_down: Condvar,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    /// Registered and not yet dropped, evicted ones included.
    open: usize,
    /// Evicted and not yet dropped.
    evicting: usize,
    /// By counting key (`None`: a Unix socket's peer).
    peers: HashMap<Option<IpAddr>, Peer>,
}

#[derive(Default)]
struct Peer {
    /// Its connections not evicted.
    live: usize,
    connections: HashMap<u64, Entry>,
}

struct Entry {
    peer: Option<IpAddr>,
    deadline: Arc<RequestDeadline>,
    closer: Arc<Closer>,
    evicted: bool,
}

/// Whether a new connection may have a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Room {
    /// A slot is free.
    Free,
    /// A slot was freed by closing an idle connection of this peer.
    Evicted(Option<IpAddr>),
    /// Every slot is taken by a connection that is not idle (or too many
    /// evictions are in flight).
    Full,
}

impl Registry {
    pub(crate) fn new(limit: usize) -> Arc<Registry> {
        Arc::new(Registry {
            limit,
            inner: Mutex::new(Inner::default()),
            wound_down: Condvar::new(),
        })
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        // Counts and maps, each update complete before the lock is let go.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Finds a slot for a new connection, evicting an idle connection if
    /// every slot is taken. Called on the accept thread, before the new
    /// connection is registered.
    pub(crate) fn make_room(&self) -> Room {
        let mut inner = self.inner();
        let until = Instant::now() + EVICTION_WAIT;
        loop {
            if inner.open - inner.evicting < self.limit {
                return Room::Free;
            }
            if inner.evicting < MAX_EVICTING {
                break;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Room::Full;
            }
            inner = match self.wound_down.wait_timeout(inner, left) {
                Ok((inner, _)) => inner,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        // Peers by connections held, most first; within the first group of
        // equals that has an idle connection, the one idle the longest.
        let mut peers: Vec<(usize, Option<IpAddr>)> = inner
            .peers
            .iter()
            .filter(|(_, peer)| peer.live > 0)
            .map(|(key, peer)| (peer.live, *key))
            .collect();
        peers.sort_unstable_by(|a, b| b.0.cmp(&a.0));
        let mut victim: Option<(Instant, Option<IpAddr>, u64)> = None;
        for (i, (live, key)) in peers.iter().enumerate() {
            if let Some(peer) = inner.peers.get(key) {
                for (id, entry) in &peer.connections {
                    if let Some(since) = entry.deadline.idle_since() {
                        if victim.is_none_or(|(oldest, _, _)| since < oldest) {
                            victim = Some((since, *key, *id));
                        }
                    }
                }
            }
            let group_ends = peers.get(i + 1).is_none_or(|next| next.0 < *live);
            if victim.is_some() && group_ends {
                break;
            }
        }
        let Some((_, key, id)) = victim else {
            return Room::Full;
        };
        let Some(peer) = inner.peers.get_mut(&key) else {
            return Room::Full;
        };
        let Some(entry) = peer.connections.get_mut(&id) else {
            return Room::Full;
        };
        // It may have begun a request since the scan looked.
        if !entry.deadline.evict_if_idle() {
            return Room::Full;
        }
        entry.evicted = true;
        entry.closer.close();
        let evicted = entry.peer;
        peer.live -= 1;
        inner.evicting += 1;
        Room::Evicted(evicted)
    }

    /// Counts a new connection from `peer` as open until the returned
    /// guard is dropped.
    pub(crate) fn register(
        self: &Arc<Registry>,
        peer: Option<IpAddr>,
        deadline: Arc<RequestDeadline>,
        closer: Arc<Closer>,
    ) -> Registered {
        let key = peer.map(key);
        let mut inner = self.inner();
        let id = inner.next_id;
        inner.next_id += 1;
        inner.open += 1;
        let slot = inner.peers.entry(key).or_default();
        slot.live += 1;
        slot.connections.insert(
            id,
            Entry {
                peer,
                deadline,
                closer,
                evicted: false,
            },
        );
        Registered {
            registry: self.clone(),
            key,
            id,
        }
    }

    #[cfg(test)]
    fn counts(&self) -> (usize, usize, usize) {
        let inner = self.inner();
        (inner.open, inner.evicting, inner.peers.len())
    }
}

/// One open connection in the [`Registry`]; removed on drop.
pub(crate) struct Registered {
    registry: Arc<Registry>,
    key: Option<IpAddr>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut inner = self.registry.inner();
        let Some(peer) = inner.peers.get_mut(&self.key) else {
            return;
        };
        let Some(entry) = peer.connections.remove(&self.id) else {
            return;
        };
        if !entry.evicted {
            peer.live -= 1;
        }
        if peer.connections.is_empty() {
            inner.peers.remove(&self.key);
        }
        inner.open -= 1;
        if entry.evicted {
            inner.evicting -= 1;
            self.registry.wound_down.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::Connection;
    use std::io::Read;
    use std::os::unix::net::UnixStream;

    /// A registered connection, and the client's end of its socket.
    struct Open {
        registered: Registered,
        deadline: Arc<RequestDeadline>,
        client: UnixStream,
    }

    impl Open {
        /// Whether the server's end was shut down.
        fn closed(&mut self) -> bool {
            self.client.set_nonblocking(true).unwrap();
            matches!(self.client.read(&mut [0; 1]), Ok(0))
        }
    }

    fn open(registry: &Arc<Registry>, peer: &str) -> Open {
        let (client, server) = UnixStream::pair().unwrap();
        let deadline = RequestDeadline::new(
            Some(Duration::from_secs(10)),
            Some(Duration::from_secs(30)),
            Some(Duration::from_secs(3)),
        );
        let closer = Arc::new(Closer::new(Connection::from(server)));
        let registered = registry.register(Some(peer.parse().unwrap()), deadline.clone(), closer);
        Open {
            registered,
            deadline,
            client,
        }
    }

    /// Mid-request: not idle.
    fn busy(open: &Open) {
        open.deadline.request_started();
    }

    #[test]
    fn below_the_limit_there_is_room_without_eviction() {
        let registry = Registry::new(2);
        let mut a = open(&registry, "192.0.2.1");
        assert_eq!(registry.make_room(), Room::Free);
        let _b = open(&registry, "192.0.2.1");
        assert!(!a.closed());
        drop(a.registered);
        assert_eq!(registry.make_room(), Room::Free);
    }

    #[test]
    fn the_longest_idle_connection_of_the_peer_with_most_is_closed() {
        let registry = Registry::new(4);
        let mut small = open(&registry, "192.0.2.1");
        let mut big: Vec<Open> = (0..3).map(|_| open(&registry, "192.0.2.2")).collect();
        // The first of the big peer's is mid-request; the second idles
        // longest among the rest.
        busy(&big[0]);
        big[1].deadline.request_started();
        big[1].deadline.request_read();
        big[1].deadline.expect_request();
        std::thread::sleep(Duration::from_millis(2));
        big[2].deadline.request_started();
        big[2].deadline.request_read();
        big[2].deadline.expect_request();
        assert_eq!(
            registry.make_room(),
            Room::Evicted(Some("192.0.2.2".parse().unwrap()))
        );
        assert!(big[1].closed());
        assert!(!big[0].closed() && !big[2].closed() && !small.closed());
        assert_eq!(registry.counts(), (4, 1, 2));
        // Not picked twice: the next one is big[2] (the big peer still
        // holds 2 live, the small one 1).
        let _new = open(&registry, "192.0.2.3");
        assert_eq!(
            registry.make_room(),
            Room::Evicted(Some("192.0.2.2".parse().unwrap()))
        );
        assert!(big[2].closed());
        assert_eq!(registry.counts(), (5, 2, 3));
        // The evicted ones' threads end: their slots come back.
        let evicted: Vec<Open> = big.drain(1..).collect();
        drop(evicted);
        assert_eq!(registry.counts(), (3, 0, 3));
        assert_eq!(registry.make_room(), Room::Free);
    }

    #[test]
    fn among_peers_holding_equally_many_the_longest_idle_goes() {
        let registry = Registry::new(2);
        let mut first = open(&registry, "192.0.2.1");
        std::thread::sleep(Duration::from_millis(2));
        let mut second = open(&registry, "2001:db8::1");
        assert_eq!(
            registry.make_room(),
            Room::Evicted(Some("192.0.2.1".parse().unwrap()))
        );
        assert!(first.closed() && !second.closed());
    }

    #[test]
    fn a_connection_mid_request_is_never_closed() {
        let registry = Registry::new(3);
        let opens: Vec<Open> = (0..3)
            .map(|i| open(&registry, &format!("192.0.2.{i}")))
            .collect();
        for open in &opens {
            busy(open);
        }
        assert_eq!(registry.make_room(), Room::Full);
        // Answering (read, not yet waiting for the next) is not idle either.
        opens[1].deadline.request_read();
        assert_eq!(registry.make_room(), Room::Full);
        opens[1].deadline.expect_request();
        assert_eq!(
            registry.make_room(),
            Room::Evicted(Some("192.0.2.1".parse().unwrap()))
        );
        let closed: Vec<bool> = opens.into_iter().map(|mut open| open.closed()).collect();
        assert_eq!(closed, [false, true, false]);
    }

    #[test]
    fn evictions_in_flight_are_bounded() {
        let registry = Registry::new(1);
        let first = open(&registry, "192.0.2.1");
        let mut held = Vec::new();
        for _ in 0..MAX_EVICTING {
            assert!(matches!(registry.make_room(), Room::Evicted(_)));
            held.push(open(&registry, "192.0.2.1"));
        }
        // Every new one is idle, but MAX_EVICTING are winding down: after
        // waiting for one to end, none did.
        let started = Instant::now();
        assert_eq!(registry.make_room(), Room::Full);
        assert!(started.elapsed() >= EVICTION_WAIT);
        assert_eq!(registry.counts().0, 1 + MAX_EVICTING);
        // One ending while it waits makes room for another eviction.
        let ends = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(10));
            drop(first);
        });
        let started = Instant::now();
        assert!(matches!(registry.make_room(), Room::Evicted(_)));
        assert!(started.elapsed() < EVICTION_WAIT);
        ends.join().unwrap();
    }

    #[test]
    fn ipv6_peers_count_per_64() {
        let registry = Registry::new(3);
        let _a = open(&registry, "2001:db8:0:1::1");
        let _b = open(&registry, "2001:db8:0:1::2");
        let _c = open(&registry, "192.0.2.9");
        // The /64 holds two: one of them goes, though 192.0.2.9 idled
        // longer than the second.
        assert_eq!(
            registry.make_room(),
            Room::Evicted(Some("2001:db8:0:1::1".parse().unwrap()))
        );
    }
}
