//! What was sent (issue 20): the daily counters behind `GET /admin/stats`
//! and the console's chart. Real webhooks and sends through `spawn_app` and
//! the SMTP test server; the answer must equal what the test made happen,
//! counted on the calendar day of `templates.default_timezone`. A bounce
//! and a complaint are appended to the decision log through the engine's
//! own path (`Engine::append_log`, the unit every log line goes through),
//! as the mail providers' reports do. The engine-level checks on both
//! backends (exact under concurrent units, a midnight, retention) are in
//! the conformance suite (`storage.rs`).

use std::time::Duration;

use chrono::{NaiveDate, Timelike, Utc};
use chrono_tz::Tz;
use esim_notify::customers::IdKind;
use esim_notify::engine::{LogEntry, LogKind};
use serde_json::{json, Value};

use crate::helpers::*;
use crate::suppression_reasons::decisions;

const LIMIT: Duration = Duration::from_secs(20);
const GIB: u64 = 1 << 30;
const COUNTERS: [&str; 7] = [
    "queued",
    "sent",
    "failed",
    "dead",
    "bounced",
    "complained",
    "suppressed",
];

/// A zone whose calendar day differs from UTC's right now, so a counter
/// kept on the UTC day is caught: UTC+14 once it is 10:00 UTC or later
/// (already tomorrow there), else UTC−11 (still yesterday).
fn zone_off_utc_day() -> Tz {
    let name = if Utc::now().hour() >= 10 {
        "Pacific/Kiritimati"
    } else {
        "Pacific/Pago_Pago"
    };
    name.parse().unwrap()
}

fn today_in(zone: Tz) -> NaiveDate {
    Utc::now().with_timezone(&zone).date_naive()
}

async fn stats(app: &TestApp, query: &str) -> (u16, Value) {
    app.get_json(&app.admin_url(&format!("/admin/stats{query}")))
        .await
}

/// The answer's counters summed over every row (all days, all templates).
fn totals(rows: &Value) -> Value {
    let mut out = json!({});
    for k in COUNTERS {
        let n: u64 = rows
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r[k].as_u64().unwrap())
            .sum();
        out[k] = json!(n);
    }
    out
}

/// Binds `<who>@example.com` to eSIM `tran` and posts a DATA_USAGE at 10 %
/// left for it (answered 200): one notice queued for that address.
async fn deliver(app: &TestApp, who: &str, tran: &str, iccid: &str) {
    let (s, v) = app
        .bind(json!({"email": format!("{who}@example.com"), "esimTranNo": tran}))
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = app
        .post(&data_usage(
            &format!("n-{tran}"),
            tran,
            iccid,
            10 * GIB,
            GIB,
        ))
        .await;
    assert_eq!(s, 200, "{v}");
}

