//! One notice's turn: the checks that must be made just before sending,
//! the limits, rendering, the send itself, and what its result means for
//! the notice (SPEC §8).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use super::enrich::{enrich, Enriched};
use super::limits::{retry_delay, Limits};
use super::quiet::quiet_until;
use super::{QUIET_HOURS, RECIPIENT_QUOTA};
use crate::config::{parse_quiet_hours, parse_tz, Config};
use crate::customers::mask_email;
use crate::engine::{Engine, QueuedNotice, SendOutcome};
use crate::live::{current, Live, SharedLive};
use crate::mailer::relay_tags::RelayTags;
use crate::mailer::{message_id_for, ListUnsubscribe, Mailer, OutgoingEmail, SendError};
use crate::policy;
use crate::unsubscribe::{self, Signer};
use crate::vars::email_vars;

/// What the dispatcher needs for every send; shared by all send tasks.
pub struct Ctx {
    pub store: Arc<Engine>,
    pub mailer: Mailer,
    pub live: SharedLive,
    pub config: Arc<Config>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The eSIM Access API, when `[provider]` has an access code.
    pub provider: Option<crate::provider::Provider>,
    /// Signs one-click unsubscribe links; present in "one-click" mode only.
    pub unsubscribe: Option<Signer>,
}

/// What became of a notice's turn, for the schedule.
#[derive(Debug)]
pub enum Fate {
    /// It left the queue: sent, dead, superseded, suppressed or cancelled.
    Done,
    /// Still queued, next looked at `at`.
    Again {
        at: DateTime<Utc>,
        why: Option<String>,
    },
    /// The transport itself is broken: the dispatcher pauses sending and
    /// decides when this notice is tried again.
    Broken { reason: String },
    /// It left the queue, replaced by these (an order's install notice by
    /// one per eSIM).
    Replaced(Vec<QueuedNotice>),
}

/// The result of one turn and whether the transport answered at all (a
/// send was made that did not fail as "transport broken").
pub struct Turn {
    pub fate: Fate,
    pub transport_ok: bool,
}

impl Turn {
    fn no_send(fate: Fate) -> Turn {
        Turn {
            fate,
            transport_ok: false,
        }
    }
}

/// Nothing the store says is trusted to stay true while a notice waits, so
/// a store hiccup just postpones the turn; the store error is logged.
const STORE_RETRY: Duration = Duration::from_secs(5);

