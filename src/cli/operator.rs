//! One way to operate the store, whoever holds it.
//!
//! sled allows one process per store. When the CLI can open it, it works on
//! it directly; when the running server holds the lock, the same operation
//! goes through the server's admin listener, so the server's dispatcher
//! learns about it at once. Each command is written once, against
//! [`Operator`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::api_keys::{self, KeyRequest, KeySummary, NewKey};
use crate::config::Config;
use crate::customers::{normalize_email, Binding, IdKind, Recipient};
use crate::engine::{DeadRetry, Engine, ForgetReport, SuppressReason, Suppression};
use crate::operator_views::{
    self as admin, BindSummary, DeadRow, OutboxRow, ParkedRow, RetryAnswer,
};
use crate::store::StoreError;

use super::{FAILED, USAGE};

/// Why an operation did not happen; decides the exit code.
#[derive(Debug)]
pub enum OpError {
    /// What was asked for does not exist (exit 1).
    NotFound(String),
    /// What was given is refused as it stands (a bad address...): bad usage (exit 2).
    Rejected(String),
    /// The store or the server failed (exit 1).
    Failed(String),
}

impl OpError {
    pub fn code(&self) -> u8 {
        match self {
            OpError::Rejected(_) => USAGE,
            OpError::NotFound(_) | OpError::Failed(_) => FAILED,
        }
    }
    pub fn message(&self) -> &str {
        match self {
            OpError::NotFound(m) | OpError::Rejected(m) | OpError::Failed(m) => m,
        }
    }
}

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

impl From<StoreError> for OpError {
    fn from(e: StoreError) -> Self {
        OpError::Failed(e.to_string())
    }
}

pub enum Operator {
    Local { store: Engine, park_for: Duration },
    Remote(Remote),
}

pub struct Remote {
    client: reqwest::Client,
    base: Url,
    token: String,
}

impl Operator {
    /// The store itself when it is free; the running server's admin API when
    /// the server holds it.
    ///
    /// PostgreSQL has no lock that says a server runs (any number of
    /// processes may open the database). A group's servers read their queue
    /// and pause from the database, but one on this VM still keeps its
    /// template cache and transport state, and its admin API logs the
    /// change as an operator's; so on PostgreSQL the CLI goes through the
    /// admin API whenever a server answers on `admin.listen`, and works on
    /// the database directly only when none does.
    pub fn connect(config: &Config) -> Result<Operator, OpError> {
        if config.store.backend == crate::config::StoreBackend::Postgres {
            let remote = Remote::new(config)?;
            if remote.answers() {
                return Ok(Operator::Remote(remote));
            }
        }
        match Engine::open(config) {
            Ok(store) => Ok(Operator::Local {
                store,
                park_for: config.customers.park_for.0,
            }),
            Err(StoreError::Locked(_)) => Remote::new(config).map(Operator::Remote),
            Err(e) => Err(OpError::Failed(e.to_string())),
        }
    }

    pub fn is_remote(&self) -> bool {
        matches!(self, Operator::Remote(_))
    }

    /// Makes local changes durable before the process exits.
    pub fn finish(self) -> Result<(), OpError> {
        match self {
            Operator::Local { store, .. } => Ok(store.flush()?),
            Operator::Remote(_) => Ok(()),
        }
    }

    /// Binds a recipient. Locally, released notices wait in the store's queue
    /// until a server starts.
    pub async fn bind(&self, binding: Binding) -> Result<BindSummary, OpError> {
        match self {
            Operator::Local { store, park_for } => {
                let (recipient, ids) = binding
                    .validate()
                    .map_err(|e| OpError::Rejected(e.to_string()))?;
                let report = store.bind(&recipient, &ids, *park_for, Utc::now())?;
                Ok(BindSummary::of(&report))
            }
            Operator::Remote(r) => {
                let body =
                    serde_json::to_value(&binding).map_err(|e| OpError::Failed(e.to_string()))?;
                r.json(Method::PUT, r.url(&["customers"]), Some(body)).await
            }
        }
    }

