//! Ordered delivery by key (issue 14, item 3) from outside: a webhook with
//! `"ordering_key": "data.item_id"`, a real receiver on 127.0.0.1 that
//! records the order requests arrive in, retries forced by failing
//! answers, and the real binary killed with SIGKILL mid-run. Order is read
//! from the receiver's arrivals: a delivery is sent only after the one
//! before it of its key is recorded, so arrivals of one key never overlap.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod util;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use util::Server;
use util::receiver::{Answer, Receiver, Seen};

const LONG: Duration = Duration::from_secs(30);

fn item(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

fn publish(server: &Server, key: u32, seq: u32) -> String {
    let mut data = util::seed("item.sold");
    data["item_id"] = json!(item(key));
    data["sale_price"] = json!(format!("{seq}.00"));
    let r = server.post(
        "/api/v1/events",
        &json!({"event": "item.sold", "data": data}),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    r.json()["id"].as_str().unwrap().to_owned()
}

fn key_of(seen: &Seen) -> String {
    seen.json()["data"]["item_id"].as_str().unwrap().to_owned()
}

fn ordered_webhook(server: &Server, url: &str) -> Value {
    let r = server.post(
        "/api/v1/webhooks",
        &json!({"url": url, "events": ["item.*"], "ordering_key": "data.item_id"}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()
}

/// For each key, the event ids in the order they first arrived.
fn first_arrivals(seen: &[Seen]) -> HashMap<String, Vec<String>> {
    let mut order: HashMap<String, Vec<String>> = HashMap::new();
    let mut once = HashSet::new();
    for s in seen {
        if once.insert(s.webhook_id().to_owned()) {
            order
                .entry(key_of(s))
                .or_default()
                .push(s.webhook_id().to_owned());
        }
    }
    order
}

#[test]
fn same_key_events_arrive_in_publish_order_and_a_retry_holds_only_its_key() {
    // Every first attempt of an event of item 1 fails; item 2's succeed.
    let failed_once: Arc<Mutex<HashSet<String>>> = Arc::default();
    let rx = Receiver::start({
        let failed_once = failed_once.clone();
        move |_, seen| {
            if key_of(seen) == item(1)
                && failed_once
                    .lock()
                    .unwrap()
                    .insert(seen.webhook_id().to_owned())
            {
                Answer::status(503).body("not yet")
            } else {
                Answer::ok()
            }
        }
    });
    let server = Server::delivering(&[
        "--allow-targets",
        "127.0.0.0/8",
        "--retry-base-delay",
        "300ms",
        "--retry-max-delay",
        "1s",
        "--max-attempts",
        "5",
    ]);
    let hook = ordered_webhook(&server, &rx.url("/ordered"));
    assert_eq!(hook["ordering_key"], "data.item_id");
    let mut published: HashMap<String, Vec<String>> = HashMap::new();
    for seq in 0..3 {
        for key in [1, 2] {
            published
                .entry(item(key))
                .or_default()
                .push(publish(&server, key, seq));
        }
    }
    // Item 1: three events, each attempted twice; item 2: three, once each.
    let seen = rx.wait_for(&server, 9, LONG);
    assert_eq!(first_arrivals(&seen), published);

    // Within item 1, no event was sent before the one before it succeeded:
    // attempts run a1 (503), a1, a2 (503), a2, a3 (503), a3.
    let ones: Vec<&str> = seen
        .iter()
        .filter(|s| key_of(s) == item(1))
        .map(Seen::webhook_id)
        .collect();
    let a = &published[&item(1)];
    assert_eq!(
        ones,
        [&a[0], &a[0], &a[1], &a[1], &a[2], &a[2]].map(String::as_str)
    );
    // Item 1's retries held item 1 only: item 2 was through long before.
    let last_two = seen.iter().rposition(|s| key_of(s) == item(2)).unwrap();
    let a3_done = seen.iter().rposition(|s| key_of(s) == item(1)).unwrap();
    assert!(last_two < a3_done, "item 2 waited for item 1: {seen:?}");
}

#[test]
fn order_per_key_holds_across_sigkills_while_publishing_and_delivering() {
    let rx = Receiver::start(|_, _| Answer::ok().after(Duration::from_millis(15)));
    let mut server = Server::delivering(&["--allow-targets", "127.0.0.0/8"]);
    ordered_webhook(&server, &rx.url("/killed"));
    let mut published: HashMap<String, Vec<String>> = HashMap::new();
    let mut all = 0;
    for round in 0..3 {
        for seq in 0..12 {
            let key = seq % 3;
            published
                .entry(item(key))
                .or_default()
                .push(publish(&server, key, round * 100 + seq));
            all += 1;
        }
        // Killed with deliveries in flight and more waiting their turn.
        server.kill9();
        server.restart();
    }
    let distinct = || {
        rx.requests()
            .iter()
            .map(|s| s.webhook_id().to_owned())
            .collect::<HashSet<_>>()
            .len()
    };
    util::eventually(
        &server,
        LONG,
        || format!("{all} events, {} arrived", distinct()),
        || (distinct() == all).then_some(()),
    );
    assert_eq!(first_arrivals(&rx.requests()), published);
}

#[test]
fn an_ordering_key_is_checked_against_the_subscribed_schemas() {
    let server = Server::start();
    for (key, code) in [
        (json!("data.itme_id"), "unknown_path"),
        (json!("item_id"), "invalid"),
        (json!(["data.item_id"]), "type"),
    ] {
        let r = server.post(
            "/api/v1/webhooks",
            &json!({"url": "https://93.184.216.34/o", "events": ["item.*"], "ordering_key": key}),
        );
        assert_eq!(r.status, 422, "{key}: {}", r.text());
        assert_eq!(r.json()["error"]["details"][0]["code"], code, "{key}");
    }
    let hook = ordered_webhook(&server, "https://93.184.216.34/o");
    let path = format!("/api/v1/webhooks/{}", hook["id"].as_str().unwrap());
    // Subscribing to a type without the key's field no longer fits.
    let r = server.request(
        "PATCH",
        &path,
        Some(&json!({"events": ["profile.created"]})),
    );
    assert_eq!(r.status, 422, "{}", r.text());
    let r = server.request("PATCH", &path, Some(&json!({"ordering_key": null})));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["ordering_key"], Value::Null);
    let audit = server.get("/api/v1/audit-log").text();
    assert!(
        audit.contains("ordered by data.item_id") && audit.contains("changed ordering_key"),
        "{audit}"
    );
}
