//! The benchmark command: `cargo bench --bench publish -- [--mode MODE] ...`.
//!
//! Every mode starts the real release binary on a fresh database in a temp
//! dir and prints one JSON line per run; with `--runs` above 1 a last line
//! gives the median of each figure over the runs.
//!
//! - `--mode publish` (default) `[--connections N] [--duration SECS]
//!   [--webhooks W]`: W webhooks subscribed to every event, delivery paused
//!   (`--pause-delivery`), N threads each driving `POST /api/v1/events`
//!   over one keep-alive connection. Every 202 counted is durable (fsynced).
//!   Figures: events/s, latency percentiles, errors, start-up time, RSS.
//! - `--mode e2e` `[--rate R] [--duration SECS]`: one webhook pointing at a
//!   local receiver, events published at a fixed R per second; figures are
//!   publish-to-arrival latency percentiles measured at the receiver.
//! - `--mode drain` `[--backlog B] [--measure M]`: B pending deliveries are
//!   put in the database with delivery paused (the first through the API,
//!   the rest copied in SQL), then the server restarts delivering to a local
//!   receiver; the figure is the rate at which the first M arrive. Running
//!   it with B = 20,000 and with B = 1,000,000 shows whether scheduling cost
//!   grows with the backlog. `--webhook-concurrency C` is passed to the
//!   server (default 4, the server's own default).
//!
//! The load generator and the receiver run on the same machine as the
//! server and share its cores; the figures are for the whole system.

// A benchmark tool: a bad argument or a failed set-up should stop it loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Publish,
    EndToEnd,
    Drain,
}

struct Options {
    mode: Mode,
    connections: usize,
    duration: Duration,
    webhooks: usize,
    runs: usize,
    rate: u64,
    backlog: usize,
    measure: usize,
    concurrency: u32,
}

