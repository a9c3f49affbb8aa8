//! Integration tests of the HTTP API against the real binary: webhooks,
//! event types, events, the error contract and the token CLI (SPEC sections
//! 2 and 3, issue 2).
//!
//! Every test starts its own server on a fresh database, so tests share
//! nothing and run in parallel. Nothing sleeps to synchronise.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::collections::BTreeSet;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use util::{BIN, Response, Server, seed};

const WEBHOOKS: &str = "/api/v1/webhooks";
const EVENTS: &str = "/api/v1/events";
const EVENT_TYPES: &str = "/api/v1/event-types";

/// A well-formed id that no server ever hands out.
const UNKNOWN_WEBHOOK: &str = "wh_00000000000000000000000000";
const UNKNOWN_EVENT: &str = "evt_00000000000000000000000000";

const SEED_NAMES: [&str; 5] = [
    "email.updated",
    "event.registered",
    "item.created",
    "item.sold",
    "profile.created",
];

// ---------------------------------------------------------------- helpers

/// `seed(event)` with `field` set to `value` (or removed when `value` is None).
fn seed_with(event: &str, field: &str, value: Option<Value>) -> Value {
    let mut data = seed(event);
    let map = data.as_object_mut().unwrap();
    match value {
        Some(v) => {
            map.insert(field.to_owned(), v);
        }
        None => {
            assert!(map.remove(field).is_some(), "{event} has no {field}");
        }
    }
    data
}

fn publish(server: &Server, event: &str, data: &Value) -> Response {
    server.post(EVENTS, &json!({"event": event, "data": data}))
}

/// Publishes and asserts 202; returns the summary.
fn published(server: &Server, event: &str, data: &Value) -> Value {
    let r = publish(server, event, data);
    assert_eq!(r.status, 202, "publish {event}: {}", r.text());
    r.json()
}

/// A JSON request with `token` (or none) instead of the admin token.
fn call(
    server: &Server,
    method: &str,
    path: &str,
    body: Option<&Value>,
    token: Option<&str>,
) -> Response {
    let body = body.map(|b| b.to_string().into_bytes());
    server.send(
        method,
        path,
        &[("Content-Type", "application/json")],
        body.as_deref(),
        token,
    )
}

fn patch(server: &Server, id: &str, body: &Value) -> Response {
    server.request("PATCH", &format!("{WEBHOOKS}/{id}"), Some(body))
}

fn delete(server: &Server, id: &str) -> Response {
    server.request("DELETE", &format!("{WEBHOOKS}/{id}"), None)
}

fn create_webhook_body(server: &Server, body: &Value) -> Response {
    server.post(WEBHOOKS, body)
}

fn webhook_with_url(server: &Server, url: &str) -> Response {
    server.post(WEBHOOKS, &json!({"url": url, "events": ["*"]}))
}

fn webhook_with_events(server: &Server, events: Value) -> Response {
    server.post(
        WEBHOOKS,
        &json!({"url": "https://93.184.216.34/hook", "events": events}),
    )
}

