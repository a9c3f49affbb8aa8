//! Fault injection from outside (SPEC sections 5 and 7, issue 7 item 1):
//! the real `hookbox` binary, a real receiver that checks every signature,
//! and faults a real machine has — SIGKILL at random moments, a receiver
//! that is down for a while, a full disk, backups and checks under load.
//!
//! Random moments come from a small seeded generator ([`Rng`]); each test
//! prints its seed, and `HOOKBOX_FAULT_SEED=<n>` replays one. The random
//! delays are the fault injection; everything else waits by polling with a
//! deadline.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod util;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rusqlite::{Connection, OpenFlags};
use serde_json::{Value, json};
use util::receiver::{Answer, Gate, Receiver, Seen, busiest_window, verify};
use util::{Response, Server, eventually, wait_for};

// ---------------------------------------------------------------------------
// Helpers

/// xorshift64*: enough randomness to pick kill moments, reproducible from
/// the printed seed.
struct Rng(u64);

impl Rng {
    /// Seeded from `HOOKBOX_FAULT_SEED` or the clock; prints the seed.
    fn new(test: &str) -> Rng {
        let seed = std::env::var("HOOKBOX_FAULT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        println!("{test}: seed {seed} (replay with HOOKBOX_FAULT_SEED={seed})");
        Rng(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `lo..hi` milliseconds.
    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo))
    }
}

/// A fixed `whsec_` secret, so the receiver can verify from the first
/// request on.
fn secret() -> String {
    format!("whsec_{}", STANDARD.encode([0x5a; 32]))
}

/// A delivering server whose webhooks may target loopback, with `flags`.
fn serve(flags: &[&str]) -> Server {
    let mut all = vec!["--allow-targets", "127.0.0.0/8"];
    all.extend_from_slice(flags);
    Server::delivering(&all)
}

fn create_webhook(server: &Server, body: Value) -> String {
    let r = server.post("/api/v1/webhooks", &body);
    assert_eq!(r.status, 201, "{body}: {}\n{}", r.text(), server.log());
    r.json()["id"].as_str().expect("webhook id").to_owned()
}

/// The `n`-th test event: the seed types in turn, each made distinct.
fn event(n: usize) -> Value {
    let examples = util::seed_examples();
    let (name, mut data) = examples[n % examples.len()].clone();
    data["fault_test_n"] = json!(n);
    json!({"event": name, "data": data})
}

/// One request on a fresh connection that never panics on I/O: the server
/// may be dying, full or gone.
fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&Value>,
) -> std::io::Result<Response> {
    let body = body.map(Value::to_string).unwrap_or_default();
    let raw = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    stream.write_all(raw.as_bytes())?;
    util::read_response(&mut BufReader::new(stream))
}

fn publish(addr: SocketAddr, token: &str, n: usize) -> std::io::Result<Response> {
    send(addr, "POST", "/api/v1/events", token, Some(&event(n)))
}

fn id_of(r: &Response) -> String {
    r.json()["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {}", r.text()))
        .to_owned()
}

fn hookbox(args: &[&str], db: &Path) -> Output {
    Command::new(util::BIN)
        .args(args)
        .arg("--db")
        .arg(db)
        .output()
        .expect("run hookbox")
}

fn show(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout ---\n{}--- stderr ---\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `hookbox check` on `db`, asserting it passes.
fn assert_check_passes(db: &Path, when: &str) {
    let out = hookbox(&["check"], db);
    assert!(out.status.success(), "check {when}: {}", show(&out));
}

/// How many times each webhook-id arrived at `rx`.
fn arrivals(rx: &Receiver) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for s in rx.seen.lock().unwrap().iter() {
        *counts.entry(s.webhook_id().to_owned()).or_insert(0) += 1;
    }
    counts
}

/// Waits until every id in `accepted` has arrived at `rx` at least once.
fn wait_all_arrive(server: &Server, rx: &Receiver, accepted: &BTreeSet<String>, timeout: Duration) {
    eventually(
        server,
        timeout,
        || {
            let got = arrivals(rx);
            let missing: Vec<_> = accepted
                .iter()
                .filter(|id| !got.contains_key(*id))
                .collect();
            format!(
                "every accepted event to arrive; {} of {} missing, such as {:?}",
                missing.len(),
                accepted.len(),
                missing.iter().take(10).collect::<Vec<_>>()
            )
        },
        || {
            let got = arrivals(rx);
            accepted.iter().all(|id| got.contains_key(id)).then_some(())
        },
    );
}

