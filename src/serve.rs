//! `hookbox serve`: the thread topology, start-up order, signals and the
//! shutdown order.
//!
//! Start: open the store (migrating it), make the first admin token if there
//! is none, load the catalog, start the writer, bind the listener, start the
//! API threads, then log `listening on http://ADDR` (`https://` with
//! `--tls-cert`) — only once requests can be answered. Stop (SIGTERM or SIGINT): stop taking requests, let the API
//! threads finish the ones they hold, then drop the last writer handle so the
//! writer commits what is queued and closes the database.
//!
//! This module holds no SQL and no routing.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long a stop waits for delivery attempts in flight (SPEC section 5).
const STOP_GRACE: Duration = Duration::from_secs(10);

use anyhow::{Context, anyhow};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::api::{self, Limits, RateLimiter, State};
use crate::catalog::{self, Catalog};
use crate::clock;
use crate::config::{Scope, ServeArgs};
use crate::delivery::worker::{self, RetryPolicy};
use crate::delivery::{Engine, Liveness, SCHEDULER_STUCK_MS, Settings, scheduler};
use crate::ids::{self, Kind};
use crate::monitor::{Monitor, alerts};
use crate::notify::{self, Notifier};
use crate::retention;
use crate::secrets;
use crate::store::audit::{self, Actor, AuditAction};
use crate::store::replica::ReplicaConfig;
use crate::store::writer::{Wakeups, WriterConfig};
use crate::store::{self, ReadPool, Replication, events, tokens, writer};

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    // A bad certificate or key is refused before the database is touched.
    let tls = tls_config(&args)?;
    let db = &args.db.db;
    let mut signals = Signals::new([SIGTERM, SIGINT]).context("installing signal handlers")?;
    let replication = if args.litestream {
        Replication::Litestream
    } else {
        Replication::None
    };
    let conn = store::open_writer_for(db, replication)
        .with_context(|| format!("opening database {}", db.display()))?;
    if replication == Replication::None && store::has_litestream_tables(&conn)? {
        log::warn!(
            "this database holds Litestream's tables: if Litestream replicates it, start hookbox \
             with --litestream, or hookbox's checkpoints compete with Litestream's"
        );
    }
    let ack_after_replica = args
        .ack_after_replica
        .then(|| replica_config(&args, db))
        .transpose()?;
    if tokens::count(&conn)? == 0 {
        bootstrap_admin_token(&conn, db)?;
    }
    let catalog = load_catalog(&conn)?;
    let reset = events::reset_in_flight(&conn, clock::now_ms())?;
    if reset > 0 {
        log::warn!(
            "{reset} deliveries were in flight when hookbox last stopped; they are pending again"
        );
    }
    let (wakeups, woken) = Wakeups::new();
    let writer_config = WriterConfig {
        disable_after_ms: args.disable_after.as_millis() as i64,
        wakeups: wakeups.clone(),
        replication,
        ack_after_replica,
    };
    if let Some(url) = &args.alert_url {
        alert_webhook(
            &conn,
            db,
            url,
            args.alert_secret.as_deref(),
            &args.allow_targets,
        )?;
    }
    let started_ms = clock::now_ms();
    let monitor = Arc::new(Monitor::new());
    let (writer, writer_thread) = writer::spawn(conn, writer_config)?;
    let engine = (!args.pause_delivery)
        .then(|| {
            Engine::start(
                store::open_reader(db)?,
                writer.clone(),
                wakeups,
                woken,
                Settings {
                    monitor: monitor.clone(),
                    limits: scheduler::Limits {
                        workers: args.workers as usize,
                        per_webhook: args.webhook_concurrency as usize,
                        default_max_attempts: args.max_attempts,
                        // Twice the longest attempt, and a minute more.
                        stale_after_ms: 2 * args.delivery_timeout.as_millis() as i64 + 60_000,
                    },
                    retry: RetryPolicy {
                        base: args.retry_base_delay,
                        max: args.retry_max_delay,
                    },
                    allow_targets: args.allow_targets.clone(),
                    timeout: args.delivery_timeout,
                },
            )
        })
        .transpose()?;
    if engine.is_none() {
        log::warn!("delivery is paused (--pause-delivery): events are stored, nothing is sent");
    }

    let limits = api::connection_limits(&args)?;
    let (server, scheme) = match tls {
        Some(tls) => {
            let server = tiny_http::Server::https_with_limits(args.listen, tls, limits)
                .map_err(|e| anyhow!("listening on {}: {e}", args.listen))?;
            (server, "https")
        }
        None => {
            let server = tiny_http::Server::http_with_limits(args.listen, limits)
                .map_err(|e| anyhow!("listening on {}: {e}", args.listen))?;
            (server, "http")
        }
    };
    let server = Arc::new(server);
    let addr = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| anyhow!("the listener has no IP address"))?;

    let state = Arc::new(State {
        reads: ReadPool::new(db),
        writer: writer.clone(),
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
        monitor: monitor.clone(),
        liveness: engine.as_ref().map(Engine::liveness),
    });
    let stopping = Arc::new(AtomicBool::new(false));
    let retention = retention::spawn(writer.clone(), args.retention, stopping.clone())
        .context("starting the retention thread")?;
    let alerts = alerts::spawn(
        monitor.clone(),
        db.to_path_buf(),
        writer.clone(),
        alerts::Rules {
            every: args.alert_check_every,
            window: args.alert_window.min(Duration::from_secs(3600)),
            min_samples: args.alert_min_samples,
            error_rate: f64::from(args.alert_error_rate) / 100.0,
            p95: args.alert_p95,
            queue_age: args.alert_queue_age,
            disk_free: args.alert_disk_free,
        },
        stopping.clone(),
    )
    .context("starting the alerts thread")?;
    load_history(monitor.clone(), db.to_path_buf(), started_ms);
    let http_threads = args.http_threads as usize;
    let threads = api::spawn_threads(
        server.clone(),
        state.clone(),
        stopping.clone(),
        http_threads,
    )
    .context("starting API threads")?;

    log::info!(
        "database {}, {} API threads, max body {} bytes, allow-targets [{}], api-allow [{}], \
         trust-proxy [{}], api-rate-limit {}/s per token, secret grace {}",
        db.display(),
        http_threads,
        args.max_body_size,
        join(&args.allow_targets),
        join(&args.api_allow),
        join(&args.trust_proxy),
        args.api_rate_limit,
        clock::human_duration(i64::try_from(args.secret_grace.as_millis()).unwrap_or(i64::MAX)),
    );
    log::info!("listening on {scheme}://{addr}");
    let notifier = Arc::new(Notifier::from_env());
    notifier.send("READY=1\n");
    let watchdog = start_watchdog(
        &notifier,
        &writer,
        engine.as_ref().map(Engine::liveness),
        &stopping,
    )?;

    if let Some(signal) = signals.forever().next() {
        log::info!("received signal {signal}; stopping");
    }
    notifier.send("STOPPING=1\n");
    let stop_began = Instant::now();
    // The API threads finish the requests they hold and return; what is
    // still queued is drained here. Then the last writer handle goes with
    // `state`: the writer commits what it holds, checkpoints the WAL into the
    // database file and closes it.
    stopping.store(true, Ordering::Release);
    // One wake-up per thread: a waiting thread takes one and returns; a busy
    // one sees `stopping` when it finishes and returns without taking one.
    for _ in 0..threads.len() {
        server.unblock();
    }
    for thread in threads {
        if thread.join().is_err() {
            log::error!("an API thread panicked while stopping");
        }
    }
    api::drain(&server, &state);
    drop(server);
    drop(state);
    if let Some(engine) = engine {
        engine.stop(stop_began + STOP_GRACE);
    }
    if retention.join().is_err() {
        log::error!("the retention thread panicked");
    }
    if alerts.join().is_err() {
        log::error!("the alerts thread panicked");
    }
    writer.shutdown();
    drop(writer);
    if writer_thread.join().is_err() {
        log::error!("the writer thread panicked while stopping");
    }
    if let Some(watchdog) = watchdog
        && watchdog.join().is_err()
    {
        log::error!("the watchdog thread panicked");
    }
    log::info!("stopped");
    Ok(())
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
/// `url` with the alert secret: `--alert-secret`, or the one in
/// `<db>.alert-secret`, generated (mode 0600) at first start. Never logged.
fn alert_webhook(
    conn: &rusqlite::Connection,
    db: &Path,
    url: &str,
    secret: Option<&str>,
    allow_targets: &[crate::config::Cidr],
) -> anyhow::Result<()> {
    let url = crate::delivery::target::check_url(url, allow_targets)
        .map_err(|why| anyhow!("--alert-url {why}"))?;
    let secret = match secret {
        Some(secret) => secret.to_owned(),
        None => {
            let path = alert_secret_path(db);
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
    let now = clock::now_ms();
    let existing = crate::store::webhooks::all_live(conn)?
        .into_iter()
        .find(|w| w.description == ALERT_WEBHOOK);
    match existing {
        Some(mut w) => {
            if w.url != url || w.secret != secret || !w.enabled {
                w.url = url;
                w.enabled = true;
                w.disabled_reason = None;
                w.updated_at = now;
                crate::store::webhooks::update(conn, &w)?;
                conn.execute(
                    "UPDATE webhooks SET secret = ?2 WHERE id = ?1",
                    rusqlite::params![w.id, secret],
                )
                .context("setting the alert secret")?;
                log::info!(
                    "alerts go to {} through webhook {}",
                    crate::delivery::target::loggable(&w.url),
                    w.id
                );
            }
        }
        None => {
            let w = crate::store::webhooks::Webhook {
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
            };
            crate::store::webhooks::insert(conn, &w)?;
            audit::record(
                conn,
                &Actor::System,
                AuditAction::WebhookCreated,
                Some(&w.id),
                "created the --alert-url webhook for hookbox.alert",
                now,
            )?;
            log::info!(
                "alerts go to {} through webhook {}",
                crate::delivery::target::loggable(&w.url),
                w.id
            );
        }
    }
    Ok(())
}

/// Under systemd with `WatchdogSec=`, the thread that pings it while the
/// writer commits (an empty commit within half the interval) and the
/// scheduler goes round; nothing otherwise.
fn start_watchdog(
    notifier: &Arc<Notifier>,
    writer: &writer::WriterHandle,
    scheduler: Option<Liveness>,
    stopping: &Arc<AtomicBool>,
) -> anyhow::Result<Option<std::thread::JoinHandle<()>>> {
    let Some(interval) = notify::watchdog_interval().filter(|_| notifier.enabled()) else {
        return Ok(None);
    };
    log::info!(
        "systemd watchdog: pinging every {} ms while the writer and scheduler make progress",
        interval.as_millis() / 2
    );
    let writer = writer.clone();
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
    let thread = notify::spawn_watchdog(notifier.clone(), interval, stopping.clone(), healthy)
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

/// Creates an admin token and writes it, mode 0600, beside the database.
/// The token itself is never logged; its file's path is.
fn bootstrap_admin_token(conn: &rusqlite::Connection, db: &Path) -> anyhow::Result<()> {
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
    let path = admin_token_path(db);
    // Write the file first: a token in the database that nobody can read is
    // worse than a file whose token is not stored yet.
    write_private(&path, &token)?;
    let tx = conn
        .unchecked_transaction()
        .context("starting transaction")?;
    tokens::insert(&tx, &row, &secrets::token_hash(&token))?;
    let summary = "created the bootstrap admin token: no token existed";
    audit::record(
        &tx,
        &Actor::System,
        AuditAction::TokenCreated,
        Some(&row.id),
        summary,
        row.created_at,
    )?;
    tx.commit().context("committing the bootstrap token")?;
    log::info!(
        "no API token existed: created admin token {} and wrote it to {}",
        row.id,
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
