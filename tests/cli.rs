//! The command line of SPEC section 2 from outside: `--version`, `help`,
//! flag and `HOOKBOX_*` parsing of `serve`, `token create|list|revoke`,
//! `check` and `backup`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod util;

use std::collections::BTreeSet;
use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use util::{Response, Server};

/// How long a one-shot command may run.
const COMMAND_DEADLINE: Duration = Duration::from_secs(20);

/// The binary without any `HOOKBOX_*` variable this test process inherited.
fn hookbox() -> Command {
    let mut command = Command::new(util::BIN);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("HOOKBOX_") {
            command.env_remove(name);
        }
    }
    command
}

/// Runs a one-shot command to its end, killing it (and failing) if it
/// outlives the deadline, e.g. a `serve` that should have refused to start.
fn run(mut command: Command) -> Output {
    let what = format!("{command:?}");
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn hookbox");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(COMMAND_DEADLINE) {
        Ok(output) => output.expect("wait for hookbox"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("{what} still ran after {COMMAND_DEADLINE:?}");
        }
    }
}

fn hookbox_run(args: &[&str]) -> Output {
    let mut command = hookbox();
    command.args(args);
    run(command)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn show(out: &Output) -> String {
    format!(
        "exit {}\n--- stdout ---\n{}--- stderr ---\n{}",
        out.status,
        stdout(out),
        stderr(out)
    )
}

fn path_arg(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temp path")
}

/// A `hookbox serve` configured only through environment variables.
struct EnvServer {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl EnvServer {
    /// Starts `hookbox serve` (no flags) with `vars` and waits for its
    /// `listening on` line.
    fn start(vars: &[(&str, &str)]) -> EnvServer {
        let mut command = hookbox();
        command.arg("serve").envs(vars.iter().copied());
        let (child, log, addr) = util::spawn_command(command);
        EnvServer { child, addr, log }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn send(&self, method: &str, path: &str, token: &str, body: Option<&[u8]>) -> Response {
        send(self.addr, method, path, token, body)
    }
}

impl Drop for EnvServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request on a fresh connection, authenticated with `token`, with a
/// JSON body if given.
fn send(addr: SocketAddr, method: &str, path: &str, token: &str, body: Option<&[u8]>) -> Response {
    let mut raw = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n"
    );
    if let Some(body) = body {
        raw.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    raw.push_str("\r\n");
    let mut raw = raw.into_bytes();
    raw.extend_from_slice(body.unwrap_or_default());
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("read timeout");
    // The server may answer (413) before reading everything.
    let _ = stream.write_all(&raw);
    util::read_response(&mut BufReader::new(stream))
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

fn item(n: usize) -> Value {
    let mut data = util::seed("item.created");
    data["title"] = json!(format!("item {n}"));
    data
}

fn publish_body(n: usize) -> Vec<u8> {
    json!({"event": "item.created", "data": item(n)})
        .to_string()
        .into_bytes()
}

/// Publishes one event and returns its id.
fn publish(server: &Server, n: usize) -> String {
    let r = server.post(
        "/api/v1/events",
        &json!({"event": "item.created", "data": item(n)}),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    r.json()["id"].as_str().expect("id").to_owned()
}

#[test]
fn version_flag_prints_the_package_version() {
    let out = hookbox_run(&["--version"]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(
        stdout(&out).trim(),
        format!("hookbox {}", env!("CARGO_PKG_VERSION")),
        "{}",
        show(&out)
    );
}

#[test]
fn help_command_lists_every_command() {
    for args in [&["help"][..], &["--help"][..]] {
        let out = hookbox_run(args);
        assert!(out.status.success(), "{args:?}: {}", show(&out));
        let text = stdout(&out);
        for command in ["serve", "token", "backup", "check"] {
            assert!(
                text.lines().any(|l| l.trim_start().starts_with(command)),
                "{args:?} does not list {command}:\n{text}"
            );
        }
        assert!(
            text.contains("the store and the delivery engine") && !text.contains("(later)"),
            "serve is described as it is today:\n{text}"
        );
    }
    let out = hookbox_run(&["help", "serve"]);
    assert!(out.status.success(), "{}", show(&out));
    for flag in ["--db", "--listen", "--allow-targets", "--retry-base-delay"] {
        assert!(
            stdout(&out).contains(flag),
            "help serve lacks {flag}:\n{}",
            show(&out)
        );
    }
}

#[test]
fn serve_refuses_bad_durations_and_cidrs_naming_the_flag_and_value() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("hookbox.db");
    let table = [
        ("--retry-base-delay", "5x"),
        ("--retry-max-delay", "1.5h"),
        ("--delivery-timeout", "15"),
        ("--retention", "3w"),
        ("--allow-targets", "10.0.0.0/99"),
        ("--allow-targets", "127.0.0.0/8,10.0.0.0/99"),
        ("--api-allow", "300.1.2.3/8"),
        ("--api-allow", "example.com"),
    ];
    for (flag, value) in table {
        let out = hookbox_run(&[
            "serve",
            "--db",
            path_arg(&db),
            "--listen",
            "127.0.0.1:0",
            flag,
            value,
        ]);
        assert!(!out.status.success(), "{flag} {value}: {}", show(&out));
        let message = stderr(&out);
        let bad = value.rsplit(',').next().unwrap_or(value);
        assert!(
            message.contains(flag) && message.contains(bad),
            "{flag} {value}: the message does not name the flag and the value:\n{message}"
        );
        assert!(
            !message.contains("listening on"),
            "{flag} {value}: {message}"
        );
    }
    assert!(
        !db.exists(),
        "a serve with bad flags created the database before refusing"
    );
}

/// Every file in `dir`, by name.
fn files_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn serve_refuses_a_bad_alert_url_timeout_tls_file_or_taken_port_before_creating_any_file() {
    // Held for the whole test: `--listen` on it must fail.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    let table: [(&[&str], &str); 8] = [
        (
            &["--alert-url", "ftp://127.0.0.1/alerts"],
            "--alert-url must use http or https",
        ),
        (
            &["--alert-url", "alerts.example"],
            "--alert-url is not an absolute URL",
        ),
        // Loopback is refused unless --allow-targets lets it in.
        (&["--alert-url", "http://127.0.0.1:9/alerts"], "--alert-url"),
        (
            &["--alert-url", "http://user:pw@alerts.example/"],
            "--alert-url must not contain user info",
        ),
        (
            &["--request-timeout", "0s"],
            "--request-timeout must be longer than 0",
        ),
        (
            &["--first-byte-timeout", "0ms"],
            "--first-byte-timeout must be longer than 0",
        ),
        (
            &[
                "--tls-cert",
                "missing-cert.pem",
                "--tls-key",
                "missing-key.pem",
            ],
            "reading the TLS certificate",
        ),
        (&["--listen", taken.as_str()], taken.as_str()),
    ];
    for (flags, expected) in table {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("hookbox.db");
        let mut command = hookbox();
        command
            .current_dir(dir.path())
            .args(["serve", "--db", path_arg(&db)])
            .args(flags);
        if !flags.contains(&"--listen") {
            command.args(["--listen", "127.0.0.1:0"]);
        }
        let out = run(command);
        let message = stderr(&out);
        assert!(!out.status.success(), "{flags:?}: {}", show(&out));
        assert!(
            message.contains(expected) && !message.contains("panicked"),
            "{flags:?}: the message does not say {expected:?}:\n{message}"
        );
        assert!(
            !message.contains("listening on http"),
            "{flags:?}: {message}"
        );
        // No database, -wal, -shm, admin-token or alert-secret file.
        assert_eq!(
            files_in(dir.path()),
            Vec::<String>::new(),
            "{flags:?}: {message}"
        );
    }
}

#[test]
fn serve_accepts_every_flag_of_the_spec() {
    let server = Server::start_with(&[
        "--workers",
        "2",
        "--allow-targets",
        "127.0.0.0/8",
        "--max-attempts",
        "5",
        "--retry-base-delay",
        "250ms",
        "--retry-max-delay",
        "6h",
        "--delivery-timeout",
        "15s",
        "--api-allow",
        "127.0.0.1/32",
        "--trust-proxy",
        "--api-rate-limit",
        "0",
        "--alert-url",
        "http://127.0.0.1:9/alerts",
        "--retention",
        "3d",
    ]);
    let r = server.get("/api/v1/events");
    assert_eq!(r.status, 200, "{}\n{}", r.text(), server.log());
    // --allow-targets took effect: a loopback target is accepted.
    let r = server.post(
        "/api/v1/webhooks",
        &json!({"url": "http://127.0.0.1:9/hook", "events": ["*"]}),
    );
    assert_eq!(r.status, 201, "{}\n{}", r.text(), server.log());
    // Every duration unit parses.
    for (flag, value) in [
        ("--retry-base-delay", "30s"),
        ("--retry-max-delay", "5m"),
        ("--retention", "30d"),
    ] {
        let server = Server::start_with(&[flag, value]);
        assert_eq!(server.get("/api/v1/events").status, 200, "{flag} {value}");
    }
}

#[test]
fn environment_variables_configure_serve() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("env.db");
    let db = path_arg(&db);
    // HOOKBOX_DB and HOOKBOX_LISTEN stand in for --db and --listen.
    let server = EnvServer::start(&[
        ("HOOKBOX_DB", db),
        ("HOOKBOX_LISTEN", "127.0.0.1:0"),
        ("HOOKBOX_MAX_BODY_SIZE", "1KiB"),
    ]);
    let token_file = dir.path().join("env.db.admin-token");
    let token = std::fs::read_to_string(&token_file)
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", token_file.display(), server.log()))
        .trim()
        .to_owned();
    let small = publish_body(1);
    assert!(small.len() < 1024);
    let r = server.send("POST", "/api/v1/events", &token, Some(&small));
    assert_eq!(r.status, 202, "{}\n{}", r.text(), server.log());
    let mut big = item(2);
    big["title"] = json!("t".repeat(2048));
    let big = json!({"event": "item.created", "data": big}).to_string();
    let r = server.send("POST", "/api/v1/events", &token, Some(big.as_bytes()));
    r.error(413, "payload_too_large");
    drop(server);

    let server = EnvServer::start(&[
        ("HOOKBOX_DB", db),
        ("HOOKBOX_LISTEN", "127.0.0.1:0"),
        ("HOOKBOX_API_ALLOW", "10.0.0.0/8"),
    ]);
    let r = server.send("GET", "/api/v1/events", &token, None);
    r.error(403, "ip_not_allowed");
    drop(server);

    // A bad value in a variable is refused like a bad flag, naming it.
    for (name, value) in [
        ("HOOKBOX_RETRY_BASE_DELAY", "5x"),
        ("HOOKBOX_ALLOW_TARGETS", "10.0.0.0/99"),
    ] {
        let mut command = hookbox();
        command
            .args(["serve", "--db", db, "--listen", "127.0.0.1:0"])
            .env(name, value);
        let out = run(command);
        assert!(!out.status.success(), "{name}={value}: {}", show(&out));
        assert!(
            stderr(&out).contains(value),
            "{name}={value}: the message does not name the value:\n{}",
            show(&out)
        );
    }
}

/// `hookbox token create` and the token it printed on its last line.
fn token_create(db: &Path, name: &str, scope: &str) -> (Output, String) {
    let out = hookbox_run(&[
        "token",
        "create",
        "--name",
        name,
        "--scope",
        scope,
        "--db",
        path_arg(db),
    ]);
    assert!(out.status.success(), "{}", show(&out));
    let text = stdout(&out);
    let last = text.lines().last().unwrap_or_default().to_owned();
    (out, last)
}

#[test]
fn token_create_prints_the_token_alone_on_the_last_line() {
    let server = Server::start();
    let (out, reader) = token_create(&server.db(), "ci-reader", "read");
    assert!(
        !reader.is_empty() && !reader.contains(char::is_whitespace) && reader.len() >= 20,
        "the last line is not a token alone: {reader:?}\n{}",
        show(&out)
    );
    let (_, publisher) = token_create(&server.db(), "shop-app", "publish");
    assert_ne!(reader, publisher);

    // Each works at once on the running server, within its scope.
    let get = |token: &str| send(server.addr, "GET", "/api/v1/events", token, None);
    let post = |token: &str| {
        send(
            server.addr,
            "POST",
            "/api/v1/events",
            token,
            Some(&publish_body(1)),
        )
    };
    assert_eq!(get(&reader).status, 200);
    post(&reader).error(403, "forbidden");
    assert_eq!(post(&publisher).status, 202);
    get(&publisher).error(403, "forbidden");
    get("not-a-token").error(401, "unauthorized");
}

/// The lines of `hookbox token list`.
fn token_list(db: &Path) -> Vec<String> {
    let out = hookbox_run(&["token", "list", "--db", path_arg(db)]);
    assert!(out.status.success(), "{}", show(&out));
    stdout(&out).lines().map(str::to_owned).collect()
}

/// Whether `word` starts with an RFC 3339 UTC time such as 2025-01-21T22:20:56Z.
fn is_rfc3339(word: &str) -> bool {
    let b = word.as_bytes();
    let digits = |r: std::ops::Range<usize>| {
        r.into_iter()
            .all(|i| b.get(i).is_some_and(u8::is_ascii_digit))
    };
    b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && word.ends_with('Z')
}

fn times_in(line: &str) -> usize {
    line.split_whitespace().filter(|w| is_rfc3339(w)).count()
}

fn line_for<'a>(lines: &'a [String], name: &str) -> &'a str {
    lines
        .iter()
        .find(|l| l.split_whitespace().any(|w| w == name))
        .unwrap_or_else(|| panic!("no line names {name}: {lines:#?}"))
}

fn token_id(line: &str) -> String {
    let ids: Vec<_> = line
        .split_whitespace()
        .filter(|w| w.starts_with("tok_"))
        .collect();
    assert_eq!(ids.len(), 1, "one tok_ id per line: {line}");
    ids[0].to_owned()
}

#[test]
fn token_list_shows_id_name_scope_and_times_but_never_the_token() {
    let server = Server::start();
    let (_, reader) = token_create(&server.db(), "ci-reader", "read");
    let (_, publisher) = token_create(&server.db(), "shop-app", "publish");
    let r = send(
        server.addr,
        "POST",
        "/api/v1/events",
        &publisher,
        Some(&publish_body(1)),
    );
    assert_eq!(r.status, 202, "{}", r.text());

    // The last use is recorded without waiting for it: poll.
    let lines = util::wait_for(Duration::from_secs(10), "shop-app's last use", || {
        let lines = token_list(&server.db());
        (times_in(line_for(&lines, "shop-app")) == 2).then_some(lines)
    });
    assert_eq!(
        lines.len(),
        4,
        "a header, then one line per token (the bootstrap admin, ci-reader, shop-app): {lines:#?}"
    );
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        ["ID", "NAME", "SCOPE", "CREATED", "LAST", "USED", "ALLOW"],
        "{lines:#?}"
    );
    let lines = &lines[1..];
    for line in lines {
        for secret in [&server.token, &reader, &publisher] {
            assert!(
                !line.contains(secret.as_str()),
                "token list shows a token: {line}"
            );
        }
    }
    let ids: BTreeSet<String> = lines.iter().map(|l| token_id(l)).collect();
    assert_eq!(ids.len(), 3, "{lines:#?}");

    let shop = line_for(lines, "shop-app");
    assert!(shop.split_whitespace().any(|w| w == "publish"), "{shop}");
    assert_eq!(times_in(shop), 2, "created and last used: {shop}");
    assert!(shop.ends_with(" any"), "no allowlist: any address: {shop}");
    let ci = line_for(lines, "ci-reader");
    assert!(ci.split_whitespace().any(|w| w == "read"), "{ci}");
    assert_eq!(times_in(ci), 1, "created, never used: {ci}");
    let admin = lines
        .iter()
        .find(|l| l.split_whitespace().any(|w| w == "admin"))
        .unwrap_or_else(|| panic!("no admin token listed: {lines:#?}"));
    assert!(times_in(admin) >= 1, "{admin}");
}