/// Every request `rx` got verifies under `secret`, and its body's `id` is
/// its webhook-id.
fn assert_all_signed(rx: &Receiver, secret: &str) {
    for s in rx.seen.lock().unwrap().iter() {
        if let Err(why) = verify(secret, s) {
            panic!("a delivery does not verify: {why}: {s:?}");
        }
        assert_eq!(s.json()["id"], s.webhook_id(), "{s:?}");
    }
}

/// The stored payload of every event in a database file (read-only).
fn stored_payloads(db: &Path) -> BTreeMap<String, Vec<u8>> {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap_or_else(|e| panic!("open {}: {e}", db.display()));
    let mut stmt = conn.prepare("SELECT id, payload FROM events").unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

// ---------------------------------------------------------------------------
// 1. SIGKILL at random moments, many times

/// Publishes from one thread to whatever address the server has now, until
/// `stop`; keeps the ids answered 202 and every answer that was neither 202
/// nor 503. Connection errors (the server was just killed) are retried.
struct Publisher {
    addr: Mutex<SocketAddr>,
    accepted: Mutex<Vec<String>>,
    wrong: Mutex<Vec<String>>,
    refused: AtomicUsize,
    sent: AtomicUsize,
    stop: AtomicBool,
}

impl Publisher {
    fn new(addr: SocketAddr) -> Publisher {
        Publisher {
            addr: Mutex::new(addr),
            accepted: Mutex::new(Vec::new()),
            wrong: Mutex::new(Vec::new()),
            refused: AtomicUsize::new(0),
            sent: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        }
    }

    fn run(&self, token: &str) {
        let mut n = 0;
        while !self.stop.load(Ordering::Relaxed) {
            let addr = *self.addr.lock().unwrap();
            match publish(addr, token, n) {
                Ok(r) if r.status == 202 => self.accepted.lock().unwrap().push(id_of(&r)),
                Ok(r) if r.status == 503 => {
                    self.refused.fetch_add(1, Ordering::Relaxed);
                }
                Ok(r) => self
                    .wrong
                    .lock()
                    .unwrap()
                    .push(format!("{} {}", r.status, r.text())),
                // Killed mid-request or not listening yet: pace the retry
                // (this is not a wait for anything).
                Err(_) => thread::sleep(Duration::from_millis(2)),
            }
            n += 1;
            self.sent.store(n, Ordering::Relaxed);
        }
    }

    fn accepted(&self) -> BTreeSet<String> {
        self.accepted.lock().unwrap().iter().cloned().collect()
    }
}

#[test]
fn no_event_answered_202_is_lost_across_25_random_sigkills_while_publishing_and_delivering() {
    const KILLS: usize = 25;
    let mut rng = Rng::new("sigkill cycles");
    let secret = secret();
    // Answers after 0-15 ms, so attempts are often in flight at a kill.
    let rx = Receiver::start(|n, _| Answer::ok().after(Duration::from_millis((n * 7 % 16) as u64)));
    let mut server = serve(&[
        "--retry-base-delay",
        "100ms",
        "--retry-max-delay",
        "500ms",
        "--max-attempts",
        "50",
    ]);
    create_webhook(
        &server,
        json!({"url": rx.url("/faults"), "events": ["*"], "secret": secret}),
    );
    let publisher = Publisher::new(server.addr);
    let token = server.token.clone();
    let began = Instant::now();
    thread::scope(|s| {
        s.spawn(|| publisher.run(&token));
        // Stops the publisher even if this thread panics.
        let _stop = SetOnDrop(&publisher.stop);
        for kill in 0..KILLS {
            let before = publisher.accepted.lock().unwrap().len();
            thread::sleep(rng.millis(0, 400));
            server.kill9();
            server.restart();
            *publisher.addr.lock().unwrap() = server.addr;
            // At least one event accepted by each incarnation now and then,
            // so kills land on a server that is busy, not only starting.
            if kill % 5 == 4 {
                eventually(
                    &server,
                    Duration::from_secs(20),
                    || format!("a publish to be accepted after kill {kill}"),
                    || (publisher.accepted.lock().unwrap().len() > before).then_some(()),
                );
            }
        }
        publisher.stop.store(true, Ordering::Relaxed);
    });
    // The last kill: the file left behind checks clean before any restart.
    server.kill9();
    assert_check_passes(&server.db(), "after the last SIGKILL, before restarting");
    server.restart();

    let accepted = publisher.accepted();
    let wrong = publisher.wrong.lock().unwrap().clone();
    assert!(
        wrong.is_empty(),
        "publishes answered other than 202 or 503: {wrong:?}\n{}",
        server.log()
    );
    assert!(
        accepted.len() >= 100,
        "only {} events accepted across {KILLS} kills",
        accepted.len()
    );
    wait_all_arrive(&server, &rx, &accepted, Duration::from_secs(60));
    assert_all_signed(&rx, &secret);

    let counts = arrivals(&rx);
    let delivered = counts.values().sum::<usize>();
    let duplicated = counts.values().filter(|c| **c > 1).count();
    let extra = delivered - counts.len();
    println!(
        "sigkill cycles: {} kills, {} publish attempts, {} accepted (202), {} refused (503), {} distinct events delivered ({} beyond the accepted: answer lost to a kill), {} requests; {} events delivered more than once ({:.2}% of accepted), {} duplicate requests; lost 0; {:.1}s",
        KILLS + 1,
        publisher.sent.load(Ordering::Relaxed),
        accepted.len(),
        publisher.refused.load(Ordering::Relaxed),
        counts.len(),
        counts.keys().filter(|id| !accepted.contains(*id)).count(),
        delivered,
        duplicated,
        100.0 * duplicated as f64 / accepted.len() as f64,
        extra,
        began.elapsed().as_secs_f64(),
    );
}

/// Sets the flag when dropped, also while unwinding.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------
// 2. A receiver that is down for a while, then recovers

#[test]
fn events_published_during_a_receiver_outage_all_arrive_intact_and_paced_once_it_recovers() {
    const EVENTS: usize = 60;
    const RATE: u32 = 20;
    let secret = secret();
    let down = Arc::new(AtomicBool::new(true));
    // Successful arrivals, in order.
    let ok: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let rx = Receiver::start({
        let (down, ok) = (down.clone(), ok.clone());
        move |n, seen| {
            if down.load(Ordering::SeqCst) {
                // Down: half refused at the connection, half 500.
                if n % 2 == 0 {
                    Answer::close()
                } else {
                    Answer::status(500)
                }
            } else {
                ok.lock().unwrap().push(seen.clone());
                Answer::ok()
            }
        }
    });
    let server = serve(&[
        "--retry-base-delay",
        "100ms",
        "--retry-max-delay",
        "500ms",
        "--max-attempts",
        "20",
    ]);
    create_webhook(
        &server,
        json!({"url": rx.url("/outage"), "events": ["*"], "secret": secret, "rate_limit_per_s": RATE}),
    );
    let accepted: BTreeSet<String> = (0..EVENTS)
        .map(|n| {
            let r = server.post("/api/v1/events", &event(n));
            assert_eq!(r.status, 202, "{}\n{}", r.text(), server.log());
            id_of(&r)
        })
        .collect();
    // The outage lasts until every event has been refused at least once and
    // some retried.
    eventually(
        &server,
        Duration::from_secs(30),
        || {
            format!(
                "every event to be refused once during the outage; refused {}",
                rx.count()
            )
        },
        || {
            let got = arrivals(&rx);
            (accepted.iter().all(|id| got.contains_key(id)) && rx.count() >= EVENTS + 10)
                .then_some(())
        },
    );
    let refused = rx.count();
    let recovered = Instant::now();
    down.store(false, Ordering::SeqCst);

    eventually(
        &server,
        Duration::from_secs(30),
        || {
            format!(
                "every event to arrive after the outage; {} of {EVENTS} did",
                ok.lock().unwrap().len()
            )
        },
        || {
            let got: BTreeSet<String> = ok
                .lock()
                .unwrap()
                .iter()
                .map(|s| s.webhook_id().to_owned())
                .collect();
            accepted.is_subset(&got).then_some(())
        },
    );
    let ok = ok.lock().unwrap().clone();
    assert_all_signed(&rx, &secret);

    // Exactly as published: every attempt's body is the stored payload,
    // byte for byte, and its data what was published.
    let stored = stored_payloads(&server.db());
    for s in rx.seen.lock().unwrap().iter() {
        let payload = stored
            .get(s.webhook_id())
            .unwrap_or_else(|| panic!("{} is not stored", s.webhook_id()));
        assert_eq!(
            s.body,
            *payload,
            "a delivery's body differs from the stored payload of {}",
            s.webhook_id()
        );
        let n = s.json()["data"]["fault_test_n"].as_u64().unwrap() as usize;
        let published = event(n);
        assert_eq!(s.json()["event"], published["event"], "{s:?}");
        assert_eq!(s.json()["data"], published["data"], "{s:?}");
    }

    // Paced: the catch-up keeps to the webhook's rate. The bucket holds at
    // most RATE tokens when the first success comes; from then on the k-th
    // success can come no sooner than (k + 1 - RATE) periods later (100 ms
    // of slack for scheduling noise).
    let mut times: Vec<Instant> = ok.iter().map(|s| s.at).collect();
    times.sort();
    let period = Duration::from_secs(1) / RATE;
    let offsets: Vec<u128> = times.iter().map(|t| (*t - times[0]).as_millis()).collect();
    for (k, t) in times.iter().enumerate().skip(RATE as usize) {
        let earliest = period * u32::try_from(k + 1 - RATE as usize).unwrap();
        assert!(
            *t - times[0] + Duration::from_millis(100) >= earliest,
            "success {k} came {:?} after the first, sooner than the {earliest:?} {RATE}/s allows; arrivals (ms): {offsets:?}",
            *t - times[0]
        );
    }
    let busiest = busiest_window(&times, Duration::from_secs(1));
    assert!(
        busiest <= 2 * RATE as usize,
        "{busiest} deliveries within one second at {RATE}/s; arrivals (ms): {offsets:?}"
    );
    let span = *times.last().unwrap() - times[0];
    let catch_up = *times.last().unwrap() - recovered;
    // Not slower than asked either: the rate, plus the longest retry delay
    // each delivery may still wait after the recovery.
    let slowest = Duration::from_secs_f64(EVENTS as f64 / RATE as f64) + Duration::from_secs(3);
    assert!(
        catch_up < slowest,
        "the catch-up of {EVENTS} at {RATE}/s took {catch_up:?}; arrivals (ms): {offsets:?}"
    );
    let after_burst = (times.len() - RATE as usize) as f64
        / (*times.last().unwrap() - times[RATE as usize - 1]).as_secs_f64();
    println!(
        "receiver outage: {EVENTS} events, {refused} attempts refused during the outage, {} successful deliveries ({} duplicates) in {:.2}s after recovery; first-to-last span {:.2}s, busiest second {busiest}, rate after the first {RATE} {:.1}/s (limit {RATE}/s)",
        ok.len(),
        ok.len() - EVENTS,
        catch_up.as_secs_f64(),
        span.as_secs_f64(),
        after_burst,
    );
    assert!(
        after_burst <= RATE as f64 * 1.15,
        "catch-up after the burst ran at {after_burst:.1}/s, over the {RATE}/s limit; arrivals (ms): {offsets:?}"
    );
}

// ---------------------------------------------------------------------------
// 3. A full disk

/// `hookbox serve` in a mount namespace of its own whose `dir` is a small
/// tmpfs (the test reaches its files through `/proc/<pid>/root`).
struct Confined {
    child: Child,
    log: Arc<Mutex<String>>,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Confined {
    fn start(dir: &Path, size: &str, args: &[&str]) -> Confined {
        let mut command = Command::new("unshare");
        command
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(r#"mount -t tmpfs -o "size=$1,mode=0700" tmpfs "$2" && d="$2" && b="$3" && shift 3 && exec "$b" serve --db "$d/h.db" --listen 127.0.0.1:0 "$@""#)
            .arg("sh")
            .arg(size)
            .arg(dir)
            .arg(util::BIN)
            .args(args);
        let (child, log, addr) = util::spawn_command(command);
        Confined {
            child,
            log,
            addr,
            dir: dir.to_owned(),
        }
    }

    /// `path` (inside the tmpfs) as the test sees it.
    fn path(&self, name: &str) -> PathBuf {
        let inside = self.dir.strip_prefix("/").unwrap().join(name);
        PathBuf::from(format!("/proc/{}/root", self.child.id())).join(inside)
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Confined {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether this process may mount (root, as in CI).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1).map(|uid| uid == "0"))
        .unwrap_or(false)
}

/// What the tmpfs holds, for failure messages.
fn space(server: &Confined) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg("df -k \"$1\"; ls -la \"$1\"")
        .arg("sh")
        .arg(server.path(""))
        .output()
        .expect("df");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Writes zeros to `path` until the file system is full.
fn fill(path: &Path) -> u64 {
    let mut file =
        std::fs::File::create(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let chunk = vec![0u8; 64 * 1024];
    let mut written = 0u64;
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    // Any last bytes the file system can still take, one at a time.
    while let Ok(1) = file.write(&[0]) {
        written += 1;
    }
    written
}

#[test]
#[ignore = "needs root to mount a tmpfs in a mount namespace: CI runs it"]
fn a_full_disk_answers_503_storage_unavailable_loses_nothing_and_service_resumes_when_space_returns()
 {
    assert!(
        is_root(),
        "mounting a tmpfs in a mount namespace needs root: run this test as root (CI does)"
    );
    for tool in ["unshare", "nsenter"] {
        util::require_tool(&[tool], "unshare and nsenter are Debian's util-linux");
    }
    let secret = secret();
    // Held until the disk is full, so deliveries are in flight and pending
    // then, and their attempt records meet the full disk.
    let gate = Gate::default();
    let rx = Receiver::start({
        let gate = gate.clone();
        move |_, _| Answer::held(&gate)
    });
    let tmp = tempfile::tempdir().expect("temp dir");
    let server = Confined::start(
        tmp.path(),
        "16m",
        &[
            "--allow-targets",
            "127.0.0.0/8",
            "--retry-base-delay",
            "100ms",
            "--retry-max-delay",
            "500ms",
            "--max-attempts",
            "50",
        ],
    );
    let token = std::fs::read_to_string(server.path("h.db.admin-token"))
        .expect("admin token file")
        .trim()
        .to_owned();
    let addr = server.addr;
    let r = send(
        addr,
        "POST",
        "/api/v1/webhooks",
        &token,
        Some(&json!({"url": rx.url("/full"), "events": ["*"], "secret": secret})),
    )
    .unwrap();
    assert_eq!(r.status, 201, "{}", r.text());

    let mut accepted = BTreeSet::new();
    let mut n = 0;
    let mut publish_one = |accepted: &mut BTreeSet<String>| -> Response {
        let r = publish(addr, &token, n)
            .unwrap_or_else(|e| panic!("publish {n}: {e}\n{}", server.log()));
        n += 1;
        assert!(
            r.status == 202 || r.status == 503,
            "publish {n} answered {}: {}\n--- server log ---\n{}",
            r.status,
            r.text(),
            server.log()
        );
        if r.status == 202 {
            accepted.insert(id_of(&r));
        }
        r
    };
    for _ in 0..50 {
        assert_eq!(publish_one(&mut accepted).status, 202);
    }

    // Fill the disk. SQLite may still commit into WAL space it already
    // has, so publish (each answered 202 counts as accepted) until a 503.
    let filler = server.path("filler");
    let filled = fill(&filler);
    let refused = wait_for(
        Duration::from_secs(30),
        "a publish to be refused on the full disk",
        || {
            let r = publish_one(&mut accepted);
            (r.status == 503).then_some(r)
        },
    );
    let error = refused.error(503, "storage_unavailable");
    assert!(
        refused
            .header("Retry-After")
            .is_some_and(|v| v.parse::<u64>().is_ok()),
        "no Retry-After in seconds on the 503: {:?}",
        refused.headers
    );
    // It stays full: more publishes are 503 (or 202 where SQLite still had
    // room), never 500, and the server stays up.
    // The held attempts end now, while the disk is full: their records
    // cannot be written.
    let in_flight = rx.count();
    gate.open();
    let full_since = Instant::now();
    let mut refusals = 1;
    while refusals < 20 || full_since.elapsed() < Duration::from_millis(300) {
        if publish_one(&mut accepted).status == 503 {
            refusals += 1;
        }
    }
    let health = send(addr, "GET", "/healthz", &token, None).unwrap();
    assert!(
        health.status == 200 || health.status == 503,
        "{}",
        health.text()
    );

    // Space returns: publishing resumes by itself, without a restart.
    std::fs::remove_file(&filler).expect("remove the filler");
    let resumed_after = Instant::now();
    wait_for(
        Duration::from_secs(30),
        "publishing to resume after space returned",
        || (publish_one(&mut accepted).status == 202).then_some(()),
    );
    let resumed_in = resumed_after.elapsed();
    for i in 0..20 {
        let r = publish_one(&mut accepted);
        assert_eq!(
            r.status,
            202,
            "publish {i} after publishing resumed {resumed_in:?} after space returned: {}\n{}\n--- server log ---\n{}",
            r.text(),
            space(&server),
            server.log()
        );
    }

    // Nothing accepted is lost: stored, readable, and delivered.
    for id in &accepted {
        let r = send(addr, "GET", &format!("/api/v1/events/{id}"), &token, None).unwrap();
        assert_eq!(
            r.status,
            200,
            "accepted event {id}: {}\n{}",
            r.text(),
            server.log()
        );
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = arrivals(&rx);
        let missing: Vec<_> = accepted
            .iter()
            .filter(|id| !got.contains_key(*id))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} accepted events never arrived, such as {:?}\n--- server log ---\n{}",
            missing.len(),
            missing.iter().take(5).collect::<Vec<_>>(),
            server.log()
        );
        thread::sleep(Duration::from_millis(20));
    }
    assert_all_signed(&rx, &secret);
    // The engine goes on: every delivery ends succeeded without a restart.
    // Those whose attempt ended while the disk was full could not have
    // their outcome recorded; their holds were given back with the failed
    // commit, so they were pending and due, and were sent again once there
    // was space — a duplicate, never a loss; the receiver has them already.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = send(addr, "GET", "/api/v1/deliveries?limit=500", &token, None).unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        let body = r.json();
        let data = body["data"].as_array().unwrap();
        assert_eq!(data.len(), accepted.len(), "{body}");
        let open: Vec<String> = data
            .iter()
            .filter(|d| d["status"] != "succeeded")
            .map(|d| format!("{} {}", d["id"], d["status"]))
            .collect();
        if open.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "30 s after space returned, deliveries not succeeded: {open:?} ({in_flight} were in flight when the disk filled)\n--- server log ---\n{}",
            server.log()
        );
        thread::sleep(Duration::from_millis(20));
    }
    // Inside the server's mount namespace: SQLite resolves the symbolic
    // link that /proc/<pid>/root is, which leads out of it.
    let out = Command::new("nsenter")
        .arg(format!("--target={}", server.child.id()))
        .args(["--mount", util::BIN, "check", "--db"])
        .arg(server.dir.join("h.db"))
        .output()
        .expect("nsenter hookbox check");
    assert!(
        out.status.success(),
        "check on the live database after the disk was full: {}",
        show(&out)
    );
    assert!(!server.log().contains("answering 500"), "{}", server.log());
    println!(
        "disk full: filler {filled} bytes, {} publishes, {} accepted, {refusals} refused with 503 ({}), resumed {:?} after space returned, {in_flight} attempts in flight when it filled, {} requests at the receiver",
        n,
        accepted.len(),
        error["message"],
        resumed_in,
        rx.count()
    );
}