pub async fn turn(
    ctx: Arc<Ctx>,
    planned: super::schedule::Plan,
    limits: Arc<Limits>,
    mut stop: watch::Receiver<bool>,
) -> Turn {
    let id = planned.id;
    // A shared store's lease (SPEC §10): every write about this send names it.
    let held = planned.token;
    let later = |why: &str| {
        Turn::no_send(Fate::Again {
            at: Utc::now() + STORE_RETRY,
            why: Some(why.to_string()),
        })
    };
    // The store is the truth: the planned copy may predate a cancel or a record.
    let q = match ctx.store.queued(id) {
        Ok(Some(q)) => q,
        Ok(None) => return Turn::no_send(Fate::Done),
        Err(e) => {
            tracing::error!(notice = id, error = %e, "cannot read the queued notice");
            return later("store error");
        }
    };
    let template = q.notice.template.clone();
    let now = Utc::now();
    // SPEC §6 "Whose address": the recipient bound now, not when it was queued.
    let q = match ctx.store.follow_binding(q, now) {
        Ok(Some(q)) => q,
        Ok(None) => return Turn::no_send(Fate::Done),
        Err(e) => {
            tracing::error!(notice = id, error = %e, "cannot read the eSIM's binding");
            return later("store error");
        }
    };

    let (state, ids) = match ctx.store.esim_state(q.esim) {
        Ok(Some(s)) => s,
        Ok(None) => {
            return finish(
                &ctx,
                &q,
                held,
                SendOutcome::Superseded("the eSIM is no longer known".into()),
                "superseded",
            );
        }
        Err(e) => {
            tracing::error!(notice = id, error = %e, "cannot read the eSIM state");
            return later("store error");
        }
    };
    if let Some(reason) = policy::overtaken(&state, &q.notice, now) {
        return finish(
            &ctx,
            &q,
            held,
            SendOutcome::Superseded(reason),
            "superseded",
        );
    }
    match ctx
        .store
        .suppression_stopping(&q.recipient.email, &template)
    {
        Ok(Some(s)) => {
            let why = format!("address suppressed: {}", s.describe());
            return finish(&ctx, &q, held, SendOutcome::Suppressed(why), "suppressed");
        }
        Ok(None) => {}
        Err(e) => {
            tracing::error!(notice = id, error = %e, "cannot read the suppression list");
            return later("store error");
        }
    }

    // SPEC §7: an esim_ready is never sent without its activation code;
    // every email names its plan when the provider knows it.
    let plan = match enrich(&ctx, &q, &ids, now).await {
        Enriched::Send { plan } => plan,
        Enriched::Replaced(notices) => return Turn::no_send(Fate::Replaced(notices)),
        Enriched::Wait { until, why } => return wait(&ctx, &q, held, until, &why),
        Enriched::Superseded(why) => {
            return finish(&ctx, &q, held, SendOutcome::Superseded(why), "superseded")
        }
        Enriched::Dead(reason) => {
            tracing::warn!(notice = id, template = %template, reason = %reason, "dead letter");
            let dead = SendOutcome::Dead {
                reason,
                suppress: None,
            };
            return finish(&ctx, &q, held, dead, "dead");
        }
    };

    let live = current(&ctx.live);
    if let Some(until) = quiet(&ctx.config, &live, &q, now) {
        return wait(&ctx, &q, held, until, QUIET_HOURS);
    }
    // Held until the mail server answers: only an accepted message keeps it.
    let quota = match limits.recipient(&q.recipient.email).await {
        Ok(r) => r,
        Err(wait_for) => return wait(&ctx, &q, held, now + wait_for, RECIPIENT_QUOTA),
    };
    // The global limit is a pace, not a per-notice wait: the turn holds its
    // send slot until the pace allows it (no other send could go anyway),
    // and gives up only when the dispatcher stops.
    while let Err(pause) = limits.global().await {
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.wait_for(|s| *s) => {
                return Turn::no_send(Fate::Again { at: q.next_attempt, why: q.waiting_for.clone() });
            }
        }
    }

    // A service email (`email.essential`) goes even to an address that
    // unsubscribed: offering to unsubscribe from it would promise what is not kept.
    let unsubscribe = if ctx.store.is_essential(&template) {
        None
    } else {
        list_unsubscribe(&ctx.config, ctx.unsubscribe.as_ref(), &q)
    };
    let plan_json = plan.as_ref().map(crate::provider::Plan::vars);
    let mut vars = email_vars(
        &q.vars,
        &q.recipient,
        &ids,
        &live.config.brand,
        plan_json.as_ref(),
    );
    // The footer's visible link is the header's target (SPEC §7: null unless configured).
    vars["unsubscribe_url"] = unsubscribe
        .as_ref()
        .map_or(serde_json::Value::Null, |u| u.target.clone().into());
    // Rendered as of now, the sending instant: "ends in 37 hours" counts from here,
    // however long the notice waited (quiet hours, quotas, backoff).
    let rendered = match live.templates.render_at(
        &template,
        q.recipient.locale.as_deref(),
        &vars,
        Utc::now(),
    ) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(notice = id, template = %template, problem = %e,
                "TEMPLATE PROBLEM: the notice cannot be rendered and goes to the dead letters; fix the template, then retry it");
            let reason = format!("template problem: {e}");
            return finish(
                &ctx,
                &q,
                held,
                SendOutcome::Dead {
                    reason,
                    suppress: None,
                },
                "dead",
            );
        }
    };
    // The install email's QR code travels inside the message (`cid:`), so it
    // shows where remote images are blocked.
    let inline_images = match crate::provider::install::images_in_vars(&vars, &rendered.html) {
        Ok(images) => images,
        Err(e) => {
            let reason = format!("the QR code of the activation code cannot be drawn: {e}");
            let dead = SendOutcome::Dead {
                reason,
                suppress: None,
            };
            return finish(&ctx, &q, held, dead, "dead");
        }
    };
    let message_id = message_id_for(&q.identity, &ctx.config.email.from);
    let email = OutgoingEmail {
        to_email: q.recipient.email.clone(),
        to_name: q.recipient.name.clone(),
        subject: rendered.subject,
        text: rendered.text,
        html: rendered.html,
        message_id: message_id.clone(),
        template: template.clone(),
        list_unsubscribe: unsubscribe,
        inline_images,
    };

    // The last moment a lost lease can still stop the send: another
    // instance may hold the notice now (this one was stopped or cut off
    // past its lease), and it records what happens to it.
    if let Some(token) = held {
        if !still_held(&ctx, id, token).await {
            tracing::warn!(
                notice = id,
                "lease lost before sending: another instance has the notice"
            );
            return Turn::no_send(Fate::Done);
        }
    }
    let started = Instant::now();
    // The notice's id in each configured relay's custom data, so its
    // bounce and complaint reports find the notice (`/feedback/…`).
    let tags = RelayTags::from_config(&ctx.config.feedback).headers(q.id);
    let result = ctx.mailer.send_tagged(&email, &tags).await;
    let took = started.elapsed();
    ctx.metrics.send_duration(took.as_secs_f64());
    let attempt = q.attempts + 1;
    let log = |result: &str, error: Option<&str>| {
        tracing::info!(
            notice = id,
            template = %template,
            attempt,
            result,
            error,
            duration_ms = took.as_millis() as u64,
            to = %mask_email(&q.recipient.email),
            "send"
        );
    };
    let now = Utc::now();
    match result {
        Ok(()) => {
            quota.accepted();
            log("sent", None);
            let mut t = finish(&ctx, &q, held, SendOutcome::Sent { message_id }, "sent");
            settle(&ctx, id).await;
            t.transport_ok = true;
            t
        }
        Err(SendError::TransportBroken { reason }) => {
            log("transport broken", Some(&reason));
            ctx.metrics.notice(&template, "failed");
            Turn::no_send(Fate::Broken { reason })
        }
        Err(e) => {
            let outcome = classify(&e, &q, now, &ctx.config);
            let (label, metric) = match &outcome {
                SendOutcome::Retry { .. } => ("retry", "failed"),
                _ => ("dead", "dead"),
            };
            log(label, Some(&e.to_string()));
            if metric == "dead" {
                tracing::warn!(notice = id, template = %template, to = %mask_email(&q.recipient.email), error = %e, "dead letter");
            }
            let dead = metric == "dead";
            let mut t = finish(&ctx, &q, held, outcome, metric);
            if dead {
                settle(&ctx, id).await;
            }
            t.transport_ok = true;
            t
        }
    }
}

