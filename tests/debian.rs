//! hookbox as a Debian admin gets it (issue 12): the package `cargo deb`
//! builds, installed, upgraded, removed and purged in a Debian root booted
//! with a real systemd as PID 1, and the units doing there what
//! tests/systemd.rs can only rate offline or imitate — READY=1, the
//! DynamicUser state directory, a restart after `kill -9` and after a
//! watchdog timeout, the backup service, a clean stop, and
//! `systemd-analyze security` on the booted unit.
//!
//! `bash .ci/debian` makes what these tests need while the network is
//! there, under `target/debian-ci/` (`HOOKBOX_DEBIAN_CI` points elsewhere):
//! a bookworm root from debootstrap (minbase + systemd), this checkout's
//! `hookbox.deb`, and `hookbox-old.deb`, the same packaging around the
//! hookbox of the last commit before schema migration 4. A missing piece
//! fails the test, saying so; it never passes without running.
//!
//! Each test boots its own container: an overlay over the cached root (so
//! the root stays as debootstrap left it, and two tests can run at once),
//! `systemd-nspawn --boot --private-network`, driven with `nsenter` into its
//! PID 1 (machinectl does not work on these machines: see ARCHITECTURE.md).
//! The test's HTTP calls and its receiver run on a thread that joined the
//! container's network namespace, so 127.0.0.1 there is the container's
//! loopback, where hookbox listens and delivers; the test reaches the
//! container's files (the database, the admin token) through the overlay.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::fs;
use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use util::receiver::{Answer, Receiver};

const IGNORED: &str = "bash .ci/debian";

/// Where `.ci/debian` left the root and the packages.
fn ci_dir() -> PathBuf {
    match std::env::var_os("HOOKBOX_DEBIAN_CI") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .expect("the target directory")
            .join("debian-ci"),
    }
}

/// A path of `ci_dir()` that must exist.
fn ci_input(name: &str) -> PathBuf {
    let path = ci_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: run {IGNORED} first (as root, with the network)",
        path.display()
    );
    path
}

/// A booted Debian container with the packages copied into `/srv`.
struct Container {
    nspawn: Child,
    pid1: u32,
    root: PathBuf,
    dir: tempfile::TempDir,
}

