//! `hookbox serve`: the thread topology in start order, signals, and the
//! one shutdown path.
//!
//! [`run`] reads as the topology:
//! 1. check every argument that can be checked without the database (the
//!    TLS certificate and key, `--alert-url`, the timeouts, the replica's
//!    path) and bind the listener: until then nothing has touched the disk,
//!    so a typo leaves no database, `-wal` or token file behind;
//! 2. open the store (creating or migrating it), make or drop the
//!    `--search-index` indexes, put deliveries left in
//!    flight back to pending, and read what start needs (is there a token,
//!    the custom event types, the `--alert-url` webhook);
//! 3. start the writer: from here on only it writes, and every way out —
//!    an error at any later step, or SIGTERM/SIGINT — goes through
//!    [`Running::stop`];
//! 4. through the writer, each with its audit row: the first admin token
//!    (its file, mode 0600, written first) and the `--alert-url` webhook;
//! 5. the delivery engine (scheduler and workers), unless paused;
//! 6. the retention and alerts threads, and the statistics history;
//! 7. the API threads; then the `listening on http://ADDR` line
//!    (`https://` with `--tls-cert`) and systemd's `READY=1` — only once
//!    requests can be answered (connections that arrive earlier wait in
//!    the listener);
//! 8. the systemd watchdog; then wait for a signal.
//!
//! Stop, in this order: stop taking requests and let the API threads
//! finish the ones they hold, stop the engine (attempts in flight get 10 s,
//! SPEC section 5), the retention and alerts threads, then the writer
//! commits what is queued, checkpoints and closes the database.
//!
//! This module holds no SQL and no routing.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::api::{self, Limits, RateLimiter, State};
use crate::catalog::{self, Catalog};
use crate::clock;
use crate::config::{Scope, ServeArgs};
use crate::content_filter::DataPath;
use crate::delivery::worker::{self, RetryPolicy};
use crate::delivery::{Engine, Liveness, SCHEDULER_STUCK_MS, Settings, scheduler};
use crate::ids::{self, Kind};
use crate::monitor::{Monitor, alerts};
use crate::notify::{self, Notifier};
use crate::retention;
use crate::secrets;
use crate::store::audit::Actor;
use crate::store::handover::Handover;
use crate::store::holds::Holds;
use crate::store::replica::ReplicaConfig;
use crate::store::webhooks::{self, Patch, Webhook};
use crate::store::writer::{Wakeups, WriterConfig, WriterHandle};
use crate::store::{self, ReadPool, Replication, events, tokens, writer};

/// How long a stop waits for delivery attempts in flight (SPEC section 5).
const STOP_GRACE: Duration = Duration::from_secs(10);

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let checked = check_arguments(&args)?;
    let mut signals = Signals::new([SIGTERM, SIGINT]).context("installing signal handlers")?;
    let listener = bind(&args, checked.tls, checked.limits)?;
    // The first touch of the disk.
    let opened = open_store(&args, checked.alert_url.is_some(), &checked.search_index)?;
    let (wakeups, woken) = Wakeups::new();
    let monitor = Arc::new(Monitor::new());
    // New deliveries go from the writer to the scheduler in memory, while
    // there is a scheduler.
    let handover = (!args.pause_delivery).then(|| Arc::new(Handover::new(monitor.holds.clone())));
    let mut running = start_writer(
        opened.conn,
        &args,
        wakeups.clone(),
        monitor.holds.clone(),
        handover.clone(),
        checked.replica,
    )?;
    let served = (|| {
        if !opened.has_token {
            first_admin_token(&running.writer, &args.db.db)?;
        }
        if let Some(url) = checked.alert_url {
            alert_webhook(&running.writer, &args, url, opened.alert_webhook)?;
        }
        let started_ms = clock::now_ms();
        running.engine =
            start_delivery(&args, &running.writer, wakeups, woken, handover, &monitor)?;
        running.retention = Some(start_retention(&args, &running)?);
        running.alerts = Some(start_alerts(&args, &running, &monitor)?);
        load_history(monitor.clone(), args.db.db.clone(), started_ms);
        let state = api_state(&args, &running, opened.catalog, monitor);
        let api = start_api(listener, state, &args);
        announce(&args, &api.listener, &running.notifier);
        running.api = Some(api);
        running.watchdog = start_watchdog(&running)?;
        wait_for_signal(&mut signals);
        Ok(())
    })();
    running.stop();
    served
}

