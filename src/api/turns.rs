//! How many requests are answered at once (`--http-threads`).
//!
//! Each request is answered on its connection's own thread (tiny_http's,
//! see `Server::answer_on_connection_threads`); before it runs it takes a
//! turn, and at most `--http-threads` turns are out at a time. A request
//! waits for its commit while it holds its turn, so the limit bounds how
//! many requests share one group commit and how many read the database at
//! once, as the pool of API threads did before; what it no longer costs is
//! the two thread switches per request of handing each one to such a
//! thread and waking its connection after the answer.
//!
//! At a stop no turn is given any more (the request is answered 503
//! `shutting_down`), and the stop waits for the turns out to come back.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

pub struct Turns {
    state: Mutex<State>,
    changed: Condvar,
    limit: usize,
}

struct State {
    out: usize,
    waiting: usize,
    closed: bool,
}

/// A request's turn; given back when dropped.
pub struct Turn<'a> {
    turns: &'a Turns,
}

impl Turns {
    pub fn new(limit: usize) -> Turns {
        Turns {
            state: Mutex::new(State {
                out: 0,
                waiting: 0,
                closed: false,
            }),
            changed: Condvar::new(),
            limit: limit.max(1),
        }
    }

    /// Each change under the lock is one step, so a lock poisoned by a
    /// panic elsewhere still guards a whole state.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for a turn; `None` once [`Turns::close`] has been called.
    pub fn take(&self) -> Option<Turn<'_>> {
        let mut state = self.lock();
        loop {
            if state.closed {
                return None;
            }
            if state.out < self.limit {
                state.out += 1;
                return Some(Turn { turns: self });
            }
            state.waiting += 1;
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
            state.waiting -= 1;
        }
    }

    /// Gives no more turns, and waits until every turn out has come back
    /// or `deadline` has passed; how many are still out.
    pub fn close(&self, deadline: Instant) -> usize {
        let mut state = self.lock();
        state.closed = true;
        self.changed.notify_all();
        while state.out > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        state.out
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut state = self.turns.lock();
        state.out -= 1;
        if state.closed {
            // The stop waits for the last turn.
            self.turns.changed.notify_all();
        } else if state.waiting > 0 {
            self.turns.changed.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn no_more_than_the_limit_hold_a_turn_at_once() {
        let turns = Turns::new(3);
        let holding = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..12 {
                s.spawn(|| {
                    for _ in 0..200 {
                        let _turn = turns.take().unwrap();
                        let now = holding.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::yield_now();
                        holding.fetch_sub(1, Ordering::SeqCst);
                    }
                });
            }
        });
        assert_eq!(most.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn after_close_no_turn_is_given_and_close_waits_for_the_ones_out() {
        let turns = Turns::new(2);
        let held = turns.take().unwrap();
        std::thread::scope(|s| {
            let closing = s.spawn(|| turns.close(Instant::now() + Duration::from_secs(30)));
            // The close has begun once no turn is given.
            while let Some(turn) = turns.take() {
                drop(turn);
                std::thread::yield_now();
            }
            assert!(!closing.is_finished(), "close returned with a turn out");
            drop(held);
            assert_eq!(closing.join().unwrap(), 0);
        });
    }

    #[test]
    fn close_gives_up_at_its_deadline_and_counts_the_turns_still_out() {
        let turns = Turns::new(2);
        let _held = turns.take().unwrap();
        assert_eq!(turns.close(Instant::now() + Duration::from_millis(20)), 1);
    }

    #[test]
    fn a_request_waiting_for_a_turn_when_the_stop_begins_gets_none() {
        let turns = Turns::new(1);
        let held = turns.take().unwrap();
        std::thread::scope(|s| {
            let waiter = s.spawn(|| turns.take().is_none());
            // Close from another thread so that `held` can be dropped
            // while close waits for it.
            let closing = s.spawn(|| turns.close(Instant::now() + Duration::from_secs(30)));
            assert!(waiter.join().unwrap());
            drop(held);
            assert_eq!(closing.join().unwrap(), 0);
        });
    }
}
