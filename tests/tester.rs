//! The webhook tester (SPEC section 3, issue 5): `POST /api/v1/webhooks/test`
//! against real receivers on 127.0.0.1 — a careful one that verifies
//! signatures and timestamps, a naive one that accepts anything, a failing,
//! a slow and a dead one — and `POST /api/v1/webhooks/{id}/test` through the
//! real queue.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::net::TcpListener;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use util::receiver::{Answer, Receiver, Seen, verify};
use util::{Server, eventually};

const TEST: &str = "/api/v1/webhooks/test";

fn server(flags: &[&str]) -> Server {
    let mut all = vec!["--allow-targets", "127.0.0.0/8"];
    all.extend_from_slice(flags);
    Server::delivering(&all)
}

/// A receiver that does what a careful one should: 401 for a signature it
/// cannot verify with `secret`, 400 for a timestamp over 5 minutes away.
fn careful(secret: &'static str) -> Receiver {
    Receiver::start(move |_, seen: &Seen| {
        if verify(secret, seen).is_err() {
            return Answer::status(401).body("bad signature");
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        if now.abs_diff(seen.timestamp()) > 300 {
            return Answer::status(400).body("stale");
        }
        Answer::ok().body("thanks")
    })
}

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} check in {report}"))
}

fn test(server: &Server, body: Value) -> Value {
    let r = server.post(TEST, &body);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

#[test]
fn a_careful_receiver_passes_every_check() {
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let rx = careful(secret);
    let server = server(&[]);
    let report = test(
        &server,
        json!({"event": "item.sold", "url": rx.url("/hook"), "secret": secret,
               "checks": ["bad_signature", "stale_timestamp"]}),
    );
    assert_eq!(report["ok"], true, "{report:#}");
    assert_eq!(report["status"], 200);
    assert_eq!(report["response_body"], "thanks");
    assert_eq!(report["secret"], secret);
    assert!(report["response_time_ms"].is_u64(), "{report}");
    for name in [
        "payload_format",
        "responded_2xx",
        "response_time",
        "bad_signature",
        "stale_timestamp",
    ] {
        let c = check(&report, name);
        assert_eq!(c["passed"], true, "{c}");
        assert!(!c["detail"].as_str().unwrap().is_empty(), "{c}");
    }
    assert!(
        check(&report, "bad_signature")["detail"]
            .as_str()
            .unwrap()
            .contains("401")
    );

    // What arrived: the catalog example, in the envelope, signed; then the
    // two probes, each with an id of its own.
    let seen = rx.requests();
    assert_eq!(seen.len(), 3, "{seen:?}");
    let first = seen[0].json();
    assert_eq!(first["event"], "item.sold");
    assert_eq!(first["id"], report["event_id"]);
    assert_eq!(seen[0].webhook_id(), report["event_id"].as_str().unwrap());
    let catalog = server.get("/api/v1/event-types").json();
    let example = catalog["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "item.sold")
        .unwrap()["example"]
        .clone();
    assert_eq!(first["data"], example);
    verify(secret, &seen[0]).unwrap();
    assert!(verify(secret, &seen[1]).is_err(), "the probe is mis-signed");
    verify(secret, &seen[2]).unwrap();
    let ids: Vec<&str> = seen.iter().map(Seen::webhook_id).collect();
    assert!(ids[0] != ids[1] && ids[1] != ids[2], "{ids:?}");
}

#[test]
fn a_receiver_that_accepts_anything_fails_the_signature_and_replay_checks_and_says_why() {
    let rx = Receiver::start(|_, _| Answer::ok());
    let server = server(&[]);
    let report = test(
        &server,
        json!({"event": "profile.created", "url": rx.url("/naive"),
               "checks": ["bad_signature", "stale_timestamp"]}),
    );
    assert_eq!(report["ok"], false, "{report:#}");
    assert_eq!(check(&report, "responded_2xx")["passed"], true);
    let bad = check(&report, "bad_signature");
    assert_eq!(bad["passed"], false);
    assert!(bad["detail"].as_str().unwrap().contains("forge"), "{bad}");
    let stale = check(&report, "stale_timestamp");
    assert_eq!(stale["passed"], false);
    assert!(
        stale["detail"].as_str().unwrap().contains("replay"),
        "{stale}"
    );
    // The stale probe was signed correctly, ten minutes in the past.
    let secret = report["secret"].as_str().unwrap();
    assert!(
        secret.starts_with("whsec_"),
        "a secret is generated: {report}"
    );
    let seen = rx.requests();
    verify(secret, &seen[0]).unwrap();
    verify(secret, &seen[2]).unwrap();
    assert!(seen[0].timestamp() - seen[2].timestamp() >= 599);
}

#[test]
fn without_asking_only_the_basic_checks_run_and_the_seeds_raw_secret_signs() {
    let rx = careful("your-secret-key");
    let server = server(&[]);
    let report = test(
        &server,
        json!({"event": "email.updated", "url": rx.url("/x"), "secret": "your-secret-key"}),
    );
    assert_eq!(report["ok"], true, "{report:#}");
    let names: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["payload_format", "responded_2xx", "response_time"]);
    assert_eq!(rx.count(), 1);
}

#[test]
fn a_failing_receiver_is_reported_with_its_status_and_body() {
    let rx = Receiver::start(|_, _| Answer::status(500).body("database down"));
    let server = server(&[]);
    let report = test(
        &server,
        json!({"event": "item.created", "url": rx.url("/x")}),
    );
    assert_eq!(report["ok"], false);
    assert_eq!(report["status"], 500);
    assert_eq!(report["error_kind"], "http_status");
    assert_eq!(report["response_body"], "database down");
    let c = check(&report, "responded_2xx");
    assert_eq!(c["passed"], false);
    assert!(c["detail"].as_str().unwrap().contains("500"), "{c}");
}

#[test]
fn a_dead_url_is_200_with_ok_false_and_the_error_kind() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = server(&[]);
    let report = test(
        &server,
        json!({"event": "item.created", "url": format!("http://127.0.0.1:{port}/gone"),
               "checks": ["bad_signature"]}),
    );
    assert_eq!(report["ok"], false, "{report:#}");
    assert_eq!(report["status"], Value::Null);
    assert_eq!(report["error_kind"], "connect");
    let probe = check(&report, "bad_signature");
    assert_eq!(probe["passed"], false);
    assert!(
        probe["detail"].as_str().unwrap().contains("not sent"),
        "{probe}"
    );
}

