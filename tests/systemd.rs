//! hookbox under systemd (SPEC section 7, issue 5): the units' sandboxing
//! as `systemd-analyze security` rates it, and the notification protocol
//! spoken to a real `NOTIFY_SOCKET` datagram socket — `READY=1` once
//! listening, `WATCHDOG=1` only while the writer commits, `STOPPING=1` on
//! SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use util::BIN;

/// The exposure `systemd-analyze security --offline=yes` gives a unit file.
fn exposure(unit: &str) -> f64 {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("systemd")
        .join(unit);
    let analyze = util::require_tool(
        &["systemd-analyze"],
        "systemd-analyze is Debian's systemd package: bash .ci/tools",
    );
    let out = Command::new(analyze)
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&path)
        .output()
        .expect("systemd-analyze runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| {
            panic!(
                "no exposure level for {unit}:\n{text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    line.split(':')
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unreadable exposure line {line:?}"))
}

#[test]
#[ignore = "needs systemd-analyze (Debian's systemd): bash .ci/tools"]
fn the_service_units_are_sandboxed_to_an_exposure_of_at_most_2() {
    for unit in ["hookbox.service", "hookbox-backup.service"] {
        let level = exposure(unit);
        assert!(level <= 2.0, "{unit}: exposure {level} > 2.0");
    }
}

/// A notification socket and a server started with it.
struct Notified {
    socket: UnixDatagram,
    child: Child,
    _dir: tempfile::TempDir,
    db: std::path::PathBuf,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Notified {
    /// `serve` with `NOTIFY_SOCKET` at `name` (a path in the temp dir, or
    /// `@…` for an abstract socket) and the given environment.
    fn start(abstract_name: Option<&str>, env: &[(&str, String)]) -> Notified {
        let dir = tempfile::tempdir().unwrap();
        let (socket, address) = match abstract_name {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name).unwrap();
                (UnixDatagram::bind_addr(&addr).unwrap(), format!("@{name}"))
            }
            None => {
                let path = dir.path().join("notify.sock");
                (
                    UnixDatagram::bind(&path).unwrap(),
                    path.to_string_lossy().into_owned(),
                )
            }
        };
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let db = dir.path().join("hookbox.db");
        let mut command = Command::new(BIN);
        command
            .args([
                "serve",
                "--pause-delivery",
                "--listen",
                "127.0.0.1:0",
                "--db",
            ])
            .arg(&db)
            .env("NOTIFY_SOCKET", address);
        for (name, value) in env {
            command.env(name, value);
        }
        let (child, log, _addr) = util::spawn_command(command);
        Notified {
            socket,
            child,
            _dir: dir,
            db,
            log,
        }
    }

    /// Messages received within `window`.
    fn collect(&self, window: Duration) -> Vec<(Instant, String)> {
        let deadline = Instant::now() + window;
        let mut got = Vec::new();
        let mut buf = [0u8; 512];
        while Instant::now() < deadline {
            if let Ok(n) = self.socket.recv(&mut buf) {
                got.push((
                    Instant::now(),
                    String::from_utf8_lossy(&buf[..n]).into_owned(),
                ));
            }
        }
        got
    }

    /// Waits for a message equal to `want`, failing after `timeout`.
    fn expect(&self, want: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 512];
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            if let Ok(n) = self.socket.recv(&mut buf) {
                let message = String::from_utf8_lossy(&buf[..n]).into_owned();
                if message.trim_end() == want {
                    return;
                }
                seen.push(message);
            }
        }
        panic!(
            "no {want} within {timeout:?}; got {seen:?}\n{}",
            self.log.lock().unwrap()
        );
    }

    fn terminate(&mut self) {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    }
}

impl Drop for Notified {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pings(messages: &[(Instant, String)]) -> usize {
    messages
        .iter()
        .filter(|(_, m)| m.trim_end() == "WATCHDOG=1")
        .count()
}

#[test]
fn ready_once_listening_and_stopping_on_sigterm() {
    let mut server = Notified::start(None, &[]);
    // spawn_command returned after the `listening on` line: READY is there.
    server.expect("READY=1", Duration::from_secs(2));
    // No watchdog was asked for: no pings.
    assert_eq!(pings(&server.collect(Duration::from_millis(500))), 0);
    server.terminate();
    server.expect("STOPPING=1", Duration::from_secs(5));
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status}");
}