/// What the arguments say, checked; nothing here has touched the disk
/// besides reading the TLS files.
struct Checked {
    /// The listener's timeouts, caps and peer filters.
    limits: tiny_http::ConnectionLimits,
    tls: Option<tiny_http::SslConfig>,
    /// `--alert-url`, as the target policy accepted it.
    alert_url: Option<String>,
    replica: Option<ReplicaConfig>,
    /// `--search-index`, checked.
    search_index: Vec<DataPath>,
}

/// Every check that needs no database, so that a bad argument is refused
/// before the database is created, migrated or tightened.
fn check_arguments(args: &ServeArgs) -> anyhow::Result<Checked> {
    let limits = api::connection_limits(args)?;
    let tls = tls_config(args)?;
    let alert_url = args
        .alert_url
        .as_deref()
        .map(|url| {
            crate::delivery::target::check_url(url, &args.allow_targets)
                .map_err(|why| anyhow!("--alert-url {why}"))
        })
        .transpose()?;
    let replica = args
        .ack_after_replica
        .then(|| replica_config(args, &args.db.db))
        .transpose()?;
    let search_index = args
        .search_index
        .iter()
        .map(|p| DataPath::parse(p.trim()).map_err(|why| anyhow!("--search-index {p}: {why}")))
        .collect::<anyhow::Result<_>>()?;
    Ok(Checked {
        limits,
        tls,
        alert_url,
        replica,
        search_index,
    })
}

/// The bound listener: its server, its address and `http` or `https`.
struct Listener {
    server: Arc<tiny_http::Server>,
    addr: std::net::SocketAddr,
    scheme: &'static str,
}

/// Binds `--listen` (before the database is opened: an address in use is
/// refused like any other bad argument). Connections wait in the listener
/// until the API threads start.
fn bind(
    args: &ServeArgs,
    tls: Option<tiny_http::SslConfig>,
    limits: tiny_http::ConnectionLimits,
) -> anyhow::Result<Listener> {
    let (server, scheme) = match tls {
        Some(tls) => (
            tiny_http::Server::https_with_limits(args.listen, tls, limits),
            "https",
        ),
        None => (
            tiny_http::Server::http_with_limits(args.listen, limits),
            "http",
        ),
    };
    let server = server.map_err(|e| anyhow!("listening on {}: {e}", args.listen))?;
    let addr = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| anyhow!("the listener has no IP address"))?;
    Ok(Listener {
        server: Arc::new(server),
        addr,
        scheme,
    })
}

/// The database, open for the writer, and what start reads from it.
struct Opened {
    conn: rusqlite::Connection,
    has_token: bool,
    catalog: Catalog,
    /// The webhook `--alert-url` delivers through, if one was made before
    /// (looked for only with `--alert-url`).
    alert_webhook: Option<Webhook>,
}

/// Opens (creating or migrating) the database on the connection the
/// writer will own, and puts deliveries an older version left `delivering`
/// (it wrote its claims; this one holds them in memory) back to pending,
/// before the writer and the engine start.
fn open_store(
    args: &ServeArgs,
    with_alert_url: bool,
    search_index: &[DataPath],
) -> anyhow::Result<Opened> {
    let db = &args.db.db;
    let conn = store::open_writer_for(db, replication(args))
        .with_context(|| format!("opening database {}", db.display()))?;
    if !args.litestream && store::has_litestream_tables(&conn)? {
        log::warn!(
            "this database holds Litestream's tables: if Litestream replicates it, start hookbox \
             with --litestream, or hookbox's checkpoints compete with Litestream's"
        );
    }
    let has_token = tokens::count(&conn)? > 0;
    let catalog = load_catalog(&conn)?;
    let alert_webhook = if with_alert_url {
        webhooks::all_live(&conn)?
            .into_iter()
            .find(|w| w.description == ALERT_WEBHOOK)
    } else {
        None
    };
    store::search::ensure_indexes(&conn, search_index)?;
    let reset = events::reset_in_flight(&conn, clock::now_ms())?;
    if reset > 0 {
        log::warn!(
            "{reset} deliveries were in flight when hookbox last stopped; they are pending again"
        );
    }
    Ok(Opened {
        conn,
        has_token,
        catalog,
        alert_webhook,
    })
}

fn replication(args: &ServeArgs) -> Replication {
    if args.litestream {
        Replication::Litestream
    } else {
        Replication::None
    }
}

