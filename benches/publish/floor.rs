//! The floor: what publishing and delivering cost on this machine with none
//! of hookbox's work in between. `--mode floor` runs the realistic load
//! against this program instead of hookbox (the bench binary started again
//! with `HOOKBOX_BENCH_FLOOR=LEVEL`), at three levels:
//!
//! - `bare`: the kernel's part alone. A thread per connection reads each
//!   request with `std::net` (headers to the blank line, then
//!   `Content-Length` bytes), writes a fixed 202, and hands the body over a
//!   channel to as many workers as hookbox lets one webhook have in flight
//!   (`--webhook-concurrency`, 4 by default), each of which writes it to the receiver over its
//!   own keep-alive connection and reads the answer. No HTTP library.
//! - `http`: the same path through hookbox's own HTTP crates: the vendored
//!   tiny_http answering on its connection threads, ureq delivering.
//! - `durable`: `http`, plus a writer thread that appends each batch of
//!   events to a file and `fdatasync`s it before their 202s (group commit,
//!   as hookbox's writer does), and appends every attempt's record too.
//!
//! Nothing is parsed, validated, signed, scheduled or stored in SQLite: the
//! difference between a level and hookbox's realistic figure is hookbox's
//! own work; the level itself is the cost of the I/O any design on these
//! crates (or, for `bare`, on blocking sockets at all) must pay.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread;
use std::time::Duration;

/// What a floor server does between the publish and the delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Level {
    Bare,
    Http,
    Durable,
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Level::Bare => "bare",
            Level::Http => "http",
            Level::Durable => "durable",
        }
    }

    pub fn parse(text: &str) -> Option<Level> {
        [Level::Bare, Level::Http, Level::Durable]
            .into_iter()
            .find(|l| l.name() == text)
    }
}

/// The environment variable that makes the bench binary a floor server.
pub const ENV: &str = "HOOKBOX_BENCH_FLOOR";

/// One event on its way to the receiver.
struct Job {
    id: u64,
    body: Vec<u8>,
}

/// Where the webhook points, once `POST /api/v1/webhooks` has said.
static TARGET: OnceLock<String> = OnceLock::new();
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Runs a floor server if `HOOKBOX_BENCH_FLOOR` says so (never returns
/// then); the arguments are those `Hookbox::start` gives `hookbox serve`.
pub fn serve_if_asked() {
    let Some(level) = std::env::var(ENV).ok().and_then(|l| Level::parse(&l)) else {
        return;
    };
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        let at = args.iter().position(|a| a == flag).expect(flag);
        args[at + 1].clone()
    };
    let (db, listen) = (PathBuf::from(value("--db")), value("--listen"));
    // As many workers as hookbox lets one webhook have in flight.
    let workers: usize = value("--webhook-concurrency").parse().expect("a count");
    let mut token = db.clone().into_os_string();
    token.push(".admin-token");
    std::fs::write(PathBuf::from(token), "floor\n").expect("token file");
    let (jobs, queued) = crossbeam_channel::unbounded::<Job>();
    let log = (level == Level::Durable).then(|| Writer::start(&db, jobs.clone()));
    for _ in 0..workers {
        let queued = queued.clone();
        let log = log.clone();
        thread::spawn(move || match level {
            Level::Bare => bare_worker(&queued),
            Level::Http | Level::Durable => http_worker(&queued, log.as_deref()),
        });
    }
    let listener = TcpListener::bind(&listen).expect("bind");
    eprintln!("listening on http://{listen}");
    if level == Level::Bare {
        for stream in listener.incoming().flatten() {
            let jobs = jobs.clone();
            thread::spawn(move || bare_connection(stream, &jobs));
        }
        return;
    }
    let server = tiny_http::Server::from_listener(listener, None).expect("tiny_http");
    server.answer_on_connection_threads(Box::new(move |request| {
        answer(request, &jobs, log.as_deref())
    }));
    loop {
        thread::park();
    }
}

