//! The writer thread: the only code in `serve` that writes to the database.
//!
//! Requests send a [`WriteOp`] with a reply (an [`answer`] slot) and wait. The writer
//! takes the first op, then everything else already queued (up to
//! [`MAX_BATCH`]), and applies them all in one transaction; one failing op
//! must not undo the others (see [`Isolation`]). Only after
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
//! This file owns the thread, the batch, the savepoint replay, the answers and
//! the transaction context (`Tx`); it does not own any change. Each
//! domain module owns its changes: the `apply_*` function the writer calls
//! for its ops, their audit rows, and the [`WriterHandle`] methods that send
//! them — `webhooks.rs`, `tokens.rs`, `event_types.rs`, `events.rs`
//! (publish), `deliveries.rs`, `monitoring.rs` (alerts). A new op is a
//! [`WriteOp`] arm, its apply function and handle method in its domain
//! module, and one dispatch line in `Writer::apply` (plus
//! `Writer::refuse` when someone waits for it).
//!
//! It must not know HTTP; it answers with plain results and [`StoreError`].

use std::thread;

use crossbeam_channel::{Receiver, Sender, bounded};
use rusqlite::Connection;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::audit::Actor;
use super::events::{self, DeliveryStatus, Event, EventType};
use super::handover::{Fresh, Handover};
use super::holds::Holds;
use super::monitoring::{self, AlertChange, Announce};
use super::replica::{Confirmer, ReplicaConfig};

use super::tokens::{self, Token};
use super::webhooks::{self, Patch, Webhook};
use super::{Context, Replication, StoreError, answer, deliveries, event_types};
use crate::catalog::Filter;
use crate::clock;
use crate::content_filter::{ContentFilter, DataPath};

// What callers exchange with the writer, where they have always imported
// it from.
pub use super::deliveries::{AttemptRecord, NextStep};
pub use super::events::PublishOutcome;

/// The most ops in one transaction. Large enough that 64 publishers share a
/// commit; small enough that one commit stays a few milliseconds.
const MAX_BATCH: usize = 1024;

/// Ops waiting for the writer. When full, API threads block: back-pressure
/// instead of unbounded memory.
const QUEUE_BOUND: usize = 4096;

pub(super) type Reply<T> = answer::Reply<Result<T, StoreError>>;

