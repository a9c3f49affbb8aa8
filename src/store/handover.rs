//! New deliveries handed from the writer to the scheduler in memory, so
//! that a delivery published while its webhook keeps up is never read back
//! from the database before it is sent.
//!
//! The writer offers the deliveries a batch created once that batch has
//! committed, each with its event's body (one shared copy per event), and
//! holds each as it does so (`holds.rs`). The scheduler takes what was
//! offered at the top of every round and lines it up. Whoever holds a
//! delivery first — this hand-over or the scheduler's due query, which
//! holds what it finds the same way — has it: the other passes it over, so
//! a delivery is never lined up twice.
//!
//! Nothing here is needed for correctness: a delivery the hand-over does
//! not carry (its queue full, the scheduler not running, the webhook's
//! queue long enough, the webhook unknown to the scheduler yet) is pending
//! in the database, and the scheduler's due query finds it. The scheduler
//! knows when it must look (`scheduler.rs`, `Hook::synced`): the writer
//! says so for everything that becomes due by any other way.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::holds::Holds;

/// At most this many deliveries wait for the scheduler to take them;
/// beyond, they are left to the due query.
pub const MAX_WAITING: usize = 4096;

/// A delivery just committed, due now, for its first attempt.
#[derive(Debug, Clone)]
pub struct Fresh {
    pub webhook_id: String,
    pub delivery_id: String,
    pub event_id: String,
    /// The event's body as stored, shared by the webhooks it goes to.
    pub payload: Arc<Vec<u8>>,
}

#[derive(Debug)]
pub struct Handover {
    waiting: Mutex<Vec<Fresh>>,
    holds: Arc<Holds>,
}

impl Handover {
    pub fn new(holds: Arc<Holds>) -> Handover {
        Handover {
            waiting: Mutex::new(Vec::new()),
            holds,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Fresh>> {
        // A push or a swap: whole after any panic.
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// From the writer, after the commit that created `fresh`: holds each
    /// one not held yet and queues it. False when some were left to the
    /// due query because the queue was full.
    pub fn offer(&self, fresh: Vec<Fresh>) -> bool {
        let mut waiting = self.lock();
        let mut all = true;
        for f in fresh {
            if waiting.len() >= MAX_WAITING {
                all = false;
                continue;
            }
            if self.holds.try_hold(&f.webhook_id, &f.delivery_id) {
                waiting.push(f);
            }
        }
        all
    }

    /// From the scheduler: everything offered since the last call, held.
    /// What it does not line up, it gives back to the holds.
    pub fn take(&self) -> Vec<Fresh> {
        std::mem::take(&mut *self.lock())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh(id: &str) -> Fresh {
        Fresh {
            webhook_id: "wh_a".into(),
            delivery_id: id.into(),
            event_id: "evt_1".into(),
            payload: Arc::new(b"{}".to_vec()),
        }
    }

    #[test]
    fn an_offer_holds_each_delivery_and_passes_over_one_held_already() {
        let holds = Arc::new(Holds::default());
        let handover = Handover::new(holds.clone());
        // The due query found this one first.
        assert!(holds.try_hold("wh_a", "dlv_2"));
        assert!(handover.offer(vec![fresh("dlv_1"), fresh("dlv_2")]));
        let taken: Vec<String> = handover.take().into_iter().map(|f| f.delivery_id).collect();
        assert_eq!(taken, ["dlv_1"]);
        assert!(holds.is_held("dlv_1") && holds.is_held("dlv_2"));
        assert!(handover.take().is_empty());
    }

    #[test]
    fn a_full_queue_leaves_the_rest_unheld_for_the_due_query() {
        let holds = Arc::new(Holds::default());
        let handover = Handover::new(holds.clone());
        let many = (0..MAX_WAITING + 2)
            .map(|i| fresh(&format!("dlv_{i}")))
            .collect();
        assert!(!handover.offer(many));
        assert_eq!(handover.take().len(), MAX_WAITING);
        assert!(!holds.is_held(&format!("dlv_{}", MAX_WAITING + 1)));
        assert_eq!(holds.count(Some("wh_a")), MAX_WAITING);
    }
}
