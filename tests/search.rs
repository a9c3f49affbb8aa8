//! Search by an event's data (issue 14, item 4) from outside: the real
//! binary's events and deliveries listings with `?data.…=`, status and
//! time, with and without a `--search-index`. Delivery is paused, so every
//! delivery stays pending where the test put it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod util;

use serde_json::{Value, json};
use util::Server;

const ALICE: &str = "7d6f1c2e-8a4b-4c3d-9e5f-0a1b2c3d4e5f";
const BOB: &str = "0b1c2d3e-4f50-4617-8283-94a5b6c7d8e9";

fn publish(server: &Server, event_type: &str, change: Value) -> String {
    let mut data = util::seed(event_type);
    for (k, v) in change.as_object().unwrap() {
        data[k] = v.clone();
    }
    let r = server.post(
        "/api/v1/events",
        &json!({"event": event_type, "data": data}),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    r.json()["id"].as_str().unwrap().to_owned()
}

fn ids(server: &Server, path: &str) -> Vec<String> {
    server.ids(path)
}

/// Two webhooks for every event; Alice's two items, Bob's one, and a
/// registration; returns (Alice's event ids newest first, webhook ids).
fn shop(server: &Server) -> (Vec<String>, Vec<String>) {
    let hooks = vec![server.webhook_id(&["*"]), server.webhook_id(&["*"])];
    let a1 = publish(
        server,
        "item.created",
        json!({"consignor_id": ALICE, "price": "10.00"}),
    );
    publish(server, "item.created", json!({"consignor_id": BOB}));
    let a2 = publish(server, "profile.created", json!({"consignor_id": ALICE}));
    publish(
        server,
        "event.registered",
        json!({"consignor_id": BOB, "fee_paid": true, "type": "super"}),
    );
    (vec![a2, a1], hooks)
}

fn searches_find_what_they_should(server: &Server, alice: &[String], hooks: &[String]) {
    let alice_events = format!("/api/v1/events?data.consignor_id={ALICE}");
    assert_eq!(ids(server, &alice_events), alice);
    assert_eq!(
        ids(server, &format!("{alice_events}&event=item.*")),
        [alice[1].clone()]
    );
    // Every delivery for Alice: two events, two webhooks each.
    let alice_deliveries = format!("/api/v1/deliveries?data.consignor_id={ALICE}");
    let r = server.get(&alice_deliveries);
    let listed = r.json()["data"].as_array().unwrap().clone();
    assert_eq!(listed.len(), 4, "{}", r.text());
    assert!(
        listed
            .iter()
            .all(|d| alice.contains(&d["event_id"].as_str().unwrap().to_owned()))
    );
    assert_eq!(
        ids(
            server,
            &format!("{alice_deliveries}&webhook_id={}", hooks[0])
        )
        .len(),
        2
    );
    assert_eq!(
        ids(server, &format!("{alice_deliveries}&status=pending")).len(),
        4
    );
    assert!(ids(server, &format!("{alice_deliveries}&status=failed")).is_empty());
    assert_eq!(
        ids(server, &format!("{alice_deliveries}&event_id={}", alice[0])).len(),
        2
    );
    // Paged: the cursor goes on where the first page stopped.
    let r = server.get(&format!("{alice_deliveries}&limit=3"));
    let first = r.json();
    assert_eq!(first["data"].as_array().unwrap().len(), 3);
    let cursor = first["next_cursor"].as_str().unwrap();
    assert_eq!(
        ids(server, &format!("{alice_deliveries}&cursor={cursor}")).len(),
        1
    );
    // Time: nothing before the events were published, or from tomorrow.
    assert!(
        ids(
            server,
            &format!("{alice_events}&until=2020-01-01T00:00:00Z")
        )
        .is_empty()
    );
    assert!(
        ids(
            server,
            &format!("{alice_deliveries}&since=2999-01-01T00:00:00Z")
        )
        .is_empty()
    );
    // Booleans, and decimal strings as written.
    assert_eq!(
        ids(server, "/api/v1/events?data.fee_paid=true&data.type=super").len(),
        1
    );
    assert!(ids(server, "/api/v1/events?data.fee_paid=false").is_empty());
    assert_eq!(ids(server, "/api/v1/events?data.price=10.00").len(), 1);
    assert!(ids(server, "/api/v1/events?data.consignor_id=nobody").is_empty());
}

#[test]
fn events_and_deliveries_are_found_by_data_status_and_time() {
    let server = Server::start();
    let (alice, hooks) = shop(&server);
    searches_find_what_they_should(&server, &alice, &hooks);
}

#[test]
fn a_search_index_finds_the_same_and_is_dropped_when_no_longer_named() {
    let mut server = Server::start_with(&["--search-index", "data.consignor_id,data.item_id"]);
    assert!(
        server
            .log()
            .contains("search index on data.consignor_id created"),
        "{}",
        server.log()
    );
    let (alice, hooks) = shop(&server);
    searches_find_what_they_should(&server, &alice, &hooks);
    server.restart_with(&["--pause-delivery", "--search-index", "data.consignor_id"]);
    assert!(
        server
            .log()
            .contains("dropped: --search-index no longer names it"),
        "{}",
        server.log()
    );
    searches_find_what_they_should(&server, &alice, &hooks);
}

#[test]
fn malformed_searches_are_refused_naming_the_parameter() {
    let server = Server::start();
    for (query, field) in [
        ("data.=x", "data."),
        ("data.a'b=x", "data.a'b"),
        ("data.a=x&until=yesterday", "until"),
        ("data.a=x&after=evt_00000000000000000000000000", "after"),
    ] {
        let r = server.get(&format!("/api/v1/events?{query}"));
        assert_eq!(r.status, 422, "{query}: {}", r.text());
        assert_eq!(r.json()["error"]["details"][0]["field"], field, "{query}");
    }
    let r = server.get("/api/v1/deliveries?data.a%20b=x");
    assert_eq!(r.status, 422, "{}", r.text());
    let out = std::process::Command::new(util::BIN)
        .args(["serve", "--search-index", "consignor_id", "--db"])
        .arg(server.dir.path().join("other.db"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--search-index consignor_id"));
    assert!(
        !server.dir.path().join("other.db").exists(),
        "refused before the disk"
    );
}
