//! Security (SPEC section 6, issue 4): token scopes on every route, the
//! tokens API, client allowlists for IPv4 and IPv6, `--trust-proxy` and
//! spoofed `X-Forwarded-For`, per-token rate limits, and the audit log —
//! searched, with the server's log, for every secret and token used.
//!
//! Every test runs the real binary on a loopback port with a fresh database.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use util::{BIN, Response, Server};

const WEBHOOKS: &str = "/api/v1/webhooks";
const TOKENS: &str = "/api/v1/tokens";
const AUDIT: &str = "/api/v1/audit-log";

/// Creates a token through the API with the admin token; returns its JSON
/// (with `token`).
fn api_token(server: &Server, scope: &str, allow: Option<&[&str]>) -> Value {
    let mut body = json!({"name": util::unique_name(&format!("{scope} token")), "scope": scope});
    if let Some(allow) = allow {
        body["allow"] = json!(allow);
    }
    let r = server.post(TOKENS, &body);
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()
}

fn secret_of(token: &Value) -> String {
    token["token"]
        .as_str()
        .expect("token shown on creation")
        .to_owned()
}

fn get_as(server: &Server, path: &str, token: &str, headers: &[(&str, &str)]) -> Response {
    server.send("GET", path, headers, None, Some(token))
}

// ------------------------------------------------------------ scopes

/// One request of each route class: method, path, JSON body.
fn route_table(server: &Server) -> Vec<(&'static str, String, Option<Value>)> {
    let hook = server.webhook_id(&["*"]);
    let evt = server.post(
        "/api/v1/events",
        &json!({"event": "item.created", "data": util::seed("item.created")}),
    );
    assert_eq!(evt.status, 202, "{}", evt.text());
    let event_id = evt.json()["id"].as_str().unwrap().to_owned();
    let deliveries = server.get(&format!("/api/v1/deliveries?event_id={event_id}"));
    let delivery = deliveries.json()["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let spare = api_token(server, "read", None)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    vec![
        ("GET", WEBHOOKS.into(), None),
        (
            "POST",
            WEBHOOKS.into(),
            Some(json!({"url": "https://93.184.216.34/x", "events": ["*"]})),
        ),
        ("GET", format!("{WEBHOOKS}/{hook}"), None),
        (
            "PATCH",
            format!("{WEBHOOKS}/{hook}"),
            Some(json!({"description": "d"})),
        ),
        ("GET", format!("{WEBHOOKS}/{hook}/secret"), None),
        (
            "POST",
            format!("{WEBHOOKS}/{hook}/rotate-secret"),
            Some(json!({})),
        ),
        (
            "POST",
            format!("{WEBHOOKS}/{hook}/replay"),
            Some(json!({"since": "2020-01-01T00:00:00Z"})),
        ),
        ("GET", "/api/v1/event-types".into(), None),
        (
            "POST",
            "/api/v1/event-types".into(),
            Some(json!({"name": "custom.thing"})),
        ),
        ("GET", "/api/v1/events".into(), None),
        (
            "POST",
            "/api/v1/events".into(),
            Some(json!({"event": "item.created", "data": util::seed("item.created")})),
        ),
        ("GET", format!("/api/v1/events/{event_id}"), None),
        ("GET", "/api/v1/deliveries".into(), None),
        ("GET", format!("/api/v1/deliveries/{delivery}"), None),
        ("POST", format!("/api/v1/deliveries/{delivery}/retry"), None),
        ("GET", TOKENS.into(), None),
        (
            "POST",
            TOKENS.into(),
            Some(json!({"name": "n", "scope": "read"})),
        ),
        ("GET", AUDIT.into(), None),
        // Last: it removes things the rows above use.
        ("DELETE", format!("{TOKENS}/{spare}"), None),
        ("DELETE", format!("{WEBHOOKS}/{hook}"), None),
    ]
}

/// What SPEC section 3 lets each scope do: admin everything, publish only
/// `POST /api/v1/events`, read every GET except a webhook's secret.
fn allowed(scope: &str, method: &str, path: &str) -> bool {
    match scope {
        "admin" => true,
        "publish" => method == "POST" && path == "/api/v1/events",
        "read" => method == "GET" && !path.ends_with("/secret"),
        _ => unreachable!(),
    }
}

