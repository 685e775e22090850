//! Typed configuration: embedded defaults, the operator's file, then
//! `ESIM_NOTIFY_<SECTION>__<KEY>` environment overrides, validated as a whole.
//!
//! Every problem names its key, so an operator can fix a file without reading
//! code. Secrets (`store.url`, `admin.token`, `security.webhook_token`,
//! `email.smtp.password`, `provider.access_code`, `feedback.postmark_token`,
//! `feedback.mailgun_signing_key`) are never printed: the
//! `Debug` of [`Secret`] is redacted.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::Serialized;
use figment::Figment;
use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize};

mod feedback;
pub use feedback::{sendgrid_point, test_origin, Feedback};

/// The defaults the binary ships with; the operator's file only needs the keys it changes.
pub const DEFAULT_TOML: &str = include_str!("config.default.toml");

/// Variable naming the config file; having no double underscore it is never a key.
pub const CONFIG_ENV: &str = "ESIM_NOTIFY_CONFIG";

/// Variables with the prefix that name no key on purpose, so they draw no
/// "names no key" warning: the config file's name and the store's test-only
/// switches (`store::flusher`, whose tests check this list holds them).
pub const NOT_KEYS: [&str; 3] = [
    CONFIG_ENV,
    "ESIM_NOTIFY_UNSAFE_NO_FDATASYNC",
    "ESIM_NOTIFY_UNSAFE_FAIL_SYNC",
];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: Server,
    pub admin: Admin,
    pub security: Security,
    pub store: StoreConfig,
    pub brand: BTreeMap<String, String>,
    pub email: Email,
    pub rate_limit: RateLimit,
    pub api: Api,
    pub retry: Retry,
    pub customers: Customers,
    pub templates: TemplatesConfig,
    pub notify: Notify,
    pub delivery: Delivery,
    pub provider: Provider,
    pub feedback: Feedback,
    pub log: Log,
    /// `ESIM_NOTIFY_*` variables that name no key: found while loading (the
    /// environment is gone by then), reported by [`Config::warnings`].
    #[serde(skip)]
    pub env_warnings: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    pub listen: String,
    pub webhook_path: String,
    pub max_body_bytes: usize,
    /// A webhook body still arriving after this is cut with 408, so a slow
    /// sender cannot hold a connection (and a worker's memory) open forever.
    pub body_timeout: Dur,
    /// How customers reach the public listener (for unsubscribe links);
    /// "" means `http://{listen}`.
    pub public_url: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    pub listen: String,
    pub token: Secret,
    /// Host names the admin listener answers besides its own addresses
    /// (`http::host_guard`): a reverse proxy's name, a tunnel's local port.
    pub allowed_hosts: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Security {
    pub allowed_ips: Vec<String>,
    pub trusted_proxies: Vec<String>,
    pub webhook_token: Secret,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Which backend holds the state: sled (one VM) or PostgreSQL (SPEC §10).
    pub backend: StoreBackend,
    /// `postgres`: the database URL. A secret (it may carry a password):
    /// never logged; `store::postgres` shows it without the password.
    pub url: Secret,
    /// `postgres`: connections per instance.
    pub pool: u32,
    /// `postgres`: how long an instance holds a notice it sends. Validated
    /// now, used by the lease-based outbox of a later step (issue 19).
    pub lease: Dur,
    pub path: PathBuf,
    pub cache_mb: u64,
    /// sled's zstd compression of a new store's log (see `store::sled_backend`).
    pub compression: bool,
    pub delivery_dedup: Dur,
    pub history: Dur,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    Sled,
    Postgres,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    Smtp,
    File,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    Starttls,
    Tls,
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Email {
    pub from: String,
    pub reply_to: String,
    pub transport: TransportKind,
    pub file_dir: PathBuf,
    pub send_timeout: Dur,
    pub list_unsubscribe: String,
    /// Service emails (template names): still sent to an address that
    /// unsubscribed, never to one that bounced or complained, and sent
    /// without `List-Unsubscribe` (SPEC §3, §6).
    pub essential: Vec<String>,
    pub smtp: Smtp,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Smtp {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub username: String,
    pub password: Secret,
    pub pool_size: u32,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
    pub per_recipient_per_hour: u32,
}

/// `[api]`: the shop's `/api/v1` (SPEC §4). Each key gets its own rate.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Api {
    /// Requests per minute one key may make, on average.
    pub per_minute: u32,
    /// Requests one key may make at once above that rate.
    pub burst: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    pub max_attempts: u32,
    pub initial_backoff: Dur,
    pub max_backoff: Dur,
    pub max_age: Dur,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Customers {
    pub park_for: Dur,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplatesConfig {
    pub dir: PathBuf,
    pub default_locale: String,
    pub default_timezone: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notify {
    pub data_usage: DataUsageRule,
    pub validity_usage: ValidityRule,
    pub esim_status: BTreeMap<String, String>,
    pub order_status: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataUsageRule {
    pub enabled: bool,
    pub thresholds: Vec<f64>,
    pub template: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidityRule {
    pub enabled: bool,
    pub template: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delivery {
    pub quiet_hours: String,
    pub quiet_hours_bypass: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    pub access_code: Secret,
    pub base_url: String,
    pub requests_per_second: u32,
    pub timeout: Dur,
    /// How long a notice other than `esim_ready` may wait for its plan's
    /// name when the provider does not answer; then it goes without it.
    pub plan_wait: Dur,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Log {
    pub format: LogFormat,
    pub level: String,
}

/// A duration written as `"30s"`, `"72h"`, `"7d"` in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(s.trim()).map(Dur).map_err(|e| {
            serde::de::Error::custom(format!(
                "`{s}` is not a duration like \"30s\", \"72h\" or \"7d\": {e}"
            ))
        })
    }
}

/// A value never to be printed in full.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Empty or only whitespace: as good as no secret at all.
    pub fn is_blank(&self) -> bool {
        self.0.trim().is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"***\"" })
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A file may write `password = 123456`: that is the string of the digits.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            S(String),
            I(i64),
            U(u64),
            F(f64),
            B(bool),
        }
        Ok(Secret(match Raw::deserialize(d)? {
            Raw::S(s) => s,
            Raw::I(i) => i.to_string(),
            Raw::U(u) => u.to_string(),
            Raw::F(f) => f.to_string(),
            Raw::B(b) => b.to_string(),
        }))
    }
}

/// Whether `store.url` has the shape of a PostgreSQL connection string; the
/// store checks the rest (config does not depend on the store).
fn store_url_form(url: &str) -> bool {
    let url = url.trim();
    url.starts_with("postgres://") || url.starts_with("postgresql://") || url.contains('=')
}

/// One problem with the configuration: the key and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub key: String,
    pub reason: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("{}", .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<ConfigProblem>),
}

/// Where the config file is: `--config`, else `$ESIM_NOTIFY_CONFIG`, else `./config.toml`.
pub fn config_path(flag: Option<&Path>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    match std::env::var_os(CONFIG_ENV) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from("config.toml"),
    }
}

