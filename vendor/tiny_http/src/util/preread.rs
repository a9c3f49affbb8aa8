//! hookbox patch: who may have a body read ahead, and how many bytes of
//! bodies may be read ahead at once across all connections.
//!
//! Bodies up to `preread_body_bytes` are read into memory on the
//! connection's own thread before the request is handed out (item 4 of
//! `PATCHES.md`). Unchecked, that lets anyone hold `preread_body_bytes` of
//! the server's memory per connection for as long as the request deadline
//! allows, before the application has looked at who is asking. Two checks
//! come first now, once the head is parsed:
//!
//! - the peer filter (`ConnectionLimits::preread_allowed`): a peer it
//!   refuses has no body read at all;
//! - the budget (`ConnectionLimits::preread_budget`): a body is read only
//!   if its bytes fit in what is left of the budget, reserved before the
//!   read (all of a `Content-Length` at once; a chunked body step by step
//!   as it grows) and given back when the request is dropped.
//!
//! A refused body is left unread and the request is handed out anyway, with
//! [`PrereadRefused`] saying why (`Request::preread_refused`), so that the
//! application answers it; the body guard then closes the connection after
//! the answer, as for any body left unread.

use std::fmt;
use std::io::{Error as IoError, ErrorKind, Read, Result as IoResult};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// hookbox patch: whether the body of a request from this peer may be read
/// ahead (see `ConnectionLimits::preread_allowed`).
pub type PrereadFilter = Arc<dyn Fn(IpAddr) -> bool + Send + Sync>;

/// hookbox patch: why a request's body was not read ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrereadRefused {
    /// The peer filter refused the peer.
    Peer,
    /// The body did not fit in what was left of the budget.
    Budget,
}

impl fmt::Display for PrereadRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PrereadRefused::Peer => "the peer may not send a body",
            PrereadRefused::Budget => "the read-ahead budget is spent",
        })
    }
}

/// hookbox patch: the bytes of request bodies read ahead at once, across
/// all connections of one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrereadBudget {
    /// Bytes of bodies held in memory at once, at most.
    pub total: usize,
    /// The last `reserve` bytes of `total` go only to bodies of at most
    /// `small_body` bytes, so that small requests still get through while
    /// large ones have spent the rest.
    pub reserve: usize,
    /// See `reserve`.
    pub small_body: usize,
}

/// What a connection needs to decide on reading a body ahead; one for all
/// connections of a server.
pub(crate) struct Preread {
    /// Bodies up to this many bytes are read ahead.
    pub(crate) max_body: usize,
    pub(crate) allowed: Option<PrereadFilter>,
    pub(crate) budget: Option<Arc<Budget>>,
}

impl Preread {
    /// Read ahead bodies up to `max_body` bytes, from anyone, unbudgeted.
    pub(crate) fn unlimited(max_body: usize) -> Preread {
        Preread {
            max_body,
            allowed: None,
            budget: None,
        }
    }

    /// Whether the filter lets `peer` have a body read ahead (a peer without
    /// an IP address, on a UNIX socket, always may).
    pub(crate) fn peer_allowed(&self, peer: Option<std::net::SocketAddr>) -> bool {
        match (&self.allowed, peer) {
            (Some(allowed), Some(peer)) => allowed(peer.ip()),
            _ => true,
        }
    }

    /// An empty reservation under this server's budget.
    pub(crate) fn reservation(&self) -> Reservation {
        Reservation::new(self.budget.clone())
    }
}

/// The shared count of bytes reserved under a [`PrereadBudget`].
#[derive(Debug)]
pub(crate) struct Budget {
    limits: PrereadBudget,
    used: AtomicUsize,
}

impl Budget {
    pub(crate) fn new(limits: PrereadBudget) -> Arc<Budget> {
        Arc::new(Budget {
            limits,
            used: AtomicUsize::new(0),
        })
    }

    /// Bytes reserved now, across all connections.
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

/// What the body of one request has reserved; given back on drop, on every
/// path (answered, dropped unanswered, failed while reading).
#[derive(Debug)]
pub(crate) struct Reservation {
    budget: Option<Arc<Budget>>,
    bytes: usize,
}

impl Reservation {
    /// An empty reservation under `budget` (`None`: no budget, every
    /// reservation succeeds).
    pub(crate) fn new(budget: Option<Arc<Budget>>) -> Reservation {
        Reservation { budget, bytes: 0 }
    }

