//! What every console page shares: the views (Handlebars, HTML-escaping,
//! strict, compiled once from files embedded in the binary), the layout's
//! data, the security headers, and how times and addresses are shown.

use std::sync::OnceLock;

use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use chrono::{DateTime, Utc};
use handlebars::Handlebars;
use serde_json::{json, Value};

use crate::http::state::AppState;

/// The console's own pages: scripts and styles only from the binary, no
/// inline script or style, no plugin, no form posted elsewhere, never
/// framed. The email preview frame is the one document with inline styles
/// and it gets its own policy (see `preview_api::frame`): a `srcdoc`
/// iframe would inherit this one, which strips an email's inline styles.
pub const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; frame-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'";

const VIEWS: [(&str, &str); 8] = [
    ("layout", include_str!("views/layout.hbs")),
    ("overview", include_str!("views/overview.hbs")),
    ("templates", include_str!("views/templates.hbs")),
    ("esims", include_str!("views/esims.hbs")),
    ("queue", include_str!("views/queue.hbs")),
    ("suppressions", include_str!("views/suppressions.hbs")),
    ("lift", include_str!("views/lift.hbs")),
    ("keys", include_str!("views/keys.hbs")),
];

fn views() -> &'static Handlebars<'static> {
    static VIEWS_REGISTRY: OnceLock<Handlebars<'static>> = OnceLock::new();
    VIEWS_REGISTRY.get_or_init(|| {
        let mut reg = Handlebars::new();
        reg.set_strict_mode(true);
        for (name, source) in VIEWS {
            // Embedded at build time and covered by every page test: a
            // broken view is a bug of this binary, not an operator's input.
            reg.register_template_string(name, source)
                .unwrap_or_else(|e| panic!("console view {name}: {e}"));
        }
        reg
    })
}

/// Which page of the navigation is open.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Overview,
    Templates,
    Esims,
    Queue,
    Suppressions,
    Keys,
}

/// Renders `view` inside the layout. `data` is the page's own object; the
/// layout adds `nav` and `sending`.
/// Runs a page's store reads off the async threads. A store that cannot
/// answer (or a read that failed to run) is the page's 503 with the reason,
/// shown in place of the page's data.
pub async fn read_blocking<F>(read: F) -> (StatusCode, Value)
where
    F: FnOnce() -> Result<(StatusCode, Value), crate::store::StoreError> + Send + 'static,
{
    match actix_web::web::block(read).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": format!("the store cannot answer: {e}")}),
        ),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": e.to_string()}),
        ),
    }
}

pub fn render(app: &AppState, nav: Nav, title: &str, view: &str, data: Value) -> HttpResponse {
    render_status(app, StatusCode::OK, nav, title, view, data)
}

pub fn render_status(
    app: &AppState,
    status: StatusCode,
    nav: Nav,
    title: &str,
    view: &str,
    mut data: Value,
) -> HttpResponse {
    data["title"] = json!(title);
    data["nav"] = json!({
        "overview": nav == Nav::Overview,
        "templates": nav == Nav::Templates,
        "esims": nav == Nav::Esims,
        "queue": nav == Nav::Queue,
        "suppressions": nav == Nav::Suppressions,
        "keys": nav == Nav::Keys,
    });
    data["sending"] = sending(app);
    match views().render(view, &data) {
        Ok(body) => html(status, body),
        Err(e) => {
            tracing::error!(view, error = %e, "console view failed");
            html(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "<!doctype html><title>console error</title><p>This console page failed: {}</p>",
                    escape(&e.to_string())
                ),
            )
        }
    }
}

/// An HTML answer with the console's security headers.
pub fn html(status: StatusCode, body: String) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header(("Content-Security-Policy", PAGE_CSP))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header(("Referrer-Policy", "no-referrer"))
        .insert_header(("X-Frame-Options", "DENY"))
        .insert_header(("Cache-Control", "no-store"))
        .body(body)
}

/// The sender's state for the header: running, paused by the operator, or
/// held back by a broken transport.
fn sending(app: &AppState) -> Value {
    let d = &app.dispatch;
    let (state, label) = if d.is_operator_paused() {
        ("paused", "Sending paused by operator")
    } else if d.is_transport_broken() {
        ("broken", "Sending held: transport broken")
    } else {
        ("running", "Sending")
    };
    json!({"state": state, "label": label, "paused": d.is_operator_paused()})
}

/// `{abs: "2026-04-22 17:21:59 UTC", rel: "3 h ago", iso}` for a page.
pub fn when(t: DateTime<Utc>, now: DateTime<Utc>) -> Value {
    json!({
        "abs": t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        "rel": relative(t, now),
        "iso": t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    })
}

/// "in 4 min", "3 h ago", "now": how far `t` is from `now`, roughly.
pub fn relative(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (t - now).num_seconds();
    let n = secs.unsigned_abs();
    let amount = match n {
        0..=4 => return "now".into(),
        5..=59 => format!("{n} s"),
        60..=3599 => format!("{} min", n / 60),
        3600..=172_799 => format!("{} h", n / 3600),
        _ => format!("{} d", n / 86_400),
    };
    if secs > 0 {
        format!("in {amount}")
    } else {
        format!("{amount} ago")
    }
}

/// "4.98 GB": 1024-based, as plans are sold (the operator's view; customers
/// get the templates' locale-aware `bytes` helper).
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s} {}", UNITS[unit])
}

/// "10 %" for a fraction, rounded to whole percent.
pub fn percent(fraction: f64) -> String {
    format!("{} %", (fraction * 100.0).round() as i64)
}

/// Minimal HTML escaping for the few strings written outside the views.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// A query-string component, percent-encoded.
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_view_compiles() {
        let reg = views();
        for (name, _) in VIEWS {
            assert!(reg.has_template(name), "{name}");
        }
    }

    #[test]
    fn relative_times_read_naturally() {
        let now = Utc::now();
        assert_eq!(relative(now, now), "now");
        assert_eq!(
            relative(now + chrono::Duration::minutes(4), now),
            "in 4 min"
        );
        assert_eq!(relative(now - chrono::Duration::hours(3), now), "3 h ago");
        assert_eq!(relative(now - chrono::Duration::days(3), now), "3 d ago");
    }

    #[test]
    fn sizes_and_levels_read_as_plans_are_sold() {
        assert_eq!(bytes(5_368_709_120), "5 GB");
        assert_eq!(bytes(5_351_505_742), "4.98 GB");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(percent(0.1), "10 %");
    }

    #[test]
    fn url_components_are_encoded() {
        assert_eq!(url_encode("a b&c=/é"), "a%20b%26c%3D%2F%C3%A9");
    }
}
