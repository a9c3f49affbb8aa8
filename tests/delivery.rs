//! The delivery engine from outside (SPEC sections 3 to 6): the real
//! `hookbox` binary delivering to a scripted real receiver on 127.0.0.1.
//!
//! [`Receiver`] is a tiny_http server whose answer to the n-th request is
//! chosen by a closure (a status with headers and a body, a delay or a
//! [`Gate`] to hold it, a connection closed without an answer, or a partial
//! answer) and which records every request it gets. Signatures are checked
//! by [`verify`], written as a receiver would write it with the hmac, sha2
//! and base64 crates, never by calling hookbox's own signing code.
//!
//! Nothing sleeps to synchronise: waits poll with deadlines. Where a test
//! shows that something did NOT happen, it watches for a bounded time and
//! says why that time is enough.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod util;

use std::io::Write;
use std::net::{IpAddr, TcpListener, ToSocketAddrs};
use std::process::Command;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use util::receiver::*;
use util::{Server, eventually};

// ---------------------------------------------------------------------------
// hookbox helpers

/// A delivering server whose webhooks may target loopback, with `flags`.
fn serve(flags: &[&str]) -> Server {
    let mut all = vec!["--allow-targets", "127.0.0.0/8"];
    all.extend_from_slice(flags);
    Server::delivering(&all)
}

fn create_webhook(server: &Server, body: Value) -> Value {
    let r = server.post("/api/v1/webhooks", &body);
    assert_eq!(
        r.status,
        201,
        "{body}: {}\n--- server log ---\n{}",
        r.text(),
        server.log()
    );
    r.json()
}

/// Creates a webhook at `url` taking every event; returns its id.
fn webhook(server: &Server, url: &str) -> String {
    id(&create_webhook(
        server,
        json!({"url": url, "events": ["*"]}),
    ))
}

fn id(value: &Value) -> String {
    value["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {value}"))
        .to_owned()
}

/// Publishes the seed example of `event_type`; returns the 202 summary.
fn publish(server: &Server, event_type: &str) -> Value {
    let r = server.post(
        "/api/v1/events",
        &json!({"event": event_type, "data": util::seed(event_type)}),
    );
    assert_eq!(
        r.status,
        202,
        "{}\n--- server log ---\n{}",
        r.text(),
        server.log()
    );
    r.json()
}

/// The id of the one delivery of `event_id` to `webhook_id`.
fn delivery_of(server: &Server, event_id: &str, webhook_id: &str) -> String {
    let r = server.get(&format!(
        "/api/v1/deliveries?event_id={event_id}&webhook_id={webhook_id}"
    ));
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    let data = body["data"].as_array().expect("data");
    assert_eq!(data.len(), 1, "{body}");
    id(&data[0])
}

