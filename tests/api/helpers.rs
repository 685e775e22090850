//! The one way tests start esim-notify: the real `Application` on
//! 127.0.0.1:0 with a store of its own and a real SMTP server on a
//! loopback port (like zero2prod's `spawn_app`).
//!
//! The store's backend comes from `ESIM_NOTIFY_TEST_BACKEND`: `sled` (the
//! default: a directory in the test's temp dir) or `postgres` (a database of
//! its own per store path, through `pg.rs`), so the whole suite runs, the
//! same, on both. A test of something only sled has (its files, its lock,
//! its fsyncs) starts with `if sled_only("why") { return; }`.

pub use crate::smtp::{self, free_port, free_ports};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use std::sync::Arc;

use esim_notify::config::Config;
use esim_notify::dispatch::DispatchHandle;
use esim_notify::engine::Engine;
use esim_notify::startup::Application;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

pub const TEMPLATES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/templates");

/// A running application and what it talks to.
pub struct TestApp {
    pub public: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    pub smtp_port: u16,
    pub smtp: smtp::Mailin,
    pub http: reqwest::Client,
    pub config: Config,
    pub reload: mpsc::UnboundedSender<()>,
    /// The application's engine, to read what it recorded.
    pub engine: Arc<Engine>,
    /// The application's dispatcher (pause, transport state).
    pub dispatch: DispatchHandle,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    extra: String,
}

/// The environment variable naming the backend the suite runs on.
pub const TEST_BACKEND: &str = "ESIM_NOTIFY_TEST_BACKEND";

/// Whether this run's stores are PostgreSQL databases (see the module doc).
pub fn on_postgres() -> bool {
    match std::env::var(TEST_BACKEND).as_deref() {
        Ok("postgres") => true,
        Ok("sled") | Ok("") | Err(_) => false,
        Ok(other) => panic!("{TEST_BACKEND}={other:?}: expected \"sled\" or \"postgres\""),
    }
}

/// True (and one line on stderr) when the suite runs on PostgreSQL and the
/// calling test is about sled itself (`why`): it then returns at once.
pub fn sled_only(why: &str) -> bool {
    if on_postgres() {
        eprintln!("skipped on postgres: {why}");
        return true;
    }
    false
}

/// The database standing for each sled store path of this process, made at
/// the first config that names the path, so a restart (or the binary, or a
/// CLI command) on the same directory finds the same data. A database is
/// dropped once its directory is gone (the test that owned it ended): swept
/// each time a new one is made, and the rest when the server goes.
static DATABASES: std::sync::Mutex<Vec<(PathBuf, crate::pg::TestDb)>> =
    std::sync::Mutex::new(Vec::new());

/// The URL of the database standing for the store at `path` (postgres runs).
pub fn database_for(path: &Path) -> String {
    let mut dbs = DATABASES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, db)) = dbs.iter().find(|(p, _)| p == path) {
        return db.url.clone();
    }
    dbs.retain(|(p, _)| p.parent().is_some_and(|d| d.exists()));
    let db = crate::pg::test_db().unwrap_or_else(|| {
        panic!("{TEST_BACKEND}=postgres and no PostgreSQL (see tests/api/pg.rs)")
    });
    let url = db.url.clone();
    dbs.push((path.to_path_buf(), db));
    url
}

/// The `[store]` keys of a test config whose sled store would be at
/// `path`: that path, and on postgres runs the backend and its database.
pub fn store_keys(path: &Path) -> String {
    let mut keys = format!("path = {:?}\ncache_mb = 16\n", path.display().to_string());
    if on_postgres() {
        keys.push_str(&format!(
            "backend = \"postgres\"\nurl = {:?}\npool = 4\n",
            database_for(path)
        ));
    }
    keys
}

