//! Content filters on subscriptions (issue 14, item 2) from outside: the
//! real binary, real receivers on 127.0.0.1, one webhook per filter, and
//! events published through the API. What a webhook must NOT get is shown
//! by the deliveries hookbox created: a filtered-out event makes none.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod util;

use std::time::Duration;

use serde_json::{Value, json};
use util::Server;
use util::receiver::{Answer, Receiver};

const SHORT: Duration = Duration::from_secs(10);
const ALICE: &str = "7d6f1c2e-8a4b-4c3d-9e5f-0a1b2c3d4e5f";
const BOB: &str = "0b1c2d3e-4f50-4617-8283-94a5b6c7d8e9";

fn serve() -> Server {
    Server::delivering(&["--allow-targets", "127.0.0.0/8"])
}

fn webhook(server: &Server, body: Value) -> Value {
    let r = server.post("/api/v1/webhooks", &body);
    assert_eq!(r.status, 201, "{body}: {}", r.text());
    r.json()
}

fn created(consignor: &str, title: &str) -> Value {
    let mut data = util::seed("item.created");
    data["consignor_id"] = json!(consignor);
    data["title"] = json!(title);
    data
}

/// Publishes and returns the event's id and how many deliveries it made.
fn publish(server: &Server, event_type: &str, data: Value) -> (String, u64) {
    let r = server.post(
        "/api/v1/events",
        &json!({"event": event_type, "data": data}),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let body = r.json();
    (
        body["id"].as_str().unwrap().to_owned(),
        body["deliveries"].as_u64().unwrap(),
    )
}

#[test]
fn each_webhook_gets_only_the_events_its_filter_matches() {
    let server = serve();
    let rx_alice = Receiver::start(|_, _| Answer::ok());
    let rx_vintage = Receiver::start(|_, _| Answer::ok());
    let rx_all = Receiver::start(|_, _| Answer::ok());
    let alice = webhook(
        &server,
        json!({"url": rx_alice.url("/a"), "events": ["item.*"],
               "filter": [{"path": "data.consignor_id", "in": [ALICE]}]}),
    );
    assert_eq!(
        alice["filter"],
        json!([{"path": "data.consignor_id", "in": [ALICE]}])
    );
    webhook(
        &server,
        json!({"url": rx_vintage.url("/v"), "events": ["item.created"],
               "filter": [{"path": "data.title", "prefix": "Vintage"},
                          {"path": "data.consignor_id", "eq": BOB}]}),
    );
    webhook(
        &server,
        json!({"url": rx_all.url("/all"), "events": ["item.created"]}),
    );

    let (alice_lamp, n) = publish(&server, "item.created", created(ALICE, "Vintage lamp"));
    assert_eq!(n, 2, "alice's webhook and the unfiltered one");
    let (bob_vase, n) = publish(&server, "item.created", created(BOB, "Vintage vase"));
    assert_eq!(n, 2, "the vintage-from-bob webhook and the unfiltered one");
    let (_, n) = publish(&server, "item.created", created(BOB, "Modern chair"));
    assert_eq!(n, 1, "only the unfiltered one");

    let got = |rx: &Receiver, n| -> Vec<String> {
        rx.wait_for(&server, n, SHORT)
            .iter()
            .map(|s| s.webhook_id().to_owned())
            .collect()
    };
    assert_eq!(got(&rx_alice, 1), [alice_lamp]);
    assert_eq!(got(&rx_vintage, 1), [bob_vase]);
    assert_eq!(got(&rx_all, 3).len(), 3);
    // The filtered-out events made no delivery, so nothing more comes.
    rx_alice.stays_at(&server, 1, Duration::from_millis(200));
    rx_vintage.stays_at(&server, 1, Duration::ZERO);
}

#[test]
fn exists_and_numbers_compare_as_documented() {
    let server = Server::start();
    webhook(
        &server,
        json!({"url": "https://93.184.216.34/failed-syncs", "events": ["email.updated"],
               "filter": [{"path": "data.sync_error", "exists": true}]}),
    );
    webhook(
        &server,
        json!({"url": "https://93.184.216.34/paid", "events": ["event.registered"],
               "filter": [{"path": "data.fee_paid", "eq": true}, {"path": "data.type", "in": ["super"]}]}),
    );
    let mut failed = util::seed("email.updated");
    failed["sync_status"] = json!("failed");
    failed["sync_error"] = json!("mailbox full");
    let mut fine = util::seed("email.updated");
    fine["sync_status"] = json!("completed");
    fine.as_object_mut().unwrap().remove("sync_error");
    assert_eq!(publish(&server, "email.updated", failed).1, 1);
    assert_eq!(publish(&server, "email.updated", fine).1, 0);
    let mut super_paid = util::seed("event.registered");
    super_paid["type"] = json!("super");
    super_paid["fee_paid"] = json!(true);
    let mut regular = super_paid.clone();
    regular["type"] = json!("regular");
    assert_eq!(publish(&server, "event.registered", super_paid).1, 1);
    assert_eq!(publish(&server, "event.registered", regular).1, 0);
}

#[test]
fn a_filter_is_checked_against_the_subscribed_schemas_at_registration() {
    let server = Server::start();
    let r = server.post(
        "/api/v1/webhooks",
        &json!({"url": "https://93.184.216.34/x", "events": ["item.sold"], "filter": [
            {"path": "data.consigner_id", "eq": ALICE},
            {"path": "data.sale_price", "eq": 12.5},
            {"path": "consignor_id", "eq": ALICE},
            {"path": "data.title", "like": "x"},
        ]}),
    );
    assert_eq!(r.status, 422, "{}", r.text());
    let fields: Vec<(String, String)> = r.json()["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["field"].as_str().unwrap().into(),
                d["code"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        fields,
        [
            ("filter[0].path".into(), "unknown_path".into()),
            ("filter[1].eq".into(), "type".into()),
            ("filter[2].path".into(), "invalid".into()),
            ("filter[3].like".into(), "operator".into()),
        ]
    );
    let r = server.post(
        "/api/v1/webhooks",
        &json!({"url": "https://93.184.216.34/x", "events": ["event.registered"],
                "filter": [{"path": "data.type", "eq": "premium"}]}),
    );
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(
        r.text().contains("can never be the value of data.type"),
        "{}",
        r.text()
    );
    assert_eq!(server.get("/api/v1/webhooks").json()["data"], json!([]));
}

#[test]
fn patching_a_filter_changes_what_is_delivered_and_new_types_must_fit_the_filter() {
    let server = Server::start();
    let hook = webhook(
        &server,
        json!({"url": "https://93.184.216.34/p", "events": ["item.created"],
               "filter": [{"path": "data.consignor_id", "eq": ALICE}]}),
    );
    let path = format!("/api/v1/webhooks/{}", hook["id"].as_str().unwrap());
    assert_eq!(publish(&server, "item.created", created(BOB, "x")).1, 0);
    let r = server.request(
        "PATCH",
        &path,
        Some(&json!({"filter": [{"path": "data.consignor_id", "eq": BOB}]})),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(publish(&server, "item.created", created(BOB, "x")).1, 1);
    // event.registered declares no title: a filter on it does not fit.
    let r = server.request(
        "PATCH",
        &path,
        Some(&json!({"filter": [{"path": "data.title", "prefix": "V"}]})),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = server.request(
        "PATCH",
        &path,
        Some(&json!({"events": ["event.registered"]})),
    );
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("unknown_path"), "{}", r.text());
    // null leaves it; [] removes it: every item.created again.
    let r = server.request("PATCH", &path, Some(&json!({"filter": null})));
    assert_eq!(
        r.json()["filter"],
        json!([{"path": "data.title", "prefix": "V"}])
    );
    let r = server.request("PATCH", &path, Some(&json!({"filter": []})));
    assert_eq!(r.json()["filter"], json!([]));
    assert_eq!(
        publish(&server, "item.created", created(BOB, "Modern")).1,
        1
    );
    let audit = server.get("/api/v1/audit-log").text();
    assert!(
        audit.contains("changed filter") && audit.contains("and a content filter"),
        "{audit}"
    );
}

#[test]
fn filters_survive_a_restart() {
    let mut server = Server::start();
    webhook(
        &server,
        json!({"url": "https://93.184.216.34/r", "events": ["item.created"],
               "filter": [{"path": "data.consignor_id", "eq": ALICE}]}),
    );
    server.restart();
    assert_eq!(publish(&server, "item.created", created(BOB, "x")).1, 0);
    assert_eq!(publish(&server, "item.created", created(ALICE, "x")).1, 1);
}
