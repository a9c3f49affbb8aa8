//! Delivery workers: one attempt at a time, its outcome as a value.
//!
//! A worker takes a [`Job`] from the scheduler: one webhook's deliveries,
//! sent one after another. For each it signs the event's exact payload for
//! this attempt (SPEC section 4), POSTs it with the shared ureq agent
//! (redirects off, status codes read as data, the target policy applied to
//! every resolved address), and turns what happened into an attempt record
//! and a [`NextStep`] ([`decide`], pure). The record goes to the writer; at
//! the end of the job the scheduler is told the webhook has a free slot
//! again ([`Done`]).
//!
//! A failed delivery is data, not an error: nothing here returns `Err`
//! for a receiver's behaviour.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender};
use ureq::http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use ureq::unversioned::transport::{Connector, RustlsConnector, TcpConnector};

use super::backoff;
use super::sign;
use super::target::{BlockedTarget, PolicyResolver};
use super::transport::CoalesceConnector;
use crate::clock;
use crate::config::Cidr;
use crate::store::events::Attempt;
use crate::store::writer::{AttemptRecord, NextStep, Wakeups, WriterHandle};

/// How much of a response body the attempt log keeps.
const KEPT_BODY: u64 = 1024;

/// Deliveries of one webhook for one worker to attempt one after another:
/// the webhook's concurrency limit counts a job as one in flight. A batch
/// rather than one delivery per job, so that a busy webhook's next attempt
/// follows the last without a round trip through the scheduler.
#[derive(Debug, Clone)]
pub struct Job {
    pub webhook_id: String,
    pub url: Arc<str>,
    /// The current secret, and the rotated-out one while it still signs.
    pub secrets: Arc<[String]>,
    /// The webhook's custom headers, shared like the URL.
    pub headers: Arc<[(HeaderName, HeaderValue)]>,
    /// Whether the webhook orders its deliveries by key: then recording an
    /// attempt may let the next delivery of its key fall due.
    pub ordered: bool,
    pub max_attempts: u32,
    /// Cleared when the webhook may no longer be sent to (disabled, deleted,
    /// answered 410): the job's remaining deliveries are handed back unsent.
    pub live: Arc<AtomicBool>,
    /// The `Wakeups::webhooks_version` the job was made at: once a change
    /// to the webhooks has committed, the rest is handed back, to be sent
    /// (or not) as the reloaded webhooks say.
    pub version: u64,
    pub deliveries: Vec<Delivery>,
}

/// One attempt to make.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: String,
    pub event_id: String,
    pub payload: Arc<Vec<u8>>,
    /// This attempt's number, from 1.
    pub attempt: i64,
}

/// What a worker reports to the scheduler when a job is done.
#[derive(Debug)]
pub struct Done {
    pub webhook_id: String,
    /// Each delivery attempted, and what became of it.
    pub attempted: Vec<(String, NextStep)>,
    /// Deliveries not attempted because the webhook stopped or the webhooks
    /// changed (still held, and pending in the database).
    pub unsent: Vec<Delivery>,
}

/// Retry settings from the command line.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub base: Duration,
    pub max: Duration,
}

/// Why an attempt failed without an HTTP answer (or with a non-2xx one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Timeout,
    Connect,
    Dns,
    Tls,
    HttpStatus,
    BlockedTarget,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::Connect => "connect",
            ErrorKind::Dns => "dns",
            ErrorKind::Tls => "tls",
            ErrorKind::HttpStatus => "http_status",
            ErrorKind::BlockedTarget => "blocked_target",
        }
    }
}

/// What one attempt saw.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub status: Option<u16>,
    pub error: Option<ErrorKind>,
    /// `Retry-After` of a 429 or 503, read and capped.
    pub retry_after: Option<Duration>,
    pub body: Vec<u8>,
}

