//! Monitoring: what the delivery engine did lately and how the queue
//! stands, as Prometheus metrics ([`metrics`]), statistics of the last hour
//! and day ([`stats`]) and alerts ([`alerts`]).
//!
//! Delivery workers report each finished attempt to [`Monitor::attempt`]:
//! metrics by atomic adds, statistics under a mutex held for a few
//! additions. The queue (pending, held, oldest waiting) is read from the
//! database at most once every [`QUEUE_FRESH`], whoever asks. A reading
//! counts the pending deliveries on an index, so it costs time in
//! proportion to the backlog (about 80 ms per million pending on the
//! development machine): the first one is taken at start on a thread of its
//! own ([`Monitor::warm_queue`]), and `/healthz` does not wait for it.

pub mod alerts;
pub mod metrics;
pub mod stats;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::store::StoreError;
use crate::store::holds::Holds;
use crate::store::monitoring::{self, Queue};
use stats::{Sample, Series};

/// How long a queue reading is reused.
const QUEUE_FRESH: Duration = Duration::from_secs(5);

/// The last attempt to a webhook, for alerts that say what failed.
#[derive(Debug, Clone, Default)]
pub struct LastAttempt {
    pub ok: bool,
    pub at: i64,
    /// `http_status 500: <body start>`, `timeout`, ...
    pub error: Option<String>,
    /// When a delivery to it last failed for good.
    pub exhausted_at: Option<i64>,
}

#[derive(Default)]
struct Recent {
    all: Series,
    hooks: HashMap<String, Series>,
    last: HashMap<String, LastAttempt>,
}

/// One attempt as a worker saw it.
pub struct Finished<'a> {
    pub webhook_id: &'a str,
    pub started_at: i64,
    pub duration: Duration,
    /// `None` for a 2xx; else the error kind (`http_status`, `timeout`, ...).
    pub error_kind: Option<&'a str>,
    pub status: Option<u16>,
    pub body: &'a [u8],
    pub attempt: i64,
    /// What became of the delivery: `succeeded`, `retried`, `failed`.
    pub outcome: &'static str,
}

pub struct Monitor {
    pub metrics: metrics::Metrics,
    /// The deliveries the engine holds (`delivering`): shared with the
    /// writer and the scheduler (`store/holds.rs`).
    pub holds: Arc<Holds>,
    recent: Mutex<Recent>,
    queue: Mutex<Option<(Instant, Option<String>, Queue)>>,
    /// The first reading of the whole queue since start is being taken.
    warming: AtomicBool,
}

