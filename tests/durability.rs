//! SPEC section 5 from outside: what was answered 202 survives `kill -9`
//! and SIGTERM; the files hookbox writes are private; a restart keeps the
//! admin token and leaves a database `hookbox check` accepts.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod util;

use std::collections::{BTreeMap, BTreeSet};
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use serde_json::{Value, json};
use util::Server;

/// A loopback port with nothing listening: deliveries to it fail at once,
/// and no traffic leaves the machine.
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("local addr").port()
}

/// A server whose webhooks may target loopback, with two webhooks that
/// take `item.created`; returns their ids.
fn server_with_webhooks() -> (Server, BTreeSet<String>) {
    let server = Server::start_with(&["--allow-targets", "127.0.0.0/8"]);
    let port = closed_port();
    let ids = ["item.*", "*"]
        .iter()
        .map(|filter| {
            let r = server.post(
                "/api/v1/webhooks",
                &json!({"url": format!("http://127.0.0.1:{port}/hook"), "events": [filter]}),
            );
            assert_eq!(r.status, 201, "{}", r.text());
            r.json()["id"].as_str().expect("webhook id").to_owned()
        })
        .collect();
    (server, ids)
}

fn item(n: usize) -> Value {
    let mut data = util::seed("item.created");
    data["title"] = json!(format!("item {n}"));
    data
}

/// Publishes on a fresh connection without panicking on I/O errors (the
/// server may be stopping): the status and body, or the error.
fn publish(addr: SocketAddr, token: &str, n: usize) -> std::io::Result<(u16, Value)> {
    let body = json!({"event": "item.created", "data": item(n)}).to_string();
    let raw = format!(
        "POST /api/v1/events HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    std::io::Write::write_all(&mut stream, raw.as_bytes())?;
    let r = util::read_response(&mut std::io::BufReader::new(stream))?;
    let body = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    Ok((r.status, body))
}

/// Every event in `accepted` (id → title) is stored with its data and one
/// delivery per webhook in `webhooks`.
fn assert_all_stored(
    server: &Server,
    accepted: &BTreeMap<String, String>,
    webhooks: &BTreeSet<String>,
) {
    for (id, title) in accepted {
        let r = server.get(&format!("/api/v1/events/{id}"));
        assert_eq!(
            r.status,
            200,
            "accepted event {id} is gone after the restart: {}\n--- server log ---\n{}",
            r.text(),
            server.log()
        );
        let event = r.json();
        assert_eq!(event["id"], id.as_str(), "{event}");
        assert_eq!(event["event"], "item.created", "{event}");
        assert_eq!(event["data"]["title"], title.as_str(), "{event}");
        let deliveries = event["deliveries"].as_array().expect("deliveries array");
        let to: BTreeSet<String> = deliveries
            .iter()
            .map(|d| {
                assert_eq!(d["event_id"], id.as_str(), "{d}");
                d["webhook_id"].as_str().expect("webhook_id").to_owned()
            })
            .collect();
        assert_eq!(deliveries.len(), webhooks.len(), "{event}");
        assert_eq!(&to, webhooks, "{event}");
    }
}

#[test]
fn event_accepted_survives_sigkill() {
    let (mut server, webhooks) = server_with_webhooks();
    const THREADS: usize = 8;
    const PER_THREAD: usize = 25;
    let (addr, token) = (server.addr, server.token.clone());
    let accepted: BTreeMap<String, String> = thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let token = &token;
                s.spawn(move || {
                    (0..PER_THREAD)
                        .map(|i| {
                            let n = t * PER_THREAD + i;
                            let (status, body) = publish(addr, token, n).expect("publish");
                            assert_eq!(status, 202, "event {n}: {body}");
                            assert_eq!(body["deliveries"], 2, "event {n}: {body}");
                            let id = body["id"].as_str().expect("id").to_owned();
                            (id, format!("item {n}"))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("publisher thread"))
            .collect()
    });
    assert_eq!(accepted.len(), THREADS * PER_THREAD, "event ids are unique");

    server.kill9();
    server.restart();
    assert_all_stored(&server, &accepted, &webhooks);
    let listed = server.get("/api/v1/events?limit=500").json();
    assert_eq!(
        listed["data"].as_array().expect("data").len(),
        accepted.len(),
        "{listed}"
    );
}

/// Publishes from 4 threads, stops the server with SIGTERM while they are
/// busy, and restarts it. Returns the accepted events (id → title) and
/// every answer that was neither 202 nor a connection error.
fn publish_through_sigterm(server: &mut Server) -> (BTreeMap<String, String>, Vec<String>) {
    let (addr, token) = (server.addr, server.token.clone());
    let attempts = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let (accepted, others) = thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let (token, attempts, stop) = (&token, &attempts, &stop);
                s.spawn(move || {
                    let mut accepted = Vec::new();
                    let mut others = Vec::new();
                    for i in 0.. {
                        let n = t * 1_000_000 + i;
                        match publish(addr, token, n) {
                            Ok((202, body)) => {
                                let id = body["id"].as_str().expect("id").to_owned();
                                accepted.push((id, format!("item {n}")));
                            }
                            Ok((status, body)) => others.push(format!("{status} {body}")),
                            // Refused or cut off: the server stopped.
                            Err(_) => break,
                        }
                        attempts.fetch_add(1, Ordering::Relaxed);
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                    }
                    (accepted, others)
                })
            })
            .collect();
        // Ends the publishers if this thread panics before the server stops.
        let _stop = SetOnDrop(&stop);
        util::wait_for(Duration::from_secs(20), "publishing to start", || {
            (attempts.load(Ordering::Relaxed) >= 40).then_some(())
        });
        let status = server.terminate();
        assert!(status.success(), "{status}\n{}", server.log());
        let mut accepted = BTreeMap::new();
        let mut others = Vec::new();
        for h in handles {
            let (a, o) = h.join().expect("publisher thread");
            accepted.extend(a);
            others.extend(o);
        }
        (accepted, others)
    });
    assert!(accepted.len() >= 30, "only {} accepted", accepted.len());
    server.restart();
    (accepted, others)
}

