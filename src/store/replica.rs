//! `--ack-after-replica`: answers wait until Litestream confirms that the
//! transaction holding them is on the replica.
//!
//! The writer commits (fsynced, as always) and, instead of answering the
//! batch, hands its answers to the `replica` thread. That thread takes every
//! batch handed over so far and runs one `litestream sync -wait -json` for
//! them all: Litestream reads the WAL as it is now (every handed-over batch
//! is committed before it is handed over), ships it to the replica and
//! prints the database's and the replica's transaction ids. Only when the
//! command succeeds within `--replica-timeout` and `replica_txid >= txid`
//! are the batches answered as the writer meant; otherwise every op in them
//! is answered [`StoreError::ReplicaUnconfirmed`] (503): committed here, not
//! confirmed there. A retry with the same idempotency key finds the stored
//! event and is answered once a later sync confirms it.
//!
//! So there is at most one sync per group commit, and fewer under load:
//! while one sync runs, the writer keeps committing, and the next sync
//! covers every batch committed meanwhile. The writer never waits for the
//! replica, so local durability (fsync before any answer) and engine
//! bookkeeping are unchanged; `/healthz` and the watchdog's pings are
//! answered by the writer directly and never wait for the replica either.
//!
//! Why a process: Litestream 0.5 offers the guarantee only through its
//! control socket, and its command line is the documented client of that
//! socket. A command that does not finish by the timeout is killed.
//!
//! It must not know HTTP.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, unbounded};

use super::StoreError;

/// An answer to give once the replica's fate is known (the writer's
/// completion of one op).
pub type Answer = Box<dyn FnOnce(Result<(), &StoreError>) + Send>;

/// How to ask Litestream.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// The `litestream` executable.
    pub command: PathBuf,
    /// Litestream's control socket (`socket: {enabled: true, path: ...}`).
    pub socket: PathBuf,
    /// The database as Litestream's configuration names it (absolute).
    pub db: PathBuf,
    /// How long one confirmation may take before its ops are answered 503.
    pub timeout: Duration,
}

/// The writer's side: hands committed batches' answers over.
pub struct Confirmer {
    batches: Sender<Vec<Answer>>,
    thread: thread::JoinHandle<()>,
}

impl Confirmer {
    /// Starts the `replica` thread.
    pub fn spawn(config: ReplicaConfig) -> Result<Confirmer, StoreError> {
        let (batches, rx) = unbounded();
        let thread = thread::Builder::new()
            .name("replica".into())
            .spawn(move || run(&config, &rx))
            .map_err(|e| StoreError::Unavailable(format!("starting the replica thread: {e}")))?;
        Ok(Confirmer { batches, thread })
    }

    /// Answers `answers` once the replica confirms what is committed now.
    /// The channel is unbounded: its length is bounded by the writer's
    /// callers, each of which waits for its answer.
    pub fn confirm(&self, answers: Vec<Answer>) {
        if let Err(returned) = self.batches.send(answers) {
            let e = StoreError::ReplicaUnconfirmed("the replica thread has stopped".into());
            for answer in returned.0 {
                answer(Err(&e));
            }
        }
    }

    /// Waits until every batch handed over is answered.
    pub fn stop(self) {
        drop(self.batches);
        if self.thread.join().is_err() {
            log::error!("the replica thread panicked");
        }
    }
}

fn run(config: &ReplicaConfig, batches: &Receiver<Vec<Answer>>) {
    let mut failing = false;
    while let Ok(first) = batches.recv() {
        let mut answers = first;
        while let Ok(more) = batches.try_recv() {
            answers.extend(more);
        }
        let began = Instant::now();
        match sync(config) {
            Ok(txid) => {
                if failing {
                    log::info!("the replica confirms again (txid {txid})");
                    failing = false;
                }
                log::trace!(
                    "replica confirmed txid {txid} for {} answers in {} ms",
                    answers.len(),
                    began.elapsed().as_millis()
                );
                for answer in answers {
                    answer(Ok(()));
                }
            }
            Err(why) => {
                // Once per outage, then at debug: every batch would log it.
                if failing {
                    log::debug!("replica: {why}");
                } else {
                    log::warn!("the replica did not confirm; answering 503 until it does: {why}");
                    failing = true;
                }
                let e = StoreError::ReplicaUnconfirmed(why);
                for answer in answers {
                    answer(Err(&e));
                }
            }
        }
    }
}