#[test]
fn every_route_enforces_its_scope_and_needs_a_token() {
    for scope in ["admin", "publish", "read"] {
        let server = Server::start();
        let token = secret_of(&api_token(&server, scope, None));
        for (method, path, body) in route_table(&server) {
            let bytes = body.as_ref().map(|b| b.to_string().into_bytes());
            let headers: &[(&str, &str)] = if bytes.is_some() {
                &[("Content-Type", "application/json")]
            } else {
                &[]
            };
            let r = server.send(method, &path, headers, bytes.as_deref(), Some(&token));
            if allowed(scope, method, &path) {
                assert!(
                    (200..300).contains(&r.status),
                    "{scope} {method} {path}: {} {}",
                    r.status,
                    r.text()
                );
            } else {
                let error = r.error(403, "forbidden");
                assert!(
                    error["message"].as_str().unwrap().contains(scope),
                    "{scope} {method} {path}: {error}"
                );
            }
            let anonymous = server.send(method, &path, headers, bytes.as_deref(), None);
            anonymous.error(401, "unauthorized");
            let wrong = server.send(
                method,
                &path,
                headers,
                bytes.as_deref(),
                Some("hbx_not-a-real-token"),
            );
            wrong.error(401, "unauthorized");
        }
    }
}

// ------------------------------------------------------------ tokens API

#[test]
fn tokens_api_shows_a_token_once_and_revoking_it_locks_it_out_at_once() {
    let server = Server::start();
    let created = api_token(&server, "publish", None);
    let token = secret_of(&created);
    let id = created["id"].as_str().unwrap();
    assert!(id.starts_with("tok_"), "{created}");
    assert_eq!(created["scope"], "publish");
    assert_eq!(created["last_used_at"], Value::Null);
    assert_eq!(created["allow"], json!([]));

    // The list never shows a token or its hash; last use is recorded.
    let publish = server.send(
        "POST",
        "/api/v1/events",
        &[("Content-Type", "application/json")],
        Some(
            json!({"event": "item.created", "data": util::seed("item.created")})
                .to_string()
                .as_bytes(),
        ),
        Some(&token),
    );
    assert_eq!(publish.status, 202, "{}", publish.text());
    let list = server.get(TOKENS);
    assert_eq!(list.status, 200);
    assert!(!list.text().contains(&token), "{}", list.text());
    assert!(!list.text().contains(&server.token), "{}", list.text());
    let rows = list.json()["data"].as_array().unwrap().clone();
    let row = rows.iter().find(|t| t["id"] == id).expect("listed");
    assert!(
        row.get("token").is_none() && row.get("hash").is_none(),
        "{row}"
    );
    assert!(row["last_used_at"].is_string(), "{row}");
    // The bootstrap admin token is listed too.
    assert!(
        rows.iter().any(|t| t["name"] == "bootstrap admin"),
        "{rows:?}"
    );

    let r = server.request("DELETE", &format!("{TOKENS}/{id}"), None);
    assert_eq!(r.status, 204, "{}", r.text());
    server
        .send("GET", WEBHOOKS, &[], None, Some(&token))
        .error(401, "unauthorized");
    server
        .request("DELETE", &format!("{TOKENS}/{id}"), None)
        .error(404, "not_found");
    assert!(
        !server.get(TOKENS).text().contains(id),
        "a revoked token is not listed"
    );
}

#[test]
fn tokens_api_validates_name_scope_and_allowlist() {
    let server = Server::start();
    let r = server.post(
        TOKENS,
        &json!({"name": "", "scope": "root", "allow": ["10.0.0.0/33", "nope", "::1/128"]}),
    );
    r.error(422, "validation_failed");
    let mut fields = r.error_fields();
    fields.sort();
    assert_eq!(
        fields,
        ["allow[0]", "allow[1]", "name", "scope"],
        "{}",
        r.text()
    );
    server
        .post(TOKENS, &json!({"name": "x"}))
        .error(422, "validation_failed");
    server
        .request("DELETE", &format!("{TOKENS}/tok_nope"), None)
        .error(404, "not_found");
    server
        .request("PUT", TOKENS, Some(&json!({})))
        .error(405, "method_not_allowed");
}

