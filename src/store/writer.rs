//! The writer thread: the only code in `serve` that writes to the database.
//!
//! API threads send a [`WriteOp`] with a reply channel and wait. The writer
//! takes the first op, then everything else already queued (up to
//! [`MAX_BATCH`]), and applies them all in one transaction, each inside its
//! own savepoint so that one failing op does not undo the others. Only after
//! `COMMIT` — which with `synchronous=FULL` has fsynced the WAL — does it
//! answer each op. This is group commit: while one commit's fsync runs,
//! the next batch queues up, so N concurrent publishers share one fsync and
//! every 202 is still durable.
//!
//! The writer also owns the fan-out table: the live webhooks and their
//! filters. Because every webhook change passes through this thread, an
//! event is fanned out to exactly the webhooks that exist in the transaction
//! order, with no read of the webhooks table per event.
//!
//! Under Litestream (`--litestream`) it never checkpoints: not at stop
//! either (see `store/mod.rs`). With `--ack-after-replica` a committed
//! batch's answers go to the `replica` thread (`replica.rs`), which answers
//! them once Litestream confirms the commit on the replica.
//!
//! It must not know HTTP; it answers with plain results and [`StoreError`].

use std::thread;

use crossbeam_channel::{Receiver, Sender, bounded};
use rusqlite::Connection;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::audit::{self, Actor};
use super::events::{self, Attempt, DeliveryStatus, Event, EventType};
use super::monitoring;
use super::replica::{Confirmer, ReplicaConfig};
use super::tokens::{self, Token};
use super::webhooks::{self, Patch, Webhook};
use super::{Context, Replication, StoreError};
use crate::catalog::Filter;
use crate::clock;
use crate::ids::{self, Kind};

/// The most ops in one transaction. Large enough that 64 publishers share a
/// commit; small enough that one commit stays a few milliseconds.
const MAX_BATCH: usize = 1024;

/// Ops waiting for the writer. When full, API threads block: back-pressure
/// instead of unbounded memory.
const QUEUE_BOUND: usize = 4096;

type Reply<T> = Sender<Result<T, StoreError>>;

/// What the writer can be asked to do.
pub enum WriteOp {
    Publish {
        event: Event,
        /// Deliver to this webhook only, whatever its filters: a test event,
        /// audited as by this actor. `None`: to every webhook whose filters
        /// match.
        only: Option<(String, Actor)>,
        reply: Reply<PublishOutcome>,
    },
    CreateWebhook {
        webhook: Webhook,
        actor: Actor,
        reply: Reply<()>,
    },
    UpdateWebhook {
        id: String,
        patch: Patch,
        actor: Actor,
        reply: Reply<Option<Webhook>>,
    },
    DeleteWebhook {
        id: String,
        actor: Actor,
        reply: Reply<bool>,
    },
    /// Replaces a webhook's secret; the old one signs until `until`.
    RotateSecret {
        id: String,
        secret: String,
        until: i64,
        actor: Actor,
        reply: Reply<Option<Webhook>>,
    },
    CreateEventType {
        event_type: EventType,
        actor: Actor,
        reply: Reply<bool>,
    },
    CreateToken {
        token: Token,
        hash: [u8; 32],
        actor: Actor,
        /// The id of the live token that already has this name, if one
        /// does: then nothing is inserted.
        reply: Reply<Option<String>>,
    },
    RevokeToken {
        id: String,
        actor: Actor,
        reply: Reply<bool>,
    },
    /// Records a token's last use. Nobody waits for it.
    TouchToken { id: String, at: i64 },
    /// Marks pending deliveries as being attempted; answers the ids that
    /// still were pending.
    Claim {
        ids: Vec<String>,
        reply: Reply<Vec<String>>,
    },
    /// Puts claimed deliveries back to pending (their webhook was disabled
    /// before they were sent).
    Unclaim { ids: Vec<String>, reply: Reply<()> },
    /// A finished attempt from a delivery worker. Nobody waits for it.
    RecordAttempt(Box<AttemptRecord>),
    RetryDelivery {
        id: String,
        actor: Actor,
        reply: Reply<Option<bool>>,
    },
    Replay {
        webhook_id: String,
        status: DeliveryStatus,
        since: i64,
        until: i64,
        actor: Actor,
        reply: Reply<Option<usize>>,
    },
    /// Opens or resolves an alert, and publishes its `hookbox.alert`
    /// event in the same transaction when the alert's state changed.
    Alert {
        change: AlertChange,
        now: i64,
        reply: Reply<Option<monitoring::Alert>>,
    },
    /// Removes one batch of what is older than the retention.
    Prune {
        before: i64,
        audit_before: i64,
        limit: usize,
        reply: Reply<events::Pruned>,
    },
    /// Proves the database takes a commit now (for `/healthz`).
    Ping { reply: Reply<()> },
    /// Commit what is queued, close the database and stop.
    Shutdown,
}

