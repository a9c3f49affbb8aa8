//! hookbox patch: a total deadline for reading one request.
//!
//! A socket read timeout bounds one `read()`, not a request: a client that
//! sends a byte every few seconds never trips it, and holds its connection's
//! thread for as long as it likes (slowloris). `RequestDeadline` bounds the
//! whole of a request's reading — the TLS handshake of a new connection, the
//! request line, the headers, and the body read ahead on the connection's
//! thread — and `TimedConnection` enforces it under every layer (TLS
//! included) by giving each read at most the time that is left.
//!
//! When the clock starts:
//!
//! - a new connection: at accept, so a client that connects and sends
//!   nothing, or stalls in the TLS handshake, is closed at the deadline;
//!   and its first byte (of the request, or of the TLS handshake) must
//!   come within the shorter first-byte deadline, if one is set, so that
//!   idle new sockets are shed in seconds;
//! - a kept-alive connection: at the first byte of the next request (or of a
//!   TLS record), so an idle connection between requests is bounded by the
//!   socket's ordinary read timeout instead.
//!
//! Once the request is read (head and read-ahead body), the deadline is off
//! until the connection waits for its next request. A read that runs into
//! the deadline fails with `ErrorKind::TimedOut`; so does a read timeout of
//! the socket itself (which std reports as `WouldBlock` on Unix).
//!
//! The phase also tells whether a connection is idle — waiting for its
//! next request, or a new one before its first byte — which is what the
//! accept loop may close to make room when every slot is taken
//! (`util::eviction`). Deciding that a connection is idle and marking it
//! evicted happen under one lock ([`RequestDeadline::evict_if_idle`]), so
//! a connection seen mid-request is never chosen, and once marked, every
//! further read on it fails at once.

use std::io::{Error as IoError, ErrorKind, Read, Result as IoResult, Write};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::connection::Connection;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Not reading a request: reads get the socket's ordinary timeout.
    Off,
    /// Waiting for the next request; its first byte starts the clock.
    Waiting,
    /// Reading a request that must be complete by then.
    Until(Instant),
    /// A new connection whose first byte must arrive by `by`; after it, the
    /// request must be complete by `then` (if set).
    FirstByte { by: Instant, then: Option<Instant> },
}

#[derive(Debug)]
struct State {
    phase: Phase,
    /// The read timeout last set on the socket.
    applied: Option<Duration>,
    /// Since when the connection has been idle (accept, or the end of its
    /// last request), while `phase` is `Waiting` or `FirstByte`.
    idle_since: Instant,
    /// Closed to make room for another connection: reads fail.
    evicted: bool,
}

/// The deadline of the request a connection is reading. Shared by the
/// connection's reader (which says when requests begin and end) and its
/// socket (which enforces it).
#[derive(Debug)]
pub(crate) struct RequestDeadline {
    /// How long one request may take to read; `None`: no deadline.
    limit: Option<Duration>,
    /// The socket's ordinary read timeout.
    idle: Option<Duration>,
    state: Mutex<State>,
}