#[test]
fn token_revoke_refuses_an_unknown_id_and_locks_out_a_known_one() {
    let server = Server::start();
    let out = hookbox_run(&[
        "token",
        "revoke",
        "tok_00000000000000000000000000",
        "--db",
        path_arg(&server.db()),
    ]);
    assert!(!out.status.success(), "{}", show(&out));
    assert!(
        stderr(&out).contains("tok_00000000000000000000000000"),
        "{}",
        show(&out)
    );

    let (_, reader) = token_create(&server.db(), "ci-reader", "read");
    assert_eq!(
        send(server.addr, "GET", "/api/v1/events", &reader, None).status,
        200
    );
    let id = token_id(line_for(&token_list(&server.db()), "ci-reader"));
    let out = hookbox_run(&["token", "revoke", &id, "--db", path_arg(&server.db())]);
    assert!(out.status.success(), "{}", show(&out));
    send(server.addr, "GET", "/api/v1/events", &reader, None).error(401, "unauthorized");
    assert!(
        token_list(&server.db()).iter().all(|l| !l.contains(&id)),
        "a revoked token is still listed as live"
    );
    // Revoking it again: it is no longer a live token.
    let out = hookbox_run(&["token", "revoke", &id, "--db", path_arg(&server.db())]);
    assert!(!out.status.success(), "{}", show(&out));
}

