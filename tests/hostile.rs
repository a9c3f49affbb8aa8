//! Hostile input against the write endpoints (`POST /api/v1/events`,
//! `POST /api/v1/webhooks`): malformed and oversized bodies, lying lengths,
//! broken HTTP framing, and request smuggling.
//!
//! Every row must be answered with a 4xx (the JSON error shape when the
//! answer comes from our API, an empty 400 when tiny_http refuses the
//! framing) or, where the framing makes an answer impossible, by closing the
//! connection. Never a 5xx, and afterwards the server is alive and answers.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod util;

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;
use util::{Response, Server};

/// What a row must get back.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// An error from our API: this status and code, in the JSON error shape.
    Error(u16, &'static str),
    /// The request is valid, if extreme: this success status, or a clean
    /// 422; either way a JSON body.
    SuccessOr422(u16),
    /// Refused by the HTTP layer before our API sees it: this status, body
    /// not ours. Closing without an answer is also acceptable.
    Http(u16),
    /// The framing leaves the server nothing to answer to: it may close
    /// without an answer; if it answers, with a 4xx (JSON if ours).
    CloseOr4xx,
}

/// What came back on the connection.
#[derive(Debug)]
enum Outcome {
    Answered(Response),
    /// EOF or reset before the first byte of a response.
    Closed(String),
}

/// How the client ends its side after writing.
#[derive(Debug, Clone, Copy, PartialEq)]
enum End {
    /// Keeps its writing side open until the answer is read.
    Open,
    /// Shuts down its writing side after the bytes (the peer sees EOF).
    HalfClose,
}

struct Row {
    name: String,
    raw: Vec<u8>,
    end: End,
    expect: Expect,
}

const LONG: usize = 100_000;
const DEEP: usize = 10_000;