#[test]
fn events_answered_202_while_sigterm_stops_the_server_survive() {
    let (mut server, webhooks) = server_with_webhooks();
    let (accepted, _) = publish_through_sigterm(&mut server);
    assert_all_stored(&server, &accepted, &webhooks);
}

#[test]

fn requests_caught_by_sigterm_are_refused_with_503_not_500() {
    let (mut server, _) = server_with_webhooks();
    let (_, others) = publish_through_sigterm(&mut server);
    let wrong: Vec<_> = others.iter().filter(|o| !o.starts_with("503")).collect();
    assert!(
        wrong.is_empty(),
        "while stopping, publishes were answered {wrong:?}\n{}",
        server.log()
    );
}

/// Sets the flag when dropped, also while unwinding.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn admin_token_file_and_database_files_are_mode_0600() {
    let server = Server::start();
    // Write something, so the WAL holds data too.
    server.create_webhook(&["*"]);
    let token_file = server.dir.path().join("hookbox.db.admin-token");
    assert_eq!(mode(&token_file), 0o600, "{}", token_file.display());
    assert_eq!(mode(&server.db()), 0o600, "{}", server.db().display());
    for suffix in ["-wal", "-shm"] {
        let path = sidecar(&server.db(), suffix);
        if path.exists() {
            assert_eq!(mode(&path), 0o600, "{}", path.display());
        }
    }
}

