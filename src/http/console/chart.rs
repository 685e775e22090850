//! The overview's picture of what was sent (issue 20): emails sent per day
//! over the last 30 days with the days that had bounces and complaints
//! marked, and the bounce and complaint rates of the last 7 days beside the
//! rates at which mail providers act.
//!
//! Server-rendered SVG inside the page, so it lives within the console's
//! CSP (`page::PAGE_CSP`: no inline script, no inline style): every colour
//! comes from classes in `assets/chart.css`, whose variables follow the
//! light or dark scheme. No text inside the drawing (it would scale with the
//! page's width): the scale, the lanes and the days are labelled in HTML
//! around it, the drawing has a `<title>` and `<desc>` for screen readers,
//! each day a `<title>` (a tooltip) and its numbers as `data-` attributes,
//! and the page lists the numbers in a table as well.
//!
//! The thresholds, as the providers publish them:
//! - Amazon SES places an account under review at a bounce rate of 5 % and
//!   may pause its sending at 10 %; for complaints at 0.1 % and 0.5 %
//!   (Amazon SES Developer Guide, "Sending review process FAQs",
//!   <https://docs.aws.amazon.com/ses/latest/dg/faqs-enforcement.html>).
//! - Gmail asks senders to keep the spam rate below 0.1 % and never to
//!   reach 0.3 % (Google, "Email sender guidelines",
//!   <https://support.google.com/a/answer/81126>).
//!
//! A rate is "near" from half the lowest of them (2.5 % bounces, 0.05 %
//! complaints) and "over" from it (5 %, 0.1 %).

use std::collections::BTreeMap;
use std::fmt::Write;

use chrono::NaiveDate;
use serde_json::{json, Value};

use super::page::escape;
use crate::engine::DayStats;

/// Days the chart shows, today included.
pub const CHART_DAYS: u32 = 30;
/// Days the rates are taken over, today included.
pub const RATE_DAYS: u32 = 7;

/// Bounce rate at which Amazon SES reviews an account.
pub const BOUNCE_REVIEW: f64 = 0.05;
/// Complaint rate at which Amazon SES reviews an account, and below which
/// Gmail asks senders to stay.
pub const COMPLAINT_REVIEW: f64 = 0.001;

// The drawing's own units: a column per day, the bars above a baseline, two
// lanes of marks below it. Stretched to the page's width by CSS.
const COL: u32 = 10;
const BAR_W: u32 = 8;
const TOP: f64 = 4.0;
const BASE: f64 = 80.0;
const BOUNCE_LANE: u32 = 84;
const COMPLAINT_LANE: u32 = 92;
const LANE_H: u32 = 6;
const HEIGHT: u32 = 100;

/// One day of the chart: every template summed.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Day {
    sent: u64,
    bounced: u64,
    complained: u64,
}

/// What the overview shows of the daily counters, for its view: `svg` (the
/// drawing, to insert unescaped), the labels around it, a row per day for
/// the table, and the last 7 days' rates.
pub fn overview(rows: &[DayStats], today: NaiveDate) -> Value {
    let days = per_day(rows);
    let first = back(today, CHART_DAYS - 1);
    let columns: Vec<(NaiveDate, Day)> = first
        .iter_days()
        .take(CHART_DAYS as usize)
        .map(|d| (d, days.get(&d).copied().unwrap_or_default()))
        .collect();
    let max = nice_max(columns.iter().map(|(_, d)| d.sent).max().unwrap_or(0));
    let total = columns.iter().fold(Day::default(), |a, (_, d)| Day {
        sent: a.sent + d.sent,
        bounced: a.bounced + d.bounced,
        complained: a.complained + d.complained,
    });
    let week_from = back(today, RATE_DAYS - 1);
    let week = columns
        .iter()
        .filter(|(d, _)| *d >= week_from)
        .fold(Day::default(), |a, (_, d)| Day {
            sent: a.sent + d.sent,
            bounced: a.bounced + d.bounced,
            complained: a.complained + d.complained,
        });
    let table: Vec<Value> = columns
        .iter()
        .rev()
        .filter(|(_, d)| *d != Day::default())
        .map(|(day, d)| {
            json!({"day": day.format("%a %-d %b").to_string(), "iso": day.to_string(),
                   "sent": d.sent, "bounced": d.bounced, "complained": d.complained})
        })
        .collect();
    json!({
        "svg": svg(&columns, max, total, first, today),
        "max": max,
        "half": max / 2,
        "first": label(first),
        "middle": label(back(today, CHART_DAYS / 2)),
        "last": label(today),
        "total": {"sent": total.sent, "bounced": total.bounced, "complained": total.complained,
                  "complaints_word": if total.complained == 1 { "complaint" } else { "complaints" }},
        "table": table,
        "week": {
            "sent": week.sent,
            "bounce": rate(week.bounced, week.sent, BOUNCE_REVIEW, 1),
            "complaint": rate(week.complained, week.sent, COMPLAINT_REVIEW, 2),
        },
    })
}

