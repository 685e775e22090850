//! Prometheus metrics (SPEC §9), through the `metrics` facade.
//!
//! Counters are incremented where things happen; gauges are set from the
//! store's own counts just before each scrape, so a scrape never scans the
//! store however large it grows.

use metrics::{Key, Label, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use crate::engine::Counts;

const SEND_BUCKETS: &[f64] = &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

static META: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// One application's metrics: its own recorder, not the process-wide one,
/// so two applications in one process (the integration tests start many)
/// never count each other's webhooks. Cheap to clone-share behind an `Arc`.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("esim_notify_send_duration_seconds".into()),
                SEND_BUCKETS,
            )
            .expect("static histogram buckets are valid")
            .build_recorder();
        let handle = recorder.handle();
        let m = Metrics { recorder, handle };
        m.describe();
        m
    }

    fn counter(&self, name: &'static str, labels: Vec<Label>) -> metrics::Counter {
        self.recorder
            .register_counter(&Key::from_parts(name, labels), &META)
    }

    fn gauge(&self, name: &'static str) -> metrics::Gauge {
        self.recorder
            .register_gauge(&Key::from_static_name(name), &META)
    }

    fn describe(&self) {
        let counters = [
            (
                "esim_notify_webhooks_total",
                "Webhook deliveries by notifyType and outcome",
            ),
            (
                "esim_notify_notices_total",
                "Notice decisions and send results by template and outcome",
            ),
            (
                "esim_notify_unreadable_fields_total",
                "Webhook fields present but unreadable, by notifyType and field",
            ),
            (
                "esim_notify_feedback_reports_total",
                "Mail provider bounce and complaint reports by provider and outcome",
            ),
        ];
        for (name, help) in counters {
            self.recorder
                .describe_counter(name.into(), None, help.into());
        }
        let gauges = [
            ("esim_notify_outbox_depth", "Notices waiting in the queue"),
            (
                "esim_notify_outbox_oldest_age_seconds",
                "Age of the oldest queued notice",
            ),
            (
                "esim_notify_parked",
                "Notices parked for want of a recipient",
            ),
            ("esim_notify_dead_letters", "Dead letters kept"),
            (
                "esim_notify_sending_paused",
                "1 while sending is paused (by an operator or a broken transport)",
            ),
            (
                "esim_notify_last_webhook_timestamp_seconds",
                "Unix time of the last accepted webhook",
            ),
            (
                "esim_notify_config_last_reload_successful",
                "0 after a failed reload, 1 otherwise",
            ),
            (
                "esim_notify_records_set_aside",
                "Store records set aside because they did not decode (GET /admin/set-aside)",
            ),
        ];
        for (name, help) in gauges {
            self.recorder.describe_gauge(name.into(), None, help.into());
        }
        self.recorder.describe_histogram(
            "esim_notify_send_duration_seconds".into(),
            None,
            "Time taken by one send attempt".into(),
        );
    }
}

/// The `outcome` values of `esim_notify_webhooks_total` (SPEC §9).
pub const WEBHOOK_OUTCOMES: [&str; 6] = [
    "accepted",
    "duplicate",
    "ignored",
    "rejected_ip",
    "rejected_token",
    "invalid",
];

/// The `outcome` values of `esim_notify_notices_total` (SPEC §9).
pub const NOTICE_OUTCOMES: [&str; 10] = [
    "queued",
    "sent",
    "suppressed",
    "parked",
    "released",
    "superseded",
    "failed",
    "dead",
    "bounced",
    "complained",
];

/// The mail providers that report bounces and complaints (`/feedback/…`).
pub const FEEDBACK_PROVIDERS: [&str; 4] = ["ses", "sendgrid", "postmark", "mailgun"];

/// The `outcome` values of `esim_notify_feedback_reports_total`: what each
/// report (one event of a batch) did. `unknown`: about no message we sent;
/// `repeated`: taken before; `ignored`: an event that is no bounce nor
/// complaint; `rejected`: a request refused (bad signature or token, stale,
/// unreadable), counted once per request.
pub const FEEDBACK_OUTCOMES: [&str; 7] = [
    "bounced",
    "transient",
    "complained",
    "unknown",
    "repeated",
    "ignored",
    "rejected",
];

impl Metrics {
    /// Exports every series with each known label value at zero, so that a
    /// rate or an absence alert has a series to look at from the first scrape
    /// rather than from the first event of each kind. Called at start-up and
    /// after each reload (a reload may map new templates); registering an
    /// existing series again leaves its value alone.
    pub fn zero(&self, templates: &[String]) {
        use crate::event::NotifyType as N;
        let types = [
            N::CheckHealth,
            N::OrderStatus,
            N::EsimStatus,
            N::SmdpEvent,
            N::DataUsage,
            N::ValidityUsage,
            N::Unknown(String::new()),
        ];
        for t in &types {
            for outcome in WEBHOOK_OUTCOMES {
                self.webhook_counter(t.metric_label(), outcome).increment(0);
            }
        }
        for template in templates {
            for outcome in NOTICE_OUTCOMES {
                self.notice_counter(template, outcome).increment(0);
            }
        }
        for provider in FEEDBACK_PROVIDERS {
            for outcome in FEEDBACK_OUTCOMES {
                self.feedback_counter(provider, outcome).increment(0);
            }
        }
    }

