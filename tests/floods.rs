//! Slow and idle clients (slowloris) against the API: a request must
//! arrive within `--request-timeout` of its first byte (of connect, for a
//! new connection), however the client paces its bytes; a flood of idle and
//! trickling connections neither starves real requests nor outlives its
//! clients; an over-long URL is answered 414. Large bodies cost memory only
//! where the API could take them: a peer outside `--api-allow` gets its 403
//! without its body being read, and bodies read ahead share one budget,
//! past which a large request gets 503 while small ones still pass.
//!
//! Each trickling client paces its bytes by waiting for an answer with a
//! read timeout, so it also sees the server's 408 or close the moment it
//! comes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod util;

use std::io::{BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use util::Server;

/// The gap between two trickled bytes: far below the socket's 30 s read
/// timeout, which therefore never fires.
const PACE: Duration = Duration::from_millis(250);

fn get_head(server: &Server, close: bool) -> String {
    format!(
        "GET /api/v1/events?limit=1 HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n{}\r\n",
        server.addr,
        server.token,
        if close { "Connection: close\r\n" } else { "" }
    )
}

/// What a trickling client saw.
#[derive(Debug)]
struct Trickled {
    /// Bytes it got out before the server answered or closed.
    sent: usize,
    /// What the server sent.
    answer: Vec<u8>,
    /// Whether the server ended the connection.
    closed: bool,
}

/// Sends `bytes` one at a time, `PACE` apart, until the server answers or
/// closes, or `give_up` has passed since `since`.
fn trickle(stream: &mut TcpStream, bytes: &[u8], since: Instant, give_up: Duration) -> Trickled {
    stream.set_read_timeout(Some(PACE)).unwrap();
    let mut outcome = Trickled {
        sent: 0,
        answer: Vec::new(),
        closed: false,
    };
    for byte in bytes {
        if stream.write_all(std::slice::from_ref(byte)).is_err() {
            outcome.closed = true;
            break;
        }
        outcome.sent += 1;
        let mut buf = [0; 1024];
        match stream.read(&mut buf) {
            Ok(0) => {
                outcome.closed = true;
                break;
            }
            Ok(n) => outcome.answer.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => {
                outcome.closed = true;
                break;
            }
        }
        if !outcome.answer.is_empty() || since.elapsed() > give_up {
            break;
        }
    }
    // After an answer, the close follows.
    if !outcome.answer.is_empty() && !outcome.closed {
        stream.set_read_timeout(Some(give_up)).unwrap();
        let mut rest = Vec::new();
        outcome.closed = stream.read_to_end(&mut rest).is_ok();
        outcome.answer.extend_from_slice(&rest);
    }
    outcome
}

/// Asserts that a trickled request was cut off with a 408 and a close,
/// between `timeout` and a few seconds after `since`.
fn assert_cut_off(
    what: &str,
    outcome: &Trickled,
    elapsed: Duration,
    timeout: Duration,
    server: &Server,
) {
    let answer = String::from_utf8_lossy(&outcome.answer);
    assert!(
        outcome.sent > 0 && outcome.sent < 100,
        "{what}: {} bytes went out a byte at a time over {elapsed:?} ({answer:?}): nothing cut it off\n{}",
        outcome.sent,
        server.log()
    );
    assert!(
        elapsed >= timeout.mul_f32(0.9) && elapsed < timeout + Duration::from_secs(3),
        "{what}: cut off after {elapsed:?}, not at the {timeout:?} request timeout"
    );
    assert!(answer.starts_with("HTTP/1.1 408"), "{what}: {answer:?}");
    assert!(
        outcome.closed,
        "{what}: the connection stayed open after the 408"
    );
}

#[test]
fn a_request_trickled_a_byte_at_a_time_gets_408_and_its_connection_closed_at_the_request_timeout() {
    let timeout = Duration::from_secs(1);
    let server = Server::start_with(&["--request-timeout", "1s"]);
    // A long head, so that it cannot all go out before the deadline.
    let head = format!(
        "{}X-Padding: {}\r\n\r\n",
        get_head(&server, false).trim_end_matches("\r\n"),
        "p".repeat(100)
    );

    // On a new connection the clock starts at connect.
    let since = Instant::now();
    let mut stream = TcpStream::connect(server.addr).unwrap();
    let outcome = trickle(&mut stream, head.as_bytes(), since, Duration::from_secs(8));
    assert_cut_off(
        "new connection",
        &outcome,
        since.elapsed(),
        timeout,
        &server,
    );

    // On a kept-alive connection, at the next request's first byte.
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(get_head(&server, false).as_bytes())
        .unwrap();
    let first = util::read_response(&mut BufReader::new(stream.try_clone().unwrap())).unwrap();
    assert_eq!(first.status, 200, "{}", first.text());
    let since = Instant::now();
    let outcome = trickle(&mut stream, head.as_bytes(), since, Duration::from_secs(8));
    assert_cut_off(
        "kept-alive connection",
        &outcome,
        since.elapsed(),
        timeout,
        &server,
    );

    // The server is fine.
    assert_eq!(server.get("/api/v1/events?limit=1").status, 200);
}

#[test]
fn a_new_connection_that_sends_nothing_is_closed_at_the_request_timeout_without_an_answer() {
    let server = Server::start_with(&["--request-timeout", "1s"]);
    let since = Instant::now();
    let silent: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(server.addr).unwrap())
        .collect();
    for (i, mut stream) in silent.into_iter().enumerate() {
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut answer = Vec::new();
        let ended = stream.read_to_end(&mut answer);
        let elapsed = since.elapsed();
        assert!(
            ended.is_ok(),
            "silent connection {i} still open after {elapsed:?}: {ended:?}\n{}",
            server.log()
        );
        assert!(
            answer.is_empty(),
            "silent connection {i} got {:?}",
            String::from_utf8_lossy(&answer)
        );
        assert!(
            elapsed >= Duration::from_millis(900),
            "silent connection {i} closed after {elapsed:?}, before the 1 s request timeout"
        );
    }
}

