//! Retention (SPEC section 7, issue 5): with a tiny `--retention`, old
//! events go with their deliveries and attempts, the file gets its space
//! back, an event whose delivery is still pending stays, and the audit log
//! is kept.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use serde_json::json;
use util::receiver::{Answer, Receiver};
use util::{Server, eventually};

/// Pages in use and pages free, as a reader sees the file right now.
fn pages(server: &Server) -> (i64, i64) {
    let conn = Connection::open_with_flags(server.db(), OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let count: i64 = conn
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .unwrap();
    let free: i64 = conn
        .query_row("PRAGMA freelist_count", [], |r| r.get(0))
        .unwrap();
    (count, free)
}

fn event_ids(server: &Server) -> Vec<String> {
    server.ids("/api/v1/events?limit=500")
}

#[test]
fn old_events_are_pruned_with_their_deliveries_and_the_space_is_reused_but_pending_ones_stay() {
    let down = Receiver::start(|_, _| Answer::status(500));
    let ok = Receiver::start(|_, _| Answer::ok());
    let server = Server::delivering(&[
        "--allow-targets",
        "127.0.0.0/8",
        "--retention",
        "3s",
        "--retry-base-delay",
        "1h",
        "--max-attempts",
        "10",
    ]);
    // One webhook that takes everything, one that never succeeds (its
    // delivery stays pending for an hour).
    let r = server.post(
        "/api/v1/webhooks",
        &json!({"url": ok.url("/ok"), "events": ["item.created"]}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let r = server.post(
        "/api/v1/webhooks",
        &json!({"url": down.url("/down"), "events": ["item.sold"]}),
    );
    assert_eq!(r.status, 201, "{}", r.text());

    // About 2 MB of events that will all be delivered.
    let mut data = util::seed("item.created");
    data["notes"] = json!("x".repeat(20_000));
    for _ in 0..100 {
        let r = server.post(
            "/api/v1/events",
            &json!({"event": "item.created", "data": data}),
        );
        assert_eq!(r.status, 202, "{}", r.text());
    }
    let held = server.post(
        "/api/v1/events",
        &json!({"event": "item.sold", "data": util::seed("item.sold")}),
    );
    assert_eq!(held.status, 202, "{}", held.text());
    let held = held.json()["id"].as_str().unwrap().to_owned();
    let (full, _) = pages(&server);
    assert!(full > 400, "the events take space: {full} pages");
    ok.wait_for(&server, 100, Duration::from_secs(20));

    // Once they are older than 3 s, the delivered events go; the one whose
    // delivery is still pending stays.
    eventually(
        &server,
        Duration::from_secs(20),
        || format!("pruning to leave only {held}: {:?}", event_ids(&server)),
        || (event_ids(&server) == [held.clone()]).then_some(()),
    );
    let d = server
        .get(&format!("/api/v1/deliveries?event_id={held}"))
        .json();
    assert_eq!(d["data"][0]["status"], "pending", "{d}");
    let listed = server.get("/api/v1/deliveries?limit=500").json();
    assert_eq!(
        listed["data"].as_array().unwrap().len(),
        1,
        "the pruned events' deliveries went with them: {listed}"
    );

    // The space went back to the file system, not to a free list.
    let (now, free) = pages(&server);
    assert!(now < full / 4, "{now} pages left of {full}");
    assert!(free < 50, "{free} pages left on the free list");

    // The audit log is kept for a year.
    let audit = server
        .get("/api/v1/audit-log?action=webhook.created")
        .json();
    assert_eq!(audit["data"].as_array().unwrap().len(), 2, "{audit}");
    // Logged when the pass ends, read from stderr by another thread.
    util::wait_for(Duration::from_secs(10), "the pruning to be logged", || {
        server.log().contains("retention: pruned").then_some(())
    });

    // Publishing goes on as before.
    let r = server.post(
        "/api/v1/events",
        &json!({"event": "item.created", "data": util::seed("item.created")}),
    );
    assert_eq!(r.status, 202, "{}", r.text());
}
