//! Monitoring (issue 6): `/healthz`, `/metrics` checked by promtool, the
//! alert rules file, `/api/v1/stats` (also after a restart), and alerts that
//! open, are stored, delivered signed to `--alert-url`, and resolve.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use util::receiver::{Answer, Receiver, verify};
use util::{Server, eventually};

const WAIT: Duration = Duration::from_secs(15);

const NEEDS_PROMTOOL: &str = "promtool is Debian's prometheus package: bash .ci/tools";

fn promtool(args: &[&str], stdin: Option<&[u8]>) -> std::process::Output {
    let mut child = Command::new(util::require_tool(&["promtool"], NEEDS_PROMTOOL))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

fn publish(server: &Server, event: &str) -> String {
    let r = server.post(
        "/api/v1/events",
        &json!({"event": event, "data": util::seed(event)}),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    r.json()["id"].as_str().unwrap().to_owned()
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

/// A server that has delivered one event after a failed first attempt,
/// with the `/metrics` text that counts it.
fn server_after_a_retried_delivery() -> (Server, Receiver, String) {
    let rx = Receiver::start(|n, _| {
        if n == 0 {
            Answer::status(500)
        } else {
            Answer::ok()
        }
    });
    let server = Server::delivering(&[
        "--allow-targets",
        "127.0.0.0/8",
        "--retry-base-delay",
        "100ms",
    ]);
    let r = server.post(
        "/api/v1/webhooks",
        &json!({"url": rx.url("/m"), "events": ["*"]}),
    );
    assert_eq!(r.status, 201);
    publish(&server, "item.sold");
    rx.wait_for(&server, 2, WAIT);
    let text = eventually(
        &server,
        WAIT,
        || "metrics to count both attempts".into(),
        || {
            let text = server.send("GET", "/metrics", &[], None, None).text();
            (metric(&text, "hookbox_delivery_attempts_total{result=\"success\"}") == 1.0)
                .then_some(text)
        },
    );
    (server, rx, text)
}

#[test]
fn metrics_count_what_happened() {
    let (server, _rx, text) = server_after_a_retried_delivery();
    assert_eq!(
        metric(
            &text,
            "hookbox_events_published_total{event_type=\"item.sold\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "hookbox_delivery_attempts_total{result=\"http_status\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(&text, "hookbox_deliveries_total{outcome=\"retried\"}"),
        1.0
    );
    assert_eq!(
        metric(&text, "hookbox_deliveries_total{outcome=\"succeeded\"}"),
        1.0
    );
    assert_eq!(metric(&text, "hookbox_delivery_retries_total"), 1.0);
    assert_eq!(
        metric(&text, "hookbox_delivery_response_time_seconds_count"),
        2.0
    );
    assert_eq!(metric(&text, "hookbox_webhooks{state=\"enabled\"}"), 1.0);
    assert!(
        text.contains("hookbox_api_requests_total{route=\"publish_event\",status=\"202\"} 1"),
        "{text}"
    );
    assert!(text.contains("hookbox_queue_pending_deliveries "), "{text}");
    let r = server.send("GET", "/metrics", &[], None, None);
    assert!(
        r.header("Content-Type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    // A scraper that asks for OpenMetrics gets it.
    let om = server.send(
        "GET",
        "/metrics",
        &[("Accept", "application/openmetrics-text; version=1.0.0")],
        None,
        None,
    );
    assert!(
        om.header("Content-Type")
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    assert!(om.text().ends_with("# EOF\n"));
}

#[test]
#[ignore = "needs promtool (Debian's prometheus): bash .ci/tools"]
fn metrics_of_a_server_that_retried_pass_promtool() {
    let (server, _rx, _) = server_after_a_retried_delivery();
    let r = server.send("GET", "/metrics", &[], None, None);
    let check = promtool(&["check", "metrics"], Some(&r.body));
    assert!(
        check.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn metrics_allow_limits_who_scrapes() {
    let closed = Server::start_with(&["--metrics-allow", "10.0.0.0/8"]);
    closed
        .send("GET", "/metrics", &[], None, None)
        .error(403, "ip_not_allowed");
    let open = Server::start_with(&["--metrics-allow", "127.0.0.1"]);
    assert_eq!(open.send("GET", "/metrics", &[], None, None).status, 200);

    // Behind a trusted proxy the scraper is the client X-Forwarded-For
    // names, not the proxy.
    let proxied = Server::start_with(&[
        "--trust-proxy",
        "127.0.0.1",
        "--metrics-allow",
        "10.0.0.0/8",
    ]);
    let via = |client: &str| {
        proxied
            .send(
                "GET",
                "/metrics",
                &[("X-Forwarded-For", client)],
                None,
                None,
            )
            .status
    };
    assert_eq!(via("10.1.2.3"), 200);
    assert_eq!(via("192.0.2.9"), 403);
    proxied
        .send("GET", "/metrics", &[], None, None)
        .error(403, "ip_not_allowed");
}

#[test]
#[ignore = "needs promtool (Debian's prometheus): bash .ci/tools"]
fn the_shipped_alert_rules_pass_promtool() {
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/prometheus/alerts.yml");
    let out = promtool(&["check", "rules", rules.to_str().unwrap()], None);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn healthz_names_its_checks_and_the_queue() {
    let paused = Server::start();
    let h = paused.send("GET", "/healthz", &[], None, None).json();
    assert_eq!(h["status"], "ok", "{h}");
    assert_eq!(h["checks"]["database"], "ok", "{h}");
    assert_eq!(h["checks"]["scheduler"], "paused", "{h}");
    paused.create_webhook(&["*"]);
    publish(&paused, "item.created");
    let h = eventually(
        &paused,
        WAIT,
        || "the queue to show".into(),
        || {
            let h = paused.send("GET", "/healthz", &[], None, None).json();
            (h["queue"]["pending"] == 1).then_some(h)
        },
    );
    assert!(h["queue"]["oldest_pending_age_s"].is_u64(), "{h}");
    let running = Server::delivering(&[]);
    let h = running.send("GET", "/healthz", &[], None, None).json();
    assert_eq!(h["checks"]["scheduler"], "ok", "{h}");
    assert_eq!(h["checks"]["workers"], "ok", "{h}");
}

#[test]
fn stats_report_the_last_hour_and_survive_a_restart() {
    let status = Arc::new(AtomicU16::new(500));
    let rx = Receiver::start({
        let status = status.clone();
        move |_, _| Answer::status(status.load(Ordering::SeqCst)).after(Duration::from_millis(20))
    });
    let mut server = Server::delivering(&["--allow-targets", "127.0.0.0/8", "--max-attempts", "1"]);
    let hook = server.post(
        "/api/v1/webhooks",
        &json!({"url": rx.url("/s"), "events": ["*"]}),
    );
    let hook = hook.json()["id"].as_str().unwrap().to_owned();
    publish(&server, "item.created");
    rx.wait_for(&server, 1, WAIT);
    status.store(200, Ordering::SeqCst);
    for _ in 0..3 {
        publish(&server, "item.created");
    }
    let check = |server: &Server| {
        eventually(
            server,
            WAIT,
            || "stats to count 4 attempts".into(),
            || {
                let s = server.get("/api/v1/stats").json();
                (s["last_hour"]["attempts"] == 4).then_some(s)
            },
        )
    };
    let s = check(&server);
    let hour = &s["last_hour"];
    assert_eq!(hour["succeeded"], 3, "{s}");
    assert_eq!(hour["failed"], 1, "{s}");
    assert_eq!(hour["exhausted"], 1, "{s}");
    assert_eq!(hour["error_rate"], 0.25, "{s}");
    let p50 = hour["response_time_ms"]["p50"].as_u64().unwrap();
    assert!((15..=200).contains(&p50), "{s}");
    assert_eq!(s["last_day"]["attempts"], 4, "{s}");
    assert_eq!(s["webhooks"]["enabled"], 1, "{s}");
    assert_eq!(s["series"]["minutes"].as_array().unwrap().len(), 60);
    let minutes = s["series"]["minutes"].as_array().unwrap();
    let total: u64 = minutes
        .iter()
        .map(|m| m["succeeded"].as_u64().unwrap() + m["failed"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 4, "{s}");
    let w = server.get(&format!("/api/v1/webhooks/{hook}/stats")).json();
    assert_eq!(w["webhook_id"], hook.as_str());
    assert_eq!(w["last_hour"]["attempts"], 4, "{w}");
    server
        .get("/api/v1/webhooks/wh_00000000000000000000000000/stats")
        .error(404, "not_found");

    // After a restart the last day is read back from the attempts stored.
    assert_eq!(server.terminate().code(), Some(0));
    server.restart();
    let s = check(&server);
    assert_eq!(s["last_hour"]["failed"], 1, "{s}");
}

#[test]
fn a_failing_webhook_raises_an_alert_that_is_delivered_signed_and_resolves() {
    let status = Arc::new(AtomicU16::new(500));
    let shop = Receiver::start({
        let status = status.clone();
        move |_, _| Answer::status(status.load(Ordering::SeqCst)).body("database down")
    });
    let pager = Receiver::start(|_, _| Answer::ok());
    let mut server = Server::delivering(&[
        "--allow-targets",
        "127.0.0.0/8",
        "--max-attempts",
        "1",
        "--alert-check-every",
        "200ms",
        "--alert-url",
        &pager.url("/alerts?key=pager-access-key"),
    ]);
    let secret_file = server.dir.path().join("hookbox.db.alert-secret");
    let secret = std::fs::read_to_string(&secret_file)
        .unwrap()
        .trim()
        .to_owned();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&secret_file)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert!(
        !server.log().contains(&secret),
        "the alert secret is logged"
    );
    let hook = server.post(
        "/api/v1/webhooks",
        &json!({"url": shop.url("/orders?token=shop-access-key"), "events": ["item.*"]}),
    );
    let hook = hook.json()["id"].as_str().unwrap().to_owned();
    let event = publish(&server, "item.sold");

    // The delivery fails for good: one alert opens, says why, is delivered.
    let alert = eventually(
        &server,
        WAIT,
        || "a delivery_failures alert".into(),
        || {
            let list = server.get("/api/v1/alerts?status=open").json();
            list["data"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["rule"] == "delivery_failures")
                .cloned()
        },
    );
    assert_eq!(alert["webhook_id"], hook.as_str(), "{alert}");
    assert!(alert["id"].as_str().unwrap().starts_with("alt_"));
    let message = alert["message"].as_str().unwrap();
    assert!(message.contains(&shop.url("/orders")), "{message}");
    assert!(
        message.contains("500") && message.contains("database down"),
        "{message}"
    );
    let sent = pager.wait_for(&server, 1, WAIT);
    verify(&secret, &sent[0]).unwrap();
    let body = sent[0].json();
    assert_eq!(body["event"], "hookbox.alert");
    assert_eq!(body["data"]["alert_id"], alert["id"]);
    assert_eq!(body["data"]["status"], "open");
    util::wait_for(WAIT, "the alert to be logged", || {
        server.log().contains("alert raised").then_some(())
    });
    // Webhook URLs are logged without their query strings.
    let log = server.log();
    assert!(
        log.contains(&format!("alerts go to {} through", pager.url("/alerts"))),
        "{log}"
    );
    for key in ["pager-access-key", "shop-access-key"] {
        assert!(!log.contains(key), "{key} is logged:\n{log}");
    }
    // It fires once: several more checks add nothing.
    let delivery = server
        .get(&format!("/api/v1/deliveries?event_id={event}"))
        .json()["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Five more rounds of checks (200 ms each) deliver nothing more.
    pager.stays_at(&server, 1, Duration::from_secs(1));
    let open = server.get("/api/v1/alerts?status=open").json();
    assert_eq!(
        open["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["rule"] == "delivery_failures")
            .count(),
        1
    );

    // The receiver recovers; a retry succeeds; the alert resolves.
    status.store(200, Ordering::SeqCst);
    let r = server.post(&format!("/api/v1/deliveries/{delivery}/retry"), &json!({}));
    assert_eq!(r.status, 202, "{}", r.text());
    let resolved = eventually(
        &server,
        WAIT,
        || "the alert to resolve".into(),
        || {
            let list = server.get("/api/v1/alerts?status=resolved").json();
            list["data"].as_array().unwrap().first().cloned()
        },
    );
    assert_eq!(resolved["id"], alert["id"]);
    assert!(resolved["resolved_at"].is_string(), "{resolved}");
    let sent = pager.wait_for(&server, 2, WAIT);
    assert_eq!(sent[1].json()["data"]["status"], "resolved");
    verify(&secret, &sent[1]).unwrap();

    // The alert webhook survives a restart as it was: same secret, one hook.
    assert_eq!(server.terminate().code(), Some(0));
    server.restart();
    let hooks = server.get("/api/v1/webhooks").json();
    let alert_hooks: Vec<&Value> = hooks["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["events"] == json!(["hookbox.alert"]))
        .collect();
    assert_eq!(alert_hooks.len(), 1, "{hooks}");
}

#[test]
fn a_webhook_disabled_by_a_410_raises_an_alert_until_enabled() {
    let status = Arc::new(AtomicU16::new(410));
    let gone = Receiver::start({
        let status = status.clone();
        move |_, _| Answer::status(status.load(Ordering::SeqCst))
    });
    let server = Server::delivering(&[
        "--allow-targets",
        "127.0.0.0/8",
        "--alert-check-every",
        "200ms",
    ]);
    let hook = server.post(
        "/api/v1/webhooks",
        &json!({"url": gone.url("/gone"), "events": ["*"]}),
    );
    let hook = hook.json()["id"].as_str().unwrap().to_owned();
    publish(&server, "item.created");
    let alert = eventually(
        &server,
        WAIT,
        || "a webhook_disabled alert".into(),
        || {
            let list = server.get("/api/v1/alerts?status=open").json();
            list["data"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["rule"] == "webhook_disabled")
                .cloned()
        },
    );
    assert!(
        alert["message"].as_str().unwrap().contains("410"),
        "{alert}"
    );
    let audit = server
        .get("/api/v1/audit-log?action=webhook.disabled")
        .json();
    assert_eq!(audit["data"][0]["actor"], "system", "{audit}");
    // The receiver is back; its owner enables the webhook again.
    status.store(200, Ordering::SeqCst);
    let r = server.request(
        "PATCH",
        &format!("/api/v1/webhooks/{hook}"),
        Some(&json!({"enabled": true})),
    );
    assert_eq!(r.status, 200);
    eventually(
        &server,
        WAIT,
        || "the alert to resolve".into(),
        || {
            let list = server.get("/api/v1/alerts?status=open").json();
            list["data"].as_array().unwrap().is_empty().then_some(())
        },
    );
    server
        .get("/api/v1/alerts?status=maybe")
        .error(422, "validation_failed");
}

fn open_rules(server: &Server) -> Vec<String> {
    let list = server.get("/api/v1/alerts?status=open").json();
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["rule"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn error_rate_and_slow_response_rules_fire_on_their_thresholds_and_no_timeout_rule_without_timeouts()
 {
    // Every answer is a slow 500: failing and slow, but never timing out.
    let slow = Receiver::start(|_, _| Answer::status(500).after(Duration::from_millis(80)));
    let server = Server::delivering(&[
        "--allow-targets",
        "127.0.0.0/8",
        "--max-attempts",
        "1",
        "--alert-check-every",
        "200ms",
        "--alert-min-samples",
        "4",
        "--alert-p95",
        "50ms",
        "--alert-error-rate",
        "50",
    ]);
    let r = server.post(
        "/api/v1/webhooks",
        &json!({"url": slow.url("/slow"), "events": ["item.*"]}),
    );
    assert_eq!(r.status, 201);
    for _ in 0..5 {
        publish(&server, "item.created");
    }
    let rules = eventually(
        &server,
        WAIT,
        || format!("alerts: {:?}", open_rules(&server)),
        || {
            let rules = open_rules(&server);
            (rules.contains(&"error_rate".to_owned())
                && rules.contains(&"slow_responses".to_owned()))
            .then_some(rules)
        },
    );
    assert!(!rules.contains(&"timeouts".to_owned()), "{rules:?}");
    let alerts = server.get("/api/v1/alerts?status=open").json();
    let rate = alerts["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["rule"] == "error_rate")
        .unwrap()
        .clone();
    // Every attempt so far failed (the check may come before the fifth).
    let message = rate["message"].as_str().unwrap();
    assert!(message.starts_with("100% of "), "{rate}");
}

#[test]
fn queue_age_and_disk_space_rules_watch_the_system() {
    let server = Server::start_with(&[
        "--alert-check-every",
        "200ms",
        "--alert-queue-age",
        "1s",
        // More free space than any disk has: the rule must fire.
        "--alert-disk-free",
        "1000000000GiB",
    ]);
    server.create_webhook(&["*"]);
    publish(&server, "item.created");
    let rules = eventually(
        &server,
        WAIT,
        || format!("alerts: {:?}", open_rules(&server)),
        || {
            let rules = open_rules(&server);
            (rules.contains(&"queue_age".to_owned()) && rules.contains(&"disk_space".to_owned()))
                .then_some(rules)
        },
    );
    assert!(!rules.contains(&"database".to_owned()), "{rules:?}");
}