impl WriteOp {
    /// Whether the caller's answer promises the change survives power loss:
    /// everything the API answers 2xx for. Engine bookkeeping (claims,
    /// attempt records, token use) does not.
    fn answered_as_durable(&self) -> bool {
        !matches!(
            self,
            WriteOp::Claim { .. }
                | WriteOp::Unclaim { .. }
                | WriteOp::RecordAttempt(_)
                | WriteOp::TouchToken { .. }
                | WriteOp::Prune { .. }
                | WriteOp::Shutdown
        )
    }

    /// Whether the answer waits for the replica with `--ack-after-replica`:
    /// every answer the API gives a client for a change. Not `Ping` (the
    /// health check and the watchdog ask whether the local database takes
    /// commits; a replica outage must not get hookbox restarted) nor alerts
    /// (the alerts thread's own bookkeeping).
    fn answered_after_replica(&self) -> bool {
        self.answered_as_durable() && !matches!(self, WriteOp::Ping { .. } | WriteOp::Alert { .. })
    }
}

/// What becomes of an alert.
#[derive(Debug)]
pub enum AlertChange {
    Open(monitoring::Alert),
    Resolve { rule: String, subject: String },
}

/// What a delivery worker reports after an attempt.
#[derive(Debug)]
pub struct AttemptRecord {
    pub delivery_id: String,
    pub webhook_id: String,
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

/// Wake-ups from the writer to the delivery scheduler, coalesced: the
/// writer sets flags and pokes a one-slot channel; the scheduler takes the
/// flags when it wakes. Nothing is lost when the channel is full.
pub struct Wakeups {
    work: AtomicBool,
    webhooks: AtomicBool,
    poke: Sender<()>,
}

impl Wakeups {
    pub fn new() -> (Arc<Wakeups>, Receiver<()>) {
        let (poke, woken) = bounded(1);
        let wakeups = Wakeups {
            work: AtomicBool::new(false),
            webhooks: AtomicBool::new(false),
            poke,
        };
        (Arc::new(wakeups), woken)
    }

    pub fn notify(&self, work: bool, webhooks: bool) {
        if work {
            self.work.store(true, Ordering::Release);
        }
        if webhooks {
            self.webhooks.store(true, Ordering::Release);
        }
        if work || webhooks {
            let _ = self.poke.try_send(());
        }
    }

    /// Whether new work was committed since the last call.
    pub fn take_work(&self) -> bool {
        self.work.swap(false, Ordering::AcqRel)
    }

    /// Whether webhooks changed since the last call.
    pub fn take_webhooks(&self) -> bool {
        self.webhooks.swap(false, Ordering::AcqRel)
    }
}

/// How a publish ended.
#[derive(Debug)]
pub enum PublishOutcome {
    /// Stored, with this many deliveries.
    Created { deliveries: i64 },
    /// The idempotency key was seen before with the same request: the
    /// original event, and nothing new stored.
    Replayed(Event),
    /// The idempotency key was seen before with a different request.
    KeyConflict,
    /// A test event's webhook does not exist (nothing was stored).
    NoSuchWebhook,
}

/// The API side of the writer: sends ops and waits for their commit.
#[derive(Clone)]
pub struct WriterHandle {
    ops: Sender<WriteOp>,
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the database writer has stopped".into())
}

impl WriterHandle {
    fn call<T>(&self, make: impl FnOnce(Reply<T>) -> WriteOp) -> Result<T, StoreError> {
        let (tx, rx) = bounded(1);
        self.ops.send(make(tx)).map_err(|_| stopped())?;
        rx.recv().map_err(|_| stopped())?
    }

    pub fn publish(&self, event: Event) -> Result<PublishOutcome, StoreError> {
        self.call(|reply| WriteOp::Publish {
            event,
            only: None,
            reply,
        })
    }

    /// Publishes `event` to the one webhook `webhook_id`, if it exists: a
    /// test event, which `actor` sent.
    pub fn publish_to(
        &self,
        event: Event,
        webhook_id: String,
        actor: Actor,
    ) -> Result<PublishOutcome, StoreError> {
        self.call(|reply| WriteOp::Publish {
            event,
            only: Some((webhook_id, actor)),
            reply,
        })
    }

    pub fn create_webhook(&self, webhook: Webhook, actor: Actor) -> Result<(), StoreError> {
        self.call(|reply| WriteOp::CreateWebhook {
            webhook,
            actor,
            reply,
        })
    }

    pub fn update_webhook(
        &self,
        id: String,
        patch: Patch,
        actor: Actor,
    ) -> Result<Option<Webhook>, StoreError> {
        self.call(|reply| WriteOp::UpdateWebhook {
            id,
            patch,
            actor,
            reply,
        })
    }