fn check(db: &Path) -> Output {
    hookbox_run(&["check", "--db", path_arg(db)])
}

fn backup(db: &Path, dest: &Path) -> Output {
    hookbox_run(&["backup", path_arg(dest), "--db", path_arg(db)])
}

#[test]
fn backup_refuses_to_overwrite_an_existing_file_unless_forced_and_says_so_once() {
    let server = Server::start();
    server.create_webhook(&["*"]);
    let dest = server.dir.path().join("nightly.db");
    std::fs::write(&dest, b"last night's copy").unwrap();

    let out = backup(&server.db(), &dest);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        stderr(&out).contains("already exists") && stderr(&out).contains("--force"),
        "{}",
        show(&out)
    );
    assert_eq!(std::fs::read(&dest).unwrap(), b"last night's copy");

    let out = hookbox_run(&[
        "backup",
        path_arg(&dest),
        "--force",
        "--db",
        path_arg(&server.db()),
    ]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(check(&dest).status.code(), Some(0));
    // One message, on standard output; the log does not repeat it.
    assert_eq!(
        stdout(&out)
            .lines()
            .filter(|l| l.contains("backed up"))
            .count(),
        1,
        "{}",
        show(&out)
    );
    assert!(
        !stderr(&out).contains("backup"),
        "the message is printed twice: {}",
        show(&out)
    );
}