/// Answers one request through tiny_http.
fn answer(
    mut request: tiny_http::Request,
    jobs: &crossbeam_channel::Sender<Job>,
    log: Option<&Writer>,
) {
    let mut body = Vec::new();
    let _ = request.as_reader().read_to_end(&mut body);
    let url = request.url().to_owned();
    if url == "/api/v1/webhooks" {
        let _ = TARGET.set(target_of(&body));
        let _ = request.respond(tiny_http::Response::empty(201));
    } else if url == "/api/v1/events" {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let job = Job { id, body };
        let answer = format!("{{\"id\":\"evt_{id}\"}}");
        match log {
            // The writer queues the job once the event is on disk.
            Some(log) => log.append_and_wait(job),
            None => {
                let _ = jobs.send(job);
            }
        }
        let _ = request.respond(tiny_http::Response::from_string(answer).with_status_code(202));
    } else {
        let _ = request.respond(tiny_http::Response::empty(200));
    }
}

/// The `url` of a `POST /api/v1/webhooks` body.
fn target_of(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let rest = text.split("\"url\":\"").nth(1).expect("url");
    rest.split('"').next().expect("url").to_owned()
}

/// The receiver's address, for a raw socket (`http://127.0.0.1:P/hook`).
fn target_addr() -> String {
    let url = TARGET.get().expect("a webhook");
    url.trim_start_matches("http://")
        .split('/')
        .next()
        .expect("host")
        .to_owned()
}

/// IP literals straight through, as hookbox's `PolicyResolver` does:
/// ureq's own resolver starts a thread per lookup (to bound
/// `getaddrinfo`), and a lookup comes before every request, pooled
/// connection or not.
#[derive(Debug, Default)]
struct Literals(ureq::unversioned::resolver::DefaultResolver);

impl ureq::unversioned::resolver::Resolver for Literals {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: ureq::unversioned::transport::NextTimeout,
    ) -> Result<ureq::unversioned::resolver::ResolvedSocketAddrs, ureq::Error> {
        let ip = uri.host().and_then(|h| h.parse::<std::net::IpAddr>().ok());
        match (ip, uri.port_u16()) {
            (Some(ip), Some(port)) => {
                let mut addrs = self.empty();
                addrs.push(std::net::SocketAddr::new(ip, port));
                Ok(addrs)
            }
            _ => self.0.resolve(uri, config, timeout),
        }
    }
}

fn http_worker(queued: &crossbeam_channel::Receiver<Job>, log: Option<&Writer>) {
    // hookbox's agent (`delivery::worker::agent`) but for the target policy.
    let config = ureq::Agent::config_builder()
        .proxy(None)
        .max_redirects(0)
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .timeout_connect(Some(Duration::from_secs(10)))
        .max_idle_connections(256)
        .max_idle_connections_per_host(64)
        .build();
    let agent = ureq::Agent::with_parts(
        config,
        ureq::unversioned::transport::DefaultConnector::default(),
        Literals::default(),
    );
    while let Ok(job) = queued.recv() {
        let url = TARGET.get().expect("a webhook");
        let id = format!("evt_{}", job.id);
        if let Ok(mut response) = agent
            .post(url)
            .header("webhook-id", &id)
            .header("content-type", "application/json")
            .send(&job.body[..])
        {
            let _ = response.body_mut().read_to_vec();
            if let Some(log) = log {
                log.record(format!("{id} {}\n", response.status().as_u16()).into_bytes());
            }
        }
    }
}

