//! A real PostgreSQL for the tests (no mocks): `ESIM_NOTIFY_TEST_DATABASE_URL`
//! when set (CI and the dev machine: `postgres://root@127.0.0.1:5432/test`),
//! else a server started once per test process from the installed binaries
//! (`initdb` + `postgres` in a temp dir, on a unix socket, `fsync=off`; as
//! the `postgres` user when run as root), else the PostgreSQL tests skip
//! with one line on stderr, or fail when `ESIM_NOTIFY_REQUIRE_POSTGRES=1`
//! (CI sets it, so CI fails if they did not run).
//!
//! Each test gets a database of its own (`CREATE DATABASE t_<random>`),
//! dropped when its [`TestDb`] is.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub const DATABASE_URL: &str = "ESIM_NOTIFY_TEST_DATABASE_URL";
pub const REQUIRE: &str = "ESIM_NOTIFY_REQUIRE_POSTGRES";

/// How to reach the server: a URL for a database name.
#[derive(Clone)]
enum Server {
    /// A URL; its database part is replaced.
    Url(String),
    /// The server this process started: its socket directory and port.
    Local { socket: PathBuf, port: u16 },
}

impl Server {
    fn url(&self, db: &str) -> String {
        match self {
            Server::Url(url) => {
                let (base, query) = match url.split_once('?') {
                    Some((b, q)) => (b, format!("?{q}")),
                    None => (url.as_str(), String::new()),
                };
                let rest = base
                    .strip_prefix("postgres://")
                    .or_else(|| base.strip_prefix("postgresql://"))
                    .expect("ESIM_NOTIFY_TEST_DATABASE_URL is a postgres:// URL");
                let authority = rest.split('/').next().unwrap_or(rest);
                format!("postgres://{authority}/{db}{query}")
            }
            Server::Local { socket, port } => format!(
                "host={} port={port} user=postgres dbname={db}",
                socket.display()
            ),
        }
    }
}

/// The server, found or started once per process.
fn server() -> Option<Server> {
    static SERVER: OnceLock<Option<Server>> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            if let Ok(url) = std::env::var(DATABASE_URL) {
                if !url.trim().is_empty() {
                    return Some(Server::Url(url));
                }
            }
            match start_local() {
                Ok(s) => Some(s),
                Err(why) => {
                    if std::env::var(REQUIRE).is_ok_and(|v| v == "1") {
                        panic!("{REQUIRE}=1 and no PostgreSQL: {why}");
                    }
                    eprintln!("skipping the PostgreSQL tests: {why} (set {DATABASE_URL})");
                    None
                }
            }
        })
        .clone()
}

/// Runs `work` with a connection of its own, on a thread of its own
/// (callers may be inside a runtime).
fn on_own_connection<R, F, Fut>(url: &str, work: F) -> Result<R, String>
where
    R: Send + 'static,
    F: FnOnce(tokio_postgres::Client) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<R, String>>,
{
    let url = url.to_string();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            work(client).await
        })
    })
    .join()
    .unwrap()
}

/// Runs SQL on a connection of its own.
pub fn admin(url: &str, sql: &str) -> Result<(), String> {
    let sql = sql.to_string();
    on_own_connection(url, |client| async move {
        client.batch_execute(&sql).await.map_err(|e| e.to_string())
    })
}