/// SPEC §8's classes, for every failure but a broken transport.
pub fn classify(
    e: &SendError,
    q: &QueuedNotice,
    now: DateTime<Utc>,
    config: &Config,
) -> SendOutcome {
    match e {
        SendError::RecipientRejected { code, message } => SendOutcome::Dead {
            reason: e.to_string(),
            suppress: Some(format!("user unknown ({code} {message})")),
        },
        SendError::MessageRejected { .. } | SendError::Invalid { .. } => SendOutcome::Dead {
            reason: e.to_string(),
            suppress: None,
        },
        SendError::Transient { .. } | SendError::TransportBroken { .. } => {
            let failed = q.attempts + 1;
            let retry = &config.retry;
            if failed >= retry.max_attempts {
                return SendOutcome::Dead {
                    reason: format!("gave up after {failed} attempts: {e}"),
                    suppress: None,
                };
            }
            let next = now + retry_delay(failed, retry);
            let deadline = q.queued_at + retry.max_age.0;
            if next > deadline {
                return SendOutcome::Dead {
                    reason: format!("gave up after {failed} attempts (retry.max_age reached): {e}"),
                    suppress: None,
                };
            }
            SendOutcome::Retry {
                error: e.to_string(),
                next_attempt: next,
            }
        }
    }
}

/// When the customer's quiet hours end, if they hold this notice now.
fn quiet(
    config: &Config,
    live: &Live,
    q: &QueuedNotice,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let window = parse_quiet_hours(&live.config.delivery.quiet_hours)
        .ok()
        .flatten()?;
    if live
        .config
        .delivery
        .quiet_hours_bypass
        .contains(&q.notice.template)
    {
        return None;
    }
    let tz = q
        .recipient
        .timezone
        .as_deref()
        .and_then(|t| parse_tz(t).ok())
        .unwrap_or_else(|| config.default_tz());
    quiet_until(now, tz, window)
}

