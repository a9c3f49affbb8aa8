//! `hookbox trigger` and `hookbox listen` (issue 14, item 5) from outside:
//! the real binary as a CLI against the real binary serving, and a real
//! receiver on 127.0.0.1 standing in for the integrator's laptop.
//! Signatures are checked by the test's own verifier (`util::receiver`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod util;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use serde_json::{Value, json};
use util::receiver::{Answer, Receiver, verify};
use util::{BIN, Server};

const SHORT: Duration = Duration::from_secs(10);

fn api(server: &Server) -> String {
    format!("http://{}", server.addr)
}

fn trigger(server: &Server, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("trigger")
        .args(args)
        .args(["--api", &api(server), "--token", &server.token])
        .output()
        .unwrap()
}

fn event(server: &Server, id: &str) -> Value {
    let r = server.get(&format!("/api/v1/events/{id}"));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn example(server: &Server, name: &str) -> Value {
    let catalog = server.get("/api/v1/event-types").json();
    catalog["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap()["example"]
        .clone()
}

#[test]
fn trigger_publishes_the_catalog_example_or_the_data_given() {
    let server = Server::start();
    let out = trigger(&server, &["item.sold"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = answer["id"].as_str().unwrap();
    assert_eq!(event(&server, id)["data"], example(&server, "item.sold"));

    let data = json!({"consignor_id": "7d6f1c2e-8a4b-4c3d-9e5f-0a1b2c3d4e5f", "email": "a@example.com", "name": "Ada"});
    let out = trigger(&server, &["profile.created", "--data", &data.to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(event(&server, answer["id"].as_str().unwrap())["data"], data);

    // Without --token: the admin token hookbox wrote beside its database.
    let out = Command::new(BIN)
        .args(["trigger", "email.updated", "--api", &api(&server), "--db"])
        .arg(server.db())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn trigger_says_what_is_wrong_and_publishes_nothing() {
    let server = Server::start();
    let cases: [(&[&str], &str); 3] = [
        (
            &["no.such"],
            "unknown event type no.such; the catalog has email.updated",
        ),
        (&["item.sold", "--data", "{oops"], "--data is not JSON"),
        (
            &["item.sold", "--data", r#"{"item_id": 1}"#],
            "hookbox answered 422 validation_failed",
        ),
    ];
    for (args, message) in cases {
        let out = trigger(&server, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
    for (api, token, message) in [
        (api(&server), "nope", "hookbox answered 401"),
        (
            "http://127.0.0.1:9".to_owned(),
            "x",
            "is hookbox running there",
        ),
    ] {
        let out = Command::new(BIN)
            .args(["trigger", "item.sold", "--api", &api, "--token", token])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{api}");
        assert!(stderr.contains(message), "{api}: {stderr}");
    }
    let listed = server.get("/api/v1/events").json();
    assert_eq!(listed["data"], json!([]), "{listed}");
}

/// `hookbox listen` running, with its standard output read line by line.
struct Listening {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Listening {
    fn start(server: &Server, args: &[&str]) -> Listening {
        let mut child = Command::new(BIN)
            .arg("listen")
            .args(args)
            .args([
                "--api",
                &api(server),
                "--token",
                &server.token,
                "--interval",
                "50ms",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Listening { child, lines }
    }

    fn line(&self) -> String {
        self.lines
            .recv_timeout(SHORT)
            .expect("a line from hookbox listen within 10 s")
    }

    /// Waits for the process to end by itself (`--count`).
    fn exits(mut self) {
        let deadline = std::time::Instant::now() + SHORT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "listen exited with {status}");
                return;
            }
            assert!(std::time::Instant::now() < deadline, "listen did not stop");
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn publish(server: &Server, event_type: &str) -> String {
    let r = server.post(
        "/api/v1/events",
        &json!({"event": event_type, "data": util::seed(event_type)}),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    r.json()["id"].as_str().unwrap().to_owned()
}

#[test]
fn listen_forwards_each_new_event_once_signed_to_a_local_receiver() {
    let server = Server::start();
    let rx = Receiver::start(|_, _| Answer::ok());
    let before = publish(&server, "item.sold");
    let listening = Listening::start(
        &server,
        &["--forward-to", &rx.url("/local"), "--count", "3"],
    );
    let ready = listening.line();
    let secret = ready
        .rsplit(' ')
        .next()
        .filter(|s| s.starts_with("whsec_"))
        .unwrap_or_else(|| panic!("no secret in {ready:?}"))
        .to_owned();
    let published: Vec<String> = ["item.sold", "profile.created", "email.updated"]
        .iter()
        .map(|t| publish(&server, t))
        .collect();
    let seen = rx.wait_for(&server, 3, SHORT);
    let mut got: Vec<String> = seen.iter().map(|s| s.webhook_id().to_owned()).collect();
    got.sort();
    let mut want = published.clone();
    want.sort();
    assert_eq!(
        got, want,
        "each new event once, none from before ({before})"
    );
    for s in &seen {
        verify(&secret, s).unwrap_or_else(|e| panic!("{e}: {s:?}"));
        assert!(s.header("user-agent").unwrap().starts_with("hookbox/"));
        // The body a webhook's receiver gets, byte for byte.
        let stored = event(&server, s.webhook_id());
        let body: Value = serde_json::from_slice(&s.body).unwrap();
        assert_eq!(body["data"], stored["data"]);
        assert_eq!(body["timestamp"], stored["timestamp"]);
    }
    for _ in 0..3 {
        let line = listening.line();
        assert!(line.contains("-> 200"), "{line}");
    }
    listening.exits();
    rx.stays_at(&server, 3, Duration::from_millis(200));
}

#[test]
fn listen_as_a_webhook_forwards_its_event_types_with_its_secret_and_headers() {
    let server = Server::start();
    let rx = Receiver::start(|_, _| Answer::ok());
    let r = server.post(
        "/api/v1/webhooks",
        &json!({
            "url": "https://93.184.216.34/hook",
            "events": ["item.*"],
            "secret": "your-secret-key",
            "headers": {"X-Api-Key": "dev-key"},
        }),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let listening = Listening::start(
        &server,
        &[
            "--forward-to",
            &rx.url("/as-webhook"),
            "--webhook",
            &id,
            "--count",
            "1",
        ],
    );
    let ready = listening.line();
    assert!(ready.contains(&format!("webhook {id}'s")), "{ready}");
    publish(&server, "profile.created");
    let sold = publish(&server, "item.sold");
    let seen = rx.wait_for(&server, 1, SHORT).remove(0);
    assert_eq!(seen.webhook_id(), sold);
    verify("your-secret-key", &seen).unwrap_or_else(|e| panic!("{e}: {seen:?}"));
    assert_eq!(seen.header("x-api-key"), Some("dev-key"));
    listening.exits();

    // Its secret is an admin's to read.
    let read = server.token("read");
    let out = Command::new(BIN)
        .args(["listen", "--forward-to", &rx.url("/x"), "--webhook", &id])
        .args(["--api", &api(&server), "--token", &read])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("secret") && stderr.contains("403"),
        "{stderr}"
    );
}

#[test]
fn events_after_an_id_are_listed_oldest_first() {
    let server = Server::start();
    let ids: Vec<String> = (0..4).map(|_| publish(&server, "item.sold")).collect();
    let r = server.get(&format!("/api/v1/events?after={}&limit=2", ids[0]));
    assert_eq!(r.status, 200, "{}", r.text());
    let page = r.json();
    let listed: Vec<&str> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [ids[1].as_str(), ids[2].as_str()]);
    assert_eq!(page["next_cursor"], Value::Null);
    let r = server.get(&format!("/api/v1/events?after={}", ids[3]));
    assert_eq!(r.json()["data"], json!([]));

    for (query, code) in [
        ("after=wh_00000000000000000000000000".to_owned(), "invalid"),
        (format!("after={}&cursor={}", ids[0], ids[3]), "conflict"),
    ] {
        let r = server.get(&format!("/api/v1/events?{query}"));
        assert_eq!(r.status, 422, "{query}: {}", r.text());
        assert_eq!(r.json()["error"]["details"][0]["code"], code, "{query}");
    }
}