/// A complete HTTP/1.1 request with `Connection: close`.
fn request(
    server: &Server,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    extra: &[(&str, String)],
    body: &[u8],
) -> Vec<u8> {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAuthorization: Bearer {}\r\n",
        server.addr, server.token
    );
    if let Some(ct) = content_type {
        head.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    let mut declares_length = false;
    for (name, value) in extra {
        declares_length |= name.eq_ignore_ascii_case("Content-Length")
            || name.eq_ignore_ascii_case("Transfer-Encoding");
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !declares_length {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut raw = head.into_bytes();
    raw.extend_from_slice(body);
    raw
}

fn json_request(server: &Server, path: &str, body: &[u8]) -> Vec<u8> {
    request(server, "POST", path, Some("application/json"), &[], body)
}

fn chunked(body: &[u8], chunk: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for piece in body.chunks(chunk) {
        out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        out.extend_from_slice(piece);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

fn deep_arrays(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

fn deep_objects(depth: usize) -> String {
    format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth))
}

/// A valid publish body with `data` replaced by the raw JSON text `data`.
fn publish_with_data(data: &str) -> Vec<u8> {
    format!("{{\"event\":\"item.created\",\"data\":{data}}}").into_bytes()
}

fn item_created() -> serde_json::Value {
    util::seed_examples()
        .into_iter()
        .find(|(name, _)| *name == "item.created")
        .map(|(_, data)| data)
        .expect("item.created example")
}

/// The rows that depend on the endpoint's body: `good` is a valid body,
/// `nested` builds a body whose `nested_field` (the object or array the
/// endpoint expects) is the given raw JSON text, and `too_long` is a body
/// with a 100,000-character string, with what it must get.
fn body_rows(
    server: &Server,
    path: &str,
    good: &[u8],
    nested: &dyn Fn(&str) -> Vec<u8>,
    nested_field: &str,
    too_long: (Vec<u8>, Expect),
) -> Vec<Row> {
    let row = |name: &str, raw: Vec<u8>, expect: Expect| Row {
        name: format!("{path}: {name}"),
        raw,
        end: End::Open,
        expect,
    };
    let malformed = Expect::Error(400, "malformed_json");
    let media = Expect::Error(415, "unsupported_media_type");
    let mut invalid_utf8 = good.to_vec();
    // Replace the body's last string character before the end with bytes
    // that are not UTF-8, inside a string.
    let at = invalid_utf8.len() - 3;
    invalid_utf8.splice(at..at, [0xff, 0xfe, 0xc3]);
    vec![
        row(
            "truncated JSON",
            json_request(server, path, &good[..good.len() / 2]),
            malformed,
        ),
        row(
            "Content-Type text/plain",
            request(server, "POST", path, Some("text/plain"), &[], good),
            media,
        ),
        row(
            "no Content-Type",
            request(server, "POST", path, None, &[], good),
            media,
        ),
        row(
            "empty body",
            json_request(server, path, b""),
            Expect::Error(400, "empty_body"),
        ),
        row("array body", json_request(server, path, b"[]"), malformed),
        row("null body", json_request(server, path, b"null"), malformed),
        row(
            "string body",
            json_request(server, path, b"\"item.created\""),
            malformed,
        ),
        row("number body", json_request(server, path, b"42"), malformed),
        row(
            &format!("{nested_field} null"),
            json_request(server, path, &nested("null")),
            Expect::Error(422, "validation_failed"),
        ),
        row(
            &format!("{nested_field} []"),
            json_request(server, path, &nested("[]")),
            Expect::Error(422, "validation_failed"),
        ),
        row(
            "a 100,000-character string",
            json_request(server, path, &too_long.0),
            too_long.1,
        ),
        row(
            &format!("{DEEP}-deep arrays in {nested_field}"),
            json_request(server, path, &nested(&deep_arrays(DEEP))),
            malformed,
        ),
        row(
            &format!("{DEEP}-deep objects in {nested_field}"),
            json_request(server, path, &nested(&deep_objects(DEEP))),
            malformed,
        ),
        row(
            &format!("{DEEP}-deep arrays as the body"),
            json_request(server, path, deep_arrays(DEEP).as_bytes()),
            malformed,
        ),
        row(
            &format!("{DEEP}-deep objects as the body"),
            json_request(server, path, deep_objects(DEEP).as_bytes()),
            malformed,
        ),
        row(
            "invalid UTF-8 in a string",
            json_request(server, path, &invalid_utf8),
            malformed,
        ),
    ]
}

/// The rows about size and framing, the same for every endpoint.
fn framing_rows(server: &Server, path: &str, good: &[u8]) -> Vec<Row> {
    let row = |name: &str, raw: Vec<u8>, end: End, expect: Expect| Row {
        name: format!("{path}: {name}"),
        raw,
        end,
        expect,
    };
    let too_large = Expect::Error(413, "payload_too_large");
    let megabyte = {
        let mut body = br#"{"description":""#.to_vec();
        body.resize(1_000_000 - 2, b'x');
        body.extend_from_slice(b"\"}");
        body
    };
    let truncated = &good[..good.len() - 5];
    let huge_chunked = {
        let mut body = br#"{"description":""#.to_vec();
        body.resize(300 * 1024, b'x');
        body.extend_from_slice(b"\"}");
        chunked(&body, 8192)
    };
    let many_headers: Vec<(&str, String)> =
        (0..200).map(|_| ("X-Filler", "x".repeat(10))).collect();
    let nul_path = {
        let mut p = path.as_bytes().to_vec();
        p.insert(p.len() - 3, 0);
        String::from_utf8(p).expect("NUL is UTF-8")
    };
    vec![
        row(
            "a 1 MB body",
            json_request(server, path, &megabyte),
            End::Open,
            too_large,
        ),
        row(
            "Content-Length 1000 (read before routing), fewer bytes, then close",
            request(
                server,
                "POST",
                path,
                Some("application/json"),
                &[("Content-Length", "1000".into())],
                truncated,
            ),
            End::HalfClose,
            Expect::CloseOr4xx,
        ),
        row(
            "Content-Length 100000 (read by the API), fewer bytes, then close",
            request(
                server,
                "POST",
                path,
                Some("application/json"),
                &[("Content-Length", "100000".into())],
                truncated,
            ),
            End::HalfClose,
            Expect::CloseOr4xx,
        ),
        row(
            "Content-Length 10^12 with a small body",
            request(
                server,
                "POST",
                path,
                Some("application/json"),
                &[("Content-Length", "1000000000000".into())],
                good,
            ),
            End::Open,
            too_large,
        ),
        row(
            "a chunked body over the limit",
            request(
                server,
                "POST",
                path,
                Some("application/json"),
                &[("Transfer-Encoding", "chunked".into())],
                &huge_chunked,
            ),
            End::Open,
            too_large,
        ),
        row(
            "a header line over 8 KiB",
            request(
                server,
                "POST",
                path,
                Some("application/json"),
                &[("X-Long", "a".repeat(9 * 1024))],
                good,
            ),
            End::Open,
            Expect::Http(400),
        ),
        row(
            // Found by schemathesis: the connection used to close unanswered.
            "a header value that is not ASCII",
            request(
                server,
                "POST",
                path,
                Some("application/json"),
                &[("Idempotency-Key", "\u{d7}\u{f8}\u{9b}".into())],
                good,
            ),
            End::Open,
            Expect::Error(400, "malformed_request"),
        ),
        row(
            "a URL over 8 KiB",
            request(
                server,
                "POST",
                &format!("{path}?q={}", "u".repeat(9 * 1024)),
                Some("application/json"),
                &[],
                good,
            ),
            End::Open,
            Expect::Http(414),
        ),
        row(
            "200 header lines",
            request(
                server,
                "POST",
                path,
                Some("application/json"),
                &many_headers,
                good,
            ),
            End::Open,
            Expect::Http(400),
        ),
        row(
            "a garbage request line",
            b"HELLO THERE\r\nHost: x\r\n\r\n".to_vec(),
            End::Open,
            Expect::Http(400),
        ),
        row(
            "a binary request line",
            b"\x01\x02\xff\xfe \x00\r\n\r\n".to_vec(),
            End::HalfClose,
            Expect::CloseOr4xx,
        ),
        row(
            // A control character in the request line is malformed (RFC
            // 9112 section 3), like one in a header line.
            "a NUL byte in the path",
            json_request(server, &nul_path, good),
            End::Open,
            Expect::Error(400, "malformed_request"),
        ),
    ]
}

fn all_rows(server: &Server) -> Vec<Row> {
    let events = "/api/v1/events";
    let good_event = json!({"event": "item.created", "data": item_created()})
        .to_string()
        .into_bytes();
    let mut long_title = item_created();
    long_title["title"] = json!("t".repeat(LONG));
    let long_event = json!({"event": "item.created", "data": long_title})
        .to_string()
        .into_bytes();

    let webhooks = "/api/v1/webhooks";
    let good_webhook =
        json!({"url": "https://93.184.216.34/hook", "events": ["*"], "description": "a hook"})
            .to_string()
            .into_bytes();
    let long_webhook = json!({"url": "https://93.184.216.34/hook", "events": ["*"], "description": "d".repeat(LONG)})
        .to_string()
        .into_bytes();
    let webhook_with_events = |events: &str| {
        format!(r#"{{"url":"https://93.184.216.34/hook","events":{events}}}"#).into_bytes()
    };

    let mut rows = body_rows(
        server,
        events,
        &good_event,
        &publish_with_data,
        "data",
        (long_event, Expect::SuccessOr422(202)),
    );
    rows.extend(framing_rows(server, events, &good_event));
    rows.extend(body_rows(
        server,
        webhooks,
        &good_webhook,
        &webhook_with_events,
        "events",
        (long_webhook, Expect::Error(422, "validation_failed")),
    ));
    let long_url =
        json!({"url": format!("https://93.184.216.34/{}", "u".repeat(LONG)), "events": ["*"]})
            .to_string()
            .into_bytes();
    rows.push(Row {
        name: format!("{webhooks}: a 100,000-character url"),
        raw: json_request(server, webhooks, &long_url),
        end: End::Open,
        expect: Expect::Error(422, "validation_failed"),
    });
    rows.extend(framing_rows(server, webhooks, &good_webhook));
    rows
}

/// Writes `raw` from a second thread (the server may answer and stop
/// reading before it has everything) and reads one response.
fn exchange(addr: SocketAddr, raw: Vec<u8>, end: End) -> Outcome {
    let stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("read timeout");
    let mut writer = stream.try_clone().expect("clone stream");
    let writing = thread::spawn(move || {
        let _ = writer.write_all(&raw);
        if end == End::HalfClose {
            let _ = writer.shutdown(Shutdown::Write);
        }
    });
    let mut reader = BufReader::new(stream);
    let outcome = match reader.fill_buf() {
        Ok([]) => Outcome::Closed("EOF".into()),
        Ok(_) => match util::read_response(&mut reader) {
            Ok(response) => Outcome::Answered(response),
            Err(e) => panic!("a partial or unreadable response: {e}"),
        },
        Err(e)
            if e.kind() == std::io::ErrorKind::WouldBlock
                || e.kind() == std::io::ErrorKind::TimedOut =>
        {
            panic!("no answer and no close within 20 s")
        }
        Err(e) => Outcome::Closed(e.to_string()),
    };
    drop(reader);
    writing.join().expect("writer thread");
    outcome
}

fn check_row(row: &Row, outcome: &Outcome) -> Result<(), String> {
    let describe = |r: &Response| {
        format!(
            "{} {}",
            r.status,
            r.text().chars().take(300).collect::<String>()
        )
    };
    let json_error = |r: &Response, status: u16, code: &str| -> Result<(), String> {
        if r.status != status {
            return Err(format!("expected {status} {code}, got {}", describe(r)));
        }
        let body: serde_json::Value = serde_json::from_slice(&r.body)
            .map_err(|e| format!("not JSON ({e}): {}", describe(r)))?;
        let error = &body["error"];
        let shaped = error["code"] == code
            && error["message"].as_str().is_some_and(|m| !m.is_empty())
            && error["details"].is_array();
        if !shaped {
            return Err(format!(
                "expected the JSON error shape with code {code}, got {body}"
            ));
        }
        Ok(())
    };
    match (row.expect, outcome) {
        (_, Outcome::Answered(r)) if r.status >= 500 => Err(format!("a 5xx: {}", describe(r))),
        (Expect::Error(status, code), Outcome::Answered(r)) => json_error(r, status, code),
        (Expect::SuccessOr422(ok), Outcome::Answered(r)) => {
            if r.status == 422 {
                json_error(r, 422, "validation_failed")
            } else if r.status == ok {
                serde_json::from_slice::<serde_json::Value>(&r.body)
                    .map(drop)
                    .map_err(|e| format!("not JSON ({e}): {}", describe(r)))
            } else {
                Err(format!("expected {ok} or 422, got {}", describe(r)))
            }
        }
        (Expect::Http(status), Outcome::Answered(r)) if r.status == status => Ok(()),
        (Expect::Http(status), Outcome::Answered(r)) => Err(format!(
            "expected {status} from the HTTP layer, got {}",
            describe(r)
        )),
        (Expect::CloseOr4xx, Outcome::Answered(r)) => {
            if !(400..500).contains(&r.status) {
                return Err(format!("expected a 4xx or a close, got {}", describe(r)));
            }
            if r.header("Content-Type") == Some("application/json") {
                let body: serde_json::Value = serde_json::from_slice(&r.body)
                    .map_err(|e| format!("not JSON ({e}): {}", describe(r)))?;
                if !body["error"]["code"].is_string() {
                    return Err(format!("not the error shape: {body}"));
                }
            }
            Ok(())
        }
        (Expect::Http(_) | Expect::CloseOr4xx, Outcome::Closed(_)) => Ok(()),
        (_, Outcome::Closed(why)) => Err(format!("closed without an answer ({why})")),
    }
}

/// The server is alive and answers an authenticated GET.
fn assert_healthy(server: &mut Server, after: &str) {
    assert!(
        server.alive(),
        "the server died after {after}\n{}",
        server.log()
    );
    let r = server.get("/api/v1/events?limit=1");
    assert_eq!(
        r.status,
        200,
        "after {after}: {}\n--- server log ---\n{}",
        r.text(),
        server.log()
    );
}

#[test]
fn hostile_requests_get_4xx_and_leave_every_turn_free() {
    let mut server = Server::start_with(&["--http-threads", "4"]);
    let rows = all_rows(&server);
    let mut failures = Vec::new();
    for row in &rows {
        let outcome = exchange(server.addr, row.raw.clone(), row.end);
        if let Err(why) = check_row(row, &outcome) {
            failures.push(format!("{}: {why}", row.name));
        }
        assert_healthy(&mut server, &row.name);
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}\n--- server log ---\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n"),
        server.log()
    );
    // Five times as many sequential requests as there are turns (`--http-threads`): a
    // turn a row left held would show as a stall here.
    for i in 0..20 {
        let started = Instant::now();
        assert_healthy(&mut server, &format!("the table, request {i}"));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "request {i} after the table took {:?}",
            started.elapsed()
        );
    }
    assert!(
        !server.log().contains("panicked"),
        "a handler panicked:\n{}",
        server.log()
    );
}

/// The admin's webhook list, which the smuggled request would add to.
fn webhook_count(server: &Server) -> usize {
    let r = server.get("/api/v1/webhooks");
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["data"].as_array().expect("data").len()
}

/// A complete, valid, authenticated `POST /api/v1/webhooks`, to be hidden
/// in another request's body.
fn smuggled(server: &Server) -> Vec<u8> {
    let body = br#"{"url":"https://93.184.216.34/smuggled","events":["*"]}"#;
    let mut raw = format!(
        "POST /api/v1/webhooks HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        server.addr,
        server.token,
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(body);
    raw
}

/// A keep-alive POST /api/v1/events whose body is `body`, declared by
/// Content-Length or sent chunked.
fn carrier(server: &Server, body: &[u8], chunk: Option<usize>) -> Vec<u8> {
    let framing = match chunk {
        Some(_) => "Transfer-Encoding: chunked".to_owned(),
        None => format!("Content-Length: {}", body.len()),
    };
    let mut raw = format!(
        "POST /api/v1/events HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\n{framing}\r\n\r\n",
        server.addr, server.token
    )
    .into_bytes();
    match chunk {
        Some(size) => raw.extend_from_slice(&chunked(body, size)),
        None => raw.extend_from_slice(body),
    }
    raw
}

/// Sends `raw` on one keep-alive connection and reads every response the
/// server writes until it closes (or 10 s pass).
fn exchange_all(addr: SocketAddr, raw: Vec<u8>) -> Vec<u16> {
    let stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let mut writer = stream.try_clone().expect("clone stream");
    let writing = thread::spawn(move || {
        let _ = writer.write_all(&raw);
        let _ = writer.shutdown(Shutdown::Write);
    });
    let mut reader = BufReader::new(stream);
    let mut statuses = Vec::new();
    while let Ok([_, ..]) = reader.fill_buf() {
        match util::read_response(&mut reader) {
            Ok(r) => statuses.push(r.status),
            Err(_) => break,
        }
    }
    drop(reader);
    writing.join().expect("writer thread");
    statuses
}

/// Oversized bodies that carry a complete, valid request: at the start of
/// the body, and just past what the server skips to keep a connection, by
/// Content-Length and chunked. Each is sent on its own keep-alive
/// connection; returns each case's name and the statuses it got back.
fn smuggling_cases(server: &mut Server) -> Vec<(&'static str, Vec<u16>)> {
    let hidden = smuggled(server);
    let pad = |len: usize| {
        let mut body = vec![b' '; len];
        body.extend_from_slice(&hidden);
        body
    };
    let starts_with_hidden = {
        let mut body = hidden.clone();
        body.resize(1536 * 1024, b' ');
        body
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        // A server that does not skip a refused body parses it as the next
        // request.
        (
            "at the start of a 1.5 MiB body",
            carrier(server, &starts_with_hidden, None),
        ),
        // A server that skips a bounded amount and then reads on parses
        // what follows.
        (
            "1 MiB into the body",
            carrier(server, &pad(1024 * 1024 + 1), None),
        ),
        (
            "1 MiB + 256 KiB into the body",
            carrier(server, &pad(1024 * 1024 + 256 * 1024 + 1), None),
        ),
        (
            "at the start of a chunked 1.5 MiB body",
            carrier(server, &starts_with_hidden, Some(64 * 1024)),
        ),
        (
            "1 MiB + 256 KiB into a chunked body",
            carrier(server, &pad(1024 * 1024 + 256 * 1024 + 1), Some(64 * 1024)),
        ),
    ];
    let mut results = Vec::new();
    for (name, raw) in cases {
        let statuses = exchange_all(server.addr, raw);
        assert_healthy(server, name);
        assert_eq!(
            webhook_count(server),
            0,
            "{name}: the request hidden in the body was executed (answers {statuses:?})\n{}",
            server.log()
        );
        results.push((name, statuses));
    }
    results
}

#[test]
fn request_hidden_in_an_oversized_body_is_never_executed() {
    let mut server = Server::start();
    assert_eq!(webhook_count(&server), 0);
    // Asserts, case by case, that the webhook list stays empty.
    smuggling_cases(&mut server);
    // The hidden request itself is valid: sent on its own, it is executed
    // (so the check above can fail).
    let statuses = exchange_all(server.addr, smuggled(&server));
    assert_eq!(statuses, [201], "{}", server.log());
    assert_eq!(webhook_count(&server), 1);
}

#[test]
fn oversized_body_gets_one_413_and_its_bytes_get_no_answer() {
    let mut server = Server::start();
    let results = smuggling_cases(&mut server);
    let wrong: Vec<_> = results.iter().filter(|(_, s)| s != &[413]).collect();
    assert!(
        wrong.is_empty(),
        "expected exactly one answer, 413, per case; got {wrong:?}\n{}",
        server.log()
    );
}

/// Opens `count` connections that each send `raw`, read the 413 if
/// `read_answer`, and stay open.
fn stalled_connections(
    server: &Server,
    count: usize,
    raw: &[u8],
    read_answer: bool,
) -> Vec<TcpStream> {
    (0..count)
        .map(|_| {
            let mut stream = TcpStream::connect(server.addr).expect("connect");
            stream.write_all(raw).expect("write");
            if read_answer {
                stream
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .expect("read timeout");
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let r = util::read_response(&mut reader).expect("an answer");
                assert_eq!(r.status, 413, "{}", r.text());
            }
            stream
        })
        .collect()
}

/// A GET on a fresh connection answers 200 within `deadline`.
fn answers_within(server: &Server, deadline: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(server.addr).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(deadline))
        .map_err(|e| e.to_string())?;
    let head = format!(
        "GET /api/v1/events?limit=1 HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        server.addr, server.token
    );
    stream
        .write_all(head.as_bytes())
        .map_err(|e| e.to_string())?;
    let r = util::read_response(&mut BufReader::new(stream))
        .map_err(|e| format!("no answer within {deadline:?}: {e}"))?;
    if r.status != 200 {
        return Err(format!("{} {}", r.status, r.text()));
    }
    Ok(started.elapsed())
}

#[test]
fn clients_stalled_mid_body_do_not_starve_other_requests() {
    let server = Server::start_with(&["--http-threads", "4"]);
    // Twice as many as there are turns (`--http-threads`); each declares 4096 bytes (more
    // than tiny_http reads ahead itself) and sends 100.
    let mut raw = format!(
        "POST /api/v1/events HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 4096\r\n\r\n",
        server.addr, server.token
    )
    .into_bytes();
    raw.extend_from_slice(&[b' '; 100]);
    let held = stalled_connections(&server, 8, &raw, false);
    let answered = answers_within(&server, Duration::from_secs(5));
    drop(held);
    if let Err(why) = answered {
        panic!(
            "with 8 clients stalled mid-body, a GET got no answer: {why}\n{}",
            server.log()
        );
    }
}

#[test]
fn clients_idle_after_a_413_do_not_starve_other_requests() {
    let server = Server::start_with(&["--http-threads", "4"]);
    let raw = format!(
        "POST /api/v1/events HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 1000000000000\r\n\r\n{{}}",
        server.addr, server.token
    )
    .into_bytes();
    let held = stalled_connections(&server, 4, &raw, true);
    let answered = answers_within(&server, Duration::from_secs(5));
    drop(held);
    if let Err(why) = answered {
        panic!(
            "with 4 clients idle after their 413, a GET got no answer: {why}\n{}",
            server.log()
        );
    }
}

/// A GET /healthz carrying `framing` headers and `body`, followed on the
/// same connection by a hidden webhook creation.
fn ambiguous(server: &Server, framing: &str, body: &str) -> Vec<u8> {
    let mut raw = format!(
        "POST /api/v1/events HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\n{framing}\r\n\r\n{body}",
        server.addr, server.token
    )
    .into_bytes();
    raw.extend_from_slice(&smuggled(server));
    raw
}

#[test]
fn ambiguous_framing_is_refused_and_never_smuggles_a_request() {
    let server = Server::start();
    let hidden_len = smuggled(&server).len();
    let cases = [
        ("Content-Length: abc".to_owned(), String::new()),
        (
            format!("Content-Length: {hidden_len}, {hidden_len}"),
            String::new(),
        ),
        ("Content-Length: -1".to_owned(), String::new()),
        (format!("Content-Length: {hidden_len}x"), String::new()),
        (
            format!("Content-Length: 2\r\nContent-Length: {hidden_len}"),
            "{}".to_owned(),
        ),
        (
            "Transfer-Encoding: gzip\r\nContent-Length: 2".to_owned(),
            "{}".to_owned(),
        ),
        (
            "Transfer-Encoding: chunked\r\nContent-Length: 2".to_owned(),
            "0\r\n\r\n".to_owned(),
        ),
        (
            "Transfer-Encoding: chunked, identity".to_owned(),
            "0\r\n\r\n".to_owned(),
        ),
    ];
    for (framing, body) in cases {
        let statuses = exchange_all(server.addr, ambiguous(&server, &framing, &body));
        assert_eq!(
            statuses,
            [400],
            "{framing:?}: {statuses:?}\n{}",
            server.log()
        );
        assert_eq!(webhook_count(&server), 0, "{framing:?} smuggled a request");
    }
}

#[test]
fn a_client_that_pipelines_without_reading_holds_only_its_own_connection() {
    let server = Server::start_with(&["--http-threads", "4"]);
    // Thousands of pipelined requests from one client that never reads its
    // answers: the server must read one request at a time from it, so its
    // memory stays flat and other clients are answered at once.
    let one = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", server.addr);
    let flood: Vec<u8> = one.as_bytes().repeat(20_000);
    let mut stream = TcpStream::connect(server.addr).expect("connect");
    stream
        .set_write_timeout(Some(Duration::from_secs(2)))
        .expect("write timeout");
    // The write stalls once the socket buffers fill; that is the point.
    let _ = stream.write_all(&flood);
    for _ in 0..10 {
        if let Err(why) = answers_within(&server, Duration::from_secs(2)) {
            panic!(
                "a pipelining client starved others: {why}\n{}",
                server.log()
            );
        }
    }
    let rss_kb = std::fs::read_to_string(format!("/proc/{}/status", server.pid()))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .expect("server RSS");
    assert!(rss_kb < 200 * 1024, "server RSS grew to {rss_kb} kB");
    drop(stream);
}

#[test]
fn expect_100_continue_bodies_are_answered_and_a_stalled_one_holds_no_turn() {
    let server = Server::start_with(&["--http-threads", "2"]);
    // A well-behaved client: waits for 100 Continue, then sends the body.
    let body =
        serde_json::to_vec(&json!({"event": "item.created", "data": item_created()})).unwrap();
    let head = format!(
        "POST /api/v1/events HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
        server.addr,
        server.token,
        body.len()
    );
    let mut stream = TcpStream::connect(server.addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    stream.write_all(head.as_bytes()).expect("write head");
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    // An interim response has a status line and headers, never a body.
    let mut interim = String::new();
    reader.read_line(&mut interim).expect("100 Continue");
    assert!(interim.starts_with("HTTP/1.1 100"), "{interim:?}");
    let mut blank = String::new();
    reader
        .read_line(&mut blank)
        .expect("end of the interim response");
    assert_eq!(blank, "\r\n");
    stream.write_all(&body).expect("write body");
    let r = util::read_response(&mut reader).expect("answer");
    assert_eq!(r.status, 202, "{}", r.text());

    // Clients that are told to continue and then send nothing: more of
    // them than there are turns (`--http-threads`).
    let held: Vec<TcpStream> = (0..6)
        .map(|_| {
            let mut s = TcpStream::connect(server.addr).expect("connect");
            s.write_all(head.as_bytes()).expect("write head");
            s
        })
        .collect();
    let answered = answers_within(&server, Duration::from_secs(5));
    drop(held);
    if let Err(why) = answered {
        panic!(
            "stalled 100-continue clients starved others: {why}\n{}",
            server.log()
        );
    }
}

/// Writes `raw` in pieces that each end with a CR, so that its LF comes in
/// the next piece, and reads one response. The pieces go 5 ms apart (with
/// `TCP_NODELAY`) so that the server's reads end between CR and LF: the
/// pause shapes the input; nothing waits on it for a result.
fn exchange_split_at_cr(addr: SocketAddr, raw: &[u8]) -> Outcome {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("read timeout");
    for piece in raw.split_inclusive(|&b| b == b'\r') {
        // A refused head is answered and closed before its last bytes.
        if stream.write_all(piece).is_err() {
            break;
        }
        thread::sleep(Duration::from_millis(5));
    }
    let mut reader = BufReader::new(stream);
    match util::read_response(&mut reader) {
        Ok(response) => Outcome::Answered(response),
        Err(e) => Outcome::Closed(e.to_string()),
    }
}

#[test]
fn request_heads_are_read_the_same_however_their_bytes_arrive() {
    let mut server = Server::start();
    let head = |pad: usize| {
        format!(
            "GET /healthz HTTP/1.1\r\nHost: {}\r\nX-Pad: {}\r\nConnection: close\r\n\r\n",
            server.addr,
            "p".repeat(pad)
        )
        .into_bytes()
    };
    // A header line may hold 8,191 bytes before its CRLF; one more is 400.
    let longest = 8191 - "X-Pad: ".len();
    let bare_lf = format!(
        "GET /healthz HTTP/1.1\r\nHost: {}\r\nX-Pad: a\nb\r\nConnection: close\r\n\r\n",
        server.addr
    )
    .into_bytes();
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("a short head", head(1), 200),
        ("a header line of 8,191 bytes", head(longest), 200),
        ("a header line of 8,192 bytes", head(longest + 1), 400),
        ("a bare LF inside a header line", bare_lf, 400),
    ];
    for (name, raw, status) in cases {
        for (how, outcome) in [
            ("at once", exchange(server.addr, raw.clone(), End::Open)),
            (
                "split between CR and LF",
                exchange_split_at_cr(server.addr, &raw),
            ),
        ] {
            match outcome {
                Outcome::Answered(r) => assert_eq!(
                    r.status,
                    status,
                    "{name}, sent {how}: {}\n--- server log ---\n{}",
                    r.text(),
                    server.log()
                ),
                Outcome::Closed(why) => {
                    panic!("{name}, sent {how}: closed without an answer ({why})")
                }
            }
        }
    }
    assert_healthy(&mut server, "request heads sent in pieces");
}