#[test]
fn an_abstract_notify_socket_works_too() {
    let name = format!("hookbox-test-{}", std::process::id());
    let server = Notified::start(Some(&name), &[]);
    server.expect("READY=1", Duration::from_secs(2));
}

#[test]
fn the_watchdog_is_pinged_only_while_the_writer_commits() {
    // 400 ms: a ping every 200 ms.
    let server = Notified::start(None, &[("WATCHDOG_USEC", "400000".into())]);
    server.expect("READY=1", Duration::from_secs(2));
    let healthy = server.collect(Duration::from_millis(1500));
    assert!(pings(&healthy) >= 4, "too few pings: {healthy:?}");

    // Another process holds SQLite's write lock: the writer cannot commit,
    // so systemd must stop hearing from hookbox.
    let locker = rusqlite::Connection::open(&server.db).unwrap();
    locker.execute_batch("BEGIN IMMEDIATE").unwrap();
    // A ping already under way may land; after that, silence. 1.5 s is
    // more than three whole watchdog intervals.
    let _ = server.collect(Duration::from_millis(300));
    let stuck = server.collect(Duration::from_millis(1500));
    assert_eq!(
        pings(&stuck),
        0,
        "pinged while the writer was stuck: {stuck:?}"
    );
    util::wait_for(
        Duration::from_secs(5),
        "the stuck writer to be logged",
        || {
            server
                .log
                .lock()
                .unwrap()
                .contains("not pinging systemd")
                .then_some(())
        },
    );

    locker.execute_batch("ROLLBACK").unwrap();
    drop(locker);
    // The writer is waiting out its busy timeout at most; then pings resume.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if pings(&server.collect(Duration::from_millis(300))) > 0 {
            return;
        }
    }
    panic!(
        "pings did not resume once the lock was gone\n{}",
        server.log.lock().unwrap()
    );
}

#[test]
fn a_watchdog_meant_for_another_process_is_ignored() {
    let server = Notified::start(
        None,
        &[
            ("WATCHDOG_USEC", "400000".into()),
            ("WATCHDOG_PID", "1".into()),
        ],
    );
    server.expect("READY=1", Duration::from_secs(2));
    assert_eq!(pings(&server.collect(Duration::from_millis(800))), 0);
}

/// The shell script of `hookbox-backup.service`'s `ExecStart=`, as systemd
/// hands it to `sh -ec`: continuation lines joined, `%%` unescaped, and the
/// installed binary's path replaced by the one under test.
fn backup_script() -> String {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/hookbox-backup.service"),
    )
    .unwrap();
    let start = unit
        .find("ExecStart=/bin/sh -ec '")
        .expect("an sh -ec ExecStart");
    let mut script = String::new();
    for line in unit[start + "ExecStart=/bin/sh -ec '".len()..].lines() {
        match line.strip_suffix('\\') {
            Some(part) => script.push_str(part),
            None => {
                script.push_str(line.strip_suffix('\'').expect("the script's closing quote"));
                break;
            }
        }
    }
    script.replace("%%", "%").replace("/usr/bin/hookbox", BIN)
}

fn run_backup_unit(db: &Path, dir: &Path, keep: &str) -> std::process::Output {
    Command::new("/bin/sh")
        .arg("-ec")
        .arg(backup_script())
        .env("HOOKBOX_DB", db)
        .env("HOOKBOX_BACKUP_DIR", dir)
        .env("HOOKBOX_KEEP_BACKUPS", keep)
        .output()
        .unwrap()
}

fn copies(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn the_backup_unit_keeps_the_newest_checked_copies() {
    let server = util::Server::start();
    server.create_webhook(&["*"]);
    let backups = server.dir.path().join("backups");
    let mut made = Vec::new();
    for _ in 0..4 {
        let out = run_backup_unit(&server.db(), &backups, "2");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        made.push(copies(&backups).last().unwrap().clone());
    }
    // The newest two remain, each a complete database that checks out.
    assert_eq!(copies(&backups), made[2..], "{made:?}");
    for name in copies(&backups) {
        assert!(
            name.starts_with("hookbox-") && name.ends_with("Z.db"),
            "{name}"
        );
        let out = Command::new(BIN)
            .args(["check", "--db"])
            .arg(backups.join(&name))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A backup that fails leaves every older copy where it was.
    let out = run_backup_unit(&server.dir.path().join("missing.db"), &backups, "2");
    assert!(!out.status.success());
    assert_eq!(copies(&backups), made[2..]);
}