#[test]
fn check_exits_0_on_a_good_database_and_1_on_a_corrupted_or_missing_one() {
    let server = Server::start();
    server.create_webhook(&["*"]);
    for n in 0..100 {
        let mut data = item(n);
        data["description"] = json!("d".repeat(500));
        let r = server.post(
            "/api/v1/events",
            &json!({"event": "item.created", "data": data}),
        );
        assert_eq!(r.status, 202, "{}", r.text());
    }
    let out = check(&server.db());
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));

    // A single-file copy to damage (the live file may lag its WAL).
    let copy = server.dir.path().join("copy.db");
    let out = backup(&server.db(), &copy);
    assert!(out.status.success(), "{}", show(&out));
    let out = check(&copy);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let mut bytes = std::fs::read(&copy).expect("read copy");
    let len = bytes.len();
    assert!(len >= 64 * 1024, "the copy is only {len} bytes");
    for (i, b) in bytes[len / 3..2 * len / 3].iter_mut().enumerate() {
        *b = (i % 251) as u8 ^ 0x5a;
    }
    std::fs::write(&copy, &bytes).expect("write damaged copy");
    let out = check(&copy);
    assert_eq!(out.status.code(), Some(1), "damaged copy: {}", show(&out));
    assert!(!stderr(&out).trim().is_empty(), "{}", show(&out));

    let missing = server.dir.path().join("missing.db");
    let out = check(&missing);
    assert_eq!(out.status.code(), Some(1), "missing file: {}", show(&out));
    assert!(
        !missing.exists(),
        "check created the database it was asked to check"
    );
}

