//! The records only the engine reads (an eSIM, a binding, an event) and the
//! key of every record in its keyspace.
//!
//! Keys that must sort as numbers are big-endian (the queue iterates oldest
//! first, an eSIM's log reads in order). Small values that need no version
//! (an alias's eSIM id, a dedup instant) are raw bytes; everything else is a
//! versioned record (`codec`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::model::Parked;
use super::EsimId;
use crate::customers::{IdKind, Recipient};
use crate::policy::EsimState;
use crate::provider::Plan;

/// What is kept of one eSIM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EsimRecord {
    pub id: EsimId,
    pub state: EsimState,
    pub parked: Vec<Parked>,
    #[serde(with = "crate::serde_time")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "crate::serde_time")]
    pub last_event_at: DateTime<Utc>,
    /// The plan as the provider last described it, when it is configured.
    #[serde(default)]
    pub plan: Option<CachedPlan>,
}

/// A plan fetched from the provider, kept with the eSIM so it is asked once
/// per allowance: a larger totalVolume (a top-up) makes it stale.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedPlan {
    pub plan: Plan,
    /// The eSIM's totalVolume when the plan was fetched.
    pub total_volume: Option<u64>,
    #[serde(with = "crate::serde_time")]
    pub fetched_at: DateTime<Utc>,
}

impl CachedPlan {
    /// Whether it still describes the eSIM's current allowance.
    pub fn fresh_for(&self, state: &EsimState) -> bool {
        match (state.cycle_volume, self.total_volume) {
            (Some(now), Some(then)) => now <= then,
            _ => true,
        }
    }
}

impl EsimRecord {
    pub fn new(id: EsimId, now: DateTime<Utc>) -> EsimRecord {
        EsimRecord {
            id,
            state: EsimState::default(),
            parked: Vec::new(),
            created_at: now,
            last_event_at: now,
            plan: None,
        }
    }

    /// The key notice identities (and so Message-IDs) are built on: the
    /// stable esimTranNo, else the engine's own number.
    pub fn identity_key(&self) -> String {
        self.state
            .ids
            .esim_tran_no
            .clone()
            .unwrap_or_else(|| format!("esim-{}", self.id))
    }
}

/// A binding as stored. `iccid_owner` is the esimTranNo the ICCID belonged
/// to when bound (or first seen after binding): ICCIDs are recycled, and a
/// customer bound by ICCID must not follow it to the next eSIM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredBinding {
    pub recipient: Recipient,
    pub iccid_owner: Option<String>,
    #[serde(with = "crate::serde_time")]
    pub bound_at: DateTime<Utc>,
}

/// One accepted delivery: its body, kept once (notices keep only the
/// figures they need), until it is older than `store.history`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    #[serde(with = "crate::serde_time")]
    pub at: DateTime<Utc>,
    pub esim: Option<EsimId>,
    /// The body as JSON text (minified).
    pub body: Vec<u8>,
}

/// `t:26042216320015`, `i:8910300000059824319`, ... for aliases and bindings.
pub fn ident(kind: IdKind, value: &str) -> Vec<u8> {
    format!("{}:{}", kind.tag(), value).into_bytes()
}

/// The identifier an [`ident`] key names.
pub fn parse_ident(key: &[u8]) -> Option<(IdKind, String)> {
    let key = std::str::from_utf8(key).ok()?;
    let (tag, value) = key.split_once(':')?;
    let kind = IdKind::LOOKUP_ORDER.into_iter().find(|k| k.tag() == tag)?;
    Some((kind, value.to_string()))
}

/// An eSIM's log entry: the eSIM, then a sequence number.
pub fn log_key(esim: EsimId, seq: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&esim.to_be_bytes());
    k[8..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// Keys of the meta space. The backend keeps its own under `store/`.
pub mod meta {
    pub const COUNTS: &[u8] = b"counts";
    pub const PAUSED: &[u8] = b"paused";
    /// When the last delivery was accepted (Unix ms), so the metric survives a restart.
    pub const LAST_WEBHOOK: &[u8] = b"last_webhook";
    /// The format of the whole store ([`super::super::migrate::FORMAT`]).
    pub const FORMAT: &[u8] = b"format";

    /// Where the shards of the counts start ([`super::super::model::CountsDelta`]).
    pub const COUNT_SHARDS: &[u8] = b"counts/";

    /// One shard of the counts.
    pub fn count_shard(n: u8) -> Vec<u8> {
        let mut k = COUNT_SHARDS.to_vec();
        k.push(n);
        k
    }

    pub fn secret(name: &str) -> Vec<u8> {
        format!("secret/{name}").into_bytes()
    }
}
