//! An operator's resend (`POST /admin/esims/{id}/resend`): one email of an
//! eSIM queued again for the recipient bound to it now, in one unit of work,
//! recorded in its decision log as requested by the operator.
//!
//! What is resent is the eSIM's current fact of that template, never a
//! history: the data email of the most severe level of this cycle, the
//! validity email of the current expiry, a status email the eSIM got. The
//! install email carries no activation code when queued: the dispatcher
//! asks the provider for this eSIM's code again (`dispatch::enrich`), so a
//! customer who lost the email gets the code as it stands today.
//!
//! Each resend has an identity of its own (`…/resend-N`), so its Message-ID
//! is new: a mailbox that dropped or deleted the first one takes it.

use chrono::{DateTime, Utc};

use super::intake::queue_or_suppress;
use super::model::{LogEntry, LogKind, QueuedNotice, Suppression};
use super::readdress::bound_now;
use super::resolve::find;
use super::suppression::active_suppression;
use super::tx::Tx;
use crate::customers::mask_email;
use crate::policy::{overtaken, EsimState, Notice, NoticeKind, Rules, USED_UP};
use crate::store::StoreError;
use crate::vars::capture_now;

/// The epoch prefix of a resent install notice (the install email's epoch is
/// otherwise `once`): it tells the dispatcher to ask the provider about this
/// one eSIM, not about its whole order.
pub const RESEND_EPOCH: &str = "resend-";

/// What a resend did.
#[derive(Debug, Clone, PartialEq)]
pub enum Resend {
    /// Queued (durable once the store is): for the dispatcher.
    Queued(Box<QueuedNotice>),
    /// No eSIM is known by that identifier.
    NotFound,
    /// What was asked cannot be sent for this eSIM, and why (a 400).
    Refused(String),
    /// The recipient is suppressed for a reason that stops this template.
    Suppressed(Suppression),
}

/// Whether `q` is an install notice an operator's resend queued.
pub fn is_resent_install(q: &QueuedNotice) -> bool {
    q.notice.kind == NoticeKind::Ready && q.notice.epoch.starts_with(RESEND_EPOCH)
}

/// Queues `template` again for the eSIM known as `label` (any identifier).
pub fn resend(
    tx: &mut Tx,
    label: &str,
    template: &str,
    rules: &Rules,
    essential: &[String],
    now: DateTime<Utc>,
) -> Result<Resend, StoreError> {
    let Some(rec) = find(tx, None, label)? else {
        return Ok(Resend::NotFound);
    };
    let resend_no = tx.next_id();
    let notice = match notice_to_resend(&rec.state, template, rules, resend_no, now) {
        Ok(n) => n,
        Err(why) => return Ok(Resend::Refused(why)),
    };
    let Some(recipient) = bound_now(tx, rec.id)? else {
        return Ok(Resend::Refused(format!(
            "no customer is bound to this eSIM: bind one (PUT /admin/customers) before resending {template}"
        )));
    };
    // The engine's own rule (SPEC §6 "Suppressed address"): refused here,
    // not queued to be dropped as suppressed a moment later.
    if let Some(s) = active_suppression(tx, &recipient.email)? {
        if s.stops(template, essential) {
            return Ok(Resend::Suppressed(s));
        }
    }
    let mut identity = notice.identity(&rec.identity_key());
    if notice.kind != NoticeKind::Ready {
        // The epoch keeps its meaning (the dispatcher checks the notice is
        // still true); the identity, and so the Message-ID, is new.
        identity.push_str(&format!("/{RESEND_EPOCH}{resend_no}"));
    }
    let vars = capture_now(&notice, &rec.state);
    let masked = mask_email(&recipient.email);
    let Some(q) = queue_or_suppress(
        tx,
        &rec,
        identity,
        notice,
        vars,
        recipient,
        LogKind::Queued,
        essential,
        now,
    )?
    else {
        return Err(StoreError::Io(
            "a resend checked as not suppressed was suppressed in the same unit".into(),
        ));
    };
    tx.log(
        rec.id,
        LogEntry::new(
            now,
            LogKind::Note,
            Some(template),
            format!("resend requested by the operator, to {masked}"),
        )
        .about(q.id),
    );
    Ok(Resend::Queued(Box::new(q)))
}

