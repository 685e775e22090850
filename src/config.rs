//! Typed configuration: embedded defaults, the operator's file, then
//! `ESIM_NOTIFY_<SECTION>__<KEY>` environment overrides, validated as a whole.
//!
//! Every problem names its key, so an operator can fix a file without reading
//! code. Secrets (`admin.token`, `security.webhook_token`,
//! `email.smtp.password`, `provider.access_code`) are never printed: the
//! `Debug` of [`Secret`] is redacted.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Format, Toml};
use figment::Figment;
use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize};

/// The defaults the binary ships with; the operator's file only needs the keys it changes.
pub const DEFAULT_TOML: &str = include_str!("config.default.toml");

/// Variable naming the config file; having no double underscore it is never a key.
pub const CONFIG_ENV: &str = "ESIM_NOTIFY_CONFIG";

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
    pub retry: Retry,
    pub customers: Customers,
    pub templates: TemplatesConfig,
    pub notify: Notify,
    pub delivery: Delivery,
    pub provider: Provider,
    pub log: Log,
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
    pub path: PathBuf,
    pub cache_mb: u64,
    pub delivery_dedup: Dur,
    pub history: Dur,
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
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"***\"" })
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // An environment override such as PASSWORD=123456 arrives as a number.
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

impl ConfigError {
    fn one(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid(vec![ConfigProblem {
            key: key.into(),
            reason: reason.into(),
        }])
    }
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

    /// Loads from the text of an operator's file and an environment, then validates.
    pub fn from_sources(
        file: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let user: toml::Table = toml::from_str(file)
            .map_err(|e| ConfigError::one("config.toml", e.message().to_string()))?;
        let overrides: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("ESIM_NOTIFY_") && k.contains("__"))
            .collect();
        let figment = Figment::from(Toml::string(DEFAULT_TOML))
            .merge(Toml::string(file))
            .merge(EnvVars { vars: overrides });
        let mut config: Config = figment.extract().map_err(figment_problems)?;

        // Status maps are replaced, not merged: an operator who deletes a
        // line from [notify.esim_status] means "send nothing for it".
        if let Some(notify) = user.get("notify").and_then(|v| v.as_table()) {
            for (name, target) in [
                ("esim_status", &mut config.notify.esim_status),
                ("order_status", &mut config.notify.order_status),
            ] {
                if let Some(t) = notify.get(name).and_then(|v| v.as_table()) {
                    target.retain(|k, _| t.contains_key(k));
                }
            }
        }

        let problems = config.validate();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// Every impossible value, each with its key. Template existence is checked
    /// where templates are loaded (`startup`, `check`).
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut p = Problems::default();
        if let Err(e) = self.server.listen.parse::<SocketAddr>() {
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
        match self.admin.listen.parse::<SocketAddr>() {
            Err(e) => p.add("admin.listen", format!("`{}`: {e}", self.admin.listen)),
            Ok(a) if !a.ip().is_loopback() && self.admin.token.is_empty() => p.add(
                "admin.token",
                format!("required when admin.listen ({a}) is not a loopback address"),
            ),
            Ok(_) => {}
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
        p.positive("store.delivery_dedup", self.store.delivery_dedup);
        p.positive("store.history", self.store.history);
        for key in ["name"] {
            if self.brand.get(key).is_none_or(|v| v.trim().is_empty()) {
                p.add(format!("brand.{key}"), "must be set");
            }
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

    pub fn provider_enabled(&self) -> bool {
        !self.provider.access_code.is_empty()
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
        if self.provider_enabled() {
            w.push("provider.access_code is set, but this version does not query the provider API yet: esim_ready emails are recorded as superseded (never sent without an activation code) and plan.* stays null".to_string());
        }
        if self.security.webhook_token.is_empty() {
            w.push(
                "security.webhook_token is empty: the webhook URL carries no secret".to_string(),
            );
        }
        w
    }
}

/// An IP address or a CIDR network.
pub fn parse_net(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("`{s}` is not an IP address or network such as 10.0.0.0/8"))
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

/// Turns figment's errors into key + reason pairs (figment names the path).
fn figment_problems(err: figment::Error) -> ConfigError {
    let problems = err
        .into_iter()
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
        .collect();
    ConfigError::Invalid(problems)
}

/// `ESIM_NOTIFY_<SECTION>__<KEY>` variables as a figment provider. figment's
/// own `Env` reads only the process environment; taking the variables as a
/// value lets tests and `check` pass an explicit one.
struct EnvVars {
    vars: Vec<(String, String)>,
}

impl figment::Provider for EnvVars {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::named("environment variable(s)")
    }

    fn data(
        &self,
    ) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        use figment::value::{Dict, Value};
        let mut root = Dict::new();
        for (k, v) in &self.vars {
            let Some(rest) = k.strip_prefix("ESIM_NOTIFY_") else {
                continue;
            };
            let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
            if path.len() < 2 || path.iter().any(|s| s.is_empty()) {
                continue;
            }
            let value: Value = v.parse().unwrap_or_else(|_| Value::from(v.clone()));
            insert(&mut root, &path, value);
        }
        Ok(figment::Profile::Default.collect(root))
    }
}

fn insert(dict: &mut figment::value::Dict, path: &[String], value: figment::value::Value) {
    use figment::value::{Dict, Value};
    if path.len() == 1 {
        dict.insert(path[0].clone(), value);
        return;
    }
    let entry = dict
        .entry(path[0].clone())
        .or_insert_with(|| Value::from(Dict::new()));
    if let Value::Dict(_, inner) = entry {
        insert(inner, &path[1..], value);
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
}