/// What the writer can be asked to do. `Clone` for the batch's replay
/// (see `Writer::commit_batch`); a clone shares the answer slot.
#[derive(Clone)]
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
    /// A finished attempt from a delivery worker. Nobody waits for it; the
    /// delivery's hold is given back once it is committed (`holds.rs`).
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
        announce: Announce,
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
    /// everything the API answers 2xx for. Engine bookkeeping (attempt
    /// records, token use) does not.
    fn answered_as_durable(&self) -> bool {
        !matches!(
            self,
            WriteOp::RecordAttempt(_)
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

/// Wake-ups from the writer to the delivery scheduler, coalesced: the
/// writer sets flags and pokes a one-slot channel; the scheduler takes the
/// flags when it wakes. Nothing is lost when the channel is full.
pub struct Wakeups {
    work: AtomicBool,
    webhooks: AtomicBool,
    /// Counts the commits that changed webhooks; bumped before `webhooks`
    /// is set, so that whoever takes the flag then reads the new count.
    webhooks_version: AtomicU64,
    poke: Sender<()>,
}

impl Wakeups {
    pub fn new() -> (Arc<Wakeups>, Receiver<()>) {
        let (poke, woken) = bounded(1);
        let wakeups = Wakeups {
            work: AtomicBool::new(false),
            webhooks: AtomicBool::new(false),
            webhooks_version: AtomicU64::new(0),
            poke,
        };
        (Arc::new(wakeups), woken)
    }

    /// After a commit: `work` if deliveries became due that the scheduler
    /// must look for, `webhooks` if webhooks changed, `handed` if new
    /// deliveries were handed over (`handover.rs`), which needs a wake-up
    /// but no look.
    pub fn notify(&self, work: bool, webhooks: bool, handed: bool) {
        if work {
            self.work.store(true, Ordering::Release);
        }
        if webhooks {
            self.webhooks_version.fetch_add(1, Ordering::AcqRel);
            self.webhooks.store(true, Ordering::Release);
        }
        if work || webhooks || handed {
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

    /// How many commits have changed webhooks. A delivery job made from
    /// what the scheduler loaded at one count stops when it moves on: the
    /// change (a disable, a delete, a new URL or secret) was answered, so
    /// nothing made before it may go out after it.
    pub fn webhooks_version(&self) -> u64 {
        self.webhooks_version.load(Ordering::Acquire)
    }
}

/// The API side of the writer: sends ops and waits for their commit.
#[derive(Clone)]
pub struct WriterHandle {
    ops: Sender<WriteOp>,
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the database writer has stopped".into())
}

/// The handle's plumbing; its methods for each change are in the change's
/// domain module.
impl WriterHandle {
    /// Sends an op and waits for its answer, given after the commit.
    pub(super) fn call<T>(&self, make: impl FnOnce(Reply<T>) -> WriteOp) -> Result<T, StoreError> {
        let (tx, rx) = answer::pair();
        self.ops.send(make(tx)).map_err(|_| stopped())?;
        rx.recv().map_err(|_| stopped())?
    }

    /// Queues an op nobody waits for, waiting for room in the queue.
    pub(super) fn send(&self, op: WriteOp) -> Result<(), StoreError> {
        self.ops.send(op).map_err(|_| stopped())
    }

    /// Queues an op nobody waits for if there is room; drops it otherwise.
    pub(super) fn offer(&self, op: WriteOp) {
        let _ = self.ops.try_send(op);
    }

    /// Whether the writer commits within `timeout`.
    pub fn ping(&self, timeout: std::time::Duration) -> Result<(), StoreError> {
        let (tx, rx) = answer::pair();
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
    /// The engine's holds: given back for each attempt once its record is
    /// committed.
    pub holds: Arc<Holds>,
    /// Where new deliveries go once committed, while delivery runs (`None`
    /// with `--pause-delivery`).
    pub handover: Option<Arc<Handover>>,
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
                wake: Wake::default(),
                sync_full: true,
                confirmer,
            }
            .run(rx)
        })
        .map_err(|e| StoreError::Unavailable(format!("starting writer thread: {e}")))?;
    Ok((WriterHandle { ops: tx }, handle))
}

/// What fan-out needs of a live webhook.
pub(super) struct Subscription {
    pub id: String,
    events: Vec<Filter>,
    /// Its content filter, if it has one.
    pub filter: Option<ContentFilter>,
    /// Its ordering key's path, if it orders its deliveries.
    pub ordering: Option<DataPath>,
}

/// The live webhooks' subscriptions, in id order.
pub(super) struct Subscriptions(Vec<Subscription>);

impl Subscriptions {
    fn load(conn: &Connection) -> Result<Subscriptions, StoreError> {
        let mut subs = Subscriptions(Vec::new());
        for w in webhooks::all_live(conn)? {
            subs.upsert(&w);
        }
        Ok(subs)
    }

    pub(super) fn upsert(&mut self, w: &Webhook) {
        let sub = Subscription {
            id: w.id.clone(),
            events: w.events.iter().map(|e| Filter::parse(e)).collect(),
            filter: (!w.filter.is_empty()).then(|| w.filter.clone()),
            ordering: w
                .ordering_key
                .as_deref()
                .and_then(|k| DataPath::parse(k).ok()),
        };
        match self.0.binary_search_by(|s| s.id.as_str().cmp(&w.id)) {
            Ok(i) => self.0[i] = sub,
            Err(i) => self.0.insert(i, sub),
        }
    }

    pub(super) fn get(&self, id: &str) -> Option<&str> {
        self.0
            .binary_search_by(|s| s.id.as_str().cmp(id))
            .ok()
            .map(|i| self.0[i].id.as_str())
    }

    pub(super) fn remove(&mut self, id: &str) {
        if let Ok(i) = self.0.binary_search_by(|s| s.id.as_str().cmp(id)) {
            self.0.remove(i);
        }
    }

    /// The webhooks subscribed to `event_type` (the caller checks content
    /// filters against the event's data).
    pub(super) fn matching<'a>(
        &'a self,
        event_type: &'a str,
    ) -> impl Iterator<Item = &'a Subscription> + 'a {
        self.0
            .iter()
            .filter(move |s| s.events.iter().any(|f| f.matches(event_type)))
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
        reply.send(result);
    })
}