impl Monitor {
    pub fn new() -> Monitor {
        Monitor {
            metrics: metrics::Metrics::new(),
            holds: Arc::new(Holds::default()),
            recent: Mutex::new(Recent::default()),
            queue: Mutex::new(None),
            warming: AtomicBool::new(false),
        }
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        self.recent
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts a finished attempt.
    pub fn attempt(&self, f: &Finished<'_>) {
        let ok = f.error_kind.is_none();
        self.metrics.attempt(
            f.error_kind.unwrap_or("success"),
            f.outcome,
            f.duration.as_secs_f64(),
            f.attempt > 1,
        );
        let sample = Sample {
            at_ms: f.started_at,
            ok,
            duration_ms: f.duration.as_millis() as u64,
            retry: f.attempt > 1,
            exhausted: f.outcome == "failed",
            timeout: f.error_kind == Some("timeout"),
        };
        let error = f.error_kind.map(|kind| {
            let body = String::from_utf8_lossy(&f.body[..f.body.len().min(120)]).into_owned();
            match f.status {
                Some(status) => format!("{kind} {status}: {}", body.trim()),
                None => format!("{kind}: {}", body.trim()),
            }
        });
        let mut recent = self.recent();
        recent.all.add(&sample);
        recent
            .hooks
            .entry(f.webhook_id.to_owned())
            .or_default()
            .add(&sample);
        let last = recent.last.entry(f.webhook_id.to_owned()).or_default();
        last.ok = ok;
        last.at = f.started_at;
        last.error = error;
        if sample.exhausted {
            last.exhausted_at = Some(f.started_at);
        }
    }

    /// Fills the statistics with the attempts stored before `until` (the
    /// start of this process), from the last day.
    pub fn load_history(&self, conn: &Connection, until: i64) -> Result<usize, StoreError> {
        let mut n = 0;
        let mut loaded = Recent::default();
        monitoring::attempts_between(conn, until - 24 * 3_600_000, until, |a| {
            let sample = Sample {
                at_ms: a.started_at,
                ok: a.ok,
                duration_ms: a.duration_ms.max(0) as u64,
                retry: a.number > 1,
                exhausted: a.exhausted,
                timeout: a.timeout,
            };
            loaded.all.add(&sample);
            loaded.hooks.entry(a.webhook_id).or_default().add(&sample);
            n += 1;
        })?;
        // Merge under the lock: attempts of this process are already in.
        let mut recent = self.recent();
        let live = std::mem::take(&mut *recent);
        *recent = loaded;
        recent.last = live.last;
        replay(&mut recent, live.all, live.hooks);
        Ok(n)
    }

    /// The statistics of all webhooks, or of one.
    pub fn series(&self, webhook: Option<&str>) -> Series {
        let recent = self.recent();
        match webhook {
            None => recent.all.clone(),
            Some(id) => recent.hooks.get(id).cloned().unwrap_or_default(),
        }
    }

    /// What the last attempt to each webhook was.
    pub fn last_attempts(&self) -> HashMap<String, LastAttempt> {
        self.recent().last.clone()
    }

    /// The queue, read from the database unless a reading of the same
    /// scope is under [`QUEUE_FRESH`] old, with the deliveries held now
    /// (pending in the database) counted as delivering.
    pub fn queue(&self, conn: &Connection, webhook: Option<&str>) -> Result<Queue, StoreError> {
        let mut q = self.stored_queue(conn, webhook)?;
        q.delivering = self.holds.count(webhook) as i64;
        q.pending = q.pending.saturating_sub(q.delivering).max(0);
        Ok(q)
    }

    fn stored_queue(&self, conn: &Connection, webhook: Option<&str>) -> Result<Queue, StoreError> {
        let mut cached = self
            .queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((at, scope, q)) = cached.as_ref()
            && at.elapsed() < QUEUE_FRESH
            && scope.as_deref() == webhook
        {
            return Ok(*q);
        }
        let q = monitoring::queue(conn, webhook)?;
        *cached = Some((Instant::now(), webhook.map(str::to_owned), q));
        Ok(q)
    }

    /// Says that the first reading of the whole queue is under way, before
    /// the thread that takes it ([`Monitor::warm_queue`]) is started.
    pub fn begin_warming(&self) {
        self.warming.store(true, Ordering::Release);
    }

    /// Takes the first reading of the whole queue (at start, on a thread of
    /// its own), then ends the warm-up ([`Monitor::queue_warming`]).
    /// With `conn` absent (it could not be opened) it only ends the warm-up.
    pub fn warm_queue(&self, conn: Option<&Connection>) -> Result<(), StoreError> {
        let read = conn.map(|conn| self.queue(conn, None));
        self.warming.store(false, Ordering::Release);
        read.transpose().map(|_| ())
    }

    /// Whether the first reading since start is still being taken:
    /// `/healthz`, which must answer at once, then shows no queue rather
    /// than wait for that count.
    pub fn queue_warming(&self) -> bool {
        self.warming.load(Ordering::Acquire)
    }
}

/// Adds what this process counted while the history loaded: the two cover
/// different times (after and before the start), so buckets just add up.
fn replay(recent: &mut Recent, live_all: Series, live_hooks: HashMap<String, Series>) {
    recent.all.merge(&live_all);
    for (id, series) in live_hooks {
        recent.hooks.entry(id).or_default().merge(&series);
    }
}
