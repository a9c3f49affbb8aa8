//! Event data arrives as published: the receiver and the event listings get
//! the publisher's `data` text (numbers digit for digit, members in the
//! order sent, escapes as written; only whitespace between tokens goes),
//! idempotency compares what was meant rather than how it was spelled,
//! values serde_json cannot hold are a 422 naming them, and validation
//! messages say the form expected.
//!
//! Every test runs the real binary on a real SQLite file; deliveries go to
//! a real receiver on 127.0.0.1. Bodies are sent and compared as bytes:
//! parsing them into `serde_json::Value` would lose the very digits under
//! test.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod util;

use std::time::Duration;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use util::Server;
use util::receiver::{Answer, Receiver};

const EVENTS: &str = "/api/v1/events";
const WAIT: Duration = Duration::from_secs(20);

/// The required fields of an `item.sold`, as JSON text to put first.
const SOLD: &str = r#""item_id":"9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d","sale_price":"10.00","sale_date":"2025-01-21T22:20:56Z""#;

/// A delivering server whose webhooks may target loopback.
fn serve() -> Server {
    Server::delivering(&["--allow-targets", "127.0.0.0/8"])
}

/// Publishes a body given as bytes.
fn publish_raw(server: &Server, body: &str) -> util::Response {
    server.send(
        "POST",
        EVENTS,
        &[("Content-Type", "application/json")],
        Some(body.as_bytes()),
        Some(&server.token),
    )
}

/// Publishes `item.sold` with `data` given as JSON text; returns the id.
fn publish_sold(server: &Server, data: &str) -> String {
    let r = publish_raw(server, &format!(r#"{{"event":"item.sold","data":{data}}}"#));
    assert_eq!(r.status, 202, "{data}: {}", r.text());
    r.json()["id"].as_str().unwrap().to_owned()
}

#[derive(Deserialize)]
struct WithData<'a> {
    #[serde(borrow)]
    data: &'a RawValue,
}

#[derive(Deserialize)]
struct Listed<'a> {
    id: String,
    #[serde(borrow)]
    data: &'a RawValue,
}

#[derive(Deserialize)]
struct List<'a> {
    #[serde(borrow)]
    data: Vec<Listed<'a>>,
}

/// The text of `data` in a JSON body, exactly as it stands there.
fn data_text(body: &[u8]) -> String {
    let text = std::str::from_utf8(body).expect("UTF-8 body");
    serde_json::from_str::<WithData<'_>>(text)
        .unwrap_or_else(|e| panic!("no data in {text}: {e}"))
        .data
        .get()
        .to_owned()
}

/// Each event's `data` text in `GET /api/v1/events`, by id.
fn listed_data(server: &Server) -> Vec<(String, String)> {
    let r = server.get(&format!("{EVENTS}?limit=500"));
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    let list: List<'_> = serde_json::from_str(&text).unwrap();
    list.data
        .into_iter()
        .map(|e| (e.id, e.data.get().to_owned()))
        .collect()
}

/// The `(field, code, message)` of each detail of a 422.
fn details(r: &util::Response) -> Vec<(String, String, String)> {
    r.error(422, "validation_failed");
    r.json()["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let s = |k: &str| d[k].as_str().unwrap_or_default().to_owned();
            (s("field"), s("code"), s("message"))
        })
        .collect()
}

