//! The writer's answer to one op: a slot the writer fills once and the
//! caller waits on.
//!
//! A crossbeam channel would do, but its blocking `recv` spins and calls
//! `sched_yield` several times before it sleeps, and an answer comes only
//! after a group commit (milliseconds), so the spinning never pays: in the
//! realistic benchmark's profile it was about 5% of the server's samples
//! (the yields and the kernel's switches), nearly all of it in requests
//! waiting for their publish. Here the caller sleeps on a condition
//! variable at once.
//!
//! The sending half is `Clone` (a batch is kept whole for its replay, see
//! `writer::Isolation`): the first send wins, and the waiter hears that
//! the writer has gone only when every sending half is dropped unsent.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// The writer's half: answers once.
pub struct Reply<T> {
    slot: Arc<Slot<T>>,
}

/// The caller's half: waits for the answer.
pub struct Answer<T> {
    slot: Arc<Slot<T>>,
}

/// The answer never came: every [`Reply`] was dropped unsent.
#[derive(Debug, PartialEq, Eq)]
pub struct Unanswered;

struct Slot<T> {
    state: Mutex<State<T>>,
    changed: Condvar,
}

struct State<T> {
    value: Option<T>,
    /// Sending halves alive.
    senders: usize,
}

/// A connected pair.
pub fn pair<T>() -> (Reply<T>, Answer<T>) {
    let slot = Arc::new(Slot {
        state: Mutex::new(State {
            value: None,
            senders: 1,
        }),
        changed: Condvar::new(),
    });
    (Reply { slot: slot.clone() }, Answer { slot })
}

impl<T> Slot<T> {
    /// A panic elsewhere while holding the lock leaves the state whole
    /// (each change is one assignment), so a poisoned lock is used as is.
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<T> Reply<T> {
    /// Answers, unless a clone already did. Nothing happens if the caller
    /// has gone away.
    pub fn send(self, value: T) {
        let mut state = self.slot.lock();
        if state.value.is_none() {
            state.value = Some(value);
            // Woken after the unlock, the waiter finds the lock free.
            drop(state);
            self.slot.changed.notify_one();
        }
    }
}

impl<T> Clone for Reply<T> {
    fn clone(&self) -> Self {
        self.slot.lock().senders += 1;
        Reply {
            slot: self.slot.clone(),
        }
    }
}

impl<T> Drop for Reply<T> {
    fn drop(&mut self) {
        let mut state = self.slot.lock();
        state.senders -= 1;
        // Only an unanswered waiter needs waking (each wake is a system
        // call, and `send` has woken an answered one already).
        if state.senders == 0 && state.value.is_none() {
            drop(state);
            self.slot.changed.notify_one();
        }
    }
}

impl<T> Answer<T> {
    /// Waits for the answer.
    pub fn recv(self) -> Result<T, Unanswered> {
        self.wait(None)
    }

    /// Waits at most `timeout` for the answer.
    pub fn recv_timeout(self, timeout: Duration) -> Result<T, Unanswered> {
        self.wait(Some(Instant::now() + timeout))
    }

    fn wait(self, deadline: Option<Instant>) -> Result<T, Unanswered> {
        let mut state = self.slot.lock();
        loop {
            if let Some(value) = state.value.take() {
                return Ok(value);
            }
            if state.senders == 0 {
                return Err(Unanswered);
            }
            state = match deadline {
                None => self
                    .slot
                    .changed
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(Unanswered);
                    }
                    self.slot
                        .changed
                        .wait_timeout(state, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
        }
    }

    /// The answer if it has come.
    #[cfg(test)]
    pub fn try_recv(&self) -> Option<T> {
        self.slot.lock().value.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_sent_from_another_thread_wakes_the_waiter() {
        let (reply, answer) = pair();
        let sender = std::thread::spawn(move || reply.send(7));
        assert_eq!(answer.recv(), Ok(7));
        sender.join().unwrap();
    }

    #[test]
    fn a_reply_dropped_unsent_tells_the_waiter_so() {
        let (reply, answer) = pair::<u8>();
        let sender = std::thread::spawn(move || drop(reply));
        assert_eq!(answer.recv(), Err(Unanswered));
        sender.join().unwrap();
    }

    #[test]
    fn the_waiter_hears_of_a_drop_only_when_every_clone_is_gone() {
        let (reply, answer) = pair();
        let kept = reply.clone();
        drop(reply);
        assert_eq!(answer.try_recv(), None);
        kept.send(3);
        assert_eq!(answer.recv(), Ok(3));
    }

    #[test]
    fn the_first_of_two_clones_to_answer_wins() {
        let (reply, answer) = pair();
        reply.clone().send(1);
        reply.send(2);
        assert_eq!(answer.recv(), Ok(1));
    }

    #[test]
    fn recv_timeout_gives_up_when_nothing_comes() {
        let (_reply, answer) = pair::<u8>();
        assert_eq!(
            answer.recv_timeout(Duration::from_millis(20)),
            Err(Unanswered)
        );
    }
}