fn options() -> Options {
    let mut o = Options {
        mode: Mode::Publish,
        connections: 64,
        duration: Duration::from_secs(10),
        webhooks: 1,
        runs: 1,
        rate: 1000,
        backlog: 20_000,
        measure: 20_000,
        concurrency: 4,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let text = args.get(i + 1).cloned().unwrap_or_default();
        let value = || text.parse::<u64>().expect("a whole number after the flag");
        match args[i].as_str() {
            "--mode" => {
                o.mode = match text.as_str() {
                    "publish" => Mode::Publish,
                    "e2e" => Mode::EndToEnd,
                    "drain" => Mode::Drain,
                    other => panic!("unknown mode {other}; use publish, e2e or drain"),
                }
            }
            "--connections" => o.connections = value() as usize,
            "--duration" => o.duration = Duration::from_secs(value()),
            "--webhooks" => o.webhooks = value() as usize,
            "--runs" => o.runs = value().max(1) as usize,
            "--rate" => o.rate = value().max(1),
            "--backlog" => o.backlog = value().max(1) as usize,
            "--measure" => o.measure = value().max(1) as usize,
            "--webhook-concurrency" => o.concurrency = value().max(1) as u32,
            // `cargo bench` adds --bench; anything else is a mistake.
            "--bench" => {
                i += 1;
                continue;
            }
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    o.measure = o.measure.min(o.backlog);
    o
}

fn main() {
    let o = options();
    let mut runs: Vec<Vec<(&'static str, f64)>> = Vec::new();
    let (name, settings) = match o.mode {
        Mode::Publish => (
            "publish",
            format!(
                "\"connections\":{},\"webhooks\":{},\"duration_s\":{}",
                o.connections,
                o.webhooks,
                o.duration.as_secs()
            ),
        ),
        Mode::EndToEnd => (
            "e2e",
            format!(
                "\"rate\":{},\"duration_s\":{}",
                o.rate,
                o.duration.as_secs()
            ),
        ),
        Mode::Drain => (
            "drain",
            format!(
                "\"backlog\":{},\"measured\":{},\"webhook_concurrency\":{}",
                o.backlog, o.measure, o.concurrency
            ),
        ),
    };
    for _ in 0..o.runs {
        let figures = match o.mode {
            Mode::Publish => publish(&o),
            Mode::EndToEnd => end_to_end(&o),
            Mode::Drain => drain(&o),
        };
        println!("{{\"bench\":\"{name}\",{settings},{}}}", render(&figures));
        runs.push(figures);
    }
    if runs.len() > 1 {
        let medians: Vec<(&'static str, f64)> = runs[0]
            .iter()
            .enumerate()
            .map(|(i, (figure, _))| {
                let mut column: Vec<f64> = runs.iter().map(|r| r[i].1).collect();
                column.sort_by(f64::total_cmp);
                (*figure, column[column.len() / 2])
            })
            .collect();
        println!(
            "{{\"bench\":\"{name}\",\"median_of_runs\":{},{settings},{}}}",
            runs.len(),
            render(&medians)
        );
    }
}

fn render(figures: &[(&'static str, f64)]) -> String {
    figures
        .iter()
        .map(|(name, value)| {
            if value.fract() == 0.0 {
                format!("\"{name}\":{value:.0}")
            } else {
                format!("\"{name}\":{value:.2}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A running `hookbox serve`.
struct Hookbox {
    child: Child,
    addr: SocketAddr,
    token: String,
    start_to_listen: Duration,
}

impl Hookbox {
    fn start(db: &Path, args: &[&str]) -> Hookbox {
        let started = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_hookbox"))
            .arg("serve")
            .arg("--db")
            .arg(db)
            .args(["--listen", "127.0.0.1:0"])
            // The load generator is one client with one token: the per-token
            // limit (1,000/s by default) would measure itself, not hookbox.
            .args(["--api-rate-limit", "0"])
            .args(args)
            .env("RUST_LOG", "warn,hookbox::serve=info")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start hookbox");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let addr: SocketAddr = loop {
            let line = lines.next().expect("server exited").expect("server log");
            if let Some(rest) = line.split("listening on http://").nth(1) {
                break rest.trim().parse().expect("address");
            }
        };
        let start_to_listen = started.elapsed();
        // Keep draining the log so the server never blocks on a full pipe.
        thread::spawn(move || for _ in lines {});
        let mut token_file = db.as_os_str().to_owned();
        token_file.push(".admin-token");
        let token = std::fs::read_to_string(PathBuf::from(token_file))
            .expect("admin token")
            .trim()
            .to_owned();
        Hookbox {
            child,
            addr,
            token,
            start_to_listen,
        }
    }

    fn rss_mb(&self) -> f64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            })
            .map_or(0.0, |kb| kb / 1024.0)
    }

    fn client(&self) -> Client {
        Client::connect(self.addr, &self.token)
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// A keep-alive HTTP/1.1 client.
struct Client {
    addr: SocketAddr,
    token: String,
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Client {
    fn connect(addr: SocketAddr, token: &str) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let reader = BufReader::new(stream.try_clone().expect("clone"));
        Client {
            addr,
            token: token.to_owned(),
            stream,
            reader,
        }
    }

    fn request(&self, method: &str, path: &str, body: &str) -> Vec<u8> {
        format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            self.token,
            body.len()
        )
        .into_bytes()
    }

    /// Sends raw request bytes and reads the response: (status, body).
    fn exchange(&mut self, request: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
        self.stream.write_all(request)?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut length = 0;
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            if line.trim_end().is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body)?;
        Ok((status, body))
    }

    fn reconnect(&mut self) {
        *self = Client::connect(self.addr, &self.token);
    }

    fn create_webhook(&mut self, url: &str) {
        let body = format!(r#"{{"url":"{url}","events":["*"]}}"#);
        let request = self.request("POST", "/api/v1/webhooks", &body);
        let (status, _) = self.exchange(&request).expect("create webhook");
        assert_eq!(status, 201, "creating a webhook");
    }
}

const EVENT: &str = r#"{"event":"item.sold","data":{"item_id":"9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d","sale_price":"10.00","sale_date":"2025-01-21T22:20:56Z"}}"#;

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    (f64::from(sorted[index]) / 10.0).round() / 100.0
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn publish(o: &Options) -> Vec<(&'static str, f64)> {
    let dir = tempfile::tempdir().expect("temp dir");
    let threads = o.connections.max(64).to_string();
    let server = Hookbox::start(
        &dir.path().join("bench.db"),
        &["--http-threads", &threads, "--pause-delivery"],
    );
    let mut admin = server.client();
    for _ in 0..o.webhooks {
        admin.create_webhook("https://example.com/hook");
    }
    let idle_rss = server.rss_mb();

    let stop = Arc::new(AtomicBool::new(false));
    let begin = Instant::now();
    let load: Vec<_> = (0..o.connections)
        .map(|_| {
            let stop = stop.clone();
            let mut client = server.client();
            thread::spawn(move || {
                let publish = client.request("POST", "/api/v1/events", EVENT);
                let mut latencies = Vec::with_capacity(100_000);
                let mut errors = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let sent = Instant::now();
                    match client.exchange(&publish) {
                        Ok((202, _)) => latencies.push(sent.elapsed().as_micros() as u32),
                        Ok(_) => errors += 1,
                        Err(_) => {
                            errors += 1;
                            client.reconnect();
                        }
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut peak_rss: f64 = 0.0;
    while begin.elapsed() < o.duration {
        thread::sleep(Duration::from_millis(200));
        peak_rss = peak_rss.max(server.rss_mb());
    }
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    let mut errors = 0;
    for thread in load {
        let (l, e) = thread.join().expect("load thread");
        latencies.extend(l);
        errors += e;
    }
    let elapsed = begin.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let start_to_listen = server.start_to_listen;
    server.stop();
    vec![
        ("events_per_s", (latencies.len() as f64 / elapsed).round()),
        ("p50_ms", percentile(&latencies, 0.50)),
        ("p90_ms", percentile(&latencies, 0.90)),
        ("p99_ms", percentile(&latencies, 0.99)),
        ("max_ms", percentile(&latencies, 1.0)),
        ("errors", errors as f64),
        ("events", latencies.len() as f64),
        (
            "start_to_listen_ms",
            round1(start_to_listen.as_secs_f64() * 1000.0),
        ),
        ("idle_rss_mb", round1(idle_rss)),
        ("peak_rss_mb", round1(peak_rss)),
    ]
}

/// A local receiver answering 200 at once, noting when each `webhook-id`
/// first arrived and how many requests came.
struct Receiver {
    url: String,
    arrivals: Arc<Mutex<HashMap<String, Instant>>>,
    count: Arc<AtomicUsize>,
    server: Arc<tiny_http::Server>,
}

impl Receiver {
    fn start(threads: usize) -> Receiver {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("receiver"));
        let port = server.server_addr().to_ip().expect("ip").port();
        let arrivals = Arc::new(Mutex::new(HashMap::new()));
        let count = Arc::new(AtomicUsize::new(0));
        for _ in 0..threads {
            let (server, arrivals, count) = (server.clone(), arrivals.clone(), count.clone());
            thread::spawn(move || {
                while let Ok(mut request) = server.recv() {
                    let now = Instant::now();
                    let id = request
                        .headers()
                        .iter()
                        .find(|h| h.field.equiv("webhook-id"))
                        .map(|h| h.value.to_string())
                        .unwrap_or_default();
                    let mut body = Vec::new();
                    let _ = request.as_reader().read_to_end(&mut body);
                    arrivals.lock().unwrap().entry(id).or_insert(now);
                    count.fetch_add(1, Ordering::Relaxed);
                    let _ = request.respond(tiny_http::Response::empty(200));
                }
            });
        }
        Receiver {
            url: format!("http://127.0.0.1:{port}/hook"),
            arrivals,
            count,
            server,
        }
    }

    fn wait_for_count(&self, n: usize, timeout: Duration) -> Option<Instant> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.count.load(Ordering::Relaxed) >= n {
                return Some(Instant::now());
            }
            thread::sleep(Duration::from_millis(2));
        }
        None
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        for _ in 0..64 {
            self.server.unblock();
        }
    }
}

fn end_to_end(o: &Options) -> Vec<(&'static str, f64)> {
    let dir = tempfile::tempdir().expect("temp dir");
    let receiver = Receiver::start(8);
    let server = Hookbox::start(
        &dir.path().join("bench.db"),
        &["--allow-targets", "127.0.0.0/8"],
    );
    server.client().create_webhook(&receiver.url);

    // Paced publishers: each sends at rate/threads per second on its own
    // schedule, so a slow answer does not shift later sends.
    let threads = 8u64;
    let interval = Duration::from_secs_f64(threads as f64 / o.rate as f64);
    let begin = Instant::now();
    let publishers: Vec<_> = (0..threads)
        .map(|t| {
            let mut client = server.client();
            let duration = o.duration;
            thread::spawn(move || {
                let request = client.request("POST", "/api/v1/events", EVENT);
                let mut sent: Vec<(String, Instant)> = Vec::new();
                let mut errors = 0u64;
                let mut next = begin + interval.mul_f64(t as f64 / threads as f64);
                while next < begin + duration {
                    if let Some(wait) = next.checked_duration_since(Instant::now()) {
                        thread::sleep(wait);
                    }
                    let at = Instant::now();
                    match client.exchange(&request) {
                        Ok((202, body)) => {
                            let text = String::from_utf8_lossy(&body);
                            let id = text
                                .split("\"id\":\"")
                                .nth(1)
                                .and_then(|r| r.split('"').next());
                            sent.push((id.unwrap_or_default().to_owned(), at));
                        }
                        _ => errors += 1,
                    }
                    next += interval;
                }
                (sent, errors)
            })
        })
        .collect();
    let mut sent = Vec::new();
    let mut errors = 0;
    for p in publishers {
        let (s, e) = p.join().expect("publisher");
        sent.extend(s);
        errors += e;
    }
    let arrived_all = receiver
        .wait_for_count(sent.len(), Duration::from_secs(30))
        .is_some();
    let arrivals = receiver.arrivals.lock().unwrap().clone();
    let mut latencies: Vec<u32> = sent
        .iter()
        .filter_map(|(id, at)| {
            arrivals
                .get(id)
                .map(|a| a.duration_since(*at).as_micros() as u32)
        })
        .collect();
    latencies.sort_unstable();
    let missing = sent.len() - latencies.len();
    server.stop();
    vec![
        ("events", sent.len() as f64),
        ("p50_ms", percentile(&latencies, 0.50)),
        ("p90_ms", percentile(&latencies, 0.90)),
        ("p99_ms", percentile(&latencies, 0.99)),
        ("max_ms", percentile(&latencies, 1.0)),
        ("errors", errors as f64),
        ("missing", missing as f64),
        ("all_arrived", f64::from(u8::from(arrived_all))),
    ]
}

fn drain(o: &Options) -> Vec<(&'static str, f64)> {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("bench.db");
    let receiver = Receiver::start(8);
    // Fill: one webhook, one event through the API, then the rest of the
    // backlog as more deliveries of that event, written in SQL.
    let server = Hookbox::start(&db, &["--pause-delivery", "--allow-targets", "127.0.0.0/8"]);
    let mut client = server.client();
    client.create_webhook(&receiver.url);
    let request = client.request("POST", "/api/v1/events", EVENT);
    assert_eq!(client.exchange(&request).expect("publish").0, 202);
    server.stop();
    {
        let mut conn = rusqlite::Connection::open(&db).expect("open db");
        let tx = conn.transaction().expect("transaction");
        {
            let (event_id, webhook_id, created): (String, String, i64) = tx
                .query_row(
                    "SELECT event_id, webhook_id, created_at FROM deliveries",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .expect("the first delivery");
            let mut insert = tx
                .prepare(
                    "INSERT INTO deliveries (id, event_id, webhook_id, status, next_attempt_at, created_at, updated_at) \
                     VALUES (?1, ?2, ?3, 'pending', ?4, ?4, ?4)",
                )
                .expect("prepare");
            for i in 1..o.backlog {
                // Ids sort after the real one's time prefix and stay unique.
                let id = format!("dlv_{:026}", i);
                insert
                    .execute(rusqlite::params![id, event_id, webhook_id, created])
                    .expect("insert delivery");
            }
        }
        tx.commit().expect("commit");
    }
    let began = Instant::now();
    let concurrency = o.concurrency.to_string();
    let server = Hookbox::start(
        &db,
        &[
            "--allow-targets",
            "127.0.0.0/8",
            "--webhook-concurrency",
            &concurrency,
        ],
    );
    let rss_start = server.rss_mb();
    let done = receiver.wait_for_count(o.measure, Duration::from_secs(600));
    let rss_end = server.rss_mb();
    let elapsed = done.map_or(f64::NAN, |at| at.duration_since(began).as_secs_f64());
    server.stop();
    vec![
        ("deliveries_per_s", (o.measure as f64 / elapsed).round()),
        ("seconds", (elapsed * 100.0).round() / 100.0),
        ("rss_mb", round1(rss_start.max(rss_end))),
    ]
}