#[test]
fn backup_while_serving_holds_every_event_published_before_it() {
    let server = Server::start();
    server.create_webhook(&["*"]);
    let mut before: Vec<String> = (0..30).map(|n| publish(&server, n)).collect();

    // Keep publishing while the backup runs.
    let stop = AtomicBool::new(false);
    let during = Mutex::new(Vec::new());
    let dest = server.dir.path().join("backup.db");
    let out = thread::scope(|s| {
        s.spawn(|| {
            let mut n = 1000;
            while !stop.load(Ordering::Relaxed) {
                let id = publish(&server, n);
                during.lock().unwrap().push(id);
                n += 1;
            }
        });
        util::wait_for(Duration::from_secs(10), "publishing to start", || {
            (!during.lock().unwrap().is_empty()).then_some(())
        });
        before.extend(during.lock().unwrap().iter().cloned());
        let started = Instant::now();
        let out = backup(&server.db(), &dest);
        stop.store(true, Ordering::Relaxed);
        (out, started.elapsed())
    });
    let (out, took) = out;
    assert!(out.status.success(), "{}", show(&out));
    assert!(took < Duration::from_secs(10), "backup took {took:?}");
    assert_eq!(
        std::fs::metadata(&dest)
            .expect("backup file")
            .permissions()
            .mode()
            & 0o777,
        0o600,
        "the backup holds secrets: it must be private"
    );
    let wal: PathBuf = format!("{}-wal", dest.display()).into();
    assert!(
        !wal.exists(),
        "the backup is not one file: {}",
        wal.display()
    );
    let out = check(&dest);
    assert_eq!(
        out.status.code(),
        Some(0),
        "check on the backup: {}",
        show(&out)
    );

    // Serve the copy: the original admin token is in it, and so is every
    // event published before the backup.
    let copy = EnvServer::start(&[
        ("HOOKBOX_DB", path_arg(&dest)),
        ("HOOKBOX_LISTEN", "127.0.0.1:0"),
    ]);
    for id in &before {
        let r = copy.send("GET", &format!("/api/v1/events/{id}"), &server.token, None);
        assert_eq!(
            r.status,
            200,
            "event {id}, published before the backup, is not in it: {}\n{}",
            r.text(),
            copy.log()
        );
        assert_eq!(r.json()["deliveries"].as_array().map(Vec::len), Some(1));
    }
}