/// Everything started after the writer, each `None` until it has
/// started; [`Running::stop`] stops whatever has, in order.
struct Running {
    /// Set once, at stop: the retention, alerts and watchdog threads return
    /// when they see it.
    stopping: Arc<AtomicBool>,
    notifier: Arc<Notifier>,
    writer: WriterHandle,
    writer_thread: JoinHandle<()>,
    engine: Option<Engine>,
    retention: Option<JoinHandle<()>>,
    alerts: Option<JoinHandle<()>>,
    api: Option<Api>,
    watchdog: Option<JoinHandle<()>>,
}

/// The API: its listener and the turns its requests take (answered on
/// tiny_http's connection threads, whose handler holds the shared state).
struct Api {
    listener: Listener,
    turns: Arc<api::Turns>,
}

fn start_writer(
    conn: rusqlite::Connection,
    args: &ServeArgs,
    wakeups: Arc<Wakeups>,
    holds: Arc<Holds>,
    handover: Option<Arc<Handover>>,
    ack_after_replica: Option<ReplicaConfig>,
) -> anyhow::Result<Running> {
    let config = WriterConfig {
        disable_after_ms: args.disable_after.as_millis() as i64,
        wakeups,
        holds,
        handover,
        replication: replication(args),
        ack_after_replica,
    };
    let (writer, writer_thread) = writer::spawn(conn, config)?;
    Ok(Running {
        stopping: Arc::new(AtomicBool::new(false)),
        notifier: Arc::new(Notifier::from_env()),
        writer,
        writer_thread,
        engine: None,
        retention: None,
        alerts: None,
        api: None,
        watchdog: None,
    })
}

impl Running {
    /// The one shutdown path, after a signal or an error: stop taking
    /// requests, let the API threads finish the ones they hold and drain
    /// what is queued; stop the engine (attempts in flight get
    /// [`STOP_GRACE`]), the retention and alerts threads; then the writer
    /// commits what is queued, checkpoints the WAL into the database file
    /// and closes it.
    fn stop(self) {
        self.notifier.send("STOPPING=1\n");
        let stop_began = Instant::now();
        self.stopping.store(true, Ordering::Release);
        if let Some(api) = self.api {
            api.stop();
        }
        if let Some(engine) = self.engine {
            engine.stop(stop_began + STOP_GRACE);
        }
        if let Some(retention) = self.retention
            && retention.join().is_err()
        {
            log::error!("the retention thread panicked");
        }
        if let Some(alerts) = self.alerts
            && alerts.join().is_err()
        {
            log::error!("the alerts thread panicked");
        }
        self.writer.shutdown();
        drop(self.writer);
        if self.writer_thread.join().is_err() {
            log::error!("the writer thread panicked while stopping");
        }
        if let Some(watchdog) = self.watchdog
            && watchdog.join().is_err()
        {
            log::error!("the watchdog thread panicked");
        }
        log::info!("stopped");
    }
}

impl Api {
    /// Requests from now on are answered 503; the ones being answered
    /// finish (for at most a few seconds). Then the listener closes.
    /// Connections still open keep the state (their handler holds it) but
    /// get no turn, so nothing reaches the writer after this returns.
    fn stop(self) {
        api::stop(&self.turns);
    }
}

/// The scheduler and workers, or `None` with `--pause-delivery`.
fn start_delivery(
    args: &ServeArgs,
    writer: &WriterHandle,
    wakeups: Arc<Wakeups>,
    woken: crossbeam_channel::Receiver<()>,
    handover: Option<Arc<Handover>>,
    monitor: &Arc<Monitor>,
) -> anyhow::Result<Option<Engine>> {
    let Some(handover) = handover.filter(|_| !args.pause_delivery) else {
        log::warn!("delivery is paused (--pause-delivery): events are stored, nothing is sent");
        return Ok(None);
    };
    let settings = Settings {
        monitor: monitor.clone(),
        limits: scheduler::Limits {
            workers: args.workers as usize,
            per_webhook: args.webhook_concurrency as usize,
            default_max_attempts: args.max_attempts,
        },
        retry: RetryPolicy {
            base: args.retry_base_delay,
            max: args.retry_max_delay,
        },
        allow_targets: args.allow_targets.clone(),
        timeout: args.delivery_timeout,
    };
    let engine = Engine::start(
        store::open_reader(&args.db.db)?,
        writer.clone(),
        wakeups,
        woken,
        handover,
        settings,
    )?;
    Ok(Some(engine))
}

