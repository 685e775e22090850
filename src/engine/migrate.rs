//! Upgrading a store written by an earlier release, once, when it opens.
//!
//! Format 0 (releases before versioned records) wrote every record as JSON
//! and kept a copy of the template variables with each notice; format 1
//! writes [`codec`](super::codec) records and keeps the figures only. The
//! migration rewrites each JSON record in place, a thousand per unit of
//! work, and writes the format last: a crash part-way leaves some records
//! converted, and the next start converts the rest (a record's first byte
//! says which it is).
//!
//! Format 2 gives each suppression one of the four reasons of SPEC §2 and
//! a `detail`, where formats 0 and 1 kept free text
//! ([`SuppressReason::classify`] reads it). The record's layout changed but
//! not its version byte, so the 1→2 step rewrites every suppression and the
//! format in one unit of work: all or nothing. (The list is small: one
//! record per address that unsubscribed, bounced or was stopped.)

use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::codec::encode;
use super::model::{Counts, DeadLetter, LogEntry, QueuedNotice, SuppressReason, Suppression};
use super::records::{meta, EsimRecord, EventRecord, StoredBinding};
use super::Engine;
use crate::event::Validity;
use crate::store::{Space, StoreError};
use crate::vars::{Captured, Figures};

const CHUNK: usize = 1000;

/// The format of the whole store this release writes (`meta::FORMAT`):
/// records behind version byte [`VERSION`](super::codec::VERSION), suppressions with reasons.
pub const FORMAT: u8 = 2;

/// Brings the store to format [`FORMAT`]; logs what it did.
pub fn migrate(engine: &Engine) -> Result<(), StoreError> {
    let storage = engine.storage();
    let format = storage.get(Space::Meta, meta::FORMAT)?;
    match format.as_deref() {
        Some([FORMAT]) => return Ok(()),
        Some([v]) if *v > FORMAT => {
            return Err(StoreError::Corrupt(format!(
                "the store has format {v}, newer than this release ({FORMAT}): upgrade esim-notify"
            )))
        }
        Some([1]) => return suppressions_from_v1(engine),
        _ => {}
    }
    let empty = Space::ALL
        .iter()
        .all(|s| storage.scan(*s, &[]).next().is_none());
    if empty {
        return engine.unit(|tx| {
            tx.put_raw(Space::Meta, meta::FORMAT, vec![FORMAT]);
            Ok(())
        });
    }
    from_v0(engine)
}

/// Format 0 (JSON records) to [`FORMAT`].
fn from_v0(engine: &Engine) -> Result<(), StoreError> {
    let storage = engine.storage();
    let started = Instant::now();
    let mut converted = 0;
    converted += convert::<EventV0, EventRecord>(engine, Space::Events, |e| {
        Ok(EventRecord {
            at: e.at,
            esim: e.esim,
            body: serde_json::to_vec(&e.body).unwrap_or_default(),
        })
    })?;
    converted += convert::<Value, EsimRecord>(engine, Space::Esims, |mut v| {
        if let Some(parked) = v.get_mut("parked").and_then(Value::as_array_mut) {
            for p in parked {
                captured_in_place(p);
            }
        }
        from_json(v)
    })?;
    converted += convert::<StoredBinding, StoredBinding>(engine, Space::Customers, Ok)?;
    converted += convert::<Value, QueuedNotice>(engine, Space::Queue, |mut v| {
        captured_in_place(&mut v);
        from_json(v)
    })?;
    converted += convert::<Value, DeadLetter>(engine, Space::Dead, |mut v| {
        if let Some(n) = v.get_mut("notice") {
            captured_in_place(n);
        }
        from_json(v)
    })?;
    converted += convert::<LogEntry, LogEntry>(engine, Space::Log, Ok)?;
    converted +=
        convert::<SuppressionV1, Suppression>(engine, Space::Suppress, |s| Ok(s.upgrade()))?;
    engine.unit(|tx| {
        if let Some(b) = tx.get_raw(Space::Meta, meta::COUNTS)? {
            if b.first() == Some(&b'{') {
                let c: Counts = serde_json::from_slice(&b).map_err(corrupt)?;
                tx.put(Space::Meta, meta::COUNTS, &c);
            }
        }
        tx.put_raw(Space::Meta, meta::FORMAT, vec![FORMAT]);
        Ok(())
    })?;
    storage.flush()?;
    tracing::info!(
        records = converted,
        seconds = started.elapsed().as_secs_f64(),
        "store migrated from format 0 (JSON records) to format {FORMAT} (versioned binary records, suppressions with reasons)"
    );
    Ok(())
}