/// Asserts a 422 `validation_failed` whose details name exactly `fields`,
/// in any order, each with a code and a message.
fn assert_invalid(r: &Response, fields: &[&str], context: &str) {
    assert_eq!(r.status, 422, "{context}: {}", r.text());
    r.error(422, "validation_failed");
    let body = r.json();
    for detail in body["error"]["details"].as_array().unwrap() {
        assert!(
            detail["code"].as_str().is_some_and(|c| !c.is_empty()),
            "{context}: detail without code: {body}"
        );
        assert!(
            detail["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{context}: detail without message: {body}"
        );
    }
    let got: BTreeSet<String> = r.error_fields().into_iter().collect();
    let want: BTreeSet<String> = fields.iter().map(|f| f.to_string()).collect();
    assert_eq!(got, want, "{context}: {body}");
}

/// Asserts a 422 whose details name at least `fields`.
fn assert_invalid_includes(r: &Response, fields: &[&str], context: &str) {
    assert_eq!(r.status, 422, "{context}: {}", r.text());
    r.error(422, "validation_failed");
    let got = r.error_fields();
    for field in fields {
        assert!(
            got.iter().any(|g| g == field),
            "{context}: {field} not in {got:?}: {}",
            r.text()
        );
    }
}

/// The detail for `field` of a 422.
fn detail(r: &Response, field: &str) -> Value {
    r.json()["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["field"] == field)
        .cloned()
        .unwrap_or_else(|| panic!("no detail for {field}: {}", r.text()))
}

/// GET /api/v1/events/{id}, asserting 200.
fn get_event(server: &Server, id: &str) -> Value {
    let r = server.get(&format!("{EVENTS}/{id}"));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// The webhook ids the event's deliveries go to, each asserted pending.
fn pending_delivery_targets(server: &Server, event_id: &str) -> BTreeSet<String> {
    let event = get_event(server, event_id);
    let deliveries = event["deliveries"]
        .as_array()
        .unwrap_or_else(|| panic!("deliveries is not an array: {event}"));
    deliveries
        .iter()
        .map(|d| {
            assert_eq!(d["status"], "pending", "{event}");
            assert_eq!(d["event_id"], event_id, "{event}");
            assert!(d["id"].as_str().unwrap().starts_with("dlv_"), "{event}");
            assert!(
                is_rfc3339_utc(d["created_at"].as_str().unwrap_or_default()),
                "{event}"
            );
            d["webhook_id"].as_str().unwrap().to_owned()
        })
        .collect()
}

/// Walks a list endpoint page by page; returns every item in order and the
/// number of pages.
fn walk(server: &Server, path: &str, limit: usize) -> (Vec<Value>, usize) {
    let sep = if path.contains('?') { '&' } else { '?' };
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let url = match &cursor {
            Some(c) => format!("{path}{sep}limit={limit}&cursor={c}"),
            None => format!("{path}{sep}limit={limit}"),
        };
        let r = server.get(&url);
        assert_eq!(r.status, 200, "{url}: {}", r.text());
        let body = r.json();
        let page = body["data"].as_array().unwrap();
        assert!(page.len() <= limit, "{url}: {body}");
        pages += 1;
        items.extend(page.iter().cloned());
        match &body["next_cursor"] {
            Value::Null => break,
            Value::String(next) => {
                assert_eq!(page.len(), limit, "a short page has a cursor: {body}");
                cursor = Some(next.clone());
            }
            other => panic!("next_cursor is {other}"),
        }
        assert!(pages < 100, "pagination does not end");
    }
    (items, pages)
}

fn ids(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect()
}

fn event_ids(server: &Server, query: &str) -> Vec<String> {
    let r = server.get(&format!("{EVENTS}{query}"));
    assert_eq!(r.status, 200, "{query}: {}", r.text());
    let body = r.json();
    assert!(body["next_cursor"].is_null(), "{body}");
    ids(body["data"].as_array().unwrap())
}

fn is_rfc3339_utc(text: &str) -> bool {
    text.ends_with('Z') && OffsetDateTime::parse(text, &Rfc3339).is_ok()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn rfc3339_ms(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap()
        .format(&Rfc3339)
        .unwrap()
}

/// Runs `hookbox ARGS --db <the server's db>`.
fn cli(server: &Server, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .arg("--db")
        .arg(server.db())
        .output()
        .expect("running hookbox")
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// `hookbox token create --name NAME --scope SCOPE`; returns the token.
fn create_token(server: &Server, name: &str, scope: &str) -> String {
    let out = cli(
        server,
        &["token", "create", "--name", name, "--scope", scope],
    );
    assert!(
        out.status.success(),
        "token create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout(&out).lines().last().unwrap().trim().to_owned()
}

/// The `token list` line of the token named `name`.
fn token_line(server: &Server, name: &str) -> Option<String> {
    let out = cli(server, &["token", "list"]);
    assert!(
        out.status.success(),
        "token list: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout(&out)
        .lines()
        .find(|line| line.split_whitespace().any(|field| field == name))
        .map(str::to_owned)
}

fn token_id(server: &Server, name: &str) -> String {
    let line = token_line(server, name).unwrap_or_else(|| panic!("{name} not listed"));
    line.split_whitespace()
        .find(|f| f.starts_with("tok_"))
        .unwrap_or_else(|| panic!("no tok_ id in {line:?}"))
        .to_owned()
}

// ------------------------------------------------------- webhooks: create

#[test]
fn seed_registration_body_is_accepted_verbatim_with_201_location_and_secret() {
    let server = Server::start();
    let body = json!({
        "url": "https://your-domain.com/webhook",
        "events": ["email.updated", "profile.created"],
        "secret": "your-secret-key"
    });
    let r = create_webhook_body(&server, &body);
    assert_eq!(r.status, 201, "{}", r.text());
    let webhook = r.json();
    let id = webhook["id"].as_str().unwrap();
    assert!(id.starts_with("wh_"), "{webhook}");
    assert_eq!(
        r.header("Location"),
        Some(format!("{WEBHOOKS}/{id}").as_str())
    );
    assert_eq!(webhook["secret"], "your-secret-key");
    assert_eq!(webhook["url"], "https://your-domain.com/webhook");
    assert_eq!(
        webhook["events"],
        json!(["email.updated", "profile.created"])
    );
    assert_eq!(webhook["enabled"], true);
    assert!(webhook["disabled_reason"].is_null(), "{webhook}");
    assert!(is_rfc3339_utc(webhook["created_at"].as_str().unwrap()));
    // The Location header leads to the webhook.
    let got = server.get(r.header("Location").unwrap());
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json()["id"], id);
}

#[test]
fn webhook_created_without_secret_gets_whsec_of_32_random_bytes() {
    let server = Server::start();
    let mut secrets = BTreeSet::new();
    for _ in 0..2 {
        let webhook = server.create_webhook(&["*"]);
        let secret = webhook["secret"].as_str().unwrap().to_owned();
        let encoded = secret
            .strip_prefix("whsec_")
            .unwrap_or_else(|| panic!("secret {secret} lacks whsec_"));
        let key = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap_or_else(|e| panic!("{secret} is not whsec_ + base64: {e}"));
        assert_eq!(key.len(), 32, "{secret}");
        secrets.insert(secret);
    }
    assert_eq!(secrets.len(), 2, "two webhooks got the same secret");
}

#[test]
fn webhook_optional_fields_are_stored_and_echoed() {
    let server = Server::start();
    let r = create_webhook_body(
        &server,
        &json!({
            "url": "https://93.184.216.34/hook",
            "events": ["item.*"],
            "description": "the shop's ERP",
            "max_attempts": 7,
            "rate_limit_per_s": 20,
            "enabled": true,
            "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
        }),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let got = server.get(&format!("{WEBHOOKS}/{id}")).json();
    assert_eq!(got["description"], "the shop's ERP");
    assert_eq!(got["max_attempts"], 7);
    assert_eq!(got["rate_limit_per_s"], 20);
    assert_eq!(got["enabled"], true);
    assert_eq!(got["events"], json!(["item.*"]));
}

#[test]
fn webhook_created_disabled_says_why() {
    let server = Server::start();
    let r = create_webhook_body(
        &server,
        &json!({"url": "https://93.184.216.34/hook", "events": ["*"], "enabled": false}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let webhook = r.json();
    assert_eq!(webhook["enabled"], false);
    assert!(
        webhook["disabled_reason"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "{webhook}"
    );
}

// --------------------------------------------------- webhooks: validation

#[test]
fn webhook_url_must_be_absolute_http_or_https_without_user_info() {
    let server = Server::start();
    for url in [
        "",
        "/webhook",
        "your-domain.com/webhook",
        "ftp://example.com/hook",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "https://user:pass@93.184.216.34/hook",
        "https://user@93.184.216.34/hook",
        "https://93.184.216.34:99999/hook",
    ] {
        assert_invalid(&webhook_with_url(&server, url), &["url"], url);
    }
    assert_eq!(server.get(WEBHOOKS).json()["data"], json!([]));
}

#[test]
fn webhook_url_pointing_at_a_non_public_address_is_422() {
    let server = Server::start();
    for url in [
        "http://127.0.0.1/hook",
        "http://127.0.0.1:9/x",
        "http://localhost/hook",
        "http://LOCALHOST:8080/hook",
        "http://2130706433/",
        "http://0x7f.0.0.1/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://192.168.1.10/hook",
        "http://0.0.0.0/",
    ] {
        assert_invalid(&webhook_with_url(&server, url), &["url"], url);
    }
}

#[test]
fn webhook_url_with_a_host_that_does_not_resolve_yet_is_accepted() {
    let server = Server::start();
    for url in [
        "https://not-yet-registered.invalid/hook",
        "http://93.184.216.34:8080/a?b=c",
        "https://93.184.216.34/x",
    ] {
        let r = webhook_with_url(&server, url);
        assert_eq!(r.status, 201, "{url}: {}", r.text());
    }
}

#[test]
fn allow_targets_flag_makes_loopback_webhook_urls_acceptable() {
    let server = Server::start_with(&["--allow-targets", "127.0.0.0/8"]);
    for url in ["http://127.0.0.1:9/x", "http://localhost:9/x"] {
        let r = webhook_with_url(&server, url);
        assert_eq!(r.status, 201, "{url}: {}", r.text());
    }
    // Only the listed range opens up.
    for url in [
        "http://10.0.0.1/x",
        "http://169.254.169.254/",
        "http://[::1]/",
    ] {
        assert_invalid(&webhook_with_url(&server, url), &["url"], url);
    }
}

#[test]
fn webhook_events_must_name_known_types_or_wildcards() {
    let server = Server::start();
    let cases: &[(Value, &[&str])] = &[
        (json!(["nope"]), &["events[0]"]),
        (json!(["item.gone"]), &["events[0]"]),
        (json!(["nope.*"]), &["events[0]"]),
        (json!(["item*"]), &["events[0]"]),
        (json!([".*"]), &["events[0]"]),
        (json!(["item.sold", "nope.*"]), &["events[1]"]),
        (
            json!(["nope", "item.sold", "zip.*"]),
            &["events[0]", "events[2]"],
        ),
        (json!([]), &["events"]),
        (json!("item.sold"), &["events"]),
        (json!(null), &["events"]),
        (json!([5]), &["events[0]"]),
    ];
    for (events, fields) in cases {
        assert_invalid(
            &webhook_with_events(&server, events.clone()),
            fields,
            &events.to_string(),
        );
    }
}

#[test]
fn webhook_events_accept_star_prefix_wildcards_and_exact_names() {
    let server = Server::start();
    for events in [
        json!(["*"]),
        json!(["item.*"]),
        json!(["email.updated", "profile.created"]),
        json!(["event.registered", "item.*"]),
    ] {
        let r = webhook_with_events(&server, events.clone());
        assert_eq!(r.status, 201, "{events}: {}", r.text());
        assert_eq!(r.json()["events"], events);
    }
}

#[test]
fn webhook_without_url_or_events_is_422_naming_each() {
    let server = Server::start();
    assert_invalid(
        &create_webhook_body(&server, &json!({"events": ["*"]})),
        &["url"],
        "no url",
    );
    assert_invalid(
        &create_webhook_body(&server, &json!({"url": "https://93.184.216.34/hook"})),
        &["events"],
        "no events",
    );
    assert_invalid(
        &create_webhook_body(&server, &json!({})),
        &["url", "events"],
        "empty object",
    );
}

#[test]
fn webhook_fields_of_the_wrong_type_are_each_named() {
    let server = Server::start();
    let r = create_webhook_body(
        &server,
        &json!({
            "url": 5,
            "events": {"item.sold": true},
            "description": 5,
            "enabled": "yes",
            "max_attempts": "3",
            "rate_limit_per_s": true,
            "secret": 12345678
        }),
    );
    assert_invalid(
        &r,
        &[
            "url",
            "events",
            "description",
            "enabled",
            "max_attempts",
            "rate_limit_per_s",
            "secret",
        ],
        "wrong types",
    );
}

#[test]
fn webhook_with_an_unknown_field_is_422_naming_it() {
    let server = Server::start();
    let r = create_webhook_body(
        &server,
        &json!({"url": "https://93.184.216.34/hook", "events": ["*"], "secrte": "typo-typo-typo"}),
    );
    assert_invalid(&r, &["secrte"], "unknown field");
    assert_eq!(detail(&r, "secrte")["code"], "unknown_field");
}

#[test]
fn webhook_max_attempts_must_be_a_whole_number_from_1_to_100() {
    let server = Server::start();
    for bad in [json!(0), json!(101), json!(-1), json!(2.5), json!(1e10)] {
        let r = create_webhook_body(
            &server,
            &json!({"url": "https://93.184.216.34/hook", "events": ["*"], "max_attempts": bad}),
        );
        assert_invalid(&r, &["max_attempts"], &bad.to_string());
    }
    for good in [1, 100] {
        let r = create_webhook_body(
            &server,
            &json!({"url": "https://93.184.216.34/hook", "events": ["*"], "max_attempts": good}),
        );
        assert_eq!(r.status, 201, "{good}: {}", r.text());
        assert_eq!(r.json()["max_attempts"], good);
    }
    let r = create_webhook_body(
        &server,
        &json!({"url": "https://93.184.216.34/hook", "events": ["*"], "rate_limit_per_s": 0}),
    );
    assert_invalid(&r, &["rate_limit_per_s"], "rate 0");
}

#[test]
fn webhook_secret_that_is_short_or_malformed_is_422() {
    let server = Server::start();
    let short_key = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode([7u8; 8])
    );
    for secret in [
        "short",
        "",
        "has spaces in it",
        "whsec_!!!not-base64!!!",
        short_key.as_str(),
    ] {
        let r = create_webhook_body(
            &server,
            &json!({"url": "https://93.184.216.34/hook", "events": ["*"], "secret": secret}),
        );
        assert_invalid(&r, &["secret"], secret);
        assert!(
            secret.is_empty() || !r.text().contains(secret),
            "the error echoes the secret: {}",
            r.text()
        );
    }
}

#[test]
fn webhook_create_reports_every_bad_field_in_one_response() {
    let server = Server::start();
    let r = create_webhook_body(
        &server,
        &json!({
            "url": "ftp://example.com/",
            "events": ["item.sold", "nope"],
            "secret": "short",
            "max_attempts": 0,
            "colour": "blue"
        }),
    );
    assert_invalid(
        &r,
        &["url", "events[1]", "secret", "max_attempts", "colour"],
        "five faults",
    );
}

// ------------------------------------------------- webhooks: list and get

#[test]
fn webhook_secret_is_never_shown_by_get_list_or_patch() {
    let server = Server::start();
    let id = server.webhook_id(&["*"]);
    let got = server.get(&format!("{WEBHOOKS}/{id}"));
    assert_eq!(got.status, 200, "{}", got.text());
    let got = got.json();
    assert_eq!(got["id"], id);
    assert!(got.get("secret").is_none(), "GET shows the secret: {got}");
    let list = server.get(WEBHOOKS).json();
    let data = list["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "{list}");
    assert!(
        data[0].get("secret").is_none(),
        "list shows the secret: {list}"
    );
    let patched = patch(&server, &id, &json!({"description": "x"}));
    assert_eq!(patched.status, 200, "{}", patched.text());
    assert!(
        patched.json().get("secret").is_none(),
        "PATCH shows the secret"
    );
}

#[test]
fn webhook_list_pages_newest_first_with_limit_and_next_cursor() {
    let server = Server::start();
    let created: Vec<String> = (0..5).map(|_| server.webhook_id(&["*"])).collect();
    let (items, pages) = walk(&server, WEBHOOKS, 2);
    assert_eq!(pages, 3);
    let mut newest_first = created.clone();
    newest_first.reverse();
    assert_eq!(ids(&items), newest_first);

    let all = server.get(WEBHOOKS).json();
    assert_eq!(all["data"].as_array().unwrap().len(), 5);
    assert!(all["next_cursor"].is_null(), "{all}");
    let max = server.get(&format!("{WEBHOOKS}?limit=500"));
    assert_eq!(max.status, 200, "{}", max.text());
    assert_eq!(max.json()["data"].as_array().unwrap().len(), 5);
    // A page that holds exactly the rest has no cursor.
    let exact = server.get(&format!("{WEBHOOKS}?limit=5")).json();
    assert!(exact["next_cursor"].is_null(), "{exact}");
}

#[test]
fn webhook_list_with_invalid_limit_or_cursor_is_422() {
    let server = Server::start();
    server.create_webhook(&["*"]);
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=-1", "limit"),
        ("limit=ten", "limit"),
        ("limit=", "limit"),
        ("cursor=garbage", "cursor"),
        ("cursor=evt_00000000000000000000000000", "cursor"),
    ] {
        let r = server.get(&format!("{WEBHOOKS}?{query}"));
        assert_invalid(&r, &[field], query);
    }
}

#[test]
fn get_of_an_unknown_webhook_is_404() {
    let server = Server::start();
    for id in [
        UNKNOWN_WEBHOOK,
        "wh_x",
        "nope",
        "evt_00000000000000000000000000",
    ] {
        server
            .get(&format!("{WEBHOOKS}/{id}"))
            .error(404, "not_found");
    }
}

// ----------------------------------------------------------- webhooks: PATCH

#[test]
fn patch_changes_each_webhook_field_and_nothing_else() {
    let server = Server::start();
    let original = server.create_webhook(&["*"]);
    let id = original["id"].as_str().unwrap();
    let changes = [
        ("url", json!("https://93.184.216.35/new")),
        ("events", json!(["item.sold"])),
        ("description", json!("renamed")),
        ("max_attempts", json!(9)),
        ("rate_limit_per_s", json!(50)),
        ("enabled", json!(false)),
    ];
    let mut expected = original.clone();
    expected.as_object_mut().unwrap().remove("secret");
    for (field, value) in changes {
        let r = patch(&server, id, &json!({ field: value }));
        assert_eq!(r.status, 200, "{field}: {}", r.text());
        expected[field] = value.clone();
        let got = server.get(&format!("{WEBHOOKS}/{id}")).json();
        for key in [
            "id",
            "url",
            "events",
            "description",
            "max_attempts",
            "rate_limit_per_s",
            "enabled",
            "created_at",
        ] {
            assert_eq!(
                got[key], expected[key],
                "after PATCH {field}: {key} in {got}"
            );
        }
        assert_eq!(r.json()[field], value, "PATCH response for {field}");
    }
}

#[test]
fn patch_with_secret_is_422_and_changes_nothing() {
    let server = Server::start();
    let id = server.webhook_id(&["*"]);
    let r = patch(
        &server,
        &id,
        &json!({"secret": "another-secret-key", "description": "should not stick"}),
    );
    assert_invalid(&r, &["secret"], "secret in PATCH");
    assert!(!r.text().contains("another-secret-key"), "{}", r.text());
    let got = server.get(&format!("{WEBHOOKS}/{id}")).json();
    assert_eq!(got["description"], "", "{got}");
}

#[test]
fn patch_max_attempts_null_clears_it() {
    let server = Server::start();
    let r = create_webhook_body(
        &server,
        &json!({"url": "https://93.184.216.34/hook", "events": ["*"], "max_attempts": 5, "rate_limit_per_s": 3}),
    );
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let r = patch(&server, &id, &json!({"max_attempts": null}));
    assert_eq!(r.status, 200, "{}", r.text());
    let got = server.get(&format!("{WEBHOOKS}/{id}")).json();
    assert!(got["max_attempts"].is_null(), "{got}");
    assert_eq!(got["rate_limit_per_s"], 3, "{got}");
}

#[test]
fn patch_enabled_false_sets_disabled_reason_and_true_clears_it() {
    let server = Server::start();
    let id = server.webhook_id(&["*"]);
    let r = patch(&server, &id, &json!({"enabled": false}));
    assert_eq!(r.status, 200, "{}", r.text());
    let got = server.get(&format!("{WEBHOOKS}/{id}")).json();
    assert_eq!(got["enabled"], false);
    assert!(
        got["disabled_reason"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "{got}"
    );
    let r = patch(&server, &id, &json!({"enabled": true}));
    assert_eq!(r.status, 200, "{}", r.text());
    let got = server.get(&format!("{WEBHOOKS}/{id}")).json();
    assert_eq!(got["enabled"], true);
    assert!(got["disabled_reason"].is_null(), "{got}");
}

#[test]
fn patch_validates_fields_like_create() {
    let server = Server::start();
    let id = server.webhook_id(&["*"]);
    let cases: &[(Value, &[&str])] = &[
        (json!({"url": "http://localhost/"}), &["url"]),
        (json!({"url": "/relative"}), &["url"]),
        (json!({"events": []}), &["events"]),
        (json!({"events": ["nope.*"]}), &["events[0]"]),
        (json!({"max_attempts": 0}), &["max_attempts"]),
        (json!({"enabled": "no"}), &["enabled"]),
        (json!({"colour": "blue"}), &["colour"]),
        (
            json!({"url": "ftp://x/", "events": ["nope"], "max_attempts": 101}),
            &["url", "events[0]", "max_attempts"],
        ),
    ];
    for (body, fields) in cases {
        assert_invalid(&patch(&server, &id, body), fields, &body.to_string());
    }
    let got = server.get(&format!("{WEBHOOKS}/{id}")).json();
    assert_eq!(got["url"], "https://93.184.216.34/hook");
    assert_eq!(got["events"], json!(["*"]));
}

#[test]
fn patch_of_an_unknown_webhook_is_404() {
    let server = Server::start();
    for id in [UNKNOWN_WEBHOOK, "wh_x"] {
        patch(&server, id, &json!({"description": "x"})).error(404, "not_found");
    }
}

#[test]
fn patched_event_filter_changes_which_events_get_deliveries() {
    let server = Server::start();
    let id = server.webhook_id(&["item.*"]);
    assert_eq!(
        published(&server, "item.sold", &seed("item.sold"))["deliveries"],
        1
    );
    let r = patch(&server, &id, &json!({"events": ["profile.created"]}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        published(&server, "item.sold", &seed("item.sold"))["deliveries"],
        0
    );
    let evt = published(&server, "profile.created", &seed("profile.created"));
    assert_eq!(evt["deliveries"], 1);
    assert_eq!(
        pending_delivery_targets(&server, evt["id"].as_str().unwrap()),
        BTreeSet::from([id])
    );
}

// ---------------------------------------------------------- webhooks: DELETE

#[test]
fn delete_webhook_is_204_then_404_and_gone_from_the_list() {
    let server = Server::start();
    let keep = server.webhook_id(&["*"]);
    let gone = server.webhook_id(&["*"]);
    let r = delete(&server, &gone);
    assert_eq!(r.status, 204, "{}", r.text());
    assert!(r.body.is_empty(), "{}", r.text());
    server
        .get(&format!("{WEBHOOKS}/{gone}"))
        .error(404, "not_found");
    assert_eq!(
        ids(server.get(WEBHOOKS).json()["data"].as_array().unwrap()),
        [keep]
    );
    delete(&server, &gone).error(404, "not_found");
    patch(&server, &gone, &json!({"description": "x"})).error(404, "not_found");
    delete(&server, UNKNOWN_WEBHOOK).error(404, "not_found");
}

#[test]
fn deleted_webhook_gets_no_delivery_for_later_events() {
    let server = Server::start();
    let keep = server.webhook_id(&["*"]);
    let gone = server.webhook_id(&["*"]);
    assert_eq!(delete(&server, &gone).status, 204);
    let evt = published(&server, "item.sold", &seed("item.sold"));
    assert_eq!(evt["deliveries"], 1, "{evt}");
    assert_eq!(
        pending_delivery_targets(&server, evt["id"].as_str().unwrap()),
        BTreeSet::from([keep])
    );
}

#[test]
fn deleting_a_webhook_cancels_its_pending_deliveries() {
    let server = Server::start();
    let id = server.webhook_id(&["*"]);
    let evt = published(&server, "item.sold", &seed("item.sold"));
    let evt_id = evt["id"].as_str().unwrap();
    assert_eq!(delete(&server, &id).status, 204);
    let event = get_event(&server, evt_id);
    let deliveries = event["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 1, "{event}");
    assert_eq!(deliveries[0]["webhook_id"], id.as_str());
    assert_eq!(deliveries[0]["status"], "cancelled", "{event}");
}

// ------------------------------------------------------ webhooks: filters

#[test]
fn prefix_webhook_gets_item_sold_but_not_profile_created() {
    let server = Server::start();
    let id = server.webhook_id(&["item.*"]);
    let sold = published(&server, "item.sold", &seed("item.sold"));
    assert_eq!(sold["deliveries"], 1, "{sold}");
    assert_eq!(
        pending_delivery_targets(&server, sold["id"].as_str().unwrap()),
        BTreeSet::from([id.clone()])
    );
    let created = published(&server, "item.created", &seed("item.created"));
    assert_eq!(created["deliveries"], 1, "{created}");
    let profile = published(&server, "profile.created", &seed("profile.created"));
    assert_eq!(profile["deliveries"], 0, "{profile}");
    assert!(
        pending_delivery_targets(&server, profile["id"].as_str().unwrap()).is_empty(),
        "profile.created was delivered to an item.* webhook"
    );
}

#[test]
fn star_webhook_gets_every_event_type() {
    let server = Server::start();
    let id = server.webhook_id(&["*"]);
    for (event, data) in util::seed_examples() {
        let evt = published(&server, event, &data);
        assert_eq!(evt["deliveries"], 1, "{event}: {evt}");
        assert_eq!(
            pending_delivery_targets(&server, evt["id"].as_str().unwrap()),
            BTreeSet::from([id.clone()]),
            "{event}"
        );
    }
}

#[test]
fn exact_name_webhook_gets_only_that_event_type() {
    let server = Server::start();
    let id = server.webhook_id(&["email.updated"]);
    for (event, data) in util::seed_examples() {
        let evt = published(&server, event, &data);
        let want = if event == "email.updated" {
            BTreeSet::from([id.clone()])
        } else {
            BTreeSet::new()
        };
        assert_eq!(evt["deliveries"], want.len(), "{event}: {evt}");
        assert_eq!(
            pending_delivery_targets(&server, evt["id"].as_str().unwrap()),
            want,
            "{event}"
        );
    }
}

#[test]
fn event_fans_out_once_to_each_matching_webhook() {
    let server = Server::start();
    let star = server.webhook_id(&["*"]);
    let items = server.webhook_id(&["item.*", "item.sold"]);
    let _profiles = server.create_webhook(&["profile.created"]);
    let evt = published(&server, "item.sold", &seed("item.sold"));
    assert_eq!(evt["deliveries"], 2, "{evt}");
    assert_eq!(
        pending_delivery_targets(&server, evt["id"].as_str().unwrap()),
        BTreeSet::from([star, items])
    );
}

// ------------------------------------------------------------- event types

#[test]
fn event_types_list_the_five_seed_types_with_schema_description_and_example() {
    let server = Server::start();
    let r = server.get(EVENT_TYPES);
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    let types = body["data"].as_array().unwrap();
    let names: BTreeSet<&str> = types.iter().map(|t| t["name"].as_str().unwrap()).collect();
    // The seed's five, and hookbox's own alert event.
    let mut expected = BTreeSet::from(SEED_NAMES);
    expected.insert("hookbox.alert");
    assert_eq!(names, expected, "{body}");
    assert!(body["next_cursor"].is_null(), "{body}");
    for t in types {
        assert_eq!(
            t["schema"]["$schema"], "https://json-schema.org/draft/2020-12/schema",
            "{t}"
        );
        assert_eq!(t["schema"]["type"], "object", "{t}");
        assert!(
            t["description"].as_str().is_some_and(|d| !d.is_empty()),
            "{t}"
        );
        assert!(t["example"].is_object(), "{t}");
    }
}

#[test]
fn event_type_schemas_declare_the_seed_field_formats() {
    let server = Server::start();
    let body = server.get(EVENT_TYPES).json();
    let schema = |name: &str| {
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .unwrap()["schema"]
            .clone()
    };
    let sold = schema("item.sold");
    assert_eq!(sold["properties"]["item_id"]["format"], "uuid");
    assert_eq!(sold["properties"]["sale_date"]["format"], "date-time");
    assert_eq!(sold["properties"]["sale_price"]["type"], "string");
    let registered = schema("event.registered");
    assert_eq!(
        registered["properties"]["type"]["enum"],
        json!(["regular", "super"])
    );
    assert_eq!(registered["properties"]["fee_paid"]["type"], "boolean");
    let email = schema("email.updated");
    assert_eq!(
        email["properties"]["sync_status"]["enum"],
        json!(["pending", "completed", "failed"])
    );
}

#[test]
fn every_catalog_example_is_accepted_by_publish() {
    let server = Server::start();
    let body = server.get(EVENT_TYPES).json();
    for t in body["data"].as_array().unwrap() {
        let name = t["name"].as_str().unwrap();
        let r = publish(&server, name, &t["example"]);
        if name.starts_with("hookbox.") {
            // Listed so webhooks can subscribe; only hookbox publishes it.
            assert_invalid(&r, &["event"], name);
            continue;
        }
        assert_eq!(r.status, 202, "{name} example refused: {}", r.text());
    }
}

#[test]
fn custom_event_type_is_created_and_published_data_is_validated_against_its_schema() {
    let server = Server::start();
    let schema = json!({
        "type": "object",
        "properties": {
            "payout_id": {"type": "string", "format": "uuid"},
            "amount": {"type": "string", "pattern": "^[0-9]+\\.[0-9]{2}$"}
        },
        "required": ["payout_id", "amount"]
    });
    let r = server.post(
        EVENT_TYPES,
        &json!({"name": "payout.created", "description": "A payout was made.", "schema": schema}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["name"], "payout.created");
    let listed = server.get(EVENT_TYPES).json();
    let custom = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "payout.created")
        .cloned()
        .unwrap_or_else(|| panic!("custom type not listed: {listed}"));
    assert_eq!(custom["description"], "A payout was made.");
    assert_eq!(custom["schema"], schema);

    let bad = publish(
        &server,
        "payout.created",
        &json!({"payout_id": "nope", "amount": 12.5}),
    );
    assert_invalid(&bad, &["data.payout_id", "data.amount"], "custom schema");
    assert_invalid(
        &publish(&server, "payout.created", &json!({"amount": "1.00"})),
        &["data.payout_id"],
        "custom required",
    );
    let good = publish(
        &server,
        "payout.created",
        &json!({"payout_id": "7d6f1c2e-8a4b-4c3d-9e5f-0a1b2c3d4e5f", "amount": "12.50"}),
    );
    assert_eq!(good.status, 202, "{}", good.text());
    assert_eq!(good.json()["event"], "payout.created");
}

#[test]
fn custom_event_type_with_an_existing_name_is_409() {
    let server = Server::start();
    let body = json!({"name": "payout.created"});
    assert_eq!(server.post(EVENT_TYPES, &body).status, 201);
    server.post(EVENT_TYPES, &body).error(409, "already_exists");
}

#[test]
fn custom_event_type_with_a_built_in_name_is_409() {
    let server = Server::start();
    for name in SEED_NAMES {
        server
            .post(
                EVENT_TYPES,
                &json!({"name": name, "schema": {"type": "object"}}),
            )
            .error(409, "already_exists");
    }
    // The built-in schema still applies.
    assert_invalid(
        &publish(&server, "item.sold", &json!({})),
        &["data.item_id", "data.sale_price", "data.sale_date"],
        "built-in kept",
    );
}

#[test]
fn custom_event_type_with_an_invalid_name_is_422() {
    let server = Server::start();
    for name in [
        json!(""),
        json!("payout"),
        json!("Payout.created"),
        json!("payout..created"),
        json!(".created"),
        json!("payout.created!"),
        json!("payout created"),
        json!("hookbox.alert"),
        json!("payout.*"),
        json!(5),
        json!(null),
        json!(format!("a.{}", "b".repeat(200))),
    ] {
        let r = server.post(EVENT_TYPES, &json!({"name": name}));
        assert_invalid(&r, &["name"], &name.to_string());
    }
    assert_invalid(
        &server.post(EVENT_TYPES, &json!({"description": "no name"})),
        &["name"],
        "missing name",
    );
}

#[test]
fn custom_event_type_with_a_non_object_or_unusable_schema_is_422() {
    let server = Server::start();
    for schema in [
        json!("object"),
        json!([{"type": "object"}]),
        json!(5),
        json!(true),
        json!({"type": "nonsense"}),
        json!({"type": "object", "properties": {"a": {"type": "string", "pattern": "("}}}),
        json!({"$ref": "https://93.184.216.34/schema.json"}),
    ] {
        let r = server.post(
            EVENT_TYPES,
            &json!({"name": "payout.created", "schema": schema}),
        );
        assert_invalid(&r, &["schema"], &schema.to_string());
    }
    // None of them was stored.
    assert_eq!(
        server.get(EVENT_TYPES).json()["data"]
            .as_array()
            .unwrap()
            .len(),
        6
    );
}

#[test]
fn custom_event_type_example_must_match_its_schema() {
    let server = Server::start();
    let r = server.post(
        EVENT_TYPES,
        &json!({
            "name": "payout.created",
            "schema": {"type": "object", "properties": {"amount": {"type": "string"}}},
            "example": {"amount": 5}
        }),
    );
    assert_invalid(&r, &["example.amount"], "bad example");
}

#[test]
fn custom_event_type_without_schema_accepts_any_object_data() {
    let server = Server::start();
    let r = server.post(EVENT_TYPES, &json!({"name": "note.added"}));
    assert_eq!(r.status, 201, "{}", r.text());
    for data in [
        json!({}),
        json!({"anything": [1, 2, {"x": null}], "n": 1.5}),
    ] {
        let r = publish(&server, "note.added", &data);
        assert_eq!(r.status, 202, "{data}: {}", r.text());
        let stored = get_event(&server, r.json()["id"].as_str().unwrap());
        assert_eq!(stored["data"], data);
    }
    for data in [json!([1]), json!("text"), json!(null), json!(3)] {
        assert_invalid(
            &publish(&server, "note.added", &data),
            &["data"],
            &data.to_string(),
        );
    }
}

#[test]
fn custom_event_type_makes_its_names_and_prefix_subscribable() {
    let server = Server::start();
    assert_invalid(
        &webhook_with_events(&server, json!(["payout.*"])),
        &["events[0]"],
        "before the type exists",
    );
    assert_eq!(
        server
            .post(EVENT_TYPES, &json!({"name": "payout.created"}))
            .status,
        201
    );
    let prefix = webhook_with_events(&server, json!(["payout.*"]));
    assert_eq!(prefix.status, 201, "{}", prefix.text());
    let exact = webhook_with_events(&server, json!(["payout.created"]));
    assert_eq!(exact.status, 201, "{}", exact.text());
    let evt = published(&server, "payout.created", &json!({"id": 1}));
    assert_eq!(evt["deliveries"], 2, "{evt}");
}

#[test]
fn custom_event_type_survives_a_restart() {
    let mut server = Server::start();
    let r = server.post(
        EVENT_TYPES,
        &json!({
            "name": "payout.created",
            "schema": {"type": "object", "required": ["amount"]}
        }),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let status = server.terminate();
    assert!(status.success(), "{status}\n{}", server.log());
    server.restart();
    let names: Vec<String> = server.get(EVENT_TYPES).json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(names.iter().any(|n| n == "payout.created"), "{names:?}");
    assert_invalid(
        &publish(&server, "payout.created", &json!({})),
        &["data.amount"],
        "schema after restart",
    );
    server
        .post(EVENT_TYPES, &json!({"name": "payout.created"}))
        .error(409, "already_exists");
}

#[test]

fn event_type_without_name_and_with_bad_schema_names_both_fields() {
    let server = Server::start();
    let r = server.post(EVENT_TYPES, &json!({"schema": 5}));
    assert_invalid(&r, &["name", "schema"], "two faults");
}

// ------------------------------------------------- events: data validation

#[test]
fn publish_of_each_seed_event_is_accepted_and_listed() {
    let server = Server::start();
    server.create_webhook(&["*"]);
    for (event, data) in util::seed_examples() {
        let r = server.post("/api/v1/events", &json!({"event": event, "data": data}));
        assert_eq!(r.status, 202, "{event}: {}", r.text());
        let body = r.json();
        assert_eq!(body["event"], event);
        assert_eq!(body["deliveries"], 1);
        assert!(body["id"].as_str().unwrap().starts_with("evt_"));
    }
    let list = server.get("/api/v1/events").json();
    assert_eq!(list["data"].as_array().unwrap().len(), 5);
}

#[test]
fn publish_with_a_malformed_uuid_names_the_field() {
    let server = Server::start();
    let cases = [
        ("email.updated", "consignor_id"),
        ("profile.created", "consignor_id"),
        ("event.registered", "event_id"),
        ("event.registered", "consignor_id"),
        ("item.created", "item_id"),
        ("item.created", "consignor_id"),
        ("item.created", "event_id"),
        ("item.sold", "item_id"),
    ];
    for (event, field) in cases {
        for bad in [
            "not-a-uuid",
            "12345",
            "7d6f1c2e-8a4b-4c3d-9e5f-0a1b2c3d4e5",
            "7d6f1c2e-8a4b-4c3d-9e5f-0a1b2c3d4e5g",
        ] {
            let r = publish(&server, event, &seed_with(event, field, Some(json!(bad))));
            assert_invalid(
                &r,
                &[&format!("data.{field}")],
                &format!("{event} {field}={bad}"),
            );
        }
    }
    assert!(event_ids(&server, "").is_empty(), "a bad event was stored");
}

#[test]
fn publish_with_a_malformed_email_names_the_field() {
    let server = Server::start();
    for (event, field) in [
        ("email.updated", "old_email"),
        ("email.updated", "new_email"),
        ("profile.created", "email"),
    ] {
        for bad in ["not-an-email", "two@@example.com", "@example.com", ""] {
            let r = publish(&server, event, &seed_with(event, field, Some(json!(bad))));
            assert_invalid(
                &r,
                &[&format!("data.{field}")],
                &format!("{event} {field}={bad}"),
            );
        }
    }
}

#[test]
fn publish_with_a_value_outside_the_enum_names_the_field() {
    let server = Server::start();
    for (event, field, bad) in [
        ("email.updated", "sync_status", json!("done")),
        ("email.updated", "sync_status", json!("PENDING")),
        ("event.registered", "type", json!("vip")),
        ("event.registered", "type", json!("regular|super")),
        ("event.registered", "type", json!("")),
    ] {
        let r = publish(&server, event, &seed_with(event, field, Some(bad.clone())));
        assert_invalid(
            &r,
            &[&format!("data.{field}")],
            &format!("{event} {field}={bad}"),
        );
    }
    for good in ["pending", "completed", "failed"] {
        let data = seed_with("email.updated", "sync_status", Some(json!(good)));
        assert_eq!(
            publish(&server, "email.updated", &data).status,
            202,
            "{good}"
        );
    }
    for good in ["regular", "super"] {
        let data = seed_with("event.registered", "type", Some(json!(good)));
        assert_eq!(
            publish(&server, "event.registered", &data).status,
            202,
            "{good}"
        );
    }
}

#[test]
fn publish_with_a_price_that_is_not_a_decimal_string_names_the_field() {
    let server = Server::start();
    for (event, field) in [("item.created", "price"), ("item.sold", "sale_price")] {
        for bad in [
            json!("12,50"),
            json!(12.5),
            json!(12),
            json!("1e3"),
            json!("-1.00"),
            json!("12."),
            json!(".50"),
            json!("12.50 EUR"),
            json!(""),
            json!(null),
        ] {
            let r = publish(&server, event, &seed_with(event, field, Some(bad.clone())));
            assert_invalid(
                &r,
                &[&format!("data.{field}")],
                &format!("{event} {field}={bad}"),
            );
        }
        for good in ["12.50", "0", "0.99", "1000", "10.00"] {
            let data = seed_with(event, field, Some(json!(good)));
            let r = publish(&server, event, &data);
            assert_eq!(r.status, 202, "{event} {field}={good}: {}", r.text());
        }
    }
}

#[test]
fn publish_with_a_sale_date_that_is_not_rfc3339_names_the_field() {
    let server = Server::start();
    for bad in [
        json!("yesterday"),
        json!("2025-01-21"),
        json!("2025-01-21T22:20:56"),
        json!("2025-13-01T00:00:00Z"),
        json!("21/01/2025 22:20"),
        json!(1737498056),
        json!(""),
    ] {
        let r = publish(
            &server,
            "item.sold",
            &seed_with("item.sold", "sale_date", Some(bad.clone())),
        );
        assert_invalid(&r, &["data.sale_date"], &format!("sale_date={bad}"));
    }
    for good in [
        "2025-01-21T22:20:56Z",
        "2025-01-21T23:20:56+01:00",
        "2025-01-21T22:20:56.123Z",
    ] {
        let r = publish(
            &server,
            "item.sold",
            &seed_with("item.sold", "sale_date", Some(json!(good))),
        );
        assert_eq!(r.status, 202, "{good}: {}", r.text());
    }
}

#[test]
fn publish_without_a_required_data_field_names_it() {
    let server = Server::start();
    let required: &[(&str, &[&str])] = &[
        (
            "email.updated",
            &["consignor_id", "old_email", "new_email", "sync_status"],
        ),
        ("profile.created", &["consignor_id", "email", "name"]),
        (
            "event.registered",
            &["event_id", "consignor_id", "type", "fee_paid"],
        ),
        (
            "item.created",
            &["item_id", "consignor_id", "event_id", "title", "price"],
        ),
        ("item.sold", &["item_id", "sale_price", "sale_date"]),
    ];
    for (event, fields) in required {
        for field in *fields {
            let r = publish(&server, event, &seed_with(event, field, None));
            assert_invalid(
                &r,
                &[&format!("data.{field}")],
                &format!("{event} without {field}"),
            );
            assert_eq!(detail(&r, &format!("data.{field}"))["code"], "required");
        }
    }
}

#[test]
fn publish_with_a_field_of_the_wrong_json_type_names_it() {
    let server = Server::start();
    for (event, field, bad) in [
        ("event.registered", "fee_paid", json!("yes")),
        ("event.registered", "fee_paid", json!(1)),
        ("event.registered", "fee_paid", json!(null)),
        ("item.created", "title", json!(5)),
        ("item.created", "item_id", json!(42)),
        ("profile.created", "name", json!(["John", "Doe"])),
        ("profile.created", "email", json!({"address": "a@b.com"})),
        ("email.updated", "sync_status", json!(true)),
        ("email.updated", "sync_error", json!(5)),
    ] {
        let r = publish(&server, event, &seed_with(event, field, Some(bad.clone())));
        assert_invalid_includes(
            &r,
            &[&format!("data.{field}")],
            &format!("{event} {field}={bad}"),
        );
        let fields = r.error_fields();
        assert!(
            fields.iter().all(|f| f == &format!("data.{field}")),
            "{event} {field}={bad}: other fields blamed: {fields:?}"
        );
    }
}

#[test]
fn publish_of_a_failed_email_sync_without_sync_error_is_422() {
    let server = Server::start();
    let data = seed_with("email.updated", "sync_error", None);
    assert_eq!(data["sync_status"], "failed");
    assert_invalid(
        &publish(&server, "email.updated", &data),
        &["data.sync_error"],
        "failed sync without error",
    );
    // Without a failure, sync_error is optional.
    let mut data = data;
    data["sync_status"] = json!("completed");
    assert_eq!(publish(&server, "email.updated", &data).status, 202);
}

#[test]
fn publish_of_an_empty_profile_name_is_422() {
    let server = Server::start();
    assert_invalid(
        &publish(
            &server,
            "profile.created",
            &seed_with("profile.created", "name", Some(json!(""))),
        ),
        &["data.name"],
        "empty name",
    );
}

#[test]
fn publish_reports_every_bad_data_field_in_one_response() {
    let server = Server::start();
    let r = publish(
        &server,
        "item.created",
        &json!({
            "item_id": "not-a-uuid",
            "consignor_id": 7,
            "title": "Coat",
            "price": "12,50"
        }),
    );
    assert_invalid(
        &r,
        &[
            "data.item_id",
            "data.consignor_id",
            "data.event_id",
            "data.price",
        ],
        "four faults",
    );
    let r = publish(
        &server,
        "event.registered",
        &json!({"event_id": "x", "consignor_id": "y", "type": "vip", "fee_paid": "yes"}),
    );
    assert_invalid(
        &r,
        &[
            "data.event_id",
            "data.consignor_id",
            "data.type",
            "data.fee_paid",
        ],
        "all four fields",
    );
}

#[test]
fn publish_of_an_unknown_event_type_is_422_on_event() {
    let server = Server::start();
    server.create_webhook(&["*"]);
    for event in [
        json!("item.deleted"),
        json!("nope"),
        json!("item.*"),
        json!("*"),
        json!(""),
    ] {
        let r = server.post(EVENTS, &json!({"event": event, "data": {}}));
        assert_invalid(&r, &["event"], &event.to_string());
    }
    assert_invalid(
        &server.post(EVENTS, &json!({"event": 5, "data": {}})),
        &["event"],
        "event 5",
    );
    assert!(event_ids(&server, "").is_empty());
}

#[test]
fn publish_without_event_or_data_is_422_naming_them() {
    let server = Server::start();
    assert_invalid(
        &server.post(EVENTS, &json!({"event": "item.sold"})),
        &["data"],
        "no data",
    );
    assert_invalid(
        &server.post(EVENTS, &json!({"data": seed("item.sold")})),
        &["event"],
        "no event",
    );
    assert_invalid(
        &server.post(EVENTS, &json!({})),
        &["event", "data"],
        "nothing",
    );
    assert_invalid(
        &server.post(EVENTS, &json!({"event": "nope.nope"})),
        &["event", "data"],
        "unknown event, no data",
    );
}

#[test]
fn publish_with_data_that_is_not_an_object_is_422_on_data() {
    let server = Server::start();
    for data in [
        json!([seed("item.sold")]),
        json!("item"),
        json!(5),
        json!(null),
        json!(true),
    ] {
        assert_invalid(
            &publish(&server, "item.sold", &data),
            &["data"],
            &data.to_string(),
        );
    }
}

#[test]

fn publish_of_unknown_event_with_non_object_data_names_both() {
    let server = Server::start();
    let r = server.post(EVENTS, &json!({"event": "nope.nope", "data": [1]}));
    assert_invalid(&r, &["event", "data"], "two faults");
}

#[test]
fn publish_with_an_unknown_top_level_field_is_422() {
    let server = Server::start();
    let r = server.post(
        EVENTS,
        &json!({"event": "item.sold", "data": seed("item.sold"), "colour": "blue"}),
    );
    assert_invalid(&r, &["colour"], "unknown field");
}

#[test]
fn extra_data_fields_pass_through_to_the_stored_event() {
    let server = Server::start();
    let mut data = seed("item.sold");
    data["shop"] = json!({"branch": "north", "till": 3});
    data["notes"] = json!(["gift", null]);
    let evt = published(&server, "item.sold", &data);
    let stored = get_event(&server, evt["id"].as_str().unwrap());
    assert_eq!(stored["data"], data, "{stored}");
    let listed = server.get(EVENTS).json();
    assert_eq!(listed["data"][0]["data"], data, "{listed}");
}

#[test]
fn publish_answers_202_with_id_event_timestamp_and_deliveries() {
    let server = Server::start();
    server.create_webhook(&["item.*"]);
    server.create_webhook(&["item.sold"]);
    let r = publish(&server, "item.sold", &seed("item.sold"));
    assert_eq!(r.status, 202, "{}", r.text());
    let summary = r.json();
    let id = summary["id"].as_str().unwrap();
    assert!(id.starts_with("evt_"), "{summary}");
    assert_eq!(summary["event"], "item.sold");
    assert!(
        is_rfc3339_utc(summary["timestamp"].as_str().unwrap()),
        "{summary}"
    );
    assert_eq!(summary["deliveries"], 2);
    let stored = get_event(&server, id);
    assert_eq!(stored["id"], id);
    assert_eq!(stored["event"], "item.sold");
    assert_eq!(stored["timestamp"], summary["timestamp"]);
    assert_eq!(stored["data"], seed("item.sold"));
    assert_eq!(
        stored["deliveries"].as_array().unwrap().len(),
        2,
        "{stored}"
    );
}

#[test]
fn get_of_an_unknown_event_is_404() {
    let server = Server::start();
    for id in [UNKNOWN_EVENT, "evt_x", UNKNOWN_WEBHOOK, "nope"] {
        server
            .get(&format!("{EVENTS}/{id}"))
            .error(404, "not_found");
    }
}

// ------------------------------------------------------ events: idempotency

#[test]
fn publish_with_reused_idempotency_key_field_and_same_body_is_200_with_the_original() {
    let server = Server::start();
    let webhook = server.create_webhook(&["*"]);
    let body =
        json!({"event": "item.sold", "data": seed("item.sold"), "idempotency_key": "sale-42"});
    let first = server.post(EVENTS, &body);
    assert_eq!(first.status, 202, "{}", first.text());
    let original = first.json();
    let again = server.post(EVENTS, &body);
    assert_eq!(again.status, 200, "{}", again.text());
    let replay = again.json();
    assert_eq!(replay["id"], original["id"]);
    assert_eq!(replay["event"], original["event"]);
    assert_eq!(replay["timestamp"], original["timestamp"]);
    assert_eq!(replay["deliveries"], 1);
    assert_eq!(event_ids(&server, ""), [original["id"].as_str().unwrap()]);
    let deliveries = get_event(&server, original["id"].as_str().unwrap())["deliveries"].clone();
    assert_eq!(deliveries.as_array().unwrap().len(), 1, "{deliveries}");
    assert_eq!(deliveries[0]["webhook_id"], webhook["id"]);
}

#[test]
fn publish_with_reused_idempotency_key_header_and_same_body_is_200_with_the_original() {
    let server = Server::start();
    server.create_webhook(&["*"]);
    let body = json!({"event": "item.sold", "data": seed("item.sold")}).to_string();
    let send = || {
        server.send(
            "POST",
            EVENTS,
            &[
                ("Content-Type", "application/json"),
                ("Idempotency-Key", "sale-43"),
            ],
            Some(body.as_bytes()),
            Some(&server.token),
        )
    };
    let first = send();
    assert_eq!(first.status, 202, "{}", first.text());
    let again = send();
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.json()["id"], first.json()["id"]);
    assert_eq!(event_ids(&server, "").len(), 1);
    let id = first.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(
        get_event(&server, &id)["deliveries"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // The header and the body field are one key space.
    let by_field = server.post(
        EVENTS,
        &json!({"event": "item.sold", "data": seed("item.sold"), "idempotency_key": "sale-43"}),
    );
    assert_eq!(by_field.status, 200, "{}", by_field.text());
    assert_eq!(by_field.json()["id"], id.as_str());
}

#[test]
fn publish_with_reused_idempotency_key_and_other_body_is_409() {
    let server = Server::start();
    let body =
        json!({"event": "item.sold", "data": seed("item.sold"), "idempotency_key": "sale-44"});
    assert_eq!(server.post(EVENTS, &body).status, 202);
    let mut other_data = body.clone();
    other_data["data"]["sale_price"] = json!("11.00");
    server
        .post(EVENTS, &other_data)
        .error(409, "idempotency_conflict");
    // Other event type, same data: also a different request.
    let other_type = json!({"event": "item.created", "data": seed("item.created"), "idempotency_key": "sale-44"});
    server
        .post(EVENTS, &other_type)
        .error(409, "idempotency_conflict");
    let by_header = server.send(
        "POST",
        EVENTS,
        &[
            ("Content-Type", "application/json"),
            ("Idempotency-Key", "sale-44"),
        ],
        Some(
            json!({"event": "item.sold", "data": other_data["data"]})
                .to_string()
                .as_bytes(),
        ),
        Some(&server.token),
    );
    by_header.error(409, "idempotency_conflict");
    assert_eq!(event_ids(&server, "").len(), 1);
}

#[test]
fn idempotent_replay_ignores_the_order_of_data_keys() {
    let server = Server::start();
    let first = br#"{"event":"item.sold","idempotency_key":"k1","data":{"item_id":"9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d","sale_price":"10.00","sale_date":"2025-01-21T22:20:56Z"}}"#;
    let again = br#"{"idempotency_key":"k1","data":{"sale_date":"2025-01-21T22:20:56Z","sale_price":"10.00","item_id":"9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d"},"event":"item.sold"}"#;
    let send = |body: &[u8]| {
        server.send(
            "POST",
            EVENTS,
            &[("Content-Type", "application/json")],
            Some(body),
            Some(&server.token),
        )
    };
    let a = send(first);
    assert_eq!(a.status, 202, "{}", a.text());
    let b = send(again);
    assert_eq!(b.status, 200, "{}", b.text());
    assert_eq!(a.json()["id"], b.json()["id"]);
}

#[test]
fn idempotency_key_header_and_field_that_differ_is_422() {
    let server = Server::start();
    let r = server.send(
        "POST",
        EVENTS,
        &[
            ("Content-Type", "application/json"),
            ("Idempotency-Key", "header-key"),
        ],
        Some(
            json!({"event": "item.sold", "data": seed("item.sold"), "idempotency_key": "field-key"})
                .to_string()
                .as_bytes(),
        ),
        Some(&server.token),
    );
    assert_invalid(&r, &["idempotency_key"], "two keys");
}

#[test]
fn malformed_idempotency_key_is_422() {
    let server = Server::start();
    for key in [
        json!(""),
        json!("has space"),
        json!("x".repeat(256)),
        json!(5),
        json!("tab\tkey"),
    ] {
        let r = server.post(
            EVENTS,
            &json!({"event": "item.sold", "data": seed("item.sold"), "idempotency_key": key}),
        );
        assert_invalid(&r, &["idempotency_key"], &key.to_string());
    }
    let longest = "k".repeat(255);
    let r = server.post(
        EVENTS,
        &json!({"event": "item.sold", "data": seed("item.sold"), "idempotency_key": longest}),
    );
    assert_eq!(r.status, 202, "{}", r.text());
}

#[test]
fn publishes_without_idempotency_key_are_never_deduplicated() {
    let server = Server::start();
    let a = published(&server, "item.sold", &seed("item.sold"));
    let b = published(&server, "item.sold", &seed("item.sold"));
    assert_ne!(a["id"], b["id"]);
    assert_eq!(event_ids(&server, "").len(), 2);
}

// ----------------------------------------------------------- events: list

/// Publishes one of each seed type plus a second item.sold; returns ids by type.
fn publish_mix(server: &Server) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (event, data) in util::seed_examples()
        .into_iter()
        .chain([("item.sold", seed("item.sold"))])
    {
        let evt = published(server, event, &data);
        out.push((event.to_owned(), evt["id"].as_str().unwrap().to_owned()));
    }
    out
}

fn newest_first(mix: &[(String, String)], keep: impl Fn(&str) -> bool) -> Vec<String> {
    mix.iter()
        .rev()
        .filter(|(event, _)| keep(event))
        .map(|(_, id)| id.clone())
        .collect()
}

#[test]
fn event_list_filters_by_exact_event_type() {
    let server = Server::start();
    let mix = publish_mix(&server);
    assert_eq!(
        event_ids(&server, "?event=item.sold"),
        newest_first(&mix, |e| e == "item.sold")
    );
    assert_eq!(
        event_ids(&server, "?event=email.updated"),
        newest_first(&mix, |e| e == "email.updated")
    );
    assert!(event_ids(&server, "?event=payout.created").is_empty());
}

#[test]
fn event_list_filters_by_prefix_wildcard() {
    let server = Server::start();
    let mix = publish_mix(&server);
    assert_eq!(
        event_ids(&server, "?event=item.*"),
        newest_first(&mix, |e| e.starts_with("item."))
    );
    assert_eq!(
        event_ids(&server, "?event=item.%2A"),
        newest_first(&mix, |e| e.starts_with("item."))
    );
    assert_eq!(event_ids(&server, "?event=*"), newest_first(&mix, |_| true));
    assert_eq!(
        event_ids(&server, "?event=profile.*"),
        newest_first(&mix, |e| e == "profile.created")
    );
    for query in ["event=item*", "event=ite*"] {
        assert_invalid(&server.get(&format!("{EVENTS}?{query}")), &["event"], query);
    }
}

#[test]
fn event_list_filters_by_since() {
    let server = Server::start();
    let old = published(&server, "item.sold", &seed("item.sold"));
    // Every event published from here on is created at or after `cut`;
    // `old` was created before it.
    let cut = now_ms() + 1;
    util::wait_for(Duration::from_secs(2), "the clock to pass the cut", || {
        (now_ms() > cut).then_some(())
    });
    let new = published(&server, "item.created", &seed("item.created"));
    let since = rfc3339_ms(cut).replace('+', "%2B");
    assert_eq!(
        event_ids(&server, &format!("?since={since}")),
        [new["id"].as_str().unwrap()]
    );
    assert_eq!(
        event_ids(&server, "?since=2000-01-01T00:00:00Z"),
        [new["id"].as_str().unwrap(), old["id"].as_str().unwrap()]
    );
    assert!(event_ids(&server, "?since=2999-01-01T00:00:00Z").is_empty());
    // Any offset means the same instant.
    assert_eq!(
        event_ids(&server, "?since=2000-01-01T01:00:00%2B01:00").len(),
        2
    );
    // Combined with a type filter.
    assert!(event_ids(&server, &format!("?since={since}&event=item.sold")).is_empty());
}

#[test]
fn event_list_with_bad_since_limit_or_cursor_is_422() {
    let server = Server::start();
    published(&server, "item.sold", &seed("item.sold"));
    for (query, field) in [
        ("since=yesterday", "since"),
        ("since=2025-01-21", "since"),
        ("since=2025-01-21%2022:20:56", "since"),
        ("since=", "since"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("cursor=wh_00000000000000000000000000", "cursor"),
        ("cursor=nope", "cursor"),
    ] {
        assert_invalid(&server.get(&format!("{EVENTS}?{query}")), &[field], query);
    }
    assert_invalid(
        &server.get(&format!("{EVENTS}?since=never&limit=0")),
        &["since", "limit"],
        "two bad params",
    );
}

#[test]
fn event_list_cursor_walks_every_event_exactly_once_newest_first() {
    let server = Server::start();
    let mut published_ids = Vec::new();
    for i in 0..11 {
        let (event, data) = &util::seed_examples()[i % 5];
        published_ids.push(
            published(&server, event, data)["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    // Ids are time-ordered: each sorts after the one before.
    assert!(
        published_ids.windows(2).all(|w| w[0] < w[1]),
        "{published_ids:?}"
    );
    published_ids.reverse();
    for limit in [1, 3, 4, 11] {
        let (items, pages) = walk(&server, EVENTS, limit);
        assert_eq!(ids(&items), published_ids, "limit {limit}");
        assert_eq!(pages, 11_usize.div_ceil(limit), "limit {limit}");
    }
    // The cursor composes with a filter.
    let (items, _) = walk(&server, &format!("{EVENTS}?event=item.*"), 2);
    let items: Vec<String> = ids(&items);
    assert_eq!(items.len(), 4, "{items:?}");
    for entry in server.get(EVENTS).json()["data"].as_array().unwrap() {
        assert!(entry["deliveries"].is_number(), "{entry}");
        assert!(entry["data"].is_object(), "{entry}");
    }
}

// --------------------------------------------------------- error contract

#[test]
fn malformed_json_is_400_with_the_error_shape() {
    let server = Server::start();
    let id = server.webhook_id(&["*"]);
    let webhook_path = format!("{WEBHOOKS}/{id}");
    let targets = [
        ("POST", WEBHOOKS),
        ("PATCH", webhook_path.as_str()),
        ("POST", EVENT_TYPES),
        ("POST", EVENTS),
    ];
    let bodies: [&[u8]; 5] = [
        b"{\"event\": ",
        b"{'event': 'item.sold'}",
        b"{\"event\": \"item.sold\"} trailing",
        b"\xff\xfe{\"a\": 1}",
        b"{\"a\": \"\xc3\x28\"}",
    ];
    for (method, path) in targets {
        for body in bodies {
            let r = server.send(
                method,
                path,
                &[("Content-Type", "application/json")],
                Some(body),
                Some(&server.token),
            );
            let e = r.error(400, "malformed_json");
            assert!(
                e["message"].as_str().is_some(),
                "{method} {path} {}",
                String::from_utf8_lossy(body)
            );
        }
    }
}

#[test]
fn empty_or_non_object_json_body_is_a_client_error_with_the_error_shape() {
    let server = Server::start();
    let r = server.send(
        "POST",
        EVENTS,
        &[("Content-Type", "application/json")],
        Some(b""),
        Some(&server.token),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    r.error(400, "empty_body");
    for body in ["[]", "\"text\"", "42", "null"] {
        let r = server.send(
            "POST",
            EVENTS,
            &[("Content-Type", "application/json")],
            Some(body.as_bytes()),
            Some(&server.token),
        );
        assert!(matches!(r.status, 400 | 422), "{body}: {}", r.text());
        let code = r.json()["error"]["code"].as_str().unwrap().to_owned();
        r.error(r.status, &code);
    }
}

#[test]
fn deeply_nested_json_is_400_and_the_server_keeps_answering() {
    let server = Server::start();
    let mut body = "[".repeat(100_000);
    body.push_str(&"]".repeat(100_000));
    let r = server.send(
        "POST",
        EVENTS,
        &[("Content-Type", "application/json")],
        Some(body.as_bytes()),
        Some(&server.token),
    );
    r.error(400, "malformed_json");
    let nested = format!(
        "{{\"event\":\"item.sold\",\"data\":{}1{}}}",
        "{\"a\":".repeat(1000),
        "}".repeat(1000)
    );
    let r = server.send(
        "POST",
        EVENTS,
        &[("Content-Type", "application/json")],
        Some(nested.as_bytes()),
        Some(&server.token),
    );
    r.error(400, "malformed_json");
    assert_eq!(server.get("/healthz").status, 200);
}

#[test]
fn request_without_authorization_is_401() {
    let server = Server::start();
    for (method, path) in [
        ("GET", WEBHOOKS),
        ("POST", WEBHOOKS),
        ("GET", EVENTS),
        ("POST", EVENTS),
        ("GET", EVENT_TYPES),
        ("GET", "/api/v1/nope"),
    ] {
        let body = json!({"event": "item.sold", "data": seed("item.sold")});
        let r = call(&server, method, path, Some(&body), None);
        r.error(401, "unauthorized");
        assert_eq!(
            r.header("WWW-Authenticate"),
            Some("Bearer"),
            "{method} {path}"
        );
    }
    assert!(event_ids(&server, "").is_empty());
}

#[test]
fn authorization_with_another_scheme_is_401() {
    let server = Server::start();
    let token = server.token.clone();
    for value in [
        format!("Basic {token}"),
        format!("Token {token}"),
        token.clone(),
        "Bearer".to_owned(),
        "Bearer ".to_owned(),
        String::new(),
    ] {
        let r = server.send(
            "GET",
            WEBHOOKS,
            &[("Authorization", value.as_str())],
            None,
            None,
        );
        r.error(401, "unauthorized");
    }
    // The scheme is case-insensitive.
    let r = server.send(
        "GET",
        WEBHOOKS,
        &[("Authorization", &format!("bearer {token}"))],
        None,
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn unknown_token_is_401_and_never_echoed() {
    let server = Server::start();
    let forged = "hbk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let mut near_miss = server.token.clone();
    near_miss.pop();
    near_miss.push('x');
    for token in [forged, near_miss.as_str(), "x"] {
        let r = call(&server, "GET", WEBHOOKS, None, Some(token));
        r.error(401, "unauthorized");
        assert!(!r.text().contains(token), "{}", r.text());
    }
    assert!(
        !server.log().contains(forged),
        "the log holds a presented token"
    );
}

#[test]
fn revoked_token_is_401_at_once() {
    let server = Server::start();
    let token = create_token(&server, "soon-revoked", "admin");
    assert_eq!(
        call(&server, "GET", WEBHOOKS, None, Some(&token)).status,
        200
    );
    let id = token_id(&server, "soon-revoked");
    let out = cli(&server, &["token", "revoke", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    call(&server, "GET", WEBHOOKS, None, Some(&token)).error(401, "unauthorized");
    let body = json!({"event": "item.sold", "data": seed("item.sold")});
    call(&server, "POST", EVENTS, Some(&body), Some(&token)).error(401, "unauthorized");
    // Other tokens are unaffected.
    assert_eq!(server.get(WEBHOOKS).status, 200);
}

#[test]
fn publish_token_may_publish_and_nothing_else() {
    let server = Server::start();
    let webhook = server.create_webhook(&["*"]);
    let id = webhook["id"].as_str().unwrap();
    let token = server.token("publish");
    let event = json!({"event": "item.sold", "data": seed("item.sold")});
    let r = call(&server, "POST", EVENTS, Some(&event), Some(&token));
    assert_eq!(r.status, 202, "{}", r.text());
    let evt_id = r.json()["id"].as_str().unwrap().to_owned();
    let hook = json!({"url": "https://93.184.216.34/x", "events": ["*"]});
    let forbidden: Vec<(&str, String, Option<&Value>)> = vec![
        ("GET", WEBHOOKS.to_owned(), None),
        ("POST", WEBHOOKS.to_owned(), Some(&hook)),
        ("GET", format!("{WEBHOOKS}/{id}"), None),
        ("PATCH", format!("{WEBHOOKS}/{id}"), Some(&hook)),
        ("DELETE", format!("{WEBHOOKS}/{id}"), None),
        ("GET", EVENTS.to_owned(), None),
        ("GET", format!("{EVENTS}/{evt_id}"), None),
        ("GET", EVENT_TYPES.to_owned(), None),
        ("POST", EVENT_TYPES.to_owned(), Some(&event)),
    ];
    for (method, path, body) in forbidden {
        call(&server, method, &path, body, Some(&token)).error(403, "forbidden");
    }
    assert_eq!(
        server.get(&format!("{WEBHOOKS}/{id}")).status,
        200,
        "DELETE went through"
    );
}

#[test]
fn read_token_may_get_but_not_change_anything() {
    let server = Server::start();
    let id = server.webhook_id(&["*"]);
    let evt = published(&server, "item.sold", &seed("item.sold"));
    let evt_id = evt["id"].as_str().unwrap();
    let token = server.token("read");
    for path in [
        WEBHOOKS.to_owned(),
        format!("{WEBHOOKS}/{id}"),
        EVENTS.to_owned(),
        format!("{EVENTS}/{evt_id}"),
        EVENT_TYPES.to_owned(),
    ] {
        let r = call(&server, "GET", &path, None, Some(&token));
        assert_eq!(r.status, 200, "GET {path}: {}", r.text());
    }
    let got = call(
        &server,
        "GET",
        &format!("{WEBHOOKS}/{id}"),
        None,
        Some(&token),
    )
    .json();
    assert!(got.get("secret").is_none(), "{got}");
    let event = json!({"event": "item.sold", "data": seed("item.sold")});
    let hook = json!({"url": "https://93.184.216.34/x", "events": ["*"]});
    let rename = json!({"description": "x"});
    let new_type = json!({"name": "payout.created"});
    let forbidden: Vec<(&str, String, Option<&Value>)> = vec![
        ("POST", EVENTS.to_owned(), Some(&event)),
        ("POST", WEBHOOKS.to_owned(), Some(&hook)),
        ("PATCH", format!("{WEBHOOKS}/{id}"), Some(&rename)),
        ("DELETE", format!("{WEBHOOKS}/{id}"), None),
        ("POST", EVENT_TYPES.to_owned(), Some(&new_type)),
    ];
    for (method, path, body) in forbidden {
        call(&server, method, &path, body, Some(&token)).error(403, "forbidden");
    }
    assert_eq!(event_ids(&server, "").len(), 1);
    assert_eq!(
        server.get(WEBHOOKS).json()["data"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        server.get(EVENT_TYPES).json()["data"]
            .as_array()
            .unwrap()
            .len(),
        6
    );
}

#[test]
fn unknown_path_is_404_with_the_error_shape() {
    let server = Server::start();
    for path in [
        "/api/v1/nope",
        "/api/v1",
        "/api/v2/webhooks",
        "/api/v1/webhooks/wh_x/extra/parts",
        "/api/v1/events/evt_x/nope",
        "/nope",
    ] {
        server.get(path).error(404, "not_found");
    }
}

#[test]
fn wrong_method_is_405_with_an_allow_header() {
    let server = Server::start();
    let id = server.webhook_id(&["*"]);
    let evt = published(&server, "item.sold", &seed("item.sold"));
    let webhook = format!("{WEBHOOKS}/{id}");
    let event = format!("{EVENTS}/{}", evt["id"].as_str().unwrap());
    let cases: [(&str, &str, &[&str]); 7] = [
        ("PUT", WEBHOOKS, &["GET", "POST"]),
        ("DELETE", WEBHOOKS, &["GET", "POST"]),
        ("POST", &webhook, &["GET", "PATCH", "DELETE"]),
        ("PUT", &webhook, &["GET", "PATCH", "DELETE"]),
        ("DELETE", EVENT_TYPES, &["GET", "POST"]),
        ("PATCH", EVENTS, &["GET", "POST"]),
        ("DELETE", &event, &["GET"]),
    ];
    for (method, path, allowed) in cases {
        let r = server.request(method, path, None);
        r.error(405, "method_not_allowed");
        let allow: BTreeSet<&str> = r
            .header("Allow")
            .unwrap_or_else(|| panic!("{method} {path}: no Allow header"))
            .split(',')
            .map(str::trim)
            .collect();
        assert_eq!(allow, allowed.iter().copied().collect(), "{method} {path}");
    }
    // Nothing was changed by the refused methods.
    assert_eq!(server.get(&webhook).status, 200);
    assert_eq!(server.get(&event).status, 200);
}

#[test]

fn wrong_method_on_healthz_is_405() {
    let server = Server::start();
    let r = server.send("POST", "/healthz", &[], None, None);
    r.error(405, "method_not_allowed");
    assert!(r.header("Allow").is_some_and(|a| a.contains("GET")));
}

/// `{"event": "item.sold", "data": {...seed, "pad": "xxx"}}` of exactly `len` bytes.
fn publish_body_of_len(len: usize) -> Vec<u8> {
    let mut data = seed("item.sold");
    data["pad"] = json!("");
    let base = json!({"event": "item.sold", "data": data})
        .to_string()
        .len();
    assert!(len >= base);
    data["pad"] = json!("x".repeat(len - base));
    let body = json!({"event": "item.sold", "data": data}).to_string();
    assert_eq!(body.len(), len);
    body.into_bytes()
}

fn post_bytes(server: &Server, path: &str, body: &[u8]) -> Response {
    server.send(
        "POST",
        path,
        &[("Content-Type", "application/json")],
        Some(body),
        Some(&server.token),
    )
}

#[test]
fn body_over_256_kib_is_413_and_exactly_256_kib_is_accepted() {
    let server = Server::start();
    let limit = 256 * 1024;
    let r = post_bytes(&server, EVENTS, &publish_body_of_len(limit + 1));
    r.error(413, "payload_too_large");
    assert!(event_ids(&server, "").is_empty());
    let r = post_bytes(&server, EVENTS, &publish_body_of_len(limit));
    assert_eq!(r.status, 202, "{}", r.text());
    // Other body-taking endpoints share the limit.
    let mut hook = json!({"url": "https://93.184.216.34/x", "events": ["*"], "description": ""})
        .to_string()
        .into_bytes();
    hook.resize(limit + 10, b' ');
    post_bytes(&server, WEBHOOKS, &hook).error(413, "payload_too_large");
}

#[test]
fn max_body_size_flag_lowers_the_limit() {
    let server = Server::start_with(&["--max-body-size", "1KiB"]);
    post_bytes(&server, EVENTS, &publish_body_of_len(1025)).error(413, "payload_too_large");
    let r = post_bytes(&server, EVENTS, &publish_body_of_len(1024));
    assert_eq!(r.status, 202, "{}", r.text());
}

#[test]
fn chunked_body_is_read_and_held_to_the_limit() {
    let server = Server::start_with(&["--max-body-size", "1KiB"]);
    let chunked = |body: &[u8]| {
        let mut raw = format!(
            "POST {EVENTS} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
            server.addr, server.token
        )
        .into_bytes();
        for chunk in body.chunks(300) {
            raw.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            raw.extend_from_slice(chunk);
            raw.extend_from_slice(b"\r\n");
        }
        raw.extend_from_slice(b"0\r\n\r\n");
        server.send_raw(&raw).expect("chunked request")
    };
    let r = chunked(&publish_body_of_len(900));
    assert_eq!(r.status, 202, "{}", r.text());
    chunked(&publish_body_of_len(2000)).error(413, "payload_too_large");
    assert_eq!(event_ids(&server, "").len(), 1);
}

#[test]
fn declared_oversized_body_is_refused_without_waiting_for_it() {
    let server = Server::start();
    let raw = format!(
        "POST {EVENTS} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n{{",
        server.addr, server.token
    );
    let r = server.send_raw(raw.as_bytes()).expect("oversized request");
    r.error(413, "payload_too_large");
    assert_eq!(server.get("/healthz").status, 200);
}

#[test]
fn wrong_content_type_is_415() {
    let server = Server::start();
    let body = json!({"event": "item.sold", "data": seed("item.sold")}).to_string();
    for headers in [
        vec![("Content-Type", "text/plain")],
        vec![("Content-Type", "application/x-www-form-urlencoded")],
        vec![("Content-Type", "application/jsonp")],
        vec![],
    ] {
        let r = server.send(
            "POST",
            EVENTS,
            &headers,
            Some(body.as_bytes()),
            Some(&server.token),
        );
        r.error(415, "unsupported_media_type");
    }
    let id = server.webhook_id(&["*"]);
    server
        .send(
            "PATCH",
            &format!("{WEBHOOKS}/{id}"),
            &[("Content-Type", "text/plain")],
            Some(b"{\"description\": \"x\"}"),
            Some(&server.token),
        )
        .error(415, "unsupported_media_type");
    assert!(event_ids(&server, "").is_empty());
    // Parameters and case do not matter.
    for content_type in ["application/json; charset=utf-8", "Application/JSON"] {
        let r = server.send(
            "POST",
            EVENTS,
            &[("Content-Type", content_type)],
            Some(body.as_bytes()),
            Some(&server.token),
        );
        assert_eq!(r.status, 202, "{content_type}: {}", r.text());
    }
}

#[test]
fn api_responses_are_marked_no_store() {
    let server = Server::start();
    let created = server.post(
        WEBHOOKS,
        &json!({"url": "https://93.184.216.34/x", "events": ["*"]}),
    );
    let responses = [
        ("201", created),
        ("200", server.get(WEBHOOKS)),
        ("202", publish(&server, "item.sold", &seed("item.sold"))),
        ("401", call(&server, "GET", WEBHOOKS, None, None)),
        ("404", server.get(&format!("{WEBHOOKS}/{UNKNOWN_WEBHOOK}"))),
        ("405", server.request("PUT", WEBHOOKS, None)),
        ("422", server.post(WEBHOOKS, &json!({}))),
    ];
    for (what, r) in responses {
        assert_eq!(r.status.to_string(), what, "{}", r.text());
        assert_eq!(r.header("Cache-Control"), Some("no-store"), "{what}");
        assert!(
            r.header("Content-Type")
                .is_some_and(|t| t.starts_with("application/json")),
            "{what}: {:?}",
            r.headers
        );
    }
}

#[test]
fn healthz_answers_ok_without_a_token() {
    let server = Server::start();
    let r = server.send("GET", "/healthz", &[], None, None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], "ok");
    // A bad token does not matter there either.
    let r = server.send("GET", "/healthz", &[], None, Some("not-a-token"));
    assert_eq!(r.status, 200, "{}", r.text());
}

// ------------------------------------------------------------ token CLI

#[test]
fn token_create_prints_the_token_alone_on_the_last_line_and_it_works_at_once() {
    let server = Server::start();
    let out = cli(
        &server,
        &[
            "token", "create", "--name", "shop-app", "--scope", "publish",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout(&out);
    let last = text.lines().last().unwrap();
    assert!(
        !last.is_empty() && !last.contains(char::is_whitespace),
        "{text:?}"
    );
    let body = json!({"event": "item.sold", "data": seed("item.sold")});
    let r = call(&server, "POST", EVENTS, Some(&body), Some(last));
    assert_eq!(r.status, 202, "{}", r.text());
    call(&server, "GET", EVENTS, None, Some(last)).error(403, "forbidden");
    assert!(!server.log().contains(last), "the server logged the token");
}

#[test]
fn token_list_shows_id_name_and_scope_but_never_the_token() {
    let server = Server::start();
    let publish_token = create_token(&server, "till-publisher", "publish");
    let read_token = create_token(&server, "dashboard-reader", "read");
    let out = cli(&server, &["token", "list"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout(&out);
    for (name, scope) in [("till-publisher", "publish"), ("dashboard-reader", "read")] {
        let line = text
            .lines()
            .find(|l| l.split_whitespace().any(|f| f == name))
            .unwrap_or_else(|| panic!("{name} not in {text}"));
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert!(fields.iter().any(|f| f.starts_with("tok_")), "{line}");
        assert!(fields.contains(&scope), "{line}");
        assert!(
            fields.iter().any(|f| is_rfc3339_utc(f)),
            "no creation time: {line}"
        );
    }
    for token in [
        publish_token.as_str(),
        read_token.as_str(),
        server.token.as_str(),
    ] {
        assert!(!text.contains(token), "token list shows a token: {text}");
    }
}

#[test]
fn token_revoke_makes_the_token_401_at_once() {
    let server = Server::start();
    let token = create_token(&server, "leaked", "publish");
    let body = json!({"event": "item.sold", "data": seed("item.sold")});
    assert_eq!(
        call(&server, "POST", EVENTS, Some(&body), Some(&token)).status,
        202
    );
    let id = token_id(&server, "leaked");
    let out = cli(&server, &["token", "revoke", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    call(&server, "POST", EVENTS, Some(&body), Some(&token)).error(401, "unauthorized");
    // Revoking what is not there fails.
    assert!(!cli(&server, &["token", "revoke", &id]).status.success());
    assert!(
        !cli(&server, &["token", "revoke", "tok_nope"])
            .status
            .success()
    );
}

#[test]
fn token_list_records_last_use() {
    let server = Server::start();
    let token = create_token(&server, "used-once", "read");
    let unused = token_line(&server, "used-once").unwrap();
    assert_eq!(
        unused
            .split_whitespace()
            .filter(|f| is_rfc3339_utc(f))
            .count(),
        1,
        "a token never used shows a last use: {unused}"
    );
    assert_eq!(call(&server, "GET", EVENTS, None, Some(&token)).status, 200);
    util::wait_for(
        Duration::from_secs(5),
        "token last use to be recorded",
        || {
            let line = token_line(&server, "used-once")?;
            (line
                .split_whitespace()
                .filter(|f| is_rfc3339_utc(f))
                .count()
                == 2)
                .then_some(())
        },
    );
}

#[test]
fn first_start_writes_the_admin_token_to_a_private_file_and_never_logs_it() {
    use std::os::unix::fs::PermissionsExt;
    let server = Server::start();
    let path = server.dir.path().join("hookbox.db.admin-token");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let log = server.log();
    assert!(
        !log.contains(&server.token),
        "the log holds the admin token"
    );
    assert!(log.contains("hookbox.db.admin-token"), "{log}");
    assert_eq!(server.get(WEBHOOKS).status, 200);
}

// ------------------------------------------------------- more edge cases

#[test]
fn webhook_url_in_other_spellings_of_non_public_addresses_is_422() {
    let server = Server::start();
    for url in [
        "http://127.1/",
        "http://0177.0.0.1/",
        "http://localhost./",
        "http://api.localhost/",
        "http://[fe80::1]/",
        "http://[fd00::1]/",
        "http://[64:ff9b::7f00:1]/",
        "http://[::ffff:10.0.0.1]/",
        "http://100.64.0.1/",
        "http://172.16.0.1/",
        "http://224.0.0.1/",
    ] {
        assert_invalid(&webhook_with_url(&server, url), &["url"], url);
    }
    let r = webhook_with_url(&server, "http://[2606:4700::1111]/hook");
    assert_eq!(r.status, 201, "{}", r.text());
}

#[test]
fn webhook_url_description_and_events_have_length_limits() {
    let server = Server::start();
    let long_url = format!("https://93.184.216.34/{}", "a".repeat(3000));
    assert_invalid(&webhook_with_url(&server, &long_url), &["url"], "3 kB url");
    let huge_url = format!("https://93.184.216.34/{}", "a".repeat(5000));
    assert_invalid(&webhook_with_url(&server, &huge_url), &["url"], "5 kB url");
    let r = create_webhook_body(
        &server,
        &json!({"url": "https://93.184.216.34/x", "events": ["*"], "description": "d".repeat(1001)}),
    );
    assert_invalid(&r, &["description"], "long description");
    let r = webhook_with_events(&server, json!(vec!["*"; 101]));
    assert_invalid(&r, &["events"], "101 events");
    assert!(
        server.get(WEBHOOKS).json()["data"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn custom_event_type_example_must_be_an_object_and_schema_small() {
    let server = Server::start();
    assert_invalid(
        &server.post(EVENT_TYPES, &json!({"name": "note.added", "example": [1]})),
        &["example"],
        "array example",
    );
    let big: serde_json::Map<String, Value> = (0..3000)
        .map(|i| (format!("field_{i}"), json!({"type": "string"})))
        .collect();
    let schema = json!({"type": "object", "properties": big});
    assert!(schema.to_string().len() > 64 * 1024);
    assert_invalid(
        &server.post(
            EVENT_TYPES,
            &json!({"name": "note.added", "schema": schema}),
        ),
        &["schema"],
        "huge schema",
    );
    assert_invalid(
        &server.post(
            EVENT_TYPES,
            &json!({"name": "note.added", "description": "d".repeat(1001)}),
        ),
        &["description"],
        "long description",
    );
}

#[test]
fn publish_with_a_timestamp_stores_it_in_utc_and_a_bad_one_is_422() {
    let server = Server::start();
    let r = server.post(
        EVENTS,
        &json!({"event": "item.sold", "data": seed("item.sold"), "timestamp": "2025-01-21T23:20:56+01:00"}),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.json()["timestamp"], "2025-01-21T22:20:56Z");
    let stored = get_event(&server, r.json()["id"].as_str().unwrap());
    assert_eq!(stored["timestamp"], "2025-01-21T22:20:56Z");
    for bad in [json!("yesterday"), json!(5), json!("2025-01-21")] {
        let r = server.post(
            EVENTS,
            &json!({"event": "item.sold", "data": seed("item.sold"), "timestamp": bad}),
        );
        assert_invalid(&r, &["timestamp"], &bad.to_string());
    }
    // Without one, the server's clock stamps the event.
    let before = now_ms() / 1000 * 1000;
    let r = published(&server, "item.sold", &seed("item.sold"));
    let after = now_ms();
    let stamped = OffsetDateTime::parse(r["timestamp"].as_str().unwrap(), &Rfc3339).unwrap();
    let stamped = (stamped.unix_timestamp_nanos() / 1_000_000) as i64;
    assert!((before..=after).contains(&stamped), "{r}");
}

#[test]
fn concurrent_publishes_with_one_idempotency_key_store_one_event() {
    let server = Server::start();
    server.create_webhook(&["*"]);
    let body = json!({"event": "item.sold", "data": seed("item.sold"), "idempotency_key": "race"});
    let results: Vec<(u16, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|_| {
                s.spawn(|| {
                    let r = server.post(EVENTS, &body);
                    (r.status, r.json())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let created = results.iter().filter(|(s, _)| *s == 202).count();
    let replayed = results.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!((created, replayed), (1, 15), "{results:?}");
    let id = &results[0].1["id"];
    assert!(results.iter().all(|(_, b)| &b["id"] == id), "{results:?}");
    assert_eq!(event_ids(&server, "").len(), 1);
    let event = get_event(&server, id.as_str().unwrap());
    assert_eq!(event["deliveries"].as_array().unwrap().len(), 1, "{event}");
}

#[test]
fn concurrent_publishes_are_each_stored_even_when_some_in_the_batch_conflict() {
    let server = Server::start();
    server.create_webhook(&["*"]);
    assert_eq!(
        server
            .post(EVENTS, &json!({"event": "item.sold", "data": seed("item.sold"), "idempotency_key": "taken"}))
            .status,
        202
    );
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|i| {
                let server = &server;
                s.spawn(move || {
                    let mut data = seed("item.sold");
                    data["n"] = json!(i);
                    let body = if i % 2 == 0 {
                        json!({"event": "item.sold", "data": data, "idempotency_key": "taken"})
                    } else {
                        json!({"event": "item.sold", "data": data})
                    };
                    (0..5)
                        .map(|_| server.post(EVENTS, &body).status)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        40,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 202).count(),
        40,
        "{statuses:?}"
    );
    let (events, _) = walk(&server, EVENTS, 500);
    assert_eq!(events.len(), 41);
    let unique: BTreeSet<String> = ids(&events).into_iter().collect();
    assert_eq!(unique.len(), 41);
    for event in &events {
        assert_eq!(event["deliveries"], 1, "{event}");
    }
}

#[test]
fn api_allow_refuses_other_client_addresses_with_403() {
    let refused = Server::start_with(&["--api-allow", "10.0.0.0/8"]);
    refused.get(WEBHOOKS).error(403, "ip_not_allowed");
    let body = json!({"event": "item.sold", "data": seed("item.sold")});
    refused.post(EVENTS, &body).error(403, "ip_not_allowed");
    // A forged X-Forwarded-For is not trusted without --trust-proxy.
    refused
        .send(
            "GET",
            WEBHOOKS,
            &[("X-Forwarded-For", "10.1.2.3")],
            None,
            Some(&refused.token),
        )
        .error(403, "ip_not_allowed");
    let allowed = Server::start_with(&["--api-allow", "10.0.0.0/8,127.0.0.1"]);
    assert_eq!(allowed.get(WEBHOOKS).status, 200);
}

#[test]
fn dashboard_is_served_at_root() {
    let server = Server::start();
    let r = server.send("GET", "/", &[], None, None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.header("Content-Type")
            .is_some_and(|t| t.starts_with("text/html")),
        "{:?}",
        r.headers
    );
}

/// Writes `raw` on one connection and reads up to `n` responses (fewer if
/// the server closes it).
fn pipelined(server: &Server, raw: &[u8], n: usize) -> Vec<Response> {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = stream.write_all(raw);
    let mut reader = std::io::BufReader::new(stream);
    let mut out = Vec::new();
    while out.len() < n {
        match util::read_response(&mut reader) {
            Ok(r) => {
                let closes = r
                    .header("Connection")
                    .is_some_and(|c| c.eq_ignore_ascii_case("close"));
                out.push(r);
                if closes {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    out
}

#[test]
fn refused_body_is_never_read_as_the_next_request() {
    let server = Server::start();
    // A chunked body the handler never reads (the request is refused with
    // 401), whose content looks like a request of its own.
    let smuggled = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", server.addr);
    let mut raw = format!(
        "POST {EVENTS} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{smuggled}\r\n0\r\n\r\n",
        server.addr,
        smuggled.len()
    )
    .into_bytes();
    raw.extend_from_slice(
        format!(
            "GET /api/v1/nope HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
            server.addr, server.token
        )
        .as_bytes(),
    );
    let responses = pipelined(&server, &raw, 3);
    assert!(!responses.is_empty());
    responses[0].error(401, "unauthorized");
    if responses.len() > 1 {
        // The next response must answer the real second request.
        responses[1].error(404, "not_found");
    }
    assert!(responses.len() <= 2, "the body was answered as a request");
}

#[test]
fn connection_stays_usable_or_is_closed_after_a_413() {
    let server = Server::start();
    let body = vec![b'x'; 300 * 1024];
    let mut raw = format!(
        "POST {EVENTS} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        server.addr,
        server.token,
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(&body);
    raw.extend_from_slice(
        format!(
            "GET /healthz HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            server.addr
        )
        .as_bytes(),
    );
    let responses = pipelined(&server, &raw, 2);
    assert!(!responses.is_empty());
    responses[0].error(413, "payload_too_large");
    match responses.get(1) {
        Some(next) => {
            assert_eq!(next.status, 200, "{}", next.text());
            assert_eq!(next.json()["status"], "ok");
        }
        None => assert!(
            responses[0]
                .header("Connection")
                .is_some_and(|c| c.eq_ignore_ascii_case("close")),
            "the connection was dropped without Connection: close"
        ),
    }
}

#[test]
fn token_commands_read_the_database_from_hookbox_db() {
    let server = Server::start();
    let out = Command::new(BIN)
        .args(["token", "create", "--name", "from-env", "--scope", "read"])
        .env("HOOKBOX_DB", server.db())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = stdout(&out).lines().last().unwrap().trim().to_owned();
    assert_eq!(call(&server, "GET", EVENTS, None, Some(&token)).status, 200);
    let list = Command::new(BIN)
        .args(["token", "list"])
        .env("HOOKBOX_DB", server.db())
        .output()
        .unwrap();
    assert!(stdout(&list).contains("from-env"), "{}", stdout(&list));
}

#[test]
fn lists_default_to_50_items_per_page() {
    let server = Server::start();
    let published_ids: Vec<String> = (0..51)
        .map(|_| {
            published(&server, "item.sold", &seed("item.sold"))["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let first = server.get(EVENTS).json();
    let page = first["data"].as_array().unwrap();
    assert_eq!(page.len(), 50);
    assert_eq!(page[0]["id"], published_ids[50].as_str());
    let cursor = first["next_cursor"].as_str().expect("a next_cursor");
    let rest = server.get(&format!("{EVENTS}?cursor={cursor}")).json();
    assert_eq!(
        ids(rest["data"].as_array().unwrap()),
        [published_ids[0].clone()]
    );
    assert!(rest["next_cursor"].is_null(), "{rest}");
}

#[test]
fn rejected_publish_does_not_use_up_its_idempotency_key() {
    let server = Server::start();
    let bad =
        json!({"event": "item.sold", "data": {"item_id": "nope"}, "idempotency_key": "retry-me"});
    assert_eq!(server.post(EVENTS, &bad).status, 422);
    let good =
        json!({"event": "item.sold", "data": seed("item.sold"), "idempotency_key": "retry-me"});
    let r = server.post(EVENTS, &good);
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(server.post(EVENTS, &good).status, 200);
}

#[test]
fn publish_while_the_database_is_locked_is_503_and_recovers() {
    let server = Server::start();
    // Another process holds SQLite's write lock longer than the writer's
    // busy timeout (5 s): the publish cannot commit and must say so with 503
    // and Retry-After, not 500, and nothing half-done may remain.
    let locker = rusqlite::Connection::open(server.db()).unwrap();
    locker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let (event, data) = util::seed_examples().remove(1);
    let r = server.post(EVENTS, &json!({"event": event, "data": data}));
    let error = r.error(503, "storage_unavailable");
    assert!(r.header("Retry-After").is_some(), "{error}");
    locker.execute_batch("ROLLBACK").unwrap();
    drop(locker);

    let r = server.post(EVENTS, &json!({"event": event, "data": data}));
    assert_eq!(r.status, 202, "{}", r.text());
    let listed = server.get(EVENTS).json();
    assert_eq!(listed["data"].as_array().unwrap().len(), 1, "{listed}");
}

#[test]
fn healthz_is_503_while_the_database_cannot_commit() {
    let server = Server::start();
    let r = server.send("GET", "/healthz", &[], None, None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], "ok");
    let locker = rusqlite::Connection::open(server.db()).unwrap();
    locker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let r = server.send("GET", "/healthz", &[], None, None);
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["status"], "unavailable");
    assert_eq!(r.json()["failing"], json!(["database"]));
    locker.execute_batch("ROLLBACK").unwrap();
    drop(locker);
    util::wait_for(Duration::from_secs(15), "healthz to recover", || {
        (server.send("GET", "/healthz", &[], None, None).status == 200).then_some(())
    });
}

#[test]
fn post_without_any_body_is_400_empty_body_not_415() {
    let server = Server::start();
    let r = server.send("POST", EVENTS, &[], None, Some(&server.token));
    r.error(400, "empty_body");
}

#[test]
fn audit_log_filter_refuses_an_unknown_action_and_names_every_valid_one() {
    let server = Server::start();
    let error = server
        .get("/api/v1/audit-log?action=webhook.exploded")
        .error(422, "validation_failed");
    let details = error["details"].as_array().unwrap();
    let detail = details
        .iter()
        .find(|d| d["field"] == "action")
        .unwrap_or_else(|| panic!("no detail for action: {error}"));
    assert_eq!(detail["code"], "invalid", "{error}");
    let message = detail["message"].as_str().unwrap();
    for action in [
        "webhook.created",
        "webhook.updated",
        "webhook.enabled",
        "webhook.disabled",
        "webhook.deleted",
        "webhook.secret_rotated",
        "webhook.tested",
        "webhook.replayed",
        "delivery.retried",
        "token.created",
        "token.revoked",
        "event_type.created",
    ] {
        assert!(
            message.contains(action),
            "{action} missing from {message:?}"
        );
    }
    // A known action filters (the server's first token was audited).
    let r = server.get("/api/v1/audit-log?action=token.created");
    assert_eq!(r.status, 200, "{}", r.text());
    let rows = r.json()["data"].as_array().unwrap().clone();
    assert!(!rows.is_empty(), "{rows:?}");
    assert!(
        rows.iter().all(|e| e["action"] == "token.created"),
        "{rows:?}"
    );
}
