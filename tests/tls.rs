//! The API over HTTPS (`--tls-cert`, `--tls-key`): real TLS clients — ureq
//! for ordinary calls, a raw rustls client for hostile bytes — against the
//! real binary, with a certificate made at test time (rcgen).
//!
//! The hardening of the plain listener (vendor/tiny_http/PATCHES.md) must
//! hold under TLS too: unread bodies never become requests, a request that
//! takes too long is cut off, an over-long URL is refused.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod util;

use std::io::{BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use util::{BIN, Server};

/// A certificate for 127.0.0.1 and its key, as PEM files in a temp dir.
struct Pki {
    dir: tempfile::TempDir,
    cert_der: Vec<u8>,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        std::fs::write(dir.path().join("cert.pem"), certified.cert.pem()).unwrap();
        std::fs::write(
            dir.path().join("key.pem"),
            certified.signing_key.serialize_pem(),
        )
        .unwrap();
        Pki {
            cert_der: certified.cert.der().to_vec(),
            dir,
        }
    }

    fn cert(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    fn key(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }

    /// Writes `contents` to `name` in the temp dir and returns its path.
    fn file(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

fn start_tls(pki: &Pki, more: &[&str]) -> Server {
    let cert = pki.cert().display().to_string();
    let key = pki.key().display().to_string();
    let mut args = vec!["--tls-cert", cert.as_str(), "--tls-key", key.as_str()];
    args.extend_from_slice(more);
    Server::start_with(&args)
}

/// A ureq agent that trusts `roots` only (none: the public web roots), goes
/// nowhere but where it is told (no proxy) and returns every status.
fn agent(roots: Option<&[u8]>) -> ureq::Agent {
    let mut tls = ureq::tls::TlsConfig::builder();
    if let Some(der) = roots {
        let cert = ureq::tls::Certificate::from_der(der).to_owned();
        tls = tls.root_certs(ureq::tls::RootCerts::Specific(Arc::new(vec![cert])));
    }
    ureq::Agent::config_builder()
        .tls_config(tls.build())
        .proxy(None)
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

fn get(agent: &ureq::Agent, url: &str, token: Option<&str>) -> Result<(u16, String), ureq::Error> {
    let mut request = agent.get(url);
    if let Some(token) = token {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    let mut response = request.call()?;
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string()?;
    Ok((status, body))
}

#[test]
fn https_answers_healthz_and_an_admin_api_call_for_a_client_trusting_the_certificate() {
    let pki = Pki::new();
    let server = start_tls(&pki, &[]);
    let line = format!("listening on https://{}", server.addr);
    let log = util::wait_for(Duration::from_secs(5), "the listening line", || {
        Some(server.log()).filter(|log| log.contains(&line))
    });
    assert!(!log.contains("listening on http://"), "{log}");

    let base = format!("https://{}", server.addr);
    let trusting = agent(Some(&pki.cert_der));
    let (status, body) = get(&trusting, &format!("{base}/healthz"), None)
        .unwrap_or_else(|e| panic!("GET /healthz over TLS: {e}\n{}", server.log()));
    assert_eq!(status, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "ok", "{body}");

    let webhooks = format!("{base}/api/v1/webhooks");
    let (status, body) = get(&trusting, &webhooks, Some(&server.token)).unwrap();
    assert_eq!(status, 200, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(list["data"].is_array(), "{body}");
    // Authentication is the same over TLS.
    let (status, body) = get(&trusting, &webhooks, None).unwrap();
    assert_eq!(status, 401, "{body}");
    let (status, body) = get(&trusting, &webhooks, Some("not-a-token")).unwrap();
    assert_eq!(status, 401, "{body}");

    // The certificate is really checked: a client that does not trust it
    // gets no answer.
    let outcome = get(&agent(None), &format!("{base}/healthz"), None);
    assert!(
        outcome.is_err(),
        "an untrusting client got an answer: {outcome:?}"
    );
}

#[test]
fn plain_http_to_the_tls_port_gets_no_api_answer() {
    let pki = Pki::new();
    let server = start_tls(&pki, &[]);
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let head = format!(
        "GET /api/v1/webhooks HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        server.addr, server.token
    );
    stream.write_all(head.as_bytes()).unwrap();
    // The server sends at most a TLS alert, then closes.
    let mut answer = Vec::new();
    match stream.read_to_end(&mut answer) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!("no close within 10 s: {e}\n{}", server.log()),
    }
    let text = String::from_utf8_lossy(&answer);
    assert!(
        !text.contains("HTTP/") && !text.contains("\"data\""),
        "plain HTTP got an HTTP answer: {text:?}"
    );
    // The server is fine.
    let (status, _) = get(
        &agent(Some(&pki.cert_der)),
        &format!("https://{}/healthz", server.addr),
        None,
    )
    .unwrap();
    assert_eq!(status, 200);
}

/// A start that must fail: the TLS files given, as flags or in the
/// environment, and what stderr must say.
struct Case<'a> {
    name: &'a str,
    cert: Option<&'a Path>,
    key: Option<&'a Path>,
    by_env: bool,
    expected: &'a str,
}

impl Case<'_> {
    /// Runs `hookbox serve` on a fresh database: its exit code, its stderr,
    /// and whether the database file was created.
    fn run(&self) -> (Option<i32>, String, bool) {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("hookbox.db");
        let mut command = Command::new(BIN);
        command
            .arg("serve")
            .arg("--db")
            .arg(&db)
            .args(["--listen", "127.0.0.1:0", "--pause-delivery"])
            .env("RUST_LOG", "info")
            .env_remove("HOOKBOX_TLS_CERT")
            .env_remove("HOOKBOX_TLS_KEY")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (flag, var, path) in [
            ("--tls-cert", "HOOKBOX_TLS_CERT", self.cert),
            ("--tls-key", "HOOKBOX_TLS_KEY", self.key),
        ] {
            match (path, self.by_env) {
                (Some(path), true) => {
                    command.env(var, path);
                }
                (Some(path), false) => {
                    command.arg(flag).arg(path);
                }
                (None, _) => {}
            }
        }
        let mut child = command.spawn().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let reading = thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{}: hookbox serve did not exit: {}",
                    self.name,
                    reading.join().unwrap()
                );
            }
            thread::sleep(Duration::from_millis(10));
        };
        (status.code(), reading.join().unwrap(), db.exists())
    }
}

