//! The webhook tester (SPEC section 3; the seed's "Testing" and
//! "Validation").
//!
//! `POST /api/v1/webhooks/test` sends the catalog example of an event,
//! signed, to a URL now — under the same target policy, agent and timeouts
//! as real deliveries — and reports what happened as checks a receiver's
//! developer can act on. Asked for, it also sends a wrongly signed request
//! and a correctly signed but ten-minute-old one, which a safe receiver
//! rejects with a 4xx.
//!
//! `POST /api/v1/webhooks/{id}/test` instead publishes the example to one
//! registered webhook through the real queue.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::body::Fields;
use super::events::{known_type, summary};
use super::webhooks::{check_secret, check_target_and_events, custom_headers};
use super::{ApiError, Ctx, Reply};
use crate::catalog::EventType;
use crate::clock;
use crate::delivery::sign;
use crate::delivery::worker::{self, Message, Outcome};
use crate::envelope;
use crate::ids::Kind;
use crate::store::events::Event;
use crate::store::writer::PublishOutcome;
use crate::validation::FieldError;

/// How old the `stale_timestamp` probe's timestamp is.
const STALE_BY_S: i64 = 600;

/// The optional probes, by the names `checks` takes.
const PROBES: [&str; 2] = ["bad_signature", "stale_timestamp"];

/// Tester requests at once: each holds an API thread while it waits on a
/// receiver, so a tarpit URL must not take them all.
pub const MAX_RUNNING: usize = 4;

/// A tester slot, given back on drop.
struct Slot<'a>(&'a AtomicUsize);