#[test]
fn token_create_allow_pins_a_token_to_client_networks() {
    let server = Server::start();
    let create = |name: &str, allow: &str| {
        hookbox_run(&[
            "token",
            "create",
            "--name",
            name,
            "--scope",
            "read",
            "--allow",
            allow,
            "--db",
            path_arg(&server.db()),
        ])
    };
    let out = create("pinned-lan", "10.0.0.0/8,fd00::/8");
    assert!(out.status.success(), "{}", show(&out));
    let elsewhere = stdout(&out).lines().last().unwrap().to_owned();
    let out = create("pinned-here", "127.0.0.1");
    assert!(out.status.success(), "{}", show(&out));
    let here = stdout(&out).lines().last().unwrap().to_owned();
    server
        .send("GET", "/api/v1/webhooks", &[], None, Some(&elsewhere))
        .error(403, "ip_not_allowed");
    let r = server.send("GET", "/api/v1/webhooks", &[], None, Some(&here));
    assert_eq!(r.status, 200, "{}", r.text());

    let out = create("pinned-bad", "10.0.0.0/99");
    assert!(!out.status.success(), "{}", show(&out));
    assert!(stderr(&out).contains("10.0.0.0/99"), "{}", show(&out));

    // `token list` shows each token's allowlist.
    let lines = token_list(&server.db());
    let lan = line_for(&lines, "pinned-lan");
    assert!(lan.ends_with(" 10.0.0.0/8,fd00::/8"), "{lan}");
    let here = line_for(&lines, "pinned-here");
    assert!(here.ends_with(" 127.0.0.1/32"), "{here}");
}