/// Format 1 to 2: every suppression gets its reason, in one unit of work.
fn suppressions_from_v1(engine: &Engine) -> Result<(), StoreError> {
    let mut by_reason = [0usize; SuppressReason::ALL.len()];
    engine.unit(|tx| {
        for (k, old) in tx.scan::<SuppressionV1>(Space::Suppress, &[])? {
            let new = old.upgrade();
            by_reason[SuppressReason::ALL
                .iter()
                .position(|r| *r == new.reason)
                .unwrap_or(0)] += 1;
            tx.put(Space::Suppress, &k, &new);
        }
        tx.put_raw(Space::Meta, meta::FORMAT, vec![FORMAT]);
        Ok(())
    })?;
    engine.storage().flush()?;
    let counts: Vec<String> = SuppressReason::ALL
        .iter()
        .zip(by_reason)
        .map(|(r, n)| format!("{r} {n}"))
        .collect();
    tracing::info!(
        suppressions = by_reason.iter().sum::<usize>(),
        "store migrated from format 1 to format {FORMAT}: each suppression has a reason ({})",
        counts.join(", ")
    );
    Ok(())
}

/// A suppression as formats 0 (JSON) and 1 (postcard) kept it: free text.
#[derive(Deserialize)]
struct SuppressionV1 {
    email: String,
    reason: String,
    #[serde(with = "crate::serde_time")]
    at: DateTime<Utc>,
    #[serde(default)]
    auto_for: Vec<u64>,
}

impl SuppressionV1 {
    /// One-click → `unsubscribed`, "user unknown" (or one a dead letter
    /// added) → `bounced`, anything else → `operator` (the text kept).
    fn upgrade(self) -> Suppression {
        let (mut reason, mut detail) = SuppressReason::classify(&self.reason);
        if !self.auto_for.is_empty() && reason != SuppressReason::Bounced {
            reason = SuppressReason::Bounced;
            detail = Some(self.reason);
        }
        Suppression {
            email: self.email,
            reason,
            since: self.at,
            detail,
            auto_for: self.auto_for,
        }
    }
}

/// Rewrites every JSON record of one keyspace with `to_new`.
fn convert<Old: DeserializeOwned, New: Serialize>(
    engine: &Engine,
    space: Space,
    to_new: impl Fn(Old) -> Result<New, StoreError>,
) -> Result<usize, StoreError> {
    let mut keys = Vec::new();
    for kv in engine.storage().scan(space, &[]) {
        let (k, v) = kv?;
        if v.first() == Some(&b'{') {
            keys.push(k);
        }
    }
    for chunk in keys.chunks(CHUNK) {
        engine.unit(|tx| {
            for k in chunk {
                let Some(v) = tx.get_raw(space, k)? else {
                    continue;
                };
                let old: Old = serde_json::from_slice(&v).map_err(corrupt)?;
                tx.put_raw(space, k, encode(&to_new(old)?));
            }
            Ok(())
        })?;
    }
    Ok(keys.len())
}

fn corrupt(e: serde_json::Error) -> StoreError {
    StoreError::Corrupt(format!("a format-0 record: {e}"))
}

fn from_json<T: DeserializeOwned>(v: Value) -> Result<T, StoreError> {
    serde_json::from_value(v).map_err(corrupt)
}

/// An event as format 0 kept it.
#[derive(Deserialize)]
struct EventV0 {
    at: DateTime<Utc>,
    esim: Option<u64>,
    body: Value,
}

/// Replaces the template variables a format-0 notice (or parked notice)
/// kept, `vars`, with the figures format 1 keeps.
fn captured_in_place(notice: &mut Value) {
    let Some(obj) = notice.as_object_mut() else {
        return;
    };
    let vars = obj.remove("vars").unwrap_or(Value::Null);
    let captured = captured_from_v0(&vars);
    obj.insert(
        "vars".into(),
        serde_json::to_value(captured).unwrap_or(Value::Null),
    );
}

fn captured_from_v0(vars: &Value) -> Captured {
    if vars.is_null() {
        return Captured::default();
    }
    let s = |v: &Value| v.as_str().map(str::to_string);
    let event = &vars["event"];
    let figures = if let Some(u) = vars.get("usage") {
        Figures::Usage {
            total_volume: u["totalVolume"].as_u64(),
            order_usage: u["orderUsage"].as_u64(),
            remain: u["remain"].as_u64(),
            remain_fraction: u["remainPercent"].as_f64().map(|p| p / 100.0),
            threshold: u["threshold"].as_f64(),
        }
    } else if let Some(v) = vars.get("validity") {
        Figures::Validity(Validity {
            remain: v["remain"].as_i64(),
            total_duration: v["totalDuration"].as_i64(),
            duration_unit: s(&v["durationUnit"]),
            expired_time: v["expiredTime"]
                .as_str()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc)),
        })
    } else if let Some(st) = vars.get("status") {
        Figures::Status {
            esim_status: s(&st["esimStatus"]),
            smdp_status: s(&st["smdpStatus"]),
        }
    } else if let Some(i) = vars.get("install") {
        Figures::Install {
            ac: s(&i["ac"]),
            qr_code_url: s(&i["qrCodeUrl"]),
            short_url: s(&i["shortUrl"]),
            apn: s(&i["apn"]),
        }
    } else {
        Figures::Redacted
    };
    Captured {
        notify_type: s(&event["notifyType"]),
        notify_id: s(&event["notifyId"]),
        generated_at: event["eventGenerateTime"]
            .as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc)),
        figures,
    }
}
