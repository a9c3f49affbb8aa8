//! Custom headers per webhook (issue 14, item 1) from outside: the real
//! binary delivering to a real receiver on 127.0.0.1 that records every
//! header it gets. The values are credentials, so every place hookbox
//! shows a webhook — its answers, listings, the audit log, its own log —
//! is searched for them.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod util;

use std::time::Duration;

use serde_json::{Value, json};
use util::Server;
use util::receiver::{Answer, Receiver, verify};

/// Long enough for a delivery on an idle machine many times over.
const SHORT: Duration = Duration::from_secs(10);

/// A value that must never be seen anywhere but the receiver and the
/// admin's `GET …/headers`.
const API_KEY: &str = "hk-s3cr3t-api-key-0147";

fn serve() -> Server {
    Server::delivering(&[
        "--allow-targets",
        "127.0.0.0/8",
        "--retry-base-delay",
        "100ms",
        "--retry-max-delay",
        "1s",
    ])
}

fn created(server: &Server, body: &Value) -> Value {
    let r = server.post("/api/v1/webhooks", body);
    assert_eq!(r.status, 201, "{body}: {}\n{}", r.text(), server.log());
    r.json()
}

fn publish(server: &Server) -> String {
    let r = server.post(
        "/api/v1/events",
        &json!({"event": "item.sold", "data": util::seed("item.sold")}),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    r.json()["id"].as_str().unwrap().to_owned()
}

#[test]
fn custom_headers_reach_the_receiver_on_every_attempt_beside_a_valid_signature() {
    let rx = Receiver::start(|n, _| match n {
        0 => Answer::status(503).body("warming up"),
        _ => Answer::ok(),
    });
    let server = serve();
    let hook = created(
        &server,
        &json!({
            "url": rx.url("/with-key"),
            "events": ["item.sold"],
            "headers": {"X-Api-Key": API_KEY, "Authorization": "Bearer a.b.c", "X-Shop": "north branch"},
        }),
    );
    assert_eq!(
        hook["header_names"],
        json!(["Authorization", "X-Api-Key", "X-Shop"])
    );
    let secret = hook["secret"].as_str().unwrap();
    let event_id = publish(&server);

    let seen = rx.wait_for(&server, 2, SHORT);
    for s in &seen {
        assert_eq!(s.webhook_id(), event_id);
        assert_eq!(s.header("x-api-key"), Some(API_KEY), "{s:?}");
        assert_eq!(s.header("authorization"), Some("Bearer a.b.c"), "{s:?}");
        assert_eq!(s.header("x-shop"), Some("north branch"), "{s:?}");
        // The headers hookbox owns are still its own.
        assert_eq!(s.header("content-type"), Some("application/json"));
        assert!(
            s.header("user-agent").unwrap().starts_with("hookbox/"),
            "{s:?}"
        );
        verify(secret, s).unwrap_or_else(|e| panic!("{e}: {s:?}"));
    }
}

#[test]
fn custom_header_values_never_appear_in_answers_listings_the_audit_log_or_the_log() {
    let rx = Receiver::start(|_, _| Answer::ok());
    let server = serve();
    let hook = created(
        &server,
        &json!({"url": rx.url("/quiet"), "events": ["*"], "headers": {"X-Api-Key": API_KEY}}),
    );
    let id = hook["id"].as_str().unwrap();
    publish(&server);
    rx.wait_for(&server, 1, SHORT);
    let patched = server.request(
        "PATCH",
        &format!("/api/v1/webhooks/{id}"),
        Some(&json!({"headers": {"X-Api-Key": format!("{API_KEY}-2")}})),
    );
    assert_eq!(patched.status, 200, "{}", patched.text());

    let mut shown = vec![hook.to_string(), patched.text()];
    for path in [
        format!("/api/v1/webhooks/{id}"),
        "/api/v1/webhooks".to_owned(),
        "/api/v1/audit-log".to_owned(),
        "/api/v1/deliveries".to_owned(),
        "/api/v1/events".to_owned(),
    ] {
        let r = server.get(&path);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        shown.push(r.text());
    }
    shown.push(server.log());
    for text in &shown {
        assert!(!text.contains(API_KEY), "a header value is shown: {text}");
        assert!(!text.contains("s3cr3t"), "a header value is shown: {text}");
    }
    assert!(
        shown[2].contains("\"header_names\":[\"X-Api-Key\"]"),
        "{}",
        shown[2]
    );
    let audit = &shown[4];
    assert!(
        audit.contains("with 1 custom header") && audit.contains("changed headers"),
        "{audit}"
    );

    // An admin reads the values where the secret is read; a read token
    // may list webhooks but not this.
    let r = server.get(&format!("/api/v1/webhooks/{id}/headers"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"headers": {"X-Api-Key": format!("{API_KEY}-2")}})
    );
    let read = server.token("read");
    let path = format!("/api/v1/webhooks/{id}/headers");
    let r = server.send("GET", &path, &[], None, Some(&read));
    assert_eq!(r.status, 403, "{}", r.text());
    let r = server.send("GET", "/api/v1/webhooks", &[], None, Some(&read));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!r.text().contains(API_KEY));
    let r = server.get("/api/v1/webhooks/wh_unknown/headers");
    assert_eq!(r.status, 404, "{}", r.text());
}