#[test]
fn token_create_refuses_a_name_a_live_token_has_until_that_token_is_revoked() {
    let server = Server::start();
    let (first, _) = token_create(&server.db(), "shop-app", "publish");
    let id = token_id(stdout(&first).lines().next().unwrap());
    let again = hookbox_run(&[
        "token",
        "create",
        "--name",
        "shop-app",
        "--db",
        path_arg(&server.db()),
    ]);
    assert!(!again.status.success(), "{}", show(&again));
    assert!(
        stderr(&again).contains("already named \"shop-app\"") && stderr(&again).contains(&id),
        "{}",
        show(&again)
    );
    assert!(
        stdout(&again).is_empty(),
        "no token printed: {}",
        show(&again)
    );
    let named: Vec<_> = token_list(&server.db())
        .into_iter()
        .filter(|l| l.split_whitespace().any(|w| w == "shop-app"))
        .collect();
    assert_eq!(named.len(), 1, "{named:#?}");

    // The API refuses it too, with 409 and the error shape.
    server
        .post(
            "/api/v1/tokens",
            &serde_json::json!({"name": "shop-app", "scope": "read"}),
        )
        .error(409, "already_exists");

    // Once revoked, the name is free again.
    let out = hookbox_run(&["token", "revoke", &id, "--db", path_arg(&server.db())]);
    assert!(out.status.success(), "{}", show(&out));
    token_create(&server.db(), "shop-app", "publish");
    let r = server.post(
        "/api/v1/tokens",
        &serde_json::json!({"name": "website", "scope": "read"}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    server
        .post(
            "/api/v1/tokens",
            &serde_json::json!({"name": "website", "scope": "read"}),
        )
        .error(409, "already_exists");
}

/// `hookbox verify` with the body on standard input.
fn verify(args: &[&str], body: &[u8]) -> Output {
    let mut child = hookbox()
        .arg("verify")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(body).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn verify_tells_a_receivers_developer_whether_a_captured_request_verifies() {
    // The Standard Webhooks reference vector (SPEC section 4).
    let body = br#"{"email":"test@example.com","username":"test_user"}"#;
    let reference = [
        "--secret",
        "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
        "--id",
        "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
        "--timestamp",
        "1649367553",
        "--signature",
        "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=",
    ];
    // Signed correctly, but years ago: a replay, refused.
    let out = verify(&reference, body);
    assert!(!out.status.success(), "{}", show(&out));
    assert!(stderr(&out).contains("signature matches"), "{}", show(&out));
    assert!(stderr(&out).contains("replay"), "{}", show(&out));
    // Widened for an old capture, it passes; the matching entry is named.
    let mut wide = reference.to_vec();
    wide.extend(["--tolerance", "10000d"]);
    let out = verify(&wide, body);
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        stdout(&out).starts_with("ok: signature matches (entry 1 of 1)"),
        "{}",
        show(&out)
    );
    // One byte more (an added newline) and it no longer verifies.
    let out = verify(&wide, &[&body[..], b"\n"].concat());
    assert!(!out.status.success(), "{}", show(&out));
    assert!(stderr(&out).contains("does not match"), "{}", show(&out));
    assert!(stderr(&out).contains("52 body bytes"), "{}", show(&out));

    // A raw secret (the seed's), signed now, with two entries as during a
    // rotation: the second one matches.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let signature = format!(
        "v1,bm90IHRoaXMgb25l {}",
        util::receiver::sign("your-secret-key", "evt_1", &now, body)
    );
    let args = [
        "--secret",
        "your-secret-key",
        "--id",
        "evt_1",
        "--timestamp",
        &now,
        "--signature",
        &signature,
    ];
    let out = verify(&args, body);
    assert!(out.status.success(), "{}", show(&out));
    assert!(stdout(&out).contains("entry 2 of 2"), "{}", show(&out));
    let mut wrong = args.to_vec();
    wrong[1] = "another-secret-key";
    assert!(!verify(&wrong, body).status.success());
    let mut garbage = args.to_vec();
    garbage[7] = "sha256=abc";
    let out = verify(&garbage, body);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("v1,"), "{}", show(&out));
}

/// `token create` on a new database: it migrates the schema, which logs at
/// info level — a one-shot command that shows the logger's settings.
fn fresh_token_create(extra: &[&str], env: &[(&str, &str)]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("log.db");
    let mut command = hookbox();
    command
        .args(["token", "create", "--name", "n", "--db"])
        .arg(&db)
        .args(extra)
        .env_remove("RUST_LOG")
        .env_remove("JOURNAL_STREAM");
    for (name, value) in env {
        command.env(name, value);
    }
    let out = run(command);
    assert!(out.status.success(), "{}", show(&out));
    out
}