/// `List-Unsubscribe` from `email.list_unsubscribe`.
fn list_unsubscribe(
    config: &Config,
    signer: Option<&Signer>,
    q: &QueuedNotice,
) -> Option<ListUnsubscribe> {
    let target = config.email.list_unsubscribe.trim();
    match target {
        "" => None,
        // RFC 8058: a per-recipient signed link on our public listener, which
        // mail clients POST to; the header pair says so.
        "one-click" => signer.map(|s| ListUnsubscribe {
            // The token carries the locale: the page the link opens speaks the email's language.
            target: unsubscribe::link_with_locale(
                &config.public_url(),
                s,
                &q.recipient.email,
                q.recipient.locale.as_deref(),
            ),
            one_click: true,
        }),
        t if t.starts_with("https://") || t.starts_with("http://") || t.starts_with("mailto:") => {
            Some(ListUnsubscribe {
                target: t.to_string(),
                one_click: false,
            })
        }
        _ => None,
    }
}

/// Renews the lease of a held notice; false when it is gone or the store
/// cannot say (then the send does not go: the lease holder decides).
async fn still_held(ctx: &Arc<Ctx>, id: u64, token: i64) -> bool {
    let (store, lease) = (ctx.store.clone(), ctx.config.store.lease.0);
    matches!(
        tokio::task::spawn_blocking(move || store.renew(id, token, lease)).await,
        Ok(Ok(true))
    )
}

/// Records a wait (not an attempt) and hands the time to the schedule.
fn wait(ctx: &Ctx, q: &QueuedNotice, held: Option<i64>, until: DateTime<Utc>, why: &str) -> Turn {
    tracing::debug!(notice = q.id, template = %q.notice.template, until = %until, why, "waits");
    let outcome = SendOutcome::Wait {
        until,
        why: why.to_string(),
    };
    record(ctx, q.id, held, &outcome);
    Turn::no_send(Fate::Again {
        at: until,
        why: Some(why.to_string()),
    })
}

/// Records an outcome that ends or reschedules the notice, counts it, and
/// tells the schedule.
fn finish(
    ctx: &Ctx,
    q: &QueuedNotice,
    held: Option<i64>,
    outcome: SendOutcome,
    metric: &'static str,
) -> Turn {
    match &outcome {
        SendOutcome::Superseded(r) | SendOutcome::Suppressed(r) => {
            tracing::info!(notice = q.id, template = %q.notice.template, to = %mask_email(&q.recipient.email), reason = %r, "not sent: {metric}");
        }
        _ => {}
    }
    ctx.metrics.notice(&q.notice.template, metric);
    record(ctx, q.id, held, &outcome);
    let fate = match outcome {
        SendOutcome::Retry { next_attempt, .. } => Fate::Again {
            at: next_attempt,
            why: Some(super::BACKOFF.into()),
        },
        SendOutcome::Wait { until, why } => Fate::Again {
            at: until,
            why: Some(why),
        },
        _ => Fate::Done,
    };
    Turn::no_send(fate)
}

/// Waits until a sent or dead notice's record is on disk before its slot is
/// freed: lost on a power cut, a "sent" record means the email goes out a
/// second time and a "dead" one may forget the suppression it added. The
/// email is already out, so this narrows the window to one group-commit
/// sync instead of sled's 500 ms; a failure is only logged (the record may
/// still reach the disk with the next sync).
async fn settle(ctx: &Ctx, id: u64) {
    match ctx.store.durable().await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(notice = id, error = %e, "send outcome not synced"),
        Err(_) => tracing::error!(notice = id, "send outcome not synced: the flusher stopped"),
    }
}

pub fn record(ctx: &Ctx, id: u64, held: Option<i64>, outcome: &SendOutcome) {
    if let Err(e) = ctx.store.record_held(id, held, outcome, Utc::now()) {
        // The queue keeps the notice as it was: a sent one may go out again
        // after a restart (at least once), anything else is simply retried.
        tracing::error!(notice = id, error = %e, outcome = outcome_label(outcome), "cannot record a send outcome");
    }
}