impl Config {
    /// Loads defaults + `path` (which must exist) + the process environment, then validates.
    /// Relative paths in the file (`store.path`, `email.file_dir`,
    /// `templates.dir`) are taken relative to the file's own directory, so
    /// `--config /etc/esim-notify/config.toml` means the same from any
    /// working directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let mut config = Config::from_sources(&text, std::env::vars())?;
        let base = path.parent().unwrap_or(Path::new(""));
        for p in [
            &mut config.store.path,
            &mut config.email.file_dir,
            &mut config.templates.dir,
        ] {
            if p.is_relative() && !base.as_os_str().is_empty() {
                *p = base.join(&*p);
            }
        }
        Ok(config)
    }

    /// Loads from the text of an operator's file and an environment, then
    /// validates. Every problem is collected before anything is refused, so
    /// one run of `check` lists them all: keys are checked against the
    /// defaults (which hold every key) one by one, a bad value is reported
    /// and the default kept in its place so the rest can still be validated.
    pub fn from_sources(
        file: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let defaults: toml::Table = toml::from_str(DEFAULT_TOML).expect("embedded defaults parse");
        let user: toml::Table = toml::from_str(file)
            .map_err(|e| ConfigError::Invalid(vec![syntax_problem(file, &e)]))?;
        let mut problems = Problems::default();
        let mut merged = defaults.clone();
        merge_table(&defaults, &mut merged, user, "", None, &mut problems);
        let (overrides, env_warnings) = env_overrides(&defaults, env, &mut problems);
        for o in overrides {
            merge_env(&defaults, &mut merged, o, &mut problems);
        }
        let mut config: Config = Figment::from(Serialized::defaults(toml::Value::Table(merged)))
            .extract()
            .map_err(|e| {
                let mut all = problems.0.clone();
                all.extend(figment_problems(e));
                ConfigError::Invalid(all)
            })?;
        config.env_warnings = env_warnings;
        if config.admin.token.is_blank() {
            config.admin.token = Secret::default();
        }
        problems.0.extend(config.validate());
        if problems.0.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid(problems.0))
        }
    }

    /// What differs from `new` that only a restart applies, as keys or
    /// sections. Secrets are compared by value: their `Debug` is redacted,
    /// so a changed token would otherwise go unnoticed.
    pub fn restart_changes(&self, new: &Config) -> Vec<String> {
        let d = |a: &dyn fmt::Debug, b: &dyn fmt::Debug| format!("{a:?}") != format!("{b:?}");
        let mut out: Vec<String> = [
            ("[server]", d(&self.server, &new.server)),
            ("[admin]", d(&self.admin, &new.admin)),
            ("[security]", d(&self.security, &new.security)),
            ("[store]", d(&self.store, &new.store)),
            ("[email]", d(&self.email, &new.email)),
            ("[retry]", d(&self.retry, &new.retry)),
            ("[customers]", d(&self.customers, &new.customers)),
            ("[provider]", d(&self.provider, &new.provider)),
            ("[feedback]", d(&self.feedback, &new.feedback)),
        ]
        .into_iter()
        .filter(|(_, changed)| *changed)
        .map(|(s, _)| s.to_string())
        .collect();
        for (key, a, b) in [
            ("admin.token", &self.admin.token, &new.admin.token),
            (
                "security.webhook_token",
                &self.security.webhook_token,
                &new.security.webhook_token,
            ),
            (
                "email.smtp.password",
                &self.email.smtp.password,
                &new.email.smtp.password,
            ),
            (
                "provider.access_code",
                &self.provider.access_code,
                &new.provider.access_code,
            ),
            ("store.url", &self.store.url, &new.store.url),
            (
                "feedback.postmark_token",
                &self.feedback.postmark_token,
                &new.feedback.postmark_token,
            ),
            (
                "feedback.mailgun_signing_key",
                &self.feedback.mailgun_signing_key,
                &new.feedback.mailgun_signing_key,
            ),
        ] {
            if a.expose() != b.expose() {
                out.push(key.to_string());
            }
        }
        out
    }

    /// Every impossible value, each with its key. Template existence is checked
    /// where templates are loaded (`startup`, `check`).
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut p = Problems::default();
        let public = listen_addrs(&self.server.listen);
        if let Err(e) = &public {
            p.add("server.listen", format!("`{}`: {e}", self.server.listen))
        }
        if !self.server.webhook_path.starts_with('/') {
            p.add("server.webhook_path", "must start with '/'");
        }
        let pu = self.server.public_url.as_str();
        if !(pu.is_empty() || pu.starts_with("https://") || pu.starts_with("http://")) {
            p.add(
                "server.public_url",
                format!("`{pu}` must be \"\" or an http(s) URL"),
            );
        }
        if self.server.max_body_bytes == 0 {
            p.add("server.max_body_bytes", "must be greater than 0");
        }
        let admin = listen_addrs(&self.admin.listen);
        match &admin {
            Err(e) => p.add("admin.listen", format!("`{}`: {e}", self.admin.listen)),
            Ok(a) if a.iter().any(|a| !a.ip().is_loopback()) && self.admin.token.is_blank() => p
                .add(
                    "admin.token",
                    format!(
                        "required when admin.listen ({}) is not a loopback address",
                        self.admin.listen
                    ),
                ),
            Ok(_) => {}
        }
        for (i, s) in self.admin.allowed_hosts.iter().enumerate() {
            if let Err(e) = parse_host(s) {
                p.add(format!("admin.allowed_hosts[{i}]"), e);
            }
        }
        if let (Ok(public), Ok(admin)) = (&public, &admin) {
            if let Some(port) = shared_port(public, admin) {
                p.add(
                    "admin.listen",
                    format!(
                        "server.listen ({}) and admin.listen ({}) are both on port {port}: the second could never bind; give each listener its own port",
                        self.server.listen, self.admin.listen
                    ),
                );
            }
        }
        for (i, s) in self.security.allowed_ips.iter().enumerate() {
            if let Err(e) = parse_net(s) {
                p.add(format!("security.allowed_ips[{i}]"), e);
            }
        }
        for (i, s) in self.security.trusted_proxies.iter().enumerate() {
            if let Err(e) = parse_net(s) {
                p.add(format!("security.trusted_proxies[{i}]"), e);
            }
        }
        if self.store.path.as_os_str().is_empty() {
            p.add("store.path", "must not be empty");
        }
        if self.store.cache_mb == 0 {
            p.add("store.cache_mb", "must be greater than 0");
        }
        if self.store.pool == 0 {
            p.add("store.pool", "must be greater than 0");
        }
        p.positive("store.lease", self.store.lease);
        if self.store.backend == StoreBackend::Postgres {
            if self.store.url.is_blank() {
                p.add(
                    "store.url",
                    "must be set when store.backend = \"postgres\" (or ESIM_NOTIFY_STORE__URL)",
                );
            } else if !store_url_form(self.store.url.expose()) {
                // Never echoed: it may hold a password. The store parses
                // the rest when it opens, naming this key too.
                p.add(
                    "store.url",
                    "must be a postgres:// (or postgresql://) URL or key=value pairs",
                );
            }
        }
        p.positive("store.delivery_dedup", self.store.delivery_dedup);
        p.positive("store.history", self.store.history);
        for key in ["name"] {
            if self.brand.get(key).is_none_or(|v| v.trim().is_empty()) {
                p.add(format!("brand.{key}"), "must be set");
            }
        }
        for (key, reason) in crate::brand::problems(&self.brand) {
            p.add(key, reason);
        }
        if let Err(e) = self.email.from.parse::<lettre::message::Mailbox>() {
            p.add(
                "email.from",
                format!("`{}` is not an address: {e}", self.email.from),
            );
        }
        if !self.email.reply_to.is_empty() {
            if let Err(e) = self.email.reply_to.parse::<lettre::message::Mailbox>() {
                p.add(
                    "email.reply_to",
                    format!("`{}` is not an address: {e}", self.email.reply_to),
                );
            }
        }
        p.positive("email.send_timeout", self.email.send_timeout);
        p.positive("server.body_timeout", self.server.body_timeout);
        let lu = self.email.list_unsubscribe.as_str();
        if !(lu.is_empty()
            || lu == "one-click"
            || lu.starts_with("mailto:")
            || lu.starts_with("https://")
            || lu.starts_with("http://"))
        {
            p.add(
                "email.list_unsubscribe",
                format!("`{lu}` must be \"\", \"one-click\", a mailto: or an http(s) URL"),
            );
        }
        for (i, name) in self.email.essential.iter().enumerate() {
            if !valid_template_name(name) {
                p.add(
                    format!("email.essential[{i}]"),
                    format!("`{name}` is not a template name (letters, digits, _ and -)"),
                );
            }
        }
        if self.email.transport == TransportKind::File && self.email.file_dir.as_os_str().is_empty()
        {
            p.add(
                "email.file_dir",
                "must not be empty with transport = \"file\"",
            );
        }
        if self.email.smtp.host.trim().is_empty() {
            p.add("email.smtp.host", "must not be empty");
        }
        if self.email.smtp.port == 0 {
            p.add("email.smtp.port", "must be greater than 0");
        }
        if self.email.smtp.pool_size == 0 {
            p.add("email.smtp.pool_size", "must be at least 1");
        }
        if self.rate_limit.per_second == 0 {
            p.add("rate_limit.per_second", "must be at least 1");
        }
        if self.rate_limit.burst == 0 {
            p.add("rate_limit.burst", "must be at least 1");
        }
        if self.api.per_minute == 0 {
            p.add("api.per_minute", "must be at least 1");
        }
        if self.api.burst == 0 {
            p.add("api.burst", "must be at least 1");
        }
        if self.retry.max_attempts == 0 {
            p.add("retry.max_attempts", "must be at least 1");
        }
        p.positive("retry.initial_backoff", self.retry.initial_backoff);
        p.positive("retry.max_backoff", self.retry.max_backoff);
        p.positive("retry.max_age", self.retry.max_age);
        if self.retry.initial_backoff.0 > self.retry.max_backoff.0 {
            p.add("retry.initial_backoff", "must not exceed retry.max_backoff");
        }
        p.positive("customers.park_for", self.customers.park_for);
        if self.templates.default_locale.trim().is_empty() {
            p.add("templates.default_locale", "must not be empty");
        }
        if let Err(e) = parse_tz(&self.templates.default_timezone) {
            p.add("templates.default_timezone", e);
        }
        if self.notify.data_usage.enabled && self.notify.data_usage.thresholds.is_empty() {
            p.add(
                "notify.data_usage.thresholds",
                "must list at least one threshold",
            );
        }
        for (i, t) in self.notify.data_usage.thresholds.iter().enumerate() {
            if !(*t > 0.0 && *t <= 1.0) {
                p.add(
                    format!("notify.data_usage.thresholds[{i}]"),
                    format!("{t} is outside (0, 1]: thresholds are fractions of the allowance remaining"),
                );
            }
            if self.notify.data_usage.thresholds[..i].contains(t) {
                p.add(
                    format!("notify.data_usage.thresholds[{i}]"),
                    format!("{t} is listed twice"),
                );
            }
        }
        for (key, name) in self.template_keys() {
            if !valid_template_name(&name) {
                p.add(
                    key,
                    format!("`{name}` is not a template name (letters, digits, _ and -)"),
                );
            }
        }
        if let Err(e) = parse_quiet_hours(&self.delivery.quiet_hours) {
            p.add("delivery.quiet_hours", e);
        }
        if self.provider.requests_per_second == 0 {
            p.add("provider.requests_per_second", "must be at least 1");
        }
        p.positive("provider.timeout", self.provider.timeout);
        p.positive("provider.plan_wait", self.provider.plan_wait);
        let base = self.provider.base_url.trim();
        let scheme_ok = reqwest::Url::parse(base)
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some());
        if !scheme_ok {
            p.add(
                "provider.base_url",
                format!("`{base}` is not an http(s) URL such as \"https://api.esimaccess.com\""),
            );
        }
        for (key, reason) in self.feedback.problems() {
            p.add(key, reason);
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            p.add(
                "log.level",
                format!("`{}` is not a log filter such as \"info\"", self.log.level),
            );
        }
        p.0
    }

    /// Every template the configuration maps, with the key that maps it.
    /// `[notify.order_status]` counts only when the provider API is configured.
    pub fn template_keys(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self.notify.data_usage.enabled {
            out.push((
                "notify.data_usage.template".into(),
                self.notify.data_usage.template.clone(),
            ));
        }
        if self.notify.validity_usage.enabled {
            out.push((
                "notify.validity_usage.template".into(),
                self.notify.validity_usage.template.clone(),
            ));
        }
        for (status, t) in &self.notify.esim_status {
            out.push((format!("notify.esim_status.{status}"), t.clone()));
        }
        if self.provider_enabled() {
            for (status, t) in &self.notify.order_status {
                out.push((format!("notify.order_status.{status}"), t.clone()));
            }
        }
        out
    }

    /// The base of links to the public listener.
    pub fn public_url(&self) -> String {
        if self.server.public_url.is_empty() {
            format!("http://{}", self.server.listen)
        } else {
            self.server.public_url.trim_end_matches('/').to_string()
        }
    }

    /// An access code of only blanks is no access code (enrichment off).
    pub fn provider_enabled(&self) -> bool {
        !self.provider.access_code.is_blank()
    }

    /// Parsed `security.allowed_ips` (validated at load).
    pub fn allowed_nets(&self) -> Vec<IpNet> {
        self.security
            .allowed_ips
            .iter()
            .filter_map(|s| parse_net(s).ok())
            .collect()
    }

    pub fn trusted_proxy_nets(&self) -> Vec<IpNet> {
        self.security
            .trusted_proxies
            .iter()
            .filter_map(|s| parse_net(s).ok())
            .collect()
    }

    pub fn default_tz(&self) -> chrono_tz::Tz {
        parse_tz(&self.templates.default_timezone).unwrap_or(chrono_tz::UTC)
    }

    /// The start-up warnings of SPEC §3: legal, but probably not what was meant.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        for name in &self.email.essential {
            let mapped = self.notify.data_usage.template == *name
                || self.notify.validity_usage.template == *name
                || self.notify.esim_status.values().any(|t| t == name)
                || self.notify.order_status.values().any(|t| t == name);
            if !mapped && valid_template_name(name) {
                w.push(format!("email.essential lists `{name}`, which no [notify] mapping sends: it has no effect"));
            }
        }
        let allowed = self.allowed_nets();
        if allowed.is_empty() {
            w.push("security.allowed_ips is empty: anyone may post webhooks".to_string());
        }
        let loopback_allowed = allowed.iter().any(|n| {
            n.contains(&IpAddr::from([127, 0, 0, 1]))
                || n.contains(&IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]))
        });
        if loopback_allowed && self.security.trusted_proxies.is_empty() {
            w.push("security.allowed_ips allows loopback while security.trusted_proxies is empty: a reverse proxy on this VM would let everyone through".to_string());
        }
        if self.security.webhook_token.is_empty() {
            w.push(
                "security.webhook_token is empty: the webhook URL carries no secret".to_string(),
            );
        }
        for proxy in self.trusted_proxy_nets() {
            for sender in allowed.iter().filter(|a| overlaps(a, &proxy)) {
                w.push(format!("{sender} in security.allowed_ips overlaps {proxy} in security.trusted_proxies: a request from the proxy without X-Forwarded-For is judged as the proxy itself and let in"));
            }
        }
        for (i, net) in allowed.iter().enumerate() {
            if let IpNet::V6(v6) = net {
                if let (Some(v4), true) = (v6.network().to_ipv4_mapped(), v6.prefix_len() >= 96) {
                    let as_v4 = ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
                        .map(|n| {
                            if n.prefix_len() == 32 {
                                v4.to_string()
                            } else {
                                n.to_string()
                            }
                        })
                        .unwrap_or_else(|_| v4.to_string());
                    w.push(format!("security.allowed_ips[{i}] = {net} is IPv4-mapped IPv6: senders are matched as IPv4, so it never matches; write it as {as_v4}"));
                }
            }
        }
        let smtp = &self.email.smtp;
        let credentials = !smtp.username.is_empty() || !smtp.password.is_empty();
        if self.email.transport == TransportKind::Smtp
            && smtp.tls == TlsMode::None
            && credentials
            && !is_loopback_host(&smtp.host)
        {
            w.push(format!("email.smtp.tls = \"none\" with a username or password: the credentials travel unencrypted to {}", smtp.host));
        }
        if self.email.list_unsubscribe == "one-click" {
            let pu = self.server.public_url.trim();
            let host = reqwest::Url::parse(pu)
                .ok()
                .and_then(|u| u.host_str().map(str::to_string));
            if pu.is_empty() {
                w.push(format!("email.list_unsubscribe = \"one-click\" with server.public_url empty: emails link to http://{}, which customers cannot reach; set server.public_url", self.server.listen));
            } else if host.is_some_and(|h| is_loopback_host(&h)) {
                w.push(format!("email.list_unsubscribe = \"one-click\" with server.public_url = {pu}: a loopback address customers cannot reach"));
            }
        }
        if self.provider_enabled() {
            let base = self.provider.base_url.trim();
            let host = reqwest::Url::parse(base)
                .ok()
                .filter(|u| u.scheme() == "http")
                .and_then(|u| u.host_str().map(str::to_string));
            if host.is_some_and(|h| !is_loopback_host(&h)) {
                w.push(format!("provider.base_url = {base} is plain http to a host that is not loopback: the access code travels unencrypted"));
            }
        }
        w.extend(crate::brand::warnings(&self.brand));
        w.extend(self.feedback.warnings());
        w.extend(self.env_warnings.iter().cloned());
        w
    }
}