/// The shared HTTP agent: no redirects, statuses as data, the timeouts,
/// the target policy at connect time, `User-Agent: hookbox/<version>`.
///
/// No proxy, whatever `HTTP_PROXY`/`HTTPS_PROXY`/`ALL_PROXY` say: through a
/// proxy ureq resolves only the proxy's name, so the target policy would
/// judge the proxy and let the proxy fetch any host, inside or out.
pub fn agent(allow: Vec<Cidr>, timeout: Duration) -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        .proxy(None)
        .max_redirects(0)
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .timeout_connect(Some(timeout.min(Duration::from_secs(10))))
        .user_agent(format!("hookbox/{}", env!("CARGO_PKG_VERSION")))
        .max_idle_connections(256)
        .max_idle_connections_per_host(16)
        .build();
    let resolver = PolicyResolver::new(allow);
    // ureq's default chain without the proxy links (no proxy is used), with
    // one write per request between the socket and TLS (`transport.rs`).
    let connector =
        ().chain(TcpConnector::default())
            .chain(CoalesceConnector)
            .chain(RustlsConnector::default());
    ureq::Agent::with_parts(config, connector, resolver)
}

/// Sends one signed attempt of `delivery` and reports what happened; `keys`
/// are this worker's keyed secrets.
pub fn send(
    agent: &ureq::Agent,
    keys: &mut sign::KeyCache,
    job: &Job,
    delivery: &Delivery,
    policy: &RetryPolicy,
) -> Outcome {
    let timestamp = clock::now_ms() / 1000;
    let signature = keys.header(
        &job.secrets,
        &delivery.event_id,
        timestamp,
        &delivery.payload,
    );
    let message = Message {
        headers: &job.headers,
        msg_id: &delivery.event_id,
        timestamp,
        signature,
        payload: &delivery.payload,
    };
    post(agent, &job.url, &message, policy.max)
}

/// One request as a receiver gets it: the Standard Webhooks headers and the
/// body. The tester sends deliberately wrong ones through the same path.
pub struct Message<'a> {
    /// The webhook's custom headers (`crate::headers`), none of which can
    /// be one of those set below.
    pub headers: &'a [(HeaderName, HeaderValue)],
    pub msg_id: &'a str,
    /// Unix seconds.
    pub timestamp: i64,
    /// The whole `webhook-signature` value.
    pub signature: String,
    pub payload: &'a [u8],
}

// The request's header names and fixed values, made once: the names are
// not parsed and checked again on every attempt.
const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");
const JSON: HeaderValue = HeaderValue::from_static("application/json");

/// POSTs `message` to `url` and reports what happened; `Retry-After` is
/// capped at `retry_cap`.
pub fn post(agent: &ureq::Agent, url: &str, message: &Message<'_>, retry_cap: Duration) -> Outcome {
    let mut request = agent.post(url);
    for (name, value) in message.headers {
        request = request.header(name, value);
    }
    let result = request
        .header(CONTENT_TYPE, JSON)
        .header(WEBHOOK_ID, message.msg_id)
        .header(WEBHOOK_TIMESTAMP, HeaderValue::from(message.timestamp))
        .header(WEBHOOK_SIGNATURE, &message.signature)
        .send(message.payload);
    match result {
        Ok(mut response) => {
            let status = response.status().as_u16();
            let retry_after = match status {
                429 | 503 => response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| backoff::retry_after(v, SystemTime::now(), retry_cap)),
                _ => None,
            };
            let mut body = Vec::new();
            // A body that breaks off mid-way still leaves its first bytes.
            let _ = response
                .body_mut()
                .as_reader()
                .take(KEPT_BODY)
                .read_to_end(&mut body);
            let ok = (200..300).contains(&status);
            Outcome {
                status: Some(status),
                error: (!ok).then_some(ErrorKind::HttpStatus),
                retry_after,
                body,
            }
        }
        Err(error) => Outcome {
            status: None,
            error: Some(classify(&error)),
            retry_after: None,
            body: error.to_string().into_bytes(),
        },
    }
}

