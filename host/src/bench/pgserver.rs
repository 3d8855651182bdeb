//! A throwaway PostgreSQL server for benchmarks and tests: `initdb` into a
//! fresh temporary directory, `postgres` on 127.0.0.1 with a free port
//! (trust authentication, its socket in that directory), awaited until its
//! log says it accepts connections, and stopped (`pg_ctl stop -m
//! immediate`) and deleted on drop.
//!
//! `initdb` and `postgres` refuse to run as root: as root they run as the
//! `postgres` system user Debian's package creates (`setpriv`), with the
//! directory handed to it. The binaries are found in `PINCER_PG_BIN`, else
//! the newest `/usr/lib/postgresql/<version>/bin`, else on `PATH`. A
//! missing PostgreSQL is an error (tests fail, never skip).

use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use anyhow::{Context, bail};
use parking_lot::Mutex;

/// The superuser every scratch server has (trust authentication).
pub const USER: &str = "pincer";

/// A running scratch server.
pub struct PgServer {
    dir: PathBuf,
    bin: PathBuf,
    /// `Some((uid, gid))` when it runs as the `postgres` user.
    run_as: Option<(u32, u32)>,
    child: Option<Child>,
    port: u16,
    /// The `-c` settings it was started with (kept for a restart).
    settings: Vec<String>,
    /// The server's log so far (for errors).
    log: Arc<Mutex<String>>,
}

