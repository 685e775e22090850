//! Which customer notices an event calls for (SPEC §6).
//!
//! Pure on purpose: the store calls [`apply`] inside its per-eSIM
//! transaction, so the decision must be repeatable from the stored state and
//! the event alone, and testable with plain values. No clock is read (the
//! caller passes `now`), nothing is logged; the reasons for sending nothing
//! travel back in [`Outcome::notes`] for the per-eSIM decision log.
//!
//! Three ideas carry the rules:
//! - a *data cycle* is one allowance (one value of totalVolume); data levels
//!   and USED_UP are armed once per cycle, and the cycle number is the epoch
//!   of their notices, so a top-up gives them new identities;
//! - the *expiry instant* is the epoch of validity notices, so an extended
//!   plan re-arms them;
//! - a *terminal* status (expired, cancelled, revoked) ends every notice
//!   about data and validity for good.
//!
//! Because usage figures lag by hours and deliveries arrive out of order, a
//! notice queued now may be false by the time it is sent or released:
//! [`overtaken`] and [`release`] re-check it against the state at that time.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::event::{Event, Identifiers, NotifyType, Usage, Validity};

/// esimStatus values after which the eSIM can no longer be used.
pub const TERMINAL_STATUSES: [&str; 4] = ["USED_EXPIRED", "UNUSED_EXPIRED", "CANCEL", "REVOKED"];

/// The esimStatus that is once per data cycle rather than once per eSIM.
pub const USED_UP: &str = "USED_UP";
/// The esimStatus that, after USED_UP, means the allowance was renewed.
pub const IN_USE: &str = "IN_USE";

pub fn is_terminal(status: &str) -> bool {
    TERMINAL_STATUSES.contains(&status)
}

/// The two ways a plan ends by time. They map to different templates (an
/// unused plan gets its own words) but are one fact: USED_EXPIRED then
/// UNUSED_EXPIRED (or the reverse) is one email (SPEC §6).
pub const EXPIRED_STATUSES: [&str; 2] = ["USED_EXPIRED", "UNUSED_EXPIRED"];

/// For an expiry status: the template of the other expiry status already
/// queued for this eSIM, if any.
fn expiry_told<'r>(state: &EsimState, status: &str, rules: &'r Rules) -> Option<&'r String> {
    if !EXPIRED_STATUSES.contains(&status) {
        return None;
    }
    EXPIRED_STATUSES
        .iter()
        .filter_map(|s| rules.esim_status.get(*s))
        .find(|t| state.templates_notified.contains(*t))
}

/// The `[notify]` section as the policy needs it; built by the config module
/// so that this module stays free of config types and reloads (SIGHUP) only
/// swap a value.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    pub data_enabled: bool,
    /// Fractions REMAINING, each in (0,1]; any order.
    pub thresholds: Vec<f64>,
    pub data_template: String,
    pub validity_enabled: bool,
    pub validity_template: String,
    /// esimStatus -> template; a status not listed sends nothing.
    pub esim_status: BTreeMap<String, String>,
    /// orderStatus -> template (GOT_RESOURCE -> esim_ready).
    pub order_status: BTreeMap<String, String>,
    /// Ready notices need the provider API (the activation code), so they
    /// are only queued when it is configured.
    pub provider_enabled: bool,
}

impl Default for Rules {
    /// The defaults of SPEC §3 (provider API not configured).
    fn default() -> Self {
        let map = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        Rules {
            data_enabled: true,
            thresholds: vec![0.5, 0.2, 0.1],
            data_template: "data_usage".into(),
            validity_enabled: true,
            validity_template: "validity_usage".into(),
            esim_status: map(&[
                ("IN_USE", "esim_activated"),
                ("USED_UP", "esim_used_up"),
                ("USED_EXPIRED", "esim_expired"),
                ("UNUSED_EXPIRED", "esim_expired_unused"),
                ("CANCEL", "esim_cancelled"),
                ("REVOKED", "esim_revoked"),
            ]),
            order_status: map(&[("GOT_RESOURCE", "esim_ready")]),
            provider_enabled: false,
        }
    }
}

/// What the engine knows of one eSIM. Stored as JSON by the store; every
/// field defaults so that state written by an older version still loads.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EsimState {
    /// Filled by the store (alias resolution), never by the policy.
    pub ids: Identifiers,
    pub eid: Option<String>,
    /// The last esimStatus reported (ESIM_STATUS or SMDP_EVENT).
    pub esim_status: Option<String>,
    pub smdp_status: Option<String>,
    /// The last orderStatus reported (ORDER_STATUS).
    pub order_status: Option<String>,
    /// The newest usage figures of the current cycle, for templates.
    pub usage: Usage,
    /// The last VALIDITY_USAGE figures, for templates.
    pub validity: Validity,
    /// The current expiry instant (the latest expiredTime seen).
    #[serde(with = "crate::serde_time::option")]
    pub expires_at: Option<DateTime<Utc>>,
    /// Data cycle number: the epoch of data and USED_UP notices.
    pub cycle: u32,
    /// totalVolume of the current cycle; None until one is seen.
    pub cycle_volume: Option<u64>,
    /// The current cycle was opened by IN_USE after USED_UP and has not yet
    /// seen its volume: the next non-stale totalVolume is adopted into it
    /// rather than opening another cycle.
    pub cycle_pending: bool,
    /// When the current cycle was opened (provider clock when known); usage
    /// measured before it belongs to the previous allowance.
    #[serde(with = "crate::serde_time::option")]
    pub cycle_opened_at: Option<DateTime<Utc>>,
    /// The most severe data level queued in the current cycle.
    pub data_level: Option<f64>,
    /// The cycle in which USED_UP was last reported.
    pub used_up_cycle: Option<u32>,
    /// Expiry instants (unix seconds) a validity notice was queued for.
    pub validity_notified: BTreeSet<i64>,
    /// Status and ready templates queued (once per eSIM), USED_UP excepted.
    pub templates_notified: BTreeSet<String>,
    /// The first terminal status reported; nothing about data or validity
    /// is told after it.
    pub terminal: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NoticeKind {
    Data,
    Validity,
    Status,
    Ready,
}

impl NoticeKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            NoticeKind::Data => "data",
            NoticeKind::Validity => "validity",
            NoticeKind::Status => "status",
            NoticeKind::Ready => "ready",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notice {
    pub kind: NoticeKind,
    pub template: String,
    /// Data notices: the threshold crossed (e.g. 0.1).
    pub level: Option<f64>,
    /// Data and USED_UP: `cycle-<n>`; validity: `exp-<unix secs>`; other
    /// statuses and ready: `once`.
    pub epoch: String,
    /// The esimStatus (Status) or orderStatus (Ready) that caused it.
    pub status: Option<String>,
}

const ONCE: &str = "once";

fn cycle_epoch(cycle: u32) -> String {
    format!("cycle-{cycle}")
}

fn parse_cycle_epoch(epoch: &str) -> Option<u32> {
    epoch.strip_prefix("cycle-")?.parse().ok()
}

fn expiry_epoch(t: DateTime<Utc>) -> String {
    format!("exp-{}", t.timestamp())
}

fn parse_expiry_epoch(epoch: &str) -> Option<i64> {
    epoch.strip_prefix("exp-")?.parse().ok()
}

impl Notice {
    /// The notice's full identity: the store's dedup key and the source of
    /// the Message-ID, so a retried send repeats it and a re-armed notice
    /// (new epoch) gets a new one. The status is left out on purpose:
    /// USED_EXPIRED and UNUSED_EXPIRED share a template and are one email.
    pub fn identity(&self, esim_key: &str) -> String {
        let level = match self.level {
            Some(l) => l.to_string(),
            None => "-".to_string(),
        };
        format!(
            "{esim_key}/{}/{}/{level}/{}",
            self.kind.as_str(),
            self.template,
            self.epoch
        )
    }

    /// The release group of SPEC §6 ("per kind"): of the parked notices of
    /// one group only the most severe is released.
    pub fn group(&self) -> String {
        match self.kind {
            NoticeKind::Data => "data".to_string(),
            NoticeKind::Validity => "validity".to_string(),
            NoticeKind::Status | NoticeKind::Ready => self.template.clone(),
        }
    }