fn start_retention(args: &ServeArgs, running: &Running) -> anyhow::Result<JoinHandle<()>> {
    retention::spawn(
        running.writer.clone(),
        args.retention,
        running.stopping.clone(),
    )
    .context("starting the retention thread")
}

fn start_alerts(
    args: &ServeArgs,
    running: &Running,
    monitor: &Arc<Monitor>,
) -> anyhow::Result<JoinHandle<()>> {
    let rules = alerts::Rules {
        every: args.alert_check_every,
        window: args.alert_window.min(Duration::from_secs(3600)),
        min_samples: args.alert_min_samples,
        error_rate: f64::from(args.alert_error_rate) / 100.0,
        p95: args.alert_p95,
        queue_age: args.alert_queue_age,
        disk_free: args.alert_disk_free,
    };
    alerts::spawn(
        monitor.clone(),
        args.db.db.clone(),
        running.writer.clone(),
        rules,
        running.stopping.clone(),
    )
    .context("starting the alerts thread")
}

fn api_state(
    args: &ServeArgs,
    running: &Running,
    catalog: Catalog,
    monitor: Arc<Monitor>,
) -> Arc<State> {
    Arc::new(State {
        reads: ReadPool::new(&args.db.db),
        tokens: Default::default(),
        writer: running.writer.clone(),
        catalog,
        limits: Limits {
            allow_targets: args.allow_targets.clone(),
            api_allow: args.api_allow.clone(),
            trust_proxy: args.trust_proxy.clone(),
            max_body_size: args.max_body_size,
            secret_grace_ms: i64::try_from(args.secret_grace.as_millis()).unwrap_or(i64::MAX),
            delivery_timeout: args.delivery_timeout,
            metrics_allow: args.metrics_allow.clone(),
        },
        rate: RateLimiter::new(args.api_rate_limit),
        agent: worker::agent(args.allow_targets.clone(), args.delivery_timeout),
        testers: Default::default(),
        monitor,
        liveness: running.engine.as_ref().map(Engine::liveness),
    })
}

fn start_api(listener: Listener, state: Arc<State>, args: &ServeArgs) -> Api {
    let turns = Arc::new(api::Turns::new(args.http_threads as usize));
    api::answer_on_connection_threads(&listener.server, state, turns.clone());
    Api { listener, turns }
}

/// The settings line, `listening on …`, and `READY=1` to systemd.
fn announce(args: &ServeArgs, listener: &Listener, notifier: &Notifier) {
    log::info!(
        "database {}, {} requests answered at once, max body {} bytes, allow-targets [{}], api-allow [{}], \
         trust-proxy [{}], api-rate-limit {}/s per token, secret grace {}",
        args.db.db.display(),
        args.http_threads,
        args.max_body_size,
        join(&args.allow_targets),
        join(&args.api_allow),
        join(&args.trust_proxy),
        args.api_rate_limit,
        clock::human_duration(i64::try_from(args.secret_grace.as_millis()).unwrap_or(i64::MAX)),
    );
    log::info!("listening on {}://{}", listener.scheme, listener.addr);
    notifier.send("READY=1\n");
}

fn wait_for_signal(signals: &mut Signals) {
    if let Some(signal) = signals.forever().next() {
        log::info!("received signal {signal}; stopping");
    }
}

/// How `--ack-after-replica` asks Litestream: the database by its absolute
/// path, as Litestream's configuration resolves it (made absolute, symlinks
/// kept: under systemd's `DynamicUser` the state directory is one).
fn replica_config(args: &ServeArgs, db: &Path) -> anyhow::Result<ReplicaConfig> {
    let db = std::path::absolute(db)
        .with_context(|| format!("resolving the database path {}", db.display()))?;
    log::info!(
        "--ack-after-replica: changes are answered once `{} sync -wait -socket {}` confirms them \
         (at most {} ms, then 503 replica_unconfirmed)",
        args.litestream_command.display(),
        args.litestream_socket.display(),
        args.replica_timeout.as_millis()
    );
    Ok(ReplicaConfig {
        command: args.litestream_command.clone(),
        socket: args.litestream_socket.clone(),
        db,
        timeout: args.replica_timeout,
    })
}