    pub fn delete_webhook(&self, id: String, actor: Actor) -> Result<bool, StoreError> {
        self.call(|reply| WriteOp::DeleteWebhook { id, actor, reply })
    }

    pub fn rotate_secret(
        &self,
        id: String,
        secret: String,
        until: i64,
        actor: Actor,
    ) -> Result<Option<Webhook>, StoreError> {
        self.call(|reply| WriteOp::RotateSecret {
            id,
            secret,
            until,
            actor,
            reply,
        })
    }

    pub fn create_event_type(
        &self,
        event_type: EventType,
        actor: Actor,
    ) -> Result<bool, StoreError> {
        self.call(|reply| WriteOp::CreateEventType {
            event_type,
            actor,
            reply,
        })
    }

    pub fn create_token(
        &self,
        token: Token,
        hash: [u8; 32],
        actor: Actor,
    ) -> Result<Option<String>, StoreError> {
        self.call(|reply| WriteOp::CreateToken {
            token,
            hash,
            actor,
            reply,
        })
    }

    pub fn revoke_token(&self, id: String, actor: Actor) -> Result<bool, StoreError> {
        self.call(|reply| WriteOp::RevokeToken { id, actor, reply })
    }

    pub fn touch_token(&self, id: String, at: i64) {
        // Best effort: a lost last-used time is not worth failing a request.
        let _ = self.ops.try_send(WriteOp::TouchToken { id, at });
    }

    pub fn claim(&self, ids: Vec<String>) -> Result<Vec<String>, StoreError> {
        self.call(|reply| WriteOp::Claim { ids, reply })
    }

    pub fn unclaim(&self, ids: Vec<String>) -> Result<(), StoreError> {
        self.call(|reply| WriteOp::Unclaim { ids, reply })
    }

    /// Queues an attempt's record. It waits for room in the queue but not
    /// for the commit: a record lost to a crash means a duplicate delivery,
    /// never a lost one.
    pub fn record_attempt(&self, record: AttemptRecord) -> Result<(), StoreError> {
        self.ops
            .send(WriteOp::RecordAttempt(Box::new(record)))
            .map_err(|_| stopped())
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

    /// Opens or resolves an alert; the stored alert if its state changed.
    pub fn alert(
        &self,
        change: AlertChange,
        now: i64,
    ) -> Result<Option<monitoring::Alert>, StoreError> {
        self.call(|reply| WriteOp::Alert { change, now, reply })
    }

    /// Removes one batch of events (with their deliveries and attempts)
    /// created before `before`, and audit rows from before `audit_before`.
    pub fn prune(
        &self,
        before: i64,
        audit_before: i64,
        limit: usize,
    ) -> Result<events::Pruned, StoreError> {
        self.call(|reply| WriteOp::Prune {
            before,
            audit_before,
            limit,
            reply,
        })
    }

    /// Whether the writer commits within `timeout`.
    pub fn ping(&self, timeout: std::time::Duration) -> Result<(), StoreError> {
        let (tx, rx) = bounded(1);
        self.ops
            .send_timeout(WriteOp::Ping { reply: tx }, timeout)
            .map_err(|_| stopped())?;
        rx.recv_timeout(timeout)
            .map_err(|_| StoreError::Unavailable("the writer did not commit in time".into()))?
    }

    /// Asks the writer to commit what is queued and stop, even while other
    /// handles (delivery workers still finishing) exist.
    pub fn shutdown(&self) {
        let _ = self.ops.send(WriteOp::Shutdown);
    }
}

/// Settings of the writer thread.
pub struct WriterConfig {
    /// A webhook whose every attempt failed for this long is disabled.
    pub disable_after_ms: i64,
    pub wakeups: Arc<Wakeups>,
    /// Under Litestream the writer never checkpoints.
    pub replication: Replication,
    /// With `--ack-after-replica`: how to ask Litestream for confirmation.
    pub ack_after_replica: Option<ReplicaConfig>,
}

/// Starts the writer thread on `conn`. It stops when every handle is
/// dropped, after committing what was queued.
pub fn spawn(
    conn: Connection,
    config: WriterConfig,
) -> Result<(WriterHandle, thread::JoinHandle<()>), StoreError> {
    let subscriptions = Subscriptions::load(&conn)?;
    let confirmer = config
        .ack_after_replica
        .clone()
        .map(Confirmer::spawn)
        .transpose()?;
    let (tx, rx) = bounded(QUEUE_BOUND);
    let handle = thread::Builder::new()
        .name("writer".into())
        .spawn(move || {
            Writer {
                conn,
                subscriptions,
                config,
                wake_work: false,
                wake_webhooks: false,
                sync_full: true,
                confirmer,
            }
            .run(rx)
        })
        .map_err(|e| StoreError::Unavailable(format!("starting writer thread: {e}")))?;
    Ok((WriterHandle { ops: tx }, handle))
}

/// The live webhooks' filters, in id order.
struct Subscriptions(Vec<(String, Vec<Filter>)>);

impl Subscriptions {
    fn load(conn: &Connection) -> Result<Subscriptions, StoreError> {
        let mut subs = Subscriptions(Vec::new());
        for w in webhooks::all_live(conn)? {
            subs.upsert(&w);
        }
        Ok(subs)
    }