impl std::fmt::Debug for PgServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgServer")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl PgServer {
    /// Create and start a server with `settings` (`name=value` server
    /// settings, e.g. `fsync=off` for tests).
    pub fn start(settings: &[&str]) -> anyhow::Result<Self> {
        Self::start_with_files(settings, &[])
    }

    /// Create and start a server with TLS on: `cert_pem` and `key_pem` are
    /// its certificate (chain) and private key, written into its directory
    /// (readable by the server only) and named by `ssl_cert_file` and
    /// `ssl_key_file`.
    pub fn start_tls(settings: &[&str], cert_pem: &str, key_pem: &str) -> anyhow::Result<Self> {
        let mut all: Vec<&str> = settings.to_vec();
        all.extend([
            "ssl=on",
            "ssl_cert_file={dir}/server.crt",
            "ssl_key_file={dir}/server.key",
        ]);
        Self::start_with_files(
            &all,
            &[
                ("server.crt", cert_pem.as_bytes()),
                ("server.key", key_pem.as_bytes()),
            ],
        )
    }

    /// [`PgServer::start`] with `files` (name, bytes) written into the
    /// server's directory first (mode 0600, owned by the server's user);
    /// `{dir}` in a setting stands for that directory.
    fn start_with_files(settings: &[&str], files: &[(&str, &[u8])]) -> anyhow::Result<Self> {
        let bin = bin_dir()?;
        let dir = std::env::temp_dir().join(format!("pincer-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let run_as = if std::fs::metadata(&dir)?.uid() == 0 {
            let ids = postgres_user()?;
            std::os::unix::fs::chown(&dir, Some(ids.0), Some(ids.1))
                .with_context(|| format!("handing {} to the postgres user", dir.display()))?;
            Some(ids)
        } else {
            None
        };
        let mut server = PgServer {
            dir,
            bin,
            run_as,
            child: None,
            port: 0,
            settings: Vec::new(),
            log: Arc::default(),
        };
        let dir_text = server.dir.display().to_string();
        server.settings = settings
            .iter()
            .map(|s| s.replace("{dir}", &dir_text))
            .collect();
        for (name, bytes) in files {
            use std::os::unix::fs::PermissionsExt;
            let path = server.dir.join(name);
            std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
            if let Some((uid, gid)) = server.run_as {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                    .with_context(|| format!("handing {} to the postgres user", path.display()))?;
            }
        }
        let data = server.dir.join("data");
        let out = server
            .command("initdb")
            .arg("-D")
            .arg(&data)
            .args([
                "-A",
                "trust",
                "-U",
                USER,
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .output()
            .context("running initdb")?;
        if !out.status.success() {
            bail!(
                "initdb failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        server.port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        server.spawn()?;
        Ok(server)
    }

    /// Start `postgres` on the data directory and port, and wait until its
    /// log says it accepts connections.
    fn spawn(&mut self) -> anyhow::Result<()> {
        let data = self.dir.join("data");
        let mut cmd = self.command("postgres");
        cmd.arg("-D")
            .arg(&data)
            .args(["-p", &self.port.to_string(), "-h", "127.0.0.1", "-k"])
            .arg(&self.dir)
            .args([
                "-c",
                "max_connections=200",
                "-c",
                "log_min_messages=warning",
            ])
            .args(["-c", "log_min_error_statement=panic"]);
        for s in &self.settings {
            cmd.args(["-c", s]);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting postgres")?;
        let stderr = child.stderr.take().context("postgres stderr")?;
        self.child = Some(child);
        // Await the server's own "ready" line, then keep draining its log.
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let log = self.log.clone();
        std::thread::spawn(move || {
            let mut ready = Some(ready_tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("ready to accept connections")
                    && let Some(tx) = ready.take()
                {
                    let _ = tx.send(());
                }
                let mut log = log.lock();
                if log.len() < 1 << 20 {
                    log.push_str(&line);
                    log.push('\n');
                }
            }
        });
        if ready_rx.recv().is_err() {
            bail!(
                "postgres exited before accepting connections:\n{}",
                self.log.lock()
            );
        }
        Ok(())
    }

    /// Start the server again after [`PgServer::stop_immediate`], on the
    /// same port and data (recovering from its WAL).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        if self.child.is_none() {
            self.spawn()?;
        }
        Ok(())
    }

    /// The server's directory (its data in `data/`, its socket, its
    /// `postmaster.pid` in `data/`), deleted on drop.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `db` on this server.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{db}", self.port)
    }

    /// Create database `name` (letters, digits and `_` only) and return its
    /// URL.
    pub fn create_db(&self, name: &str) -> anyhow::Result<String> {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            bail!("bad database name {name:?}");
        }
        let url = self.url("postgres");
        let owned = name.to_owned();
        // The synchronous client may not run on an async worker thread.
        std::thread::spawn(move || -> anyhow::Result<()> {
            let mut client = postgres::Client::connect(&url, postgres::NoTls)?;
            client.batch_execute(&format!("CREATE DATABASE \"{owned}\""))?;
            Ok(())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("creating the database panicked"))??;
        Ok(self.url(name))
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        self.log.lock().clone()
    }

    /// Stop the server at once (as a crash would), keeping its files: a
    /// later [`PgServer::restart`] recovers from its WAL.
    pub fn stop_immediate(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let _ = self
            .command("pg_ctl")
            .arg("stop")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "-w"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if child.try_wait()?.is_none() {
            child.kill()?;
        }
        child.wait()?;
        Ok(())
    }

    /// A command running binary `name` of this PostgreSQL installation, as
    /// the `postgres` user when we are root.
    fn command(&self, name: &str) -> Command {
        let exe = self.bin.join(name);
        match self.run_as {
            Some((uid, gid)) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .arg("--clear-groups")
                    .arg(exe)
                    .current_dir(&self.dir);
                c
            }
            None => {
                let mut c = Command::new(exe);
                c.current_dir(&self.dir);
                c
            }
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = self.stop_immediate();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Where `initdb`, `postgres` and `pg_ctl` are.
fn bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("PINCER_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if Path::new(&dir).join("initdb").exists() && Path::new(&dir).join("postgres").exists()
            {
                return Ok(dir);
            }
        }
    }
    bail!(
        "PostgreSQL is not installed (no /usr/lib/postgresql/<version>/bin/initdb, none on PATH, \
         PINCER_PG_BIN unset): run tests/setup.sh, or apt-get install postgresql"
    )
}

/// The `postgres` system user's uid and gid.
fn postgres_user() -> anyhow::Result<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").context("reading /etc/passwd")?;
    for line in passwd.lines() {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.first() == Some(&"postgres") && fields.len() > 3 {
            return Ok((fields[2].parse()?, fields[3].parse()?));
        }
    }
    bail!(
        "running as root, but there is no `postgres` user to run PostgreSQL as \
         (Debian's postgresql package creates it)"
    )
}
