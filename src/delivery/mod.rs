//! Delivery to receivers. Issue 2 holds only the target policy, which the
//! API applies when a webhook is registered; the scheduler, workers, backoff
//! and signing arrive with the delivery engine.

pub mod target;