#[test]
fn log_level_and_rust_log_choose_what_is_logged() {
    let info = stderr(&fresh_token_create(&[], &[]));
    assert!(info.contains("schema migrated"), "{info}");
    // Plain text outside journald: each line starts with a timestamp.
    let first = info.lines().next().unwrap();
    assert!(first.starts_with("[20"), "{first}");
    let quiet = stderr(&fresh_token_create(&["--log-level", "warn"], &[]));
    assert!(!quiet.contains("schema migrated"), "{quiet}");
    let quiet = stderr(&fresh_token_create(&[], &[("HOOKBOX_LOG_LEVEL", "error")]));
    assert!(!quiet.contains("schema migrated"), "{quiet}");
    // RUST_LOG wins over the flag.
    let loud = stderr(&fresh_token_create(
        &["--log-level", "warn"],
        &[("RUST_LOG", "info")],
    ));
    assert!(loud.contains("schema migrated"), "{loud}");
    let out = run({
        let mut c = hookbox();
        c.args(["--log-level", "loud", "check"]);
        c
    });
    assert!(!out.status.success());
    assert!(stderr(&out).contains("loud"), "{}", show(&out));
}

#[test]
fn log_format_json_writes_one_object_per_line() {
    let err = stderr(&fresh_token_create(&["--log-format", "json"], &[]));
    let lines: Vec<Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(!lines.is_empty());
    for line in &lines {
        assert!(line["ts"].as_str().unwrap().ends_with('Z'), "{line}");
        assert_eq!(line["level"], "info", "{line}");
        assert!(
            line["target"].as_str().unwrap().starts_with("hookbox"),
            "{line}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l["msg"].as_str().unwrap().contains("schema migrated")),
        "{err}"
    );
}

#[test]
fn under_journald_lines_carry_a_priority_and_no_timestamp() {
    let err = stderr(&fresh_token_create(&[], &[("JOURNAL_STREAM", "8:12345")]));
    let line = err
        .lines()
        .find(|l| l.contains("schema migrated"))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(
        line.starts_with("<6>hookbox::store::schema: database schema migrated"),
        "{line}"
    );
}

#[test]
fn help_never_prints_a_secret_taken_from_the_environment() {
    for (command, name, value) in [
        (
            "verify",
            "HOOKBOX_SECRET",
            "whsec_c2VjcmV0LWZyb20tdGhlLWVudmlyb25tZW50",
        ),
        (
            "serve",
            "HOOKBOX_ALERT_URL",
            "https://alerts.example/hook?key=env-credential-42",
        ),
    ] {
        let out = run({
            let mut c = hookbox();
            c.args([command, "--help"]).env(name, value);
            c
        });
        assert!(out.status.success(), "{}", show(&out));
        assert!(stdout(&out).contains(name), "{}", show(&out));
        assert!(
            !stdout(&out).contains(value),
            "{command} --help shows {name}: {}",
            show(&out)
        );
    }
}

#[test]
fn serve_tightens_a_database_and_its_wal_and_shm_that_others_can_read() {
    let mut server = Server::start();
    server.create_webhook(&["*"]);
    // Killed, so the -wal and -shm files stay beside the database.
    server.kill9();
    let files: Vec<PathBuf> = ["", "-wal", "-shm"]
        .iter()
        .map(|suffix| PathBuf::from(format!("{}{suffix}", server.db().display())))
        .collect();
    for file in &files {
        assert!(file.exists(), "{} is missing", file.display());
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    server.restart();
    for file in &files {
        let mode = std::fs::metadata(file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}: {mode:o}", file.display());
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            server
                .log()
                .lines()
                .any(|l| l.contains("WARN") && l.contains(&name) && l.contains("tightened")),
            "no warning for {name}:\n{}",
            server.log()
        );
    }
    // Nothing was lost: the webhook is still there.
    let r = server.get("/api/v1/webhooks");
    assert_eq!(
        r.json()["data"].as_array().unwrap().len(),
        1,
        "{}",
        r.text()
    );
}