#[test]
fn a_kept_alive_connection_may_stay_idle_longer_than_the_request_timeout() {
    let server = Server::start_with(&["--request-timeout", "1s"]);
    let mut stream = TcpStream::connect(server.addr).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(get_head(&server, false).as_bytes())
        .unwrap();
    assert_eq!(util::read_response(&mut reader).unwrap().status, 200);
    // Idle for longer than the request timeout: the connection stays open
    // (only `SOCKET_TIMEOUT`, 30 s, ends an idle one).
    stream
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let mut byte = [0; 1];
    match reader.get_mut().read(&mut byte) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("an idle kept-alive connection ended early: {other:?}"),
    }
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(get_head(&server, false).as_bytes())
        .unwrap();
    let second = util::read_response(&mut reader).unwrap();
    assert_eq!(second.status, 200, "{}", second.text());
}

/// File descriptors the server process holds.
fn open_fds(server: &Server) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", server.pid()))
        .map(|dir| dir.count())
        .expect("the server's /proc fd list")
}

/// `clients` threads each send `per_client` authenticated GETs on fresh
/// connections; returns a line for each that was not answered 200 within
/// `within`.
fn real_requests(
    addr: SocketAddr,
    token: &str,
    clients: usize,
    per_client: usize,
    within: Duration,
) -> Vec<String> {
    let head = format!(
        "GET /api/v1/events?limit=1 HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let head = head.clone();
            thread::spawn(move || {
                let mut failures = Vec::new();
                for r in 0..per_client {
                    let started = Instant::now();
                    let outcome = TcpStream::connect(addr).and_then(|mut stream| {
                        // Past `within`, so a late answer is measured, not cut.
                        stream.set_read_timeout(Some(within * 3))?;
                        stream.write_all(head.as_bytes())?;
                        util::read_response(&mut BufReader::new(stream))
                    });
                    let elapsed = started.elapsed();
                    match outcome {
                        Ok(response) if response.status == 200 && elapsed <= within => {}
                        Ok(response) => failures.push(format!(
                            "client {c} request {r}: {} after {elapsed:?}",
                            response.status
                        )),
                        Err(e) => {
                            failures.push(format!("client {c} request {r}: {e} after {elapsed:?}"))
                        }
                    }
                }
                failures
            })
        })
        .collect();
    threads
        .into_iter()
        .flat_map(|t| t.join().expect("client thread"))
        .collect()
}