    fn upsert(&mut self, w: &Webhook) {
        let filters = w.events.iter().map(|e| Filter::parse(e)).collect();
        match self.0.binary_search_by(|(id, _)| id.as_str().cmp(&w.id)) {
            Ok(i) => self.0[i].1 = filters,
            Err(i) => self.0.insert(i, (w.id.clone(), filters)),
        }
    }

    fn get(&self, id: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(w, _)| w.as_str().cmp(id))
            .ok()
            .map(|i| self.0[i].0.as_str())
    }

    fn remove(&mut self, id: &str) {
        if let Ok(i) = self.0.binary_search_by(|(w, _)| w.as_str().cmp(id)) {
            self.0.remove(i);
        }
    }

    fn matching<'a>(&'a self, event_type: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(_, filters)| filters.iter().any(|f| f.matches(event_type)))
            .map(|(id, _)| id.as_str())
    }
}

/// An answer to send once the batch's fate is known.
type Completion = Box<dyn FnOnce(Result<(), &StoreError>) + Send>;

fn answer<T: Send + 'static>(reply: Reply<T>, result: Result<T, StoreError>) -> Completion {
    Box::new(move |commit| {
        let result = match commit {
            Ok(()) => result,
            Err(StoreError::ReplicaUnconfirmed(why)) => {
                Err(StoreError::ReplicaUnconfirmed(why.clone()))
            }
            Err(e) => Err(StoreError::Unavailable(e.to_string())),
        };
        // The caller may have gone away (client disconnected); nothing to do.
        let _ = reply.send(result);
    })
}

struct Writer {
    conn: Connection,
    subscriptions: Subscriptions,
    config: WriterConfig,
    /// What to tell the scheduler once the current batch commits.
    wake_work: bool,
    wake_webhooks: bool,
    /// Whether the connection is at `synchronous=FULL` (it opens so).
    sync_full: bool,
    /// With `--ack-after-replica`, the `replica` thread.
    confirmer: Option<Confirmer>,
}