/// What to tell the delivery scheduler once the batch commits.
#[derive(Debug, Default)]
pub(super) struct Wake {
    /// Deliveries became due that the scheduler must look for.
    pub work: bool,
    /// A webhook was created, changed, disabled or deleted.
    pub webhooks: bool,
    /// New deliveries to hand over once committed (`handover.rs`); only
    /// while the writer has a hand-over, else a publish sets `work`.
    pub fresh: Vec<Fresh>,
}

/// What an apply function works with: the open transaction and the
/// writer's state that changes with it. An apply function that fails
/// should fail before it writes (see [`Isolation`]).
pub(super) struct Tx<'a> {
    pub conn: &'a Connection,
    /// The op's time (Unix ms).
    pub now: i64,
    /// The fan-out table; changed only by ops that succeed.
    pub subscriptions: &'a mut Subscriptions,
    pub wake: &'a mut Wake,
    /// `--disable-after`: a webhook whose every attempt failed for this
    /// long is disabled.
    pub disable_after_ms: i64,
    /// The deliveries the engine holds (`delivering`).
    pub holds: &'a Holds,
    /// Whether new deliveries are handed to the scheduler (`wake.fresh`)
    /// rather than left to its due query (`wake.work`).
    pub hand_over: bool,
}

/// How the ops of a batch are kept from undoing each other.
///
/// An op that fails almost always fails before it writes anything (a
/// webhook not found, an idempotency key already used, a token name
/// taken): then there is nothing to undo, and the batch goes on. So the
/// writer applies a batch first without savepoints — a savepoint per op
/// made SQLite copy every page an op touched into its statement journal,
/// about a third of the writer's instructions per publish — and counts the
/// rows each op changed (`total_changes`). Only when an op fails after
/// changing rows is the whole batch rolled back and applied again from its
/// copy, each op in a savepoint of its own, so that only that op is undone.
#[derive(Clone, Copy)]
enum Isolation {
    None,
    Savepoints,
}

/// A batch applied and not yet committed.
struct Applied {
    /// Answers to send at the commit.
    completions: Vec<Completion>,
    /// With `--ack-after-replica`, the answers that wait for the replica.
    after_replica: Vec<Completion>,
    /// SQLite rolled the transaction back by itself.
    lost: bool,
}

/// Keeps the op's changes if it succeeded, and answers it after the commit.
fn done<T: Send + 'static>(reply: Reply<T>, result: Result<T, StoreError>) -> (bool, Completion) {
    (result.is_ok(), answer(reply, result))
}

struct Writer {
    conn: Connection,
    subscriptions: Subscriptions,
    config: WriterConfig,
    /// What to tell the scheduler once the current batch commits.
    wake: Wake,
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

    /// Commits `batch`, then gives back the holds of the deliveries whose
    /// attempts it recorded, committed or not: if not, they are pending
    /// still, and are sent again.
    fn commit_batch(&mut self, batch: &mut Vec<WriteOp>) {
        let recorded: Vec<String> = batch
            .iter()
            .filter_map(|op| match op {
                WriteOp::RecordAttempt(r) => Some(r.delivery_id.clone()),
                _ => None,
            })
            .collect();
        let (work, handed) = self.commit(batch);
        if !recorded.is_empty() {
            self.config
                .holds
                .release(recorded.iter().map(String::as_str));
        }
        // After the holds are given back: a due query the scheduler makes
        // when woken sees those deliveries as their records left them.
        self.config.wakeups.notify(work, false, handed);
    }