    /// Rank within a group; GREATER means more severe (or more current).
    /// Data: a smaller threshold ranks higher (0.1 > 0.2 > 0.5). Validity:
    /// the later expiry. USED_UP: the later cycle. Others: all equal.
    pub fn severity(&self) -> i64 {
        match self.kind {
            NoticeKind::Data => match self.level {
                Some(l) => -((l * 1_000_000.0).round() as i64),
                None => i64::MIN,
            },
            NoticeKind::Validity => parse_expiry_epoch(&self.epoch).unwrap_or(i64::MIN),
            NoticeKind::Status | NoticeKind::Ready => {
                parse_cycle_epoch(&self.epoch).map_or(0, i64::from)
            }
        }
    }
}

/// The notices an event calls for, and why it called for nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    pub notices: Vec<Notice>,
    /// For the per-eSIM decision log: why this event sent nothing, and the
    /// state changes that explain later decisions (a new data cycle).
    pub notes: Vec<String>,
}

impl Outcome {
    fn note(&mut self, s: impl Into<String>) {
        self.notes.push(s.into());
    }
}

/// The data level for a remaining fraction: the smallest threshold t with
/// r <= t, None when r is above every threshold (or not a number).
pub fn level_for(remaining: f64, thresholds: &[f64]) -> Option<f64> {
    thresholds
        .iter()
        .copied()
        .filter(|t| t.is_finite() && remaining <= *t)
        .min_by(|a, b| a.total_cmp(b))
}

/// Updates `state` from one event of any type and returns the notices to
/// queue. Events that tell nothing worth an email (SMDP_EVENT, a status not
/// mapped, a stale usage) still update what is known.
pub fn apply(state: &mut EsimState, event: &Event, rules: &Rules, now: DateTime<Utc>) -> Outcome {
    let mut out = Outcome::default();
    if let Some(eid) = &event.eid {
        state.eid = Some(eid.clone());
    }
    match &event.notify_type {
        NotifyType::DataUsage => on_data_usage(state, event, rules, now, &mut out),
        NotifyType::ValidityUsage => on_validity(state, event, rules, now, &mut out),
        NotifyType::EsimStatus => on_esim_status(state, event, rules, now, &mut out),
        NotifyType::SmdpEvent => {
            // Profile download/installation progress: known, never told.
            remember_statuses(state, event);
            out.note("SMDP_EVENT: state updated, nothing to send");
        }
        NotifyType::OrderStatus => on_order_status(state, event, rules, &mut out),
        NotifyType::CheckHealth | NotifyType::Unknown(_) => {
            out.note(format!("ignored: {}", event.notify_type.as_str()));
        }
    }
    out
}

fn remember_statuses(state: &mut EsimState, event: &Event) {
    if let Some(s) = &event.esim_status {
        state.esim_status = Some(s.clone());
    }
    if let Some(s) = &event.smdp_status {
        state.smdp_status = Some(s.clone());
    }
}

/// Where a totalVolume puts an event among the data cycles.
#[derive(Debug, PartialEq)]
enum Placement {
    /// No volume, or the current cycle's.
    Current,
    /// The volume became the current cycle's (first seen, or adopted into a
    /// cycle opened by IN_USE after USED_UP).
    Adopted,
    /// A strictly larger volume: a top-up, new cycle.
    Opened,
    /// From an earlier cycle: must not send nor overwrite figures.
    Stale(String),
}

fn open_cycle(state: &mut EsimState, volume: Option<u64>, at: DateTime<Utc>, pending: bool) {
    state.cycle += 1;
    state.cycle_volume = volume.or(state.cycle_volume);
    state.cycle_pending = pending;
    state.cycle_opened_at = Some(at);
    state.data_level = None;
}

/// `measured` is when the figures were taken (lastUpdateTime); it only
/// matters while a cycle opened by IN_USE waits for its volume, where a
/// lagging report of the old allowance carries the same totalVolume.
fn place(
    state: &mut EsimState,
    volume: Option<u64>,
    measured: Option<DateTime<Utc>>,
    at: DateTime<Utc>,
) -> Placement {
    let Some(tv) = volume else {
        return Placement::Current;
    };
    let Some(cv) = state.cycle_volume else {
        state.cycle_volume = Some(tv);
        state.cycle_pending = false;
        return Placement::Adopted;
    };
    if tv < cv {
        return Placement::Stale(format!(
            "stale: totalVolume {} < current cycle {}",
            human_bytes(tv),
            human_bytes(cv)
        ));
    }
    if state.cycle_pending {
        if tv == cv {
            if let (Some(m), Some(opened)) = (measured, state.cycle_opened_at) {
                if m < opened {
                    return Placement::Stale(format!(
                        "stale: usage measured at {} is from before cycle {} opened at {}",
                        m.to_rfc3339(),
                        state.cycle,
                        opened.to_rfc3339()
                    ));
                }
            }
        }
        state.cycle_volume = Some(tv);
        state.cycle_pending = false;
        return Placement::Adopted;
    }
    if tv > cv {
        open_cycle(state, Some(tv), at, false);
        return Placement::Opened;
    }
    Placement::Current
}

fn on_data_usage(
    state: &mut EsimState,
    event: &Event,
    rules: &Rules,
    now: DateTime<Utc>,
    out: &mut Outcome,
) {
    let u = &event.usage;
    if event.is_unreadable("totalVolume") {
        out.note("totalVolume unreadable: cannot tell which data cycle this is");
        return;
    }
    let at = u.last_update_time.or(event.generated_at).unwrap_or(now);
    match place(state, u.total_volume, u.last_update_time, at) {
        Placement::Stale(why) => {
            out.note(why);
            return;
        }
        Placement::Opened => out.note(format!(
            "new data cycle {}: totalVolume {}",
            state.cycle,
            human_bytes(u.total_volume.unwrap_or(0))
        )),
        Placement::Adopted | Placement::Current => {}
    }
    // Reports within a cycle may arrive out of order; templates show the
    // newest figures.
    let older = matches!(
        (u.last_update_time, state.usage.last_update_time),
        (Some(new), Some(old)) if new < old
    );
    if !older {
        state.usage = u.clone();
    }

    if !rules.data_enabled {
        out.note("data notices disabled");
        return;
    }
    if let Some(t) = &state.terminal {
        out.note(format!("terminal: {t}"));
        return;
    }
    if state.used_up_cycle == Some(state.cycle) {
        out.note(format!("data used up in cycle {}", state.cycle));
        return;
    }
    if let Some(exp) = state.expires_at.filter(|e| *e <= now) {
        out.note(format!("plan expired at {}", exp.to_rfc3339()));
        return;
    }
    let r = match remaining_fraction(event) {
        Ok(r) => r,
        Err(why) => {
            out.note(why);
            return;
        }
    };
    let Some(level) = level_for(r, &rules.thresholds) else {
        out.note(format!("remaining {r:.4} above every threshold"));
        return;
    };
    if let Some(q) = state.data_level.filter(|q| *q <= level) {
        out.note(format!(
            "level {level} not more severe than {q} already queued in cycle {}",
            state.cycle
        ));
        return;
    }
    state.data_level = Some(level);
    out.notices.push(Notice {
        kind: NoticeKind::Data,
        template: rules.data_template.clone(),
        level: Some(level),
        epoch: cycle_epoch(state.cycle),
        status: None,
    });
}

/// remain / totalVolume when both are usable (remainThreshold's meaning
/// changed between documentation versions), else remainThreshold.
fn remaining_fraction(event: &Event) -> Result<f64, String> {
    let u = &event.usage;
    if let (Some(rem), Some(tv)) = (u.remain, u.total_volume) {
        if tv > 0 {
            return Ok(rem as f64 / tv as f64);
        }
    }
    if let Some(t) = u.remain_threshold {
        return Ok(t);
    }
    let unreadable: Vec<&str> = ["remain", "totalVolume", "remainThreshold"]
        .into_iter()
        .filter(|f| event.is_unreadable(f))
        .collect();
    if unreadable.is_empty() {
        Err("no remaining fraction: neither remain/totalVolume nor remainThreshold".into())
    } else {
        Err(format!(
            "{} unreadable: no remaining fraction",
            unreadable.join(", ")
        ))
    }
}