#[test]
fn tls_flags_alone_or_with_bad_pem_stop_the_start_with_a_clear_error() {
    let pki = Pki::new();
    let other_key = rcgen::KeyPair::generate().unwrap().serialize_pem();
    let cert = pki.cert();
    let key = pki.key();
    let garbage = pki.file("garbage.pem", "this is not PEM\n");
    let broken = pki.file(
        "broken.pem",
        "-----BEGIN PRIVATE KEY-----\nnot base64 at all!\n-----END PRIVATE KEY-----\n",
    );
    let not_a_key = pki.file(
        "not-a-key.pem",
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    );
    let other = pki.file("other-key.pem", &other_key);
    let missing = pki.dir.path().join("missing.pem");
    let (cert, key) = (cert.as_path(), key.as_path());
    #[rustfmt::skip]
    let cases = [
        Case { name: "--tls-cert alone", cert: Some(cert), key: None, by_env: false, expected: "--tls-key" },
        Case { name: "--tls-key alone", cert: None, key: Some(key), by_env: false, expected: "--tls-cert" },
        Case { name: "HOOKBOX_TLS_CERT alone", cert: Some(cert), key: None, by_env: true, expected: "--tls-key" },
        Case { name: "HOOKBOX_TLS_KEY alone", cert: None, key: Some(key), by_env: true, expected: "--tls-cert" },
        Case { name: "a missing certificate file", cert: Some(&missing), key: Some(key), by_env: false, expected: "reading the TLS certificate" },
        Case { name: "a missing key file", cert: Some(cert), key: Some(&missing), by_env: false, expected: "reading the TLS key" },
        Case { name: "a key that is not PEM", cert: Some(cert), key: Some(&garbage), by_env: false, expected: "no PEM private key" },
        Case { name: "a certificate that is not PEM", cert: Some(&garbage), key: Some(key), by_env: false, expected: "no PEM certificate" },
        Case { name: "the key given as the certificate", cert: Some(key), key: Some(key), by_env: false, expected: "no PEM certificate" },
        Case { name: "the certificate given as the key", cert: Some(cert), key: Some(cert), by_env: false, expected: "no PEM private key" },
        Case { name: "a key PEM that is not base64", cert: Some(cert), key: Some(&broken), by_env: true, expected: "reading the private key PEM" },
        Case { name: "a key PEM that holds no key", cert: Some(cert), key: Some(&not_a_key), by_env: false, expected: "cannot be used together" },
        Case { name: "the key of another certificate", cert: Some(cert), key: Some(&other), by_env: false, expected: "cannot be used together" },
    ];
    let mut failures = Vec::new();
    for case in &cases {
        let (code, stderr, db_created) = case.run();
        let fine = code.is_some_and(|c| c != 0)
            && stderr.contains(case.expected)
            && !stderr.contains("panicked")
            && !stderr.contains("listening on")
            // Refused before the database is touched.
            && !db_created;
        if !fine {
            failures.push(format!(
                "{}: exit {code:?}, database created: {db_created}, stderr:\n{stderr}",
                case.name
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// A raw TLS client over TCP, trusting `cert_der`.
struct RawTls {
    stream: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
}

impl RawTls {
    fn connect(server: &Server, cert_der: &[u8]) -> RawTls {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls::pki_types::CertificateDer::from(cert_der.to_vec()))
            .unwrap();
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::IpAddress(server.addr.ip().into());
        let connection = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let tcp = TcpStream::connect(server.addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        tcp.set_nodelay(true).unwrap();
        let mut stream = rustls::StreamOwned::new(connection, tcp);
        // Complete the handshake now, so that what follows is all request.
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock).unwrap();
        }
        RawTls { stream }
    }

    fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Reads one response, or `None` if the connection ends first.
    fn response(&mut self) -> Option<util::Response> {
        let mut reader = BufReader::new(&mut self.stream);
        util::read_response(&mut reader).ok()
    }

    /// Whether the server ends the connection (rather than the 10 s read
    /// timeout passing), reading and dropping anything it still sends.
    fn closed_by_server(&mut self) -> bool {
        let mut sink = [0; 4096];
        loop {
            match self.stream.read(&mut sink) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return false;
                }
                // Closed without close_notify, or reset: ended all the same.
                Err(_) => return true,
            }
        }
    }
}

fn webhook_count(server: &Server, pki: &Pki) -> usize {
    let (status, body) = get(
        &agent(Some(&pki.cert_der)),
        &format!("https://{}/api/v1/webhooks", server.addr),
        Some(&server.token),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    list["data"].as_array().unwrap().len()
}

#[test]
fn over_tls_keep_alive_works_and_an_unread_body_ends_its_connection_without_becoming_a_request() {
    let pki = Pki::new();
    let server = start_tls(&pki, &[]);
    let mut client = RawTls::connect(&server, &pki.cert_der);
    let get = format!(
        "GET /api/v1/events?limit=1 HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\r\n",
        server.addr, server.token
    );
    for i in 0..2 {
        client.send(get.as_bytes()).unwrap();
        let r = client.response().expect("an answer");
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
    }

    // A valid webhook creation, hidden at the start of a body declared
    // 1.5 MiB long: refused unread, by its length.
    let hook = br#"{"url":"https://93.184.216.34/smuggled","events":["*"]}"#;
    let hidden = format!(
        "POST /api/v1/webhooks HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
        server.addr,
        server.token,
        hook.len(),
        String::from_utf8_lossy(hook)
    );
    let head = format!(
        "POST /api/v1/events HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        server.addr,
        server.token,
        1536 * 1024
    );
    // The head alone: the 413 comes, and the connection ends at once, not
    // when the client sends more or a timeout passes.
    client.send(head.as_bytes()).unwrap();
    let r = client.response().expect("an answer to the oversized body");
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(
        client.closed_by_server(),
        "the connection stayed open after a 413 whose body was not read"
    );
    // The head and the start of the body.
    let mut carrier = RawTls::connect(&server, &pki.cert_der);
    carrier.send(format!("{head}{hidden}").as_bytes()).unwrap();
    let r = carrier.response().expect("an answer to the oversized body");
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(carrier.closed_by_server());
    assert_eq!(webhook_count(&server, &pki), 0, "{}", server.log());

    // The hidden request is valid on its own (so the check can fail).
    let mut alone = RawTls::connect(&server, &pki.cert_der);
    alone.send(hidden.as_bytes()).unwrap();
    assert_eq!(alone.response().expect("an answer").status, 201);
    assert_eq!(webhook_count(&server, &pki), 1);
}

#[test]
fn over_tls_a_request_sent_a_byte_at_a_time_is_cut_off_at_the_request_timeout() {
    let pki = Pki::new();
    let server = start_tls(&pki, &["--request-timeout", "1s"]);
    let mut client = RawTls::connect(&server, &pki.cert_der);
    let head = format!(
        "GET /api/v1/events?limit=1 HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\r\n",
        server.addr, server.token
    );
    // One request at full speed; the next one's clock starts at its first
    // byte.
    client.send(head.as_bytes()).unwrap();
    assert_eq!(client.response().expect("an answer").status, 200);
    // Each byte its own TLS record; the socket's per-read timeout (30 s)
    // never fires, only the request deadline can end this.
    client
        .stream
        .sock
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let started = Instant::now();
    let mut sent = 0;
    let mut answer = Vec::new();
    for byte in head.as_bytes() {
        if client.send(std::slice::from_ref(byte)).is_err() {
            break;
        }
        sent += 1;
        // Paces the trickle, and sees the server's answer or close.
        let mut buf = [0; 1024];
        match client.stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
        if !answer.is_empty() || started.elapsed() > Duration::from_secs(8) {
            break;
        }
    }
    let elapsed = started.elapsed();
    assert!(
        sent < head.len(),
        "the whole request went out a byte at a time ({elapsed:?}): nothing cut it off"
    );
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(5),
        "cut off after {elapsed:?}, not at the 1 s request timeout"
    );
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text:?}");
}

#[test]
fn over_tls_an_over_long_url_gets_414() {
    let pki = Pki::new();
    let server = start_tls(&pki, &[]);
    let mut client = RawTls::connect(&server, &pki.cert_der);
    let head = format!(
        "GET /api/v1/events?q={} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\r\n",
        "a".repeat(9 * 1024),
        server.addr,
        server.token
    );
    let _ = client.send(head.as_bytes());
    let r = client.response().expect("an answer");
    assert_eq!(r.status, 414, "{}", r.text());
}
