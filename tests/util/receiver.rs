//! A scripted real receiver on 127.0.0.1 and the signature check a
//! receiver would write, for the tests that need hookbox to deliver.
//!
//! [`Receiver`] is a tiny_http server whose answer to the n-th request is
//! chosen by a closure (a status with headers and a body, a delay or a
//! [`Gate`] to hold it, a connection closed without an answer, or a partial
//! answer) and which records every request it gets. Signatures are checked
//! by [`verify`], written as a receiver would write it with the hmac, sha2
//! and base64 crates, never by calling hookbox's own signing code.

#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;

use super::{Server, eventually};

// ---------------------------------------------------------------------------
// The scripted receiver

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// When it arrived, on the monotonic and on the wall clock.
    pub at: Instant,
    pub wall: SystemTime,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn webhook_id(&self) -> &str {
        self.header("webhook-id").unwrap_or_default()
    }

    pub fn timestamp(&self) -> u64 {
        self.header("webhook-timestamp")
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("no numeric webhook-timestamp in {self:?}"))
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// How the receiver ends one exchange.
#[derive(Debug, Clone)]
pub enum End {
    /// A complete response.
    Respond,
    /// The connection is shut down after the request was read, before any
    /// byte of a response.
    Close,
    /// These raw bytes are written as the start of a response, and nothing
    /// more: the client waits for the rest.
    Partial(&'static str),
}

/// What the receiver does with one request.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Held this long before answering; cut short when the receiver stops.
    pub delay: Duration,
    /// Held until this gate opens (or the receiver stops), then answered.
    pub gate: Option<Gate>,
    pub end: End,
}

/// A gate a test opens to release held requests.
#[derive(Debug, Clone, Default)]
pub struct Gate(Arc<std::sync::atomic::AtomicBool>);