fn classify(error: &ureq::Error) -> ErrorKind {
    match error {
        ureq::Error::Timeout(_) => ErrorKind::Timeout,
        ureq::Error::HostNotFound => ErrorKind::Dns,
        ureq::Error::Tls(_)
        | ureq::Error::Rustls(_)
        | ureq::Error::Pem(_)
        | ureq::Error::TlsRequired => ErrorKind::Tls,
        ureq::Error::Io(e) => {
            if e.get_ref().is_some_and(|inner| inner.is::<BlockedTarget>()) {
                ErrorKind::BlockedTarget
            } else if e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()) {
                // ureq's rustls transport reports handshake and certificate
                // failures as I/O errors wrapping the rustls error.
                ErrorKind::Tls
            } else if matches!(
                e.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            ) {
                ErrorKind::Timeout
            } else if e.to_string().contains("lookup") {
                // std's resolver reports a failed lookup as a plain I/O error.
                ErrorKind::Dns
            } else {
                ErrorKind::Connect
            }
        }
        _ => ErrorKind::Connect,
    }
}

/// What becomes of the delivery after `outcome` of its attempt number
/// `attempt` of at most `max_attempts`: pure, given a pure `jitter`, which
/// is asked for only when a retry is scheduled.
pub fn decide(
    attempt: i64,
    max_attempts: u32,
    outcome: &Outcome,
    policy: &RetryPolicy,
    now_ms: i64,
    jitter: impl FnOnce() -> f64,
) -> NextStep {
    match outcome.status {
        Some(status) if (200..300).contains(&status) => return NextStep::Succeeded,
        Some(410) => return NextStep::DisableWebhook,
        _ => {}
    }
    if attempt >= i64::from(max_attempts) {
        return NextStep::Failed;
    }
    let attempt = u32::try_from(attempt).unwrap_or(u32::MAX);
    let wait = outcome
        .retry_after
        .unwrap_or_else(|| backoff::delay(attempt, policy.base, policy.max, jitter()));
    let wait_ms = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
    NextStep::RetryAt(now_ms.saturating_add(wait_ms))
}

/// What a worker thread holds: the shared agent and where its results go.
pub struct Worker {
    pub agent: ureq::Agent,
    pub wakeups: Arc<Wakeups>,
    pub writer: WriterHandle,
    pub done: Sender<Done>,
    pub policy: RetryPolicy,
    pub stopping: Arc<AtomicBool>,
    pub monitor: Arc<crate::monitor::Monitor>,
}