/// The test configuration: both listeners on free ports, the store in
/// `dir` (or its database: [`store_keys`]), SMTP without TLS to
/// `smtp_port`, limits lifted, short backoffs; `extra` (TOML) is merged over
/// it key by key. An `extra` that names `store.backend` itself gets no
/// database of ours.
pub fn test_config_toml(dir: &Path, smtp_port: u16, extra: &str) -> String {
    let extra_table: toml::Table = toml::from_str(extra).expect("extra test TOML parses");
    let own_backend = extra_table
        .get("store")
        .and_then(|s| s.get("backend"))
        .is_some();
    let store = if own_backend {
        format!(
            "path = {:?}\ncache_mb = 16\n",
            dir.join("data").display().to_string()
        )
    } else {
        store_keys(&dir.join("data"))
    };
    let base = format!(
        r#"
[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[store]
{store}
[email]
transport = "smtp"
from = "Example eSIM <noreply@example.com>"
reply_to = "support@example.com"
send_timeout = "5s"
file_dir = "{mail}"
[email.smtp]
host = "127.0.0.1"
port = {smtp_port}
tls = "none"
pool_size = 2
[rate_limit]
per_second = 1000
burst = 1000
per_recipient_per_hour = 0
[retry]
initial_backoff = "200ms"
max_backoff = "1s"
[templates]
dir = "{templates}"
"#,
        mail = dir.join("mail-out").display(),
        templates = TEMPLATES,
    );
    let mut table: toml::Table = toml::from_str(&base).unwrap();
    merge(&mut table, extra_table);
    toml::to_string(&table).unwrap()
}

fn merge(into: &mut toml::Table, from: toml::Table) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge(a, b),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

pub fn load_config(text: &str) -> Config {
    Config::from_sources(text, std::iter::empty()).expect("test config is valid")
}

/// Starts the app with a fresh SMTP server and store.
pub async fn spawn_app(extra_toml: &str) -> TestApp {
    let (port, shared) = smtp::mailin_server();
    spawn_app_with_smtp(extra_toml, port, shared).await
}

/// Starts the app against an SMTP port chosen by the test (e.g. one where
/// nothing listens yet, or a scripted server).
pub async fn spawn_app_with_smtp(extra_toml: &str, smtp_port: u16, smtp: smtp::Mailin) -> TestApp {
    spawn_app_in(tempfile::tempdir().unwrap(), extra_toml, smtp_port, smtp).await
}

/// Starts the app on an existing directory (and so an existing store).
pub async fn spawn_app_in(
    dir: tempfile::TempDir,
    extra_toml: &str,
    smtp_port: u16,
    smtp: smtp::Mailin,
) -> TestApp {
    let text = test_config_toml(dir.path(), smtp_port, extra_toml);
    let config_path = dir.path().join("config.toml");
    std::fs::write(&config_path, &text).unwrap();
    let config = load_config(&text);
    // A store just closed in this process may hold its lock a moment longer.
    let deadline = Instant::now() + Duration::from_secs(10);
    let app = loop {
        match Application::build_with_path(config.clone(), Some(config_path.clone())).await {
            Ok(app) => break app,
            Err(e) if Instant::now() < deadline && format!("{e:#}").contains("in use") => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("application does not start: {e:#}"),
        }
    };
    let (public, admin) = (app.public_addr(), app.admin_addr());
    let (engine, dispatch) = (app.engine(), app.dispatch());
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (reload_tx, reload_rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(app.run_until_stopped(
        async move {
            let _ = stop_rx.await;
        },
        reload_rx,
    ));
    TestApp {
        public,
        admin,
        dir,
        smtp_port,
        smtp,
        http: reqwest::Client::new(),
        config,
        reload: reload_tx,
        engine,
        dispatch,
        stop: Some(stop_tx),
        task: Some(task),
        extra: extra_toml.to_string(),
    }
}

impl TestApp {
    pub fn webhook_url(&self) -> String {
        format!("http://{}{}", self.public, self.config.server.webhook_path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    pub fn store_path(&self) -> PathBuf {
        self.config.store.path.clone()
    }

    /// Posts a webhook body; returns the status and the JSON answer.
    pub async fn post(&self, body: &str) -> (u16, Value) {
        self.post_to(&self.webhook_url(), body).await
    }

    pub async fn post_to(&self, url: &str, body: &str) -> (u16, Value) {
        let r = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("webhook request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Binds a recipient through the admin API.
    pub async fn bind(&self, binding: Value) -> (u16, Value) {
        let r = self
            .http
            .put(self.admin_url("/admin/customers"))
            .json(&binding)
            .send()
            .await
            .expect("admin request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// `method url` with a JSON body; returns the status and the JSON answer.
    pub async fn send_json(&self, method: reqwest::Method, url: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .request(method, url)
            .json(&body)
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get_json(&self, url: &str) -> (u16, Value) {
        let r = self.http.get(url).send().await.expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Messages the SMTP server accepted so far.
    pub fn received(&self) -> Vec<String> {
        self.smtp.received()
    }

    /// Stops gracefully and starts again on the same store and SMTP server.
    pub async fn restart(self) -> TestApp {
        let (extra, port, smtp) = (self.extra.clone(), self.smtp_port, self.smtp.clone());
        let dir = self.stop().await;
        spawn_app_in(dir, &extra, port, smtp).await
    }

    /// Stops gracefully, as SIGTERM would, and waits until it has.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("app task").expect("clean stop");
        }
        self.dir
    }
}

/// Polls `cond` every 20 ms until it holds or `limit` passes; returns whether it held.
pub async fn eventually<F, Fut>(limit: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A DATA_USAGE body for one eSIM with `remain` of `total` bytes left.
pub fn data_usage(notify_id: &str, tran: &str, iccid: &str, total: u64, remain: u64) -> String {
    serde_json::json!({
        "notifyType": "DATA_USAGE",
        "notifyId": notify_id,
        "eventGenerateTime": "2026-04-22T17:21:59Z",
        "content": {
            "iccid": iccid, "orderNo": format!("B{tran}"), "esimTranNo": tran,
            "transactionId": format!("tx-{tran}"),
            "totalVolume": total, "orderUsage": total - remain, "remain": remain,
            "lastUpdateTime": "2026-04-22T15:53:03Z"
        }
    })
    .to_string()
}

/// An ESIM_STATUS body.
pub fn esim_status(notify_id: &str, tran: &str, iccid: &str, status: &str) -> String {
    serde_json::json!({
        "notifyType": "ESIM_STATUS",
        "notifyId": notify_id,
        "eventGenerateTime": "2026-04-22T17:27:44Z",
        "content": {
            "iccid": iccid, "orderNo": format!("B{tran}"), "esimTranNo": tran,
            "transactionId": format!("tx-{tran}"),
            "esimStatus": status, "smdpStatus": "ENABLED"
        }
    })
    .to_string()
}

/// The value of one sample in `/metrics` (exact series name with labels).
pub async fn metric(app: &TestApp, series: &str) -> Option<f64> {
    let text = app
        .http
        .get(app.admin_url("/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find(|l| l.starts_with(series) && !l.starts_with('#'))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Copies a directory tree (e.g. the shipped templates, to edit them).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The built binary serving on fixed loopback ports, its stderr in a file
/// (a pipe nobody reads could fill and stall the server).
pub struct Binary {
    pub child: std::process::Child,
    pub public: u16,
    pub admin: u16,
    pub log: PathBuf,
}

impl Binary {
    /// `esim-notify serve` on `dir` (an existing store is reused), file
    /// transport, `extra` TOML merged over the test config; waits for /readyz.
    pub async fn serve(dir: &Path, extra: &str) -> Binary {
        Binary::start(dir, None, extra, &[]).await
    }

    /// The same, sending over SMTP to `smtp_port` on 127.0.0.1.
    pub async fn serve_smtp(dir: &Path, smtp_port: u16, extra: &str) -> Binary {
        Binary::start(dir, Some(smtp_port), extra, &[]).await
    }

    /// [`Binary::serve_smtp`] with environment variables set for the process
    /// (e.g. a test-only fault injection).
    pub async fn serve_smtp_env(
        dir: &Path,
        smtp_port: u16,
        extra: &str,
        env: &[(&str, &str)],
    ) -> Binary {
        Binary::start(dir, Some(smtp_port), extra, env).await
    }

    /// Waits a bounded time for the process to exit on its own.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    async fn start(
        dir: &Path,
        smtp_port: Option<u16>,
        extra: &str,
        env: &[(&str, &str)],
    ) -> Binary {
        let [public, admin] = free_ports();
        let transport = if smtp_port.is_some() { "smtp" } else { "file" };
        let ours = format!(
            "[server]\nlisten = \"127.0.0.1:{public}\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n[email]\ntransport = \"{transport}\"\n"
        );
        let mut table: toml::Table = toml::from_str(&ours).unwrap();
        merge(
            &mut table,
            toml::from_str(extra).expect("extra test TOML parses"),
        );
        let extra = toml::to_string(&table).unwrap();
        let config = dir.join("config.toml");
        std::fs::write(
            &config,
            test_config_toml(dir, smtp_port.unwrap_or(9), &extra),
        )
        .unwrap();
        let log = dir.join(format!("stderr-{public}.log"));
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_esim-notify"))
            .arg("--config")
            .arg(&config)
            .arg("serve")
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let http = reqwest::Client::new();
        let ready = until_ready(&http, public, Duration::from_secs(20)).await;
        assert!(
            ready,
            "server did not become ready:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        Binary {
            child,
            public,
            admin,
            log,
        }
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.admin, path)
    }

    /// Posts a webhook body; returns the status.
    pub async fn post(&self, body: &str) -> u16 {
        reqwest::Client::new()
            .post(self.webhook_url())
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("webhook request")
            .status()
            .as_u16()
    }

    /// Stops it as SIGTERM does and waits; whether it exited 0.
    pub fn terminate(mut self) -> bool {
        let pid = self.child.id().to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .is_ok_and(|s| s.success());
        sent && self.child.wait().is_ok_and(|s| s.success())
    }

    pub fn webhook_url(&self) -> String {
        format!("http://127.0.0.1:{}/webhooks/esimaccess", self.public)
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://127.0.0.1:{}/metrics", self.admin))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Kills it (every acknowledged write is already durable) and returns its stderr.
    pub fn kill(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::fs::read_to_string(&self.log).unwrap()
    }
}

/// A failed assertion must not leave the server running.
impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of one sample in a scraped text (exact series name with labels).
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.split(' ').next() == Some(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The built binary's command line on the config at `config`: its exit
/// code, stdout and stderr.
pub fn cli(config: &Path, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_esim-notify"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("the built binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Polls `/readyz` on the public port until it answers 200, a bounded time.
pub async fn until_ready(http: &reqwest::Client, public: u16, limit: Duration) -> bool {
    eventually(limit, || {
        let http = http.clone();
        async move {
            http.get(format!("http://127.0.0.1:{public}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        }
    })
    .await
}

/// The store at `path` (the test's own, or a copy), opened as the server
/// opens it. On postgres runs a path no sled store exists at is a test
/// config's store path, so its database (made now if no config named it
/// yet: a test may fill a store before it starts the server); a path that
/// holds files (a backup, which is a sled store on both backends) is sled.
pub fn open_storage(
    path: &Path,
) -> Result<Arc<dyn esim_notify::store::Storage>, esim_notify::store::StoreError> {
    if on_postgres() && !path.exists() {
        let url = database_for(path);
        return Ok(Arc::new(esim_notify::store::PgStorage::open(&url, 2)?));
    }
    Ok(Arc::new(open_sled(path, 16 << 20)?))
}

/// The sled store at `path`. sled lets go of its lock file a moment after
/// the last handle is dropped (its own threads hold the files briefly): a
/// test that drops a store and opens it again at once may find it still
/// locked, so a lock is waited out for a bounded time.
pub fn open_sled(
    path: &Path,
    cache_bytes: u64,
) -> Result<esim_notify::store::SledStorage, esim_notify::store::StoreError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match esim_notify::store::SledStorage::open(path, cache_bytes) {
            Err(esim_notify::store::StoreError::Locked(_)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            other => return other,
        }
    }
}

/// The engine over [`open_storage`]`(path)`; `dedup` is `store.delivery_dedup`.
pub fn open_engine(
    path: &Path,
    dedup: Duration,
) -> Result<esim_notify::engine::Engine, esim_notify::store::StoreError> {
    esim_notify::engine::Engine::new(open_storage(path)?, dedup)
}

/// Through the engine alone, at `at`: binds `<tran>@example.com` to the
/// eSIM `esimTranNo = tran` and ingests a DATA_USAGE at 10 % left, which
/// queues one notice; returns the eSIM's id and that notice.
pub fn queue_one(
    engine: &Engine,
    tran: &str,
    at: chrono::DateTime<chrono::Utc>,
) -> (
    esim_notify::engine::EsimId,
    esim_notify::engine::QueuedNotice,
) {
    use esim_notify::customers::Recipient;
    use esim_notify::engine::IngestOutcome;
    use esim_notify::event::{Event, Identifiers};

    let ids = Identifiers {
        esim_tran_no: Some(tran.to_string()),
        ..Identifiers::default()
    };
    let who = Recipient {
        email: format!("{}@example.com", tran.to_lowercase()),
        name: None,
        locale: None,
        timezone: None,
    };
    engine
        .bind(&who, &ids, Duration::from_secs(3600), at)
        .unwrap();
    let body = serde_json::json!({
        "notifyType": "DATA_USAGE", "notifyId": format!("q1-{tran}"),
        "content": {"esimTranNo": tran, "totalVolume": 1000, "orderUsage": 900, "remain": 100}
    });
    let event = Event::from_value(&body).unwrap();
    let rules = esim_notify::policy::Rules::default();
    match engine.ingest(&event, &body, &rules, at).unwrap() {
        IngestOutcome::Accepted {
            esim: Some(esim),
            mut queued,
            ..
        } if queued.len() == 1 => (esim, queued.remove(0)),
        other => panic!("{tran}: one notice queued, not {other:?}"),
    }
}