    pub async fn customer(&self, kind: IdKind, value: &str) -> Result<Recipient, OpError> {
        match self {
            Operator::Local { store, .. } => store.recipient_by(kind, value)?.ok_or_else(|| {
                OpError::NotFound(format!("no customer bound to {} {value}", kind.wire_name()))
            }),
            Operator::Remote(r) => r.json(Method::GET, r.customer_url(kind, value), None).await,
        }
    }

    pub async fn unbind(&self, kind: IdKind, value: &str) -> Result<(), OpError> {
        let found = match self {
            Operator::Local { store, .. } => store.unbind(kind, value)?,
            Operator::Remote(r) => {
                r.call(Method::DELETE, r.customer_url(kind, value), None)
                    .await?;
                true
            }
        };
        if found {
            Ok(())
        } else {
            Err(OpError::NotFound(format!(
                "no customer bound to {} {value}",
                kind.wire_name()
            )))
        }
    }

    pub async fn forget(&self, email: &str) -> Result<ForgetReport, OpError> {
        match self {
            Operator::Local { store, .. } => Ok(store.forget(email, Utc::now())?),
            Operator::Remote(r) => {
                r.json(
                    Method::POST,
                    r.url(&["customers", "forget"]),
                    Some(json!({ "email": email })),
                )
                .await
            }
        }
    }

    pub async fn suppress(
        &self,
        email: &str,
        reason: Option<&str>,
    ) -> Result<Suppression, OpError> {
        match self {
            Operator::Local { store, .. } => {
                let email = normalize_email(email).map_err(|e| OpError::Rejected(e.to_string()))?;
                // The same reading of `--reason` as `PUT /admin/suppressions`.
                let (reason, detail) = SuppressReason::classify(reason.unwrap_or("operator"));
                store.suppress(&email, reason, detail.as_deref(), Utc::now())?;
                store
                    .suppression(&email)?
                    .ok_or_else(|| OpError::Failed("the suppression was not written".into()))
            }
            Operator::Remote(r) => {
                let body = reason.map(|r| json!({ "reason": r }));
                r.json(Method::PUT, r.url(&["suppressions", email]), body)
                    .await
            }
        }
    }

    pub async fn unsuppress(&self, email: &str) -> Result<(), OpError> {
        let found = match self {
            Operator::Local { store, .. } => store.unsuppress(email)?,
            Operator::Remote(r) => {
                r.call(Method::DELETE, r.url(&["suppressions", email]), None)
                    .await?;
                true
            }
        };
        if found {
            Ok(())
        } else {
            Err(OpError::NotFound(format!("{email} is not suppressed")))
        }
    }

    pub async fn suppressions(&self) -> Result<Vec<Suppression>, OpError> {
        match self {
            Operator::Local { store, .. } => Ok(store.suppressions()?),
            Operator::Remote(r) => r.json(Method::GET, r.url(&["suppressions"]), None).await,
        }
    }

    pub async fn outbox(&self) -> Result<Vec<OutboxRow>, OpError> {
        match self {
            Operator::Local { store, .. } => Ok(admin::outbox_rows(store, store.paused()?)?),
            Operator::Remote(r) => r.json(Method::GET, r.url(&["outbox"]), None).await,
        }
    }

    pub async fn cancel(&self, id: u64) -> Result<(), OpError> {
        let found = match self {
            Operator::Local { store, .. } => store.cancel(id, Utc::now())?,
            Operator::Remote(r) => {
                r.call(Method::DELETE, r.url(&["outbox", &id.to_string()]), None)
                    .await?;
                true
            }
        };
        if found {
            Ok(())
        } else {
            Err(OpError::NotFound(format!("no queued notice {id}")))
        }
    }