/// Runs `litestream sync -wait -json` until the replica has caught up with
/// the database as Litestream saw it: its transaction id, or why the
/// replica did not confirm. Litestream 0.5.17 sometimes answers a
/// successful `sync -wait` with `replica_txid` one behind `txid` (seen in
/// tests/litestream.rs): that is not a confirmation, so it asks again,
/// until the timeout. A failing command is not retried: the replica is
/// down, and the answer is 503 at once rather than at the timeout.
fn sync(config: &ReplicaConfig) -> Result<u64, String> {
    let deadline = Instant::now() + config.timeout;
    loop {
        match sync_once(config, deadline)? {
            Ok(txid) => return Ok(txid),
            Err(behind) if Instant::now() >= deadline => return Err(behind),
            Err(_) => thread::sleep(Duration::from_millis(1)),
        }
    }
}

/// One `litestream sync -wait -json`: the outer error when it failed, the
/// inner one when the replica was behind.
fn sync_once(config: &ReplicaConfig, deadline: Instant) -> Result<Result<u64, String>, String> {
    let left = deadline.saturating_duration_since(Instant::now());
    let timeout_s = left.as_secs_f64().ceil().max(1.0) as u64;
    let mut child = Command::new(&config.command)
        .arg("sync")
        .arg("-wait")
        .arg("-json")
        .arg("-timeout")
        .arg(timeout_s.to_string())
        .arg("-socket")
        .arg(&config.socket)
        .arg(&config.db)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running {}: {e}", config.command.display()))?;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_micros(500)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "litestream sync did not finish within {} ms",
                    config.timeout.as_millis()
                ));
            }
            Err(e) => return Err(format!("waiting for litestream sync: {e}")),
        }
    };
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        let _ = stdout.read_to_string(&mut out);
    }
    if let Some(mut stderr) = child.stderr.take() {
        let _ = stderr.read_to_string(&mut err);
    }
    if !status.success() {
        let said = if err.trim().is_empty() { &out } else { &err };
        return Err(format!(
            "litestream sync failed ({status}): {}",
            said.trim()
        ));
    }
    confirmed_txid(&out)
}

/// The replica's transaction id from `sync -json`'s answer if it has caught
/// up with the database's (the inner error if not; the outer one if the
/// answer is not understood).
fn confirmed_txid(out: &str) -> Result<Result<u64, String>, String> {
    let answer: serde_json::Value = serde_json::from_str(out)
        .map_err(|e| format!("litestream sync printed no JSON ({e}): {}", out.trim()))?;
    let field = |name: &str| {
        answer[name]
            .as_u64()
            .ok_or_else(|| format!("litestream sync printed no {name}: {}", out.trim()))
    };
    let (txid, replica) = (field("txid")?, field("replica_txid")?);
    if replica < txid {
        return Ok(Err(format!(
            "the replica is at txid {replica}, the database at {txid}"
        )));
    }
    Ok(Ok(replica))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sync_confirms_only_when_the_replica_has_caught_up() {
        let json = |txid: u64, replica: u64| {
            format!(
                r#"{{"db_path": "/d/hookbox.db", "txid": {txid}, "replica_txid": {replica}, "duration_ms": 4}}"#
            )
        };
        assert_eq!(confirmed_txid(&json(7, 7)), Ok(Ok(7)));
        assert_eq!(confirmed_txid(&json(7, 8)), Ok(Ok(8)));
        assert!(
            confirmed_txid(&json(8, 7))
                .unwrap()
                .unwrap_err()
                .contains("txid 7")
        );
        assert!(confirmed_txid("sync failed").is_err());
        assert!(confirmed_txid(r#"{"txid": 3}"#).is_err());
    }
}