/// Whether two networks share an address.
fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// `localhost` or a loopback address (`[::1]` with or without brackets).
fn is_loopback_host(host: &str) -> bool {
    let h = host.trim().trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.to_ascii_lowercase().ends_with(".localhost")
        || h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// An IP address or a CIDR network.
pub fn parse_net(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("`{s}` is not an IP address or network such as 10.0.0.0/8"))
}

/// A `Host` header value or an `admin.allowed_hosts` entry, `name[:port]`:
/// the name in lower case (an IPv6 address in brackets, in canonical form)
/// and the port if one is given.
pub fn parse_host(value: &str) -> Result<(String, Option<u16>), String> {
    let value = value.trim();
    let bad = || {
        format!("`{value}` is not a host name such as \"admin.example.com\" or \"localhost:9000\"")
    };
    let (name, port) = if let Some(rest) = value.strip_prefix('[') {
        let (ip, after) = rest.split_once(']').ok_or_else(bad)?;
        let ip: std::net::Ipv6Addr = ip.parse().map_err(|_| bad())?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(bad)?),
        };
        (format!("[{ip}]"), port)
    } else {
        let (name, port) = match value.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (value, None),
        };
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
        if !valid {
            return Err(bad());
        }
        (name.to_ascii_lowercase(), port)
    };
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            Some(p.parse::<u16>().map_err(|_| bad())?)
        }
        Some(_) => return Err(bad()),
    };
    Ok((name, port))
}