#[test]
fn idle_and_trickling_connections_neither_starve_real_requests_nor_outlive_their_clients() {
    // A request timeout longer than the test, so that the flood stays.
    // 205 connections from 127.0.0.1, idle ones among them: lift the
    // per-client cap and the first-byte deadline (tests/exhaustion.rs
    // covers both), so that this flood stays for the request deadline.
    let server = Server::start_with(&[
        "--request-timeout",
        "60s",
        "--first-byte-timeout",
        "60s",
        "--max-connections-per-client",
        "1024",
    ]);
    let within = Duration::from_secs(2);
    // Warm up (read connections are opened on demand), then count.
    let failures = real_requests(server.addr, &server.token, 10, 5, within);
    assert!(
        failures.is_empty(),
        "before the flood:\n{}",
        failures.join("\n")
    );
    let baseline = open_fds(&server);

    let idle: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(server.addr).unwrap())
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let tricklers: Vec<_> = (0..5)
        .map(|_| {
            let stop = stop.clone();
            let mut stream = TcpStream::connect(server.addr).unwrap();
            let head = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\nX-Slow: ", server.addr);
            thread::spawn(move || {
                stream.set_read_timeout(Some(PACE)).unwrap();
                // A head that never ends; returns whether the connection
                // was still open when told to stop.
                for byte in head.bytes().chain(std::iter::repeat(b'a')) {
                    if stop.load(Ordering::Acquire) {
                        return true;
                    }
                    if stream.write_all(&[byte]).is_err() {
                        return false;
                    }
                    let mut buf = [0; 64];
                    match stream.read(&mut buf) {
                        Err(e)
                            if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                        _ => return false,
                    }
                }
                unreachable!()
            })
        })
        .collect();
    // Every flood connection is accepted and held.
    util::wait_for(
        Duration::from_secs(10),
        "the flood's connections to be held",
        || (open_fds(&server) >= baseline + 200).then_some(()),
    );

    let failures = real_requests(server.addr, &server.token, 10, 5, within);
    stop.store(true, Ordering::Release);
    let held: Vec<bool> = tricklers
        .into_iter()
        .map(|t| t.join().expect("trickler thread"))
        .collect();
    assert!(
        failures.is_empty(),
        "with 200 idle and 5 trickling connections held, {} of 50 requests were not answered 200 within {within:?}:\n{}\n--- server log ---\n{}",
        failures.len(),
        failures.join("\n"),
        server.log()
    );
    assert!(
        held.iter().all(|open| *open),
        "a trickling connection ended during the flood: {held:?}"
    );

    // The flood goes away, and so do its connections on the server.
    drop(idle);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let fds = open_fds(&server);
        if fds <= baseline + 20 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the server still holds {fds} file descriptors 10 s after the flood ended ({baseline} before it)"
        );
        thread::sleep(Duration::from_millis(20));
    }
    let failures = real_requests(server.addr, &server.token, 10, 5, within);
    assert!(
        failures.is_empty(),
        "after the flood:\n{}\n--- server log ---\n{}",
        failures.join("\n"),
        server.log()
    );
}