impl Writer {
    fn run(mut self, ops: Receiver<WriteOp>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut stopping = false;
        while !stopping && let Ok(first) = ops.recv() {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match ops.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            if let Some(at) = batch.iter().position(|op| matches!(op, WriteOp::Shutdown)) {
                // Ops queued after the shutdown are dropped: their callers
                // get an error from the closed reply channel.
                batch.truncate(at);
                stopping = true;
            }
            self.commit_batch(&mut batch);
        }
        if let Some(confirmer) = self.confirmer.take() {
            confirmer.stop();
        }
        match self.config.replication {
            // Leave the database file complete on its own (a backup is one
            // file).
            Replication::None => {
                if let Err(e) = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)") {
                    log::warn!("checkpointing the WAL at stop: {e}");
                }
            }
            // Litestream checkpoints once it has copied the WAL; a TRUNCATE
            // of ours would only wait out the busy timeout on its read lock.
            Replication::Litestream => {
                log::info!("leaving the WAL to Litestream (--litestream): no checkpoint at stop");
            }
        }
        log::debug!("writer stopped: every handle is gone");
    }

    fn commit_batch(&mut self, batch: &mut Vec<WriteOp>) {
        let mut completions: Vec<Completion> = Vec::with_capacity(batch.len());
        // With --ack-after-replica, the answers that wait for the replica.
        let mut after_replica: Vec<Completion> = Vec::new();
        self.set_sync(batch.iter().any(WriteOp::answered_as_durable));
        let began = self
            .exec_cached("BEGIN IMMEDIATE")
            .context("starting transaction");
        if let Err(e) = began {
            log::warn!("{e}");
            for op in batch.drain(..) {
                completions.push(self.refuse(op));
            }
            for c in completions {
                c(Err(&e));
            }
            return;
        }
        // SQLite rolls the whole transaction back by itself on some errors
        // (disk full, I/O error, out of memory). Ops after that would run
        // in autocommit mode, committed one by one: stop instead, and fail
        // the batch.
        let mut lost = false;
        for op in batch.drain(..) {
            if lost {
                completions.push(self.refuse(op));
                continue;
            }
            let waits = self.confirmer.is_some() && op.answered_after_replica();
            let completion = self.apply_in_savepoint(op);
            if waits {
                after_replica.push(completion);
            } else {
                completions.push(completion);
            }
            lost = self.conn.is_autocommit();
        }
        let committed = if lost {
            Err(StoreError::Unavailable(
                "SQLite rolled the transaction back".into(),
            ))
        } else {
            self.exec_cached("COMMIT").context("committing")
        };
        if let Err(e) = &committed {
            log::error!("{e}; the batch is rolled back");
            let _ = self.exec_cached("ROLLBACK");
            // The fan-out table may hold changes that were just undone.
            match Subscriptions::load(&self.conn) {
                Ok(subs) => self.subscriptions = subs,
                Err(e) => log::error!("reloading webhooks after rollback: {e}"),
            }
        }
        let commit = committed.as_ref().map(|_| ());
        if commit.is_ok() {
            self.config
                .wakeups
                .notify(self.wake_work, self.wake_webhooks);
        }
        self.wake_work = false;
        self.wake_webhooks = false;
        for c in completions {
            c(commit);
        }
        if after_replica.is_empty() {
            return;
        }
        match (&self.confirmer, commit) {
            // Committed and fsynced: now the replica.
            (Some(confirmer), Ok(())) => confirmer.confirm(after_replica),
            _ => {
                for c in after_replica {
                    c(commit);
                }
            }
        }
    }

    /// `synchronous=FULL` (fsync at commit) for batches holding an op whose
    /// answer promises durability; `NORMAL` (no fsync in WAL mode) for
    /// batches of engine bookkeeping only. WAL frames are written in order,
    /// so the next FULL commit makes the earlier NORMAL ones durable too;
    /// a crash before it loses only claims and attempt records, and a lost
    /// record means the delivery is sent again: a duplicate, never a loss.
    fn set_sync(&mut self, full: bool) {
        if self.sync_full == full {
            return;
        }
        let pragma = if full {
            "PRAGMA synchronous=FULL"
        } else {
            "PRAGMA synchronous=NORMAL"
        };
        match self.exec_cached(pragma) {
            Ok(()) => self.sync_full = full,
            Err(e) => log::warn!("setting {pragma}: {e}"),
        }
    }

    fn refuse(&self, op: WriteOp) -> Completion {
        match op {
            WriteOp::Publish { reply, .. } => answer(reply, Err(stopped())),
            WriteOp::CreateWebhook { reply, .. } => answer(reply, Err(stopped())),
            WriteOp::UpdateWebhook { reply, .. } => answer(reply, Err(stopped())),
            WriteOp::DeleteWebhook { reply, .. } => answer(reply, Err(stopped())),
            WriteOp::RotateSecret { reply, .. } => answer(reply, Err(stopped())),
            WriteOp::CreateEventType { reply, .. } => answer(reply, Err(stopped())),
            WriteOp::CreateToken { reply, .. } => answer(reply, Err(stopped())),
            WriteOp::RevokeToken { reply, .. } => answer(reply, Err(stopped())),
            WriteOp::Claim { reply, .. } => answer(reply, Err(stopped())),
            WriteOp::Unclaim { reply, .. } => answer(reply, Err(stopped())),
            WriteOp::Ping { reply } => answer(reply, Err(stopped())),
            WriteOp::Prune { reply, .. } => answer(reply, Err(stopped())),
            WriteOp::Alert { reply, .. } => answer(reply, Err(stopped())),
            WriteOp::RetryDelivery { reply, .. } => answer(reply, Err(stopped())),
            WriteOp::Replay { reply, .. } => answer(reply, Err(stopped())),
            WriteOp::TouchToken { .. } | WriteOp::RecordAttempt(_) | WriteOp::Shutdown => {
                Box::new(|_| {})
            }
        }
    }

    /// Runs one op in a savepoint: on error only that op is undone.
    fn apply_in_savepoint(&mut self, op: WriteOp) -> Completion {
        if let Err(e) = self
            .exec_cached("SAVEPOINT op")
            .context("starting savepoint")
        {
            let refused = self.refuse(op);
            return Box::new(move |_| refused(Err(&e)));
        }
        let (ok, completion) = self.apply(op);
        let ended = if ok {
            self.exec_cached("RELEASE op")
        } else {
            self.exec_cached("ROLLBACK TO op")
                .and_then(|()| self.exec_cached("RELEASE op"))
        };
        if let Err(e) = ended {
            log::error!("ending savepoint: {e}");
        }
        completion
    }

    /// Runs one of the batch's fixed statements (`BEGIN`, `COMMIT`,
    /// `SAVEPOINT`, `RELEASE`, a `synchronous` pragma) from the statement
    /// cache. `execute_batch` would parse and plan the text again on every
    /// call: a few thousand instructions each, several times per op.
    fn exec_cached(&self, sql: &'static str) -> rusqlite::Result<()> {
        self.conn.prepare_cached(sql)?.execute([])?;
        Ok(())
    }

    /// Applies one op; the bool says whether to keep its changes.
    fn apply(&mut self, op: WriteOp) -> (bool, Completion) {
        let now = clock::now_ms();
        match op {
            WriteOp::Publish { event, only, reply } => {
                let result = self.publish(event, only, now);
                (
                    matches!(result, Ok(PublishOutcome::Created { .. })),
                    answer(reply, result),
                )
            }
            WriteOp::CreateWebhook {
                webhook,
                actor,
                reply,
            } => {
                let result = webhooks::insert(&self.conn, &webhook).and_then(|()| {
                    let summary = format!(
                        "created webhook for {} ({})",
                        webhook.events.join(", "),
                        if webhook.enabled {
                            "enabled"
                        } else {
                            "disabled"
                        }
                    );
                    audit::record(
                        &self.conn,
                        &actor,
                        "webhook.created",
                        Some(&webhook.id),
                        &summary,
                        now,
                    )
                });
                if result.is_ok() {
                    self.subscriptions.upsert(&webhook);
                    self.wake_webhooks = true;
                }
                (result.is_ok(), answer(reply, result))
            }
            WriteOp::UpdateWebhook {
                id,
                patch,
                actor,
                reply,
            } => {
                let result = self.update_webhook(&id, patch, &actor, now);
                self.wake_webhooks |= matches!(result, Ok(Some(_)));
                (result.is_ok(), answer(reply, result))
            }
            WriteOp::DeleteWebhook { id, actor, reply } => {
                let result = webhooks::delete(&self.conn, &id, now).and_then(|deleted| {
                    if deleted {
                        let summary = "deleted webhook; its pending deliveries are cancelled";
                        audit::record(
                            &self.conn,
                            &actor,
                            "webhook.deleted",
                            Some(&id),
                            summary,
                            now,
                        )?;
                    }
                    Ok(deleted)
                });
                if let Ok(true) = result {
                    self.subscriptions.remove(&id);
                    self.wake_webhooks = true;
                }
                (result.is_ok(), answer(reply, result))
            }
            WriteOp::RotateSecret {
                id,
                secret,
                until,
                actor,
                reply,
            } => {
                let result = self.rotate_secret(&id, &secret, until, &actor, now);
                self.wake_webhooks |= matches!(result, Ok(Some(_)));
                (result.is_ok(), answer(reply, result))
            }
            WriteOp::CreateToken {
                token,
                hash,
                actor,
                reply,
            } => {
                let result = tokens::insert(&self.conn, &token, &hash).and_then(|taken| {
                    if taken.is_some() {
                        return Ok(taken);
                    }
                    let summary = format!(
                        "created {} token \"{}\"{}",
                        token.scope.as_str(),
                        token.name,
                        audit::allow_summary(&token.allow)
                    );
                    audit::record(
                        &self.conn,
                        &actor,
                        "token.created",
                        Some(&token.id),
                        &summary,
                        now,
                    )
                    .map(|()| None)
                });
                (result.is_ok(), answer(reply, result))
            }
            WriteOp::RevokeToken { id, actor, reply } => {
                let result = tokens::revoke(&self.conn, &id, now).and_then(|revoked| {
                    if revoked {
                        audit::record(
                            &self.conn,
                            &actor,
                            "token.revoked",
                            Some(&id),
                            "revoked token",
                            now,
                        )?;
                    }
                    Ok(revoked)
                });
                (result.is_ok(), answer(reply, result))
            }
            WriteOp::Claim { ids, reply } => {
                let result: Result<Vec<String>, StoreError> = ids
                    .into_iter()
                    .filter_map(|id| match events::claim(&self.conn, &id, now) {
                        Ok(true) => Some(Ok(id)),
                        Ok(false) => None,
                        Err(e) => Some(Err(e)),
                    })
                    .collect();
                (result.is_ok(), answer(reply, result))
            }
            WriteOp::Unclaim { ids, reply } => {
                let result = ids
                    .iter()
                    .try_for_each(|id| events::unclaim(&self.conn, id, now));
                (result.is_ok(), answer(reply, result))
            }
            WriteOp::RecordAttempt(record) => {
                let result = self.record_attempt(*record, now);
                if let Err(e) = &result {
                    log::error!("recording a delivery attempt: {e}");
                }
                (result.is_ok(), Box::new(|_| {}))
            }
            WriteOp::RetryDelivery { id, actor, reply } => {
                let result = events::retry_now(&self.conn, &id, now).and_then(|retried| {
                    if retried == Some(true) {
                        let summary = "queued one more attempt now";
                        audit::record(
                            &self.conn,
                            &actor,
                            "delivery.retried",
                            Some(&id),
                            summary,
                            now,
                        )?;
                    }
                    Ok(retried)
                });
                self.wake_work |= matches!(result, Ok(Some(true)));
                (result.is_ok(), answer(reply, result))
            }
            WriteOp::Replay {
                webhook_id,
                status,
                since,
                until,
                actor,
                reply,
            } => {
                let result = match webhooks::get(&self.conn, &webhook_id) {
                    Ok(None) => Ok(None),
                    Ok(Some(_)) => {
                        events::requeue(&self.conn, &webhook_id, status, since, until, now)
                            .and_then(|n| {
                                let summary = format!(
                                    "requeued {n} {} deliveries created from {} to {}",
                                    status.as_str(),
                                    clock::rfc3339(since),
                                    clock::rfc3339(until)
                                );
                                audit::record(
                                    &self.conn,
                                    &actor,
                                    "webhook.replayed",
                                    Some(&webhook_id),
                                    &summary,
                                    now,
                                )?;
                                Ok(Some(n))
                            })
                    }
                    Err(e) => Err(e),
                };
                self.wake_work |= matches!(result, Ok(Some(n)) if n > 0);
                (result.is_ok(), answer(reply, result))
            }
            WriteOp::Shutdown => (true, Box::new(|_| {})),
            WriteOp::Ping { reply } => (true, answer(reply, Ok(()))),
            WriteOp::Alert { change, now, reply } => {
                let result = self.alert(change, now);
                (result.is_ok(), answer(reply, result))
            }
            WriteOp::Prune {
                before,
                audit_before,
                limit,
                reply,
            } => {
                let result = events::prune(&self.conn, before, audit_before, limit);
                (result.is_ok(), answer(reply, result))
            }
            WriteOp::CreateEventType {
                event_type,
                actor,
                reply,
            } => {
                let result =
                    events::insert_event_type(&self.conn, &event_type).and_then(|created| {
                        if created {
                            let summary = format!(
                                "created event type{}",
                                if event_type.schema.is_some() {
                                    " with a schema"
                                } else {
                                    " without a schema"
                                }
                            );
                            audit::record(
                                &self.conn,
                                &actor,
                                "event_type.created",
                                Some(&event_type.name),
                                &summary,
                                now,
                            )?;
                        }
                        Ok(created)
                    });
                (result.is_ok(), answer(reply, result))
            }
            WriteOp::TouchToken { id, at } => {
                let result = tokens::touch(&self.conn, &id, at);
                if let Err(e) = &result {
                    log::warn!("{e}");
                }
                (result.is_ok(), Box::new(|_| {}))
            }
        }
    }

    fn publish(
        &mut self,
        mut event: Event,
        only: Option<(String, Actor)>,
        now: i64,
    ) -> Result<PublishOutcome, StoreError> {
        if let Some(key) = &event.idempotency_key
            && let Some(original) = events::find_by_idempotency_key(&self.conn, key)?
        {
            return Ok(if original.request_hash == event.request_hash {
                PublishOutcome::Replayed(original)
            } else {
                PublishOutcome::KeyConflict
            });
        }
        let targets: Vec<&str> = match &only {
            Some((id, _)) => self.subscriptions.get(id).into_iter().collect(),
            None => self.subscriptions.matching(&event.event_type).collect(),
        };
        if only.is_some() && targets.is_empty() {
            return Ok(PublishOutcome::NoSuchWebhook);
        }
        event.deliveries = targets.len() as i64;
        self.wake_work |= !targets.is_empty();
        event.created_at = now;
        events::insert_event(&self.conn, &event)?;
        for webhook_id in targets {
            events::insert_delivery(
                &self.conn,
                &ids::new(Kind::Delivery),
                &event.id,
                webhook_id,
                now,
            )?;
        }
        if let Some((webhook_id, actor)) = &only {
            let summary = format!("sent a test {} event, {}", event.event_type, event.id);
            audit::record(
                &self.conn,
                actor,
                "webhook.tested",
                Some(webhook_id),
                &summary,
                now,
            )?;
        }
        Ok(PublishOutcome::Created {
            deliveries: event.deliveries,
        })
    }

    fn record_attempt(&mut self, r: AttemptRecord, now: i64) -> Result<(), StoreError> {
        events::insert_attempt(&self.conn, &r.delivery_id, &r.attempt)?;
        let (status, next_at) = match r.next {
            NextStep::Succeeded => (DeliveryStatus::Succeeded, None),
            NextStep::RetryAt(at) => (DeliveryStatus::Pending, Some(at)),
            NextStep::Failed => (DeliveryStatus::Failed, None),
            NextStep::DisableWebhook => (DeliveryStatus::Pending, Some(now)),
        };
        events::finish_attempt(&self.conn, &r.delivery_id, &r.attempt, status, next_at, now)?;
        self.wake_work |= matches!(r.next, NextStep::RetryAt(_));
        if r.next == NextStep::Failed {
            log::warn!(
                "delivery {} to webhook {} failed after {} attempts",
                r.delivery_id,
                r.webhook_id,
                r.attempt.number
            );
        }
        let succeeded = r.next == NextStep::Succeeded;
        let window = self.config.disable_after_ms;
        if webhooks::record_health(&self.conn, &r.webhook_id, succeeded, now, window)? {
            let why = format!("every attempt failed for {}", clock::human_duration(window));
            self.disabled_by_system(&r.webhook_id, &why, now)?;
        }
        if r.next == NextStep::DisableWebhook
            && webhooks::disable(
                &self.conn,
                &r.webhook_id,
                "the receiver answered 410 Gone",
                now,
            )?
        {
            self.disabled_by_system(&r.webhook_id, "the receiver answered 410 Gone", now)?;
        }
        Ok(())
    }

    /// Logs and audits a webhook hookbox itself disabled.
    fn disabled_by_system(&mut self, id: &str, why: &str, now: i64) -> Result<(), StoreError> {
        log::warn!("webhook {id} disabled: {why}");
        self.wake_webhooks = true;
        audit::record(
            &self.conn,
            &Actor::System,
            "webhook.disabled",
            Some(id),
            &format!("disabled automatically: {why}; its deliveries are held"),
            now,
        )
    }

    fn update_webhook(
        &mut self,
        id: &str,
        patch: Patch,
        actor: &Actor,
        now: i64,
    ) -> Result<Option<Webhook>, StoreError> {
        let Some(mut webhook) = webhooks::get(&self.conn, id)? else {
            return Ok(None);
        };
        let re_enabled = !webhook.enabled && patch.enabled == Some(true);
        let disabled = webhook.enabled && patch.enabled == Some(false);
        let summary = patch.describe(&webhook);
        patch.apply(&mut webhook, now);
        webhooks::update(&self.conn, &webhook)?;
        if re_enabled {
            webhooks::reset_failing(&self.conn, id)?;
            log::info!("webhook {id} re-enabled; its held deliveries drain now");
        }
        let action = match (re_enabled, disabled) {
            (true, _) => "webhook.enabled",
            (_, true) => "webhook.disabled",
            _ => "webhook.updated",
        };
        // A PATCH that changes nothing leaves no audit row.
        if let Some(summary) = summary {
            audit::record(&self.conn, actor, action, Some(id), &summary, now)?;
        }
        self.subscriptions.upsert(&webhook);
        Ok(Some(webhook))
    }

    fn alert(
        &mut self,
        change: AlertChange,
        now: i64,
    ) -> Result<Option<monitoring::Alert>, StoreError> {
        let changed = match change {
            AlertChange::Open(alert) => monitoring::open_alert(&self.conn, &alert)?,
            AlertChange::Resolve { rule, subject } => {
                monitoring::resolve_alert(&self.conn, &rule, &subject, now)?
            }
        };
        if let Some(alert) = &changed {
            let event = crate::monitor::alerts::event(alert, now);
            self.publish(event, None, now)?;
        }
        Ok(changed)
    }

    fn rotate_secret(
        &mut self,
        id: &str,
        secret: &str,
        until: i64,
        actor: &Actor,
        now: i64,
    ) -> Result<Option<Webhook>, StoreError> {
        if !webhooks::rotate_secret(&self.conn, id, secret, until, now)? {
            return Ok(None);
        }
        let summary = format!(
            "rotated the signing secret; the previous one signs too until {}",
            clock::rfc3339(until)
        );
        audit::record(
            &self.conn,
            actor,
            "webhook.secret_rotated",
            Some(id),
            &summary,
            now,
        )?;
        webhooks::get(&self.conn, id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fan_out_table_matches_filters_in_id_order() {
        let mut subs = Subscriptions(Vec::new());
        let hook = |id: &str, events: &[&str]| Webhook {
            id: id.into(),
            url: "https://example.com/".into(),
            description: String::new(),
            secret: "s".into(),
            events: events.iter().map(|e| e.to_string()).collect(),
            max_attempts: None,
            rate_limit_per_s: None,
            enabled: true,
            disabled_reason: None,
            created_at: 0,
            updated_at: 0,
            previous_secret: None,
            previous_secret_until: None,
        };
        subs.upsert(&hook("wh_b", &["item.*"]));
        subs.upsert(&hook("wh_a", &["*"]));
        subs.upsert(&hook("wh_c", &["email.updated"]));
        assert_eq!(
            subs.matching("item.sold").collect::<Vec<_>>(),
            ["wh_a", "wh_b"]
        );
        subs.upsert(&hook("wh_b", &["profile.created"]));
        assert_eq!(subs.matching("item.sold").collect::<Vec<_>>(), ["wh_a"]);
        subs.remove("wh_a");
        assert_eq!(subs.matching("email.updated").collect::<Vec<_>>(), ["wh_c"]);
    }
}
