//! The scheduler: decides which pending deliveries go to the workers, and
//! when.
//!
//! It keeps a small table of the live webhooks (URL, secret, limits, how
//! many of their deliveries are in flight) and wakes when the writer commits
//! new work or webhook changes ([`Wakeups`]), when a worker finishes, or when
//! the earliest known retry falls due — never by polling on a short clock.
//!
//! A new delivery comes from the writer in memory, with its body, once its
//! event has committed (`store/handover.rs`): while a webhook keeps up,
//! its deliveries are never read back. Everything else is found in the
//! database, per webhook: `due_for_webhook` and `next_due_for_webhook`
//! are index seeks on `deliveries_webhook_due`, so their cost does not grow
//! with the backlog, and a disabled, rate-limited or slow webhook holding
//! many deliveries costs the others nothing. The same statement reads each
//! delivery's payload. A webhook looks there when told that deliveries
//! fell due some other way (retries, replays, a hand-over it could not
//! take), when a retry it knows of falls due, and at least once a second. A round holds what it found (in memory, see
//! `store/holds.rs`: the deliveries stay `pending` in the database and the
//! next due query passes over them) and hands the held ones to the workers
//! as jobs of up to [`BATCH`] deliveries of one webhook, sent one after
//! another: at most `--webhook-concurrency` jobs per webhook and `--workers`
//! in all. A busy webhook's next delivery thus follows the last on the same
//! worker, without a hop through the scheduler and back.
//!
//! It never writes to the database: what it holds is in memory, and the
//! workers record attempts through the writer.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, select};
use rusqlite::Connection;
use ureq::http::header::{HeaderName, HeaderValue};

use super::worker::{Delivery, Done, Job};
use crate::clock;
use crate::store::handover::Handover;
use crate::store::holds::Holds;
use crate::store::writer::{NextStep, Wakeups};
use crate::store::{StoreError, events, webhooks};

/// The longest the scheduler sleeps without a reason; a safety net only.
const IDLE_WAKE: Duration = Duration::from_secs(1);

/// How many deliveries of one webhook are held ahead of the workers, so
/// that a finished attempt is followed by the next without a database round
/// trip. Held ones read `delivering`; after a crash they are simply pending.
const PREFETCH: usize = 32;

/// The most deliveries one job carries (a worker sends them one after
/// another). A busy webhook's queue is shared out among its free slots, so
/// that a long queue keeps all of them busy and a short one is not held by
/// one worker.
const BATCH: usize = 8;

/// How many deliveries of one webhook may wait in its queue when they come
/// from the hand-over: more than the due query lines up, since they cost
/// no read; past it they are left to the due query.
const HANDED_OVER_QUEUE: usize = 4 * PREFETCH;

/// How often every webhook looks in the database even though the
/// hand-over brought it everything (`Hook::synced`): a safety net, one
/// index seek per webhook a second.
const RESYNC_MS: i64 = 1000;

/// Limits from the command line.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub workers: usize,
    pub per_webhook: usize,
    pub default_max_attempts: u32,
}

/// What the scheduler listens to.
pub struct Inputs {
    pub woken: Receiver<()>,
    /// Finished jobs, from the workers.
    pub done: Receiver<Done>,
    pub stop: Receiver<()>,
}