#[test]
fn a_token_made_by_the_cli_is_listed_by_the_api_and_the_audit_log_says_cli() {
    let server = Server::start();
    let _ = server.token("read");
    let rows = server.get(TOKENS).json()["data"].clone();
    let cli = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"].as_str().unwrap().starts_with("test-read-"))
        .expect("the CLI's token is listed")
        .clone();
    let out = Command::new(BIN)
        .args(["token", "revoke", cli["id"].as_str().unwrap(), "--db"])
        .arg(server.db())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = server.get(&format!("{AUDIT}?action=token.revoked")).json()["data"].clone();
    assert_eq!(log[0]["actor"], "cli", "{log}");
    assert_eq!(log[0]["target"], cli["id"], "{log}");
}

// ------------------------------------------------------------ allowlists

#[test]
fn api_allow_admits_listed_ipv4_networks_only() {
    let open = Server::start_with(&["--api-allow", "10.0.0.0/8,127.0.0.0/30"]);
    assert_eq!(open.get(WEBHOOKS).status, 200);
    let closed = Server::start_with(&["--api-allow", "10.0.0.0/8,192.168.0.0/16"]);
    closed.get(WEBHOOKS).error(403, "ip_not_allowed");
    // Refused before authentication: no token needed to be told.
    closed
        .send("GET", WEBHOOKS, &[], None, None)
        .error(403, "ip_not_allowed");
    // --api-allow governs /healthz and the dashboard too.
    closed
        .send("GET", "/healthz", &[], None, None)
        .error(403, "ip_not_allowed");
    closed
        .send("GET", "/", &[], None, None)
        .error(403, "ip_not_allowed");
}

#[test]
fn api_allow_admits_listed_ipv6_networks_only() {
    let open = Server::delivering_on("[::1]:0", &["--pause-delivery", "--api-allow", "::1/128"]);
    assert!(open.addr.is_ipv6());
    assert_eq!(open.get(WEBHOOKS).status, 200);
    let closed = Server::delivering_on(
        "[::1]:0",
        &["--pause-delivery", "--api-allow", "127.0.0.0/8,fd00::/8"],
    );
    closed.get(WEBHOOKS).error(403, "ip_not_allowed");
}

#[test]
fn a_tokens_own_allowlist_limits_where_it_can_be_used_from() {
    let server = Server::start();
    let here = secret_of(&api_token(
        &server,
        "read",
        Some(&["127.0.0.1/32", "::1/128"]),
    ));
    let elsewhere = secret_of(&api_token(
        &server,
        "read",
        Some(&["10.0.0.0/8", "fd00::/8"]),
    ));
    assert_eq!(get_as(&server, WEBHOOKS, &here, &[]).status, 200);
    get_as(&server, WEBHOOKS, &elsewhere, &[]).error(403, "ip_not_allowed");
    let listed = server.get(TOKENS).json()["data"].clone();
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["allow"] == json!(["10.0.0.0/8", "fd00::/8"])),
        "{listed}"
    );

    let v6 = Server::delivering_on("[::1]:0", &["--pause-delivery"]);
    let here = secret_of(&api_token(&v6, "read", Some(&["::1/128"])));
    let elsewhere = secret_of(&api_token(&v6, "read", Some(&["127.0.0.1/32"])));
    assert_eq!(get_as(&v6, WEBHOOKS, &here, &[]).status, 200);
    get_as(&v6, WEBHOOKS, &elsewhere, &[]).error(403, "ip_not_allowed");
}