fn per_day(rows: &[DayStats]) -> BTreeMap<NaiveDate, Day> {
    let mut days: BTreeMap<NaiveDate, Day> = BTreeMap::new();
    for r in rows {
        let d = days.entry(r.day).or_default();
        d.sent += r.counts.sent;
        d.bounced += r.counts.bounced;
        d.complained += r.counts.complained;
    }
    days
}

fn back(day: NaiveDate, n: u32) -> NaiveDate {
    day.checked_sub_days(chrono::Days::new(u64::from(n)))
        .unwrap_or(day)
}

fn label(day: NaiveDate) -> String {
    day.format("%-d %b").to_string()
}

/// The top of the scale: 1, 2 or 5 times a power of ten, at least `n`.
fn nice_max(n: u64) -> u64 {
    let mut step = 1u64;
    loop {
        for m in [1, 2, 5] {
            let v = step.saturating_mul(m);
            if v >= n || v == u64::MAX {
                return v.max(1);
            }
        }
        step = step.saturating_mul(10);
    }
}

/// A rate of `part` in `of`, shown with `decimals`, and its level against
/// `threshold`: `ok`, `near` (from half of it) or `over`. `None` as the
/// percentage when nothing was sent.
fn rate(part: u64, of: u64, threshold: f64, decimals: usize) -> Value {
    if of == 0 {
        return json!({"count": part, "pct": null, "level": "ok", "near": false, "over": false});
    }
    let r = part as f64 / of as f64;
    let level = if r >= threshold {
        "over"
    } else if r >= threshold / 2.0 {
        "near"
    } else {
        "ok"
    };
    json!({
        "count": part,
        "pct": format!("{:.*} %", decimals, r * 100.0),
        "level": level,
        "near": level == "near",
        "over": level == "over",
    })
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The drawing. Bars are `sent` (the part later reported bounced drawn in
/// its own colour from the baseline up); a day with bounces gets a mark in
/// the lane below the baseline, one with complaints a mark in the lane
/// below that. Each day is a group carrying its numbers.
fn svg(
    columns: &[(NaiveDate, Day)],
    max: u64,
    total: Day,
    first: NaiveDate,
    today: NaiveDate,
) -> String {
    let width = COL * columns.len() as u32;
    let scale = (BASE - TOP) / max as f64;
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg class=\"chart-svg\" viewBox=\"0 0 {width} {HEIGHT}\" preserveAspectRatio=\"none\" \
         role=\"img\" aria-labelledby=\"chart-title chart-desc\" xmlns=\"http://www.w3.org/2000/svg\">\
         <title id=\"chart-title\">Emails sent per day, {} to {}</title>\
         <desc id=\"chart-desc\">{} sent, {} bounced, {} over these {} days; \
         the busiest day had {} sent.</desc>",
        escape(&first.format("%-d %b %Y").to_string()),
        escape(&today.format("%-d %b %Y").to_string()),
        total.sent,
        total.bounced,
        plural(total.complained, "complaint", "complaints"),
        columns.len(),
        columns.iter().map(|(_, d)| d.sent).max().unwrap_or(0),
    );
    // The lanes and the grid: the top of the scale, its half, the baseline.
    let _ = write!(
        s,
        "<rect class=\"lane lane-bounced\" x=\"0\" y=\"{BOUNCE_LANE}\" width=\"{width}\" height=\"{LANE_H}\"/>\
         <rect class=\"lane lane-complained\" x=\"0\" y=\"{COMPLAINT_LANE}\" width=\"{width}\" height=\"{LANE_H}\"/>"
    );
    for y in [TOP, (TOP + BASE) / 2.0] {
        let _ = write!(
            s,
            "<line class=\"grid\" x1=\"0\" x2=\"{width}\" y1=\"{y}\" y2=\"{y}\" vector-effect=\"non-scaling-stroke\"/>"
        );
    }
    for (i, (day, d)) in columns.iter().enumerate() {
        let x = i as u32 * COL;
        let today_class = if *day == today { " today" } else { "" };
        let _ = write!(
            s,
            "<g class=\"day{today_class}\" data-day=\"{day}\" data-sent=\"{}\" data-bounced=\"{}\" data-complained=\"{}\">\
             <title>{}: {} sent, {} bounced, {}</title>\
             <rect class=\"hit\" x=\"{x}\" y=\"0\" width=\"{COL}\" height=\"{HEIGHT}\"/>",
            d.sent,
            d.bounced,
            d.complained,
            escape(&day.format("%a %-d %b").to_string()),
            d.sent,
            d.bounced,
            plural(d.complained, "complaint", "complaints"),
        );
        let bx = x + (COL - BAR_W) / 2;
        if d.sent > 0 {
            let h = d.sent as f64 * scale;
            let _ = write!(
                s,
                "<rect class=\"bar\" x=\"{bx}\" y=\"{:.2}\" width=\"{BAR_W}\" height=\"{h:.2}\"/>",
                BASE - h
            );
            let part = d.bounced.min(d.sent) as f64 * scale;
            if part > 0.0 {
                let _ = write!(
                    s,
                    "<rect class=\"bar-bounced\" x=\"{bx}\" y=\"{:.2}\" width=\"{BAR_W}\" height=\"{part:.2}\"/>",
                    BASE - part
                );
            }
        }
        if d.bounced > 0 {
            let _ = write!(
                s,
                "<rect class=\"mark mark-bounced\" x=\"{bx}\" y=\"{BOUNCE_LANE}\" width=\"{BAR_W}\" height=\"{LANE_H}\"/>"
            );
        }
        if d.complained > 0 {
            let _ = write!(
                s,
                "<rect class=\"mark mark-complained\" x=\"{bx}\" y=\"{COMPLAINT_LANE}\" width=\"{BAR_W}\" height=\"{LANE_H}\"/>"
            );
        }
        s.push_str("</g>");
    }
    let _ = write!(
        s,
        "<line class=\"baseline\" x1=\"0\" x2=\"{width}\" y1=\"{BASE}\" y2=\"{BASE}\" vector-effect=\"non-scaling-stroke\"/></svg>"
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::DayCounts;

    fn row(day: NaiveDate, template: &str, sent: u64, bounced: u64, complained: u64) -> DayStats {
        DayStats {
            day,
            template: Some(template.into()),
            counts: DayCounts {
                sent,
                bounced,
                complained,
                ..DayCounts::default()
            },
        }
    }

    #[test]
    fn each_day_sums_its_templates_and_the_rates_take_the_last_seven_days() {
        let today = NaiveDate::from_ymd_opt(2026, 12, 5).unwrap();
        let long_ago = NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
        let rows = vec![
            row(long_ago, "install", 100, 50, 0),
            row(today, "install", 30, 1, 0),
            row(today, "data_low", 10, 1, 1),
        ];
        let v = overview(&rows, today);
        assert_eq!(
            v["total"],
            json!({"sent": 140, "bounced": 52, "complained": 1, "complaints_word": "complaint"})
        );
        // The last 7 days: 2 bounced and 1 complaint of 40 sent.
        assert_eq!(v["week"]["sent"], 40);
        assert_eq!(v["week"]["bounce"]["pct"], "5.0 %");
        assert_eq!(v["week"]["bounce"]["level"], "over");
        assert_eq!(v["week"]["complaint"]["pct"], "2.50 %");
        let svg = v["svg"].as_str().unwrap();
        assert!(svg.contains(
            "data-day=\"2026-12-05\" data-sent=\"40\" data-bounced=\"2\" data-complained=\"1\""
        ));
        assert!(svg.contains("data-day=\"2026-11-20\" data-sent=\"100\""));
        assert_eq!(svg.matches("<g class=\"day").count(), 30);
        assert_eq!(v["max"], 100);
        assert_eq!(v["table"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn nothing_sent_is_no_rate_and_an_empty_chart() {
        let today = NaiveDate::from_ymd_opt(2026, 12, 5).unwrap();
        let v = overview(&[], today);
        assert_eq!(v["week"]["bounce"]["pct"], Value::Null);
        assert_eq!(v["max"], 1);
        assert!(!v["svg"].as_str().unwrap().contains("class=\"bar\""));
    }

    #[test]
    fn levels_and_the_scale() {
        assert_eq!(rate(2, 100, BOUNCE_REVIEW, 1)["level"], "ok");
        assert_eq!(rate(3, 100, BOUNCE_REVIEW, 1)["level"], "near");
        assert_eq!(rate(5, 100, BOUNCE_REVIEW, 1)["level"], "over");
        assert_eq!(rate(1, 2000, COMPLAINT_REVIEW, 2)["level"], "near");
        assert_eq!(rate(1, 5000, COMPLAINT_REVIEW, 2)["pct"], "0.02 %");
        assert_eq!(
            [0, 1, 3, 7, 10, 11, 40, 120].map(nice_max),
            [1, 1, 5, 10, 10, 20, 50, 200]
        );
    }
}