impl<'a> Slot<'a> {
    fn take(running: &'a AtomicUsize) -> Result<Slot<'a>, ApiError> {
        if running.fetch_add(1, Ordering::AcqRel) >= MAX_RUNNING {
            running.fetch_sub(1, Ordering::AcqRel);
            return Err(ApiError::new(
                503,
                "tester_busy",
                format!("{MAX_RUNNING} tests are running already; try again when one is done"),
            )
            .with_header("Retry-After", "5".into()));
        }
        Ok(Slot(running))
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One line of the report.
struct Check {
    name: &'static str,
    passed: bool,
    detail: String,
}

impl Check {
    fn to_json(&self) -> Value {
        json!({"name": self.name, "passed": self.passed, "detail": self.detail})
    }
}

/// A new event of `t`'s example, made now.
fn sample(t: &EventType) -> Event {
    envelope::new_event(
        &t.name,
        None,
        envelope::Data::Value(&t.example),
        clock::now_ms(),
    )
}

/// `POST /api/v1/webhooks/test {"event", "url", "secret"?, "headers"?, "checks"?}`:
/// `headers` are custom headers as a webhook would have them (a receiver
/// that wants its `X-Api-Key` can be tested before it is registered).
pub fn test_url(ctx: &Ctx<'_>) -> Result<Reply, ApiError> {
    let mut fields = Fields::parse(&ctx.body)?;
    let name = fields.required_string("event", 100);
    let url = fields.required_string("url", 4096);
    let secret = fields.string("secret", 256);
    let probes = fields
        .string_array("checks", PROBES.len(), 50)
        .unwrap_or_default();
    let mut errors = Vec::new();
    let headers = custom_headers(&mut fields, &mut errors)
        .unwrap_or_default()
        .to_request();
    let event_type = known_type(ctx, name.as_deref(), &mut errors);
    if let Some(Err(why)) = secret.as_deref().map(check_secret) {
        errors.push(FieldError::new("secret", "invalid", why));
    }
    for (i, probe) in probes.iter().enumerate() {
        if !PROBES.contains(&probe.as_str()) {
            errors.push(FieldError::new(
                format!("checks[{i}]"),
                "enum",
                "must be bad_signature or stale_timestamp",
            ));
        }
    }
    let url = check_target_and_events(ctx, url, None, &mut errors);
    fields.finish(errors)?;
    let (Some(event_type), Some(url)) = (event_type, url) else {
        return Err(ApiError::internal());
    };
    let _slot = Slot::take(&ctx.state.testers)?;
    let secret = secret.unwrap_or_else(crate::secrets::new_webhook_secret);
    let timeout = ctx.state.limits.delivery_timeout;
    let agent = &ctx.state.agent;
    let cap = Duration::ZERO;

    let Event { id, payload, .. } = sample(&event_type);
    let mut checks = vec![payload_check(&event_type, &payload)];
    let timestamp = clock::now_ms() / 1000;
    let message = Message {
        headers: &headers,
        msg_id: &id,
        timestamp,
        signature: sign::header(std::slice::from_ref(&secret), &id, timestamp, &payload),
        payload: &payload,
    };
    let began = Instant::now();
    let outcome = worker::post(agent, &url, &message, cap);
    let elapsed = began.elapsed();
    checks.push(status_check(&outcome));
    checks.push(timing_check(&outcome, elapsed, timeout));
    let answered = outcome.status.is_some();

    for probe in &probes {
        let Event { id, payload, .. } = sample(&event_type);
        let now = clock::now_ms() / 1000;
        let (name, message) = if probe == "bad_signature" {
            let wrong = crate::secrets::new_webhook_secret();
            let signature = sign::header(&[wrong], &id, now, &payload);
            (
                "bad_signature",
                Message {
                    headers: &headers,
                    msg_id: &id,
                    timestamp: now,
                    signature,
                    payload: &payload,
                },
            )
        } else {
            let then = now - STALE_BY_S;
            let signature = sign::header(std::slice::from_ref(&secret), &id, then, &payload);
            (
                "stale_timestamp",
                Message {
                    headers: &headers,
                    msg_id: &id,
                    timestamp: then,
                    signature,
                    payload: &payload,
                },
            )
        };
        checks.push(if answered {
            probe_check(name, &worker::post(agent, &url, &message, cap))
        } else {
            Check {
                name,
                passed: false,
                detail: "not sent: the receiver did not answer the correctly signed request".into(),
            }
        });
    }

    let ok = checks.iter().all(|c| c.passed);
    Ok(Reply::json(
        200,
        &json!({
            "ok": ok,
            "url": url,
            "event": event_type.name,
            "event_id": id,
            "status": outcome.status,
            "error_kind": outcome.error.map(|k| k.as_str()),
            "response_time_ms": elapsed.as_millis() as u64,
            "response_body": String::from_utf8_lossy(&outcome.body),
            "secret": &secret,
            "signing_secret": sign::signing_secret(&secret),
            "checks": checks.iter().map(Check::to_json).collect::<Vec<_>>(),
        }),
    ))
}

/// What was sent is a valid event of its type: the envelope's `data`
/// against the catalog schema, and the envelope's own shape.
fn payload_check(t: &EventType, payload: &[u8]) -> Check {
    let parsed: Value = serde_json::from_slice(payload).unwrap_or(Value::Null);
    let mut problems: Vec<String> = ["id", "event", "timestamp", "data"]
        .iter()
        .filter(|k| parsed.get(**k).is_none())
        .map(|k| format!("the envelope has no \"{k}\""))
        .collect();
    problems.extend(
        t.validate(&parsed["data"])
            .into_iter()
            .map(|e| format!("{}: {}", e.field, e.message)),
    );
    Check {
        name: "payload_format",
        passed: problems.is_empty(),
        detail: if problems.is_empty() {
            format!(
                "sent {{id, event, timestamp, data}} with data valid against the {} schema ({} bytes)",
                t.name,
                payload.len()
            )
        } else {
            problems.join("; ")
        },
    }
}

fn status_check(outcome: &Outcome) -> Check {
    let (passed, detail) = match (outcome.status, outcome.error) {
        (Some(s), _) if (200..300).contains(&s) => (true, format!("answered {s}")),
        (Some(s), _) if (300..400).contains(&s) => (
            false,
            format!("answered {s}: redirects are not followed; register the final URL"),
        ),
        (Some(s), _) => (
            false,
            format!("answered {s}: any status but 2xx counts as a failed delivery and is retried"),
        ),
        (None, kind) => (
            false,
            format!(
                "no answer ({}): {}",
                kind.map_or("connect", |k| k.as_str()),
                String::from_utf8_lossy(&outcome.body)
            ),
        ),
    };
    Check {
        name: "responded_2xx",
        passed,
        detail,
    }
}

fn timing_check(outcome: &Outcome, elapsed: Duration, timeout: Duration) -> Check {
    let ms = elapsed.as_millis();
    let limit = timeout.as_millis();
    let timed_out = outcome.error == Some(worker::ErrorKind::Timeout);
    let (passed, detail) = if timed_out || elapsed > timeout {
        (
            false,
            format!(
                "no complete answer within the {limit} ms delivery timeout; answer first, then do slow work"
            ),
        )
    } else if outcome.status.is_none() {
        (false, format!("no answer after {ms} ms"))
    } else if elapsed * 2 > timeout {
        (
            true,
            format!(
                "answered in {ms} ms, more than half the {limit} ms timeout; answer first, then do slow work"
            ),
        )
    } else {
        (true, format!("answered in {ms} ms (timeout {limit} ms)"))
    };
    Check {
        name: "response_time",
        passed,
        detail,
    }
}

fn probe_check(name: &'static str, outcome: &Outcome) -> Check {
    let why = if name == "bad_signature" {
        "a receiver that does not verify webhook-signature lets anyone who can reach it forge events"
    } else {
        "a receiver that accepts old timestamps lets anyone who captured a request replay it; reject webhook-timestamp more than 5 minutes from now"
    };
    let (passed, detail) = match outcome.status {
        Some(s) if (400..500).contains(&s) => (true, format!("rejected with {s}")),
        Some(s) if (200..300).contains(&s) => (false, format!("accepted with {s}: {why}")),
        Some(s) => (
            false,
            format!(
                "answered {s}, not a 4xx: a rejection should be a 4xx, so that hookbox does not retry it; {why}"
            ),
        ),
        None => (
            false,
            format!(
                "no answer ({}): a rejection should be a 4xx",
                outcome.error.map_or("connect", |k| k.as_str())
            ),
        ),
    };
    Check {
        name,
        passed,
        detail,
    }
}

/// `POST /api/v1/webhooks/{id}/test {"event"}`: the event type's example,
/// published through the real queue to this webhook only.
pub fn test_webhook(ctx: &Ctx<'_>, webhook_id: &str) -> Result<Reply, ApiError> {
    if !Kind::Webhook.matches(webhook_id) {
        return Err(ApiError::not_found(&format!("webhook {webhook_id}")));
    }
    let mut fields = Fields::parse(&ctx.body)?;
    let name = fields.required_string("event", 100);
    let mut errors = Vec::new();
    let event_type = known_type(ctx, name.as_deref(), &mut errors);
    fields.finish(errors)?;
    let Some(event_type) = event_type else {
        return Err(ApiError::internal());
    };
    let event = sample(&event_type);
    let mut stored = event.clone();
    match ctx
        .state
        .writer
        .publish_to(event, webhook_id.to_owned(), ctx.actor.clone())?
    {
        PublishOutcome::Created { deliveries } => {
            stored.deliveries = deliveries;
            Ok(summary(202, &stored))
        }
        PublishOutcome::NoSuchWebhook => Err(ApiError::not_found(&format!("webhook {webhook_id}"))),
        PublishOutcome::Replayed(_) | PublishOutcome::KeyConflict => Err(ApiError::internal()),
    }
}
