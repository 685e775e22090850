//! `GET /admin/`: the console's front page. The sender's state, how much
//! waits where, what was sent (`chart`), and the way to each page; counts
//! come from the store's counters (as the metrics do), never from a scan.

use actix_web::{web, HttpResponse};
use chrono::Utc;
use serde_json::json;

use super::chart;
use super::page::{self, relative, Nav};
use crate::http::state::AppState;

pub async fn page(app: web::Data<AppState>) -> HttpResponse {
    let counts = app.store.counts();
    let now = Utc::now();
    let history = app.config.store.history.0;
    let stats = app
        .on_store(move |s| {
            let rows = crate::http::stats::last_days(s, chart::CHART_DAYS, history, now)?;
            let today = now.with_timezone(&s.stats_zone()).date_naive();
            Ok((rows, today, s.stats_zone().name()))
        })
        .await;
    let sent = match stats {
        Ok((rows, today, zone)) => {
            let mut v = chart::overview(&rows, today);
            v["zone"] = json!(zone);
            v["error"] = json!(null);
            v
        }
        Err(e) => json!({"error": format!("the store cannot answer: {e}")}),
    };
    let oldest = app
        .store
        .oldest_queued()
        .ok()
        .flatten()
        .map(|t| relative(t, now));
    let last_webhook = app
        .store
        .last_webhook()
        .ok()
        .flatten()
        .map(|t| page::when(t, now));
    let data = json!({
        "counts": {"outbox": counts.outbox, "parked": counts.parked, "dead": counts.dead},
        "oldest": oldest,
        "last_webhook": last_webhook,
        "templates_dir": app.config.templates.dir.display().to_string(),
        "sent": sent,
    });
    page::render(&app, Nav::Overview, "Overview", "overview", data)
}
