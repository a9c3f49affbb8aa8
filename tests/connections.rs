//! SPEC section 9: bursts of new keep-alive connections, while others stay
//! open, are each answered promptly.
//!
//! Upstream tiny_http 0.12 queued a new connection behind a pool thread
//! that had just been woken (vendor/tiny_http/PATCHES.md, item 1); the queued
//! connection then waited until some other connection closed. Here every
//! connection stays open, so a queued one would wait forever: the deadline
//! catches it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod util;

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use util::Server;

/// Clients per burst: the number SPEC section 9 reproduced the stall with.
const CLIENTS: usize = 64;
/// Bursts, each while the connections of all earlier ones stay open.
const ROUNDS: usize = 3;
/// How long a client may wait for its complete response.
const DEADLINE: Duration = Duration::from_secs(1);
/// How long a client reads before giving up: past the deadline, so a late
/// answer is measured rather than cut off, but bounded so a stall fails the
/// test instead of hanging it.
const GIVE_UP: Duration = Duration::from_secs(3);

/// One client's keep-alive connection.
struct Client {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Client {
    fn connect(addr: SocketAddr) -> std::io::Result<Client> {
        let writer = TcpStream::connect(addr)?;
        writer.set_read_timeout(Some(GIVE_UP))?;
        writer.set_nodelay(true)?;
        let reader = BufReader::new(writer.try_clone()?);
        Ok(Client { writer, reader })
    }

    /// Sends an authenticated GET (HTTP/1.1, keep-alive) and reads the
    /// whole response; returns its status and the time from sending to the
    /// last byte.
    fn get(&mut self, addr: SocketAddr, token: &str) -> Result<(u16, Duration), String> {
        let head = format!(
            "GET /api/v1/events?limit=5 HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n"
        );
        let sent = Instant::now();
        self.writer
            .write_all(head.as_bytes())
            .map_err(|e| format!("sending: {e}"))?;
        let response = util::read_response(&mut self.reader)
            .map_err(|e| format!("no complete response after {:?}: {e}", sent.elapsed()))?;
        let elapsed = sent.elapsed();
        if response
            .header("Connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
        {
            return Err("the server closed the keep-alive connection".into());
        }
        Ok((response.status, elapsed))
    }
}

/// `CLIENTS` threads connect at the same instant and each sends one GET;
/// returns the open connections and, for each client, what went wrong.
fn burst(server: &Server, round: usize) -> (Vec<Client>, Vec<String>) {
    let barrier = Arc::new(Barrier::new(CLIENTS));
    let addr = server.addr;
    let handles: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let barrier = barrier.clone();
            let token = server.token.clone();
            thread::spawn(move || {
                barrier.wait();
                let mut client = Client::connect(addr)
                    .map_err(|e| format!("round {round} client {i}: connecting: {e}"))?;
                let outcome = match client.get(addr, &token) {
                    Ok((200, elapsed)) if elapsed <= DEADLINE => None,
                    Ok((200, elapsed)) => Some(format!("answered after {elapsed:?}")),
                    Ok((status, _)) => Some(format!("answered {status}")),
                    Err(e) => Some(e),
                };
                Ok((
                    client,
                    outcome.map(|why| format!("round {round} client {i}: {why}")),
                ))
            })
        })
        .collect();
    let mut clients = Vec::new();
    let mut failures = Vec::new();
    for handle in handles {
        match handle.join().expect("client thread") {
            Ok((client, failure)) => {
                clients.push(client);
                failures.extend(failure);
            }
            Err(failure) => failures.push(failure),
        }
    }
    (clients, failures)
}

#[test]
fn bursts_of_keep_alive_connections_are_each_answered_within_a_second() {
    // Every client here is 127.0.0.1: lift the per-client cap (128) that
    // 192 held connections from one address would run into.
    let server = Server::start_with(&["--max-connections-per-client", "1024"]);
    let mut held: Vec<Client> = Vec::new();
    for round in 0..ROUNDS {
        let (clients, failures) = burst(&server, round);
        assert!(
            failures.is_empty(),
            "{} of {CLIENTS} clients of round {round} (with {} connections held open) were not answered with 200 within {DEADLINE:?}:\n{}\n--- server log ---\n{}",
            failures.len(),
            held.len(),
            failures.join("\n"),
            server.log()
        );
        held.extend(clients);
    }
    assert_eq!(held.len(), CLIENTS * ROUNDS);

    // Keep-alive works: every connection answers a second request.
    let mut failures = Vec::new();
    for (i, client) in held.iter_mut().enumerate() {
        match client.get(server.addr, &server.token) {
            Ok((200, elapsed)) if elapsed <= DEADLINE => {}
            Ok((200, elapsed)) => {
                failures.push(format!("connection {i}: answered after {elapsed:?}"))
            }
            Ok((status, _)) => failures.push(format!("connection {i}: answered {status}")),
            Err(e) => failures.push(format!("connection {i}: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} kept-alive connections failed a second request:\n{}\n--- server log ---\n{}",
        failures.len(),
        held.len(),
        failures.join("\n"),
        server.log()
    );
}