impl Gate {
    pub fn open(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_open(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

impl Answer {
    pub fn status(status: u16) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            body: format!("answered {status}"),
            delay: Duration::ZERO,
            gate: None,
            end: End::Respond,
        }
    }

    pub fn ok() -> Answer {
        Answer::status(200)
    }

    /// Holds the request without answering, for longer than any test runs.
    pub fn hang() -> Answer {
        Answer::ok().after(Duration::from_secs(120))
    }

    pub fn close() -> Answer {
        Answer {
            end: End::Close,
            ..Answer::status(0)
        }
    }

    pub fn partial(raw: &'static str) -> Answer {
        Answer {
            end: End::Partial(raw),
            ..Answer::status(0)
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Answer {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn body(mut self, body: &str) -> Answer {
        self.body = body.to_owned();
        self
    }

    pub fn after(mut self, delay: Duration) -> Answer {
        self.delay = delay;
        self
    }

    /// Answers 200 once `gate` opens.
    pub fn held(gate: &Gate) -> Answer {
        Answer {
            gate: Some(gate.clone()),
            ..Answer::ok()
        }
    }
}

/// The answer to the n-th request (from 0), given that request.
pub type Script = dyn Fn(usize, &Seen) -> Answer + Send + Sync;

/// Wakes delayed answers when the receiver stops.
#[derive(Default)]
pub struct Stop {
    pub stopped: Mutex<bool>,
    pub wake: Condvar,
}

impl Stop {
    pub fn is_stopped(&self) -> bool {
        *self.stopped.lock().unwrap()
    }

    /// Waits `delay`, or less if the receiver stops meanwhile.
    pub fn wait(&self, delay: Duration) {
        let deadline = Instant::now() + delay;
        let mut stopped = self.stopped.lock().unwrap();
        while !*stopped {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            stopped = self.wake.wait_timeout(stopped, deadline - now).unwrap().0;
        }
    }

    pub fn stop(&self) {
        *self.stopped.lock().unwrap() = true;
        self.wake.notify_all();
    }
}

/// A webhook receiver on 127.0.0.1 that answers by script and records
/// every request. It stops on drop.
pub struct Receiver {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub stop: Arc<Stop>,
    pub accept: Option<thread::JoinHandle<()>>,
}

impl Receiver {
    /// A receiver on a free port.
    pub fn start(script: impl Fn(usize, &Seen) -> Answer + Send + Sync + 'static) -> Receiver {
        Receiver::bind(0, script)
    }

    /// A receiver on `port` (one reserved earlier with [`closed_port`]).
    pub fn bind(
        port: u16,
        script: impl Fn(usize, &Seen) -> Answer + Send + Sync + 'static,
    ) -> Receiver {
        // Bodies are not read ahead (preread 0), so each one is read through
        // the patched tiny_http's body guard: reading it to its end keeps the
        // connection alive; leaving its end unread shuts the connection down
        // when the request goes (vendor/tiny_http/PATCHES.md, item 3). That
        // is how `Answer::close` closes a connection.
        let limits = tiny_http::ConnectionLimits {
            preread_body_bytes: 0,
            timeout: None,
            request_timeout: None,
            max_connections: usize::MAX,
            preread_allowed: None,
            preread_budget: None,
            ..Default::default()
        };
        let server = tiny_http::Server::http_with_limits(("127.0.0.1", port), limits)
            .unwrap_or_else(|e| panic!("receiver cannot listen on 127.0.0.1:{port}: {e}"));
        let addr = server.server_addr().to_ip().expect("receiver address");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(Stop::default());
        let script: Arc<Script> = Arc::new(script);
        let accept = {
            let (seen, stop) = (seen.clone(), stop.clone());
            thread::Builder::new()
                .name(format!("receiver-{}", addr.port()))
                .spawn(move || {
                    while !stop.is_stopped() {
                        let Ok(Some(request)) = server.recv_timeout(Duration::from_millis(50))
                        else {
                            continue;
                        };
                        let (at, wall) = (Instant::now(), SystemTime::now());
                        let (seen, stop, script) = (seen.clone(), stop.clone(), script.clone());
                        // One thread per request: a held request never delays
                        // the next one.
                        thread::spawn(move || answer(request, at, wall, &seen, &*script, &stop));
                    }
                })
                .expect("receiver thread")
        };
        Receiver {
            addr,
            seen,
            stop,
            accept: Some(accept),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// Waits until at least `n` requests arrived; returns all of them.
    pub fn wait_for(&self, server: &Server, n: usize, timeout: Duration) -> Vec<Seen> {
        eventually(
            server,
            timeout,
            || {
                format!(
                    "the receiver on {} to get {n} requests; it got {}: {:?}",
                    self.addr,
                    self.count(),
                    self.requests()
                        .iter()
                        .map(|s| (s.path.clone(), s.webhook_id().to_owned()))
                        .collect::<Vec<_>>()
                )
            },
            || (self.count() >= n).then(|| self.requests()),
        )
    }

    /// Watches for `window` that no request beyond the first `n` arrives.
    /// Only for showing that something does NOT happen; callers say why
    /// `window` is long enough.
    pub fn stays_at(&self, server: &Server, n: usize, window: Duration) {
        let deadline = Instant::now() + window;
        loop {
            let count = self.count();
            assert!(
                count <= n,
                "the receiver on {} got {count} requests, expected {n}: {:#?}\n--- server log ---\n{}",
                self.addr,
                self.requests(),
                server.log()
            );
            if Instant::now() >= deadline {
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.stop();
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

/// Reads, records and answers one request as the script says.
pub fn answer(
    mut request: tiny_http::Request,
    at: Instant,
    wall: SystemTime,
    seen: &Mutex<Vec<Seen>>,
    script: &Script,
    stop: &Stop,
) {
    let headers = request
        .headers()
        .iter()
        .map(|h| {
            (
                h.field.to_string().to_ascii_lowercase(),
                h.value.as_str().to_owned(),
            )
        })
        .collect();
    let mut body = Vec::new();
    match request.body_length() {
        // Exactly the body, without the read that sees its end (see `bind`).
        Some(len) => {
            body.resize(len, 0);
            if request.as_reader().read_exact(&mut body).is_err() {
                return;
            }
        }
        None => {
            let _ = request.as_reader().read_to_end(&mut body);
        }
    }
    let this = Seen {
        method: request.method().to_string(),
        path: request.url().to_owned(),
        headers,
        body,
        at,
        wall,
    };
    let n = {
        let mut seen = seen.lock().unwrap();
        seen.push(this.clone());
        seen.len() - 1
    };
    let answer = script(n, &this);
    if !answer.delay.is_zero() {
        stop.wait(answer.delay);
    }
    if let Some(gate) = &answer.gate {
        while !gate.is_open() && !stop.is_stopped() {
            stop.wait(Duration::from_millis(10));
        }
    }
    if let End::Close = answer.end {
        // Taking the writer keeps the request's own Drop from answering; the
        // unread end of the body then shuts the connection down.
        drop(request.into_writer());
        return;
    }
    // See the body's end, so that the connection stays open for keep-alive.
    let _ = request.as_reader().read(&mut [0u8; 1]);
    match answer.end {
        End::Partial(raw) => {
            let mut writer = request.into_writer();
            let _ = writer.write_all(raw.as_bytes());
            let _ = writer.flush();
        }
        _ => {
            let mut response =
                tiny_http::Response::from_string(answer.body).with_status_code(answer.status);
            for (name, value) in &answer.headers {
                response.add_header(
                    tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes())
                        .expect("header"),
                );
            }
            let _ = request.respond(response);
        }
    }
}

/// A loopback port with nothing listening: attempts to it are refused at
/// once, and no traffic leaves the machine.
pub fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("local addr").port()
}

// ---------------------------------------------------------------------------
// The receiver's signature check, written as a receiver writes it

/// The HMAC key of a webhook secret: the base64 decoding of what follows
/// `whsec_`, or the secret's own bytes.
pub fn signing_key(secret: &str) -> Vec<u8> {
    match secret.strip_prefix("whsec_") {
        Some(encoded) => STANDARD.decode(encoded).expect("a whsec_ secret is base64"),
        None => secret.as_bytes().to_vec(),
    }
}

/// A `v1,<base64>` signature of `body`, computed as a sender following the
/// Standard Webhooks text would (for tests that play the sender).
pub fn sign(secret: &str, id: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(&signing_key(secret)).expect("hmac key");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// Standard Webhooks verification of one request: some `v1,<base64>` entry
/// of `webhook-signature` is the HMAC-SHA256 of
/// `{webhook-id}.{webhook-timestamp}.{body}` under `secret`.
pub fn verify(secret: &str, request: &Seen) -> Result<(), String> {
    if matching_entries(secret, request)?.is_empty() {
        return Err(format!(
            "no v1 signature in {:?} matches",
            request.header("webhook-signature").unwrap_or_default()
        ));
    }
    Ok(())
}

/// The space-separated entries of a request's `webhook-signature` (an empty
/// one, from a doubled space, counts: receivers split on single spaces).
pub fn signature_entries(request: &Seen) -> Vec<String> {
    request
        .header("webhook-signature")
        .map(|h| h.split(' ').map(str::to_owned).collect())
        .unwrap_or_default()
}

/// The positions of the `webhook-signature` entries that are valid `v1`
/// signatures of the request under `secret` (an error if a header is
/// missing).
pub fn matching_entries(secret: &str, request: &Seen) -> Result<Vec<usize>, String> {
    let id = request.header("webhook-id").ok_or("no webhook-id")?;
    let timestamp = request
        .header("webhook-timestamp")
        .ok_or("no webhook-timestamp")?;
    let signatures = request
        .header("webhook-signature")
        .ok_or("no webhook-signature")?;
    let mut signed = format!("{id}.{timestamp}.").into_bytes();
    signed.extend_from_slice(&request.body);
    let mut matching = Vec::new();
    for (i, entry) in signatures.split(' ').enumerate() {
        let Some(tag) = entry
            .strip_prefix("v1,")
            .and_then(|b64| STANDARD.decode(b64).ok())
        else {
            continue;
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(&signing_key(secret)).expect("hmac key");
        mac.update(&signed);
        if mac.verify_slice(&tag).is_ok() {
            matching.push(i);
        }
    }
    Ok(matching)
}

/// The most arrival times (sorted) that fall within any one window of
/// `width`: the burst a paced receiver saw.
pub fn busiest_window(times: &[Instant], width: Duration) -> usize {
    (0..times.len())
        .map(|i| {
            times[i..]
                .iter()
                .take_while(|t| **t - times[i] < width)
                .count()
        })
        .max()
        .unwrap_or(0)
}