#[test]
fn reserved_and_malformed_custom_headers_are_refused_naming_each_field_and_no_value() {
    let server = serve();
    let r = server.post(
        "/api/v1/webhooks",
        &json!({
            "url": "http://127.0.0.1:9/hook",
            "events": ["*"],
            "headers": {
                "Host": "evil.example",
                "Content-Length": "0",
                "Transfer-Encoding": "chunked",
                "Connection": "close",
                "webhook-signature": "v1,forged",
                "Webhook-Id": "evt_forged",
                "Bad Name": "x",
                "X-Split": format!("{API_KEY}\r\nX-Injected: 1"),
                "X-Number": 12,
                "X-Fine": "ok",
            },
        }),
    );
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(!r.text().contains(API_KEY), "{}", r.text());
    let details = r.json()["error"]["details"].clone();
    let codes: Vec<(String, String)> = details
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["field"].as_str().unwrap().to_owned(),
                d["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected = [
        ("headers.Bad Name", "invalid_name"),
        ("headers.Connection", "reserved"),
        ("headers.Content-Length", "reserved"),
        ("headers.Host", "reserved"),
        ("headers.Transfer-Encoding", "reserved"),
        ("headers.Webhook-Id", "reserved"),
        ("headers.X-Number", "type"),
        ("headers.X-Split", "invalid"),
        ("headers.webhook-signature", "reserved"),
    ];
    assert_eq!(
        codes,
        expected.map(|(f, c)| (f.to_owned(), c.to_owned())),
        "{details}"
    );

    // The same name twice in different case, and not an object.
    for (headers, field, code) in [
        (
            json!({"X-Key": "a", "x-key": "b"}),
            "headers.x-key",
            "duplicate",
        ),
        (json!(["X-Key: a"]), "headers", "type"),
    ] {
        let r = server.post(
            "/api/v1/webhooks",
            &json!({"url": "http://127.0.0.1:9/hook", "events": ["*"], "headers": headers}),
        );
        assert_eq!(r.status, 422, "{}", r.text());
        let detail = &r.json()["error"]["details"][0];
        assert_eq!(
            (detail["field"].as_str(), detail["code"].as_str()),
            (Some(field), Some(code))
        );
    }
    // Nothing was created by the refusals.
    assert_eq!(server.get("/api/v1/webhooks").json()["data"], json!([]));
}

#[test]
fn patching_headers_replaces_the_set_and_the_next_delivery_sends_the_new_one() {
    let rx = Receiver::start(|_, _| Answer::ok());
    let server = serve();
    let hook = created(
        &server,
        &json!({"url": rx.url("/p"), "events": ["*"], "headers": {"X-Old": "1", "X-Kept": "k"}}),
    );
    let id = hook["id"].as_str().unwrap();
    let path = format!("/api/v1/webhooks/{id}");
    publish(&server);
    let first = rx.wait_for(&server, 1, SHORT).remove(0);
    assert_eq!(first.header("x-old"), Some("1"));

    let r = server.request(
        "PATCH",
        &path,
        Some(&json!({"headers": {"X-New": "2", "X-Kept": "k"}})),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["header_names"], json!(["X-Kept", "X-New"]));
    publish(&server);
    let second = rx.wait_for(&server, 2, SHORT).remove(1);
    assert_eq!(second.header("x-old"), None, "{second:?}");
    assert_eq!(second.header("x-new"), Some("2"), "{second:?}");
    assert_eq!(second.header("x-kept"), Some("k"), "{second:?}");

    // A PATCH without headers, or with null, keeps them; `{}` removes them all.
    let r = server.request("PATCH", &path, Some(&json!({"description": "still keyed"})));
    assert_eq!(r.json()["header_names"], json!(["X-Kept", "X-New"]));
    let r = server.request("PATCH", &path, Some(&json!({"headers": null})));
    assert_eq!(r.json()["header_names"], json!(["X-Kept", "X-New"]));
    let r = server.request("PATCH", &path, Some(&json!({"headers": {}})));
    assert_eq!(r.json()["header_names"], json!([]));
    publish(&server);
    let third = rx.wait_for(&server, 3, SHORT).remove(2);
    assert_eq!(third.header("x-new"), None, "{third:?}");
    assert_eq!(third.header("x-kept"), None, "{third:?}");
    let r = server.get(&format!("{path}/headers"));
    assert_eq!(r.json(), json!({"headers": {}}));

    // A refused PATCH changes nothing.
    let r = server.request("PATCH", &path, Some(&json!({"headers": {"Host": "x"}})));
    assert_eq!(r.status, 422, "{}", r.text());
}

#[test]
fn custom_headers_survive_a_restart() {
    let rx = Receiver::start(|_, _| Answer::ok());
    let mut server = serve();
    created(
        &server,
        &json!({"url": rx.url("/r"), "events": ["*"], "headers": {"X-Api-Key": API_KEY}}),
    );
    server.restart();
    publish(&server);
    let seen = rx.wait_for(&server, 1, SHORT).remove(0);
    assert_eq!(seen.header("x-api-key"), Some(API_KEY), "{seen:?}");
}

#[test]
fn the_tester_sends_the_custom_headers_it_is_given() {
    let rx = Receiver::start(|_, seen| {
        if seen.header("x-api-key") == Some(API_KEY) {
            Answer::ok()
        } else {
            Answer::status(401).body("no key")
        }
    });
    let server = serve();
    let r = server.post(
        "/api/v1/webhooks/test",
        &json!({"event": "item.sold", "url": rx.url("/t"), "headers": {"X-Api-Key": API_KEY}}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], 200, "{}", r.text());
    assert!(!r.text().contains(API_KEY), "{}", r.text());
    let r = server.post(
        "/api/v1/webhooks/test",
        &json!({"event": "item.sold", "url": rx.url("/t"), "headers": {"Host": "x"}}),
    );
    assert_eq!(r.status, 422, "{}", r.text());
}