    pub async fn dead(&self) -> Result<Vec<DeadRow>, OpError> {
        match self {
            Operator::Local { store, .. } => Ok(admin::dead_rows(store)?),
            Operator::Remote(r) => r.json(Method::GET, r.url(&["dead"]), None).await,
        }
    }

    /// The parked notices, with when each expires.
    pub async fn parked(&self) -> Result<Vec<ParkedRow>, OpError> {
        match self {
            Operator::Local { store, park_for } => Ok(admin::parked_rows(store, *park_for)?),
            Operator::Remote(r) => r.json(Method::GET, r.url(&["parked"]), None).await,
        }
    }

    /// Requeues one dead letter; answers the automatic suppression the retry
    /// lifted, if any. A suppression for any other reason is a failure
    /// (exit 1) that names it and the command that lifts it.
    pub async fn retry_dead(&self, id: u64) -> Result<Option<Suppression>, OpError> {
        match self {
            Operator::Local { store, .. } => match store.retry_dead(id, Utc::now())? {
                DeadRetry::Requeued { lifted, .. } => Ok(lifted),
                DeadRetry::Suppressed(s) => Err(OpError::Failed(admin::retry_refused(id, &s))),
                DeadRetry::NotFound => Err(OpError::NotFound(format!(
                    "no dead letter {id} (or its customer was forgotten)"
                ))),
            },
            Operator::Remote(r) => {
                let answer: RetryAnswer = r
                    .json(
                        Method::POST,
                        r.url(&["dead", &id.to_string(), "retry"]),
                        None,
                    )
                    .await?;
                Ok(answer.lifted_suppression)
            }
        }
    }

    pub async fn set_paused(&self, paused: bool) -> Result<(), OpError> {
        match self {
            Operator::Local { store, .. } => Ok(store.set_paused(paused)?),
            Operator::Remote(r) => {
                let what = if paused { "pause" } else { "resume" };
                r.call(Method::POST, r.url(&[what]), None).await.map(drop)
            }
        }
    }

    /// `dir` is resolved here, against the config file's directory as the
    /// config's own paths are (a running server's working directory is not
    /// the operator's). Every refusal is a reported failure (exit 1): the
    /// command was well formed, the target was not fit. Returns where the
    /// copy was written.
    pub async fn backup(
        &self,
        dir: &Path,
        base: Option<&Path>,
        config: &Config,
    ) -> Result<PathBuf, OpError> {
        let as_failure = |e: OpError| match e {
            OpError::Rejected(m) => OpError::Failed(m),
            other => other,
        };
        match self {
            Operator::Local { store, .. } => {
                let dir =
                    admin::prepare_backup_target(dir, base, config).map_err(OpError::Failed)?;
                store.backup(&dir)?;
                Ok(dir)
            }
            Operator::Remote(r) => {
                let dir = match base {
                    Some(b) if dir.is_relative() && !b.as_os_str().is_empty() => b.join(dir),
                    _ => dir.to_path_buf(),
                };
                let dir = std::path::absolute(&dir)
                    .map_err(|e| OpError::Failed(format!("{}: {e}", dir.display())))?;
                let v = r
                    .call(
                        Method::POST,
                        r.url(&["backup"]),
                        Some(json!({ "dir": dir })),
                    )
                    .await
                    .map_err(as_failure)?;
                Ok(v.get("dir")
                    .and_then(Value::as_str)
                    .map(PathBuf::from)
                    .unwrap_or(dir))
            }
        }
    }
}

/// The shop's API keys (`keys …`), through the store or the admin API.
impl Operator {
    pub async fn add_key(&self, request: KeyRequest) -> Result<NewKey, OpError> {
        match self {
            Operator::Local { store, .. } => {
                let (key, shown) = request.issue(Utc::now()).map_err(OpError::Rejected)?;
                if !store.add_api_key(&key)? {
                    return Err(OpError::Failed(api_keys::name_taken(&key.name)));
                }
                Ok(shown)
            }
            Operator::Remote(r) => {
                let body =
                    serde_json::to_value(&request).map_err(|e| OpError::Failed(e.to_string()))?;
                r.json(Method::POST, r.url(&["keys"]), Some(body)).await
            }
        }
    }