    /// `n` of a mail provider's reports (or refused requests), by what they did.
    pub fn feedback(&self, provider: &'static str, outcome: &'static str, n: u64) {
        self.feedback_counter(provider, outcome).increment(n);
    }

    fn feedback_counter(&self, provider: &'static str, outcome: &'static str) -> metrics::Counter {
        self.counter(
            "esim_notify_feedback_reports_total",
            vec![
                Label::from_static_parts("provider", provider),
                Label::from_static_parts("outcome", outcome),
            ],
        )
    }

    /// The text format for a scrape. The exporter prints a histogram only once
    /// it holds a sample, so until the first send the empty
    /// `send_duration_seconds` series is written here, with every bucket at zero
    /// (SPEC §9: every series from start-up).
    pub fn render(&self) -> String {
        const NAME: &str = "esim_notify_send_duration_seconds";
        let text = self.handle.render();
        if text.contains(&format!("{NAME}_count")) {
            return text;
        }
        // Drop a lone HELP/TYPE of the empty histogram so it is not named twice.
        let mut out: String = text
            .lines()
            .filter(|l| !(l.starts_with('#') && l.split_whitespace().nth(2) == Some(NAME)))
            .flat_map(|l| [l, "\n"])
            .collect();
        if !out.is_empty() && !out.ends_with("\n\n") {
            out.push('\n');
        }
        out.push_str(&format!(
            "# HELP {NAME} Time taken by one send attempt\n# TYPE {NAME} histogram\n"
        ));
        for le in SEND_BUCKETS {
            out.push_str(&format!("{NAME}_bucket{{le=\"{le}\"}} 0\n"));
        }
        out.push_str(&format!(
            "{NAME}_bucket{{le=\"+Inf\"}} 0\n{NAME}_sum 0\n{NAME}_count 0\n"
        ));
        out
    }

    /// The stored time of the last accepted webhook (0: never; SPEC §9 wants
    /// the series from start-up, and a store that never got one should alert).
    pub fn last_webhook_at(&self, at: Option<chrono::DateTime<chrono::Utc>>) {
        self.gauge("esim_notify_last_webhook_timestamp_seconds")
            .set(at.map_or(0.0, |t| t.timestamp_millis() as f64 / 1000.0));
    }

    pub fn webhook(&self, notify_type: &'static str, outcome: &'static str) {
        self.webhook_counter(notify_type, outcome).increment(1);
    }

    fn webhook_counter(
        &self,
        notify_type: &'static str,
        outcome: &'static str,
    ) -> metrics::Counter {
        self.counter(
            "esim_notify_webhooks_total",
            vec![
                Label::from_static_parts("type", notify_type),
                Label::from_static_parts("outcome", outcome),
            ],
        )
    }

    pub fn notice(&self, template: &str, outcome: &'static str) {
        self.notice_counter(template, outcome).increment(1);
    }

    fn notice_counter(&self, template: &str, outcome: &'static str) -> metrics::Counter {
        self.counter(
            "esim_notify_notices_total",
            vec![
                Label::new("template", template.to_string()),
                Label::from_static_parts("outcome", outcome),
            ],
        )
    }

    /// Counts the decisions one operation wrote, by template and outcome.
    pub fn decisions(&self, entries: &[crate::engine::LogEntry]) {
        for e in entries {
            if let (Some(outcome), Some(template)) = (e.what.notice_outcome(), &e.template) {
                self.notice(template, outcome);
            }
        }
    }

    /// A field present but unreadable: the delivery was accepted, the notices
    /// needing it were not sent (SPEC §5: logged and counted).
    pub fn unreadable(&self, notify_type: &'static str, field: &str) {
        // Field names come from the reader's fixed list, so the label set is bounded.
        self.counter(
            "esim_notify_unreadable_fields_total",
            vec![
                Label::from_static_parts("type", notify_type),
                Label::new("field", field.to_string()),
            ],
        )
        .increment(1);
    }

    pub fn send_duration(&self, seconds: f64) {
        self.recorder
            .register_histogram(
                &Key::from_static_name("esim_notify_send_duration_seconds"),
                &META,
            )
            .record(seconds);
    }

    pub fn reload(&self, ok: bool) {
        self.gauge("esim_notify_config_last_reload_successful")
            .set(if ok { 1.0 } else { 0.0 });
    }

    /// Sets the gauges from the store's counts; called before each scrape.
    /// How many store records are set aside (they did not decode); set at
    /// start-up, 0 included, so an alert on it works from the first scrape.
    pub fn records_set_aside(&self, n: usize) {
        self.gauge("esim_notify_records_set_aside").set(n as f64);
    }

    pub fn set_gauges(&self, counts: Counts, oldest_age_seconds: f64, paused: bool) {
        self.gauge("esim_notify_outbox_depth")
            .set(counts.outbox as f64);
        self.gauge("esim_notify_outbox_oldest_age_seconds")
            .set(oldest_age_seconds);
        self.gauge("esim_notify_parked").set(counts.parked as f64);
        self.gauge("esim_notify_dead_letters")
            .set(counts.dead as f64);
        self.gauge("esim_notify_sending_paused")
            .set(if paused { 1.0 } else { 0.0 });
    }
}