    /// Commits `batch` and answers its ops (telling the scheduler of
    /// webhook changes first). Returns what else to tell it: whether
    /// deliveries became due that it must look for, and whether new ones
    /// were handed over (`Wakeups::notify`).
    fn commit(&mut self, batch: &mut Vec<WriteOp>) -> (bool, bool) {
        self.set_sync(batch.iter().any(WriteOp::answered_as_durable));
        // Kept for the replay: cloning the batch costs far less than a
        // savepoint per op (see `Isolation`).
        let spare = batch.clone();
        let applied = match self.begin_and_apply(batch.drain(..), Isolation::None) {
            Some(applied) => applied,
            None => {
                // An op failed after writing: undo the whole batch, and
                // apply it again with a savepoint per op. Nothing has been
                // answered yet; the first pass's answers are dropped.
                log::debug!("an op failed after writing; the batch is applied again op by op");
                let _ = self.exec_cached("ROLLBACK");
                self.reload_subscriptions();
                self.wake = Wake::default();
                match self.begin_and_apply(spare.into_iter(), Isolation::Savepoints) {
                    Some(applied) => applied,
                    None => {
                        // Not reached: with savepoints no op is left half
                        // applied. Were it, the callers get an error from
                        // their dropped reply channels, and nothing commits.
                        let _ = self.exec_cached("ROLLBACK");
                        return (true, false);
                    }
                }
            }
        };
        let Applied {
            completions,
            after_replica,
            lost,
        } = applied;
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
            self.reload_subscriptions();
        }
        let commit = committed.as_ref().map(|_| ());
        let wake = std::mem::take(&mut self.wake);
        let notice = if commit.is_ok() {
            let handed = !wake.fresh.is_empty();
            // What the hand-over cannot take is left to the due query.
            let left = match &self.config.handover {
                Some(handover) if handed => !handover.offer(wake.fresh),
                _ => handed,
            };
            (wake.work || left, handed)
        } else {
            // The attempts it recorded are given back uncommitted: pending
            // and due, for the due query to find.
            (true, false)
        };
        if commit.is_ok() && wake.webhooks {
            // Before the answers: a job made before the change stops at
            // once (`Wakeups::webhooks_version`).
            self.config.wakeups.notify(false, true, false);
        }
        for c in completions {
            c(commit);
        }
        if !after_replica.is_empty() {
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
        notice
    }

    /// Opens the batch's transaction and applies `ops` in it. `None` when,
    /// without savepoints, an op failed after writing (the transaction is
    /// still open, holding that op's changes).
    fn begin_and_apply(
        &mut self,
        ops: impl Iterator<Item = WriteOp>,
        isolation: Isolation,
    ) -> Option<Applied> {
        let mut applied = Applied {
            completions: Vec::with_capacity(ops.size_hint().0),
            after_replica: Vec::new(),
            lost: false,
        };
        if let Err(e) = self
            .exec_cached("BEGIN IMMEDIATE")
            .context("starting transaction")
        {
            log::warn!("{e}");
            for op in ops {
                applied.completions.push(self.refuse(op));
            }
            for c in applied.completions.drain(..) {
                c(Err(&e));
            }
            return Some(applied);
        }
        for op in ops {
            // SQLite rolls the whole transaction back by itself on some
            // errors (disk full, I/O error, out of memory). Ops after that
            // would run in autocommit mode, committed one by one: refuse
            // them instead, and fail the batch.
            if applied.lost {
                applied.completions.push(self.refuse(op));
                continue;
            }
            let waits = self.confirmer.is_some() && op.answered_after_replica();
            let completion = match isolation {
                Isolation::Savepoints => self.apply_in_savepoint(op),
                Isolation::None => {
                    let before = self.conn.total_changes();
                    let handed = self.wake.fresh.len();
                    let (ok, completion) = self.apply(op);
                    let wrote = self.conn.total_changes() != before;
                    if !ok && wrote && !self.conn.is_autocommit() {
                        return None;
                    }
                    if !ok {
                        self.wake.fresh.truncate(handed);
                    }
                    completion
                }
            };
            if waits {
                applied.after_replica.push(completion);
            } else {
                applied.completions.push(completion);
            }
            applied.lost = self.conn.is_autocommit();
        }
        Some(applied)
    }