fn on_validity(
    state: &mut EsimState,
    event: &Event,
    rules: &Rules,
    now: DateTime<Utc>,
    out: &mut Outcome,
) {
    let Some(exp) = event.validity.expired_time else {
        out.note(if event.is_unreadable("expiredTime") {
            "expiredTime unreadable"
        } else {
            "no expiredTime"
        });
        return;
    };
    // Plans are extended, never shortened: an earlier expiry is a late report.
    if let Some(cur) = state.expires_at.filter(|cur| exp < *cur) {
        out.note(format!(
            "stale: expiredTime {} before current expiry {}",
            exp.to_rfc3339(),
            cur.to_rfc3339()
        ));
        return;
    }
    if state.expires_at.is_some_and(|cur| cur != exp) {
        out.note(format!("plan extended to {}", exp.to_rfc3339()));
    }
    state.expires_at = Some(exp);
    state.validity = event.validity.clone();

    if !rules.validity_enabled {
        out.note("validity notices disabled");
        return;
    }
    if let Some(t) = &state.terminal {
        out.note(format!("terminal: {t}"));
        return;
    }
    if exp <= now {
        out.note(format!("plan already expired at {}", exp.to_rfc3339()));
        return;
    }
    if !state.validity_notified.insert(exp.timestamp()) {
        out.note(format!(
            "validity notice for expiry {} already queued",
            exp.to_rfc3339()
        ));
        return;
    }
    out.notices.push(Notice {
        kind: NoticeKind::Validity,
        template: rules.validity_template.clone(),
        level: None,
        epoch: expiry_epoch(exp),
        status: None,
    });
}

fn on_esim_status(
    state: &mut EsimState,
    event: &Event,
    rules: &Rules,
    now: DateTime<Utc>,
    out: &mut Outcome,
) {
    remember_statuses(state, event);
    if let Some(s) = &event.order_status {
        state.order_status = Some(s.clone());
    }
    let Some(status) = event.esim_status.as_deref() else {
        out.note(if event.is_unreadable("esimStatus") {
            "esimStatus unreadable"
        } else {
            "no esimStatus"
        });
        return;
    };
    let at = event.generated_at.unwrap_or(now);

    // Some ESIM_STATUS events carry the volume: a larger one is a top-up.
    let placement = if event.is_unreadable("totalVolume") {
        Placement::Current
    } else {
        place(state, event.usage.total_volume, None, at)
    };
    match &placement {
        Placement::Stale(_) => {}
        Placement::Opened => out.note(format!(
            "new data cycle {}: totalVolume {}",
            state.cycle,
            human_bytes(event.usage.total_volume.unwrap_or(0))
        )),
        Placement::Adopted | Placement::Current => {
            let u = &event.usage;
            if u.total_volume.is_some() {
                state.usage.total_volume = u.total_volume;
                state.usage.order_usage = u.order_usage.or(state.usage.order_usage);
                state.usage.remain = u.remain.or(state.usage.remain);
            }
        }
    }
    if placement == Placement::Opened {
        state.usage = event.usage.clone();
    }

    if status == USED_UP {
        if let Placement::Stale(why) = placement {
            out.note(format!("USED_UP {why}"));
            return;
        }
        if state.used_up_cycle == Some(state.cycle) {
            out.note(format!("USED_UP already known in cycle {}", state.cycle));
            return;
        }
        state.used_up_cycle = Some(state.cycle);
        let Some(template) = rules.esim_status.get(status) else {
            out.note("esimStatus USED_UP not mapped");
            return;
        };
        if let Some(t) = &state.terminal {
            out.note(format!("terminal: {t}"));
            return;
        }
        out.notices.push(Notice {
            kind: NoticeKind::Status,
            template: template.clone(),
            level: None,
            epoch: cycle_epoch(state.cycle),
            status: Some(status.to_string()),
        });
        return;
    }

    if status == IN_USE && state.used_up_cycle == Some(state.cycle) && state.terminal.is_none() {
        // Renewed after USED_UP without (yet) a larger volume: the volume of
        // the new cycle is adopted from the next usage report.
        open_cycle(state, None, at, true);
        out.note(format!(
            "new data cycle {}: IN_USE after USED_UP",
            state.cycle
        ));
    }
    if is_terminal(status) && state.terminal.is_none() {
        state.terminal = Some(status.to_string());
    }

    let Some(template) = rules.esim_status.get(status) else {
        out.note(format!("esimStatus {status} not mapped"));
        return;
    };
    if state.templates_notified.contains(template) {
        out.note(format!("{template} already queued for this eSIM"));
        return;
    }
    if let Some(told) = expiry_told(state, status, rules) {
        out.note(format!("expiry already told ({told})"));
        return;
    }
    // Would be overtaken before sending anyway; an "activated" after
    // "cancelled" only confuses.
    if let Some(t) = state.terminal.as_deref().filter(|_| !is_terminal(status)) {
        out.note(format!("terminal: {t}"));
        return;
    }
    state.templates_notified.insert(template.clone());
    out.notices.push(Notice {
        kind: NoticeKind::Status,
        template: template.clone(),
        level: None,
        epoch: ONCE.to_string(),
        status: Some(status.to_string()),
    });
}

fn on_order_status(state: &mut EsimState, event: &Event, rules: &Rules, out: &mut Outcome) {
    let Some(status) = event.order_status.as_deref() else {
        out.note("no orderStatus");
        return;
    };
    state.order_status = Some(status.to_string());
    let Some(template) = rules.order_status.get(status) else {
        out.note(format!("orderStatus {status} not mapped"));
        return;
    };
    if !rules.provider_enabled {
        out.note("provider API not configured: no ready notice");
        return;
    }
    if state.templates_notified.contains(template) {
        out.note(format!("{template} already queued for this eSIM"));
        return;
    }
    if let Some(t) = &state.terminal {
        out.note(format!("terminal: {t}"));
        return;
    }
    state.templates_notified.insert(template.clone());
    out.notices.push(Notice {
        kind: NoticeKind::Ready,
        template: template.clone(),
        level: None,
        epoch: ONCE.to_string(),
        status: Some(status.to_string()),
    });
}

/// Just before a send: Some(reason) when a later decision made the notice
/// false (SPEC §6 "Overtaken before sending").
pub fn overtaken(state: &EsimState, notice: &Notice, now: DateTime<Utc>) -> Option<String> {
    let terminal = || state.terminal.as_ref().map(|t| format!("terminal: {t}"));
    let expired = || {
        state
            .expires_at
            .filter(|e| *e <= now)
            .map(|e| format!("plan expired at {}", e.to_rfc3339()))
    };
    match notice.kind {
        NoticeKind::Data => {
            if let Some(r) = terminal() {
                return Some(r);
            }
            let Some(cycle) = parse_cycle_epoch(&notice.epoch) else {
                return Some(format!("unreadable data epoch {:?}", notice.epoch));
            };
            if cycle != state.cycle {
                return Some(format!(
                    "data cycle {cycle} overtaken by cycle {}",
                    state.cycle
                ));
            }
            if state.used_up_cycle == Some(cycle) {
                return Some(format!("data used up in cycle {cycle}"));
            }
            if let (Some(q), Some(l)) = (state.data_level, notice.level) {
                if q < l {
                    return Some(format!("more severe level {q} queued since"));
                }
            }
            expired()
        }
        NoticeKind::Validity => {
            if let Some(r) = terminal() {
                return Some(r);
            }
            if let Some(cur) = state.expires_at {
                if notice.epoch != expiry_epoch(cur) {
                    return Some(format!("plan extended to {}", cur.to_rfc3339()));
                }
            }
            expired()
        }
        NoticeKind::Status => match notice.status.as_deref() {
            Some(s) if is_terminal(s) => None,
            Some(USED_UP) => {
                if let Some(r) = terminal() {
                    return Some(r);
                }
                match parse_cycle_epoch(&notice.epoch) {
                    Some(c) if c == state.cycle => None,
                    Some(c) => Some(format!(
                        "USED_UP of cycle {c} overtaken by cycle {}",
                        state.cycle
                    )),
                    None => Some(format!("unreadable USED_UP epoch {:?}", notice.epoch)),
                }
            }
            _ => terminal(),
        },
        // An install email for an eSIM that can no longer be used is noise.
        NoticeKind::Ready => terminal(),
    }
}

/// On binding a recipient: per group only the most severe parked notice that
/// is still true is released (the customer learns the current fact once, not
/// its history); the others are superseded with a reason. One verdict per
/// input, same order.
pub fn release(
    state: &EsimState,
    parked: &[Notice],
    now: DateTime<Utc>,
) -> Vec<Result<(), String>> {
    let verdicts: Vec<Option<String>> = parked.iter().map(|n| overtaken(state, n, now)).collect();
    // The winner of each group: the most severe still-true notice; on a tie
    // the first parked.
    let mut best: BTreeMap<String, usize> = BTreeMap::new();
    for (i, n) in parked.iter().enumerate() {
        if verdicts[i].is_some() {
            continue;
        }
        best.entry(n.group())
            .and_modify(|b| {
                if n.severity() > parked[*b].severity() {
                    *b = i;
                }
            })
            .or_insert(i);
    }
    parked
        .iter()
        .enumerate()
        .map(|(i, n)| {
            if let Some(why) = &verdicts[i] {
                return Err(why.clone());
            }
            let b = best[&n.group()];
            if b == i {
                Ok(())
            } else {
                let w = &parked[b];
                Err(format!(
                    "superseded by {} {}{}",
                    w.template,
                    w.level.map(|l| format!("{l} ")).unwrap_or_default(),
                    w.epoch
                ))
            }
        })
        .collect()
}