#[test]
fn a_receiver_slower_than_the_delivery_timeout_fails_the_timing_check() {
    let rx = Receiver::start(|_, _| Answer::ok().after(Duration::from_secs(3)));
    let server = server(&["--delivery-timeout", "500ms"]);
    let report = test(
        &server,
        json!({"event": "item.created", "url": rx.url("/slow")}),
    );
    assert_eq!(report["ok"], false);
    assert_eq!(report["error_kind"], "timeout");
    let c = check(&report, "response_time");
    assert_eq!(c["passed"], false);
    assert!(c["detail"].as_str().unwrap().contains("500 ms"), "{c}");
}

#[test]
fn the_tester_obeys_the_target_policy_and_validates_its_input() {
    let strict = Server::delivering(&[]);
    for url in [
        "http://127.0.0.1:9/x",
        "http://[::ffff:10.0.0.1]/",
        "http://localhost./",
    ] {
        let r = strict.post(TEST, &json!({"event": "item.created", "url": url}));
        r.error(422, "validation_failed");
        assert_eq!(r.error_fields(), ["url"], "{url}: {}", r.text());
    }
    let r = strict.post(
        TEST,
        &json!({"event": "no.such", "checks": ["bad_signature", "fuzz"], "secret": "short"}),
    );
    r.error(422, "validation_failed");
    let mut fields = r.error_fields();
    fields.sort();
    assert_eq!(
        fields,
        ["checks[1]", "event", "secret", "url"],
        "{}",
        r.text()
    );
    // Admin only: a read token may not make hookbox send requests.
    let read = strict.token("read");
    strict
        .send(
            "POST",
            TEST,
            &[("Content-Type", "application/json")],
            Some(br#"{"event":"item.created","url":"http://127.0.0.1:9/"}"#),
            Some(&read),
        )
        .error(403, "forbidden");
}

#[test]
fn testing_a_registered_webhook_sends_the_example_through_the_queue_to_it_alone() {
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let rx = careful(secret);
    let other = Receiver::start(|_, _| Answer::ok());
    let server = server(&[]);
    // Subscribed to email events only: the test event goes anyway.
    let hook = server.post(
        "/api/v1/webhooks",
        &json!({"url": rx.url("/registered"), "events": ["email.updated"], "secret": secret}),
    );
    let hook = hook.json()["id"].as_str().unwrap().to_owned();
    let r = server.post(
        "/api/v1/webhooks",
        &json!({"url": other.url("/other"), "events": ["*"]}),
    );
    assert_eq!(r.status, 201);

    let r = server.post(
        &format!("/api/v1/webhooks/{hook}/test"),
        &json!({"event": "item.sold"}),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let event = r.json();
    assert_eq!(event["deliveries"], 1, "{event}");
    let event_id = event["id"].as_str().unwrap().to_owned();
    let seen = rx.wait_for(&server, 1, Duration::from_secs(10));
    assert_eq!(seen[0].webhook_id(), event_id);
    assert_eq!(seen[0].json()["event"], "item.sold");
    verify(secret, &seen[0]).unwrap();
    eventually(
        &server,
        Duration::from_secs(10),
        || "the test delivery to succeed".into(),
        || {
            let list = server
                .get(&format!("/api/v1/deliveries?event_id={event_id}"))
                .json();
            (list["data"][0]["status"] == "succeeded").then_some(())
        },
    );
    // The other webhook's receiver heard nothing: the delivery above is
    // done, and it was the event's only one.
    assert_eq!(other.count(), 0);

    server
        .post(
            "/api/v1/webhooks/wh_00000000000000000000000000/test",
            &json!({"event": "item.sold"}),
        )
        .error(404, "not_found");
    server
        .post(
            &format!("/api/v1/webhooks/{hook}/test"),
            &json!({"event": "no.such"}),
        )
        .error(422, "validation_failed");
}

#[test]
fn proxy_variables_are_ignored_so_the_target_policy_judges_the_target_itself() {
    let rx = Receiver::start(|_, _| Answer::ok());
    // A "proxy" nobody listens on: were it used, nothing would arrive.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let proxy = format!("http://127.0.0.1:{port}");
    let server = Server::delivering_with_env(
        "127.0.0.1:0",
        &["--allow-targets", "127.0.0.0/8"],
        &[
            ("HTTP_PROXY", &proxy),
            ("http_proxy", &proxy),
            ("HTTPS_PROXY", &proxy),
            ("ALL_PROXY", &proxy),
        ],
    );
    let report = test(
        &server,
        json!({"event": "item.created", "url": rx.url("/direct")}),
    );
    assert_eq!(report["ok"], true, "{report:#}");
    assert_eq!(rx.count(), 1);
}

#[test]
fn at_most_four_tests_run_at_once_and_a_fifth_is_told_to_retry() {
    let gate = util::receiver::Gate::default();
    let rx = Receiver::start({
        let gate = gate.clone();
        move |_, _| Answer::held(&gate)
    });
    let server = server(&[]);
    let body = json!({"event": "item.created", "url": rx.url("/held")});
    std::thread::scope(|s| {
        let running: Vec<_> = (0..4)
            .map(|_| s.spawn(|| server.post(TEST, &body)))
            .collect();
        rx.wait_for(&server, 4, Duration::from_secs(10));
        let busy = server.post(TEST, &body);
        busy.error(503, "tester_busy");
        assert_eq!(busy.header("Retry-After"), Some("5"));
        gate.open();
        for r in running {
            let r = r.join().unwrap();
            assert_eq!(r.status, 200, "{}", r.text());
            assert_eq!(r.json()["ok"], true);
        }
    });
    // The slots were given back.
    assert_eq!(server.post(TEST, &body).status, 200);
}