/// Takes the first queue reading, then fills the statistics with the last
/// day's stored attempts, on a thread of its own: start-up does not wait
/// for either (both grow with what the database holds).
fn load_history(monitor: Arc<Monitor>, db: PathBuf, until: i64) {
    monitor.begin_warming();
    let warming = monitor.clone();
    let spawned = std::thread::Builder::new()
        .name("stats-history".into())
        .spawn(move || {
            let began = Instant::now();
            let conn = store::open_reader(&db);
            if let Err(e) = monitor.warm_queue(conn.as_ref().ok()) {
                log::warn!("reading the queue at start: {e}");
            }
            match conn.and_then(|conn| monitor.load_history(&conn, until)) {
                Ok(n) => log::info!(
                    "statistics: {n} attempts of the last day loaded in {} ms",
                    began.elapsed().as_millis()
                ),
                Err(e) => {
                    log::warn!("statistics: the last day's attempts could not be loaded: {e}")
                }
            }
        });
    if let Err(e) = spawned {
        let _ = warming.warm_queue(None);
        log::warn!("statistics: cannot start loading history: {e}");
    }
}

/// Writes `line` to a new file at `path` that only this user can read
/// (mode 0600 from creation: the secret is never readable by others, not
/// even for a moment), and syncs it.
fn write_private(path: &Path, line: &str) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(path);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(file, "{line}")
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

/// Where the generated alert secret is kept: `<db>.alert-secret`.
pub fn alert_secret_path(db: &Path) -> PathBuf {
    let mut path = db.as_os_str().to_owned();
    path.push(".alert-secret");
    PathBuf::from(path)
}

/// The description that marks the webhook `--alert-url` delivers through.
const ALERT_WEBHOOK: &str = "hookbox alerts (--alert-url)";

/// Makes sure one webhook, subscribed to `hookbox.alert`, delivers to
/// `url` (checked by [`check_arguments`]) with the alert secret:
/// `--alert-secret`, or the one in `<db>.alert-secret`, generated (mode
/// 0600) at first start. Never logged. Made, re-pointed, re-enabled or
/// given the new secret through the writer, each with its audit row.
fn alert_webhook(
    writer: &WriterHandle,
    args: &ServeArgs,
    url: String,
    existing: Option<Webhook>,
) -> anyhow::Result<()> {
    let secret = match &args.alert_secret {
        Some(secret) => secret.clone(),
        None => {
            let path = alert_secret_path(&args.db.db);
            match std::fs::read_to_string(&path) {
                Ok(text) if !text.trim().is_empty() => text.trim().to_owned(),
                _ => {
                    let secret = secrets::new_webhook_secret();
                    write_private(&path, &secret)?;
                    log::info!(
                        "alerts are signed with a new secret, kept in {}",
                        path.display()
                    );
                    secret
                }
            }
        }
    };
    let id = match existing {
        Some(w) => {
            let moved = w.url != url || !w.enabled;
            let new_secret = w.secret != secret;
            if moved {
                let patch = Patch {
                    url: Some(url),
                    enabled: Some(true),
                    ..Patch::default()
                };
                writer
                    .update_webhook(w.id.clone(), patch, Actor::System)
                    .context("pointing the --alert-url webhook at --alert-url")?;
            }
            if new_secret {
                // The old secret stops signing at once, as before: the
                // operator changed it.
                writer
                    .rotate_secret(w.id.clone(), secret, clock::now_ms(), Actor::System)
                    .context("giving the --alert-url webhook its secret")?;
            }
            if !(moved || new_secret) {
                return Ok(());
            }
            w.id
        }
        None => {
            let now = clock::now_ms();
            let w = Webhook {
                id: ids::new(Kind::Webhook),
                url,
                description: ALERT_WEBHOOK.to_owned(),
                secret,
                events: vec![alerts::EVENT_TYPE.to_owned()],
                max_attempts: Some(10),
                rate_limit_per_s: None,
                enabled: true,
                disabled_reason: None,
                created_at: now,
                updated_at: now,
                previous_secret: None,
                previous_secret_until: None,
                headers: Default::default(),
                filter: Default::default(),
                ordering_key: None,
            };
            let id = w.id.clone();
            writer
                .create_webhook(w, Actor::System)
                .context("creating the --alert-url webhook")?;
            id
        }
    };
    log::info!(
        "alerts go to {} through webhook {id}",
        crate::delivery::target::loggable(args.alert_url.as_deref().unwrap_or_default()),
    );
    Ok(())
}