impl RequestDeadline {
    /// A deadline for a connection accepted now, whose socket's read timeout
    /// is `idle`. The first request's clock starts now; its first byte must
    /// arrive within `first_byte`, if set.
    pub(crate) fn new(
        limit: Option<Duration>,
        idle: Option<Duration>,
        first_byte: Option<Duration>,
    ) -> Arc<RequestDeadline> {
        let now = Instant::now();
        let then = limit.map(|limit| now + limit);
        let phase = match (first_byte, then) {
            (Some(first_byte), then) => Phase::FirstByte {
                by: now + first_byte,
                then,
            },
            (None, Some(then)) => Phase::Until(then),
            (None, None) => Phase::Off,
        };
        Arc::new(RequestDeadline {
            limit,
            idle,
            state: Mutex::new(State {
                phase,
                applied: idle,
                idle_since: now,
                evicted: false,
            }),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is two plain values, valid whatever a panicking holder
        // was doing.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The connection is about to wait for its next request. (The first
    /// request's clock has been running since accept.)
    pub(crate) fn expect_request(&self) {
        let mut state = self.state();
        if state.phase == Phase::Off {
            state.phase = Phase::Waiting;
            state.idle_since = Instant::now();
        }
    }

    /// A byte of the request has arrived: start the clock if it waits (a
    /// new connection's has run since accept).
    pub(crate) fn request_started(&self) {
        let mut state = self.state();
        match (state.phase, self.limit) {
            (Phase::Waiting, Some(limit)) => state.phase = Phase::Until(Instant::now() + limit),
            (Phase::Waiting, None) => state.phase = Phase::Off,
            (Phase::FirstByte { then, .. }, _) => {
                state.phase = then.map_or(Phase::Off, Phase::Until);
            }
            _ => {}
        }
    }

    /// The request, head and read-ahead body, has been read.
    pub(crate) fn request_read(&self) {
        self.state().phase = Phase::Off;
    }

    /// Since when the connection has been idle — waiting for its next
    /// request, or new and without a first byte yet — or `None` if it is
    /// reading or answering a request, or already evicted. (Without a
    /// first-byte deadline, a new connection counts as reading its first
    /// request from accept.)
    pub(crate) fn idle_since(&self) -> Option<Instant> {
        let state = self.state();
        match state.phase {
            _ if state.evicted => None,
            Phase::Waiting | Phase::FirstByte { .. } => Some(state.idle_since),
            Phase::Off | Phase::Until(_) => None,
        }
    }

    /// Marks the connection evicted if it is idle now, so that it can be
    /// closed without cutting a request short; `true` if it was. From then
    /// on every read fails.
    pub(crate) fn evict_if_idle(&self) -> bool {
        let mut state = self.state();
        let idle = matches!(state.phase, Phase::Waiting | Phase::FirstByte { .. });
        if idle && !state.evicted {
            state.evicted = true;
            return true;
        }
        false
    }

    /// Before a read: fails if the deadline has passed; otherwise returns
    /// the read timeout to set on the socket, if it must change.
    fn before_read(&self) -> IoResult<Option<Option<Duration>>> {
        let mut state = self.state();
        if state.evicted {
            return Err(IoError::new(
                ErrorKind::ConnectionAborted,
                "the idle connection was closed to make room for another",
            ));
        }
        let deadline = match state.phase {
            Phase::Off | Phase::Waiting => None,
            Phase::Until(deadline) => Some(deadline),
            Phase::FirstByte { by, then } => Some(then.map_or(by, |then| by.min(then))),
        };
        let wanted = match deadline {
            None => self.idle,
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(timed_out());
                }
                Some(self.idle.map_or(left, |idle| idle.min(left)))
            }
        };
        if wanted == state.applied {
            return Ok(None);
        }
        state.applied = wanted;
        Ok(Some(wanted))
    }

    /// After a read that returned `n` bytes.
    fn after_read(&self, n: usize) {
        if n > 0 {
            self.request_started();
        }
    }
}

fn timed_out() -> IoError {
    IoError::new(ErrorKind::TimedOut, "the request was not received in time")
}

/// A socket whose reads keep to its connection's [`RequestDeadline`].
pub(crate) struct TimedConnection {
    connection: Connection,
    deadline: Arc<RequestDeadline>,
}

impl TimedConnection {
    pub(crate) fn new(connection: Connection, deadline: Arc<RequestDeadline>) -> TimedConnection {
        TimedConnection {
            connection,
            deadline,
        }
    }

    pub(crate) fn connection(&self) -> &Connection {
        &self.connection
    }

    pub(crate) fn connection_mut(&mut self) -> &mut Connection {
        &mut self.connection
    }

    pub(crate) fn try_clone(&self) -> IoResult<TimedConnection> {
        Ok(TimedConnection {
            connection: self.connection.try_clone()?,
            deadline: self.deadline.clone(),
        })
    }
}

impl Read for TimedConnection {
    fn read(&mut self, buf: &mut [u8]) -> IoResult<usize> {
        if let Some(timeout) = self.deadline.before_read()? {
            self.connection.set_read_timeout(timeout)?;
        }
        match self.connection.read(buf) {
            Ok(n) => {
                self.deadline.after_read(n);
                Ok(n)
            }
            // A blocking socket reports its read timeout as WouldBlock.
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                Err(timed_out())
            }
            Err(e) => Err(e),
        }
    }
}

impl Write for TimedConnection {
    fn write(&mut self, buf: &[u8]) -> IoResult<usize> {
        self.connection.write(buf)
    }