    /// The fan-out table from the database, after a rollback undid
    /// webhook changes it already holds.
    fn reload_subscriptions(&mut self) {
        match Subscriptions::load(&self.conn) {
            Ok(subs) => self.subscriptions = subs,
            Err(e) => log::error!("reloading webhooks after rollback: {e}"),
        }
    }

    /// `synchronous=FULL` (fsync at commit) for batches holding an op whose
    /// answer promises durability; `NORMAL` (no fsync in WAL mode) for
    /// batches of engine bookkeeping only. WAL frames are written in order,
    /// so the next FULL commit makes the earlier NORMAL ones durable too;
    /// a crash before it loses only attempt records and token uses, and a lost
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
        let handed = self.wake.fresh.len();
        let (ok, completion) = self.apply(op);
        if !ok {
            // Undone with the savepoint: nothing to hand over.
            self.wake.fresh.truncate(handed);
        }
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
        let mut tx = Tx {
            conn: &self.conn,
            now: clock::now_ms(),
            subscriptions: &mut self.subscriptions,
            wake: &mut self.wake,
            disable_after_ms: self.config.disable_after_ms,
            holds: &self.config.holds,
            hand_over: self.config.handover.is_some(),
        };
        match op {
            WriteOp::Publish { event, only, reply } => {
                let result = events::apply_publish(&mut tx, event, only);
                (
                    matches!(result, Ok(PublishOutcome::Created { .. })),
                    answer(reply, result),
                )
            }
            WriteOp::CreateWebhook {
                webhook,
                actor,
                reply,
            } => done(reply, webhooks::apply_create(&mut tx, webhook, &actor)),
            WriteOp::UpdateWebhook {
                id,
                patch,
                actor,
                reply,
            } => done(reply, webhooks::apply_update(&mut tx, &id, patch, &actor)),
            WriteOp::DeleteWebhook { id, actor, reply } => {
                done(reply, webhooks::apply_delete(&mut tx, &id, &actor))
            }
            WriteOp::RotateSecret {
                id,
                secret,
                until,
                actor,
                reply,
            } => done(
                reply,
                webhooks::apply_rotate_secret(&mut tx, &id, &secret, until, &actor),
            ),
            WriteOp::CreateEventType {
                event_type,
                actor,
                reply,
            } => done(
                reply,
                event_types::apply_create(&mut tx, &event_type, &actor),
            ),
            WriteOp::CreateToken {
                token,
                hash,
                actor,
                reply,
            } => done(reply, tokens::apply_create(&mut tx, &token, &hash, &actor)),
            WriteOp::RevokeToken { id, actor, reply } => {
                done(reply, tokens::apply_revoke(&mut tx, &id, &actor))
            }
            WriteOp::TouchToken { id, at } => {
                let result = tokens::apply_touch(&mut tx, &id, at);
                if let Err(e) = &result {
                    log::warn!("{e}");
                }
                (result.is_ok(), Box::new(|_| {}))
            }
            WriteOp::RecordAttempt(record) => {
                let result = deliveries::apply_record_attempt(&mut tx, *record);
                if let Err(e) = &result {
                    log::error!("recording a delivery attempt: {e}");
                }
                (result.is_ok(), Box::new(|_| {}))
            }
            WriteOp::RetryDelivery { id, actor, reply } => {
                done(reply, deliveries::apply_retry(&mut tx, &id, &actor))
            }
            WriteOp::Replay {
                webhook_id,
                status,
                since,
                until,
                actor,
                reply,
            } => done(
                reply,
                deliveries::apply_replay(&mut tx, &webhook_id, status, since, until, &actor),
            ),
            WriteOp::Prune {
                before,
                audit_before,
                limit,
                reply,
            } => done(
                reply,
                deliveries::apply_prune(&mut tx, before, audit_before, limit),
            ),
            WriteOp::Alert {
                change,
                announce,
                now,
                reply,
            } => {
                // The alerts thread's time: the alert row's and its event's.
                tx.now = now;
                done(reply, monitoring::apply_alert(&mut tx, change, announce))
            }
            WriteOp::Ping { reply } => (true, answer(reply, Ok(()))),
            WriteOp::Shutdown => (true, Box::new(|_| {})),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer_on(dir: &std::path::Path) -> Writer {
        writer_with(dir, None)
    }

    fn writer_with(dir: &std::path::Path, handover: Option<Arc<Handover>>) -> Writer {
        let conn =
            super::super::open_writer_for(&dir.join("hookbox.db"), Replication::None).unwrap();
        conn.execute_batch(
            "INSERT INTO webhooks (id, url, secret, events, created_at, updated_at) \
               VALUES ('wh_a', 'https://a.example/', 's', '[\"*\"]', 1, 1)",
        )
        .unwrap();
        let subscriptions = Subscriptions::load(&conn).unwrap();
        Writer {
            conn,
            subscriptions,
            config: WriterConfig {
                disable_after_ms: 0,
                wakeups: Wakeups::new().0,
                holds: Default::default(),
                handover,
                replication: Replication::None,
                ack_after_replica: None,
            },
            wake: Wake::default(),
            sync_full: true,
            confirmer: None,
        }
    }

    fn publish(
        id: &str,
        event_type: &str,
    ) -> (WriteOp, answer::Answer<Result<PublishOutcome, StoreError>>) {
        let (reply, answer) = answer::pair();
        let event = Event {
            id: id.into(),
            event_type: event_type.into(),
            timestamp: "2026-12-03T00:00:00Z".into(),
            created_at: 0,
            idempotency_key: None,
            request_hash: Vec::new(),
            payload: b"{}".to_vec(),
            deliveries: 0,
        };
        let op = WriteOp::Publish {
            event,
            only: None,
            reply,
        };
        (op, answer)
    }

    #[test]
    fn a_webhook_change_moves_the_version_before_its_flag_is_taken() {
        let (wakeups, woken) = Wakeups::new();
        let start = wakeups.webhooks_version();
        wakeups.notify(true, false, false);
        assert_eq!(
            wakeups.webhooks_version(),
            start,
            "new work is no webhook change"
        );
        assert!(!wakeups.take_webhooks());
        wakeups.notify(false, true, false);
        // Whoever takes the flag reads the new count (what a job made
        // before the change compares against).
        assert!(wakeups.take_webhooks());
        assert_eq!(wakeups.webhooks_version(), start + 1);
        assert!(woken.try_recv().is_ok(), "the scheduler was poked");
    }

    fn stored(conn: &Connection, sql: &str) -> Vec<String> {
        let mut stmt = conn.prepare(sql).unwrap();
        stmt.query_map([], |row| row.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn an_op_that_fails_after_writing_is_undone_alone_and_its_batch_neighbours_commit() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = writer_on(dir.path());
        // evt_2's event row is written, then its delivery is refused.
        writer
            .conn
            .execute_batch(
                "CREATE TRIGGER refuse_evt_2 BEFORE INSERT ON deliveries \
                 WHEN NEW.event_id = 'evt_2' BEGIN SELECT RAISE(ABORT, 'refused'); END",
            )
            .unwrap();
        let (first, first_answer) = publish("evt_1", "profile.created");
        let (broken, broken_answer) = publish("evt_2", "profile.created");
        let (last, last_answer) = publish("evt_3", "profile.created");
        writer.commit_batch(&mut vec![first, broken, last]);

        for answer in [first_answer, last_answer] {
            assert!(matches!(
                answer.try_recv().unwrap(),
                Ok(PublishOutcome::Created { deliveries: 1 })
            ));
        }
        assert!(broken_answer.try_recv().unwrap().is_err());
        assert_eq!(
            stored(&writer.conn, "SELECT id FROM events ORDER BY id"),
            ["evt_1", "evt_3"]
        );
        assert_eq!(
            stored(
                &writer.conn,
                "SELECT event_id FROM deliveries ORDER BY event_id"
            ),
            ["evt_1", "evt_3"]
        );
        assert!(writer.conn.is_autocommit(), "the transaction is closed");
    }

    #[test]
    fn a_batch_hands_over_held_exactly_the_deliveries_it_committed() {
        let dir = tempfile::tempdir().unwrap();
        let holds = Arc::new(Holds::default());
        let handover = Arc::new(Handover::new(holds.clone()));
        let mut writer = writer_with(dir.path(), Some(handover.clone()));
        let (wakeups, woken) = Wakeups::new();
        writer.config.wakeups = wakeups.clone();
        writer.config.holds = holds.clone();
        // A second webhook; evt_2's delivery to it is refused after its
        // delivery to wh_a was written (and put up for hand-over).
        writer
            .conn
            .execute_batch(
                "INSERT INTO webhooks (id, url, secret, events, created_at, updated_at) \
                   VALUES ('wh_b', 'https://b.example/', 's', '[\"*\"]', 1, 1); \
                 CREATE TRIGGER refuse_evt_2 BEFORE INSERT ON deliveries \
                 WHEN NEW.event_id = 'evt_2' AND NEW.webhook_id = 'wh_b' \
                 BEGIN SELECT RAISE(ABORT, 'refused'); END",
            )
            .unwrap();
        writer.reload_subscriptions();
        let ops: Vec<WriteOp> = ["evt_1", "evt_2", "evt_3"]
            .into_iter()
            .map(|id| publish(id, "profile.created").0)
            .collect();
        writer.commit_batch(&mut ops.into_iter().collect());

        let mut handed: Vec<(String, String, String)> = handover
            .take()
            .into_iter()
            .map(|f| {
                assert_eq!(*f.payload, b"{}");
                assert!(holds.is_held(&f.delivery_id), "{f:?}");
                (f.event_id, f.webhook_id, f.delivery_id)
            })
            .collect();
        handed.sort();
        let mut committed: Vec<(String, String, String)> = writer
            .conn
            .prepare("SELECT event_id, webhook_id, id FROM deliveries")
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        committed.sort();
        assert_eq!(handed, committed);
        let events: Vec<&str> = handed.iter().map(|(e, _, _)| e.as_str()).collect();
        assert_eq!(events, ["evt_1", "evt_1", "evt_3", "evt_3"]);
        // Handed over: the scheduler is woken, with nothing to look for.
        assert!(woken.try_recv().is_ok());
        assert!(!wakeups.take_work());
    }

    #[test]
    fn without_a_hand_over_a_publish_tells_the_scheduler_to_look() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = writer_on(dir.path());
        let (wakeups, woken) = Wakeups::new();
        writer.config.wakeups = wakeups.clone();
        writer.commit_batch(&mut vec![publish("evt_1", "profile.created").0]);
        assert!(woken.try_recv().is_ok());
        assert!(wakeups.take_work());
    }

    #[test]
    fn an_op_refused_before_writing_leaves_its_batch_neighbours_committed() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = writer_on(dir.path());
        let (first, first_answer) = publish("evt_1", "profile.created");
        // The same id again: refused by the primary key before any row.
        let (again, again_answer) = publish("evt_1", "profile.created");
        writer.commit_batch(&mut vec![first, again]);
        assert!(matches!(
            first_answer.try_recv().unwrap(),
            Ok(PublishOutcome::Created { deliveries: 1 })
        ));
        assert!(again_answer.try_recv().unwrap().is_err());
        assert_eq!(stored(&writer.conn, "SELECT id FROM events"), ["evt_1"]);
        assert_eq!(
            stored(&writer.conn, "SELECT event_id FROM deliveries"),
            ["evt_1"]
        );
    }

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
            headers: Default::default(),
            filter: Default::default(),
            ordering_key: None,
        };
        subs.upsert(&hook("wh_b", &["item.*"]));
        subs.upsert(&hook("wh_a", &["*"]));
        subs.upsert(&hook("wh_c", &["email.updated"]));
        assert_eq!(
            subs.matching("item.sold")
                .map(|s| s.id.as_str())
                .collect::<Vec<_>>(),
            ["wh_a", "wh_b"]
        );
        subs.upsert(&hook("wh_b", &["profile.created"]));
        assert_eq!(
            subs.matching("item.sold")
                .map(|s| s.id.as_str())
                .collect::<Vec<_>>(),
            ["wh_a"]
        );
        subs.remove("wh_a");
        assert_eq!(
            subs.matching("email.updated")
                .map(|s| s.id.as_str())
                .collect::<Vec<_>>(),
            ["wh_c"]
        );
    }
}
