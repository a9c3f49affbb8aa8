//! The test harness: the real `hookbox` binary on an ephemeral port with a
//! real SQLite file in a temp dir, and a small raw HTTP/1.1 client that can
//! send anything (invalid UTF-8, wrong lengths, bare TCP).
//!
//! Nothing here sleeps to synchronise: waits poll with a deadline, and a
//! failure message carries the server's log.

#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod receiver;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_hookbox");

/// A running `hookbox serve`.
pub struct Server {
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    pub token: String,
    child: Child,
    log: Arc<Mutex<String>>,
    extra_args: Vec<String>,
}

impl Server {
    /// Starts a server on a fresh database, with delivery paused: webhooks
    /// in these tests point at names that must not be looked up.
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    /// [`Server::start`] with more flags.
    pub fn start_with(args: &[&str]) -> Server {
        let mut all = vec!["--pause-delivery"];
        all.extend_from_slice(args);
        Server::delivering(&all)
    }

    /// Starts a server that delivers, with `args`.
    pub fn delivering(args: &[&str]) -> Server {
        Server::delivering_on("127.0.0.1:0", args)
    }

    /// [`Server::delivering`] listening on `listen` (such as `[::1]:0`).
    pub fn delivering_on(listen: &str, args: &[&str]) -> Server {
        Server::delivering_with_env(listen, args, &[])
    }

    /// [`Server::delivering_on`] with environment variables set.
    pub fn delivering_with_env(listen: &str, args: &[&str], env: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut extra_args: Vec<String> = vec!["--listen".into(), listen.into()];
        extra_args.extend(args.iter().map(|s| s.to_string()));
        let mut command = serve_command(dir.path(), &extra_args);
        for (name, value) in env {
            command.env(name, value);
        }
        let (child, log, addr) = spawn_command(command);
        let token = std::fs::read_to_string(dir.path().join("hookbox.db.admin-token"))
            .expect("admin token file")
            .trim()
            .to_owned();
        Server {
            dir,
            addr,
            token,
            child,
            log,
            extra_args,
        }
    }

    pub fn db(&self) -> PathBuf {
        self.dir.path().join("hookbox.db")
    }

    /// Everything the server wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Kills the process with SIGKILL and waits for it.
    pub fn kill9(&mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("wait");
    }

    /// Sends SIGTERM and waits (with a deadline) for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "server did not stop on SIGTERM\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the binary again on the same database (after kill9/terminate).
    pub fn restart(&mut self) {
        // A server still running is killed first: two on one database would
        // leave the first behind when its `Child` is replaced.
        if self.alive() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let (child, log, addr) = spawn(self.dir.path(), &self.extra_args);
        self.child = child;
        self.log = log;
        self.addr = addr;
    }

    /// Starts the binary again on the same database with other flags.
    #[allow(dead_code)]
    pub fn restart_with(&mut self, args: &[&str]) {
        let listen = ["--listen".to_owned(), self.extra_args[1].clone()];
        self.extra_args = listen
            .into_iter()
            .chain(args.iter().map(|s| s.to_string()))
            .collect();
        self.restart();
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    pub fn request(&self, method: &str, path: &str, body: Option<&Value>) -> Response {
        let body = body.map(|b| b.to_string().into_bytes());
        self.send(
            method,
            path,
            &[("Content-Type", "application/json")],
            body.as_deref(),
            Some(&self.token),
        )
    }

    pub fn get(&self, path: &str) -> Response {
        self.request("GET", path, None)
    }

    pub fn post(&self, path: &str, body: &Value) -> Response {
        self.request("POST", path, Some(body))
    }

    /// A request with full control over headers and body bytes; `token`
    /// adds the Authorization header.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        token: Option<&str>,
    ) -> Response {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.addr
        );
        if let Some(token) = token {
            head.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if let Some(body) = body {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut raw = head.into_bytes();
        raw.extend_from_slice(body.unwrap_or_default());
        self.send_raw(&raw)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\n--- server log ---\n{}", self.log()))
    }

    /// Writes `raw` on a new connection and reads one response.
    pub fn send_raw(&self, raw: &[u8]) -> std::io::Result<Response> {
        let mut stream = TcpStream::connect(self.addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(20)))?;
        // The server may answer (413) and close before reading everything.
        let _ = stream.write_all(raw);
        read_response(&mut BufReader::new(stream))
    }

    /// The ids of a listing's `data`, in its order (a 200 is required).
    pub fn ids(&self, path: &str) -> Vec<String> {
        let r = self.get(path);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        r.json()["data"]
            .as_array()
            .expect("a listing")
            .iter()
            .map(|e| e["id"].as_str().expect("an id").to_owned())
            .collect()
    }

    /// Creates a webhook subscribed to `events` and returns its JSON.
    pub fn create_webhook(&self, events: &[&str]) -> Value {
        let r = self.post(
            "/api/v1/webhooks",
            &serde_json::json!({"url": "https://93.184.216.34/hook", "events": events}),
        );
        assert_eq!(r.status, 201, "{}", r.text());
        r.json()
    }