/// Byte counts as the provider sells them (binary GB) for the decision log.
fn human_bytes(b: u64) -> String {
    const KB: f64 = 1024.0;
    let (v, unit) = match b as f64 {
        x if x >= KB * KB * KB => (x / (KB * KB * KB), "GB"),
        x if x >= KB * KB => (x / (KB * KB), "MB"),
        x => return format!("{x} B"),
    };
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s} {unit}")
}

/// The expiry instant of a validity epoch; for callers that show it.
pub fn epoch_expiry(epoch: &str) -> Option<DateTime<Utc>> {
    Utc.timestamp_opt(parse_expiry_epoch(epoch)?, 0).single()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::parse_instant;

    const NOW: &str = "2026-04-22T12:00:00Z";
    const GB: u64 = 1 << 30;

    fn now() -> DateTime<Utc> {
        parse_instant(NOW).unwrap()
    }

    /// `"TYPE {content}"` or `"TYPE@eventGenerateTime {content}"` -> a body
    /// as the provider sends it.
    fn body(spec: &str) -> String {
        let (head, content) = spec.split_once(' ').expect("TYPE {content}");
        let (ty, gen) = match head.split_once('@') {
            Some((t, g)) => (t, format!(r#","eventGenerateTime":"{g}""#)),
            None => (head, String::new()),
        };
        format!(r#"{{"notifyType":"{ty}"{gen},"content":{content}}}"#)
    }

    fn ev(spec: &str) -> Event {
        Event::parse(body(spec).as_bytes()).expect("test body parses")
    }

    fn run(rules: &Rules, events: &[&str]) -> (EsimState, Vec<Notice>, Vec<String>) {
        let mut st = EsimState::default();
        let mut notices = Vec::new();
        let mut notes = Vec::new();
        for e in events {
            let o = apply(&mut st, &ev(e), rules, now());
            notices.extend(o.notices);
            notes.extend(o.notes);
        }
        (st, notices, notes)
    }

    fn provider(r: &mut Rules) {
        r.provider_enabled = true;
    }
    fn no_data(r: &mut Rules) {
        r.data_enabled = false;
    }
    fn no_validity(r: &mut Rules) {
        r.validity_enabled = false;
    }
    fn unordered(r: &mut Rules) {
        r.thresholds = vec![0.1, 0.5, 0.2];
    }
    fn keep(_: &mut Rules) {}
    /// An older config: both expiry statuses on one template.
    fn same_expiry(r: &mut Rules) {
        r.esim_status
            .insert("UNUSED_EXPIRED".into(), "esim_expired".into());
    }

    struct Row {
        sentence: &'static str,
        rules: fn(&mut Rules),
        events: &'static [&'static str],
        expect: &'static [(&'static str, Option<f64>, &'static str)],
        /// A substring the notes must contain ("" = no check).
        note: &'static str,
    }

    const D: &str = "data_usage";
    const V: &str = "validity_usage";

    #[rustfmt::skip]
    const ROWS: &[Row] = &[
        // DATA_USAGE: the remaining fraction.
        Row { sentence: "r is remain / totalVolume when both present",
            rules: keep, events: &[r#"DATA_USAGE {"totalVolume":53687091200,"remain":5351505742}"#],
            expect: &[(D, Some(0.1), "cycle-0")], note: "" },
        Row { sentence: "remain / totalVolume wins over remainThreshold",
            rules: keep, events: &[r#"DATA_USAGE {"totalVolume":100,"remain":45,"remainThreshold":0.1}"#],
            expect: &[(D, Some(0.5), "cycle-0")], note: "" },
        Row { sentence: "remainThreshold is the fallback without remain",
            rules: keep, events: &[r#"DATA_USAGE {"totalVolume":100,"remainThreshold":"0.2"}"#],
            expect: &[(D, Some(0.2), "cycle-0")], note: "" },
        Row { sentence: "remainThreshold is the fallback when totalVolume is 0",
            rules: keep, events: &[r#"DATA_USAGE {"totalVolume":0,"remain":0,"remainThreshold":0.5}"#],
            expect: &[(D, Some(0.5), "cycle-0")], note: "" },
        Row { sentence: "remainThreshold is the fallback when remain is unreadable",
            rules: keep, events: &[r#"DATA_USAGE {"totalVolume":100,"remain":"lots","remainThreshold":0.2}"#],
            expect: &[(D, Some(0.2), "cycle-0")], note: "" },
        Row { sentence: "remain unreadable and no remainThreshold: nothing",
            rules: keep, events: &[r#"DATA_USAGE {"totalVolume":100,"remain":"lots"}"#],
            expect: &[], note: "remain unreadable" },
        Row { sentence: "remainThreshold unreadable and no remain: nothing",
            rules: keep, events: &[r#"DATA_USAGE {"totalVolume":100,"remainThreshold":"ten"}"#],
            expect: &[], note: "remainThreshold unreadable" },
        Row { sentence: "totalVolume unreadable: the cycle is unknown, nothing",
            rules: keep, events: &[r#"DATA_USAGE {"totalVolume":"big","remain":1,"remainThreshold":0.1}"#],
            expect: &[], note: "totalVolume unreadable" },
        Row { sentence: "no fraction at all: nothing",
            rules: keep, events: &[r#"DATA_USAGE {"totalVolume":100}"#],
            expect: &[], note: "no remaining fraction" },
        // The level.
        Row { sentence: "level is the smallest threshold t with r <= t",
            rules: keep, events: &[r#"DATA_USAGE {"totalVolume":100,"remain":15}"#],
            expect: &[(D, Some(0.2), "cycle-0")], note: "" },
        Row { sentence: "r equal to a threshold is that level",
            rules: keep, events: &[r#"DATA_USAGE {"totalVolume":100,"remain":20}"#],
            expect: &[(D, Some(0.2), "cycle-0")], note: "" },
        Row { sentence: "thresholds in any order",
            rules: unordered, events: &[r#"DATA_USAGE {"totalVolume":100,"remain":15}"#],
            expect: &[(D, Some(0.2), "cycle-0")], note: "" },
        Row { sentence: "r above every threshold: none",
            rules: keep, events: &[r#"DATA_USAGE {"totalVolume":100,"remain":51}"#],
            expect: &[], note: "above every threshold" },
        // Cycles.
        Row { sentence: "a strictly larger totalVolume opens a new cycle and re-arms every level",
            rules: keep, events: &[
                r#"DATA_USAGE {"totalVolume":100,"remain":5}"#,
                r#"DATA_USAGE {"totalVolume":200,"remain":90}"#,
                r#"DATA_USAGE {"totalVolume":200,"remain":19}"#],
            expect: &[(D, Some(0.1), "cycle-0"), (D, Some(0.5), "cycle-1"), (D, Some(0.1), "cycle-1")],
            note: "new data cycle 1" },
        Row { sentence: "a smaller totalVolume than the current cycle's is stale",
            rules: keep, events: &[
                r#"DATA_USAGE {"totalVolume":21474836480,"remain":10737418240}"#,
                r#"DATA_USAGE {"totalVolume":10737418240,"remain":1}"#],
            expect: &[(D, Some(0.5), "cycle-0")], note: "stale: totalVolume 10 GB < current cycle 20 GB" },
        Row { sentence: "within a cycle, 10 % then 20 % is one notice",
            rules: keep, events: &[
                r#"DATA_USAGE {"totalVolume":100,"remain":9}"#,
                r#"DATA_USAGE {"totalVolume":100,"remain":19}"#],
            expect: &[(D, Some(0.1), "cycle-0")], note: "level 0.2 not more severe than 0.1" },
        Row { sentence: "within a cycle, the same level twice is one notice",
            rules: keep, events: &[
                r#"DATA_USAGE {"totalVolume":100,"remain":19}"#,
                r#"DATA_USAGE {"totalVolume":100,"remain":12}"#],
            expect: &[(D, Some(0.2), "cycle-0")], note: "" },
        Row { sentence: "within a cycle, 50 then 20 then 10 are three notices",
            rules: keep, events: &[
                r#"DATA_USAGE {"totalVolume":100,"remain":50}"#,
                r#"DATA_USAGE {"totalVolume":100,"remain":20}"#,
                r#"DATA_USAGE {"totalVolume":100,"remain":10}"#],
            expect: &[(D, Some(0.5), "cycle-0"), (D, Some(0.2), "cycle-0"), (D, Some(0.1), "cycle-0")], note: "" },
        Row { sentence: "a jump from 60 % to 5 % queues only the most severe level",
            rules: keep, events: &[
                r#"DATA_USAGE {"totalVolume":100,"remain":60}"#,
                r#"DATA_USAGE {"totalVolume":100,"remain":5}"#],
            expect: &[(D, Some(0.1), "cycle-0")], note: "" },
        Row { sentence: "data disabled: nothing",
            rules: no_data, events: &[r#"DATA_USAGE {"totalVolume":100,"remain":5}"#],
            expect: &[], note: "data notices disabled" },
        // IN_USE after USED_UP.
        Row { sentence: "ESIM_STATUS IN_USE after USED_UP opens a new cycle",
            rules: keep, events: &[
                r#"DATA_USAGE {"totalVolume":100,"remain":9}"#,
                r#"ESIM_STATUS {"esimStatus":"IN_USE"}"#,
                r#"ESIM_STATUS {"esimStatus":"USED_UP"}"#,
                r#"ESIM_STATUS@2026-04-22T10:00:00Z {"esimStatus":"IN_USE"}"#,
                r#"DATA_USAGE {"totalVolume":100,"remain":9,"lastUpdateTime":"2026-04-22T11:00:00Z"}"#],
            expect: &[(D, Some(0.1), "cycle-0"), ("esim_activated", None, "once"),
                      ("esim_used_up", None, "cycle-0"), (D, Some(0.1), "cycle-1")],
            note: "IN_USE after USED_UP" },
        Row { sentence: "after IN_USE, the first larger totalVolume is adopted, not another cycle",
            rules: keep, events: &[
                r#"DATA_USAGE {"totalVolume":100,"remain":9}"#,
                r#"ESIM_STATUS {"esimStatus":"USED_UP"}"#,
                r#"ESIM_STATUS {"esimStatus":"IN_USE"}"#,
                r#"DATA_USAGE {"totalVolume":300,"remain":100}"#,
                r#"DATA_USAGE {"totalVolume":300,"remain":20}"#],
            expect: &[(D, Some(0.1), "cycle-0"), ("esim_used_up", None, "cycle-0"),
                      ("esim_activated", None, "once"), (D, Some(0.5), "cycle-1"), (D, Some(0.1), "cycle-1")],
            note: "" },
        Row { sentence: "after IN_USE, a smaller totalVolume than the previous cycle's is stale",
            rules: keep, events: &[
                r#"DATA_USAGE {"totalVolume":100,"remain":60}"#,
                r#"ESIM_STATUS {"esimStatus":"USED_UP"}"#,
                r#"ESIM_STATUS {"esimStatus":"IN_USE"}"#,
                r#"DATA_USAGE {"totalVolume":50,"remain":1}"#],
            expect: &[("esim_used_up", None, "cycle-0"), ("esim_activated", None, "once")],
            note: "stale: totalVolume" },
        Row { sentence: "after IN_USE, a late report of the old allowance (measured before) is stale",
            rules: keep, events: &[
                r#"DATA_USAGE {"totalVolume":100,"remain":60}"#,
                r#"ESIM_STATUS {"esimStatus":"USED_UP"}"#,
                r#"ESIM_STATUS@2026-04-22T10:00:00Z {"esimStatus":"IN_USE"}"#,
                r#"DATA_USAGE {"totalVolume":100,"remain":9,"lastUpdateTime":"2026-04-22T08:00:00Z"}"#],
            expect: &[("esim_used_up", None, "cycle-0"), ("esim_activated", None, "once")],
            note: "before cycle 1 opened" },
        Row { sentence: "IN_USE without USED_UP opens no cycle",
            rules: keep, events: &[
                r#"DATA_USAGE {"totalVolume":100,"remain":9}"#,
                r#"ESIM_STATUS {"esimStatus":"IN_USE"}"#,
                r#"DATA_USAGE {"totalVolume":100,"remain":5}"#],
            expect: &[(D, Some(0.1), "cycle-0"), ("esim_activated", None, "once")], note: "" },
        // USED_UP.
        Row { sentence: "USED_UP is once per data cycle",
            rules: keep, events: &[
                r#"ESIM_STATUS {"esimStatus":"USED_UP"}"#,
                r#"ESIM_STATUS {"esimStatus":"USED_UP"}"#],
            expect: &[("esim_used_up", None, "cycle-0")], note: "USED_UP already known in cycle 0" },
        Row { sentence: "USED_UP stops data notices in that cycle (a late 10 % sends nothing)",
            rules: keep, events: &[
                r#"DATA_USAGE {"totalVolume":100,"remain":45}"#,
                r#"ESIM_STATUS {"esimStatus":"USED_UP"}"#,
                r#"DATA_USAGE {"totalVolume":100,"remain":9}"#],
            expect: &[(D, Some(0.5), "cycle-0"), ("esim_used_up", None, "cycle-0")],
            note: "data used up in cycle 0" },
        Row { sentence: "USED_UP carrying a strictly larger totalVolume belongs to a new cycle",
            rules: keep, events: &[
                r#"DATA_USAGE {"totalVolume":100,"remain":9}"#,
                r#"ESIM_STATUS {"esimStatus":"USED_UP","totalVolume":100}"#,
                r#"ESIM_STATUS {"esimStatus":"USED_UP","totalVolume":200,"remainVolume":0}"#],
            expect: &[(D, Some(0.1), "cycle-0"), ("esim_used_up", None, "cycle-0"), ("esim_used_up", None, "cycle-1")],
            note: "new data cycle 1" },
        Row { sentence: "USED_UP carrying a smaller totalVolume is stale",
            rules: keep, events: &[
                r#"DATA_USAGE {"totalVolume":200,"remain":150}"#,
                r#"ESIM_STATUS {"esimStatus":"USED_UP","totalVolume":100}"#,
                r#"DATA_USAGE {"totalVolume":200,"remain":15}"#],
            expect: &[(D, Some(0.1), "cycle-0")], note: "USED_UP stale" },
        Row { sentence: "a top-up after USED_UP (larger volume) re-arms data notices",
            rules: keep, events: &[
                r#"DATA_USAGE {"totalVolume":100,"remain":9}"#,
                r#"ESIM_STATUS {"esimStatus":"USED_UP"}"#,
                r#"DATA_USAGE {"totalVolume":200,"remain":30}"#],
            expect: &[(D, Some(0.1), "cycle-0"), ("esim_used_up", None, "cycle-0"), (D, Some(0.2), "cycle-1")],
            note: "" },
        // VALIDITY_USAGE.
        Row { sentence: "validity is once per (eSIM, expiry instant)",
            rules: keep, events: &[
                r#"VALIDITY_USAGE {"remain":1,"durationUnit":"DAY","expiredTime":"2026-04-23T17:13:19Z"}"#,
                r#"VALIDITY_USAGE {"remain":1,"durationUnit":"DAY","expiredTime":"2026-04-23T17:13:19+0000"}"#,
                r#"VALIDITY_USAGE {"remain":1,"durationUnit":"DAY","expiredTime":"2026-04-23T19:13:19+02:00"}"#],
            expect: &[(V, None, "exp-1776964399")], note: "already queued" },
        Row { sentence: "an extended plan (new expiredTime) re-arms validity",
            rules: keep, events: &[
                r#"VALIDITY_USAGE {"remain":1,"expiredTime":"2026-04-23T17:13:19Z"}"#,
                r#"VALIDITY_USAGE {"remain":1,"expiredTime":"2026-05-23T17:13:19Z"}"#],
            expect: &[(V, None, "exp-1776964399"), (V, None, "exp-1779556399")], note: "plan extended" },
        Row { sentence: "an earlier expiredTime than the current one is stale",
            rules: keep, events: &[
                r#"VALIDITY_USAGE {"remain":1,"expiredTime":"2026-05-23T17:13:19Z"}"#,
                r#"VALIDITY_USAGE {"remain":1,"expiredTime":"2026-04-23T17:13:19Z"}"#],
            expect: &[(V, None, "exp-1779556399")], note: "stale: expiredTime" },
        Row { sentence: "validity needs expiredTime",
            rules: keep, events: &[r#"VALIDITY_USAGE {"remain":1,"durationUnit":"DAY"}"#],
            expect: &[], note: "no expiredTime" },
        Row { sentence: "validity with an unreadable expiredTime sends nothing",
            rules: keep, events: &[r#"VALIDITY_USAGE {"remain":1,"expiredTime":"tomorrow"}"#],
            expect: &[], note: "expiredTime unreadable" },
        Row { sentence: "validity of a plan already expired sends nothing",
            rules: keep, events: &[r#"VALIDITY_USAGE {"remain":0,"expiredTime":"2026-04-22T11:00:00Z"}"#],
            expect: &[], note: "plan already expired" },
        Row { sentence: "validity disabled: nothing",
            rules: no_validity, events: &[r#"VALIDITY_USAGE {"remain":1,"expiredTime":"2026-04-23T17:13:19Z"}"#],
            expect: &[], note: "validity notices disabled" },
        Row { sentence: "a late DATA_USAGE after the plan expired sends nothing",
            rules: keep, events: &[
                r#"VALIDITY_USAGE {"remain":0,"expiredTime":"2026-04-22T11:00:00Z"}"#,
                r#"DATA_USAGE {"totalVolume":100,"remain":9}"#],
            expect: &[], note: "plan expired at" },
        // ESIM_STATUS.
        Row { sentence: "mapped statuses are once per (eSIM, template): USED_EXPIRED then UNUSED_EXPIRED is one email",
            rules: keep, events: &[
                r#"ESIM_STATUS {"esimStatus":"USED_EXPIRED"}"#,
                r#"ESIM_STATUS {"esimStatus":"UNUSED_EXPIRED"}"#],
            expect: &[("esim_expired", None, "once")], note: "expiry already told (esim_expired)" },
        Row { sentence: "UNUSED_EXPIRED then USED_EXPIRED is one email too, the unused one",
            rules: keep, events: &[
                r#"ESIM_STATUS {"esimStatus":"UNUSED_EXPIRED"}"#,
                r#"ESIM_STATUS {"esimStatus":"USED_EXPIRED"}"#],
            expect: &[("esim_expired_unused", None, "once")], note: "expiry already told (esim_expired_unused)" },
        Row { sentence: "with both expiry statuses on one template, the second is that template again",
            rules: same_expiry, events: &[
                r#"ESIM_STATUS {"esimStatus":"USED_EXPIRED"}"#,
                r#"ESIM_STATUS {"esimStatus":"UNUSED_EXPIRED"}"#],
            expect: &[("esim_expired", None, "once")], note: "esim_expired already queued" },
        Row { sentence: "IN_USE twice is one activation email",
            rules: keep, events: &[
                r#"ESIM_STATUS {"esimStatus":"IN_USE"}"#,
                r#"ESIM_STATUS {"esimStatus":"IN_USE","smdpStatus":"ENABLED"}"#],
            expect: &[("esim_activated", None, "once")], note: "" },
        Row { sentence: "a status not in the map sends nothing",
            rules: keep, events: &[r#"ESIM_STATUS {"esimStatus":"SUSPENDED"}"#],
            expect: &[], note: "esimStatus SUSPENDED not mapped" },
        Row { sentence: "after a terminal status: no data notice",
            rules: keep, events: &[
                r#"ESIM_STATUS {"esimStatus":"CANCEL"}"#,
                r#"DATA_USAGE {"totalVolume":100,"remain":9}"#],
            expect: &[("esim_cancelled", None, "once")], note: "terminal: CANCEL" },
        Row { sentence: "after a terminal status: no validity notice",
            rules: keep, events: &[
                r#"ESIM_STATUS {"esimStatus":"REVOKED"}"#,
                r#"VALIDITY_USAGE {"remain":1,"expiredTime":"2026-04-23T17:13:19Z"}"#],
            expect: &[("esim_revoked", None, "once")], note: "terminal: REVOKED" },
        Row { sentence: "after a terminal status: no USED_UP notice",
            rules: keep, events: &[
                r#"ESIM_STATUS {"esimStatus":"UNUSED_EXPIRED"}"#,
                r#"ESIM_STATUS {"esimStatus":"USED_UP"}"#],
            expect: &[("esim_expired_unused", None, "once")], note: "terminal: UNUSED_EXPIRED" },
        Row { sentence: "a late DATA_USAGE after USED_EXPIRED sends nothing",
            rules: keep, events: &[
                r#"DATA_USAGE {"totalVolume":100,"remain":45}"#,
                r#"ESIM_STATUS {"esimStatus":"USED_EXPIRED"}"#,
                r#"DATA_USAGE {"totalVolume":100,"remain":9}"#],
            expect: &[(D, Some(0.5), "cycle-0"), ("esim_expired", None, "once")], note: "terminal: USED_EXPIRED" },
        Row { sentence: "after a terminal status, other terminal templates are still once each",
            rules: keep, events: &[
                r#"ESIM_STATUS {"esimStatus":"CANCEL"}"#,
                r#"ESIM_STATUS {"esimStatus":"REVOKED"}"#,
                r#"ESIM_STATUS {"esimStatus":"REVOKED"}"#],
            expect: &[("esim_cancelled", None, "once"), ("esim_revoked", None, "once")], note: "" },
        Row { sentence: "after a terminal status, a non-terminal status is not told",
            rules: keep, events: &[
                r#"ESIM_STATUS {"esimStatus":"CANCEL"}"#,
                r#"ESIM_STATUS {"esimStatus":"IN_USE"}"#],
            expect: &[("esim_cancelled", None, "once")], note: "terminal: CANCEL" },
        Row { sentence: "SMDP_EVENT sends nothing, even with a mapped esimStatus",
            rules: keep, events: &[r#"SMDP_EVENT {"esimStatus":"IN_USE","smdpStatus":"ENABLED","eid":"89049032"}"#],
            expect: &[], note: "SMDP_EVENT" },
        Row { sentence: "CHECK_HEALTH sends nothing",
            rules: provider, events: &[r#"CHECK_HEALTH {"orderNo":"1234567890","orderStatus":"Test"}"#],
            expect: &[], note: "ignored: CHECK_HEALTH" },
        Row { sentence: "an unknown type sends nothing",
            rules: keep, events: &[r#"NEW_THING {"esimStatus":"CANCEL"}"#],
            expect: &[], note: "ignored: NEW_THING" },
        // ORDER_STATUS.
        Row { sentence: "ORDER_STATUS GOT_RESOURCE queues esim_ready once per eSIM when the provider API is configured",
            rules: provider, events: &[
                r#"ORDER_STATUS {"orderNo":"B26042217160011","orderStatus":"GOT_RESOURCE"}"#,
                r#"ORDER_STATUS {"orderNo":"B26042217160011","orderStatus":"GOT_RESOURCE"}"#],
            expect: &[("esim_ready", None, "once")], note: "esim_ready already queued" },
        Row { sentence: "ORDER_STATUS without the provider API sends nothing",
            rules: keep, events: &[r#"ORDER_STATUS {"orderNo":"B1","orderStatus":"GOT_RESOURCE"}"#],
            expect: &[], note: "provider API not configured" },
        Row { sentence: "an unmapped orderStatus sends nothing",
            rules: provider, events: &[r#"ORDER_STATUS {"orderNo":"B1","orderStatus":"PROCESSING"}"#],
            expect: &[], note: "orderStatus PROCESSING not mapped" },
    ];

    #[test]
    fn table() {
        let mut failures = Vec::new();
        for row in ROWS {
            let mut rules = Rules::default();
            (row.rules)(&mut rules);
            let (_, notices, notes) = run(&rules, row.events);
            let got: Vec<(String, Option<f64>, String)> = notices
                .iter()
                .map(|n| (n.template.clone(), n.level, n.epoch.clone()))
                .collect();
            let want: Vec<(String, Option<f64>, String)> = row
                .expect
                .iter()
                .map(|(t, l, e)| (t.to_string(), *l, e.to_string()))
                .collect();
            if got != want {
                failures.push(format!(
                    "{}:\n  want {want:?}\n  got  {got:?}\n  notes {notes:?}",
                    row.sentence
                ));
            } else if !row.note.is_empty() && !notes.iter().any(|n| n.contains(row.note)) {
                failures.push(format!(
                    "{}: no note containing {:?} in {notes:?}",
                    row.sentence, row.note
                ));
            }
        }
        assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    }

    #[test]
    fn stale_usage_does_not_overwrite_figures() {
        let (st, _, _) = run(
            &Rules::default(),
            &[
                r#"DATA_USAGE {"totalVolume":200,"remain":150}"#,
                r#"DATA_USAGE {"totalVolume":100,"remain":1}"#,
            ],
        );
        assert_eq!(st.usage.total_volume, Some(200));
        assert_eq!(st.usage.remain, Some(150));
        assert_eq!(st.cycle_volume, Some(200));
        assert_eq!(st.cycle, 0);
    }

    #[test]
    fn older_report_in_cycle_keeps_newer_figures() {
        let (st, _, _) = run(
            &Rules::default(),
            &[
                r#"DATA_USAGE {"totalVolume":100,"remain":9,"lastUpdateTime":"2026-04-22T10:00:00Z"}"#,
                r#"DATA_USAGE {"totalVolume":100,"remain":19,"lastUpdateTime":"2026-04-22T09:00:00Z"}"#,
            ],
        );
        assert_eq!(st.usage.remain, Some(9));
    }

    #[test]
    fn smdp_event_updates_what_is_known() {
        let (st, notices, _) = run(
            &Rules::default(),
            &[
                r#"SMDP_EVENT {"esimStatus":"GOT_RESOURCE","smdpStatus":"INSTALLATION","eid":"8904903200"}"#,
            ],
        );
        assert!(notices.is_empty());
        assert_eq!(st.esim_status.as_deref(), Some("GOT_RESOURCE"));
        assert_eq!(st.smdp_status.as_deref(), Some("INSTALLATION"));
        assert_eq!(st.eid.as_deref(), Some("8904903200"));
        assert!(st.terminal.is_none());
    }

    #[test]
    fn validity_records_expiry() {
        let (st, _, _) = run(
            &Rules::default(),
            &[
                r#"VALIDITY_USAGE {"remain":1,"totalDuration":30,"durationUnit":"DAY","expiredTime":"2026-04-23T17:13:19+0000"}"#,
            ],
        );
        assert_eq!(st.expires_at, parse_instant("2026-04-23T17:13:19Z"));
        assert_eq!(st.validity.total_duration, Some(30));
        assert_eq!(
            epoch_expiry("exp-1776964399"),
            parse_instant("2026-04-23T17:13:19Z")
        );
    }

    #[test]
    fn state_round_trips_and_old_state_loads() {
        let (st, _, _) = run(
            &Rules::default(),
            &[
                r#"DATA_USAGE {"totalVolume":53687091200,"remain":5351505742}"#,
                r#"ESIM_STATUS {"esimStatus":"USED_UP"}"#,
                r#"VALIDITY_USAGE {"remain":1,"expiredTime":"2026-04-23T17:13:19Z"}"#,
            ],
        );
        let json = serde_json::to_string(&st).unwrap();
        assert_eq!(serde_json::from_str::<EsimState>(&json).unwrap(), st);
        let old: EsimState = serde_json::from_str(r#"{"cycle":2}"#).unwrap();
        assert_eq!(old.cycle, 2);
    }

    #[test]
    fn identity_and_group() {
        let d = |level: f64, epoch: &str| Notice {
            kind: NoticeKind::Data,
            template: "data_usage".into(),
            level: Some(level),
            epoch: epoch.into(),
            status: None,
        };
        assert_eq!(
            d(0.1, "cycle-3").identity("2604"),
            "2604/data/data_usage/0.1/cycle-3"
        );
        // A re-armed notice is a new notice.
        assert_ne!(
            d(0.1, "cycle-3").identity("k"),
            d(0.1, "cycle-4").identity("k")
        );
        assert_ne!(
            d(0.1, "cycle-3").identity("k"),
            d(0.2, "cycle-3").identity("k")
        );
        assert!(d(0.1, "cycle-0").severity() > d(0.2, "cycle-0").severity());
        assert!(d(0.2, "cycle-0").severity() > d(0.5, "cycle-0").severity());
        assert_eq!(d(0.5, "cycle-0").group(), "data");
        let s = status_notice("esim_expired", "USED_EXPIRED", "once");
        let s2 = status_notice("esim_expired", "UNUSED_EXPIRED", "once");
        assert_eq!(s.identity("k"), s2.identity("k"));
        assert_eq!(s.group(), "esim_expired");
    }

    #[test]
    fn level_for_edges() {
        let t = [0.5, 0.2, 0.1];
        assert_eq!(level_for(0.0, &t), Some(0.1));
        assert_eq!(level_for(0.1, &t), Some(0.1));
        assert_eq!(level_for(0.100001, &t), Some(0.2));
        assert_eq!(level_for(0.5, &t), Some(0.5));
        assert_eq!(level_for(0.51, &t), None);
        assert_eq!(level_for(1.5, &[1.0]), None);
        assert_eq!(level_for(f64::NAN, &t), None);
        assert_eq!(level_for(0.0, &[]), None);
    }

    fn status_notice(template: &str, status: &str, epoch: &str) -> Notice {
        Notice {
            kind: NoticeKind::Status,
            template: template.into(),
            level: None,
            epoch: epoch.into(),
            status: Some(status.into()),
        }
    }

    /// Applies events to `st`, returning the notices queued.
    fn feed(st: &mut EsimState, events: &[&str]) -> Vec<Notice> {
        let rules = Rules::default();
        events
            .iter()
            .flat_map(|e| apply(st, &ev(e), &rules, now()).notices)
            .collect()
    }

    #[test]
    fn overtaken_data() {
        let mut st = EsimState::default();
        let n50 = feed(&mut st, &[r#"DATA_USAGE {"totalVolume":100,"remain":45}"#]).remove(0);
        assert_eq!(overtaken(&st, &n50, now()), None, "still true");

        // A more severe level queued since in the same cycle.
        let n10 = feed(&mut st, &[r#"DATA_USAGE {"totalVolume":100,"remain":5}"#]).remove(0);
        assert!(overtaken(&st, &n50, now())
            .unwrap()
            .contains("more severe level 0.1"));
        assert_eq!(overtaken(&st, &n10, now()), None);

        // Used up in its cycle.
        let mut used = st.clone();
        feed(&mut used, &[r#"ESIM_STATUS {"esimStatus":"USED_UP"}"#]);
        assert!(overtaken(&used, &n10, now()).unwrap().contains("used up"));

        // A newer cycle.
        let mut topped = st.clone();
        feed(
            &mut topped,
            &[r#"DATA_USAGE {"totalVolume":200,"remain":150}"#],
        );
        assert!(overtaken(&topped, &n10, now())
            .unwrap()
            .contains("overtaken by cycle 1"));

        // A terminal status.
        let mut cancelled = st.clone();
        feed(&mut cancelled, &[r#"ESIM_STATUS {"esimStatus":"CANCEL"}"#]);
        assert_eq!(
            overtaken(&cancelled, &n10, now()).as_deref(),
            Some("terminal: CANCEL")
        );

        // The plan expired meanwhile (by the clock, no status needed).
        let mut expiring = st.clone();
        feed(
            &mut expiring,
            &[r#"VALIDITY_USAGE {"remain":1,"expiredTime":"2026-04-22T13:00:00Z"}"#],
        );
        assert_eq!(overtaken(&expiring, &n10, now()), None);
        let later = parse_instant("2026-04-22T13:00:00Z").unwrap();
        assert!(overtaken(&expiring, &n10, later)
            .unwrap()
            .contains("plan expired"));
    }

    #[test]
    fn overtaken_validity() {
        let mut st = EsimState::default();
        let v = feed(
            &mut st,
            &[r#"VALIDITY_USAGE {"remain":1,"expiredTime":"2026-04-23T17:13:19Z"}"#],
        )
        .remove(0);
        assert_eq!(overtaken(&st, &v, now()), None);

        let mut extended = st.clone();
        let v2 = feed(
            &mut extended,
            &[r#"VALIDITY_USAGE {"remain":30,"expiredTime":"2026-05-23T17:13:19Z"}"#],
        )
        .remove(0);
        assert!(overtaken(&extended, &v, now())
            .unwrap()
            .contains("plan extended"));
        assert_eq!(overtaken(&extended, &v2, now()), None);

        let after = parse_instant("2026-04-23T17:13:19Z").unwrap();
        assert!(overtaken(&st, &v, after).unwrap().contains("plan expired"));

        let mut revoked = st.clone();
        feed(&mut revoked, &[r#"ESIM_STATUS {"esimStatus":"REVOKED"}"#]);
        assert_eq!(
            overtaken(&revoked, &v, now()).as_deref(),
            Some("terminal: REVOKED")
        );
    }

    #[test]
    fn overtaken_statuses() {
        let mut st = EsimState::default();
        let act = feed(&mut st, &[r#"ESIM_STATUS {"esimStatus":"IN_USE"}"#]).remove(0);
        let up = feed(&mut st, &[r#"ESIM_STATUS {"esimStatus":"USED_UP"}"#]).remove(0);
        let ready = Notice {
            kind: NoticeKind::Ready,
            template: "esim_ready".into(),
            level: None,
            epoch: "once".into(),
            status: Some("GOT_RESOURCE".into()),
        };
        assert_eq!(overtaken(&st, &act, now()), None);
        assert_eq!(overtaken(&st, &up, now()), None);

        // USED_UP: a newer cycle (renewed before the email went out).
        let mut renewed = st.clone();
        feed(&mut renewed, &[r#"ESIM_STATUS {"esimStatus":"IN_USE"}"#]);
        assert_eq!(renewed.cycle, 1);
        assert!(overtaken(&renewed, &up, now())
            .unwrap()
            .contains("overtaken by cycle 1"));

        // A terminal status overtakes USED_UP, activation and the install
        // email (issue 11: never an install email for an eSIM that can no
        // longer be used), never itself.
        let mut expired = st.clone();
        let exp = feed(
            &mut expired,
            &[r#"ESIM_STATUS {"esimStatus":"USED_EXPIRED"}"#],
        )
        .remove(0);
        let cancel = status_notice("esim_cancelled", "CANCEL", "once");
        assert!(overtaken(&expired, &up, now()).is_some());
        assert!(overtaken(&expired, &act, now()).is_some());
        assert_eq!(overtaken(&expired, &exp, now()), None);
        assert_eq!(overtaken(&expired, &cancel, now()), None);
        assert!(overtaken(&expired, &ready, now())
            .unwrap()
            .contains("terminal"));
        let far = parse_instant("2030-01-01T00:00:00Z").unwrap();
        assert_eq!(overtaken(&expired, &exp, far), None);
    }

    #[test]
    fn release_only_the_most_severe_of_a_group() {
        let mut st = EsimState::default();
        let parked = feed(
            &mut st,
            &[
                r#"DATA_USAGE {"totalVolume":100,"remain":50}"#,
                r#"DATA_USAGE {"totalVolume":100,"remain":20}"#,
                r#"DATA_USAGE {"totalVolume":100,"remain":10}"#,
            ],
        );
        assert_eq!(parked.len(), 3);
        let v = release(&st, &parked, now());
        assert!(v[0].is_err() && v[1].is_err(), "{v:?}");
        assert_eq!(v[2], Ok(()));

        // Whatever the parked order, the verdict follows severity.
        let reversed: Vec<Notice> = parked.iter().rev().cloned().collect();
        let v = release(&st, &reversed, now());
        assert_eq!(v[0], Ok(()));
        assert!(v[1].is_err() && v[2].is_err());
    }

    #[test]
    fn release_supersedes_a_parked_10_percent_once_used_up() {
        let mut st = EsimState::default();
        let mut parked = feed(&mut st, &[r#"DATA_USAGE {"totalVolume":100,"remain":9}"#]);
        parked.extend(feed(&mut st, &[r#"ESIM_STATUS {"esimStatus":"USED_UP"}"#]));
        let v = release(&st, &parked, now());
        assert!(v[0].as_ref().unwrap_err().contains("used up"), "{v:?}");
        assert_eq!(v[1], Ok(()));
    }

    #[test]
    fn release_groups_are_independent() {
        let mut st = EsimState::default();
        let parked = feed(
            &mut st,
            &[
                r#"ESIM_STATUS {"esimStatus":"IN_USE"}"#,
                r#"DATA_USAGE {"totalVolume":100,"remain":40}"#,
                r#"VALIDITY_USAGE {"remain":1,"expiredTime":"2026-04-23T17:13:19Z"}"#,
                r#"DATA_USAGE {"totalVolume":100,"remain":15}"#,
            ],
        );
        assert_eq!(parked.len(), 4);
        let v = release(&st, &parked, now());
        assert_eq!(v[0], Ok(()));
        assert!(v[1].as_ref().unwrap_err().contains("0.2"), "{v:?}");
        assert_eq!(v[2], Ok(()));
        assert_eq!(v[3], Ok(()));
        assert_eq!(release(&st, &[], now()), Vec::<Result<(), String>>::new());
    }

    #[test]
    fn human_bytes_reads_like_the_plan() {
        assert_eq!(human_bytes(53687091200), "50 GB");
        assert_eq!(human_bytes(GB + GB / 2), "1.5 GB");
        assert_eq!(human_bytes(512 * 1024 * 1024), "512 MB");
        assert_eq!(human_bytes(100), "100 B");
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Within one cycle the queued levels are strictly decreasing, so
            /// each threshold is queued at most once per cycle.
            #[test]
            fn levels_strictly_decrease_within_a_cycle(
                tv in 1u64..=(64 * GB),
                remains in proptest::collection::vec(0.0f64..=1.2, 1..40),
                thresholds in proptest::collection::btree_set(1u32..=100, 1..6),
                with_threshold in any::<bool>(),
            ) {
                let rules = Rules {
                    thresholds: thresholds.iter().map(|t| *t as f64 / 100.0).collect(),
                    ..Rules::default()
                };
                let mut st = EsimState::default();
                let mut levels = Vec::new();
                for r in remains {
                    let remain = (r * tv as f64) as u64;
                    let content = if with_threshold {
                        format!(r#"{{"totalVolume":{tv},"remainThreshold":{r}}}"#)
                    } else {
                        format!(r#"{{"totalVolume":{tv},"remain":{remain}}}"#)
                    };
                    let e = ev(&format!("DATA_USAGE {content}"));
                    for n in apply(&mut st, &e, &rules, now()).notices {
                        prop_assert_eq!(n.epoch.as_str(), "cycle-0");
                        levels.push(n.level.unwrap());
                    }
                }
                prop_assert!(levels.windows(2).all(|w| w[1] < w[0]), "{:?}", levels);
                for l in &levels {
                    prop_assert!(rules.thresholds.contains(l));
                }
            }

            /// Whatever the event order, no two notices share an identity.
            #[test]
            fn never_the_same_notice_twice(
                picks in proptest::collection::vec(0usize..12, 1..30),
            ) {
                const EVENTS: [&str; 12] = [
                    r#"DATA_USAGE {"totalVolume":100,"remain":45}"#,
                    r#"DATA_USAGE {"totalVolume":100,"remain":9}"#,
                    r#"DATA_USAGE {"totalVolume":200,"remain":30}"#,
                    r#"DATA_USAGE {"totalVolume":200,"remain":1}"#,
                    r#"ESIM_STATUS {"esimStatus":"USED_UP"}"#,
                    r#"ESIM_STATUS {"esimStatus":"IN_USE"}"#,
                    r#"ESIM_STATUS {"esimStatus":"USED_EXPIRED"}"#,
                    r#"ESIM_STATUS {"esimStatus":"UNUSED_EXPIRED"}"#,
                    r#"VALIDITY_USAGE {"remain":1,"expiredTime":"2026-04-23T17:13:19Z"}"#,
                    r#"VALIDITY_USAGE {"remain":9,"expiredTime":"2026-05-23T17:13:19Z"}"#,
                    r#"ORDER_STATUS {"orderStatus":"GOT_RESOURCE"}"#,
                    r#"ESIM_STATUS {"esimStatus":"CANCEL"}"#,
                ];
                let rules = Rules { provider_enabled: true, ..Rules::default() };
                let mut st = EsimState::default();
                let mut seen = BTreeSet::new();
                let mut terminal = false;
                let mut expiry_emails = 0;
                for i in picks {
                    let e = ev(EVENTS[i]);
                    for n in apply(&mut st, &e, &rules, now()).notices {
                        prop_assert!(seen.insert(n.identity("k")), "{} twice", n.identity("k"));
                        if EXPIRED_STATUSES.contains(&n.status.as_deref().unwrap_or("")) {
                            expiry_emails += 1;
                            prop_assert!(expiry_emails == 1, "two expiry emails");
                        }
                        if terminal {
                            prop_assert!(n.kind == NoticeKind::Status
                                && is_terminal(n.status.as_deref().unwrap()));
                        }
                    }
                    terminal = st.terminal.is_some();
                }
            }
        }
    }
}