/// Reads one HTTP/1.1 message's head and body off `reader`: the body, or
/// `None` at the end of the connection.
pub fn read_message(reader: &mut BufReader<TcpStream>, line: &mut String) -> Option<Vec<u8>> {
    let mut length = 0;
    loop {
        line.clear();
        if reader.read_line(line).ok()? == 0 {
            return None;
        }
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
    reader.read_exact(&mut body).ok()?;
    Some(body)
}

fn bare_connection(stream: TcpStream, jobs: &crossbeam_channel::Sender<Job>) {
    let _ = stream.set_nodelay(true);
    let mut writer = stream.try_clone().expect("clone");
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        // The request line, then the rest of the message.
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split(' ').nth(1).unwrap_or("").to_owned();
        let Some(body) = read_message(&mut reader, &mut line) else {
            return;
        };
        let (status, answer) = match path.as_str() {
            "/api/v1/webhooks" => {
                let _ = TARGET.set(target_of(&body));
                ("201 Created", String::new())
            }
            "/api/v1/events" => {
                let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
                let _ = jobs.send(Job { id, body });
                ("202 Accepted", format!("{{\"id\":\"evt_{id}\"}}"))
            }
            _ => ("200 OK", String::new()),
        };
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

fn bare_worker(queued: &crossbeam_channel::Receiver<Job>) {
    let mut connection: Option<(TcpStream, BufReader<TcpStream>)> = None;
    let mut line = String::new();
    // The bench creates the webhook before it publishes: a job means a target.
    let mut addr = None;
    while let Ok(job) = queued.recv() {
        let addr: &str = addr.get_or_insert_with(target_addr);
        let (writer, reader) = connection.get_or_insert_with(|| {
            let stream = TcpStream::connect(addr).expect("receiver");
            let _ = stream.set_nodelay(true);
            let reader = BufReader::new(stream.try_clone().expect("clone"));
            (stream, reader)
        });
        let mut request = format!(
            "POST /hook HTTP/1.1\r\nHost: {addr}\r\nwebhook-id: evt_{}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            job.id,
            job.body.len()
        )
        .into_bytes();
        request.extend_from_slice(&job.body);
        let sent = writer.write_all(&request).is_ok();
        // The status line, then the head and the (empty) body.
        line.clear();
        let answered = sent
            && reader.read_line(&mut line).unwrap_or(0) > 0
            && read_message(reader, &mut line).is_some();
        if !answered {
            connection = None;
        }
    }
}

/// A file appended to in group commits: every event of a batch is on disk
/// (`fdatasync`) before any of them is answered.
struct Writer {
    queue: Mutex<Vec<Entry>>,
    wake: Condvar,
}

enum Entry {
    Event(Job, Arc<Done>),
    Record(Vec<u8>),
}

/// The slot a publishing thread sleeps on until its batch is synced.
#[derive(Default)]
struct Done {
    synced: Mutex<bool>,
    wake: Condvar,
}

impl Writer {
    /// Appends to the file at `path` (the bench's database path, in its
    /// temp dir).
    fn start(path: &Path, jobs: crossbeam_channel::Sender<Job>) -> Arc<Writer> {
        let writer = Arc::new(Writer {
            queue: Mutex::new(Vec::new()),
            wake: Condvar::new(),
        });
        let mut file = File::create(path).expect("floor log");
        let shared = writer.clone();
        thread::spawn(move || {
            loop {
                let batch = {
                    let mut queue = shared.queue.lock().unwrap();
                    while queue.is_empty() {
                        queue = shared.wake.wait(queue).unwrap();
                    }
                    std::mem::take(&mut *queue)
                };
                let mut bytes = Vec::new();
                for entry in &batch {
                    match entry {
                        Entry::Event(job, _) => bytes.extend_from_slice(&job.body),
                        Entry::Record(record) => bytes.extend_from_slice(record),
                    }
                }
                file.write_all(&bytes).expect("append");
                file.sync_data().expect("fdatasync");
                for entry in batch {
                    if let Entry::Event(job, done) = entry {
                        let _ = jobs.send(job);
                        *done.synced.lock().unwrap() = true;
                        done.wake.notify_one();
                    }
                }
            }
        });
        writer
    }

    fn push(&self, entry: Entry) {
        let mut queue = self.queue.lock().unwrap();
        queue.push(entry);
        if queue.len() == 1 {
            self.wake.notify_one();
        }
    }

    fn append_and_wait(&self, job: Job) {
        let done = Arc::new(Done::default());
        self.push(Entry::Event(job, done.clone()));
        let mut synced = done.synced.lock().unwrap();
        while !*synced {
            synced = done.wake.wait(synced).unwrap();
        }
    }

    fn record(&self, record: Vec<u8>) {
        self.push(Entry::Record(record));
    }
}
