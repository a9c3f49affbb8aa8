//! The deliveries the engine holds: found due and lined up for a worker,
//! or being attempted. They stay `pending` in the database, and read
//! `delivering` everywhere hookbox shows a delivery.
//!
//! A hold is not written down. It means nothing after a crash or a stop
//! (every pending delivery is then due again, which is what the database
//! already says), so writing `delivering` and back for every delivery was
//! an update of three indexes that bought nothing durable: 25,000 of the
//! 300,000 instructions an event cost end to end under callgrind.
//!
//! The scheduler takes a hold when it finds a delivery due, the writer when
//! it hands a new one over (`handover.rs`), whichever is first; the
//! scheduler gives a hold back for what it did not send; the writer gives back the hold of a
//! delivery whose attempt it has recorded, once that record is committed
//! (or has failed to be). The scheduler reads the holds of a webhook
//! before its due query, whose read transaction starts after: a hold given
//! back before that read was given back after its record's commit, so the
//! query sees the record, and a delivery is never found due again while
//! its attempt is being recorded.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::events::{Delivery, DeliveryStatus};

/// Delivery ids held, each with its webhook's id.
#[derive(Debug, Default)]
pub struct Holds {
    held: Mutex<HashMap<String, String>>,
}

impl Holds {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, String>> {
        // The map is whole after any panic: each change is one insert or
        // one remove.
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Holds a delivery unless it is held already (by the due query or
    /// the writer's hand-over, `handover.rs`); true if this call took it.
    pub fn try_hold(&self, webhook_id: &str, delivery_id: &str) -> bool {
        match self.lock().entry(delivery_id.to_owned()) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(webhook_id.to_owned());
                true
            }
        }
    }

    pub fn release<'a>(&self, delivery_ids: impl IntoIterator<Item = &'a str>) {
        let mut held = self.lock();
        for id in delivery_ids {
            held.remove(id);
        }
    }

    pub fn is_held(&self, delivery_id: &str) -> bool {
        self.lock().contains_key(delivery_id)
    }

    /// `d` as hookbox shows it: `delivering` while it is held.
    pub fn show(&self, mut d: Delivery) -> Delivery {
        if d.status == DeliveryStatus::Pending && self.is_held(&d.id) {
            d.status = DeliveryStatus::Delivering;
        }
        d
    }

    /// How many deliveries of `webhook_id` (of every webhook: `None`) are
    /// held.
    pub fn count(&self, webhook_id: Option<&str>) -> usize {
        let held = self.lock();
        match webhook_id {
            None => held.len(),
            Some(w) => held.values().filter(|h| *h == w).count(),
        }
    }

    /// The held delivery ids of `webhook_id` (of every webhook: `None`) as
    /// a JSON array, for SQL's `json_each`.
    pub fn json(&self, webhook_id: Option<&str>) -> String {
        let held = self.lock();
        let ids: Vec<&String> = held
            .iter()
            .filter(|(_, w)| webhook_id.is_none_or(|want| *w == want))
            .map(|(id, _)| id)
            .collect();
        serde_json::to_string(&ids).unwrap_or_else(|_| "[]".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_are_counted_and_listed_per_webhook_until_released() {
        let holds = Holds::default();
        assert!(holds.try_hold("wh_a", "dlv_1"));
        assert!(holds.try_hold("wh_a", "dlv_2"));
        assert!(holds.try_hold("wh_b", "dlv_3"));
        assert!(!holds.try_hold("wh_b", "dlv_3"), "held once");
        assert_eq!(holds.count(Some("wh_a")), 2);
        assert_eq!(holds.count(None), 3);
        let mut ids: Vec<String> = serde_json::from_str(&holds.json(Some("wh_a"))).unwrap();
        ids.sort();
        assert_eq!(ids, ["dlv_1", "dlv_2"]);
        holds.release(["dlv_1", "dlv_9"]);
        assert!(!holds.is_held("dlv_1"));
        assert!(holds.is_held("dlv_2"));
        assert_eq!(holds.json(Some("wh_c")), "[]");
        assert_eq!(holds.count(None), 2);
    }
}
