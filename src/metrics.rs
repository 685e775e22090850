//! Prometheus metrics (SPEC §9), through the `metrics` facade.
//!
//! Counters are incremented where things happen; gauges are set from the
//! store's own counts just before each scrape, so a scrape never scans the
//! store however large it grows.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::store::Counts;

const SEND_BUCKETS: &[f64] = &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// Installs the process-wide recorder once (tests start several apps in one
/// process; they share it) and returns the handle that renders the text format.
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("esim_notify_send_duration_seconds".into()),
                    SEND_BUCKETS,
                )
                .expect("static histogram buckets are valid")
                .build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first; then ours
            // stays unused and the handle renders nothing, which a test shows.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

fn describe() {
    metrics::describe_counter!(
        "esim_notify_webhooks_total",
        "Webhook deliveries by notifyType and outcome"
    );
    metrics::describe_counter!(
        "esim_notify_notices_total",
        "Notice decisions and send results by template and outcome"
    );
    metrics::describe_counter!(
        "esim_notify_unreadable_fields_total",
        "Webhook fields present but unreadable, by notifyType and field"
    );
    metrics::describe_gauge!("esim_notify_outbox_depth", "Notices waiting in the queue");
    metrics::describe_gauge!(
        "esim_notify_outbox_oldest_age_seconds",
        "Age of the oldest queued notice"
    );
    metrics::describe_gauge!(
        "esim_notify_parked",
        "Notices parked for want of a recipient"
    );
    metrics::describe_gauge!("esim_notify_dead_letters", "Dead letters kept");
    metrics::describe_gauge!(
        "esim_notify_sending_paused",
        "1 while sending is paused (by an operator or a broken transport)"
    );
    metrics::describe_gauge!(
        "esim_notify_last_webhook_timestamp_seconds",
        "Unix time of the last accepted webhook"
    );
    metrics::describe_histogram!(
        "esim_notify_send_duration_seconds",
        "Time taken by one send attempt"
    );
    metrics::describe_gauge!(
        "esim_notify_config_last_reload_successful",
        "0 after a failed reload, 1 otherwise"
    );
}

pub fn webhook(notify_type: &'static str, outcome: &'static str) {
    metrics::counter!("esim_notify_webhooks_total", "type" => notify_type, "outcome" => outcome)
        .increment(1);
}

pub fn notice(template: &str, outcome: &'static str) {
    metrics::counter!("esim_notify_notices_total", "template" => template.to_string(), "outcome" => outcome)
        .increment(1);
}

/// Counts the decisions one operation wrote, by template and outcome.
pub fn decisions(entries: &[crate::store::LogEntry]) {
    for e in entries {
        if let (Some(outcome), Some(template)) = (e.what.notice_outcome(), &e.template) {
            notice(template, outcome);
        }
    }
}

/// A field present but unreadable: the delivery was accepted, the notices
/// needing it were not sent (SPEC §5: logged and counted).
pub fn unreadable(notify_type: &'static str, field: &str) {
    // Field names come from the reader's fixed list, so the label set is bounded.
    metrics::counter!("esim_notify_unreadable_fields_total", "type" => notify_type, "field" => field.to_string())
        .increment(1);
}

pub fn last_webhook_now() {
    metrics::gauge!("esim_notify_last_webhook_timestamp_seconds")
        .set(chrono::Utc::now().timestamp() as f64);
}

pub fn send_duration(seconds: f64) {
    metrics::histogram!("esim_notify_send_duration_seconds").record(seconds);
}

pub fn reload(ok: bool) {
    metrics::gauge!("esim_notify_config_last_reload_successful").set(if ok { 1.0 } else { 0.0 });
}

/// Sets the gauges from the store's counts; called before each scrape.
pub fn set_gauges(counts: Counts, oldest_age_seconds: f64, paused: bool) {
    metrics::gauge!("esim_notify_outbox_depth").set(counts.outbox as f64);
    metrics::gauge!("esim_notify_outbox_oldest_age_seconds").set(oldest_age_seconds);
    metrics::gauge!("esim_notify_parked").set(counts.parked as f64);
    metrics::gauge!("esim_notify_dead_letters").set(counts.dead as f64);
    metrics::gauge!("esim_notify_sending_paused").set(if paused { 1.0 } else { 0.0 });
}