    /// Creates a webhook subscribed to `events` and returns its id.
    pub fn webhook_id(&self, events: &[&str]) -> String {
        self.create_webhook(events)["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Creates a token of `scope` with the CLI and returns it.
    pub fn token(&self, scope: &str) -> String {
        let name = unique_name(&format!("test-{scope}"));
        let out = Command::new(BIN)
            .args(["token", "create", "--name", &name, "--scope", scope, "--db"])
            .arg(self.db())
            .output()
            .expect("token create");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .last()
            .unwrap()
            .to_owned()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve_command(dir: &Path, args: &[String]) -> Command {
    let mut command = Command::new(BIN);
    command
        .arg("serve")
        .arg("--db")
        .arg(dir.join("hookbox.db"))
        .args(args);
    command
}

fn spawn(dir: &Path, args: &[String]) -> (Child, Arc<Mutex<String>>, SocketAddr) {
    spawn_command(serve_command(dir, args))
}

/// Starts a prepared `hookbox serve` command, collects its log, and waits
/// for its `listening on` line: the child, its log so far, its address.
pub fn spawn_command(mut command: Command) -> (Child, Arc<Mutex<String>>, SocketAddr) {
    let mut child = command
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn hookbox");
    let stderr = child.stderr.take().expect("stderr");
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = log.clone();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            // `https://` when serving TLS (`--tls-cert`, tests/tls.rs).
            let listening = line
                .split("listening on http://")
                .nth(1)
                .or_else(|| line.split("listening on https://").nth(1));
            if let Some(rest) = listening {
                let _ = tx.send(rest.trim().to_owned());
            }
            let mut log = sink.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    let addr = match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(addr) => addr.parse().expect("listen address"),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("server did not log 'listening on'\n{}", log.lock().unwrap());
        }
    };
    (child, log, addr)
}

/// A response as read off the wire.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response is not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Asserts the error shape and returns the error object.
    pub fn error(&self, status: u16, code: &str) -> Value {
        assert_eq!(self.status, status, "{}", self.text());
        let body = self.json();
        let error = &body["error"];
        assert_eq!(error["code"], code, "{body}");
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{body}"
        );
        assert!(error["details"].is_array(), "{body}");
        error.clone()
    }

    /// The `field` of each detail of an error body.
    pub fn error_fields(&self) -> Vec<String> {
        self.json()["error"]["details"]
            .as_array()
            .unwrap_or(&Vec::new())
            .iter()
            .map(|d| d["field"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

/// Reads one HTTP/1.1 response: status line, headers, and a body by
/// Content-Length or chunked encoding (or to EOF).
pub fn read_response(reader: &mut impl BufRead) -> std::io::Result<Response> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }
    let find = |name: &str| {
        headers
            .iter()
            .find(|(n, _): &&(String, String)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    if let Some(len) = find("Content-Length") {
        let len: usize = len.parse().map_err(std::io::Error::other)?;
        body.resize(len, 0);
        reader.read_exact(&mut body)?;
    } else if find("Transfer-Encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let size = usize::from_str_radix(size.trim(), 16).map_err(std::io::Error::other)?;
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else if status != 204 && status != 304 {
        reader.read_to_end(&mut body)?;
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// Polls `check` until it returns Some, or panics after `timeout`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// The seed example `data` of one event type.
pub fn seed(event_type: &str) -> Value {
    seed_examples()
        .into_iter()
        .find(|(name, _)| *name == event_type)
        .map(|(_, data)| data)
        .unwrap_or_else(|| panic!("no seed example for {event_type}"))
}

/// The seed examples, one per event type, with real UUIDs.
pub fn seed_examples() -> Vec<(&'static str, Value)> {
    use serde_json::json;
    vec![
        (
            "email.updated",
            json!({
                "consignor_id": "7d6f1c2e-8a4b-4c3d-9e5f-0a1b2c3d4e5f",
                "old_email": "old@example.com",
                "new_email": "new@example.com",
                "sync_status": "failed",
                "sync_error": "error message if failed"
            }),
        ),
        (
            "profile.created",
            json!({
                "consignor_id": "7d6f1c2e-8a4b-4c3d-9e5f-0a1b2c3d4e5f",
                "email": "example@domain.com",
                "name": "John Doe"
            }),
        ),
        (
            "event.registered",
            json!({
                "event_id": "3f2a9b8c-1d4e-4f5a-8b6c-7d8e9f0a1b2c",
                "consignor_id": "7d6f1c2e-8a4b-4c3d-9e5f-0a1b2c3d4e5f",
                "type": "super",
                "fee_paid": true
            }),
        ),
        (
            "item.created",
            json!({
                "item_id": "9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d",
                "consignor_id": "7d6f1c2e-8a4b-4c3d-9e5f-0a1b2c3d4e5f",
                "event_id": "3f2a9b8c-1d4e-4f5a-8b6c-7d8e9f0a1b2c",
                "title": "string",
                "price": "12.50"
            }),
        ),
        (
            "item.sold",
            json!({
                "item_id": "9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d",
                "sale_price": "10.00",
                "sale_date": "2025-01-21T22:20:56Z"
            }),
        ),
    ]
}

/// Polls `check` until it returns Some, or fails after `timeout` with
/// `what()` and the server's log.
pub fn eventually<T>(
    server: &Server,
    timeout: Duration,
    what: impl Fn() -> String,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {}\n--- server log ---\n{}",
            what(),
            server.log()
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// The path of `name` on `PATH`, if an executable file of that name is
/// there.
pub fn on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// The first of `names` found on `PATH`, or a panic that says how to get
/// it: tests that need a tool beyond the Rust toolchain are `#[ignore]`d,
/// so this runs only when asked for (`cargo test -- --include-ignored`, as
/// `.ci/run` does), and a missing tool there is a failure, never a pass.
pub fn require_tool(names: &[&str], install: &str) -> PathBuf {
    names
        .iter()
        .find_map(|name| on_path(name))
        .unwrap_or_else(|| panic!("{} is not on PATH: {install}", names.join(" or ")))
}

/// `prefix` and a number no other call in this test process got: token
/// names are unique among live tokens.
pub fn unique_name(prefix: &str) -> String {
    static MADE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}-{n}")
}