/// The first column of the first row of `sql`, as a number (`::bigint`).
pub fn query_i64(url: &str, sql: &str) -> i64 {
    let sql = sql.to_string();
    on_own_connection(url, |client| async move {
        let row = client
            .query_one(&sql, &[])
            .await
            .map_err(|e| e.to_string())?;
        Ok(row.get::<_, i64>(0))
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

/// The newest installed PostgreSQL's `bin` directory.
fn installed_bin() -> Result<PathBuf, String> {
    std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| "no PostgreSQL installed (/usr/lib/postgresql)".to_string())?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").exists() && b.join("postgres").exists())
        .max()
        .ok_or_else(|| "no initdb under /usr/lib/postgresql/*/bin".to_string())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// `program`, as the `postgres` user when this runs as root (PostgreSQL
/// refuses to run as root).
fn as_pg(program: PathBuf) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// A temp dir the server's user owns, with a fresh cluster in `data/`.
fn init_cluster(bin: &std::path::Path) -> Result<PathBuf, String> {
    let dir = tempfile::Builder::new()
        .prefix("esim-notify-pg")
        .tempdir()
        .map_err(|e| e.to_string())?
        .keep();
    if is_root() {
        Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status()
            .map_err(|e| e.to_string())?;
    }
    let out = as_pg(bin.join("initdb"))
        .args(["-U", "postgres", "-A", "trust", "-D"])
        .arg(dir.join("data"))
        .output()
        .map_err(|e| format!("initdb: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(dir)
}

/// Starts a throwaway server from `/usr/lib/postgresql/*/bin`. It lives as
/// long as this process: a shell watches the test process's pipe on its
/// stdin and stops the server when it closes (the process ended).
fn start_local() -> Result<Server, String> {
    let bin = installed_bin()?;
    let dir = init_cluster(&bin)?;
    let root = is_root();
    let data = dir.join("data");
    let port = 20000 + (std::process::id() % 20000) as u16;
    let server = format!(
        "{} -D {} -k {} -p {port} -c listen_addresses= -c fsync=off -c synchronous_commit=on -c full_page_writes=off",
        bin.join("postgres").display(),
        data.display(),
        dir.display()
    );
    let watch = format!(
        "{server} >{d}/log 2>&1 & pid=$!; read _; kill $pid; wait $pid; rm -rf {d}",
        d = dir.display()
    );
    let mut sh = if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", "sh", "-c", &watch]);
        c
    } else {
        let mut c = Command::new("sh");
        c.args(["-c", &watch]);
        c
    };
    let child = sh
        .stdin(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting postgres: {e}"))?;
    // Kept (never dropped) so that its stdin closes only when the process ends.
    static KEEP: OnceLock<Mutex<Child>> = OnceLock::new();
    let _ = KEEP.set(Mutex::new(child));
    let s = Server::Local { socket: dir, port };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match admin(&s.url("postgres"), "SELECT 1") {
            Ok(()) => return Ok(s),
            Err(e) if Instant::now() > deadline => {
                return Err(format!("the started postgres does not answer: {e}"))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// A database of its own for one test, dropped with this.
pub struct TestDb {
    pub url: String,
    name: String,
    server: Server,
}

/// A fresh database, or `None` when no PostgreSQL is there (the skip line
/// was printed; with `ESIM_NOTIFY_REQUIRE_POSTGRES=1` this panics instead).
pub fn test_db() -> Option<TestDb> {
    let server = server()?;
    let name = format!("t_{:016x}", rand::random::<u64>());
    let maintenance = match &server {
        Server::Url(u) => u.clone(),
        Server::Local { .. } => server.url("postgres"),
    };
    admin(&maintenance, &format!("CREATE DATABASE {name}")).expect("CREATE DATABASE");
    Some(TestDb {
        url: server.url(&name),
        name,
        server,
    })
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let maintenance = match &self.server {
            Server::Url(u) => u.clone(),
            Server::Local { .. } => self.server.url("postgres"),
        };
        if let Err(e) = admin(
            &maintenance,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        ) {
            let _ = writeln!(std::io::stderr(), "dropping {}: {e}", self.name);
        }
    }
}

/// A server of one test's own on a TCP port of 127.0.0.1, which the test
/// stops and starts again (the database down) or starts with TLS. Needs
/// the installed binaries, whatever `ESIM_NOTIFY_TEST_DATABASE_URL` says
/// (that server is shared and must stay up).
pub struct OwnServer {
    bin: PathBuf,
    /// The cluster's temp dir (`data/`, `log`, certificates).
    pub dir: PathBuf,
    pub port: u16,
    /// `-c name=value` settings given at each start.
    settings: Vec<String>,
}

impl OwnServer {
    /// A new cluster, started with `settings`; `None` (and one line on
    /// stderr) when PostgreSQL is not installed, a panic instead under
    /// `ESIM_NOTIFY_REQUIRE_POSTGRES=1`. `prepare` runs on the temp dir
    /// before the first start (to write certificates into it).
    pub fn start(settings: &[&str], prepare: impl FnOnce(&std::path::Path)) -> Option<OwnServer> {
        let made = installed_bin().and_then(|bin| Ok((init_cluster(&bin)?, bin)));
        let (dir, bin) = match made {
            Ok(made) => made,
            Err(why) => {
                if std::env::var(REQUIRE).is_ok_and(|v| v == "1") {
                    panic!("{REQUIRE}=1 and no PostgreSQL binaries for a server of the test's own: {why}");
                }
                eprintln!("skipping: this test starts its own PostgreSQL and cannot: {why}");
                return None;
            }
        };
        prepare(&dir);
        if is_root() {
            Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .unwrap();
        }
        let server = OwnServer {
            bin,
            dir,
            port: crate::smtp::free_port(),
            settings: settings.iter().map(|s| s.to_string()).collect(),
        };
        server.up();
        Some(server)
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres` with `params` (e.g.
    /// `sslmode=require`) as its query.
    pub fn url(&self, params: &str) -> String {
        let q = if params.is_empty() {
            String::new()
        } else {
            format!("?{params}")
        };
        format!("postgres://postgres@127.0.0.1:{}/postgres{q}", self.port)
    }

    fn pg_ctl(&self, args: &[&str]) -> std::process::Output {
        as_pg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Starts the server and waits until it accepts connections.
    pub fn up(&self) {
        let mut opts = format!(
            "-k {} -p {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=on",
            self.dir.display(),
            self.port
        );
        for s in &self.settings {
            opts.push_str(&format!(" -c {s}"));
        }
        let log = self.dir.join("log");
        let out = self.pg_ctl(&[
            "-w",
            "-t",
            "30",
            "-l",
            log.to_str().unwrap(),
            "-o",
            &opts,
            "start",
        ]);
        assert!(
            out.status.success(),
            "pg_ctl start: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Stops the server the way an operator's restart does (`-m fast`: the
    /// open sessions are ended, their transactions rolled back).
    pub fn down(&self) {
        let out = self.pg_ctl(&["-w", "-t", "30", "-m", "fast", "stop"]);
        assert!(
            out.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["-w", "-m", "immediate", "stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