#[test]
fn an_over_long_url_gets_414_and_an_over_long_header_still_gets_400() {
    let server = Server::start();
    let long_url = format!(
        "GET /api/v1/events?q={} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\r\n",
        "a".repeat(9 * 1024),
        server.addr,
        server.token
    );
    let r = server.send_raw(long_url.as_bytes()).unwrap();
    assert_eq!(r.status, 414, "{}", r.text());
    // Just under the line limit is served.
    let path = format!("/api/v1/events?q={}", "a".repeat(8 * 1024 - 100));
    assert_eq!(server.get(&path).status, 200);
    // A long header line is not a long URL.
    let long_header = format!(
        "GET /healthz HTTP/1.1\r\nHost: {}\r\nX-Long: {}\r\n\r\n",
        server.addr,
        "a".repeat(9 * 1024)
    );
    let r = server.send_raw(long_header.as_bytes()).unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
}

/// The largest body the API takes by default (`--max-body-size`).
const MAX_BODY: usize = 256 * 1024;

/// The server's resident memory now and at its peak so far (VmRSS and
/// VmHWM), in bytes.
fn memory(server: &Server) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid()))
        .expect("the server's /proc status");
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse::<u64>().ok())
            .map(|kib| kib * 1024)
            .unwrap_or_else(|| panic!("no {name} in /proc/{}/status", server.pid()))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

const MIB: u64 = 1024 * 1024;

/// The head of an authenticated keep-alive publish declaring a body of
/// `MAX_BODY` bytes.
fn large_head(server: &Server) -> String {
    format!(
        "POST /api/v1/events HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {MAX_BODY}\r\n\r\n",
        server.addr, server.token
    )
}

/// A valid publish padded with spaces to exactly `MAX_BODY` bytes.
fn large_body() -> Vec<u8> {
    let mut body = serde_json::json!({"event": "item.sold", "data": util::seed("item.sold")})
        .to_string()
        .into_bytes();
    body.resize(MAX_BODY, b' ');
    body
}

/// A complete large publish on its own connection: what came back.
fn large_publish(server: &Server) -> util::Response {
    let mut raw = large_head(server).into_bytes();
    raw.extend_from_slice(&large_body());
    server
        .send_raw(&raw)
        .unwrap_or_else(|e| panic!("a large publish: {e}\n{}", server.log()))
}