/// The templates a resend can send for an eSIM in `state` now, the install
/// email first (what the console offers; the same rule as [`resend`]).
pub fn resendable(state: &EsimState, rules: &Rules, now: DateTime<Utc>) -> Vec<String> {
    let mut names: Vec<&String> = rules.order_status.values().collect();
    names.push(&rules.data_template);
    names.push(&rules.validity_template);
    names.extend(rules.esim_status.values());
    let mut out: Vec<String> = Vec::new();
    for t in names {
        if !out.contains(t) && notice_to_resend(state, t, rules, 0, now).is_ok() {
            out.push(t.clone());
        }
    }
    out
}

/// The notice a resend of `template` is for this eSIM now, or why there is
/// none: the dispatcher's own check (`policy::overtaken`) is made here too,
/// so a resend it would only drop as superseded is refused with its reason.
fn notice_to_resend(
    s: &EsimState,
    template: &str,
    rules: &Rules,
    resend_no: u64,
    now: DateTime<Utc>,
) -> Result<Notice, String> {
    let notice = what_to_resend(s, template, rules, resend_no)?;
    match overtaken(s, &notice, now) {
        Some(why) => Err(format!(
            "{template} is no longer true for this eSIM ({why}): there is nothing to resend"
        )),
        None => Ok(notice),
    }
}

fn what_to_resend(
    s: &EsimState,
    template: &str,
    rules: &Rules,
    resend_no: u64,
) -> Result<Notice, String> {
    let notice = |kind, level, epoch: String, status: Option<String>| Notice {
        kind,
        template: template.to_string(),
        level,
        epoch,
        status,
    };
    if template == rules.data_template {
        let Some(level) = s.data_level else {
            return Err(format!(
                "no {template} email was queued in this eSIM's current data cycle: there is nothing to resend"
            ));
        };
        return Ok(notice(
            NoticeKind::Data,
            Some(level),
            format!("cycle-{}", s.cycle),
            None,
        ));
    }
    if template == rules.validity_template {
        return match s.expires_at {
            Some(t) if s.validity_notified.contains(&t.timestamp()) => Ok(notice(
                NoticeKind::Validity,
                None,
                format!("exp-{}", t.timestamp()),
                None,
            )),
            _ => Err(format!(
                "no {template} email was queued for this eSIM's current expiry: there is nothing to resend"
            )),
        };
    }
    if rules.order_status.values().any(|t| t == template) {
        if !rules.provider_enabled {
            return Err(format!(
                "{template} needs the eSIM's activation code, and [provider] has no access_code to look it up with"
            ));
        }
        if s.ids.esim_tran_no.is_none() && s.ids.iccid.is_none() {
            return Err(format!(
                "{template}: no esimTranNo or ICCID of this eSIM is known yet to ask the provider for its activation code"
            ));
        }
        let status = rules
            .order_status
            .iter()
            .find(|(_, t)| *t == template)
            .map(|(st, _)| st.clone());
        return Ok(notice(
            NoticeKind::Ready,
            None,
            format!("{RESEND_EPOCH}{resend_no}"),
            status,
        ));
    }
    let statuses: Vec<&String> = rules
        .esim_status
        .iter()
        .filter(|(_, t)| *t == template)
        .map(|(st, _)| st)
        .collect();
    if statuses.is_empty() {
        let mut known: Vec<&str> = vec![&rules.data_template, &rules.validity_template];
        known.extend(rules.esim_status.values().map(String::as_str));
        known.extend(rules.order_status.values().map(String::as_str));
        known.sort_unstable();
        known.dedup();
        return Err(format!(
            "unknown template `{template}`: one of {}",
            known.join(", ")
        ));
    }
    if statuses.iter().any(|st| st.as_str() == USED_UP) {
        return match s.used_up_cycle {
            Some(c) if c == s.cycle => Ok(notice(
                NoticeKind::Status,
                None,
                format!("cycle-{c}"),
                Some(USED_UP.to_string()),
            )),
            _ => Err(format!(
                "{template}: this eSIM's data is not used up in its current cycle: there is nothing to resend"
            )),
        };
    }
    if !s.templates_notified.contains(template) {
        return Err(format!(
            "{template} was never queued for this eSIM (its status never was {}): there is nothing to resend",
            statuses
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(" or ")
        ));
    }
    // The status that caused it: the eSIM's own when it maps here.
    let status = s
        .esim_status
        .clone()
        .filter(|st| statuses.contains(&st))
        .or_else(|| statuses.first().map(|s| s.to_string()));
    Ok(notice(NoticeKind::Status, None, "once".into(), status))
}