    /// Reserves `more` bytes for this body, if the budget has them; a body
    /// past `small_body` may not take the last `reserve` bytes.
    pub(crate) fn grow(&mut self, more: usize) -> bool {
        let Some(budget) = &self.budget else {
            self.bytes = self.bytes.saturating_add(more);
            return true;
        };
        let Some(body) = self.bytes.checked_add(more) else {
            return false;
        };
        let limits = budget.limits;
        let cap = if body <= limits.small_body {
            limits.total
        } else {
            limits.total.saturating_sub(limits.reserve)
        };
        let taken = budget
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(more).filter(|after| *after <= cap)
            });
        if taken.is_ok() {
            self.bytes = body;
        }
        taken.is_ok()
    }

    /// Gives back what this body reserved beyond `bytes`.
    pub(crate) fn shrink_to(&mut self, bytes: usize) {
        if bytes < self.bytes {
            if let Some(budget) = &self.budget {
                budget.used.fetch_sub(self.bytes - bytes, Ordering::AcqRel);
            }
            self.bytes = bytes;
        }
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.shrink_to(0);
    }
}

/// A body read ahead, with the reservation that pays for it: both go when
/// the request goes.
pub(crate) struct Reserved<R> {
    inner: R,
    _reservation: Reservation,
}

impl<R> Reserved<R> {
    pub(crate) fn new(inner: R, reservation: Reservation) -> Reserved<R> {
        Reserved {
            inner,
            _reservation: reservation,
        }
    }
}

impl<R: Read> Read for Reserved<R> {
    fn read(&mut self, buf: &mut [u8]) -> IoResult<usize> {
        self.inner.read(buf)
    }
}

/// The body of a request whose body was not read ahead: reading it fails,
/// so nothing reads it on a thread that answers requests. (Wrapped in the
/// body guard, which closes the connection when the request goes.)
pub(crate) struct Unread(pub(crate) PrereadRefused);

impl Read for Unread {
    fn read(&mut self, _buf: &mut [u8]) -> IoResult<usize> {
        Err(IoError::new(
            ErrorKind::Other,
            format!("the request body was not read: {}", self.0),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget() -> Arc<Budget> {
        Budget::new(PrereadBudget {
            total: 100,
            reserve: 20,
            small_body: 10,
        })
    }

    #[test]
    fn large_bodies_stop_short_of_the_reserve_and_small_ones_may_use_it() {
        let budget = budget();
        let mut large = Reservation::new(Some(budget.clone()));
        assert!(large.grow(50));
        let mut second = Reservation::new(Some(budget.clone()));
        assert!(second.grow(30));
        assert_eq!(budget.used(), 80);
        // A large body may not take the reserve...
        let mut third = Reservation::new(Some(budget.clone()));
        assert!(!third.grow(11));
        assert_eq!(budget.used(), 80);
        // ...small ones may, up to the total.
        let small: Vec<Reservation> = (0..2)
            .map(|_| {
                let mut r = Reservation::new(Some(budget.clone()));
                assert!(r.grow(10));
                r
            })
            .collect();
        assert_eq!(budget.used(), 100);
        let mut one_more = Reservation::new(Some(budget.clone()));
        assert!(!one_more.grow(1));
        drop(small);
        assert_eq!(budget.used(), 80);
        // A small body that grows past `small_body` is a large one.
        let mut growing = Reservation::new(Some(budget.clone()));
        assert!(growing.grow(10));
        assert!(!growing.grow(1));
        assert_eq!(growing.bytes(), 10);
    }

    #[test]
    fn every_reservation_is_given_back() {
        let budget = budget();
        {
            let mut r = Reservation::new(Some(budget.clone()));
            assert!(r.grow(60));
            r.shrink_to(25);
            assert_eq!(budget.used(), 25);
            let _reader = Reserved::new(std::io::empty(), r);
            assert_eq!(budget.used(), 25);
        }
        assert_eq!(budget.used(), 0);
        let mut whole = Reservation::new(Some(budget.clone()));
        assert!(whole.grow(80));
        drop(whole);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn no_budget_refuses_nothing() {
        let mut r = Reservation::new(None);
        assert!(r.grow(usize::MAX / 2));
        assert!(r.grow(usize::MAX / 2));
    }
}
