//! The decision log as an operator reads it: one sentence per line ("Sent:
//! 10 % of data left, to a***@example.com, 14:02"), not the engine's keys
//! (`T1/data/data_usage/0.1/cycle-0`). The raw line stays in the JSON API
//! (`GET /admin/esims/{id}`) and in each line's tooltip.
//!
//! The engine writes a notice's identity at the start of the lines that
//! decide it (queued, released, parked, superseded); later lines about the
//! same notice (sent, failed, dead) name its id, so the timeline remembers
//! what each id was and says it again in words.

use std::collections::HashMap;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{json, Value};

use super::page::{bytes, percent, when};
use crate::engine::{LogEntry, LogKind};

/// What a notice was about, from its identity
/// (`{eSIM}/{kind}/{template}/{level}/{epoch}[/resend-N]`).
#[derive(Debug, Clone, PartialEq)]
struct About {
    subject: String,
    resent: bool,
}

fn parse_identity(token: &str) -> Option<About> {
    let parts: Vec<&str> = token.split('/').collect();
    if parts.len() < 5 {
        return None;
    }
    let (kind, template, level, epoch) = (parts[1], parts[2], parts[3], parts[4]);
    let resent =
        epoch.starts_with("resend-") || parts.get(5).is_some_and(|p| p.starts_with("resend-"));
    let subject = match kind {
        "data" => match level.parse::<f64>() {
            Ok(l) => format!("{} of data left", percent(l)),
            Err(_) => "data running low".into(),
        },
        "validity" => match epoch
            .strip_prefix("exp-")
            .and_then(|s| s.parse::<i64>().ok())
            .and_then(|t| Utc.timestamp_opt(t, 0).single())
        {
            Some(t) => format!("plan ending {}", t.format("%Y-%m-%d %H:%M UTC")),
            None => "plan ending soon".into(),
        },
        "status" | "ready" => template_words(template),
        _ => return None,
    };
    Some(About { subject, resent })
}

/// A template in words, for the shipped names; any other name as it is.
pub fn template_words(template: &str) -> String {
    match template {
        "data_usage" => "data running low".into(),
        "validity_usage" => "plan ending soon".into(),
        "esim_ready" => "install email (QR code)".into(),
        "esim_activated" => "eSIM activated".into(),
        "esim_used_up" => "data used up".into(),
        "esim_expired" => "plan expired".into(),
        "esim_expired_unused" => "plan expired unused".into(),
        "esim_cancelled" => "eSIM cancelled".into(),
        "esim_revoked" => "eSIM revoked".into(),
        other => other.replace('_', " "),
    }
}

fn label(k: LogKind) -> (&'static str, &'static str) {
    match k {
        LogKind::Event => ("event", "Webhook"),
        LogKind::Queued => ("queued", "Queued"),
        LogKind::Parked => ("parked", "Parked"),
        LogKind::Released => ("released", "Released"),
        LogKind::Sent => ("sent", "Sent"),
        LogKind::Suppressed => ("suppressed", "Not sent, suppressed"),
        LogKind::Superseded => ("superseded", "Not sent, superseded"),
        LogKind::Failed => ("failed", "Attempt failed"),
        LogKind::Dead => ("dead", "Dead letter"),
        LogKind::Expired => ("expired", "Parked notice expired"),
        LogKind::Cancelled => ("cancelled", "Cancelled"),
        LogKind::Requeued => ("requeued", "Requeued"),
        LogKind::Note => ("note", "Note"),
        LogKind::Bounced => ("bounced", "Bounced"),
        LogKind::Complained => ("complained", "Complained"),
    }
}

/// "DATA_USAGE notifyId=… remain=5351505742/53687091200 — notes" in words.
fn event_sentence(detail: &str) -> String {
    let (head, notes) = match detail.split_once(" — ") {
        Some((h, n)) => (h, Some(n)),
        None => (detail, None),
    };
    let mut words = head.split_whitespace();
    let kind = words.next().unwrap_or("").replace('_', " ").to_lowercase();
    let mut parts = vec![kind];
    for w in words {
        let Some((k, v)) = w.split_once('=') else {
            continue;
        };
        match k {
            "esimStatus" => parts.push(format!("status {v}")),
            "smdpStatus" => parts.push(format!("SM-DP+ {v}")),
            "remain" => {
                if let Some((r, t)) = v.split_once('/') {
                    if let (Ok(r), Ok(t)) = (r.parse::<u64>(), t.parse::<u64>()) {
                        let pct = if t > 0 {
                            format!(" ({})", percent(r as f64 / t as f64))
                        } else {
                            String::new()
                        };
                        parts.push(format!("{} of {} left{pct}", bytes(r), bytes(t)));
                    }
                }
            }
            "expiredTime" => parts.push(format!("plan ends {}", v.replace('T', " "))),
            "unreadable" => parts.push(format!("unreadable fields: {v}")),
            _ => {}
        }
    }
    let mut s = parts.join(", ");
    if let Some(n) = notes {
        s.push_str(" — ");
        s.push_str(n);
    }
    s
}