impl Container {
    fn boot() -> Container {
        assert!(
            rustix::process::geteuid().is_root(),
            "tests/debian.rs mounts and boots a container: run as root ({IGNORED})"
        );
        let nspawn = util::require_tool(
            &["systemd-nspawn"],
            "systemd-nspawn is Debian's systemd-container: bash .ci/debian",
        );
        util::require_tool(&["nsenter", "mount", "pgrep"], "util-linux and procps");
        let lower = ci_input("root");
        ci_input("root/.hookbox-ci-root");
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let (upper, work, root) = (
            dir.path().join("upper"),
            dir.path().join("work"),
            dir.path().join("root"),
        );
        for d in [&upper, &work, &root] {
            fs::create_dir(d).unwrap();
        }
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            upper.display(),
            work.display()
        );
        let out = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &options])
            .arg(&root)
            .output()
            .unwrap();
        assert!(out.status.success(), "mount overlay: {out:?}");
        for deb in ["hookbox.deb", "hookbox-old.deb"] {
            fs::copy(ci_input(deb), root.join("srv").join(deb)).unwrap();
        }
        let log = fs::File::create(dir.path().join("nspawn.log")).unwrap();
        let nspawn = Command::new(nspawn)
            .args([
                "--boot",
                "--register=no",
                "--keep-unit",
                "--console=passive",
            ])
            .arg("--private-network")
            .arg("-D")
            .arg(&root)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("systemd-nspawn starts");
        let mut container = Container {
            pid1: 0,
            nspawn,
            root,
            dir,
        };
        let parent = container.nspawn.id().to_string();
        container.pid1 =
            container.wait_for(Duration::from_secs(20), "the container's systemd", || {
                let out = Command::new("pgrep")
                    .args(["-P", &parent, "-x", "systemd"])
                    .output()
                    .unwrap();
                String::from_utf8_lossy(&out.stdout).trim().parse().ok()
            });
        let state = container.wait_for(Duration::from_secs(60), "the boot to finish", || {
            let out = container.sh("systemctl is-system-running --wait");
            let state = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            (state == "running" || state == "degraded").then_some(state)
        });
        if state != "running" {
            // A unit of the base system that failed at boot is not what
            // these tests are about (hookbox's units are checked one by
            // one), but it is worth seeing in the output.
            eprintln!(
                "the container booted {state}: {}",
                container.ok("systemctl --failed --no-legend")
            );
        }
        container
    }

    /// `sh -c script` inside the container (all its namespaces).
    fn sh(&self, script: &str) -> Output {
        Command::new("nsenter")
            .args(["-t", &self.pid1.to_string(), "-a", "/bin/sh", "-c", script])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LANG", "C.UTF-8")
            .env("SYSTEMD_PAGER", "")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .output()
            .expect("nsenter runs")
    }

    /// [`Container::sh`] that must succeed; its standard output.
    fn ok(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(
            out.status.success(),
            "`{script}` in the container: {}\n{}{}\n--- journal ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.journal_tail()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn journal_tail(&self) -> String {
        let out = self.sh("journalctl --no-pager -n 60 -o short-monotonic");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// One property of a unit, as `systemctl show` gives it.
    fn show(&self, unit: &str, property: &str) -> String {
        self.ok(&format!("systemctl show -p {property} --value {unit}"))
            .trim()
            .to_owned()
    }

    /// What a process of hookbox.service wrote to the journal.
    fn lines_of(&self, pid: &str) -> String {
        self.ok(&format!(
            "journalctl --no-pager -o cat _SYSTEMD_UNIT=hookbox.service _PID={pid}"
        ))
    }

    /// The journal of a unit, systemd's own lines about it included.
    fn journal(&self, unit: &str) -> String {
        self.ok(&format!("journalctl --no-pager -o cat -u {unit}"))
    }

    /// A path inside the container, as seen from the test.
    fn path(&self, inside: &str) -> PathBuf {
        self.root.join(inside.trim_start_matches('/'))
    }

    fn installed_version(&self) -> String {
        self.ok("dpkg-query -W -f='${Status} ${Version}' hookbox")
    }

    /// hookbox.service's main PID once it is active (and not `not`).
    fn active_pid(&self, not: &str, what: &str) -> String {
        self.wait_for(Duration::from_secs(30), what, || {
            let pid = self.show("hookbox", "MainPID");
            (self.show("hookbox", "ActiveState") == "active" && pid != "0" && pid != not)
                .then_some(pid)
        })
    }

    /// [`util::wait_for`] with the journal in the failure.
    fn wait_for<T>(
        &self,
        timeout: Duration,
        what: &str,
        mut check: impl FnMut() -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(value) = check() {
                return value;
            }
            if Instant::now() > deadline {
                let log = fs::read_to_string(self.dir.path().join("nspawn.log")).unwrap();
                let journal = if self.pid1 == 0 {
                    String::new()
                } else {
                    self.journal_tail()
                };
                panic!(
                    "timed out after {timeout:?} waiting for {what}\n--- nspawn ---\n{log}\n--- journal ---\n{journal}"
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs `body` on a thread inside the container's network namespace:
    /// 127.0.0.1 there is where the container's hookbox listens.
    fn in_network<T: Send>(&self, body: impl FnOnce() -> T + Send) -> T {
        let ns = fs::File::open(format!("/proc/{}/ns/net", self.pid1)).unwrap();
        std::thread::scope(|scope| {
            let thread = scope.spawn(move || {
                use std::os::fd::AsFd;
                rustix::thread::move_into_link_name_space(
                    ns.as_fd(),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )
                .expect("setns into the container's network namespace");
                body()
            });
            thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if self.pid1 != 0 {
            let _ = self.sh("systemctl poweroff --no-block");
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.nspawn.try_wait().ok().flatten().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if self.nspawn.try_wait().ok().flatten().is_none() {
            // Killing the container's PID 1 kills everything in it.
            if self.pid1 != 0 {
                let _ = Command::new("kill")
                    .args(["-KILL", &self.pid1.to_string()])
                    .status();
            }
            let _ = self.nspawn.kill();
            let _ = self.nspawn.wait();
        }
        let status = Command::new("umount").arg(&self.root).status();
        if !status.is_ok_and(|s| s.success()) {
            let _ = Command::new("umount").arg("-l").arg(&self.root).status();
        }
    }
}

/// One request to the container's hookbox on 127.0.0.1:8080 (the
/// package's default `--listen`); call from [`Container::in_network`].
fn call(method: &str, path: &str, token: Option<&str>, body: Option<&Value>) -> util::Response {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    head.push_str("\r\n");
    let mut stream = TcpStream::connect("127.0.0.1:8080")
        .unwrap_or_else(|e| panic!("{method} {path}: connect to 127.0.0.1:8080: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body.as_bytes()).unwrap();
    util::read_response(&mut BufReader::new(stream)).unwrap()
}

fn healthy() {
    let r = call("GET", "/healthz", None, None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], "ok", "{}", r.text());
}

/// The exposure `systemd-analyze security` gives a unit of the booted system.
fn exposure(c: &Container, unit: &str) -> f64 {
    let text = c.ok(&format!("systemd-analyze security --no-pager {unit}"));
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure level for {unit}:\n{text}"));
    line.split(':')
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unreadable exposure line {line:?}"))
}

/// Holds SQLite's write lock on the container's database from the test
/// process, as a stuck writer would see it, until dropped.
struct WriteLock(rusqlite::Connection);

impl WriteLock {
    fn take(c: &Container) -> WriteLock {
        let db = rusqlite::Connection::open(c.path("/var/lib/private/hookbox/hookbox.db")).unwrap();
        db.busy_timeout(Duration::from_secs(10)).unwrap();
        db.execute_batch("BEGIN IMMEDIATE").unwrap();
        WriteLock(db)
    }
}

impl Drop for WriteLock {
    fn drop(&mut self) {
        let _ = self.0.execute_batch("ROLLBACK");
    }
}

/// Fails if `check` turns false within `window` (a window observed, not a
/// wait: the condition must hold all along).
fn holds_for(window: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let end = Instant::now() + window;
    while Instant::now() < end {
        assert!(check(), "{what} stopped holding within {window:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn admin_token(c: &Container) -> String {
    fs::read_to_string(c.path("/var/lib/private/hookbox/hookbox.db.admin-token"))
        .expect("the admin token file")
        .trim()
        .to_owned()
}

#[test]
#[ignore = "needs root, systemd-nspawn and a Debian root with the package: bash .ci/debian"]
fn the_package_installs_runs_under_systemd_and_purges() {
    let c = Container::boot();
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));

    // Install: the files where Debian puts them, nothing started but the timer.
    c.ok("dpkg -i /srv/hookbox.deb");
    let version = c.installed_version();
    assert_eq!(
        version,
        format!("install ok installed {}-1", env!("CARGO_PKG_VERSION"))
    );
    for unit in [
        "hookbox.service",
        "hookbox-backup.service",
        "hookbox-backup.timer",
    ] {
        assert_eq!(
            fs::read_to_string(c.path(&format!("/usr/lib/systemd/system/{unit}"))).unwrap(),
            fs::read_to_string(manifest.join("systemd").join(unit)).unwrap(),
            "the package's {unit} is not this checkout's: run {IGNORED} again"
        );
    }
    let env = c.path("/etc/hookbox/hookbox.env");
    assert_eq!(
        fs::read_to_string(&env).unwrap(),
        fs::read_to_string(manifest.join("systemd/hookbox.env")).unwrap()
    );
    let meta = fs::metadata(&env).unwrap();
    assert_eq!((meta.mode() & 0o7777, meta.uid()), (0o600, 0));
    assert!(
        c.ok("dpkg-query -W -f='${Conffiles}' hookbox")
            .contains("/etc/hookbox/hookbox.env"),
        "hookbox.env is not a conffile"
    );
    assert_eq!(
        c.ok("systemctl is-enabled hookbox || true").trim(),
        "disabled"
    );
    assert_eq!(c.show("hookbox", "ActiveState"), "inactive");
    assert_eq!(
        c.ok("systemctl is-enabled hookbox-backup.timer").trim(),
        "enabled"
    );
    assert_eq!(c.show("hookbox-backup.timer", "ActiveState"), "active");
    assert_eq!(c.show("hookbox-backup.service", "ActiveState"), "inactive");

    // `systemctl enable --now` returns once the unit is active, which for
    // Type=notify is once hookbox sent READY=1.
    c.ok("systemctl enable --now hookbox");
    assert_eq!(c.show("hookbox", "Type"), "notify");
    assert_eq!(c.show("hookbox", "NotifyAccess"), "main");
    assert_eq!(c.show("hookbox", "SubState"), "running");
    assert_eq!(c.show("hookbox", "WatchdogUSec"), "30s");
    let pid = c.active_pid("", "hookbox to be active");
    assert!(
        c.lines_of(&pid)
            .contains("listening on http://127.0.0.1:8080"),
        "{}",
        c.lines_of(&pid)
    );

    // The state directory: systemd's symlink to /var/lib/private, owned by
    // the dynamic user, the token file 0600.
    assert_eq!(
        fs::read_link(c.path("/var/lib/hookbox")).unwrap(),
        Path::new("private/hookbox")
    );
    let uid: u32 = c.show("hookbox", "UID").parse().unwrap();
    assert!(
        (61184..=65519).contains(&uid),
        "UID {uid} is not a dynamic user's"
    );
    let state = fs::metadata(c.path("/var/lib/private/hookbox")).unwrap();
    assert_eq!((state.uid(), state.mode() & 0o7777), (uid, 0o700));
    let token_file =
        fs::metadata(c.path("/var/lib/private/hookbox/hookbox.db.admin-token")).unwrap();
    assert_eq!((token_file.uid(), token_file.mode() & 0o7777), (uid, 0o600));
    let token = admin_token(&c);
    assert!(
        !c.journal("hookbox").contains(&token),
        "the admin token is in the journal"
    );

    let webhook = c.in_network(|| {
        healthy();
        let r = call(
            "POST",
            "/api/v1/webhooks",
            Some(&token),
            Some(&json!({"url": "https://93.184.216.34/hook", "events": ["*"], "enabled": false})),
        );
        assert_eq!(r.status, 201, "{}", r.text());
        let r = call(
            "POST",
            "/api/v1/events",
            Some(&token),
            Some(&json!({"event": "item.sold", "data": util::seed("item.sold")})),
        );
        assert_eq!(r.status, 202, "{}", r.text());

        // READY=1 gates `active`: with the database's write lock held
        // (taken after a clean stop), a starting hookbox cannot open its
        // store, so it does not say it is ready, and systemd holds the
        // unit in `activating`.
        c.ok("systemctl stop hookbox");
        let lock = WriteLock::take(&c);
        c.ok("systemctl start --no-block hookbox");
        let starting = c.wait_for(Duration::from_secs(10), "the restart to begin", || {
            let pid = c.show("hookbox", "MainPID");
            (c.show("hookbox", "ActiveState") == "activating" && pid != "0" && !pid.is_empty())
                .then_some(pid)
        });
        holds_for(Duration::from_secs(1), "activating while not ready", || {
            c.show("hookbox", "ActiveState") == "activating"
        });
        assert!(!c.lines_of(&starting).contains("listening on"));
        drop(lock);
        let pid = c.active_pid(&pid, "hookbox to be active once the lock is gone");
        assert_eq!(pid, starting);
        assert!(c.lines_of(&pid).contains("listening on http://127.0.0.1:8080"));
        healthy();

        // kill -9 of the main process: systemd starts a new one.
        c.ok("systemctl reset-failed hookbox");
        let restarts: u32 = c.show("hookbox", "NRestarts").parse().unwrap();
        c.ok(&format!("kill -9 {pid}"));
        let new = c.active_pid(&pid, "a new hookbox after kill -9");
        assert_eq!(
            c.show("hookbox", "NRestarts"),
            (restarts + 1).to_string()
        );
        assert!(c.journal("hookbox").contains("status=9/KILL"));
        healthy();

        // The watchdog, shortened to 2 s by a drop-in for the test: pinged
        // while the writer commits (no restart over several intervals),
        // and the service restarted when the writer is stuck behind a lock.
        let dropin = c.path("/etc/systemd/system/hookbox.service.d/test-watchdog.conf");
        fs::create_dir_all(dropin.parent().unwrap()).unwrap();
        fs::write(&dropin, "[Service]\nWatchdogSec=2s\n").unwrap();
        c.ok("systemctl daemon-reload && systemctl reset-failed hookbox && systemctl restart hookbox");
        assert_eq!(c.show("hookbox", "WatchdogUSec"), "2s");
        let pid = c.active_pid(&new, "hookbox with the short watchdog");
        assert!(
            c.lines_of(&pid).contains("systemd watchdog: pinging every 1000 ms"),
            "{}",
            c.lines_of(&pid)
        );
        let restarts = c.show("hookbox", "NRestarts");
        holds_for(Duration::from_secs(5), "the pinged service running", || {
            c.show("hookbox", "MainPID") == pid && c.show("hookbox", "NRestarts") == restarts
        });
        let lock = WriteLock::take(&c);
        c.wait_for(Duration::from_secs(15), "a watchdog timeout", || {
            c.journal("hookbox").contains("Watchdog timeout").then_some(())
        });
        drop(lock);
        let after = c.active_pid(&pid, "hookbox restarted after the watchdog timeout");
        assert_ne!(c.show("hookbox", "NRestarts"), restarts);
        assert!(c.journal("hookbox").contains("Failed with result 'watchdog'"));
        healthy();
        fs::remove_file(&dropin).unwrap();
        c.ok("systemctl daemon-reload && systemctl reset-failed hookbox && systemctl restart hookbox");
        assert_eq!(c.show("hookbox", "WatchdogUSec"), "30s");
        c.active_pid(&after, "hookbox with the package's watchdog");
        healthy();
        only_webhook_id(&call("GET", "/api/v1/webhooks", Some(&token), None))
    });

    // The backup service: one copy that `hookbox check` passes, holding
    // the webhook made above.
    c.ok("systemctl start hookbox-backup");
    assert_eq!(c.show("hookbox-backup", "Result"), "success");
    let backups: Vec<PathBuf> = fs::read_dir(c.path("/var/lib/private/hookbox/backups"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(backups.len(), 1, "{backups:?}");
    let copy_dir = tempfile::tempdir().unwrap();
    let copy = copy_dir.path().join("copy.db");
    fs::copy(&backups[0], &copy).unwrap();
    let check = Command::new(util::BIN)
        .args(["check", "--db"])
        .arg(&copy)
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");
    let held: String = rusqlite::Connection::open(&copy)
        .unwrap()
        .query_row("SELECT id FROM webhooks", [], |row| row.get(0))
        .unwrap();
    assert_eq!(held, webhook);

    // Rated on the booted system, not offline.
    for unit in ["hookbox.service", "hookbox-backup.service"] {
        let level = exposure(&c, unit);
        assert!(level <= 2.0, "{unit}: exposure {level} > 2.0");
    }

    // A clean stop: SIGTERM handled, exit status 0, nothing killed.
    let pid = c.show("hookbox", "MainPID");
    c.ok("systemctl stop hookbox");
    assert_eq!(c.show("hookbox", "ActiveState"), "inactive");
    assert_eq!(c.show("hookbox", "Result"), "success");
    assert_eq!(c.show("hookbox", "ExecMainCode"), "1", "not an exit");
    assert_eq!(c.show("hookbox", "ExecMainStatus"), "0");
    assert!(c.lines_of(&pid).contains("stopped"), "{}", c.lines_of(&pid));
    let journal = c.journal("hookbox");
    let last_stop = &journal[journal.rfind("Stopping hookbox.service").unwrap()..];
    assert!(
        !last_stop.contains("SIGKILL") && !last_stop.contains("timed out"),
        "{last_stop}"
    );

    // remove: the program goes, the database and the settings stay, the
    // units are masked.
    c.ok("dpkg -r hookbox");
    assert!(!c.path("/usr/bin/hookbox").exists());
    assert!(c.path("/var/lib/private/hookbox/hookbox.db").exists());
    assert!(c.path("/var/lib/private/hookbox/backups").exists());
    assert!(c.path("/etc/hookbox/hookbox.env").exists());
    assert_eq!(
        c.ok("systemctl is-enabled hookbox-backup.timer || true")
            .trim(),
        "masked"
    );

    // purge: the database, its backups and the settings go, as README says.
    c.ok("dpkg -P hookbox");
    for gone in [
        "/var/lib/private/hookbox",
        "/var/lib/hookbox",
        "/etc/hookbox",
    ] {
        assert!(
            fs::symlink_metadata(c.path(gone)).is_err(),
            "{gone} is still there after purge"
        );
    }
    assert!(c.path("/var/lib/private").exists());
    for unit in ["hookbox.service", "hookbox-backup.timer"] {
        assert!(
            fs::symlink_metadata(c.path(&format!("/etc/systemd/system/{unit}"))).is_err(),
            "{unit} is still masked after purge"
        );
    }
    assert!(
        !c.sh("dpkg-query -W hookbox").status.success(),
        "dpkg still knows hookbox after purge"
    );
}

/// The id of the only webhook in a list answer.
fn only_webhook_id(r: &util::Response) -> String {
    assert_eq!(r.status, 200, "{}", r.text());
    let list = r.json();
    let data = list["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "{list}");
    data[0]["id"].as_str().unwrap().to_owned()
}

#[test]
#[ignore = "needs root, systemd-nspawn and a Debian root with the package: bash .ci/debian"]
fn an_upgrade_migrates_the_older_packages_database_and_keeps_the_conffile_edit() {
    let c = Container::boot();
    c.ok("dpkg -i /srv/hookbox-old.deb");
    let old_version = c.installed_version();
    let new_version = c
        .ok("dpkg-deb -f /srv/hookbox.deb Version")
        .trim()
        .to_owned();
    let old = old_version.rsplit(' ').next().unwrap().to_owned();
    c.ok(&format!("dpkg --compare-versions {old} lt {new_version}"));

    // The admin's edit of the conffile: receivers on this machine.
    let env = c.path("/etc/hookbox/hookbox.env");
    let mut edited = fs::read_to_string(&env).unwrap();
    edited.push_str(
        "\n# Edited by the admin: receivers on this machine.\nHOOKBOX_ALLOW_TARGETS=127.0.0.1/32\n",
    );
    fs::write(&env, &edited).unwrap();

    c.ok("systemctl enable --now hookbox");
    let old_pid = c.active_pid("", "the older hookbox to be active");
    let old_lines = c.lines_of(&old_pid);
    assert!(
        old_lines.contains("migrated to version 3") && !old_lines.contains("version 4"),
        "the older package should make a schema 3 database:\n{old_lines}"
    );
    let token = admin_token(&c);

    c.in_network(|| {
        let receiver = Receiver::start(|_, _| Answer::ok());
        // Data made by the older package: a webhook (disabled, so its
        // deliveries are held for after the upgrade) and five events.
        let r = call(
            "POST",
            "/api/v1/webhooks",
            Some(&token),
            Some(&json!({"url": receiver.url("/hook"), "events": ["*"], "enabled": false})),
        );
        assert_eq!(r.status, 201, "{}", r.text());
        let webhook = r.json();
        let (id, secret) = (
            webhook["id"].as_str().unwrap().to_owned(),
            webhook["secret"].as_str().unwrap().to_owned(),
        );
        let mut events = Vec::new();
        for (name, data) in util::seed_examples() {
            let r = call(
                "POST",
                "/api/v1/events",
                Some(&token),
                Some(&json!({"event": name, "data": data})),
            );
            assert_eq!(r.status, 202, "{}", r.text());
            events.push(r.json()["id"].as_str().unwrap().to_owned());
        }

        // The upgrade: dpkg restarts the running service on the new binary,
        // which migrates the database; the conffile edit is kept.
        c.ok("dpkg -i /srv/hookbox.deb");
        assert_eq!(
            c.installed_version(),
            format!("install ok installed {new_version}")
        );
        let new_pid = c.active_pid(&old_pid, "the upgraded hookbox to be active");
        let new_lines = c.lines_of(&new_pid);
        assert!(
            new_lines.contains("database schema migrated to version 4")
                && new_lines.contains("database schema migrated to version 5")
                && new_lines.contains("database schema migrated to version 6")
                && new_lines.contains("database schema migrated to version 7")
                && new_lines.contains("database schema migrated to version 8")
                && !new_lines.contains("version 3"),
            "{new_lines}"
        );
        assert_eq!(fs::read_to_string(&env).unwrap(), edited);
        assert_eq!(
            fs::metadata(&env).unwrap().permissions().mode() & 0o7777,
            0o600
        );
        for leftover in [
            "hookbox.env.dpkg-dist",
            "hookbox.env.dpkg-new",
            "hookbox.env.dpkg-old",
        ] {
            assert!(
                !c.path("/etc/hookbox").join(leftover).exists(),
                "{leftover}"
            );
        }

        // Everything is still there, and deliverable.
        let r = call("GET", "/api/v1/events?limit=500", Some(&token), None);
        assert_eq!(r.status, 200, "{}", r.text());
        let mut listed: Vec<String> = r.json()["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .collect();
        listed.sort();
        let mut published = events.clone();
        published.sort();
        assert_eq!(listed, published);
        let r = call(
            "PATCH",
            &format!("/api/v1/webhooks/{id}"),
            Some(&token),
            Some(&json!({"enabled": true})),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        c.wait_for(Duration::from_secs(30), "the held deliveries", || {
            (receiver.count() >= events.len()).then_some(())
        });
        let mut delivered: Vec<String> = receiver
            .requests()
            .iter()
            .map(|seen| {
                util::receiver::verify(&secret, seen).unwrap();
                seen.webhook_id().to_owned()
            })
            .collect();
        delivered.sort();
        delivered.dedup();
        assert_eq!(delivered, published);
    });

    // The backup service checks the migrated database: schema version 8.
    c.ok("systemctl start hookbox-backup");
    let backup = c.journal("hookbox-backup");
    assert!(backup.contains("schema version 8"), "{backup}");
}