struct Hook {
    /// Shared with every job: no copy of the URL and secrets per attempt.
    url: Arc<str>,
    /// The current secret, then the rotated-out one while it still signs.
    secrets: Arc<[String]>,
    /// The current secret alone, once the rotated-out one has stopped.
    current_secret: Arc<[String]>,
    /// Custom headers, shared with every job like the URL.
    headers: Arc<[(HeaderName, HeaderValue)]>,
    /// When the rotated-out secret stops signing (Unix ms), if there is one.
    previous_until: Option<i64>,
    enabled: bool,
    /// Its deliveries wait behind earlier ones of the same ordering key
    /// (the due query sees to it, so they never come by hand-over).
    ordered: bool,
    max_attempts: u32,
    rate_per_s: Option<u32>,
    in_flight: usize,
    /// Look for due deliveries at the next round.
    check: bool,
    /// The last due query found everything due then, and every delivery
    /// of this webhook that fell due since came through the hand-over
    /// (`store/handover.rs`): nothing is left for a due query to find until
    /// `next_due`. Cleared by any other news of due work, by a hand-over
    /// this webhook could not take, by a reload, and once a second.
    synced: bool,
    /// The earliest known due time of a pending delivery not yet handed out.
    next_due: Option<i64>,
    /// Token bucket for `rate_limit_per_s`: tokens and when they were counted.
    tokens: f64,
    tokens_at: i64,
    /// Deliveries held (`delivering`) but not yet handed to a worker,
    /// each with the body it sends (shared by the webhooks the event went
    /// to) and its attempt's number.
    queue: VecDeque<Delivery>,
    /// Shared with the webhook's jobs in flight; cleared when it may no
    /// longer be sent to, so that they hand back what they have not sent.
    live: Arc<AtomicBool>,
}

impl Hook {
    /// The current secret, and the rotated-out one while its grace lasts:
    /// each signs, so receivers can switch without dropping events.
    fn signing_secrets(&self, now: i64) -> Arc<[String]> {
        match self.previous_until {
            Some(until) if now >= until => self.current_secret.clone(),
            _ => self.secrets.clone(),
        }
    }
}

pub struct Scheduler {
    conn: Connection,
    wakeups: Arc<Wakeups>,
    jobs: Sender<Job>,
    limits: Limits,
    hooks: HashMap<String, Hook>,
    in_flight: usize,
    /// What the engine holds: taken here, given back here for what was not
    /// sent and by the writer for what was (`store/holds.rs`).
    holds: Arc<Holds>,
    /// When to reload the webhooks from the database regardless of
    /// wake-ups: set after a 410 stopped a webhook locally, so that the
    /// database's word (disabled, or enabled again since) wins soon after.
    reload_at: Option<i64>,
    /// When the loop last went round (Unix ms), for the watchdog.
    heartbeat: Arc<AtomicI64>,
    /// `Wakeups::webhooks_version` when the webhooks were last loaded.
    version: u64,
    /// New deliveries from the writer, held for us (`store/handover.rs`).
    handover: Arc<Handover>,
    /// When every webhook was last made to look in the database
    /// regardless (Unix ms): the safety net behind `Hook::synced`.
    resynced_at: i64,
}

impl Scheduler {
    pub fn new(
        conn: Connection,
        wakeups: Arc<Wakeups>,
        jobs: Sender<Job>,
        limits: Limits,
        holds: Arc<Holds>,
        handover: Arc<Handover>,
        heartbeat: Arc<AtomicI64>,
    ) -> Result<Scheduler, StoreError> {
        let mut scheduler = Scheduler {
            conn,
            wakeups,
            jobs,
            limits,
            hooks: HashMap::new(),
            in_flight: 0,
            holds,
            reload_at: None,
            heartbeat,
            version: 0,
            handover,
            resynced_at: clock::now_ms(),
        };
        scheduler.reload()?;
        Ok(scheduler)
    }

    /// Runs until `inputs.stop` fires or closes.
    pub fn run(mut self, inputs: Inputs) {
        loop {
            self.heartbeat.store(clock::now_ms(), Ordering::Relaxed);
            let reload_due = self.reload_at.is_some_and(|at| at <= clock::now_ms());
            if (self.wakeups.take_webhooks() || reload_due)
                && let Err(e) = self.reload()
            {
                log::error!("scheduler: reloading webhooks: {e}");
            }
            let now = clock::now_ms();
            let resync = now - self.resynced_at >= RESYNC_MS;
            if self.wakeups.take_work() || resync {
                self.hooks.values_mut().for_each(|h| {
                    h.check = true;
                    h.synced = false;
                });
            }
            if resync {
                self.resynced_at = now;
            }
            self.take_handed_over();
            let wait = match self.round(now) {
                Ok(()) => self.wait(clock::now_ms()),
                Err(e) => {
                    // Whatever the failed round had taken off its checks is
                    // looked at again, after a pause rather than at once.
                    log::error!("scheduler: {e}");
                    self.hooks.values_mut().for_each(|h| h.check = true);
                    IDLE_WAKE
                }
            };
            select! {
                recv(inputs.woken) -> _ => {}
                recv(inputs.done) -> done => match done {
                    Ok(done) => {
                        self.finished(done);
                        while let Ok(done) = inputs.done.try_recv() {
                            self.finished(done);
                        }
                    }
                    Err(_) => return,
                },
                recv(inputs.stop) -> _ => return,
                // The safety net: look at every webhook again.
                default(wait) => if wait >= IDLE_WAKE {
                    self.hooks.values_mut().for_each(|h| h.check = true);
                },
            }
        }
    }

