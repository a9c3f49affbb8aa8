//! Delivery to receivers: the scheduler, the workers, signing, backoff and
//! the target policy. [`Engine`] starts and stops the threads.

pub mod backoff;
pub mod scheduler;
pub mod sign;
pub mod target;
pub mod transport;
pub mod worker;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded, unbounded};
use rusqlite::Connection;

use crate::config::Cidr;
use crate::store::StoreError;
use crate::store::handover::Handover;
use crate::store::writer::{Wakeups, WriterHandle};

/// Settings of the engine, from the command line.
pub struct Settings {
    pub monitor: Arc<crate::monitor::Monitor>,
    pub limits: scheduler::Limits,
    pub retry: worker::RetryPolicy,
    pub allow_targets: Vec<Cidr>,
    pub timeout: Duration,
}

/// The running scheduler and workers.
pub struct Engine {
    stop: Sender<()>,
    stopping: Arc<AtomicBool>,
    scheduler: thread::JoinHandle<()>,
    workers: Vec<thread::JoinHandle<()>>,
    heartbeat: Arc<AtomicI64>,
}

/// How long the scheduler's loop may go without a round before it counts
/// as stuck: it goes round at least every second (its safety net).
pub const SCHEDULER_STUCK_MS: i64 = 10_000;

/// Whether the scheduler is going round, without holding the [`Engine`].
#[derive(Clone)]
pub struct Liveness(Arc<AtomicI64>);

impl Liveness {
    /// How long ago the scheduler last went round.
    pub fn scheduler_idle_ms(&self, now: i64) -> i64 {
        now - self.0.load(Ordering::Relaxed)
    }
}

fn spawn_error(e: std::io::Error) -> StoreError {
    StoreError::Unavailable(format!("starting delivery threads: {e}"))
}

impl Engine {
    /// Starts the scheduler (on its own read connection `conn`) and the
    /// workers.
    pub fn start(
        conn: Connection,
        writer: WriterHandle,
        wakeups: Arc<Wakeups>,
        woken: Receiver<()>,
        handover: Arc<Handover>,
        settings: Settings,
    ) -> Result<Engine, StoreError> {
        let (jobs_tx, jobs_rx) = bounded(settings.limits.workers);
        let (done_tx, done_rx) = unbounded();
        let (stop_tx, stop_rx) = bounded(1);
        let stopping = Arc::new(AtomicBool::new(false));
        let agent = worker::agent(settings.allow_targets.clone(), settings.timeout);
        let workers = (0..settings.limits.workers)
            .map(|i| {
                let worker = worker::Worker {
                    agent: agent.clone(),
                    wakeups: wakeups.clone(),
                    writer: writer.clone(),
                    done: done_tx.clone(),
                    policy: settings.retry,
                    stopping: stopping.clone(),
                    monitor: settings.monitor.clone(),
                };
                let jobs = jobs_rx.clone();
                thread::Builder::new()
                    .name(format!("worker-{i}"))
                    .spawn(move || worker.run(jobs))
                    .map_err(spawn_error)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let heartbeat = Arc::new(AtomicI64::new(crate::clock::now_ms()));
        let scheduler = scheduler::Scheduler::new(
            conn,
            wakeups,
            jobs_tx,
            settings.limits,
            settings.monitor.holds.clone(),
            handover,
            heartbeat.clone(),
        )?;
        let inputs = scheduler::Inputs {
            woken,
            done: done_rx,
            stop: stop_rx,
        };
        let scheduler = thread::Builder::new()
            .name("scheduler".into())
            .spawn(move || scheduler.run(inputs))
            .map_err(spawn_error)?;
        Ok(Engine {
            stop: stop_tx,
            stopping,
            scheduler,
            workers,
            heartbeat,
        })
    }

    pub fn liveness(&self) -> Liveness {
        Liveness(self.heartbeat.clone())
    }

    /// Stops handing out work, lets attempts in flight finish until
    /// `deadline`, and returns. Attempts still running then are abandoned:
    /// their deliveries stay pending, due again at the next start.
    pub fn stop(self, deadline: Instant) {
        self.stopping.store(true, Ordering::Release);
        let _ = self.stop.send(());
        if self.scheduler.join().is_err() {
            log::error!("the scheduler panicked");
        }
        // The scheduler held the only job sender: the workers now finish
        // what they hold and return.
        let mut unfinished = 0;
        for worker in self.workers {
            while !worker.is_finished() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(10));
            }
            if worker.is_finished() {
                let _ = worker.join();
            } else {
                unfinished += 1;
            }
        }
        if unfinished > 0 {
            log::warn!(
                "{unfinished} delivery attempts still running at stop; they will be retried at the next start"
            );
        }
    }
}