#[test]
fn trust_proxy_takes_the_client_from_x_forwarded_for_of_a_trusted_proxy_only() {
    // The test client is the proxy (127.0.0.1); the allowlist admits 10/8.
    let server = Server::start_with(&["--api-allow", "10.0.0.0/8", "--trust-proxy"]);
    let t = &server.token;
    assert_eq!(
        get_as(&server, WEBHOOKS, t, &[("X-Forwarded-For", "10.1.2.3")]).status,
        200
    );
    get_as(&server, WEBHOOKS, t, &[("X-Forwarded-For", "8.8.8.8")]).error(403, "ip_not_allowed");
    // The client wrote the left entry; the proxy appended the right one.
    get_as(
        &server,
        WEBHOOKS,
        t,
        &[("X-Forwarded-For", "10.1.2.3, 8.8.8.8")],
    )
    .error(403, "ip_not_allowed");
    assert_eq!(
        get_as(
            &server,
            WEBHOOKS,
            t,
            &[("X-Forwarded-For", "8.8.8.8, 10.1.2.3")]
        )
        .status,
        200
    );
    // No header: the proxy itself, which is not in 10/8.
    get_as(&server, WEBHOOKS, t, &[]).error(403, "ip_not_allowed");
    get_as(&server, WEBHOOKS, t, &[("X-Forwarded-For", "garbage")]).error(403, "ip_not_allowed");

    // The audit log records the forwarded client.
    let r = server.send(
        "POST",
        WEBHOOKS,
        &[
            ("X-Forwarded-For", "10.9.8.7"),
            ("Content-Type", "application/json"),
        ],
        Some(
            json!({"url": "https://93.184.216.34/x", "events": ["*"]})
                .to_string()
                .as_bytes(),
        ),
        Some(t),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let log = get_as(
        &server,
        &format!("{AUDIT}?action=webhook.created"),
        t,
        &[("X-Forwarded-For", "10.9.8.7")],
    );
    assert_eq!(
        log.json()["data"][0]["client"],
        "10.9.8.7",
        "{}",
        log.text()
    );
}

#[test]
fn a_spoofed_x_forwarded_for_from_an_untrusted_peer_changes_nothing() {
    // Trusts a proxy elsewhere: the test client on 127.0.0.1 is not it.
    let refused = Server::start_with(&["--api-allow", "10.0.0.0/8", "--trust-proxy", "192.0.2.1"]);
    get_as(
        &refused,
        WEBHOOKS,
        &refused.token,
        &[("X-Forwarded-For", "10.1.2.3")],
    )
    .error(403, "ip_not_allowed");
    let admitted = Server::start_with(&["--api-allow", "127.0.0.1", "--trust-proxy", "192.0.2.1"]);
    assert_eq!(
        get_as(
            &admitted,
            WEBHOOKS,
            &admitted.token,
            &[("X-Forwarded-For", "8.8.8.8")]
        )
        .status,
        200
    );
    // Without --trust-proxy at all, the header is never read.
    let plain = Server::start_with(&["--api-allow", "10.0.0.0/8"]);
    get_as(
        &plain,
        WEBHOOKS,
        &plain.token,
        &[("X-Forwarded-For", "10.1.2.3")],
    )
    .error(403, "ip_not_allowed");
    // The audit log keeps the real peer.
    let r = admitted.send(
        "POST",
        WEBHOOKS,
        &[
            ("X-Forwarded-For", "8.8.8.8"),
            ("Content-Type", "application/json"),
        ],
        Some(
            json!({"url": "https://93.184.216.34/x", "events": ["*"]})
                .to_string()
                .as_bytes(),
        ),
        Some(&admitted.token),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let log = admitted
        .get(&format!("{AUDIT}?action=webhook.created"))
        .json();
    assert_eq!(log["data"][0]["client"], "127.0.0.1", "{log}");
}

// ------------------------------------------------------------ rate limits

#[test]
fn a_token_over_its_rate_limit_gets_429_with_retry_after_and_others_do_not() {
    let server = Server::start_with(&["--api-rate-limit", "2"]);
    let other = secret_of(&api_token(&server, "read", None));
    // A burst of 2N = 4 passes (one was spent creating `other`), then 429.
    let began = Instant::now();
    let limited = (0..10)
        .map(|_| server.get(WEBHOOKS))
        .find(|r| r.status == 429)
        .expect("no 429 within 10 requests at 2/s");
    let error = limited.error(429, "rate_limited");
    assert!(
        error["message"].as_str().unwrap().contains("rate limit"),
        "{error}"
    );
    let retry_after: u64 = limited
        .header("Retry-After")
        .expect("429 without Retry-After")
        .parse()
        .expect("Retry-After in whole seconds");
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    // Another token has its own bucket.
    assert_eq!(get_as(&server, WEBHOOKS, &other, &[]).status, 200);
    // Once Retry-After has passed, the first token is served again.
    util::wait_for(Duration::from_secs(5), "the bucket to refill", || {
        (began.elapsed() >= Duration::from_secs(retry_after) && server.get(WEBHOOKS).status == 200)
            .then_some(())
    });
}

#[test]
fn api_rate_limit_zero_turns_the_limit_off() {
    let server = Server::start_with(&["--api-rate-limit", "0"]);
    for _ in 0..50 {
        assert_eq!(server.get(WEBHOOKS).status, 200);
    }
}

// ------------------------------------------------------------ audit log

fn audit(server: &Server, query: &str) -> Vec<Value> {
    let r = server.get(&format!("{AUDIT}{query}"));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["data"].as_array().unwrap().clone()
}

#[test]
fn every_change_is_in_the_audit_log_and_no_secret_is_in_it_or_in_the_log() {
    let server = Server::start();
    let mut secrets = vec![server.token.clone()];

    let reader = api_token(&server, "read", Some(&["127.0.0.0/8"]));
    secrets.push(secret_of(&reader));
    secrets.push(server.token("publish"));

    let raw_secret = "shop-receiver-secret-1234";
    secrets.push(raw_secret.into());
    let r = server.post(
        WEBHOOKS,
        &json!({"url": "https://93.184.216.34/hook?key=query-credential-5678", "events": ["item.*"], "secret": raw_secret}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    secrets.push("query-credential-5678".into());
    let hook = r.json()["id"].as_str().unwrap().to_owned();
    let path = format!("{WEBHOOKS}/{hook}");

    let patch = |body: Value| {
        let r = server.request("PATCH", &path, Some(&body));
        assert_eq!(r.status, 200, "{}", r.text());
    };
    patch(json!({"description": "accounting", "events": ["*"]}));
    patch(json!({"enabled": false}));
    patch(json!({"enabled": true}));
    // Changes nothing: no audit row.
    patch(json!({"description": "accounting"}));
    let r = server.post(&format!("{path}/test"), &json!({"event": "item.sold"}));
    assert_eq!(r.status, 202, "{}", r.text());

    let rotated = server.post(&format!("{path}/rotate-secret"), &json!({}));
    assert_eq!(rotated.status, 200, "{}", rotated.text());
    secrets.push(rotated.json()["secret"].as_str().unwrap().to_owned());
    let given = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    secrets.push(given.into());
    let rotated = server.post(&format!("{path}/rotate-secret"), &json!({"secret": given}));
    assert_eq!(rotated.status, 200, "{}", rotated.text());
    let shown = server.get(&format!("{path}/secret"));
    assert_eq!(shown.json()["secret"], given);

    let r = server.post("/api/v1/event-types", &json!({"name": "shop.closed"}));
    assert_eq!(r.status, 201, "{}", r.text());
    let evt = server.post(
        "/api/v1/events",
        &json!({"event": "item.created", "data": util::seed("item.created")}),
    );
    let event_id = evt.json()["id"].as_str().unwrap().to_owned();
    let delivery = server
        .get(&format!("/api/v1/deliveries?event_id={event_id}"))
        .json()["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = server.post(&format!("/api/v1/deliveries/{delivery}/retry"), &json!({}));
    assert_eq!(r.status, 202, "{}", r.text());
    let r = server.post(
        &format!("{path}/replay"),
        &json!({"since": "2020-01-01T00:00:00Z"}),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let reader_id = reader["id"].as_str().unwrap();
    assert_eq!(
        server
            .request("DELETE", &format!("{TOKENS}/{reader_id}"), None)
            .status,
        204
    );
    assert_eq!(server.request("DELETE", &path, None).status, 204);
    // Refused requests change nothing and are not audited.
    server
        .post(
            WEBHOOKS,
            &json!({"url": "http://127.0.0.1/", "events": ["*"], "secret": "refused-secret-999"}),
        )
        .error(422, "validation_failed");
    secrets.push("refused-secret-999".into());

    let entries = audit(&server, "?limit=500");
    let actions: Vec<&str> = entries
        .iter()
        .rev()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "token.created", // bootstrap, by the system
            "token.created", // the reader, by the API
            "token.created", // publish, by the CLI
            "webhook.created",
            "webhook.updated",
            "webhook.disabled",
            "webhook.enabled",
            "webhook.tested",
            "webhook.secret_rotated",
            "webhook.secret_rotated",
            "event_type.created",
            "delivery.retried",
            "webhook.replayed",
            "token.revoked",
            "webhook.deleted",
        ],
        "{entries:#?}"
    );
    let newest_first = |i: usize| &entries[entries.len() - 1 - i];
    assert_eq!(newest_first(0)["actor"], "system");
    assert_eq!(newest_first(2)["actor"], "cli");
    let admin_id = newest_first(0)["target"].as_str().unwrap();
    let by_api = newest_first(3);
    assert_eq!(by_api["actor"], admin_id, "{by_api}");
    assert_eq!(by_api["actor_name"], "bootstrap admin", "{by_api}");
    assert_eq!(by_api["client"], "127.0.0.1", "{by_api}");
    assert_eq!(by_api["target"], hook.as_str(), "{by_api}");
    assert!(by_api["at"].as_str().unwrap().ends_with('Z'), "{by_api}");
    assert_eq!(newest_first(4)["summary"], "changed events, description");
    for e in &entries {
        assert!(e["id"].as_str().unwrap().starts_with("aud_"), "{e}");
        assert!(!e["summary"].as_str().unwrap().is_empty(), "{e}");
    }

    // Filters: by action, by time; pagination.
    let rotations = audit(&server, "?action=webhook.secret_rotated");
    assert_eq!(rotations.len(), 2);
    assert!(audit(&server, "?since=2999-01-01T00:00:00Z").is_empty());
    assert_eq!(audit(&server, "?until=2000-01-01T00:00:00Z").len(), 0);
    let first = server.get(&format!("{AUDIT}?limit=5")).json();
    let cursor = first["next_cursor"].as_str().expect("a next page");
    let second = audit(&server, &format!("?limit=500&cursor={cursor}"));
    assert_eq!(second.len(), entries.len() - 5);
    server
        .get(&format!("{AUDIT}?action=DROP%20TABLE"))
        .error(422, "validation_failed");
    server
        .get(&format!("{AUDIT}?since=yesterday"))
        .error(422, "validation_failed");

    // Not one secret or token in the audit log, the lists, or the log.
    let audit_text = server.get(&format!("{AUDIT}?limit=500")).text();
    let lists = server.get(WEBHOOKS).text() + &server.get(TOKENS).text();
    let log = server.log();
    for secret in &secrets {
        assert!(
            !audit_text.contains(secret.as_str()),
            "audit log holds {secret}"
        );
        assert!(!lists.contains(secret.as_str()), "a list holds {secret}");
        assert!(
            !log.contains(secret.as_str()),
            "server log holds {secret}:\n{log}"
        );
    }
}

#[test]
fn the_first_token_and_the_alert_webhook_are_audited_as_changes_by_the_system() {
    let first = "http://127.0.0.1:9/first";
    let mut server = Server::start_with(&["--allow-targets", "127.0.0.0/8", "--alert-url", first]);
    let oldest_first = |server: &Server| -> Vec<(String, String, String)> {
        audit(server, "?limit=500")
            .iter()
            .rev()
            .map(|e| {
                let field = |name: &str| e[name].as_str().unwrap_or_default().to_owned();
                (field("action"), field("actor"), field("target"))
            })
            .collect()
    };
    let entries = oldest_first(&server);
    let actions: Vec<(&str, &str)> = entries
        .iter()
        .map(|(action, actor, _)| (action.as_str(), actor.as_str()))
        .collect();
    assert_eq!(
        actions,
        [("token.created", "system"), ("webhook.created", "system")],
        "{entries:?}"
    );
    assert!(entries[0].2.starts_with("tok_"), "{entries:?}");
    let hook = entries[1].2.clone();
    let path = format!("{WEBHOOKS}/{hook}");
    let shown = server.get(&path).json();
    assert_eq!(shown["url"], first, "{shown}");
    assert_eq!(shown["events"], json!(["hookbox.alert"]), "{shown}");

    // The same flags again change nothing, so they add no row.
    server.restart();
    assert_eq!(oldest_first(&server), entries);

    // Another URL and secret: the same webhook, re-pointed and re-keyed.
    let second = "http://127.0.0.1:9/second";
    server.restart_with(&[
        "--pause-delivery",
        "--allow-targets",
        "127.0.0.0/8",
        "--alert-url",
        second,
        "--alert-secret",
        "pager-secret-2222",
    ]);
    let after = oldest_first(&server);
    assert_eq!(after[..2], entries[..], "{after:?}");
    let added: Vec<(&str, &str, &str)> = after[2..]
        .iter()
        .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
        .collect();
    assert_eq!(
        added,
        [
            ("webhook.updated", "system", hook.as_str()),
            ("webhook.secret_rotated", "system", hook.as_str()),
        ]
    );
    assert_eq!(server.get(&path).json()["url"], second);
    let everything = format!("{:?}{}", audit(&server, "?limit=500"), server.log());
    assert!(
        !everything.contains("pager-secret-2222"),
        "the alert secret leaked"
    );
}

#[test]
fn api_responses_are_never_cached() {
    let server = Server::start();
    for r in [
        server.get(WEBHOOKS),
        server.get("/api/v1/nope"),
        server.send("GET", WEBHOOKS, &[], None, None),
    ] {
        assert_eq!(r.header("Cache-Control"), Some("no-store"), "{}", r.status);
    }
}

#[test]
fn a_token_pasted_into_a_path_is_not_echoed_in_the_404() {
    let server = Server::start();
    for path in [
        format!("{TOKENS}/{}", server.token),
        format!("{WEBHOOKS}/{}", server.token),
        format!("/api/v1/deliveries/{}", server.token),
    ] {
        let method = if path.starts_with(TOKENS) {
            "DELETE"
        } else {
            "GET"
        };
        let r = server.request(method, &path, None);
        r.error(404, "not_found");
        assert!(!r.text().contains(&server.token), "{path}: {}", r.text());
    }
    // A real id is named.
    let r = server.request(
        "DELETE",
        &format!("{TOKENS}/tok_00000000000000000000000000"),
        None,
    );
    assert!(
        r.text().contains("tok_00000000000000000000000000"),
        "{}",
        r.text()
    );
}

/// One request to `addr` (not the server's own address).
fn request_via(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    body: &str,
) -> Response {
    use std::io::{BufReader, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    util::read_response(&mut BufReader::new(stream)).unwrap()
}

#[test]
fn ipv4_mapped_forms_count_as_the_ipv4_address() {
    // An allowlist entry written as IPv4-mapped IPv6 admits the IPv4 client.
    let server = Server::start_with(&["--api-allow", "::ffff:127.0.0.1/128"]);
    assert_eq!(server.get(WEBHOOKS).status, 200);
    // On a dual-stack listener an IPv4 client's peer is ::ffff:127.0.0.1:
    // it is admitted by an IPv4 entry and audited as 127.0.0.1.
    let dual = Server::delivering_on("[::]:0", &["--pause-delivery", "--api-allow", "127.0.0.1"]);
    let v4 = std::net::SocketAddr::from(([127, 0, 0, 1], dual.addr.port()));
    let r = request_via(v4, "GET", WEBHOOKS, &dual.token, "");
    assert_eq!(r.status, 200, "{}", r.text());
    let r = request_via(
        v4,
        "POST",
        "/api/v1/event-types",
        &dual.token,
        r#"{"name":"shop.opened"}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let log = request_via(
        v4,
        "GET",
        &format!("{AUDIT}?action=event_type.created"),
        &dual.token,
        "",
    );
    assert_eq!(
        log.json()["data"][0]["client"],
        "127.0.0.1",
        "{}",
        log.text()
    );
}
