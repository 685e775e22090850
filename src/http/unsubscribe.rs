//! The one-click unsubscribe pages on the public listener (RFC 8058). GET
//! shows a confirmation page (mail scanners follow links; they must not
//! unsubscribe anyone); POST, which is what a mail client's one-click button
//! sends, suppresses the address named by the token (`crate::unsubscribe`).

use actix_web::{web, HttpResponse};
use chrono::Utc;

use crate::customers::mask_email;
use crate::http::state::AppState;
use crate::live::current;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/unsubscribe", web::get().to(confirm))
        .route("/unsubscribe", web::post().to(unsubscribe));
}

#[derive(serde::Deserialize)]
struct Query {
    t: Option<String>,
}

/// A page for a person: the brand's name heads it and its support address
/// and website close it, so the customer sees who they are dealing with.
fn page(
    app: &AppState,
    status: actix_web::http::StatusCode,
    title: &str,
    body: &str,
) -> HttpResponse {
    let live = current(&app.live);
    let brand = |k: &str| {
        live.brand
            .get(k)
            .map(|v| escape(v.trim()))
            .filter(|v| !v.is_empty())
    };
    let name = brand("name").unwrap_or_default();
    let mut footer = String::new();
    if let Some(support) = brand("support_email") {
        footer.push_str(&format!("<a href=\"mailto:{support}\">{support}</a>"));
    }
    if let Some(site) = brand("website") {
        if !footer.is_empty() {
            footer.push_str(" · ");
        }
        footer.push_str(&format!("<a href=\"{site}\">{site}</a>"));
    }
    let full_title = if name.is_empty() {
        title.to_string()
    } else {
        format!("{title} · {name}")
    };
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .body(format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>{full_title}</title></head>\
             <body style=\"font-family:sans-serif;max-width:32em;margin:3em auto\">\
             <p style=\"font-weight:bold\">{name}</p><h1>{title}</h1>{body}\
             <hr><p style=\"font-size:small\">{footer}</p></body></html>"
        ))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn enabled(app: &AppState) -> bool {
    app.config.email.list_unsubscribe == "one-click"
}

/// The page for a link when one-click unsubscribe is not configured.
fn not_enabled(app: &AppState) -> HttpResponse {
    page(
        app,
        actix_web::http::StatusCode::NOT_FOUND,
        "Not found",
        "<p>Unsubscribing by link is not enabled.</p>",
    )
}

async fn confirm(app: web::Data<AppState>, q: web::Query<Query>) -> HttpResponse {
    use actix_web::http::StatusCode as S;
    if !enabled(&app) {
        return not_enabled(&app);
    }
    let Some(token) = q.t.as_deref() else {
        return page(
            &app,
            S::BAD_REQUEST,
            "Link incomplete",
            "<p>This unsubscribe link is incomplete.</p>",
        );
    };
    match app.unsubscribe.verify(token) {
        Some(email) => page(
            &app,
            S::OK,
            "Unsubscribe",
            &format!(
                "<p>Stop emails about your eSIM to <b>{}</b>?</p>\
                 <form method=\"post\" action=\"/unsubscribe?t={}\"><button type=\"submit\">Unsubscribe</button></form>",
                escape(&email),
                escape(token)
            ),
        ),
        None => page(&app, S::BAD_REQUEST, "Link not valid", "<p>This unsubscribe link is not valid.</p>"),
    }
}

async fn unsubscribe(app: web::Data<AppState>, q: web::Query<Query>) -> HttpResponse {
    use actix_web::http::StatusCode as S;
    if !enabled(&app) {
        return not_enabled(&app);
    }
    let Some(email) = q.t.as_deref().and_then(|t| app.unsubscribe.verify(t)) else {
        return page(
            &app,
            S::BAD_REQUEST,
            "Link not valid",
            "<p>This unsubscribe link is not valid.</p>",
        );
    };
    if let Err(e) = app
        .store
        .suppress(&email, "unsubscribed (one-click)", Utc::now())
    {
        tracing::error!(error = %e, "unsubscribe not recorded");
        return page(
            &app,
            S::SERVICE_UNAVAILABLE,
            "Try again",
            "<p>Please try again in a few minutes.</p>",
        );
    }
    let flushed = app
        .store
        .durable()
        .await
        .unwrap_or_else(|_| Err("flusher stopped".into()));
    if flushed.is_err() {
        return page(
            &app,
            S::SERVICE_UNAVAILABLE,
            "Try again",
            "<p>Please try again in a few minutes.</p>",
        );
    }
    tracing::info!(recipient = %mask_email(&email), "unsubscribed (one-click)");
    page(
        &app,
        S::OK,
        "Unsubscribed",
        "<p>You will not receive these emails any more.</p>",
    )
}