#[test]
fn receivers_and_listings_get_data_digit_for_digit_in_the_order_sent() {
    let cases: Vec<(&str, String)> = vec![
        (
            "integers beyond 64 bits",
            r#""big":123456789012345678901234567890,"u64_plus_2":18446744073709551617,"negative":-98765432109876543210987654321"#.into(),
        ),
        (
            "high-precision decimals and exponents",
            r#""decimal":0.1000000000000000055511151231257827,"pi":3.14159265358979323846264338327950288,"e":1E+2,"tiny":1e-400,"trailing":1.50"#.into(),
        ),
        ("negative zero", r#""zero":-0,"zero_decimal":-0.0"#.into()),
        (
            "members not in sorted order",
            r#""zeta":1,"alpha":2,"Mid":3,"_x":4"#.into(),
        ),
        (
            "nested objects and arrays",
            r#""nested":{"z":[3,2,{"b":1,"a":[1.10,{"y":null,"x":true}]}],"a":{}},"list":[[],[[1e1]]]"#.into(),
        ),
        (
            "string escapes",
            r#""text":"caf\u00e9 \ud83d\ude00 \/ \"q\" \\ \n","raw":"café 😀","esc":"\u0041""#.into(),
        ),
    ];
    let rx = Receiver::start(|_, _| Answer::ok());
    let server = serve();
    let r = server.post(
        "/api/v1/webhooks",
        &json!({"url": rx.url("/hook"), "events": ["item.sold"]}),
    );
    assert_eq!(r.status, 201, "{}", r.text());

    // The case's members come first, then the required ones: the schema
    // validates the parsed copy, whatever the order.
    let sent: Vec<(String, &str, String)> = cases
        .iter()
        .map(|(what, members)| {
            let data = format!("{{{members},{SOLD}}}");
            (publish_sold(&server, &data), *what, data)
        })
        .collect();

    let seen = rx.wait_for(&server, sent.len(), WAIT);
    let listed = listed_data(&server);
    for (id, what, data) in &sent {
        let request = seen
            .iter()
            .find(|s| s.webhook_id() == id)
            .unwrap_or_else(|| panic!("{what}: no delivery of {id}"));
        let body = String::from_utf8(request.body.clone()).unwrap();
        assert_eq!(data_text(&request.body), *data, "{what}: delivered {body}");
        // The envelope around it, byte for byte.
        assert!(body.starts_with(&format!(
            r#"{{"id":"{id}","event":"item.sold","timestamp":""#
        )));
        assert!(
            body.ends_with(&format!(r#","data":{data}}}"#)),
            "{what}: {body}"
        );

        let one = server.get(&format!("{EVENTS}/{id}"));
        assert_eq!(one.status, 200, "{}", one.text());
        assert_eq!(data_text(&one.body), *data, "{what}: GET {}", one.text());
        let (_, in_list) = listed
            .iter()
            .find(|(listed_id, _)| listed_id == id)
            .unwrap_or_else(|| panic!("{what}: {id} not listed"));
        assert_eq!(in_list, data, "{what}: listed");
    }
}

#[test]
fn whitespace_between_tokens_is_dropped_and_whitespace_inside_strings_kept() {
    let rx = Receiver::start(|_, _| Answer::ok());
    let server = serve();
    let r = server.post(
        "/api/v1/webhooks",
        &json!({"url": rx.url("/hook"), "events": ["*"]}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let pretty = "{\n  \"note\" : \"two  spaces,\\ttab \\\" quote\\\\\" ,\r\n\t\"n\": [ 1.0 , 2 ],\n  \
                  \"item_id\": \"9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d\",\n  \"sale_price\": \"10.00\",\n  \
                  \"sale_date\": \"2025-01-21T22:20:56Z\"\n}";
    let compact = r#"{"note":"two  spaces,\ttab \" quote\\","n":[1.0,2],"item_id":"9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d","sale_price":"10.00","sale_date":"2025-01-21T22:20:56Z"}"#;
    let id = publish_sold(&server, pretty);
    let seen = rx.wait_for(&server, 1, WAIT);
    assert_eq!(seen[0].webhook_id(), id);
    assert_eq!(data_text(&seen[0].body), compact);
    assert_eq!(
        data_text(&server.get(&format!("{EVENTS}/{id}")).body),
        compact
    );
}

#[test]
fn numbers_beyond_the_range_of_a_float_are_422_naming_each_and_nothing_is_stored() {
    let server = Server::start();
    let r = publish_raw(
        &server,
        &format!(
            r#"{{"event":"item.sold","data":{{"huge":1e400,"nested":{{"list":[1,-1E999]}},"fine":1e300,{SOLD}}}}}"#
        ),
    );
    let mut got = details(&r);
    got.sort();
    let fields: Vec<(&str, &str)> = got
        .iter()
        .map(|(f, c, _)| (f.as_str(), c.as_str()))
        .collect();
    assert_eq!(
        fields,
        [
            ("data.huge", "out_of_range"),
            ("data.nested.list[1]", "out_of_range")
        ],
        "{}",
        r.text()
    );
    assert!(got[0].2.contains("send it as a string"), "{got:?}");

    // Elsewhere in the body, the same: a 422 for that field, not a 400/500.
    let r = publish_raw(
        &server,
        &format!(r#"{{"event":"item.sold","data":{{{SOLD}}},"extra":1e400}}"#),
    );
    assert_eq!(details(&r)[0].0, "extra", "{}", r.text());
    // A lone surrogate escape is valid JSON text but no string.
    let r = publish_raw(
        &server,
        &format!(r#"{{"event":"item.sold","data":{{"note":["ok","\ud800"],{SOLD}}}}}"#),
    );
    let got = details(&r);
    assert_eq!(
        (got[0].0.as_str(), got[0].1.as_str()),
        ("data.note[1]", "invalid"),
        "{}",
        r.text()
    );
    assert!(listed_data(&server).is_empty());
}

#[test]
fn malformed_or_too_deeply_nested_data_is_still_a_400() {
    let server = Server::start();
    // An unusable number first, then nesting far beyond serde_json's limit
    // (the body is 200 KB, under the 256 KiB limit): the search for the
    // unusable value must not descend level by level.
    let deep = format!(
        r#"{{"event":"item.sold","data":{{"n":1e400,"deep":{}{}}}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let deep_elsewhere = format!(
        r#"{{"event":"item.sold","data":{{{SOLD}}},"x":{}{}}}"#,
        "[".repeat(1000),
        "]".repeat(1000)
    );
    // serde_json parses 127 levels: data 127 deep is accepted, 128 is
    // malformed like anything deeper.
    let nested = |levels: usize| {
        format!(
            r#"{{"event":"item.sold","data":{{{SOLD},"deep":{}{}}}}}"#,
            "[".repeat(levels - 1),
            "]".repeat(levels - 1)
        )
    };
    assert_eq!(publish_raw(&server, &nested(127)).status, 202);
    let at_the_limit = nested(128);
    for body in [
        &at_the_limit,
        r#"{"event":"item.sold","data":{"a":01}}"#,
        r#"{"event":"item.sold","data":{"a":1,}}"#,
        r#"{"event":"item.sold","data":{"a":"x"#,
        r#"{"event":"item.sold","data":{"a":NaN}}"#,
        &deep,
        &deep_elsewhere,
    ] {
        publish_raw(&server, body).error(400, "malformed_json");
    }
    assert_eq!(server.get("/healthz").status, 200);
}

#[test]
fn a_member_named_twice_in_data_is_422_naming_it_and_nothing_is_stored() {
    let server = Server::start();
    // The schema would see only the last sale_price; a receiver that keeps
    // the first would get an unvalidated number.
    for (data, field) in [
        (format!(r#"{{"sale_price":12,{SOLD}}}"#), "data.sale_price"),
        (
            format!(r#"{{{SOLD},"lines":[{{"sku":"a"}},{{"sku":"b","sku":"c"}}]}}"#),
            "data.lines[1].sku",
        ),
    ] {
        let r = publish_raw(
            &server,
            &format!(r#"{{"event":"item.sold","data":{data}}}"#),
        );
        let got = details(&r);
        assert!(
            got.iter().any(|(f, c, _)| f == field && c == "duplicate"),
            "{}",
            r.text()
        );
        // Keyed, it is refused just the same (no replay of an earlier one).
        let (status, _) = publish_keyed(&server, "dup", &data);
        assert_eq!(status, 422);
    }
    assert!(listed_data(&server).is_empty());
}

/// Publishes `data` under `key`; returns the status and the event id.
fn publish_keyed(server: &Server, key: &str, data: &str) -> (u16, Value) {
    let r = publish_raw(
        server,
        &format!(r#"{{"event":"item.sold","idempotency_key":"{key}","data":{data}}}"#),
    );
    let id = if r.status < 300 {
        r.json()["id"].clone()
    } else {
        Value::Null
    };
    (r.status, id)
}

#[test]
fn same_key_with_data_differing_only_in_order_spacing_or_escapes_replays_the_original() {
    let server = Server::start();
    let first = format!(r#"{{"n":123456789012345678901234567890,"s":"café",{SOLD}}}"#);
    let (status, id) = publish_keyed(&server, "k1", &first);
    assert_eq!(status, 202);
    for again in [
        first.clone(),
        format!(r#"{{{SOLD},"s":"café","n":123456789012345678901234567890}}"#),
        format!("{{ \"s\" : \"caf\\u00e9\" ,\n {SOLD}, \"n\": 123456789012345678901234567890 }}"),
    ] {
        assert_eq!(
            publish_keyed(&server, "k1", &again),
            (200, id.clone()),
            "{again}"
        );
    }
    // The original text stays the event's data.
    let one = server.get(&format!("{EVENTS}/{}", id.as_str().unwrap()));
    assert_eq!(data_text(&one.body), first);
    assert_eq!(listed_data(&server).len(), 1);
}

#[test]
fn same_key_with_numbers_that_differ_in_any_digit_is_409() {
    let server = Server::start();
    for (key, first, other) in [
        // Equal as 64-bit floats, so equal before data was kept as sent.
        (
            "k-big",
            "123456789012345678901234567890",
            "123456789012345678901234567891",
        ),
        ("k-u64", "18446744073709551617", "18446744073709551616"),
        (
            "k-precise",
            "0.1000000000000000055511151231257827",
            "0.1000000000000000055511151231257828",
        ),
        // The same number written otherwise: receivers would get other digits.
        ("k-written", "1.0", "1.00"),
    ] {
        let data = |n: &str| format!(r#"{{"n":{n},{SOLD}}}"#);
        assert_eq!(publish_keyed(&server, key, &data(first)).0, 202, "{key}");
        let r = publish_raw(
            &server,
            &format!(
                r#"{{"event":"item.sold","idempotency_key":"{key}","data":{}}}"#,
                data(other)
            ),
        );
        r.error(409, "idempotency_conflict");
        assert_eq!(publish_keyed(&server, key, &data(first)).0, 200, "{key}");
    }
}

/// The detail of the 422 for `field`.
fn detail_of(r: &util::Response, field: &str) -> (String, String) {
    details(r)
        .into_iter()
        .find(|(f, _, _)| f == field)
        .map(|(_, code, message)| (code, message))
        .unwrap_or_else(|| panic!("no detail for {field}: {}", r.text()))
}

#[test]
fn a_number_where_a_decimal_string_is_expected_says_the_form_expected() {
    let server = Server::start();
    let item = r#""item_id":"9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d","consignor_id":"7d6f1c2e-8a4b-4c3d-9e5f-0a1b2c3d4e5f","event_id":"3f2a9b8c-1d4e-4f5a-8b6c-7d8e9f0a1b2c","title":"Coat""#;
    for (event, data, field, code) in [
        (
            "item.created",
            format!(r#"{{{item},"price":10}}"#),
            "data.price",
            "type",
        ),
        (
            "item.created",
            format!(r#"{{{item},"price":"12,50"}}"#),
            "data.price",
            "decimal",
        ),
        (
            "item.sold",
            r#"{"item_id":"9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d","sale_price":10.5,"sale_date":"2025-01-21T22:20:56Z"}"#.to_owned(),
            "data.sale_price",
            "type",
        ),
    ] {
        let r = publish_raw(&server, &format!(r#"{{"event":"{event}","data":{data}}}"#));
        let (got_code, message) = detail_of(&r, field);
        assert_eq!(got_code, code, "{data}");
        assert!(
            message.starts_with(r#"must be a decimal string such as "10.00""#),
            "{data}: {message}"
        );
    }
}

#[test]
fn a_date_without_t_or_a_number_for_a_date_says_rfc3339_with_an_example() {
    let server = Server::start();
    for (sale_date, code) in [
        (r#""2025-01-21 22:20:56Z""#, "format"),
        (r#""2025-01-21""#, "format"),
        ("1737498056", "type"),
    ] {
        let data = format!(
            r#"{{"item_id":"9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d","sale_price":"10.00","sale_date":{sale_date}}}"#
        );
        let r = publish_raw(
            &server,
            &format!(r#"{{"event":"item.sold","data":{data}}}"#),
        );
        let (got_code, message) = detail_of(&r, "data.sale_date");
        assert_eq!(got_code, code, "{sale_date}");
        assert!(
            message.starts_with(r#"must be an RFC 3339 date-time such as "2025-01-21T22:20:56Z""#),
            "{sale_date}: {message}"
        );
    }
}

#[test]
fn other_type_errors_name_the_expected_and_the_given_type_without_quoting_the_value() {
    let server = Server::start();
    let r = publish_raw(
        &server,
        r#"{"event":"event.registered","data":{"event_id":"3f2a9b8c-1d4e-4f5a-8b6c-7d8e9f0a1b2c","consignor_id":"7d6f1c2e-8a4b-4c3d-9e5f-0a1b2c3d4e5f","type":"regular","fee_paid":"yes"}}"#,
    );
    assert_eq!(
        detail_of(&r, "data.fee_paid"),
        ("type".into(), "must be a boolean, got string".into())
    );
    let r = publish_raw(
        &server,
        r#"{"event":"item.sold","data":{"item_id":12,"sale_price":"10.00","sale_date":"2025-01-21T22:20:56Z"}}"#,
    );
    let (code, message) = detail_of(&r, "data.item_id");
    assert_eq!(code, "type");
    assert!(message.starts_with("must be a UUID such as"), "{message}");
}