pub fn parse_tz(s: &str) -> Result<chrono_tz::Tz, String> {
    s.parse::<chrono_tz::Tz>()
        .map_err(|_| format!("`{s}` is not an IANA timezone such as \"Europe/Madrid\""))
}

pub fn valid_template_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// `"21:00-08:00"` as (start, end) minutes after midnight; `""` is off.
pub fn parse_quiet_hours(s: &str) -> Result<Option<(u32, u32)>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    let bad = || format!("`{s}` must look like \"21:00-08:00\"");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let hm = |t: &str| -> Option<u32> {
        let (h, m) = t.trim().split_once(':')?;
        let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
        (h < 24 && m < 60).then_some(h * 60 + m)
    };
    let (a, b) = (hm(a).ok_or_else(bad)?, hm(b).ok_or_else(bad)?);
    if a == b {
        return Err(format!("`{s}` starts and ends at the same time"));
    }
    Ok(Some((a, b)))
}

#[derive(Default)]
struct Problems(Vec<ConfigProblem>);

impl Problems {
    fn add(&mut self, key: impl Into<String>, reason: impl Into<String>) {
        self.0.push(ConfigProblem {
            key: key.into(),
            reason: reason.into(),
        });
    }
    fn positive(&mut self, key: &str, d: Dur) {
        if d.0.is_zero() {
            self.add(key, "must be longer than zero");
        }
    }
}

/// The addresses a `listen` value names: `IP:PORT` (`[::1]:8081` for IPv6)
/// or `HOST:PORT`, such as `localhost:8080`. A host name is resolved here and
/// again when the listener binds (std's `TcpListener::bind`, which takes the
/// first address that binds); the CLI reaches the admin listener the same way.
pub fn listen_addrs(value: &str) -> Result<Vec<SocketAddr>, String> {
    use std::net::ToSocketAddrs;
    if let Ok(a) = value.parse::<SocketAddr>() {
        return Ok(vec![a]);
    }
    let Some((host, port)) = value.rsplit_once(':') else {
        return Err("not HOST:PORT (for example \"127.0.0.1:8080\" or \"localhost:8080\")".into());
    };
    if port.parse::<u16>().is_err() {
        return Err(format!("`{port}` is not a port number (0–65535)"));
    }
    if host.is_empty() || host.contains(['[', ']', ':', '/', ' ']) {
        return Err(format!(
            "`{host}` is not a host name or IP address (write IPv6 as [::1]:PORT)"
        ));
    }
    let addrs: Vec<SocketAddr> = value
        .to_socket_addrs()
        .map_err(|e| format!("the host name `{host}` does not resolve: {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("the host name `{host}` resolves to no address"));
    }
    Ok(addrs)
}

/// The port two listeners would both need, if they collide: the same fixed
/// port on a common address, or on an address that covers every interface
/// (`0.0.0.0`, `[::]`). Port 0 picks a free port per listener.
fn shared_port(a: &[SocketAddr], b: &[SocketAddr]) -> Option<u16> {
    a.iter()
        .flat_map(|x| b.iter().map(move |y| (x, y)))
        .find(|(x, y)| {
            x.port() != 0
                && x.port() == y.port()
                && (x.ip() == y.ip() || x.ip().is_unspecified() || y.ip().is_unspecified())
        })
        .map(|(x, _)| x.port())
}

/// Turns figment's errors into key + reason pairs (figment names the path).
fn figment_problems(err: figment::Error) -> Vec<ConfigProblem> {
    err.into_iter()
        .map(|e| {
            let key = if e.path.is_empty() {
                "config".to_string()
            } else {
                e.path.join(".")
            };
            let source = e
                .metadata
                .as_ref()
                .map(|m| format!(" (from {})", m.name))
                .unwrap_or_default();
            ConfigProblem {
                key,
                reason: format!("{}{source}", e.kind),
            }
        })
        .collect()
}

/// A TOML syntax error with the line and column it is at.
fn syntax_problem(text: &str, e: &toml::de::Error) -> ConfigProblem {
    let key = match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
            format!("line {line}, column {column}")
        }
        None => "config file".to_string(),
    };
    ConfigProblem {
        key,
        reason: format!("TOML syntax: {}", e.message().trim()),
    }
}

