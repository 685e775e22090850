//! The shop's API keys (SPEC §2 `keys`, §4 `/api/v1`): what a key is, what
//! it may do, and how a presented key is recognised without keeping it.
//!
//! A key is 32 random bytes, shown once as `esn_` and 43 URL-safe base64
//! characters (the prefix lets a secret scanner or a person recognise it).
//! The store keeps only its SHA-256: a key of 256 random bits needs no slow
//! hash, since nobody can search that space, and a fast hash lets every
//! request look its key up in the store (so a revocation holds at once on
//! every instance). Nothing here touches the store: `engine` keeps the
//! records, `http::api` checks them.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What every key starts with.
pub const PREFIX: &str = "esn_";

/// Longest key name accepted.
pub const MAX_NAME_CHARS: usize = 64;

/// What a key may do. The wire names are SPEC §2's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scope {
    /// `PUT/GET/DELETE /api/v1/customers`.
    #[serde(rename = "customers")]
    Customers,
    /// `GET /api/v1/esims/{identifier}`.
    #[serde(rename = "esims:read")]
    EsimsRead,
}

impl Scope {
    pub const ALL: [Scope; 2] = [Scope::Customers, Scope::EsimsRead];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Customers => "customers",
            Scope::EsimsRead => "esims:read",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|c| c.as_str() == s.trim())
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One key as stored: never the key itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKey {
    pub name: String,
    /// SHA-256 of the key's text.
    pub hash: Vec<u8>,
    pub scopes: Vec<Scope>,
    /// Networks the key may be used from (the sender address of SPEC §4);
    /// empty: anywhere.
    pub networks: Vec<IpNet>,
    #[serde(with = "crate::serde_time")]
    pub created: DateTime<Utc>,
    /// Updated at most once a minute (see [`ApiKey::last_used_is_stale`]).
    #[serde(with = "crate::serde_time::option")]
    pub last_used: Option<DateTime<Utc>>,
}

/// How often "last used" is written: a busy shop's reads must not all
/// become writes.
pub const LAST_USED_EVERY: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

impl ApiKey {
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }

    /// Whether "last used" is older than [`LAST_USED_EVERY`] at `now`.
    pub fn last_used_is_stale(&self, now: DateTime<Utc>) -> bool {
        self.last_used.is_none_or(|t| now - t >= LAST_USED_EVERY)
    }

    /// What `keys list`, `GET /admin/keys` and the console show: no hash.
    pub fn summary(&self) -> KeySummary {
        KeySummary {
            name: self.name.clone(),
            scopes: self.scopes.clone(),
            networks: self.networks.iter().map(ToString::to_string).collect(),
            created: self.created,
            last_used: self.last_used,
        }
    }
}

/// A key as operators see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeySummary {
    pub name: String,
    pub scopes: Vec<Scope>,
    pub networks: Vec<String>,
    pub created: DateTime<Utc>,
    pub last_used: Option<DateTime<Utc>>,
}

/// What `keys add` and `POST /admin/keys` answer: the key, this once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewKey {
    #[serde(flatten)]
    pub summary: KeySummary,
    pub key: String,
}

/// A request to create a key, as the admin API and the CLI give it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRequest {
    pub name: String,
    pub scopes: Vec<String>,
    #[serde(default)]
    pub networks: Vec<String>,
}