impl Worker {
    /// The worker loop: until the job channel closes.
    pub fn run(self, jobs: Receiver<Job>) {
        let mut keys = sign::KeyCache::default();
        'jobs: for mut job in jobs {
            let mut report = Done {
                webhook_id: job.webhook_id.clone(),
                attempted: Vec::with_capacity(job.deliveries.len()),
                unsent: Vec::new(),
            };
            let mut deliveries = std::mem::take(&mut job.deliveries).into_iter();
            while let Some(delivery) = deliveries.next() {
                if self.stopping.load(Ordering::Acquire) {
                    // Left as it is: pending in the database, so due again at
                    // the next start. The channel is drained, so that the
                    // scheduler never waits on it.
                    continue 'jobs;
                }
                if !job.live.load(Ordering::Acquire)
                    || self.wakeups.webhooks_version() != job.version
                {
                    report.unsent.push(delivery);
                    report.unsent.extend(deliveries);
                    break;
                }
                let next = self.attempt(&mut keys, &job, &delivery);
                if next == NextStep::DisableWebhook {
                    // The rest of this job (and of the webhook's other jobs)
                    // stays unsent: the receiver said the endpoint is gone.
                    job.live.store(false, Ordering::Release);
                }
                report.attempted.push((delivery.id, next));
            }
            let _ = self.done.send(report);
        }
    }

    /// Sends one delivery, records the attempt through the writer, and says
    /// what becomes of the delivery.
    fn attempt(&self, keys: &mut sign::KeyCache, job: &Job, delivery: &Delivery) -> NextStep {
        let started_at = clock::now_ms();
        let clock = Instant::now();
        let outcome = send(&self.agent, keys, job, delivery, &self.policy);
        let elapsed = clock.elapsed();
        let duration_ms = elapsed.as_millis() as i64;
        let next = decide(
            delivery.attempt,
            job.max_attempts,
            &outcome,
            &self.policy,
            clock::now_ms(),
            // Drawn only for a retry: a system call a success does not need.
            backoff::random_jitter,
        );
        self.monitor.attempt(&crate::monitor::Finished {
            webhook_id: &job.webhook_id,
            started_at,
            duration: elapsed,
            error_kind: outcome.error.map(ErrorKind::as_str),
            status: outcome.status,
            body: &outcome.body,
            attempt: delivery.attempt,
            outcome: match next {
                NextStep::Succeeded => "succeeded",
                NextStep::Failed => "failed",
                NextStep::RetryAt(_) | NextStep::DisableWebhook => "retried",
            },
        });
        let record = AttemptRecord {
            delivery_id: delivery.id.clone(),
            webhook_id: job.webhook_id.clone(),
            ordered: job.ordered,
            attempt: Attempt {
                number: delivery.attempt,
                started_at,
                duration_ms,
                status_code: outcome.status,
                error_kind: outcome.error.map(|k| k.as_str().to_owned()),
                response_body: outcome.body,
            },
            next,
        };
        if self.writer.record_attempt(record).is_err() {
            log::warn!(
                "the writer has stopped; delivery {} stays pending and is sent again at the next start",
                delivery.id
            );
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(status: Option<u16>, retry_after: Option<u64>) -> Outcome {
        Outcome {
            status,
            error: None,
            retry_after: retry_after.map(Duration::from_secs),
            body: Vec::new(),
        }
    }

    const POLICY: RetryPolicy = RetryPolicy {
        base: Duration::from_secs(30),
        max: Duration::from_secs(6 * 3600),
    };

    #[test]
    fn classifies_transport_errors() {
        use std::io;
        let io_err = |kind, inner: Box<dyn std::error::Error + Send + Sync>| {
            ureq::Error::Io(io::Error::new(kind, inner))
        };
        let table = [
            (
                ureq::Error::Timeout(ureq::Timeout::Connect),
                ErrorKind::Timeout,
            ),
            (ureq::Error::HostNotFound, ErrorKind::Dns),
            (
                ureq::Error::Io(io::Error::other("failed to lookup address information")),
                ErrorKind::Dns,
            ),
            (
                io_err(
                    io::ErrorKind::PermissionDenied,
                    Box::new(BlockedTarget("127.0.0.1".into())),
                ),
                ErrorKind::BlockedTarget,
            ),
            (
                io_err(
                    io::ErrorKind::InvalidData,
                    Box::new(rustls::Error::DecryptError),
                ),
                ErrorKind::Tls,
            ),
            (ureq::Error::Tls("handshake"), ErrorKind::Tls),
            (
                ureq::Error::Io(io::ErrorKind::ConnectionRefused.into()),
                ErrorKind::Connect,
            ),
            (
                ureq::Error::Io(io::ErrorKind::TimedOut.into()),
                ErrorKind::Timeout,
            ),
            (ureq::Error::ConnectionFailed, ErrorKind::Connect),
        ];
        for (error, expected) in table {
            assert_eq!(classify(&error), expected, "{error}");
        }
    }

    #[test]
    fn decides_the_next_step() {
        let table = [
            (1, Some(200), None, NextStep::Succeeded),
            (3, Some(204), None, NextStep::Succeeded),
            (1, Some(410), None, NextStep::DisableWebhook),
            (1, Some(500), None, NextStep::RetryAt(30_000)),
            (2, None, None, NextStep::RetryAt(60_000)),
            (1, Some(301), None, NextStep::RetryAt(30_000)),
            (1, Some(429), Some(5), NextStep::RetryAt(5_000)),
            (3, Some(500), None, NextStep::Failed),
            (3, Some(429), Some(5), NextStep::Failed),
        ];
        for (attempt, status, retry_after, expected) in table {
            let next = decide(
                attempt,
                3,
                &outcome(status, retry_after),
                &POLICY,
                0,
                || 0.0,
            );
            assert_eq!(next, expected, "attempt {attempt} status {status:?}");
        }
    }
}
