//! The publish benchmark: `cargo bench --bench publish -- [--connections N]
//! [--duration SECS] [--webhooks W] [--runs R]`.
//!
//! Starts the real release binary on a fresh database in a temp dir,
//! subscribes W webhooks to every event, then drives `POST /api/v1/events`
//! from N threads, each over one keep-alive connection, for the duration.
//! Every 202 it counts is durable (fsynced) by the server's contract. Prints
//! one JSON line per run — events/s, latency percentiles, errors, start-up
//! time and the server's resident memory — and, with `--runs` above 1, a
//! last line with the median of each figure over the runs.
//!
//! The load generator runs on the same machine as the server, so both share
//! its cores; the figures are for the whole system, not the server alone.

// A benchmark tool: a bad argument or a failed set-up should stop it loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

struct Options {
    connections: usize,
    duration: Duration,
    webhooks: usize,
    runs: usize,
}

fn options() -> Options {
    let mut o = Options {
        connections: 64,
        duration: Duration::from_secs(10),
        webhooks: 1,
        runs: 1,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = || args.get(i + 1).and_then(|v| v.parse::<u64>().ok());
        match args[i].as_str() {
            "--connections" => o.connections = value().expect("--connections N") as usize,
            "--duration" => o.duration = Duration::from_secs(value().expect("--duration SECS")),
            "--webhooks" => o.webhooks = value().expect("--webhooks W") as usize,
            "--runs" => o.runs = value().expect("--runs R").max(1) as usize,
            // `cargo bench` adds --bench; anything else is a mistake.
            "--bench" => {
                i += 1;
                continue;
            }
            other => panic!(
                "unknown argument {other}; use --connections, --duration, --webhooks, --runs"
            ),
        }
        i += 2;
    }
    o
}

/// One HTTP/1.1 exchange on a keep-alive connection: (status, body).
fn exchange(
    stream: &mut TcpStream,
    reader: &mut BufReader<TcpStream>,
    request: &[u8],
) -> std::io::Result<(u16, Vec<u8>)> {
    stream.write_all(request)?;
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut length = 0;
    loop {
        line.clear();
        reader.read_line(&mut line)?;
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
    reader.read_exact(&mut body)?;
    Ok((status, body))
}

fn request(addr: SocketAddr, token: &str, method: &str, path: &str, body: &str) -> Vec<u8> {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn rss_mb(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[index]) / 1000.0
}

/// The figures of one run, in the order they are printed.
const FIGURES: [&str; 10] = [
    "events_per_s",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "max_ms",
    "errors",
    "events",
    "start_to_listen_ms",
    "idle_rss_mb",
    "peak_rss_mb",
];

fn main() {
    let o = options();
    let mut runs: Vec<[f64; 10]> = Vec::new();
    for _ in 0..o.runs {
        let figures = run(&o);
        let fields: Vec<String> = FIGURES
            .iter()
            .zip(figures)
            .map(|(name, value)| format!("\"{name}\":{}", format_figure(value)))
            .collect();
        println!(
            "{{\"bench\":\"publish\",\"connections\":{},\"webhooks\":{},\"duration_s\":{},{}}}",
            o.connections,
            o.webhooks,
            o.duration.as_secs(),
            fields.join(",")
        );
        runs.push(figures);
    }
    if runs.len() > 1 {
        let fields: Vec<String> = FIGURES
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let mut column: Vec<f64> = runs.iter().map(|r| r[i]).collect();
                column.sort_by(f64::total_cmp);
                format!("\"{name}\":{}", format_figure(column[column.len() / 2]))
            })
            .collect();
        println!(
            "{{\"bench\":\"publish\",\"median_of_runs\":{},\"connections\":{},\"webhooks\":{},\"duration_s\":{},{}}}",
            runs.len(),
            o.connections,
            o.webhooks,
            o.duration.as_secs(),
            fields.join(",")
        );
    }
}

fn format_figure(value: f64) -> String {
    if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

fn run(o: &Options) -> [f64; 10] {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("bench.db");
    let mut child = Command::new(env!("CARGO_BIN_EXE_hookbox"))
        .arg("serve")
        .arg("--db")
        .arg(&db)
        .args(["--listen", "127.0.0.1:0"])
        .args(["--http-threads", &o.connections.max(64).to_string()])
        .env("RUST_LOG", "warn,hookbox::serve=info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start hookbox");
    let started = Instant::now();
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
    let token = std::fs::read_to_string(dir.path().join("bench.db.admin-token"))
        .expect("admin token")
        .trim()
        .to_owned();

    let mut admin = TcpStream::connect(addr).expect("connect");
    let mut admin_reader = BufReader::new(admin.try_clone().expect("clone"));
    for _ in 0..o.webhooks {
        let body = r#"{"url":"https://example.com/hook","events":["*"]}"#;
        let (status, _) = exchange(
            &mut admin,
            &mut admin_reader,
            &request(addr, &token, "POST", "/api/v1/webhooks", body),
        )
        .expect("create webhook");
        assert_eq!(status, 201, "creating a webhook");
    }
    let idle_rss = rss_mb(child.id(), "VmRSS:");

    let publish = Arc::new(request(
        addr,
        &token,
        "POST",
        "/api/v1/events",
        r#"{"event":"item.sold","data":{"item_id":"9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d","sale_price":"10.00","sale_date":"2025-01-21T22:20:56Z"}}"#,
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let begin = Instant::now();
    let workers: Vec<_> = (0..o.connections)
        .map(|_| {
            let publish = publish.clone();
            let stop = stop.clone();
            thread::spawn(move || {
                let mut latencies = Vec::with_capacity(100_000);
                let mut errors = 0u64;
                let mut stream = TcpStream::connect(addr).expect("connect");
                stream.set_nodelay(true).expect("nodelay");
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                while !stop.load(Ordering::Relaxed) {
                    let sent = Instant::now();
                    match exchange(&mut stream, &mut reader, &publish) {
                        Ok((202, _)) => latencies.push(sent.elapsed().as_micros() as u32),
                        Ok(_) => errors += 1,
                        Err(_) => {
                            errors += 1;
                            stream = TcpStream::connect(addr).expect("reconnect");
                            reader = BufReader::new(stream.try_clone().expect("clone"));
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
        peak_rss = peak_rss.max(rss_mb(child.id(), "VmRSS:"));
    }
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    let mut errors = 0;
    for w in workers {
        let (l, e) = w.join().expect("load thread");
        latencies.extend(l);
        errors += e;
    }
    let elapsed = begin.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();

    [
        (latencies.len() as f64 / elapsed).round(),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.90),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0),
        errors as f64,
        latencies.len() as f64,
        (start_to_listen.as_secs_f64() * 10_000.0).round() / 10.0,
        (idle_rss * 10.0).round() / 10.0,
        (peak_rss * 10.0).round() / 10.0,
    ]
}