impl KeyRequest {
    /// Refuses what cannot be a key: a name that is empty, too long or not
    /// `[A-Za-z0-9._-]`, no scope or an unknown one, a network that does not
    /// parse. A bare address is a one-address network.
    pub fn validate(&self) -> Result<(String, Vec<Scope>, Vec<IpNet>), String> {
        let name = self.name.trim();
        if name.is_empty() {
            return Err("the key needs a name".into());
        }
        if name.chars().count() > MAX_NAME_CHARS {
            return Err(format!("a key name is at most {MAX_NAME_CHARS} characters"));
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return Err(format!(
                "key name `{}`: use letters, digits, '.', '_' and '-' only",
                name.escape_debug()
            ));
        }
        let mut scopes = Vec::new();
        for s in self.scopes.iter().flat_map(|s| s.split(',')) {
            if s.trim().is_empty() {
                continue;
            }
            let scope = Scope::parse(s).ok_or_else(|| {
                format!(
                    "unknown scope `{}`: use customers and/or esims:read",
                    s.trim().escape_debug()
                )
            })?;
            if !scopes.contains(&scope) {
                scopes.push(scope);
            }
        }
        if scopes.is_empty() {
            return Err("give at least one scope: customers, esims:read".into());
        }
        let mut networks = Vec::new();
        for n in self.networks.iter().flat_map(|s| s.split(',')) {
            let n = n.trim();
            if n.is_empty() {
                continue;
            }
            let net = n
                .parse::<IpNet>()
                .or_else(|_| n.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    format!(
                        "`{}` is not an IP network such as 203.0.113.0/24",
                        n.escape_debug()
                    )
                })?;
            networks.push(net);
        }
        Ok((name.to_string(), scopes, networks))
    }
}

impl KeyRequest {
    /// A new key for this request: the record to store and the answer that
    /// shows the key's text this once.
    pub fn issue(&self, now: DateTime<Utc>) -> Result<(ApiKey, NewKey), String> {
        let (name, scopes, networks) = self.validate()?;
        let (text, hash) = generate();
        let key = ApiKey {
            name,
            hash,
            scopes,
            networks,
            created: now,
            last_used: None,
        };
        let shown = NewKey {
            summary: key.summary(),
            key: text,
        };
        Ok((key, shown))
    }
}

/// Why a key of that name cannot be added.
pub fn name_taken(name: &str) -> String {
    format!("a key named `{name}` exists already: revoke it first or choose another name")
}

/// Why a key cannot be revoked.
pub fn no_such_key(name: &str) -> String {
    format!("no API key named `{name}`")
}

/// A fresh key's text and the hash the store keeps.
pub fn generate() -> (String, Vec<u8>) {
    let bytes: [u8; 32] = rand::random();
    let text = format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let hash = hash(&text);
    (text, hash)
}

/// The hash a presented key is looked up by.
pub fn hash(text: &str) -> Vec<u8> {
    Sha256::digest(text.as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(name: &str, scopes: &[&str], nets: &[&str]) -> KeyRequest {
        KeyRequest {
            name: name.into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            networks: nets.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn keys_are_long_random_and_recognisable() {
        let (a, ha) = generate();
        let (b, _) = generate();
        assert_ne!(a, b);
        assert!(a.starts_with(PREFIX) && a.len() == PREFIX.len() + 43, "{a}");
        assert_eq!(hash(&a), ha);
        assert_eq!(ha.len(), 32);
    }

    #[test]
    fn requests_are_checked() {
        let (name, scopes, nets) = req(
            "shop",
            &["customers,esims:read"],
            &["203.0.113.0/24", "198.51.100.7"],
        )
        .validate()
        .unwrap();
        assert_eq!(name, "shop");
        assert_eq!(scopes, vec![Scope::Customers, Scope::EsimsRead]);
        assert_eq!(nets[1].to_string(), "198.51.100.7/32");
        assert!(req("", &["customers"], &[]).validate().is_err());
        assert!(req("a b", &["customers"], &[]).validate().is_err());
        assert!(req("shop", &[], &[]).validate().is_err());
        assert!(req("shop", &["esims:write"], &[]).validate().is_err());
        assert!(req("shop", &["customers"], &["10.0.0.0/33"])
            .validate()
            .is_err());
    }

    #[test]
    fn last_used_is_written_at_most_once_a_minute() {
        let now = Utc::now();
        let mut k = ApiKey {
            name: "shop".into(),
            hash: hash("x"),
            scopes: vec![Scope::Customers],
            networks: vec![],
            created: now,
            last_used: None,
        };
        assert!(k.last_used_is_stale(now));
        k.last_used = Some(now - chrono::TimeDelta::seconds(30));
        assert!(!k.last_used_is_stale(now));
        k.last_used = Some(now - chrono::TimeDelta::seconds(61));
        assert!(k.last_used_is_stale(now));
    }
}