    /// Lines up the deliveries the writer handed over (each held for us),
    /// and gives back those it cannot take, for a due query to find: of a
    /// webhook it does not know yet or that is disabled (a reload or an
    /// enable makes it look), or whose queue is long enough (it looks as
    /// soon as its queue runs low).
    fn take_handed_over(&mut self) {
        let handed = self.handover.take();
        if handed.is_empty() {
            return;
        }
        let mut release = Vec::new();
        for fresh in handed {
            match self.hooks.get_mut(&fresh.webhook_id) {
                Some(hook) if hook.enabled && hook.queue.len() < HANDED_OVER_QUEUE => {
                    hook.queue.push_back(Delivery {
                        id: fresh.delivery_id,
                        event_id: fresh.event_id,
                        payload: fresh.payload,
                        attempt: 1,
                    });
                }
                Some(hook) => {
                    hook.synced = false;
                    hook.check = true;
                    release.push(fresh.delivery_id);
                }
                None => release.push(fresh.delivery_id),
            }
        }
        self.holds.release(release.iter().map(String::as_str));
    }

    /// A job came back. Its attempted deliveries' holds are the writer's to
    /// give back, with their records; the unsent ones are lined up again,
    /// or given back if their webhook has stopped.
    fn finished(&mut self, done: Done) {
        self.in_flight = self.in_flight.saturating_sub(1);
        let mut release = Vec::new();
        if let Some(hook) = self.hooks.get_mut(&done.webhook_id) {
            hook.in_flight = hook.in_flight.saturating_sub(1);
            hook.check = true;
            let gone = done
                .attempted
                .iter()
                .any(|(_, next)| *next == NextStep::DisableWebhook);
            if gone && hook.enabled {
                // The writer disables it with the attempt's record; stop
                // sending now rather than when that commit's reload arrives,
                // and reload in a second whatever happens (it may be enabled
                // again by then).
                hook.enabled = false;
                hook.live.store(false, Ordering::Release);
                self.reload_at = Some(clock::now_ms() + 1000);
                release.extend(hook.queue.drain(..).map(|d| d.id));
            }
            // Not sent because the webhooks changed or this one stopped:
            // first in line again, still held, for the reload to judge (a
            // disabled webhook's queue is given back there).
            for delivery in done.unsent.into_iter().rev() {
                if hook.enabled {
                    hook.queue.push_front(delivery);
                } else {
                    release.push(delivery.id);
                }
            }
        } else {
            // Deleted: cancelled with the webhook.
            release.extend(done.unsent.into_iter().map(|d| d.id));
        }
        self.holds.release(release.iter().map(String::as_str));
    }