/// Tables whose keys are the operator's to choose (all values strings).
const FREE_MAPS: [&str; 3] = ["brand", "notify.esim_status", "notify.order_status"];
/// Free maps a file replaces as a whole: deleting a status line means "send nothing for it".
const REPLACED_MAPS: [&str; 2] = ["notify.esim_status", "notify.order_status"];
const SECRETS: [&str; 7] = [
    "store.url",
    "admin.token",
    "security.webhook_token",
    "email.smtp.password",
    "provider.access_code",
    "feedback.postmark_token",
    "feedback.mailgun_signing_key",
];
const DURATIONS: [&str; 10] = [
    "store.lease",
    "store.delivery_dedup",
    "store.history",
    "email.send_timeout",
    "retry.initial_backoff",
    "retry.max_backoff",
    "retry.max_age",
    "customers.park_for",
    "provider.timeout",
    "provider.plan_wait",
];
const ENUMS: [(&str, &[&str]); 4] = [
    ("store.backend", &["sled", "postgres"]),
    ("email.transport", &["smtp", "file"]),
    ("email.smtp.tls", &["starttls", "tls", "none"]),
    ("log.format", &["human", "json"]),
];

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn kind(v: &toml::Value) -> &'static str {
    match v {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a number",
        toml::Value::Boolean(_) => "true or false",
        toml::Value::Datetime(_) => "a date",
        toml::Value::Array(_) => "an array",
        toml::Value::Table(_) => "a table",
    }
}

/// Merges the file's `given` table into `target` (which starts as the
/// defaults), reporting every unknown key and every value of the wrong
/// kind; a bad value leaves the default in place.
fn merge_table(
    default: &toml::Table,
    target: &mut toml::Table,
    given: toml::Table,
    path: &str,
    source: Option<&str>,
    p: &mut Problems,
) {
    if REPLACED_MAPS.contains(&path) {
        target.clear();
    }
    for (k, v) in given {
        let key = join(path, &k);
        if FREE_MAPS.contains(&path) {
            match v {
                toml::Value::String(_) => {
                    target.insert(k, v);
                }
                other => p.add(key, mismatch("a string", &other, source)),
            }
            continue;
        }
        let Some(d) = default.get(&k) else {
            let hint = closest(&k, default.keys().map(String::as_str))
                .map(|m| format!("; did you mean {}?", join(path, m)))
                .unwrap_or_default();
            p.add(key, format!("unknown key{}{hint}", from(source)));
            continue;
        };
        match (d, v) {
            (toml::Value::Table(dt), toml::Value::Table(gt)) => {
                let Some(toml::Value::Table(tt)) = target.get_mut(&k) else {
                    continue;
                };
                merge_table(dt, tt, gt, &key, source, p);
            }
            (d, v) => {
                if let Some(v) = check_leaf(&key, d, v, source, p) {
                    target.insert(k, v);
                }
            }
        }
    }
}

/// The value if it has the kind of the default `d` (and is a valid
/// duration or choice where the key takes one); else reports it.
fn check_leaf(
    key: &str,
    d: &toml::Value,
    v: toml::Value,
    source: Option<&str>,
    p: &mut Problems,
) -> Option<toml::Value> {
    use toml::Value as V;
    let secret = SECRETS.contains(&key);
    let v = match (d, v) {
        // A file may write `token = 123456`; it is the string of those digits.
        (V::String(_), V::Integer(i)) if secret => V::String(i.to_string()),
        (V::Float(_), V::Integer(i)) => V::Float(i as f64),
        (V::Array(da), V::Array(va)) => {
            let want = da.first().cloned().unwrap_or(V::String(String::new()));
            let mut out = Vec::with_capacity(va.len());
            let mut ok = true;
            for (i, e) in va.into_iter().enumerate() {
                match check_leaf(&format!("{key}[{i}]"), &want, e, source, p) {
                    Some(e) => out.push(e),
                    None => ok = false,
                }
            }
            return ok.then_some(V::Array(out));
        }
        (d, v) if std::mem::discriminant(d) == std::mem::discriminant(&v) => v,
        (d, v) => {
            let shown = if secret {
                format!("expected {}, found {}{}", kind(d), kind(&v), from(source))
            } else {
                mismatch(kind(d), &v, source)
            };
            p.add(key, shown);
            return None;
        }
    };
    if let V::String(s) = &v {
        if DURATIONS.contains(&key) {
            if let Err(e) = humantime::parse_duration(s.trim()) {
                p.add(
                    key,
                    format!(
                        "`{s}` is not a duration like \"30s\", \"72h\" or \"7d\": {e}{}",
                        from(source)
                    ),
                );
                return None;
            }
        }
        if let Some((_, choices)) = ENUMS.iter().find(|(k, _)| *k == key) {
            if !choices.contains(&s.as_str()) {
                p.add(
                    key,
                    format!(
                        "`{s}` must be one of {}{}",
                        choices.join(", "),
                        from(source)
                    ),
                );
                return None;
            }
        }
    }
    Some(v)
}

fn from(source: Option<&str>) -> String {
    source.map(|s| format!(" (from {s})")).unwrap_or_default()
}

fn mismatch(want: &str, v: &toml::Value, source: Option<&str>) -> String {
    format!("expected {want}, found {}{}", shown(v), from(source))
}

/// A short rendering of a (non-secret) value for a problem.
fn shown(v: &toml::Value) -> String {
    match v {
        toml::Value::Table(_) => "a table".to_string(),
        toml::Value::String(s) => format!("\"{s}\""),
        other => format!("{} ({other})", kind(other)),
    }
}

/// One `ESIM_NOTIFY_<SECTION>__<KEY>` variable, typed by its key.
struct EnvOverride {
    var: String,
    path: Vec<String>,
    value: toml::Value,
}

/// The environment variables that name keys, each parsed by the type of its
/// key: a string key takes the text as written (`007` stays `007`, `[pa55]`
/// is a password), numbers, booleans and arrays are parsed. A variable with
/// the prefix that names no key is a warning, not an error: it may belong to
/// another version, but it is probably a typo worth seeing.
fn env_overrides(
    defaults: &toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
    p: &mut Problems,
) -> (Vec<EnvOverride>, Vec<String>) {
    let mut overrides = Vec::new();
    let mut warnings = Vec::new();
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with("ESIM_NOTIFY_") && !NOT_KEYS.contains(&k.as_str()))
        .collect();
    vars.sort();
    for (var, raw) in vars {
        let rest = &var["ESIM_NOTIFY_".len()..];
        let parts: Vec<&str> = rest.split("__").collect();
        let mut path: Vec<String> = Vec::new();
        for part in &parts {
            // Status names are upper case (IN_USE), every other key lower case.
            let parent = path.join(".");
            path.push(if REPLACED_MAPS.contains(&parent.as_str()) {
                part.to_string()
            } else {
                part.to_ascii_lowercase()
            });
        }
        let declared = if parts.len() < 2 || parts.iter().any(|s| s.is_empty()) {
            None
        } else {
            declared(defaults, &path)
        };
        let Some(declared) = declared else {
            warnings.push(unknown_var(defaults, &var));
            continue;
        };
        let key = path.join(".");
        let value = match &declared {
            toml::Value::String(_) => Some(toml::Value::String(raw.clone())),
            toml::Value::Integer(_) => raw.trim().parse().ok().map(toml::Value::Integer),
            toml::Value::Float(_) => raw.trim().parse().ok().map(toml::Value::Float),
            toml::Value::Boolean(_) => raw.trim().parse().ok().map(toml::Value::Boolean),
            toml::Value::Array(a) => Some(env_array(&raw, a)),
            _ => None,
        };
        match value {
            Some(value) => overrides.push(EnvOverride { var, path, value }),
            None => {
                let shown = if SECRETS.contains(&key.as_str()) {
                    String::new()
                } else {
                    format!(", found `{raw}`")
                };
                p.add(
                    key,
                    format!("expected {}{shown} (from {var})", kind(&declared)),
                );
            }
        }
    }
    (overrides, warnings)
}

/// The default value at `path` when it is a key (not a section); a key of a
/// free map is a string.
fn declared(defaults: &toml::Table, path: &[String]) -> Option<toml::Value> {
    let parent = path[..path.len() - 1].join(".");
    if FREE_MAPS.contains(&parent.as_str()) {
        return Some(toml::Value::String(String::new()));
    }
    let mut table = defaults;
    for (i, part) in path.iter().enumerate() {
        match table.get(part)? {
            toml::Value::Table(t) if i + 1 < path.len() => table = t,
            toml::Value::Table(_) => return None,
            v if i + 1 == path.len() => return Some(v.clone()),
            _ => return None,
        }
    }
    None
}