// ---------------------------------------------------------------------------
// 4. Backups and checks under load

#[test]
fn concurrent_backups_and_checks_under_publish_and_delivery_load_are_clean_and_complete() {
    const ROUNDS: usize = 8;
    const BACKUPS: usize = 3;
    let secret = secret();
    let rx = Receiver::start(|_, _| Answer::ok());
    let server = serve(&[]);
    let every = create_webhook(
        &server,
        json!({"url": rx.url("/backup/all"), "events": ["*"], "secret": secret}),
    );
    let items = create_webhook(
        &server,
        json!({"url": rx.url("/backup/items"), "events": ["item.*"], "secret": secret}),
    );
    let publisher = Publisher::new(server.addr);
    let token = server.token.clone();
    let backups = tempfile::tempdir().expect("temp dir");
    let began = Instant::now();
    let mut took = Vec::new();
    thread::scope(|s| {
        s.spawn(|| publisher.run(&token));
        let _stop = SetOnDrop(&publisher.stop);
        for round in 0..ROUNDS {
            // Publishing, so each backup starts under load.
            let at = publisher.accepted.lock().unwrap().len();
            eventually(
                &server,
                Duration::from_secs(20),
                || format!("publishing to go on in round {round}"),
                || (publisher.accepted.lock().unwrap().len() >= at + 20).then_some(()),
            );
            let before = publisher.accepted();
            let started = Instant::now();
            let results: Vec<(PathBuf, Output)> = thread::scope(|b| {
                let copies: Vec<_> = (0..BACKUPS)
                    .map(|i| {
                        let dest = backups.path().join(format!("r{round}-{i}.db"));
                        let db = server.db();
                        b.spawn(move || {
                            let out = Command::new(util::BIN)
                                .arg("backup")
                                .arg(&dest)
                                .arg("--db")
                                .arg(&db)
                                .output()
                                .expect("hookbox backup");
                            (dest, out)
                        })
                    })
                    .collect();
                let live = b.spawn(|| hookbox(&["check"], &server.db()));
                let live = live.join().unwrap();
                assert!(
                    live.status.success(),
                    "check on the live database during backups, round {round}: {}",
                    show(&live)
                );
                copies.into_iter().map(|c| c.join().unwrap()).collect()
            });
            took.push(started.elapsed());
            for (dest, out) in results {
                assert!(
                    out.status.success(),
                    "backup {}: {}",
                    dest.display(),
                    show(&out)
                );
                assert_check_passes(&dest, &format!("on backup {}", dest.display()));
                let conn =
                    Connection::open_with_flags(&dest, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
                let mut stmt = conn
                    .prepare("SELECT webhook_id FROM deliveries WHERE event_id = ?1")
                    .unwrap();
                for id in &before {
                    let to: BTreeSet<String> = stmt
                        .query_map([id], |r| r.get(0))
                        .unwrap()
                        .collect::<Result<_, _>>()
                        .unwrap();
                    let mut want = BTreeSet::from([every.clone()]);
                    if event_type_of(&conn, id).starts_with("item.") {
                        want.insert(items.clone());
                    }
                    assert!(
                        to == want,
                        "backup {} (round {round}) lacks event {id} or its deliveries ({to:?}), accepted before the backup started",
                        dest.display()
                    );
                }
            }
        }
        publisher.stop.store(true, Ordering::Relaxed);
    });
    let accepted = publisher.accepted();
    let wrong = publisher.wrong.lock().unwrap().clone();
    assert!(
        wrong.is_empty(),
        "publishes answered {wrong:?}\n{}",
        server.log()
    );
    // Delivery went on through all of it.
    wait_all_arrive(&server, &rx, &accepted, Duration::from_secs(60));
    assert_all_signed(&rx, &secret);
    assert_check_passes(&server.db(), "on the live database at the end");
    println!(
        "backups under load: {ROUNDS} rounds of {BACKUPS} concurrent backups + a live check, each round took {took:?}; {} events accepted, {} deliveries, {:.1}s",
        accepted.len(),
        rx.count(),
        began.elapsed().as_secs_f64()
    );
}

/// The type of event `id` in an open database.
fn event_type_of(conn: &Connection, id: &str) -> String {
    conn.query_row("SELECT event_type FROM events WHERE id = ?1", [id], |r| {
        r.get(0)
    })
    .unwrap_or_else(|e| panic!("event {id} is not in the backup: {e}"))
}