#[test]
fn bodies_from_peers_outside_api_allow_are_never_read_so_300_held_ones_cost_no_memory() {
    // Our 127.0.0.1 is outside the API's allowlist, but may read /metrics,
    // so its connections are admitted at accept (tests/exhaustion.rs covers
    // peers no allowlist admits) and reach the pipeline. A request timeout
    // longer than the test, so that a body being read ahead stays held.
    let server = Server::start_with(&[
        "--api-allow",
        "10.9.9.9/32",
        "--metrics-allow",
        "127.0.0.1",
        "--request-timeout",
        "60s",
        "--max-connections-per-client",
        "1024",
    ]);
    assert_eq!(server.get("/metrics").status, 200);
    let (before, _) = memory(&server);

    // Each client sends the head and all of the body but its last byte,
    // then holds its connection. The server answers without waiting for the
    // body, and closes: the client's writing may fail with a reset then.
    let head = large_head(&server);
    let clients: Vec<_> = (0..300)
        .map(|_| {
            let addr = server.addr;
            let mut raw = head.clone().into_bytes();
            raw.extend(std::iter::repeat_n(b' ', MAX_BODY - 1));
            thread::spawn(move || {
                let mut stream = TcpStream::connect(addr).expect("connect");
                stream
                    .set_write_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                let _ = stream.write_all(&raw);
                let answer = util::read_response(&mut BufReader::new(stream.try_clone().unwrap()));
                (answer, stream)
            })
        })
        .collect();
    let outcomes: Vec<_> = clients
        .into_iter()
        .map(|c| c.join().expect("client thread"))
        .collect();
    // Measured while every client still holds its connection.
    let (during, peak) = memory(&server);

    // 300 bodies of 256 KiB would be 75 MiB.
    assert!(
        peak.saturating_sub(before) < 64 * MIB,
        "the server's memory went from {} MiB to a peak of {} MiB ({} MiB while held) for 300 refused bodies",
        before / MIB,
        peak / MIB,
        during / MIB
    );
    let mut wrong = Vec::new();
    for (i, (answer, _)) in outcomes.iter().enumerate() {
        match answer {
            Ok(r) if r.status == 403 => {
                let error = r.error(403, "ip_not_allowed");
                assert!(error["message"].is_string());
                assert_eq!(r.header("Connection"), Some("close"), "client {i}");
            }
            Ok(r) => wrong.push(format!("client {i}: {} {}", r.status, r.text())),
            Err(e) => wrong.push(format!("client {i}: no answer ({e})")),
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of 300 refused clients holding a partial 256 KiB body did not get their 403:\n{}\n--- server log ---\n{}",
        wrong.len(),
        wrong[..wrong.len().min(10)].join("\n"),
        server.log()
    );
    drop(outcomes);
    assert_eq!(server.get("/metrics").status, 200);
}

#[test]
fn large_bodies_over_the_read_ahead_budget_get_503_while_small_publishes_get_through() {
    // A request timeout longer than the test, so that held bodies stay.
    let server = Server::start_with(&["--request-timeout", "60s"]);
    // 32 MiB of budget, 4 of them kept for small bodies: 112 bodies of
    // 256 KiB fill what large bodies may use. A few more, to be sure.
    let head = large_head(&server);
    let holders: Vec<TcpStream> = (0..120)
        .map(|_| {
            let mut stream = TcpStream::connect(server.addr).expect("connect");
            let mut raw = head.clone().into_bytes();
            raw.extend_from_slice(&[b' '; 1024]);
            stream.write_all(&raw).expect("write a partial body");
            stream
        })
        .collect();

    // Once the held bodies have their share, a large body is refused
    // unread, with a 503 that says when to retry, and its connection closed.
    // What each try got, for the failure message. (On a loaded machine the
    // holders' heads may be parsed after the first tries: those get 202.)
    let seen = std::cell::RefCell::new(Vec::new());
    let refused = util::eventually(
        &server,
        Duration::from_secs(30),
        || {
            format!(
                "a large publish to be refused while 120 large bodies are held; got {:?}",
                seen.borrow()
            )
        },
        || {
            let started = std::time::Instant::now();
            let r = large_publish(&server);
            seen.borrow_mut().push((r.status, started.elapsed()));
            Some(r).filter(|r| r.status == 503)
        },
    );
    refused.error(503, "server_busy");
    assert_eq!(refused.header("Retry-After"), Some("1"));
    assert_eq!(refused.header("Connection"), Some("close"));
    // The log line is written before the answer, but read from the
    // server's stderr by another thread: wait for it.
    util::wait_for(Duration::from_secs(5), "the refusal to be logged", || {
        server
            .log()
            .contains("answering 503 to large request bodies")
            .then_some(())
    });

    // Small publishes still get through.
    for _ in 0..5 {
        let r = server.post(
            "/api/v1/events",
            &serde_json::json!({"event": "item.sold", "data": util::seed("item.sold")}),
        );
        assert_eq!(
            r.status,
            202,
            "a small publish while the budget is spent: {}",
            r.text()
        );
    }
    // Still refusing large ones.
    assert_eq!(large_publish(&server).status, 503);

    // The held bodies go away, and give their bytes back.
    drop(holders);
    let accepted = util::eventually(
        &server,
        Duration::from_secs(10),
        || "a large publish to be taken again after the held bodies closed".into(),
        || Some(large_publish(&server)).filter(|r| r.status != 503),
    );
    assert_eq!(accepted.status, 202, "{}", accepted.text());
}