/// An array from the environment: TOML (`["10.0.0.1", "10.0.0.0/8"]`), or
/// for lists of strings also bare (`[10.0.0.1, ::1]` or `10.0.0.1,::1`).
fn env_array(raw: &str, default: &[toml::Value]) -> toml::Value {
    if let Ok(t) = toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        if let Some(v @ toml::Value::Array(_)) = t.get("v") {
            return v.clone();
        }
    }
    let strings = default.first().is_none_or(|d| d.is_str());
    let inner = raw.trim();
    let inner = inner
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(inner);
    if !strings {
        // Let the per-key check report it with the variable's name.
        return toml::Value::String(raw.to_string());
    }
    toml::Value::Array(
        inner
            .split(',')
            .map(|s| s.trim().trim_matches('"').trim_matches('\'').to_string())
            .filter(|s| !s.is_empty())
            .map(toml::Value::String)
            .collect(),
    )
}

/// The known name closest to a misspelt one (`per_recipient_per_hr` ->
/// `per_recipient_per_hour`), by Levenshtein distance, if it is close enough
/// to be a typo: at most a third of the name's length, and at least one edit
/// allowed. Ties go to the first in `known` (the defaults' order).
fn closest<'a>(given: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let given = given.to_ascii_lowercase();
    let limit = (given.chars().count() / 3).max(1);
    known
        .into_iter()
        .map(|k| (strsim::levenshtein(&given, &k.to_ascii_lowercase()), k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// The variable meant by one whose path has a misspelt part: the first part
/// that names nothing in its section is replaced by the closest key there, if
/// the path then names a key.
fn closest_var(defaults: &toml::Table, path: &[String]) -> Option<String> {
    let mut table = defaults;
    for (i, part) in path.iter().enumerate() {
        match table.get(part) {
            Some(toml::Value::Table(t)) => table = t,
            Some(_) => return None,
            None => {
                let meant = closest(part, table.keys().map(String::as_str))?;
                let mut fixed = path.to_vec();
                fixed[i] = meant.to_string();
                declared(defaults, &fixed)?;
                let upper: Vec<String> = fixed.iter().map(|p| p.to_ascii_uppercase()).collect();
                return Some(format!("ESIM_NOTIFY_{}", upper.join("__")));
            }
        }
    }
    None
}

/// The warning for a variable with the prefix that names no key, with the
/// spelling meant when only the double underscores are missing, else the
/// closest key by edit distance.
fn unknown_var(defaults: &toml::Table, var: &str) -> String {
    fn names(t: &toml::Table, prefix: &str, out: &mut Vec<String>) {
        for (k, v) in t {
            let name = format!("{prefix}__{}", k.to_ascii_uppercase());
            match v {
                toml::Value::Table(inner) => names(inner, &name, out),
                _ => out.push(name),
            }
        }
    }
    let mut all = Vec::new();
    names(defaults, "ESIM_NOTIFY", &mut all);
    let flat = |s: &str| s.replace("__", "_");
    let meant = all
        .iter()
        .map(|n| n.replacen("ESIM_NOTIFY__", "ESIM_NOTIFY_", 1))
        .find(|n| flat(n) == flat(var))
        .or_else(|| {
            let rest = var.strip_prefix("ESIM_NOTIFY_")?;
            let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
            if path.len() < 2 || path.iter().any(String::is_empty) {
                return None;
            }
            closest_var(defaults, &path)
        });
    match meant {
        Some(m) => format!("environment variable {var} names no key and is ignored; did you mean {m}?"),
        None => format!("environment variable {var} names no key and is ignored (keys are ESIM_NOTIFY_<SECTION>__<KEY>, with double underscores)"),
    }
}

/// Applies one environment override over the merged file, with the same
/// checks a file value gets.
fn merge_env(defaults: &toml::Table, merged: &mut toml::Table, o: EnvOverride, p: &mut Problems) {
    let (last, parents) = o.path.split_last().expect("at least two parts");
    let mut d = defaults;
    let mut t = merged;
    for part in parents {
        t = match t.get_mut(part) {
            Some(toml::Value::Table(inner)) => inner,
            _ => return,
        };
        d = match d.get(part) {
            Some(toml::Value::Table(inner)) => inner,
            _ => return,
        };
    }
    let key = o.path.join(".");
    let parent = parents.join(".");
    if FREE_MAPS.contains(&parent.as_str()) {
        t.insert(last.clone(), o.value);
        return;
    }
    let Some(dv) = d.get(last) else { return };
    if let Some(v) = check_leaf(&key, dv, o.value, Some(&o.var), p) {
        t.insert(last.clone(), v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(file: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_sources(
            file,
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    fn keys(e: ConfigError) -> Vec<String> {
        match e {
            ConfigError::Invalid(p) => p.into_iter().map(|p| p.key).collect(),
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn an_unknown_key_suggests_the_key_meant() {
        let e = load("[rate_limit]\nper_recipient_per_hr = 6\n", &[]).unwrap_err();
        assert!(
            e.to_string().contains(
                "rate_limit.per_recipient_per_hr: unknown key; did you mean rate_limit.per_recipient_per_hour?"
            ),
            "{e}"
        );
        let e = load("[rate_limits]\nburst = 6\n", &[]).unwrap_err();
        assert!(e.to_string().contains("did you mean rate_limit?"), "{e}");
        // Nothing close: no guess.
        let e = load("[server]\ncolour = \"red\"\n", &[]).unwrap_err();
        assert!(!e.to_string().contains("did you mean"), "{e}");

        let c = load(
            "",
            &[
                ("ESIM_NOTIFY_RATE_LIMIT__PER_RECIPIENT_PER_HR", "3"),
                ("ESIM_NOTIFY_RATELIMIT__BURST", "3"),
                ("ESIM_NOTIFY_EMAIL__SMTP__PASWORD", "x"),
                ("ESIM_NOTIFY_EMAIL__NOTHING_LIKE_IT", "x"),
            ],
        )
        .unwrap();
        let w = c.warnings().join("\n");
        for meant in [
            "ESIM_NOTIFY_RATE_LIMIT__PER_RECIPIENT_PER_HR names no key and is ignored; did you mean ESIM_NOTIFY_RATE_LIMIT__PER_RECIPIENT_PER_HOUR?",
            "ESIM_NOTIFY_RATELIMIT__BURST names no key and is ignored; did you mean ESIM_NOTIFY_RATE_LIMIT__BURST?",
            "did you mean ESIM_NOTIFY_EMAIL__SMTP__PASSWORD?",
            "ESIM_NOTIFY_EMAIL__NOTHING_LIKE_IT names no key and is ignored (keys are",
        ] {
            assert!(w.contains(meant), "{meant}\n{w}");
        }
    }

    #[test]
    fn listeners_take_host_names_but_not_one_port_twice() {
        let c = load(
            "[server]\nlisten = \"localhost:18480\"\n[admin]\nlisten = \"localhost:18481\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.server.listen, "localhost:18480");
        for bad in ["localhost", "localhost:http", ":80", "no such host:80"] {
            let k = keys(load(&format!("[server]\nlisten = \"{bad}\"\n"), &[]).unwrap_err());
            assert_eq!(k, ["server.listen"], "{bad}");
        }
        for (public, admin) in [
            ("127.0.0.1:8080", "127.0.0.1:8080"),
            ("localhost:8080", "127.0.0.1:8080"),
            ("0.0.0.0:8080", "127.0.0.1:8080"),
        ] {
            let e = load(
                &format!("[server]\nlisten = \"{public}\"\n[admin]\nlisten = \"{admin}\"\n"),
                &[],
            )
            .unwrap_err();
            let text = e.to_string();
            assert!(text.contains("both on port 8080"), "{text}");
            assert!(text.contains("server.listen") && text.contains("admin.listen"));
        }
        // Port 0 picks a free port for each.
        load(
            "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
            &[],
        )
        .unwrap();
    }

    #[test]
    fn defaults_alone_are_valid() {
        let c = load("", &[]).unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:8080");
        assert_eq!(c.store.delivery_dedup.0, Duration::from_secs(7 * 86400));
        assert_eq!(c.notify.esim_status.len(), 6);
    }

    #[test]
    fn shipped_config_is_valid() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml")).unwrap();
        load(&text, &[]).unwrap();
    }

    #[test]
    fn unknown_key_is_named() {
        let k = keys(load("[server]\nlisten_addr = \"x\"\n", &[]).unwrap_err());
        assert!(k.iter().any(|k| k.contains("server")), "{k:?}");
    }

    #[test]
    fn impossible_values_are_named() {
        let k = keys(
            load(
                "[rate_limit]\nper_second = 0\n[notify.data_usage]\nthresholds=[0.5, 1.5]\n[templates]\ndefault_timezone=\"Mars/Base\"\n[security]\nallowed_ips=[\"10.0.0.0/33\"]\n",
                &[],
            )
            .unwrap_err(),
        );
        for want in [
            "rate_limit.per_second",
            "notify.data_usage.thresholds[1]",
            "templates.default_timezone",
            "security.allowed_ips[0]",
        ] {
            assert!(k.iter().any(|k| k == want), "{want} not in {k:?}");
        }
    }

    #[test]
    fn wrong_type_is_named() {
        let k = keys(load("[server]\nmax_body_bytes = \"big\"\n", &[]).unwrap_err());
        assert_eq!(k, vec!["server.max_body_bytes".to_string()]);
    }

    #[test]
    fn public_admin_needs_token() {
        let k = keys(load("[admin]\nlisten = \"0.0.0.0:8081\"\n", &[]).unwrap_err());
        assert_eq!(k, vec!["admin.token".to_string()]);
        load(
            "[admin]\nlisten = \"0.0.0.0:8081\"\ntoken=\"s3cret\"\n",
            &[],
        )
        .unwrap();
    }

    #[test]
    fn env_overrides_single_keys() {
        let c = load(
            "",
            &[
                ("ESIM_NOTIFY_EMAIL__SMTP__PASSWORD", "123456"),
                ("ESIM_NOTIFY_RATE_LIMIT__PER_SECOND", "3"),
                ("ESIM_NOTIFY_CONFIG", "/elsewhere.toml"),
            ],
        )
        .unwrap();
        assert_eq!(c.email.smtp.password.expose(), "123456");
        assert_eq!(c.rate_limit.per_second, 3);
        assert!(!format!("{c:?}").contains("123456"));
    }

    #[test]
    fn status_map_is_replaced_not_merged() {
        let c = load("[notify.esim_status]\nUSED_UP = \"esim_used_up\"\n", &[]).unwrap();
        assert_eq!(c.notify.esim_status.len(), 1);
    }

    #[test]
    fn relative_paths_follow_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(
            &path,
            "[store]\npath = \"state\"\n[templates]\ndir = \"/abs/templates\"\n",
        )
        .unwrap();
        let c = Config::load(&path).unwrap();
        assert_eq!(c.store.path, dir.path().join("state"));
        assert_eq!(c.templates.dir, PathBuf::from("/abs/templates"));
        assert_eq!(c.email.file_dir, dir.path().join("mail-out"));
    }

    #[test]
    fn durations_and_quiet_hours() {
        let k = keys(load("[retry]\nmax_age = \"soon\"\n", &[]).unwrap_err());
        assert_eq!(k, vec!["retry.max_age".to_string()]);
        assert_eq!(parse_quiet_hours("21:00-08:00"), Ok(Some((1260, 480))));
        assert!(parse_quiet_hours("25:00-08:00").is_err());
    }

    fn reasons(e: ConfigError) -> Vec<String> {
        match e {
            ConfigError::Invalid(p) => p.into_iter().map(|p| p.to_string()).collect(),
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn env_overrides_of_string_keys_stay_as_written() {
        for v in ["007", "[pa55]", "0123", "true", "1.50", "\"quoted\""] {
            let c = load(
                "",
                &[
                    ("ESIM_NOTIFY_SECURITY__WEBHOOK_TOKEN", v),
                    ("ESIM_NOTIFY_EMAIL__SMTP__PASSWORD", v),
                    ("ESIM_NOTIFY_BRAND__NAME", v),
                ],
            )
            .unwrap();
            assert_eq!(c.security.webhook_token.expose(), v);
            assert_eq!(c.email.smtp.password.expose(), v);
            assert_eq!(c.brand["name"], v);
        }
    }

    #[test]
    fn env_overrides_of_other_keys_follow_their_type() {
        let c = load(
            "",
            &[
                (
                    "ESIM_NOTIFY_SECURITY__ALLOWED_IPS",
                    "[\"10.0.0.1\", \"10.1.0.0/16\"]",
                ),
                ("ESIM_NOTIFY_SECURITY__TRUSTED_PROXIES", "127.0.0.1, ::1"),
                ("ESIM_NOTIFY_EMAIL__SMTP__PORT", "2525"),
                ("ESIM_NOTIFY_NOTIFY__DATA_USAGE__ENABLED", "false"),
                ("ESIM_NOTIFY_NOTIFY__DATA_USAGE__THRESHOLDS", "[0.3, 1]"),
                ("ESIM_NOTIFY_NOTIFY__ESIM_STATUS__IN_USE", "esim_used_up"),
                ("ESIM_NOTIFY_RETRY__MAX_AGE", "3d"),
            ],
        )
        .unwrap();
        assert_eq!(c.security.allowed_ips, ["10.0.0.1", "10.1.0.0/16"]);
        assert_eq!(c.security.trusted_proxies, ["127.0.0.1", "::1"]);
        assert_eq!(c.email.smtp.port, 2525);
        assert!(!c.notify.data_usage.enabled);
        assert_eq!(c.notify.data_usage.thresholds, [0.3, 1.0]);
        assert_eq!(c.notify.esim_status["IN_USE"], "esim_used_up");
        assert_eq!(c.retry.max_age.0, Duration::from_secs(3 * 86400));

        let r = reasons(load("", &[("ESIM_NOTIFY_EMAIL__SMTP__PORT", "smtp")]).unwrap_err());
        assert_eq!(
            r,
            ["email.smtp.port: expected an integer, found `smtp` (from ESIM_NOTIFY_EMAIL__SMTP__PORT)"]
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let r = reasons(
            load(
                "[server]\nlisten_addr = \"x\"\n[retry]\nmax_age = \"soon\"\ninitial_backoff = 5\n[email]\ntransport = \"smtpx\"\n[rate_limit]\nper_second = 0\n",
                &[("ESIM_NOTIFY_STORE__HISTORY", "forever")],
            )
            .unwrap_err(),
        );
        for want in [
            "server.listen_addr: unknown key",
            "retry.max_age: `soon` is not a duration",
            "retry.initial_backoff: expected a string, found an integer (5)",
            "email.transport: `smtpx` must be one of smtp, file",
            "rate_limit.per_second: must be at least 1",
            "store.history: `forever` is not a duration",
        ] {
            assert!(
                r.iter().any(|r| r.starts_with(want)),
                "{want:?} not in {r:#?}"
            );
        }
        assert!(
            r.iter()
                .any(|r| r.ends_with("(from ESIM_NOTIFY_STORE__HISTORY)")),
            "{r:#?}"
        );
    }

    #[test]
    fn store_backend_keys_are_checked_and_the_url_is_never_shown() {
        let c = load("", &[]).unwrap();
        assert_eq!(c.store.backend, StoreBackend::Sled);
        assert_eq!(
            (c.store.pool, c.store.lease.0),
            (8, Duration::from_secs(60))
        );
        let r = reasons(
            load(
                "[store]\nbackend = \"postgres\"\npool = 0\nlease = \"0s\"\n",
                &[],
            )
            .unwrap_err(),
        );
        for want in [
            "store.url: must be set when store.backend = \"postgres\"",
            "store.pool: must be greater than 0",
            "store.lease: ",
        ] {
            assert!(
                r.iter().any(|r| r.starts_with(want)),
                "{want:?} not in {r:#?}"
            );
        }
        let r = reasons(load("[store]\nbackend = \"mysql\"\n", &[]).unwrap_err());
        assert!(
            r.iter()
                .any(|r| r.starts_with("store.backend: `mysql` must be one of sled, postgres")),
            "{r:#?}"
        );
        let r = reasons(
            load(
                "[store]\nbackend = \"postgres\"\n",
                &[("ESIM_NOTIFY_STORE__URL", "mysql://u:s3cret@h/db")],
            )
            .unwrap_err(),
        );
        assert!(r.iter().any(|r| r.starts_with("store.url: ")), "{r:#?}");
        assert!(!format!("{r:?}").contains("s3cret"), "{r:#?}");
        let c = load(
            "[store]\nbackend = \"postgres\"\n",
            &[(
                "ESIM_NOTIFY_STORE__URL",
                "postgres://u:s3cret@db.example/notify",
            )],
        )
        .unwrap();
        assert_eq!(
            c.store.url.expose(),
            "postgres://u:s3cret@db.example/notify"
        );
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn a_syntax_error_names_line_and_column() {
        let r = reasons(
            load(
                "[server]\nlisten = \"127.0.0.1:8080\"\nwebhook_path = /x\n",
                &[],
            )
            .unwrap_err(),
        );
        assert_eq!(r.len(), 1);
        assert!(r[0].starts_with("line 3, column 16: TOML syntax"), "{r:?}");
    }

    #[test]
    fn duplicate_thresholds_are_refused() {
        let k = keys(load("[notify.data_usage]\nthresholds = [0.5, 0.2, 0.5]\n", &[]).unwrap_err());
        assert_eq!(k, ["notify.data_usage.thresholds[2]"]);
    }

    #[test]
    fn a_variable_naming_no_key_is_a_warning() {
        let c = load(
            "",
            &[
                ("ESIM_NOTIFY_SERVER_LISTEN", "0.0.0.0:80"),
                ("ESIM_NOTIFY_SERVER__LISTN", "0.0.0.0:80"),
                ("ESIM_NOTIFY_EMAIL__SMTP", "x"),
                ("ESIM_NOTIFY_CONFIG", "/etc/esim-notify/config.toml"),
            ],
        )
        .unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:8080");
        let w = c.warnings();
        let about: Vec<_> = w.iter().filter(|w| w.contains("ESIM_NOTIFY_")).collect();
        assert_eq!(about.len(), 3, "{w:#?}");
        assert!(about.iter().any(|w| w.contains(
            "ESIM_NOTIFY_SERVER_LISTEN names no key and is ignored; did you mean ESIM_NOTIFY_SERVER__LISTEN?"
        )), "{w:#?}");
        assert!(!w.iter().any(|w| w.contains("ESIM_NOTIFY_CONFIG")));
    }

    #[test]
    fn a_whitespace_admin_token_is_none() {
        let k =
            keys(load("[admin]\nlisten = \"0.0.0.0:8081\"\ntoken = \"   \"\n", &[]).unwrap_err());
        assert_eq!(k, ["admin.token"]);
        let c = load("[admin]\ntoken = \" \\t \"\n", &[]).unwrap();
        assert!(c.admin.token.is_empty());
    }

    fn warned(file: &str, about: &str) -> bool {
        load(file, &[])
            .unwrap()
            .warnings()
            .iter()
            .any(|w| w.contains(about))
    }

    #[test]
    fn sender_check_warnings() {
        // The defaults allow loopback; trusting a loopback proxy overlaps it.
        assert!(warned(
            "[security]\ntrusted_proxies = [\"127.0.0.1\"]\n",
            "overlaps 127.0.0.1/32 in security.trusted_proxies"
        ));
        assert!(!warned(
            "[security]\nallowed_ips = [\"3.1.131.226\"]\ntrusted_proxies = [\"127.0.0.1\"]\n",
            "overlaps"
        ));
        assert!(warned(
            "[security]\nallowed_ips = [\"::ffff:3.1.131.226\", \"::ffff:10.0.0.0/104\"]\n",
            "write it as 3.1.131.226"
        ));
        assert!(warned(
            "[security]\nallowed_ips = [\"::ffff:10.0.0.0/104\"]\n",
            "write it as 10.0.0.0/8"
        ));
        assert!(!warned("", "IPv4-mapped"));
    }

    #[test]
    fn email_essential_defaults_to_the_service_emails_and_is_checked() {
        let c = load("", &[]).unwrap();
        assert_eq!(
            c.email.essential,
            ["esim_ready", "esim_cancelled", "esim_revoked"]
        );
        let k =
            keys(load("[email]\nessential = [\"esim_ready\", \"bad name\"]\n", &[]).unwrap_err());
        assert!(k.iter().any(|k| k == "email.essential[1]"), "{k:?}");
        assert!(warned(
            "[email]\nessential = [\"esim_welcome\"]\n",
            "email.essential lists `esim_welcome`"
        ));
        assert!(!warned("", "email.essential"));
    }

    #[test]
    fn smtp_credentials_without_tls_are_warned_off_loopback() {
        let base =
            "[email]\ntransport = \"smtp\"\n[email.smtp]\ntls = \"none\"\nusername = \"u\"\n";
        assert!(warned(
            &format!("{base}host = \"mail.example.com\"\n"),
            "travel unencrypted to mail.example.com"
        ));
        assert!(!warned(
            &format!("{base}host = \"127.0.0.1\"\n"),
            "unencrypted"
        ));
        assert!(!warned(
            &format!("{base}host = \"localhost\"\n"),
            "unencrypted"
        ));
        assert!(!warned(
            "[email]\ntransport = \"smtp\"\n[email.smtp]\nhost = \"mail.example.com\"\nusername = \"u\"\n",
            "unencrypted"
        ));
    }

    #[test]
    fn one_click_with_an_unreachable_public_url_is_warned() {
        let oc = "[email]\nlist_unsubscribe = \"one-click\"\n";
        assert!(warned(oc, "server.public_url empty"));
        assert!(warned(
            &format!("{oc}[server]\npublic_url = \"http://[::1]:8080\"\n"),
            "loopback"
        ));
        assert!(warned(
            &format!("{oc}[server]\npublic_url = \"http://localhost:8080\"\n"),
            "loopback"
        ));
        assert!(!warned(
            &format!("{oc}[server]\npublic_url = \"https://notify.example.com\"\n"),
            "one-click"
        ));
    }

    #[test]
    fn restart_changes_compare_secrets_by_value() {
        let a = load("[admin]\ntoken = \"old\"\n", &[]).unwrap();
        let b = load("[admin]\ntoken = \"new\"\n", &[]).unwrap();
        assert_eq!(format!("{:?}", a.admin), format!("{:?}", b.admin));
        assert_eq!(a.restart_changes(&b), ["admin.token"]);
        assert!(a.restart_changes(&a.clone()).is_empty());
        let c = load("[admin]\ntoken = \"old\"\n[email.smtp]\nport = 25\n", &[]).unwrap();
        assert_eq!(a.restart_changes(&c), ["[email]"]);
    }
}