    pub async fn keys(&self) -> Result<Vec<KeySummary>, OpError> {
        match self {
            Operator::Local { store, .. } => {
                Ok(store.api_keys()?.iter().map(|k| k.summary()).collect())
            }
            Operator::Remote(r) => r.json(Method::GET, r.url(&["keys"]), None).await,
        }
    }

    pub async fn revoke_key(&self, name: &str) -> Result<(), OpError> {
        let found = match self {
            Operator::Local { store, .. } => store.revoke_api_key(name)?,
            Operator::Remote(r) => {
                r.call(Method::DELETE, r.url(&["keys", name]), None).await?;
                true
            }
        };
        if found {
            Ok(())
        } else {
            Err(OpError::NotFound(api_keys::no_such_key(name)))
        }
    }
}

impl Remote {
    fn new(config: &Config) -> Result<Remote, OpError> {
        let addr: SocketAddr = crate::config::listen_addrs(&config.admin.listen)
            .map_err(|e| OpError::Failed(format!("admin.listen `{}`: {e}", config.admin.listen)))?
            .into_iter()
            .next()
            .expect("listen_addrs names at least one address");
        // A server listening on every interface is reached on loopback.
        let addr = match addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => {
                SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
            }
            IpAddr::V6(ip) if ip.is_unspecified() => {
                SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
            }
            _ => addr,
        };
        let base = Url::parse(&format!("http://{addr}/admin/"))
            .map_err(|e| OpError::Failed(e.to_string()))?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| OpError::Failed(e.to_string()))?;
        Ok(Remote {
            client,
            base,
            token: config.admin.token.expose().to_string(),
        })
    }

    /// Whether something listens on the admin address (a running server).
    fn answers(&self) -> bool {
        self.base
            .socket_addrs(|| None)
            .ok()
            .and_then(|a| a.into_iter().next())
            .is_some_and(|addr| {
                std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
            })
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    fn customer_url(&self, kind: IdKind, value: &str) -> Url {
        let mut url = self.url(&["customers"]);
        url.query_pairs_mut().append_pair(kind.wire_name(), value);
        url
    }

    /// One request; a non-2xx answer becomes the matching [`OpError`] with the
    /// server's reason.
    async fn call(&self, method: Method, url: Url, body: Option<Value>) -> Result<Value, OpError> {
        let mut req = self.client.request(method, url);
        if !self.token.is_empty() {
            req = req.bearer_auth(&self.token);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| {
            OpError::Failed(format!(
                "the store is locked by a running server, but its admin listener at {} does not answer: {e}",
                self.base.host_str().unwrap_or("?")
            ))
        })?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let value: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if status.is_success() {
            return Ok(value);
        }
        let reason = value
            .get("error")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| format!("server answered {status}"));
        Err(match status {
            StatusCode::NOT_FOUND => OpError::NotFound(reason),
            // The server's reason says what to do (e.g. a retry of a dead
            // letter whose address is suppressed).
            StatusCode::CONFLICT => OpError::Failed(reason),
            StatusCode::BAD_REQUEST => OpError::Rejected(reason),
            // Any other 4xx (a row over the body limit: 413) is about what
            // was sent, not the server: an import rejects that row and goes on.
            s if s.is_client_error() && s != StatusCode::UNAUTHORIZED => OpError::Rejected(reason),
            StatusCode::UNAUTHORIZED => OpError::Failed(format!(
                "the server refused the admin token ({reason}); check admin.token"
            )),
            _ => OpError::Failed(format!("server answered {status}: {reason}")),
        })
    }

    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<Value>,
    ) -> Result<T, OpError> {
        let v = self.call(method, url, body).await?;
        serde_json::from_value(v)
            .map_err(|e| OpError::Failed(format!("unexpected answer from the server: {e}")))
    }
}