/// `PATCH`es the webhook's `enabled`, expecting 200; returns the webhook.
fn set_enabled(server: &Server, hook: &str, enabled: bool) -> Value {
    let r = server.request(
        "PATCH",
        &format!("/api/v1/webhooks/{hook}"),
        Some(&json!({"enabled": enabled})),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// Waits for the webhook to read disabled.
fn wait_disabled(server: &Server, hook: &str) {
    eventually(
        server,
        SHORT,
        || format!("webhook {hook} to be disabled"),
        || {
            (server.get(&format!("/api/v1/webhooks/{hook}")).json()["enabled"] == false)
                .then_some(())
        },
    );
}

/// Waits for the delivery to be no longer `delivering`; returns it.
fn settled(server: &Server, dlv: &str) -> Value {
    eventually(
        server,
        SHORT,
        || format!("delivery {dlv} to settle"),
        || {
            let d = delivery(server, dlv);
            (d["status"] != "delivering").then_some(d)
        },
    )
}

/// `GET /api/v1/deliveries/{id}`.
fn delivery(server: &Server, id: &str) -> Value {
    let r = server.get(&format!("/api/v1/deliveries/{id}"));
    assert_eq!(
        r.status,
        200,
        "{}\n--- server log ---\n{}",
        r.text(),
        server.log()
    );
    r.json()
}

/// Waits until delivery `id` has `status`; returns it with its attempt log.
fn wait_status(server: &Server, id: &str, status: &str, timeout: Duration) -> Value {
    eventually(
        server,
        timeout,
        || {
            format!(
                "delivery {id} to be {status}; it is {:#}",
                delivery(server, id)
            )
        },
        || {
            let d = delivery(server, id);
            (d["status"] == status).then_some(d)
        },
    )
}

/// The attempt log's entries of delivery `d`.
fn attempts(d: &Value) -> &Vec<Value> {
    d["attempt_log"]
        .as_array()
        .unwrap_or_else(|| panic!("no attempt_log in {d}"))
}

/// Each attempt's status code (None for no answer).
fn status_codes(d: &Value) -> Vec<Option<u64>> {
    attempts(d)
        .iter()
        .map(|a| a["status_code"].as_u64())
        .collect()
}

/// Each attempt's error kind.
fn error_kinds(d: &Value) -> Vec<Option<String>> {
    attempts(d)
        .iter()
        .map(|a| a["error_kind"].as_str().map(str::to_owned))
        .collect()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// `t` as RFC 3339 UTC.
fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format time")
}

/// An RFC 3339 time as the API writes it.
fn parse_rfc3339(text: &str) -> SystemTime {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{text:?} is not RFC 3339: {e}"))
        .into()
}

/// `POST /api/v1/webhooks/{hook}/rotate-secret` with `body` (none at all
/// when None); the 200 answer.
fn rotate_secret(server: &Server, hook: &str, body: Option<&Value>) -> Value {
    let r = server.request(
        "POST",
        &format!("/api/v1/webhooks/{hook}/rotate-secret"),
        body,
    );
    assert_eq!(
        r.status,
        200,
        "{}\n--- server log ---\n{}",
        r.text(),
        server.log()
    );
    r.json()
}

/// `GET /api/v1/webhooks/{hook}/secret` with the admin token.
fn current_secret(server: &Server, hook: &str) -> Value {
    let r = server.get(&format!("/api/v1/webhooks/{hook}/secret"));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// A `whsec_` secret over 32 known bytes.
fn whsec(fill: u8) -> String {
    format!("whsec_{}", STANDARD.encode([fill; 32]))
}

/// Asserts that `request` carries exactly one signature entry per secret in
/// `secrets`, each verifying under its own secret alone, and that none
/// verifies under any of `retired`.
fn assert_signed_by(request: &Seen, secrets: &[&str], retired: &[&str]) {
    let entries = signature_entries(request);
    assert_eq!(
        entries.len(),
        secrets.len(),
        "one entry per active secret, {secrets:?}; the delivery of {} carries {entries:?}",
        request.webhook_id()
    );
    let mut used = Vec::new();
    for secret in secrets {
        let matching = matching_entries(secret, request).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            matching.len(),
            1,
            "exactly one entry verifies under {secret:?}: {entries:?}"
        );
        used.extend(matching);
    }
    used.sort_unstable();
    used.dedup();
    assert_eq!(
        used.len(),
        secrets.len(),
        "each secret matches a different entry: {entries:?}"
    );
    for secret in retired {
        assert!(
            verify(secret, request).is_err(),
            "the retired secret {secret:?} still verifies: {entries:?}"
        );
    }
}

const SHORT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// The tests

#[test]
fn each_webhook_gets_one_signed_verifiable_post_of_the_event_and_the_attempt_is_logged() {
    let rx_a = Receiver::start(|_, _| Answer::ok().body("thanks from A"));
    let rx_b = Receiver::start(|_, _| Answer::ok().body("thanks from B"));
    let server = serve(&[]);
    let a = create_webhook(
        &server,
        json!({"url": rx_a.url("/hooks/a"), "events": ["item.sold"]}),
    );
    let secret_a = a["secret"].as_str().expect("generated secret").to_owned();
    assert!(secret_a.starts_with("whsec_"), "{secret_a}");
    let b = create_webhook(
        &server,
        json!({"url": rx_b.url("/hooks/b"), "events": ["item.*"], "secret": "your-secret-key"}),
    );
    assert_eq!(b["secret"], "your-secret-key");

    let published = publish(&server, "item.sold");
    assert_eq!(published["deliveries"], 2, "{published}");
    let event_id = id(&published);
    let event = server.get(&format!("/api/v1/events/{event_id}")).json();
    let envelope = json!({
        "id": event["id"],
        "event": event["event"],
        "timestamp": event["timestamp"],
        "data": event["data"],
    });
    assert_eq!(envelope["id"], event_id.as_str());
    assert_eq!(envelope["event"], "item.sold");
    assert_eq!(envelope["data"], util::seed("item.sold"));

    for (rx, secret, path) in [
        (&rx_a, secret_a.as_str(), "/hooks/a"),
        (&rx_b, "your-secret-key", "/hooks/b"),
    ] {
        let seen = rx.wait_for(&server, 1, SHORT).remove(0);
        assert_eq!(seen.method, "POST");
        assert_eq!(seen.path, path);
        assert_eq!(
            seen.header("content-type"),
            Some("application/json"),
            "{seen:?}"
        );
        assert!(
            seen.header("user-agent")
                .is_some_and(|ua| ua.starts_with("hookbox/")),
            "{seen:?}"
        );
        assert_eq!(seen.webhook_id(), event_id, "{seen:?}");
        let skew = seen.timestamp().abs_diff(unix_now());
        assert!(skew <= 60, "webhook-timestamp is {skew} s off: {seen:?}");
        verify(secret, &seen).unwrap_or_else(|e| panic!("{e}: {seen:?}"));
        // The verifier can say no: a wrong secret or a changed body fail.
        assert!(verify("wrong-secret-key", &seen).is_err());
        let mut tampered = seen.clone();
        tampered.body.push(b' ');
        assert!(verify(secret, &tampered).is_err());
        let body = seen.json();
        assert_eq!(body, envelope);
        let keys: Vec<&String> = body.as_object().expect("object").keys().collect();
        assert_eq!(keys.len(), 4, "{body}");
    }

    for (webhook, answered) in [(&a, "thanks from A"), (&b, "thanks from B")] {
        let dlv = delivery_of(&server, &event_id, &id(webhook));
        let d = wait_status(&server, &dlv, "succeeded", SHORT);
        assert_eq!(d["event_id"], event_id.as_str());
        assert_eq!(d["attempts"], 1, "{d}");
        let log = attempts(&d);
        assert_eq!(log.len(), 1, "{d}");
        assert_eq!(log[0]["number"], 1, "{d}");
        assert_eq!(log[0]["status_code"], 200, "{d}");
        assert!(log[0]["error_kind"].is_null(), "{d}");
        assert!(
            log[0]["duration_ms"].as_i64().is_some_and(|ms| ms >= 0),
            "{d}"
        );
        assert!(log[0]["started_at"].is_string(), "{d}");
        assert_eq!(log[0]["response_body"], answered, "{d}");
    }
    let listed = server
        .get(&format!("/api/v1/deliveries?event_id={event_id}"))
        .json();
    let statuses: Vec<&Value> = listed["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|d| &d["status"])
        .collect();
    assert_eq!(statuses, ["succeeded", "succeeded"], "{listed}");
    // Both deliveries are recorded as succeeded, so nothing should come
    // again; a duplicate would be sent at once, well within this window.
    rx_a.stays_at(&server, 1, Duration::from_millis(300));
    rx_b.stays_at(&server, 1, Duration::ZERO);
}

#[test]
fn failed_attempts_are_retried_with_backoff_the_same_id_and_body_and_fresh_signatures() {
    let rx = Receiver::start(|n, _| match n {
        0 | 1 => Answer::status(500).body("down for maintenance"),
        _ => Answer::ok(),
    });
    // A base of 500 ms puts attempts 1 and 3 at least 1.2 s apart, so their
    // Unix-second timestamps must differ.
    let server = serve(&[
        "--retry-base-delay",
        "500ms",
        "--retry-max-delay",
        "5s",
        "--max-attempts",
        "3",
    ]);
    let hook = create_webhook(
        &server,
        json!({"url": rx.url("/retry"), "events": ["email.updated"]}),
    );
    let secret = hook["secret"].as_str().unwrap().to_owned();
    let event_id = id(&publish(&server, "email.updated"));
    let seen = rx.wait_for(&server, 3, SHORT);

    for s in &seen {
        assert_eq!(s.webhook_id(), event_id, "{s:?}");
        assert_eq!(s.body, seen[0].body, "every attempt sends the same bytes");
        verify(&secret, s).unwrap_or_else(|e| panic!("{e}: {s:?}"));
        let wall = s.wall.duration_since(UNIX_EPOCH).unwrap().as_secs();
        assert!(
            s.timestamp().abs_diff(wall) <= 2,
            "each attempt is signed with its own time: {s:?}"
        );
    }
    let gap1 = seen[1].at - seen[0].at;
    let gap2 = seen[2].at - seen[1].at;
    // base * 2^(n-1) with at most 20% jitter: >= 400 ms, then >= 800 ms.
    assert!(gap1 >= Duration::from_millis(400), "gap1 {gap1:?}");
    assert!(gap2 >= Duration::from_millis(800), "gap2 {gap2:?}");
    assert!(gap1 < Duration::from_secs(5) && gap2 < Duration::from_secs(5));
    let ts: Vec<u64> = seen.iter().map(Seen::timestamp).collect();
    assert!(
        ts[0] <= ts[1] && ts[1] <= ts[2] && ts[0] < ts[2],
        "timestamps {ts:?}"
    );
    assert_ne!(
        seen[0].header("webhook-signature"),
        seen[2].header("webhook-signature"),
        "a later attempt is signed again"
    );

    let dlv = delivery_of(&server, &event_id, &id(&hook));
    let d = wait_status(&server, &dlv, "succeeded", SHORT);
    assert_eq!(status_codes(&d), [Some(500), Some(500), Some(200)], "{d}");
    assert_eq!(
        error_kinds(&d),
        [Some("http_status".into()), Some("http_status".into()), None],
        "{d}"
    );
    let numbers: Vec<&Value> = attempts(&d).iter().map(|a| &a["number"]).collect();
    assert_eq!(numbers, [1, 2, 3], "{d}");
    assert_eq!(attempts(&d)[0]["response_body"], "down for maintenance");
    assert_eq!(d["attempts"], 3, "{d}");
}

#[test]
fn a_delivery_fails_after_max_attempts_and_a_manual_retry_sends_exactly_one_more() {
    let status = Arc::new(AtomicU16::new(500));
    let rx = Receiver::start({
        let status = status.clone();
        move |_, _| Answer::status(status.load(Ordering::SeqCst))
    });
    let server = serve(&["--max-attempts", "2", "--retry-base-delay", "100ms"]);
    let hook = webhook(&server, &rx.url("/fails"));
    let event_id = id(&publish(&server, "profile.created"));
    let dlv = delivery_of(&server, &event_id, &hook);
    let d = wait_status(&server, &dlv, "failed", SHORT);
    assert_eq!(status_codes(&d), [Some(500), Some(500)], "{d}");
    assert_eq!(d["attempts"], 2, "{d}");
    // A third attempt would follow the second after ~200 ms of backoff.
    rx.stays_at(&server, 2, Duration::from_secs(1));
    assert_eq!(delivery(&server, &dlv)["status"], "failed");

    status.store(200, Ordering::SeqCst);
    let r = server.post(&format!("/api/v1/deliveries/{dlv}/retry"), &json!({}));
    assert_eq!(r.status, 202, "{}", r.text());
    let d = wait_status(&server, &dlv, "succeeded", SHORT);
    assert_eq!(rx.count(), 3);
    assert_eq!(status_codes(&d), [Some(500), Some(500), Some(200)], "{d}");
    let numbers: Vec<&Value> = attempts(&d).iter().map(|a| &a["number"]).collect();
    assert_eq!(numbers, [1, 2, 3], "{d}");
    // Succeeded: nothing more may come; a duplicate would come at once.
    rx.stays_at(&server, 3, Duration::from_millis(300));
    assert!(rx.requests().iter().all(|s| s.webhook_id() == event_id));

    let r = server.post(
        "/api/v1/deliveries/dlv_00000000000000000000000000/retry",
        &json!({}),
    );
    r.error(404, "not_found");
    let r = server.post("/api/v1/deliveries/nonsense/retry", &json!({}));
    r.error(404, "not_found");
}

#[test]
fn a_webhooks_own_max_attempts_overrides_the_server_default() {
    let long = "x".repeat(3000);
    let rx_one = Receiver::start(move |_, _| Answer::status(503).body(&long));
    let rx_default = Receiver::start(|_, _| Answer::status(503));
    // Server default: 3 attempts.
    let server = serve(&["--retry-base-delay", "100ms"]);
    let one = id(&create_webhook(
        &server,
        json!({"url": rx_one.url("/one"), "events": ["item.created"], "max_attempts": 1}),
    ));
    let default = webhook(&server, &rx_default.url("/default"));
    let event_id = id(&publish(&server, "item.created"));

    let d = wait_status(
        &server,
        &delivery_of(&server, &event_id, &one),
        "failed",
        SHORT,
    );
    assert_eq!(status_codes(&d), [Some(503)], "{d}");
    // The attempt log keeps the first 1 KiB of the response body.
    assert_eq!(
        attempts(&d)[0]["response_body"].as_str().map(str::len),
        Some(1024),
        "{d}"
    );
    let d = wait_status(
        &server,
        &delivery_of(&server, &event_id, &default),
        "failed",
        SHORT,
    );
    assert_eq!(status_codes(&d), [Some(503); 3], "{d}");
    // The default webhook's three attempts took longer than a second retry
    // to the overridden one would have (~100 ms after its first).
    rx_one.stays_at(&server, 1, Duration::from_millis(200));
    assert_eq!(rx_default.count(), 3);
}

#[test]
fn retry_after_on_429_and_503_is_honoured_instead_of_the_backoff() {
    let rx = Receiver::start(|n, _| match n {
        0 => Answer::status(429).header("Retry-After", "1"),
        // The HTTP-date form, two seconds ahead: at least one second after
        // the date's whole-second rounding.
        1 => Answer::status(503).header(
            "Retry-After",
            &httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(2)),
        ),
        _ => Answer::ok(),
    });
    let server = serve(&["--retry-base-delay", "30s", "--max-attempts", "3"]);
    let hook = webhook(&server, &rx.url("/limited"));
    let event_id = id(&publish(&server, "event.registered"));
    let seen = rx.wait_for(&server, 3, SHORT);
    for (n, gap) in [(1, seen[1].at - seen[0].at), (2, seen[2].at - seen[1].at)] {
        assert!(
            gap >= Duration::from_millis(900) && gap < Duration::from_secs(10),
            "attempt {} came {gap:?} after a Retry-After of about 1-2 s",
            n + 1
        );
    }
    let d = wait_status(
        &server,
        &delivery_of(&server, &event_id, &hook),
        "succeeded",
        SHORT,
    );
    assert_eq!(status_codes(&d), [Some(429), Some(503), Some(200)], "{d}");
}

#[test]
fn retry_after_beyond_the_maximum_delay_is_capped() {
    let rx = Receiver::start(|n, _| match n {
        0 => Answer::status(429).header("Retry-After", "3600"),
        _ => Answer::ok(),
    });
    let server = serve(&["--retry-base-delay", "30s", "--retry-max-delay", "1s"]);
    webhook(&server, &rx.url("/capped"));
    publish(&server, "item.created");
    let seen = rx.wait_for(&server, 2, SHORT);
    let gap = seen[1].at - seen[0].at;
    assert!(
        gap >= Duration::from_millis(900) && gap < Duration::from_secs(5),
        "Retry-After: 3600 with a 1 s maximum delay: second attempt after {gap:?}"
    );
}

#[test]
fn gone_410_disables_the_webhook_which_holds_its_deliveries_until_enabled_again() {
    let status = Arc::new(AtomicU16::new(410));
    let rx = Receiver::start({
        let status = status.clone();
        move |_, _| Answer::status(status.load(Ordering::SeqCst))
    });
    let server = serve(&["--retry-base-delay", "100ms"]);
    let hook = webhook(&server, &rx.url("/gone"));
    let first = id(&publish(&server, "item.created"));
    let d1 = delivery_of(&server, &first, &hook);
    let disabled = eventually(
        &server,
        SHORT,
        || "the webhook to be disabled".into(),
        || {
            let w = server.get(&format!("/api/v1/webhooks/{hook}")).json();
            (w["enabled"] == false).then_some(w)
        },
    );
    let reason = disabled["disabled_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("410"), "{disabled}");
    let d = eventually(
        &server,
        SHORT,
        || format!("the 410 to be recorded: {}", delivery(&server, &d1)),
        || {
            let d = delivery(&server, &d1);
            (attempts(&d).len() == 1).then_some(d)
        },
    );
    assert_eq!(status_codes(&d), [Some(410)], "{d}");
    assert_eq!(
        d["status"], "pending",
        "held, neither failed nor dropped: {d}"
    );

    let second = id(&publish(&server, "item.created"));
    let d2 = delivery_of(&server, &second, &hook);
    // Held while disabled: anything sent would arrive within milliseconds
    // (the base delay is 100 ms).
    rx.stays_at(&server, 1, Duration::from_millis(500));
    for dlv in [&d1, &d2] {
        assert_eq!(delivery(&server, dlv)["status"], "pending");
    }
    assert_eq!(delivery(&server, &d2)["attempts"], 0);

    status.store(200, Ordering::SeqCst);
    let w = set_enabled(&server, &hook, true);
    assert_eq!(w["enabled"], true);
    let d = wait_status(&server, &d1, "succeeded", SHORT);
    assert_eq!(status_codes(&d), [Some(410), Some(200)], "{d}");
    let d = wait_status(&server, &d2, "succeeded", SHORT);
    assert_eq!(status_codes(&d), [Some(200)], "{d}");
    let mut ids: Vec<String> = rx
        .requests()
        .iter()
        .map(|s| s.webhook_id().to_owned())
        .collect();
    // The two held deliveries drain side by side, in either order.
    ids[1..].sort();
    let mut after = [first.clone(), second];
    after.sort();
    assert_eq!(ids[0], first);
    assert_eq!(ids[1..], after);
}

#[test]
fn disabling_a_webhook_holds_deliveries_already_lined_up_for_it() {
    let gate = Gate::default();
    let rx = Receiver::start({
        let gate = gate.clone();
        move |n, _| match n {
            0 => Answer::held(&gate),
            _ => Answer::ok(),
        }
    });
    // One attempt at a time: while the first is held, the rest wait their
    // turn (claimed ahead by the scheduler, or still pending).
    let server = serve(&["--webhook-concurrency", "1"]);
    let hook = webhook(&server, &rx.url("/queue"));
    let events: Vec<String> = (0..4)
        .map(|_| id(&publish(&server, "item.created")))
        .collect();
    let dlvs: Vec<String> = events
        .iter()
        .map(|e| delivery_of(&server, e, &hook))
        .collect();
    rx.wait_for(&server, 1, SHORT);
    let w = set_enabled(&server, &hook, false);
    assert_eq!(w["enabled"], false);
    gate.open();
    let held = rx.requests()[0].webhook_id().to_owned();
    let first = dlvs[events.iter().position(|e| *e == held).unwrap()].clone();
    wait_status(&server, &first, "succeeded", SHORT);
    // Disabled: the other three are held. Sent, they would arrive within
    // milliseconds of the first one's success.
    rx.stays_at(&server, 1, Duration::from_millis(500));
    for dlv in dlvs.iter().filter(|d| **d != first) {
        let d = delivery(&server, dlv);
        assert_eq!(d["status"], "pending", "held while disabled: {d}");
        assert_eq!(d["attempts"], 0, "{d}");
    }

    set_enabled(&server, &hook, true);
    for dlv in &dlvs {
        wait_status(&server, dlv, "succeeded", SHORT);
    }
    let mut got: Vec<String> = rx
        .requests()
        .iter()
        .map(|s| s.webhook_id().to_owned())
        .collect();
    got.sort();
    let mut want = events.clone();
    want.sort();
    assert_eq!(got, want, "each event exactly once");
}

#[test]
fn a_webhooks_rate_limit_paces_what_its_receiver_gets_and_holds_back_no_other_webhook() {
    const RATE: u32 = 5;
    const EVENTS: usize = 20;
    // The scheduler's bucket starts full at `rate` tokens: a burst of 5,
    // then one delivery every 200 ms.
    let burst = RATE as usize;
    let period = Duration::from_secs(1) / RATE;
    let paced = Receiver::start(|_, _| Answer::ok());
    let free = Receiver::start(|_, _| Answer::ok());
    let server = serve(&[]);
    let limited = id(&create_webhook(
        &server,
        json!({"url": paced.url("/paced"), "events": ["*"], "rate_limit_per_s": RATE}),
    ));
    webhook(&server, &free.url("/free"));
    // All at once: concurrent publishes, committed together.
    let events: Vec<String> = thread::scope(|s| {
        let publishing: Vec<_> = (0..EVENTS)
            .map(|_| s.spawn(|| id(&publish(&server, "item.sold"))))
            .collect();
        publishing.into_iter().map(|p| p.join().unwrap()).collect()
    });
    let published = Instant::now();

    let free_done = free
        .wait_for(&server, EVENTS, SHORT)
        .iter()
        .map(|s| s.at)
        .max()
        .unwrap();
    let mut times: Vec<Instant> = paced
        .wait_for(&server, EVENTS, SHORT)
        .iter()
        .map(|s| s.at)
        .collect();
    times.sort();
    let offsets: Vec<Duration> = times.iter().map(|t| *t - times[0]).collect();
    let offsets_ms: Vec<u128> = offsets.iter().map(Duration::as_millis).collect();

    // 5 at once and 15 more at 5/s: the 20th comes about 3 s after the
    // first; well under 5 s unless the pacing is slower than asked.
    let span = offsets[EVENTS - 1];
    assert!(
        span >= Duration::from_millis(2400) && span < Duration::from_secs(5),
        "{EVENTS} deliveries at {RATE}/s spanned {span:?}; arrivals (ms after the first): {offsets_ms:?}"
    );
    // None comes sooner than a full bucket and its refill allow: the k-th
    // (from 0) no sooner than (k + 1 - burst) periods after the first,
    // give or take 100 ms of scheduling noise at the receiver.
    for (k, offset) in offsets.iter().enumerate().skip(burst) {
        let earliest = period * u32::try_from(k + 1 - burst).unwrap();
        assert!(
            *offset + Duration::from_millis(100) >= earliest,
            "delivery {k} came {offset:?} after the first, before the {earliest:?} the bucket allows; arrivals (ms): {offsets_ms:?}"
        );
    }
    let busiest = busiest_window(&times, Duration::from_secs(1));
    assert!(
        busiest <= burst + RATE as usize,
        "{busiest} deliveries within one second at {RATE}/s with a burst of {burst}; arrivals (ms): {offsets_ms:?}"
    );

    // Isolation: the webhook without a limit got all of its deliveries at
    // once, not at the paced one's rate.
    let free_after = free_done.saturating_duration_since(published);
    assert!(
        free_after < Duration::from_secs(1),
        "the unlimited webhook's last delivery came {free_after:?} after publishing\n--- server log ---\n{}",
        server.log()
    );
    assert!(
        free_done + Duration::from_secs(1) < times[EVENTS - 1],
        "the unlimited webhook finished within a second of the paced one's last delivery (paced arrivals, ms: {offsets_ms:?})"
    );

    let mut want = events.clone();
    want.sort();
    for rx in [&paced, &free] {
        let mut got: Vec<String> = rx
            .requests()
            .iter()
            .map(|s| s.webhook_id().to_owned())
            .collect();
        got.sort();
        assert_eq!(got, want, "each event exactly once at {}", rx.addr);
    }
    for e in &events {
        wait_status(
            &server,
            &delivery_of(&server, e, &limited),
            "succeeded",
            SHORT,
        );
    }
}

#[test]
fn during_a_rotations_grace_both_secrets_sign_and_afterwards_only_the_new_one() {
    let rx = Receiver::start(|_, _| Answer::ok());
    // Long enough for one delivery to arrive inside it, short enough to
    // wait out.
    let grace = Duration::from_secs(3);
    let server = serve(&["--secret-grace", "3s"]);
    let old = "old-raw-secret-key";
    let new = whsec(7);
    let hook = id(&create_webhook(
        &server,
        json!({"url": rx.url("/rotating"), "events": ["*"], "secret": old}),
    ));

    let before = SystemTime::now();
    let rotated = rotate_secret(&server, &hook, Some(&json!({"secret": new})));
    let after = SystemTime::now();
    assert_eq!(rotated["id"], hook.as_str(), "{rotated}");
    assert_eq!(rotated["secret"], new.as_str(), "{rotated}");
    let expires_at = rotated["previous_secret_expires_at"].clone();
    let expires = parse_rfc3339(
        expires_at
            .as_str()
            .unwrap_or_else(|| panic!("no expiry during the grace: {rotated}")),
    );
    // The grace from the rotation, rounded up to the whole second it is
    // written to.
    assert!(
        expires >= before + grace && expires < after + grace + Duration::from_secs(1),
        "previous_secret_expires_at {expires_at} is not {grace:?} after the rotation"
    );
    let shown = server.get(&format!("/api/v1/webhooks/{hook}")).json();
    assert_eq!(shown["previous_secret_expires_at"], expires_at, "{shown}");
    assert!(shown.get("secret").is_none(), "{shown}");
    assert_eq!(
        current_secret(&server, &hook),
        json!({"secret": new, "signing_secret": new, "previous_secret_expires_at": expires_at})
    );

    let first = id(&publish(&server, "item.sold"));
    let seen = rx.wait_for(&server, 1, SHORT).remove(0);
    assert_eq!(seen.webhook_id(), first);
    let arrived = seen.wall.duration_since(before).unwrap_or_default();
    assert!(
        arrived < grace,
        "precondition: the delivery came {arrived:?} after the rotation, past the {grace:?} grace"
    );
    assert_signed_by(&seen, &[&new, old], &[]);
    assert!(verify("wrong-secret-key", &seen).is_err());

    // Once the API says the grace is over, the old secret signs nothing.
    eventually(
        &server,
        SHORT,
        || "the grace to end".into(),
        || {
            let w = server.get(&format!("/api/v1/webhooks/{hook}")).json();
            w["previous_secret_expires_at"].is_null().then_some(())
        },
    );
    assert_eq!(
        current_secret(&server, &hook),
        json!({"secret": new, "signing_secret": new, "previous_secret_expires_at": null})
    );
    let second = id(&publish(&server, "item.sold"));
    let seen = rx.wait_for(&server, 2, SHORT);
    let seen = seen
        .iter()
        .find(|s| s.webhook_id() == second)
        .unwrap_or_else(|| panic!("{second} never arrived: {seen:?}"));
    assert_signed_by(seen, &[&new], &[old]);
}

#[test]
fn rotating_without_a_body_generates_a_whsec_secret_that_signs_and_only_admins_read_back() {
    let rx = Receiver::start(|_, _| Answer::ok());
    let server = serve(&[]);
    let created = create_webhook(
        &server,
        json!({"url": rx.url("/generated"), "events": ["*"]}),
    );
    let hook = id(&created);
    let old = created["secret"].as_str().unwrap().to_owned();

    let before = SystemTime::now();
    let rotated = rotate_secret(&server, &hook, None);
    let new = rotated["secret"]
        .as_str()
        .unwrap_or_else(|| panic!("no secret in {rotated}"))
        .to_owned();
    let key = new
        .strip_prefix("whsec_")
        .and_then(|b64| STANDARD.decode(b64).ok())
        .unwrap_or_else(|| panic!("not whsec_ and base64: {new:?}"));
    assert_eq!(key.len(), 32, "{new:?}");
    assert_ne!(new, old);
    // The default grace: 24 hours.
    let expires = parse_rfc3339(rotated["previous_secret_expires_at"].as_str().unwrap());
    let day = Duration::from_secs(24 * 3600);
    assert!(
        expires + Duration::from_secs(60) > before + day
            && expires < before + day + Duration::from_secs(60),
        "{rotated}"
    );
    assert_eq!(
        current_secret(&server, &hook),
        json!({"secret": new, "signing_secret": new, "previous_secret_expires_at": rotated["previous_secret_expires_at"]})
    );

    // Only create and rotate answer the secret.
    let one = server.get(&format!("/api/v1/webhooks/{hook}"));
    assert_eq!(one.status, 200, "{}", one.text());
    assert!(one.json().get("secret").is_none(), "{}", one.text());
    let patched = server.request(
        "PATCH",
        &format!("/api/v1/webhooks/{hook}"),
        Some(&json!({"description": "rotated"})),
    );
    assert_eq!(patched.status, 200, "{}", patched.text());
    let listed = server.get("/api/v1/webhooks");
    assert_eq!(listed.status, 200, "{}", listed.text());
    for r in [&one, &patched, &listed] {
        assert!(
            !r.text().contains(&new) && !r.text().contains(&old),
            "a secret in {}",
            r.text()
        );
    }

    let r = server.post("/api/v1/tokens", &json!({"name": "r", "scope": "read"}));
    assert_eq!(r.status, 201, "{}", r.text());
    let read = r.json()["token"].as_str().unwrap().to_owned();
    let as_read = |path: &str| server.send("GET", path, &[], None, Some(&read));
    as_read(&format!("/api/v1/webhooks/{hook}/secret")).error(403, "forbidden");
    // The token itself works: the 403 is its scope.
    let r = as_read(&format!("/api/v1/webhooks/{hook}"));
    assert_eq!(r.status, 200, "{}", r.text());

    let event_id = id(&publish(&server, "item.created"));
    let seen = rx.wait_for(&server, 1, SHORT).remove(0);
    assert_eq!(seen.webhook_id(), event_id);
    verify(&new, &seen).unwrap_or_else(|e| panic!("{e}: {seen:?}"));
    // Within the day's grace the generated secret's predecessor signs too.
    assert_signed_by(&seen, &[&new, &old], &[]);

    let audit = server.get("/api/v1/audit-log?limit=500");
    assert_eq!(audit.status, 200, "{}", audit.text());
    assert!(
        audit.json()["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "webhook.secret_rotated" && e["target"] == hook.as_str()),
        "{}",
        audit.text()
    );
    for (place, text) in [("audit log", audit.text()), ("server log", server.log())] {
        assert!(
            !text.contains(&new) && !text.contains(&old),
            "a secret in the {place}: {text}"
        );
    }
}

#[test]
fn a_second_rotation_within_the_grace_retires_the_oldest_secret_so_at_most_two_sign() {
    let rx = Receiver::start(|_, _| Answer::ok());
    // The default grace of a day: both rotations fall well within it.
    let server = serve(&[]);
    let first = "first-raw-secret";
    let (second, third) = (whsec(2), whsec(3));
    let hook = id(&create_webhook(
        &server,
        json!({"url": rx.url("/twice"), "events": ["*"], "secret": first}),
    ));
    rotate_secret(&server, &hook, Some(&json!({"secret": second})));
    let rotated = rotate_secret(&server, &hook, Some(&json!({"secret": third})));
    assert_eq!(rotated["secret"], third.as_str(), "{rotated}");
    assert!(
        rotated["previous_secret_expires_at"].is_string(),
        "{rotated}"
    );
    assert_eq!(current_secret(&server, &hook)["secret"], third.as_str());

    let event_id = id(&publish(&server, "email.updated"));
    let seen = rx.wait_for(&server, 1, SHORT).remove(0);
    assert_eq!(seen.webhook_id(), event_id);
    assert_signed_by(&seen, &[&third, &second], &[first]);
}

#[test]
fn rotating_an_unknown_webhook_is_404_and_an_invalid_secret_is_422_and_changes_nothing() {
    let server = Server::start();
    let kept = "kept-raw-secret";
    let hook = id(&create_webhook(
        &server,
        json!({"url": "https://93.184.216.34/hook", "events": ["*"], "secret": kept}),
    ));
    let unknown = "wh_00000000000000000000000000";
    for missing in [unknown, "nonsense"] {
        let r = server.post(
            &format!("/api/v1/webhooks/{missing}/rotate-secret"),
            &json!({"secret": whsec(1)}),
        );
        r.error(404, "not_found");
        let r = server.request(
            "POST",
            &format!("/api/v1/webhooks/{missing}/rotate-secret"),
            None,
        );
        r.error(404, "not_found");
        server
            .get(&format!("/api/v1/webhooks/{missing}/secret"))
            .error(404, "not_found");
    }

    let too_few_bytes = format!("whsec_{}", STANDARD.encode([9u8; 8]));
    for bad in [
        json!("short"),
        json!("whsec_not*base64*at*all"),
        json!(too_few_bytes),
        json!("has a space in it"),
        json!(""),
        json!(42),
        // The current secret again: a rotation needs a new one.
        json!(kept),
    ] {
        let r = server.post(
            &format!("/api/v1/webhooks/{hook}/rotate-secret"),
            &json!({"secret": bad}),
        );
        r.error(422, "validation_failed");
        assert_eq!(r.error_fields(), ["secret"], "{bad}: {}", r.text());
        if let Some(bad) = bad.as_str().filter(|b| b.len() >= 8) {
            assert!(
                !r.text().contains(bad),
                "the secret is echoed: {}",
                r.text()
            );
        }
    }
    assert_eq!(
        current_secret(&server, &hook),
        json!({
            "secret": kept,
            "signing_secret": format!("whsec_{}", STANDARD.encode(kept)),
            "previous_secret_expires_at": null
        }),
        "a refused rotation changes nothing"
    );

    let r = server.request("DELETE", &format!("/api/v1/webhooks/{hook}"), None);
    assert_eq!(r.status, 204, "{}", r.text());
    let r = server.post(
        &format!("/api/v1/webhooks/{hook}/rotate-secret"),
        &json!({"secret": whsec(1)}),
    );
    r.error(404, "not_found");
}

/// A receiver answering whatever `status` holds (500 at first), and a server
/// that disables a webhook after 500 ms of nothing but failures, retrying
/// every 100-200 ms.
fn failing_for_the_disable_window() -> (Arc<AtomicU16>, Receiver, Server) {
    let status = Arc::new(AtomicU16::new(500));
    let rx = Receiver::start({
        let status = status.clone();
        move |_, _| Answer::status(status.load(Ordering::SeqCst))
    });
    let server = serve(&[
        "--disable-after",
        "500ms",
        "--retry-base-delay",
        "100ms",
        "--retry-max-delay",
        "200ms",
        "--max-attempts",
        "50",
    ]);
    (status, rx, server)
}

#[test]
fn a_webhook_failing_for_the_whole_disable_window_is_disabled_and_holds_its_delivery() {
    let (status, rx, server) = failing_for_the_disable_window();
    let hook = webhook(&server, &rx.url("/failing"));
    let event_id = id(&publish(&server, "item.created"));
    let dlv = delivery_of(&server, &event_id, &hook);
    let w = eventually(
        &server,
        SHORT,
        || "the failing webhook to be disabled".into(),
        || {
            let w = server.get(&format!("/api/v1/webhooks/{hook}")).json();
            (w["enabled"] == false).then_some(w)
        },
    );
    assert!(
        w["disabled_reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{w}"
    );
    let d = eventually(
        &server,
        SHORT,
        || {
            format!(
                "the last attempt to be recorded: {}",
                delivery(&server, &dlv)
            )
        },
        || {
            let d = delivery(&server, &dlv);
            (d["status"] != "delivering").then_some(d)
        },
    );
    assert_eq!(d["status"], "pending", "held, not failed: {d}");
    let attempts_when_disabled = attempts(&d).len();
    assert!(attempts_when_disabled >= 2, "{d}");
    // Held: a retry would come within 200 ms.
    rx.stays_at(&server, attempts_when_disabled, Duration::from_millis(500));

    status.store(200, Ordering::SeqCst);
    set_enabled(&server, &hook, true);
    let d = wait_status(&server, &dlv, "succeeded", SHORT);
    assert_eq!(attempts(&d).len(), attempts_when_disabled + 1, "{d}");
}

#[test]
fn a_re_enabled_webhook_gets_a_new_disable_window() {
    let (_status, rx, server) = failing_for_the_disable_window();
    let hook = webhook(&server, &rx.url("/failing"));
    let dlv = delivery_of(&server, &id(&publish(&server, "item.created")), &hook);
    let enabled = || server.get(&format!("/api/v1/webhooks/{hook}")).json()["enabled"] == true;
    eventually(
        &server,
        SHORT,
        || "the failing webhook to be disabled".into(),
        || (!enabled()).then_some(()),
    );
    let settled = eventually(
        &server,
        SHORT,
        || "the last attempt to be recorded".into(),
        || {
            let d = delivery(&server, &dlv);
            (d["status"] == "pending").then(|| attempts(&d).len())
        },
    );
    // Wait out a whole window while disabled: no attempt fails meanwhile.
    rx.stays_at(&server, settled, Duration::from_millis(600));

    // Re-enabled while the receiver still fails once: a new window starts
    // now, so one failure cannot disable it again.
    set_enabled(&server, &hook, true);
    let first_after = eventually(
        &server,
        SHORT,
        || "an attempt after re-enabling".into(),
        || {
            let d = delivery(&server, &dlv);
            (attempts(&d).len() > settled).then_some(d)
        },
    );
    assert_eq!(status_codes(&first_after).last(), Some(&Some(500)));
    assert!(
        enabled(),
        "one failure right after re-enabling disabled the webhook again: {}",
        server.get(&format!("/api/v1/webhooks/{hook}")).json()
    );
}

#[test]
fn after_a_410_no_other_delivery_lined_up_for_the_webhook_is_sent() {
    let gate = Gate::default();
    let rx = Receiver::start({
        let gate = gate.clone();
        move |_, _| Answer {
            gate: Some(gate.clone()),
            ..Answer::status(410)
        }
    });
    let server = serve(&["--webhook-concurrency", "1"]);
    let hook = webhook(&server, &rx.url("/gone"));
    let dlvs: Vec<String> = (0..4)
        .map(|_| delivery_of(&server, &id(&publish(&server, "item.created")), &hook))
        .collect();
    // The others are lined up behind the first attempt when it gets its 410.
    rx.wait_for(&server, 1, SHORT);
    gate.open();
    wait_disabled(&server, &hook);
    // Anything sent after the 410 would arrive within milliseconds.
    rx.stays_at(&server, 1, Duration::from_millis(300));
    for dlv in &dlvs {
        let d = settled(&server, dlv);
        assert_eq!(d["status"], "pending", "{d}");
    }
}

/// One attempt at a time, the first held by `first` and then answered 200;
/// four more events published while it is held wait behind it (pending:
/// the webhook has no room), to be claimed and go out together, one
/// worker's job, once it is answered.
fn four_lined_up_behind_a_held_attempt(
    later: impl Fn(usize) -> Answer + Send + Sync + 'static,
) -> (Gate, Receiver, Server, String, Vec<String>) {
    let first = Gate::default();
    let rx = Receiver::start({
        let first = first.clone();
        move |n, _| match n {
            0 => Answer::held(&first),
            n => later(n),
        }
    });
    let server = serve(&["--webhook-concurrency", "1"]);
    let hook = webhook(&server, &rx.url("/lined-up"));
    publish(&server, "item.created");
    rx.wait_for(&server, 1, SHORT);
    let rest: Vec<String> = (0..4)
        .map(|_| delivery_of(&server, &id(&publish(&server, "item.created")), &hook))
        .collect();
    (first, rx, server, hook, rest)
}

#[test]
fn a_410_in_the_middle_of_a_run_of_deliveries_stops_the_rest_of_it() {
    let (first, rx, server, hook, rest) =
        four_lined_up_behind_a_held_attempt(|_| Answer::status(410));
    first.open();
    wait_disabled(&server, &hook);
    // The 200, then the 410; anything after it would arrive within
    // milliseconds.
    rx.stays_at(&server, 2, Duration::from_millis(300));
    let attempted: Vec<String> = rest
        .iter()
        .filter(|dlv| {
            let d = settled(&server, dlv);
            assert_eq!(d["status"], "pending", "{d}");
            d["attempts"] != 0
        })
        .cloned()
        .collect();
    assert_eq!(
        attempted.len(),
        1,
        "only the one that got the 410: {attempted:?}"
    );
}

#[test]
fn a_run_of_deliveries_stops_when_its_webhook_is_disabled() {
    let second = Gate::default();
    let (first, rx, server, hook, rest) = four_lined_up_behind_a_held_attempt({
        let second = second.clone();
        move |n| match n {
            1 => Answer::held(&second),
            _ => Answer::ok(),
        }
    });
    first.open();
    rx.wait_for(&server, 2, SHORT);
    set_enabled(&server, &hook, false);
    second.open();
    // The attempt under way when the webhook was disabled finishes; nothing
    // after it is sent (it would arrive within milliseconds).
    let sent = rest
        .iter()
        .find(|dlv| rx.requests()[1].webhook_id() == delivery(&server, dlv)["event_id"])
        .cloned()
        .unwrap();
    wait_status(&server, &sent, "succeeded", SHORT);
    rx.stays_at(&server, 2, Duration::from_millis(500));
    for dlv in rest.iter().filter(|d| **d != sent) {
        let d = eventually(
            &server,
            SHORT,
            || format!("delivery {dlv} to be held"),
            || {
                let d = delivery(&server, dlv);
                (d["status"] == "pending").then_some(d)
            },
        );
        assert_eq!(d["attempts"], 0, "{d}");
    }

    set_enabled(&server, &hook, true);
    for dlv in &rest {
        wait_status(&server, dlv, "succeeded", SHORT);
    }
    assert_eq!(rx.requests().len(), 5);
}

#[test]
fn a_redirect_is_a_failed_attempt_and_its_location_is_never_requested() {
    let location = Arc::new(OnceLock::<String>::new());
    let rx = Receiver::start({
        let location = location.clone();
        move |_, seen| match seen.path.as_str() {
            "/moved" => Answer::status(301).header("Location", location.get().unwrap()),
            _ => Answer::ok(),
        }
    });
    location.set(rx.url("/new-home")).unwrap();
    let server = serve(&["--max-attempts", "1"]);
    let hook = webhook(&server, &rx.url("/moved"));
    let event_id = id(&publish(&server, "item.sold"));
    let d = wait_status(
        &server,
        &delivery_of(&server, &event_id, &hook),
        "failed",
        SHORT,
    );
    assert_eq!(status_codes(&d), [Some(301)], "{d}");
    assert_eq!(error_kinds(&d), [Some("http_status".into())], "{d}");
    let paths: Vec<String> = rx.requests().iter().map(|s| s.path.clone()).collect();
    assert_eq!(paths, ["/moved"]);
}

#[test]
fn an_https_target_that_answers_in_plain_http_is_a_tls_failure() {
    // A plain HTTP peer that speaks first: whatever the client sends, it
    // gets a plain-text answer where a TLS server hello should be.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicU16::new(0));
    {
        let accepted = accepted.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                accepted.fetch_add(1, Ordering::SeqCst);
                let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
            }
        });
    }
    let server = serve(&["--max-attempts", "1", "--delivery-timeout", "3s"]);
    let hook = webhook(&server, &format!("https://127.0.0.1:{port}/tls"));
    let event_id = id(&publish(&server, "item.created"));
    let d = wait_status(
        &server,
        &delivery_of(&server, &event_id, &hook),
        "failed",
        SHORT,
    );
    assert_eq!(status_codes(&d), [None], "{d}");
    assert_eq!(error_kinds(&d), [Some("tls".into())], "{d}");
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[test]
fn a_hanging_receiver_times_out_while_another_webhook_gets_its_events_promptly() {
    let slow = Receiver::start(|_, _| Answer::hang());
    let fast = Receiver::start(|_, _| Answer::ok());
    let server = serve(&[
        "--delivery-timeout",
        "1s",
        "--max-attempts",
        "1",
        "--workers",
        "4",
        "--webhook-concurrency",
        "2",
    ]);
    let slow_hook = webhook(&server, &slow.url("/slow"));
    let fast_hook = webhook(&server, &fast.url("/fast"));
    let mut published = vec![(id(&publish(&server, "item.created")), Instant::now())];
    // From here on the slow receiver holds its webhook's attempts.
    slow.wait_for(&server, 1, SHORT);
    for _ in 0..5 {
        let at = Instant::now();
        published.push((id(&publish(&server, "item.created")), at));
    }
    let seen = fast.wait_for(&server, published.len(), SHORT);
    for (event_id, at) in &published[1..] {
        let arrived = seen
            .iter()
            .find(|s| s.webhook_id() == event_id)
            .unwrap_or_else(|| panic!("{event_id} never reached the fast receiver"));
        let latency = arrived.at - *at;
        assert!(
            latency < Duration::from_secs(1),
            "{event_id} reached the fast receiver {latency:?} after publish"
        );
    }
    assert!(
        slow.count() < published.len(),
        "the slow receiver should still be holding attempts"
    );
    for (event_id, _) in &published {
        let d = wait_status(
            &server,
            &delivery_of(&server, event_id, &slow_hook),
            "failed",
            Duration::from_secs(20),
        );
        assert_eq!(status_codes(&d), [None], "{d}");
        assert_eq!(error_kinds(&d), [Some("timeout".into())], "{d}");
        let ms = attempts(&d)[0]["duration_ms"].as_i64().unwrap();
        assert!((900..5000).contains(&ms), "a 1 s timeout took {ms} ms: {d}");
        let d = wait_status(
            &server,
            &delivery_of(&server, event_id, &fast_hook),
            "succeeded",
            SHORT,
        );
        assert_eq!(status_codes(&d), [Some(200)], "{d}");
    }
}

#[test]
fn a_connection_closed_or_broken_off_mid_response_is_a_failed_attempt_and_retried() {
    let rx = Receiver::start(|n, _| match n {
        0 => Answer::close(),
        1 => Answer::partial("HTTP/1.1 200 OK\r\nContent-Type: text/pl"),
        _ => Answer::ok(),
    });
    let server = serve(&[
        "--retry-base-delay",
        "100ms",
        "--delivery-timeout",
        "1s",
        "--max-attempts",
        "3",
    ]);
    let hook = webhook(&server, &rx.url("/flaky"));
    let event_id = id(&publish(&server, "email.updated"));
    let d = wait_status(
        &server,
        &delivery_of(&server, &event_id, &hook),
        "succeeded",
        SHORT,
    );
    assert_eq!(status_codes(&d), [None, None, Some(200)], "{d}");
    let kinds = error_kinds(&d);
    // Closed before any answer: the connection failed. Half a status
    // line's headers and then silence: the attempt timed out.
    assert_eq!(kinds[0].as_deref(), Some("connect"), "{d}");
    assert_eq!(kinds[1].as_deref(), Some("timeout"), "{d}");
    assert_eq!(kinds[2], None, "{d}");
    let seen = rx.requests();
    assert_eq!(seen.len(), 3);
    assert!(
        seen.iter()
            .all(|s| s.webhook_id() == event_id && s.body == seen[0].body)
    );
}

/// The machine's host name, from `hostname` or /etc/hostname.
fn host_name() -> String {
    Command::new("hostname")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .filter(|h| !h.is_empty())
        .expect("this machine has no host name")
}

/// The machine's host name, checked to resolve (through /etc/hosts, no DNS
/// traffic) to loopback addresses only, with a 127.x among them.
fn loopback_host_name() -> String {
    let host = host_name();
    let addrs: Vec<IpAddr> = (host.as_str(), 80)
        .to_socket_addrs()
        .unwrap_or_else(|e| panic!("precondition: host name {host:?} does not resolve: {e}"))
        .map(|a| a.ip())
        .collect();
    assert!(
        !addrs.is_empty() && addrs.iter().all(|ip| ip.is_loopback()),
        "precondition: host name {host:?} must resolve (through /etc/hosts) only to loopback addresses, got {addrs:?}"
    );
    assert!(
        addrs.iter().any(|ip| ip.is_ipv4()),
        "precondition: host name {host:?} must resolve to a 127.x address, got {addrs:?}"
    );
    host
}

#[test]
fn a_name_resolving_to_loopback_is_refused_at_registration_unless_allowed() {
    let host = loopback_host_name();
    let url = format!("http://{host}:9/x");
    let strict = Server::delivering(&[]);
    let r = strict.post("/api/v1/webhooks", &json!({"url": url, "events": ["*"]}));
    let text = r.error(422, "validation_failed").to_string();
    assert!(
        text.contains(&format!("{host} resolves to a loopback address")) && !text.contains("127."),
        "the error says what kind of address the name resolves to, not which: {text}"
    );
    // Changing a registered webhook's URL to the name is refused the same way.
    let hook = strict.webhook_id(&["*"]);
    let r = strict.request(
        "PATCH",
        &format!("/api/v1/webhooks/{hook}"),
        Some(&json!({"url": url})),
    );
    r.error(422, "validation_failed");
    let r = strict.get(&format!("/api/v1/webhooks/{hook}"));
    assert_ne!(r.json()["url"], url.as_str());

    let open = serve(&[]);
    let r = open.post("/api/v1/webhooks", &json!({"url": url, "events": ["*"]}));
    assert_eq!(r.status, 201, "{}", r.text());
}

#[test]
fn a_name_resolving_to_loopback_is_blocked_at_connect_time_unless_allowed() {
    let host = loopback_host_name();
    let rx = Receiver::start(|_, _| Answer::ok());
    let url = format!("http://{host}:{}/x", rx.port());

    // Registered while the policy allowed it (as a name that resolved to a
    // public address then would be); the check that binds is the one made
    // when connecting, after the name is resolved again.
    let mut server = serve(&["--max-attempts", "1", "--pause-delivery"]);
    let hook = webhook(&server, &url);
    let event_id = id(&publish(&server, "item.created"));
    assert_eq!(server.terminate().code(), Some(0), "{}", server.log());
    server.restart_with(&["--max-attempts", "1"]);
    let d = wait_status(
        &server,
        &delivery_of(&server, &event_id, &hook),
        "failed",
        SHORT,
    );
    assert_eq!(status_codes(&d), [None], "{d}");
    assert_eq!(error_kinds(&d), [Some("blocked_target".into())], "{d}");
    // The only attempt is over: whatever it sent would have arrived.
    assert_eq!(rx.count(), 0, "{:?}", rx.requests());

    let open = serve(&["--max-attempts", "1"]);
    let hook = webhook(&open, &url);
    let event_id = id(&publish(&open, "item.created"));
    let d = wait_status(
        &open,
        &delivery_of(&open, &event_id, &hook),
        "succeeded",
        SHORT,
    );
    assert_eq!(status_codes(&d), [Some(200)], "{d}");
    let seen = rx.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/x");
    assert_eq!(seen[0].webhook_id(), event_id);
}

#[test]
fn an_ip_literal_loopback_target_is_blocked_at_connect_time_without_a_lookup() {
    let rx = Receiver::start(|_, _| Answer::ok());
    // http://127.0.0.1:PORT/literal: judged as it is, no name to resolve.
    let url = rx.url("/literal");

    // Registered while the policy allowed it; restarted without
    // --allow-targets, every attempt is refused before connecting.
    let mut server = serve(&["--max-attempts", "2", "--pause-delivery"]);
    let hook = webhook(&server, &url);
    let first = id(&publish(&server, "item.created"));
    let second = id(&publish(&server, "item.created"));
    assert_eq!(server.terminate().code(), Some(0), "{}", server.log());
    server.restart_with(&["--max-attempts", "1"]);
    for event_id in [&first, &second] {
        let d = wait_status(
            &server,
            &delivery_of(&server, event_id, &hook),
            "failed",
            SHORT,
        );
        assert_eq!(status_codes(&d), [None], "{d}");
        assert_eq!(error_kinds(&d), [Some("blocked_target".into())], "{d}");
    }
    assert_eq!(rx.count(), 0, "{:?}", rx.requests());

    // Allowed, the same literal is delivered to, attempt after attempt.
    let open = serve(&[]);
    let hook = webhook(&open, &url);
    for _ in 0..3 {
        let event_id = id(&publish(&open, "item.created"));
        let d = wait_status(
            &open,
            &delivery_of(&open, &event_id, &hook),
            "succeeded",
            SHORT,
        );
        assert_eq!(status_codes(&d), [Some(200)], "{d}");
    }
    assert_eq!(rx.count(), 3, "{:?}", rx.requests());
}

#[test]
fn replay_requeues_a_webhooks_failed_deliveries_in_range() {
    let status = Arc::new(AtomicU16::new(500));
    let rx = Receiver::start({
        let status = status.clone();
        move |_, _| Answer::status(status.load(Ordering::SeqCst))
    });
    let server = serve(&["--max-attempts", "1"]);
    let since = rfc3339(SystemTime::now() - Duration::from_secs(60));
    let hook = webhook(&server, &rx.url("/replay"));
    let event_id = id(&publish(&server, "item.sold"));
    let dlv = delivery_of(&server, &event_id, &hook);
    wait_status(&server, &dlv, "failed", SHORT);
    assert_eq!(rx.count(), 1);

    let path = format!("/api/v1/webhooks/{hook}/replay");
    let later = rfc3339(SystemTime::now() + Duration::from_secs(3600));
    let r = server.post(&path, &json!({"since": later}));
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.json(), json!({"requeued": 0}));
    assert_eq!(delivery(&server, &dlv)["status"], "failed");

    status.store(200, Ordering::SeqCst);
    let r = server.post(&path, &json!({"since": since}));
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.json(), json!({"requeued": 1}));
    let d = wait_status(&server, &dlv, "succeeded", SHORT);
    assert_eq!(status_codes(&d), [Some(500), Some(200)], "{d}");
    assert_eq!(rx.count(), 2);

    let r = server.post(&path, &json!({"since": "yesterday"}));
    r.error(422, "validation_failed");
    assert_eq!(r.error_fields(), ["since"]);
    let r = server.post(
        "/api/v1/webhooks/wh_00000000000000000000000000/replay",
        &json!({"since": since}),
    );
    r.error(404, "not_found");
}

#[test]
fn deleting_a_webhook_cancels_its_pending_deliveries() {
    let port = closed_port();
    let server = serve(&["--retry-base-delay", "10s"]);
    let hook = webhook(&server, &format!("http://127.0.0.1:{port}/down"));
    let event_id = id(&publish(&server, "profile.created"));
    let dlv = delivery_of(&server, &event_id, &hook);
    let d = eventually(
        &server,
        SHORT,
        || format!("a failed first attempt: {}", delivery(&server, &dlv)),
        || {
            let d = delivery(&server, &dlv);
            (d["status"] == "pending" && attempts(&d).len() == 1).then_some(d)
        },
    );
    assert_eq!(error_kinds(&d), [Some("connect".into())], "{d}");
    assert!(d["next_attempt_at"].is_string(), "{d}");

    let r = server.request("DELETE", &format!("/api/v1/webhooks/{hook}"), None);
    assert_eq!(r.status, 204, "{}", r.text());
    let d = delivery(&server, &dlv);
    assert_eq!(d["status"], "cancelled", "{d}");
    assert!(d["next_attempt_at"].is_null(), "{d}");
    let r = server.post(&format!("/api/v1/deliveries/{dlv}/retry"), &json!({}));
    assert_eq!(
        r.status,
        409,
        "a cancelled delivery is not retried: {}",
        r.text()
    );
}

#[test]
fn deleting_a_webhook_cancels_deliveries_lined_up_for_it_and_sends_none_of_them() {
    let gate = Gate::default();
    let rx = Receiver::start({
        let gate = gate.clone();
        move |_, _| Answer::held(&gate)
    });
    let server = serve(&["--webhook-concurrency", "1"]);
    let hook = webhook(&server, &rx.url("/deleted"));
    let dlvs: Vec<String> = (0..4)
        .map(|_| {
            let event_id = id(&publish(&server, "item.created"));
            delivery_of(&server, &event_id, &hook)
        })
        .collect();
    rx.wait_for(&server, 1, SHORT);
    let r = server.request("DELETE", &format!("/api/v1/webhooks/{hook}"), None);
    assert_eq!(r.status, 204, "{}", r.text());
    gate.open();
    // The attempt in flight ends at once now; anything else sent would
    // arrive within milliseconds.
    rx.stays_at(&server, 1, Duration::from_millis(500));
    for dlv in &dlvs {
        let d = delivery(&server, dlv);
        assert_eq!(d["status"], "cancelled", "{d}");
    }
}

#[test]
fn events_accepted_while_the_receiver_is_down_all_arrive_after_kill9_and_restart() {
    let port = closed_port();
    let mut server = serve(&[
        "--retry-base-delay",
        "100ms",
        "--retry-max-delay",
        "300ms",
        "--max-attempts",
        "100",
    ]);
    webhook(&server, &format!("http://127.0.0.1:{port}/later"));
    let events: Vec<String> = (0..20)
        .map(|_| id(&publish(&server, "item.created")))
        .collect();
    server.kill9();
    let rx = Receiver::bind(port, |_, _| Answer::ok());
    server.restart();
    eventually(
        &server,
        Duration::from_secs(20),
        || {
            let got: Vec<String> = rx
                .requests()
                .iter()
                .map(|s| s.webhook_id().to_owned())
                .collect();
            let missing: Vec<&String> = events.iter().filter(|e| !got.contains(e)).collect();
            format!("every event to arrive; missing {missing:?}")
        },
        || {
            let seen = rx.requests();
            events
                .iter()
                .all(|e| seen.iter().any(|s| s.webhook_id() == e))
                .then_some(())
        },
    );
    for s in rx.requests() {
        assert_eq!(s.json()["id"], s.webhook_id(), "{s:?}");
    }
    eventually(
        &server,
        SHORT,
        || "all 20 deliveries to be succeeded".into(),
        || {
            let listed = server
                .get("/api/v1/deliveries?status=succeeded&limit=500")
                .json();
            (listed["data"].as_array().map(Vec::len) == Some(20)).then_some(())
        },
    );
}

#[test]
fn a_delivery_being_attempted_reads_delivering_in_every_view_and_pending_ones_do_not() {
    let rx = Receiver::start(|_, _| Answer::hang());
    let server = serve(&["--delivery-timeout", "30s"]);
    let sending = webhook(&server, &rx.url("/held"));
    let stopped = webhook(&server, &rx.url("/stopped"));
    set_enabled(&server, &stopped, false);
    let event_id = id(&publish(&server, "item.sold"));
    let held = delivery_of(&server, &event_id, &sending);
    let waiting = delivery_of(&server, &event_id, &stopped);
    rx.wait_for(&server, 1, SHORT);

    assert_eq!(delivery(&server, &held)["status"], "delivering");
    assert_eq!(delivery(&server, &waiting)["status"], "pending");
    let listed = |query: &str| -> Vec<String> {
        let body = server.get(&format!("/api/v1/deliveries?{query}")).json();
        body["data"].as_array().unwrap().iter().map(id).collect()
    };
    assert_eq!(listed("status=delivering"), vec![held.clone()]);
    assert_eq!(listed("status=pending"), vec![waiting.clone()]);
    assert_eq!(
        listed(&format!("status=delivering&webhook_id={stopped}")),
        Vec::<String>::new()
    );
    assert_eq!(
        listed(&format!("status=pending&webhook_id={sending}")),
        Vec::<String>::new()
    );
    let event = server.get(&format!("/api/v1/events/{event_id}")).json();
    let statuses: Vec<(String, String)> = event["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (id(d), d["status"].as_str().unwrap().to_owned()))
        .collect();
    assert!(
        statuses.contains(&(held.clone(), "delivering".into())),
        "{event}"
    );
    assert!(
        statuses.contains(&(waiting.clone(), "pending".into())),
        "{event}"
    );
    let queue = server
        .get(&format!("/api/v1/webhooks/{sending}/stats"))
        .json()["queue"]
        .clone();
    assert_eq!(
        (queue["delivering"].as_i64(), queue["pending"].as_i64()),
        (Some(1), Some(0)),
        "{queue}"
    );
    // Being attempted: its outcome decides, not a retry.
    let r = server.request("POST", &format!("/api/v1/deliveries/{held}/retry"), None);
    assert_eq!(r.status, 409, "{}", r.text());
}

#[test]
fn an_attempt_in_flight_at_kill9_is_made_again_after_restart() {
    let hang = Arc::new(AtomicU16::new(1));
    let rx = Receiver::start({
        let hang = hang.clone();
        move |_, _| match hang.load(Ordering::SeqCst) {
            1 => Answer::hang(),
            _ => Answer::ok(),
        }
    });
    let mut server = serve(&["--delivery-timeout", "30s"]);
    let hook = webhook(&server, &rx.url("/held"));
    let event_id = id(&publish(&server, "item.sold"));
    let dlv = delivery_of(&server, &event_id, &hook);
    rx.wait_for(&server, 1, SHORT);
    assert_eq!(delivery(&server, &dlv)["status"], "delivering");
    server.kill9();
    hang.store(0, Ordering::SeqCst);
    server.restart();
    let seen = rx.wait_for(&server, 2, SHORT);
    assert_eq!(seen[1].webhook_id(), event_id);
    assert_eq!(seen[1].body, seen[0].body);
    let d = wait_status(&server, &dlv, "succeeded", SHORT);
    assert_eq!(status_codes(&d).last(), Some(&Some(200)), "{d}");
}

#[test]
fn sigterm_while_an_attempt_hangs_stops_within_the_grace_period_and_hands_it_back() {
    let hang = Arc::new(AtomicU16::new(1));
    let rx = Receiver::start({
        let hang = hang.clone();
        move |_, _| match hang.load(Ordering::SeqCst) {
            1 => Answer::hang(),
            _ => Answer::ok(),
        }
    });
    let mut server = serve(&["--delivery-timeout", "60s"]);
    let hook = webhook(&server, &rx.url("/held"));
    let event_id = id(&publish(&server, "item.sold"));
    rx.wait_for(&server, 1, SHORT);
    let began = Instant::now();
    let exit = server.terminate();
    let took = began.elapsed();
    assert!(exit.success(), "{exit:?}\n{}", server.log());
    assert!(
        took < Duration::from_secs(12),
        "SIGTERM took {took:?} with an attempt hanging\n{}",
        server.log()
    );

    hang.store(0, Ordering::SeqCst);
    server.restart();
    let dlv = delivery_of(&server, &event_id, &hook);
    wait_status(&server, &dlv, "succeeded", SHORT);
    assert!(rx.count() >= 2);
}

#[test]
fn read_tokens_list_and_get_deliveries_but_may_not_retry_or_replay_and_wrong_methods_are_405() {
    let server = Server::start();
    let hook = server.webhook_id(&["item.sold"]);
    let event_id = id(&publish(&server, "item.sold"));
    let dlv = delivery_of(&server, &event_id, &hook);
    let read = server.token("read");
    let publish_only = server.token("publish");
    let json_header = [("Content-Type", "application/json")];
    let as_token = |token: &str, method: &str, path: &str, body: Option<&Value>| {
        let body = body.map(|b| b.to_string().into_bytes());
        server.send(method, path, &json_header, body.as_deref(), Some(token))
    };

    let r = as_token(&read, "GET", "/api/v1/deliveries", None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["data"][0]["id"], dlv.as_str());
    let r = as_token(&read, "GET", &format!("/api/v1/deliveries/{dlv}"), None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["attempt_log"], json!([]));
    assert_eq!(r.json()["status"], "pending");

    let retry = format!("/api/v1/deliveries/{dlv}/retry");
    let replay = format!("/api/v1/webhooks/{hook}/replay");
    let since = json!({"since": "2020-01-01T00:00:00Z"});
    as_token(&read, "POST", &retry, Some(&json!({}))).error(403, "forbidden");
    as_token(&read, "POST", &replay, Some(&since)).error(403, "forbidden");
    as_token(&publish_only, "GET", "/api/v1/deliveries", None).error(403, "forbidden");
    as_token(&publish_only, "POST", &retry, Some(&json!({}))).error(403, "forbidden");
    // The admin token may do both.
    assert_eq!(server.post(&retry, &json!({})).status, 202);
    assert_eq!(server.post(&replay, &since).status, 202);

    let one = format!("/api/v1/deliveries/{dlv}");
    for (method, path, allow) in [
        ("POST", "/api/v1/deliveries", "GET"),
        ("DELETE", "/api/v1/deliveries", "GET"),
        ("PUT", one.as_str(), "GET"),
        ("DELETE", one.as_str(), "GET"),
        ("POST", one.as_str(), "GET"),
        ("GET", retry.as_str(), "POST"),
        ("DELETE", retry.as_str(), "POST"),
        ("GET", replay.as_str(), "POST"),
        ("PUT", replay.as_str(), "POST"),
    ] {
        let r = server.request(method, path, None);
        r.error(405, "method_not_allowed");
        assert_eq!(r.header("Allow"), Some(allow), "{method} {path}");
    }
}

#[test]
fn a_delivery_of_a_deleted_webhook_cannot_be_retried() {
    let rx = Receiver::start(|_, _| Answer::status(500));
    let server = serve(&["--max-attempts", "1"]);
    let hook = webhook(&server, &rx.url("/gone-later"));
    let event_id = id(&publish(&server, "item.created"));
    let dlv = delivery_of(&server, &event_id, &hook);
    wait_status(&server, &dlv, "failed", SHORT);
    let r = server.request("DELETE", &format!("/api/v1/webhooks/{hook}"), None);
    assert_eq!(r.status, 204, "{}", r.text());
    let r = server.post(&format!("/api/v1/deliveries/{dlv}/retry"), &json!({}));
    r.error(409, "not_retryable");
    let d = server.get(&format!("/api/v1/deliveries/{dlv}")).json();
    assert_eq!(d["status"], "failed", "{d}");
}
