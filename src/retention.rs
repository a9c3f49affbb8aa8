//! Retention: events, their deliveries and attempt logs older than
//! `--retention` (30 days) are deleted, and the audit log after a year.
//!
//! A thread asks the writer for one small batch at a time
//! ([`BATCH`] events, with their deliveries and attempts, and the pages they
//! freed handed back to the file system), so a batch shares a commit with
//! whatever publishes are queued and holds them up only for as long as the
//! batch itself takes. Between batches it lets the writer breathe. An event
//! whose delivery is still pending or held (a disabled webhook) is kept
//! until that delivery is done: retention never drops an undelivered event.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::clock;
use crate::store::events::Pruned;
use crate::store::writer::WriterHandle;

/// Events per batch: a few milliseconds of deleting.
const BATCH: usize = 200;

/// The audit log is kept this long, whatever `--retention` says.
pub const AUDIT_RETENTION_MS: i64 = 365 * 24 * 3600 * 1000;

/// Pause between two batches of one pass.
const BETWEEN_BATCHES: Duration = Duration::from_millis(20);

/// How often to look for old rows: a quarter of the retention, between
/// 250 ms (tiny retentions, for tests) and a minute.
fn interval(retention: Duration) -> Duration {
    (retention / 4).clamp(Duration::from_millis(250), Duration::from_secs(60))
}

/// Starts the retention thread; it returns once `stopping` is set.
pub fn spawn(
    writer: WriterHandle,
    retention: Duration,
    stopping: Arc<AtomicBool>,
) -> std::io::Result<thread::JoinHandle<()>> {
    let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    let every = interval(retention);
    thread::Builder::new()
        .name("retention".into())
        .spawn(move || {
            clock::every(Duration::ZERO, every, &stopping, || {
                pass(&writer, retention_ms, &stopping);
                true
            });
        })
}

/// Prunes batch after batch until nothing old is left; logs what went.
fn pass(writer: &WriterHandle, retention_ms: i64, stopping: &AtomicBool) {
    let now = clock::now_ms();
    let before = now.saturating_sub(retention_ms);
    let audit_before = now.saturating_sub(AUDIT_RETENTION_MS);
    let began = Instant::now();
    let mut total = Pruned::default();
    let mut slowest = Duration::ZERO;
    loop {
        let batch_began = Instant::now();
        match writer.prune(before, audit_before, BATCH) {
            Ok(p) => {
                slowest = slowest.max(batch_began.elapsed());
                total.events += p.events;
                total.audit_rows += p.audit_rows;
                total.pages_freed += p.pages_freed;
                if p.events < BATCH && p.audit_rows < BATCH {
                    break;
                }
            }
            Err(e) => {
                log::warn!("retention: pruning failed, trying again later: {e}");
                break;
            }
        }
        if stopping.load(Ordering::Acquire) {
            break;
        }
        thread::sleep(BETWEEN_BATCHES);
    }
    if total.events > 0 || total.audit_rows > 0 {
        log::info!(
            "retention: pruned {} events (with their deliveries and attempts) older than {} and {} audit rows older than a year; {} pages returned to the file system; {} ms in all, the longest batch {} ms",
            total.events,
            clock::human_duration(retention_ms),
            total.audit_rows,
            total.pages_freed,
            began.elapsed().as_millis(),
            slowest.as_millis(),
        );
    }
}