#[test]
fn admin_token_file_is_kept_across_restarts_and_its_token_still_works() {
    let mut server = Server::start();
    let token_file = server.dir.path().join("hookbox.db.admin-token");
    let before = std::fs::metadata(&token_file).expect("token file");
    let text = std::fs::read_to_string(&token_file).expect("token file");
    assert!(
        !server.log().contains(text.trim()),
        "the log shows the token:\n{}",
        server.log()
    );
    assert!(
        server.log().contains(&token_file.display().to_string()),
        "the log does not name the token file:\n{}",
        server.log()
    );

    server.kill9();
    server.restart();
    server.terminate();
    server.restart();

    let after = std::fs::metadata(&token_file).expect("token file");
    assert_eq!(
        std::fs::read_to_string(&token_file).expect("token file"),
        text
    );
    assert_eq!(after.ino(), before.ino(), "the token file was replaced");
    assert_eq!(
        after.modified().expect("mtime"),
        before.modified().expect("mtime"),
        "the token file was rewritten"
    );
    assert!(
        !server.log().contains("created admin token"),
        "a restart created another admin token:\n{}",
        server.log()
    );
    let r = server.get("/api/v1/webhooks");
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn sigterm_exits_successfully_after_logging_stopped() {
    let mut server = Server::start();
    server.create_webhook(&["*"]);
    let r = server.post(
        "/api/v1/events",
        &json!({"event": "item.created", "data": item(1)}),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let status = server.terminate();
    assert!(status.success(), "exit {status}\n{}", server.log());
    util::wait_for(Duration::from_secs(5), "the 'stopped' log line", || {
        server
            .log()
            .lines()
            .any(|l| l.ends_with("stopped"))
            .then_some(())
    });
}

fn sidecar(db: &Path, suffix: &str) -> std::path::PathBuf {
    let mut path = db.as_os_str().to_owned();
    path.push(suffix);
    path.into()
}

#[test]

fn after_sigterm_the_database_file_alone_holds_every_accepted_event() {
    let (mut server, webhooks) = server_with_webhooks();
    let mut accepted = BTreeMap::new();
    // The stop races with the close of the read connections: try many.
    for cycle in 0..20 {
        for i in 0..3 {
            let n = cycle * 10 + i;
            let (status, body) = publish(server.addr, &server.token, n).expect("publish");
            assert_eq!(status, 202, "{body}");
            accepted.insert(
                body["id"].as_str().expect("id").to_owned(),
                format!("item {n}"),
            );
        }
        // Concurrent reads leave the server's read pool full of idle
        // connections, which it closes while stopping.
        thread::scope(|s| {
            for _ in 0..16 {
                s.spawn(|| assert_eq!(server.get("/api/v1/events?limit=1").status, 200));
            }
        });
        let status = server.terminate();
        assert!(status.success(), "{status}\n{}", server.log());
        // "Backup = one file": after a clean stop the database file is the
        // whole state. Drop the WAL and shared-memory files, as copying the
        // database file alone would.
        let wal_len = std::fs::metadata(sidecar(&server.db(), "-wal")).map_or(0, |m| m.len());
        for suffix in ["-wal", "-shm"] {
            match std::fs::remove_file(sidecar(&server.db(), suffix)) {
                Ok(()) => {}
                Err(e) => assert_eq!(e.kind(), ErrorKind::NotFound),
            }
        }
        server.restart();
        let hooks = server.get("/api/v1/webhooks").json();
        let missing: Vec<_> = accepted
            .keys()
            .filter(|id| server.get(&format!("/api/v1/events/{id}")).status != 200)
            .collect();
        assert!(
            missing.is_empty() && hooks["data"].as_array().map(Vec::len) == Some(2),
            "stop {cycle}: {} of {} events and {} of 2 webhooks were only in the WAL ({wal_len} bytes) after a clean stop",
            missing.len(),
            accepted.len(),
            2 - hooks["data"].as_array().map_or(0, Vec::len),
        );
    }
    assert_all_stored(&server, &accepted, &webhooks);
}

fn check(db: &Path) -> std::process::Output {
    Command::new(util::BIN)
        .args(["check", "--db"])
        .arg(db)
        .output()
        .expect("hookbox check")
}

#[test]
fn check_passes_after_sigkill_and_restart_and_after_sigterm() {
    let (mut server, _) = server_with_webhooks();
    for n in 0..20 {
        let r = server.post(
            "/api/v1/events",
            &json!({"event": "item.created", "data": item(n)}),
        );
        assert_eq!(r.status, 202, "{}", r.text());
    }
    server.kill9();
    server.restart();
    let out = check(&server.db());
    assert!(
        out.status.success(),
        "check after kill -9 and restart: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(server.terminate().code(), Some(0), "{}", server.log());
    let out = check(&server.db());
    assert!(
        out.status.success(),
        "check after SIGTERM: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