    fn flush(&mut self) -> IoResult<()> {
        self.connection.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_connection_starts_its_clock_at_accept() {
        let deadline = RequestDeadline::new(Some(Duration::from_secs(10)), None, None);
        deadline.expect_request();
        assert!(matches!(deadline.state().phase, Phase::Until(_)));
        let timeout = deadline.before_read().unwrap().unwrap().unwrap();
        assert!(timeout <= Duration::from_secs(10));
    }

    #[test]
    fn a_kept_alive_connection_starts_its_clock_at_the_first_byte() {
        let idle = Some(Duration::from_secs(30));
        let deadline = RequestDeadline::new(Some(Duration::from_secs(10)), idle, None);
        deadline.request_read();
        deadline.expect_request();
        assert_eq!(deadline.state().phase, Phase::Waiting);
        // Waiting, reads get the idle timeout, which is what the socket has.
        assert_eq!(deadline.before_read().unwrap(), None);
        deadline.after_read(0);
        assert_eq!(deadline.state().phase, Phase::Waiting);
        deadline.after_read(1);
        assert!(matches!(deadline.state().phase, Phase::Until(_)));
        let timeout = deadline.before_read().unwrap().unwrap().unwrap();
        assert!(timeout <= Duration::from_secs(10));
        // Done: the idle timeout goes back on.
        deadline.request_read();
        assert_eq!(deadline.before_read().unwrap(), Some(idle));
    }

    #[test]
    fn a_passed_deadline_fails_the_read() {
        let deadline = RequestDeadline::new(Some(Duration::ZERO), None, None);
        let error = deadline.before_read().unwrap_err();
        assert_eq!(error.kind(), ErrorKind::TimedOut);
    }

    #[test]
    fn a_new_connection_gets_the_shorter_first_byte_deadline_until_its_first_byte() {
        let deadline = RequestDeadline::new(
            Some(Duration::from_secs(10)),
            Some(Duration::from_secs(30)),
            Some(Duration::from_millis(500)),
        );
        let timeout = deadline.before_read().unwrap().unwrap().unwrap();
        assert!(timeout <= Duration::from_millis(500), "{:?}", timeout);
        // The first byte: the request's own deadline, counted from accept.
        deadline.after_read(1);
        let timeout = deadline.before_read().unwrap().unwrap().unwrap();
        assert!(timeout > Duration::from_secs(9), "{:?}", timeout);
        assert!(timeout <= Duration::from_secs(10), "{:?}", timeout);
        // A passed first-byte deadline fails the read.
        let silent = RequestDeadline::new(None, None, Some(Duration::ZERO));
        assert_eq!(silent.before_read().unwrap_err().kind(), ErrorKind::TimedOut);
    }

    #[test]
    fn only_a_connection_between_requests_or_before_its_first_byte_is_idle() {
        let first_byte = Some(Duration::from_secs(3));
        let deadline = RequestDeadline::new(Some(Duration::from_secs(10)), None, first_byte);
        let accepted = deadline.idle_since().expect("idle before its first byte");
        deadline.after_read(1);
        assert_eq!(deadline.idle_since(), None, "mid-request");
        assert!(!deadline.evict_if_idle(), "evicted mid-request");
        deadline.request_read();
        assert_eq!(deadline.idle_since(), None, "answering");
        assert!(!deadline.evict_if_idle(), "evicted while answering");
        deadline.expect_request();
        let waiting = deadline.idle_since().expect("idle between requests");
        assert!(waiting >= accepted);
        // Once evicted: not idle any more, not evicted twice, reads fail.
        assert!(deadline.evict_if_idle());
        assert_eq!(deadline.idle_since(), None);
        assert!(!deadline.evict_if_idle());
        let error = deadline.before_read().unwrap_err();
        assert_eq!(error.kind(), ErrorKind::ConnectionAborted);
        // Without a first-byte deadline, a new connection reads its first
        // request from accept; without any deadline it is idle between
        // requests all the same.
        let new = RequestDeadline::new(Some(Duration::from_secs(10)), None, None);
        assert_eq!(new.idle_since(), None);
        let unbounded = RequestDeadline::new(None, None, None);
        unbounded.expect_request();
        assert!(unbounded.idle_since().is_some());
        unbounded.after_read(1);
        assert_eq!(unbounded.idle_since(), None);
    }

    #[test]
    fn no_limit_means_no_deadline() {
        let deadline = RequestDeadline::new(None, None, None);
        deadline.expect_request();
        deadline.request_started();
        assert_eq!(deadline.state().phase, Phase::Off);
        assert_eq!(deadline.before_read().unwrap(), None);
    }
}