    /// Loads the live webhooks, keeping what is known of those already seen.
    /// The lined-up deliveries of a webhook now disabled or deleted are
    /// given back (pending again, or cancelled with it).
    fn reload(&mut self) -> Result<(), StoreError> {
        let now = clock::now_ms();
        self.reload_at = None;
        // Before the read: a change committed meanwhile makes the jobs from
        // this load stop (see `Wakeups::webhooks_version`).
        self.version = self.wakeups.webhooks_version();
        let mut hooks = HashMap::new();
        let mut release = Vec::new();
        for w in webhooks::all_live(&self.conn)? {
            let old = self.hooks.remove(&w.id);
            let rate = w.rate_limit_per_s;
            // A webhook enabled again gets a new flag: jobs from before it
            // was stopped still hand back what they had not sent.
            let live = match &old {
                Some(h) if h.enabled => h.live.clone(),
                _ => Arc::new(AtomicBool::new(w.enabled)),
            };
            let (in_flight, mut queue, tokens, tokens_at) = match old {
                Some(h) if h.rate_per_s == rate => (h.in_flight, h.queue, h.tokens, h.tokens_at),
                Some(h) => (h.in_flight, h.queue, f64::from(rate.unwrap_or(0)), now),
                None => (0, VecDeque::new(), f64::from(rate.unwrap_or(0)), now),
            };
            if !w.enabled {
                live.store(false, Ordering::Release);
                release.extend(queue.drain(..).map(|d| d.id));
            }
            hooks.insert(
                w.id.clone(),
                Hook {
                    previous_until: w
                        .previous_secret_until
                        .filter(|_| w.previous_secret.is_some()),
                    current_secret: Arc::from([w.secret.clone()]),
                    secrets: std::iter::once(w.secret)
                        .chain(
                            w.previous_secret
                                .filter(|_| w.previous_secret_until.is_some()),
                        )
                        .collect(),
                    url: w.url.into(),
                    headers: w.headers.to_request().into(),
                    enabled: w.enabled,
                    ordered: w.ordering_key.is_some(),
                    max_attempts: w.max_attempts.unwrap_or(self.limits.default_max_attempts),
                    rate_per_s: rate,
                    in_flight,
                    check: true,
                    next_due: None,
                    tokens,
                    tokens_at,
                    queue,
                    live,
                    synced: false,
                },
            );
        }
        // Webhooks gone since the last load: their lined-up deliveries were
        // cancelled with them.
        for gone in self.hooks.values_mut() {
            gone.live.store(false, Ordering::Release);
            release.extend(gone.queue.drain(..).map(|d| d.id));
        }
        self.hooks = hooks;
        self.holds.release(release.iter().map(String::as_str));
        Ok(())
    }

    /// How long to sleep: until the earliest due time of a webhook that has
    /// room, or at once if one should be checked.
    fn wait(&self, now: i64) -> Duration {
        if self.in_flight >= self.limits.workers {
            return IDLE_WAKE;
        }
        let soonest = self
            .hooks
            .values()
            .filter(|h| h.enabled && h.in_flight < self.limits.per_webhook)
            .filter_map(|h| {
                let ready = h.check || (!h.queue.is_empty() && h.rate_per_s.is_none());
                if ready { Some(now) } else { h.next_due }
            })
            .min();
        match soonest.into_iter().chain(self.reload_at).min() {
            Some(at) => Duration::from_millis(at.saturating_sub(now).clamp(0, 1000) as u64),
            None => IDLE_WAKE,
        }
    }