/// The decision log as the timeline shows it: an event, then what it
/// decided (written at the same instant) indented beneath it, each line a
/// sentence.
pub fn timeline(decisions: &[LogEntry], now: DateTime<Utc>) -> Vec<Value> {
    let mut out = Vec::new();
    let mut event_at = None;
    let mut known: HashMap<u64, About> = HashMap::new();
    for e in decisions {
        let (class, label) = label(e.what);
        let decided_by_event = e.what != LogKind::Event && event_at == Some(e.at);
        if e.what == LogKind::Event {
            event_at = Some(e.at);
        }
        let (detail, message_id) = match e.detail.split_once(", Message-ID ") {
            Some((d, id)) if e.what == LogKind::Sent => (d.to_string(), Some(id.to_string())),
            _ => (e.detail.clone(), None),
        };
        let sentence = if e.what == LogKind::Event {
            event_sentence(&detail)
        } else {
            // A line that starts with the notice's identity: say what it was
            // about, then what the line adds.
            let first = detail.split_whitespace().next().unwrap_or("");
            let parsed = parse_identity(first.trim_end_matches(':'));
            let rest = match &parsed {
                Some(_) => detail[first.len()..].trim_start_matches(':').trim(),
                None => detail.trim(),
            };
            if let (Some(a), Some(n)) = (&parsed, e.notice) {
                known.insert(n, a.clone());
            }
            let about = parsed
                .or_else(|| e.notice.and_then(|n| known.get(&n).cloned()))
                .or_else(|| {
                    e.template.as_deref().map(|t| About {
                        subject: template_words(t),
                        resent: false,
                    })
                });
            let mut s = match about {
                Some(a) if a.resent => format!("{} (resent)", a.subject),
                Some(a) => a.subject,
                None => String::new(),
            };
            if !rest.is_empty() {
                if !s.is_empty() {
                    s.push_str(", ");
                }
                s.push_str(rest);
            }
            s
        };
        let time = e.at.format("%H:%M").to_string();
        out.push(json!({
            "class": class,
            "label": label,
            "when": when(e.at, now),
            "sentence": format!("{label}: {sentence}, {time}"),
            "says": format!("{sentence}, {time}"),
            "template": e.template,
            "notice": e.notice,
            "detail": e.detail,
            "message_id": message_id,
            "child": decided_by_event,
        }));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 5, 1, h, m, 0).unwrap()
    }

    fn line(t: DateTime<Utc>, what: LogKind, notice: Option<u64>, detail: &str) -> LogEntry {
        LogEntry {
            at: t,
            what,
            notice,
            template: Some("data_usage".into()),
            detail: detail.into(),
        }
    }

    fn sentences(log: &[LogEntry]) -> Vec<String> {
        timeline(log, at(15, 0))
            .into_iter()
            .map(|v| v["sentence"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn a_queued_then_sent_notice_reads_as_sentences() {
        let log = [
            LogEntry {
                template: None,
                ..line(
                    at(14, 1),
                    LogKind::Event,
                    None,
                    "DATA_USAGE notifyId=f7 remain=536870912/5368709120",
                )
            },
            line(
                at(14, 1),
                LogKind::Queued,
                Some(7),
                "T1/data/data_usage/0.1/cycle-0 to a***@example.com",
            ),
            line(
                at(14, 2),
                LogKind::Sent,
                Some(7),
                "to a***@example.com (attempt 1), Message-ID <x@example.com>",
            ),
        ];
        let s = sentences(&log);
        assert_eq!(
            s[0],
            "Webhook: data usage, 512 MB of 5 GB left (10 %), 14:01"
        );
        assert_eq!(
            s[1],
            "Queued: 10 % of data left, to a***@example.com, 14:01"
        );
        assert_eq!(
            s[2],
            "Sent: 10 % of data left, to a***@example.com (attempt 1), 14:02"
        );
        assert!(s.iter().all(|l| !l.contains("cycle-0")), "{s:?}");
    }

    #[test]
    fn resends_statuses_and_parked_lines_name_what_they_were_about() {
        let mut ready = line(
            at(9, 0),
            LogKind::Queued,
            Some(9),
            "T1/ready/esim_ready/-/resend-8 to b***@example.com",
        );
        ready.template = Some("esim_ready".into());
        let log = [
            line(
                at(8, 0),
                LogKind::Parked,
                None,
                "T1/data/data_usage/0.5/cycle-0: no recipient bound to this eSIM yet",
            ),
            ready,
            line(
                at(9, 5),
                LogKind::Bounced,
                Some(9),
                "mailbox does not exist",
            ),
        ];
        let s = sentences(&log);
        assert_eq!(
            s[0],
            "Parked: 50 % of data left, no recipient bound to this eSIM yet, 08:00"
        );
        assert_eq!(
            s[1],
            "Queued: install email (QR code) (resent), to b***@example.com, 09:00"
        );
        assert_eq!(
            s[2],
            "Bounced: install email (QR code) (resent), mailbox does not exist, 09:05"
        );
    }
}