/// Appends a line of kind `what` about eSIM `tran`'s sent notice, through
/// the engine's own unit (what a provider's bounce report writes).
async fn report(app: &TestApp, tran: &str, what: LogKind) {
    let engine = app.engine.clone();
    let tran = tran.to_string();
    tokio::task::spawn_blocking(move || {
        let view = engine
            .esim_view(Some(IdKind::EsimTranNo), &tran)
            .unwrap()
            .expect("the eSIM is known");
        let sent = view
            .decisions
            .iter()
            .find(|d| d.what == LogKind::Sent)
            .expect("a sent notice")
            .clone();
        let line = LogEntry::new(
            Utc::now(),
            what,
            sent.template.as_deref(),
            "reported by the mail provider",
        )
        .about(sent.notice.unwrap());
        engine.append_log(view.id, line).unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_equal_what_was_queued_sent_failed_dead_suppressed_and_bounced() {
    let zone = zone_off_utc_day();
    let (port, smtp) = smtp::mailin_server();
    // Ana's first attempt is refused for now (failed, then sent).
    smtp.0
        .lock()
        .unwrap()
        .data_end
        .push_back((451, "4.7.1 greylisted, try later"));
    let app = spawn_app_with_smtp(
        &format!("[templates]\ndefault_timezone = \"{zone}\"\n"),
        port,
        smtp.clone(),
    )
    .await;
    let day_before = today_in(zone);

    // Nothing yet: an empty array.
    let (s, rows) = stats(&app, "").await;
    assert_eq!(s, 200, "{rows}");
    assert_eq!(rows, json!([]));

    // Ana: queued, one failed attempt, sent.
    deliver(&app, "ana", "S1", "8900000000000000101").await;
    assert!(eventually(LIMIT, || async { smtp.received().len() == 1 }).await);

    // Bob: queued, refused for good (user unknown): a dead letter.
    smtp.0
        .lock()
        .unwrap()
        .rcpt
        .push_back((550, "5.1.1 user unknown"));
    deliver(&app, "bob", "S2", "8900000000000000102").await;
    assert!(
        eventually(LIMIT, || async {
            let (_, dead) = app.get_json(&app.admin_url("/admin/dead")).await;
            dead.as_array().is_some_and(|a| a.len() == 1)
        })
        .await
    );

    // Cy: on the suppression list, so not queued but suppressed.
    let r = app
        .http
        .put(app.admin_url("/admin/suppressions/cy@example.com"))
        .json(&json!({"reason": "operator"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    deliver(&app, "cy", "S3", "8900000000000000103").await;
    assert!(
        eventually(LIMIT, || async {
            decisions(&app, "S3")
                .await
                .iter()
                .any(|d| d["what"] == "suppressed")
        })
        .await
    );

    // The provider reports Ana's email bounced, and later a complaint.
    report(&app, "S1", LogKind::Bounced).await;
    report(&app, "S1", LogKind::Complained).await;

    let template = decisions(&app, "S1")
        .await
        .into_iter()
        .find(|d| d["what"] == "queued")
        .expect("a queued line")["template"]
        .clone();
    let (s, rows) = stats(&app, "?days=30").await;
    assert_eq!(s, 200, "{rows}");
    assert_eq!(
        totals(&rows),
        json!({"queued": 2, "sent": 1, "failed": 1, "dead": 1, "bounced": 1,
               "complained": 1, "suppressed": 1}),
        "{rows}"
    );
    let day_after = today_in(zone);
    for row in rows.as_array().unwrap() {
        assert_eq!(row["template"], template, "{row}");
        let day: NaiveDate = row["day"].as_str().unwrap().parse().unwrap();
        assert!(
            day == day_before || day == day_after,
            "counted on the day in {zone}, not UTC's ({}): {row}",
            Utc::now().date_naive()
        );
        assert_eq!(
            row.as_object().unwrap().len(),
            2 + COUNTERS.len(),
            "day, template and the counters: {row}"
        );
    }
    // Kept in the store, not in the process.
    let app = app.restart().await;
    let (_, again) = stats(&app, "").await;
    assert_eq!(totals(&again), totals(&rows));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_days_is_400_with_a_reason_and_more_than_history_is_what_it_keeps() {
    let app = spawn_app("[store]\nhistory = \"3d\"\n").await;
    for bad in [
        "?days=0",
        "?days=-2",
        "?days=abc",
        "?days=",
        "?days=2.5",
        "?weeks=2",
    ] {
        let (s, v) = stats(&app, bad).await;
        assert_eq!(s, 400, "{bad}: {v}");
        assert!(
            v["error"]
                .as_str()
                .is_some_and(|e| e.contains("days") || e.contains("weeks")),
            "{bad}: {v}"
        );
    }
    for good in ["?days=1", "?days=365", "?days=99999999999999"] {
        let (s, v) = stats(&app, good).await;
        assert_eq!(s, 200, "{good}: {v}");
    }
    app.stop().await;
}

/// Old days go with `store.history`: a line counted 10 days ago (through
/// the engine, with its time) is in the store, the retention task removes
/// its day, today's stays; `/admin/stats` never answers past history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_the_days_history_no_longer_keeps() {
    // A short delivery_dedup makes the retention task run every second.
    let (port, smtp) = smtp::mailin_server();
    let app = spawn_app_with_smtp(
        "[store]\nhistory = \"3d\"\ndelivery_dedup = \"4s\"\n",
        port,
        smtp.clone(),
    )
    .await;
    deliver(&app, "dee", "R1", "8900000000000000201").await;
    assert!(eventually(LIMIT, || async { smtp.received().len() == 1 }).await);
    let engine = app.engine.clone();
    let today = today_in(chrono_tz::UTC);
    let old_day = today - chrono::Days::new(10);
    let counted_old = tokio::task::spawn_blocking({
        let engine = engine.clone();
        move || {
            let esim = engine
                .esim_view(Some(IdKind::EsimTranNo), "R1")
                .unwrap()
                .unwrap()
                .id;
            let at = Utc::now() - chrono::Duration::days(10);
            engine
                .append_log(
                    esim,
                    LogEntry::new(at, LogKind::Bounced, Some("old"), "old"),
                )
                .unwrap();
            engine.daily_stats(old_day, old_day).unwrap()
        }
    })
    .await
    .unwrap();
    assert_eq!(
        counted_old.len(),
        1,
        "counted on its own day: {counted_old:?}"
    );
    assert_eq!(counted_old[0].counts.bounced, 1);

    let gone = eventually(LIMIT, || {
        let engine = engine.clone();
        async move {
            tokio::task::spawn_blocking(move || engine.daily_stats(old_day, old_day).unwrap())
                .await
                .unwrap()
                .is_empty()
        }
    })
    .await;
    assert!(gone, "the day 10 days ago is removed by retention");
    let (s, rows) = stats(&app, "?days=365").await;
    assert_eq!(s, 200);
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 1, "today's counters stay: {rows:?}");
    assert_eq!(rows[0]["day"], json!(today.to_string()));
    assert_eq!(rows[0]["sent"], 1);
    app.stop().await;
}

/// The overview's chart draws what was sent: each day's group carries its
/// numbers, and the text beside it says the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_chart_shows_what_was_sent_and_bounced() {
    let (port, smtp) = smtp::mailin_server();
    let app = spawn_app_with_smtp("", port, smtp.clone()).await;
    for (i, who) in ["ana", "bob", "cy"].iter().enumerate() {
        deliver(
            &app,
            who,
            &format!("C{i}"),
            &format!("890000000000000030{i}"),
        )
        .await;
    }
    assert!(eventually(LIMIT, || async { smtp.received().len() == 3 }).await);
    report(&app, "C0", LogKind::Bounced).await;
    report(&app, "C1", LogKind::Complained).await;

    let r = app.http.get(app.admin_url("/admin/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("script-src 'self'") && csp.contains("style-src 'self'"));
    let html = r.text().await.unwrap();
    let svg = between(&html, "<svg", "</svg>").expect("an SVG chart");
    assert!(
        svg.contains("role=\"img\"") && svg.contains("<title"),
        "{svg}"
    );
    // Within the CSP: no inline style or script anywhere on the page.
    assert!(
        !html.contains("style=\"") && !html.contains("<style"),
        "no inline style"
    );
    assert!(!html.contains("<script>"), "no inline script");

    let today = Utc::now().date_naive().to_string();
    let days = groups(svg);
    assert_eq!(days.len(), 30, "a column per day");
    let (_, sent, bounced, complained) = days
        .iter()
        .find(|d| d.0 == today)
        .cloned()
        .expect("today's column");
    assert_eq!((sent, bounced, complained), (3, 1, 1), "{svg}");
    let all: (u64, u64, u64) = days
        .iter()
        .fold((0, 0, 0), |a, d| (a.0 + d.1, a.1 + d.2, a.2 + d.3));
    assert_eq!(all, (3, 1, 1), "nothing drawn on other days");
    // Bars and marks drawn for it.
    let today_group = between(svg, &format!("data-day=\"{today}\""), "</g>").unwrap();
    for class in [
        "bar",
        "bar-bounced",
        "mark mark-bounced",
        "mark mark-complained",
    ] {
        assert!(
            today_group.contains(&format!("class=\"{class}\"")),
            "{class}: {today_group}"
        );
    }
    // The numbers as text too, and the rates of the week against the thresholds.
    let total = between(&html, "id=\"sent-total\"", "</p>").unwrap();
    assert!(
        total.contains(
            "<strong>3</strong> sent, <strong>1</strong> bounced, <strong>1</strong> complaint in"
        ),
        "{total}"
    );
    let bounce = between(&html, "id=\"bounce-rate\"", "</div>").unwrap();
    assert!(
        bounce.contains("33.3 %") && bounce.contains("1 of 3 sent bounced"),
        "{bounce}"
    );
    assert!(bounce.contains("rate-warn"), "a third bounced: warned");
    let complaint = between(&html, "id=\"complaint-rate\"", "</div>").unwrap();
    assert!(
        complaint.contains("33.33 %") && complaint.contains("0.3 %"),
        "{complaint}"
    );
    let table = between(&html, "id=\"sent-table\"", "</table>").unwrap();
    assert!(table.contains("<td>3</td><td>1</td><td>1</td>"), "{table}");
    app.stop().await;
}

/// The text between the first `start` and the next `end` after it.
fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = s.find(start)?;
    let to = s[from..].find(end)? + from;
    Some(&s[from..to])
}

/// Each day's group of the chart: (day, sent, bounced, complained).
fn groups(svg: &str) -> Vec<(String, u64, u64, u64)> {
    let attr = |g: &str, name: &str| -> String {
        let open = format!("{name}=\"");
        let Some(at) = g.find(&open) else {
            return String::new();
        };
        let value = &g[at + open.len()..];
        value[..value.find('"').unwrap_or(0)].to_string()
    };
    svg.split("<g class=\"day")
        .skip(1)
        .map(|g| {
            let n = |name| attr(g, name).parse::<u64>().unwrap();
            (
                attr(g, "data-day"),
                n("data-sent"),
                n("data-bounced"),
                n("data-complained"),
            )
        })
        .collect()
}