    /// One round: top up the queue of held deliveries of every webhook that
    /// can send, then hand queued deliveries to the workers within the
    /// limits.
    fn round(&mut self, now: i64) -> Result<(), StoreError> {
        let mut found: Vec<(String, events::Due)> = Vec::new();
        let mut exhausted: Vec<String> = Vec::new();
        for (id, hook) in self.hooks.iter_mut() {
            let retry_due = hook.next_due.is_some_and(|at| at <= now);
            let room = self.limits.per_webhook.saturating_sub(hook.in_flight);
            if !hook.enabled || !(hook.check || retry_due) || room == 0 {
                continue;
            }
            if hook.synced && !retry_due {
                // Nothing in the database that the hand-over did not bring.
                hook.check = false;
                continue;
            }
            if hook.queue.len() >= room * BATCH {
                // Enough lined up; a finished job asks again. (Leaving
                // `check` set would wake the loop at once, again and again,
                // while a rate limit holds the queue.)
                hook.check = false;
                continue;
            }
            hook.check = false;
            let want = PREFETCH.saturating_sub(hook.queue.len());
            let rows =
                events::due_for_webhook(&self.conn, id, now, want, &self.holds, hook.ordered)?;
            if rows.len() < want {
                exhausted.push(id.clone());
                // An ordered webhook's next delivery of a key falls due when
                // the one before it is recorded: it always looks.
                hook.synced = !hook.ordered;
            } else {
                // There may be more; look again when the queue runs low.
                hook.check = true;
            }
            found.extend(rows.into_iter().map(|d| (id.clone(), d)));
        }
        if !found.is_empty() {
            // One copy of each event's body for all the webhooks it goes to.
            let mut payloads: HashMap<String, Arc<Vec<u8>>> = HashMap::new();
            for (webhook_id, due) in found {
                if let Some(hook) = self.hooks.get_mut(&webhook_id) {
                    let payload = payloads
                        .entry(due.event_id.clone())
                        .or_insert_with(|| Arc::new(due.payload))
                        .clone();
                    if !self.holds.try_hold(&webhook_id, &due.id) {
                        // Handed over meanwhile: lined up from there.
                        continue;
                    }
                    hook.queue.push_back(Delivery {
                        id: due.id,
                        event_id: due.event_id,
                        payload,
                        attempt: due.attempts + 1,
                    });
                }
            }
        }
        // A webhook deleted or disabled since the round began: reload before
        // sending. (A change answered after this is caught by the job's
        // version, before each delivery.)
        if self.wakeups.take_webhooks() {
            self.reload()?;
        }
        for id in exhausted {
            if let Some(hook) = self.hooks.get_mut(&id) {
                hook.next_due =
                    events::next_due_for_webhook(&self.conn, &id, &self.holds, hook.ordered)?;
            }
        }
        self.dispatch(now)
    }

    /// Hands queued deliveries to the workers as jobs: at most
    /// `per_webhook` jobs in flight per webhook, `workers` in all, and
    /// within each webhook's rate (a rate-limited webhook's jobs carry one
    /// delivery each, one token each).
    fn dispatch(&mut self, now: i64) -> Result<(), StoreError> {
        for (webhook_id, hook) in self.hooks.iter_mut() {
            if !hook.enabled {
                continue;
            }
            let mut free = self.limits.per_webhook.saturating_sub(hook.in_flight);
            free = free.min(self.limits.workers.saturating_sub(self.in_flight));
            let mut batch = BATCH;
            if let Some(rate) = hook.rate_per_s {
                let rate = f64::from(rate);
                let elapsed = (now - hook.tokens_at).max(0) as f64 / 1000.0;
                hook.tokens = (hook.tokens + elapsed * rate).min(rate);
                hook.tokens_at = now;
                let allowed = hook.tokens.floor().max(0.0) as usize;
                if allowed == 0 && !hook.queue.is_empty() {
                    let wait = ((1.0 - hook.tokens) / rate * 1000.0).ceil() as i64;
                    hook.next_due = Some(now + wait.max(1));
                }
                free = free.min(allowed);
                batch = 1;
            }
            while free > 0 && !hook.queue.is_empty() {
                let take = hook.queue.len().div_ceil(free).min(batch);
                let deliveries = hook.queue.drain(..take).collect();
                let job = Job {
                    webhook_id: webhook_id.clone(),
                    url: hook.url.clone(),
                    secrets: hook.signing_secrets(clock::now_ms()),
                    headers: hook.headers.clone(),
                    ordered: hook.ordered,
                    max_attempts: hook.max_attempts,
                    live: hook.live.clone(),
                    version: self.version,
                    deliveries,
                };
                free -= 1;
                hook.in_flight += 1;
                if hook.rate_per_s.is_some() {
                    hook.tokens -= 1.0;
                }
                self.in_flight += 1;
                if self.jobs.send(job).is_err() {
                    return Err(StoreError::Unavailable(
                        "the delivery workers have stopped".into(),
                    ));
                }
            }
        }
        Ok(())
    }
}
