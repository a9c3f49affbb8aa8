//! Deliveries' changes through the writer: the engine's attempt records
//! (with the disables an attempt can cause), and the operators' retry,
//! replay and retention's prune, with their audit rows.
//! The SQL is in `events.rs` (deliveries and attempts) and `webhooks.rs`
//! (a webhook's health).
//!
//! Attempt records are engine bookkeeping: committed without an fsync of
//! their own (see `Writer::set_sync`); a lost one means a delivery is sent
//! again, never lost.

use super::StoreError;
use super::audit::{self, Actor, AuditAction};
use super::events::{self, Attempt, DeliveryStatus, Pruned};
use super::webhooks::{self, DisableReason};
use super::writer::{Tx, WriteOp, WriterHandle};
use crate::clock;

/// What a delivery worker reports after an attempt.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub delivery_id: String,
    pub webhook_id: String,
    /// Its webhook orders deliveries by key: the scheduler looks again once
    /// this is recorded, for the next delivery of the key.
    pub ordered: bool,
    pub attempt: Attempt,
    pub next: NextStep,
}

/// What becomes of a delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    Succeeded,
    /// Pending again, due at this time (Unix ms).
    RetryAt(i64),
    /// Attempts exhausted.
    Failed,
    /// The receiver answered 410 Gone: the webhook is disabled and the
    /// delivery held (pending) with it.
    DisableWebhook,
}

impl WriterHandle {
    /// Queues an attempt's record. It waits for room in the queue but not
    /// for the commit: a record lost to a crash means a duplicate delivery,
    /// never a lost one.
    pub fn record_attempt(&self, record: AttemptRecord) -> Result<(), StoreError> {
        self.send(WriteOp::RecordAttempt(Box::new(record)))
    }

    pub fn retry_delivery(&self, id: String, actor: Actor) -> Result<Option<bool>, StoreError> {
        self.call(|reply| WriteOp::RetryDelivery { id, actor, reply })
    }

    pub fn replay(
        &self,
        webhook_id: String,
        status: DeliveryStatus,
        since: i64,
        until: i64,
        actor: Actor,
    ) -> Result<Option<usize>, StoreError> {
        self.call(|reply| WriteOp::Replay {
            webhook_id,
            status,
            since,
            until,
            actor,
            reply,
        })
    }

    /// Removes one batch of events (with their deliveries and attempts)
    /// created before `before`, and audit rows from before `audit_before`.
    pub fn prune(
        &self,
        before: i64,
        audit_before: i64,
        limit: usize,
    ) -> Result<Pruned, StoreError> {
        self.call(|reply| WriteOp::Prune {
            before,
            audit_before,
            limit,
            reply,
        })
    }
}

/// Stores an attempt and what becomes of its delivery; disables the
/// webhook when the receiver answered 410 Gone or every attempt has failed
/// for `--disable-after`.
pub(super) fn apply_record_attempt(tx: &mut Tx<'_>, r: AttemptRecord) -> Result<(), StoreError> {
    let now = tx.now;
    events::insert_attempt(tx.conn, &r.delivery_id, &r.attempt)?;
    let (status, next_at) = match r.next {
        NextStep::Succeeded => (DeliveryStatus::Succeeded, None),
        NextStep::RetryAt(at) => (DeliveryStatus::Pending, Some(at)),
        NextStep::Failed => (DeliveryStatus::Failed, None),
        NextStep::DisableWebhook => (DeliveryStatus::Pending, Some(now)),
    };
    events::finish_attempt(tx.conn, &r.delivery_id, &r.attempt, status, next_at, now)?;
    tx.wake.work |= r.ordered || matches!(r.next, NextStep::RetryAt(_));
    if r.next == NextStep::Failed {
        log::warn!(
            "delivery {} to webhook {} failed after {} attempts",
            r.delivery_id,
            r.webhook_id,
            r.attempt.number
        );
    }
    let succeeded = r.next == NextStep::Succeeded;
    let window = tx.disable_after_ms;
    if webhooks::record_health(tx.conn, &r.webhook_id, succeeded, now, window)? {
        webhooks::disabled_by_system(tx, &r.webhook_id, &DisableReason::failing_for(window))?;
    }
    if r.next == NextStep::DisableWebhook
        && webhooks::disable(tx.conn, &r.webhook_id, &DisableReason::Gone, now)?
    {
        webhooks::disabled_by_system(tx, &r.webhook_id, &DisableReason::Gone)?;
    }
    Ok(())
}

/// Makes a delivery due now for one more attempt (see
/// [`events::retry_now`]), audited when it is.
pub(super) fn apply_retry(
    tx: &mut Tx<'_>,
    id: &str,
    actor: &Actor,
) -> Result<Option<bool>, StoreError> {
    if tx.holds.is_held(id) {
        // Being attempted: its outcome decides.
        return Ok(Some(false));
    }
    let retried = events::retry_now(tx.conn, id, tx.now)?;
    if retried == Some(true) {
        let summary = "queued one more attempt now";
        audit::record(
            tx.conn,
            actor,
            AuditAction::DeliveryRetried,
            Some(id),
            summary,
            tx.now,
        )?;
        tx.wake.work = true;
    }
    Ok(retried)
}

/// Requeues a webhook's deliveries in `status` created in [since, until);
/// how many, or `None` if the webhook does not exist.
pub(super) fn apply_replay(
    tx: &mut Tx<'_>,
    webhook_id: &str,
    status: DeliveryStatus,
    since: i64,
    until: i64,
    actor: &Actor,
) -> Result<Option<usize>, StoreError> {
    if webhooks::get(tx.conn, webhook_id)?.is_none() {
        return Ok(None);
    }
    let n = events::requeue(tx.conn, webhook_id, status, since, until, tx.now)?;
    let summary = format!(
        "requeued {n} {} deliveries created from {} to {}",
        status.as_str(),
        clock::rfc3339(since),
        clock::rfc3339(until)
    );
    audit::record(
        tx.conn,
        actor,
        AuditAction::WebhookReplayed,
        Some(webhook_id),
        &summary,
        tx.now,
    )?;
    tx.wake.work |= n > 0;
    Ok(Some(n))
}

/// Removes one batch of what is older than the retention (see
/// [`events::prune`]).
pub(super) fn apply_prune(
    tx: &mut Tx<'_>,
    before: i64,
    audit_before: i64,
    limit: usize,
) -> Result<Pruned, StoreError> {
    events::prune(tx.conn, before, audit_before, limit)
}