fn outcome_label(o: &SendOutcome) -> &'static str {
    match o {
        SendOutcome::Sent { .. } => "sent",
        SendOutcome::Retry { .. } => "retry",
        SendOutcome::Wait { .. } => "wait",
        SendOutcome::Dead { .. } => "dead",
        SendOutcome::Superseded(_) => "superseded",
        SendOutcome::Suppressed(_) => "suppressed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        Config::from_sources(extra, Vec::<(String, String)>::new()).unwrap()
    }

    fn q(attempts: u32, queued_at: DateTime<Utc>) -> QueuedNotice {
        QueuedNotice {
            attempts,
            ..QueuedNotice::example(1, 1, queued_at)
        }
    }

    fn transient() -> SendError {
        SendError::Transient {
            reason: "451 at RCPT: try later".into(),
        }
    }

    #[test]
    fn transient_failures_retry_within_the_backoff_then_give_up() {
        let c =
            config("[retry]\nmax_attempts = 3\ninitial_backoff = \"30s\"\nmax_backoff = \"1h\"\n");
        let now = Utc::now();
        match classify(&transient(), &q(0, now), now, &c) {
            SendOutcome::Retry {
                next_attempt,
                error,
            } => {
                // Never sooner than initial_backoff; jitter adds up to a quarter.
                assert!(
                    next_attempt >= now + chrono::Duration::seconds(30)
                        && next_attempt <= now + chrono::Duration::milliseconds(37_500)
                );
                assert!(error.contains("451"));
            }
            other => panic!("{other:?}"),
        }
        match classify(&transient(), &q(1, now), now, &c) {
            SendOutcome::Retry { next_attempt, .. } => {
                assert!(
                    next_attempt >= now + chrono::Duration::seconds(60)
                        && next_attempt <= now + chrono::Duration::seconds(75)
                )
            }
            other => panic!("{other:?}"),
        }
        match classify(&transient(), &q(2, now), now, &c) {
            SendOutcome::Dead { reason, suppress } => {
                assert!(reason.starts_with("gave up after 3 attempts"), "{reason}");
                assert!(reason.contains("451"), "{reason}");
                assert_eq!(suppress, None);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_retry_that_would_fall_after_max_age_is_a_dead_letter() {
        let c =
            config("[retry]\ninitial_backoff = \"10m\"\nmax_backoff = \"10m\"\nmax_age = \"1h\"\n");
        let now = Utc::now();
        // Queued 59m50s ago: a retry never waits less than initial_backoff
        // (10 minutes), so every one would land after the deadline.
        let old = q(1, now - chrono::Duration::seconds(3590));
        for _ in 0..50 {
            match classify(&transient(), &old, now, &c) {
                SendOutcome::Dead { reason, .. } => assert!(reason.contains("max_age"), "{reason}"),
                other => panic!("{other:?}"),
            }
        }
        let past = q(1, now - chrono::Duration::hours(2));
        assert!(matches!(
            classify(&transient(), &past, now, &c),
            SendOutcome::Dead { .. }
        ));
    }

    #[test]
    fn permanent_refusals() {
        let c = config("");
        let now = Utc::now();
        let user_unknown = SendError::RecipientRejected {
            code: 550,
            message: "5.1.1 a***@example.com: user unknown".into(),
        };
        match classify(&user_unknown, &q(0, now), now, &c) {
            SendOutcome::Dead {
                suppress: Some(why),
                ..
            } => assert!(why.starts_with("user unknown (550"), "{why}"),
            other => panic!("{other:?}"),
        }
        for e in [
            SendError::MessageRejected {
                code: 554,
                message: "5.6.0 refused".into(),
            },
            SendError::Invalid {
                reason: "bad address".into(),
            },
        ] {
            assert!(matches!(
                classify(&e, &q(0, now), now, &c),
                SendOutcome::Dead { suppress: None, .. }
            ));
        }
    }

    #[test]
    fn list_unsubscribe_modes() {
        let n = q(0, Utc::now());
        let signer = Signer::new(vec![7; 32]);
        assert!(list_unsubscribe(&config(""), Some(&signer), &n).is_none());
        let u = list_unsubscribe(
            &config("[email]\nlist_unsubscribe = \"mailto:unsub@example.com\"\n"),
            Some(&signer),
            &n,
        )
        .unwrap();
        assert_eq!(u.target, "mailto:unsub@example.com");
        assert!(!u.one_click);
        let c = config(
            "[server]\npublic_url = \"https://notify.example.com/\"\n[email]\nlist_unsubscribe = \"one-click\"\n",
        );
        let u = list_unsubscribe(&c, Some(&signer), &n).unwrap();
        assert!(u.one_click);
        let token = u
            .target
            .strip_prefix("https://notify.example.com/unsubscribe?t=")
            .unwrap();
        assert_eq!(signer.verify(token).as_deref(), Some("ana@example.com"));
    }
}