/// Under systemd with `WatchdogSec=`, the thread that pings it while the
/// writer commits (an empty commit within half the interval) and the
/// scheduler goes round; nothing otherwise.
fn start_watchdog(running: &Running) -> anyhow::Result<Option<JoinHandle<()>>> {
    let notifier = &running.notifier;
    let Some(interval) = notify::watchdog_interval().filter(|_| notifier.enabled()) else {
        return Ok(None);
    };
    log::info!(
        "systemd watchdog: pinging every {} ms while the writer and scheduler make progress",
        interval.as_millis() / 2
    );
    let writer = running.writer.clone();
    let scheduler: Option<Liveness> = running.engine.as_ref().map(Engine::liveness);
    let healthy = move |timeout: Duration| {
        writer
            .ping(timeout)
            .map_err(|e| format!("the database writer does not commit ({e})"))?;
        if let Some(scheduler) = &scheduler {
            let idle = scheduler.scheduler_idle_ms(clock::now_ms());
            if idle > SCHEDULER_STUCK_MS {
                return Err(format!(
                    "the delivery scheduler has not gone round for {idle} ms"
                ));
            }
        }
        Ok(())
    };
    let thread = notify::spawn_watchdog(
        notifier.clone(),
        interval,
        running.stopping.clone(),
        healthy,
    )
    .context("starting the watchdog thread")?;
    Ok(Some(thread))
}

/// The certificate chain and key of `--tls-cert` and `--tls-key`, read and
/// checked, or `None` for plain HTTP. (Clap refuses one without the other.)
fn tls_config(args: &ServeArgs) -> anyhow::Result<Option<tiny_http::SslConfig>> {
    let (cert, key) = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => (cert, key),
        (None, None) => return Ok(None),
        _ => {
            return Err(anyhow!(
                "--tls-cert and --tls-key go together: give both or neither"
            ));
        }
    };
    let certificate = std::fs::read(cert)
        .with_context(|| format!("reading the TLS certificate {}", cert.display()))?;
    let private_key =
        std::fs::read(key).with_context(|| format!("reading the TLS key {}", key.display()))?;
    let config = tiny_http::SslConfig {
        certificate,
        private_key,
    };
    config.check().map_err(|e| {
        anyhow!(
            "loading the TLS certificate {} and key {}: {e}",
            cert.display(),
            key.display()
        )
    })?;
    Ok(Some(config))
}

fn join(nets: &[crate::config::Cidr]) -> String {
    nets.iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// The file the first admin token is written to: `<db path>.admin-token`.
pub fn admin_token_path(db: &Path) -> PathBuf {
    let mut path = db.as_os_str().to_owned();
    path.push(".admin-token");
    PathBuf::from(path)
}

/// Creates an admin token through the writer (audited as the system's)
/// and writes it, mode 0600, beside the database: the file first, so that
/// no stored token is one nobody can read. The token itself is never
/// logged; its file's path is.
fn first_admin_token(writer: &WriterHandle, db: &Path) -> anyhow::Result<()> {
    let token = secrets::new_token();
    let row = tokens::Token {
        id: ids::new(Kind::Token),
        name: "bootstrap admin".into(),
        scope: Scope::Admin,
        created_at: clock::now_ms(),
        last_used_at: None,
        revoked_at: None,
        allow: Vec::new(),
    };
    let id = row.id.clone();
    let path = admin_token_path(db);
    write_private(&path, &token)?;
    let taken = writer
        .create_token(row, secrets::token_hash(&token), Actor::System)
        .context("storing the first admin token")?;
    if let Some(other) = taken {
        // Only another process could have made one since start counted none.
        anyhow::bail!(
            "storing the first admin token: token {other} took its name meanwhile; \
             start again"
        );
    }
    log::info!(
        "no API token existed: created admin token {id} and wrote it to {}",
        path.display()
    );
    Ok(())
}

/// The built-in types plus the custom ones stored in the database.
fn load_catalog(conn: &rusqlite::Connection) -> anyhow::Result<Catalog> {
    let catalog = Catalog::with_builtins();
    for row in events::list_event_types(conn)? {
        let schema = match row.schema.as_deref().map(serde_json::from_str) {
            Some(Ok(schema)) => schema,
            None => serde_json::Value::Null,
            Some(Err(e)) => {
                log::error!(
                    "custom event type {} has an unreadable schema: {e}",
                    row.name
                );
                continue;
            }
        };
        let example = row
            .example
            .as_deref()
            .and_then(|e| serde_json::from_str(e).ok());
        match catalog::compile(Some(&row.name), &row.description, schema, example, false) {
            Ok(t) => catalog.insert(t),
            Err(errors) => log::error!(
                "custom event type {} no longer compiles: {errors:?}",
                row.name
            ),
        }
    }
    Ok(catalog)
}
